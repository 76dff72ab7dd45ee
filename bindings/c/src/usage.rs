//! Usage and holds: charges, reserve, settle, release, model prices.

use super::*;

/// Charges a call's usage as a `usage` entry, never refused for balance
/// (the balance may go negative: `overdraft`). Name the key by exactly one
/// of `api_key` (the secret) and `key_id`. `usage`: required (NULL is
/// `CG_INVALID_ARGUMENT`; a zeroed `cg_usage` charges no tokens at the
/// default price). `request_id`: optional; the same id charges once
/// (`replayed`), with another usage it is `CG_IDEMPOTENCY_CONFLICT`.
///
/// `charge_out`: required; zeroed on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_record_usage(
    manager: *const cg_manager,
    api_key: *const c_char,
    key_id: *const c_char,
    usage: *const cg_usage,
    request_id: *const c_char,
    charge_out: *mut cg_usage_charge,
) -> cg_status {
    ffi_fn!(handle manager => m; out [charge_out];
        args [opt_text api_key, opt_text key_id, usage usage, opt_text request_id]; {
        let key = match (api_key, key_id) {
            (Some(secret), None) => KeyRef::Secret(secret),
            (None, Some(id)) => KeyRef::Id(KeyId::parse(id)?),
            _ => return Err(invalid("record_usage needs exactly one of api_key and key_id")),
        };
        charge_out.write(cg_usage_charge::of(&m.record_usage(key, usage, request_id)?)?);
        Ok(())
    })
}

/// Holds credits against available (strict), for streaming or bounding
/// concurrent spend: either `credits_micros` > 0 with `usage` NULL, or
/// `credits_micros` 0 and the worst case of `usage` (its input tokens at
/// the highest of the model's input, cached-input and cache-write rates
/// plus its output tokens, e.g. the request's `max_tokens`, at the output
/// rate, rounded up once, plus the request fee, at least 1 micro-credit;
/// its cache counts do not change it). `ttl_seconds`: 1..=86400, or 0
/// for 600. `request_id`: optional; the same id holds once (`replayed`,
/// with the first hold's `status`).
///
/// `hold_out`: required; zeroed on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_reserve(
    manager: *const cg_manager,
    api_key: *const c_char,
    credits_micros: i64,
    usage: *const cg_usage,
    ttl_seconds: i64,
    request_id: *const c_char,
    hold_out: *mut cg_hold,
) -> cg_status {
    ffi_fn!(handle manager => m; out [hold_out]; args [text api_key, opt_usage usage, opt_text request_id]; {
        let amount = match credits_or_usage("reserve", credits_micros, usage)? {
            Amount::Credits(credits) => HoldAmount::Credits(credits),
            Amount::Usage(usage) => HoldAmount::Usage(usage),
        };
        hold_out.write(reserve(m, api_key, amount, ttl_seconds, request_id)?);
        Ok(())
    })
}

/// `cg_reserve` of a `usage` (required: NULL is `CG_INVALID_ARGUMENT`):
/// holds a call's worst case, however much of the prompt the cache serves.
///
/// `hold_out`: required; zeroed on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_reserve_usage(
    manager: *const cg_manager,
    api_key: *const c_char,
    usage: *const cg_usage,
    ttl_seconds: i64,
    request_id: *const c_char,
    hold_out: *mut cg_hold,
) -> cg_status {
    ffi_fn!(handle manager => m; out [hold_out]; args [text api_key, usage usage, opt_text request_id]; {
        hold_out.write(reserve(m, api_key, HoldAmount::Usage(usage), ttl_seconds, request_id)?);
        Ok(())
    })
}

/// What `cg_reserve` and `cg_settle` were given: credits or a usage.
enum Amount<'a> {
    Credits(Credits),
    Usage(Usage<'a>),
}

/// The either/or of `cg_reserve` and `cg_settle`: credits (> 0, with no
/// usage) or a usage (with `credits_micros` 0).
fn credits_or_usage<'a>(call: &str, credits_micros: i64, usage: Option<Usage<'a>>) -> Result<Amount<'a>> {
    match (credits_micros, usage) {
        (0, Some(usage)) => Ok(Amount::Usage(usage)),
        (0, None) => Err(invalid(format!("{call} needs credits_micros or a usage, got neither"))),
        (c, None) => Ok(Amount::Credits(Credits::from_micros(c))),
        (c, Some(_)) => {
            Err(invalid(format!("{call} takes either credits_micros or a usage, got credits_micros {c} and a usage")))
        }
    }
}

