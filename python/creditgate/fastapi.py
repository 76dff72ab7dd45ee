"""FastAPI glue: bearer-key dependencies, OpenAI-shaped errors, the
``X-Credits-Remaining`` header and metered streaming.

Needs the ``fastapi`` extra (``pip install '.[fastapi]'``)::

    from contextlib import asynccontextmanager
    from typing import Annotated

    from creditgate import AsyncLocalCreditManager, Verification
    from creditgate.fastapi import CreditGate
    from fastapi import Depends, FastAPI

    @asynccontextmanager
    async def lifespan(app):
        async with await AsyncLocalCreditManager.open() as credits:  # DATABASE_URL, ...
            app.state.credits = credits
            yield

    app = FastAPI(lifespan=lifespan)
    gate = CreditGate()          # finds the manager at app.state.credits
    gate.install(app)            # error handlers and the X-Credits-Remaining header

    @app.get("/whoami")
    async def whoami(caller: Annotated[Verification, Depends(gate.verified())]) -> dict[str, str]:
        return {"user": caller.user_id}

Errors are answered in OpenAI's shape, ``{"error": {"message", "type",
"code"}}``, with creditgate's codes and HTTP statuses (docs/reference.md): 401
``invalid_api_key``, 402 ``insufficient_credits``, 503 ``storage``, and so on.

Both managers work: an :class:`~creditgate.AsyncLocalCreditManager` is
awaited directly (preferred: its own bounded thread pool), a
:class:`~creditgate.LocalCreditManager` is run on AnyIO's worker threads (the
pool Starlette uses for sync endpoints). Neither blocks the event loop.
"""

import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any, Optional, Union

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import _holds as _holds_rule
from ._creditgate import (
    DEFAULT_TTL_SECONDS,
    DEFAULT_VERIFY_MIN_CREDITS,
    CreditError,
    Hold,
    InvalidApiKey,
    LocalCreditManager,
    UsageCharge,
    Verification,
)
from ._json import decimal_text, to_json
from ._usage import UsageTokens, usage_tokens
from .aio import AsyncLocalCreditManager

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "CREDITS_HEADER",
    "APIError",
    "BearerKey",
    "CreditGate",
    "CreditsHeaderMiddleware",
    "DecimalJSONResponse",
    "Ledger",
    "Meter",
    "MeteredStreamingResponse",
    "bearer_key",
    "error_body",
    "error_event",
    "error_response",
    "install",
    "set_credits_remaining",
    "to_json",
]

log = logging.getLogger("creditgate.fastapi")

CREDITS_HEADER = "X-Credits-Remaining"
# Where CreditsHeaderMiddleware leaves the per-request slot for the header.
_SCOPE_KEY = "creditgate.credits_remaining"

#: Either manager; the glue awaits the async one and runs the sync one on a worker thread.
Ledger = Union[LocalCreditManager, AsyncLocalCreditManager]
_Amount = Union[int, Decimal, str]


# ----- errors in OpenAI's shape ---------------------------------------------------


class APIError(Exception):
    """An error found by the application itself (an unknown model, a bad
    parameter), answered like a :class:`~creditgate.CreditError`: use
    creditgate's codes (docs/reference.md) so clients see one vocabulary."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


# OpenAI's `type` for each status; the `code` field carries creditgate's code.
_ERROR_TYPES = {
    401: "authentication_error",
    402: "insufficient_credits",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
}


def error_body(status_code: int, code: str, message: str) -> dict[str, Any]:
    """``{"error": {"message", "type", "code"}}``, as OpenAI answers errors."""
    kind = _ERROR_TYPES.get(status_code, "invalid_request_error" if status_code < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "code": code}}


def error_response(
    status_code: int, code: str, message: str, headers: Optional[Mapping[str, str]] = None
) -> JSONResponse:
    return JSONResponse(error_body(status_code, code, message), status_code=status_code, headers=headers)


def error_event(exc: Union[CreditError, APIError]) -> str:
    """An error as a server-sent event, for a stream whose status line is
    already sent (OpenAI reports such errors in-band the same way)."""
    return f"data: {to_json(error_body(exc.status_code, exc.code, str(exc)))}\n\n"


async def _credit_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, (CreditError, APIError))
    # A storage error is transient and a rate limit ends with its minute:
    # tell well-behaved clients when to come back.
    headers = None
    if exc.status_code == 503:
        headers = {"Retry-After": "1"}
    elif exc.status_code == 429:
        headers = {"Retry-After": str(getattr(exc, "retry_after", 1))}
    return error_response(exc.status_code, exc.code, str(exc), headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return error_response(400, "invalid_argument", f"{where}: {first.get('msg', 'invalid request')}")


class DecimalJSONResponse(Response):
    """JSON with exact decimal amounts (``4998.5``, never through float):
    FastAPI's encoder would turn a ``Decimal`` into a float."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return to_json(content).encode()


