//! Payments in: currencies other than USD, reinstated reversals (a dispute
//! won), revenue per currency and operator events. Each test gets a fresh,
//! empty ledger from `common` (backend-neutral).

mod common;

use common::{assert_audit_ok, credits, err_code, micros};
use creditgate::{Config, CreditManager, Credits, EntryKind, ErrorCode, EventKind};
use std::collections::BTreeMap;

fn balance(m: &CreditManager, user: &str) -> Credits {
    m.get_balance(user).unwrap()
}

fn rates() -> Config {
    Config::new().currency_rates_from_str("EUR=1100:2,JPY=7.5:0,KWD=3250.0065:3").unwrap()
}

// ----- currencies -------------------------------------------------------------

#[test]
fn configured_currencies_credit_at_their_rate_rounded_down() {
    let (m, _db) = common::manager_with(rates());
    let eur = m.record_payment("u", "pi_eur", 1999, "eur").unwrap();
    assert_eq!(eur.amount, credits(21_989)); // 19.99 × 1100
    assert_eq!((eur.amount_minor, eur.currency.as_deref()), (Some(1999), Some("EUR")));
    // JPY has no minor unit: 3 yen × 7.5.
    assert_eq!(m.record_payment("u", "pi_jpy", 3, "JPY").unwrap().amount, "22.5".parse().unwrap());
    // 1 fils = 0.001 KWD × 3250.0065 = 3.2500065 credits → 3.250006 (down to the micro-credit).
    assert_eq!(m.record_payment("u", "pi_kwd", 1, "KWD").unwrap().amount, micros(3_250_006));
    // USD keeps its default of 1,000 credits per dollar.
    assert_eq!(m.record_payment("u", "pi_usd", 500, "USD").unwrap().amount, credits(5000));
    // A replay compares the normalised currency.
    assert!(m.record_payment("u", "pi_eur", 1999, "EUR").unwrap().replayed);
    assert_eq!(err_code(m.record_payment("u", "pi_eur", 1999, "JPY")), ErrorCode::IdempotencyConflict);
    let inv = ErrorCode::InvalidArgument;
    for unknown in ["GBP", "", "EURO", "€", "eu"] {
        assert_eq!(err_code(m.record_payment("u", "pi_x", 100, unknown)), inv, "{unknown:?}");
    }
    // Capped by the largest amount (10^12 credits), in i128 without overflow.
    assert_eq!(err_code(m.record_payment("u", "pi_big", i64::MAX, "JPY")), inv);
    let expected = credits(21_989 + 5000).checked_add("22.5".parse().unwrap()).unwrap();
    assert_eq!(balance(&m, "u"), expected.checked_add(micros(3_250_006)).unwrap());
    assert_audit_ok(&m);
}

#[test]
fn a_payment_below_one_micro_credit_is_refused() {
    let (m, _db) = common::manager_with(Config::new().currency_rate("IDR", "0.000001", 2).unwrap());
    // 1 sen = 0.01 IDR × 0.000001 credits: less than one micro-credit.
    assert_eq!(err_code(m.record_payment("u", "pi_1", 1, "IDR")), ErrorCode::InvalidArgument);
    assert_eq!(m.record_payment("u", "pi_2", 100, "IDR").unwrap().amount, micros(1));
}

#[test]
fn credits_per_usd_is_the_usd_rate() {
    let (m, _db) = common::manager_with(Config::new().credits_per_usd(2000).unwrap());
    assert_eq!(m.record_payment("u", "pi_1", 150, "usd").unwrap().amount, credits(3000));
    let (m2, _db2) = common::manager_with(Config::new().currency_rate("USD", "0.5", 2).unwrap());
    assert_eq!(m2.record_payment("u", "pi_1", 3, "USD").unwrap().amount, "0.015".parse().unwrap());
}

