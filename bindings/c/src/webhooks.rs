//! Signed webhooks: subscriptions (created with a secret shown once), their
//! dead letters, one delivery pass, and the receiver's check of a delivery.
//! The rules (address policy, signing, leases, backoff) are the core's.

use super::*;
use creditgate_core::{DeliveryOptions, EventKind, verify_webhook};

/// Subscribes `url` (`https://...` or `http://...`, at most
/// `CG_MAX_WEBHOOK_URL_LEN` bytes, no credentials) to the events of `kinds`
/// committed from now on. `kinds`: comma-separated event kinds
/// (`"balance.low,topup.requested"`; spaces around a name are ignored); NULL
/// or `""`: every kind. An unknown kind is `CG_INVALID_ARGUMENT` (the message
/// lists the kinds). `description`: optional (NULL). A host that is, or
/// resolves to, a loopback, private, link-local or other internal address
/// is `CG_INVALID_ARGUMENT` unless allow-listed in
/// `CREDITGATE_WEBHOOK_ALLOWED_HOSTS`; without `CREDITGATE_WEBHOOK_KEY` (the
/// key secrets are encrypted under) `CG_INVALID_ARGUMENT`; more than
/// `CG_MAX_WEBHOOKS` subscriptions: `CG_LIMIT_REACHED`.
///
/// `secret_out`: required; receives the signing secret (`whsec_...`), shown
/// this once, owned by the caller: free it with `cg_string_free` (which
/// zeroes it). NULL on failure. `webhook_out`: required; the new
/// subscription's id.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_create_webhook(
    manager: *const cg_manager,
    url: *const c_char,
    kinds: *const c_char,
    description: *const c_char,
    secret_out: *mut *mut c_char,
    webhook_out: *mut cg_webhook,
) -> cg_status {
    ffi_fn!(handle manager => m; out [secret_out, webhook_out]; args [text url, opt_text kinds, opt_text description]; {
        let (sub, secret) = m.create_webhook(url, &event_kinds(kinds)?, description)?;
        let info = cg_webhook::of(&sub.id)?;
        secret_out.write(ffi::string_into_raw(secret.expose().to_string())?);
        webhook_out.write(info);
        Ok(())
    })
}

/// Every subscription (`callback:` consumers too), oldest first, as a JSON
/// array of objects: `id`, `url`, `kinds` (an array of names; empty: every
/// kind), `enabled`, `description`, `created_at`, and the figures read from
/// the database: `delivered`, `failed_attempts`, `dead_lettered`, `pending`
/// (events after its cursor, counted up to `CG_MAX_EVENTS_PER_PAGE`),
/// `lag_seconds` (age of the oldest pending event), `attempts` (failed
/// attempts of the event at the head), `next_attempt_at` (null: the next
/// pass) and `last_error` (never a secret or a response body). Never the
/// secret.
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_webhooks_json(manager: *const cg_manager, json_out: *mut *mut c_char) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; {
        write_json(json_out, json::webhooks(&m.webhooks()?))
    })
}

/// Enables or disables subscription `webhook_id`; a disabled one keeps its
/// cursor and resumes where it stopped. Unknown: `CG_NOT_FOUND`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_set_webhook_enabled(
    manager: *const cg_manager,
    webhook_id: *const c_char,
    enabled: bool,
) -> cg_status {
    ffi_fn!(handle manager => m; args [text webhook_id]; {
        m.set_webhook_enabled(webhook_id, enabled).map(drop)
    })
}

/// Deletes subscription `webhook_id` and its dead letters. Unknown:
/// `CG_NOT_FOUND`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_delete_webhook(manager: *const cg_manager, webhook_id: *const c_char) -> cg_status {
    ffi_fn!(handle manager => m; args [text webhook_id]; { m.delete_webhook(webhook_id) })
}

