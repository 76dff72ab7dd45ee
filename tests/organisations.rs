//! Organisation wallets and refilling allowances (issue 19), on both
//! backends: members and projects spending from threads and processes
//! never over-commit the organisation or a budget; three processes at a
//! period boundary write one refill; the 402's `limit_source`; budget
//! windows and `budget.low`; leaving an organisation; allowances with and
//! without rollover, scoped ones, pending refills on reads, the sweep; and
//! every new call's bad input leaving the ledger as it was.

mod common;

use common::{NO_OPTS, assert_audit_ok, credits, err_code, micros};
use creditgate::{
    AllowanceSpec, BudgetLimit, BudgetScope, Config, CreditManager, Credits, EntryKind, Error, ErrorCode, EventKind,
    HoldAmount, KeyId, KeyRef, LimitSource, Settlement, SpendWindow, TestClock, Timestamp,
};
use std::thread;

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;

// ----- helpers ---------------------------------------------------------------

/// Keys cost nothing to create here (the key rule is tests/key_policy.rs's).
fn config(clock: &TestClock) -> Config {
    Config::new().min_credits_api_key(Credits::ZERO).unwrap().test_clock(clock.clone())
}

fn clocked() -> (CreditManager, TestClock, common::Guard) {
    let clock = TestClock::new();
    let (m, g) = common::manager_with(config(&clock));
    (m, clock, g)
}

/// The ledger's clock now (the server's on PostgreSQL, shifted by the test
/// clock): the time of a throw-away entry.
fn ledger_now(m: &CreditManager) -> Timestamp {
    m.add_credits("clock-probe", micros(1), EntryKind::Grant, &NO_OPTS).unwrap().created_at
}

/// A key of `user` (charged to its organisation while it is a member),
/// optionally in `project`.
fn key(m: &CreditManager, user: &str, project: Option<&str>) -> (String, KeyId) {
    let k = m.create_api_key(user, None).unwrap();
    if project.is_some() {
        m.set_key_project(k.key_id, project).unwrap();
    }
    (k.secret.expose().to_string(), k.key_id)
}

fn budget(limit: i64, window: SpendWindow) -> Option<BudgetLimit> {
    Some(BudgetLimit { limit: credits(limit), window, low_threshold: None })
}

/// Holds `amount` credits through `secret` and settles them in full.
fn spend(m: &CreditManager, secret: &str, amount: i64) {
    let h = m.reserve(secret, HoldAmount::Credits(credits(amount)), 60, None).unwrap();
    m.settle(h.hold_id, Settlement::Credits(credits(amount))).unwrap();
}

/// The limit that refused a call and what it leaves.
#[track_caller]
fn refusal<T: std::fmt::Debug>(r: creditgate::Result<T>) -> (LimitSource, Credits) {
    match r {
        Err(Error::InsufficientCredits { limit_source, available, .. }) => (limit_source, available),
        other => panic!("expected InsufficientCredits, got {other:?}"),
    }
}

/// Events of `kind`, once at least `want` show (on PostgreSQL an event is
/// readable only when every older transaction on the server has finished).
fn events_of(m: &CreditManager, kind: EventKind, want: usize) -> Vec<creditgate::Event> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let got: Vec<_> = m.events(0, 1000).unwrap().into_iter().filter(|e| e.kind == kind).collect();
        if got.len() >= want || std::time::Instant::now() > deadline {
            return got;
        }
        thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn entries_of(m: &CreditManager, user: &str, kind: EntryKind) -> Vec<creditgate::Entry> {
    common::all_entries(m, user).into_iter().filter(|e| e.kind == kind).collect()
}

fn allowance(user: &str, amount: i64, period: SpendWindow, cap: Option<i64>) -> AllowanceSpec<'_> {
    AllowanceSpec { user, member: None, key: None, amount: credits(amount), period, rollover_cap: cap.map(credits) }
}

/// The remaining credits of `user`'s grants issued by `allowance_id`.
fn allowance_live(m: &CreditManager, user: &str, allowance_id: i64) -> Credits {
    let sum = m
        .account(user)
        .unwrap()
        .grants
        .iter()
        .filter(|g| g.allowance_id == Some(allowance_id))
        .map(|g| g.remaining.micros())
        .sum();
    micros(sum)
}

/// Moves `clock` just past the end of `window`'s current period (by the
/// ledger's clock): the next call is in the next period.
fn past_period_end(m: &CreditManager, clock: &TestClock, window: SpendWindow) {
    let now = ledger_now(m);
    let end = window.bounds(now).1;
    clock.advance(end.0 - now.0 + 60_000_000);
}

// ----- 1. members spending from threads and processes --------------------------

const SPEND_ENV: &str = "CREDITGATE_TEST_ORG_SPEND_CHILD";
/// Credits each hold takes.
const HOLD: i64 = 8;

/// What a spending worker saw, per key: holds placed (each settled or
/// released), and refusals by the limit that bound.
#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    settled: [i64; 4],
    refused_by: [u64; 4],
}

