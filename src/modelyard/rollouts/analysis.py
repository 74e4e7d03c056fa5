"""Canary analysis: the new version against the baseline in the same window, Kayenta-style.

Why these tests:

- **Same window.** Both versions are measured over the same seconds of the same traffic, so a
  load peak, the time of day, the mix of inputs or a slow dependency hits both alike. A fixed
  threshold alone would fail a good canary on a bad day and pass a bad one on a quiet day.
- **One-sided.** A rollout asks only whether the canary is *worse*: a better canary must not
  fail, and a one-sided test spends all of ``alpha`` on the question asked.
- **Significance and margin.** A check fails only when the difference is both unlikely to be
  chance (p < ``alpha``) and larger than a practical margin. Significance alone would fail a
  good canary under heavy traffic, where a 0.1-point difference is significant; a margin alone
  would fail it on a handful of requests (3 errors in 100). A check passes only when the
  observed difference is within the margin: worse beyond it but not yet significant (4 errors
  in 35 requests against none), or too little data to tell, is *inconclusive*, never a pass.

The checks (margins from :class:`~modelyard.rollouts.entities.Thresholds`; scipy.stats computes
every test):

``errors``   Fisher's exact test, one-sided (canary's error rate greater), on failed (status
             >= 500) and answered requests; fails when p < alpha and the canary's rate exceeds
             the baseline's by more than ``error_rate_margin`` (absolute). Exact at any count
             and ~0.1 ms (a hypergeometric tail), so no normal approximation is needed.
             4xx answers are the caller's fault and 429 a refusal: they are not counted.
``latency``  Mann-Whitney U, one-sided (canary slower), on each answered request's latency
             (at most 20,000 a side, a seeded subsample); fails when p < alpha and the canary's
             p50 exceeds the baseline's by more than ``latency_ratio`` *and* ``latency_ms``;
             also fails when ``max_p99_ms`` is set and the canary's p99 (its requests' empirical
             99th percentile) exceeds it.
``outputs``  per scalar output both versions log, two-sided (any shift of the predictions is
             suspect): chi-square of the 2 x K table of counts for categories (strings, bools,
             integers with at most 50 values), two-sample Kolmogorov-Smirnov for numbers; and
             the PSI over the categories or over the baseline's 10 quantile bins. A column fails
             when p < alpha / columns (Bonferroni: the check keeps its ``alpha``) and PSI >
             ``output_psi``; a significant shift whose PSI is under the limit but whose
             95th bootstrap percentile is over it is inconclusive (the sample cannot yet
             tell), not a pass. Each request is one sample (its first row): the rows of a
             batch request are not independent, and a few large ones would otherwise
             outweigh many single rows (and fail a good canary).

Each check is inconclusive while either side has fewer than ``min_requests`` requests.
:func:`compare_shadow` judges a mirrored version by the share of its answers that differ
from the baseline's to the same requests; :func:`compare_metrics` judges feedback metrics
(accuracy by a test on the correct counts, other metrics by margin alone).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from modelyard.rollouts.entities import Check, Thresholds, Verdict

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "MetricSide",
    "Side",
    "compare",
    "compare_metrics",
    "compare_shadow",
    "early_errors",
    "side",
    "verdict",
]

#: Values per side a rank or KS test sees at most: bounds the cost, not the power (20,000 is
#: far more than a 5 % shift needs).
MAX_SAMPLE = 20_000
#: An integer output with at most this many distinct values (both sides together) is a category.
MAX_CATEGORIES = 50
PSI_BINS = 10
#: The share an empty bin counts as, so a category only one side has weighs in without making
#: the PSI infinite (as monitoring's drift does).
PSI_EMPTY_SHARE = 1e-4
#: The early error look tests at alpha / EARLY_ALPHA_DIVISOR: it runs every second, so only
#: overwhelming evidence may act on it.
EARLY_ALPHA_DIVISOR = 100
_OUTPUT = "out__"
_SEED = 17
# KS p-values: scipy's exact method below this n*m, its asymptotic one above (same to ~1e-2,
# and exact costs ~10 ms at 5,000 x 9,000).
_KS_EXACT_MAX = 1_000_000

Array = npt.NDArray[Any]


@dataclass(eq=False)  # numpy arrays have no truth value to compare by
class Side:
    """One version's requests in the window."""

    version: int
    #: Distinct requests: answered plus failed with status >= 500 (4xx: not counted).
    requests: int = 0
    #: Of those, failed with status >= 500.
    errors: int = 0
    #: One latency per answered request (float64).
    latency_ms: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    #: Per scalar output (``out__`` stripped), one value per answered request (its first
    #: row); list-valued outputs (probabilities) are left out.
    outputs: dict[str, Array] = field(default_factory=dict)


