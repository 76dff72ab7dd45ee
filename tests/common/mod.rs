//! Backend-neutral ledger helpers for the integration tests. Every test gets
//! its ledger from here: a fresh, empty ledger on a temporary SQLite file, or
//! with `CREDITGATE_TEST_BACKEND=postgres` a fresh PostgreSQL database on the
//! server at `CREDITGATE_TEST_POSTGRES_URL` (see `pg.rs` and
//! `scripts/test-postgres.sh`). Tests never name a backend themselves (except
//! the ones marked SQLite-specific, which ask `Guard::sqlite_path`).

#![allow(dead_code)]

use creditgate::{Config, CreditManager, Credits, EntryKind, EntryOptions, KeyId, Usage};
use std::path::{Path, PathBuf};

pub mod ops;
pub mod pg;

/// Keeps a test's database alive; dropping it removes the database.
pub struct Guard {
    dir: tempfile::TempDir,
    sqlite_path: Option<PathBuf>,
    /// The test's PostgreSQL database (CREDITGATE_TEST_BACKEND=postgres).
    postgres: Option<pg::Database>,
}

impl Guard {
    /// The database file, for tests that are inherently SQLite-specific.
    /// `None` on server backends: such tests then skip their file checks.
    pub fn sqlite_path(&self) -> Option<&Path> {
        self.sqlite_path.as_deref()
    }

    /// A scratch directory that lives as long as the guard.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A fresh database URL and the guard that owns it. Several managers (or
/// processes) may open the same URL.
pub fn shared_url() -> (String, Guard) {
    let dir = tempfile::Builder::new().prefix("creditgate-test-").tempdir().expect("create a temporary directory");
    if pg::is_postgres() {
        let (url, db) = pg::fresh_database();
        return (url, Guard { dir, sqlite_path: None, postgres: Some(db) });
    }
    let path = dir.path().join("ledger.db");
    let url = format!("sqlite:///{}", path.display());
    (url, Guard { dir, sqlite_path: Some(path), postgres: None })
}

/// Opens `url` with `config`'s other settings.
pub fn open(url: &str, config: Config) -> CreditManager {
    CreditManager::open(config.database_url(url)).expect("open the test ledger")
}

/// The property tests' settings: `PROPTEST_CASES` cases (else `default`),
/// shrinking bounded, no persisted failures.
pub fn proptest_config(default: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default),
        max_shrink_iters: 2_000,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

/// A fresh ledger for the property tests with the injected clock: keys
/// free, commits not fsynced, the invariants checked inside every write.
pub fn clocked_manager() -> (CreditManager, creditgate::TestClock, Guard) {
    let clock = creditgate::TestClock::new();
    let config = Config::new()
        .min_credits_api_key(Credits::ZERO)
        .expect("a zero first-key minimum")
        .synchronous(creditgate::Synchronous::Normal)
        .test_clock(clock.clone())
        .check_invariants(true);
    let (m, guard) = manager_with(config);
    (m, clock, guard)
}

/// A fresh, empty ledger with `config`'s settings (its database URL is
/// replaced by a fresh one).
pub fn manager_with(config: Config) -> (CreditManager, Guard) {
    let (url, guard) = shared_url();
    (open(&url, config), guard)
}

/// A fresh, empty ledger with the default settings.
pub fn manager() -> (CreditManager, Guard) {
    manager_with(Config::new())
}

// ----- small conveniences shared by the test files -------------------------

pub fn credits(c: i64) -> Credits {
    Credits::from_credits(c).expect("a small whole number of credits")
}

pub fn micros(m: i64) -> Credits {
    Credits::from_micros(m)
}

pub const NO_OPTS: EntryOptions<'static> = EntryOptions { idempotency_key: None, reference: None, metadata: None };

pub fn with_key(key: &str) -> EntryOptions<'_> {
    EntryOptions { idempotency_key: Some(key), reference: None, metadata: None }
}

pub fn grant(m: &CreditManager, user: &str, amount: Credits) {
    m.add_credits(user, amount, EntryKind::Grant, &NO_OPTS).expect("grant credits");
}

