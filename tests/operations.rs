//! Every operation of docs/reference.md, its success path and its error paths (§5).
//! Each test gets a fresh, empty ledger from `common` (backend-neutral);
//! the few SQLite-specific checks say so and skip on other backends.

mod common;

use common::{
    NO_OPTS, assert_audit_ok, credits, err_code, grant, io_tokens, key_for, metric, micros, tokens, with_key,
};
use creditgate::{
    Config, CreditManager, Credits, EntryId, EntryKind, EntryOptions, Error, ErrorCode, HoldAmount, HoldId, KeyId,
    KeyRef, Settlement, Usage,
};
use std::time::Duration;

fn balance(m: &CreditManager, user: &str) -> Credits {
    m.get_balance(user).unwrap()
}

fn entry_count(m: &CreditManager, user: &str) -> usize {
    m.transactions(user, 1000, None).unwrap().len()
}

fn dec(s: &str) -> Credits {
    s.parse().unwrap()
}

// ----- errors ---------------------------------------------------------------

#[test]
fn error_codes_have_their_http_status() {
    let table = [
        (ErrorCode::InsufficientCredits, "insufficient_credits", 402, 1),
        (ErrorCode::InvalidApiKey, "invalid_api_key", 401, 2),
        (ErrorCode::LimitReached, "limit_reached", 403, 3),
        (ErrorCode::NotFound, "not_found", 404, 4),
        (ErrorCode::IdempotencyConflict, "idempotency_conflict", 409, 5),
        (ErrorCode::InvalidArgument, "invalid_argument", 400, 6),
        (ErrorCode::Storage, "storage", 503, 7),
        (ErrorCode::Internal, "internal", 500, 8),
    ];
    for (code, name, status, value) in table {
        assert_eq!(code.as_str(), name);
        assert_eq!(code.http_status(), status);
        assert_eq!(code as u32, value);
    }
    let e = Error::InsufficientCredits {
        required: credits(5000),
        available: credits(3),
        limit_source: creditgate::LimitSource::Account,
    };
    assert_eq!(e.http_status(), 402);
    assert_eq!(e.to_string(), "insufficient credits: 5000 required, 3 available");
}

// ----- add_credits ------------------------------------------------------------

#[test]
fn add_credits_kinds_and_entry_fields() {
    let (m, _db) = common::manager();
    let mut meta = serde_json::Map::new();
    meta.insert("campaign".into(), serde_json::json!("spring"));
    let opts = EntryOptions { idempotency_key: Some("grant-1"), reference: Some("ticket-9"), metadata: Some(&meta) };
    let e = m.add_credits("u", dec("1.5"), EntryKind::Grant, &opts).unwrap();
    assert_eq!(e.kind, EntryKind::Grant);
    assert_eq!(e.amount, micros(1_500_000));
    assert_eq!(e.balance_after, dec("1.5"));
    assert_eq!(e.seq, 1);
    assert_eq!(e.user_id, "u");
    assert_eq!(e.idempotency_key.as_deref(), Some("grant-1"));
    assert_eq!(e.reference.as_deref(), Some("ticket-9"));
    assert_eq!(e.metadata.as_ref(), Some(&meta));
    assert_eq!(e.id.0.get_version_num(), 7, "entry ids are UUID v7");
    assert!(!e.replayed);

    for (kind, amount) in [(EntryKind::Purchase, 10), (EntryKind::Refund, 2), (EntryKind::Adjustment, 3)] {
        let e = m.add_credits("u", credits(amount), kind, &NO_OPTS).unwrap();
        assert_eq!(e.kind, kind);
    }
    assert_eq!(balance(&m, "u"), dec("16.5"));
    // A negative adjustment is allowed, and strict.
    let e = m.add_credits("u", credits(-16), EntryKind::Adjustment, &NO_OPTS).unwrap();
    assert_eq!(e.balance_after, dec("0.5"));
    assert_eq!(
        err_code(m.add_credits("u", credits(-1), EntryKind::Adjustment, &NO_OPTS)),
        ErrorCode::InsufficientCredits
    );
    assert_eq!(balance(&m, "u"), dec("0.5"));

    // The stored entry is what the call returned.
    let stored = m.transactions("u", 1000, None).unwrap();
    assert_eq!(stored.len(), 5);
    let first = stored.last().unwrap();
    assert_eq!(first.metadata.as_ref(), Some(&meta));
    assert_eq!(first.reference.as_deref(), Some("ticket-9"));
    assert_audit_ok(&m);
}

#[test]
fn add_credits_rejects_bad_input_and_leaves_the_ledger_as_it_was() {
    let (m, _db) = common::manager();
    grant(&m, "u", credits(1));
    let inv = ErrorCode::InvalidArgument;
    for kind in [EntryKind::Usage, EntryKind::Deduct, EntryKind::Reversal] {
        assert_eq!(err_code(m.add_credits("u", credits(1), kind, &NO_OPTS)), inv, "{kind}");
    }
    for kind in [EntryKind::Grant, EntryKind::Purchase, EntryKind::Refund] {
        assert_eq!(err_code(m.add_credits("u", Credits::ZERO, kind, &NO_OPTS)), inv);
        assert_eq!(err_code(m.add_credits("u", credits(-1), kind, &NO_OPTS)), inv);
    }
    assert_eq!(err_code(m.add_credits("u", Credits::ZERO, EntryKind::Adjustment, &NO_OPTS)), inv);
    // Any single amount is at most 10^12 credits.
    let max = Credits::from_micros(creditgate::MAX_AMOUNT_MICROS);
    let too_big = Credits::from_micros(creditgate::MAX_AMOUNT_MICROS + 1);
    assert_eq!(err_code(m.add_credits("u", too_big, EntryKind::Grant, &NO_OPTS)), inv);
    assert_eq!(err_code(m.add_credits("u", too_big.checked_neg().unwrap(), EntryKind::Adjustment, &NO_OPTS)), inv);
    // User ids: 1..=255 bytes, no NUL.
    let long = "x".repeat(256);
    for user in ["", long.as_str(), "a\0b"] {
        assert_eq!(err_code(m.add_credits(user, credits(1), EntryKind::Grant, &NO_OPTS)), inv);
        assert_eq!(err_code(m.get_balance(user)), inv);
    }
    let ok_user = "é".repeat(127); // 254 bytes
    m.add_credits(&ok_user, credits(1), EntryKind::Grant, &NO_OPTS).unwrap();
    // Strings: at most 255 bytes, no NUL.
    let opts = EntryOptions { reference: Some(&long), ..NO_OPTS };
    assert_eq!(err_code(m.add_credits("u", credits(1), EntryKind::Grant, &opts)), inv);
    let opts = EntryOptions { idempotency_key: Some(""), ..NO_OPTS };
    assert_eq!(err_code(m.add_credits("u", credits(1), EntryKind::Grant, &opts)), inv);
    // Metadata: at most 4 KiB of JSON.
    let mut meta = serde_json::Map::new();
    meta.insert("blob".into(), serde_json::json!("y".repeat(4096)));
    let opts = EntryOptions { metadata: Some(&meta), ..NO_OPTS };
    assert_eq!(err_code(m.add_credits("u", credits(1), EntryKind::Grant, &opts)), inv);
    // Balances never overflow: checked, InvalidArgument, nothing written.
    for _ in 0..9 {
        m.add_credits("rich", max, EntryKind::Grant, &NO_OPTS).unwrap();
    }
    assert_eq!(err_code(m.add_credits("rich", max, EntryKind::Grant, &NO_OPTS)), inv);
    assert_eq!(balance(&m, "rich"), Credits::from_micros(creditgate::MAX_AMOUNT_MICROS * 9));

    assert_eq!(balance(&m, "u"), credits(1));
    assert_eq!(entry_count(&m, "u"), 1);
    assert_audit_ok(&m);
}

// ----- idempotency ----------------------------------------------------------------

#[test]
fn idempotency_replays_the_original_and_conflicts_on_other_parameters() {
    let (m, _db) = common::manager();
    let first = m.add_credits("u", credits(10), EntryKind::Grant, &with_key("k1")).unwrap();
    // Same user, kind and amount: the original entry, marked replayed; nothing changes.
    let opts = EntryOptions { idempotency_key: Some("k1"), reference: Some("other ref"), metadata: None };
    let again = m.add_credits("u", credits(10), EntryKind::Grant, &opts).unwrap();
    assert!(again.replayed);
    assert_eq!(again.id, first.id);
    assert_eq!(again.seq, first.seq);
    assert_eq!(again.balance_after, first.balance_after);
    assert_eq!(again.reference, None, "the original entry is returned, not the new reference");
    assert_eq!(balance(&m, "u"), credits(10));
    assert_eq!(entry_count(&m, "u"), 1);

    // Other amount or kind: 409.
    let e = m.add_credits("u", credits(11), EntryKind::Grant, &with_key("k1")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::IdempotencyConflict);
    assert_eq!(e.http_status(), 409);
    assert_eq!(
        err_code(m.add_credits("u", credits(10), EntryKind::Refund, &with_key("k1"))),
        ErrorCode::IdempotencyConflict
    );
    assert_eq!(err_code(m.deduct_credits("u", credits(10), &with_key("k1"))), ErrorCode::IdempotencyConflict);

    // Keys are scoped per user.
    let other = m.add_credits("v", credits(10), EntryKind::Grant, &with_key("k1")).unwrap();
    assert!(!other.replayed);
    assert_ne!(other.id, first.id);

    // Deducts replay too.
    let d = m.deduct_credits("u", credits(4), &with_key("d1")).unwrap();
    let d2 = m.deduct_credits("u", credits(4), &with_key("d1")).unwrap();
    assert!(d2.replayed);
    assert_eq!(d2.id, d.id);
    assert_eq!(balance(&m, "u"), credits(6));

    // Keys are 1..=255 bytes.
    let long = "k".repeat(256);
    assert_eq!(
        err_code(m.add_credits("u", credits(1), EntryKind::Grant, &with_key(&long))),
        ErrorCode::InvalidArgument
    );
    m.add_credits("u", credits(1), EntryKind::Grant, &with_key(&"k".repeat(255))).unwrap();
    assert_audit_ok(&m);
}

#[test]
fn reserved_key_prefixes_are_rejected() {
    let (m, _db) = common::manager();
    grant(&m, "u", credits(100));
    for prefix in ["payment:", "reversal:", "reinstatement:", "usage:", "import:"] {
        let key = format!("{prefix}x");
        assert_eq!(
            err_code(m.add_credits("u", credits(1), EntryKind::Grant, &with_key(&key))),
            ErrorCode::InvalidArgument
        );
        assert_eq!(err_code(m.deduct_credits("u", credits(1), &with_key(&key))), ErrorCode::InvalidArgument);
    }
    // Only the prefix is reserved.
    m.add_credits("u", credits(1), EntryKind::Grant, &with_key("my-payment:1")).unwrap();
    assert_eq!(balance(&m, "u"), credits(101));
}

