//! The operator's reads and write context (issue 22, the dashboard):
//! `acting_as` records who did it in the change's own transaction;
//! `list_accounts`, `holds`, `recent_events` and `daily_flows` read one
//! snapshot each. Both backends (`CREDITGATE_TEST_BACKEND`).

mod common;

use common::{NO_OPTS, credits, err_code, key_for};
use creditgate::limits::{MAX_ACCOUNT_OFFSET, MAX_EVENTS_PER_PAGE, MAX_PAGE_LIMIT, MAX_TOTALS_DAYS};
use creditgate::{
    AccountOrder, AccountQuery, Config, CreditManager, Credits, EntryKind, EntryOptions, ErrorCode, EventQuery,
    HoldAmount, HoldStatus, KeyRef, SpendWindow, Timestamp, Usage,
};
use serde_json::{Map, Value, json};

const DAY: i64 = 86_400_000_000;
const OPERATOR: &str = "ops@example.com";

fn events_of(m: &CreditManager, kind: &str) -> Vec<creditgate::Event> {
    m.recent_events(&EventQuery { kind: Some(kind.into()), ..EventQuery::default() }).unwrap()
}

fn metadata(pairs: Value) -> Map<String, Value> {
    pairs.as_object().unwrap().clone()
}

#[test]
fn acting_as_records_the_operator_in_entries_and_events() {
    let (m, _db) = common::manager();
    let op = m.acting_as(OPERATOR).unwrap();
    assert_eq!((op.operator(), m.operator()), (Some(OPERATOR), None));

    // A caller's own `operator` key is overwritten; its other keys stay.
    let md = metadata(json!({"note": "goodwill", "operator": "someone else"}));
    let opts = EntryOptions { idempotency_key: Some("g1"), reference: None, metadata: Some(&md) };
    let e = op.add_credits("u", credits(100), EntryKind::Grant, &opts).unwrap();
    assert_eq!(e.metadata.as_ref().unwrap()["operator"], OPERATOR);
    assert_eq!(e.metadata.as_ref().unwrap()["note"], "goodwill");
    let bare = op.add_credits("u", credits(1), EntryKind::Grant, &NO_OPTS).unwrap();
    assert_eq!(bare.metadata, Some(metadata(json!({ "operator": OPERATOR }))));
    let plain = m.add_credits("u", credits(1), EntryKind::Grant, &NO_OPTS).unwrap();
    assert_eq!(plain.metadata, None);
    // The key is reserved: a plain handle cannot claim an operator.
    let forged = EntryOptions { idempotency_key: None, reference: None, metadata: Some(&md) };
    assert_eq!(err_code(m.add_credits("u", credits(1), EntryKind::Grant, &forged)), ErrorCode::InvalidArgument);
    // As stored, not only as returned.
    let stored: Vec<_> = m.transactions("u", 10, None).unwrap().into_iter().map(|e| e.metadata).collect();
    assert_eq!(stored[2].as_ref().unwrap()["operator"], OPERATOR);
    assert_eq!(stored[1].as_ref().unwrap()["operator"], OPERATOR);
    assert_eq!(stored[0], None);

    // Key events written through the operator's handle carry it; the plain one's do not.
    let (_, key_id) = key_for(&m, "u");
    op.set_key_limit(key_id, Some(credits(10)), SpendWindow::Daily, None).unwrap();
    op.disable_api_key(key_id, None).unwrap();
    op.revoke_api_key(key_id, None).unwrap();
    for kind in ["key.limit_set", "key.disabled", "key.revoked"] {
        let events = events_of(&m, kind);
        assert_eq!(events.len(), 1, "{kind}");
        assert_eq!(events[0].data["operator"], OPERATOR, "{kind}");
        assert_eq!(events[0].api_key_id, Some(key_id));
    }
    let created = events_of(&m, "key.created");
    assert_eq!(created.len(), 1);
    assert!(created[0].data.get("operator").is_none());
}

#[test]
fn the_operator_counts_against_the_metadata_limit_and_bad_names_are_refused() {
    let (m, _db) = common::manager();
    let op = m.acting_as(OPERATOR).unwrap();
    // {"pad":"x…"} of exactly MAX_METADATA_BYTES: fine alone, too big with the operator.
    let pad = metadata(json!({ "pad": "x".repeat(creditgate::MAX_METADATA_BYTES - 10) }));
    let opts = EntryOptions { idempotency_key: None, reference: None, metadata: Some(&pad) };
    m.add_credits("u", credits(1), EntryKind::Grant, &opts).unwrap();
    assert_eq!(err_code(op.add_credits("u", credits(1), EntryKind::Grant, &opts)), ErrorCode::InvalidArgument);
    assert_eq!(m.get_balance("u").unwrap(), credits(1), "the refused write left nothing");

    let long = "x".repeat(creditgate::limits::MAX_OPERATOR_BYTES + 1);
    for bad in ["", "a\nb", "<script>", "café", long.as_str()] {
        assert_eq!(err_code(m.acting_as(bad)), ErrorCode::InvalidArgument, "{bad:?}");
    }
    let longest = "x".repeat(creditgate::limits::MAX_OPERATOR_BYTES);
    assert_eq!(m.acting_as(&longest).unwrap().operator(), Some(longest.as_str()));
    // An operator's handle can act as another; both share the ledger.
    let other = op.acting_as("Jane Doe").unwrap();
    other.add_credits("v", credits(2), EntryKind::Grant, &NO_OPTS).unwrap();
    assert_eq!(m.get_balance("v").unwrap(), credits(2));
}

