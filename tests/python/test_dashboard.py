"""The operator dashboard in process (no browser): who gets in, what admin actions need, and
that hostile requests are answered 4xx without changing the ledger.

The app is driven through Starlette's TestClient, and through raw ASGI calls where a request
must carry bytes no HTTP client would send (raw non-ASCII in the query string). Every test runs
on SQLite and PostgreSQL (the ``manager`` fixture of conftest.py)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from creditgate import LocalCreditManager
from creditgate.dashboard import DashboardConfig, DashboardConfigError, create_app, new_token
from creditgate.dashboard.access import COOKIE_NAME
from fastapi import FastAPI
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Message

TOKEN = "op-token-" + "x" * 32  # URL-safe, 41 characters
OTHER_TOKEN = "other-token-" + "y" * 32
OPERATOR = "ops"
USERS = ("alice", "bob", "carol")
CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')
NONCE = re.compile(r'name="nonce" value="([A-Za-z0-9_-]+)"')
PAGES = ("/", "/accounts", "/account?user=alice", "/models", "/events")
TABLES = {
    "/": ("figures", "daily", "models"),
    "/accounts": ("accounts",),
    "/account?user=alice": ("summary", "grants", "keys", "holds", "transactions", "events", "allowances", "budgets"),
    "/models": ("prices", "models", "history"),
    "/events": ("events",),
}


def seed(m: LocalCreditManager) -> str:
    """Three accounts with purchases, a grant, usage by two models and a deduct; alice's key id."""
    m.set_model_price("small", "0.5", "1.5")
    m.set_model_price("large", "2", "6")
    m.record_payment("alice", "pay_a1", 500)  # $5.00: 5,000 credits
    m.record_payment("bob", "pay_b1", 250)
    m.add_credits("carol", 100, kind="grant")
    key = m.create_api_key("alice", "main")
    m.record_usage(key.secret, input_tokens=2000, output_tokens=1000, model="small")
    m.record_usage(key.secret, input_tokens=1000, output_tokens=500, model="large")
    m.deduct_credits("bob", 7)
    return key.key_id


@dataclass(frozen=True)
class Ledger:
    """What a hostile request must not change: every figure, balance, entry and event."""

    report: dict[str, Any]
    balances: dict[str, Decimal]
    entries: dict[str, list[str]]
    events: int

    @classmethod
    def of(cls, m: LocalCreditManager) -> Ledger:
        audit = m.audit()
        assert audit.ok, audit.to_dict()
        return cls(
            report=m.report().to_dict(),
            balances={u: m.get_balance(u) for u in USERS},
            entries={u: [e.id for e in m.transactions(u, limit=100)] for u in USERS},
            events=len(m.events(0, 1000)),
        )


@pytest.fixture
def seeded(manager: LocalCreditManager) -> str:
    return seed(manager)


def client_for(manager: LocalCreditManager, *, admin: bool = False) -> TestClient:
    config = DashboardConfig(tokens={OPERATOR: TOKEN}, admin=admin)
    return TestClient(create_app(manager, config=config), follow_redirects=False)


@pytest.fixture
def client(manager: LocalCreditManager, seeded: str) -> Iterator[TestClient]:
    with client_for(manager) as c:
        yield c


@pytest.fixture
def admin_client(manager: LocalCreditManager, seeded: str) -> Iterator[TestClient]:
    with client_for(manager, admin=True) as c:
        yield c


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(c: TestClient, token: str = TOKEN) -> None:
    r = c.post("/login", data={"token": token}, headers={"Origin": "http://testserver"})
    assert r.status_code == 303, r.text
    assert c.cookies.get(COOKIE_NAME)


def raw_request(
    app: ASGIApp,
    path: str,
    query: bytes = b"",
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    root_path: str = "",
) -> tuple[int, dict[str, str], bytes]:
    """One request straight into the ASGI app: the query string's bytes exactly as given."""
    sent: list[Message] = []
    received = False

    async def receive() -> Message:
        nonlocal received
        if received:
            return {"type": "http.disconnect"}
        received = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": root_path + path,
        "raw_path": (root_path + path).encode(),
        "root_path": root_path,
        "query_string": query,
        "headers": [(b"host", b"testserver")]
        + [(k.lower().encode(), v.encode("latin-1")) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }

    async def call() -> None:
        await app(scope, receive, send)

    asyncio.run(call())
    start = next(m for m in sent if m["type"] == "http.response.start")
    heads = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start["headers"]}
    return start["status"], heads, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def page_json(c: TestClient, path: str) -> dict[str, Any]:
    sep = "&" if "?" in path else "?"
    r = c.get(f"{path}{sep}format=json", headers=bearer())
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    return body


# ----- who gets in ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_unauthenticated_pages_answer_401_with_the_login_form(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("text/html")
    assert '<form method="post" action="/login"' in r.text
    assert 'name="token"' in r.text
    # Nothing of the ledger is shown before signing in.
    for user in USERS:
        assert user not in r.text


