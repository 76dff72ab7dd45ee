//! Usage summaries and statements: on randomized ledgers every rollup equals
//! the sum over the entries it groups, and every statement reconciles
//! (opening + lines = closing, each edge the sum of the entries before it);
//! the JSON and CSV forms; bad input. On SQLite and, with
//! `CREDITGATE_TEST_BACKEND=postgres`, on PostgreSQL.

mod common;

use common::{all_entries, credits, err_code, micros};
use creditgate::{
    CreditManager, Credits, Entry, EntryKind, ErrorCode, HoldAmount, KeyId, KeyRef, ModelPrice, Settlement, Statement,
    Timestamp, Usage, UsageGroup, UsageQuery, UsageRow,
};
use proptest::prelude::*;
use std::collections::BTreeMap;

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;
const MODELS: [&str; 3] = ["small", "big", "=formula"];
const USERS: [&str; 3] = ["a", "b", "org"];

#[derive(Clone, Debug)]
enum Op {
    Buy { user: usize, credits: i64 },
    Charge { key: usize, model: usize, input: i64, output: i64, cached: i64, write: i64 },
    HoldAndSettle { key: usize, model: usize, input: i64, output: i64 },
    Adjust { user: usize, micros: i64 },
    Reprice { model: usize, input: i64, cached: Option<i64>, fee: i64 },
    Wait { hours: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..3usize, 1..50i64).prop_map(|(user, credits)| Op::Buy { user, credits }),
        4 => (0..4usize, 0..3usize, 0..5_000i64, 0..2_000i64, 0..100u8, 0..100u8).prop_map(
            |(key, model, input, output, c, w)| {
                let cached = input * i64::from(c) / 100;
                let write = (input - cached) * i64::from(w) / 100;
                Op::Charge { key, model, input, output, cached, write }
            }
        ),
        1 => (0..4usize, 0..3usize, 0..3_000i64, 0..1_000i64)
            .prop_map(|(key, model, input, output)| Op::HoldAndSettle { key, model, input, output }),
        1 => (0..3usize, -5_000_000..5_000_000i64)
            .prop_filter("non-zero", |(_, m)| *m != 0)
            .prop_map(|(user, micros)| Op::Adjust { user, micros }),
        1 => (0..3usize, 0..3_000_000i64, proptest::option::of(0..1_000_000i64), 0..50i64)
            .prop_map(|(model, input, cached, fee)| Op::Reprice { model, input, cached, fee }),
        2 => (1..40i64).prop_map(|hours| Op::Wait { hours }),
    ]
}

/// Four keys: two of "a", one of "b", one of member "m" of "org" in project "p".
struct Ledger {
    m: CreditManager,
    clock: creditgate::TestClock,
    keys: Vec<(String, KeyId)>,
    _db: common::Guard,
}

fn ledger() -> Ledger {
    let (m, clock, db) = common::clocked_manager();
    m.add_member("org", "m").unwrap();
    m.create_project("org", "p").unwrap();
    // Later keys need a credit on the paying account.
    for user in USERS {
        m.add_credits(user, credits(10), EntryKind::Grant, &common::NO_OPTS).unwrap();
    }
    let mut keys = Vec::new();
    for user in ["a", "a", "b", "m"] {
        let k = m.create_api_key(user, None).unwrap();
        keys.push((k.secret.expose().to_string(), k.key_id));
    }
    m.set_key_project(keys[3].1, Some("p")).unwrap();
    Ledger { m, clock, keys, _db: db }
}

