//! The seed's four acceptance scenarios, step by step, on a throw-away
//! in-memory SQLite ledger:
//!
//! ```text
//! cargo run --release --example seed_scenarios
//! ```
//!
//! 1. A new user tries to generate an API key → 402 Payment Required.
//! 2. The user pays $5 (5,000 credits) → the key is generated.
//! 3. Calls with the key → the balance drops by tokens/1000 credits each.
//! 4. The key is used until credits run low → the next call gets 402.
//!
//! Plus the promises around them: a second key needs only 1 credit, a legacy
//! key keeps working and is charged, a duplicated payment webhook credits
//! once, a refund takes its credits back, and the audit always balances.
//! Exits non-zero when any step does not behave as the spec says.

use creditgate::{Config, CreditManager, Credits, EntryKind, EntryOptions, Error, KeyRef, Usage};
use std::process::ExitCode;

type Step<T = ()> = Result<T, String>;

fn credits(c: i64) -> Credits {
    Credits::from_credits(c).expect("small amount")
}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Step {
    if ok { Ok(()) } else { Err(what()) }
}

fn fail(e: Error) -> String {
    format!("unexpected error: {e} (HTTP {})", e.http_status())
}

fn balance(m: &CreditManager, user: &str) -> Step<Credits> {
    m.get_balance(user).map_err(fail)
}

fn audit(m: &CreditManager) -> Step {
    let a = m.audit().map_err(fail)?;
    println!("   audit: ok={} ({} accounts, {} entries)", a.ok, a.accounts_checked, a.entries_checked);
    ensure(a.ok, || format!("audit found mismatches: {:?}", a.mismatches))
}

/// Expects a 402 and prints it.
fn expect_402<T>(what: &str, r: creditgate::Result<T>) -> Step {
    match r {
        Err(e @ Error::InsufficientCredits { .. }) => {
            println!("   {what} → HTTP {} Payment Required: {e}", e.http_status());
            Ok(())
        }
        Err(e) => Err(format!("{what}: expected 402, got {e}")),
        Ok(_) => Err(format!("{what}: expected 402, but it succeeded")),
    }
}

fn scenario_1(m: &CreditManager, user: &str) -> Step {
    println!("\n1. A new user tries to generate an API key");
    let e = m.can_generate_api_key(user).map_err(fail)?;
    println!(
        "   can_generate_api_key: allowed={} first_key={} required={} available={}",
        e.allowed, e.is_first_key, e.required, e.available
    );
    ensure(!e.allowed, || "a new user must not be allowed a key".into())?;
    expect_402("create_api_key", m.create_api_key(user, Some("production")))?;
    audit(m)
}

fn scenario_2(m: &CreditManager, user: &str) -> Step<String> {
    println!("\n2. The user pays $5 → 5,000 credits → the key is generated");
    let p = m.record_payment(user, "pi_demo_5usd", 500, "USD").map_err(fail)?;
    println!("   record_payment(500 cents USD): +{} credits, balance {}", p.amount, p.balance_after);
    ensure(p.amount == credits(5000), || format!("$5 bought {} credits, not 5000", p.amount))?;
    let key = m.create_api_key(user, Some("production")).map_err(fail)?;
    println!("   create_api_key: key {} (prefix {}…), secret shown once", key.key_id, key.prefix);
    println!("   balance {} (creating a key costs nothing)", balance(m, user)?);
    audit(m)?;
    Ok(key.secret.expose().to_string())
}

fn scenario_3(m: &CreditManager, user: &str, key: &str) -> Step {
    println!("\n3. Calls with the key: 1 credit per 1,000 tokens");
    for (i, tokens) in [1_000_i64, 2_500, 40_000, 150].into_iter().enumerate() {
        let v = m.verify_api_key_credits(key, credits(1)).map_err(fail)?;
        let before = v.available;
        let usage = Usage::new(tokens, 0, None);
        let c = m.record_usage(KeyRef::Secret(key), usage, Some(&format!("call-{i}"))).map_err(fail)?;
        println!("   call {}: {tokens:>6} tokens → charged {:>6}, balance {}", i + 1, c.charged, c.balance);
        let expected = Credits::from_micros(tokens * 1000);
        ensure(c.charged == expected, || format!("{tokens} tokens cost {}, expected {expected}", c.charged))?;
        ensure(before.checked_sub(c.charged).ok() == Some(c.balance), || "balance did not drop by the charge".into())?;
    }
    ensure(balance(m, user)? == "4956.35".parse().unwrap(), || "balance after the calls".into())?;
    audit(m)
}

