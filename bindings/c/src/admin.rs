//! Audit, business report and process metrics.

use super::*;

/// Checks every account (balance == sum of entries, gap-free seqs, the
/// `balance_after` chain) on one snapshot, as a JSON object: `ok`,
/// `accounts_checked`, `entries_checked`, `mismatches` (array of
/// `{user_id, problem, detail}`). Never modifies data.
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_audit_json(manager: *const cg_manager, json_out: *mut *mut c_char) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; {
        write_json(json_out, json::audit(&m.audit()?))
    })
}

/// Business figures from the database (docs/reference.md) as a JSON object: `users`,
/// `paying_users`, `users_attempted_key`, `key_generation_attempts`,
/// `key_generation_successes`, `purchase_conversion_rate` (an exact decimal
/// string such as "0.5"), `credits_purchased_micros`, `revenue_usd_minor`,
/// `revenue_per_paying_user_usd_minor`, `revenue_minor_by_currency` (an
/// object: currency code → minor units, e.g. `{"EUR":750,"USD":500}`),
/// `credits_used_micros`, `outstanding_balance_micros`,
/// `outstanding_holds_micros` (active holds), `overdraft_receivable_micros`, `allowance_issued_micros` (credits
/// issued by allowance refills), `allowance_used_micros` (of those, what
/// was spent), `schema_version` (the ledger's) and
/// `library_schema_version` (the newest this library knows; above it,
/// writes fail with `CG_STORAGE_ERROR`).
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_report_json(manager: *const cg_manager, json_out: *mut *mut c_char) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; {
        write_json(json_out, json::report(&m.report()?))
    })
}

/// This process's counters (docs/reference.md) as a JSON object: counter name ->
/// integer (`verify_ok_total`, `credits_charged_micros_total`, ...,
/// `errors_total`).
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_metrics_json(manager: *const cg_manager, json_out: *mut *mut c_char) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; {
        write_json(json_out, json::metrics(&m.metrics()))
    })
}

/// The counters and latency histograms in Prometheus text format (names
/// prefixed `creditgate_`).
///
/// `text_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_metrics_prometheus(manager: *const cg_manager, text_out: *mut *mut c_char) -> cg_status {
    ffi_fn!(handle manager => m; out [text_out]; {
        text_out.write(ffi::string_into_raw(m.metrics_prometheus())?);
        Ok(())
    })
}
