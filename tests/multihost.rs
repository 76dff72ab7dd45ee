//! Several gateway hosts sharing one PostgreSQL ledger: ≥ 4 OS processes
//! (this test executable re-invoked, each with its own manager and pool),
//! several threads each, hammering the same accounts at the same moment with
//! strict deducts, usage charges (fresh and with request ids shared by all
//! hosts), holds, idempotent payments and deducts whose ids every host sends,
//! and API-key creation racing the first-key rule. Then, on the ledger:
//! no strict operation overdrew, every idempotent id has exactly one entry,
//! every user got exactly one "first key", the counts add up and the audit
//! is clean.
//!
//! Runs under `scripts/test-postgres.sh` (CREDITGATE_TEST_BACKEND=postgres);
//! on SQLite it skips with a message.

mod common;

use common::pg;
use creditgate::{
    Config, CreditManager, Credits, EntryKind, EntryOptions, ErrorCode, HoldAmount, KeyRef, Settlement, Usage,
};
use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WORKERS: usize = 4;
const THREADS: usize = 4;
const ROUNDS: usize = 12;
const PAYERS: usize = 5;
/// Credits the shared account starts with: less than the hosts try to take.
const SHARED_START: i64 = 400;
const DEDUCT: i64 = 3;
const HOLD: i64 = 2;

const ENV_URL: &str = "CREDITGATE_MULTIHOST_URL";
const ENV_WORKER: &str = "CREDITGATE_MULTIHOST_WORKER";
const ENV_START: &str = "CREDITGATE_MULTIHOST_START_MS";
const ENV_KEY: &str = "CREDITGATE_MULTIHOST_KEY";
const RESULT_TAG: &str = "MULTIHOST_RESULT ";

fn config(url: &str) -> Config {
    // The first key is free (min 0) and later keys need 1 credit, so for a
    // user at 0 credits exactly one create_api_key may succeed: two hosts
    // both deciding "first key" would show up as two keys.
    // Test mode: every write audits the account it moved.
    Config::new()
        .check_invariants(true)
        .database_url(url)
        .pool_size(4)
        .and_then(|c| c.min_credits_api_key(Credits::ZERO))
        .expect("test config")
}

fn credits(c: i64) -> Credits {
    Credits::from_credits(c).expect("small amount")
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64
}

/// All the entries of a user, oldest first.
fn all_entries(m: &CreditManager, user: &str) -> Vec<creditgate::Entry> {
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = m.transactions(user, 1000, before).expect("transactions");
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        let done = page.len() < 1000;
        out.extend(page);
        if done {
            break;
        }
    }
    out.reverse();
    out
}

