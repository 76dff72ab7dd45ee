//! Settings, from the environment or a builder. Limits are named constants.

use crate::error::{Error, Result};
use crate::keys::Pepper;
use crate::money::Credits;
use crate::types::Timestamp;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

pub const DEFAULT_DATABASE_URL: &str = "sqlite:///creditgate.db";
pub const DEFAULT_MIN_CREDITS_API_KEY: i64 = 5000;
pub const DEFAULT_CREDITS_PER_USD: i64 = 1000;
pub const DEFAULT_CREDITS_PER_1K_TOKENS: i64 = 1;
pub const DEFAULT_API_KEY_PREFIX: &str = "sk_";
pub const DEFAULT_MAX_ACTIVE_KEYS_PER_USER: u32 = 25;
pub const DEFAULT_MAX_ACTIVE_HOLDS_PER_USER: u32 = 100;
pub const DEFAULT_BUSY_TIMEOUT_MS: u32 = 5_000;
pub const DEFAULT_POOL_SIZE: u32 = 8;
/// Upper bounds on settings, so a typo cannot configure an absurd ledger.
pub const MAX_CREDITS_PER_USD: i64 = 1_000_000;
pub const MAX_KEYS_OR_HOLDS_LIMIT: u32 = 100_000;
pub const MAX_POOL_SIZE: u32 = 256;

/// How SQLite syncs on commit. `Full` (default) is durable on return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Synchronous {
    Full,
    Normal,
}

#[derive(Clone)]
pub struct Config {
    pub(crate) database_url: String,
    pub(crate) min_credits_api_key: Credits,
    pub(crate) credits_per_usd: i64,
    pub(crate) credits_per_1k_tokens: Credits,
    pub(crate) api_key_prefix: String,
    pub(crate) api_key_pepper: Option<Pepper>,
    pub(crate) max_active_keys_per_user: u32,
    pub(crate) max_active_holds_per_user: u32,
    pub(crate) busy_timeout_ms: u32,
    pub(crate) pool_size: u32,
    pub(crate) synchronous: Synchronous,
    /// Balances (descending) whose downward crossing writes a `balance.low` event.
    pub(crate) low_balance_thresholds: Vec<Credits>,
    pub(crate) clock: TestClock,
}

/// A shift of the ledger's clock, for tests only: expiry of grants and holds
/// can then be tested without sleeping. Shared by clones, so a test can move
/// time forward while a manager is open. Not read from the environment and
/// not exposed in Python or C.
#[doc(hidden)]
#[derive(Clone, Debug, Default)]
pub struct TestClock(Arc<AtomicI64>);

impl TestClock {
    pub fn new() -> TestClock {
        TestClock::default()
    }

    /// Moves the ledger's clock `micros` forward (never backward).
    pub fn advance(&self, micros: i64) {
        assert!(micros >= 0, "the test clock only moves forward");
        self.0.fetch_add(micros, Ordering::SeqCst);
    }

    /// The current shift in microseconds.
    pub fn offset_micros(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    /// The ledger's time: the wall clock moved by the shift.
    pub(crate) fn now(&self) -> Timestamp {
        Timestamp(Timestamp::now().0.saturating_add(self.offset_micros()))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: DEFAULT_DATABASE_URL.to_string(),
            min_credits_api_key: Credits::from_micros(DEFAULT_MIN_CREDITS_API_KEY * 1_000_000),
            credits_per_usd: DEFAULT_CREDITS_PER_USD,
            credits_per_1k_tokens: Credits::from_micros(DEFAULT_CREDITS_PER_1K_TOKENS * 1_000_000),
            api_key_prefix: DEFAULT_API_KEY_PREFIX.to_string(),
            api_key_pepper: None,
            max_active_keys_per_user: DEFAULT_MAX_ACTIVE_KEYS_PER_USER,
            max_active_holds_per_user: DEFAULT_MAX_ACTIVE_HOLDS_PER_USER,
            busy_timeout_ms: DEFAULT_BUSY_TIMEOUT_MS,
            pool_size: DEFAULT_POOL_SIZE,
            synchronous: Synchronous::Full,
            clock: TestClock::default(),
            low_balance_thresholds: Vec::new(),
        }
    }
}

impl fmt::Debug for Config {
    /// Redacts the pepper and any database password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("min_credits_api_key", &self.min_credits_api_key)
            .field("credits_per_usd", &self.credits_per_usd)
            .field("credits_per_1k_tokens", &self.credits_per_1k_tokens)
            .field("api_key_prefix", &self.api_key_prefix)
            .field("api_key_pepper", &self.api_key_pepper.as_ref().map(|_| "<redacted>"))
            .field("max_active_keys_per_user", &self.max_active_keys_per_user)
            .field("max_active_holds_per_user", &self.max_active_holds_per_user)
            .field("busy_timeout_ms", &self.busy_timeout_ms)
            .field("pool_size", &self.pool_size)
            .field("synchronous", &self.synchronous)
            .field("low_balance_thresholds", &self.low_balance_thresholds)
            .finish()
    }
}