impl Tally {
    fn add(&mut self, o: Tally) {
        for i in 0..4 {
            self.settled[i] += o.settled[i];
            self.refused_by[i] += o.refused_by[i];
        }
    }
    fn line(&self) -> String {
        let settled = self.settled.map(|v| v.to_string()).join(" ");
        let refused = self.refused_by.map(|v| v.to_string()).join(" ");
        format!("ORG-TALLY {settled} {refused}")
    }
    fn parse(out: &str) -> Tally {
        let l = out.lines().find_map(|l| l.find("ORG-TALLY ").map(|i| &l[i + 10..])).expect("a tally line");
        let v: Vec<i64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
        let mut t = Tally::default();
        for i in 0..4 {
            t.settled[i] = v[i];
            t.refused_by[i] = v[4 + i] as u64;
        }
        t
    }
}

fn source_index(s: LimitSource) -> usize {
    match s {
        LimitSource::Account => 0,
        LimitSource::Key => 1,
        LimitSource::Member => 2,
        LimitSource::Project => 3,
        _ => panic!("unknown limit source {s:?}"),
    }
}

/// Reserves `HOLD` through the keys in turn, settling (or now and then
/// releasing) each hold, until every key has been refused 3 times running.
fn spend_worker(m: &CreditManager, keys: &[String], seed: usize) -> Tally {
    let mut t = Tally::default();
    let mut refused_running = vec![0u32; keys.len()];
    let mut i = seed;
    while refused_running.iter().any(|&r| r < 3) {
        let k = i % keys.len();
        i += 1;
        if refused_running[k] >= 3 {
            continue;
        }
        match m.reserve(&keys[k], HoldAmount::Credits(credits(HOLD)), 60, None) {
            Ok(h) => {
                refused_running[k] = 0;
                if i.is_multiple_of(5) {
                    m.release(h.hold_id).unwrap();
                } else {
                    m.settle(h.hold_id, Settlement::Credits(credits(HOLD))).unwrap();
                    t.settled[k] += HOLD;
                }
            }
            Err(Error::InsufficientCredits { limit_source, .. }) => {
                refused_running[k] += 1;
                t.refused_by[source_index(limit_source)] += 1;
                thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    t
}

/// Child side of `members_spending_from_threads_and_processes_never_overcommit`.
#[test]
#[ignore = "run by members_spending_from_threads_and_processes_never_overcommit in a child process"]
fn org_spend_child() {
    let Ok(spec) = std::env::var(SPEND_ENV) else { return };
    let parts: Vec<&str> = spec.split('\t').collect();
    let (worker, url, keys) = (parts[0].parse::<usize>().unwrap(), parts[1], &parts[2..]);
    let keys: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
    let m = common::open(url, Config::new());
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let (m, keys) = (m.clone(), keys.clone());
            thread::spawn(move || spend_worker(&m, &keys, worker * 10 + t))
        })
        .collect();
    let mut total = Tally::default();
    for t in threads {
        total.add(t.join().unwrap());
    }
    println!("{}", total.line());
}

/// An organisation with two members, a project and its own capped key,
/// every one with a limit: threads here and processes elsewhere hold and
/// settle through all four keys until refused. No limit is ever
/// over-committed. The limits (multiples of `HOLD`) leave at least 640
/// credits to spend when every key is stopped by its own limits, more than
/// the organisation's 600: when nothing more can be held, the
/// organisation's balance is spent to the last credit and no further.
#[test]
fn members_spending_from_threads_and_processes_never_overcommit() {
    let (url, _g) = common::shared_url();
    let m = common::open(&url, config(&TestClock::new()));
    common::grant(&m, "org", credits(600));
    m.add_member("org", "alice").unwrap();
    m.add_member("org", "bob").unwrap();
    m.create_project("org", "p").unwrap();
    // Keys: alice's in p, bob's in p, bob's outside, the organisation's own.
    let keys = [key(&m, "alice", Some("p")), key(&m, "bob", Some("p")), key(&m, "bob", None), key(&m, "org", None)];
    m.set_budget("org", BudgetScope::Member("alice"), budget(160, SpendWindow::Lifetime)).unwrap();
    m.set_budget("org", BudgetScope::Member("bob"), budget(400, SpendWindow::Monthly)).unwrap();
    m.set_budget("org", BudgetScope::Project("p"), budget(240, SpendWindow::Lifetime)).unwrap();
    m.set_key_limit(keys[3].1, Some(credits(240)), SpendWindow::Lifetime, None).unwrap();
    let secrets: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();

    let children: Vec<_> = (0..3)
        .map(|w| common::spawn_child_test("org_spend_child", SPEND_ENV, format!("{w}\t{url}\t{}", secrets.join("\t"))))
        .collect();
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let (m, s) = (m.clone(), secrets.clone());
            thread::spawn(move || spend_worker(&m, &s, 100 + t))
        })
        .collect();
    let mut total = Tally::default();
    for t in threads {
        total.add(t.join().unwrap());
    }
    for c in children {
        total.add(Tally::parse(&common::child_output(c)));
    }
    // Nothing runs now: take what a worker left when it stopped on a
    // refusal while others' holds (later released) were in flight.
    total.add(spend_worker(&m, &secrets, 0));
    println!("{total:?}");

    let [alice, bob_p, bob_own, org_own] = total.settled;
    assert!(alice <= 160, "alice's budget over-committed: {total:?}");
    assert!(bob_p + bob_own <= 400, "bob's budget over-committed: {total:?}");
    assert!(alice + bob_p <= 240, "the project's budget over-committed: {total:?}");
    assert!(org_own <= 240, "the key cap over-committed: {total:?}");
    assert_eq!(alice + bob_p + bob_own + org_own, 600, "the organisation's balance, all of it: {total:?}");
    let acct = m.account("org").unwrap();
    assert_eq!((acct.balance, acct.held), (Credits::ZERO, Credits::ZERO));
    assert!(total.refused_by[source_index(LimitSource::Account)] > 0, "{total:?}");
    // The members' own accounts were never touched.
    assert_eq!(m.get_balance("alice").unwrap(), Credits::ZERO);
    assert_eq!(m.get_balance("bob").unwrap(), Credits::ZERO);

    // What each budget counts is the sum of its usage entries.
    let usage_of = |member: &str, keys_in: &[KeyId]| -> i64 {
        common::all_entries(&m, "org")
            .iter()
            .filter(|e| e.kind == EntryKind::Usage && e.member_id.as_deref() == Some(member))
            .filter(|e| keys_in.is_empty() || e.api_key_id.is_some_and(|k| keys_in.contains(&k)))
            .map(|e| -e.amount.micros())
            .sum()
    };
    assert_eq!(usage_of("alice", &[]), alice * 1_000_000);
    assert_eq!(usage_of("bob", &[]), (bob_p + bob_own) * 1_000_000);
    assert_eq!(usage_of("bob", &[keys[1].1]), bob_p * 1_000_000);
    let members = m.members("org").unwrap();
    let spent = |who: &str| members.iter().find(|x| x.user_id == who).unwrap().budget.as_ref().unwrap().spent;
    assert_eq!(spent("alice"), credits(alice));
    assert_eq!(spent("bob"), credits(bob_p + bob_own));
    let p = m.projects("org").unwrap().remove(0);
    assert_eq!(p.budget.unwrap().spent, credits(alice + bob_p));
    assert_eq!(p.keys, 2);
    let usage = m.member_usage("org", None).unwrap();
    let by = |who: &str| usage.iter().find(|u| u.member_id == who).unwrap().credits;
    assert_eq!((by("alice"), by("bob")), (credits(alice), credits(bob_p + bob_own)));
    let alice_entries = m.member_transactions("org", "alice", 1000, None).unwrap();
    assert!(alice_entries.iter().all(|e| e.member_id.as_deref() == Some("alice")));
    assert_eq!(alice_entries.iter().filter(|e| e.kind == EntryKind::Usage).count() as i64, alice / HOLD);
    assert_audit_ok(&m);
}

