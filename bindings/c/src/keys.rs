//! API keys: eligibility, creation, import, lifecycle (revoke, expiry,
//! disable, rotate), spend caps, listing and verification.

use super::*;

/// Whether `user_id` may create an API key now. Writes nothing.
///
/// `eligibility_out`: required; zeroed on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_can_generate_api_key(
    manager: *const cg_manager,
    user_id: *const c_char,
    eligibility_out: *mut cg_key_eligibility,
) -> cg_status {
    ffi_fn!(handle manager => m; out [eligibility_out]; args [text user_id]; {
        eligibility_out.write(cg_key_eligibility::of(&m.can_generate_api_key(user_id)?));
        Ok(())
    })
}

/// Creates an API key when the credit rule allows it:
/// `CG_INSUFFICIENT_CREDITS` (402) before the first payment,
/// `CG_LIMIT_REACHED` at the active-key limit. `name`: optional (NULL).
///
/// `secret_out`: required; receives the secret, shown this once, owned by
/// the caller: free it with `cg_string_free` (which zeroes it). NULL on
/// failure. `key_out`: required; the key's id and display prefix.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_create_api_key(
    manager: *const cg_manager,
    user_id: *const c_char,
    name: *const c_char,
    secret_out: *mut *mut c_char,
    key_out: *mut cg_api_key,
) -> cg_status {
    ffi_fn!(handle manager => m; out [secret_out, key_out]; args [text user_id, opt_text name]; {
        let k = m.create_api_key(user_id, name)?;
        let info = cg_api_key::of(&k.key_id.to_string(), Some(&k.prefix), false)?;
        secret_out.write(ffi::string_into_raw(k.secret.expose().to_string())?);
        key_out.write(info);
        Ok(())
    })
}

/// Registers a legacy key without the credit gate. Pass exactly one of
/// `secret` (8..=512 bytes) and `secret_sha256` (64 lowercase hex chars);
/// `name`: optional (NULL). All are borrowed for the call.
///
/// `key_out`: required; the key's id and display prefix.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_import_api_key(
    manager: *const cg_manager,
    user_id: *const c_char,
    secret: *const c_char,
    secret_sha256: *const c_char,
    name: *const c_char,
    key_out: *mut cg_api_key,
) -> cg_status {
    ffi_fn!(handle manager => m; out [key_out];
        args [text user_id, opt_text secret, opt_text secret_sha256, opt_text name]; {
        let k = m.import_api_key(user_id, secret, secret_sha256, name)?;
        key_out.write(cg_api_key::of(&k.key_id.to_string(), k.prefix.as_deref(), k.legacy)?);
        Ok(())
    })
}

/// Revokes a key at once. With `user_id` (optional, NULL), a key of another
/// user is `CG_NOT_FOUND`. Revoking twice is a no-op.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_revoke_api_key(
    manager: *const cg_manager,
    key_id: *const c_char,
    user_id: *const c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; args [text key_id, opt_text user_id]; {
        let key_id = KeyId::parse(key_id)?;
        m.revoke_api_key(key_id, user_id)
    })
}

/// Sets when a key stops verifying: `expires_at_micros` microseconds since
/// the Unix epoch (UTC), a past time expires it now; 0 clears the expiry.
/// `user_id`: optional (NULL); with it, a key of another user is
/// `CG_NOT_FOUND`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_set_api_key_expiry(
    manager: *const cg_manager,
    key_id: *const c_char,
    expires_at_micros: i64,
    user_id: *const c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; args [text key_id, opt_text user_id]; {
        let key_id = KeyId::parse(key_id)?;
        let at = if expires_at_micros == 0 { None } else { Some(Timestamp(expires_at_micros)) };
        m.set_api_key_expiry(key_id, at, user_id)
    })
}

/// Disables a key: verification and holds then fail with
/// `CG_INVALID_API_KEY` exactly as for an unknown key, until
/// `cg_enable_api_key`. Usage and settlements through it are still
/// charged. A no-op when already disabled. `user_id`: as `cg_revoke_api_key`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_disable_api_key(
    manager: *const cg_manager,
    key_id: *const c_char,
    user_id: *const c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; args [text key_id, opt_text user_id]; {
        let key_id = KeyId::parse(key_id)?;
        m.disable_api_key(key_id, user_id)
    })
}