@dataclass
class MetricSide:
    """One version's feedback metrics in the window (monitoring's ``PerformanceWindow``)."""

    version: int
    samples: int  # labelled predictions
    metrics: dict[str, float | None]


# -- reading the prediction log ------------------------------------------------------------


def side(table: pa.Table, version: int, *, model: str | None = None, shadow: bool = False) -> Side:
    """The requests of ``version`` (of ``model``, if given: versions of two models share
    numbers) in ``table`` (prediction-log rows), shadow or not.

    A table without ``version`` or ``request_id`` has no rows; without ``shadow``, every row is
    a live one; without ``status``, every row was answered.
    """
    import pyarrow.compute as pc

    if "version" not in table.column_names or "request_id" not in table.column_names:
        return Side(version)
    flag = _shadow_flag(table)
    if flag is None and shadow:
        return Side(version)
    mask = pc.equal(table["version"], version)
    if model is not None and "model" in table.column_names:
        mask = pc.and_(mask, pc.equal(table["model"], model))
    if flag is not None:
        mask = pc.and_(mask, flag if shadow else pc.invert(flag))
    return _side_of(_select(table).filter(mask), version)


def _shadow_flag(table: pa.Table) -> Any:
    import pyarrow.compute as pc

    if "shadow" not in table.column_names:
        return None
    return pc.fill_null(table["shadow"], False)


def _status(table: pa.Table) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    if "status" not in table.column_names:
        return pa.chunked_array([np.full(table.num_rows, 200, np.int16)])
    return pc.fill_null(table["status"], 200)


def _select(table: pa.Table) -> pa.Table:
    # Only the columns a side reads: filtering inputs too would copy them for nothing.
    names = table.column_names
    keep = [n for n in ("request_id", "latency_ms", "status") if n in names]
    return table.select(keep + [n for n in names if n.startswith(_OUTPUT)])


def _side_of(rows: pa.Table, version: int) -> Side:
    import pyarrow.compute as pc

    if rows.num_rows == 0:
        return Side(version)
    status = _status(rows)
    answered = rows.filter(pc.less(status, 400))
    failed = rows.filter(pc.greater_equal(status, 500))
    codes, count = _codes(answered["request_id"])
    first = _first_rows(codes)
    errors = _codes(failed["request_id"])[1]
    latency = np.empty(0)
    if "latency_ms" in rows.column_names and count:
        latencies = _floats(answered["latency_ms"])[first]
        latency = latencies[np.isfinite(latencies)]
    outputs = {}
    # One sample per request: the rows of one batch request are not independent, and a few
    # large requests would otherwise outweigh many single rows.
    firsts = answered.filter(first) if count else answered
    for name in answered.column_names:
        if name.startswith(_OUTPUT):
            values = _scalars(firsts[name])
            if values is not None:
                outputs[name.removeprefix(_OUTPUT)] = values
    return Side(version, count + errors, errors, latency, outputs)


def _codes(ids: Any) -> tuple[npt.NDArray[np.int64], int]:
    """Each row's request as an integer (in order of first appearance), and how many."""
    import pyarrow.compute as pc

    if len(ids) == 0:
        return np.empty(0, np.int64), 0
    encoded = pc.dictionary_encode(ids.combine_chunks())
    codes = pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64)
    return codes, len(encoded.dictionary)


