//! The daily rollup (migration 013, docs/architecture.md): per closed UTC
//! day of `created_at`, kind, model and currency, the count and sums of the
//! entries, in `creditgate_daily_totals`; days before
//! `creditgate_rollup.through` are there. Readers roll new closed days up
//! lazily (`CreditManager::ensure_rolled_up`) and read the rolled days plus
//! the live tail from the entries ([`daily_totals`](Tx::daily_totals)).
//! Statements of `sql.rs` through the backend-neutral [`Tx::query_rows`]/
//! [`Tx::execute`], written once for both backends.

use super::{Param, Tx, rows};
use crate::error::{Error, Result};
use crate::store::sql::S;
use crate::types::{Timestamp, v7_floor};
use std::collections::BTreeMap;

use Param::{Int, OptUuid, Text};

pub(crate) use crate::types::DAY_MICROS;

/// How long after its end a UTC day counts as closed, so rolled up: longer
/// than any transaction of the library lives, so no entry of a closed day
/// can still commit. The rollup relies on it; a write that stayed open
/// longer than this (a host holding a transaction? the library never
/// hands one out) would be missing from the totals — `audit()` finds it.
pub(crate) const ROLLUP_GRACE_MICROS: i64 = 3_600_000_000;

/// How far an entry id's timestamp may be from its `created_at` for the id
/// range to find it: ids written before `EntryId::at` came from the writer's
/// wall clock, `created_at` from the ledger's (PostgreSQL's server clock).
/// The id range is widened by this much on both sides; `created_at`
/// decides. An hour of entries read more on each tail.
const ID_CLOCK_MARGIN_MICROS: i64 = 3_600_000_000;

/// The UTC midnight starting the day of `t` (µs); saturates at the start
/// of the i64 range.
pub(crate) fn floor_day(t: i64) -> i64 {
    t.saturating_sub(t.rem_euclid(DAY_MICROS))
}

/// A group of the rollup: (day, kind, model, currency), '' for none.
pub(crate) type DayKey = (i64, String, String, String);

/// A group's count and sums, in i128 (the tail and the rolled rows of a
/// range are added up without overflow; the store checks the i64 range
/// where it writes or hands them out).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DaySums {
    pub entries: i128,
    pub amount: i128,
    pub amount_minor: i128,
    pub input_tokens: i128,
    pub output_tokens: i128,
    pub cached_tokens: i128,
    pub cache_write_tokens: i128,
}

impl DaySums {
    /// Reads a row of `sql::day_groups`' shape (also `rolled_totals`').
    fn read(r: &dyn rows::Columns) -> Result<(DayKey, DaySums)> {
        let joined = |i: usize| -> Result<i128> { Ok((i128::from(r.int(i)?) << 32) + i128::from(r.int(i + 1)?)) };
        let key = (r.int(0)?, r.text(1)?, r.text(2)?, r.text(3)?);
        let sums = DaySums {
            entries: i128::from(r.int(4)?),
            amount: joined(5)?,
            amount_minor: joined(7)?,
            input_tokens: i128::from(r.int(9)?),
            output_tokens: i128::from(r.int(10)?),
            cached_tokens: i128::from(r.int(11)?),
            cache_write_tokens: i128::from(r.int(12)?),
        };
        Ok((key, sums))
    }

    pub(crate) fn add(&mut self, o: &DaySums) {
        self.entries += o.entries;
        self.amount += o.amount;
        self.amount_minor += o.amount_minor;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cached_tokens += o.cached_tokens;
        self.cache_write_tokens += o.cache_write_tokens;
    }

