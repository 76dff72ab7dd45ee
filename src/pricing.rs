//! Prices: what a model's tokens and requests cost, and the one rule that
//! turns a call's token counts into a charge (docs/pricing.md).
//!
//! Token counts follow OpenAI's `prompt_tokens`: `input_tokens` is the whole
//! prompt, *including* the tokens read from the provider's cache
//! (`cached_input_tokens`) and written to it (`cache_write_tokens`). A model
//! without cache prices charges those at its input price, so a caller that
//! never reports cache tokens is charged exactly as before.

use crate::error::{Error, Result};
use crate::money::{Credits, MAX_AMOUNT_MICROS};
use crate::types::Timestamp;
use crate::validate;

/// A model's prices: credits per 1,000 tokens of each kind, and a fixed fee
/// per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelPrice {
    /// Prompt tokens neither read from nor written to the cache.
    pub input_per_1k: Credits,
    pub output_per_1k: Credits,
    /// Prompt tokens read from the cache; None: the input price.
    pub cached_input_per_1k: Option<Credits>,
    /// Prompt tokens written to the cache; None: the input price.
    pub cache_write_per_1k: Option<Credits>,
    /// Charged once per request, on top of the tokens (zero: none).
    pub request_fee: Credits,
}

/// A call's token counts, as the charge rule reads them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tokens {
    /// The whole prompt, cache reads and writes included.
    pub input: i64,
    pub output: i64,
    pub cached: i64,
    pub cache_write: i64,
}

impl Tokens {
    /// Checks every count's range and that the cache counts fit in the
    /// prompt they are part of.
    pub(crate) fn validate(self) -> Result<Tokens> {
        validate::tokens("input_tokens", self.input)?;
        validate::tokens("output_tokens", self.output)?;
        validate::tokens("cached_input_tokens", self.cached)?;
        validate::tokens("cache_write_tokens", self.cache_write)?;
        if self.cached + self.cache_write > self.input {
            return Err(Error::invalid(format!(
                "cached_input_tokens ({}) + cache_write_tokens ({}) must not exceed input_tokens ({}): \
                 input_tokens is the whole prompt, cache reads and writes included",
                self.cached, self.cache_write, self.input
            )));
        }
        Ok(self)
    }
}

impl ModelPrice {
    /// Input and output prices only: no cache prices, no fee.
    pub const fn per_1k(input_per_1k: Credits, output_per_1k: Credits) -> ModelPrice {
        ModelPrice {
            input_per_1k,
            output_per_1k,
            cached_input_per_1k: None,
            cache_write_per_1k: None,
            request_fee: Credits::ZERO,
        }
    }

    /// Every rate in [0, 10^12] credits.
    pub(crate) fn validate(self) -> Result<ModelPrice> {
        self.input_per_1k.validate_threshold("input_per_1k")?;
        self.output_per_1k.validate_threshold("output_per_1k")?;
        if let Some(c) = self.cached_input_per_1k {
            c.validate_threshold("cached_input_per_1k")?;
        }
        if let Some(c) = self.cache_write_per_1k {
            c.validate_threshold("cache_write_per_1k")?;
        }
        self.request_fee.validate_threshold("request_fee")?;
        Ok(self)
    }

    fn cached_rate(&self) -> Credits {
        self.cached_input_per_1k.unwrap_or(self.input_per_1k)
    }

    fn cache_write_rate(&self) -> Credits {
        self.cache_write_per_1k.unwrap_or(self.input_per_1k)
    }

    /// The charge of a call, the one rounding rule: every token at its rate,
    /// summed exactly, divided by 1,000 and rounded *up* to the micro-credit
    /// once, plus the request fee.
    pub(crate) fn charge(&self, t: Tokens) -> Result<Credits> {
        let uncached = i128::from(t.input) - i128::from(t.cached) - i128::from(t.cache_write);
        let total = [
            (uncached, self.input_per_1k),
            (i128::from(t.cached), self.cached_rate()),
            (i128::from(t.cache_write), self.cache_write_rate()),
            (i128::from(t.output), self.output_per_1k),
        ]
        .iter()
        .map(|&(n, rate)| n * i128::from(rate.micros()))
        .sum::<i128>();
        let micros = (total + 999).div_euclid(1000) + i128::from(self.request_fee.micros());
        // Below zero only from counts no caller can pass (the audit reads
        // them from the database).
        if !(0..=i128::from(MAX_AMOUNT_MICROS)).contains(&micros) {
            return Err(Error::invalid(format!(
                "usage of {} input + {} output tokens costs more than the largest amount",
                t.input, t.output
            )));
        }
        Ok(Credits::from_micros(micros as i64))
    }

