//! Grants (lots): draw-down order, debt repayment, lazy and swept expiry on
//! an injected clock, grant-aware reversals, the migration of existing
//! ledgers, the audit's grant invariant, and concurrency (threads and
//! processes) on both backends.

mod common;

use common::{NO_OPTS, assert_audit_ok, credits, err_code, key_for, micros, tokens};
use creditgate::{
    Config, CreditManager, Credits, EntryKind, ErrorCode, EventKind, Grant, GrantCategory, GrantOptions, KeyRef,
    TestClock, Timestamp,
};
use std::thread;

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;

fn clocked() -> (CreditManager, TestClock, common::Guard) {
    let clock = TestClock::new();
    let (m, g) =
        common::manager_with(Config::new().min_credits_api_key(Credits::ZERO).unwrap().test_clock(clock.clone()));
    (m, clock, g)
}

/// The ledger's clock now (the server's on PostgreSQL, shifted by the test clock).
fn ledger_now(m: &CreditManager, clock: &TestClock) -> Timestamp {
    // An entry's created_at is the transaction's clock; a throw-away user.
    let e = m.add_credits("clock-probe", micros(1), EntryKind::Grant, &NO_OPTS).unwrap();
    let _ = clock;
    e.created_at
}

/// The `grant.expired` events, once `want` of them show: on PostgreSQL an
/// event is readable only when every older transaction on the server has
/// finished (tests on other databases run alongside), so this polls.
fn expired_events(m: &CreditManager, want: usize) -> Vec<creditgate::Event> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let got: Vec<_> =
            m.events(0, 1000).unwrap().into_iter().filter(|e| e.kind == EventKind::GrantExpired).collect();
        if got.len() >= want || std::time::Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// How many expiry entries `all` has, asserting that each names a distinct
/// grant: none expired twice.
#[track_caller]
fn expiry_entries_of_distinct_grants(all: &[creditgate::Entry]) -> usize {
    let mut ids: Vec<_> = all
        .iter()
        .filter(|e| e.kind == EntryKind::Expiry)
        .map(|e| e.metadata.as_ref().unwrap()["grant_id"].as_i64().unwrap())
        .collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "no grant expired twice");
    n
}

fn opts(category: Option<GrantCategory>, priority: i32, expires_at: Option<Timestamp>) -> GrantOptions {
    GrantOptions { expires_at, category, priority }
}

fn add(m: &CreditManager, user: &str, c: i64, kind: EntryKind, o: GrantOptions) -> creditgate::Entry {
    m.add_credits_with(user, credits(c), kind, &NO_OPTS, &o).unwrap()
}

/// (source entry id, remaining) of the live grants, in draw-down order.
fn lots(m: &CreditManager, user: &str) -> Vec<Grant> {
    m.account(user).unwrap().grants
}

fn remaining(m: &CreditManager, user: &str) -> Vec<i64> {
    lots(m, user).iter().map(|g| g.remaining.micros() / 1_000_000).collect()
}

