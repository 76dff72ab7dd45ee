//! Concurrency: threads on one manager, managers on one database, and OS
//! processes sharing one database file, all hammering one account. Strict
//! operations never overdraw, no update is lost, idempotent calls charge
//! once, and the audit balances. Processes × threads on an account near
//! zero: holds never exceed the balance, every usage overdraft is reported
//! and counted, charges equal the tokens priced. No timing assertions.

mod common;

use common::{NO_OPTS, assert_audit_ok, credits, err_code, grant, key_for, micros, with_key};
use creditgate::{Config, CreditManager, Credits, EntryKind, Error, ErrorCode, HoldAmount, KeyRef, Usage};
use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::thread;

const THREADS: usize = 8;

/// Every manager here runs in test mode: each write also audits the account
/// it moved, so a race that broke an invariant fails the write as `Internal`
/// at the step that broke it.
fn checked() -> Config {
    Config::new().check_invariants(true)
}

/// What one worker saw succeed.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
struct Tally {
    deducts: u64,
    deducted_micros: i64,
    denied: u64,
    charges: u64,
    charged_micros: i64,
    replays: u64,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.deducts += o.deducts;
        self.deducted_micros += o.deducted_micros;
        self.denied += o.denied;
        self.charges += o.charges;
        self.charged_micros += o.charged_micros;
        self.replays += o.replays;
    }

    fn to_line(self) -> String {
        format!(
            "CHILD-RESULT deducts={} deducted_micros={} denied={} charges={} charged_micros={} replays={}",
            self.deducts, self.deducted_micros, self.denied, self.charges, self.charged_micros, self.replays
        )
    }

    fn parse(line: &str) -> Option<Tally> {
        let rest = line.strip_prefix("CHILD-RESULT ")?;
        let mut t = Tally::default();
        for field in rest.split_whitespace() {
            let (name, value) = field.split_once('=')?;
            let v: i64 = value.parse().ok()?;
            match name {
                "deducts" => t.deducts = v as u64,
                "deducted_micros" => t.deducted_micros = v,
                "denied" => t.denied = v as u64,
                "charges" => t.charges = v as u64,
                "charged_micros" => t.charged_micros = v,
                "replays" => t.replays = v as u64,
                _ => return None,
            }
        }
        Some(t)
    }
}

/// Tokens of a shared request id: a function of the id, so every worker
/// that reports it sends the same usage (a replay, not a conflict).
fn shared_usage(id: u64) -> Usage<'static> {
    Usage::new(700 + (id % 13) as i64 * 97, (id % 5) as i64 * 131, None)
}

/// One worker's share of the hammering: strict deducts of 1–7 credits and
/// usage charges, some under request ids other workers also use.
fn hammer(m: &CreditManager, user: &str, key: &str, worker: u64, ops: u64) -> Tally {
    let mut t = Tally::default();
    let mut x = worker.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in 0..ops {
        // xorshift: cheap, deterministic per worker.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match (i + worker) % 3 {
            0 | 1 if i % 2 == 0 => {
                let amount = credits(1 + (x % 7) as i64);
                match m.deduct_credits(user, amount, &NO_OPTS) {
                    Ok(e) => {
                        assert!(!e.balance_after.is_negative(), "a strict deduct overdrew: {e:?}");
                        t.deducts += 1;
                        t.deducted_micros += amount.micros();
                    }
                    Err(Error::InsufficientCredits { required, available, .. }) => {
                        assert_eq!(required, amount);
                        assert!(available < required, "refused with {available} available for {required}");
                        t.denied += 1;
                    }
                    Err(e) => panic!("deduct failed: {e}"),
                }
            }
            0 | 1 => {
                let c = m
                    .record_usage(KeyRef::Secret(key), Usage::new((x % 3000) as i64, 0, None), None)
                    .expect("usage is never refused");
                t.charges += 1;
                t.charged_micros += c.charged.micros();
            }
            _ => {
                // 24 request ids shared by every worker (and every process).
                let id = x % 24;
                let c = m
                    .record_usage(KeyRef::Secret(key), shared_usage(id), Some(&format!("shared-{id}")))
                    .expect("a repeated request id with the same usage replays");
                if c.replayed {
                    t.replays += 1;
                } else {
                    t.charges += 1;
                    t.charged_micros += c.charged.micros();
                }
            }
        }
    }
    t
}

