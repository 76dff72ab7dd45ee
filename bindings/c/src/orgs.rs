//! Organisation wallets and allowances: members (whose keys charge the
//! organisation), projects (named groups of its keys), their budgets, what
//! members spent, and allowances that refill an account every period.

use super::*;
use creditgate_core::limits;

/// Makes `member_id` a member of `org_id`: from then on the member's keys
/// (existing and new) verify against and charge `org_id`'s account. The
/// same pair again is a no-op. One level only: an organisation cannot join
/// another, a member cannot have members, an account belongs to at most one
/// organisation and never to itself (each `CG_INVALID_ARGUMENT`). More than
/// `CG_MAX_MEMBERS_PER_ORG`: `CG_LIMIT_REACHED`. The member, with its
/// `joined_at`, is in `cg_members_json`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_add_member(
    manager: *const cg_manager,
    org_id: *const c_char,
    member_id: *const c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; args [text org_id, text member_id]; {
        m.add_member(org_id, member_id).map(drop)
    })
}

/// Ends `member_id`'s membership of `org_id`: its keys charge its own
/// account again. Holds placed while it was a member stay on the
/// organisation; its member budget is deleted and its keys leave their
/// projects. Not a member of `org_id`: `CG_NOT_FOUND`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_remove_member(
    manager: *const cg_manager,
    org_id: *const c_char,
    member_id: *const c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; args [text org_id, text member_id]; {
        m.remove_member(org_id, member_id)
    })
}

/// `org_id`'s members, by user id, as a JSON array of objects: `org_id`,
/// `user_id`, `joined_at` and `budget` (null, or an object: `scope`,
/// `name`, `limit_micros`, `window`, `low_threshold_micros` (or null),
/// `spent_micros` in the current window, `remaining_micros` (the limit
/// minus spent minus the active holds of its keys; may be negative) and
/// `resets_at` (null for "lifetime")).
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_members_json(
    manager: *const cg_manager,
    org_id: *const c_char,
    json_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; args [text org_id]; {
        write_json(json_out, json::members(&m.members(org_id)?))
    })
}

/// Creates the project `name` of `org_id` (a named group of the keys that
/// charge it); an existing project is a no-op. `org_id` a member of
/// another organisation: `CG_INVALID_ARGUMENT`. More than
/// `CG_MAX_PROJECTS_PER_ORG`: `CG_LIMIT_REACHED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_create_project(
    manager: *const cg_manager,
    org_id: *const c_char,
    name: *const c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; args [text org_id, text name]; {
        m.create_project(org_id, name).map(drop)
    })
}

/// `org_id`'s projects, by name, as a JSON array of objects: `org_id`,
/// `name`, `created_at`, `keys` (revoked ones included) and `budget` (as in
/// `cg_members_json`).
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_projects_json(
    manager: *const cg_manager,
    org_id: *const c_char,
    json_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; args [text org_id]; {
        write_json(json_out, json::projects(&m.projects(org_id)?))
    })
}

/// Puts key `key_id` in `project` of the account that pays for it (its
/// owner's organisation, or its owner); `project` NULL takes it out of its
/// project. Unknown key or project: `CG_NOT_FOUND`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_set_key_project(
    manager: *const cg_manager,
    key_id: *const c_char,
    project: *const c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; args [text key_id, opt_text project]; {
        m.set_key_project(KeyId::parse(key_id)?, project)
    })
}

/// Sets the budget of a member or a project of `org_id`: `scope` "member"
/// or "project", `name` the member's user id or the project's name. At most
/// `limit_micros` (>= 0) per `window`: "daily", "weekly", "monthly" (UTC
/// calendar periods, as in `cg_set_key_limit`) or "lifetime"; the usage
/// already charged in the current window counts. `low_threshold_micros`
/// (0..=limit): a `budget.low` event when a charge takes what is left
/// below it; 0: none. `window` NULL removes the budget (then
/// `limit_micros` and `low_threshold_micros` must be 0). Verification and
/// holds through the budget's keys then fail with `CG_INSUFFICIENT_CREDITS`
/// and `cg_last_error_limit_source()` "member" or "project" when it is
/// short. A member or project `org_id` does not have: `CG_NOT_FOUND`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_set_budget(
    manager: *const cg_manager,
    org_id: *const c_char,
    scope: *const c_char,
    name: *const c_char,
    limit_micros: i64,
    window: *const c_char,
    low_threshold_micros: i64,
) -> cg_status {
    ffi_fn!(handle manager => m; args [text org_id, text scope, text name, opt_text window]; {
        let scope = match scope {
            "member" => BudgetScope::Member(name),
            "project" => BudgetScope::Project(name),
            other => return Err(invalid(format!("scope must be \"member\" or \"project\", got {other:?}"))),
        };
        let limit = match window {
            Some(window) => Some(BudgetLimit {
                limit: Credits::from_micros(limit_micros),
                window: SpendWindow::parse(window)?,
                low_threshold: (low_threshold_micros != 0).then_some(Credits::from_micros(low_threshold_micros)),
            }),
            None if limit_micros == 0 && low_threshold_micros == 0 => None,
            None => {
                return Err(invalid(format!(
                    "window is NULL, which removes the budget, but limit_micros is {limit_micros} and \
                     low_threshold_micros is {low_threshold_micros}: pass 0 for both, or a window"
                )));
            }
        };
        m.set_budget(org_id, scope, limit)
    })
}