#[test]
fn debits_draw_promotional_then_priority_then_expiry_then_oldest() {
    let (m, clock, _g) = clocked();
    let now = ledger_now(&m, &clock);
    let t = |days: i64| Some(Timestamp(now.0 + days * DAY));
    let paid = Some(GrantCategory::Paid);
    let promo = Some(GrantCategory::Promotional);
    let a = add(&m, "u", 10, EntryKind::Purchase, opts(None, 0, None)); // paid p0
    let b = add(&m, "u", 20, EntryKind::Grant, opts(None, 5, None)); // promo p5
    let c = add(&m, "u", 30, EntryKind::Grant, opts(promo, 0, t(10))); // promo p0 10d
    let d = add(&m, "u", 40, EntryKind::Refund, opts(promo, 0, t(5))); // promo p0 5d
    let e = add(&m, "u", 50, EntryKind::Grant, opts(None, 0, None)); // promo p0 never
    let f = add(&m, "u", 60, EntryKind::Adjustment, opts(paid, -1, None)); // paid p-1
    let g = add(&m, "u", 70, EntryKind::Purchase, opts(None, 0, None)); // paid p0, younger than a
    let order: Vec<_> = lots(&m, "u").iter().map(|l| l.source_entry_id.unwrap()).collect();
    assert_eq!(order, vec![d.id, c.id, e.id, b.id, f.id, a.id, g.id]);
    let l = lots(&m, "u");
    assert_eq!(l[0].category, GrantCategory::Promotional);
    assert_eq!(l[4].priority, -1);
    assert_eq!(l[0].expires_at, t(5));
    assert_eq!(l[5].category, GrantCategory::Paid, "a purchase is paid by default");
    // Each debit takes from the head of the order, crossing lots exactly.
    m.deduct_credits("u", credits(45), &NO_OPTS).unwrap();
    assert_eq!(remaining(&m, "u"), vec![25, 50, 20, 60, 10, 70]);
    let (key, _) = key_for(&m, "u");
    m.record_usage(KeyRef::Secret(&key), tokens(100_000), Some("r1")).unwrap(); // 100 credits
    assert_eq!(remaining(&m, "u"), vec![55, 10, 70]);
    m.add_credits("u", credits(-60), EntryKind::Adjustment, &NO_OPTS).unwrap();
    assert_eq!(remaining(&m, "u"), vec![5, 70]);
    assert_eq!(m.get_balance("u").unwrap(), credits(75));
    assert_audit_ok(&m);
}

#[test]
fn a_credit_repays_debt_first_and_its_grant_keeps_the_rest() {
    let (m, _clock, _g) = clocked();
    let (key, _) = key_for(&m, "u");
    add(&m, "u", 2, EntryKind::Grant, GrantOptions::default());
    let c = m.record_usage(KeyRef::Secret(&key), tokens(5_000), None).unwrap();
    assert!(c.overdraft && c.balance == credits(-3));
    assert!(lots(&m, "u").is_empty(), "an overdrawn account has no live grant");
    assert_audit_ok(&m);
    let e = m.record_payment("u", "pay-1", 500, "usd").unwrap();
    let l = lots(&m, "u");
    assert_eq!(l.len(), 1);
    assert_eq!((l[0].amount, l[0].remaining), (credits(5000), credits(4997)));
    assert_eq!(l[0].payment_id.as_deref(), Some("pay-1"));
    assert_eq!(l[0].source_entry_id, Some(e.id));
    // A credit smaller than the debt creates an empty grant.
    m.record_usage(KeyRef::Secret(&key), tokens(5_000_000), None).unwrap(); // -3 after
    add(&m, "u", 1, EntryKind::Grant, GrantOptions::default());
    assert!(lots(&m, "u").is_empty());
    assert_eq!(m.get_balance("u").unwrap(), credits(-2));
    assert_audit_ok(&m);
}

