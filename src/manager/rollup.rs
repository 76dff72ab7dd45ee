//! The daily totals and their rollup (`store/rollup.rs`): every reader of
//! the totals rolls the closed days up first ([`ensure_rolled_up`]), then
//! reads rolled days plus the live tail on one snapshot.
//!
//! [`ensure_rolled_up`]: CreditManager::ensure_rolled_up

use super::CreditManager;
use crate::error::Result;
use crate::store::{DayTotals, ROLLUP_GRACE_MICROS, floor_day};
use crate::totals::{DailyTotal, day_range};
use crate::types::{EntryKind, Timestamp};
use std::collections::BTreeMap;

impl CreditManager {
    /// The ledger's entries per UTC day of `created_at`, kind, model and
    /// currency, for the days `[since, until)` touches (each whole; today
    /// so far): counts and exact sums, ordered by day, kind, model,
    /// currency. `since < until`, at most
    /// [`MAX_TOTALS_DAYS`](crate::limits::MAX_TOTALS_DAYS) days, else
    /// `InvalidArgument`. Closed days come from the daily rollup (rolled up
    /// here first when due), the others from the entries.
    pub fn daily_totals(&self, since: Timestamp, until: Timestamp) -> Result<Vec<DailyTotal>> {
        self.track((|| {
            let (first, end) = day_range(since, until)?;
            self.ensure_rolled_up()?;
            DailyTotal::list(self.read(|tx| tx.daily_totals(first, end))?)
        })())
    }

    /// Rolls the closed days (those that ended [`ROLLUP_GRACE_MICROS`] ago)
    /// not yet rolled up into the daily totals; a read of the state when
    /// none is due. The entries are grouped on a read snapshot (a closed
    /// day's entries no longer change), then one write stores the groups and
    /// moves the state under its lock, unless another roller was first: on
    /// SQLite the writer lock is held for the inserts only, not for the
    /// scan (the first rollup of a big ledger reads every entry once).
    pub(super) fn ensure_rolled_up(&self) -> Result<()> {
        if self.inner.store.opened_from() > self.inner.store.latest_version() {
            // Writes are refused under a newer schema; the tail still counts.
            return Ok(());
        }
        let due = self.read(|tx| {
            let now = tx.now()?;
            let through = tx.rollup_through()?;
            let target = floor_day(now.0.saturating_sub(ROLLUP_GRACE_MICROS));
            if through >= target {
                return Ok(None);
            }
            let first = through == 0;
            if first {
                log::info!(target: "creditgate", "first daily rollup: reading every entry before {}", Timestamp(target).to_rfc3339());
            }
            Ok(Some((through, target, tx.day_sums(through, target, !first)?)))
        })?;
        let Some((through, target, groups)) = due else { return Ok(()) };
        let stored = self.write(|tx| tx.store_rollup(through, target, &groups))?;
        log::debug!(target: "creditgate", "daily rollup through {}: {} groups, stored: {stored}", Timestamp(target).to_rfc3339(), groups.len());
        Ok(())
    }
}

/// The report's money flows, from all-time daily totals: the one place
/// where the kinds of each figure are listed.
#[derive(Default)]
pub(super) struct Flows {
    /// Purchases.
    pub purchased: i128,
    /// Usage and deductions, positive.
    pub used: i128,
    /// Per currency (entries without one: USD): purchases + reinstatements
    /// − reversals, in minor units; a currency is listed once it has any.
    pub revenue_minor: BTreeMap<String, i128>,
    /// Allowance refills.
    pub allowance_issued: i128,
}

impl Flows {
    pub(super) fn of(totals: &DayTotals) -> Result<Flows> {
        let mut f = Flows::default();
        for ((_, kind, _, currency), s) in totals {
            let sign = match EntryKind::parse(kind)? {
                EntryKind::Purchase => {
                    f.purchased += s.amount;
                    1
                }
                EntryKind::Reinstatement => 1,
                EntryKind::Reversal => -1,
                EntryKind::Usage | EntryKind::Deduct => {
                    f.used -= s.amount;
                    continue;
                }
                EntryKind::Allowance => {
                    f.allowance_issued += s.amount;
                    continue;
                }
                _ => continue,
            };
            let currency = if currency.is_empty() { "USD" } else { currency };
            *f.revenue_minor.entry(currency.to_string()).or_insert(0) += sign * s.amount_minor;
        }
        Ok(f)
    }
}
