"""A small OpenAI-compatible gateway metered by creditgate.

    pip install ".[fastapi]"
    DATABASE_URL=sqlite:///gateway.db uvicorn examples.fastapi_gateway:app

Endpoints:
  POST /v1/keys                create an API key for a user (402 until paid)
  POST /v1/webhooks/payments   the payment processor's webhook (idempotent)
  POST /v1/chat/completions    OpenAI chat completions, bearer key, metered
  GET  /v1/credits             the caller's credits, OpenRouter's shape
  GET  /metrics                Prometheus text

Each completion holds its worst-case price before the model runs and settles
the real usage after, so concurrent requests can never spend more than the
account holds. A non-streamed answer carries the balance after its charge in
an `X-Credits-Remaining` header (a stream's headers leave before its charge is
known). The built-in model `echo` answers with the last user message, so the
example runs without any network. Tokens are whitespace-separated words: a
stand-in for the upstream's tokenizer that anyone can check by hand.
"""

import hmac
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import ROUND_CEILING, Decimal
from typing import Annotated, Any, Optional, Union

import anyio
from creditgate import CreditError, Hold, LocalCreditManager, UsageCharge
from creditgate.cli import decimal_text, to_json
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

MAX_COMPLETION_TOKENS = 4096  # the cap on any request's output, and so on its hold
HOLD_TTL_SECONDS = 300  # a hold abandoned by a crashed worker frees itself


# ----- the model --------------------------------------------------------------


def count_tokens(text: str) -> int:
    return len(text.split())


async def echo_model(prompt: str, max_tokens: int) -> AsyncIterator[str]:
    """Streams the prompt back word by word, at most max_tokens words."""
    for i, word in enumerate(prompt.split()[:max_tokens]):
        yield word if i == 0 else " " + word


# Models by name; an upstream LLM client would be one more entry here.
MODELS: dict[str, Callable[[str, int], AsyncIterator[str]]] = {"echo": echo_model}


# ----- requests and errors ----------------------------------------------------


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: Union[str, list[dict[str, Any]], None] = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: keep the text ones
            return " ".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # the client may send fields we ignore
    model: str
    messages: list[Message]
    max_tokens: Optional[int] = None
    max_completion_tokens: Optional[int] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None


class NewKeyRequest(BaseModel):
    user_id: str  # in a real app: the logged-in user of your dashboard session
    name: Optional[str] = None


class Payment(BaseModel):
    payment_id: str
    user_id: str
    amount_minor: int
    currency: str = "USD"


class GatewayError(Exception):
    """An error found by the gateway itself, in creditgate's codes (SPEC §5)."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code, self.code = status_code, code


ERROR_TYPES = {
    401: "authentication_error",
    402: "insufficient_credits",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
}


def error_body(status_code: int, code: str, message: str) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status_code, "invalid_request_error" if status_code < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "code": code}}


def error_response(status_code: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(status_code, code, message), status_code=status_code)


class DecimalJSONResponse(Response):
    """JSON with exact decimal amounts: FastAPI's encoder would turn a Decimal
    into a float, and credits are never floats."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return to_json(content).encode()


# ----- app --------------------------------------------------------------------


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Opened in each worker after the server forked, from DATABASE_URL and the
    # other creditgate settings in the environment.
    app.state.manager = LocalCreditManager()
    yield


app = FastAPI(title="creditgate example gateway", lifespan=lifespan)


@app.exception_handler(CreditError)
async def credit_error(request: Request, exc: CreditError) -> JSONResponse:
    # One handler maps every ledger error: each carries its HTTP status and code.
    return error_response(exc.status_code, exc.code, str(exc))


@app.exception_handler(GatewayError)
async def gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
    return error_response(exc.status_code, exc.code, str(exc))


@app.exception_handler(RequestValidationError)
async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return error_response(400, "invalid_argument", f"{where}: {first.get('msg', 'invalid request')}")


def manager(request: Request) -> LocalCreditManager:
    m: LocalCreditManager = request.app.state.manager
    return m


def bearer_key(authorization: Annotated[Optional[str], Header()] = None) -> str:
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise GatewayError(
            401,
            "invalid_api_key",
            "missing bearer API key (Authorization: Bearer <key>)",
        )
    return key.strip()


