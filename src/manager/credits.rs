//! Credits and payments: add, import and deduct credits; record payments in
//! any configured currency; reverse them and reinstate reversals.

use super::grants::GrantSpec;
use super::posting::{Draft, Lots};
use super::{CreditManager, conflict, global_conflict, replayed};
use crate::config::CurrencyRate;
use crate::error::{Error, Result};
use crate::metrics::Counter;
use crate::money::Credits;
use crate::types::*;
use crate::validate;
use std::time::Instant;

/// Optional fields of a credit or debit entry.
#[derive(Clone, Debug, Default)]
pub struct EntryOptions<'a> {
    pub idempotency_key: Option<&'a str>,
    pub reference: Option<&'a str>,
    pub metadata: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl CreditManager {
    fn counts_entry(&self, e: &Entry) {
        if e.replayed {
            return;
        }
        if e.kind == EntryKind::Purchase {
            self.count(Counter::purchases_total);
            self.inner.metrics.add(Counter::credits_purchased_micros_total, e.amount.micros().unsigned_abs());
        }
    }

    /// Credits an account. `kind`: purchase, grant, refund or adjustment
    /// (which may be negative, and then is strict). The credits form a grant
    /// with the kind's defaults (see [`add_credits_with`](Self::add_credits_with)).
    pub fn add_credits(&self, user: &str, amount: Credits, kind: EntryKind, opts: &EntryOptions) -> Result<Entry> {
        self.add_credits_with(user, amount, kind, opts, &GrantOptions::default())
    }

    /// `add_credits` with the grant's `expires_at`, `category` (default:
    /// promotional for `grant`, paid for the other kinds) and `priority`.
    /// A replay compares user, kind and amount only, as for `reference`.
    pub fn add_credits_with(
        &self,
        user: &str,
        amount: Credits,
        kind: EntryKind,
        opts: &EntryOptions,
        grant: &GrantOptions,
    ) -> Result<Entry> {
        let r = (|| {
            let user = validate::text("user_id", user)?;
            match kind {
                EntryKind::Purchase | EntryKind::Grant | EntryKind::Refund => {
                    amount.validate_positive("amount")?;
                }
                EntryKind::Adjustment => {
                    amount.validate_nonzero("adjustment")?;
                }
                _ => {
                    return Err(Error::invalid(format!(
                        "add_credits kind must be purchase, grant, refund or adjustment, got {kind}"
                    )));
                }
            }
            let mut d = Draft::new(user, kind, amount);
            d.strict = amount.is_negative();
            d.key = validate::caller_key("idempotency_key", opts.idempotency_key)?.map(str::to_string);
            d.reference = validate::opt_text("reference", opts.reference)?.map(str::to_string);
            d.metadata = validate::metadata(opts.metadata)?;
            d.grant = GrantSpec::of(kind, amount, grant)?;
            self.append_idempotent(d)
        })();
        let r = self.track(r);
        if let Ok(e) = &r {
            self.counts_entry(e);
        }
        r
    }

    /// Carries a balance over from the host's own users table (docs/reference.md
    /// `import-users`): an `adjustment` (or `purchase`) entry keyed
    /// `import:<user_id>`, so importing twice changes nothing. Not strict: a
    /// negative balance is carried over as it was.
    pub fn import_balance(&self, user: &str, amount: Credits, kind: EntryKind) -> Result<Entry> {
        let r = (|| {
            let user = validate::text("user_id", user)?;
            match kind {
                EntryKind::Purchase => {
                    amount.validate_positive("amount")?;
                }
                EntryKind::Adjustment => {
                    amount.validate_nonzero("imported balance")?;
                }
                _ => {
                    return Err(Error::invalid(format!("import kind must be adjustment or purchase, got {kind}")));
                }
            }
            let mut d = Draft::new(user, kind, amount);
            d.key = Some(format!("import:{user}"));
            self.append_idempotent(d)
        })();
        let r = self.track(r);
        if let Ok(e) = &r {
            self.counts_entry(e);
        }
        r
    }

    /// Strict debit: `InsufficientCredits` when available < amount.
    pub fn deduct_credits(&self, user: &str, amount: Credits, opts: &EntryOptions) -> Result<Entry> {
        let start = Instant::now();
        let r = (|| {
            let user = validate::text("user_id", user)?;
            amount.validate_positive("amount")?;
            let mut d = Draft::new(user, EntryKind::Deduct, amount.checked_neg()?);
            d.strict = true;
            d.key = validate::caller_key("idempotency_key", opts.idempotency_key)?.map(str::to_string);
            d.reference = validate::opt_text("reference", opts.reference)?.map(str::to_string);
            d.metadata = validate::metadata(opts.metadata)?;
            self.append_idempotent(d)
        })();
        self.inner.metrics.charge_seconds.observe(start.elapsed());
        self.track(r)
    }

    /// Appends `d` unless its per-user key was already used: then replays
    /// (same kind and amount) or conflicts.
    fn append_idempotent(&self, d: Draft) -> Result<Entry> {
        self.write(|tx| {
            let now = tx.now()?;
            if let Some(k) = &d.key
                && let Some(e) = tx.lock_and_entry_by_key(d.user, k, d.scope())?
            {
                return if e.kind == d.kind && e.amount == d.amount { Ok(replayed(e)) } else { Err(conflict(k, &e)) };
            }
            // Cloned so a backend may retry the transaction.
            self.append(tx, now, d.clone())
        })
    }

    /// The payment webhook path: `amount_minor` minor units of `currency`
    /// (any configured ISO 4217 code, any case; USD by default), credited at
    /// the currency's rate, rounded down to the micro-credit.
    pub fn record_payment(&self, user: &str, payment_id: &str, amount_minor: i64, currency: &str) -> Result<Entry> {
        self.record_payment_with(user, payment_id, amount_minor, currency, &GrantOptions::default())
    }

    /// `record_payment` with the grant's options (default category: paid).
    /// A replay compares user, amount and currency, not the grant options.
    pub fn record_payment_with(
        &self,
        user: &str,
        payment_id: &str,
        amount_minor: i64,
        currency: &str,
        grant: &GrantOptions,
    ) -> Result<Entry> {
        let r = (|| {
            let user = validate::text("user_id", user)?;
            let payment_id = validate::text("payment_id", payment_id)?;
            let (currency, rate) = self.currency(currency)?;
            if amount_minor <= 0 {
                return Err(Error::invalid(format!("amount_minor must be positive, got {amount_minor}")));
            }
            let credits = rate.credits_for(amount_minor)?;
            if credits <= Credits::ZERO {
                return Err(Error::invalid(format!(
                    "{amount_minor} minor units of {currency} buy less than one micro-credit"
                )));
            }
            let key = format!("payment:{payment_id}");
            let spec = GrantSpec::of(EntryKind::Purchase, credits, grant)?;
            self.write(|tx| {
                let now = tx.now()?;
                if let Some(e) = tx.entry_by_global_key(&key)? {
                    let same = e.user_id == user
                        && e.amount_minor == Some(amount_minor)
                        && e.currency.as_deref() == Some(currency.as_str());
                    return if same { Ok(replayed(e)) } else { Err(global_conflict(&key)) };
                }
                let mut d = Draft::new(user, EntryKind::Purchase, credits);
                d.key = Some(key.clone());
                d.global_key = true;
                d.reference = Some(payment_id.to_string());
                d.amount_minor = Some(amount_minor);
                d.currency = Some(currency.clone());
                d.grant = spec.clone().map(|g| GrantSpec { payment_id: Some(payment_id.to_string()), ..g });
                let e = self.append(tx, now, d)?;
                self.topup_paid(tx, now, payment_id, &e)?;
                Ok(e)
            })
        })();
        let r = self.track(r);
        if let Ok(e) = &r {
            self.counts_entry(e);
        }
        r
    }

    /// The upper-case code and rate of a configured currency.
    fn currency(&self, c: &str) -> Result<(String, CurrencyRate)> {
        match self.inner.config.rate_of(c) {
            Some((code, rate)) => Ok((code.to_string(), rate)),
            None => {
                let known: Vec<&str> = self.inner.config.currency_rates().keys().map(String::as_str).collect();
                Err(Error::invalid(format!(
                    "currency {:?} has no configured rate (configured: {})",
                    truncate(c),
                    known.join(", ")
                )))
            }
        }
    }

    /// A refund or chargeback: removes the credits a payment bought (all not
    /// yet reversed, or the part for `amount_minor`). Not strict.
    pub fn reverse_payment(
        &self,
        payment_id: &str,
        amount_minor: Option<i64>,
        reason: Option<&str>,
        reversal_id: Option<&str>,
    ) -> Result<Entry> {
        let r = (|| {
            let payment_id = validate::text("payment_id", payment_id)?;
            let reason = validate::opt_text("reason", reason)?;
            let reversal_id = validate::opt_text("reversal_id", reversal_id)?;
            if let Some(a) = amount_minor
                && a <= 0
            {
                return Err(Error::invalid(format!("amount_minor must be positive, got {a}")));
            }
            let key = format!("reversal:{}", reversal_id.unwrap_or(payment_id));
            self.write(|tx| {
                let now = tx.now()?;
                let purchase = tx
                    .entry_by_global_key(&format!("payment:{payment_id}"))?
                    .ok_or_else(|| Error::NotFound(format!("no payment with id {:?}", truncate(payment_id))))?;
                if let Some(e) = tx.entry_by_global_key(&key)? {
                    let same = e.reference.as_deref() == Some(payment_id)
                        && amount_minor.is_none_or(|a| e.amount_minor == Some(a));
                    return if same { Ok(replayed(e)) } else { Err(global_conflict(&key)) };
                }
                // Locked before summing, so concurrent partial reversals of
                // one payment (on any host) see each other.
                tx.lock_account(&purchase.user_id)?;
                let (reversed_minor, reversed_credits) = tx.reversed_total(payment_id)?;
                let payment = PaymentState {
                    paid_credits: purchase.amount,
                    paid_minor: purchase.amount_minor.unwrap_or(0),
                    reversed_credits,
                    reversed_minor,
                };
                let plan = plan_reversal(payment_id, payment, amount_minor)?;
                let user = purchase.user_id.as_str();
                // The payment's own grant gives first, after due expiries.
                tx.ensure_account(user, now)?;
                self.settle_account(tx, now, user, crate::store::Scope::default())?;
                let own = tx.grant_by_payment(payment_id)?;
                let mut d = Draft::new(user, EntryKind::Reversal, plan.credits.checked_neg()?);
                d.metadata = reversal_metadata(reason, own.as_ref(), plan.credits)?;
                if let Some(g) = &own {
                    d.lots = Lots::FirstFrom(g.grant_id, g.remaining);
                }
                d.key = Some(key.clone());
                d.global_key = true;
                d.reference = Some(payment_id.to_string());
                d.amount_minor = Some(plan.part_minor);
                d.currency = purchase.currency.clone();
                self.append(tx, now, d)
            })
        })();
        self.track(r)
    }

    /// Restores exactly what the reversal `reversal_id` removed (the id given
    /// to `reverse_payment`, or its payment id when it had none): a dispute
    /// won, a refund that failed. A `reinstatement` entry credits the user
    /// the reversal's credits and minor units back, once per reversal (a
    /// replay returns the same entry). It is not a purchase: purchases, the
    /// first-purchase event and lifetime purchased do not count it, while
    /// revenue does (the money came back). The payment may be reversed again
    /// afterwards, up to what it paid.
    pub fn reinstate_reversal(&self, reversal_id: &str, reason: Option<&str>) -> Result<Entry> {
        let r = (|| {
            let reversal_id = validate::text("reversal_id", reversal_id)?;
            let reason = validate::opt_text("reason", reason)?;
            let key = format!("reinstatement:{reversal_id}");
            self.write(|tx| {
                let now = tx.now()?;
                if let Some(e) = tx.entry_by_global_key(&key)? {
                    return Ok(replayed(e));
                }
                let reversal = tx
                    .entry_by_global_key(&format!("reversal:{reversal_id}"))?
                    .ok_or_else(|| Error::NotFound(format!("no reversal with id {:?}", truncate(reversal_id))))?;
                let mut d = Draft::new(&reversal.user_id, EntryKind::Reinstatement, reversal.amount.checked_neg()?);
                d.key = Some(key.clone());
                d.global_key = true;
                d.reference = reversal.reference.clone();
                d.amount_minor = reversal.amount_minor;
                d.currency = reversal.currency.clone();
                let mut m = serde_json::Map::new();
                m.insert("reversal_entry_id".into(), serde_json::Value::String(reversal.id.to_string()));
                if let Some(r) = reason {
                    m.insert("reason".into(), serde_json::Value::String(r.to_string()));
                }
                d.metadata = Some(m);
                self.append(tx, now, d)
            })
        })();
        self.track(r)
    }
}