    /// The most a call of `input` prompt tokens and up to `output` output
    /// tokens can be charged, however much of the prompt the cache serves:
    /// the prompt at the highest of its input, cache-read and cache-write
    /// rates, plus the fee. A hold of it covers the settlement.
    pub(crate) fn worst_case(&self, input: i64, output: i64) -> Result<Credits> {
        let rate = self.input_per_1k.max(self.cached_rate()).max(self.cache_write_rate());
        let highest = ModelPrice { input_per_1k: rate, ..*self };
        highest.charge(Tokens { input, output, cached: 0, cache_write: 0 })
    }
}

/// One version of a model's price: in effect from `effective_at` until the
/// next version's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriceVersion {
    pub model: String,
    pub price: ModelPrice,
    pub effective_at: Timestamp,
    /// When it was set.
    pub set_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(m: i64) -> Credits {
        Credits::from_micros(m)
    }

    fn t(input: i64, output: i64, cached: i64, cache_write: i64) -> Tokens {
        Tokens { input, output, cached, cache_write }
    }

    #[test]
    fn every_component_is_charged_and_rounded_up_once() {
        let p = ModelPrice {
            input_per_1k: c(1000),
            output_per_1k: c(3000),
            cached_input_per_1k: Some(c(100)),
            cache_write_per_1k: Some(c(1250)),
            request_fee: c(7),
        };
        // 400 uncached × 1000 + 500 cached × 100 + 100 written × 1250 + 10 out × 3000 = 605,000 → 605 µ + 7.
        assert_eq!(p.charge(t(1000, 10, 500, 100)).unwrap(), c(612));
        // 1 token at 1 µ/1k: 0.001 µ rounds up to 1 µ, once for the whole call.
        let tiny = ModelPrice::per_1k(c(1), c(1));
        assert_eq!(tiny.charge(t(1, 1, 0, 0)).unwrap(), c(1));
        assert_eq!(tiny.charge(t(0, 0, 0, 0)).unwrap(), Credits::ZERO);
        // Without cache prices, cache tokens cost the input price.
        let plain = ModelPrice::per_1k(c(2000), c(4000));
        assert_eq!(plain.charge(t(1000, 0, 600, 300)).unwrap(), plain.charge(t(1000, 0, 0, 0)).unwrap());
        // The fee alone, for a call without tokens.
        assert_eq!(ModelPrice { request_fee: c(5), ..plain }.charge(t(0, 0, 0, 0)).unwrap(), c(5));
    }

    #[test]
    fn the_worst_case_covers_every_split_of_the_prompt() {
        let p = ModelPrice {
            input_per_1k: c(1000),
            output_per_1k: c(3000),
            cached_input_per_1k: Some(c(100)),
            cache_write_per_1k: Some(c(1250)),
            request_fee: c(3),
        };
        let worst = p.worst_case(1000, 50).unwrap();
        assert_eq!(worst, c(1250 + 150 + 3));
        for cached in (0..=1000).step_by(100) {
            for write in (0..=1000 - cached).step_by(100) {
                for out in [0, 25, 50] {
                    assert!(p.charge(t(1000, out, cached, write)).unwrap() <= worst);
                }
            }
        }
    }

    #[test]
    fn counts_are_checked() {
        assert!(t(10, 0, 6, 5).validate().is_err());
        assert!(t(10, 0, 5, 5).validate().is_ok());
        assert!(t(-1, 0, 0, 0).validate().is_err());
        assert!(t(0, 0, -1, 0).validate().is_err());
        let max = crate::limits::MAX_TOKENS_PER_CALL;
        assert!(t(max + 1, 0, 0, 0).validate().is_err());
        let dear = ModelPrice::per_1k(c(MAX_AMOUNT_MICROS), c(MAX_AMOUNT_MICROS));
        assert!(dear.charge(t(max, max, 0, 0)).is_err());
        assert!(ModelPrice { request_fee: c(-1), ..dear }.validate().is_err());
        assert!(ModelPrice { cached_input_per_1k: Some(c(-1)), ..ModelPrice::per_1k(c(1), c(1)) }.validate().is_err());
    }
}