// ----- 2. three processes at a period boundary ---------------------------------

const BOUNDARY_ENV: &str = "CREDITGATE_TEST_ORG_BOUNDARY_CHILD";

/// Child side of `three_processes_at_a_period_boundary_write_one_refill`:
/// `<clock offset µs>\t<url>\t<start at, ms since the epoch>\t<key>`.
#[test]
#[ignore = "run by three_processes_at_a_period_boundary_write_one_refill in a child process"]
fn org_boundary_child() {
    let Ok(spec) = std::env::var(BOUNDARY_ENV) else { return };
    let parts: Vec<&str> = spec.split('\t').collect();
    let clock = TestClock::new();
    clock.advance(parts[0].parse().unwrap());
    let m = common::open(parts[1], config(&clock));
    let start: u128 = parts[2].parse().unwrap();
    while std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() < start {
        thread::sleep(std::time::Duration::from_millis(1));
    }
    // Different writes on the account, all at once.
    for i in 0..5 {
        m.record_usage(KeyRef::Secret(parts[3]), common::tokens(100), None).unwrap();
        m.add_credits("org", micros(1), EntryKind::Grant, &NO_OPTS).unwrap();
        if i == 2 {
            m.expire_grants(10).unwrap();
        }
    }
}

#[test]
fn three_processes_at_a_period_boundary_write_one_refill() {
    let (url, _g) = common::shared_url();
    let clock = TestClock::new();
    let m = common::open(&url, config(&clock));
    m.add_member("org", "alice").unwrap();
    let (secret, _) = key(&m, "alice", None);
    let a = m.set_allowance(&allowance("org", 100, SpendWindow::Monthly, None)).unwrap();
    assert_eq!(entries_of(&m, "org", EntryKind::Allowance).len(), 1, "the current period at once");
    past_period_end(&m, &clock, SpendWindow::Monthly);
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() + 700;
    let children: Vec<_> = (0..3)
        .map(|_| {
            let spec = format!("{}\t{url}\t{start}\t{secret}", clock.offset_micros());
            common::spawn_child_test("org_boundary_child", BOUNDARY_ENV, spec)
        })
        .collect();
    for c in children {
        common::child_output(c);
    }
    let refills = entries_of(&m, "org", EntryKind::Allowance);
    assert_eq!(refills.len(), 2, "exactly one refill for the new period: {refills:?}");
    let events = events_of(&m, EventKind::AllowanceRefilled, 2);
    assert_eq!(events.len(), 2);
    let period_starts: std::collections::BTreeSet<_> =
        events.iter().map(|e| e.data["period_start"].as_str().unwrap().to_string()).collect();
    assert_eq!(period_starts.len(), 2, "one refill per period: {events:?}");
    assert!(events.iter().all(|e| e.data["allowance_id"].as_i64() == Some(a.allowance_id)));
    assert_eq!(m.expire_grants(100).unwrap().refills, 0);
    assert_audit_ok(&m);
}

