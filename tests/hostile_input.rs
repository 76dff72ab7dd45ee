//! Issue 7, "hostile input loses nothing" (Rust front door):
//!
//! 1. property tests of the key parser and of amount parsing and arithmetic
//!    (`CREDITGATE_FUZZ_CASES=100000` for a long run; the default is small
//!    enough for CI);
//! 2. a bad-input matrix over every public `CreditManager` method: each bad
//!    input is rejected with the docs/reference.md code and leaves the ledger as it was;
//! 3. every limit at its boundary (the ones `operations.rs` does not cover);
//! 4. secret hygiene: no secret in the database files, errors, `Debug`
//!    output or metrics, and verification finds keys by hash.

mod common;

use common::{NO_OPTS, all_entries, credits, err_code, grant, micros};
use creditgate::{
    Config, CreditManager, Credits, EntryId, EntryKind, EntryOptions, Error, ErrorCode, HoldAmount, HoldId, ImportKeys,
    ImportUsers, KeyId, KeyRef, MAX_AMOUNT_CREDITS, MAX_AMOUNT_MICROS, MAX_METADATA_BYTES, MAX_PAGE_LIMIT,
    MAX_TEXT_BYTES, MAX_TOKENS_PER_CALL, MAX_TTL_SECONDS, Settlement, Synchronous, Usage,
};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use std::cell::{Cell, RefCell};

/// Cases per property: small in CI, `CREDITGATE_FUZZ_CASES=N` for a long run.
fn fuzz_cases(default: u32) -> u32 {
    std::env::var("CREDITGATE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn runner(default_cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases: fuzz_cases(default_cases),
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    })
}

/// Reports how many cases a property ran (visible with `--nocapture`).
fn ran(name: &str, cases: &Cell<u64>, started: std::time::Instant) {
    eprintln!("fuzz {name}: {} cases in {:.1?}", cases.get(), started.elapsed());
}

const MIB: usize = 1 << 20;

// =========================================================================
// 1. Property tests: amounts
// =========================================================================

/// An independent reading of the decimal grammar of `Credits::from_str`:
/// `[+-]?digits?(.digits?)?` with at least one digit, at most 64 bytes, at
/// most six significant decimals, and the value in the i64 range.
fn reference_parse(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    if !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > 6 {
        return None;
    }
    let mut value: i128 = 0;
    for b in whole.bytes() {
        value = value.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    let mut f: i128 = 0;
    for i in 0..6 {
        f = f * 10 + frac.as_bytes().get(i).map_or(0, |b| i128::from(b - b'0'));
    }
    let micros = value.checked_mul(1_000_000)?.checked_add(f)?;
    i64::try_from(if negative { -micros } else { micros }).ok()
}

/// Integers where the edges are: zero, the amount limit, the i64 limits.
fn edge_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        -3i64..=3,
        (MAX_AMOUNT_MICROS - 3)..=(MAX_AMOUNT_MICROS + 3),
        (-MAX_AMOUNT_MICROS - 3)..=(-MAX_AMOUNT_MICROS + 3),
        i64::MIN..=(i64::MIN + 3),
        (i64::MAX - 3)..=i64::MAX,
        -10_000_000_000i64..10_000_000_000,
    ]
}

/// Strings that look like decimals, near-misses, and arbitrary text.
fn decimal_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[+-]?[0-9]{0,22}(\\.[0-9]{0,10})?",
        "[+-]?0{0,30}[0-9]{0,14}\\.?[0-9]{0,7}0{0,30}",
        "[-+.0-9eE_ xX]{0,30}",
        any::<String>(),
        any::<i64>().prop_map(|m| Credits::from_micros(m).to_string()),
        (any::<i64>(), 1usize..40).prop_map(|(m, zeros)| {
            // The same value with trailing zeros after a decimal point.
            let s = Credits::from_micros(m).to_string();
            if s.contains('.') { format!("{s}{}", "0".repeat(zeros)) } else { format!("{s}.{}", "0".repeat(zeros)) }
        }),
    ]
}

#[test]
fn fuzz_decimal_parsing_agrees_with_the_grammar_and_round_trips() {
    let started = std::time::Instant::now();
    let cases = Cell::new(0u64);
    runner(4_000)
        .run(&decimal_like(), |s| {
            cases.set(cases.get() + 1);
            let got = s.parse::<Credits>();
            match (&got, reference_parse(&s)) {
                (Ok(c), Some(want)) => {
                    prop_assert_eq!(c.micros(), want, "{:?}", s);
                    // Display, then parse again: the same micro-credits, exactly.
                    let shown = c.to_string();
                    prop_assert!(!shown.contains(['e', 'E']), "exponent in {}", shown);
                    prop_assert_eq!(shown.parse::<Credits>().map(Credits::micros).ok(), Some(want));
                }
                (Err(e), None) => {
                    prop_assert_eq!(e.code(), ErrorCode::InvalidArgument, "{:?}: {}", s, e);
                    // The message names the value, truncated: never a 1 MiB echo.
                    prop_assert!(e.to_string().len() < 200, "{}", e);
                }
                (got, want) => prop_assert!(false, "{:?} parsed to {:?}, the grammar says {:?}", s, got, want),
            }
            Ok(())
        })
        .unwrap();
    ran("decimal parsing", &cases, started);
}

#[test]
fn fuzz_every_i64_round_trips_through_its_decimal_form() {
    let started = std::time::Instant::now();
    let cases = Cell::new(0u64);
    runner(4_000)
        .run(&edge_i64(), |m| {
            cases.set(cases.get() + 1);
            let c = Credits::from_micros(m);
            prop_assert_eq!(c.micros(), m);
            let shown = c.to_string();
            prop_assert_eq!(shown.parse::<Credits>().unwrap().micros(), m, "{}", shown);
            // Whole credits: exact when they fit, InvalidArgument when not.
            let whole = i128::from(m) * 1_000_000;
            match Credits::from_credits(m) {
                Ok(c) => prop_assert_eq!(i128::from(c.micros()), whole),
                Err(e) => {
                    prop_assert!(i64::try_from(whole).is_err(), "{} credits fit, yet: {}", m, e);
                    prop_assert_eq!(e.code(), ErrorCode::InvalidArgument);
                }
            }
            Ok(())
        })
        .unwrap();
    ran("i64 round trip", &cases, started);
}

#[test]
fn fuzz_checked_arithmetic_is_exact_or_invalid_never_wrapped() {
    let started = std::time::Instant::now();
    let cases = Cell::new(0u64);
    runner(4_000)
        .run(&(edge_i64(), edge_i64()), |(a, b)| {
            cases.set(cases.get() + 1);
            let (ca, cb) = (Credits::from_micros(a), Credits::from_micros(b));
            let exact = |r: creditgate::Result<Credits>, want: i128| -> Result<(), TestCaseError> {
                match (r, i64::try_from(want)) {
                    (Ok(c), Ok(w)) => prop_assert_eq!(c.micros(), w),
                    (Err(e), Err(_)) => prop_assert_eq!(e.code(), ErrorCode::InvalidArgument),
                    (r, w) => prop_assert!(false, "{} {} gave {:?}, exact result {:?}", a, b, r, w),
                }
                Ok(())
            };
            exact(ca.checked_add(cb), i128::from(a) + i128::from(b))?;
            exact(ca.checked_sub(cb), i128::from(a) - i128::from(b))?;
            exact(ca.checked_neg(), -i128::from(a))?;
            prop_assert_eq!(ca.is_negative(), a < 0);
            prop_assert_eq!(ca.cmp(&cb), a.cmp(&b));
            Ok(())
        })
        .unwrap();
    ran("checked arithmetic", &cases, started);
}

