//! API key secrets. Format (docs/reference.md): `<prefix><body><checksum>` where body is
//! 43 base62 characters drawn from the OS CSPRNG by rejection sampling (256
//! bits of entropy, the same as 32 random bytes) and checksum is 6 base62
//! characters encoding the first 4 bytes of SHA-256(prefix + body). With the
//! default prefix `sk_` a key is 52 characters long.
//!
//! Secrets are stored only as a hash: hex SHA-256, or hex HMAC-SHA-256 keyed
//! with the server pepper. No type here prints a secret.

use crate::error::{Error, Result};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::fmt;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
pub const BODY_LEN: usize = 43;
pub const CHECKSUM_LEN: usize = 6;
use crate::limits::{MAX_KEY_LEN, MAX_PREFIX_LEN, MIN_KEY_LEN};
/// Display prefix length of our own keys (docs/reference.md `list_api_keys`).
const DISPLAY_PREFIX_LEN: usize = 8;

/// A plaintext API key. Shown once; `Debug` and `Display` never print it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl ApiKeySecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeySecret(<redacted>)")
    }
}

/// The server-side HMAC key for key hashes.
#[derive(Clone)]
pub struct Pepper(Vec<u8>);

impl Pepper {
    pub(crate) fn new(v: String) -> Result<Pepper> {
        if v.len() < 16 || v.len() > 1024 {
            return Err(Error::invalid(format!("API_KEY_PEPPER must be 16..=1024 bytes, got {} bytes", v.len())));
        }
        Ok(Pepper(v.into_bytes()))
    }
}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pepper(<redacted>)")
    }
}

pub(crate) fn validate_prefix(prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_LEN
        && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        // Quoted only when short: a runaway value must not make a runaway message.
        let got =
            if prefix.len() <= 4 * MAX_PREFIX_LEN { format!("{prefix:?}") } else { format!("{} bytes", prefix.len()) };
        return Err(Error::invalid(format!(
            "API key prefix must be 1..={MAX_PREFIX_LEN} characters of [A-Za-z0-9_-], got {got}"
        )));
    }
    Ok(())
}

fn checksum(prefix: &str, body: &str) -> [u8; CHECKSUM_LEN] {
    let digest = Sha256::new().chain_update(prefix.as_bytes()).chain_update(body.as_bytes()).finalize();
    let mut n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) as u64;
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// A fresh secret from the OS CSPRNG.
pub(crate) fn generate(prefix: &str) -> Result<ApiKeySecret> {
    let mut body = String::with_capacity(BODY_LEN);
    let mut buf = [0u8; 64];
    while body.len() < BODY_LEN {
        getrandom::fill(&mut buf).map_err(|e| Error::Internal(format!("OS random source failed: {e}")))?;
        // 248 = 4 * 62: reject the tail so every character is uniform.
        for &b in buf.iter().filter(|&&b| b < 248) {
            if body.len() == BODY_LEN {
                break;
            }
            body.push(BASE62[(b % 62) as usize] as char);
        }
    }
    let sum = checksum(prefix, &body);
    let mut secret = String::with_capacity(prefix.len() + BODY_LEN + CHECKSUM_LEN);
    secret.push_str(prefix);
    secret.push_str(&body);
    secret.extend(sum.iter().map(|&b| b as char));
    Ok(ApiKeySecret(secret))
}

/// What a presented string is, decided without touching storage.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyShape {
    /// Our format with a valid checksum.
    Ours,
    /// Not our format: may be a legacy key.
    Foreign,
}

