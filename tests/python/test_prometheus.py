"""Metrics exposition (docs/reference.md) against prometheus_client's own parser, the
collector of creditgate.prometheus, and the multiprocess recipe with real
worker processes."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from creditgate import CreditError, LocalCreditManager, Report, StorageError, WebhookSubscription
from creditgate._creditgate import MetricsSnapshot

pytest.importorskip("prometheus_client")
from creditgate.prometheus import (  # noqa: E402
    LEDGER_GAUGES,
    WEBHOOK_GAUGES,
    CreditgateCollector,
    MultiprocessMirror,
    ProcessMetrics,
    parse_process_metrics,
    register,
)
from prometheus_client import (  # noqa: E402
    REGISTRY,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import Metric  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

# docs/reference.md, in its order.
SPEC_COUNTERS = (
    "key_eligibility_checks_total",
    "key_generation_attempts_total",
    "key_generation_success_total",
    "key_generation_denied_total",
    "verify_ok_total",
    "verify_invalid_key_total",
    "verify_insufficient_credits_total",
    "usage_charges_total",
    "tokens_metered_total",
    "credits_charged_micros_total",
    "usage_overdrafts_total",
    "purchases_total",
    "credits_purchased_micros_total",
    "holds_total",
    "holds_settled_total",
    "holds_released_total",
    "holds_expired_total",
    "errors_total",
)
HISTOGRAMS = ("creditgate_verify_seconds", "creditgate_charge_seconds")
ERROR_CODES = (
    "insufficient_credits",
    "invalid_api_key",
    "limit_reached",
    "not_found",
    "idempotency_conflict",
    "invalid_argument",
    "storage",
    "internal",
    "rate_limited",
)


def script(m: LocalCreditManager, user: str = "alice", payment: str = "pay_1") -> None:
    """A fixed sequence of operations; EXPECTED is what it counts."""
    m.can_generate_api_key(f"{user}-broke")
    with pytest.raises(CreditError):  # no credits: an attempt, denied
        m.create_api_key(f"{user}-broke")
    m.record_payment(user, payment, 500)  # $5 = 5,000 credits
    m.record_payment(user, payment, 500)  # a replay: not counted again
    key = m.create_api_key(user).secret
    m.verify_api_key_credits(key)
    m.verify_api_key_credits(key)
    with pytest.raises(CreditError):
        m.verify_api_key_credits("sk_not_a_real_key_at_all")
    with pytest.raises(CreditError):
        m.verify_api_key_credits(key, min_credits=10**6)
    m.record_usage(key, input_tokens=1000, output_tokens=500)  # 1.5 credits
    hold = m.reserve(key, credits=10)
    m.settle(hold.hold_id, tokens=2000)  # 2 credits
    hold = m.reserve(key, credits=5)
    m.release(hold.hold_id)
    m.deduct_credits(user, 1)
    with pytest.raises(CreditError):
        m.deduct_credits(f"{user}-broke", 1)
    with pytest.raises(CreditError):
        m.record_payment(user, "pay_eur", 100, "EUR")
    charge = m.record_usage(key, tokens=10**7)  # 10,000 credits: overdraft
    assert charge.overdraft


EXPECTED = {
    "key_eligibility_checks_total": 1,
    "key_generation_attempts_total": 2,
    "key_generation_success_total": 1,
    "key_generation_denied_total": 1,
    "verify_ok_total": 2,
    "verify_invalid_key_total": 1,
    "verify_insufficient_credits_total": 1,
    "usage_charges_total": 3,
    "tokens_metered_total": 10_003_500,
    "credits_charged_micros_total": 10_003_500_000,
    "usage_overdrafts_total": 1,
    "purchases_total": 1,
    "credits_purchased_micros_total": 5_000_000_000,
    "holds_total": 2,
    "holds_settled_total": 1,
    "holds_released_total": 1,
    "holds_expired_total": 0,
    "errors_total": 5,
}
EXPECTED_ERRORS = {"insufficient_credits": 3, "invalid_api_key": 1, "invalid_argument": 1}
# verify_seconds: each verify_api_key_credits; charge_seconds: record_usage,
# settle and deduct_credits, failed or not.
EXPECTED_OBSERVATIONS = {"creditgate_verify_seconds": 4, "creditgate_charge_seconds": 5}


def families(text: str) -> dict[str, Metric]:
    """The text through prometheus_client's parser; each family once."""
    out: dict[str, Metric] = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in out, f"family {family.name} twice"
        out[family.name] = family
    return out


