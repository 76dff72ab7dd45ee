//! SQLite connections: how each is opened (busy handler, WAL, pragmas) and
//! how writers of several processes take turns on one file.

use super::shown;
use crate::error::{Error, Result};
use crate::store::pool::Connector;
use rusqlite::Connection;
use std::time::Duration;

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
pub(super) struct WriterTurn {
    file: std::fs::File,
    wait: Duration,
}

#[cfg(unix)]
impl WriterTurn {
    pub(super) fn open(db_path: &str, wait: Duration) -> Option<WriterTurn> {
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
    pub(super) fn take(&self) -> Option<TurnGuard<'_>> {
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
pub(super) struct TurnGuard<'a>(&'a WriterTurn);

#[cfg(unix)]
impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        self.0.fcntl(libc::F_UNLCK as libc::c_short);
    }
}

/// Elsewhere: no turn; writers meet on SQLite's lock alone.
#[cfg(not(unix))]
pub(super) struct WriterTurn;

#[cfg(not(unix))]
impl WriterTurn {
    pub(super) fn open(_db_path: &str, _wait: Duration) -> Option<WriterTurn> {
        None
    }

    pub(super) fn take(&self) -> Option<()> {
        None
    }
}

#[cfg(unix)]
pub(super) fn create_private_file(path: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::Storage(format!("cannot create database file {}: {e}", shown(path)))),
    }
}

#[cfg(not(unix))]
pub(super) fn create_private_file(_path: &str) -> Result<()> {
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
pub(super) struct SqliteConnector {
    /// None: an in-memory database.
    pub(super) file: Option<String>,
    pub(super) busy_ms: u32,
    pub(super) sync: &'static str,
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