fn scenario_4(m: &CreditManager, user: &str, key: &str) -> Step {
    println!("\n4. Use the key until credits run low");
    let mut calls = 0;
    loop {
        match m.verify_api_key_credits(key, credits(1)) {
            Ok(_) => {
                let usage = Usage::new(900_000, 0, None);
                let c = m.record_usage(KeyRef::Secret(key), usage, None).map_err(fail)?;
                calls += 1;
                println!(
                    "   big call {calls}: charged {}, balance {}, overdraft={}",
                    c.charged, c.balance, c.overdraft
                );
            }
            Err(e @ Error::InsufficientCredits { .. }) => {
                println!("   next call: verify_api_key_credits → HTTP {} Payment Required: {e}", e.http_status());
                break;
            }
            Err(e) => return Err(fail(e)),
        }
        ensure(calls < 100, || "credits never ran low".into())?;
    }
    println!("   balance {} (the last call was charged in full: usage is never lost)", balance(m, user)?);
    audit(m)
}

fn extras(m: &CreditManager, user: &str) -> Step {
    println!("\nPlus: a second key needs only 1 credit");
    expect_402("create_api_key with a negative balance", m.create_api_key(user, Some("staging")))?;
    let p = m.record_payment(user, "pi_demo_topup", 100, "USD").map_err(fail)?;
    println!("   record_payment(100 cents): +{} credits, balance {}", p.amount, p.balance_after);
    let e = m.can_generate_api_key(user).map_err(fail)?;
    println!("   can_generate_api_key: allowed={} first_key={} required={}", e.allowed, e.is_first_key, e.required);
    ensure(e.allowed && !e.is_first_key && e.required == credits(1), || "later keys need 1 credit".into())?;
    let k = m.create_api_key(user, Some("staging")).map_err(fail)?;
    println!("   create_api_key: second key {}", k.key_id);

    println!("\nPlus: a legacy key keeps working and is charged");
    let legacy_user = "legacy-user";
    let legacy_secret = "pre-creditgate-key-0001";
    let opts = EntryOptions::default();
    m.add_credits(legacy_user, credits(20), EntryKind::Adjustment, &opts).map_err(fail)?;
    let info = m.import_api_key(legacy_user, Some(legacy_secret), None, Some("v1 key")).map_err(fail)?;
    println!("   import_api_key: key {} legacy={} prefix {:?}", info.key_id, info.legacy, info.prefix);
    let usage = Usage::new(3_000, 0, None);
    let c = m.record_usage(KeyRef::Secret(legacy_secret), usage, None).map_err(fail)?;
    println!("   legacy call: 3000 tokens → charged {}, balance {}", c.charged, c.balance);
    ensure(c.balance == credits(17), || "the legacy key was not charged".into())?;

    println!("\nPlus: a duplicated payment webhook credits once");
    let buyer = "buyer";
    let first = m.record_payment(buyer, "pi_demo_dup", 2000, "USD").map_err(fail)?;
    let second = m.record_payment(buyer, "pi_demo_dup", 2000, "USD").map_err(fail)?;
    println!("   delivery 1: replayed={} balance {}", first.replayed, first.balance_after);
    println!("   delivery 2: replayed={} balance {}", second.replayed, balance(m, buyer)?);
    ensure(second.replayed && balance(m, buyer)? == credits(20_000), || "the webhook credited twice".into())?;

    println!("\nPlus: a refunded payment takes its credits back");
    let r = m.reverse_payment("pi_demo_dup", None, Some("customer refund"), None).map_err(fail)?;
    println!("   reverse_payment: {} credits, balance {}", r.amount, r.balance_after);
    ensure(balance(m, buyer)? == Credits::ZERO, || "the refund did not take the credits back".into())?;
    audit(m)
}

fn run() -> Step {
    let m = CreditManager::open(Config::new().database_url("sqlite:///:memory:")).map_err(fail)?;
    println!("creditgate seed scenarios on {}", m.database_url());
    let user = "new-user";
    scenario_1(&m, user)?;
    let key = scenario_2(&m, user)?;
    scenario_3(&m, user, &key)?;
    scenario_4(&m, user, &key)?;
    extras(&m, user)?;
    let r = m.report().map_err(fail)?;
    println!(
        "\nreport: {} users, {} paying, key attempts {} ({} succeeded), revenue {} cents, credits used {}",
        r.users,
        r.paying_users,
        r.key_generation_attempts,
        r.key_generation_successes,
        r.revenue_usd_minor,
        r.credits_used
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            println!("\nAll scenarios behaved as specified.");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("\nFAILED: {msg}");
            ExitCode::FAILURE
        }
    }
}
