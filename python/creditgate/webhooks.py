"""The webhook worker: delivers a ledger's events to its subscriptions
(docs/reference.md), as ``creditgate webhooks run`` does.

Each pass calls ``manager.deliver_webhooks()`` (every enabled HTTP
subscription: signed POSTs, backoff, dead letters, all in the core) and then
``manager.handle_events()`` once per Python handler. A pass that delivered or
failed something is followed at once by the next; a pass that found nothing
waits ``interval`` seconds first. ``stop`` (a ``threading.Event``) ends the
loop after the current pass: nothing is cut off mid-delivery, and whatever a
worker did not finish (killed, say) is delivered again by the next one
(at least once; the core's lease keeps two workers off one subscription)::

    import threading
    from creditgate import LocalCreditManager
    from creditgate.webhooks import Handler, run_worker

    def on_low_balance(event):          # raising = a failed attempt, retried with backoff
        notify(event.user_id, event.data)

    stop = threading.Event()            # stop.set() from another thread ends the loop
    run_worker(LocalCreditManager(), handlers={"notify": Handler(on_low_balance, ["balance.low"])}, stop=stop)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Union

from ._creditgate import DeliveryReport, Event, StorageError

__all__ = ["Handler", "PassReport", "Worker", "run_worker"]

log = logging.getLogger("creditgate.webhooks")

DEFAULT_INTERVAL_SECONDS = 1.0


class ManagerLike(Protocol):
    """What the worker needs of a ``LocalCreditManager``."""

    def deliver_webhooks(
        self,
        *,
        timeout_ms: int = ...,
        max_attempts: int = ...,
        backoff_base_ms: int = ...,
        backoff_max_ms: int = ...,
        batch_size: int = ...,
    ) -> DeliveryReport: ...

    def handle_events(
        self,
        consumer: str,
        handler: Callable[[Event], object],
        *,
        events: Sequence[str] | None = None,
        timeout_ms: int = ...,
        max_attempts: int = ...,
        backoff_base_ms: int = ...,
        backoff_max_ms: int = ...,
        batch_size: int = ...,
    ) -> DeliveryReport: ...


@dataclass(frozen=True)
class Handler:
    """A Python consumer of events: ``func(event)`` for each event of
    ``events`` (None: every kind), in commit order. Raising is a failed
    attempt: the event is offered again after the backoff, and dead-lettered
    after ``max_attempts``."""

    func: Callable[[Event], object]
    events: Sequence[str] | None = None


HandlerSpec = Union[Handler, Callable[[Event], object]]


@dataclass(frozen=True)
class PassReport:
    """The sums of one pass's ``DeliveryReport``s (HTTP and every handler)."""

    sent: int = 0
    failed: int = 0
    dead_lettered: int = 0
    busy: int = 0

    def __add__(self, r: PassReport | DeliveryReport) -> PassReport:
        return PassReport(
            self.sent + r.sent, self.failed + r.failed, self.dead_lettered + r.dead_lettered, self.busy + r.busy
        )

    @property
    def found_work(self) -> bool:
        """Whether the pass delivered or tried something (busy subscriptions
        are another worker's, or waiting for their backoff: not work)."""
        return bool(self.sent or self.failed or self.dead_lettered)


class Worker:
    """Delivery passes over one manager's subscriptions and handlers.

    ``handlers`` maps a consumer name (its subscription is
    ``callback:NAME``, with a cursor of its own) to a callable or a
    :class:`Handler`. ``deliver=False`` leaves HTTP subscriptions to another
    worker. The options (``timeout_ms``, ``max_attempts``,
    ``backoff_base_ms``, ``backoff_max_ms``, ``batch_size``) go to the core
    unchanged; None is its default.
    """

    def __init__(
        self,
        manager: ManagerLike,
        *,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        handlers: Mapping[str, HandlerSpec] | None = None,
        stop: threading.Event | None = None,
        deliver: bool = True,
        timeout_ms: int | None = None,
        max_attempts: int | None = None,
        backoff_base_ms: int | None = None,
        backoff_max_ms: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        if not interval >= 0:  # also NaN
            raise ValueError(f"interval must be a number of seconds >= 0, got {interval!r}")
        self.manager = manager
        self.interval = float(interval)
        self.handlers = {name: h if isinstance(h, Handler) else Handler(h) for name, h in (handlers or {}).items()}
        for name, h in self.handlers.items():
            if not callable(h.func):
                raise TypeError(f"handler {name!r} is not callable")
        self.stop_event = stop if stop is not None else threading.Event()
        self.deliver = deliver
        given = dict(
            timeout_ms=timeout_ms,
            max_attempts=max_attempts,
            backoff_base_ms=backoff_base_ms,
            backoff_max_ms=backoff_max_ms,
            batch_size=batch_size,
        )
        self.options: dict[str, int] = {k: v for k, v in given.items() if v is not None}

    def stop(self) -> None:
        """Ends :meth:`run` after the current pass. Thread-safe; from a signal
        handler only while :meth:`run` is on another thread (the handler runs
        on the main thread, which must not be inside the Event's own wait:
        ``creditgate webhooks run`` does it so)."""
        self.stop_event.set()

    def run_once(self) -> PassReport:
        """One pass: HTTP deliveries, then each handler once."""
        total = PassReport()
        if self.deliver:
            total += self.manager.deliver_webhooks(**self.options)
        for name, h in self.handlers.items():
            if self.stop_event.is_set():
                break
            total += self.manager.handle_events(name, h.func, events=h.events, **self.options)
        if total.found_work:
            log.info(
                "webhooks pass: %d sent, %d failed, %d dead-lettered, %d busy",
                total.sent,
                total.failed,
                total.dead_lettered,
                total.busy,
            )
        return total

    def run(self) -> PassReport:
        """Passes until ``stop`` is set; returns the sums of every pass.

        A storage error (the database restarting, a lock timeout) is logged
        and the pass retried after ``interval``: the worker outlives an
        outage. Any other error (no ``CREDITGATE_WEBHOOK_KEY``, a bad
        option) is a mistake of the set-up and ends the loop.
        """
        total = PassReport()
        while not self.stop_event.is_set():
            try:
                report = self.run_once()
            except StorageError as e:
                log.warning("webhooks pass failed, retrying in %.3g s: %s", self.interval, e)
                self.stop_event.wait(self.interval)
                continue
            total += report
            if not report.found_work:
                self.stop_event.wait(self.interval)
        return total


def run_worker(
    manager: ManagerLike,
    *,
    interval: float = DEFAULT_INTERVAL_SECONDS,
    handlers: Mapping[str, HandlerSpec] | None = None,
    stop: threading.Event | None = None,
    **options: Any,
) -> PassReport:
    """``Worker(manager, ...).run()``: delivers until ``stop`` is set."""
    return Worker(manager, interval=interval, handlers=handlers, stop=stop, **options).run()