@pytest.mark.parametrize("path", PAGES)
def test_unauthenticated_json_answers_a_json_401(client: TestClient, path: str) -> None:
    sep = "&" if "?" in path else "?"
    r = client.get(f"{path}{sep}format=json")
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["status"] == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = client.get(f"{path}{sep}format=csv&table=x")
    assert r.status_code == 401
    assert "alice" not in r.text


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {OTHER_TOKEN}",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}x",
        f"Basic {TOKEN}",
        "Bearer ",
        "Bearer",
        TOKEN,
    ],
)
def test_a_wrong_token_is_401(client: TestClient, header: str) -> None:
    r = client.get("/?format=json", headers={"Authorization": header})
    assert r.status_code == 401
    assert r.json() == {"error": "a valid operator token is required", "status": 401}


def test_the_right_bearer_token_is_200_on_every_page_and_form(client: TestClient) -> None:
    for path in PAGES:
        r = client.get(path, headers=bearer())
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-type"].startswith("text/html")
        assert r.headers["content-security-policy"].startswith("default-src 'none'")
        assert r.headers["cache-control"] == "no-store"
        assert page_json(client, path)["tables"].keys() == set(TABLES[path])


def test_every_page_is_well_formed_with_unique_ids(admin_client: TestClient) -> None:
    """Each id once per page (a chart and the section of its table once shared one), and every
    chart's bars carry exact numbers."""
    login(admin_client)
    for path in PAGES:
        text = admin_client.get(path).text
        ids = re.findall(r'\sid="([^"]+)"', text)
        assert ids and len(ids) == len(set(ids)), (path, sorted(i for i in ids if ids.count(i) > 1))
        for value in re.findall(r'data-value="([^"]*)"', text):
            assert Decimal(value).is_finite(), (path, value)


def test_login_sets_a_session_cookie_that_opens_every_page(client: TestClient) -> None:
    r = client.post("/login", data={"token": TOKEN}, headers={"Origin": "http://testserver"})
    assert r.status_code == 303
    assert r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    for attribute in ("HttpOnly", "Path=/", "SameSite=strict", "Max-Age="):
        assert attribute.lower() in cookie.lower(), cookie
    for path in PAGES:
        r = client.get(path)
        assert r.status_code == 200, (path, r.text)
        assert f">{OPERATOR} · read-only<" in r.text.replace("<span>", ">").replace("</span>", "<")
    # Sign out: the cookie is cleared and the pages ask for the token again.
    r = client.post("/logout")
    assert r.status_code == 303
    assert client.get("/").status_code == 401


def test_a_wrong_token_at_login_sets_no_cookie(client: TestClient) -> None:
    r = client.post("/login", data={"token": OTHER_TOKEN}, headers={"Origin": "http://testserver"})
    assert r.status_code == 401
    assert "That token is not valid." in r.text
    assert "set-cookie" not in r.headers
    assert OTHER_TOKEN not in r.text
    # A login form posted from another site is refused even with the right token.
    r = client.post("/login", data={"token": TOKEN}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert "set-cookie" not in r.headers
    # Extra fields are refused, not ignored.
    r = client.post("/login", data={"token": TOKEN, "next": "/x"}, headers={"Origin": "http://testserver"})
    assert r.status_code == 400
    assert "set-cookie" not in r.headers


def test_a_tampered_or_stale_cookie_is_refused(client: TestClient) -> None:
    config = DashboardConfig(tokens={OPERATOR: TOKEN})
    good = config.issue_cookie(OPERATOR)
    name, expiry, signature = good.split("~")
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    other = DashboardConfig(tokens={OPERATOR: OTHER_TOKEN}).issue_cookie(OPERATOR)
    bad = [
        f"{name}~{int(expiry) + 86400}~{signature}",  # a longer session
        f"admin~{expiry}~{signature}",  # another operator
        f"{name}~{expiry}~{flipped}",
        f"{name}~{expiry}",
        f"{name}~{expiry}~{signature}~x",
        other,  # signed with another token (a changed token ends its sessions)
        config.issue_cookie(OPERATOR, now=1_000_000),  # expired long ago
        "x" * 300,
    ]
    for value in bad:
        client.cookies.set(COOKIE_NAME, value)
        assert client.get("/").status_code == 401, value
        assert client.get("/accounts?format=json").status_code == 401, value
    client.cookies.set(COOKIE_NAME, good)
    assert client.get("/accounts").status_code == 200


@pytest.mark.parametrize("expiry", ["\u00b2", "\u00b9" * 10, "1\u00b3", "+99999999999", " 9999999999", "9" * 13])
def test_a_cookie_whose_expiry_is_not_ascii_digits_is_a_401_not_a_500(client: TestClient, expiry: str) -> None:
    """The cookie header's bytes are read as Latin-1: 0xB2 is "²", which str.isdigit() accepts
    and int() refuses."""
    config = DashboardConfig(tokens={OPERATOR: TOKEN})
    name, _, signature = config.issue_cookie(OPERATOR).split("~")
    cookie = f"{name}~{expiry}~{signature}"
    assert config.session_from_cookie(cookie) is None
    for path in ("/", "/accounts?format=json"):
        status, _, body = raw_request(
            client.app,
            path.split("?")[0],
            path.partition("?")[2].encode(),
            headers={"Cookie": f"{COOKIE_NAME}={cookie}"},
        )
        assert status == 401, (path, status, body[:200])


def test_the_token_is_never_rendered(admin_client: TestClient) -> None:
    login(admin_client)
    bodies = [admin_client.get("/login").text, admin_client.post("/logout").text]
    login(admin_client)
    for path in PAGES:
        sep = "&" if "?" in path else "?"
        bodies.append(admin_client.get(path).text)
        bodies.append(admin_client.get(f"{path}{sep}format=json").text)
        for table in TABLES[path]:
            r = admin_client.get(f"{path}{sep}format=csv&table={table}")
            assert r.status_code == 200, (path, table, r.text)
            bodies.append(r.text)
    bodies.append(admin_client.get("/nowhere").text)
    bodies.append(admin_client.get("/static/dashboard.css").text)
    bodies.append(admin_client.cookies.get(COOKIE_NAME) or "")
    assert len(bodies) > 20
    for body in bodies:
        assert TOKEN not in body
        assert TOKEN[9:] not in body  # not even its random part


# ----- admin actions ----------------------------------------------------------------------------


def grant_form(c: TestClient, user: str = "alice") -> dict[str, str]:
    page = c.get(f"/account?user={user}")
    assert page.status_code == 200
    csrf, nonce = CSRF.search(page.text), NONCE.search(page.text)
    assert csrf is not None and nonce is not None, "the account page has no grant form"
    return {"csrf": csrf.group(1), "nonce": nonce.group(1), "user": user, "amount": "12.5", "reason": "support"}


SAME_ORIGIN = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}


