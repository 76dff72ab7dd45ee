"""The `creditgate` operator command line (docs/reference.md), also `python -m creditgate`.

Every command opens the ledger named by `--database-url` (before the command),
else `DATABASE_URL`, else `sqlite:///creditgate.db`. Only `migrate` (and
`demo`, on its own temporary file) may create a ledger: every other command
pointed at an SQLite file that does not exist fails with `error: not_found`
instead of creating an empty one. Failures print `error: <code>: <message>` on
standard error and exit 1; usage errors exit 2; `audit` exits 3 when the
ledger does not balance.
"""

from __future__ import annotations

import argparse
import csv
import getpass
import importlib
import io
import logging
import os
import re
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from importlib import metadata
from typing import Any, NoReturn

from creditgate import CreditError, InsufficientCredits, InvalidArgument, LocalCreditManager

from ._creditgate import (
    DEFAULT_CREDITS_PER_1K_TOKENS,
    DEFAULT_CREDITS_PER_USD,
    DEFAULT_DATABASE_URL,
    DEFAULT_EVENTS_LIMIT,
    DEFAULT_EXPIRE_LIMIT,
    DEFAULT_GRANT_PRIORITY,
    DEFAULT_MIN_CREDITS_API_KEY,
    DEFAULT_PAGE_LIMIT,
    MAX_EVENTS_PER_PAGE,
    MAX_EXPIRY_SWEEP,
    MAX_GRANT_PRIORITY,
    MAX_PAGE_LIMIT,
    MIN_GRANT_PRIORITY,
)
from ._json import FIELDS, as_dict, decimal_text, rfc3339, to_json
from .webhooks import DEFAULT_INTERVAL_SECONDS, Handler, PassReport, Worker

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNBALANCED = 3

# ----- values -> text ---------------------------------------------------------


def cell(value: Any) -> str:
    """One value as table or CSV text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, (dict, list)) or callable(getattr(value, "to_dict", None)):
        return to_json(value)
    return str(value)


def print_fields(obj: Any, as_json: bool) -> None:
    """An object as `name  value` lines, or as one JSON object."""
    if as_json:
        print(to_json(obj, indent=2))
        return
    fields = as_dict(obj)
    width = max(len(k) for k in fields)
    for key, value in fields.items():
        print(f"{key:<{width}}  {cell(value)}")


def print_table(rows: Sequence[Sequence[Any]], header: Sequence[str], right: Sequence[str] = ()) -> None:
    """Aligned columns; the columns named in `right` (numbers) right-aligned."""
    texts = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in texts]) for i, h in enumerate(header)]
    for row in [list(header), *texts]:
        cells = (v.rjust(w) if h in right else v.ljust(w) for v, w, h in zip(row, widths, header))
        print("  ".join(cells).rstrip())


# ----- argument parsing -------------------------------------------------------


class CliError(Exception):
    """A failure found by the CLI itself, reported like a CreditError (exit 1)."""

    exit_code = EXIT_ERROR

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CliError):
    """Bad command-line input caught after argparse (exit 2)."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str) -> None:
        super().__init__("usage", message)


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in the CLI's one error format."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"error: usage: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def amount_arg(text: str) -> Decimal:
    """A decimal amount; parsed here so a typo is a usage error, not a crash."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a decimal number: {text!r}") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def timestamp_arg(text: str) -> datetime:
    """An RFC 3339 time with a zone (`2027-01-01T00:00:00Z`)."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"needs a zone, e.g. 2027-01-01T00:00:00Z: {text!r}")
    return value


