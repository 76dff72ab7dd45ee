//! The operator's reads (an admin dashboard's): accounts by page, an
//! account's holds, recent events, daily flows. Each is one read snapshot
//! (`store/browse.rs`).

use super::CreditManager;
use super::rollup::Flows;
use crate::browse::{AccountPage, AccountQuery, DayFlow, EventQuery};
use crate::error::Result;
use crate::events::Event;
use crate::totals::day_range;
use crate::types::{Hold, Timestamp};
use crate::validate;

impl CreditManager {
    /// A page of accounts: those `q` selects, in `q.order` (ties by user
    /// id, so pages are stable), with how many match in all.
    pub fn list_accounts(&self, q: &AccountQuery) -> Result<AccountPage> {
        self.track((|| {
            q.validate()?;
            self.read(|tx| {
                let now = tx.now()?;
                let total = tx.account_count(q)?;
                let accounts = tx.account_page(q, now)?;
                Ok(AccountPage { accounts, total })
            })
        })())
    }

    /// `user`'s holds, newest first: only those active now with
    /// `active_only`, else every one (an active hold past its expiry shows
    /// as expired). `limit`: 1..=`MAX_PAGE_LIMIT`.
    pub fn holds(&self, user: &str, active_only: bool, limit: u32) -> Result<Vec<Hold>> {
        self.track((|| {
            let user = validate::text("user_id", user)?;
            let limit = validate::page_limit(limit)?;
            self.read(|tx| {
                let now = tx.now()?;
                tx.hold_page(user, active_only, limit, now)
            })
        })())
    }

    /// Events, newest first (by id; on PostgreSQL a transaction still
    /// committing may add an older id later: follow the outbox with
    /// `events`, not with this).
    pub fn recent_events(&self, q: &EventQuery) -> Result<Vec<Event>> {
        self.track((|| {
            q.validate()?;
            self.read(|tx| tx.recent_events(q))
        })())
    }

    /// Credits purchased and used, and entries, per UTC day that
    /// `[since, until)` touches (each whole, as `daily_totals`; at most
    /// `MAX_TOTALS_DAYS` days), oldest first; days without entries are left
    /// out. `purchased` and `used` count as the report's `credits_purchased`
    /// and `credits_used` do: both are read from the daily totals.
    pub fn daily_flows(&self, since: Timestamp, until: Timestamp) -> Result<Vec<DayFlow>> {
        self.track((|| {
            let (first, end) = day_range(since, until)?;
            self.ensure_rolled_up();
            Flows::per_day(&self.read(|tx| tx.daily_totals(first, end))?)
        })())
    }
}
