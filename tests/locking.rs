//! Lock and timeout behaviour on SQLite: another connection holding the
//! write lock longer than the manager's busy timeout makes writes fail with
//! a storage error (HTTP 503) that says the database is locked, within a
//! bounded time, without writing anything; reads keep working (WAL); once
//! the lock is gone, writes succeed again, a refused idempotency key is not
//! used up, and the audit is clean. SQLite-specific: skipped on PostgreSQL
//! (the server restart test is tests/pg_restart.rs).

mod common;

use common::{NO_OPTS, assert_audit_ok, credits, key_for, tokens, with_key};
use creditgate::{Config, CreditManager, EntryKind, Error, ErrorCode, KeyRef};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const BUSY_MS: u32 = 200;
/// Hang guard only (not a performance bound): a refused write returns well
/// within the busy timeout plus this.
const GUARD: Duration = Duration::from_secs(2);

/// A raw connection holding SQLite's write lock (`BEGIN IMMEDIATE`).
fn hold_write_lock(path: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).expect("raw connection");
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.execute_batch("BEGIN IMMEDIATE").expect("take the write lock");
    c
}

/// Runs `f`, checks it failed as a busy database should, within the guard.
#[track_caller]
fn assert_busy<T: std::fmt::Debug>(what: &str, f: impl FnOnce() -> creditgate::Result<T>) -> (Duration, String) {
    let start = Instant::now();
    let r = f();
    let took = start.elapsed();
    assert!(took < Duration::from_millis(BUSY_MS.into()) + GUARD, "{what} hung for {took:?}");
    match r {
        Err(e @ Error::Storage(_)) => {
            assert_eq!(e.code(), ErrorCode::Storage);
            assert_eq!(e.http_status(), 503);
            let msg = e.to_string();
            assert!(msg.contains("locked") || msg.contains("busy"), "{what}: the message should say why: {msg}");
            (took, msg)
        }
        other => panic!("{what}: expected a storage error while the database is locked, got {other:?}"),
    }
}

#[test]
fn a_held_write_lock_fails_writes_cleanly_and_reads_go_on() {
    let (url, db) = common::shared_url();
    let Some(path) = db.sqlite_path().map(|p| p.to_path_buf()) else {
        eprintln!("locking: SKIPPED on PostgreSQL (SQLite-specific)");
        return;
    };
    let m = common::open(&url, Config::new().check_invariants(true).busy_timeout_ms(BUSY_MS).unwrap());
    let (secret, _) = key_for(&m, "u");
    m.add_credits("u", credits(10), EntryKind::Grant, &NO_OPTS).unwrap();
    let entries_before = common::all_entries(&m, "u").len();
    let balance_before = m.get_balance("u").unwrap();

    let raw = hold_write_lock(&path);
    let waited = [
        assert_busy("record_usage", || m.record_usage(KeyRef::Secret(&secret), tokens(1000), Some("r1"))),
        assert_busy("add_credits", || m.add_credits("u", credits(5), EntryKind::Grant, &NO_OPTS)),
        assert_busy("deduct_credits", || m.deduct_credits("u", credits(1), &with_key("d1"))),
        assert_busy("record_payment", || m.record_payment("u", "pay-1", 100, "usd")),
        assert_busy("create_api_key", || m.create_api_key("u", None)),
    ];
    // Reads do not need the write lock (WAL): they see the last commit.
    assert_eq!(m.get_balance("u").unwrap(), balance_before);
    assert_eq!(m.account("u").unwrap().active_keys, 1);
    assert_eq!(m.transactions("u", 10, None).unwrap().len(), entries_before);
    assert_eq!(m.verify_api_key_credits(&secret, credits(1)).unwrap().user_id, "u");
    raw.execute_batch("ROLLBACK").unwrap();

    // The lock is gone: the same calls succeed, as first applications.
    let c = m.record_usage(KeyRef::Secret(&secret), tokens(1000), Some("r1")).unwrap();
    assert!(!c.replayed, "the refused call must not have used up its request id");
    let d = m.deduct_credits("u", credits(1), &with_key("d1")).unwrap();
    assert!(!d.replayed, "the refused call must not have used up its idempotency key");
    assert!(!m.record_payment("u", "pay-1", 100, "usd").unwrap().replayed);
    // Only these three entries were added: the refused writes left nothing.
    assert_eq!(common::all_entries(&m, "u").len(), entries_before + 3);
    assert_eq!(m.account("u").unwrap().active_keys, 1);
    assert_eq!(m.get_balance("u").unwrap(), credits(10 - 1 - 1 + 1000));
    assert_audit_ok(&m);
    assert!(m.metrics_prometheus().contains("creditgate_errors_total{code=\"storage\"} 5"), "5 storage errors counted");
    eprintln!(
        "locking: refused writes waited {:?} (busy timeout {BUSY_MS} ms): {}",
        waited.iter().map(|w| w.0).collect::<Vec<_>>(),
        waited[0].1
    );
}

#[test]
fn concurrent_writers_behind_a_held_lock_all_fail_and_then_all_succeed() {
    const WRITERS: usize = 6;
    let (url, db) = common::shared_url();
    let Some(path) = db.sqlite_path().map(|p| p.to_path_buf()) else {
        eprintln!("locking: SKIPPED on PostgreSQL (SQLite-specific)");
        return;
    };
    let m = common::open(&url, Config::new().check_invariants(true).busy_timeout_ms(BUSY_MS).unwrap());
    let (secret, _) = key_for(&m, "u");
    let entries_before = common::all_entries(&m, "u").len();
    // A second handle (its own pool) on the same file: contends the same way.
    let other = common::open(&url, Config::new().check_invariants(true).busy_timeout_ms(BUSY_MS).unwrap());

    let raw = hold_write_lock(&path);
    let run = |round: &'static str, expect_ok: bool| {
        let start = Arc::new(Barrier::new(WRITERS));
        let workers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let m: CreditManager = if w % 2 == 0 { m.clone() } else { other.clone() };
                let (secret, start) = (secret.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let t = Instant::now();
                    let r = m.record_usage(KeyRef::Secret(&secret), tokens(500), Some(&format!("w{w}")));
                    (t.elapsed(), r.map(|c| c.replayed))
                })
            })
            .collect();
        for w in workers {
            let (took, r) = w.join().expect("a writer panicked");
            assert!(took < Duration::from_millis(BUSY_MS.into()) + GUARD, "{round}: a writer hung for {took:?}");
            match (expect_ok, r) {
                (true, Ok(replayed)) => assert!(!replayed, "{round}: a refused request id was used up"),
                (false, Err(e)) => {
                    assert_eq!(e.code(), ErrorCode::Storage, "{round}: {e}");
                    assert!(e.to_string().contains("locked"), "{round}: {e}");
                }
                (_, r) => panic!("{round}: unexpected {r:?}"),
            }
        }
    };
    run("locked", false);
    assert_eq!(common::all_entries(&other, "u").len(), entries_before, "refused writes left entries");
    raw.execute_batch("COMMIT").unwrap();
    run("unlocked", true);
    assert_eq!(common::all_entries(&other, "u").len(), entries_before + WRITERS);
    assert_audit_ok(&other);
}
