//! Usage: prices, and the charge of a call's tokens (`record_usage`), which
//! settlements share.

use super::posting::Draft;
use super::rate::rate_window;
use super::{CreditManager, conflict, replayed};
use crate::error::{Error, Result};
use crate::metrics::Counter;
use crate::money::{Credits, MAX_AMOUNT_MICROS};
use crate::store::{Scope, Tx};
use crate::types::*;
use crate::validate;
use std::collections::BTreeMap;
use std::time::Instant;

/// How a usage charge names its key.
#[derive(Clone, Copy)]
pub enum KeyRef<'a> {
    Secret(&'a str),
    Id(KeyId),
}

impl std::fmt::Debug for KeyRef<'_> {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyRef::Secret(_) => f.write_str("Secret(<redacted>)"),
            KeyRef::Id(id) => f.debug_tuple("Id").field(id).finish(),
        }
    }
}

/// Token counts of one call. `model: None` uses the default price.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage<'a> {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub model: Option<&'a str>,
}

/// A usage charge, planned before it is applied.
pub(super) struct Charge<'a> {
    /// The paying account (`KeyRow::paying`, or a hold's account).
    pub(super) user: &'a str,
    /// The member of the paying organisation it is for.
    pub(super) member: Option<&'a str>,
    /// The project of the key, when the paying organisation owns it.
    pub(super) project: Option<&'a str>,
    pub(super) key_id: KeyId,
    pub(super) input_tokens: Option<i64>,
    pub(super) output_tokens: Option<i64>,
    pub(super) model: Option<String>,
    pub(super) amount: Credits,
    pub(super) request_id: Option<String>,
}

/// charge = ceil((in × in_price + out × out_price) / 1000) micro-credits.
pub(super) fn price_tokens(input: i64, output: i64, p: ModelPrice) -> Result<Credits> {
    let total = i128::from(input) * i128::from(p.input_per_1k.micros())
        + i128::from(output) * i128::from(p.output_per_1k.micros());
    let micros = (total + 999) / 1000;
    if micros > i128::from(MAX_AMOUNT_MICROS) {
        return Err(Error::invalid(format!("usage of {input} + {output} tokens costs more than the largest amount")));
    }
    Ok(Credits::from_micros(micros as i64))
}

impl CreditManager {
    pub(super) fn default_price(&self) -> ModelPrice {
        let p = self.inner.config.credits_per_1k_tokens;
        ModelPrice { input_per_1k: p, output_per_1k: p }
    }

    pub(super) fn price_of(&self, tx: &mut dyn Tx, model: Option<&str>) -> Result<ModelPrice> {
        match model {
            Some(m) => Ok(tx.price(m)?.unwrap_or_else(|| self.default_price())),
            None => Ok(self.default_price()),
        }
    }

    pub(super) fn check_usage(u: &Usage) -> Result<()> {
        validate::tokens("input_tokens", u.input_tokens)?;
        validate::tokens("output_tokens", u.output_tokens)?;
        validate::opt_text("model", u.model)?;
        Ok(())
    }

    /// Charges a call's usage. Never refused for balance: the balance may go
    /// negative (`overdraft`). Idempotent on `request_id`.
    pub fn record_usage(&self, key: KeyRef, usage: Usage, request_id: Option<&str>) -> Result<UsageCharge> {
        let start = Instant::now();
        let r = (|| {
            Self::check_usage(&usage)?;
            let request_id = validate::opt_text("request_id", request_id)?;
            let rate = self.rate_limits_apply()?;
            // A charge locks only its key's account.
            let mut h = std::hash::DefaultHasher::new();
            match key {
                KeyRef::Secret(s) => std::hash::Hash::hash(s, &mut h),
                KeyRef::Id(id) => std::hash::Hash::hash(&id.0, &mut h),
            }
            self.write_on(Some(std::hash::Hasher::finish(&h)), |tx| {
                let now = tx.now()?;
                let k = self.key_ref(tx, key)?;
                let price = self.price_of(tx, usage.model)?;
                let charge = Charge {
                    user: k.paying(),
                    member: k.member(),
                    project: k.project.as_deref(),
                    key_id: k.id,
                    input_tokens: Some(usage.input_tokens),
                    output_tokens: Some(usage.output_tokens),
                    model: usage.model.map(str::to_string),
                    amount: price_tokens(usage.input_tokens, usage.output_tokens, price)?,
                    request_id: request_id.map(str::to_string),
                };
                self.charge(tx, now, charge, rate)
            })
        })();
        self.inner.metrics.charge_seconds.observe(start.elapsed());
        self.finish_charge(r)
    }