#[test]
fn expired_credits_vanish_from_reads_at_once_and_leave_through_an_expiry_entry() {
    let (m, clock, _g) = clocked();
    let now = ledger_now(&m, &clock);
    let soon = Some(Timestamp(now.0 + HOUR));
    add(&m, "u", 10, EntryKind::Grant, opts(None, 0, soon));
    add(&m, "u", 5, EntryKind::Purchase, GrantOptions::default());
    let (key, _) = key_for(&m, "u");
    m.record_usage(KeyRef::Secret(&key), tokens(3_000), None).unwrap(); // promo first: 7 left
    assert_eq!(m.get_balance("u").unwrap(), credits(12));
    let entries_before = common::all_entries(&m, "u").len();

    clock.advance(HOUR); // exactly at expires_at: expired
    assert_eq!(m.get_balance("u").unwrap(), credits(5), "reads never show expired credits");
    let a = m.account("u").unwrap();
    assert_eq!((a.balance, a.available), (credits(5), credits(5)));
    assert_eq!(remaining(&m, "u"), vec![5]);
    let v = m.verify_api_key_credits(&key, credits(1)).unwrap();
    assert_eq!(v.available, credits(5), "the one-statement verify subtracts due grants");
    assert_eq!(err_code(m.verify_api_key_credits(&key, credits(6))), ErrorCode::InsufficientCredits);
    assert_eq!(err_code(m.deduct_credits("u", credits(6), &NO_OPTS)), ErrorCode::InsufficientCredits);
    assert!(m.can_generate_api_key("u").unwrap().available == credits(5));
    assert_eq!(common::all_entries(&m, "u").len(), entries_before, "reads and failed writes append nothing");
    // 5 credits, and the micro-credit of the clock probe.
    assert_eq!(m.report().unwrap().outstanding_balance, micros(5_000_001));
    assert_audit_ok(&m);

    // The next write applies the expiry first, in its own transaction.
    let d = m.deduct_credits("u", credits(2), &NO_OPTS).unwrap();
    assert_eq!(d.balance_after, credits(3));
    let all = common::all_entries(&m, "u");
    assert_eq!(all.len(), entries_before + 2);
    let (deduct, expiry) = (&all[0], &all[1]);
    assert_eq!(deduct.id, d.id);
    assert_eq!(expiry.kind, EntryKind::Expiry);
    assert_eq!((expiry.amount, expiry.balance_after), (credits(-7), credits(5)));
    assert_eq!(expiry.seq + 1, deduct.seq);
    let meta = expiry.metadata.as_ref().unwrap();
    assert!(meta.get("grant_id").and_then(|v| v.as_i64()).is_some(), "{meta:?}");
    assert_eq!(m.expire_grants(100).unwrap().entries, 0, "nothing left to sweep");
    // The outbox has the expiry, written in the same transaction.
    let expired = expired_events(&m, 1);
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0].user_id, "u");
    assert_eq!(expired[0].data["grant_id"], meta["grant_id"]);
    assert_eq!(expired[0].data["amount"], "7");
    assert_eq!(expired[0].data["entry_id"], expiry.id.to_string());
    assert_audit_ok(&m);
}

#[test]
fn the_sweep_expires_every_due_grant_across_accounts_once() {
    let (m, clock, _g) = clocked();
    let now = ledger_now(&m, &clock);
    for (i, user) in ["a", "b", "c"].iter().enumerate() {
        for h in 1..=3 {
            add(&m, user, 1 + i as i64, EntryKind::Grant, opts(None, 0, Some(Timestamp(now.0 + h * HOUR))));
        }
        add(&m, user, 100, EntryKind::Purchase, GrantOptions::default());
    }
    assert_eq!(m.expire_grants(10).unwrap(), creditgate::ExpirySweep::default());
    clock.advance(2 * HOUR);
    // Limit 2 accounts per call: two calls cover three accounts.
    let first = m.expire_grants(2).unwrap();
    assert_eq!((first.accounts, first.entries, first.credits), (2, 4, credits(2 * (1 + 2))));
    let second = m.expire_grants(2).unwrap();
    assert_eq!((second.accounts, second.entries, second.credits), (1, 2, credits(2 * 3)));
    assert_eq!(m.expire_grants(2).unwrap().entries, 0);
    assert_eq!(m.get_balance("c").unwrap(), credits(103));
    clock.advance(HOUR);
    let last = m.expire_grants(10).unwrap();
    assert_eq!((last.accounts, last.entries, last.credits), (3, 3, credits(6)));
    for user in ["a", "b", "c"] {
        assert_eq!(m.get_balance(user).unwrap(), credits(100));
        let kinds: Vec<_> = common::all_entries(&m, user).iter().map(|e| e.kind).collect();
        assert_eq!(kinds.iter().filter(|k| **k == EntryKind::Expiry).count(), 3);
    }
    assert_eq!(err_code(m.expire_grants(0)), ErrorCode::InvalidArgument);
    assert_eq!(err_code(m.expire_grants(10_001)), ErrorCode::InvalidArgument);
    assert_audit_ok(&m);
}