def time_arg(text: str) -> datetime:
    """An ISO 8601 / RFC 3339 date (`2027-01-01`, its UTC midnight) or time
    (`2027-01-01T12:00:00Z`; UTC when it has no zone)."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 date or time (e.g. 2027-01-01 or 2027-01-01T00:00:00Z): {text!r}"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def positive_int_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def identifier_arg(text: str) -> str:
    """A table or column name; checked because it is spliced into SQL."""
    if not IDENTIFIER.match(text):
        raise argparse.ArgumentTypeError(f"not a plain SQL identifier: {text!r}")
    return text


def build_parser() -> Parser:
    p = Parser(
        prog="creditgate",
        description="Operate a creditgate prepaid-credit ledger.",
        epilog="Exit status: 0 ok, 1 error, 2 usage error, 3 audit found the ledger unbalanced.",
    )
    p.add_argument(
        "--database-url",
        metavar="URL",
        help="ledger database (default: $DATABASE_URL, else sqlite:///creditgate.db)",
    )
    p.add_argument("--version", action="version", version=f"creditgate {package_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)

    def command(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> Parser:
        cmd: Parser = sub.add_parser(name, help=help_, description=help_)
        cmd.set_defaults(func=func)
        return cmd

    c = command(
        "migrate",
        cmd_migrate,
        "create the ledger or upgrade its schema (the only command that creates a ledger)",
    )
    c.add_argument(
        "--status",
        action="store_true",
        help="only show the schema versions (this library's, the database's) and what is pending; changes nothing",
    )
    c.add_argument("--json", action="store_true", help="with --status: print one JSON object")

    c = command(
        "backup",
        cmd_backup,
        "copy an SQLite ledger into a new file while it stays in use (SQLite's online backup API)",
    )
    c.add_argument("dest", metavar="PATH", help="the new file (never overwritten)")

    c = command("balance", cmd_balance, "show a user's account")
    c.add_argument("--user", required=True)
    c.add_argument("--json", action="store_true", help="print one JSON object")

    c = command("grant", cmd_grant, "add credits to a user's account")
    c.add_argument("--user", required=True)
    c.add_argument("--amount", required=True, type=amount_arg, help="credits, e.g. 5000 or 1.5")
    c.add_argument("--kind", default="grant", choices=["grant", "purchase", "refund", "adjustment"])
    c.add_argument("--idempotency-key", help="apply at most once per user and key")
    c.add_argument("--reference")
    c.add_argument(
        "--expires-at", type=timestamp_arg, metavar="TIME", help="the credits expire then (RFC 3339, with a zone)"
    )
    c.add_argument(
        "--category",
        choices=["paid", "promotional"],
        help="drawn down promotional first (default: promotional for --kind grant, else paid)",
    )
    c.add_argument(
        "--priority",
        type=int,
        default=DEFAULT_GRANT_PRIORITY,
        help=f"{MIN_GRANT_PRIORITY}..{MAX_GRANT_PRIORITY}, lower is drawn first (default {DEFAULT_GRANT_PRIORITY})",
    )
    c.add_argument("--json", action="store_true", help="print the entry as JSON")

    c = command("expire", cmd_expire, "apply every due grant expiry now (an expiry entry per expired grant)")
    c.add_argument(
        "--limit",
        type=positive_int_arg,
        default=DEFAULT_EXPIRE_LIMIT,
        help=f"accounts per transaction batch, 1..{MAX_EXPIRY_SWEEP} (default {DEFAULT_EXPIRE_LIMIT})",
    )
    c.add_argument("--json", action="store_true", help="print the totals as JSON")

    keys = command("keys", cmd_help, "create, list, revoke or import API keys")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", parser_class=Parser)
    c = ksub.add_parser("create", help="create a key (needs credits); prints the secret once")
    c.set_defaults(func=cmd_keys_create)
    c.add_argument("--user", required=True)
    c.add_argument("--name")
    c.add_argument("--json", action="store_true")
    c = ksub.add_parser("list", help="list a user's keys (never their secrets)")
    c.set_defaults(func=cmd_keys_list)
    c.add_argument("--user", required=True)
    c.add_argument("--json", action="store_true")
    c = ksub.add_parser("revoke", help="revoke a key at once")
    c.set_defaults(func=cmd_keys_revoke)
    c.add_argument("key_id", metavar="KEY_ID")
    c = ksub.add_parser(
        "import",
        help="register a legacy key; the secret (or its SHA-256) is read from standard input",
    )
    c.set_defaults(func=cmd_keys_import)
    c.add_argument("--user", required=True)
    c.add_argument("--name")
    c.add_argument(
        "--sha256",
        action="store_true",
        help="standard input holds the key's lowercase hex SHA-256, not the key",
    )
    c.add_argument("--json", action="store_true")

    prices = command("prices", cmd_help, "list or set per-model prices")
    psub = prices.add_subparsers(dest="prices_command", metavar="ACTION", parser_class=Parser)
    c = psub.add_parser("list", help="list per-model prices in effect now (credits per 1,000 tokens)")
    c.set_defaults(func=cmd_prices_list)
    c.add_argument("--history", action="store_true", help="every version, scheduled ones included, oldest first")
    c.add_argument("--model", metavar="MODEL", help="only this model")
    c.add_argument("--json", action="store_true")
    c = psub.add_parser(
        "set", help="set a model's price in credits per 1,000 tokens (a new version; the history stays)"
    )
    c.set_defaults(func=cmd_prices_set)
    c.add_argument("model", metavar="MODEL")
    c.add_argument("input_per_1k", metavar="INPUT_PER_1K", type=amount_arg)
    c.add_argument("output_per_1k", metavar="OUTPUT_PER_1K", type=amount_arg)
    c.add_argument("--cached-input", type=amount_arg, metavar="X", help="per 1,000 prompt tokens read from the cache")
    c.add_argument("--cache-write", type=amount_arg, metavar="X", help="per 1,000 prompt tokens written to the cache")
    c.add_argument("--request-fee", type=amount_arg, default=Decimal(0), metavar="X", help="credits per request")
    c.add_argument(
        "--effective-at", type=time_arg, metavar="TIME", help="in effect from then (default now; never in the past)"
    )
    c.add_argument("--json", action="store_true", help="print the price version as JSON")

    c = command(
        "usage",
        cmd_usage,
        "requests, tokens and credits of usage, filtered and grouped (by day, model, key, member, project)",
    )
    c.add_argument("--user", help="the paying account")
    c.add_argument("--key", metavar="KEY_ID")
    c.add_argument("--model")
    c.add_argument("--since", type=time_arg, metavar="TIME", help="from (ISO 8601 date or time; UTC if no zone)")
    c.add_argument("--until", type=time_arg, metavar="TIME", help="up to, not including")
    c.add_argument(
        "--group-by",
        default="",
        metavar="GROUPS",
        help="comma-separated: day, model, key, member, project (default: one row of totals)",
    )
    c.add_argument("--format", default="table", choices=["table", "csv", "json"])

    c = command(
        "statement",
        cmd_statement,
        "an account's opening balance, movements (usage by model and rates) and closing balance over a range",
    )
    c.add_argument("user", metavar="USER")
    c.add_argument("--since", type=time_arg, required=True, metavar="TIME", help="ISO 8601 date or time")
    c.add_argument("--until", type=time_arg, required=True, metavar="TIME", help="up to, not including")
    c.add_argument("--format", default="table", choices=["table", "csv", "json"])

    c = command(
        "import-users",
        cmd_import_users,
        "import credit balances (and optionally API keys) from the host's own tables "
        "in the ledger's own database (SQLite or PostgreSQL); running it twice changes nothing",
    )
    c.add_argument("--table", default="users", type=identifier_arg)
    c.add_argument("--id-column", default="id", type=identifier_arg)
    c.add_argument("--balance-column", default="credit_balance", type=identifier_arg)
    c.add_argument("--kind", default="adjustment", choices=["adjustment", "purchase"])
    c.add_argument("--keys-table", type=identifier_arg, help="table of existing API keys")
    c.add_argument("--key-user-column", default="user_id", type=identifier_arg)
    c.add_argument("--key-column", default="key", type=identifier_arg)
    c.add_argument(
        "--key-format",
        default="plain",
        choices=["plain", "sha256"],
        help="the key column holds the secret itself or its hex SHA-256",
    )

    c = command("transactions", cmd_transactions, "list a user's ledger entries, newest first")
    c.add_argument("--user", required=True)
    c.add_argument(
        "--limit",
        type=positive_int_arg,
        default=DEFAULT_PAGE_LIMIT,
        help=f"1..{MAX_PAGE_LIMIT} (default {DEFAULT_PAGE_LIMIT})",
    )
    c.add_argument("--before", metavar="ENTRY_ID", help="page on from this entry (a cursor)")
    c.add_argument(
        "--member",
        metavar="MEMBER",
        help="only the entries this member of the organisation --user made (its keys' charges, its allowances)",
    )
    c.add_argument("--format", default="table", choices=["table", "json", "csv"])

    c = command(
        "members",
        cmd_members,
        "list an organisation's members with their budgets and the credits each has spent",
    )
    c.add_argument("org", metavar="ORG")
    c.add_argument("--json", action="store_true", help="print the members (and their usage) as JSON")

    c = command("allowances", cmd_allowances, "list a user's allowances (credits refilled every period)")
    c.add_argument("user", metavar="USER")
    c.add_argument("--json", action="store_true")

    topup = command("topup", cmd_help, "set, show or remove a user's auto top-up rule; record a failed top-up")
    tsub = topup.add_subparsers(dest="topup_command", metavar="ACTION", parser_class=Parser)
    c = tsub.add_parser(
        "set",
        help="when the available balance crosses below --threshold, request a top-up (topup.requested event)",
    )
    c.set_defaults(func=cmd_topup_set)
    c.add_argument("user", metavar="USER")
    c.add_argument("--threshold", required=True, type=amount_arg, help="credits")
    how = c.add_mutually_exclusive_group(required=True)
    how.add_argument("--amount", type=amount_arg, help="request this many credits")
    how.add_argument("--target", type=amount_arg, help="request what takes the available balance up to this")
    c.add_argument("--max-per-month", required=True, type=positive_int_arg, help="top-ups per calendar month (UTC)")
    c.add_argument("--monthly-cap", required=True, type=amount_arg, help="credits requested per calendar month")
    c.add_argument("--json", action="store_true", help="print the top-up requested at once (or null) as JSON")
    c = tsub.add_parser("show", help="show a user's rule, this month's use of its caps and its latest top-ups")
    c.set_defaults(func=cmd_topup_show)
    c.add_argument("user", metavar="USER")
    c.add_argument(
        "--limit",
        type=positive_int_arg,
        default=DEFAULT_PAGE_LIMIT,
        help=f"top-ups listed, 1..{MAX_PAGE_LIMIT} (default {DEFAULT_PAGE_LIMIT})",
    )
    c.add_argument("--format", default="table", choices=["table", "json"])
    c = tsub.add_parser("remove", help="remove a user's rule (top-ups already requested stay payable)")
    c.set_defaults(func=cmd_topup_remove)
    c.add_argument("user", metavar="USER")
    c = tsub.add_parser("fail", help="record that a top-up's payment failed (it still counts against the month)")
    c.set_defaults(func=cmd_topup_fail)
    c.add_argument("topup_id", metavar="TOPUP_ID")
    c.add_argument("--reason", required=True, help="why, e.g. the provider's decline code")
    c.add_argument("--json", action="store_true", help="print the top-up as JSON")
    add_webhook_commands(command)

    c = command("audit", cmd_audit, "check that every balance equals the sum of its entries")
    c.add_argument("--json", action="store_true")

    c = command("report", cmd_report, "business figures from the ledger")
    c.add_argument("--json", action="store_true")

    command("metrics", cmd_metrics, "this process's counters in Prometheus text format")

    c = command(
        "dashboard",
        cmd_dashboard,
        "serve the operator dashboard (needs CREDITGATE_DASHBOARD_TOKEN; pip install '.[dashboard]')",
    )
    c.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    c.add_argument("--port", type=port_arg, default=8050, help="TCP port (default 8050)")
    c.add_argument("--admin", action="store_true", help="enable admin actions (as CREDITGATE_DASHBOARD_ADMIN=1)")
    c.add_argument("--new-token", action="store_true", help="print a fresh operator token and exit")
    c.add_argument(
        "--forwarded-allow-ips",
        metavar="IPS",
        help="behind a TLS proxy: the proxy's addresses (comma-separated), whose X-Forwarded-Proto/-For are trusted "
        "(the session cookie is then Secure); default: trust none",
    )
    command("demo", cmd_demo, "run the four scenarios of the seed on a throw-away database")
    return p


# ----- commands ---------------------------------------------------------------


def package_version() -> str:
    try:
        return metadata.version("creditgate")
    except metadata.PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


def database_url(args: argparse.Namespace) -> str:
    """The URL the core will open: --database-url, else DATABASE_URL, else the default."""
    url: str | None = args.database_url
    return url or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def sqlite_file(url: str) -> str | None:
    """The file of an `sqlite:///path` URL (as the core reads it); None for
    `:memory:` and other backends."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    return None if path in ("", ":memory:") else path


