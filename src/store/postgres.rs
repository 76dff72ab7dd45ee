//! PostgreSQL backend, for many gateway hosts sharing one ledger.
//!
//! - Driver: the synchronous `postgres` crate, in the thread-free pool of
//!   `pool.rs`; each connection keeps a prepared-statement cache (one round
//!   trip per statement) and sets `lock_timeout`.
//! - TLS: rustls (ring), as the URL's `sslmode` asks (libpq semantics):
//!   `disable`; `allow`/`prefer` (default) and `require` encrypt without
//!   verifying the certificate (`require` with `sslrootcert` verifies the
//!   chain); `verify-ca` verifies the chain; `verify-full` also the host
//!   name. Roots: the PEM file `sslrootcert`, else the Mozilla roots.
//! - Writes run in READ COMMITTED transactions, up to one per pooled
//!   connection at once (see `group.rs`): a writer that finds a connection
//!   free runs its own transaction at once; the writers that find them all
//!   busy are group-committed, sharing one transaction, each in its own
//!   savepoint, so one WAL flush serves them all. Only one such shared
//!   batch runs at a time, so batching adds no lock cycle. Every write locks its account row first
//!   (`ensure_account`: `SELECT … FOR NO KEY UPDATE`, inserting the row when
//!   absent), so strict checks, hold inserts and the key-creation rules are
//!   serialized per account across hosts; balances move only by the
//!   conditional `UPDATE … RETURNING` of `apply`. Idempotency keys are unique
//!   constraints: when two hosts race on one key, the loser's insert fails
//!   with 23505 and its transaction is rerun, taking the replay path.
//! - Serialization failures (40001), deadlocks (40P01) and those unique
//!   violations are retried a bounded number of times with jittered
//!   exponential backoff, rerunning the whole batch; the manager's closures
//!   are safe to rerun.
//! - Reads run at REPEATABLE READ, READ ONLY: one consistent snapshot.
//! - Time comes from the server (`clock_timestamp()` at BEGIN), so hosts
//!   with skewed clocks agree on expiry.
//! - Migrations run under `pg_advisory_xact_lock`, recorded in
//!   `creditgate_schema_version`.
//!
//! No error message contains the database password: every message is
//! scrubbed of it before it leaves this module.

use super::group::{GroupCommit, Slot};
use super::pool::{Connector, Pool, Pooled};
use super::{
    AccountRow, Applied, HashKind, HoldRow, HoldStatus, KeyRow, KeyStanding, LedgerFigures, RATE_ROW_HAS_LIMITS,
    RateCheck, RateCounts, Tx, exhausted_limit,
};
use crate::config::{Config, TestClock};
use crate::error::{Error, Result};
use crate::events::{Event, NewEvent, unknown_cursor};
use crate::money::Credits;
use crate::types::{
    Entry, EntryId, EntryKind, Grant, GrantCategory, GrantId, HoldId, KeyId, ModelPrice, SpendWindow, Timestamp,
};
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{FromSqlOwned, ToSql};
use postgres::{Client, Row, SimpleQueryMessage, Statement};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio_postgres_rustls::MakeRustlsConnect;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/postgres/001_init.sql")),
    (2, include_str!("migrations/postgres/002_lean_entry_indexes.sql")),
    (3, include_str!("migrations/postgres/003_min_balance.sql")),
    (4, include_str!("migrations/postgres/004_events.sql")),
    (5, include_str!("migrations/postgres/005_key_lifecycle.sql")),
    (6, include_str!("migrations/postgres/006_grants.sql")),
    (7, include_str!("migrations/postgres/007_rate_limits.sql")),
];

/// The newest schema version this library knows.
pub(crate) const LATEST_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// `pg_advisory_xact_lock` key that serializes migrations ("creditgt").
const MIGRATION_LOCK: i64 = 0x6372_6564_6974_6774;

/// Most writes in one transaction: each has a savepoint, and PostgreSQL
/// caches at most 64 subtransactions per session before lookups slow down.
const MAX_BATCH_JOBS: usize = 32;

/// Most attempts of one transaction before giving up with `Storage`.
const MAX_ATTEMPTS: u32 = 12;

/// Connect timeout when the URL has no `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const NOW_SQL: &str = "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint";
const BEGIN_WRITE: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";
const BEGIN_READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

// ----- URL and TLS ----------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

struct ParsedUrl {
    config: postgres::Config,
    ssl_mode: SslMode,
    root_cert: Option<String>,
    /// The URL with any password replaced by `***`.
    location: String,
    /// Strings no message may contain (the password, raw and decoded).
    secrets: Vec<String>,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Hides the password of a URL: in the userinfo and in a `password=` parameter.
fn redact_location(url: &str) -> String {
    let url = crate::config::redact_url(url);
    match url.split_once('?') {
        None => url,
        Some((base, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if percent_decode(k) == "password" => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            format!("{base}?{}", params.join("&"))
        }
    }
}

/// Parses a `postgresql://` / `postgres://` URL. The `sslmode` values the
/// driver does not know (`allow`, `verify-ca`, `verify-full`) and
/// `sslrootcert` are taken out and handled here.
fn parse_url(url: &str) -> Result<ParsedUrl> {
    let location = redact_location(url);
    let mut secrets = Vec::new();
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    if let Some((_, rest)) = base.split_once("://") {
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, pw)) = userinfo.split_once(':')
        {
            secrets.push(pw.to_string());
            secrets.push(percent_decode(pw));
        }
    }
    let mut ssl_mode = SslMode::Prefer;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (percent_decode(k), percent_decode(v));
        match key.as_str() {
            "sslmode" => {
                ssl_mode = match value.as_str() {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    _ => {
                        return Err(Error::invalid(format!(
                            "sslmode must be disable, allow, prefer, require, verify-ca or verify-full, got {:?}",
                            crate::types::truncate(&value)
                        )));
                    }
                }
            }
            "sslrootcert" => root_cert = Some(value),
            "sslcert" | "sslkey" | "sslpassword" | "sslcrl" => {
                return Err(Error::invalid(format!(
                    "PostgreSQL URL option {key} (client certificates, CRLs) is not supported"
                )));
            }
            _ => {
                if key == "password" {
                    secrets.push(v.to_string());
                    secrets.push(value);
                }
                kept.push(pair);
            }
        }
    }
    secrets.retain(|s| !s.is_empty());
    let rebuilt = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    let mut config = postgres::Config::from_str(&rebuilt)
        .map_err(|e| Error::invalid(scrub(&secrets, format!("invalid PostgreSQL URL {location:?}: {e}"))))?;
    if let Some(pw) = config.get_password() {
        secrets.push(String::from_utf8_lossy(pw).into_owned());
    }
    secrets.retain(|s| !s.is_empty());
    config.ssl_mode(match ssl_mode {
        SslMode::Disable => postgres::config::SslMode::Disable,
        SslMode::Prefer => postgres::config::SslMode::Prefer,
        _ => postgres::config::SslMode::Require,
    });
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("creditgate");
    }
    Ok(ParsedUrl { config, ssl_mode, root_cert, location, secrets })
}

fn scrub(secrets: &[String], mut msg: String) -> String {
    for s in secrets {
        if msg.contains(s.as_str()) {
            msg = msg.replace(s.as_str(), "***");
        }
    }
    msg
}

/// Accepts any certificate (libpq's `prefer`/`require`): encryption without
/// authentication. Handshake signatures are still checked.
#[derive(Debug)]
struct NoVerifier(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// libpq's `verify-ca`: the chain must lead to a trusted root; the host name
/// is not checked.
#[derive(Debug)]
struct ChainOnlyVerifier(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnlyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn root_store(root_cert: Option<&str>) -> Result<RootCertStore> {
    match root_cert {
        None | Some("system") => Ok(RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }),
        Some(path) => {
            let mut store = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| Error::invalid(format!("cannot read sslrootcert {path:?}: {e}")))?;
            for cert in certs {
                let cert = cert.map_err(|e| Error::invalid(format!("bad certificate in sslrootcert {path:?}: {e}")))?;
                store.add(cert).map_err(|e| Error::invalid(format!("bad certificate in sslrootcert {path:?}: {e}")))?;
            }
            if store.is_empty() {
                return Err(Error::invalid(format!("sslrootcert {path:?} holds no PEM certificate")));
            }
            Ok(store)
        }
    }
}

fn tls_connector(mode: SslMode, root_cert: Option<&str>) -> Result<MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS setup: {e}")))?;
    let verify = match mode {
        SslMode::VerifyCa | SslMode::VerifyFull => true,
        SslMode::Require => root_cert.is_some(),
        SslMode::Disable | SslMode::Prefer => false,
    };
    let verifier: Arc<dyn ServerCertVerifier> = if verify {
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(root_store(root_cert)?),
            provider.clone(),
        )
        .build()
        .map_err(|e| Error::invalid(format!("TLS root certificates: {e}")))?;
        if mode == SslMode::VerifyFull { webpki } else { Arc::new(ChainOnlyVerifier(webpki)) }
    } else {
        Arc::new(NoVerifier(provider))
    };
    let config = builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

// ----- the pool ---------------------------------------------------------

/// A pooled connection with its prepared statements.
pub(crate) struct PgConn {
    client: Client,
    stmts: HashMap<String, Statement>,
    /// Set when the session's state is unknown (a failed rollback).
    broken: bool,
}

pub(crate) struct PgManager {
    config: postgres::Config,
    tls: MakeRustlsConnect,
    setup: String,
}

impl Connector for PgManager {
    type Conn = PgConn;

    /// Failures are described with the server's message (the driver's own
    /// `Display` says only "db error"); the caller scrubs secrets.
    fn connect(&self) -> Result<PgConn> {
        let fail = |e: postgres::Error| Error::Storage(describe(&e));
        let mut client = self.config.connect(self.tls.clone()).map_err(fail)?;
        client.batch_execute(&self.setup).map_err(fail)?;
        Ok(PgConn { client, stmts: HashMap::new(), broken: false })
    }

