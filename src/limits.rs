//! Every limit and default a front door exposes, in one place
//! (docs/reference.md, "Limits" and "Environment variables").
//!
//! The core checks the limits; the front doors read the defaults from here
//! instead of repeating them: the Python module exports each name
//! (`creditgate._creditgate.DEFAULT_TTL_SECONDS`, ...; its stub and every
//! signature default are compared with these by tests/python/test_limits.py),
//! and the C header's `CG_*` constants are asserted equal to them at compile
//! time (bindings/c/src/lib.rs). Tuning knobs no caller sees (batch sizes,
//! cache sizes, lease counts) stay next to the code they tune.

// ----- defaults a front door applies when an argument is not given ----------

/// Seconds a hold lives when `reserve` is not given `ttl_seconds`.
pub const DEFAULT_TTL_SECONDS: i64 = 600;
/// Entries one `transactions` call returns when not given a limit.
pub const DEFAULT_PAGE_LIMIT: u32 = 50;
/// Events one `events` call returns when not given a limit.
pub const DEFAULT_EVENTS_LIMIT: u32 = 100;
/// Accounts one `expire_grants` call sweeps when not given a limit.
pub const DEFAULT_EXPIRE_LIMIT: u32 = 1000;
/// Credits `verify_api_key_credits` requires when not given `min_credits`.
pub const DEFAULT_VERIFY_MIN_CREDITS: i64 = 1;
/// A grant's draw-down priority when not given one.
pub const DEFAULT_GRANT_PRIORITY: i32 = 0;

// ----- settings (`Config`) defaults: the environment's variables unset ------

pub const DEFAULT_DATABASE_URL: &str = "sqlite:///creditgate.db";
/// Available credits a user's first key needs (`MIN_CREDITS_API_KEY`).
pub const DEFAULT_MIN_CREDITS_API_KEY: i64 = 5000;
pub const DEFAULT_CREDITS_PER_USD: i64 = 1000;
pub const DEFAULT_CREDITS_PER_1K_TOKENS: i64 = 1;
pub const DEFAULT_API_KEY_PREFIX: &str = "sk_";
pub const DEFAULT_MAX_ACTIVE_KEYS_PER_USER: u32 = 25;
pub const DEFAULT_MAX_ACTIVE_HOLDS_PER_USER: u32 = 100;
pub const DEFAULT_BUSY_TIMEOUT_MS: u32 = 5_000;
pub const DEFAULT_POOL_SIZE: u32 = 8;

// ----- bounds on settings, so a typo cannot configure an absurd ledger -------

pub const MAX_CREDITS_PER_USD: i64 = 1_000_000;
pub const MAX_KEYS_OR_HOLDS_LIMIT: u32 = 100_000;
pub const MAX_POOL_SIZE: u32 = 256;
/// The largest minor-unit exponent of a currency (ISO 4217 uses 0 to 4).
pub const MAX_CURRENCY_EXPONENT: u8 = 4;
/// The most currencies one ledger may configure.
pub const MAX_CURRENCIES: usize = 64;
/// The most low-balance thresholds a ledger may configure.
pub const MAX_LOW_BALANCE_THRESHOLDS: usize = 16;

// ----- amounts ----------------------------------------------------------------

pub const MICROS_PER_CREDIT: i64 = 1_000_000;
/// Largest size of any single amount: 10^12 credits (docs/reference.md).
pub const MAX_AMOUNT_CREDITS: i64 = 1_000_000_000_000;
pub const MAX_AMOUNT_MICROS: i64 = MAX_AMOUNT_CREDITS * MICROS_PER_CREDIT;

// ----- arguments of operations -------------------------------------------------

