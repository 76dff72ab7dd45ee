"""The `creditgate` command line, run as an operator would: in a subprocess."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from creditgate import InsufficientCredits, InvalidApiKey, LocalCreditManager
from creditgate._json import to_json


class Cli:
    """Runs `python -m creditgate --database-url <tmp db> ...`."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "ledger.db"
        self.url = f"sqlite:///{self.db}"
        self.cwd = tmp_path
        # conftest's autouse fixture already removed the caller's creditgate
        # settings, so defaults are what we test.
        self.env = dict(os.environ)

    def run(self, *args: str, input: str | None = None, url: str | None = "") -> subprocess.CompletedProcess[str]:
        prefix = ["--database-url", self.url] if url == "" else ([] if url is None else ["--database-url", url])
        return subprocess.run(
            [sys.executable, "-m", "creditgate", *prefix, *args],
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            cwd=self.cwd,
            env=self.env,
            timeout=60,
            check=False,
        )

    def ok(self, *args: str, input: str | None = None) -> str:
        r = self.run(*args, input=input)
        assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
        return r.stdout

    def json(self, *args: str) -> Any:
        # parse_float=Decimal: the CLI's amounts are exact decimals, keep them so.
        return json.loads(self.ok(*args), parse_float=Decimal)

    def fails(self, *args: str, code: str, exit_code: int = 1, input: str | None = None) -> str:
        r = self.run(*args, input=input)
        assert r.returncode == exit_code, (args, r.returncode, r.stdout, r.stderr)
        assert f"error: {code}:" in r.stderr, r.stderr
        return r.stderr


@pytest.fixture
def new_cli(tmp_path: Path) -> Cli:
    """No ledger yet: `ledger.db` does not exist."""
    return Cli(tmp_path)


@pytest.fixture
def cli(new_cli: Cli) -> Cli:
    """A ledger created by `creditgate migrate`, as an operator does first."""
    new_cli.ok("migrate")
    return new_cli


def test_json_writes_decimals_exactly() -> None:
    value = {
        "big": Decimal("999999999999.999999"),  # more digits than a float holds
        "exp": Decimal("5E+3"),
        "neg": Decimal("-0.000001"),
        "sum": Decimal("4999.99") + Decimal("0.01"),
        "zero": Decimal("-0.00"),
        "at": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc),
        "list": [1, True, None, 'x"y'],
    }
    text = to_json(value)
    assert text == (
        '{"big":999999999999.999999,"exp":5000,"neg":-0.000001,"sum":5000,"zero":0,'
        '"at":"2026-01-02T03:04:05.000006Z","list":[1,true,null,"x\\"y"]}'
    )
    assert json.loads(text, parse_float=Decimal)["big"] == value["big"]
    assert json.loads(to_json(value, indent=2), parse_float=Decimal) == json.loads(text, parse_float=Decimal)
    with pytest.raises(TypeError):
        to_json({"amount": 1.5})


def test_migrate_creates_the_database(new_cli: Cli) -> None:
    cli = new_cli
    out = cli.ok("migrate")
    assert cli.db.exists()
    assert "ledger.db" in out
    latest = LocalCreditManager(cli.url).schema_versions()[1]
    assert latest >= 1
    assert out.startswith(f"created at version {latest}:"), out
    out = cli.ok("migrate")  # twice is fine, and says so
    assert out.startswith(f"already at version {latest}:"), out


# What the latest migration (011_topups) did, undone: a ledger as
# the previous release left it.
UNDO_LATEST_MIGRATION = """
    DROP TABLE creditgate_topups;
    ALTER TABLE creditgate_accounts DROP COLUMN topup_threshold;
    ALTER TABLE creditgate_accounts DROP COLUMN topup_kind;
    ALTER TABLE creditgate_accounts DROP COLUMN topup_amount;
    ALTER TABLE creditgate_accounts DROP COLUMN topup_max_per_month;
    ALTER TABLE creditgate_accounts DROP COLUMN topup_monthly_cap;
"""


