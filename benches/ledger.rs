//! Side-by-side benchmarks of the Rust core against raw rusqlite (issues 6
//! and 16).
//!
//! `cargo bench --bench ledger` prints Markdown tables for BENCHMARKS.md: the
//! rows, then the issue 16 comparison (creditgate against each hand-written
//! baseline of the same run, the ratio, the target and whether it is met);
//! `CREDITGATE_BENCH_QUICK=1` runs a short smoke version (no timing claims).
//! Criterion measures the verify pair; the concurrent write rows are timed
//! directly because they need many threads sharing one manager. Last, the
//! ledger is filled to 1,000,000 entries for the memory figures: database
//! bytes per entry, and the resident set of a fresh process holding a
//! manager on it (the bench binary re-run as a child).
//!
//! Every write row ends with a correctness check: creditgate's audit holds
//! and its balance fell by exactly the charges it returned (no lost update);
//! each raw ceiling's balance equals the sum of its entries. A failed check
//! panics, so the smoke run in the test command fails too.

use creditgate::{
    Config, CreditManager, Credits, EntryKind, EntryOptions, GrantOptions, KeyRef, SpendWindow, Timestamp, Usage,
};
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

/// The raw write ceiling: the charge's two statements (conditional balance
/// update, entry insert) with `per_commit` charges in each durable commit, on
/// a scratch account of the same file. Checks that the account's balance
/// equals the sum of its entries, then removes the raw rows (they bypass the
/// ledger's rules, so the audit would flag them).
fn raw_ceiling(path: &std::path::Path, per_commit: usize, total: usize) -> Row {
    let mut raw_w = Connection::open(path).expect("raw open");
    raw_w.pragma_update(None, "synchronous", "FULL").expect("pragma");
    raw_w.busy_timeout(Duration::from_secs(30)).expect("busy timeout");
    let user = format!("raw-{per_commit}");
    let start_balance: i64 = 1_000_000_000_000;
    raw_w
        .execute(
            "INSERT INTO creditgate_accounts (user_id, balance, created_at) VALUES (?1, ?2, 0)",
            params![user, start_balance],
        )
        .expect("raw account");
    let batches = total.div_ceil(per_commit);
    let mut lat = Vec::with_capacity(batches);
    let start = Instant::now();
    for b in 0..batches {
        let t0 = Instant::now();
        let tx = raw_w.transaction().expect("begin");
        for i in 0..per_commit {
            let bal: i64 = tx
                .query_row(
                    "UPDATE creditgate_accounts SET balance = balance - 1000000, last_seq = last_seq + 1 \
                     WHERE user_id = ?1 AND balance >= 1000000 RETURNING balance",
                    [&user],
                    |r| r.get(0),
                )
                .expect("update");
            tx.execute(
                "INSERT INTO creditgate_entries (id, user_id, seq, kind, amount, balance_after, created_at) \
                 VALUES (?1, ?2, ?3, 'usage', -1000000, ?4, 0)",
                params![uuid::Uuid::now_v7().to_string(), user, (b * per_commit + i + 1) as i64, bal],
            )
            .expect("insert");
        }
        tx.commit().expect("commit");
        lat.push(t0.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    let (balance, sum, count): (i64, i64, i64) = raw_w
        .query_row(
            "SELECT (SELECT balance FROM creditgate_accounts WHERE user_id = ?1), \
             (SELECT COALESCE(SUM(amount), 0) FROM creditgate_entries WHERE user_id = ?1), \
             (SELECT COUNT(*) FROM creditgate_entries WHERE user_id = ?1)",
            [&user],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("raw check");
    assert_eq!(balance, start_balance + sum, "raw ceiling: balance is not the sum of its entries");
    assert_eq!(count as usize, batches * per_commit, "raw ceiling: entries lost");
    raw_w
        .execute("DELETE FROM creditgate_entries WHERE user_id = ?1", [&user])
        .and_then(|_| raw_w.execute("DELETE FROM creditgate_accounts WHERE user_id = ?1", [&user]))
        .expect("remove the raw rows");
    lat.sort();
    // Latency per commit of `per_commit` charges.
    Row {
        name: format!("record_usage, raw rusqlite ceiling ({per_commit} per commit)"),
        ops_per_s: (batches * per_commit) as f64 / secs,
        p50_us: percentile(&lat, 0.5),
        p99_us: percentile(&lat, 0.99),
    }
}

/// Charges `threads` × `per` usages on `secret` and checks the result: the
/// balance fell by exactly the returned charges, and the audit holds.
fn usage_row(m: &CreditManager, name: &str, secret: &str, user: &str, threads: usize, per: usize, tag: &str) -> Row {
    let before = m.get_balance(user).expect("balance").micros();
    let charged = std::sync::atomic::AtomicI64::new(0);
    let row = timed(name, threads, per, &|t, i| {
        let usage = Usage::new(1_000, 0, None);
        let c = m.record_usage(KeyRef::Secret(secret), usage, Some(&format!("{tag}-{t}-{i}"))).expect("usage");
        assert!(!c.replayed);
        charged.fetch_add(c.charged.micros(), std::sync::atomic::Ordering::Relaxed);
    });
    let after = m.get_balance(user).expect("balance").micros();
    assert_eq!(before - after, charged.into_inner(), "{name}: the balance is not the sum of the charges (lost update)");
    assert!(m.audit().expect("audit").ok, "{name}: audit failed");
    row
}

/// One line of the issue 16 table: creditgate against its baseline.
fn compare(name: &str, cg: &Row, base: &Row, target: f64, target_text: &str) -> String {
    let ratio = cg.ops_per_s / base.ops_per_s;
    format!(
        "| {name} | {:.0} | {:.0} | {ratio:.2}× | {target_text} | {} | {:.1} / {:.1} | {} |",
        cg.ops_per_s,
        base.ops_per_s,
        if target_text == "–" {
            "–"
        } else if ratio >= target {
            "yes"
        } else {
            "no"
        },
        cg.p50_us,
        cg.p99_us,
        if base.p50_us.is_nan() { "–".to_string() } else { format!("{:.1} / {:.1}", base.p50_us, base.p99_us) },
    )
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
    let usage = Usage::new(1_000, 0, None);
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

    // 2. durable record_usage with 1, 8 and 32 callers, each checked.
    let total = if quick { 256 } else { 8_192 };
    for threads in [1, 8, 32] {
        let name = format!("record_usage, creditgate ({threads} callers)");
        rows.push(usage_row(&m, &name, &secret, "bench", threads, total / threads, &threads.to_string()));
    }
    // The ceilings: the raw statements, 8 per durable commit (the batch a
    // group commit of 8 callers can reach) and 100 per commit.
    rows.push(raw_ceiling(&path, 8, total));
    rows.push(raw_ceiling(&path, 100, total.max(800)));

    // 3. the policy rows: an account with an expiring grant, a key cap and a
    // rate limit (high enough never to refuse). Set after the plain rows: a
    // rate limit on any key turns rate counting on for the whole ledger.
    m.record_payment("policy", "pay-policy", 100_000_000, "USD").expect("payment");
    let pkey = m.create_api_key("policy", None).expect("key");
    let psecret = pkey.secret.expose().to_string();
    let in_30_days = Timestamp(Timestamp::now().0 + 30 * 86_400 * 1_000_000);
    let grant = GrantOptions { expires_at: Some(in_30_days), ..GrantOptions::default() };
    let amount = Credits::from_credits(1_000_000).expect("amount");
    m.add_credits_with("policy", amount, EntryKind::Grant, &EntryOptions::default(), &grant).expect("grant");
    m.set_key_limit(pkey.key_id, Some(amount), SpendWindow::Daily, None).expect("key cap");
    m.set_rate_limit(pkey.key_id, Some(1_000_000_000), Some(creditgate::MAX_TOKENS_PER_MINUTE)).expect("rate limit");
    rows.push(timed("verify, creditgate, policy account (1 thread)", 1, n, &|_, _| {
        m.verify_api_key_credits(&psecret, one).expect("verify");
    }));
    rows.push(usage_row(
        &m,
        "record_usage, creditgate, policy account (8 callers)",
        &psecret,
        "policy",
        8,
        total / 8,
        "p",
    ));

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
                    let usage = Usage::new(1_000, 0, None);
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
    let row = |name: &str| rows.iter().find(|r| r.name == name).expect("row");
    println!(
        "\n### Issue 16, Rust side: creditgate against the hand-written baseline, same run\n\n\
         | path | creditgate ops/s | baseline ops/s | ratio (creditgate/baseline) | target | met? | \
         creditgate p50 / p99 µs | baseline p50 / p99 µs |\n|---|---:|---:|---:|---|---|---:|---:|"
    );
    let (cg_verify, raw_verify) = (row("verify, creditgate (1 thread)"), row("verify, raw rusqlite floor (1 thread)"));
    println!(
        "{}",
        compare("verify vs the raw rusqlite lookup", cg_verify, raw_verify, 1.0 / 1.5, "≥ 0.67× (≤ 1.5× the time)")
    );
    let cg8 = row("record_usage, creditgate (8 callers)");
    let raw8 = row("record_usage, raw rusqlite ceiling (8 per commit)");
    println!("{}", compare("record_usage, 8 callers, vs the raw ceiling at 8 per commit", cg8, raw8, 0.6, "≥ 0.60×"));
    let raw100 = row("record_usage, raw rusqlite ceiling (100 per commit)");
    println!("{}", compare("record_usage, 8 callers, vs the raw ceiling at 100 per commit", cg8, raw100, 0.0, "–"));
    let pv = row("verify, creditgate, policy account (1 thread)");
    println!(
        "{}",
        compare("verify, policy account vs plain (baseline: creditgate plain)", pv, cg_verify, 1.0 / 1.5, "≥ 0.67×")
    );
    let pu = row("record_usage, creditgate, policy account (8 callers)");
    println!(
        "{}",
        compare(
            "record_usage 8 callers, policy account vs plain (baseline: creditgate plain)",
            pu,
            cg8,
            1.0 / 1.5,
            "≥ 0.67×"
        )
    );
    println!(
        "\n(checked at the end of each write row: creditgate's audit ok and its balance fell by exactly the charges \
         returned; each raw ceiling's balance equals the sum of its entries. Raw ceiling latencies are per commit.)"
    );
    println!("\n| memory, {entries} ledger entries and {keys} keys | value |\n|---|---:|");
    println!("| database bytes per ledger entry (usage entries, checkpointed file) | {bytes_per_entry:.0} |");
    println!(
        "| resident set of a fresh process after open + verify + record_usage | {:.1} MiB |",
        serving_kib as f64 / 1024.0
    );
    println!("| peak resident set including an audit of every entry | {:.1} MiB |", peak_kib as f64 / 1024.0);
    println!("\n(filled {fill} entries with 32 callers in {fill_secs:.1} s: {:.0}/s)", fill as f64 / fill_secs);
}
