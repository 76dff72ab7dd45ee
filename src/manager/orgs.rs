//! Organisation wallets: members (whose keys charge the organisation),
//! projects (named groups of its keys) and their budgets. The budgets'
//! checks are in the standing statement (`sql::standing`, for verify and
//! reserve); charges count against them here ([`CreditManager::count_budgets`]).

use super::CreditManager;
use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::limits::{MAX_MEMBERS_PER_ORG, MAX_PROJECTS_PER_ORG};
use crate::money::Credits;
use crate::organisations::*;
use crate::store::{BudgetRow, Tx};
use crate::types::*;
use crate::validate;
use std::collections::HashMap;

impl CreditManager {
    /// Makes `member` a member of `org`: from now on its keys verify against
    /// and charge `org`. Idempotent for the same organisation. One level
    /// only: an organisation cannot join another, a member cannot have
    /// members, and an account belongs to at most one organisation.
    pub fn add_member(&self, org: &str, member: &str) -> Result<Member> {
        self.track((|| {
            let org = validate::text("org_id", org)?;
            let member = validate::text("member_id", member)?;
            if org == member {
                return Err(Error::invalid("an account cannot be a member of itself"));
            }
            self.write(|tx| {
                let now = tx.now()?;
                lock_in_order(tx, now, org, member)?;
                match tx.member_org(member)? {
                    Some(o) if o == org => return member_of(tx, org, member, now),
                    Some(o) => {
                        return Err(Error::invalid(format!("{member:?} is a member of {o:?}: remove it there first")));
                    }
                    None => {}
                }
                if let Some(o) = tx.member_org(org)? {
                    return Err(Error::invalid(format!("{org:?} is a member of {o:?}; organisations do not nest")));
                }
                if tx.member_count(member)? > 0 || tx.project_count(member)? > 0 {
                    return Err(Error::invalid(format!(
                        "{member:?} has members or projects of its own; organisations do not nest"
                    )));
                }
                let n = tx.member_count(org)?;
                if n >= MAX_MEMBERS_PER_ORG {
                    return Err(Error::LimitReached {
                        limit: "max_members_per_org",
                        detail: format!("{org:?} has {n} members, the maximum is {MAX_MEMBERS_PER_ORG}"),
                    });
                }
                tx.insert_member(member, org, now)?;
                self.emit(
                    tx,
                    now,
                    org,
                    None,
                    EventKind::MemberAdded,
                    serde_json::json!({ "org_id": org, "member_id": member }),
                )?;
                member_of(tx, org, member, now)
            })
        })())
    }

    /// Ends a membership: the member's keys charge its own account again.
    /// Holds placed while it was a member stay on the organisation (settled
    /// or released there); its budget is deleted, its keys leave their
    /// projects, and the organisation's allowances for it or its keys end
    /// (their grants stay, for any of the organisation's keys); key caps
    /// stay with the keys. `NotFound` when `member` is
    /// not a member of `org`.
    pub fn remove_member(&self, org: &str, member: &str) -> Result<()> {
        self.track((|| {
            let org = validate::text("org_id", org)?;
            let member = validate::text("member_id", member)?;
            self.write(|tx| {
                let now = tx.now()?;
                lock_in_order(tx, now, org, member)?;
                if !tx.delete_member(member, org)? {
                    return Err(Error::NotFound(format!("{member:?} is not a member of {org:?}")));
                }
                tx.delete_budget(org, "member", member)?;
                tx.clear_key_projects(member)?;
                tx.end_scoped(org, (Some(member), None), now)?;
                self.emit(
                    tx,
                    now,
                    org,
                    None,
                    EventKind::MemberRemoved,
                    serde_json::json!({ "org_id": org, "member_id": member }),
                )
            })
        })())
    }

    /// `org`'s members, by user id, with their budgets.
    pub fn members(&self, org: &str) -> Result<Vec<Member>> {
        self.track(validate::text("org_id", org).and_then(|org| {
            self.read(|tx| {
                let now = tx.now()?;
                let mut budgets = budgets_of(tx, org, "member", None, now)?;
                let members = tx.members(org, MAX_MEMBERS_PER_ORG)?;
                Ok(members
                    .into_iter()
                    .map(|(user_id, joined_at)| {
                        let budget = budgets.remove(&user_id);
                        Member { org_id: org.to_string(), user_id, joined_at, budget }
                    })
                    .collect())
            })
        }))
    }

