//! The public types of auto top-up and its pure rules: the rule's checks,
//! and what a crossing requests under the month's caps ([`plan`]). The operations are
//! in `manager/topups.rs`, the storage in `store/topups.rs`; the crossing
//! itself is detected in `manager/posting.rs` (docs/auto-topup.md).

use crate::error::{Error, Result};
use crate::limits::MAX_TOPUPS_PER_MONTH;
use crate::money::Credits;
use crate::types::{EntryId, Timestamp};

/// What a crossing requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopupAmount {
    /// This many credits.
    Fixed(Credits),
    /// What takes the available balance up to this target.
    UpTo(Credits),
}

/// An account's auto top-up rule: when its available balance crosses below
/// `threshold`, request `amount`, at most `max_per_month` times and at most
/// `monthly_cap` credits per calendar month (UTC). Every requested top-up
/// counts against both, whatever becomes of its payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoTopup {
    pub threshold: Credits,
    pub amount: TopupAmount,
    pub max_per_month: u32,
    pub monthly_cap: Credits,
}

impl AutoTopup {
    /// The rule's checks: threshold ≥ 0; a fixed amount > 0; a target above
    /// the threshold; a cap > 0; 1..=[`MAX_TOPUPS_PER_MONTH`] per month.
    pub(crate) fn validate(&self) -> Result<()> {
        self.threshold.validate_threshold("threshold")?;
        match self.amount {
            TopupAmount::Fixed(a) => {
                a.validate_positive("amount")?;
            }
            TopupAmount::UpTo(t) => {
                t.validate_positive("target")?;
                if t <= self.threshold {
                    return Err(Error::invalid(format!(
                        "target must be above the threshold ({}), got {t}",
                        self.threshold
                    )));
                }
            }
        }
        self.monthly_cap.validate_positive("monthly_cap")?;
        if !(1..=MAX_TOPUPS_PER_MONTH).contains(&self.max_per_month) {
            return Err(Error::invalid(format!(
                "max_per_month must be in 1..={MAX_TOPUPS_PER_MONTH}, got {}",
                self.max_per_month
            )));
        }
        Ok(())
    }
}

/// Where a top-up stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TopupStatus {
    /// Waiting for the host's payment.
    Requested,
    /// `record_payment` with the top-up's id credited it.
    Paid,
    /// `record_topup_failure` recorded that the payment failed.
    Failed,
}

impl TopupStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TopupStatus::Requested => "requested",
            TopupStatus::Paid => "paid",
            TopupStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Result<TopupStatus> {
        match s {
            "requested" => Ok(TopupStatus::Requested),
            "paid" => Ok(TopupStatus::Paid),
            "failed" => Ok(TopupStatus::Failed),
            _ => Err(Error::invalid(format!("top-up status must be requested, paid or failed, got {s:?}"))),
        }
    }
}

/// A top-up a rule requested.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topup {
    /// `tu_` + 32 hex digits: the payment id the host pays it under.
    pub id: String,
    /// The account it credits (an organisation for its members' charges).
    pub user_id: String,
    pub amount: Credits,
    pub status: TopupStatus,
    /// Why the payment failed (`record_topup_failure`).
    pub reason: Option<String>,
    /// The purchase entry that paid it.
    pub entry_id: Option<EntryId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The prefix of every top-up id; only payment ids with it are looked up.
pub(crate) const TOPUP_ID_PREFIX: &str = "tu_";

/// A new top-up id.
pub(crate) fn new_topup_id() -> String {
    format!("{TOPUP_ID_PREFIX}{}", uuid::Uuid::now_v7().simple())
}

/// What the month's earlier requests used of the caps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MonthUse {
    pub count: u32,
    pub credits: Credits,
}

impl MonthUse {
    /// What `month`'s top-ups used: every request counts, whatever its outcome.
    pub(crate) fn of(month: &[Topup]) -> Result<MonthUse> {
        month.iter().try_fold(MonthUse::default(), |used, t| {
            Ok(MonthUse { count: used.count.saturating_add(1), credits: used.credits.checked_add(t.amount)? })
        })
    }
}