impl Config {
    pub fn new() -> Config {
        Config::default()
    }

    /// Reads `DATABASE_URL`, `MIN_CREDITS_API_KEY`, `CREDITS_PER_USD`,
    /// `CREDITS_PER_1K_TOKENS`, `API_KEY_PREFIX`, `API_KEY_PEPPER`,
    /// `MAX_ACTIVE_KEYS_PER_USER`, `MAX_ACTIVE_HOLDS_PER_USER`,
    /// `CREDITGATE_BUSY_TIMEOUT_MS`, `CREDITGATE_POOL_SIZE` and
    /// `CREDITGATE_SQLITE_SYNCHRONOUS` (`FULL` or `NORMAL`) and
    /// `CREDITGATE_LOW_BALANCE_THRESHOLDS` (comma-separated credits, e.g.
    /// `100,10,0`); unset means default.
    pub fn from_env() -> Result<Config> {
        let mut c = Config::default();
        if let Some(v) = env("DATABASE_URL")? {
            c = c.database_url(v);
        }
        if let Some(v) = env("MIN_CREDITS_API_KEY")? {
            c = c.min_credits_api_key(parse_credits("MIN_CREDITS_API_KEY", &v)?)?;
        }
        if let Some(v) = env("CREDITS_PER_USD")? {
            c = c.credits_per_usd(parse_int("CREDITS_PER_USD", &v)?)?;
        }
        if let Some(v) = env("CREDITS_PER_1K_TOKENS")? {
            c = c.credits_per_1k_tokens(parse_credits("CREDITS_PER_1K_TOKENS", &v)?)?;
        }
        if let Some(v) = env("API_KEY_PREFIX")? {
            c = c.api_key_prefix(v)?;
        }
        if let Some(v) = env("API_KEY_PEPPER")? {
            c = c.api_key_pepper(v)?;
        }
        if let Some(v) = env("MAX_ACTIVE_KEYS_PER_USER")? {
            c = c.max_active_keys_per_user(parse_int("MAX_ACTIVE_KEYS_PER_USER", &v)?)?;
        }
        if let Some(v) = env("MAX_ACTIVE_HOLDS_PER_USER")? {
            c = c.max_active_holds_per_user(parse_int("MAX_ACTIVE_HOLDS_PER_USER", &v)?)?;
        }
        if let Some(v) = env("CREDITGATE_BUSY_TIMEOUT_MS")? {
            c = c.busy_timeout_ms(parse_int("CREDITGATE_BUSY_TIMEOUT_MS", &v)?)?;
        }
        if let Some(v) = env("CREDITGATE_POOL_SIZE")? {
            c = c.pool_size(parse_int("CREDITGATE_POOL_SIZE", &v)?)?;
        }
        if let Some(v) = env("CREDITGATE_SQLITE_SYNCHRONOUS")? {
            c = c.synchronous(match v.to_ascii_uppercase().as_str() {
                "FULL" => Synchronous::Full,
                "NORMAL" => Synchronous::Normal,
                _ => {
                    return Err(Error::invalid(format!(
                        "CREDITGATE_SQLITE_SYNCHRONOUS must be FULL or NORMAL, got {v:?}"
                    )));
                }
            });
        }
        if let Some(v) = env("CREDITGATE_LOW_BALANCE_THRESHOLDS")? {
            let parsed = v
                .split(',')
                .map(|t| parse_credits("CREDITGATE_LOW_BALANCE_THRESHOLDS", t))
                .collect::<Result<Vec<Credits>>>()?;
            c = c.low_balance_thresholds(parsed)?;
        }
        Ok(c)
    }

    pub fn database_url(mut self, url: impl Into<String>) -> Config {
        self.database_url = url.into();
        self
    }

    pub fn min_credits_api_key(mut self, v: Credits) -> Result<Config> {
        self.min_credits_api_key = v.validate_threshold("min_credits_api_key")?;
        Ok(self)
    }

    pub fn credits_per_usd(mut self, v: i64) -> Result<Config> {
        if !(1..=MAX_CREDITS_PER_USD).contains(&v) {
            return Err(Error::invalid(format!("credits_per_usd must be in 1..={MAX_CREDITS_PER_USD}, got {v}")));
        }
        self.credits_per_usd = v;
        Ok(self)
    }

    pub fn credits_per_1k_tokens(mut self, v: Credits) -> Result<Config> {
        self.credits_per_1k_tokens = v.validate_threshold("credits_per_1k_tokens")?;
        Ok(self)
    }

    pub fn api_key_prefix(mut self, v: impl Into<String>) -> Result<Config> {
        let v = v.into();
        crate::keys::validate_prefix(&v)?;
        self.api_key_prefix = v;
        Ok(self)
    }

    pub fn api_key_pepper(mut self, v: impl Into<String>) -> Result<Config> {
        self.api_key_pepper = Some(Pepper::new(v.into())?);
        Ok(self)
    }