// ----- 3. limit_source, windows, budget.low, leaving -----------------------------

#[test]
fn verify_and_reserve_name_the_binding_limit() {
    let (m, _clock, _g) = clocked();
    common::grant(&m, "org", credits(100));
    m.add_member("org", "alice").unwrap();
    m.create_project("org", "p").unwrap();
    let (secret, key_id) = key(&m, "alice", Some("p"));
    m.set_budget("org", BudgetScope::Member("alice"), budget(60, SpendWindow::Daily)).unwrap();
    m.set_budget("org", BudgetScope::Project("p"), budget(40, SpendWindow::Weekly)).unwrap();
    m.set_key_limit(key_id, Some(credits(20)), SpendWindow::Monthly, None).unwrap();

    let v = m.verify_api_key_credits(&secret, credits(1)).unwrap();
    assert_eq!(v.user_id, "alice", "the key's owner; its available credits are the organisation's");
    assert_eq!(
        (v.available, v.key_remaining, v.member_remaining, v.project_remaining),
        (credits(100), Some(credits(20)), Some(credits(60)), Some(credits(40)))
    );
    let hold = |n: i64| m.reserve(&secret, HoldAmount::Credits(credits(n)), 60, None);
    let check = |n: i64, want: (LimitSource, Credits)| {
        assert_eq!(refusal(m.verify_api_key_credits(&secret, credits(n))), want, "verify {n}");
        assert_eq!(refusal(hold(n)), want, "reserve {n}");
    };
    check(25, (LimitSource::Key, credits(20)));
    m.set_key_limit(key_id, None, SpendWindow::Monthly, None).unwrap();
    check(45, (LimitSource::Project, credits(40)));
    m.set_budget("org", BudgetScope::Project("p"), None).unwrap();
    check(65, (LimitSource::Member, credits(60)));
    // A hold through the key counts against the member budget's remaining.
    let h = hold(15).unwrap();
    check(50, (LimitSource::Member, credits(45)));
    m.release(h.hold_id).unwrap();
    m.set_budget("org", BudgetScope::Member("alice"), None).unwrap();
    check(105, (LimitSource::Account, credits(100)));
    // On a tie the account is named.
    m.set_budget("org", BudgetScope::Member("alice"), budget(100, SpendWindow::Daily)).unwrap();
    check(105, (LimitSource::Account, credits(100)));
    assert_eq!(m.get_balance("org").unwrap(), credits(100), "refusals charged nothing");
    assert_audit_ok(&m);
}

#[test]
fn budget_windows_reset_with_the_clock() {
    let (m, clock, _g) = clocked();
    common::grant(&m, "org", credits(1000));
    m.add_member("org", "alice").unwrap();
    m.create_project("org", "p").unwrap();
    let (secret, _) = key(&m, "alice", Some("p"));
    let windows = [(SpendWindow::Daily, DAY), (SpendWindow::Weekly, 7 * DAY), (SpendWindow::Monthly, 32 * DAY)];
    for (window, step) in windows {
        for scope in [BudgetScope::Member("alice"), BudgetScope::Project("p")] {
            // A new window of this kind: the earlier spending is outside it.
            clock.advance(step);
            let other = match scope {
                BudgetScope::Member(_) => BudgetScope::Project("p"),
                BudgetScope::Project(_) => BudgetScope::Member("alice"),
            };
            m.set_budget("org", other, None).unwrap();
            m.set_budget("org", scope, budget(10, window)).unwrap();
            spend(&m, &secret, 10);
            let want = if matches!(scope, BudgetScope::Member(_)) { LimitSource::Member } else { LimitSource::Project };
            assert_eq!(refusal(m.verify_api_key_credits(&secret, credits(1))), (want, Credits::ZERO), "{window:?}");
            let resets_at = match scope {
                BudgetScope::Member(_) => m.members("org").unwrap()[0].budget.clone().unwrap().resets_at,
                BudgetScope::Project(_) => m.projects("org").unwrap()[0].budget.clone().unwrap().resets_at,
            };
            let now = ledger_now(&m);
            assert_eq!(resets_at, Some(window.bounds(now).1));
            clock.advance(step);
            let v = m.verify_api_key_credits(&secret, credits(10)).unwrap();
            assert_eq!(v.spendable(), credits(10), "{window:?} {scope:?}: a new window");
            let b = match scope {
                BudgetScope::Member(_) => m.members("org").unwrap()[0].budget.clone().unwrap(),
                BudgetScope::Project(_) => m.projects("org").unwrap()[0].budget.clone().unwrap(),
            };
            assert_eq!((b.spent, b.remaining), (Credits::ZERO, credits(10)));
        }
    }
    // A lifetime budget never resets.
    m.set_budget("org", BudgetScope::Project("p"), None).unwrap();
    m.set_budget("org", BudgetScope::Member("alice"), budget(10, SpendWindow::Lifetime)).unwrap();
    let spent_so_far = m.members("org").unwrap()[0].budget.clone().unwrap().spent;
    assert_eq!(spent_so_far, credits(60), "setting a lifetime budget counts all the member's usage");
    assert!(m.members("org").unwrap()[0].budget.clone().unwrap().resets_at.is_none());
    clock.advance(400 * DAY);
    assert_eq!(refusal(m.verify_api_key_credits(&secret, credits(1))), (LimitSource::Member, credits(-50)));
    assert_audit_ok(&m);
}

