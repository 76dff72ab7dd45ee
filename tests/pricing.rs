//! Pricing: every component of a model's price, price versions in effect
//! by time, the instant a settle is priced at, replays at their first price,
//! the rates each usage entry records and the audit's recomputation from
//! them, and bad input. On SQLite and, with `CREDITGATE_TEST_BACKEND=postgres`,
//! on PostgreSQL.

mod common;

use common::{all_entries, assert_audit_ok, credits, err_code, grant, key_for, micros};
use creditgate::{Config, Credits, ErrorCode, HoldAmount, KeyRef, ModelPrice, Settlement, TestClock, Timestamp, Usage};

const HOUR: i64 = 3_600_000_000;

/// 1 credit per 1k input, 100 µ per 1k cache reads, 1.25 per 1k cache
/// writes, 3 per 1k output, and a 7 µ fee.
fn cached_model() -> ModelPrice {
    ModelPrice {
        input_per_1k: credits(1),
        output_per_1k: credits(3),
        cached_input_per_1k: Some(micros(100_000)),
        cache_write_per_1k: Some(micros(1_250_000)),
        request_fee: micros(7),
    }
}

fn usage(input: i64, output: i64, cached: i64, write: i64, model: &str) -> Usage<'_> {
    Usage {
        input_tokens: input,
        output_tokens: output,
        model: Some(model),
        cached_input_tokens: cached,
        cache_write_tokens: write,
    }
}

fn clocked() -> (creditgate::CreditManager, TestClock, common::Guard) {
    let clock = TestClock::new();
    let (m, g) = common::manager_with(Config::new().test_clock(clock.clone()));
    (m, clock, g)
}

#[test]
fn every_component_is_charged_and_recorded_on_the_entry() {
    let (m, _db) = common::manager();
    m.set_model_pricing("cached", cached_model(), None).unwrap();
    grant(&m, "u", credits(6_000));
    let (key, key_id) = key_for(&m, "u");
    // 400 uncached × 1 + 500 read × 0.1 + 100 written × 1.25 + 10 out × 3 per 1k
    // = 0.4 + 0.05 + 0.125 + 0.03 = 0.605 credits, plus the 7 µ fee.
    let c = m.record_usage(KeyRef::Secret(&key), usage(1_000, 10, 500, 100, "cached"), Some("r1")).unwrap();
    assert_eq!(c.charged, micros(605_007));
    assert_eq!(c.tokens, 1_010, "tokens metered are the prompt and the output");
    let e = all_entries(&m, "u").into_iter().find(|e| e.id == c.entry_id).unwrap();
    assert_eq!((e.input_tokens, e.output_tokens), (Some(1_000), Some(10)));
    assert_eq!((e.cached_input_tokens, e.cache_write_tokens), (Some(500), Some(100)));
    assert_eq!(e.price, Some(cached_model()));
    assert_eq!(e.api_key_id, Some(key_id));
    // A model without cache prices charges cache tokens at its input price.
    m.set_model_price("plain", credits(2), credits(4)).unwrap();
    let with_cache = m.record_usage(KeyRef::Secret(&key), usage(1_000, 0, 600, 300, "plain"), None).unwrap();
    let without = m.record_usage(KeyRef::Secret(&key), usage(1_000, 0, 0, 0, "plain"), None).unwrap();
    assert_eq!(with_cache.charged, credits(2));
    assert_eq!(without.charged, credits(2));
    // The fee alone, for a call of no tokens; a model without a price uses the default.
    let fee_only = ModelPrice { request_fee: micros(250), ..ModelPrice::per_1k(Credits::ZERO, Credits::ZERO) };
    m.set_model_pricing("fee", fee_only, None).unwrap();
    assert_eq!(m.record_usage(KeyRef::Secret(&key), usage(0, 0, 0, 0, "fee"), None).unwrap().charged, micros(250));
    let default = m.record_usage(KeyRef::Secret(&key), usage(2_000, 0, 2_000, 0, "unpriced"), None).unwrap();
    assert_eq!(default.charged, credits(2), "the default price, 1 per 1k, cache reads included");
    assert_audit_ok(&m);
}

