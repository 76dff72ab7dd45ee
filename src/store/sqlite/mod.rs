//! SQLite backend: rusqlite in the thread-free pool of `pool.rs`, WAL, `BEGIN IMMEDIATE` for every write
//! (the write lock is taken up front, so no lock-upgrade deadlocks), cached
//! prepared statements, durable on return with `synchronous=FULL`.

mod conn;
mod tx;

use super::group::{GroupCommit, Slot};
use super::pool::{Connector, Pool};
use super::schema;
use super::verify_cache::VerifyCache;
use super::{HashKind, KeyStanding, Tx};
use crate::config::{Config, Synchronous, TestClock};
use crate::error::{Error, Result};
use crate::types::Timestamp;
use conn::{SqliteConnector, WriterTurn, create_private_file};
use rusqlite::{Connection, TransactionBehavior, params};
use std::time::Duration;
use tx::SqliteTx;

/// Most writes in one SQLite transaction (group commit).
const MAX_BATCH_JOBS: usize = 128;

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
            if !only.run(&mut SqliteTx::new(&tx, &self.clock)) {
                return Ok(());
            }
        } else {
            for slot in slots.iter_mut() {
                tx.prepare_cached("SAVEPOINT creditgate_job")?.execute([])?;
                if !slot.run(&mut SqliteTx::new(&tx, &self.clock)) {
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
        let out = f(&mut SqliteTx::new(&tx, &self.clock))?;
        tx.commit()?;
        Ok(out)
    }

    pub(crate) fn peek<R>(&self, mut f: impl FnMut(&mut dyn Tx) -> Result<R>) -> Result<R> {
        let conn = self.pool.get()?;
        f(&mut SqliteTx::new(&conn, &self.clock))
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
        let mut tx = SqliteTx::new(&conn, &self.clock);
        let found = tx.key_with_available(hash, only)?;
        if let Some(standing) = &found {
            let until = tx.fresh_until(standing, now)?;
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
        let versions = schema::run(&recorded_versions(&tx)?, up_to, |m| {
            tx.execute_batch(m.sqlite)?;
            tx.execute(
                "INSERT INTO creditgate_schema_version (version, applied_at) VALUES (?1, ?2)",
                params![m.version, Timestamp::now().0],
            )?;
            Ok(())
        })?;
        tx.commit()?;
        Ok(versions)
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
