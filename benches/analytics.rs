//! Usage analytics on a large ledger (issue 20): `usage_summary` and
//! `statement` on 1,000,000 usage entries.
//!
//! `cargo bench --bench analytics` prints Markdown tables for BENCHMARKS.md;
//! `CREDITGATE_BENCH_QUICK=1` runs a short smoke version on 20,000 entries
//! (no timing claims). The ledger: 1,000 accounts over ~365 days, one heavy
//! account with a tenth of the entries and the rest skewed (low account
//! numbers busier), two to five keys per account, five models (one price
//! change in the middle of the year), a third of the calls with cached
//! prompt tokens and some with cache writes. It is built through the public
//! API (`record_usage` from 4 threads, SQLite `Synchronous::Normal`), the
//! doc-hidden `TestClock` moving the ledger's time forward after each call
//! so the entries spread evenly over the year.
//!
//! With `CREDITGATE_BENCH_POSTGRES_URL` (a role allowed to CREATE DATABASE,
//! e.g. `CREDITGATE_TEST_POSTGRES_URL` from `scripts/pg.sh`) the same ledger
//! is measured on PostgreSQL: the rows of the SQLite ledger (accounts, price
//! versions, entries: exactly what `record_usage` wrote) are copied into a
//! fresh database with `COPY`, then `ANALYZE`; building a million entries
//! through the API takes minutes there.
//!
//! Every query is checked: the whole ledger's rows, by day and by model,
//! add up to the charges `record_usage` returned; an account's month by day
//! and by model agree; a statement reconciles (opening + lines = closing);
//! PostgreSQL answers exactly what SQLite answers. A failed check panics, so
//! the smoke run in the test command fails too.

use creditgate::{
    Config, CreditManager, Credits, KeyId, KeyRef, ModelPrice, Synchronous, TestClock, Timestamp, Usage, UsageGroup,
    UsageQuery, UsageRow,
};
use rusqlite::Connection;
use rusqlite::types::ValueRef;
use std::io::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

const DAY: i64 = 86_400_000_000;
const ACCOUNTS: usize = 1_000;
const MODELS: [&str; 5] = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-70b", "embed-small"];
const THREADS: u64 = 4;

fn account(i: usize) -> String {
    format!("acct-{i:04}")
}

/// splitmix64: a deterministic stream per thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The built ledger: its SQLite file, its time span and what was charged.
struct Ledger {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    manager: CreditManager,
    start: Timestamp,
    entries: u64,
    charged: i64,
    build_secs: f64,
}

fn credits(micros: i64) -> Credits {
    Credits::from_micros(micros)
}