#[test]
fn a_hold_quotes_the_prompt_at_its_dearest_rate_and_covers_every_split() {
    let (m, _db) = common::manager();
    m.set_model_pricing("cached", cached_model(), None).unwrap();
    grant(&m, "u", credits(6_000));
    let (key, _) = key_for(&m, "u");
    // 1,000 prompt tokens at 1.25 (the cache-write rate) + 100 out × 3 + the fee.
    let worst = Usage::new(1_000, 100, Some("cached"));
    let h = m.reserve(&key, HoldAmount::Usage(worst), 60, None).unwrap();
    assert_eq!(h.amount, micros(1_250_000 + 300_000 + 7));
    // The dearest split (all written to the cache) settles within the hold.
    let c = m.settle(h.hold_id, Settlement::Tokens(usage(1_000, 100, 0, 1_000, "cached"))).unwrap();
    assert_eq!(c.charged, h.amount);
    // A cheaper split charges less than was held.
    let h = m.reserve(&key, HoldAmount::Usage(worst), 60, None).unwrap();
    let c = m.settle(h.hold_id, Settlement::Tokens(usage(1_000, 100, 1_000, 0, "cached"))).unwrap();
    assert_eq!(c.charged, micros(100_000 + 300_000 + 7));
    assert_audit_ok(&m);
}

#[test]
fn versions_take_effect_at_their_time_and_keep_their_history() {
    let (m, clock, _db) = clocked();
    grant(&m, "u", credits(6_000));
    let (key, _) = key_for(&m, "u");
    let v1 = m.set_model_pricing("m", ModelPrice::per_1k(credits(1), credits(1)), None).unwrap();
    let later = Timestamp(v1.effective_at.0 + HOUR);
    let v2 = m.set_model_pricing("m", ModelPrice::per_1k(credits(5), credits(5)), Some(later)).unwrap();
    assert_eq!(v2.effective_at, later);
    // Before the scheduled version: the first price, and the listing says so.
    let c = m.record_usage(KeyRef::Secret(&key), Usage::new(1_000, 0, Some("m")), None).unwrap();
    assert_eq!(c.charged, credits(1));
    assert_eq!(m.list_model_prices().unwrap()["m"], v1.price);
    clock.advance(2 * HOUR);
    let c = m.record_usage(KeyRef::Secret(&key), Usage::new(1_000, 0, Some("m")), None).unwrap();
    assert_eq!(c.charged, credits(5));
    assert_eq!(m.list_model_prices().unwrap()["m"], v2.price);
    let history = m.model_price_history(Some("m")).unwrap();
    assert_eq!(history, vec![v1.clone(), v2.clone()]);
    assert_eq!(m.model_price_history(None).unwrap(), history);
    assert!(m.model_price_history(Some("other")).unwrap().is_empty());
    // A scheduled version replaced at the same time keeps one row.
    let at = Timestamp(later.0 + 10 * HOUR);
    m.set_model_pricing("m", ModelPrice::per_1k(credits(7), credits(7)), Some(at)).unwrap();
    let v3 = m.set_model_pricing("m", ModelPrice::per_1k(credits(8), credits(8)), Some(at)).unwrap();
    let history = m.model_price_history(Some("m")).unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[2], v3);
    // The past cannot be repriced.
    let e = m.set_model_pricing("m", ModelPrice::per_1k(credits(9), credits(9)), Some(v1.effective_at));
    assert_eq!(err_code(e), ErrorCode::InvalidArgument);
    assert_eq!(m.model_price_history(Some("m")).unwrap().len(), 3);
    assert_audit_ok(&m);
}

