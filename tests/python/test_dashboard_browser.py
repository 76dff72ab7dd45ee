"""The operator dashboard in a real browser: headless Chromium (Debian's chromium and
chromium-driver, installed by scripts/test-python.sh) driven by selenium against the dashboard
served by uvicorn in a subprocess, over a ledger seeded through the public API.

Checks what only a browser shows: signing in through the form, every page loading without a
console error (a Content-Security-Policy violation, a missing resource), the numbers on the
charts against figures computed here from what was seeded, light and dark mode (screenshots in
``CREDITGATE_TEST_ARTIFACTS``, default ``target/test-artifacts/dashboard/``), and admin actions:
absent and refused when off, a grant through the form when on, recorded with the operator's name.
Runs on SQLite and PostgreSQL (``CREDITGATE_TEST_BACKEND``)."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import IS_POSTGRES, psql, server_url, with_database
from creditgate import LocalCreditManager
from creditgate.dashboard.access import COOKIE_NAME
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TOKEN = "browser-test-token-" + uuid.uuid4().hex  # URL-safe, 51 characters
ADMIN_TOKEN = "browser-admin-token-" + uuid.uuid4().hex
ADMIN_OPERATOR = "ops-admin"
WIDTH, HEIGHT = 1280, 900
PAGES = {
    "overview": "/",
    "accounts": "/accounts",
    "account": "/account?user=alice",
    "models": "/models",
    "events": "/events",
}
TITLES = {"overview": "Overview", "accounts": "Accounts", "account": "Account alice", "models": "Models and prices"}
TITLES["events"] = "Events"
# The page's background (base.html's --bg) in each mode, as the browser reports it.
BACKGROUND = {"light": "rgb(255, 255, 255)", "dark": "rgb(13, 17, 23)"}
# Credits per 1,000 input and output tokens of each model.
PRICES = {"small": (Decimal("0.5"), Decimal("1.5")), "large": (Decimal(2), Decimal(6))}
CREDITS_PER_USD = 1000  # the ledger's default rate (CREDITS_PER_USD unset)


@dataclass
class Seeded:
    """What the test put into the ledger, summed here (not by the ledger) per UTC day and model."""

    purchased: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    used: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    by_model: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))


def utc_day(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d")


def seed(m: LocalCreditManager) -> Seeded:
    """Purchases (payments and purchase credits), a grant (neither purchased nor used), usage of
    two models, a deduct (used, but no model's), a hold and a disabled key."""
    s = Seeded()
    for model, (per_input, per_output) in PRICES.items():
        m.set_model_price(model, per_input, per_output)
    for user, payment, minor in (("alice", "pay_a1", 500), ("bob", "pay_b1", 1250), ("alice", "pay_a2", 199)):
        entry = m.record_payment(user, payment, minor)
        credits = Decimal(minor) * CREDITS_PER_USD / 100
        assert entry.amount == credits
        s.purchased[utc_day(entry.created_at)] += credits
    entry = m.add_credits("dave", Decimal("5333.25"), kind="purchase", reference="invoice-7")
    s.purchased[utc_day(entry.created_at)] += Decimal("5333.25")
    m.add_credits("carol", 100, kind="grant")
    keys = {user: m.create_api_key(user, "main").secret for user in ("alice", "bob", "dave")}
    usages = [
        ("alice", "small", 2000, 1000),
        ("alice", "large", 1000, 500),
        ("bob", "small", 12000, 3000),
        ("dave", "large", 250, 250),
        ("dave", "small", 100, 0),
    ]
    for user, model, inp, out in usages:
        charge = m.record_usage(keys[user], input_tokens=inp, output_tokens=out, model=model)
        credits = (inp * PRICES[model][0] + out * PRICES[model][1]) / 1000
        assert charge.charged == credits
        day = next(utc_day(e.created_at) for e in m.transactions(user, limit=10) if e.id == charge.entry_id)
        s.used[day] += credits
        s.by_model[model] += credits
    entry = m.deduct_credits("bob", 42)
    s.used[utc_day(entry.created_at)] += 42
    m.reserve(keys["alice"], credits=10)
    m.disable_api_key(m.create_api_key("bob", "old").key_id)
    return s


# ----- the ledger, the servers and the browser ----------------------------------------------------


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One ledger for the module (the browser and servers are module-wide too)."""
    if not IS_POSTGRES:
        yield f"sqlite:///{tmp_path_factory.mktemp('dashboard') / 'ledger.db'}"
        return
    admin = server_url()
    name = f"cg_py_browser_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    psql(admin, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(admin, name)
    finally:
        psql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def ledger(db_url: str) -> LocalCreditManager:
    return LocalCreditManager(db_url)


@pytest.fixture(scope="module")
def seeded(ledger: LocalCreditManager) -> Seeded:
    return seed(ledger)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def serve(db_url: str, token: str, admin: bool, log: Path) -> Iterator[str]:
    """The dashboard under uvicorn in a subprocess, configured from the environment as in
    production; yields its base URL once it answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREDITGATE_", "DATABASE_URL"))}
    env.update(
        DATABASE_URL=db_url,
        CREDITGATE_DASHBOARD_TOKEN=token,
        CREDITGATE_DASHBOARD_ADMIN="1" if admin else "0",
    )
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", "creditgate.dashboard:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd="/")
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the dashboard server exited ({proc.returncode}):\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{base}/login", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the dashboard server did not answer within 30 s:\n{log.read_text()}")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    errors = [line for line in log.read_text().splitlines() if "Traceback" in line or "ERROR" in line]
    assert not errors, log.read_text()