/// Newest-first page of the entries `member_id`'s keys made on `org_id`'s
/// account, as a JSON array shaped like `cg_transactions_json`'s. `limit`:
/// 1..=1000, or 0 for 50. `before`: optional (NULL) entry id cursor; an
/// unknown id or one not of `org_id` is `CG_NOT_FOUND`.
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_member_transactions_json(
    manager: *const cg_manager,
    org_id: *const c_char,
    member_id: *const c_char,
    limit: i64,
    before: *const c_char,
    json_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; args [text org_id, text member_id, opt_text before]; {
        let before = before.map(EntryId::parse).transpose()?;
        let limit = if limit == 0 { CG_DEFAULT_PAGE_LIMIT } else { limit };
        let limit = u32::try_from(limit)
            .map_err(|_| invalid(format!("limit must be in 1..={}, got {limit}", limits::MAX_PAGE_LIMIT)))?;
        write_json(json_out, json::entries(&m.member_transactions(org_id, member_id, limit, before)?))
    })
}

/// What each member spent of `org_id`'s credits (its usage entries) since
/// `since_micros` (microseconds since the Unix epoch, UTC; 0: ever), by
/// member, as a JSON array of objects: `member_id`, `requests`, `tokens`,
/// `credits_micros`.
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_member_usage_json(
    manager: *const cg_manager,
    org_id: *const c_char,
    since_micros: i64,
    json_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; args [text org_id]; {
        let since = (since_micros != 0).then_some(Timestamp(since_micros));
        write_json(json_out, json::member_usage(&m.member_usage(org_id, since)?))
    })
}

/// Creates an allowance: `amount_micros` (> 0) of promotional credits on
/// `user_id`'s account every `period` ("daily", "weekly" from Monday,
/// "monthly" from the 1st, UTC; "lifetime" is `CG_INVALID_ARGUMENT`), the
/// current period's at once. `options`: optional (NULL: for the whole
/// account, rollover off), see `cg_allowance_options`. A member that is not
/// `user_id`'s, or a key not charged to `user_id`: `CG_NOT_FOUND`. More than
/// `CG_MAX_ALLOWANCES_PER_ACCOUNT`: `CG_LIMIT_REACHED`.
///
/// `allowance_id_out`: required; the new allowance's id (for
/// `cg_remove_allowance`), 0 on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_set_allowance(
    manager: *const cg_manager,
    user_id: *const c_char,
    amount_micros: i64,
    period: *const c_char,
    options: *const cg_allowance_options,
    allowance_id_out: *mut i64,
) -> cg_status {
    ffi_fn!(handle manager => m; out [allowance_id_out];
        args [text user_id, text period, allowance_options options]; {
        let spec = AllowanceSpec {
            user: user_id,
            member: options.member_id,
            key: options.key_id.map(KeyId::parse).transpose()?,
            amount: Credits::from_micros(amount_micros),
            period: SpendWindow::parse(period)?,
            rollover_cap: (options.rollover_cap_micros != 0)
                .then_some(Credits::from_micros(options.rollover_cap_micros)),
        };
        allowance_id_out.write(m.set_allowance(&spec)?.allowance_id);
        Ok(())
    })
}

/// Stops an allowance's refills; the grants it issued stay (and expire as
/// they would). Unknown or already removed: `CG_NOT_FOUND`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_remove_allowance(manager: *const cg_manager, allowance_id: i64) -> cg_status {
    ffi_fn!(handle manager => m; { m.remove_allowance(allowance_id) })
}

/// `user_id`'s allowances (not removed), oldest first, as a JSON array of
/// objects: `allowance_id`, `user_id`, `member_id` (or null), `api_key_id`
/// (or null), `amount_micros`, `period`, `rollover_cap_micros` (null:
/// rollover off), `next_refill_at` (the start of the next period not yet
/// refilled) and `created_at`.
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_allowances_json(
    manager: *const cg_manager,
    user_id: *const c_char,
    json_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; args [text user_id]; {
        write_json(json_out, json::allowances(&m.allowances(user_id)?))
    })
}
