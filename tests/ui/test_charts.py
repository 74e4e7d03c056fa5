"""The server-drawn charts: what they draw and the text that stands for them."""

from __future__ import annotations

import re

from modelyard.ui.charts import Chart, sparkline


def _points(svg: str) -> list[list[tuple[float, float]]]:
    return [
        [tuple(map(float, p.split(","))) for p in found.split()]  # type: ignore[misc]
        for found in re.findall(r'points="([^"]+)"', svg)
    ]


def test_a_gap_in_the_data_is_a_gap_in_the_line() -> None:
    chart = Chart(
        "latency", ["a", "b", "c", "d", "e"], {"p99": [1.0, 2.0, None, float("inf"), 3.0]}
    )
    (first, *rest) = _points(chart.svg())
    assert len(first) == 2 and not rest  # the lone last point is a dot
    assert chart.svg().count("<circle") == 1
    assert chart.rows()[2] == ["c", ""]


def test_negative_values_stay_inside_the_plot_above_a_zero_line() -> None:
    chart = Chart("loglik", ["1", "2"], {"ll": [-3.0, 1.0]}, height=200)
    svg = chart.svg()
    ys = [y for line in _points(svg) for _, y in line]
    assert all(8 <= y <= 182 for y in ys)  # inside the plot's top and bottom padding
    assert ">0</text>" in svg and ">-5</text>" in svg  # the axis names zero and its floor
    bars = Chart("h", ["x", "y"], {"n": [-2.0, 2.0]}, kind="bars").svg()
    heights = [float(h) for h in re.findall(r'<rect [^>]*height="([\d.]+)"', bars)]
    assert heights[0] == heights[1] > 0  # equal magnitudes, drawn from the zero line


def test_summary_and_rows_are_the_text_alternative() -> None:
    chart = Chart("req/s", ["10:00", "10:05"], {"fraud": [2.0, 4.5]}, unit=" req/s")
    assert chart.summary == "req/s: fraud from 2 to 4.5 req/s, last 4.5 req/s."
    assert chart.rows() == [["10:00", "2"], ["10:05", "4.5"]]
    assert f'aria-label="{chart.summary}"' in chart.svg()
    assert Chart("x", [], {"a": []}).empty
    assert Chart("x", ["a"], {"a": [None]}).summary == "x: no data yet."


def test_sparkline_names_its_range_and_escapes_its_label() -> None:
    spark = str(sparkline([1.0, None, 5.0], '<b>"p99"</b>'))
    assert "&lt;b&gt;" in spark and "<b>" not in spark
    assert "1 to 5, last 5" in spark
    assert "no data" in str(sparkline([None, None], "empty"))


def test_values_near_the_largest_float_are_drawn_inside_the_plot() -> None:
    # e.g. a run that logged np.finfo(np.float64).max as a "not yet" loss
    for values in ([0.0, 1e308], [-1.7976931348623157e308, 1.7976931348623157e308]):
        svg = Chart("loss", ["1", "2"], {"loss": values}, height=200).svg()
        ys = [y for line in _points(svg) for _, y in line]
        assert len(ys) == 2 and all(8 <= y <= 182 for y in ys)
        bars = Chart("h", ["1", "2"], {"n": values}, kind="bars").svg()
        heights = [float(h) for h in re.findall(r'<rect[^>]* height="([\d.]+)"', bars)]
        assert len(heights) == 2 and all(0 <= h <= 174 for h in heights)