def back_to_previous_release(cli: Cli) -> int:
    """Takes the ledger back to the previous schema version; the latest one."""
    with contextlib.closing(sqlite3.connect(cli.db)) as conn, conn:
        latest: int = conn.execute("SELECT MAX(version) FROM creditgate_schema_version").fetchone()[0]
        conn.executescript(UNDO_LATEST_MIGRATION)
        conn.execute("DELETE FROM creditgate_schema_version WHERE version = ?", (latest,))
    return latest


def test_migrate_says_it_upgraded(new_cli: Cli) -> None:
    cli = new_cli
    cli.ok("migrate")
    latest = back_to_previous_release(cli)
    out = cli.ok("migrate")
    assert out.startswith(f"upgraded {latest - 1}\u2192{latest}:"), out
    assert cli.ok("migrate").startswith(f"already at version {latest}:")


def schema_rows(cli: Cli) -> list[int]:
    with contextlib.closing(sqlite3.connect(cli.db)) as conn:
        return [v for (v,) in conn.execute("SELECT version FROM creditgate_schema_version ORDER BY version")]


def test_migrate_status_reads_the_versions_and_changes_nothing(new_cli: Cli) -> None:
    cli = new_cli
    cli.fails("migrate", "--status", code="not_found")
    assert not cli.db.exists(), "migrate --status created a ledger"
    cli.ok("migrate")
    latest = max(schema_rows(cli))
    version = cli.ok("--version").split()[1]
    out = cli.ok("migrate", "--status")
    assert out.splitlines() == [
        f"library schema version   {latest} (creditgate {version})",
        f"database schema version  {latest}",
        "pending migrations       none: up to date",
    ]
    status = {"database_version": latest, "library_version": latest, "pending": [], "newer_than_library": False}
    assert cli.json("migrate", "--status", "--json") == status
    cli.fails("migrate", "--json", code="usage", exit_code=2)

    # A ledger of the previous release: --status shows the pending migration
    # and applies nothing; `migrate` does.
    assert back_to_previous_release(cli) == latest
    out = cli.ok("migrate", "--status")
    assert f"database schema version  {latest - 1}\n" in out
    assert f"pending migrations       {latest}\nrun `creditgate migrate`" in out
    assert cli.json("migrate", "--status", "--json")["pending"] == [latest]
    assert max(schema_rows(cli)) == latest - 1, "migrate --status migrated"
    cli.ok("migrate")
    assert max(schema_rows(cli)) == latest


def test_a_ledger_newer_than_the_library_reads_but_refuses_writes(cli: Cli) -> None:
    cli.ok("grant", "--user", "u", "--amount", "5")
    latest = max(schema_rows(cli))
    with contextlib.closing(sqlite3.connect(cli.db)) as conn, conn:
        conn.execute("INSERT INTO creditgate_schema_version (version, applied_at) VALUES (?, 0)", (latest + 1,))
    out = cli.ok("migrate", "--status")
    assert f"database schema version  {latest + 1}\n" in out
    assert "newer than this library, which refuses to write to it" in out
    assert cli.json("migrate", "--status", "--json")["newer_than_library"] is True
    version = cli.ok("--version").split()[1]
    refusal = f"database schema is version {latest + 1}, this creditgate ({version}) knows up to {latest}"
    assert refusal in cli.fails("migrate", code="storage")
    assert refusal in cli.fails("grant", "--user", "u", "--amount", "1", code="storage")
    assert cli.json("balance", "--user", "u", "--json")["balance"] == 5  # reads work
    report = cli.json("report", "--json")
    assert (report["schema_version"], report["library_schema_version"]) == (latest + 1, latest)
    assert schema_rows(cli)[-1] == latest + 1


OPERATOR_COMMANDS = [
    ("backup", "copy.db"),
    ("audit",),
    ("balance", "--user", "u"),
    ("report",),
    ("transactions", "--user", "u"),
    ("grant", "--user", "u", "--amount", "1"),
    ("keys", "list", "--user", "u"),
    ("prices", "list"),
    ("expire",),
    ("metrics",),
    ("import-users",),
]


