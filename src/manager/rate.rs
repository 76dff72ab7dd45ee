//! Rate limits: per-key requests and tokens per UTC minute, counted in the
//! database, with request leases so a verify rarely writes.

use super::CreditManager;
use crate::error::{Error, Result};
use crate::limits::MAX_TOKENS_PER_MINUTE;
use crate::store::{RateCheck, RateCounts};
use crate::types::*;
use std::sync::atomic::Ordering;

/// Requests of one key counted in the database for the minute starting at
/// `window` under the limit `requests_per_minute`, `left` of them unused.
#[derive(Clone, Copy)]
pub(super) struct RequestLease {
    pub(super) window: i64,
    pub(super) requests_per_minute: i64,
    pub(super) left: i64,
}

impl RequestLease {
    /// Whether the leased requests may be used now: same minute, and the
    /// limit verify read is the one they were counted under (a minute's
    /// counts are never reset, see `store::sql::RATE_ROW_HAS_LIMITS`).
    fn holds_for(&self, rate: &RateCounts, window: i64) -> bool {
        self.window == window && rate.requests_per_minute == Some(self.requests_per_minute)
    }
}

/// The most requests a process counts ahead of use per key.
const MAX_REQUEST_LEASE: i64 = 256;

/// Keys with leased requests kept per process; past it, the leases are
/// dropped (their requests stay counted: only this process loses them).
const MAX_REQUEST_LEASES: usize = 4_096;

/// How long a process trusts its last reading of "does any key have rate
/// limits": a limit set by another process applies here within this time.
const RATE_LIMITS_RECHECK_MICROS: i64 = 1_000_000;

/// Rate-limit windows are whole UTC minutes.
const RATE_WINDOW_MICROS: i64 = 60_000_000;

impl CreditManager {
    /// Sets a key's rate limits, counted per UTC minute in the database (so
    /// shared by every process and host): at most `requests_per_minute`
    /// verified requests (`verify_api_key_credits`, `reserve`) and, once
    /// `tokens_per_minute` tokens were charged in a minute, no more requests
    /// that minute. None lifts that limit; both None lift all. Over a limit:
    /// `RateLimited` (429) with the seconds until the next minute.
    pub fn set_rate_limit(
        &self,
        key_id: KeyId,
        requests_per_minute: Option<u32>,
        tokens_per_minute: Option<u64>,
    ) -> Result<()> {
        let r = (|| {
            if requests_per_minute == Some(0) || tokens_per_minute == Some(0) {
                return Err(Error::invalid("rate limits must be at least 1 (None lifts a limit)"));
            }
            if let Some(t) = tokens_per_minute.filter(|&t| t > MAX_TOKENS_PER_MINUTE) {
                return Err(Error::invalid(format!(
                    "tokens_per_minute must be at most {MAX_TOKENS_PER_MINUTE}, got {t}"
                )));
            }
            let rpm = requests_per_minute.map(i64::from);
            let tpm = tokens_per_minute.map(|t| t as i64); // ≤ MAX_TOKENS_PER_MINUTE
            self.write(|tx| {
                if tx.key_by_id(key_id)?.is_none() {
                    return Err(Error::NotFound(format!("no API key {key_id}")));
                }
                tx.set_rate_limit(key_id, rpm, tpm)
            })?;
            if rpm.is_some() || tpm.is_some() {
                self.inner.rate_limits_on.store(true, Ordering::Relaxed);
            }
            Ok(())
        })();
        self.track(r)
    }

    /// Whether rate limits must be counted: any key of the ledger has them.
    /// Read at most once a second per process, so keys without limits cost
    /// nothing on the hot path.
    pub(super) fn rate_limits_apply(&self) -> Result<bool> {
        let now = Timestamp::now().0;
        let read_at = self.inner.rate_limits_read_at.load(Ordering::Relaxed);
        if read_at != 0 && (0..RATE_LIMITS_RECHECK_MICROS).contains(&(now - read_at)) {
            return Ok(self.inner.rate_limits_on.load(Ordering::Relaxed));
        }
        let on = self.read(|tx| tx.has_rate_limits())?;
        self.inner.rate_limits_on.store(on, Ordering::Relaxed);
        self.inner.rate_limits_read_at.store(now, Ordering::Relaxed);
        Ok(on)
    }

