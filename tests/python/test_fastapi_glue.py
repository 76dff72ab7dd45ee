"""creditgate.fastapi through a real HTTP server: a small app built on the
glue runs under uvicorn on a free loopback port and is driven with httpx and
the official `openai` client, once with an AsyncLocalCreditManager and once
with a LocalCreditManager. Covers the OpenAI error shape with docs/reference.md codes
(401, 402, 503), an exact X-Credits-Remaining, the authenticate-only path
(200 for an overdrawn key), and a stream the client abandons: charged for
what was sent, the rest of the hold freed.

No `from __future__ import annotations`: FastAPI reads the annotations of the
endpoints defined inside make_app() at runtime."""

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Optional, Union

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
from conftest import IS_POSTGRES  # noqa: E402
from creditgate import AsyncLocalCreditManager, LocalCreditManager, Verification  # noqa: E402
from creditgate.fastapi import (  # noqa: E402
    CREDITS_HEADER,
    APIError,
    BearerKey,
    CreditGate,
    DecimalJSONResponse,
    Ledger,
)
from fastapi import Depends, FastAPI, Request  # noqa: E402
from fastapi.responses import Response  # noqa: E402
from pydantic import BaseModel  # noqa: E402

# ----- the app under test ---------------------------------------------------------


class Chat(BaseModel):
    model: str
    messages: list[dict[str, Any]]
    max_tokens: Optional[int] = None
    stream: bool = False


async def words(prompt: str, n: int, delay: float) -> AsyncIterator[str]:
    """The model: echoes the prompt (at most n words) or, when slow, produces
    n words w0 w1 ..., one every `delay` seconds."""
    out = [f"w{i}" for i in range(n)] if delay else prompt.split()[:n]
    for i, word in enumerate(out):
        if delay:
            await asyncio.sleep(delay)
        yield word if i == 0 else " " + word


SLOW = {"slow": 0.05}  # model name -> seconds per token; others echo at once


def make_app(ledger: Ledger) -> FastAPI:
    app = FastAPI()
    gate = CreditGate(ledger)
    gate.install(app)
    Caller = Annotated[Verification, Depends(gate.verified())]
    KeyOwner = Annotated[Verification, Depends(gate.authenticated())]

    @app.get("/v1/me")
    async def me(who: KeyOwner) -> Response:
        return DecimalJSONResponse({"user_id": who.user_id, "available": who.available})

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request, body: Chat, caller: Caller, key: BearerKey) -> Response:
        if body.model not in ("echo", "priced", "slow"):
            raise APIError(404, "not_found", f"no model {body.model!r}")
        prompt = " ".join(str(m.get("content", "")) for m in body.messages)
        prompt_tokens = len(prompt.split())
        max_out = body.max_tokens or 1000
        meter = await gate.meter(request, key, model=body.model, input_tokens=prompt_tokens, max_output_tokens=max_out)
        base = {"id": meter.request_id, "created": int(time.time()), "model": body.model}
        pieces = words(prompt, max_out, SLOW.get(body.model, 0.0))
        if body.stream:

            async def events() -> AsyncIterator[str]:
                chunk = {**base, "object": "chat.completion.chunk"}
                yield f"data: {json.dumps({**chunk, 'choices': [{'index': 0, 'delta': {'role': 'assistant'}}]})}\n\n"
                async for piece in pieces:
                    meter.add(len(piece.split()))
                    delta = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                    yield f"data: {json.dumps({**chunk, 'choices': [delta]})}\n\n"
                await meter.settle()
                done = {"index": 0, "delta": {}, "finish_reason": "stop"}
                yield f"data: {json.dumps({**chunk, 'choices': [done]})}\n\n"
                yield "data: [DONE]\n\n"

            return meter.stream(events())
        async with meter:
            text = "".join([p async for p in pieces])
            await meter.settle(len(text.split()))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(text.split()),
            "total_tokens": prompt_tokens + len(text.split()),
        }
        message = {"role": "assistant", "content": text}
        return DecimalJSONResponse(
            {
                **base,
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": usage,
            }
        )

    return app


# ----- the server ---------------------------------------------------------------------


class Server:
    def __init__(self, base: str, ledger: Ledger) -> None:
        self.base = base
        self.ledger = ledger
        self.sync: LocalCreditManager = ledger.sync if isinstance(ledger, AsyncLocalCreditManager) else ledger

    def client(self) -> Any:
        return httpx.Client(base_url=self.base, timeout=30)