pub fn tokens(input: i64) -> Usage<'static> {
    Usage::new(input, 0, None)
}

pub fn io_tokens(input: i64, output: i64, model: Option<&str>) -> Usage<'_> {
    Usage::new(input, output, model)
}

/// Asserts the audit is clean and returns how many entries it checked.
#[track_caller]
pub fn assert_audit_ok(m: &CreditManager) -> u64 {
    let a = m.audit().expect("audit runs");
    assert!(a.ok, "audit found mismatches: {:?}", a.mismatches);
    assert!(a.mismatches.is_empty());
    a.entries_checked
}

/// The metrics snapshot as a lookup.
pub fn metric(m: &CreditManager, name: &str) -> u64 {
    m.metrics().into_iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no metric named {name}")).1
}

/// A new API key for `user`, leaving the balance as it was: when the credit
/// rule would refuse the key, the missing credits are granted for the
/// creation and taken back with a negative adjustment right after.
pub fn key_for(m: &CreditManager, user: &str) -> (String, KeyId) {
    let e = m.can_generate_api_key(user).expect("eligibility");
    let topup = if e.allowed { None } else { Some(e.required.checked_sub(e.available).expect("small amounts")) };
    if let Some(t) = topup {
        m.add_credits(user, t, EntryKind::Grant, &NO_OPTS).expect("top-up for the key");
    }
    let k = m.create_api_key(user, None).expect("create a key");
    if let Some(t) = topup {
        let back = t.checked_neg().expect("small amounts");
        m.add_credits(user, back, EntryKind::Adjustment, &NO_OPTS).expect("take the top-up back");
    }
    (k.secret.expose().to_string(), k.key_id)
}

/// The error code of a call that must fail.
#[track_caller]
pub fn err_code<T: std::fmt::Debug>(r: creditgate::Result<T>) -> creditgate::ErrorCode {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.code(),
    }
}