#[test]
fn a_settle_is_priced_at_its_reserve_and_a_replay_at_its_first_charge() {
    let (m, _clock, _db) = clocked();
    grant(&m, "u", credits(6_000));
    let (key, _) = key_for(&m, "u");
    m.set_model_price("m", credits(1), credits(2)).unwrap();
    let h = m.reserve(&key, HoldAmount::Usage(Usage::new(1_000, 1_000, Some("m"))), 60, None).unwrap();
    assert_eq!(h.amount, credits(3));
    let first = m.record_usage(KeyRef::Secret(&key), Usage::new(1_000, 0, Some("m")), Some("req")).unwrap();
    assert_eq!(first.charged, credits(1));
    // The price triples between the reserve and its settle.
    let dear = ModelPrice::per_1k(credits(3), credits(6));
    m.set_model_pricing("m", dear, None).unwrap();
    let settled = m.settle(h.hold_id, Settlement::Tokens(Usage::new(1_000, 1_000, None))).unwrap();
    assert_eq!(settled.charged, credits(3), "the reserve's price, which the hold covers");
    let entry = all_entries(&m, "u").into_iter().find(|e| e.id == settled.entry_id).unwrap();
    assert_eq!(entry.price, Some(ModelPrice::per_1k(credits(1), credits(2))));
    // A replay returns the first charge at the first price; a new call pays the new one.
    let replay = m.record_usage(KeyRef::Secret(&key), Usage::new(1_000, 0, Some("m")), Some("req")).unwrap();
    assert!(replay.replayed);
    assert_eq!((replay.entry_id, replay.charged), (first.entry_id, credits(1)));
    let settle_again = m.settle(h.hold_id, Settlement::Tokens(Usage::new(1_000, 1_000, None))).unwrap();
    assert!(settle_again.replayed);
    assert_eq!(settle_again.charged, credits(3));
    let fresh = m.record_usage(KeyRef::Secret(&key), Usage::new(1_000, 0, Some("m")), Some("req2")).unwrap();
    assert_eq!(fresh.charged, credits(3));
    // The same request id with other cache counts is another call.
    let other = m.record_usage(KeyRef::Secret(&key), usage(1_000, 0, 10, 0, "m"), Some("req"));
    assert_eq!(err_code(other), ErrorCode::IdempotencyConflict);
    assert_audit_ok(&m);
}

#[test]
fn the_audit_recomputes_every_usage_charge_from_its_entry() {
    let (url, _g) = common::shared_url();
    let m = common::open(&url, Config::new());
    m.set_model_pricing("cached", cached_model(), None).unwrap();
    grant(&m, "u", credits(6_000));
    let (key, _) = key_for(&m, "u");
    for i in 0..5 {
        m.record_usage(KeyRef::Secret(&key), usage(1_000 + i, 10, 500, 100, "cached"), None).unwrap();
    }
    assert_audit_ok(&m);
    // A rate changed behind the library's back no longer explains its charge.
    common::raw_sql(
        &url,
        "UPDATE creditgate_entries SET output_rate = output_rate + 1000000 \
         WHERE seq = (SELECT MAX(seq) FROM creditgate_entries WHERE kind = 'usage')",
    );
    let a = m.audit().unwrap();
    assert!(!a.ok);
    assert_eq!(a.mismatches.len(), 1, "{:?}", a.mismatches);
    assert_eq!(a.mismatches[0].problem, "usage_charge");
    assert_eq!(a.mismatches[0].user_id, "u");
}