/// What a payment paid, and what its reversals net of reinstatements took.
#[derive(Clone, Copy, Debug)]
pub(super) struct PaymentState {
    pub(super) paid_credits: Credits,
    pub(super) paid_minor: i64,
    pub(super) reversed_credits: Credits,
    pub(super) reversed_minor: i64,
}

/// A reversal to post: the minor units it reverses and the credits they bought.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ReversalPlan {
    pub(super) part_minor: i64,
    pub(super) credits: Credits,
}

/// Plans the reversal of `requested` minor units of a payment (None: all that
/// remains). A part takes its pro-rata share of the credits, rounded down;
/// the part that empties the payment takes exactly the credits left, so the
/// parts always sum to the purchase. Pure: no transaction, no clock.
pub(super) fn plan_reversal(payment_id: &str, p: PaymentState, requested: Option<i64>) -> Result<ReversalPlan> {
    let remaining_minor = p.paid_minor.checked_sub(p.reversed_minor).ok_or_else(|| {
        Error::Internal(format!("payment {:?}: reversed minor units out of range", truncate(payment_id)))
    })?;
    if remaining_minor <= 0 {
        return Err(Error::invalid(format!("payment {:?} is already fully reversed", truncate(payment_id))));
    }
    let part = requested.unwrap_or(remaining_minor);
    if part <= 0 {
        return Err(Error::invalid(format!("amount_minor must be positive, got {part}")));
    }
    if part > remaining_minor {
        return Err(Error::invalid(format!(
            "cannot reverse {part} minor units of payment {:?}: only {remaining_minor} remain",
            truncate(payment_id)
        )));
    }
    let credits = if part == remaining_minor {
        p.paid_credits.checked_sub(p.reversed_credits)?
    } else {
        // part < remaining ≤ paid, so the share is below the purchase and fits.
        let micros = i128::from(p.paid_credits.micros()) * i128::from(part) / i128::from(p.paid_minor);
        Credits::from_micros(i64::try_from(micros).map_err(|_| Error::Internal("reversal share out of range".into()))?)
    };
    Ok(ReversalPlan { part_minor: part, credits })
}

