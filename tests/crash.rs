//! Crash safety: a child process (this test executable re-invoked) performs a
//! stream of acknowledged operations on one ledger — payments, usage charges
//! with request ids, strict deducts with idempotency keys (many refused: the
//! balance hovers around zero) and API-key creations — and is killed with
//! SIGKILL at a random moment, again and again. The child writes a `BEGIN`
//! line before each call and, once the call has returned, an `OK` (with the
//! entry or key id) or `ERR` (with the error code) line, each with one
//! `write` to an append-only file, so the parent knows every acknowledged
//! result and the one call in flight at the kill.
//!
//! After every kill the parent checks, on a freshly opened handle:
//! - the database opens without manual repair (and on SQLite passes
//!   `PRAGMA quick_check`), and `audit()` is clean (balance == sum of
//!   entries, `balance_after` chain and sequences contiguous);
//! - every acknowledged success is in the ledger exactly once, with the
//!   acknowledged entry id and amount, and replaying it returns
//!   `replayed=true` and the same entry id;
//! - every acknowledged failure left no entry; no entry is unexplained;
//! - the call in flight was either fully applied (one entry, with its
//!   amount) or left nothing;
//! - the active key count is the acknowledged creations, plus at most the
//!   one in flight; the balance is the sum of everything applied.
//!
//! `CREDITGATE_CRASH_KILLS=N` sets the number of kills (default 50, the CI
//! run), `CREDITGATE_CRASH_SEED` the schedule's seed (printed by every run),
//! and `CREDITGATE_CRASH_REPORT=path` also writes the summary line there.
//! Runs on SQLite and, with `CREDITGATE_TEST_BACKEND=postgres`, on PostgreSQL.

mod common;

use common::{key_for, with_key};
use creditgate::{Config, CreditManager, Credits, EntryKind, Error, KeyRef, Usage};
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "CREDITGATE_CRASH_CHILD";
const KILLS_ENV: &str = "CREDITGATE_CRASH_KILLS";
const SEED_ENV: &str = "CREDITGATE_CRASH_SEED";
const REPORT_ENV: &str = "CREDITGATE_CRASH_REPORT";
const DEFAULT_KILLS: u64 = 50;
const USER: &str = "crash-user";
/// A child stops by itself after this long (it is killed long before): no
/// orphan outlives a parent that died.
const CHILD_LIFETIME: Duration = Duration::from_secs(120);
/// Hang guard: a child must be ready (ledger opened) within this.
const READY_GUARD: Duration = Duration::from_secs(60);
/// Every this many kills (and after the last) the parent re-reads the whole
/// ledger; in between it reads only the entries added since the last check.
const FULL_CHECK_EVERY: u64 = 10;

/// splitmix64: small, seedable, good enough for a schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn config() -> Config {
    // Hundreds of keys are created over a run.
    Config::new().max_active_keys_per_user(100_000).expect("test config")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Op {
    /// record_payment; param: amount in cents.
    Pay,
    /// record_usage with a request id; param: input tokens.
    Usage,
    /// strict deduct_credits with an idempotency key; param: whole credits.
    Deduct,
    /// create_api_key; no ledger entry.
    Key,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Pay => "pay",
            Op::Usage => "usage",
            Op::Deduct => "deduct",
            Op::Key => "key",
        }
    }

    fn parse(s: &str) -> Op {
        match s {
            "pay" => Op::Pay,
            "usage" => Op::Usage,
            "deduct" => Op::Deduct,
            "key" => Op::Key,
            _ => panic!("unknown op {s:?} in the acknowledgement log"),
        }
    }

    /// The idempotency key of its ledger entry (None: no entry).
    fn ledger_key(self, id: &str) -> Option<String> {
        match self {
            Op::Pay => Some(format!("payment:{id}")),
            Op::Usage => Some(format!("usage:{id}")),
            Op::Deduct => Some(id.to_string()),
            Op::Key => None,
        }
    }

    /// The signed amount its entry must have.
    fn amount(self, param: i64) -> i64 {
        match self {
            // 1,000 credits per USD (default): 10 credits per cent.
            Op::Pay => param * 10 * 1_000_000,
            // 1 credit per 1,000 tokens (default): 1,000 micro-credits a token.
            Op::Usage => -param * 1_000,
            Op::Deduct => -param * 1_000_000,
            Op::Key => 0,
        }
    }

    fn kind(self) -> EntryKind {
        match self {
            Op::Pay => EntryKind::Purchase,
            Op::Usage => EntryKind::Usage,
            Op::Deduct => EntryKind::Deduct,
            Op::Key => unreachable!("a key creation has no entry"),
        }
    }
}

