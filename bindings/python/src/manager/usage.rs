//! `LocalCreditManager` methods of usage: charges, holds (reserve, settle,
//! release) and model prices (with their versions).

use super::LocalCreditManager;
use super::args::{opt_id, opt_token_counts, parse_id, token_counts};
use crate::convert::{self, Text, dec};
use crate::errors::invalid;
use crate::types::{Hold, ModelPrice, PriceVersion, UsageCharge};
use creditgate::{self as cg, Credits, HoldAmount, HoldId, KeyId, KeyRef, Settlement, Usage, limits};
use pyo3::prelude::*;
use pyo3::types::PyDict;

#[pymethods]
impl LocalCreditManager {
    #[pyo3(
        signature = (
            api_key=None, *, key_id=None, tokens=None, input_tokens=None, output_tokens=None, model=None,
            request_id=None, cached_input_tokens=None, cache_write_tokens=None,
        ),
        text_signature = "($self, api_key=None, *, key_id=None, tokens=None, input_tokens=None, output_tokens=None, \
                          model=None, request_id=None, cached_input_tokens=0, cache_write_tokens=0)"
    )]
    fn record_usage(
        &self,
        py: Python<'_>,
        api_key: Option<Text>,
        key_id: Option<Text>,
        tokens: Option<&Bound<'_, PyAny>>,
        input_tokens: Option<&Bound<'_, PyAny>>,
        output_tokens: Option<&Bound<'_, PyAny>>,
        model: Option<Text>,
        request_id: Option<Text>,
        cached_input_tokens: Option<&Bound<'_, PyAny>>,
        cache_write_tokens: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<UsageCharge> {
        self.counted(py, || {
            let api_key = convert::opt_api_key(py, "api_key", api_key)?;
            let model = convert::opt_text(py, "model", model)?;
            let request_id = convert::opt_text(py, "request_id", request_id)?;
            let (input_tokens, output_tokens) = token_counts(py, tokens, input_tokens, output_tokens)?;
            let (cached, cache_write) = cache_counts(cached_input_tokens, cache_write_tokens)?;
            let key_id = opt_id(py, KeyId::parse, "key_id", key_id)?;
            if api_key.is_some() == key_id.is_some() {
                return Err(invalid(py, "pass exactly one of api_key and key_id".into()));
            }
            let charge = self.run(py, move |m| {
                let key = match (&api_key, key_id) {
                    (Some(secret), _) => KeyRef::Secret(secret),
                    (None, Some(id)) => KeyRef::Id(id),
                    (None, None) => unreachable!("checked above"),
                };
                let usage = Usage {
                    cached_input_tokens: cached,
                    cache_write_tokens: cache_write,
                    ..Usage::new(input_tokens, output_tokens, model.as_deref())
                };
                m.record_usage(key, usage, request_id.as_deref())
            })?;
            UsageCharge::new(py, charge)
        })
    }

    #[pyo3(
        signature = (
            api_key, *, credits=None, tokens=None, input_tokens=None, output_tokens=None, model=None, ttl_seconds=None,
            request_id=None,
        ),
        text_signature = "($self, api_key, *, credits=None, tokens=None, input_tokens=None, output_tokens=None, \
                          model=None, ttl_seconds=600, request_id=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn reserve(
        &self,
        py: Python<'_>,
        api_key: Text,
        credits: Option<&Bound<'_, PyAny>>,
        tokens: Option<&Bound<'_, PyAny>>,
        input_tokens: Option<&Bound<'_, PyAny>>,
        output_tokens: Option<&Bound<'_, PyAny>>,
        model: Option<Text>,
        ttl_seconds: Option<&Bound<'_, PyAny>>,
        request_id: Option<Text>,
    ) -> PyResult<Hold> {
        self.counted(py, || {
            let api_key = api_key.api_key(py, "api_key")?;
            let model = convert::opt_text(py, "model", model)?;
            let request_id = convert::opt_text(py, "request_id", request_id)?;
            let credits = convert::opt_amount("credits", credits)?;
            // `tokens=` alone keeps its own name in errors (`HoldAmount::Tokens`).
            let only_tokens = tokens.is_some() && input_tokens.is_none() && output_tokens.is_none();
            let counts = opt_token_counts(py, tokens, input_tokens, output_tokens)?;
            let ttl_seconds = convert::opt_int("ttl_seconds", ttl_seconds)?.unwrap_or(limits::DEFAULT_TTL_SECONDS);
            let (credits, (input_tokens, output_tokens)) = match (credits, counts) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(invalid(
                        py,
                        "pass exactly one of credits and token counts (tokens, or input_tokens and/or output_tokens)"
                            .into(),
                    ));
                }
                (Some(_), None) if model.is_some() => {
                    return Err(invalid(py, "model prices tokens: pass it with tokens, not with credits".into()));
                }
                (credits, counts) => (credits, counts.unwrap_or_default()),
            };
            let hold = self.run(py, move |m| {
                let model = model.as_deref();
                let amount = match credits {
                    Some(c) => HoldAmount::Credits(c),
                    None if only_tokens => HoldAmount::Tokens { tokens: input_tokens, model },
                    None => HoldAmount::Usage(Usage::new(input_tokens, output_tokens, model)),
                };
                m.reserve(&api_key, amount, ttl_seconds, request_id.as_deref())
            })?;
            Hold::new(py, hold)
        })
    }

    #[pyo3(
        signature = (
            hold_id, *, credits=None, tokens=None, input_tokens=None, output_tokens=None, model=None,
            cached_input_tokens=None, cache_write_tokens=None,
        ),
        text_signature = "($self, hold_id, *, credits=None, tokens=None, input_tokens=None, output_tokens=None, \
                          model=None, cached_input_tokens=0, cache_write_tokens=0)"
    )]
    fn settle(
        &self,
        py: Python<'_>,
        hold_id: Text,
        credits: Option<&Bound<'_, PyAny>>,
        tokens: Option<&Bound<'_, PyAny>>,
        input_tokens: Option<&Bound<'_, PyAny>>,
        output_tokens: Option<&Bound<'_, PyAny>>,
        model: Option<Text>,
        cached_input_tokens: Option<&Bound<'_, PyAny>>,
        cache_write_tokens: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<UsageCharge> {
        self.counted(py, || {
            let hold_id = parse_id(py, HoldId::parse, "hold_id", hold_id)?;
            let model = convert::opt_text(py, "model", model)?;
            let credits = convert::opt_amount("credits", credits)?;
            let (cached, cache_write) = cache_counts(cached_input_tokens, cache_write_tokens)?;
            // A cache count of 0 is the default (the asyncio manager passes it on).
            let any_tokens = [tokens, input_tokens, output_tokens].iter().any(|t| t.is_some_and(|t| !t.is_none()))
                || cached != 0
                || cache_write != 0;
            if credits.is_some() && (any_tokens || model.is_some()) {
                return Err(invalid(py, "pass credits alone, or token counts (and model), not both".into()));
            }
            let counts = match credits {
                Some(_) => (0, 0),
                None => opt_token_counts(py, tokens, input_tokens, output_tokens)?.ok_or_else(|| {
                    invalid(py, "no usage given: pass credits, or tokens / input_tokens and/or output_tokens".into())
                })?,
            };
            let charge = self.run(py, move |m| {
                let settlement = match credits {
                    Some(c) => Settlement::Credits(c),
                    None => {
                        let (input_tokens, output_tokens) = counts;
                        Settlement::Tokens(Usage {
                            cached_input_tokens: cached,
                            cache_write_tokens: cache_write,
                            ..Usage::new(input_tokens, output_tokens, model.as_deref())
                        })
                    }
                };
                m.settle(hold_id, settlement)
            })?;
            UsageCharge::new(py, charge)
        })
    }

    fn release(&self, py: Python<'_>, hold_id: Text) -> PyResult<()> {
        self.counted(py, || {
            let hold_id = parse_id(py, HoldId::parse, "hold_id", hold_id)?;
            self.run(py, move |m| m.release(hold_id))
        })
    }

    /// Adds a version of `model`'s price, in effect from `effective_at`
    /// (None: now); the history stays.
    #[pyo3(
        signature = (
            model, input_per_1k, output_per_1k, *, cached_input_per_1k=None, cache_write_per_1k=None,
            request_fee=None, effective_at=None,
        ),
        text_signature = "($self, model, input_per_1k, output_per_1k, *, cached_input_per_1k=None, \
                          cache_write_per_1k=None, request_fee=0, effective_at=None)"
    )]
    fn set_model_price(
        &self,
        py: Python<'_>,
        model: Text,
        input_per_1k: &Bound<'_, PyAny>,
        output_per_1k: &Bound<'_, PyAny>,
        cached_input_per_1k: Option<&Bound<'_, PyAny>>,
        cache_write_per_1k: Option<&Bound<'_, PyAny>>,
        request_fee: Option<&Bound<'_, PyAny>>,
        effective_at: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PriceVersion> {
        self.counted(py, || {
            let model = model.get(py, "model")?;
            let price = cg::ModelPrice {
                input_per_1k: convert::amount("input_per_1k", input_per_1k)?,
                output_per_1k: convert::amount("output_per_1k", output_per_1k)?,
                cached_input_per_1k: convert::opt_amount("cached_input_per_1k", cached_input_per_1k)?,
                cache_write_per_1k: convert::opt_amount("cache_write_per_1k", cache_write_per_1k)?,
                request_fee: convert::opt_amount("request_fee", request_fee)?.unwrap_or(Credits::ZERO),
            };
            let effective_at = convert::opt_timestamp("effective_at", effective_at)?;
            let v = self.run(py, move |m| m.set_model_pricing(&model, price, effective_at))?;
            PriceVersion::new(py, v)
        })
    }

    /// `(input_per_1k, output_per_1k)` of each model's price in effect now.
    fn list_model_prices<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.counted(py, || {
            let prices = self.run(py, |m| m.list_model_prices())?;
            let out = PyDict::new(py);
            for (model, p) in prices {
                out.set_item(model, (dec(py, p.input_per_1k)?, dec(py, p.output_per_1k)?))?;
            }
            Ok(out)
        })
    }

    /// Each model's price in effect now, every component.
    fn model_prices<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.counted(py, || {
            let prices = self.run(py, |m| m.list_model_prices())?;
            let out = PyDict::new(py);
            for (model, p) in prices {
                out.set_item(model, ModelPrice::new(py, p)?)?;
            }
            Ok(out)
        })
    }

    /// Every version of `model`'s price (every model's when None), by model
    /// and then oldest first, the scheduled ones included.
    #[pyo3(signature = (model=None))]
    fn price_history(&self, py: Python<'_>, model: Option<Text>) -> PyResult<Vec<PriceVersion>> {
        self.counted(py, || {
            let model = convert::opt_text(py, "model", model)?;
            let versions = self.run(py, move |m| m.model_price_history(model.as_deref()))?;
            PriceVersion::list(py, versions)
        })
    }
}

/// `cached_input_tokens` and `cache_write_tokens`: 0 when not given.
fn cache_counts(cached: Option<&Bound<'_, PyAny>>, cache_write: Option<&Bound<'_, PyAny>>) -> PyResult<(i64, i64)> {
    let cached = convert::opt_int("cached_input_tokens", cached)?.unwrap_or(0);
    let cache_write = convert::opt_int("cache_write_tokens", cache_write)?.unwrap_or(0);
    Ok((cached, cache_write))
}
