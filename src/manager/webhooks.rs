//! Webhook subscriptions: create, list, enable, delete, rotate the secret,
//! and their dead letters. Delivery itself is in `delivery.rs`.

use super::CreditManager;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::limits::{MAX_EVENTS_PER_PAGE, MAX_WEBHOOKS};
use crate::store::{Tx, WebhookRow};
use crate::types::{Timestamp, truncate};
use crate::validate;
use crate::webhooks::{
    CALLBACK_PREFIX, DeadLetter, WebhookKey, WebhookSecret, WebhookSubscription, check_url, kinds_text, parse_kinds,
    wants,
};
use std::collections::HashMap;
use std::collections::hash_map::Entry;

impl CreditManager {
    /// Subscribes `url` (`https://…` or `http://…`) to the events of `kinds`
    /// (empty: every kind) committed from now on (its cursor starts at the
    /// outbox's tail). Returns the subscription and its signing secret,
    /// shown this once and stored only encrypted. Refused: a URL that is
    /// not http(s), carries credentials or is longer than
    /// `MAX_WEBHOOK_URL_LEN`; a host that is (or resolves to) a private or
    /// loopback address not allow-listed (`InvalidArgument`); no
    /// `CREDITGATE_WEBHOOK_KEY` (`InvalidArgument`); `MAX_WEBHOOKS`
    /// subscriptions already (`LimitReached`).
    pub fn create_webhook(
        &self,
        url: &str,
        kinds: &[EventKind],
        description: Option<&str>,
    ) -> Result<(WebhookSubscription, WebhookSecret)> {
        self.track((|| {
            let key = self.webhook_key()?;
            validate::opt_text("description", description)?;
            check_url(url, &self.inner.config.webhook_allowed_hosts)?;
            let secret = WebhookSecret::generate()?;
            let id = new_webhook_id();
            let sealed = key.seal(&id, &secret)?;
            let sub = self.write(|tx| {
                let row = new_row(tx, &id, url, kinds, description, Some(sealed.clone()))?;
                tx.insert_webhook(&row)?;
                subscription(tx, &id)
            })?;
            Ok((sub, secret))
        })())
    }

    /// Every subscription (`callback:` consumers too), oldest first, with
    /// its figures, read from the database: any process shows the same.
    pub fn webhooks(&self) -> Result<Vec<WebhookSubscription>> {
        self.track(self.read(|tx| {
            let rows = tx.webhook_rows()?;
            let mut figures = Figures::default();
            rows.into_iter().map(|r| figures.subscription(tx, r)).collect()
        }))
    }

    /// One subscription with its figures; `NotFound`.
    pub fn webhook(&self, id: &str) -> Result<WebhookSubscription> {
        self.track(self.read(|tx| subscription(tx, id)))
    }

    /// Enables or disables a subscription (a disabled one keeps its cursor:
    /// enabled again, it resumes where it stopped); `NotFound`.
    pub fn set_webhook_enabled(&self, id: &str, enabled: bool) -> Result<WebhookSubscription> {
        self.track(self.write(|tx| {
            if !tx.set_webhook_enabled(id, enabled)? {
                return Err(not_found(id));
            }
            subscription(tx, id)
        }))
    }

    /// Deletes a subscription and its dead letters; `NotFound`.
    pub fn delete_webhook(&self, id: &str) -> Result<()> {
        self.track((|| if self.write(|tx| tx.delete_webhook(id))? { Ok(()) } else { Err(not_found(id)) })())
    }

    /// Replaces a subscription's signing secret at once (deliveries from
    /// now on are signed with the new one); returns it, shown this once.
    /// `NotFound`; a `callback:` consumer has no secret (`InvalidArgument`).
    pub fn rotate_webhook_secret(&self, id: &str) -> Result<WebhookSecret> {
        self.track((|| {
            let key = self.webhook_key()?;
            let row = self.read(|tx| tx.webhook_row(id))?.ok_or_else(|| not_found(id))?;
            if row.url.starts_with(CALLBACK_PREFIX) {
                return Err(Error::invalid(format!("webhook {id} is a callback consumer: it has no secret")));
            }
            let secret = WebhookSecret::generate()?;
            let sealed = key.seal(id, &secret)?;
            if !self.write(|tx| tx.set_webhook_secret(id, &sealed))? {
                return Err(not_found(id));
            }
            Ok(secret)
        })())
    }

    /// Dead letters of subscription `id` (None: of every one), oldest
    /// first, at most `limit` (1..=1000). An unknown `id`: `NotFound`.
    pub fn webhook_dead_letters(&self, id: Option<&str>, limit: u32) -> Result<Vec<DeadLetter>> {
        self.track((|| {
            if !(1..=MAX_EVENTS_PER_PAGE).contains(&limit) {
                return Err(Error::invalid(format!("limit must be in 1..={MAX_EVENTS_PER_PAGE}, got {limit}")));
            }
            self.read(|tx| {
                if let Some(id) = id
                    && tx.webhook_row(id)?.is_none()
                {
                    return Err(not_found(id));
                }
                tx.dead_letters(id, limit)
            })
        })())
    }