def open_manager(args: argparse.Namespace, create: bool = False) -> LocalCreditManager:
    """Opens the ledger; refuses to create an SQLite file unless `create`.

    A nightly `creditgate backup` or `audit` run from the wrong directory must
    fail, not back up and audit an empty ledger it just created.
    """
    url = database_url(args)
    if not create:
        require_ledger(args, url)
    return LocalCreditManager(url)


def require_ledger(args: argparse.Namespace, url: str) -> None:
    """Fails with `not_found` when `url` names an SQLite file that does not exist."""
    path = sqlite_file(url)
    if path is not None and not os.path.exists(path):
        where = (
            "--database-url"
            if args.database_url
            else ("DATABASE_URL" if os.environ.get("DATABASE_URL") else "the default")
        )
        raise CliError(
            "not_found",
            f"no ledger at {os.path.abspath(path)} ({url} from {where}); this command does not create one: "
            "check --database-url / DATABASE_URL and the working directory, or run `creditgate migrate` "
            "to create a new ledger",
        )


def cmd_help(args: argparse.Namespace) -> int:
    # `creditgate keys` without an action: show that group's help.
    raise UsageError(f"{args.command} needs an action (see creditgate {args.command} --help)")


def cmd_migrate(args: argparse.Namespace) -> int:
    if args.status:
        return migrate_status(args)
    if args.json:
        raise UsageError("--json goes with --status")
    m = open_manager(args, create=True)
    # The open migrated; migrate() again refuses a schema newer than this
    # library (the open only marks such a ledger read-only).
    m.migrate()
    before, now = m.schema_versions()
    if before == 0:
        print(f"created at version {now}: {m.database_url}")
    elif before < now:
        print(f"upgraded {before}\u2192{now}: {m.database_url}")
    else:
        print(f"already at version {now}: {m.database_url}")
    return 0


