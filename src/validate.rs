//! Input checks shared by every operation (docs/reference.md). Each rejects with
//! `InvalidArgument` naming the field and the offending value (truncated).

use crate::error::{Error, Result};
use crate::types::truncate;

// Re-exported for the callers that name them `validate::…`.
pub(crate) use crate::limits::{
    MAX_KEY_EXPIRY_MICROS, MAX_LISTED_KEYS, MAX_METADATA_BYTES, MAX_PAGE_LIMIT, MAX_ROTATION_GRACE_SECONDS,
    MAX_TEXT_BYTES, MAX_TOKENS_PER_CALL, MAX_TTL_SECONDS, RESERVED_KEY_PREFIXES,
};

/// A 1..=255-byte string without NUL: user ids, keys, references, models.
pub fn text<'a>(field: &str, v: &'a str) -> Result<&'a str> {
    if v.is_empty() || v.len() > MAX_TEXT_BYTES {
        return Err(Error::invalid(format!(
            "{field} must be 1..={MAX_TEXT_BYTES} bytes, got {} bytes ({:?})",
            v.len(),
            truncate(v)
        )));
    }
    if v.contains('\0') {
        return Err(Error::invalid(format!("{field} must not contain NUL, got {:?}", truncate(v))));
    }
    Ok(v)
}

/// A key expiry: a time between the epoch and the end of year 9999.
pub fn key_expiry(t: crate::types::Timestamp) -> Result<crate::types::Timestamp> {
    if !(0..=MAX_KEY_EXPIRY_MICROS).contains(&t.0) {
        return Err(Error::invalid(format!(
            "expires_at must be between 1970-01-01 and 9999-12-31 UTC, got {} microseconds since the epoch",
            t.0
        )));
    }
    Ok(t)
}

pub fn opt_text<'a>(field: &str, v: Option<&'a str>) -> Result<Option<&'a str>> {
    v.map(|v| text(field, v)).transpose()
}

/// A caller's own idempotency key: text, and not in a reserved namespace.
pub fn caller_key<'a>(field: &str, v: Option<&'a str>) -> Result<Option<&'a str>> {
    let Some(v) = opt_text(field, v)? else { return Ok(None) };
    if let Some(p) = RESERVED_KEY_PREFIXES.iter().find(|p| v.starts_with(*p)) {
        return Err(Error::invalid(format!(
            "{field} must not start with the reserved prefix {p:?}, got {:?}",
            truncate(v)
        )));
    }
    Ok(Some(v))
}

pub fn tokens(field: &str, v: i64) -> Result<i64> {
    if !(0..=MAX_TOKENS_PER_CALL).contains(&v) {
        return Err(Error::invalid(format!("{field} must be in 0..={MAX_TOKENS_PER_CALL}, got {v}")));
    }
    Ok(v)
}

pub fn metadata(
    v: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
    let Some(m) = v else { return Ok(None) };
    metadata_size(m)?;
    Ok(Some(m.clone()))
}

/// Metadata is at most `MAX_METADATA_BYTES` as JSON.
pub fn metadata_size(m: &serde_json::Map<String, serde_json::Value>) -> Result<()> {
    let len = serde_json::to_string(m).map_err(|e| Error::invalid(format!("metadata is not serializable: {e}")))?.len();
    if len > MAX_METADATA_BYTES {
        return Err(Error::invalid(format!("metadata must be at most {MAX_METADATA_BYTES} bytes as JSON, got {len}")));
    }
    Ok(())
}

pub fn page_limit(v: u32) -> Result<u32> {
    if !(1..=MAX_PAGE_LIMIT).contains(&v) {
        return Err(Error::invalid(format!("limit must be in 1..={MAX_PAGE_LIMIT}, got {v}")));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_limits() {
        assert!(text("user_id", "").is_err());
        assert!(text("user_id", &"x".repeat(256)).is_err());
        assert!(text("user_id", "a\0b").is_err());
        assert!(text("user_id", &"x".repeat(255)).is_ok());
        assert!(caller_key("idempotency_key", Some("payment:1")).is_err());
        assert!(caller_key("idempotency_key", Some("pay-1")).is_ok());
        assert!(tokens("tokens", -1).is_err());
        assert!(tokens("tokens", MAX_TOKENS_PER_CALL + 1).is_err());
        assert!(page_limit(0).is_err() && page_limit(1001).is_err() && page_limit(1000).is_ok());
    }
}
