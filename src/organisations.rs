//! The public types of organisation wallets (members, projects, budgets)
//! and of refilling allowances; the operations are in `manager/orgs.rs`
//! and `manager/allowances.rs` (docs/organisations.md).

use crate::money::Credits;
use crate::types::{KeyId, SpendWindow, Timestamp};

/// Whose budget `set_budget` sets: a member of the organisation, or one of
/// its projects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetScope<'a> {
    Member(&'a str),
    Project(&'a str),
}

impl BudgetScope<'_> {
    /// `member` or `project`, as stored and as events and errors say it.
    pub fn kind(&self) -> &'static str {
        match self {
            BudgetScope::Member(_) => "member",
            BudgetScope::Project(_) => "project",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            BudgetScope::Member(n) | BudgetScope::Project(n) => n,
        }
    }
}

/// A budget to set: at most `limit` per `window` (UTC calendar windows, or
/// `lifetime`); a `budget.low` event when a charge takes what is left
/// (limit − spent) below `low_threshold`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetLimit {
    pub limit: Credits,
    pub window: SpendWindow,
    pub low_threshold: Option<Credits>,
}

/// A member's or a project's budget as it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    /// `member` or `project`.
    pub scope: String,
    /// The member's user id or the project's name.
    pub name: String,
    pub limit: Credits,
    pub window: SpendWindow,
    pub low_threshold: Option<Credits>,
    /// Charged in the current window.
    pub spent: Credits,
    /// What verify and reserve still allow: limit − spent − the active
    /// holds placed through the budget's keys (may be negative: charges are
    /// never refused after the fact).
    pub remaining: Credits,
    /// When the current window ends; None for `lifetime`.
    pub resets_at: Option<Timestamp>,
}

/// A member of an organisation: its keys charge the organisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub org_id: String,
    pub user_id: String,
    pub joined_at: Timestamp,
    pub budget: Option<Budget>,
}

/// A named group of an organisation's keys, with an optional budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Project {
    pub org_id: String,
    pub name: String,
    pub created_at: Timestamp,
    /// Keys in the project (revoked ones included).
    pub keys: u32,
    pub budget: Option<Budget>,
}

/// What one member spent of its organisation's credits (usage entries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberUsage {
    pub member_id: String,
    /// Usage entries (charged calls and settlements).
    pub requests: u64,
    /// Input + output tokens.
    pub tokens: u64,
    pub credits: Credits,
}

/// An allowance to create: `amount` every `period` (daily, weekly from
/// Monday, monthly from the 1st, UTC) on `user`'s account, for the whole
/// account, or only for one member of it (`member`) or one key (`key`).
#[derive(Clone, Copy, Debug)]
pub struct AllowanceSpec<'a> {
    pub user: &'a str,
    pub member: Option<&'a str>,
    pub key: Option<KeyId>,
    pub amount: Credits,
    pub period: SpendWindow,
    /// None: rollover off (each period's grant expires at the period's
    /// end). Some(cap): what is left carries over, up to `cap` (≥ amount).
    pub rollover_cap: Option<Credits>,
}

/// An allowance as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowance {
    pub allowance_id: i64,
    pub user_id: String,
    pub member_id: Option<String>,
    pub api_key_id: Option<KeyId>,
    pub amount: Credits,
    pub period: SpendWindow,
    pub rollover_cap: Option<Credits>,
    /// The start of the next period not yet refilled.
    pub next_refill_at: Timestamp,
    pub created_at: Timestamp,
}
