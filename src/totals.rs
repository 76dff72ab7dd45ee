//! The daily totals of the ledger (`CreditManager::daily_totals`): per UTC
//! day of `created_at`, kind, model and currency, the count and sums of the
//! entries, read from the daily rollup and the live tail (`store/rollup.rs`).

use crate::error::{Error, Result};
use crate::limits::MAX_TOTALS_DAYS;
use crate::money::Credits;
use crate::store::{DAY_MICROS, DayTotals, floor_day};
use crate::types::{EntryKind, Timestamp};

/// One day's entries of one kind, model and currency: how many and their
/// sums, exact. `amount` is signed as the entries are (usage negative).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DailyTotal {
    /// The UTC midnight starting the day.
    pub day: Timestamp,
    pub kind: EntryKind,
    pub model: Option<String>,
    pub currency: Option<String>,
    pub entries: u64,
    pub amount: Credits,
    /// Payments' minor units (0 for entries without).
    pub amount_minor: i64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
}

/// The UTC days `[since, until)` touches, as midnights `[first, end)`: since
/// < until, at most [`MAX_TOTALS_DAYS`] days.
pub(crate) fn day_range(since: Timestamp, until: Timestamp) -> Result<(i64, i64)> {
    if since >= until {
        return Err(Error::invalid(format!(
            "daily_totals: since {} must be before until {}",
            since.to_rfc3339(),
            until.to_rfc3339()
        )));
    }
    let first = floor_day(since.0);
    // The day holding until's last microsecond ends the range.
    let end = floor_day(until.0 - 1).saturating_add(DAY_MICROS);
    let days = (i128::from(end) - i128::from(first)) / i128::from(DAY_MICROS);
    if days > i128::from(MAX_TOTALS_DAYS) {
        return Err(Error::invalid(format!(
            "daily_totals covers at most {MAX_TOTALS_DAYS} days (MAX_TOTALS_DAYS), the range touches {days}"
        )));
    }
    Ok((first, end))
}

impl DailyTotal {
    /// The rows of `totals`, in their order (day, kind, model, currency).
    pub(crate) fn list(totals: DayTotals) -> Result<Vec<DailyTotal>> {
        totals
            .into_iter()
            .map(|(key, s)| {
                let range = || crate::store::out_of_range(&key);
                let int = |v: i128| i64::try_from(v).map_err(|_| range());
                let count = |v: i128| u64::try_from(v).map_err(|_| range());
                let text = |t: &str| (!t.is_empty()).then(|| t.to_string());
                Ok(DailyTotal {
                    day: Timestamp(key.0),
                    kind: EntryKind::parse(&key.1)?,
                    model: text(&key.2),
                    currency: text(&key.3),
                    entries: count(s.entries)?,
                    amount: Credits::from_micros(int(s.amount)?),
                    amount_minor: int(s.amount_minor)?,
                    input_tokens: count(s.input_tokens)?,
                    output_tokens: count(s.output_tokens)?,
                    cached_input_tokens: count(s.cached_tokens)?,
                    cache_write_tokens: count(s.cache_write_tokens)?,
                })
            })
            .collect()
    }
}