/// Checks the ledger against what the workers saw succeed.
fn check_ledger(m: &CreditManager, user: &str, initial: Credits, setup_entries: usize, total: Tally) {
    let entries = common::all_entries(m, user);
    let mut deducted = 0i64;
    let mut charged = 0i64;
    let mut shared = HashSet::new();
    let new_entries = &entries[..entries.len() - setup_entries];
    for e in new_entries {
        match e.kind {
            EntryKind::Deduct => {
                deducted -= e.amount.micros();
                assert!(!e.balance_after.is_negative(), "strict deduct overdrew: {e:?}");
            }
            EntryKind::Usage => {
                charged -= e.amount.micros();
                if let Some(k) = &e.idempotency_key {
                    assert!(shared.insert(k.clone()), "request {k} charged twice");
                }
            }
            other => panic!("unexpected {other} entry"),
        }
    }
    assert_eq!(new_entries.len() as u64, total.deducts + total.charges, "one entry per successful call");
    assert_eq!(deducted, total.deducted_micros, "deducts lost or invented");
    assert_eq!(charged, total.charged_micros, "usage lost or invented");
    let expected = initial.micros() - total.deducted_micros - total.charged_micros;
    assert_eq!(m.get_balance(user).unwrap(), micros(expected), "final balance");
    assert_audit_ok(m);
}

#[test]
fn threads_hammering_one_account_never_overdraw_or_lose_an_update() {
    let (m, _db) = common::manager_with(checked());
    let (key, _) = key_for(&m, "hot");
    let initial = credits(1500);
    grant(&m, "hot", initial);
    let setup_entries = m.transactions("hot", 1000, None).unwrap().len();
    let start = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS as u64)
        .map(|w| {
            let (m, key, start) = (m.clone(), key.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                hammer(&m, "hot", &key, w, 150)
            })
        })
        .collect();
    let mut total = Tally::default();
    for w in workers {
        total.add(w.join().expect("worker panicked"));
    }
    assert!(total.deducts > 0 && total.charges > 0, "{total:?}");
    assert!(total.denied > 0, "the account should have run dry: {total:?}");
    assert!(total.replays > 0, "shared request ids should have replayed: {total:?}");
    check_ledger(&m, "hot", initial, setup_entries, total);
}

#[test]
fn exactly_as_many_strict_deducts_succeed_as_the_balance_allows() {
    let (url, _db) = common::shared_url();
    // Two handles on one database: strictness must hold across pools too.
    let handles = [common::open(&url, checked()), common::open(&url, checked())];
    grant(&handles[0], "u", credits(100));
    let start = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|w| {
            let (m, start) = (handles[w % 2].clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                let mut ok = 0;
                for i in 0..20 {
                    let key = format!("w{w}-{i}");
                    match m.deduct_credits("u", credits(1), &with_key(&key)) {
                        Ok(_) => ok += 1,
                        Err(e) => assert_eq!(e.code(), ErrorCode::InsufficientCredits),
                    }
                }
                ok
            })
        })
        .collect();
    let ok: u32 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(ok, 100, "160 attempts at 1 credit on 100 credits");
    assert_eq!(handles[1].get_balance("u").unwrap(), Credits::ZERO);
    assert_audit_ok(&handles[1]);
}

