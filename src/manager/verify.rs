//! Verification: finding a presented secret and the read-only hot path that
//! checks a key and its account's available credits.

use super::usage::KeyRef;
use super::{CreditManager, MAX_PENDING_TOUCHES};
use crate::error::{Error, ErrorCode, LimitSource, Result};
use crate::keys;
use crate::metrics::Counter;
use crate::money::Credits;
use crate::store::{HashKind, KeyRow, KeyStanding, Tx};
use crate::types::*;
use std::time::Instant;

impl CreditManager {
    /// Looks a presented secret up with `lookup`: by our hash, then (with a
    /// pepper) by the plain SHA-256 of keys imported by hash; else `InvalidApiKey`.
    fn lookup_secret<T>(
        &self,
        secret: &str,
        mut lookup: impl FnMut(&str, Option<HashKind>) -> Result<Option<T>>,
    ) -> Result<T> {
        keys::classify(&self.inner.config.api_key_prefix, secret)?;
        if let Some(found) = lookup(&self.hash(secret), None)? {
            return Ok(found);
        }
        if self.inner.config.api_key_pepper.is_some()
            && let Some(found) = lookup(&keys::sha256_hex(secret), Some(HashKind::Sha256))?
        {
            return Ok(found);
        }
        Err(Error::InvalidApiKey("unknown API key".into()))
    }

    pub(super) fn find_key(&self, tx: &mut dyn Tx, secret: &str) -> Result<KeyRow> {
        self.lookup_secret(secret, |hash, only| tx.key_by_hash(hash, only))
    }

    pub(super) fn key_ref(&self, tx: &mut dyn Tx, key: KeyRef) -> Result<KeyRow> {
        match key {
            KeyRef::Secret(s) => self.find_key(tx, s),
            KeyRef::Id(id) => tx.key_by_id(id)?.ok_or_else(|| Error::InvalidApiKey(format!("no API key with id {id}"))),
        }
    }

    /// Read-only check of a key and its account's available credits.
    pub fn verify_api_key_credits(&self, api_key: &str, min_credits: Credits) -> Result<Verification> {
        self.verify(api_key, Some(min_credits))
    }

    /// Checks the key only, not the credits: who it belongs to and what the
    /// account has available, which may be zero or negative (an overdrawn
    /// account). `InvalidApiKey` for malformed, unknown or revoked keys, exactly
    /// as [`verify_api_key_credits`](Self::verify_api_key_credits); never
    /// `InsufficientCredits`. For endpoints that must answer a valid key at any
    /// balance (e.g. a gateway's "my credits" page). Read-only, counted as a
    /// verification (`verify_ok_total`, `verify_invalid_key_total`).
    pub fn authenticate_api_key(&self, api_key: &str) -> Result<Verification> {
        self.verify(api_key, None)
    }

    /// The verify path; `min_credits: None` skips the credit check.
    fn verify(&self, api_key: &str, min_credits: Option<Credits>) -> Result<Verification> {
        let start = Instant::now();
        let r = (|| {
            if let Some(min) = min_credits {
                min.validate_threshold("min_credits")?;
            }
            let found = self.lookup_secret(api_key, |hash, only| self.inner.store.key_with_available(hash, only))?;
            if found.key.revoked_at.is_some() {
                return Err(Error::InvalidApiKey(format!("API key {} is revoked", found.key.id)));
            }
            let pending = self.pending_for(&found)?;
            let rate = found.rate;
            let mut v = verification(found);
            v.available = v.available.checked_add(pending)?;
            Ok((v, rate, Timestamp::now()))
        })();
        self.inner.metrics.verify_seconds.observe(start.elapsed());
        match r {
            Ok((v, rate, now)) if min_credits.is_none_or(|min| v.spendable() >= min) => {
                if min_credits.is_some()
                    && let Some(rate) = rate
                    && let Err(e) = self.take_request(v.key_id, rate)
                {
                    return self.track(Err(e));
                }
                self.count(Counter::verify_ok_total);
                let mut t = self.inner.touched.lock();
                if t.len() < MAX_PENDING_TOUCHES {
                    t.insert(v.key_id, now);
                }
                Ok(v)
            }
            Ok((v, _, _)) => {
                self.count(Counter::verify_insufficient_credits_total);
                let required = min_credits.unwrap_or(Credits::ZERO);
                self.track(Err(short(required, &v)))
            }
            Err(e) => {
                if e.code() == ErrorCode::InvalidApiKey {
                    self.count(Counter::verify_invalid_key_total);
                }
                self.track(Err(e))
            }
        }
    }
}

impl CreditManager {
    /// The allowance refills due on the key's paying account that no write
    /// has made yet and that a charge through the key may draw: verify
    /// counts them as available, without writing (rare: once per period
    /// until the account's first write).
    fn pending_for(&self, s: &KeyStanding) -> Result<Credits> {
        // The statement's clock said whether one is due (the ledger's, also
        // on PostgreSQL; the verify cache keeps no answer past `refill_at`).
        if !s.refill_due {
            return Ok(Credits::ZERO);
        }
        self.read(|tx| {
            let now = tx.now()?;
            self.pending_credits(tx, now, s.key.paying(), Some(s.key.scope()))
        })
    }
}

/// A key's standing as the verify answer.
pub(super) fn verification(s: KeyStanding) -> Verification {
    Verification {
        user_id: s.key.user_id,
        key_id: s.key.id,
        available: s.available,
        key_remaining: s.key_remaining,
        member_remaining: s.member_remaining,
        project_remaining: s.project_remaining,
    }
}

/// `InsufficientCredits` naming the tightest limit (the first of account,
/// key, member, project on a tie) and what it leaves.
pub(super) fn short(required: Credits, v: &Verification) -> Error {
    let (limit_source, available) =
        v.limits().fold((LimitSource::Account, v.available), |tight, (s, c)| if c < tight.1 { (s, c) } else { tight });
    Error::InsufficientCredits { required, available, limit_source }
}
