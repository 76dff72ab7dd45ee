//! Delivering the outbox to subscriptions: one pass of `deliver_webhooks`
//! (HTTP endpoints) or `handle_events` (an in-process consumer).
//!
//! Each subscription's turn runs under a lease taken with one conditional
//! update (`Tx::claim_webhook`), so two workers never deliver one
//! subscription, hence one event, at once. The lease lasts twice the
//! request timeout and 5 s; it is renewed by every cursor update and before
//! any request when the last renewal is older than one timeout, so a
//! request always ends inside the lease. Every update names the lease: a
//! worker that lost it (paused past its expiry) changes nothing and stops.
//! Events go one at a time in commit order; a failure stops the turn
//! (head-of-line, so order is kept) and schedules the retry with
//! [`backoff`]; after `max_attempts` the event is dead-lettered and the
//! cursor moves past it. Nothing is sent inside a transaction.

use super::CreditManager;
use super::webhooks::{new_row, new_webhook_id, not_found};
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::limits::MAX_TEXT_BYTES;
use crate::store::{Lease, Tx, WebhookRow};
use crate::types::{Timestamp, truncate};
use crate::webhooks::{
    Attempt, CALLBACK_PREFIX, DeadLetter, DeliveryOptions, DeliveryReport, WebhookSecret, agent, backoff, kinds_text,
    post, sign_webhook, wants,
};
use std::time::Instant;

/// Where a turn sends events.
trait Sink {
    fn send(&mut self, e: &Event) -> Attempt;
}

/// An HTTP endpoint, signing with its secret.
struct Endpoint<'a> {
    agent: &'a ureq::Agent,
    url: String,
    secret: WebhookSecret,
    timeout_ms: u32,
}

impl Sink for Endpoint<'_> {
    fn send(&mut self, e: &Event) -> Attempt {
        let body = e.to_json().to_string().into_bytes();
        // The receiver checks the timestamp against its own clock: the wall
        // clock's, not the ledger's.
        let ts = Timestamp::now().0.div_euclid(1_000_000);
        let id = e.id.to_string();
        let signature = match sign_webhook(self.secret.expose(), &id, ts, &body) {
            Ok(s) => s,
            Err(err) => return Attempt::Failed(err.to_string()),
        };
        let ts = ts.to_string();
        let headers =
            [("webhook-id", id.as_str()), ("webhook-timestamp", ts.as_str()), ("webhook-signature", &signature)];
        post(self.agent, &self.url, self.timeout_ms, &headers, &body)
    }
}

/// An in-process handler; its `Err` is a failed attempt.
struct Callback<'h>(&'h mut dyn FnMut(&Event) -> std::result::Result<(), String>);

impl Sink for Callback<'_> {
    fn send(&mut self, e: &Event) -> Attempt {
        match (self.0)(e) {
            Ok(()) => Attempt::Delivered,
            Err(why) => Attempt::Failed(format!("handler failed: {}", truncate(&why))),
        }
    }
}

/// One worker's turn on one subscription.
struct Turn<'a> {
    m: &'a CreditManager,
    id: &'a str,
    owner: &'a str,
    opts: &'a DeliveryOptions,
    /// When the lease was last renewed (this process's clock).
    renewed: Instant,
    report: DeliveryReport,
}

impl CreditManager {
    /// One delivery pass over the enabled HTTP subscriptions (`callback:`
    /// consumers are driven by [`handle_events`](Self::handle_events)):
    /// each not leased by another worker and not waiting for its backoff
    /// gets one turn of up to `batch_size` events. Call it in a loop (the
    /// `creditgate webhooks run` worker does); any number of processes may.
    /// Needs `CREDITGATE_WEBHOOK_KEY` (`InvalidArgument`); a secret
    /// encrypted under another key fails the pass with both key ids named.
    pub fn deliver_webhooks(&self, opts: &DeliveryOptions) -> Result<DeliveryReport> {
        self.track((|| {
            opts.validate()?;
            // Checked before anything is read: a worker started without the
            // key fails at once, not when the first subscription appears.
            let key = self.webhook_key()?;
            let agent = agent(&self.inner.config.webhook_allowed_hosts, opts.timeout_ms);
            let owner = worker_id();
            let mut report = DeliveryReport::default();
            for id in self.read(|tx| tx.deliverable_webhooks())? {
                report.add(self.turn(&id, &owner, opts, |row: &WebhookRow| {
                    let sealed = row
                        .secret
                        .as_deref()
                        .ok_or_else(|| Error::Storage(format!("webhook {}: it has no stored secret", row.id)))?;
                    let secret = key.open(&row.id, sealed)?;
                    Ok(Endpoint { agent: &agent, url: row.url.clone(), secret, timeout_ms: opts.timeout_ms })
                })?);
            }
            Ok(report)
        })())
    }

