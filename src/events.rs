//! The transactional outbox: events a host acts on (e-mails, auto top-up,
//! alerts), written in the same transaction as the change they describe, so
//! none is lost when the change commits and none exists when it rolls back.
//! A host reads them in commit order with `events(after, limit)` and keeps
//! the id of the last one it handled as its cursor.

use crate::types::{KeyId, Timestamp};
use serde_json::Value;

/// What happened. The string form (`as_str`) is the stable name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// The balance fell below a configured low-balance threshold (once per
    /// crossing: it fires again only after the balance has been at or above
    /// the threshold). Data: `threshold`, `balance`, `entry_id`.
    BalanceLow,
    /// The user's first purchase. Data: `entry_id`, `amount`.
    FirstPurchase,
    /// A debit took the balance from ≥ 0 to below 0. Data: `entry_id`, `balance`.
    Overdraft,
    /// Data: `name`, `first_key`.
    KeyCreated,
    /// Data: none.
    KeyRevoked,
    /// `disable_api_key` disabled an enabled key. Data: none.
    KeyDisabled,
    /// `enable_api_key` enabled a disabled key. Data: none.
    KeyEnabled,
    /// `rotate_api_key`; on the old key. Data: `old_key_id`, `new_key_id`,
    /// `grace_ends_at` (RFC 3339: when the old key stops verifying).
    KeyRotated,
    /// `set_key_limit`. Data: `limit` (decimal credits, or null: no cap),
    /// `window`, `spent_in_window` (decimal credits, counted from the ledger).
    KeyLimitSet,
    /// `set_api_key_expiry`. Data: `expires_at` (RFC 3339, or null: none).
    KeyExpirySet,
    /// A grant reached its `expires_at` with credits left, which an `expiry`
    /// entry removed. Data: `grant_id`, `amount` (credits expired),
    /// `category`, `entry_id`.
    GrantExpired,
    /// A payment the host could not map to an account (a paid Stripe event
    /// without one), recorded by `record_event` for an operator; the user id
    /// is empty. Data: what the host recorded (e.g. `provider`, `event_id`,
    /// `payment_id`, `amount_minor`, `currency`, `reason`).
    PaymentUnmapped,
    /// `add_member`; on the organisation. Data: `org_id`, `member_id`.
    MemberAdded,
    /// `remove_member`; on the organisation. Data: `org_id`, `member_id`.
    MemberRemoved,
    /// `set_budget`; on the organisation. Data: `org_id`, `scope` (`member` or
    /// `project`), `name`, `limit` (decimal credits, or null: removed),
    /// `window`, `low_threshold`.
    BudgetSet,
    /// A charge took a budget's remaining (limit − spent) from at or above
    /// its `low_threshold` to below it; on the organisation. Data: `org_id`, `scope`,
    /// `name`, `threshold`, `remaining`, `entry_id`.
    BudgetLow,
    /// `set_allowance`. Data: `allowance_id`, `amount`, `period`,
    /// `rollover_cap`, `member_id`, `api_key_id`.
    AllowanceSet,
    /// `remove_allowance`. Data: `allowance_id`.
    AllowanceRemoved,
    /// An allowance's refill for a period was written. Data:
    /// `allowance_id`, `amount`, `period_start`, `period_end` (RFC 3339),
    /// `grant_id`, `entry_id` (absent when the cap left nothing to add).
    AllowanceRefilled,
}

impl EventKind {
    /// Every kind, in a stable order (for bindings and the CLI to list them).
    pub const ALL: &'static [EventKind] = ALL;

    /// The stable name, e.g. `balance.low`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::BalanceLow => "balance.low",
            EventKind::FirstPurchase => "purchase.first",
            EventKind::Overdraft => "overdraft",
            EventKind::KeyCreated => "key.created",
            EventKind::KeyRevoked => "key.revoked",
            EventKind::KeyDisabled => "key.disabled",
            EventKind::KeyEnabled => "key.enabled",
            EventKind::KeyRotated => "key.rotated",
            EventKind::KeyLimitSet => "key.limit_set",
            EventKind::KeyExpirySet => "key.expiry_set",
            EventKind::GrantExpired => "grant.expired",
            EventKind::PaymentUnmapped => "payment.unmapped",
            EventKind::MemberAdded => "member.added",
            EventKind::MemberRemoved => "member.removed",
            EventKind::BudgetSet => "budget.set",
            EventKind::BudgetLow => "budget.low",
            EventKind::AllowanceSet => "allowance.set",
            EventKind::AllowanceRemoved => "allowance.removed",
            EventKind::AllowanceRefilled => "allowance.refilled",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<EventKind> {
        ALL.iter().copied().find(|k| k.as_str() == s)
    }
}

