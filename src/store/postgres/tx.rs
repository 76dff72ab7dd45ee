//! [`Tx`] on PostgreSQL: the shared statements of `sql.rs` in their
//! PostgreSQL text, each prepared once per connection, bound with
//! PostgreSQL's types, read through `rows.rs`; and the few statements that
//! stay PostgreSQL's own (see the table in `sql.rs`).

use super::columns::col;
use super::exec::bound;
use super::{NOW_SQL, PgConn, PostgresStore};
use crate::error::{Error, Result};
use crate::events::{Event, NewEvent, unknown_cursor};
use crate::money::Credits;
use crate::store::rows::{self, Columns, corrupt};
use crate::store::sql::{self as sql, APPLY_RETURNING_BEFORE, GRANT_COLS, S, Sql, kinds_sql};
use crate::store::{
    AccountRow, Applied, HashKind, HoldRow, HoldStatus, KeyRow, KeyStanding, LedgerFigures, Param, RateCheck, Scope,
    Tx, exhausted_limit,
};
use crate::types::{Entry, EntryId, Grant, GrantId, HoldId, KeyId, ModelPrice, Report, SpendWindow, Timestamp};
use postgres::error::SqlState;
use postgres::types::ToSql;
use std::sync::LazyLock;

pub(super) struct Failure {
    pub(super) code: Option<SqlState>,
    pub(super) message: String,
}

pub(super) struct PgTx<'c> {
    pub(super) c: &'c mut PgConn,
    pub(super) store: &'c PostgresStore,
    /// The server's clock when the transaction began; None outside a
    /// transaction (`peek`), where it is read when asked for.
    pub(super) now: Option<Timestamp>,
    pub(super) write: bool,
    /// The first statement that failed: the transaction is then aborted.
    pub(super) failed: Option<Failure>,
    /// Accounts whose row this transaction holds locked.
    pub(super) locked: Vec<Locked>,
    /// What `live_grants(user, now, true, PREFETCHED_GRANTS, scope)`
    /// returns, read ahead with the account's lock; dropped by the next
    /// statement.
    pub(super) grants: Option<Prefetched>,
}

/// An account row this transaction holds locked, and its `refill_at` as
/// the lock read it (None: not known; the allowances changed since).
pub(super) struct Locked {
    pub(super) user: String,
    pub(super) refill_at: Option<Option<i64>>,
}

pub(super) struct Prefetched {
    pub(super) user: String,
    pub(super) now: Timestamp,
    pub(super) member: Option<String>,
    pub(super) key: Option<KeyId>,
    pub(super) grants: Vec<Grant>,
}

impl<'c> PgTx<'c> {
    pub(super) fn new(c: &'c mut PgConn, store: &'c PostgresStore, now: Option<Timestamp>, write: bool) -> PgTx<'c> {
        PgTx { c, store, now, write, failed: None, locked: Vec::new(), grants: None }
    }
}

pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

const LOCK_ACCOUNT: &str = "SELECT refill_at FROM creditgate_accounts WHERE user_id = $1 FOR NO KEY UPDATE";

/// How many grants a write's idempotency look-up reads ahead: the batch a
/// charge's `live_grants` asks for next (the manager's `GRANT_FETCH`; any
/// other limit is read by its own statement).
const PREFETCHED_GRANTS: u32 = 8;

/// The verify statement; outside a transaction (`peek`) the statement's own
/// start is the clock. `$4` is the test clock's offset.
static VERIFY: LazyLock<Sql> = LazyLock::new(|| {
    Sql::new(sql::verify(
        "(COALESCE($3::bigint, (extract(epoch FROM statement_timestamp()) * 1000000)::bigint) + $4::bigint)",
    ))
});

/// An account's lifetime purchased and used: the report's kind lists
/// (`Report::PURCHASED_KINDS`, `USED_KINDS`), clamped to BIGINT.
static LIFETIME: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT LEAST(COALESCE(SUM(CASE WHEN kind IN ({}) THEN amount ELSE 0 END), 0), 9223372036854775807)::bigint, \
         LEAST(COALESCE(SUM(CASE WHEN kind IN ({}) THEN -amount ELSE 0 END), 0), 9223372036854775807)::bigint \
         FROM creditgate_entries WHERE user_id = $1",
        kinds_sql(&Report::PURCHASED_KINDS),
        kinds_sql(&Report::USED_KINDS)
    )
});

