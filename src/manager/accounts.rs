//! Reading an account (balance, summary, entries), its floor, and the
//! outbox of events.

use super::CreditManager;
use super::allowances::refilled;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind, MAX_EVENTS_PER_PAGE, NewEvent};
use crate::limits::MAX_LISTED_GRANTS;
use crate::money::{Credits, MAX_AMOUNT_MICROS};
use crate::store::{Scope, Tx};
use crate::types::*;
use crate::validate;

impl CreditManager {
    /// The ledger balance without grants past their expiry (whose `expiry`
    /// entries the next write or `expire_grants` appends).
    pub fn get_balance(&self, user: &str) -> Result<Credits> {
        self.track(validate::text("user_id", user).and_then(|u| {
            self.read(|tx| {
                let now = tx.now()?;
                let balance = tx.account(u)?.map_or(Credits::ZERO, |a| a.balance);
                balance.checked_sub(tx.due_grants(u, now)?)?.checked_add(self.pending_credits(tx, now, u, None)?)
            })
        }))
    }

    pub fn account(&self, user: &str) -> Result<Account> {
        self.track(validate::text("user_id", user).and_then(|u| {
            self.read(|tx| {
                let now = tx.now()?;
                let row = tx.account(u)?;
                let held = tx.held(u, now)?;
                let (lifetime_purchased, lifetime_used) = tx.lifetime(u)?;
                // Refills due but not yet written count, as the next write makes them.
                let pending = self.pending_refills(tx, now, u, None)?;
                let pending_sum = refilled(&pending)?;
                let balance = row.as_ref().map_or(Credits::ZERO, |a| a.balance).checked_sub(tx.due_grants(u, now)?)?;
                let mut grants = pending;
                grants.extend(tx.live_grants(u, now, false, MAX_LISTED_GRANTS, Scope::default())?);
                let min_balance = row.as_ref().map_or(Credits::ZERO, |a| a.min_balance);
                Ok(Account {
                    user_id: u.to_string(),
                    balance: balance.checked_add(pending_sum)?,
                    held,
                    // the rule's one place: store/sql.rs
                    available: tx.available(u, now)?.checked_add(pending_sum)?,
                    min_balance,
                    lifetime_purchased,
                    lifetime_used,
                    active_keys: tx.active_keys(u, now)?,
                    first_key_issued: row.as_ref().is_some_and(|a| a.first_key_issued),
                    created_at: row.map(|a| a.created_at),
                    grants,
                    organisation: tx.member_org(u)?,
                    auto_topup: tx.topup_rule(u)?,
                    topups_this_month: self.topups_this_month(tx, now, u)?,
                })
            })
        }))
    }

    /// Sets the account's floor for strict operations: `floor` ≤ 0, so a
    /// trusted customer may run to −N on deducts, holds and key purchases
    /// (available = balance − held − floor). Usage may still go below it, as
    /// usage already happened. 0 (the default) restores the plain rule.
    pub fn set_min_balance(&self, user: &str, floor: Credits) -> Result<()> {
        self.track((|| {
            let user = validate::text("user_id", user)?;
            if floor > Credits::ZERO || floor.micros() < -MAX_AMOUNT_MICROS {
                return Err(Error::invalid(format!(
                    "min_balance (the floor) must be in -{}..=0, got {floor}",
                    Credits::from_micros(MAX_AMOUNT_MICROS)
                )));
            }
            self.write(|tx| {
                let now = tx.now()?;
                tx.ensure_account(user, now)?;
                tx.set_min_balance(user, floor)
            })
        })())
    }

    /// Newest first; `before` is an entry id cursor.
    pub fn transactions(&self, user: &str, limit: u32, before: Option<EntryId>) -> Result<Vec<Entry>> {
        self.track((|| {
            let user = validate::text("user_id", user)?;
            let limit = validate::page_limit(limit)?;
            self.read(|tx| {
                let before_seq = cursor_seq(tx, user, before)?;
                tx.entries(user, before_seq, limit)
            })
        })())
    }

    /// Outbox events committed after the event with id `after` (0: from the
    /// first), in commit order, at most `limit` (1..=1000). Resume with the
    /// id of the last event handled.
    pub fn events(&self, after: i64, limit: u32) -> Result<Vec<Event>> {
        self.track((|| {
            if after < 0 {
                return Err(Error::invalid(format!("events: after must be 0 or an event id, got {after}")));
            }
            if !(1..=MAX_EVENTS_PER_PAGE).contains(&limit) {
                return Err(Error::invalid(format!("events: limit must be in 1..={MAX_EVENTS_PER_PAGE}, got {limit}")));
            }
            self.read(|tx| tx.events(after, limit))
        })())
    }

    /// Records an outbox event the host observed itself; only the kinds of
    /// [`HOST_EVENT_KINDS`](crate::events::HOST_EVENT_KINDS) (today
    /// `payment.unmapped`, with an empty user id). `data` is a JSON object of
    /// at most `MAX_METADATA_BYTES`. Returns the event's id. Not idempotent:
    /// each call records one event.
    pub fn record_event(&self, kind: EventKind, data: &serde_json::Map<String, serde_json::Value>) -> Result<i64> {
        self.track((|| {
            if !crate::events::HOST_EVENT_KINDS.contains(&kind) {
                return Err(Error::invalid(format!(
                    "record_event takes payment.unmapped; {} is written by the ledger itself",
                    kind.as_str()
                )));
            }
            let data = validate::metadata(Some(data))?.unwrap_or_default();
            self.write(|tx| {
                let now = tx.now()?;
                let e = NewEvent { kind, user_id: "", api_key_id: None, data: data.clone().into(), created_at: now };
                tx.insert_event(&e)
            })
        })())
    }
}

/// The seq of entry `before` of `user`, a page cursor (None: from the
/// newest); an unknown entry, or another account's, is `NotFound`.
pub(super) fn cursor_seq(tx: &mut dyn Tx, user: &str, before: Option<EntryId>) -> Result<Option<i64>> {
    let Some(id) = before else { return Ok(None) };
    match tx.entry_by_id(id)? {
        Some(e) if e.user_id == user => Ok(Some(e.seq)),
        _ => Err(Error::NotFound(format!("no entry {id} for user {:?}", truncate(user)))),
    }
}
