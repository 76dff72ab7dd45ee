"""Prepaid credits for the LiteLLM proxy: two lines of its ``config.yaml``.

.. code-block:: yaml

    general_settings:
      custom_auth: creditgate.litellm.user_api_key_auth
    litellm_settings:
      callbacks: creditgate.litellm.callback

- ``user_api_key_auth`` checks the bearer key against the ledger:
  an unknown, malformed or revoked key gets 401, and a key whose account has
  no credits left gets 402. Both come in the OpenAI error shape, with the codes
  of docs/reference.md (``invalid_api_key``, ``insufficient_credits``).
- ``callback`` does the metering. Before the call, it holds the call's
  worst-case price: the prompt tokens at the model's input rate plus
  ``max_tokens`` (capped) at its output rate, quoted by creditgate exactly as
  the charge will be. Holds are strict, so concurrent calls cannot spend more
  than the account has. When the call succeeds (streamed or not), it settles
  the real usage (with the prompt's cache reads and writes, from LiteLLM's
  standard logging object: ``creditgate._usage``), keyed by LiteLLM's
  ``litellm_call_id``: duplicate events
  charge once. When the call fails, it releases the hold; a retry under the
  same call id then holds anew (never runs on the released hold), and a call
  id that was already charged, or is still in flight, is refused (409).

Configuration comes from the environment. ``CREDITGATE_DATABASE_URL``, else
``DATABASE_URL``, names the ledger (SQLite or PostgreSQL). Use the first when
``DATABASE_URL`` is LiteLLM's own database. The other settings are creditgate's
own variables (``API_KEY_PEPPER``, ``MIN_CREDITS_API_KEY``, ...), plus:

- ``CREDITGATE_LITELLM_MAX_TOKENS``: the completion budget held when a request
  sets no ``max_tokens``, and the cap on any request's (default 4096);
- ``CREDITGATE_LITELLM_HOLD_TTL``: how long a hold lives in seconds
  (default 600), after which an unsettled call frees its credits.

Each proxy worker process opens one manager, on first use. Several workers,
and several hosts on PostgreSQL, share the ledger safely.

Secrets stay in memory. LiteLLM logs the key it gets back from the auth
function, and it hashes only keys that start with ``sk-``. So the auth
returns ``creditgate:<key id>`` instead of the secret. The pre-call hook needs
the secret to place the hold, so it finds it in a small per-process map,
keyed by key id and filled in by the auth.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from typing import Any

from creditgate import CreditError, InsufficientCredits, InvalidApiKey, LocalCreditManager
from creditgate import _holds as _holds_rule
from creditgate._creditgate import DEFAULT_TTL_SECONDS
from creditgate._usage import usage_tokens

try:
    from litellm.integrations.custom_logger import CustomLogger
    from litellm.proxy._types import ProxyException, UserAPIKeyAuth
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError("creditgate.litellm needs LiteLLM's proxy: pip install '.[litellm]'") from exc

__all__ = ["CreditgateCallback", "CreditgateError", "callback", "manager", "user_api_key_auth"]

# Python-only: completion tokens held when a request sets no max_tokens.
_DEFAULT_MAX_TOKENS = 4096
# Keys seen by this process's auth, for the pre-call hook; bounded.
_MAX_REMEMBERED_KEYS = 10_000
# Calls with an open hold in this process, for the success/failure events.
_MAX_OPEN_CALLS = 100_000

_lock = threading.Lock()
_manager: LocalCreditManager | None = None
_secrets: OrderedDict[str, str] = OrderedDict()  # key id -> secret
# Module-level, not per callback object: LiteLLM may build more than one.
# Only a fallback for settling: each request carries its own hold id in its
# metadata (`_HOLD_KEY`), which is what the events act on.
_holds: OrderedDict[str, str] = OrderedDict()  # litellm_call_id -> hold id
# The request's own hold, in the request's metadata. A request refused by the
# pre-call hook (a duplicate of a call id in flight) has none, and LiteLLM
# reports that refusal as a failure event under the same call id: keyed by
# call id alone, it would release the hold of the request in flight.
_HOLD_KEY = "creditgate_hold_id"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}")
    return value


def manager() -> LocalCreditManager:
    """This process's ledger, opened on first use from the environment."""
    global _manager
    with _lock:
        if _manager is None:
            url = os.environ.get("CREDITGATE_DATABASE_URL") or os.environ.get("DATABASE_URL") or None
            _manager = LocalCreditManager(url)
        return _manager


class CreditgateError(ProxyException):  # type: ignore[misc]  # LiteLLM is untyped
    """A ledger refusal as LiteLLM's proxy renders it: the HTTP status from
    ``code``, and here the body's ``code`` is creditgate's (docs/reference.md), as in
    OpenAI's errors (``insufficient_credits``), not the status repeated."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        kind = "invalid_request_error" if status_code in (401, 402) else "api_error"
        super().__init__(message=message, type=kind, param=None, code=status_code, openai_code=code)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = super().to_dict()
        body["code"] = self.openai_code
        return body


def _error(status_code: int, code: str, message: str) -> CreditgateError:
    return CreditgateError(status_code, code, message)


def _remember(key_id: str, secret: str) -> None:
    with _lock:
        _secrets[key_id] = secret
        _secrets.move_to_end(key_id)
        while len(_secrets) > _MAX_REMEMBERED_KEYS:
            _secrets.popitem(last=False)


def _secret_for(key_id: str) -> str | None:
    with _lock:
        return _secrets.get(key_id)


async def user_api_key_auth(request: Any, api_key: str) -> UserAPIKeyAuth:
    """LiteLLM's ``custom_auth``: 401 for a bad key, 402 when out of credits."""
    secret = api_key[7:] if api_key[:7].lower() == "bearer " else api_key
    secret = secret.strip()
    try:
        v = await asyncio.to_thread(manager().verify_api_key_credits, secret)
    except InsufficientCredits as exc:
        raise _error(402, exc.code, str(exc)) from None
    except InvalidApiKey as exc:
        raise _error(401, exc.code, str(exc)) from None
    except CreditError as exc:
        raise _error(exc.status_code, exc.code, str(exc)) from None
    _remember(v.key_id, secret)
    return UserAPIKeyAuth(
        api_key=f"creditgate:{v.key_id}",
        user_id=v.user_id,
        metadata={"creditgate_key_id": v.key_id},
    )


