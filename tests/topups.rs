//! Auto top-up (docs/auto-topup.md), on both backends: a rule requests a
//! top-up once per crossing of its threshold by the available balance
//! (charges, holds, expiries), within the month's count and credit caps;
//! a payment under the top-up's id pays it once; a failure is recorded
//! once and still counts; concurrent charges from many managers cross
//! exactly as often as the ledger's history says.

mod common;

use common::{NO_OPTS, credits, err_code, grant, key_for, with_key};
use creditgate::{
    AutoTopup, Config, CreditManager, Credits, EntryKind, ErrorCode, EventKind, GrantCategory, GrantOptions,
    HoldAmount, KeyRef, Settlement, TestClock, Topup, TopupAmount, TopupStatus, Usage,
};
use std::thread;
use std::time::{Duration, Instant};

fn fixed(threshold: i64, amount: i64) -> AutoTopup {
    AutoTopup {
        threshold: credits(threshold),
        amount: TopupAmount::Fixed(credits(amount)),
        max_per_month: 100,
        monthly_cap: credits(1_000_000),
    }
}

fn charge(m: &CreditManager, user: &str, c: i64) {
    m.deduct_credits(user, credits(c), &NO_OPTS).unwrap();
}

/// The top-ups of `user`, oldest first.
fn topups(m: &CreditManager, user: &str) -> Vec<Topup> {
    let mut t = m.topups(user, 1000).unwrap();
    t.reverse();
    t
}

/// The events of `kind` for `user`, waiting (bounded) until `want` are
/// visible: PostgreSQL shows events in commit order below its snapshot.
fn events_of(m: &CreditManager, user: &str, kind: EventKind, want: usize) -> Vec<creditgate::Event> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: Vec<_> =
            m.events(0, 1000).unwrap().into_iter().filter(|e| e.kind == kind && e.user_id == user).collect();
        if got.len() >= want || Instant::now() > deadline {
            return got;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Pays a top-up as a host's handler does: its USD cents under its id.
fn pay(m: &CreditManager, t: &Topup) -> creditgate::Entry {
    // 1,000 credits per USD: 10 credits (10^7 micros) per cent, rounded up.
    let cents = (t.amount.micros() + 9_999_999) / 10_000_000;
    m.record_payment(&t.user_id, &t.id, cents, "USD").unwrap()
}

#[test]
fn a_crossing_requests_once_and_a_payment_rearms_it() {
    let (m, _g) = common::manager();
    grant(&m, "u", credits(100));
    assert_eq!(m.set_auto_topup("u", &fixed(50, 30)).unwrap(), None, "100 is above 50");
    charge(&m, "u", 40); // 60
    assert!(topups(&m, "u").is_empty());
    charge(&m, "u", 20); // 40: crosses
    charge(&m, "u", 10); // 30: stays below
    let t = topups(&m, "u");
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!((t[0].amount, t[0].status, t[0].user_id.as_str()), (credits(30), TopupStatus::Requested, "u"));
    assert!(t[0].id.starts_with("tu_"));
    let requested = events_of(&m, "u", EventKind::TopupRequested, 1);
    assert_eq!(requested.len(), 1);
    let data = &requested[0].data;
    assert_eq!(data["topup_id"], t[0].id.as_str());
    assert_eq!(
        (data["amount"].as_str(), data["threshold"].as_str(), data["available"].as_str()),
        (Some("30"), Some("50"), Some("40"))
    );
    assert_eq!((data["amount_minor"].as_i64(), data["currency"].as_str()), (Some(3), Some("USD")));

    let e = pay(&m, &t[0]); // 60: back above
    assert_eq!(e.amount, credits(30));
    charge(&m, "u", 20); // 40: crosses again
    let t = topups(&m, "u");
    assert_eq!(t.len(), 2, "{t:?}");
    assert_eq!((t[0].status, t[0].entry_id), (TopupStatus::Paid, Some(e.id)));
    assert_eq!(t[1].status, TopupStatus::Requested);
    let a = m.account("u").unwrap();
    assert_eq!(a.auto_topup, Some(fixed(50, 30)));
    assert_eq!(a.topups_this_month, t);
    common::assert_audit_ok(&m);
}

#[test]
fn up_to_asks_for_the_target_less_the_available_balance() {
    let (m, _g) = common::manager();
    grant(&m, "u", credits(60));
    let rule = AutoTopup { amount: TopupAmount::UpTo(credits(100)), ..fixed(50, 1) };
    m.set_auto_topup("u", &rule).unwrap();
    charge(&m, "u", 25); // 35
    assert_eq!(topups(&m, "u")[0].amount, credits(65));
}

#[test]
fn the_month_caps_count_every_request_and_a_new_month_starts_over() {
    let clock = TestClock::new();
    let (m, _g) = common::manager_with(Config::new().test_clock(clock.clone()));
    grant(&m, "u", credits(100));
    let rule = AutoTopup { max_per_month: 2, monthly_cap: credits(50), ..fixed(50, 30) };
    m.set_auto_topup("u", &rule).unwrap();
    let cross = |m: &CreditManager| {
        charge(m, "u", 60); // 100 → 40
        grant(m, "u", credits(60)); // back to 100
    };
    cross(&m);
    cross(&m);
    let t = topups(&m, "u");
    // The second is cut to what the credit cap leaves.
    assert_eq!(t.iter().map(|t| t.amount).collect::<Vec<_>>(), [credits(30), credits(20)]);
    cross(&m);
    assert_eq!(topups(&m, "u").len(), 2, "the count cap");
    let skipped = events_of(&m, "u", EventKind::TopupSkipped, 1);
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].data["reason"], "max_per_month");

    // A credit cap alone skips too.
    let rule = AutoTopup { max_per_month: 10, monthly_cap: credits(50), ..fixed(50, 30) };
    m.set_auto_topup("u", &rule).unwrap();
    cross(&m);
    let skipped = events_of(&m, "u", EventKind::TopupSkipped, 2);
    assert_eq!(skipped.get(1).map(|e| e.data["reason"].clone()), Some("monthly_cap".into()));

    // Next month (32 days on is always another calendar month).
    clock.advance(32 * 86_400 * 1_000_000);
    assert!(m.account("u").unwrap().topups_this_month.is_empty());
    cross(&m);
    let t = topups(&m, "u");
    assert_eq!(t.len(), 3);
    assert_eq!(m.account("u").unwrap().topups_this_month, vec![t[2].clone()]);
}

