//! Upgrades (docs/upgrading.md), on both backends: a ledger created at
//! every earlier schema version, with data written as that version wrote it,
//! is upgraded by opening it with this library and audits clean with its
//! balances, idempotency keys, legacy keys and prices intact; a ledger migrated by a
//! newer creditgate opens and reads, but refuses every write with a
//! `StorageError` naming both versions.

mod common;

use common::{NO_OPTS, assert_audit_ok, credits, err_code, io_tokens};
use creditgate::{Config, CreditManager, EntryKind, ErrorCode, KeyRef};
use sha2::{Digest, Sha256};

const ALICE_PURCHASE: &str = "01900000-0000-7000-8000-000000000001";
const ALICE_USAGE: &str = "01900000-0000-7000-8000-000000000002";
const BOB_GRANT: &str = "01900000-0000-7000-8000-000000000003";
const LEGACY_KEY_ID: &str = "01900000-0000-7000-8000-0000000000aa";
const LEGACY_SECRET: &str = "legacy-upgrade-test-secret-0001";
/// 2023-11-14, in microseconds: any past time.
const T: i64 = 1_700_000_000_000_000;

/// What a creditgate at schema `version` wrote for a purchase of 5,000
/// credits (payment `pay_1`) and a usage charge of 10 by alice, a
/// promotional grant of 700 to bob, a legacy key of alice's and the price
/// of `old-model` (2 and 4 credits per 1,000 input and output tokens). The columns
/// are those of schema 1, which every later version keeps (the price: in
/// schema 9's version table from version 9 on); plain literals only, so one
/// text runs on SQLite and PostgreSQL.
fn old_writes(version: i64) -> String {
    let hash = hex::encode(Sha256::digest(LEGACY_SECRET.as_bytes()));
    let mut s = format!(
        "INSERT INTO creditgate_accounts (user_id, balance, last_seq, created_at) VALUES
           ('alice', 4990000000, 2, {T}), ('bob', 700000000, 1, {T});
         INSERT INTO creditgate_entries (id, user_id, seq, kind, amount, balance_after, idempotency_key, global_key,
             reference, amount_minor, currency, created_at) VALUES
           ('{ALICE_PURCHASE}', 'alice', 1, 'purchase', 5000000000, 5000000000, 'payment:pay_1', 'payment:pay_1',
            'pay_1', 500, 'USD', {T});
         INSERT INTO creditgate_entries (id, user_id, seq, kind, amount, balance_after, api_key_id, input_tokens,
             output_tokens, created_at) VALUES
           ('{ALICE_USAGE}', 'alice', 2, 'usage', -10000000, 4990000000, '{LEGACY_KEY_ID}', 10000, 0, {T});
         INSERT INTO creditgate_entries (id, user_id, seq, kind, amount, balance_after, idempotency_key, created_at)
           VALUES ('{BOB_GRANT}', 'bob', 1, 'grant', 700000000, 700000000, 'welcome', {T});
         INSERT INTO creditgate_api_keys (id, user_id, name, key_hash, hash_kind, legacy, created_at) VALUES
           ('{LEGACY_KEY_ID}', 'alice', 'old', '{hash}', 'sha256', TRUE, {T});"
    );
    if version >= 9 {
        // From schema 9 on, prices are versions (in effect from the epoch here).
        s.push_str(&format!(
            "INSERT INTO creditgate_prices (model, effective_at, input_per_1k, output_per_1k, set_at) VALUES
               ('old-model', 0, 2000000, 4000000, {T});"
        ));
    } else {
        s.push_str(&format!(
            "INSERT INTO creditgate_model_prices (model, input_per_1k, output_per_1k, updated_at) VALUES
               ('old-model', 2000000, 4000000, {T});"
        ));
    }
    if version >= 6 {
        // From schema 6 on, every credit also wrote its grant (lot).
        s.push_str(&format!(
            "INSERT INTO creditgate_grants (user_id, entry_id, category, priority, amount, remaining, expires_at,
                 created_at, payment_id) VALUES
               ('alice', '{ALICE_PURCHASE}', 'paid', 0, 5000000000, 4990000000, NULL, {T}, 'pay_1'),
               ('bob', '{BOB_GRANT}', 'promotional', 0, 700000000, 700000000, NULL, {T}, NULL);"
        ));
    }
    s
}

fn status(url: &str) -> creditgate::SchemaStatus {
    CreditManager::schema_status(Config::new().database_url(url)).expect("schema status")
}

