//! API keys: the credit rule for a new key, create, import, revoke, rotate,
//! expiry, disable/enable, spend caps and listing.

use super::CreditManager;
use crate::error::{Error, ErrorCode, LimitSource, Result};
use crate::events::EventKind;
use crate::keys;
use crate::metrics::Counter;
use crate::money::Credits;
use crate::store::{HashKind, KeyRow, Scope, Tx};
use crate::types::*;
use crate::validate;
use std::collections::HashMap;

impl CreditManager {
    /// The key rule, decided on the paying account: `user`'s organisation
    /// when it is a member of one. Pending allowance refills count.
    fn eligibility(&self, tx: &mut dyn Tx, user: &str, now: Timestamp) -> Result<KeyEligibility> {
        let paying = tx.member_org(user)?.unwrap_or_else(|| user.to_string());
        let pending = self.pending_credits(tx, now, &paying, Some(Scope { member: Some(user), key: None }))?;
        let available = tx.available(&paying, now)?.checked_add(pending)?;
        let is_first_key = !tx.account(&paying)?.is_some_and(|a| a.first_key_issued);
        let required =
            if is_first_key { self.inner.config.min_credits_api_key } else { Credits::from_micros(1_000_000) };
        Ok(KeyEligibility { allowed: available >= required, is_first_key, required, available })
    }

    pub fn can_generate_api_key(&self, user: &str) -> Result<KeyEligibility> {
        let r = validate::text("user_id", user).and_then(|u| {
            self.read(|tx| {
                let now = tx.now()?;
                self.eligibility(tx, u, now)
            })
        });
        if r.is_ok() {
            self.count(Counter::key_eligibility_checks_total);
        }
        self.track(r)
    }

    /// Creates a key when the credit rule allows it, checked in the insert's
    /// transaction. Every call is tallied as an attempt, also when denied.
    pub fn create_api_key(&self, user: &str, name: Option<&str>) -> Result<NewApiKey> {
        self.create_api_key_with(user, name, None)
    }

    /// `create_api_key` with an expiry: the key stops verifying at
    /// `expires_at`, which must be in the future.
    pub fn create_api_key_with(
        &self,
        user: &str,
        name: Option<&str>,
        expires_at: Option<Timestamp>,
    ) -> Result<NewApiKey> {
        self.count(Counter::key_generation_attempts_total);
        let r = (|| {
            let user = validate::text("user_id", user)?;
            let name = validate::opt_text("name", name)?;
            let expires_at = expires_at.map(validate::key_expiry).transpose()?;
            let secret = keys::generate(&self.inner.config.api_key_prefix)?;
            let hash = self.hash(secret.expose());
            let max = self.inner.config.max_active_keys_per_user;
            // The outer Result rolls back; the inner one commits the tally.
            let outcome = self.write(|tx| {
                let now = tx.now()?;
                // The organisation's lock too (the key rule reads its account),
                // in the one order of two locks.
                let org = tx.member_org(user)?;
                match &org {
                    Some(org) => super::orgs::lock_in_order(tx, now, user, org)?,
                    None => tx.ensure_account(user, now)?,
                }
                // Joined or left between the read and the lock: lock the
                // organisation it has now (out of order, but only in that race).
                if let Some(now_org) = tx.member_org(user)?
                    && Some(&now_org) != org.as_ref()
                {
                    tx.ensure_account(&now_org, now)?;
                }
                if let Some(t) = expires_at
                    && t <= now
                {
                    // Err, not Ok(Err): a bad argument rolls back and is not a key attempt.
                    return Err(Error::invalid(format!("expires_at must be in the future, got {t}")));
                }
                let active = tx.active_keys(user, now)?;
                if active >= max {
                    tx.tally_key_attempt(user, now.day(), false)?;
                    return Ok(Err(Error::LimitReached {
                        limit: "max_active_keys_per_user",
                        detail: format!("user {:?} has {active} active keys, the maximum is {max}", truncate(user)),
                    }));
                }
                let e = self.eligibility(tx, user, now)?;
                if !e.allowed {
                    tx.tally_key_attempt(user, now.day(), false)?;
                    return Ok(Err(Error::InsufficientCredits {
                        required: e.required,
                        available: e.available,
                        limit_source: LimitSource::Account,
                    }));
                }
                // Only now, once the key is granted: a refusal commits the
                // attempt's tally and nothing else (`available` above already
                // left out the due grants).
                let paying = tx.member_org(user)?.unwrap_or_else(|| user.to_string());
                self.settle_account(tx, now, &paying, Scope::default())?;
                let prefix = Some(keys::display_prefix(secret.expose(), false));
                let row = KeyRow { expires_at, ..KeyRow::new(user, name, prefix, false, now) };
                tx.insert_key(&row, &hash, HashKind::Peppered)?;
                let data = serde_json::json!({ "name": row.name, "first_key": e.is_first_key });
                self.emit(tx, now, user, Some(row.id), EventKind::KeyCreated, data)?;
                tx.set_first_key_issued(&paying)?;
                tx.tally_key_attempt(user, now.day(), true)?;
                Ok(Ok(row))
            });
            let row = outcome.and_then(|o| o).inspect_err(|e| {
                // A denial is the rule saying no; storage failures are neither.
                if matches!(e.code(), ErrorCode::LimitReached | ErrorCode::InsufficientCredits) {
                    self.count(Counter::key_generation_denied_total);
                }
            })?;
            self.count(Counter::key_generation_success_total);
            Ok(new_key(secret, row))
        })();
        self.track(r)
    }

