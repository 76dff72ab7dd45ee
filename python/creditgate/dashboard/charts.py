"""Server-side SVG charts for the operator dashboard: no JavaScript, no network, no web fonts.

Numbers stay exact: values are ``Decimal`` or ``int`` (a float is a ``TypeError``, as everywhere
in creditgate), ticks are computed in ``Decimal``, and coordinates are rounded to 0.01 px only when
written. Colours are CSS custom properties (``CHART_CSS``), so dark mode needs no second render.
Every bar and point carries ``data-series``, ``data-category`` and ``data-value`` (the exact value)
so a browser test can read the numbers off the chart and compare them with the ledger.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Context, Decimal, localcontext

__all__ = ["CHART_CSS", "Series", "bar_chart", "line_chart"]

CATEGORIES_MAX = 400
SERIES_MAX = 8
X_LABELS_MAX = 12
NO_DATA_TEXT = "No data in this range"

# The viewBox in px; the svg scales to its container (width 100%) and its text with it.
WIDTH = 800
HEIGHT = 360
TOP = 36  # room for the y axis label above the plot
BOTTOM = 52  # x tick labels, then the x axis label
MARGIN = 16  # the least room left of the tick labels and right of the plot
X_LABEL_CHARS_MAX = 20  # longer category names are cut on the axis (never in the tooltip or data-category)
CHAR_WIDTH = 7  # an estimate for 12px system-ui text; used only to keep labels apart
_CONTEXT = Context(prec=34, rounding=ROUND_HALF_EVEN)  # the caller's decimal context must not change a chart
_PX = Decimal("0.01")
_CHART_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}\Z")  # it becomes id attributes: no escaping needed
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")  # would make the svg ill-formed

_LIGHT = ("#0969da", "#c4432b", "#1a7f37", "#8250df", "#7d6b00", "#bf3989", "#0b7a86", "#57606a")
_DARK = ("#58a6ff", "#ff7b5c", "#3fb950", "#bc8cff", "#d9b430", "#f778ba", "#39c5cf", "#b1bac4")


def _palette(colours: Sequence[str]) -> str:
    return "".join(f"--cg-series-{index}:{colour};" for index, colour in enumerate(colours))


# Every series colour has a contrast of at least 5:1 on the light and 7:1 on the dark background.
CHART_CSS: str = (
    ".cg-chart{--cg-bg:#ffffff;--cg-fg:#1f2328;--cg-muted:#59636e;--cg-grid:#d1d9e0;--cg-axis:#59636e;"
    + _palette(_LIGHT)
    + "margin:0;padding:8px;color:var(--cg-fg);background:var(--cg-bg);font:12px system-ui,sans-serif}\n"
    "@media (prefers-color-scheme: dark){.cg-chart{--cg-bg:#0d1117;--cg-fg:#e6edf3;--cg-muted:#9198a1;"
    "--cg-grid:#30363d;--cg-axis:#9198a1;" + _palette(_DARK) + "}}\n"
    ".cg-chart svg{display:block;height:auto}\n"
    ".cg-chart text{fill:currentColor;font-size:12px}\n"
    ".cg-chart .cg-label{fill:var(--cg-muted)}\n"
    ".cg-grid{stroke:var(--cg-grid);stroke-width:1}\n"
    ".cg-axis{stroke:var(--cg-axis);stroke-width:1}\n"
    + "".join(
        f".cg-series-{i}{{fill:var(--cg-series-{i});stroke:var(--cg-series-{i});background:var(--cg-series-{i})}}\n"
        for i in range(SERIES_MAX)
    )
    + ".cg-chart .cg-bar{stroke:none}\n"
    ".cg-chart .cg-line{fill:none;stroke-width:2}\n"
    ".cg-chart .cg-point{stroke:var(--cg-bg);stroke-width:1}\n"
    ".cg-caption{font-weight:600}\n"
    ".cg-legend{display:flex;flex-wrap:wrap;gap:4px 16px;list-style:none;margin:4px 0 0;padding:0}\n"
    ".cg-swatch{display:inline-block;width:12px;height:12px;margin-right:6px;border-radius:2px}\n"
)


@dataclass(frozen=True)
class Series:
    """One legend entry: a name and one exact value per category."""

    name: str
    values: Sequence[Decimal | int]

    def __post_init__(self) -> None:
        # A snapshot, so that mutating the caller's list later cannot change a validated series.
        object.__setattr__(self, "values", tuple(self.values))
        for value in self.values:
            if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
                raise TypeError(f"series {self.name!r}: values are Decimal or int, not {type(value).__name__}")
            if isinstance(value, Decimal) and not value.is_finite():
                raise ValueError(f"series {self.name!r}: values must be finite, got {value}")


def bar_chart(
    title: str,
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    y_label: str,
    x_label: str,
    unit: str,
    chart_id: str,
) -> str:
    """Grouped bars, one group per category and one bar per series, as a ``<figure>``."""
    return _render("Bar", title, categories, series, (y_label, x_label, unit), chart_id)


def line_chart(
    title: str,
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    y_label: str,
    x_label: str,
    unit: str,
    chart_id: str,
) -> str:
    """One line with point markers per series, as a ``<figure>``."""
    return _render("Line", title, categories, series, (y_label, x_label, unit), chart_id)


@dataclass(frozen=True)
class _Plot:
    """Where a value and a category go: the plot area and the y scale."""

    ticks: tuple[Decimal, ...]
    left: int  # the y axis
    right: int
    count: int  # categories

    @classmethod
    def of(cls, ticks: tuple[Decimal, ...], categories: Sequence[str]) -> _Plot:
        # Room for the longest tick label left of the axis, and for half an x label beyond either end.
        half_label = CHAR_WIDTH * (max(len(_axis_label(category)) for category in categories) + 1) // 2
        left = max(MARGIN + CHAR_WIDTH * max(len(_number(tick)) for tick in ticks), half_label)
        return cls(ticks, left, WIDTH - max(MARGIN, half_label), len(categories))

    @property
    def band(self) -> Decimal:
        return Decimal(self.right - self.left) / self.count

    @property
    def scale(self) -> Decimal:
        return Decimal(HEIGHT - TOP - BOTTOM) / (self.ticks[-1] - self.ticks[0])

    def x(self, index: int) -> Decimal:
        return self.left + self.band * index

    def y(self, value: Decimal) -> Decimal:
        return TOP + (self.ticks[-1] - value) * self.scale


def _render(
    kind: str,
    title: str,
    categories: Sequence[str],
    series: Sequence[Series],
    labels: tuple[str, str, str],
    chart_id: str,
) -> str:
    _validate(categories, series, chart_id)
    y_label, x_label, unit = labels
    if unit and unit.casefold() not in y_label.casefold():
        y_label = f"{y_label} ({unit})"
    values = [Decimal(value) for one in series for value in one.values]
    if not any(values):  # no categories, no series, or all zero: say so instead of drawing an empty frame
        empty = f'<text class="cg-label cg-empty" x="{WIDTH // 2}" y="{HEIGHT // 2}" text-anchor="middle">'
        return _figure(title, chart_id, NO_DATA_TEXT + ".", [empty + NO_DATA_TEXT + "</text>"], [])
    with localcontext(_CONTEXT):
        ticks = _nice_ticks(min(values), max(values))
        plot = _Plot.of(ticks, categories)
        body = _axes(plot, categories, y_label, x_label)
        body += (_bars if kind == "Bar" else _lines)(plot, categories, series, unit)
        desc = (
            f"{kind} chart of {y_label} by {x_label}: {len(series)} series over {len(categories)} categories "
            f"from {categories[0]} to {categories[-1]}, values from {_number(min(values))} to {_number(max(values))}."
        )
    return _figure(title, chart_id, desc, body, series)


def _validate(categories: Sequence[str], series: Sequence[Series], chart_id: str) -> None:
    # Reject, never truncate: a chart silently missing data would mislead an operator.
    if len(categories) > CATEGORIES_MAX:
        raise ValueError(f"at most {CATEGORIES_MAX} categories, got {len(categories)}")
    if len(series) > SERIES_MAX:
        raise ValueError(f"at most {SERIES_MAX} series, got {len(series)}")
    for one in series:
        if len(one.values) != len(categories):
            raise ValueError(f"series {one.name!r} has {len(one.values)} values for {len(categories)} categories")
    if not _CHART_ID.match(chart_id):
        raise ValueError(f"chart_id must match {_CHART_ID.pattern}, got {chart_id!r}")


def _nice_ticks(low: Decimal, high: Decimal) -> tuple[Decimal, ...]:
    """Ticks a 1, 2 or 5 × 10^k step apart, at most six intervals, covering low..high and always zero (the axis).

    Exact: no division rounds (steps are compared as step * 6 >= span, and dividing by a step of 1, 2 or 5
    times a power of ten always terminates in decimal)."""
    low, high = min(low, Decimal(0)), max(high, Decimal(0))
    span = high - low
    power = Decimal(1).scaleb(span.adjusted() - 1)  # span / 6 lies between power and 20 * power
    step = next(power * factor for factor in (1, 2, 5, 10, 20) if power * factor * 6 >= span)
    first = int((low / step).to_integral_value(ROUND_FLOOR))
    last = int((high / step).to_integral_value(ROUND_CEILING))
    return tuple(step * index for index in range(first, last + 1))


def _axes(plot: _Plot, categories: Sequence[str], y_label: str, x_label: str) -> list[str]:
    left, right, bottom = plot.left, plot.right, HEIGHT - BOTTOM
    parts = [f'<text class="cg-label" x="8" y="{TOP - 20}">{_esc(y_label)}</text>']
    for tick in plot.ticks:
        y = _px(plot.y(tick))
        parts.append(f'<line class="cg-grid" x1="{left}" x2="{right}" y1="{y}" y2="{y}"/>')
        parts.append(f'<text class="cg-label" x="{left - 6}" y="{y}" dy="4" text-anchor="end">{_number(tick)}</text>')
    zero = _px(plot.y(Decimal(0)))  # negative values hang below this line
    parts.append(f'<line class="cg-axis" x1="{left}" x2="{right}" y1="{zero}" y2="{zero}"/>')
    parts.append(f'<line class="cg-axis" x1="{left}" x2="{left}" y1="{TOP}" y2="{bottom}"/>')
    stride = _label_stride(categories, right - left)
    for index in range(0, len(categories), stride):
        x, text = _px(plot.x(index) + plot.band / 2), _esc(_axis_label(categories[index]))
        parts.append(f'<text class="cg-label" x="{x}" y="{bottom + 18}" text-anchor="middle">{text}</text>')
    middle = _px(Decimal(left + right) / 2)
    parts.append(f'<text class="cg-label" x="{middle}" y="{HEIGHT - 8}" text-anchor="middle">{_esc(x_label)}</text>')
    return parts


def _label_stride(categories: Sequence[str], width: int) -> int:
    """Label every n-th category so that labels neither overlap nor exceed X_LABELS_MAX (no rotation)."""
    longest = max(len(_axis_label(category)) for category in categories)
    fits = width // (longest * CHAR_WIDTH + 8)  # 8 px between neighbouring labels
    shown = max(1, min(X_LABELS_MAX, fits))
    return -(-len(categories) // shown)  # ceiling division


def _bars(plot: _Plot, categories: Sequence[str], series: Sequence[Series], unit: str) -> list[str]:
    padding = plot.band / 10  # a gap between groups
    width = (plot.band - 2 * padding) / len(series)
    zero = plot.y(Decimal(0))
    parts = []
    for number, one in enumerate(series):
        for index, (category, value) in enumerate(zip(categories, one.values)):
            # The height comes from the value alone, so heights stay proportional after rounding.
            height = abs(Decimal(value)) * plot.scale
            top = zero - height if value >= 0 else zero
            x = plot.x(index) + padding + width * number
            geometry = f'x="{_px(x)}" y="{_px(top)}" width="{_px(width)}" height="{_px(height)}"'
            parts.append(
                f'<rect class="cg-bar cg-series-{number}" {geometry} {_datum(one, category, value, unit)}</rect>'
            )
    return parts


def _lines(plot: _Plot, categories: Sequence[str], series: Sequence[Series], unit: str) -> list[str]:
    parts = []
    for number, one in enumerate(series):
        points = [
            (_px(plot.x(index) + plot.band / 2), _px(plot.y(Decimal(value)))) for index, value in enumerate(one.values)
        ]
        parts.append(
            f'<polyline class="cg-line cg-series-{number}" points="{" ".join(f"{x},{y}" for x, y in points)}"/>'
        )
        for (x, y), category, value in zip(points, categories, one.values):
            datum = _datum(one, category, value, unit)
            parts.append(f'<circle class="cg-point cg-series-{number}" cx="{x}" cy="{y}" r="3" {datum}</circle>')
    return parts


def _datum(one: Series, category: str, value: Decimal | int, unit: str) -> str:
    """The data attributes and the tooltip of one bar or point: the rest of its start tag, and its content."""
    exact = format(Decimal(value), "f")  # as given: 1.50 stays 1.50, and no exponent
    tooltip = f"{one.name} · {category}: {format(Decimal(value), ',f')} {unit}".rstrip()
    attributes = f'data-series="{_esc(one.name)}" data-category="{_esc(category)}" data-value="{exact}"'
    return f"{attributes}><title>{_esc(tooltip)}</title>"


def _figure(title: str, chart_id: str, desc: str, body: list[str], series: Sequence[Series]) -> str:
    legend = "".join(
        f'<li><span class="cg-swatch cg-series-{number}" aria-hidden="true"></span>{_esc(one.name)}</li>'
        for number, one in enumerate(series)
    )
    return "\n".join(
        [
            f'<figure class="cg-chart" id="{chart_id}">',
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
            f'aria-labelledby="{chart_id}-title" aria-describedby="{chart_id}-desc">',
            f'<title id="{chart_id}-title">{_esc(title)}</title>',
            f'<desc id="{chart_id}-desc">{_esc(desc)}</desc>',
            *body,
            "</svg>",
            f'<figcaption><span class="cg-caption">{_esc(title)}</span>'
            + (f'<ul class="cg-legend">{legend}</ul>' if legend else "")
            + "</figcaption>",
            "</figure>",
        ]
    )


def _axis_label(category: str) -> str:
    return category if len(category) <= X_LABEL_CHARS_MAX else category[: X_LABEL_CHARS_MAX - 1] + "…"


def _number(value: Decimal) -> str:
    """A tick label: thousands separators, no trailing zeros, no exponent (2,500 / 0.5 / -1,000,000)."""
    return "0" if value.is_zero() else format(value.normalize(), ",f")


def _px(value: Decimal) -> str:
    rounded = value.quantize(_PX)
    return "0" if rounded.is_zero() else format(rounded.normalize(), "f")


def _esc(text: str) -> str:
    return html.escape(_NOT_XML.sub("\ufffd", text), quote=True)
