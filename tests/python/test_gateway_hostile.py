"""Hostile Authorization headers through the example gateway (issue 7): each
is a 401 in OpenAI's error shape, never a 500, and the ledger is unchanged.
Headers are sent as raw bytes, so NUL and non-ASCII bytes reach the app."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from creditgate import LocalCreditManager  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
if "fastapi_gateway" in sys.modules:  # loaded by test_gateway.py
    gateway: Any = sys.modules["fastapi_gateway"]
else:
    _spec = importlib.util.spec_from_file_location("fastapi_gateway", ROOT / "examples" / "fastapi_gateway.py")
    assert _spec is not None and _spec.loader is not None
    gateway = importlib.util.module_from_spec(_spec)
    sys.modules["fastapi_gateway"] = gateway  # pydantic resolves the models' annotations there
    _spec.loader.exec_module(gateway)

MIB = 1 << 20


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'gateway.db'}")
    monkeypatch.setenv("WEBHOOK_SECRET", "whsec-0123456789")
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "admin-0123456789")
    # Server errors become responses (as in production), so a 500 is seen, not raised.
    with TestClient(gateway.app, raise_server_exceptions=False) as c:
        yield c


def ledger(client: TestClient) -> LocalCreditManager:
    m: LocalCreditManager = client.app.state.manager  # type: ignore[attr-defined]
    return m


def paid_key(client: TestClient) -> str:
    headers = {"X-Webhook-Secret": "whsec-0123456789"}
    r = client.post(
        "/v1/webhooks/payments", json={"payment_id": "pay_1", "user_id": "alice", "amount_minor": 500}, headers=headers
    )
    assert r.status_code == 200, r.text
    r = client.post("/v1/keys", json={"user_id": "alice"}, headers={"X-Admin-Token": "admin-0123456789"})
    assert r.status_code == 201, r.text
    key: str = r.json()["key"]
    return key


def state(m: LocalCreditManager) -> Any:
    audit = m.audit()
    assert audit.ok
    keys = [{k: v for k, v in key.to_dict().items() if k != "last_used_at"} for key in m.list_api_keys("alice")]
    return (
        audit.entries_checked,
        m.account("alice").to_dict(),
        [e.to_dict() for e in m.transactions("alice")],
        keys,
    )


def hostile_headers(key: str) -> list[tuple[str, bytes | None]]:
    near = key[:-1] + ("A" if key[-1] != "A" else "B")
    return [
        ("absent", None),
        ("empty", b""),
        ("spaces", b"   "),
        ("bearer-only", b"Bearer"),
        ("bearer-space", b"Bearer "),
        ("bearer-spaces", b"Bearer      "),
        ("basic", b"Basic " + key.encode()),
        ("no-scheme", key.encode()),
        ("1MiB", b"Bearer " + b"x" * MIB),
        ("1MiB-no-scheme", b"y" * MIB),
        ("nul", b"Bearer " + key.encode() + b"\x00"),
        ("nul-inside", b"Bearer sk_\x00" + key.encode()[4:]),
        ("latin1", b"Bearer \xff\xfe\xfd" + key.encode()[3:]),
        ("utf8", "Bearer sk_é".encode() + key.encode()[5:]),
        ("control", b"Bearer \x01\x02\x7f"),
        ("near-miss", b"Bearer " + near.encode()),
        ("two-keys", b"Bearer " + key.encode() + b" " + key.encode()),
        ("body-only", b"Bearer " + key[3:].encode()),
    ]


def test_hostile_authorization_is_401_never_500(client: TestClient) -> None:
    key = paid_key(client)
    m = ledger(client)
    before = state(m)
    requests = [
        ("POST", "/v1/chat/completions", {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}),
        ("GET", "/v1/credits", None),
    ]
    tried = 0
    for label, value in hostile_headers(key):
        for method, path, body in requests:
            headers = {} if value is None else {b"Authorization": value}
            r = client.request(method, path, json=body, headers=headers)
            tried += 1
            assert r.status_code == 401, (label, path, r.status_code, r.text[:300])
            error = r.json()["error"]
            assert error["code"] == "invalid_api_key" and error["type"] == "authentication_error", (label, error)
            assert error["message"] and key not in error["message"] and key[3:] not in r.text, (label, error)
            assert len(r.content) < 2000, (label, len(r.content))
    assert state(m) == before
    assert tried == 2 * len(hostile_headers(key))
    # The same key still works.
    r = client.get("/v1/credits", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "secret",
    [b"", b"wrong", b"\xff\xfe", "whsec-é".encode(), b"whsec-0123456789\x00", b"x" * MIB],
    ids=["empty", "wrong", "latin1", "utf8", "nul", "1MiB"],
)
def test_hostile_webhook_secret_is_401_never_500(client: TestClient, secret: bytes) -> None:
    m = ledger(client)
    before = state(m)
    r = client.post(
        "/v1/webhooks/payments",
        json={"payment_id": "pay_x", "user_id": "alice", "amount_minor": 500},
        headers={b"X-Webhook-Secret": secret},
    )
    assert r.status_code == 401, (r.status_code, r.text[:300])
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert state(m) == before
