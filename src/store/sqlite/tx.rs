//! [`Tx`] on SQLite: the shared statements of `sql.rs` in their SQLite
//! text, bound with SQLite's types (UUIDs as text), read through
//! `rows.rs`; and the few statements that stay SQLite's own (see the table
//! in `sql.rs`).

use crate::config::TestClock;
use crate::error::{Error, Result};
use crate::events::{Event, NewEvent, unknown_cursor};
use crate::money::Credits;
use crate::store::rows::{self, Columns, corrupt};
use crate::store::sql::{S, Sql, kinds_sql};
use crate::store::{
    AccountRow, Applied, HashKind, HoldRow, HoldStatus, KeyRow, KeyStanding, LedgerFigures, Param, RateCheck, Scope,
    Tx, exhausted_limit,
};
use crate::types::{Entry, EntryId, Grant, GrantId, HoldId, KeyId, ModelPrice, Report, SpendWindow, Timestamp};
use rusqlite::{Connection, Params, Row, params};
use std::sync::LazyLock;

pub(super) struct SqliteTx<'c> {
    pub(super) c: &'c Connection,
    pub(super) clock: &'c TestClock,
    /// (user, refill_at) as `ensure_account` returned it; None after the
    /// allowances changed (`refill_at_changed`).
    refill: Option<(String, Option<i64>)>,
}

impl<'c> SqliteTx<'c> {
    pub(super) fn new(c: &'c Connection, clock: &'c TestClock) -> SqliteTx<'c> {
        SqliteTx { c, clock, refill: None }
    }
}

/// `ensure_account` on SQLite: creates the row or touches it, and returns
/// its `refill_at` in the same statement (the charge path's next question;
/// the account's page is written by the charge anyway).
const ENSURE_ACCOUNT: &str = "INSERT INTO creditgate_accounts (user_id, created_at) VALUES (?1, ?2) \
     ON CONFLICT (user_id) DO UPDATE SET refill_at = refill_at RETURNING refill_at";

/// The kinds `lifetime` reads: the report's lists (`Report::PURCHASED_KINDS`, `USED_KINDS`).
static LIFETIME: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT kind, amount FROM creditgate_entries WHERE user_id = ?1 AND kind IN ({}, {})",
        kinds_sql(&Report::PURCHASED_KINDS),
        kinds_sql(&Report::USED_KINDS)
    )
});

impl Columns for Row<'_> {
    fn int(&self, i: usize) -> Result<i64> {
        Ok(self.get(i)?)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        Ok(self.get(i)?)
    }
    fn int32(&self, i: usize) -> Result<i32> {
        Ok(self.get(i)?)
    }
    fn text(&self, i: usize) -> Result<String> {
        Ok(self.get(i)?)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        Ok(self.get(i)?)
    }
    fn flag(&self, i: usize) -> Result<bool> {
        Ok(self.get(i)?)
    }
    fn uuid(&self, i: usize) -> Result<uuid::Uuid> {
        let s = self.get_ref(i)?.as_str().map_err(rusqlite::Error::from)?;
        uuid::Uuid::try_parse(s).map_err(|e| corrupt("uuid", e))
    }
    fn opt_uuid(&self, i: usize) -> Result<Option<uuid::Uuid>> {
        let s = self.get_ref(i)?.as_str_or_null().map_err(rusqlite::Error::from)?;
        s.map(|s| uuid::Uuid::try_parse(s).map_err(|e| corrupt("uuid", e))).transpose()
    }
}

/// The verify statement with this process's clock bound as `$3`.
static VERIFY: LazyLock<Sql> = LazyLock::new(|| Sql::new(crate::store::sql::verify("$3::bigint")));

