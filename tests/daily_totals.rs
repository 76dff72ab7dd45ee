//! The daily totals and their rollup (migration 013): totals equal the
//! entries summed directly, before and after the days are rolled up;
//! report() keeps its definitions; the grace keeps the recent days out;
//! concurrent rollers insert once; the range is limited; the audit finds a
//! tampered rollup.

mod common;

use common::{NO_OPTS, all_entries, credits, key_for, micros};
use creditgate::{
    Config, CreditManager, Credits, DailyTotal, EntryKind, ErrorCode, KeyRef, Report, TestClock, Timestamp, Usage,
    UsageGroup, UsageQuery,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;

fn config(clock: &TestClock) -> Config {
    Config::new().min_credits_api_key(Credits::ZERO).unwrap().test_clock(clock.clone())
}

/// The ledger's clock now (an entry's created_at is its transaction's clock).
fn ledger_now(m: &CreditManager) -> i64 {
    m.add_credits("clock-probe", micros(1), EntryKind::Grant, &NO_OPTS).unwrap().created_at.0
}

fn floor_day(t: i64) -> i64 {
    t - t.rem_euclid(DAY)
}

/// Moves the ledger's clock to `to` (forward only).
fn move_to(m: &CreditManager, clock: &TestClock, to: i64) {
    let now = ledger_now(m);
    assert!(to > now, "the clock moves forward");
    clock.advance(to - now);
}

/// A first integer of `sql` on the test database, bypassing the library.
fn query_int(url: &str, sql: &str) -> i64 {
    if let Some(path) = url.strip_prefix("sqlite:///") {
        let c = rusqlite::Connection::open(path).unwrap();
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    } else {
        let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
        c.query_one(sql, &[]).unwrap().get(0)
    }
}

fn through(url: &str) -> i64 {
    query_int(url, "SELECT through FROM creditgate_rollup WHERE id = 1")
}

/// A day's activity: payments, charges of two models (and one without),
/// a deduction, a grant and a reversal.
fn activity(m: &CreditManager, round: usize, key: &str) {
    let user = format!("user-{}", round % 3);
    m.record_payment(&user, &format!("pi_{round}"), 500 + round as i64, "usd").unwrap();
    m.record_payment("payer", &format!("pi_b{round}"), 1_000, "usd").unwrap();
    for (i, model) in ["model-a", "model-b", "model-a"].iter().enumerate() {
        let usage = Usage {
            input_tokens: 1_000 + i as i64,
            output_tokens: 200,
            model: Some(model),
            cached_input_tokens: 100,
            cache_write_tokens: 10 * i as i64,
        };
        m.record_usage(KeyRef::Secret(key), usage, None).unwrap();
    }
    m.record_usage(KeyRef::Secret(key), Usage::new(500, 50, None), None).unwrap();
    m.deduct_credits(&user, micros(1_234_567), &NO_OPTS).unwrap();
    m.add_credits(&user, credits(3), EntryKind::Grant, &NO_OPTS).unwrap();
    m.reverse_payment(&format!("pi_b{round}"), Some(250), None, None).unwrap();
}

type Key = (i64, &'static str, Option<String>, Option<String>);

/// The totals summed directly from every entry (`transactions()`).
fn from_entries(m: &CreditManager, users: &BTreeSet<String>) -> BTreeMap<Key, [i128; 7]> {
    let mut out: BTreeMap<Key, [i128; 7]> = BTreeMap::new();
    for u in users {
        for e in all_entries(m, u) {
            let key = (floor_day(e.created_at.0), e.kind.as_str(), e.model.clone(), e.currency.clone());
            let s = out.entry(key).or_default();
            let add = [
                1,
                e.amount.micros(),
                e.amount_minor.unwrap_or(0),
                e.input_tokens.unwrap_or(0),
                e.output_tokens.unwrap_or(0),
                e.cached_input_tokens.unwrap_or(0),
                e.cache_write_tokens.unwrap_or(0),
            ];
            for (s, a) in s.iter_mut().zip(add) {
                *s += i128::from(a);
            }
        }
    }
    out
}

fn as_map(rows: &[DailyTotal]) -> BTreeMap<Key, [i128; 7]> {
    rows.iter()
        .map(|t| {
            let key = (t.day.0, t.kind.as_str(), t.model.clone(), t.currency.clone());
            let sums = [
                i128::from(t.entries),
                i128::from(t.amount.micros()),
                i128::from(t.amount_minor),
                i128::from(t.input_tokens),
                i128::from(t.output_tokens),
                i128::from(t.cached_input_tokens),
                i128::from(t.cache_write_tokens),
            ];
            (key, sums)
        })
        .collect()
}

fn users(m: &CreditManager) -> BTreeSet<String> {
    let mut all: BTreeSet<String> = (0..3).map(|i| format!("user-{i}")).collect();
    all.extend(["payer", "clock-probe", "key-owner"].map(String::from));
    let _ = m;
    all
}

/// Totals over every day so far equal the entries, in the documented order.
fn assert_totals_match(m: &CreditManager, first_day: i64) {
    let now = ledger_now(m);
    let rows = m.daily_totals(Timestamp(first_day), Timestamp(now + 1)).unwrap();
    let keys: Vec<(i64, &str, Option<&str>, Option<&str>)> =
        rows.iter().map(|t| (t.day.0, t.kind.as_str(), t.model.as_deref(), t.currency.as_deref())).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "rows are ordered by day, kind, model, currency");
    assert_eq!(as_map(&rows), from_entries(m, &users(m)));
}

/// The report's flows by their old definition, summed from every entry.
fn report_from_entries(m: &CreditManager) -> (Credits, Credits, BTreeMap<String, i64>, Credits) {
    let (mut purchased, mut used, mut issued) = (0i64, 0i64, 0i64);
    let mut revenue: BTreeMap<String, i64> = BTreeMap::new();
    for u in users(m) {
        for e in all_entries(m, &u) {
            let currency = e.currency.clone().unwrap_or_else(|| "USD".into());
            let minor = e.amount_minor.unwrap_or(0);
            match e.kind {
                EntryKind::Purchase => {
                    purchased += e.amount.micros();
                    *revenue.entry(currency).or_insert(0) += minor;
                }
                EntryKind::Reinstatement => *revenue.entry(currency).or_insert(0) += minor,
                EntryKind::Reversal => *revenue.entry(currency).or_insert(0) -= minor,
                EntryKind::Usage | EntryKind::Deduct => used -= e.amount.micros(),
                EntryKind::Allowance => issued += e.amount.micros(),
                _ => {}
            }
        }
    }
    (micros(purchased), micros(used), revenue, micros(issued))
}

fn flows(r: &Report) -> (Credits, Credits, BTreeMap<String, i64>, Credits) {
    (r.credits_purchased, r.credits_used, r.revenue_minor_by_currency.clone(), r.allowance_issued)
}

/// A ledger with activity on four consecutive days, the clock at 02:00 of
/// the next one; returns the first day's midnight and the key's secret.
fn four_days(m: &CreditManager, clock: &TestClock) -> (i64, String) {
    m.set_model_price("model-a", credits(1), credits(2)).unwrap();
    m.set_model_price("model-b", micros(1_500_000), credits(3)).unwrap();
    m.add_credits("key-owner", credits(1_000_000), EntryKind::Grant, &NO_OPTS).unwrap();
    let (key, _) = key_for(m, "key-owner");
    let first_day = floor_day(ledger_now(m)) + DAY;
    for day in 0..4 {
        move_to(m, clock, first_day + day * DAY + 10 * HOUR);
        activity(m, day as usize, &key);
    }
    (first_day, key)
}

#[test]
fn totals_equal_the_entries_before_and_after_the_rollup() {
    let clock = TestClock::new();
    let (url, _db) = common::shared_url();
    let m = common::open(&url, config(&clock));
    let (first_day, key) = four_days(&m, &clock);
    // Day 3 is today: days before it are rolled up, it is read from the entries.
    assert_totals_match(&m, first_day - DAY);
    assert_eq!(through(&url), first_day + 3 * DAY);
    let rolled = query_int(&url, "SELECT COUNT(*) FROM creditgate_daily_totals");
    assert!(rolled > 10, "{rolled} rolled rows");
    assert_eq!(flows(&m.report().unwrap()), report_from_entries(&m));
    // Two more days: everything written so far is rolled up.
    move_to(&m, &clock, first_day + 5 * DAY + 2 * HOUR);
    activity(&m, 9, &key);
    assert_totals_match(&m, first_day - DAY);
    assert_eq!(through(&url), first_day + 5 * DAY);
    assert_eq!(flows(&m.report().unwrap()), report_from_entries(&m));
    // A range inside the rolled days returns those days only.
    let one = m.daily_totals(Timestamp(first_day + DAY + HOUR), Timestamp(first_day + DAY + 2 * HOUR)).unwrap();
    assert!(!one.is_empty() && one.iter().all(|t| t.day.0 == first_day + DAY));
    let usage_a: Vec<&DailyTotal> =
        one.iter().filter(|t| t.kind == EntryKind::Usage && t.model.as_deref() == Some("model-a")).collect();
    assert_eq!(usage_a.len(), 1);
    assert_eq!((usage_a[0].entries, usage_a[0].input_tokens, usage_a[0].cache_write_tokens), (2, 2_002, 20));
    common::assert_audit_ok(&m);
}

#[test]
fn report_is_the_same_before_and_after_the_rollup() {
    let clock = TestClock::new();
    let (url, _db) = common::shared_url();
    let m = common::open(&url, config(&clock));
    // Everything happens today, at 02:00 and later: nothing is rolled up yet.
    m.set_model_price("model-a", credits(1), credits(2)).unwrap();
    m.set_model_price("model-b", credits(2), credits(3)).unwrap();
    let today = floor_day(ledger_now(&m)) + DAY;
    move_to(&m, &clock, today + 2 * HOUR);
    m.add_credits("key-owner", credits(1_000_000), EntryKind::Grant, &NO_OPTS).unwrap();
    let (key, _) = key_for(&m, "key-owner");
    for round in 0..3 {
        activity(&m, round, &key);
    }
    let before = m.report().unwrap();
    let sql = format!("SELECT COUNT(*) FROM creditgate_daily_totals WHERE day >= {today}");
    assert_eq!(query_int(&url, &sql), 0, "today is not rolled up");
    assert_eq!(flows(&before), report_from_entries(&m));
    assert!(before.credits_used > Credits::ZERO && before.revenue_minor_by_currency["USD"] > 0);
    move_to(&m, &clock, today + 3 * DAY);
    let after = m.report().unwrap();
    assert!(query_int(&url, &sql) > 0, "rolled up");
    // The move's clock probe granted 1 µ (not a flow of the report).
    let probe = micros(1);
    assert_eq!(after, Report { outstanding_balance: before.outstanding_balance.checked_add(probe).unwrap(), ..before });
}

#[test]
fn the_grace_keeps_a_just_ended_day_open() {
    let clock = TestClock::new();
    let (url, _db) = common::shared_url();
    let m = common::open(&url, config(&clock));
    let day = floor_day(ledger_now(&m)) + DAY;
    move_to(&m, &clock, day + 23 * HOUR);
    m.record_payment("u", "pi_late", 700, "usd").unwrap();
    // Half an hour after the day ended: it is not closed yet.
    move_to(&m, &clock, day + DAY + HOUR / 2);
    let rows = m.daily_totals(Timestamp(day), Timestamp(day + 2 * DAY)).unwrap();
    assert!(rows.iter().any(|t| t.day.0 == day && t.kind == EntryKind::Purchase && t.amount_minor == 700));
    assert_eq!(through(&url), day);
    let sql = format!("SELECT COUNT(*) FROM creditgate_daily_totals WHERE day = {day}");
    assert_eq!(query_int(&url, &sql), 0, "an open day is read from the entries");
    // An hour and a half after: closed and rolled up, same totals.
    move_to(&m, &clock, day + DAY + 3 * HOUR / 2);
    let again = m.daily_totals(Timestamp(day), Timestamp(day + 2 * DAY)).unwrap();
    assert_eq!(through(&url), day + DAY);
    assert!(query_int(&url, &sql) > 0);
    let purchases = |r: &[DailyTotal]| r.iter().filter(|t| t.day.0 == day).cloned().collect::<Vec<_>>();
    assert_eq!(purchases(&again), purchases(&rows));
}

#[test]
fn concurrent_rollers_insert_once() {
    let clock = TestClock::new();
    let (url, _db) = common::shared_url();
    let m = common::open(&url, config(&clock));
    let (first_day, key) = four_days(&m, &clock);
    let managers: Vec<CreditManager> = (0..3).map(|_| common::open(&url, config(&clock))).collect();
    for round in 0..4 {
        move_to(&m, &clock, first_day + (5 + round) * DAY + 2 * HOUR);
        activity(&m, 10 + round as usize, &key);
        let start = Arc::new(Barrier::new(managers.len()));
        let threads: Vec<_> = managers
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, other)| {
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    if i % 2 == 0 {
                        other.report().map(|_| ())
                    } else {
                        other.daily_totals(Timestamp(0), Timestamp(1)).map(|_| ())
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        assert_eq!(through(&url), first_day + (5 + round) * DAY);
    }
    assert_totals_match(&m, first_day - DAY);
    common::assert_audit_ok(&m);
}

#[test]
fn the_range_is_limited() {
    let (m, _db) = common::manager();
    let t = Timestamp(1_767_225_600_000_000); // 2026-01-01T00:00:00Z
    let err = |since: i64, until: i64| common::err_code(m.daily_totals(Timestamp(since), Timestamp(until)));
    assert_eq!(err(t.0, t.0), ErrorCode::InvalidArgument);
    assert_eq!(err(t.0 + 1, t.0), ErrorCode::InvalidArgument);
    // 400 whole days, or 399 and two partial ones, are allowed; one more is not.
    assert!(m.daily_totals(t, Timestamp(t.0 + 400 * DAY)).unwrap().is_empty());
    assert!(m.daily_totals(Timestamp(t.0 + HOUR), Timestamp(t.0 + 399 * DAY + 1)).unwrap().is_empty());
    assert_eq!(err(t.0, t.0 + 400 * DAY + 1), ErrorCode::InvalidArgument);
    assert_eq!(err(t.0 - 1, t.0 + 400 * DAY), ErrorCode::InvalidArgument);
    assert_eq!(err(i64::MIN, i64::MAX), ErrorCode::InvalidArgument);
}

#[test]
fn the_audit_finds_a_tampered_rollup() {
    let clock = TestClock::new();
    let (url, _db) = common::shared_url();
    let m = common::open(&url, config(&clock));
    let (first_day, _) = four_days(&m, &clock);
    m.report().unwrap();
    common::assert_audit_ok(&m);
    assert!(through(&url) > first_day);
    let problems = |m: &CreditManager| -> Vec<String> {
        let a = m.audit().unwrap();
        assert!(!a.ok);
        a.mismatches.iter().map(|p| format!("{}|{}|{}", p.user_id, p.problem, p.detail)).collect()
    };
    // A changed sum.
    common::raw_sql(
        &url,
        &format!(
            "UPDATE creditgate_daily_totals SET amount_lo = amount_lo + 1 WHERE day = {first_day} AND kind = 'deduct'"
        ),
    );
    let found = problems(&m);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("|rollup|") && found[0].contains("kind deduct"), "{found:?}");
    // A lost row (a lost entry reads the same way), and a row of no entry.
    common::raw_sql(
        &url,
        &format!("DELETE FROM creditgate_daily_totals WHERE day = {} AND kind = 'usage'", first_day + DAY),
    );
    common::raw_sql(
        &url,
        &format!(
            "INSERT INTO creditgate_daily_totals VALUES ({}, 'refund', '', '', 1, 0, 5, 0, 0, 0, 0, 0, 0)",
            first_day + 2 * DAY
        ),
    );
    let found = problems(&m);
    assert_eq!(found.iter().filter(|p| p.contains("kind usage")).count(), 3, "{found:?}");
    assert!(found.iter().any(|p| p.contains("kind refund") && p.contains("the entries make 0 entries")), "{found:?}");
}

#[test]
fn ledger_wide_usage_summaries_read_the_totals_and_equal_the_entries() {
    let clock = TestClock::new();
    let (url, _db) = common::shared_url();
    let m = common::open(&url, config(&clock));
    let (first_day, _) = four_days(&m, &clock);
    assert_eq!(through(&url), 0, "nothing read the totals yet");
    // Only key-owner's key charges: its own summary (read from the entries)
    // is the ledger's (read from the rollup and the live tail).
    let bounds = (Some(Timestamp(first_day - DAY)), Some(Timestamp(first_day + 5 * DAY)));
    let day_model = vec![UsageGroup::Day, UsageGroup::Model];
    let model_day = vec![UsageGroup::Model, UsageGroup::Day];
    for group_by in [vec![], vec![UsageGroup::Day], vec![UsageGroup::Model], day_model, model_day] {
        for model in [None, Some("model-a".to_string()), Some("no-such-model".to_string())] {
            for (since, until) in [bounds, (None, None)] {
                let wide = UsageQuery {
                    user_id: None,
                    api_key_id: None,
                    model: model.clone(),
                    since,
                    until,
                    group_by: group_by.clone(),
                };
                let one = UsageQuery { user_id: Some("key-owner".into()), ..wide.clone() };
                let rows = m.usage_summary(&wide).unwrap();
                assert_eq!(rows, m.usage_summary(&one).unwrap(), "{wide:?}");
                assert!(through(&url) == first_day + 3 * DAY, "the ledger-wide summary rolled the closed days up");
            }
        }
    }
    let by_model = UsageQuery { group_by: vec![UsageGroup::Model], ..UsageQuery::default() };
    let rows = m.usage_summary(&by_model).unwrap();
    assert_eq!(rows.iter().map(|r| r.model.as_deref()).collect::<Vec<_>>(), [Some("model-a"), Some("model-b"), None]);
    assert_eq!(rows.iter().map(|r| r.requests).sum::<u64>(), 16, "4 days x 4 charges");
}

#[test]
fn a_day_past_the_64_bit_range_is_rolled_up_exactly() {
    let clock = TestClock::new();
    let (url, _db) = common::shared_url();
    let m = common::open(&url, config(&clock));
    let day = floor_day(ledger_now(&m)) + DAY;
    move_to(&m, &clock, day + HOUR);
    // Ten grants of the largest amount: 10^19 micro-credits in one group, past i64.
    for i in 0..10 {
        m.add_credits(&format!("whale-{i}"), credits(1_000_000_000_000), EntryKind::Grant, &NO_OPTS).unwrap();
    }
    move_to(&m, &clock, day + 2 * DAY + 2 * HOUR);
    let flows = m.daily_flows(Timestamp(day), Timestamp(day + DAY)).unwrap();
    assert_eq!(through(&url), day + 2 * DAY, "the day was rolled up");
    assert!(flows.len() == 1 && flows[0].entries >= 10, "{flows:?}");
    assert_eq!((flows[0].purchased, flows[0].used), (Credits::ZERO, Credits::ZERO));
    // The stored halves are the exact sum: the audit recounts the entries.
    common::assert_audit_ok(&m);
}

#[test]
fn a_reader_that_cannot_roll_up_still_reads_the_same_figures() {
    let clock = TestClock::new();
    let (url, _db) = common::shared_url();
    let m = common::open(&url, config(&clock).busy_timeout_ms(200).unwrap());
    let (first_day, _) = four_days(&m, &clock);
    let expected = report_from_entries(&m);
    // Another connection holds the rollup's state row (SQLite: the write
    // lock) for the whole call: the rollup's write times out, the read goes on.
    let hold = |check: &dyn Fn()| {
        if let Some(path) = url.strip_prefix("sqlite:///") {
            let c = rusqlite::Connection::open(path).unwrap();
            c.execute_batch("BEGIN IMMEDIATE").unwrap();
            check();
            c.execute_batch("ROLLBACK").unwrap();
        } else {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let mut tx = c.transaction().unwrap();
            tx.execute("SELECT through FROM creditgate_rollup WHERE id = 1 FOR UPDATE", &[]).unwrap();
            check();
            tx.rollback().unwrap();
        }
    };
    hold(&|| {
        assert_eq!(flows(&m.report().unwrap()), expected);
        let flows = m.daily_flows(Timestamp(first_day), Timestamp(first_day + 4 * DAY)).unwrap();
        assert_eq!(flows.len(), 4);
    });
    assert_eq!(through(&url), 0, "nothing was rolled up while the lock was held");
    assert_eq!(flows(&m.report().unwrap()), expected);
    assert_eq!(through(&url), first_day + 3 * DAY, "the next reader rolled up");
}