// ----- the child ------------------------------------------------------------

/// One complete line, in one `write` (a killed process never leaves half of it).
fn log_line(f: &mut File, line: String) {
    f.write_all(format!("{line}\n").as_bytes()).expect("write the acknowledgement log");
    f.flush().expect("flush the acknowledgement log");
}

/// Child side of `killed_mid_stream_loses_nothing`: does nothing unless
/// `CREDITGATE_CRASH_CHILD` is `<generation>\t<url>\t<api key>\t<log path>\t<seed>`.
#[test]
#[ignore = "run by killed_mid_stream_loses_nothing in a child process"]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let parts: Vec<&str> = spec.split('\t').collect();
    let [generation, url, secret, log, seed] = parts[..] else { panic!("bad {CHILD_ENV}") };
    let mut log = OpenOptions::new().append(true).create(true).open(log).expect("open the acknowledgement log");
    let m = common::open(url, config());
    let mut balance = m.get_balance(USER).expect("balance").micros();
    log_line(&mut log, format!("READY\t{generation}"));
    let mut rng = Rng(seed.parse().expect("seed"));
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed() < CHILD_LIFETIME {
        i += 1;
        let r = rng.below(100);
        // Keep the balance near zero: buy more often when it is low, so
        // strict deducts are often refused and usage often overdraws.
        let pay_share = if balance < 10_000_000 { 45 } else { 12 };
        let (op, param) = if r < 6 {
            (Op::Key, 0)
        } else if r < 6 + pay_share {
            (Op::Pay, 1 + rng.below(4) as i64)
        } else if r < 62 {
            (Op::Deduct, 1 + rng.below(25) as i64)
        } else {
            (Op::Usage, rng.below(12_001) as i64)
        };
        let id = format!("{}-{generation}-{i}", op.as_str());
        log_line(&mut log, format!("BEGIN\t{}\t{id}\t{param}", op.as_str()));
        let outcome: Result<(String, i64), Error> = match op {
            Op::Pay => m.record_payment(USER, &id, param, "usd").map(|e| {
                balance = e.balance_after.micros();
                (e.id.to_string(), e.amount.micros())
            }),
            Op::Usage => m.record_usage(KeyRef::Secret(secret), Usage::new(param, 0, None), Some(&id)).map(|c| {
                balance = c.balance.micros();
                (c.entry_id.to_string(), -c.charged.micros())
            }),
            Op::Deduct => {
                let amount = Credits::from_credits(param).expect("small amount");
                m.deduct_credits(USER, amount, &with_key(&id)).map(|e| {
                    balance = e.balance_after.micros();
                    (e.id.to_string(), e.amount.micros())
                })
            }
            Op::Key => m.create_api_key(USER, Some(&id)).map(|k| (k.key_id.to_string(), 0)),
        };
        match outcome {
            Ok((result_id, amount)) => {
                log_line(&mut log, format!("OK\t{}\t{id}\t{result_id}\t{amount}", op.as_str()));
            }
            Err(e) => {
                if let Error::InsufficientCredits { available, .. } = &e {
                    balance = available.micros();
                }
                log_line(&mut log, format!("ERR\t{}\t{id}\t{}\t{e}", op.as_str(), e.code().as_str()));
            }
        }
    }
}

// ----- the parent ------------------------------------------------------------

/// One call the child started, as read back from its log.
#[derive(Clone, Debug)]
struct Call {
    op: Op,
    id: String,
    param: i64,
    /// None: no result line (the call in flight at the kill).
    result: Option<Outcome>,
}

