//! PostgreSQL server restarts in the middle of a run: threads charge usage
//! (each call with its own request id) on one manager while the server is
//! restarted twice with a fast shutdown (`scripts/pg.sh restart`), which
//! terminates every session: once at once, once after a second down. Calls caught by it fail with a storage error
//! (never a panic, never a hang beyond a bound); once the server is back the
//! same manager serves calls again within a bounded window (the pool
//! reconnects); afterwards every call that returned Ok is in the ledger
//! exactly once, every failed call is there at most once and, retried with
//! its request id, exactly once; and the audit is clean.
//!
//! In its own test file so that the restart cannot disturb other tests (cargo
//! runs test executables one after another). Runs only on PostgreSQL and when
//! allowed: `CREDITGATE_TEST_BACKEND=postgres`, `CREDITGATE_TEST_PG_RESTART=1`
//! and `CREDITGATE_PG_DIR` (the server's directory from `scripts/pg.sh
//! start`); `scripts/test-postgres.sh` sets all three.

mod common;

use common::{grant, key_for, pg};
use creditgate::{Config, CreditManager, Credits, ErrorCode, KeyRef, Usage};
use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RESTART_ENV: &str = "CREDITGATE_TEST_PG_RESTART";
const DIR_ENV: &str = "CREDITGATE_PG_DIR";
const THREADS: usize = 4;
const USER: &str = "u";
/// Hang guard for one call, also across the restart (not a performance bound).
const CALL_GUARD: Duration = Duration::from_secs(30);
/// Seconds the server stays down in each restart: a quick restart, then one
/// where the pool finds no server for a while.
const DOWN_SECONDS: [u32; 2] = [0, 1];
/// After a restart returned, every thread must have this many successful
/// calls (started after it) within the window.
const RECOVERED_AFTER: u64 = 5;
const RECOVERY_WINDOW: Duration = Duration::from_secs(30);

/// What one call returned.
#[derive(Debug)]
struct Call {
    request_id: String,
    tokens: i64,
    took: Duration,
    /// How many restarts had finished when the call started.
    after_restarts: usize,
    /// The entry id, or the error code and message.
    result: Result<String, (ErrorCode, String)>,
}

fn usage(tokens: i64) -> Usage<'static> {
    Usage::new(tokens, 0, None)
}

fn postmaster_start_time() -> String {
    let mut c = postgres::Client::connect(&pg::server_url(), postgres::NoTls).expect("connect to the test server");
    c.query_one("SELECT pg_postmaster_start_time()::text", &[]).expect("postmaster start time").get(0)
}

