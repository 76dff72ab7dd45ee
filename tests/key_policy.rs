//! Key lifecycle (expiry, disable/enable, rotation with grace) and per-key
//! spend caps (`set_key_limit`, `limit_source`), on SQLite and, with
//! `CREDITGATE_TEST_BACKEND=postgres`, on PostgreSQL. Concurrency with real
//! threads and real processes on one database.

mod common;

use common::*;
use creditgate::{
    Config, CreditManager, Credits, Error, ErrorCode, HoldAmount, KeyId, KeyRef, LimitSource, Settlement, SpendWindow,
    Timestamp,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

const CHILD_ENV: &str = "CREDITGATE_TEST_KEY_CAP_CHILD";

fn info(m: &CreditManager, user: &str, id: KeyId) -> creditgate::ApiKeyInfo {
    m.list_api_keys(user).unwrap().into_iter().find(|k| k.key_id == id).expect("the key is listed")
}

/// The message an unknown key gets: disabled and expired keys must get exactly this.
fn unknown_key_message(m: &CreditManager) -> String {
    match m.verify_api_key_credits("legacy-unknown-secret-123", credits(1)) {
        Err(e @ Error::InvalidApiKey(_)) => e.to_string(),
        r => panic!("an unknown key must be InvalidApiKey, got {r:?}"),
    }
}

#[track_caller]
fn assert_like_unknown<T: std::fmt::Debug>(m: &CreditManager, r: creditgate::Result<T>) {
    match r {
        Err(e @ Error::InvalidApiKey(_)) => assert_eq!(e.to_string(), unknown_key_message(m)),
        other => panic!("expected the unknown-key 401, got {other:?}"),
    }
}

#[track_caller]
fn assert_short(r: creditgate::Result<impl std::fmt::Debug>, source: LimitSource, available: Credits) {
    match r {
        Err(Error::InsufficientCredits { available: a, limit_source, .. }) => {
            assert_eq!(limit_source, source);
            assert_eq!(a, available);
        }
        other => panic!("expected InsufficientCredits from the {source} limit, got {other:?}"),
    }
}

fn funded(m: &CreditManager, user: &str, amount: i64) -> (String, KeyId) {
    grant(m, user, credits(amount));
    key_for(m, user)
}

// ----- lifecycle -------------------------------------------------------------------

#[test]
fn expired_and_disabled_keys_fail_like_unknown_keys_but_usage_and_settle_still_charge() {
    let (m, _db) = manager();
    let (secret, id) = funded(&m, "u", 100);
    let hold = m.reserve(&secret, HoldAmount::Credits(credits(2)), 600, None).unwrap();

    m.disable_api_key(id, None).unwrap();
    m.disable_api_key(id, None).unwrap(); // twice: a no-op
    assert!(info(&m, "u", id).disabled);
    assert_like_unknown(&m, m.verify_api_key_credits(&secret, credits(1)));
    assert_like_unknown(&m, m.authenticate_api_key(&secret));
    assert_like_unknown(&m, m.reserve(&secret, HoldAmount::Credits(credits(1)), 60, None));
    // Usage already happened: charged, as for a revoked key; the hold settles.
    let c = m.record_usage(KeyRef::Secret(&secret), tokens(1000), Some("r1")).unwrap();
    assert_eq!(c.charged, credits(1));
    let s = m.settle(hold.hold_id, Settlement::Credits(credits(2))).unwrap();
    assert_eq!(s.charged, credits(2));
    assert_eq!(m.get_balance("u").unwrap(), credits(97));

    m.enable_api_key(id, None).unwrap();
    m.enable_api_key(id, None).unwrap();
    assert!(!info(&m, "u", id).disabled);
    assert_eq!(m.verify_api_key_credits(&secret, credits(1)).unwrap().key_id, id);

    // Expiry in the past expires now; clearing it restores the key.
    let past = Timestamp(Timestamp::now().0 - 1_000_000);
    m.set_api_key_expiry(id, Some(past), None).unwrap();
    assert_eq!(info(&m, "u", id).expires_at, Some(past));
    assert_like_unknown(&m, m.verify_api_key_credits(&secret, credits(1)));
    assert_like_unknown(&m, m.reserve(&secret, HoldAmount::Credits(credits(1)), 60, None));
    assert_eq!(m.record_usage(KeyRef::Secret(&secret), tokens(1000), Some("r2")).unwrap().charged, credits(1));
    assert_eq!(m.account("u").unwrap().active_keys, 0, "an expired key is not active");
    m.set_api_key_expiry(id, None, None).unwrap();
    assert!(m.verify_api_key_credits(&secret, credits(1)).is_ok());
    assert_eq!(m.account("u").unwrap().active_keys, 1);

    // Enabling does not bring a revoked key back.
    m.disable_api_key(id, None).unwrap();
    m.revoke_api_key(id, None).unwrap();
    m.enable_api_key(id, None).unwrap();
    assert_eq!(err_code(m.verify_api_key_credits(&secret, credits(1))), ErrorCode::InvalidApiKey);
    assert_audit_ok(&m);
}

#[test]
fn lifecycle_calls_check_ownership_and_arguments() {
    let (m, _db) = manager();
    let (_, id) = funded(&m, "u", 100);
    let nobody = KeyId::parse("018f0000-0000-7000-8000-000000000000").unwrap();
    for r in [
        m.disable_api_key(id, Some("someone-else")),
        m.enable_api_key(id, Some("someone-else")),
        m.set_api_key_expiry(id, None, Some("someone-else")),
        m.set_key_limit(id, Some(credits(1)), SpendWindow::Daily, Some("someone-else")),
        m.disable_api_key(nobody, None),
    ] {
        assert_eq!(err_code(r), ErrorCode::NotFound);
    }
    assert_eq!(err_code(m.rotate_api_key(id, 0, Some("someone-else"))), ErrorCode::NotFound);
    assert_eq!(err_code(m.rotate_api_key(id, -1, None)), ErrorCode::InvalidArgument);
    assert_eq!(err_code(m.rotate_api_key(id, 30 * 86_400 + 1, None)), ErrorCode::InvalidArgument);
    assert_eq!(err_code(m.set_api_key_expiry(id, Some(Timestamp(-1)), None)), ErrorCode::InvalidArgument);
    assert_eq!(
        err_code(m.set_key_limit(id, Some(Credits::from_micros(-1)), SpendWindow::Daily, None)),
        ErrorCode::InvalidArgument
    );
    let past = Timestamp(Timestamp::now().0 - 1);
    assert_eq!(err_code(m.create_api_key_with("u", None, Some(past))), ErrorCode::InvalidArgument);
    assert!(m.disable_api_key(id, Some("u")).is_ok());
    // Nothing above wrote a ledger entry.
    assert_eq!(all_entries(&m, "u").len(), 3);
}

#[test]
fn a_key_created_with_an_expiry_stops_at_it() {
    let (m, _db) = manager();
    grant(&m, "u", credits(5000));
    let at = Timestamp(Timestamp::now().0 + 1_500_000);
    let k = m.create_api_key_with("u", Some("short-lived"), Some(at)).unwrap();
    assert_eq!(info(&m, "u", k.key_id).expires_at, Some(at));
    assert!(m.verify_api_key_credits(k.secret.expose(), credits(1)).is_ok());
    thread::sleep(Duration::from_millis(1700));
    assert_like_unknown(&m, m.verify_api_key_credits(k.secret.expose(), credits(1)));
}

// ----- rotation ----------------------------------------------------------------------

#[test]
fn rotation_keeps_the_old_key_during_grace_without_fee_or_key_slot() {
    // One active key at most: rotation does not need a second slot.
    let (m, _db) = manager_with(Config::new().max_active_keys_per_user(1).unwrap());
    grant(&m, "u", credits(5000));
    let old = m.create_api_key("u", Some("prod")).unwrap();
    let balance = m.get_balance("u").unwrap();
    let new = m.rotate_api_key(old.key_id, 1, None).unwrap();
    assert_ne!(new.key_id, old.key_id);
    assert_ne!(new.secret.expose(), old.secret.expose());
    assert_eq!(new.name.as_deref(), Some("prod"));
    assert_eq!(new.user_id, "u");
    assert_eq!(m.get_balance("u").unwrap(), balance, "rotation charges no key fee");
    // Both work during the grace period.
    assert_eq!(m.verify_api_key_credits(old.secret.expose(), credits(1)).unwrap().key_id, old.key_id);
    assert_eq!(m.verify_api_key_credits(new.secret.expose(), credits(1)).unwrap().key_id, new.key_id);
    let o = info(&m, "u", old.key_id);
    assert_eq!(o.rotated_to, Some(new.key_id));
    assert!(o.expires_at.is_some_and(|t| t <= Timestamp(Timestamp::now().0 + 1_000_000)));
    assert_eq!(info(&m, "u", new.key_id).expires_at, None);
    // Rotating the same key twice is refused.
    assert_eq!(err_code(m.rotate_api_key(old.key_id, 0, None)), ErrorCode::InvalidArgument);

    thread::sleep(Duration::from_millis(1300));
    assert_like_unknown(&m, m.verify_api_key_credits(old.secret.expose(), credits(1)));
    assert!(m.verify_api_key_credits(new.secret.expose(), credits(1)).is_ok());
    assert_eq!(m.account("u").unwrap().active_keys, 1);
    // A rotated-away key is not usable, so it cannot be rotated again either.
    let newer = m.rotate_api_key(new.key_id, 0, None).unwrap();
    assert_like_unknown(&m, m.verify_api_key_credits(new.secret.expose(), credits(1)));
    assert!(m.verify_api_key_credits(newer.secret.expose(), credits(1)).is_ok());
    // Disabled or revoked keys are not rotated.
    m.disable_api_key(newer.key_id, None).unwrap();
    assert_eq!(err_code(m.rotate_api_key(newer.key_id, 0, None)), ErrorCode::InvalidArgument);
    assert_audit_ok(&m);
}

#[test]
fn rotation_carries_the_cap_and_its_spend() {
    let (m, _db) = manager();
    let (secret, id) = funded(&m, "u", 1000);
    m.set_key_limit(id, Some(credits(10)), SpendWindow::Monthly, None).unwrap();
    m.record_usage(KeyRef::Secret(&secret), tokens(6000), None).unwrap();
    let new = m.rotate_api_key(id, 0, None).unwrap();
    let n = info(&m, "u", new.key_id);
    assert_eq!(n.spend_limit, Some(credits(10)));
    assert_eq!(n.spend_window, Some(SpendWindow::Monthly));
    assert_eq!(n.spent_in_window, credits(6));
    assert_short(m.verify_api_key_credits(new.secret.expose(), credits(5)), LimitSource::Key, credits(4));
}

// ----- spend caps --------------------------------------------------------------------

#[test]
fn a_key_cap_limits_verify_and_holds_and_says_so() {
    let (m, _db) = manager();
    let (secret, id) = funded(&m, "u", 1000);
    m.set_key_limit(id, Some(credits(10)), SpendWindow::Daily, None).unwrap();
    let v = m.verify_api_key_credits(&secret, credits(10)).unwrap();
    assert_eq!(v.key_remaining, Some(credits(10)));
    assert_eq!(v.spendable(), credits(10));

    m.record_usage(KeyRef::Secret(&secret), tokens(8000), None).unwrap();
    assert_short(m.verify_api_key_credits(&secret, credits(5)), LimitSource::Key, credits(2));
    assert_short(m.reserve(&secret, HoldAmount::Credits(credits(3)), 60, None), LimitSource::Key, credits(2));
    let h = m.reserve(&secret, HoldAmount::Credits(credits(2)), 60, None).unwrap();
    // The hold takes the rest of the cap.
    assert_short(m.verify_api_key_credits(&secret, credits(1)), LimitSource::Key, credits(0));
    assert!(m.authenticate_api_key(&secret).is_ok(), "authenticate never checks credits");
    m.release(h.hold_id).unwrap();
    assert_eq!(m.verify_api_key_credits(&secret, credits(2)).unwrap().key_remaining, Some(credits(2)));

    // Usage is never refused by the cap, and counts.
    let c = m.record_usage(KeyRef::Secret(&secret), tokens(5000), None).unwrap();
    assert_eq!(c.charged, credits(5));
    let i = info(&m, "u", id);
    assert_eq!(i.spent_in_window, credits(13));
    assert_eq!(i.spend_limit, Some(credits(10)));
    assert_eq!(i.spend_window, Some(SpendWindow::Daily));
    assert_eq!(i.window_resets_at, Some(SpendWindow::Daily.bounds(Timestamp::now()).1));
    assert_short(m.verify_api_key_credits(&secret, credits(1)), LimitSource::Key, credits(-3));

    // The account's own limit is reported as such when it is the tighter one.
    let (other_secret, other_id) = key_for(&m, "poor");
    m.set_key_limit(other_id, Some(credits(100)), SpendWindow::Lifetime, None).unwrap();
    assert_short(m.verify_api_key_credits(&other_secret, credits(1)), LimitSource::Account, credits(0));
    assert_eq!(info(&m, "poor", other_id).window_resets_at, None);

    // A key with no cap is limited by the account only; removing the cap restores that.
    m.set_key_limit(id, None, SpendWindow::Daily, None).unwrap();
    let v = m.verify_api_key_credits(&secret, credits(100)).unwrap();
    assert_eq!(v.key_remaining, None);
    let i = info(&m, "u", id);
    assert_eq!((i.spend_limit, i.spend_window, i.spent_in_window), (None, None, Credits::ZERO));
    assert_audit_ok(&m);
}

#[test]
fn a_new_cap_counts_usage_already_in_its_window_and_settle_counts() {
    let (m, _db) = manager();
    let (secret, id) = funded(&m, "u", 1000);
    m.record_usage(KeyRef::Secret(&secret), tokens(4000), None).unwrap();
    let (_, other) = key_for(&m, "u");
    m.record_usage(KeyRef::Id(other), tokens(9000), None).unwrap(); // another key: not counted
    m.set_key_limit(id, Some(credits(5)), SpendWindow::Weekly, None).unwrap();
    assert_eq!(info(&m, "u", id).spent_in_window, credits(4));
    assert_eq!(m.verify_api_key_credits(&secret, credits(1)).unwrap().key_remaining, Some(credits(1)));

    let h = m.reserve(&secret, HoldAmount::Credits(credits(1)), 60, None).unwrap();
    m.settle(h.hold_id, Settlement::Credits(micros(1_500_000))).unwrap();
    assert_eq!(info(&m, "u", id).spent_in_window, micros(5_500_000));
    // Replays do not count twice.
    m.settle(h.hold_id, Settlement::Credits(micros(1_500_000))).unwrap();
    m.record_usage(KeyRef::Id(id), tokens(0), Some("zero")).unwrap();
    assert_eq!(info(&m, "u", id).spent_in_window, micros(5_500_000));
    // Changing the window reseeds from the ledger: lifetime = every usage of the key.
    m.set_key_limit(id, Some(credits(50)), SpendWindow::Lifetime, None).unwrap();
    assert_eq!(info(&m, "u", id).spent_in_window, micros(5_500_000));
    // A zero cap blocks everything but a zero check.
    m.set_key_limit(id, Some(Credits::ZERO), SpendWindow::Daily, None).unwrap();
    assert!(m.verify_api_key_credits(&secret, Credits::ZERO).is_err(), "0 - spent today is negative");
    assert_audit_ok(&m);
}

#[test]
fn threads_holding_against_one_key_cap_never_exceed_it() {
    const THREADS: usize = 12;
    const TRIES: usize = 6;
    let (url, _db) = shared_url();
    let m = open(&url, Config::new());
    let (secret, id) = funded(&m, "u", 100_000);
    m.set_key_limit(id, Some(credits(20)), SpendWindow::Daily, None).unwrap();
    // A second handle on the same database: contention across pools too.
    let m2 = open(&url, Config::new());
    let barrier = Arc::new(Barrier::new(THREADS));
    let (ok, key_short) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let m = if t % 2 == 0 { m.clone() } else { m2.clone() };
            let (secret, barrier, ok, key_short) = (secret.clone(), barrier.clone(), ok.clone(), key_short.clone());
            thread::spawn(move || {
                barrier.wait();
                for _ in 0..TRIES {
                    match m.reserve(&secret, HoldAmount::Credits(credits(1)), 600, None) {
                        Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                        Err(Error::InsufficientCredits { limit_source: LimitSource::Key, .. }) => {
                            key_short.fetch_add(1, Ordering::SeqCst)
                        }
                        Err(e) => panic!("unexpected {e}"),
                    };
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(ok.load(Ordering::SeqCst), 20, "exactly the cap is held");
    assert_eq!(key_short.load(Ordering::SeqCst), (THREADS * TRIES - 20) as u64);
    assert_eq!(m.account("u").unwrap().held, credits(20));
    assert_short(m.verify_api_key_credits(&secret, credits(1)), LimitSource::Key, Credits::ZERO);
}

#[test]
fn threads_charging_a_capped_key_lose_no_count() {
    const THREADS: usize = 8;
    const CHARGES: usize = 10;
    let (url, _db) = shared_url();
    let m = open(&url, Config::new());
    let (secret, id) = funded(&m, "u", 100_000);
    m.set_key_limit(id, Some(credits(1_000)), SpendWindow::Monthly, None).unwrap();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (m, secret) = (m.clone(), secret.clone());
            thread::spawn(move || {
                for i in 0..CHARGES {
                    let rid = format!("t{t}-{i}");
                    m.record_usage(KeyRef::Secret(&secret), tokens(1000), Some(&rid)).unwrap();
                    // A replay must not count again.
                    m.record_usage(KeyRef::Secret(&secret), tokens(1000), Some(&rid)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(info(&m, "u", id).spent_in_window, credits((THREADS * CHARGES) as i64));
}

/// Child side of `processes_holding_against_one_key_cap`: reserves 1 credit
/// `TRIES` times and prints how many succeeded.
#[test]
#[ignore = "run by processes_holding_against_one_key_cap in a child process"]
fn child_key_cap_holds() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let (url, secret) = spec.split_once('\t').expect("url\tsecret");
    let m = open(url, Config::new());
    let mut ok = 0;
    for _ in 0..10 {
        match m.reserve(secret, HoldAmount::Credits(credits(1)), 600, None) {
            Ok(_) => ok += 1,
            Err(Error::InsufficientCredits { limit_source: LimitSource::Key, .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    println!("KEY-CAP-HOLDS {ok}");
}

#[test]
fn processes_holding_against_one_key_cap_never_exceed_it() {
    let (url, _db) = shared_url();
    let m = open(&url, Config::new());
    let (secret, id) = funded(&m, "u", 100_000);
    m.set_key_limit(id, Some(credits(15)), SpendWindow::Daily, None).unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| common::spawn_child_test("child_key_cap_holds", CHILD_ENV, format!("{url}\t{secret}")))
        .collect();
    let mut total = 0;
    for child in children {
        let stdout = common::child_output(child);
        let n: Vec<u64> = stdout
            .lines()
            .filter_map(|l| l.find("KEY-CAP-HOLDS ").map(|i| l[i + 14..].trim().parse().unwrap()))
            .collect();
        assert_eq!(n.len(), 1, "{stdout}");
        total += n[0];
    }
    assert_eq!(total, 15, "4 processes × 10 tries hold exactly the cap");
    assert_eq!(m.account("u").unwrap().held, credits(15));
}

// ----- the event log -----------------------------------------------------------------

#[test]
fn every_lifecycle_change_is_one_event_in_its_transaction() {
    let (m, _db) = manager();
    let (_, id) = funded(&m, "u", 100);
    let start = m.events(0, 1000).unwrap();
    let after = start.last().map_or(0, |e| e.id);
    m.disable_api_key(id, None).unwrap();
    m.disable_api_key(id, None).unwrap(); // no change: no event
    m.enable_api_key(id, None).unwrap();
    m.set_key_limit(id, Some(credits(7)), SpendWindow::Weekly, None).unwrap();
    let at = Timestamp(Timestamp::now().0 + 3_600_000_000);
    m.set_api_key_expiry(id, Some(at), None).unwrap();
    let new = m.rotate_api_key(id, 60, None).unwrap();
    m.revoke_api_key(id, None).unwrap();
    // Refused calls write nothing.
    assert!(m.rotate_api_key(id, 60, None).is_err());
    assert!(m.disable_api_key(id, Some("someone-else")).is_err());

    let events = m.events(after, 1000).unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["key.disabled", "key.enabled", "key.limit_set", "key.expiry_set", "key.rotated", "key.revoked"]);
    assert!(events.iter().all(|e| e.api_key_id == Some(id) && e.user_id == "u"));
    assert_eq!(events[2].data["limit"], "7");
    assert_eq!(events[2].data["window"], "weekly");
    assert_eq!(events[2].data["spent_in_window"], "0");
    assert_eq!(events[3].data["expires_at"], at.to_rfc3339());
    let rotated = &events[4].data;
    assert_eq!(rotated["old_key_id"], id.to_string());
    assert_eq!(rotated["new_key_id"], new.key_id.to_string());
    let grace_end = info(&m, "u", id).expires_at.unwrap();
    assert_eq!(rotated["grace_ends_at"], grace_end.to_rfc3339());
}
