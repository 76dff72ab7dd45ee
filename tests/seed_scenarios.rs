//! The seed's four acceptance scenarios (docs/reference.md), as one readable story,
//! plus the extras the seed promises: later keys need only 1 credit, a legacy
//! key keeps working and is charged, a duplicated payment webhook credits
//! once, and a refunded payment takes its credits back. The audit must
//! balance after every scenario.

mod common;

use common::{assert_audit_ok, credits, micros, tokens};
use creditgate::{Credits, EntryKind, Error, ErrorCode, KeyRef};

#[test]
fn seed_scenarios() {
    let (m, _db) = common::manager();
    let user = "user-42";

    // Scenario 1: a new user tries to generate an API key → 402.
    let eligibility = m.can_generate_api_key(user).unwrap();
    assert!(!eligibility.allowed);
    assert!(eligibility.is_first_key);
    assert_eq!(eligibility.required, credits(5000));
    assert_eq!(eligibility.available, Credits::ZERO);
    let err = m.create_api_key(user, Some("prod")).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InsufficientCredits);
    assert_eq!(err.http_status(), 402);
    match err {
        Error::InsufficientCredits { required, available, .. } => {
            assert_eq!(required, credits(5000));
            assert_eq!(available, Credits::ZERO);
        }
        other => panic!("expected InsufficientCredits, got {other:?}"),
    }
    assert!(m.list_api_keys(user).unwrap().is_empty(), "a denied key must not be stored");
    assert_audit_ok(&m);

    // Scenario 2: the user pays $5 (500 cents) → 5,000 credits → the key is generated.
    let purchase = m.record_payment(user, "pi_seed_1", 500, "USD").unwrap();
    assert_eq!(purchase.kind, EntryKind::Purchase);
    assert_eq!(purchase.amount, credits(5000));
    assert_eq!(purchase.amount_minor, Some(500));
    assert_eq!(purchase.currency.as_deref(), Some("USD"));
    assert_eq!(m.get_balance(user).unwrap(), credits(5000));
    let eligibility = m.can_generate_api_key(user).unwrap();
    assert!(eligibility.allowed && eligibility.is_first_key);
    let key = m.create_api_key(user, Some("prod")).unwrap();
    assert_eq!(key.user_id, user);
    assert!(key.secret.expose().starts_with("sk_"));
    assert_eq!(m.get_balance(user).unwrap(), credits(5000), "creating a key costs nothing");
    assert_audit_ok(&m);

    // Scenario 3: calls with the key → the balance drops by tokens/1000 credits each.
    let secret = key.secret.expose();
    let mut expected = credits(5000);
    for (i, n) in [1000_i64, 2500, 1, 0, 999_999].into_iter().enumerate() {
        let v = m.verify_api_key_credits(secret, credits(1)).unwrap();
        assert_eq!(v.user_id, user);
        assert_eq!(v.key_id, key.key_id);
        assert_eq!(v.available, expected);
        let request = format!("req-{i}");
        let charge = m.record_usage(KeyRef::Secret(secret), tokens(n), Some(&request)).unwrap();
        // 1 credit per 1,000 tokens = 1,000 micro-credits per token.
        let cost = micros(n * 1000);
        expected = expected.checked_sub(cost).unwrap();
        assert_eq!(charge.charged, cost, "{n} tokens");
        assert_eq!(charge.tokens, n);
        assert_eq!(charge.balance, expected);
        assert!(!charge.overdraft);
        assert!(!charge.replayed);
        assert_eq!(m.get_balance(user).unwrap(), expected);
    }
    // 5000 − (1 + 2.5 + 0.001 + 0 + 999.999) = 3996.5
    assert_eq!(expected, "3996.5".parse().unwrap());
    assert_audit_ok(&m);

    // Scenario 4: use the key until credits run low → the next call gets 402.
    let mut calls = 0;
    loop {
        match m.verify_api_key_credits(secret, credits(1)) {
            Ok(_) => {
                m.record_usage(KeyRef::Secret(secret), tokens(400_000), None).unwrap();
                calls += 1;
            }
            Err(e) => {
                assert_eq!(e.code(), ErrorCode::InsufficientCredits);
                assert_eq!(e.http_status(), 402);
                break;
            }
        }
        assert!(calls < 100, "the balance never ran low");
    }
    // 3996.5 credits at 400 credits a call: 9 calls leave 396.5, the 10th overdraws.
    assert_eq!(calls, 10);
    let balance = m.get_balance(user).unwrap();
    assert_eq!(balance, "-3.5".parse().unwrap());
    let last = m.transactions(user, 1, None).unwrap().remove(0);
    assert_eq!(last.kind, EntryKind::Usage);
    assert_eq!(last.balance_after, balance);
    assert_audit_ok(&m);

    // Later keys need only 1 credit: pay $0.05 (50 credits) and get a second key.
    let err = m.create_api_key(user, Some("dev")).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InsufficientCredits, "a negative balance gets no key");
    m.record_payment(user, "pi_seed_2", 5, "usd").unwrap();
    assert_eq!(m.get_balance(user).unwrap(), "46.5".parse().unwrap());
    let eligibility = m.can_generate_api_key(user).unwrap();
    assert!(eligibility.allowed);
    assert!(!eligibility.is_first_key);
    assert_eq!(eligibility.required, credits(1));
    let dev = m.create_api_key(user, Some("dev")).unwrap();
    m.verify_api_key_credits(dev.secret.expose(), credits(1)).unwrap();
    assert_eq!(m.list_api_keys(user).unwrap().len(), 2);
    assert_audit_ok(&m);

    // A legacy key (issued before the library) keeps working and is charged.
    let legacy_user = "legacy-7";
    let legacy_secret = "old-gateway-key-0123456789";
    m.add_credits(legacy_user, credits(10), EntryKind::Adjustment, &common::NO_OPTS).unwrap();
    let info = m.import_api_key(legacy_user, Some(legacy_secret), None, Some("from v1")).unwrap();
    assert!(info.legacy);
    let v = m.verify_api_key_credits(legacy_secret, credits(1)).unwrap();
    assert_eq!(v.user_id, legacy_user);
    assert_eq!(v.key_id, info.key_id);
    let charge = m.record_usage(KeyRef::Secret(legacy_secret), tokens(3000), Some("legacy-req")).unwrap();
    assert_eq!(charge.charged, credits(3));
    assert_eq!(m.get_balance(legacy_user).unwrap(), credits(7));
    // An imported key is not the user's first key: that one still needs 5,000.
    assert!(m.can_generate_api_key(legacy_user).unwrap().is_first_key);
    assert_audit_ok(&m);

    // A duplicated payment webhook credits once.
    let buyer = "buyer-1";
    let first = m.record_payment(buyer, "pi_dup", 1000, "USD").unwrap();
    let again = m.record_payment(buyer, "pi_dup", 1000, "USD").unwrap();
    assert!(!first.replayed);
    assert!(again.replayed);
    assert_eq!(again.id, first.id);
    assert_eq!(m.get_balance(buyer).unwrap(), credits(10_000));
    assert_eq!(m.transactions(buyer, 50, None).unwrap().len(), 1);
    assert_audit_ok(&m);

    // A refunded payment takes its credits back.
    let reversal = m.reverse_payment("pi_dup", None, Some("customer refund"), None).unwrap();
    assert_eq!(reversal.kind, EntryKind::Reversal);
    assert_eq!(reversal.user_id, buyer);
    assert_eq!(reversal.amount, credits(-10_000));
    assert_eq!(reversal.amount_minor, Some(1000));
    assert_eq!(m.get_balance(buyer).unwrap(), Credits::ZERO);
    let report = m.report().unwrap();
    // $5 + $0.05 from user-42; buyer-1's $10 was refunded.
    assert_eq!(report.revenue_usd_minor, 505);
    assert_audit_ok(&m);
}