@pytest.mark.parametrize("args", OPERATOR_COMMANDS, ids=[" ".join(a[:2]) for a in OPERATOR_COMMANDS])
def test_operator_commands_never_create_a_ledger(new_cli: Cli, args: tuple[str, ...]) -> None:
    cli = new_cli
    err = cli.fails(*args, code="not_found")
    assert str(cli.db) in err and "creditgate migrate" in err, err
    assert not cli.db.exists()
    assert sorted(p.name for p in cli.cwd.iterdir()) == []
    # The default URL too: run from another working directory, nothing is created there.
    r = cli.run(*args, url=None)
    assert r.returncode == 1 and "error: not_found:" in r.stderr, r.stderr
    assert "creditgate.db" in r.stderr and "the default" in r.stderr
    assert sorted(p.name for p in cli.cwd.iterdir()) == []


def test_version(new_cli: Cli) -> None:
    from importlib import metadata

    r = new_cli.run("--version", url=None)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"creditgate {metadata.version('creditgate')}"
    assert not (new_cli.cwd / "creditgate.db").exists()


def test_grant_and_balance(cli: Cli) -> None:
    out = cli.ok("grant", "--user", "alice", "--amount", "5000", "--kind", "purchase")
    assert "5000" in out
    cli.ok("grant", "--user", "alice", "--amount", "-1.5", "--kind", "adjustment")
    account = cli.json("balance", "--user", "alice", "--json")
    assert account["user_id"] == "alice"
    assert account["balance"] == Decimal("4998.5")
    assert account["available"] == Decimal("4998.5")
    # The number is written exactly, not through a float.
    assert '"balance": 4998.5' in cli.ok("balance", "--user", "alice", "--json")
    assert "4998.5" in cli.ok("balance", "--user", "alice")


def test_grant_is_idempotent_with_a_key(cli: Cli) -> None:
    first = cli.json(
        "grant",
        "--user",
        "u",
        "--amount",
        "10",
        "--idempotency-key",
        "promo-1",
        "--json",
    )
    again = cli.json(
        "grant",
        "--user",
        "u",
        "--amount",
        "10",
        "--idempotency-key",
        "promo-1",
        "--json",
    )
    assert first["id"] == again["id"] and again["replayed"] is True
    assert cli.json("balance", "--user", "u", "--json")["balance"] == 10
    cli.fails(
        "grant",
        "--user",
        "u",
        "--amount",
        "11",
        "--idempotency-key",
        "promo-1",
        code="idempotency_conflict",
    )


def test_unknown_user_has_zero_balance(cli: Cli) -> None:
    assert cli.json("balance", "--user", "nobody", "--json")["balance"] == 0


def test_keys_need_credits_then_create_list_revoke(cli: Cli) -> None:
    err = cli.fails("keys", "create", "--user", "alice", code="insufficient_credits")
    assert "5000" in err
    cli.ok("grant", "--user", "alice", "--amount", "5000", "--kind", "purchase")
    created = cli.json("keys", "create", "--user", "alice", "--name", "prod", "--json")
    secret, key_id = created["secret"], created["key_id"]
    assert secret.startswith("sk_") and created["name"] == "prod"
    table = cli.ok("keys", "create", "--user", "alice", "--name", "dev")
    assert "secret" in table and "sk_" in table

    listing = cli.ok("keys", "list", "--user", "alice")
    assert key_id in listing and secret not in listing
    keys = cli.json("keys", "list", "--user", "alice", "--json")
    assert {k["name"] for k in keys} == {"prod", "dev"}
    assert all(k["revoked_at"] is None and k["legacy"] is False for k in keys)

    cli.ok("keys", "revoke", key_id)
    keys = cli.json("keys", "list", "--user", "alice", "--json")
    revoked = next(k for k in keys if k["key_id"] == key_id)
    assert revoked["revoked_at"].endswith("Z")
    m = LocalCreditManager(cli.url)
    with pytest.raises(InvalidApiKey):
        m.verify_api_key_credits(secret)
    cli.fails("keys", "revoke", "00000000-0000-7000-8000-000000000000", code="not_found")