impl Ledger {
    fn run(&self, op: &Op) {
        let m = &self.m;
        match *op {
            Op::Buy { user, credits: c } => {
                m.add_credits(USERS[user], credits(c), EntryKind::Purchase, &common::NO_OPTS).unwrap();
            }
            Op::Charge { key, model, input, output, cached, write } => {
                let u = Usage {
                    input_tokens: input,
                    output_tokens: output,
                    model: Some(MODELS[model]),
                    cached_input_tokens: cached,
                    cache_write_tokens: write,
                };
                m.record_usage(KeyRef::Secret(&self.keys[key].0), u, None).unwrap();
            }
            Op::HoldAndSettle { key, model, input, output } => {
                let u = Usage::new(input, output, Some(MODELS[model]));
                // Refused when the account cannot cover the hold: nothing to settle.
                if let Ok(h) = m.reserve(&self.keys[key].0, HoldAmount::Usage(u), 60, None) {
                    m.settle(h.hold_id, Settlement::Tokens(Usage::new(input / 2, output / 2, None))).unwrap();
                }
            }
            Op::Adjust { user, micros: a } => {
                // A debit past the available credits is refused (strict).
                let r = m.add_credits(USERS[user], micros(a), EntryKind::Adjustment, &common::NO_OPTS);
                assert!(r.is_ok() || r.unwrap_err().code() == ErrorCode::InsufficientCredits);
            }
            Op::Reprice { model, input, cached, fee } => {
                let p = ModelPrice {
                    input_per_1k: micros(input),
                    output_per_1k: micros(input * 3),
                    cached_input_per_1k: cached.map(micros),
                    cache_write_per_1k: None,
                    request_fee: micros(fee),
                };
                m.set_model_pricing(MODELS[model], p, None).unwrap();
            }
            Op::Wait { hours } => self.clock.advance(hours * HOUR),
        }
    }

    fn entries(&self) -> Vec<Entry> {
        USERS.iter().flat_map(|u| all_entries(&self.m, u)).collect()
    }
}

/// The summary `q` asks for, summed here over the entries.
fn expected(entries: &[Entry], q: &UsageQuery) -> Vec<UsageRow> {
    type Key = (Option<i64>, Option<String>, Option<KeyId>, Option<String>, Option<String>);
    let mut groups: BTreeMap<Key, UsageRow> = BTreeMap::new();
    let has = |g| q.group_by.contains(&g);
    for e in entries.iter().filter(|e| e.kind == EntryKind::Usage) {
        let t = e.created_at.0;
        if q.user_id.as_ref().is_some_and(|u| *u != e.user_id)
            || q.api_key_id.is_some_and(|k| Some(k) != e.api_key_id)
            || q.model.as_ref().is_some_and(|m| Some(m) != e.model.as_ref())
            || q.since.is_some_and(|s| t < s.0)
            || q.until.is_some_and(|u| t >= u.0)
        {
            continue;
        }
        let key: Key = (
            has(UsageGroup::Day).then_some(t.div_euclid(DAY) * DAY),
            if has(UsageGroup::Model) { e.model.clone() } else { None },
            if has(UsageGroup::Key) { e.api_key_id } else { None },
            if has(UsageGroup::Member) { e.member_id.clone() } else { None },
            if has(UsageGroup::Project) { e.project.clone() } else { None },
        );
        let row = groups.entry(key.clone()).or_insert(UsageRow {
            day: key.0.map(Timestamp),
            model: key.1.clone(),
            api_key_id: key.2,
            member_id: key.3.clone(),
            project: key.4.clone(),
            requests: 0,
            input_tokens: 0,
            output_tokens: 0,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            credits: Credits::ZERO,
        });
        row.requests += 1;
        row.input_tokens += e.input_tokens.unwrap_or(0);
        row.output_tokens += e.output_tokens.unwrap_or(0);
        row.cached_input_tokens += e.cached_input_tokens.unwrap_or(0);
        row.cache_write_tokens += e.cache_write_tokens.unwrap_or(0);
        row.credits = row.credits.checked_sub(e.amount).unwrap();
    }
    if q.group_by.is_empty() && groups.is_empty() {
        groups.insert((None, None, None, None, None), totals_row(0, Credits::ZERO));
    }
    groups.into_values().collect()
}

