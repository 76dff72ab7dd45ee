//! JSON shapes of the C ABI (docs/reference.md): the Python field names, amounts as
//! integer micro-credits named `<field>_micros`, counts and `*_usd_minor`
//! under their own names, RFC 3339 UTC timestamps, lowercase UUID strings.

use creditgate_core::{
    Account, Allowance, ApiKeyInfo, AuditReport, AutoTopup, Budget, DeadLetter, Entry, Event, ExpirySweep, Grant,
    Member, MemberUsage, ModelPrice, PriceVersion, Project, Report, Timestamp, Topup, TopupAmount, WebhookSubscription,
    price_json,
};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

fn time(t: Timestamp) -> Value {
    Value::String(t.to_rfc3339())
}

fn opt_time(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, time)
}

pub(crate) fn account(a: &Account) -> Value {
    json!({
        "user_id": a.user_id,
        "balance_micros": a.balance.micros(),
        "held_micros": a.held.micros(),
        "available_micros": a.available.micros(),
        "min_balance_micros": a.min_balance.micros(),
        "lifetime_purchased_micros": a.lifetime_purchased.micros(),
        "lifetime_used_micros": a.lifetime_used.micros(),
        "active_keys": a.active_keys,
        "first_key_issued": a.first_key_issued,
        "created_at": opt_time(a.created_at),
        "grants": a.grants.iter().map(grant).collect::<Vec<_>>(),
        "organisation": a.organisation,
        "auto_topup": a.auto_topup.as_ref().map_or(Value::Null, auto_topup),
        "topups_this_month": topups(&a.topups_this_month),
    })
}

/// A rule: `amount_micros` or `target_micros`, the other null.
fn auto_topup(r: &AutoTopup) -> Value {
    let (amount, target) = match r.amount {
        TopupAmount::Fixed(a) => (Some(a.micros()), None),
        TopupAmount::UpTo(t) => (None, Some(t.micros())),
    };
    json!({
        "threshold_micros": r.threshold.micros(),
        "amount_micros": amount,
        "target_micros": target,
        "max_per_month": r.max_per_month,
        "monthly_cap_micros": r.monthly_cap.micros(),
    })
}

pub(crate) fn topups(ts: &[Topup]) -> Value {
    Value::Array(
        ts.iter()
            .map(|t| {
                json!({
                    "id": t.id,
                    "user_id": t.user_id,
                    "amount_micros": t.amount.micros(),
                    "status": t.status.as_str(),
                    "reason": t.reason,
                    "entry_id": t.entry_id.map(|e| e.to_string()),
                    "created_at": time(t.created_at),
                    "updated_at": time(t.updated_at),
                })
            })
            .collect(),
    )
}

fn grant(g: &Grant) -> Value {
    json!({
        "grant_id": g.grant_id.0,
        "category": g.category.as_str(),
        "priority": g.priority,
        "amount_micros": g.amount.micros(),
        "remaining_micros": g.remaining.micros(),
        "expires_at": opt_time(g.expires_at),
        "created_at": time(g.created_at),
        "source_entry_id": g.source_entry_id.map(|e| e.to_string()),
        "payment_id": g.payment_id,
        "member_id": g.member_id,
        "api_key_id": g.api_key_id.map(|k| k.to_string()),
        "allowance_id": g.allowance_id,
    })
}

pub(crate) fn expiry_sweep(s: &ExpirySweep) -> Value {
    json!({
        "accounts": s.accounts,
        "entries": s.entries,
        "credits_micros": s.credits.micros(),
        "refills": s.refills,
    })
}

