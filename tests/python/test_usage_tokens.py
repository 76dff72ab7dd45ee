"""Cached-token counts from a provider's usage (issue 20): the one reading
of it (creditgate._usage.usage_tokens) on every shape the integrations meet,
hostile values included, and what creditgate.fastapi's Meter and
creditgate.litellm's callback pass to the ledger's ``settle`` (a recording
ledger; the cache keywords only when not 0, so a call without cache tokens
settles exactly as before).

The shapes are those LiteLLM 1.108 builds (its ``Usage.model_dump()`` for an
Anthropic call, the ``metadata.usage_object`` of its standard logging
object), written out here: LiteLLM is not in the test venv."""

from __future__ import annotations

import asyncio
import importlib
import sys
import types
from collections.abc import Iterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, cast

import pytest
from creditgate import Hold, LocalCreditManager
from creditgate._usage import UsageTokens, usage_tokens

# ----- the pure reading ---------------------------------------------------------------


def test_openai_dict_prompt_includes_cached_tokens() -> None:
    usage = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert usage_tokens(usage) == UsageTokens(2006, 300, 1920, 0)


def test_openai_dict_without_details_or_cache() -> None:
    assert usage_tokens({"prompt_tokens": 12, "completion_tokens": 5}) == UsageTokens(12, 5, 0, 0)
    assert usage_tokens({"prompt_tokens": 12, "completion_tokens": 5, "prompt_tokens_details": None}) == (12, 5, 0, 0)


def test_openai_sdk_object() -> None:
    openai_types = pytest.importorskip("openai.types")
    usage = openai_types.CompletionUsage(
        prompt_tokens=1500,
        completion_tokens=40,
        total_tokens=1540,
        prompt_tokens_details={"cached_tokens": 1024},
    )
    assert usage_tokens(usage) == UsageTokens(1500, 40, 1024, 0)


def test_plain_object_with_attributes() -> None:
    usage = SimpleNamespace(
        prompt_tokens=900, completion_tokens=7, prompt_tokens_details=SimpleNamespace(cached_tokens=512)
    )
    assert usage_tokens(usage) == UsageTokens(900, 7, 512, 0)


# LiteLLM's Usage for an Anthropic call of 100 fresh input tokens, 1000 read
# from the cache and 50 written to it (AnthropicConfig.calculate_usage, dumped):
# prompt_tokens already includes both cache counts.
LITELLM_ANTHROPIC_USAGE: dict[str, Any] = {
    "completion_tokens": 20,
    "prompt_tokens": 1150,
    "total_tokens": 1170,
    "completion_tokens_details": {"reasoning_tokens": 0, "text_tokens": 20},
    "prompt_tokens_details": {
        "audio_tokens": None,
        "cache_write_tokens": 50,
        "cached_tokens": 1000,
        "image_tokens": None,
        "text_tokens": 100,
        "cache_creation_tokens": 50,
    },
    "cache_creation_input_tokens": 50,
    "cache_read_input_tokens": 1000,
}


def test_anthropic_through_litellm_is_not_counted_twice() -> None:
    assert usage_tokens(LITELLM_ANTHROPIC_USAGE) == UsageTokens(1150, 20, 1000, 50)


def test_litellm_top_level_cache_fields_when_details_lack_them() -> None:
    usage = {"prompt_tokens": 1150, "completion_tokens": 20, "cache_read_input_tokens": 1000}
    usage["cache_creation_input_tokens"] = 50
    assert usage_tokens(usage) == UsageTokens(1150, 20, 1000, 50)
    # Older LiteLLM names the write count cache_creation_tokens only.
    details = {"cached_tokens": 10, "cache_creation_tokens": 5}
    assert usage_tokens({"prompt_tokens": 30, "prompt_tokens_details": details}) == UsageTokens(30, 0, 10, 5)


def test_deepseek_cache_hits_are_part_of_the_prompt() -> None:
    usage = {
        "prompt_tokens": 800,
        "completion_tokens": 9,
        "prompt_cache_hit_tokens": 640,
        "prompt_cache_miss_tokens": 160,
    }
    assert usage_tokens(usage) == UsageTokens(800, 9, 640, 0)


