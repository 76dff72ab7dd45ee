//! Allowances: an amount of credits every period, refilled as a grant
//! exactly once per period with no cron job. The account row keeps its
//! allowances' earliest next refill (`refill_at`); the first write of a
//! period on the account (any operation: `settle_account`) writes the
//! refill under the account's lock, reads add it without writing
//! (`pending_refills`), and `expire_grants` sweeps. What a refill adds is
//! decided in one place, [`plan_refill`].

use super::CreditManager;
use super::grants::GrantSpec;
use super::posting::Draft;
use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::limits::{MAX_ALLOWANCES_PER_ACCOUNT, MAX_GRANT_LIFETIME_MICROS};
use crate::money::Credits;
use crate::organisations::{Allowance, AllowanceSpec};
use crate::store::{Scope, Tx};
use crate::types::*;
use crate::validate;

/// One period's refill of an allowance, planned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Refill {
    /// What the refill grants (0: the rollover cap is reached).
    pub(super) amount: Credits,
    pub(super) period_start: Timestamp,
    pub(super) period_end: Timestamp,
    /// The grant's expiry: the period's end without rollover.
    pub(super) expires_at: Option<Timestamp>,
}

/// The refill of allowance `a` due at `now`, given what its grants still
/// hold (`live`); None when none is due. Without rollover a refill grants
/// the amount, valid until the period ends (missed periods are not
/// granted: their grants would have expired unused). With rollover it adds
/// the amount for every period since the last refill, up to the cap.
/// Pure.
pub(super) fn plan_refill(a: &Allowance, live: Credits, now: Timestamp) -> Option<Refill> {
    if now < a.next_refill_at {
        return None;
    }
    let (period_start, period_end) = a.period.bounds(now);
    let amount = match a.rollover_cap {
        None => a.amount,
        Some(cap) => {
            // Periods since the last refill: bounded, as a cap is reached
            // after cap / amount periods at most.
            let (mut periods, mut t) = (0i128, a.next_refill_at);
            let needed = i128::from(cap.micros()) / i128::from(a.amount.micros().max(1)) + 1;
            while t <= now && periods < needed {
                periods += 1;
                t = a.period.bounds(t).1;
            }
            let room = i128::from(cap.micros()) - i128::from(live.micros());
            let add = (periods * i128::from(a.amount.micros())).min(room).max(0);
            Credits::from_micros(i64::try_from(add).unwrap_or(0))
        }
    };
    let expires_at = a.rollover_cap.is_none().then_some(period_end);
    Some(Refill { amount, period_start, period_end, expires_at })
}

/// Whether a charge in `scope` may draw allowance `a`'s grants.
fn usable_by(a: &Allowance, scope: Scope) -> bool {
    match (&a.member_id, a.api_key_id) {
        (None, None) => true,
        (Some(m), _) => scope.member == Some(m.as_str()),
        (None, Some(k)) => scope.key == Some(k),
    }
}