static LIVE_GRANTS: LazyLock<String> = LazyLock::new(|| format!("{} LIMIT $6::bigint", S.live_grants.pg()));

/// The lock of `lock_and_entry_by_key` and its look-up in one round trip.
/// The look-up reads the statement's snapshot, taken before any wait for
/// the lock; every entry comes with its account's `last_seq` + 1 (in
/// `apply`, under the lock), so when the locked row's `last_seq` is the
/// snapshot's, no entry of the account committed in between and "no such
/// entry" stands. Else (or without the row, or when an entry was found: it
/// returns only the id) it is read again, after the lock. The
/// same holds for the account's grants (they move only with an entry): the
/// first batch of `live_grants` at the transaction's clock, in the order of
/// the charge's scope ($4, $5), which a charge asks for next, comes along,
/// and so does the locked row's `refill_at`.
static LOCK_AND_ENTRY_BY_KEY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH l AS (SELECT last_seq, refill_at FROM creditgate_accounts WHERE user_id = $1 FOR NO KEY UPDATE) \
         SELECT e.id, (SELECT last_seq FROM l), \
         (SELECT last_seq FROM creditgate_accounts WHERE user_id = $1), \
         (SELECT json_agg(g.j ORDER BY g.n)::text FROM (SELECT json_build_array({GRANT_COLS}) AS j, \
          row_number() OVER (ORDER BY {order}) AS n FROM creditgate_grants \
          WHERE user_id = $1 AND remaining > 0 ORDER BY {order} LIMIT {PREFETCHED_GRANTS}) g), \
         (SELECT refill_at FROM l) \
         FROM (SELECT 1) AS one LEFT JOIN creditgate_entries e \
         ON e.user_id = $1 AND e.idempotency_key = $2",
        order = sql::grant_order("$3::bigint", "$4::text", "$5::uuid"),
    )
});

fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Tx for PgTx<'_> {
    fn now(&mut self) -> Result<Timestamp> {
        let offset = self.store.clock.offset_micros();
        if let Some(now) = self.now {
            return Ok(Timestamp(now.0.saturating_add(offset)));
        }
        let now = Timestamp(self.int(NOW_SQL, &[])?);
        self.now = Some(now);
        Ok(Timestamp(now.0.saturating_add(offset)))
    }

    fn ensure_account(&mut self, user: &str, now: Timestamp) -> Result<()> {
        if self.is_locked(user) {
            return Ok(());
        }
        if let Some(row) = self.opt(LOCK_ACCOUNT, &[&user])? {
            return self.note_lock(user, &row);
        }
        if self.run(&S.ensure_account, &[&user, &now.0])? == 0 {
            // Another host created it since our first look: lock it now.
            let row = self.one(LOCK_ACCOUNT, &[&user])?;
            return self.note_lock(user, &row);
        }
        self.locked.push(Locked { user: user.to_string(), refill_at: Some(None) });
        Ok(())
    }

    fn lock_account(&mut self, user: &str) -> Result<()> {
        if self.write
            && !self.is_locked(user)
            && let Some(row) = self.opt(LOCK_ACCOUNT, &[&user])?
        {
            self.note_lock(user, &row)?;
        }
        Ok(())
    }

    fn lock_and_entry_by_key(&mut self, user: &str, key: &str, scope: Scope) -> Result<Option<Entry>> {
        if self.write && !self.is_locked(user) {
            let now = self.now()?;
            let member = scope.member;
            let row = self.one(&LOCK_AND_ENTRY_BY_KEY, &[&user, &key, &now.0, &member, &scope.key.map(|k| k.0)])?;
            if let Some(found) = self.prefetched(user, now, scope, &row)? {
                return Ok(found);
            }
        }
        self.entry_by_key(user, key)
    }

    fn refill_at(&mut self, user: &str) -> Result<Option<Timestamp>> {
        if let Some(Some(at)) = self.locked.iter().find(|l| l.user == user).map(|l| l.refill_at) {
            return Ok(at.map(Timestamp));
        }
        Ok(self.account(user)?.and_then(|a| a.refill_at))
    }

    fn refill_at_changed(&mut self, user: &str) {
        for l in self.locked.iter_mut().filter(|l| l.user == user) {
            l.refill_at = None;
        }
    }

    fn standing_by_id(&mut self, id: KeyId, now: Timestamp) -> Result<Option<KeyStanding>> {
        self.first(&S.standing_by_id, &[&id.0, &now.0], rows::key_standing)
    }

    fn query_rows(&mut self, sql: &Sql, params: &[Param], f: &mut dyn FnMut(&dyn Columns) -> Result<()>) -> Result<()> {
        let values = bound(params);
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v).collect();
        let rows = if sql.cached { self.query(sql.pg(), &refs)? } else { self.query_once(sql.pg(), &refs)? };
        for row in rows {
            f(&row)?;
        }
        Ok(())
    }

    fn execute(&mut self, sql: &Sql, params: &[Param]) -> Result<u64> {
        let values = bound(params);
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v).collect();
        self.exec(sql.pg(), &refs)
    }

    fn account(&mut self, user: &str) -> Result<Option<AccountRow>> {
        self.first(&S.account, &[&user], rows::account)
    }

    fn held(&mut self, user: &str, now: Timestamp) -> Result<Credits> {
        Ok(Credits::from_micros(self.int(S.held.pg(), &[&user, &now.0])?))
    }

    fn available(&mut self, user: &str, now: Timestamp) -> Result<Credits> {
        Ok(Credits::from_micros(self.int(S.available.pg(), &[&user, &now.0])?))
    }

    fn apply(&mut self, user: &str, amount: Credits, strict: bool, now: Timestamp) -> Result<Option<Applied>> {
        // The bounds keep `balance + amount` inside BIGINT; the strict check
        // is computed in numeric so it cannot overflow before them.
        let a = amount.micros();
        let (lo, hi) = if a >= 0 { (i64::MIN, i64::MAX - a) } else { (i64::MIN - a, i64::MAX) };
        let row = self.opt(&APPLY_RETURNING_BEFORE, &[&user, &a, &lo, &hi, &strict, &now.0])?;
        row.map(|r| {
            Ok(Applied {
                balance_after: Credits::from_micros(r.int(0)?),
                seq: r.int(1)?,
                balance_before: Credits::from_micros(r.int(2)?),
                seq_before: r.int(3)?,
                topup_threshold: r.opt_int(4)?.map(Credits::from_micros),
            })
        })
        .transpose()
    }

    fn insert_entry(&mut self, e: &Entry, global_key: Option<&str>) -> Result<()> {
        let metadata = e.metadata.as_ref().map(|m| serde_json::Value::Object(m.clone()).to_string());
        self.run(
            &S.insert_entry,
            &[
                &e.id.0,
                &e.seq,
                &e.user_id,
                &e.kind.as_str(),
                &e.amount.micros(),
                &e.balance_after.micros(),
                &e.idempotency_key,
                &global_key,
                &e.reference,
                &e.api_key_id.map(|k| k.0),
                &e.input_tokens,
                &e.output_tokens,
                &e.model,
                &e.amount_minor,
                &e.currency,
                &metadata,
                &e.created_at.0,
                &e.member_id,
                &e.project,
                &e.cached_input_tokens,
                &e.cache_write_tokens,
                &e.price.map(|p| p.input_per_1k.micros()),
                &e.price.map(|p| p.output_per_1k.micros()),
                &e.price.and_then(|p| p.cached_input_per_1k.map(Credits::micros)),
                &e.price.and_then(|p| p.cache_write_per_1k.map(Credits::micros)),
                &e.price.map(|p| p.request_fee.micros()),
            ],
        )?;
        Ok(())
    }

    fn entry_by_key(&mut self, user: &str, key: &str) -> Result<Option<Entry>> {
        self.first(&S.entry_by_key, &[&user, &key], rows::entry)
    }

    fn entry_by_global_key(&mut self, key: &str) -> Result<Option<Entry>> {
        self.first(&S.entry_by_global_key, &[&key], rows::entry)
    }

    fn entry_by_id(&mut self, id: EntryId) -> Result<Option<Entry>> {
        self.first(&S.entry_by_id, &[&id.0], rows::entry)
    }

    fn reversed_total(&mut self, payment_id: &str) -> Result<(i64, Credits)> {
        let r = self.one(S.reversed_total.pg(), &[&payment_id])?;
        Ok((r.int(0)?, Credits::from_micros(r.int(1)?)))
    }

    fn entries(&mut self, user: &str, before_seq: Option<i64>, limit: u32) -> Result<Vec<Entry>> {
        let p: Params = &[&user, &before_seq.unwrap_or(i64::MAX), &i64::from(limit)];
        self.every(S.entries.pg(), p, rows::entry)
    }

    fn lifetime(&mut self, user: &str) -> Result<(Credits, Credits)> {
        let r = self.one(&LIFETIME, &[&user])?;
        Ok((Credits::from_micros(r.int(0)?), Credits::from_micros(r.int(1)?)))
    }

    fn key_by_hash(&mut self, hash: &str, only: Option<HashKind>) -> Result<Option<KeyRow>> {
        match only {
            Some(kind) => self.first(&S.key_by_hash_kind, &[&hash, &kind.as_str()], rows::key),
            None => self.first(&S.key_by_hash, &[&hash], rows::key),
        }
    }

    fn key_with_available(&mut self, hash: &str, only: Option<HashKind>) -> Result<Option<KeyStanding>> {
        // The verify hot path in one statement (one round trip in `peek`).
        let now = self.now.map(|t| t.0);
        let offset = self.store.clock.offset_micros();
        self.first(&VERIFY, &[&hash, &only.map(HashKind::as_str), &now, &offset], rows::key_standing)
    }

    fn set_key_expiry(&mut self, id: KeyId, expires_at: Option<Timestamp>) -> Result<()> {
        self.run(&S.set_key_expiry, &[&id.0, &expires_at.map(|t| t.0)])?;
        Ok(())
    }

    fn set_key_disabled(&mut self, id: KeyId, at: Option<Timestamp>) -> Result<bool> {
        let n = match at {
            Some(t) => self.run(&S.disable_key, &[&id.0, &t.0])?,
            None => self.run(&S.enable_key, &[&id.0])?,
        };
        Ok(n == 1)
    }

    fn set_key_rotated(&mut self, id: KeyId, to: KeyId, ends_at: Timestamp) -> Result<()> {
        self.run(&S.set_key_rotated, &[&id.0, &to.0, &ends_at.0])?;
        Ok(())
    }

    fn set_key_limit(&mut self, id: KeyId, limit: Option<(Credits, SpendWindow)>) -> Result<()> {
        self.run(&S.set_key_limit, &[&id.0, &limit.map(|l| l.0.micros()), &limit.map(|l| l.1.as_str())])?;
        Ok(())
    }

    fn put_key_spend(&mut self, id: KeyId, start: Timestamp, end: Timestamp, spent: Credits) -> Result<()> {
        self.run(&S.put_key_spend, &[&id.0, &start.0, &end.0, &spent.micros()])?;
        Ok(())
    }

    fn add_key_spend(&mut self, id: KeyId, start: Timestamp, end: Timestamp, amount: Credits) -> Result<()> {
        self.run(&S.add_key_spend, &[&id.0, &start.0, &end.0, &amount.micros()])?;
        Ok(())
    }

    fn key_usage_since(&mut self, user: &str, id: KeyId, since: Timestamp) -> Result<Credits> {
        let n = self.int(
            "SELECT LEAST(GREATEST(COALESCE(SUM(-amount), 0), 0), 9223372036854775807)::bigint FROM creditgate_entries \
             WHERE user_id = $1 AND api_key_id = $2 AND kind = 'usage' AND created_at >= $3",
            &[&user, &id.0, &since.0],
        )?;
        Ok(Credits::from_micros(n))
    }

    fn key_by_id(&mut self, id: KeyId) -> Result<Option<KeyRow>> {
        self.first(&S.key_by_id, &[&id.0], rows::key)
    }

    fn active_keys(&mut self, user: &str, now: Timestamp) -> Result<u32> {
        Ok(count(self.int(S.active_keys.pg(), &[&user, &now.0])?))
    }

    fn insert_key(&mut self, k: &KeyRow, hash: &str, kind: HashKind) -> Result<()> {
        self.run(
            &S.insert_key,
            &[
                &k.id.0,
                &k.user_id,
                &k.name,
                &k.prefix,
                &hash,
                &kind.as_str(),
                &k.legacy,
                &k.created_at.0,
                &k.expires_at.map(|t| t.0),
                &k.spend_limit.map(Credits::micros),
                &k.spend_window.map(SpendWindow::as_str),
            ],
        )?;
        Ok(())
    }

    fn set_first_key_issued(&mut self, user: &str) -> Result<()> {
        self.run(&S.set_first_key_issued, &[&user])?;
        Ok(())
    }

    fn set_min_balance(&mut self, user: &str, floor: Credits) -> Result<()> {
        self.run(&S.set_min_balance, &[&user, &floor.micros()])?;
        Ok(())
    }

    fn revoke_key(&mut self, id: KeyId, now: Timestamp) -> Result<bool> {
        Ok(self.run(&S.revoke_key, &[&id.0, &now.0])? == 1)
    }

    fn keys(&mut self, user: &str, limit: u32) -> Result<Vec<KeyRow>> {
        self.every(S.keys.pg(), &[&user, &i64::from(limit)], rows::key)
    }

    fn touch_keys(&mut self, used: &[(KeyId, Timestamp)]) -> Result<()> {
        // One statement; rows another transaction holds are skipped rather
        // than waited for (`last_used_at` is lazy), so touching never blocks
        // and never deadlocks.
        let ids: Vec<uuid::Uuid> = used.iter().map(|(k, _)| k.0).collect();
        let ats: Vec<i64> = used.iter().map(|(_, t)| t.0).collect();
        self.exec(
            "UPDATE creditgate_api_keys k SET last_used_at = v.at \
             FROM unnest($1::uuid[], $2::bigint[]) AS v(id, at) \
             WHERE k.id = v.id AND (k.last_used_at IS NULL OR k.last_used_at < v.at) \
             AND k.id IN (SELECT l.id FROM creditgate_api_keys l WHERE l.id = ANY($1::uuid[]) \
                          FOR NO KEY UPDATE SKIP LOCKED)",
            &[&ids, &ats],
        )?;
        Ok(())
    }

    fn tally_key_attempt(&mut self, user: &str, day: i64, success: bool) -> Result<()> {
        self.run(&S.tally_key_attempt, &[&user, &day, &i64::from(success)])?;
        Ok(())
    }

    fn expire_holds(&mut self, user: &str, now: Timestamp) -> Result<u64> {
        self.run(&S.expire_holds, &[&user, &now.0])
    }

    fn active_holds(&mut self, user: &str, now: Timestamp) -> Result<u32> {
        Ok(count(self.int(S.active_holds.pg(), &[&user, &now.0])?))
    }

    fn insert_hold_if_available(&mut self, h: &HoldRow, now: Timestamp) -> Result<bool> {
        let n = self.run(
            &S.insert_hold_if_available,
            &[
                &h.user_id,
                &now.0,
                &h.id.0,
                &h.api_key_id.0,
                &h.amount.micros(),
                &h.model,
                &h.request_id,
                &h.expires_at.0,
                &h.price.map(|p| p.input_per_1k.micros()),
                &h.price.map(|p| p.output_per_1k.micros()),
                &h.price.and_then(|p| p.cached_input_per_1k.map(Credits::micros)),
                &h.price.and_then(|p| p.cache_write_per_1k.map(Credits::micros)),
                &h.price.map(|p| p.request_fee.micros()),
            ],
        )?;
        Ok(n == 1)
    }

    fn hold(&mut self, id: HoldId) -> Result<Option<HoldRow>> {
        self.first(&S.hold, &[&id.0], rows::hold)
    }

    fn hold_by_request(&mut self, user: &str, request_id: &str) -> Result<Option<HoldRow>> {
        self.first(&S.hold_by_request, &[&user, &request_id], rows::hold)
    }

    fn set_hold_status(
        &mut self,
        id: HoldId,
        from: HoldStatus,
        to: HoldStatus,
        entry: Option<EntryId>,
    ) -> Result<bool> {
        let n = self.run(&S.set_hold_status, &[&id.0, &from.as_str(), &to.as_str(), &entry.map(|e| e.0)])?;
        Ok(n == 1)
    }

    fn price(&mut self, model: &str, at: Timestamp) -> Result<Option<ModelPrice>> {
        self.first(&S.price, &[&model, &at.0], |r| rows::price(r, 0))
    }

    fn scan_accounts(&mut self, f: &mut dyn FnMut(&str, i64, i64)) -> Result<()> {
        self.scan(S.scan_accounts.pg(), &mut |r| {
            let user: &str = r.try_get(0).map_err(|e| corrupt("user_id", e))?;
            f(user, r.int(1)?, r.int(2)?);
            Ok(())
        })
    }

    fn scan_entries(&mut self, f: &mut dyn FnMut(&str, i64, i64, i64)) -> Result<()> {
        self.scan(S.scan_entries.pg(), &mut |r| {
            let user: &str = r.try_get(0).map_err(|e| corrupt("user_id", e))?;
            f(user, r.int(1)?, r.int(2)?, r.int(3)?);
            Ok(())
        })
    }

    fn figures(&mut self) -> Result<LedgerFigures> {
        let q = |tx: &mut Self, sql: &Sql| -> Result<u64> { Ok(tx.int(sql.pg(), &[])?.max(0) as u64) };
        Ok(LedgerFigures {
            users: q(self, &S.users)?,
            paying_users: q(self, &S.paying_users)?,
            users_attempted_key: q(self, &S.users_attempted_key)?,
            paying_users_attempted_key: q(self, &S.paying_users_attempted_key)?,
            key_generation_attempts: q(self, &S.key_generation_attempts)?,
            key_generation_successes: q(self, &S.key_generation_successes)?,
        })
    }

    fn payment_problems(&mut self) -> Result<Vec<(String, String, String)>> {
        self.every(S.payment_problems.pg(), &[], |r| Ok((r.text(0)?, r.text(1)?, r.text(2)?)))
    }

    fn set_rate_limit(&mut self, key: KeyId, rpm: Option<i64>, tpm: Option<i64>) -> Result<()> {
        self.run(&S.set_rate_limit, &[&key.0, &rpm, &tpm])?;
        Ok(())
    }

    fn take_requests(&mut self, key: KeyId, window: i64, n: i64) -> Result<RateCheck> {
        if self.run(&S.take_requests, &[&key.0, &window, &n])? == 1 {
            return Ok(RateCheck::Allowed);
        }
        let row = self.first(&S.rate_requests, &[&key.0, &window], |r| Ok((r.int(0)?, r.opt_int(1)?)))?;
        Ok(row.map_or(RateCheck::Unlimited, |(requests, rpm)| RateCheck::Limited(exhausted_limit(requests, rpm))))
    }

    fn add_rate_tokens(&mut self, key: KeyId, window: i64, tokens: i64) -> Result<()> {
        self.run(&S.add_rate_tokens, &[&key.0, &window, &tokens])?;
        Ok(())
    }

    fn has_rate_limits(&mut self) -> Result<bool> {
        self.one(S.has_rate_limits.pg(), &[])?.flag(0)
    }

    fn insert_grant(&mut self, g: &Grant) -> Result<GrantId> {
        let row = self.one(
            S.insert_grant.pg(),
            &[
                &g.user_id,
                &g.source_entry_id.map(|e| e.0),
                &g.category.as_str(),
                &g.priority,
                &g.amount.micros(),
                &g.remaining.micros(),
                &g.expires_at.map(|t| t.0),
                &g.created_at.0,
                &g.payment_id,
                &g.member_id,
                &g.api_key_id.map(|k| k.0),
                &g.allowance_id,
            ],
        )?;
        Ok(GrantId(row.int(0)?))
    }

    fn live_grants(
        &mut self,
        user: &str,
        now: Timestamp,
        include_due: bool,
        limit: u32,
        scope: Scope,
    ) -> Result<Vec<Grant>> {
        if include_due
            && limit == PREFETCHED_GRANTS
            && let Some(p) = self.grants.take()
            && p.user == user
            && p.now == now
            && p.member.as_deref() == scope.member
            && p.key == scope.key
        {
            return Ok(p.grants);
        }
        let key = scope.key.map(|k| k.0);
        let p: Params = &[&user, &now.0, &include_due, &scope.member, &key, &i64::from(limit)];
        self.every(&LIVE_GRANTS, p, rows::grant)
    }

    fn take_from_grant(&mut self, id: GrantId, amount: Credits) -> Result<bool> {
        Ok(self.run(&S.take_from_grant, &[&id.0, &amount.micros()])? == 1)
    }

    fn grant_by_payment(&mut self, payment_id: &str) -> Result<Option<Grant>> {
        self.first(&S.grant_by_payment, &[&payment_id], rows::grant)
    }

    fn due_grants(&mut self, user: &str, now: Timestamp) -> Result<Credits> {
        Ok(Credits::from_micros(self.int(S.due_grants.pg(), &[&user, &now.0])?))
    }

    fn due_grants_total(&mut self, now: Timestamp) -> Result<Credits> {
        let row = self.one(
            "SELECT COALESCE(SUM(remaining), 0)::text FROM creditgate_grants WHERE remaining > 0 AND expires_at <= $1::bigint",
            &[&now.0],
        )?;
        let text = row.text(0)?;
        text.parse::<i64>()
            .map(Credits::from_micros)
            .map_err(|_| Error::Internal(format!("expired grants {text:?} exceed the 64-bit range")))
    }

    fn users_with_due_grants(&mut self, now: Timestamp, limit: u32) -> Result<Vec<String>> {
        self.every(S.users_with_due_grants.pg(), &[&now.0, &i64::from(limit)], |r| r.text(0))
    }

    fn scan_grants(&mut self, f: &mut dyn FnMut(&str, i128, i64)) -> Result<()> {
        self.scan(
            "SELECT user_id, SUM(remaining)::text, COUNT(*) FILTER (WHERE remaining < 0 OR remaining > amount) \
             FROM creditgate_grants GROUP BY user_id ORDER BY user_id",
            &mut |r| {
                let user: &str = r.try_get(0).map_err(|e| corrupt("user_id", e))?;
                let text: String = col(r, 1)?;
                let sum = text.parse().map_err(|_| Error::Internal(format!("grant sum {text:?} is not an integer")))?;
                f(user, sum, col(r, 2)?);
                Ok(())
            },
        )
    }

    fn insert_event(&mut self, e: &NewEvent) -> Result<i64> {
        let data = e.data.to_string();
        let p: Params = &[&e.kind.as_str(), &e.user_id, &e.api_key_id.map(|k| k.0), &data, &e.created_at.0];
        self.int(S.insert_event.pg(), p)
    }

    fn events(&mut self, after: i64, limit: u32) -> Result<Vec<Event>> {
        // Sequence ids are not in commit order; transaction ids below the
        // snapshot's xmin belong to finished transactions, and every
        // transaction still to commit has a larger one. So (txid, id) below
        // xmin is a final prefix of the commit order, and the cursor is the
        // (txid, id) of the last event returned.
        let cursor = if after == 0 {
            "0".to_string()
        } else {
            match self.opt("SELECT txid::text FROM creditgate_events WHERE id = $1", &[&after])? {
                Some(r) => col::<String>(&r, 0)?,
                None => return Err(unknown_cursor(after)),
            }
        };
        let rows = self.query(
            "SELECT id, kind, user_id, api_key_id, data, created_at FROM creditgate_events \
             WHERE (txid, id) > ($1::text::xid8, $2) AND txid < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY txid, id LIMIT $3",
            &[&cursor, &after, &i64::from(limit)],
        )?;
        rows.iter()
            .map(|r| {
                let key: Option<uuid::Uuid> = col(r, 3)?;
                let kind: String = col(r, 1)?;
                let data: String = col(r, 4)?;
                Event::from_stored(col(r, 0)?, &kind, col(r, 2)?, key.map(KeyId), &data, col(r, 5)?)
            })
            .collect()
    }

    fn events_tail(&mut self) -> Result<i64> {
        // The last of the final prefix `events` reads (see there).
        let row = self.opt(
            "SELECT id FROM creditgate_events WHERE txid < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY txid DESC, id DESC LIMIT 1",
            &[],
        )?;
        row.map_or(Ok(0), |r| col(&r, 0))
    }

    fn has_purchase(&mut self, user: &str) -> Result<bool> {
        Ok(self.first(&S.has_purchase, &[&user], |_| Ok(()))?.is_some())
    }

    fn host_rows(&mut self, sql: &str, columns: usize) -> Result<Vec<Vec<Option<String>>>> {
        // Not cached: a one-off query on someone else's table.
        let rows = match self.c.client.query(sql, &[]) {
            Ok(rows) => rows,
            Err(e) => return Err(self.fail(e)),
        };
        rows.iter().map(|r| (0..columns).map(|i| col::<Option<String>>(r, i)).collect()).collect()
    }
}
