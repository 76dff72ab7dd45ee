"""Dashboard latency on a large ledger (BENCHMARKS.md, "Dashboard").

Builds (or reuses) the SQLite fixture of scripts/dashboard_fixture.py (100k
accounts and keys, 1M entries over 180 days by default), serves it with
`creditgate dashboard` (uvicorn, one process, as an operator would), and
times every page over loopback, sequentially, after one warm-up request per
page (the first one also rolls up the ledger's past days once: its time is
reported apart). Prints one Markdown table of p50/p95/max per page.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import dashboard_fixture  # noqa: E402

TOKEN = "bench-token-0123456789abcdefghijklmnop"
PAGES = (
    ("overview, 30 days", "/"),
    ("overview, 365 days", "/?days=365"),
    ("overview as JSON", "/?format=json"),
    ("accounts by user id", "/accounts?order=user_id"),
    ("accounts, lowest balance first", "/accounts?order=balance"),
    ("accounts, overdrawn", "/accounts?below=0&order=balance"),
    ("accounts, search", "/accounts?q=user-0999"),
    ("accounts, page 1000", "/accounts?page=1000"),
    ("account", "/account?user=user-012345"),
    ("models, 30 days", "/models"),
    ("events", "/events"),
    ("events of one kind", "/events?kind=balance.low"),
    ("events of one user", "/events?user=user-012345"),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(path: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CREDITGATE_DASHBOARD_TOKEN": f"bench:{TOKEN}"}
    cmd = [sys.executable, "-m", "creditgate", "--database-url", f"sqlite:///{path}"]
    proc = subprocess.Popen([*cmd, "dashboard", "--port", str(port)], env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the dashboard did not start")


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(round(p * len(ordered) + 0.5)) - 1)]


def main() -> None:
    a = argparse.ArgumentParser(description=__doc__)
    a.add_argument("--ledger", default="target/dashboard-bench.db")
    a.add_argument("--users", type=int, default=100_000)
    a.add_argument("--entries", type=int, default=1_000_000)
    a.add_argument("--requests", type=int, default=40, help="timed requests per page")
    args = a.parse_args()
    if not os.path.exists(args.ledger):
        Path(args.ledger).parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        dashboard_fixture.build(args.ledger, args.users, args.entries, 180)
        print(f"built {args.ledger} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    port = free_port()
    proc = serve(args.ledger, port)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    rows = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120) as client:
            t0 = time.perf_counter()
            client.get("/").raise_for_status()
            first = time.perf_counter() - t0
            for name, path in PAGES:
                client.get(path).raise_for_status()
                samples = []
                for _ in range(args.requests):
                    t0 = time.perf_counter()
                    r = client.get(path)
                    samples.append(time.perf_counter() - t0)
                    r.raise_for_status()
                rows.append((name, path, statistics.median(samples), percentile(samples, 0.95), max(samples)))
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"First request (rolls up past days once): {first * 1000:.0f} ms\n")
    print(f"{args.entries:,} entries, {args.users:,} accounts and keys; {args.requests} requests per page\n")
    print("| Page | Path | p50 ms | p95 ms | max ms |")
    print("|---|---|--:|--:|--:|")
    for name, path, p50, p95, worst in rows:
        print(f"| {name} | `{path}` | {p50 * 1000:.0f} | {p95 * 1000:.0f} | {worst * 1000:.0f} |")


if __name__ == "__main__":
    main()
