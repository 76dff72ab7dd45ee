//! One delivery attempt over HTTP: a POST that follows no redirect, is
//! bounded by one timeout (connect and the whole request), connects only
//! to addresses the allow-list permits (its resolver, [`AllowList::resolve`]),
//! and reads no response body. Any answer but 2xx is a failure.

use super::address::AllowList;
use std::error::Error as _;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// The outcome of one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// Answered 2xx.
    Delivered,
    /// Why not, for `last_error`: never a secret or a response body.
    Failed(String),
}

/// The client of one pass: no redirects, `timeout_ms` per request, and
/// the allow-list as its resolver.
pub(crate) fn agent(allow: &AllowList, timeout_ms: u32) -> ureq::Agent {
    let allow = Arc::new(allow.clone());
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(Duration::from_millis(u64::from(timeout_ms)))
        .resolver(move |netloc: &str| allow.resolve(netloc))
        .user_agent(concat!("creditgate/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// POSTs `body` (JSON) with `headers` to `url`.
pub(crate) fn post(agent: &ureq::Agent, url: &str, timeout_ms: u32, headers: &[(&str, &str)], body: &[u8]) -> Attempt {
    let mut req = agent.post(url).set("content-type", "application/json");
    for (name, value) in headers {
        req = req.set(name, value);
    }
    match req.send_bytes(body) {
        // The response is dropped unread: its body is the receiver's business.
        Ok(r) if (200..300).contains(&r.status()) => Attempt::Delivered,
        Ok(r) => Attempt::Failed(format!("HTTP {}", r.status())),
        Err(ureq::Error::Status(code, _)) => Attempt::Failed(format!("HTTP {code}")),
        Err(ureq::Error::Transport(t)) => Attempt::Failed(transport_error(&t, timeout_ms)),
    }
}

/// A transport failure in a few words: a timeout, the resolver's refusal,
/// or the kind of failure and its cause (no URL: it may carry a token).
fn transport_error(t: &ureq::Transport, timeout_ms: u32) -> String {
    let mut cause = t.source();
    let mut innermost = None;
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if matches!(io.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) {
                return format!("timeout after {timeout_ms} ms");
            }
            if io.kind() == io::ErrorKind::PermissionDenied {
                // The allow-list's refusal, as the resolver worded it.
                return io.to_string();
            }
        }
        innermost = Some(e.to_string());
        cause = e.source();
    }
    let what = match t.kind() {
        ureq::ErrorKind::Dns => "DNS lookup failed",
        ureq::ErrorKind::ConnectionFailed => "connection failed",
        ureq::ErrorKind::TooManyRedirects => "redirect not followed",
        ureq::ErrorKind::BadStatus | ureq::ErrorKind::BadHeader => "bad response",
        _ => "request failed",
    };
    match innermost.or_else(|| t.message().map(str::to_string)) {
        Some(why) => format!("{what}: {}", crate::types::truncate(&why)),
        None => what.to_string(),
    }
}
