//! Signed webhooks from the outbox: the pure parts (the types callers see,
//! the signing scheme, the secret at rest, the address policy, the backoff
//! schedule and the HTTP request). The manager drives delivery
//! (`manager/webhooks.rs`, `manager/delivery.rs`) and the store keeps the
//! subscriptions (`store/webhooks.rs`).
//!
//! Delivery follows Standard Webhooks: each event is POSTed as its compact
//! [`Event::to_json`](crate::Event::to_json) with the headers `webhook-id`
//! (the event id), `webhook-timestamp` (unix seconds of the attempt) and
//! `webhook-signature` (`v1,<base64 HMAC-SHA256>`), at least once, in commit
//! order per subscription.

mod address;
mod backoff;
mod http;
mod secret;
mod signing;

pub(crate) use address::{AllowList, check_url};
pub use backoff::backoff;
pub(crate) use http::{Attempt, agent, post};
pub(crate) use secret::WebhookKey;
pub use secret::WebhookSecret;
pub use signing::{sign_webhook, verify_webhook};

use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::limits::{
    DEFAULT_WEBHOOK_BACKOFF_BASE_MS, DEFAULT_WEBHOOK_BACKOFF_MAX_MS, DEFAULT_WEBHOOK_BATCH_SIZE,
    DEFAULT_WEBHOOK_MAX_ATTEMPTS, DEFAULT_WEBHOOK_TIMEOUT_MS, MAX_WEBHOOK_BACKOFF_MS, MAX_WEBHOOK_BATCH_SIZE,
    MAX_WEBHOOK_MAX_ATTEMPTS, MAX_WEBHOOK_TIMEOUT_MS,
};
use crate::types::Timestamp;

/// The URL prefix of in-process consumers driven by `handle_events`.
pub const CALLBACK_PREFIX: &str = "callback:";

/// A webhook subscription and its delivery figures, read from the
/// database (so every process sees the same).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookSubscription {
    /// `wh_` + 32 hex digits.
    pub id: String,
    /// The endpoint (`https://…` or `http://…`), or `callback:NAME` for a
    /// `handle_events` consumer.
    pub url: String,
    /// The kinds delivered; empty: every kind.
    pub kinds: Vec<EventKind>,
    /// A disabled subscription keeps its cursor and receives nothing.
    pub enabled: bool,
    /// The operator's note (`create_webhook`'s description).
    pub description: Option<String>,
    /// When it was created (the ledger's clock).
    pub created_at: Timestamp,
    /// Events delivered (answered 2xx, or handled).
    pub delivered: u64,
    /// Attempts that failed, over the subscription's life.
    pub failed_attempts: u64,
    /// Events now in its dead-letter list.
    pub dead_lettered: u64,
    /// Events of its kinds among the next events after its cursor (one
    /// page, [`MAX_EVENTS_PER_PAGE`](crate::limits::MAX_EVENTS_PER_PAGE)).
    pub pending: u64,
    /// Age in seconds of the oldest event after its cursor, of any kind:
    /// the worker has not yet delivered or skipped it (0: none).
    pub lag_seconds: u64,
    /// Failed attempts of the event at the head (0: none).
    pub attempts: u32,
    /// When the head is retried (None: at the next pass).
    pub next_attempt_at: Option<Timestamp>,
    /// Why the last attempt failed ("HTTP 500", "timeout after 10000 ms",
    /// …); never a secret or a response body.
    pub last_error: Option<String>,
}

/// An event a subscription gave up on after `max_attempts` attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The subscription that gave up.
    pub subscription_id: String,
    /// The outbox event (see `events`).
    pub event_id: i64,
    /// The event's kind.
    pub kind: EventKind,
    /// Attempts made (the dead-lettering ones and any replays).
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was dead-lettered.
    pub dead_at: Timestamp,
    /// Replayed: delivered once more at the start of the subscription's
    /// next turn (then removed, or back to `false` when that attempt fails).
    pub requeued: bool,
}

/// How one delivery pass works. `Default` is the limits' defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryOptions {
    /// Bounds each request, connect included (1..=60 000 ms).
    pub timeout_ms: u32,
    /// Attempts of one event before it is dead-lettered (1..=50).
    pub max_attempts: u32,
    /// The first retry's delay; the delay doubles per attempt (ms, ≥ 1).
    pub backoff_base_ms: u64,
    /// The longest delay (ms, base..=one day).
    pub backoff_max_ms: u64,
    /// Events read per subscription at once (1..=1000).
    pub batch_size: u32,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            timeout_ms: DEFAULT_WEBHOOK_TIMEOUT_MS,
            max_attempts: DEFAULT_WEBHOOK_MAX_ATTEMPTS,
            backoff_base_ms: DEFAULT_WEBHOOK_BACKOFF_BASE_MS,
            backoff_max_ms: DEFAULT_WEBHOOK_BACKOFF_MAX_MS,
            batch_size: DEFAULT_WEBHOOK_BATCH_SIZE,
        }
    }
}