    /// Registers a key issued before this library, without the credit gate.
    /// Importing the same key for the same user again returns it unchanged.
    pub fn import_api_key(
        &self,
        user: &str,
        secret: Option<&str>,
        secret_sha256: Option<&str>,
        name: Option<&str>,
    ) -> Result<ApiKeyInfo> {
        let r = (|| {
            let user = validate::text("user_id", user)?;
            let name = validate::opt_text("name", name)?;
            let (hash, kind, prefix) = match (secret, secret_sha256) {
                (Some(s), None) => {
                    keys::classify(&self.inner.config.api_key_prefix, s).map_err(|e| match e {
                        Error::InvalidApiKey(m) => Error::invalid(format!("legacy secret rejected: {m}")),
                        other => other,
                    })?;
                    (self.hash(s), HashKind::Peppered, Some(keys::display_prefix(s, true)))
                }
                (None, Some(h)) => {
                    keys::validate_sha256_hex(h)?;
                    (h.to_string(), HashKind::Sha256, None)
                }
                _ => return Err(Error::invalid("import_api_key needs exactly one of secret and secret_sha256")),
            };
            self.write(|tx| {
                let now = tx.now()?;
                if let Some(k) = tx.key_by_hash(&hash, None)? {
                    return if k.user_id == user {
                        Ok((k, now))
                    } else {
                        Err(Error::IdempotencyConflict("this key is already registered to another user".into()))
                    };
                }
                tx.ensure_account(user, now)?;
                let row = KeyRow::new(user, name, prefix.clone(), true, now);
                tx.insert_key(&row, &hash, kind)?;
                Ok((row, now))
            })
            .map(|(row, now)| key_info(row, now))
        })();
        self.track(r)
    }

    /// Revokes at once; with `user`, a key of another user is `NotFound`.
    pub fn revoke_api_key(&self, key_id: KeyId, user: Option<&str>) -> Result<()> {
        let r = (|| {
            let user = validate::opt_text("user_id", user)?;
            self.write(|tx| {
                let now = tx.now()?;
                match tx.key_by_id(key_id)? {
                    Some(k) if user.is_none_or(|u| u == k.user_id) => {
                        if tx.revoke_key(key_id, now)? {
                            // Allowances for a revoked key end; their grants
                            // stay, for the whole account.
                            tx.ensure_account(k.paying(), now)?;
                            tx.end_scoped(k.paying(), (None, Some(key_id)), now)?;
                            self.emit(tx, now, &k.user_id, Some(key_id), EventKind::KeyRevoked, serde_json::json!({}))?;
                        }
                        Ok(())
                    }
                    _ => Err(Error::NotFound(format!("no API key {key_id}"))),
                }
            })
        })();
        self.track(r)
    }

    /// The key `key_id` in a write, locking its account; with `user`, a key
    /// of another user is `NotFound`.
    pub(super) fn owned_key(
        &self,
        tx: &mut dyn Tx,
        key_id: KeyId,
        user: Option<&str>,
        now: Timestamp,
    ) -> Result<KeyRow> {
        match tx.key_by_id(key_id)? {
            Some(k) if user.is_none_or(|u| u == k.user_id) => {
                // The paying account's lock: its charges count the key's cap.
                tx.ensure_account(k.paying(), now)?;
                // Reread under the account lock: what the caller decides on is current.
                let k2 = tx.key_by_id(key_id)?.ok_or_else(|| Error::NotFound(format!("no API key {key_id}")))?;
                if k2.paying() != k.paying() {
                    // The owner joined or left in between: lock the account that pays now.
                    tx.ensure_account(k2.paying(), now)?;
                }
                Ok(k2)
            }
            _ => Err(Error::NotFound(format!("no API key {key_id}"))),
        }
    }