    /// Counts a verified request against the key's rate limits, `rate` as
    /// verify read them (fresh, see `Store::key_with_available`).
    ///
    /// Where the ledger's clock is this machine's (SQLite), a process takes
    /// requests from the database in blocks (a lease of up to 1/16 of the
    /// limit, at most [`MAX_REQUEST_LEASE`], for the current minute) and
    /// counts them down in memory, so a verify rarely writes. Never more than
    /// the limit pass: every leased request is counted in the database when
    /// leased. Near the limit a process may be refused while another holds
    /// leased requests it has not used yet. The tokens limit is checked on
    /// verify's fresh counts at every request.
    pub(super) fn take_request(&self, key: KeyId, rate: RateCounts) -> Result<()> {
        let Some(now) = self.inner.store.local_now() else {
            return self.take_requests(key, 1).map(|_| ());
        };
        let window = rate_window(now);
        if rate.tokens_used_up(window) {
            return counted_request(RateCheck::Limited("tokens_per_minute"), now);
        }
        let Some(rpm) = rate.requests_per_minute else { return Ok(()) };
        {
            let mut leases = self.inner.request_leases.lock();
            if let Some(l) = leases.get_mut(&key)
                && l.left > 0
                && l.holds_for(&rate, window)
            {
                l.left -= 1;
                return Ok(());
            }
        }
        let block = (rpm / 16).clamp(1, MAX_REQUEST_LEASE);
        let (window, taken) = self.take_requests(key, block)?;
        if taken > 1 {
            let mut leases = self.inner.request_leases.lock();
            if leases.len() >= MAX_REQUEST_LEASES {
                leases.clear();
            }
            let fresh = RequestLease { window, requests_per_minute: rpm, left: 0 };
            let lease = leases.entry(key).or_insert(fresh);
            if !(lease.window == window && lease.requests_per_minute == rpm) {
                *lease = fresh;
            }
            // Another thread may have leased a block meanwhile: keep both.
            lease.left += taken - 1;
        }
        Ok(())
    }

    /// Counts `block` requests of `key` in the current minute, or one when
    /// the block does not fit under the limit: (the minute, how many were
    /// counted). `RateLimited` when not even one fits.
    fn take_requests(&self, key: KeyId, block: i64) -> Result<(i64, i64)> {
        self.write(|tx| {
            let now = tx.now()?;
            let window = rate_window(now);
            if block > 1 && tx.take_requests(key, window, block)? == RateCheck::Allowed {
                return Ok((window, block));
            }
            counted_request(tx.take_requests(key, window, 1)?, now)?;
            Ok((window, 1))
        })
    }
}

/// The start of the rate-limit window (UTC minute) holding `t`.
pub(super) fn rate_window(t: Timestamp) -> i64 {
    t.0 - t.0.rem_euclid(RATE_WINDOW_MICROS)
}

/// `RateLimited` when the request was not counted, with the whole seconds
/// (1..=60) until the next window.
pub(super) fn counted_request(check: RateCheck, now: Timestamp) -> Result<()> {
    match check {
        RateCheck::Limited(limit) => {
            let left = RATE_WINDOW_MICROS - now.0.rem_euclid(RATE_WINDOW_MICROS);
            let retry_after_seconds = u32::try_from((left + 999_999) / 1_000_000).unwrap_or(60).clamp(1, 60);
            Err(Error::RateLimited { limit, retry_after_seconds })
        }
        RateCheck::Allowed | RateCheck::Unlimited => Ok(()),
    }
}
