//! The Standard Webhooks signature: HMAC-SHA256 under the secret's bytes
//! (the base64 after `whsec_`) of `"{webhook-id}.{webhook-timestamp}.{body}"`,
//! sent as `webhook-signature: v1,<base64>`. Receivers check it, and the
//! timestamp's freshness (a replayed request is stale), with
//! [`verify_webhook`].

use super::secret::SECRET_PREFIX;
use crate::error::{Error, Result};
use crate::types::Timestamp;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The signature scheme's version prefix.
const VERSION: &str = "v1,";

/// The keyed MAC of one message, its key from `secret` (`whsec_…`).
fn mac(secret: &str, msg_id: &str, timestamp: i64, payload: &[u8]) -> Result<Hmac<Sha256>> {
    let bad = || Error::invalid("webhook verification failed: bad secret (expected whsec_ and base64)");
    let encoded = secret.strip_prefix(SECRET_PREFIX).ok_or_else(bad)?;
    let key = B64.decode(encoded).map_err(|_| bad())?;
    if key.is_empty() {
        return Err(bad());
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| bad())?;
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    Ok(mac)
}

/// The `webhook-signature` value (`v1,<base64>`) of `payload` sent as
/// message `msg_id` at `timestamp` (unix seconds) under `secret`
/// (`whsec_…`). A malformed secret: `InvalidArgument`.
pub fn sign_webhook(secret: &str, msg_id: &str, timestamp: i64, payload: &[u8]) -> Result<String> {
    let tag = mac(secret, msg_id, timestamp, payload)?.finalize().into_bytes();
    Ok(format!("{VERSION}{}", B64.encode(tag)))
}

/// Verifies a delivery as a receiver: `headers` (names matched in any
/// case) must hold `webhook-id`, `webhook-timestamp` within
/// `tolerance_seconds` of `now`, and a `webhook-signature` with a `v1,`
/// signature (of several, space-separated, any one) of this exact
/// `payload` under `secret`; compared in constant time. Returns the parsed
/// JSON body. Each failure is `InvalidArgument` saying which check failed:
/// missing header, bad secret, timestamp too old or too new, signature
/// mismatch, body not JSON.
pub fn verify_webhook(
    payload: &[u8],
    headers: &[(&str, &str)],
    secret: &str,
    now: Timestamp,
    tolerance_seconds: u32,
) -> Result<serde_json::Value> {
    let fail = |why: &str| Error::invalid(format!("webhook verification failed: {why}"));
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .ok_or_else(|| fail(&format!("missing header {name}")))
    };
    let (id, ts, signatures) = (header("webhook-id")?, header("webhook-timestamp")?, header("webhook-signature")?);
    let timestamp: i64 = ts.parse().map_err(|_| fail("webhook-timestamp is not unix seconds"))?;
    let now_s = now.0.div_euclid(1_000_000);
    let tolerance = i64::from(tolerance_seconds);
    if timestamp < now_s.saturating_sub(tolerance) {
        return Err(fail("timestamp too old (stale)"));
    }
    if timestamp > now_s.saturating_add(tolerance) {
        return Err(fail("timestamp too new"));
    }
    let expected = mac(secret, id, timestamp, payload)?;
    let matches = signatures
        .split_whitespace()
        .filter_map(|s| s.strip_prefix(VERSION))
        .filter_map(|s| B64.decode(s).ok())
        .any(|sig| expected.clone().verify_slice(&sig).is_ok());
    if !matches {
        return Err(fail("signature mismatch"));
    }
    serde_json::from_slice(payload).map_err(|_| fail("body not JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn signs_like_the_standard_webhooks_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let sig = sign_webhook(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let now = Timestamp(1614265330 * 1_000_000);
        let h = [("Webhook-Id", "msg_p5jXN8AQM9LWM0D4loKWxJek"), ("WEBHOOK-TIMESTAMP", "1614265330")];
        let other = "v1,Zm9v";
        let both = format!("{other} {sig}");
        let headers = [h[0], h[1], ("webhook-signature", both.as_str())];
        assert_eq!(verify_webhook(body, &headers, secret, now, 300).unwrap()["test"], 2432232314u64);
        let fails = |body: &[u8], ts: &str, secret: &str, now: Timestamp| {
            let headers = [h[0], ("webhook-timestamp", ts), ("webhook-signature", sig.as_str())];
            verify_webhook(body, &headers, secret, now, 300).unwrap_err().to_string()
        };
        assert!(fails(b"{\"test\": 1}", "1614265330", secret, now).contains("signature mismatch"));
        assert!(fails(body, "1614265331", secret, now).contains("signature mismatch"));
        assert!(fails(body, "1614265330", "whsec_AAAA", now).contains("signature mismatch"));
        assert!(fails(body, "1614265330", "nope", now).contains("bad secret"));
        assert!(fails(body, "1614265330", secret, Timestamp(now.0 + 301_000_000)).contains("too old"));
        assert!(fails(body, "1614265330", secret, Timestamp(now.0 - 301_000_000)).contains("too new"));
        let e = verify_webhook(body, &h, secret, now, 300).unwrap_err().to_string();
        assert!(e.contains("missing header webhook-signature"), "{e}");
    }
}
