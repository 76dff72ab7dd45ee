//! Side-by-side benchmarks of the Rust core against raw rusqlite (issue 6).
//!
//! `cargo bench --bench ledger` prints a Markdown table for BENCHMARKS.md;
//! `CREDITGATE_BENCH_QUICK=1` runs a short smoke version (no timing claims).
//! Criterion measures the verify pair; the concurrent write rows are timed
//! directly because they need many threads sharing one manager. Last, the
//! ledger is filled to 1,000,000 entries for the memory figures: database
//! bytes per entry, and the resident set of a fresh process holding a
//! manager on it (the bench binary re-run as a child).

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

/// Resident set and its peak (VmRSS, VmHWM) of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The memory child: opens the ledger at `url`, serves one verify and one
/// usage charge, then audits every entry; prints its resident set after each.
fn memory_child(url: &str, secret: &str) {
    let m = CreditManager::open(Config::new().database_url(url)).expect("open");
    let one = Credits::from_credits(1).expect("1 credit");
    m.verify_api_key_credits(secret, one).expect("verify");
    let usage = Usage { input_tokens: 1_000, output_tokens: 0, model: None };
    m.record_usage(KeyRef::Secret(secret), usage, Some("memory-child")).expect("usage");
    let (serving, _) = rss_kib();
    let audit = m.audit().expect("audit");
    assert!(audit.ok);
    let (_, peak) = rss_kib();
    println!("rss {serving} {peak} {}", audit.entries_checked);
}

/// Database file bytes after a full checkpoint (the WAL folded in).
fn db_bytes(path: &std::path::Path) -> u64 {
    let c = Connection::open(path).expect("raw open");
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).expect("checkpoint");
    std::fs::metadata(path).expect("size").len()
}

fn main() {
    if let (Ok(url), Ok(secret)) =
        (std::env::var("CREDITGATE_BENCH_CHILD_URL"), std::env::var("CREDITGATE_BENCH_CHILD_KEY"))
    {
        return memory_child(&url, &secret);
    }
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
    // The raw rows bypass the ledger's rules: remove them so the audit holds.
    raw_w
        .execute_batch(
            "DELETE FROM creditgate_entries WHERE user_id = 'raw'; DELETE FROM creditgate_accounts WHERE user_id = 'raw';",
        )
        .expect("remove the raw rows");
    rows.push(Row {
        name: "record_usage, raw rusqlite ceiling (100 per commit)".into(),
        ops_per_s: (batches * 100) as f64 / secs,
        p50_us: f64::NAN,
        p99_us: f64::NAN,
    });

    // 4. memory: fill the ledger to the target entry count, then measure.
    let target: u64 = if quick { 20_000 } else { 1_000_000 };
    let entries_now = m.audit().expect("audit").entries_checked;
    let bytes_before = db_bytes(&path);
    let fill = target.saturating_sub(entries_now);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..32 {
            let (m, secret) = (&m, &secret);
            s.spawn(move || {
                for i in (t..fill).step_by(32) {
                    let usage = Usage { input_tokens: 1_000, output_tokens: 0, model: None };
                    m.record_usage(KeyRef::Secret(secret), usage, Some(&format!("fill-{i}"))).expect("fill");
                }
            });
        }
    });
    let fill_secs = t0.elapsed().as_secs_f64();
    let bytes_per_entry = (db_bytes(&path) - bytes_before) as f64 / fill as f64;
    let child = std::process::Command::new(std::env::current_exe().expect("bench binary"))
        .env("CREDITGATE_BENCH_CHILD_URL", format!("sqlite:///{}", path.display()))
        .env("CREDITGATE_BENCH_CHILD_KEY", &secret)
        .output()
        .expect("run the memory child");
    let out = String::from_utf8_lossy(&child.stdout);
    let Some(line) = out.lines().find_map(|l| l.strip_prefix("rss ")) else {
        panic!("the memory child failed: {}", String::from_utf8_lossy(&child.stderr));
    };
    let f: Vec<u64> = line.split(' ').map(|v| v.parse().expect("number")).collect();
    let (serving_kib, peak_kib, entries) = (f[0], f[1], f[2]);

    println!("\n| benchmark | ops/s | p50 µs | p99 µs |\n|---|---:|---:|---:|");
    for r in &rows {
        println!("| {} | {:.0} | {:.1} | {:.1} |", r.name, r.ops_per_s, r.p50_us, r.p99_us);
    }
    println!("\n({keys} keys in the table{})", if quick { "; quick smoke run, numbers not meaningful" } else { "" });
    println!("\n| memory, {entries} ledger entries and {keys} keys | value |\n|---|---:|");
    println!("| database bytes per ledger entry (usage entries, checkpointed file) | {bytes_per_entry:.0} |");
    println!(
        "| resident set of a fresh process after open + verify + record_usage | {:.1} MiB |",
        serving_kib as f64 / 1024.0
    );
    println!("| peak resident set including an audit of every entry | {:.1} MiB |", peak_kib as f64 / 1024.0);
    println!("\n(filled {fill} entries with 32 callers in {fill_secs:.1} s: {:.0}/s)", fill as f64 / fill_secs);
}
