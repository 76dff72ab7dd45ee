//! A connection pool without threads of its own: a caller that finds no
//! idle connection opens one itself (up to the pool's size) or waits for one
//! to come back.
//!
//! Why not r2d2: its helper threads park in `parking_lot`'s process-wide
//! table of waiting threads. A child forked by a pre-fork server (gunicorn
//! `--preload`, `multiprocessing`'s fork) inherits that table with entries
//! for threads it does not have, and crashed (SIGSEGV) or spun in it when
//! its first new thread grew the table. This pool uses only `std::sync`
//! (futexes, no global state), and an idle process has no thread parked.

use crate::error::{Error, Result};
use std::ops::{Deref, DerefMut};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Opens connections and tells broken ones apart.
pub(crate) trait Connector: Send + Sync {
    type Conn: Send;
    fn connect(&self) -> Result<Self::Conn>;
    /// Whether a returned connection must be closed rather than reused.
    fn is_broken(&self, conn: &mut Self::Conn) -> bool;
}

pub(crate) struct Pool<C: Connector> {
    connector: C,
    max_size: u32,
    wait_timeout: Duration,
    state: Mutex<State<C::Conn>>,
    returned: Condvar,
}

struct State<T> {
    idle: Vec<T>,
    /// Connections that exist: idle, lent out, or being opened.
    open: u32,
}

impl<C: Connector> Pool<C> {
    pub(crate) fn new(connector: C, max_size: u32, wait_timeout: Duration) -> Pool<C> {
        assert!(max_size >= 1, "a pool holds at least one connection");
        Pool {
            connector,
            max_size,
            wait_timeout,
            state: Mutex::new(State { idle: Vec::new(), open: 0 }),
            returned: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<C::Conn>> {
        // The state stays consistent across a panic (plain counters and a Vec).
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An idle connection, a new one when fewer than `max_size` exist, or
    /// the next one returned within the wait timeout (else `Storage`).
    pub(crate) fn get(&self) -> Result<Pooled<'_, C>> {
        let deadline = Instant::now() + self.wait_timeout;
        let mut state = self.lock();
        loop {
            if let Some(conn) = state.idle.pop() {
                return Ok(Pooled { pool: self, conn: Some(conn) });
            }
            if state.open < self.max_size {
                state.open += 1;
                drop(state);
                return match self.connector.connect() {
                    Ok(conn) => Ok(Pooled { pool: self, conn: Some(conn) }),
                    Err(e) => {
                        self.forget_one();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Storage(format!(
                    "no database connection free after {} ms: all {} are in use",
                    self.wait_timeout.as_millis(),
                    self.max_size
                )));
            }
            state = self.returned.wait_timeout(state, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Takes in a connection opened outside `get`, lent out until dropped;
    /// it counts towards `max_size`.
    pub(crate) fn adopt(&self, conn: C::Conn) -> Pooled<'_, C> {
        let mut state = self.lock();
        assert!(state.open < self.max_size, "adopting beyond the pool's size");
        state.open += 1;
        Pooled { pool: self, conn: Some(conn) }
    }

    /// A connection closed or never opened: room for another.
    fn forget_one(&self) {
        let mut state = self.lock();
        debug_assert!(state.open > 0);
        state.open = state.open.saturating_sub(1);
        drop(state);
        self.returned.notify_one();
    }
}

/// A connection lent out; back to the pool (or closed, when broken) on drop.
pub(crate) struct Pooled<'p, C: Connector> {
    pool: &'p Pool<C>,
    conn: Option<C::Conn>,
}

impl<C: Connector> Deref for Pooled<'_, C> {
    type Target = C::Conn;
    fn deref(&self) -> &C::Conn {
        self.conn.as_ref().expect("present until drop")
    }
}

impl<C: Connector> DerefMut for Pooled<'_, C> {
    fn deref_mut(&mut self) -> &mut C::Conn {
        self.conn.as_mut().expect("present until drop")
    }
}

impl<C: Connector> Drop for Pooled<'_, C> {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        if self.pool.connector.is_broken(&mut conn) {
            drop(conn);
            self.pool.forget_one();
            return;
        }
        self.pool.lock().idle.push(conn);
        self.pool.returned.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Counting {
        opened: AtomicU32,
        fail: bool,
    }

    impl Connector for Counting {
        type Conn = (u32, bool);
        fn connect(&self) -> Result<(u32, bool)> {
            if self.fail {
                return Err(Error::Storage("refused".into()));
            }
            Ok((self.opened.fetch_add(1, Ordering::SeqCst), false))
        }
        fn is_broken(&self, conn: &mut (u32, bool)) -> bool {
            conn.1
        }
    }

    fn pool(max: u32, wait_ms: u64, fail: bool) -> Arc<Pool<Counting>> {
        Arc::new(Pool::new(Counting { opened: AtomicU32::new(0), fail }, max, Duration::from_millis(wait_ms)))
    }

    #[test]
    fn reuses_idle_connections_and_opens_up_to_the_size() {
        let p = pool(2, 50, false);
        let a = p.get().unwrap();
        let b = p.get().unwrap();
        assert_eq!((a.0, b.0), (0, 1));
        let err = p.get().err().expect("a third waits, then times out");
        assert!(err.to_string().contains("all 2 are in use"), "{err}");
        drop(a);
        assert_eq!(p.get().unwrap().0, 0, "the returned one is lent again");
        assert_eq!(p.connector.opened.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn broken_connections_and_failed_opens_free_their_place() {
        let p = pool(1, 50, false);
        let mut a = p.get().unwrap();
        a.1 = true;
        drop(a);
        assert_eq!(p.get().unwrap().0, 1, "the broken one was closed, a new one opened");
        let f = pool(1, 50, true);
        assert!(f.get().is_err());
        assert!(f.get().is_err(), "a failed open does not use up the only place");
        assert_eq!(f.lock().open, 0);
    }

    #[test]
    fn a_waiter_gets_the_connection_another_thread_returns() {
        let p = pool(1, 5_000, false);
        let held = p.get().unwrap();
        let p2 = Arc::clone(&p);
        let waiter = std::thread::spawn(move || p2.get().map(|c| c.0));
        std::thread::sleep(Duration::from_millis(50));
        drop(held);
        assert_eq!(waiter.join().unwrap().unwrap(), 0);
    }
}