    /// The columns as stored: the amounts as 32-bit halves (hi × 2^32 + lo,
    /// lo in [0, 2^32), so gross flows past the i64 range are kept exactly),
    /// the count and the token sums as they are; a value past what the
    /// columns hold is refused.
    fn stored(&self, key: &DayKey) -> Result<[i64; 9]> {
        let halves = |v: i128| [v >> 32, v & 0xFFFF_FFFF];
        let [amount_hi, amount_lo] = halves(self.amount);
        let [minor_hi, minor_lo] = halves(self.amount_minor);
        let v = [
            self.entries,
            amount_hi,
            amount_lo,
            minor_hi,
            minor_lo,
            self.input_tokens,
            self.output_tokens,
            self.cached_tokens,
            self.cache_write_tokens,
        ];
        let mut out = [0i64; 9];
        for (o, v) in out.iter_mut().zip(v) {
            *o = i64::try_from(v).map_err(|_| out_of_range(key))?;
        }
        Ok(out)
    }

    /// For an audit finding: the count and the sums.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} entries, amount {} micros, amount_minor {}, tokens {}/{}/{}/{}",
            self.entries,
            self.amount,
            self.amount_minor,
            self.input_tokens,
            self.output_tokens,
            self.cached_tokens,
            self.cache_write_tokens
        )
    }
}

/// The refusal of a group whose count or token sums leave the 64-bit range.
pub(crate) fn out_of_range(key: &DayKey) -> Error {
    let (day, kind, model, currency) = key;
    Error::Internal(format!(
        "the daily totals of {} (kind {kind}, model {model:?}, currency {currency:?}) exceed the 64-bit range",
        Timestamp(*day).to_rfc3339()
    ))
}

/// Groups by (day, kind, model, currency), in that order.
pub(crate) type DayTotals = BTreeMap<DayKey, DaySums>;

fn merge(into: &mut DayTotals, key: DayKey, sums: DaySums) {
    into.entry(key).or_default().add(&sums);
}