    /// Sets (Some) or clears (None) the time the key stops verifying. A
    /// time in the past expires the key now. With `user`, a key of another
    /// user is `NotFound`.
    pub fn set_api_key_expiry(&self, key_id: KeyId, expires_at: Option<Timestamp>, user: Option<&str>) -> Result<()> {
        let r = (|| {
            let user = validate::opt_text("user_id", user)?;
            let expires_at = expires_at.map(validate::key_expiry).transpose()?;
            self.write(|tx| {
                let now = tx.now()?;
                let k = self.owned_key(tx, key_id, user, now)?;
                tx.set_key_expiry(k.id, expires_at)?;
                let data = serde_json::json!({ "expires_at": expires_at.map(|t| t.to_rfc3339()) });
                self.emit(tx, now, &k.user_id, Some(k.id), EventKind::KeyExpirySet, data)
            })
        })();
        self.track(r)
    }

    /// Disables a key: it then fails verification and holds exactly like an
    /// unknown key, until `enable_api_key`. Usage and settlements through it
    /// are still charged (as for a revoked key). Disabling twice is a no-op.
    pub fn disable_api_key(&self, key_id: KeyId, user: Option<&str>) -> Result<()> {
        self.set_disabled(key_id, true, user)
    }

    /// Enables a disabled key again (a revoked or expired key stays dead).
    /// Enabling an enabled key is a no-op.
    pub fn enable_api_key(&self, key_id: KeyId, user: Option<&str>) -> Result<()> {
        self.set_disabled(key_id, false, user)
    }

    fn set_disabled(&self, key_id: KeyId, disabled: bool, user: Option<&str>) -> Result<()> {
        let r = (|| {
            let user = validate::opt_text("user_id", user)?;
            self.write(|tx| {
                let now = tx.now()?;
                let k = self.owned_key(tx, key_id, user, now)?;
                // Only a change is an event: disabling twice records one.
                if tx.set_key_disabled(k.id, disabled.then_some(now))? {
                    let kind = if disabled { EventKind::KeyDisabled } else { EventKind::KeyEnabled };
                    self.emit(tx, now, &k.user_id, Some(k.id), kind, serde_json::json!({}))?;
                }
                Ok(())
            })
        })();
        self.track(r)
    }

    /// Replaces a usable key with a new secret for the same user and name;
    /// the old key keeps working for `grace_seconds` (0..=30 days; 0 ends it
    /// now) and then fails like an unknown key. The new key inherits the old
    /// one's expiry and spend cap, and the spend already counted in the
    /// current window. Not a key purchase: no credit rule, no
    /// `max_active_keys_per_user` check, not counted as a key generation.
    pub fn rotate_api_key(&self, key_id: KeyId, grace_seconds: i64, user: Option<&str>) -> Result<NewApiKey> {
        let r = (|| {
            let user = validate::opt_text("user_id", user)?;
            if !(0..=validate::MAX_ROTATION_GRACE_SECONDS).contains(&grace_seconds) {
                return Err(Error::invalid(format!(
                    "grace_seconds must be in 0..={}, got {grace_seconds}",
                    validate::MAX_ROTATION_GRACE_SECONDS
                )));
            }
            let secret = keys::generate(&self.inner.config.api_key_prefix)?;
            let hash = self.hash(secret.expose());
            let row = self.write(|tx| {
                let now = tx.now()?;
                let old = self.owned_key(tx, key_id, user, now)?;
                if let Some(to) = old.rotated_to {
                    return Err(Error::invalid(format!("API key {key_id} was already rotated to {to}")));
                }
                if !old.usable(now) {
                    return Err(Error::invalid(format!(
                        "API key {key_id} is revoked, disabled or expired: only a usable key can be rotated"
                    )));
                }
                let prefix = Some(keys::display_prefix(secret.expose(), false));
                let new = KeyRow {
                    expires_at: old.expires_at,
                    spend_limit: old.spend_limit,
                    spend_window: old.spend_window,
                    ..KeyRow::new(&old.user_id, old.name.as_deref(), prefix, false, now)
                };
                tx.insert_key(&new, &hash, HashKind::Peppered)?;
                if old.spend_limit.is_some()
                    && let Some(window) = old.spend_window
                {
                    let (start, end) = window.bounds(now);
                    tx.put_key_spend(new.id, start, end, old.spent_at(now))?;
                }
                let grace_end = Timestamp(now.0.saturating_add(grace_seconds * 1_000_000));
                tx.set_key_rotated(old.id, new.id, grace_end)?;
                let ends = old.expires_at.map_or(grace_end, |t| t.min(grace_end));
                let data = serde_json::json!({
                    "old_key_id": old.id.to_string(), "new_key_id": new.id.to_string(), "grace_ends_at": ends.to_rfc3339(),
                });
                self.emit(tx, now, &old.user_id, Some(old.id), EventKind::KeyRotated, data)?;
                Ok(new)
            })?;
            Ok(new_key(secret, row))
        })();
        self.track(r)
    }

