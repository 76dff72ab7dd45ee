//! Type conversion between Python values and the core's, and nothing else.
//!
//! In: amounts are `int`, `Decimal` or a decimal `str` (never `float` or
//! `bool`: `TypeError`); integers are `int` only; user ids are `str` or `int`.
//! Out: amounts are `Decimal` built from `Credits`' plain decimal `Display`
//! (never exponent form); timestamps are timezone-aware UTC `datetime`s built
//! from integer microseconds, without floats.

use crate::errors::invalid;
use creditgate::{Credits, Timestamp};
use pyo3::BoundObject;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};
use serde_json::{Map, Number, Value};

static DECIMAL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TIMEDELTA: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static EPOCH: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Decimal places of one micro-credit.
const MICRO_DECIMALS: i64 = 6;
/// Most integer digits an amount can have in range of `i64` micro-credits.
const MAX_WHOLE_DIGITS: i64 = 13;
const MICROS_PER_SECOND: i64 = 1_000_000;
/// Deepest nesting accepted in `metadata` (it is at most 4 KiB anyway).
const MAX_METADATA_DEPTH: usize = 32;

pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

pub fn short_repr(obj: &Bound<'_, PyAny>) -> String {
    let r = obj.repr().map(|r| r.to_string()).unwrap_or_else(|_| "?".into());
    match r.char_indices().nth(64) {
        Some((i, _)) => format!("{}...", &r[..i]),
        None => r,
    }
}

// ----- Python -> core ------------------------------------------------------

/// A `str` as UTF-8. A `str` holding a lone surrogate (`"\ud800"`, e.g. from
/// `os.fsdecode` or `surrogateescape`) has no UTF-8 form: that is a bad value,
/// `InvalidArgument` naming the field, not a `UnicodeEncodeError`.
fn utf8(field: &str, s: &Bound<'_, PyString>) -> PyResult<String> {
    s.to_cow().map(|c| c.into_owned()).map_err(|_| {
        invalid(
            s.py(),
            format!("{field} is not valid UTF-8 (it contains a lone surrogate): {}", short_repr(s.as_any())),
        )
    })
}

/// A `str` argument, extracted by PyO3 and checked by [`Text::get`], so that
/// both a wrong type (`TypeError`) and a string with no UTF-8 form
/// (`InvalidArgument`) are reported with the argument's name.
pub struct Text(Result<String, Bad>);

enum Bad {
    /// The Python type's name.
    Type(String),
    /// A `str` that cannot be encoded to UTF-8: its (shortened) repr.
    Utf8(String),
}

impl<'py> FromPyObject<'_, 'py> for Text {
    type Error = PyErr;

    fn extract(obj: pyo3::Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        let Ok(s) = obj.cast::<PyString>() else { return Ok(Text(Err(Bad::Type(type_name(&obj))))) };
        Ok(Text(s.to_cow().map(|c| c.into_owned()).map_err(|_| Bad::Utf8(short_repr(s.as_any())))))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text(Ok(s.to_owned()))
    }
}

impl Text {
    /// The string, or the error for `field`, showing the bad value.
    pub fn get(self, py: Python<'_>, field: &str) -> PyResult<String> {
        self.check(py, field, true)
    }

    /// As [`Text::get`] for a secret (an API key, a pepper, a URL with a
    /// password): the error never shows the value.
    pub fn secret(self, py: Python<'_>, field: &str) -> PyResult<String> {
        self.check(py, field, false)
    }

    /// An API key to verify or charge: a `str` with no UTF-8 form is a
    /// malformed key (`InvalidApiKey`, 401), like one with a NUL byte.
    pub fn api_key(self, py: Python<'_>, field: &str) -> PyResult<String> {
        match self.0 {
            Err(Bad::Utf8(_)) => Err(crate::errors::to_py(
                py,
                creditgate::Error::InvalidApiKey(
                    "malformed key: not valid UTF-8 (it contains a lone surrogate)".into(),
                ),
            )),
            other => Text(other).secret(py, field),
        }
    }

    fn check(self, py: Python<'_>, field: &str, show: bool) -> PyResult<String> {
        match self.0 {
            Ok(s) => Ok(s),
            Err(Bad::Type(t)) => Err(PyTypeError::new_err(format!("{field} must be a str, not {t}"))),
            Err(Bad::Utf8(r)) => {
                let shown = if show { format!(": {r}") } else { String::new() };
                Err(invalid(py, format!("{field} is not valid UTF-8 (it contains a lone surrogate){shown}")))
            }
        }
    }
}

