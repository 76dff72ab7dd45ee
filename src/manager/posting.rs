//! Posting: the one place a balance moves. `append` applies the account's
//! due expiries, then `post` moves the balance with one conditional update
//! (`Tx::apply`), appends the entry, moves the grants (lots) and emits the
//! events the move fires. Every credit, debit, expiry and reversal passes here.

use super::CreditManager;
use super::grants::GrantSpec;
use crate::error::{Error, LimitSource, Result};
use crate::events::{EventKind, NewEvent};
use crate::money::Credits;
use crate::store::{Applied, Scope, Tx};
use crate::types::*;

/// Grants one draw-down query fetches; a usage charge usually needs the first.
const GRANT_FETCH: u32 = 8;

/// How an entry moves grants (lots).
#[derive(Clone, Copy, Debug)]
pub(super) enum Lots {
    /// A credit creates a grant; a debit draws grants down in order.
    Auto,
    /// A debit draws this grant (with this much remaining) first, then the
    /// others in order: a payment's reversal.
    FirstFrom(GrantId, Credits),
    /// The expiry of this grant's whole remainder.
    Expire(GrantId),
}

/// An entry to append, before it has a seq and balance.
#[derive(Clone)]
pub(super) struct Draft<'a> {
    pub(super) user: &'a str,
    pub(super) kind: EntryKind,
    pub(super) amount: Credits,
    pub(super) strict: bool,
    pub(super) key: Option<String>,
    pub(super) global_key: bool,
    pub(super) reference: Option<String>,
    pub(super) api_key_id: Option<KeyId>,
    pub(super) input_tokens: Option<i64>,
    pub(super) output_tokens: Option<i64>,
    pub(super) model: Option<String>,
    pub(super) amount_minor: Option<i64>,
    pub(super) currency: Option<String>,
    pub(super) metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The grant a credit creates; None: the kind's defaults.
    pub(super) grant: Option<GrantSpec>,
    pub(super) lots: Lots,
    /// The member of the paying organisation the entry is for.
    pub(super) member: Option<String>,
    /// The project of the key that spent it.
    pub(super) project: Option<String>,
    pub(super) cached_input_tokens: Option<i64>,
    pub(super) cache_write_tokens: Option<i64>,
    /// The rates a usage charge was priced at.
    pub(super) price: Option<ModelPrice>,
    /// The active hold this entry settles (its amount; 0: none): freed in
    /// the same write, so the auto top-up's crossing counts it as freed.
    pub(super) frees: Credits,
}

impl<'a> Draft<'a> {
    pub(super) fn new(user: &'a str, kind: EntryKind, amount: Credits) -> Draft<'a> {
        Draft {
            user,
            kind,
            amount,
            strict: false,
            key: None,
            global_key: false,
            reference: None,
            api_key_id: None,
            input_tokens: None,
            output_tokens: None,
            model: None,
            amount_minor: None,
            currency: None,
            metadata: None,
            grant: None,
            lots: Lots::Auto,
            member: None,
            project: None,
            cached_input_tokens: None,
            cache_write_tokens: None,
            price: None,
            frees: Credits::ZERO,
        }
    }

    /// Whose grants a debit draws first (`sql::grant_order`).
    pub(super) fn scope(&self) -> Scope<'_> {
        Scope { member: self.member.as_deref(), key: self.api_key_id }
    }
}

impl CreditManager {
    /// Applies the account's due expiries, then the balance change, appends
    /// its entry and moves its grants. The only path by which a balance moves.
    pub(super) fn append(&self, tx: &mut dyn Tx, now: Timestamp, d: Draft) -> Result<Entry> {
        if let Some(g) = &d.grant {
            g.check(now)?;
        }
        tx.ensure_account(d.user, now)?;
        let (live, _) = self.settle_account(tx, now, d.user, d.scope())?;
        self.post(tx, now, d, live).map(|(e, _)| e)
    }