/// Amounts through the public API against an i128 model of the balance:
/// out-of-range amounts and balances are rejected, never wrapped, and a
/// rejected call changes nothing.
#[test]
fn fuzz_amounts_through_the_api_are_exact_or_rejected() {
    #[derive(Clone, Debug)]
    enum Op {
        Add(usize, i64),
        Deduct(i64),
        Pay(i64),
        Verify(i64),
    }
    const KINDS: [EntryKind; 7] = [
        EntryKind::Grant,
        EntryKind::Purchase,
        EntryKind::Refund,
        EntryKind::Adjustment,
        EntryKind::Usage,
        EntryKind::Deduct,
        EntryKind::Reversal,
    ];
    let op = prop_oneof![
        (0..KINDS.len(), edge_i64()).prop_map(|(k, a)| Op::Add(k, a)),
        edge_i64().prop_map(Op::Deduct),
        prop_oneof![any::<i64>(), -3i64..=3, 99_999_999_998i64..=100_000_000_002].prop_map(Op::Pay),
        edge_i64().prop_map(Op::Verify),
    ];
    let config = Config::new().synchronous(Synchronous::Normal).min_credits_api_key(Credits::ZERO).unwrap();
    let (m, _db) = common::manager_with(config);
    let key = m.create_api_key("u", None).unwrap().secret.expose().to_string();
    let balance = Cell::new(0i128);
    let entries = Cell::new(0usize);
    let payment = Cell::new(0u64);
    let accepted = Cell::new(0u64);
    let started = std::time::Instant::now();
    let cases = Cell::new(0u64);
    runner(2_000)
        .run(&op, |op| {
            cases.set(cases.get() + 1);
            let b = balance.get();
            let fits = |v: i128| i64::try_from(v).is_ok();
            let in_range = |a: i64| a > 0 && a <= MAX_AMOUNT_MICROS;
            let (result, want): (creditgate::Result<i128>, Result<i128, ErrorCode>) = match op {
                Op::Add(k, a) => {
                    let kind = KINDS[k];
                    let valid = match kind {
                        EntryKind::Adjustment => a != 0 && a.unsigned_abs() <= MAX_AMOUNT_MICROS as u64,
                        EntryKind::Grant | EntryKind::Purchase | EntryKind::Refund => in_range(a),
                        _ => false,
                    };
                    let want = if !valid || !fits(b + i128::from(a)) {
                        Err(ErrorCode::InvalidArgument)
                    } else if a < 0 && b + i128::from(a) < 0 {
                        Err(ErrorCode::InsufficientCredits)
                    } else {
                        Ok(i128::from(a))
                    };
                    let r = m.add_credits("u", Credits::from_micros(a), kind, &NO_OPTS);
                    (r.map(|e| i128::from(e.amount.micros())), want)
                }
                Op::Deduct(a) => {
                    let want = if !in_range(a) {
                        Err(ErrorCode::InvalidArgument)
                    } else if b < i128::from(a) {
                        Err(ErrorCode::InsufficientCredits)
                    } else {
                        Ok(-i128::from(a))
                    };
                    let r = m.deduct_credits("u", Credits::from_micros(a), &NO_OPTS);
                    (r.map(|e| i128::from(e.amount.micros())), want)
                }
                Op::Pay(minor) => {
                    payment.set(payment.get() + 1);
                    // 1 cent = 10 credits = 10^7 micro-credits at the default rate.
                    let bought = i128::from(minor) * 10_000_000;
                    let want = if minor <= 0 || bought > i128::from(MAX_AMOUNT_MICROS) || !fits(b + bought) {
                        Err(ErrorCode::InvalidArgument)
                    } else {
                        Ok(bought)
                    };
                    let r = m.record_payment("u", &format!("pi_{}", payment.get()), minor, "usd");
                    (r.map(|e| i128::from(e.amount.micros())), want)
                }
                Op::Verify(min) => {
                    let want = if !(0..=MAX_AMOUNT_MICROS).contains(&min) {
                        Err(ErrorCode::InvalidArgument)
                    } else if b < i128::from(min) {
                        Err(ErrorCode::InsufficientCredits)
                    } else {
                        Ok(0)
                    };
                    let r = m.verify_api_key_credits(&key, Credits::from_micros(min));
                    if let Ok(v) = &r {
                        prop_assert_eq!(i128::from(v.available.micros()), b);
                    }
                    (r.map(|_| 0), want)
                }
            };
            match (result, want) {
                (Ok(got), Ok(want)) => {
                    prop_assert_eq!(got, want);
                    accepted.set(accepted.get() + 1);
                    if want != 0 || matches!(op, Op::Add(..) | Op::Deduct(_) | Op::Pay(_)) {
                        balance.set(b + want);
                        entries.set(entries.get() + 1);
                    }
                }
                (Err(e), Err(want)) => prop_assert_eq!(e.code(), want, "{:?}: {}", op, e),
                (got, want) => {
                    prop_assert!(false, "{:?}: got {:?}, want {:?}", op, got.map_err(|e| e.to_string()), want)
                }
            }
            prop_assert_eq!(i128::from(m.get_balance("u").unwrap().micros()), balance.get(), "after {:?}", op);
            Ok(())
        })
        .unwrap();
    assert_eq!(all_entries(&m, "u").len(), entries.get());
    // Non-vacuity: the edges are hit from both sides.
    assert!(accepted.get() * 10 > cases.get() && accepted.get() * 10 < cases.get() * 9, "{} ok", accepted.get());
    common::assert_audit_ok(&m);
    ran("amounts through the API", &cases, started);
}

// =========================================================================
// 1. Property tests: API keys
// =========================================================================

const BASE62: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Strings a client may present: arbitrary text, lossy arbitrary bytes,
/// strings of our prefix and length, of every length around the limits.
fn presented_key() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(any::<u8>(), 0..600).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "sk_[0-9A-Za-z]{49}",
        "sk_[0-9A-Za-z]{40,60}",
        "[ -~]{0,16}",
        "[0-9A-Za-z_-]{500,520}",
        "sk_[0-9A-Za-z\\x00]{49}",
    ]
}

