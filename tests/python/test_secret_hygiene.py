"""No secret leaks (docs/reference.md, issue 7): API keys issued or imported, their
bodies without the prefix, the pepper and a database password appear nowhere
a secret could escape: the database (SQLite file, -wal and -shm, before and
after a checkpoint; on PostgreSQL every creditgate table), exception messages
and reprs, repr/str of every result (``NewApiKey.secret`` and
``NewApiKey.to_dict()`` are the documented ways to read a new secret once),
log records at DEBUG, the metrics, and the CLI's output.

A secret is looked for whole and as any 12-character window of its body, so
a message quoting most of a near-miss key also counts as a leak (display
prefixes are at most 8 characters of our keys, len/4 of legacy ones)."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import secrets
import subprocess
import sys
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import conftest
import pytest
from creditgate import (
    CreditError,
    InsufficientCredits,
    InvalidApiKey,
    InvalidArgument,
    LocalCreditManager,
    StorageError,
)

WINDOW = 12


class Secrets:
    def __init__(self) -> None:
        self.values: list[str] = []
        self.bodies: list[str] = []

    def add(self, secret: str, prefix: str = "") -> None:
        self.values.append(secret)
        self.bodies.append(secret[len(prefix) :] if prefix and secret.startswith(prefix) else secret)

    def needles(self) -> Iterator[str]:
        yield from self.values
        for body in self.bodies:
            yield body
            for i in range(len(body) - WINDOW + 1):
                yield body[i : i + WINDOW]

    def find(self, text: str) -> str | None:
        """The first secret (or window of one) in `text`."""
        return next((n for n in self.needles() if n in text), None)

    def find_bytes(self, data: bytes) -> str | None:
        return next((n for n in self.needles() if n.encode() in data), None)


def assert_clean(sec: Secrets, where: str, texts: Iterable[str]) -> int:
    n = 0
    for text in texts:
        n += 1
        hit = sec.find(text)
        assert hit is None, f"a secret ({hit[:4]}...) leaked into {where}: {text[:300]!r}"
    return n


def near_misses(secret: str) -> list[str]:
    """Strings an attacker or a typo makes from a real key."""
    flip = {c: ("A" if c != "A" else "B") for c in secret}
    return [
        secret[:-1] + flip[secret[-1]],  # wrong checksum
        secret[:10] + flip[secret[10]] + secret[11:],  # one body character
        secret + "x",  # too long for our format: a legacy lookup
        secret[:-1],
        secret.upper(),
        " " + secret,
        secret + "\0",
        secret[3:],  # the body without the prefix
    ]


@pytest.fixture
def caplog_debug(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)  # the root logger: every logger, creditgate's included
    for name in ("creditgate", "creditgate._creditgate"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def database_dump(db_url: str) -> dict[str, bytes]:
    """Everything stored: the SQLite files' bytes, or every creditgate table."""
    if not conftest.IS_POSTGRES:
        path = Path(db_url[len("sqlite:///") :])
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        return {f.name: f.read_bytes() for f in files if f.exists()}
    r = subprocess.run(
        ["psql", "-X", "-At", "-d", db_url, "-c", "SELECT tablename FROM pg_tables WHERE tablename LIKE 'creditgate%'"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = {}
    for table in r.stdout.split():
        rows = subprocess.run(
            ["psql", "-X", "-At", "-d", db_url, "-c", f'SELECT row_to_json(t)::text FROM "{table}" t'],
            capture_output=True,
            timeout=60,
            check=True,
        )
        out[table] = rows.stdout
    assert out.get("creditgate_api_keys"), out.keys()  # the table of key hashes, not empty
    return out


def checkpoint(db_path: Path) -> None:
    """A WAL checkpoint by another process (never Python's sqlite3 in this
    one while a ledger may still be open here)."""
    code = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1])\n"
        "print(c.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone())\n"
        "c.close()\n"
    )
    subprocess.run([sys.executable, "-c", code, str(db_path)], check=True, timeout=60, capture_output=True)


def describe(obj: Any) -> list[str]:
    """repr and str of a result (and of each item of a list or dict)."""
    if isinstance(obj, list | tuple):
        return [repr(obj)] + [t for o in obj for t in describe(o)]
    if isinstance(obj, dict):
        return [repr(obj), str(obj)]
    out = [repr(obj), str(obj)]
    if hasattr(obj, "to_dict") and type(obj).__name__ != "NewApiKey":
        out.append(repr(obj.to_dict()))
    return out


