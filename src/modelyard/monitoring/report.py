"""The drift report as one self-contained HTML page: a summary, a table, a plot per feature.

Everything is inline (CSS and SVG): the page opens offline, from a file or an e-mail, and
loads nothing from the network. Every value from the profiles (feature names, categories,
messages) goes through Jinja2's autoescaping; the plots are rectangles whose coordinates are
numbers computed here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

import jinja2
import numpy as np

from modelyard.monitoring.drift import DriftReport, FeatureDrift
from modelyard.monitoring.profiles import (
    CategoricalProfile,
    FeatureProfile,
    NumericProfile,
    Profile,
)

__all__ = ["Histogram", "histogram", "render_drift_html"]

PLOT_WIDTH = 420
PLOT_HEIGHT = 140
PLOT_BINS = 30
PLOT_CATEGORIES = 12  # most frequent shown; the rest are summed in one bar

_METHOD_LABELS = {
    "wasserstein": "Wasserstein (normed)",
    "ks": "Kolmogorov-Smirnov",
    "jensenshannon": "Jensen-Shannon",
    "psi": "PSI",
    "chisquare": "chi-square",
}


@dataclass
class _Bar:
    x: float
    y: float
    width: float
    height: float
    series: str  # "ref" or "cur"


@dataclass
class _Plot:
    bars: list[_Bar] = field(default_factory=list)
    labels: list[tuple[float, str]] = field(default_factory=list)  # (x, text) under the axis
    rotate_labels: bool = False
    empty: str = ""  # why there is no plot


@dataclass
class _FeatureView:
    drift: FeatureDrift
    method: str
    statistic: str
    p_value: str
    threshold: str
    verdict: str
    missing: str
    plot: _Plot


def _num(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e6):
        return f"{x:.2e}"
    return f"{x:.4g}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def _verdict(f: FeatureDrift) -> str:
    return {
        "ok": "no drift",
        "drift": "DRIFT",
        "insufficient": "insufficient data",
        "missing": "missing",
        "error": "error",
    }[f.status]


def _bars(ref: np.ndarray | None, cur: np.ndarray | None, grouped: bool) -> list[_Bar]:
    """Bars for shares per bin, heights scaled to the tallest; side by side if ``grouped``."""
    series = [(name, s) for name, s in (("ref", ref), ("cur", cur)) if s is not None]
    if not series:
        return []
    n = len(series[0][1])
    top = max(float(s.max()) for _, s in series) or 1.0
    slot = PLOT_WIDTH / n
    out = []
    for i, (name, shares) in enumerate(series):
        width = slot * (0.4 if grouped else 0.9)
        offset = slot * (0.1 + 0.4 * i) if grouped else slot * 0.05
        for j, share in enumerate(shares):
            h = (PLOT_HEIGHT - 4) * float(share) / top
            out.append(
                _Bar(
                    round(j * slot + offset, 2),
                    round(PLOT_HEIGHT - h, 2),
                    round(width, 2),
                    round(h, 2),
                    name,
                )
            )
    return out


@dataclass
class Histogram:
    """One feature's values on both sides of a drift comparison, as shares per bin.

    Numbers: ``PLOT_BINS`` equal bins over the central 99 % of both sides (one far outlier
    must not squash the rest), labelled by their centres; categories: the most frequent
    ``PLOT_CATEGORIES`` of either side, the rest summed as "(other)". A side without values
    is None; ``empty`` says why there is no histogram at all.
    """

    labels: list[str]
    reference: list[float] | None
    current: list[float] | None
    empty: str = ""
    low: float | None = None  # numbers: the range the bins cover
    high: float | None = None


def histogram(ref: FeatureProfile | None, cur: FeatureProfile | None) -> Histogram:
    """The histogram a drift plot of one feature draws (its reference and current profiles)."""
    kinds = {p.kind for p in (ref, cur) if p is not None}
    if len(kinds) != 1:
        return Histogram([], None, None, empty="the two sides have different kinds")
    if kinds == {"numeric"}:
        return _numeric_histogram(
            ref if isinstance(ref, NumericProfile) else None,
            cur if isinstance(cur, NumericProfile) else None,
        )
    return _categorical_histogram(
        ref if isinstance(ref, CategoricalProfile) else None,
        cur if isinstance(cur, CategoricalProfile) else None,
    )


def _numeric_histogram(ref: NumericProfile | None, cur: NumericProfile | None) -> Histogram:
    present = [p for p in (ref, cur) if p is not None and p.count > 0]
    if not present:
        return Histogram([], None, None, empty="no values to plot")
    lo = min(float(p.quantiles([0.005])[0]) for p in present)
    hi = max(float(p.quantiles([0.995])[0]) for p in present)
    if not hi > lo:
        pad = max(abs(lo) * 0.05, 0.5)
        lo, hi = lo - pad, hi + pad
    edges = np.linspace(lo, hi, PLOT_BINS + 1)

    def shares(p: NumericProfile | None) -> list[float] | None:
        if p is None or p.count == 0:
            return None
        return [float(x) for x in np.clip(np.diff(p.cdf(edges)), 0.0, None)]

    centres = [_num(float(x)) for x in (edges[:-1] + edges[1:]) / 2]
    return Histogram(centres, shares(ref), shares(cur), low=lo, high=hi)


def _categorical_histogram(
    ref: CategoricalProfile | None, cur: CategoricalProfile | None
) -> Histogram:
    present = [p for p in (ref, cur) if p is not None and p.total > 0]
    if not present:
        return Histogram([], None, None, empty="no values to plot")
    score: dict[str, float] = {}
    for p in present:
        for key, share in p.frequencies().items():
            score[key] = max(score.get(key, 0.0), share)
    shown = sorted(score, key=lambda k: (-score[k], k))[:PLOT_CATEGORIES]
    others = len(score) > len(shown) or any(p.other for p in present)

    def shares(p: CategoricalProfile | None) -> list[float] | None:
        if p is None or p.total == 0:
            return None
        freq = p.frequencies()
        values = [float(freq.get(k, 0.0)) for k in shown]
        rest = 1.0 - sum(values)
        return values + ([max(rest, 0.0)] if others else [])

    names = [*shown, "(other)"] if others else shown
    return Histogram(names, shares(ref), shares(cur))


def _array(shares: list[float] | None) -> np.ndarray | None:
    return None if shares is None else np.asarray(shares)


def _numeric_plot(ref: NumericProfile | None, cur: NumericProfile | None) -> _Plot:
    h = _numeric_histogram(ref, cur)
    if h.empty or h.low is None or h.high is None:
        return _Plot(empty=h.empty)
    lo, hi = h.low, h.high
    return _Plot(
        bars=_bars(_array(h.reference), _array(h.current), grouped=False),
        labels=[(0.0, _num(lo)), (PLOT_WIDTH / 2, _num((lo + hi) / 2)), (PLOT_WIDTH, _num(hi))],
    )


def _categorical_plot(ref: CategoricalProfile | None, cur: CategoricalProfile | None) -> _Plot:
    h = _categorical_histogram(ref, cur)
    if h.empty:
        return _Plot(empty=h.empty)
    slot = PLOT_WIDTH / len(h.labels)
    labels = [
        (round((i + 0.5) * slot, 2), n if len(n) <= 14 else n[:13] + "…")
        for i, n in enumerate(h.labels)
    ]
    return _Plot(
        bars=_bars(_array(h.reference), _array(h.current), grouped=True),
        labels=labels,
        rotate_labels=True,
    )


def _plot(ref: FeatureProfile | None, cur: FeatureProfile | None) -> _Plot:
    kinds = {p.kind for p in (ref, cur) if p is not None}
    if len(kinds) != 1:
        return _Plot(empty="the two sides have different kinds")
    if kinds == {"numeric"}:
        return _numeric_plot(
            ref if isinstance(ref, NumericProfile) else None,
            cur if isinstance(cur, NumericProfile) else None,
        )
    return _categorical_plot(
        ref if isinstance(ref, CategoricalProfile) else None,
        cur if isinstance(cur, CategoricalProfile) else None,
    )


def _view(f: FeatureDrift, reference: Profile, current: Profile) -> _FeatureView:
    return _FeatureView(
        drift=f,
        method=_METHOD_LABELS.get(f.method or "", "—"),
        statistic=_num(f.statistic),
        p_value=_num(f.p_value),
        threshold=_num(f.threshold),
        verdict=_verdict(f),
        missing=f"{_pct(f.reference_missing_rate)} / {_pct(f.current_missing_rate)}",
        plot=_plot(reference.features.get(f.feature), current.features.get(f.feature)),
    )


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328;
       margin: 2rem auto; max-width: 1100px; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: .25rem; }
.sub { color: #59636e; margin-top: 0; }
.summary { display: flex; gap: 1rem; flex-wrap: wrap; margin: 1.25rem 0; }
.card { border: 1px solid #d1d9e0; border-radius: 8px; padding: .75rem 1rem; }
.big { font-size: 1.4rem; font-weight: 600; }
.s-drift { color: #b42318; } .s-ok { color: #1a7f37; }
.s-insufficient, .s-missing { color: #9a6700; } .s-error { color: #8250df; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0 2rem; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #d1d9e0;
         vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.features { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr));
            gap: 1rem; }
.feature h3 { margin: 0 0 .25rem; font-size: 1rem; word-break: break-all; }
.msg { color: #59636e; font-size: .85rem; margin: .25rem 0 .5rem; }
.new { font-size: .85rem; }
svg .ref { fill: #4f7cac; fill-opacity: .55; } svg .cur { fill: #e07b39; fill-opacity: .55; }
svg text { font-size: 10px; fill: #59636e; }
.legend span { display: inline-block; width: .8em; height: .8em; margin: 0 .3em 0 .8em;
               vertical-align: middle; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="sub">Generated {{ generated }} · reference {{ "{:,}".format(report.reference_rows) }}
rows · current {{ "{:,}".format(report.current_rows) }} rows</p>

<div class="summary">
  <div class="card"><div>Dataset drift</div>
    <div class="big s-{{ report.status }}">{{ dataset_verdict }}</div></div>
  <div class="card"><div>Drifted features</div>
    <div class="big">{{ report.drifted_features }} of {{ report.checked_features }}</div>
    <div>share {{ "{:.0%}".format(report.drift_share) }}</div></div>
  {% if unchecked %}<div class="card"><div>Without a verdict</div>
    <div class="big s-insufficient">{{ unchecked }}</div>
    <div>insufficient, missing or error</div></div>{% endif %}
</div>

<table>
<thead><tr><th>Feature</th><th>Kind</th><th>Method</th><th>Statistic</th><th>p-value</th>
<th>Threshold</th><th>Verdict</th><th>Missing ref / cur</th><th>New categories</th></tr></thead>
<tbody>
{% for v in features %}
<tr><td>{{ v.drift.feature }}</td><td>{{ v.drift.kind }}</td><td>{{ v.method }}</td>
<td class="n">{{ v.statistic }}</td><td class="n">{{ v.p_value }}</td>
<td class="n">{{ v.threshold }}</td>
<td class="s-{{ v.drift.status }}">{{ v.verdict }}</td><td>{{ v.missing }}</td>
<td>{{ v.drift.new_categories[:5] | join(", ") }}{% if v.drift.new_categories | length > 5
%} (+{{ v.drift.new_categories | length - 5 }}){% endif %}</td></tr>
{% endfor %}
</tbody>
</table>

<div class="legend"><span style="background:#4f7cac;opacity:.55"></span>reference
<span style="background:#e07b39;opacity:.55"></span>current</div>
<div class="features">
{% for v in features %}
<section class="feature card">
<h3>{{ v.drift.feature }} <span class="s-{{ v.drift.status }}">· {{ v.verdict }}</span></h3>
<p class="msg">{{ v.drift.message }}</p>
{% if v.drift.new_categories %}<p class="new">New categories:
{{ v.drift.new_categories[:10] | join(", ") }}{% if v.drift.new_categories | length > 10
%}, …{% endif %}</p>{% endif %}
{% if v.plot.empty %}<p class="msg">{{ v.plot.empty }}</p>{% else %}
<svg viewBox="0 -2 {{ width }} {{ height + (62 if v.plot.rotate_labels else 16) }}"
 width="100%" role="img" aria-label="distribution of {{ v.drift.feature }}">
{% for b in v.plot.bars %}<rect class="{{ b.series }}" x="{{ b.x }}" y="{{ b.y }}"
 width="{{ b.width }}" height="{{ b.height }}"/>{% endfor %}
<line x1="0" y1="{{ height }}" x2="{{ width }}" y2="{{ height }}" stroke="#8c959f"/>
{% for x, text in v.plot.labels %}{% if v.plot.rotate_labels %}<text
 transform="translate({{ x }},{{ height + 8 }}) rotate(40)">{{ text }}</text>{% else %}<text
 x="{{ x }}" y="{{ height + 12 }}" text-anchor="{{ 'start' if loop.first else ('end' if loop.last
 else 'middle') }}">{{ text }}</text>{% endif %}{% endfor %}
</svg>{% endif %}
</section>
{% endfor %}
</div>
</body>
</html>
"""

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
_PAGE = _ENV.from_string(_TEMPLATE)


def render_drift_html(
    report: DriftReport, reference: Profile, current: Profile, *, title: str
) -> str:
    """The report as a self-contained HTML page (no scripts, no external resources)."""
    features = [_view(f, reference, current) for f in report.features]
    dataset_verdict = {"drift": "yes", "ok": "no", "insufficient": "insufficient data"}
    return _PAGE.render(
        title=title,
        report=report,
        features=features,
        dataset_verdict=dataset_verdict[report.status],
        unchecked=len(report.features) - report.checked_features,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        width=PLOT_WIDTH,
        height=PLOT_HEIGHT,
    )