/// A ledger with keys of every kind: ours, a legacy secret, a legacy hash;
/// with a pepper, so the second (plain SHA-256) lookup runs too.
struct KeyLedger {
    m: CreditManager,
    _db: common::Guard,
    /// (secret, user) of every key that verifies.
    issued: Vec<(String, &'static str)>,
}

fn key_ledger() -> KeyLedger {
    let config = Config::new().api_key_pepper("fuzz-pepper-0123456789").unwrap().synchronous(Synchronous::Normal);
    let (m, db) = common::manager_with(config);
    grant(&m, "alice", credits(10_000));
    let mut issued = Vec::new();
    for _ in 0..3 {
        issued.push((m.create_api_key("alice", None).unwrap().secret.expose().to_string(), "alice"));
    }
    let legacy = "legacy-key-0123456789abcdef";
    m.import_api_key("bob", Some(legacy), None, None).unwrap();
    issued.push((legacy.to_string(), "bob"));
    let hashed = "old-hashed-key-ZYXW-9876";
    m.import_api_key("carol", None, Some(&common::sha256_hex(hashed)), None).unwrap();
    issued.push((hashed.to_string(), "carol"));
    for (s, user) in &issued {
        assert_eq!(m.verify_api_key_credits(s, Credits::ZERO).unwrap().user_id, *user);
    }
    KeyLedger { m, _db: db, issued }
}

#[test]
fn fuzz_arbitrary_strings_are_never_a_key() {
    let l = key_ledger();
    let before = l.m.audit().unwrap();
    let started = std::time::Instant::now();
    let cases = Cell::new(0u64);
    runner(2_000)
        .run(&presented_key(), |s| {
            cases.set(cases.get() + 1);
            if l.issued.iter().any(|(k, _)| *k == s) {
                return Ok(()); // 1 in 62^49: not a failure of the parser
            }
            let e = l.m.verify_api_key_credits(&s, Credits::ZERO).unwrap_err();
            prop_assert_eq!(e.code(), ErrorCode::InvalidApiKey, "{:?}: {}", s, e);
            // The other doors that take a secret say the same, and charge nothing.
            prop_assert_eq!(
                err_code(l.m.record_usage(KeyRef::Secret(&s), common::tokens(1), None)),
                ErrorCode::InvalidApiKey
            );
            prop_assert_eq!(
                err_code(l.m.reserve(&s, HoldAmount::Credits(credits(1)), 60, None)),
                ErrorCode::InvalidApiKey
            );
            Ok(())
        })
        .unwrap();
    assert_eq!(l.m.audit().unwrap(), before, "a rejected key changed the ledger");
    assert_eq!(l.m.account("alice").unwrap().held, Credits::ZERO);
    ran("arbitrary keys", &cases, started);
}

/// How a near-miss differs from an issued key.
#[derive(Clone, Debug)]
enum Mutation {
    Replace(usize, char),
    Delete(usize),
    Insert(usize, char),
    Truncate(usize),
    Append(char),
    Case(usize),
}

fn apply(s: &str, m: &Mutation) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    let n = chars.len();
    match *m {
        Mutation::Replace(i, c) => chars[i % n] = c,
        Mutation::Delete(i) => {
            chars.remove(i % n);
        }
        Mutation::Insert(i, c) => chars.insert(i % (n + 1), c),
        Mutation::Truncate(i) => chars.truncate(i % n),
        Mutation::Append(c) => chars.push(c),
        Mutation::Case(i) => {
            let c = chars[i % n];
            chars[i % n] = if c.is_ascii_lowercase() { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() };
        }
    }
    chars.into_iter().collect()
}

fn near_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::sample::select(BASE62.chars().collect::<Vec<_>>()),
        1 => any::<char>(),
        1 => Just('\0'),
        1 => Just('_'),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), near_char()).prop_map(|(i, c)| Mutation::Replace(i, c)),
        1 => any::<usize>().prop_map(Mutation::Delete),
        1 => (any::<usize>(), near_char()).prop_map(|(i, c)| Mutation::Insert(i, c)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => near_char().prop_map(Mutation::Append),
        1 => any::<usize>().prop_map(Mutation::Case),
    ]
}

#[test]
fn fuzz_an_issued_key_with_one_character_changed_is_rejected() {
    let l = key_ledger();
    let before = l.m.audit().unwrap();
    let started = std::time::Instant::now();
    let cases = Cell::new(0u64);
    let rejected_without_lookup = Cell::new(0u64);
    runner(3_000)
        .run(&(0..l.issued.len(), mutation()), |(k, mutation)| {
            cases.set(cases.get() + 1);
            let (secret, _) = &l.issued[k];
            let near = apply(secret, &mutation);
            if near == *secret {
                return Ok(()); // e.g. a character replaced by itself
            }
            prop_assert!(!l.issued.iter().any(|(s, _)| *s == near));
            let e = l.m.verify_api_key_credits(&near, Credits::ZERO).unwrap_err();
            prop_assert_eq!(e.code(), ErrorCode::InvalidApiKey, "{:?} -> {:?}: {}", mutation, near, e);
            if e.to_string().contains("checksum") {
                rejected_without_lookup.set(rejected_without_lookup.get() + 1);
            }
            // The message never quotes the presented key.
            let shown = format!("{e} {e:?}");
            prop_assert!(near.len() < 8 || !shown.contains(&near), "{}", shown);
            prop_assert!(!shown.contains(&secret[4..]), "{}", shown);
            Ok(())
        })
        .unwrap();
    assert_eq!(l.m.audit().unwrap(), before);
    // Non-vacuity: the checksum caught most changes of our keys.
    assert!(rejected_without_lookup.get() * 10 > cases.get(), "{} of {}", rejected_without_lookup.get(), cases.get());
    ran("one character changed", &cases, started);
}

// =========================================================================
// 2. The bad-input matrix
// =========================================================================

/// What must not change: the audit, and every touched user's account,
/// entries and keys; the prices and the report.
#[derive(Debug, PartialEq)]
struct Snapshot {
    audit: creditgate::AuditReport,
    users: Vec<(creditgate::Account, Vec<creditgate::Entry>, Vec<creditgate::ApiKeyInfo>)>,
    prices: std::collections::BTreeMap<String, creditgate::ModelPrice>,
    report: creditgate::Report,
}

const TOUCHED: [&str; 3] = ["alice", "bob", "nobody"];

fn snapshot(m: &CreditManager) -> Snapshot {
    let audit = m.audit().unwrap();
    assert!(audit.ok, "{:?}", audit.mismatches);
    Snapshot {
        audit,
        users: TOUCHED
            .iter()
            .map(|u| (m.account(u).unwrap(), all_entries(m, u), m.list_api_keys(u).unwrap()))
            .collect(),
        prices: m.list_model_prices().unwrap(),
        report: m.report().unwrap(),
    }
}

/// Runs bad inputs, each of which must fail with its documented code, and
/// counts them.
struct Matrix {
    tried: Cell<usize>,
    by_code: RefCell<std::collections::BTreeMap<&'static str, usize>>,
}

impl Matrix {
    #[track_caller]
    fn expect<T: std::fmt::Debug>(&self, what: &str, want: ErrorCode, r: creditgate::Result<T>) {
        self.tried.set(self.tried.get() + 1);
        *self.by_code.borrow_mut().entry(want.as_str()).or_default() += 1;
        match r {
            Ok(v) => panic!("{what}: expected {want:?}, got Ok({v:?})"),
            Err(e) => {
                assert_eq!(e.code(), want, "{what}: {e}");
                // Messages name the value, truncated: never an echo of a 1 MiB input.
                assert!(e.to_string().len() < 1_000, "{what}: a {}-byte message", e.to_string().len());
            }
        }
    }
}

/// Bad values for a required text field (user ids, payment ids, models).
fn bad_texts() -> Vec<(String, String)> {
    let mut v = vec![
        ("empty".to_string(), String::new()),
        ("1 MiB".to_string(), "x".repeat(MIB)),
        ("256 bytes".to_string(), "y".repeat(MAX_TEXT_BYTES + 1)),
        ("NUL inside".to_string(), "ali\0ce".to_string()),
        ("only NUL".to_string(), "\0".to_string()),
        ("NUL at the end".to_string(), "alice\0".to_string()),
        ("1 MiB of NUL".to_string(), "\0".repeat(MIB)),
    ];
    // 128 two-byte characters: 256 bytes although only 128 characters.
    v.push(("256 bytes in 128 chars".to_string(), "é".repeat(128)));
    v
}

