"""One reading of a provider's usage for the integrations that charge it
(``creditgate.litellm``, ``creditgate.fastapi``): the four token counts the
ledger charges, by the ledger's rule.

``input_tokens`` is the whole prompt, as OpenAI's ``prompt_tokens``: it
includes the tokens read from the provider's cache (``cached_input_tokens``)
and the tokens written to it (``cache_write_tokens``), so
``cached_input_tokens + cache_write_tokens <= input_tokens``.

Shapes read (a mapping or an object with those attributes):

- OpenAI chat usage: ``prompt_tokens`` (cache included),
  ``completion_tokens``, ``prompt_tokens_details.cached_tokens``; cache
  writes from ``prompt_tokens_details.cache_write_tokens`` (or
  ``cache_creation_tokens``). LiteLLM's ``Usage`` is this shape for every
  provider: its ``prompt_tokens`` includes Anthropic's and Bedrock's cache
  tokens, which it also repeats as ``cache_read_input_tokens`` and
  ``cache_creation_input_tokens`` (read when the details lack them), and
  DeepSeek's ``prompt_cache_hit_tokens`` is read the same way.
- OpenAI Responses usage: ``input_tokens`` (cache included),
  ``output_tokens``, ``input_tokens_details.cached_tokens``.
- Anthropic's own Messages usage: ``input_tokens`` counts only the tokens
  after the last cache breakpoint, so its ``cache_read_input_tokens`` and
  ``cache_creation_input_tokens`` are added to it.
- LiteLLM's standard logging object (the ``standard_logging_object`` of a
  callback's kwargs): the usage it carries in ``metadata.usage_object``, else
  its own ``prompt_tokens`` and ``completion_tokens`` (no cache counts).

Provider data is not trusted: a count that is missing, ``None``, negative,
a ``bool`` or not an ``int`` reads as 0, a count past the ledger's 64-bit
range reads as its maximum, the cache counts are clamped so they fit in the
prompt (reads first), and nothing here raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

__all__ = ["UsageTokens", "usage_tokens"]

# The ledger's token counts are i64.
_MAX_COUNT = 2**63 - 1


class UsageTokens(NamedTuple):
    """A call's token counts, by the ledger's rule (the module's doc)."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int

    def cache_kwargs(self) -> dict[str, Any]:
        """The cache counts as ``record_usage``/``settle`` keyword arguments,
        only those that are not 0 (a call with no cache tokens passes none).
        Typed ``Any``: spread (``**``) next to keywords of other types."""
        counts = {"cached_input_tokens": self.cached_input_tokens, "cache_write_tokens": self.cache_write_tokens}
        return {name: count for name, count in counts.items() if count}


def _field(source: Any, name: str) -> Any:
    """``source[name]`` of a mapping, else ``source.name``; None when absent
    or when reading it fails."""
    if source is None:
        return None
    try:
        if isinstance(source, Mapping):
            return source.get(name)
        return getattr(source, name, None)
    except Exception:
        return None


def _count(value: Any) -> int | None:
    """A token count, or None when ``value`` is not one (missing, a bool,
    not an int); negative reads as 0, past the ledger's range as its maximum."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    # int.__int__: the plain value, whatever a subclass overrides.
    return min(max(int.__int__(value), 0), _MAX_COUNT)


def _first(source: Any, *names: str) -> int | None:
    """The first of ``names`` that ``source`` carries as a count."""
    for name in names:
        count = _count(_field(source, name))
        if count is not None:
            return count
    return None


def _provider_usage(usage: Any) -> UsageTokens:
    prompt = _count(_field(usage, "prompt_tokens"))
    if prompt is not None:
        # OpenAI chat (and LiteLLM's Usage, DeepSeek): the prompt includes the cache.
        details = _field(usage, "prompt_tokens_details")
        cached = _first(details, "cached_tokens")
        if cached is None:
            cached = _first(usage, "cache_read_input_tokens", "prompt_cache_hit_tokens")
        written = _first(details, "cache_write_tokens", "cache_creation_tokens")
        if written is None:
            written = _first(usage, "cache_creation_input_tokens")
        output = _first(usage, "completion_tokens")
    else:
        prompt = _first(usage, "input_tokens") or 0
        output = _first(usage, "output_tokens")
        details = _field(usage, "input_tokens_details")
        cached = _first(details, "cached_tokens")
        written = _first(details, "cache_write_tokens", "cache_creation_tokens")
        if cached is None and written is None:
            # Anthropic's Messages usage: input_tokens excludes the cache.
            cached = _first(usage, "cache_read_input_tokens")
            written = _first(usage, "cache_creation_input_tokens")
            prompt = min(prompt + (cached or 0) + (written or 0), _MAX_COUNT)
    cached = min(cached or 0, prompt)
    written = min(written or 0, prompt - cached)
    return UsageTokens(prompt, output or 0, cached, written)


def usage_tokens(usage: Any) -> UsageTokens:
    """The token counts of a provider's usage (an OpenAI-style mapping or
    object, Anthropic's, or LiteLLM's standard logging object), by the
    ledger's rule. All zero when ``usage`` carries none. Never raises."""
    metadata = _field(usage, "metadata") if isinstance(usage, Mapping) else None
    if isinstance(metadata, Mapping):
        # LiteLLM's standard logging object: its usage object, else its totals.
        inner = _field(metadata, "usage_object")
        if isinstance(inner, Mapping):
            return _provider_usage(inner)
    return _provider_usage(usage)