#[test]
fn a_failure_is_recorded_once_and_counts_against_the_month() {
    let (m, _g) = common::manager();
    grant(&m, "u", credits(100));
    m.set_auto_topup("u", &AutoTopup { max_per_month: 1, ..fixed(50, 30) }).unwrap();
    charge(&m, "u", 60);
    let t = topups(&m, "u").remove(0);
    let failed = m.record_topup_failure(&t.id, "card_declined").unwrap();
    assert_eq!((failed.status, failed.reason.as_deref()), (TopupStatus::Failed, Some("card_declined")));
    let again = m.record_topup_failure(&t.id, "another reason").unwrap();
    assert_eq!(again, failed, "a retried failure changes nothing");
    assert_eq!(events_of(&m, "u", EventKind::TopupFailed, 1).len(), 1);
    // It still counts: the next crossing this month is skipped.
    grant(&m, "u", credits(60));
    charge(&m, "u", 60);
    assert_eq!(topups(&m, "u").len(), 1);
    assert_eq!(events_of(&m, "u", EventKind::TopupSkipped, 1).len(), 1);
    // A payment that arrives anyway still credits and pays it.
    let before = m.get_balance("u").unwrap();
    pay(&m, &t);
    assert_eq!(m.get_balance("u").unwrap(), before.checked_add(credits(30)).unwrap());
    assert_eq!(topups(&m, "u")[0].status, TopupStatus::Paid);
    assert_eq!(err_code(m.record_topup_failure(&t.id, "late")), ErrorCode::IdempotencyConflict);
    assert_eq!(err_code(m.record_topup_failure("tu_00000000000000000000000000000000", "x")), ErrorCode::NotFound);
    assert_eq!(err_code(m.record_topup_failure(&t.id, "")), ErrorCode::InvalidArgument);
}