impl dyn Tx + '_ {
    /// Days before this are rolled up (0: none yet).
    pub(crate) fn rollup_through(&mut self) -> Result<i64> {
        let through = self.first(&S.rollup_through, &[], |r| r.int(0))?;
        through.ok_or_else(|| Error::Internal("the rollup's state row (creditgate_rollup) is missing".into()))
    }

    /// The groups of the entries created in `[from, to)`: through the id
    /// range (`by_id`), else by a scan of every entry.
    pub(crate) fn day_sums(&mut self, from: i64, to: i64, by_id: bool) -> Result<DayTotals> {
        let mut out = DayTotals::new();
        let mut each = |r: &dyn rows::Columns| {
            let (key, sums) = DaySums::read(r)?;
            merge(&mut out, key, sums);
            Ok(())
        };
        if by_id {
            let lo = v7_floor(Timestamp(from.saturating_sub(ID_CLOCK_MARGIN_MICROS)));
            let hi = v7_floor(Timestamp(to.saturating_add(ID_CLOCK_MARGIN_MICROS)));
            self.query_rows(&S.day_sums, &[OptUuid(Some(lo)), OptUuid(Some(hi)), Int(from), Int(to)], &mut each)?;
        } else {
            self.query_rows(&S.day_sums_scan, &[Int(from), Int(to)], &mut each)?;
        }
        Ok(out)
    }

    /// The rolled-up groups of the days in `[from_day, to_day)` before `through`.
    pub(crate) fn rolled_totals(&mut self, from_day: i64, to_day: i64, through: i64) -> Result<DayTotals> {
        let mut out = DayTotals::new();
        self.query_rows(&S.rolled_totals, &[Int(from_day), Int(to_day), Int(through)], &mut |r| {
            let (key, sums) = DaySums::read(r)?;
            merge(&mut out, key, sums);
            Ok(())
        })?;
        Ok(out)
    }

    /// The groups of the days in `[from_day, to_day)` (midnights): the
    /// rolled days, and the days from `through` on from the entries.
    pub(crate) fn daily_totals(&mut self, from_day: i64, to_day: i64) -> Result<DayTotals> {
        let through = self.rollup_through()?;
        let mut totals = self.rolled_totals(from_day, to_day, through)?;
        let tail = from_day.max(through);
        if tail < to_day {
            for (key, sums) in self.day_sums(tail, to_day, true)? {
                merge(&mut totals, key, sums);
            }
        }
        Ok(totals)
    }

    /// Stores `rows`, the groups of the days in `[old, target)`, and moves
    /// `through` from `old` to `target`, under the state row's lock. False
    /// (nothing written) when `through` is no longer `old`: another roller
    /// was first.
    pub(crate) fn store_rollup(&mut self, old: i64, target: i64, rows: &DayTotals) -> Result<bool> {
        let locked = self.first(&S.lock_rollup, &[], |r| r.int(0))?;
        if locked != Some(old) {
            return Ok(false);
        }
        for (key, sums) in rows {
            let [n, amount_hi, amount_lo, minor_hi, minor_lo, input, output, cached, cache_write] = sums.stored(key)?;
            let (day, kind, model, currency) = key;
            let amounts = [Int(amount_hi), Int(amount_lo), Int(minor_hi), Int(minor_lo)];
            let p = [&[Int(*day), Text(kind), Text(model), Text(currency), Int(n)][..], &amounts[..]].concat();
            let tokens = [Int(input), Int(output), Int(cached), Int(cache_write)];
            self.execute(&S.insert_daily_total, &[&p[..], &tokens[..]].concat())?;
        }
        if self.execute(&S.advance_rollup, &[Int(old), Int(target)])? != 1 {
            return Err(Error::Internal("the rollup's state moved under its lock".into()));
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryId;

    /// The id range is a time range: for boundaries a millisecond apart (and
    /// day bounds), an id made at a time sorts between the floors of the
    /// millisecond it is in and the next, as bytes (PostgreSQL's UUID
    /// order) and as hyphenated lowercase text (SQLite's), and the two
    /// orders agree.
    #[test]
    fn entry_ids_sort_by_time_as_bytes_and_as_text() {
        let day = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
        let times = [
            0,
            1,
            999,
            1_000,
            1_001,
            day - 1_001,
            day - 1,
            day,
            day + 1,
            day + 999,
            day + 1_000,
            253_402_300_800_000_000,
        ];
        for &t in &times {
            for _ in 0..50 {
                let id = EntryId::at(Timestamp(t)).0;
                let (lo, hi) = (v7_floor(Timestamp(t)), v7_floor(Timestamp(t - t.rem_euclid(1_000) + 1_000)));
                assert!(lo <= id && id < hi, "{t}: {lo} <= {id} < {hi}");
                assert!(lo.as_bytes() <= id.as_bytes() && id.as_bytes() < hi.as_bytes());
                let (lo_s, id_s, hi_s) = (lo.hyphenated().to_string(), id.hyphenated().to_string(), hi.to_string());
                assert!(lo_s <= id_s && id_s < hi_s, "{lo_s} <= {id_s} < {hi_s}");
                assert_eq!(id.get_version_num(), 7);
            }
        }
        // Ids of later milliseconds sort later, as bytes and as text, at and
        // around a day's bound.
        let millis = [0, 1_000, day - 2_000, day - 1_000, day, day + 1_000, 253_402_300_800_000_000];
        let ids: Vec<uuid::Uuid> = millis.iter().map(|&t| EntryId::at(Timestamp(t)).0).collect();
        let (mut by_bytes, mut by_text) = (ids.clone(), ids.clone());
        by_bytes.sort_by_key(|u| *u.as_bytes());
        by_text.sort_by_key(|u| u.to_string());
        assert_eq!(by_bytes, ids, "byte order is time order");
        assert_eq!(by_text, ids, "text order is time order");
        assert_eq!(v7_floor(Timestamp(day)).to_string(), "019b76da-a800-7000-8000-000000000000");
        assert_eq!(v7_floor(Timestamp(-5)), v7_floor(Timestamp(0)));
    }

    #[test]
    fn days_floor_also_before_the_epoch() {
        assert_eq!(floor_day(0), 0);
        assert_eq!(floor_day(DAY_MICROS - 1), 0);
        assert_eq!(floor_day(DAY_MICROS), DAY_MICROS);
        assert_eq!(floor_day(-1), -DAY_MICROS);
    }
}