    /// One turn of the in-process consumer `consumer` (its subscription,
    /// `callback:NAME`, is created at the first call with its cursor at the
    /// outbox's tail: it receives events committed after that; `kinds`,
    /// empty for every kind, replace its kinds at each call). `handler` gets
    /// each event in commit order; its `Err` is a failed attempt, retried
    /// with backoff and dead-lettered like an HTTP delivery. Only one worker
    /// runs a consumer at a time (the lease): `handler` should return within
    /// `timeout_ms`, or another worker may take the consumer over.
    pub fn handle_events(
        &self,
        consumer: &str,
        kinds: &[EventKind],
        opts: &DeliveryOptions,
        handler: &mut dyn FnMut(&Event) -> std::result::Result<(), String>,
    ) -> Result<DeliveryReport> {
        self.track((|| {
            opts.validate()?;
            let name = crate::validate::text("consumer", consumer)?;
            if name.len() + CALLBACK_PREFIX.len() > MAX_TEXT_BYTES || name.chars().any(char::is_control) {
                return Err(Error::invalid(format!("consumer names are at most 246 printable bytes, got {name:?}")));
            }
            let id = self.consumer(&format!("{CALLBACK_PREFIX}{name}"), kinds)?;
            let mut sink = Some(Callback(handler));
            self.turn(&id, &worker_id(), opts, |_| sink.take().ok_or_else(|| Error::Internal("sink reused".into())))
        })())
    }

    /// The id of consumer `url`'s subscription, created at the first call;
    /// its kinds set to `kinds`.
    fn consumer(&self, url: &str, kinds: &[EventKind]) -> Result<String> {
        let text = kinds_text(kinds);
        self.write(|tx| {
            if let Some(row) = tx.webhook_by_url(url)? {
                if row.kinds != text {
                    tx.set_webhook_kinds(&row.id, &text)?;
                }
                return Ok(row.id);
            }
            let row = new_row(tx, &new_webhook_id(), url, kinds, None, None)?;
            if tx.insert_webhook(&row)? {
                return Ok(row.id);
            }
            // Another worker created it first (PostgreSQL: both inserted at once).
            tx.webhook_by_url(url)?.map(|r| r.id).ok_or_else(|| not_found(url))
        })
    }

    /// Claims subscription `id`, runs its turn with the sink `open` makes
    /// of its row, and releases it. Not claimed: counted busy.
    fn turn<S: Sink>(
        &self,
        id: &str,
        owner: &str,
        opts: &DeliveryOptions,
        open: impl FnOnce(&WebhookRow) -> Result<S>,
    ) -> Result<DeliveryReport> {
        let lease_micros = opts.lease_micros();
        let claimed = self.write(|tx| {
            let now = tx.now()?;
            let lease = Lease { owner, until: Timestamp(now.0.saturating_add(lease_micros)) };
            if !tx.claim_webhook(id, lease, now)? {
                return Ok(None);
            }
            Ok(tx.webhook_row(id)?.map(|row| (row, now)))
        })?;
        let Some((row, now)) = claimed else {
            return Ok(DeliveryReport { busy: 1, ..DeliveryReport::default() });
        };
        let mut turn = Turn { m: self, id, owner, opts, renewed: Instant::now(), report: DeliveryReport::default() };
        let outcome = match open(&row) {
            Ok(mut sink) => turn.run(&row, now, &mut sink),
            // This subscription only (its secret sealed under another key,
            // say): recorded on it, and the pass goes on with the others.
            Err(e) => turn.unusable(&row, &e),
        };
        let released = self.write(|tx| tx.release_webhook(id, owner));
        outcome.and(released).map(|()| turn.report)
    }
}

/// A fresh lease owner for one pass: two passes never share a lease, not
/// even two threads of one manager.
fn worker_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