def value(family: Metric, sample: str, **labels: str) -> float:
    found = [s.value for s in family.samples if s.name == sample and s.labels == labels]
    assert len(found) == 1, (sample, labels, family.samples)
    return float(found[0])


def check_exposition(text: str) -> dict[str, Metric]:
    """Everything docs/reference.md promises of the text, whatever the values."""
    fams = families(text)
    for name in SPEC_COUNTERS:
        family = fams[f"creditgate_{name[: -len('_total')]}"]  # the parser drops _total
        assert family.type == "counter", name
        assert family.documentation, name
        assert {s.name for s in family.samples} == {f"creditgate_{name}"}
    errors = fams["creditgate_errors"]
    assert {s.labels["code"] for s in errors.samples} == set(ERROR_CODES)
    assert all(set(s.labels) == {"code"} for s in errors.samples)
    for name in HISTOGRAMS:
        h = fams[name]
        assert h.type == "histogram"
        buckets = [(s.labels["le"], float(s.value)) for s in h.samples if s.name == f"{name}_bucket"]
        bounds = [float(le) for le, _ in buckets]
        assert bounds == sorted(bounds) and bounds[-1] == math.inf and len(set(bounds)) == len(bounds)
        counts = [n for _, n in buckets]
        assert counts == sorted(counts), f"{name} buckets not cumulative"
        assert counts[-1] == value(h, f"{name}_count")
        assert value(h, f"{name}_sum") >= 0
    assert all(name.startswith("creditgate_") for name in fams)
    return fams


def histogram_counts(fams: dict[str, Metric], name: str) -> dict[str, float]:
    return {s.labels["le"]: float(s.value) for s in fams[name].samples if s.name == f"{name}_bucket"}


def counter_values(fams: dict[str, Metric]) -> dict[str, int]:
    out = {}
    for name in SPEC_COUNTERS:
        family = fams[f"creditgate_{name[: -len('_total')]}"]
        out[name] = int(sum(s.value for s in family.samples))
    return out


# ----- the manager's own text -----------------------------------------------------


def test_fresh_exposition_is_valid_and_zero(manager: LocalCreditManager) -> None:
    fams = check_exposition(manager.metrics_prometheus())
    assert counter_values(fams) == dict.fromkeys(SPEC_COUNTERS, 0)
    for name in HISTOGRAMS:
        assert set(histogram_counts(fams, name).values()) == {0}


def test_exposition_counts_a_scripted_sequence_exactly(manager: LocalCreditManager) -> None:
    script(manager)
    text = manager.metrics_prometheus()
    fams = check_exposition(text)
    assert counter_values(fams) == EXPECTED
    assert manager.metrics() == EXPECTED
    errors = fams["creditgate_errors"]
    assert {code: value(errors, "creditgate_errors_total", code=code) for code in ERROR_CODES} == {
        code: EXPECTED_ERRORS.get(code, 0) for code in ERROR_CODES
    }
    for name, n in EXPECTED_OBSERVATIONS.items():
        assert value(fams[name], f"{name}_count") == n
        assert histogram_counts(fams, name)["+Inf"] == n
        assert value(fams[name], f"{name}_sum") > 0
    # The le labels are those prometheus_client itself writes, so the three
    # ways out (this text, the collector, a multiprocess scrape) agree.
    assert list(histogram_counts(fams, "creditgate_verify_seconds")) == [
        "5e-05",
        "0.0001",
        "0.00025",
        "0.0005",
        "0.001",
        "0.0025",
        "0.005",
        "0.01",
        "0.025",
        "0.05",
        "0.1",
        "1.0",
        "+Inf",
    ]


