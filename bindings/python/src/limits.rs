//! The limits and defaults of `creditgate::limits` as module constants of
//! `creditgate._creditgate` (typed in `_creditgate.pyi`, checked by
//! stubtest). The Python front doors (`creditgate.fastapi`, `.aio`, `.cli`,
//! `.litellm`) read their defaults from these instead of repeating numbers;
//! tests/python/test_limits.py compares every signature default with them.

use creditgate::limits::*;
use pyo3::prelude::*;

macro_rules! add_all {
    ($m:expr, $($name:ident),* $(,)?) => {
        $( $m.add(stringify!($name), $name)?; )*
    };
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    add_all!(
        m,
        DEFAULT_TTL_SECONDS,
        DEFAULT_PAGE_LIMIT,
        DEFAULT_EVENTS_LIMIT,
        DEFAULT_EXPIRE_LIMIT,
        DEFAULT_VERIFY_MIN_CREDITS,
        DEFAULT_GRANT_PRIORITY,
        DEFAULT_DATABASE_URL,
        DEFAULT_MIN_CREDITS_API_KEY,
        DEFAULT_CREDITS_PER_USD,
        DEFAULT_CREDITS_PER_1K_TOKENS,
        DEFAULT_API_KEY_PREFIX,
        DEFAULT_MAX_ACTIVE_KEYS_PER_USER,
        DEFAULT_MAX_ACTIVE_HOLDS_PER_USER,
        DEFAULT_BUSY_TIMEOUT_MS,
        DEFAULT_POOL_SIZE,
        MAX_CREDITS_PER_USD,
        MAX_KEYS_OR_HOLDS_LIMIT,
        MAX_POOL_SIZE,
        MAX_CURRENCY_EXPONENT,
        MAX_CURRENCIES,
        MAX_LOW_BALANCE_THRESHOLDS,
        MICROS_PER_CREDIT,
        MAX_AMOUNT_CREDITS,
        MAX_AMOUNT_MICROS,
        MAX_TEXT_BYTES,
        MAX_METADATA_BYTES,
        MAX_TOKENS_PER_CALL,
        MAX_PAGE_LIMIT,
        MAX_EVENTS_PER_PAGE,
        MAX_TTL_SECONDS,
        MAX_LISTED_KEYS,
        MAX_ROTATION_GRACE_SECONDS,
        MAX_KEY_EXPIRY_MICROS,
        MIN_KEY_LEN,
        MAX_KEY_LEN,
        MAX_PREFIX_LEN,
        MIN_GRANT_PRIORITY,
        MAX_GRANT_PRIORITY,
        MAX_GRANT_LIFETIME_MICROS,
        MAX_LISTED_GRANTS,
        MAX_EXPIRY_SWEEP,
        MAX_TOKENS_PER_MINUTE,
        MAX_ACCOUNT_OFFSET,
        MAX_OPERATOR_BYTES,
        MAX_MEMBERS_PER_ORG,
        MAX_PROJECTS_PER_ORG,
        MAX_ALLOWANCES_PER_ACCOUNT,
        MAX_SUMMARY_ROWS,
        MAX_TOTALS_DAYS,
        MAX_PRICE_VERSIONS,
        MAX_TOPUPS_PER_MONTH,
        MAX_LISTED_TOPUPS,
        MAX_WEBHOOKS,
        MAX_WEBHOOK_URL_LEN,
        MAX_WEBHOOK_ALLOWED_HOSTS,
        DEFAULT_WEBHOOK_TIMEOUT_MS,
        MAX_WEBHOOK_TIMEOUT_MS,
        DEFAULT_WEBHOOK_MAX_ATTEMPTS,
        MAX_WEBHOOK_MAX_ATTEMPTS,
        DEFAULT_WEBHOOK_BACKOFF_BASE_MS,
        DEFAULT_WEBHOOK_BACKOFF_MAX_MS,
        MAX_WEBHOOK_BACKOFF_MS,
        DEFAULT_WEBHOOK_BATCH_SIZE,
        MAX_WEBHOOK_BATCH_SIZE,
        DEFAULT_WEBHOOK_TOLERANCE_SECONDS,
    );
    // A tuple: the prefixes are fixed, not a list to append to.
    m.add("RESERVED_KEY_PREFIXES", pyo3::types::PyTuple::new(m.py(), RESERVED_KEY_PREFIXES)?)?;
    Ok(())
}
