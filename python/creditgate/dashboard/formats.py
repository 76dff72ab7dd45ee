"""One value, three forms: a table cell for people, a JSON value and a CSV cell for programs.

JSON keeps numbers exact (decimal credits as strings, as ``to_dict`` does everywhere in creditgate)
and times as RFC 3339 UTC. CSV prefixes text that a spreadsheet would run as a formula with ``'``.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from .._json import decimal_text, rfc3339
from .views import Page, Table

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> str:
    """A value as people read it: thousands separators, UTC minutes, a dash for nothing."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal):
        text = f"{value.normalize():,f}"
        return text
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def plain(value: Any) -> Any:
    """A value for JSON: exact decimals as strings, times as RFC 3339 (the package's own forms)."""
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, datetime):
        return rfc3339(value)
    return value


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    else:
        text = str(plain(value))
    if isinstance(value, str) and text.startswith(_FORMULA_START):
        return "'" + text
    return text


def page_json(page: Page) -> str:
    return json.dumps(
        {
            "page": page.name,
            "tables": {
                t.name: {
                    "title": t.title,
                    "columns": [{"key": c.key, "label": c.label, "unit": c.unit or None} for c in t.columns],
                    "rows": [{c.key: plain(r.get(c.key)) for c in t.columns} for r in t.rows],
                    "next": t.more,
                }
                for t in page.tables
            },
        },
        ensure_ascii=False,
        sort_keys=False,
    )


def table_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([f"{c.key} ({c.unit})" if c.unit else c.key for c in table.columns])
    for r in table.rows:
        writer.writerow([csv_cell(r.get(c.key)) for c in table.columns])
    return out.getvalue()
