//! `LocalCreditManager` methods of API keys: eligibility, creation, lifecycle
//! (expiry, disable, rotate, revoke), spend caps, rate limits, verification.

use super::LocalCreditManager;
use super::args::parse_id;
use crate::convert::{self, Text};
use crate::errors::{invalid, to_py};
use crate::types::{ApiKeyInfo, KeyEligibility, NewApiKey, Verification};
use creditgate::{self as cg, Credits, KeyId, limits};
use pyo3::prelude::*;

/// `verify_api_key_credits` without `min_credits`.
const DEFAULT_MIN_CREDITS: Credits =
    Credits::from_micros(limits::DEFAULT_VERIFY_MIN_CREDITS * limits::MICROS_PER_CREDIT);

#[pymethods]
impl LocalCreditManager {
    /// Per-minute rate limits of a key, shared through the database; None
    /// lifts a limit. Over a limit, verify and reserve raise `RateLimited`.
    #[pyo3(signature = (key_id, *, requests_per_minute=None, tokens_per_minute=None))]
    fn set_rate_limit(
        &self,
        py: Python<'_>,
        key_id: Text,
        requests_per_minute: Option<&Bound<'_, PyAny>>,
        tokens_per_minute: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.counted(py, || {
            let key = parse_id(py, KeyId::parse, "key_id", key_id)?;
            let rpm = convert::opt_u32("requests_per_minute", requests_per_minute)?;
            let tpm = convert::opt_int("tokens_per_minute", tokens_per_minute)?
                .map(|t| u64::try_from(t).map_err(|_| invalid(py, format!("tokens_per_minute is out of range: {t}"))))
                .transpose()?;
            self.run(py, move |m| m.set_rate_limit(key, rpm, tpm))
        })
    }

    fn can_generate_api_key(&self, py: Python<'_>, user_id: &Bound<'_, PyAny>) -> PyResult<KeyEligibility> {
        self.counted(py, || {
            let user = convert::user_id(user_id)?;
            let eligibility = self.run(py, move |m| m.can_generate_api_key(&user))?;
            KeyEligibility::new(py, eligibility)
        })
    }