def test_own_parser_agrees_with_prometheus_client(manager: LocalCreditManager) -> None:
    script(manager)
    text = manager.metrics_prometheus()
    mine = parse_process_metrics(text)
    fams = families(text)
    assert {name: v for name, (_, v) in mine.counters.items()} == {
        f"creditgate_{n}": v for n, v in EXPECTED.items() if n != "errors_total"
    }
    assert mine.errors == {code: EXPECTED_ERRORS.get(code, 0) for code in ERROR_CODES}
    for name in HISTOGRAMS:
        h = mine.histograms[name]
        assert {le: float(n) for le, n in h.buckets} == histogram_counts(fams, name)
        assert h.sum_micros / 1e6 == value(fams[name], f"{name}_sum")
        assert h.help == fams[name].documentation
    with pytest.raises(ValueError):
        parse_process_metrics('creditgate_surprise{a="b"} 1\n')


def test_snapshot_holds_what_the_text_shows(manager: LocalCreditManager) -> None:
    """The collector reads metrics_snapshot(), the text is metrics_prometheus():
    the same numbers, names and help texts, read at one moment."""
    fresh = ProcessMetrics.of(manager.metrics_snapshot())
    assert fresh == parse_process_metrics(manager.metrics_prometheus())
    assert fresh.errors == dict.fromkeys(ERROR_CODES, 0)
    script(manager)
    snap = ProcessMetrics.of(manager.metrics_snapshot())
    assert snap == parse_process_metrics(manager.metrics_prometheus())
    assert snap != fresh
    assert list(snap.counters) == [f"creditgate_{n}" for n in SPEC_COUNTERS if n != "errors_total"]
    assert {n[len("creditgate_") :]: v for n, (_, v) in snap.counters.items()} == {
        n: v for n, v in EXPECTED.items() if n != "errors_total"
    }
    assert list(snap.histograms) == list(HISTOGRAMS)