#[test]
fn bad_prices_and_counts_are_refused_and_change_nothing() {
    let (m, _db) = common::manager();
    grant(&m, "u", credits(6_000));
    let (key, _) = key_for(&m, "u");
    m.set_model_pricing("m", cached_model(), None).unwrap();
    let neg = micros(-1);
    let base = cached_model();
    let bad_prices = [
        ModelPrice { input_per_1k: neg, ..base },
        ModelPrice { output_per_1k: neg, ..base },
        ModelPrice { cached_input_per_1k: Some(neg), ..base },
        ModelPrice { cache_write_per_1k: Some(neg), ..base },
        ModelPrice { request_fee: neg, ..base },
        ModelPrice { request_fee: micros(creditgate::MAX_AMOUNT_MICROS + 1), ..base },
    ];
    for p in bad_prices {
        assert_eq!(err_code(m.set_model_pricing("m", p, None)), ErrorCode::InvalidArgument, "{p:?}");
    }
    assert_eq!(err_code(m.set_model_pricing("", base, None)), ErrorCode::InvalidArgument);
    assert_eq!(err_code(m.set_model_pricing(&"x".repeat(300), base, None)), ErrorCode::InvalidArgument);
    assert_eq!(err_code(m.set_model_pricing("m", base, Some(Timestamp(0)))), ErrorCode::InvalidArgument);
    assert_eq!(err_code(m.model_price_history(Some(""))), ErrorCode::InvalidArgument);
    assert_eq!(m.model_price_history(None).unwrap().len(), 1);
    let before = all_entries(&m, "u").len();
    let bad_usage = [
        usage(10, 0, 11, 0, "m"),
        usage(10, 0, 5, 6, "m"),
        usage(10, 0, -1, 0, "m"),
        usage(10, 0, 0, -1, "m"),
        usage(10, 0, creditgate::MAX_TOKENS_PER_CALL + 1, 0, "m"),
    ];
    for u in bad_usage {
        assert_eq!(err_code(m.record_usage(KeyRef::Secret(&key), u, None)), ErrorCode::InvalidArgument, "{u:?}");
        assert_eq!(err_code(m.reserve(&key, HoldAmount::Usage(u), 60, None)), ErrorCode::InvalidArgument);
    }
    let h = m.reserve(&key, HoldAmount::Usage(Usage::new(10, 0, Some("m"))), 60, None).unwrap();
    assert_eq!(err_code(m.settle(h.hold_id, Settlement::Tokens(usage(10, 0, 11, 0, "m")))), ErrorCode::InvalidArgument);
    assert_eq!(all_entries(&m, "u").len(), before);
    assert_audit_ok(&m);
}

#[test]
fn a_version_8_price_takes_effect_from_the_epoch_after_the_upgrade() {
    let (url, _g) = common::shared_url();
    let m = common::open(&url, Config::new());
    grant(&m, "u", credits(6_000));
    let (key, _) = key_for(&m, "u");
    m.record_usage(KeyRef::Secret(&key), Usage::new(1_000, 0, None), None).unwrap();
    drop(m);
    common::raw_sql(&url, common::UNDO_V13);
    common::raw_sql(&url, common::UNDO_V12);
    common::raw_sql(&url, common::UNDO_V11);
    common::raw_sql(&url, common::UNDO_V10);
    common::raw_sql(&url, common::UNDO_V9);
    common::raw_sql(&url, "INSERT INTO creditgate_model_prices VALUES ('old', 2000000, 4000000, 1700000000000000)");
    let m = common::open(&url, Config::new());
    let history = m.model_price_history(None).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!((history[0].model.as_str(), history[0].effective_at), ("old", Timestamp(0)));
    assert_eq!(history[0].price, ModelPrice::per_1k(credits(2), credits(4)));
    let c = m.record_usage(KeyRef::Secret(&key), Usage::new(1_000, 1_000, Some("old")), None).unwrap();
    assert_eq!(c.charged, credits(6));
    // The entry charged before the upgrade has no rates; the audit skips it.
    let entries = all_entries(&m, "u");
    assert_eq!(entries.iter().filter(|e| e.input_tokens.is_some() && e.price.is_none()).count(), 1);
    assert_audit_ok(&m);
}