    fn is_broken(&self, conn: &mut PgConn) -> bool {
        conn.broken || conn.client.is_closed()
    }
}

pub(crate) struct PostgresStore {
    pool: Pool<PgManager>,
    location: String,
    secrets: Arc<Vec<String>>,
    group: GroupCommit,
    clock: TestClock,
    /// The schema version the open found (0: the open created the schema).
    opened_from: i64,
}

/// How one attempt of a transaction ended.
enum Attempt<R> {
    Done(Result<R>),
    /// Rolled back for a reason a rerun can clear (e.g. SQLSTATE 40001).
    Retry(String),
}

/// The message of a storage error, without the code prefix.
fn storage_text(e: Error) -> String {
    match e {
        Error::Storage(m) => m,
        other => other.to_string(),
    }
}

/// The server's SQLSTATE and message, or the driver's error with its causes
/// ("error connecting to server: Connection refused (os error 111)").
fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("PostgreSQL error {}: {}", db.code().code(), db.message());
    }
    let mut msg = format!("PostgreSQL: {e}");
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        msg.push_str(&format!(": {c}"));
        cause = c.source();
    }
    msg
}

/// SQLSTATEs after which rerunning the whole transaction is right.
fn retryable(code: &SqlState, write: bool) -> bool {
    *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        // A racing host inserted the same idempotency key (or account) first:
        // the rerun takes the replay path.
        || (write && *code == SqlState::UNIQUE_VIOLATION)
        // A cached statement went stale (schema change, pooler reset).
        || *code == SqlState::FEATURE_NOT_SUPPORTED
        || *code == SqlState::INVALID_SQL_STATEMENT_NAME
}

/// A cached prepared statement the server no longer accepts (schema change,
/// pooler reset): cleared by preparing it again.
fn stale_statement(message: &str) -> bool {
    message.contains("cached plan") || message.contains("prepared statement")
}

/// Full-jitter exponential backoff: up to 2 ms × 2^attempt, at most 200 ms.
fn backoff(attempt: u32) {
    let cap_us = (2_000u64 << attempt.min(7)).min(200_000);
    let r = getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15);
    std::thread::sleep(Duration::from_micros(500 + r % cap_us));
}

fn begin(client: &mut Client, write: bool) -> std::result::Result<Timestamp, postgres::Error> {
    let sql = format!("{}; {NOW_SQL}", if write { BEGIN_WRITE } else { BEGIN_READ });
    let msgs = client.simple_query(&sql)?;
    let now = msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse::<i64>().ok()),
        _ => None,
    });
    Ok(Timestamp(now.unwrap_or_else(|| Timestamp::now().0)))
}

impl PostgresStore {
    /// Connects and applies the migrations up to version `up_to`; `None`
    /// only reads the schema version (nothing is created or changed).
    pub(crate) fn open(url: &str, config: &Config, up_to: Option<i64>) -> Result<PostgresStore> {
        let p = parse_url(url)?;
        let secrets = Arc::new(p.secrets);
        let tls = tls_connector(p.ssl_mode, p.root_cert.as_deref())?;
        let setup = if config.busy_timeout_ms == 0 {
            "SET lock_timeout = 0".to_string()
        } else {
            format!("SET lock_timeout = {}", config.busy_timeout_ms)
        };
        let connect_timeout = p.config.get_connect_timeout().copied().unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let manager = PgManager { config: p.config, tls, setup };
        // One connection first, so that a wrong password or an unreachable
        // server fails at once with the server's message; it also runs the
        // migrations (or reads the version), and then joins the pool.
        let mut first = manager.connect().map_err(|e| {
            Error::Storage(scrub(&secrets, format!("cannot connect to PostgreSQL {}: {}", p.location, storage_text(e))))
        })?;
        let opened_from = match up_to {
            Some(version) => migrate_on(&mut first, &secrets, version)?.0,
            None => applied_on(&mut first, &secrets)?.last().copied().unwrap_or(0),
        };
        let wait =
            connect_timeout.max(Duration::from_millis(u64::from(config.busy_timeout_ms))) + Duration::from_secs(5);
        let pool = Pool::new(manager, config.pool_size, wait);
        drop(pool.adopt(first));
        Ok(PostgresStore {
            pool,
            location: p.location,
            secrets,
            group: GroupCommit::with_lanes(MAX_BATCH_JOBS, config.pool_size as usize),
            clock: config.clock.clone(),
            opened_from,
        })
    }

    pub(crate) fn location(&self) -> String {
        self.location.clone()
    }

    fn storage(&self, msg: String) -> Error {
        Error::Storage(scrub(&self.secrets, msg))
    }

