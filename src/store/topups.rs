//! The storage of auto top-up: an account's rule (on its row, so `apply`
//! returns its threshold) and the top-ups it requested. Statements of
//! `sql.rs` run through the backend-neutral [`Tx::query_rows`]/[`Tx::execute`],
//! so each is written once for both backends.

use super::{Param, Tx, rows};
use crate::error::Result;
use crate::money::Credits;
use crate::store::sql::S;
use crate::topups::{AutoTopup, Topup, TopupAmount, TopupStatus};
use crate::types::{EntryId, Timestamp};

use Param::{Int, OptInt, OptText, OptUuid, Text};

/// A top-up from `TOPUP_COLS`.
fn topup(r: &dyn rows::Columns) -> Result<Topup> {
    Ok(Topup {
        id: r.text(0)?,
        user_id: r.text(1)?,
        amount: Credits::from_micros(r.int(2)?),
        status: TopupStatus::parse(&r.text(3)?).map_err(|e| rows::corrupt("top-up status", e))?,
        reason: r.opt_text(4)?,
        entry_id: r.opt_uuid(5)?.map(EntryId),
        created_at: Timestamp(r.int(6)?),
        updated_at: Timestamp(r.int(7)?),
    })
}

/// A rule from `TOPUP_RULE_COLS` (None: no rule).
fn rule(r: &dyn rows::Columns) -> Result<Option<AutoTopup>> {
    let Some(threshold) = r.opt_int(0)? else { return Ok(None) };
    let amount = Credits::from_micros(r.int(2)?);
    let amount = match r.text(1)?.as_str() {
        "fixed" => TopupAmount::Fixed(amount),
        "up_to" => TopupAmount::UpTo(amount),
        other => return Err(rows::corrupt("top-up kind", other)),
    };
    let max_per_month = u32::try_from(r.int(3)?).map_err(|e| rows::corrupt("top-up max_per_month", e))?;
    let monthly_cap = Credits::from_micros(r.int(4)?);
    Ok(Some(AutoTopup { threshold: Credits::from_micros(threshold), amount, max_per_month, monthly_cap }))
}

impl dyn Tx + '_ {
    /// Sets (Some) or removes (None) `user`'s rule; whether the account exists.
    pub(crate) fn set_topup_rule(&mut self, user: &str, r: Option<&AutoTopup>) -> Result<bool> {
        let (kind, amount) = match r.map(|r| r.amount) {
            Some(TopupAmount::Fixed(a)) => (Some("fixed"), Some(a.micros())),
            Some(TopupAmount::UpTo(t)) => (Some("up_to"), Some(t.micros())),
            None => (None, None),
        };
        let params = [
            Text(user),
            OptInt(r.map(|r| r.threshold.micros())),
            OptText(kind),
            OptInt(amount),
            OptInt(r.map(|r| i64::from(r.max_per_month))),
            OptInt(r.map(|r| r.monthly_cap.micros())),
        ];
        Ok(self.execute(&S.set_topup_rule, &params)? > 0)
    }

    pub(crate) fn topup_rule(&mut self, user: &str) -> Result<Option<AutoTopup>> {
        Ok(self.first(&S.topup_rule, &[Text(user)], rule)?.flatten())
    }

    pub(crate) fn insert_topup(&mut self, t: &Topup) -> Result<()> {
        let params = [Text(&t.id), Text(&t.user_id), Int(t.amount.micros()), Int(t.created_at.0)];
        self.execute(&S.insert_topup, &params).map(|_| ())
    }

    pub(crate) fn topup(&mut self, id: &str) -> Result<Option<Topup>> {
        self.first(&S.topup, &[Text(id)], topup)
    }

    /// `user`'s newest `limit` top-ups, newest first.
    pub(crate) fn topups(&mut self, user: &str, limit: u32) -> Result<Vec<Topup>> {
        self.all(&S.topups, &[Text(user), Int(i64::from(limit))], topup)
    }

    /// `user`'s top-ups requested in [start, end), oldest first.
    pub(crate) fn topups_between(&mut self, user: &str, start: Timestamp, end: Timestamp) -> Result<Vec<Topup>> {
        self.all(&S.topups_between, &[Text(user), Int(start.0), Int(end.0)], topup)
    }

    /// Marks a top-up paid by `entry`; false when it already was.
    pub(crate) fn mark_topup_paid(&mut self, id: &str, entry: EntryId, now: Timestamp) -> Result<bool> {
        Ok(self.execute(&S.mark_topup_paid, &[Text(id), OptUuid(Some(entry.0)), Int(now.0)])? > 0)
    }

    /// Marks a requested top-up failed; false when it was not requested.
    pub(crate) fn mark_topup_failed(&mut self, id: &str, reason: &str, now: Timestamp) -> Result<bool> {
        Ok(self.execute(&S.mark_topup_failed, &[Text(id), Text(reason), Int(now.0)])? > 0)
    }
}