/// Bad values for an API key argument: all `InvalidApiKey`.
fn bad_keys(issued: &str) -> Vec<(String, String)> {
    let mut tampered = issued.as_bytes().to_vec();
    tampered[20] = if tampered[20] == b'a' { b'b' } else { b'a' };
    vec![
        ("empty".into(), String::new()),
        ("1 MiB".into(), "k".repeat(MIB)),
        ("7 bytes".into(), "sk_1234".into()),
        ("513 bytes".into(), "k".repeat(513)),
        ("NUL inside".into(), format!("{}\0", &issued[..20])),
        ("issued key + NUL".into(), format!("{issued}\0")),
        ("bad checksum".into(), String::from_utf8(tampered).unwrap()),
        ("unknown legacy shape".into(), "legacy-but-unknown-0001".into()),
        ("issued key, other case".into(), issued.to_uppercase()),
        ("issued key + space".into(), format!("{issued} ")),
    ]
}

fn bad_amounts() -> Vec<i64> {
    vec![i64::MIN, -MAX_AMOUNT_MICROS - 1, -1, 0, MAX_AMOUNT_MICROS + 1, i64::MAX]
}

fn bad_thresholds() -> Vec<i64> {
    vec![i64::MIN, -MAX_AMOUNT_MICROS, -1, MAX_AMOUNT_MICROS + 1, i64::MAX]
}

fn bad_tokens() -> Vec<i64> {
    vec![i64::MIN, -1, MAX_TOKENS_PER_CALL + 1, i64::MAX]
}

fn oversize_metadata() -> Vec<serde_json::Map<String, serde_json::Value>> {
    let one = |k: &str, v: serde_json::Value| {
        let mut m = serde_json::Map::new();
        m.insert(k.into(), v);
        m
    };
    // {"b":"..."} is 8 bytes of JSON around the value.
    vec![
        one("b", serde_json::json!("y".repeat(MAX_METADATA_BYTES - 8 + 1))),
        one("b", serde_json::json!("y".repeat(MIB))),
        one(&"k".repeat(MAX_METADATA_BYTES), serde_json::json!(1)),
        one("b", serde_json::json!(vec![0; 3_000])),
        one("b", serde_json::json!("\0".repeat(MAX_METADATA_BYTES))), // \u0000 is 6 bytes of JSON
    ]
}

fn random_id() -> uuid::Uuid {
    // Version 7 shape with random bits: not an id the ledger issued.
    let r = std::collections::hash_map::RandomState::new();
    use std::hash::{BuildHasher, Hasher};
    let mut h = r.build_hasher();
    h.write_u64(0x5eed);
    let hi = h.finish();
    let lo = r.hash_one(hi);
    uuid::Uuid::from_u64_pair((hi & !0xf000) | 0x7000, (lo & !(0b11 << 62)) | (0b10 << 62))
}