    fn conn(&self) -> Result<Pooled<'_, PgManager>> {
        self.pool.get().map_err(|e| self.storage(format!("no PostgreSQL connection: {}", storage_text(e))))
    }

    /// Runs `f` in a READ COMMITTED transaction shared with concurrent
    /// writers (group commit), its writes kept only when `f` returns Ok;
    /// reruns the batch on serialization failures, deadlocks and idempotency
    /// races; returns once the transaction committed.
    #[cfg(test)]
    pub(crate) fn write<R: Send>(&self, f: impl FnMut(&mut dyn Tx) -> Result<R> + Send) -> Result<R> {
        self.write_on(None, f)
    }

    /// `write` of an `f` that locks only the account named by `account` (a
    /// hash of it), when Some: see `group.rs`.
    pub(crate) fn write_on<R: Send>(
        &self,
        account: Option<u64>,
        f: impl FnMut(&mut dyn Tx) -> Result<R> + Send,
    ) -> Result<R> {
        self.group.write_on(account, f, &|slots| self.run_batch(slots))
    }

    fn run_batch(&self, slots: &mut [&mut Slot]) -> Result<()> {
        self.retrying(|| self.batch_attempt(slots))
    }

    /// Reruns `attempt` while it ends in what a rerun can clear, at most
    /// `MAX_ATTEMPTS` times, with backoff.
    fn retrying<R>(&self, mut attempt: impl FnMut() -> Attempt<R>) -> Result<R> {
        let mut n = 1;
        loop {
            match attempt() {
                Attempt::Done(r) => return r,
                Attempt::Retry(why) if n >= MAX_ATTEMPTS => {
                    return Err(self.storage(format!("transaction gave up after {n} attempts: {why}")));
                }
                Attempt::Retry(_) => {
                    backoff(n);
                    n += 1;
                }
            }
        }
    }

    /// One attempt of a batch: each job in a savepoint (a lone job needs
    /// none), rolled back to it when the job fails; a failure that a rerun
    /// can clear reruns the whole batch.
    fn batch_attempt(&self, slots: &mut [&mut Slot]) -> Attempt<()> {
        let mut conn = match self.conn() {
            Ok(c) => c,
            Err(e) => return Attempt::Done(Err(e)),
        };
        let now = match begin(&mut conn.client, true) {
            Ok(now) => now,
            Err(e) => return self.begin_failed(&mut conn, &e),
        };
        let lone = slots.len() == 1;
        // One savepoint, re-established after each kept job and kept by a
        // rollback to it: one round trip per job.
        if !lone && let Err(e) = conn.client.batch_execute("SAVEPOINT creditgate_job") {
            return self.abandon(&mut conn, Failure { code: e.code().cloned(), message: describe(&e) });
        }
        let mut locked = Vec::new();
        let last = slots.len() - 1;
        for (i, slot) in slots.iter_mut().enumerate() {
            slot.set_failure(None);
            let before = locked.len();
            let mut tx =
                PgTx { c: &mut conn, store: self, now: Some(now), write: true, failed: None, locked, grants: None };
            let ok = slot.run(&mut tx);
            let failed = tx.failed.take();
            locked = tx.locked;
            let failure = match failed {
                None if ok => None,
                // The job's own error (e.g. insufficient credits): undo its writes.
                None => Some(None),
                Some(f) if self.rerun_clears(&mut conn, &f, true) => return self.abandon(&mut conn, f),
                // A statement failed but the closure went on: never keep that.
                Some(f) => Some(ok.then_some(f.message)),
            };
            let next = match &failure {
                None if lone || i == last => continue,
                None => "RELEASE creditgate_job; SAVEPOINT creditgate_job",
                Some(_) if lone => "ROLLBACK",
                Some(_) => "ROLLBACK TO creditgate_job",
            };
            if let Err(e) = conn.client.batch_execute(next) {
                return self.abandon(&mut conn, Failure { code: e.code().cloned(), message: describe(&e) });
            }
            if let Some(message) = failure {
                slot.set_failure(message);
                if lone {
                    return Attempt::Done(Ok(()));
                }
                locked.truncate(before);
            }
        }
        self.commit(&mut conn, true, ())
    }

    /// Runs `f` on one REPEATABLE READ, READ ONLY snapshot.
    pub(crate) fn read<R>(&self, mut f: impl FnMut(&mut dyn Tx) -> Result<R>) -> Result<R> {
        self.retrying(|| self.read_attempt(&mut f))
    }

    /// Runs `f`, whose reads are one statement each, outside a transaction
    /// (autocommit: each statement sees its own snapshot); the verify hot
    /// path in one round trip. Rerun on a fresh connection when a pooled one
    /// had died, and on serialization failures: it only reads.
    pub(crate) fn peek<R>(&self, mut f: impl FnMut(&mut dyn Tx) -> Result<R>) -> Result<R> {
        let mut attempt = 1;
        loop {
            let mut conn = self.conn()?;
            let mut tx = PgTx {
                c: &mut conn,
                store: self,
                now: None,
                write: false,
                failed: None,
                locked: Vec::new(),
                grants: None,
            };
            let out = f(&mut tx);
            let failed = tx.failed.take();
            let retry = match &failed {
                None => return out,
                Some(Failure { code: Some(code), message }) => {
                    if *code == SqlState::FEATURE_NOT_SUPPORTED || *code == SqlState::INVALID_SQL_STATEMENT_NAME {
                        stale_statement(message)
                    } else {
                        retryable(code, false)
                    }
                }
                Some(Failure { code: None, .. }) => conn.client.is_closed(),
            };
            if conn.client.is_closed() {
                conn.broken = true;
            }
            match failed {
                Some(Failure { message, .. }) if retry && attempt < MAX_ATTEMPTS => {
                    if stale_statement(&message) {
                        conn.stmts.clear();
                    }
                    drop(conn);
                    backoff(attempt);
                    attempt += 1;
                }
                Some(Failure { message, .. }) if out.is_ok() => return Err(self.storage(message)),
                _ => return out,
            }
        }
    }

    fn read_attempt<R>(&self, f: &mut dyn FnMut(&mut dyn Tx) -> Result<R>) -> Attempt<R> {
        let mut conn = match self.conn() {
            Ok(c) => c,
            Err(e) => return Attempt::Done(Err(e)),
        };
        let now = match begin(&mut conn.client, false) {
            Ok(now) => now,
            Err(e) => return self.begin_failed(&mut conn, &e),
        };
        let mut tx = PgTx {
            c: &mut conn,
            store: self,
            now: Some(now),
            write: false,
            failed: None,
            locked: Vec::new(),
            grants: None,
        };
        let out = f(&mut tx);
        match (out, tx.failed.take()) {
            (Ok(v), None) => self.commit(&mut conn, false, v),
            (out, None) => {
                self.rollback(&mut conn);
                Attempt::Done(out)
            }
            (out, Some(failure)) => {
                if self.rerun_clears(&mut conn, &failure, false) {
                    return self.abandon(&mut conn, failure);
                }
                self.rollback(&mut conn);
                match out {
                    // A statement failed but the closure went on: never use that.
                    Ok(_) => Attempt::Done(Err(self.storage(failure.message))),
                    Err(e) => Attempt::Done(Err(e)),
                }
            }
        }
    }

    /// BEGIN failed. Nothing was done yet: a connection that died in the
    /// pool (server restart, idle timeout) is replaced and the call rerun.
    fn begin_failed<R>(&self, conn: &mut PgConn, e: &postgres::Error) -> Attempt<R> {
        conn.broken = true;
        // Class 57P: the server is shutting down or restarting; 08: connection.
        let gone = e.code().is_some_and(|c| c.code().starts_with("57P") || c.code().starts_with("08"));
        if conn.client.is_closed() || gone {
            Attempt::Retry(describe(e))
        } else {
            Attempt::Done(Err(self.storage(format!("cannot begin a transaction: {}", describe(e)))))
        }
    }

    /// Whether rerunning the transaction can clear `failure`; forgets what
    /// the rerun must not reuse (stale statements, a dead connection).
    fn rerun_clears(&self, conn: &mut PgConn, failure: &Failure, write: bool) -> bool {
        match &failure.code {
            Some(code) if retryable(code, write) => {
                if *code == SqlState::FEATURE_NOT_SUPPORTED || *code == SqlState::INVALID_SQL_STATEMENT_NAME {
                    if !stale_statement(&failure.message) {
                        return false;
                    }
                    conn.stmts.clear();
                }
                true
            }
            Some(_) => false,
            // The connection died before COMMIT: the server rolled back.
            None if conn.client.is_closed() => {
                conn.broken = true;
                true
            }
            None => false,
        }
    }

    fn rollback(&self, conn: &mut PgConn) {
        if conn.client.batch_execute("ROLLBACK").is_err() {
            conn.broken = true;
        }
    }

    /// Rolls the whole transaction back, to be rerun.
    fn abandon<R>(&self, conn: &mut PgConn, failure: Failure) -> Attempt<R> {
        self.rollback(conn);
        Attempt::Retry(failure.message)
    }

    fn commit<R>(&self, conn: &mut PgConn, write: bool, v: R) -> Attempt<R> {
        match conn.client.batch_execute("COMMIT") {
            Ok(()) => Attempt::Done(Ok(v)),
            Err(e) => match e.code() {
                // The server rolled back (e.g. serializable conflict at commit).
                Some(code) if retryable(code, write) => Attempt::Retry(describe(&e)),
                _ => {
                    conn.broken = true;
                    Attempt::Done(Err(self.storage(format!(
                        "commit failed, the outcome is unknown (retry with the same idempotency key): {}",
                        describe(&e)
                    ))))
                }
            },
        }
    }

    /// Applies the pending migrations up to version `up_to` under an
    /// advisory lock, so concurrent openers (on any host) apply each
    /// exactly once.
    pub(crate) fn migrate(&self, up_to: i64) -> Result<(i64, i64)> {
        let mut conn = self.conn()?;
        migrate_on(&mut conn, &self.secrets, up_to)
    }

    /// The schema versions recorded as applied, ascending; a read.
    pub(crate) fn applied_versions(&self) -> Result<Vec<i64>> {
        let mut conn = self.conn()?;
        applied_on(&mut conn, &self.secrets)
    }

    pub(crate) fn opened_from(&self) -> i64 {
        self.opened_from
    }
}

/// The versions in `creditgate_schema_version`, ascending (none without the
/// table); needs no lock nor CREATE privileges.
fn applied_on(conn: &mut PgConn, secrets: &[String]) -> Result<Vec<i64>> {
    let err = |e: postgres::Error| Error::Storage(scrub(secrets, format!("schema version: {}", describe(&e))));
    let exists: bool =
        conn.client.query_one("SELECT to_regclass('creditgate_schema_version') IS NOT NULL", &[]).map_err(err)?.get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let rows = conn
        .client
        .query("SELECT version::bigint FROM creditgate_schema_version ORDER BY version", &[])
        .map_err(err)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Applies the migrations up to `up_to` not yet recorded. Returns the schema
/// version before and after (0 before: no schema). A schema newer than this
/// library is left alone: the caller refuses it.
fn migrate_on(conn: &mut PgConn, secrets: &[String], up_to: i64) -> Result<(i64, i64)> {
    let err = |e: postgres::Error| Error::Storage(scrub(secrets, format!("migration: {}", describe(&e))));
    // Fast path, without the lock (nor CREATE privileges): nothing to do.
    let applied = applied_on(conn, secrets)?;
    let current = applied.last().copied().unwrap_or(0);
    let pending = MIGRATIONS.iter().any(|m| m.0 <= up_to && !applied.contains(&m.0));
    if current > LATEST_VERSION || !pending {
        return Ok((current, current));
    }
    conn.stmts.clear();
    let client = &mut conn.client;
    let mut t = client.transaction().map_err(err)?;
    t.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(err)?;
    t.batch_execute(
        "CREATE TABLE IF NOT EXISTS creditgate_schema_version (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .map_err(err)?;
    // Read again under the lock: another host may have migrated meanwhile.
    let applied: Vec<i64> = t
        .query("SELECT version::bigint FROM creditgate_schema_version", &[])
        .map_err(err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let current = applied.iter().copied().max().unwrap_or(0);
    if current > LATEST_VERSION {
        return Ok((current, current));
    }
    // Every migration not recorded, in order (not only those above the
    // highest recorded one).
    let mut after = current;
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 <= up_to && !applied.contains(&m.0)) {
        t.batch_execute(sql).map_err(err)?;
        t.execute(
            &format!("INSERT INTO creditgate_schema_version (version, applied_at) VALUES ($1, {NOW_SQL_EXPR})"),
            &[&(*version as i32)],
        )
        .map_err(err)?;
        after = after.max(*version);
    }
    t.commit().map_err(err)?;
    Ok((current, after))
}

const NOW_SQL_EXPR: &str = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint";

// ----- the transaction --------------------------------------------------

struct Failure {
    code: Option<SqlState>,
    message: String,
}

struct PgTx<'c> {
    c: &'c mut PgConn,
    store: &'c PostgresStore,
    /// The server's clock when the transaction began; None outside a
    /// transaction (`peek`), where it is read when asked for.
    now: Option<Timestamp>,
    write: bool,
    /// The first statement that failed: the transaction is then aborted.
    failed: Option<Failure>,
    /// Accounts whose row this transaction holds locked.
    locked: Vec<String>,
    /// (user, now, grants): what `live_grants(user, now, true,
    /// PREFETCHED_GRANTS)` returns, read ahead with the account's lock;
    /// dropped by the next statement.
    grants: Option<(String, Timestamp, Vec<Grant>)>,
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

const ENTRY_COLS: &str = "id, seq, user_id, kind, amount, balance_after, idempotency_key, reference, api_key_id, \
     input_tokens, output_tokens, model, amount_minor, currency, metadata, created_at";
const KEY_COLS: &str = "k.id, k.user_id, k.name, k.prefix, k.legacy, k.created_at, k.last_used_at, k.revoked_at, \
     k.expires_at, k.disabled_at, k.rotated_to, k.spend_limit, k.spend_window, s.window_end, s.spent";
/// Keys with their spend counter.
const KEY_FROM: &str = "creditgate_api_keys k LEFT JOIN creditgate_key_spend s ON s.api_key_id = k.id";

/// The key's spend cap left at `now` (an SQL expression): limit − spent in
/// the window − its holds, in numeric, clamped to BIGINT; NULL without a cap.
fn key_remaining_sql(now: &str) -> String {
    format!(
        "CASE WHEN k.spend_limit IS NULL THEN NULL ELSE GREATEST(k.spend_limit::numeric \
         - (CASE WHEN s.window_end > {now} THEN s.spent ELSE 0 END) \
         - COALESCE((SELECT SUM(kh.amount) FROM creditgate_holds kh \
            WHERE kh.api_key_id = k.id AND kh.status = 'active' AND kh.expires_at > {now}), 0), \
         -9223372036854775808)::bigint END"
    )
}
const HOLD_COLS: &str = "id, user_id, api_key_id, amount, model, request_id, status, expires_at";
const LOCK_ACCOUNT: &str = "SELECT 1 FROM creditgate_accounts WHERE user_id = $1 FOR NO KEY UPDATE";

fn col<T: FromSqlOwned>(r: &Row, i: usize) -> Result<T> {
    r.try_get(i).map_err(|e| Error::Storage(format!("bad column {i} in PostgreSQL row: {e}")))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Storage(format!("bad {what} in database: {e}"))
}

fn entry_from_row(r: &Row) -> Result<Entry> {
    let kind: String = col(r, 3)?;
    let metadata: Option<String> = col(r, 14)?;
    let metadata = metadata
        .map(|m| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&m).map_err(|e| corrupt("metadata", e))
        })
        .transpose()?;
    Ok(Entry {
        id: EntryId(col(r, 0)?),
        seq: col(r, 1)?,
        user_id: col(r, 2)?,
        kind: EntryKind::parse(&kind).map_err(|e| corrupt("kind", e))?,
        amount: Credits::from_micros(col(r, 4)?),
        balance_after: Credits::from_micros(col(r, 5)?),
        idempotency_key: col(r, 6)?,
        reference: col(r, 7)?,
        api_key_id: col::<Option<uuid::Uuid>>(r, 8)?.map(KeyId),
        input_tokens: col(r, 9)?,
        output_tokens: col(r, 10)?,
        model: col(r, 11)?,
        amount_minor: col(r, 12)?,
        currency: col(r, 13)?,
        metadata,
        created_at: Timestamp(col(r, 15)?),
        replayed: false,
    })
}