    /// What every write on an account does first, under its lock: applies
    /// the due expiries, then the due allowance refills. Returns the first
    /// live grants in `scope`'s draw-down order (empty after a refill: the
    /// draw reads them again) and what expired.
    pub(super) fn settle_account(
        &self,
        tx: &mut dyn Tx,
        now: Timestamp,
        user: &str,
        scope: Scope,
    ) -> Result<(Vec<Grant>, ExpirySweep)> {
        let (live, mut sweep) = self.expire_due(tx, now, user, scope)?;
        sweep.refills = self.refill_due(tx, now, user)?;
        Ok((if sweep.refills > 0 { Vec::new() } else { live }, sweep))
    }

    /// A credit posted after the account was settled (an allowance's
    /// refill, inside `settle_account`).
    pub(super) fn post_credit(&self, tx: &mut dyn Tx, now: Timestamp, d: Draft) -> Result<Entry> {
        debug_assert!(d.amount > Credits::ZERO, "post_credit posts credits");
        self.post(tx, now, d, Vec::new()).map(|(e, _)| e)
    }

    /// `append` after the expiries: `live` is the first batch of the
    /// account's live grants in draw-down order (saves the draw a query).
    /// Also returns the account's auto top-up threshold (None: no rule),
    /// which the conditional update returned.
    fn post(
        &self,
        tx: &mut dyn Tx,
        now: Timestamp,
        mut d: Draft,
        live: Vec<Grant>,
    ) -> Result<(Entry, Option<Credits>)> {
        let moves = (d.kind, d.lots, d.grant.take());
        // An expiry entry leaves the available balance as it is (a due
        // grant is not counted): `expire_due` checks once per sweep.
        let expiry = matches!(d.lots, Lots::Expire(_));
        let frees = d.frees;
        let (member, key) = (d.member.clone(), d.api_key_id);
        let Some(applied) = tx.apply(d.user, d.amount, d.strict, now)? else {
            let balance = tx.account(d.user)?.map_or(Credits::ZERO, |a| a.balance);
            if balance.checked_add(d.amount).is_err() {
                return Err(Error::invalid(format!("balance {balance} + {} is out of range", d.amount)));
            }
            return Err(Error::InsufficientCredits {
                required: d.amount.checked_neg()?,
                available: tx.available(d.user, now)?,
                limit_source: LimitSource::Account,
            });
        };
        check_applied(d.user, d.amount, applied)?;
        let (balance_after, seq) = (applied.balance_after, applied.seq);
        let entry = Entry {
            id: EntryId::at(now),
            seq,
            user_id: d.user.to_string(),
            kind: d.kind,
            amount: d.amount,
            balance_after,
            idempotency_key: d.key,
            reference: d.reference,
            api_key_id: d.api_key_id,
            input_tokens: d.input_tokens,
            output_tokens: d.output_tokens,
            model: d.model,
            amount_minor: d.amount_minor,
            currency: d.currency,
            metadata: self.stamp_operator(d.metadata)?,
            created_at: now,
            replayed: false,
            member_id: d.member,
            project: d.project,
            cached_input_tokens: d.cached_input_tokens,
            cache_write_tokens: d.cache_write_tokens,
            price: d.price,
        };
        let global = if d.global_key { entry.idempotency_key.as_deref() } else { None };
        if entry.kind == EntryKind::Purchase && !tx.has_purchase(d.user)? {
            let data = serde_json::json!({ "entry_id": entry.id.to_string(), "amount": entry.amount.to_string() });
            self.emit(tx, now, d.user, None, EventKind::FirstPurchase, data)?;
        }
        tx.insert_entry(&entry, global)?;
        let scope = Scope { member: member.as_deref(), key };
        self.move_lots(tx, now, moves, &entry, (live, scope))?;
        self.balance_events(tx, &entry)?;
        if let Some(threshold) = applied.topup_threshold
            && !expiry
        {
            self.topup_if_crossed(tx, now, (d.user, key), threshold, (entry.amount, frees))?;
        }
        if self.inner.config.check_invariants {
            self.check_account(tx, d.user)?;
        }
        Ok((entry, applied.topup_threshold))
    }

