//! `LocalCreditManager` methods of webhooks (docs/webhooks.md):
//! subscriptions, dead letters, and the delivery passes. The core signs,
//! sends, retries and leases; this file converts arguments and results, and
//! runs a Python handler of `handle_events` with the GIL held only while it
//! runs.

use super::LocalCreditManager;
use crate::convert::{self, Text};
use crate::errors::{invalid, named, to_py};
use crate::types::{DeadLetter, DeliveryReport, Event, WebhookSubscription};
use creditgate::{self as cg, DeliveryOptions, EventKind, limits};
use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyString;
use std::str::FromStr;

/// Most characters of a handler's exception kept as the attempt's error
/// (the core bounds what it stores; this bounds what crosses over).
const MAX_HANDLER_ERROR_CHARS: usize = 500;

/// `events`: a sequence of kind names (None: every kind). A bare `str` is
/// refused: iterating it would give one kind per character.
fn kinds(py: Python<'_>, events: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<EventKind>> {
    let Some(events) = events.filter(|e| !e.is_none()) else { return Ok(Vec::new()) };
    if events.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err("events must be a list of event kinds such as [\"balance.low\"], not a str"));
    }
    let mut out = Vec::new();
    for item in iterate("events", events)? {
        let name: Text = item?.extract()?;
        let name = name.get(py, "events")?;
        out.push(EventKind::from_str(&name).map_err(|e| to_py(py, named("events", e)))?);
        // The core takes each kind once; a longer list is repetition.
        if out.len() > EventKind::ALL.len() * 2 {
            return Err(invalid(py, format!("events lists more than {} kinds", EventKind::ALL.len() * 2)));
        }
    }
    Ok(out)
}

/// `obj`'s items; a `TypeError` naming `field` when it is not iterable.
fn iterate<'py>(field: &str, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, pyo3::types::PyIterator>> {
    obj.try_iter().map_err(|_| PyTypeError::new_err(format!("{field} must be a list, not {}", convert::type_name(obj))))
}

/// A `bool` (not any truthy object: `"no"` is not `False`).
pub(super) fn flag(field: &str, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    obj.cast::<pyo3::types::PyBool>()
        .map(|b| b.is_true())
        .map_err(|_| PyTypeError::new_err(format!("{field} must be a bool, not {}", convert::type_name(obj))))
}