#[test]
fn budget_low_fires_once_per_crossing() {
    let (m, clock, _g) = clocked();
    common::grant(&m, "org", credits(1000));
    m.add_member("org", "alice").unwrap();
    let (secret, _) = key(&m, "alice", None);
    let limit = BudgetLimit { limit: credits(100), window: SpendWindow::Daily, low_threshold: Some(credits(30)) };
    m.set_budget("org", BudgetScope::Member("alice"), Some(limit)).unwrap();
    // Remaining 80, 60, 40, 20 (crossed), 0: one event.
    for _ in 0..5 {
        spend(&m, &secret, 20);
    }
    // Charges past the limit (record_usage is never refused) cross nothing new.
    m.record_usage(KeyRef::Secret(&secret), common::tokens(100_000), None).unwrap();
    let low = events_of(&m, EventKind::BudgetLow, 1);
    assert_eq!(low.len(), 1, "{low:?}");
    let d = &low[0].data;
    assert_eq!((d["scope"].as_str(), d["name"].as_str()), (Some("member"), Some("alice")));
    assert_eq!(d["remaining"].as_str(), Some(credits(20).to_string().as_str()));
    assert_eq!(d["threshold"].as_str(), Some(credits(30).to_string().as_str()));
    let entry = &m.member_transactions("org", "alice", 1000, None).unwrap()[2];
    assert_eq!(d["entry_id"].as_str(), Some(entry.id.to_string().as_str()), "the fourth settlement crossed it");
    // A new window: a new crossing.
    clock.advance(DAY);
    for _ in 0..4 {
        spend(&m, &secret, 20);
    }
    assert_eq!(events_of(&m, EventKind::BudgetLow, 2).len(), 2);
    assert_audit_ok(&m);
}

#[test]
fn a_member_that_leaves_charges_its_own_account_again() {
    let (m, _clock, _g) = clocked();
    common::grant(&m, "org", credits(100));
    common::grant(&m, "alice", credits(50));
    m.add_member("org", "alice").unwrap();
    m.create_project("org", "p").unwrap();
    let (secret, key_id) = key(&m, "alice", Some("p"));
    m.set_budget("org", BudgetScope::Member("alice"), budget(80, SpendWindow::Monthly)).unwrap();
    m.set_key_limit(key_id, Some(credits(70)), SpendWindow::Monthly, None).unwrap();
    assert_eq!(m.account("alice").unwrap().organisation.as_deref(), Some("org"));
    let hold = m.reserve(&secret, HoldAmount::Credits(credits(10)), 60, None).unwrap();
    assert_eq!(hold.user_id, "org");
    assert_eq!(m.account("org").unwrap().held, credits(10));

    m.remove_member("org", "alice").unwrap();
    assert!(m.members("org").unwrap().is_empty());
    assert_eq!(m.account("alice").unwrap().organisation, None);
    assert_eq!(
        err_code(m.set_budget("org", BudgetScope::Member("alice"), budget(5, SpendWindow::Daily))),
        ErrorCode::NotFound
    );
    assert_eq!(m.projects("org").unwrap()[0].keys, 0, "its key left the project");
    let info = m.list_api_keys("alice").unwrap();
    assert_eq!(info[0].project, None);
    // Its key charges its own account; the cap stays with the key.
    let v = m.verify_api_key_credits(&secret, credits(1)).unwrap();
    assert_eq!((v.user_id.as_str(), v.available, v.member_remaining), ("alice", credits(50), None));
    assert_eq!(v.key_remaining, Some(credits(60)), "the cap counts the hold it placed");
    let c = m.record_usage(KeyRef::Secret(&secret), common::tokens(1000), None).unwrap();
    assert_eq!(c.user_id, "alice");
    assert_eq!(m.get_balance("alice").unwrap(), credits(50).checked_sub(c.charged).unwrap());
    // The hold it placed as a member stays on the organisation.
    m.settle(hold.hold_id, Settlement::Credits(credits(4))).unwrap();
    let org = m.account("org").unwrap();
    assert_eq!((org.balance, org.held), (credits(96), Credits::ZERO));
    assert_audit_ok(&m);
}

// ----- 4. allowances -------------------------------------------------------------