pub(crate) fn entry(e: &Entry) -> Value {
    json!({
        "id": e.id.to_string(),
        "seq": e.seq,
        "user_id": e.user_id,
        "kind": e.kind.as_str(),
        "amount_micros": e.amount.micros(),
        "balance_after_micros": e.balance_after.micros(),
        "idempotency_key": e.idempotency_key,
        "reference": e.reference,
        "api_key_id": e.api_key_id.map(|k| k.to_string()),
        "member_id": e.member_id,
        "project": e.project,
        "input_tokens": e.input_tokens,
        "output_tokens": e.output_tokens,
        "cached_input_tokens": e.cached_input_tokens,
        "cache_write_tokens": e.cache_write_tokens,
        "model": e.model,
        "price": e.price.as_ref().map_or(Value::Null, price_json),
        "amount_minor": e.amount_minor,
        "currency": e.currency,
        "metadata": e.metadata.clone().map_or(Value::Null, Value::Object),
        "created_at": time(e.created_at),
        "replayed": e.replayed,
    })
}

pub(crate) fn entries(es: &[Entry]) -> Value {
    Value::Array(es.iter().map(entry).collect())
}

pub(crate) fn events(es: &[Event]) -> Value {
    Value::Array(
        es.iter()
            .map(|e| {
                json!({
                    "id": e.id,
                    "kind": e.kind.as_str(),
                    "user_id": e.user_id,
                    "api_key_id": e.api_key_id.map(|k| k.to_string()),
                    "data": e.data,
                    "created_at": time(e.created_at),
                })
            })
            .collect(),
    )
}

pub(crate) fn api_keys(keys: &[ApiKeyInfo]) -> Value {
    Value::Array(
        keys.iter()
            .map(|k| {
                json!({
                    "key_id": k.key_id.to_string(),
                    "user_id": k.user_id,
                    "name": k.name,
                    "prefix": k.prefix,
                    "created_at": time(k.created_at),
                    "last_used_at": opt_time(k.last_used_at),
                    "revoked_at": opt_time(k.revoked_at),
                    "legacy": k.legacy,
                    "expires_at": opt_time(k.expires_at),
                    "disabled": k.disabled,
                    "rotated_to": k.rotated_to.map(|id| id.to_string()),
                    "spend_limit_micros": k.spend_limit.map(|l| l.micros()),
                    "spend_window": k.spend_window.map(|w| w.as_str()),
                    "spent_in_window_micros": k.spent_in_window.micros(),
                    "window_resets_at": opt_time(k.window_resets_at),
                    "project": k.project,
                })
            })
            .collect(),
    )
}

pub(crate) fn audit(a: &AuditReport) -> Value {
    let mismatches: Vec<Value> =
        a.mismatches.iter().map(|m| json!({"user_id": m.user_id, "problem": m.problem, "detail": m.detail})).collect();
    json!({
        "ok": a.ok,
        "accounts_checked": a.accounts_checked,
        "entries_checked": a.entries_checked,
        "mismatches": mismatches,
    })
}

/// `purchase_conversion_rate` is an exact decimal string (`"0.5"`), as
/// JSON numbers would invite floats.
pub(crate) fn report(r: &Report) -> Value {
    json!({
        "users": r.users,
        "paying_users": r.paying_users,
        "users_attempted_key": r.users_attempted_key,
        "key_generation_attempts": r.key_generation_attempts,
        "key_generation_successes": r.key_generation_successes,
        "purchase_conversion_rate": r.purchase_conversion_rate(),
        "credits_purchased_micros": r.credits_purchased.micros(),
        "revenue_usd_minor": r.revenue_usd_minor,
        "revenue_per_paying_user_usd_minor": r.revenue_per_paying_user_usd_minor,
        "revenue_minor_by_currency": r.revenue_minor_by_currency,
        "credits_used_micros": r.credits_used.micros(),
        "outstanding_balance_micros": r.outstanding_balance.micros(),
        "outstanding_holds_micros": r.outstanding_holds.micros(),
        "overdraft_receivable_micros": r.overdraft_receivable.micros(),
        "allowance_issued_micros": r.allowance_issued.micros(),
        "allowance_used_micros": r.allowance_used.micros(),
        "schema_version": r.schema_version,
        "library_schema_version": r.library_schema_version,
    })
}