#[test]
fn a_failed_call_does_not_use_up_its_key() {
    let (m, _db) = common::manager();
    grant(&m, "u", credits(5));
    let e = m.deduct_credits("u", credits(8), &with_key("order-1")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InsufficientCredits);
    grant(&m, "u", credits(5));
    let d = m.deduct_credits("u", credits(8), &with_key("order-1")).unwrap();
    assert!(!d.replayed);
    assert_eq!(balance(&m, "u"), credits(2));
    assert_audit_ok(&m);
}

// ----- record_payment / reverse_payment -----------------------------------------------

#[test]
fn record_payment_credits_once_and_keeps_the_money() {
    let (m, _db) = common::manager();
    let e = m.record_payment("u", "pi_1", 500, "usd").unwrap();
    assert_eq!(e.kind, EntryKind::Purchase);
    assert_eq!(e.amount, credits(5000));
    assert_eq!(e.amount_minor, Some(500));
    assert_eq!(e.currency.as_deref(), Some("USD"));
    assert_eq!(e.reference.as_deref(), Some("pi_1"));
    assert_eq!(e.idempotency_key.as_deref(), Some("payment:pi_1"));
    // 1 cent = 10 credits, exactly.
    assert_eq!(m.record_payment("u", "pi_2", 1, "USD").unwrap().amount, credits(10));

    // The webhook delivered twice (any currency case) credits once.
    let again = m.record_payment("u", "pi_1", 500, "USD").unwrap();
    assert!(again.replayed);
    assert_eq!(again.id, e.id);
    assert_eq!(balance(&m, "u"), credits(5010));

    // A payment id is global: another user or amount is a conflict.
    assert_eq!(err_code(m.record_payment("v", "pi_1", 500, "USD")), ErrorCode::IdempotencyConflict);
    assert_eq!(err_code(m.record_payment("u", "pi_1", 501, "USD")), ErrorCode::IdempotencyConflict);
    assert_eq!(balance(&m, "v"), Credits::ZERO);

    let inv = ErrorCode::InvalidArgument;
    assert_eq!(err_code(m.record_payment("u", "pi_3", 500, "EUR")), inv);
    assert_eq!(err_code(m.record_payment("u", "pi_3", 0, "USD")), inv);
    assert_eq!(err_code(m.record_payment("u", "pi_3", -5, "USD")), inv);
    assert_eq!(err_code(m.record_payment("u", "", 5, "USD")), inv);
    // 10^12 credits is the largest amount: $10^9 = 10^11 cents.
    m.record_payment("whale", "pi_max", 100_000_000_000, "USD").unwrap();
    assert_eq!(err_code(m.record_payment("whale", "pi_over", 100_000_000_001, "USD")), inv);
    assert_eq!(err_code(m.record_payment("whale", "pi_huge", i64::MAX, "USD")), inv);
    assert_eq!(balance(&m, "u"), credits(5010));
    assert_audit_ok(&m);
}

#[test]
fn reverse_payment_takes_back_what_the_payment_bought() {
    let (m, _db) = common::manager();
    assert_eq!(err_code(m.reverse_payment("pi_unknown", None, None, None)), ErrorCode::NotFound);
    m.record_payment("u", "pi_1", 1000, "USD").unwrap();
    // Not strict: the money is gone, so the balance may go negative.
    m.deduct_credits("u", credits(9000), &NO_OPTS).unwrap();
    let r = m.reverse_payment("pi_1", None, Some("chargeback"), None).unwrap();
    assert_eq!(r.kind, EntryKind::Reversal);
    assert_eq!(r.amount, credits(-10_000));
    assert_eq!(r.amount_minor, Some(1000));
    assert_eq!(r.currency.as_deref(), Some("USD"));
    assert_eq!(r.reference.as_deref(), Some("pi_1"));
    assert_eq!(r.idempotency_key.as_deref(), Some("reversal:pi_1"));
    let reason = r.metadata.as_ref().and_then(|m| m.get("reason")).and_then(|v| v.as_str());
    assert_eq!(reason, Some("chargeback"));
    assert_eq!(balance(&m, "u"), credits(-9000));
    // Same reversal again: replayed, nothing changes.
    let again = m.reverse_payment("pi_1", None, None, None).unwrap();
    assert!(again.replayed);
    assert_eq!(again.id, r.id);
    // A new reversal with nothing left to reverse.
    assert_eq!(err_code(m.reverse_payment("pi_1", Some(1), None, Some("re_2"))), ErrorCode::InvalidArgument);
    assert_eq!(err_code(m.reverse_payment("pi_1", None, None, Some("re_3"))), ErrorCode::InvalidArgument);
    assert_eq!(balance(&m, "u"), credits(-9000));
    assert_audit_ok(&m);
}

#[test]
fn partial_reversals_sum_exactly_to_the_purchase() {
    let (m, _db) = common::manager();
    m.record_payment("u", "pi_1", 1000, "USD").unwrap();
    let a = m.reverse_payment("pi_1", Some(333), None, Some("re_a")).unwrap();
    assert_eq!(a.amount, credits(-3330));
    assert_eq!(a.amount_minor, Some(333));
    assert_eq!(a.idempotency_key.as_deref(), Some("reversal:re_a"));
    // The same refund id again (webhook retry): replayed.
    assert!(m.reverse_payment("pi_1", Some(333), None, Some("re_a")).unwrap().replayed);
    // The same refund id with another amount: conflict.
    assert_eq!(err_code(m.reverse_payment("pi_1", Some(334), None, Some("re_a"))), ErrorCode::IdempotencyConflict);
    m.reverse_payment("pi_1", Some(333), None, Some("re_b")).unwrap();
    // More than remains: refused, nothing written.
    assert_eq!(err_code(m.reverse_payment("pi_1", Some(335), None, Some("re_c"))), ErrorCode::InvalidArgument);
    assert_eq!(err_code(m.reverse_payment("pi_1", Some(0), None, Some("re_c"))), ErrorCode::InvalidArgument);
    assert_eq!(err_code(m.reverse_payment("pi_1", Some(-1), None, Some("re_c"))), ErrorCode::InvalidArgument);
    // The rest: exactly what remains.
    let last = m.reverse_payment("pi_1", None, None, Some("re_c")).unwrap();
    assert_eq!(last.amount_minor, Some(334));
    assert_eq!(last.amount, credits(-3340));
    assert_eq!(balance(&m, "u"), Credits::ZERO);
    assert_eq!(err_code(m.reverse_payment("pi_1", Some(1), None, Some("re_d"))), ErrorCode::InvalidArgument);

    // A reversal key used for one payment cannot be reused for another.
    m.record_payment("u", "pi_2", 100, "USD").unwrap();
    assert_eq!(err_code(m.reverse_payment("pi_2", None, None, Some("re_a"))), ErrorCode::IdempotencyConflict);
    let report = m.report().unwrap();
    assert_eq!(report.revenue_usd_minor, 100);
    assert_audit_ok(&m);
}

#[test]
fn a_reversal_uses_the_purchase_rate_not_todays() {
    let (url, _db) = common::shared_url();
    let then = common::open(&url, Config::new().credits_per_usd(1000).unwrap());
    then.record_payment("u", "pi_1", 1000, "USD").unwrap(); // 10,000 credits
    then.record_payment("u", "pi_2", 3, "USD").unwrap(); // 30 credits
    drop(then);
    let now = common::open(&url, Config::new().credits_per_usd(2000).unwrap());
    let part = now.reverse_payment("pi_1", Some(250), None, Some("re_1")).unwrap();
    assert_eq!(part.amount, credits(-2500));
    let rest = now.reverse_payment("pi_1", None, None, None).unwrap();
    assert_eq!(rest.amount, credits(-7500));
    // Thirds of 3 cents: each removes exactly 10 credits, all three sum to 30.
    for id in ["t1", "t2", "t3"] {
        assert_eq!(now.reverse_payment("pi_2", Some(1), None, Some(id)).unwrap().amount, credits(-10));
    }
    assert_eq!(balance(&now, "u"), Credits::ZERO);
    assert_audit_ok(&now);
}

// ----- deduct_credits -------------------------------------------------------------

#[test]
fn deduct_is_strict_against_available() {
    let (m, _db) = common::manager();
    assert_eq!(err_code(m.deduct_credits("nobody", micros(1), &NO_OPTS)), ErrorCode::InsufficientCredits);
    grant(&m, "u", credits(10));
    let e = m.deduct_credits("u", micros(10_000_001), &NO_OPTS).unwrap_err();
    match e {
        Error::InsufficientCredits { required, available, .. } => {
            assert_eq!(required, micros(10_000_001));
            assert_eq!(available, credits(10));
        }
        other => panic!("expected InsufficientCredits, got {other:?}"),
    }
    let d = m.deduct_credits("u", credits(4), &NO_OPTS).unwrap();
    assert_eq!(d.kind, EntryKind::Deduct);
    assert_eq!(d.amount, credits(-4));
    assert_eq!(d.balance_after, credits(6));
    // Against available: a hold lowers what a deduct may take.
    let (key, _) = key_for(&m, "u");
    m.reserve(&key, HoldAmount::Credits(credits(5)), 600, None).unwrap();
    assert_eq!(err_code(m.deduct_credits("u", micros(1_000_001), &NO_OPTS)), ErrorCode::InsufficientCredits);
    m.deduct_credits("u", credits(1), &NO_OPTS).unwrap();
    assert_eq!(balance(&m, "u"), credits(5));
    let a = m.account("u").unwrap();
    assert_eq!(a.available, Credits::ZERO);
    assert_eq!(err_code(m.deduct_credits("u", micros(1), &NO_OPTS)), ErrorCode::InsufficientCredits);
    // Amount limits.
    assert_eq!(err_code(m.deduct_credits("u", Credits::ZERO, &NO_OPTS)), ErrorCode::InvalidArgument);
    assert_eq!(err_code(m.deduct_credits("u", credits(-1), &NO_OPTS)), ErrorCode::InvalidArgument);
    assert_eq!(balance(&m, "u"), credits(5));
    assert_audit_ok(&m);
}

// ----- API keys ---------------------------------------------------------------------

