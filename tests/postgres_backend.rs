//! PostgreSQL-only behaviour: TLS modes, passwords kept out of messages,
//! concurrent migrations, unreachable servers. The rest of the suite runs on
//! PostgreSQL unchanged (CREDITGATE_TEST_BACKEND=postgres); these skip with a
//! message on SQLite. `scripts/test-postgres.sh` runs them on a throwaway
//! server with TLS and a role admitted only over TLS.

mod common;

use common::pg;
use creditgate::{Config, CreditManager, Credits, EntryKind, EntryOptions, ErrorCode};
use std::time::{Duration, Instant};

fn skip(test: &str) -> bool {
    if pg::is_postgres() {
        return false;
    }
    eprintln!("{test}: SKIPPED: needs CREDITGATE_TEST_BACKEND=postgres (scripts/test-postgres.sh)");
    true
}

/// The password in a `scheme://user:password@host/...` URL.
fn password_of(url: &str) -> String {
    let rest = url.split_once("://").expect("URL").1;
    let userinfo = rest.split_once('@').expect("userinfo").0;
    userinfo.split_once(':').expect("password").1.to_string()
}

fn open_err(url: &str) -> creditgate::Error {
    match CreditManager::open(Config::new().database_url(url)) {
        Ok(_) => panic!("opening {} should fail", creditgate::redact_url(url)),
        Err(e) => e,
    }
}

/// A grant and a strict deduct round trip on `m`.
fn works(m: &CreditManager) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let user = format!("tls-user-{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let user = user.as_str();
    m.add_credits(user, Credits::from_credits(10).unwrap(), EntryKind::Grant, &EntryOptions::default()).expect("grant");
    m.deduct_credits(user, Credits::from_credits(4).unwrap(), &EntryOptions::default()).expect("deduct");
    assert_eq!(m.get_balance(user).unwrap(), Credits::from_credits(6).unwrap());
    assert!(m.audit().unwrap().ok);
}

#[test]
fn database_url_hides_the_password() {
    if skip("database_url_hides_the_password") {
        return;
    }
    let (url, _g) = common::shared_url();
    let pw = password_of(&url);
    let m = CreditManager::open(Config::new().database_url(&url)).expect("open");
    let shown = m.database_url();
    assert!(!shown.contains(&pw), "{shown}");
    assert!(shown.starts_with("postgresql://") && shown.contains(":***@"), "{shown}");
    let dbg = format!("{m:?} {:?}", m.config());
    assert!(!dbg.contains(&pw), "{dbg}");
}

#[test]
fn a_wrong_password_is_a_storage_error_without_the_password() {
    if skip("a_wrong_password_is_a_storage_error_without_the_password") {
        return;
    }
    let (url, _g) = common::shared_url();
    let pw = password_of(&url);
    let wrong = "Wr0ng-Passw0rd-xyz";
    let e = open_err(&url.replacen(&format!(":{pw}@"), &format!(":{wrong}@"), 1));
    assert_eq!(e.code(), ErrorCode::Storage, "{e}");
    let msg = e.to_string();
    assert!(!msg.contains(wrong) && !msg.contains(&pw), "{msg}");
    assert!(msg.contains("password authentication failed"), "{msg}");
    // Also in a password= parameter.
    let no_pw = url.replacen(&format!(":{pw}@"), "@", 1);
    let sep = if no_pw.contains('?') { '&' } else { '?' };
    let e = open_err(&format!("{no_pw}{sep}password={wrong}"));
    assert!(!e.to_string().contains(wrong), "{e}");
}

#[test]
fn an_unreachable_server_fails_fast_as_storage() {
    if skip("an_unreachable_server_fails_fast_as_storage") {
        return;
    }
    // Port 1 on loopback: nothing listens there.
    let t = Instant::now();
    let e = open_err("postgresql://u:S3cretPw@127.0.0.1:1/db?connect_timeout=2");
    assert_eq!(e.code(), ErrorCode::Storage, "{e}");
    assert!(!e.to_string().contains("S3cretPw"), "{e}");
    assert!(e.to_string().contains("refused"), "says why: {e}");
    assert!(t.elapsed() < Duration::from_secs(30), "took {:?}", t.elapsed());
    let e = open_err("postgresql://u@127.0.0.1:1/db?sslmode=sometimes");
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
}