#[test]
fn a_retried_payment_credits_once_and_pays_once() {
    let (m, _g) = common::manager();
    grant(&m, "u", credits(40));
    let t = m.set_auto_topup("u", &fixed(50, 30)).unwrap().expect("below the threshold: requested at once");
    let first = pay(&m, &t);
    let second = pay(&m, &t);
    assert!(!first.replayed && second.replayed);
    assert_eq!(m.get_balance("u").unwrap(), credits(70));
    assert_eq!(topups(&m, "u")[0].entry_id, Some(first.id));
    let paid = events_of(&m, "u", EventKind::TopupPaid, 1);
    assert_eq!(paid.len(), 1);
    assert_eq!(paid[0].data["entry_id"], first.id.to_string().as_str());
    // Paid to another account: refused, nothing credited.
    grant(&m, "v", credits(10));
    let tv = m.set_auto_topup("v", &fixed(50, 30)).unwrap().unwrap();
    assert_eq!(err_code(m.record_payment("u", &tv.id, 300, "USD")), ErrorCode::InvalidArgument);
    assert_eq!(m.get_balance("u").unwrap(), credits(70));
    assert_eq!(topups(&m, "v")[0].status, TopupStatus::Requested);
    // Other payment ids are not top-ups.
    m.record_payment("u", "pi_plain", 100, "USD").unwrap();
    common::assert_audit_ok(&m);
}

#[test]
fn a_hold_crosses_and_its_settlement_does_not_cross_again() {
    let (m, _g) = common::manager();
    grant(&m, "u", credits(100));
    let (key, _) = key_for(&m, "u");
    m.set_auto_topup("u", &fixed(50, 30)).unwrap();
    // A hold that keeps the available balance above: its settlement
    // frees it, so charging less than it held crosses nothing.
    let h = m.reserve(&key, HoldAmount::Credits(credits(40)), 60, None).unwrap();
    m.settle(h.hold_id, Settlement::Credits(credits(20))).unwrap(); // 80
    assert!(topups(&m, "u").is_empty());
    let h = m.reserve(&key, HoldAmount::Credits(credits(40)), 60, None).unwrap(); // 40 available
    assert_eq!(topups(&m, "u").len(), 1, "the hold crossed");
    m.settle(h.hold_id, Settlement::Credits(credits(40))).unwrap();
    assert_eq!(topups(&m, "u").len(), 1, "its settlement is the same crossing");
    // A settlement above its hold crosses when it takes more than it held.
    grant(&m, "u", credits(50)); // 90
    let h = m.reserve(&key, HoldAmount::Credits(credits(10)), 60, None).unwrap(); // 80
    m.settle(h.hold_id, Settlement::Credits(credits(50))).unwrap(); // 40
    assert_eq!(topups(&m, "u").len(), 2);
}

#[test]
fn an_expiry_crosses_once_per_sweep() {
    let clock = TestClock::new();
    let (m, _g) = common::manager_with(Config::new().test_clock(clock.clone()));
    grant(&m, "u", credits(40));
    let soon = |secs: i64| GrantOptions {
        expires_at: Some(creditgate::Timestamp(
            m.transactions("u", 1, None).unwrap()[0].created_at.0 + secs * 1_000_000,
        )),
        category: Some(GrantCategory::Promotional),
        priority: 0,
    };
    let (a, b) = (soon(3600), soon(3600));
    m.add_credits_with("u", credits(20), EntryKind::Grant, &NO_OPTS, &a).unwrap();
    m.add_credits_with("u", credits(20), EntryKind::Grant, &NO_OPTS, &b).unwrap(); // 80
    m.set_auto_topup("u", &fixed(50, 30)).unwrap();
    clock.advance(7200 * 1_000_000);
    charge(&m, "u", 1); // expires both (80 → 40), then 39
    assert_eq!(topups(&m, "u").len(), 1, "two expiries in one sweep are one crossing");
}

