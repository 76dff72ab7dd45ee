//! The ledger's invariants are checked where a balance moves, and a broken
//! one is an `Internal` error, never a panic and never committed: in test
//! mode (`Config::check_invariants`) every write audits the account it moved;
//! in any mode the conditional update's own values must add up
//! (balance_after == before + amount, seq == last + 1). The database is
//! corrupted through raw SQL between two writes, on either backend.

mod common;

use common::{NO_OPTS, credits, err_code, grant};
use creditgate::{Config, CreditManager, ErrorCode, KeyRef};

/// A ledger with user "u" holding 100 credits, opened in test mode or not.
fn ledger(checked: bool) -> (CreditManager, String, common::Guard) {
    let (url, guard) = common::shared_url();
    let m = common::open(&url, Config::new().check_invariants(checked));
    grant(&m, "u", credits(100));
    (m, url, guard)
}

/// The account's entry count and balance, to show a refused write left nothing.
fn state(m: &CreditManager) -> (usize, creditgate::Credits) {
    (common::all_entries(m, "u").len(), m.get_balance("u").unwrap())
}

#[test]
fn test_mode_refuses_a_write_on_an_account_whose_balance_was_corrupted() {
    let (m, url, _g) = ledger(true);
    let (key, _) = common::key_for(&m, "u");
    m.deduct_credits("u", credits(1), &NO_OPTS).unwrap();
    common::raw_sql(&url, "UPDATE creditgate_accounts SET balance = balance + 1 WHERE user_id = 'u'");
    let before = state(&m);
    let e = m.deduct_credits("u", credits(1), &NO_OPTS).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Internal, "{e}");
    assert!(e.to_string().contains("balance_mismatch"), "{e}");
    // Rolled back: the write left no entry and moved no balance.
    assert_eq!(state(&m), before);
    // The hot path too (usage is never refused for balance, but is for this).
    assert_eq!(err_code(m.record_usage(KeyRef::Secret(&key), common::tokens(10), None)), ErrorCode::Internal);
    assert_eq!(state(&m), before);
}

#[test]
fn without_test_mode_the_same_write_goes_through_and_only_the_audit_sees_it() {
    let (m, url, _g) = ledger(false);
    common::raw_sql(&url, "UPDATE creditgate_accounts SET balance = balance + 1 WHERE user_id = 'u'");
    m.deduct_credits("u", credits(1), &NO_OPTS).unwrap();
    let report = m.audit().unwrap();
    assert!(!report.ok);
    assert!(report.mismatches.iter().any(|x| x.problem == "balance_mismatch"), "{report:?}");
}

#[test]
fn test_mode_refuses_a_write_on_an_account_whose_grants_were_corrupted() {
    let (m, url, _g) = ledger(true);
    common::raw_sql(&url, "UPDATE creditgate_grants SET remaining = remaining - 1 WHERE user_id = 'u'");
    let before = state(&m);
    let e = m.add_credits("u", credits(5), creditgate::EntryKind::Grant, &NO_OPTS).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Internal, "{e}");
    assert!(e.to_string().contains("grant_mismatch"), "{e}");
    assert_eq!(state(&m), before);
}

#[test]
fn test_mode_refuses_a_write_that_would_leave_a_gap_in_the_seqs() {
    let (m, url, _g) = ledger(true);
    common::raw_sql(&url, "UPDATE creditgate_accounts SET last_seq = last_seq + 1 WHERE user_id = 'u'");
    let before = state(&m);
    let e = m.deduct_credits("u", credits(1), &NO_OPTS).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Internal, "{e}");
    assert!(e.to_string().contains("seq_gap"), "{e}");
    assert_eq!(state(&m), before);
}

/// A balance update that does not add exactly the amount (here a trigger
/// skews it) is refused by the O(1) check, in any mode. PostgreSQL only:
/// SQLite's BEFORE triggers cannot change the row being updated.
#[test]
fn a_balance_update_that_does_not_add_up_is_internal_in_any_mode() {
    let (m, url, _g) = ledger(false);
    if url.starts_with("sqlite:") {
        eprintln!("skipped on SQLite: needs a BEFORE UPDATE trigger that rewrites the row");
        return;
    }
    common::raw_sql(
        &url,
        "CREATE FUNCTION cg_test_skew() RETURNS trigger AS $$ BEGIN NEW.balance := NEW.balance + 1; RETURN NEW; END $$ \
         LANGUAGE plpgsql; \
         CREATE TRIGGER cg_test_skew BEFORE UPDATE OF balance ON creditgate_accounts \
         FOR EACH ROW EXECUTE FUNCTION cg_test_skew();",
    );
    let before = state(&m);
    let e = m.deduct_credits("u", credits(1), &NO_OPTS).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Internal, "{e}");
    assert!(e.to_string().contains("balance move"), "{e}");
    assert_eq!(state(&m), before);
    assert!(m.audit().unwrap().ok);
}

#[test]
fn test_mode_passes_an_intact_ledger_through_every_kind_of_posting() {
    let (m, _url, _g) = ledger(true);
    let (key, _) = common::key_for(&m, "u");
    m.record_payment("u", "pay_1", 1000, "usd").unwrap();
    m.record_usage(KeyRef::Secret(&key), common::tokens(1000), Some("r1")).unwrap();
    m.deduct_credits("u", credits(3), &NO_OPTS).unwrap();
    m.reverse_payment("pay_1", Some(400), None, Some("rev_1")).unwrap();
    m.reinstate_reversal("rev_1", None).unwrap();
    m.reverse_payment("pay_1", None, None, Some("rev_2")).unwrap();
    common::assert_audit_ok(&m);
}
