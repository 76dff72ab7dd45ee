"""One rule for the integrations that hold a call's credits under a request
id the caller chose (``creditgate.litellm``, ``creditgate.fastapi``).

A replayed ``reserve`` returns the first hold under that id, whatever became
of it, and never covers a second call:
- *active*: another request under this id is in flight (or its process died
  before settling): serving this one too would run the call twice for one
  charge, so it is refused (``IdempotencyConflict``, 409) until that hold
  ends;
- *released* or *expired*: an earlier attempt of this call ended without a
  charge, so the retry holds anew under the next attempt's id (``<id>~2``,
  ``<id>~3``, ...), and its settle charges the call once;
- *settled*: the call was already charged; a retry would be served for
  free, so it is refused (409).
"""

from __future__ import annotations

from collections.abc import Iterator

from ._creditgate import Hold, IdempotencyConflict

__all__ = ["MAX_ATTEMPTS", "attempt_ids", "covers", "exhausted"]

#: Most attempts of one request id (each attempt after the first holds anew).
MAX_ATTEMPTS = 16


def attempt_ids(request_id: str) -> Iterator[str]:
    """The request ids of a call's attempts, first the caller's own."""
    yield request_id
    for attempt in range(2, MAX_ATTEMPTS + 1):
        yield f"{request_id}~{attempt}"


def covers(hold: Hold, request_id: str) -> bool:
    """Whether ``hold`` (just returned by ``reserve`` under ``request_id``)
    covers the call: only a new hold does. False for a released or expired
    replay (hold anew under the next id); ``IdempotencyConflict`` for an
    active or settled one."""
    if not hold.replayed:
        return True
    if hold.status == "active":
        raise IdempotencyConflict(
            f"request {request_id!r} is already in progress: retry once it has ended, or use a new request id"
        )
    if hold.status == "settled":
        raise IdempotencyConflict(f"request {request_id!r} was already settled and charged: use a new request id")
    return False


def exhausted(request_id: str) -> IdempotencyConflict:
    """The error once every attempt id of ``request_id`` is used up."""
    return IdempotencyConflict(f"request {request_id!r} was attempted {MAX_ATTEMPTS} times: use a new request id")
