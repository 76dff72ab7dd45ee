//! The storage of price versions, and the ledger reads of analytics (usage
//! summaries, statements, the audit's recomputation of usage charges):
//! statements of `sql.rs` run through the backend-neutral
//! [`Tx::query_rows`]/[`Tx::execute`], so each is written once for both
//! backends.

use super::{Param, Tx, rows};
use crate::analytics::{SUMMARY_KIND, StatementLine, UsageGroup, UsageQuery, UsageRow, check_row_count};
use crate::error::{Error, Result};
use crate::limits::{MAX_PRICE_VERSIONS, MAX_SUMMARY_ROWS};
use crate::money::Credits;
use crate::pricing::{PriceVersion, Tokens};
use crate::store::sql::{S, Sql, USAGE_SUMS, split_sum, utc_day};
use crate::types::{EntryKind, KeyId, Timestamp};

use Param::{Int, OptInt, OptText, OptUuid, Text};

/// An i64 sum from its [`split_sum`] halves at columns `i` and `i + 1`.
pub(super) fn joined(r: &dyn rows::Columns, i: usize) -> Result<i128> {
    Ok((i128::from(r.int(i)?) << 32) + i128::from(r.int(i + 1)?))
}

/// Counts and tokens from [`USAGE_SUMS`] at column `i`.
fn sums(r: &dyn rows::Columns, i: usize) -> Result<(u64, Tokens)> {
    let t = Tokens { input: r.int(i + 1)?, output: r.int(i + 2)?, cached: r.int(i + 3)?, cache_write: r.int(i + 4)? };
    Ok((u64::try_from(r.int(i)?).unwrap_or(0), t))
}

/// The column a group reads (UTC days floored, also before the epoch).
fn group_expr(g: UsageGroup) -> String {
    match g {
        UsageGroup::Day => utc_day("e.created_at"),
        UsageGroup::Model => "e.model".into(),
        UsageGroup::Key => "e.api_key_id".into(),
        UsageGroup::Member => "e.member_id".into(),
        UsageGroup::Project => "e.project".into(),
    }
}

