//! Settings, from the environment or a builder. Defaults and bounds are in `limits.rs`.

use crate::error::{Error, Result};
use crate::keys::Pepper;
use crate::money::Credits;
use crate::types::Timestamp;
use crate::webhooks::{AllowList, WebhookKey};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::limits::{
    DEFAULT_API_KEY_PREFIX, DEFAULT_BUSY_TIMEOUT_MS, DEFAULT_CREDITS_PER_1K_TOKENS, DEFAULT_CREDITS_PER_USD,
    DEFAULT_DATABASE_URL, DEFAULT_MAX_ACTIVE_HOLDS_PER_USER, DEFAULT_MAX_ACTIVE_KEYS_PER_USER,
    DEFAULT_MIN_CREDITS_API_KEY, DEFAULT_POOL_SIZE, MAX_CREDITS_PER_USD, MAX_CURRENCIES, MAX_CURRENCY_EXPONENT,
    MAX_KEYS_OR_HOLDS_LIMIT, MAX_POOL_SIZE, MICROS_PER_CREDIT,
};

/// What one unit of a currency buys: `credits_per_unit` credits per major
/// unit (an exact decimal, e.g. `7.5`), with `exponent` minor units per
/// major unit as a power of ten (JPY 0, USD 2, KWD 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CurrencyRate {
    pub credits_per_unit: Credits,
    pub exponent: u8,
}

impl CurrencyRate {
    /// The credits `amount_minor` minor units buy: amount × rate / 10^exponent,
    /// rounded down to the micro-credit. `InvalidArgument` past the largest amount.
    pub fn credits_for(self, amount_minor: i64) -> Result<Credits> {
        let scale = 10i128.pow(u32::from(self.exponent));
        let micros = i128::from(amount_minor)
            .checked_mul(i128::from(self.credits_per_unit.micros()))
            .map(|v| v.div_euclid(scale))
            .filter(|v| *v <= i128::from(crate::limits::MAX_AMOUNT_MICROS))
            .ok_or_else(|| {
                Error::invalid(format!("payment of {amount_minor} minor units buys more than the largest amount"))
            })?;
        i64::try_from(micros).map(Credits::from_micros).map_err(|_| Error::invalid("payment amount is out of range"))
    }

    /// The other way: the minor units that buy at least `credits`, rounded
    /// up so the payment covers the amount (an auto top-up's price).
    pub(crate) fn minor_units_for(self, credits: Credits) -> Result<i64> {
        let scale = 10i128.pow(u32::from(self.exponent));
        let per_unit = i128::from(self.credits_per_unit.micros());
        if per_unit <= 0 {
            return Err(Error::Internal("a currency rate is not positive".into()));
        }
        let micros = i128::from(credits.micros()) * scale;
        let minor = micros / per_unit + i128::from(micros % per_unit != 0);
        i64::try_from(minor).map_err(|_| Error::invalid(format!("{credits} credits are out of range in minor units")))
    }
}

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
    /// Rates by upper-case ISO 4217 code; USD is always present (`credits_per_usd`).
    pub(crate) currency_rates: BTreeMap<String, CurrencyRate>,
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
    /// Test mode: audit each account a write moves (see `check_invariants`).
    pub(crate) check_invariants: bool,
    /// The key webhook secrets are encrypted under (None: webhooks that
    /// sign refuse to run).
    pub(crate) webhook_key: Option<WebhookKey>,
    /// Hosts, addresses and CIDRs a webhook may reach although private.
    pub(crate) webhook_allowed_hosts: AllowList,
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
            min_credits_api_key: Credits::from_micros(DEFAULT_MIN_CREDITS_API_KEY * MICROS_PER_CREDIT),
            currency_rates: BTreeMap::from([("USD".to_string(), usd_rate(DEFAULT_CREDITS_PER_USD))]),
            credits_per_1k_tokens: Credits::from_micros(DEFAULT_CREDITS_PER_1K_TOKENS * MICROS_PER_CREDIT),
            api_key_prefix: DEFAULT_API_KEY_PREFIX.to_string(),
            api_key_pepper: None,
            max_active_keys_per_user: DEFAULT_MAX_ACTIVE_KEYS_PER_USER,
            max_active_holds_per_user: DEFAULT_MAX_ACTIVE_HOLDS_PER_USER,
            busy_timeout_ms: DEFAULT_BUSY_TIMEOUT_MS,
            pool_size: DEFAULT_POOL_SIZE,
            synchronous: Synchronous::Full,
            clock: TestClock::default(),
            low_balance_thresholds: Vec::new(),
            check_invariants: false,
            webhook_key: None,
            webhook_allowed_hosts: AllowList::default(),
        }
    }
}

