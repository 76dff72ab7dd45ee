//! The one error table of docs/reference.md: every failure has a stable code and an
//! HTTP status; the C and Python front doors derive theirs from here.

use crate::money::Credits;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure a caller can see. Messages say what was wrong and with
/// which value, and never contain a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `limit_source` says which limit was short: the account's available
    /// credits, the key's spend cap, the member's or the project's budget
    /// (then `available` is what that limit leaves).
    #[error("insufficient credits: {required} required, {available} available{}", limit_source.suffix())]
    InsufficientCredits { required: Credits, available: Credits, limit_source: LimitSource },
    #[error("invalid API key: {0}")]
    InvalidApiKey(String),
    /// `limit` is the setting's name, e.g. `max_active_keys_per_user`.
    #[error("limit reached: {limit} ({detail})")]
    LimitReached { limit: &'static str, detail: String },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("idempotency conflict: {0}")]
    IdempotencyConflict(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The outcome of a write is unknown; retrying with the same idempotency
    /// key is always safe.
    #[error("storage error: {0}")]
    Storage(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A key's `limit` (`requests_per_minute` or `tokens_per_minute`) is used
    /// up for the current minute; the next one starts in `retry_after_seconds`.
    #[error("rate limited: {limit} of this key is used up; retry after {retry_after_seconds} s")]
    RateLimited { limit: &'static str, retry_after_seconds: u32 },
}

/// Which limit an `InsufficientCredits` hit, as OpenRouter reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitSource {
    /// The account's available credits (balance − holds − floor).
    Account,
    /// The API key's spend cap in its current window.
    Key,
    /// The key owner's budget as a member of an organisation.
    Member,
    /// The budget of the organisation project the key belongs to.
    Project,
}

impl LimitSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitSource::Account => "account",
            LimitSource::Key => "key",
            LimitSource::Member => "member",
            LimitSource::Project => "project",
        }
    }

    /// What the error message adds: nothing for the account (the message
    /// every caller knows), the cap for a key.
    fn suffix(self) -> &'static str {
        match self {
            LimitSource::Account => "",
            LimitSource::Key => " under the API key's spend limit",
            LimitSource::Member => " under the member's budget",
            LimitSource::Project => " under the project's budget",
        }
    }
}

impl std::fmt::Display for LimitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Stable codes (docs/reference.md). The numeric values are the C status values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    InsufficientCredits = 1,
    InvalidApiKey = 2,
    LimitReached = 3,
    NotFound = 4,
    IdempotencyConflict = 5,
    InvalidArgument = 6,
    Storage = 7,
    Internal = 8,
    // 9 is the C status for a caught panic (CG_PANIC), which has no core code.
    RateLimited = 10,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::InsufficientCredits,
        ErrorCode::InvalidApiKey,
        ErrorCode::LimitReached,
        ErrorCode::NotFound,
        ErrorCode::IdempotencyConflict,
        ErrorCode::InvalidArgument,
        ErrorCode::Storage,
        ErrorCode::Internal,
        ErrorCode::RateLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InsufficientCredits => "insufficient_credits",
            ErrorCode::InvalidApiKey => "invalid_api_key",
            ErrorCode::LimitReached => "limit_reached",
            ErrorCode::NotFound => "not_found",
            ErrorCode::IdempotencyConflict => "idempotency_conflict",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::Storage => "storage",
            ErrorCode::Internal => "internal",
            ErrorCode::RateLimited => "rate_limited",
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InsufficientCredits => 402,
            ErrorCode::InvalidApiKey => 401,
            ErrorCode::LimitReached => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::IdempotencyConflict => 409,
            ErrorCode::InvalidArgument => 400,
            ErrorCode::Storage => 503,
            ErrorCode::Internal => 500,
            ErrorCode::RateLimited => 429,
        }
    }

    /// The position in `ALL`.
    pub(crate) fn index(self) -> usize {
        match self {
            ErrorCode::RateLimited => 8,
            other => other as usize - 1,
        }
    }
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InsufficientCredits { .. } => ErrorCode::InsufficientCredits,
            Error::InvalidApiKey(_) => ErrorCode::InvalidApiKey,
            Error::LimitReached { .. } => ErrorCode::LimitReached,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::IdempotencyConflict(_) => ErrorCode::IdempotencyConflict,
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::Storage(_) => ErrorCode::Storage,
            Error::Internal(_) => ErrorCode::Internal,
            Error::RateLimited { .. } => ErrorCode::RateLimited,
        }
    }

    pub fn http_status(&self) -> u16 {
        self.code().http_status()
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Error {
        Error::InvalidArgument(msg.into())
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Storage(format!("sqlite: {e}"))
    }
}
