//! Holds: reserve credits ahead of a call, settle its actual usage once,
//! or release them.

use super::CreditManager;
use super::rate::{counted_request, rate_window};
use super::usage::{Charge, Usage};
use super::verify::{short, verification};
use crate::error::{Error, Result};
use crate::metrics::Counter;
use crate::money::Credits;
use crate::pricing::Tokens;
use crate::store::{HoldRow, HoldStatus, KeyRow, Tx};
use crate::types::*;
use crate::validate;
use std::time::Instant;

/// What a hold reserves.
#[derive(Clone, Copy, Debug)]
pub enum HoldAmount<'a> {
    Credits(Credits),
    /// The worst case of a prompt of this many tokens of `model` (see
    /// `Usage`): shorthand for `Usage` with no output tokens.
    Tokens {
        tokens: i64,
        model: Option<&'a str>,
    },
    /// A call's worst case: the prompt (`input_tokens`) at the highest of
    /// the model's input, cache-read and cache-write rates plus output
    /// tokens (e.g. the request's `max_tokens`) at its output rate, rounded
    /// up once, plus the request fee. The cache counts are not read.
    Usage(Usage<'a>),
}

/// What a settlement charges.
#[derive(Clone, Copy, Debug)]
pub enum Settlement<'a> {
    Credits(Credits),
    /// Tokens; a model of `None` means the hold's model.
    Tokens(Usage<'a>),
}

impl CreditManager {
    /// Holds credits against available (strict), for `ttl_seconds`.
    pub fn reserve(
        &self,
        api_key: &str,
        amount: HoldAmount,
        ttl_seconds: i64,
        request_id: Option<&str>,
    ) -> Result<Hold> {
        let r = (|| {
            check_reserve(amount, ttl_seconds)?;
            let request_id = validate::opt_text("request_id", request_id)?;
            let rate = self.rate_limits_apply()?;
            self.write(|tx| {
                let now = tx.now()?;
                let k = self.usable_key(tx, api_key, now)?;
                let user = k.paying();
                tx.ensure_account(user, now)?;
                self.settle_account(tx, now, user, k.scope())?;
                let expired = tx.expire_holds(user, now)?;
                if let Some(rid) = request_id
                    && let Some(h) = tx.hold_by_request(user, rid)?
                {
                    // Quoted as the first request was: at its hold's rates
                    // when it asks for the same model.
                    let rates = h.price.filter(|_| quoted_model(amount) == h.model.as_deref());
                    let asked = self.quote(tx, amount, h.created_at, rates)?;
                    return replayed_hold(h, rid, asked).map(|h| (h, expired));
                }
                let q = self.quote(tx, amount, now, None)?;
                let row = HoldRow {
                    id: HoldId::new(),
                    user_id: user.to_string(),
                    api_key_id: k.id,
                    amount: q.amount,
                    model: q.model,
                    request_id: request_id.map(str::to_string),
                    status: HoldStatus::Active,
                    expires_at: Timestamp(now.0 + ttl_seconds * 1_000_000),
                    created_at: now,
                    price: q.price,
                };
                self.place_hold(tx, now, &k, &row, rate)?;
                Ok((hold_of(row, false), expired))
            })
        })();
        let r = self.track(r);
        r.map(|(h, expired)| {
            self.inner.metrics.add(Counter::holds_expired_total, expired);
            if !h.replayed {
                self.count(Counter::holds_total);
            }
            h
        })
    }

    /// The key a hold is placed through: it must be usable now.
    fn usable_key(&self, tx: &mut dyn Tx, api_key: &str, now: Timestamp) -> Result<KeyRow> {
        let k = self.find_key(tx, api_key)?;
        if k.revoked_at.is_some() {
            return Err(Error::InvalidApiKey(format!("API key {} is revoked", k.id)));
        }
        if !k.usable(now) {
            // Disabled or expired: the same answer as an unknown key.
            return Err(Error::InvalidApiKey("unknown API key".into()));
        }
        Ok(k)
    }