#[test]
fn bad_input_matrix_every_method_rejects_with_the_documented_code_and_changes_nothing() {
    let (m, _db) = common::manager();
    // A ledger with something in every table.
    m.record_payment("alice", "pi_1", 1_000, "USD").unwrap();
    let k = m.create_api_key("alice", Some("main")).unwrap();
    let key = k.secret.expose().to_string();
    m.import_api_key("bob", Some("legacy-key-of-bob-0001"), None, None).unwrap();
    m.set_model_price("gpt", credits(2), credits(4)).unwrap();
    let hold = m.reserve(&key, HoldAmount::Credits(credits(5)), 600, Some("h1")).unwrap();
    m.record_usage(KeyRef::Secret(&key), common::tokens(1_000), Some("r1")).unwrap();
    m.deduct_credits("alice", credits(1), &common::with_key("d1")).unwrap();
    let entry = all_entries(&m, "alice")[0].id;
    let before = snapshot(&m);

    let x = Matrix { tried: Cell::new(0), by_code: RefCell::new(Default::default()) };
    let inv = ErrorCode::InvalidArgument;
    let bad_key = ErrorCode::InvalidApiKey;
    let nf = ErrorCode::NotFound;
    let opts = |key: Option<&'static str>| EntryOptions { idempotency_key: key, reference: None, metadata: None };
    let o = opts(None);

    // ----- every required and optional text argument ------------------------
    for (what, s) in bad_texts() {
        let s = s.as_str();
        let w = |f: &str| format!("{f} with {what}");
        let eo_key = EntryOptions { idempotency_key: Some(s), ..o.clone() };
        let eo_ref = EntryOptions { reference: Some(s), ..o.clone() };
        x.expect(&w("get_balance(user)"), inv, m.get_balance(s));
        x.expect(&w("account(user)"), inv, m.account(s));
        x.expect(&w("add_credits(user)"), inv, m.add_credits(s, credits(1), EntryKind::Grant, &o));
        x.expect(
            &w("add_credits(idempotency_key)"),
            inv,
            m.add_credits("alice", credits(1), EntryKind::Grant, &eo_key),
        );
        x.expect(&w("add_credits(reference)"), inv, m.add_credits("alice", credits(1), EntryKind::Grant, &eo_ref));
        x.expect(&w("import_balance(user)"), inv, m.import_balance(s, credits(1), EntryKind::Adjustment));
        x.expect(&w("deduct_credits(user)"), inv, m.deduct_credits(s, credits(1), &o));
        x.expect(&w("deduct_credits(idempotency_key)"), inv, m.deduct_credits("alice", credits(1), &eo_key));
        x.expect(&w("deduct_credits(reference)"), inv, m.deduct_credits("alice", credits(1), &eo_ref));
        x.expect(&w("record_payment(user)"), inv, m.record_payment(s, "pi_new", 100, "usd"));
        x.expect(&w("record_payment(payment_id)"), inv, m.record_payment("alice", s, 100, "usd"));
        x.expect(&w("record_payment(currency)"), inv, m.record_payment("alice", "pi_new", 100, s));
        x.expect(&w("reverse_payment(payment_id)"), inv, m.reverse_payment(s, None, None, None));
        x.expect(&w("reverse_payment(reason)"), inv, m.reverse_payment("pi_1", None, Some(s), None));
        x.expect(&w("reverse_payment(reversal_id)"), inv, m.reverse_payment("pi_1", None, None, Some(s)));
        x.expect(&w("transactions(user)"), inv, m.transactions(s, 10, None));
        x.expect(&w("can_generate_api_key(user)"), inv, m.can_generate_api_key(s));
        x.expect(&w("create_api_key(user)"), inv, m.create_api_key(s, None));
        x.expect(&w("create_api_key(name)"), inv, m.create_api_key("alice", Some(s)));
        x.expect(&w("import_api_key(user)"), inv, m.import_api_key(s, Some("legacy-key-new-0001"), None, None));
        x.expect(
            &w("import_api_key(name)"),
            inv,
            m.import_api_key("alice", Some("legacy-key-new-0001"), None, Some(s)),
        );
        x.expect(&w("import_api_key(secret_sha256)"), inv, m.import_api_key("alice", None, Some(s), None));
        x.expect(&w("revoke_api_key(user)"), inv, m.revoke_api_key(k.key_id, Some(s)));
        x.expect(&w("list_api_keys(user)"), inv, m.list_api_keys(s));
        let u = Usage::new(1, 0, Some(s));
        x.expect(&w("record_usage(model)"), inv, m.record_usage(KeyRef::Secret(&key), u, None));
        x.expect(&w("record_usage(request_id)"), inv, m.record_usage(KeyRef::Secret(&key), common::tokens(1), Some(s)));
        let ht = HoldAmount::Tokens { tokens: 1, model: Some(s) };
        x.expect(&w("reserve(model)"), inv, m.reserve(&key, ht, 60, None));
        x.expect(&w("reserve(request_id)"), inv, m.reserve(&key, HoldAmount::Credits(credits(1)), 60, Some(s)));
        x.expect(&w("settle(model)"), inv, m.settle(hold.hold_id, Settlement::Tokens(u)));
        x.expect(&w("set_model_price(model)"), inv, m.set_model_price(s, credits(1), credits(1)));
        let iu = ImportUsers { table: s.to_string(), ..ImportUsers::default() };
        x.expect(&w("import_users(table)"), inv, m.import_users(&iu));
        let iu = ImportUsers { id_column: s.to_string(), ..ImportUsers::default() };
        x.expect(&w("import_users(id_column)"), inv, m.import_users(&iu));
        let iu = ImportUsers {
            keys: Some(ImportKeys { key_column: s.to_string(), ..ImportKeys::default() }),
            ..ImportUsers::default()
        };
        x.expect(&w("import_users(keys.key_column)"), inv, m.import_users(&iu));
        // Ids: a bad string is InvalidArgument at the parse.
        x.expect(&w("KeyId::parse"), inv, KeyId::parse(s));
        x.expect(&w("HoldId::parse"), inv, HoldId::parse(s));
        x.expect(&w("EntryId::parse"), inv, EntryId::parse(s));
        x.expect(&w("EntryKind::parse"), inv, EntryKind::parse(s));
        x.expect(&w("Credits::from_str"), inv, s.parse::<Credits>());
    }
    // Reserved idempotency-key prefixes and SQL in identifiers.
    for reserved in ["payment:x", "reversal:x", "usage:x", "import:x"] {
        let eo = EntryOptions { idempotency_key: Some(reserved), ..o.clone() };
        x.expect("add_credits(reserved key)", inv, m.add_credits("alice", credits(1), EntryKind::Grant, &eo));
        x.expect("deduct_credits(reserved key)", inv, m.deduct_credits("alice", credits(1), &eo));
    }
    for ident in ["users; DROP TABLE creditgate_entries", "a.b.c", "1users", "us\"ers", "users--"] {
        let iu = ImportUsers { table: ident.to_string(), ..ImportUsers::default() };
        x.expect("import_users(table: not an identifier)", inv, m.import_users(&iu));
    }

    // ----- API key arguments: InvalidApiKey ----------------------------------
    for (what, s) in bad_keys(&key) {
        let s = s.as_str();
        let w = |f: &str| format!("{f} with {what}");
        x.expect(&w("verify_api_key_credits"), bad_key, m.verify_api_key_credits(s, Credits::ZERO));
        x.expect(&w("record_usage(secret)"), bad_key, m.record_usage(KeyRef::Secret(s), common::tokens(1), None));
        x.expect(&w("reserve(secret)"), bad_key, m.reserve(s, HoldAmount::Credits(credits(1)), 60, None));
    }
    // A legacy secret that cannot be a key is InvalidArgument at import.
    for (what, s) in bad_keys(&key).into_iter().take(7) {
        x.expect(&format!("import_api_key(secret) with {what}"), inv, m.import_api_key("alice", Some(&s), None, None));
    }
    for (what, h) in [
        ("63 hex", "a".repeat(63)),
        ("65 hex", "a".repeat(65)),
        ("upper-case hex", "A".repeat(64)),
        ("not hex", "g".repeat(64)),
        ("1 MiB", "a".repeat(MIB)),
    ] {
        x.expect(
            &format!("import_api_key(secret_sha256) {what}"),
            inv,
            m.import_api_key("alice", None, Some(&h), None),
        );
    }
    x.expect("import_api_key(neither)", inv, m.import_api_key("alice", None, None, None));
    let h = common::sha256_hex("legacy-key-new-0002");
    x.expect("import_api_key(both)", inv, m.import_api_key("alice", Some("legacy-key-new-0002"), Some(&h), None));

    // ----- amounts -----------------------------------------------------------
    for a in bad_amounts() {
        let c = Credits::from_micros(a);
        let w = |f: &str| format!("{f} with {a} micro-credits");
        for kind in [EntryKind::Grant, EntryKind::Purchase, EntryKind::Refund] {
            x.expect(&w(&format!("add_credits({kind})")), inv, m.add_credits("alice", c, kind, &o));
        }
        x.expect(&w("deduct_credits"), inv, m.deduct_credits("alice", c, &o));
        x.expect(&w("reserve(credits)"), inv, m.reserve(&key, HoldAmount::Credits(c), 60, None));
        x.expect(&w("import_balance(purchase)"), inv, m.import_balance("carol", c, EntryKind::Purchase));
    }
    for a in [i64::MIN, -MAX_AMOUNT_MICROS - 1, 0, MAX_AMOUNT_MICROS + 1, i64::MAX] {
        let c = Credits::from_micros(a);
        x.expect("add_credits(adjustment)", inv, m.add_credits("alice", c, EntryKind::Adjustment, &o));
        x.expect("import_balance(adjustment)", inv, m.import_balance("carol", c, EntryKind::Adjustment));
    }
    for a in bad_thresholds() {
        let c = Credits::from_micros(a);
        x.expect("verify_api_key_credits(min_credits)", inv, m.verify_api_key_credits(&key, c));
        x.expect("set_model_price(input)", inv, m.set_model_price("gpt", c, credits(1)));
        x.expect("set_model_price(output)", inv, m.set_model_price("gpt", credits(1), c));
        x.expect("settle(credits)", inv, m.settle(hold.hold_id, Settlement::Credits(c)));
    }
    for kind in [EntryKind::Usage, EntryKind::Deduct, EntryKind::Reversal, EntryKind::Expiry] {
        x.expect("add_credits(kind)", inv, m.add_credits("alice", credits(1), kind, &o));
    }
    for kind in [
        EntryKind::Grant,
        EntryKind::Refund,
        EntryKind::Usage,
        EntryKind::Deduct,
        EntryKind::Reversal,
        EntryKind::Expiry,
    ] {
        x.expect("import_balance(kind)", inv, m.import_balance("carol", credits(1), kind));
        let iu = ImportUsers { kind, ..ImportUsers::default() };
        x.expect("import_users(kind)", inv, m.import_users(&iu));
    }
    // Payments: minor units > 0, and at most 10^12 credits bought.
    for minor in [i64::MIN, -1, 0, 100_000_000_001, i64::MAX] {
        x.expect("record_payment(amount_minor)", inv, m.record_payment("alice", "pi_new", minor, "usd"));
    }
    for currency in ["eur", "US", "usd ", "ＵＳＤ"] {
        x.expect("record_payment(currency)", inv, m.record_payment("alice", "pi_new", 100, currency));
    }
    for minor in [i64::MIN, -1, 0, 1_001, i64::MAX] {
        x.expect("reverse_payment(amount_minor)", inv, m.reverse_payment("pi_1", Some(minor), None, None));
    }
    // The same payment id for another user or amount, and one past the limit.
    x.expect(
        "record_payment(other user)",
        ErrorCode::IdempotencyConflict,
        m.record_payment("bob", "pi_1", 1_000, "usd"),
    );
    x.expect(
        "record_payment(other amount)",
        ErrorCode::IdempotencyConflict,
        m.record_payment("alice", "pi_1", 999, "usd"),
    );

    // ----- tokens, ttl, page limits, metadata ---------------------------------
    for t in bad_tokens() {
        let w = |f: &str| format!("{f} with {t} tokens");
        let u_in = Usage::new(t, 0, None);
        let u_out = Usage::new(0, t, None);
        x.expect(&w("record_usage(input)"), inv, m.record_usage(KeyRef::Secret(&key), u_in, None));
        x.expect(&w("record_usage(output)"), inv, m.record_usage(KeyRef::Secret(&key), u_out, None));
        x.expect(&w("record_usage(by id)"), inv, m.record_usage(KeyRef::Id(k.key_id), u_in, None));
        x.expect(&w("reserve(tokens)"), inv, m.reserve(&key, HoldAmount::Tokens { tokens: t, model: None }, 60, None));
        x.expect(&w("settle(input)"), inv, m.settle(hold.hold_id, Settlement::Tokens(u_in)));
        x.expect(&w("settle(output)"), inv, m.settle(hold.hold_id, Settlement::Tokens(u_out)));
    }
    for ttl in [i64::MIN, -1, 0, MAX_TTL_SECONDS + 1, i64::MAX] {
        x.expect("reserve(ttl)", inv, m.reserve(&key, HoldAmount::Credits(credits(1)), ttl, None));
    }
    for limit in [0, MAX_PAGE_LIMIT + 1, u32::MAX] {
        x.expect("transactions(limit)", inv, m.transactions("alice", limit, None));
    }
    for meta in oversize_metadata() {
        let eo = EntryOptions { metadata: Some(&meta), ..o.clone() };
        x.expect("add_credits(metadata)", inv, m.add_credits("alice", credits(1), EntryKind::Grant, &eo));
        x.expect("deduct_credits(metadata)", inv, m.deduct_credits("alice", credits(1), &eo));
    }

    // ----- unknown ids ----------------------------------------------------------
    for _ in 0..8 {
        let id = random_id();
        x.expect("revoke_api_key(unknown)", nf, m.revoke_api_key(KeyId(id), None));
        x.expect("revoke_api_key(unknown, user)", nf, m.revoke_api_key(KeyId(id), Some("alice")));
        x.expect(
            "record_usage(unknown key id)",
            bad_key,
            m.record_usage(KeyRef::Id(KeyId(id)), common::tokens(1), None),
        );
        x.expect("settle(unknown)", nf, m.settle(HoldId(id), Settlement::Credits(credits(1))));
        x.expect("release(unknown)", nf, m.release(HoldId(id)));
        x.expect("transactions(unknown cursor)", nf, m.transactions("alice", 10, Some(EntryId(id))));
    }
    x.expect("transactions(another user's entry)", nf, m.transactions("bob", 10, Some(entry)));
    x.expect("revoke_api_key(another user's key)", nf, m.revoke_api_key(k.key_id, Some("bob")));
    x.expect("reverse_payment(unknown)", nf, m.reverse_payment("pi_unknown", None, None, None));
    x.expect("reverse_payment(unknown, partial)", nf, m.reverse_payment("pi_unknown", Some(1), None, Some("re_1")));

    // Every bad input was rejected, and the ledger is as it was.
    let after = snapshot(&m);
    assert_eq!(before, after, "the ledger changed");
    // The hold is still active and still settles normally.
    assert_eq!(m.account("alice").unwrap().held, credits(5));
    let tried = x.tried.get();
    assert!(tried >= 400, "only {tried} inputs");
    eprintln!(
        "bad input (rust): {tried} inputs, all rejected with the documented code, ledger unchanged ({:?})",
        x.by_code.borrow()
    );
}