#[test]
fn without_rollover_a_refill_expires_and_missed_periods_are_not_issued() {
    let (m, clock, _g) = clocked();
    let a = m.set_allowance(&allowance("u", 100, SpendWindow::Monthly, None)).unwrap();
    let acct = m.account("u").unwrap();
    assert_eq!(acct.balance, credits(100), "the current period is issued at once");
    let g = &acct.grants[0];
    assert_eq!((g.allowance_id, g.amount), (Some(a.allowance_id), credits(100)));
    assert_eq!(g.expires_at, Some(SpendWindow::Monthly.bounds(g.created_at).1));
    assert_eq!(m.allowances("u").unwrap(), vec![a.clone()]);
    let (secret, _) = key(&m, "u", None);
    spend(&m, &secret, 30);

    // Three months later: reads show this period's refill, write nothing.
    clock.advance(95 * DAY);
    let before = common::all_entries(&m, "u");
    assert_eq!(m.get_balance("u").unwrap(), credits(100), "the old grant expired, one new period pending");
    let acct = m.account("u").unwrap();
    assert_eq!(acct.grants.len(), 1);
    assert_eq!(acct.grants[0].grant_id.0, 0, "a pending refill is listed with grant id 0");
    assert_eq!(m.verify_api_key_credits(&secret, credits(100)).unwrap().available, credits(100));
    assert_eq!(common::all_entries(&m, "u"), before, "reads wrote nothing");

    // The first write persists it, exactly once.
    m.add_credits("u", credits(1), EntryKind::Grant, &NO_OPTS).unwrap();
    m.add_credits("u", credits(1), EntryKind::Grant, &NO_OPTS).unwrap();
    assert_eq!(entries_of(&m, "u", EntryKind::Allowance).len(), 2, "only the current period after missed ones");
    assert_eq!(m.get_balance("u").unwrap(), credits(102));
    let expired: i64 = entries_of(&m, "u", EntryKind::Expiry).iter().map(|e| e.amount.micros()).sum();
    assert_eq!(expired, credits(-70).micros(), "what was left of the first period expired");
    assert!(m.allowances("u").unwrap()[0].next_refill_at > ledger_now(&m));
    assert_audit_ok(&m);
}

#[test]
fn with_rollover_refills_carry_over_up_to_the_cap() {
    let (m, clock, _g) = clocked();
    let a = m.set_allowance(&allowance("u", 100, SpendWindow::Monthly, Some(250))).unwrap();
    let (secret, _) = key(&m, "u", None);
    spend(&m, &secret, 30);
    assert_eq!(allowance_live(&m, "u", a.allowance_id), credits(70));
    past_period_end(&m, &clock, SpendWindow::Monthly);
    // Read first (pending), then write.
    assert_eq!(m.get_balance("u").unwrap(), credits(170));
    m.expire_grants(10).unwrap();
    assert_eq!(allowance_live(&m, "u", a.allowance_id), credits(170), "70 carried over + 100");
    assert!(m.account("u").unwrap().grants.iter().all(|g| g.expires_at.is_none()));
    past_period_end(&m, &clock, SpendWindow::Monthly);
    m.add_credits("u", credits(1), EntryKind::Grant, &NO_OPTS).unwrap();
    assert_eq!(allowance_live(&m, "u", a.allowance_id), credits(250), "170 + min(100, 250 − 170)");
    past_period_end(&m, &clock, SpendWindow::Monthly);
    m.add_credits("u", credits(1), EntryKind::Grant, &NO_OPTS).unwrap();
    assert_eq!(allowance_live(&m, "u", a.allowance_id), credits(250), "at the cap nothing is added");
    assert_eq!(entries_of(&m, "u", EntryKind::Allowance).len(), 3, "a refill of 0 writes no entry");
    assert_eq!(events_of(&m, EventKind::AllowanceRefilled, 4).len(), 4, "but every period is refilled (once)");
    // Missed periods with rollover: every one counts, up to the cap.
    spend(&m, &secret, 240);
    clock.advance(65 * DAY);
    m.add_credits("u", credits(1), EntryKind::Grant, &NO_OPTS).unwrap();
    assert_eq!(allowance_live(&m, "u", a.allowance_id), credits(210), "10 + 2 × 100");
    assert_audit_ok(&m);
}

#[test]
fn scoped_allowances_serve_their_member_or_key_first_and_only() {
    let (m, clock, _g) = clocked();
    common::grant(&m, "org", credits(100));
    m.add_member("org", "alice").unwrap();
    m.add_member("org", "bob").unwrap();
    let (alice, _) = key(&m, "alice", None);
    let (bob, bob_key) = key(&m, "bob", None);
    let (bob2, _) = key(&m, "bob", None);
    let spec = AllowanceSpec { member: Some("alice"), ..allowance("org", 50, SpendWindow::Daily, None) };
    let for_alice = m.set_allowance(&spec).unwrap();
    let spec = AllowanceSpec { key: Some(bob_key), ..allowance("org", 20, SpendWindow::Daily, None) };
    let for_bob_key = m.set_allowance(&spec).unwrap();
    assert_eq!(m.account("org").unwrap().balance, credits(170));

    // Strict checks never count another member's or key's allowance.
    assert_eq!(m.verify_api_key_credits(&alice, credits(1)).unwrap().available, credits(150));
    assert_eq!(m.verify_api_key_credits(&bob, credits(1)).unwrap().available, credits(120));
    assert_eq!(m.verify_api_key_credits(&bob2, credits(1)).unwrap().available, credits(100));
    assert_eq!(refusal(m.verify_api_key_credits(&bob2, credits(101))), (LimitSource::Account, credits(100)));
    assert_eq!(refusal(m.reserve(&bob2, HoldAmount::Credits(credits(101)), 60, None)).0, LimitSource::Account);

    // Scoped grants are drawn first.
    spend(&m, &alice, 30);
    spend(&m, &bob, 15);
    assert_eq!(allowance_live(&m, "org", for_alice.allowance_id), credits(20));
    assert_eq!(allowance_live(&m, "org", for_bob_key.allowance_id), credits(5));
    let own: i64 = m
        .account("org")
        .unwrap()
        .grants
        .iter()
        .filter(|g| g.allowance_id.is_none())
        .map(|g| g.remaining.micros())
        .sum();
    assert_eq!(own, credits(100).micros(), "the organisation's own credits untouched");
    let refill = &entries_of(&m, "org", EntryKind::Allowance)[1];
    assert_eq!(refill.member_id.as_deref(), Some("alice"), "the refill entry names its member");
    // Pending scoped refills show only to their member's keys.
    clock.advance(DAY);
    assert_eq!(m.verify_api_key_credits(&alice, credits(1)).unwrap().available, credits(150));
    assert_eq!(m.verify_api_key_credits(&bob2, credits(1)).unwrap().available, credits(100));
    assert_audit_ok(&m);
}

