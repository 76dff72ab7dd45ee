//! SQLite backend: rusqlite in the thread-free pool of `pool.rs`, WAL, `BEGIN IMMEDIATE` for every write
//! (the write lock is taken up front, so no lock-upgrade deadlocks), cached
//! prepared statements, durable on return with `synchronous=FULL`.

use super::group::{GroupCommit, Slot};
use super::pool::{Connector, Pool};
use super::verify_cache::VerifyCache;
use super::{
    AccountRow, Applied, HashKind, HoldRow, HoldStatus, KeyRow, KeyStanding, LedgerFigures, RATE_ROW_HAS_LIMITS,
    RateCheck, RateCounts, Tx, exhausted_limit,
};
use crate::config::{Config, Synchronous, TestClock};
use crate::error::{Error, Result};
use crate::events::{Event, NewEvent, unknown_cursor};
use crate::money::Credits;
use crate::types::{
    Entry, EntryId, EntryKind, Grant, GrantCategory, GrantId, HoldId, KeyId, ModelPrice, SpendWindow, Timestamp,
};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use std::sync::LazyLock;
use std::time::Duration;

/// Most writes in one SQLite transaction (group commit).
const MAX_BATCH_JOBS: usize = 128;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/sqlite/001_init.sql")),
    (2, include_str!("migrations/sqlite/002_lean_entry_indexes.sql")),
    (3, include_str!("migrations/sqlite/003_min_balance.sql")),
    (4, include_str!("migrations/sqlite/004_events.sql")),
    (5, include_str!("migrations/sqlite/005_key_lifecycle.sql")),
    (6, include_str!("migrations/sqlite/006_grants.sql")),
    (7, include_str!("migrations/sqlite/007_rate_limits.sql")),
];

/// The newest schema version this library knows.
pub(crate) const LATEST_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Counts a request in the key's current window (`?2`) when neither limit is
/// used up there; a new window starts from zero. One statement: atomic.
const TAKE_REQUESTS_SQL: &str = "UPDATE creditgate_key_rate_limits SET \
     requests = CASE WHEN window_start = ?2 THEN requests + ?3 ELSE ?3 END, \
     tokens = CASE WHEN window_start = ?2 THEN tokens ELSE 0 END, window_start = ?2 \
     WHERE api_key_id = ?1 \
     AND (requests_per_minute IS NULL \
       OR CASE WHEN window_start = ?2 THEN requests ELSE 0 END + ?3 <= requests_per_minute) \
     AND (tokens_per_minute IS NULL OR CASE WHEN window_start = ?2 THEN tokens ELSE 0 END < tokens_per_minute)";

const ADD_RATE_TOKENS_SQL: &str = "UPDATE creditgate_key_rate_limits SET \
     tokens = CASE WHEN window_start = ?2 THEN tokens + ?3 ELSE ?3 END, \
     requests = CASE WHEN window_start = ?2 THEN requests ELSE 0 END, window_start = ?2 \
     WHERE api_key_id = ?1";

pub(crate) struct SqliteStore {
    pool: Pool<SqliteConnector>,
    location: String,
    group: GroupCommit,
    /// The writers' turn between processes (see [`WriterTurn`]); `None` for
    /// a memory database, or when the lock file cannot be made.
    turn: Option<WriterTurn>,
    clock: TestClock,
    /// The schema version the open found (0: the open created the schema).
    opened_from: i64,
    /// Verify answers kept until a commit or the clock changes them; `None`
    /// for a memory database (one connection: nothing to watch it with).
    verify: Option<VerifyCache>,
}

enum Target {
    Memory,
    File(String),
}

/// SQLAlchemy-style URLs: `sqlite:///relative.db`, `sqlite:////abs.db`,
/// `sqlite:///:memory:`.
fn parse_url(url: &str) -> Result<Target> {
    let rest = url.strip_prefix("sqlite:///").ok_or_else(|| {
        Error::invalid(format!("SQLite URL must look like sqlite:///path.db, got {:?}", crate::types::truncate(url)))
    })?;
    let path = rest.split('?').next().unwrap_or("");
    if path == ":memory:" {
        return Ok(Target::Memory);
    }
    if path.is_empty() || path.contains('\0') {
        return Err(Error::invalid(format!("SQLite URL has no file path: {:?}", crate::types::truncate(url))));
    }
    Ok(Target::File(path.to_string()))
}

/// A path for an error message: whole unless absurdly long.
fn shown(path: &str) -> String {
    match path.char_indices().nth(512) {
        Some((i, _)) => format!("{:?}… ({} bytes)", &path[..i], path.len()),
        None => format!("{path:?}"),
    }
}

/// Hands the write lock from one process to the next with short waits.
///
/// Writers of one file in several processes (a pre-fork server's workers)
/// otherwise meet on SQLite's lock through the busy handler, whose sleeps of
/// 0.1–1.1 ms leave the lock idle after every commit. A leader first takes
/// an exclusive POSIX record lock on `<database>-writer`, polling it every
/// 10–160 µs (a failed attempt is one cheap `fcntl`), and only then begins
/// its transaction; within a process the group commit already lets one
/// leader at a time through.
///
/// Why a POSIX record lock: it belongs to the process, so a forked child
/// never inherits it and the kernel drops it when the holder dies (a
/// `flock` would live on in a child that kept the descriptor). Why polling,
/// not a blocking wait: a stalled holder must not hang the others, so the
/// wait ends at the busy timeout and the writer goes on without its turn.
/// Correctness never rests on this file: SQLite's own lock still serializes
/// writers (a writer that is not creditgate simply meets the busy handler),
/// so a lock file that cannot be made, or is removed, only costs speed.
#[cfg(unix)]
struct WriterTurn {
    file: std::fs::File,
    wait: Duration,
}

#[cfg(unix)]
impl WriterTurn {
    fn open(db_path: &str, wait: Duration) -> Option<WriterTurn> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(format!("{db_path}-writer"))
            .ok()?;
        Some(WriterTurn { file, wait })
    }

    /// Sets (`F_WRLCK`) or clears (`F_UNLCK`) the whole-file lock without
    /// waiting; true when it is done.
    fn fcntl(&self, kind: libc::c_short) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: all-zero is a valid `flock` (plain integers); the fields
        // that matter are set below.
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = kind;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        // l_start = 0, l_len = 0: the whole file.
        // SAFETY: the descriptor is open for as long as `self` lives, and
        // `lock` is a valid `flock` for the duration of the call.
        unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_SETLK, &lock) == 0 }
    }

    /// Waits for this process's turn, up to the busy timeout; the turn ends
    /// when the guard drops. `None` when the wait ran out (or the lock
    /// failed): the writer goes on, and SQLite's lock still holds.
    fn take(&self) -> Option<TurnGuard<'_>> {
        let deadline = std::time::Instant::now() + self.wait;
        let mut pause = Duration::from_micros(10);
        loop {
            if self.fcntl(libc::F_WRLCK as libc::c_short) {
                return Some(TurnGuard(self));
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_micros(160));
        }
    }
}

#[cfg(unix)]
struct TurnGuard<'a>(&'a WriterTurn);

#[cfg(unix)]
impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        self.0.fcntl(libc::F_UNLCK as libc::c_short);
    }
}

/// Elsewhere: no turn; writers meet on SQLite's lock alone.
#[cfg(not(unix))]
struct WriterTurn;

#[cfg(not(unix))]
impl WriterTurn {
    fn open(_db_path: &str, _wait: Duration) -> Option<WriterTurn> {
        None
    }