def test_keys_import_reads_the_secret_from_stdin(cli: Cli) -> None:
    legacy = "legacy-key-0123456789abcdef"
    out = cli.ok("keys", "import", "--user", "bob", "--name", "old", input=legacy + "\n")
    assert "bob" in out and legacy not in out
    hashed = "another-legacy-key-987654321"
    cli.ok(
        "keys",
        "import",
        "--user",
        "bob",
        "--sha256",
        input=hashlib.sha256(hashed.encode()).hexdigest(),
    )
    keys = cli.json("keys", "list", "--user", "bob", "--json")
    assert len(keys) == 2 and all(k["legacy"] for k in keys)

    m = LocalCreditManager(cli.url)
    m.add_credits("bob", 10)
    # Legacy keys, plain or by hash, keep working and are charged.
    assert m.verify_api_key_credits(legacy).user_id == "bob"
    assert m.record_usage(hashed, tokens=1000).charged == 1
    # Importing does not prove payment: the first real key still needs 5,000.
    assert not m.can_generate_api_key("bob").allowed

    cli.fails("keys", "import", "--user", "bob", input="", code="usage", exit_code=2)
    cli.fails(
        "keys",
        "import",
        "--user",
        "bob",
        "--sha256",
        input="not-hex",
        code="invalid_argument",
    )


def test_keys_without_action_is_a_usage_error(cli: Cli) -> None:
    cli.fails("keys", code="usage", exit_code=2)


def test_prices(cli: Cli) -> None:
    assert cli.json("prices", "list", "--json") == {}
    cli.ok("prices", "set", "gpt-4o", "2.5", "10")
    assert cli.json("prices", "list", "--json") == {
        "gpt-4o": {
            "input_per_1k": Decimal("2.5"),
            "output_per_1k": 10,
            "cached_input_per_1k": None,
            "cache_write_per_1k": None,
            "request_fee": 0,
        }
    }
    assert "gpt-4o" in cli.ok("prices", "list")
    cli.fails("prices", "set", "gpt-4o", "abc", "1", code="usage", exit_code=2)


def test_transactions_formats(cli: Cli) -> None:
    cli.ok(
        "grant",
        "--user",
        "alice",
        "--amount",
        "5000",
        "--kind",
        "purchase",
        "--reference",
        "invoice-1",
    )
    m = LocalCreditManager(cli.url)
    key = m.create_api_key("alice")
    m.record_usage(key.secret, input_tokens=1000, output_tokens=500, model="echo", request_id="r1")

    entries = cli.json("transactions", "--user", "alice", "--format", "json")
    assert isinstance(entries, list) and len(entries) == 2
    usage, grant = entries  # newest first
    assert usage["kind"] == "usage" and usage["amount"] == Decimal("-1.5")
    assert usage["balance_after"] == Decimal("4998.5")
    assert usage["input_tokens"] == 1000 and usage["model"] == "echo"
    assert grant["kind"] == "purchase" and grant["reference"] == "invoice-1"
    assert grant["created_at"].endswith("Z") and grant["seq"] == 1
    assert '"balance_after": 4998.5' in cli.ok("transactions", "--user", "alice", "--format", "json")

    rows = list(csv.DictReader(io.StringIO(cli.ok("transactions", "--user", "alice", "--format", "csv"))))
    assert [r["kind"] for r in rows] == ["usage", "purchase"]
    assert rows[0]["amount"] == "-1.5" and rows[0]["output_tokens"] == "500"
    assert rows[1]["input_tokens"] == ""

    table = cli.ok("transactions", "--user", "alice", "--limit", "1")
    assert "usage" in table and "purchase" not in table
    page = cli.json("transactions", "--user", "alice", "--before", usage["id"], "--format", "json")
    assert [e["id"] for e in page] == [grant["id"]]
    cli.fails("transactions", "--user", "alice", "--limit", "0", code="usage", exit_code=2)
    cli.fails("transactions", "--user", "alice", "--limit", "1001", code="invalid_argument")


def test_audit_exit_code(cli: Cli) -> None:
    cli.ok("grant", "--user", "alice", "--amount", "100")
    assert cli.ok("audit").startswith("ok")
    assert cli.json("audit", "--json")["ok"] is True
    # Corrupt the stored balance behind the ledger's back.
    with contextlib.closing(sqlite3.connect(cli.db)) as conn, conn:
        conn.execute("UPDATE creditgate_accounts SET balance = balance + 1 WHERE user_id = 'alice'")
    r = cli.run("audit")
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "UNBALANCED" in r.stdout and "alice" in r.stdout