#[test]
fn key_creation_is_gated_on_credits() {
    let (m, _db) = common::manager();
    let e = m.can_generate_api_key("u").unwrap();
    assert_eq!((e.allowed, e.is_first_key, e.required, e.available), (false, true, credits(5000), Credits::ZERO));
    // can_generate_api_key writes nothing.
    assert_eq!(m.account("u").unwrap().created_at, None);
    assert_eq!(m.report().unwrap().key_generation_attempts, 0);

    grant(&m, "u", dec("4999.999999"));
    assert_eq!(err_code(m.create_api_key("u", None)), ErrorCode::InsufficientCredits);
    grant(&m, "u", micros(1));
    let k = m.create_api_key("u", Some("first")).unwrap();
    assert_eq!(k.name.as_deref(), Some("first"));
    assert_eq!(k.prefix, &k.secret.expose()[..8]);
    assert_eq!(k.secret.expose().len(), 52, "sk_ + 43 base62 + 6 checksum");
    assert_eq!(k.key_id.0.get_version_num(), 7);
    // Later keys need available ≥ 1 credit.
    m.deduct_credits("u", dec("4999.000001"), &NO_OPTS).unwrap();
    let e = m.can_generate_api_key("u").unwrap();
    assert_eq!((e.allowed, e.is_first_key, e.required, e.available), (false, false, credits(1), dec("0.999999")));
    assert_eq!(err_code(m.create_api_key("u", None)), ErrorCode::InsufficientCredits);
    grant(&m, "u", micros(1));
    m.create_api_key("u", None).unwrap();
    // Revoking every key does not make the next one a first key again.
    for k in m.list_api_keys("u").unwrap() {
        m.revoke_api_key(k.key_id, None).unwrap();
    }
    let e = m.can_generate_api_key("u").unwrap();
    assert!(e.allowed && !e.is_first_key);
    assert!(m.account("u").unwrap().first_key_issued);
    // Holds count: available, not balance, is what the rule checks.
    let (key, _) = key_for(&m, "u");
    m.reserve(&key, HoldAmount::Credits(micros(1)), 600, None).unwrap();
    assert_eq!(err_code(m.create_api_key("u", None)), ErrorCode::InsufficientCredits);
    let bad_name = "n".repeat(256);
    assert_eq!(err_code(m.create_api_key("u", Some(&bad_name))), ErrorCode::InvalidArgument);
    assert_eq!(err_code(m.create_api_key("", None)), ErrorCode::InvalidArgument);
    assert_audit_ok(&m);
}

#[test]
fn min_credits_api_key_is_configurable_and_may_be_zero() {
    let (m, _db) = common::manager_with(Config::new().min_credits_api_key(Credits::ZERO).unwrap());
    let e = m.can_generate_api_key("u").unwrap();
    assert!(e.allowed && e.is_first_key);
    assert_eq!(e.required, Credits::ZERO);
    m.create_api_key("u", None).unwrap();
    // The second key still needs 1 credit.
    assert_eq!(err_code(m.create_api_key("u", None)), ErrorCode::InsufficientCredits);

    let (m, _db2) = common::manager_with(Config::new().min_credits_api_key(credits(10)).unwrap());
    grant(&m, "u", credits(10));
    m.create_api_key("u", None).unwrap();
}

#[test]
fn active_keys_are_limited_imported_ones_included() {
    let (m, _db) = common::manager_with(Config::new().max_active_keys_per_user(3).unwrap());
    grant(&m, "u", credits(5000));
    m.import_api_key("u", Some("legacy-secret-one"), None, None).unwrap();
    let a = m.create_api_key("u", None).unwrap();
    m.create_api_key("u", None).unwrap();
    let e = m.create_api_key("u", None).unwrap_err();
    match &e {
        Error::LimitReached { limit, .. } => assert_eq!(*limit, "max_active_keys_per_user"),
        other => panic!("expected LimitReached, got {other:?}"),
    }
    assert_eq!(e.http_status(), 403);
    assert_eq!(m.account("u").unwrap().active_keys, 3);
    // Revoked keys do not count.
    m.revoke_api_key(a.key_id, Some("u")).unwrap();
    m.create_api_key("u", None).unwrap();
    assert_eq!(err_code(m.create_api_key("u", None)), ErrorCode::LimitReached);
    // Another user is not affected.
    grant(&m, "v", credits(5000));
    m.create_api_key("v", None).unwrap();
    let report = m.report().unwrap();
    assert_eq!(report.key_generation_attempts, 6);
    assert_eq!(report.key_generation_successes, 4);
}

#[test]
fn revoke_list_and_verify() {
    let (m, _db) = common::manager();
    grant(&m, "u", credits(5000));
    let a = m.create_api_key("u", Some("a")).unwrap();
    let b = m.create_api_key("u", Some("b")).unwrap();
    m.verify_api_key_credits(a.secret.expose(), credits(1)).unwrap();

    // With a user id, another user's key is NotFound and stays active.
    assert_eq!(err_code(m.revoke_api_key(a.key_id, Some("mallory"))), ErrorCode::NotFound);
    m.verify_api_key_credits(a.secret.expose(), credits(1)).unwrap();
    assert_eq!(
        err_code(m.revoke_api_key(KeyId::parse("0190a0a0-0000-7000-8000-000000000000").unwrap(), None)),
        ErrorCode::NotFound
    );

    m.revoke_api_key(a.key_id, Some("u")).unwrap();
    let e = m.verify_api_key_credits(a.secret.expose(), credits(1)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidApiKey);
    assert_eq!(e.http_status(), 401);
    // Another handle on the same ledger sees the revocation at once.
    m.revoke_api_key(a.key_id, None).unwrap(); // twice: a no-op
    m.verify_api_key_credits(b.secret.expose(), credits(1)).unwrap();

    let keys = m.list_api_keys("u").unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].key_id, b.key_id, "newest first");
    assert_eq!(keys[1].key_id, a.key_id);
    assert_eq!(keys[1].name.as_deref(), Some("a"));
    assert_eq!(keys[1].prefix.as_deref(), Some(&a.secret.expose()[..8]));
    assert!(keys[1].revoked_at.is_some());
    assert!(keys[0].revoked_at.is_none());
    assert!(!keys[0].legacy);
    assert_eq!(keys[0].user_id, "u");
    assert!(m.list_api_keys("nobody").unwrap().is_empty());
    assert_eq!(m.account("u").unwrap().active_keys, 1);
}

#[test]
fn authenticate_checks_the_key_not_the_credits() {
    let (m, _db) = common::manager();
    let (key, key_id) = key_for(&m, "u");
    // Overdrawn: verify refuses even with min_credits 0; authenticate answers.
    m.record_usage(KeyRef::Secret(&key), tokens(2000), None).unwrap();
    assert_eq!(balance(&m, "u"), credits(-2));
    assert_eq!(err_code(m.verify_api_key_credits(&key, Credits::ZERO)), ErrorCode::InsufficientCredits);
    let ok_before = metric(&m, "verify_ok_total");
    let v = m.authenticate_api_key(&key).unwrap();
    assert_eq!((v.user_id.as_str(), v.key_id, v.available), ("u", key_id, credits(-2)));
    assert_eq!(metric(&m, "verify_ok_total"), ok_before + 1);
    // Holds lower available, as in verify.
    grant(&m, "u", credits(10));
    m.reserve(&key, HoldAmount::Credits(credits(3)), 60, None).unwrap();
    assert_eq!(m.authenticate_api_key(&key).unwrap().available, credits(5));
    // Malformed, unknown and revoked keys: InvalidApiKey, as verify.
    let invalid_before = metric(&m, "verify_invalid_key_total");
    assert_eq!(err_code(m.authenticate_api_key("sk_1234")), ErrorCode::InvalidApiKey);
    assert_eq!(err_code(m.authenticate_api_key("nobody-knows-this-key")), ErrorCode::InvalidApiKey);
    m.revoke_api_key(key_id, None).unwrap();
    let e = m.authenticate_api_key(&key).unwrap_err();
    assert_eq!((e.code(), e.http_status()), (ErrorCode::InvalidApiKey, 401));
    assert!(!e.to_string().contains(&key), "no secret in {e}");
    assert_eq!(metric(&m, "verify_invalid_key_total"), invalid_before + 3);
    // A legacy key of a user without credits authenticates at 0.
    m.import_api_key("legacy", Some("legacy-key-0123456789"), None, None).unwrap();
    assert_eq!(m.authenticate_api_key("legacy-key-0123456789").unwrap().available, Credits::ZERO);
}

#[test]
fn pool_size_is_the_setting_or_one_in_memory() {
    let (m, _db) = common::manager_with(Config::new().pool_size(3).unwrap());
    assert_eq!(m.pool_size(), 3);
    let mem = CreditManager::open(Config::new().database_url("sqlite:///:memory:")).unwrap();
    assert_eq!(mem.pool_size(), 1);
}

#[test]
fn revocation_is_seen_by_every_handle() {
    let (url, _db) = common::shared_url();
    let h1 = common::open(&url, Config::new());
    let h2 = common::open(&url, Config::new());
    grant(&h1, "u", credits(5000));
    let k = h1.create_api_key("u", None).unwrap();
    h2.verify_api_key_credits(k.secret.expose(), credits(1)).unwrap();
    h1.revoke_api_key(k.key_id, None).unwrap();
    assert_eq!(err_code(h2.verify_api_key_credits(k.secret.expose(), credits(1))), ErrorCode::InvalidApiKey);
}

#[test]
fn verify_rejects_malformed_unknown_and_poor_keys() {
    let (m, _db) = common::manager();
    grant(&m, "u", credits(5000));
    let k = m.create_api_key("u", None).unwrap();
    let secret = k.secret.expose().to_string();
    let bad = ErrorCode::InvalidApiKey;
    // Too short, too long, NUL.
    assert_eq!(err_code(m.verify_api_key_credits("sk_1234", credits(1))), bad);
    assert_eq!(err_code(m.verify_api_key_credits(&"x".repeat(513), credits(1))), bad);
    assert_eq!(err_code(m.verify_api_key_credits("sk_abc\0defghij", credits(1))), bad);
    // Our prefix and length, wrong checksum.
    let mut wrong = secret.clone().into_bytes();
    let i = 20;
    wrong[i] = if wrong[i] == b'a' { b'b' } else { b'a' };
    let wrong = String::from_utf8(wrong).unwrap();
    assert_eq!(err_code(m.verify_api_key_credits(&wrong, credits(1))), bad);
    // Unknown key of a legacy shape.
    assert_eq!(err_code(m.verify_api_key_credits("some-unknown-key", credits(1))), bad);

    // min_credits: 402 when available < min_credits; 0 is allowed.
    let v = m.verify_api_key_credits(&secret, credits(5000)).unwrap();
    assert_eq!((v.user_id.as_str(), v.key_id, v.available), ("u", k.key_id, credits(5000)));
    let e = m.verify_api_key_credits(&secret, micros(5_000_000_001)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InsufficientCredits);
    m.verify_api_key_credits(&secret, Credits::ZERO).unwrap();
    assert_eq!(err_code(m.verify_api_key_credits(&secret, credits(-1))), ErrorCode::InvalidArgument);
    m.deduct_credits("u", credits(5000), &NO_OPTS).unwrap();
    m.verify_api_key_credits(&secret, Credits::ZERO).unwrap();
    assert_eq!(err_code(m.verify_api_key_credits(&secret, micros(1))), ErrorCode::InsufficientCredits);
}