    /// Caps what the key may spend per `window` (UTC calendar periods, or
    /// lifetime): verification and holds through the key need limit − spent
    /// in the window − the key's active holds ≥ the amount, else
    /// `InsufficientCredits` with `limit_source` `key`. Usage is never
    /// refused by the cap but counts. `limit: None` removes the cap. Setting
    /// a cap counts the key's usage already charged in the current window.
    pub fn set_key_limit(
        &self,
        key_id: KeyId,
        limit: Option<Credits>,
        window: SpendWindow,
        user: Option<&str>,
    ) -> Result<()> {
        let r = (|| {
            let user = validate::opt_text("user_id", user)?;
            let limit = limit.map(|l| l.validate_threshold("limit")).transpose()?;
            self.write(|tx| {
                let now = tx.now()?;
                let k = self.owned_key(tx, key_id, user, now)?;
                let spent = match limit {
                    None => {
                        tx.set_key_limit(k.id, None)?;
                        None
                    }
                    Some(limit) => {
                        tx.set_key_limit(k.id, Some((limit, window)))?;
                        // Seed the counter from the ledger: the hot path then only adds.
                        let (start, end) = window.bounds(now);
                        let spent = tx.key_usage_since(k.paying(), k.id, start)?;
                        tx.put_key_spend(k.id, start, end, spent)?;
                        Some(spent)
                    }
                };
                let data = serde_json::json!({
                    "limit": limit.map(|l| l.to_string()),
                    "window": limit.map(|_| window.as_str()),
                    "spent_in_window": spent.map(|s| s.to_string()),
                });
                self.emit(tx, now, &k.user_id, Some(k.id), EventKind::KeyLimitSet, data)
            })
        })();
        self.track(r)
    }

    pub fn list_api_keys(&self, user: &str) -> Result<Vec<ApiKeyInfo>> {
        self.track(validate::text("user_id", user).and_then(|u| {
            let pending: HashMap<KeyId, Timestamp> = self.inner.touched.lock().clone();
            self.read(|tx| Ok((tx.keys(u, validate::MAX_LISTED_KEYS)?, tx.now()?))).map(|(rows, now)| {
                rows.into_iter()
                    .map(|mut k| {
                        if let Some(t) = pending.get(&k.id) {
                            k.last_used_at = k.last_used_at.max(Some(*t));
                        }
                        key_info(k, now)
                    })
                    .collect()
            })
        }))
    }
}

/// The caller's copy of a key just created: its secret, shown once.
fn new_key(secret: keys::ApiKeySecret, row: KeyRow) -> NewApiKey {
    NewApiKey {
        secret,
        key_id: row.id,
        user_id: row.user_id,
        name: row.name,
        prefix: row.prefix.unwrap_or_default(),
        created_at: row.created_at,
    }
}

fn key_info(k: KeyRow, now: Timestamp) -> ApiKeyInfo {
    let capped = k.spend_limit.is_some();
    let window_resets_at = match k.spend_window {
        Some(w) if capped && w != SpendWindow::Lifetime => Some(w.bounds(now).1),
        _ => None,
    };
    ApiKeyInfo {
        key_id: k.id,
        user_id: k.user_id.clone(),
        name: k.name.clone(),
        prefix: k.prefix.clone(),
        created_at: k.created_at,
        last_used_at: k.last_used_at,
        revoked_at: k.revoked_at,
        legacy: k.legacy,
        expires_at: k.expires_at,
        disabled: k.disabled_at.is_some(),
        rotated_to: k.rotated_to,
        spend_limit: k.spend_limit,
        spend_window: if capped { k.spend_window } else { None },
        spent_in_window: if capped { k.spent_at(now) } else { Credits::ZERO },
        window_resets_at,
        project: k.project,
    }
}