    /// Inserts a new hold if the account has room for one more and every
    /// limit of the key's standing covers it (the paying account's
    /// available credits, the key's cap, the member's and the project's
    /// budgets: the verify statement's answer), then counts it as a request
    /// against the key's rate limits.
    fn place_hold(&self, tx: &mut dyn Tx, now: Timestamp, k: &KeyRow, row: &HoldRow, rate: bool) -> Result<()> {
        let (user, max) = (row.user_id.as_str(), self.inner.config.max_active_holds_per_user);
        let active = tx.active_holds(user, now)?;
        if active >= max {
            return Err(Error::LimitReached {
                limit: "max_active_holds_per_user",
                detail: format!("user {:?} has {active} active holds, the maximum is {max}", truncate(user)),
            });
        }
        let standing = tx.standing_by_id(k.id, now)?.ok_or_else(|| Error::InvalidApiKey("unknown API key".into()))?;
        let threshold = standing.topup_threshold;
        let v = verification(standing);
        if v.spendable() < row.amount || !tx.insert_hold_if_available(row, now)? {
            return Err(short(row.amount, &v));
        }
        if let Some(t) = threshold {
            let held = (row.amount.checked_neg()?, Credits::ZERO);
            self.topup_if_crossed(tx, now, (user, Some(row.api_key_id)), t, held)?;
        }
        // After the credit check (402 before 429, as for verify) and
        // after the replay check (a replay is not a new request). A
        // refusal rolls the hold back with the rest.
        if rate {
            counted_request(tx.take_requests(row.api_key_id, rate_window(now), 1)?, now)?;
        }
        Ok(())
    }

    /// What a hold holds (see [`hold_price`]) at `rates`, else at the
    /// prices in effect at `at`.
    fn quote(
        &self,
        tx: &mut dyn Tx,
        amount: HoldAmount<'_>,
        at: Timestamp,
        rates: Option<ModelPrice>,
    ) -> Result<Quote> {
        let usage = match amount {
            HoldAmount::Credits(c) => return Ok(Quote { amount: c, model: None, price: None }),
            HoldAmount::Tokens { tokens, model } => Usage::new(tokens, 0, model),
            HoldAmount::Usage(u) => u,
        };
        let price = match rates {
            Some(p) => p,
            None => self.price_of(tx, usage.model, at)?,
        };
        Ok(Quote { amount: hold_price(usage, price)?, model: usage.model.map(str::to_string), price: Some(price) })
    }

    /// Charges a hold's actual usage exactly once and frees it; also after
    /// it expired or was released.
    pub fn settle(&self, hold_id: HoldId, settlement: Settlement) -> Result<UsageCharge> {
        let start = Instant::now();
        let r = (|| {
            match settlement {
                Settlement::Credits(c) => {
                    c.validate_threshold("credits")?;
                }
                Settlement::Tokens(u) => Self::check_usage(&u)?,
            }
            let rate = self.rate_limits_apply()?;
            self.write(|tx| {
                let now = tx.now()?;
                let h = tx.hold(hold_id)?.ok_or_else(|| Error::NotFound(format!("no hold {hold_id}")))?;
                tx.ensure_account(&h.user_id, now)?;
                let expired = tx.expire_holds(&h.user_id, now)?;
                let h = tx.hold(hold_id)?.ok_or_else(|| Error::NotFound(format!("no hold {hold_id}")))?;
                let key = tx.key_by_id(h.api_key_id)?;
                let owner = key.as_ref().map(|k| k.user_id.as_str());
                let project = key.as_ref().filter(|k| k.paying() == h.user_id).and_then(|k| k.project.as_deref());
                let model = settlement_model(settlement, h.model.as_deref());
                // A credit settlement is priced already: no price lookup.
                // Tokens of the hold's model are charged at the rates the
                // hold was quoted at; of another model (or of a hold of
                // credits), at its version in effect at the reserve.
                let price = match (settlement, h.price) {
                    (Settlement::Credits(_), _) => self.default_price(),
                    (Settlement::Tokens(_), Some(quoted)) if model == h.model => quoted,
                    (Settlement::Tokens(_), _) => self.price_of(tx, model.as_deref(), h.created_at)?,
                };
                let plan = plan_settlement(settlement, price)?;
                let charge = Charge {
                    user: &h.user_id,
                    member: owner.filter(|o| *o != h.user_id),
                    project,
                    key_id: h.api_key_id,
                    priced: plan.tokens.map(|t| (t, price)),
                    model,
                    amount: plan.amount,
                    request_id: Some(h.request_id.clone().unwrap_or_else(|| h.id.to_string())),
                    frees: if h.status == HoldStatus::Active { h.amount } else { Credits::ZERO },
                };
                let entry = self.charge(tx, now, charge, rate)?;
                let settled_now = h.status != HoldStatus::Settled;
                if settled_now && !tx.set_hold_status(h.id, h.status, HoldStatus::Settled, Some(entry.id))? {
                    return Err(Error::Internal(format!("hold {hold_id} changed status during settle")));
                }
                Ok((entry, expired, settled_now))
            })
        })();
        self.inner.metrics.charge_seconds.observe(start.elapsed());
        // finish_charge counts the error, if any.
        let r = r.map(|(entry, expired, settled_now)| {
            self.inner.metrics.add(Counter::holds_expired_total, expired);
            if settled_now {
                self.count(Counter::holds_settled_total);
            }
            entry
        });
        self.finish_charge(r)
    }

