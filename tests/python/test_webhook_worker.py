"""The delivery worker as operators run it: ``creditgate webhooks run`` in
subprocesses against a real receiver on 127.0.0.1. Killed with SIGKILL in
the middle of a delivery and restarted, it loses no event and sends again
only the one in flight; two at once deliver every event and never one event
in two requests at the same time; SIGTERM ends a worker cleanly (exit 0);
``--handler MODULE:FUNC`` calls Python and retries its failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from creditgate import LocalCreditManager
from webhook_receiver import HANG, OK, Receiver, running_receiver

KEY = "fedcba9876543210" * 4
ALLOWED = "127.0.0.1"
# Quick passes: a short interval and backoff. The lease of a killed worker
# lasts 2 x timeout + 5 s, so the timeout stays small too.
RUN = ["webhooks", "run", "--interval", "0.05", "--backoff-base-ms", "1", "--backoff-max-ms", "5"]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("CREDITGATE_WEBHOOK_KEY", KEY)
    monkeypatch.setenv("CREDITGATE_WEBHOOK_ALLOWED_HOSTS", ALLOWED)
    return dict(os.environ)


@pytest.fixture
def m(db_url: str, env: dict[str, str]) -> LocalCreditManager:
    return LocalCreditManager(db_url)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


class Workers:
    """`creditgate webhooks run` subprocesses, killed at the end of the test whatever happens."""

    def __init__(self, db_url: str, env: dict[str, str]) -> None:
        self.db_url = db_url
        self.env = env
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            [sys.executable, "-m", "creditgate", "--database-url", self.db_url, *RUN, *args],
            env=self.env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen[str], signum: signal.Signals = signal.SIGTERM) -> str:
        """SIGTERM or SIGINT: the worker finishes its pass and exits 0."""
        p.send_signal(signum)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert signum.name in err
        return out

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=60)


@pytest.fixture
def workers(db_url: str, env: dict[str, str]) -> Iterator[Workers]:
    w = Workers(db_url, env)
    try:
        yield w
    finally:
        w.close()


def emit(m: LocalCreditManager, n: int) -> list[int]:
    return [m.record_event("payment.unmapped", {"n": i}) for i in range(n)]


def test_sigkill_mid_delivery_loses_nothing_and_resends_only_the_one_in_flight(
    m: LocalCreditManager, receiver: Receiver, workers: Workers
) -> None:
    ids: list[int] = []
    hang_on = 0
    killed = False

    def policy(path: str, event_id: int, attempt: int) -> str:
        # Until the kill, every attempt of ids[3] hangs (on a loaded machine
        # the first may time out and be retried before the kill lands).
        return HANG if event_id == hang_on and not killed else OK

    receiver.policy = policy
    m.create_webhook(receiver.url())
    ids += emit(m, 6)
    hang_on = ids[3]
    first = workers.start("--timeout-ms", "1000")
    assert receiver.hanging.wait(60), "the worker never reached the hanging event"
    first.kill()  # SIGKILL while the request for ids[3] is open
    first.communicate(timeout=60)
    killed = True
    receiver.release.set()  # the hung requests end (their client is gone) before the restart resends ids[3]
    before = receiver.received()
    assert before[:4] == ids[:4] and set(before[4:]) <= {ids[3]}, before
    overlaps_before = len(receiver.overlaps)
    # The restarted worker waits out the dead one's lease, then resumes.
    second = workers.start("--timeout-ms", "1000")
    receiver.wait_for(lambda: receiver.delivered() == [*ids[:3], *ids[3:]])
    workers.stop(second)
    after = receiver.received()[len(before) :]
    # Only the event in flight is sent again; every later one once.
    assert after == ids[3:], after
    assert receiver.overlaps[overlaps_before:] == []
    (sub,) = m.webhooks()
    assert (sub.delivered, sub.pending, sub.dead_lettered) == (6, 0, 0)


def test_two_workers_deliver_everything_and_never_one_event_twice_at_once(
    m: LocalCreditManager, receiver: Receiver, workers: Workers
) -> None:
    paths = ["/a", "/b", "/c"]
    for path in paths:
        m.create_webhook(receiver.url(path))
    procs = [workers.start("--timeout-ms", "5000", "--batch-size", "3") for _ in range(2)]
    ids: list[int] = []
    for _ in range(4):  # events keep arriving while both workers run
        ids += emit(m, 6)
    receiver.wait_for(lambda: all(sorted(set(receiver.delivered(p))) == ids for p in paths))
    workers.stop(procs[0], signal.SIGTERM)
    workers.stop(procs[1], signal.SIGINT)
    assert receiver.overlaps == []
    for path in paths:
        # In commit order, and (no failure, no lease lost) each event once.
        assert receiver.received(path) == ids, path
    assert sorted(s.delivered for s in m.webhooks()) == [len(ids)] * 3


HANDLER_MODULE = textwrap.dedent(
    '''
    """A host's handler: records each call; fails the first call of every event."""
    import json, os

    LOG = os.path.join(os.path.dirname(__file__), "calls.jsonl")

    def handle(event):
        with open(LOG, "a") as f:
            f.write(json.dumps({"id": event.id, "kind": event.kind, "n": event.data["n"]}) + "\\n")
        with open(LOG) as f:
            calls = [json.loads(line)["id"] for line in f]
        if calls.count(event.id) == 1:
            raise RuntimeError("payment provider unavailable")
    '''
)


def test_cli_handler_is_called_and_its_failures_retried(
    m: LocalCreditManager, workers: Workers, tmp_path: Path
) -> None:
    package = tmp_path / "host"
    package.mkdir()
    (package / "cg_test_handler.py").write_text(HANDLER_MODULE)
    workers.env["PYTHONPATH"] = os.pathsep.join([str(package), workers.env.get("PYTHONPATH", "")])
    log = package / "calls.jsonl"
    ids = emit(m, 0)
    p = workers.start("--no-deliver", "--handler", "cg_test_handler:handle=payment.unmapped")
    # The consumer's cursor starts at its first pass: wait for it, then emit.
    deadline = time.monotonic() + 60
    while not any(s.url == "callback:cg_test_handler:handle" for s in m.webhooks()):
        assert time.monotonic() < deadline and p.poll() is None, p.stderr.read() if p.stderr else ""
        time.sleep(0.05)
    ids = emit(m, 3)
    deadline = time.monotonic() + 60
    while len(log.read_text().splitlines() if log.exists() else []) < 6:
        assert time.monotonic() < deadline and p.poll() is None, "the handler was not called six times"
        time.sleep(0.05)
    workers.stop(p)
    calls = [int(line.split('"id": ')[1].split(",")[0]) for line in log.read_text().splitlines()]
    assert calls == [ids[0], ids[0], ids[1], ids[1], ids[2], ids[2]]
    (sub,) = m.webhooks()
    assert (sub.delivered, sub.failed_attempts, sub.kinds) == (3, 3, ["payment.unmapped"])


def test_cli_run_refuses_a_handler_it_cannot_load(db_url: str, env: dict[str, str], m: LocalCreditManager) -> None:
    for spec in ("nope", "no_such_module_xyz:f", "os:no_such_function", "os:sep"):
        args = ["webhooks", "run", "--once", "--handler", spec]
        r = subprocess.run(
            [sys.executable, "-m", "creditgate", "--database-url", db_url, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert r.returncode == 2 and "error: usage:" in r.stderr, (spec, r.stderr)