#[test]
fn legacy_keys_by_secret_and_by_hash() {
    let (m, _db) = common::manager();
    let inv = ErrorCode::InvalidArgument;
    // 8..=512 bytes, exactly one of secret and hash.
    assert_eq!(err_code(m.import_api_key("u", Some("short"), None, None)), inv);
    assert_eq!(err_code(m.import_api_key("u", Some(&"x".repeat(513)), None, None)), inv);
    assert_eq!(err_code(m.import_api_key("u", None, None, None)), inv);
    let sha = common::sha256_hex("legacy-by-hash-0001");
    assert_eq!(err_code(m.import_api_key("u", Some("legacy-key-0001"), Some(&sha), None)), inv);
    // A string our format check rejects (our prefix and length, bad checksum).
    let fake_ours = format!("sk_{}", "A".repeat(49));
    assert_eq!(err_code(m.import_api_key("u", Some(&fake_ours), None, None)), inv);
    // Hashes: 64 lowercase hex.
    assert_eq!(err_code(m.import_api_key("u", None, Some(&sha.to_uppercase()), None)), inv);
    assert_eq!(err_code(m.import_api_key("u", None, Some(&sha[..63]), None)), inv);
    assert!(m.list_api_keys("u").unwrap().is_empty());

    let by_secret = m.import_api_key("u", Some("legacy-key-0001"), None, Some("old")).unwrap();
    assert!(by_secret.legacy);
    assert_eq!(by_secret.name.as_deref(), Some("old"));
    // Display prefix of a legacy key: at most len/4 characters (15 / 4 = 3).
    assert_eq!(by_secret.prefix.as_deref(), Some("leg"));
    let by_hash = m.import_api_key("u", None, Some(&sha), None).unwrap();
    assert!(by_hash.legacy);
    assert_eq!(by_hash.prefix, None);

    grant(&m, "u", credits(10));
    assert_eq!(m.verify_api_key_credits("legacy-key-0001", credits(1)).unwrap().key_id, by_secret.key_id);
    assert_eq!(m.verify_api_key_credits("legacy-by-hash-0001", credits(1)).unwrap().key_id, by_hash.key_id);
    let c = m.record_usage(KeyRef::Secret("legacy-by-hash-0001"), tokens(2000), None).unwrap();
    assert_eq!(c.charged, credits(2));
    assert_eq!(balance(&m, "u"), credits(8));
    // Importing the same key again for the same user returns it; another user cannot take it.
    assert_eq!(m.import_api_key("u", Some("legacy-key-0001"), None, None).unwrap().key_id, by_secret.key_id);
    assert_eq!(err_code(m.import_api_key("v", Some("legacy-key-0001"), None, None)), ErrorCode::IdempotencyConflict);
    // Imported keys do not make the user a paying one.
    assert!(m.can_generate_api_key("u").unwrap().is_first_key);
    assert!(!m.account("u").unwrap().first_key_issued);
    assert_eq!(m.account("u").unwrap().active_keys, 2);
}

#[test]
fn legacy_keys_imported_by_hash_work_with_a_pepper() {
    let config = Config::new().api_key_pepper("a-server-side-pepper-value").unwrap();
    let (m, _db) = common::manager_with(config);
    let sha = common::sha256_hex("legacy-by-hash-0002");
    let k = m.import_api_key("u", None, Some(&sha), None).unwrap();
    let s = m.import_api_key("u", Some("legacy-by-secret-02"), None, None).unwrap();
    grant(&m, "u", credits(5000));
    let ours = m.create_api_key("u", None).unwrap();
    assert_eq!(m.verify_api_key_credits("legacy-by-hash-0002", credits(1)).unwrap().key_id, k.key_id);
    assert_eq!(m.verify_api_key_credits("legacy-by-secret-02", credits(1)).unwrap().key_id, s.key_id);
    assert_eq!(m.verify_api_key_credits(ours.secret.expose(), credits(1)).unwrap().key_id, ours.key_id);
    assert_eq!(err_code(m.verify_api_key_credits("legacy-by-hash-0003", credits(1))), ErrorCode::InvalidApiKey);
}

// ----- record_usage ---------------------------------------------------------------------

#[test]
fn record_usage_charges_and_may_overdraw() {
    let (m, _db) = common::manager();
    let (key, key_id) = key_for(&m, "u");
    grant(&m, "u", credits(3));
    let c = m.record_usage(KeyRef::Secret(&key), tokens(2000), Some("r1")).unwrap();
    assert_eq!((c.charged, c.balance, c.tokens, c.overdraft, c.replayed), (credits(2), credits(1), 2000, false, false));
    assert_eq!(c.user_id, "u");
    let e = m.transactions("u", 1, None).unwrap().remove(0);
    assert_eq!(e.id, c.entry_id);
    assert_eq!(e.kind, EntryKind::Usage);
    assert_eq!(e.api_key_id, Some(key_id));
    assert_eq!(e.input_tokens, Some(2000));
    assert_eq!(e.output_tokens, Some(0));
    assert_eq!(e.idempotency_key.as_deref(), Some("usage:r1"));

    // Exactly to zero: not an overdraft.
    let c = m.record_usage(KeyRef::Id(key_id), tokens(1000), None).unwrap();
    assert_eq!(c.balance, Credits::ZERO);
    assert!(!c.overdraft);
    // Below zero: still recorded, flagged, counted; the next verify is a 402.
    let c = m.record_usage(KeyRef::Secret(&key), tokens(1), Some("r2")).unwrap();
    assert_eq!(c.balance, micros(-1000));
    assert!(c.overdraft);
    assert_eq!(metric(&m, "usage_overdrafts_total"), 1);
    assert_eq!(err_code(m.verify_api_key_credits(&key, Credits::ZERO)), ErrorCode::InsufficientCredits);

    // Replay: same request id and tokens → the original result, nothing changes.
    let again = m.record_usage(KeyRef::Secret(&key), tokens(2000), Some("r1")).unwrap();
    assert!(again.replayed);
    assert_eq!(again.balance, credits(1), "the original result");
    assert_eq!(again.charged, credits(2));
    assert_eq!(balance(&m, "u"), micros(-1000));
    // Other tokens or model → conflict.
    assert_eq!(
        err_code(m.record_usage(KeyRef::Secret(&key), tokens(2001), Some("r1"))),
        ErrorCode::IdempotencyConflict
    );
    assert_eq!(
        err_code(m.record_usage(KeyRef::Secret(&key), io_tokens(2000, 0, Some("gpt")), Some("r1"))),
        ErrorCode::IdempotencyConflict
    );
    assert_eq!(
        err_code(m.record_usage(KeyRef::Secret(&key), io_tokens(1000, 1000, None), Some("r1"))),
        ErrorCode::IdempotencyConflict
    );
    // Zero tokens: a 0-amount entry that uses up the request id.
    let z = m.record_usage(KeyRef::Secret(&key), tokens(0), Some("r0")).unwrap();
    assert_eq!(z.charged, Credits::ZERO);
    assert_eq!(err_code(m.record_usage(KeyRef::Secret(&key), tokens(5), Some("r0"))), ErrorCode::IdempotencyConflict);
    assert_eq!(balance(&m, "u"), micros(-1000));
    assert_audit_ok(&m);
}

#[test]
fn record_usage_rejects_bad_input() {
    let (m, _db) = common::manager();
    let (key, _) = key_for(&m, "u");
    let inv = ErrorCode::InvalidArgument;
    let max = creditgate::MAX_TOKENS_PER_CALL;
    assert_eq!(err_code(m.record_usage(KeyRef::Secret(&key), tokens(-1), None)), inv);
    assert_eq!(err_code(m.record_usage(KeyRef::Secret(&key), tokens(max + 1), None)), inv);
    assert_eq!(err_code(m.record_usage(KeyRef::Secret(&key), io_tokens(0, -1, None), None)), inv);
    assert_eq!(err_code(m.record_usage(KeyRef::Secret(&key), tokens(1), Some(""))), inv);
    assert_eq!(err_code(m.record_usage(KeyRef::Secret(&key), tokens(1), Some(&"r".repeat(256)))), inv);
    let long_model = "m".repeat(256);
    assert_eq!(err_code(m.record_usage(KeyRef::Secret(&key), io_tokens(1, 0, Some(&long_model)), None)), inv);
    // Unknown keys, by secret or id.
    assert_eq!(err_code(m.record_usage(KeyRef::Secret("unknown-key-123"), tokens(1), None)), ErrorCode::InvalidApiKey);
    let unknown = KeyId::parse("0190a0a0-0000-7000-8000-000000000001").unwrap();
    assert_eq!(err_code(m.record_usage(KeyRef::Id(unknown), tokens(1), None)), ErrorCode::InvalidApiKey);
    // The largest call is accepted (1e9 tokens at 1 credit per 1k = 1e6 credits).
    let c = m.record_usage(KeyRef::Secret(&key), io_tokens(max, 0, None), None).unwrap();
    assert_eq!(c.charged, credits(1_000_000));
    assert_eq!(entry_count(&m, "u"), 3, "grant + adjustment of key_for, and the one charge");
    assert_audit_ok(&m);
}

#[test]
fn a_key_revoked_after_its_call_was_verified_is_still_charged() {
    let (m, _db) = common::manager();
    let (key, key_id) = key_for(&m, "u");
    grant(&m, "u", credits(10));
    m.verify_api_key_credits(&key, credits(1)).unwrap();
    m.revoke_api_key(key_id, None).unwrap();
    let c = m.record_usage(KeyRef::Secret(&key), tokens(1000), Some("late")).unwrap();
    assert_eq!(c.charged, credits(1));
    m.record_usage(KeyRef::Id(key_id), tokens(1000), None).unwrap();
    assert_eq!(balance(&m, "u"), credits(8));
    // But a revoked key cannot start new work.
    assert_eq!(err_code(m.reserve(&key, HoldAmount::Credits(credits(1)), 600, None)), ErrorCode::InvalidApiKey);
}

// ----- prices -------------------------------------------------------------------------

