//! `LocalCreditManager` methods of organisation wallets (members, projects,
//! budgets, per-member entries and usage) and of refilling allowances.

use super::LocalCreditManager;
use super::args::{opt_id, parse_id};
use crate::convert::{self, Text};
use crate::errors::{invalid, to_py};
use crate::types::{Allowance, Entry, Member, MemberUsage, Project};
use creditgate::{AllowanceSpec, BudgetLimit, BudgetScope, EntryId, KeyId, SpendWindow, limits};
use pyo3::prelude::*;

fn window(py: Python<'_>, field: &str, w: Text) -> PyResult<SpendWindow> {
    SpendWindow::parse(&w.get(py, field)?).map_err(|e| to_py(py, crate::errors::named(field, e)))
}

#[pymethods]
impl LocalCreditManager {
    /// Makes `member_id` a member of `org_id`: its keys verify against and
    /// charge the organisation from now on. Idempotent for the same organisation.
    fn add_member(&self, py: Python<'_>, org_id: &Bound<'_, PyAny>, member_id: &Bound<'_, PyAny>) -> PyResult<Member> {
        self.counted(py, || {
            let org = convert::account_id("org_id", org_id)?;
            let member = convert::account_id("member_id", member_id)?;
            let m = self.run(py, move |m| m.add_member(&org, &member))?;
            Member::new(py, m)
        })
    }

    /// Ends a membership (`NotFound` when `member_id` is not a member of `org_id`).
    fn remove_member(&self, py: Python<'_>, org_id: &Bound<'_, PyAny>, member_id: &Bound<'_, PyAny>) -> PyResult<()> {
        self.counted(py, || {
            let org = convert::account_id("org_id", org_id)?;
            let member = convert::account_id("member_id", member_id)?;
            self.run(py, move |m| m.remove_member(&org, &member))
        })
    }

    fn members(&self, py: Python<'_>, org_id: &Bound<'_, PyAny>) -> PyResult<Vec<Member>> {
        self.counted(py, || {
            let org = convert::account_id("org_id", org_id)?;
            let members = self.run(py, move |m| m.members(&org))?;
            Member::list(py, members)
        })
    }

    /// Creates a project of `org_id` (idempotent).
    fn create_project(&self, py: Python<'_>, org_id: &Bound<'_, PyAny>, name: Text) -> PyResult<Project> {
        self.counted(py, || {
            let org = convert::account_id("org_id", org_id)?;
            let name = name.get(py, "name")?;
            let p = self.run(py, move |m| m.create_project(&org, &name))?;
            Project::new(py, p)
        })
    }

    fn projects(&self, py: Python<'_>, org_id: &Bound<'_, PyAny>) -> PyResult<Vec<Project>> {
        self.counted(py, || {
            let org = convert::account_id("org_id", org_id)?;
            let projects = self.run(py, move |m| m.projects(&org))?;
            Project::list(py, projects)
        })
    }

    /// Puts the key in a project of the organisation that pays for it
    /// (None: in no project).
    #[pyo3(signature = (key_id, project))]
    fn set_key_project(&self, py: Python<'_>, key_id: Text, project: Option<Text>) -> PyResult<()> {
        self.counted(py, || {
            let key_id = parse_id(py, KeyId::parse, "key_id", key_id)?;
            let project = convert::opt_text(py, "project", project)?;
            self.run(py, move |m| m.set_key_project(key_id, project.as_deref()))
        })
    }