def test_admin_actions_are_refused_when_disabled(manager: LocalCreditManager, client: TestClient, seeded: str) -> None:
    before = Ledger.of(manager)
    login(client)
    page = client.get("/account?user=alice").text
    assert "/actions/" not in page and CSRF.search(page) is None
    form = {"user": "alice", "amount": "10", "nonce": "n" * 20, "csrf": "0" * 64}
    for action, data in [
        ("grant", form),
        ("revoke-key", {"user": "alice", "key_id": seeded}),
        ("disable-key", {"user": "alice", "key_id": seeded}),
        ("key-limit", {"user": "alice", "key_id": seeded, "limit": "5", "window": "daily"}),
    ]:
        r = client.post(f"/actions/{action}", data=data, headers=SAME_ORIGIN)
        assert r.status_code == 403, (action, r.text)
        r = client.post(f"/actions/{action}", data=data, headers={**bearer(), "Accept": "application/json"})
        assert r.status_code == 403
        assert "disabled" in r.json()["error"]
    assert Ledger.of(manager) == before
    assert manager.list_api_keys("alice")[0].disabled is False


@pytest.mark.parametrize("signature", ["\u00e9", "\u00e9" * 64, "g" * 64, ""])
def test_a_cookie_whose_signature_is_not_hex_is_a_401_not_a_500(client: TestClient, signature: str) -> None:
    """compare_digest refuses a non-ASCII str: the signature is compared as bytes."""
    config = DashboardConfig(tokens={OPERATOR: TOKEN})
    name, expiry, _ = config.issue_cookie(OPERATOR).split("~")
    cookie = f"{name}~{expiry}~{signature}"
    assert config.session_from_cookie(cookie) is None
    for path in ("/", "/accounts"):
        status, _, body = raw_request(client.app, path, headers={"Cookie": f"{COOKIE_NAME}={cookie}"})
        assert status == 401, (path, status, body[:200])


def test_the_longest_token_signs_in(manager: LocalCreditManager, seeded: str) -> None:
    longest = "t" * 256
    with TestClient(
        create_app(manager, config=DashboardConfig(tokens={OPERATOR: longest})), follow_redirects=False
    ) as c:
        login(c, longest)
        assert c.get("/accounts").status_code == 200
        r = c.post("/login", data={"token": longest + "t"}, headers={"Origin": "http://testserver"})
        assert r.status_code == 400 and not r.cookies.get(COOKIE_NAME)


def test_a_sign_in_from_another_origin_says_so(client: TestClient) -> None:
    r = client.post("/login", data={"token": TOKEN}, headers={"Origin": "http://proxy.internal"})
    assert r.status_code == 403 and "Origin and Host differ" in r.text
    assert not client.cookies.get(COOKIE_NAME)
    r = client.post("/login", data={"token": OTHER_TOKEN}, headers={"Origin": "http://testserver"})
    assert r.status_code == 401 and "not valid" in r.text


