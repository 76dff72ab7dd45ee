"""Per-key rate limits from Python: RateLimited (429) with retry_after, the
window shared through the database by several processes, and the FastAPI
glue's 429 with a Retry-After header."""

from __future__ import annotations

import multiprocessing
import time

import pytest
from creditgate import InsufficientCredits, InvalidArgument, LocalCreditManager, NotFound, RateLimited

LIMIT = 12


def fresh_minute() -> None:
    """Windows are whole UTC minutes: start with at least 20 s left."""
    secs = int(time.time()) % 60
    if secs >= 40:
        time.sleep(61 - secs)


def test_requests_and_tokens_per_minute(manager: LocalCreditManager, paid_key: str) -> None:
    key_id = manager.verify_api_key_credits(paid_key).key_id
    manager.set_rate_limit(key_id, requests_per_minute=2, tokens_per_minute=10_000)
    fresh_minute()
    manager.verify_api_key_credits(paid_key)
    manager.verify_api_key_credits(paid_key)
    with pytest.raises(RateLimited) as caught:
        manager.verify_api_key_credits(paid_key)
    e = caught.value
    assert (e.code, e.status_code, e.limit) == ("rate_limited", 429, "requests_per_minute")
    assert 1 <= e.retry_after <= 60 and not isinstance(e, InsufficientCredits)
    manager.set_rate_limit(key_id, tokens_per_minute=1_000)  # requests unlimited now
    manager.record_usage(paid_key, input_tokens=1_500)  # usage is never refused
    with pytest.raises(RateLimited, match="tokens_per_minute"):
        manager.reserve(paid_key, credits=1)
    manager.set_rate_limit(key_id)  # lifted
    manager.verify_api_key_credits(paid_key)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"requests_per_minute": 0}, InvalidArgument),
        ({"tokens_per_minute": -1}, InvalidArgument),
        ({"requests_per_minute": 2**32}, InvalidArgument),
        ({"tokens_per_minute": 10**13}, InvalidArgument),
        ({"requests_per_minute": 1.5}, TypeError),
        ({"requests_per_minute": True}, TypeError),
    ],
)
def test_bad_limits(manager: LocalCreditManager, paid_key: str, kwargs: dict[str, object], error: type) -> None:
    key_id = manager.verify_api_key_credits(paid_key).key_id
    with pytest.raises(error):
        manager.set_rate_limit(key_id, **kwargs)  # type: ignore[arg-type]


def test_unknown_key(manager: LocalCreditManager) -> None:
    with pytest.raises(NotFound):
        manager.set_rate_limit("01a213dc-0000-7000-8000-000000000000", requests_per_minute=1)


def _hammer(url: str, key: str, tries: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    m = LocalCreditManager(url)
    ok = limited = 0
    for _ in range(tries):
        try:
            m.verify_api_key_credits(key)
            ok += 1
        except RateLimited:
            limited += 1
    out.put((ok, limited))


def test_processes_share_one_window(db_url: str) -> None:
    m = LocalCreditManager(db_url)
    m.record_payment("p", "pay_p", 500)
    key = m.create_api_key("p")
    m.set_rate_limit(key.key_id, requests_per_minute=LIMIT)
    fresh_minute()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(db_url, key.secret, 10, out)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sum(r[0] for r in results) == LIMIT, results
    assert sum(r[1] for r in results) == 30 - LIMIT


def test_fastapi_glue_answers_429_with_retry_after(db_url: str) -> None:
    pytest.importorskip("fastapi")
    from creditgate.fastapi import CreditGate
    from fastapi import Depends, FastAPI
    from fastapi.testclient import TestClient

    m = LocalCreditManager(db_url)
    m.record_payment("f", "pay_f", 500)
    key = m.create_api_key("f")
    m.set_rate_limit(key.key_id, requests_per_minute=1)
    gate = CreditGate(m)
    app = FastAPI()
    gate.install(app)

    @app.get("/ping")
    def ping(v: object = Depends(gate.verified())) -> dict[str, str]:
        return {"ok": "yes"}

    fresh_minute()
    client = TestClient(app)
    headers = {"Authorization": f"Bearer {key.secret}"}
    assert client.get("/ping", headers=headers).status_code == 200
    r = client.get("/ping", headers=headers)
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limited" and r.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(r.headers["Retry-After"]) <= 60