@pytest.fixture(params=["async", "sync"])
def server(request: pytest.FixtureRequest, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """The app under uvicorn on a free loopback port (as test_gateway.py's server)."""
    # Short busy/lock timeout: the StorageError test holds a lock from another process.
    monkeypatch.setenv("CREDITGATE_BUSY_TIMEOUT_MS", "300")
    sync = LocalCreditManager(db_url)
    ledger: Ledger = AsyncLocalCreditManager.from_manager(sync) if request.param == "async" else sync
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(make_app(ledger), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield Server(f"http://127.0.0.1:{port}", ledger)
    finally:
        srv.should_exit = True
        thread.join(timeout=20)
        sock.close()
        if isinstance(ledger, AsyncLocalCreditManager):
            ledger.close()


def paid_key(s: Server, user: str = "alice") -> str:
    s.sync.record_payment(user, f"pay_{user}", 500)
    return s.sync.create_api_key(user).secret


def chat_body(prompt: str, model: str = "echo", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], **extra}


def assert_error(r: Any, status: int, code: str, kind: str) -> None:
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"}, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "code"}, error
    assert (error["code"], error["type"]) == (code, kind) and error["message"], error


# ----- the tests ------------------------------------------------------------------------


def test_401_and_402_in_openai_shape(server: Server) -> None:
    key = paid_key(server)
    with server.client() as c:
        r = c.post("/v1/chat/completions", json=chat_body("hi"))
        assert_error(r, 401, "invalid_api_key", "authentication_error")
        assert "Bearer" in r.json()["error"]["message"] and CREDITS_HEADER not in r.headers
        for bad in ({"Authorization": "Basic abc"}, {"Authorization": "Bearer sk_nope"}, {"Authorization": "Bearer"}):
            assert_error(c.get("/v1/me", headers=bad), 401, "invalid_api_key", "authentication_error")
        # Auth is checked before the body: an invalid body with a bad key is a 401.
        r = c.post("/v1/chat/completions", json={}, headers={"Authorization": "Bearer sk_nope"})
        assert_error(r, 401, "invalid_api_key", "authentication_error")
        # A valid key, an invalid body: 400 invalid_argument, not FastAPI's 422.
        r = c.post("/v1/chat/completions", json={"model": "echo"}, headers={"Authorization": f"Bearer {key}"})
        assert_error(r, 400, "invalid_argument", "invalid_request_error")
        r = c.post("/v1/chat/completions", json=chat_body("hi", "gpt-9"), headers={"Authorization": f"Bearer {key}"})
        assert_error(r, 404, "not_found", "not_found_error")

        # 402: below the 1 credit a call needs...
        server.sync.deduct_credits("alice", Decimal("4999.5"))
        r = c.post("/v1/chat/completions", json=chat_body("hi"), headers={"Authorization": f"Bearer {key}"})
        assert_error(r, 402, "insufficient_credits", "insufficient_credits")
        assert "0.5" in r.json()["error"]["message"]
        # ...and the key still authenticates: the authenticate-only path answers 200.
        r = c.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and r.headers[CREDITS_HEADER] == "0.5"
        # Overdrawn: verify with min_credits=0 would refuse it; authenticate does not.
        server.sync.record_usage(key, tokens=2500)
        r = c.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        assert r.json() == {"user_id": "alice", "available": -2}
        assert r.headers[CREDITS_HEADER] == "-2"
        # A revoked key: 401 on both paths.
        server.sync.revoke_api_key(server.sync.list_api_keys("alice")[0].key_id)
        for path in ("/v1/me",):
            assert_error(
                c.get(path, headers={"Authorization": f"Bearer {key}"}), 401, "invalid_api_key", "authentication_error"
            )
    assert server.sync.account("alice").held == 0


def test_credits_remaining_is_exact_after_a_charge(server: Server) -> None:
    key = paid_key(server)
    server.sync.set_model_price("priced", "1.234567", 2)
    with server.client() as c:
        r = c.post(
            "/v1/chat/completions",
            json=chat_body("a b c d e f g", "priced", max_tokens=3),
            headers={"Authorization": f"Bearer {key}"},
        )
    assert r.status_code == 200, r.text
    assert r.json()["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    # ceil((7 × 1,234,567 + 3 × 2,000,000) / 1000) = 14,642 micro-credits.
    assert r.headers[CREDITS_HEADER] == "4999.985358"
    assert Decimal(r.headers[CREDITS_HEADER]) == server.sync.get_balance("alice")
    account = server.sync.account("alice")
    assert account.held == 0 and account.available == account.balance
    usage = server.sync.transactions("alice", limit=1)[0]
    assert (usage.kind, usage.amount, usage.input_tokens, usage.output_tokens) == ("usage", Decimal("-0.014642"), 7, 3)


def test_official_openai_client(server: Server) -> None:
    openai = pytest.importorskip("openai")
    key = paid_key(server)
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key=key, max_retries=0, timeout=30)
    raw = client.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "one two three"}], max_tokens=3
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "one two three"
    assert raw.headers[CREDITS_HEADER] == "4999.994"
    stream = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "four five"}], max_tokens=2, stream=True
    )
    assert "".join(c.delta.content or "" for chunk in stream for c in chunk.choices) == "four five"
    assert server.sync.get_balance("alice") == Decimal("4999.99")

    bad = openai.OpenAI(base_url=f"{server.base}/v1", api_key="sk_not_a_real_key", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError) as auth_err:
        bad.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    assert auth_err.value.status_code == 401 and auth_err.value.code == "invalid_api_key"
    server.sync.deduct_credits("alice", server.sync.get_balance("alice"))
    with pytest.raises(openai.APIStatusError) as pay_err:
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    assert pay_err.value.status_code == 402 and pay_err.value.code == "insufficient_credits"