def test_json_refuses_a_table_parameter(client: TestClient) -> None:
    r = client.get("/?format=json&table=daily", headers=bearer())
    assert r.status_code == 400 and "only for format=csv" in r.json()["error"]


def test_the_account_page_links_to_the_rest_of_its_events(manager: LocalCreditManager, client: TestClient) -> None:
    for n in range(12):  # two events each: key.created, key.revoked
        manager.revoke_api_key(manager.create_api_key("alice", f"k{n}").key_id)
    page = client.get("/account?user=alice&format=json", headers=bearer()).json()
    events = page["tables"]["events"]
    assert len(events["rows"]) == 20 and events["next"] == {"user": "alice"}
    html = client.get("/account?user=alice", headers=bearer()).text
    assert 'href="/events?user=alice">More' in html


def test_an_organisation_shows_its_member_and_project_budgets(manager: LocalCreditManager, client: TestClient) -> None:
    manager.record_payment("acme", "pay_acme", 1000)
    manager.add_member("acme", "dana")
    manager.create_project("acme", "search")
    manager.set_budget("acme", member="dana", limit=300, window="daily")
    manager.set_budget("acme", project="search", limit=700)
    rows = client.get("/account?user=acme&format=json", headers=bearer()).json()["tables"]["budgets"]["rows"]
    assert [(r["scope"], r["name"], r["limit"], r["window"]) for r in rows] == [
        ("member", "dana", "300", "daily"),
        ("project", "search", "700", "monthly"),
    ]
    assert "Budgets of members and projects" in client.get("/account?user=acme", headers=bearer()).text
    assert "Budgets of members and projects" not in client.get("/account?user=alice", headers=bearer()).text


def test_admin_actions_need_the_session_csrf_token_and_the_same_origin(
    manager: LocalCreditManager, admin_client: TestClient
) -> None:
    login(admin_client)
    form = grant_form(admin_client)
    before = Ledger.of(manager)
    refused: list[tuple[dict[str, str], dict[str, str]]] = [
        ({k: v for k, v in form.items() if k != "csrf"}, SAME_ORIGIN),
        ({**form, "csrf": "0" * 64}, SAME_ORIGIN),
        ({**form, "csrf": form["csrf"][:-1]}, SAME_ORIGIN),
        ({**form, "csrf": ""}, SAME_ORIGIN),
        (form, {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}),
        (form, {"Origin": "http://evil.example"}),
        (form, {"Origin": "http://testserver:8080"}),
        (form, {"Origin": "null"}),
        (form, {"Sec-Fetch-Site": "cross-site"}),
        (form, {"Sec-Fetch-Site": "same-site"}),
    ]
    for data, headers in refused:
        r = admin_client.post("/actions/grant", data=data, headers=headers)
        assert r.status_code == 403, (data, headers, r.text)
    # Unauthenticated (the cookie gone), the action is 401 even with a valid-looking form.
    cookie = admin_client.cookies.get(COOKIE_NAME) or ""
    admin_client.cookies.clear()
    assert admin_client.post("/actions/grant", data=form, headers=SAME_ORIGIN).status_code == 401
    admin_client.cookies.set(COOKIE_NAME, cookie)
    assert Ledger.of(manager) == before

    r = admin_client.post("/actions/grant", data=form, headers=SAME_ORIGIN)
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/account?user=alice"
    entry = manager.transactions("alice", limit=1)[0]
    assert (entry.kind, entry.amount) == ("grant", Decimal("12.5"))
    assert entry.metadata == {"reason": "support", "operator": OPERATOR}
    assert manager.get_balance("alice") == before.balances["alice"] + Decimal("12.5")
    # The same form again (a double click, a reload) is the same grant: the nonce is its idempotency key.
    assert admin_client.post("/actions/grant", data=form, headers=SAME_ORIGIN).status_code == 303
    assert manager.get_balance("alice") == before.balances["alice"] + Decimal("12.5")
    assert manager.audit().ok
    # The grant shows on the account page with the operator's name.
    page = admin_client.get("/account?user=alice&format=json").json()
    newest = page["tables"]["transactions"]["rows"][0]
    assert (newest["kind"], newest["amount"], newest["operator"]) == ("grant", "12.5", OPERATOR)


def test_a_reused_nonce_with_other_figures_is_refused(manager: LocalCreditManager, admin_client: TestClient) -> None:
    """The nonce is the grant's idempotency key: a form replayed with another amount is a conflict,
    never a second grant nor a silent replay of the first."""
    data = {"user": "bob", "amount": "3", "nonce": "c" * 24}
    assert admin_client.post("/actions/grant", data=data, headers=bearer()).status_code == 303
    before = Ledger.of(manager)
    r = admin_client.post("/actions/grant", data={**data, "amount": "300"}, headers=bearer())
    assert r.status_code == 409 and "already submitted" in r.text, r.text
    assert Ledger.of(manager) == before


