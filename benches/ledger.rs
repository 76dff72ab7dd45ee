//! Side-by-side benchmarks of the Rust core against raw rusqlite (issue 6).
//!
//! `cargo bench --bench ledger` prints a Markdown table for BENCHMARKS.md;
//! `CREDITGATE_BENCH_QUICK=1` runs a short smoke version (no timing claims).
//! Criterion measures the verify pair; the concurrent write rows are timed
//! directly because they need many threads sharing one manager.

use creditgate::{Config, CreditManager, Credits, KeyRef, Usage};
use criterion::Criterion;
use rusqlite::{Connection, params};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

struct Row {
    name: String,
    ops_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// Runs `op` `n` times on each of `threads` threads; ops/s and latency.
fn timed(name: &str, threads: usize, n: usize, op: &(dyn Fn(usize, usize) + Sync)) -> Row {
    let start = Instant::now();
    let mut lat: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (0..n)
                        .map(|i| {
                            let t0 = Instant::now();
                            op(t, i);
                            t0.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("bench thread")).collect()
    });
    let total = start.elapsed().as_secs_f64();
    lat.sort();
    Row {
        name: name.into(),
        ops_per_s: lat.len() as f64 / total,
        p50_us: percentile(&lat, 0.5),
        p99_us: percentile(&lat, 0.99),
    }
}

fn main() {
    let quick = std::env::var_os("CREDITGATE_BENCH_QUICK").is_some();
    let keys = if quick { 2_000 } else { 100_000 };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.db");
    let config = Config::new()
        .database_url(format!("sqlite:///{}", path.display()))
        .max_active_keys_per_user(100_000)
        .expect("limit");
    let m = CreditManager::open(config).expect("open");
    m.record_payment("bench", "pay-1", 100_000_000, "USD").expect("payment");
    // Legacy imports skip the credit gate, so 100k keys load quickly in parallel.
    std::thread::scope(|s| {
        for t in 0..8 {
            let m = m.clone();
            s.spawn(move || {
                for i in (t..keys).step_by(8) {
                    let secret = format!("legacy-bench-key-{i:08}");
                    m.import_api_key(&format!("user-{}", i % 1000), Some(&secret), None, None).expect("import");
                }
            });
        }
    });
    let key = m.create_api_key("bench", None).expect("key");
    let secret = key.secret.expose().to_string();
    let one = Credits::from_credits(1).expect("1 credit");
    let mut rows = Vec::new();

    // 1. verify: creditgate against the raw prepared-statement floor.
    let raw = Connection::open(&path).expect("raw open");
    let raw_verify = |c: &Connection| {
        let hash = hex::encode(Sha256::digest(secret.as_bytes()));
        let mut stmt = c
            .prepare_cached(
                "SELECT k.id, k.revoked_at, a.balance FROM creditgate_api_keys k \
                 JOIN creditgate_accounts a ON a.user_id = k.user_id WHERE k.key_hash = ?1",
            )
            .expect("prepare");
        let (_id, _revoked, balance): (String, Option<i64>, i64) =
            stmt.query_row([hash], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).expect("lookup");
        assert!(balance > 0);
    };
    let mut c = Criterion::default().configure_from_args().sample_size(if quick { 10 } else { 50 });
    if quick {
        c = c.measurement_time(Duration::from_millis(300)).warm_up_time(Duration::from_millis(100));
    }
    c.bench_function("verify/creditgate", |b| b.iter(|| m.verify_api_key_credits(&secret, one).expect("verify")));
    c.bench_function("verify/raw_rusqlite", |b| b.iter(|| raw_verify(&raw)));
    let n = if quick { 2_000 } else { 100_000 };
    rows.push(timed("verify, creditgate (1 thread)", 1, n, &|_, _| {
        m.verify_api_key_credits(&secret, one).expect("verify");
    }));
    let raw_conn = parking_lot::Mutex::new(Connection::open(&path).expect("raw open"));
    rows.push(timed("verify, raw rusqlite floor (1 thread)", 1, n, &|_, _| raw_verify(&raw_conn.lock())));

    // 2. durable record_usage with 1, 8 and 32 callers.
    let total = if quick { 256 } else { 8_192 };
    for threads in [1, 8, 32] {
        let per = total / threads;
        rows.push(timed(&format!("record_usage, creditgate ({threads} callers)"), threads, per, &|t, i| {
            let usage = Usage { input_tokens: 1_000, output_tokens: 0, model: None };
            m.record_usage(KeyRef::Secret(&secret), usage, Some(&format!("{threads}-{t}-{i}"))).expect("usage");
        }));
    }
    // The ceiling: the same two statements, 100 per durable commit.
    let mut raw_w = Connection::open(&path).expect("raw open");
    raw_w.pragma_update(None, "synchronous", "FULL").expect("pragma");
    let batches = total / 100;
    let start = Instant::now();
    for b in 0..batches {
        let tx = raw_w.transaction().expect("begin");
        for i in 0..100 {
            let bal: i64 = tx
                .query_row(
                    "UPDATE creditgate_accounts SET balance = balance - 1000000, last_seq = last_seq + 1 \
                     WHERE user_id = 'raw' RETURNING balance",
                    [],
                    |r| r.get(0),
                )
                .or_else(|_| {
                    tx.execute("INSERT INTO creditgate_accounts (user_id, created_at) VALUES ('raw', 0)", [])?;
                    Ok::<i64, rusqlite::Error>(0)
                })
                .expect("update");
            tx.execute(
                "INSERT INTO creditgate_entries (id, user_id, seq, kind, amount, balance_after, created_at) \
                 VALUES (?1, 'raw', ?2, 'usage', -1000000, ?3, 0)",
                params![uuid::Uuid::now_v7().to_string(), (b * 100 + i + 1_000_000) as i64, bal],
            )
            .expect("insert");
        }
        tx.commit().expect("commit");
    }
    let secs = start.elapsed().as_secs_f64();
    rows.push(Row {
        name: "record_usage, raw rusqlite ceiling (100 per commit)".into(),
        ops_per_s: (batches * 100) as f64 / secs,
        p50_us: f64::NAN,
        p99_us: f64::NAN,
    });

    println!("\n| benchmark | ops/s | p50 µs | p99 µs |\n|---|---:|---:|---:|");
    for r in &rows {
        println!("| {} | {:.0} | {:.1} | {:.1} |", r.name, r.ops_per_s, r.p50_us, r.p99_us);
    }
    println!("\n({keys} keys in the table{})", if quick { "; quick smoke run, numbers not meaningful" } else { "" });
}
