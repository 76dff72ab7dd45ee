//! Unit tests of the PostgreSQL store: URL parsing, TLS, and (with a test
//! server) batching, retries and rollbacks.

use super::url::{SslMode, percent_decode};
use super::*;
use crate::money::Credits;
use crate::store::schema::LATEST_VERSION;

#[test]
fn url_options_are_parsed_and_the_password_hidden() {
    let p =
        parse_url("postgresql://bob:s%3Acret@db.example:6543/ledger?sslmode=verify-full&application_name=gw").unwrap();
    assert_eq!(p.ssl_mode, SslMode::VerifyFull);
    assert_eq!(p.location, "postgresql://bob:***@db.example:6543/ledger?sslmode=verify-full&application_name=gw");
    assert!(p.secrets.iter().any(|s| s == "s:cret"));
    assert_eq!(p.config.get_user(), Some("bob"));
    assert_eq!(p.config.get_dbname(), Some("ledger"));
    assert_eq!(p.config.get_ports(), &[6543]);
    assert_eq!(p.config.get_application_name(), Some("gw"));

    let p = parse_url("postgres://u@h/d?password=hunter22&sslmode=require&sslrootcert=%2Ftmp%2Fca.pem").unwrap();
    assert_eq!(p.ssl_mode, SslMode::Require);
    assert_eq!(p.root_cert.as_deref(), Some("/tmp/ca.pem"));
    assert!(!p.location.contains("hunter22"), "{}", p.location);
    assert_eq!(scrub(&p.secrets, "auth failed for hunter22".into()), "auth failed for ***");

    assert_eq!(parse_url("postgres://h/d").unwrap().ssl_mode, SslMode::Prefer);
    assert_eq!(parse_url("postgres://h/d?sslmode=disable").unwrap().ssl_mode, SslMode::Disable);
    let e = parse_url("postgres://u:pw1234@h/d?sslmode=bogus").err().unwrap();
    assert!(matches!(e, Error::InvalidArgument(_)));
    let e = parse_url("postgres://u:pw1234@h/d?nosuchoption=1").err().unwrap();
    assert!(!e.to_string().contains("pw1234"), "{e}");
    assert!(parse_url("postgres://h/d?sslcert=/x").is_err());
}

#[test]
fn tls_connectors_build() {
    for mode in [SslMode::Disable, SslMode::Prefer, SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
        tls_connector(mode, None).unwrap();
    }
    assert!(tls_connector(SslMode::VerifyFull, Some("/nonexistent/ca.pem")).is_err());
}

/// A store on a fresh database of the test server, when the PostgreSQL
/// tests run (scripts/test-postgres.sh); None otherwise.
fn live_store() -> Option<(PostgresStore, String, String)> {
    live_store_with(&Config::new())
}

fn live_store_with(config: &Config) -> Option<(PostgresStore, String, String)> {
    if !std::env::var("CREDITGATE_TEST_BACKEND").is_ok_and(|b| b.eq_ignore_ascii_case("postgres")) {
        eprintln!("SKIPPED: needs CREDITGATE_TEST_BACKEND=postgres (scripts/test-postgres.sh)");
        return None;
    }
    let admin_url = std::env::var("CREDITGATE_TEST_POSTGRES_URL").expect("CREDITGATE_TEST_POSTGRES_URL");
    let db = format!("cg_unit_{}_{}", std::process::id(), Timestamp::now().0);
    let mut admin = postgres::Client::connect(&admin_url, postgres::NoTls).expect("admin connection");
    admin.batch_execute(&format!("CREATE DATABASE {db}")).expect("create database");
    let (base, query) = admin_url.split_once('?').unwrap_or((&admin_url, ""));
    let base = &base[..base.rfind('/').expect("a database in the URL")];
    let url = format!("{base}/{db}?{query}");
    let store = PostgresStore::open(&url, config, Some(LATEST_VERSION)).expect("open");
    Some((store, admin_url, db))
}

fn drop_database(admin_url: &str, db: &str) {
    let mut admin = postgres::Client::connect(admin_url, postgres::NoTls).expect("admin connection");
    admin.batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)")).expect("drop database");
}

/// Raises `code` inside the transaction, as the server would.
fn raise(tx: &mut dyn Tx, code: &str) -> Result<()> {
    let sql = format!("DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{code}'; END $$");
    tx.host_rows(&sql, 0).map(|_| ())
}

/// Concurrent writers share transactions; each job's failure stays its
/// own: a job's error or failed statement rolls back only that job, and
/// a retryable failure reruns the batch without applying anything twice.
/// Both ways writes share one: named by their account (batches of one
/// account, side by side), and not named, with more writers than
/// connections (batches of whatever is queued).
#[test]
fn batched_writes_fail_alone_and_rerun_whole() {
    batched_writes(&Config::new(), Some(7));
    batched_writes(&Config::new().pool_size(2).unwrap(), None);
}