/// alice 100 (a key and a hold of 10), alicia 30, bob 50, carol -20
/// (floor -30), dave 0 (floor -5), erin 50.
fn accounts() -> (CreditManager, common::Guard) {
    let (m, db) = common::manager();
    for (user, amount) in [("alice", 100), ("alicia", 30), ("bob", 50), ("erin", 50)] {
        m.add_credits(user, credits(amount), EntryKind::Adjustment, &NO_OPTS).unwrap();
    }
    m.set_min_balance("carol", credits(-30)).unwrap();
    m.deduct_credits("carol", credits(20), &NO_OPTS).unwrap();
    m.set_min_balance("dave", credits(-5)).unwrap();
    let (key, _) = key_for(&m, "alice");
    m.reserve(&key, HoldAmount::Credits(credits(10)), 600, None).unwrap();
    (m, db)
}

fn users(m: &CreditManager, q: &AccountQuery) -> (Vec<String>, u64) {
    let page = m.list_accounts(q).unwrap();
    (page.accounts.into_iter().map(|a| a.user_id).collect(), page.total)
}

fn query(order: AccountOrder) -> AccountQuery {
    AccountQuery { order, ..AccountQuery::default() }
}

#[test]
fn list_accounts_filters_orders_and_counts() {
    let (m, _db) = accounts();
    let all = ["alice", "alicia", "bob", "carol", "dave", "erin"];
    assert_eq!(users(&m, &AccountQuery::default()), (all.map(String::from).to_vec(), 6));
    let ascending = users(&m, &query(AccountOrder::BalanceAscending)).0;
    assert_eq!(ascending, ["carol", "dave", "alicia", "bob", "erin", "alice"], "overdrawn first, ties by user id");
    let descending = users(&m, &query(AccountOrder::BalanceDescending)).0;
    assert_eq!(descending, ["alice", "bob", "erin", "alicia", "dave", "carol"]);

    let newest = m.list_accounts(&query(AccountOrder::Newest)).unwrap().accounts;
    let keys: Vec<_> = newest.iter().map(|a| (std::cmp::Reverse(a.created_at), a.user_id.clone())).collect();
    assert!(keys.is_sorted(), "{keys:?}");
    assert_eq!(newest.len(), 6);

    let search = |s: &str| users(&m, &AccountQuery { search: Some(s.into()), ..AccountQuery::default() });
    assert_eq!(search("ali"), (vec!["alice".into(), "alicia".into()], 2));
    assert_eq!(search("ALI"), (vec![], 0), "case-sensitive");
    assert_eq!(search("%"), (vec![], 0), "no pattern characters");
    let below = |c: i64, order| users(&m, &AccountQuery { below: Some(credits(c)), order, ..AccountQuery::default() });
    assert_eq!(below(0, AccountOrder::UserId), (vec!["carol".into()], 1), "overdrawn only");
    assert_eq!(below(50, AccountOrder::BalanceAscending).0, ["carol", "dave", "alicia"]);
    let both = AccountQuery { search: Some("a".into()), below: Some(credits(50)), ..AccountQuery::default() };
    assert_eq!(users(&m, &both), (vec!["alicia".into(), "carol".into(), "dave".into()], 3));

    let alice = &m.list_accounts(&AccountQuery::default()).unwrap().accounts[0];
    assert_eq!((alice.balance, alice.held, alice.active_keys), (credits(100), credits(10), 1));
    let dave = &m.list_accounts(&query(AccountOrder::BalanceAscending)).unwrap().accounts[1];
    assert_eq!(
        (dave.user_id.as_str(), dave.min_balance, dave.held, dave.active_keys),
        ("dave", credits(-5), Credits::ZERO, 0)
    );
    assert!(dave.created_at.is_some());
}