impl CreditManager {
    /// Creates an allowance and grants its current period at once.
    pub fn set_allowance(&self, spec: &AllowanceSpec) -> Result<Allowance> {
        self.track((|| {
            let user = validate::text("user_id", spec.user)?;
            let member = validate::opt_text("member", spec.member)?;
            check_spec(spec)?;
            self.write(|tx| {
                let now = tx.now()?;
                tx.ensure_account(user, now)?;
                self.check_allowance_scope(tx, user, member, spec.key)?;
                let n = tx.allowance_count(user)?;
                if n >= MAX_ALLOWANCES_PER_ACCOUNT {
                    return Err(Error::LimitReached {
                        limit: "max_allowances_per_account",
                        detail: format!("{user:?} has {n} allowances, the maximum is {MAX_ALLOWANCES_PER_ACCOUNT}"),
                    });
                }
                let mut row = Allowance {
                    allowance_id: 0,
                    user_id: user.to_string(),
                    member_id: member.map(str::to_string),
                    api_key_id: spec.key,
                    amount: spec.amount,
                    period: spec.period,
                    rollover_cap: spec.rollover_cap,
                    next_refill_at: now,
                    created_at: now,
                };
                row.allowance_id = tx.insert_allowance(&row)?;
                let data = serde_json::json!({
                    "allowance_id": row.allowance_id, "amount": row.amount.to_string(), "period": row.period.as_str(),
                    "rollover_cap": row.rollover_cap.map(|c| c.to_string()), "member_id": row.member_id,
                    "api_key_id": row.api_key_id.map(|k| k.to_string()),
                });
                self.emit(tx, now, user, spec.key, EventKind::AllowanceSet, data)?;
                tx.sync_refill_at(user)?;
                self.settle_account(tx, now, user, Scope::default())?;
                tx.allowance(row.allowance_id)?.ok_or_else(|| Error::Internal("allowance vanished".into()))
            })
        })())
    }

    /// A member must be `user`'s member; a key must be charged to `user`.
    fn check_allowance_scope(
        &self,
        tx: &mut dyn Tx,
        user: &str,
        member: Option<&str>,
        key: Option<KeyId>,
    ) -> Result<()> {
        if let Some(m) = member
            && tx.member_org(m)?.as_deref() != Some(user)
        {
            return Err(Error::NotFound(format!("{m:?} is not a member of {user:?}")));
        }
        if let Some(id) = key
            && tx.key_by_id(id)?.is_none_or(|k| k.paying() != user)
        {
            return Err(Error::NotFound(format!("no API key {id} charged to {user:?}")));
        }
        Ok(())
    }

    /// Stops an allowance's refills; the grants it issued stay (and expire
    /// as they would). `NotFound` for an unknown or removed allowance.
    pub fn remove_allowance(&self, allowance_id: i64) -> Result<()> {
        self.track(self.write(|tx| {
            let now = tx.now()?;
            let a =
                tx.allowance(allowance_id)?.ok_or_else(|| Error::NotFound(format!("no allowance {allowance_id}")))?;
            tx.ensure_account(&a.user_id, now)?;
            if !tx.remove_allowance(a.allowance_id, now)? {
                return Err(Error::NotFound(format!("no allowance {allowance_id}")));
            }
            tx.sync_refill_at(&a.user_id)?;
            let data = serde_json::json!({ "allowance_id": a.allowance_id });
            self.emit(tx, now, &a.user_id, a.api_key_id, EventKind::AllowanceRemoved, data)
        }))
    }

    /// `user`'s allowances (not removed), oldest first.
    pub fn allowances(&self, user: &str) -> Result<Vec<Allowance>> {
        self.track(validate::text("user_id", user).and_then(|u| self.read(|tx| tx.allowances(u))))
    }

    /// Writes every refill of `user`'s allowances due at `now`, exactly
    /// once per allowance and period: the caller holds the account's lock,
    /// the next refill moves only from the value read, and each refill's
    /// entry carries a unique key. Returns how many were written.
    pub(super) fn refill_due(&self, tx: &mut dyn Tx, now: Timestamp, user: &str) -> Result<u64> {
        if tx.refill_at(user)?.is_none_or(|t| t > now) {
            return Ok(0);
        }
        let mut written = 0;
        for a in tx.due_allowances(user, now)? {
            let live = tx.allowance_live(a.allowance_id, now)?;
            let Some(r) = plan_refill(&a, live, now) else { continue };
            if !tx.advance_allowance(a.allowance_id, a.next_refill_at, r.period_end)? {
                return Err(Error::Internal(format!("allowance {} was refilled concurrently", a.allowance_id)));
            }
            self.write_refill(tx, now, &a, r)?;
            written += 1;
        }
        tx.sync_refill_at(user)?;
        Ok(written)
    }