    /// Creates a project of `org` (idempotent).
    pub fn create_project(&self, org: &str, name: &str) -> Result<Project> {
        self.track((|| {
            let org = validate::text("org_id", org)?;
            let name = validate::text("project", name)?;
            self.write(|tx| {
                let now = tx.now()?;
                tx.ensure_account(org, now)?;
                if let Some(o) = tx.member_org(org)? {
                    return Err(Error::invalid(format!("{org:?} is a member of {o:?}: projects belong to {o:?}")));
                }
                if tx.projects(org, Some(name))?.is_empty() {
                    let n = tx.project_count(org)?;
                    if n >= MAX_PROJECTS_PER_ORG {
                        return Err(Error::LimitReached {
                            limit: "max_projects_per_org",
                            detail: format!("{org:?} has {n} projects, the maximum is {MAX_PROJECTS_PER_ORG}"),
                        });
                    }
                    tx.insert_project(org, name, now)?;
                }
                project_of(tx, org, name, now)?.ok_or_else(|| Error::Internal("a project just created is gone".into()))
            })
        })())
    }

    /// `org`'s projects, by name, with their key counts and budgets.
    pub fn projects(&self, org: &str) -> Result<Vec<Project>> {
        self.track(validate::text("org_id", org).and_then(|org| {
            self.read(|tx| {
                let now = tx.now()?;
                let mut budgets = budgets_of(tx, org, "project", None, now)?;
                let projects = tx.projects(org, None)?;
                Ok(projects
                    .into_iter()
                    .map(|(name, created_at, keys)| {
                        let budget = budgets.remove(&name);
                        Project { org_id: org.to_string(), name, created_at, keys, budget }
                    })
                    .collect())
            })
        }))
    }

    /// Puts key `key_id` in `project` of the organisation that pays for it
    /// (None: in no project). `NotFound` for an unknown key or project.
    pub fn set_key_project(&self, key_id: KeyId, project: Option<&str>) -> Result<()> {
        self.track((|| {
            let project = validate::opt_text("project", project)?;
            self.write(|tx| {
                let now = tx.now()?;
                let k = self.owned_key(tx, key_id, None, now)?;
                if let Some(p) = project
                    && tx.projects(k.paying(), Some(p))?.is_empty()
                {
                    return Err(Error::NotFound(format!("{:?} has no project {p:?}", k.paying())));
                }
                tx.set_key_project(k.id, project)
            })
        })())
    }

    /// Sets (Some) or removes (None) the budget of a member or a project of
    /// `org`. Setting one counts the usage already charged in the current
    /// window. `NotFound` for a member or project `org` does not have.
    pub fn set_budget(&self, org: &str, scope: BudgetScope, limit: Option<BudgetLimit>) -> Result<()> {
        self.track((|| {
            let org = validate::text("org_id", org)?;
            let name = validate::text(scope.kind(), scope.name())?;
            if let Some(l) = &limit {
                check_limit(l)?;
            }
            self.write(|tx| {
                let now = tx.now()?;
                tx.ensure_account(org, now)?;
                let known = match scope {
                    BudgetScope::Member(_) => tx.member_org(name)?.as_deref() == Some(org),
                    BudgetScope::Project(_) => !tx.projects(org, Some(name))?.is_empty(),
                };
                if !known {
                    return Err(Error::NotFound(format!("{org:?} has no {} {name:?}", scope.kind())));
                }
                let Some(l) = limit else {
                    tx.delete_budget(org, scope.kind(), name)?;
                    return self.emit_budget_set(tx, now, org, scope, None);
                };
                let (start, end) = l.window.bounds(now);
                let spent = tx.budget_usage_since(org, scope.kind(), name, start)?;
                let row = BudgetRow {
                    scope: scope.kind().to_string(),
                    name: name.to_string(),
                    limit: l.limit,
                    window: l.window,
                    low_threshold: l.low_threshold,
                    window_start: start,
                    window_end: end,
                    spent,
                };
                tx.put_budget(org, &row)?;
                self.emit_budget_set(tx, now, org, scope, Some(l))
            })
        })())
    }

    fn emit_budget_set(
        &self,
        tx: &mut dyn Tx,
        now: Timestamp,
        org: &str,
        scope: BudgetScope,
        l: Option<BudgetLimit>,
    ) -> Result<()> {
        let data = serde_json::json!({
            "org_id": org,
            "scope": scope.kind(),
            "name": scope.name(),
            "limit": l.map(|l| l.limit.to_string()),
            "window": l.map(|l| l.window.as_str()),
            "low_threshold": l.and_then(|l| l.low_threshold).map(|t| t.to_string()),
        });
        self.emit(tx, now, org, None, EventKind::BudgetSet, data)
    }

    /// The entries `member` made on `org`'s account, newest first, before
    /// the entry `before` (as `transactions`).
    pub fn member_transactions(
        &self,
        org: &str,
        member: &str,
        limit: u32,
        before: Option<EntryId>,
    ) -> Result<Vec<Entry>> {
        self.track((|| {
            let org = validate::text("org_id", org)?;
            let member = validate::text("member_id", member)?;
            let limit = validate::page_limit(limit)?;
            self.read(|tx| {
                let before_seq = super::accounts::cursor_seq(tx, org, before)?;
                tx.member_entries(org, member, before_seq, limit)
            })
        })())
    }