/// What both reserve calls share once their amount is known: the TTL
/// default, the hold and its C result.
fn reserve(
    m: &CreditManager,
    api_key: &str,
    amount: HoldAmount,
    ttl_seconds: i64,
    request_id: Option<&str>,
) -> Result<cg_hold> {
    let ttl_seconds = if ttl_seconds == 0 { CG_DEFAULT_TTL_SECONDS } else { ttl_seconds };
    cg_hold::of(&m.reserve(api_key, amount, ttl_seconds, request_id)?)
}

/// Charges a hold's actual usage exactly once and frees it (also after it
/// expired or was released; the charge may exceed the hold): either
/// `credits_micros` > 0 with `usage` NULL, or `credits_micros` 0 and
/// `usage` (its `model` NULL: the hold's model), charged at the prices in
/// effect when the hold was reserved (the quote it was held at), not at a
/// price set since. Settling again with the same usage replays the first
/// result; with another it is `CG_IDEMPOTENCY_CONFLICT`. Unknown hold:
/// `CG_NOT_FOUND`.
///
/// `charge_out`: required; zeroed on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_settle(
    manager: *const cg_manager,
    hold_id: *const c_char,
    credits_micros: i64,
    usage: *const cg_usage,
    charge_out: *mut cg_usage_charge,
) -> cg_status {
    ffi_fn!(handle manager => m; out [charge_out]; args [text hold_id, opt_usage usage]; {
        let hold_id = HoldId::parse(hold_id)?;
        let settlement = match credits_or_usage("settle", credits_micros, usage)? {
            Amount::Credits(credits) => Settlement::Credits(credits),
            Amount::Usage(usage) => Settlement::Tokens(usage),
        };
        charge_out.write(cg_usage_charge::of(&m.settle(hold_id, settlement)?)?);
        Ok(())
    })
}

/// Frees an active hold without charging; a no-op on a hold already
/// released, settled or expired. Unknown hold: `CG_NOT_FOUND`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_release(manager: *const cg_manager, hold_id: *const c_char) -> cg_status {
    ffi_fn!(handle manager => m; args [text hold_id]; {
        m.release(HoldId::parse(hold_id)?)
    })
}

/// Sets `model`'s usage price in micro-credits per 1,000 tokens, for input
/// and output separately (each 0..=10^18), from now on, with no cache
/// prices and no request fee (`cg_set_model_pricing` sets every component).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_set_model_price(
    manager: *const cg_manager,
    model: *const c_char,
    input_per_1k_micros: i64,
    output_per_1k_micros: i64,
) -> cg_status {
    ffi_fn!(handle manager => m; args [text model]; {
        m.set_model_price(model, Credits::from_micros(input_per_1k_micros), Credits::from_micros(output_per_1k_micros))
    })
}

/// The prices in effect now as a JSON object: model name -> price
/// `{"input_per_1k_micros": n, "output_per_1k_micros": n,
/// "cached_input_per_1k_micros": n or null, "cache_write_per_1k_micros": n
/// or null, "request_fee_micros": n}` (null: the input price applies).
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_list_model_prices_json(
    manager: *const cg_manager,
    json_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; {
        write_json(json_out, json::model_prices(&m.list_model_prices()?))
    })
}

/// Adds a version of `model`'s price, every component in a `cg_model_price`
/// (required), in effect from `effective_at_micros` (microseconds since the
/// Unix epoch, UTC; 0: now) until its next version; the earlier versions
/// stay (`cg_price_history_json`). A time before now is
/// `CG_INVALID_ARGUMENT`: charges made keep their rates, holds placed
/// settle at their reserve's. The same `effective_at_micros` again replaces
/// that scheduled version. Over `CG_MAX_PRICE_VERSIONS` versions of one
/// model: `CG_LIMIT_REACHED`.
///
/// `effective_at_micros_out`: required; receives when the version takes
/// effect (now, for 0); 0 on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_set_model_pricing(
    manager: *const cg_manager,
    model: *const c_char,
    price: *const cg_model_price,
    effective_at_micros: i64,
    effective_at_micros_out: *mut i64,
) -> cg_status {
    ffi_fn!(handle manager => m; out [effective_at_micros_out]; args [text model, model_price price]; {
        let at = (effective_at_micros != 0).then_some(Timestamp(effective_at_micros));
        effective_at_micros_out.write(m.set_model_pricing(model, price, at)?.effective_at.micros());
        Ok(())
    })
}

/// Every version of `model`'s price (NULL: every model's), by model and
/// then oldest first, the scheduled ones included, as a JSON array of
/// `{"model", "price" (as in `cg_list_model_prices_json`), "effective_at",
/// "set_at"}`.
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_price_history_json(
    manager: *const cg_manager,
    model: *const c_char,
    json_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; args [opt_text model]; {
        write_json(json_out, json::price_versions(&m.model_price_history(model)?))
    })
}