// =========================================================================
// 3. Limits at their boundary (operations.rs covers keys, holds, page size,
//    tokens, amounts and ttl; these are the edges it does not pin)
// =========================================================================

#[test]
fn metadata_is_accepted_up_to_4_kib_exactly() {
    let (m, _db) = common::manager();
    let blob = |json_len: usize| {
        let mut meta = serde_json::Map::new();
        meta.insert("b".into(), serde_json::json!("y".repeat(json_len - 8)));
        assert_eq!(serde_json::to_string(&meta).unwrap().len(), json_len);
        meta
    };
    let at = blob(MAX_METADATA_BYTES);
    let over = blob(MAX_METADATA_BYTES + 1);
    let e = m.add_credits("u", credits(1), EntryKind::Grant, &EntryOptions { metadata: Some(&at), ..NO_OPTS }).unwrap();
    assert_eq!(e.metadata.as_ref(), Some(&at));
    let d = m.deduct_credits("u", micros(1), &EntryOptions { metadata: Some(&at), ..NO_OPTS }).unwrap();
    assert_eq!(d.metadata.as_ref(), Some(&at));
    let err = m.add_credits("u", credits(1), EntryKind::Grant, &EntryOptions { metadata: Some(&over), ..NO_OPTS });
    let err = err.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(err.to_string().contains("4096") && err.to_string().contains("4097"), "{err}");
    assert_eq!(all_entries(&m, "u").len(), 2);
    assert_eq!(all_entries(&m, "u")[1].metadata.as_ref(), Some(&at), "stored whole");
}

#[test]
fn text_fields_take_255_bytes_and_not_256() {
    let (m, _db) = common::manager();
    let at = "u".repeat(MAX_TEXT_BYTES);
    let over = "u".repeat(MAX_TEXT_BYTES + 1);
    // Multi-byte: 85 × 3 bytes = 255 bytes is fine.
    let wide = "€".repeat(85);
    for user in [at.as_str(), wide.as_str()] {
        let opts = EntryOptions { idempotency_key: Some(&at), reference: Some(&wide), metadata: None };
        let e = m.add_credits(user, credits(6000), EntryKind::Grant, &opts).unwrap();
        assert_eq!((e.user_id.as_str(), e.idempotency_key.as_deref()), (user, Some(at.as_str())));
        let p = m.record_payment(user, &format!("{}{}", &at[..250], &user[..3]), 1, "usd").unwrap();
        assert_eq!(p.reference.as_deref().map(str::len), Some(253));
        let k = m.create_api_key(user, Some(&at)).unwrap();
        assert_eq!(k.name.as_deref(), Some(at.as_str()));
        m.set_model_price(&at, credits(1), credits(1)).unwrap();
        let c = m.record_usage(
            KeyRef::Secret(k.secret.expose()),
            Usage { model: Some(&at), ..common::tokens(1) },
            Some(&at),
        );
        assert!(c.is_ok(), "{c:?}");
        let h =
            m.reserve(k.secret.expose(), HoldAmount::Tokens { tokens: 1, model: Some(&at) }, 60, Some(&at)).unwrap();
        m.release(h.hold_id).unwrap();
        assert_eq!(m.get_balance(user).unwrap(), credits(6010).checked_sub(micros(1_000)).unwrap());
    }
    assert_eq!(err_code(m.get_balance(&over)), ErrorCode::InvalidArgument);
    let opts = EntryOptions { reference: Some(&over), ..NO_OPTS };
    assert_eq!(err_code(m.add_credits("v", credits(1), EntryKind::Grant, &opts)), ErrorCode::InvalidArgument);
    common::assert_audit_ok(&m);
}

