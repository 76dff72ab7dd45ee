//! The operator's reads (docs/reference.md, "Operator reads"): the query
//! types of `list_accounts`, `recent_events` and `daily_flows`, their
//! results, and their checks. The statements are in `store/sql.rs`, run by
//! `store/browse.rs`.

use crate::error::{Error, Result};
use crate::events::MAX_EVENTS_PER_PAGE;
use crate::limits::{MAX_ACCOUNT_OFFSET, MAX_OPERATOR_BYTES};
use crate::money::Credits;
use crate::types::{Timestamp, truncate};
use crate::validate;

/// The order of `list_accounts`; ties are broken by user id, so pages
/// are stable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AccountOrder {
    /// By user id (`"user_id"`).
    #[default]
    UserId,
    /// Lowest balance first (`"balance"`): overdrawn accounts lead.
    BalanceAscending,
    /// Highest balance first (`"-balance"`).
    BalanceDescending,
    /// Most recently created first (`"newest"`).
    Newest,
}

impl AccountOrder {
    pub const ALL: [AccountOrder; 4] =
        [AccountOrder::UserId, AccountOrder::BalanceAscending, AccountOrder::BalanceDescending, AccountOrder::Newest];

    pub fn as_str(self) -> &'static str {
        match self {
            AccountOrder::UserId => "user_id",
            AccountOrder::BalanceAscending => "balance",
            AccountOrder::BalanceDescending => "-balance",
            AccountOrder::Newest => "newest",
        }
    }

    pub fn parse(s: &str) -> Result<AccountOrder> {
        AccountOrder::ALL.into_iter().find(|o| o.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = AccountOrder::ALL.iter().map(|o| o.as_str()).collect();
            Error::invalid(format!("order: unknown order {:?}, expected one of {}", truncate(s), names.join(", ")))
        })
    }
}

/// Which accounts `list_accounts` returns: every filter given must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountQuery {
    /// A case-sensitive substring of the user id (1..=255 bytes).
    pub search: Option<String>,
    /// Only balances strictly below this (0: overdrawn accounts only).
    pub below: Option<Credits>,
    pub order: AccountOrder,
    /// Accounts skipped (0..=`MAX_ACCOUNT_OFFSET`).
    pub offset: u32,
    /// At most this many (1..=`MAX_PAGE_LIMIT`).
    pub limit: u32,
}

impl Default for AccountQuery {
    fn default() -> AccountQuery {
        AccountQuery {
            search: None,
            below: None,
            order: AccountOrder::UserId,
            offset: 0,
            limit: crate::limits::DEFAULT_PAGE_LIMIT,
        }
    }
}

impl AccountQuery {
    pub(crate) fn validate(&self) -> Result<()> {
        validate::opt_text("search", self.search.as_deref())?;
        validate::page_limit(self.limit)?;
        if self.offset > MAX_ACCOUNT_OFFSET {
            return Err(Error::invalid(format!("offset must be in 0..={MAX_ACCOUNT_OFFSET}, got {}", self.offset)));
        }
        Ok(())
    }
}

/// One account of a `list_accounts` page. `balance` is the account row's
/// (grants past their expiry still count until the account's next write
/// or `expire_grants`; `account()` shows them taken off).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountSummary {
    pub user_id: String,
    pub balance: Credits,
    /// The floor of strict operations (≤ 0).
    pub min_balance: Credits,
    /// Active holds not yet expired.
    pub held: Credits,
    /// Keys neither revoked nor expired (disabled ones count).
    pub active_keys: u32,
    pub created_at: Option<Timestamp>,
}

/// A page of `list_accounts`, and how many accounts match the filters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountPage {
    pub accounts: Vec<AccountSummary>,
    pub total: u64,
}

/// Which events `recent_events` returns, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventQuery {
    pub user_id: Option<String>,
    /// An event kind's name (`key.revoked`); a name no event has matches
    /// nothing.
    pub kind: Option<String>,
    /// Only events with an id below this (the cursor of the next page:
    /// the last id of the page before).
    pub before: Option<i64>,
    /// 1..=`MAX_EVENTS_PER_PAGE`.
    pub limit: u32,
}

impl Default for EventQuery {
    fn default() -> EventQuery {
        EventQuery { user_id: None, kind: None, before: None, limit: crate::limits::DEFAULT_EVENTS_LIMIT }
    }
}

impl EventQuery {
    pub(crate) fn validate(&self) -> Result<()> {
        validate::opt_text("user_id", self.user_id.as_deref())?;
        validate::opt_text("kind", self.kind.as_deref())?;
        if let Some(b) = self.before
            && b < 1
        {
            return Err(Error::invalid(format!("before must be an event id (1 or more), got {b}")));
        }
        if !(1..=MAX_EVENTS_PER_PAGE).contains(&self.limit) {
            return Err(Error::invalid(format!("limit must be in 1..={MAX_EVENTS_PER_PAGE}, got {}", self.limit)));
        }
        Ok(())
    }
}

/// One UTC day of `daily_flows`: `purchased` and `used` as the report's
/// `credits_purchased` and `credits_used` count them, and every entry of
/// the day, whatever its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DayFlow {
    /// The UTC midnight starting the day.
    pub day: Timestamp,
    pub purchased: Credits,
    pub used: Credits,
    pub entries: u64,
}

/// An operator's name (`acting_as`): 1..=`MAX_OPERATOR_BYTES` bytes of
/// ASCII letters, digits, `.`, `_`, `-`, `@` and space (an e-mail address
/// or a login fits; nothing that could pass for markup or a line break).
pub(crate) fn operator(name: &str) -> Result<&str> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | ' ');
    if name.is_empty() || name.len() > MAX_OPERATOR_BYTES || !name.chars().all(allowed) {
        return Err(Error::invalid(format!(
            "operator must be 1..={MAX_OPERATOR_BYTES} bytes of ASCII letters, digits, '.', '_', '-', '@' or space, \
             got {:?}",
            truncate(name)
        )));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_parse_their_names() {
        for o in AccountOrder::ALL {
            assert_eq!(AccountOrder::parse(o.as_str()).unwrap(), o);
        }
        assert!(AccountOrder::parse("Balance").is_err());
    }

    #[test]
    fn operator_names() {
        for ok in ["alice", "ops@example.com", "Jane Doe", "a.b_c-d", &"x".repeat(64)] {
            assert!(operator(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a\nb", "<b>", "é", "a\0", &"x".repeat(65), "tab\t"] {
            assert!(operator(bad).is_err(), "{bad:?}");
        }
    }
}