fn key_from_row(r: &Row) -> Result<KeyRow> {
    Ok(KeyRow {
        id: KeyId(col(r, 0)?),
        user_id: col(r, 1)?,
        name: col(r, 2)?,
        prefix: col(r, 3)?,
        legacy: col(r, 4)?,
        created_at: Timestamp(col(r, 5)?),
        last_used_at: col::<Option<i64>>(r, 6)?.map(Timestamp),
        revoked_at: col::<Option<i64>>(r, 7)?.map(Timestamp),
        expires_at: col::<Option<i64>>(r, 8)?.map(Timestamp),
        disabled_at: col::<Option<i64>>(r, 9)?.map(Timestamp),
        rotated_to: col::<Option<uuid::Uuid>>(r, 10)?.map(KeyId),
        spend_limit: col::<Option<i64>>(r, 11)?.map(Credits::from_micros),
        spend_window: col::<Option<String>>(r, 12)?
            .map(|w| SpendWindow::parse(&w).map_err(|e| corrupt("spend window", e)))
            .transpose()?,
        spend: match (col::<Option<i64>>(r, 13)?, col::<Option<i64>>(r, 14)?) {
            (Some(end), Some(spent)) => Some((Timestamp(end), Credits::from_micros(spent))),
            _ => None,
        },
    })
}

fn hold_from_row(r: &Row) -> Result<HoldRow> {
    let status: String = col(r, 6)?;
    Ok(HoldRow {
        id: HoldId(col(r, 0)?),
        user_id: col(r, 1)?,
        api_key_id: KeyId(col(r, 2)?),
        amount: Credits::from_micros(col(r, 3)?),
        model: col(r, 4)?,
        request_id: col(r, 5)?,
        status: HoldStatus::parse(&status).map_err(|e| corrupt("hold status", e))?,
        expires_at: Timestamp(col(r, 7)?),
    })
}

const GRANT_COLS: &str =
    "id, user_id, entry_id, category, priority, amount, remaining, expires_at, created_at, payment_id";

/// The order of `live_grants` with the due ones first, at `now` (an SQL
/// expression): due by expiry, then the draw-down order.
fn grant_order(now: &str) -> String {
    format!(
        "CASE WHEN expires_at <= {now} THEN 0 ELSE 1 END, \
         CASE WHEN expires_at <= {now} THEN expires_at END, CASE WHEN expires_at <= {now} THEN id END, \
         CASE category WHEN 'promotional' THEN 0 ELSE 1 END, priority, \
         COALESCE(expires_at, 9223372036854775807), id"
    )
}

/// How many grants a write's idempotency look-up reads ahead: the batch a
/// charge's `live_grants` asks for next (the manager's `GRANT_FETCH`; any
/// other limit is read by its own statement).
const PREFETCHED_GRANTS: u32 = 8;

/// A grant of `live_grants` from the JSON array of its `GRANT_COLS`.
fn grant_from_json(v: &serde_json::Value) -> Result<Grant> {
    let bad = || Error::Storage(format!("bad prefetched grant in PostgreSQL row: {v}"));
    let a = v.as_array().filter(|a| a.len() == 10).ok_or_else(bad)?;
    let int = |i: usize| a[i].as_i64().ok_or_else(bad);
    let opt_int = |i: usize| if a[i].is_null() { Ok(None) } else { int(i).map(Some) };
    let text = |i: usize| a[i].as_str().ok_or_else(bad);
    let opt_text = |i: usize| if a[i].is_null() { Ok(None) } else { text(i).map(Some) };
    Ok(Grant {
        grant_id: GrantId(int(0)?),
        user_id: text(1)?.to_string(),
        source_entry_id: opt_text(2)?.map(|u| uuid::Uuid::parse_str(u).map(EntryId).map_err(|_| bad())).transpose()?,
        category: GrantCategory::parse(text(3)?).map_err(|e| corrupt("grant category", e))?,
        priority: i32::try_from(int(4)?).map_err(|_| bad())?,
        amount: Credits::from_micros(int(5)?),
        remaining: Credits::from_micros(int(6)?),
        expires_at: opt_int(7)?.map(Timestamp),
        created_at: Timestamp(int(8)?),
        payment_id: opt_text(9)?.map(str::to_string),
    })
}

fn grant_from_row(r: &Row) -> Result<Grant> {
    let category: String = col(r, 3)?;
    Ok(Grant {
        grant_id: GrantId(col(r, 0)?),
        user_id: col(r, 1)?,
        source_entry_id: col::<Option<uuid::Uuid>>(r, 2)?.map(EntryId),
        category: GrantCategory::parse(&category).map_err(|e| corrupt("grant category", e))?,
        priority: col(r, 4)?,
        amount: Credits::from_micros(col(r, 5)?),
        remaining: Credits::from_micros(col(r, 6)?),
        expires_at: col::<Option<i64>>(r, 7)?.map(Timestamp),
        created_at: Timestamp(col(r, 8)?),
        payment_id: col(r, 9)?,
    })
}

fn price_from_row(r: &Row, first: usize) -> Result<ModelPrice> {
    Ok(ModelPrice {
        input_per_1k: Credits::from_micros(col(r, first)?),
        output_per_1k: Credits::from_micros(col(r, first + 1)?),
    })
}

