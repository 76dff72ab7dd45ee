//! Auto top-up: an account's rule, the top-ups it requests and what became
//! of them. A crossing is detected where the available balance moves
//! (`posting.rs` after each balance move, `holds.rs` after a hold is
//! placed) and handled here, in the same transaction, under the account's
//! lock: concurrent charges from threads and processes cross once per
//! crossing. The pure rules are in `topups.rs`.

use super::CreditManager;
use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::limits::MAX_LISTED_TOPUPS;
use crate::money::Credits;
use crate::store::{Scope, Tx};
use crate::topups::{self, AutoTopup, MonthUse, Plan, TOPUP_ID_PREFIX, Topup, TopupStatus};
use crate::types::{Entry, KeyId, SpendWindow, Timestamp, truncate};
use crate::validate;

impl CreditManager {
    /// Sets `user`'s auto top-up rule (creating the account), replacing any
    /// earlier one. When the available balance is already below the
    /// threshold, requests a top-up at once (under the month's caps) and
    /// returns it — unless that low balance was already served: the earlier
    /// rule's threshold is above it too (its crossing requested, or was
    /// skipped), or a top-up is still waiting for its payment. So setting a
    /// rule again (a deploy that re-applies rules) never asks twice.
    pub fn set_auto_topup(&self, user: &str, rule: &AutoTopup) -> Result<Option<Topup>> {
        let r = (|| {
            let user = validate::text("user_id", user)?;
            rule.validate()?;
            self.write(|tx| {
                let now = tx.now()?;
                tx.ensure_account(user, now)?;
                self.settle_account(tx, now, user, Scope::default())?;
                let earlier = tx.topup_rule(user)?;
                tx.set_topup_rule(user, Some(rule))?;
                let available = tx.available(user, now)?;
                if available >= rule.threshold || earlier.is_some_and(|e| available < e.threshold) {
                    return Ok(None);
                }
                let waiting = self.topups_this_month(tx, now, user)?;
                if waiting.iter().any(|t| t.status == TopupStatus::Requested) {
                    return Ok(None);
                }
                self.request_topup(tx, now, (user, None), rule, available)
            })
        })();
        self.track(r)
    }

    /// Removes `user`'s rule; false when it had none. Top-ups already
    /// requested stay payable.
    pub fn remove_auto_topup(&self, user: &str) -> Result<bool> {
        let r = validate::text("user_id", user).and_then(|user| {
            self.write(|tx| {
                tx.lock_account(user)?;
                if tx.topup_rule(user)?.is_none() {
                    return Ok(false);
                }
                tx.set_topup_rule(user, None)
            })
        });
        self.track(r)
    }

    /// `user`'s newest top-ups, newest first (at most `limit`, 1..=1000).
    pub fn topups(&self, user: &str, limit: u32) -> Result<Vec<Topup>> {
        let r = (|| {
            let user = validate::text("user_id", user)?;
            if !(1..=MAX_LISTED_TOPUPS).contains(&limit) {
                return Err(Error::invalid(format!("limit must be in 1..={MAX_LISTED_TOPUPS}, got {limit}")));
            }
            self.read(|tx| tx.topups(user, limit))
        })();
        self.track(r)
    }

    /// Records that a top-up's payment failed: it stays counted against the
    /// month's caps (docs/auto-topup.md). Idempotent (a failed one is
    /// returned as it is); a paid one is `IdempotencyConflict`.
    pub fn record_topup_failure(&self, topup_id: &str, reason: &str) -> Result<Topup> {
        let r = (|| {
            let id = validate::text("topup_id", topup_id)?;
            let reason = validate::text("reason", reason)?;
            self.write(|tx| {
                let now = tx.now()?;
                let t = find_topup(tx, id)?;
                tx.lock_account(&t.user_id)?;
                // Read again under the lock: a payment may have just landed.
                let t = find_topup(tx, id)?;
                match t.status {
                    TopupStatus::Failed => Ok(t),
                    TopupStatus::Paid => Err(Error::IdempotencyConflict(format!(
                        "top-up {:?} is paid already (entry {})",
                        truncate(id),
                        t.entry_id.map_or_else(String::new, |e| e.to_string())
                    ))),
                    _ => {
                        if !tx.mark_topup_failed(id, reason, now)? {
                            return Err(Error::Internal(format!("top-up {:?} changed under its lock", truncate(id))));
                        }
                        let data = serde_json::json!({
                            "topup_id": t.id, "amount": t.amount.to_string(), "reason": reason,
                        });
                        self.emit(tx, now, &t.user_id, None, EventKind::TopupFailed, data)?;
                        find_topup(tx, id)
                    }
                }
            })
        })();
        self.track(r)
    }

