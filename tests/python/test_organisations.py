"""Organisation wallets and refilling allowances through the Python front door
(docs/organisations.md): members charging their organisation, member and
project budgets in verify and reserve (the 402's ``limit_source``), entries and
usage per member, allowances and their refill, bad input for every new call,
the asyncio mirrors and the command line. Runs on both backends."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from conftest import IS_POSTGRES, psql, settled_events
from creditgate import (
    Allowance,
    AsyncLocalCreditManager,
    Budget,
    InsufficientCredits,
    InvalidArgument,
    LocalCreditManager,
    Member,
    MemberUsage,
    NotFound,
    Project,
)
from creditgate._creditgate import MAX_EVENTS_PER_PAGE
from creditgate._json import to_json

UNKNOWN_UUID = "01a213dc-0000-7000-8000-000000000000"
DAY_MICROS = 86_400 * 1_000_000
D = Decimal
# Values of the wrong type (TypeError), typed Any to get past the checker.
FLOAT: Any = 1.5
NOT_TEXT: Any = 7
NOT_TIME: Any = "2026-01-01"
NOT_INT: Any = "1"


@pytest.fixture
def org(manager: LocalCreditManager) -> Iterator[tuple[LocalCreditManager, str, str]]:
    """Organisation "acme" with 10,000 paid credits and member "m1", whose key
    is returned with the manager: (manager, m1's secret, its key id)."""
    manager.record_payment("acme", "pay_acme", 1000)
    manager.add_member("acme", "m1")
    key = manager.create_api_key("m1")
    yield manager, key.secret, key.key_id
    assert manager.audit().ok


def ledger_state(m: LocalCreditManager, *users: str) -> str:
    """What a refused call must leave as it was, as exact JSON: every entry
    and event, and the organisations' members, projects and allowances."""
    return to_json(
        [
            m.audit().entries_checked,
            [(u, m.get_balance(u), m.transactions(u), m.members(u), m.projects(u), m.allowances(u)) for u in users],
            # Every call before this one has returned: its events are visible.
            [e.id for e in m.events(limit=MAX_EVENTS_PER_PAGE)],
        ]
    )


def test_a_members_key_charges_the_organisation(org: tuple[LocalCreditManager, str, str]) -> None:
    m, secret, key_id = org
    assert m.account("m1").organisation == "acme" and m.account("acme").organisation is None
    (member,) = m.members("acme")
    assert isinstance(member, Member)
    assert (member.org_id, member.user_id, member.budget) == ("acme", "m1", None)
    assert m.add_member("acme", "m1").joined_at == member.joined_at  # idempotent
    before = m.get_balance("acme")
    v = m.verify_api_key_credits(secret)
    assert v.available == m.account("acme").available
    assert (v.member_remaining, v.project_remaining) == (None, None)
    charge = m.record_usage(secret, tokens=3000)
    assert charge.charged == 3
    assert m.get_balance("acme") == before - 3 and m.get_balance("m1") == 0
    usage = m.transactions("acme")[0]
    assert (usage.kind, usage.member_id, usage.api_key_id) == ("usage", "m1", key_id)
    assert usage.to_dict()["member_id"] == "m1"
    # Leaving: the member's keys charge its own (empty) account again.
    m.remove_member("acme", "m1")
    assert m.members("acme") == [] and m.account("m1").organisation is None
    with pytest.raises(InsufficientCredits) as e:
        m.verify_api_key_credits(secret)
    assert e.value.limit_source == "account"


def test_member_and_project_budgets_bind_verify_and_reserve(org: tuple[LocalCreditManager, str, str]) -> None:
    m, secret, key_id = org
    m.set_budget("acme", member="m1", limit=10, window="daily", low_threshold=2)
    (budget,) = [x.budget for x in m.members("acme")]
    assert isinstance(budget, Budget)
    assert (budget.scope, budget.name, budget.limit, budget.window) == ("member", "m1", D(10), "daily")
    assert (budget.low_threshold, budget.spent, budget.remaining) == (D(2), D(0), D(10))
    assert budget.resets_at is not None and budget.resets_at > datetime.now(timezone.utc)
    assert m.verify_api_key_credits(secret).member_remaining == 10
    state = ledger_state(m, "acme", "m1")
    with pytest.raises(InsufficientCredits) as e:
        m.verify_api_key_credits(secret, 11)
    assert (e.value.limit_source, e.value.available, e.value.required) == ("member", D(10), D(11))
    with pytest.raises(InsufficientCredits) as e:
        m.reserve(secret, credits=11)
    assert (e.value.limit_source, e.value.available) == ("member", D(10))
    assert ledger_state(m, "acme", "m1") == state

    project = m.create_project("acme", "research")
    assert isinstance(project, Project)
    assert (project.org_id, project.name, project.keys, project.budget) == ("acme", "research", 0, None)
    m.set_key_project(key_id, "research")
    assert m.list_api_keys("m1")[0].project == "research"
    m.set_budget("acme", project="research", limit=3, window="lifetime")
    (project,) = m.projects("acme")
    assert project.keys == 1 and project.budget is not None
    assert (project.budget.scope, project.budget.limit, project.budget.resets_at) == ("project", D(3), None)
    v = m.verify_api_key_credits(secret)
    assert (v.member_remaining, v.project_remaining) == (D(10), D(3))
    assert v.to_dict()["project_remaining"] == 3
    with pytest.raises(InsufficientCredits) as e:
        m.verify_api_key_credits(secret, 4)
    assert (e.value.limit_source, e.value.available) == ("project", D(3))
    with pytest.raises(InsufficientCredits) as e:
        m.reserve(secret, credits=4)
    assert (e.value.limit_source, e.value.available) == ("project", D(3))
    # A hold within every limit counts against both budgets until settled.
    hold = m.reserve(secret, credits=2)
    assert m.verify_api_key_credits(secret).project_remaining == 1
    m.settle(hold.hold_id, credits=2)
    (member,) = m.members("acme")
    assert member.budget is not None and (member.budget.spent, member.budget.remaining) == (D(2), D(8))
    # Removing the project budget (limit=None) leaves the member's.
    m.set_budget("acme", project="research", limit=None)
    assert m.projects("acme")[0].budget is None
    m.set_key_project(key_id, None)
    assert m.list_api_keys("m1")[0].project is None
    with pytest.raises(InsufficientCredits) as e:
        m.reserve(secret, credits=9)
    assert (e.value.limit_source, e.value.available) == ("member", D(8))


def test_member_transactions_and_usage(org: tuple[LocalCreditManager, str, str]) -> None:
    m, secret, _ = org
    m.add_member("acme", "m2")
    other = m.create_api_key("m2").secret
    m.record_usage(secret, input_tokens=1000, output_tokens=1000)
    m.record_usage(other, tokens=5000)
    m.record_usage(secret, tokens=1000)
    mine = m.member_transactions("acme", "m1")
    assert [(e.member_id, e.amount) for e in mine] == [("m1", D(-1)), ("m1", D(-2))]
    assert [e.id for e in m.member_transactions("acme", "m1", limit=1, before=mine[0].id)] == [mine[1].id]
    assert [e.member_id for e in m.member_transactions("acme", "m2")] == ["m2"]
    usage = m.member_usage("acme")
    assert all(isinstance(u, MemberUsage) for u in usage)
    assert [(u.member_id, u.requests, u.tokens, u.credits) for u in usage] == [
        ("m1", 2, 3000, D(3)),
        ("m2", 1, 5000, D(5)),
    ]
    assert m.member_usage("acme", since=datetime.now(timezone.utc) + timedelta(days=1)) == []


def test_an_allowance_grants_its_period_at_once(org: tuple[LocalCreditManager, str, str]) -> None:
    m, _, key_id = org
    a = m.set_allowance("u", 100, "monthly")
    assert isinstance(a, Allowance)
    assert (a.user_id, a.amount, a.period, a.rollover_cap, a.member_id, a.api_key_id) == (
        "u",
        D(100),
        "monthly",
        None,
        None,
        None,
    )
    assert a.next_refill_at > datetime.now(timezone.utc)
    assert [x.allowance_id for x in m.allowances("u")] == [a.allowance_id]
    (grant,) = m.account("u").grants
    assert (grant.allowance_id, grant.amount, grant.remaining) == (a.allowance_id, D(100), D(100))
    assert grant.category == "promotional"
    assert grant.expires_at == a.next_refill_at  # rollover off: it expires at the period's end
    assert m.get_balance("u") == 100 and m.transactions("u")[0].kind == "allowance"
    assert m.report().allowance_issued == 100 and m.report().allowance_used == 0
    m.deduct_credits("u", 30)
    assert m.report().allowance_used == 30
    # Scoped to a member, or to a key: the grant says whom it is for.
    for_member = m.set_allowance("acme", 50, "daily", member="m1")
    for_key = m.set_allowance("acme", 20, "weekly", key_id=key_id, rollover_cap=60)
    assert (for_member.member_id, for_key.api_key_id, for_key.rollover_cap) == ("m1", key_id, D(60))
    scoped = {g.allowance_id: g for g in m.account("acme").grants if g.allowance_id is not None}
    assert scoped[for_member.allowance_id].member_id == "m1"
    assert scoped[for_key.allowance_id].api_key_id == key_id
    assert scoped[for_key.allowance_id].expires_at is None  # rollover on: never expires
    member_entry = m.member_transactions("acme", "m1")[0]
    assert (member_entry.kind, member_entry.amount) == ("allowance", D(50))
    # Removing stops refills; the grant already issued stays.
    m.remove_allowance(a.allowance_id)
    assert m.allowances("u") == []
    assert [g.remaining for g in m.account("u").grants] == [70]


def move_allowances_back_one_day(db_url: str) -> None:
    """The ledger as if its clock had moved one day on: the allowances' next
    refill, the accounts' refill time and the allowance grants' expiry one
    day earlier, and each allowance entry's key (which names its period's
    start) freed for the period now current. No test clock reaches Python
    (src/config.rs TestClock), so the data moves instead of the clock."""
    sql = f"""
        UPDATE creditgate_allowances SET next_refill_at = next_refill_at - {DAY_MICROS};
        UPDATE creditgate_accounts SET refill_at = refill_at - {DAY_MICROS} WHERE refill_at IS NOT NULL;
        UPDATE creditgate_grants SET expires_at = expires_at - {DAY_MICROS}
            WHERE allowance_id IS NOT NULL AND expires_at IS NOT NULL;
        UPDATE creditgate_entries SET idempotency_key = idempotency_key || ':previous-period'
            WHERE kind = 'allowance';
    """
    if IS_POSTGRES:
        psql(db_url, sql)
        return
    # Another process: this one already has the ledger open with its own
    # SQLite library (two libraries must not share an open file in one process).
    script = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()"
    subprocess.run([sys.executable, "-c", script, db_url[len("sqlite:///") :], sql], check=True, timeout=60)


def test_a_daily_allowance_refills_once_when_the_day_turns(db_url: str) -> None:
    m = LocalCreditManager(db_url)
    a = m.set_allowance("u", 100, "daily")
    m.deduct_credits("u", 30)
    move_allowances_back_one_day(db_url)
    # A read shows the new day's refill (and the old grant gone) without writing it.
    entries = len(m.transactions("u"))
    assert m.get_balance("u") == 100
    (pending,) = m.account("u").grants
    assert (pending.grant_id, pending.allowance_id, pending.remaining) == (0, a.allowance_id, D(100))
    assert len(m.transactions("u")) == entries
    # The sweep writes it, exactly once.
    sweep = m.expire_grants()
    assert (sweep.refills, sweep.entries, sweep.credits) == (1, 1, D(70))
    assert sweep.to_dict()["refills"] == 1
    assert m.expire_grants().refills == 0
    assert [e.kind for e in m.transactions("u")[:2]] == ["allowance", "expiry"]
    (grant,) = m.account("u").grants
    assert grant.grant_id != 0 and grant.remaining == 100 and grant.allowance_id == a.allowance_id
    assert m.get_balance("u") == 100
    assert any(e.kind == "allowance.refilled" for e in settled_events(m))
    assert m.report().allowance_issued == 200
    assert m.audit().ok


BAD_CALLS: list[tuple[str, Callable[[LocalCreditManager, str], Any], type[Exception]]] = [
    ("member of itself", lambda m, k: m.add_member("acme", "acme"), InvalidArgument),
    ("empty org", lambda m, k: m.add_member("", "x"), InvalidArgument),
    ("org of wrong type", lambda m, k: m.add_member(FLOAT, "x"), TypeError),
    ("member of another org", lambda m, k: m.add_member("other", "m1"), InvalidArgument),
    ("nested org", lambda m, k: m.add_member("m1", "x"), InvalidArgument),
    ("org joining", lambda m, k: m.add_member("other", "acme"), InvalidArgument),
    ("remove a non-member", lambda m, k: m.remove_member("acme", "nobody"), NotFound),
    ("members of empty", lambda m, k: m.members(""), InvalidArgument),
    ("empty project", lambda m, k: m.create_project("acme", ""), InvalidArgument),
    ("project of a member", lambda m, k: m.create_project("m1", "p"), InvalidArgument),
    ("project name type", lambda m, k: m.create_project("acme", NOT_TEXT), TypeError),
    ("projects of empty", lambda m, k: m.projects(""), InvalidArgument),
    ("malformed key id", lambda m, k: m.set_key_project("not-a-uuid", None), InvalidArgument),
    ("unknown key", lambda m, k: m.set_key_project(UNKNOWN_UUID, None), NotFound),
    ("unknown project", lambda m, k: m.set_key_project(k, "nope"), NotFound),
    ("budget for neither", lambda m, k: m.set_budget("acme", limit=5), InvalidArgument),
    ("budget for both", lambda m, k: m.set_budget("acme", member="m1", project="p", limit=5), InvalidArgument),
    ("budget of a non-member", lambda m, k: m.set_budget("acme", member="nobody", limit=5), NotFound),
    ("budget of no project", lambda m, k: m.set_budget("acme", project="nope", limit=5), NotFound),
    ("budget window", lambda m, k: m.set_budget("acme", member="m1", limit=5, window="yearly"), InvalidArgument),
    ("negative budget", lambda m, k: m.set_budget("acme", member="m1", limit=-1), InvalidArgument),
    ("float budget", lambda m, k: m.set_budget("acme", member="m1", limit=FLOAT), TypeError),
    ("threshold above", lambda m, k: m.set_budget("acme", member="m1", limit=5, low_threshold=6), InvalidArgument),
    ("threshold alone", lambda m, k: m.set_budget("acme", member="m1", low_threshold=1), InvalidArgument),
    ("page of 0", lambda m, k: m.member_transactions("acme", "m1", limit=0), InvalidArgument),
    ("malformed cursor", lambda m, k: m.member_transactions("acme", "m1", before="x"), InvalidArgument),
    ("unknown cursor", lambda m, k: m.member_transactions("acme", "m1", before=UNKNOWN_UUID), NotFound),
    ("naive since", lambda m, k: m.member_usage("acme", since=datetime(2026, 1, 1)), InvalidArgument),
    ("since as text", lambda m, k: m.member_usage("acme", since=NOT_TIME), TypeError),
    ("allowance of 0", lambda m, k: m.set_allowance("u", 0, "daily"), InvalidArgument),
    ("lifetime allowance", lambda m, k: m.set_allowance("u", 5, "lifetime"), InvalidArgument),
    ("allowance period", lambda m, k: m.set_allowance("u", 5, "yearly"), InvalidArgument),
    ("float allowance", lambda m, k: m.set_allowance("u", FLOAT, "daily"), TypeError),
    ("member and key", lambda m, k: m.set_allowance("acme", 5, "daily", member="m1", key_id=k), InvalidArgument),
    ("cap below amount", lambda m, k: m.set_allowance("u", 5, "daily", rollover_cap=4), InvalidArgument),
    ("allowance non-member", lambda m, k: m.set_allowance("acme", 5, "daily", member="nobody"), NotFound),
    ("allowance other's key", lambda m, k: m.set_allowance("u", 5, "daily", key_id=k), NotFound),
    ("allowance unknown key", lambda m, k: m.set_allowance("acme", 5, "daily", key_id=UNKNOWN_UUID), NotFound),
    ("remove unknown", lambda m, k: m.remove_allowance(999_999), NotFound),
    ("allowance id type", lambda m, k: m.remove_allowance(NOT_INT), TypeError),
    ("allowances of empty", lambda m, k: m.allowances(""), InvalidArgument),
]


def test_bad_input_gets_its_error_and_changes_nothing(org: tuple[LocalCreditManager, str, str]) -> None:
    m, _, key_id = org
    m.add_member("other", "o1")
    state = ledger_state(m, "acme", "m1", "other", "u")
    for name, call, error in BAD_CALLS:
        with pytest.raises(error):
            call(m, key_id)
        assert ledger_state(m, "acme", "m1", "other", "u") == state, name


def test_the_asyncio_mirrors(org: tuple[LocalCreditManager, str, str]) -> None:
    m, secret, key_id = org

    async def main() -> None:
        async with AsyncLocalCreditManager.from_manager(m) as am:
            member = await am.add_member("acme", "m2")
            assert member.user_id == "m2"
            await am.create_project("acme", "p")
            await am.set_key_project(key_id, "p")
            await am.set_budget("acme", project="p", limit=4, window="weekly")
            assert [p.budget.limit for p in await am.projects("acme") if p.budget is not None] == [4]
            with pytest.raises(InsufficientCredits) as e:
                await am.verify_api_key_credits(secret, 5)
            assert e.value.limit_source == "project"
            await am.record_usage(secret, tokens=2000)
            assert [(u.member_id, u.credits) for u in await am.member_usage("acme")] == [("m1", D(2))]
            assert len(await am.member_transactions("acme", "m1")) == 1
            a = await am.set_allowance("acme", 10, "daily", member="m2")
            assert [x.allowance_id for x in await am.allowances("acme")] == [a.allowance_id]
            await am.remove_allowance(a.allowance_id)
            await am.remove_member("acme", "m2")
            assert [x.user_id for x in await am.members("acme")] == ["m1"]

    asyncio.run(main())


def run_cli(db_url: str, *args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "creditgate", "--database-url", db_url, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def test_the_command_line(org: tuple[LocalCreditManager, str, str], db_url: str) -> None:
    m, secret, _ = org
    m.add_member("acme", "m2")
    m.set_budget("acme", member="m1", limit=100, window="monthly")
    m.record_usage(secret, tokens=7000)
    m.set_allowance("acme", 25, "weekly", member="m2")
    lines = run_cli(db_url, "members", "acme").splitlines()
    assert lines[0].split() == ["member", "joined", "budget", "spent", "remaining", "usage_credits"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["m1"][2:] == ["100", "monthly", "7", "93", "7"]
    assert rows["m2"][2:] == ["0"]  # no budget, nothing spent
    assert "allowance_id" in run_cli(db_url, "allowances", "acme").splitlines()[0]
    assert "weekly" in run_cli(db_url, "allowances", "acme")
    assert len(run_cli(db_url, "allowances", "nobody").splitlines()) == 1  # the header alone
    entries = json.loads(run_cli(db_url, "transactions", "--user", "acme", "--member", "m1", "--format", "json"))
    assert [(e["kind"], e["member_id"]) for e in entries] == [("usage", "m1")]
    entries = json.loads(
        run_cli(db_url, "transactions", "--user", "acme", "--member", "m2", "--format", "json"), parse_float=D
    )
    assert [(e["kind"], e["amount"]) for e in entries] == [("allowance", D(25))]
    swept = json.loads(run_cli(db_url, "expire", "--json"))
    assert swept["refills"] == 0