#[test]
fn multihost_processes_share_one_postgres_ledger() {
    if !pg::is_postgres() {
        eprintln!(
            "multihost: SKIPPED: needs CREDITGATE_TEST_BACKEND=postgres (scripts/test-postgres.sh runs it on a throwaway server)"
        );
        return;
    }
    let (url, _guard) = common::shared_url();
    let m = CreditManager::open(config(&url)).expect("open the shared ledger");
    m.add_credits("shared", credits(SHARED_START), EntryKind::Grant, &EntryOptions::default()).expect("fund shared");
    m.add_credits("idem-user", credits(1_000_000), EntryKind::Grant, &EntryOptions::default()).expect("fund idem-user");
    let key = m.create_api_key("shared", Some("gateway")).expect("the shared account's key");

    let start_ms = now_ms() + 2_500;
    let exe = std::env::current_exe().expect("the test executable");
    let t0 = Instant::now();
    let children: Vec<_> = (0..WORKERS)
        .map(|w| {
            Command::new(&exe)
                .args(["multihost_worker", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
                .env(ENV_URL, &url)
                .env(ENV_WORKER, w.to_string())
                .env(ENV_START, start_ms.to_string())
                .env(ENV_KEY, key.secret.expose())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn a worker process")
        })
        .collect();
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for (w, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().expect("wait for a worker");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "worker {w} failed ({}):\n{stdout}\n{stderr}", out.status);
        let line = stdout
            .lines()
            .find_map(|l| l.split_once(RESULT_TAG).map(|(_, json)| json))
            .unwrap_or_else(|| panic!("worker {w} printed no result (did the test run?):\n{stdout}\n{stderr}"));
        let counts: BTreeMap<String, u64> = serde_json::from_str(line).expect("worker result JSON");
        eprintln!("multihost: worker {w} (pid {}): {counts:?}", counts.get("pid").copied().unwrap_or(0));
        for (k, v) in counts {
            if k != "pid" {
                *totals.entry(k).or_default() += v;
            }
        }
    }
    let elapsed = t0.elapsed();
    let t = |k: &str| totals.get(k).copied().unwrap_or(0);
    let per_id = (THREADS * ROUNDS) as u64;

    // Strict deducts never overdrew; usage and holds add up.
    let shared = all_entries(&m, "shared");
    let deducts: Vec<_> = shared.iter().filter(|e| e.kind == EntryKind::Deduct).collect();
    assert_eq!(deducts.len() as u64, t("deduct_ok"), "one entry per successful deduct");
    for e in &deducts {
        assert!(!e.balance_after.is_negative(), "a strict deduct overdrew: {e:?}");
    }
    assert!(
        t("deduct_ok") > 0 && t("deduct_denied") > 0,
        "the strict deducts must both pass and be refused: {totals:?}"
    );
    let usage: Vec<_> = shared.iter().filter(|e| e.kind == EntryKind::Usage).collect();
    assert_eq!(usage.len() as u64, t("usage_ok") + per_id + t("settle_ok"), "usage entries");
    let mut by_key: HashMap<&str, u32> = HashMap::new();
    for e in &shared {
        if let Some(k) = e.idempotency_key.as_deref() {
            *by_key.entry(k).or_default() += 1;
        }
    }
    assert!(by_key.values().all(|&n| n == 1), "duplicate idempotency keys on shared");
    let common_ids = by_key.keys().filter(|k| k.starts_with("usage:common-")).count() as u64;
    assert_eq!(common_ids, per_id, "one usage entry per shared request id");
    assert_eq!(t("common_fresh"), per_id, "exactly one host charged each shared request id");
    assert_eq!(t("common_fresh") + t("common_replayed"), per_id * WORKERS as u64);
    assert_eq!(t("hold_ok"), t("settle_ok"), "every hold was settled once");

    // Payments: every host delivered every payment; each credited once.
    let mut purchases = 0u64;
    let mut paid = Credits::ZERO;
    for p in 0..PAYERS {
        let user = format!("payer-{p}");
        let entries = all_entries(&m, &user);
        let mut ids: HashMap<String, u32> = HashMap::new();
        for e in &entries {
            assert_eq!(e.kind, EntryKind::Purchase);
            *ids.entry(e.reference.clone().unwrap_or_default()).or_default() += 1;
        }
        assert!(ids.values().all(|&n| n == 1), "a payment was credited twice for {user}");
        purchases += entries.len() as u64;
        paid = paid.checked_add(m.get_balance(&user).expect("balance")).expect("sum");
    }
    assert_eq!(purchases, per_id, "one purchase per payment id");
    assert_eq!(t("pay_fresh"), per_id);
    assert_eq!(t("pay_fresh") + t("pay_replayed"), per_id * WORKERS as u64);
    assert_eq!(paid, credits(per_id as i64 * 1000), "$1 per payment, credited once");

    // Idempotent deducts sent by every host: one entry each.
    let idem = all_entries(&m, "idem-user");
    let idem_deducts = idem.iter().filter(|e| e.kind == EntryKind::Deduct).count() as u64;
    assert_eq!(idem_deducts, per_id);
    assert_eq!(t("idem_fresh"), per_id);
    assert_eq!(t("idem_fresh") + t("idem_replayed"), per_id * WORKERS as u64);
    assert_eq!(m.get_balance("idem-user").expect("balance"), credits(1_000_000 - per_id as i64));

    // Key creation raced the first-key rule: exactly one key per user.
    let mut first_keys = 0u64;
    for th in 0..THREADS {
        for r in 0..ROUNDS {
            let user = format!("race-{th}-{r}");
            let keys = m.list_api_keys(&user).expect("keys");
            assert_eq!(keys.len(), 1, "{user} got {} keys: the first-key decision was not unique", keys.len());
            assert!(m.account(&user).expect("account").first_key_issued);
            first_keys += 1;
        }
    }
    assert_eq!(t("key_ok"), per_id, "exactly one successful creation per racing user");
    assert_eq!(t("key_denied"), per_id * (WORKERS as u64 - 1));
    let report = m.report().expect("report");
    assert_eq!(report.key_generation_attempts, per_id * WORKERS as u64 + 1);
    assert_eq!(report.key_generation_successes, per_id + 1);

    let audit = m.audit().expect("audit");
    assert!(audit.ok, "audit: {:?}", audit.mismatches);
    let balance = m.get_balance("shared").expect("balance");
    let ops: u64 = totals.iter().filter(|(k, _)| !k.ends_with("_overdraft")).map(|(_, v)| v).sum();
    let summary = format!(
        "multihost: {WORKERS} processes x {THREADS} threads, {ops} calls in {:.2}s: \
         strict deducts {} ok / {} refused (none overdrew), usage {} ({} overdrafts), \
         shared request ids {} charged once / {} replayed, holds {} ok / {} refused / {} settled, \
         payments {} credited / {} replayed, idempotent deducts {} / {} replayed, \
         first keys {first_keys} ({} created / {} refused), shared balance {balance}, \
         audit ok: {} accounts, {} entries",
        elapsed.as_secs_f64(),
        t("deduct_ok"),
        t("deduct_denied"),
        t("usage_ok"),
        t("usage_overdraft"),
        t("common_fresh"),
        t("common_replayed"),
        t("hold_ok"),
        t("hold_denied"),
        t("settle_ok"),
        t("pay_fresh"),
        t("pay_replayed"),
        t("idem_fresh"),
        t("idem_replayed"),
        t("key_ok"),
        t("key_denied"),
        audit.accounts_checked,
        audit.entries_checked,
    );
    eprintln!("{summary}");
    // scripts/test-postgres.sh prints it after the run.
    if let Ok(path) = std::env::var("CREDITGATE_MULTIHOST_REPORT") {
        std::fs::write(path, format!("{summary}\n")).expect("write the multihost report");
    }
}

/// One "host": run only by the test above, in its own process.
#[test]
#[ignore = "a worker process of multihost_processes_share_one_postgres_ledger"]
fn multihost_worker() {
    let Ok(url) = std::env::var(ENV_URL) else {
        eprintln!("multihost_worker: only run by multihost_processes_share_one_postgres_ledger");
        return;
    };
    let worker: usize = std::env::var(ENV_WORKER).expect("worker").parse().expect("worker number");
    let start_ms: u64 = std::env::var(ENV_START).expect("start").parse().expect("start time");
    let secret = std::env::var(ENV_KEY).expect("key");
    let m = CreditManager::open(config(&url)).expect("open the shared ledger");
    if now_ms() > start_ms {
        eprintln!("multihost_worker {worker}: started {} ms after the common start", now_ms() - start_ms);
    }
    let results: Vec<BTreeMap<&'static str, u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|th| {
                let m = m.clone();
                let secret = secret.as_str();
                s.spawn(move || {
                    std::thread::sleep(Duration::from_millis(start_ms.saturating_sub(now_ms())));
                    hammer(&m, secret, worker, th)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a worker thread panicked")).collect()
    });
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    for r in results {
        for (k, v) in r {
            *counts.entry(k).or_default() += v;
        }
    }
    counts.insert("pid", u64::from(std::process::id()));
    println!("\n{RESULT_TAG}{}", serde_json::to_string(&counts).expect("JSON"));
}

fn hammer(m: &CreditManager, secret: &str, w: usize, th: usize) -> BTreeMap<&'static str, u64> {
    let mut c: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut inc = |k: &'static str| *c.entry(k).or_default() += 1;
    let key = KeyRef::Secret(secret);
    // First, at the common start: thread `th` of every host creates keys for
    // the same users in the same order, so the hosts race on each of them.
    for r in 0..ROUNDS {
        match m.create_api_key(&format!("race-{th}-{r}"), None) {
            Ok(_) => inc("key_ok"),
            Err(e) if e.code() == ErrorCode::InsufficientCredits => inc("key_denied"),
            Err(e) => panic!("create_api_key: {e}"),
        }
    }
    for r in 0..ROUNDS {
        // Every host runs the same steps in a different order.
        for step in 0..6 {
            match (step + w + r) % 6 {
                0 => match m.deduct_credits("shared", credits(DEDUCT), &EntryOptions::default()) {
                    Ok(_) => inc("deduct_ok"),
                    Err(e) if e.code() == ErrorCode::InsufficientCredits => inc("deduct_denied"),
                    Err(e) => panic!("deduct: {e}"),
                },
                1 => {
                    let usage = Usage::new(1000, 500, None);
                    let ch = m.record_usage(key, usage, Some(&format!("own-{w}-{th}-{r}"))).expect("usage");
                    assert!(!ch.replayed);
                    inc("usage_ok");
                    if ch.overdraft {
                        inc("usage_overdraft");
                    }
                }
                2 => {
                    let usage = Usage::new(1000, 0, None);
                    let ch = m.record_usage(key, usage, Some(&format!("common-{th}-{r}"))).expect("shared usage");
                    inc(if ch.replayed { "common_replayed" } else { "common_fresh" });
                }
                3 => {
                    let user = format!("payer-{}", (th * ROUNDS + r) % PAYERS);
                    let e = m.record_payment(&user, &format!("pay-{th}-{r}"), 100, "usd").expect("payment");
                    inc(if e.replayed { "pay_replayed" } else { "pay_fresh" });
                }
                4 => {
                    let k = format!("idem-{th}-{r}");
                    let opts = EntryOptions { idempotency_key: Some(&k), ..EntryOptions::default() };
                    let e = m.deduct_credits("idem-user", credits(1), &opts).expect("idempotent deduct");
                    inc(if e.replayed { "idem_replayed" } else { "idem_fresh" });
                }
                _ => {
                    let rid = format!("hold-{w}-{th}-{r}");
                    match m.reserve(secret, HoldAmount::Credits(credits(HOLD)), 60, Some(&rid)) {
                        Ok(h) => {
                            inc("hold_ok");
                            let usage = Usage::new(500, 0, None);
                            let ch = m.settle(h.hold_id, Settlement::Tokens(usage)).expect("settle");
                            assert!(!ch.replayed);
                            inc("settle_ok");
                        }
                        Err(e) if e.code() == ErrorCode::InsufficientCredits => inc("hold_denied"),
                        Err(e) => panic!("reserve: {e}"),
                    }
                }
            }
        }
    }
    c
}
