//! Holds: reserve credits ahead of a call, settle its actual usage once,
//! or release them.

use super::CreditManager;
use super::rate::{counted_request, rate_window};
use super::usage::{Charge, Usage, price_tokens};
use super::verify::short;
use crate::error::{Error, Result};
use crate::metrics::Counter;
use crate::money::Credits;
use crate::store::{HoldRow, HoldStatus, Tx};
use crate::types::*;
use crate::validate;
use std::time::Instant;

/// What a hold reserves.
#[derive(Clone, Copy, Debug)]
pub enum HoldAmount<'a> {
    Credits(Credits),
    /// The price of this many input tokens of `model`: shorthand for
    /// `Usage` with no output tokens.
    Tokens {
        tokens: i64,
        model: Option<&'a str>,
    },
    /// A call's worst case, quoted exactly as its charge will be: input
    /// tokens at the model's input rate plus output tokens (e.g. the
    /// request's `max_tokens`) at its output rate, rounded up once.
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
                HoldAmount::Usage(u) => Self::check_usage(&u)?,
            }
            let request_id = validate::opt_text("request_id", request_id)?;
            let max = self.inner.config.max_active_holds_per_user;
            let rate = self.rate_limits_apply()?;
            self.write(|tx| {
                let now = tx.now()?;
                let k = self.find_key(tx, api_key)?;
                if k.revoked_at.is_some() {
                    return Err(Error::InvalidApiKey(format!("API key {} is revoked", k.id)));
                }
                if !k.usable(now) {
                    // Disabled or expired: the same answer as an unknown key.
                    return Err(Error::InvalidApiKey("unknown API key".into()));
                }
                let user = k.user_id.as_str();
                tx.ensure_account(user, now)?;
                self.expire_due(tx, now, user)?;
                let expired = tx.expire_holds(user, now)?;
                let (held_amount, model) = self.quote(tx, amount)?;
                if let Some(rid) = request_id
                    && let Some(h) = tx.hold_by_request(user, rid)?
                {
                    return if h.amount == held_amount {
                        Ok((hold_of(h, true), expired))
                    } else {
                        Err(Error::IdempotencyConflict(format!(
                            "request_id {:?} already holds {} (asked {held_amount})",
                            truncate(rid),
                            h.amount
                        )))
                    };
                }
                let active = tx.active_holds(user, now)?;
                if active >= max {
                    return Err(Error::LimitReached {
                        limit: "max_active_holds_per_user",
                        detail: format!("user {:?} has {active} active holds, the maximum is {max}", truncate(user)),
                    });
                }
                let row = HoldRow {
                    id: HoldId::new(),
                    user_id: user.to_string(),
                    api_key_id: k.id,
                    amount: held_amount,
                    model,
                    request_id: request_id.map(str::to_string),
                    status: HoldStatus::Active,
                    expires_at: Timestamp(now.0 + ttl_seconds * 1_000_000),
                };
                if !tx.insert_hold_if_available(&row, now)? {
                    let available = tx.available(user, now)?;
                    let key_remaining = match tx.key_by_id(k.id)? {
                        Some(fresh) => tx.key_remaining(&fresh, now)?,
                        None => None,
                    };
                    return Err(short(held_amount, available, key_remaining));
                }
                // After the credit check (402 before 429, as for verify) and
                // after the replay check (a replay is not a new request). A
                // refusal rolls the hold back with the rest.
                if rate {
                    counted_request(tx.take_requests(k.id, rate_window(now), 1)?, now)?;
                }
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

    /// What a hold holds, and the model it prices: tokens are quoted by the
    /// same formula as their charge, and a hold is at least one micro-credit.
    fn quote(&self, tx: &mut dyn Tx, amount: HoldAmount<'_>) -> Result<(Credits, Option<String>)> {
        match amount {
            HoldAmount::Credits(c) => Ok((c, None)),
            HoldAmount::Tokens { tokens, model } => {
                self.quote(tx, HoldAmount::Usage(Usage { input_tokens: tokens, output_tokens: 0, model }))
            }
            HoldAmount::Usage(u) => {
                let p = self.price_of(tx, u.model)?;
                let amount = price_tokens(u.input_tokens, u.output_tokens, p)?.max(Credits::from_micros(1));
                Ok((amount, u.model.map(str::to_string)))
            }
        }
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
                let charge = match settlement {
                    Settlement::Credits(c) => Charge {
                        user: &h.user_id,
                        key_id: h.api_key_id,
                        input_tokens: None,
                        output_tokens: None,
                        model: h.model.clone(),
                        amount: c,
                        request_id: None,
                    },
                    Settlement::Tokens(u) => {
                        let model = u.model.map(str::to_string).or_else(|| h.model.clone());
                        let price = self.price_of(tx, model.as_deref())?;
                        Charge {
                            user: &h.user_id,
                            key_id: h.api_key_id,
                            input_tokens: Some(u.input_tokens),
                            output_tokens: Some(u.output_tokens),
                            amount: price_tokens(u.input_tokens, u.output_tokens, price)?,
                            model,
                            request_id: None,
                        }
                    }
                };
                let request = h.request_id.clone().unwrap_or_else(|| h.id.to_string());
                let entry = self.charge(tx, now, Charge { request_id: Some(request), ..charge }, rate)?;
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

fn hold_of(h: HoldRow, replayed: bool) -> Hold {
    Hold { hold_id: h.id, user_id: h.user_id, amount: h.amount, expires_at: h.expires_at, status: h.status, replayed }
}