/// What a crossing does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    Request(Credits),
    /// Nothing left this month: `max_per_month` or `monthly_cap`.
    Skip(&'static str),
}

/// What a crossing to `available` requests under `rule`, with `used` of the
/// month's caps already taken: the rule's amount (a fixed one, or up to the
/// target), cut to what the monthly cap leaves. Pure.
pub(crate) fn plan(rule: &AutoTopup, available: Credits, used: MonthUse) -> Result<Plan> {
    if used.count >= rule.max_per_month {
        return Ok(Plan::Skip("max_per_month"));
    }
    let left = rule.monthly_cap.checked_sub(used.credits)?;
    if left <= Credits::ZERO {
        return Ok(Plan::Skip("monthly_cap"));
    }
    let wanted = match rule.amount {
        TopupAmount::Fixed(a) => a,
        TopupAmount::UpTo(target) => target.checked_sub(available)?,
    };
    Ok(Plan::Request(wanted.min(left)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CurrencyRate;

    fn c(n: i64) -> Credits {
        Credits::from_credits(n).unwrap()
    }

    fn rule(amount: TopupAmount) -> AutoTopup {
        AutoTopup { threshold: c(10), amount, max_per_month: 3, monthly_cap: c(100) }
    }

    #[test]
    fn a_crossing_requests_the_fixed_amount_or_up_to_the_target() {
        let none = MonthUse::default();
        assert_eq!(plan(&rule(TopupAmount::Fixed(c(25))), c(4), none).unwrap(), Plan::Request(c(25)));
        assert_eq!(plan(&rule(TopupAmount::UpTo(c(50))), c(4), none).unwrap(), Plan::Request(c(46)));
        // Below zero (an overdraft), up-to asks for the debt too.
        assert_eq!(plan(&rule(TopupAmount::UpTo(c(50))), c(-5), none).unwrap(), Plan::Request(c(55)));
    }

    #[test]
    fn the_month_caps_cut_or_skip() {
        let r = rule(TopupAmount::Fixed(c(40)));
        let used = |count, credits| MonthUse { count, credits: c(credits) };
        assert_eq!(plan(&r, c(0), used(2, 80)).unwrap(), Plan::Request(c(20)));
        assert_eq!(plan(&r, c(0), used(2, 100)).unwrap(), Plan::Skip("monthly_cap"));
        assert_eq!(plan(&r, c(0), used(3, 0)).unwrap(), Plan::Skip("max_per_month"));
    }

    #[test]
    fn bad_rules_are_refused() {
        let ok = rule(TopupAmount::Fixed(c(1)));
        assert!(ok.validate().is_ok());
        let bad = [
            AutoTopup { threshold: c(-1), ..ok },
            AutoTopup { amount: TopupAmount::Fixed(Credits::ZERO), ..ok },
            AutoTopup { amount: TopupAmount::UpTo(c(10)), ..ok },
            AutoTopup { monthly_cap: Credits::ZERO, ..ok },
            AutoTopup { max_per_month: 0, ..ok },
            AutoTopup { max_per_month: MAX_TOPUPS_PER_MONTH + 1, ..ok },
        ];
        for b in bad {
            assert!(b.validate().is_err(), "{b:?}");
        }
    }

    #[test]
    fn minor_units_round_up() {
        // 1 credit per cent (100 per dollar): 2.5 credits cost 3 cents.
        let rate = CurrencyRate { credits_per_unit: c(100), exponent: 2 };
        assert_eq!(rate.minor_units_for(Credits::from_micros(2_500_000)).unwrap(), 3);
        assert_eq!(rate.minor_units_for(c(10)).unwrap(), 10);
        let ids = (new_topup_id(), new_topup_id());
        assert_ne!(ids.0, ids.1);
        assert!(ids.0.starts_with("tu_") && ids.0.len() == 35, "{}", ids.0);
    }
}