#[test]
fn a_members_charge_crosses_the_organisations_rule() {
    let (m, _g) = common::manager_with(Config::new().min_credits_api_key(Credits::ZERO).unwrap());
    grant(&m, "acme", credits(100));
    m.add_member("acme", "bob").unwrap();
    let (key, _) = key_for(&m, "bob");
    m.set_auto_topup("acme", &fixed(50, 30)).unwrap();
    m.record_usage(KeyRef::Secret(&key), Usage::new(60_000, 0, None), None).unwrap(); // 1 credit per 1k tokens
    let t = topups(&m, "acme");
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].user_id, "acme");
    assert!(topups(&m, "bob").is_empty());
    let ev = events_of(&m, "acme", EventKind::TopupRequested, 1);
    assert_eq!(ev.len(), 1);
    assert!(ev[0].api_key_id.is_some(), "the event names the key whose charge crossed");
}

#[test]
fn set_and_remove() {
    let (m, _g) = common::manager();
    // Set on a new account while it is below: requested at once, account created.
    let t = m.set_auto_topup("new", &fixed(50, 30)).unwrap().unwrap();
    assert_eq!((t.user_id.as_str(), t.amount), ("new", credits(30)));
    assert!(m.account("new").unwrap().created_at.is_some());
    assert!(m.remove_auto_topup("new").unwrap());
    assert!(!m.remove_auto_topup("new").unwrap());
    assert!(!m.remove_auto_topup("nobody").unwrap());
    assert_eq!(m.account("new").unwrap().auto_topup, None);
    grant(&m, "new", credits(100));
    charge(&m, "new", 90);
    assert_eq!(topups(&m, "new").len(), 1, "no rule, no crossing");
    // The month's top-ups stay listed after the rule is gone.
    assert_eq!(m.account("new").unwrap().topups_this_month.len(), 1);
}

#[test]
fn setting_a_rule_again_while_low_asks_nothing_more() {
    let (m, _g) = common::manager();
    grant(&m, "u", credits(100));
    m.set_auto_topup("u", &fixed(50, 30)).unwrap();
    charge(&m, "u", 60); // 100 -> 40: the crossing's request
    assert_eq!(topups(&m, "u").len(), 1);
    // A deploy re-applies the rule, or changes its cap: the low balance was served.
    assert_eq!(m.set_auto_topup("u", &fixed(50, 30)).unwrap(), None);
    let wider = AutoTopup { monthly_cap: credits(2_000_000), ..fixed(50, 30) };
    assert_eq!(m.set_auto_topup("u", &wider).unwrap(), None);
    // A higher threshold than before: still the one crossing, waiting for its payment.
    assert_eq!(m.set_auto_topup("u", &fixed(80, 30)).unwrap(), None);
    assert_eq!(topups(&m, "u").len(), 1);
    // Paid (40 + 30 = 70, still below 80) and the rule set again: a new low, asked at once.
    pay(&m, &topups(&m, "u")[0]);
    m.remove_auto_topup("u").unwrap();
    let t = m.set_auto_topup("u", &fixed(80, 30)).unwrap().expect("no rule and nothing waiting: asked");
    assert_eq!(t.amount, credits(30));
    assert_eq!(topups(&m, "u").len(), 2);
}