/// User ids, names, ids, references, idempotency keys, models, currencies.
pub const MAX_TEXT_BYTES: usize = 255;
/// An entry's metadata as JSON.
pub const MAX_METADATA_BYTES: usize = 4096;
pub const MAX_TOKENS_PER_CALL: i64 = 1_000_000_000;
/// `transactions(limit=…)`.
pub const MAX_PAGE_LIMIT: u32 = 1_000;
/// `events(limit=…)`.
pub const MAX_EVENTS_PER_PAGE: u32 = 1000;
/// A hold's `ttl_seconds` (at least 1).
pub const MAX_TTL_SECONDS: i64 = 86_400;
/// Keys `list_api_keys` returns.
pub const MAX_LISTED_KEYS: u32 = 1_000;
/// Longest grace period of `rotate_api_key`: 30 days.
pub const MAX_ROTATION_GRACE_SECONDS: i64 = 30 * 86_400;
/// Latest key expiry accepted: 9999-12-31T23:59:59.999999Z.
pub const MAX_KEY_EXPIRY_MICROS: i64 = 253_402_300_799_999_999;
/// Prefixes the library uses for its own idempotency keys.
pub const RESERVED_KEY_PREFIXES: [&str; 6] =
    ["payment:", "reversal:", "reinstatement:", "usage:", "import:", "allowance:"];
/// The shortest and longest API key looked up; others are `InvalidApiKey`
/// without a lookup.
pub const MIN_KEY_LEN: usize = 8;
pub const MAX_KEY_LEN: usize = 512;
/// `API_KEY_PREFIX`, characters of `[A-Za-z0-9_-]`.
pub const MAX_PREFIX_LEN: usize = 32;
/// Grant priorities: lower is drawn first (within a category).
pub const MIN_GRANT_PRIORITY: i32 = -1000;
pub const MAX_GRANT_PRIORITY: i32 = 1000;
/// The furthest a grant's `expires_at` may lie: 100 years ahead.
pub const MAX_GRANT_LIFETIME_MICROS: i64 = 100 * 366 * 86_400 * 1_000_000;
/// Most grants `account()` lists (the first ones in draw-down order).
pub const MAX_LISTED_GRANTS: u32 = 1_000;
/// Most accounts one `expire_grants` call sweeps.
pub const MAX_EXPIRY_SWEEP: u32 = 10_000;
/// Most members one organisation may have.
pub const MAX_MEMBERS_PER_ORG: u32 = 10_000;
/// Most projects one organisation may have.
pub const MAX_PROJECTS_PER_ORG: u32 = 1_000;
/// Most allowances (not removed) one account may have.
pub const MAX_ALLOWANCES_PER_ACCOUNT: u32 = 100;
/// The most rows one usage summary or statement returns.
pub const MAX_SUMMARY_ROWS: u32 = 100_000;
/// The most UTC days one `daily_totals` call covers.
pub const MAX_TOTALS_DAYS: u32 = 400;
/// The most versions one model's price keeps.
pub const MAX_PRICE_VERSIONS: u32 = 1_000;
/// Most top-ups one auto top-up rule may request per calendar month.
pub const MAX_TOPUPS_PER_MONTH: u32 = 100;
/// Most top-ups `topups()` lists.
pub const MAX_LISTED_TOPUPS: u32 = 1_000;
/// The largest tokens-per-minute limit of a key.
pub const MAX_TOKENS_PER_MINUTE: u64 = 1_000_000_000_000;

// ----- operator reads (the dashboard) ------------------------------------------

/// The furthest `list_accounts` pages in (`offset`): deeper pages cost a
/// scan of every account before them.
pub const MAX_ACCOUNT_OFFSET: u32 = 1_000_000;
/// Longest operator name of `acting_as`.
pub const MAX_OPERATOR_BYTES: usize = 64;

// ----- webhooks ----------------------------------------------------------------