def test_anthropic_messages_usage_adds_the_cache_to_the_prompt() -> None:
    # Anthropic's own usage: input_tokens excludes the cache reads and writes.
    usage = {"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 1000}
    usage["cache_creation_input_tokens"] = 50
    assert usage_tokens(usage) == UsageTokens(1150, 20, 1000, 50)
    assert usage_tokens({"input_tokens": 100, "output_tokens": 20}) == UsageTokens(100, 20, 0, 0)


def test_openai_responses_usage_includes_cached_tokens() -> None:
    usage = {"input_tokens": 500, "output_tokens": 10, "input_tokens_details": {"cached_tokens": 300}}
    assert usage_tokens(usage) == UsageTokens(500, 10, 300, 0)


def standard_logging_object(usage_object: Any, prompt: int = 1150, completion: int = 20) -> dict[str, Any]:
    """The fields of LiteLLM's StandardLoggingPayload this reads (and a few others)."""
    return {
        "id": "chatcmpl-1",
        "litellm_call_id": "call-1",
        "cache_hit": False,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "metadata": {"user_api_key_hash": None, "usage_object": usage_object},
    }


def test_standard_logging_object_reads_its_usage_object() -> None:
    assert usage_tokens(standard_logging_object(LITELLM_ANTHROPIC_USAGE)) == UsageTokens(1150, 20, 1000, 50)


def test_standard_logging_object_without_usage_object_uses_its_totals() -> None:
    for usage_object in (None, "not a usage", 7):
        assert usage_tokens(standard_logging_object(usage_object, 40, 2)) == UsageTokens(40, 2, 0, 0)
    assert usage_tokens({"prompt_tokens": 40, "completion_tokens": 2, "metadata": None}) == (40, 2, 0, 0)


@pytest.mark.parametrize("usage", [None, {}, [], "usage", 5, object(), SimpleNamespace()])
def test_no_usage_is_all_zero(usage: Any) -> None:
    assert usage_tokens(usage) == UsageTokens(0, 0, 0, 0)


@pytest.mark.parametrize("bad", [None, -1, -(2**70), True, False, "12", 12.0, 1.5, [3], {"n": 3}, b"1"])
def test_bad_counts_read_as_zero(bad: Any) -> None:
    assert usage_tokens({"prompt_tokens": bad, "completion_tokens": bad}) == UsageTokens(0, 0, 0, 0)
    details = {"cached_tokens": bad, "cache_write_tokens": bad}
    usage = {"prompt_tokens": 100, "completion_tokens": 3, "prompt_tokens_details": details}
    assert usage_tokens(usage) == UsageTokens(100, 3, 0, 0)
    anthropic = {"input_tokens": 100, "output_tokens": 3, "cache_read_input_tokens": bad}
    assert usage_tokens(anthropic) == UsageTokens(100, 3, 0, 0)


def test_a_bad_detail_does_not_hide_a_good_fallback() -> None:
    usage = {"prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": "9"}, "cache_read_input_tokens": 9}
    assert usage_tokens(usage) == UsageTokens(100, 0, 9, 0)


def test_cache_counts_are_clamped_into_the_prompt() -> None:
    details = {"cached_tokens": 5000}
    assert usage_tokens({"prompt_tokens": 1200, "prompt_tokens_details": details}) == UsageTokens(1200, 0, 1200, 0)
    # Reads first, then writes in what is left.
    details = {"cached_tokens": 900, "cache_write_tokens": 900}
    assert usage_tokens({"prompt_tokens": 1200, "prompt_tokens_details": details}) == UsageTokens(1200, 0, 900, 300)
    details = {"cached_tokens": 10}
    assert usage_tokens({"prompt_tokens": 0, "prompt_tokens_details": details}) == UsageTokens(0, 0, 0, 0)


def test_counts_past_the_ledger_range_are_capped() -> None:
    top = 2**63 - 1
    assert usage_tokens({"prompt_tokens": 2**80, "completion_tokens": 2**64}) == UsageTokens(top, top, 0, 0)
    huge = {"input_tokens": top, "cache_read_input_tokens": top, "cache_creation_input_tokens": 1}
    assert usage_tokens(huge) == UsageTokens(top, 0, top, 0)