/// Asserts that the old writes survived the upgrade and that the upgraded
/// ledger takes new writes.
fn check_upgraded(m: &CreditManager) {
    assert_audit_ok(m);
    assert_eq!(m.get_balance("alice").unwrap(), credits(4990));
    assert_eq!(m.get_balance("bob").unwrap(), credits(700));
    // The payment's idempotency survived: a redelivery credits nothing.
    let again = m.record_payment("alice", "pay_1", 500, "USD").unwrap();
    assert!(again.replayed, "pay_1 was credited twice after the upgrade");
    // The legacy key still verifies, and charges at the old model price.
    let v = m.verify_api_key_credits(LEGACY_SECRET, credits(1)).unwrap();
    assert_eq!(v.user_id, "alice");
    let usage = io_tokens(1_000, 1_000, Some("old-model"));
    let charge = m.record_usage(KeyRef::Secret(LEGACY_SECRET), usage, Some("after-upgrade")).unwrap();
    assert_eq!(charge.charged, credits(6));
    m.deduct_credits("bob", credits(100), &NO_OPTS).unwrap();
    assert_eq!(m.get_balance("alice").unwrap(), credits(4984));
    assert_eq!(m.get_balance("bob").unwrap(), credits(600));
    assert_audit_ok(m);
}

#[test]
fn every_earlier_schema_version_upgrades_to_the_current_one_and_audits_clean() {
    let latest = common::latest_schema_version();
    assert!(latest >= 2, "no earlier schema version to upgrade from");
    for version in 1..latest {
        let (url, _guard) = common::shared_url();
        CreditManager::migrate_to_version(Config::new().database_url(&url), version).expect("an old schema");
        let before = status(&url);
        assert_eq!(before.database_version, version);
        assert_eq!(before.library_version, latest);
        assert_eq!(before.pending, ((version + 1)..=latest).collect::<Vec<_>>());
        common::raw_sql(&url, &old_writes(version));

        let m = common::open(&url, Config::new());
        assert_eq!(m.schema_versions().unwrap(), (version, latest), "upgrade from {version}");
        let after = status(&url);
        assert_eq!((after.database_version, after.pending.len()), (latest, 0));
        let report = m.report().unwrap();
        assert_eq!((report.schema_version, report.library_schema_version), (latest, latest));
        check_upgraded(&m);
    }
}

#[test]
fn schema_status_reads_without_creating_or_migrating() {
    let (url, guard) = common::shared_url();
    if let Some(path) = guard.sqlite_path() {
        let e = CreditManager::schema_status(Config::new().database_url(&url)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::NotFound);
        assert!(!path.exists(), "schema_status created the SQLite file");
    }
    CreditManager::migrate_to_version(Config::new().database_url(&url), 0).expect("an empty ledger");
    let empty = status(&url);
    assert_eq!(empty.database_version, 0);
    assert_eq!(empty.pending, (1..=common::latest_schema_version()).collect::<Vec<_>>());
    // Reading again changed nothing.
    assert_eq!(status(&url), empty);
    assert!(!empty.newer_than_library());
}

#[test]
fn a_schema_newer_than_the_library_opens_and_reads_but_refuses_writes() {
    let latest = common::latest_schema_version();
    let newer = latest + 1;
    let (url, _guard) = common::shared_url();
    let running = common::open(&url, Config::new());
    running.add_credits("alice", credits(50), EntryKind::Grant, &NO_OPTS).unwrap();
    // A newer creditgate migrated the ledger (its new tables do not matter here).
    common::raw_sql(
        &url,
        &format!("INSERT INTO creditgate_schema_version (version, applied_at) VALUES ({newer}, {T})"),
    );

    let old = common::open(&url, Config::new());
    let s = status(&url);
    assert!(s.newer_than_library());
    assert_eq!((s.database_version, s.library_version), (newer, latest));
    assert_eq!(old.schema_versions().unwrap(), (newer, newer));
    // Reads work.
    assert_eq!(old.get_balance("alice").unwrap(), credits(50));
    assert_audit_ok(&old);
    let report = old.report().unwrap();
    assert_eq!((report.schema_version, report.library_schema_version), (newer, latest));

    // Every write is refused with both versions named, before touching the ledger.
    let expected = format!(
        "database schema is version {newer}, this creditgate ({}) knows up to {latest}: upgrade creditgate",
        env!("CARGO_PKG_VERSION")
    );
    let refusals = [
        old.add_credits("alice", credits(1), EntryKind::Grant, &NO_OPTS).map(|_| ()),
        old.deduct_credits("alice", credits(1), &NO_OPTS).map(|_| ()),
        old.record_payment("bob", "pay_new", 100, "USD").map(|_| ()),
        old.create_api_key("alice", None).map(|_| ()),
        old.migrate(),
    ];
    for r in refusals {
        let e = r.expect_err("a write on a newer schema");
        assert_eq!(e.code(), ErrorCode::Storage, "{e}");
        assert!(e.to_string().contains(&expected), "{e}");
    }
    assert_eq!(err_code(old.add_credits("carol", credits(1), EntryKind::Grant, &NO_OPTS)), ErrorCode::Storage);
    assert_eq!(old.get_balance("alice").unwrap(), credits(50));
    assert_eq!(old.get_balance("bob").unwrap(), credits(0));
    assert_eq!(status(&url).database_version, newer, "the old library changed the recorded version");

    // The guard is decided at open: a process opened before the newer
    // version migrated is not stopped by it (docs/upgrading.md).
    running.add_credits("alice", credits(1), EntryKind::Grant, &NO_OPTS).unwrap();
    assert_eq!(old.get_balance("alice").unwrap(), credits(51));
}
