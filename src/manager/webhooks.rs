//! Webhook subscriptions: create, list, enable, delete, rotate the secret,
//! and their dead letters. Delivery itself is in `delivery.rs`.

use super::CreditManager;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::webhooks::{DeadLetter, DeliveryOptions, DeliveryReport, WebhookSecret, WebhookSubscription};

fn unfinished<T>() -> Result<T> {
    Err(Error::Internal("webhooks: unfinished".into()))
}

impl CreditManager {
    /// Subscribes `url` (`https://…` or `http://…`) to the events of
    /// `kinds` (empty: every kind) committed from now on. Returns the
    /// subscription and its signing secret, shown this once.
    pub fn create_webhook(
        &self,
        url: &str,
        kinds: &[EventKind],
        description: Option<&str>,
    ) -> Result<(WebhookSubscription, WebhookSecret)> {
        let _ = (url, kinds, description);
        unfinished()
    }

    /// Every subscription (`callback:` consumers too), oldest first, with
    /// its figures.
    pub fn webhooks(&self) -> Result<Vec<WebhookSubscription>> {
        unfinished()
    }

    /// One subscription; `NotFound`.
    pub fn webhook(&self, id: &str) -> Result<WebhookSubscription> {
        let _ = id;
        unfinished()
    }

    /// Enables or disables a subscription; `NotFound`.
    pub fn set_webhook_enabled(&self, id: &str, enabled: bool) -> Result<WebhookSubscription> {
        let _ = (id, enabled);
        unfinished()
    }

    /// Deletes a subscription and its dead letters; `NotFound`.
    pub fn delete_webhook(&self, id: &str) -> Result<()> {
        let _ = id;
        unfinished()
    }

    /// Replaces a subscription's signing secret; returns the new one, shown
    /// this once.
    pub fn rotate_webhook_secret(&self, id: &str) -> Result<WebhookSecret> {
        let _ = id;
        unfinished()
    }

    /// Dead letters of subscription `id` (None: of all), oldest first, at
    /// most `limit` (1..=1000).
    pub fn webhook_dead_letters(&self, id: Option<&str>, limit: u32) -> Result<Vec<DeadLetter>> {
        let _ = (id, limit);
        unfinished()
    }

    /// Re-queues dead letters of subscription `id` (None: all of them) for
    /// one more attempt at its next turn; returns how many.
    pub fn replay_dead_letters(&self, id: &str, event_ids: Option<&[i64]>) -> Result<u64> {
        let _ = (id, event_ids);
        unfinished()
    }

    /// One delivery pass over the enabled HTTP subscriptions.
    pub fn deliver_webhooks(&self, opts: &DeliveryOptions) -> Result<DeliveryReport> {
        let _ = opts;
        unfinished()
    }

    /// One pass of the in-process consumer `consumer` over events of
    /// `kinds` (empty: every kind); `handler` returning `Err` is a failed
    /// attempt.
    pub fn handle_events(
        &self,
        consumer: &str,
        kinds: &[EventKind],
        opts: &DeliveryOptions,
        handler: &mut dyn FnMut(&Event) -> std::result::Result<(), String>,
    ) -> Result<DeliveryReport> {
        let _ = (consumer, kinds, opts, handler);
        unfinished()
    }
}