#[test]
fn bad_grant_options_are_invalid_arguments_and_change_nothing() {
    let (m, clock, _g) = clocked();
    let now = ledger_now(&m, &clock);
    let inv = ErrorCode::InvalidArgument;
    let past = opts(None, 0, Some(now));
    assert_eq!(err_code(m.add_credits_with("u", credits(1), EntryKind::Grant, &NO_OPTS, &past)), inv);
    let far = opts(None, 0, Some(Timestamp(now.0 + 101 * 366 * DAY)));
    assert_eq!(err_code(m.add_credits_with("u", credits(1), EntryKind::Grant, &NO_OPTS, &far)), inv);
    for p in [-1001, 1001, i32::MIN, i32::MAX] {
        assert_eq!(
            err_code(m.add_credits_with("u", credits(1), EntryKind::Grant, &NO_OPTS, &opts(None, p, None))),
            inv
        );
        assert_eq!(err_code(m.record_payment_with("u", "p", 100, "usd", &opts(None, p, None))), inv);
    }
    add(&m, "u", 5, EntryKind::Grant, GrantOptions::default());
    let debit_with_options = opts(Some(GrantCategory::Paid), 0, None);
    assert_eq!(
        err_code(m.add_credits_with("u", credits(-1), EntryKind::Adjustment, &NO_OPTS, &debit_with_options)),
        inv
    );
    assert_eq!(err_code(m.add_credits("u", credits(1), EntryKind::Expiry, &NO_OPTS)), inv);
    assert_eq!(err_code(m.import_balance("u", credits(1), EntryKind::Expiry)), inv);
    assert!(GrantCategory::parse("free").is_err());
    assert_eq!(m.get_balance("u").unwrap(), credits(5));
    assert_eq!(common::all_entries(&m, "u").len(), 1);
    assert_audit_ok(&m);
}

#[test]
fn reversal_takes_the_payments_own_grant_first_and_reports_what_was_spent() {
    let (m, _clock, _g) = clocked();
    m.record_payment("u", "p1", 500, "usd").unwrap(); // 5000, oldest paid
    m.record_payment("u", "p2", 500, "usd").unwrap(); // 5000
    add(&m, "u", 1000, EntryKind::Grant, GrantOptions::default()); // promotional
    m.deduct_credits("u", credits(7000), &NO_OPTS).unwrap(); // promo 1000, p1 5000, p2 1000
    assert_eq!(remaining(&m, "u"), vec![4000]);
    // Part of p2 (its own grant has plenty): nothing of it was spent.
    let r = m.reverse_payment("p2", Some(200), Some("refund"), Some("re-1")).unwrap();
    let meta = r.metadata.clone().unwrap();
    assert_eq!(meta["from_grant_micros"], 2_000_000_000i64);
    assert_eq!(meta["already_spent_micros"], 0);
    assert_eq!(meta["reason"], "refund");
    assert_eq!(remaining(&m, "u"), vec![2000]);
    // All of p1: its grant is empty, so everything was spent and comes
    // from the other grants, then into overdraft.
    let r = m.reverse_payment("p1", None, None, None).unwrap();
    let meta = r.metadata.clone().unwrap();
    assert_eq!(meta["from_grant_micros"], 0);
    assert_eq!(meta["already_spent_micros"], 5_000_000_000i64);
    assert_eq!(r.balance_after, credits(-3000));
    assert!(remaining(&m, "u").is_empty());
    // A replay reports the same.
    let again = m.reverse_payment("p1", None, None, None).unwrap();
    assert!(again.replayed && again.metadata == r.metadata);
    assert_audit_ok(&m);
    // The rest of p2 once the account is back in credit: the payment's
    // grant was emptied by the p1 reversal, so all of it counts as spent.
    m.record_payment("u", "p3", 1000, "usd").unwrap(); // 10000: 7000 after the debt
    let r = m.reverse_payment("p2", None, None, None).unwrap();
    assert_eq!(r.metadata.as_ref().unwrap()["already_spent_micros"], 3_000_000_000i64);
    assert_eq!(remaining(&m, "u"), vec![4000]);
    assert_audit_ok(&m);
}

#[test]
fn a_reversal_after_partial_spend_splits_own_grant_and_spent() {
    let (m, _clock, _g) = clocked();
    m.record_payment("u", "p", 500, "usd").unwrap();
    m.record_payment("u", "q", 500, "usd").unwrap();
    m.deduct_credits("u", credits(1500), &NO_OPTS).unwrap(); // p: 3500 left
    let r = m.reverse_payment("p", None, None, None).unwrap();
    let meta = r.metadata.unwrap();
    assert_eq!(meta["from_grant_micros"], 3_500_000_000i64);
    assert_eq!(meta["already_spent_micros"], 1_500_000_000i64);
    assert_eq!(remaining(&m, "u"), vec![3500], "the other 1500 came from q");
    assert_audit_ok(&m);
}