    /// Writes one outbox event in the caller's transaction.
    pub(crate) fn emit(
        &self,
        tx: &mut dyn Tx,
        now: Timestamp,
        user: &str,
        api_key_id: Option<KeyId>,
        kind: EventKind,
        mut data: serde_json::Value,
    ) -> Result<()> {
        debug_assert!(data.is_object(), "event data is a JSON object");
        if let (Some(op), Some(m)) = (&self.actor, data.as_object_mut()) {
            m.insert("operator".into(), serde_json::Value::from(&**op));
        }
        tx.insert_event(&NewEvent { kind, user_id: user, api_key_id, data, created_at: now })?;
        Ok(())
    }

    /// An entry's metadata as written by this handle: with `"operator"`
    /// set when it acts as one (`acting_as`; the caller's own key of that
    /// name is overwritten), still within `MAX_METADATA_BYTES`. The key is
    /// reserved: any other handle's metadata carrying it is refused, so an
    /// entry names an operator only when one made it.
    fn stamp_operator(
        &self,
        metadata: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
        let Some(op) = &self.actor else {
            if metadata.as_ref().is_some_and(|m| m.contains_key("operator")) {
                return Err(Error::invalid(
                    "metadata: the key \"operator\" is reserved for entries written through acting_as(operator)",
                ));
            }
            return Ok(metadata);
        };
        let mut m = metadata.unwrap_or_default();
        m.insert("operator".into(), serde_json::Value::from(&**op));
        crate::validate::metadata_size(&m)?;
        Ok(Some(m))
    }

    /// The events a balance move fires: each low-balance threshold crossed
    /// downwards, and the move from ≥ 0 into overdraft.
    fn balance_events(&self, tx: &mut dyn Tx, e: &Entry) -> Result<()> {
        if !e.amount.is_negative() {
            return Ok(());
        }
        let after = e.balance_after;
        let before = after.checked_sub(e.amount)?;
        for &t in &self.inner.config.low_balance_thresholds {
            if before >= t && after < t {
                let data = serde_json::json!({
                    "threshold": t.to_string(), "balance": after.to_string(), "entry_id": e.id.to_string(),
                });
                self.emit(tx, e.created_at, &e.user_id, e.api_key_id, EventKind::BalanceLow, data)?;
            }
        }
        if !before.is_negative() && after.is_negative() {
            let data = serde_json::json!({ "balance": after.to_string(), "entry_id": e.id.to_string() });
            self.emit(tx, e.created_at, &e.user_id, e.api_key_id, EventKind::Overdraft, data)?;
        }
        Ok(())
    }

    /// Keeps `sum(remaining) == max(balance, 0)`: a credit creates a grant
    /// holding what is left after repaying any debt; a debit draws grants
    /// down by what the balance loses above zero; an expiry empties its grant.
    fn move_lots(
        &self,
        tx: &mut dyn Tx,
        now: Timestamp,
        (kind, lots, grant): (EntryKind, Lots, Option<GrantSpec>),
        e: &Entry,
        (live, scope): (Vec<Grant>, Scope),
    ) -> Result<()> {
        let backed = |b: Credits| b.max(Credits::ZERO);
        let was = backed(e.balance_after.checked_sub(e.amount)?);
        let is = backed(e.balance_after);
        let user = e.user_id.as_str();
        match lots {
            Lots::Expire(id) => take_grant(tx, user, id, e.amount.checked_neg()?).map(|_| ()),
            _ if e.amount > Credits::ZERO => {
                let spec = grant.unwrap_or_else(|| GrantSpec::of_kind(kind));
                // What the credit leaves after repaying debt: 0..=amount.
                let remaining = is.checked_sub(was)?;
                if remaining.is_negative() || remaining > e.amount {
                    return Err(Error::Internal(format!(
                        "a credit of {} would leave a grant of {remaining} for user {:?}",
                        e.amount,
                        truncate(user)
                    )));
                }
                let g = Grant {
                    grant_id: GrantId(0),
                    user_id: e.user_id.clone(),
                    category: spec.category,
                    priority: spec.priority,
                    amount: e.amount,
                    remaining,
                    expires_at: spec.expires_at,
                    created_at: now,
                    source_entry_id: Some(e.id),
                    payment_id: spec.payment_id,
                    member_id: spec.member_id,
                    api_key_id: spec.api_key_id,
                    allowance_id: spec.allowance_id,
                };
                tx.insert_grant(&g).map(|_| ())
            }
            Lots::FirstFrom(id, has) => draw(tx, (user, scope), now, was.checked_sub(is)?, Some((id, has)), Vec::new()),
            Lots::Auto => draw(tx, (user, scope), now, was.checked_sub(is)?, None, live),
        }
    }