#[test]
fn expire_grants_sweeps_refills_once() {
    let (m, clock, _g) = clocked();
    for u in ["a", "b", "c"] {
        m.set_allowance(&allowance(u, 10, SpendWindow::Weekly, None)).unwrap();
    }
    past_period_end(&m, &clock, SpendWindow::Weekly);
    let sweep = m.expire_grants(100).unwrap();
    assert_eq!(sweep.refills, 3);
    assert_eq!(m.expire_grants(100).unwrap().refills, 0, "never twice");
    for u in ["a", "b", "c"] {
        assert_eq!(entries_of(&m, u, EntryKind::Allowance).len(), 2);
        assert_eq!(m.get_balance(u).unwrap(), credits(10));
    }
    // A removed allowance refills no more; its grants stay.
    let id = m.allowances("a").unwrap()[0].allowance_id;
    m.remove_allowance(id).unwrap();
    assert!(m.allowances("a").unwrap().is_empty());
    assert_eq!(m.get_balance("a").unwrap(), credits(10));
    past_period_end(&m, &clock, SpendWindow::Weekly);
    assert_eq!(m.expire_grants(100).unwrap().refills, 2);
    assert_eq!(m.get_balance("a").unwrap(), Credits::ZERO);
    assert_audit_ok(&m);
}

// ----- 5. bad input --------------------------------------------------------------

/// What a failed call must leave as it was.
fn snapshot(m: &CreditManager) -> impl PartialEq + std::fmt::Debug {
    let users = ["org", "alice", "other", "solo", "x"];
    let entries: Vec<_> = users.iter().map(|u| common::all_entries(m, u)).collect();
    let accounts: Vec<_> = users.iter().map(|u| m.account(u).unwrap()).collect();
    (entries, accounts, m.members("org").unwrap(), m.projects("org").unwrap(), m.allowances("org").unwrap())
}