#[test]
fn per_model_prices_with_one_ceil_at_the_end() {
    let (m, _db) = common::manager();
    let (key, _) = key_for(&m, "u");
    grant(&m, "u", credits(1000));
    assert!(m.list_model_prices().unwrap().is_empty());
    m.set_model_price("big", dec("2.5"), credits(10)).unwrap();
    m.set_model_price("tiny", micros(1), micros(1)).unwrap();
    m.set_model_price("odd", micros(1_234_567), Credits::ZERO).unwrap();
    m.set_model_price("free", Credits::ZERO, Credits::ZERO).unwrap();
    let prices = m.list_model_prices().unwrap();
    assert_eq!(prices.len(), 4);
    assert_eq!(prices["big"].input_per_1k, dec("2.5"));
    assert_eq!(prices["big"].output_per_1k, credits(10));

    let charge = |model: Option<&str>, i: i64, o: i64| {
        m.record_usage(KeyRef::Secret(&key), io_tokens(i, o, model), None).unwrap().charged
    };
    // (333 × 2.5 + 77 × 10) / 1000 credits = 1.6025 credits.
    assert_eq!(charge(Some("big"), 333, 77), micros(1_602_500));
    // One ceil at the end: (1 + 1) × 1 micro / 1000 → 1 micro, not 2.
    assert_eq!(charge(Some("tiny"), 1, 1), micros(1));
    assert_eq!(charge(Some("tiny"), 1000, 0), micros(1));
    assert_eq!(charge(Some("tiny"), 1001, 0), micros(2));
    // ceil(1,234,567 / 1000) = 1,235 micro-credits.
    assert_eq!(charge(Some("odd"), 1, 5), micros(1235));
    assert_eq!(charge(Some("free"), 5000, 5000), Credits::ZERO);
    // Unknown model, or none: the default, 1 credit per 1,000 tokens for input and output.
    assert_eq!(charge(Some("unknown"), 1, 0), micros(1000));
    assert_eq!(charge(None, 1500, 500), credits(2));

    // Changing a price applies to later calls.
    m.set_model_price("big", credits(1), credits(1)).unwrap();
    assert_eq!(charge(Some("big"), 1000, 1000), credits(2));
    assert_eq!(m.list_model_prices().unwrap()["big"].input_per_1k, credits(1));

    let inv = ErrorCode::InvalidArgument;
    assert_eq!(err_code(m.set_model_price("x", credits(-1), Credits::ZERO)), inv);
    assert_eq!(err_code(m.set_model_price("x", Credits::ZERO, micros(-1))), inv);
    assert_eq!(err_code(m.set_model_price("", credits(1), credits(1))), inv);
    assert_audit_ok(&m);
}

#[test]
fn the_default_price_is_configurable() {
    let config = Config::new().credits_per_1k_tokens(dec("0.5")).unwrap();
    let (m, _db) = common::manager_with(config);
    let (key, _) = key_for(&m, "u");
    let c = m.record_usage(KeyRef::Secret(&key), io_tokens(1000, 3, None), None).unwrap();
    // (1003 × 500,000) / 1000 micro-credits.
    assert_eq!(c.charged, micros(501_500));
}

// ----- holds ---------------------------------------------------------------------------

fn hold_setup(config: Config, amount: Credits) -> (CreditManager, common::Guard, String) {
    let (m, db) = common::manager_with(config);
    let (key, _) = key_for(&m, "u");
    grant(&m, "u", amount);
    (m, db, key)
}

#[test]
fn reserve_lowers_available_not_balance() {
    let (m, _db, key) = hold_setup(Config::new(), credits(10));
    let h = m.reserve(&key, HoldAmount::Credits(credits(4)), 600, None).unwrap();
    assert_eq!(h.user_id, "u");
    assert_eq!(h.amount, credits(4));
    assert!(!h.replayed);
    let a = m.account("u").unwrap();
    assert_eq!((a.balance, a.held, a.available), (credits(10), credits(4), credits(6)));
    assert_eq!(m.verify_api_key_credits(&key, credits(1)).unwrap().available, credits(6));
    // Strict against available.
    let e = m.reserve(&key, HoldAmount::Credits(dec("6.000001")), 600, None).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InsufficientCredits);
    m.reserve(&key, HoldAmount::Credits(credits(6)), 600, None).unwrap();
    assert_eq!(m.account("u").unwrap().available, Credits::ZERO);
    assert_eq!(err_code(m.reserve(&key, HoldAmount::Credits(micros(1)), 600, None)), ErrorCode::InsufficientCredits);
    // Holds are not ledger entries.
    assert_eq!(entry_count(&m, "u"), 3);
    assert_eq!(balance(&m, "u"), credits(10));
    assert_audit_ok(&m);
}

#[test]
fn reserve_validates_and_prices_tokens() {
    let (m, _db, key) = hold_setup(Config::new(), credits(100));
    let inv = ErrorCode::InvalidArgument;
    assert_eq!(err_code(m.reserve(&key, HoldAmount::Credits(credits(1)), 0, None)), inv);
    assert_eq!(err_code(m.reserve(&key, HoldAmount::Credits(credits(1)), 86_401, None)), inv);
    assert_eq!(err_code(m.reserve(&key, HoldAmount::Credits(Credits::ZERO), 600, None)), inv);
    assert_eq!(err_code(m.reserve(&key, HoldAmount::Credits(credits(-1)), 600, None)), inv);
    assert_eq!(err_code(m.reserve(&key, HoldAmount::Tokens { tokens: -1, model: None }, 600, None)), inv);
    assert_eq!(err_code(m.reserve(&key, HoldAmount::Credits(credits(1)), 600, Some(""))), inv);
    assert_eq!(
        err_code(m.reserve("not-a-known-key", HoldAmount::Credits(credits(1)), 600, None)),
        ErrorCode::InvalidApiKey
    );
    m.reserve(&key, HoldAmount::Credits(credits(1)), 86_400, None).unwrap();

    m.set_model_price("big", credits(3), credits(30)).unwrap();
    m.set_model_price("free", Credits::ZERO, Credits::ZERO).unwrap();
    let h = m.reserve(&key, HoldAmount::Tokens { tokens: 2000, model: Some("big") }, 600, None).unwrap();
    assert_eq!(h.amount, credits(6), "tokens are priced at the input price");
    let h = m.reserve(&key, HoldAmount::Tokens { tokens: 2000, model: None }, 600, None).unwrap();
    assert_eq!(h.amount, credits(2));
    // A hold is at least one micro-credit.
    let h = m.reserve(&key, HoldAmount::Tokens { tokens: 5000, model: Some("free") }, 600, None).unwrap();
    assert_eq!(h.amount, micros(1));
    let h = m.reserve(&key, HoldAmount::Tokens { tokens: 0, model: None }, 600, None).unwrap();
    assert_eq!(h.amount, micros(1));
    assert_eq!(m.account("u").unwrap().held, dec("9.000002"));
}

#[test]
fn reserve_is_idempotent_on_request_id() {
    let (m, _db, key) = hold_setup(Config::new(), credits(10));
    let h = m.reserve(&key, HoldAmount::Credits(credits(3)), 600, Some("req-1")).unwrap();
    let again = m.reserve(&key, HoldAmount::Credits(credits(3)), 600, Some("req-1")).unwrap();
    assert!(again.replayed);
    assert_eq!(again.hold_id, h.hold_id);
    assert_eq!(m.account("u").unwrap().held, credits(3));
    assert_eq!(
        err_code(m.reserve(&key, HoldAmount::Credits(credits(4)), 600, Some("req-1"))),
        ErrorCode::IdempotencyConflict
    );
    assert_eq!(metric(&m, "holds_total"), 1);
}

#[test]
fn active_holds_are_limited() {
    let (m, _db, key) = hold_setup(Config::new().max_active_holds_per_user(2).unwrap(), credits(10));
    let a = m.reserve(&key, HoldAmount::Credits(credits(1)), 600, None).unwrap();
    let b = m.reserve(&key, HoldAmount::Credits(credits(1)), 600, None).unwrap();
    let e = m.reserve(&key, HoldAmount::Credits(credits(1)), 600, None).unwrap_err();
    match &e {
        Error::LimitReached { limit, .. } => assert_eq!(*limit, "max_active_holds_per_user"),
        other => panic!("expected LimitReached, got {other:?}"),
    }
    // Finished holds do not count.
    m.release(a.hold_id).unwrap();
    let c = m.reserve(&key, HoldAmount::Credits(credits(1)), 600, None).unwrap();
    m.settle(b.hold_id, Settlement::Credits(credits(1))).unwrap();
    m.reserve(&key, HoldAmount::Credits(credits(1)), 600, None).unwrap();
    assert_eq!(err_code(m.reserve(&key, HoldAmount::Credits(credits(1)), 600, None)), ErrorCode::LimitReached);
    m.release(c.hold_id).unwrap();
}

#[test]
fn settle_charges_exactly_once() {
    let (m, _db, key) = hold_setup(Config::new(), credits(10));
    let h = m.reserve(&key, HoldAmount::Credits(credits(5)), 600, Some("req-s")).unwrap();
    let c = m.settle(h.hold_id, Settlement::Tokens(io_tokens(1500, 500, None))).unwrap();
    assert_eq!((c.charged, c.balance, c.tokens, c.replayed, c.overdraft), (credits(2), credits(8), 2000, false, false));
    let a = m.account("u").unwrap();
    assert_eq!((a.held, a.available), (Credits::ZERO, credits(8)), "settling frees the hold");
    let e = m.transactions("u", 1, None).unwrap().remove(0);
    assert_eq!(e.idempotency_key.as_deref(), Some("usage:req-s"));
    // Again with the same usage: the first result.
    let again = m.settle(h.hold_id, Settlement::Tokens(io_tokens(1500, 500, None))).unwrap();
    assert!(again.replayed);
    assert_eq!(again.entry_id, c.entry_id);
    assert_eq!(again.balance, credits(8));
    // With other usage: conflict.
    assert_eq!(
        err_code(m.settle(h.hold_id, Settlement::Tokens(io_tokens(1500, 501, None)))),
        ErrorCode::IdempotencyConflict
    );
    assert_eq!(err_code(m.settle(h.hold_id, Settlement::Credits(credits(2)))), ErrorCode::IdempotencyConflict);
    // Releasing a settled hold is a no-op.
    m.release(h.hold_id).unwrap();
    assert_eq!(balance(&m, "u"), credits(8));
    assert_eq!(metric(&m, "holds_settled_total"), 1);
    assert_eq!(metric(&m, "holds_released_total"), 0);
    assert_audit_ok(&m);
}

#[test]
fn settle_may_exceed_the_hold_and_overdraw() {
    let (m, _db, key) = hold_setup(Config::new(), credits(10));
    let h = m.reserve(&key, HoldAmount::Credits(credits(1)), 600, None).unwrap();
    let c = m.settle(h.hold_id, Settlement::Credits(credits(25))).unwrap();
    assert_eq!(c.charged, credits(25));
    assert_eq!(c.balance, credits(-15));
    assert!(c.overdraft);
    // Settling with zero usage is valid too.
    grant(&m, "u", credits(20));
    let h = m.reserve(&key, HoldAmount::Credits(credits(1)), 600, None).unwrap();
    let z = m.settle(h.hold_id, Settlement::Credits(Credits::ZERO)).unwrap();
    assert_eq!(z.charged, Credits::ZERO);
    assert_eq!(z.balance, credits(5));
    assert_eq!(err_code(m.settle(h.hold_id, Settlement::Credits(credits(-1)))), ErrorCode::InvalidArgument);
    assert_audit_ok(&m);
}

