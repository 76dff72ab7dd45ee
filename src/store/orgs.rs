//! The storage of organisations (members, projects, budgets) and of
//! allowances: statements of `sql.rs` run through the backend-neutral
//! [`Tx::query_rows`]/[`Tx::execute`], so each is written once for both
//! backends.

use super::{BudgetRow, Param, Tx, rows};
use crate::error::Result;
use crate::money::Credits;
use crate::organisations::{Allowance, MemberUsage};
use crate::store::sql::{S, Sql};
use crate::types::{Entry, KeyId, Timestamp};

use Param::{Int, OptInt, OptText, OptUuid, Text};
use std::collections::BTreeMap;

/// An i128 total clamped to the i64 range.
fn clamp(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

impl dyn Tx + '_ {
    pub(super) fn all<T>(
        &mut self,
        sql: &Sql,
        p: &[Param],
        f: impl Fn(&dyn rows::Columns) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.query_rows(sql, p, &mut |r| {
            out.push(f(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    pub(super) fn first<T>(
        &mut self,
        sql: &Sql,
        p: &[Param],
        f: impl Fn(&dyn rows::Columns) -> Result<T>,
    ) -> Result<Option<T>> {
        Ok(self.all(sql, p, f)?.into_iter().next())
    }

    /// The first column of the first row, an integer (0 without a row).
    pub(super) fn int(&mut self, sql: &Sql, p: &[Param]) -> Result<i64> {
        Ok(self.first(sql, p, |r| r.int(0))?.unwrap_or(0))
    }

    /// The sum of the first column over every row, in i128 (SQLite's `SUM`
    /// fails on i64 overflow; the `sql.rs` rule for gross sums), clamped
    /// to the i64 range.
    pub(super) fn sum(&mut self, sql: &Sql, p: &[Param]) -> Result<Credits> {
        let mut total = 0i128;
        self.query_rows(sql, p, &mut |r| {
            total += i128::from(r.int(0)?);
            Ok(())
        })?;
        Ok(Credits::from_micros(clamp(total)))
    }

    pub(super) fn count(&mut self, sql: &Sql, p: &[Param]) -> Result<u32> {
        Ok(u32::try_from(self.int(sql, p)?).unwrap_or(u32::MAX))
    }

    pub(crate) fn member_org(&mut self, user: &str) -> Result<Option<String>> {
        Ok(self.membership(user)?.map(|(org, _)| org))
    }

    /// `user`'s organisation and when it joined.
    pub(crate) fn membership(&mut self, user: &str) -> Result<Option<(String, Timestamp)>> {
        self.first(&S.member_org, &[Text(user)], |r| Ok((r.text(0)?, Timestamp(r.int(1)?))))
    }

    pub(crate) fn member_count(&mut self, org: &str) -> Result<u32> {
        self.count(&S.member_count, &[Text(org)])
    }

    pub(crate) fn insert_member(&mut self, member: &str, org: &str, now: Timestamp) -> Result<()> {
        self.execute(&S.insert_member, &[Text(member), Text(org), Int(now.0)]).map(|_| ())
    }

    /// Removes the membership; false when `member` was not one of `org`'s.
    pub(crate) fn delete_member(&mut self, member: &str, org: &str) -> Result<bool> {
        Ok(self.execute(&S.delete_member, &[Text(member), Text(org)])? == 1)
    }

    /// Up to `limit` members of `org` as (user, joined at), by user.
    pub(crate) fn members(&mut self, org: &str, limit: u32) -> Result<Vec<(String, Timestamp)>> {
        self.all(&S.members, &[Text(org), Int(i64::from(limit))], |r| Ok((r.text(0)?, Timestamp(r.int(1)?))))
    }

    pub(crate) fn clear_key_projects(&mut self, user: &str) -> Result<()> {
        self.execute(&S.clear_key_projects, &[Text(user)]).map(|_| ())
    }

    pub(crate) fn set_key_project(&mut self, id: KeyId, project: Option<&str>) -> Result<()> {
        self.execute(&S.set_key_project, &[OptUuid(Some(id.0)), OptText(project)]).map(|_| ())
    }

    pub(crate) fn insert_project(&mut self, org: &str, name: &str, now: Timestamp) -> Result<()> {
        self.execute(&S.insert_project, &[Text(org), Text(name), Int(now.0)]).map(|_| ())
    }

    pub(crate) fn project_count(&mut self, org: &str) -> Result<u32> {
        self.count(&S.project_count, &[Text(org)])
    }

    /// `org`'s projects (only `name`, when given) as (name, created at, keys).
    pub(crate) fn projects(&mut self, org: &str, name: Option<&str>) -> Result<Vec<(String, Timestamp, u32)>> {
        self.all(&S.projects, &[Text(org), OptText(name)], |r| {
            Ok((r.text(0)?, Timestamp(r.int(1)?), u32::try_from(r.int(2)?).unwrap_or(u32::MAX)))
        })
    }

    /// `org`'s budget of `scope`/`name` and what it still allows at `now`.
    pub(crate) fn budgets(
        &mut self,
        org: &str,
        scope: &str,
        name: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<(BudgetRow, Credits)>> {
        self.all(&S.budgets, &[Text(org), Text(scope), OptText(name), Int(now.0)], |r| {
            Ok((rows::budget(r)?, Credits::from_micros(r.int(8)?)))
        })
    }

    /// The budgets a charge by `member` through a key of `project` counts against.
    pub(crate) fn charge_budgets(
        &mut self,
        org: &str,
        member: Option<&str>,
        project: Option<&str>,
    ) -> Result<Vec<BudgetRow>> {
        self.all(&S.charge_budgets, &[Text(org), OptText(member), OptText(project)], |r| rows::budget(r))
    }

    pub(crate) fn put_budget(&mut self, org: &str, b: &BudgetRow) -> Result<()> {
        let p = [
            Text(org),
            Text(&b.scope),
            Text(&b.name),
            Int(b.limit.micros()),
            Text(b.window.as_str()),
            OptInt(b.low_threshold.map(Credits::micros)),
            Int(b.window_start.0),
            Int(b.window_end.0),
            Int(b.spent.micros()),
        ];
        self.execute(&S.put_budget, &p).map(|_| ())
    }

    /// Replaces a budget's counter.
    pub(crate) fn set_budget_spend(&mut self, org: &str, b: &BudgetRow) -> Result<()> {
        let p = [
            Text(org),
            Text(&b.scope),
            Text(&b.name),
            Int(b.window_start.0),
            Int(b.window_end.0),
            Int(b.spent.micros()),
        ];
        self.execute(&S.set_budget_spend, &p).map(|_| ())
    }

    pub(crate) fn delete_budget(&mut self, org: &str, scope: &str, name: &str) -> Result<bool> {
        Ok(self.execute(&S.delete_budget, &[Text(org), Text(scope), Text(name)])? == 1)
    }

    /// Usage `org` was charged since `since` by the budget's member or keys.
    pub(crate) fn budget_usage_since(
        &mut self,
        org: &str,
        scope: &str,
        name: &str,
        since: Timestamp,
    ) -> Result<Credits> {
        let p = [Text(org), Text(scope), Text(name), Int(since.0)];
        Ok(Credits::from_micros(self.sum(&S.budget_usage_since, &p)?.micros().saturating_neg()))
    }

    pub(crate) fn member_entries(
        &mut self,
        org: &str,
        member: &str,
        before_seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Entry>> {
        let p = [Text(org), Text(member), Int(before_seq.unwrap_or(i64::MAX)), Int(i64::from(limit))];
        self.all(&S.member_entries, &p, |r| rows::entry(r))
    }

    /// Usage totals per member, by member (summed in i128).
    pub(crate) fn member_usage(&mut self, org: &str, since: Timestamp) -> Result<Vec<MemberUsage>> {
        let mut totals: BTreeMap<String, (u64, i128, i128)> = BTreeMap::new();
        self.query_rows(&S.member_usage, &[Text(org), Int(since.0)], &mut |r| {
            let t = totals.entry(r.text(0)?).or_default();
            t.0 += 1;
            t.1 += i128::from(r.int(1)?);
            t.2 -= i128::from(r.int(2)?);
            Ok(())
        })?;
        Ok(totals
            .into_iter()
            .map(|(member_id, (requests, tokens, credits))| MemberUsage {
                member_id,
                requests,
                tokens: u64::try_from(tokens.max(0)).unwrap_or(u64::MAX),
                credits: Credits::from_micros(clamp(credits)),
            })
            .collect())
    }

    /// Inserts an allowance (its `allowance_id` is ignored); returns the new id.
    pub(crate) fn insert_allowance(&mut self, a: &Allowance) -> Result<i64> {
        let p = [
            Text(&a.user_id),
            OptText(a.member_id.as_deref()),
            OptUuid(a.api_key_id.map(|k| k.0)),
            Int(a.amount.micros()),
            Text(a.period.as_str()),
            OptInt(a.rollover_cap.map(Credits::micros)),
            Int(a.next_refill_at.0),
            Int(a.created_at.0),
        ];
        self.int(&S.insert_allowance, &p)
    }

    /// An allowance not removed.
    pub(crate) fn allowance(&mut self, id: i64) -> Result<Option<Allowance>> {
        self.first(&S.allowance, &[Int(id)], |r| rows::allowance(r))
    }

    pub(crate) fn allowances(&mut self, user: &str) -> Result<Vec<Allowance>> {
        self.all(&S.allowances, &[Text(user)], |r| rows::allowance(r))
    }

    /// `user`'s allowances with a refill due at `now`.
    pub(crate) fn due_allowances(&mut self, user: &str, now: Timestamp) -> Result<Vec<Allowance>> {
        self.all(&S.due_allowances, &[Text(user), Int(now.0)], |r| rows::allowance(r))
    }

    pub(crate) fn allowance_count(&mut self, user: &str) -> Result<u32> {
        self.count(&S.allowance_count, &[Text(user)])
    }

    /// Moves the next refill from `from` to `to`; false when it was not `from`.
    pub(crate) fn advance_allowance(&mut self, id: i64, from: Timestamp, to: Timestamp) -> Result<bool> {
        Ok(self.execute(&S.advance_allowance, &[Int(id), Int(from.0), Int(to.0)])? == 1)
    }

    pub(crate) fn remove_allowance(&mut self, id: i64, now: Timestamp) -> Result<bool> {
        Ok(self.execute(&S.remove_allowance, &[Int(id), Int(now.0)])? == 1)
    }

    /// Ends `user`'s allowances for `member` (or its keys) or for `key`,
    /// and frees their grants for the whole account; returns how many
    /// allowances ended.
    pub(crate) fn end_scoped(
        &mut self,
        user: &str,
        (member, key): (Option<&str>, Option<KeyId>),
        now: Timestamp,
    ) -> Result<u64> {
        let p = [Text(user), OptText(member), OptUuid(key.map(|k| k.0)), Int(now.0)];
        let ended = self.execute(&S.end_scoped_allowances, &p)?;
        self.execute(&S.unscope_grants, &p[..3])?;
        if ended > 0 {
            self.sync_refill_at(user)?;
        }
        Ok(ended)
    }

    /// What the allowance's grants still hold at `now`.
    pub(crate) fn allowance_live(&mut self, id: i64, now: Timestamp) -> Result<Credits> {
        self.sum(&S.allowance_live, &[Int(id), Int(now.0)])
    }

    /// Sets the account's `refill_at` from its allowances.
    pub(crate) fn sync_refill_at(&mut self, user: &str) -> Result<()> {
        self.execute(&S.sync_refill_at, &[Text(user)])?;
        self.refill_at_changed(user);
        Ok(())
    }

    pub(crate) fn users_with_due_refills(&mut self, now: Timestamp, limit: u32) -> Result<Vec<String>> {
        self.all(&S.users_with_due_refills, &[Int(now.0), Int(i64::from(limit))], |r| r.text(0))
    }

    /// (expired, still held) credits of every allowance (what they issued
    /// is in the daily totals).
    pub(crate) fn allowance_figures(&mut self) -> Result<(Credits, Credits)> {
        Ok((self.sum(&S.allowance_expired, &[])?, self.sum(&S.allowance_held, &[])?))
    }
}