/// Replaces subscription `webhook_id`'s signing secret at once: deliveries
/// from now on are signed with the new one. Unknown: `CG_NOT_FOUND`; a
/// `callback:` consumer (no secret), or no `CREDITGATE_WEBHOOK_KEY`:
/// `CG_INVALID_ARGUMENT`.
///
/// `secret_out`: as `cg_create_webhook`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_rotate_webhook_secret(
    manager: *const cg_manager,
    webhook_id: *const c_char,
    secret_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [secret_out]; args [text webhook_id]; {
        let secret = m.rotate_webhook_secret(webhook_id)?;
        secret_out.write(ffi::string_into_raw(secret.expose().to_string())?);
        Ok(())
    })
}

/// Dead letters (events given up on after `max_attempts` attempts) of
/// subscription `webhook_id` (NULL: of every one), oldest first, as a JSON
/// array of objects: `subscription_id`, `event_id`, `kind`, `attempts`,
/// `last_error`, `dead_at`, `requeued` (replayed, waiting for its attempt).
/// `limit`: 1..=`CG_MAX_EVENTS_PER_PAGE`, or 0 for
/// `CG_DEFAULT_EVENTS_LIMIT`. Unknown `webhook_id`: `CG_NOT_FOUND`.
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_webhook_dead_letters_json(
    manager: *const cg_manager,
    webhook_id: *const c_char,
    limit: i64,
    json_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; args [opt_text webhook_id]; {
        let limit = page_limit(limit, CG_DEFAULT_EVENTS_LIMIT, CG_MAX_EVENTS_PER_PAGE)?;
        write_json(json_out, json::dead_letters(&m.webhook_dead_letters(webhook_id, limit)?))
    })
}

/// Queues dead letters of subscription `webhook_id` for one more attempt
/// each, at the start of its next turn: the one of event `event_id`, or
/// every one (`event_id` 0). An event that is not one of its dead letters
/// is skipped (0 replayed). Unknown `webhook_id`: `CG_NOT_FOUND`.
///
/// `replayed_out`: required; how many were queued, 0 on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_replay_dead_letters(
    manager: *const cg_manager,
    webhook_id: *const c_char,
    event_id: i64,
    replayed_out: *mut i64,
) -> cg_status {
    ffi_fn!(handle manager => m; out [replayed_out]; args [text webhook_id]; {
        let ids = [event_id];
        let n = m.replay_dead_letters(webhook_id, (event_id != 0).then_some(&ids[..]))?;
        replayed_out.write(i64::try_from(n).unwrap_or(i64::MAX));
        Ok(())
    })
}

/// One delivery pass over the enabled HTTP subscriptions: each not leased
/// by another worker (of any process) and not waiting for its backoff gets
/// one turn, its events POSTed one at a time in commit order, signed
/// (Standard Webhooks: `webhook-id`, `webhook-timestamp`,
/// `webhook-signature`); a failure stops its turn and is retried with
/// backoff, and after `max_attempts` the event is dead-lettered. Blocks
/// while it sends (each request bounded by `timeout_ms`); call it in a loop
/// from a thread of its own. `options`: optional (NULL: every default), see
/// `cg_delivery_options`. Without `CREDITGATE_WEBHOOK_KEY`:
/// `CG_INVALID_ARGUMENT`.
///
/// `report_out`: required; what the pass did (zeroed on failure).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_deliver_webhooks(
    manager: *const cg_manager,
    options: *const cg_delivery_options,
    report_out: *mut cg_delivery_report,
) -> cg_status {
    ffi_fn!(handle manager => m; out [report_out]; args [delivery_options options]; {
        let report = m.deliver_webhooks(&core_options(&options))?;
        report_out.write(cg_delivery_report::of(&report));
        Ok(())
    })
}

