"""creditgate metrics for a ``prometheus_client`` registry (docs/reference.md).

``pip install '.[prometheus]'``. Two ways in:

One process (uvicorn with one worker, a script, a thread-pooled server)::

    from prometheus_client import start_http_server
    from creditgate.prometheus import register

    register(manager)            # into prometheus_client.REGISTRY
    start_http_server(9100)      # or any handler that serves generate_latest()

:class:`CreditgateCollector` yields, on each scrape, this process's counters
and latency histograms (from ``manager.metrics_snapshot()``: the numbers of
the manager's own ``metrics_prometheus()`` text, same names, nothing parsed)
and ledger-wide gauges from ``manager.report()``, named
``creditgate_ledger_*``, and per webhook subscription from
``manager.webhooks()``, named ``creditgate_webhook_*`` with a ``subscription``
label (read from the database, so a process that delivers nothing, such as a
web worker beside ``creditgate webhooks run``, shows the worker's figures),
both cached for ``report_ttl_seconds`` so a scrape does not query the database
each time.

Several worker processes (gunicorn): every worker counts its own requests, so
a scrape of one worker sees a fraction. prometheus_client's multiprocess mode
sums metrics that the workers write into files under
``PROMETHEUS_MULTIPROC_DIR``; :class:`MultiprocessMirror` (or
:func:`sync_multiprocess`) copies the manager's counters and histogram buckets
into such metrics as deltas, and :func:`generate_multiprocess_latest` serves the
sum of all workers. See docs/metrics.md for the recipe and its limits.

Amounts of credits are exposed in micro-credits (``*_micros``), integers like
the process counters; Prometheus stores every value as a float64, exact for
integers up to 2**53 (9 billion credits).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector

from ._creditgate import MICROS_PER_CREDIT

if TYPE_CHECKING:
    from creditgate import Report, WebhookSubscription
    from creditgate._creditgate import MetricsSnapshot

__all__ = [
    "LEDGER_GAUGES",
    "CreditgateCollector",
    "MultiprocessMirror",
    "ProcessMetrics",
    "WEBHOOK_GAUGES",
    "generate_multiprocess_latest",
    "parse_process_metrics",
    "register",
    "sync_multiprocess",
]

# Python-only: how long a collector reuses report() (a database query).
DEFAULT_REPORT_TTL_SECONDS = 60.0
MICROS_PER_SECOND = 1_000_000


class ManagerLike(Protocol):
    """What the collector needs of a ``LocalCreditManager``."""

    def metrics_snapshot(self) -> MetricsSnapshot: ...

    def report(self) -> Report: ...

    def webhooks(self) -> list[WebhookSubscription]: ...


# ----- the manager's process metrics --------------------------------------------


@dataclass(frozen=True)
class HistogramSnapshot:
    help: str
    # (le label, cumulative count), in order, ending with ("+Inf", count).
    buckets: tuple[tuple[str, int], ...]
    sum_micros: int

    @property
    def count(self) -> int:
        return self.buckets[-1][1] if self.buckets else 0

    def slots(self) -> list[int]:
        """Observations per bucket, not cumulative (the last is above every bound)."""
        out, previous = [], 0
        for _, cumulative in self.buckets:
            out.append(cumulative - previous)
            previous = cumulative
        return out


@dataclass(frozen=True)
class ProcessMetrics:
    """One snapshot of a manager's process metrics (:meth:`of`)."""

    # Full names (``creditgate_verify_ok_total``) -> (help, value), in text order.
    counters: dict[str, tuple[str, int]] = field(default_factory=dict)
    errors_help: str = ""
    # error code -> value (``creditgate_errors_total{code=...}``)
    errors: dict[str, int] = field(default_factory=dict)
    histograms: dict[str, HistogramSnapshot] = field(default_factory=dict)

    @classmethod
    def of(cls, snapshot: MetricsSnapshot) -> ProcessMetrics:
        """From ``manager.metrics_snapshot()``: the numbers themselves, no text."""
        histograms = {h.name: HistogramSnapshot(h.help, tuple(h.buckets), h.sum_micros) for h in snapshot.histograms}
        return cls(dict(snapshot.counters), snapshot.errors_help, dict(snapshot.errors), histograms)


