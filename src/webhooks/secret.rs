//! A subscription's signing secret: made once, shown once, kept in the
//! database only encrypted under the operator's key (an HMAC secret cannot
//! be hashed: delivery needs it back).
//!
//! At rest: `v1:<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`, AES-256-GCM
//! with a random 96-bit nonce and the subscription id as associated data
//! (a secret copied onto another subscription does not decrypt). The key id
//! is the first 8 hex digits of SHA-256("creditgate webhook key" ‖ key), so
//! a ledger opened with another key fails with both ids named.

use crate::error::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::{Digest, Sha256};
use std::fmt;

/// The prefix of every secret (Standard Webhooks' convention).
pub(crate) const SECRET_PREFIX: &str = "whsec_";
/// The random bytes of a new secret.
const SECRET_BYTES: usize = 32;
/// The format version of a stored secret.
const STORED_VERSION: &str = "v1";

/// A subscription's signing secret, `whsec_` + base64 of 32 random bytes.
/// `Debug` and `Display` print `whsec_<redacted>`; [`expose`](Self::expose)
/// gives the text, to show it once.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    /// A new random secret.
    pub(crate) fn generate() -> Result<WebhookSecret> {
        let mut bytes = [0u8; SECRET_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("no randomness for a secret: {e}")))?;
        Ok(WebhookSecret(format!("{SECRET_PREFIX}{}", B64.encode(bytes))))
    }

    /// The secret's text: show it to the operator once, never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("whsec_<redacted>")
    }
}

impl fmt::Display for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("whsec_<redacted>")
    }
}

/// The operator's 32-byte key (`CREDITGATE_WEBHOOK_KEY`); `Debug` redacts it.
#[derive(Clone)]
pub(crate) struct WebhookKey {
    key: [u8; 32],
    id: String,
}

impl fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl WebhookKey {
    /// The key from 64 hex digits.
    pub(crate) fn from_hex(hex_key: &str) -> Result<WebhookKey> {
        let bad = || Error::invalid("CREDITGATE_WEBHOOK_KEY must be 64 hex digits (32 bytes)");
        let bytes = hex::decode(hex_key.trim()).map_err(|_| bad())?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        let mut h = Sha256::new();
        h.update(b"creditgate webhook key");
        h.update(key);
        let id = hex::encode(h.finalize())[..8].to_string();
        Ok(WebhookKey { key, id })
    }

    fn aead(&self) -> Result<LessSafeKey> {
        let k = UnboundKey::new(&AES_256_GCM, &self.key).map_err(|_| Error::Internal("AES key rejected".into()))?;
        Ok(LessSafeKey::new(k))
    }

    /// `secret` encrypted for subscription `id`, in the stored form.
    pub(crate) fn seal(&self, id: &str, secret: &WebhookSecret) -> Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| Error::Internal(format!("no randomness for a nonce: {e}")))?;
        let mut buf = secret.0.as_bytes().to_vec();
        self.aead()?
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(id.as_bytes()), &mut buf)
            .map_err(|_| Error::Internal("encrypting a webhook secret failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{STORED_VERSION}:{}:{}", self.id, B64.encode(out)))
    }

    /// The secret of subscription `id` from its stored form. Another key's
    /// secret: `InvalidArgument` naming both key ids (never the secret).
    pub(crate) fn open(&self, id: &str, stored: &str) -> Result<WebhookSecret> {
        let corrupt = || Error::Storage(format!("webhook {id}: its stored secret is damaged"));
        let mut parts = stored.splitn(3, ':');
        let (Some(STORED_VERSION), Some(key_id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(corrupt());
        };
        if key_id != self.id {
            return Err(Error::invalid(format!(
                "webhook {id}: its secret is encrypted under key {key_id}, but CREDITGATE_WEBHOOK_KEY is key {}",
                self.id
            )));
        }
        let raw = B64.decode(body).map_err(|_| corrupt())?;
        if raw.len() < NONCE_LEN {
            return Err(corrupt());
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| corrupt())?;
        let mut buf = sealed.to_vec();
        let plain = self.aead()?.open_in_place(nonce, Aad::from(id.as_bytes()), &mut buf).map_err(|_| corrupt())?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| corrupt())?;
        Ok(WebhookSecret(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn a_secret_round_trips_only_under_its_key_and_subscription() {
        let key = WebhookKey::from_hex(KEY).unwrap();
        let s = WebhookSecret::generate().unwrap();
        assert!(s.expose().starts_with(SECRET_PREFIX) && s.expose().len() > 40);
        assert_eq!(format!("{s:?} {s}"), "whsec_<redacted> whsec_<redacted>");
        let stored = key.seal("wh_1", &s).unwrap();
        assert!(!stored.contains(&s.expose()[6..]));
        assert_eq!(key.open("wh_1", &stored).unwrap(), s);
        assert!(key.open("wh_2", &stored).is_err(), "bound to its subscription");
        let other = WebhookKey::from_hex(&KEY.replace("00", "ff")).unwrap();
        let e = other.open("wh_1", &stored).unwrap_err().to_string();
        assert!(e.contains(&key.id) && e.contains(&other.id) && !e.contains(s.expose()), "{e}");
        assert!(WebhookKey::from_hex("abc").is_err());
        assert_eq!(format!("{key:?}"), "<redacted>");
    }
}
