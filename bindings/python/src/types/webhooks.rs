//! The result objects of webhooks (docs/webhooks.md): `WebhookSubscription`,
//! `DeadLetter` and `DeliveryReport`. A subscription never carries its
//! secret: the front door returns a new secret beside it, once.

use super::{repr, to_dict};
use crate::convert::{datetime, obj, opt_datetime};
use creditgate as cg;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Event kinds as their names (`balance.low`).
fn kind_names(kinds: &[cg::EventKind]) -> Vec<&'static str> {
    kinds.iter().map(|k| k.as_str()).collect()
}

record!(
    /// A webhook subscription and its delivery figures (never its secret).
    WebhookSubscription {
        id, url, kinds, enabled, description, created_at, delivered, failed_attempts, dead_lettered, pending,
        lag_seconds, attempts, next_attempt_at, last_error,
    }
);

impl WebhookSubscription {
    pub fn new(py: Python<'_>, s: cg::WebhookSubscription) -> PyResult<WebhookSubscription> {
        Ok(WebhookSubscription {
            id: obj(py, s.id)?,
            url: obj(py, s.url)?,
            kinds: obj(py, kind_names(&s.kinds))?,
            enabled: obj(py, s.enabled)?,
            description: obj(py, s.description)?,
            created_at: datetime(py, s.created_at)?,
            delivered: obj(py, s.delivered)?,
            failed_attempts: obj(py, s.failed_attempts)?,
            dead_lettered: obj(py, s.dead_lettered)?,
            pending: obj(py, s.pending)?,
            lag_seconds: obj(py, s.lag_seconds)?,
            attempts: obj(py, s.attempts)?,
            next_attempt_at: opt_datetime(py, s.next_attempt_at)?,
            last_error: obj(py, s.last_error)?,
        })
    }

    pub fn list(py: Python<'_>, subs: Vec<cg::WebhookSubscription>) -> PyResult<Vec<WebhookSubscription>> {
        subs.into_iter().map(|s| WebhookSubscription::new(py, s)).collect()
    }
}

record!(
    /// An event given up on after every attempt; `replay_dead_letters`
    /// queues it for one more.
    DeadLetter { subscription_id, event_id, kind, attempts, last_error, dead_at, requeued }
);

impl DeadLetter {
    pub fn list(py: Python<'_>, letters: Vec<cg::DeadLetter>) -> PyResult<Vec<DeadLetter>> {
        letters
            .into_iter()
            .map(|d| {
                Ok(DeadLetter {
                    subscription_id: obj(py, d.subscription_id)?,
                    event_id: obj(py, d.event_id)?,
                    kind: obj(py, d.kind.as_str())?,
                    attempts: obj(py, d.attempts)?,
                    last_error: obj(py, d.last_error)?,
                    dead_at: datetime(py, d.dead_at)?,
                    requeued: obj(py, d.requeued)?,
                })
            })
            .collect()
    }
}

record!(
    /// What one `deliver_webhooks()` or `handle_events()` pass did; `busy`
    /// counts subscriptions leased by another worker or waiting for their
    /// backoff.
    DeliveryReport { sent, failed, dead_lettered, busy }
);

impl DeliveryReport {
    pub fn new(py: Python<'_>, r: cg::DeliveryReport) -> PyResult<DeliveryReport> {
        Ok(DeliveryReport {
            sent: obj(py, r.sent)?,
            failed: obj(py, r.failed)?,
            dead_lettered: obj(py, r.dead_lettered)?,
            busy: obj(py, r.busy)?,
        })
    }
}