fn totals_row(requests: u64, credits: Credits) -> UsageRow {
    UsageRow {
        day: None,
        model: None,
        api_key_id: None,
        member_id: None,
        project: None,
        requests,
        input_tokens: 0,
        output_tokens: 0,
        cached_input_tokens: 0,
        cache_write_tokens: 0,
        credits,
    }
}

/// Rows compared without their order (the database orders NULL groups by
/// its own rule).
fn sorted(mut rows: Vec<UsageRow>) -> Vec<UsageRow> {
    rows.sort_by_key(|r| format!("{r:?}"));
    rows
}

/// The balance from the entries created before `t`.
fn balance_before(entries: &[Entry], user: &str, t: Timestamp) -> Credits {
    let sum: i64 = entries.iter().filter(|e| e.user_id == user && e.created_at < t).map(|e| e.amount.micros()).sum();
    micros(sum)
}

fn check_statement(entries: &[Entry], s: &Statement) {
    assert_eq!(s.opening_balance.checked_add(s.movements().unwrap()).unwrap(), s.closing_balance);
    assert_eq!(s.opening_balance, balance_before(entries, &s.user_id, s.since));
    assert_eq!(s.closing_balance, balance_before(entries, &s.user_id, s.until));
    let inside: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.user_id == s.user_id && e.created_at >= s.since && e.created_at < s.until)
        .collect();
    assert_eq!(s.lines.iter().map(|l| l.entries).sum::<u64>(), inside.len() as u64);
    for l in &s.lines {
        let of_line: Vec<&&Entry> = inside
            .iter()
            .filter(|e| e.kind == l.kind && (l.kind != EntryKind::Usage || (e.model == l.model && e.price == l.price)))
            .collect();
        assert_eq!(l.entries, of_line.len() as u64, "{l:?}");
        assert_eq!(l.amount.micros(), of_line.iter().map(|e| e.amount.micros()).sum::<i64>(), "{l:?}");
        let cached: i64 = of_line.iter().map(|e| e.cached_input_tokens.unwrap_or(0)).sum();
        assert_eq!(l.cached_input_tokens, cached);
    }
}

fn query() -> impl Strategy<Value = (Option<usize>, Option<usize>, Option<usize>, u8, i64, i64)> {
    (
        proptest::option::of(0..3usize),
        proptest::option::of(0..4usize),
        proptest::option::of(0..3usize),
        0..32u8,
        -2i64..400,
        -2i64..400,
    )
}

proptest! {
    #![proptest_config(common::proptest_config(24))]

    #[test]
    fn rollups_are_sums_over_entries_and_statements_reconcile(
        ops in proptest::collection::vec(op(), 1..60),
        queries in proptest::collection::vec(query(), 6),
    ) {
        let l = ledger();
        for o in &ops {
            l.run(o);
        }
        let entries = l.entries();
        let origin = entries.iter().map(|e| e.created_at.0).min().unwrap_or(0);
        for (user, key, model, groups, since_h, until_h) in queries {
            let (a, b) = (origin + since_h.min(until_h) * HOUR, origin + since_h.max(until_h) * HOUR);
            let q = UsageQuery {
                user_id: user.map(|u| USERS[u].to_string()),
                api_key_id: key.map(|k| l.keys[k].1),
                model: model.map(|m| MODELS[m].to_string()),
                since: (since_h >= 0).then_some(Timestamp(a)),
                until: (until_h >= 0).then_some(Timestamp(b)),
                group_by: UsageGroup::ALL.into_iter().enumerate().filter(|(i, _)| groups & (1 << i) != 0).map(|(_, g)| g).collect(),
            };
            prop_assert_eq!(sorted(l.m.usage_summary(&q).unwrap()), sorted(expected(&entries, &q)), "{:?}", q);
            for u in USERS {
                check_statement(&entries, &l.m.statement(u, Timestamp(a), Timestamp(b)).unwrap());
            }
        }
        // The whole history in one statement ends at each account's balance.
        for u in USERS {
            let s = l.m.statement(u, Timestamp(0), Timestamp(i64::MAX)).unwrap();
            prop_assert_eq!(s.opening_balance, Credits::ZERO);
            prop_assert_eq!(s.closing_balance, l.m.get_balance(u).unwrap());
            check_statement(&entries, &s);
        }
    }
}