#[test]
fn the_largest_amount_is_accepted_everywhere_and_one_more_is_not() {
    let (m, _db) = common::manager();
    let max = Credits::from_micros(MAX_AMOUNT_MICROS);
    let over = Credits::from_micros(MAX_AMOUNT_MICROS + 1);
    assert_eq!(Credits::from_credits(MAX_AMOUNT_CREDITS).unwrap(), max);
    // Grants, deducts, holds, settles and prices take exactly 10^12 credits.
    m.add_credits("u", max, EntryKind::Grant, &NO_OPTS).unwrap();
    m.add_credits("u", max.checked_neg().unwrap(), EntryKind::Adjustment, &NO_OPTS).unwrap();
    m.add_credits("u", max, EntryKind::Adjustment, &NO_OPTS).unwrap();
    assert_eq!(err_code(m.add_credits("u", over, EntryKind::Adjustment, &NO_OPTS)), ErrorCode::InvalidArgument);
    m.set_model_price("max", max, max).unwrap();
    assert_eq!(err_code(m.set_model_price("max", over, max)), ErrorCode::InvalidArgument);
    m.add_credits("u", max, EntryKind::Grant, &NO_OPTS).unwrap();
    let key = m.create_api_key("u", None).unwrap().secret.expose().to_string();
    let h = m.reserve(&key, HoldAmount::Credits(max), 60, None).unwrap();
    assert_eq!(h.amount, max);
    assert_eq!(err_code(m.reserve(&key, HoldAmount::Credits(over), 60, None)), ErrorCode::InvalidArgument);
    let c = m.settle(h.hold_id, Settlement::Credits(max)).unwrap();
    assert_eq!(c.charged, max);
    m.deduct_credits("u", max, &NO_OPTS).unwrap();
    assert_eq!(m.get_balance("u").unwrap(), Credits::ZERO);
    assert_eq!(err_code(m.deduct_credits("u", over, &NO_OPTS)), ErrorCode::InvalidArgument);
    // A usage whose price exceeds the largest amount is refused, not wrapped:
    // 10^9 tokens at 10^12 credits per 1k.
    let u = Usage::new(MAX_TOKENS_PER_CALL, 0, Some("max"));
    assert_eq!(err_code(m.record_usage(KeyRef::Secret(&key), u, None)), ErrorCode::InvalidArgument);
    assert_eq!(
        err_code(m.reserve(&key, HoldAmount::Tokens { tokens: MAX_TOKENS_PER_CALL, model: Some("max") }, 60, None)),
        ErrorCode::InvalidArgument
    );
    // Payments: 10^11 cents buy exactly 10^12 credits.
    let p = m.record_payment("rich", "pi_max", 100_000_000_000, "usd").unwrap();
    assert_eq!(p.amount, max);
    common::assert_audit_ok(&m);
}

// =========================================================================
// 4. Secret hygiene
// =========================================================================

const PEPPER: &str = "hygiene-pepper-must-stay-hidden";