#[test]
fn revenue_is_reported_per_currency() {
    let (m, _db) = common::manager_with(rates());
    m.record_payment("a", "pi_1", 1000, "EUR").unwrap();
    m.record_payment("b", "pi_2", 500, "USD").unwrap();
    m.record_payment("b", "pi_3", 700, "JPY").unwrap();
    m.reverse_payment("pi_1", Some(250), None, Some("re_1")).unwrap();
    m.reverse_payment("pi_3", None, None, Some("dp_1")).unwrap();
    m.reinstate_reversal("dp_1", None).unwrap();
    let r = m.report().unwrap();
    let expected: BTreeMap<String, i64> =
        [("EUR".to_string(), 750), ("JPY".to_string(), 700), ("USD".to_string(), 500)].into();
    assert_eq!(r.revenue_minor_by_currency, expected);
    assert_eq!(r.revenue_usd_minor, 500);
    assert_eq!(r.revenue_per_paying_user_usd_minor, 250);
    assert_eq!(r.paying_users, 2);
    // Reinstated credits are not purchased credits.
    assert_eq!(r.credits_purchased, credits(11_000 + 5000 + 5250));
}

// ----- reinstatement ----------------------------------------------------------

#[test]
fn a_reinstatement_restores_one_reversal_exactly_once() {
    let (m, _db) = common::manager();
    assert_eq!(err_code(m.reinstate_reversal("dp_none", None)), ErrorCode::NotFound);
    assert_eq!(err_code(m.reinstate_reversal("", None)), ErrorCode::InvalidArgument);
    m.record_payment("u", "pi_1", 1000, "USD").unwrap();
    m.reverse_payment("pi_1", Some(300), Some("dispute"), Some("dp_1")).unwrap();
    assert_eq!(balance(&m, "u"), credits(7000));
    let r = m.reinstate_reversal("dp_1", Some("won")).unwrap();
    assert_eq!(r.kind, EntryKind::Reinstatement);
    assert_eq!(r.amount, credits(3000));
    assert_eq!((r.amount_minor, r.currency.as_deref()), (Some(300), Some("USD")));
    assert_eq!(r.reference.as_deref(), Some("pi_1"));
    assert_eq!(r.idempotency_key.as_deref(), Some("reinstatement:dp_1"));
    assert_eq!(balance(&m, "u"), credits(10_000));
    // Replays (a webhook delivered again) change nothing, nor does the reversal again.
    let again = m.reinstate_reversal("dp_1", None).unwrap();
    assert!(again.replayed);
    assert_eq!(again.id, r.id);
    assert!(m.reverse_payment("pi_1", Some(300), None, Some("dp_1")).unwrap().replayed);
    assert_eq!(balance(&m, "u"), credits(10_000));
    // Not a purchase: lifetime purchased and the purchase counter stay.
    assert_eq!(m.account("u").unwrap().lifetime_purchased, credits(10_000));
    assert_eq!(common::metric(&m, "purchases_total"), 1);
    // The whole payment may be reversed again, and no more.
    let rest = m.reverse_payment("pi_1", None, None, Some("re_1")).unwrap();
    assert_eq!((rest.amount_minor, rest.amount), (Some(1000), credits(-10_000)));
    assert_eq!(err_code(m.reverse_payment("pi_1", Some(1), None, Some("re_2"))), ErrorCode::InvalidArgument);
    assert_eq!(balance(&m, "u"), Credits::ZERO);
    assert_audit_ok(&m);
}

#[test]
fn a_reversal_without_its_own_id_is_reinstated_by_its_payment_id() {
    let (m, _db) = common::manager();
    m.record_payment("u", "pi_1", 500, "USD").unwrap();
    m.deduct_credits("u", credits(4000), &common::NO_OPTS).unwrap();
    m.reverse_payment("pi_1", None, None, None).unwrap();
    assert_eq!(balance(&m, "u"), credits(-4000));
    m.reinstate_reversal("pi_1", None).unwrap();
    assert_eq!(balance(&m, "u"), credits(1000));
    // The reinstated credits form a grant again: the account audits clean.
    assert_audit_ok(&m);
}