    /// Applies `user`'s due expiries (one `expiry` entry per grant past its
    /// `expires_at` with credits left, earliest expiry first). Returns the
    /// first live grants in draw-down order and what expired. The account
    /// must be locked (`ensure_account`).
    fn expire_due(
        &self,
        tx: &mut dyn Tx,
        now: Timestamp,
        user: &str,
        scope: Scope,
    ) -> Result<(Vec<Grant>, ExpirySweep)> {
        let mut expired = ExpirySweep::default();
        let mut threshold = None;
        loop {
            let batch = tx.live_grants(user, now, true, GRANT_FETCH, scope)?;
            let full = batch.len() == GRANT_FETCH as usize;
            let mut live = Vec::with_capacity(batch.len());
            for g in batch {
                if g.expires_at.is_some_and(|t| t <= now) {
                    expired.entries += 1;
                    expired.credits = expired.credits.checked_add(g.remaining)?;
                    threshold = self.expire_grant(tx, now, g)?.or(threshold);
                } else {
                    live.push(g);
                }
            }
            // Due grants come first: once a live one shows, none is left.
            if !live.is_empty() || !full {
                expired.accounts = u64::from(expired.entries > 0);
                // The available balance stopped counting these grants when
                // they fell due (`sql::available`); this sweep, the first
                // write since, checks that drop as one move.
                if let Some(t) = threshold {
                    self.topup_if_crossed(tx, now, (user, None), t, (expired.credits.checked_neg()?, Credits::ZERO))?;
                }
                return Ok((live, expired));
            }
        }
    }

    /// The `expiry` entry of a grant's whole remainder; returns the
    /// account's auto top-up threshold (see `post`).
    fn expire_grant(&self, tx: &mut dyn Tx, now: Timestamp, g: Grant) -> Result<Option<Credits>> {
        let mut d = Draft::new(&g.user_id, EntryKind::Expiry, g.remaining.checked_neg()?);
        d.lots = Lots::Expire(g.grant_id);
        d.reference = Some(format!("grant:{}", g.grant_id));
        let mut m = serde_json::Map::new();
        m.insert("grant_id".into(), serde_json::Value::from(g.grant_id.0));
        m.insert("category".into(), serde_json::Value::from(g.category.as_str()));
        if let Some(t) = g.expires_at {
            m.insert("expires_at".into(), serde_json::Value::from(t.to_rfc3339()));
        }
        d.metadata = Some(m);
        let (e, threshold) = self.post(tx, now, d, Vec::new())?;
        let data = serde_json::json!({
            "grant_id": g.grant_id.0,
            "amount": g.remaining.to_string(),
            "category": g.category.as_str(),
            "entry_id": e.id.to_string(),
        });
        self.emit(tx, now, &g.user_id, None, EventKind::GrantExpired, data)?;
        Ok(threshold)
    }
}