#[test]
fn concurrent_holds_never_exceed_available() {
    let (m, _db) = common::manager_with(checked());
    let (key, _) = key_for(&m, "u");
    grant(&m, "u", credits(60));
    let start = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|w| {
            let (m, key, start) = (m.clone(), key.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                let mut held = Vec::new();
                for i in 0..12 {
                    // Deducts and holds compete for the same available credits.
                    if (w + i) % 4 == 0 {
                        match m.deduct_credits("u", credits(1), &NO_OPTS) {
                            Ok(_) => held.push(None),
                            Err(e) => assert_eq!(e.code(), ErrorCode::InsufficientCredits),
                        }
                    } else {
                        match m.reserve(&key, HoldAmount::Credits(credits(1)), 600, Some(&format!("w{w}-{i}"))) {
                            Ok(h) => held.push(Some(h.hold_id)),
                            Err(e) => assert_eq!(e.code(), ErrorCode::InsufficientCredits),
                        }
                    }
                }
                held
            })
        })
        .collect();
    let results: Vec<_> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert_eq!(results.len(), 60, "96 attempts at 1 credit on 60 credits");
    let holds: Vec<_> = results.iter().flatten().copied().collect();
    let a = m.account("u").unwrap();
    let deducts = (results.len() - holds.len()) as i64;
    assert_eq!(a.balance, credits(60 - deducts));
    assert_eq!(a.held, credits(holds.len() as i64));
    assert_eq!(a.available, Credits::ZERO);
    // Settle half concurrently, release the rest: each hold charges once.
    let holds = Arc::new(holds);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (m, holds) = (m.clone(), holds.clone());
            thread::spawn(move || {
                for (i, h) in holds.iter().enumerate() {
                    if i % 2 == 0 {
                        m.settle(*h, creditgate::Settlement::Credits(credits(1))).unwrap();
                    } else if w % 2 == 0 {
                        m.release(*h).unwrap();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let settled = holds.len().div_ceil(2) as i64;
    let a = m.account("u").unwrap();
    assert_eq!(a.held, Credits::ZERO);
    assert_eq!(a.balance, credits(60 - deducts - settled));
    assert_audit_ok(&m);
}

#[test]
fn the_first_key_decision_is_made_exactly_once() {
    let (m, _db) = common::manager_with(checked());
    const CREATORS: usize = 8;

    // Exactly 5,000 credits: the first key passes, the others need only 1.
    grant(&m, "exact", credits(5000));
    let start = Arc::new(Barrier::new(CREATORS));
    let workers: Vec<_> = (0..CREATORS)
        .map(|_| {
            let (m, start) = (m.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                (0..2).map(|_| m.create_api_key("exact", None).map(|k| k.key_id)).collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<_> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let ids: HashSet<_> = results.iter().map(|r| *r.as_ref().expect("every key is allowed")).collect();
    assert_eq!(ids.len(), 2 * CREATORS);
    assert_eq!(m.list_api_keys("exact").unwrap().len(), 2 * CREATORS);
    assert!(!m.can_generate_api_key("exact").unwrap().is_first_key);

    // One micro-credit short: every attempt is a first-key attempt and fails.
    grant(&m, "short", "4999.999999".parse().unwrap());
    let start = Arc::new(Barrier::new(CREATORS));
    let workers: Vec<_> = (0..CREATORS)
        .map(|_| {
            let (m, start) = (m.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                m.create_api_key("short", None).map(|k| k.key_id)
            })
        })
        .collect();
    for w in workers {
        match w.join().unwrap() {
            Err(Error::InsufficientCredits { required, .. }) => assert_eq!(required, credits(5000)),
            other => panic!("expected a first-key 402, got {other:?}"),
        }
    }
    assert!(m.list_api_keys("short").unwrap().is_empty());

    // Exactly 5,000 credits while strict deducts race the key creations. In
    // any serial order the creations either all precede the first deduct's
    // effect on the first-key decision (all succeed) or the first deduct came
    // first (all fail with the first-key rule): never a mix.
    for round in 0..6 {
        let user = format!("race-{round}");
        grant(&m, &user, credits(5000));
        let start = Arc::new(Barrier::new(CREATORS));
        let workers: Vec<_> = (0..CREATORS)
            .map(|w| {
                let (m, user, start) = (m.clone(), user.clone(), start.clone());
                thread::spawn(move || {
                    start.wait();
                    if (w + round) % 2 == 0 {
                        Some(m.create_api_key(&user, None).map(|_| ()))
                    } else {
                        m.deduct_credits(&user, credits(1), &NO_OPTS).unwrap();
                        None
                    }
                })
            })
            .collect();
        let creates: Vec<_> = workers.into_iter().filter_map(|w| w.join().unwrap()).collect();
        let ok = creates.iter().filter(|r| r.is_ok()).count();
        for r in &creates {
            if let Err(e) = r {
                match e {
                    Error::InsufficientCredits { required, available, .. } => {
                        assert_eq!(*required, credits(5000));
                        assert!(*available < credits(5000));
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert!(ok == 0 || ok == creates.len(), "round {round}: {ok} of {} creations succeeded", creates.len());
        let a = m.account(&user).unwrap();
        assert_eq!(a.first_key_issued, ok > 0);
        assert_eq!(a.active_keys as usize, ok);
        assert_eq!(a.balance, credits(5000 - (CREATORS - creates.len()) as i64));
    }
    let report = m.report().unwrap();
    let successes = m.list_api_keys("exact").unwrap().len() as u64
        + (0..6).map(|r| m.account(&format!("race-{r}")).unwrap().active_keys as u64).sum::<u64>();
    assert_eq!(report.key_generation_successes, successes);
    assert_eq!(report.key_generation_attempts, 2 * CREATORS as u64 + CREATORS as u64 + 6 * CREATORS as u64 / 2);
    assert_audit_ok(&m);
}

// ----- several OS processes on one database file ----------------------------------------

const CHILD_ENV: &str = "CREDITGATE_TEST_CHILD";
const CHILDREN: usize = 4;
const CHILD_OPS: u64 = 150;
/// `CREDITGATE_TEST_STRESS=N` multiplies the processes and their operations
/// by N for a local stress run (e.g. N=3: 12 processes, 450 operations
/// each); CI runs N=1.
const STRESS_ENV: &str = "CREDITGATE_TEST_STRESS";

fn stress() -> u64 {
    std::env::var(STRESS_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(1).clamp(1, 50)
}

/// Child side of `processes_sharing_one_database`: does nothing unless the
/// parent started this executable with `CREDITGATE_TEST_CHILD` set to
/// `<worker>\t<database url>\t<api key>`.
#[test]
#[ignore = "run by processes_sharing_one_database in a child process"]
fn child_hammer() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let mut parts = spec.splitn(3, '\t');
    let (Some(worker), Some(url), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("bad {CHILD_ENV}");
    };
    let worker: u64 = worker.parse().unwrap();
    let m = common::open(url, checked());
    // Two threads per process: contention inside and across processes.
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let (m, key) = (m.clone(), key.to_string());
            thread::spawn(move || hammer(&m, "shared", &key, worker * 2 + t + 100, CHILD_OPS * stress()))
        })
        .collect();
    let mut total = Tally::default();
    for t in threads {
        total.add(t.join().unwrap());
    }
    println!("{}", total.to_line());
}

#[test]
fn processes_sharing_one_database() {
    let (url, _db) = common::shared_url();
    let m = common::open(&url, checked());
    let (key, _) = key_for(&m, "shared");
    let initial = credits(2000 * stress() as i64 * stress() as i64);
    grant(&m, "shared", initial);
    let setup_entries = m.transactions("shared", 1000, None).unwrap().len();
    let children: Vec<_> = (0..CHILDREN * stress() as usize)
        .map(|w| common::spawn_child_test("child_hammer", CHILD_ENV, format!("{w}\t{url}\t{key}")))
        .collect();
    // Meanwhile this process hammers too.
    let mut total = hammer(&m, "shared", &key, 7, CHILD_OPS * stress());
    for child in children {
        let stdout = common::child_output(child);
        // The harness may print "test child_hammer ... " on the same line.
        let lines: Vec<Tally> =
            stdout.lines().filter_map(|l| l.find("CHILD-RESULT ").and_then(|i| Tally::parse(&l[i..]))).collect();
        assert_eq!(lines.len(), 1, "one result line per child: {stdout}");
        total.add(lines[0]);
    }
    assert!(total.deducts > 0 && total.charges > 0 && total.replays > 0, "{total:?}");
    check_ledger(&m, "shared", initial, setup_entries, total);
    // A fresh handle sees the same.
    let fresh = common::open(&url, checked());
    assert_audit_ok(&fresh);
}

// ----- processes × threads on one account near zero ----------------------------------

const NEAR_ZERO_ENV: &str = "CREDITGATE_TEST_NEAR_ZERO";
const NEAR_ZERO_PROCESSES: usize = 3;
const NEAR_ZERO_THREADS: usize = 4;
const NEAR_ZERO_OPS: u64 = 60;
/// Credits the hold race starts with: fewer than the 1-credit holds tried.
const RACE_CREDITS: i64 = 30;
const RACE_TRIES: u64 = 4;
const NEAR_ZERO_START: i64 = 20;

/// What one process saw, as `NEAR-ZERO name=value ...`.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
struct NearZero(std::collections::BTreeMap<String, i64>);

impl NearZero {
    fn add(&mut self, name: &str, v: i64) {
        *self.0.entry(name.to_string()).or_default() += v;
    }

    fn get(&self, name: &str) -> i64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    fn merge(&mut self, o: &NearZero) {
        for (k, v) in &o.0 {
            self.add(k, *v);
        }
    }

    fn to_line(&self) -> String {
        let fields: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("NEAR-ZERO {}", fields.join(" "))
    }

    fn parse(line: &str) -> Option<NearZero> {
        let mut t = NearZero::default();
        for field in line.strip_prefix("NEAR-ZERO ")?.split_whitespace() {
            let (k, v) = field.split_once('=')?;
            t.add(k, v.parse().ok()?);
        }
        Some(t)
    }
}

/// One thread: first races for 1-credit holds on "race", then runs strict
/// deducts, grants and usage charges on "zero", which hovers around zero.
fn near_zero_thread(m: &CreditManager, race_key: &str, zero_key: &str, id: u64) -> NearZero {
    let mut t = NearZero::default();
    for i in 0..RACE_TRIES {
        match m.reserve(race_key, HoldAmount::Credits(credits(1)), 600, Some(&format!("hold-{id}-{i}"))) {
            Ok(h) => {
                assert!(!h.replayed);
                t.add("holds", 1);
            }
            Err(e) => {
                assert_eq!(e.code(), ErrorCode::InsufficientCredits, "{e}");
                t.add("holds_denied", 1);
            }
        }
    }
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in 0..NEAR_ZERO_OPS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match i % 5 {
            0 => {
                m.add_credits("zero", credits(5), EntryKind::Grant, &NO_OPTS).expect("grant");
                t.add("grants", 1);
                t.add("granted_micros", credits(5).micros());
            }
            1 => {
                let amount = credits(1 + (x % 3) as i64);
                match m.deduct_credits("zero", amount, &with_key(&format!("deduct-{id}-{i}"))) {
                    Ok(e) => {
                        assert!(!e.balance_after.is_negative(), "a strict deduct overdrew: {e:?}");
                        t.add("deducts", 1);
                        t.add("deducted_micros", amount.micros());
                    }
                    Err(Error::InsufficientCredits { available, .. }) => {
                        assert!(available < amount);
                        t.add("deducts_denied", 1);
                    }
                    Err(e) => panic!("deduct failed: {e}"),
                }
            }
            _ => {
                let tokens = (x % 3000) as i64;
                let c = m
                    .record_usage(
                        KeyRef::Secret(zero_key),
                        Usage::new(tokens, 0, None),
                        Some(&format!("usage-{id}-{i}")),
                    )
                    .expect("usage is never refused");
                assert!(!c.replayed);
                assert_eq!(c.overdraft, c.balance.is_negative());
                t.add("charges", 1);
                t.add("tokens", tokens);
                t.add("charged_micros", c.charged.micros());
                t.add("overdrafts", i64::from(c.overdraft));
            }
        }
    }
    t
}

/// Child side of `processes_near_zero_never_overdraw_and_count_every_overdraft`:
/// `CREDITGATE_TEST_NEAR_ZERO` is `<process>\t<url>\t<race key>\t<zero key>\t<start at, unix ms>`.
#[test]
#[ignore = "run by processes_near_zero_never_overdraw_and_count_every_overdraft in a child process"]
fn child_near_zero() {
    let Ok(spec) = std::env::var(NEAR_ZERO_ENV) else { return };
    let parts: Vec<&str> = spec.split('\t').collect();
    let [process, url, race_key, zero_key, start_ms] = parts[..] else { panic!("bad {NEAR_ZERO_ENV}") };
    let process: u64 = process.parse().unwrap();
    let m = common::open(url, checked());
    // Start together with the other processes (a hang guard caps the wait).
    let start = std::time::UNIX_EPOCH + std::time::Duration::from_millis(start_ms.parse().unwrap());
    if let Ok(wait) = start.duration_since(std::time::SystemTime::now()) {
        thread::sleep(wait.min(std::time::Duration::from_secs(10)));
    }
    let threads: Vec<_> = (0..NEAR_ZERO_THREADS as u64)
        .map(|t| {
            let (m, race_key, zero_key) = (m.clone(), race_key.to_string(), zero_key.to_string());
            thread::spawn(move || near_zero_thread(&m, &race_key, &zero_key, process * 100 + t))
        })
        .collect();
    let mut total = NearZero::default();
    for t in threads {
        total.merge(&t.join().unwrap());
    }
    // This process's own counter of overdrafts, to add up across processes.
    total.add("overdraft_metric", common::metric(&m, "usage_overdrafts_total") as i64);
    println!("{}", total.to_line());
}

#[test]
fn processes_near_zero_never_overdraw_and_count_every_overdraft() {
    let (url, _db) = common::shared_url();
    let m = common::open(&url, checked());
    let (race_key, _) = key_for(&m, "race");
    grant(&m, "race", credits(RACE_CREDITS));
    let (zero_key, _) = key_for(&m, "zero");
    grant(&m, "zero", credits(NEAR_ZERO_START));
    let setup_entries = common::all_entries(&m, "zero").len();

    let start_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() + 1500;
    let children: Vec<_> = (0..NEAR_ZERO_PROCESSES)
        .map(|p| {
            common::spawn_child_test(
                "child_near_zero",
                NEAR_ZERO_ENV,
                format!("{p}\t{url}\t{race_key}\t{zero_key}\t{start_ms}"),
            )
        })
        .collect();
    let mut total = NearZero::default();
    for child in children {
        let stdout = common::child_output(child);
        let lines: Vec<NearZero> =
            stdout.lines().filter_map(|l| l.find("NEAR-ZERO ").and_then(|i| NearZero::parse(&l[i..]))).collect();
        assert_eq!(lines.len(), 1, "one result line per child: {stdout}");
        total.merge(&lines[0]);
    }

    // Holds: exactly as many 1-credit holds as credits, across processes.
    let tries = (NEAR_ZERO_PROCESSES * NEAR_ZERO_THREADS) as i64 * RACE_TRIES as i64;
    assert_eq!(total.get("holds") + total.get("holds_denied"), tries);
    assert_eq!(total.get("holds"), RACE_CREDITS, "holds granted beyond the balance (or refused below it)");
    let race = m.account("race").unwrap();
    assert_eq!(
        (race.balance, race.held, race.available),
        (credits(RACE_CREDITS), credits(RACE_CREDITS), Credits::ZERO)
    );

    // The near-zero account: strict kinds never below zero, every overdraft
    // counted, usage charged exactly as priced.
    let entries = common::all_entries(&m, "zero");
    let new_entries = &entries[..entries.len() - setup_entries];
    let mut sums = NearZero::default();
    for e in new_entries {
        match e.kind {
            EntryKind::Deduct => {
                assert!(!e.balance_after.is_negative(), "strict deduct overdrew: {e:?}");
                sums.add("deducts", 1);
                sums.add("deducted_micros", -e.amount.micros());
            }
            EntryKind::Grant => {
                sums.add("grants", 1);
                sums.add("granted_micros", e.amount.micros());
            }
            EntryKind::Usage => {
                sums.add("charges", 1);
                sums.add("charged_micros", -e.amount.micros());
                sums.add("tokens", e.input_tokens.unwrap() + e.output_tokens.unwrap());
                sums.add("overdrafts", i64::from(e.balance_after.is_negative()));
            }
            other => panic!("unexpected {other} entry"),
        }
    }
    for name in ["deducts", "deducted_micros", "grants", "granted_micros", "charges", "charged_micros", "tokens"] {
        assert_eq!(sums.get(name), total.get(name), "{name}: ledger vs what the workers were told");
    }
    assert_eq!(sums.get("overdrafts"), total.get("overdrafts"), "usage entries below zero vs overdraft results");
    assert_eq!(total.get("overdraft_metric"), total.get("overdrafts"), "usage_overdrafts_total across processes");
    // 1 credit per 1,000 tokens: 1,000 micro-credits a token, no rounding.
    assert_eq!(total.get("charged_micros"), total.get("tokens") * 1_000, "charges vs tokens priced");
    let expected = credits(NEAR_ZERO_START).micros() + total.get("granted_micros")
        - total.get("deducted_micros")
        - total.get("charged_micros");
    assert_eq!(m.get_balance("zero").unwrap(), micros(expected), "final balance");
    for name in ["deducts", "deducts_denied", "overdrafts"] {
        assert!(total.get(name) > 0, "the run should include {name}: {total:?}");
    }
    assert!(total.get("overdrafts") < total.get("charges"), "not every charge should overdraw: {total:?}");
    assert_audit_ok(&m);
    eprintln!(
        "near zero: {NEAR_ZERO_PROCESSES} processes x {NEAR_ZERO_THREADS} threads: {} of {tries} holds on \
         {RACE_CREDITS} credits; {} deducts ok, {} refused; {} charges ({} tokens), {} overdrafts (all counted); \
         final balance {}",
        total.get("holds"),
        total.get("deducts"),
        total.get("deducts_denied"),
        total.get("charges"),
        total.get("tokens"),
        total.get("overdrafts"),
        m.get_balance("zero").unwrap()
    );
}

#[test]
fn tally_lines_round_trip() {
    let t = Tally { deducts: 1, deducted_micros: 2, denied: 3, charges: 4, charged_micros: -5, replays: 6 };
    assert_eq!(Tally::parse(&t.to_line()), Some(t));
    assert_eq!(Tally::parse("CHILD-RESULT deducts=x"), None);
    assert_eq!(err_code(creditgate::EntryId::parse("nope")), ErrorCode::InvalidArgument);
}

/// The writers' turn between processes (`<database>-writer`) is only a
/// scheduling aid: a process that holds it and stalls must not hang the
/// others. Their wait ends at the busy timeout and they write anyway.
#[test]
fn a_stalled_holder_of_the_writer_turn_never_hangs_a_write() {
    let (url, db) = common::shared_url();
    let Some(path) = db.sqlite_path() else {
        println!("a_stalled_holder_of_the_writer_turn_never_hangs_a_write: SQLite only, skipped");
        return;
    };
    let m = common::open(&url, checked().busy_timeout_ms(300).unwrap());
    let turn = format!("{}-writer", path.display());
    assert!(std::path::Path::new(&turn).exists(), "the turn file is made beside the database");
    // Another process takes the turn (a POSIX record lock, as creditgate does) and keeps it.
    let mut holder = std::process::Command::new("python3")
        .args([
            "-c",
            "import fcntl, sys, time\nf = open(sys.argv[1], 'r+')\nfcntl.lockf(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(60)",
            &turn,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "locked");
    let start = std::time::Instant::now();
    let written = m.add_credits("u", credits(1), EntryKind::Grant, &NO_OPTS);
    let took = start.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(written.is_ok(), "{written:?}");
    assert!(took >= std::time::Duration::from_millis(250), "it waited for the turn first: {took:?}");
    assert!(took < std::time::Duration::from_secs(5), "then wrote without it: {took:?}");
    // The holder is gone: the kernel dropped its lock, and writes take the turn at once.
    let start = std::time::Instant::now();
    m.add_credits("u", credits(1), EntryKind::Grant, &NO_OPTS).unwrap();
    assert!(start.elapsed() < std::time::Duration::from_millis(250), "{:?}", start.elapsed());
    assert_audit_ok(&m);
}