impl fmt::Debug for Config {
    /// Redacts the pepper and any database password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("min_credits_api_key", &self.min_credits_api_key)
            .field("currency_rates", &self.currency_rates)
            .field("credits_per_1k_tokens", &self.credits_per_1k_tokens)
            .field("api_key_prefix", &self.api_key_prefix)
            .field("api_key_pepper", &self.api_key_pepper.as_ref().map(|_| "<redacted>"))
            .field("max_active_keys_per_user", &self.max_active_keys_per_user)
            .field("max_active_holds_per_user", &self.max_active_holds_per_user)
            .field("busy_timeout_ms", &self.busy_timeout_ms)
            .field("pool_size", &self.pool_size)
            .field("synchronous", &self.synchronous)
            .field("low_balance_thresholds", &self.low_balance_thresholds)
            .field("webhook_key", &self.webhook_key.as_ref().map(|_| "<redacted>"))
            .field("webhook_allowed_hosts", &self.webhook_allowed_hosts)
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
    /// `100,10,0`) and `CREDITGATE_CURRENCY_RATES` (see
    /// [`currency_rates_from_str`](Self::currency_rates_from_str)) and
    /// `CREDITGATE_WEBHOOK_KEY` and `CREDITGATE_WEBHOOK_ALLOWED_HOSTS`
    /// (comma-separated); unset means default.
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
        if let Some(v) = env("CREDITGATE_CURRENCY_RATES")? {
            c = c.currency_rates_from_str(&v)?;
        }
        if let Some(v) = env("CREDITGATE_WEBHOOK_KEY")? {
            c = c.webhook_key(&v)?;
        }
        if let Some(v) = env("CREDITGATE_WEBHOOK_ALLOWED_HOSTS")? {
            c = c.webhook_allowed_hosts(v.split(',').map(str::to_string).collect())?;
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
        self.currency_rates.insert("USD".to_string(), usd_rate(v));
        Ok(self)
    }

    /// Lets `record_payment` take `currency`: `credits_per_unit` credits per
    /// major unit, an exact decimal string with at most 6 decimals (`"1100"`,
    /// `"7.5"`, `"0.0065"`), in (0, 1,000,000]; `exponent` is the currency's
    /// minor-unit exponent (0..=4: JPY 0, USD 2, KWD 3). USD's exponent is 2,
    /// and its rate replaces `credits_per_usd`.
    pub fn currency_rate(mut self, currency: &str, credits_per_unit: &str, exponent: u8) -> Result<Config> {
        let code = currency_code(currency)?;
        let rate = parse_rate(&code, credits_per_unit)?;
        if exponent > MAX_CURRENCY_EXPONENT || (code == "USD" && exponent != 2) {
            return Err(Error::invalid(format!(
                "{code}: the minor-unit exponent must be in 0..={MAX_CURRENCY_EXPONENT} (USD: 2), got {exponent}"
            )));
        }
        if !self.currency_rates.contains_key(&code) && self.currency_rates.len() >= MAX_CURRENCIES {
            return Err(Error::invalid(format!("at most {MAX_CURRENCIES} currencies may be configured")));
        }
        self.currency_rates.insert(code, CurrencyRate { credits_per_unit: rate, exponent });
        Ok(self)
    }