#[test]
fn settle_after_release_still_charges() {
    let (m, _db, key) = hold_setup(Config::new(), credits(10));
    let h = m.reserve(&key, HoldAmount::Credits(credits(5)), 600, None).unwrap();
    m.release(h.hold_id).unwrap();
    m.release(h.hold_id).unwrap(); // a no-op
    assert_eq!(m.account("u").unwrap().available, credits(10));
    assert_eq!(metric(&m, "holds_released_total"), 1);
    let c = m.settle(h.hold_id, Settlement::Credits(credits(3))).unwrap();
    assert_eq!(c.charged, credits(3));
    assert_eq!(balance(&m, "u"), credits(7));
    assert!(m.settle(h.hold_id, Settlement::Credits(credits(3))).unwrap().replayed);
    assert_eq!(balance(&m, "u"), credits(7));
    assert_audit_ok(&m);
}

#[test]
fn unknown_holds_are_not_found() {
    let (m, _db) = common::manager();
    let id = HoldId::parse("0190a0a0-0000-7000-8000-00000000abcd").unwrap();
    assert_eq!(err_code(m.settle(id, Settlement::Credits(credits(1)))), ErrorCode::NotFound);
    assert_eq!(err_code(m.release(id)), ErrorCode::NotFound);
    assert_eq!(err_code(HoldId::parse("not-a-uuid")), ErrorCode::InvalidArgument);
}

#[test]
fn holds_expire_after_their_ttl_and_still_settle() {
    let (m, _db, key) = hold_setup(Config::new(), credits(10));
    let h = m.reserve(&key, HoldAmount::Credits(credits(6)), 1, Some("slow")).unwrap();
    let kept = m.reserve(&key, HoldAmount::Credits(credits(1)), 600, None).unwrap();
    assert_eq!(m.account("u").unwrap().available, credits(3));
    std::thread::sleep(Duration::from_millis(1500));
    let a = m.account("u").unwrap();
    assert_eq!((a.held, a.available), (credits(1), credits(9)), "an expired hold no longer counts");
    assert_eq!(m.verify_api_key_credits(&key, credits(9)).unwrap().available, credits(9));
    assert!(m.can_generate_api_key("u").unwrap().available == credits(9));
    // Available again for strict operations.
    m.deduct_credits("u", credits(8), &NO_OPTS).unwrap();
    // Usage is never lost: settling an expired hold charges.
    let c = m.settle(h.hold_id, Settlement::Credits(credits(4))).unwrap();
    assert_eq!(c.charged, credits(4));
    assert_eq!(c.balance, credits(-2));
    assert!(c.overdraft);
    assert_eq!(metric(&m, "holds_expired_total"), 1);
    // Releasing an expired hold is a no-op; the other hold is untouched.
    m.release(h.hold_id).unwrap();
    assert_eq!(m.account("u").unwrap().held, credits(1));
    m.release(kept.hold_id).unwrap();
    assert_audit_ok(&m);
}

#[test]
fn a_fallback_record_usage_cannot_charge_a_hold_twice() {
    let (m, _db, key) = hold_setup(Config::new(), credits(100));
    let usage = Usage::new(3000, 1000, None);

    // Settled first, then the fallback path reports the same request.
    let h = m.reserve(&key, HoldAmount::Credits(credits(10)), 600, Some("req-a")).unwrap();
    let s = m.settle(h.hold_id, Settlement::Tokens(usage)).unwrap();
    let r = m.record_usage(KeyRef::Secret(&key), usage, Some("req-a")).unwrap();
    assert!(r.replayed);
    assert_eq!(r.entry_id, s.entry_id);
    assert_eq!(balance(&m, "u"), credits(96));

    // The fallback charged first, then the hold is settled with the same usage.
    let h = m.reserve(&key, HoldAmount::Credits(credits(10)), 600, Some("req-b")).unwrap();
    let r = m.record_usage(KeyRef::Secret(&key), usage, Some("req-b")).unwrap();
    let s = m.settle(h.hold_id, Settlement::Tokens(usage)).unwrap();
    assert!(s.replayed);
    assert_eq!(s.entry_id, r.entry_id);
    assert_eq!(balance(&m, "u"), credits(92));
    assert_eq!(m.account("u").unwrap().held, Credits::ZERO, "the settled hold is freed");
    // Other usage under the same request id: conflict, never a second charge.
    let h = m.reserve(&key, HoldAmount::Credits(credits(10)), 600, Some("req-c")).unwrap();
    m.record_usage(KeyRef::Secret(&key), usage, Some("req-c")).unwrap();
    assert_eq!(
        err_code(m.settle(h.hold_id, Settlement::Tokens(io_tokens(1, 0, None)))),
        ErrorCode::IdempotencyConflict
    );
    assert_eq!(balance(&m, "u"), credits(88));
    assert_eq!(metric(&m, "usage_charges_total"), 3);
    assert_audit_ok(&m);
}

#[test]
fn a_hold_settles_with_its_model_price() {
    let (m, _db, key) = hold_setup(Config::new(), credits(100));
    m.set_model_price("gpt", credits(2), credits(4)).unwrap();
    let h = m.reserve(&key, HoldAmount::Tokens { tokens: 10_000, model: Some("gpt") }, 600, None).unwrap();
    assert_eq!(h.amount, credits(20));
    // No model at settle: the hold's model.
    let c = m.settle(h.hold_id, Settlement::Tokens(io_tokens(1000, 1000, None))).unwrap();
    assert_eq!(c.charged, credits(6));
    let e = m.transactions("u", 1, None).unwrap().remove(0);
    assert_eq!(e.model.as_deref(), Some("gpt"));
}

// ----- transactions ---------------------------------------------------------------------

#[test]
fn transactions_paginate_newest_first_with_a_cursor() {
    let (m, _db) = common::manager();
    for i in 1..=25 {
        grant(&m, "u", credits(i));
    }
    grant(&m, "v", credits(1));
    let all = m.transactions("u", 1000, None).unwrap();
    assert_eq!(all.len(), 25);
    let seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=25).rev().collect::<Vec<_>>());
    assert_eq!(all[0].amount, credits(25));
    assert_eq!(all[0].balance_after, credits(325));

    let mut pages = Vec::new();
    let mut before: Option<EntryId> = None;
    loop {
        let page = m.transactions("u", 10, before).unwrap();
        if page.is_empty() {
            break;
        }
        before = Some(page.last().unwrap().id);
        pages.push(page);
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![10, 10, 5]);
    let paged: Vec<EntryId> = pages.into_iter().flatten().map(|e| e.id).collect();
    assert_eq!(paged, all.iter().map(|e| e.id).collect::<Vec<_>>());

    let page = m.transactions("u", 1, Some(all[24].id)).unwrap();
    assert!(page.is_empty(), "nothing before the first entry");
    assert_eq!(m.transactions("u", 1000, None).unwrap().len(), 25);
    assert!(m.transactions("nobody", 50, None).unwrap().is_empty());

    // Unknown cursor, or another user's entry: NotFound.
    let v_entry = m.transactions("v", 1, None).unwrap().remove(0);
    assert_eq!(err_code(m.transactions("u", 10, Some(v_entry.id))), ErrorCode::NotFound);
    let unknown = EntryId::parse("0190a0a0-0000-7000-8000-0000000000ff").unwrap();
    assert_eq!(err_code(m.transactions("u", 10, Some(unknown))), ErrorCode::NotFound);
    // limit in 1..=1000.
    assert_eq!(err_code(m.transactions("u", 0, None)), ErrorCode::InvalidArgument);
    assert_eq!(err_code(m.transactions("u", 1001, None)), ErrorCode::InvalidArgument);
    assert_eq!(m.transactions("u", 1, None).unwrap().len(), 1);
}

// ----- account, report, metrics -------------------------------------------------------------

#[test]
fn account_fields() {
    let (m, _db) = common::manager();
    let a = m.account("nobody").unwrap();
    assert_eq!(a.user_id, "nobody");
    assert_eq!((a.balance, a.held, a.available), (Credits::ZERO, Credits::ZERO, Credits::ZERO));
    assert_eq!((a.lifetime_purchased, a.lifetime_used), (Credits::ZERO, Credits::ZERO));
    assert_eq!((a.active_keys, a.first_key_issued, a.created_at), (0, false, None));

    m.record_payment("u", "pi_1", 600, "USD").unwrap();
    let k = m.create_api_key("u", None).unwrap();
    let key = k.secret.expose();
    m.create_api_key("u", None).unwrap();
    m.revoke_api_key(k.key_id, None).unwrap();
    m.add_credits("u", credits(100), EntryKind::Grant, &NO_OPTS).unwrap();
    m.deduct_credits("u", credits(50), &NO_OPTS).unwrap();
    m.record_usage(KeyRef::Secret(key), tokens(25_000), None).unwrap();
    let live = {
        let (k2, _) = key_for(&m, "u");
        k2
    };
    m.reserve(&live, HoldAmount::Credits(credits(7)), 600, None).unwrap();
    let a = m.account("u").unwrap();
    assert_eq!(a.balance, credits(6025));
    assert_eq!(a.held, credits(7));
    assert_eq!(a.available, credits(6018));
    assert_eq!(a.lifetime_purchased, credits(6000));
    assert_eq!(a.lifetime_used, credits(75), "usage + deduct");
    assert_eq!(a.active_keys, 2);
    assert!(a.first_key_issued);
    assert!(a.created_at.is_some());
}

#[test]
fn report_figures() {
    let (m, _db) = common::manager();
    let r = m.report().unwrap();
    assert_eq!((r.users, r.paying_users, r.key_generation_attempts), (0, 0, 0));
    assert_eq!(r.purchase_conversion_rate(), "0");

    // Alice attempts a key, pays, gets it, uses it. Bob attempts and never pays.
    // Carol pays without attempting. Dave gets a grant and goes negative.
    let _ = m.create_api_key("alice", None).unwrap_err();
    m.record_payment("alice", "pi_a", 1000, "USD").unwrap();
    let k = m.create_api_key("alice", None).unwrap();
    m.record_usage(KeyRef::Secret(k.secret.expose()), tokens(500_000), None).unwrap();
    m.deduct_credits("alice", credits(100), &NO_OPTS).unwrap();
    let _ = m.create_api_key("bob", None).unwrap_err();
    let _ = m.create_api_key("bob", None).unwrap_err();
    m.record_payment("carol", "pi_c", 250, "USD").unwrap();
    m.reverse_payment("pi_c", Some(50), None, Some("re_c")).unwrap();
    grant(&m, "dave", credits(1));
    let (dk, _) = key_for(&m, "dave");
    m.record_usage(KeyRef::Secret(&dk), tokens(3000), None).unwrap();

    let r = m.report().unwrap();
    assert_eq!(r.users, 4);
    assert_eq!(r.paying_users, 2);
    assert_eq!(r.users_attempted_key, 3, "alice, bob and dave");
    assert_eq!(r.key_generation_attempts, 5);
    assert_eq!(r.key_generation_successes, 2);
    assert_eq!(r.purchase_conversion, (1, 3));
    assert_eq!(r.purchase_conversion_rate(), "0.333333");
    assert_eq!(r.credits_purchased, credits(12_500));
    assert_eq!(r.revenue_usd_minor, 1200);
    assert_eq!(r.revenue_per_paying_user_usd_minor, 600);
    assert_eq!(r.credits_used, credits(603));
    // alice 10,000 − 500 − 100 = 9,400; carol 2,500 − 500 = 2,000; dave 1 − 3 = −2.
    assert_eq!(r.outstanding_balance, credits(11_400));
    assert_eq!(r.overdraft_receivable, credits(2));
}