# ----- the X-Credits-Remaining header ------------------------------------------------


class _Slot:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: Optional[str] = None


class CreditsHeaderMiddleware:
    """Adds ``X-Credits-Remaining`` to the response of every request that
    authenticated a key through the glue (errors after authentication too).
    The value is the latest the request knows: the available credits when the
    key was checked, then the balance after each charge the glue committed
    before the response started (:meth:`Meter.settle`,
    :func:`set_credits_remaining`). Installed by :func:`install`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        slot = _Slot()
        scope[_SCOPE_KEY] = slot

        async def send_with_credits(message: Message) -> None:
            if message["type"] == "http.response.start" and slot.value is not None:
                headers = list(message.get("headers", ()))
                name = CREDITS_HEADER.lower().encode()
                if not any(k.lower() == name for k, _ in headers):
                    headers.append((name, slot.value.encode()))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_credits)


def set_credits_remaining(request: Request, credits: Decimal) -> None:
    """Sets what this request's ``X-Credits-Remaining`` header will say (exact
    decimal text), if its response has not started yet."""
    slot = request.scope.get(_SCOPE_KEY)
    if not isinstance(slot, _Slot):
        raise RuntimeError("X-Credits-Remaining needs the middleware: call creditgate.fastapi.install(app) first")
    slot.value = decimal_text(credits)


def install(app: FastAPI, *, validation_errors: bool = True) -> None:
    """Answers every :class:`~creditgate.CreditError` (and :class:`APIError`)
    with its HTTP status and OpenAI's error shape (503 with ``Retry-After``
    for ``StorageError``), request validation errors with 400
    ``invalid_argument`` (unless ``validation_errors=False``), and adds the
    ``X-Credits-Remaining`` header (:class:`CreditsHeaderMiddleware`). Call
    it once, before the app starts."""
    app.add_exception_handler(CreditError, _credit_error)
    app.add_exception_handler(APIError, _credit_error)
    if validation_errors:
        app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(CreditsHeaderMiddleware)


# ----- bearer keys ------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="A creditgate API key: `Authorization: Bearer sk_...`")


def bearer_key(
    credentials: Annotated[Optional[HTTPAuthorizationCredentials], Depends(_bearer)],
) -> str:
    """The API key of ``Authorization: Bearer <key>``; 401 ``invalid_api_key``
    when missing. A dependency: use ``Annotated[str, Depends(bearer_key)]``
    (cached per request, so it is parsed once)."""
    key = credentials.credentials.strip() if credentials is not None else ""
    if not key:
        raise InvalidApiKey("missing bearer API key (Authorization: Bearer <key>)")
    return key


BearerKey = Annotated[str, Depends(bearer_key)]


async def _call(ledger: Ledger, name: str, *args: Any, **kwargs: Any) -> Any:
    """``ledger.<name>(...)`` without blocking the loop."""
    method = getattr(ledger, name)
    if isinstance(ledger, AsyncLocalCreditManager):
        return await method(*args, **kwargs)
    return await run_in_threadpool(method, *args, **kwargs)


# ----- the gate -------------------------------------------------------------------


class CreditGate:
    """Dependencies and metering for one ledger.

    ``manager`` is the ledger to use, or ``None`` to take it from
    ``request.app.state.<state_attr>`` (default ``credits``) at each request,
    which is where a lifespan handler puts a manager opened in the worker
    process."""

    def __init__(self, manager: Optional[Ledger] = None, *, state_attr: str = "credits") -> None:
        if manager is not None and not isinstance(manager, (LocalCreditManager, AsyncLocalCreditManager)):
            raise TypeError(f"manager must be a LocalCreditManager or AsyncLocalCreditManager, not {type(manager)}")
        self._manager = manager
        self._state_attr = state_attr

    def install(self, app: FastAPI, *, validation_errors: bool = True) -> None:
        """:func:`install` (error handlers and the header middleware)."""
        install(app, validation_errors=validation_errors)

    def ledger(self, request: Request) -> Ledger:
        """The manager of this request's app. Also a dependency."""
        if self._manager is not None:
            return self._manager
        manager = getattr(request.app.state, self._state_attr, None)
        if not isinstance(manager, (LocalCreditManager, AsyncLocalCreditManager)):
            raise RuntimeError(
                f"no creditgate manager at app.state.{self._state_attr}: set it in the app's lifespan, "
                "or pass one to CreditGate(manager)"
            )
        return manager

    def verified(self, min_credits: _Amount = DEFAULT_VERIFY_MIN_CREDITS) -> Callable[..., Awaitable[Verification]]:
        """A dependency giving the handler the caller's :class:`~creditgate.Verification`:
        a valid bearer key whose account has at least ``min_credits`` available
        (401 ``invalid_api_key``, 402 ``insufficient_credits``, 429
        ``rate_limited`` with ``Retry-After`` when the key has a rate limit,
        before the body is even parsed). Sets ``X-Credits-Remaining`` to what is available."""

        async def verified_key(request: Request, key: BearerKey) -> Verification:
            v: Verification = await _call(self.ledger(request), "verify_api_key_credits", key, min_credits)
            set_credits_remaining(request, v.available)
            return v

        return verified_key

    def authenticated(self) -> Callable[..., Awaitable[Verification]]:
        """A dependency that checks the bearer key only (401), never the credits:
        for endpoints that must answer at any balance, such as "my credits"
        (``authenticate_api_key``; ``available`` may be 0 or negative)."""

        async def authenticated_key(request: Request, key: BearerKey) -> Verification:
            v: Verification = await _call(self.ledger(request), "authenticate_api_key", key)
            set_credits_remaining(request, v.available)
            return v

        return authenticated_key

    async def meter(
        self,
        request: Request,
        api_key: str,
        *,
        model: Optional[str] = None,
        input_tokens: int = 0,
        max_output_tokens: int = 0,
        credits: Optional[_Amount] = None,
        request_id: Optional[str] = None,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
    ) -> "Meter":
        """Reserves the most the call can cost and returns its :class:`Meter`.

        The worst case is ``input_tokens`` at ``model``'s input rate plus
        ``max_output_tokens`` at its output rate, quoted by the ledger
        (``reserve``) by the formula of the charge, or ``credits`` when given.
        Raises ``InsufficientCredits`` (402) when the account cannot cover it,
        so concurrent calls can never spend more than their holds. The hold
        expires after ``ttl_seconds`` (default: the ledger's, ``DEFAULT_TTL_SECONDS``)
        if the process dies before settling.
        ``request_id`` (default: a fresh ``chatcmpl-...`` id) makes the hold
        and its charge idempotent: a retry whose earlier hold was released or
        expired holds anew, and a request already settled is refused
        (``IdempotencyConflict``, 409)."""
        ledger = self.ledger(request)
        base = request_id or f"chatcmpl-{uuid.uuid4().hex}"
        amount: dict[str, Any] = (
            {"credits": credits}
            if credits is not None
            else {"input_tokens": input_tokens, "output_tokens": max_output_tokens, "model": model}
        )
        for request_id in _holds_rule.attempt_ids(base):
            hold: Hold = await _call(
                ledger, "reserve", api_key, **amount, ttl_seconds=ttl_seconds, request_id=request_id
            )
            if _holds_rule.covers(hold, request_id):
                return Meter(ledger, hold, request_id=base, model=model, input_tokens=input_tokens, request=request)
        raise _holds_rule.exhausted(base)