def migrate_status(args: argparse.Namespace) -> int:
    """The schema versions, read without migrating or creating anything."""
    url = database_url(args)
    require_ledger(args, url)
    status = LocalCreditManager.schema_status(url)
    if args.json:
        print(to_json(status, indent=2))
        return 0
    print(f"library schema version   {status.library_version} (creditgate {package_version()})")
    print(f"database schema version  {status.database_version}")
    if status.newer_than_library:
        print("pending migrations       none: the database is newer than this library, which refuses to write to it")
        print("upgrade creditgate (docs/upgrading.md)")
    elif status.pending:
        print(f"pending migrations       {', '.join(str(v) for v in status.pending)}")
        print("run `creditgate migrate` (back up first: docs/upgrading.md)")
    else:
        print("pending migrations       none: up to date")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    size = open_manager(args).backup(args.dest)
    print(f"backup written: {args.dest} ({size} bytes, integrity checked)")
    return 0


def cmd_balance(args: argparse.Namespace) -> int:
    print_fields(open_manager(args).account(args.user), args.json)
    return 0


def cmd_grant(args: argparse.Namespace) -> int:
    entry = open_manager(args).add_credits(
        args.user,
        args.amount,
        kind=args.kind,
        idempotency_key=args.idempotency_key,
        reference=args.reference,
        expires_at=args.expires_at,
        category=args.category,
        priority=args.priority,
    )
    if args.json:
        print(to_json(entry, indent=2))
    else:
        note = " (already applied: nothing changed)" if entry.replayed else ""
        print(f"{entry.kind} {cell(entry.amount)} to {entry.user_id}: balance {cell(entry.balance_after)}{note}")
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    key = open_manager(args).create_api_key(args.user, args.name)
    if args.json:
        print(to_json(key, indent=2))
    else:
        print(f"key_id  {key.key_id}")
        print(f"prefix  {key.prefix}")
        print(f"secret  {key.secret}")
    print("Store the secret now: it cannot be shown again.", file=sys.stderr)
    return 0


def print_records(args: argparse.Namespace, records: list[Any], kind: str) -> int:
    """A list of ledger records: JSON with --json, else a table of `kind`'s fields."""
    if args.json:
        print(to_json(records, indent=2))
        return 0
    header = FIELDS[kind]
    print_table([[getattr(r, f) for f in header] for r in records], header)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    return print_records(args, open_manager(args).list_api_keys(args.user), "ApiKeyInfo")


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    open_manager(args).revoke_api_key(args.key_id)
    print(f"revoked {args.key_id}")
    return 0


def read_secret(prompt: str) -> str:
    """One secret from standard input: never from argv, where `ps` and shell
    history would show it; without echo when typed at a terminal."""
    if sys.stdin.isatty():
        text = getpass.getpass(prompt)
    else:
        text = sys.stdin.readline()
    text = text.strip()
    if not text:
        raise UsageError("no secret on standard input")
    return text


def cmd_keys_import(args: argparse.Namespace) -> int:
    m = open_manager(args)
    if args.sha256:
        info = m.import_api_key(args.user, secret_sha256=read_secret("SHA-256: "), name=args.name)
    else:
        info = m.import_api_key(args.user, secret=read_secret("legacy API key: "), name=args.name)
    if args.json:
        print(to_json(info, indent=2))
    else:
        print(f"imported legacy key {info.key_id} for {info.user_id}")
    return 0


PRICE_COLUMNS = ("input_per_1k", "output_per_1k", "cached_input_per_1k", "cache_write_per_1k", "request_fee")


def cmd_prices_list(args: argparse.Namespace) -> int:
    m = open_manager(args)
    if args.history:
        versions = m.price_history(args.model)
        if args.json:
            print(to_json(versions, indent=2))
            return 0
        print_table(
            [[v.model, *(getattr(v.price, c) for c in PRICE_COLUMNS), v.effective_at, v.set_at] for v in versions],
            ["model", *PRICE_COLUMNS, "effective_at", "set_at"],
            right=PRICE_COLUMNS,
        )
        return 0
    prices = {k: p for k, p in m.model_prices().items() if args.model is None or k == args.model}
    if args.json:
        print(to_json(prices))
        return 0
    print_table(
        [[k, *(getattr(p, c) for c in PRICE_COLUMNS)] for k, p in sorted(prices.items())],
        ["model", *PRICE_COLUMNS],
        right=PRICE_COLUMNS,
    )
    print(
        "(models not listed use the default price, CREDITS_PER_1K_TOKENS; an empty cache price is the input price)",
        file=sys.stderr,
    )
    return 0


def cmd_prices_set(args: argparse.Namespace) -> int:
    v = open_manager(args).set_model_price(
        args.model,
        args.input_per_1k,
        args.output_per_1k,
        cached_input_per_1k=args.cached_input,
        cache_write_per_1k=args.cache_write,
        request_fee=args.request_fee,
        effective_at=args.effective_at,
    )
    if args.json:
        print(to_json(v, indent=2))
        return 0
    p = v.price
    parts = [f"{cell(p.input_per_1k)} input", f"{cell(p.output_per_1k)} output"]
    if p.cached_input_per_1k is not None:
        parts.append(f"{cell(p.cached_input_per_1k)} cached input")
    if p.cache_write_per_1k is not None:
        parts.append(f"{cell(p.cache_write_per_1k)} cache write")
    fee = f" + {cell(p.request_fee)} per request" if p.request_fee else ""
    print(f"{v.model}: {', '.join(parts)} credits per 1,000 tokens{fee}, from {cell(v.effective_at)}")
    return 0


# ----- usage and statements ---------------------------------------------------------