def test_the_longest_operator_name_can_act(manager: LocalCreditManager, seeded: str) -> None:
    operator = "o" * 64
    config = DashboardConfig(tokens={operator: TOKEN}, admin=True)
    with TestClient(create_app(manager, config=config), follow_redirects=False) as c:
        r = c.post("/actions/grant", data={"user": "carol", "amount": "1", "nonce": "d" * 24}, headers=bearer())
        assert r.status_code == 303, r.text
    assert manager.transactions("carol", limit=1)[0].metadata == {"operator": operator}


def test_key_actions_write_the_operator_into_the_event(
    manager: LocalCreditManager, admin_client: TestClient, seeded: str
) -> None:
    login(admin_client)
    csrf = grant_form(admin_client)["csrf"]
    last = max((e.id for e in manager.events(0, 1000)), default=0)
    steps = [
        ("disable-key", {}, "key.disabled"),
        ("enable-key", {}, "key.enabled"),
        ("key-limit", {"limit": "25", "window": "weekly"}, "key.limit_set"),
        ("revoke-key", {}, "key.revoked"),
    ]
    for action, extra, kind in steps:
        data = {"csrf": csrf, "user": "alice", "key_id": seeded, **extra}
        r = admin_client.post(f"/actions/{action}", data=data, headers=SAME_ORIGIN)
        assert r.status_code == 303, (action, r.text)
        new = manager.events(last, 100)
        assert [e.kind for e in new] == [kind], action
        assert new[0].data.get("operator") == OPERATOR, new[0].data
        last = new[0].id
    key = manager.list_api_keys("alice")[0]
    assert key.revoked_at is not None
    assert (key.spend_limit, key.spend_window) == (Decimal(25), "weekly")


def test_a_bearer_token_may_act_without_a_csrf_token(manager: LocalCreditManager, admin_client: TestClient) -> None:
    data = {"user": "bob", "amount": "3", "nonce": "b" * 24}
    r = admin_client.post("/actions/grant", data=data, headers=bearer())
    assert r.status_code == 303, r.text
    assert manager.transactions("bob", limit=1)[0].metadata == {"operator": OPERATOR}


@pytest.mark.parametrize(
    "action, data, statuses",
    [
        ("grant", {"user": "alice", "amount": "0", "nonce": "n" * 20}, {400}),
        ("grant", {"user": "alice", "amount": "-5", "nonce": "n" * 20}, {400}),
        ("grant", {"user": "alice", "amount": "1e3", "nonce": "n" * 20}, {400}),
        ("grant", {"user": "alice", "amount": "NaN", "nonce": "n" * 20}, {400}),
        ("grant", {"user": "alice", "amount": "5", "nonce": "short"}, {400}),
        ("grant", {"user": "alice", "amount": "5"}, {400}),
        ("grant", {"user": "alice", "amount": "5", "nonce": "n" * 20, "kind": "purchase"}, {400}),
        ("key-limit", {"user": "alice", "key_id": "KEY", "limit": "5", "window": "hourly"}, {400}),
        ("revoke-key", {"user": "bob", "key_id": "KEY"}, {404}),  # not bob's key
        ("revoke-key", {"user": "alice", "key_id": "no-such-key"}, {400, 404}),
        ("delete-account", {"user": "alice"}, {404}),
    ],
)
def test_bad_admin_forms_are_4xx_and_change_nothing(
    manager: LocalCreditManager,
    admin_client: TestClient,
    seeded: str,
    action: str,
    data: dict[str, str],
    statuses: set[int],
) -> None:
    before = Ledger.of(manager)
    data = {k: v.replace("KEY", seeded) for k, v in data.items()}
    r = admin_client.post(f"/actions/{action}", data=data, headers={**bearer(), "Accept": "application/json"})
    assert r.status_code in statuses, r.text
    assert r.json()["status"] == r.status_code
    assert Ledger.of(manager) == before
    assert manager.list_api_keys("alice")[0].revoked_at is None


def test_a_form_over_the_limit_is_413(manager: LocalCreditManager, admin_client: TestClient) -> None:
    before = Ledger.of(manager)
    data = {"user": "alice", "amount": "5", "nonce": "n" * 20, "reason": "r" * 9000}
    r = admin_client.post("/actions/grant", data=data, headers=bearer())
    assert r.status_code == 413
    assert Ledger.of(manager) == before


# ----- hostile query strings --------------------------------------------------------------------

