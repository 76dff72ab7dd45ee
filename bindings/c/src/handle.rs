//! Opening and closing a ledger, the last error of a thread, status names,
//! strings this library returned, migrations and backups.

use super::*;

/// Opens (and migrates) the ledger at `database_url` (`sqlite:///path.db`,
/// `sqlite:////abs/path.db`, `sqlite:///:memory:`, `postgresql://...`).
/// The other settings (`MIN_CREDITS_API_KEY`, `CREDITS_PER_USD`, ...) come
/// from the environment. To take the URL from `DATABASE_URL` too, call
/// `cg_open_env`.
///
/// `database_url`: required (NULL is `CG_INVALID_ARGUMENT`: a forgotten
/// URL must not open, or create, a ledger somewhere else); borrowed for the
/// call.
/// `manager_out`: required; receives a new handle owned by the caller, to be
/// released with `cg_close`. Set to NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_open(database_url: *const c_char, manager_out: *mut *mut cg_manager) -> cg_status {
    ffi_fn!(status; out [manager_out]; args [text database_url]; {
        manager_out.write(ffi::manager_into_raw(open(Some(database_url))?));
        Ok(())
    })
}

/// Opens the ledger named by the environment (`DATABASE_URL`, default
/// `sqlite:///creditgate.db`, and the other settings of docs/reference.md, "Environment variables").
///
/// `manager_out`: required; receives a new handle owned by the caller, to be
/// released with `cg_close`. Set to NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_open_env(manager_out: *mut *mut cg_manager) -> cg_status {
    ffi_fn!(status; out [manager_out]; {
        manager_out.write(ffi::manager_into_raw(open(None)?));
        Ok(())
    })
}

/// Closes a handle and frees it. NULL is a no-op. Closing a handle twice, or
/// while another thread still uses it, is undefined behaviour.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_close(manager: *mut cg_manager) {
    ffi_fn!(free manager_drop(manager))
}

/// The message of the last failed call on this thread ("" when the last
/// call succeeded). Never NULL. Borrowed: valid until the next call of a
/// `cg_status`-returning function on the same thread; copy it to keep it.
/// Messages say what was wrong and with which value, never a secret.
#[unsafe(no_mangle)]
pub extern "C" fn cg_last_error() -> *const c_char {
    ffi_fn!(value c"".as_ptr(); { panic::last_error_ptr() })
}

/// After `CG_RATE_LIMITED` on this thread: the whole seconds (1..=60) until
/// the key's next rate-limit window (an HTTP `Retry-After`); 0 after any
/// other result.
#[unsafe(no_mangle)]
pub extern "C" fn cg_last_error_retry_after() -> u32 {
    ffi_fn!(value 0; { panic::last_retry_after() })
}

/// Which limit the last `CG_INSUFFICIENT_CREDITS` on this thread hit (the
/// tightest; "account" on a tie): "account" (the paying account's available
/// credits), "key" (the API key's spend cap, `cg_set_key_limit`), "member"
/// (the key owner's member budget, `cg_set_budget`) or "project" (the key's
/// project budget); "" when the last call on this thread did
/// not fail with `CG_INSUFFICIENT_CREDITS`. Static: never free it. Like
/// `cg_last_error`, it describes the last status-returning call.
#[unsafe(no_mangle)]
pub extern "C" fn cg_last_error_limit_source() -> *const c_char {
    ffi_fn!(value c"".as_ptr(); { panic::last_limit_source_ptr() })
}

/// The HTTP status of a status (docs/reference.md): 200 for `CG_OK`, 402, 401, 403,
/// 404, 409, 400, 503, 500, 429; 500 for `CG_PANIC` and for unknown values.
#[unsafe(no_mangle)]
pub extern "C" fn cg_status_http(status: u32) -> u16 {
    ffi_fn!(value 500; { cg_status::from_u32(status).map_or(500, cg_status::http_status) })
}

/// The error code (docs/reference.md) of a status: "ok", "insufficient_credits",
/// "invalid_api_key", "limit_reached", "not_found", "idempotency_conflict",
/// "invalid_argument", "storage", "internal", "panic", "rate_limited"; "unknown" for other
/// values. Static: never free it.
#[unsafe(no_mangle)]
pub extern "C" fn cg_status_name(status: u32) -> *const c_char {
    ffi_fn!(value c"unknown".as_ptr(); { cg_status::from_u32(status).map_or(c"unknown".as_ptr(), cg_status::name_ptr) })
}

/// The library version, e.g. "0.1.0". Static: never free it.
#[unsafe(no_mangle)]
pub extern "C" fn cg_version() -> *const c_char {
    const VERSION: &std::ffi::CStr =
        match std::ffi::CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    ffi_fn!(value c"unknown".as_ptr(); { VERSION.as_ptr() })
}

/// Frees a string this library returned through a `char **` out-pointer
/// (JSON, secrets, Prometheus text, URLs). Zeroes it first, as it may be an
/// API key secret. NULL is a no-op; freeing twice is undefined behaviour.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_string_free(s: *mut c_char) {
    ffi_fn!(free string_free(s))
}

/// The resolved database URL, password redacted.
///
/// `url_out`: required; receives a string owned by the caller (free it with
/// `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_database_url(manager: *const cg_manager, url_out: *mut *mut c_char) -> cg_status {
    ffi_fn!(handle manager => m; out [url_out]; {
        url_out.write(ffi::string_into_raw(m.database_url())?);
        Ok(())
    })
}

/// Runs pending schema migrations (also done by `cg_open`); safe to repeat.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_migrate(manager: *const cg_manager) -> cg_status {
    ffi_fn!(handle manager => m; { m.migrate() })
}

/// Copies an SQLite ledger into the new file `dest_path` (never
/// overwritten) with SQLite's online backup API, while the ledger stays in
/// use; the copy is a consistent snapshot that passed `PRAGMA quick_check`.
/// PostgreSQL ledgers: `CG_INVALID_ARGUMENT`.
///
/// `size_bytes_out`: optional (NULL to ignore); the copy's size, 0 on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_backup(
    manager: *const cg_manager,
    dest_path: *const c_char,
    size_bytes_out: *mut i64,
) -> cg_status {
    ffi_fn!(handle manager => m; args [opt_out size_bytes_out, text dest_path]; {
        let size = m.backup(dest_path)?;
        if let Some(out) = size_bytes_out {
            out.write(i64::try_from(size).unwrap_or(i64::MAX));
        }
        Ok(())
    })
}
