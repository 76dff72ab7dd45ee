"""Writes docs/images/dashboard-overview.png, the overview page the README and docs/dashboard.md
show: the dashboard served by uvicorn over a small demo ledger (scripts/dashboard_fixture.py:
purchases and usage of six models over 30 days), signed in through the login form and captured
by headless Chromium (Debian's chromium and chromium-driver) at 1280x900 in light mode.

    .venv/bin/python scripts/dashboard_screenshot.py [--out PATH]

The figures differ from run to run only in their dates (the fixture is seeded and ends today).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from creditgate import InsufficientCredits, LocalCreditManager
from creditgate.dashboard import new_token
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dashboard_fixture  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1280, 900
SIZE_MAX = 250_000  # bytes: the image is committed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def live_activity(ledger: str) -> None:
    """What the fixture's SQL does not write, through the API: key requests (the purchase
    conversion counts who asked for a key), a few unpaid trials, and requests in flight (holds)."""
    m = LocalCreditManager(f"sqlite:///{ledger}")
    for n in range(1, 40):
        key = m.create_api_key(f"user-{n:06d}", "ci")
        if n % 8 == 0:
            m.reserve(key.secret, credits=250, ttl_seconds=3600)
    for n in range(12):
        try:
            m.create_api_key(f"trial-{n:02d}", "first")
        except InsufficientCredits:
            pass  # the attempt is what counts


def wait_until_up(proc: subprocess.Popen[bytes], base: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"dashboard_screenshot: the server exited ({proc.returncode})")
        try:
            with urllib.request.urlopen(f"{base}/login", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("dashboard_screenshot: the server did not answer within 30 s")


def capture(base: str, token: str, out: Path) -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        metrics = {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        features = [{"name": "prefers-color-scheme", "value": "light"}]
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": features})
        driver.get(f"{base}/login")
        driver.find_element(By.NAME, "token").send_keys(token)
        driver.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
        WebDriverWait(driver, 15).until(lambda d: d.current_url == f"{base}/")
        driver.get(f"{base}/?days=30")
        # The figures, then the daily chart: what the README's reader should see first.
        out.parent.mkdir(parents=True, exist_ok=True)
        if not driver.save_screenshot(str(out)):
            raise SystemExit("dashboard_screenshot: the screenshot failed")
    finally:
        driver.quit()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "dashboard-overview.png")
    args = p.parse_args()
    token = new_token()
    with tempfile.TemporaryDirectory() as tmp:
        ledger = os.path.join(tmp, "demo.db")
        dashboard_fixture.build(ledger, users=48, entries=1500, days=30, seed=22)
        live_activity(ledger)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CREDITGATE_", "DATABASE_URL"))}
        env.update(DATABASE_URL=f"sqlite:///{ledger}", CREDITGATE_DASHBOARD_TOKEN=token)
        port = free_port()
        command = [sys.executable, "-m", "uvicorn", "--factory", "creditgate.dashboard:create_app"]
        command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        proc = subprocess.Popen(command, env=env, cwd=tmp)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_up(proc, base)
            capture(base, token, args.out)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    size = args.out.stat().st_size
    if size > SIZE_MAX:
        raise SystemExit(f"dashboard_screenshot: {args.out} is {size} bytes, more than {SIZE_MAX}")
    print(f"wrote {args.out} ({WIDTH}x{HEIGHT}, {size} bytes)")


if __name__ == "__main__":
    main()
