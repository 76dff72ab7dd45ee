"""A small OpenAI-compatible gateway metered by creditgate.

From the repository root (the package is installed from the clone):

    python3 -m venv .venv && .venv/bin/pip install '.[fastapi]'
    export DATABASE_URL=sqlite:///gateway.db
    export WEBHOOK_SECRET=...        # shared with the payment processor
    export GATEWAY_ADMIN_TOKEN=...   # for POST /v1/keys
    .venv/bin/uvicorn examples.fastapi_gateway:app

Endpoints, and who may call them:
  POST /v1/keys                create an API key for a user (402 until paid).
                               HOST AUTHENTICATION NEEDED: it issues keys for any
                               user_id. Here guarded by `X-Admin-Token:
                               $GATEWAY_ADMIN_TOKEN`; in your app, by your
                               dashboard's login (the user_id is the session's).
  POST /v1/webhooks/payments   the payment processor's webhook (idempotent).
                               HOST AUTHENTICATION NEEDED: it credits accounts.
                               Here guarded by `X-Webhook-Secret: $WEBHOOK_SECRET`;
                               in your app, by the processor's signature check.
  POST /v1/chat/completions    OpenAI chat completions, bearer key, metered
  GET  /v1/credits             the caller's credits (bearer key)
  GET  /metrics                Prometheus text: expose it to your scraper only

Fails closed: without WEBHOOK_SECRET the webhook answers 503 and credits
nothing; without GATEWAY_ADMIN_TOKEN `/v1/keys` answers 503. A wrong or
missing secret or token is 401. Both are compared in constant time.

Built on creditgate's FastAPI glue (creditgate.fastapi, docs/fastapi.md):
bearer-key dependencies, errors in OpenAI's shape with creditgate's codes, the
`X-Credits-Remaining` header, and metering. Ledger calls go through an
AsyncLocalCreditManager, so they never block the event loop.

Each completion holds its worst-case price before the model runs and settles
the real usage after, so concurrent requests can never spend more than the
account holds. A non-streamed answer carries the balance after its charge in
`X-Credits-Remaining` (a stream's headers leave before its charge is known:
they carry what was available when the key was checked). A stream is charged
before its `[DONE]`, and a client that hangs up mid-stream is charged for
what it was sent. The built-in model `echo` answers with the last user
message, so the example runs without any network. Tokens are
whitespace-separated words: a stand-in for the upstream's tokenizer that
anyone can check by hand.
"""

import hmac
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Optional, Union

from creditgate import AsyncLocalCreditManager, Verification
from creditgate.fastapi import APIError, BearerKey, CreditGate, DecimalJSONResponse, Meter, to_json
from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict

WEBHOOK_SECRET_ENV = "WEBHOOK_SECRET"  # the payment webhook's shared secret
ADMIN_TOKEN_ENV = "GATEWAY_ADMIN_TOKEN"  # the token POST /v1/keys requires
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


# ----- app --------------------------------------------------------------------


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Opened in each worker after the server forked, from DATABASE_URL and the
    # other creditgate settings in the environment (off the event loop).
    async with await AsyncLocalCreditManager.open() as credits:
        app.state.credits = credits
        app.state.manager = credits.sync  # the same ledger, for synchronous code
        yield


app = FastAPI(title="creditgate example gateway", lifespan=lifespan)
gate = CreditGate()  # the ledger of each request: app.state.credits
# Every CreditError (and APIError) answered with its status in OpenAI's error
# shape, validation errors as 400 invalid_argument, X-Credits-Remaining.
gate.install(app)


def ledger(request: Request) -> AsyncLocalCreditManager:
    m: AsyncLocalCreditManager = request.app.state.credits
    return m


Ledger = Annotated[AsyncLocalCreditManager, Depends(ledger)]
# A valid key with at least 1 credit available: 401 or 402 before the request
# body is even looked at, as OpenAI does.
Caller = Annotated[Verification, Depends(gate.verified())]
# A valid key at any balance (GET /v1/credits answers 200 also at 0 credits).
KeyOwner = Annotated[Verification, Depends(gate.authenticated())]


# ----- keys, payments, credits, metrics -----------------------------------------


def require_secret(env_name: str, given: Optional[str], what: str) -> None:
    """Fails closed: 503 when the secret is not configured, 401 when the
    request's does not match (compared in constant time)."""
    expected = os.environ.get(env_name)
    if not expected:
        raise APIError(503, "not_configured", f"{what} is disabled: set {env_name} on the server")
    # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
    if not hmac.compare_digest(expected.encode(), (given or "").encode()):
        raise APIError(401, "invalid_api_key", f"bad or missing {what} credentials")


def admin(x_admin_token: Annotated[Optional[str], Header()] = None) -> None:
    """The host's own authentication for POST /v1/keys (checked before the body)."""
    require_secret(ADMIN_TOKEN_ENV, x_admin_token, "key creation")