impl DeliveryOptions {
    /// `InvalidArgument` naming the first option out of its range.
    pub fn validate(&self) -> Result<()> {
        let range = |name: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(Error::invalid(format!("{name} must be in {lo}..={hi}, got {v}")))
            }
        };
        range("timeout_ms", self.timeout_ms.into(), 1, MAX_WEBHOOK_TIMEOUT_MS.into())?;
        range("max_attempts", self.max_attempts.into(), 1, MAX_WEBHOOK_MAX_ATTEMPTS.into())?;
        range("backoff_base_ms", self.backoff_base_ms, 1, MAX_WEBHOOK_BACKOFF_MS)?;
        range("backoff_max_ms", self.backoff_max_ms, self.backoff_base_ms, MAX_WEBHOOK_BACKOFF_MS)?;
        range("batch_size", self.batch_size.into(), 1, MAX_WEBHOOK_BATCH_SIZE.into())
    }

    /// How long a worker holds a subscription: twice the request timeout
    /// and 5 s, renewed by every cursor update.
    pub(crate) fn lease_micros(&self) -> i64 {
        (2 * i64::from(self.timeout_ms) + 5_000) * 1_000
    }
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Events delivered (and dead letters delivered on replay).
    pub sent: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// Events moved to the dead-letter list.
    pub dead_lettered: u64,
    /// Subscriptions skipped: leased by another worker or waiting for
    /// their backoff.
    pub busy: u64,
}

impl DeliveryReport {
    pub(crate) fn add(&mut self, o: DeliveryReport) {
        self.sent += o.sent;
        self.failed += o.failed;
        self.dead_lettered += o.dead_lettered;
        self.busy += o.busy;
    }
}

/// The kinds as stored: comma-separated names, empty for every kind.
pub(crate) fn kinds_text(kinds: &[EventKind]) -> String {
    let mut names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.join(",")
}

/// The stored kinds back (an unknown name is skipped: a newer library
/// wrote it, and this one writes no such events).
pub(crate) fn parse_kinds(text: &str) -> Vec<EventKind> {
    text.split(',').filter_map(|n| n.parse().ok()).collect()
}

/// Whether a subscription with stored kinds `text` receives `kind`: by
/// name, so a subscription whose kinds this library does not know never
/// widens to every kind.
pub(crate) fn wants(text: &str, kind: EventKind) -> bool {
    text.is_empty() || text.split(',').any(|n| n == kind.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_stored_sorted_once_and_matched_by_name() {
        let kinds = [EventKind::Overdraft, EventKind::BalanceLow, EventKind::Overdraft];
        let text = kinds_text(&kinds);
        assert_eq!(text, "balance.low,overdraft");
        assert_eq!(parse_kinds(&text), vec![EventKind::BalanceLow, EventKind::Overdraft]);
        assert!(wants(&text, EventKind::Overdraft) && !wants(&text, EventKind::KeyCreated));
        assert!(wants("", EventKind::KeyCreated), "no kinds: every kind");
        // Kinds only a newer library knows never widen to every kind.
        assert!(parse_kinds("topup.future").is_empty() && !wants("topup.future", EventKind::KeyCreated));
    }

    #[test]
    fn delivery_options_are_bounded() {
        assert!(DeliveryOptions::default().validate().is_ok());
        let d = DeliveryOptions::default();
        for bad in [
            DeliveryOptions { timeout_ms: 0, ..d },
            DeliveryOptions { timeout_ms: MAX_WEBHOOK_TIMEOUT_MS + 1, ..d },
            DeliveryOptions { max_attempts: 0, ..d },
            DeliveryOptions { max_attempts: MAX_WEBHOOK_MAX_ATTEMPTS + 1, ..d },
            DeliveryOptions { backoff_base_ms: 0, ..d },
            DeliveryOptions { backoff_max_ms: d.backoff_base_ms - 1, ..d },
            DeliveryOptions { backoff_max_ms: MAX_WEBHOOK_BACKOFF_MS + 1, ..d },
            DeliveryOptions { batch_size: 0, ..d },
            DeliveryOptions { batch_size: MAX_WEBHOOK_BATCH_SIZE + 1, ..d },
        ] {
            let e = bad.validate().unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::InvalidArgument, "{bad:?}");
        }
        assert_eq!(d.lease_micros(), 25_000_000, "twice the timeout and 5 s");
    }

    #[test]
    fn event_kinds_parse_and_list() {
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>().unwrap(), *k);
        }
        let e = "balance.lo".parse::<EventKind>().unwrap_err().to_string();
        assert!(e.contains("balance.low") && e.contains("key.created"), "{e}");
    }
}