#[test]
fn a_settle_charges_the_rates_its_hold_was_quoted_at_and_a_replay_is_quoted_alike() {
    let (url, _g) = common::shared_url();
    let m = common::open(&url, Config::new());
    grant(&m, "u", credits(6_000));
    let (key, _) = key_for(&m, "u");
    m.set_model_pricing("m", cached_model(), None).unwrap();
    let worst = Usage::new(1_000, 100, Some("m"));
    let h = m.reserve(&key, HoldAmount::Usage(worst), 60, Some("job")).unwrap();
    // The version table changes under the hold (on PostgreSQL a reserve can
    // begin before a concurrent price change commits, and read the old one).
    common::raw_sql(&url, "UPDATE creditgate_prices SET input_per_1k = input_per_1k * 100");
    let again = m.reserve(&key, HoldAmount::Usage(worst), 60, Some("job")).unwrap();
    assert!(again.replayed, "a retry is quoted at the first request's rates, not a conflict");
    assert_eq!((again.hold_id, again.amount), (h.hold_id, h.amount));
    // Another model is quoted at its own price: another amount, a conflict.
    m.set_model_price("cheap", micros(1), micros(1)).unwrap();
    let cheap = Usage::new(1_000, 100, Some("cheap"));
    assert_eq!(err_code(m.reserve(&key, HoldAmount::Usage(cheap), 60, Some("job"))), ErrorCode::IdempotencyConflict);
    let c = m.settle(h.hold_id, Settlement::Tokens(usage(1_000, 100, 500, 100, "m"))).unwrap();
    assert_eq!(c.charged, micros(605_007 - 30_000 + 300_000), "the quoted rates: 0.605 + 0.27 for 90 more output");
    let e = all_entries(&m, "u").into_iter().find(|e| e.id == c.entry_id).unwrap();
    assert_eq!(e.price, Some(cached_model()));
    // A settle naming another model is priced at that model's version of the reserve.
    m.set_model_price("other", credits(2), credits(2)).unwrap();
    let h = m.reserve(&key, HoldAmount::Usage(worst), 60, None).unwrap();
    let c = m.settle(h.hold_id, Settlement::Tokens(Usage::new(1_000, 0, Some("other")))).unwrap();
    assert_eq!(c.charged, credits(2));
    assert_audit_ok(&m);
}

#[test]
fn the_price_in_effect_adds_no_version_and_a_model_keeps_at_most_the_limit() {
    let (m, _db) = common::manager();
    let v = m.set_model_pricing("m", cached_model(), None).unwrap();
    let same = m.set_model_pricing("m", cached_model(), None).unwrap();
    assert_eq!(same, v, "setting the price in effect returns its version");
    assert_eq!(m.model_price_history(Some("m")).unwrap().len(), 1);
    let start = v.effective_at.0 + HOUR;
    let max = creditgate::limits::MAX_PRICE_VERSIONS as i64;
    for i in 1..max {
        let p = ModelPrice::per_1k(micros(i), micros(i));
        m.set_model_pricing("m", p, Some(Timestamp(start + i * HOUR))).unwrap();
    }
    assert_eq!(m.model_price_history(Some("m")).unwrap().len(), max as usize);
    let one_more = m.set_model_pricing("m", ModelPrice::per_1k(micros(1), micros(2)), Some(Timestamp(start)));
    assert_eq!(err_code(one_more), ErrorCode::LimitReached);
    // Replacing a scheduled version at the limit is allowed; other models are not affected.
    let at = Timestamp(start + 5 * HOUR);
    m.set_model_pricing("m", ModelPrice::per_1k(micros(9), micros(9)), Some(at)).unwrap();
    assert_eq!(m.model_price_history(Some("m")).unwrap().len(), max as usize);
    m.set_model_price("n", credits(1), credits(1)).unwrap();
}

#[test]
fn settles_match_their_holds_while_another_thread_reprices() {
    let (m, _db) = common::manager();
    grant(&m, "u", credits(100_000_000));
    let (key, _) = key_for(&m, "u");
    m.set_model_price("m", credits(1), credits(1)).unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let setter = {
        let (m, done) = (m.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 0..300 {
                let p = if i % 2 == 0 { 100 } else { 1 };
                m.set_model_price("m", credits(p), credits(p)).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let (mut settled, mut dear) = (0, 0);
    while !done.load(std::sync::atomic::Ordering::SeqCst) || settled < 20 {
        let u = Usage::new(1_000, 0, Some("m"));
        let h = m.reserve(&key, HoldAmount::Usage(u), 60, None).unwrap();
        let c = m.settle(h.hold_id, Settlement::Tokens(u)).unwrap();
        assert_eq!(c.charged, h.amount, "a settle charges what its hold was quoted");
        settled += 1;
        dear += usize::from(h.amount == credits(100));
    }
    setter.join().unwrap();
    assert!(settled >= 20 && dear <= settled);
    assert_audit_ok(&m);
}