    /// The `allowance` entry of a refill and its grant (none for 0), and
    /// the `allowance.refilled` event.
    fn write_refill(&self, tx: &mut dyn Tx, now: Timestamp, a: &Allowance, r: Refill) -> Result<()> {
        let mut data = serde_json::json!({
            "allowance_id": a.allowance_id, "amount": r.amount.to_string(),
            "period_start": r.period_start.to_rfc3339(), "period_end": r.period_end.to_rfc3339(),
        });
        if r.amount > Credits::ZERO {
            let mut d = Draft::new(&a.user_id, EntryKind::Allowance, r.amount);
            d.key = Some(format!("allowance:{}:{}", a.allowance_id, r.period_start.0));
            d.reference = Some(format!("allowance:{}", a.allowance_id));
            d.member = a.member_id.clone();
            d.api_key_id = a.api_key_id;
            d.grant = Some(GrantSpec {
                category: GrantCategory::Promotional,
                priority: 0,
                expires_at: r.expires_at.filter(|t| t.0.saturating_sub(now.0) <= MAX_GRANT_LIFETIME_MICROS),
                payment_id: None,
                member_id: a.member_id.clone(),
                api_key_id: a.api_key_id,
                allowance_id: Some(a.allowance_id),
            });
            let e = self.post_credit(tx, now, d)?;
            data["entry_id"] = serde_json::Value::from(e.id.to_string());
        }
        self.emit(tx, now, &a.user_id, a.api_key_id, EventKind::AllowanceRefilled, data)
    }