pub fn opt_text(py: Python<'_>, field: &str, t: Option<Text>) -> PyResult<Option<String>> {
    t.map(|t| t.get(py, field)).transpose()
}

pub fn opt_secret(py: Python<'_>, field: &str, t: Option<Text>) -> PyResult<Option<String>> {
    t.map(|t| t.secret(py, field)).transpose()
}

pub fn opt_api_key(py: Python<'_>, field: &str, t: Option<Text>) -> PyResult<Option<String>> {
    t.map(|t| t.api_key(py, field)).transpose()
}

/// An `int` that is not a `bool`, as `i64`; `InvalidArgument` when out of range.
pub fn int(field: &str, obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    if obj.is_instance_of::<PyBool>() || !obj.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!("{field} must be an int, not {}", type_name(obj))));
    }
    obj.extract::<i64>().map_err(|_| invalid(obj.py(), format!("{field} is out of range: {}", short_repr(obj))))
}

pub fn opt_int(field: &str, obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<i64>> {
    obj.filter(|o| !o.is_none()).map(|o| int(field, o)).transpose()
}

/// An `int` setting or count that must fit in `u32`.
pub fn opt_u32(field: &str, obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u32>> {
    let Some(v) = opt_int(field, obj)? else { return Ok(None) };
    let py = obj.map(|o| o.py()).expect("a value was given");
    u32::try_from(v).map(Some).map_err(|_| invalid(py, format!("{field} is out of range: {v}")))
}

/// An amount of credits: `int`, `Decimal` or decimal `str`.
pub fn amount(field: &str, obj: &Bound<'_, PyAny>) -> PyResult<Credits> {
    let py = obj.py();
    if obj.is_instance_of::<PyFloat>() {
        return Err(PyTypeError::new_err(format!(
            "{field} must be an int, Decimal or str, not float (floats are not exact): {}",
            short_repr(obj)
        )));
    }
    if obj.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!("{field} must be an int, Decimal or str, not bool")));
    }
    if obj.is_instance_of::<PyInt>() {
        let credits = int(field, obj)?;
        return Credits::from_credits(credits).map_err(|_| invalid(py, format!("{field} is out of range: {credits}")));
    }
    if obj.is_instance(DECIMAL.import(py, "decimal", "Decimal")?)? {
        return decimal(field, obj);
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return utf8(field, s)?
            .parse::<Credits>()
            .map_err(|e| crate::errors::to_py(py, crate::errors::named(field, e)));
    }
    Err(PyTypeError::new_err(format!("{field} must be an int, Decimal or str, not {}", type_name(obj))))
}