/// Enables a disabled key (a revoked or expired key stays unusable). A
/// no-op when enabled. `user_id`: as `cg_revoke_api_key`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_enable_api_key(
    manager: *const cg_manager,
    key_id: *const c_char,
    user_id: *const c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; args [text key_id, opt_text user_id]; {
        let key_id = KeyId::parse(key_id)?;
        m.enable_api_key(key_id, user_id)
    })
}

/// Replaces a usable key with a new secret for the same user and name; the
/// old key keeps working for `grace_seconds` (0..=2592000, 30 days; 0 ends
/// it now). No credit rule and no active-key limit apply (it is not a new
/// key purchase). The new key inherits the old one's expiry and spend cap.
/// `user_id`: as `cg_revoke_api_key`.
///
/// `secret_out`, `key_out`: as `cg_create_api_key`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_rotate_api_key(
    manager: *const cg_manager,
    key_id: *const c_char,
    grace_seconds: i64,
    user_id: *const c_char,
    secret_out: *mut *mut c_char,
    key_out: *mut cg_api_key,
) -> cg_status {
    ffi_fn!(handle manager => m; out [secret_out, key_out]; args [text key_id, opt_text user_id]; {
        let key_id = KeyId::parse(key_id)?;
        let k = m.rotate_api_key(key_id, grace_seconds, user_id)?;
        let info = cg_api_key::of(&k.key_id.to_string(), Some(&k.prefix), false)?;
        secret_out.write(ffi::string_into_raw(k.secret.expose().to_string())?);
        key_out.write(info);
        Ok(())
    })
}

/// Caps what a key may spend per `window`: "daily", "weekly", "monthly"
/// (UTC calendar periods: from 00:00, Monday 00:00, the 1st 00:00) or
/// "lifetime". `limit_micros` >= 0 sets the cap (0: nothing may be spent
/// through the key); `window` NULL removes the cap (then `limit_micros`
/// must be 0, as there is no cap to give). Verification and holds through
/// the key then fail with `CG_INSUFFICIENT_CREDITS` and
/// `cg_last_error_limit_source()` "key" when the cap is short. `user_id`:
/// as `cg_revoke_api_key`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_set_key_limit(
    manager: *const cg_manager,
    key_id: *const c_char,
    limit_micros: i64,
    window: *const c_char,
    user_id: *const c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; args [text key_id, opt_text window, opt_text user_id]; {
        let key_id = KeyId::parse(key_id)?;
        match window {
            Some(window) => {
                m.set_key_limit(key_id, Some(Credits::from_micros(limit_micros)), SpendWindow::parse(window)?, user_id)
            }
            // Removing: the core ignores the window of a cap it removes.
            None if limit_micros == 0 => m.set_key_limit(key_id, None, SpendWindow::Lifetime, user_id),
            None => Err(invalid(format!(
                "window is NULL, which removes the cap, but limit_micros is {limit_micros}: pass 0, or a window"
            ))),
        }
    })
}

/// `user_id`'s keys, newest first, as a JSON array of objects: `key_id`,
/// `user_id`, `name`, `prefix`, `created_at`, `last_used_at`, `revoked_at`,
/// `legacy`, `expires_at`, `disabled`, `rotated_to` (a key id or null),
/// `spend_limit_micros` (null without a cap), `spend_window`,
/// `spent_in_window_micros`, `window_resets_at`, `project` (the
/// organisation project the key is in, or null). Never contains a secret.
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_list_api_keys_json(
    manager: *const cg_manager,
    user_id: *const c_char,
    json_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; args [text user_id]; {
        write_json(json_out, json::api_keys(&m.list_api_keys(user_id)?))
    })
}

/// Verifies a presented key and its account's available credits:
/// `CG_INVALID_API_KEY` (401) for a malformed, unknown or revoked key,
/// `CG_INSUFFICIENT_CREDITS` (402) when available < `min_credits_micros`
/// (pass `CG_MICROS_PER_CREDIT` for the usual 1 credit; 0 checks only the
/// key). Read-only.
///
/// `verification_out`: required; zeroed on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_verify_api_key_credits(
    manager: *const cg_manager,
    api_key: *const c_char,
    min_credits_micros: i64,
    verification_out: *mut cg_verification,
) -> cg_status {
    ffi_fn!(handle manager => m; out [verification_out]; args [text api_key]; {
        let v = m.verify_api_key_credits(api_key, Credits::from_micros(min_credits_micros))?;
        verification_out.write(cg_verification::of(&v)?);
        Ok(())
    })
}