#[test]
fn a_summary_groups_by_day_model_key_member_and_project() {
    let l = ledger();
    let m = &l.m;
    m.add_credits("a", credits(100), EntryKind::Purchase, &common::NO_OPTS).unwrap();
    m.add_credits("org", credits(100), EntryKind::Purchase, &common::NO_OPTS).unwrap();
    m.set_model_price("big", credits(2), credits(4)).unwrap();
    let charge = |key: usize, model: &str, input: i64, cached: i64| {
        let u = Usage {
            input_tokens: input,
            output_tokens: 0,
            model: Some(model),
            cached_input_tokens: cached,
            cache_write_tokens: 0,
        };
        m.record_usage(KeyRef::Secret(&l.keys[key].0), u, None).unwrap();
    };
    charge(0, "small", 1_000, 0);
    charge(1, "big", 1_000, 500);
    l.clock.advance(DAY);
    charge(0, "big", 2_000, 0);
    charge(3, "small", 3_000, 1_000);
    let by = |group_by: Vec<UsageGroup>| m.usage_summary(&UsageQuery { group_by, ..UsageQuery::default() }).unwrap();
    let totals = by(vec![]);
    assert_eq!(totals.len(), 1);
    assert_eq!((totals[0].requests, totals[0].input_tokens, totals[0].cached_input_tokens), (4, 7_000, 1_500));
    assert_eq!(totals[0].credits, credits(1 + 2 + 4 + 3));
    let days = by(vec![UsageGroup::Day]);
    assert_eq!(days.len(), 2);
    assert!(days[0].day < days[1].day);
    assert_eq!(days[0].day.unwrap().0 % DAY, 0, "a day starts at UTC midnight");
    assert_eq!((days[0].credits, days[1].credits), (credits(3), credits(7)));
    let models = by(vec![UsageGroup::Model]);
    assert_eq!(
        models.iter().map(|r| (r.model.as_deref(), r.requests)).collect::<Vec<_>>(),
        [(Some("big"), 2), (Some("small"), 2)]
    );
    let members = by(vec![UsageGroup::Member, UsageGroup::Project]);
    let member_row = members.iter().find(|r| r.member_id.is_some()).unwrap();
    assert_eq!((member_row.member_id.as_deref(), member_row.project.as_deref()), (Some("m"), Some("p")));
    assert_eq!(member_row.credits, credits(3));
    let key0 = m.usage_summary(&UsageQuery { api_key_id: Some(l.keys[0].1), ..UsageQuery::default() }).unwrap();
    assert_eq!(key0[0].credits, credits(5));
    let org = m
        .usage_summary(&UsageQuery {
            user_id: Some("org".into()),
            group_by: vec![UsageGroup::Key],
            ..UsageQuery::default()
        })
        .unwrap();
    assert_eq!(org.len(), 1);
    assert_eq!(org[0].api_key_id, Some(l.keys[3].1), "a member's usage is its organisation's");
    // Usage outside the organisation has no member: null in JSON, last in order.
    assert_eq!(members.last().unwrap().member_id, None);
    assert_eq!(members[0].member_id.as_deref(), Some("m"));
    let json: serde_json::Value =
        serde_json::from_str(&creditgate::usage_rows_json(&[UsageGroup::Member, UsageGroup::Project], &members))
            .unwrap();
    let last = &json[members.len() - 1];
    assert_eq!((&last["member"], &last["project"]), (&serde_json::Value::Null, &serde_json::Value::Null));
    assert_eq!(json[0]["member"], "m");
    // Nothing matched: one row of zeros without groups, no rows with them.
    let none = UsageQuery { model: Some("none".into()), ..UsageQuery::default() };
    assert_eq!(m.usage_summary(&none).unwrap(), vec![totals_row(0, Credits::ZERO)]);
    assert!(m.usage_summary(&UsageQuery { group_by: vec![UsageGroup::Day], ..none }).unwrap().is_empty());
}

