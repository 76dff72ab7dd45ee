//! PostgreSQL backend, for many gateway hosts sharing one ledger.
//!
//! - Driver: the synchronous `postgres` crate, in the thread-free pool of
//!   `pool.rs`; each connection keeps a prepared-statement cache (one round
//!   trip per statement) and sets `lock_timeout`.
//! - TLS: rustls (ring), as the URL's `sslmode` asks (libpq semantics):
//!   `disable`; `allow`/`prefer` (default) and `require` encrypt without
//!   verifying the certificate (`require` with `sslrootcert` verifies the
//!   chain); `verify-ca` verifies the chain; `verify-full` also the host
//!   name. Roots: the PEM file `sslrootcert`, else the Mozilla roots.
//! - Writes run in READ COMMITTED transactions, up to one per pooled
//!   connection at once (see `group.rs`): a writer that finds a connection
//!   free runs its own transaction at once; the writers that find them all
//!   busy are group-committed, sharing one transaction, each in its own
//!   savepoint, so one WAL flush serves them all. Only one such shared
//!   batch runs at a time, so batching adds no lock cycle. Every write locks its account row first
//!   (`ensure_account`: `SELECT … FOR NO KEY UPDATE`, inserting the row when
//!   absent), so strict checks, hold inserts and the key-creation rules are
//!   serialized per account across hosts; balances move only by the
//!   conditional `UPDATE … RETURNING` of `apply`. Idempotency keys are unique
//!   constraints: when two hosts race on one key, the loser's insert fails
//!   with 23505 and its transaction is rerun, taking the replay path.
//! - Serialization failures (40001), deadlocks (40P01) and those unique
//!   violations are retried a bounded number of times with jittered
//!   exponential backoff, rerunning the whole batch; the manager's closures
//!   are safe to rerun.
//! - Reads run at REPEATABLE READ, READ ONLY: one consistent snapshot.
//! - Time comes from the server (`clock_timestamp()` at BEGIN), so hosts
//!   with skewed clocks agree on expiry.
//! - Migrations run under `pg_advisory_xact_lock`, recorded in
//!   `creditgate_schema_version`.
//!
//! No error message contains the database password: every message is
//! scrubbed of it before it leaves this module.

mod columns;
mod exec;
#[cfg(test)]
mod tests;
mod tx;
mod url;

use super::Tx;
use super::group::{GroupCommit, Slot};
use super::pool::{Connector, Pool, Pooled};
use super::schema;
use crate::config::{Config, TestClock};
use crate::error::{Error, Result};
use crate::types::Timestamp;
use postgres::error::SqlState;
use postgres::{Client, SimpleQueryMessage, Statement};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres_rustls::MakeRustlsConnect;
use tx::{Failure, PgTx};
use url::{DEFAULT_CONNECT_TIMEOUT, parse_url, scrub, tls_connector};

/// `pg_advisory_xact_lock` key that serializes migrations ("creditgt").
const MIGRATION_LOCK: i64 = 0x6372_6564_6974_6774;

/// Most writes in one transaction: each has a savepoint, and PostgreSQL
/// caches at most 64 subtransactions per session before lookups slow down.
const MAX_BATCH_JOBS: usize = 32;

/// Most attempts of one transaction before giving up with `Storage`.
const MAX_ATTEMPTS: u32 = 12;

const NOW_SQL: &str = "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint";
const BEGIN_WRITE: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";
const BEGIN_READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

// ----- the pool ---------------------------------------------------------

/// A pooled connection with its prepared statements.
pub(crate) struct PgConn {
    client: Client,
    stmts: HashMap<String, Statement>,
    /// Set when the session's state is unknown (a failed rollback).
    broken: bool,
}

pub(crate) struct PgManager {
    config: postgres::Config,
    tls: MakeRustlsConnect,
    setup: String,
}

impl Connector for PgManager {
    type Conn = PgConn;

    /// Failures are described with the server's message (the driver's own
    /// `Display` says only "db error"); the caller scrubs secrets.
    fn connect(&self) -> Result<PgConn> {
        let fail = |e: postgres::Error| Error::Storage(describe(&e));
        let mut client = self.config.connect(self.tls.clone()).map_err(fail)?;
        client.batch_execute(&self.setup).map_err(fail)?;
        Ok(PgConn { client, stmts: HashMap::new(), broken: false })
    }