    fn take(&self) -> Option<()> {
        None
    }
}

#[cfg(unix)]
fn create_private_file(path: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::Storage(format!("cannot create database file {}: {e}", shown(path)))),
    }
}

#[cfg(not(unix))]
fn create_private_file(_path: &str) -> Result<()> {
    Ok(())
}

/// Waits for a lock held by another connection (another process, usually)
/// for up to `timeout_ms`, polling every 0.1–1.1 ms with jitter.
///
/// SQLite's own `busy_timeout` handler backs off to 100 ms sleeps, so under
/// sustained contention from other processes a waiter keeps missing the
/// short moments when the lock is free and fails with "database is locked"
/// after the timeout although the lock was free many times. Short, jittered
/// polls give every waiting process its turn.
fn set_busy_handler(c: &Connection, timeout_ms: u32) -> rusqlite::Result<()> {
    use std::cell::Cell;
    use std::os::raw::{c_int, c_void};
    use std::time::Instant;

    thread_local! {
        /// When the current wait began (a busy handler runs on the waiting thread).
        static BUSY_SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
        static JITTER: Cell<u64> = const { Cell::new(0) };
    }

    extern "C" fn on_busy(timeout_ms: *mut c_void, attempts: c_int) -> c_int {
        let timeout = Duration::from_millis(timeout_ms as usize as u64);
        let now = Instant::now();
        let since = BUSY_SINCE
            .try_with(|s| {
                if attempts == 0 || s.get().is_none() {
                    s.set(Some(now));
                }
                s.get().unwrap_or(now)
            })
            .unwrap_or(now);
        if now.duration_since(since) >= timeout {
            return 0;
        }
        // xorshift, seeded per thread from the clock: enough to de-synchronize waiters.
        let r = JITTER
            .try_with(|j| {
                let mut x = j.get();
                if x == 0 {
                    // The clock's nanoseconds and this thread's slot address.
                    let nanos = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| u64::from(d.subsec_nanos()));
                    x = (nanos ^ (j as *const Cell<u64> as u64).rotate_left(32)) | 1;
                }
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                j.set(x);
                x
            })
            .unwrap_or(0);
        std::thread::sleep(Duration::from_micros(100 + r % 1000));
        1
    }

    // SAFETY: `handle` is this open connection's; the callback's argument is
    // the timeout itself (no pointer is dereferenced), and the callback
    // neither panics nor calls back into SQLite.
    let rc =
        unsafe { rusqlite::ffi::sqlite3_busy_handler(c.handle(), Some(on_busy), timeout_ms as usize as *mut c_void) };
    if rc != rusqlite::ffi::SQLITE_OK {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rc),
            Some("cannot set the busy handler".into()),
        ));
    }
    Ok(())
}

/// Puts the database file in WAL mode (a no-op when it already is).
///
/// Switching needs an exclusive lock, and when several connections open a
/// fresh file at the same moment (a gateway's worker processes starting
/// together) SQLite reports their lock-upgrade deadlock as SQLITE_BUSY at
/// once, without waiting in the busy handler. Retrying is safe: the switch
/// is all or nothing, and a later try finds the file in WAL mode already.
fn set_wal(c: &Connection, timeout_ms: u32) -> rusqlite::Result<()> {
    let start = std::time::Instant::now();
    loop {
        match c.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                    && start.elapsed() < Duration::from_millis(u64::from(timeout_ms)) =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            other => return other,
        }
    }
}

/// Opens connections configured for the ledger: busy handler, WAL for
/// files, `synchronous`, foreign keys, in-memory temporary storage.
struct SqliteConnector {
    /// None: an in-memory database.
    file: Option<String>,
    busy_ms: u32,
    sync: &'static str,
}

impl Connector for SqliteConnector {
    type Conn = Connection;

    fn connect(&self) -> Result<Connection> {
        let c = match &self.file {
            Some(path) => Connection::open(path)?,
            None => Connection::open_in_memory()?,
        };
        set_busy_handler(&c, self.busy_ms)?;
        if self.file.is_some() {
            set_wal(&c, self.busy_ms)?;
        }
        c.pragma_update(None, "synchronous", self.sync)?;
        c.pragma_update(None, "foreign_keys", "ON")?;
        c.pragma_update(None, "temp_store", "MEMORY")?;
        c.set_prepared_statement_cache_capacity(64);
        Ok(c)
    }

    fn is_broken(&self, _conn: &mut Connection) -> bool {
        // Transactions end with their guard (commit or rollback on drop).
        false
    }
}

impl SqliteStore {
    /// Opens the ledger and applies the migrations up to version `up_to`;
    /// `None` only reads the schema version: nothing is created or changed
    /// (a missing file is `NotFound`).
    pub(crate) fn open(url: &str, config: &Config, up_to: Option<i64>) -> Result<SqliteStore> {
        let busy_ms = config.busy_timeout_ms;
        let sync = match config.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        let (file, size, location) = match parse_url(url)? {
            // A memory database lives only as long as its one connection.
            Target::Memory => (None, 1, ":memory:".to_string()),
            Target::File(path) => {
                if up_to.is_some() {
                    create_private_file(&path)?;
                } else if !std::path::Path::new(&path).exists() {
                    return Err(Error::NotFound(format!("no SQLite ledger at {}", shown(&path))));
                }
                let shown = std::fs::canonicalize(&path).map(|p| p.display().to_string()).unwrap_or(path.clone());
                (Some(path), config.pool_size, shown)
            }
        };
        let turn = file.as_deref().and_then(|path| WriterTurn::open(path, Duration::from_millis(u64::from(busy_ms))));
        let connector = SqliteConnector { file, busy_ms, sync };
        // Fail at once on a bad file, with the reason.
        let first = connector
            .connect()
            .map_err(|e| Error::Storage(format!("cannot open SQLite database {}: {e}", shown(&location))))?;
        let verify = match connector.file {
            Some(_) => Some(VerifyCache::new(connector.connect()?)),
            None => None,
        };
        let pool = Pool::new(connector, size, Duration::from_millis(u64::from(busy_ms).max(1000) + 5_000));
        // Kept: for a memory database it is the database.
        drop(pool.adopt(first));
        let mut store = SqliteStore {
            pool,
            location,
            group: GroupCommit::new(MAX_BATCH_JOBS),
            turn,
            clock: config.clock.clone(),
            opened_from: 0,
            verify,
        };
        store.opened_from = match up_to {
            Some(version) => store.migrate(version)?.0,
            None => store.applied_versions()?.last().copied().unwrap_or(0),
        };
        Ok(store)
    }

    pub(crate) fn location(&self) -> String {
        // An absolute path keeps its leading '/', giving SQLAlchemy's four slashes.
        format!("sqlite:///{}", self.location)
    }

    /// Runs `f` in a write transaction shared with concurrent writers
    /// (group commit); returns once that transaction is durable.
    pub(crate) fn write<R: Send>(&self, f: impl FnMut(&mut dyn Tx) -> Result<R> + Send) -> Result<R> {
        self.group.write(f, &|slots| self.run_batch(slots))
    }