def test_int_subclasses_count_as_their_value() -> None:
    class Sneaky(int):
        def __int__(self) -> int:
            raise RuntimeError("hostile")

        def __lt__(self, other: object) -> bool:
            raise RuntimeError("hostile")

    assert usage_tokens({"prompt_tokens": Sneaky(40), "completion_tokens": Sneaky(2)}) == UsageTokens(40, 2, 0, 0)


def test_hostile_objects_never_raise() -> None:
    class Exploding:
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError(name)

    class ExplodingMapping(dict[str, Any]):
        def get(self, key: str, default: Any = None) -> Any:
            raise RuntimeError(key)

    assert usage_tokens(Exploding()) == UsageTokens(0, 0, 0, 0)
    assert usage_tokens(ExplodingMapping(prompt_tokens=3)) == UsageTokens(0, 0, 0, 0)
    usage = {"prompt_tokens": 30, "prompt_tokens_details": Exploding(), "cache_read_input_tokens": 4}
    assert usage_tokens(usage) == UsageTokens(30, 0, 4, 0)
    assert usage_tokens({"metadata": {"usage_object": ExplodingMapping()}}) == UsageTokens(0, 0, 0, 0)


def test_cache_kwargs_only_when_not_zero() -> None:
    assert UsageTokens(10, 1, 0, 0).cache_kwargs() == {}
    assert UsageTokens(10, 1, 4, 0).cache_kwargs() == {"cached_input_tokens": 4}
    assert UsageTokens(10, 1, 0, 3).cache_kwargs() == {"cache_write_tokens": 3}
    assert UsageTokens(10, 1, 4, 3).cache_kwargs() == {"cached_input_tokens": 4, "cache_write_tokens": 3}


# ----- what the integrations pass to the ledger ------------------------------------------


class RecordingLedger:
    """Records ``settle`` calls; answers with a charge-like object."""

    def __init__(self) -> None:
        self.settles: list[tuple[str, dict[str, Any]]] = []

    def settle(self, hold_id: str, **kwargs: Any) -> Any:
        self.settles.append((hold_id, kwargs))
        return SimpleNamespace(balance=Decimal("1"), tokens=0)


def fastapi_meter(ledger: Any, input_tokens: int = 100) -> Any:
    pytest.importorskip("fastapi")
    from creditgate.fastapi import Meter

    return Meter(ledger, cast(Hold, SimpleNamespace(hold_id="h1")), model="m", input_tokens=input_tokens)


def test_meter_settle_with_openai_usage_passes_the_cache_counts() -> None:
    ledger = RecordingLedger()
    meter = fastapi_meter(ledger)
    usage = {"prompt_tokens": 2006, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 1920}}
    asyncio.run(meter.settle(usage=usage))
    assert ledger.settles == [
        ("h1", {"input_tokens": 2006, "output_tokens": 300, "model": "m", "cached_input_tokens": 1920})
    ]
    assert (meter.input_tokens, meter.output_tokens, meter.cached_input_tokens, meter.cache_write_tokens) == (
        2006,
        300,
        1920,
        0,
    )
    asyncio.run(meter.settle(usage=usage))  # exactly once
    assert len(ledger.settles) == 1


def test_meter_settle_with_anthropic_through_litellm_usage() -> None:
    ledger = RecordingLedger()
    asyncio.run(fastapi_meter(ledger).settle(usage=LITELLM_ANTHROPIC_USAGE))
    expected = {"input_tokens": 1150, "output_tokens": 20, "model": "m", "cached_input_tokens": 1000}
    assert ledger.settles == [("h1", {**expected, "cache_write_tokens": 50})]


def test_meter_without_cache_tokens_settles_as_before() -> None:
    ledger = RecordingLedger()
    asyncio.run(fastapi_meter(ledger).settle(7))
    asyncio.run(fastapi_meter(ledger).settle(usage={"prompt_tokens": 12, "completion_tokens": 5}))
    assert ledger.settles == [
        ("h1", {"input_tokens": 100, "output_tokens": 7, "model": "m"}),
        ("h1", {"input_tokens": 12, "output_tokens": 5, "model": "m"}),
    ]


