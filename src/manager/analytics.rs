//! Usage summaries and statements: reads of one snapshot, grouped by the
//! database (`store/pricing.rs`).

use super::CreditManager;
use crate::analytics::{SUMMARY_KIND, Statement, UsageGroup, UsageQuery, UsageRow, check_range, check_row_count};
use crate::error::{Error, Result};
use crate::money::Credits;
use crate::store::{DaySums, DayTotals, floor_day};
use crate::types::{EntryKind, Timestamp};
use crate::validate;
use std::collections::BTreeMap;

/// The order of a statement's lines: money in, then out, then corrections.
const LINE_ORDER: [EntryKind; 10] = [
    EntryKind::Purchase,
    EntryKind::Grant,
    EntryKind::Allowance,
    EntryKind::Usage,
    EntryKind::Deduct,
    EntryKind::Refund,
    EntryKind::Expiry,
    EntryKind::Reversal,
    EntryKind::Reinstatement,
    EntryKind::Adjustment,
];

impl CreditManager {
    /// Requests, tokens and credits of the usage `q` selects, grouped by
    /// `q.group_by` (rows ordered by the groups). At most
    /// [`MAX_SUMMARY_ROWS`](crate::limits::MAX_SUMMARY_ROWS) rows, else
    /// `LimitReached`.
    ///
    /// A ledger-wide query (no account or key filter) grouped by day and/or
    /// model over whole UTC days is answered from the daily totals (the
    /// rollup, `rollup.rs`) instead of the entries: the same rows, in the
    /// same order, without reading every entry of the range.
    pub fn usage_summary(&self, q: &UsageQuery) -> Result<Vec<UsageRow>> {
        self.track((|| {
            q.validate()?;
            if let Some((first, end)) = rollup_range(q) {
                self.ensure_rolled_up();
                return summary_of_totals(q, &self.read(|tx| tx.daily_totals(first, end))?);
            }
            self.read(|tx| tx.usage_summary(q))
        })())
    }

    /// `user_id`'s movements over `[since, until)` with its opening and
    /// closing balances, from one snapshot: opening + lines = closing.
    pub fn statement(&self, user_id: &str, since: Timestamp, until: Timestamp) -> Result<Statement> {
        self.track((|| {
            let user = validate::text("user_id", user_id)?;
            check_range(Some(since), Some(until))?;
            self.read(|tx| {
                let (opening_balance, closing_balance) = tx.statement_edges(user, since, until)?;
                let mut lines = tx.statement_lines(user, since, until)?;
                lines.sort_by_key(|l| {
                    let rates = l.price.map(|p| {
                        let opt = |c: Option<crate::money::Credits>| c.map(|c| c.micros());
                        let (i, o, f) = (p.input_per_1k.micros(), p.output_per_1k.micros(), p.request_fee.micros());
                        (i, o, opt(p.cached_input_per_1k), opt(p.cache_write_per_1k), f)
                    });
                    (LINE_ORDER.iter().position(|k| *k == l.kind), l.model.clone(), rates)
                });
                let s = Statement { user_id: user.to_string(), since, until, opening_balance, closing_balance, lines };
                // The lines and the edges are separate sums of one snapshot.
                if s.opening_balance.checked_add(s.movements()?)? != s.closing_balance {
                    return Err(Error::Internal(format!("the statement of {user:?} does not reconcile")));
                }
                Ok(s)
            })
        })())
    }
}

/// The day range of `q` when the daily totals answer it: no account, key,
/// member or project in the filters or groups, and whole UTC days (or no
/// bound).
fn rollup_range(q: &UsageQuery) -> Option<(i64, i64)> {
    let whole_day = |t: Option<Timestamp>| t.is_none_or(|t| floor_day(t.0) == t.0);
    let groups = q.group_by.iter().all(|g| matches!(g, UsageGroup::Day | UsageGroup::Model));
    if q.user_id.is_some() || q.api_key_id.is_some() || !groups || !whole_day(q.since) || !whole_day(q.until) {
        return None;
    }
    Some((q.since.map_or(i64::MIN, |t| t.0), q.until.map_or(i64::MAX, |t| t.0)))
}

/// One summary group's sort key per group of `q.group_by`, in the order the
/// statement orders them: a NULL (no model) after every value.
type GroupKey = Vec<(bool, i64, String)>;

/// The usage rows of `q` from daily totals: the totals of [`SUMMARY_KIND`]
/// (and `q.model`), grouped and ordered as `store/pricing.rs` groups them.
fn summary_of_totals(q: &UsageQuery, totals: &DayTotals) -> Result<Vec<UsageRow>> {
    let mut groups: BTreeMap<GroupKey, DaySums> = BTreeMap::new();
    for ((day, kind, model, _), sums) in totals {
        if kind != SUMMARY_KIND.as_str() || q.model.as_deref().is_some_and(|m| m != model) {
            continue;
        }
        let key = q
            .group_by
            .iter()
            .map(|g| match g {
                UsageGroup::Day => (false, *day, String::new()),
                _ => (model.is_empty(), 0, model.clone()),
            })
            .collect();
        groups.entry(key).or_default().add(sums);
    }
    if q.group_by.is_empty() && groups.is_empty() {
        groups.insert(Vec::new(), DaySums::default()); // totals: one row, also of nothing
    }
    check_row_count(groups.len())?;
    groups.into_iter().map(|(key, s)| usage_row(q, &key, &s)).collect()
}

fn usage_row(q: &UsageQuery, key: &GroupKey, s: &DaySums) -> Result<UsageRow> {
    let count = |n: i128, what: &str| i64::try_from(n).map_err(|_| Error::Internal(format!("a summary's {what}")));
    let mut row = UsageRow {
        requests: u64::try_from(s.entries).map_err(|_| Error::Internal("a summary's requests".into()))?,
        input_tokens: count(s.input_tokens, "input tokens")?,
        output_tokens: count(s.output_tokens, "output tokens")?,
        cached_input_tokens: count(s.cached_tokens, "cached tokens")?,
        cache_write_tokens: count(s.cache_write_tokens, "cache write tokens")?,
        credits: Credits::from_total(-s.amount, "a summary's credits")?,
        ..UsageRow::empty()
    };
    for (g, (null, day, model)) in q.group_by.iter().zip(key) {
        match g {
            UsageGroup::Day => row.day = Some(Timestamp(*day)),
            _ => row.model = (!null).then(|| model.clone()),
        }
    }
    Ok(row)
}
