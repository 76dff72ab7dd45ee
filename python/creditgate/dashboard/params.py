"""Query strings and form bodies, validated: every bad input is a ``BadRequest`` (a 4xx page), never a 500.

Parsed from the raw bytes so that non-UTF-8, repeated or unknown parameters
are refused instead of silently replaced or ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from urllib.parse import parse_qsl, urlencode

__all__ = ["BadRequest", "Params"]

QUERY_BYTES_MAX = 2048
FORM_BYTES_MAX = 8192
TEXT_CHARS_MAX = 255
RANGE_DAYS_MAX = 366
RANGE_DAYS_DEFAULT = 30
# Six decimal places (micro-credits), at most 10^12 credits: the ledger's own limits.
_AMOUNT = re.compile(r"[0-9]{1,13}(\.[0-9]{1,6})?\Z")
_INTEGER = re.compile(r"[0-9]{1,19}\Z")  # ASCII only: str.isdigit() also takes "²", which int() refuses
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadRequest(Exception):
    """Refused input: ``status`` is 400, 413 or 414; the message names the parameter."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Params:
    """One request's parameters: each read once by name, then ``done()`` refuses the rest."""

    def __init__(self, raw: bytes, *, limit: int = QUERY_BYTES_MAX, what: str = "query string") -> None:
        if len(raw) > limit:
            raise BadRequest(f"the {what} is longer than {limit} bytes", 414 if what == "query string" else 413)
        try:
            pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, encoding="utf-8", errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise BadRequest(f"the {what} is not percent-encoded UTF-8") from None
        self._values: dict[str, str] = {}
        for name, value in pairs:
            if name in self._values:
                raise BadRequest(f"parameter {name[:32]!r} is given twice")
            if _CONTROL.search(value) or _CONTROL.search(name):
                raise BadRequest(f"parameter {name[:32]!r} contains control characters")
            self._values[name] = value
        self._read: set[str] = set()

    def _get(self, name: str) -> str | None:
        self._read.add(name)
        value = self._values.get(name)
        return None if value == "" else value

    def query(self, without: Iterable[str] = ()) -> str:
        """The query string again (validated), without some parameters: for links to other forms of the page."""
        skip = set(without)
        return urlencode([(k, v) for k, v in self._values.items() if k not in skip])

    def done(self, also: Iterable[str] = ()) -> None:
        """Refuses parameters no view asked for (a typo must not silently show other data)."""
        unknown = sorted(set(self._values) - self._read - set(also))
        if unknown:
            raise BadRequest(f"unknown parameter {unknown[0][:32]!r}")

    def text(self, name: str, *, required: bool = False, max_chars: int = TEXT_CHARS_MAX) -> str | None:
        value = self._get(name)
        if value is None:
            if required:
                raise BadRequest(f"parameter {name!r} is required")
            return None
        if len(value) > max_chars:
            raise BadRequest(f"parameter {name!r} is longer than {max_chars} characters")
        return value

    def required(self, name: str) -> str:
        value = self.text(name, required=True)
        assert value is not None
        return value

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self._get(name)
        if value is None:
            return default
        if not _INTEGER.match(value) or not lo <= int(value) <= hi:
            raise BadRequest(f"parameter {name!r} must be a whole number in {lo}..={hi}")
        return int(value)

    def optional_integer(self, name: str, lo: int, hi: int) -> int | None:
        return None if self._get(name) is None else self.integer(name, lo, lo, hi)

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self._get(name)
        if value is None:
            return choices[0]
        if value not in choices:
            raise BadRequest(f"parameter {name!r} must be one of {', '.join(choices)}")
        return value

    def amount(self, name: str, *, required: bool = False) -> Decimal | None:
        value = self.text(name, required=required)
        if value is None:
            return None
        try:
            if not _AMOUNT.match(value):
                raise InvalidOperation
            return Decimal(value)
        except InvalidOperation:
            raise BadRequest(f"parameter {name!r} must be credits like 100 or 0.5 (up to 6 decimals)") from None

    def day(self, name: str) -> date | None:
        value = self._get(name)
        if value is None:
            return None
        try:
            if len(value) != 10:
                raise ValueError
            return date.fromisoformat(value)
        except ValueError:
            raise BadRequest(f"parameter {name!r} must be a date like 2026-01-31") from None

    def day_range(self) -> tuple[datetime, datetime, int]:
        """``days`` (ending today, UTC) or ``since``/``until`` dates (until inclusive): [start, end), day count."""
        days = self.optional_integer("days", 1, RANGE_DAYS_MAX)
        since, until = self.day("since"), self.day("until")
        today = datetime.now(timezone.utc).date()
        if since is None and until is None:
            span = days if days is not None else RANGE_DAYS_DEFAULT
            last, first = today, today - timedelta(days=span - 1)
        elif days is not None:
            raise BadRequest("give either days or since/until, not both")
        else:
            last = until or today
            try:
                first = since or last - timedelta(days=RANGE_DAYS_DEFAULT - 1)
            except OverflowError:
                raise BadRequest("the range starts before the year 1") from None
        if first > last:
            raise BadRequest("since must not be after until")
        count = (last - first).days + 1
        if count > RANGE_DAYS_MAX:
            raise BadRequest(f"a range is at most {RANGE_DAYS_MAX} days")
        start = datetime(first.year, first.month, first.day, tzinfo=timezone.utc)
        try:
            return start, start + timedelta(days=count), count
        except OverflowError:
            raise BadRequest("the range ends after the year 9999") from None
