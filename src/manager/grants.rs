//! Grants (lots): the limits of a grant's options, the grant a credit
//! creates, and the sweep that applies due expiries. Draw-down itself is
//! part of posting (`posting.rs`).

use super::CreditManager;
use crate::error::{Error, Result};
use crate::limits::{MAX_EXPIRY_SWEEP, MAX_GRANT_LIFETIME_MICROS, MAX_GRANT_PRIORITY, MIN_GRANT_PRIORITY};
use crate::money::Credits;
use crate::store::Scope;
use crate::types::*;

/// The grant a credit creates.
#[derive(Clone, Debug)]
pub(super) struct GrantSpec {
    pub(super) category: GrantCategory,
    pub(super) priority: i32,
    pub(super) expires_at: Option<Timestamp>,
    pub(super) payment_id: Option<String>,
    /// Whom the grant is reserved for (an allowance's member or key).
    pub(super) member_id: Option<String>,
    pub(super) api_key_id: Option<KeyId>,
    pub(super) allowance_id: Option<i64>,
}

impl GrantSpec {
    /// The category of a kind's credits when the caller names none:
    /// `grant` is promotional; purchases, refunds and adjustments are paid.
    pub(super) fn default_category(kind: EntryKind) -> GrantCategory {
        if kind == EntryKind::Grant { GrantCategory::Promotional } else { GrantCategory::Paid }
    }

    /// The defaults of a kind's credits: its category, priority 0, no
    /// expiry, for the whole account.
    pub(super) fn of_kind(kind: EntryKind) -> GrantSpec {
        GrantSpec {
            category: GrantSpec::default_category(kind),
            priority: 0,
            expires_at: None,
            payment_id: None,
            member_id: None,
            api_key_id: None,
            allowance_id: None,
        }
    }

    /// Validates the caller's options for a credit of `amount`.
    pub(super) fn of(kind: EntryKind, amount: Credits, o: &GrantOptions) -> Result<Option<GrantSpec>> {
        if !(MIN_GRANT_PRIORITY..=MAX_GRANT_PRIORITY).contains(&o.priority) {
            return Err(Error::invalid(format!(
                "priority must be in {MIN_GRANT_PRIORITY}..={MAX_GRANT_PRIORITY}, got {}",
                o.priority
            )));
        }
        if amount <= Credits::ZERO {
            if *o != GrantOptions::default() {
                return Err(Error::invalid(
                    "expires_at, category and priority describe credits; a negative adjustment is a debit",
                ));
            }
            return Ok(None);
        }
        Ok(Some(GrantSpec {
            category: o.category.unwrap_or_else(|| GrantSpec::default_category(kind)),
            priority: o.priority,
            expires_at: o.expires_at,
            ..GrantSpec::of_kind(kind)
        }))
    }

    /// `expires_at` must lie in (now, now + 100 years].
    pub(super) fn check(&self, now: Timestamp) -> Result<()> {
        if let Some(t) = self.expires_at
            && (t <= now || t.0 - now.0 > MAX_GRANT_LIFETIME_MICROS)
        {
            return Err(Error::invalid(format!(
                "expires_at must be after the ledger's clock ({now}) and at most 100 years ahead, got {t}"
            )));
        }
        Ok(())
    }
}

impl CreditManager {
    /// Applies every due expiry and allowance refill of up to `limit`
    /// accounts (in 1..=`MAX_EXPIRY_SWEEP`), one transaction per account;
    /// reads and writes already never count an expired grant and add a due
    /// refill, so this only brings the entries (and `transactions`) up to
    /// date. Call it until `accounts < limit`.
    pub fn expire_grants(&self, limit: u32) -> Result<ExpirySweep> {
        self.track((|| {
            if !(1..=MAX_EXPIRY_SWEEP).contains(&limit) {
                return Err(Error::invalid(format!("limit must be in 1..={MAX_EXPIRY_SWEEP}, got {limit}")));
            }
            let users = self.read(|tx| {
                let now = tx.now()?;
                let mut users = tx.users_with_due_grants(now, limit)?;
                users.extend(tx.users_with_due_refills(now, limit)?);
                users.sort();
                users.dedup();
                users.truncate(limit as usize);
                Ok(users)
            })?;
            let mut sweep = ExpirySweep::default();
            for user in &users {
                let done = self.write(|tx| {
                    let now = tx.now()?;
                    tx.ensure_account(user, now)?;
                    Ok(self.settle_account(tx, now, user, Scope::default())?.1)
                })?;
                sweep.accounts += u64::from(done.entries > 0 || done.refills > 0);
                sweep.entries += done.entries;
                sweep.credits = sweep.credits.checked_add(done.credits)?;
                sweep.refills += done.refills;
            }
            Ok(sweep)
        })())
    }
}