USAGE_COUNTS = ("requests", "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "credits")
# A group name -> its UsageRow field.
GROUP_FIELDS = {"day": "day", "model": "model", "key": "key_id", "member": "member_id", "project": "project"}


def bad_input(e: InvalidArgument) -> UsageError:
    """The core refused an argument of the command line: a usage error (exit 2)."""
    message = str(e)
    spelled = e.code.replace("_", " ") + ": "
    return UsageError(message[len(spelled) :] if message.startswith(spelled) else message)


def cmd_usage(args: argparse.Namespace) -> int:
    m = open_manager(args)
    groups = [g.strip() for g in args.group_by.split(",") if g.strip()]
    query: dict[str, Any] = {
        "user_id": args.user,
        "key_id": args.key,
        "model": args.model,
        "since": args.since,
        "until": args.until,
        "group_by": groups,
    }
    try:
        if args.format == "json":
            print(m.usage_summary_json(**query))
            return 0
        if args.format == "csv":
            sys.stdout.write(m.usage_summary_csv(**query))
            return 0
        rows = m.usage_summary(**query)
    except InvalidArgument as e:
        raise bad_input(e) from None
    # The core checked the names: each is a known group, once.
    table: list[list[Any]] = []
    for r in rows:
        keys = [getattr(r, GROUP_FIELDS[g]) for g in groups]
        keys = [k.date().isoformat() if isinstance(k, datetime) else k for k in keys]
        table.append([*keys, *(getattr(r, c) for c in USAGE_COUNTS)])
    totals = [sum((getattr(r, c) for r in rows), Decimal(0) if c == "credits" else 0) for c in USAGE_COUNTS]
    header = [*groups, *USAGE_COUNTS]
    label = ["total", *[""] * (len(groups) - 1)] if groups else []
    print_table([*table, label + totals] if groups else [totals], header, right=USAGE_COUNTS)
    return 0


def cmd_statement(args: argparse.Namespace) -> int:
    try:
        s = open_manager(args).statement(args.user, args.since, args.until)
    except InvalidArgument as e:
        raise bad_input(e) from None
    if args.format == "json":
        print(s.to_json())
        return 0
    if args.format == "csv":
        sys.stdout.write(s.to_csv())
        return 0
    print(f"statement of {s.user_id}, {cell(s.since)} to {cell(s.until)} (not included)")
    print(f"opening balance  {cell(s.opening_balance)}")
    header = ["kind", "model", "rates", "entries", "input", "output", "cached", "cache_write", "amount"]
    rows = [
        [
            line.kind,
            line.model,
            None if line.price is None else rates(line.price),
            line.entries,
            line.input_tokens,
            line.output_tokens,
            line.cached_input_tokens,
            line.cache_write_tokens,
            line.amount,
        ]
        for line in s.lines
    ]
    if rows:
        print_table(rows, header, right=header[3:])
    else:
        print("(no movements)")
    print(f"closing balance  {cell(s.closing_balance)}")
    return 0


def rates(p: Any) -> str:
    """A price in one cell: `in/out`, then the cache rates and the fee when set."""
    text = f"{cell(p.input_per_1k)}/{cell(p.output_per_1k)}"
    if p.cached_input_per_1k is not None:
        text += f" cached {cell(p.cached_input_per_1k)}"
    if p.cache_write_per_1k is not None:
        text += f" write {cell(p.cache_write_per_1k)}"
    if p.request_fee:
        text += f" fee {cell(p.request_fee)}"
    return text


def cmd_expire(args: argparse.Namespace) -> int:
    m = open_manager(args)
    accounts, entries, credits, refills = 0, 0, Decimal(0), 0
    while True:
        sweep = m.expire_grants(args.limit)
        accounts += sweep.accounts
        entries += sweep.entries
        credits += sweep.credits
        refills += sweep.refills
        if sweep.accounts < args.limit:
            break
    if args.json:
        totals = {"accounts": accounts, "entries": entries, "credits": credits, "refills": refills}
        print(to_json(totals, indent=2))
    else:
        print(f"expired {entries} grants of {accounts} accounts: {cell(credits)} credits; {refills} allowance refills")
    return 0


def cmd_transactions(args: argparse.Namespace) -> int:
    m = open_manager(args)
    if args.member is not None:
        entries = m.member_transactions(args.user, args.member, limit=args.limit, before=args.before)
    else:
        entries = m.transactions(args.user, limit=args.limit, before=args.before)
    if args.format == "json":
        print(to_json(entries, indent=2))
    elif args.format == "csv":
        fields = FIELDS["Entry"]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(fields)
        for e in entries:
            writer.writerow([cell(getattr(e, f)) for f in fields])
        sys.stdout.write(out.getvalue())
    else:
        header = ["seq", "created_at", "kind", "amount", "balance_after", "detail"]
        print_table(
            [
                [
                    e.seq,
                    e.created_at,
                    e.kind,
                    e.amount,
                    e.balance_after,
                    entry_detail(e),
                ]
                for e in entries
            ],
            header,
        )
    return 0


def cmd_members(args: argparse.Namespace) -> int:
    m = open_manager(args)
    members = m.members(args.org)
    usage = {u.member_id: u for u in m.member_usage(args.org)}
    if args.json:
        print(to_json([{**as_dict(x), "usage": usage.get(x.user_id)} for x in members], indent=2))
        return 0
    header = ["member", "joined", "budget", "spent", "remaining", "usage_credits"]
    rows = []
    for x in members:
        b = x.budget
        used = usage.get(x.user_id)
        rows.append(
            [
                x.user_id,
                x.joined_at,
                None if b is None else f"{cell(b.limit)} {b.window}",
                None if b is None else b.spent,
                None if b is None else b.remaining,
                Decimal(0) if used is None else used.credits,
            ]
        )
    print_table(rows, header)
    return 0


def cmd_allowances(args: argparse.Namespace) -> int:
    return print_records(args, open_manager(args).allowances(args.user), "Allowance")


def cmd_topup_set(args: argparse.Namespace) -> int:
    m = open_manager(args)
    t = m.set_auto_topup(
        args.user,
        args.threshold,
        amount=args.amount,
        target=args.target,
        max_per_month=args.max_per_month,
        monthly_cap=args.monthly_cap,
    )
    if args.json:
        print(to_json(t, indent=2))
    elif t is None:
        print(f"auto top-up set for {args.user}")
    else:
        print(f"auto top-up set for {args.user}; already below the threshold: requested {t.id} of {cell(t.amount)}")
    return 0


def rule_text(rule: Any) -> str:
    """An auto top-up rule in one line."""
    how = f"{cell(rule.amount)}" if rule.amount is not None else f"up to {cell(rule.target)}"
    return (
        f"below {cell(rule.threshold)} request {how}; at most {rule.max_per_month} top-ups "
        f"and {cell(rule.monthly_cap)} credits per month"
    )


def cmd_topup_show(args: argparse.Namespace) -> int:
    m = open_manager(args)
    account = m.account(args.user)
    topups = m.topups(args.user, limit=args.limit)
    if args.format == "json":
        shown = {
            "user_id": args.user,
            "auto_topup": account.auto_topup,
            "topups_this_month": account.topups_this_month,
            "topups": topups,
        }
        print(to_json(shown, indent=2))
        return 0
    rule = account.auto_topup
    print(f"rule       {'none' if rule is None else rule_text(rule)}")
    month = account.topups_this_month
    requested = sum((t.amount for t in month), Decimal(0))
    print(f"this month {len(month)} top-ups, {cell(requested)} credits requested")
    if topups:
        print()
        header = ["id", "status", "amount", "created_at", "entry_id", "reason"]
        rows = [[t.id, t.status, t.amount, t.created_at, t.entry_id, t.reason] for t in topups]
        print_table(rows, header, right=["amount"])
    return 0


def cmd_topup_remove(args: argparse.Namespace) -> int:
    removed = open_manager(args).remove_auto_topup(args.user)
    print(f"auto top-up removed for {args.user}" if removed else f"{args.user} had no auto top-up rule")
    return 0


def cmd_topup_fail(args: argparse.Namespace) -> int:
    t = open_manager(args).record_topup_failure(args.topup_id, args.reason)
    if args.json:
        print(to_json(t, indent=2))
    else:
        print(f"top-up {t.id} of {cell(t.amount)} for {t.user_id}: {t.status} ({t.reason})")
    return 0


def entry_detail(e: Any) -> str:
    """The few fields that say what an entry was for, in one column."""
    parts = []
    if e.model is not None or e.input_tokens is not None:
        parts.append(f"{e.model or '-'} in={e.input_tokens or 0} out={e.output_tokens or 0}")
    if e.amount_minor is not None:
        parts.append(f"{e.amount_minor} {e.currency} minor units")
    for name in ("member_id", "reference", "idempotency_key"):
        if getattr(e, name) is not None:
            parts.append(f"{name}={getattr(e, name)}")
    return "  ".join(parts)


def cmd_audit(args: argparse.Namespace) -> int:
    report = open_manager(args).audit()
    if args.json:
        print(to_json(report, indent=2))
    else:
        verdict = "ok" if report.ok else "UNBALANCED"
        print(f"{verdict}: {report.accounts_checked} accounts, {report.entries_checked} entries checked")
        for mismatch in report.mismatches:
            print("  " + "  ".join(f"{k}={cell(v)}" for k, v in as_dict(mismatch).items()))
    return 0 if report.ok else EXIT_UNBALANCED


def cmd_report(args: argparse.Namespace) -> int:
    print_fields(open_manager(args).report(), args.json)
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    sys.stdout.write(open_manager(args).metrics_prometheus())
    return 0


# ----- webhooks ------------------------------------------------------------------

CommandAdder = Callable[[str, Callable[[argparse.Namespace], int], str], Parser]


def add_webhook_commands(command: CommandAdder) -> None:
    hooks = command("webhooks", cmd_help, "manage webhook subscriptions, their dead letters, and run the worker")
    wsub = hooks.add_subparsers(dest="webhooks_command", metavar="ACTION", parser_class=Parser)

    def action(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> Parser:
        c: Parser = wsub.add_parser(name, help=help_, description=help_)
        c.set_defaults(func=func)
        return c

    c = action("add", cmd_webhooks_add, "subscribe an HTTP(S) endpoint to events; prints its signing secret once")
    c.add_argument("url", metavar="URL")
    c.add_argument("--events", default="", metavar="KINDS", help="comma-separated event kinds (default: every kind)")
    c.add_argument("--description", metavar="TEXT")
    c.add_argument("--format", default="table", choices=["table", "json"])
    c = action("list", cmd_webhooks_list, "list subscriptions and their delivery figures (never their secrets)")
    c.add_argument("--format", default="table", choices=["table", "json"])
    for name, help_ in (
        ("enable", "resume deliveries to a subscription (from where its cursor stopped)"),
        ("disable", "pause deliveries to a subscription (events keep queueing)"),
    ):
        c = action(name, cmd_webhooks_enable, help_)
        c.add_argument("webhook_id", metavar="ID")
        c.add_argument("--format", default="table", choices=["table", "json"])
    c = action("remove", cmd_webhooks_remove, "delete a subscription and its dead letters")
    c.add_argument("webhook_id", metavar="ID")
    c = action("rotate-secret", cmd_webhooks_rotate, "replace a subscription's signing secret; prints the new one once")
    c.add_argument("webhook_id", metavar="ID")
    c.add_argument("--format", default="table", choices=["table", "json"])
    c = action("dead-letters", cmd_webhooks_dead_letters, "list events given up on after every attempt, oldest first")
    c.add_argument("webhook_id", metavar="ID", nargs="?", help="only this subscription's")
    c.add_argument(
        "--limit",
        type=positive_int_arg,
        default=DEFAULT_EVENTS_LIMIT,
        help=f"1..{MAX_EVENTS_PER_PAGE} (default {DEFAULT_EVENTS_LIMIT})",
    )
    c.add_argument("--format", default="table", choices=["table", "json"])
    c = action("replay", cmd_webhooks_replay, "queue dead letters for one more attempt at the worker's next pass")
    c.add_argument("webhook_id", metavar="ID")
    c.add_argument("event_ids", metavar="EVENT_ID", nargs="*", type=positive_int_arg)
    c.add_argument("--all", action="store_true", help="every dead letter of the subscription")
    c = action(
        "run",
        cmd_webhooks_run,
        "deliver events to every enabled subscription until SIGTERM/SIGINT (which finish the current pass)",
    )
    c.add_argument("--once", action="store_true", help="one pass, then exit")
    c.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL_SECONDS,
        metavar="S",
        help=f"seconds to wait after a pass that found nothing (default {DEFAULT_INTERVAL_SECONDS:g})",
    )
    for flag, help_ in (
        ("--timeout-ms", "bound of each request, connect included"),
        ("--max-attempts", "attempts of an event before it is dead-lettered"),
        ("--backoff-base-ms", "delay after the first failed attempt (doubling, with jitter)"),
        ("--backoff-max-ms", "longest delay between attempts"),
        ("--batch-size", "events read per subscription per query"),
    ):
        c.add_argument(flag, type=positive_int_arg, metavar="N", help=f"{help_} (default: the library's)")
    c.add_argument(
        "--handler",
        action="append",
        default=[],
        type=handler_arg,
        metavar="MODULE:FUNC[=KINDS]",
        help="also call this Python function with each event (of these comma-separated kinds); "
        "raising is a failed attempt, retried; repeatable",
    )
    c.add_argument("--no-deliver", action="store_true", help="only run the --handler functions, no HTTP deliveries")
    c.add_argument("--format", default="table", choices=["table", "json"], help="of the totals printed at exit")


def kinds_arg(text: str) -> list[str]:
    """`K,K` -> [K, K]; the core checks each name."""
    return [k.strip() for k in text.split(",") if k.strip()]


def handler_arg(text: str) -> tuple[str, Handler]:
    """`MODULE:FUNC[=K,K]` -> (consumer name `MODULE:FUNC`, the loaded handler)."""
    target, _, kinds = text.partition("=")
    module_name, sep, attr = target.strip().partition(":")
    if not sep or not module_name or not attr:
        raise argparse.ArgumentTypeError(f"expected MODULE:FUNC[=KINDS], got {text!r}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise argparse.ArgumentTypeError(f"cannot load {target!r}: {e}") from None
    if not callable(obj):
        raise argparse.ArgumentTypeError(f"{target!r} is not callable")
    events = kinds_arg(kinds) if kinds else None
    return f"{module_name}:{attr}", Handler(obj, events)


def print_secret(sub_id: str, secret: str, as_json: bool) -> None:
    """A new signing secret, shown this once."""
    if as_json:
        print(to_json({"id": sub_id, "secret": secret}, indent=2))
    else:
        print(f"id      {sub_id}")
        print(f"secret  {secret}")
    print(
        "Store the secret now (your receiver verifies signatures with it): it cannot be shown again.",
        file=sys.stderr,
    )


def cmd_webhooks_add(args: argparse.Namespace) -> int:
    m = open_manager(args)
    kinds = kinds_arg(args.events) or None
    try:
        sub, secret = m.create_webhook(args.url, kinds, args.description)
    except InvalidArgument as e:
        raise bad_input(e) from None
    if args.format == "json":
        print(to_json({"subscription": sub, "secret": secret}, indent=2))
        print("Store the secret now: it cannot be shown again.", file=sys.stderr)
    else:
        print(f"subscribed {sub.url} to {', '.join(sub.kinds) or 'every event'}")
        print_secret(sub.id, secret, False)
    return 0


WEBHOOK_COLUMNS = ("id", "url", "events", "enabled", "delivered", "failed", "dead", "pending", "lag_s", "last_error")
WEBHOOK_NUMBERS = ("delivered", "failed", "dead", "pending", "lag_s")


def cmd_webhooks_list(args: argparse.Namespace) -> int:
    subs = open_manager(args).webhooks()
    if args.format == "json":
        print(to_json(subs, indent=2))
        return 0
    rows = [
        [
            s.id,
            s.url,
            ",".join(s.kinds) or "*",
            s.enabled,
            s.delivered,
            s.failed_attempts,
            s.dead_lettered,
            s.pending,
            s.lag_seconds,
            s.last_error,
        ]
        for s in subs
    ]
    print_table(rows, WEBHOOK_COLUMNS, right=WEBHOOK_NUMBERS)
    return 0


def cmd_webhooks_enable(args: argparse.Namespace) -> int:
    enabled = args.webhooks_command == "enable"
    sub = open_manager(args).set_webhook_enabled(args.webhook_id, enabled)
    if args.format == "json":
        print(to_json(sub, indent=2))
    else:
        print(f"{'enabled' if sub.enabled else 'disabled'} {sub.id} ({sub.url})")
    return 0


def cmd_webhooks_remove(args: argparse.Namespace) -> int:
    open_manager(args).delete_webhook(args.webhook_id)
    print(f"removed {args.webhook_id}")
    return 0


def cmd_webhooks_rotate(args: argparse.Namespace) -> int:
    secret = open_manager(args).rotate_webhook_secret(args.webhook_id)
    print_secret(args.webhook_id, secret, args.format == "json")
    return 0


def cmd_webhooks_dead_letters(args: argparse.Namespace) -> int:
    try:
        letters = open_manager(args).webhook_dead_letters(args.webhook_id, args.limit)
    except InvalidArgument as e:
        raise bad_input(e) from None
    if args.format == "json":
        print(to_json(letters, indent=2))
        return 0
    header = FIELDS["DeadLetter"]
    print_table([[getattr(d, f) for f in header] for d in letters], header, right=("event_id", "attempts"))
    return 0


def cmd_webhooks_replay(args: argparse.Namespace) -> int:
    if args.all == bool(args.event_ids):
        raise UsageError("give the EVENT_IDs to replay, or --all")
    n = open_manager(args).replay_dead_letters(args.webhook_id, None if args.all else args.event_ids)
    print(f"requeued {n} dead letters of {args.webhook_id}: the worker's next pass delivers them")
    return 0


def port_arg(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 1..65535, got {text[:16]!r}")
    return int(text)


def cmd_dashboard(args: argparse.Namespace) -> int:
    try:
        from .dashboard import DashboardConfig, DashboardConfigError, create_app, new_token

        if args.new_token:  # no server needed
            print(new_token())
            return 0
        import uvicorn
    except ImportError as e:
        raise CliError("unavailable", f"the dashboard needs its extra: pip install '.[dashboard]' ({e})") from e
    try:
        config = DashboardConfig.from_env(admin=True if args.admin else None)
    except DashboardConfigError as e:
        raise UsageError(str(e)) from None
    app = create_app(open_manager(args), config=config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    mode = "admin actions ON" if config.admin else "read-only"
    print(f"creditgate dashboard on http://{args.host}:{args.port}/ ({mode})", flush=True)
    proxy = args.forwarded_allow_ips is not None
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        proxy_headers=proxy,
        forwarded_allow_ips=args.forwarded_allow_ips if proxy else None,
    )
    return 0


def cmd_webhooks_run(args: argparse.Namespace) -> int:
    if not args.interval >= 0:
        raise UsageError(f"--interval must be >= 0 seconds, got {args.interval}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    worker = Worker(
        open_manager(args),
        interval=args.interval,
        handlers=dict(args.handler),
        deliver=not args.no_deliver,
        timeout_ms=args.timeout_ms,
        max_attempts=args.max_attempts,
        backoff_base_ms=args.backoff_base_ms,
        backoff_max_ms=args.backoff_max_ms,
        batch_size=args.batch_size,
    )
    total = worker.run_once() if args.once else run_until_signalled(worker)
    if args.format == "json":
        print(to_json(total, indent=2))
    else:
        print(f"sent {total.sent}, failed attempts {total.failed}, dead-lettered {total.dead_lettered}")
    return 0


def run_until_signalled(worker: Worker) -> PassReport:
    """``worker.run()`` on a thread of its own until SIGTERM or SIGINT, which
    end it after the current pass.

    The passes run off the main thread because Python runs signal handlers
    on the main thread between bytecodes: one that set the worker's Event
    while that same thread held the Event's lock (inside ``wait``) would
    deadlock. Here the main thread only joins.
    """
    result: list[PassReport] = []
    failure: list[BaseException] = []

    def loop() -> None:
        try:
            result.append(worker.run())
        except BaseException as e:  # re-raised on the main thread
            failure.append(e)
            worker.stop()

    def on_signal(signum: int, frame: object) -> None:
        logging.getLogger("creditgate.webhooks").info(
            "%s: stopping after the current pass", signal.Signals(signum).name
        )
        worker.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        thread = threading.Thread(target=loop, name="creditgate-webhooks")
        thread.start()
        while thread.is_alive():
            thread.join(0.25)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if failure:
        raise failure[0]
    return result[0]


# ----- import-users -------------------------------------------------------------


def cmd_import_users(args: argparse.Namespace) -> int:
    # The core reads the host's tables from the ledger's own database (SQLite
    # or PostgreSQL), checks every row before the first write, and keys each
    # entry `import:<user_id>`, so a re-run replays it.
    m = open_manager(args)
    summary = m.import_users(
        table=args.table,
        id_column=args.id_column,
        balance_column=args.balance_column,
        kind=args.kind,
        keys_table=args.keys_table,
        key_user_column=args.key_user_column,
        key_column=args.key_column,
        key_format=args.key_format,
    )
    print(f"balances: {summary.balances_imported} imported, {summary.balances_already_imported} already imported")
    if args.keys_table:
        print(f"legacy API keys: {summary.keys} registered (re-importing a key changes nothing)")
    return 0


# ----- demo -------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """The seed's four scenarios on a throw-away SQLite database.

    Settings are passed explicitly so the demo shows the same story whatever
    the environment says; the database lives in a temporary directory that
    is removed on exit, so the demo leaves nothing behind.
    """
    with tempfile.TemporaryDirectory(prefix="creditgate-demo-") as tmp:
        m = LocalCreditManager(
            f"sqlite:///{os.path.join(tmp, 'demo.db')}",
            min_credits_api_key=DEFAULT_MIN_CREDITS_API_KEY,
            credits_per_usd=DEFAULT_CREDITS_PER_USD,
            credits_per_1k_tokens=DEFAULT_CREDITS_PER_1K_TOKENS,
        )
        run_demo(m)
        del m  # close the database before its directory goes
    return 0


def run_demo(m: LocalCreditManager) -> None:
    say = print
    user = "alice"
    say("creditgate demo: the seed's four scenarios on a temporary SQLite database\n")

    say("1. A new user tries to generate an API key")
    e = m.can_generate_api_key(user)
    say(f"   eligible: {e.allowed} (first key needs {cell(e.required)} credits, has {cell(e.available)})")
    try:
        m.create_api_key(user, "prod")
        raise AssertionError("the first key was created without payment")
    except InsufficientCredits as err:
        say(f"   create_api_key -> {err.status_code} {err.code}: {err}")

    say("\n2. The user purchases $5 (5,000 credits); the key is generated")
    entry = m.record_payment(user, "pay_demo_1", 500, "USD")
    say(f"   payment pay_demo_1 ($5.00) -> +{cell(entry.amount)} credits, balance {cell(entry.balance_after)}")
    again = m.record_payment(user, "pay_demo_1", 500, "USD")
    say(f"   same webhook delivered again -> replayed={again.replayed}, balance {cell(m.get_balance(user))}")
    key = m.create_api_key(user, "prod")
    say(f"   create_api_key -> key {key.prefix}... (id {key.key_id})")
    extra = m.create_api_key(user, "dev")
    say(f"   an additional key needs only 1 credit -> key {extra.prefix}... created")

    say("\n3. Calls with the key: each charges tokens/1000 credits")
    for call, (tokens_in, tokens_out) in enumerate([(1000, 500), (200, 800), (1500, 1500)], 1):
        v = m.verify_api_key_credits(key.secret)
        charge = m.record_usage(
            key.secret,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            request_id=f"demo-call-{call}",
        )
        say(
            f"   call {call}: available {cell(v.available)}, {charge.tokens} tokens "
            f"-> charged {cell(charge.charged)}, balance {cell(charge.balance)}"
        )

    say("\n4. Use the key until credits run low: each call holds its worst case first")
    for call in range(1, 100):
        try:
            hold = m.reserve(key.secret, tokens=1_000_000, request_id=f"demo-big-{call}")
        except InsufficientCredits as err:
            needs = f"needs {cell(err.required)}, available {cell(err.available)}"
            say(f"   call {call}: {err.status_code} {err.code}: {needs}")
            break
        charge = m.settle(hold.hold_id, input_tokens=400_000, output_tokens=600_000)
        say(f"   call {call}: held {cell(hold.amount)}, charged {cell(charge.charged)}, balance {cell(charge.balance)}")

    audit = m.audit()
    verdict = "ok" if audit.ok else "UNBALANCED"
    say(f"\naudit: {verdict} ({audit.accounts_checked} accounts, {audit.entries_checked} entries)")
    say(f"transactions of {user} (newest first):")
    for t in m.transactions(user, limit=20):
        say(f"   #{t.seq:<3} {cell(t.kind):<9} {cell(t.amount):>10}  balance {cell(t.balance_after)}")


# ----- entry point ------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except CreditError as e:
        # The core's message may repeat the code ("invalid argument: ..."): say it once.
        message = str(e)
        spelled = e.code.replace("_", " ") + ": "
        if message.startswith(spelled):
            message = message[len(spelled) :]
        print(f"error: {e.code}: {message}", file=sys.stderr)
        return EXIT_ERROR
    except CliError as e:
        print(f"error: {e.code}: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        # `creditgate transactions ... | head`: the reader left; not an error.
        # Point stdout at devnull so the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