/// Takes `amount` (≥ 0) from grant `id`, which must hold it (the account is
/// locked, so nothing else moved it); returns what it took.
fn take_grant(tx: &mut dyn Tx, user: &str, id: GrantId, amount: Credits) -> Result<Credits> {
    if amount.is_negative() || (amount > Credits::ZERO && !tx.take_from_grant(id, amount)?) {
        return Err(Error::Internal(format!(
            "grant {id} of user {:?} cannot give {amount}; run audit()",
            truncate(user)
        )));
    }
    Ok(amount)
}

/// Draws `wanted` from `user`'s live grants: `first` (a payment's own grant)
/// before all, then in draw-down order, starting with the prefetched `batch`.
/// The draws must sum to `wanted`: else `Internal`, and the write rolls back.
fn draw(
    tx: &mut dyn Tx,
    (user, scope): (&str, Scope),
    now: Timestamp,
    wanted: Credits,
    first: Option<(GrantId, Credits)>,
    mut batch: Vec<Grant>,
) -> Result<()> {
    let mut drawn = Credits::ZERO;
    if let Some((id, has)) = first {
        drawn = take_grant(tx, user, id, wanted.min(has))?;
        batch.clear();
    }
    while drawn < wanted {
        if batch.is_empty() {
            batch = tx.live_grants(user, now, false, GRANT_FETCH, scope)?;
            if batch.is_empty() {
                return Err(Error::Internal(format!(
                    "the grants of user {:?} hold less than its balance; run audit()",
                    truncate(user)
                )));
            }
        }
        for g in batch.drain(..) {
            let left = wanted.checked_sub(drawn)?;
            drawn = drawn.checked_add(take_grant(tx, user, g.grant_id, left.min(g.remaining))?)?;
            if drawn == wanted {
                break;
            }
        }
    }
    if drawn != wanted {
        return Err(Error::Internal(format!(
            "grant draws for user {:?} sum to {drawn}, the balance lost {wanted}",
            truncate(user)
        )));
    }
    Ok(())
}

/// The O(1) invariants of one balance move, on the values the conditional
/// update returned: the balance moved by exactly `amount` and the seq by
/// exactly one. A broken one is `Internal` (the write rolls back).
pub(super) fn check_applied(user: &str, amount: Credits, a: Applied) -> Result<()> {
    let expected = a.balance_before.checked_add(amount).ok();
    if expected != Some(a.balance_after) || a.seq_before.checked_add(1) != Some(a.seq) {
        return Err(Error::Internal(format!(
            "balance move of {amount} for user {:?}: balance {} -> {}, seq {} -> {}",
            truncate(user),
            a.balance_before,
            a.balance_after,
            a.seq_before,
            a.seq
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moved(before: i64, after: i64, seq_before: i64, seq: i64) -> Applied {
        Applied {
            balance_before: Credits::from_micros(before),
            balance_after: Credits::from_micros(after),
            seq_before,
            seq,
            topup_threshold: None,
        }
    }

    #[test]
    fn a_move_by_exactly_its_amount_and_one_seq_passes() {
        assert!(check_applied("u", Credits::from_micros(-30), moved(100, 70, 4, 5)).is_ok());
        assert!(check_applied("u", Credits::from_micros(5), moved(-10, -5, 0, 1)).is_ok());
    }

    #[test]
    fn a_wrong_balance_or_seq_is_internal() {
        use crate::error::ErrorCode;
        for bad in [moved(100, 71, 4, 5), moved(100, 70, 4, 6), moved(100, 70, 4, 4), moved(100, 130, 4, 5)] {
            let e = check_applied("u", Credits::from_micros(-30), bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::Internal, "{bad:?}");
        }
        // Overflowing values are a broken invariant too, never a panic.
        let e = check_applied("u", Credits::from_micros(1), moved(i64::MAX, i64::MIN, i64::MAX, i64::MIN)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Internal);
    }
}
