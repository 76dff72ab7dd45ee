//! Auto top-up: an account's rule, the top-ups it requested, and a failed
//! payment. The crossing, the month's caps and the `topup.*` events are the
//! core's; a top-up is paid with `cg_record_payment` under its id.

use super::*;
use creditgate_core::{AutoTopup, TopupAmount};

/// Sets `user_id`'s auto top-up rule (creating the account), replacing any
/// earlier one; see `cg_auto_topup` (required). When the account's
/// available balance crosses below the threshold, a `topup.requested` event
/// (with the top-up's id and amount) is written in the same transaction,
/// once per crossing; pay it with `cg_record_payment` under the top-up's id
/// as the payment id. A rule out of range (a negative threshold, both or
/// neither of `amount_micros` and `target_micros`, a target not above the
/// threshold, `max_per_month` outside 1..=`CG_MAX_TOPUPS_PER_MONTH`, a cap
/// of 0) is `CG_INVALID_ARGUMENT`.
///
/// `topup_out`: required; when the available balance is already below the
/// threshold, the top-up requested at once (under the month's caps);
/// otherwise zeroed, its `topup_id` "" (as on failure).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_set_auto_topup(
    manager: *const cg_manager,
    user_id: *const c_char,
    rule: *const cg_auto_topup,
    topup_out: *mut cg_topup,
) -> cg_status {
    ffi_fn!(handle manager => m; out [topup_out]; args [text user_id, auto_topup rule]; {
        if let Some(t) = m.set_auto_topup(user_id, &core_rule(&rule)?)? {
            topup_out.write(cg_topup::of(&t)?);
        }
        Ok(())
    })
}

/// Removes `user_id`'s auto top-up rule; top-ups already requested stay
/// payable.
///
/// `removed_out`: required; false when the account had no rule.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_remove_auto_topup(
    manager: *const cg_manager,
    user_id: *const c_char,
    removed_out: *mut bool,
) -> cg_status {
    ffi_fn!(handle manager => m; out [removed_out]; args [text user_id]; {
        removed_out.write(m.remove_auto_topup(user_id)?);
        Ok(())
    })
}

/// `user_id`'s top-ups, newest first, as a JSON array of objects: `id` (the
/// payment id to pay it under), `user_id`, `amount_micros`, `status`
/// (`"requested"`, `"paid"` or `"failed"`), `reason` (of a failure, or
/// null), `entry_id` (the purchase that paid it, or null), `created_at`,
/// `updated_at`. `limit`: 1..=`CG_MAX_LISTED_TOPUPS`, or 0 for
/// `CG_DEFAULT_PAGE_LIMIT`.
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_topups_json(
    manager: *const cg_manager,
    user_id: *const c_char,
    limit: i64,
    json_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; args [text user_id]; {
        let limit = page_limit(limit, CG_DEFAULT_PAGE_LIMIT, CG_MAX_LISTED_TOPUPS)?;
        write_json(json_out, json::topups(&m.topups(user_id, limit)?))
    })
}

/// Records that top-up `topup_id`'s payment failed (`reason`: required, at
/// most 255 bytes) and writes a `topup.failed` event. It still counts
/// against the month's caps, so a card that keeps failing is not retried
/// without end. Idempotent: a failed one is returned as it is. A paid one:
/// `CG_IDEMPOTENCY_CONFLICT`; unknown: `CG_NOT_FOUND`.
///
/// `topup_out`: required; the top-up (zeroed on failure).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_record_topup_failure(
    manager: *const cg_manager,
    topup_id: *const c_char,
    reason: *const c_char,
    topup_out: *mut cg_topup,
) -> cg_status {
    ffi_fn!(handle manager => m; out [topup_out]; args [text topup_id, text reason]; {
        topup_out.write(cg_topup::of(&m.record_topup_failure(topup_id, reason)?)?);
        Ok(())
    })
}

/// The core's rule of a `cg_auto_topup`: exactly one of `amount_micros` and
/// `target_micros` (the other 0). The ranges are checked by the core.
fn core_rule(r: &cg_auto_topup) -> Result<AutoTopup> {
    let amount = match (r.amount_micros, r.target_micros) {
        (a, 0) if a != 0 => TopupAmount::Fixed(Credits::from_micros(a)),
        (0, t) if t != 0 => TopupAmount::UpTo(Credits::from_micros(t)),
        (a, t) => {
            return Err(invalid(format!(
                "rule needs exactly one of amount_micros and target_micros (the other 0), got {a} and {t}"
            )));
        }
    };
    Ok(AutoTopup {
        threshold: Credits::from_micros(r.threshold_micros),
        amount,
        max_per_month: r.max_per_month,
        monthly_cap: Credits::from_micros(r.monthly_cap_micros),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(amount_micros: i64, target_micros: i64) -> cg_auto_topup {
        cg_auto_topup { threshold_micros: 1, amount_micros, target_micros, max_per_month: 2, monthly_cap_micros: 3 }
    }

    #[test]
    fn exactly_one_of_amount_and_target() {
        assert_eq!(core_rule(&rule(5, 0)).unwrap().amount, TopupAmount::Fixed(Credits::from_micros(5)));
        assert_eq!(core_rule(&rule(0, 7)).unwrap().amount, TopupAmount::UpTo(Credits::from_micros(7)));
        let r = core_rule(&rule(-5, 0)).unwrap(); // the core refuses it, naming `amount`
        assert_eq!((r.threshold.micros(), r.max_per_month, r.monthly_cap.micros()), (1, 2, 3));
        for (a, t) in [(0, 0), (5, 7), (-1, -1)] {
            let e = core_rule(&rule(a, t)).unwrap_err().to_string();
            assert!(e.contains("exactly one of amount_micros and target_micros"), "{e}");
        }
    }
}
