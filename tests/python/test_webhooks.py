"""Webhooks from Python (docs/webhooks.md): subscriptions, delivery passes
against a real HTTP receiver on 127.0.0.1 that fails, hangs and answers 500
on a schedule, signatures checked by ``verify_webhook`` (and by an
independent HMAC here), dead letters, the CLI, the Prometheus gauges, and bad
input. Every pass uses small timeouts and backoffs so each test is quick."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypedDict

import creditgate
import creditgate.webhooks
import pytest
from creditgate import (
    AsyncLocalCreditManager,
    InvalidArgument,
    LocalCreditManager,
    NotFound,
    WebhookSubscription,
    WebhookVerificationError,
    verify_webhook,
)
from creditgate.webhooks import Handler, Worker
from webhook_receiver import DROP, FAIL_500, HANG, OK, Receiver, running_receiver

KEY = "0123456789abcdef" * 4  # the operator's key of these tests: 32 bytes, hex
ALLOWED = "127.0.0.1"


class Options(TypedDict, total=False):
    timeout_ms: int
    max_attempts: int
    backoff_base_ms: int
    backoff_max_ms: int
    batch_size: int


# Passes of the tests: quick timeouts, almost no backoff.
FAST: Options = {"timeout_ms": 2000, "backoff_base_ms": 1, "backoff_max_ms": 5}


@pytest.fixture
def hooks_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("CREDITGATE_WEBHOOK_KEY", KEY)
    monkeypatch.setenv("CREDITGATE_WEBHOOK_ALLOWED_HOSTS", ALLOWED)
    return {"CREDITGATE_WEBHOOK_KEY": KEY, "CREDITGATE_WEBHOOK_ALLOWED_HOSTS": ALLOWED}


@pytest.fixture
def m(db_url: str, hooks_env: dict[str, str]) -> LocalCreditManager:
    return LocalCreditManager(db_url)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


def emit(m: LocalCreditManager, n: int) -> list[int]:
    """`n` new events (host events: cheap, and any data); their ids."""
    return [m.record_event("payment.unmapped", {"n": i}) for i in range(n)]


def until(done: Any, one_pass: Any) -> None:
    """Passes until `done()` (a pass waiting for a backoff of a few ms finds
    nothing: pause briefly then); at most 30 s."""
    deadline = time.monotonic() + 30
    while not done():
        assert time.monotonic() < deadline, "not done after 30 s of passes"
        report = one_pass()
        if not (report.sent or report.failed or report.dead_lettered):
            time.sleep(0.002)


def deliver_until(m: LocalCreditManager, done: Any, *, timeout_ms: int = 2000, max_attempts: int = 12) -> None:
    """Delivery passes (quick backoff) until `done()`."""
    until(
        done,
        lambda: m.deliver_webhooks(
            timeout_ms=timeout_ms, max_attempts=max_attempts, backoff_base_ms=1, backoff_max_ms=5
        ),
    )


def expected_signature(secret: str, headers: dict[str, str], body: bytes) -> str:
    """Standard Webhooks, computed here independently of the core."""
    key = base64.b64decode(secret[len("whsec_") :])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


# ----- subscriptions -----------------------------------------------------------------


def test_create_list_enable_disable_delete(m: LocalCreditManager, receiver: Receiver) -> None:
    sub, secret = m.create_webhook(receiver.url(), ["payment.unmapped", "balance.low"], "ops")
    assert isinstance(sub, WebhookSubscription)
    assert sub.id.startswith("wh_") and len(sub.id) == 3 + 32
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[len("whsec_") :])) == 32
    assert sorted(sub.kinds) == ["balance.low", "payment.unmapped"]
    assert (sub.enabled, sub.description, sub.delivered, sub.pending, sub.lag_seconds) == (True, "ops", 0, 0, 0)
    assert sub.created_at.tzinfo is not None
    assert secret not in repr(sub) and secret not in str(sub.to_dict())
    assert [s.id for s in m.webhooks()] == [sub.id]
    assert m.webhook(sub.id).url == receiver.url()
    assert m.set_webhook_enabled(sub.id, False).enabled is False
    assert m.webhook(sub.id).enabled is False
    assert m.set_webhook_enabled(sub.id, True).enabled is True
    second = m.rotate_webhook_secret(sub.id)
    assert second.startswith("whsec_") and second != secret
    m.delete_webhook(sub.id)
    assert m.webhooks() == []
    with pytest.raises(NotFound):
        m.webhook(sub.id)
    with pytest.raises(NotFound):
        m.delete_webhook(sub.id)


def test_every_kind_is_listed_and_accepted(m: LocalCreditManager, receiver: Receiver) -> None:
    assert "balance.low" in creditgate._creditgate.EVENT_KINDS
    sub, _ = m.create_webhook(receiver.url(), list(creditgate._creditgate.EVENT_KINDS))
    assert sorted(sub.kinds) == sorted(creditgate._creditgate.EVENT_KINDS)
    every, _ = m.create_webhook(receiver.url("/all"))
    assert every.kinds == []


# ----- delivery ------------------------------------------------------------------------


def test_delivers_signed_events_in_commit_order(m: LocalCreditManager, receiver: Receiver) -> None:
    sub, secret = m.create_webhook(receiver.url())
    before = emit(m, 0)
    ids = emit(m, 5)
    assert before == []
    report = m.deliver_webhooks(**FAST)
    assert (report.sent, report.failed, report.dead_lettered) == (5, 0, 0)
    assert receiver.delivered() == ids
    for d in receiver.deliveries:
        assert d.headers["content-type"].startswith("application/json")
        assert d.headers["user-agent"].startswith("creditgate/")
        assert d.headers["webhook-signature"] == expected_signature(secret, d.headers, d.body)
        event = verify_webhook(d.body, d.headers, secret)
        assert event == json.loads(d.body)
        assert (event["id"], event["type"]) == (d.event_id, "payment.unmapped")
        assert event["data"] == {"n": ids.index(d.event_id)}
        assert datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).tzinfo is not None
    s = m.webhook(sub.id)
    assert (s.delivered, s.failed_attempts, s.pending, s.attempts) == (5, 0, 0, 0)
    # Nothing new: nothing sent.
    assert m.deliver_webhooks(**FAST).sent == 0
    assert len(receiver.deliveries) == 5


def test_only_events_after_the_subscription_and_of_its_kinds(m: LocalCreditManager, receiver: Receiver) -> None:
    emit(m, 2)  # before the subscription: never sent
    m.create_webhook(receiver.url("/low"), ["balance.low"])
    m.create_webhook(receiver.url("/host"), ["payment.unmapped"])
    ids = emit(m, 3)
    deliver_until(m, lambda: len(receiver.delivered("/host")) == 3)
    assert receiver.delivered("/host") == ids
    assert receiver.received("/low") == []


def test_failures_hangs_and_500s_are_retried_in_order(m: LocalCreditManager, receiver: Receiver) -> None:
    schedule = {1: FAIL_500, 2: HANG, 3: DROP}  # event index -> its first attempt

    ids: list[int] = []

    def policy(path: str, event_id: int, attempt: int) -> str:
        index = ids.index(event_id) if event_id in ids else -1
        return schedule.get(index, OK) if attempt == 1 else OK

    receiver.policy = policy
    sub, _ = m.create_webhook(receiver.url())
    ids += emit(m, 5)
    deliver_until(m, lambda: len(receiver.delivered()) == 5, timeout_ms=1000)
    assert receiver.delivered() == ids
    # Head of line: no event was sent before every earlier one was delivered.
    received = receiver.received()
    assert received == sorted(received), received
    assert [received.count(i) for i in ids] == [1, 2, 2, 2, 1]
    s = m.webhook(sub.id)
    assert (s.delivered, s.failed_attempts, s.dead_lettered, s.pending) == (5, 3, 0, 0)


def test_last_error_says_what_failed(m: LocalCreditManager, receiver: Receiver) -> None:
    receiver.policy = lambda path, event_id, attempt: FAIL_500
    sub, _ = m.create_webhook(receiver.url())
    emit(m, 1)
    report = m.deliver_webhooks(**FAST)
    assert (report.sent, report.failed) == (0, 1)
    s = m.webhook(sub.id)
    assert s.last_error is not None and "500" in s.last_error
    assert (s.attempts, s.pending, s.failed_attempts) == (1, 1, 1)
    # Waiting for its backoff, the subscription is busy, not failed again.
    slow = m.deliver_webhooks(timeout_ms=2000, backoff_base_ms=60_000, backoff_max_ms=60_000)
    assert slow.failed <= 1


def test_dead_letters_listed_and_replayed(m: LocalCreditManager, receiver: Receiver) -> None:
    broken: set[int] = set()
    receiver.policy = lambda path, event_id, attempt: FAIL_500 if event_id in broken else OK
    sub, _ = m.create_webhook(receiver.url())
    first, second, third = emit(m, 3)
    broken.add(second)
    deliver_until(m, lambda: receiver.delivered() == [first, third], max_attempts=2)
    letters = m.webhook_dead_letters(sub.id)
    assert [(d.subscription_id, d.event_id, d.kind, d.attempts, d.requeued) for d in letters] == [
        (sub.id, second, "payment.unmapped", 2, False)
    ]
    assert letters[0].last_error is not None and "500" in letters[0].last_error
    assert m.webhook_dead_letters() == letters or [d.event_id for d in m.webhook_dead_letters()] == [second]
    assert m.webhook(sub.id).dead_lettered == 1
    broken.clear()
    assert m.replay_dead_letters(sub.id, [second]) == 1
    assert [d.requeued for d in m.webhook_dead_letters(sub.id)] == [True]
    deliver_until(m, lambda: receiver.delivered() == [first, third, second])
    assert m.webhook_dead_letters(sub.id) == []
    assert m.webhook(sub.id).dead_lettered == 0
    assert m.replay_dead_letters(sub.id) == 0


def test_disabled_subscription_keeps_its_queue(m: LocalCreditManager, receiver: Receiver) -> None:
    sub, _ = m.create_webhook(receiver.url())
    m.set_webhook_enabled(sub.id, False)
    ids = emit(m, 2)
    assert m.deliver_webhooks(**FAST).sent == 0
    assert m.webhook(sub.id).pending == 2
    m.set_webhook_enabled(sub.id, True)
    deliver_until(m, lambda: receiver.delivered() == ids)


def test_handle_events_calls_python_and_retries_its_failures(m: LocalCreditManager) -> None:
    seen: list[int] = []
    failed_once: set[int] = set()

    def handler(event: creditgate.Event) -> None:
        seen.append(event.id)
        if event.id not in failed_once:
            failed_once.add(event.id)
            raise RuntimeError(f"flaky handler on {event.id}")

    report = m.handle_events("notify", handler, events=["payment.unmapped"], **FAST)
    assert report.sent == 0
    ids = emit(m, 2)
    until(lambda: len(seen) >= 4, lambda: m.handle_events("notify", handler, events=["payment.unmapped"], **FAST))
    assert seen == [ids[0], ids[0], ids[1], ids[1]]
    (sub,) = m.webhooks()
    assert (sub.url, sub.delivered, sub.failed_attempts) == ("callback:notify", 2, 2)
    # deliver_webhooks never drives a callback: consumer.
    assert m.deliver_webhooks(**FAST).sent == 0


def test_handle_events_re_raises_what_is_not_an_exception(m: LocalCreditManager) -> None:
    def handler(event: creditgate.Event) -> None:
        raise KeyboardInterrupt

    m.handle_events("stop", handler, **FAST)
    emit(m, 1)
    with pytest.raises(KeyboardInterrupt):
        m.handle_events("stop", handler, **FAST)


def test_worker_runs_passes_until_stopped(m: LocalCreditManager, receiver: Receiver) -> None:
    m.create_webhook(receiver.url())
    handled: list[int] = []
    stop = threading.Event()
    worker = Worker(m, interval=0.01, handlers={"h": Handler(lambda e: handled.append(e.id))}, stop=stop, **FAST)
    assert worker.run_once().found_work is False  # creates the consumer: its cursor starts now
    ids = emit(m, 3)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        receiver.wait_for(lambda: receiver.delivered() == ids and handled == ids)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert worker.run_once().found_work is False


class FlakyManager:
    """deliver_webhooks fails with StorageError, then works; stops the worker on its third pass."""

    def __init__(self, stop: threading.Event, error: Exception) -> None:
        self.calls = 0
        self.stop = stop
        self.error = error

    def deliver_webhooks(self, **options: int) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise self.error
        if self.calls == 3:
            self.stop.set()
        return creditgate.webhooks.PassReport(sent=1)

    def handle_events(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no handlers were given")


def test_worker_outlives_storage_errors_and_stops_on_set_up_mistakes() -> None:
    stop = threading.Event()
    flaky = FlakyManager(stop, creditgate.StorageError("the database restarted"))
    total = Worker(flaky, interval=0, stop=stop).run()
    assert (flaky.calls, total.sent) == (3, 2)
    broken = FlakyManager(threading.Event(), InvalidArgument("CREDITGATE_WEBHOOK_KEY is not set"))
    with pytest.raises(InvalidArgument):
        Worker(broken, interval=0).run()
    with pytest.raises(ValueError):
        Worker(broken, interval=-1)
    with pytest.raises(TypeError):
        Worker(broken, handlers={"x": Handler("not callable")})  # type: ignore[arg-type]


def test_async_mirrors(db_url: str, hooks_env: dict[str, str], receiver: Receiver) -> None:
    import asyncio

    async def scenario() -> None:
        async with AsyncLocalCreditManager(db_url) as am:
            sub, secret = await am.create_webhook(receiver.url(), ["payment.unmapped"])
            await am.record_event("payment.unmapped", {"n": 1})
            report = await am.deliver_webhooks(**FAST)
            assert report.sent == 1
            assert (await am.webhook(sub.id)).delivered == 1
            assert [s.id for s in await am.webhooks()] == [sub.id]
            assert await am.webhook_dead_letters(sub.id) == []
            assert await am.replay_dead_letters(sub.id) == 0
            assert (await am.set_webhook_enabled(sub.id, False)).enabled is False
            assert (await am.rotate_webhook_secret(sub.id)) != secret
            assert (await am.handle_events("a", lambda e: None)).sent == 0
            await am.delete_webhook(sub.id)

    asyncio.run(scenario())


# ----- verify_webhook -------------------------------------------------------------------


@pytest.fixture
def delivery(m: LocalCreditManager, receiver: Receiver) -> tuple[str, dict[str, str], bytes]:
    _, secret = m.create_webhook(receiver.url())
    emit(m, 1)
    assert m.deliver_webhooks(**FAST).sent == 1
    d = receiver.deliveries[0]
    return secret, d.headers, d.body


def test_verify_accepts_the_real_delivery(delivery: tuple[str, dict[str, str], bytes]) -> None:
    secret, headers, body = delivery
    assert verify_webhook(body, headers, secret)["type"] == "payment.unmapped"
    assert verify_webhook(body.decode(), {k.upper(): v for k, v in headers.items()}, secret)["id"] > 0
    assert verify_webhook(bytearray(body), list(headers.items()), secret)["data"] == {"n": 0}
    several = dict(headers, **{"webhook-signature": "v1,AAAA " + headers["webhook-signature"]})
    assert verify_webhook(body, several, secret)["type"] == "payment.unmapped"


def test_verify_refuses_tampered_stale_and_malformed(delivery: tuple[str, dict[str, str], bytes]) -> None:
    secret, headers, body = delivery
    sent_at = datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=timezone.utc)
    other_secret = "whsec_" + base64.b64encode(b"x" * 32).decode()
    cases: list[tuple[Any, Any, str, dict[str, Any], str]] = [
        (body.replace(b'"n":0', b'"n":1'), headers, secret, {}, "signature"),
        (body, headers, other_secret, {}, "signature"),
        (body, dict(headers, **{"webhook-id": "1" + headers["webhook-id"]}), secret, {}, "signature"),
        (body, {k: v for k, v in headers.items() if k != "webhook-signature"}, secret, {}, "webhook-signature"),
        (body, {k: v for k, v in headers.items() if k != "webhook-timestamp"}, secret, {}, "webhook-timestamp"),
        (body, headers, secret, {"now": sent_at + timedelta(seconds=301)}, "old"),
        (body, headers, secret, {"now": sent_at - timedelta(seconds=301)}, "new"),
        (body, headers, secret, {"now": sent_at + timedelta(seconds=11), "tolerance_seconds": 10}, "old"),
        (body, headers, "not-a-secret", {}, "secret"),
    ]
    for payload, hdrs, key, kwargs, needle in cases:
        with pytest.raises(WebhookVerificationError) as info:
            verify_webhook(payload, hdrs, key, **kwargs)
        assert needle in str(info.value), (needle, str(info.value))
        assert isinstance(info.value, InvalidArgument) and info.value.code == "invalid_argument"
        assert secret not in str(info.value)
    assert verify_webhook(body, headers, secret, now=sent_at + timedelta(seconds=299))["id"] > 0


def test_verify_refuses_a_body_that_is_not_json() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    headers = {"webhook-id": "1", "webhook-timestamp": str(int(datetime.now(timezone.utc).timestamp()))}
    body = b"not json"
    headers["webhook-signature"] = expected_signature(secret, headers, body)
    with pytest.raises(WebhookVerificationError, match="JSON"):
        verify_webhook(body, headers, secret)


def test_verify_bad_argument_types() -> None:
    with pytest.raises(TypeError):
        verify_webhook(123, {}, "whsec_x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        verify_webhook(b"{}", 5, "whsec_x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        verify_webhook(b"{}", {}, "whsec_x", now=1)  # type: ignore[arg-type]


# ----- bad input -------------------------------------------------------------------------


def test_bad_subscriptions_are_refused_clearly(m: LocalCreditManager) -> None:
    cases: list[tuple[str, Any, Any, str]] = [
        ("not a url", None, None, "url"),
        ("ftp://127.0.0.1/x", None, None, "http"),
        ("file:///etc/passwd", None, None, "http"),
        ("javascript:alert(1)", None, None, "http"),
        ("callback:x", None, None, "http"),
        ("http://127.0.0.1/" + "a" * 3000, None, None, "2048"),
        ("http://127.0.0.1/x", ["no.such.kind"], None, "balance.low"),
        ("http://127.0.0.1/x", None, "d" * 100_000, "description"),
    ]
    for url, events, description, needle in cases:
        with pytest.raises(InvalidArgument) as info:
            m.create_webhook(url, events, description)
        assert needle in str(info.value), (url[:40], str(info.value))
    with pytest.raises(TypeError):
        m.create_webhook("http://127.0.0.1/x", "balance.low")  # a str is not a list of kinds
    with pytest.raises(TypeError):
        m.create_webhook(b"http://127.0.0.1/x")  # type: ignore[arg-type]
    assert m.webhooks() == []


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.1/x", "http://192.168.1.2/x", "http://[::1]/x", "http://169.254.169.254/x", "http://localhost/x"],
)
def test_private_addresses_need_the_allow_list(db_url: str, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("CREDITGATE_WEBHOOK_KEY", KEY)
    m = LocalCreditManager(db_url)
    with pytest.raises(InvalidArgument) as info:
        m.create_webhook(url)
    assert "allow" in str(info.value).lower() or "not allowed" in str(info.value), str(info.value)
    # The constructor's allow-list (the environment's equivalent) admits it.
    host = url.split("//", 1)[1].split("/", 1)[0].strip("[]")
    allowed = LocalCreditManager(db_url, webhook_allowed_hosts=[host])
    sub, _ = allowed.create_webhook(url)
    assert sub.url == url


def test_no_key_fails_closed(db_url: str, receiver: Receiver) -> None:
    m = LocalCreditManager(db_url, webhook_allowed_hosts=[ALLOWED])
    for call in (lambda: m.create_webhook(receiver.url()), lambda: m.deliver_webhooks()):
        with pytest.raises(InvalidArgument, match="CREDITGATE_WEBHOOK_KEY"):
            call()
    keyed = LocalCreditManager(db_url, webhook_key=KEY, webhook_allowed_hosts=[ALLOWED])
    sub, _ = keyed.create_webhook(receiver.url())
    with pytest.raises(InvalidArgument, match="CREDITGATE_WEBHOOK_KEY"):
        m.rotate_webhook_secret(sub.id)


def test_bad_settings_and_options(db_url: str, m: LocalCreditManager) -> None:
    for key in ("short", "zz" * 32, KEY + "00"):
        with pytest.raises(InvalidArgument):
            LocalCreditManager(db_url, webhook_key=key)
    with pytest.raises(TypeError):
        LocalCreditManager(db_url, webhook_allowed_hosts="127.0.0.1")  # a str, not a list
    with pytest.raises(InvalidArgument):
        LocalCreditManager(db_url, webhook_allowed_hosts=["10.0.0.0/99"])
    for options in (
        {"timeout_ms": 0},
        {"timeout_ms": 60_001},
        {"max_attempts": 0},
        {"max_attempts": 51},
        {"batch_size": 0},
        {"batch_size": 1001},
        {"backoff_base_ms": 0},
        {"backoff_base_ms": 10, "backoff_max_ms": 5},
        {"timeout_ms": -1},
        {"backoff_max_ms": 2**70},
    ):
        with pytest.raises(InvalidArgument):
            m.deliver_webhooks(**options)
    with pytest.raises(TypeError):
        m.deliver_webhooks(timeout_ms=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        m.handle_events("x", "not callable")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        m.webhook_dead_letters(limit=10**6)
    with pytest.raises(NotFound):
        m.replay_dead_letters("wh_" + "0" * 32, [1])
    with pytest.raises((InvalidArgument, NotFound)):
        m.webhook("x" * 10_000)


# ----- the command line -----------------------------------------------------------------


def cli(db_url: str, env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "creditgate", "--database-url", db_url, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def ok(db_url: str, env: dict[str, str], *args: str) -> str:
    r = cli(db_url, env, *args)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def test_cli_add_shows_the_secret_once_and_list_never(
    m: LocalCreditManager, receiver: Receiver, hooks_env: dict[str, str], db_url: str
) -> None:
    env = dict(os.environ)
    r = cli(db_url, env, "webhooks", "add", receiver.url(), "--events", "payment.unmapped", "--description", "ops")
    assert r.returncode == 0, r.stderr
    secret = next(w for w in r.stdout.split() if w.startswith("whsec_"))
    assert "cannot be shown again" in r.stderr
    sub_id = next(w for w in r.stdout.split() if w.startswith("wh_"))
    table = ok(db_url, env, "webhooks", "list")
    as_json = json.loads(ok(db_url, env, "webhooks", "list", "--format", "json"))
    assert sub_id in table and receiver.url() in table and secret not in table
    assert secret not in json.dumps(as_json)
    assert [(s["id"], s["kinds"], s["enabled"], s["description"]) for s in as_json] == [
        (sub_id, ["payment.unmapped"], True, "ops")
    ]
    assert "disabled" in ok(db_url, env, "webhooks", "disable", sub_id)
    assert json.loads(ok(db_url, env, "webhooks", "enable", sub_id, "--format", "json"))["enabled"] is True
    rotated = cli(db_url, env, "webhooks", "rotate-secret", sub_id)
    assert rotated.returncode == 0 and "whsec_" in rotated.stdout and secret not in rotated.stdout
    assert "removed" in ok(db_url, env, "webhooks", "remove", sub_id)
    assert json.loads(ok(db_url, env, "webhooks", "list", "--format", "json")) == []
    # Bad input: usage errors and the core's messages.
    bad = cli(db_url, env, "webhooks", "add", "ftp://127.0.0.1/x")
    assert bad.returncode == 2 and "error: usage:" in bad.stderr
    bad = cli(db_url, env, "webhooks", "add", receiver.url(), "--events", "nope")
    assert bad.returncode == 2 and "balance.low" in bad.stderr
    gone = cli(db_url, env, "webhooks", "remove", sub_id)
    assert gone.returncode == 1 and "not_found" in gone.stderr
    assert cli(db_url, env, "webhooks").returncode == 2
    assert cli(db_url, env, "webhooks", "replay", sub_id).returncode == 2  # neither ids nor --all


def test_cli_dead_letters_listed_and_replayed(
    m: LocalCreditManager, receiver: Receiver, hooks_env: dict[str, str], db_url: str
) -> None:
    env = dict(os.environ)
    broken = True
    receiver.policy = lambda path, event_id, attempt: FAIL_500 if broken else OK
    sub, _ = m.create_webhook(receiver.url())
    (event_id,) = emit(m, 1)
    deliver_until(m, lambda: bool(m.webhook_dead_letters(sub.id)), max_attempts=2)
    table = ok(db_url, env, "webhooks", "dead-letters")
    assert sub.id in table and str(event_id) in table and "500" in table
    listed = json.loads(ok(db_url, env, "webhooks", "dead-letters", sub.id, "--format", "json"))
    assert [(d["event_id"], d["attempts"], d["requeued"]) for d in listed] == [(event_id, 2, False)]
    broken = False
    assert "requeued 1" in ok(db_url, env, "webhooks", "replay", sub.id, "--all")
    run = cli(db_url, env, "webhooks", "run", "--once", "--format", "json", "--timeout-ms", "2000")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["sent"] == 1
    assert receiver.delivered() == [event_id]
    assert json.loads(ok(db_url, env, "webhooks", "dead-letters", "--format", "json")) == []


# ----- Prometheus -------------------------------------------------------------------------


def test_prometheus_gauges_from_another_manager_and_process(
    m: LocalCreditManager, receiver: Receiver, db_url: str, tmp_path: Path
) -> None:
    pytest.importorskip("prometheus_client")
    from creditgate.prometheus import register
    from prometheus_client import CollectorRegistry, generate_latest

    receiver.policy = lambda path, event_id, attempt: FAIL_500 if path == "/bad" else OK
    good, _ = m.create_webhook(receiver.url("/good"))
    bad, _ = m.create_webhook(receiver.url("/bad"))
    emit(m, 3)
    deliver_until(m, lambda: len(receiver.delivered("/good")) == 3)

    other = LocalCreditManager(db_url)  # a second manager: figures come from the database
    registry = CollectorRegistry()
    register(other, registry, report_ttl_seconds=0)
    text = generate_latest(registry).decode()
    assert f'creditgate_webhook_delivered{{subscription="{good.id}"}} 3.0' in text
    assert f'creditgate_webhook_pending{{subscription="{bad.id}"}} 3.0' in text
    failed = m.webhook(bad.id).failed_attempts
    assert failed >= 1
    assert f'creditgate_webhook_failed_attempts{{subscription="{bad.id}"}} {float(failed)}' in text
    for name in ("creditgate_webhook_dead_letters", "creditgate_webhook_lag_seconds"):
        assert f'{name}{{subscription="{good.id}"}} 0.0' in text

    # The multiprocess mirror, in a process that delivered nothing.
    directory = tmp_path / "multiproc"
    directory.mkdir()
    code = textwrap.dedent(
        """
        import os, sys
        from creditgate import LocalCreditManager
        from creditgate.prometheus import MultiprocessMirror, generate_multiprocess_latest

        m = LocalCreditManager(os.environ["LEDGER_URL"])
        sys.stdout.write(generate_multiprocess_latest([MultiprocessMirror(m)]).decode())
        """
    )
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(directory), LEDGER_URL=db_url)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert f'creditgate_webhook_delivered{{subscription="{good.id}"}} 3.0' in r.stdout
    assert f'creditgate_webhook_pending{{subscription="{bad.id}"}} 3.0' in r.stdout