    /// Sets the budget of one member or one project of `org_id` (exactly
    /// one of them): at most `limit` per `window` (`daily`, `weekly`,
    /// `monthly`, `lifetime`); `limit=None` removes it.
    #[pyo3(
        signature = (org_id, *, member=None, project=None, limit=None, window="monthly".into(), low_threshold=None),
        text_signature = "($self, org_id, *, member=None, project=None, limit=None, window='monthly', \
                          low_threshold=None)"
    )]
    fn set_budget(
        &self,
        py: Python<'_>,
        org_id: &Bound<'_, PyAny>,
        member: Option<&Bound<'_, PyAny>>,
        project: Option<Text>,
        limit: Option<&Bound<'_, PyAny>>,
        window: Text,
        low_threshold: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.counted(py, || {
            let org = convert::account_id("org_id", org_id)?;
            let member = convert::opt_account_id("member", member)?;
            let project = convert::opt_text(py, "project", project)?;
            let limit = convert::opt_amount("limit", limit)?;
            let window = self::window(py, "window", window)?;
            let low_threshold = convert::opt_amount("low_threshold", low_threshold)?;
            if member.is_some() == project.is_some() {
                return Err(invalid(py, "pass exactly one of member and project".into()));
            }
            let limit = match (limit, low_threshold) {
                (Some(limit), low_threshold) => Some(BudgetLimit { limit, window, low_threshold }),
                (None, None) => None,
                (None, Some(_)) => {
                    return Err(invalid(py, "low_threshold needs a limit (limit=None removes the budget)".into()));
                }
            };
            self.run(py, move |m| {
                let scope = match (&member, &project) {
                    (Some(member), _) => BudgetScope::Member(member),
                    (None, Some(project)) => BudgetScope::Project(project),
                    (None, None) => unreachable!("checked above"),
                };
                m.set_budget(&org, scope, limit)
            })
        })
    }

    /// The entries `member_id` made on `org_id`'s account, newest first (as `transactions`).
    #[pyo3(
        signature = (org_id, member_id, *, limit=None, before=None),
        text_signature = "($self, org_id, member_id, *, limit=50, before=None)"
    )]
    fn member_transactions(
        &self,
        py: Python<'_>,
        org_id: &Bound<'_, PyAny>,
        member_id: &Bound<'_, PyAny>,
        limit: Option<&Bound<'_, PyAny>>,
        before: Option<Text>,
    ) -> PyResult<Vec<Entry>> {
        self.counted(py, || {
            let org = convert::account_id("org_id", org_id)?;
            let member = convert::account_id("member_id", member_id)?;
            let limit = convert::opt_u32("limit", limit)?.unwrap_or(limits::DEFAULT_PAGE_LIMIT);
            let before = opt_id(py, EntryId::parse, "before", before)?;
            let entries = self.run(py, move |m| m.member_transactions(&org, &member, limit, before))?;
            Entry::list(py, entries)
        })
    }

    /// Usage totals per member of `org_id` (since `since`, an aware datetime, or all).
    #[pyo3(signature = (org_id, since=None))]
    fn member_usage(
        &self,
        py: Python<'_>,
        org_id: &Bound<'_, PyAny>,
        since: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<MemberUsage>> {
        self.counted(py, || {
            let org = convert::account_id("org_id", org_id)?;
            let since = convert::opt_timestamp("since", since)?;
            let usage = self.run(py, move |m| m.member_usage(&org, since))?;
            MemberUsage::list(py, usage)
        })
    }

    /// An allowance of `amount` every `period` (`daily`, `weekly`,
    /// `monthly`, UTC) on `user_id`'s account, or only for one `member` or
    /// `key_id` of it; `rollover_cap` turns rollover on. The current
    /// period's grant is issued at once.
    #[pyo3(signature = (user_id, amount, period, *, member=None, key_id=None, rollover_cap=None))]
    fn set_allowance(
        &self,
        py: Python<'_>,
        user_id: &Bound<'_, PyAny>,
        amount: &Bound<'_, PyAny>,
        period: Text,
        member: Option<&Bound<'_, PyAny>>,
        key_id: Option<Text>,
        rollover_cap: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Allowance> {
        self.counted(py, || {
            let user = convert::user_id(user_id)?;
            let amount = convert::amount("amount", amount)?;
            let period = window(py, "period", period)?;
            let member = convert::opt_account_id("member", member)?;
            let key = opt_id(py, KeyId::parse, "key_id", key_id)?;
            let rollover_cap = convert::opt_amount("rollover_cap", rollover_cap)?;
            let a = self.run(py, move |m| {
                let spec = AllowanceSpec { user: &user, member: member.as_deref(), key, amount, period, rollover_cap };
                m.set_allowance(&spec)
            })?;
            Allowance::new(py, a)
        })
    }

    /// Stops an allowance's refills; the grants it issued stay.
    fn remove_allowance(&self, py: Python<'_>, allowance_id: &Bound<'_, PyAny>) -> PyResult<()> {
        self.counted(py, || {
            let id = convert::int("allowance_id", allowance_id)?;
            self.run(py, move |m| m.remove_allowance(id))
        })
    }

    fn allowances(&self, py: Python<'_>, user_id: &Bound<'_, PyAny>) -> PyResult<Vec<Allowance>> {
        self.counted(py, || {
            let user = convert::user_id(user_id)?;
            let allowances = self.run(py, move |m| m.allowances(&user))?;
            Allowance::list(py, allowances)
        })
    }
}