    /// One transaction for a batch of jobs, each in its own savepoint so a
    /// failing job rolls back only its own writes.
    fn run_batch(&self, slots: &mut [&mut Slot]) -> Result<()> {
        let mut conn = self.pool.get()?;
        let _turn = self.turn.as_ref().and_then(WriterTurn::take);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let [only] = slots {
            // A lone job needs no savepoint: if it fails, dropping `tx` rolls back.
            if !only.run(&mut SqliteTx { c: &tx, clock: &self.clock }) {
                return Ok(());
            }
        } else {
            for slot in slots.iter_mut() {
                tx.prepare_cached("SAVEPOINT creditgate_job")?.execute([])?;
                if !slot.run(&mut SqliteTx { c: &tx, clock: &self.clock }) {
                    tx.prepare_cached("ROLLBACK TO creditgate_job")?.execute([])?;
                }
                tx.prepare_cached("RELEASE creditgate_job")?.execute([])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Copies the ledger into a new file at `dest` with SQLite's online
    /// backup API: one consistent snapshot, taken while writers go on (WAL),
    /// created 0600 and checked with `quick_check`. Returns its size.
    pub(crate) fn backup(&self, dest: &str) -> Result<u64> {
        // The connection first: a busy pool must not leave an empty file behind.
        let conn = self.pool.get()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(dest).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::invalid(format!("backup destination {} exists; it is never overwritten", shown(dest)))
                } else {
                    Error::Storage(format!("cannot create backup file {}: {e}", shown(dest)))
                }
            })?;
        }
        #[cfg(not(unix))]
        if std::path::Path::new(dest).exists() {
            return Err(Error::invalid(format!("backup destination {} exists; it is never overwritten", shown(dest))));
        }
        let copy = || -> rusqlite::Result<String> {
            let mut out = Connection::open(dest)?;
            // All pages in one step: one read snapshot, never restarted.
            rusqlite::backup::Backup::new(&conn, &mut out)?.step(-1)?;
            out.query_row("PRAGMA quick_check", [], |r| r.get(0))
        };
        match copy() {
            Ok(check) if check == "ok" => {}
            outcome => {
                let _ = std::fs::remove_file(dest);
                return Err(Error::Storage(match outcome {
                    Ok(check) => format!("backup failed its integrity check: {check}"),
                    Err(e) => format!("backup to {} failed: {e}", shown(dest)),
                }));
            }
        }
        std::fs::metadata(dest).map(|m| m.len()).map_err(|e| Error::Storage(format!("backup {}: {e}", shown(dest))))
    }

    pub(crate) fn read<R>(&self, mut f: impl FnMut(&mut dyn Tx) -> Result<R>) -> Result<R> {
        let mut conn = self.pool.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let out = f(&mut SqliteTx { c: &tx, clock: &self.clock })?;
        tx.commit()?;
        Ok(out)
    }

    pub(crate) fn peek<R>(&self, mut f: impl FnMut(&mut dyn Tx) -> Result<R>) -> Result<R> {
        let conn = self.pool.get()?;
        f(&mut SqliteTx { c: &conn, clock: &self.clock })
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The verify lookup ([`Tx::key_with_available`]): a kept answer while
    /// nothing can have changed it (see [`VerifyCache`]), else one statement.
    pub(crate) fn key_with_available(&self, hash: &str, only: Option<HashKind>) -> Result<Option<KeyStanding>> {
        let Some(cache) = &self.verify else {
            return self.peek(|tx| tx.key_with_available(hash, only));
        };
        let now = self.clock.now();
        let (version, kept) = cache.get(hash, only, now)?;
        if kept.is_some() {
            return Ok(kept);
        }
        let conn = self.pool.get()?;
        let mut tx = SqliteTx { c: &conn, clock: &self.clock };
        let found = tx.key_with_available(hash, only)?;
        if let Some(standing) = &found {
            let until = tx.fresh_until(&standing.key, now)?;
            cache.put(version, hash, only, standing.clone(), until);
        }
        Ok(found)
    }

    /// Applies the pending migrations up to version `up_to` under the write
    /// lock, so concurrent openers apply each exactly once. Returns the
    /// schema version before and after (0 before: there was no schema). A
    /// schema newer than this library is left alone: the caller refuses it.
    pub(crate) fn migrate(&self, up_to: i64) -> Result<(i64, i64)> {
        let mut conn = self.pool.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS creditgate_schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )?;
        let applied = recorded_versions(&tx)?;
        let current = applied.last().copied().unwrap_or(0);
        if current > LATEST_VERSION {
            return Ok((current, current));
        }
        // Every migration not recorded, in order (not only those above the
        // highest recorded one).
        let mut after = current;
        for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 <= up_to && !applied.contains(&m.0)) {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO creditgate_schema_version (version, applied_at) VALUES (?1, ?2)",
                params![version, Timestamp::now().0],
            )?;
            after = after.max(*version);
        }
        tx.commit()?;
        Ok((current, after))
    }

    /// The schema versions recorded as applied, ascending; a read (empty
    /// when there is no schema yet).
    pub(crate) fn applied_versions(&self) -> Result<Vec<i64>> {
        let conn = self.pool.get()?;
        recorded_versions(&conn)
    }

    pub(crate) fn opened_from(&self) -> i64 {
        self.opened_from
    }
}

/// The versions in `creditgate_schema_version`, ascending (none without the table).
fn recorded_versions(c: &Connection) -> Result<Vec<i64>> {
    let exists: bool = c.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'creditgate_schema_version')",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(Vec::new());
    }
    let versions = c
        .prepare("SELECT version FROM creditgate_schema_version ORDER BY version")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(versions)
}

struct SqliteTx<'c> {
    c: &'c Connection,
    clock: &'c TestClock,
}

const ENTRY_COLS: &str = "id, seq, user_id, kind, amount, balance_after, idempotency_key, reference, api_key_id, \
     input_tokens, output_tokens, model, amount_minor, currency, metadata, created_at";
const KEY_COLS: &str = "k.id, k.user_id, k.name, k.prefix, k.legacy, k.created_at, k.last_used_at, k.revoked_at, \
     k.expires_at, k.disabled_at, k.rotated_to, k.spend_limit, k.spend_window, s.window_end, s.spent";
/// Keys with their spend counter.
const KEY_FROM: &str = "creditgate_api_keys k LEFT JOIN creditgate_key_spend s ON s.api_key_id = k.id";
/// The key's spend cap left: limit − spent in the window − its holds (NULL
/// without a cap); `?2` is now.
const KEY_REMAINING_SQL: &str = "CASE WHEN k.spend_limit IS NULL THEN NULL ELSE k.spend_limit \
     - (CASE WHEN s.window_end > ?2 THEN s.spent ELSE 0 END) \
     - (SELECT COALESCE(SUM(kh.amount), 0) FROM creditgate_holds kh \
        WHERE kh.api_key_id = k.id AND kh.status = 'active' AND kh.expires_at > ?2) END";
const HOLD_COLS: &str = "id, user_id, api_key_id, amount, model, request_id, status, expires_at";
const GRANT_COLS: &str =
    "id, user_id, entry_id, category, priority, amount, remaining, expires_at, created_at, payment_id";
/// Grants past their expiry at ?2, not yet applied.
const DUE_SQL: &str = "(SELECT COALESCE(SUM(remaining), 0) FROM creditgate_grants WHERE user_id = ?1 AND remaining > 0 \
     AND expires_at <= ?2)";
const HELD_SQL: &str = "(SELECT COALESCE(SUM(amount), 0) FROM creditgate_holds WHERE user_id = ?1 AND status = 'active' AND expires_at > ?2)";

fn corrupt(what: &str, e: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("bad {what} in database: {e}").into(),
    )
}

fn uuid_col(r: &Row, i: usize) -> rusqlite::Result<uuid::Uuid> {
    let s: String = r.get(i)?;
    uuid::Uuid::try_parse(&s).map_err(|e| corrupt("uuid", e))
}