#[test]
fn bad_input_changes_nothing() {
    let (m, _g) = common::manager();
    let ok = fixed(50, 30);
    let bad = [
        AutoTopup { threshold: Credits::from_micros(-1), ..ok },
        AutoTopup { amount: TopupAmount::Fixed(Credits::ZERO), ..ok },
        AutoTopup { amount: TopupAmount::UpTo(credits(50)), ..ok },
        AutoTopup { amount: TopupAmount::Fixed(Credits::from_micros(creditgate::MAX_AMOUNT_MICROS + 1)), ..ok },
        AutoTopup { monthly_cap: Credits::ZERO, ..ok },
        AutoTopup { max_per_month: 0, ..ok },
        AutoTopup { max_per_month: creditgate::MAX_TOPUPS_PER_MONTH + 1, ..ok },
    ];
    for b in bad {
        assert_eq!(err_code(m.set_auto_topup("u", &b)), ErrorCode::InvalidArgument, "{b:?}");
    }
    assert_eq!(err_code(m.set_auto_topup("", &ok)), ErrorCode::InvalidArgument);
    assert_eq!(err_code(m.set_auto_topup("a\0b", &ok)), ErrorCode::InvalidArgument);
    let a = m.account("u").unwrap();
    assert_eq!((a.created_at, a.auto_topup), (None, None));
    assert_eq!(err_code(m.topups("u", 0)), ErrorCode::InvalidArgument);
    assert_eq!(err_code(m.topups("u", 1001)), ErrorCode::InvalidArgument);
    assert!(m.events(0, 1000).unwrap().is_empty());
    // An idempotent charge replayed does not cross twice.
    grant(&m, "u", credits(100));
    m.set_auto_topup("u", &ok).unwrap();
    m.deduct_credits("u", credits(60), &with_key("once")).unwrap();
    m.deduct_credits("u", credits(60), &with_key("once")).unwrap();
    assert_eq!(topups(&m, "u").len(), 1);
}

/// Crossings of `threshold` in `user`'s history (its available balance is
/// its balance: no holds, floor or expiries), entry by entry after seq
/// `after_seq` (when the rule was set).
fn crossings_in_history(m: &CreditManager, user: &str, threshold: Credits, after_seq: i64) -> usize {
    let mut entries = Vec::new();
    let mut before = None;
    loop {
        let page = m.transactions(user, 1000, before).unwrap();
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        entries.extend(page);
    }
    entries.sort_by_key(|e| e.seq);
    entries
        .iter()
        .filter(|e| e.seq > after_seq)
        .filter(|e| {
            let was = e.balance_after.checked_sub(e.amount).unwrap();
            was >= threshold && threshold > e.balance_after
        })
        .count()
}

#[test]
fn concurrent_charges_from_many_managers_cross_exactly_as_the_history_says() {
    let (url, _g) = common::shared_url();
    let m = common::open(&url, Config::new());
    let (key, _) = key_for(&m, "u");
    grant(&m, "u", credits(100));
    let rule = AutoTopup { max_per_month: 100, ..fixed(90, 30) };
    m.set_auto_topup("u", &rule).unwrap();
    let rule_seq = m.transactions("u", 1, None).unwrap()[0].seq;
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let (url, key) = (url.clone(), key.clone());
            thread::spawn(move || {
                let m = common::open(&url, Config::new());
                for i in 0..40 {
                    // Charges (never refused: the balance may go below
                    // zero), and credits that lift it back: about even.
                    if (i + w) % 5 == 0 {
                        grant(&m, "u", credits(20));
                    } else {
                        m.record_usage(KeyRef::Secret(&key), Usage::new(5_000, 0, None), None).unwrap();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a worker panicked");
    }
    let expected = crossings_in_history(&m, "u", rule.threshold, rule_seq);
    assert!(expected >= 1, "the workload crossed at least once");
    let requested = topups(&m, "u").len();
    let skipped = events_of(&m, "u", EventKind::TopupSkipped, 0).len();
    assert_eq!(requested + skipped, expected, "one request per crossing");
    assert_eq!(events_of(&m, "u", EventKind::TopupRequested, requested).len(), requested);
    common::assert_audit_ok(&m);
}

#[test]
fn a_ledger_at_schema_10_upgrades_and_takes_a_rule() {
    let (url, _g) = common::shared_url();
    let m = common::open(&url, Config::new());
    grant(&m, "u", credits(100));
    drop(m);
    common::raw_sql(&url, common::UNDO_V13);
    common::raw_sql(&url, common::UNDO_V12);
    common::raw_sql(&url, common::UNDO_V11);
    let m = common::open(&url, Config::new());
    assert_eq!(m.account("u").unwrap().auto_topup, None);
    m.set_auto_topup("u", &fixed(50, 30)).unwrap();
    charge(&m, "u", 60);
    assert_eq!(topups(&m, "u").len(), 1);
    common::assert_audit_ok(&m);
}