    /// The refills due at `now` on `user`'s account that no write has made
    /// yet, as the grants they would be (`grant_id` 0): each credits its
    /// `amount`, of which what repays a debt is not left in the grant, as a
    /// write does (`move_lots`). With `scope`, only those a charge in that
    /// scope may draw. A read: writes nothing.
    pub(super) fn pending_refills(
        &self,
        tx: &mut dyn Tx,
        now: Timestamp,
        user: &str,
        scope: Option<Scope>,
    ) -> Result<Vec<Grant>> {
        if tx.account(user)?.and_then(|a| a.refill_at).is_none_or(|t| t > now) {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        // The balance the refills are written onto: after the due expiries.
        let balance = tx.account(user)?.map_or(Credits::ZERO, |a| a.balance);
        let mut balance = balance.checked_sub(tx.due_grants(user, now)?)?;
        for a in tx.due_allowances(user, now)? {
            let live = tx.allowance_live(a.allowance_id, now)?;
            let Some(r) = plan_refill(&a, live, now).filter(|r| r.amount > Credits::ZERO) else { continue };
            let before = balance.max(Credits::ZERO);
            balance = balance.checked_add(r.amount)?;
            let remaining = balance.max(Credits::ZERO).checked_sub(before)?;
            if scope.is_none_or(|s| usable_by(&a, s)) {
                out.push(Grant {
                    grant_id: GrantId(0),
                    user_id: user.to_string(),
                    category: GrantCategory::Promotional,
                    priority: 0,
                    amount: r.amount,
                    remaining,
                    expires_at: r.expires_at,
                    created_at: now,
                    source_entry_id: None,
                    payment_id: None,
                    member_id: a.member_id.clone(),
                    api_key_id: a.api_key_id,
                    allowance_id: Some(a.allowance_id),
                });
            }
        }
        Ok(out)
    }

    /// What [`pending_refills`](Self::pending_refills) add to the balance
    /// (their amounts: what repays a debt counts too).
    pub(super) fn pending_credits(
        &self,
        tx: &mut dyn Tx,
        now: Timestamp,
        user: &str,
        scope: Option<Scope>,
    ) -> Result<Credits> {
        refilled(&self.pending_refills(tx, now, user, scope)?)
    }
}

/// What pending refills add to a balance: their amounts (what repays a
/// debt counts too, though the grant keeps only the rest).
pub(super) fn refilled(pending: &[Grant]) -> Result<Credits> {
    pending.iter().try_fold(Credits::ZERO, |sum, g| sum.checked_add(g.amount))
}

fn check_spec(spec: &AllowanceSpec) -> Result<()> {
    spec.amount.validate_positive("amount")?;
    if spec.period == SpendWindow::Lifetime {
        return Err(Error::invalid("an allowance's period must be daily, weekly or monthly, got lifetime"));
    }
    if spec.member.is_some() && spec.key.is_some() {
        return Err(Error::invalid("an allowance is for the account, one member or one key: not both"));
    }
    if let Some(cap) = spec.rollover_cap {
        cap.validate_positive("rollover_cap")?;
        if cap < spec.amount {
            return Err(Error::invalid(format!("rollover_cap {cap} is below the amount {}", spec.amount)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::types::utc as at;

    fn monthly(cap: Option<i64>, next: &str) -> Allowance {
        Allowance {
            allowance_id: 1,
            user_id: "u".into(),
            member_id: None,
            api_key_id: None,
            amount: Credits::from_micros(100),
            period: SpendWindow::Monthly,
            rollover_cap: cap.map(Credits::from_micros),
            next_refill_at: at(next),
            created_at: at("2026-01-01T00:00:00Z"),
        }
    }

    #[test]
    fn no_refill_before_the_next_period() {
        assert_eq!(
            plan_refill(&monthly(None, "2026-02-01T00:00:00Z"), Credits::ZERO, at("2026-01-31T23:59:59Z")),
            None
        );
    }

    #[test]
    fn without_rollover_one_period_expiring_at_its_end() {
        let r =
            plan_refill(&monthly(None, "2026-02-01T00:00:00Z"), Credits::from_micros(40), at("2026-04-10T00:00:00Z"));
        let r = r.unwrap();
        assert_eq!(r.amount, Credits::from_micros(100));
        assert_eq!((r.period_start, r.period_end), (at("2026-04-01T00:00:00Z"), at("2026-05-01T00:00:00Z")));
        assert_eq!(r.expires_at, Some(at("2026-05-01T00:00:00Z")));
    }

    #[test]
    fn with_rollover_every_missed_period_up_to_the_cap() {
        // Three periods (Feb, Mar, Apr) due, 40 left: min(300, 250 - 40) = 210.
        let r = plan_refill(
            &monthly(Some(250), "2026-02-01T00:00:00Z"),
            Credits::from_micros(40),
            at("2026-04-10T00:00:00Z"),
        );
        assert_eq!(r.unwrap().amount, Credits::from_micros(210));
        assert_eq!(r.unwrap().expires_at, None);
        // One period, room for all of it.
        let r = plan_refill(&monthly(Some(1000), "2026-04-01T00:00:00Z"), Credits::ZERO, at("2026-04-01T00:00:00Z"));
        assert_eq!(r.unwrap().amount, Credits::from_micros(100));
        // At the cap: nothing to add, but the period is still refilled (once).
        let r = plan_refill(
            &monthly(Some(250), "2026-04-01T00:00:00Z"),
            Credits::from_micros(250),
            at("2026-04-02T00:00:00Z"),
        );
        assert_eq!(r.unwrap().amount, Credits::ZERO);
    }

    #[test]
    fn scoped_allowances_serve_their_member_or_key_only() {
        let key = KeyId::new();
        let mut a = monthly(None, "2026-01-01T00:00:00Z");
        assert!(usable_by(&a, Scope::default()));
        a.member_id = Some("m".into());
        assert!(usable_by(&a, Scope { member: Some("m"), key: None }));
        assert!(!usable_by(&a, Scope { member: Some("n"), key: Some(key) }));
        a.member_id = None;
        a.api_key_id = Some(key);
        assert!(usable_by(&a, Scope { member: None, key: Some(key) }));
        assert!(!usable_by(&a, Scope::default()));
    }
}