/// Rejects strings that cannot be a key: wrong length, NUL, or our prefix and
/// length with a bad checksum. The message never contains the key.
pub(crate) fn classify(prefix: &str, key: &str) -> Result<KeyShape> {
    if key.len() < MIN_KEY_LEN || key.len() > MAX_KEY_LEN {
        return Err(Error::InvalidApiKey(format!(
            "malformed key: length {} is outside {MIN_KEY_LEN}..={MAX_KEY_LEN} bytes",
            key.len()
        )));
    }
    if key.bytes().any(|b| b == 0) {
        return Err(Error::InvalidApiKey("malformed key: contains a NUL byte".into()));
    }
    if key.len() != prefix.len() + BODY_LEN + CHECKSUM_LEN || !key.starts_with(prefix) {
        return Ok(KeyShape::Foreign);
    }
    let rest = &key[prefix.len()..];
    if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Error::InvalidApiKey("malformed key: not base62 after the prefix".into()));
    }
    let (body, sum) = rest.split_at(BODY_LEN);
    if checksum(prefix, body).as_slice() != sum.as_bytes() {
        return Err(Error::InvalidApiKey("malformed key: checksum mismatch".into()));
    }
    Ok(KeyShape::Ours)
}

/// Hex SHA-256 of the secret.
pub(crate) fn sha256_hex(secret: &str) -> String {
    hex32(&Sha256::digest(secret.as_bytes()).into())
}

/// Lowercase hex of a 32-byte digest. `hex::encode_to_slice` works on a
/// stack buffer: `hex::encode` builds the string a char at a time, which
/// showed in the verify profile.
fn hex32(digest: &[u8; 32]) -> String {
    let mut out = [0u8; 64];
    // Cannot fail: the buffer is exactly twice the input.
    let _ = hex::encode_to_slice(digest, &mut out);
    // ASCII: never fails.
    std::str::from_utf8(&out).map(str::to_owned).unwrap_or_default()
}

/// The stored lookup hash: HMAC-SHA-256 with the pepper, else SHA-256.
pub(crate) fn lookup_hash(pepper: Option<&Pepper>, secret: &str) -> String {
    match pepper {
        Some(p) => {
            let mut mac = Hmac::<Sha256>::new_from_slice(&p.0).expect("HMAC accepts any key length");
            mac.update(secret.as_bytes());
            hex32(&mac.finalize().into_bytes().into())
        }
        None => sha256_hex(secret),
    }
}

/// Display prefix: 8 chars of our keys, at most len/4 of a legacy key.
pub(crate) fn display_prefix(secret: &str, legacy: bool) -> String {
    let n = if legacy { (secret.len() / 4).min(DISPLAY_PREFIX_LEN) } else { DISPLAY_PREFIX_LEN };
    secret.chars().take(n).collect()
}

pub(crate) fn validate_sha256_hex(v: &str) -> Result<()> {
    if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(Error::invalid(format!(
            "secret_sha256 must be 64 lowercase hex characters, got {} characters",
            v.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let a = generate("sk_").unwrap();
        let b = generate("sk_").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 52);
        assert_eq!(classify("sk_", a.expose()).unwrap(), KeyShape::Ours);
        assert!(!format!("{a:?}").contains(&a.expose()[3..]));
    }

    #[test]
    fn checksum_catches_a_changed_character() {
        let k = generate("sk_").unwrap();
        let mut s = k.expose().to_string();
        let i = 10;
        let c = s.as_bytes()[i];
        let replacement = if c == b'a' { "b" } else { "a" };
        s.replace_range(i..i + 1, replacement);
        assert!(matches!(classify("sk_", &s), Err(Error::InvalidApiKey(_))));
        assert!(classify("sk_", "short").is_err());
        assert!(classify("sk_", &"x".repeat(513)).is_err());
        assert_eq!(classify("sk_", "legacy-key-123").unwrap(), KeyShape::Foreign);
    }

    #[test]
    fn pepper_changes_the_hash() {
        let p = Pepper::new("0123456789abcdef-pepper".into()).unwrap();
        assert_ne!(lookup_hash(Some(&p), "k"), lookup_hash(None, "k"));
        assert_eq!(lookup_hash(None, "abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn display_prefixes() {
        assert_eq!(display_prefix("sk_abcdefghijk", false), "sk_abcde");
        assert_eq!(display_prefix("legacy-key-123", true), "leg");
    }
}