    pub fn max_active_keys_per_user(mut self, v: u32) -> Result<Config> {
        self.max_active_keys_per_user = check_limit("max_active_keys_per_user", v)?;
        Ok(self)
    }

    pub fn max_active_holds_per_user(mut self, v: u32) -> Result<Config> {
        self.max_active_holds_per_user = check_limit("max_active_holds_per_user", v)?;
        Ok(self)
    }

    pub fn busy_timeout_ms(mut self, v: u32) -> Result<Config> {
        if v > 600_000 {
            return Err(Error::invalid(format!("busy_timeout_ms must be at most 600000, got {v}")));
        }
        self.busy_timeout_ms = v;
        Ok(self)
    }

    pub fn pool_size(mut self, v: u32) -> Result<Config> {
        if !(1..=MAX_POOL_SIZE).contains(&v) {
            return Err(Error::invalid(format!("pool_size must be in 1..={MAX_POOL_SIZE}, got {v}")));
        }
        self.pool_size = v;
        Ok(self)
    }

    pub fn synchronous(mut self, v: Synchronous) -> Config {
        self.synchronous = v;
        self
    }

    /// Test-only: the ledger's clock is the real one shifted by `clock`.
    #[doc(hidden)]
    pub fn test_clock(mut self, clock: TestClock) -> Config {
        self.clock = clock;
        self
    }

    /// Balances whose downward crossing (from at or above to below) writes
    /// a `balance.low` outbox event; at most 16, each within the amount limit.
    /// Default: none.
    pub fn low_balance_thresholds(mut self, mut v: Vec<Credits>) -> Result<Config> {
        if v.len() > crate::events::MAX_LOW_BALANCE_THRESHOLDS {
            return Err(Error::invalid(format!(
                "low_balance_thresholds takes at most {} thresholds, got {}",
                crate::events::MAX_LOW_BALANCE_THRESHOLDS,
                v.len()
            )));
        }
        for t in &v {
            if t.micros().unsigned_abs() > crate::money::MAX_AMOUNT_MICROS as u64 {
                return Err(Error::invalid(format!("low balance threshold {t} is out of range")));
            }
        }
        v.sort_unstable_by(|a, b| b.cmp(a));
        v.dedup();
        self.low_balance_thresholds = v;
        Ok(self)
    }

    pub fn get_database_url(&self) -> &str {
        &self.database_url
    }
}

fn check_limit(name: &str, v: u32) -> Result<u32> {
    if !(1..=MAX_KEYS_OR_HOLDS_LIMIT).contains(&v) {
        return Err(Error::invalid(format!("{name} must be in 1..={MAX_KEYS_OR_HOLDS_LIMIT}, got {v}")));
    }
    Ok(v)
}

fn env(name: &str) -> Result<Option<String>> {
    match std::env::var(name) {
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::invalid(format!("{name} is not valid UTF-8"))),
    }
}

fn parse_credits(name: &str, v: &str) -> Result<Credits> {
    v.trim().parse().map_err(|_| Error::invalid(format!("{name} must be a decimal number of credits, got {v:?}")))
}

fn parse_int<T: std::str::FromStr>(name: &str, v: &str) -> Result<T> {
    v.trim().parse().map_err(|_| Error::invalid(format!("{name} must be an integer, got {v:?}")))
}

/// `scheme://user:secret@host/db?password=x` → `scheme://user:***@host/db?password=***`;
/// URLs without a password are unchanged.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            // The password ends at the last '@' of the authority; it may contain '/'.
            match rest.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                    None => base.to_string(),
                },
                None => base.to_string(),
            }
        }
        None => base.to_string(),
    };
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("sslpassword") => {
                    format!("{k}=***")
                }
                _ => kv.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("postgresql://u:hunter2@h:5432/db"), "postgresql://u:***@h:5432/db");
        assert_eq!(redact_url("sqlite:///x.db"), "sqlite:///x.db");
        assert_eq!(redact_url("postgresql://u:a/b@h/db"), "postgresql://u:***@h/db");
        assert_eq!(redact_url("postgresql://h/db?user=u&password=pw&x=1"), "postgresql://h/db?user=u&password=***&x=1");
        let long = "postgresql+psycopg2://creditgate_application:S3cr3tPassw0rdThatIsLongEnough@db.internal:5432/app";
        let err = Config::new().database_url(long);
        assert!(!format!("{:?}", crate::CreditManager::open(err).err()).contains("S3cr3t"));
        let c = Config::new().database_url("postgres://a:pw@h/d").api_key_pepper("pepper-secret-value").unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("pw@") && !dbg.contains("pepper-secret-value"), "{dbg}");
    }

    #[test]
    fn builder_rejects_out_of_range() {
        assert!(Config::new().credits_per_usd(0).is_err());
        assert!(Config::new().max_active_keys_per_user(0).is_err());
        assert!(Config::new().min_credits_api_key(Credits::from_micros(-1)).is_err());
        assert!(Config::new().min_credits_api_key(Credits::ZERO).is_ok());
        assert!(Config::new().api_key_prefix("").is_err());
    }
}
