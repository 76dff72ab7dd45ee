"""What each page shows, as named tables: the HTML, the charts, the CSV and the JSON of a page
are all drawn from these same rows, so every figure on a page can be downloaded as it is shown.

Views only read (admin actions are in ``actions.py``) and page every list that can grow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from .. import LocalCreditManager
from .._creditgate import MAX_ACCOUNT_OFFSET
from . import charts
from .params import BadRequest, Params

PAGE_ROWS = 50
ACCOUNT_EVENTS = 20
ACCOUNT_ORDERS = ("balance", "user_id", "-balance", "newest")
KEY_WINDOWS = ("daily", "weekly", "monthly", "lifetime")


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    unit: str = ""  # "credits", "tokens", ...: shown in the header, kept out of the cells
    link: str = ""  # "user": the cell links to that account's page


@dataclass
class Table:
    name: str
    title: str
    columns: Sequence[Column]
    rows: list[dict[str, Any]]
    chart: str = ""  # rendered SVG drawn from these rows ("" for none)
    more: dict[str, str] | None = None  # the query of the next page, when there is one
    more_path: str = ""  # where that page is, when not on this page's path


@dataclass
class Page:
    name: str
    title: str
    tables: list[Table]
    context: dict[str, Any] = field(default_factory=dict)

    def table(self, name: str) -> Table:
        for t in self.tables:
            if t.name == name:
                return t
        raise BadRequest(f"this page has no table {name[:32]!r}; it has {', '.join(t.name for t in self.tables)}")


def _day(d: datetime) -> str:
    return d.astimezone(timezone.utc).strftime("%Y-%m-%d")


def _range_context(start: datetime, end: datetime, days: int) -> dict[str, Any]:
    return {"since": _day(start), "until": _day(end - timedelta(days=1)), "days": days}


# ----- overview ---------------------------------------------------------------------------------


def overview(m: LocalCreditManager, p: Params) -> Page:
    start, end, days = p.day_range()
    p.done()
    r = m.report()
    figures = Table(
        "figures",
        "The ledger now",
        [Column("figure", "Figure"), Column("value", "Value"), Column("unit", "Unit")],
        [
            {"figure": "Users", "value": r.users, "unit": "accounts"},
            {"figure": "Paying users", "value": r.paying_users, "unit": "accounts"},
            {"figure": "Purchase conversion", "value": r.purchase_conversion_rate, "unit": "ratio"},
            {"figure": "Credits purchased", "value": r.credits_purchased, "unit": "credits"},
            {"figure": "Credits used", "value": r.credits_used, "unit": "credits"},
            {"figure": "Outstanding balance", "value": r.outstanding_balance, "unit": "credits"},
            {"figure": "Outstanding holds", "value": r.outstanding_holds, "unit": "credits"},
            {"figure": "Overdraft receivable", "value": r.overdraft_receivable, "unit": "credits"},
            {"figure": "Revenue (USD)", "value": Decimal(r.revenue_usd_minor) / 100, "unit": "USD"},
        ],
    )
    return Page(
        "overview",
        "Overview",
        [figures, _daily_table(m, start, end, days), _model_table(m, start, end)],
        _range_context(start, end, days),
    )


def _daily_table(m: LocalCreditManager, start: datetime, end: datetime, days: int) -> Table:
    flows = {_day(f.day): f for f in m.daily_flows(start, end)}
    labels = [_day(start + timedelta(days=n)) for n in range(days)]
    purchased = [flows[d].purchased if d in flows else Decimal(0) for d in labels]
    used = [flows[d].used if d in flows else Decimal(0) for d in labels]
    entries = [flows[d].entries if d in flows else 0 for d in labels]
    rows: list[dict[str, Any]] = [
        {"day": d, "purchased": p, "used": u, "entries": n} for d, p, u, n in zip(labels, purchased, used, entries)
    ]
    table = Table(
        "daily",
        "Credits purchased and used per day (UTC)",
        [
            Column("day", "Day"),
            Column("purchased", "Purchased", "credits"),
            Column("used", "Used", "credits"),
            Column("entries", "Entries"),
        ],
        rows,
    )
    table.chart = charts.bar_chart(
        table.title,
        labels,
        [charts.Series("Purchased", purchased), charts.Series("Used", used)],
        y_label="Credits",
        x_label="Day (UTC)",
        unit="credits",
        chart_id="daily-chart",  # not "daily": the section of the table has that id
    )
    return table


def _model_table(m: LocalCreditManager, start: datetime, end: datetime) -> Table:
    usage = m.usage_summary(since=start, until=end, group_by=["model"])
    rows: list[dict[str, Any]] = [
        {
            "model": u.model or "(none)",
            "requests": u.requests,
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "credits": u.credits,
        }
        for u in usage
    ]
    table = Table(
        "models",
        "Usage by model",
        [
            Column("model", "Model"),
            Column("requests", "Requests"),
            Column("input_tokens", "Input", "tokens"),
            Column("output_tokens", "Output", "tokens"),
            Column("credits", "Used", "credits"),
        ],
        rows,
    )
    shown = usage[: charts.CATEGORIES_MAX]
    table.chart = charts.bar_chart(
        "Credits used by model",
        [u.model or "(none)" for u in shown],
        [charts.Series("Used", [u.credits for u in shown])],
        y_label="Credits",
        x_label="Model",
        unit="credits",
        chart_id="models-chart",  # not "models": the section of the table has that id
    )
    return table


# ----- accounts ---------------------------------------------------------------------------------


def accounts(m: LocalCreditManager, p: Params) -> Page:
    search = p.text("q")
    order = p.choice("order", ACCOUNT_ORDERS)
    below = p.amount("below")
    page = p.integer("page", 1, 1, MAX_ACCOUNT_OFFSET // PAGE_ROWS)  # the core's bound on list_accounts
    p.done()
    found = m.list_accounts(search=search, below=below, order=order, offset=(page - 1) * PAGE_ROWS, limit=PAGE_ROWS)
    rows = [
        {
            "user_id": a.user_id,
            "balance": a.balance,
            "held": a.held,
            "min_balance": a.min_balance,
            "active_keys": a.active_keys,
            "created_at": a.created_at,
        }
        for a in found.accounts
    ]
    table = Table(
        "accounts",
        f"Accounts ({found.total} matching)",
        [
            Column("user_id", "User", link="user"),
            Column("balance", "Balance", "credits"),
            Column("held", "Held", "credits"),
            Column("min_balance", "Floor", "credits"),
            Column("active_keys", "Active keys"),
            Column("created_at", "Created"),
        ],
        rows,
    )
    query = {"q": search or "", "order": order, "below": "" if below is None else str(below)}
    if page * PAGE_ROWS < found.total:
        table.more = {**query, "page": str(page + 1)}
    return Page("accounts", "Accounts", [table], {"query": query, "page": page, "total": found.total})


# ----- one account ------------------------------------------------------------------------------


def account(m: LocalCreditManager, p: Params) -> Page:
    user = p.required("user")
    before = p.text("before")
    p.done()
    a = m.account(user)
    if a.created_at is None:  # account() answers zeros for a user the ledger has never seen
        raise BadRequest(f"no account {user[:64]!r}", 404)
    summary = Table(
        "summary",
        "Balance",
        [Column("figure", "Figure"), Column("value", "Value", "credits")],
        [
            {"figure": "Balance", "value": a.balance},
            {"figure": "Held", "value": a.held},
            {"figure": "Available", "value": a.available},
            {"figure": "Overdraft floor", "value": a.min_balance},
            {"figure": "Purchased (lifetime)", "value": a.lifetime_purchased},
            {"figure": "Used (lifetime)", "value": a.lifetime_used},
        ],
    )
    tables = [
        summary,
        _grants(a),
        _keys(m, user),
        _holds(m, user),
        _transactions(m, user, before),
        _events_of(m, user),
        _allowances(m, user),
        _budgets(m, user),
    ]
    context = {"user": user, "organisation": a.organisation, "auto_topup": a.auto_topup, "windows": KEY_WINDOWS}
    return Page("account", f"Account {user}", tables, context)


def _grants(a: Any) -> Table:
    return Table(
        "grants",
        "Grants",
        [
            Column("grant_id", "Grant"),
            Column("category", "Category"),
            Column("amount", "Amount", "credits"),
            Column("remaining", "Remaining", "credits"),
            Column("expires_at", "Expires"),
            Column("created_at", "Created"),
        ],
        [
            {
                "grant_id": g.grant_id,
                "category": g.category,
                "amount": g.amount,
                "remaining": g.remaining,
                "expires_at": g.expires_at,
                "created_at": g.created_at,
            }
            for g in a.grants
        ],
    )


def key_status(k: Any, now: datetime) -> str:
    if k.revoked_at is not None:
        return "revoked"
    if k.expires_at is not None and k.expires_at <= now:
        return "expired"
    return "disabled" if k.disabled else "active"


def _keys(m: LocalCreditManager, user: str) -> Table:
    now = datetime.now(timezone.utc)
    rows = [
        {
            "key_id": k.key_id,
            "name": k.name,
            "prefix": k.prefix,
            "status": key_status(k, now),
            "project": k.project,
            "spend_limit": k.spend_limit,
            "spend_window": k.spend_window,
            "spent_in_window": k.spent_in_window,
            "last_used_at": k.last_used_at,
            "created_at": k.created_at,
        }
        for k in m.list_api_keys(user)
    ]
    return Table(
        "keys",
        "API keys (never their secrets)",
        [
            Column("key_id", "Key id"),
            Column("name", "Name"),
            Column("prefix", "Prefix"),
            Column("status", "Status"),
            Column("project", "Project"),
            Column("spend_limit", "Cap", "credits"),
            Column("spend_window", "Cap window"),
            Column("spent_in_window", "Spent in window", "credits"),
            Column("last_used_at", "Last used"),
            Column("created_at", "Created"),
        ],
        rows,
    )


def _holds(m: LocalCreditManager, user: str) -> Table:
    return Table(
        "holds",
        # An account holds at most MAX_ACTIVE_HOLDS_PER_USER at once (100 by default).
        f"Active holds (the {PAGE_ROWS} newest)",
        [
            Column("hold_id", "Hold"),
            Column("amount", "Amount", "credits"),
            Column("status", "Status"),
            Column("expires_at", "Expires"),
        ],
        [
            {"hold_id": h.hold_id, "amount": h.amount, "status": h.status, "expires_at": h.expires_at}
            for h in m.holds(user, active_only=True, limit=PAGE_ROWS)
        ],
    )


def _transactions(m: LocalCreditManager, user: str, before: str | None) -> Table:
    entries = m.transactions(user, limit=PAGE_ROWS + 1, before=before)
    rows = [
        {
            "id": e.id,
            "seq": e.seq,
            "kind": e.kind,
            "amount": e.amount,
            "balance_after": e.balance_after,
            "model": e.model,
            "tokens": None if e.input_tokens is None else e.input_tokens + (e.output_tokens or 0),
            "reference": e.reference,
            "operator": (e.metadata or {}).get("operator"),
            "created_at": e.created_at,
        }
        for e in entries[:PAGE_ROWS]
    ]
    table = Table(
        "transactions",
        "Transactions, newest first",
        [
            Column("seq", "#"),
            Column("kind", "Kind"),
            Column("amount", "Amount", "credits"),
            Column("balance_after", "Balance after", "credits"),
            Column("model", "Model"),
            Column("tokens", "Tokens"),
            Column("reference", "Reference"),
            Column("operator", "Operator"),
            Column("created_at", "At"),
            Column("id", "Entry id"),
        ],
        rows,
    )
    if len(entries) > PAGE_ROWS:
        table.more = {"user": user, "before": entries[PAGE_ROWS - 1].id}
    return table


def _events_of(m: LocalCreditManager, user: str) -> Table:
    found = m.recent_events(user_id=user, limit=ACCOUNT_EVENTS + 1)
    table = _event_table(found[:ACCOUNT_EVENTS], f"Recent events (the {ACCOUNT_EVENTS} newest)")
    if len(found) > ACCOUNT_EVENTS:  # the rest, paged, on the events page
        table.more, table.more_path = {"user": user}, "/events"
    return table


def _allowances(m: LocalCreditManager, user: str) -> Table:
    return Table(
        "allowances",
        "Allowances",
        [
            Column("allowance_id", "Allowance"),
            Column("amount", "Amount", "credits"),
            Column("period", "Period"),
            Column("next_refill_at", "Next refill"),
            Column("member_id", "Member"),
            Column("api_key_id", "Key"),
        ],
        [
            {
                "allowance_id": al.allowance_id,
                "amount": al.amount,
                "period": al.period,
                "next_refill_at": al.next_refill_at,
                "member_id": al.member_id,
                "api_key_id": al.api_key_id,
            }
            for al in m.allowances(user)
        ],
    )


def _budgets(m: LocalCreditManager, org: str) -> Table:
    """An organisation's member and project budgets (none for an account outside one)."""
    scoped = [(b.scope, b) for b in [*(x.budget for x in m.members(org)), *(x.budget for x in m.projects(org))] if b]
    return Table(
        "budgets",
        "Budgets of members and projects",
        [
            Column("scope", "Scope"),
            Column("name", "Member or project"),
            Column("limit", "Limit", "credits"),
            Column("window", "Window"),
            Column("spent", "Spent", "credits"),
            Column("remaining", "Remaining", "credits"),
            Column("resets_at", "Resets"),
        ],
        [
            {
                "scope": scope,
                "name": b.name,
                "limit": b.limit,
                "window": b.window,
                "spent": b.spent,
                "remaining": b.remaining,
                "resets_at": b.resets_at,
            }
            for scope, b in scoped
        ],
    )


