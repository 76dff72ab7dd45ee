"""The example FastAPI gateway: the seed's scenarios over HTTP.

Most tests use FastAPI's TestClient; the ones marked `server` run the app in
a real uvicorn server on a free loopback port, for the official `openai`
client, client disconnects and concurrent requests.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from creditgate import LocalCreditManager  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("fastapi_gateway", ROOT / "examples" / "fastapi_gateway.py")
assert _spec is not None and _spec.loader is not None
gateway = importlib.util.module_from_spec(_spec)
sys.modules["fastapi_gateway"] = gateway  # pydantic resolves the models' annotations there
_spec.loader.exec_module(gateway)


WEBHOOK_SECRET = "whsec-test-0123456789"
ADMIN_TOKEN = "admin-test-0123456789"
# What the payment processor and the host's dashboard send (every request of
# these tests carries both; the fail-closed tests below send other values).
HOST_HEADERS = {"X-Webhook-Secret": WEBHOOK_SECRET, "X-Admin-Token": ADMIN_TOKEN}


@pytest.fixture
def database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The gateway reads its ledger and its secrets from the environment, as in production."""
    # conftest's autouse fixture already removed the creditgate settings.
    monkeypatch.setenv("WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    return url


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    # `with` runs the lifespan: the manager opens.
    with TestClient(gateway.app, headers=HOST_HEADERS) as c:
        yield c


def ledger(client: TestClient) -> LocalCreditManager:
    m: LocalCreditManager = client.app.state.manager  # type: ignore[attr-defined]
    return m


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def chat(prompt: str, max_tokens: int | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "echo",
        "messages": [{"role": "user", "content": prompt}],
        **extra,
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_error(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"] and error["type"], error


def pay_and_create_key(client: TestClient, user: str = "alice", cents: int = 500) -> str:
    r = client.post(
        "/v1/webhooks/payments",
        json={"payment_id": f"pay_{user}", "user_id": user, "amount_minor": cents},
    )
    assert r.status_code == 200, r.text
    r = client.post("/v1/keys", json={"user_id": user, "name": "prod"})
    assert r.status_code == 201, r.text
    key: str = r.json()["key"]
    return key


def sse_events(lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        if line.startswith("data: "):
            yield line[len("data: ") :]


# ----- the seed's four scenarios ------------------------------------------------


def test_seed_scenarios_over_http(client: TestClient) -> None:
    # 1. A new user tries to generate an API key -> 402.
    r = client.post("/v1/keys", json={"user_id": "alice"})
    assert_error(r, 402, "insufficient_credits")

    # 2. The user purchases $5 (5,000 credits) -> the key is generated.
    payment = {
        "payment_id": "pay_1",
        "user_id": "alice",
        "amount_minor": 500,
        "currency": "usd",
    }
    r = client.post("/v1/webhooks/payments", json=payment)
    assert r.status_code == 200 and r.json() == {
        "credited": 5000,
        "balance": 5000,
        "replayed": False,
    }
    r = client.post("/v1/webhooks/payments", json=payment)  # delivered twice: credited once
    assert r.json() == {"credited": 5000, "balance": 5000, "replayed": True}
    r = client.post("/v1/keys", json={"user_id": "alice", "name": "prod"})
    assert r.status_code == 201
    key = r.json()["key"]
    assert key.startswith("sk_") and r.json()["prefix"] == key[:8]
    # An additional key needs only 1 credit.
    assert client.post("/v1/keys", json={"user_id": "alice", "name": "dev"}).status_code == 201

    # 3. Calls with the key -> the balance drops by tokens/1000 after each.
    balance = Decimal(5000)
    for n in (10, 500, 1490):
        r = client.post("/v1/chat/completions", json=chat(words(n)), headers=auth(key))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["choices"][0]["message"] == {
            "role": "assistant",
            "content": words(n),
        }
        assert body["usage"] == {
            "prompt_tokens": n,
            "completion_tokens": n,
            "total_tokens": 2 * n,
        }
        balance -= Decimal(2 * n) / 1000
        assert Decimal(r.headers["X-Credits-Remaining"]) == balance
        assert ledger(client).get_balance("alice") == balance
    assert balance == Decimal(4996)

    # 4. Use the key until credits run low -> the next call gets 402.
    ledger(client).deduct_credits("alice", balance - Decimal("1.4"))
    r = client.post(
        "/v1/chat/completions",
        json=chat(words(500), max_tokens=1000),
        headers=auth(key),
    )
    assert_error(r, 402, "insufficient_credits")  # worst case 1.5 credits: more than the 1.4 left
    r = client.post("/v1/chat/completions", json=chat(words(500), max_tokens=500), headers=auth(key))
    assert r.status_code == 200 and r.headers["X-Credits-Remaining"] == "0.4"
    r = client.post("/v1/chat/completions", json=chat("hi", max_tokens=5), headers=auth(key))
    assert_error(r, 402, "insufficient_credits")  # below the 1 credit a call needs
    assert ledger(client).get_balance("alice") == Decimal("0.4")
    assert ledger(client).audit().ok


def test_credits_endpoint(client: TestClient) -> None:
    key = pay_and_create_key(client)
    client.post("/v1/chat/completions", json=chat(words(750)), headers=auth(key))
    r = client.get("/v1/credits", headers=auth(key))
    assert r.status_code == 200
    assert r.json() == {"data": {"total_credits": 5000, "total_usage": 1.5, "available": 4998.5}}
    assert '"available":4998.5' in r.text  # an exact decimal number, not a string

    # 200 also at 0 credits: a legacy key of a user who has none.
    ledger(client).import_api_key("bob", secret="legacy-bob-key-0123456789")
    r = client.get("/v1/credits", headers=auth("legacy-bob-key-0123456789"))
    assert r.status_code == 200 and r.json() == {"data": {"total_credits": 0, "total_usage": 0, "available": 0}}
    assert_error(client.get("/v1/credits"), 401, "invalid_api_key")


def test_legacy_key_keeps_working_and_is_charged(client: TestClient) -> None:
    m = ledger(client)
    m.add_credits("carol", 100)
    m.import_api_key("carol", secret="carol-old-key-abcdefgh")
    r = client.post(
        "/v1/chat/completions",
        json=chat(words(1000)),
        headers=auth("carol-old-key-abcdefgh"),
    )
    assert r.status_code == 200 and r.headers["X-Credits-Remaining"] == "98"


def test_authentication_errors(client: TestClient) -> None:
    key = pay_and_create_key(client)
    assert_error(client.post("/v1/chat/completions", json=chat("hi")), 401, "invalid_api_key")
    bad = {"Authorization": "Basic abc"}
    assert_error(
        client.post("/v1/chat/completions", json=chat("hi"), headers=bad),
        401,
        "invalid_api_key",
    )
    for wrong in (
        "sk_" + "A" * 40,
        "nonsense-key-123456",
        key[:-1] + ("a" if key[-1] != "a" else "b"),
    ):
        r = client.post("/v1/chat/completions", json=chat("hi"), headers=auth(wrong))
        assert_error(r, 401, "invalid_api_key")
    # A revoked key fails at once; auth is checked before the body.
    key_id = ledger(client).verify_api_key_credits(key).key_id
    ledger(client).revoke_api_key(key_id)
    assert_error(
        client.post("/v1/chat/completions", json={}, headers=auth(key)),
        401,
        "invalid_api_key",
    )


def test_request_errors(client: TestClient) -> None:
    key = pay_and_create_key(client)
    r = client.post(
        "/v1/chat/completions",
        json={"model": "gpt-99", "messages": []},
        headers=auth(key),
    )
    assert_error(r, 404, "not_found")
    assert_error(
        client.post("/v1/chat/completions", json={"model": "echo"}, headers=auth(key)),
        400,
        "invalid_argument",
    )
    r = client.post("/v1/chat/completions", json=chat("hi", max_tokens=0), headers=auth(key))
    assert_error(r, 400, "invalid_argument")
    r = client.post(
        "/v1/webhooks/payments",
        json={
            "payment_id": "p",
            "user_id": "u",
            "amount_minor": 100,
            "currency": "EUR",
        },
    )
    assert_error(r, 400, "invalid_argument")
    # The same payment id for another amount is a conflict, not a second credit.
    r = client.post(
        "/v1/webhooks/payments",
        json={"payment_id": "pay_alice", "user_id": "alice", "amount_minor": 900},
    )
    assert_error(r, 409, "idempotency_conflict")
    assert ledger(client).get_balance("alice") == 5000
    # No request ever leaves a hold behind.
    assert ledger(client).account("alice").held == 0


def test_webhook_secret(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", "s3cret")
    payment = {"payment_id": "pay_9", "user_id": "dave", "amount_minor": 100}
    assert_error(client.post("/v1/webhooks/payments", json=payment), 401, "invalid_api_key")
    r = client.post("/v1/webhooks/payments", json=payment, headers={"X-Webhook-Secret": "s3cret"})
    assert r.status_code == 200 and ledger(client).get_balance("dave") == 1000


def test_webhook_fails_closed_without_a_secret(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBHOOK_SECRET")
    payment = {"payment_id": "pay_9", "user_id": "dave", "amount_minor": 100}
    for headers in ({}, {"X-Webhook-Secret": ""}, {"X-Webhook-Secret": WEBHOOK_SECRET}):
        r = client.post("/v1/webhooks/payments", json=payment, headers=headers)
        assert_error(r, 503, "not_configured")
        assert "WEBHOOK_SECRET" in r.json()["error"]["message"]
    monkeypatch.setenv("WEBHOOK_SECRET", "")  # set but empty: still not configured
    assert_error(client.post("/v1/webhooks/payments", json=payment), 503, "not_configured")
    # Checked before the body: a malformed body is refused the same way.
    assert_error(client.post("/v1/webhooks/payments", json={}), 503, "not_configured")
    m = ledger(client)
    assert m.get_balance("dave") == 0 and m.transactions("dave") == []


def test_key_creation_needs_the_admin_token(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    client.post("/v1/webhooks/payments", json={"payment_id": "pay_e", "user_id": "eve", "amount_minor": 500})
    for token in ("", "wrong", ADMIN_TOKEN + "x"):
        r = client.post("/v1/keys", json={"user_id": "eve"}, headers={"X-Admin-Token": token})
        assert_error(r, 401, "invalid_api_key")
    r = client.post("/v1/keys", json={"user_id": "eve"}, headers={"X-Admin-Token": ADMIN_TOKEN})
    assert r.status_code == 201, r.text
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN")
    for headers in ({}, {"X-Admin-Token": ADMIN_TOKEN}):
        r = client.post("/v1/keys", json={"user_id": "eve"}, headers=headers)
        assert_error(r, 503, "not_configured")
        assert "GATEWAY_ADMIN_TOKEN" in r.json()["error"]["message"]
    assert len(ledger(client).list_api_keys("eve")) == 1


def test_max_tokens_caps_the_answer_and_the_hold(client: TestClient) -> None:
    key = pay_and_create_key(client)
    r = client.post("/v1/chat/completions", json=chat(words(20), max_tokens=5), headers=auth(key))
    body = r.json()
    assert body["choices"][0]["message"]["content"] == words(5)
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5


def test_model_prices_bound_the_hold(client: TestClient) -> None:
    key = pay_and_create_key(client)
    m = ledger(client)
    m.set_model_price("echo", 1, 3000)  # output is dear: the hold must price it so
    m.deduct_credits("alice", Decimal(5000) - Decimal(2))
    # 1 prompt token + up to 1 output token could cost 3.001: more than the 2 available.
    r = client.post("/v1/chat/completions", json=chat("hello", max_tokens=1), headers=auth(key))
    assert_error(r, 402, "insufficient_credits")
    m.add_credits("alice", Decimal("1.001"))
    r = client.post("/v1/chat/completions", json=chat("hello", max_tokens=1), headers=auth(key))
    assert r.status_code == 200 and r.headers["X-Credits-Remaining"] == "0"


def test_streaming_settles_before_done(client: TestClient) -> None:
    key = pay_and_create_key(client)
    body = chat(words(300), max_tokens=100, stream=True, stream_options={"include_usage": True})
    with client.stream("POST", "/v1/chat/completions", json=body, headers=auth(key)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        chunks: list[dict[str, Any]] = []
        for data in sse_events(r.iter_lines()):
            if data == "[DONE]":
                # The charge is committed before the client sees [DONE].
                assert ledger(client).get_balance("alice") == Decimal(5000) - Decimal("0.4")
                break
            chunks.append(json.loads(data))
        else:
            pytest.fail("no [DONE]")
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == words(100)
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 300,
        "completion_tokens": 100,
        "total_tokens": 400,
    }
    assert ledger(client).account("alice").held == 0


def test_streaming_without_usage_option_sends_no_usage(client: TestClient) -> None:
    key = pay_and_create_key(client)
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json=chat("a b c", stream=True),
        headers=auth(key),
    ) as r:
        events = list(sse_events(r.iter_lines()))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all("usage" not in c and len(c["choices"]) == 1 for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert ledger(client).get_balance("alice") == Decimal(5000) - Decimal("0.006")


def test_streaming_errors_before_the_stream_are_plain_http(client: TestClient) -> None:
    r = client.post(
        "/v1/chat/completions",
        json=chat("hi", stream=True),
        headers=auth("sk_nope_nope_nope"),
    )
    assert_error(r, 401, "invalid_api_key")


def test_metrics_endpoint(client: TestClient) -> None:
    key = pay_and_create_key(client)
    client.post("/v1/chat/completions", json=chat("hello"), headers=auth(key))
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "creditgate_verify_ok_total" in r.text and "creditgate_holds_settled_total" in r.text


# ----- a real server ------------------------------------------------------------


@pytest.fixture
def server(database_url: str) -> Iterator[str]:
    """The app under uvicorn on a free loopback port; yields its base URL."""
    uvicorn = pytest.importorskip("uvicorn")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # port 0: the OS picks a free one, no race
    port = sock.getsockname()[1]
    config = uvicorn.Config(gateway.app, log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=20)
        sock.close()


def server_ledger() -> LocalCreditManager:
    m: LocalCreditManager = gateway.app.state.manager
    return m


def server_key(base: str, user: str = "alice", cents: int = 500) -> str:
    with httpx.Client(base_url=base, timeout=30, headers=HOST_HEADERS) as c:
        r = c.post(
            "/v1/webhooks/payments",
            json={"payment_id": f"pay_{user}", "user_id": user, "amount_minor": cents},
        )
        assert r.status_code == 200, r.text
        r = c.post("/v1/keys", json={"user_id": user})
        assert r.status_code == 201, r.text
        key: str = r.json()["key"]
        return key


def test_official_openai_client(server: str) -> None:
    openai = pytest.importorskip("openai")
    key = server_key(server)
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=key, max_retries=0, timeout=30)

    raw = client.chat.completions.with_raw_response.create(
        model="echo",
        messages=[{"role": "user", "content": "hello from the openai client"}],
        max_tokens=50,
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "hello from the openai client"
    assert completion.usage is not None and completion.usage.total_tokens == 10
    assert raw.headers["X-Credits-Remaining"] == "4999.99"

    stream = client.chat.completions.create(
        model="echo",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "one two three"},
        ],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    usage = None
    for chunk in stream:
        pieces.extend(c.delta.content or "" for c in chunk.choices)
        usage = chunk.usage or usage
    assert "".join(pieces) == "one two three"
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (
        5,
        3,
    )
    assert server_ledger().get_balance("alice") == Decimal("4999.982")

    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="sk_not_a_real_key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth_err:
        bad.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    assert auth_err.value.status_code == 401 and auth_err.value.code == "invalid_api_key"
    server_ledger().deduct_credits("alice", server_ledger().get_balance("alice"))
    with pytest.raises(openai.APIStatusError) as pay_err:
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    assert pay_err.value.status_code == 402 and pay_err.value.code == "insufficient_credits"


def test_concurrent_requests_cannot_overdraw(server: str) -> None:
    key = server_key(server)
    m = server_ledger()
    # Each request holds exactly what it then costs: 1,000 prompt + 1,000
    # echoed tokens = 2 credits. 9 credits cover 4 of them, however they interleave.
    m.deduct_credits("alice", Decimal(4991))

    def call(_: int) -> int:
        with httpx.Client(base_url=server, timeout=60) as c:
            r = c.post(
                "/v1/chat/completions",
                json=chat(words(1000), max_tokens=1000),
                headers=auth(key),
            )
            if r.status_code != 200:
                assert_error(r, 402, "insufficient_credits")
            return int(r.status_code)

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(call, range(10)))
    assert sorted(statuses) == [200] * 4 + [402] * 6
    assert m.get_balance("alice") == 1
    account = m.account("alice")
    assert account.held == 0 and account.available == 1
    assert m.audit().ok


def test_client_disconnect_mid_stream_is_still_charged(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async def slow_model(prompt: str, max_tokens: int) -> AsyncIterator[str]:
        for i in range(max_tokens):
            await asyncio.sleep(0.05)
            yield f" t{i}"

    monkeypatch.setitem(gateway.MODELS, "slow", slow_model)
    key = server_key(server)
    body = {
        "model": "slow",
        "messages": [{"role": "user", "content": "go"}],
        "max_tokens": 1000,
        "stream": True,
    }
    with (
        httpx.Client(base_url=server, timeout=30) as c,
        c.stream("POST", "/v1/chat/completions", json=body, headers=auth(key)) as r,
    ):
        assert r.status_code == 200
        events = sse_events(r.iter_lines())
        for _ in range(4):  # the role chunk and a few words, then hang up
            next(events)
    m = server_ledger()
    deadline = time.monotonic() + 20
    while m.account("alice").held != 0 or m.transactions("alice", limit=1)[0].kind != "usage":
        assert time.monotonic() < deadline, "the hold was neither settled nor released"
        time.sleep(0.05)
    usage = m.transactions("alice", limit=1)[0]
    # Charged for the prompt and the words produced before the disconnect, not the worst case.
    assert usage.input_tokens == 1 and usage.output_tokens is not None and 3 <= usage.output_tokens < 1000
    assert m.audit().ok


def run_example(name: str) -> str:
    """Runs examples/<name> as a user would; its stdout."""
    env = dict(os.environ)  # without creditgate settings: conftest removed them
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_quickstart_example_runs() -> None:
    out = run_example("python_quickstart.py")
    assert "402" in out and "audit ok: True" in out


def test_organisation_example_runs() -> None:
    out = run_example("organisation.py")
    # The project budget binds bob's verify; every step left the ledger consistent.
    assert "402 limit_source=project" in out and "audit ok: True" in out