impl SqliteTx<'_> {
    /// The first row of `sql`, mapped by `f`.
    fn one<T>(&self, sql: &Sql, p: impl Params, f: impl FnOnce(&Row) -> Result<T>) -> Result<Option<T>> {
        let mut stmt = self.c.prepare_cached(sql.sqlite())?;
        let mut rows = stmt.query(p)?;
        rows.next()?.map(f).transpose()
    }

    /// Every row of `sql` (SQLite text), mapped by `f`.
    fn all<T>(&self, sql: &str, p: impl Params, mut f: impl FnMut(&Row) -> Result<T>) -> Result<Vec<T>> {
        let mut stmt = self.c.prepare_cached(sql)?;
        let mut rows = stmt.query(p)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(f(r)?);
        }
        Ok(out)
    }

    fn exec(&self, sql: &Sql, p: impl Params) -> Result<usize> {
        Ok(self.c.prepare_cached(sql.sqlite())?.execute(p)?)
    }

    fn int(&self, sql: &str, p: impl Params) -> Result<i64> {
        Ok(self.c.prepare_cached(sql)?.query_row(p, |r| r.get(0))?)
    }

    /// Hands each row of `sql` (SQLite text) to `f` without holding them all
    /// (the sums of gross flows are taken in i128 this way: SQLite's SUM
    /// fails on i64 overflow).
    fn rows_each(&self, sql: &str, p: impl Params, mut f: impl FnMut(&Row) -> Result<()>) -> Result<()> {
        let mut stmt = self.c.prepare_cached(sql)?;
        let mut rows = stmt.query(p)?;
        while let Some(r) = rows.next()? {
            f(r)?;
        }
        Ok(())
    }

    /// The first instant after `now` at which time alone changes a key's
    /// verify answer: the key expires, its cap's or a budget's window ends,
    /// an allowance refill falls due, or a hold or a grant of its paying
    /// account (or a hold of the key) expires. For the verify cache.
    pub(super) fn fresh_until(&self, standing: &KeyStanding, now: Timestamp) -> Result<Timestamp> {
        let k = &standing.key;
        let next_expiry = self.int(
            "SELECT MIN(\
             COALESCE((SELECT MIN(expires_at) FROM creditgate_holds \
               WHERE user_id = ?1 AND status = 'active' AND expires_at > ?3), ?4), \
             COALESCE((SELECT MIN(expires_at) FROM creditgate_holds \
               WHERE api_key_id = ?2 AND status = 'active' AND expires_at > ?3), ?4), \
             COALESCE((SELECT MIN(expires_at) FROM creditgate_grants \
               WHERE user_id = ?1 AND remaining > 0 AND expires_at > ?3), ?4), \
             COALESCE((SELECT MIN(window_end) FROM creditgate_budgets WHERE org_id = ?1 AND window_end > ?3 \
               AND ((scope = 'member' AND name = ?5) OR (scope = 'project' AND name = ?6))), ?4))",
            params![k.paying(), k.id.to_string(), now.0, i64::MAX, k.user_id, k.project],
        )?;
        let window_end = k.spend_limit.and(k.spend.map(|(end, _)| end));
        Ok([k.expires_at, window_end, standing.refill_at]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .fold(Timestamp(next_expiry), Ord::min))
    }

    /// The verify lookup at `now`.
    pub(super) fn standing(&self, hash: &str, only: Option<HashKind>, now: Timestamp) -> Result<Option<KeyStanding>> {
        self.one(&VERIFY, params![hash, only.map(HashKind::as_str), now.0], |r| rows::key_standing(r))
    }
}

/// A neutral parameter as SQLite binds it (UUIDs as text).
fn value(p: &Param) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match *p {
        Param::Int(v) => Value::Integer(v),
        Param::OptInt(v) => v.map_or(Value::Null, Value::Integer),
        Param::Text(v) => Value::Text(v.to_string()),
        Param::OptText(v) => v.map_or(Value::Null, |v| Value::Text(v.to_string())),
        Param::OptUuid(v) => v.map_or(Value::Null, |v| Value::Text(v.to_string())),
    }
}

fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// An i128 sum as Credits, saturating at i64::MAX.
fn saturated(v: i128) -> Credits {
    Credits::from_micros(i64::try_from(v).unwrap_or(i64::MAX))
}