    #[pyo3(signature = (user_id, name=None, *, expires_at=None))]
    fn create_api_key(
        &self,
        py: Python<'_>,
        user_id: &Bound<'_, PyAny>,
        name: Option<Text>,
        expires_at: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<NewApiKey> {
        self.counted(py, || {
            let user = convert::user_id(user_id)?;
            let name = convert::opt_text(py, "name", name)?;
            let expires_at = convert::opt_timestamp("expires_at", expires_at)?;
            let key = self.run(py, move |m| m.create_api_key_with(&user, name.as_deref(), expires_at))?;
            NewApiKey::new(py, key)
        })
    }

    /// Sets (a datetime) or clears (None) when the key stops verifying; a
    /// time in the past expires it now.
    #[pyo3(signature = (key_id, expires_at, *, user_id=None))]
    fn set_api_key_expiry(
        &self,
        py: Python<'_>,
        key_id: Text,
        expires_at: Option<&Bound<'_, PyAny>>,
        user_id: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.counted(py, || {
            let key_id = parse_id(py, KeyId::parse, "key_id", key_id)?;
            let expires_at = convert::opt_timestamp("expires_at", expires_at)?;
            let user = convert::opt_user_id(user_id)?;
            self.run(py, move |m| m.set_api_key_expiry(key_id, expires_at, user.as_deref()))
        })
    }

    /// Disables a key: it fails verification like an unknown key until enabled.
    #[pyo3(signature = (key_id, *, user_id=None))]
    fn disable_api_key(&self, py: Python<'_>, key_id: Text, user_id: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.counted(py, || {
            let key_id = parse_id(py, KeyId::parse, "key_id", key_id)?;
            let user = convert::opt_user_id(user_id)?;
            self.run(py, move |m| m.disable_api_key(key_id, user.as_deref()))
        })
    }

    /// Enables a disabled key again.
    #[pyo3(signature = (key_id, *, user_id=None))]
    fn enable_api_key(&self, py: Python<'_>, key_id: Text, user_id: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.counted(py, || {
            let key_id = parse_id(py, KeyId::parse, "key_id", key_id)?;
            let user = convert::opt_user_id(user_id)?;
            self.run(py, move |m| m.enable_api_key(key_id, user.as_deref()))
        })
    }

    /// A new secret for the same user and name; the old key keeps working
    /// for `grace_seconds` (0..=30 days).
    #[pyo3(signature = (key_id, grace_seconds, *, user_id=None))]
    fn rotate_api_key(
        &self,
        py: Python<'_>,
        key_id: Text,
        grace_seconds: &Bound<'_, PyAny>,
        user_id: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<NewApiKey> {
        self.counted(py, || {
            let key_id = parse_id(py, KeyId::parse, "key_id", key_id)?;
            let grace = convert::int("grace_seconds", grace_seconds)?;
            let user = convert::opt_user_id(user_id)?;
            let key = self.run(py, move |m| m.rotate_api_key(key_id, grace, user.as_deref()))?;
            NewApiKey::new(py, key)
        })
    }

    /// Caps what the key may spend per window (`daily`, `weekly`,
    /// `monthly`, `lifetime`); `limit=None` removes the cap.
    #[pyo3(signature = (key_id, limit, window, *, user_id=None))]
    fn set_key_limit(
        &self,
        py: Python<'_>,
        key_id: Text,
        limit: Option<&Bound<'_, PyAny>>,
        window: Text,
        user_id: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.counted(py, || {
            let key_id = parse_id(py, KeyId::parse, "key_id", key_id)?;
            let limit = convert::opt_amount("limit", limit)?;
            let window = window.get(py, "window")?;
            let window = cg::SpendWindow::parse(&window).map_err(|e| to_py(py, e))?;
            let user = convert::opt_user_id(user_id)?;
            self.run(py, move |m| m.set_key_limit(key_id, limit, window, user.as_deref()))
        })
    }

    #[pyo3(signature = (user_id, *, secret=None, secret_sha256=None, name=None))]
    fn import_api_key(
        &self,
        py: Python<'_>,
        user_id: &Bound<'_, PyAny>,
        secret: Option<Text>,
        secret_sha256: Option<Text>,
        name: Option<Text>,
    ) -> PyResult<ApiKeyInfo> {
        self.counted(py, || {
            let user = convert::user_id(user_id)?;
            let secret = convert::opt_secret(py, "secret", secret)?;
            let secret_sha256 = convert::opt_secret(py, "secret_sha256", secret_sha256)?;
            let name = convert::opt_text(py, "name", name)?;
            let info = self.run(py, move |m| {
                m.import_api_key(&user, secret.as_deref(), secret_sha256.as_deref(), name.as_deref())
            })?;
            ApiKeyInfo::new(py, info)
        })
    }

    #[pyo3(signature = (key_id, *, user_id=None))]
    fn revoke_api_key(&self, py: Python<'_>, key_id: Text, user_id: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.counted(py, || {
            let key_id = parse_id(py, KeyId::parse, "key_id", key_id)?;
            let user = convert::opt_user_id(user_id)?;
            self.run(py, move |m| m.revoke_api_key(key_id, user.as_deref()))
        })
    }

    fn list_api_keys(&self, py: Python<'_>, user_id: &Bound<'_, PyAny>) -> PyResult<Vec<ApiKeyInfo>> {
        self.counted(py, || {
            let user = convert::user_id(user_id)?;
            let keys = self.run(py, move |m| m.list_api_keys(&user))?;
            keys.into_iter().map(|k| ApiKeyInfo::new(py, k)).collect()
        })
    }

    #[pyo3(signature = (api_key, min_credits=None), text_signature = "($self, api_key, min_credits=1)")]
    fn verify_api_key_credits(
        &self,
        py: Python<'_>,
        api_key: Text,
        min_credits: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Verification> {
        self.counted(py, || {
            let api_key = api_key.api_key(py, "api_key")?;
            let min_credits = convert::opt_amount("min_credits", min_credits)?.unwrap_or(DEFAULT_MIN_CREDITS);
            let v = self.run(py, move |m| m.verify_api_key_credits(&api_key, min_credits))?;
            Ok(Verification::new(v))
        })
    }

    /// Checks the key, not the credits: `InvalidApiKey` for a malformed,
    /// unknown or revoked key, never `InsufficientCredits`.
    fn authenticate_api_key(&self, py: Python<'_>, api_key: Text) -> PyResult<Verification> {
        self.counted(py, || {
            let api_key = api_key.api_key(py, "api_key")?;
            let v = self.run(py, move |m| m.authenticate_api_key(&api_key))?;
            Ok(Verification::new(v))
        })
    }
}