impl std::str::FromStr for EventKind {
    type Err = crate::Error;

    /// Parses a stable name (`balance.low`); `InvalidArgument` listing the kinds.
    fn from_str(s: &str) -> crate::Result<EventKind> {
        EventKind::parse(s).ok_or_else(|| {
            let names: Vec<&str> = ALL.iter().map(|k| k.as_str()).collect();
            crate::Error::invalid(format!(
                "unknown event kind {:?}; the kinds are {}",
                crate::types::truncate(s),
                names.join(", ")
            ))
        })
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const ALL: &[EventKind] = &[
    EventKind::BalanceLow,
    EventKind::FirstPurchase,
    EventKind::Overdraft,
    EventKind::KeyCreated,
    EventKind::KeyRevoked,
    EventKind::KeyDisabled,
    EventKind::KeyEnabled,
    EventKind::KeyRotated,
    EventKind::KeyLimitSet,
    EventKind::KeyExpirySet,
    EventKind::GrantExpired,
    EventKind::PaymentUnmapped,
    EventKind::MemberAdded,
    EventKind::MemberRemoved,
    EventKind::BudgetSet,
    EventKind::BudgetLow,
    EventKind::AllowanceSet,
    EventKind::AllowanceRemoved,
    EventKind::AllowanceRefilled,
];

/// The kinds a host may record itself with `record_event`; every other
/// kind is written only by the ledger, with the change it describes.
pub const HOST_EVENT_KINDS: &[EventKind] = &[EventKind::PaymentUnmapped];

/// One outbox event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Unique and never reused; pass the last one handled as `after`. On
    /// PostgreSQL ids are not handed out in commit order, so do not compare
    /// them: `events` returns them in commit order, which is what the cursor
    /// follows.
    pub id: i64,
    pub kind: EventKind,
    pub user_id: String,
    pub api_key_id: Option<KeyId>,
    /// A JSON object; its fields depend on `kind` (see [`EventKind`]).
    pub data: Value,
    pub created_at: Timestamp,
}

/// An event before the store gives it an id.
pub(crate) struct NewEvent<'a> {
    pub kind: EventKind,
    pub user_id: &'a str,
    pub api_key_id: Option<KeyId>,
    pub data: Value,
    pub created_at: Timestamp,
}

pub(crate) use crate::limits::MAX_EVENTS_PER_PAGE;

impl Event {
    /// The event's one JSON form (a webhook's body, and what the front doors
    /// show): `{"id", "type", "timestamp" (RFC 3339, UTC), "user_id",
    /// "api_key_id" (null or a UUID), "data"}`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "type": self.kind.as_str(),
            "timestamp": self.created_at.to_rfc3339(),
            "user_id": self.user_id,
            "api_key_id": self.api_key_id.map(|k| k.to_string()),
            "data": self.data,
        })
    }

    /// Rebuilds an event from its stored columns.
    pub(crate) fn from_stored(
        id: i64,
        kind: &str,
        user_id: String,
        api_key_id: Option<KeyId>,
        data: &str,
        created_at: i64,
    ) -> crate::Result<Event> {
        let bad = |what: &str| crate::Error::Internal(format!("event {id} has {what} in the database"));
        let kind = EventKind::parse(kind).ok_or_else(|| bad("an unknown kind"))?;
        let data = serde_json::from_str(data).map_err(|_| bad("data that is not JSON"))?;
        Ok(Event { id, kind, user_id, api_key_id, data, created_at: Timestamp(created_at) })
    }
}

/// The error for an `after` that names no event.
pub(crate) fn unknown_cursor(after: i64) -> crate::Error {
    crate::Error::invalid(format!("events: after={after} is not the id of an event (use 0 to start)"))
}
