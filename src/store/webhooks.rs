//! The storage of webhook subscriptions and their dead letters: the
//! `webhook_*` statements of `sql.rs`'s table, written once for both
//! backends and run through [`Tx::query_rows`] / [`Tx::execute`]. Every update a delivering worker makes names its lease
//! (`WHERE id = $1 AND lease_owner = $2`): zero rows changed means the lease
//! was taken over, and the worker stops (fencing).

use super::sql::S;
use super::{Param, Tx, rows};
use crate::error::Result;
use crate::events::Event;
use crate::types::{KeyId, Timestamp};
use crate::webhooks::DeadLetter;

use Param::{Int, OptInt, OptText, Text};

/// A subscription as stored.
#[derive(Clone, Debug)]
pub(crate) struct WebhookRow {
    pub id: String,
    pub url: String,
    /// Comma-separated kinds; empty: every kind.
    pub kinds: String,
    pub enabled: bool,
    pub description: Option<String>,
    pub created_at: Timestamp,
    pub cursor: i64,
    pub attempts: u32,
    pub next_attempt_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub delivered: u64,
    pub failed_attempts: u64,
    pub dead_lettered: u64,
    /// The encrypted secret (None: a callback consumer).
    pub secret: Option<String>,
}

/// A count column as u64 (negative would be a damaged row: 0).
fn count(r: &dyn rows::Columns, i: usize) -> Result<u64> {
    Ok(u64::try_from(r.int(i)?).unwrap_or(0))
}

fn webhook_row(r: &dyn rows::Columns) -> Result<WebhookRow> {
    Ok(WebhookRow {
        id: r.text(0)?,
        url: r.text(1)?,
        kinds: r.text(2)?,
        enabled: r.flag(3)?,
        description: r.opt_text(4)?,
        created_at: Timestamp(r.int(5)?),
        cursor: r.int(6)?,
        attempts: u32::try_from(r.int(7)?).unwrap_or(u32::MAX),
        next_attempt_at: r.opt_int(8)?.map(Timestamp),
        last_error: r.opt_text(9)?,
        delivered: count(r, 10)?,
        failed_attempts: count(r, 11)?,
        dead_lettered: count(r, 12)?,
        secret: r.opt_text(13)?,
    })
}

fn dead_letter(r: &dyn rows::Columns) -> Result<DeadLetter> {
    let kind = r.text(2)?;
    Ok(DeadLetter {
        subscription_id: r.text(0)?,
        event_id: r.int(1)?,
        kind: kind.parse().map_err(|_| rows::corrupt("dead letter kind", &kind))?,
        attempts: u32::try_from(r.int(3)?).unwrap_or(u32::MAX),
        last_error: r.opt_text(4)?,
        dead_at: Timestamp(r.int(5)?),
        requeued: r.flag(6)?,
    })
}

/// A worker's lease on a subscription: who holds it and until when.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lease<'a> {
    pub owner: &'a str,
    pub until: Timestamp,
}