fn worker(
    m: CreditManager,
    secret: String,
    t: usize,
    stop: Arc<AtomicBool>,
    restarts: Arc<Mutex<usize>>,
    recovered: Arc<Vec<Vec<AtomicU64>>>,
) -> Vec<Call> {
    let mut calls = Vec::new();
    let mut i = 0i64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let request_id = format!("t{t}-{i}");
        let tokens = 100 + (i * 37 + t as i64 * 11) % 900;
        let start = Instant::now();
        let after_restarts = *restarts.lock().unwrap();
        let r = m.record_usage(KeyRef::Secret(&secret), usage(tokens), Some(&request_id));
        let took = start.elapsed();
        let result = match r {
            Ok(c) => {
                assert!(!c.replayed, "{request_id} replayed on its first call");
                if after_restarts > 0 {
                    recovered[after_restarts - 1][t].fetch_add(1, Ordering::Relaxed);
                }
                Ok(c.entry_id.to_string())
            }
            Err(e) => Err((e.code(), e.to_string())),
        };
        let failed = result.is_err();
        calls.push(Call { request_id, tokens, took, after_restarts, result });
        if took > CALL_GUARD {
            break; // reported by the main thread
        }
        if failed {
            // As a gateway would: do not spin on a server that is down.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    calls
}

#[test]
fn a_server_restart_mid_run_loses_nothing() {
    let allowed = std::env::var(RESTART_ENV).is_ok_and(|v| v == "1");
    let dir = std::env::var(DIR_ENV).unwrap_or_default();
    if !pg::is_postgres() || !allowed || dir.is_empty() {
        eprintln!(
            "pg_restart: SKIPPED: needs CREDITGATE_TEST_BACKEND=postgres, {RESTART_ENV}=1 and {DIR_ENV} \
             (scripts/test-postgres.sh sets them)"
        );
        return;
    }
    let (url, _db) = common::shared_url();
    let m = common::open(&url, Config::new().pool_size(THREADS as u32).unwrap());
    let (secret, _) = key_for(&m, USER);
    grant(&m, USER, Credits::from_credits(100_000).unwrap());
    let setup_entries = common::all_entries(&m, USER).len();
    let balance_before = m.get_balance(USER).unwrap();
    let started_before = postmaster_start_time();

    let stop = Arc::new(AtomicBool::new(false));
    let restarts = Arc::new(Mutex::new(0usize));
    let recovered: Arc<Vec<Vec<AtomicU64>>> =
        Arc::new(DOWN_SECONDS.iter().map(|_| (0..THREADS).map(|_| AtomicU64::new(0)).collect()).collect());
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (m, secret, stop, restarts, recovered) =
                (m.clone(), secret.clone(), stop.clone(), restarts.clone(), recovered.clone());
            std::thread::spawn(move || worker(m, secret, t, stop, restarts, recovered))
        })
        .collect();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg.sh");
    let mut rounds = Vec::new();
    let mut restart_failed = None;
    for (round, down) in DOWN_SECONDS.iter().enumerate() {
        std::thread::sleep(Duration::from_millis(400));
        let restart_start = Instant::now();
        let status = Command::new("bash")
            .args([script, "restart", &dir, &down.to_string()])
            .status()
            .expect("run scripts/pg.sh restart");
        let restart_took = restart_start.elapsed();
        if !status.success() {
            restart_failed = Some(status);
            break;
        }
        *restarts.lock().unwrap() = round + 1;
        let recovery_start = Instant::now();
        let recovered_in = loop {
            if recovered[round].iter().all(|r| r.load(Ordering::Relaxed) >= RECOVERED_AFTER) {
                break Some(recovery_start.elapsed());
            }
            if recovery_start.elapsed() > RECOVERY_WINDOW {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        rounds.push((*down, restart_took, recovered_in));
        if recovered_in.is_none() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let calls: Vec<Call> = workers.into_iter().flat_map(|w| w.join().expect("a worker panicked")).collect();
    assert!(restart_failed.is_none(), "scripts/pg.sh restart failed: {restart_failed:?}");
    assert_ne!(postmaster_start_time(), started_before, "the server was not restarted");

    // Bounded, and only storage errors.
    let slowest = calls.iter().map(|c| c.took).max().unwrap_or_default();
    assert!(slowest <= CALL_GUARD, "a call hung for {slowest:?}");
    let failed: Vec<&Call> = calls.iter().filter(|c| c.result.is_err()).collect();
    for c in &failed {
        let (code, msg) = c.result.as_ref().unwrap_err();
        assert_eq!(*code, ErrorCode::Storage, "{}: {msg}", c.request_id);
    }
    for (down, _, recovered_in) in &rounds {
        if recovered_in.is_none() {
            let last: Vec<_> = failed.iter().rev().take(3).map(|c| c.result.as_ref().unwrap_err().1.clone()).collect();
            panic!("no recovery within {RECOVERY_WINDOW:?} after a restart ({down} s down); last errors: {last:?}");
        }
    }
    let ok_per_phase: Vec<usize> = (0..=DOWN_SECONDS.len())
        .map(|r| calls.iter().filter(|c| c.after_restarts == r && c.result.is_ok()).count())
        .collect();
    assert!(ok_per_phase.iter().all(|n| *n > 0), "calls succeeded before and after each restart: {ok_per_phase:?}");

    // The ledger: every Ok exactly once (with its entry id), every failure at most once.
    let by_key = |m: &CreditManager| {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for e in common::all_entries(m, USER) {
            if let Some(k) = e.idempotency_key {
                map.entry(k).or_default().push(e.id.to_string());
            }
        }
        map
    };
    let ledger = by_key(&m);
    let mut unknown_applied = 0;
    for c in &calls {
        let found = ledger.get(&format!("usage:{}", c.request_id)).map_or(0, Vec::len);
        match &c.result {
            Ok(id) => {
                assert_eq!(found, 1, "{} returned Ok but is in the ledger {found} times", c.request_id);
                assert_eq!(ledger[&format!("usage:{}", c.request_id)][0], *id);
            }
            Err(_) => {
                assert!(found <= 1, "failed call {} is in the ledger {found} times", c.request_id);
                unknown_applied += found;
            }
        }
    }
    // A storage error means "outcome unknown": retrying with the request id
    // applies it once or replays it, never twice.
    for c in &failed {
        let k = format!("usage:{}", c.request_id);
        let was_applied = ledger.contains_key(&k);
        let r = m.record_usage(KeyRef::Secret(&secret), usage(c.tokens), Some(&c.request_id)).unwrap();
        assert_eq!(r.replayed, was_applied, "retry of {}", c.request_id);
        if was_applied {
            assert_eq!(r.entry_id.to_string(), ledger[&k][0]);
        }
    }
    let ledger = by_key(&m);
    for c in &calls {
        assert_eq!(ledger.get(&format!("usage:{}", c.request_id)).map_or(0, Vec::len), 1, "{}", c.request_id);
    }
    let entries = common::all_entries(&m, USER);
    assert_eq!(entries.len(), setup_entries + calls.len(), "no entry beyond the calls");
    let charged: i64 = calls.iter().map(|c| c.tokens * 1_000).sum();
    assert_eq!(m.get_balance(USER).unwrap().micros(), balance_before.micros() - charged);
    common::assert_audit_ok(&m);
    // A fresh handle agrees.
    common::assert_audit_ok(&common::open(&url, Config::new()));

    let first_error = failed.first().map_or("none".to_string(), |c| c.result.as_ref().unwrap_err().1.clone());
    let rounds: Vec<String> = rounds
        .iter()
        .map(|(down, took, rec)| format!("{down} s down: restart took {took:.2?}, recovered in {:.2?}", rec.unwrap()))
        .collect();
    eprintln!(
        "pg_restart: {} calls (ok before/between/after the restarts: {ok_per_phase:?}, {} storage errors, \
         {unknown_applied} of them applied); {}; slowest call {slowest:.2?}; first error: {first_error}",
        calls.len(),
        failed.len(),
        rounds.join("; ")
    );
}