fn opt_uuid_col(r: &Row, i: usize) -> rusqlite::Result<Option<uuid::Uuid>> {
    let s: Option<String> = r.get(i)?;
    s.map(|s| uuid::Uuid::try_parse(&s).map_err(|e| corrupt("uuid", e))).transpose()
}

fn entry_from_row(r: &Row) -> rusqlite::Result<Entry> {
    let kind: String = r.get(3)?;
    let metadata: Option<String> = r.get(14)?;
    let metadata = metadata
        .map(|m| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&m).map_err(|e| corrupt("metadata", e))
        })
        .transpose()?;
    Ok(Entry {
        id: EntryId(uuid_col(r, 0)?),
        seq: r.get(1)?,
        user_id: r.get(2)?,
        kind: EntryKind::parse(&kind).map_err(|e| corrupt("kind", e))?,
        amount: Credits::from_micros(r.get(4)?),
        balance_after: Credits::from_micros(r.get(5)?),
        idempotency_key: r.get(6)?,
        reference: r.get(7)?,
        api_key_id: opt_uuid_col(r, 8)?.map(KeyId),
        input_tokens: r.get(9)?,
        output_tokens: r.get(10)?,
        model: r.get(11)?,
        amount_minor: r.get(12)?,
        currency: r.get(13)?,
        metadata,
        created_at: Timestamp(r.get(15)?),
        replayed: false,
    })
}

fn key_from_row(r: &Row) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        id: KeyId(uuid_col(r, 0)?),
        user_id: r.get(1)?,
        name: r.get(2)?,
        prefix: r.get(3)?,
        legacy: r.get(4)?,
        created_at: Timestamp(r.get(5)?),
        last_used_at: r.get::<_, Option<i64>>(6)?.map(Timestamp),
        revoked_at: r.get::<_, Option<i64>>(7)?.map(Timestamp),
        expires_at: r.get::<_, Option<i64>>(8)?.map(Timestamp),
        disabled_at: r.get::<_, Option<i64>>(9)?.map(Timestamp),
        rotated_to: opt_uuid_col(r, 10)?.map(KeyId),
        spend_limit: r.get::<_, Option<i64>>(11)?.map(Credits::from_micros),
        spend_window: r
            .get::<_, Option<String>>(12)?
            .map(|w| SpendWindow::parse(&w).map_err(|e| corrupt("spend window", e)))
            .transpose()?,
        spend: match (r.get::<_, Option<i64>>(13)?, r.get::<_, Option<i64>>(14)?) {
            (Some(end), Some(spent)) => Some((Timestamp(end), Credits::from_micros(spent))),
            _ => None,
        },
    })
}

fn hold_from_row(r: &Row) -> rusqlite::Result<HoldRow> {
    let status: String = r.get(6)?;
    Ok(HoldRow {
        id: HoldId(uuid_col(r, 0)?),
        user_id: r.get(1)?,
        api_key_id: KeyId(uuid_col(r, 2)?),
        amount: Credits::from_micros(r.get(3)?),
        model: r.get(4)?,
        request_id: r.get(5)?,
        status: HoldStatus::parse(&status).map_err(|e| corrupt("hold status", e))?,
        expires_at: Timestamp(r.get(7)?),
    })
}

fn grant_from_row(r: &Row) -> rusqlite::Result<Grant> {
    let category: String = r.get(3)?;
    Ok(Grant {
        grant_id: GrantId(r.get(0)?),
        user_id: r.get(1)?,
        source_entry_id: opt_uuid_col(r, 2)?.map(EntryId),
        category: GrantCategory::parse(&category).map_err(|e| corrupt("grant category", e))?,
        priority: r.get(4)?,
        amount: Credits::from_micros(r.get(5)?),
        remaining: Credits::from_micros(r.get(6)?),
        expires_at: r.get::<_, Option<i64>>(7)?.map(Timestamp),
        created_at: Timestamp(r.get(8)?),
        payment_id: r.get(9)?,
    })
}

impl SqliteTx<'_> {
    fn one_entry(&self, sql_where: &str, p: impl rusqlite::Params) -> Result<Option<Entry>> {
        let sql = format!("SELECT {ENTRY_COLS} FROM creditgate_entries WHERE {sql_where}");
        Ok(self.c.prepare_cached(&sql)?.query_row(p, entry_from_row).optional()?)
    }

    fn one_key(&self, sql_where: &str, p: impl rusqlite::Params) -> Result<Option<KeyRow>> {
        let sql = format!("SELECT {KEY_COLS} FROM {KEY_FROM} WHERE {sql_where}");
        Ok(self.c.prepare_cached(&sql)?.query_row(p, key_from_row).optional()?)
    }

    fn one_hold(&self, sql_where: &str, p: impl rusqlite::Params) -> Result<Option<HoldRow>> {
        let sql = format!("SELECT {HOLD_COLS} FROM creditgate_holds WHERE {sql_where}");
        Ok(self.c.prepare_cached(&sql)?.query_row(p, hold_from_row).optional()?)
    }

    fn count(&self, sql: &str, p: impl rusqlite::Params) -> Result<i64> {
        Ok(self.c.prepare_cached(sql)?.query_row(p, |r| r.get(0))?)
    }

    /// The first instant after `now` at which time alone changes `k`'s
    /// verify answer: the key expires, its cap's window ends, or a hold or a
    /// grant of its account (or a hold of the key) expires. For [`VerifyCache`].
    fn fresh_until(&self, k: &KeyRow, now: Timestamp) -> Result<Timestamp> {
        let next_expiry = self.count(
            "SELECT MIN(\
             COALESCE((SELECT MIN(expires_at) FROM creditgate_holds \
               WHERE user_id = ?1 AND status = 'active' AND expires_at > ?3), ?4), \
             COALESCE((SELECT MIN(expires_at) FROM creditgate_holds \
               WHERE api_key_id = ?2 AND status = 'active' AND expires_at > ?3), ?4), \
             COALESCE((SELECT MIN(expires_at) FROM creditgate_grants \
               WHERE user_id = ?1 AND remaining > 0 AND expires_at > ?3), ?4))",
            params![k.user_id, k.id.to_string(), now.0, i64::MAX],
        )?;
        let window_end = k.spend_limit.and(k.spend.map(|(end, _)| end));
        Ok([k.expires_at, window_end].into_iter().flatten().filter(|t| *t > now).fold(Timestamp(next_expiry), Ord::min))
    }
}