pub fn opt_amount(field: &str, obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Credits>> {
    obj.filter(|o| !o.is_none()).map(|o| amount(field, o)).transpose()
}

/// A `Decimal`, exactly, from its digits and exponent: never rounded, and
/// never expanded to a huge string (`Decimal("1e999999")` is rejected cheaply).
fn decimal(field: &str, obj: &Bound<'_, PyAny>) -> PyResult<Credits> {
    let py = obj.py();
    let bad = |what: &str| invalid(py, format!("{field} {what}: {}", short_repr(obj)));
    let (sign, digits, exponent): (u8, Vec<u8>, Bound<'_, PyAny>) = obj.call_method0("as_tuple")?.extract()?;
    let Ok(mut exponent) = exponent.extract::<i64>() else {
        return Err(bad("must be a finite number"));
    };
    let first = digits.iter().position(|&d| d != 0);
    let Some(first) = first else { return Ok(Credits::ZERO) };
    let mut significant = &digits[first..];
    while let Some((&0, rest)) = significant.split_last() {
        significant = rest;
        exponent += 1;
    }
    if exponent < -MICRO_DECIMALS {
        return Err(bad("is finer than one micro-credit (at most 6 decimal places)"));
    }
    let len = significant.len() as i64;
    if exponent + len > MAX_WHOLE_DIGITS {
        return Err(bad("is out of range"));
    }
    // At most 13 + 6 digits here, so this i128 cannot overflow.
    let mut micros: i128 = 0;
    for &d in significant {
        micros = micros * 10 + i128::from(d);
    }
    micros *= 10i128.pow((exponent + MICRO_DECIMALS) as u32);
    if sign == 1 {
        micros = -micros;
    }
    i64::try_from(micros).map(Credits::from_micros).map_err(|_| bad("is out of range"))
}

/// A user id: `str`, or an `int` converted with `str()`.
pub fn user_id(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    account_id("user_id", obj)
}

pub fn opt_user_id(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<String>> {
    obj.filter(|o| !o.is_none()).map(user_id).transpose()
}

/// An account's id under another name (`org_id`, `member_id`): as [`user_id`].
pub fn account_id(field: &str, obj: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = obj.cast::<PyString>() {
        return utf8(field, s);
    }
    if obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<PyBool>() {
        return Ok(obj.str()?.to_cow()?.into_owned());
    }
    Err(PyTypeError::new_err(format!("{field} must be a str or int, not {}", type_name(obj))))
}

pub fn opt_account_id(field: &str, obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<String>> {
    obj.filter(|o| !o.is_none()).map(|o| account_id(field, o)).transpose()
}

/// `metadata`: a `dict` of JSON values (str keys; None, bool, int, finite
/// float, str, list, tuple, dict).
pub fn metadata(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Map<String, Value>>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else { return Ok(None) };
    let Ok(dict) = obj.cast::<PyDict>() else {
        return Err(PyTypeError::new_err(format!("metadata must be a dict, not {}", type_name(obj))));
    };
    dict_to_json(dict, 0).map(Some)
}

fn dict_to_json(dict: &Bound<'_, PyDict>, depth: usize) -> PyResult<Map<String, Value>> {
    let mut map = Map::new();
    for (k, v) in dict.iter() {
        let Ok(k) = k.cast::<PyString>() else {
            return Err(PyTypeError::new_err(format!("metadata keys must be str, not {}", type_name(&k))));
        };
        map.insert(utf8("metadata key", k)?, to_json(&v, depth + 1)?);
    }
    Ok(map)
}

fn to_json(obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<Value> {
    let py = obj.py();
    if depth > MAX_METADATA_DEPTH {
        return Err(invalid(py, format!("metadata is nested deeper than {MAX_METADATA_DEPTH} levels")));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(v) = obj.extract::<i64>() {
            return Ok(Value::from(v));
        }
        return obj
            .extract::<u64>()
            .map(Value::from)
            .map_err(|_| invalid(py, format!("metadata integer is out of range: {}", short_repr(obj))));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Number::from_f64(f.value())
            .map(Value::Number)
            .ok_or_else(|| invalid(py, format!("metadata number must be finite: {}", short_repr(obj))));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(utf8("metadata value", s)?));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        return dict_to_json(d, depth).map(Value::Object);
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let items: PyResult<Vec<Value>> = obj.try_iter()?.map(|item| to_json(&item?, depth + 1)).collect();
        return items.map(Value::Array);
    }
    Err(PyTypeError::new_err(format!("metadata values must be JSON values, not {}", type_name(obj))))
}

/// A timezone-aware `datetime` (or `None`) as exact microseconds since the
/// epoch: `datetime - epoch` is a `timedelta` of whole days, seconds and
/// microseconds, so no float is involved. A naive `datetime` is
/// `InvalidArgument` (its zone is unknown); any other type `TypeError`.
pub fn opt_timestamp(field: &str, obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Timestamp>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else { return Ok(None) };
    let py = obj.py();
    let datetime_type = py.import("datetime")?.getattr("datetime")?;
    if !obj.is_instance(&datetime_type)? {
        return Err(PyTypeError::new_err(format!(
            "{field} must be a timezone-aware datetime or None, not {}",
            type_name(obj)
        )));
    }
    if obj.call_method0("utcoffset")?.is_none() {
        return Err(invalid(
            py,
            format!("{field} must be timezone-aware (e.g. tzinfo=timezone.utc), got a naive datetime"),
        ));
    }
    let delta = obj.sub(epoch(py)?.bind(py))?;
    let days: i64 = delta.getattr("days")?.extract()?;
    let seconds: i64 = delta.getattr("seconds")?.extract()?;
    let micros: i64 = delta.getattr("microseconds")?.extract()?;
    let total = i128::from(days) * 86_400 * i128::from(MICROS_PER_SECOND)
        + i128::from(seconds) * i128::from(MICROS_PER_SECOND)
        + i128::from(micros);
    i64::try_from(total)
        .map(|t| Some(Timestamp(t)))
        .map_err(|_| invalid(py, format!("{field} is out of range: {}", short_repr(obj))))
}

/// A required timezone-aware `datetime`, as [`opt_timestamp`] reads it.
pub fn timestamp(field: &str, obj: &Bound<'_, PyAny>) -> PyResult<Timestamp> {
    opt_timestamp(field, Some(obj))?.ok_or_else(|| {
        PyTypeError::new_err(format!("{field} must be a timezone-aware datetime, not {}", type_name(obj)))
    })
}

fn epoch(py: Python<'_>) -> PyResult<&Py<PyAny>> {
    EPOCH.get_or_try_init(py, || {
        let dt = py.import("datetime")?;
        let utc = dt.getattr("timezone")?.getattr("utc")?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("tzinfo", utc)?;
        dt.getattr("datetime")?.call((1970, 1, 1), Some(&kwargs)).map(Bound::unbind)
    })
}

// ----- core -> Python ------------------------------------------------------

/// Any value with a natural Python form (`str`, `int`, `bool`, `None`).
pub fn obj<'py, T: IntoPyObject<'py>>(py: Python<'py>, v: T) -> PyResult<Py<PyAny>> {
    v.into_pyobject(py).map(|b| b.into_any().unbind()).map_err(Into::into)
}

/// `Decimal("5000")`, `Decimal("1.5")`: from the plain decimal `Display`.
pub fn dec(py: Python<'_>, c: Credits) -> PyResult<Py<PyAny>> {
    DECIMAL.import(py, "decimal", "Decimal")?.call1((c.to_string(),)).map(Bound::unbind)
}

/// A decimal string the core computed exactly (e.g. a rate).
pub fn dec_str(py: Python<'_>, s: &str) -> PyResult<Py<PyAny>> {
    DECIMAL.import(py, "decimal", "Decimal")?.call1((s,)).map(Bound::unbind)
}

/// A timezone-aware UTC `datetime`: epoch + integer microseconds.
pub fn datetime(py: Python<'_>, t: Timestamp) -> PyResult<Py<PyAny>> {
    let epoch = epoch(py)?;
    let micros = t.micros();
    let (secs, sub) = (micros.div_euclid(MICROS_PER_SECOND), micros.rem_euclid(MICROS_PER_SECOND));
    let delta = TIMEDELTA.import(py, "datetime", "timedelta")?.call1((0, secs, sub))?;
    epoch.bind(py).add(delta).map(Bound::unbind)
}

pub fn opt_datetime(py: Python<'_>, t: Option<Timestamp>) -> PyResult<Py<PyAny>> {
    match t {
        Some(t) => datetime(py, t),
        None => Ok(py.None()),
    }
}

pub fn json_dict(py: Python<'_>, map: &Map<String, Value>) -> PyResult<Py<PyAny>> {
    let dict = PyDict::new(py);
    for (k, v) in map {
        dict.set_item(k, from_json(py, v)?)?;
    }
    Ok(dict.into_any().unbind())
}

/// Any JSON value as its Python form (`dict`, `list`, `str`, `int`, `float`, `bool`, `None`).
pub fn from_json(py: Python<'_>, v: &Value) -> PyResult<Py<PyAny>> {
    match v {
        Value::Null => Ok(py.None()),
        Value::Bool(b) => obj(py, *b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => obj(py, i),
            (None, Some(u), _) => obj(py, u),
            (None, None, f) => obj(py, f.unwrap_or(f64::NAN)),
        },
        Value::String(s) => obj(py, s.as_str()),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(from_json(py, item)?)?;
            }
            Ok(list.into_any().unbind())
        }
        Value::Object(map) => json_dict(py, map),
    }
}

/// `currency_rates`: a mapping of ISO 4217 code → (credits per major unit as
/// an int, Decimal or decimal str, minor-unit exponent as an int).
pub fn currency_rates(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<(String, String, u8)>>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else { return Ok(None) };
    let py = obj.py();
    let shape = || {
        PyTypeError::new_err(format!(
            "currency_rates must map a currency code to (credits_per_unit, exponent), e.g. {{\"EUR\": (\"1100\", 2)}}, \
             not {}",
            type_name(obj)
        ))
    };
    let items = obj.call_method0("items").map_err(|_| shape())?;
    let mut out = Vec::new();
    for item in items.try_iter()? {
        let (code, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract().map_err(|_| shape())?;
        let Ok(code) = code.cast::<PyString>() else { return Err(shape()) };
        let code = utf8("currency_rates", code)?;
        let (rate, exponent): (Bound<'_, PyAny>, Bound<'_, PyAny>) = value.extract().map_err(|_| shape())?;
        let rate = amount(&format!("currency_rates[{code:?}] credits_per_unit"), &rate)?.to_string();
        let exponent = int("currency_rates exponent", &exponent)?;
        let exponent =
            u8::try_from(exponent).map_err(|_| invalid(py, format!("{code}: exponent is out of range: {exponent}")))?;
        out.push((code, rate, exponent));
    }
    Ok(Some(out))
}