fn batched_writes(config: &Config, account: Option<u64>) {
    let Some((store, admin_url, db)) = live_store_with(config) else { return };
    const THREADS: u64 = 8;
    const PER: u64 = 30;
    let outcomes: Vec<(u64, Result<String>)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = &store;
                s.spawn(move || {
                    (0..PER)
                        .map(|i| {
                            let k = t * PER + i;
                            let mut attempts = 0;
                            let r = store.write_on(account, |tx| {
                                attempts += 1;
                                let now = tx.now()?;
                                tx.ensure_account("u", now)?;
                                tx.apply("u", Credits::from_micros(1), false, now)?;
                                match k % 6 {
                                    0 => return Err(Error::invalid("the job's own error")),
                                    1 => {
                                        let _ = raise(tx, "22012");
                                    }
                                    2 if attempts == 1 => raise(tx, "40001")?,
                                    _ => {}
                                }
                                let txid = tx.host_rows("SELECT txid_current()::text", 1)?;
                                Ok(txid[0][0].clone().unwrap_or_default())
                            });
                            (k, r)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut txids = std::collections::HashMap::<String, u32>::new();
    for (k, r) in &outcomes {
        match (k % 6, r) {
            (0, Err(Error::InvalidArgument(_))) | (1, Err(Error::Storage(_))) => {}
            (_, Ok(txid)) if k % 6 > 1 => *txids.entry(txid.clone()).or_default() += 1,
            other => panic!("job {k}: unexpected {other:?}"),
        }
    }
    let applied: u32 = txids.values().sum();
    assert_eq!(applied as u64, THREADS * PER * 4 / 6);
    let balance = store.read(|tx| Ok(tx.account("u")?.map(|a| a.balance))).unwrap();
    assert_eq!(balance, Some(Credits::from_micros(i64::from(applied))), "each success applied once, no failure");
    assert!(txids.values().any(|&n| n > 1), "some writes shared a transaction: {txids:?}");
    drop(store);
    drop_database(&admin_url, &db);
}

/// Batches run side by side and never wait on each other in a cycle:
/// writers on a few accounts, in every order, more writers than
/// connections, named by their account or not; no write is ever rerun
/// (a deadlock would rerun it, after a `deadlock_timeout` wait).
#[test]
fn concurrent_batches_do_not_deadlock() {
    use std::sync::atomic::{AtomicU32, Ordering};
    const THREADS: usize = 8;
    const PER: usize = 40;
    const ACCOUNTS: usize = 4;
    for (pool, named) in [(3, false), (3, true), (8, false), (8, true)] {
        let Some((store, admin_url, db)) = live_store_with(&Config::new().pool_size(pool).unwrap()) else {
            return;
        };
        let reruns = AtomicU32::new(0);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (store, reruns) = (&store, &reruns);
                s.spawn(move || {
                    for i in 0..PER {
                        let a = (t * 7 + i * 3) % ACCOUNTS;
                        let user = format!("a{a}");
                        let mut attempts = 0;
                        store
                            .write_on(named.then_some(a as u64), |tx| {
                                attempts += 1;
                                let now = tx.now()?;
                                tx.ensure_account(&user, now)?;
                                tx.apply(&user, Credits::from_micros(1), false, now)
                            })
                            .unwrap();
                        reruns.fetch_add(attempts - 1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(reruns.into_inner(), 0, "pool {pool}, named {named}: writes were rerun");
        let total = store
            .read(|tx| {
                (0..ACCOUNTS)
                    .try_fold(0, |sum, a| Ok(sum + tx.account(&format!("a{a}"))?.map_or(0, |r| r.balance.micros())))
            })
            .unwrap();
        assert_eq!(total, (THREADS * PER) as i64, "each write applied once");
        drop(store);
        drop_database(&admin_url, &db);
    }
}

#[test]
fn transactions_are_retried_on_serialization_failures_deadlocks_and_races() {
    let Some((store, admin_url, db)) = live_store() else { return };
    for code in ["40001", "40P01", "23505"] {
        let mut attempts = 0;
        let out = store.write(|tx| {
            attempts += 1;
            let now = tx.now()?;
            tx.ensure_account("u", now)?;
            if attempts < 3 {
                raise(tx, code)?;
            }
            tx.apply("u", Credits::from_micros(1), false, now)
        });
        assert_eq!(attempts, 3, "{code}");
        assert!(out.unwrap().is_some(), "{code}");
    }
    // Each retried write was applied once.
    let balance = store.read(|tx| Ok(tx.account("u")?.map(|a| a.balance))).unwrap();
    assert_eq!(balance, Some(Credits::from_micros(3)));
    // Bounded: a failure that never clears gives up with Storage.
    let mut attempts = 0;
    let e = store
        .write(|tx| {
            attempts += 1;
            raise(tx, "40001")
        })
        .unwrap_err();
    assert_eq!(attempts, MAX_ATTEMPTS);
    assert!(matches!(e, Error::Storage(_)), "{e}");
    // Other errors are not retried, and never committed even when the
    // closure swallows them.
    let mut attempts = 0;
    let e = store.write(|tx| {
        attempts += 1;
        let now = tx.now()?;
        tx.apply("u", Credits::from_micros(100), false, now)?;
        let _ = raise(tx, "22012");
        Ok(())
    });
    assert_eq!(attempts, 1);
    assert!(matches!(e, Err(Error::Storage(_))), "{e:?}");
    let balance = store.read(|tx| Ok(tx.account("u")?.map(|a| a.balance))).unwrap();
    assert_eq!(balance, Some(Credits::from_micros(3)), "the failed write was rolled back");
    // The clock is the server's and reads see one snapshot.
    let (a, b) = store.read(|tx| Ok((tx.now()?, tx.now()?))).unwrap();
    assert_eq!(a, b);
    assert!((a.0 - Timestamp::now().0).abs() < 60_000_000, "server clock {a} vs local");
    drop(store);
    drop_database(&admin_url, &db);
}

#[test]
fn percent_decoding() {
    assert_eq!(percent_decode("a%2Fb%3a"), "a/b:");
    assert_eq!(percent_decode("100%"), "100%");
    assert_eq!(percent_decode("%zz"), "%zz");
}
