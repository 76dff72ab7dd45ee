//! Balances and entries: credits, grants and their expiry, payments and
//! their reversals, deducts, the ledger's entries and events, rate limits.

use super::*;
use creditgate_core::limits;

/// The ledger balance of `user_id` in micro-credits (0 for an unknown user).
///
/// `balance_micros_out`: required; 0 on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_balance(
    manager: *const cg_manager,
    user_id: *const c_char,
    balance_micros_out: *mut i64,
) -> cg_status {
    ffi_fn!(handle manager => m; out [balance_micros_out]; args [text user_id]; {
        balance_micros_out.write(m.get_balance(user_id)?.micros());
        Ok(())
    })
}

/// Sets the floor of `user_id`'s strict operations to `floor_micros` (<= 0):
/// deducts, holds and key purchases may run the balance down to it, and
/// `available_micros` = balance - held - floor. 0 restores the default.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_set_min_balance(
    manager: *const cg_manager,
    user_id: *const c_char,
    floor_micros: i64,
) -> cg_status {
    ffi_fn!(handle manager => m; args [text user_id]; {
        m.set_min_balance(user_id, Credits::from_micros(floor_micros))
    })
}

/// The account of `user_id` as a JSON object: `user_id`, `balance_micros`,
/// `held_micros`, `available_micros`, `min_balance_micros`, `lifetime_purchased_micros`,
/// `lifetime_used_micros`, `active_keys`, `first_key_issued`, `created_at`
/// (RFC 3339, null for a user the ledger has never seen), `grants`: the
/// live grants in draw-down order, each with `grant_id`, `category`,
/// `priority`, `amount_micros`, `remaining_micros`, `expires_at` (null:
/// never), `created_at`, `source_entry_id`, `payment_id`, `member_id` and
/// `api_key_id` (null, or the only member or key whose charges may draw
/// it) and `allowance_id` (null, or the allowance whose refill issued it),
/// and `organisation` (null, or the organisation the account is a member
/// of).
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_account_json(
    manager: *const cg_manager,
    user_id: *const c_char,
    json_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; args [text user_id]; {
        write_json(json_out, json::account(&m.account(user_id)?))
    })
}

/// Credits `user_id` with `amount_micros`. `kind`: "grant" (NULL),
/// "purchase", "refund" or "adjustment" (which may be negative, and then is
/// strict). `options`: optional (NULL: none), the entry's idempotency key,
/// reference and metadata (`cg_entry_options`).
///
/// `entry_out`: required; receives the entry (zeroed on failure).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_add_credits(
    manager: *const cg_manager,
    user_id: *const c_char,
    amount_micros: i64,
    kind: *const c_char,
    options: *const cg_entry_options,
    entry_out: *mut cg_entry,
) -> cg_status {
    ffi_fn!(handle manager => m; out [entry_out]; args [text user_id, opt_text kind, entry_options options]; {
        let kind = kind.map_or(Ok(EntryKind::Grant), EntryKind::parse)?;
        let metadata = metadata(options.metadata_json)?;
        let e = m.add_credits(user_id, Credits::from_micros(amount_micros), kind, &entry(&options, &metadata))?;
        entry_out.write(cg_entry::of(&e)?);
        Ok(())
    })
}

/// The core's entry options from a `cg_entry_options` and its parsed
/// metadata.
fn entry<'a>(options: &ffi::EntryArgs<'a>, metadata: &'a Option<Map<String, Value>>) -> EntryOptions<'a> {
    EntryOptions { idempotency_key: options.idempotency_key, reference: options.reference, metadata: metadata.as_ref() }
}

/// The core's grant options from a `cg_grant_options` (0 and NULL: not
/// given).
fn grant(options: &ffi::GrantArgs) -> Result<GrantOptions> {
    Ok(GrantOptions {
        expires_at: (options.expires_at_micros != 0).then_some(Timestamp(options.expires_at_micros)),
        category: options.category.map(GrantCategory::parse).transpose()?,
        priority: options.priority,
    })
}

/// `cg_add_credits` with the options of the grant the credits form:
/// `grant` optional (NULL: the default grant, as `cg_add_credits`), see
/// `cg_grant_options`. A negative adjustment takes the default grant.
///
/// `entry_out`: required; receives the entry (zeroed on failure).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_add_credits_grant(
    manager: *const cg_manager,
    user_id: *const c_char,
    amount_micros: i64,
    kind: *const c_char,
    options: *const cg_entry_options,
    grant: *const cg_grant_options,
    entry_out: *mut cg_entry,
) -> cg_status {
    ffi_fn!(handle manager => m; out [entry_out];
        args [text user_id, opt_text kind, entry_options options, grant_options grant]; {
        let kind = kind.map_or(Ok(EntryKind::Grant), EntryKind::parse)?;
        let grant = self::grant(&grant)?;
        let metadata = metadata(options.metadata_json)?;
        let amount = Credits::from_micros(amount_micros);
        let e = m.add_credits_with(user_id, amount, kind, &entry(&options, &metadata), &grant)?;
        entry_out.write(cg_entry::of(&e)?);
        Ok(())
    })
}