/// The summary statement of `q`: only the filters given, so the planner
/// can use `creditgate_entries_time` for an account's range.
fn summary_sql(q: &UsageQuery) -> (Sql, Vec<Param<'_>>) {
    let groups: Vec<String> = q.group_by.iter().map(|&g| group_expr(g)).collect();
    let filters: Vec<(&str, Param)> = [
        q.user_id.as_deref().map(|u| ("user_id =", Text(u))),
        q.api_key_id.map(|k| ("api_key_id =", OptUuid(Some(k.0)))),
        q.model.as_deref().map(|m| ("model =", Text(m))),
        q.since.map(|t| ("created_at >=", Int(t.0))),
        q.until.map(|t| ("created_at <", Int(t.0))),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut sql_where = format!("e.kind = '{}'", SUMMARY_KIND.as_str());
    for (i, (condition, _)) in filters.iter().enumerate() {
        sql_where += &format!(" AND e.{condition} ${}", i + 1);
    }
    let ps = filters.into_iter().map(|(_, p)| p).collect();
    let select: String = groups.iter().map(|g| format!("{g}, ")).collect();
    let mut sql =
        format!("SELECT {select}{USAGE_SUMS}, {} FROM creditgate_entries e WHERE {sql_where}", split_sum("-e.amount"));
    if !groups.is_empty() {
        // NULL groups (calls without a model, keys outside a project) last
        // on both backends.
        let order: Vec<String> = groups.iter().map(|g| format!("({g}) IS NULL, {g}")).collect();
        sql += &format!(" GROUP BY {} ORDER BY {}", groups.join(", "), order.join(", "));
    }
    sql += &format!(" LIMIT {}", MAX_SUMMARY_ROWS + 1);
    // Hundreds of texts are possible: none is kept in the statement caches.
    (Sql::once(sql), ps)
}

impl dyn Tx + '_ {
    /// Adds or replaces a price version; at most [`MAX_PRICE_VERSIONS`] per model.
    pub(crate) fn set_price(&mut self, v: &PriceVersion) -> Result<()> {
        let p = v.price;
        let rate = |c: Option<Credits>| OptInt(c.map(Credits::micros));
        self.execute(
            &S.set_price,
            &[
                Text(&v.model),
                Int(v.effective_at.0),
                Int(p.input_per_1k.micros()),
                Int(p.output_per_1k.micros()),
                rate(p.cached_input_per_1k),
                rate(p.cache_write_per_1k),
                Int(p.request_fee.micros()),
                Int(v.set_at.0),
            ],
        )?;
        if self.count(&S.price_versions, &[Text(&v.model)])? > MAX_PRICE_VERSIONS {
            return Err(Error::LimitReached {
                limit: "max_price_versions",
                detail: format!("a model keeps at most {MAX_PRICE_VERSIONS} price versions"),
            });
        }
        Ok(())
    }

    pub(crate) fn price_history(&mut self, model: Option<&str>) -> Result<Vec<PriceVersion>> {
        self.all(&S.price_history, &[OptText(model)], |r| rows::price_version(r))
    }

    pub(crate) fn usage_summary(&mut self, q: &UsageQuery) -> Result<Vec<UsageRow>> {
        let (sql, params) = summary_sql(q);
        let n = q.group_by.len();
        let out = self.all(&sql, &params, |r| {
            let mut row = UsageRow::empty();
            for (i, g) in q.group_by.iter().enumerate() {
                match g {
                    UsageGroup::Day => row.day = Some(Timestamp(r.int(i)?)),
                    UsageGroup::Model => row.model = r.opt_text(i)?,
                    UsageGroup::Key => row.api_key_id = r.opt_uuid(i)?.map(KeyId),
                    UsageGroup::Member => row.member_id = r.opt_text(i)?,
                    UsageGroup::Project => row.project = r.opt_text(i)?,
                }
            }
            let (requests, t) = sums(r, n)?;
            row.requests = requests;
            (row.input_tokens, row.output_tokens) = (t.input, t.output);
            (row.cached_input_tokens, row.cache_write_tokens) = (t.cached, t.cache_write);
            row.credits = Credits::from_total(joined(r, n + 5)?, "a summary's credits")?;
            Ok(row)
        })?;
        check_row_count(out.len())?;
        Ok(out)
    }

    /// Account `user`'s balance before `since` and before `until`.
    pub(crate) fn statement_edges(
        &mut self,
        user: &str,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<(Credits, Credits)> {
        let edges = self.first(&S.statement_edges, &[Text(user), Int(since.0), Int(until.0)], |r| {
            let balance = i128::from(r.int(0)?);
            Ok((balance - joined(r, 1)?, balance - joined(r, 3)?))
        })?;
        let (opening, closing) = edges.unwrap_or((0, 0));
        Ok((Credits::from_total(opening, "the opening balance")?, Credits::from_total(closing, "the closing balance")?))
    }

    pub(crate) fn statement_lines(
        &mut self,
        user: &str,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<StatementLine>> {
        let lines = self.all(&S.statement_lines, &[Text(user), Int(since.0), Int(until.0)], |r| {
            let kind = EntryKind::parse(&r.text(0)?).map_err(|e| rows::corrupt("kind", e))?;
            let price = match r.opt_int(2)? {
                Some(_) => Some(rows::price(r, 2)?),
                None => None,
            };
            let (entries, t) = sums(r, 7)?;
            Ok(StatementLine {
                kind,
                model: r.opt_text(1)?,
                price,
                entries,
                input_tokens: t.input,
                output_tokens: t.output,
                cached_input_tokens: t.cached,
                cache_write_tokens: t.cache_write,
                amount: Credits::from_total(joined(r, 12)?, "a statement line")?,
            })
        })?;
        check_row_count(lines.len())?;
        Ok(lines)
    }

    /// Every usage entry with recorded rates (of `user`, else of every
    /// account) as (user, seq, amount, tokens, price), for the audit.
    pub(crate) fn scan_priced_usage(
        &mut self,
        user: Option<&str>,
        f: &mut dyn FnMut(&str, i64, Credits, Tokens, crate::pricing::ModelPrice),
    ) -> Result<()> {
        self.query_rows(&S.priced_usage, &[OptText(user)], &mut |r| {
            let t = Tokens {
                input: r.opt_int(3)?.unwrap_or(0),
                output: r.opt_int(4)?.unwrap_or(0),
                cached: r.opt_int(5)?.unwrap_or(0),
                cache_write: r.opt_int(6)?.unwrap_or(0),
            };
            f(&r.text(0)?, r.int(1)?, Credits::from_micros(r.int(2)?), t, rows::price(r, 7)?);
            Ok(())
        })
    }
}