# ----- metering ---------------------------------------------------------------------


class Meter:
    """One metered call: its hold, the output counted so far, and settlement
    exactly once.

    Count output with :meth:`add` as it is handed to the client; settle with
    :meth:`settle` (the real usage), or :meth:`release` to charge nothing.
    Used as ``async with``, a block that raises releases the hold and one that
    ends without settling settles what was counted. :meth:`stream` makes a
    streamed response that settles what was sent when the client goes away."""

    def __init__(
        self,
        ledger: Ledger,
        hold: Hold,
        *,
        request_id: Optional[str] = None,
        model: Optional[str] = None,
        input_tokens: int = 0,
        request: Optional[Request] = None,
    ) -> None:
        self.ledger = ledger
        self.hold = hold
        self.request_id = request_id
        self.model = model
        self.input_tokens = input_tokens
        self.output_tokens = 0
        # Of input_tokens: read from, and written to, the provider's cache.
        self.cached_input_tokens = 0
        self.cache_write_tokens = 0
        self.charge: Optional[UsageCharge] = None
        self.released = False
        self._request = request

    @property
    def hold_id(self) -> str:
        return self.hold.hold_id

    @property
    def finished(self) -> bool:
        """Settled or released."""
        return self.charge is not None or self.released

    def add(self, output_tokens: int) -> None:
        """Counts output tokens handed to the client (what a disconnect is charged)."""
        if isinstance(output_tokens, bool) or not isinstance(output_tokens, int):
            raise TypeError(f"output_tokens must be an int, not {type(output_tokens).__name__}")
        if output_tokens < 0:
            raise ValueError(f"output_tokens must not be negative, got {output_tokens}")
        self.output_tokens += output_tokens

    async def settle(self, output_tokens: Optional[int] = None, *, usage: Any = None) -> UsageCharge:
        """Charges ``input_tokens`` plus ``output_tokens`` (default: what was
        counted) of ``model`` and frees the hold. Exactly once: a second call
        returns the first charge. Shielded from cancellation, so a client that
        leaves mid-settle cannot cancel the charge. Sets the request's
        ``X-Credits-Remaining`` to the balance after the charge.

        ``usage`` (instead of ``output_tokens``) is the provider's usage, the
        ``usage`` of an OpenAI-style response (a mapping or an object): its
        prompt and completion tokens replace the meter's, and the prompt
        tokens it read from and wrote to the provider's cache
        (``prompt_tokens_details.cached_tokens``, ...) are charged at the
        model's cache rates (``creditgate._usage`` reads it; a malformed count
        reads as 0)."""
        if output_tokens is not None and usage is not None:
            raise TypeError("pass output_tokens or usage, not both")
        if self.charge is not None:
            return self.charge
        if self.released:
            raise RuntimeError(f"hold {self.hold_id} was released: there is nothing to settle")
        if output_tokens is not None:
            self.output_tokens = 0
            self.add(output_tokens)
        if usage is not None:
            self.input_tokens, self.output_tokens, self.cached_input_tokens, self.cache_write_tokens = usage_tokens(
                usage
            )
        # The cache counts are passed only when not 0.
        cache = UsageTokens(
            self.input_tokens, self.output_tokens, self.cached_input_tokens, self.cache_write_tokens
        ).cache_kwargs()
        with anyio.CancelScope(shield=True):
            charge: UsageCharge = await _call(
                self.ledger,
                "settle",
                self.hold_id,
                input_tokens=self.input_tokens,
                output_tokens=self.output_tokens,
                model=self.model,
                **cache,
            )
        self.charge = charge
        if self._request is not None and isinstance(self._request.scope.get(_SCOPE_KEY), _Slot):
            set_credits_remaining(self._request, charge.balance)
        return charge

    async def release(self) -> None:
        """Frees the hold without charging (the call failed before producing
        anything). A no-op once settled or released. Shielded."""
        if self.finished:
            return
        with anyio.CancelScope(shield=True):
            await _call(self.ledger, "release", self.hold_id)
        self.released = True

    async def __aenter__(self) -> "Self":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self.finished:
            return
        if exc_type is None or self.output_tokens > 0:
            await self.settle()  # what was produced is charged, even on failure
        else:
            await self.release()

    def stream(
        self,
        body: AsyncIterable[Union[str, bytes]],
        *,
        media_type: str = "text/event-stream",
        status_code: int = 200,
        headers: Optional[Mapping[str, str]] = None,
        on_error: Optional[Callable[[Union[CreditError, APIError]], Union[str, bytes]]] = error_event,
    ) -> "MeteredStreamingResponse":
        """A streamed response of ``body`` that is always charged.

        ``body`` yields the chunks and calls :meth:`add` for the tokens of
        each before yielding it; it should ``await meter.settle()`` before its
        last chunks (e.g. before ``data: [DONE]``), so the charge is committed
        before the client sees the end. If ``body`` ends without settling, the
        meter settles after it. If the client disconnects, or ``body`` fails,
        mid-stream, the meter settles what was counted so far, which frees the
        rest of the hold. A ``CreditError`` or ``APIError`` raised by ``body``
        after the headers are gone is sent in-band by ``on_error`` (default:
        an OpenAI-shaped ``data:`` event); ``None`` re-raises it."""
        return MeteredStreamingResponse(
            self._metered(body, on_error), status_code=status_code, headers=headers, media_type=media_type
        )

    async def _metered(
        self,
        body: AsyncIterable[Union[str, bytes]],
        on_error: Optional[Callable[[Union[CreditError, APIError]], Union[str, bytes]]],
    ) -> AsyncIterator[Union[str, bytes]]:
        iterator = body.__aiter__()
        try:
            async for chunk in iterator:
                yield chunk
            if not self.finished:
                await self.settle()
        except (CreditError, APIError) as exc:
            if on_error is None:
                raise
            yield on_error(exc)
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
            if not self.finished:
                # The client left, or the body failed: charge what was sent.
                try:
                    await self.settle()
                except CreditError:
                    # Nobody is left to tell; the operator must reconcile this one.
                    log.exception(
                        "creditgate: could not settle hold %s (%d input + %d output tokens of %s) after the stream "
                        "ended early",
                        self.hold_id,
                        self.input_tokens,
                        self.output_tokens,
                        self.model,
                    )


class MeteredStreamingResponse(StreamingResponse):
    """A ``StreamingResponse`` that closes its body generator as soon as the
    client disconnects (or the server cancels the response), so the body's
    ``finally`` settles the hold at once rather than whenever the generator
    is garbage-collected."""

    def __init__(
        self,
        content: AsyncIterator[Union[str, bytes]],
        status_code: int = 200,
        headers: Optional[Mapping[str, str]] = None,
        media_type: Optional[str] = None,
    ) -> None:
        super().__init__(content, status_code=status_code, headers=headers, media_type=media_type)
        self._generator = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self._generator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
