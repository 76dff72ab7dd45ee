//! Usage: prices, and the charge of a call's tokens (`record_usage`), which
//! settlements share.

use super::posting::Draft;
use super::rate::rate_window;
use super::{CreditManager, conflict, replayed};
use crate::error::{Error, Result};
use crate::metrics::Counter;
use crate::money::Credits;
use crate::pricing::{PriceVersion, Tokens};
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
/// `input_tokens` is the whole prompt, the cache's reads and writes
/// included (as OpenAI's `prompt_tokens`; docs/pricing.md).
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage<'a> {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub model: Option<&'a str>,
    /// Of `input_tokens`, those read from the provider's cache.
    pub cached_input_tokens: i64,
    /// Of `input_tokens`, those written to the provider's cache.
    pub cache_write_tokens: i64,
}

impl<'a> Usage<'a> {
    /// `input_tokens` and `output_tokens` of `model`, none of them cached.
    pub fn new(input_tokens: i64, output_tokens: i64, model: Option<&'a str>) -> Usage<'a> {
        Usage { input_tokens, output_tokens, model, ..Usage::default() }
    }

    pub(crate) fn tokens(&self) -> Tokens {
        Tokens {
            input: self.input_tokens,
            output: self.output_tokens,
            cached: self.cached_input_tokens,
            cache_write: self.cache_write_tokens,
        }
    }
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
    /// The tokens and the rates they were priced at; None for a charge of
    /// a given amount.
    pub(super) priced: Option<(Tokens, ModelPrice)>,
    pub(super) model: Option<String>,
    pub(super) amount: Credits,
    pub(super) request_id: Option<String>,
    /// The active hold this charge settles (its amount; 0: none).
    pub(super) frees: Credits,
}

impl CreditManager {
    /// The price of a model without a price version, and of `model: None`.
    pub(super) fn default_price(&self) -> ModelPrice {
        let p = self.inner.config.credits_per_1k_tokens;
        ModelPrice::per_1k(p, p)
    }

    /// The price of `model` in effect at `at`.
    pub(super) fn price_of(&self, tx: &mut dyn Tx, model: Option<&str>, at: Timestamp) -> Result<ModelPrice> {
        match model {
            Some(m) => Ok(tx.price(m, at)?.unwrap_or_else(|| self.default_price())),
            None => Ok(self.default_price()),
        }
    }

    pub(super) fn check_usage(u: &Usage) -> Result<()> {
        u.tokens().validate()?;
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
                let price = self.price_of(tx, usage.model, now)?;
                let charge = Charge {
                    user: k.paying(),
                    member: k.member(),
                    project: k.project.as_deref(),
                    key_id: k.id,
                    priced: Some((usage.tokens(), price)),
                    model: usage.model.map(str::to_string),
                    amount: price.charge(usage.tokens())?,
                    request_id: request_id.map(str::to_string),
                    frees: Credits::ZERO,
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
            // A replay returns the first charge, at the rates it was priced
            // at then, whatever the price is now.
            let tokens = c.priced.map(|(t, _)| t);
            let same = e.kind == EntryKind::Usage
                && e.model == c.model
                && match tokens {
                    Some(t) => entry_tokens(&e) == Some(t),
                    None => e.input_tokens.is_none() && e.amount == c.amount.checked_neg()?,
                };
            return if same { Ok(replayed(e)) } else { Err(conflict(k, &e)) };
        }
        let mut d = Draft::new(c.user, EntryKind::Usage, c.amount.checked_neg()?);
        d.key = key;
        d.api_key_id = Some(c.key_id);
        if let Some((t, price)) = c.priced {
            d.input_tokens = Some(t.input);
            d.output_tokens = Some(t.output);
            d.cached_input_tokens = Some(t.cached);
            d.cache_write_tokens = Some(t.cache_write);
            d.price = Some(price);
        }
        d.model = c.model;
        d.member = c.member.map(str::to_string);
        d.project = c.project.map(str::to_string);
        d.frees = c.frees;
        let tokens = c.priced.map_or(0, |(t, _)| t.input.saturating_add(t.output));
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

    /// Sets `model`'s input and output prices from now on: no cache
    /// prices, no request fee ([`set_model_pricing`](Self::set_model_pricing)
    /// sets every component).
    pub fn set_model_price(&self, model: &str, input_per_1k: Credits, output_per_1k: Credits) -> Result<()> {
        self.set_model_pricing(model, ModelPrice::per_1k(input_per_1k, output_per_1k), None).map(|_| ())
    }

    /// Adds a version of `model`'s price, in effect from `effective_at`
    /// (None: now) until its next version; the history stays. A time before
    /// now is refused: charges already made keep their rates, and holds
    /// already placed settle at the rates they were quoted at. The same
    /// `effective_at` again replaces that (future) version; the price
    /// already in effect at `effective_at` adds no version and returns the
    /// one in effect.
    pub fn set_model_pricing(
        &self,
        model: &str,
        price: ModelPrice,
        effective_at: Option<Timestamp>,
    ) -> Result<PriceVersion> {
        self.track((|| {
            let model = validate::text("model", model)?;
            let price = price.validate()?;
            self.write(|tx| {
                let now = tx.now()?;
                let effective_at = effective_at.unwrap_or(now);
                if effective_at < now {
                    return Err(Error::invalid(format!(
                        "effective_at {} is in the past (now is {}): a price takes effect now or later",
                        effective_at.to_rfc3339(),
                        now.to_rfc3339()
                    )));
                }
                // The price already in effect then: no new version (a host
                // that sets its prices at every start adds none).
                let history = tx.price_history(Some(model))?;
                if let Some(v) = history.into_iter().rev().find(|v| v.effective_at <= effective_at)
                    && v.price == price
                {
                    return Ok(v);
                }
                let v = PriceVersion { model: model.to_string(), price, effective_at, set_at: now };
                tx.set_price(&v)?;
                Ok(v)
            })
        })())
    }

    /// The prices in effect now, by model.
    pub fn list_model_prices(&self) -> Result<BTreeMap<String, ModelPrice>> {
        self.track(self.read(|tx| {
            let now = tx.now()?;
            let mut current = BTreeMap::new();
            // Oldest first: the last version in effect by now wins.
            for v in tx.price_history(None)? {
                if v.effective_at <= now {
                    current.insert(v.model, v.price);
                }
            }
            Ok(current)
        }))
    }

    /// Every version of `model`'s price (every model's when None), by model
    /// and then oldest first, the scheduled ones included.
    pub fn model_price_history(&self, model: Option<&str>) -> Result<Vec<PriceVersion>> {
        self.track((|| {
            let model = validate::opt_text("model", model)?;
            self.read(|tx| tx.price_history(model))
        })())
    }
}

/// A usage entry's token counts, as its charge read them (None without).
pub(super) fn entry_tokens(e: &Entry) -> Option<Tokens> {
    Some(Tokens {
        input: e.input_tokens?,
        output: e.output_tokens?,
        cached: e.cached_input_tokens.unwrap_or(0),
        cache_write: e.cache_write_tokens.unwrap_or(0),
    })
}
