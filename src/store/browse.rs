//! The operator's reads (`list_accounts`, `holds`, `recent_events`):
//! statements of `sql.rs` run through the backend-neutral
//! [`Tx::query_rows`], so each is written once for both backends.

use super::{HoldRow, HoldStatus, Param, Tx, rows};
use crate::browse::{AccountOrder, AccountQuery, AccountSummary, EventQuery};
use crate::error::Result;
use crate::events::Event;
use crate::money::Credits;
use crate::store::sql::{S, Sql};
use crate::types::{Hold, KeyId, Timestamp};

use Param::{Int, OptInt, OptText, Text};

/// The page statement of an order (`sql::account_page`).
fn page_sql(order: AccountOrder) -> &'static Sql {
    match order {
        AccountOrder::UserId => &S.accounts_by_user_id,
        AccountOrder::BalanceAscending => &S.accounts_by_balance,
        AccountOrder::BalanceDescending => &S.accounts_by_balance_desc,
        AccountOrder::Newest => &S.accounts_newest,
    }
}

/// A hold as listed at `now`: an active hold past its expiry is shown
/// expired (the next write of its account marks it so).
fn listed_hold(h: HoldRow, now: Timestamp) -> Hold {
    let status = if h.status == HoldStatus::Active && h.expires_at <= now { HoldStatus::Expired } else { h.status };
    Hold { hold_id: h.id, user_id: h.user_id, amount: h.amount, expires_at: h.expires_at, status, replayed: false }
}

impl dyn Tx + '_ {
    /// Credits held by active holds unexpired at `now`, every account's.
    pub(crate) fn outstanding_holds(&mut self, now: Timestamp) -> Result<Credits> {
        self.sum(&S.holds_outstanding, &[Int(now.0)])
    }

    /// The page of accounts `q` selects at `now` (checked by the caller).
    pub(crate) fn account_page(&mut self, q: &AccountQuery, now: Timestamp) -> Result<Vec<AccountSummary>> {
        let params = [
            OptText(q.search.as_deref()),
            OptInt(q.below.map(Credits::micros)),
            Int(i64::from(q.limit)),
            Int(i64::from(q.offset)),
            Int(now.0),
        ];
        self.all(page_sql(q.order), &params, |r| {
            Ok(AccountSummary {
                user_id: r.text(0)?,
                balance: Credits::from_micros(r.int(1)?),
                min_balance: Credits::from_micros(r.int(2)?),
                created_at: Some(Timestamp(r.int(3)?)),
                held: Credits::from_micros(r.int(4)?),
                active_keys: u32::try_from(r.int(5)?).unwrap_or(u32::MAX),
            })
        })
    }

    /// How many accounts `q`'s filters select.
    pub(crate) fn account_count(&mut self, q: &AccountQuery) -> Result<u64> {
        let params = [OptText(q.search.as_deref()), OptInt(q.below.map(Credits::micros))];
        Ok(u64::try_from(self.int(&S.account_count, &params)?).unwrap_or(0))
    }

    /// `user`'s holds (only those active at `now`, with `active_only`),
    /// newest first.
    pub(crate) fn hold_page(&mut self, user: &str, active_only: bool, limit: u32, now: Timestamp) -> Result<Vec<Hold>> {
        let limit = Int(i64::from(limit));
        let rows = if active_only {
            self.all(&S.holds_active_page, &[Text(user), Int(now.0), limit], |r| rows::hold(r))?
        } else {
            self.all(&S.holds_page, &[Text(user), limit], |r| rows::hold(r))?
        };
        Ok(rows.into_iter().map(|h| listed_hold(h, now)).collect())
    }

    /// The events `q` selects (checked by the caller), newest first.
    pub(crate) fn recent_events(&mut self, q: &EventQuery) -> Result<Vec<Event>> {
        let (user, kind) = (q.user_id.as_deref(), q.kind.as_deref());
        let sql = match (user, kind) {
            (None, None) => &S.recent_events,
            (Some(_), None) => &S.recent_events_of_user,
            (None, Some(_)) => &S.recent_events_of_kind,
            (Some(_), Some(_)) => &S.recent_events_of_user_kind,
        };
        // The placeholders in `sql::recent_events`' order: before, user, kind, limit.
        let mut params = vec![Int(q.before.unwrap_or(i64::MAX))];
        params.extend(user.map(Text));
        params.extend(kind.map(Text));
        params.push(Int(i64::from(q.limit)));
        self.all(sql, &params, |r| {
            let key = r.opt_uuid(3)?.map(KeyId);
            Event::from_stored(r.int(0)?, &r.text(1)?, r.text(2)?, key, &r.text(4)?, r.int(5)?)
        })
    }
}