/// Lowercase hex SHA-256, as a host that kept only key hashes stores them.
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// Every entry of `user`, newest first, fetched page by page.
pub fn all_entries(m: &CreditManager, user: &str) -> Vec<creditgate::Entry> {
    let mut out: Vec<creditgate::Entry> = Vec::new();
    loop {
        let page = m.transactions(user, 1000, out.last().map(|e| e.id)).expect("a page of entries");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// The schema version a freshly opened ledger has: the highest migration
/// file's number (`NNN_name.sql`).
pub fn latest_schema_version() -> i64 {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/store/migrations/sqlite");
    std::fs::read_dir(dir)
        .expect("the migrations directory")
        .filter_map(|f| f.ok()?.file_name().to_str()?.get(..3)?.parse::<i64>().ok())
        .max()
        .expect("a migration")
}

/// Starts the ignored test `test` of this test binary in a child process,
/// with the environment variable `env` set to `value` (the child's work).
pub fn spawn_child_test(test: &str, env: &str, value: String) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", test, "--nocapture", "--ignored", "--test-threads", "1"])
        .env(env, value)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn a child test process")
}

/// Waits for a child test process, asserts that it passed, returns its stdout.
#[track_caller]
pub fn child_output(child: std::process::Child) -> String {
    let out = child.wait_with_output().expect("wait for a child test process");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "child failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// SQL that takes a ledger's schema back from version 11 to 10 (both
/// backends): for upgrade tests.
pub const UNDO_V11: &str = "DROP TABLE creditgate_topups; \
    ALTER TABLE creditgate_accounts DROP COLUMN topup_threshold; ALTER TABLE creditgate_accounts DROP COLUMN topup_kind; \
    ALTER TABLE creditgate_accounts DROP COLUMN topup_amount; \
    ALTER TABLE creditgate_accounts DROP COLUMN topup_max_per_month; \
    ALTER TABLE creditgate_accounts DROP COLUMN topup_monthly_cap; \
    DELETE FROM creditgate_schema_version WHERE version = 11;";
/// SQL that takes a ledger's schema back from version 10 to 9 (both
/// backends): version 10 only added the webhook tables.
pub const UNDO_V10: &str = "DROP TABLE creditgate_webhook_dead_letters; DROP TABLE creditgate_webhooks; \
    DELETE FROM creditgate_schema_version WHERE version = 10;";
/// SQL that takes a ledger's schema back from version 9 to 8 (both
/// backends; version 9 kept the prices table of version 8).
pub const UNDO_V9: &str = "DROP TABLE creditgate_prices; \
    ALTER TABLE creditgate_holds DROP COLUMN input_rate; ALTER TABLE creditgate_holds DROP COLUMN output_rate; \
    ALTER TABLE creditgate_holds DROP COLUMN cached_rate; ALTER TABLE creditgate_holds DROP COLUMN cache_write_rate; \
    ALTER TABLE creditgate_holds DROP COLUMN request_fee; DROP INDEX creditgate_entries_time; \
    ALTER TABLE creditgate_entries DROP COLUMN cached_tokens; \
    ALTER TABLE creditgate_entries DROP COLUMN cache_write_tokens; \
    ALTER TABLE creditgate_entries DROP COLUMN input_rate; ALTER TABLE creditgate_entries DROP COLUMN output_rate; \
    ALTER TABLE creditgate_entries DROP COLUMN cached_rate; \
    ALTER TABLE creditgate_entries DROP COLUMN cache_write_rate; \
    ALTER TABLE creditgate_entries DROP COLUMN request_fee; \
    DELETE FROM creditgate_schema_version WHERE version = 9;";
/// SQL that takes a ledger's schema back from version 8 to 7 (both
/// backends), leaving the grants table's own columns to the caller
/// (`UNDO_V8_GRANTS`): for upgrade tests.
pub const UNDO_V8: &str = "DROP TABLE creditgate_members; DROP TABLE creditgate_projects; \
    DROP TABLE creditgate_budgets; DROP TABLE creditgate_allowances; DROP INDEX creditgate_entries_member; \
    DROP INDEX creditgate_accounts_refill; ALTER TABLE creditgate_api_keys DROP COLUMN project; \
    ALTER TABLE creditgate_entries DROP COLUMN member_id; \
    ALTER TABLE creditgate_entries DROP COLUMN project; ALTER TABLE creditgate_accounts DROP COLUMN refill_at; \
    DELETE FROM creditgate_schema_version WHERE version = 8;";
/// The grants table's part of [`UNDO_V8`].
pub const UNDO_V8_GRANTS: &str = "DROP INDEX creditgate_grants_allowance; \
    ALTER TABLE creditgate_grants DROP COLUMN member_id; ALTER TABLE creditgate_grants DROP COLUMN api_key_id; \
    ALTER TABLE creditgate_grants DROP COLUMN allowance_id;";

/// Runs `statements` on the test database with the backend's own client,
/// bypassing the library: an old version's writes, a hand edit, a
/// corruption the library must notice.
pub fn raw_sql(url: &str, statements: &str) {
    if let Some(path) = url.strip_prefix("sqlite:///") {
        let c = rusqlite::Connection::open(path).expect("open the SQLite file");
        c.execute_batch(statements).expect("run the SQL");
    } else {
        let mut c = postgres::Client::connect(url, postgres::NoTls).expect("connect to PostgreSQL");
        c.batch_execute(statements).expect("run the SQL");
    }
}

/// SQL that takes a ledger's schema back from version 13 to 12 (both backends).
pub const UNDO_V13: &str = "DROP TABLE creditgate_daily_totals; DROP TABLE creditgate_rollup; \
    DROP INDEX IF EXISTS creditgate_entries_expiries; DELETE FROM creditgate_schema_version WHERE version = 13;";

/// SQL that takes a ledger's schema back from version 12 to 11 (both backends).
pub const UNDO_V12: &str = "DROP INDEX IF EXISTS creditgate_events_user; DROP INDEX IF EXISTS creditgate_events_kind; \
    DROP INDEX IF EXISTS creditgate_holds_open; DELETE FROM creditgate_schema_version WHERE version = 12;";