fn opt_u64(field: &str, obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u64>> {
    let Some(v) = convert::opt_int(field, obj)? else { return Ok(None) };
    let py = obj.map(|o| o.py()).expect("a value was given");
    u64::try_from(v).map(Some).map_err(|_| invalid(py, format!("{field} is out of range: {v}")))
}

/// The keyword options of a delivery pass; each missing one is the core's
/// default. The core validates the ranges.
fn options(
    timeout_ms: Option<&Bound<'_, PyAny>>,
    max_attempts: Option<&Bound<'_, PyAny>>,
    backoff_base_ms: Option<&Bound<'_, PyAny>>,
    backoff_max_ms: Option<&Bound<'_, PyAny>>,
    batch_size: Option<&Bound<'_, PyAny>>,
) -> PyResult<DeliveryOptions> {
    let d = DeliveryOptions::default();
    Ok(DeliveryOptions {
        timeout_ms: convert::opt_u32("timeout_ms", timeout_ms)?.unwrap_or(d.timeout_ms),
        max_attempts: convert::opt_u32("max_attempts", max_attempts)?.unwrap_or(d.max_attempts),
        backoff_base_ms: opt_u64("backoff_base_ms", backoff_base_ms)?.unwrap_or(d.backoff_base_ms),
        backoff_max_ms: opt_u64("backoff_max_ms", backoff_max_ms)?.unwrap_or(d.backoff_max_ms),
        batch_size: convert::opt_u32("batch_size", batch_size)?.unwrap_or(d.batch_size),
    })
}

/// A handler's exception as the attempt's error text: `Type: message`, bounded.
fn handler_error(py: Python<'_>, e: &PyErr) -> String {
    let kind = e.get_type(py).name().map(|n| n.to_string()).unwrap_or_else(|_| "Exception".into());
    let text = e.value(py).str().map(|s| s.to_string()).unwrap_or_default();
    let full = if text.is_empty() { kind } else { format!("{kind}: {text}") };
    match full.char_indices().nth(MAX_HANDLER_ERROR_CHARS) {
        Some((i, _)) => format!("{}...", &full[..i]),
        None => full,
    }
}

#[pymethods]
impl LocalCreditManager {
    /// Subscribes `url` to `events` (None: every kind) from now on; returns
    /// the subscription and its signing secret, shown this once.
    #[pyo3(signature = (url, events=None, description=None))]
    fn create_webhook(
        &self,
        py: Python<'_>,
        url: Text,
        events: Option<&Bound<'_, PyAny>>,
        description: Option<Text>,
    ) -> PyResult<(WebhookSubscription, String)> {
        self.counted(py, || {
            let url = url.get(py, "url")?;
            let kinds = kinds(py, events)?;
            let description = convert::opt_text(py, "description", description)?;
            let (sub, secret) = self.run(py, move |m| m.create_webhook(&url, &kinds, description.as_deref()))?;
            Ok((WebhookSubscription::new(py, sub)?, secret.expose().to_owned()))
        })
    }

    fn webhooks(&self, py: Python<'_>) -> PyResult<Vec<WebhookSubscription>> {
        self.counted(py, || {
            let subs = self.run(py, |m| m.webhooks())?;
            WebhookSubscription::list(py, subs)
        })
    }

    fn webhook(&self, py: Python<'_>, webhook_id: Text) -> PyResult<WebhookSubscription> {
        self.counted(py, || {
            let id = webhook_id.get(py, "webhook_id")?;
            let sub = self.run(py, move |m| m.webhook(&id))?;
            WebhookSubscription::new(py, sub)
        })
    }

    fn set_webhook_enabled(
        &self,
        py: Python<'_>,
        webhook_id: Text,
        enabled: &Bound<'_, PyAny>,
    ) -> PyResult<WebhookSubscription> {
        self.counted(py, || {
            let id = webhook_id.get(py, "webhook_id")?;
            let enabled = flag("enabled", enabled)?;
            let sub = self.run(py, move |m| m.set_webhook_enabled(&id, enabled))?;
            WebhookSubscription::new(py, sub)
        })
    }

    fn delete_webhook(&self, py: Python<'_>, webhook_id: Text) -> PyResult<()> {
        self.counted(py, || {
            let id = webhook_id.get(py, "webhook_id")?;
            self.run(py, move |m| m.delete_webhook(&id))
        })
    }

    /// A new signing secret, shown this once.
    fn rotate_webhook_secret(&self, py: Python<'_>, webhook_id: Text) -> PyResult<String> {
        self.counted(py, || {
            let id = webhook_id.get(py, "webhook_id")?;
            let secret = self.run(py, move |m| m.rotate_webhook_secret(&id))?;
            Ok(secret.expose().to_owned())
        })
    }

    #[pyo3(signature = (webhook_id=None, limit=None), text_signature = "($self, webhook_id=None, limit=100)")]
    fn webhook_dead_letters(
        &self,
        py: Python<'_>,
        webhook_id: Option<Text>,
        limit: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<DeadLetter>> {
        self.counted(py, || {
            let id = convert::opt_text(py, "webhook_id", webhook_id)?;
            let limit = convert::opt_u32("limit", limit)?.unwrap_or(limits::DEFAULT_EVENTS_LIMIT);
            let letters = self.run(py, move |m| m.webhook_dead_letters(id.as_deref(), limit))?;
            DeadLetter::list(py, letters)
        })
    }

    /// Queues dead letters (None: all of the subscription's) for one more
    /// attempt; returns how many.
    #[pyo3(signature = (webhook_id, event_ids=None))]
    fn replay_dead_letters(
        &self,
        py: Python<'_>,
        webhook_id: Text,
        event_ids: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        self.counted(py, || {
            let id = webhook_id.get(py, "webhook_id")?;
            let ids = match event_ids.filter(|e| !e.is_none()) {
                None => None,
                Some(list) => {
                    let mut ids = Vec::new();
                    for item in iterate("event_ids", list)? {
                        ids.push(convert::int("event_ids", &item?)?);
                        if ids.len() > limits::MAX_EVENTS_PER_PAGE as usize {
                            let most = limits::MAX_EVENTS_PER_PAGE;
                            return Err(invalid(py, format!("event_ids lists more than {most} events")));
                        }
                    }
                    Some(ids)
                }
            };
            self.run(py, move |m| m.replay_dead_letters(&id, ids.as_deref()))
        })
    }

    /// One delivery pass over the enabled HTTP(S) subscriptions.
    #[pyo3(
        signature = (*, timeout_ms=None, max_attempts=None, backoff_base_ms=None, backoff_max_ms=None, batch_size=None),
        text_signature = "($self, *, timeout_ms=10000, max_attempts=12, backoff_base_ms=10000, \
                          backoff_max_ms=3600000, batch_size=100)"
    )]
    fn deliver_webhooks(
        &self,
        py: Python<'_>,
        timeout_ms: Option<&Bound<'_, PyAny>>,
        max_attempts: Option<&Bound<'_, PyAny>>,
        backoff_base_ms: Option<&Bound<'_, PyAny>>,
        backoff_max_ms: Option<&Bound<'_, PyAny>>,
        batch_size: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<DeliveryReport> {
        self.counted(py, || {
            let opts = options(timeout_ms, max_attempts, backoff_base_ms, backoff_max_ms, batch_size)?;
            let report = self.run(py, move |m| m.deliver_webhooks(&opts))?;
            DeliveryReport::new(py, report)
        })
    }

    /// One pass of consumer `consumer`: `handler(event)` for each new event
    /// of `events`, in commit order; an exception is a failed attempt. An
    /// exception that is not an `Exception` (`KeyboardInterrupt`,
    /// `SystemExit`) also ends the pass and is raised again after it.
    #[pyo3(
        signature = (consumer, handler, *, events=None, timeout_ms=None, max_attempts=None, backoff_base_ms=None,
                     backoff_max_ms=None, batch_size=None),
        text_signature = "($self, consumer, handler, *, events=None, timeout_ms=10000, max_attempts=12, \
                          backoff_base_ms=10000, backoff_max_ms=3600000, batch_size=100)"
    )]
    fn handle_events(
        &self,
        py: Python<'_>,
        consumer: Text,
        handler: Bound<'_, PyAny>,
        events: Option<&Bound<'_, PyAny>>,
        timeout_ms: Option<&Bound<'_, PyAny>>,
        max_attempts: Option<&Bound<'_, PyAny>>,
        backoff_base_ms: Option<&Bound<'_, PyAny>>,
        backoff_max_ms: Option<&Bound<'_, PyAny>>,
        batch_size: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<DeliveryReport> {
        self.counted(py, || {
            let consumer = consumer.get(py, "consumer")?;
            if !handler.is_callable() {
                return Err(PyTypeError::new_err(format!(
                    "handler must be callable, not {}",
                    convert::type_name(&handler)
                )));
            }
            let kinds = kinds(py, events)?;
            let opts = options(timeout_ms, max_attempts, backoff_base_ms, backoff_max_ms, batch_size)?;
            let handler = handler.unbind();
            let mut fatal: Option<PyErr> = None;
            let report = self.run(py, |m| {
                let mut call = |event: &cg::Event| -> Result<(), String> {
                    if fatal.is_some() {
                        return Err("the pass was interrupted".into());
                    }
                    Python::attach(|py| {
                        let result = Event::new(py, event).and_then(|e| handler.bind(py).call1((e,)).map(drop));
                        result.map_err(|e| {
                            let text = handler_error(py, &e);
                            if !e.is_instance_of::<PyException>(py) {
                                fatal = Some(e);
                            }
                            text
                        })
                    })
                };
                m.handle_events(&consumer, &kinds, &opts, &mut call)
            });
            if let Some(e) = fatal {
                return Err(e);
            }
            DeliveryReport::new(py, report?)
        })
    }
}