def _first_rows(codes: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    # Codes number requests in order of first appearance, so a request's first row is the
    # first code above every code before it: O(n), unlike sorting.
    first = np.zeros(len(codes), np.bool_)
    if len(codes):
        first[0] = codes[0] >= 0
        first[1:] = codes[1:] > np.maximum.accumulate(codes)[:-1]
    return first


def _floats(column: Any) -> npt.NDArray[np.float64]:
    import pyarrow.compute as pc

    return np.asarray(pc.fill_null(column.cast("float64"), math.nan).to_numpy(), np.float64)


def _scalars(column: Any) -> Array | None:
    """A scalar output column as numpy (nulls dropped); None for lists and other types."""
    import pyarrow as pa

    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.cast(kind.value_type)
        kind = kind.value_type
    column = column.drop_null()
    if pa.types.is_floating(kind):
        return np.asarray(column.to_numpy(), np.float64)
    if pa.types.is_integer(kind):
        return np.asarray(column.to_numpy(), np.int64)
    if pa.types.is_boolean(kind):
        return np.asarray(column.to_numpy(), np.bool_)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return np.asarray(column.to_numpy(), object)
    return None


# -- canary against baseline ---------------------------------------------------------------


def compare(
    baseline: Side, canary: Side, thresholds: Thresholds, *, min_requests: int
) -> list[Check]:
    """The ``errors``, ``latency`` and ``outputs`` checks of the canary against the baseline."""
    return [
        _errors(baseline, canary, thresholds.alpha, thresholds.error_rate_margin, min_requests),
        _latency(baseline, canary, thresholds, min_requests),
        _outputs(baseline, canary, thresholds, min_requests),
    ]


def early_errors(
    baseline: Side, canary: Side, thresholds: Thresholds, *, min_requests: int
) -> Check:
    """The ``errors`` check at ``alpha / 100``, on ``max(10, min_requests // 5)`` requests a side.

    Meant to run every second between analyses: it acts only on overwhelming evidence (e.g.
    6 errors in 30 canary requests against none in 570 gives p ~ 1e-8).
    """
    return _errors(
        baseline,
        canary,
        thresholds.alpha / EARLY_ALPHA_DIVISOR,
        thresholds.error_rate_margin,
        max(10, min_requests // 5),
        title="errors (early look)",
    )


def _errors(
    baseline: Side,
    canary: Side,
    alpha: float,
    margin: float,
    minimum: int,
    *,
    label: str = "canary",
    title: str = "errors",
) -> Check:
    from scipy import stats

    base_rate = _rate(baseline.errors, baseline.requests)
    rate = _rate(canary.errors, canary.requests)
    figures: dict[str, Any] = {
        "baseline": base_rate,
        "canary": rate,
        "baseline_errors": baseline.errors,
        "baseline_requests": baseline.requests,
        "canary_errors": canary.errors,
        "canary_requests": canary.requests,
        "margin": margin,
        "alpha": alpha,
        "min_requests": minimum,
    }
    counts = (
        f"{label} {rate:.1%} ({canary.errors:,}/{canary.requests:,}) "
        f"vs baseline {base_rate:.1%} ({baseline.errors:,}/{baseline.requests:,})"
    )
    if canary.requests < minimum or baseline.requests < minimum:
        summary = f"{title}: {counts}, need {minimum:,} requests a side: inconclusive"
        return Check(name="errors", verdict="inconclusive", summary=summary, figures=figures)
    table = [
        [canary.errors, canary.requests - canary.errors],
        [baseline.errors, baseline.requests - baseline.errors],
    ]
    p = float(stats.fisher_exact(table, alternative="greater").pvalue)
    difference = rate - base_rate
    result = _decide(p < alpha, difference > margin)
    figures.update(p_value=p, difference=difference)
    summary = (
        f"{title}: {counts}, {_p(p)}, {difference * 100:+.1f} pt "
        f"(margin +{margin * 100:.1f} pt){_WAITING if result == 'inconclusive' else ''}: {result}"
    )
    return Check(name="errors", verdict=result, summary=summary, figures=figures)


def _latency(
    baseline: Side,
    canary: Side,
    thresholds: Thresholds,
    minimum: int,
    *,
    label: str = "canary",
) -> Check:
    from scipy import stats

    base, new = baseline.latency_ms, canary.latency_ms
    base_p50, base_p99 = _percentiles(base)
    p50, p99 = _percentiles(new)
    figures: dict[str, Any] = {
        "baseline": base_p50,
        "canary": p50,
        "baseline_p99": base_p99,
        "canary_p99": p99,
        "baseline_requests": len(base),
        "canary_requests": len(new),
        "latency_ratio": thresholds.latency_ratio,
        "latency_ms": thresholds.latency_ms,
        "max_p99_ms": thresholds.max_p99_ms,
        "alpha": thresholds.alpha,
        "min_requests": minimum,
    }
    if len(new) < minimum or len(base) < minimum:
        summary = (
            f"latency: {label} {len(new):,} answered requests vs baseline {len(base):,}, "
            f"need {minimum:,} a side: inconclusive"
        )
        return Check(name="latency", verdict="inconclusive", summary=summary, figures=figures)
    assert p50 is not None and p99 is not None and base_p50 is not None and base_p99 is not None
    rng = np.random.default_rng(_SEED)
    test = stats.mannwhitneyu(_sample(new, rng), _sample(base, rng), alternative="greater")
    p = float(test.pvalue)
    slower = p50 > base_p50 * (1 + thresholds.latency_ratio) and (
        p50 - base_p50 > thresholds.latency_ms
    )
    ceiling = thresholds.max_p99_ms is not None and p99 > thresholds.max_p99_ms
    # NaN (identical constants on both sides) compares False: never significant.
    result = "fail" if ceiling else _decide(p < thresholds.alpha, slower)
    relative = p50 / base_p50 - 1 if base_p50 > 0 else None
    figures.update(p_value=_finite(p), relative=relative, difference_ms=p50 - base_p50)
    change = f"{relative:+.0%}, " if relative is not None else ""
    summary = (
        f"latency: {label} p50 {p50:,.1f} ms, p99 {p99:,.1f} ms vs baseline p50 "
        f"{base_p50:,.1f} ms, p99 {base_p99:,.1f} ms, {_p(p)}, p50 {change}"
        f"{p50 - base_p50:+,.1f} ms (margins +{thresholds.latency_ratio:.0%} and "
        f"+{thresholds.latency_ms:g} ms)"
    )
    if ceiling:
        summary += f", p99 above the {thresholds.max_p99_ms:g} ms ceiling"
    elif result == "inconclusive":
        summary += _WAITING
    return Check(name="latency", verdict=result, summary=f"{summary}: {result}", figures=figures)


def _outputs(baseline: Side, canary: Side, thresholds: Thresholds, minimum: int) -> Check:
    names = sorted(
        name
        for name, values in canary.outputs.items()
        if len(values) and len(baseline.outputs.get(name, ())) > 0
    )
    if not names:
        few = min(len(canary.latency_ms), len(baseline.latency_ms)) < minimum
        summary = (
            f"outputs: too few answered requests, need {minimum:,} a side: inconclusive"
            if few
            else "outputs: no scalar output logged by both versions, nothing to compare: pass"
        )
        result: Verdict = "inconclusive" if few else "pass"
        return Check(name="outputs", verdict=result, summary=summary, figures={"columns": {}})
    alpha = thresholds.alpha / len(names)
    columns = {
        name: _column(baseline.outputs[name], canary.outputs[name], alpha, thresholds, minimum)
        for name in names
    }
    result = _combine(column["verdict"] for column in columns.values())
    tested = {n: c for n, c in columns.items() if c["verdict"] != "inconclusive"}
    failing = {n: c for n, c in columns.items() if c["verdict"] == "fail"}
    waiting = {n: c for n, c in columns.items() if "psi_high" in c and c["verdict"] != "pass"}
    worst = max(
        failing or waiting or tested or columns,
        key=lambda n: (columns[n].get("psi") or 0.0, n),
    )
    column = columns[worst]
    figures: dict[str, Any] = {
        "column": worst,
        "psi": column.get("psi"),
        "p_value": column.get("p_value"),
        "threshold": thresholds.output_psi,
        "alpha": alpha,
        "baseline_rows": column["baseline_rows"],
        "canary_rows": column["canary_rows"],
        "min_requests": minimum,
        "columns": columns,
    }
    if column["verdict"] == "inconclusive" and "psi_high" in column:
        summary = (
            f"outputs: {worst!r} shifted ({column['test']} {_p(column['p_value'])}), PSI "
            f"{column['psi']:.3f} but up to {column['psi_high']:.3f} at 95 % (limit "
            f"{thresholds.output_psi:g}): more requests needed"
        )
    elif column["verdict"] == "inconclusive":
        summary = (
            f"outputs: {worst!r} canary {column['canary_rows']:,} rows vs baseline "
            f"{column['baseline_rows']:,}, need {minimum:,} a side"
        )
    else:
        summary = (
            f"outputs: {worst!r} PSI {column['psi']:.3f} (limit {thresholds.output_psi:g}), "
            f"{column['test']} {_p(column['p_value'])}"
        )
        shares = column.get("canary_shares", {})
        if 1 < len(shares) <= 4:  # e.g. a class label: the shares say more than the PSI
            summary += (
                f", shares of {'/'.join(shares)}: canary "
                f"{'/'.join(f'{v:.0%}' for v in shares.values())} vs baseline "
                f"{'/'.join(f'{v:.0%}' for v in column['baseline_shares'].values())}"
            )
    if len(names) > 1:
        summary += f"; {len(failing)} of {len(names)} columns shifted"
    return Check(name="outputs", verdict=result, summary=f"{summary}: {result}", figures=figures)


def _column(
    base: Array, new: Array, alpha: float, thresholds: Thresholds, minimum: int
) -> dict[str, Any]:
    """One output column's test, PSI and verdict (JSON-able figures)."""
    from scipy import stats

    if base.dtype.kind != new.dtype.kind and not {base.dtype.kind, new.dtype.kind} <= set("iuf"):
        base, new = base.astype(str).astype(object), new.astype(str).astype(object)
    categories: Array | None = None
    if base.dtype.kind in "bOUS" or (base.dtype.kind in "iu" and new.dtype.kind in "iu"):
        values, inverse = np.unique(np.concatenate([base, new]), return_inverse=True)
        if base.dtype.kind not in "iu" or len(values) <= MAX_CATEGORIES:
            categories = values
    if categories is None:
        base, new = _finite_values(base), _finite_values(new)
    figures: dict[str, Any] = {
        "kind": "categorical" if categories is not None else "numeric",
        "baseline_rows": len(base),
        "canary_rows": len(new),
    }
    if len(base) < minimum or len(new) < minimum:
        figures["verdict"] = "inconclusive"
        return figures
    if categories is not None:
        base_counts = np.bincount(inverse[: len(base)], minlength=len(categories))
        counts = np.bincount(inverse[len(base) :], minlength=len(categories))
        statistic, p = 0.0, 1.0
        if len(categories) > 1:
            table = np.vstack([base_counts, counts])
            test = stats.chi2_contingency(table, correction=False)
            statistic, p = float(test.statistic), float(test.pvalue)
        psi = _psi(base_counts, counts)
        top = np.argsort(-(base_counts / len(base) + counts / len(new)), kind="stable")[:10]
        labels = [_label(categories[i]) for i in top]
        figures["baseline_shares"] = {
            k: float(base_counts[i] / len(base)) for k, i in zip(labels, top, strict=True)
        }
        figures["canary_shares"] = {
            k: float(counts[i] / len(new)) for k, i in zip(labels, top, strict=True)
        }
        figures["test"] = "chi-square"
    else:
        rng = np.random.default_rng(_SEED)
        sample_base, sample_new = _sample(base, rng), _sample(new, rng)
        method = "exact" if len(sample_base) * len(sample_new) <= _KS_EXACT_MAX else "asymp"
        test = stats.ks_2samp(sample_new, sample_base, method=method)
        statistic, p = float(test.statistic), float(test.pvalue)
        edges = np.unique(np.quantile(sample_base, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
        bins = len(edges) + 1
        base_counts = np.bincount(np.searchsorted(edges, sample_base, side="right"), minlength=bins)
        counts = np.bincount(np.searchsorted(edges, sample_new, side="right"), minlength=bins)
        psi = _psi(base_counts, counts)
        figures.update(
            test="KS",
            baseline_mean=float(np.mean(base)),
            canary_mean=float(np.mean(new)),
        )
    verdict: Verdict = "pass"
    if p < alpha and psi > thresholds.output_psi:
        verdict = "fail"
    elif p < alpha:
        # A real shift whose size the sample cannot yet place on either side of the limit
        # (about 100 requests scatter a PSI of 0.35 down to 0.15): wait for more.
        high = _psi_high(base_counts, counts)
        figures["psi_high"] = high
        if high > thresholds.output_psi:
            verdict = "inconclusive"
    figures.update(statistic=_finite(statistic), p_value=_finite(p), psi=psi, verdict=verdict)
    return figures


def _psi_high(base_counts: Array, counts: Array, draws: int = 200) -> float:
    """The 95th percentile of the PSI over samples of the same sizes drawn from the shares
    observed (a parametric bootstrap of both sides' counts)."""
    rng = np.random.default_rng(_SEED)
    base = rng.multinomial(int(base_counts.sum()), base_counts / base_counts.sum(), draws)
    new = rng.multinomial(int(counts.sum()), counts / counts.sum(), draws)
    return float(np.quantile([_psi(b, n) for b, n in zip(base, new, strict=True)], 0.95))


def _psi(base_counts: Array, counts: Array) -> float:
    base = base_counts / base_counts.sum()
    new = counts / counts.sum()
    base = np.where(base > 0, base, PSI_EMPTY_SHARE)
    new = np.where(new > 0, new, PSI_EMPTY_SHARE)
    return float(np.sum((new - base) * np.log(new / base)))


# -- shadow against baseline ---------------------------------------------------------------


def compare_shadow(
    table: pa.Table,
    baseline_version: int,
    shadow_version: int,
    thresholds: Thresholds,
    *,
    min_requests: int,
) -> list[Check]:
    """The ``disagreement``, ``latency`` and ``errors`` checks of a mirrored version.

    Each shadow row (``shadow`` true) is paired with the baseline's row of the same request and
    position in it. A pair disagrees when any output both log differs: exactly for integers,
    strings and booleans, beyond ``np.isclose(rtol=1e-3, atol=1e-6)`` for floats (every element
    of a list-valued output, such as probabilities). ``disagreement`` fails above
    ``thresholds.disagreement`` and is inconclusive under ``min_requests`` paired requests.
    The shadow's failures are its version's rows with status >= 500, shadow or not (the
    version answers no live traffic in this phase).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    names = table.column_names
    base_side, shadow_side = Side(baseline_version), Side(shadow_version)
    pairs = _disagreement(None, None, thresholds, min_requests)
    if "version" in names and "request_id" in names:
        status = _status(table)
        mirrored = _shadow_flag(table)
        if mirrored is None:  # a log without the column: no mirrored rows
            mirrored = pa.chunked_array([np.zeros(table.num_rows, np.bool_)])
        is_base = pc.and_(pc.equal(table["version"], baseline_version), pc.invert(mirrored))
        is_shadow = pc.equal(table["version"], shadow_version)
        answered = pc.less(status, 400)
        selected = _select(table)
        base_side = _side_of(selected.filter(is_base), baseline_version)
        failed = pc.greater_equal(status, 500)
        shadow_side = _side_of(
            selected.filter(pc.and_(is_shadow, pc.or_(mirrored, failed))), shadow_version
        )
        pairs = _disagreement(
            selected.filter(pc.and_(is_base, answered)),
            selected.filter(pc.and_(pc.and_(is_shadow, mirrored), answered)),
            thresholds,
            min_requests,
        )
    return [
        pairs,
        _latency(base_side, shadow_side, thresholds, min_requests, label="shadow"),
        _errors(
            base_side,
            shadow_side,
            thresholds.alpha,
            thresholds.error_rate_margin,
            min_requests,
            label="shadow",
        ),
    ]


def _disagreement(
    base: pa.Table | None, shadow: pa.Table | None, thresholds: Thresholds, minimum: int
) -> Check:
    import pyarrow as pa

    pairs = requests = different = 0
    per_column: dict[str, float] = {}
    if base is not None and shadow is not None and base.num_rows and shadow.num_rows:
        ids = pa.chunked_array(
            base["request_id"].chunks + shadow["request_id"].chunks, type=base["request_id"].type
        )
        codes, _ = _codes(ids)
        base_codes, shadow_codes = codes[: base.num_rows], codes[base.num_rows :]
        base_order, shadow_order = _ordinals(base_codes), _ordinals(shadow_codes)
        width = int(max(base_order.max(), shadow_order.max())) + 1
        _, base_rows, shadow_rows = np.intersect1d(
            base_codes * width + base_order,
            shadow_codes * width + shadow_order,
            assume_unique=True,
            return_indices=True,
        )
        pairs = len(base_rows)
        requests = len(np.unique(base_codes[base_rows]))
        differs = np.zeros(pairs, np.bool_)
        names = [n for n in base.column_names if n.startswith(_OUTPUT) and n in shadow.column_names]
        # The answers, not how sure the model is of them: with a label logged, class
        # probabilities are left out (a retrained classifier moves every one of them a
        # little); with probabilities alone, their argmax (the class) is compared.
        listed = {n for n in names if _is_list(base[n].type)}
        if len(listed) < len(names):
            names = [n for n in names if n not in listed]
        for name in names:
            if not pairs:
                break
            left, right = base[name].take(base_rows), shadow[name].take(shadow_rows)
            if left.null_count == pairs or right.null_count == pairs:
                continue  # an output only one of them logs
            if name in listed:
                left, right = _argmax(left), _argmax(right)
            column = _differs(left, right)
            if column is not None:
                per_column[name.removeprefix(_OUTPUT)] = float(column.mean())
                differs |= column
        different = int(differs.sum())
    share = different / pairs if pairs else 0.0
    figures: dict[str, Any] = {
        "share": share,
        "threshold": thresholds.disagreement,
        "pairs": pairs,
        "paired_requests": requests,
        "different": different,
        "baseline_rows": base.num_rows if base is not None else 0,
        "shadow_rows": shadow.num_rows if shadow is not None else 0,
        "columns": per_column,
        "min_requests": minimum,
    }
    head = (
        f"disagreement: {share:.1%} of {pairs:,} paired rows differ ({different:,}; "
        f"{requests:,} requests), limit {thresholds.disagreement:.1%}"
    )
    worst = max(per_column, key=lambda n: (per_column[n], n), default=None)
    if worst is not None and len(per_column) > 1 and per_column[worst] > 0:
        head += f", most in {worst!r} ({per_column[worst]:.1%})"
    if requests < minimum:
        result: Verdict = "inconclusive"
        head += f", need {minimum:,} paired requests"
    elif not per_column:
        result = "pass"
        head += ", no output logged by both versions to compare"
    else:
        result = "fail" if share > thresholds.disagreement else "pass"
    return Check(name="disagreement", verdict=result, summary=f"{head}: {result}", figures=figures)


def _is_list(kind: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind))


def _argmax(column: Any) -> Any:
    """Each row's position of its largest value (a list column of class probabilities)."""
    import pyarrow as pa

    matrix = _matrix(column.combine_chunks())
    if matrix is None:
        return column
    return pa.chunked_array([np.argmax(matrix, axis=1)])


def _ordinals(codes: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Each row's position among the rows of its request (0, 1, ... in table order)."""
    order = np.argsort(codes, kind="stable")
    ordered = codes[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    group = np.cumsum(np.r_[True, ordered[1:] != ordered[:-1]]) - 1
    ordinals = np.empty(len(codes), np.int64)
    ordinals[order] = np.arange(len(codes)) - starts[group]
    return ordinals


def _differs(left: Any, right: Any) -> npt.NDArray[np.bool_] | None:
    """Row by row, whether two output columns differ; None for a type not compared."""
    a, b = _matrix(left.combine_chunks()), _matrix(right.combine_chunks())
    if a is None or b is None:
        return None
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        a, b = a.astype(np.float64), b.astype(np.float64)
        unequal = ~np.isclose(a, b, rtol=1e-3, atol=1e-6, equal_nan=True)
    else:
        unequal = np.asarray(a != b, np.bool_)
    differs = unequal.any(axis=1)
    missing_left = np.asarray(left.is_null().to_numpy(), np.bool_)
    missing_right = np.asarray(right.is_null().to_numpy(), np.bool_)
    differs = np.where(missing_left | missing_right, missing_left != missing_right, differs)
    return np.asarray(differs, np.bool_)


def _matrix(array: Any) -> Array | None:
    """A column as an (rows, values) numpy array; fixed-size lists flattened per row."""
    import pyarrow as pa

    rows, width = len(array), 1
    while pa.types.is_fixed_size_list(array.type):
        size = array.type.list_size
        array = array.values.slice(array.offset * size, len(array) * size)
        width *= size
    kind = array.type
    if not (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
    ):
        return None
    if pa.types.is_floating(kind):
        values = _floats(array)
    else:
        values = np.asarray(array.to_numpy(zero_copy_only=False))
    return values.reshape(rows, width)


# -- feedback metrics ----------------------------------------------------------------------


def compare_metrics(
    baseline: MetricSide,
    canary: MetricSide,
    directions: Mapping[str, Literal["maximize", "minimize"]],
    thresholds: Thresholds,
    *,
    min_samples: int,
    targets: Mapping[str, float] | None = None,
) -> list[Check]:
    """One ``metric:<name>`` check per metric in ``directions`` that both versions measure.

    Inconclusive while either side has fewer than ``min_samples`` labelled predictions.
    ``accuracy``: a one-sided Fisher exact test on the correct counts (accuracy x samples);
    fails when significant and worse by more than ``metric_margin`` in absolute points.
    Any other metric has no test from a window's summary: it fails when the canary is worse
    by more than ``metric_margin`` *relative to |baseline|* (absolute when the baseline is
    0). ``targets`` (KPI targets): a metric also fails when the canary misses its target
    while the baseline meets it.
    """
    from scipy import stats

    targets = targets or {}
    checks = []
    for name, direction in directions.items():
        base, new = baseline.metrics.get(name), canary.metrics.get(name)
        if base is None or new is None or not math.isfinite(base) or not math.isfinite(new):
            continue
        sign = 1.0 if direction == "maximize" else -1.0
        worse = (base - new) * sign  # > 0: the canary is worse
        target = targets.get(name)
        figures: dict[str, Any] = {
            "baseline": base,
            "canary": new,
            "direction": direction,
            "margin": thresholds.metric_margin,
            "baseline_samples": baseline.samples,
            "canary_samples": canary.samples,
            "min_samples": min_samples,
            "target": target,
        }
        head = f"metric:{name}: canary {new:.4g} vs baseline {base:.4g} ({direction})"
        if baseline.samples < min_samples or canary.samples < min_samples:
            summary = (
                f"{head}, {canary.samples:,} vs {baseline.samples:,} labelled samples, "
                f"need {min_samples:,} a side: inconclusive"
            )
            checks.append(
                Check(
                    name=f"metric:{name}", verdict="inconclusive", summary=summary, figures=figures
                )
            )
            continue
        reasons = []
        waiting = False
        if name == "accuracy":
            correct = round(new * canary.samples)
            base_correct = round(base * baseline.samples)
            bad, base_bad = canary.samples - correct, baseline.samples - base_correct
            if direction == "minimize":
                bad, base_bad = correct, base_correct
            table = [
                [bad, canary.samples - bad],
                [base_bad, baseline.samples - base_bad],
            ]
            p = float(stats.fisher_exact(table, alternative="greater").pvalue)
            figures.update(p_value=p, difference=new - base)
            head += (
                f", {_p(p)}, {(new - base) * 100:+.1f} pt "
                f"(margin {thresholds.metric_margin * 100:.1f} pt)"
            )
            unsure = _decide(p < thresholds.alpha, worse > thresholds.metric_margin)
            if unsure == "fail":
                reasons.append("significantly worse")
            waiting = unsure == "inconclusive"
        else:
            relative = worse / abs(base) if base != 0 else worse
            change = (new - base) / abs(base) if base != 0 else new - base
            figures.update(p_value=None, relative=change)
            head += (
                f", {change:+.1%} (margin {thresholds.metric_margin:.1%} of the baseline), "
                f"no significance test for {name}"
            )
            if relative > thresholds.metric_margin:
                reasons.append("worse than the margin")
        if (
            target is not None
            and _misses(new, target, direction)
            and not _misses(base, target, direction)
        ):
            reasons.append(f"misses the target {target:g} the baseline meets")
        result: Verdict = "fail" if reasons else "inconclusive" if waiting else "pass"
        if waiting and not reasons:
            reasons.append(_WAITING.removeprefix(", "))
        summary = f"{head}{': ' + ', '.join(reasons) if reasons else ''}: {result}"
        check = Check(name=f"metric:{name}", verdict=result, summary=summary, figures=figures)
        checks.append(check)
    return checks


_WAITING = ", worse by more than the margin but not yet significant"


def _decide(significant: bool, over_margin: bool) -> Verdict:
    """Fail on a significant difference beyond the margin; pass only on an observed
    difference within it. Beyond the margin but not yet significant (4 errors in 35
    requests against none) is inconclusive: the step waits for more traffic."""
    if not over_margin:
        return "pass"
    return "fail" if significant else "inconclusive"


def verdict(checks: Sequence[Check]) -> Verdict:
    """``fail`` if any check fails, else ``inconclusive`` if any is (or there are none), else
    ``pass``."""
    return _combine(check.verdict for check in checks)


def _combine(verdicts: Iterable[Verdict]) -> Verdict:
    seen = set(verdicts)
    if "fail" in seen:
        return "fail"
    if "inconclusive" in seen or not seen:
        return "inconclusive"
    return "pass"


# -- small things --------------------------------------------------------------------------


def _misses(value: float, target: float, direction: str) -> bool:
    return value < target if direction == "maximize" else value > target


def _rate(errors: int, requests: int) -> float:
    return errors / requests if requests else 0.0


def _percentiles(values: Array) -> tuple[float | None, float | None]:
    if not len(values):
        return None, None
    p50, p99 = np.percentile(values, [50, 99])
    return float(p50), float(p99)


def _sample(values: Array, rng: np.random.Generator) -> Array:
    if len(values) <= MAX_SAMPLE:
        return values
    return rng.choice(values, MAX_SAMPLE, replace=False)


def _finite_values(values: Array) -> npt.NDArray[np.float64]:
    floats = values.astype(np.float64)
    return floats[np.isfinite(floats)]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _label(value: Any) -> str:
    return str(value.item() if isinstance(value, np.generic) else value)


def _p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "p n/a"
    if p == 0:
        return "p<1e-300"
    return f"p={p:.2g}" if p >= 0.01 else f"p={p:.0e}"