pub(crate) fn metrics(counters: &[(&'static str, u64)]) -> Value {
    Value::Object(counters.iter().map(|&(name, v)| (name.to_string(), Value::from(v))).collect::<Map<_, _>>())
}

/// Model -> price, in the core's price shape (`creditgate::price_json`).
pub(crate) fn model_prices(prices: &BTreeMap<String, ModelPrice>) -> Value {
    Value::Object(prices.iter().map(|(model, p)| (model.clone(), price_json(p))).collect::<Map<_, _>>())
}

pub(crate) fn price_versions(vs: &[PriceVersion]) -> Value {
    Value::Array(
        vs.iter()
            .map(|v| {
                json!({
                    "model": v.model,
                    "price": price_json(&v.price),
                    "effective_at": time(v.effective_at),
                    "set_at": time(v.set_at),
                })
            })
            .collect(),
    )
}

fn budget(b: &Option<Budget>) -> Value {
    let Some(b) = b else { return Value::Null };
    json!({
        "scope": b.scope,
        "name": b.name,
        "limit_micros": b.limit.micros(),
        "window": b.window.as_str(),
        "low_threshold_micros": b.low_threshold.map(|t| t.micros()),
        "spent_micros": b.spent.micros(),
        "remaining_micros": b.remaining.micros(),
        "resets_at": opt_time(b.resets_at),
    })
}

pub(crate) fn members(ms: &[Member]) -> Value {
    Value::Array(
        ms.iter()
            .map(|m| {
                json!({
                    "org_id": m.org_id,
                    "user_id": m.user_id,
                    "joined_at": time(m.joined_at),
                    "budget": budget(&m.budget),
                })
            })
            .collect(),
    )
}

pub(crate) fn projects(ps: &[Project]) -> Value {
    Value::Array(
        ps.iter()
            .map(|p| {
                json!({
                    "org_id": p.org_id,
                    "name": p.name,
                    "created_at": time(p.created_at),
                    "keys": p.keys,
                    "budget": budget(&p.budget),
                })
            })
            .collect(),
    )
}

pub(crate) fn member_usage(us: &[MemberUsage]) -> Value {
    Value::Array(
        us.iter()
            .map(|u| {
                json!({
                    "member_id": u.member_id,
                    "requests": u.requests,
                    "tokens": u.tokens,
                    "credits_micros": u.credits.micros(),
                })
            })
            .collect(),
    )
}

pub(crate) fn allowances(als: &[Allowance]) -> Value {
    Value::Array(
        als.iter()
            .map(|a| {
                json!({
                    "allowance_id": a.allowance_id,
                    "user_id": a.user_id,
                    "member_id": a.member_id,
                    "api_key_id": a.api_key_id.map(|k| k.to_string()),
                    "amount_micros": a.amount.micros(),
                    "period": a.period.as_str(),
                    "rollover_cap_micros": a.rollover_cap.map(|c| c.micros()),
                    "next_refill_at": time(a.next_refill_at),
                    "created_at": time(a.created_at),
                })
            })
            .collect(),
    )
}

pub(crate) fn webhooks(subs: &[WebhookSubscription]) -> Value {
    Value::Array(
        subs.iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "url": s.url,
                    "kinds": s.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
                    "enabled": s.enabled,
                    "description": s.description,
                    "created_at": time(s.created_at),
                    "delivered": s.delivered,
                    "failed_attempts": s.failed_attempts,
                    "dead_lettered": s.dead_lettered,
                    "pending": s.pending,
                    "lag_seconds": s.lag_seconds,
                    "attempts": s.attempts,
                    "next_attempt_at": opt_time(s.next_attempt_at),
                    "last_error": s.last_error,
                })
            })
            .collect(),
    )
}

pub(crate) fn dead_letters(ds: &[DeadLetter]) -> Value {
    Value::Array(
        ds.iter()
            .map(|d| {
                json!({
                    "subscription_id": d.subscription_id,
                    "event_id": d.event_id,
                    "kind": d.kind.as_str(),
                    "attempts": d.attempts,
                    "last_error": d.last_error,
                    "dead_at": time(d.dead_at),
                    "requeued": d.requeued,
                })
            })
            .collect(),
    )
}