#[derive(Clone, Debug)]
enum Outcome {
    /// The entry id (or key id) and the signed amount the call returned.
    Ok(String, i64),
    /// The error code and message.
    Err(String, String),
}

/// The complete lines of a child's log: whether it got ready, its calls.
fn read_log(path: &Path) -> (bool, Vec<Call>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    let mut ready = false;
    let mut calls: Vec<Call> = Vec::new();
    for line in complete.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f[0] {
            "READY" => ready = true,
            "BEGIN" => {
                if let Some(last) = calls.last() {
                    assert!(last.result.is_some(), "a call began before the previous one returned: {line}");
                }
                calls.push(Call {
                    op: Op::parse(f[1]),
                    id: f[2].to_string(),
                    param: f[3].parse().unwrap(),
                    result: None,
                });
            }
            "OK" | "ERR" => {
                let last = calls.last_mut().expect("a result line follows its BEGIN line");
                assert!(last.id == f[2] && last.result.is_none(), "result line out of order: {line}");
                last.result = Some(if f[0] == "OK" {
                    Outcome::Ok(f[3].to_string(), f[4].parse().unwrap())
                } else {
                    Outcome::Err(f[3].to_string(), f[4..].join("\t"))
                });
            }
            other => panic!("unknown line {other:?} in {}", path.display()),
        }
    }
    (ready, calls)
}

fn child_stderr(dir: &Path, generation: u64) -> String {
    std::fs::read_to_string(dir.join(format!("child-{generation}.err"))).unwrap_or_default()
}

