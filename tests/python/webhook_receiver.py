"""A webhook receiver for the tests: a real HTTP server on 127.0.0.1 (a
thread of this process) that records every delivery and answers each one as
a policy says: 2xx, 500, a dropped connection, or a hang until released.

It also tracks the requests in flight per (path, event id): the same event
arriving on the same path while its first request is still open would be
two workers delivering one event concurrently, which is recorded as an
overlap (``overlaps``)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OK = "ok"
FAIL_500 = "500"
DROP = "drop"  # close the connection without an answer
HANG = "hang"  # answer nothing until released (or the test ends)

# (path, event id, attempt number of that id on that path, 1-based) -> behaviour
Policy = Callable[[str, int, int], str]

# Longest a hung request waits for release: the server must never outlive a test.
MAX_HANG_SECONDS = 60.0


@dataclass(frozen=True)
class Delivery:
    path: str
    event_id: int
    attempt: int
    headers: dict[str, str]
    body: bytes
    behaviour: str

    @property
    def event(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


@dataclass
class Receiver:
    port: int = 0
    policy: Policy = field(default=lambda path, event_id, attempt: OK)
    deliveries: list[Delivery] = field(default_factory=list)
    overlaps: list[tuple[str, int]] = field(default_factory=list)
    hanging: threading.Event = field(default_factory=threading.Event)  # set when a request starts hanging
    release: threading.Event = field(default_factory=threading.Event)  # ends every hang
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: set[tuple[str, int]] = field(default_factory=set)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def record(self, path: str, headers: dict[str, str], body: bytes) -> Delivery:
        event_id = int(headers.get("webhook-id", "0"))
        with self.lock:
            attempt = 1 + sum(1 for d in self.deliveries if d.path == path and d.event_id == event_id)
            if (path, event_id) in self.in_flight:
                self.overlaps.append((path, event_id))
            self.in_flight.add((path, event_id))
            behaviour = self.policy(path, event_id, attempt)
            d = Delivery(path, event_id, attempt, headers, body, behaviour)
            self.deliveries.append(d)
        return d

    def done(self, d: Delivery) -> None:
        with self.lock:
            self.in_flight.discard((d.path, d.event_id))

    def delivered(self, path: str = "/hook") -> list[int]:
        """Event ids answered 2xx on `path`, in arrival order."""
        with self.lock:
            return [d.event_id for d in self.deliveries if d.path == path and d.behaviour == OK]

    def received(self, path: str = "/hook") -> list[int]:
        """Every request's event id on `path`, in arrival order."""
        with self.lock:
            return [d.event_id for d in self.deliveries if d.path == path]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out; received {[(d.path, d.event_id) for d in self.deliveries]}"
            time.sleep(0.02)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            d = receiver.record(self.path, headers, body)
            try:
                if d.behaviour == HANG:
                    receiver.hanging.set()
                    receiver.release.wait(MAX_HANG_SECONDS)
                    self.close_connection = True
                    return
                if d.behaviour == DROP:
                    self.close_connection = True
                    return
                status = 500 if d.behaviour == FAIL_500 else 204
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()
            except OSError:
                pass  # the client gave up (timed out, or was killed)
            finally:
                receiver.done(d)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet

    return Handler


@contextlib.contextmanager
def running_receiver(policy: Policy | None = None) -> Iterator[Receiver]:
    receiver = Receiver()
    if policy is not None:
        receiver.policy = policy
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