HOSTILE: list[tuple[str, bytes, set[int]]] = [
    ("/", b"days=1&" + b"x" * 2100, {414}),
    ("/accounts", b"q=" + b"a" * 2047, {414}),
    ("/accounts", b"q=%ff", {400}),
    ("/accounts", b"q=%c3%28", {400}),
    ("/events", b"user=%ed%a0%80", {400}),  # an encoded surrogate
    ("/accounts", b"q=\xff\xfe", {400}),
    ("/accounts", "q=café".encode(), {400}),
    ("/account", "user=ålice".encode(), {400}),
    ("/accounts", b"q=a&q=b", {400}),
    ("/", b"days=7&days=7", {400}),
    ("/", b"day=7", {400}),
    ("/accounts", b"page=2&pgae=3", {400}),
    ("/events", b"kind=x&format=json&format=csv", {400}),
    ("/accounts", b"q=%00", {400}),
    ("/accounts", b"q=a%0d%0aSet-Cookie:x=1", {400}),
    ("/accounts", b"page=-1", {400}),
    ("/accounts", b"page=0", {400}),
    ("/accounts", b"page=99999999999999999999", {400}),
    ("/accounts", b"page=1e3", {400}),
    ("/accounts", b"page=%EF%BC%91", {400}),  # a fullwidth digit one: isdigit() but not ASCII
    ("/accounts", b"below=-1", {400}),
    ("/accounts", b"below=1e400", {400}),
    ("/accounts", b"order=balance;DROP", {400}),
    ("/events", b"before=-5", {400}),
    ("/events", b"before=0", {400}),
    ("/events", b"before=9223372036854775808", {400}),
    ("/", b"since=2024-02-30", {400}),
    ("/", b"since=2024-1-1", {400}),
    ("/", b"since=20240101", {400}),
    ("/", b"since=0001-01-01", {400}),
    ("/", b"until=9999-12-31", {400}),
    ("/", b"since=2024-03-02&until=2024-03-01", {400}),
    ("/", b"since=2020-01-01&until=2024-01-01", {400}),
    ("/", b"since=2024-01-01&days=7", {400}),
    ("/models", b"days=0", {400}),
    ("/", b"days=367", {400}),
    ("/", b"days=-1", {400}),
    ("/", b"days=abc", {400}),
    ("/", b"format=xml", {400}),
    ("/", b"format=csv", {400}),  # three tables: which one?
    ("/", b"format=csv&table=nope", {400}),
    ("/", b"table=daily", {400}),
    ("/account", b"", {400}),
    ("/account", b"user=nobody", {404}),
    ("/account", b"user=alice&before=%27%20OR%201%3D1--", {400, 404}),
]


@pytest.mark.parametrize("authenticated", [True, False], ids=["bearer", "anonymous"])
def test_hostile_query_strings_are_4xx_and_change_nothing(
    manager: LocalCreditManager, client: TestClient, authenticated: bool
) -> None:
    app = client.app
    before = Ledger.of(manager)
    headers = bearer() if authenticated else {}
    for path, query, statuses in HOSTILE:
        status, heads, body = raw_request(app, path, query, headers=headers)
        # Anonymous: refused before any parameter is looked at.
        expected = statuses if authenticated else {401}
        assert status in expected, (path, query, status, body[:300])
        assert status < 500
        assert b"alice" not in body or path == "/account"
        if authenticated:
            assert b"Traceback" not in body
    assert Ledger.of(manager) == before


RAW_QUERIES = (b"q=\xff", b"format=json&q=\xff\xfe", "q=café".encode(), b"\x80")
RAW_TARGETS = [("GET", p) for p in ("/accounts", "/accounts/", "/nowhere", "/login", "/static/dashboard.css")]
RAW_TARGETS += [("POST", "/login"), ("POST", "/actions/grant")]


@pytest.mark.parametrize("authenticated", [True, False], ids=["bearer", "anonymous"])
def test_raw_non_utf8_bytes_are_never_a_500(
    manager: LocalCreditManager, admin_client: TestClient, authenticated: bool
) -> None:
    """Sent raw (not percent-encoded), as a hand-made request may be: every answer stays 4xx or a
    page that ignores the query, and error pages still render (no crash while building one)."""
    before = Ledger.of(manager)
    headers = bearer() if authenticated else {}
    for query in RAW_QUERIES:
        for method, path in RAW_TARGETS:
            status, _, body = raw_request(admin_client.app, path, query, method=method, headers=headers)
            assert status < 500, (method, path, query, status, body[:300])
            assert b"internal error" not in body
    assert Ledger.of(manager) == before


def test_valid_edges_are_accepted(client: TestClient) -> None:
    for path in (
        "/?days=1",
        "/?days=366",
        "/models?days=366",
        "/accounts?page=1&order=-balance",
        "/?since=2024-02-29&until=2024-03-01",
    ):
        r = client.get(path, headers=bearer())
        assert r.status_code == 200, (path, r.text)
    # Unknown pages and methods are 404/405, not 500.
    assert client.get("/nowhere", headers=bearer()).status_code == 404
    assert client.delete("/", headers=bearer()).status_code == 405
    assert client.get("/actions/grant", headers=bearer()).status_code == 405


INJECTION = [
    "' OR '1'='1",
    "'; DROP TABLE creditgate_accounts; --",
    '" OR 1=1 --',
    "%' OR user_id LIKE '%",
    "alice' UNION SELECT user_id, balance FROM creditgate_accounts --",
    "\\' OR 1=1 #",
    "_",
    "%",
]