    fn is_broken(&self, conn: &mut PgConn) -> bool {
        conn.broken || conn.client.is_closed()
    }
}

pub(crate) struct PostgresStore {
    pool: Pool<PgManager>,
    location: String,
    secrets: Arc<Vec<String>>,
    group: GroupCommit,
    clock: TestClock,
    /// The schema version the open found (0: the open created the schema).
    opened_from: i64,
}

/// How one attempt of a transaction ended.
enum Attempt<R> {
    Done(Result<R>),
    /// Rolled back for a reason a rerun can clear (e.g. SQLSTATE 40001).
    Retry(String),
}

/// The message of a storage error, without the code prefix.
fn storage_text(e: Error) -> String {
    match e {
        Error::Storage(m) => m,
        other => other.to_string(),
    }
}

/// The server's SQLSTATE and message, or the driver's error with its causes
/// ("error connecting to server: Connection refused (os error 111)").
fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("PostgreSQL error {}: {}", db.code().code(), db.message());
    }
    let mut msg = format!("PostgreSQL: {e}");
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        msg.push_str(&format!(": {c}"));
        cause = c.source();
    }
    msg
}

/// SQLSTATEs after which rerunning the whole transaction is right.
fn retryable(code: &SqlState, write: bool) -> bool {
    *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        // A racing host inserted the same idempotency key (or account) first:
        // the rerun takes the replay path.
        || (write && *code == SqlState::UNIQUE_VIOLATION)
        // A cached statement went stale (schema change, pooler reset).
        || *code == SqlState::FEATURE_NOT_SUPPORTED
        || *code == SqlState::INVALID_SQL_STATEMENT_NAME
}

/// A cached prepared statement the server no longer accepts (schema change,
/// pooler reset): cleared by preparing it again.
fn stale_statement(message: &str) -> bool {
    message.contains("cached plan") || message.contains("prepared statement")
}

/// Full-jitter exponential backoff: up to 2 ms × 2^attempt, at most 200 ms.
fn backoff(attempt: u32) {
    let cap_us = (2_000u64 << attempt.min(7)).min(200_000);
    let r = getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15);
    std::thread::sleep(Duration::from_micros(500 + r % cap_us));
}

fn begin(client: &mut Client, write: bool) -> std::result::Result<Timestamp, postgres::Error> {
    let sql = format!("{}; {NOW_SQL}", if write { BEGIN_WRITE } else { BEGIN_READ });
    let msgs = client.simple_query(&sql)?;
    let now = msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse::<i64>().ok()),
        _ => None,
    });
    Ok(Timestamp(now.unwrap_or_else(|| Timestamp::now().0)))
}

impl PostgresStore {
    /// Connects and applies the migrations up to version `up_to`; `None`
    /// only reads the schema version (nothing is created or changed).
    pub(crate) fn open(url: &str, config: &Config, up_to: Option<i64>) -> Result<PostgresStore> {
        let p = parse_url(url)?;
        let secrets = Arc::new(p.secrets);
        let tls = tls_connector(p.ssl_mode, p.root_cert.as_deref())?;
        // Generic plans: every statement is prepared once per connection and
        // looks rows up by key, so a plan per parameter set buys nothing,
        // while the server re-plans a custom plan at every execution (it
        // kept doing so for the conditional update and the lock-and-look-up
        // of every charge: ~60 µs a charge, measured in BENCHMARKS.md).
        let setup = format!("SET lock_timeout = {}; SET plan_cache_mode = force_generic_plan", config.busy_timeout_ms);
        let connect_timeout = p.config.get_connect_timeout().copied().unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let manager = PgManager { config: p.config, tls, setup };
        // One connection first, so that a wrong password or an unreachable
        // server fails at once with the server's message; it also runs the
        // migrations (or reads the version), and then joins the pool.
        let mut first = manager.connect().map_err(|e| {
            Error::Storage(scrub(&secrets, format!("cannot connect to PostgreSQL {}: {}", p.location, storage_text(e))))
        })?;
        let opened_from = match up_to {
            Some(version) => migrate_on(&mut first, &secrets, version)?.0,
            None => applied_on(&mut first, &secrets)?.last().copied().unwrap_or(0),
        };
        let wait =
            connect_timeout.max(Duration::from_millis(u64::from(config.busy_timeout_ms))) + Duration::from_secs(5);
        let pool = Pool::new(manager, config.pool_size, wait);
        drop(pool.adopt(first));
        Ok(PostgresStore {
            pool,
            location: p.location,
            secrets,
            group: GroupCommit::with_lanes(MAX_BATCH_JOBS, config.pool_size as usize),
            clock: config.clock.clone(),
            opened_from,
        })
    }

