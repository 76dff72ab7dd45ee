//! PostgreSQL URLs (libpq's `sslmode` semantics, passwords kept out of
//! every message) and the TLS connector they ask for.

use crate::error::{Error, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Connect timeout when the URL has no `connect_timeout`.
pub(super) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

pub(super) struct ParsedUrl {
    pub(super) config: postgres::Config,
    pub(super) ssl_mode: SslMode,
    pub(super) root_cert: Option<String>,
    /// The URL with any password replaced by `***`.
    pub(super) location: String,
    /// Strings no message may contain (the password, raw and decoded).
    pub(super) secrets: Vec<String>,
}

pub(super) fn percent_decode(s: &str) -> String {
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
pub(super) fn parse_url(url: &str) -> Result<ParsedUrl> {
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

pub(super) fn scrub(secrets: &[String], mut msg: String) -> String {
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

pub(super) fn tls_connector(mode: SslMode, root_cert: Option<&str>) -> Result<MakeRustlsConnect> {
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