@pytest.mark.parametrize("value", INJECTION)
def test_sql_looking_values_match_nothing_and_change_nothing(
    manager: LocalCreditManager, client: TestClient, value: str
) -> None:
    before = Ledger.of(manager)
    for path, name in (("/accounts", "q"), ("/account", "user"), ("/events", "user"), ("/events", "kind")):
        r = client.get(path, params={name: value, "format": "json"}, headers=bearer())
        assert r.status_code in (200, 400, 404), (path, name, r.text)
        if r.status_code == 200:
            rows = [row for t in r.json()["tables"].values() for row in t["rows"]]
            assert rows == [], (path, name, rows)
    assert Ledger.of(manager) == before
    # The ledger still answers normally afterwards.
    assert len(page_json(client, "/accounts")["tables"]["accounts"]["rows"]) == len(USERS)


# ----- what the pages say -----------------------------------------------------------------------


def figures(body: dict[str, Any]) -> dict[str, Any]:
    return {row["figure"]: row["value"] for row in body["tables"]["figures"]["rows"]}


def test_json_figures_equal_the_report(manager: LocalCreditManager, client: TestClient) -> None:
    r = manager.report()
    shown = figures(page_json(client, "/"))
    assert Decimal(shown["Credits purchased"]) == r.credits_purchased == Decimal(7500)
    assert Decimal(shown["Credits used"]) == r.credits_used
    assert Decimal(shown["Outstanding balance"]) == r.outstanding_balance
    assert Decimal(shown["Overdraft receivable"]) == r.overdraft_receivable
    assert Decimal(shown["Revenue (USD)"]) == Decimal(r.revenue_usd_minor) / 100 == Decimal("7.5")
    assert (shown["Users"], shown["Paying users"]) == (r.users, r.paying_users) == (3, 2)
    # small: 2 × 0.5 + 1 × 1.5 = 2.5; large: 1 × 2 + 0.5 × 6 = 5; a deduct of 7 is used but no model's.
    assert r.credits_used == Decimal("14.5")
    body = page_json(client, "/")
    daily = body["tables"]["daily"]["rows"]
    assert len(daily) == 30
    assert sum(Decimal(d["purchased"]) for d in daily) == r.credits_purchased
    assert sum(Decimal(d["used"]) for d in daily) == r.credits_used
    by_model = {row["model"]: Decimal(row["credits"]) for row in body["tables"]["models"]["rows"]}
    assert by_model == {"small": Decimal("2.5"), "large": Decimal(5)}
    # The account page's figures are the account's.
    account = manager.account("alice")
    rows = page_json(client, "/account?user=alice")["tables"]["summary"]["rows"]
    summary = {row["figure"]: Decimal(row["value"]) for row in rows}
    assert summary["Balance"] == account.balance == Decimal("4992.5")
    assert summary["Used (lifetime)"] == account.lifetime_used


def test_csv_cells_cannot_start_a_formula(manager: LocalCreditManager, client: TestClient) -> None:
    hostile = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tX", "=1"]
    for user in hostile:
        manager.add_credits(user, 1, kind="grant")
    r = client.get("/accounts?format=csv", headers=bearer())
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert 'filename="accounts-accounts.csv"' in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0][:2] == ["user_id", "balance (credits)"]
    users = {row[0] for row in rows[1:]}
    assert users == {"'" + u for u in hostile} | set(USERS)
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "@", "\t")), row
    # Numbers are not text: a negative amount keeps its sign in CSV (it is not a formula).
    r = client.get("/account?user=bob&format=csv&table=transactions", headers=bearer())
    amounts = [row[2] for row in csv.reader(io.StringIO(r.text))][1:]
    assert "-7" in amounts


def test_html_escapes_user_ids(manager: LocalCreditManager, client: TestClient) -> None:
    manager.add_credits('<script>alert("x")</script>', 1, kind="grant")
    r = client.get("/accounts", headers=bearer())
    assert r.status_code == 200
    assert "<script>" not in r.text
    assert "&lt;script&gt;" in r.text


# ----- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tokens",
    [
        {},
        {"operator": ""},
        {"operator": "short"},
        {"operator": "x" * 23},
        {"operator": "x" * 257},
        {"operator": TOKEN + "!"},
        {"operator": TOKEN.replace("-", " ")},
        {"a": TOKEN, "b": TOKEN},
        {"bad name": TOKEN},
        {"": TOKEN},
        {"x" * 65: TOKEN},
    ],
)
def test_config_refuses_missing_short_or_shared_tokens(tokens: dict[str, str]) -> None:
    with pytest.raises(DashboardConfigError):
        DashboardConfig(tokens=tokens)


