//! The daily totals and their rollup (`store/rollup.rs`): every reader of
//! the totals rolls the closed days up first ([`ensure_rolled_up`]), then
//! reads rolled days plus the live tail on one snapshot.
//!
//! [`ensure_rolled_up`]: CreditManager::ensure_rolled_up

use super::CreditManager;
use crate::browse::DayFlow;
use crate::error::{Error, Result};
use crate::money::Credits;
use crate::store::{DaySums, DayTotals, ROLLUP_GRACE_MICROS, floor_day};
use crate::totals::{DailyTotal, day_range};
use crate::types::{EntryKind, Report, Timestamp};
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
            self.ensure_rolled_up();
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
    ///
    /// A read must not fail because it could not write: when rolling up
    /// fails (a read-only role or file, a hot standby, a lock timeout) the
    /// failure is logged and the caller reads the days from `through` on
    /// from the entries, which is slower but the same totals.
    pub(super) fn ensure_rolled_up(&self) {
        if let Err(e) = self.roll_up() {
            log::warn!(target: "creditgate", "daily rollup skipped, the totals are read from the entries: {e}");
        }
    }

    fn roll_up(&self) -> Result<()> {
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
            // The first rollup starts before the epoch: an entry of a clock set
            // before 1970 is rolled up too (the tail reads from `through` on).
            let from = if first { i64::MIN } else { through };
            Ok(Some((through, target, tx.day_sums(from, target, !first)?)))
        })?;
        let Some((through, target, groups)) = due else { return Ok(()) };
        let stored = self.write(|tx| tx.store_rollup(through, target, &groups))?;
        log::debug!(target: "creditgate", "daily rollup through {}: {} groups, stored: {stored}", Timestamp(target).to_rfc3339(), groups.len());
        Ok(())
    }
}

/// The report's money flows from daily totals (all time for `report()`,
/// one day for `daily_flows`): the one place where the kinds of each figure
/// are listed (`Report::PURCHASED_KINDS`, `Report::USED_KINDS`, revenue's
/// signs below).
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
    /// Entries of every kind.
    pub entries: i128,
}

impl Flows {
    fn add(&mut self, kind: &str, currency: &str, s: &DaySums) -> Result<()> {
        self.entries += s.entries;
        // A kind of a newer release (on a ledger it migrated): counted as an
        // entry, in no figure, so an older process's reads keep working.
        let Ok(kind) = EntryKind::parse(kind) else { return Ok(()) };
        if Report::PURCHASED_KINDS.contains(&kind) {
            self.purchased += s.amount;
        }
        if Report::USED_KINDS.contains(&kind) {
            self.used -= s.amount;
        }
        if kind == EntryKind::Allowance {
            self.allowance_issued += s.amount;
        }
        let sign = match kind {
            EntryKind::Purchase | EntryKind::Reinstatement => 1,
            EntryKind::Reversal => -1,
            _ => return Ok(()),
        };
        let currency = if currency.is_empty() { "USD" } else { currency };
        *self.revenue_minor.entry(currency.to_string()).or_insert(0) += sign * s.amount_minor;
        Ok(())
    }

    /// The flows of every group of `totals` together.
    pub(super) fn of(totals: &DayTotals) -> Result<Flows> {
        let mut f = Flows::default();
        for ((_, kind, _, currency), s) in totals {
            f.add(kind, currency, s)?;
        }
        Ok(f)
    }

    /// The flows of each day of `totals`, oldest first (the map is ordered
    /// by day first); days without entries are absent.
    pub(super) fn per_day(totals: &DayTotals) -> Result<Vec<DayFlow>> {
        let mut days: Vec<(i64, Flows)> = Vec::new();
        for ((day, kind, _, currency), s) in totals {
            match days.last_mut() {
                Some((d, f)) if d == day => f.add(kind, currency, s)?,
                _ => {
                    let mut f = Flows::default();
                    f.add(kind, currency, s)?;
                    days.push((*day, f));
                }
            }
        }
        days.into_iter()
            .map(|(day, f)| {
                Ok(DayFlow {
                    day: Timestamp(day),
                    purchased: Credits::from_total(f.purchased, "a day's credits purchased")?,
                    used: Credits::from_total(f.used, "a day's credits used")?,
                    entries: u64::try_from(f.entries).map_err(|_| Error::Internal("a day's entry count".into()))?,
                })
            })
            .collect()
    }
}