#[test]
fn list_accounts_pages_are_stable_and_limits_are_refused() {
    let (m, _db) = accounts();
    for order in AccountOrder::ALL {
        let whole = users(&m, &query(order)).0;
        let mut paged = Vec::new();
        for offset in (0..8).step_by(2) {
            let (page, total) = users(&m, &AccountQuery { offset, limit: 2, ..query(order) });
            assert_eq!(total, 6, "{order:?}");
            paged.extend(page);
        }
        assert_eq!(paged, whole, "{order:?}");
        assert_eq!(AccountOrder::parse(order.as_str()).unwrap(), order);
    }
    let far = AccountQuery { offset: MAX_ACCOUNT_OFFSET, ..AccountQuery::default() };
    assert_eq!(users(&m, &far), (vec![], 6));
    let bad = [
        AccountQuery { offset: MAX_ACCOUNT_OFFSET + 1, ..AccountQuery::default() },
        AccountQuery { limit: 0, ..AccountQuery::default() },
        AccountQuery { limit: MAX_PAGE_LIMIT + 1, ..AccountQuery::default() },
        AccountQuery { search: Some(String::new()), ..AccountQuery::default() },
        AccountQuery { search: Some("x".repeat(256)), ..AccountQuery::default() },
    ];
    for q in bad {
        assert_eq!(err_code(m.list_accounts(&q)), ErrorCode::InvalidArgument, "{q:?}");
    }
    assert_eq!(err_code(AccountOrder::parse("Balance")), ErrorCode::InvalidArgument);
}

#[test]
fn holds_are_newest_first_and_filtered_to_active_ones() {
    let (m, _db) = common::manager();
    m.add_credits("u", credits(100), EntryKind::Adjustment, &NO_OPTS).unwrap();
    let (key, _) = key_for(&m, "u");
    let hold = |c: i64, ttl: i64| m.reserve(&key, HoldAmount::Credits(credits(c)), ttl, None).unwrap();
    let (h1, h2, h3) = (hold(1, 600), hold(2, 600), hold(3, 600));
    m.release(h2.hold_id).unwrap();
    let short = hold(4, 1);
    std::thread::sleep(std::time::Duration::from_millis(1_100));

    let ids = |active: bool, limit: u32| -> Vec<_> {
        m.holds("u", active, limit).unwrap().into_iter().map(|h| (h.hold_id, h.status)).collect()
    };
    assert_eq!(ids(true, 50), [(h3.hold_id, HoldStatus::Active), (h1.hold_id, HoldStatus::Active)]);
    assert_eq!(
        ids(false, 50),
        [
            (short.hold_id, HoldStatus::Expired),
            (h3.hold_id, HoldStatus::Active),
            (h2.hold_id, HoldStatus::Released),
            (h1.hold_id, HoldStatus::Active),
        ]
    );
    assert_eq!(ids(false, 1), [(short.hold_id, HoldStatus::Expired)]);
    let listed = &m.holds("u", true, 1).unwrap()[0];
    assert_eq!((listed.amount, listed.user_id.as_str(), listed.replayed), (credits(3), "u", false));
    assert!(m.holds("nobody", false, 50).unwrap().is_empty());
    // The report's outstanding holds: the active, unexpired ones of every account (1 + 3, not 2 or 4).
    m.add_credits("w", credits(10), EntryKind::Adjustment, &NO_OPTS).unwrap();
    let (other, _) = key_for(&m, "w");
    m.reserve(&other, HoldAmount::Credits(credits(5)), 600, None).unwrap();
    assert_eq!(m.report().unwrap().outstanding_holds, credits(9));
    assert_eq!(err_code(m.holds("u", true, 0)), ErrorCode::InvalidArgument);
    assert_eq!(err_code(m.holds("u", true, MAX_PAGE_LIMIT + 1)), ErrorCode::InvalidArgument);
    assert_eq!(err_code(m.holds("", true, 1)), ErrorCode::InvalidArgument);
}