/// Waits (polling) until the child logged READY; panics if it exits first
/// or takes longer than the hang guard.
fn wait_ready(child: &mut Child, log: &Path, dir: &Path, generation: u64) {
    let start = Instant::now();
    loop {
        if read_log(log).0 {
            return;
        }
        if let Some(status) = child.try_wait().expect("poll the child") {
            panic!("child {generation} exited ({status}) before it was ready:\n{}", child_stderr(dir, generation));
        }
        assert!(start.elapsed() < READY_GUARD, "child {generation} not ready after {READY_GUARD:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The user's entries with `seq > after`, oldest first.
fn entries_after(m: &CreditManager, user: &str, after: i64) -> Vec<creditgate::Entry> {
    let mut out: Vec<creditgate::Entry> = Vec::new();
    loop {
        let page = m.transactions(user, 1000, out.last().map(|e| e.id)).expect("a page of entries");
        let done = page.len() < 1000;
        let before = out.len();
        out.extend(page.into_iter().filter(|e| e.seq > after));
        if done || out.len() - before < 1000 {
            break;
        }
    }
    out.reverse();
    out
}

/// What the parent knows must be in the ledger.
struct Expected {
    /// Ledger key → (entry id, signed amount micros).
    present: HashMap<String, (String, i64)>,
    /// Ledger keys that must never appear (acknowledged failures, and calls
    /// in flight found absent: nobody retries them).
    absent: HashSet<String>,
    balance: i64,
    keys: u64,
    setup_entries: u64,
}

#[derive(Default, Debug)]
struct Tally {
    ok: u64,
    refused: u64,
    in_flight_applied: u64,
    in_flight_absent: u64,
    keys_created: u64,
    overdrafts: u64,
    replays: u64,
}

fn kills() -> u64 {
    std::env::var(KILLS_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_KILLS).max(1)
}

fn seed() -> u64 {
    std::env::var(SEED_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
    })
}

#[test]
fn killed_mid_stream_loses_nothing() {
    let started = Instant::now();
    let kills = kills();
    let seed = seed();
    let backend = if common::pg::is_postgres() { "postgres" } else { "sqlite" };
    eprintln!("crash: seed {seed} ({SEED_ENV}={seed} repeats the schedule), {kills} kills, {backend}");
    let mut rng = Rng(seed);
    let (url, guard) = common::shared_url();
    let dir = guard.dir().to_path_buf();
    let (secret, _) = {
        let m = common::open(&url, config());
        let k = key_for(&m, USER);
        assert_eq!(m.get_balance(USER).unwrap(), Credits::ZERO);
        k
    };
    let setup = common::open(&url, config());
    let setup_entries = common::all_entries(&setup, USER);
    let mut last_seq = setup_entries.iter().map(|e| e.seq).max().unwrap_or(0);
    let mut want = Expected {
        present: HashMap::new(),
        absent: HashSet::new(),
        balance: 0,
        keys: setup.account(USER).unwrap().active_keys.into(),
        setup_entries: setup.audit().unwrap().entries_checked,
    };
    drop(setup);
    let mut tally = Tally::default();
    let exe = std::env::current_exe().expect("the test executable");

    for generation in 0..kills {
        let log = dir.join(format!("acks-{generation}.log"));
        let stderr = File::create(dir.join(format!("child-{generation}.err"))).expect("child stderr file");
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--ignored", "--test-threads", "1"])
            .env(CHILD_ENV, format!("{generation}\t{url}\t{secret}\t{}\t{}", log.display(), rng.next()))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn the child");
        // One kill in eight comes early, maybe while the child opens the ledger.
        if rng.below(8) == 0 {
            std::thread::sleep(Duration::from_millis(rng.below(30)));
        } else {
            wait_ready(&mut child, &log, &dir, generation);
            std::thread::sleep(Duration::from_millis(5 + rng.below(76)));
        }
        if let Some(status) = child.try_wait().expect("poll the child") {
            panic!("child {generation} exited by itself ({status}):\n{}", child_stderr(&dir, generation));
        }
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");

        let (_, calls) = read_log(&log);
        let ctx = format!("after kill {} (seed {seed})", generation + 1);
        check_after_kill(&url, &secret, guard.sqlite_path(), &calls, &mut want, &mut last_seq, &mut tally, &ctx);
        if (generation + 1) % FULL_CHECK_EVERY == 0 || generation + 1 == kills {
            full_check(&url, &want, &ctx);
        }
    }

    let checked = tally.ok + tally.refused;
    assert!(tally.ok > 0 && tally.refused > 0, "the run should see successes and refusals: {tally:?}");
    let summary = format!(
        "crash: {kills} kills survived, {checked} acknowledged operations checked ({} ok, {} refused, {} keys \
         created, {} usage overdrafts, {} replays); in flight at the kill: {} applied, {} absent; backend {backend}, \
         seed {seed}, {:.1} s",
        tally.ok,
        tally.refused,
        tally.keys_created,
        tally.overdrafts,
        tally.replays,
        tally.in_flight_applied,
        tally.in_flight_absent,
        started.elapsed().as_secs_f64()
    );
    eprintln!("{summary}");
    if let Ok(path) = std::env::var(REPORT_ENV)
        && !path.is_empty()
    {
        std::fs::write(&path, format!("{summary}\n")).expect("write the crash report");
    }
}

/// A SIGKILLed client's PostgreSQL sessions outlive it until the server
/// reads the closed socket: a COMMIT already sent still lands. The check
/// waits for them to end, so it reads a ledger nothing writes to any more
/// (reading earlier saw the call in flight land between two reads).
fn wait_for_killed_sessions(url: &str, ctx: &str) {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap_or_else(|e| panic!("{ctx}: raw connect: {e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                &[],
            )
            .unwrap_or_else(|e| panic!("{ctx}: count the sessions: {e}"));
        let left: i64 = row.get(0);
        if left == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{ctx}: {left} sessions of the killed child still open after 30 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Everything checked after one kill, on a freshly opened handle.
#[allow(clippy::too_many_arguments)]
fn check_after_kill(
    url: &str,
    secret: &str,
    sqlite_path: Option<&Path>,
    calls: &[Call],
    want: &mut Expected,
    last_seq: &mut i64,
    tally: &mut Tally,
    ctx: &str,
) {
    if let Some(path) = sqlite_path {
        let c = rusqlite::Connection::open(path).unwrap_or_else(|e| panic!("{ctx}: raw open: {e}"));
        let check: String = c.query_row("PRAGMA quick_check", [], |r| r.get(0)).expect("quick_check runs");
        assert_eq!(check, "ok", "{ctx}: SQLite quick_check");
    }
    if sqlite_path.is_none() {
        wait_for_killed_sessions(url, ctx);
    }
    let m = CreditManager::open(config().database_url(url))
        .unwrap_or_else(|e| panic!("{ctx}: the ledger does not open without repair: {e}"));
    let audit = m.audit().unwrap_or_else(|e| panic!("{ctx}: audit fails: {e}"));
    assert!(audit.ok, "{ctx}: audit found mismatches: {:?}", audit.mismatches);

    // The acknowledged results, and the call in flight.
    let mut acked_in_ledger = 0usize;
    let mut new_keys = Vec::new();
    let mut in_flight = None;
    for call in calls {
        let key = call.op.ledger_key(&call.id);
        match &call.result {
            None => in_flight = Some(call),
            Some(Outcome::Ok(result_id, amount)) => {
                tally.ok += 1;
                match key {
                    Some(k) => {
                        assert_eq!(*amount, call.op.amount(call.param), "{ctx}: {} returned another amount", call.id);
                        assert!(want.present.insert(k, (result_id.clone(), *amount)).is_none(), "{ctx}: id reused");
                        want.balance += amount;
                        acked_in_ledger += 1;
                    }
                    None => {
                        want.keys += 1;
                        tally.keys_created += 1;
                        new_keys.push(result_id.clone());
                    }
                }
            }
            Some(Outcome::Err(code, message)) => {
                // The only refusal this stream can meet: deducts and key
                // creations when the balance is low. Anything else is a bug.
                assert!(
                    code == "insufficient_credits" && matches!(call.op, Op::Deduct | Op::Key),
                    "{ctx}: {} {} failed unexpectedly: {code}: {message}",
                    call.op.as_str(),
                    call.id
                );
                tally.refused += 1;
                if let Some(k) = key {
                    want.absent.insert(k);
                }
            }
        }
    }
    assert!(
        calls.iter().position(|c| c.result.is_none()).is_none_or(|i| i + 1 == calls.len()),
        "{ctx}: only the last call can be in flight"
    );

    // The entries added since the last check: each one acknowledged, or the call in flight.
    let fresh = entries_after(&m, USER, *last_seq);
    let in_flight_key = in_flight.and_then(|c| c.op.ledger_key(&c.id));
    let mut matched = 0usize;
    let mut in_flight_applied = false;
    for (i, e) in fresh.iter().enumerate() {
        assert_eq!(e.seq, *last_seq + 1 + i as i64, "{ctx}: sequence gap");
        let k = e.idempotency_key.clone().unwrap_or_else(|| panic!("{ctx}: entry without a key: {e:?}"));
        if e.kind == EntryKind::Deduct {
            assert!(!e.balance_after.is_negative(), "{ctx}: a strict deduct overdrew: {e:?}");
        }
        if e.kind == EntryKind::Usage && e.balance_after.is_negative() {
            tally.overdrafts += 1;
        }
        if Some(&k) == in_flight_key.as_ref() {
            let c = in_flight.unwrap();
            assert!(!in_flight_applied, "{ctx}: the call in flight ({k}) was applied twice");
            assert_eq!(e.kind, c.op.kind(), "{ctx}: in-flight entry kind");
            assert_eq!(e.amount.micros(), c.op.amount(c.param), "{ctx}: the call in flight was half applied: {e:?}");
            in_flight_applied = true;
            want.present.insert(k, (e.id.to_string(), e.amount.micros()));
            want.balance += e.amount.micros();
            continue;
        }
        match want.present.get(&k) {
            Some((id, amount)) => {
                assert_eq!(e.id.to_string(), *id, "{ctx}: {k} has another entry id than acknowledged");
                assert_eq!(e.amount.micros(), *amount, "{ctx}: {k} has another amount than acknowledged");
                matched += 1;
            }
            None if want.absent.contains(&k) => panic!("{ctx}: a refused call left an entry: {e:?}"),
            None => panic!("{ctx}: an entry nobody acknowledged: {e:?}"),
        }
    }
    assert_eq!(matched, acked_in_ledger, "{ctx}: acknowledged entries missing (or duplicated)");
    if let Some(c) = in_flight
        && !in_flight_applied
    {
        if let Some(k) = &in_flight_key {
            want.absent.insert(k.clone());
        }
        if c.op != Op::Key {
            tally.in_flight_absent += 1;
        }
    }
    if in_flight_applied {
        tally.in_flight_applied += 1;
    }
    if let Some(e) = fresh.last() {
        *last_seq = e.seq;
    }

    // Nothing older was lost: the entry count and the balance add up.
    assert_eq!(audit.entries_checked, want.setup_entries + want.present.len() as u64, "{ctx}: entry count");
    assert_eq!(m.get_balance(USER).unwrap().micros(), want.balance, "{ctx}: balance");

    // Keys: the acknowledged creations, plus at most the one in flight.
    let account = m.account(USER).unwrap();
    let active = u64::from(account.active_keys);
    match in_flight {
        Some(c) if c.op == Op::Key && active == want.keys + 1 => {
            want.keys += 1;
            tally.in_flight_applied += 1;
        }
        Some(c) if c.op == Op::Key => tally.in_flight_absent += 1,
        _ => {}
    }
    assert_eq!(active, want.keys, "{ctx}: active keys vs acknowledged creations");
    let listed: HashSet<String> = m.list_api_keys(USER).unwrap().into_iter().map(|k| k.key_id.to_string()).collect();
    for id in &new_keys {
        assert!(listed.contains(id), "{ctx}: acknowledged key {id} is missing");
    }

    // Replays of every success of this generation return the same entry.
    for call in calls {
        let Some(k) = call.op.ledger_key(&call.id) else { continue };
        let Some((id, _)) = want.present.get(&k) else { continue };
        let replay = match call.op {
            Op::Pay => m.record_payment(USER, &call.id, call.param, "usd").map(|e| (e.id, e.replayed)),
            Op::Usage => m
                .record_usage(KeyRef::Secret(secret), Usage::new(call.param, 0, None), Some(&call.id))
                .map(|c| (c.entry_id, c.replayed)),
            Op::Deduct => m
                .deduct_credits(USER, Credits::from_credits(call.param).unwrap(), &with_key(&call.id))
                .map(|e| (e.id, e.replayed)),
            Op::Key => unreachable!(),
        };
        let (replay_id, replayed) = replay.unwrap_or_else(|e| panic!("{ctx}: replaying {k} failed: {e}"));
        assert!(replayed, "{ctx}: replaying {k} applied it again");
        assert_eq!(replay_id.to_string(), *id, "{ctx}: replaying {k} returned another entry");
        tally.replays += 1;
    }
    assert_eq!(m.get_balance(USER).unwrap().micros(), want.balance, "{ctx}: replays moved the balance");
}

/// Re-reads the whole ledger: every expected entry exactly once, nothing else.
fn full_check(url: &str, want: &Expected, ctx: &str) {
    let m = CreditManager::open(config().database_url(url)).expect("open for the full check");
    let entries = common::all_entries(&m, USER);
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for e in &entries {
        let Some(k) = e.idempotency_key.as_deref() else { continue };
        *seen.entry(k).or_default() += 1;
        assert!(!want.absent.contains(k), "{ctx}: full check: a refused or lost call has an entry: {e:?}");
        match want.present.get(k) {
            Some((id, amount)) => {
                assert_eq!(e.id.to_string(), *id, "{ctx}: full check: entry id of {k}");
                assert_eq!(e.amount.micros(), *amount, "{ctx}: full check: amount of {k}");
            }
            None => panic!("{ctx}: full check: unexplained entry {e:?}"),
        }
    }
    for k in want.present.keys() {
        assert_eq!(seen.get(k.as_str()).copied(), Some(1), "{ctx}: full check: {k} is not in the ledger exactly once");
    }
    assert_eq!(entries.len() as u64, want.setup_entries + want.present.len() as u64, "{ctx}: full check: count");
    common::assert_audit_ok(&m);
}
