//! `LocalCreditManager` methods of the operator's reads (an admin
//! dashboard's): accounts by page, an account's holds, recent events, daily
//! flows.

use super::LocalCreditManager;
use super::webhooks::flag;
use crate::convert::{self, Text};
use crate::errors::to_py;
use crate::types::{AccountPage, DayFlow, Event, Hold};
use creditgate::{AccountOrder, AccountQuery, EventQuery, limits};
use pyo3::prelude::*;

#[pymethods]
impl LocalCreditManager {
    /// A page of accounts matching the filters, in `order` (`user_id`,
    /// `balance`, `-balance`, `newest`; ties by user id), with the total.
    #[pyo3(
        signature = (*, search=None, below=None, order=None, offset=None, limit=None),
        text_signature = "($self, *, search=None, below=None, order='user_id', offset=0, limit=50)"
    )]
    fn list_accounts(
        &self,
        py: Python<'_>,
        search: Option<Text>,
        below: Option<&Bound<'_, PyAny>>,
        order: Option<Text>,
        offset: Option<&Bound<'_, PyAny>>,
        limit: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<AccountPage> {
        self.counted(py, || {
            let order = match convert::opt_text(py, "order", order)? {
                Some(o) => AccountOrder::parse(&o).map_err(|e| to_py(py, e))?,
                None => AccountOrder::UserId,
            };
            let q = AccountQuery {
                search: convert::opt_text(py, "search", search)?,
                below: convert::opt_amount("below", below)?,
                order,
                offset: convert::opt_u32("offset", offset)?.unwrap_or(0),
                limit: convert::opt_u32("limit", limit)?.unwrap_or(limits::DEFAULT_PAGE_LIMIT),
            };
            let page = self.run(py, move |m| m.list_accounts(&q))?;
            AccountPage::new(py, page)
        })
    }

    /// `user_id`'s holds, newest first: only the active ones unless
    /// `active_only` is False.
    #[pyo3(
        signature = (user_id, *, active_only=None, limit=None),
        text_signature = "($self, user_id, *, active_only=True, limit=50)"
    )]
    fn holds(
        &self,
        py: Python<'_>,
        user_id: &Bound<'_, PyAny>,
        active_only: Option<&Bound<'_, PyAny>>,
        limit: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Hold>> {
        self.counted(py, || {
            let user = convert::user_id(user_id)?;
            let active_only = active_only.filter(|a| !a.is_none()).map(|a| flag("active_only", a)).transpose()?;
            let limit = convert::opt_u32("limit", limit)?.unwrap_or(limits::DEFAULT_PAGE_LIMIT);
            let holds = self.run(py, move |m| m.holds(&user, active_only.unwrap_or(true), limit))?;
            Hold::list(py, holds)
        })
    }

    /// Events newest first, of one account and/or one kind, with ids
    /// below `before` (the last id of the previous page).
    #[pyo3(
        signature = (*, user_id=None, kind=None, before=None, limit=None),
        text_signature = "($self, *, user_id=None, kind=None, before=None, limit=100)"
    )]
    fn recent_events(
        &self,
        py: Python<'_>,
        user_id: Option<&Bound<'_, PyAny>>,
        kind: Option<Text>,
        before: Option<&Bound<'_, PyAny>>,
        limit: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Event>> {
        self.counted(py, || {
            let q = EventQuery {
                user_id: convert::opt_user_id(user_id)?,
                kind: convert::opt_text(py, "kind", kind)?,
                before: convert::opt_int("before", before)?,
                limit: convert::opt_u32("limit", limit)?.unwrap_or(limits::DEFAULT_EVENTS_LIMIT),
            };
            let events = self.run(py, move |m| m.recent_events(&q))?;
            Event::list(py, events)
        })
    }

    /// Credits purchased and used, and entries, per UTC day of
    /// `[since, until)` (at most 366 days); days without entries left out.
    fn daily_flows(
        &self,
        py: Python<'_>,
        since: &Bound<'_, PyAny>,
        until: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<DayFlow>> {
        self.counted(py, || {
            let since = convert::timestamp("since", since)?;
            let until = convert::timestamp("until", until)?;
            let flows = self.run(py, move |m| m.daily_flows(since, until))?;
            DayFlow::list(py, flows)
        })
    }
}
