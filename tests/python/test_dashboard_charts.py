"""The dashboard's SVG charts: parsed back with ElementTree, the numbers on the chart must be the numbers given."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from decimal import Decimal, localcontext

import pytest
from creditgate.dashboard.charts import CHART_CSS, Series, bar_chart, line_chart

SVG = "{http://www.w3.org/2000/svg}"
DAYS = [f"2024-05-{day:02d}" for day in range(1, 32)]
HOSTILE = "<script>alert(\"x\")</script> & 'q'"


def bar(categories: list[str], series: list[Series], **kwargs: str) -> str:
    labels = {"y_label": "Credits", "x_label": "Day", "unit": "credits", "chart_id": "usage"} | kwargs
    return bar_chart("Usage", categories, series, **labels)


def line(categories: list[str], series: list[Series]) -> str:
    return line_chart("Balance", categories, series, y_label="Balance", x_label="Day", unit="credits", chart_id="bal")


def parse(figure: str) -> ET.Element:
    root = ET.fromstring(figure)  # raises if the figure (and the svg in it) is not well-formed
    assert root.tag == "figure"
    return root


def with_class(root: ET.Element, name: str) -> list[ET.Element]:
    return [element for element in root.iter() if name in element.get("class", "").split()]


def number(element: ET.Element, attribute: str) -> Decimal:
    return Decimal(element.get(attribute, "nan"))


def zero_axis_y(root: ET.Element) -> Decimal:
    horizontal = [axis for axis in with_class(root, "cg-axis") if axis.get("y1") == axis.get("y2")]
    assert len(horizontal) == 1
    return number(horizontal[0], "y1")


def tick_values(root: ET.Element) -> list[Decimal]:
    labels = [text for text in root.iter(f"{SVG}text") if text.get("text-anchor") == "end"]
    return sorted(Decimal((text.text or "").replace(",", "")) for text in labels)


def test_one_bar_per_category_and_series_carrying_the_exact_value() -> None:
    spent = Series("spent", [Decimal("1.50"), 2500, Decimal("0.000001")])
    granted = Series("granted", [0, Decimal("10"), 7])
    root = parse(bar(DAYS[:3], [spent, granted]))
    bars = with_class(root, "cg-bar")
    assert len(bars) == 3 * 2
    seen = [(b.get("data-series"), b.get("data-category"), b.get("data-value")) for b in bars]
    assert seen == [
        ("spent", "2024-05-01", "1.50"),
        ("spent", "2024-05-02", "2500"),
        ("spent", "2024-05-03", "0.000001"),
        ("granted", "2024-05-01", "0"),
        ("granted", "2024-05-02", "10"),
        ("granted", "2024-05-03", "7"),
    ]
    assert [b.findtext(f"{SVG}title") for b in bars[:2]] == [
        "spent · 2024-05-01: 1.50 credits",
        "spent · 2024-05-02: 2,500 credits",
    ]
    assert with_class(bars[0], "cg-series-0") and with_class(bars[3], "cg-series-1")


def test_bar_heights_are_proportional_to_the_values() -> None:
    values: list[Decimal | int] = [Decimal("1234.5"), 3, Decimal("987.25"), 100]
    bars = with_class(parse(bar(DAYS[:4], [Series("s", values)])), "cg-bar")
    heights = [number(b, "height") for b in bars]
    for index, value in enumerate(values):
        expected = heights[0] * Decimal(value) / Decimal(values[0])
        assert abs(heights[index] - expected) <= Decimal("0.01"), (index, heights)
    # The tallest bar reaches the top tick when the maximum is itself a tick.
    root = parse(bar(DAYS[:2], [Series("s", [2500, 1250])]))
    assert [number(b, "height") for b in with_class(root, "cg-bar")] == [Decimal(272), Decimal(136)]


@pytest.mark.parametrize(
    ("low", "high"),
    [(0, 2500), (0, Decimal("0.7")), (0, 999_999), (-300, 2500), (-5, -1), (0, Decimal("0.0003")), (3, 6)],
)
def test_ticks_are_nice_steps_covering_the_data_and_zero(low: Decimal | int, high: Decimal | int) -> None:
    ticks = tick_values(parse(bar(DAYS[:2], [Series("s", [low, high])])))
    steps = {b - a for a, b in zip(ticks, ticks[1:])}
    assert len(steps) == 1
    step = steps.pop()
    assert step.normalize().as_tuple().digits in ((1,), (2,), (5,))
    assert ticks[0] <= min(low, 0) and ticks[-1] >= max(high, 0) and 0 in ticks
    assert 3 <= len(ticks) <= 8
    assert ticks[-1] - step < max(high, 0) or ticks[-1] == 0  # no empty tick above the data


def test_tick_labels_have_thousands_separators_and_no_float_artefacts() -> None:
    def labels(high: Decimal | int) -> list[str]:
        root = parse(bar(DAYS[:1], [Series("s", [high])]))
        return [text.text or "" for text in root.iter(f"{SVG}text") if text.get("text-anchor") == "end"]

    assert labels(2500) == ["0", "500", "1,000", "1,500", "2,000", "2,500"]
    assert labels(Decimal("0.3")) == ["0", "0.05", "0.1", "0.15", "0.2", "0.25", "0.3"]
    assert labels(1_000_000)[-1] == "1,000,000"
    assert labels(Decimal("1E+3"))[-1] == "1,000"


def test_negative_values_hang_below_the_zero_axis() -> None:
    root = parse(bar(DAYS[:2], [Series("net", [500, -200])]))
    zero = zero_axis_y(root)
    up, down = with_class(root, "cg-bar")
    assert number(up, "y") + number(up, "height") == zero
    assert number(down, "y") == zero and number(down, "height") > 0
    assert down.get("data-value") == "-200"
    assert min(tick_values(root)) < 0

    root = parse(line(DAYS[:3], [Series("net", [500, -200, 0])]))
    zero = zero_axis_y(root)
    points = with_class(root, "cg-point")
    assert number(points[0], "cy") < zero < number(points[1], "cy")
    assert number(points[2], "cy") == zero


def test_line_chart_draws_one_polyline_and_a_marker_per_value() -> None:
    series = [Series(f"s{n}", [n * 10 + day for day in range(5)]) for n in range(3)]
    root = parse(line(DAYS[:5], series))
    lines = with_class(root, "cg-line")
    points = with_class(root, "cg-point")
    assert len(lines) == 3 and len(points) == 5 * 3
    for n, polyline in enumerate(lines):
        vertices = [tuple(pair.split(",")) for pair in polyline.get("points", "").split()]
        markers = [p for p in points if p.get("data-series") == f"s{n}"]
        assert vertices == [(p.get("cx"), p.get("cy")) for p in markers]
        assert [p.get("data-value") for p in markers] == [str(n * 10 + day) for day in range(5)]
    assert points[0].findtext(f"{SVG}title") == "s0 · 2024-05-01: 0 credits"


def test_hostile_text_is_escaped() -> None:
    figure = bar_chart(
        HOSTILE,
        [HOSTILE, "a&b"],
        [Series(HOSTILE, [1, 2]), Series("tab\x01bell\x07", [3, 4])],
        y_label=HOSTILE,
        x_label=HOSTILE,
        unit='"><svg onload=alert(1)>',
        chart_id="hostile",
    )
    assert "<script" not in figure and "<svg onload" not in figure and "a&b" not in figure
    root = parse(figure)
    first = with_class(root, "cg-bar")[0]
    assert first.get("data-series") == HOSTILE and first.get("data-category") == HOSTILE
    assert root.findtext(f"{SVG}svg/{SVG}title") == HOSTILE
    assert ["".join(li.itertext()) for li in root.iter("li")] == [HOSTILE, "tab\ufffdbell\ufffd"]
    assert [e.tag for e in root.iter() if e.tag.endswith("script")] == []


@pytest.mark.parametrize(
    ("categories", "series"),
    [([], []), (DAYS[:3], []), ([], [Series("s", [])]), (DAYS[:3], [Series("s", [0, Decimal("0.00"), 0])])],
)
def test_no_data_says_so(categories: list[str], series: list[Series]) -> None:
    for figure in (bar(categories, series), line(categories, series)):
        root = parse(figure)
        assert [e.text for e in with_class(root, "cg-empty")] == ["No data in this range"]
        assert with_class(root, "cg-bar") == with_class(root, "cg-point") == with_class(root, "cg-axis") == []


def test_limits_raise_instead_of_truncating() -> None:
    many = [f"c{n}" for n in range(401)]
    assert "cg-bar" in bar(many[:400], [Series(f"s{n}", [n] * 400) for n in range(8)])
    with pytest.raises(ValueError, match="400 categories"):
        bar(many, [Series("s", [1] * 401)])
    with pytest.raises(ValueError, match="8 series"):
        bar(many[:2], [Series(f"s{n}", [1, 2]) for n in range(9)])
    with pytest.raises(ValueError, match="3 values for 2 categories"):
        line(many[:2], [Series("s", [1, 2, 3])])
    with pytest.raises(ValueError, match="chart_id"):
        bar(many[:2], [Series("s", [1, 2])], chart_id='x" onclick="')
    with pytest.raises(TypeError):
        Series("s", [0.1])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="finite"):
        Series("s", [Decimal("NaN")])


def test_ninety_days_show_at_most_twelve_evenly_spaced_x_labels() -> None:
    days = [f"day {n:03d}" for n in range(90)]
    root = parse(bar(days, [Series("s", list(range(90)))]))
    shown = [t.text for t in root.iter(f"{SVG}text") if t.get("text-anchor") == "middle" and t.text in days]
    assert 2 <= len(shown) <= 12
    indexes = [days.index(text or "") for text in shown]
    assert indexes[0] == 0 and len({b - a for a, b in zip(indexes, indexes[1:])}) == 1
    assert len(with_class(root, "cg-bar")) == 90  # thinning affects the labels only
    short = parse(bar(DAYS[:5], [Series("s", [1, 2, 3, 4, 5])]))
    assert [t.text for t in short.iter(f"{SVG}text") if t.text in DAYS] == DAYS[:5]
    # A long name is cut on the axis only; the tooltip and data-category keep all of it.
    long = "organisation-with-a-very-long-name"
    root = parse(bar([long], [Series("s", [1])]))
    assert "organisation-with-a…" in [t.text for t in root.iter(f"{SVG}text")]
    assert with_class(root, "cg-bar")[0].get("data-category") == long


def test_figure_is_accessible_and_styled_by_classes_only() -> None:
    root = parse(bar(DAYS[:2], [Series("spent", [1, 2]), Series("granted", [3, 4])]))
    svg = root.find(f"{SVG}svg")
    assert svg is not None
    assert svg.get("role") == "img" and svg.get("width") == "100%" and svg.get("viewBox") == "0 0 800 360"
    assert svg.findtext(f"{SVG}title") == "Usage" and "2 series over 2 categories" in svg.findtext(f"{SVG}desc", "")
    assert root.find("figcaption") is not None
    legend = root.findall("figcaption/ul/li")
    assert ["".join(li.itertext()) for li in legend] == ["spent", "granted"]
    assert [li[0].get("class") for li in legend] == ["cg-swatch cg-series-0", "cg-swatch cg-series-1"]
    for element in root.iter():
        for attribute in ("fill", "stroke", "color", "style", "background"):
            assert element.get(attribute, "var(--").startswith("var(--"), (element.tag, attribute)
    assert "Credits" in "".join(svg.itertext())


def test_output_is_deterministic_and_independent_of_the_decimal_context() -> None:
    series = [Series("s", [Decimal("1234.5678"), Decimal("-0.001"), 7])]
    first = line(DAYS[:3], series)
    with localcontext() as context:
        context.prec = 3
        assert line(DAYS[:3], series) == first
    assert line(DAYS[:3], [Series("s", [Decimal("1234.5678"), Decimal("-0.001"), 7])]) == first


def test_series_is_a_snapshot() -> None:
    values: list[Decimal | int] = [1, 2]
    series = Series("s", values)
    values.append(3)
    assert tuple(series.values) == (1, 2)


def luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(one: str, other: str) -> float:
    light, dark = sorted((luminance(one), luminance(other)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_css_has_a_readable_light_and_dark_palette() -> None:
    light, _, dark = CHART_CSS.partition("@media (prefers-color-scheme: dark)")
    assert dark, "no dark block"
    for block in (light, dark):
        colours = dict(re.findall(r"--cg-([a-z0-9-]+):(#[0-9a-f]{6})", block))
        series = [colours[f"series-{n}"] for n in range(8)]
        assert len(set(series)) == 8
        assert all(contrast(colour, colours["bg"]) >= 3 for colour in series)
        assert contrast(colours["fg"], colours["bg"]) >= 7 and contrast(colours["muted"], colours["bg"]) >= 4.5
    for name in ("cg-axis", "cg-grid", "cg-label", "cg-series-0", "cg-series-7", "cg-legend", "cg-swatch"):
        assert f".{name}" in CHART_CSS
    assert re.search(r"text\{fill:currentColor", CHART_CSS)
