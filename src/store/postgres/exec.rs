//! How a [`PgTx`] runs statements: prepared once per connection and kept
//! in the connection's cache, the first failure remembered (it aborts the
//! transaction), rows mapped through `rows.rs`; and the lock of an account
//! with what `lock_and_entry_by_key` reads ahead.

use super::columns::{col, grant_from_json};
use super::tx::{Failure, Locked, Params, PgTx, Prefetched};
use super::{describe, scrub};
use crate::error::{Error, Result};
use crate::store::Param;
use crate::store::Scope;
use crate::store::rows::corrupt;
use crate::store::sql::Sql;
use crate::types::{Entry, Timestamp};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Row, Statement};

impl PgTx<'_> {
    /// Records the first failure (it aborts the transaction) and maps it.
    pub(super) fn fail(&mut self, e: postgres::Error) -> Error {
        let message = scrub(&self.store.secrets, describe(&e));
        if self.failed.is_none() {
            self.failed = Some(Failure { code: e.code().cloned(), message: message.clone() });
        }
        Error::Storage(message)
    }

    pub(super) fn stmt(&mut self, sql: &str) -> Result<Statement> {
        self.grants = None;
        if let Some(s) = self.c.stmts.get(sql) {
            return Ok(s.clone());
        }
        match self.c.client.prepare(sql) {
            Ok(s) => {
                self.c.stmts.insert(sql.to_string(), s.clone());
                Ok(s)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    pub(super) fn query(&mut self, sql: &str, params: Params) -> Result<Vec<Row>> {
        let s = self.stmt(sql)?;
        match self.c.client.query(&s, params) {
            Ok(rows) => Ok(rows),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Runs a statement prepared for this run only (an unnamed statement,
    /// not kept in the connection's cache).
    pub(super) fn query_once(&mut self, sql: &str, params: Params) -> Result<Vec<Row>> {
        self.grants = None;
        match self.c.client.query(sql, params) {
            Ok(rows) => Ok(rows),
            Err(e) => Err(self.fail(e)),
        }
    }

    pub(super) fn opt(&mut self, sql: &str, params: Params) -> Result<Option<Row>> {
        let s = self.stmt(sql)?;
        match self.c.client.query_opt(&s, params) {
            Ok(row) => Ok(row),
            Err(e) => Err(self.fail(e)),
        }
    }

    pub(super) fn one(&mut self, sql: &str, params: Params) -> Result<Row> {
        let s = self.stmt(sql)?;
        match self.c.client.query_one(&s, params) {
            Ok(row) => Ok(row),
            Err(e) => Err(self.fail(e)),
        }
    }

    pub(super) fn exec(&mut self, sql: &str, params: Params) -> Result<u64> {
        let s = self.stmt(sql)?;
        match self.c.client.execute(&s, params) {
            Ok(n) => Ok(n),
            Err(e) => Err(self.fail(e)),
        }
    }

    pub(super) fn int(&mut self, sql: &str, params: Params) -> Result<i64> {
        col(&self.one(sql, params)?, 0)
    }

    /// Streams rows to `f` without holding them all in memory.
    pub(super) fn scan(&mut self, sql: &str, f: &mut dyn FnMut(&Row) -> Result<()>) -> Result<()> {
        let s = self.stmt(sql)?;
        let mut failed = None;
        let mut out = Ok(());
        match self.c.client.query_raw(&s, std::iter::empty::<&dyn ToSql>()) {
            Err(e) => failed = Some(e),
            Ok(mut rows) => loop {
                match rows.next() {
                    Ok(Some(row)) => {
                        if let Err(e) = f(&row) {
                            out = Err(e);
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            },
        }
        match failed {
            Some(e) => Err(self.fail(e)),
            None => out,
        }
    }

    pub(super) fn is_locked(&self, user: &str) -> bool {
        self.locked.iter().any(|l| l.user == user)
    }

    /// Records the lock of `user`'s row, with the `refill_at` it read.
    pub(super) fn note_lock(&mut self, user: &str, row: &Row) -> Result<()> {
        self.locked.push(Locked { user: user.to_string(), refill_at: Some(col(row, 0)?) });
        Ok(())
    }

    /// The first row of `sql`, mapped by `f`.
    pub(super) fn first<T>(
        &mut self,
        sql: &Sql,
        params: Params,
        f: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<Option<T>> {
        self.opt(sql.pg(), params)?.map(|r| f(&r)).transpose()
    }

    /// Every row of `sql`, mapped by `f`.
    pub(super) fn every<T>(&mut self, sql: &str, params: Params, f: impl FnMut(&Row) -> Result<T>) -> Result<Vec<T>> {
        self.query(sql, params)?.iter().map(f).collect()
    }

    /// Runs `sql`; the rows it changed.
    pub(super) fn run(&mut self, sql: &Sql, params: Params) -> Result<u64> {
        self.exec(sql.pg(), params)
    }

    /// The prefetched row of `lock_and_entry_by_key`: the entry when found,
    /// else the prefetched grants are kept for `live_grants`. None when the
    /// look-up does not stand (the account changed while the lock waited).
    pub(super) fn prefetched(
        &mut self,
        user: &str,
        now: Timestamp,
        scope: Scope,
        row: &Row,
    ) -> Result<Option<Option<Entry>>> {
        // The found entry's id alone: a replay (rare) reads it whole next,
        // a new charge (the hot path) carries no columns of NULLs.
        let n = 1;
        let locked: Option<i64> = col(row, n)?;
        if locked.is_none() {
            return Ok(None);
        }
        self.locked.push(Locked { user: user.to_string(), refill_at: Some(col(row, n + 3)?) });
        if locked != col::<Option<i64>>(row, n + 1)? {
            return Ok(None);
        }
        if col::<Option<uuid::Uuid>>(row, 0)?.is_some() {
            return Ok(None);
        }
        let grants = match col::<Option<String>>(row, n + 2)? {
            None => Vec::new(),
            Some(json) => serde_json::from_str::<Vec<serde_json::Value>>(&json)
                .map_err(|e| corrupt("prefetched grants", e))?
                .iter()
                .map(grant_from_json)
                .collect::<Result<_>>()?,
        };
        let member = scope.member.map(str::to_string);
        self.grants = Some(Prefetched { user: user.to_string(), now, member, key: scope.key, grants });
        Ok(Some(None))
    }
}

/// Neutral parameters as PostgreSQL binds them.
pub(super) fn bound<'a>(params: &'a [Param<'a>]) -> Vec<Box<dyn ToSql + Sync + 'a>> {
    params
        .iter()
        .map(|p| -> Box<dyn ToSql + Sync + 'a> {
            match *p {
                Param::Int(v) => Box::new(v),
                Param::OptInt(v) => Box::new(v),
                Param::Text(v) => Box::new(v),
                Param::OptText(v) => Box::new(v),
                Param::OptUuid(v) => Box::new(v),
            }
        })
        .collect()
}
