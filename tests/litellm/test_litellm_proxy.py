"""creditgate.litellm against a real LiteLLM proxy (issue 9).

The proxy runs on loopback with 2 workers and mocked models: ``fake``,
``pricey`` and ``dear`` answer without any network (LiteLLM's mock reports 10
prompt and 20 completion tokens), and ``broken`` fails as an upstream 500
would.
It is driven with the official ``openai`` client. The ledger is a SQLite
file, or a fresh PostgreSQL database with ``CREDITGATE_TEST_BACKEND=postgres``.
The test process opens the same ledger to set up accounts and check every
charge. scripts/test-python.sh runs this file in its own venv
(``.venv-litellm``), because LiteLLM pins its own web stack.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import openai
import pytest
from creditgate import LocalCreditManager

# Offline: LiteLLM's bundled model cost map, never a download at import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

IS_POSTGRES = os.environ.get("CREDITGATE_TEST_BACKEND", "").lower() in ("postgres", "postgresql")
PROMPT = [{"role": "user", "content": "hi"}]
PROXY_START_TIMEOUT = 300  # seconds; a hang guard (start-up imports are slow on a busy machine)


@dataclass
class Proxy:
    url: str
    ledger: LocalCreditManager
    start_seconds: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ledger_url(tmp: Path) -> Iterator[str]:
    if not IS_POSTGRES:
        yield f"sqlite:///{tmp / 'ledger.db'}"
        return
    import psycopg

    server = os.environ["CREDITGATE_TEST_POSTGRES_URL"]
    name = f"cg_litellm_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    base, sep, query = server.partition("?")
    scheme, _, rest = base.partition("://")
    try:
        yield f"{scheme}://{rest.split('/', 1)[0]}/{name}{sep}{query}"
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("litellm")
    for url in ledger_url(tmp):
        ledger = LocalCreditManager(url)
        ledger.set_model_price("pricey", 10, 10)  # credits per 1,000 tokens
        ledger.set_model_price("dear", 1, 60)  # output 60 times dearer than input
        # Priced as "dear": a retry on "dear" of a call that failed on "broken"
        # quotes the same hold, as a retry of the same request would.
        ledger.set_model_price("broken", 1, 60)
        (tmp / "config.yaml").write_text(
            textwrap.dedent(
                """\
                model_list:
                  - model_name: fake
                    litellm_params: {model: openai/fake, api_key: unused, mock_response: "hello there"}
                  - model_name: pricey
                    litellm_params: {model: openai/pricey, api_key: unused, mock_response: "hello there"}
                  - model_name: dear
                    litellm_params: {model: openai/dear, api_key: unused, mock_response: "hello there"}
                  - model_name: broken
                    litellm_params:
                      {model: openai/broken, api_key: unused, mock_response: "litellm.InternalServerError"}
                general_settings:
                  custom_auth: creditgate.litellm.user_api_key_auth
                litellm_settings:
                  callbacks: creditgate.litellm.callback
                  num_retries: 0
                """
            )
        )
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env.update(
            LITELLM_MASTER_KEY="sk-master-for-tests",
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            CREDITGATE_DATABASE_URL=url,
            CREDITGATE_LITELLM_MAX_TOKENS="1000",
        )
        litellm_bin = Path(sys.executable).with_name("litellm")
        log = (tmp / "proxy.log").open("w")
        started = time.monotonic()
        child = subprocess.Popen(
            [str(litellm_bin), "--config", "config.yaml", "--host", "127.0.0.1", "--port", str(port)]
            + ["--num_workers", "2"],
            cwd=tmp,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        pass
                    import urllib.request

                    with urllib.request.urlopen(f"{base}/health/liveliness", timeout=5) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if child.poll() is not None or time.monotonic() - started > PROXY_START_TIMEOUT:
                    raise RuntimeError(f"the LiteLLM proxy did not start:\n{(tmp / 'proxy.log').read_text()[-4000:]}")
                time.sleep(0.25)
            took = time.monotonic() - started
            print(f"\nlitellm: proxy with 2 workers up in {took:.1f} s ({'PostgreSQL' if IS_POSTGRES else 'SQLite'})")
            yield Proxy(base, ledger, took)
        finally:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
            log.close()


def client(p: Proxy, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=p.url, api_key=key, max_retries=0, timeout=60)


def paid_user(p: Proxy, credits_minor: int = 500) -> tuple[str, str]:
    """A user who paid `credits_minor` US cents and holds a key."""
    user = f"u-{uuid.uuid4().hex[:8]}"
    p.ledger.record_payment(user, f"pay-{user}", credits_minor)
    return user, p.ledger.create_api_key(user).secret


def usage_entries(p: Proxy, user: str) -> list[object]:
    return [e for e in p.ledger.transactions(user, limit=1000) if e.kind == "usage"]


def settled(p: Proxy, user: str, count: int) -> list[object]:
    """The usage entries, once `count` are there (events run after the response)."""
    deadline = time.monotonic() + 30
    while True:
        entries = usage_entries(p, user)
        if len(entries) >= count or time.monotonic() > deadline:
            return entries
        time.sleep(0.1)


def test_a_paid_key_is_served_and_charged_exactly_its_usage(proxy: Proxy) -> None:
    user, key = paid_user(proxy)
    before = proxy.ledger.get_balance(user)
    r = client(proxy, key).chat.completions.create(model="fake", messages=PROMPT, max_tokens=50)
    assert r.choices[0].message.content == "hello there"
    assert r.usage is not None
    (e,) = settled(proxy, user, 1)
    assert (e.input_tokens, e.output_tokens, e.model) == (r.usage.prompt_tokens, r.usage.completion_tokens, "fake")
    # The default price: 1 credit per 1,000 tokens.
    assert e.amount == -Decimal(r.usage.total_tokens) / 1000
    assert proxy.ledger.get_balance(user) == before + e.amount
    assert proxy.ledger.account(user).held == 0
    assert proxy.ledger.audit().ok


def test_a_key_without_credits_gets_402_and_is_not_charged(proxy: Proxy) -> None:
    user = f"broke-{uuid.uuid4().hex[:8]}"
    key = f"legacy-{uuid.uuid4().hex}"
    proxy.ledger.import_api_key(user, secret=key)
    with pytest.raises(openai.APIStatusError) as exc:
        client(proxy, key).chat.completions.create(model="fake", messages=PROMPT)
    assert exc.value.status_code == 402
    assert isinstance(exc.value.body, dict) and exc.value.body["code"] == "insufficient_credits"
    assert proxy.ledger.transactions(user) == []


def test_a_call_whose_worst_case_is_not_covered_gets_402(proxy: Proxy) -> None:
    user = f"poor-{uuid.uuid4().hex[:8]}"
    proxy.ledger.add_credits(user, Decimal(5))
    key = f"legacy-{uuid.uuid4().hex}"
    proxy.ledger.import_api_key(user, secret=key)
    # 5 credits pass the key check, but "pricey" holds about 10 credits.
    with pytest.raises(openai.APIStatusError) as exc:
        client(proxy, key).chat.completions.create(model="pricey", messages=PROMPT, max_tokens=1000)
    assert exc.value.status_code == 402
    assert isinstance(exc.value.body, dict) and exc.value.body["code"] == "insufficient_credits"
    assert usage_entries(proxy, user) == [] and proxy.ledger.account(user).held == 0
    # The cap (CREDITGATE_LITELLM_MAX_TOKENS=1000) bounds what is held for a
    # huge max_tokens: on "fake", 5 credits cover it.
    client(proxy, key).chat.completions.create(model="fake", messages=PROMPT, max_tokens=50_000)
    assert len(settled(proxy, user, 1)) == 1


def legacy_user(p: Proxy, credits: str) -> tuple[str, str]:
    """A user with exactly `credits` and an imported key (no first-key minimum)."""
    user = f"l-{uuid.uuid4().hex[:8]}"
    p.ledger.add_credits(user, Decimal(credits))
    key = f"legacy-{uuid.uuid4().hex}"
    p.ledger.import_api_key(user, secret=key)
    return user, key


def never_negative(p: Proxy, user: str) -> None:
    assert p.ledger.get_balance(user) >= 0
    assert all(e.balance_after >= 0 for e in p.ledger.transactions(user, limit=1000))


def test_the_hold_prices_max_tokens_at_the_output_rate(proxy: Proxy) -> None:
    # "dear": 1 credit per 1k input tokens, 60 per 1k output. With
    # max_tokens=100 the worst case is ~8 prompt tokens at 1 plus 100 at 60 =
    # ~6.008 credits; priced all at the input rate it would be ~0.108, which
    # 1.1 credits cover. LiteLLM's mock really uses 10 + 20 tokens = 1.21
    # credits: a hold at the input rate would let this call overdraw to -0.11.
    user, key = legacy_user(proxy, "1.1")
    with pytest.raises(openai.APIStatusError) as exc:
        client(proxy, key).chat.completions.create(model="dear", messages=PROMPT, max_tokens=100)
    assert exc.value.status_code == 402
    assert isinstance(exc.value.body, dict) and exc.value.body["code"] == "insufficient_credits"
    assert usage_entries(proxy, user) == [] and proxy.ledger.account(user).held == 0
    assert proxy.ledger.get_balance(user) == Decimal("1.1")
    # With 2.1 credits, max_tokens=25 (worst case ~1.508) is covered: served
    # and charged once, at each rate.
    proxy.ledger.add_credits(user, Decimal(1))
    r = client(proxy, key).chat.completions.create(model="dear", messages=PROMPT, max_tokens=25)
    assert r.usage is not None
    (e,) = settled(proxy, user, 1)
    time.sleep(1)  # a duplicate charge would arrive by now
    assert len(usage_entries(proxy, user)) == 1
    assert (e.input_tokens, e.output_tokens, e.model) == (r.usage.prompt_tokens, r.usage.completion_tokens, "dear")
    assert e.amount == -(Decimal(r.usage.prompt_tokens) * 1 + Decimal(r.usage.completion_tokens) * 60) / 1000
    assert proxy.ledger.get_balance(user) == Decimal("2.1") + e.amount
    assert proxy.ledger.account(user).held == 0
    never_negative(proxy, user)


def fail_upstream(p: Proxy, user: str, key: str, call_id: str) -> None:
    """A call to ``broken`` under `call_id` (max_tokens=20: ~1.208 credits
    held), failed upstream and released, nothing charged."""
    before = p.ledger.get_balance(user)
    with pytest.raises(openai.APIStatusError) as exc:
        client(p, key).chat.completions.create(
            model="broken", messages=PROMPT, max_tokens=20, extra_headers={"x-litellm-call-id": call_id}
        )
    assert exc.value.status_code >= 500
    deadline = time.monotonic() + 30
    while p.ledger.account(user).held != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert p.ledger.account(user).held == 0, "the failed call's hold was released"
    assert p.ledger.get_balance(user) == before and usage_entries(p, user) == []


def test_a_retried_call_id_after_a_failure_holds_anew(proxy: Proxy) -> None:
    # The proxy takes the caller's call id from the x-litellm-call-id header
    # (LiteLLM's resolve_litellm_call_id). The first attempt holds ~1.208
    # credits, fails upstream and releases them; then the account spends 1
    # credit elsewhere. The retry, same call id and same quote, must not run
    # on the released hold (it would cost 1.21 of the 1.2 left: overdrawn to
    # -0.01): it holds anew, which 1.2 credits do not cover, so 402.
    user, key = legacy_user(proxy, "2.2")
    call_id = str(uuid.uuid4())
    fail_upstream(proxy, user, key, call_id)
    proxy.ledger.deduct_credits(user, Decimal(1))
    headers = {"x-litellm-call-id": call_id}
    with pytest.raises(openai.APIStatusError) as exc:
        client(proxy, key).chat.completions.create(model="dear", messages=PROMPT, max_tokens=20, extra_headers=headers)
    assert exc.value.status_code == 402
    assert isinstance(exc.value.body, dict) and exc.value.body["code"] == "insufficient_credits"
    # A retry whose quote differs from the first attempt's (here another
    # model) is an idempotency conflict in the core: refused with 409, even
    # though the first hold was released. Never served on the released hold.
    with pytest.raises(openai.APIStatusError) as exc:
        client(proxy, key).chat.completions.create(model="fake", messages=PROMPT, max_tokens=20, extra_headers=headers)
    assert exc.value.status_code == 409
    assert isinstance(exc.value.body, dict) and exc.value.body["code"] == "idempotency_conflict"
    time.sleep(1)  # a charge after the response would arrive by now
    assert usage_entries(proxy, user) == [] and proxy.ledger.account(user).held == 0
    assert proxy.ledger.get_balance(user) == Decimal("1.2")
    never_negative(proxy, user)


def test_a_retried_call_id_that_is_covered_is_served_and_charged_once(proxy: Proxy) -> None:
    user, key = legacy_user(proxy, "5")
    call_id = str(uuid.uuid4())
    fail_upstream(proxy, user, key, call_id)
    r = client(proxy, key).chat.completions.create(
        model="dear", messages=PROMPT, max_tokens=20, extra_headers={"x-litellm-call-id": call_id}
    )
    assert r.usage is not None
    (e,) = settled(proxy, user, 1)
    time.sleep(1)  # a duplicate charge would arrive by now
    assert len(usage_entries(proxy, user)) == 1
    # Charged on the retry's own hold (the second attempt id), not the released one.
    assert e.idempotency_key == f"usage:litellm:{call_id}~2"
    assert e.amount == -(Decimal(r.usage.prompt_tokens) * 1 + Decimal(r.usage.completion_tokens) * 60) / 1000
    assert proxy.ledger.get_balance(user) == Decimal(5) + e.amount
    assert proxy.ledger.account(user).held == 0
    never_negative(proxy, user)
    assert proxy.ledger.audit().ok


def test_a_call_id_already_charged_is_refused_with_409(proxy: Proxy) -> None:
    user, key = legacy_user(proxy, "5")
    headers = {"x-litellm-call-id": str(uuid.uuid4())}
    client(proxy, key).chat.completions.create(model="fake", messages=PROMPT, max_tokens=50, extra_headers=headers)
    (e,) = settled(proxy, user, 1)
    balance = proxy.ledger.get_balance(user)
    # The same call id again, once charged: served, it would be free.
    with pytest.raises(openai.APIStatusError) as exc:
        client(proxy, key).chat.completions.create(model="fake", messages=PROMPT, max_tokens=50, extra_headers=headers)
    assert exc.value.status_code == 409
    assert isinstance(exc.value.body, dict) and exc.value.body["code"] == "idempotency_conflict"
    time.sleep(1)  # a second charge would arrive by now
    assert [x.id for x in usage_entries(proxy, user)] == [e.id]
    assert proxy.ledger.get_balance(user) == balance
    assert proxy.ledger.account(user).held == 0


def test_concurrent_calls_under_one_call_id_are_served_once(proxy: Proxy) -> None:
    # Ten at once under one call id: each settle would hit the same hold, so
    # serving more than one would give calls away. One is served and charged;
    # the others find its hold active (or settled) and get 409.
    user, key = legacy_user(proxy, "5")
    headers = {"x-litellm-call-id": str(uuid.uuid4())}

    def call(i: int) -> int:
        try:
            client(proxy, key).chat.completions.create(
                model="fake", messages=PROMPT, max_tokens=50, extra_headers=headers
            )
            return 200
        except openai.APIStatusError as exc:
            return exc.status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(call, range(10)))
    assert sorted(statuses) == [200] + [409] * 9, statuses
    (e,) = settled(proxy, user, 1)
    time.sleep(1)  # a second charge would arrive by now
    assert len(usage_entries(proxy, user)) == 1
    assert proxy.ledger.get_balance(user) == Decimal(5) + e.amount
    assert proxy.ledger.account(user).held == 0


def test_an_unknown_key_gets_401(proxy: Proxy) -> None:
    for key in ("sk_unknown", "not-a-key-at-all", "x" * 600):
        with pytest.raises(openai.APIStatusError) as exc:
            client(proxy, key).chat.completions.create(model="fake", messages=PROMPT)
        assert exc.value.status_code == 401, key
        assert isinstance(exc.value.body, dict) and exc.value.body["code"] == "invalid_api_key"
        assert key not in str(exc.value.body), "the key is never echoed"


def test_a_streamed_call_is_charged_once(proxy: Proxy) -> None:
    user, key = paid_user(proxy)
    stream = client(proxy, key).chat.completions.create(
        model="fake", messages=PROMPT, stream=True, stream_options={"include_usage": True}
    )
    usages = [chunk.usage for chunk in stream if chunk.usage is not None]
    assert len(usages) == 1
    (e,) = settled(proxy, user, 1)
    time.sleep(1)  # a duplicate event would arrive by now
    assert len(usage_entries(proxy, user)) == 1
    assert (e.input_tokens, e.output_tokens) == (usages[0].prompt_tokens, usages[0].completion_tokens)
    assert proxy.ledger.account(user).held == 0


def test_a_failed_upstream_call_is_not_charged(proxy: Proxy) -> None:
    user, key = paid_user(proxy)
    with pytest.raises(openai.APIStatusError) as exc:
        client(proxy, key).chat.completions.create(model="broken", messages=PROMPT)
    assert exc.value.status_code >= 500
    deadline = time.monotonic() + 30
    while proxy.ledger.account(user).held != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proxy.ledger.account(user).held == 0, "the hold was released"
    assert usage_entries(proxy, user) == []


def test_concurrent_calls_never_overdraw_beyond_their_holds(proxy: Proxy) -> None:
    # 2.5 credits cover two worst cases (prompt + the 1,000-token cap ~ 1.01
    # credits each) at a time; each call really uses 0.03 credits.
    user = f"c-{uuid.uuid4().hex[:8]}"
    proxy.ledger.add_credits(user, Decimal("2.5"))
    key = f"legacy-{uuid.uuid4().hex}"
    proxy.ledger.import_api_key(user, secret=key)

    def call(i: int) -> int:
        try:
            client(proxy, key).chat.completions.create(model="fake", messages=PROMPT, max_tokens=1000)
            return 200
        except openai.APIStatusError as exc:
            return exc.status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(call, range(20)))
    ok = statuses.count(200)
    assert set(statuses) <= {200, 402}, statuses
    assert ok >= 2, statuses
    entries = settled(proxy, user, ok)
    assert len(entries) == ok, "each served call charged exactly once"
    assert all(e.balance_after >= 0 for e in proxy.ledger.transactions(user, limit=1000))
    assert proxy.ledger.get_balance(user) == Decimal("2.5") + sum(e.amount for e in entries)
    assert proxy.ledger.account(user).held == 0
    assert proxy.ledger.audit().ok
    print(f"\nlitellm: 20 concurrent calls on 2.5 credits: {ok} served, {statuses.count(402)} refused with 402")


def test_duplicate_success_events_charge_once(proxy: Proxy) -> None:
    """The callback itself, in this process: the same call's event twice."""
    import creditgate.litellm as cl

    user, key = paid_user(proxy)
    cl._manager = proxy.ledger  # this process's ledger, whatever the backend
    auth = asyncio.run(cl.user_api_key_auth(None, f"Bearer {key}"))
    data = {"model": "fake", "messages": PROMPT, "max_tokens": 10, "litellm_call_id": str(uuid.uuid4())}
    asyncio.run(cl.callback.async_pre_call_hook(auth, None, data, "completion"))
    assert proxy.ledger.account(user).held > 0
    kwargs = {
        "litellm_call_id": data["litellm_call_id"],
        "standard_logging_object": {"prompt_tokens": 7, "completion_tokens": 3},
    }
    for _ in range(2):
        asyncio.run(cl.callback.async_log_success_event(kwargs, None, None, None))
    (e,) = usage_entries(proxy, user)
    assert (e.input_tokens, e.output_tokens, e.amount) == (7, 3, Decimal("-0.01"))
    assert proxy.ledger.account(user).held == 0
    assert str(auth.api_key).startswith("creditgate:") and key not in repr(auth)
