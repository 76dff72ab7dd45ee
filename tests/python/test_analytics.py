"""Usage summaries and statements from Python (issue 20; docs/analytics.md):
on randomized ledgers (several seeds of ``random.Random``) every rollup
equals the sums over the ledger's own entries, and every statement
reconciles (opening + lines = closing) with the same sums; the JSON and CSV
forms are the core's; bad input raises the documented exceptions; the
asyncio manager and the CLI (``creditgate usage``, ``creditgate statement``,
``creditgate prices``) give the same figures. Runs on SQLite and on
PostgreSQL (conftest.py)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from creditgate import (
    AsyncLocalCreditManager,
    Entry,
    InvalidArgument,
    LocalCreditManager,
    Statement,
    UsageRow,
)
from creditgate.cli import main as cli_main

D = Decimal
UTC = timezone.utc
MICRO = D("0.000001")
SEEDS = [1, 7, 2024]
# A group name -> the UsageRow field it sets.
GROUP_FIELD = {"day": "day", "model": "model", "key": "key_id", "member": "member_id", "project": "project"}
COUNTS = ("requests", "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "credits")


@dataclass
class Ledger:
    m: LocalCreditManager
    accounts: list[str]
    key_ids: list[str]
    models: list[str | None]
    request_ids: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def entries(self) -> list[Entry]:
        out: list[Entry] = []
        for a in self.accounts:
            out += self.m.transactions(a, limit=1000)
        return sorted(out, key=lambda e: (e.created_at, e.seq))


def build(m: LocalCreditManager, seed: int, ops: int = 60) -> Ledger:
    """Accounts alice and bob (two keys each) and the organisation acme (two
    members, one key in project p1), three models (one repriced halfway),
    and `ops` random calls: charges with cache counts, settles (by tokens
    and by credits), replays, grants, deducts."""
    rnd = random.Random(seed)
    keys: list[tuple[str, str]] = []  # (secret, key_id)
    for user in ("alice", "bob"):
        m.record_payment(user, f"pay-{user}", 100_000)
        for name in ("k1", "k2"):
            k = m.create_api_key(user, name)
            keys.append((k.secret, k.key_id))
    m.record_payment("acme", "pay-acme", 100_000)
    m.create_project("acme", "p1")
    for member in ("m1", "m2"):
        m.add_member("acme", member)
        k = m.create_api_key(member, "work")
        keys.append((k.secret, k.key_id))
    m.set_key_project(keys[-1][1], "p1")
    m.set_model_price("a", "1.5", "3", cached_input_per_1k="0.15", cache_write_per_1k="2", request_fee="0.001")
    m.set_model_price("b", "0.2", "0.4")
    models: list[str | None] = ["a", "b", None]
    ledger = Ledger(m, ["alice", "bob", "acme"], [k for _, k in keys], models)
    for i in range(ops):
        if i == ops // 2:
            m.set_model_price("a", "2", "5", cached_input_per_1k="0.2", request_fee="0.002")
        secret, _ = rnd.choice(keys)
        op = rnd.random()
        inp = rnd.randrange(0, 5000)
        cached = rnd.randrange(0, inp + 1)
        write = rnd.randrange(0, inp - cached + 1)
        usage: dict[str, Any] = {
            "input_tokens": inp,
            "output_tokens": rnd.randrange(0, 3000),
            "cached_input_tokens": cached,
            "cache_write_tokens": write,
            "model": rnd.choice(models),
        }
        if op < 0.4:
            rid = f"r{seed}-{i}"
            m.record_usage(secret, request_id=rid, **usage)
            ledger.request_ids.append((secret, {"request_id": rid, **usage}))
        elif op < 0.6:
            hold = m.reserve(
                secret, input_tokens=usage["input_tokens"], output_tokens=usage["output_tokens"], model=usage["model"]
            )
            m.settle(hold.hold_id, **usage)
        elif op < 0.7:
            hold = m.reserve(secret, credits=50)
            m.settle(hold.hold_id, credits=D(rnd.randrange(0, 50_000_000)) * MICRO)
        elif op < 0.8 and ledger.request_ids:
            s, again = rnd.choice(ledger.request_ids)
            assert m.record_usage(s, **again).replayed
        elif op < 0.9:
            m.add_credits(rnd.choice(ledger.accounts), rnd.randrange(1, 500), kind=rnd.choice(["grant", "purchase"]))
        else:
            m.deduct_credits(rnd.choice(ledger.accounts), D(rnd.randrange(1, 10_000)) / 100)
    return ledger


def day_of(t: datetime) -> datetime:
    t = t.astimezone(UTC)
    return datetime(t.year, t.month, t.day, tzinfo=UTC)


def expected_rows(
    entries: Sequence[Entry],
    group_by: Sequence[str],
    *,
    user_id: str | None = None,
    key_id: str | None = None,
    model: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """The rollup computed from the entries themselves."""
    sums: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, 0, 0, 0, 0, D(0)])
    for e in entries:
        if e.kind != "usage":
            continue
        if (user_id is not None and e.user_id != user_id) or (key_id is not None and e.api_key_id != key_id):
            continue
        if (model is not None and e.model != model) or (since is not None and e.created_at < since):
            continue
        if until is not None and e.created_at >= until:
            continue
        values = {
            "day": day_of(e.created_at),
            "model": e.model,
            "key": e.api_key_id,
            "member": e.member_id,
            "project": e.project,
        }
        s = sums[tuple(values[g] for g in group_by)]
        s[0] += 1
        s[1] += e.input_tokens or 0
        s[2] += e.output_tokens or 0
        s[3] += e.cached_input_tokens or 0
        s[4] += e.cache_write_tokens or 0
        s[5] += -e.amount
    return {k: tuple(v) for k, v in sums.items()}


def actual_rows(rows: Sequence[UsageRow], group_by: Sequence[str]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    out = {}
    for r in rows:
        assert isinstance(r, UsageRow)
        for g, f in GROUP_FIELD.items():
            if g not in group_by:
                assert getattr(r, f) is None, (g, r)
        key = tuple(getattr(r, GROUP_FIELD[g]) for g in group_by)
        assert key not in out, f"two rows for {key}"
        if r.requests:  # an empty range may give one row of zero totals
            out[key] = tuple(getattr(r, c) for c in COUNTS)
    return out


@pytest.fixture(params=SEEDS, ids=[f"seed{s}" for s in SEEDS])
def ledger(request: pytest.FixtureRequest, manager: LocalCreditManager) -> Ledger:
    seed: int = request.param
    return build(manager, seed)


def queries(ledger: Ledger, rnd: random.Random) -> Iterator[dict[str, Any]]:
    entries = [e for e in ledger.entries() if e.kind == "usage"]
    times = sorted({e.created_at for e in entries})
    for group_by in ([], ["model"], ["key"], ["day", "model"], ["member", "project"], ["model", "key", "day"]):
        yield {"group_by": group_by}
    yield {"group_by": ["model"], "user_id": "acme"}
    yield {"group_by": ["member"], "user_id": "acme", "model": "a"}
    yield {"group_by": ["model"], "key_id": rnd.choice(ledger.key_ids)}
    yield {"group_by": ["project", "model"], "user_id": "alice"}
    for _ in range(4):
        lo, hi = sorted(rnd.sample(range(len(times)), 2)) if len(times) > 1 else (0, 0)
        yield {"group_by": ["key", "model"], "since": times[lo], "until": times[hi]}
        yield {"group_by": [], "since": times[hi]}
        yield {"group_by": ["day"], "until": times[lo], "model": rnd.choice(["a", "b"])}


def test_rollups_equal_sums_over_entries(ledger: Ledger) -> None:
    entries = ledger.entries()
    assert sum(e.kind == "usage" for e in entries) > 20
    for q in queries(ledger, random.Random(99)):
        rows = ledger.m.usage_summary(**q)
        filters = {k: v for k, v in q.items() if k != "group_by"}
        assert actual_rows(rows, q["group_by"]) == expected_rows(entries, q["group_by"], **filters), q


def test_rows_are_ordered_and_days_are_utc_midnights(ledger: Ledger) -> None:
    rows = ledger.m.usage_summary(group_by=["day", "key"])
    keys = [(r.day, r.key_id or "") for r in rows]
    assert keys == sorted(keys)
    for r in rows:
        assert r.day is not None and r.day.tzinfo is not None
        assert r.day == day_of(r.day) and r.day.utcoffset() == timedelta(0)
    models = [r.model for r in ledger.m.usage_summary(group_by=["model"]) if r.model is not None]
    assert models == sorted(models)


def test_json_and_csv_are_the_rows(ledger: Ledger) -> None:
    for group_by in ([], ["model", "key"], ["day", "member", "project"]):
        rows = ledger.m.usage_summary(group_by=group_by)
        as_json = json.loads(ledger.m.usage_summary_json(group_by=group_by))
        assert len(as_json) == len(rows)
        for r, j in zip(rows, as_json):
            assert j["credits_micros"] == int(r.credits / MICRO)
            assert [j[c] for c in COUNTS[:-1]] == [getattr(r, c) for c in COUNTS[:-1]]
            for g in group_by:
                value = getattr(r, GROUP_FIELD[g])
                expected = value.date().isoformat() if isinstance(value, datetime) else value
                assert j.get(g) == expected, (g, j)
        table = list(csv.reader(io.StringIO(ledger.m.usage_summary_csv(group_by=group_by))))
        assert table[0] == [*group_by, *COUNTS]
        assert len(table) == len(rows) + 1
        for r, cells in zip(rows, table[1:]):
            assert D(cells[-1]) == r.credits and int(cells[len(group_by)]) == r.requests


def expected_statement(entries: Sequence[Entry], user: str, since: datetime, until: datetime) -> dict[str, Any]:
    mine = [e for e in entries if e.user_id == user]
    lines: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, 0, 0, 0, 0, D(0)])
    for e in mine:
        if since <= e.created_at < until:
            price = None if e.price is None else tuple(e.price.to_dict().values())
            key = (e.kind, e.model, price) if e.kind == "usage" else (e.kind, None, None)
            line = lines[key]
            line[0] += 1
            line[1] += e.input_tokens or 0
            line[2] += e.output_tokens or 0
            line[3] += e.cached_input_tokens or 0
            line[4] += e.cache_write_tokens or 0
            line[5] += e.amount
    return {
        "opening": sum((e.amount for e in mine if e.created_at < since), D(0)),
        "closing": sum((e.amount for e in mine if e.created_at < until), D(0)),
        "lines": {k: tuple(v) for k, v in lines.items()},
    }


def statement_lines(s: Statement) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    out = {}
    for line in s.lines:
        price = None if line.price is None else tuple(line.price.to_dict().values())
        key = (line.kind, line.model, price)
        assert key not in out, f"two lines for {key}"
        out[key] = (
            line.entries,
            line.input_tokens,
            line.output_tokens,
            line.cached_input_tokens,
            line.cache_write_tokens,
            line.amount,
        )
    return out


def test_statements_reconcile(ledger: Ledger) -> None:
    entries = ledger.entries()
    times = sorted({e.created_at for e in entries})
    rnd = random.Random(5)
    ranges = [(datetime(2000, 1, 1, tzinfo=UTC), times[-1] + timedelta(days=1))]
    for _ in range(5):
        lo, hi = sorted(rnd.sample(range(len(times)), 2))
        ranges.append((times[lo], times[hi]))
    ranges.append((times[3], times[3]))  # an empty range
    for user in ledger.accounts:
        for since, until in ranges:
            s = ledger.m.statement(user, since, until)
            assert (s.user_id, s.since, s.until) == (user, since, until)
            assert s.opening_balance + sum((line.amount for line in s.lines), D(0)) == s.closing_balance
            want = expected_statement(entries, user, since, until)
            assert (s.opening_balance, s.closing_balance) == (want["opening"], want["closing"])
            assert statement_lines(s) == want["lines"], (user, since, until)
        whole = ledger.m.statement(user, *ranges[0])
        assert whole.opening_balance == 0 and whole.closing_balance == ledger.m.get_balance(user)
    assert ledger.m.audit().ok


def test_statement_json_and_csv(ledger: Ledger) -> None:
    since, until = datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(days=1)
    s = ledger.m.statement("acme", since, until)
    j = json.loads(s.to_json())
    assert j["user_id"] == "acme"
    assert j["opening_balance_micros"] == 0 and j["closing_balance_micros"] == int(s.closing_balance / MICRO)
    assert [line["amount_micros"] for line in j["lines"]] == [int(line.amount / MICRO) for line in s.lines]
    assert [line["kind"] for line in j["lines"]] == [line.kind for line in s.lines]
    table = list(csv.reader(io.StringIO(s.to_csv())))
    assert table[1][0] == "opening" and table[-1][0] == "closing"
    assert D(table[-1][-1]) == s.closing_balance
    assert [D(r[-1]) for r in table[2:-1]] == [line.amount for line in s.lines]
    d = s.to_dict()
    assert list(d) == ["user_id", "since", "until", "opening_balance", "closing_balance", "lines"]
    assert d["lines"][0].to_dict()["kind"] == s.lines[0].kind


def test_usage_by_member_and_project(manager: LocalCreditManager) -> None:
    manager.record_payment("acme", "p", 10_000)
    manager.create_project("acme", "p1")
    manager.add_member("acme", "m1")
    k = manager.create_api_key("m1")
    manager.set_key_project(k.key_id, "p1")
    manager.record_usage(k.secret, input_tokens=1000, cached_input_tokens=250, output_tokens=7, model="x")
    manager.record_usage(key_id=k.key_id, input_tokens=10, cache_write_tokens=10, output_tokens=3, model="x")
    (row,) = manager.usage_summary(user_id="acme", group_by=["member", "project", "key", "model"])
    assert (row.member_id, row.project, row.key_id, row.model, row.day) == ("m1", "p1", k.key_id, "x", None)
    assert (row.requests, row.input_tokens, row.output_tokens, row.cached_input_tokens, row.cache_write_tokens) == (
        2,
        1010,
        10,
        250,
        10,
    )
    assert row.credits == D("1.02")  # 1020 tokens at the default 1 credit per 1k
    assert manager.usage_summary(user_id="m1") == [] or manager.usage_summary(user_id="m1")[0].requests == 0


NOW = datetime.now(UTC)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"group_by": ["week"]}, InvalidArgument, "day, model, key, member, project"),
        ({"group_by": ["day", "day"]}, InvalidArgument, "twice"),
        ({"group_by": "day,week"}, InvalidArgument, "week"),
        ({"group_by": 5}, TypeError, "sequence of str"),
        ({"group_by": [1]}, TypeError, "group_by must be a str"),
        ({"since": NOW, "until": NOW - timedelta(seconds=1)}, InvalidArgument, "inverted"),
        ({"since": datetime(2026, 1, 1)}, InvalidArgument, "naive"),
        ({"until": "2026-01-01"}, TypeError, "datetime"),
        ({"key_id": "not a key id"}, InvalidArgument, "key_id"),
        ({"user_id": 1.5}, TypeError, "user_id"),
    ],
)
def test_bad_summary_input(
    manager: LocalCreditManager, kwargs: dict[str, Any], exc: type[Exception], match: str
) -> None:
    for call in (manager.usage_summary, manager.usage_summary_json, manager.usage_summary_csv):
        with pytest.raises(exc, match=match):
            call(**kwargs)
    assert issubclass(InvalidArgument, ValueError)


def test_group_by_may_be_one_comma_separated_str(manager: LocalCreditManager) -> None:
    manager.record_payment("u", "pi_1", 600)
    key = manager.create_api_key("u")
    manager.record_usage(key.secret, input_tokens=1000, output_tokens=0, model="small")
    as_list = [r.to_dict() for r in manager.usage_summary(group_by=["day", "model"])]
    assert [r.to_dict() for r in manager.usage_summary(group_by="day, model")] == as_list
    assert manager.usage_summary(group_by="model")[0].model == "small"
    assert [r.to_dict() for r in manager.usage_summary(group_by="")] == [r.to_dict() for r in manager.usage_summary()]


def test_bad_statement_input(manager: LocalCreditManager) -> None:
    with pytest.raises(InvalidArgument, match="inverted"):
        manager.statement("alice", NOW, NOW - timedelta(days=1))
    with pytest.raises(InvalidArgument, match="naive"):
        manager.statement("alice", datetime(2026, 1, 1), NOW)
    with pytest.raises(TypeError, match="until must be a timezone-aware datetime"):
        manager.statement("alice", NOW, None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="user_id"):
        manager.statement("", NOW - timedelta(days=1), NOW)
    empty = manager.statement("nobody", NOW - timedelta(days=1), NOW)
    assert empty.opening_balance == 0 and empty.closing_balance == 0 and empty.lines == []


def test_async_analytics(db_url: str) -> None:
    sync = LocalCreditManager(db_url)
    build(sync, 3, ops=20)
    since, until = datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(days=1)

    async def main() -> None:
        m = AsyncLocalCreditManager.from_manager(sync)
        async with m:
            for group_by in ([], ["model", "key"]):
                rows = await m.usage_summary(group_by=group_by)
                assert [r.to_dict() for r in rows] == [r.to_dict() for r in sync.usage_summary(group_by=group_by)]
                assert await m.usage_summary_json(group_by=group_by) == sync.usage_summary_json(group_by=group_by)
                assert await m.usage_summary_csv(group_by=group_by) == sync.usage_summary_csv(group_by=group_by)
            s = await m.statement("alice", since, until)
            assert s.to_json() == sync.statement("alice", since, until).to_json()
            with pytest.raises(InvalidArgument, match="unknown group"):
                await m.usage_summary(group_by=["hour"])
            with pytest.raises(InvalidArgument, match="inverted"):
                await m.statement("alice", until, since)

    asyncio.run(main())


# ----- the command line ------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], db_url: str, *args: str) -> tuple[int, str, str]:
    try:
        code = cli_main(["--database-url", db_url, *args])
    except SystemExit as e:  # argparse's usage errors
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_usage_formats(capsys: pytest.CaptureFixture[str], db_url: str, manager: LocalCreditManager) -> None:
    build(manager, 11, ops=25)
    code, out, _ = run_cli(capsys, db_url, "usage", "--group-by", "model,key", "--format", "json")
    assert code == 0 and json.loads(out) == json.loads(manager.usage_summary_json(group_by=["model", "key"]))
    code, out, _ = run_cli(capsys, db_url, "usage", "--user", "alice", "--group-by", "day", "--format", "csv")
    assert code == 0 and out == manager.usage_summary_csv(user_id="alice", group_by=["day"])
    code, out, _ = run_cli(capsys, db_url, "usage", "--group-by", "model", "--since", "2000-01-01")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["model", *COUNTS]
    rows = manager.usage_summary(group_by=["model"])
    assert len(lines) == len(rows) + 2
    total = lines[-1].split()
    assert total[0] == "total" and D(total[-1]) == sum((r.credits for r in rows), D(0))
    assert int(total[1]) == sum(r.requests for r in rows)
    # Aligned: every line as wide as the header's right-aligned last column.
    assert len({len(line) for line in lines}) == 1
    code, out, _ = run_cli(capsys, db_url, "usage")
    (only,) = [line.split() for line in out.splitlines()[1:]]
    assert D(only[-1]) == manager.usage_summary()[0].credits


def test_cli_statement_formats(capsys: pytest.CaptureFixture[str], db_url: str, manager: LocalCreditManager) -> None:
    build(manager, 12, ops=25)
    since, until = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
    s = manager.statement("bob", since, until)
    args = ("statement", "bob", "--since", "2000-01-01", "--until", "2100-01-01T00:00:00Z")
    code, out, _ = run_cli(capsys, db_url, *args, "--format", "json")
    assert code == 0 and out.strip() == s.to_json()
    code, out, _ = run_cli(capsys, db_url, *args, "--format", "csv")
    assert code == 0 and out == s.to_csv()
    code, out, _ = run_cli(capsys, db_url, *args)
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split() == ["opening", "balance", "0"]
    closing = lines[-1].split()
    assert closing[:2] == ["closing", "balance"] and D(closing[2]) == s.closing_balance
    assert lines[2].split()[0] == "kind" and len(lines) == len(s.lines) + 4
    # A zone-less time is UTC.
    code, out, _ = run_cli(
        capsys, db_url, "statement", "bob", "--since", "2000-01-01T00:00:00", "--until", "2100-01-01"
    )
    assert code == 0 and D(out.splitlines()[-1].split()[-1]) == s.closing_balance


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("usage", "--group-by", "model,week"), "day, model, key, member, project"),
        (("usage", "--since", "2026-02-01", "--until", "2026-01-01"), "inverted"),
        (("usage", "--since", "yesterday"), "not an ISO 8601 date or time"),
        (("usage", "--format", "xml"), "invalid choice"),
        (("statement", "bob", "--since", "2026-02-01", "--until", "2026-01-01"), "inverted"),
        (("statement", "bob", "--since", "2026-13-01", "--until", "2026-01-01"), "not an ISO 8601"),
        (("statement", "bob", "--since", "2026-01-01"), "--until"),
    ],
)
def test_cli_bad_input_exits_2(
    capsys: pytest.CaptureFixture[str], db_url: str, manager: LocalCreditManager, args: tuple[str, ...], match: str
) -> None:
    code, out, err = run_cli(capsys, db_url, *args)
    assert code == 2 and out == ""
    assert "error: usage:" in err and match in err, err


def test_cli_prices(capsys: pytest.CaptureFixture[str], db_url: str, manager: LocalCreditManager) -> None:
    code, out, _ = run_cli(
        capsys,
        db_url,
        *("prices", "set", "m", "1.5", "3", "--cached-input", "0.15", "--cache-write", "2", "--request-fee", "0.01"),
    )
    assert code == 0 and out.startswith("m: 1.5 input, 3 output, 0.15 cached input, 2 cache write")
    later = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    code, out, _ = run_cli(capsys, db_url, "prices", "set", "m", "2", "4", "--effective-at", later.isoformat())
    assert code == 0
    run_cli(capsys, db_url, "prices", "set", "other", "1", "1")
    code, out, _ = run_cli(capsys, db_url, "prices", "list")
    lines = out.splitlines()
    assert lines[0].split() == [
        "model",
        "input_per_1k",
        "output_per_1k",
        "cached_input_per_1k",
        "cache_write_per_1k",
        "request_fee",
    ]
    assert lines[1].split() == ["m", "1.5", "3", "0.15", "2", "0.01"] and lines[2].split() == ["other", "1", "1", "0"]
    code, out, _ = run_cli(capsys, db_url, "prices", "list", "--json", "--model", "m")
    assert json.loads(out, parse_float=D) == {
        "m": {
            "input_per_1k": D("1.5"),
            "output_per_1k": 3,
            "cached_input_per_1k": D("0.15"),
            "cache_write_per_1k": 2,
            "request_fee": D("0.01"),
        }
    }
    code, out, _ = run_cli(capsys, db_url, "prices", "list", "--history", "--model", "m")
    lines = out.splitlines()
    assert lines[0].split()[-2:] == ["effective_at", "set_at"] and len(lines) == 3
    assert lines[2].split()[1:3] == ["2", "4"]
    code, out, _ = run_cli(capsys, db_url, "prices", "list", "--history", "--json")
    assert [(v["model"], v["price"]["input_per_1k"]) for v in json.loads(out)] == [("m", 1.5), ("m", 2), ("other", 1)]
    code, _, err = run_cli(capsys, db_url, "prices", "set", "m", "-1", "1")
    assert code == 1 and "error: invalid_argument:" in err
    code, _, err = run_cli(capsys, db_url, "prices", "set", "m", "1", "1", "--effective-at", "2000-01-01")
    assert code == 1 and "past" in err


def test_cli_times_are_utc_unless_zoned() -> None:
    from creditgate.cli import time_arg

    assert time_arg("2026-01-02") == datetime(2026, 1, 2, tzinfo=UTC)
    assert time_arg("2026-01-02T03:04:05") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert time_arg("2026-01-02T03:04:05Z") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    zoned = time_arg("2026-01-02T05:04:05+02:00")
    assert zoned == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC) and zoned.utcoffset() == timedelta(hours=2)