def test_config_from_env() -> None:
    c = DashboardConfig.from_env({"CREDITGATE_DASHBOARD_TOKEN": TOKEN})
    assert (c.operator_for(TOKEN), c.admin) == ("operator", False)
    c = DashboardConfig.from_env({"CREDITGATE_DASHBOARD_TOKEN": f"ann:{TOKEN}, bo:{OTHER_TOKEN}"})
    assert (c.operator_for(TOKEN), c.operator_for(OTHER_TOKEN), c.operator_for("x" * 40)) == ("ann", "bo", None)
    assert TOKEN not in repr(c) and OTHER_TOKEN not in repr(c)
    for flag, admin in (("1", True), ("true", True), ("YES", True), ("0", False), ("off", False), ("", False)):
        env = {"CREDITGATE_DASHBOARD_TOKEN": TOKEN, "CREDITGATE_DASHBOARD_ADMIN": flag}
        assert DashboardConfig.from_env(env).admin is admin, flag
    assert len(new_token()) == 43 and DashboardConfig(tokens={"x": new_token()}).admin is False


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"CREDITGATE_DASHBOARD_TOKEN": ""},
        {"CREDITGATE_DASHBOARD_TOKEN": " , "},
        {"CREDITGATE_DASHBOARD_TOKEN": "tooshort"},
        {"CREDITGATE_DASHBOARD_TOKEN": f"a:{TOKEN},a:{OTHER_TOKEN}"},
        {"CREDITGATE_DASHBOARD_TOKEN": f"a:{TOKEN},b:{TOKEN}"},
        {"CREDITGATE_DASHBOARD_TOKEN": TOKEN, "CREDITGATE_DASHBOARD_ADMIN": "2"},
        {"CREDITGATE_DASHBOARD_TOKEN": TOKEN, "CREDITGATE_DASHBOARD_ADMIN": "maybe"},
        {"CREDITGATE_DASHBOARD_TOKEN": TOKEN, "CREDITGATE_DASHBOARD_ADMIN": "enabled"},
    ],
)
def test_config_from_env_refuses_bad_values(env: dict[str, str]) -> None:
    with pytest.raises(DashboardConfigError):
        DashboardConfig.from_env(env)


def test_create_app_without_a_token_does_not_start(
    manager: LocalCreditManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDITGATE_DASHBOARD_TOKEN", raising=False)
    with pytest.raises(DashboardConfigError):
        create_app(manager)


# ----- mounted under a host app -----------------------------------------------------------------


def test_mounted_under_a_prefix_links_and_cookie_carry_it(manager: LocalCreditManager, seeded: str) -> None:
    host = FastAPI()
    host.mount("/ops", create_app(manager, config=DashboardConfig(tokens={OPERATOR: TOKEN}, admin=True)))
    with TestClient(host, follow_redirects=False) as c:
        r = c.get("/ops/")
        assert r.status_code == 401
        assert 'action="/ops/login"' in r.text
        assert 'href="/ops/static/dashboard.css"' in r.text
        r = c.post("/ops/login", data={"token": TOKEN}, headers={"Origin": "http://testserver"})
        assert r.status_code == 303, r.text
        assert r.headers["location"] == "/ops/"
        assert "path=/ops/" in r.headers["set-cookie"].lower()
        page = c.get("/ops/")
        assert page.status_code == 200, page.text
        links = re.findall(r'(?:href|action)="(?!data:)([^"]*)"', page.text)
        assert links and all(link.startswith("/ops/") for link in links), links
        for path in ("/ops/accounts", "/ops/models", "/ops/events", "/ops/account?user=alice"):
            r = c.get(path)
            assert r.status_code == 200, (path, r.text)
            links = re.findall(r'(?:href|action)="(?!data:)([^"]*)"', r.text)
            assert all(link.startswith("/ops/") for link in links), (path, links)
        assert c.get("/ops/static/dashboard.css").status_code == 200
        # An admin action redirects back under the prefix.
        form = grant_form_at(c, "/ops")
        r = c.post("/ops/actions/grant", data=form, headers=SAME_ORIGIN)
        assert r.status_code == 303, r.text
        assert r.headers["location"] == "/ops/account?user=alice"
        # The host's own routes are untouched: the dashboard's cookie is not sent outside /ops/.
        assert c.get("/").status_code == 404
        r = c.post("/ops/logout")
        assert r.headers["location"] == "/ops/login"
        assert "path=/ops/" in r.headers["set-cookie"].lower()


def grant_form_at(c: TestClient, prefix: str) -> dict[str, str]:
    page = c.get(f"{prefix}/account?user=alice")
    csrf, nonce = CSRF.search(page.text), NONCE.search(page.text)
    assert csrf is not None and nonce is not None
    assert f'action="{prefix}/actions/grant"' in page.text
    return {"csrf": csrf.group(1), "nonce": nonce.group(1), "user": "alice", "amount": "1"}


def test_json_is_exact_and_parseable(client: TestClient) -> None:
    body = page_json(client, "/account?user=alice")
    assert body["page"] == "account"
    # Decimal credits are strings (exact), counts are numbers.
    rows = body["tables"]["transactions"]["rows"]
    assert all(isinstance(row["amount"], str) for row in rows)
    assert all(isinstance(row["seq"], int) for row in rows)
    json.dumps(body)  # round-trips