def test_cli_metrics_is_valid_exposition(db_url: str, tmp_path: Path) -> None:
    LocalCreditManager(db_url)  # the ledger exists (the CLI's metrics does not create one)
    r = subprocess.run(
        [sys.executable, "-m", "creditgate", "--database-url", db_url, "metrics"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    fams = check_exposition(r.stdout)
    assert counter_values(fams) == dict.fromkeys(SPEC_COUNTERS, 0)  # a fresh process


def test_example_gateway_metrics_endpoint_is_valid_exposition(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    spec = importlib.util.spec_from_file_location("fastapi_gateway_metrics", ROOT / "examples" / "fastapi_gateway.py")
    assert spec is not None and spec.loader is not None
    gateway = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "fastapi_gateway_metrics", gateway)
    spec.loader.exec_module(gateway)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.delenv("WEBHOOK_SECRET", raising=False)
    with TestClient(gateway.app) as client:
        m: LocalCreditManager = client.app.state.manager  # type: ignore[attr-defined]
        m.record_payment("alice", "pay_1", 500)
        key = m.create_api_key("alice").secret
        r = client.post(
            "/v1/chat/completions",
            json={"model": "echo", "messages": [{"role": "user", "content": "one two three"}]},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 200, r.text
        r = client.get("/metrics")
        assert r.status_code == 200
        fams = check_exposition(r.text)
        assert counter_values(fams) == m.metrics()
        assert counter_values(fams)["holds_settled_total"] == 1


# ----- the collector ----------------------------------------------------------------


class CountingManager:
    """A manager whose report() calls are counted, and can be made to fail."""

    def __init__(self, manager: LocalCreditManager) -> None:
        self.manager = manager
        self.reports = 0
        self.fail = False

    def metrics_snapshot(self) -> MetricsSnapshot:
        return self.manager.metrics_snapshot()

    def report(self) -> Report:
        self.reports += 1
        if self.fail:
            raise StorageError("the database is away")
        return self.manager.report()

    def webhooks(self) -> list[WebhookSubscription]:
        return self.manager.webhooks()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scrape(registry: CollectorRegistry) -> dict[str, Metric]:
    return families(generate_latest(registry).decode())


def ledger_values(fams: dict[str, Metric]) -> dict[str, float]:
    return {g.name: value(fams[g.name], g.name) for g in LEDGER_GAUGES if g.name in fams}


def expected_ledger(report: Report) -> dict[str, float]:
    d = report.to_dict()
    micros = {"credits_purchased", "credits_used", "outstanding_balance", "outstanding_holds", "overdraft_receivable"}
    return {
        g.name: float(int(d[g.field] * 1_000_000)) if g.field in micros else float(d[g.field]) for g in LEDGER_GAUGES
    }


def test_collector_yields_process_metrics_and_ledger_gauges(manager: LocalCreditManager) -> None:
    script(manager)
    registry = CollectorRegistry()
    collector = register(manager, registry)
    assert isinstance(collector, CreditgateCollector)
    text = generate_latest(registry).decode()
    fams = families(text)
    # Same process metrics as the manager's own text: names (not prefixed
    # twice), types, counter values, buckets and sums.
    own = families(manager.metrics_prometheus())
    for name, family in own.items():
        assert fams[name].type == family.type
        assert fams[name].documentation == family.documentation
    assert counter_values(fams) == EXPECTED
    for name in HISTOGRAMS:
        assert histogram_counts(fams, name) == histogram_counts(own, name)
        assert value(fams[name], f"{name}_sum") == value(own[name], f"{name}_sum")
    assert not any(name.startswith("creditgate_creditgate") for name in fams)
    # Ledger-wide figures, exactly: 2 users attempted a key, 1 paid $5.
    assert ledger_values(fams) == {
        "creditgate_ledger_users": 2.0,
        "creditgate_ledger_paying_users": 1.0,
        "creditgate_ledger_users_attempted_key": 2.0,
        "creditgate_ledger_key_generation_attempts": 2.0,
        "creditgate_ledger_key_generation_successes": 1.0,
        "creditgate_ledger_purchase_conversion_rate": 0.5,
        "creditgate_ledger_revenue_usd_minor": 500.0,
        "creditgate_ledger_revenue_per_paying_user_usd_minor": 500.0,
        "creditgate_ledger_credits_purchased_micros": 5_000_000_000.0,
        "creditgate_ledger_credits_used_micros": 10_004_500_000.0,  # 1.5 + 2 + 1 + 10,000
        "creditgate_ledger_outstanding_balance_micros": 0.0,
        "creditgate_ledger_outstanding_holds_micros": 0.0,
        "creditgate_ledger_overdraft_receivable_micros": 5_004_500_000.0,
    }
    assert ledger_values(fams) == expected_ledger(manager.report())
    assert value(fams["creditgate_ledger_up"], "creditgate_ledger_up") == 1.0
    webhooks = {g.name for g in WEBHOOK_GAUGES}  # families without series: no subscription yet
    assert set(fams) == set(own) | {g.name for g in LEDGER_GAUGES} | {"creditgate_ledger_up"} | webhooks
    # describe() names what collect() yields, without values.
    described = {f.name: f for f in collector.describe()}
    assert set(described) == set(fams)
    assert all(not f.samples for f in described.values())


def test_collector_beside_the_default_collectors(manager: LocalCreditManager) -> None:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    register(manager, registry)
    fams = scrape(registry)
    assert "python_info" in fams and "creditgate_verify_ok" in fams
    # describe() is what lets the registry see a clash: a second one is refused.
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        register(manager, registry)
    # And into the global default registry, beside its own default collectors.
    collector = register(manager)
    try:
        text = generate_latest(REGISTRY).decode()
        assert "creditgate_ledger_up 1.0" in text and "python_info" in text
        families(text)
    finally:
        REGISTRY.unregister(collector)


def test_report_is_cached_for_the_ttl(manager: LocalCreditManager) -> None:
    counting, clock = CountingManager(manager), Clock()
    registry = CollectorRegistry()
    registry.register(CreditgateCollector(counting, report_ttl_seconds=30, clock=clock))
    manager.record_payment("alice", "pay_1", 500)
    assert ledger_values(scrape(registry))["creditgate_ledger_revenue_usd_minor"] == 500
    manager.record_payment("bob", "pay_2", 250)
    clock.now += 29.9
    fams = scrape(registry)  # within the TTL: no query, the cached figures
    assert counting.reports == 1
    assert ledger_values(fams)["creditgate_ledger_revenue_usd_minor"] == 500
    # ... but the process counters are live.
    assert counter_values(fams)["purchases_total"] == 2
    clock.now += 0.1
    fams = scrape(registry)
    assert counting.reports == 2
    assert ledger_values(fams)["creditgate_ledger_revenue_usd_minor"] == 750
    assert ledger_values(fams)["creditgate_ledger_paying_users"] == 2
    # TTL 0: every scrape asks.
    every = CountingManager(manager)
    registry = CollectorRegistry()
    registry.register(CreditgateCollector(every, report_ttl_seconds=0, clock=clock))
    scrape(registry)
    scrape(registry)
    assert every.reports == 2
    with pytest.raises(ValueError):
        CreditgateCollector(manager, report_ttl_seconds=-1)


def test_ledger_down_is_a_gauge_not_a_failed_scrape(manager: LocalCreditManager) -> None:
    counting, clock = CountingManager(manager), Clock()
    registry = CollectorRegistry()
    registry.register(CreditgateCollector(counting, report_ttl_seconds=30, clock=clock))
    counting.fail = True
    fams = scrape(registry)
    assert value(fams["creditgate_ledger_up"], "creditgate_ledger_up") == 0.0
    assert ledger_values(fams) == {}  # no stale or made-up figures
    assert "creditgate_verify_ok" in fams  # the process metrics still there
    scrape(registry)
    assert counting.reports == 2  # a failure is not cached
    counting.fail = False
    fams = scrape(registry)
    assert value(fams["creditgate_ledger_up"], "creditgate_ledger_up") == 1.0
    assert ledger_values(fams) == expected_ledger(manager.report())


def test_without_ledger_gauges_no_query(manager: LocalCreditManager) -> None:
    counting = CountingManager(manager)
    registry = CollectorRegistry()
    registry.register(CreditgateCollector(counting, ledger=False))
    fams = scrape(registry)
    assert counting.reports == 0
    assert not any(name.startswith("creditgate_ledger") for name in fams)


# ----- multiprocess mode --------------------------------------------------------------


def test_mirror_refuses_without_multiprocess_mode(manager: LocalCreditManager) -> None:
    # This test process imported prometheus_client without PROMETHEUS_MULTIPROC_DIR.
    with pytest.raises(RuntimeError, match="PROMETHEUS_MULTIPROC_DIR"):
        MultiprocessMirror(manager)


WORKER = textwrap.dedent(
    """
    import json, os, sys
    from creditgate import CreditError, LocalCreditManager
    from creditgate.prometheus import parse_process_metrics, sync_multiprocess

    index, stale_report = int(sys.argv[1]), sys.argv[2] == "stale"
    m = LocalCreditManager(os.environ["LEDGER_URL"])
    if stale_report:
        # This worker serves a scrape before the others' purchases: its report
        # gauges are older than what the final scrape writes.
        sync_multiprocess(m, report=True)
    user = f"user{index}"
    m.record_payment(user, f"pay_{index}", 500 * (index + 1))
    sync_multiprocess(m)  # after each "request", as the middleware does
    key = m.create_api_key(user).secret
    sync_multiprocess(m)
    for _ in range(index + 2):
        m.verify_api_key_credits(key)
        m.record_usage(key, tokens=1000 * (index + 1))
        sync_multiprocess(m)
    try:
        m.verify_api_key_credits("sk_not_a_real_key_at_all")
    except CreditError:
        pass
    sync_multiprocess(m)
    sync_multiprocess(m)  # nothing new: adds nothing
    snap = parse_process_metrics(m.metrics_prometheus())
    print(json.dumps({
        "metrics": m.metrics(),
        "errors": snap.errors,
        "histograms": {n: [list(b) for b in h.buckets] for n, h in snap.histograms.items()},
        "sums": {n: h.sum_micros for n, h in snap.histograms.items()},
    }))
    """
)

SCRAPER = textwrap.dedent(
    """
    import os, sys
    from creditgate import LocalCreditManager
    from creditgate.prometheus import MultiprocessMirror, generate_multiprocess_latest

    m = LocalCreditManager(os.environ["LEDGER_URL"])
    sys.stdout.write(generate_multiprocess_latest([MultiprocessMirror(m)]).decode())
    """
)


def run_python(code: str, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(p: subprocess.Popen[str]) -> str:
    try:
        out, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"timed out: {err}") from None
    assert p.returncode == 0, err
    return out


def scrape_files(env: dict[str, str]) -> dict[str, Metric]:
    """What a MultiProcessCollector reads from the directory, in this process."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=env["PROMETHEUS_MULTIPROC_DIR"])  # type: ignore[no-untyped-call]
    return scrape(registry)


@pytest.fixture
def multiproc_env(tmp_path: Path, db_url: str) -> Iterator[dict[str, str]]:
    directory = tmp_path / "prometheus-multiproc"
    directory.mkdir()
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(directory), LEDGER_URL=db_url)
    LocalCreditManager(db_url).migrate()  # the schema exists before workers race to create it
    yield env


def test_multiprocess_scrape_sums_the_workers(multiproc_env: dict[str, str], db_url: str) -> None:
    workers = [run_python(WORKER, multiproc_env, str(i), "stale" if i == 0 else "fresh") for i in range(3)]
    results: list[dict[str, Any]] = [json.loads(finish(p)) for p in workers]
    # The scrape as one worker serves it: its own sync, the report, every file.
    text = finish(run_python(SCRAPER, multiproc_env))
    fams = check_exposition(text)

    # Counters: the exact sum over the worker processes.
    summed = {name: sum(r["metrics"][name] for r in results) for name in SPEC_COUNTERS}
    assert counter_values(fams) == summed
    assert summed["purchases_total"] == 3
    assert summed["verify_ok_total"] == 2 + 3 + 4
    assert summed["tokens_metered_total"] == 2 * 1000 + 3 * 2000 + 4 * 3000
    assert summed["verify_invalid_key_total"] == 3 and summed["errors_total"] == 3
    assert value(fams["creditgate_errors"], "creditgate_errors_total", code="invalid_api_key") == 3

    # Histograms: one histogram, the per-bucket sum of the workers.
    for name in HISTOGRAMS:
        expected: dict[str, int] = {}
        for r in results:
            for le, n in r["histograms"][name]:
                expected[le] = expected.get(le, 0) + n
        assert histogram_counts(fams, name) == {le: float(n) for le, n in expected.items()}
        assert value(fams[name], f"{name}_count") == expected["+Inf"]
        total = sum(r["sums"][name] for r in results) / 1e6
        assert value(fams[name], f"{name}_sum") == pytest.approx(total, rel=1e-9)
    assert histogram_counts(fams, "creditgate_verify_seconds")["+Inf"] == 2 + 3 + 4 + 3

    # Ledger gauges: once each (no pid label, not summed), the freshest report.
    report = LocalCreditManager(db_url).report()
    for g in LEDGER_GAUGES:
        assert [s.labels for s in fams[g.name].samples] == [{}], g.name
    assert ledger_values(fams) == expected_ledger(report)
    assert ledger_values(fams)["creditgate_ledger_revenue_usd_minor"] == 500 + 1000 + 1500
    assert ledger_values(fams)["creditgate_ledger_paying_users"] == 3
    assert value(fams["creditgate_ledger_up"], "creditgate_ledger_up") == 1.0

    # The same files read in this process give the same numbers.
    assert counter_values(scrape_files(multiproc_env)) == summed


def test_multiprocess_threads_of_one_worker_count_once(multiproc_env: dict[str, str]) -> None:
    # Threads of one worker sync concurrently: each increment is copied once.
    code = textwrap.dedent(
        """
        import os, threading
        from creditgate import LocalCreditManager
        from creditgate.prometheus import sync_multiprocess

        m = LocalCreditManager(os.environ["LEDGER_URL"])
        m.record_payment("t", "pay_t", 500)
        key = m.create_api_key("t").secret

        def work():
            for _ in range(25):
                m.verify_api_key_credits(key)
                sync_multiprocess(m)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(m.metrics()["verify_ok_total"])
        """
    )
    assert finish(run_python(code, multiproc_env)).split() == ["100"]
    fams = scrape_files(multiproc_env)
    assert value(fams["creditgate_verify_ok"], "creditgate_verify_ok_total") == 100
    assert value(fams["creditgate_verify_seconds"], "creditgate_verify_seconds_count") == 100
    assert value(fams["creditgate_purchases"], "creditgate_purchases_total") == 1


def test_multiprocess_report_gauges_show_the_freshest_report(multiproc_env: dict[str, str]) -> None:
    # Worker A serves a scrape while the ledger owes 5,000 credits; worker B
    # then deducts 4,000; the next scrape (served by B) must show 1,000: the
    # most recent report, not the largest value any worker ever wrote.
    reporter = textwrap.dedent(
        """
        import os, sys
        from creditgate import LocalCreditManager
        from creditgate.prometheus import MultiprocessMirror, generate_multiprocess_latest

        m = LocalCreditManager(os.environ["LEDGER_URL"])
        if sys.argv[1] == "pay":
            m.record_payment("alice", "pay_1", 500)
        else:
            m.deduct_credits("alice", 4000)
        sys.stdout.write(generate_multiprocess_latest([MultiprocessMirror(m)]).decode())
        """
    )
    first = families(finish(run_python(reporter, multiproc_env, "pay")))
    name = "creditgate_ledger_outstanding_balance_micros"
    assert value(first[name], name) == 5_000e6
    second = families(finish(run_python(reporter, multiproc_env, "deduct")))
    assert value(second[name], name) == 1_000e6
    assert [s.labels for s in second[name].samples] == [{}]
    assert value(second["creditgate_ledger_credits_used_micros"], "creditgate_ledger_credits_used_micros") == 4_000e6


def test_every_metric_named_in_docs_metrics_md_is_exported(manager: LocalCreditManager) -> None:
    # docs/metrics.md's PromQL and tables may only name series that exist.
    registry = CollectorRegistry()
    register(manager, registry)
    fams = scrape(registry)
    exported = {s.name for f in fams.values() for s in f.samples} | set(HISTOGRAMS)
    page = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    named = {n for n in re.findall(r"\bcreditgate_[a-z0-9_]+", page) if not n.endswith("_")}
    assert len(named) > 20
    assert named - exported == set()
    promql = re.findall(r"```promql\n(.*?)```", page, flags=re.S)
    for needed in ("creditgate_verify_seconds_bucket", "creditgate_verify_insufficient_credits_total"):
        assert any(needed in block for block in promql), needed


def test_multiprocess_mirror_survives_fork(multiproc_env: dict[str, str]) -> None:
    # gunicorn --preload: the manager and its mirror exist before the fork.
    # The parent's synced counts stay in its file; each child adds only its own.
    code = textwrap.dedent(
        """
        import os
        from creditgate import LocalCreditManager
        from creditgate.prometheus import sync_multiprocess

        m = LocalCreditManager(os.environ["LEDGER_URL"])
        m.record_payment("p", "pay_p", 500)
        key = m.create_api_key("p").secret
        m.verify_api_key_credits(key)
        sync_multiprocess(m)
        children = []
        for _ in range(2):
            pid = os.fork()
            if pid == 0:
                m.verify_api_key_credits(key)
                m.verify_api_key_credits(key)
                sync_multiprocess(m)
                os._exit(0)
            children.append(pid)
        for pid in children:
            assert os.waitpid(pid, 0)[1] == 0
        """
    )
    finish(run_python(code, multiproc_env))
    fams = scrape_files(multiproc_env)
    assert value(fams["creditgate_verify_ok"], "creditgate_verify_ok_total") == 1 + 2 + 2
    assert value(fams["creditgate_verify_seconds"], "creditgate_verify_seconds_count") == 5
    assert value(fams["creditgate_purchases"], "creditgate_purchases_total") == 1