impl Turn<'_> {
    /// Re-queued dead letters first, then the events after the cursor.
    fn run(&mut self, row: &WebhookRow, claimed_at: Timestamp, sink: &mut dyn Sink) -> Result<()> {
        if !self.replay(row, sink)? {
            return Ok(());
        }
        if row.next_attempt_at.is_some_and(|t| t > claimed_at) {
            return Ok(()); // claimed for its re-queued dead letters; the head waits for its backoff
        }
        let events = self.m.read(|tx| tx.events(row.cursor, self.opts.batch_size))?;
        let (mut cursor, mut skipped_to, mut attempts) = (row.cursor, row.cursor, row.attempts);
        for e in &events {
            if !wants(&row.kinds, e.kind) {
                skipped_to = e.id;
                continue;
            }
            if !self.renew_if_due(skipped_to)? {
                return Ok(());
            }
            cursor = skipped_to;
            match sink.send(e) {
                Attempt::Delivered => {
                    if !self.write(|tx, lease| tx.advance_webhook(self.id, lease, e.id, 1))? {
                        return Ok(());
                    }
                    self.report.sent += 1;
                    (cursor, skipped_to, attempts) = (e.id, e.id, 0);
                }
                Attempt::Failed(why) => return self.failed(e, cursor, attempts + 1, &why),
            }
        }
        if skipped_to != cursor {
            self.write(|tx, lease| tx.advance_webhook(self.id, lease, skipped_to, 0))?;
        }
        Ok(())
    }

    /// Attempts each re-queued dead letter once; false when the lease was lost.
    fn replay(&mut self, row: &WebhookRow, sink: &mut dyn Sink) -> Result<bool> {
        let dead = self.m.read(|tx| tx.requeued_dead_letters(self.id, self.opts.batch_size))?;
        for d in dead {
            if !self.renew_if_due(row.cursor)? {
                return Ok(false);
            }
            let event = self.m.read(|tx| tx.event_by_id(d.event_id))?;
            let outcome = event.as_ref().map_or(Attempt::Delivered, |e| sink.send(e));
            let kept = match &outcome {
                Attempt::Delivered => self.write(|tx, lease| {
                    let kept = tx.advance_webhook(self.id, lease, row.cursor, 1)?;
                    if kept {
                        tx.dead_letter_delivered(self.id, d.event_id)?;
                    }
                    Ok(kept)
                })?,
                Attempt::Failed(why) => {
                    self.write(|tx, lease| tx.dead_letter_failed(self.id, lease, d.event_id, why))?
                }
            };
            if !kept {
                return Ok(false);
            }
            match outcome {
                Attempt::Delivered => self.report.sent += 1,
                Attempt::Failed(_) => self.report.failed += 1,
            }
        }
        Ok(true)
    }

    /// Records the failed `attempts`-th attempt of `e`: a retry after the
    /// backoff, or past `max_attempts` a dead letter and the cursor past it.
    fn failed(&mut self, e: &Event, cursor: i64, attempts: u32, why: &str) -> Result<()> {
        let opts = *self.opts;
        let dead = attempts >= opts.max_attempts;
        let jitter = random_u64()?;
        self.write(|tx, lease| {
            if !dead {
                let delay = backoff(attempts, opts.backoff_base_ms, opts.backoff_max_ms, jitter);
                let delay = i64::try_from(delay.saturating_mul(1_000)).unwrap_or(i64::MAX);
                let retry_at = Timestamp(tx.now()?.0.saturating_add(delay));
                return tx.fail_webhook(self.id, lease, cursor, attempts, Some(retry_at), why);
            }
            if !tx.fail_webhook(self.id, lease, e.id, 0, None, why)? {
                return Ok(false);
            }
            let d = DeadLetter {
                subscription_id: self.id.to_string(),
                event_id: e.id,
                kind: e.kind,
                attempts,
                last_error: Some(why.to_string()),
                dead_at: tx.now()?,
                requeued: false,
            };
            tx.insert_dead_letter(&d)?;
            Ok(true)
        })?;
        self.report.failed += 1;
        self.report.dead_lettered += u64::from(dead);
        Ok(())
    }

    /// Records that the subscription could not be worked on at all (`e`:
    /// its secret would not open): a failed attempt that does not count
    /// towards the dead letter (the events are not at fault), retried after
    /// the first backoff step.
    fn unusable(&mut self, row: &WebhookRow, e: &Error) -> Result<()> {
        // Our own message (it names key ids, never a secret), bounded.
        let why: String = e.to_string().chars().take(500).collect();
        let delay_ms = backoff(1, self.opts.backoff_base_ms, self.opts.backoff_max_ms, random_u64()?);
        let delay = i64::try_from(delay_ms.saturating_mul(1_000)).unwrap_or(i64::MAX);
        self.write(|tx, lease| {
            let retry_at = Timestamp(tx.now()?.0.saturating_add(delay));
            tx.fail_webhook(self.id, lease, row.cursor, row.attempts, Some(retry_at), &why)
        })?;
        self.report.failed += 1;
        Ok(())
    }

    /// Renews the lease (moving the cursor over skipped events to
    /// `cursor`) when the last renewal is older than one request timeout,
    /// so the next request ends inside the lease. False: the lease was lost.
    fn renew_if_due(&mut self, cursor: i64) -> Result<bool> {
        if self.renewed.elapsed().as_millis() < u128::from(self.opts.timeout_ms) {
            return Ok(true);
        }
        self.write(|tx, lease| tx.advance_webhook(self.id, lease, cursor, 0))
    }

    /// A write naming this turn's lease, renewed to now + the lease's
    /// length; `f` says whether the lease still held.
    fn write(&mut self, mut f: impl FnMut(&mut dyn Tx, Lease) -> Result<bool> + Send) -> Result<bool> {
        let (owner, micros) = (self.owner, self.opts.lease_micros());
        let started = Instant::now();
        let kept = self.m.write(|tx| {
            let now = tx.now()?;
            f(tx, Lease { owner, until: Timestamp(now.0.saturating_add(micros)) })
        })?;
        if kept {
            self.renewed = started;
        }
        Ok(kept)
    }
}

fn random_u64() -> Result<u64> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| Error::Internal(format!("no randomness for the backoff: {e}")))?;
    Ok(u64::from_le_bytes(b))
}