fn hmac_hex(secret: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(PEPPER.as_bytes()).unwrap();
    mac.update(secret.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The strings that must never be found: each secret, its body without the
/// prefix, and a middle slice; the pepper.
fn needles(secrets: &[String]) -> Vec<String> {
    let mut v = vec![PEPPER.to_string()];
    for s in secrets {
        v.push(s.clone());
        v.push(s.strip_prefix("sk_").unwrap_or(&s[s.len() / 4..]).to_string());
        v.push(s[10..26].to_string());
    }
    v
}

#[track_caller]
fn assert_clean(what: &str, text: &str, needles: &[String]) {
    for n in needles {
        assert!(!text.contains(n.as_str()), "{what} contains {n:?}: {text}");
    }
}

/// The SQLite files' bytes hold no needle.
fn grep_files(path: &std::path::Path, needles: &[String]) -> usize {
    let mut files = 0;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let file = format!("{}{suffix}", path.display());
        let Ok(bytes) = std::fs::read(&file) else { continue };
        files += 1;
        for n in needles {
            assert!(!bytes.windows(n.len()).any(|w| w == n.as_bytes()), "{n:?} found in {file}");
        }
    }
    files
}

/// Near misses of a secret: one character changed at the start, in the
/// middle and at the end, one deleted or added, case, NUL, whitespace.
fn near_misses(s: &str) -> Vec<String> {
    let flip = |i: usize| {
        let mut b = s.as_bytes().to_vec();
        b[i] = if b[i] == b'a' { b'b' } else { b'a' };
        String::from_utf8(b).unwrap()
    };
    vec![
        flip(0),
        flip(3),
        flip(s.len() / 2),
        flip(s.len() - 1),
        s[..s.len() - 1].to_string(),
        format!("{s}x"),
        s.to_uppercase(),
        format!("{s}\0"),
        format!(" {s}"),
        format!("{s}\n"),
        s.repeat(2),
        s[..7].to_string(),
    ]
}

#[test]
fn secrets_show_nowhere_but_through_expose() {
    let (m, db) = common::manager_with(Config::new().api_key_pepper(PEPPER).unwrap());
    m.record_payment("alice", "pi_1", 600, "usd").unwrap();
    let a = m.create_api_key("alice", Some("prod")).unwrap();
    let b = m.create_api_key("alice", None).unwrap();
    let legacy = "legacy-plaintext-secret-4242".to_string();
    let imported = m.import_api_key("bob", Some(&legacy), None, Some("old")).unwrap();
    let (sa, sb) = (a.secret.expose().to_string(), b.secret.expose().to_string());
    let secrets = vec![sa.clone(), sb.clone(), legacy.clone()];
    let needles = needles(&secrets);
    // ApiKeySecret reveals itself only through expose().
    assert_eq!(a.secret.expose(), sa);
    assert!(sa.starts_with("sk_") && sa.len() == 52);

    // Operations that succeed with the secrets.
    let mut shown: Vec<String> = Vec::new();
    let v = m.verify_api_key_credits(&sa, credits(1)).unwrap();
    shown.push(format!("{v:?}"));
    shown.push(format!("{:?}", m.record_usage(KeyRef::Secret(&sa), common::tokens(100), Some("req-1")).unwrap()));
    shown.push(format!("{:?}", m.record_usage(KeyRef::Secret(&legacy), common::tokens(100), None).unwrap()));
    let h = m.reserve(&sb, HoldAmount::Credits(credits(1)), 60, Some("req-2")).unwrap();
    shown.push(format!("{h:?}"));
    shown.push(format!("{:?}", m.settle(h.hold_id, Settlement::Credits(micros(5))).unwrap()));

    // Operations that fail with a secret as input.
    let mut errors: Vec<Error> = vec![
        m.verify_api_key_credits(&sb, credits(100_000)).unwrap_err(), // insufficient
        m.verify_api_key_credits(&legacy, credits(1)).unwrap_err(),   // bob overdrew
        m.import_api_key("carol", Some(&legacy), None, None).unwrap_err(), // another user's key
        m.import_api_key("carol", Some(&sa), None, None).unwrap_err(),
        m.revoke_api_key(a.key_id, Some("bob")).unwrap_err(), // wrong user
        m.reserve(&sa, HoldAmount::Credits(credits(100_000)), 60, None).unwrap_err(),
        m.record_usage(KeyRef::Secret(&sa), common::tokens(-1), None).unwrap_err(),
    ];
    m.revoke_api_key(a.key_id, Some("alice")).unwrap();
    errors.push(m.verify_api_key_credits(&sa, credits(1)).unwrap_err()); // revoked
    errors.push(m.reserve(&sa, HoldAmount::Credits(credits(1)), 60, None).unwrap_err());
    // A host that mixes up key ids and secrets.
    for s in &secrets {
        errors.push(KeyId::parse(s).unwrap_err());
        errors.push(HoldId::parse(s).unwrap_err());
        errors.push(EntryId::parse(s).unwrap_err());
    }
    for s in &secrets {
        for near in near_misses(s) {
            errors.push(m.verify_api_key_credits(&near, credits(1)).unwrap_err());
            errors.push(m.reserve(&near, HoldAmount::Credits(credits(1)), 60, None).unwrap_err());
            errors.push(m.record_usage(KeyRef::Secret(&near), common::tokens(1), None).unwrap_err());
            // Import rejects the malformed ones (a plausible legacy key would be registered).
            if let Err(e) = m.import_api_key("carol", Some(&near), None, None) {
                errors.push(e);
            }
        }
    }
    let codes: std::collections::BTreeSet<&str> = errors.iter().map(|e| e.code().as_str()).collect();
    assert!(
        ["insufficient_credits", "invalid_api_key", "idempotency_conflict", "not_found", "invalid_argument"]
            .iter()
            .all(|c| codes.contains(c)),
        "{codes:?}"
    );
    for e in &errors {
        assert_clean("error", &format!("{e} | {e:?}"), &needles);
    }

    // Debug of every returned struct and of the handles.
    shown.push(format!("{a:?} {b:?} {:?} {:?}", a.secret, b.secret));
    shown.push(format!("{imported:?}"));
    shown.push(format!("{:?} {:?}", m.list_api_keys("alice").unwrap(), m.list_api_keys("bob").unwrap()));
    shown.push(format!("{:?} {:?}", KeyRef::Secret(&sa), KeyRef::Secret(&legacy)));
    shown.push(format!("{m:?} {:?}", m.config()));
    shown.push(format!("{:?}", all_entries(&m, "alice")));
    shown.push(m.metrics_prometheus());
    shown.push(format!("{:?}", m.metrics()));
    shown.push(format!("{:?} {:?}", m.report().unwrap(), m.audit().unwrap()));
    for s in &shown {
        assert_clean("Debug output", s, &needles);
    }
    assert!(shown[shown.len() - 9].contains(&a.prefix), "NewApiKey shows its display prefix");

    // A database password in the URL.
    let url = "postgresql://app:hunter2-db-password@db.internal:5432/ledger";
    let config = Config::new().database_url(url).api_key_pepper(PEPPER).unwrap();
    let text = format!("{config:?} {}", creditgate::redact_url(url));
    assert_clean("Config", &text, &["hunter2-db-password".to_string(), PEPPER.to_string()]);
    assert!(text.contains("db.internal"), "{text}");

    // The database files, before and after a checkpoint.
    let Some(path) = db.sqlite_path().map(|p| p.to_path_buf()) else { return };
    assert!(grep_files(&path, &needles) >= 1);
    let raw = rusqlite::Connection::open(&path).unwrap();
    let (busy, _, _): (i64, i64, i64) =
        raw.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
    assert_eq!(busy, 0, "the checkpoint completed");
    assert!(grep_files(&path, &needles) >= 1);
    // What is stored: the peppered hash, never the secret or its plain SHA-256.
    let stored: Vec<String> = raw
        .prepare("SELECT key_hash FROM creditgate_api_keys")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    for s in &secrets {
        assert!(stored.contains(&hmac_hex(s)), "HMAC of a secret stored");
        assert!(!stored.contains(&common::sha256_hex(s)), "plain SHA-256 stored although a pepper is set");
    }
}

/// Verification does not compare secrets: it looks the HMAC of the whole
/// presented string up in a unique index, and rejects our own format with a
/// bad checksum before any lookup. Observed structurally (no timing): with
/// the keys table renamed away, a string that reaches storage fails with a
/// storage error, one rejected before storage still says `InvalidApiKey`.
#[test]
fn verification_looks_keys_up_by_hash_and_never_compares_secrets() {
    let (m, db) = common::manager_with(Config::new().api_key_pepper(PEPPER).unwrap());
    grant(&m, "alice", credits(5000));
    let secret = m.create_api_key("alice", None).unwrap().secret.expose().to_string();
    let legacy = "legacy-secret-abcdefgh-0001";
    m.import_api_key("bob", Some(legacy), None, None).unwrap();
    let flip = |s: &str, i: usize| {
        let mut b = s.as_bytes().to_vec();
        b[i] = if b[i] == b'Q' { b'R' } else { b'Q' };
        String::from_utf8(b).unwrap()
    };
    let ours_first = flip(&secret, 0); // not our prefix: a legacy-shaped lookup
    let ours_body = flip(&secret, 3); // first body character: checksum
    let ours_last = flip(&secret, secret.len() - 1); // last character: checksum
    let legacy_first = flip(legacy, 0);
    let legacy_last = flip(legacy, legacy.len() - 1);
    // Differing at the first or the last character: the same answer.
    for near in [&ours_first, &ours_body, &ours_last, &legacy_first, &legacy_last] {
        assert_eq!(err_code(m.verify_api_key_credits(near, Credits::ZERO)), ErrorCode::InvalidApiKey, "{near}");
    }

    let Some(path) = db.sqlite_path().map(|p| p.to_path_buf()) else { return };
    let raw = rusqlite::Connection::open(&path).unwrap();
    // The lookup is an index search on the hash, not a scan.
    let plan: Vec<String> = raw
        .prepare("EXPLAIN QUERY PLAN SELECT id FROM creditgate_api_keys WHERE key_hash = ?1")
        .unwrap()
        .query_map([hmac_hex(&secret)], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert!(plan.iter().any(|p| p.contains("SEARCH") && p.contains("INDEX") && p.contains("key_hash=?")), "{plan:?}");
    assert!(!plan.iter().any(|p| p.starts_with("SCAN")), "{plan:?}");

    // Take the keys table away: whatever reaches storage now fails there.
    raw.execute_batch("ALTER TABLE creditgate_api_keys RENAME TO creditgate_api_keys_away").unwrap();
    let code = |s: &str| err_code(m.verify_api_key_credits(s, Credits::ZERO));
    // Our format with a bad checksum, first body character or last: no lookup at all.
    assert_eq!(code(&ours_body), ErrorCode::InvalidApiKey);
    assert_eq!(code(&ours_last), ErrorCode::InvalidApiKey);
    // Everything else costs exactly a hash lookup, however much of a real
    // key it shares: differing at the first character or the last is the same.
    assert_eq!(code(&ours_first), ErrorCode::Storage);
    assert_eq!(code(&legacy_first), ErrorCode::Storage);
    assert_eq!(code(&legacy_last), ErrorCode::Storage);
    assert_eq!(code(legacy), ErrorCode::Storage);
    raw.execute_batch("ALTER TABLE creditgate_api_keys_away RENAME TO creditgate_api_keys").unwrap();
    assert_eq!(m.verify_api_key_credits(&secret, Credits::ZERO).unwrap().user_id, "alice");
    assert_eq!(m.verify_api_key_credits(legacy, Credits::ZERO).unwrap().user_id, "bob");
}

#[test]
fn a_huge_database_path_gives_a_short_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = format!("{}/{}", dir.path().display(), "d/".repeat(512 * 1024));
    let e = creditgate::CreditManager::open(creditgate::Config::new().database_url(format!("sqlite:///{path}")))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Storage);
    assert!(e.to_string().len() < 2_048, "{} bytes", e.to_string().len());
}