/// `cg_record_payment` with the options of the grant the payment buys, as
/// in `cg_add_credits_grant` (`grant` NULL, or its `category` NULL: paid).
///
/// `entry_out`: required; receives the entry (zeroed on failure).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_record_payment_grant(
    manager: *const cg_manager,
    user_id: *const c_char,
    payment_id: *const c_char,
    amount_minor: i64,
    currency: *const c_char,
    grant: *const cg_grant_options,
    entry_out: *mut cg_entry,
) -> cg_status {
    ffi_fn!(handle manager => m; out [entry_out];
        args [text user_id, text payment_id, opt_text currency, grant_options grant]; {
        let currency = currency.unwrap_or("USD");
        let e = m.record_payment_with(user_id, payment_id, amount_minor, currency, &self::grant(&grant)?)?;
        entry_out.write(cg_entry::of(&e)?);
        Ok(())
    })
}

/// Applies every due grant expiry of up to `limit` accounts (1..=10000,
/// or 0 for 1000), one `expiry` entry per expired grant. Reads never count
/// expired credits anyway; this brings the entries up to date. It also
/// writes the due allowance refills of those accounts. Call again while
/// `accounts == limit`.
///
/// `json_out`: required; receives `{"accounts", "entries",
/// "credits_micros", "refills"}` owned by the caller (free it with `cg_string_free`);
/// NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_expire_grants(
    manager: *const cg_manager,
    limit: u32,
    json_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; {
        let limit = if limit == 0 { CG_DEFAULT_EXPIRE_LIMIT } else { limit };
        write_json(json_out, json::expiry_sweep(&m.expire_grants(limit)?))
    })
}

/// The payment webhook path: credits `user_id` with what `amount_minor`
/// (cents, > 0) of `currency` (NULL = "USD"; case-insensitive; only USD)
/// buys, as a `purchase` entry with key `payment:<payment_id>`. A payment
/// delivered twice credits once (`replayed`); the same `payment_id` for
/// another user or amount is `CG_IDEMPOTENCY_CONFLICT`.
///
/// `entry_out`: required; receives the entry (zeroed on failure).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_record_payment(
    manager: *const cg_manager,
    user_id: *const c_char,
    payment_id: *const c_char,
    amount_minor: i64,
    currency: *const c_char,
    entry_out: *mut cg_entry,
) -> cg_status {
    ffi_fn!(handle manager => m; out [entry_out]; args [text user_id, text payment_id, opt_text currency]; {
        let currency = currency.unwrap_or("USD");
        let e = m.record_payment(user_id, payment_id, amount_minor, currency)?;
        entry_out.write(cg_entry::of(&e)?);
        Ok(())
    })
}

/// Reverses (refunds, charges back) a payment: removes the credits it
/// bought as a `reversal` entry; the balance may go negative.
/// `amount_minor`: the part to reverse in cents, or 0 for everything not
/// yet reversed (negative: `CG_INVALID_ARGUMENT`). `reason`, `reversal_id`
/// (the processor's refund id, for partial refunds): optional (NULL).
/// Unknown payment: `CG_NOT_FOUND`; nothing left: `CG_INVALID_ARGUMENT`.
/// The payment's own grant gives first; the entry's metadata tells
/// `grant_id`, `from_grant_micros` and `already_spent_micros` (the part
/// taken from other grants or into overdraft).
///
/// `entry_out`: required; receives the entry (zeroed on failure).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_reverse_payment(
    manager: *const cg_manager,
    payment_id: *const c_char,
    amount_minor: i64,
    reason: *const c_char,
    reversal_id: *const c_char,
    entry_out: *mut cg_entry,
) -> cg_status {
    ffi_fn!(handle manager => m; out [entry_out]; args [text payment_id, opt_text reason, opt_text reversal_id]; {
        let amount_minor = match amount_minor {
            0 => None,
            a if a < 0 => return Err(invalid(format!("amount_minor must be 0 (all) or positive, got {a}"))),
            a => Some(a),
        };
        let e = m.reverse_payment(payment_id, amount_minor, reason, reversal_id)?;
        entry_out.write(cg_entry::of(&e)?);
        Ok(())
    })
}