    pub(crate) fn location(&self) -> String {
        self.location.clone()
    }

    fn storage(&self, msg: String) -> Error {
        Error::Storage(scrub(&self.secrets, msg))
    }

    fn conn(&self) -> Result<Pooled<'_, PgManager>> {
        self.pool.get().map_err(|e| self.storage(format!("no PostgreSQL connection: {}", storage_text(e))))
    }

    /// Runs `f` in a READ COMMITTED transaction shared with concurrent
    /// writers (group commit), its writes kept only when `f` returns Ok;
    /// reruns the batch on serialization failures, deadlocks and idempotency
    /// races; returns once the transaction committed.
    #[cfg(test)]
    pub(crate) fn write<R: Send>(&self, f: impl FnMut(&mut dyn Tx) -> Result<R> + Send) -> Result<R> {
        self.write_on(None, f)
    }

    /// `write` of an `f` that locks only the account named by `account` (a
    /// hash of it), when Some: see `group.rs`.
    pub(crate) fn write_on<R: Send>(
        &self,
        account: Option<u64>,
        f: impl FnMut(&mut dyn Tx) -> Result<R> + Send,
    ) -> Result<R> {
        self.group.write_on(account, f, &|slots| self.run_batch(slots))
    }

    fn run_batch(&self, slots: &mut [&mut Slot]) -> Result<()> {
        self.retrying(|| self.batch_attempt(slots))
    }

    /// Reruns `attempt` while it ends in what a rerun can clear, at most
    /// `MAX_ATTEMPTS` times, with backoff.
    fn retrying<R>(&self, mut attempt: impl FnMut() -> Attempt<R>) -> Result<R> {
        let mut n = 1;
        loop {
            match attempt() {
                Attempt::Done(r) => return r,
                Attempt::Retry(why) if n >= MAX_ATTEMPTS => {
                    return Err(self.storage(format!("transaction gave up after {n} attempts: {why}")));
                }
                Attempt::Retry(_) => {
                    backoff(n);
                    n += 1;
                }
            }
        }
    }

    /// One attempt of a batch: each job in a savepoint (a lone job needs
    /// none), rolled back to it when the job fails; a failure that a rerun
    /// can clear reruns the whole batch.
    fn batch_attempt(&self, slots: &mut [&mut Slot]) -> Attempt<()> {
        let mut conn = match self.conn() {
            Ok(c) => c,
            Err(e) => return Attempt::Done(Err(e)),
        };
        let now = match begin(&mut conn.client, true) {
            Ok(now) => now,
            Err(e) => return self.begin_failed(&mut conn, &e),
        };
        let lone = slots.len() == 1;
        // One savepoint, re-established after each kept job and kept by a
        // rollback to it: one round trip per job.
        if !lone && let Err(e) = conn.client.batch_execute("SAVEPOINT creditgate_job") {
            return self.abandon(&mut conn, Failure { code: e.code().cloned(), message: describe(&e) });
        }
        let mut locked = Vec::new();
        let last = slots.len() - 1;
        for (i, slot) in slots.iter_mut().enumerate() {
            slot.set_failure(None);
            let before = locked.len();
            let mut tx = PgTx { locked, ..PgTx::new(&mut conn, self, Some(now), true) };
            let ok = slot.run(&mut tx);
            let failed = tx.failed.take();
            locked = tx.locked;
            let failure = match failed {
                None if ok => None,
                // The job's own error (e.g. insufficient credits): undo its writes.
                None => Some(None),
                Some(f) if self.rerun_clears(&mut conn, &f, true) => return self.abandon(&mut conn, f),
                // A statement failed but the closure went on: never keep that.
                Some(f) => Some(ok.then_some(f.message)),
            };
            let next = match &failure {
                None if lone || i == last => continue,
                None => "RELEASE creditgate_job; SAVEPOINT creditgate_job",
                Some(_) if lone => "ROLLBACK",
                Some(_) => "ROLLBACK TO creditgate_job",
            };
            if let Err(e) = conn.client.batch_execute(next) {
                return self.abandon(&mut conn, Failure { code: e.code().cloned(), message: describe(&e) });
            }
            if let Some(message) = failure {
                slot.set_failure(message);
                if lone {
                    return Attempt::Done(Ok(()));
                }
                locked.truncate(before);
            }
        }
        self.commit(&mut conn, true, ())
    }

    /// Runs `f` on one REPEATABLE READ, READ ONLY snapshot.
    pub(crate) fn read<R>(&self, mut f: impl FnMut(&mut dyn Tx) -> Result<R>) -> Result<R> {
        self.retrying(|| self.read_attempt(&mut f))
    }

    /// Runs `f`, whose reads are one statement each, outside a transaction
    /// (autocommit: each statement sees its own snapshot); the verify hot
    /// path in one round trip. Rerun on a fresh connection when a pooled one
    /// had died, and on serialization failures: it only reads.
    pub(crate) fn peek<R>(&self, mut f: impl FnMut(&mut dyn Tx) -> Result<R>) -> Result<R> {
        let mut attempt = 1;
        loop {
            let mut conn = self.conn()?;
            let mut tx = PgTx::new(&mut conn, self, None, false);
            let out = f(&mut tx);
            let failed = tx.failed.take();
            let retry = match &failed {
                None => return out,
                Some(Failure { code: Some(code), message }) => {
                    if *code == SqlState::FEATURE_NOT_SUPPORTED || *code == SqlState::INVALID_SQL_STATEMENT_NAME {
                        stale_statement(message)
                    } else {
                        retryable(code, false)
                    }
                }
                Some(Failure { code: None, .. }) => conn.client.is_closed(),
            };
            if conn.client.is_closed() {
                conn.broken = true;
            }
            match failed {
                Some(Failure { message, .. }) if retry && attempt < MAX_ATTEMPTS => {
                    if stale_statement(&message) {
                        conn.stmts.clear();
                    }
                    drop(conn);
                    backoff(attempt);
                    attempt += 1;
                }
                Some(Failure { message, .. }) if out.is_ok() => return Err(self.storage(message)),
                _ => return out,
            }
        }
    }

    fn read_attempt<R>(&self, f: &mut dyn FnMut(&mut dyn Tx) -> Result<R>) -> Attempt<R> {
        let mut conn = match self.conn() {
            Ok(c) => c,
            Err(e) => return Attempt::Done(Err(e)),
        };
        let now = match begin(&mut conn.client, false) {
            Ok(now) => now,
            Err(e) => return self.begin_failed(&mut conn, &e),
        };
        let mut tx = PgTx::new(&mut conn, self, Some(now), false);
        let out = f(&mut tx);
        match (out, tx.failed.take()) {
            (Ok(v), None) => self.commit(&mut conn, false, v),
            (out, None) => {
                self.rollback(&mut conn);
                Attempt::Done(out)
            }
            (out, Some(failure)) => {
                if self.rerun_clears(&mut conn, &failure, false) {
                    return self.abandon(&mut conn, failure);
                }
                self.rollback(&mut conn);
                match out {
                    // A statement failed but the closure went on: never use that.
                    Ok(_) => Attempt::Done(Err(self.storage(failure.message))),
                    Err(e) => Attempt::Done(Err(e)),
                }
            }
        }
    }

    /// BEGIN failed. Nothing was done yet: a connection that died in the
    /// pool (server restart, idle timeout) is replaced and the call rerun.
    fn begin_failed<R>(&self, conn: &mut PgConn, e: &postgres::Error) -> Attempt<R> {
        conn.broken = true;
        // Class 57P: the server is shutting down or restarting; 08: connection.
        let gone = e.code().is_some_and(|c| c.code().starts_with("57P") || c.code().starts_with("08"));
        if conn.client.is_closed() || gone {
            Attempt::Retry(describe(e))
        } else {
            Attempt::Done(Err(self.storage(format!("cannot begin a transaction: {}", describe(e)))))
        }
    }

    /// Whether rerunning the transaction can clear `failure`; forgets what
    /// the rerun must not reuse (stale statements, a dead connection).
    fn rerun_clears(&self, conn: &mut PgConn, failure: &Failure, write: bool) -> bool {
        match &failure.code {
            Some(code) if retryable(code, write) => {
                if *code == SqlState::FEATURE_NOT_SUPPORTED || *code == SqlState::INVALID_SQL_STATEMENT_NAME {
                    if !stale_statement(&failure.message) {
                        return false;
                    }
                    conn.stmts.clear();
                }
                true
            }
            Some(_) => false,
            // The connection died before COMMIT: the server rolled back.
            None if conn.client.is_closed() => {
                conn.broken = true;
                true
            }
            None => false,
        }
    }

    fn rollback(&self, conn: &mut PgConn) {
        if conn.client.batch_execute("ROLLBACK").is_err() {
            conn.broken = true;
        }
    }

    /// Rolls the whole transaction back, to be rerun.
    fn abandon<R>(&self, conn: &mut PgConn, failure: Failure) -> Attempt<R> {
        self.rollback(conn);
        Attempt::Retry(failure.message)
    }

    fn commit<R>(&self, conn: &mut PgConn, write: bool, v: R) -> Attempt<R> {
        match conn.client.batch_execute("COMMIT") {
            Ok(()) => Attempt::Done(Ok(v)),
            Err(e) => match e.code() {
                // The server rolled back (e.g. serializable conflict at commit).
                Some(code) if retryable(code, write) => Attempt::Retry(describe(&e)),
                _ => {
                    conn.broken = true;
                    Attempt::Done(Err(self.storage(format!(
                        "commit failed, the outcome is unknown (retry with the same idempotency key): {}",
                        describe(&e)
                    ))))
                }
            },
        }
    }

    /// Applies the pending migrations up to version `up_to` under an
    /// advisory lock, so concurrent openers (on any host) apply each
    /// exactly once.
    pub(crate) fn migrate(&self, up_to: i64) -> Result<(i64, i64)> {
        let mut conn = self.conn()?;
        migrate_on(&mut conn, &self.secrets, up_to)
    }

    /// The schema versions recorded as applied, ascending; a read.
    pub(crate) fn applied_versions(&self) -> Result<Vec<i64>> {
        let mut conn = self.conn()?;
        applied_on(&mut conn, &self.secrets)
    }

    pub(crate) fn opened_from(&self) -> i64 {
        self.opened_from
    }
}

