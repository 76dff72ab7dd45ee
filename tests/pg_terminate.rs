//! PostgreSQL backends terminated mid-batch: 8 threads write on one manager
//! (usage charges with request ids, grants and strict deducts with
//! idempotency keys, over two accounts), so their writes share group-commit
//! batches, while another connection runs, every 5–40 ms,
//! `SELECT state, pg_terminate_backend(pid) FROM pg_stat_activity` for the
//! ledger's database (every session but its own), which kills the batch's
//! connection wherever it is: between statements of the transaction, during
//! `COMMIT`, or idle in the pool.
//!
//! Checked: calls caught by it fail with `Storage` only (never a panic or a
//! hang beyond a bound); some terminations hit a session inside a
//! transaction; after the terminations stop every thread's next writes all
//! succeed (the pool replaced its dead connections); every acknowledged op is
//! in the ledger exactly once with its entry id, every failed one absent or
//! whole, and retried with its key exactly once; each balance moved by
//! exactly the ops' amounts and the audit is clean, also on a fresh handle.
//!
//! Runs only with `CREDITGATE_TEST_BACKEND=postgres` (skipped on SQLite,
//! saying so). `CREDITGATE_FAULT_REPORT=path` appends the summary line there.

mod common;

use common::ops::{self, Op, Outcome};
use common::{credits, grant, key_for, pg};
use creditgate::{Config, ErrorCode};
use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const THREADS: usize = 8;
const USERS: [&str; 2] = ["u0", "u1"];
/// How long the terminations go on.
const TERMINATING: Duration = Duration::from_secs(6);
/// Writes each thread makes after the terminations stopped (all must succeed).
const WRITES_AFTER: u64 = 20;
/// Hang guard for one call (not a performance bound).
const CALL_GUARD: Duration = Duration::from_secs(30);

#[derive(Default, Debug)]
struct Terminations {
    rounds: u64,
    /// Sessions terminated, by their state then: inside a transaction
    /// (`active`, `idle in transaction`) or not.
    in_transaction: u64,
    idle: u64,
}

fn terminator(url: String, stop: Arc<AtomicBool>) -> Terminations {
    let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("the terminator connects");
    let mut t = Terminations::default();
    let mut r: u64 = 0x2545_f491_4f6c_dd1d;
    while !stop.load(Ordering::Relaxed) {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        std::thread::sleep(Duration::from_millis(5 + r % 36));
        let rows = c
            .query(
                "SELECT coalesce(state, ''), pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                &[],
            )
            .expect("the terminator's query");
        t.rounds += 1;
        for row in rows {
            let (state, killed): (String, bool) = (row.get(0), row.get(1));
            if killed {
                match state.as_str() {
                    "active" | "idle in transaction" | "idle in transaction (aborted)" => t.in_transaction += 1,
                    _ => t.idle += 1,
                }
            }
        }
    }
    t
}

#[test]
fn backends_terminated_mid_batch_lose_nothing_and_apply_nothing_twice() {
    if !pg::is_postgres() {
        eprintln!("pg_terminate: SKIPPED: needs CREDITGATE_TEST_BACKEND=postgres (scripts/test-postgres.sh sets it)");
        return;
    }
    let (url, _db) = common::shared_url();
    let m = common::open(&url, Config::new().pool_size(THREADS as u32).unwrap());
    let mut secrets = HashMap::new();
    let mut before = HashMap::new();
    for u in USERS {
        secrets.insert(u.to_string(), key_for(&m, u).0);
        grant(&m, u, credits(1_000_000));
        before.insert(u.to_string(), ops::before(&m, u));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let stop_terminating = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (m, stop) = (m.clone(), stop.clone());
            let user = USERS[t % USERS.len()];
            let secret = secrets[user].clone();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                let mut slowest = Duration::ZERO;
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let op = Op::nth("term", user, t, i);
                    let started = Instant::now();
                    let r = op.run(&m, &secret);
                    slowest = slowest.max(started.elapsed());
                    if let Err(e) = &r {
                        assert_eq!(e.code(), ErrorCode::Storage, "{} failed with another error: {e}", op.id);
                        // As a gateway would: no spinning on a failing database.
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    out.push(Outcome::of(op, r));
                    if slowest > CALL_GUARD {
                        break;
                    }
                }
                (out, slowest)
            })
        })
        .collect();
    let killer = {
        let (url, stop_terminating) = (url.clone(), stop_terminating.clone());
        std::thread::spawn(move || terminator(url, stop_terminating))
    };
    std::thread::sleep(TERMINATING);
    stop_terminating.store(true, Ordering::Relaxed);
    let terms = killer.join().expect("the terminator panicked");
    stop.store(true, Ordering::Relaxed);
    let mut outcomes = Vec::new();
    let mut slowest = Duration::ZERO;
    for w in writers {
        let (out, s) = w.join().expect("a writer panicked");
        outcomes.extend(out);
        slowest = slowest.max(s);
    }
    assert!(slowest <= CALL_GUARD, "a call hung for {slowest:?}");
    let during = outcomes.len();
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    assert!(during - failed > 0, "no write succeeded while backends were being terminated");
    assert!(terms.in_transaction > 0, "no termination hit a session inside a transaction: {terms:?}");

    // The terminations are over: the same manager serves every write again.
    let after: Vec<_> = (0..THREADS)
        .map(|t| {
            let m = m.clone();
            let user = USERS[t % USERS.len()];
            let secret = secrets[user].clone();
            std::thread::spawn(move || {
                (1..=WRITES_AFTER)
                    .map(|i| {
                        let op = Op::nth("after", user, t, i);
                        let r = op.run(&m, &secret);
                        if let Err(e) = &r {
                            panic!("{} failed after the terminations stopped: {e}", op.id);
                        }
                        Outcome::of(op, r)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    outcomes.extend(after.into_iter().flat_map(|w| w.join().expect("a write failed after the terminations")));

    let checked = ops::check_and_retry(&m, &secrets, &before, &outcomes);
    let entries = common::assert_audit_ok(&common::open(&url, Config::new()));
    // The errors by cause (without the batch size).
    let mut causes: std::collections::BTreeMap<String, usize> = Default::default();
    for (_, msg) in outcomes.iter().filter_map(|o| o.result.as_ref().err()) {
        let cause = msg.split_once(" did not commit: ").map_or(msg.as_str(), |(_, c)| c);
        *causes.entry(cause.to_string()).or_default() += 1;
    }
    let summary = format!(
        "pg_terminate: {} terminations in {} rounds over {TERMINATING:?} ({} inside a transaction); {THREADS} threads \
         made {during} writes meanwhile: {} acknowledged, {failed} storage errors ({} of them applied all the same); \
         {} writes after all acknowledged; {} ops checked, {entries} entries audited; slowest call {slowest:.2?}; \
         errors by cause: {causes:?}",
        terms.in_transaction + terms.idle,
        terms.rounds,
        terms.in_transaction,
        during - failed,
        checked.failed_applied,
        THREADS as u64 * WRITES_AFTER,
        checked.acknowledged + checked.failed,
    );
    eprintln!("{summary}");
    if let Ok(path) = std::env::var("CREDITGATE_FAULT_REPORT")
        && !path.is_empty()
    {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("open the fault report");
        writeln!(f, "{summary}").expect("write the fault report");
    }
}
