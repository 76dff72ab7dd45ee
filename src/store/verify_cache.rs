//! Verify answers of a SQLite ledger, kept until the database or the clock
//! could change them.
//!
//! Verify is the hottest read of a gateway and its answer (the key's owner,
//! whether it is revoked, what the account has available, what the key's cap
//! leaves) changes only when some connection commits or when time passes an
//! instant the answer depends on. So an answer is served again only while
//! both hold:
//! - No commit since it was read. `PRAGMA data_version` on a connection of
//!   our own, which never writes, changes with every commit by any other
//!   connection, in this process or another one on the same file. The
//!   version is read before the answer, so a commit racing the read is seen
//!   by the next check and the answer dropped; it is never served stale.
//! - Its clock time is before the answer's `fresh_until`: the first instant
//!   at which time alone changes it (the key's expiry, a hold or grant
//!   expiring, the cap's window ending).
//!
//! Only answers for keys that exist are kept (an unknown key never fills the
//! cache), at most [`MAX_ENTRIES`] of them.

use super::{HashKind, KeyStanding};
use crate::error::Result;
use crate::types::Timestamp;
use rusqlite::Connection;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Keys kept at most; when full, the cache starts over (no eviction order to
/// keep up on the hot path).
pub(crate) const MAX_ENTRIES: usize = 16_384;

struct Cached {
    only: Option<HashKind>,
    standing: KeyStanding,
    fresh_until: Timestamp,
}

struct State {
    watcher: Connection,
    version: i64,
    entries: HashMap<String, Cached>,
}

pub(crate) struct VerifyCache {
    state: Mutex<State>,
}

impl VerifyCache {
    /// `watcher` must be a connection to the ledger's file that never writes.
    pub(crate) fn new(watcher: Connection) -> VerifyCache {
        VerifyCache { state: Mutex::new(State { watcher, version: i64::MIN, entries: HashMap::new() }) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic mid-update leaves at worst a cleared or partial map under
        // the old version, which the next version read resets.
        self.state.lock().unwrap_or_else(|poisoned| {
            let mut s = poisoned.into_inner();
            s.entries.clear();
            s.version = i64::MIN;
            s
        })
    }

    /// The database's data version now, and the answer for `hash` if one is
    /// kept that no commit and no clock change has made stale. Pass the
    /// version to [`put`](Self::put) with an answer read after this call.
    pub(crate) fn get(&self, hash: &str, only: Option<HashKind>, now: Timestamp) -> Result<(i64, Option<KeyStanding>)> {
        let mut s = self.lock();
        let version: i64 = s.watcher.prepare_cached("PRAGMA data_version")?.query_row([], |r| r.get(0))?;
        if version != s.version {
            s.entries.clear();
            s.version = version;
            return Ok((version, None));
        }
        let hit = s.entries.get(hash).filter(|c| c.only == only && now < c.fresh_until).map(|c| c.standing.clone());
        Ok((version, hit))
    }

    /// Keeps an answer read after [`get`](Self::get) returned `version`;
    /// dropped when a commit was seen since.
    pub(crate) fn put(
        &self,
        version: i64,
        hash: &str,
        only: Option<HashKind>,
        standing: KeyStanding,
        fresh_until: Timestamp,
    ) {
        let mut s = self.lock();
        if s.version != version {
            return;
        }
        if s.entries.len() >= MAX_ENTRIES {
            s.entries.clear();
        }
        s.entries.insert(hash.to_string(), Cached { only, standing, fresh_until });
    }
}