/// The versions in `creditgate_schema_version`, ascending (none without the
/// table); needs no lock nor CREATE privileges.
fn applied_on(conn: &mut PgConn, secrets: &[String]) -> Result<Vec<i64>> {
    let err = |e: postgres::Error| Error::Storage(scrub(secrets, format!("schema version: {}", describe(&e))));
    let exists: bool =
        conn.client.query_one("SELECT to_regclass('creditgate_schema_version') IS NOT NULL", &[]).map_err(err)?.get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let rows = conn
        .client
        .query("SELECT version::bigint FROM creditgate_schema_version ORDER BY version", &[])
        .map_err(err)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Applies the migrations up to `up_to` not yet recorded. Returns the schema
/// version before and after (0 before: no schema). A schema newer than this
/// library is left alone: the caller refuses it.
fn migrate_on(conn: &mut PgConn, secrets: &[String], up_to: i64) -> Result<(i64, i64)> {
    let err = |e: postgres::Error| Error::Storage(scrub(secrets, format!("migration: {}", describe(&e))));
    // Fast path, without the lock (nor CREATE privileges): nothing to do.
    let applied = applied_on(conn, secrets)?;
    let current = applied.last().copied().unwrap_or(0);
    if current > schema::LATEST_VERSION || schema::pending(&applied)?.iter().all(|m| m.version > up_to) {
        return Ok((current, current));
    }
    conn.stmts.clear();
    let client = &mut conn.client;
    let mut t = client.transaction().map_err(err)?;
    t.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(err)?;
    t.batch_execute(
        "CREATE TABLE IF NOT EXISTS creditgate_schema_version (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .map_err(err)?;
    // Read again under the lock: another host may have migrated meanwhile.
    let applied: Vec<i64> = t
        .query("SELECT version::bigint FROM creditgate_schema_version", &[])
        .map_err(err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let versions = schema::run(&applied, up_to, |m| {
        t.batch_execute(m.postgres).map_err(err)?;
        t.execute(
            &format!("INSERT INTO creditgate_schema_version (version, applied_at) VALUES ($1, {NOW_SQL_EXPR})"),
            &[&(m.version as i32)],
        )
        .map_err(err)?;
        Ok(())
    })?;
    t.commit().map_err(err)?;
    Ok(versions)
}

const NOW_SQL_EXPR: &str = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint";
