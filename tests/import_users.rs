//! `import_users` (docs/reference.md): the seed's deployment moved over from its own
//! `users(id, credit_balance)` and API-key tables in the same database, on
//! either backend; running it twice changes nothing.

mod common;

use common::pg;
use creditgate::{
    Config, CreditManager, Credits, EntryKind, ErrorCode, ImportKeys, ImportSummary, ImportUsers, KeyFormat,
};

const PLAIN_KEYS: [(i64, &str); 3] =
    [(1, "legacy-key-one-0123456789"), (1, "legacy-key-two-0123456789"), (2, "legacy-key-three-0123456789")];
const HASHED_SECRET: &str = "legacy-hashed-secret-42";

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// Creates the host's tables (as the seed's app had them) in the test database.
fn host_tables(url: &str, guard: &common::Guard) {
    let float = if pg::is_postgres() { "DOUBLE PRECISION" } else { "REAL" };
    let mut sql = format!(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, credit_balance {float});
         INSERT INTO users VALUES (1, 'a@x', 5000), (2, 'b@x', 4998.5), (3, 'c@x', 0), (4, 'd@x', NULL),
                                  (5, 'e@x', -12.25);
         CREATE TABLE api_keys (id INTEGER PRIMARY KEY, user_id INTEGER, key TEXT);
         CREATE TABLE hashed_keys (user_id INTEGER, key_hash TEXT);
         INSERT INTO hashed_keys VALUES (2, '{}'), (2, NULL);
         CREATE TABLE bad_users (id TEXT, credit_balance TEXT);
         INSERT INTO bad_users VALUES ('x', '10'), ('y', '0.0000001');",
        sha256_hex(HASHED_SECRET).to_uppercase()
    );
    for (i, (user, key)) in PLAIN_KEYS.iter().enumerate() {
        sql.push_str(&format!("INSERT INTO api_keys VALUES ({i}, {user}, '{key}');"));
    }
    if pg::is_postgres() {
        let mut c = postgres::Client::connect(url, postgres::NoTls).expect("connect");
        c.batch_execute(&sql).expect("host tables");
    } else {
        let path = guard.sqlite_path().expect("a SQLite file");
        rusqlite::Connection::open(path).expect("open").execute_batch(&sql).expect("host tables");
    }
}

fn spec() -> ImportUsers {
    ImportUsers { keys: Some(ImportKeys::default()), ..ImportUsers::default() }
}

#[test]
fn the_seed_deployment_moves_over_once() {
    let (url, guard) = common::shared_url();
    host_tables(&url, &guard);
    let m = CreditManager::open(Config::new().database_url(&url)).expect("open");

    let first = m.import_users(&spec()).expect("import");
    assert_eq!(
        first,
        ImportSummary { users: 5, balances_imported: 3, balances_already_imported: 0, balances_skipped: 2, keys: 3 }
    );
    let again = m.import_users(&spec()).expect("import again");
    assert_eq!(
        again,
        ImportSummary { users: 5, balances_imported: 0, balances_already_imported: 3, balances_skipped: 2, keys: 3 }
    );

    assert_eq!(m.get_balance("1").unwrap(), Credits::from_credits(5000).unwrap());
    assert_eq!(m.get_balance("2").unwrap(), "4998.5".parse().unwrap());
    assert_eq!(m.get_balance("3").unwrap(), Credits::ZERO);
    assert_eq!(m.get_balance("5").unwrap(), "-12.25".parse().unwrap());
    let entries = m.transactions("2", 10, None).unwrap();
    assert_eq!(entries.len(), 1, "one entry per imported balance, even after two runs");
    assert_eq!(entries[0].kind, EntryKind::Adjustment);
    assert_eq!(entries[0].idempotency_key.as_deref(), Some("import:2"));

    // Legacy keys keep working, are charged like any key, and do not count
    // as a first key.
    let keys = m.list_api_keys("1").unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k.legacy));
    let v = m.verify_api_key_credits(PLAIN_KEYS[2].1, Credits::from_credits(1).unwrap()).unwrap();
    assert_eq!(v.user_id, "2");
    assert!(m.can_generate_api_key("1").unwrap().is_first_key);

    // Keys kept only as SHA-256 (any case in the host table).
    let hashed = ImportUsers {
        keys: Some(ImportKeys {
            table: "hashed_keys".into(),
            user_column: "user_id".into(),
            key_column: "key_hash".into(),
            format: KeyFormat::Sha256,
        }),
        ..ImportUsers::default()
    };
    let s = m.import_users(&hashed).unwrap();
    assert_eq!((s.balances_already_imported, s.keys), (3, 1));
    let v = m.verify_api_key_credits(HASHED_SECRET, Credits::ZERO).unwrap();
    assert_eq!(v.user_id, "2");
    common::assert_audit_ok(&m);
}

#[test]
fn a_bad_row_fails_the_whole_import_before_any_write() {
    let (url, guard) = common::shared_url();
    host_tables(&url, &guard);
    let m = CreditManager::open(Config::new().database_url(&url)).expect("open");
    let bad = ImportUsers { table: "bad_users".into(), ..ImportUsers::default() };
    let e = m.import_users(&bad).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    assert!(e.to_string().contains("\"y\""), "{e}");
    assert_eq!(m.get_balance("x").unwrap(), Credits::ZERO, "nothing imported");

    let purchases = ImportUsers { kind: EntryKind::Purchase, ..ImportUsers::default() };
    assert_eq!(m.import_users(&purchases).unwrap_err().code(), ErrorCode::InvalidArgument, "negative purchase");
    assert_eq!(m.get_balance("1").unwrap(), Credits::ZERO, "nothing imported");

    let missing = ImportUsers { table: "no_such_table".into(), ..ImportUsers::default() };
    let e = m.import_users(&missing).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Storage, "{e}");
    assert!(e.to_string().contains("no_such_table"), "{e}");

    let injection = ImportUsers { table: "users; DROP TABLE users".into(), ..ImportUsers::default() };
    assert_eq!(m.import_users(&injection).unwrap_err().code(), ErrorCode::InvalidArgument);
    let grants = ImportUsers { kind: EntryKind::Grant, ..ImportUsers::default() };
    assert_eq!(m.import_users(&grants).unwrap_err().code(), ErrorCode::InvalidArgument);
    common::assert_audit_ok(&m);
}