def test_report(cli: Cli) -> None:
    m = LocalCreditManager(cli.url)
    m.record_payment("alice", "pay_1", 500)
    m.create_api_key("alice")
    report = cli.json("report", "--json")
    assert report["paying_users"] == 1
    assert report["credits_purchased"] == 5000
    assert report["revenue_usd_minor"] == 500
    assert report["key_generation_successes"] == 1
    assert "purchase_conversion_rate" in report
    assert "paying_users" in cli.ok("report")


# Every field of `report()` (docs/reference.md), in the spec's order.
REPORT_FIELDS = (
    "users",
    "paying_users",
    "users_attempted_key",
    "key_generation_attempts",
    "key_generation_successes",
    "purchase_conversion_rate",
    "credits_purchased",
    "revenue_usd_minor",
    "revenue_per_paying_user_usd_minor",
    "revenue_minor_by_currency",
    "credits_used",
    "outstanding_balance",
    "outstanding_holds",
    "overdraft_receivable",
    "allowance_issued",
    "allowance_used",
    "schema_version",
    "library_schema_version",
)


def test_report_json_has_every_spec_field_exactly(cli: Cli) -> None:
    m = LocalCreditManager(cli.url)
    m.record_payment("alice", "pay_a", 500)  # 5,000 credits
    key = m.create_api_key("alice").secret
    m.record_usage(key, tokens=1000)  # 1 credit
    m.record_usage(key, tokens=10**7)  # 10,000 credits: alice at -5,001
    m.record_payment("bob", "pay_b", 1000)  # 10,000 credits, never tries a key
    m.reverse_payment("pay_b", 250)  # 2,500 credits and $2.50 back
    with pytest.raises(InsufficientCredits):
        m.create_api_key("carol")  # an attempt, denied
    m.add_credits("eve", "0.000001")  # one micro-credit
    report = cli.json("report", "--json")
    assert list(report) == list(REPORT_FIELDS)
    assert report == {
        "users": 4,
        "paying_users": 2,
        "users_attempted_key": 2,  # alice and carol
        "key_generation_attempts": 2,
        "key_generation_successes": 1,
        "purchase_conversion_rate": Decimal("0.5"),  # alice of alice and carol
        "credits_purchased": Decimal("15000"),
        "revenue_usd_minor": 1250,
        "revenue_per_paying_user_usd_minor": 625,
        "revenue_minor_by_currency": {"USD": 1250},
        "credits_used": Decimal("10001"),
        "outstanding_balance": Decimal("7500.000001"),
        "outstanding_holds": Decimal(0),
        "overdraft_receivable": Decimal("5001"),
        "allowance_issued": Decimal(0),
        "allowance_used": Decimal(0),
        "schema_version": max(schema_rows(cli)),
        "library_schema_version": max(schema_rows(cli)),
    }
    # The same figures as the API, written exactly (no float, no exponent).
    assert report == json.loads(to_json(m.report()), parse_float=Decimal)
    text = cli.ok("report", "--json")
    assert '"outstanding_balance": 7500.000001' in text and "E" not in text
    # The table for people: one line per field, the same values.
    table = dict(line.split(None, 1) for line in cli.ok("report").splitlines())
    assert list(table) == list(REPORT_FIELDS)
    assert table["outstanding_balance"] == "7500.000001" and table["purchase_conversion_rate"] == "0.5"