def payment_processor(x_webhook_secret: Annotated[Optional[str], Header()] = None) -> None:
    """The host's own authentication for the payment webhook (checked before the body)."""
    # In a real app: verify the processor's signature (e.g. stripe.Webhook.construct_event).
    require_secret(WEBHOOK_SECRET_ENV, x_webhook_secret, "the payment webhook")


# Issues a key for any user_id: only the host's own authentication may call
# it. Here an admin token; in a real app, the dashboard's login, with the
# user_id taken from the session rather than the body.
@app.post("/v1/keys", status_code=201, dependencies=[Depends(admin)])
async def create_key(body: NewKeyRequest, m: Ledger) -> Response:
    # 402 until the user has paid; the rule is checked in the same
    # transaction as the insert, so two racing requests cannot both pass.
    key = await m.create_api_key(body.user_id, body.name)
    fields = {"key": key.secret, "key_id": key.key_id, "name": key.name, "prefix": key.prefix}
    return DecimalJSONResponse({**fields, "created_at": key.created_at}, status_code=201)


# Credits accounts: only the payment processor may call it. This example
# requires a shared secret and credits nothing while WEBHOOK_SECRET is unset.
@app.post("/v1/webhooks/payments", dependencies=[Depends(payment_processor)])
async def payment_webhook(body: Payment, m: Ledger) -> Response:
    # Idempotent on payment_id: a webhook delivered twice credits once.
    entry = await m.record_payment(body.user_id, body.payment_id, body.amount_minor, body.currency)
    return DecimalJSONResponse(
        {
            "credited": entry.amount,
            "balance": entry.balance_after,
            "replayed": entry.replayed,
        }
    )


@app.get("/v1/credits")
async def credits(who: KeyOwner, m: Ledger) -> Response:
    account = await m.account(who.user_id)
    # total_credits - total_usage == balance, as in OpenRouter's endpoint.
    data = {
        "total_credits": account.balance + account.lifetime_used,
        "total_usage": account.lifetime_used,
        "available": account.available,
    }
    return DecimalJSONResponse({"data": data})


@app.get("/metrics")
async def metrics(m: Ledger) -> PlainTextResponse:
    return PlainTextResponse(await m.metrics_prometheus(), media_type="text/plain; version=0.0.4")


# ----- chat completions -------------------------------------------------------


def usage_body(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


@app.post("/v1/chat/completions", response_model=None)
async def chat_completions(request: Request, body: ChatRequest, caller: Caller, key: BearerKey) -> Response:
    model = MODELS.get(body.model)
    if model is None:
        raise APIError(404, "not_found", f"model {body.model!r} does not exist (try 'echo')")
    prompt_text = next((msg.text() for msg in reversed(body.messages) if msg.role == "user"), "")
    prompt_tokens = sum(count_tokens(msg.text()) for msg in body.messages)
    requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if requested is not None and requested < 1:
        raise APIError(400, "invalid_argument", f"max_tokens must be at least 1, got {requested}")
    max_out = min(requested or MAX_COMPLETION_TOKENS, MAX_COMPLETION_TOKENS)
    # Holds the most this request can cost (prompt + max_out at the model's
    # prices), or raises 402.
    meter = await gate.meter(
        request,
        key,
        model=body.model,
        input_tokens=prompt_tokens,
        max_output_tokens=max_out,
        ttl_seconds=HOLD_TTL_SECONDS,
    )
    call = Completion(meter, body.model, max_out)
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        # Settles what was sent if the client hangs up mid-stream.
        return meter.stream(call.events(model(prompt_text, max_out), include_usage))
    async with meter:  # the model fails: the hold is released, nothing charged
        text = "".join([piece async for piece in model(prompt_text, max_out)])
        await meter.settle(count_tokens(text))
    # Sent only now, after the charge is committed; X-Credits-Remaining is
    # the balance after it.
    return JSONResponse(
        {
            "id": call.request_id,
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
        }
    )


class Completion:
    """One completion's chunks in OpenAI's shape; the meter does the money."""

    def __init__(self, meter: Meter, model: str, max_out: int) -> None:
        self.meter = meter
        self.request_id = meter.request_id or meter.hold_id
        self.model = model
        self.max_out = max_out
        self.created = int(time.time())

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

    async def events(self, pieces: AsyncIterator[str], include_usage: bool) -> AsyncIterator[str]:
        """SSE chunks; the charge is committed before `[DONE]`. A CreditError
        after the headers are gone is sent in-band by the meter's stream."""
        usage_null: dict[str, Any] = {"usage": None} if include_usage else {}
        yield self.delta({"role": "assistant", "content": ""}, **usage_null)
        async for piece in pieces:
            self.meter.add(count_tokens(piece))  # counted as it is handed over
            yield self.delta({"content": piece}, **usage_null)
        await self.meter.settle()
        sent = self.meter.output_tokens
        yield self.delta({}, self.finish_reason(sent), **usage_null)
        if include_usage:  # as OpenAI: a last chunk with no choices and the usage
            yield self.event([], usage=usage_body(self.meter.input_tokens, sent))
        yield "data: [DONE]\n\n"