    /// Usage totals per member of `org` (entries since `since`, or all), by member.
    pub fn member_usage(&self, org: &str, since: Option<Timestamp>) -> Result<Vec<MemberUsage>> {
        self.track(
            validate::text("org_id", org)
                .and_then(|org| self.read(|tx| tx.member_usage(org, since.unwrap_or(Timestamp(i64::MIN))))),
        )
    }

    /// Counts a charge of `amount` (> 0) by `member` through a key of
    /// `project` against their budgets in `org`, and fires `budget.low`
    /// for each threshold it crosses. Never refuses: the charge happened.
    pub(super) fn count_budgets(
        &self,
        tx: &mut dyn Tx,
        now: Timestamp,
        org: &str,
        (member, project): (Option<&str>, Option<&str>),
        amount: Credits,
        entry: &Entry,
    ) -> Result<()> {
        for mut b in tx.charge_budgets(org, member, project)? {
            let before = b.spent_at(now);
            let after = Credits::from_micros(before.micros().saturating_add(amount.micros()));
            (b.window_start, b.window_end) = b.window.bounds(now);
            b.spent = after;
            tx.set_budget_spend(org, &b)?;
            if let Some(t) = b.low_threshold {
                let left = |spent: Credits| b.limit.micros().saturating_sub(spent.micros());
                if left(before) >= t.micros() && left(after) < t.micros() {
                    let data = serde_json::json!({
                        "org_id": org, "scope": b.scope, "name": b.name, "threshold": t.to_string(),
                        "remaining": Credits::from_micros(left(after)).to_string(), "entry_id": entry.id.to_string(),
                    });
                    self.emit(tx, now, org, entry.api_key_id, EventKind::BudgetLow, data)?;
                }
            }
        }
        Ok(())
    }
}

/// Locks two accounts in one order (by user id), so two writers locking
/// the same pair cannot deadlock.
pub(super) fn lock_in_order(tx: &mut dyn Tx, now: Timestamp, a: &str, b: &str) -> Result<()> {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    tx.ensure_account(first, now)?;
    tx.ensure_account(second, now)
}

fn check_limit(l: &BudgetLimit) -> Result<()> {
    l.limit.validate_threshold("limit")?;
    if let Some(t) = l.low_threshold {
        t.validate_threshold("low_threshold")?;
        if t > l.limit {
            return Err(Error::invalid(format!("low_threshold {t} is above the limit {}", l.limit)));
        }
    }
    Ok(())
}

fn member_of(tx: &mut dyn Tx, org: &str, member: &str, now: Timestamp) -> Result<Member> {
    let joined_at = tx
        .membership(member)?
        .filter(|(o, _)| o == org)
        .map(|(_, t)| t)
        .ok_or_else(|| Error::NotFound(format!("{member:?} is not a member of {org:?}")))?;
    let budget = budget_of(tx, org, "member", member, now)?;
    Ok(Member { org_id: org.to_string(), user_id: member.to_string(), joined_at, budget })
}

fn project_of(tx: &mut dyn Tx, org: &str, name: &str, now: Timestamp) -> Result<Option<Project>> {
    let Some((name, created_at, keys)) = tx.projects(org, Some(name))?.into_iter().next() else {
        return Ok(None);
    };
    let budget = budget_of(tx, org, "project", &name, now)?;
    Ok(Some(Project { org_id: org.to_string(), name, created_at, keys, budget }))
}

/// `org`'s budgets of `scope` (only `name`'s, when given) as they stand at
/// `now`, by name (`sql::budget_remaining` answers what each allows): one
/// statement for a whole listing.
fn budgets_of(
    tx: &mut dyn Tx,
    org: &str,
    scope: &str,
    name: Option<&str>,
    now: Timestamp,
) -> Result<HashMap<String, Budget>> {
    let rows = tx.budgets(org, scope, name, now)?;
    Ok(rows
        .into_iter()
        .map(|(b, remaining)| {
            let resets_at = (b.window != SpendWindow::Lifetime).then(|| b.window.bounds(now).1);
            let budget = Budget {
                spent: b.spent_at(now),
                scope: b.scope,
                name: b.name.clone(),
                limit: b.limit,
                window: b.window,
                low_threshold: b.low_threshold,
                remaining,
                resets_at,
            };
            (b.name, budget)
        })
        .collect())
}

/// One budget as it stands at `now`.
fn budget_of(tx: &mut dyn Tx, org: &str, scope: &str, name: &str, now: Timestamp) -> Result<Option<Budget>> {
    Ok(budgets_of(tx, org, scope, Some(name), now)?.remove(name))
}
