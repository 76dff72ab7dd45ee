//! Holds as integrations use them: a call's worst case quoted at each
//! token's own rate, the status of a replayed hold, and the order of the
//! refusals (402 before 429). Also the refused key purchase that must roll
//! back everything but its tally. On SQLite and, with
//! `CREDITGATE_TEST_BACKEND=postgres`, on PostgreSQL.

mod common;

use common::{assert_audit_ok, credits, err_code, grant, io_tokens, key_for, micros};
use creditgate::{
    Config, Credits, EntryKind, ErrorCode, EventKind, GrantOptions, HoldAmount, HoldStatus, LimitSource, Settlement,
    SpendWindow, TestClock, Usage,
};

/// A model whose output is 20 times dearer than its input.
fn dear_output(m: &creditgate::CreditManager) {
    m.set_model_price("dear", credits(1), credits(20)).unwrap();
}

#[test]
fn a_usage_hold_quotes_input_and_output_at_their_own_rates() {
    let (m, _db) = common::manager();
    dear_output(&m);
    grant(&m, "u", credits(6_000));
    let (key, _) = key_for(&m, "u");
    // 1,500 in at 1/1k + 101 out at 20/1k = 1.5 + 2.02 = 3.52 credits.
    let usage = Usage::new(1_500, 101, Some("dear"));
    let h = m.reserve(&key, HoldAmount::Usage(usage), 60, None).unwrap();
    assert_eq!(h.amount, micros(3_520_000));
    assert_eq!(h.status, HoldStatus::Active);
    // The quote is the charge's own formula: settling the same usage charges the hold exactly.
    let c = m.settle(h.hold_id, Settlement::Tokens(usage)).unwrap();
    assert_eq!(c.charged, h.amount);
    // Rounded up once, to the micro-credit; never below one micro-credit.
    let odd = Usage::new(1, 1, Some("dear"));
    assert_eq!(m.reserve(&key, HoldAmount::Usage(odd), 60, None).unwrap().amount, micros(21_000));
    m.set_model_price("free", Credits::ZERO, Credits::ZERO).unwrap();
    let free = Usage::new(10, 10, Some("free"));
    assert_eq!(m.reserve(&key, HoldAmount::Usage(free), 60, None).unwrap().amount, micros(1));
    // Bad counts are refused like a charge's.
    let neg = Usage::new(1, -1, None);
    assert_eq!(err_code(m.reserve(&key, HoldAmount::Usage(neg), 60, None)), ErrorCode::InvalidArgument);
    assert_audit_ok(&m);
}

#[test]
fn a_balance_that_covers_only_the_input_priced_worst_case_is_refused() {
    let (m, _db) = common::manager();
    dear_output(&m);
    grant(&m, "u", credits(5_000));
    let (key, _) = key_for(&m, "u");
    // Spend down to 4 credits: enough for 4,000 input-priced tokens, not for
    // 100 prompt + 1,000 completion tokens at 20/1k.
    m.deduct_credits("u", credits(4_996), &common::NO_OPTS).unwrap();
    let worst = Usage::new(100, 1_000, Some("dear"));
    assert!(m.reserve(&key, HoldAmount::Tokens { tokens: 1_100, model: Some("dear") }, 60, None).is_ok());
    let e = m.reserve(&key, HoldAmount::Usage(worst), 60, None).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InsufficientCredits, "{e}");
    assert_audit_ok(&m);
}

#[test]
fn a_replayed_hold_says_where_it_stands() {
    let (m, _db) = common::manager();
    grant(&m, "u", credits(6_000));
    let (key, _) = key_for(&m, "u");
    let amount = HoldAmount::Credits(credits(2));
    let first = m.reserve(&key, amount, 60, Some("r-active")).unwrap();
    let again = m.reserve(&key, amount, 60, Some("r-active")).unwrap();
    assert_eq!((again.hold_id, again.replayed, again.status), (first.hold_id, true, HoldStatus::Active));

    let h = m.reserve(&key, amount, 60, Some("r-released")).unwrap();
    m.release(h.hold_id).unwrap();
    let again = m.reserve(&key, amount, 60, Some("r-released")).unwrap();
    assert_eq!((again.hold_id, again.replayed, again.status), (h.hold_id, true, HoldStatus::Released));

    let h = m.reserve(&key, amount, 60, Some("r-settled")).unwrap();
    m.settle(h.hold_id, Settlement::Credits(credits(1))).unwrap();
    let again = m.reserve(&key, amount, 60, Some("r-settled")).unwrap();
    assert_eq!((again.replayed, again.status), (true, HoldStatus::Settled));
    // A released hold is not available credit: replaying it held nothing.
    assert_eq!(m.account("u").unwrap().held, credits(2));
    assert_audit_ok(&m);
}

