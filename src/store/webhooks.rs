//! The storage of webhook subscriptions and their dead letters: statements
//! written once for both backends and run through [`Tx::query_rows`] /
//! [`Tx::execute`]. Every update a delivering worker makes names its lease
//! (`WHERE id = $1 AND lease_owner = $2`): zero rows changed means the lease
//! was taken over, and the worker stops (fencing).

use super::{Param, Tx, rows};
use crate::error::Result;
use crate::events::Event;
use crate::store::sql::Sql;
use crate::types::{KeyId, Timestamp};
use crate::webhooks::DeadLetter;
use std::sync::LazyLock;

use Param::{Int, OptInt, OptText, Text};

macro_rules! statements {
    ($($(#[$doc:meta])* $name:ident = $sql:expr;)*) => {
        $($(#[$doc])* static $name: LazyLock<Sql> = LazyLock::new(|| Sql::new(String::from($sql)));)*

        /// Every statement with its name.
        #[cfg(test)]
        fn all() -> Vec<(&'static str, &'static Sql)> {
            vec![$((stringify!($name), &*$name),)*]
        }
    };
}

/// The columns [`webhook_row`] reads.
const COLS: &str = "w.id, w.url, w.kinds, w.enabled, w.description, w.created_at, w.cursor_id, w.attempts, \
    w.next_attempt_at, w.last_error, w.delivered, w.failed_attempts, \
    (SELECT COUNT(*) FROM creditgate_webhook_dead_letters d WHERE d.subscription_id = w.id), w.secret";
const DEAD_COLS: &str = "subscription_id, event_id, kind, attempts, last_error, dead_at, requeued";

statements! {
    INSERT = "INSERT INTO creditgate_webhooks (id, url, kinds, description, secret, created_at, cursor_id) \
        VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING";
    COUNT = "SELECT COUNT(*) FROM creditgate_webhooks";
    LIST = format!("SELECT {COLS} FROM creditgate_webhooks w ORDER BY w.created_at, w.id");
    BY_ID = format!("SELECT {COLS} FROM creditgate_webhooks w WHERE w.id = $1");
    BY_URL = format!("SELECT {COLS} FROM creditgate_webhooks w WHERE w.url = $1");
    /// The enabled HTTP subscriptions, in the order a pass visits them.
    DELIVERABLE = "SELECT id FROM creditgate_webhooks WHERE enabled AND url NOT LIKE 'callback:%' \
        ORDER BY created_at, id";
    SET_ENABLED = "UPDATE creditgate_webhooks SET enabled = ($2::bigint <> 0) WHERE id = $1";
    SET_KINDS = "UPDATE creditgate_webhooks SET kinds = $2 WHERE id = $1";
    SET_SECRET = "UPDATE creditgate_webhooks SET secret = $2 WHERE id = $1";
    DELETE = "DELETE FROM creditgate_webhooks WHERE id = $1";
    DELETE_DEAD = "DELETE FROM creditgate_webhook_dead_letters WHERE subscription_id = $1";
    /// Leases $1 to $2 until $3 when, at $4, it is enabled, its head is due
    /// (or a dead letter is re-queued) and no other worker's lease is live.
    CLAIM = "UPDATE creditgate_webhooks SET lease_owner = $2, lease_until = $3 WHERE id = $1 AND enabled \
        AND (next_attempt_at IS NULL OR next_attempt_at <= $4 OR EXISTS (SELECT 1 FROM \
        creditgate_webhook_dead_letters d WHERE d.subscription_id = $1 AND d.requeued)) \
        AND (lease_until IS NULL OR lease_until <= $4 OR lease_owner = $2)";
    /// Moves the cursor to $3 (its head changes: the head's attempts reset),
    /// counts $5 deliveries and renews the lease until $4.
    ADVANCE = "UPDATE creditgate_webhooks SET cursor_id = $3, lease_until = $4, delivered = delivered + $5, \
        attempts = CASE WHEN cursor_id = $3 THEN attempts ELSE 0 END, \
        next_attempt_at = CASE WHEN cursor_id = $3 THEN next_attempt_at ELSE NULL END \
        WHERE id = $1 AND lease_owner = $2";
    /// Records a failed attempt: cursor $3, head attempts $4, retried at
    /// $5, error $6, lease until $7.
    FAIL = "UPDATE creditgate_webhooks SET cursor_id = $3, attempts = $4, failed_attempts = failed_attempts + 1, \
        next_attempt_at = $5, last_error = $6, lease_until = $7 WHERE id = $1 AND lease_owner = $2";
    RELEASE = "UPDATE creditgate_webhooks SET lease_owner = NULL, lease_until = NULL \
        WHERE id = $1 AND lease_owner = $2";
    INSERT_DEAD = "INSERT INTO creditgate_webhook_dead_letters (subscription_id, event_id, kind, attempts, \
        last_error, dead_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (subscription_id, event_id) DO UPDATE \
        SET attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error, dead_at = EXCLUDED.dead_at, \
        requeued = FALSE";
    /// Dead letters of subscription $1 (every one when NULL), oldest first.
    DEAD_LETTERS = format!(
        "SELECT {DEAD_COLS} FROM creditgate_webhook_dead_letters WHERE ($1::text IS NULL OR subscription_id = $1) \
         ORDER BY dead_at, subscription_id, event_id LIMIT $2"
    );
    REQUEUED = format!(
        "SELECT {DEAD_COLS} FROM creditgate_webhook_dead_letters WHERE subscription_id = $1 AND requeued \
         ORDER BY dead_at, event_id LIMIT $2"
    );
    REQUEUE_ONE = "UPDATE creditgate_webhook_dead_letters SET requeued = TRUE \
        WHERE subscription_id = $1 AND event_id = $2";
    REQUEUE_ALL = "UPDATE creditgate_webhook_dead_letters SET requeued = TRUE WHERE subscription_id = $1";
    DEAD_DELIVERED = "DELETE FROM creditgate_webhook_dead_letters WHERE subscription_id = $1 AND event_id = $2";
    DEAD_FAILED = "UPDATE creditgate_webhook_dead_letters SET requeued = FALSE, attempts = attempts + 1, \
        last_error = $3 WHERE subscription_id = $1 AND event_id = $2";
    /// A failed replay of a dead letter, counted on its subscription.
    REPLAY_FAILED = "UPDATE creditgate_webhooks SET failed_attempts = failed_attempts + 1, last_error = $3, \
        lease_until = $4 WHERE id = $1 AND lease_owner = $2";
    EVENT = "SELECT id, kind, user_id, api_key_id, data, created_at FROM creditgate_events WHERE id = $1";
}

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
        Ok(self.execute(&INSERT, &p)? == 1)
    }

    pub(crate) fn webhook_count(&mut self) -> Result<u32> {
        self.count(&COUNT, &[])
    }

    pub(crate) fn webhook_rows(&mut self) -> Result<Vec<WebhookRow>> {
        self.all(&LIST, &[], webhook_row)
    }

    pub(crate) fn webhook_row(&mut self, id: &str) -> Result<Option<WebhookRow>> {
        self.first(&BY_ID, &[Text(id)], webhook_row)
    }

    pub(crate) fn webhook_by_url(&mut self, url: &str) -> Result<Option<WebhookRow>> {
        self.first(&BY_URL, &[Text(url)], webhook_row)
    }

    pub(crate) fn deliverable_webhooks(&mut self) -> Result<Vec<String>> {
        self.all(&DELIVERABLE, &[], |r| r.text(0))
    }

    /// False when no subscription has this id.
    pub(crate) fn set_webhook_enabled(&mut self, id: &str, enabled: bool) -> Result<bool> {
        Ok(self.execute(&SET_ENABLED, &[Text(id), Int(i64::from(enabled))])? == 1)
    }

    pub(crate) fn set_webhook_kinds(&mut self, id: &str, kinds: &str) -> Result<()> {
        self.execute(&SET_KINDS, &[Text(id), Text(kinds)]).map(|_| ())
    }

    pub(crate) fn set_webhook_secret(&mut self, id: &str, sealed: &str) -> Result<bool> {
        Ok(self.execute(&SET_SECRET, &[Text(id), Text(sealed)])? == 1)
    }

    /// Deletes the subscription and its dead letters; false when absent.
    pub(crate) fn delete_webhook(&mut self, id: &str) -> Result<bool> {
        self.execute(&DELETE_DEAD, &[Text(id)])?;
        Ok(self.execute(&DELETE, &[Text(id)])? == 1)
    }

    /// Takes the lease on `id` at `now` (see `CLAIM`); false: not due, or
    /// another worker holds it.
    pub(crate) fn claim_webhook(&mut self, id: &str, lease: Lease, now: Timestamp) -> Result<bool> {
        Ok(self.execute(&CLAIM, &[Text(id), Text(lease.owner), Int(lease.until.0), Int(now.0)])? == 1)
    }

    /// Moves the cursor to `cursor`, counts `delivered`, renews the lease;
    /// false: the lease was lost.
    pub(crate) fn advance_webhook(&mut self, id: &str, lease: Lease, cursor: i64, delivered: u64) -> Result<bool> {
        let n = i64::try_from(delivered).unwrap_or(i64::MAX);
        Ok(self.execute(&ADVANCE, &[Text(id), Text(lease.owner), Int(cursor), Int(lease.until.0), Int(n)])? == 1)
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
        Ok(self.execute(&FAIL, &p)? == 1)
    }

    pub(crate) fn release_webhook(&mut self, id: &str, owner: &str) -> Result<()> {
        self.execute(&RELEASE, &[Text(id), Text(owner)]).map(|_| ())
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
        self.execute(&INSERT_DEAD, &p).map(|_| ())
    }

    pub(crate) fn dead_letters(&mut self, id: Option<&str>, limit: u32) -> Result<Vec<DeadLetter>> {
        self.all(&DEAD_LETTERS, &[OptText(id), Int(i64::from(limit))], dead_letter)
    }

    pub(crate) fn requeued_dead_letters(&mut self, id: &str, limit: u32) -> Result<Vec<DeadLetter>> {
        self.all(&REQUEUED, &[Text(id), Int(i64::from(limit))], dead_letter)
    }

    /// Re-queues the dead letters of `id` (only `event_id` when given); how many.
    pub(crate) fn requeue_dead_letters(&mut self, id: &str, event_id: Option<i64>) -> Result<u64> {
        match event_id {
            Some(e) => self.execute(&REQUEUE_ONE, &[Text(id), Int(e)]),
            None => self.execute(&REQUEUE_ALL, &[Text(id)]),
        }
    }

    /// A re-queued dead letter was delivered: it goes.
    pub(crate) fn dead_letter_delivered(&mut self, id: &str, event_id: i64) -> Result<()> {
        self.execute(&DEAD_DELIVERED, &[Text(id), Int(event_id)]).map(|_| ())
    }

    /// A re-queued dead letter failed again: it stays dead, and the
    /// subscription counts the attempt. False: the lease was lost.
    pub(crate) fn dead_letter_failed(&mut self, id: &str, lease: Lease, event_id: i64, error: &str) -> Result<bool> {
        if self.execute(&REPLAY_FAILED, &[Text(id), Text(lease.owner), Text(error), Int(lease.until.0)])? != 1 {
            return Ok(false);
        }
        self.execute(&DEAD_FAILED, &[Text(id), Int(event_id), Text(error)])?;
        Ok(true)
    }

    /// The outbox event with this id.
    pub(crate) fn event_by_id(&mut self, id: i64) -> Result<Option<Event>> {
        self.first(&EVENT, &[Int(id)], |r| {
            let key = r.opt_uuid(3)?.map(KeyId);
            Event::from_stored(r.int(0)?, &r.text(1)?, r.text(2)?, key, &r.text(4)?, r.int(5)?)
        })
    }
}

#[cfg(test)]
mod tests {
    /// Every statement prepares on SQLite (PostgreSQL prepares them in
    /// every test run on it).
    #[test]
    fn every_statement_prepares_on_sqlite() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        for m in super::super::schema::MIGRATIONS {
            c.execute_batch(m.sqlite).unwrap();
        }
        for (name, sql) in super::all() {
            c.prepare(sql.sqlite()).unwrap_or_else(|e| panic!("{name}: {e}: {}", sql.sqlite()));
        }
    }
}