/// Most webhook subscriptions (`callback:` consumers included) per ledger.
pub const MAX_WEBHOOKS: u32 = 100;
/// Longest endpoint URL of a subscription.
pub const MAX_WEBHOOK_URL_LEN: usize = 2048;
/// Most entries of `webhook_allowed_hosts`.
pub const MAX_WEBHOOK_ALLOWED_HOSTS: usize = 256;
/// A delivery's request timeout (connect and the whole request) when not
/// given one, and the largest accepted.
pub const DEFAULT_WEBHOOK_TIMEOUT_MS: u32 = 10_000;
/// The largest request timeout of a delivery.
pub const MAX_WEBHOOK_TIMEOUT_MS: u32 = 60_000;
/// Attempts of one event before it is dead-lettered, when not given (1..=50).
pub const DEFAULT_WEBHOOK_MAX_ATTEMPTS: u32 = 12;
/// The most attempts of one event `max_attempts` may set.
pub const MAX_WEBHOOK_MAX_ATTEMPTS: u32 = 50;
/// The first retry's delay and the longest delay, when not given: with 12
/// attempts the retries wait about 10 s, 20 s, 40 s, … 1 h (≈ 3.5 h in all).
pub const DEFAULT_WEBHOOK_BACKOFF_BASE_MS: u64 = 10_000;
/// The longest retry delay, when not given.
pub const DEFAULT_WEBHOOK_BACKOFF_MAX_MS: u64 = 3_600_000;
/// The longest backoff delay accepted: one day.
pub const MAX_WEBHOOK_BACKOFF_MS: u64 = 86_400_000;
/// Events one subscription's turn reads at once, when not given (1..=1000).
pub const DEFAULT_WEBHOOK_BATCH_SIZE: u32 = 100;
/// The most events one subscription's turn may read at once.
pub const MAX_WEBHOOK_BATCH_SIZE: u32 = 1_000;
/// How far a `webhook-timestamp` may be from the receiver's clock, when
/// `verify_webhook`'s caller gives no tolerance (the front doors' default).
pub const DEFAULT_WEBHOOK_TOLERANCE_SECONDS: u32 = 300;

// Each default lies within its limit.
const _: () = {
    assert!(DEFAULT_TTL_SECONDS >= 1 && DEFAULT_TTL_SECONDS <= MAX_TTL_SECONDS);
    assert!(DEFAULT_PAGE_LIMIT >= 1 && DEFAULT_PAGE_LIMIT <= MAX_PAGE_LIMIT);
    assert!(DEFAULT_EVENTS_LIMIT >= 1 && DEFAULT_EVENTS_LIMIT <= MAX_EVENTS_PER_PAGE);
    assert!(DEFAULT_EXPIRE_LIMIT >= 1 && DEFAULT_EXPIRE_LIMIT <= MAX_EXPIRY_SWEEP);
    assert!(DEFAULT_GRANT_PRIORITY >= MIN_GRANT_PRIORITY && DEFAULT_GRANT_PRIORITY <= MAX_GRANT_PRIORITY);
    assert!(DEFAULT_CREDITS_PER_USD >= 1 && DEFAULT_CREDITS_PER_USD <= MAX_CREDITS_PER_USD);
    assert!(DEFAULT_MAX_ACTIVE_KEYS_PER_USER >= 1 && DEFAULT_MAX_ACTIVE_KEYS_PER_USER <= MAX_KEYS_OR_HOLDS_LIMIT);
    assert!(DEFAULT_MAX_ACTIVE_HOLDS_PER_USER >= 1 && DEFAULT_MAX_ACTIVE_HOLDS_PER_USER <= MAX_KEYS_OR_HOLDS_LIMIT);
    assert!(DEFAULT_POOL_SIZE >= 1 && DEFAULT_POOL_SIZE <= MAX_POOL_SIZE);
    assert!(DEFAULT_API_KEY_PREFIX.len() <= MAX_PREFIX_LEN);
    assert!(DEFAULT_WEBHOOK_TIMEOUT_MS >= 1 && DEFAULT_WEBHOOK_TIMEOUT_MS <= MAX_WEBHOOK_TIMEOUT_MS);
    assert!(DEFAULT_WEBHOOK_MAX_ATTEMPTS >= 1 && DEFAULT_WEBHOOK_MAX_ATTEMPTS <= MAX_WEBHOOK_MAX_ATTEMPTS);
    assert!(DEFAULT_WEBHOOK_BACKOFF_BASE_MS >= 1 && DEFAULT_WEBHOOK_BACKOFF_BASE_MS <= DEFAULT_WEBHOOK_BACKOFF_MAX_MS);
    assert!(DEFAULT_WEBHOOK_BACKOFF_MAX_MS <= MAX_WEBHOOK_BACKOFF_MS);
    assert!(DEFAULT_WEBHOOK_BATCH_SIZE >= 1 && DEFAULT_WEBHOOK_BATCH_SIZE <= MAX_WEBHOOK_BATCH_SIZE);
};