#[test]
fn an_expired_hold_replays_as_expired() {
    let clock = TestClock::new();
    let (m, _db) = common::manager_with(Config::new().test_clock(clock.clone()));
    grant(&m, "u", credits(6_000));
    let (key, _) = key_for(&m, "u");
    let h = m.reserve(&key, HoldAmount::Credits(credits(1)), 5, Some("r")).unwrap();
    clock.advance(6_000_000);
    let again = m.reserve(&key, HoldAmount::Credits(credits(1)), 5, Some("r")).unwrap();
    assert_eq!((again.hold_id, again.replayed, again.status), (h.hold_id, true, HoldStatus::Expired));
}

#[test]
fn reserve_answers_402_before_429_and_a_refusal_counts_no_request() {
    let (m, _db) = common::manager();
    grant(&m, "u", credits(5_010));
    let (key, id) = key_for(&m, "u");
    m.set_rate_limit(id, Some(1), None).unwrap();
    m.reserve(&key, HoldAmount::Credits(credits(1)), 60, None).unwrap();
    // The one request of the minute is used up, and the account cannot cover this hold either.
    let e = m.reserve(&key, HoldAmount::Credits(credits(1_000_000)), 60, None).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InsufficientCredits, "{e}");
    // Also when the key's cap is what binds.
    m.set_key_limit(id, Some(credits(2)), SpendWindow::Daily, None).unwrap();
    match m.reserve(&key, HoldAmount::Credits(credits(3)), 60, None) {
        Err(creditgate::Error::InsufficientCredits { limit_source, .. }) => assert_eq!(limit_source, LimitSource::Key),
        other => panic!("expected the key cap's 402, got {other:?}"),
    }
    // Within the balance, the rate limit answers.
    assert_eq!(err_code(m.reserve(&key, HoldAmount::Credits(credits(1)), 60, None)), ErrorCode::RateLimited);
    // The refused holds hold nothing.
    assert_eq!(m.account("u").unwrap().held, credits(1));
    assert_audit_ok(&m);
}

#[test]
fn a_refused_key_purchase_rolls_back_the_due_expiry_and_its_event() {
    let clock = TestClock::new();
    let (m, _db) = common::manager_with(Config::new().test_clock(clock.clone()));
    // 100 credits that expire in an hour, and no key yet: the first key needs 5,000.
    let now = m.add_credits("probe", micros(1), EntryKind::Grant, &common::NO_OPTS).unwrap().created_at;
    let expiring =
        GrantOptions { expires_at: Some(creditgate::Timestamp(now.0 + 3_600_000_000)), ..Default::default() };
    m.add_credits_with("u", credits(100), EntryKind::Grant, &common::NO_OPTS, &expiring).unwrap();
    clock.advance(2 * 3_600_000_000);
    let before = common::all_entries(&m, "u").len();
    assert_eq!(err_code(m.create_api_key("u", None)), ErrorCode::InsufficientCredits);
    let after = common::all_entries(&m, "u");
    assert_eq!(after.len(), before, "a refused purchase writes no expiry entry: {after:?}");
    let events = m.events(0, 1000).unwrap();
    assert!(events.iter().all(|e| e.kind != EventKind::GrantExpired), "{events:?}");
    // The expiry still happens with the next write, or the sweep.
    assert_eq!(m.expire_grants(100).unwrap().entries, 1);
    assert_eq!(m.get_balance("u").unwrap(), Credits::ZERO);
    assert_audit_ok(&m);
}

#[test]
fn a_usage_charge_matches_the_quote_of_its_tokens() {
    let (m, _db) = common::manager();
    dear_output(&m);
    grant(&m, "u", credits(6_000));
    let (key, _) = key_for(&m, "u");
    let u = io_tokens(777, 333, Some("dear"));
    let held = m.reserve(&key, HoldAmount::Usage(u), 60, None).unwrap().amount;
    let charged = m.record_usage(creditgate::KeyRef::Secret(&key), u, None).unwrap().charged;
    assert_eq!(held, charged);
}