/// Builds `n` usage entries over a year through `record_usage`.
fn build(n: u64) -> Ledger {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("analytics.db");
    let clock = TestClock::new();
    let config = Config::new()
        .database_url(format!("sqlite:///{}", path.display()))
        .synchronous(Synchronous::Normal)
        .test_clock(clock.clone());
    let m = CreditManager::open(config).expect("open");
    let start = Timestamp::now();
    // Prices: cache-read and cache-write rates on some models, a request fee
    // on one, and a price change half way through the year.
    let price = |i: i64, o: i64, cached: Option<i64>, write: Option<i64>, fee: i64| ModelPrice {
        input_per_1k: credits(i),
        output_per_1k: credits(o),
        cached_input_per_1k: cached.map(credits),
        cache_write_per_1k: write.map(credits),
        request_fee: credits(fee),
    };
    m.set_model_pricing("gpt-4o", price(2_500, 10_000, Some(1_250), None, 0), None).expect("price");
    let half_year = Timestamp(start.0 + 182 * DAY);
    m.set_model_pricing("gpt-4o", price(2_000, 8_000, Some(1_000), None, 0), Some(half_year)).expect("price");
    m.set_model_pricing("gpt-4o-mini", price(150, 600, Some(75), None, 0), None).expect("price");
    m.set_model_pricing("claude-sonnet", price(3_000, 15_000, Some(300), Some(3_750), 0), None).expect("price");
    m.set_model_pricing("llama-70b", price(900, 900, None, None, 100), None).expect("price");
    m.set_model_pricing("embed-small", price(20, 0, None, None, 0), None).expect("price");
    let mut keys: Vec<Vec<KeyId>> = Vec::with_capacity(ACCOUNTS);
    for a in 0..ACCOUNTS {
        let user = account(a);
        m.record_payment(&user, &format!("pay-{user}"), 10_000_000, "USD").expect("payment");
        let count = if a == 0 { 5 } else { 2 + a % 2 };
        keys.push((0..count).map(|k| m.create_api_key(&user, Some(&format!("k{k}"))).expect("key").key_id).collect());
    }
    // Each call moves the clock by the year over `n`: the entries cover
    // ~365 days evenly, whatever the threads' interleaving.
    let step = 365 * DAY / n as i64;
    let charged = AtomicI64::new(0);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (m, keys, clock, charged) = (&m, &keys, &clock, &charged);
            s.spawn(move || {
                let mut rng = Rng(t + 1);
                let mut sum = 0;
                for _ in (t..n).step_by(THREADS as usize) {
                    // A tenth to the heavy account, the rest skewed toward
                    // low account numbers (u² over 1..1000).
                    let a = if rng.below(10) == 0 {
                        0
                    } else {
                        let u = rng.unit();
                        1 + ((u * u) * (ACCOUNTS - 1) as f64) as usize
                    };
                    let key = keys[a][rng.below(keys[a].len() as u64) as usize];
                    let model = MODELS[rng.below(MODELS.len() as u64) as usize];
                    let input = 200 + rng.below(4_000) as i64;
                    let output = if model == "embed-small" { 0 } else { 20 + rng.below(1_000) as i64 };
                    let mut usage = Usage::new(input, output, Some(model));
                    if rng.below(3) == 0 {
                        usage.cached_input_tokens = input / 2;
                    }
                    if model == "claude-sonnet" && rng.below(10) == 0 {
                        usage.cache_write_tokens = input / 4;
                    }
                    let c = m.record_usage(KeyRef::Id(key), usage, None).expect("usage");
                    sum += c.charged.micros();
                    clock.advance(step);
                }
                charged.fetch_add(sum, Ordering::Relaxed);
            });
        }
    });
    let build_secs = t0.elapsed().as_secs_f64();
    Ledger { _dir: dir, path, manager: m, start, entries: n, charged: charged.into_inner(), build_secs }
}

/// p50, p95 and max of `reps` calls of `f` (after one untimed warm-up
/// call, whose time is returned first), and the last result.
fn measure<T>(reps: usize, f: &dyn Fn() -> T) -> ([f64; 4], T) {
    let t0 = Instant::now();
    let mut out = f();
    let first = t0.elapsed();
    let mut lat: Vec<Duration> = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t0 = Instant::now();
        out = f();
        lat.push(t0.elapsed());
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3;
    ([first.as_secs_f64() * 1e3, pct(0.5), pct(0.95), pct(1.0)], out)
}

fn total(rows: &[UsageRow]) -> (u64, i64, i64) {
    let requests = rows.iter().map(|r| r.requests).sum();
    let credits = rows.iter().map(|r| r.credits.micros()).sum();
    let tokens = rows.iter().map(|r| r.input_tokens + r.output_tokens + r.cached_input_tokens).sum();
    (requests, credits, tokens)
}

struct Line {
    name: &'static str,
    rows: usize,
    ms: [f64; 4],
    target: &'static str,
    limit_ms: f64,
}