@pytest.fixture(scope="module")
def server(db_url: str, seeded: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve(db_url, TOKEN, False, tmp_path_factory.mktemp("server") / "uvicorn.log")


@pytest.fixture(scope="module")
def admin_server(db_url: str, seeded: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    token = f"{ADMIN_OPERATOR}:{ADMIN_TOKEN}"
    yield from serve(db_url, token, True, tmp_path_factory.mktemp("admin") / "uvicorn.log")


@pytest.fixture(scope="module")
def driver() -> Iterator[webdriver.Chrome]:
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not os.access(binary, os.X_OK):
            # Fail, never skip: scripts/test-python.sh installs them (Debian's chromium, chromium-driver).
            pytest.fail(f"{binary} not found: apt-get install chromium chromium-driver (scripts/test-python.sh does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={WIDTH},{HEIGHT}"):
        options.add_argument(argument)
    options.add_argument("--hide-scrollbars")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        d.set_page_load_timeout(30)
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics())
        yield d
    finally:
        d.quit()


def metrics() -> dict[str, object]:
    return {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False}


@pytest.fixture(scope="module")
def artifacts() -> Path:
    out = Path(os.environ.get("CREDITGATE_TEST_ARTIFACTS") or ROOT / "target" / "test-artifacts" / "dashboard")
    out.mkdir(parents=True, exist_ok=True)
    return out


# ----- helpers ----------------------------------------------------------------------------------


def read_log(d: webdriver.Chrome, kind: str) -> list[dict[str, Any]]:
    """The entries of a Chromium log (``browser``: the console) since the last read; reading empties it."""
    entries: list[dict[str, Any]] = d.get_log(kind)  # type: ignore[no-untyped-call]
    return entries


def console_errors(d: webdriver.Chrome) -> list[dict[str, Any]]:
    """The browser console's errors since the last call."""
    return [entry for entry in read_log(d, "browser") if entry.get("level") == "SEVERE"]


def document_statuses(d: webdriver.Chrome) -> list[tuple[str, int]]:
    """(url, HTTP status) of every document the browser received since the last call."""
    out = []
    for entry in read_log(d, "performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.responseReceived" and message["params"].get("type") == "Document":
            response = message["params"]["response"]
            out.append((response["url"], int(response["status"])))
    return out


def open_page(d: webdriver.Chrome, url: str) -> None:
    """Loads ``url``: it must arrive with status 200 and log no console error."""
    console_errors(d), document_statuses(d)  # drop what came before
    d.get(url)
    statuses = document_statuses(d)
    assert statuses and statuses[-1] == (url, 200), statuses
    assert console_errors(d) == []
    assert d.find_elements(By.CSS_SELECTOR, "p.error") == []


def sign_in(d: webdriver.Chrome, base: str, token: str) -> None:
    d.delete_all_cookies()
    open_page(d, f"{base}/login")
    d.find_element(By.NAME, "token").send_keys(token)
    d.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    WebDriverWait(d, 15).until(lambda d: d.current_url == f"{base}/")
    assert d.find_element(By.TAG_NAME, "h1").text == "Overview"
    assert console_errors(d) == []


def set_scheme(d: webdriver.Chrome, scheme: str) -> None:
    features = [{"name": "prefers-color-scheme", "value": scheme}]
    d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": features})


def bars(d: webdriver.Chrome, chart: str) -> list[WebElement]:
    return d.find_elements(By.CSS_SELECTOR, f"figure#{chart}-chart rect.cg-bar")


def bar_values(d: webdriver.Chrome, chart: str) -> dict[tuple[str, str], Decimal]:
    out = {}
    for bar in bars(d, chart):
        key = (bar.get_attribute("data-series") or "", bar.get_attribute("data-category") or "")
        assert key not in out, key
        out[key] = Decimal(bar.get_attribute("data-value") or "NaN")
    return out


def first_pixel(png: bytes) -> tuple[int, int, int]:
    """The top-left pixel's RGB of an 8-bit RGB(A) PNG. No image library: whatever the row's filter
    (none, sub, up, average, paeth), the first pixel of the first row is stored as it is, because
    every predictor of it is 0."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        header = data if kind == b"IHDR" else header
        idat += data if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert (depth, colour) in ((8, 2), (8, 6)), (depth, colour)
    row = zlib.decompressobj().decompress(idat, 1 + 4)
    return row[1], row[2], row[3]


def post(url: str, form: dict[str, str], headers: dict[str, str]) -> int:
    data = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


# ----- the tests --------------------------------------------------------------------------------


def test_unauthenticated_the_browser_gets_the_login_form(driver: webdriver.Chrome, server: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{server}/accounts")
    assert driver.find_element(By.TAG_NAME, "h1").text == "Sign in"
    assert "alice" not in driver.page_source
    assert (f"{server}/accounts", 401) in document_statuses(driver)
    console_errors(driver)  # Chromium reports the 401 of the document itself: expected here
    # A wrong token: the form again, with the error, and no cookie.
    open_page(driver, f"{server}/login")
    driver.find_element(By.NAME, "token").send_keys("x" * 40)
    driver.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    WebDriverWait(driver, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, "p.error"))
    assert driver.find_element(By.CSS_SELECTOR, "p.error").text == "That token is not valid."
    assert driver.get_cookie(COOKIE_NAME) is None


def test_sign_in_through_the_form(driver: webdriver.Chrome, server: str) -> None:
    sign_in(driver, server, TOKEN)
    cookie = driver.get_cookie(COOKIE_NAME)
    assert cookie is not None
    assert (cookie["httpOnly"], cookie["path"], cookie["sameSite"]) == (True, "/", "Strict")
    assert TOKEN not in driver.page_source
    assert "operator · read-only" in driver.find_element(By.CSS_SELECTOR, "header .who").text


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_loads_cleanly_in_light_and_dark(
    driver: webdriver.Chrome, server: str, artifacts: Path, name: str
) -> None:
    if driver.get_cookie(COOKIE_NAME) is None:
        sign_in(driver, server, TOKEN)
    shots = {}
    for scheme in ("light", "dark"):
        set_scheme(driver, scheme)
        open_page(driver, f"{server}{PAGES[name]}")
        assert driver.find_element(By.TAG_NAME, "h1").text == TITLES[name]
        assert driver.execute_script("return getComputedStyle(document.body).backgroundColor") == BACKGROUND[scheme]
        assert driver.execute_script("return matchMedia('(prefers-color-scheme: dark)').matches") is (scheme == "dark")
        # The stylesheet applied (not blocked by the CSP): the header is a flex row.
        assert driver.find_element(By.CSS_SELECTOR, "header.top").value_of_css_property("display") == "flex"
        path = artifacts / f"{name}-{scheme}.png"
        path.unlink(missing_ok=True)
        assert driver.save_screenshot(str(path))
        assert console_errors(driver) == []
        shots[scheme] = path.read_bytes()
    set_scheme(driver, "light")
    assert all(len(png) > 1000 for png in shots.values())
    assert shots["light"] != shots["dark"]
    light, dark = first_pixel(shots["light"]), first_pixel(shots["dark"])
    assert sum(light) > 3 * 200 and sum(dark) < 3 * 60, (light, dark)  # the header: light panel, dark panel


def test_daily_chart_shows_the_seeded_purchases_and_usage(
    driver: webdriver.Chrome, server: str, seeded: Seeded
) -> None:
    if driver.get_cookie(COOKIE_NAME) is None:
        sign_in(driver, server, TOKEN)
    open_page(driver, f"{server}/?days=30")
    shown = bar_values(driver, "daily")
    days = sorted({day for _, day in shown})
    assert len(days) == 30 and days[-1] == utc_day(datetime.now(timezone.utc))
    assert set(seeded.purchased) | set(seeded.used) <= set(days)
    expected = {("Purchased", day): seeded.purchased.get(day, Decimal(0)) for day in days}
    expected.update({("Used", day): seeded.used.get(day, Decimal(0)) for day in days})
    assert shown == expected
    assert sum(seeded.purchased.values()) == Decimal("24823.25")  # 5,000 + 12,500 + 1,990 + 5,333.25
    # The same figures in the table under the chart, as people read them (thousands separators).
    rows = driver.find_elements(By.CSS_SELECTOR, "section#daily tbody tr")
    table = {}
    for row in rows:
        day, purchased, used = (cell.text for cell in row.find_elements(By.TAG_NAME, "td")[:3])
        table[("Purchased", day)] = Decimal(purchased.replace(",", ""))
        table[("Used", day)] = Decimal(used.replace(",", ""))
    assert table == expected


@pytest.mark.parametrize("path", ["/", "/models"])
def test_model_chart_shows_the_seeded_usage(driver: webdriver.Chrome, server: str, seeded: Seeded, path: str) -> None:
    if driver.get_cookie(COOKIE_NAME) is None:
        sign_in(driver, server, TOKEN)
    open_page(driver, f"{server}{path}")
    shown = bar_values(driver, "models")
    assert shown == {("Used", model): credits for model, credits in seeded.by_model.items()}
    # small: (2000·0.5 + 1000·1.5 + 12000·0.5 + 3000·1.5 + 100·0.5) / 1000;
    # large: (1000·2 + 500·6 + 250·2 + 250·6) / 1000.
    assert seeded.by_model == {"small": Decimal("13.05"), "large": Decimal(7)}


def test_admin_off_no_forms_and_posts_refused(
    driver: webdriver.Chrome, server: str, ledger: LocalCreditManager
) -> None:
    if driver.get_cookie(COOKIE_NAME) is None:
        sign_in(driver, server, TOKEN)
    open_page(driver, f"{server}/account?user=carol")
    assert driver.find_elements(By.CSS_SELECTOR, "form[action$='/actions/grant']") == []
    assert driver.find_elements(By.CSS_SELECTOR, "input[name=csrf]") == []
    before = ledger.get_balance("carol")
    cookie = driver.get_cookie(COOKIE_NAME)
    assert cookie is not None
    form = {"user": "carol", "amount": "50", "nonce": "n" * 24, "csrf": "0" * 64}
    browser_like = {"Cookie": f"{COOKIE_NAME}={cookie['value']}", "Origin": server, "Sec-Fetch-Site": "same-origin"}
    assert post(f"{server}/actions/grant", form, browser_like) == 403
    assert post(f"{server}/actions/grant", form, {"Authorization": f"Bearer {TOKEN}"}) == 403
    assert ledger.get_balance("carol") == before


def test_admin_on_grant_through_the_form(
    driver: webdriver.Chrome, admin_server: str, ledger: LocalCreditManager
) -> None:
    sign_in(driver, admin_server, ADMIN_TOKEN)
    assert f"{ADMIN_OPERATOR} · admin on" in driver.find_element(By.CSS_SELECTOR, "header .who").text
    before = ledger.get_balance("carol")
    open_page(driver, f"{admin_server}/account?user=carol")
    form = driver.find_element(By.CSS_SELECTOR, "form[action='/actions/grant']")
    form.find_element(By.NAME, "amount").send_keys("12.5")
    form.find_element(By.NAME, "reason").send_keys("browser test")
    console_errors(driver), document_statuses(driver)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(driver, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, "section#transactions tbody tr"))
    assert driver.current_url == f"{admin_server}/account?user=carol"
    assert console_errors(driver) == []
    entry = ledger.transactions("carol", limit=1)[0]
    assert (entry.kind, entry.amount) == ("grant", Decimal("12.5"))
    assert entry.metadata == {"reason": "browser test", "operator": ADMIN_OPERATOR}
    assert ledger.get_balance("carol") == before + Decimal("12.5")
    newest = driver.find_element(By.CSS_SELECTOR, "section#transactions tbody tr")
    assert ADMIN_OPERATOR in newest.text and "grant" in newest.text
    assert ledger.audit().ok