#[test]
fn a_statement_has_json_and_csv_forms() {
    let l = ledger();
    let m = &l.m;
    m.add_credits("a", credits(10), EntryKind::Purchase, &common::NO_OPTS).unwrap();
    l.clock.advance(HOUR);
    let start = Timestamp(l.m.transactions("a", 1, None).unwrap()[0].created_at.0 + 1);
    m.add_credits("a", credits(5), EntryKind::Grant, &common::NO_OPTS).unwrap();
    m.record_usage(KeyRef::Secret(&l.keys[0].0), Usage::new(2_000, 1_000, Some("=formula")), None).unwrap();
    let end = Timestamp(start.0 + 10 * DAY);
    let s = m.statement("a", start, end).unwrap();
    assert_eq!((s.opening_balance, s.closing_balance), (credits(20), credits(22)));
    assert_eq!(s.lines.iter().map(|l| l.kind).collect::<Vec<_>>(), [EntryKind::Grant, EntryKind::Usage]);
    let json: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
    assert_eq!(json["opening_balance_micros"], 20_000_000);
    assert_eq!(json["closing_balance_micros"], 22_000_000);
    assert_eq!(json["lines"][1]["model"], "=formula");
    assert_eq!(json["lines"][1]["price"]["input_per_1k_micros"], 1_000_000);
    assert_eq!(json["lines"][1]["amount_micros"], -3_000_000);
    let csv = s.to_csv();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 5, "{csv}");
    assert!(rows[0].starts_with("kind,model,"));
    assert!(rows[1].starts_with("opening,") && rows[1].ends_with(",20"), "{csv}");
    assert!(rows[3].starts_with("usage,'=formula,1,1,,,0,1,2000,1000,0,0,-3"), "{csv}");
    assert!(rows[4].starts_with("closing,") && rows[4].ends_with(",22"), "{csv}");
    let empty = m.statement("nobody", start, end).unwrap();
    assert_eq!((empty.opening_balance, empty.closing_balance, empty.lines.len()), (Credits::ZERO, Credits::ZERO, 0));
}

#[test]
fn bad_queries_are_refused_with_their_reason() {
    let l = ledger();
    let m = &l.m;
    let inverted = UsageQuery { since: Some(Timestamp(10)), until: Some(Timestamp(5)), ..UsageQuery::default() };
    assert_eq!(err_code(m.usage_summary(&inverted)), ErrorCode::InvalidArgument);
    let twice = UsageQuery { group_by: vec![UsageGroup::Model, UsageGroup::Model], ..UsageQuery::default() };
    assert_eq!(err_code(m.usage_summary(&twice)), ErrorCode::InvalidArgument);
    for bad in ["", &"x".repeat(300)] {
        let q = UsageQuery { user_id: Some(bad.to_string()), ..UsageQuery::default() };
        assert_eq!(err_code(m.usage_summary(&q)), ErrorCode::InvalidArgument);
        let q = UsageQuery { model: Some(bad.to_string()), ..UsageQuery::default() };
        assert_eq!(err_code(m.usage_summary(&q)), ErrorCode::InvalidArgument);
        assert_eq!(err_code(m.statement(bad, Timestamp(0), Timestamp(1))), ErrorCode::InvalidArgument);
    }
    let e = UsageGroup::parse("week").unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.to_string().contains("day, model, key, member, project"));
    assert_eq!(err_code(m.statement("a", Timestamp(2), Timestamp(1))), ErrorCode::InvalidArgument);
    // An empty range is a statement of no movements.
    let s = m.statement("a", Timestamp(5), Timestamp(5)).unwrap();
    assert!(s.lines.is_empty());
}