#[test]
fn concurrent_opens_migrate_once() {
    if skip("concurrent_opens_migrate_once") {
        return;
    }
    let (url, _g) = common::shared_url();
    let managers: Vec<CreditManager> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..6)
            .map(|_| s.spawn(|| CreditManager::open(Config::new().database_url(&url)).expect("concurrent open")))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for m in &managers {
        m.migrate().expect("migrate twice");
    }
    managers[0]
        .add_credits("u", Credits::from_credits(1).unwrap(), EntryKind::Grant, &EntryOptions::default())
        .unwrap();
    assert_eq!(managers[5].get_balance("u").unwrap(), Credits::from_credits(1).unwrap());
    let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("admin connection");
    let versions: i64 = c.query_one("SELECT COUNT(*) FROM creditgate_schema_version", &[]).unwrap().get(0);
    assert_eq!(versions, common::latest_schema_version(), "each migration recorded once");
}

/// The TLS URL from scripts/pg.sh, pointed at a fresh database.
fn tls_url(db: &str, params: &str) -> Option<String> {
    let base = std::env::var("CREDITGATE_TEST_POSTGRES_TLS_URL").ok()?;
    let url = pg::with_database(&base, db);
    Some(if params.is_empty() { url } else { format!("{url}?{params}") })
}

#[test]
fn tls_as_the_url_asks() {
    if skip("tls_as_the_url_asks") {
        return;
    }
    let Ok(ca) = std::env::var("CREDITGATE_TEST_POSTGRES_CA") else {
        // scripts/pg.sh turns TLS on whenever openssl is present.
        eprintln!("tls_as_the_url_asks: SKIPPED: the test server has no TLS (CREDITGATE_TEST_POSTGRES_CA unset)");
        return;
    };
    let (_, db) = pg::fresh_database();
    let url = |params: &str| tls_url(db.name(), params).expect("CREDITGATE_TEST_POSTGRES_TLS_URL");
    // The role is admitted only over TLS: a plain connection is refused...
    let e = open_err(&url("sslmode=disable"));
    assert_eq!(e.code(), ErrorCode::Storage);
    assert!(e.to_string().contains("no encryption"), "{e}");
    // ... and every mode that encrypts gets in.
    for params in [
        String::new(),
        "sslmode=prefer".to_string(),
        "sslmode=require".to_string(),
        format!("sslmode=require&sslrootcert={ca}"),
        format!("sslmode=verify-ca&sslrootcert={ca}"),
        format!("sslmode=verify-full&sslrootcert={ca}"),
    ] {
        let m = CreditManager::open(Config::new().database_url(url(&params)))
            .unwrap_or_else(|e| panic!("open with {params:?}: {e}"));
        works(&m);
    }
    // verify-full checks the name: the certificate is for localhost and 127.0.0.1.
    let by_ip = url(&format!("sslmode=verify-full&sslrootcert={ca}")).replacen("@localhost:", "@127.0.0.1:", 1);
    works(&CreditManager::open(Config::new().database_url(by_ip)).expect("verify-full by IP"));
    // Verification against the public roots fails: the test CA is not one of them.
    let e = open_err(&url("sslmode=verify-full"));
    assert_eq!(e.code(), ErrorCode::Storage, "{e}");
    assert!(e.to_string().contains("certificate"), "says why: {e}");
    let e = open_err(&url("sslmode=verify-ca&sslrootcert=/nonexistent/root.crt"));
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
}

#[test]
fn the_ledger_can_live_in_a_schema_of_its_own() {
    if skip("the_ledger_can_live_in_a_schema_of_its_own") {
        return;
    }
    let (url, _g) = common::shared_url();
    let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("admin connection");
    c.batch_execute("CREATE SCHEMA ledger").unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let m = CreditManager::open(Config::new().database_url(format!("{url}{sep}options=-c%20search_path%3Dledger")))
        .expect("open in schema ledger");
    works(&m);
    let count_in = |c: &mut postgres::Client, schema: &str| -> i64 {
        c.query_one(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name LIKE 'creditgate_%'",
            &[&schema],
        )
        .unwrap()
        .get(0)
    };
    assert!(count_in(&mut c, "ledger") >= 8, "the ledger's tables are in schema ledger");
    assert_eq!(count_in(&mut c, "public"), 0, "and none in public");
}