impl PgTx<'_> {
    /// Records the first failure (it aborts the transaction) and maps it.
    fn fail(&mut self, e: postgres::Error) -> Error {
        let message = scrub(&self.store.secrets, describe(&e));
        if self.failed.is_none() {
            self.failed = Some(Failure { code: e.code().cloned(), message: message.clone() });
        }
        Error::Storage(message)
    }

    fn stmt(&mut self, sql: &str) -> Result<Statement> {
        self.grants = None;
        if let Some(s) = self.c.stmts.get(sql) {
            return Ok(s.clone());
        }
        match self.c.client.prepare(sql) {
            Ok(s) => {
                self.c.stmts.insert(sql.to_string(), s.clone());
                Ok(s)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn query(&mut self, sql: &str, params: Params) -> Result<Vec<Row>> {
        let s = self.stmt(sql)?;
        match self.c.client.query(&s, params) {
            Ok(rows) => Ok(rows),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn opt(&mut self, sql: &str, params: Params) -> Result<Option<Row>> {
        let s = self.stmt(sql)?;
        match self.c.client.query_opt(&s, params) {
            Ok(row) => Ok(row),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn one(&mut self, sql: &str, params: Params) -> Result<Row> {
        let s = self.stmt(sql)?;
        match self.c.client.query_one(&s, params) {
            Ok(row) => Ok(row),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn exec(&mut self, sql: &str, params: Params) -> Result<u64> {
        let s = self.stmt(sql)?;
        match self.c.client.execute(&s, params) {
            Ok(n) => Ok(n),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn int(&mut self, sql: &str, params: Params) -> Result<i64> {
        col(&self.one(sql, params)?, 0)
    }

    /// Streams rows to `f` without holding them all in memory.
    fn scan(&mut self, sql: &str, f: &mut dyn FnMut(&Row) -> Result<()>) -> Result<()> {
        let s = self.stmt(sql)?;
        let mut failed = None;
        let mut out = Ok(());
        match self.c.client.query_raw(&s, std::iter::empty::<&dyn ToSql>()) {
            Err(e) => failed = Some(e),
            Ok(mut rows) => loop {
                match rows.next() {
                    Ok(Some(row)) => {
                        if let Err(e) = f(&row) {
                            out = Err(e);
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            },
        }
        match failed {
            Some(e) => Err(self.fail(e)),
            None => out,
        }
    }

    fn is_locked(&self, user: &str) -> bool {
        self.locked.iter().any(|u| u == user)
    }

    fn one_entry(&mut self, sql_where: &str, params: Params) -> Result<Option<Entry>> {
        let sql = format!("SELECT {ENTRY_COLS} FROM creditgate_entries WHERE {sql_where}");
        self.opt(&sql, params)?.map(|r| entry_from_row(&r)).transpose()
    }

    fn one_key(&mut self, sql_where: &str, params: Params) -> Result<Option<KeyRow>> {
        let sql = format!("SELECT {KEY_COLS} FROM {KEY_FROM} WHERE {sql_where}");
        self.opt(&sql, params)?.map(|r| key_from_row(&r)).transpose()
    }

    fn one_hold(&mut self, sql_where: &str, params: Params) -> Result<Option<HoldRow>> {
        let sql = format!("SELECT {HOLD_COLS} FROM creditgate_holds WHERE {sql_where}");
        self.opt(&sql, params)?.map(|r| hold_from_row(&r)).transpose()
    }
}

fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Tx for PgTx<'_> {
    fn now(&mut self) -> Result<Timestamp> {
        let offset = self.store.clock.offset_micros();
        if let Some(now) = self.now {
            return Ok(Timestamp(now.0.saturating_add(offset)));
        }
        let now = Timestamp(self.int(NOW_SQL, &[])?);
        self.now = Some(now);
        Ok(Timestamp(now.0.saturating_add(offset)))
    }

    fn ensure_account(&mut self, user: &str, now: Timestamp) -> Result<()> {
        if self.is_locked(user) {
            return Ok(());
        }
        if self.opt(LOCK_ACCOUNT, &[&user])?.is_none() {
            let inserted = self.opt(
                "INSERT INTO creditgate_accounts (user_id, created_at) VALUES ($1, $2) \
                 ON CONFLICT (user_id) DO NOTHING RETURNING 1",
                &[&user, &now.0],
            )?;
            if inserted.is_none() {
                // Another host created it since our first look: lock it now.
                self.one(LOCK_ACCOUNT, &[&user])?;
            }
        }
        self.locked.push(user.to_string());
        Ok(())
    }

    fn account(&mut self, user: &str) -> Result<Option<AccountRow>> {
        let row = self.opt(
            "SELECT balance, first_key_issued, created_at, min_balance FROM creditgate_accounts WHERE user_id = $1",
            &[&user],
        )?;
        row.map(|r| {
            Ok(AccountRow {
                balance: Credits::from_micros(col(&r, 0)?),
                first_key_issued: col(&r, 1)?,
                created_at: Timestamp(col(&r, 2)?),
                min_balance: Credits::from_micros(col(&r, 3)?),
            })
        })
        .transpose()
    }

    fn held(&mut self, user: &str, now: Timestamp) -> Result<Credits> {
        let n = self.int(
            "SELECT COALESCE(SUM(amount), 0)::bigint FROM creditgate_holds \
             WHERE user_id = $1 AND status = 'active' AND expires_at > $2",
            &[&user, &now.0],
        )?;
        Ok(Credits::from_micros(n))
    }

    fn apply(&mut self, user: &str, amount: Credits, strict: bool, now: Timestamp) -> Result<Option<Applied>> {
        // The bounds keep `balance + amount` inside BIGINT; the strict check
        // is computed in numeric so it cannot overflow before them. The
        // self-join `o` returns the row as it was before the update.
        let a = amount.micros();
        let (lo, hi) = if a >= 0 { (i64::MIN, i64::MAX - a) } else { (i64::MIN - a, i64::MAX) };
        let row = self.opt(
            "UPDATE creditgate_accounts c SET balance = c.balance + $2::bigint, last_seq = c.last_seq + 1 \
             FROM (SELECT balance, last_seq FROM creditgate_accounts WHERE user_id = $1) o \
             WHERE c.user_id = $1 AND c.balance BETWEEN $3::bigint AND $4::bigint \
             AND (NOT $5::boolean OR c.balance::numeric + $2::bigint >= c.min_balance + \
                  (SELECT COALESCE(SUM(h.amount), 0) FROM creditgate_holds h \
                   WHERE h.user_id = $1 AND h.status = 'active' AND h.expires_at > $6::bigint)) \
             RETURNING c.balance, c.last_seq, o.balance, o.last_seq",
            &[&user, &a, &lo, &hi, &strict, &now.0],
        )?;
        row.map(|r| {
            Ok(Applied {
                balance_after: Credits::from_micros(col(&r, 0)?),
                seq: col(&r, 1)?,
                balance_before: Credits::from_micros(col(&r, 2)?),
                seq_before: col(&r, 3)?,
            })
        })
        .transpose()
    }

    fn insert_entry(&mut self, e: &Entry, global_key: Option<&str>) -> Result<()> {
        let metadata = e.metadata.as_ref().map(|m| serde_json::Value::Object(m.clone()).to_string());
        self.exec(
            "INSERT INTO creditgate_entries (id, seq, user_id, kind, amount, balance_after, idempotency_key, global_key, \
             reference, api_key_id, input_tokens, output_tokens, model, amount_minor, currency, metadata, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
            &[
                &e.id.0,
                &e.seq,
                &e.user_id,
                &e.kind.as_str(),
                &e.amount.micros(),
                &e.balance_after.micros(),
                &e.idempotency_key,
                &global_key,
                &e.reference,
                &e.api_key_id.map(|k| k.0),
                &e.input_tokens,
                &e.output_tokens,
                &e.model,
                &e.amount_minor,
                &e.currency,
                &metadata,
                &e.created_at.0,
            ],
        )?;
        Ok(())
    }

    fn entry_by_key(&mut self, user: &str, key: &str) -> Result<Option<Entry>> {
        // Locked first, so a same-key write racing from another host is
        // seen here (and replayed) rather than refused by a strict check.
        if self.write && !self.is_locked(user) {
            // The lock and the look-up in one round trip. The look-up reads
            // the statement's snapshot, taken before any wait for the lock;
            // every entry comes with its account's `last_seq` + 1 (in
            // `apply`, under the lock), so when the locked row's `last_seq`
            // is the snapshot's, no entry of the account committed in
            // between and the look-up stands. Else (or without the row) it
            // is read again, after the lock, as before. The same holds for
            // the account's grants (they move only with an entry): the
            // first batch of `live_grants` at the transaction's clock, which
            // a charge asks for next, comes along.
            static SQL: LazyLock<String> = LazyLock::new(|| {
                let cols: Vec<String> = ENTRY_COLS.split(", ").map(|c| format!("e.{c}")).collect();
                format!(
                    "WITH l AS (SELECT last_seq FROM creditgate_accounts WHERE user_id = $1 FOR NO KEY UPDATE) \
                     SELECT {}, (SELECT last_seq FROM l), \
                     (SELECT last_seq FROM creditgate_accounts WHERE user_id = $1), \
                     (SELECT json_agg(g.j ORDER BY g.n)::text FROM (SELECT json_build_array({GRANT_COLS}) AS j, \
                      row_number() OVER (ORDER BY {order}) AS n FROM creditgate_grants \
                      WHERE user_id = $1 AND remaining > 0 ORDER BY {order} LIMIT {PREFETCHED_GRANTS}) g) \
                     FROM (SELECT 1) AS one LEFT JOIN creditgate_entries e \
                     ON e.user_id = $1 AND e.idempotency_key = $2",
                    cols.join(", "),
                    order = grant_order("$3::bigint"),
                )
            });
            let now = self.now()?;
            let row = self.one(&SQL, &[&user, &key, &now.0])?;
            let locked: Option<i64> = col(&row, 16)?;
            if locked.is_some() {
                self.locked.push(user.to_string());
                if locked == col::<Option<i64>>(&row, 17)? {
                    let found: Option<uuid::Uuid> = col(&row, 0)?;
                    if found.is_some() {
                        return entry_from_row(&row).map(Some);
                    }
                    let grants = match col::<Option<String>>(&row, 18)? {
                        None => Vec::new(),
                        Some(json) => serde_json::from_str::<Vec<serde_json::Value>>(&json)
                            .map_err(|e| corrupt("prefetched grants", e))?
                            .iter()
                            .map(grant_from_json)
                            .collect::<Result<_>>()?,
                    };
                    self.grants = Some((user.to_string(), now, grants));
                    return Ok(None);
                }
            }
        }
        self.one_entry("user_id = $1 AND idempotency_key = $2", &[&user, &key])
    }

    fn entry_by_global_key(&mut self, key: &str) -> Result<Option<Entry>> {
        self.one_entry("global_key = $1", &[&key])
    }

    fn entry_by_id(&mut self, id: EntryId) -> Result<Option<Entry>> {
        self.one_entry("id = $1", &[&id.0])
    }

    fn reversed_total(&mut self, payment_id: &str) -> Result<(i64, Credits)> {
        if self.write {
            // Lock the payment's account before summing, so concurrent partial
            // reversals of one payment (on any host) see each other.
            let payment_key = format!("payment:{payment_id}");
            let row = self.opt(
                "SELECT a.user_id FROM creditgate_accounts a WHERE a.user_id = \
                 (SELECT e.user_id FROM creditgate_entries e WHERE e.global_key = $1) FOR NO KEY UPDATE OF a",
                &[&payment_key],
            )?;
            if let Some(r) = row {
                let user: String = col(&r, 0)?;
                if !self.is_locked(&user) {
                    self.locked.push(user);
                }
            }
        }
        let r = self.one(
            "SELECT COALESCE(SUM(r.amount_minor), 0)::bigint, COALESCE(SUM(-r.amount), 0)::bigint \
             FROM creditgate_entries r WHERE r.reference = $1 AND r.kind = 'reversal' AND NOT EXISTS \
             (SELECT 1 FROM creditgate_entries i WHERE i.global_key = 'reinstatement:' || substr(r.global_key, 10))",
            &[&payment_id],
        )?;
        Ok((col(&r, 0)?, Credits::from_micros(col(&r, 1)?)))
    }

    fn entries(&mut self, user: &str, before_seq: Option<i64>, limit: u32) -> Result<Vec<Entry>> {
        let sql = format!(
            "SELECT {ENTRY_COLS} FROM creditgate_entries WHERE user_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
        );
        let rows = self.query(&sql, &[&user, &before_seq.unwrap_or(i64::MAX), &i64::from(limit)])?;
        rows.iter().map(entry_from_row).collect()
    }

    fn lifetime(&mut self, user: &str) -> Result<(Credits, Credits)> {
        let r = self.one(
            "SELECT LEAST(COALESCE(SUM(CASE WHEN kind = 'purchase' THEN amount ELSE 0 END), 0), 9223372036854775807)::bigint, \
             LEAST(COALESCE(SUM(CASE WHEN kind IN ('usage', 'deduct') THEN -amount ELSE 0 END), 0), 9223372036854775807)::bigint \
             FROM creditgate_entries WHERE user_id = $1",
            &[&user],
        )?;
        Ok((Credits::from_micros(col(&r, 0)?), Credits::from_micros(col(&r, 1)?)))
    }

    fn key_by_hash(&mut self, hash: &str, only: Option<HashKind>) -> Result<Option<KeyRow>> {
        match only {
            Some(kind) => self.one_key("key_hash = $1 AND hash_kind = $2", &[&hash, &kind.as_str()]),
            None => self.one_key("key_hash = $1", &[&hash]),
        }
    }

    fn key_with_available(&mut self, hash: &str, only: Option<HashKind>) -> Result<Option<KeyStanding>> {
        // The verify hot path in one statement (one round trip in `peek`):
        // the key (not disabled, not expired), its account's available
        // credits, what its cap leaves and its rate counts. Outside a
        // transaction the statement's own start is the clock.
        static SQL: LazyLock<String> = LazyLock::new(|| {
            let now =
                "(COALESCE($3::bigint, (extract(epoch FROM statement_timestamp()) * 1000000)::bigint) + $4::bigint)";
            format!(
                "SELECT {KEY_COLS}, (COALESCE(a.balance::numeric - a.min_balance, 0) - COALESCE((SELECT SUM(h.amount) \
             FROM creditgate_holds h WHERE h.user_id = k.user_id AND h.status = 'active' AND h.expires_at > {now}), 0) \
             - COALESCE((SELECT SUM(g.remaining) FROM creditgate_grants g WHERE g.user_id = k.user_id \
             AND g.remaining > 0 AND g.expires_at <= {now}), 0))::bigint, \
             {}, COALESCE({RATE_ROW_HAS_LIMITS}, FALSE), r.requests_per_minute, r.tokens_per_minute, r.window_start, r.tokens \
             FROM {KEY_FROM} LEFT JOIN creditgate_accounts a ON a.user_id = k.user_id \
             LEFT JOIN creditgate_key_rate_limits r ON r.api_key_id = k.id \
             WHERE k.key_hash = $1 AND ($2::text IS NULL OR k.hash_kind = $2::text) \
             AND k.disabled_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > {now})",
                key_remaining_sql(now)
            )
        });
        let now = self.now.map(|t| t.0);
        let offset = self.store.clock.offset_micros();
        let row = self.opt(&SQL, &[&hash, &only.map(HashKind::as_str), &now, &offset])?;
        row.map(|r| {
            Ok(KeyStanding {
                key: key_from_row(&r)?,
                available: Credits::from_micros(col(&r, 15)?),
                key_remaining: col::<Option<i64>>(&r, 16)?.map(Credits::from_micros),
                rate: if col(&r, 17)? {
                    Some(RateCounts {
                        requests_per_minute: col(&r, 18)?,
                        tokens_per_minute: col(&r, 19)?,
                        window: col(&r, 20)?,
                        tokens: col(&r, 21)?,
                    })
                } else {
                    None
                },
            })
        })
        .transpose()
    }

    fn key_held(&mut self, id: KeyId, now: Timestamp) -> Result<Credits> {
        let n = self.int(
            "SELECT COALESCE(SUM(amount), 0)::bigint FROM creditgate_holds \
             WHERE api_key_id = $1 AND status = 'active' AND expires_at > $2",
            &[&id.0, &now.0],
        )?;
        Ok(Credits::from_micros(n))
    }

    fn set_key_expiry(&mut self, id: KeyId, expires_at: Option<Timestamp>) -> Result<()> {
        self.exec("UPDATE creditgate_api_keys SET expires_at = $2 WHERE id = $1", &[&id.0, &expires_at.map(|t| t.0)])?;
        Ok(())
    }

    fn set_key_disabled(&mut self, id: KeyId, at: Option<Timestamp>) -> Result<bool> {
        let n = match at {
            Some(t) => self.exec(
                "UPDATE creditgate_api_keys SET disabled_at = $2 WHERE id = $1 AND disabled_at IS NULL",
                &[&id.0, &t.0],
            )?,
            None => self.exec(
                "UPDATE creditgate_api_keys SET disabled_at = NULL WHERE id = $1 AND disabled_at IS NOT NULL",
                &[&id.0],
            )?,
        };
        Ok(n == 1)
    }

    fn set_key_rotated(&mut self, id: KeyId, to: KeyId, ends_at: Timestamp) -> Result<()> {
        self.exec(
            "UPDATE creditgate_api_keys SET rotated_to = $2, \
             expires_at = CASE WHEN expires_at IS NULL OR expires_at > $3 THEN $3 ELSE expires_at END WHERE id = $1",
            &[&id.0, &to.0, &ends_at.0],
        )?;
        Ok(())
    }

    fn set_key_limit(&mut self, id: KeyId, limit: Option<(Credits, SpendWindow)>) -> Result<()> {
        self.exec(
            "UPDATE creditgate_api_keys SET spend_limit = $2, spend_window = $3 WHERE id = $1",
            &[&id.0, &limit.map(|l| l.0.micros()), &limit.map(|l| l.1.as_str())],
        )?;
        Ok(())
    }

    fn put_key_spend(&mut self, id: KeyId, start: Timestamp, end: Timestamp, spent: Credits) -> Result<()> {
        self.exec(
            "INSERT INTO creditgate_key_spend (api_key_id, window_start, window_end, spent) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (api_key_id) DO UPDATE SET window_start = EXCLUDED.window_start, \
             window_end = EXCLUDED.window_end, spent = EXCLUDED.spent",
            &[&id.0, &start.0, &end.0, &spent.micros()],
        )?;
        Ok(())
    }

    fn add_key_spend(&mut self, id: KeyId, start: Timestamp, end: Timestamp, amount: Credits) -> Result<()> {
        // The CASEs read the old row: a later window restarts the counter,
        // the same one adds (saturating), an earlier one leaves it.
        self.exec(
            "INSERT INTO creditgate_key_spend AS t (api_key_id, window_start, window_end, spent) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (api_key_id) DO UPDATE SET \
             spent = CASE WHEN t.window_start < EXCLUDED.window_start THEN EXCLUDED.spent \
                          WHEN t.window_start > EXCLUDED.window_start THEN t.spent \
                          ELSE LEAST(t.spent::numeric + EXCLUDED.spent, 9223372036854775807)::bigint END, \
             window_end = CASE WHEN t.window_start < EXCLUDED.window_start THEN EXCLUDED.window_end ELSE t.window_end END, \
             window_start = GREATEST(t.window_start, EXCLUDED.window_start)",
            &[&id.0, &start.0, &end.0, &amount.micros()],
        )?;
        Ok(())
    }

    fn key_usage_since(&mut self, user: &str, id: KeyId, since: Timestamp) -> Result<Credits> {
        let n = self.int(
            "SELECT LEAST(GREATEST(COALESCE(SUM(-amount), 0), 0), 9223372036854775807)::bigint FROM creditgate_entries \
             WHERE user_id = $1 AND api_key_id = $2 AND kind = 'usage' AND created_at >= $3",
            &[&user, &id.0, &since.0],
        )?;
        Ok(Credits::from_micros(n))
    }

    fn key_by_id(&mut self, id: KeyId) -> Result<Option<KeyRow>> {
        self.one_key("id = $1", &[&id.0])
    }

    fn active_keys(&mut self, user: &str, now: Timestamp) -> Result<u32> {
        let n = self.int(
            "SELECT COUNT(*) FROM creditgate_api_keys WHERE user_id = $1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $2)",
            &[&user, &now.0],
        )?;
        Ok(count(n))
    }

    fn insert_key(&mut self, k: &KeyRow, hash: &str, kind: HashKind) -> Result<()> {
        self.exec(
            "INSERT INTO creditgate_api_keys (id, user_id, name, prefix, key_hash, hash_kind, legacy, created_at, \
             expires_at, spend_limit, spend_window) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &k.id.0,
                &k.user_id,
                &k.name,
                &k.prefix,
                &hash,
                &kind.as_str(),
                &k.legacy,
                &k.created_at.0,
                &k.expires_at.map(|t| t.0),
                &k.spend_limit.map(Credits::micros),
                &k.spend_window.map(SpendWindow::as_str),
            ],
        )?;
        Ok(())
    }

    fn set_first_key_issued(&mut self, user: &str) -> Result<()> {
        self.exec("UPDATE creditgate_accounts SET first_key_issued = TRUE WHERE user_id = $1", &[&user])?;
        Ok(())
    }

    fn set_min_balance(&mut self, user: &str, floor: Credits) -> Result<()> {
        self.exec("UPDATE creditgate_accounts SET min_balance = $2 WHERE user_id = $1", &[&user, &floor.micros()])?;
        Ok(())
    }

    fn revoke_key(&mut self, id: KeyId, now: Timestamp) -> Result<bool> {
        let n = self.exec(
            "UPDATE creditgate_api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            &[&id.0, &now.0],
        )?;
        Ok(n == 1)
    }

    fn keys(&mut self, user: &str, limit: u32) -> Result<Vec<KeyRow>> {
        let sql = format!(
            "SELECT {KEY_COLS} FROM {KEY_FROM} WHERE k.user_id = $1 ORDER BY k.created_at DESC, k.id DESC LIMIT $2"
        );
        let rows = self.query(&sql, &[&user, &i64::from(limit)])?;
        rows.iter().map(key_from_row).collect()
    }

    fn touch_keys(&mut self, used: &[(KeyId, Timestamp)]) -> Result<()> {
        // One statement; rows another transaction holds are skipped rather
        // than waited for (`last_used_at` is lazy), so touching never blocks
        // and never deadlocks.
        let ids: Vec<uuid::Uuid> = used.iter().map(|(k, _)| k.0).collect();
        let ats: Vec<i64> = used.iter().map(|(_, t)| t.0).collect();
        self.exec(
            "UPDATE creditgate_api_keys k SET last_used_at = v.at \
             FROM unnest($1::uuid[], $2::bigint[]) AS v(id, at) \
             WHERE k.id = v.id AND (k.last_used_at IS NULL OR k.last_used_at < v.at) \
             AND k.id IN (SELECT l.id FROM creditgate_api_keys l WHERE l.id = ANY($1::uuid[]) \
                          FOR NO KEY UPDATE SKIP LOCKED)",
            &[&ids, &ats],
        )?;
        Ok(())
    }

    fn tally_key_attempt(&mut self, user: &str, day: i64, success: bool) -> Result<()> {
        self.exec(
            "INSERT INTO creditgate_key_attempts AS t (user_id, day, attempts, successes) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (user_id, day) DO UPDATE SET attempts = t.attempts + 1, successes = t.successes + EXCLUDED.successes",
            &[&user, &day, &i64::from(success)],
        )?;
        Ok(())
    }

    fn expire_holds(&mut self, user: &str, now: Timestamp) -> Result<u64> {
        self.exec(
            "UPDATE creditgate_holds SET status = 'expired' WHERE user_id = $1 AND status = 'active' AND expires_at <= $2",
            &[&user, &now.0],
        )
    }

    fn active_holds(&mut self, user: &str, now: Timestamp) -> Result<u32> {
        let n = self.int(
            "SELECT COUNT(*) FROM creditgate_holds WHERE user_id = $1 AND status = 'active' AND expires_at > $2",
            &[&user, &now.0],
        )?;
        Ok(count(n))
    }

    fn insert_hold_if_available(&mut self, h: &HoldRow, now: Timestamp) -> Result<bool> {
        let sql = format!(
            "INSERT INTO creditgate_holds (id, user_id, api_key_id, amount, model, request_id, status, created_at, expires_at) \
             SELECT $3::uuid, $1::text, $4::uuid, $5::bigint, $6::text, $7::text, 'active', $2::bigint, $8::bigint \
             FROM creditgate_accounts a WHERE a.user_id = $1::text AND a.balance::numeric - a.min_balance - \
                 (SELECT COALESCE(SUM(x.amount), 0) FROM creditgate_holds x \
                  WHERE x.user_id = $1::text AND x.status = 'active' AND x.expires_at > $2::bigint) >= $5::bigint \
             AND NOT EXISTS (SELECT 1 FROM {KEY_FROM} WHERE k.id = $4::uuid AND ({}) < $5::bigint)",
            key_remaining_sql("$2::bigint")
        );
        let n = self.exec(
            &sql,
            &[
                &h.user_id,
                &now.0,
                &h.id.0,
                &h.api_key_id.0,
                &h.amount.micros(),
                &h.model,
                &h.request_id,
                &h.expires_at.0,
            ],
        )?;
        Ok(n == 1)
    }

    fn hold(&mut self, id: HoldId) -> Result<Option<HoldRow>> {
        self.one_hold("id = $1", &[&id.0])
    }

    fn hold_by_request(&mut self, user: &str, request_id: &str) -> Result<Option<HoldRow>> {
        self.one_hold("user_id = $1 AND request_id = $2", &[&user, &request_id])
    }

    fn set_hold_status(
        &mut self,
        id: HoldId,
        from: HoldStatus,
        to: HoldStatus,
        entry: Option<EntryId>,
    ) -> Result<bool> {
        let n = self.exec(
            "UPDATE creditgate_holds SET status = $3, entry_id = COALESCE($4::uuid, entry_id) WHERE id = $1 AND status = $2",
            &[&id.0, &from.as_str(), &to.as_str(), &entry.map(|e| e.0)],
        )?;
        Ok(n == 1)
    }

    fn price(&mut self, model: &str) -> Result<Option<ModelPrice>> {
        let row =
            self.opt("SELECT input_per_1k, output_per_1k FROM creditgate_model_prices WHERE model = $1", &[&model])?;
        row.map(|r| price_from_row(&r, 0)).transpose()
    }

    fn set_price(&mut self, model: &str, p: ModelPrice, now: Timestamp) -> Result<()> {
        self.exec(
            "INSERT INTO creditgate_model_prices (model, input_per_1k, output_per_1k, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (model) DO UPDATE SET input_per_1k = EXCLUDED.input_per_1k, \
             output_per_1k = EXCLUDED.output_per_1k, updated_at = EXCLUDED.updated_at",
            &[&model, &p.input_per_1k.micros(), &p.output_per_1k.micros(), &now.0],
        )?;
        Ok(())
    }

    fn prices(&mut self) -> Result<Vec<(String, ModelPrice)>> {
        let rows =
            self.query("SELECT model, input_per_1k, output_per_1k FROM creditgate_model_prices ORDER BY model", &[])?;
        rows.iter().map(|r| Ok((col(r, 0)?, price_from_row(r, 1)?))).collect()
    }

    fn scan_accounts(&mut self, f: &mut dyn FnMut(&str, i64, i64)) -> Result<()> {
        self.scan("SELECT user_id, balance, last_seq FROM creditgate_accounts ORDER BY user_id", &mut |r| {
            let user: &str = r.try_get(0).map_err(|e| corrupt("user_id", e))?;
            f(user, col(r, 1)?, col(r, 2)?);
            Ok(())
        })
    }

    fn scan_entries(&mut self, f: &mut dyn FnMut(&str, i64, i64, i64)) -> Result<()> {
        self.scan(
            "SELECT user_id, seq, amount, balance_after FROM creditgate_entries ORDER BY user_id, seq",
            &mut |r| {
                let user: &str = r.try_get(0).map_err(|e| corrupt("user_id", e))?;
                f(user, col(r, 1)?, col(r, 2)?, col(r, 3)?);
                Ok(())
            },
        )
    }

    fn figures(&mut self) -> Result<LedgerFigures> {
        let mut fig = LedgerFigures::default();
        let q = |tx: &mut Self, sql: &str| -> Result<u64> { Ok(tx.int(sql, &[])?.max(0) as u64) };
        fig.users = q(
            self,
            "SELECT COUNT(*) FROM (SELECT user_id FROM creditgate_entries UNION SELECT user_id FROM creditgate_api_keys \
             UNION SELECT user_id FROM creditgate_key_attempts) u",
        )?;
        fig.paying_users = q(self, "SELECT COUNT(DISTINCT user_id) FROM creditgate_entries WHERE kind = 'purchase'")?;
        fig.users_attempted_key = q(self, "SELECT COUNT(DISTINCT user_id) FROM creditgate_key_attempts")?;
        fig.paying_users_attempted_key = q(
            self,
            "SELECT COUNT(DISTINCT user_id) FROM creditgate_key_attempts WHERE user_id IN \
             (SELECT user_id FROM creditgate_entries WHERE kind = 'purchase')",
        )?;
        fig.key_generation_attempts =
            q(self, "SELECT COALESCE(SUM(attempts), 0)::bigint FROM creditgate_key_attempts")?;
        fig.key_generation_successes =
            q(self, "SELECT COALESCE(SUM(successes), 0)::bigint FROM creditgate_key_attempts")?;
        // NUMERIC sums read as text into i128: gross flows may exceed BIGINT.
        let rows = self.query(
            "SELECT COALESCE(SUM(CASE WHEN kind = 'purchase' THEN amount ELSE 0 END), 0)::text, \
                    COALESCE(SUM(CASE WHEN kind IN ('usage', 'deduct') THEN -amount ELSE 0 END), 0)::text, \
                    COALESCE(SUM(CASE WHEN kind IN ('purchase', 'reinstatement') THEN amount_minor \
                                      WHEN kind = 'reversal' THEN -amount_minor ELSE 0 END), 0)::text, \
                    COALESCE(currency, 'USD'), \
                    COUNT(*) FILTER (WHERE kind IN ('purchase', 'reversal', 'reinstatement')) \
             FROM creditgate_entries WHERE kind IN ('purchase', 'reversal', 'reinstatement', 'usage', 'deduct') \
             GROUP BY COALESCE(currency, 'USD')",
            &[],
        )?;
        let sum = |r: &postgres::Row, i: usize| -> Result<i128> {
            let text: String = col(r, i)?;
            text.parse().map_err(|_| Error::Internal(format!("report sum {text:?} is not an integer")))
        };
        for r in &rows {
            fig.credits_purchased_micros += sum(r, 0)?;
            fig.credits_used_micros += sum(r, 1)?;
            // Usage has no currency: its group counts no payment entries.
            if col::<i64>(r, 4)? > 0 {
                *fig.revenue_minor.entry(col(r, 3)?).or_insert(0) += sum(r, 2)?;
            }
        }
        Ok(fig)
    }

    fn payment_problems(&mut self) -> Result<Vec<(String, String, String)>> {
        let rows = self.query(super::PAYMENT_PROBLEMS_SQL, &[])?;
        rows.iter().map(|r| Ok((col(r, 0)?, col(r, 1)?, col(r, 2)?))).collect()
    }

    fn set_rate_limit(&mut self, key: KeyId, rpm: Option<i64>, tpm: Option<i64>) -> Result<()> {
        // Lifting both limits keeps the row and its counts (see RATE_ROW_HAS_LIMITS).
        self.exec(
            "INSERT INTO creditgate_key_rate_limits (api_key_id, requests_per_minute, tokens_per_minute) \
             VALUES ($1, $2, $3) ON CONFLICT (api_key_id) DO UPDATE SET \
             requests_per_minute = excluded.requests_per_minute, tokens_per_minute = excluded.tokens_per_minute",
            &[&key.0, &rpm, &tpm],
        )?;
        Ok(())
    }

    fn take_requests(&mut self, key: KeyId, window: i64, n: i64) -> Result<RateCheck> {
        // Under READ COMMITTED a concurrent update makes PostgreSQL recheck
        // the WHERE clause on the new row version: the count stays exact.
        let counted = self.exec(
            "UPDATE creditgate_key_rate_limits SET \
             requests = CASE WHEN window_start = $2 THEN requests + $3 ELSE $3 END, \
             tokens = CASE WHEN window_start = $2 THEN tokens ELSE 0 END, window_start = $2 \
             WHERE api_key_id = $1 \
             AND (requests_per_minute IS NULL \
               OR CASE WHEN window_start = $2 THEN requests ELSE 0 END + $3 <= requests_per_minute) \
             AND (tokens_per_minute IS NULL OR CASE WHEN window_start = $2 THEN tokens ELSE 0 END < tokens_per_minute)",
            &[&key.0, &window, &n],
        )?;
        if counted == 1 {
            return Ok(RateCheck::Allowed);
        }
        let row = self.opt(
            "SELECT CASE WHEN window_start = $2 THEN requests ELSE 0 END, requests_per_minute \
             FROM creditgate_key_rate_limits WHERE api_key_id = $1",
            &[&key.0, &window],
        )?;
        match row {
            None => Ok(RateCheck::Unlimited),
            Some(r) => Ok(RateCheck::Limited(exhausted_limit(col(&r, 0)?, col(&r, 1)?))),
        }
    }

    fn add_rate_tokens(&mut self, key: KeyId, window: i64, tokens: i64) -> Result<()> {
        self.exec(
            "UPDATE creditgate_key_rate_limits SET \
             tokens = CASE WHEN window_start = $2 THEN tokens + $3 ELSE $3 END, \
             requests = CASE WHEN window_start = $2 THEN requests ELSE 0 END, window_start = $2 \
             WHERE api_key_id = $1",
            &[&key.0, &window, &tokens],
        )?;
        Ok(())
    }

    fn has_rate_limits(&mut self) -> Result<bool> {
        let r = self.one(
            &format!("SELECT EXISTS (SELECT 1 FROM creditgate_key_rate_limits r WHERE {RATE_ROW_HAS_LIMITS})"),
            &[],
        )?;
        col(&r, 0)
    }

    fn insert_grant(&mut self, g: &Grant) -> Result<GrantId> {
        let row = self.one(
            "INSERT INTO creditgate_grants (user_id, entry_id, category, priority, amount, remaining, expires_at, \
             created_at, payment_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            &[
                &g.user_id,
                &g.source_entry_id.map(|e| e.0),
                &g.category.as_str(),
                &g.priority,
                &g.amount.micros(),
                &g.remaining.micros(),
                &g.expires_at.map(|t| t.0),
                &g.created_at.0,
                &g.payment_id,
            ],
        )?;
        Ok(GrantId(col(&row, 0)?))
    }

    fn live_grants(&mut self, user: &str, now: Timestamp, include_due: bool, limit: u32) -> Result<Vec<Grant>> {
        if include_due
            && limit == PREFETCHED_GRANTS
            && let Some((u, at, grants)) = self.grants.take()
            && u == user
            && at == now
        {
            return Ok(grants);
        }
        let sql = format!(
            "SELECT {GRANT_COLS} FROM creditgate_grants WHERE user_id = $1 AND remaining > 0 \
             AND ($3::boolean OR expires_at IS NULL OR expires_at > $2::bigint) \
             ORDER BY {} LIMIT $4::bigint",
            grant_order("$2::bigint")
        );
        let rows = self.query(&sql, &[&user, &now.0, &include_due, &i64::from(limit)])?;
        rows.iter().map(grant_from_row).collect()
    }

    fn take_from_grant(&mut self, id: GrantId, amount: Credits) -> Result<bool> {
        let n = self.exec(
            "UPDATE creditgate_grants SET remaining = remaining - $2::bigint WHERE id = $1 AND remaining >= $2::bigint",
            &[&id.0, &amount.micros()],
        )?;
        Ok(n == 1)
    }

    fn grant_by_payment(&mut self, payment_id: &str) -> Result<Option<Grant>> {
        let sql = format!("SELECT {GRANT_COLS} FROM creditgate_grants WHERE payment_id = $1 ORDER BY id LIMIT 1");
        self.opt(&sql, &[&payment_id])?.map(|r| grant_from_row(&r)).transpose()
    }

    fn due_grants(&mut self, user: &str, now: Timestamp) -> Result<Credits> {
        let n = self.int(
            "SELECT COALESCE(SUM(remaining), 0)::bigint FROM creditgate_grants \
             WHERE user_id = $1 AND remaining > 0 AND expires_at <= $2::bigint",
            &[&user, &now.0],
        )?;
        Ok(Credits::from_micros(n))
    }

    fn due_grants_total(&mut self, now: Timestamp) -> Result<Credits> {
        let row = self.one(
            "SELECT COALESCE(SUM(remaining), 0)::text FROM creditgate_grants WHERE remaining > 0 AND expires_at <= $1::bigint",
            &[&now.0],
        )?;
        let text: String = col(&row, 0)?;
        text.parse::<i64>()
            .map(Credits::from_micros)
            .map_err(|_| Error::Internal(format!("expired grants {text:?} exceed the 64-bit range")))
    }

    fn users_with_due_grants(&mut self, now: Timestamp, limit: u32) -> Result<Vec<String>> {
        let rows = self.query(
            "SELECT DISTINCT user_id FROM creditgate_grants WHERE remaining > 0 AND expires_at <= $1::bigint \
             ORDER BY user_id LIMIT $2::bigint",
            &[&now.0, &i64::from(limit)],
        )?;
        rows.iter().map(|r| col(r, 0)).collect()
    }

    fn scan_grants(&mut self, f: &mut dyn FnMut(&str, i128, i64)) -> Result<()> {
        self.scan(
            "SELECT user_id, SUM(remaining)::text, COUNT(*) FILTER (WHERE remaining < 0 OR remaining > amount) \
             FROM creditgate_grants GROUP BY user_id ORDER BY user_id",
            &mut |r| {
                let user: &str = r.try_get(0).map_err(|e| corrupt("user_id", e))?;
                let text: String = col(r, 1)?;
                let sum = text.parse().map_err(|_| Error::Internal(format!("grant sum {text:?} is not an integer")))?;
                f(user, sum, col(r, 2)?);
                Ok(())
            },
        )
    }

    fn insert_event(&mut self, e: &NewEvent) -> Result<i64> {
        let data = e.data.to_string();
        self.int(
            "INSERT INTO creditgate_events (kind, user_id, api_key_id, data, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[&e.kind.as_str(), &e.user_id, &e.api_key_id.map(|k| k.0), &data, &e.created_at.0],
        )
    }

    fn events(&mut self, after: i64, limit: u32) -> Result<Vec<Event>> {
        // Sequence ids are not in commit order; transaction ids below the
        // snapshot's xmin belong to finished transactions, and every
        // transaction still to commit has a larger one. So (txid, id) below
        // xmin is a final prefix of the commit order, and the cursor is the
        // (txid, id) of the last event returned.
        let cursor = if after == 0 {
            "0".to_string()
        } else {
            match self.opt("SELECT txid::text FROM creditgate_events WHERE id = $1", &[&after])? {
                Some(r) => col::<String>(&r, 0)?,
                None => return Err(unknown_cursor(after)),
            }
        };
        let rows = self.query(
            "SELECT id, kind, user_id, api_key_id, data, created_at FROM creditgate_events \
             WHERE (txid, id) > ($1::text::xid8, $2) AND txid < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY txid, id LIMIT $3",
            &[&cursor, &after, &i64::from(limit)],
        )?;
        rows.iter()
            .map(|r| {
                let key: Option<uuid::Uuid> = col(r, 3)?;
                let kind: String = col(r, 1)?;
                let data: String = col(r, 4)?;
                Event::from_stored(col(r, 0)?, &kind, col(r, 2)?, key.map(KeyId), &data, col(r, 5)?)
            })
            .collect()
    }

    fn has_purchase(&mut self, user: &str) -> Result<bool> {
        let r =
            self.opt("SELECT 1 FROM creditgate_entries WHERE user_id = $1 AND kind = 'purchase' LIMIT 1", &[&user])?;
        Ok(r.is_some())
    }

    fn host_rows(&mut self, sql: &str, columns: usize) -> Result<Vec<Vec<Option<String>>>> {
        // Not cached: a one-off query on someone else's table.
        let rows = match self.c.client.query(sql, &[]) {
            Ok(rows) => rows,
            Err(e) => return Err(self.fail(e)),
        };
        rows.iter().map(|r| (0..columns).map(|i| col::<Option<String>>(r, i)).collect()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_options_are_parsed_and_the_password_hidden() {
        let p = parse_url("postgresql://bob:s%3Acret@db.example:6543/ledger?sslmode=verify-full&application_name=gw")
            .unwrap();
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
}