def _key_id(user_api_key_dict: Any) -> str | None:
    metadata = getattr(user_api_key_dict, "metadata", None) or {}
    key_id = metadata.get("creditgate_key_id")
    return key_id if isinstance(key_id, str) else None


class CreditgateCallback(CustomLogger):  # type: ignore[misc]  # LiteLLM is untyped
    """Holds the worst case before each call, settles or releases after it."""

    def _worst_case_tokens(self, data: dict[str, Any]) -> tuple[int, int]:
        """The call's prompt tokens and the most completion tokens it may
        produce (its ``max_tokens``, capped), for ``reserve`` to price each
        at its own rate."""
        import litellm

        cap = _env_int("CREDITGATE_LITELLM_MAX_TOKENS", _DEFAULT_MAX_TOKENS)
        asked = data.get("max_tokens") or data.get("max_completion_tokens")
        completion = min(int(asked), cap) if isinstance(asked, int) and asked > 0 else cap
        messages = data.get("messages")
        prompt = litellm.token_counter(model=data.get("model", ""), messages=messages) if messages else 0
        return int(prompt), completion

    def _hold(self, secret: str, call_id: str, data: dict[str, Any]) -> str:
        """Holds the call's worst case; a retried call id whose earlier
        attempt's hold ended unsettled holds anew (``creditgate._holds``)."""
        prompt, completion = self._worst_case_tokens(data)
        ledger = manager()
        base = f"litellm:{call_id}"
        for request_id in _holds_rule.attempt_ids(base):
            hold = ledger.reserve(
                secret,
                input_tokens=prompt,
                output_tokens=completion,
                model=str(data.get("model") or "") or None,
                ttl_seconds=_env_int("CREDITGATE_LITELLM_HOLD_TTL", DEFAULT_TTL_SECONDS),
                request_id=request_id,
            )
            if _holds_rule.covers(hold, request_id):
                return hold.hold_id
        raise _holds_rule.exhausted(base)

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> dict[str, Any]:
        key_id = _key_id(user_api_key_dict)
        call_id = data.get("litellm_call_id")
        if key_id is None or not isinstance(call_id, str):
            return data  # not a creditgate key (e.g. the master key): nothing to hold
        secret = _secret_for(key_id)
        if secret is None:
            raise _error(401, "invalid_api_key", "API key not authenticated by this proxy worker")
        try:
            hold_id = await asyncio.to_thread(self._hold, secret, call_id, data)
        except CreditError as exc:
            raise _error(exc.status_code, exc.code, str(exc)) from None
        for key in ("metadata", "litellm_metadata"):
            metadata = data.get(key)
            if isinstance(metadata, dict):
                metadata[_HOLD_KEY] = hold_id
                break
        with _lock:
            _holds[call_id] = hold_id
            while len(_holds) > _MAX_OPEN_CALLS:
                _holds.popitem(last=False)
        return data

    @staticmethod
    def _own_hold(kwargs: dict[str, Any]) -> str | None:
        """The hold this event's own request placed, from its metadata."""
        params = kwargs.get("litellm_params") or {}
        for key in ("metadata", "litellm_metadata"):
            metadata = params.get(key) if isinstance(params, dict) else None
            if isinstance(metadata, dict) and isinstance(metadata.get(_HOLD_KEY), str):
                return str(metadata[_HOLD_KEY])
        return None

    def _hold_of(self, kwargs: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """The hold to settle: the request's own, else (a LiteLLM path that
        drops metadata) the one this process placed for the call id."""
        slo = kwargs.get("standard_logging_object") or {}
        own = self._own_hold(kwargs)
        if own is not None:
            return own, slo
        # Not slo["id"]: that is the response's id (chatcmpl-...).
        call_id = kwargs.get("litellm_call_id")
        with _lock:
            return (_holds.get(call_id) if isinstance(call_id, str) else None), slo

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        hold_id, slo = self._hold_of(kwargs)
        if hold_id is None:
            return  # no hold: not a creditgate call
        # The prompt includes its cache reads and writes; those counts are
        # passed only when not 0 (creditgate._usage).
        tokens = usage_tokens(slo)
        # Settling a hold twice charges once: duplicate events are harmless.
        await asyncio.to_thread(
            manager().settle,
            hold_id,
            input_tokens=tokens.input_tokens,
            output_tokens=tokens.output_tokens,
            **tokens.cache_kwargs(),
        )

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        # Only the request's own hold: a refused duplicate placed none, and
        # must not release the hold of the call in flight. A hold no event
        # releases expires after CREDITGATE_LITELLM_HOLD_TTL.
        hold_id = self._own_hold(kwargs)
        if hold_id is not None:
            await asyncio.to_thread(manager().release, hold_id)


callback = CreditgateCallback()