impl Tx for SqliteTx<'_> {
    fn now(&mut self) -> Result<Timestamp> {
        Ok(self.clock.now())
    }

    fn ensure_account(&mut self, user: &str, now: Timestamp) -> Result<()> {
        let refill_at = self.c.prepare_cached(ENSURE_ACCOUNT)?.query_row(params![user, now.0], |r| r.get(0))?;
        self.refill = Some((user.to_string(), refill_at));
        Ok(())
    }

    fn refill_at(&mut self, user: &str) -> Result<Option<Timestamp>> {
        if let Some((u, at)) = &self.refill
            && u == user
        {
            return Ok(at.map(Timestamp));
        }
        Ok(self.account(user)?.and_then(|a| a.refill_at))
    }

    fn refill_at_changed(&mut self, _user: &str) {
        self.refill = None;
    }

    fn lock_account(&mut self, _user: &str) -> Result<()> {
        // The write transaction (BEGIN IMMEDIATE) already holds the database.
        Ok(())
    }

    fn account(&mut self, user: &str) -> Result<Option<AccountRow>> {
        self.one(&S.account, [user], |r| rows::account(r))
    }

    fn held(&mut self, user: &str, now: Timestamp) -> Result<Credits> {
        Ok(Credits::from_micros(self.int(S.held.sqlite(), params![user, now.0])?))
    }

    fn available(&mut self, user: &str, now: Timestamp) -> Result<Credits> {
        Ok(Credits::from_micros(self.int(S.available.sqlite(), params![user, now.0])?))
    }

    fn apply(&mut self, user: &str, amount: Credits, strict: bool, now: Timestamp) -> Result<Option<Applied>> {
        // Bounds keep SQLite from turning an overflowing sum into a float.
        let a = amount.micros();
        let (lo, hi) = if a >= 0 { (i64::MIN, i64::MAX - a) } else { (i64::MIN - a, i64::MAX) };
        // The write transaction holds the database: nothing changes the row
        // between this read and the update.
        let Some((balance_before, seq_before)) =
            self.one(&S.balance_and_seq, params![user], |r| Ok((Credits::from_micros(r.int(0)?), r.int(1)?)))?
        else {
            return Ok(None);
        };
        self.one(&S.apply, params![user, a, lo, hi, strict, now.0], |r| {
            Ok(Applied {
                balance_before,
                balance_after: Credits::from_micros(r.int(0)?),
                seq_before,
                seq: r.int(1)?,
                topup_threshold: r.opt_int(2)?.map(Credits::from_micros),
            })
        })
    }

    fn insert_entry(&mut self, e: &Entry, global_key: Option<&str>) -> Result<()> {
        let metadata = e.metadata.as_ref().map(|m| serde_json::Value::Object(m.clone()).to_string());
        self.exec(
            &S.insert_entry,
            params![
                e.id.to_string(),
                e.seq,
                e.user_id,
                e.kind.as_str(),
                e.amount.micros(),
                e.balance_after.micros(),
                e.idempotency_key,
                global_key,
                e.reference,
                e.api_key_id.map(|k| k.to_string()),
                e.input_tokens,
                e.output_tokens,
                e.model,
                e.amount_minor,
                e.currency,
                metadata,
                e.created_at.0,
                e.member_id,
                e.project,
                e.cached_input_tokens,
                e.cache_write_tokens,
                e.price.map(|p| p.input_per_1k.micros()),
                e.price.map(|p| p.output_per_1k.micros()),
                e.price.and_then(|p| p.cached_input_per_1k.map(Credits::micros)),
                e.price.and_then(|p| p.cache_write_per_1k.map(Credits::micros)),
                e.price.map(|p| p.request_fee.micros()),
            ],
        )?;
        Ok(())
    }

    fn entry_by_key(&mut self, user: &str, key: &str) -> Result<Option<Entry>> {
        self.one(&S.entry_by_key, params![user, key], |r| rows::entry(r))
    }

    fn entry_by_global_key(&mut self, key: &str) -> Result<Option<Entry>> {
        self.one(&S.entry_by_global_key, [key], |r| rows::entry(r))
    }

    fn entry_by_id(&mut self, id: EntryId) -> Result<Option<Entry>> {
        self.one(&S.entry_by_id, [id.to_string()], |r| rows::entry(r))
    }

    fn reversed_total(&mut self, payment_id: &str) -> Result<(i64, Credits)> {
        let row = self.one(&S.reversed_total, [payment_id], |r| Ok((r.int(0)?, Credits::from_micros(r.int(1)?))))?;
        row.ok_or_else(|| Error::Internal("an aggregate returned no row".into()))
    }

    fn entries(&mut self, user: &str, before_seq: Option<i64>, limit: u32) -> Result<Vec<Entry>> {
        let p = params![user, before_seq.unwrap_or(i64::MAX), limit];
        self.all(S.entries.sqlite(), p, |r| rows::entry(r))
    }

    fn lifetime(&mut self, user: &str) -> Result<(Credits, Credits)> {
        let (mut purchased, mut used) = (0i128, 0i128);
        self.rows_each(&LIFETIME, [user], |r| {
            let amount = i128::from(r.int(1)?);
            if Report::kind_in(&Report::PURCHASED_KINDS, r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?) {
                purchased += amount;
            } else {
                used -= amount;
            }
            Ok(())
        })?;
        Ok((saturated(purchased), saturated(used)))
    }

    fn key_by_hash(&mut self, hash: &str, only: Option<HashKind>) -> Result<Option<KeyRow>> {
        match only {
            Some(kind) => self.one(&S.key_by_hash_kind, params![hash, kind.as_str()], |r| rows::key(r)),
            None => self.one(&S.key_by_hash, [hash], |r| rows::key(r)),
        }
    }

    fn key_with_available(&mut self, hash: &str, only: Option<HashKind>) -> Result<Option<KeyStanding>> {
        let now = self.clock.now();
        self.standing(hash, only, now)
    }

    fn set_key_expiry(&mut self, id: KeyId, expires_at: Option<Timestamp>) -> Result<()> {
        self.exec(&S.set_key_expiry, params![id.to_string(), expires_at.map(|t| t.0)])?;
        Ok(())
    }

    fn set_key_disabled(&mut self, id: KeyId, at: Option<Timestamp>) -> Result<bool> {
        let n = match at {
            Some(t) => self.exec(&S.disable_key, params![id.to_string(), t.0])?,
            None => self.exec(&S.enable_key, [id.to_string()])?,
        };
        Ok(n == 1)
    }

    fn set_key_rotated(&mut self, id: KeyId, to: KeyId, ends_at: Timestamp) -> Result<()> {
        self.exec(&S.set_key_rotated, params![id.to_string(), to.to_string(), ends_at.0])?;
        Ok(())
    }

    fn set_key_limit(&mut self, id: KeyId, limit: Option<(Credits, SpendWindow)>) -> Result<()> {
        let p = params![id.to_string(), limit.map(|l| l.0.micros()), limit.map(|l| l.1.as_str())];
        self.exec(&S.set_key_limit, p)?;
        Ok(())
    }

    fn put_key_spend(&mut self, id: KeyId, start: Timestamp, end: Timestamp, spent: Credits) -> Result<()> {
        self.exec(&S.put_key_spend, params![id.to_string(), start.0, end.0, spent.micros()])?;
        Ok(())
    }

    fn add_key_spend(&mut self, id: KeyId, start: Timestamp, end: Timestamp, amount: Credits) -> Result<()> {
        self.exec(&S.add_key_spend, params![id.to_string(), start.0, end.0, amount.micros()])?;
        Ok(())
    }

    fn key_usage_since(&mut self, user: &str, id: KeyId, since: Timestamp) -> Result<Credits> {
        let mut used = 0i128;
        self.rows_each(
            "SELECT amount FROM creditgate_entries \
             WHERE user_id = ?1 AND api_key_id = ?2 AND kind = 'usage' AND created_at >= ?3",
            params![user, id.to_string(), since.0],
            |r| {
                used -= i128::from(r.int(0)?);
                Ok(())
            },
        )?;
        Ok(saturated(used.max(0)))
    }

    fn key_by_id(&mut self, id: KeyId) -> Result<Option<KeyRow>> {
        self.one(&S.key_by_id, [id.to_string()], |r| rows::key(r))
    }

    fn active_keys(&mut self, user: &str, now: Timestamp) -> Result<u32> {
        Ok(count(self.int(S.active_keys.sqlite(), params![user, now.0])?))
    }

    fn insert_key(&mut self, k: &KeyRow, hash: &str, kind: HashKind) -> Result<()> {
        self.exec(
            &S.insert_key,
            params![
                k.id.to_string(),
                k.user_id,
                k.name,
                k.prefix,
                hash,
                kind.as_str(),
                k.legacy,
                k.created_at.0,
                k.expires_at.map(|t| t.0),
                k.spend_limit.map(Credits::micros),
                k.spend_window.map(SpendWindow::as_str),
            ],
        )?;
        Ok(())
    }

    fn set_first_key_issued(&mut self, user: &str) -> Result<()> {
        self.exec(&S.set_first_key_issued, [user])?;
        Ok(())
    }

    fn set_min_balance(&mut self, user: &str, floor: Credits) -> Result<()> {
        self.exec(&S.set_min_balance, params![user, floor.micros()])?;
        Ok(())
    }

    fn revoke_key(&mut self, id: KeyId, now: Timestamp) -> Result<bool> {
        Ok(self.exec(&S.revoke_key, params![id.to_string(), now.0])? == 1)
    }

    fn keys(&mut self, user: &str, limit: u32) -> Result<Vec<KeyRow>> {
        self.all(S.keys.sqlite(), params![user, limit], |r| rows::key(r))
    }

    fn touch_keys(&mut self, used: &[(KeyId, Timestamp)]) -> Result<()> {
        let mut stmt = self.c.prepare_cached(
            "UPDATE creditgate_api_keys SET last_used_at = ?2 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
        )?;
        for (id, at) in used {
            stmt.execute(params![id.to_string(), at.0])?;
        }
        Ok(())
    }

    fn tally_key_attempt(&mut self, user: &str, day: i64, success: bool) -> Result<()> {
        self.exec(&S.tally_key_attempt, params![user, day, i64::from(success)])?;
        Ok(())
    }

    fn expire_holds(&mut self, user: &str, now: Timestamp) -> Result<u64> {
        Ok(self.exec(&S.expire_holds, params![user, now.0])? as u64)
    }

    fn active_holds(&mut self, user: &str, now: Timestamp) -> Result<u32> {
        Ok(count(self.int(S.active_holds.sqlite(), params![user, now.0])?))
    }

    fn insert_hold_if_available(&mut self, h: &HoldRow, now: Timestamp) -> Result<bool> {
        let n = self.exec(
            &S.insert_hold_if_available,
            params![
                h.user_id,
                now.0,
                h.id.to_string(),
                h.api_key_id.to_string(),
                h.amount.micros(),
                h.model,
                h.request_id,
                h.expires_at.0,
                h.price.map(|p| p.input_per_1k.micros()),
                h.price.map(|p| p.output_per_1k.micros()),
                h.price.and_then(|p| p.cached_input_per_1k.map(Credits::micros)),
                h.price.and_then(|p| p.cache_write_per_1k.map(Credits::micros)),
                h.price.map(|p| p.request_fee.micros()),
            ],
        )?;
        Ok(n == 1)
    }

    fn hold(&mut self, id: HoldId) -> Result<Option<HoldRow>> {
        self.one(&S.hold, [id.to_string()], |r| rows::hold(r))
    }

    fn hold_by_request(&mut self, user: &str, request_id: &str) -> Result<Option<HoldRow>> {
        self.one(&S.hold_by_request, params![user, request_id], |r| rows::hold(r))
    }

    fn set_hold_status(
        &mut self,
        id: HoldId,
        from: HoldStatus,
        to: HoldStatus,
        entry: Option<EntryId>,
    ) -> Result<bool> {
        let p = params![id.to_string(), from.as_str(), to.as_str(), entry.map(|e| e.to_string())];
        Ok(self.exec(&S.set_hold_status, p)? == 1)
    }

    fn price(&mut self, model: &str, at: Timestamp) -> Result<Option<ModelPrice>> {
        self.one(&S.price, params![model, at.0], |r| rows::price(r, 0))
    }

    fn scan_accounts(&mut self, f: &mut dyn FnMut(&str, i64, i64)) -> Result<()> {
        self.rows_each(S.scan_accounts.sqlite(), [], |r| {
            f(r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?, r.int(1)?, r.int(2)?);
            Ok(())
        })
    }

    fn scan_entries(&mut self, f: &mut dyn FnMut(&str, i64, i64, i64)) -> Result<()> {
        self.rows_each(S.scan_entries.sqlite(), [], |r| {
            f(r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?, r.int(1)?, r.int(2)?, r.int(3)?);
            Ok(())
        })
    }

    fn figures(&mut self) -> Result<LedgerFigures> {
        let q = |sql: &Sql| -> Result<u64> { Ok(self.int(sql.sqlite(), [])?.max(0) as u64) };
        Ok(LedgerFigures {
            users: q(&S.users)?,
            paying_users: q(&S.paying_users)?,
            users_attempted_key: q(&S.users_attempted_key)?,
            paying_users_attempted_key: q(&S.paying_users_attempted_key)?,
            key_generation_attempts: q(&S.key_generation_attempts)?,
            key_generation_successes: q(&S.key_generation_successes)?,
        })
    }

    fn payment_problems(&mut self) -> Result<Vec<(String, String, String)>> {
        self.all(S.payment_problems.sqlite(), [], |r| Ok((r.text(0)?, r.text(1)?, r.text(2)?)))
    }

    fn set_rate_limit(&mut self, key: KeyId, rpm: Option<i64>, tpm: Option<i64>) -> Result<()> {
        self.exec(&S.set_rate_limit, params![key.to_string(), rpm, tpm])?;
        Ok(())
    }

    fn take_requests(&mut self, key: KeyId, window: i64, n: i64) -> Result<RateCheck> {
        let id = key.to_string();
        if self.exec(&S.take_requests, params![id, window, n])? == 1 {
            return Ok(RateCheck::Allowed);
        }
        let row = self.one(&S.rate_requests, params![id, window], |r| Ok((r.int(0)?, r.opt_int(1)?)))?;
        Ok(row.map_or(RateCheck::Unlimited, |(requests, rpm)| RateCheck::Limited(exhausted_limit(requests, rpm))))
    }

    fn add_rate_tokens(&mut self, key: KeyId, window: i64, tokens: i64) -> Result<()> {
        self.exec(&S.add_rate_tokens, params![key.to_string(), window, tokens])?;
        Ok(())
    }

    fn has_rate_limits(&mut self) -> Result<bool> {
        Ok(self.int(S.has_rate_limits.sqlite(), [])? != 0)
    }

    fn insert_grant(&mut self, g: &Grant) -> Result<GrantId> {
        let p = params![
            g.user_id,
            g.source_entry_id.map(|e| e.to_string()),
            g.category.as_str(),
            g.priority,
            g.amount.micros(),
            g.remaining.micros(),
            g.expires_at.map(|t| t.0),
            g.created_at.0,
            g.payment_id,
            g.member_id,
            g.api_key_id.map(|k| k.to_string()),
            g.allowance_id,
        ];
        let id = self.one(&S.insert_grant, p, |r| r.int(0))?;
        Ok(GrantId(id.ok_or_else(|| Error::Internal("INSERT … RETURNING returned no row".into()))?))
    }

    fn live_grants(
        &mut self,
        user: &str,
        now: Timestamp,
        include_due: bool,
        limit: u32,
        scope: Scope,
    ) -> Result<Vec<Grant>> {
        // The limit is in the text, not a parameter: SQLite's planner weighs
        // a bound LIMIT, so rebinding one re-parses the statement on every
        // call (a fifth of a charge's CPU in the profile).
        let sql = format!("{} LIMIT {limit}", S.live_grants.sqlite());
        let key = scope.key.map(|k| k.to_string());
        self.all(&sql, params![user, now.0, include_due, scope.member, key], |r| rows::grant(r))
    }

    fn standing_by_id(&mut self, id: KeyId, now: Timestamp) -> Result<Option<KeyStanding>> {
        self.one(&S.standing_by_id, params![id.to_string(), now.0], |r| rows::key_standing(r))
    }

    fn query_rows(&mut self, sql: &Sql, params: &[Param], f: &mut dyn FnMut(&dyn Columns) -> Result<()>) -> Result<()> {
        let values: Vec<rusqlite::types::Value> = params.iter().map(value).collect();
        if sql.cached {
            return self.rows_each(sql.sqlite(), rusqlite::params_from_iter(values), |r| f(r));
        }
        let mut stmt = self.c.prepare(sql.sqlite())?;
        let mut rows = stmt.query(rusqlite::params_from_iter(values))?;
        while let Some(r) = rows.next()? {
            f(r)?;
        }
        Ok(())
    }

    fn execute(&mut self, sql: &Sql, params: &[Param]) -> Result<u64> {
        let values: Vec<rusqlite::types::Value> = params.iter().map(value).collect();
        Ok(self.exec(sql, rusqlite::params_from_iter(values))? as u64)
    }

    fn take_from_grant(&mut self, id: GrantId, amount: Credits) -> Result<bool> {
        Ok(self.exec(&S.take_from_grant, params![id.0, amount.micros()])? == 1)
    }

    fn grant_by_payment(&mut self, payment_id: &str) -> Result<Option<Grant>> {
        self.one(&S.grant_by_payment, [payment_id], |r| rows::grant(r))
    }

    fn due_grants(&mut self, user: &str, now: Timestamp) -> Result<Credits> {
        Ok(Credits::from_micros(self.int(S.due_grants.sqlite(), params![user, now.0])?))
    }

    fn due_grants_total(&mut self, now: Timestamp) -> Result<Credits> {
        // Summed in i128: the total over all accounts may exceed i64.
        let mut total = 0i128;
        self.rows_each(
            "SELECT remaining FROM creditgate_grants WHERE remaining > 0 AND expires_at <= ?1",
            [now.0],
            |r| {
                total += i128::from(r.int(0)?);
                Ok(())
            },
        )?;
        i64::try_from(total)
            .map(Credits::from_micros)
            .map_err(|_| Error::Internal("expired grants exceed the 64-bit range".into()))
    }

    fn users_with_due_grants(&mut self, now: Timestamp, limit: u32) -> Result<Vec<String>> {
        self.all(S.users_with_due_grants.sqlite(), params![now.0, limit], |r| r.text(0))
    }

    fn scan_grants(&mut self, f: &mut dyn FnMut(&str, i128, i64)) -> Result<()> {
        let mut current: Option<(String, i128, i64)> = None;
        self.rows_each(
            "SELECT user_id, remaining, amount FROM creditgate_grants WHERE remaining <> 0 OR amount < 0 \
             ORDER BY user_id",
            [],
            |r| {
                let user = r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
                let (remaining, amount) = (r.int(1)?, r.int(2)?);
                if current.as_ref().is_some_and(|c| c.0 != user)
                    && let Some((u, sum, bad)) = current.take()
                {
                    f(&u, sum, bad);
                }
                let c = current.get_or_insert_with(|| (user.to_string(), 0, 0));
                c.1 += i128::from(remaining);
                if remaining < 0 || remaining > amount {
                    c.2 += 1;
                }
                Ok(())
            },
        )?;
        if let Some((u, sum, bad)) = current {
            f(&u, sum, bad);
        }
        Ok(())
    }

    fn insert_event(&mut self, e: &NewEvent) -> Result<i64> {
        let p = params![
            e.kind.as_str(),
            e.user_id,
            e.api_key_id.map(|k| k.to_string()),
            e.data.to_string(),
            e.created_at.0
        ];
        let id = self.one(&S.insert_event, p, |r| r.int(0))?;
        id.ok_or_else(|| Error::Internal("INSERT … RETURNING returned no row".into()))
    }

    fn events(&mut self, after: i64, limit: u32) -> Result<Vec<Event>> {
        // One writer at a time: ids are in commit order.
        if after != 0 && self.all("SELECT 1 FROM creditgate_events WHERE id = ?1", [after], |_| Ok(()))?.is_empty() {
            return Err(unknown_cursor(after));
        }
        self.all(
            "SELECT id, kind, user_id, api_key_id, data, created_at FROM creditgate_events \
             WHERE id > ?1 ORDER BY id LIMIT ?2",
            params![after, limit],
            |r| {
                let key = r.opt_uuid(3)?.map(KeyId);
                Event::from_stored(r.int(0)?, &r.text(1)?, r.text(2)?, key, &r.text(4)?, r.int(5)?)
            },
        )
    }

    fn events_tail(&mut self) -> Result<i64> {
        // Ids are in commit order (see `events`).
        let max = self.all("SELECT COALESCE(MAX(id), 0) FROM creditgate_events", [], |r| r.int(0))?;
        Ok(max.first().copied().unwrap_or(0))
    }

    fn has_purchase(&mut self, user: &str) -> Result<bool> {
        Ok(self.one(&S.has_purchase, [user], |_| Ok(()))?.is_some())
    }

    fn host_rows(&mut self, sql: &str, columns: usize) -> Result<Vec<Vec<Option<String>>>> {
        // Not cached: a one-off query on the host's own table.
        let mut stmt = self.c.prepare(sql)?;
        let rows = stmt.query_map([], |r| (0..columns).map(|i| r.get::<_, Option<String>>(i)).collect())?;
        Ok(rows.collect::<rusqlite::Result<Vec<Vec<Option<String>>>>>()?)
    }
}