/// The metadata of a reversal of `credits`: the reason, and with the
/// payment's own grant, how much it gives and how much was already spent.
fn reversal_metadata(
    reason: Option<&str>,
    own: Option<&Grant>,
    credits: Credits,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
    let mut m = serde_json::Map::new();
    if let Some(r) = reason {
        m.insert("reason".into(), serde_json::Value::String(r.to_string()));
    }
    if let Some(g) = own {
        let from_grant = credits.min(g.remaining);
        m.insert("grant_id".into(), serde_json::Value::from(g.grant_id.0));
        m.insert("from_grant_micros".into(), serde_json::Value::from(from_grant.micros()));
        let spent = credits.checked_sub(from_grant)?;
        m.insert("already_spent_micros".into(), serde_json::Value::from(spent.micros()));
    }
    Ok(if m.is_empty() { None } else { Some(m) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paid(credits: i64, minor: i64) -> PaymentState {
        PaymentState {
            paid_credits: Credits::from_micros(credits),
            paid_minor: minor,
            reversed_credits: Credits::ZERO,
            reversed_minor: 0,
        }
    }

    #[test]
    fn a_whole_reversal_takes_everything_left() {
        let plan = plan_reversal("p", paid(10_000_000, 1000), None).unwrap();
        assert_eq!(plan, ReversalPlan { part_minor: 1000, credits: Credits::from_micros(10_000_000) });
        let after_part = PaymentState {
            reversed_credits: Credits::from_micros(3_333_333),
            reversed_minor: 333,
            ..paid(10_000_000, 1000)
        };
        let plan = plan_reversal("p", after_part, None).unwrap();
        assert_eq!(plan, ReversalPlan { part_minor: 667, credits: Credits::from_micros(6_666_667) });
    }

    #[test]
    fn parts_round_down_and_the_last_part_takes_the_rest() {
        let p = paid(10_000_000, 3);
        let first = plan_reversal("p", p, Some(1)).unwrap();
        assert_eq!(first.credits, Credits::from_micros(3_333_333));
        let p = PaymentState { reversed_credits: first.credits, reversed_minor: 1, ..p };
        let second = plan_reversal("p", p, Some(1)).unwrap();
        let p = PaymentState { reversed_credits: Credits::from_micros(6_666_666), reversed_minor: 2, ..p };
        let last = plan_reversal("p", p, Some(1)).unwrap();
        assert_eq!(second.credits, Credits::from_micros(3_333_333));
        assert_eq!(last.credits, Credits::from_micros(3_333_334));
    }

    #[test]
    fn over_reversal_zero_and_a_fully_reversed_payment_are_refused() {
        let over = plan_reversal("p", paid(10_000_000, 1000), Some(1001)).unwrap_err();
        assert!(over.to_string().contains("only 1000 remain"), "{over}");
        for bad in [0, -5] {
            let e = plan_reversal("p", paid(10_000_000, 1000), Some(bad)).unwrap_err();
            assert_eq!(e.code(), crate::error::ErrorCode::InvalidArgument);
        }
        let done = PaymentState {
            reversed_credits: Credits::from_micros(10_000_000),
            reversed_minor: 1000,
            ..paid(10_000_000, 1000)
        };
        let e = plan_reversal("p", done, None).unwrap_err();
        assert!(e.to_string().contains("already fully reversed"), "{e}");
        // A payment without minor units (not a payment at all) is never reversible.
        assert!(plan_reversal("p", paid(10_000_000, 0), None).is_err());
    }

    #[test]
    fn extreme_amounts_do_not_overflow() {
        let max = crate::money::MAX_AMOUNT_MICROS;
        let plan = plan_reversal("p", paid(max, i64::MAX), Some(i64::MAX - 1)).unwrap();
        assert!(plan.credits.micros() < max && plan.credits.micros() > max - 2, "{:?}", plan);
        let broken = PaymentState { reversed_minor: i64::MIN, ..paid(max, i64::MAX) };
        assert_eq!(plan_reversal("p", broken, None).unwrap_err().code(), crate::error::ErrorCode::Internal);
    }
}