Ledger = Annotated[LocalCreditManager, Depends(manager)]
BearerKey = Annotated[str, Depends(bearer_key)]


def caller_key(key: BearerKey, m: Ledger) -> str:
    """A key that is valid and has at least 1 credit available: 401 or 402
    before the request body is even looked at, as OpenAI does."""
    m.verify_api_key_credits(key)
    return key


CallerKey = Annotated[str, Depends(caller_key)]


# ----- keys, payments, credits, metrics -----------------------------------------


@app.post("/v1/keys", status_code=201)
def create_key(body: NewKeyRequest, m: Ledger) -> Response:
    # 402 until the user has paid; the rule is checked in the same
    # transaction as the insert, so two racing requests cannot both pass.
    key = m.create_api_key(body.user_id, body.name)
    fields = {"key": key.secret, "key_id": key.key_id, "name": key.name, "prefix": key.prefix}
    return DecimalJSONResponse({**fields, "created_at": key.created_at}, status_code=201)


@app.post("/v1/webhooks/payments")
def payment_webhook(
    body: Payment,
    m: Ledger,
    x_webhook_secret: Annotated[Optional[str], Header()] = None,
) -> Response:
    # Verify the processor's signature here (e.g. stripe.Webhook.construct_event);
    # this example accepts a shared secret when WEBHOOK_SECRET is set.
    expected = os.environ.get("WEBHOOK_SECRET")
    # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
    if expected and not hmac.compare_digest(expected.encode(), (x_webhook_secret or "").encode()):
        raise GatewayError(401, "invalid_api_key", "bad webhook secret")
    # Idempotent on payment_id: a webhook delivered twice credits once.
    entry = m.record_payment(body.user_id, body.payment_id, body.amount_minor, body.currency)
    return DecimalJSONResponse(
        {
            "credited": entry.amount,
            "balance": entry.balance_after,
            "replayed": entry.replayed,
        }
    )


@app.get("/v1/credits")
def credits(key: BearerKey, m: Ledger) -> Response:
    who = m.verify_api_key_credits(key, min_credits=0)  # 200 at 0 credits too
    account = m.account(who.user_id)
    # total_credits - total_usage == balance, as in OpenRouter's endpoint.
    data = {
        "total_credits": account.balance + account.lifetime_used,
        "total_usage": account.lifetime_used,
        "available": account.available,
    }
    return DecimalJSONResponse({"data": data})


@app.get("/metrics")
def metrics(m: Ledger) -> PlainTextResponse:
    return PlainTextResponse(m.metrics_prometheus(), media_type="text/plain; version=0.0.4")


# ----- chat completions -------------------------------------------------------


def worst_case_hold(
    m: LocalCreditManager,
    key: str,
    model: str,
    prompt: int,
    max_out: int,
    request_id: str,
) -> Hold:
    """Holds the most this request can cost, or raises 402."""
    price = m.list_model_prices().get(model)
    if price is None:  # the default price is the same for input and output tokens
        return m.reserve(
            key,
            tokens=prompt + max_out,
            model=model,
            ttl_seconds=HOLD_TTL_SECONDS,
            request_id=request_id,
        )
    input_per_1k, output_per_1k = price
    worst = ((prompt * input_per_1k + max_out * output_per_1k) / 1000).quantize(
        Decimal("0.000001"), rounding=ROUND_CEILING
    )
    return m.reserve(
        key,
        credits=max(worst, Decimal("0.000001")),
        ttl_seconds=HOLD_TTL_SECONDS,
        request_id=request_id,
    )