#[test]
fn metrics_count_what_happened() {
    let (m, _db) = common::manager();
    let names: Vec<&str> = m.metrics().into_iter().map(|(n, _)| n).collect();
    for name in [
        "key_eligibility_checks_total",
        "key_generation_attempts_total",
        "key_generation_success_total",
        "key_generation_denied_total",
        "verify_ok_total",
        "verify_invalid_key_total",
        "verify_insufficient_credits_total",
        "usage_charges_total",
        "tokens_metered_total",
        "credits_charged_micros_total",
        "usage_overdrafts_total",
        "purchases_total",
        "credits_purchased_micros_total",
        "holds_total",
        "holds_settled_total",
        "holds_released_total",
        "holds_expired_total",
        "errors_total",
    ] {
        assert!(names.contains(&name), "missing metric {name}");
    }
    assert!(m.metrics().iter().all(|(_, v)| *v == 0), "a fresh manager counts nothing");

    m.can_generate_api_key("u").unwrap();
    let _ = m.create_api_key("u", None).unwrap_err();
    m.record_payment("u", "pi_1", 500, "USD").unwrap();
    m.record_payment("u", "pi_1", 500, "USD").unwrap(); // replay: not a purchase
    let k = m.create_api_key("u", None).unwrap();
    let key = k.secret.expose();
    m.verify_api_key_credits(key, credits(1)).unwrap();
    let _ = m.verify_api_key_credits("unknown-key-42", credits(1)).unwrap_err();
    let _ = m.verify_api_key_credits(key, credits(10_000)).unwrap_err();
    m.record_usage(KeyRef::Secret(key), io_tokens(1500, 500, None), Some("r")).unwrap();
    m.record_usage(KeyRef::Secret(key), io_tokens(1500, 500, None), Some("r")).unwrap(); // replay
    let h = m.reserve(key, HoldAmount::Credits(credits(1)), 600, None).unwrap();
    m.settle(h.hold_id, Settlement::Credits(credits(6000))).unwrap(); // overdraws
    let h2 = m.reserve(key, HoldAmount::Credits(credits(1)), 600, None).unwrap_err();
    assert_eq!(h2.code(), ErrorCode::InsufficientCredits);

    let expect = [
        ("key_eligibility_checks_total", 1),
        ("key_generation_attempts_total", 2),
        ("key_generation_success_total", 1),
        ("key_generation_denied_total", 1),
        ("verify_ok_total", 1),
        ("verify_invalid_key_total", 1),
        ("verify_insufficient_credits_total", 1),
        ("usage_charges_total", 2),
        ("tokens_metered_total", 2000),
        ("credits_charged_micros_total", 6002 * 1_000_000),
        ("usage_overdrafts_total", 1),
        ("purchases_total", 1),
        ("credits_purchased_micros_total", 5000 * 1_000_000),
        ("holds_total", 1),
        ("holds_settled_total", 1),
        ("holds_released_total", 0),
        ("holds_expired_total", 0),
        // create denied, unknown key, verify 402, reserve 402
        ("errors_total", 4),
    ];
    for (name, value) in expect {
        assert_eq!(metric(&m, name), value, "{name}");
    }
    let text = m.metrics_prometheus();
    assert!(text.contains("creditgate_usage_charges_total 2"), "{text}");
    assert!(text.contains("creditgate_errors_total{code=\"insufficient_credits\"} 3"), "{text}");
    assert!(text.contains("creditgate_errors_total{code=\"invalid_api_key\"} 1"), "{text}");
    assert!(text.contains("creditgate_verify_seconds_count 3"), "{text}");
    assert!(text.contains("creditgate_charge_seconds_bucket"), "{text}");
}

// ----- secrets ----------------------------------------------------------------------------

#[test]
fn secrets_never_show_in_debug_or_errors() {
    let config = Config::new().api_key_pepper("pepper-that-must-stay-hidden").unwrap();
    let (m, _db) = common::manager_with(config);
    grant(&m, "u", credits(5000));
    let k = m.create_api_key("u", Some("prod")).unwrap();
    let secret = k.secret.expose().to_string();
    let body = &secret[8..];
    for shown in [format!("{k:?}"), format!("{:?}", k.secret), format!("{m:?}"), format!("{:?}", m.config())] {
        assert!(!shown.contains(body), "secret in {shown}");
        assert!(!shown.contains("pepper-that-must-stay-hidden"), "pepper in {shown}");
    }
    assert!(format!("{k:?}").contains(&k.prefix), "NewApiKey shows its prefix");

    // Errors about a key never quote it.
    let mut errors = Vec::new();
    m.revoke_api_key(k.key_id, None).unwrap();
    errors.push(m.verify_api_key_credits(&secret, credits(1)).unwrap_err());
    errors.push(m.reserve(&secret, HoldAmount::Credits(credits(1)), 600, None).unwrap_err());
    let mut tampered = secret.clone().into_bytes();
    tampered[30] = if tampered[30] == b'Z' { b'Y' } else { b'Z' };
    let tampered = String::from_utf8(tampered).unwrap();
    errors.push(m.verify_api_key_credits(&tampered, credits(1)).unwrap_err());
    errors.push(m.import_api_key("u", Some(&tampered), None, None).unwrap_err());
    let legacy = "legacy-secret-value-777";
    m.import_api_key("u", Some(legacy), None, None).unwrap();
    errors.push(m.import_api_key("v", Some(legacy), None, None).unwrap_err());
    errors.push(m.verify_api_key_credits("legacy-secret-value-778", credits(1)).unwrap_err());
    errors.push(m.verify_api_key_credits(&"q".repeat(600), credits(1)).unwrap_err());
    for e in &errors {
        let text = format!("{e} {e:?}");
        for s in [body, &tampered[8..], "legacy-secret-value-77", &"q".repeat(40)] {
            assert!(!text.contains(s), "secret in error: {text}");
        }
    }
}

/// SQLite-specific: reads the database files' bytes.
#[test]
fn no_secret_in_the_database_file() {
    let config = Config::new().api_key_pepper("pepper-that-must-stay-hidden").unwrap();
    let (m, db) = common::manager_with(config);
    let Some(path) = db.sqlite_path().map(|p| p.to_path_buf()) else { return };
    grant(&m, "u", credits(5000));
    let k = m.create_api_key("u", None).unwrap();
    let legacy = "legacy-secret-value-0042";
    m.import_api_key("u", Some(legacy), None, None).unwrap();
    m.verify_api_key_credits(k.secret.expose(), credits(1)).unwrap();
    m.record_usage(KeyRef::Secret(k.secret.expose()), tokens(10), None).unwrap();
    m.record_usage(KeyRef::Secret(legacy), tokens(10), None).unwrap();
    let mut files = 0;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let file = format!("{}{suffix}", path.display());
        let Ok(bytes) = std::fs::read(&file) else { continue };
        files += 1;
        for needle in [&k.secret.expose()[8..], &legacy[4..], "pepper-that-must-stay-hidden"] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle:?} found in {file}");
        }
    }
    assert!(files >= 1);
    drop(m);
    let bytes = std::fs::read(&path).unwrap();
    assert!(!bytes.windows(20).any(|w| w == &k.secret.expose().as_bytes()[10..30]));
}

/// SQLite-specific (unix): the database file is created private to its owner.
#[cfg(unix)]
#[test]
fn database_file_mode_is_0600() {
    use std::os::unix::fs::PermissionsExt;
    let (m, db) = common::manager();
    let Some(path) = db.sqlite_path() else { return };
    grant(&m, "u", credits(1));
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "database file mode {mode:o}");
    for suffix in ["-wal", "-shm"] {
        if let Ok(meta) = std::fs::metadata(format!("{}{suffix}", path.display())) {
            let mode = meta.permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{suffix} file mode {mode:o}");
        }
    }
}

// ----- storage: migrations, URL ---------------------------------------------------------------

#[test]
fn migrations_are_safe_twice_and_concurrently() {
    // Several processes of a gateway starting at once on a fresh database:
    // every open must succeed, and the schema is created exactly once.
    for _round in 0..8 {
        let (url, _db) = common::shared_url();
        let start = std::sync::Arc::new(std::sync::Barrier::new(6));
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let (url, start) = (url.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let m = CreditManager::open(Config::new().database_url(&url))
                        .unwrap_or_else(|e| panic!("concurrent open failed: {e}"));
                    m.migrate().unwrap();
                    grant(&m, &format!("u{i}"), credits(1));
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let m = common::open(&url, Config::new());
        m.migrate().unwrap();
        m.migrate().unwrap();
        let audit = m.audit().unwrap();
        assert!(audit.ok);
        assert_eq!((audit.accounts_checked, audit.entries_checked), (6, 6));
    }
}

#[test]
fn audit_counts_accounts_and_entries() {
    let (m, _db) = common::manager();
    let a = m.audit().unwrap();
    assert!(a.ok);
    assert_eq!((a.accounts_checked, a.entries_checked), (0, 0));
    grant(&m, "a", credits(1));
    grant(&m, "a", credits(2));
    grant(&m, "b", credits(3));
    let a = m.audit().unwrap();
    assert!(a.ok);
    assert_eq!((a.accounts_checked, a.entries_checked), (2, 3));
}

#[test]
fn last_used_at_survives_a_failed_write() {
    let (url, _db) = common::shared_url();
    let m = common::open(&url, Config::new());
    let (key, key_id) = key_for(&m, "u");
    grant(&m, "u", credits(1));
    let last_used = |m: &CreditManager| {
        m.list_api_keys("u").unwrap().into_iter().find(|k| k.key_id == key_id).unwrap().last_used_at
    };
    assert_eq!(last_used(&m), None);
    m.verify_api_key_credits(&key, credits(1)).unwrap();
    let seen = last_used(&m);
    assert!(seen.is_some(), "a verified key shows when it was used");
    // A write that fails (here a strict deduct) must not lose the pending update.
    assert_eq!(err_code(m.deduct_credits("u", credits(2), &NO_OPTS)), ErrorCode::InsufficientCredits);
    assert_eq!(last_used(&m), seen);
    // Once a write commits, every handle sees it.
    m.deduct_credits("u", credits(1), &NO_OPTS).unwrap();
    let other = common::open(&url, Config::new());
    assert_eq!(last_used(&other), seen);
}

#[test]
fn the_manager_is_a_cheap_shareable_handle() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<CreditManager>();
    let (m, _db) = common::manager();
    let clone = m.clone();
    grant(&clone, "u", credits(3));
    assert_eq!(balance(&m, "u"), credits(3), "a clone is the same ledger");
}