/// Runs the six measured queries on `m`; returns the lines and the rows of
/// each summary (to compare backends).
fn run_queries(m: &CreditManager, l: &Ledger, quick: bool) -> (Vec<Line>, Vec<Vec<UsageRow>>) {
    let month = (Timestamp(l.start.0 + 182 * DAY), Timestamp(l.start.0 + 212 * DAY));
    let year = (l.start, Timestamp(l.start.0 + 366 * DAY));
    let q = |user: Option<&str>, (since, until): (Timestamp, Timestamp), g: UsageGroup| UsageQuery {
        user_id: user.map(str::to_string),
        since: Some(since),
        until: Some(until),
        group_by: vec![g],
        ..UsageQuery::default()
    };
    let (few, many) = if quick { (3, 10) } else { (20, 200) };
    let heavy = account(0);
    let typical = account(ACCOUNTS / 2);
    let mut lines = Vec::new();
    let mut all = Vec::new();
    let mut summary = |name, reps, query: UsageQuery, target, limit_ms| {
        let (ms, rows) = measure(reps, &|| m.usage_summary(&query).expect("usage_summary"));
        lines.push(Line { name, rows: rows.len(), ms, target, limit_ms });
        all.push(rows);
    };
    summary(
        "heavy account (~100k entries/yr), a month by day",
        many,
        q(Some(&heavy), month, UsageGroup::Day),
        "p95 < 100 ms",
        100.0,
    );
    summary("heavy account, a month by model", many, q(Some(&heavy), month, UsageGroup::Model), "p95 < 100 ms", 100.0);
    summary("typical account, a month by day", many, q(Some(&typical), month, UsageGroup::Day), "p95 < 100 ms", 100.0);
    summary("whole ledger, the year by day", few, q(None, year, UsageGroup::Day), "< 2 s", 2_000.0);
    summary("whole ledger, the year by model", few, q(None, year, UsageGroup::Model), "–", f64::INFINITY);
    let (ms, st) = measure(many, &|| m.statement(&heavy, month.0, month.1).expect("statement"));
    let lines_amount: i64 = st.lines.iter().map(|x| x.amount.micros()).sum();
    assert_eq!(st.opening_balance.micros() + lines_amount, st.closing_balance.micros(), "statement does not reconcile");
    lines.push(Line {
        name: "statement(heavy account, a month)",
        rows: st.lines.len(),
        ms,
        target: "–",
        limit_ms: f64::INFINITY,
    });
    // The checks: a month by day and by model agree; the year adds up to
    // every charge made.
    assert_eq!(total(&all[0]), total(&all[1]), "heavy month: by day and by model differ");
    assert!(total(&all[0]).0 > 0 && total(&all[2]).0 > 0, "a measured month is empty");
    let year_day = total(&all[3]);
    assert_eq!(year_day, total(&all[4]), "the year by day and by model differ");
    assert_eq!(year_day.0, l.entries, "the year's requests are not the entries made");
    assert_eq!(year_day.1, l.charged, "the year's credits are not the charges made");
    let usage_in_statement: u64 =
        st.lines.iter().filter(|x| x.kind == creditgate::EntryKind::Usage).map(|x| x.entries).sum();
    assert_eq!(usage_in_statement, total(&all[0]).0, "statement and summary count different usage");
    (lines, all)
}

fn print_table(title: &str, lines: &[Line]) {
    println!("\n### {title}\n");
    println!(
        "| query | rows | first ms | p50 ms | p95 ms | max ms | target | met? |\n|---|---:|---:|---:|---:|---:|---|---|"
    );
    for l in lines {
        let met = if l.limit_ms.is_infinite() {
            "–"
        } else if l.name.starts_with("whole") {
            if l.ms[3] < l.limit_ms { "yes" } else { "no" }
        } else if l.ms[2] < l.limit_ms {
            "yes"
        } else {
            "no"
        };
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {met} |",
            l.name, l.rows, l.ms[0], l.ms[1], l.ms[2], l.ms[3], l.target
        );
    }
}

/// `url` with its database name replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let (scheme, rest) = base.split_once("://").expect("a postgresql:// URL");
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    match query {
        Some(q) => format!("{scheme}://{authority}/{db}?{q}"),
        None => format!("{scheme}://{authority}/{db}"),
    }
}