# ----- models and events -----------------------------------------------------------------------


def models(m: LocalCreditManager, p: Params) -> Page:
    start, end, days = p.day_range()
    p.done()
    prices = Table(
        "prices",
        "Prices in effect (credits per 1,000 tokens)",
        [
            Column("model", "Model"),
            Column("input_per_1k", "Input", "credits"),
            Column("output_per_1k", "Output", "credits"),
            Column("cached_input_per_1k", "Cached input", "credits"),
            Column("cache_write_per_1k", "Cache write", "credits"),
            Column("request_fee", "Per request", "credits"),
        ],
        [
            {
                "model": name,
                "input_per_1k": pr.input_per_1k,
                "output_per_1k": pr.output_per_1k,
                "cached_input_per_1k": pr.cached_input_per_1k,
                "cache_write_per_1k": pr.cache_write_per_1k,
                "request_fee": pr.request_fee,
            }
            for name, pr in sorted(m.model_prices().items())
        ],
    )
    history = Table(
        "history",
        "Price changes",
        [
            Column("model", "Model"),
            Column("effective_at", "Effective"),
            Column("input_per_1k", "Input", "credits"),
            Column("output_per_1k", "Output", "credits"),
            Column("set_at", "Set at"),
        ],
        [
            {
                "model": v.model,
                "effective_at": v.effective_at,
                "input_per_1k": v.price.input_per_1k,
                "output_per_1k": v.price.output_per_1k,
                "set_at": v.set_at,
            }
            for v in m.price_history()
        ],
    )
    return Page(
        "models", "Models and prices", [prices, _model_table(m, start, end), history], _range_context(start, end, days)
    )


def events(m: LocalCreditManager, p: Params) -> Page:
    kind = p.text("kind")
    user = p.text("user")
    before = p.optional_integer("before", 1, 2**63 - 1)
    p.done()
    found = m.recent_events(user_id=user, kind=kind, before=before, limit=PAGE_ROWS + 1)
    table = _event_table(found[:PAGE_ROWS], "Events, newest first")
    if len(found) > PAGE_ROWS:
        table.more = {"kind": kind or "", "user": user or "", "before": str(found[PAGE_ROWS - 1].id)}
    return Page("events", "Events", [table], {"kind": kind or "", "user": user or ""})


def _event_table(found: Sequence[Any], title: str) -> Table:
    return Table(
        "events",
        title,
        [
            Column("id", "Id"),
            Column("kind", "Kind"),
            Column("user_id", "User", link="user"),
            Column("api_key_id", "Key"),
            Column("data", "Data"),
            Column("created_at", "At"),
        ],
        [
            {
                "id": e.id,
                "kind": e.kind,
                "user_id": e.user_id,
                "api_key_id": e.api_key_id,
                "data": e.data,
                "created_at": e.created_at,
            }
            for e in found
        ],
    )