def test_transactions_csv_is_exact_and_quoted(cli: Cli) -> None:
    m = LocalCreditManager(cli.url)
    m.add_credits("alice", "999999999999.999999", reference='inv, "1"', metadata={"note": "a,b"})
    m.add_credits("alice", "-0.000001", kind="adjustment")
    out = cli.ok("transactions", "--user", "alice", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == [
        "id",
        "seq",
        "user_id",
        "kind",
        "amount",
        "balance_after",
        "idempotency_key",
        "reference",
        "api_key_id",
        "input_tokens",
        "output_tokens",
        "model",
        "amount_minor",
        "currency",
        "metadata",
        "created_at",
        "replayed",
        "member_id",
        "project",
        "cached_input_tokens",
        "cache_write_tokens",
        "price",
    ]
    adjustment, grant = rows  # newest first
    assert Decimal(adjustment["amount"]) == Decimal("-0.000001") and adjustment["amount"] == "-0.000001"
    assert Decimal(adjustment["balance_after"]) == Decimal("999999999999.999998")
    assert grant["amount"] == "999999999999.999999" and grant["kind"] == "grant"
    assert grant["reference"] == 'inv, "1"'  # quoted by the csv module, read back whole
    assert json.loads(grant["metadata"]) == {"note": "a,b"}
    assert grant["created_at"].endswith("Z") and grant["replayed"] == "false"
    # JSON: the same entries, the same exact amounts.
    entries = cli.json("transactions", "--user", "alice", "--format", "json")
    assert [e["id"] for e in entries] == [r["id"] for r in rows]
    assert entries[1]["amount"] == Decimal("999999999999.999999")


def test_metrics_prometheus_text(cli: Cli) -> None:
    out = cli.ok("metrics")
    assert "creditgate_verify_ok_total" in out
    assert "creditgate_verify_seconds" in out


def test_database_url_from_environment(new_cli: Cli, tmp_path: Path) -> None:
    cli = new_cli
    cli.env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'env.db'}"
    r = cli.run("grant", "--user", "u", "--amount", "1", url=None)
    assert r.returncode == 1 and "env.db" in r.stderr and "DATABASE_URL" in r.stderr, r.stderr
    r = cli.run("migrate", url=None)
    assert r.returncode == 0, r.stderr
    r = cli.run("grant", "--user", "u", "--amount", "1", url=None)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "env.db").exists() and not cli.db.exists()


def test_errors_and_usage_errors(cli: Cli) -> None:
    r = cli.run()
    assert r.returncode == 2 and "error: usage:" in r.stderr
    cli.fails("grant", "--user", "u", "--amount", "lots", code="usage", exit_code=2)
    cli.fails("grant", "--user", "u", code="usage", exit_code=2)
    cli.fails("grant", "--user", "u", "--amount", "0.0000001", code="invalid_argument")
    cli.fails("grant", "--user", "u", "--amount", "-5", code="invalid_argument")  # only adjustments go negative


@pytest.mark.skipif(
    not hasattr(LocalCreditManager, "import_balance"),
    reason="needs LocalCreditManager.import_balance",
)
def test_import_users_from_the_host_table(cli: Cli) -> None:
    # The host's own tables, as the seed's migration left them. Written and
    # closed before any ledger opens the file in this process (two SQLite
    # libraries must not share one open file in one process).
    digest = hashlib.sha256(b"hashed-legacy-key-for-3").hexdigest().upper()
    with contextlib.closing(sqlite3.connect(cli.db)) as conn, conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, credit_balance REAL)")
        conn.executemany(
            "INSERT INTO users VALUES (?, ?, ?)",
            [(1, "a@x", 5000.0), (2, "b@x", 0), (3, "c@x", 4998.5), (4, "d@x", None)],
        )
        conn.execute("CREATE TABLE api_keys (user_id INTEGER, key TEXT)")
        conn.execute("INSERT INTO api_keys VALUES (1, 'legacy-user-one-key-abcdef')")
        conn.execute("CREATE TABLE key_hashes (owner TEXT, digest TEXT)")
        conn.execute("INSERT INTO key_hashes VALUES ('3', ?)", (digest,))
    out = cli.ok("import-users", "--keys-table", "api_keys")
    assert "2 imported" in out
    assert cli.json("balance", "--user", "1", "--json")["balance"] == 5000
    assert cli.json("balance", "--user", "3", "--json")["balance"] == Decimal("4998.5")
    assert cli.json("transactions", "--user", "2", "--format", "json") == []
    entry = cli.json("transactions", "--user", "1", "--format", "json")[0]
    assert entry["kind"] == "adjustment" and entry["idempotency_key"] == "import:1"
    # Twice changes nothing.
    assert "2 already imported" in cli.ok("import-users", "--keys-table", "api_keys")
    assert len(cli.json("transactions", "--user", "1", "--format", "json")) == 1
    # Hosts that kept only hashes of their keys.
    args = ["--keys-table", "key_hashes", "--key-user-column", "owner", "--key-column", "digest"]
    # Importing the same balances under another kind is a conflict, not a second credit.
    cli.fails("import-users", *args, "--key-format", "sha256", "--kind", "purchase", code="idempotency_conflict")
    cli.ok("import-users", *args, "--key-format", "sha256")
    m = LocalCreditManager(cli.url)
    assert m.verify_api_key_credits("legacy-user-one-key-abcdef").user_id == "1"
    assert m.verify_api_key_credits("hashed-legacy-key-for-3").user_id == "3"
    assert all(k.legacy for k in m.list_api_keys("1"))