def usage_body(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


@app.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatRequest, key: CallerKey, m: Ledger) -> Union[JSONResponse, StreamingResponse]:
    model = MODELS.get(body.model)
    if model is None:
        raise GatewayError(404, "not_found", f"model {body.model!r} does not exist (try 'echo')")
    prompt_text = next((msg.text() for msg in reversed(body.messages) if msg.role == "user"), "")
    prompt_tokens = sum(count_tokens(msg.text()) for msg in body.messages)
    requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if requested is not None and requested < 1:
        raise GatewayError(400, "invalid_argument", f"max_tokens must be at least 1, got {requested}")
    max_out = min(requested or MAX_COMPLETION_TOKENS, MAX_COMPLETION_TOKENS)
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    # Ledger calls block on the database: run them off the event loop.
    hold = await run_in_threadpool(worst_case_hold, m, key, body.model, prompt_tokens, max_out, request_id)
    call = Completion(m, hold.hold_id, request_id, body.model, prompt_tokens, max_out)
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        chunks = call.stream(model(prompt_text, max_out), include_usage)
        return SettlingStreamingResponse(chunks, media_type="text/event-stream")
    try:
        text = "".join([piece async for piece in model(prompt_text, max_out)])
    except BaseException:
        with anyio.CancelScope(shield=True):  # the model failed: charge nothing
            await run_in_threadpool(m.release, hold.hold_id)
        raise
    charge = await call.settle(count_tokens(text))
    # Sent only now, after the charge is committed.
    return JSONResponse(
        {
            "id": request_id,
            "object": "chat.completion",
            "created": call.created,
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": call.finish_reason(count_tokens(text)),
                }
            ],
            "usage": usage_body(prompt_tokens, count_tokens(text)),
        },
        headers={"X-Credits-Remaining": decimal_text(charge.balance)},
    )


class Completion:
    """One metered call: its hold, and settlement exactly once."""

    def __init__(
        self,
        m: LocalCreditManager,
        hold_id: str,
        request_id: str,
        model: str,
        prompt_tokens: int,
        max_out: int,
    ) -> None:
        self.m = m
        self.hold_id = hold_id
        self.request_id = request_id
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.max_out = max_out
        self.created = int(time.time())
        self.settled = False

    async def settle(self, completion_tokens: int) -> UsageCharge:
        # Shielded: a client that goes away mid-settle must not cancel the charge.
        with anyio.CancelScope(shield=True):
            charge = await run_in_threadpool(
                self.m.settle,
                self.hold_id,
                input_tokens=self.prompt_tokens,
                output_tokens=completion_tokens,
                model=self.model,
            )
        self.settled = True
        return charge

    def finish_reason(self, completion_tokens: int) -> str:
        return "length" if completion_tokens >= self.max_out else "stop"

    def event(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        """One server-sent event: a chunk in OpenAI's shape."""
        body = {
            "id": self.request_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }
        return f"data: {to_json(body)}\n\n"

    def delta(self, delta: dict[str, Any], finish_reason: Optional[str] = None, **extra: Any) -> str:
        return self.event([{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra)

    async def stream(self, pieces: AsyncIterator[str], include_usage: bool) -> AsyncIterator[str]:
        """SSE chunks in OpenAI's shape; the charge is committed before `[DONE]`."""
        usage_null: dict[str, Any] = {"usage": None} if include_usage else {}
        sent = 0  # completion tokens streamed so far: what a disconnect is charged
        try:
            yield self.delta({"role": "assistant", "content": ""}, **usage_null)
            async for piece in pieces:
                sent += count_tokens(piece)
                yield self.delta({"content": piece}, **usage_null)
            await self.settle(sent)
            yield self.delta({}, self.finish_reason(sent), **usage_null)
            if include_usage:  # as OpenAI: a last chunk with no choices and the usage
                yield self.event([], usage=usage_body(self.prompt_tokens, sent))
            yield "data: [DONE]\n\n"
        except CreditError as exc:  # headers are gone: report in-band, as OpenAI does
            yield f"data: {to_json(error_body(exc.status_code, exc.code, str(exc)))}\n\n"
        finally:
            if not self.settled:  # the client left mid-stream: charge what it was sent
                await self.settle(sent)


class SettlingStreamingResponse(StreamingResponse):
    """Closes the body generator when the client disconnects, so its `finally`
    settles the hold at once rather than whenever the generator is collected."""

    def __init__(self, content: AsyncIterator[str], media_type: str) -> None:
        super().__init__(content, media_type=media_type)
        self.generator = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.generator, "aclose", None)
            if aclose is not None:
                await aclose()