    /// Appends a usage entry, or replays the one with the same request id.
    /// With `rate`, the tokens also count towards the key's tokens-per-minute limit.
    pub(super) fn charge(&self, tx: &mut dyn Tx, now: Timestamp, c: Charge, rate: bool) -> Result<Entry> {
        let key = c.request_id.as_ref().map(|r| format!("usage:{r}"));
        let scope = Scope { member: c.member, key: Some(c.key_id) };
        if let Some(k) = &key
            && let Some(e) = tx.lock_and_entry_by_key(c.user, k, scope)?
        {
            let same = e.kind == EntryKind::Usage
                && e.input_tokens == c.input_tokens
                && e.output_tokens == c.output_tokens
                && e.model == c.model
                && (c.input_tokens.is_some() || e.amount == c.amount.checked_neg()?);
            return if same { Ok(replayed(e)) } else { Err(conflict(k, &e)) };
        }
        let mut d = Draft::new(c.user, EntryKind::Usage, c.amount.checked_neg()?);
        d.key = key;
        d.api_key_id = Some(c.key_id);
        d.input_tokens = c.input_tokens;
        d.output_tokens = c.output_tokens;
        d.model = c.model;
        d.member = c.member.map(str::to_string);
        d.project = c.project.map(str::to_string);
        let tokens = c.input_tokens.unwrap_or(0).saturating_add(c.output_tokens.unwrap_or(0));
        let entry = self.append(tx, now, d)?;
        // Read after `append` locked the account: a cap or budget set
        // concurrently either is seen here or (waiting for this commit)
        // seeds from this entry.
        if c.amount > Credits::ZERO
            && let Some(k) = tx.key_by_id(c.key_id)?
        {
            if k.spend_limit.is_some()
                && let Some(window) = k.spend_window
            {
                let (start, end) = window.bounds(now);
                tx.add_key_spend(k.id, start, end, c.amount)?;
            }
            // Budgets count the entry as it records the member and project
            // (`budget_usage_since` reads them the same way), while the
            // organisation that paid still pays for the key.
            if k.paying() == c.user && (entry.member_id.is_some() || entry.project.is_some()) {
                let scope = (entry.member_id.as_deref(), entry.project.as_deref());
                self.count_budgets(tx, now, c.user, scope, c.amount, &entry)?;
            }
        }
        if rate && tokens > 0 {
            tx.add_rate_tokens(c.key_id, rate_window(now), tokens)?;
        }
        Ok(entry)
    }

    pub(super) fn finish_charge(&self, r: Result<Entry>) -> Result<UsageCharge> {
        let e = self.track(r)?;
        let tokens = e.input_tokens.unwrap_or(0) + e.output_tokens.unwrap_or(0);
        let charged = Credits::from_micros(-e.amount.micros());
        let overdraft = e.balance_after.is_negative();
        if !e.replayed {
            let m = &self.inner.metrics;
            m.inc(Counter::usage_charges_total);
            m.add(Counter::tokens_metered_total, tokens as u64);
            m.add(Counter::credits_charged_micros_total, charged.micros() as u64);
            if overdraft {
                m.inc(Counter::usage_overdrafts_total);
            }
        }
        Ok(UsageCharge {
            entry_id: e.id,
            user_id: e.user_id,
            tokens,
            charged,
            balance: e.balance_after,
            overdraft,
            replayed: e.replayed,
        })
    }

    pub fn set_model_price(&self, model: &str, input_per_1k: Credits, output_per_1k: Credits) -> Result<()> {
        self.track((|| {
            let model = validate::text("model", model)?;
            let price = ModelPrice {
                input_per_1k: input_per_1k.validate_threshold("input_per_1k")?,
                output_per_1k: output_per_1k.validate_threshold("output_per_1k")?,
            };
            self.write(|tx| {
                let now = tx.now()?;
                tx.set_price(model, price, now)
            })
        })())
    }

    pub fn list_model_prices(&self) -> Result<BTreeMap<String, ModelPrice>> {
        self.track(self.read(|tx| tx.prices()).map(|v| v.into_iter().collect()))
    }
}