def test_import_users_on_the_test_backend(cli: Cli, host_sql: Callable[[str], None], db_url: str) -> None:
    # SQLite, or PostgreSQL with CREDITGATE_TEST_BACKEND=postgres: the same command.
    host_sql(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, credit_balance NUMERIC(12, 2));"
        "INSERT INTO users VALUES (1, 12.5), (2, 0);"
    )
    r = cli.run("import-users", url=db_url)
    assert r.returncode == 0, r.stderr
    assert "balances: 1 imported, 0 already imported" in r.stdout
    r = cli.run("import-users", url=db_url)
    assert "balances: 0 imported, 1 already imported" in r.stdout, r.stderr
    assert LocalCreditManager(db_url).get_balance("1") == Decimal("12.5")
    r = cli.run("import-users", "--table", "missing", url=db_url)
    assert r.returncode == 1 and "error: storage:" in r.stderr, r.stderr


def test_import_users_says_what_changed_since_the_last_run(cli: Cli) -> None:
    with contextlib.closing(sqlite3.connect(cli.db)) as conn, conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, credit_balance INTEGER)")
        conn.executemany("INSERT INTO users VALUES (?, ?)", [(1, 100), (2, 200)])
    assert "2 imported" in cli.ok("import-users")
    with contextlib.closing(sqlite3.connect(cli.db)) as conn, conn:
        conn.execute("UPDATE users SET credit_balance = 250 WHERE id = 2")  # the host kept writing
    err = cli.fails("import-users", code="idempotency_conflict")
    assert 'user "2" was already imported' in err and "now says 250" in err, err
    assert "does not sync" in err and "creditgate grant --kind adjustment" in err, err
    assert "other parameters" not in err
    assert cli.json("balance", "--user", "2", "--json")["balance"] == 200  # nothing imported twice


def test_import_users_rejects_bad_identifiers(cli: Cli) -> None:
    cli.fails("import-users", "--table", "users; DROP TABLE x", code="usage", exit_code=2)


def test_demo_runs_the_four_scenarios_and_leaves_nothing(new_cli: Cli, tmp_path: Path) -> None:
    cli = new_cli
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    cli.env["TMPDIR"] = str(scratch)
    r = cli.run("demo", url=None)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for marker in (
        "1. A new user",
        "402 insufficient_credits",
        "2. The user purchases",
        "3. Calls",
        "4. Use",
    ):
        assert marker in out
    assert "balance 4998.5" in out  # 1,500 tokens cost 1.5 credits
    assert "audit: ok" in out
    assert list(scratch.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]  # no creditgate.db in the cwd


def test_backup_copies_the_ledger_and_never_overwrites(cli: Cli, tmp_path: Path) -> None:
    cli.ok("grant", "--user", "u", "--amount", "12.5")
    dest = tmp_path / "copy.db"
    out = cli.ok("backup", str(dest))
    assert "integrity checked" in out and str(dest) in out
    assert dest.stat().st_mode & 0o777 == 0o600
    copy = LocalCreditManager(f"sqlite:///{dest}")
    assert copy.get_balance("u") == Decimal("12.5")
    assert copy.audit().ok
    cli.fails("backup", str(dest), code="invalid_argument")
    # The Python method takes os.PathLike too; wrong types are TypeErrors.
    m = LocalCreditManager(cli.url)
    assert m.backup(tmp_path / "second.db") == (tmp_path / "second.db").stat().st_size
    with pytest.raises(TypeError, match="dest must be a str"):
        m.backup(42)  # type: ignore[arg-type]


def test_help_lists_every_command(cli: Cli) -> None:
    out = cli.ok("--help")
    for command in (
        "migrate",
        "balance",
        "grant",
        "keys",
        "prices",
        "import-users",
        "transactions",
        "audit",
        "report",
        "metrics",
        "demo",
        "backup",
    ):
        assert command in out