/// SQLite-specific: the resolved URL names the file (SQLAlchemy style).
#[test]
fn database_url_is_the_resolved_location() {
    let (url, db) = common::shared_url();
    let Some(path) = db.sqlite_path() else { return };
    let m = common::open(&url, Config::new());
    let shown = m.database_url();
    let canonical = std::fs::canonicalize(path).unwrap();
    assert_eq!(shown, format!("sqlite:///{}", canonical.display()));
    assert!(shown.starts_with("sqlite:////"), "an absolute path has four slashes: {shown}");
    let mem = CreditManager::open(Config::new().database_url("sqlite:///:memory:")).unwrap();
    assert_eq!(mem.database_url(), "sqlite:///:memory:");
    assert_eq!(err_code(CreditManager::open(Config::new().database_url("mysql://x/y"))), ErrorCode::InvalidArgument);
}

// ----- review findings ------------------------------------------------------

#[test]
fn key_ref_debug_never_prints_the_secret() {
    let shown = format!("{:?}", KeyRef::Secret("sk_thisisasecretvaluethatmustnotshow"));
    assert!(!shown.contains("thisisasecret"), "{shown}");
}

#[test]
fn a_failed_settle_counts_one_error() {
    let (m, _g) = common::manager();
    let before = metric(&m, "errors_total");
    let unknown = HoldId::parse("01a213f9-80ed-7035-b376-7c130a104169").unwrap();
    assert_eq!(err_code(m.settle(unknown, Settlement::Credits(Credits::ZERO))), ErrorCode::NotFound);
    assert_eq!(metric(&m, "errors_total"), before + 1);
}

#[test]
fn a_payment_conflict_does_not_reveal_the_other_user() {
    let (m, _g) = common::manager();
    m.record_payment("alice-the-payer", "pi_shared", 500, "USD").unwrap();
    let err = m.record_payment("mallory", "pi_shared", 500, "USD").unwrap_err();
    assert_eq!(err.code(), ErrorCode::IdempotencyConflict);
    let msg = err.to_string();
    assert!(!msg.contains("alice-the-payer") && !msg.contains("5000"), "{msg}");
}

#[test]
fn gross_flows_beyond_i64_keep_account_and_report_working() {
    let (m, _g) = common::manager();
    let max = Credits::from_credits(creditgate::MAX_AMOUNT_CREDITS).unwrap();
    for _ in 0..10 {
        m.add_credits("whale", max, EntryKind::Purchase, &NO_OPTS).unwrap();
        m.deduct_credits("whale", max, &NO_OPTS).unwrap();
    }
    assert_eq!(balance(&m, "whale"), Credits::ZERO);
    let a = m.account("whale").unwrap();
    assert_eq!(a.balance, Credits::ZERO);
    assert!(a.lifetime_purchased > Credits::ZERO && a.lifetime_used > Credits::ZERO);
    // Report fields are i64: purchases beyond that range are a clear error,
    // never SQLite's overflow of its SUM.
    if let Err(e) = m.report() {
        assert!(!e.to_string().contains("integer overflow"), "{e}");
    }
    assert_audit_ok(&m);
}

#[test]
fn key_generation_counters_count_every_call_and_only_rule_denials() {
    let (m, _g) = common::manager();
    assert_eq!(err_code(m.create_api_key("", None)), ErrorCode::InvalidArgument);
    assert_eq!(err_code(m.create_api_key("poor", None)), ErrorCode::InsufficientCredits);
    assert_eq!(metric(&m, "key_generation_attempts_total"), 2);
    assert_eq!(metric(&m, "key_generation_denied_total"), 1);
    assert_eq!(metric(&m, "key_generation_success_total"), 0);
}

#[test]
fn a_version_1_database_is_upgraded_in_place() {
    let (url, g) = common::shared_url();
    let Some(path) = g.sqlite_path() else { return };
    let m = common::open(&url, Config::new());
    grant(&m, "u", credits(5));
    drop(m);
    // Put the file back to schema v1: its indexes, and only version 1 recorded.
    common::raw_sql(&url, common::UNDO_V13);
    common::raw_sql(&url, common::UNDO_V12);
    common::raw_sql(&url, common::UNDO_V11);
    common::raw_sql(&url, common::UNDO_V10);
    common::raw_sql(&url, common::UNDO_V9);
    common::raw_sql(&url, common::UNDO_V8);
    common::raw_sql(&url, common::UNDO_V8_GRANTS);
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(
        "DROP INDEX creditgate_entries_reversals; DROP INDEX creditgate_entries_purchases;
         CREATE INDEX creditgate_entries_reference ON creditgate_entries(reference, kind);
         CREATE INDEX creditgate_entries_kind ON creditgate_entries(kind, user_id);
         ALTER TABLE creditgate_accounts DROP COLUMN min_balance;
         DROP TABLE creditgate_events; DROP TABLE creditgate_key_rate_limits;
         DROP TABLE creditgate_key_spend; DROP INDEX creditgate_holds_key;
         ALTER TABLE creditgate_api_keys DROP COLUMN expires_at; ALTER TABLE creditgate_api_keys DROP COLUMN disabled_at;
         ALTER TABLE creditgate_api_keys DROP COLUMN rotated_to; ALTER TABLE creditgate_api_keys DROP COLUMN spend_limit;
         ALTER TABLE creditgate_api_keys DROP COLUMN spend_window;
         DELETE FROM creditgate_schema_version WHERE version > 1;",
    )
    .unwrap();
    drop(c);
    let m = common::open(&url, Config::new());
    assert_eq!(balance(&m, "u"), credits(5), "data kept across the upgrade");
    let c = rusqlite::Connection::open(path).unwrap();
    let names: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'creditgate_entries' AND sql IS NOT NULL ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        names,
        [
            "creditgate_entries_expiries",
            "creditgate_entries_member",
            "creditgate_entries_purchases",
            "creditgate_entries_reversals",
            "creditgate_entries_time"
        ]
    );
    let version: i64 = c.query_row("SELECT MAX(version) FROM creditgate_schema_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, common::latest_schema_version());
    assert_audit_ok(&m);
}

#[test]
fn backup_copies_a_consistent_snapshot_while_writers_go_on() {
    let (url, g) = common::shared_url();
    let m = common::open(&url, Config::new());
    grant(&m, "u", credits(1_000));
    let dest = g.dir().join("copy.db");
    let dest_str = dest.to_str().unwrap();
    if g.sqlite_path().is_none() {
        assert_eq!(err_code(m.backup(dest_str)), ErrorCode::InvalidArgument);
        return;
    }
    let (key, _) = key_for(&m, "u");
    let size = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for i in 0..200 {
                m.record_usage(KeyRef::Secret(&key), tokens(1_000), Some(&format!("b-{i}"))).unwrap();
            }
        });
        let size = m.backup(dest_str).unwrap();
        writer.join().unwrap();
        size
    });
    assert_eq!(size, std::fs::metadata(&dest).unwrap().len());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let copy = common::open(&format!("sqlite:///{dest_str}"), Config::new());
    let entries = assert_audit_ok(&copy);
    assert!(entries >= 2, "the grant and the key purchase at least: {entries}");
    let used = Credits::from_credits(1_000).unwrap().checked_sub(balance(&copy, "u")).unwrap();
    assert!(used <= credits(200), "a snapshot within the run: {used}");
    // Never overwritten; bad paths are bad arguments.
    assert_eq!(err_code(m.backup(dest_str)), ErrorCode::InvalidArgument);
    assert_eq!(err_code(m.backup("")), ErrorCode::InvalidArgument);
    assert_eq!(err_code(m.backup("/nonexistent-dir/x.db")), ErrorCode::Storage);
}

#[test]
fn min_balance_lets_strict_operations_run_to_the_floor() {
    let (m, _g) = common::manager();
    grant(&m, "trusted", credits(10));
    m.set_min_balance("trusted", credits(-5)).unwrap();
    let a = m.account("trusted").unwrap();
    assert_eq!((a.balance, a.min_balance, a.available), (credits(10), credits(-5), credits(15)));
    // A strict deduct may take the balance below zero, down to the floor.
    m.deduct_credits("trusted", credits(14), &NO_OPTS).unwrap();
    assert_eq!(balance(&m, "trusted"), credits(-4));
    let secret = "legacy-trusted-key-0001";
    m.import_api_key("trusted", Some(secret), None, None).unwrap();
    assert_eq!(m.verify_api_key_credits(secret, credits(1)).unwrap().available, credits(1));
    // A hold takes the last credit above the floor; then strict calls stop.
    m.reserve(secret, HoldAmount::Credits(credits(1)), 600, None).unwrap();
    assert_eq!(m.account("trusted").unwrap().available, Credits::ZERO);
    match m.deduct_credits("trusted", micros(1), &NO_OPTS) {
        Err(Error::InsufficientCredits { available, .. }) => assert_eq!(available, Credits::ZERO),
        other => panic!("expected 402, got {other:?}"),
    }
    assert_eq!(err_code(m.reserve(secret, HoldAmount::Credits(micros(1)), 600, None)), ErrorCode::InsufficientCredits);
    assert_eq!(err_code(m.verify_api_key_credits(secret, micros(1))), ErrorCode::InsufficientCredits);
    // Usage already happened: it may go below the floor, and is an overdraft.
    let c = m.record_usage(KeyRef::Secret(secret), tokens(2_000), Some("u-1")).unwrap();
    assert!(c.overdraft && c.balance == credits(-6));
    // The floor is <= 0 and bounded; 0 restores the plain rule.
    assert_eq!(err_code(m.set_min_balance("trusted", micros(1))), ErrorCode::InvalidArgument);
    assert_eq!(
        err_code(m.set_min_balance("trusted", Credits::from_micros(-creditgate::MAX_AMOUNT_MICROS - 1))),
        ErrorCode::InvalidArgument
    );
    assert_eq!(err_code(m.set_min_balance("", credits(-1))), ErrorCode::InvalidArgument);
    m.set_min_balance("trusted", Credits::ZERO).unwrap();
    assert_eq!(m.account("trusted").unwrap().available, credits(-7), "balance -6, 1 held, floor 0");
    // Another account keeps the default floor.
    assert_eq!(m.account("someone-else").unwrap().min_balance, Credits::ZERO);
    assert_audit_ok(&m);
}
