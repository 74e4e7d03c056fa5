"""Charts drawn by the server as inline SVG, each with its data as a table beside it.

No chart library runs in the browser: a chart is a few hundred bytes of SVG made here, so a
page is complete as it arrives, a live chart refreshes by swapping its HTML (htmx), and the
text alternative is the very numbers the chart was drawn from (``Chart.rows``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

from markupsafe import Markup

#: Colour-blind-safe series colours (Okabe-Ito), in the order series are given.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00")

Number = float | int | None


@dataclass
class Chart:
    """Series over shared x labels: ``kind`` "line" (time series) or "bars" (histograms).

    ``series`` maps a name to one value per label (None: no value there).
    """

    title: str
    labels: Sequence[str]
    series: dict[str, Sequence[Number]]
    unit: str = ""
    kind: str = "line"
    #: Drawn at this size and shrunk (never stretched) to fit, so its text stays 11 px on a
    #: screen as wide as the chart; 420 fits a column of a three-column grid at 1280 px.
    width: int = 420
    height: int = 180
    description: str = ""
    id: str = field(default="")

    @property
    def empty(self) -> bool:
        return not any(v is not None for values in self.series.values() for v in values)

    @property
    def summary(self) -> str:
        """One sentence for screen readers: each series' range and last value."""
        if self.empty:
            return f"{self.title}: no data yet."
        parts = []
        for name, values in self.series.items():
            known = [float(v) for v in values if v is not None]
            if known:
                parts.append(
                    f"{name} from {_fmt(min(known))} to {_fmt(max(known))}{self.unit}, "
                    f"last {_fmt(known[-1])}{self.unit}"
                )
        return f"{self.title}: " + "; ".join(parts) + "."

    def rows(self) -> list[list[str]]:
        """The chart's data, one row per label: the text alternative."""
        return [
            [label]
            + ["" if values[i] is None else _fmt(values[i]) for values in self.series.values()]
            for i, label in enumerate(self.labels)
        ]

    def svg(self) -> Markup:
        width, height, pad_left, pad_bottom, pad_top = self.width, self.height, 44, 18, 8
        plot_w, plot_h = width - pad_left - 6, height - pad_bottom - pad_top
        known = [
            float(v)
            for values in self.series.values()
            for v in values
            if v is not None and math.isfinite(float(v))
        ]
        # the axis spans zero and every value: a log-likelihood is drawn below zero
        top = _nice_top(max(known, default=0.0))
        bottom = -_nice_top(-min(known)) if known and min(known) < 0 else 0.0
        if max(known, default=0.0) <= 0 < -bottom:
            top = 0.0

        def y_of(value: float) -> float:
            # halves first: near the largest floats, top - bottom itself would overflow
            return pad_top + plot_h * ((top / 2 - value / 2) / (top / 2 - bottom / 2))

        n = max(len(self.labels), 1)
        out = [
            f'<svg class="chart" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(self.summary)}">',
            f"<title>{escape(self.title)}</title>",
        ]
        for tick in dict.fromkeys((bottom, (bottom + top) / 2, top, 0.0)):
            y = y_of(tick)
            out.append(
                f'<line class="grid" x1="{pad_left}" x2="{width - 6}" y1="{y:.1f}" y2="{y:.1f}"/>'
                f'<text class="axis" x="{pad_left - 4}" y="{y + 4:.1f}" text-anchor="end">'
                f"{escape(_fmt(tick))}</text>"
            )
        for i in sorted({0, n // 2, n - 1}) if self.labels else []:
            x = pad_left + plot_w * (i + 0.5) / n
            # the first and last labels keep inside the chart
            anchor = "start" if i == 0 and n > 1 else "end" if i == n - 1 and n > 1 else "middle"
            x = pad_left if anchor == "start" else width - 6 if anchor == "end" else x
            out.append(
                f'<text class="axis" x="{x:.1f}" y="{height - 4}" text-anchor="{anchor}">'
                f"{escape(self.labels[i])}</text>"
            )
        count = max(len(self.series), 1)
        for k, (name, values) in enumerate(self.series.items()):
            colour = PALETTE[k % len(PALETTE)]
            if self.kind == "bars":
                slot = plot_w / n
                bar = slot * 0.8 / count
                for i, value in enumerate(values):
                    if value is None or not math.isfinite(float(value)):
                        continue
                    y0, y1 = sorted((y_of(0.0), y_of(float(value))))
                    x = pad_left + slot * i + slot * 0.1 + bar * k
                    out.append(
                        f'<rect x="{x:.1f}" y="{y0:.1f}" width="{bar:.1f}" '
                        f'height="{y1 - y0:.1f}" fill="{colour}"><title>{escape(name)} '
                        f"{escape(self.labels[i])}: {_fmt(value)}{escape(self.unit)}</title></rect>"
                    )
            else:
                for segment in _segments(values):
                    points = " ".join(
                        f"{pad_left + plot_w * (i + 0.5) / n:.1f},{y_of(float(v)):.1f}"
                        for i, v in segment
                    )
                    if len(segment) == 1:
                        cx, cy = points.split(",")
                        out.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}"/>')
                    else:
                        out.append(
                            f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                            f'points="{points}"/>'
                        )
        out.append("</svg>")
        return Markup("".join(out))

    def legend(self) -> list[tuple[str, str]]:
        return [(name, PALETTE[k % len(PALETTE)]) for k, name in enumerate(self.series)]


def sparkline(
    values: Sequence[Number], label: str, *, width: int = 120, height: int = 28
) -> Markup:
    """A small line without axes, for tables; ``label`` names it for screen readers."""
    known = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not known:
        return Markup(f'<span class="muted" title="{escape(label)}">no data</span>')
    low, high = min(min(known), 0.0), max(known)
    span = (high - low) or 1.0
    n = len(values)
    lines = []
    for segment in _segments(values):
        points = [
            (width * (i + 0.5) / n, height - 2 - (height - 4) * (float(v) - low) / span)
            for i, v in segment
        ]
        if len(points) == 1:
            lines.append(
                f'<circle cx="{points[0][0]:.1f}" cy="{points[0][1]:.1f}" r="1.5" '
                f'fill="{PALETTE[0]}"/>'
            )
        else:
            joined = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            lines.append(
                f'<polyline fill="none" stroke="{PALETTE[0]}" stroke-width="1.5" '
                f'points="{joined}"/>'
            )
    text = f"{label}: {_fmt(min(known))} to {_fmt(max(known))}, last {_fmt(known[-1])}"
    return Markup(
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(text)}"><title>{escape(text)}</title>'
        + "".join(lines)
        + "</svg>"
    )


def _segments(values: Sequence[Number]) -> list[list[tuple[int, float]]]:
    """Runs of consecutive known values: a gap in the data is a gap in the line."""
    runs: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for i, v in enumerate(values):
        if v is None or not math.isfinite(float(v)):
            if current:
                runs.append(current)
            current = []
        else:
            current.append((i, float(v)))
    if current:
        runs.append(current)
    return runs


def _nice_top(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above ``value``."""
    if value <= 0:
        return 1.0
    # a float power (an int one is exact, and too large to convert back near 1e308), and
    # never past the largest float: a step above it is infinite
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return min(step * power, sys.float_info.max)
    return min(10 * power, sys.float_info.max)


def _fmt(value: float | int | None) -> str:
    if value is None:
        return ""
    value = float(value)
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"
