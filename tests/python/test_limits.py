"""Limits and defaults live in one place, src/limits.rs, exported by the native
module as constants (``creditgate._creditgate.DEFAULT_TTL_SECONDS``, ...).

Every numeric default of a public function of the package (the native
manager's text signatures, its stub, the asyncio manager, the FastAPI glue,
the Prometheus and Stripe helpers, the command line) must be one of those
constants, or a Python-only constant of its own module, with the same value:
a number repeated by hand that drifts from the core fails here, and so does
a new numeric default nobody registered below."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import creditgate._creditgate as native
import pytest
from creditgate import AsyncLocalCreditManager, LocalCreditManager

ROOT = Path(__file__).resolve().parents[2]
STUB = ROOT / "python" / "creditgate" / "_creditgate.pyi"

# (parameter name -> the constant its default must equal), per public
# callable; "module:NAME" names a Python-only constant of that module.
MANAGER_DEFAULTS = {
    "add_credits": {"priority": "DEFAULT_GRANT_PRIORITY"},
    "record_payment": {"priority": "DEFAULT_GRANT_PRIORITY"},
    "expire_grants": {"limit": "DEFAULT_EXPIRE_LIMIT"},
    "transactions": {"limit": "DEFAULT_PAGE_LIMIT"},
    "member_transactions": {"limit": "DEFAULT_PAGE_LIMIT"},
    "topups": {"limit": "DEFAULT_PAGE_LIMIT"},
    "events": {"limit": "DEFAULT_EVENTS_LIMIT"},
    "list_accounts": {"limit": "DEFAULT_PAGE_LIMIT"},
    "holds": {"limit": "DEFAULT_PAGE_LIMIT"},
    "recent_events": {"limit": "DEFAULT_EVENTS_LIMIT"},
    "verify_api_key_credits": {"min_credits": "DEFAULT_VERIFY_MIN_CREDITS"},
    "reserve": {"ttl_seconds": "DEFAULT_TTL_SECONDS"},
    "webhook_dead_letters": {"limit": "DEFAULT_EVENTS_LIMIT"},
    "deliver_webhooks": (
        DELIVERY := {
            "timeout_ms": "DEFAULT_WEBHOOK_TIMEOUT_MS",
            "max_attempts": "DEFAULT_WEBHOOK_MAX_ATTEMPTS",
            "backoff_base_ms": "DEFAULT_WEBHOOK_BACKOFF_BASE_MS",
            "backoff_max_ms": "DEFAULT_WEBHOOK_BACKOFF_MAX_MS",
            "batch_size": "DEFAULT_WEBHOOK_BATCH_SIZE",
        }
    ),
    "handle_events": DELIVERY,
}
STRIPE = {"tolerance": "creditgate.stripe:DEFAULT_TOLERANCE_SECONDS",
          "retry_for": "creditgate.stripe:DEFAULT_UNKNOWN_PAYMENT_RETRY_SECONDS"}  # fmt: skip
REPORT_TTL = {"report_ttl_seconds": "creditgate.prometheus:DEFAULT_REPORT_TTL_SECONDS"}
MODULE_DEFAULTS: dict[str, dict[str, dict[str, str]]] = {
    "creditgate.fastapi": {
        "CreditGate.verified": {"min_credits": "DEFAULT_VERIFY_MIN_CREDITS"},
        "CreditGate.meter": {"ttl_seconds": "DEFAULT_TTL_SECONDS"},
    },
    "creditgate.prometheus": {
        "CreditgateCollector.__init__": REPORT_TTL,
        "MultiprocessMirror.__init__": REPORT_TTL,
        "register": REPORT_TTL,
    },
    "creditgate.webhooks": {
        "Worker.__init__": (INTERVAL := {"interval": "creditgate.webhooks:DEFAULT_INTERVAL_SECONDS"}),
        "run_worker": INTERVAL,
    },
    "creditgate.stripe": {
        "handle_event": STRIPE,
        "handle_event_async": STRIPE,
        "stripe_router": STRIPE,
    },
}
# Numeric defaults that are not limits: a cursor's start, a count that is
# zero unless given (a count, a fee), an HTTP status.
NOT_LIMITS = {
    ("events", "after"),
    ("list_accounts", "offset"),
    ("record_usage", "cached_input_tokens"),
    ("record_usage", "cache_write_tokens"),
    ("settle", "cached_input_tokens"),
    ("settle", "cache_write_tokens"),
    ("set_model_price", "request_fee"),
    ("Meter.__init__", "input_tokens"),
    ("CreditGate.meter", "input_tokens"),
    ("CreditGate.meter", "max_output_tokens"),
    ("DecimalJSONResponse.__init__", "status_code"),
    ("Meter.stream", "status_code"),
    ("PassReport.__init__", "sent"),
    ("PassReport.__init__", "failed"),
    ("PassReport.__init__", "dead_lettered"),
    ("PassReport.__init__", "busy"),
    ("MeteredStreamingResponse.__init__", "status_code"),
}


def constant(name: str) -> Any:
    if ":" in name:
        module, _, attr = name.partition(":")
        return getattr(importlib.import_module(module), attr)
    return getattr(native, name)


def numeric(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check(where: str, table: dict[str, dict[str, str]], defaults: dict[str, dict[str, object]]) -> None:
    """Every numeric default in ``defaults`` (callable -> parameter -> value)
    is registered in ``table`` or NOT_LIMITS, and equals its constant; every
    entry of ``table`` exists."""
    for fn, params in defaults.items():
        for param, value in params.items():
            if not numeric(value) or (fn, param) in NOT_LIMITS:
                continue
            name = table.get(fn, {}).get(param)
            assert name is not None, f"{where}: {fn}({param}={value!r}) is not a limits constant: register it"
            assert value == constant(name), f"{where}: {fn}({param}={value!r}) but {name} is {constant(name)!r}"
    for fn, registered in table.items():
        for param in registered:
            assert param in defaults.get(fn, {}), f"{where}: {fn} has no default for {param}"


def signature_defaults(fn: Callable[..., Any]) -> dict[str, object]:
    return {
        p.name: p.default for p in inspect.signature(fn).parameters.values() if p.default is not inspect.Parameter.empty
    }


def public_methods(cls: type) -> Iterator[tuple[str, Callable[..., Any]]]:
    for name, member in vars(cls).items():
        if callable(member) and (not name.startswith("_") or name == "__init__"):
            yield name, getattr(cls, name)


def test_the_native_module_exports_every_limit_of_the_core() -> None:
    src = (ROOT / "src" / "limits.rs").read_text(encoding="utf-8")
    names = set(re.findall(r"^pub const ([A-Z0-9_]+):", src, re.M))
    exported = {
        n for n in dir(native) if re.fullmatch(r"(DEFAULT|MAX|MIN)_[A-Z0-9_]+|MICROS_PER_CREDIT|RESERVED_\w+", n)
    }
    assert names == exported, (sorted(names - exported), sorted(exported - names))
    stubbed = set(re.findall(r"^([A-Z][A-Z0-9_]+): Final\[", STUB.read_text(encoding="utf-8"), re.M))
    stubbed -= {"EVENT_KINDS"}  # the event kinds' names: a constant, not a limit
    assert stubbed == names, (sorted(names - stubbed), sorted(stubbed - names))


def test_the_native_module_values_are_the_core_values() -> None:
    """Spot checks of the values docs/reference.md states."""
    assert native.DEFAULT_TTL_SECONDS == 600
    assert (native.DEFAULT_PAGE_LIMIT, native.DEFAULT_EVENTS_LIMIT, native.DEFAULT_EXPIRE_LIMIT) == (50, 100, 1000)
    assert native.MAX_PAGE_LIMIT == 1000 and native.MAX_TTL_SECONDS == 86_400
    assert native.MAX_AMOUNT_MICROS == native.MAX_AMOUNT_CREDITS * native.MICROS_PER_CREDIT
    assert native.DEFAULT_DATABASE_URL == "sqlite:///creditgate.db" and native.DEFAULT_API_KEY_PREFIX == "sk_"
    assert native.RESERVED_KEY_PREFIXES == (
        "payment:",
        "reversal:",
        "reinstatement:",
        "usage:",
        "import:",
        "allowance:",
    )


def test_native_signature_defaults_are_the_limits() -> None:
    defaults = {name: signature_defaults(fn) for name, fn in public_methods(LocalCreditManager)}
    check("LocalCreditManager", MANAGER_DEFAULTS, defaults)


def stub_defaults(class_name: str) -> dict[str, dict[str, object]]:
    tree = ast.parse(STUB.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    out: dict[str, dict[str, object]] = {}
    for fn in cls.body:
        if not isinstance(fn, ast.FunctionDef):
            continue
        args = fn.args
        positional = [*args.posonlyargs, *args.args]
        pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults))
        pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
        values: dict[str, object] = {}
        for arg, default in pairs:
            if isinstance(default, ast.UnaryOp) and isinstance(default.op, ast.USub):
                default = ast.Constant(-ast.literal_eval(default.operand))
            if isinstance(default, ast.Tuple) and not default.elts:
                values[arg.arg] = ()  # an empty sequence, e.g. group_by=()
                continue
            assert isinstance(default, ast.Constant), f"{fn.name}({arg.arg}): the stub's defaults are literals"
            values[arg.arg] = default.value
        out[fn.name] = values
    return out


def test_stub_defaults_are_the_limits() -> None:
    defaults = stub_defaults("LocalCreditManager")
    assert defaults["reserve"]["ttl_seconds"] == native.DEFAULT_TTL_SECONDS  # the check below can fail
    check("_creditgate.pyi", MANAGER_DEFAULTS, defaults)


def test_async_manager_defaults_are_the_limits() -> None:
    defaults = {name: signature_defaults(fn) for name, fn in public_methods(AsyncLocalCreditManager)}
    check("AsyncLocalCreditManager", MANAGER_DEFAULTS, defaults)


def module_defaults(module: ModuleType) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        if inspect.isclass(obj):
            for method, fn in public_methods(obj):
                if inspect.isfunction(fn):
                    out[f"{name}.{method}"] = signature_defaults(fn)
        elif inspect.isfunction(obj):
            out[name] = signature_defaults(obj)
    return out


@pytest.mark.parametrize("module_name", sorted(MODULE_DEFAULTS))
def test_front_door_defaults_are_the_limits(module_name: str) -> None:
    pytest.importorskip(
        {"creditgate.fastapi": "fastapi", "creditgate.prometheus": "prometheus_client"}.get(module_name, "stripe")
    )
    module = importlib.import_module(module_name)
    check(module_name, MODULE_DEFAULTS[module_name], module_defaults(module))


def test_cli_defaults_are_the_limits() -> None:
    from creditgate.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["expire"]).limit == native.DEFAULT_EXPIRE_LIMIT
    assert parser.parse_args(["transactions", "--user", "alice"]).limit == native.DEFAULT_PAGE_LIMIT
    assert parser.parse_args(["grant", "--user", "alice", "--amount", "1"]).priority == native.DEFAULT_GRANT_PRIORITY


def test_a_drifted_default_is_caught() -> None:
    """The checker itself: a hand-written 300 where the core says 600 fails."""
    with pytest.raises(AssertionError, match="DEFAULT_TTL_SECONDS is 600"):
        check("drift", MANAGER_DEFAULTS, {"reserve": {"ttl_seconds": 300}})
    with pytest.raises(AssertionError, match="not a limits constant"):
        check("new", {}, {"reserve": {"ttl_seconds": 600}})