#[test]
fn an_existing_ledger_migrates_to_one_paid_grant_per_positive_balance() {
    let (url, _g) = common::shared_url();
    {
        let m = common::open(&url, Config::new());
        add(&m, "rich", 70, EntryKind::Grant, GrantOptions::default());
        add(&m, "poor", 3, EntryKind::Grant, GrantOptions::default());
        let (key, _) = key_for(&m, "poor");
        m.record_usage(KeyRef::Secret(&key), tokens(10_000), None).unwrap();
    }
    // Back to schema 5: no grants table.
    common::raw_sql(&url, common::UNDO_V13);
    common::raw_sql(&url, common::UNDO_V12);
    common::raw_sql(&url, common::UNDO_V11);
    common::raw_sql(&url, common::UNDO_V10);
    common::raw_sql(&url, common::UNDO_V9);
    common::raw_sql(&url, common::UNDO_V8);
    common::raw_sql(&url, "DROP TABLE creditgate_grants; DELETE FROM creditgate_schema_version WHERE version = 6;");
    let m = common::open(&url, Config::new());
    let rich = lots(&m, "rich");
    assert_eq!(rich.len(), 1);
    let g = &rich[0];
    assert_eq!((g.category, g.priority, g.expires_at, g.source_entry_id), (GrantCategory::Paid, 0, None, None));
    assert_eq!((g.amount, g.remaining), (credits(70), credits(70)));
    assert!(lots(&m, "poor").is_empty());
    assert_audit_ok(&m);
    m.deduct_credits("rich", credits(69), &NO_OPTS).unwrap();
    assert_eq!(remaining(&m, "rich"), vec![1]);
    assert_audit_ok(&m);
}

#[test]
fn the_audit_finds_grants_that_do_not_add_up() {
    let (url, _g) = common::shared_url();
    let m = common::open(&url, Config::new());
    add(&m, "u", 10, EntryKind::Grant, GrantOptions::default());
    add(&m, "v", 10, EntryKind::Grant, GrantOptions::default());
    assert_audit_ok(&m);
    common::raw_sql(&url, "UPDATE creditgate_grants SET remaining = remaining - 1 WHERE user_id = 'u'");
    let a = m.audit().unwrap();
    assert!(!a.ok);
    assert_eq!(a.mismatches.len(), 1, "{:?}", a.mismatches);
    assert_eq!((a.mismatches[0].user_id.as_str(), a.mismatches[0].problem.as_str()), ("u", "grant_mismatch"));
}

// ----- concurrency ---------------------------------------------------------

const THREADS: usize = 8;
const OPS_PER_THREAD: usize = 40;

/// Threads charge one account across many grants while the clock moves and
/// grants expire; nothing is overdrawn, lost or expired twice.
#[test]
fn threads_draw_down_across_grants_and_expiries_exactly() {
    let (m, clock, _g) = clocked();
    let now = ledger_now(&m, &clock);
    let mut granted = 0i64;
    for i in 0..24i64 {
        let category = if i % 3 == 0 { GrantCategory::Paid } else { GrantCategory::Promotional };
        let expires = (i % 2 == 0).then(|| Timestamp(now.0 + (1 + i) * HOUR));
        add(&m, "u", 10 + i, EntryKind::Grant, opts(Some(category), (i % 4) as i32, expires));
        granted += 10 + i;
    }
    let (key, _) = key_for(&m, "u");
    thread::scope(|s| {
        for t in 0..THREADS {
            let (m, key, clock) = (&m, &key, &clock);
            s.spawn(move || {
                for i in 0..OPS_PER_THREAD {
                    match i % 4 {
                        0 => {
                            let _ = m.deduct_credits("u", micros(700_000), &NO_OPTS);
                        }
                        3 if t == 0 => clock.advance(HOUR),
                        _ => {
                            m.record_usage(KeyRef::Secret(key), tokens(900), Some(&format!("{t}-{i}"))).unwrap();
                        }
                    }
                }
            });
        }
    });
    m.expire_grants(100).unwrap();
    let all = common::all_entries(&m, "u");
    let sum = |k: EntryKind| -> i64 { all.iter().filter(|e| e.kind == k).map(|e| e.amount.micros()).sum() };
    let balance = m.get_balance("u").unwrap().micros();
    let expired = -sum(EntryKind::Expiry);
    let spent = -(sum(EntryKind::Usage) + sum(EntryKind::Deduct));
    assert_eq!(granted * 1_000_000 - spent - expired, balance);
    let n = expiry_entries_of_distinct_grants(&all);
    let events = expired_events(&m, n).len();
    assert_eq!(events, n, "one grant.expired event per expiry entry");
    let live: i64 = lots(&m, "u").iter().map(|g| g.remaining.micros()).sum();
    assert_eq!(live, balance.max(0));
    assert_audit_ok(&m);
}