/// Checks a webhook delivery as its receiver: the `webhook-timestamp` within
/// `tolerance_seconds` (0: `CG_DEFAULT_WEBHOOK_TOLERANCE_SECONDS`) of
/// `now_micros` (microseconds since the Unix epoch, UTC; 0: now), and a
/// `webhook-signature` of this exact payload under `secret` (`whsec_...`),
/// compared in constant time. Any failed check is `CG_INVALID_ARGUMENT`,
/// its message saying which: missing header, bad secret, timestamp too old
/// or too new, signature mismatch, body not JSON. Needs no handle.
///
/// `json_out`: required; receives the verified body (the event's JSON:
/// `id`, `type`, `timestamp`, `user_id`, `api_key_id`, `data`), a string
/// owned by the caller (free it with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_verify_webhook(
    request: *const cg_webhook_request,
    secret: *const c_char,
    tolerance_seconds: u32,
    now_micros: i64,
    json_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(status; out [json_out]; args [webhook_request request, text secret]; {
        let headers: Vec<(&str, &str)> = [
            ("webhook-id", request.webhook_id),
            ("webhook-timestamp", request.webhook_timestamp),
            ("webhook-signature", request.webhook_signature),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
        .collect();
        let tolerance = if tolerance_seconds == 0 { CG_DEFAULT_WEBHOOK_TOLERANCE_SECONDS } else { tolerance_seconds };
        let now = if now_micros == 0 { Timestamp::now() } else { Timestamp(now_micros) };
        write_json(json_out, verify_webhook(request.payload, &headers, secret, now, tolerance)?)
    })
}

/// Event kinds from a comma-separated list; NULL or "" is every kind.
fn event_kinds(list: Option<&str>) -> Result<Vec<EventKind>> {
    match list {
        None | Some("") => Ok(Vec::new()),
        Some(list) => list.split(',').map(|k| k.trim().parse()).collect(),
    }
}

/// The core's options of a `cg_delivery_options`: each 0 is its default.
/// The ranges are checked by the core.
fn core_options(o: &cg_delivery_options) -> DeliveryOptions {
    fn or<T: Copy + Default + PartialEq>(v: T, default: T) -> T {
        if v == T::default() { default } else { v }
    }
    let d = DeliveryOptions::default();
    DeliveryOptions {
        timeout_ms: or(o.timeout_ms, d.timeout_ms),
        max_attempts: or(o.max_attempts, d.max_attempts),
        backoff_base_ms: or(o.backoff_base_ms, d.backoff_base_ms),
        backoff_max_ms: or(o.backoff_max_ms, d.backoff_max_ms),
        batch_size: or(o.batch_size, d.batch_size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_lists_parse() {
        assert_eq!(event_kinds(None).unwrap(), vec![]);
        assert_eq!(event_kinds(Some("")).unwrap(), vec![]);
        assert_eq!(
            event_kinds(Some(" balance.low , topup.requested")).unwrap(),
            vec![EventKind::BalanceLow, EventKind::TopupRequested]
        );
        for bad in ["balance.low,", ",balance.low", "Balance.Low", "nope"] {
            let e = event_kinds(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("balance.low, purchase.first"), "{bad}: {e}");
        }
    }

    #[test]
    fn zero_options_are_the_defaults() {
        let zero = cg_delivery_options {
            timeout_ms: 0,
            max_attempts: 0,
            backoff_base_ms: 0,
            backoff_max_ms: 0,
            batch_size: 0,
        };
        assert_eq!(core_options(&zero), DeliveryOptions::default());
        let given = cg_delivery_options {
            timeout_ms: 1,
            max_attempts: 2,
            backoff_base_ms: 3,
            backoff_max_ms: 4,
            batch_size: 5,
        };
        let o = core_options(&given);
        assert_eq!((o.timeout_ms, o.max_attempts, o.backoff_base_ms, o.backoff_max_ms, o.batch_size), (1, 2, 3, 4, 5));
    }

    #[test]
    fn page_limits() {
        assert_eq!(page_limit(0, 100, 1000).unwrap(), 100);
        assert_eq!(page_limit(1000, 100, 1000).unwrap(), 1000);
        for bad in [-1, 1001, i64::MAX, i64::MIN, 1 << 32] {
            assert!(page_limit(bad, 100, 1000).unwrap_err().to_string().contains("limit must be in 1..=1000"));
        }
    }
}