    /// Rates in the `CREDITGATE_CURRENCY_RATES` form: comma-separated
    /// `CODE=CREDITS_PER_UNIT:EXPONENT`, e.g. `EUR=1100:2,JPY=7.5:0`.
    pub fn currency_rates_from_str(mut self, spec: &str) -> Result<Config> {
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let bad = || {
                Error::invalid(format!(
                    "CREDITGATE_CURRENCY_RATES items are CODE=CREDITS_PER_UNIT:EXPONENT (e.g. EUR=1100:2), got {:?}",
                    crate::types::truncate(item)
                ))
            };
            let (code, rest) = item.split_once('=').ok_or_else(bad)?;
            let (rate, exponent) = rest.split_once(':').ok_or_else(bad)?;
            let exponent: u8 = exponent.trim().parse().map_err(|_| bad())?;
            self = self.currency_rate(code.trim(), rate.trim(), exponent)?;
        }
        Ok(self)
    }

    /// The rate of `currency` (any case), if configured.
    pub fn rate_of(&self, currency: &str) -> Option<(&str, CurrencyRate)> {
        let code = currency.to_ascii_uppercase();
        self.currency_rates.get_key_value(code.as_str()).map(|(k, r)| (k.as_str(), *r))
    }

    /// Every configured currency and its rate (USD included).
    pub fn currency_rates(&self) -> &BTreeMap<String, CurrencyRate> {
        &self.currency_rates
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
        if v.len() > crate::limits::MAX_LOW_BALANCE_THRESHOLDS {
            return Err(Error::invalid(format!(
                "low_balance_thresholds takes at most {} thresholds, got {}",
                crate::limits::MAX_LOW_BALANCE_THRESHOLDS,
                v.len()
            )));
        }
        for t in &v {
            if t.micros().unsigned_abs() > crate::limits::MAX_AMOUNT_MICROS as u64 {
                return Err(Error::invalid(format!("low balance threshold {t} is out of range")));
            }
        }
        v.sort_unstable_by(|a, b| b.cmp(a));
        v.dedup();
        self.low_balance_thresholds = v;
        Ok(self)
    }

    /// The key webhook signing secrets are encrypted under at rest
    /// (AES-256-GCM): 32 bytes as 64 hex digits (`CREDITGATE_WEBHOOK_KEY`;
    /// e.g. `openssl rand -hex 32`). Without it, creating, rotating and
    /// delivering webhooks fail with `InvalidArgument` (fail closed). Keep
    /// it: a ledger's secrets do not decrypt under another key.
    pub fn webhook_key(mut self, hex_key: &str) -> Result<Config> {
        self.webhook_key = Some(WebhookKey::from_hex(hex_key)?);
        Ok(self)
    }

    /// Host names, IP addresses and CIDRs (`localhost`, `127.0.0.1`,
    /// `10.0.0.0/8`) webhooks may reach although they are loopback, private
    /// or otherwise reserved (`CREDITGATE_WEBHOOK_ALLOWED_HOSTS`,
    /// comma-separated). Default: none; public addresses need no listing.
    pub fn webhook_allowed_hosts(mut self, hosts: Vec<String>) -> Result<Config> {
        self.webhook_allowed_hosts = AllowList::parse(&hosts)?;
        Ok(self)
    }

    /// Whether a webhook key is configured.
    pub fn has_webhook_key(&self) -> bool {
        self.webhook_key.is_some()
    }

    pub fn get_database_url(&self) -> &str {
        &self.database_url
    }

    /// Test mode, off by default: after every balance move, the write also
    /// audits the account it moved (its entries' chain, its grants, its
    /// payments) and fails with `Internal`, rolling back, on any mismatch.
    /// Costly (the audit's ledger-wide scans, inside every write): for tests
    /// and checking runs on test-sized ledgers. `CREDITGATE_CHECK_INVARIANTS=1`
    /// in the environment turns it on for every manager opened.
    #[doc(hidden)]
    pub fn check_invariants(mut self, on: bool) -> Config {
        self.check_invariants = on;
        self
    }
}

fn usd_rate(credits_per_usd: i64) -> CurrencyRate {
    CurrencyRate { credits_per_unit: Credits::from_micros(credits_per_usd * 1_000_000), exponent: 2 }
}

/// Three ASCII letters, upper-cased.
fn currency_code(c: &str) -> Result<String> {
    if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(Error::invalid(format!(
            "a currency is a 3-letter ISO 4217 code, got {:?}",
            crate::types::truncate(c)
        )));
    }
    Ok(c.to_ascii_uppercase())
}

/// An exact decimal in (0, MAX_CREDITS_PER_USD] with at most 6 decimals.
fn parse_rate(code: &str, v: &str) -> Result<Credits> {
    let rate: Credits = v.trim().parse().map_err(|_| {
        Error::invalid(format!(
            "{code}: credits per unit must be a decimal string with at most 6 decimals, got {:?}",
            crate::types::truncate(v)
        ))
    })?;
    if rate <= Credits::ZERO || rate.micros() > MAX_CREDITS_PER_USD * 1_000_000 {
        return Err(Error::invalid(format!(
            "{code}: credits per unit must be in (0, {MAX_CREDITS_PER_USD}], got {rate}"
        )));
    }
    Ok(rate)
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

    #[test]
    fn currency_rates_parse_exactly() {
        let c = Config::new().currency_rates_from_str("eur=1100:2, JPY=7.5:0,KWD=0.0065:3").unwrap();
        let (code, eur) = c.rate_of("Eur").unwrap();
        assert_eq!((code, eur.exponent), ("EUR", 2));
        assert_eq!(eur.credits_for(1999).unwrap(), "21989".parse().unwrap());
        assert_eq!(c.rate_of("JPY").unwrap().1.credits_for(3).unwrap(), "22.5".parse().unwrap());
        // 1 fils (0.001 KWD) at 0.0065 credits per dinar: 0.0000065 → 0.000006 (down).
        assert_eq!(c.rate_of("KWD").unwrap().1.credits_for(1).unwrap(), Credits::from_micros(6));
        assert_eq!(c.rate_of("USD").unwrap().1.credits_for(500).unwrap(), Credits::from_credits(5000).unwrap());
        for bad in ["EUR=1100", "EUR=1.5e3:2", "EUR=0:2", "EURO=1:2", "EUR=1:5", "USD=1000:0", "EUR=0.0000001:2"] {
            assert!(Config::new().currency_rates_from_str(bad).is_err(), "{bad}");
        }
        assert!(c.rate_of("GBP").is_none());
        let over = Config::new().currency_rate("JPY", "1000000", 0).unwrap();
        assert!(over.rate_of("JPY").unwrap().1.credits_for(i64::MAX).is_err());
    }
}