#[test]
fn recent_events_filter_and_page_newest_first() {
    // Keys free: no top-up entries, so the only events are the keys'.
    let (m, _db) = common::manager_with(Config::new().min_credits_api_key(Credits::ZERO).unwrap());
    let mut keys = Vec::new();
    for user in ["a", "b", "a", "c", "a"] {
        keys.push(key_for(&m, user).1);
    }
    m.revoke_api_key(keys[0], None).unwrap();
    m.revoke_api_key(keys[1], None).unwrap();
    let page = |q: EventQuery| m.recent_events(&q).unwrap();
    let all = page(EventQuery::default());
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert_eq!(all.len(), 7);
    assert_eq!(all[0].kind.as_str(), "key.revoked");

    let of_a = page(EventQuery { user_id: Some("a".into()), ..EventQuery::default() });
    assert_eq!(of_a.len(), 4);
    assert!(of_a.iter().all(|e| e.user_id == "a"));
    let created = page(EventQuery { kind: Some("key.created".into()), ..EventQuery::default() });
    assert_eq!(created.len(), 5);
    let revoked_a =
        page(EventQuery { user_id: Some("a".into()), kind: Some("key.revoked".into()), ..EventQuery::default() });
    assert_eq!(revoked_a.iter().map(|e| e.api_key_id).collect::<Vec<_>>(), [Some(keys[0])]);
    assert!(page(EventQuery { kind: Some("no.such.kind".into()), ..EventQuery::default() }).is_empty());

    // Paging with the last id as the cursor walks the same list.
    let mut walked = Vec::new();
    let mut before = None;
    loop {
        let p = page(EventQuery { before, limit: 3, ..EventQuery::default() });
        let Some(last) = p.last() else { break };
        before = Some(last.id);
        walked.extend(p.iter().map(|e| e.id));
    }
    assert_eq!(walked, all.iter().map(|e| e.id).collect::<Vec<_>>());
    let of_a_paged =
        page(EventQuery { user_id: Some("a".into()), before: Some(of_a[1].id), limit: 2, ..EventQuery::default() });
    assert_eq!(of_a_paged.iter().map(|e| e.id).collect::<Vec<_>>(), [of_a[2].id, of_a[3].id]);

    let bad = [
        EventQuery { limit: 0, ..EventQuery::default() },
        EventQuery { limit: MAX_EVENTS_PER_PAGE + 1, ..EventQuery::default() },
        EventQuery { before: Some(0), ..EventQuery::default() },
        EventQuery { kind: Some(String::new()), ..EventQuery::default() },
        EventQuery { user_id: Some("x".repeat(256)), ..EventQuery::default() },
    ];
    for q in bad {
        assert_eq!(err_code(m.recent_events(&q)), ErrorCode::InvalidArgument, "{q:?}");
    }
}

#[test]
fn daily_flows_add_up_to_the_report() {
    let (m, clock, _db) = common::clocked_manager();
    let start = Timestamp::now();
    let (key, _) = key_for(&m, "u");
    m.record_payment("u", "pay_1", 500, "usd").unwrap(); // 5000 credits
    m.record_usage(KeyRef::Secret(&key), Usage::new(100_000, 0, None), None).unwrap(); // 100 credits
    clock.advance(DAY);
    m.record_payment("u", "pay_2", 100, "usd").unwrap();
    m.deduct_credits("u", credits(7), &NO_OPTS).unwrap();
    m.add_credits("v", credits(3), EntryKind::Grant, &NO_OPTS).unwrap();
    clock.advance(2 * DAY);
    m.record_usage(KeyRef::Secret(&key), Usage::new(5_000, 0, None), None).unwrap();

    let until = Timestamp(Timestamp::now().0 + clock.offset_micros() + DAY);
    let since = Timestamp(start.0 - DAY);
    let flows = m.daily_flows(since, until).unwrap();
    assert!(flows.iter().all(|f| f.day.0 % DAY == 0), "UTC midnights");
    assert!(flows.windows(2).all(|w| w[0].day < w[1].day), "oldest first");
    assert!((3..=5).contains(&flows.len()), "three days with entries (four or five across midnights): {flows:?}");
    let report = m.report().unwrap();
    let sum = |f: fn(&creditgate::DayFlow) -> Credits| {
        flows.iter().map(f).fold(Credits::ZERO, |a, b| a.checked_add(b).unwrap())
    };
    assert_eq!(sum(|f| f.purchased), report.credits_purchased);
    assert_eq!(sum(|f| f.used), report.credits_used);
    assert_eq!(report.credits_used, credits(112));
    let entries: usize = ["u", "v"].iter().map(|u| common::all_entries(&m, u).len()).sum();
    assert_eq!(flows.iter().map(|f| f.entries).sum::<u64>(), entries as u64);
    // The two days between: the payment of the second day is its own.
    let second = flows.iter().find(|f| f.purchased == credits(1000)).expect("the second day's purchase");
    assert_eq!(second.used, credits(7));

    assert!(m.daily_flows(Timestamp(0), Timestamp(DAY)).unwrap().is_empty(), "days without entries are left out");
    // At most MAX_TOTALS_DAYS whole days (the range of `daily_totals` it reads).
    let midnight = Timestamp(since.0 - since.0.rem_euclid(DAY));
    let most = Timestamp(midnight.0 + i64::from(MAX_TOTALS_DAYS) * DAY);
    assert!(m.daily_flows(midnight, most).is_ok());
    for (s, u) in [(since, since), (until, since), (midnight, Timestamp(most.0 + 1)), (Timestamp(i64::MIN), until)] {
        assert_eq!(err_code(m.daily_flows(s, u)), ErrorCode::InvalidArgument, "{s:?}..{u:?}");
    }
}