#[test]
fn bad_input_gets_its_error_and_leaves_the_ledger_unchanged() {
    let (m, _clock, _g) = clocked();
    common::grant(&m, "org", credits(100));
    m.add_member("org", "alice").unwrap();
    m.add_member("other", "x").unwrap();
    m.create_project("org", "p").unwrap();
    let (_, alice_key) = key(&m, "alice", None);
    let (_, solo_key) = key(&m, "solo", None);
    common::grant(&m, "solo", credits(1));
    let before = snapshot(&m);
    let invalid = ErrorCode::InvalidArgument;
    let not_found = ErrorCode::NotFound;
    let lim = |limit: i64, low: Option<i64>| {
        Some(BudgetLimit { limit: micros(limit), window: SpendWindow::Daily, low_threshold: low.map(micros) })
    };
    let spec = |f: &dyn Fn(&mut AllowanceSpec)| {
        let mut s = allowance("org", 10, SpendWindow::Daily, None);
        f(&mut s);
        m.set_allowance(&s)
    };
    let cases: Vec<(&str, ErrorCode, ErrorCode)> = vec![
        ("add_member empty org", err_code(m.add_member("", "alice")), invalid),
        ("add_member empty member", err_code(m.add_member("org", "")), invalid),
        ("add_member org == member", err_code(m.add_member("org", "org")), invalid),
        ("add_member into a member", err_code(m.add_member("alice", "solo")), invalid),
        ("add_member an organisation", err_code(m.add_member("solo", "org")), invalid),
        ("add_member of another org", err_code(m.add_member("org", "x")), invalid),
        ("remove_member not a member", err_code(m.remove_member("org", "solo")), not_found),
        ("remove_member of another org", err_code(m.remove_member("org", "x")), not_found),
        ("remove_member empty", err_code(m.remove_member("org", "")), invalid),
        ("members empty", err_code(m.members("")), invalid),
        ("create_project empty org", err_code(m.create_project("", "p")), invalid),
        ("create_project empty name", err_code(m.create_project("org", "")), invalid),
        ("create_project on a member", err_code(m.create_project("alice", "q")), invalid),
        ("projects empty", err_code(m.projects("")), invalid),
        ("set_key_project unknown project", err_code(m.set_key_project(alice_key, Some("nope"))), not_found),
        ("set_key_project other org's", err_code(m.set_key_project(solo_key, Some("p"))), not_found),
        ("set_key_project unknown key", err_code(m.set_key_project(unknown_key(), None)), not_found),
        ("set_key_project empty", err_code(m.set_key_project(alice_key, Some(""))), invalid),
        (
            "set_budget unknown member",
            err_code(m.set_budget("org", BudgetScope::Member("solo"), lim(5, None))),
            not_found,
        ),
        (
            "set_budget unknown project",
            err_code(m.set_budget("org", BudgetScope::Project("q"), lim(5, None))),
            not_found,
        ),
        ("set_budget empty name", err_code(m.set_budget("org", BudgetScope::Member(""), lim(5, None))), invalid),
        ("set_budget empty org", err_code(m.set_budget("", BudgetScope::Member("alice"), lim(5, None))), invalid),
        ("set_budget negative", err_code(m.set_budget("org", BudgetScope::Member("alice"), lim(-1, None))), invalid),
        ("set_budget low > limit", err_code(m.set_budget("org", BudgetScope::Project("p"), lim(5, Some(6)))), invalid),
        ("set_budget low < 0", err_code(m.set_budget("org", BudgetScope::Project("p"), lim(5, Some(-1)))), invalid),
        ("member_transactions empty", err_code(m.member_transactions("org", "", 10, None)), invalid),
        ("member_transactions limit 0", err_code(m.member_transactions("org", "alice", 0, None)), invalid),
        ("member_usage empty", err_code(m.member_usage("", None)), invalid),
        ("set_allowance empty user", err_code(spec(&|s| s.user = "")), invalid),
        ("set_allowance zero", err_code(spec(&|s| s.amount = Credits::ZERO)), invalid),
        ("set_allowance negative", err_code(spec(&|s| s.amount = credits(-1))), invalid),
        ("set_allowance lifetime", err_code(spec(&|s| s.period = SpendWindow::Lifetime)), invalid),
        ("set_allowance cap < amount", err_code(spec(&|s| s.rollover_cap = Some(credits(9)))), invalid),
        (
            "set_allowance member and key",
            err_code(spec(&|s| (s.member, s.key) = (Some("alice"), Some(alice_key)))),
            invalid,
        ),
        ("set_allowance not a member", err_code(spec(&|s| s.member = Some("solo"))), not_found),
        ("set_allowance empty member", err_code(spec(&|s| s.member = Some(""))), invalid),
        ("set_allowance another's key", err_code(spec(&|s| s.key = Some(solo_key))), not_found),
        ("set_allowance unknown key", err_code(spec(&|s| s.key = Some(unknown_key()))), not_found),
        ("remove_allowance unknown", err_code(m.remove_allowance(987_654)), not_found),
        ("allowances empty", err_code(m.allowances("")), invalid),
    ];
    for (what, got, want) in cases {
        assert_eq!(got, want, "{what}");
    }
    let first = m.transactions("org", 1, None).unwrap()[0].id;
    let alien = m.transactions("solo", 1, None).unwrap()[0].id;
    assert_eq!(err_code(m.member_transactions("org", "alice", 10, Some(alien))), not_found);
    assert!(m.member_transactions("org", "alice", 10, Some(first)).unwrap().is_empty());
    assert_eq!(snapshot(&m), before, "failed calls changed nothing");
    // Nor emitted anything: the two members added in the setup, no more.
    assert_eq!(events_of(&m, EventKind::MemberAdded, 2).len(), 2);
    for kind in [EventKind::MemberRemoved, EventKind::BudgetSet, EventKind::AllowanceSet] {
        assert!(events_of(&m, kind, 0).is_empty(), "{kind:?}");
    }
    assert_audit_ok(&m);
}

/// A key id no ledger has.
fn unknown_key() -> KeyId {
    KeyId::parse("00000000-0000-7000-8000-000000000001").unwrap()
}

/// A refill due on an account in debt repays the debt first (as every
/// credit does): what reads show of the pending refill must be what the
/// first write then persists.
#[test]
fn a_pending_refill_on_an_account_in_debt_reads_as_it_will_be_written() {
    let (m, clock, _g) = clocked();
    let a = m.set_allowance(&allowance("u", 10, SpendWindow::Daily, None)).unwrap();
    let (secret, _) = key(&m, "u", None);
    // 15 credits of usage: 5 in debt (record_usage is never refused).
    m.record_usage(KeyRef::Secret(&secret), common::tokens(15_000), None).unwrap();
    assert_eq!(m.get_balance("u").unwrap(), credits(-5));
    clock.advance(DAY);
    let read = m.account("u").unwrap();
    assert_eq!(read.balance, credits(5));
    let read_live = allowance_live(&m, "u", a.allowance_id);
    m.add_credits("u", micros(1), EntryKind::Grant, &NO_OPTS).unwrap();
    let written = allowance_live(&m, "u", a.allowance_id);
    assert_eq!(written, credits(5), "10 credited, 5 of them repaid the debt");
    assert_eq!(read_live, written, "the read showed the pending refill as the write persists it");
    assert_audit_ok(&m);
}