def test_meter_settle_refuses_output_tokens_and_usage_together() -> None:
    ledger = RecordingLedger()
    with pytest.raises(TypeError, match="not both"):
        asyncio.run(fastapi_meter(ledger).settle(5, usage={"prompt_tokens": 1}))
    assert ledger.settles == []


def test_meter_settle_with_usage_charges_the_real_ledger(manager: LocalCreditManager, paid_key: str) -> None:
    """Without cache tokens the current binding takes the call unchanged, and
    the provider's counts replace the meter's."""
    pytest.importorskip("fastapi")
    from creditgate.fastapi import Meter

    manager.set_model_price("m", 1, 2)
    hold = manager.reserve(paid_key, input_tokens=100, output_tokens=100, model="m")
    meter = Meter(manager, hold, model="m", input_tokens=100)
    charge = asyncio.run(meter.settle(usage={"prompt_tokens": 2000, "completion_tokens": 500}))
    assert charge.tokens == 2500
    assert charge.charged == Decimal(3)  # 2,000 input tokens at 1 per 1k, 500 output at 2 per 1k
    assert manager.account("alice").available == Decimal(5000 - 3)


# LiteLLM's proxy is not in this venv: creditgate.litellm is imported against
# the few names it takes from LiteLLM, faked.


@pytest.fixture
def litellm_glue(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    class ProxyException(Exception):
        def __init__(self, message: str, type: str, param: Any, code: int, openai_code: str) -> None:
            super().__init__(message)
            self.openai_code = openai_code

    fakes = {
        "litellm": {},
        "litellm.integrations": {},
        "litellm.integrations.custom_logger": {"CustomLogger": type("CustomLogger", (), {})},
        "litellm.proxy": {},
        "litellm.proxy._types": {"ProxyException": ProxyException, "UserAPIKeyAuth": SimpleNamespace},
    }
    for name, attributes in fakes.items():
        module = types.ModuleType(name)
        for attribute, value in attributes.items():
            setattr(module, attribute, value)
        monkeypatch.setitem(sys.modules, name, module)
    saved = sys.modules.pop("creditgate.litellm", None)
    try:
        glue = importlib.import_module("creditgate.litellm")
        monkeypatch.setattr(glue, "_manager", RecordingLedger())
        yield glue
    finally:
        sys.modules.pop("creditgate.litellm", None)
        if saved is not None:
            sys.modules["creditgate.litellm"] = saved


def success_event(glue: Any, slo: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    kwargs = {"litellm_params": {"metadata": {"creditgate_hold_id": "h1"}}, "standard_logging_object": slo}
    asyncio.run(glue.callback.async_log_success_event(kwargs, None, None, None))
    return cast(RecordingLedger, glue._manager).settles


def test_litellm_settles_the_cache_counts_of_the_standard_logging_object(litellm_glue: Any) -> None:
    settles = success_event(litellm_glue, standard_logging_object(LITELLM_ANTHROPIC_USAGE))
    expected = {"input_tokens": 1150, "output_tokens": 20, "cached_input_tokens": 1000, "cache_write_tokens": 50}
    assert settles == [("h1", expected)]


def test_litellm_openai_cached_tokens(litellm_glue: Any) -> None:
    usage = {"prompt_tokens": 2006, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 1920}}
    settles = success_event(litellm_glue, standard_logging_object(usage, 2006, 300))
    assert settles == [("h1", {"input_tokens": 2006, "output_tokens": 300, "cached_input_tokens": 1920})]


def test_litellm_without_cache_tokens_settles_as_before(litellm_glue: Any) -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 0}}
    assert success_event(litellm_glue, standard_logging_object(usage, 12, 5)) == [
        ("h1", {"input_tokens": 12, "output_tokens": 5})
    ]
    assert success_event(litellm_glue, standard_logging_object(None, 7, 3))[-1] == (
        "h1",
        {"input_tokens": 7, "output_tokens": 3},
    )