#[test]
fn concurrent_reinstatements_credit_once() {
    let (url, _db) = common::shared_url();
    let m = common::open(&url, Config::new());
    m.record_payment("u", "pi_1", 1000, "USD").unwrap();
    m.reverse_payment("pi_1", None, None, Some("dp_1")).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let m = common::open(&url, Config::new());
            std::thread::spawn(move || m.reinstate_reversal("dp_1", None).unwrap())
        })
        .collect();
    let entries: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(entries.iter().filter(|e| !e.replayed).count(), 1);
    assert!(entries.iter().all(|e| e.id == entries[0].id));
    assert_eq!(balance(&m, "u"), credits(10_000));
    assert_audit_ok(&m);
}

/// Partial reversals of one payment racing from several managers (hosts on
/// PostgreSQL): the manager locks the payment's account before it sums what
/// was already reversed, so each sees the others and together they never
/// take back more than the payment paid.
#[test]
fn concurrent_partial_reversals_never_exceed_the_payment() {
    let (url, _db) = common::shared_url();
    let m = common::open(&url, Config::new());
    m.record_payment("u", "pi_1", 100, "USD").unwrap();
    let start = std::sync::Arc::new(std::sync::Barrier::new(6));
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let (m, start) = (common::open(&url, Config::new()), start.clone());
            std::thread::spawn(move || {
                start.wait();
                m.reverse_payment("pi_1", Some(30), None, Some(&format!("dp_{i}")))
            })
        })
        .collect();
    let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let reversed: i64 = outcomes.iter().filter_map(|r| r.as_ref().ok()).map(|e| e.amount_minor.unwrap()).sum();
    assert_eq!(reversed, 90, "three parts of 30 fit in 100: {outcomes:?}");
    for e in outcomes.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    }
    assert_eq!(balance(&m, "u"), credits(100));
    assert_audit_ok(&m);
}

// ----- operator events --------------------------------------------------------

#[test]
fn record_event_takes_only_host_kinds() {
    let (m, _db) = common::manager();
    let mut data = serde_json::Map::new();
    data.insert("event_id".into(), "evt_1".into());
    let id = m.record_event(EventKind::PaymentUnmapped, &data).unwrap();
    // On PostgreSQL an event shows once every older transaction of the
    // server has finished (tests on other databases run alongside).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut events = m.events(0, 10).unwrap();
    while events.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
        events = m.events(0, 10).unwrap();
    }
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].id, events[0].kind, events[0].user_id.as_str()), (id, EventKind::PaymentUnmapped, ""));
    assert_eq!(events[0].data["event_id"], "evt_1");
    assert_eq!(events[0].kind.as_str(), "payment.unmapped");
    assert_eq!(err_code(m.record_event(EventKind::FirstPurchase, &data)), ErrorCode::InvalidArgument);
    data.insert("big".into(), "x".repeat(100_000).into());
    assert_eq!(err_code(m.record_event(EventKind::PaymentUnmapped, &data)), ErrorCode::InvalidArgument);
}

#[test]
fn the_audit_checks_reinstatements_against_their_reversals() {
    let (m, db) = common::manager();
    m.record_payment("u", "pi_1", 1000, "USD").unwrap();
    m.reverse_payment("pi_1", Some(400), None, Some("dp_1")).unwrap();
    m.reinstate_reversal("dp_1", None).unwrap();
    m.reverse_payment("pi_1", None, None, Some("re_1")).unwrap();
    assert_audit_ok(&m);
    // SQLite only: tamper with the money of the reinstatement (not the balance).
    let Some(path) = db.sqlite_path() else { return };
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute("UPDATE creditgate_entries SET amount_minor = 300 WHERE kind = 'reinstatement'", []).unwrap();
    let mut problems: Vec<String> = m.audit().unwrap().mismatches.into_iter().map(|x| x.problem).collect();
    problems.sort();
    assert_eq!(problems, ["payment_over_reversed", "reinstatement_mismatch"]);
}
