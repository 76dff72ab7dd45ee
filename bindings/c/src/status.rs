//! `cg_status`: the C face of `creditgate::ErrorCode` (docs/reference.md). The numbers
//! are part of the ABI and never change.

use creditgate_core::{Error, ErrorCode};
use std::ffi::{CStr, c_char};

/// The result of every fallible function. `CG_OK` (0) is success; any other
/// value is a failure whose message `cg_last_error()` returns. The values
/// are fixed by docs/reference.md and never change.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum cg_status {
    /// Success.
    CG_OK = 0,
    /// HTTP 402: available credits are below what the operation needs.
    CG_INSUFFICIENT_CREDITS = 1,
    /// HTTP 401: the API key is malformed, unknown or revoked.
    CG_INVALID_API_KEY = 2,
    /// HTTP 403: a per-user limit (active keys, active holds) is reached.
    CG_LIMIT_REACHED = 3,
    /// HTTP 404: the payment, hold, key or entry does not exist.
    CG_NOT_FOUND = 4,
    /// HTTP 409: an idempotency key was used before with other parameters.
    CG_IDEMPOTENCY_CONFLICT = 5,
    /// HTTP 400: a NULL pointer, invalid UTF-8 or an out-of-range value.
    CG_INVALID_ARGUMENT = 6,
    /// HTTP 503: the database failed; the outcome of a write is unknown, so
    /// retry it with the same idempotency key.
    CG_STORAGE_ERROR = 7,
    /// HTTP 500: a bug in creditgate.
    CG_INTERNAL = 8,
    /// HTTP 500: creditgate panicked; the panic was caught at the boundary.
    CG_PANIC = 9,
    /// HTTP 429: a per-key rate limit is used up for the current minute;
    /// `cg_last_error_retry_after()` gives the seconds until the next one.
    CG_RATE_LIMITED = 10,
}

impl From<ErrorCode> for cg_status {
    /// Exhaustive on purpose: a new core code must get a C status here.
    fn from(code: ErrorCode) -> cg_status {
        match code {
            ErrorCode::InsufficientCredits => cg_status::CG_INSUFFICIENT_CREDITS,
            ErrorCode::InvalidApiKey => cg_status::CG_INVALID_API_KEY,
            ErrorCode::LimitReached => cg_status::CG_LIMIT_REACHED,
            ErrorCode::NotFound => cg_status::CG_NOT_FOUND,
            ErrorCode::IdempotencyConflict => cg_status::CG_IDEMPOTENCY_CONFLICT,
            ErrorCode::InvalidArgument => cg_status::CG_INVALID_ARGUMENT,
            ErrorCode::Storage => cg_status::CG_STORAGE_ERROR,
            ErrorCode::Internal => cg_status::CG_INTERNAL,
            ErrorCode::RateLimited => cg_status::CG_RATE_LIMITED,
        }
    }
}

impl From<&Error> for cg_status {
    fn from(e: &Error) -> cg_status {
        e.code().into()
    }
}

impl cg_status {
    /// Every status, in numeric order.
    pub(crate) const ALL: [cg_status; 11] = [
        cg_status::CG_OK,
        cg_status::CG_INSUFFICIENT_CREDITS,
        cg_status::CG_INVALID_API_KEY,
        cg_status::CG_LIMIT_REACHED,
        cg_status::CG_NOT_FOUND,
        cg_status::CG_IDEMPOTENCY_CONFLICT,
        cg_status::CG_INVALID_ARGUMENT,
        cg_status::CG_STORAGE_ERROR,
        cg_status::CG_INTERNAL,
        cg_status::CG_PANIC,
        cg_status::CG_RATE_LIMITED,
    ];

    /// The status with this number, if any. C may pass any `uint32_t`.
    pub fn from_u32(v: u32) -> Option<cg_status> {
        cg_status::ALL.get(usize::try_from(v).ok()?).copied()
    }

    /// The core's code, or `None` for `CG_OK` and `CG_PANIC`.
    fn code(self) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|&c| cg_status::from(c) == self)
    }

    pub fn http_status(self) -> u16 {
        match self {
            cg_status::CG_OK => 200,
            cg_status::CG_PANIC => 500,
            other => other.code().map_or(500, ErrorCode::http_status),
        }
    }

    /// The error code (docs/reference.md) (`insufficient_credits`, ...), `ok` or `panic`, as a
    /// static NUL-terminated string.
    pub fn name(self) -> &'static CStr {
        match self {
            cg_status::CG_OK => c"ok",
            cg_status::CG_INSUFFICIENT_CREDITS => c"insufficient_credits",
            cg_status::CG_INVALID_API_KEY => c"invalid_api_key",
            cg_status::CG_LIMIT_REACHED => c"limit_reached",
            cg_status::CG_NOT_FOUND => c"not_found",
            cg_status::CG_IDEMPOTENCY_CONFLICT => c"idempotency_conflict",
            cg_status::CG_INVALID_ARGUMENT => c"invalid_argument",
            cg_status::CG_STORAGE_ERROR => c"storage",
            cg_status::CG_INTERNAL => c"internal",
            cg_status::CG_PANIC => c"panic",
            cg_status::CG_RATE_LIMITED => c"rate_limited",
        }
    }

    pub(crate) fn name_ptr(self) -> *const c_char {
        self.name().as_ptr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_core_error_table() {
        for code in ErrorCode::ALL {
            let s = cg_status::from(code);
            assert_eq!(s as u32, code as u32, "{code:?}");
            assert_eq!(s.http_status(), code.http_status());
            assert_eq!(s.name().to_str().unwrap(), code.as_str());
        }
        assert_eq!(cg_status::CG_OK as u32, 0);
        assert_eq!(cg_status::CG_PANIC as u32, 9);
        for (i, s) in cg_status::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
            assert_eq!(cg_status::from_u32(i as u32), Some(*s));
        }
        assert_eq!(cg_status::CG_RATE_LIMITED as u32, 10);
        assert_eq!(cg_status::from_u32(11), None);
        assert_eq!(cg_status::from_u32(u32::MAX), None);
    }
}