    /// The crossing check of a move of `user`'s available balance just
    /// written (the account is locked; `threshold` is its rule's, read with
    /// the move): `amount` moved the balance (or placed a hold, negated) and
    /// `frees` is an active hold the same write frees (a settlement's).
    /// Requests a top-up iff the available balance went from at or above
    /// the threshold to below it.
    pub(super) fn topup_if_crossed(
        &self,
        tx: &mut dyn Tx,
        now: Timestamp,
        (user, key): (&str, Option<KeyId>),
        threshold: Credits,
        (amount, frees): (Credits, Credits),
    ) -> Result<()> {
        let moved = amount.checked_add(frees)?;
        // Only a move down crosses: credits cost nothing more.
        if !moved.is_negative() {
            return Ok(());
        }
        let after = tx.available(user, now)?.checked_add(frees)?;
        let before = after.checked_sub(moved)?;
        if !(before >= threshold && threshold > after) {
            return Ok(());
        }
        let rule = tx
            .topup_rule(user)?
            .ok_or_else(|| Error::Internal(format!("user {:?} has a top-up threshold but no rule", truncate(user))))?;
        self.request_topup(tx, now, (user, key), &rule, after).map(|_| ())
    }

    /// Requests a top-up for `user` at `available` under `rule` and the
    /// month's caps (`topups::plan`), or records that the caps skipped it.
    fn request_topup(
        &self,
        tx: &mut dyn Tx,
        now: Timestamp,
        (user, key): (&str, Option<KeyId>),
        rule: &AutoTopup,
        available: Credits,
    ) -> Result<Option<Topup>> {
        let used = MonthUse::of(&self.topups_this_month(tx, now, user)?)?;
        let amount = match topups::plan(rule, available, used)? {
            Plan::Skip(reason) => {
                let data = serde_json::json!({
                    "threshold": rule.threshold.to_string(), "available": available.to_string(), "reason": reason,
                });
                self.emit(tx, now, user, key, EventKind::TopupSkipped, data)?;
                return Ok(None);
            }
            Plan::Request(amount) => amount,
        };
        let t = Topup {
            id: topups::new_topup_id(),
            user_id: user.to_string(),
            amount,
            status: TopupStatus::Requested,
            reason: None,
            entry_id: None,
            created_at: now,
            updated_at: now,
        };
        tx.insert_topup(&t)?;
        let (currency, rate) = self.topup_currency()?;
        let data = serde_json::json!({
            "topup_id": t.id,
            "amount": amount.to_string(),
            "threshold": rule.threshold.to_string(),
            "available": available.to_string(),
            "amount_minor": rate.minor_units_for(amount)?,
            "currency": currency,
        });
        self.emit(tx, now, user, key, EventKind::TopupRequested, data)?;
        Ok(Some(t))
    }

    /// The currency a top-up asks for: the ledger's USD.
    fn topup_currency(&self) -> Result<(&str, crate::config::CurrencyRate)> {
        self.inner.config.rate_of("USD").ok_or_else(|| Error::Internal("the USD rate is not configured".into()))
    }

    /// `user`'s top-ups requested in the calendar month (UTC) of `now`.
    pub(super) fn topups_this_month(&self, tx: &mut dyn Tx, now: Timestamp, user: &str) -> Result<Vec<Topup>> {
        let (start, end) = SpendWindow::Monthly.bounds(now);
        tx.topups_between(user, start, end)
    }

    /// After a payment's purchase entry: a payment under a top-up's id marks
    /// the top-up paid (in the payment's transaction). Only `tu_` ids are
    /// looked up. A top-up of another account is refused: the host would
    /// credit the wrong account.
    pub(super) fn topup_paid(&self, tx: &mut dyn Tx, now: Timestamp, payment_id: &str, e: &Entry) -> Result<()> {
        if !payment_id.starts_with(TOPUP_ID_PREFIX) {
            return Ok(());
        }
        let Some(t) = tx.topup(payment_id)? else { return Ok(()) };
        if t.user_id != e.user_id {
            return Err(Error::invalid(format!(
                "top-up {:?} is for another account than {:?}: pay it to the account of its topup.requested event",
                truncate(payment_id),
                truncate(&e.user_id)
            )));
        }
        if tx.mark_topup_paid(payment_id, e.id, now)? {
            let data = serde_json::json!({
                "topup_id": t.id, "entry_id": e.id.to_string(), "amount": e.amount.to_string(),
            });
            self.emit(tx, now, &e.user_id, None, EventKind::TopupPaid, data)?;
        }
        Ok(())
    }
}

fn find_topup(tx: &mut dyn Tx, id: &str) -> Result<Topup> {
    tx.topup(id)?.ok_or_else(|| Error::NotFound(format!("no top-up {:?}", truncate(id))))
}