impl dyn Tx + '_ {
    /// Inserts a subscription; false when its (callback) url exists.
    pub(crate) fn insert_webhook(&mut self, w: &WebhookRow) -> Result<bool> {
        let p = [
            Text(&w.id),
            Text(&w.url),
            Text(&w.kinds),
            OptText(w.description.as_deref()),
            OptText(w.secret.as_deref()),
            Int(w.created_at.0),
            Int(w.cursor),
        ];
        Ok(self.execute(&S.webhook_insert, &p)? == 1)
    }

    pub(crate) fn webhook_count(&mut self) -> Result<u32> {
        self.count(&S.webhook_count, &[])
    }

    pub(crate) fn webhook_rows(&mut self) -> Result<Vec<WebhookRow>> {
        self.all(&S.webhook_list, &[], webhook_row)
    }

    pub(crate) fn webhook_row(&mut self, id: &str) -> Result<Option<WebhookRow>> {
        self.first(&S.webhook_by_id, &[Text(id)], webhook_row)
    }

    pub(crate) fn webhook_by_url(&mut self, url: &str) -> Result<Option<WebhookRow>> {
        self.first(&S.webhook_by_url, &[Text(url)], webhook_row)
    }

    pub(crate) fn deliverable_webhooks(&mut self) -> Result<Vec<String>> {
        self.all(&S.webhook_deliverable, &[], |r| r.text(0))
    }

    /// False when no subscription has this id.
    pub(crate) fn set_webhook_enabled(&mut self, id: &str, enabled: bool) -> Result<bool> {
        Ok(self.execute(&S.webhook_set_enabled, &[Text(id), Int(i64::from(enabled))])? == 1)
    }

    pub(crate) fn set_webhook_kinds(&mut self, id: &str, kinds: &str) -> Result<()> {
        self.execute(&S.webhook_set_kinds, &[Text(id), Text(kinds)]).map(|_| ())
    }

    pub(crate) fn set_webhook_secret(&mut self, id: &str, sealed: &str) -> Result<bool> {
        Ok(self.execute(&S.webhook_set_secret, &[Text(id), Text(sealed)])? == 1)
    }

    /// Deletes the subscription and its dead letters; false when absent.
    pub(crate) fn delete_webhook(&mut self, id: &str) -> Result<bool> {
        self.execute(&S.webhook_delete_dead, &[Text(id)])?;
        Ok(self.execute(&S.webhook_delete, &[Text(id)])? == 1)
    }

    /// Takes the lease on `id` at `now` (see `CLAIM`); false: not due, or
    /// another worker holds it.
    pub(crate) fn claim_webhook(&mut self, id: &str, lease: Lease, now: Timestamp) -> Result<bool> {
        Ok(self.execute(&S.webhook_claim, &[Text(id), Text(lease.owner), Int(lease.until.0), Int(now.0)])? == 1)
    }

    /// Moves the cursor to `cursor`, counts `delivered`, renews the lease;
    /// false: the lease was lost.
    pub(crate) fn advance_webhook(&mut self, id: &str, lease: Lease, cursor: i64, delivered: u64) -> Result<bool> {
        let n = i64::try_from(delivered).unwrap_or(i64::MAX);
        Ok(self.execute(&S.webhook_advance, &[Text(id), Text(lease.owner), Int(cursor), Int(lease.until.0), Int(n)])?
            == 1)
    }

    /// Records a failed attempt (see `FAIL`); false: the lease was lost.
    pub(crate) fn fail_webhook(
        &mut self,
        id: &str,
        lease: Lease,
        cursor: i64,
        attempts: u32,
        retry_at: Option<Timestamp>,
        error: &str,
    ) -> Result<bool> {
        let p = [
            Text(id),
            Text(lease.owner),
            Int(cursor),
            Int(i64::from(attempts)),
            OptInt(retry_at.map(|t| t.0)),
            Text(error),
            Int(lease.until.0),
        ];
        Ok(self.execute(&S.webhook_fail, &p)? == 1)
    }

    pub(crate) fn release_webhook(&mut self, id: &str, owner: &str) -> Result<()> {
        self.execute(&S.webhook_release, &[Text(id), Text(owner)]).map(|_| ())
    }

    pub(crate) fn insert_dead_letter(&mut self, d: &DeadLetter) -> Result<()> {
        let p = [
            Text(&d.subscription_id),
            Int(d.event_id),
            Text(d.kind.as_str()),
            Int(i64::from(d.attempts)),
            OptText(d.last_error.as_deref()),
            Int(d.dead_at.0),
        ];
        self.execute(&S.webhook_insert_dead, &p).map(|_| ())
    }

    pub(crate) fn dead_letters(&mut self, id: Option<&str>, limit: u32) -> Result<Vec<DeadLetter>> {
        self.all(&S.webhook_dead_letters, &[OptText(id), Int(i64::from(limit))], dead_letter)
    }

    pub(crate) fn requeued_dead_letters(&mut self, id: &str, limit: u32) -> Result<Vec<DeadLetter>> {
        self.all(&S.webhook_requeued, &[Text(id), Int(i64::from(limit))], dead_letter)
    }

    /// Re-queues the dead letters of `id` (only `event_id` when given); how many.
    pub(crate) fn requeue_dead_letters(&mut self, id: &str, event_id: Option<i64>) -> Result<u64> {
        match event_id {
            Some(e) => self.execute(&S.webhook_requeue_one, &[Text(id), Int(e)]),
            None => self.execute(&S.webhook_requeue_all, &[Text(id)]),
        }
    }

    /// A re-queued dead letter was delivered: it goes.
    pub(crate) fn dead_letter_delivered(&mut self, id: &str, event_id: i64) -> Result<()> {
        self.execute(&S.webhook_dead_delivered, &[Text(id), Int(event_id)]).map(|_| ())
    }

    /// A re-queued dead letter failed again: it stays dead, and the
    /// subscription counts the attempt. False: the lease was lost.
    pub(crate) fn dead_letter_failed(&mut self, id: &str, lease: Lease, event_id: i64, error: &str) -> Result<bool> {
        if self.execute(&S.webhook_replay_failed, &[Text(id), Text(lease.owner), Text(error), Int(lease.until.0)])? != 1
        {
            return Ok(false);
        }
        self.execute(&S.webhook_dead_failed, &[Text(id), Int(event_id), Text(error)])?;
        Ok(true)
    }

    /// The outbox event with this id.
    pub(crate) fn event_by_id(&mut self, id: i64) -> Result<Option<Event>> {
        self.first(&S.webhook_event, &[Int(id)], |r| {
            let key = r.opt_uuid(3)?.map(KeyId);
            Event::from_stored(r.int(0)?, &r.text(1)?, r.text(2)?, key, &r.text(4)?, r.int(5)?)
        })
    }
}