def test_secrets_leak_nowhere(
    db_url: str, tmp_path: Path, caplog_debug: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    sec = Secrets()
    pepper = "pepper-" + secrets.token_hex(16)
    sec.add(pepper)
    m = LocalCreditManager(db_url, api_key_pepper=pepper)
    seen: list[str] = [repr(m), str(m)]  # texts that must be clean
    errors: list[BaseException] = []

    def ok(value: Any) -> Any:
        seen.extend(describe(value))
        return value

    def fails(exc: type[BaseException], f: Any, *args: Any, **kwargs: Any) -> None:
        with pytest.raises(exc) as info:
            f(*args, **kwargs)
        errors.append(info.value)

    ok(m.record_payment("alice", "pay_1", 500))
    first = m.create_api_key("alice", name="main")
    second = m.create_api_key("alice", name="second")
    for k in (first, second):
        sec.add(k.secret, "sk_")
        seen += [repr(k), str(k), k.prefix, k.key_id]
        assert k.secret in k.to_dict().values()  # the documented way to read it, once
    legacy = "legacy_" + secrets.token_urlsafe(18)  # 31 characters: a display prefix of 7
    sec.add(legacy)
    ok(m.import_api_key("bob", secret=legacy, name="old"))
    hashed = "hashonly_" + secrets.token_urlsafe(18)
    sec.add(hashed)
    ok(m.import_api_key("carol", secret_sha256=hashlib.sha256(hashed.encode()).hexdigest()))
    ok(m.add_credits("bob", 100))
    ok(m.add_credits("carol", 100))

    # Successful uses of every secret.
    ok(m.verify_api_key_credits(first.secret))
    ok(m.record_usage(first.secret, tokens=1000, request_id="r1"))
    ok(m.record_usage(first.secret, tokens=1000, request_id="r1"))  # a replay
    hold = ok(m.reserve(first.secret, credits=2, request_id="h1"))
    ok(m.settle(hold.hold_id, credits=1))
    ok(m.verify_api_key_credits(legacy))
    ok(m.record_usage(legacy, input_tokens=10, output_tokens=20, model="gpt"))
    ok(m.verify_api_key_credits(hashed))
    ok(m.record_usage(hashed, tokens=5))
    m.revoke_api_key(second.key_id)
    # A key revoked after its call was verified is still charged.
    ok(m.record_usage(second.secret, tokens=1))

    # Failures with the secrets as input.
    for bad in near_misses(first.secret) + near_misses(legacy) + near_misses(hashed):
        fails(InvalidApiKey, m.verify_api_key_credits, bad)
        fails(InvalidApiKey, m.reserve, bad, credits=1)
        fails(InvalidApiKey, m.record_usage, bad, tokens=1)
    fails(InvalidApiKey, m.verify_api_key_credits, second.secret)  # revoked
    fails(InvalidApiKey, m.reserve, second.secret, credits=1)
    fails(InsufficientCredits, m.verify_api_key_credits, first.secret, min_credits=10**6)
    fails(InsufficientCredits, m.reserve, first.secret, credits=10**6)
    fails(InsufficientCredits, m.verify_api_key_credits, legacy, min_credits=10**6)
    m.deduct_credits("carol", m.account("carol").available)
    fails(InsufficientCredits, m.verify_api_key_credits, hashed)
    fails(InsufficientCredits, m.create_api_key, "bob")
    # Secrets passed where they do not belong.
    fails(InvalidArgument, m.import_api_key, "dave", secret=near_misses(first.secret)[0])  # a bad checksum
    fails(InvalidArgument, m.import_api_key, "dave", secret=first.secret[:-2] + "\ud800\ud800")
    fails(InvalidArgument, m.import_api_key, "dave", secret_sha256=legacy)
    fails(InvalidArgument, m.revoke_api_key, first.secret)
    fails(InvalidArgument, m.transactions, "alice", before=first.secret)
    fails(InvalidArgument, m.settle, legacy, credits=1)
    fails(InvalidArgument, m.release, first.secret)
    fails(InvalidArgument, m.record_usage, key_id=legacy, tokens=1)
    fails(InvalidApiKey, m.verify_api_key_credits, first.secret[:-2] + "\ud800\ud800")
    with contextlib.suppress(CreditError):  # a duplicate import: whatever it says, not the secret
        m.import_api_key("dave", secret=legacy)
    with contextlib.suppress(CreditError):
        m.import_api_key("dave", secret=first.secret)
    # A pepper in a bad setting.
    fails(InvalidArgument, LocalCreditManager, db_url, api_key_pepper=pepper + "\ud800")
    fails(InvalidArgument, LocalCreditManager, db_url, api_key_pepper=pepper + "x" * 2000)

    for user in ("alice", "bob", "carol", "dave"):
        ok(m.account(user))
        ok(m.get_balance(user))
        ok(m.can_generate_api_key(user))
        ok(m.list_api_keys(user))
        ok(m.transactions(user, limit=1000))
    ok(m.audit())
    ok(m.report())
    ok(m.list_model_prices())
    ok(m.metrics())
    seen.append(m.metrics_prometheus())

    exc_texts = [t for e in errors for t in (str(e), repr(e), repr(e.args), "".join(getattr(e, "__notes__", [])))]
    n = assert_clean(sec, "an exception", exc_texts)
    n += assert_clean(sec, "a result's repr or str", seen)
    log_texts = [caplog_debug.text] + [r.getMessage() for r in caplog_debug.records]
    n += assert_clean(sec, "the logs", log_texts)
    assert n > 500

    # The database, while the ledger is open, after its close and after a checkpoint.
    dumps = [database_dump(db_url)]
    del m
    gc.collect()
    dumps.append(database_dump(db_url))
    if not conftest.IS_POSTGRES:
        checkpoint(Path(db_url[len("sqlite:///") :]))
        dumps.append(database_dump(db_url))
    for dump in dumps:
        # Non-trivial: the keys' hashes, the entries (SQLite: pages of a few KiB).
        assert sum(map(len, dump.values())) > (2_000 if conftest.IS_POSTGRES else 10_000), dump.keys()
        for name, data in dump.items():
            hit = sec.find_bytes(data)
            assert hit is None, f"a secret ({hit[:4]}...) is stored in {name}"

    # The CLI, as an operator runs it (the pepper in its environment).
    env = dict(os.environ, API_KEY_PEPPER=pepper, DATABASE_URL=db_url)
    cli_runs = [
        ["report"],
        ["report", "--json"],
        ["audit"],
        ["metrics"],
        ["prices", "list"],
        ["migrate"],
    ]
    for user in ("alice", "bob", "carol"):
        cli_runs += [
            ["balance", "--user", user],
            ["keys", "list", "--user", user],
            ["keys", "list", "--user", user, "--json"],
            ["transactions", "--user", user],
            ["transactions", "--user", user, "--format", "json"],
            ["transactions", "--user", user, "--format", "csv"],
        ]
    outputs = []
    for args in cli_runs:
        r = subprocess.run(
            [sys.executable, "-m", "creditgate", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
            check=False,
        )
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        outputs += [r.stdout, r.stderr]
    # Imports read the secret from standard input; it is never echoed, not even when refused.
    for stdin, extra, code in (
        (legacy + "\n", [], 1),  # already imported
        (first.secret + "x\n", [], 0),
        (near_misses(first.secret)[0] + "\n", [], 1),  # our prefix and length, a wrong checksum
        (legacy + "\n", ["--sha256"], 1),
    ):
        r = subprocess.run(
            [sys.executable, "-m", "creditgate", "keys", "import", "--user", "erin", *extra],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
            check=False,
        )
        assert r.returncode == code, (stdin[:3], r.stdout, r.stderr)
        outputs += [r.stdout, r.stderr]
    assert_clean(sec, "the CLI's output", outputs)


PASSWORD = "s3cretpw"
CLOSED_PORT_URLS = [
    f"postgresql://u:{PASSWORD}@127.0.0.1:1/db",
    f"postgres://u:{PASSWORD}@127.0.0.1:1/db?sslmode=disable",
    f"postgresql://user%40corp:{PASSWORD}%21@127.0.0.1:1/db",
]


@pytest.mark.parametrize("url", CLOSED_PORT_URLS)
def test_database_password_never_shown(url: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError) as info:
        LocalCreditManager(url)
    err = info.value
    texts = [str(err), repr(err), repr(err.args), "".join(getattr(err, "__notes__", []))]
    assert "127.0.0.1" in str(err), str(err)  # it says where it failed...
    for text in texts:
        assert PASSWORD not in text, text  # ...not with what
    # The CLI: --database-url and DATABASE_URL.
    env = dict(os.environ, DATABASE_URL=url)
    for args in (["--database-url", url, "balance", "--user", "a"], ["report"]):
        r = subprocess.run(
            [sys.executable, "-m", "creditgate", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
            check=False,
        )
        assert r.returncode == 1 and "error: storage:" in r.stderr, (r.stdout, r.stderr)
        assert PASSWORD not in r.stdout + r.stderr, r.stderr


def test_database_url_property_redacts_the_password(db_url: str) -> None:
    m = LocalCreditManager(db_url)
    if conftest.IS_POSTGRES:
        password = db_url.split("://", 1)[1].split("@", 1)[0].partition(":")[2]
        if password:
            assert password not in m.database_url and password not in repr(m)
    assert m.database_url in repr(m)


def test_open_logs_the_resolved_location_without_the_password(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """docs/reference.md: the resolved location is logged on open, password redacted."""
    with caplog.at_level(logging.INFO, logger="creditgate"):
        m = LocalCreditManager(db_url)
    (record,) = [r for r in caplog.records if r.name == "creditgate"]
    assert record.levelno == logging.INFO
    assert record.getMessage() == f"opened ledger {m.database_url}"
    password = urllib.parse.urlsplit(db_url).password
    if password:
        assert password not in record.getMessage()


WEBHOOK_KEY = secrets.token_hex(32)


def test_webhook_secrets_leak_nowhere(db_url: str, tmp_path: Path, caplog_debug: pytest.LogCaptureFixture) -> None:
    """Signing secrets (shown once by create_webhook and rotate_webhook_secret)
    and the operator's webhook key appear in no repr, exception, log record,
    stored row, metric, list or CLI output."""
    from creditgate import WebhookVerificationError, verify_webhook
    from webhook_receiver import FAIL_500, OK, running_receiver

    sec = Secrets()
    sec.add(WEBHOOK_KEY)
    m = LocalCreditManager(db_url, webhook_key=WEBHOOK_KEY, webhook_allowed_hosts=["127.0.0.1"])
    seen: list[str] = [repr(m), str(m)]
    errors: list[BaseException] = []
    m.record_payment("alice", "pay_1", 500)
    m.create_api_key("alice")  # the dump below expects a key row
    with running_receiver(lambda path, event_id, attempt: FAIL_500 if path == "/bad" else OK) as receiver:
        good, good_secret = m.create_webhook(receiver.url("/good"), description="good")
        bad, bad_secret = m.create_webhook(receiver.url("/bad"))
        rotated = m.rotate_webhook_secret(good.id)
        for s in (good_secret, bad_secret, rotated):
            sec.add(s, "whsec_")
        m.record_event("payment.unmapped", {"n": 1})
        for _ in range(5):
            seen += describe(m.deliver_webhooks(timeout_ms=2000, max_attempts=2, backoff_base_ms=1, backoff_max_ms=2))
        d = next(x for x in receiver.deliveries if x.path == "/good")
        seen += [repr(x.headers) + x.body.decode() for x in receiver.deliveries]
    seen += describe(m.webhooks()) + describe(m.webhook(bad.id)) + describe(m.webhook_dead_letters())
    assert m.webhook_dead_letters(bad.id), "the failing subscription has a dead letter"
    seen += describe(verify_webhook(d.body, d.headers, rotated))
    seen.append(m.metrics_prometheus())
    for forged in (
        (d.body + b" ", d.headers, rotated),
        (d.body, d.headers, good_secret),  # the secret before rotation
        (d.body, d.headers, rotated[:-2]),
        (d.body, {**d.headers, "webhook-signature": "v1," + rotated}, rotated),
    ):
        with pytest.raises(WebhookVerificationError) as info:
            verify_webhook(*forged)
        errors.append(info.value)
    for key in (WEBHOOK_KEY[:-1] + "g", WEBHOOK_KEY + "00", WEBHOOK_KEY[:40]):
        with pytest.raises(InvalidArgument) as bad_key:
            LocalCreditManager(db_url, webhook_key=key)
        errors.append(bad_key.value)
    # Another operator key: the stored secrets do not decrypt, and the error says so without them.
    other = LocalCreditManager(db_url, webhook_key=secrets.token_hex(32), webhook_allowed_hosts=["127.0.0.1"])
    other.record_event("payment.unmapped", {"n": 2})
    try:
        seen += describe(other.deliver_webhooks(timeout_ms=500))
    except CreditError as e:
        errors.append(e)
    seen += describe(other.webhooks())  # or the error is the subscriptions' last_error

    assert_clean(sec, "reprs and results", seen)
    assert_clean(sec, "exceptions", [str(e) for e in errors] + [repr(e) for e in errors])
    assert_clean(sec, "log records", [r.getMessage() for r in caplog_debug.records])
    del m, other
    gc.collect()
    for name, data in database_dump(db_url).items():
        hit = sec.find_bytes(data)
        assert hit is None, f"a secret ({hit[:4]}...) is stored in {name}"

    env = dict(os.environ, CREDITGATE_WEBHOOK_KEY=WEBHOOK_KEY, CREDITGATE_WEBHOOK_ALLOWED_HOSTS="127.0.0.1")
    outputs = []
    for args in (
        ["webhooks", "list"],
        ["webhooks", "list", "--format", "json"],
        ["webhooks", "dead-letters"],
        ["webhooks", "dead-letters", "--format", "json"],
        ["webhooks", "run", "--once", "--timeout-ms", "500"],
        ["webhooks", "disable", bad.id, "--format", "json"],
        ["metrics"],
    ):
        r = subprocess.run(
            [sys.executable, "-m", "creditgate", "--database-url", db_url, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
            check=False,
        )
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        outputs += [r.stdout, r.stderr]
    assert_clean(sec, "the CLI's output", outputs)