ERRORS = "creditgate_errors_total"


def _labels(text: str) -> dict[str, str]:
    """``le="0.1",code="x"`` -> dict. The manager writes no escapes; refuse any."""
    out = {}
    for part in text.split(","):
        key, sep, quoted = part.partition("=")
        if not sep or len(quoted) < 2 or quoted[0] != '"' or quoted[-1] != '"' or "\\" in quoted:
            raise ValueError(f"unexpected label syntax: {text!r}")
        out[key] = quoted[1:-1]
    return out


def parse_process_metrics(text: str) -> ProcessMetrics:
    """Parses the text of ``manager.metrics_prometheus()`` (or a copy of it
    kept elsewhere). The collector and the mirror do not parse: they read
    ``manager.metrics_snapshot()`` (:meth:`ProcessMetrics.of`).

    A parser for exactly that text (counters, ``errors_total`` by ``code``, two
    histograms). Anything unexpected is a ``ValueError``; the tests check it
    against the real parser and against the snapshot.
    """
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    counters: dict[str, tuple[str, int]] = {}
    errors: dict[str, int] = {}
    buckets: dict[str, list[tuple[str, int]]] = {}
    sums: dict[str, int] = {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# HELP "):
            name, _, doc = line[len("# HELP ") :].partition(" ")
            helps[name] = doc
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE ") :].partition(" ")
            types[name] = kind
            continue
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name, brace, rest = series.partition("{")
        labels = _labels(rest[:-1]) if brace else {}
        if types.get(name) == "counter":
            if name == ERRORS:
                errors[labels["code"]] = int(value)
            else:
                counters[name] = (helps.get(name, ""), int(value))
        elif name.endswith("_bucket") and types.get(name[: -len("_bucket")]) == "histogram":
            buckets.setdefault(name[: -len("_bucket")], []).append((labels["le"], int(value)))
        elif name.endswith("_sum") and types.get(name[: -len("_sum")]) == "histogram":
            # The manager writes micro-seconds / 1e6 in the shortest round-trip
            # form, so the decimal text gives the integer back exactly.
            sums[name[: -len("_sum")]] = int((Decimal(value) * MICROS_PER_SECOND).to_integral_value())
        elif name.endswith("_count") and types.get(name[: -len("_count")]) == "histogram":
            pass  # == the +Inf bucket
        else:
            raise ValueError(f"unexpected line in the metrics text: {line!r}")
    histograms = {
        name: HistogramSnapshot(helps.get(name, ""), tuple(bs), sums.get(name, 0)) for name, bs in buckets.items()
    }
    for name, h in histograms.items():
        if not h.buckets or h.buckets[-1][0] != "+Inf":
            raise ValueError(f"histogram {name} has no +Inf bucket")
    return ProcessMetrics(counters, helps.get(ERRORS, ""), errors, histograms)


def _process_families(snap: ProcessMetrics, with_values: bool = True) -> Iterator[Metric]:
    for name, (doc, value) in snap.counters.items():
        yield CounterMetricFamily(name, doc, value=value if with_values else None)
    errors = CounterMetricFamily(ERRORS, snap.errors_help, labels=["code"])
    if with_values:
        for code, value in snap.errors.items():
            errors.add_metric([code], value)
    yield errors
    for name, h in snap.histograms.items():
        if with_values:
            yield HistogramMetricFamily(
                name,
                h.help,
                buckets=[(le, float(n)) for le, n in h.buckets],
                sum_value=h.sum_micros / MICROS_PER_SECOND,
            )
        else:
            yield HistogramMetricFamily(name, h.help)


# ----- ledger-wide figures from report() ----------------------------------------


@dataclass(frozen=True)
class LedgerGauge:
    field: str  # the Report attribute
    name: str
    help: str
    in_micros: bool = False  # a Decimal amount of credits, exposed in micro-credits

    def value(self, report: Report) -> float:
        raw = getattr(report, self.field)
        if self.in_micros:
            return float(int(Decimal(raw) * MICROS_PER_CREDIT))
        return float(raw)


LEDGER_GAUGES: tuple[LedgerGauge, ...] = (
    LedgerGauge("users", "creditgate_ledger_users", "Users with an entry, a key or a key attempt"),
    LedgerGauge("paying_users", "creditgate_ledger_paying_users", "Users with at least one purchase"),
    LedgerGauge("users_attempted_key", "creditgate_ledger_users_attempted_key", "Users who attempted to create a key"),
    LedgerGauge(
        "key_generation_attempts",
        "creditgate_ledger_key_generation_attempts",
        "API key creations attempted, all time, all processes",
    ),
    LedgerGauge(
        "key_generation_successes",
        "creditgate_ledger_key_generation_successes",
        "API keys created, all time, all processes",
    ),
    LedgerGauge(
        "purchase_conversion_rate",
        "creditgate_ledger_purchase_conversion_rate",
        "Paying users among users who attempted a key (0 to 1)",
    ),
    LedgerGauge(
        "revenue_usd_minor",
        "creditgate_ledger_revenue_usd_minor",
        "Revenue in US cents: purchases minus reversals",
    ),
    LedgerGauge(
        "revenue_per_paying_user_usd_minor",
        "creditgate_ledger_revenue_per_paying_user_usd_minor",
        "Revenue per paying user in US cents",
    ),
    LedgerGauge(
        "credits_purchased",
        "creditgate_ledger_credits_purchased_micros",
        "Micro-credits purchased, all time",
        in_micros=True,
    ),
    LedgerGauge(
        "credits_used",
        "creditgate_ledger_credits_used_micros",
        "Micro-credits used (usage and deducts), all time",
        in_micros=True,
    ),
    LedgerGauge(
        "outstanding_balance",
        "creditgate_ledger_outstanding_balance_micros",
        "Sum of positive balances in micro-credits: what is owed to users",
        in_micros=True,
    ),
    LedgerGauge(
        "outstanding_holds",
        "creditgate_ledger_outstanding_holds_micros",
        "Credits held by active holds in micro-credits: reserved for calls in flight",
        in_micros=True,
    ),
    LedgerGauge(
        "overdraft_receivable",
        "creditgate_ledger_overdraft_receivable_micros",
        "Sum of negative balances in micro-credits, as a positive number",
        in_micros=True,
    ),
)
LEDGER_UP = "creditgate_ledger_up"
LEDGER_UP_HELP = "1 when the last report() from the database succeeded, else 0"


@dataclass(frozen=True)
class WebhookGauge:
    field: str  # the WebhookSubscription attribute
    name: str
    help: str


# One series per subscription (label ``subscription``: its id), from webhooks().
WEBHOOK_GAUGES: tuple[WebhookGauge, ...] = (
    WebhookGauge("delivered", "creditgate_webhook_delivered", "Events delivered (2xx) to the subscription, all time"),
    WebhookGauge(
        "failed_attempts",
        "creditgate_webhook_failed_attempts",
        "Delivery attempts to the subscription that failed, all time",
    ),
    WebhookGauge(
        "dead_lettered",
        "creditgate_webhook_dead_letters",
        "Events of the subscription now in its dead-letter list",
    ),
    WebhookGauge(
        "pending",
        "creditgate_webhook_pending",
        "Events waiting for the subscription (counted up to one page of events)",
    ),
    WebhookGauge(
        "lag_seconds",
        "creditgate_webhook_lag_seconds",
        "Age of the subscription's oldest undelivered event in seconds (0: none)",
    ),
)
WEBHOOK_LABEL = "subscription"


@dataclass(frozen=True)
class LedgerFigures:
    """What one refresh reads from the database."""

    report: Report
    webhooks: list[WebhookSubscription]


def _webhook_families(subs: Sequence[WebhookSubscription]) -> Iterator[Metric]:
    for g in WEBHOOK_GAUGES:
        family = GaugeMetricFamily(g.name, g.help, labels=[WEBHOOK_LABEL])
        for sub in subs:
            family.add_metric([sub.id], float(getattr(sub, g.field)))
        yield family


class _ReportCache:
    """``manager.report()`` and ``manager.webhooks()`` at most once per TTL;
    failures are not cached."""

    def __init__(self, manager: ManagerLike, ttl: float, clock: Callable[[], float]) -> None:
        if ttl < 0:
            raise ValueError("report_ttl_seconds must be >= 0")
        self._manager = manager
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._report: LedgerFigures | None = None
        self._fetched_at = 0.0
        self.up = True

    def get(self) -> tuple[LedgerFigures | None, bool]:
        """(figures or None when they failed, whether they were fetched just now)."""
        with self._lock:
            now = self._clock()
            if self._report is not None and now - self._fetched_at < self._ttl:
                return self._report, False
            try:
                report = LedgerFigures(self._manager.report(), self._manager.webhooks())
            except Exception:
                # The ledger is unreachable: say so (creditgate_ledger_up 0)
                # rather than failing the whole scrape or serving stale figures.
                self._report = None
                self.up = False
                return None, True
            self._report, self._fetched_at, self.up = report, now, True
            return report, True


# ----- one process: a collector ---------------------------------------------------


class CreditgateCollector:
    """A ``prometheus_client`` collector for one manager.

    ``collect()`` yields the process counters and histograms of ``manager``
    (``creditgate_*``, as in ``metrics_prometheus()``), and with ``ledger=True``
    the ``creditgate_ledger_*`` gauges from ``manager.report()``, refreshed at
    most every ``report_ttl_seconds`` (0: every scrape), plus
    ``creditgate_ledger_up``. ``clock`` is for tests.
    """

    def __init__(
        self,
        manager: ManagerLike,
        *,
        report_ttl_seconds: float = DEFAULT_REPORT_TTL_SECONDS,
        ledger: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._manager = manager
        self._ledger = ledger
        self._reports = _ReportCache(manager, report_ttl_seconds, clock)

    def collect(self) -> Iterator[Metric]:
        yield from _process_families(ProcessMetrics.of(self._manager.metrics_snapshot()))
        if not self._ledger:
            return
        figures, _ = self._reports.get()
        if figures is not None:
            for g in LEDGER_GAUGES:
                yield GaugeMetricFamily(g.name, g.help, value=g.value(figures.report))
            yield from _webhook_families(figures.webhooks)
        yield GaugeMetricFamily(LEDGER_UP, LEDGER_UP_HELP, value=1.0 if figures is not None else 0.0)

    def describe(self) -> Iterator[Metric]:
        """The names ``collect()`` yields, without values and without a query."""
        yield from _process_families(ProcessMetrics.of(self._manager.metrics_snapshot()), with_values=False)
        if self._ledger:
            for g in LEDGER_GAUGES:
                yield GaugeMetricFamily(g.name, g.help)
            yield from _webhook_families(())
            yield GaugeMetricFamily(LEDGER_UP, LEDGER_UP_HELP)


def register(
    manager: ManagerLike,
    registry: CollectorRegistry = REGISTRY,
    *,
    report_ttl_seconds: float = DEFAULT_REPORT_TTL_SECONDS,
    ledger: bool = True,
) -> CreditgateCollector:
    """Registers a :class:`CreditgateCollector` for ``manager`` and returns it."""
    collector = CreditgateCollector(manager, report_ttl_seconds=report_ttl_seconds, ledger=ledger)
    registry.register(collector)
    return collector


# ----- several processes: prometheus_client's multiprocess mode -------------------


def _require_multiprocess_mode() -> None:
    # prometheus_client picks its value store when it is first imported.
    if values.ValueClass is values.MutexValue:
        raise RuntimeError(
            "prometheus_client is not in multiprocess mode: set PROMETHEUS_MULTIPROC_DIR "
            "(an existing, empty directory) before prometheus_client is first imported"
        )


class _MirrorMetrics:
    """This process's prometheus_client metrics, one set per process: two
    metric objects of one name in one process would overwrite each other's
    file entries."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counters: dict[str, Counter] = {}
        self.errors: Counter | None = None
        self.histograms: dict[str, Histogram] = {}
        self.gauges: dict[str, Gauge] = {}
        self.webhook_gauges: dict[str, Gauge] = {}

    def counter(self, name: str, doc: str) -> Counter:
        c = self.counters.get(name)
        if c is None:
            c = self.counters[name] = Counter(name, doc, registry=None)
        return c

    def error_counter(self, doc: str) -> Counter:
        if self.errors is None:
            self.errors = Counter(ERRORS, doc, ["code"], registry=None)
        return self.errors

    def histogram(self, name: str, snap: HistogramSnapshot) -> Histogram:
        h = self.histograms.get(name)
        if h is None:
            bounds = [float(le) for le, _ in snap.buckets[:-1]]
            h = Histogram(name, snap.help, buckets=bounds, registry=None)
            # The exact copy writes bucket and sum values directly (see
            # MultiprocessMirror); check the shape this relies on.
            slots = getattr(h, "_buckets", None)
            if not isinstance(slots, list) or len(slots) != len(snap.buckets) or not hasattr(h, "_sum"):
                raise RuntimeError("this prometheus_client's Histogram has an unexpected layout; cannot mirror")
            self.histograms[name] = h
        return h

    def gauge(self, name: str, doc: str) -> Gauge:
        g = self.gauges.get(name)
        if g is None:
            # mostrecent: every worker reads the same database, so the figures
            # must not be summed; the freshest report wins, and a dead worker's
            # older value never hides a later, lower one (as with 'max').
            g = self.gauges[name] = Gauge(name, doc, registry=None, multiprocess_mode="mostrecent")
        return g

    def webhook_gauge(self, name: str, doc: str) -> Gauge:
        g = self.webhook_gauges.get(name)
        if g is None:
            # mostrecent, as the ledger gauges: every worker reads the same rows.
            g = Gauge(name, doc, [WEBHOOK_LABEL], registry=None, multiprocess_mode="mostrecent")
            self.webhook_gauges[name] = g
        return g


_mirror_metrics: _MirrorMetrics | None = None
_mirror_metrics_lock = threading.Lock()


def _shared_mirror_metrics() -> _MirrorMetrics:
    global _mirror_metrics
    with _mirror_metrics_lock:
        if _mirror_metrics is None:
            _mirror_metrics = _MirrorMetrics()
        return _mirror_metrics


class MultiprocessMirror:
    """Copies one manager's process metrics into prometheus_client's
    multiprocess files, so a scrape of any worker sums every worker.

    ``sync()`` adds what the counters and histograms gained since the last
    ``sync()`` (deltas; no database access; cheap enough to call after every
    request). Histograms are copied exactly: the per-bucket counts and the sum
    are added to a prometheus_client ``Histogram`` with the same bounds, so a
    scrape shows ``creditgate_verify_seconds`` as one histogram summed over the
    workers. (This writes the histogram's bucket values directly, as
    ``observe()`` does one at a time; the constructor checks that layout.)

    ``sync_report()`` refreshes the ``creditgate_ledger_*`` gauges from
    ``manager.report()`` and the ``creditgate_webhook_*`` gauges from
    ``manager.webhooks()`` when the cached figures are older than
    ``report_ttl_seconds``; call it where the scrape is served. (The files
    keep a deleted subscription's last values until the process that wrote
    them exits: prometheus_client cannot remove a multiprocess series.)
    """

    def __init__(
        self,
        manager: ManagerLike,
        *,
        report_ttl_seconds: float = DEFAULT_REPORT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _require_multiprocess_mode()
        self._manager = manager
        self._metrics = _shared_mirror_metrics()
        self._reports = _ReportCache(manager, report_ttl_seconds, clock)
        self._lock = threading.Lock()
        self._last = ProcessMetrics()
        self._pid = os.getpid()

    def sync(self) -> None:
        with self._lock:
            if os.getpid() != self._pid:
                # A forked child: the manager's counters start at zero in the
                # child (and prometheus_client gives it files of its own).
                self._pid, self._last = os.getpid(), ProcessMetrics()
            snap = ProcessMetrics.of(self._manager.metrics_snapshot())
            last = self._last
            if snap == last:
                return  # nothing happened since the last sync
            with self._metrics.lock:
                # Every series is created on the first sync, so a scrape shows
                # zeros rather than no series until the first increment.
                for name, (doc, value) in snap.counters.items():
                    delta = _delta(value, last.counters.get(name, ("", 0))[1])
                    counter = self._metrics.counter(name, doc)
                    if delta:
                        counter.inc(delta)
                for code, value in snap.errors.items():
                    delta = _delta(value, last.errors.get(code, 0))
                    child = self._metrics.error_counter(snap.errors_help).labels(code)
                    if delta:
                        child.inc(delta)
                for name, h in snap.histograms.items():
                    before = last.histograms.get(name)
                    target = self._metrics.histogram(name, h)
                    slots = h.slots()
                    old = before.slots() if before is not None else [0] * len(slots)
                    reset = any(n < o for n, o in zip(slots, old))
                    for i, (n, o) in enumerate(zip(slots, old)):
                        d = n if reset else n - o
                        if d:
                            target._buckets[i].inc(d)
                    d_sum = h.sum_micros if reset or before is None else h.sum_micros - before.sum_micros
                    if d_sum:
                        target._sum.inc(d_sum / MICROS_PER_SECOND)
            self._last = snap

    def sync_report(self) -> bool:
        """Refreshes the ledger gauges if the cached report expired; returns
        whether the ledger answered (``creditgate_ledger_up``)."""
        figures, fresh = self._reports.get()
        if fresh:
            with self._metrics.lock:
                if figures is not None:
                    for g in LEDGER_GAUGES:
                        self._metrics.gauge(g.name, g.help).set(g.value(figures.report))
                    for w in WEBHOOK_GAUGES:
                        gauge = self._metrics.webhook_gauge(w.name, w.help)
                        for sub in figures.webhooks:
                            gauge.labels(sub.id).set(float(getattr(sub, w.field)))
                self._metrics.gauge(LEDGER_UP, LEDGER_UP_HELP).set(1.0 if figures is not None else 0.0)
        return figures is not None


def _delta(now: int, before: int) -> int:
    # A counter only goes down when its manager was replaced: count it afresh.
    return now - before if now >= before else now


_mirrors: dict[int, MultiprocessMirror] = {}
_managers: dict[int, ManagerLike] = {}  # keeps each id() taken
_mirrors_lock = threading.Lock()


def sync_multiprocess(manager: ManagerLike, *, report: bool = False) -> MultiprocessMirror:
    """``sync()`` of this process's :class:`MultiprocessMirror` for
    ``manager`` (created on first use), and ``sync_report()`` with
    ``report=True``. Returns the mirror."""
    with _mirrors_lock:
        mirror = _mirrors.get(id(manager))
        if mirror is None:
            mirror = _mirrors[id(manager)] = MultiprocessMirror(manager)
            _managers[id(manager)] = manager
    mirror.sync()
    if report:
        mirror.sync_report()
    return mirror


def generate_multiprocess_latest(
    mirrors: Sequence[MultiprocessMirror] = (),
    path: str | None = None,
) -> bytes:
    """The scrape of every worker: syncs ``mirrors`` (this process's latest
    counts and, when due, the report), then reads all processes' files under
    ``path`` (default ``PROMETHEUS_MULTIPROC_DIR``) with a
    ``MultiProcessCollector`` in a fresh registry. Serve the bytes with
    ``prometheus_client.CONTENT_TYPE_LATEST``."""
    for mirror in mirrors:
        mirror.sync()
        mirror.sync_report()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]  # (default: the environment)
    return generate_latest(registry)