    /// Frees an active hold without charging; a no-op when already finished.
    pub fn release(&self, hold_id: HoldId) -> Result<()> {
        let r = self.write(|tx| {
            let now = tx.now()?;
            let h = tx.hold(hold_id)?.ok_or_else(|| Error::NotFound(format!("no hold {hold_id}")))?;
            tx.ensure_account(&h.user_id, now)?;
            let expired = tx.expire_holds(&h.user_id, now)?;
            let released = tx.set_hold_status(hold_id, HoldStatus::Active, HoldStatus::Released, None)?;
            Ok((expired, released))
        });
        self.track(r).map(|(expired, released)| {
            self.inner.metrics.add(Counter::holds_expired_total, expired);
            if released {
                self.count(Counter::holds_released_total);
            }
        })
    }
}

/// A hold's amount, the model it priced and the rates it was quoted at.
struct Quote {
    amount: Credits,
    model: Option<String>,
    price: Option<ModelPrice>,
}

fn hold_of(h: HoldRow, replayed: bool) -> Hold {
    Hold { hold_id: h.id, user_id: h.user_id, amount: h.amount, expires_at: h.expires_at, status: h.status, replayed }
}

/// Checks a hold's arguments before any transaction.
fn check_reserve(amount: HoldAmount, ttl_seconds: i64) -> Result<()> {
    if !(1..=validate::MAX_TTL_SECONDS).contains(&ttl_seconds) {
        return Err(Error::invalid(format!(
            "ttl_seconds must be in 1..={}, got {ttl_seconds}",
            validate::MAX_TTL_SECONDS
        )));
    }
    match amount {
        HoldAmount::Credits(c) => {
            c.validate_positive("credits")?;
        }
        HoldAmount::Tokens { tokens, model } => {
            validate::tokens("tokens", tokens)?;
            validate::opt_text("model", model)?;
        }
        HoldAmount::Usage(u) => CreditManager::check_usage(&u)?,
    }
    Ok(())
}

/// A hold request replayed with its request id: the same hold if it holds
/// the same amount, else `IdempotencyConflict`.
fn replayed_hold(h: HoldRow, request_id: &str, asked: Quote) -> Result<Hold> {
    // Amounts only: a gateway's retry may fall back to another model of
    // the same quote (LiteLLM's fallbacks keep the call id).
    if h.amount == asked.amount {
        return Ok(hold_of(h, true));
    }
    Err(Error::IdempotencyConflict(format!(
        "request_id {:?} already holds {} of {:?} (asked {} of {:?})",
        truncate(request_id),
        h.amount,
        h.model.as_deref().unwrap_or("no model"),
        asked.amount,
        asked.model.as_deref().unwrap_or("no model"),
    )))
}

/// The model a hold request prices (None for credits).
fn quoted_model<'a>(amount: HoldAmount<'a>) -> Option<&'a str> {
    match amount {
        HoldAmount::Credits(_) => None,
        HoldAmount::Tokens { model, .. } => model,
        HoldAmount::Usage(u) => u.model,
    }
}

/// What a hold of `usage` at `price` holds: its worst case
/// ([`ModelPrice::worst_case`], so it covers the settlement however much of
/// the prompt the cache serves), and at least one micro-credit. Pure.
pub(super) fn hold_price(usage: Usage, price: ModelPrice) -> Result<Credits> {
    Ok(price.worst_case(usage.input_tokens, usage.output_tokens)?.max(Credits::from_micros(1)))
}