    /// Re-queues dead letters of subscription `id`, those of `event_ids`
    /// (at most 1000; ids that are not its dead letters are skipped) or all
    /// (None): each is attempted once more at the start of the
    /// subscription's next turn. Returns how many were re-queued; `NotFound`.
    pub fn replay_dead_letters(&self, id: &str, event_ids: Option<&[i64]>) -> Result<u64> {
        self.track((|| {
            if event_ids.is_some_and(|e| e.len() > MAX_EVENTS_PER_PAGE as usize) {
                return Err(Error::invalid(format!("replay takes at most {MAX_EVENTS_PER_PAGE} event ids")));
            }
            self.write(|tx| {
                if tx.webhook_row(id)?.is_none() {
                    return Err(not_found(id));
                }
                match event_ids {
                    None => tx.requeue_dead_letters(id, None),
                    // Each id once: a repeated id is one dead letter, counted once.
                    Some(ids) => ids
                        .iter()
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .try_fold(0, |n, e| Ok(n + tx.requeue_dead_letters(id, Some(*e))?)),
                }
            })
        })())
    }

    /// The configured key, or the fail-closed refusal naming its variable.
    pub(super) fn webhook_key(&self) -> Result<&WebhookKey> {
        self.inner.config.webhook_key.as_ref().ok_or_else(|| {
            Error::invalid(
                "webhooks need CREDITGATE_WEBHOOK_KEY (64 hex digits; Config::webhook_key) to encrypt and sign \
                 with their secrets",
            )
        })
    }
}

/// `wh_` + 32 hex digits (a UUID v7: ids sort by creation).
pub(super) fn new_webhook_id() -> String {
    format!("wh_{}", uuid::Uuid::now_v7().simple())
}

/// A new subscription's row, its cursor at the outbox's tail, after the
/// limit check (`LimitReached` past `MAX_WEBHOOKS`).
pub(super) fn new_row(
    tx: &mut dyn Tx,
    id: &str,
    url: &str,
    kinds: &[EventKind],
    description: Option<&str>,
    secret: Option<String>,
) -> Result<WebhookRow> {
    if tx.webhook_count()? >= MAX_WEBHOOKS {
        return Err(Error::LimitReached {
            limit: "max_webhooks",
            detail: format!("a ledger has at most {MAX_WEBHOOKS} webhook subscriptions"),
        });
    }
    Ok(WebhookRow {
        id: id.to_string(),
        url: url.to_string(),
        kinds: kinds_text(kinds),
        enabled: true,
        description: description.map(str::to_string),
        created_at: tx.now()?,
        cursor: tx.events_tail()?,
        attempts: 0,
        next_attempt_at: None,
        last_error: None,
        delivered: 0,
        failed_attempts: 0,
        dead_lettered: 0,
        secret,
    })
}

/// Subscription `id` with its figures, in the caller's transaction; `NotFound`.
fn subscription(tx: &mut dyn Tx, id: &str) -> Result<WebhookSubscription> {
    let row = tx.webhook_row(id)?.ok_or_else(|| not_found(id))?;
    Figures::default().subscription(tx, row)
}

pub(super) fn not_found(id: &str) -> Error {
    Error::NotFound(format!("no webhook subscription {:?}", truncate(id)))
}

/// The pending figures of subscriptions, from the events after their
/// cursors (one page each; subscriptions at the same cursor share a read).
#[derive(Default)]
struct Figures {
    pages: HashMap<i64, Vec<Event>>,
}

impl Figures {
    fn subscription(&mut self, tx: &mut dyn Tx, r: WebhookRow) -> Result<WebhookSubscription> {
        let page = match self.pages.entry(r.cursor) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => v.insert(tx.events(r.cursor, MAX_EVENTS_PER_PAGE)?),
        };
        let pending = page.iter().filter(|e| wants(&r.kinds, e.kind)).count();
        let now = tx.now()?;
        // The oldest event not yet worked through, of any kind: a stopped
        // worker shows as lag even on a subscription to rare kinds.
        let lag = page.first().map_or(0, |e| age_seconds(now, e.created_at));
        Ok(WebhookSubscription {
            kinds: parse_kinds(&r.kinds),
            pending: pending as u64,
            lag_seconds: lag,
            id: r.id,
            url: r.url,
            enabled: r.enabled,
            description: r.description,
            created_at: r.created_at,
            delivered: r.delivered,
            failed_attempts: r.failed_attempts,
            dead_lettered: r.dead_lettered,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            last_error: r.last_error,
        })
    }
}

fn age_seconds(now: Timestamp, then: Timestamp) -> u64 {
    u64::try_from(now.0.saturating_sub(then.0) / 1_000_000).unwrap_or(0)
}