impl Tx for SqliteTx<'_> {
    fn now(&mut self) -> Result<Timestamp> {
        Ok(self.clock.now())
    }

    fn ensure_account(&mut self, user: &str, now: Timestamp) -> Result<()> {
        self.c
            .prepare_cached("INSERT INTO creditgate_accounts (user_id, created_at) VALUES (?1, ?2) ON CONFLICT (user_id) DO NOTHING")?
            .execute(params![user, now.0])?;
        Ok(())
    }

    fn account(&mut self, user: &str) -> Result<Option<AccountRow>> {
        let row = self
            .c
            .prepare_cached(
                "SELECT balance, first_key_issued, created_at, min_balance FROM creditgate_accounts WHERE user_id = ?1",
            )?
            .query_row([user], |r| {
                Ok(AccountRow {
                    balance: Credits::from_micros(r.get(0)?),
                    first_key_issued: r.get(1)?,
                    created_at: Timestamp(r.get(2)?),
                    min_balance: Credits::from_micros(r.get(3)?),
                })
            })
            .optional()?;
        Ok(row)
    }

    fn held(&mut self, user: &str, now: Timestamp) -> Result<Credits> {
        Ok(Credits::from_micros(self.count(&format!("SELECT {HELD_SQL}"), params![user, now.0])?))
    }

    fn apply(&mut self, user: &str, amount: Credits, strict: bool, now: Timestamp) -> Result<Option<Applied>> {
        // SQLite's RETURNING sees only the new row (a FROM table may not
        // appear in it), so the row before is read first; the write lock of
        // the Immediate transaction keeps it current.
        let Some((balance_before, seq_before)) = self
            .c
            .prepare_cached("SELECT balance, last_seq FROM creditgate_accounts WHERE user_id = ?1")?
            .query_row([user], |r| Ok((Credits::from_micros(r.get(0)?), r.get(1)?)))
            .optional()?
        else {
            return Ok(None);
        };
        // Bounds keep SQLite from turning an overflowing sum into a float.
        let a = amount.micros();
        let (lo, hi) = if a >= 0 { (i64::MIN, i64::MAX - a) } else { (i64::MIN - a, i64::MAX) };
        let sql = format!(
            "UPDATE creditgate_accounts SET balance = balance + ?3, last_seq = last_seq + 1 \
             WHERE user_id = ?1 AND balance BETWEEN ?4 AND ?5 AND (?6 = 0 OR balance + ?3 >= {HELD_SQL} + min_balance) \
             RETURNING balance, last_seq"
        );
        let row = self
            .c
            .prepare_cached(&sql)?
            .query_row(params![user, now.0, a, lo, hi, strict], |r| Ok((Credits::from_micros(r.get(0)?), r.get(1)?)))
            .optional()?;
        Ok(row.map(|(balance_after, seq)| Applied { balance_before, balance_after, seq_before, seq }))
    }

    fn insert_entry(&mut self, e: &Entry, global_key: Option<&str>) -> Result<()> {
        let metadata = e.metadata.as_ref().map(|m| serde_json::Value::Object(m.clone()).to_string());
        self.c
            .prepare_cached(
                "INSERT INTO creditgate_entries (id, seq, user_id, kind, amount, balance_after, idempotency_key, global_key, \
                 reference, api_key_id, input_tokens, output_tokens, model, amount_minor, currency, metadata, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
            )?
            .execute(params![
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
            ])?;
        Ok(())
    }

    fn entry_by_key(&mut self, user: &str, key: &str) -> Result<Option<Entry>> {
        self.one_entry("user_id = ?1 AND idempotency_key = ?2", params![user, key])
    }

    fn entry_by_global_key(&mut self, key: &str) -> Result<Option<Entry>> {
        self.one_entry("global_key = ?1", [key])
    }

    fn entry_by_id(&mut self, id: EntryId) -> Result<Option<Entry>> {
        self.one_entry("id = ?1", [id.to_string()])
    }

    fn reversed_total(&mut self, payment_id: &str) -> Result<(i64, Credits)> {
        let (minor, micros): (i64, i64) = self
            .c
            .prepare_cached(
                "SELECT COALESCE(SUM(r.amount_minor), 0), COALESCE(SUM(-r.amount), 0) FROM creditgate_entries r \
                 WHERE r.reference = ?1 AND r.kind = 'reversal' AND NOT EXISTS (SELECT 1 FROM creditgate_entries i \
                 WHERE i.global_key = 'reinstatement:' || substr(r.global_key, 10))",
            )?
            .query_row([payment_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((minor, Credits::from_micros(micros)))
    }

    fn entries(&mut self, user: &str, before_seq: Option<i64>, limit: u32) -> Result<Vec<Entry>> {
        let sql = format!(
            "SELECT {ENTRY_COLS} FROM creditgate_entries WHERE user_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
        );
        let mut stmt = self.c.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![user, before_seq.unwrap_or(i64::MAX), limit], entry_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn lifetime(&mut self, user: &str) -> Result<(Credits, Credits)> {
        // Summed in i128 here: SQLite's SUM fails on i64 overflow of gross flows.
        let mut stmt = self.c.prepare_cached(
            "SELECT kind, amount FROM creditgate_entries WHERE user_id = ?1 AND kind IN ('purchase', 'usage', 'deduct')",
        )?;
        let mut rows = stmt.query([user])?;
        let (mut purchased, mut used) = (0i128, 0i128);
        while let Some(r) = rows.next()? {
            let amount = i128::from(r.get::<_, i64>(1)?);
            if r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)? == "purchase" {
                purchased += amount;
            } else {
                used -= amount;
            }
        }
        let clamp = |v: i128| Credits::from_micros(i64::try_from(v).unwrap_or(i64::MAX));
        Ok((clamp(purchased), clamp(used)))
    }

    fn key_by_hash(&mut self, hash: &str, only: Option<HashKind>) -> Result<Option<KeyRow>> {
        match only {
            Some(kind) => self.one_key("key_hash = ?1 AND hash_kind = ?2", params![hash, kind.as_str()]),
            None => self.one_key("key_hash = ?1", [hash]),
        }
    }

    fn key_with_available(&mut self, hash: &str, only: Option<HashKind>) -> Result<Option<KeyStanding>> {
        // One statement: the key (not disabled, not expired), its account's
        // available credits, what its cap leaves and its rate counts. Built
        // once: formatting it per call showed in the verify profile.
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {KEY_COLS}, \
             COALESCE(a.balance - a.min_balance, 0) - (SELECT COALESCE(SUM(h.amount), 0) FROM creditgate_holds h \
             WHERE h.user_id = k.user_id AND h.status = 'active' AND h.expires_at > ?2) \
             - (SELECT COALESCE(SUM(g.remaining), 0) FROM creditgate_grants g \
             WHERE g.user_id = k.user_id AND g.remaining > 0 AND g.expires_at <= ?2), {KEY_REMAINING_SQL}, \
             COALESCE({RATE_ROW_HAS_LIMITS}, FALSE), r.requests_per_minute, r.tokens_per_minute, r.window_start, r.tokens \
             FROM {KEY_FROM} LEFT JOIN creditgate_accounts a ON a.user_id = k.user_id \
             LEFT JOIN creditgate_key_rate_limits r ON r.api_key_id = k.id \
             WHERE k.key_hash = ?1 AND (?3 IS NULL OR k.hash_kind = ?3) \
             AND k.disabled_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > ?2)"
            )
        });
        let row = self
            .c
            .prepare_cached(&SQL)?
            .query_row(params![hash, self.now()?.0, only.map(HashKind::as_str)], |r| {
                Ok(KeyStanding {
                    key: key_from_row(r)?,
                    available: Credits::from_micros(r.get(15)?),
                    key_remaining: r.get::<_, Option<i64>>(16)?.map(Credits::from_micros),
                    rate: if r.get(17)? {
                        Some(RateCounts {
                            requests_per_minute: r.get(18)?,
                            tokens_per_minute: r.get(19)?,
                            window: r.get(20)?,
                            tokens: r.get(21)?,
                        })
                    } else {
                        None
                    },
                })
            })
            .optional()?;
        Ok(row)
    }

    fn key_held(&mut self, id: KeyId, now: Timestamp) -> Result<Credits> {
        Ok(Credits::from_micros(self.count(
            "SELECT COALESCE(SUM(amount), 0) FROM creditgate_holds WHERE api_key_id = ?1 AND status = 'active' AND expires_at > ?2",
            params![id.to_string(), now.0],
        )?))
    }

    fn set_key_expiry(&mut self, id: KeyId, expires_at: Option<Timestamp>) -> Result<()> {
        self.c
            .prepare_cached("UPDATE creditgate_api_keys SET expires_at = ?2 WHERE id = ?1")?
            .execute(params![id.to_string(), expires_at.map(|t| t.0)])?;
        Ok(())
    }

    fn set_key_disabled(&mut self, id: KeyId, at: Option<Timestamp>) -> Result<bool> {
        let n = match at {
            Some(t) => self
                .c
                .prepare_cached(
                    "UPDATE creditgate_api_keys SET disabled_at = ?2 WHERE id = ?1 AND disabled_at IS NULL",
                )?
                .execute(params![id.to_string(), t.0])?,
            None => self
                .c
                .prepare_cached(
                    "UPDATE creditgate_api_keys SET disabled_at = NULL WHERE id = ?1 AND disabled_at IS NOT NULL",
                )?
                .execute([id.to_string()])?,
        };
        Ok(n == 1)
    }

    fn set_key_rotated(&mut self, id: KeyId, to: KeyId, ends_at: Timestamp) -> Result<()> {
        self.c
            .prepare_cached(
                "UPDATE creditgate_api_keys SET rotated_to = ?2, \
                 expires_at = CASE WHEN expires_at IS NULL OR expires_at > ?3 THEN ?3 ELSE expires_at END WHERE id = ?1",
            )?
            .execute(params![id.to_string(), to.to_string(), ends_at.0])?;
        Ok(())
    }

    fn set_key_limit(&mut self, id: KeyId, limit: Option<(Credits, SpendWindow)>) -> Result<()> {
        self.c
            .prepare_cached("UPDATE creditgate_api_keys SET spend_limit = ?2, spend_window = ?3 WHERE id = ?1")?
            .execute(params![id.to_string(), limit.map(|l| l.0.micros()), limit.map(|l| l.1.as_str())])?;
        Ok(())
    }

    fn put_key_spend(&mut self, id: KeyId, start: Timestamp, end: Timestamp, spent: Credits) -> Result<()> {
        self.c
            .prepare_cached(
                "INSERT INTO creditgate_key_spend (api_key_id, window_start, window_end, spent) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (api_key_id) DO UPDATE SET window_start = excluded.window_start, \
                 window_end = excluded.window_end, spent = excluded.spent",
            )?
            .execute(params![id.to_string(), start.0, end.0, spent.micros()])?;
        Ok(())
    }

    fn add_key_spend(&mut self, id: KeyId, start: Timestamp, end: Timestamp, amount: Credits) -> Result<()> {
        // The CASEs read the old row: a later window restarts the counter,
        // the same one adds (saturating), an earlier one leaves it.
        self.c
            .prepare_cached(
                "INSERT INTO creditgate_key_spend (api_key_id, window_start, window_end, spent) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (api_key_id) DO UPDATE SET \
                 spent = CASE WHEN window_start < excluded.window_start THEN excluded.spent \
                              WHEN window_start > excluded.window_start THEN spent \
                              WHEN spent > 9223372036854775807 - excluded.spent THEN 9223372036854775807 \
                              ELSE spent + excluded.spent END, \
                 window_end = CASE WHEN window_start < excluded.window_start THEN excluded.window_end ELSE window_end END, \
                 window_start = MAX(window_start, excluded.window_start)",
            )?
            .execute(params![id.to_string(), start.0, end.0, amount.micros()])?;
        Ok(())
    }

    fn key_usage_since(&mut self, user: &str, id: KeyId, since: Timestamp) -> Result<Credits> {
        // Summed in i128: a lifetime of usage may exceed i64 (then saturates).
        let mut stmt = self.c.prepare_cached(
            "SELECT amount FROM creditgate_entries WHERE user_id = ?1 AND api_key_id = ?2 AND kind = 'usage' AND created_at >= ?3",
        )?;
        let mut rows = stmt.query(params![user, id.to_string(), since.0])?;
        let mut used = 0i128;
        while let Some(r) = rows.next()? {
            used -= i128::from(r.get::<_, i64>(0)?);
        }
        Ok(Credits::from_micros(i64::try_from(used.max(0)).unwrap_or(i64::MAX)))
    }

    fn key_by_id(&mut self, id: KeyId) -> Result<Option<KeyRow>> {
        self.one_key("id = ?1", [id.to_string()])
    }

    fn active_keys(&mut self, user: &str, now: Timestamp) -> Result<u32> {
        let n = self.count(
            "SELECT COUNT(*) FROM creditgate_api_keys WHERE user_id = ?1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > ?2)",
            params![user, now.0],
        )?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    fn insert_key(&mut self, k: &KeyRow, hash: &str, kind: HashKind) -> Result<()> {
        self.c
            .prepare_cached(
                "INSERT INTO creditgate_api_keys (id, user_id, name, prefix, key_hash, hash_kind, legacy, created_at, \
                 expires_at, spend_limit, spend_window) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
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
            ])?;
        Ok(())
    }

    fn set_first_key_issued(&mut self, user: &str) -> Result<()> {
        self.c
            .prepare_cached("UPDATE creditgate_accounts SET first_key_issued = 1 WHERE user_id = ?1")?
            .execute([user])?;
        Ok(())
    }

    fn set_min_balance(&mut self, user: &str, floor: Credits) -> Result<()> {
        self.c
            .prepare_cached("UPDATE creditgate_accounts SET min_balance = ?2 WHERE user_id = ?1")?
            .execute(params![user, floor.micros()])?;
        Ok(())
    }

    fn revoke_key(&mut self, id: KeyId, now: Timestamp) -> Result<bool> {
        let n = self
            .c
            .prepare_cached("UPDATE creditgate_api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")?
            .execute(params![id.to_string(), now.0])?;
        Ok(n == 1)
    }

    fn keys(&mut self, user: &str, limit: u32) -> Result<Vec<KeyRow>> {
        let sql = format!(
            "SELECT {KEY_COLS} FROM {KEY_FROM} WHERE k.user_id = ?1 ORDER BY k.created_at DESC, k.id DESC LIMIT ?2"
        );
        let mut stmt = self.c.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![user, limit], key_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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
        self.c
            .prepare_cached(
                "INSERT INTO creditgate_key_attempts (user_id, day, attempts, successes) VALUES (?1, ?2, 1, ?3) \
                 ON CONFLICT (user_id, day) DO UPDATE SET attempts = attempts + 1, successes = successes + excluded.successes",
            )?
            .execute(params![user, day, i64::from(success)])?;
        Ok(())
    }

    fn expire_holds(&mut self, user: &str, now: Timestamp) -> Result<u64> {
        let n = self
            .c
            .prepare_cached("UPDATE creditgate_holds SET status = 'expired' WHERE user_id = ?1 AND status = 'active' AND expires_at <= ?2")?
            .execute(params![user, now.0])?;
        Ok(n as u64)
    }

    fn active_holds(&mut self, user: &str, now: Timestamp) -> Result<u32> {
        let n = self.count(
            "SELECT COUNT(*) FROM creditgate_holds WHERE user_id = ?1 AND status = 'active' AND expires_at > ?2",
            params![user, now.0],
        )?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    fn insert_hold_if_available(&mut self, h: &HoldRow, now: Timestamp) -> Result<bool> {
        let sql = format!(
            "INSERT INTO creditgate_holds (id, user_id, api_key_id, amount, model, request_id, status, created_at, expires_at) \
             SELECT ?3, ?1, ?4, ?5, ?6, ?7, 'active', ?2, ?8 FROM creditgate_accounts \
             WHERE user_id = ?1 AND balance - {HELD_SQL} - min_balance >= ?5 \
             AND NOT EXISTS (SELECT 1 FROM {KEY_FROM} WHERE k.id = ?4 AND ({KEY_REMAINING_SQL}) < ?5)"
        );
        let n = self.c.prepare_cached(&sql)?.execute(params![
            h.user_id,
            now.0,
            h.id.to_string(),
            h.api_key_id.to_string(),
            h.amount.micros(),
            h.model,
            h.request_id,
            h.expires_at.0,
        ])?;
        Ok(n == 1)
    }

    fn hold(&mut self, id: HoldId) -> Result<Option<HoldRow>> {
        self.one_hold("id = ?1", [id.to_string()])
    }

    fn hold_by_request(&mut self, user: &str, request_id: &str) -> Result<Option<HoldRow>> {
        self.one_hold("user_id = ?1 AND request_id = ?2", params![user, request_id])
    }

    fn set_hold_status(
        &mut self,
        id: HoldId,
        from: HoldStatus,
        to: HoldStatus,
        entry: Option<EntryId>,
    ) -> Result<bool> {
        let n = self
            .c
            .prepare_cached("UPDATE creditgate_holds SET status = ?3, entry_id = COALESCE(?4, entry_id) WHERE id = ?1 AND status = ?2")?
            .execute(params![id.to_string(), from.as_str(), to.as_str(), entry.map(|e| e.to_string())])?;
        Ok(n == 1)
    }

    fn price(&mut self, model: &str) -> Result<Option<ModelPrice>> {
        Ok(self
            .c
            .prepare_cached("SELECT input_per_1k, output_per_1k FROM creditgate_model_prices WHERE model = ?1")?
            .query_row([model], |r| {
                Ok(ModelPrice {
                    input_per_1k: Credits::from_micros(r.get(0)?),
                    output_per_1k: Credits::from_micros(r.get(1)?),
                })
            })
            .optional()?)
    }

    fn set_price(&mut self, model: &str, p: ModelPrice, now: Timestamp) -> Result<()> {
        self.c
            .prepare_cached(
                "INSERT INTO creditgate_model_prices (model, input_per_1k, output_per_1k, updated_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (model) DO UPDATE SET input_per_1k = excluded.input_per_1k, \
                 output_per_1k = excluded.output_per_1k, updated_at = excluded.updated_at",
            )?
            .execute(params![model, p.input_per_1k.micros(), p.output_per_1k.micros(), now.0])?;
        Ok(())
    }

    fn prices(&mut self) -> Result<Vec<(String, ModelPrice)>> {
        let mut stmt = self
            .c
            .prepare_cached("SELECT model, input_per_1k, output_per_1k FROM creditgate_model_prices ORDER BY model")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                ModelPrice {
                    input_per_1k: Credits::from_micros(r.get(1)?),
                    output_per_1k: Credits::from_micros(r.get(2)?),
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn scan_accounts(&mut self, f: &mut dyn FnMut(&str, i64, i64)) -> Result<()> {
        let mut stmt =
            self.c.prepare_cached("SELECT user_id, balance, last_seq FROM creditgate_accounts ORDER BY user_id")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            f(r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?, r.get(1)?, r.get(2)?);
        }
        Ok(())
    }

    fn scan_entries(&mut self, f: &mut dyn FnMut(&str, i64, i64, i64)) -> Result<()> {
        let mut stmt = self.c.prepare_cached(
            "SELECT user_id, seq, amount, balance_after FROM creditgate_entries ORDER BY user_id, seq",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            f(r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?, r.get(1)?, r.get(2)?, r.get(3)?);
        }
        Ok(())
    }

    fn figures(&mut self) -> Result<LedgerFigures> {
        let mut fig = LedgerFigures::default();
        let q = |c: &Connection, sql: &str| -> Result<i64> { Ok(c.prepare_cached(sql)?.query_row([], |r| r.get(0))?) };
        let c = self.c;
        fig.users = q(
            c,
            "SELECT COUNT(*) FROM (SELECT user_id FROM creditgate_entries UNION SELECT user_id FROM creditgate_api_keys \
                          UNION SELECT user_id FROM creditgate_key_attempts)",
        )? as u64;
        fig.paying_users =
            q(c, "SELECT COUNT(DISTINCT user_id) FROM creditgate_entries WHERE kind = 'purchase'")? as u64;
        fig.users_attempted_key = q(c, "SELECT COUNT(DISTINCT user_id) FROM creditgate_key_attempts")? as u64;
        fig.paying_users_attempted_key = q(
            c,
            "SELECT COUNT(DISTINCT user_id) FROM creditgate_key_attempts WHERE user_id IN \
             (SELECT user_id FROM creditgate_entries WHERE kind = 'purchase')",
        )? as u64;
        fig.key_generation_attempts = q(c, "SELECT COALESCE(SUM(attempts), 0) FROM creditgate_key_attempts")? as u64;
        fig.key_generation_successes = q(c, "SELECT COALESCE(SUM(successes), 0) FROM creditgate_key_attempts")? as u64;
        // Summed in i128 here: SQLite's SUM fails on i64 overflow of gross flows.
        let mut stmt = c.prepare_cached(
            "SELECT kind, amount, COALESCE(amount_minor, 0), COALESCE(currency, 'USD') FROM creditgate_entries \
             WHERE kind IN ('purchase', 'reversal', 'reinstatement', 'usage', 'deduct')",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let amount = i128::from(r.get::<_, i64>(1)?);
            let minor = i128::from(r.get::<_, i64>(2)?);
            let sign = match r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)? {
                "purchase" => {
                    fig.credits_purchased_micros += amount;
                    1
                }
                "reversal" => -1,
                "reinstatement" => 1,
                _ => {
                    fig.credits_used_micros -= amount;
                    continue;
                }
            };
            *fig.revenue_minor.entry(r.get(3)?).or_insert(0) += sign * minor;
        }
        Ok(fig)
    }

    fn payment_problems(&mut self) -> Result<Vec<(String, String, String)>> {
        let mut stmt = self.c.prepare_cached(super::PAYMENT_PROBLEMS_SQL)?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn set_rate_limit(&mut self, key: KeyId, rpm: Option<i64>, tpm: Option<i64>) -> Result<()> {
        // Lifting both limits keeps the row and its counts (see RATE_ROW_HAS_LIMITS).
        let id = key.to_string();
        self.c
            .prepare_cached(
                "INSERT INTO creditgate_key_rate_limits (api_key_id, requests_per_minute, tokens_per_minute) \
                 VALUES (?1, ?2, ?3) ON CONFLICT (api_key_id) DO UPDATE SET \
                 requests_per_minute = excluded.requests_per_minute, tokens_per_minute = excluded.tokens_per_minute",
            )?
            .execute(params![id, rpm, tpm])?;
        Ok(())
    }

    fn take_requests(&mut self, key: KeyId, window: i64, n: i64) -> Result<RateCheck> {
        let id = key.to_string();
        let counted = self.c.prepare_cached(TAKE_REQUESTS_SQL)?.execute(params![id, window, n])?;
        if counted == 1 {
            return Ok(RateCheck::Allowed);
        }
        let row = self
            .c
            .prepare_cached(
                "SELECT CASE WHEN window_start = ?2 THEN requests ELSE 0 END, requests_per_minute \
                 FROM creditgate_key_rate_limits WHERE api_key_id = ?1",
            )?
            .query_row(params![id, window], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?)))
            .optional()?;
        Ok(row.map_or(RateCheck::Unlimited, |(requests, rpm)| RateCheck::Limited(exhausted_limit(requests, rpm))))
    }

    fn add_rate_tokens(&mut self, key: KeyId, window: i64, tokens: i64) -> Result<()> {
        self.c.prepare_cached(ADD_RATE_TOKENS_SQL)?.execute(params![key.to_string(), window, tokens])?;
        Ok(())
    }

    fn has_rate_limits(&mut self) -> Result<bool> {
        Ok(self
            .c
            .prepare_cached(&format!(
                "SELECT EXISTS (SELECT 1 FROM creditgate_key_rate_limits r WHERE {RATE_ROW_HAS_LIMITS})"
            ))?
            .query_row([], |r| r.get(0))?)
    }

    fn insert_grant(&mut self, g: &Grant) -> Result<GrantId> {
        let id = self
            .c
            .prepare_cached(
                "INSERT INTO creditgate_grants (user_id, entry_id, category, priority, amount, remaining, expires_at, \
                 created_at, payment_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING id",
            )?
            .query_row(
                params![
                    g.user_id,
                    g.source_entry_id.map(|e| e.to_string()),
                    g.category.as_str(),
                    g.priority,
                    g.amount.micros(),
                    g.remaining.micros(),
                    g.expires_at.map(|t| t.0),
                    g.created_at.0,
                    g.payment_id,
                ],
                |r| r.get(0),
            )?;
        Ok(GrantId(id))
    }

    fn live_grants(&mut self, user: &str, now: Timestamp, include_due: bool, limit: u32) -> Result<Vec<Grant>> {
        let sql = format!(
            "SELECT {GRANT_COLS} FROM creditgate_grants WHERE user_id = ?1 AND remaining > 0 \
             AND (?3 OR expires_at IS NULL OR expires_at > ?2) \
             ORDER BY CASE WHEN expires_at <= ?2 THEN 0 ELSE 1 END, \
             CASE WHEN expires_at <= ?2 THEN expires_at END, CASE WHEN expires_at <= ?2 THEN id END, \
             CASE category WHEN 'promotional' THEN 0 ELSE 1 END, priority, \
             COALESCE(expires_at, 9223372036854775807), id LIMIT {limit}"
        );
        // The limit is in the text, not a parameter: SQLite's planner weighs
        // a bound LIMIT, so rebinding one re-parses the statement on every
        // call (a fifth of a charge's CPU in the profile).
        let mut stmt = self.c.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![user, now.0, include_due], grant_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn take_from_grant(&mut self, id: GrantId, amount: Credits) -> Result<bool> {
        let n = self
            .c
            .prepare_cached(
                "UPDATE creditgate_grants SET remaining = remaining - ?2 WHERE id = ?1 AND remaining >= ?2",
            )?
            .execute(params![id.0, amount.micros()])?;
        Ok(n == 1)
    }

    fn grant_by_payment(&mut self, payment_id: &str) -> Result<Option<Grant>> {
        let sql = format!("SELECT {GRANT_COLS} FROM creditgate_grants WHERE payment_id = ?1 ORDER BY id LIMIT 1");
        Ok(self.c.prepare_cached(&sql)?.query_row([payment_id], grant_from_row).optional()?)
    }

    fn due_grants(&mut self, user: &str, now: Timestamp) -> Result<Credits> {
        Ok(Credits::from_micros(self.count(&format!("SELECT {DUE_SQL}"), params![user, now.0])?))
    }

    fn due_grants_total(&mut self, now: Timestamp) -> Result<Credits> {
        // Summed in i128: the total over all accounts may exceed i64.
        let mut stmt = self
            .c
            .prepare_cached("SELECT remaining FROM creditgate_grants WHERE remaining > 0 AND expires_at <= ?1")?;
        let mut rows = stmt.query([now.0])?;
        let mut total = 0i128;
        while let Some(r) = rows.next()? {
            total += i128::from(r.get::<_, i64>(0)?);
        }
        i64::try_from(total)
            .map(Credits::from_micros)
            .map_err(|_| Error::Internal("expired grants exceed the 64-bit range".into()))
    }

    fn users_with_due_grants(&mut self, now: Timestamp, limit: u32) -> Result<Vec<String>> {
        let mut stmt = self.c.prepare_cached(
            "SELECT DISTINCT user_id FROM creditgate_grants WHERE remaining > 0 AND expires_at <= ?1 \
             ORDER BY user_id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now.0, limit], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn scan_grants(&mut self, f: &mut dyn FnMut(&str, i128, i64)) -> Result<()> {
        let mut stmt = self.c.prepare_cached(
            "SELECT user_id, remaining, amount FROM creditgate_grants WHERE remaining <> 0 OR amount < 0 \
             ORDER BY user_id",
        )?;
        let mut rows = stmt.query([])?;
        let mut current: Option<(String, i128, i64)> = None;
        while let Some(r) = rows.next()? {
            let user = r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
            let (remaining, amount): (i64, i64) = (r.get(1)?, r.get(2)?);
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
        }
        if let Some((u, sum, bad)) = current {
            f(&u, sum, bad);
        }
        Ok(())
    }

    fn insert_event(&mut self, e: &NewEvent) -> Result<i64> {
        self.c
            .prepare_cached(
                "INSERT INTO creditgate_events (kind, user_id, api_key_id, data, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                e.kind.as_str(),
                e.user_id,
                e.api_key_id.map(|k| k.to_string()),
                e.data.to_string(),
                e.created_at.0
            ])?;
        Ok(self.c.last_insert_rowid())
    }

    fn events(&mut self, after: i64, limit: u32) -> Result<Vec<Event>> {
        // One writer at a time: ids are in commit order.
        if after != 0 {
            let known = self
                .c
                .prepare_cached("SELECT 1 FROM creditgate_events WHERE id = ?1")?
                .query_row([after], |_| Ok(()))
                .optional()?;
            if known.is_none() {
                return Err(unknown_cursor(after));
            }
        }
        let mut stmt = self.c.prepare_cached(
            "SELECT id, kind, user_id, api_key_id, data, created_at FROM creditgate_events \
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![after, limit])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let key: Option<String> = r.get(3)?;
            let key = key.map(|k| KeyId::parse(&k)).transpose()?;
            let data: String = r.get(4)?;
            out.push(Event::from_stored(
                r.get(0)?,
                r.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?,
                r.get(2)?,
                key,
                &data,
                r.get(5)?,
            )?);
        }
        Ok(out)
    }

    fn has_purchase(&mut self, user: &str) -> Result<bool> {
        let found = self
            .c
            .prepare_cached("SELECT 1 FROM creditgate_entries WHERE user_id = ?1 AND kind = 'purchase' LIMIT 1")?
            .query_row([user], |_| Ok(()))
            .optional()?;
        Ok(found.is_some())
    }

    fn host_rows(&mut self, sql: &str, columns: usize) -> Result<Vec<Vec<Option<String>>>> {
        // Not cached: a one-off query on the host's own table.
        let mut stmt = self.c.prepare(sql)?;
        let rows = stmt.query_map([], |r| (0..columns).map(|i| r.get::<_, Option<String>>(i)).collect())?;
        Ok(rows.collect::<rusqlite::Result<Vec<Vec<Option<String>>>>>()?)
    }
}