/// Copies `table` from the SQLite file into PostgreSQL (COPY, text format):
/// the same columns, the same values.
fn copy_table(src: &Connection, dst: &mut postgres::Client, table: &str) -> u64 {
    let cols: Vec<String> = src
        .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("columns");
    let list = cols.join(", ");
    let mut stmt = src.prepare(&format!("SELECT {list} FROM {table}")).expect("select");
    let mut rows = stmt.query([]).expect("rows");
    let mut w = dst.copy_in(&format!("COPY {table} ({list}) FROM STDIN")).expect("copy");
    let mut buf = Vec::with_capacity(1 << 20);
    let mut n = 0;
    while let Some(r) = rows.next().expect("row") {
        for i in 0..cols.len() {
            if i > 0 {
                buf.push(b'\t');
            }
            match r.get_ref(i).expect("value") {
                ValueRef::Null => buf.extend_from_slice(b"\\N"),
                ValueRef::Integer(v) => write!(buf, "{v}").expect("write"),
                ValueRef::Real(v) => write!(buf, "{v}").expect("write"),
                ValueRef::Text(t) => {
                    for &b in t {
                        match b {
                            b'\\' => buf.extend_from_slice(b"\\\\"),
                            b'\t' => buf.extend_from_slice(b"\\t"),
                            b'\n' => buf.extend_from_slice(b"\\n"),
                            b'\r' => buf.extend_from_slice(b"\\r"),
                            _ => buf.push(b),
                        }
                    }
                }
                ValueRef::Blob(_) => panic!("{table}: unexpected blob"),
            }
        }
        buf.push(b'\n');
        n += 1;
        if buf.len() > 1 << 20 {
            w.write_all(&buf).expect("copy data");
            buf.clear();
        }
    }
    w.write_all(&buf).expect("copy data");
    w.finish().expect("copy finish");
    n
}

fn main() {
    let quick = std::env::var_os("CREDITGATE_BENCH_QUICK").is_some();
    let n: u64 = if quick { 20_000 } else { 1_000_000 };
    let l = build(n);
    let db_mib = std::fs::metadata(&l.path).map(|m| m.len()).unwrap_or(0) as f64 / (1 << 20) as f64;
    let (sqlite, sqlite_rows) = run_queries(&l.manager, &l, quick);
    let heavy = l.manager.usage_summary(&UsageQuery { user_id: Some(account(0)), ..UsageQuery::default() });
    let typical =
        l.manager.usage_summary(&UsageQuery { user_id: Some(account(ACCOUNTS / 2)), ..UsageQuery::default() });
    let (heavy, typical) = (total(&heavy.expect("heavy")).0, total(&typical.expect("typical")).0);

    println!(
        "\n{n} usage entries over 365 days, {ACCOUNTS} accounts (heavy {}: {heavy} entries; typical {}: {typical}), \
         built through record_usage from {THREADS} threads (SQLite, synchronous=NORMAL) in {:.1} s ({:.0}/s); \
         database {db_mib:.0} MiB before the WAL checkpoint{}",
        account(0),
        account(ACCOUNTS / 2),
        l.build_secs,
        n as f64 / l.build_secs,
        if quick { "; quick smoke run, numbers not meaningful" } else { "" }
    );
    print_table("SQLite", &sqlite);

    let Some(server) = std::env::var("CREDITGATE_BENCH_POSTGRES_URL").ok().filter(|u| !u.is_empty()) else {
        println!("\n(PostgreSQL skipped: set CREDITGATE_BENCH_POSTGRES_URL)");
        return;
    };
    let db = "creditgate_bench_analytics";
    let mut admin = postgres::Client::connect(&server, postgres::NoTls).expect("connect to PostgreSQL");
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).expect("drop db");
    admin.batch_execute(&format!("CREATE DATABASE {db}")).expect("create db");
    let url = with_database(&server, db);
    let pg = CreditManager::open(Config::new().database_url(&url)).expect("open PostgreSQL");
    let t0 = Instant::now();
    let src = Connection::open(&l.path).expect("open the SQLite file");
    let mut dst = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let mut copied = 0;
    for table in ["creditgate_accounts", "creditgate_prices", "creditgate_entries"] {
        copied += copy_table(&src, &mut dst, table);
    }
    dst.batch_execute("ANALYZE").expect("analyze");
    let copy_secs = t0.elapsed().as_secs_f64();
    let (postgres, pg_rows) = run_queries(&pg, &l, quick);
    assert!(pg_rows == sqlite_rows, "PostgreSQL and SQLite summarise the same ledger differently");
    println!(
        "\n(PostgreSQL: {copied} rows copied from the SQLite ledger with COPY, then ANALYZE, in {copy_secs:.1} s)"
    );
    print_table("PostgreSQL", &postgres);
    drop((pg, dst));
    admin.batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)")).expect("drop db");
}