/// Restores exactly what the reversal `reversal_id` removed (the
/// `reversal_id` given to `cg_reverse_payment`, or its payment id when it had
/// none): a dispute won, a refund that failed. Appends a `reinstatement`
/// entry once; a replay returns the same entry with `replayed` set. Not a
/// purchase (purchases and lifetime purchased do not count it; revenue
/// does). `reason`: optional (NULL). Unknown reversal: `CG_NOT_FOUND`.
///
/// `entry_out`: required; receives the entry (zeroed on failure).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_reinstate_reversal(
    manager: *const cg_manager,
    reversal_id: *const c_char,
    reason: *const c_char,
    entry_out: *mut cg_entry,
) -> cg_status {
    ffi_fn!(handle manager => m; out [entry_out]; args [text reversal_id, opt_text reason]; {
        let e = m.reinstate_reversal(reversal_id, reason)?;
        entry_out.write(cg_entry::of(&e)?);
        Ok(())
    })
}

/// Strict debit of `amount_micros` (> 0) as a `deduct` entry:
/// `CG_INSUFFICIENT_CREDITS` when available < amount; never below zero.
/// `options`: optional (NULL: none), as in `cg_add_credits`.
///
/// `entry_out`: required; receives the entry (zeroed on failure).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_deduct_credits(
    manager: *const cg_manager,
    user_id: *const c_char,
    amount_micros: i64,
    options: *const cg_entry_options,
    entry_out: *mut cg_entry,
) -> cg_status {
    ffi_fn!(handle manager => m; out [entry_out]; args [text user_id, entry_options options]; {
        let metadata = metadata(options.metadata_json)?;
        let e = m.deduct_credits(user_id, Credits::from_micros(amount_micros), &entry(&options, &metadata))?;
        entry_out.write(cg_entry::of(&e)?);
        Ok(())
    })
}

/// Newest-first page of `user_id`'s entries as a JSON array of objects:
/// `id`, `seq`, `user_id`, `kind`, `amount_micros` (signed),
/// `balance_after_micros`, `idempotency_key`, `reference`, `api_key_id`,
/// `member_id` (the organisation member whose key made it, or null),
/// `project` (the project of that key at the charge, or null), `input_tokens`, `output_tokens`, `model`, `amount_minor`, `currency`,
/// `metadata` (object or null), `created_at`, `replayed`. `limit`: 1..=1000,
/// or 0 for 50. `before`: optional (NULL) entry id cursor; an unknown id or
/// another user's is `CG_NOT_FOUND`.
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_transactions_json(
    manager: *const cg_manager,
    user_id: *const c_char,
    limit: i64,
    before: *const c_char,
    json_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; args [text user_id, opt_text before]; {
        let before = before.map(EntryId::parse).transpose()?;
        let limit = if limit == 0 { CG_DEFAULT_PAGE_LIMIT } else { limit };
        let limit = u32::try_from(limit)
            .map_err(|_| invalid(format!("limit must be in 1..={}, got {limit}", limits::MAX_PAGE_LIMIT)))?;
        write_json(json_out, json::entries(&m.transactions(user_id, limit, before)?))
    })
}

/// Outbox events committed after the event with id `after` (0: from the
/// first), in commit order, as a JSON array of objects with `id`, `kind`
/// (`balance.low`, `purchase.first`, `overdraft`, `grant.expired`,
/// `key.created`, `key.revoked`, `key.disabled`, `key.enabled`,
/// `key.rotated`, `key.limit_set`, `key.expiry_set`, `member.added`,
/// `member.removed`, `budget.set`, `budget.low`, `allowance.set`,
/// `allowance.removed`, `allowance.refilled`), `user_id`, `api_key_id` (or null), `data` (an object;
/// amounts in it are decimal strings of credits) and `created_at`. Resume
/// with the `id` of the last event handled. `limit`: 1..=1000, or 0 for 100.
/// An `after` that names no event is `CG_INVALID_ARGUMENT`.
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_events_json(
    manager: *const cg_manager,
    after: i64,
    limit: i64,
    json_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; {
        let limit = if limit == 0 { CG_DEFAULT_EVENTS_LIMIT } else { limit };
        let limit = u32::try_from(limit)
            .map_err(|_| invalid(format!("limit must be in 1..={}, got {limit}", limits::MAX_EVENTS_PER_PAGE)))?;
        write_json(json_out, json::events(&m.events(after, limit)?))
    })
}

/// Sets the per-minute rate limits of key `key_id`, shared through the
/// database by every process: `requests_per_minute` verified requests
/// (`cg_verify_api_key_credits`, `cg_reserve`) and `tokens_per_minute`
/// charged tokens; 0 lifts that limit (both 0: none). Over a limit those
/// calls fail with `CG_RATE_LIMITED` (429). Unknown key: `CG_NOT_FOUND`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_set_rate_limit(
    manager: *const cg_manager,
    key_id: *const c_char,
    requests_per_minute: u32,
    tokens_per_minute: u64,
) -> cg_status {
    ffi_fn!(handle manager => m; args [text key_id]; {
        let key = KeyId::parse(key_id)?;
        let rpm = (requests_per_minute != 0).then_some(requests_per_minute);
        let tpm = (tokens_per_minute != 0).then_some(tokens_per_minute);
        m.set_rate_limit(key, rpm, tpm)
    })
}
