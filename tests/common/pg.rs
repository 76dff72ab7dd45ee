//! Backend selection for the test helpers: with `CREDITGATE_TEST_BACKEND=postgres`
//! every fresh ledger is a fresh database on the server at
//! `CREDITGATE_TEST_POSTGRES_URL` (a role allowed to CREATE DATABASE),
//! created on an admin connection and dropped (WITH FORCE) by its guard.
//! `scripts/test-postgres.sh` starts a throwaway server and sets both.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// The backend the tests run on: `sqlite` (default) or `postgres`.
pub fn backend() -> String {
    std::env::var("CREDITGATE_TEST_BACKEND").unwrap_or_default().to_ascii_lowercase()
}

pub fn is_postgres() -> bool {
    match backend().as_str() {
        "" | "sqlite" => false,
        "postgres" | "postgresql" => true,
        other => panic!("CREDITGATE_TEST_BACKEND must be sqlite or postgres, got {other:?}"),
    }
}

/// The server URL from the environment; panics when the backend is
/// PostgreSQL and it is missing (a misconfigured run must fail, not skip).
pub fn server_url() -> String {
    std::env::var("CREDITGATE_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .expect("CREDITGATE_TEST_BACKEND=postgres needs CREDITGATE_TEST_POSTGRES_URL (see scripts/test-postgres.sh)")
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let (scheme, rest) = base.split_once("://").expect("a postgresql:// URL");
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let mut out = format!("{scheme}://{authority}/{db}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn admin() -> &'static Mutex<postgres::Client> {
    static ADMIN: OnceLock<Mutex<postgres::Client>> = OnceLock::new();
    ADMIN.get_or_init(|| {
        let url = server_url();
        let client = postgres::Client::connect(&url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL server: {e}"));
        Mutex::new(client)
    })
}

fn run_admin(sql: &str) -> Result<(), postgres::Error> {
    let mut c = admin().lock().unwrap_or_else(|p| p.into_inner());
    if c.is_closed() {
        *c = postgres::Client::connect(&server_url(), postgres::NoTls)?;
    }
    match c.batch_execute(sql) {
        // The connection died since its last use (tests/pg_restart.rs
        // restarts the server): reconnect once.
        Err(e) if c.is_closed() || e.as_db_error().is_none() => {
            *c = postgres::Client::connect(&server_url(), postgres::NoTls)?;
            c.batch_execute(sql)
        }
        other => other,
    }
}

/// A database created for one test; dropped with it.
pub struct Database {
    name: String,
}

impl Database {
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // FORCE: managers of the test may still hold pooled connections.
        if let Err(e) = run_admin(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)) {
            eprintln!("warning: cannot drop test database {}: {e}", self.name);
        }
    }
}

/// A fresh, empty database on the test server: its URL and its guard.
pub fn fresh_database() -> (String, Database) {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "cg_test_{}_{}_{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
    );
    run_admin(&format!("CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'"))
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    (with_database(&server_url(), &name), Database { name })
}