const CHILD_ENV: &str = "CREDITGATE_TEST_GRANTS_CHILD";
const PROCESSES: usize = 3;

/// Child side of `processes_draw_down_across_grants_while_they_expire`.
#[test]
#[ignore = "run by processes_draw_down_across_grants_while_they_expire in a child process"]
fn grants_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let (worker, rest) = spec.split_once('\t').unwrap();
    let (url, key) = rest.split_once('\t').unwrap();
    let m = common::open(url, Config::new());
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(2_500);
    let mut i = 0;
    while std::time::Instant::now() < deadline {
        m.record_usage(KeyRef::Secret(key), tokens(500), Some(&format!("p{worker}-{i}"))).unwrap();
        if i % 5 == 0 {
            let _ = m.deduct_credits("u", micros(300_000), &NO_OPTS);
        }
        if i % 7 == 0 {
            m.expire_grants(10).unwrap();
        }
        i += 1;
    }
}

/// Processes charge one account across grants that expire (real clock)
/// while they run; then every due grant is empty and the sums add up.
#[test]
fn processes_draw_down_across_grants_while_they_expire() {
    let (url, _g) = common::shared_url();
    let m = common::open(&url, Config::new().min_credits_api_key(Credits::ZERO).unwrap());
    let clock = TestClock::new();
    let now = ledger_now(&m, &clock);
    let mut granted = 0i64;
    for i in 0..12i64 {
        let category = if i % 2 == 0 { GrantCategory::Paid } else { GrantCategory::Promotional };
        // Eight grants expire 0.15 s apart while the children run (2.5 s).
        let expires = (i % 3 != 0).then(|| Timestamp(now.0 + 150_000 * (1 + i)));
        add(&m, "u", 1000 * (1 + i), EntryKind::Grant, opts(Some(category), (i % 2) as i32, expires));
        granted += 1000 * (1 + i);
    }
    let (key, _) = key_for(&m, "u");
    let children: Vec<_> = (0..PROCESSES)
        .map(|w| common::spawn_child_test("grants_child", CHILD_ENV, format!("{w}\t{url}\t{key}")))
        .collect();
    for c in children {
        common::child_output(c);
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    m.expire_grants(10).unwrap();
    assert_eq!(m.expire_grants(10).unwrap().entries, 0, "every due grant was expired");
    assert!(lots(&m, "u").iter().all(|g| g.expires_at.is_none()));
    let all = common::all_entries(&m, "u");
    let sum = |k: EntryKind| -> i64 { all.iter().filter(|e| e.kind == k).map(|e| e.amount.micros()).sum() };
    let balance = m.get_balance("u").unwrap().micros();
    assert_eq!(granted * 1_000_000 + sum(EntryKind::Usage) + sum(EntryKind::Deduct) + sum(EntryKind::Expiry), balance);
    assert!(sum(EntryKind::Expiry) < 0, "some grants expired with credits left");
    let n = expiry_entries_of_distinct_grants(&all);
    assert_eq!(n, 8, "each expiring grant expired once, with credits left");
    let events = expired_events(&m, n).len();
    assert_eq!(events, n, "one grant.expired event per expiry entry");
    assert_audit_ok(&m);
}