def test_abandoned_stream_is_settled_for_what_was_sent(server: Server) -> None:
    key = paid_key(server)
    body = chat_body("go", "slow", max_tokens=1000, stream=True)
    with (
        server.client() as c,
        c.stream("POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}) as r,
    ):
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers[CREDITS_HEADER] == "5000"  # what was available when the key was checked
        events = (line for line in r.iter_lines() if line.startswith("data: "))
        for _ in range(5):  # the role chunk and four words, then hang up
            next(events)
        # Meanwhile the worst case (1 + 1000 tokens) is held.
        assert server.sync.account("alice").held == Decimal("1.001")
    deadline = time.monotonic() + 20
    while server.sync.account("alice").held != 0:
        assert time.monotonic() < deadline, "the hold was neither settled nor released"
        time.sleep(0.05)
    entries = server.sync.transactions("alice", limit=10)
    usage = [e for e in entries if e.kind == "usage"]
    assert len(usage) == 1, [e.to_dict() for e in entries]
    out = usage[0].output_tokens
    # Charged for the prompt and the words produced before the disconnect, not the worst case.
    assert usage[0].input_tokens == 1 and out is not None and 4 <= out < 1000
    assert usage[0].amount == -Decimal(1 + out) / 1000
    account = server.sync.account("alice")
    assert account.held == 0 and account.available == account.balance == Decimal(5000) - Decimal(1 + out) / 1000
    assert server.sync.audit().ok
    assert server.sync.metrics()["holds_settled_total"] == 1


# Holds the ledger's write lock from another process until stdin closes: SQLite
# with Python's sqlite3 (never in this process: two SQLite libraries in one
# process do not see each other's locks), PostgreSQL with psycopg.
SQLITE_LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""
POSTGRES_LOCKER = """
import sys, psycopg
with psycopg.connect(sys.argv[1]) as conn:
    conn.execute("LOCK TABLE creditgate_accounts IN EXCLUSIVE MODE")
    print("locked", flush=True)
    sys.stdin.read()
    conn.rollback()
"""


def lock_holder(db_url: str, tmp: Path) -> subprocess.Popen[str]:
    if IS_POSTGRES:
        pytest.importorskip("psycopg")
        args = [POSTGRES_LOCKER, db_url]
    else:
        args = [SQLITE_LOCKER, db_url[len("sqlite:///") :]]
    holder = subprocess.Popen([sys.executable, "-c", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    line = holder.stdout.readline().strip()
    assert line == "locked", line
    return holder


def test_storage_error_is_503(server: Server, db_url: str, tmp_path: Path) -> None:
    key = paid_key(server)
    holder = lock_holder(db_url, tmp_path)
    try:
        with server.client() as c:
            r = c.post("/v1/chat/completions", json=chat_body("hi"), headers={"Authorization": f"Bearer {key}"})
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(20)
    assert_error(r, 503, "storage", "server_error")
    assert r.headers["Retry-After"] == "1"
    # Nothing happened; with the lock gone the same call goes through.
    assert server.sync.get_balance("alice") == 5000 and server.sync.account("alice").held == 0
    with server.client() as c:
        r = c.post("/v1/chat/completions", json=chat_body("hi"), headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and r.headers[CREDITS_HEADER] == "4999.998"
    assert server.sync.audit().ok


def test_without_install_the_header_dependency_fails_loudly(db_url: str) -> None:
    from fastapi.testclient import TestClient

    sync = LocalCreditManager(db_url)
    sync.record_payment("u", "p", 500)
    key = sync.create_api_key("u").secret
    app = FastAPI()
    gate = CreditGate(sync)

    @app.get("/me")
    async def me(who: Annotated[Verification, Depends(gate.verified())]) -> dict[str, str]:
        return {"user": who.user_id}

    with TestClient(app, raise_server_exceptions=True) as c, pytest.raises(RuntimeError, match="install"):
        c.get("/me", headers={"Authorization": f"Bearer {key}"})


def test_manager_from_app_state(db_url: str) -> None:
    from fastapi.testclient import TestClient

    sync = LocalCreditManager(db_url)
    sync.record_payment("u", "p", 500)
    key = sync.create_api_key("u").secret
    app = FastAPI()
    gate = CreditGate()  # app.state.credits
    gate.install(app)
    Caller = Annotated[Verification, Depends(gate.verified(min_credits=100))]

    @app.get("/me")
    async def me(who: Caller) -> dict[str, Union[str, int]]:
        return {"user": who.user_id}

    with TestClient(app, raise_server_exceptions=True) as c:
        with pytest.raises(RuntimeError, match="app.state.credits"):
            c.get("/me", headers={"Authorization": f"Bearer {key}"})
        app.state.credits = AsyncLocalCreditManager.from_manager(sync)
        r = c.get("/me", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and r.json() == {"user": "u"} and r.headers[CREDITS_HEADER] == "5000"
        sync.deduct_credits("u", 4901)
        assert_error(
            c.get("/me", headers={"Authorization": f"Bearer {key}"}),
            402,
            "insufficient_credits",
            "insufficient_credits",
        )