/// The model a settlement's charge records: a token settlement's own, else
/// the hold's.
pub(super) fn settlement_model(s: Settlement, hold_model: Option<&str>) -> Option<String> {
    match s {
        Settlement::Tokens(u) => u.model.or(hold_model),
        Settlement::Credits(_) => hold_model,
    }
    .map(str::to_string)
}

/// The charge a settlement plans: its credits as given, or its tokens at
/// `price` (the price of [`settlement_model`]) by the charge's formula.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SettlePlan {
    pub(super) amount: Credits,
    /// The tokens charged; None for a settlement of credits.
    pub(super) tokens: Option<Tokens>,
}

/// Plans a settlement's charge. Pure: `price` is looked up by the caller.
pub(super) fn plan_settlement(s: Settlement, price: ModelPrice) -> Result<SettlePlan> {
    Ok(match s {
        Settlement::Credits(amount) => SettlePlan { amount, tokens: None },
        Settlement::Tokens(u) => SettlePlan { amount: price.charge(u.tokens())?, tokens: Some(u.tokens()) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn price(input: i64, output: i64) -> ModelPrice {
        ModelPrice::per_1k(Credits::from_micros(input), Credits::from_micros(output))
    }

    fn usage(input_tokens: i64, output_tokens: i64) -> Usage<'static> {
        Usage::new(input_tokens, output_tokens, None)
    }

    #[test]
    fn a_hold_is_its_charge_rounded_up_and_at_least_one_micro() {
        // (1 × 1000 + 2 × 3000) / 1000 = 7 exactly; (1 × 1 + 0) / 1000 rounds up to 1.
        assert_eq!(hold_price(usage(1, 2), price(1000, 3000)).unwrap(), Credits::from_micros(7));
        assert_eq!(hold_price(usage(1, 0), price(1, 1)).unwrap(), Credits::from_micros(1));
        // Zero tokens or a free model still hold one micro-credit.
        assert_eq!(hold_price(usage(0, 0), price(1000, 1000)).unwrap(), Credits::from_micros(1));
        assert_eq!(hold_price(usage(500, 500), price(0, 0)).unwrap(), Credits::from_micros(1));
        let plan = plan_settlement(Settlement::Tokens(usage(1, 2)), price(1000, 3000)).unwrap();
        assert_eq!(plan.amount, hold_price(usage(1, 2), price(1000, 3000)).unwrap());
    }

    #[test]
    fn settlements_charge_credits_as_given_and_tokens_by_the_formula() {
        let c = plan_settlement(Settlement::Credits(Credits::from_micros(42)), price(1, 1)).unwrap();
        assert_eq!(c, SettlePlan { amount: Credits::from_micros(42), tokens: None });
        let t = plan_settlement(Settlement::Tokens(usage(1500, 10)), price(2000, 1000)).unwrap();
        assert_eq!(t, SettlePlan { amount: Credits::from_micros(3010), tokens: Some(usage(1500, 10).tokens()) });
        // Zero tokens settle for nothing (unlike a hold).
        assert_eq!(plan_settlement(Settlement::Tokens(usage(0, 0)), price(5, 5)).unwrap().amount, Credits::ZERO);
    }

    #[test]
    fn the_settlement_model_is_its_own_else_the_holds() {
        let own = Usage { model: Some("big"), ..usage(1, 1) };
        assert_eq!(settlement_model(Settlement::Tokens(own), Some("small")).as_deref(), Some("big"));
        assert_eq!(settlement_model(Settlement::Tokens(usage(1, 1)), Some("small")).as_deref(), Some("small"));
        assert_eq!(settlement_model(Settlement::Credits(Credits::ZERO), Some("small")).as_deref(), Some("small"));
        assert_eq!(settlement_model(Settlement::Tokens(usage(1, 1)), None), None);
    }

    #[test]
    fn prices_past_the_largest_amount_are_refused_not_wrapped() {
        let max = crate::money::MAX_AMOUNT_MICROS;
        let e = hold_price(usage(i64::MAX, i64::MAX), price(max, max)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        let e = plan_settlement(Settlement::Tokens(usage(i64::MAX, 0)), price(max, 0)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
    }
}
