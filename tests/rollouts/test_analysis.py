"""Canary analysis: reading the prediction log, and each check on good and bad canaries."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pytest

from modelyard.monitoring.predlog import BASE_SCHEMA
from modelyard.rollouts.analysis import (
    MetricSide,
    Side,
    compare,
    compare_metrics,
    compare_shadow,
    early_errors,
    side,
    verdict,
)
from modelyard.rollouts.entities import Check, Thresholds

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)
DEFAULT = Thresholds()


# -- building prediction-log tables ----------------------------------------------------------


@dataclass
class Request:
    """One logged request: ``rows`` predicted rows, or one row of a failed request."""

    id: str
    version: int
    latency_ms: float
    status: int = 200
    shadow: bool = False
    labels: list[int] = field(default_factory=lambda: [0])
    scores: list[float] | None = None
    probabilities: list[list[float]] | None = None


def log_table(requests: list[Request]) -> pa.Table:
    """The rows the prediction log writes for ``requests``: BASE_SCHEMA, then inputs and
    outputs; a failed request is one row with null inputs and outputs."""
    base: dict[str, list[Any]] = {f.name: [] for f in BASE_SCHEMA}
    x: list[float | None] = []
    label: list[int | None] = []
    score: list[float | None] = []
    proba: list[list[float] | None] = []
    for i, r in enumerate(requests):
        rows = 1 if r.status != 200 else len(r.labels)
        for j in range(rows):
            base["request_id"].append(r.id)
            base["at"].append(T0 + timedelta(milliseconds=i))
            base["endpoint"].append("fraud")
            base["model"].append("fraud")
            base["version"].append(r.version)
            base["latency_ms"].append(r.latency_ms)
            base["shadow"].append(r.shadow)
            base["status"].append(r.status)
            answered = r.status == 200
            x.append(float(j) if answered else None)
            label.append(r.labels[j] if answered else None)
            scores = r.scores or [0.5] * len(r.labels)
            score.append(scores[j] if answered else None)
            probs = r.probabilities or [[1 - s, s] for s in scores]
            proba.append(probs[j] if answered else None)
    columns = [pa.array(base[f.name], f.type) for f in BASE_SCHEMA]
    return pa.Table.from_arrays(
        [
            *columns,
            pa.array(x, pa.float64()),
            pa.array(label, pa.int64()),
            pa.array(score, pa.float64()),
            pa.array(proba, pa.list_(pa.float64(), 2)),
        ],
        names=[*BASE_SCHEMA.names, "in__x", "out__label", "out__score", "out__proba"],
    )


# -- simulated sides -------------------------------------------------------------------------


def simulate(
    rng: np.random.Generator,
    version: int,
    requests: int,
    *,
    error_rate: float = 0.01,
    latency_ms: float = 8.0,
    positive: float = 0.5,
    score_shift: float = 0.0,
) -> Side:
    """A side as :func:`side` reads it: gamma latencies, a 0/1 label and a score."""
    errors = int(rng.binomial(requests, error_rate))
    answered = requests - errors
    scores = np.clip(rng.beta(2, 5, answered) + score_shift, 0, 1)
    return Side(
        version=version,
        requests=requests,
        errors=errors,
        latency_ms=rng.gamma(4.0, latency_ms / 4.0, answered),
        outputs={
            "label": (rng.random(answered) < positive).astype(np.int64),
            "score": scores,
        },
    )


def split(rng: np.random.Generator, total: int = 2_000, share: float = 0.05) -> tuple[int, int]:
    canary = int(rng.binomial(total, share))
    return total - canary, canary


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def assert_json(checks: list[Check]) -> None:
    for check in checks:
        json.dumps(check.model_dump(), allow_nan=False)


# -- side ------------------------------------------------------------------------------------


def test_side_counts_distinct_requests_and_leaves_out_4xx_and_lists() -> None:
    table = log_table(
        [
            Request("a", 1, 5.0, labels=[0, 1, 1], scores=[0.1, 0.8, 0.9]),  # 3 rows, 1 request
            Request("b", 1, 7.0, labels=[1]),
            Request("c", 1, 9.0, status=500),
            Request("d", 1, 2.0, status=503),
            Request("e", 1, 1.0, status=404),  # the caller's fault
            Request("f", 1, 1.0, status=429),  # refused: not the version's fault
            Request("g", 2, 50.0, labels=[1]),  # another version
            Request("h", 1, 30.0, shadow=True, labels=[1]),  # a mirrored copy
        ]
    )
    s = side(table, 1)
    assert (s.version, s.requests, s.errors) == (1, 4, 2)
    assert sorted(s.latency_ms.tolist()) == [5.0, 7.0]  # one per answered request
    assert s.latency_ms.dtype == np.float64
    assert set(s.outputs) == {"label", "score"}  # probabilities (lists) left out
    assert s.outputs["label"].tolist() == [0, 1]  # one per answered request: its first row
    assert s.outputs["score"].dtype == np.float64

    mirrored = side(table, 1, shadow=True)
    assert (mirrored.requests, mirrored.errors, mirrored.latency_ms.tolist()) == (1, 0, [30.0])
    assert side(table, 2).requests == 1
    assert side(table, 3).requests == 0


def test_side_with_missing_columns() -> None:
    table = log_table([Request("a", 1, 5.0), Request("b", 1, 6.0, status=500)])
    assert side(table.drop_columns(["version"]), 1).requests == 0
    empty = side(pa.table({}), 1)
    assert (empty.requests, empty.errors, len(empty.latency_ms), empty.outputs) == (0, 0, 0, {})
    no_flag = table.drop_columns(["shadow"])
    assert side(no_flag, 1).requests == 2  # every row is a live one
    assert side(no_flag, 1, shadow=True).requests == 0
    no_status = table.drop_columns(["status"])
    assert (side(no_status, 1).requests, side(no_status, 1).errors) == (2, 0)


def test_side_dedupes_a_request_split_across_segments() -> None:
    one = log_table([Request("a", 1, 5.0, labels=[0, 1]), Request("b", 1, 6.0)])
    two = log_table([Request("a", 1, 5.0, labels=[1]), Request("c", 1, 7.0)])
    s = side(pa.concat_tables([one, two]), 1)
    assert s.requests == 3
    assert sorted(s.latency_ms.tolist()) == [5.0, 6.0, 7.0]
    assert len(s.outputs["label"]) == 3  # one per request


# -- compare: good canaries ------------------------------------------------------------------


def test_a_good_canary_rarely_fails() -> None:
    """200 analyses of identical versions (0.5 % errors each), at 5 % and 25 % shares: at most
    1 % fail. (Over 3,000 runs a side, 0.7 % and 0.03 % failed: each check's false failures are
    bounded by alpha, and the margins cut them further once the canary has many requests.)"""
    rng = np.random.default_rng(1)
    failed: list[str] = []
    passed = 0
    for i in range(200):
        total, share = (2_000, 0.05) if i % 2 else (4_000, 0.25)
        n_base, n_canary = split(rng, total, share)
        checks = compare(
            simulate(rng, 1, n_base, error_rate=0.005),
            simulate(rng, 2, n_canary, error_rate=0.005),
            DEFAULT,
            min_requests=50,
        )
        assert_json(checks)
        result = verdict(checks)
        if result == "fail":
            failed += [c.summary for c in checks if c.verdict == "fail"]
        passed += result == "pass"
    print(f"\n{len(failed)} false failures, {passed} passes in 200 analyses: {failed}")
    assert len(failed) <= 2, failed
    # The rest wait: 2 errors in ~100 canary requests (2 % vs 0.5 %) is over the margin.
    assert passed >= 170


def test_a_significant_but_negligible_difference_passes() -> None:
    rng = np.random.default_rng(2)
    baseline = simulate(rng, 1, 200_000, error_rate=0.010)
    canary = simulate(
        rng, 2, 200_000, error_rate=0.014, latency_ms=8.5, positive=0.52, score_shift=0.01
    )
    checks = by_name(compare(baseline, canary, DEFAULT, min_requests=50))
    for name in ("errors", "latency"):
        assert checks[name].figures["p_value"] < DEFAULT.alpha, checks[name].summary
        assert checks[name].verdict == "pass", checks[name].summary
    columns = checks["outputs"].figures["columns"]
    assert columns["label"]["p_value"] < DEFAULT.alpha
    assert columns["score"]["p_value"] < DEFAULT.alpha
    assert checks["outputs"].verdict == "pass", checks["outputs"].summary


def test_a_better_canary_passes() -> None:
    rng = np.random.default_rng(3)
    baseline = simulate(rng, 1, 20_000, error_rate=0.05, latency_ms=40.0)
    canary = simulate(rng, 2, 5_000, error_rate=0.0, latency_ms=10.0)
    checks = compare(baseline, canary, DEFAULT, min_requests=50)
    assert verdict(checks) == "pass", [c.summary for c in checks]


# -- compare: bad canaries -------------------------------------------------------------------


def test_errors_at_5_percent_share_fail() -> None:
    rng = np.random.default_rng(4)
    baseline = simulate(rng, 1, 1_900, error_rate=0.0)
    canary = simulate(rng, 2, 100, error_rate=0.2)
    checks = by_name(compare(baseline, canary, DEFAULT, min_requests=50))
    errors = checks["errors"]
    assert errors.verdict == "fail"
    assert errors.summary.startswith(
        f"errors: canary {canary.errors / 100:.1%} ({canary.errors}/100)"
    )
    assert "vs baseline 0.0% (0/1,900)" in errors.summary
    assert errors.summary.endswith(": fail")
    assert errors.figures["p_value"] < 1e-6
    assert errors.figures["canary_errors"] == canary.errors
    assert verdict(list(checks.values())) == "fail"


def test_errors_within_the_margin_pass_and_an_error_prone_baseline_is_the_reference() -> None:
    # 1.5 % vs 1.0 %: under the 1-point margin even if it were significant.
    within = Side(2, requests=1_000, errors=15)
    assert (
        by_name(compare(Side(1, 19_000, 190), within, DEFAULT, min_requests=50))["errors"].verdict
        == "pass"
    )
    # Both versions fail 20 %: a downstream outage, not the canary's fault.
    same = compare(Side(1, 1_900, 380), Side(2, 100, 20), DEFAULT, min_requests=50)
    assert by_name(same)["errors"].verdict == "pass"


def test_30_ms_slower_fails_latency() -> None:
    rng = np.random.default_rng(5)
    baseline = simulate(rng, 1, 1_900, latency_ms=5.0)
    canary = simulate(rng, 2, 100, latency_ms=35.0)
    latency = by_name(compare(baseline, canary, DEFAULT, min_requests=50))["latency"]
    assert latency.verdict == "fail", latency.summary
    assert latency.figures["canary"] - latency.figures["baseline"] > 25
    assert latency.summary.startswith("latency: canary p50 ")


def test_latency_under_the_margins_passes_and_the_p99_ceiling_fails() -> None:
    rng = np.random.default_rng(6)
    baseline = simulate(rng, 1, 5_000, latency_ms=50.0)
    canary = simulate(rng, 2, 2_000, latency_ms=54.0)  # +8 %: significant, under +20 %
    check = by_name(compare(baseline, canary, DEFAULT, min_requests=50))["latency"]
    assert check.figures["p_value"] < DEFAULT.alpha
    assert check.verdict == "pass", check.summary
    ceiling = Thresholds(max_p99_ms=60.0)
    check = by_name(compare(baseline, canary, ceiling, min_requests=50))["latency"]
    assert check.verdict == "fail"
    assert "ceiling" in check.summary


def test_a_shifted_class_distribution_fails_outputs() -> None:
    rng = np.random.default_rng(7)
    baseline = simulate(rng, 1, 1_900, positive=0.5)
    canary = simulate(rng, 2, 100, positive=0.8)
    outputs = by_name(compare(baseline, canary, DEFAULT, min_requests=50))["outputs"]
    assert outputs.verdict == "fail", outputs.summary
    assert outputs.figures["column"] == "label"
    assert outputs.figures["columns"]["label"]["kind"] == "categorical"
    assert outputs.figures["columns"]["score"]["verdict"] == "pass"
    assert outputs.figures["psi"] > DEFAULT.output_psi
    assert "'label' PSI" in outputs.summary
    assert "1 of 2 columns shifted" in outputs.summary


def test_a_shifted_score_fails_outputs() -> None:
    rng = np.random.default_rng(8)
    baseline = simulate(rng, 1, 1_900)
    canary = simulate(rng, 2, 100, score_shift=0.25)
    outputs = by_name(compare(baseline, canary, DEFAULT, min_requests=50))["outputs"]
    assert outputs.verdict == "fail", outputs.summary
    assert outputs.figures["column"] == "score"
    assert outputs.figures["columns"]["score"]["test"] == "KS"


def test_string_outputs_and_a_new_category() -> None:
    base = Side(1, 1_000, 0, np.full(1_000, 5.0), {"y": np.array(["a", "b"] * 500, object)})
    new = Side(2, 200, 0, np.full(200, 5.0), {"y": np.array(["a", "c"] * 100, object)})
    outputs = by_name(compare(base, new, DEFAULT, min_requests=50))["outputs"]
    assert outputs.verdict == "fail"
    assert outputs.figures["columns"]["y"]["canary_shares"]["c"] == pytest.approx(0.5)


def test_too_little_data_is_inconclusive() -> None:
    rng = np.random.default_rng(9)
    baseline = simulate(rng, 1, 1_900)
    canary = simulate(rng, 2, 30, error_rate=0.5, latency_ms=80.0, positive=1.0)
    checks = compare(baseline, canary, DEFAULT, min_requests=50)
    assert [c.verdict for c in checks] == ["inconclusive"] * 3, [c.summary for c in checks]
    assert verdict(checks) == "inconclusive"
    assert "need 50 requests a side" in checks[0].summary
    # A baseline with too little data cannot judge either.
    few = compare(simulate(rng, 1, 20), simulate(rng, 2, 500), DEFAULT, min_requests=50)
    assert {c.verdict for c in few} == {"inconclusive"}
    assert_json(checks + few)


def test_no_scalar_output_in_common_passes_outputs() -> None:
    base = Side(1, 100, 0, np.full(100, 5.0), {"y": np.zeros(100)})
    new = Side(2, 100, 0, np.full(100, 5.0), {"z": np.zeros(100)})
    outputs = by_name(compare(base, new, DEFAULT, min_requests=50))["outputs"]
    assert outputs.verdict == "pass"
    assert "nothing to compare" in outputs.summary


# -- early errors ----------------------------------------------------------------------------


def test_early_errors_fire_only_on_overwhelming_evidence() -> None:
    # 6 of 30 canary requests failed, none of 570 at the baseline: p ~ 1e-8.
    check = early_errors(Side(1, 570, 0), Side(2, 30, 6), DEFAULT, min_requests=50)
    assert check.verdict == "fail", check.summary
    assert check.figures["alpha"] == pytest.approx(DEFAULT.alpha / 100)
    assert check.summary.startswith("errors (early look): canary 20.0% (6/30)")
    # 2 of 10: p ~ 0.002, enough for nothing at 1e-5 (and the service acts only on a fail).
    assert early_errors(Side(1, 190, 0), Side(2, 10, 2), DEFAULT, min_requests=50).verdict == (
        "inconclusive"
    )
    # Under max(10, min_requests // 5) requests.
    assert early_errors(Side(1, 190, 0), Side(2, 9, 9), DEFAULT, min_requests=50).verdict == (
        "inconclusive"
    )
    assert early_errors(Side(1, 900, 0), Side(2, 19, 19), DEFAULT, min_requests=100).verdict == (
        "inconclusive"
    )


def test_early_errors_leave_moderate_evidence_to_the_analysis() -> None:
    # 5 of 100 vs 10 of 1,900: p ~ 6e-4, significant at 0.01 and over the margin, not at 1e-4.
    baseline, canary = Side(1, 1_900, 10), Side(2, 100, 5)
    assert by_name(compare(baseline, canary, DEFAULT, min_requests=50))["errors"].verdict == (
        "fail"
    )
    assert early_errors(baseline, canary, DEFAULT, min_requests=50).verdict == "inconclusive"


def test_worse_beyond_the_margin_but_not_yet_significant_waits() -> None:
    # 4 of 35 canary requests failed, none of 100 at the baseline: p ~ 0.004 > alpha 0.001,
    # but 11 points worse is no pass: the step waits for more requests.
    errors = by_name(compare(Side(1, 100, 0), Side(2, 35, 4), DEFAULT, min_requests=30))["errors"]
    assert errors.verdict == "inconclusive", errors.summary
    assert errors.figures["p_value"] > DEFAULT.alpha
    assert "not yet significant" in errors.summary
    # The same rate over more requests is significant: a fail.
    errors = by_name(compare(Side(1, 600, 0), Side(2, 100, 11), DEFAULT, min_requests=30))["errors"]
    assert errors.verdict == "fail", errors.summary
    # Latency: 30 % and 6 ms slower at the median on 12 requests a side is not significant.
    rng = np.random.default_rng(9)
    base = Side(1, 12, 0, latency_ms=rng.normal(20.0, 6.0, 12))
    slower = Side(2, 12, 0, latency_ms=base.latency_ms + 6.5)
    latency = by_name(compare(base, slower, DEFAULT, min_requests=10))["latency"]
    assert latency.figures["p_value"] > DEFAULT.alpha
    assert latency.verdict == "inconclusive", latency.summary
    # Accuracy 10 points worse on 120 labels a side: not significant at 0.001, not a pass.
    accuracy = compare_metrics(
        MetricSide(1, 120, {"accuracy": 0.90}),
        MetricSide(2, 120, {"accuracy": 0.80}),
        {"accuracy": "maximize"},
        DEFAULT,
        min_samples=100,
    )[0]
    assert accuracy.figures["p_value"] > DEFAULT.alpha
    assert accuracy.verdict == "inconclusive", accuracy.summary


# -- shadow ----------------------------------------------------------------------------------


def shadow_log(
    requests: int, *, flip: float = 0.0, jitter: float = 1e-5, failed: int = 0, seed: int = 0
) -> pa.Table:
    """Baseline v1 answers every request (two rows each); shadow v2 gets a copy of each, with
    a share ``flip`` of its first row's label flipped and scores and probabilities off by
    ``jitter`` (relative); ``failed`` of the copies fail with 500 (logged as a live row of
    v2)."""
    rng = np.random.default_rng(seed)
    logged: list[Request] = []
    for i in range(requests):
        labels = rng.integers(0, 2, 2).tolist()
        scores = rng.random(2).tolist()
        logged.append(Request(f"r{i}", 1, 8.0, labels=labels, scores=scores))
        if i < failed:
            logged.append(Request(f"r{i}", 2, 9.0, status=500))
            continue
        copy = list(labels)
        if rng.random() < flip:
            copy[0] = 1 - copy[0]
        near = [s * (1 + jitter) for s in scores]
        probabilities = [[(1 - s) * (1 + jitter), s * (1 + jitter)] for s in scores]
        logged.append(
            Request(
                f"r{i}",
                2,
                9.0,
                shadow=True,
                labels=copy,
                scores=near,
                probabilities=probabilities,
            )
        )
    # The mirrored copies are logged later, in their own segment.
    return pa.concat_tables(
        [
            log_table([r for r in logged if r.version == 1]),
            log_table([r for r in logged if r.version == 2]),
        ]
    )


def test_a_shadow_that_agrees_passes() -> None:
    # Floats 1e-4 apart (relative) are the same answer: rtol is 1e-3.
    checks = by_name(compare_shadow(shadow_log(300, jitter=1e-4), 1, 2, DEFAULT, min_requests=50))
    assert list(checks) == ["disagreement", "latency", "errors"]
    pairs = checks["disagreement"]
    assert pairs.verdict == "pass", pairs.summary
    assert pairs.figures["pairs"] == 600
    assert pairs.figures["paired_requests"] == 300
    assert pairs.figures["share"] == 0.0
    assert set(pairs.figures["columns"]) == {"label", "score"}  # not the probabilities
    assert checks["latency"].verdict == "pass"  # +1 ms: under the 5 ms margin
    assert checks["errors"].verdict == "pass"
    assert_json(list(checks.values()))


def test_a_shadow_that_disagrees_fails() -> None:
    checks = by_name(compare_shadow(shadow_log(400, flip=0.3), 1, 2, DEFAULT, min_requests=50))
    pairs = checks["disagreement"]
    assert pairs.verdict == "fail", pairs.summary
    assert 0.1 < pairs.figures["share"] < 0.2  # a third of the requests, one row of two
    assert pairs.figures["columns"]["score"] == 0.0
    assert pairs.summary.startswith("disagreement: 1")


def test_shadow_floats_beyond_tolerance_disagree() -> None:
    table = shadow_log(100, jitter=0.01)
    pairs = compare_shadow(table, 1, 2, DEFAULT, min_requests=50)[0]
    assert pairs.verdict == "fail"
    assert pairs.figures["columns"]["label"] == 0.0
    assert pairs.figures["columns"]["score"] > 0.9
    assert "proba" not in pairs.figures["columns"]


def test_a_retrained_classifier_is_judged_by_its_answers_not_its_probabilities() -> None:
    # Every probability moves by 1 % (a retrained model), no answer changes: it agrees.
    table = shadow_log(200, jitter=0.01)
    table = table.drop_columns(["out__label", "out__score"])
    pairs = compare_shadow(table, 1, 2, DEFAULT, min_requests=50)[0]
    assert pairs.verdict == "pass", pairs.summary
    assert pairs.figures["columns"] == {"proba": 0.0}  # the argmax: the class


def test_shadow_failures_and_too_few_pairs() -> None:
    checks = by_name(compare_shadow(shadow_log(300, failed=60), 1, 2, DEFAULT, min_requests=50))
    assert checks["errors"].verdict == "fail", checks["errors"].summary
    assert checks["errors"].figures["canary_errors"] == 60
    assert checks["errors"].summary.startswith("errors: shadow 20.0% (60/300)")
    few = by_name(compare_shadow(shadow_log(30), 1, 2, DEFAULT, min_requests=50))
    assert few["disagreement"].verdict == "inconclusive"
    assert few["latency"].verdict == "inconclusive"
    nothing = compare_shadow(pa.table({}), 1, 2, DEFAULT, min_requests=50)
    assert [c.verdict for c in nothing] == ["inconclusive"] * 3


# -- feedback metrics ------------------------------------------------------------------------


def test_accuracy_worse_by_more_than_the_margin_fails() -> None:
    base = MetricSide(1, 2_000, {"accuracy": 0.90, "f1": 0.80})
    worse = MetricSide(2, 500, {"accuracy": 0.80, "f1": 0.80})
    checks = by_name(
        compare_metrics(
            base, worse, {"accuracy": "maximize", "f1": "maximize"}, DEFAULT, min_samples=100
        )
    )
    assert checks["metric:accuracy"].verdict == "fail", checks["metric:accuracy"].summary
    assert checks["metric:accuracy"].figures["p_value"] < 1e-6
    assert checks["metric:f1"].verdict == "pass"
    assert "no significance test for f1" in checks["metric:f1"].summary


def test_accuracy_significant_but_small_passes_and_few_samples_are_inconclusive() -> None:
    base = MetricSide(1, 500_000, {"accuracy": 0.900})
    slightly = MetricSide(2, 500_000, {"accuracy": 0.895})
    check = compare_metrics(base, slightly, {"accuracy": "maximize"}, DEFAULT, min_samples=100)[0]
    assert check.figures["p_value"] < DEFAULT.alpha
    assert check.verdict == "pass"
    few = MetricSide(2, 40, {"accuracy": 0.5})
    check = compare_metrics(base, few, {"accuracy": "maximize"}, DEFAULT, min_samples=100)[0]
    assert check.verdict == "inconclusive"
    assert "need 100 a side" in check.summary


def test_other_metrics_by_relative_margin_direction_and_target() -> None:
    base = MetricSide(1, 1_000, {"rmse": 10.0, "mae": 5.0, "recall": 0.70, "r2": None})
    new = MetricSide(2, 1_000, {"rmse": 10.1, "mae": 5.5, "recall": 0.69, "r2": 0.5})
    directions: dict[str, Literal["maximize", "minimize"]] = {
        "rmse": "minimize",
        "mae": "minimize",
        "recall": "maximize",
        "r2": "maximize",
    }
    checks = by_name(
        compare_metrics(base, new, directions, DEFAULT, min_samples=100, targets={"recall": 0.695})
    )
    assert set(checks) == {"metric:rmse", "metric:mae", "metric:recall"}  # r2: one side only
    assert checks["metric:rmse"].verdict == "pass"  # +1 %: under 2 %
    assert checks["metric:mae"].verdict == "fail"  # +10 %
    assert checks["metric:mae"].figures["relative"] == pytest.approx(0.1)
    recall = checks["metric:recall"]  # -1.4 %: under the margin, but it misses the target
    assert recall.verdict == "fail"
    assert "misses the target 0.695" in recall.summary
    # Both missing the target is not the canary's fault.
    check = compare_metrics(
        MetricSide(1, 1_000, {"recall": 0.69}),
        MetricSide(2, 1_000, {"recall": 0.69}),
        {"recall": "maximize"},
        DEFAULT,
        min_samples=100,
        targets={"recall": 0.7},
    )[0]
    assert check.verdict == "pass"
    assert_json([*checks.values(), check])


# -- verdict ---------------------------------------------------------------------------------


def test_verdict() -> None:
    def c(v: Any) -> Check:
        return Check(name="x", verdict=v, summary="")

    assert verdict([]) == "inconclusive"
    assert verdict([c("pass"), c("pass")]) == "pass"
    assert verdict([c("pass"), c("inconclusive")]) == "inconclusive"
    assert verdict([c("inconclusive"), c("fail"), c("pass")]) == "fail"


# -- cost ------------------------------------------------------------------------------------


def test_cost_of_side_and_compare_on_100k_rows() -> None:
    rng = np.random.default_rng(10)
    n = 100_000
    canary = rng.random(n) < 0.05
    status = np.where(rng.random(n) < 0.01, 500, 200).astype(np.int16)
    answered = status == 200
    table = pa.Table.from_arrays(
        [
            pa.array([f"r{i}" for i in range(n)], pa.string()),
            pa.array(np.full(n, int(T0.timestamp() * 1e6)), pa.int64()).cast(
                BASE_SCHEMA.field("at").type
            ),
            pa.array(["fraud"] * n, pa.string()),
            pa.array(["fraud"] * n, pa.string()),
            pa.array(np.where(canary, 2, 1).astype(np.int32)),
            pa.array(rng.gamma(4.0, 2.0, n).astype(np.float32)),
            pa.array(np.zeros(n, np.bool_)),
            pa.array(status),
            pa.array(rng.normal(size=n), mask=~answered),
            pa.array(rng.integers(0, 2, n), mask=~answered),
            pa.array(rng.random(n), mask=~answered),
        ],
        names=[*BASE_SCHEMA.names, "in__x", "out__label", "out__score"],
    )
    compare(side(table, 1), side(table, 2), DEFAULT, min_requests=50)  # imports scipy
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        checks = compare(side(table, 1), side(table, 2), DEFAULT, min_requests=50)
        timings.append(time.perf_counter() - started)
    print(f"\nside x2 + compare on {n:,} rows: {min(timings) * 1e3:.1f} ms (best of 5)")
    assert verdict(checks) == "pass", [c.summary for c in checks]
    assert by_name(checks)["errors"].figures["canary_requests"] == int(canary.sum())


def test_batch_requests_do_not_fail_a_good_canary() -> None:
    # The same model on both sides; 2 % of requests are 200-row batches of one kind of
    # customer. Counted by rows, a few batches would decide the outputs check alone.
    rng = np.random.default_rng(4)
    failed = 0
    for _ in range(50):
        requests = []
        for i in range(2000):
            version = 2 if rng.random() < 0.05 else 1
            if rng.random() < 0.02:
                lean = rng.random()
                labels = (rng.random(200) < lean).astype(int).tolist()
            else:
                labels = [int(rng.random() < 0.5)]
            requests.append(Request(f"r{i}", version, 4.0, labels=labels))
        table = log_table(requests)
        checks = compare(side(table, 1), side(table, 2), Thresholds(), min_requests=50)
        failed += verdict(checks) == "fail"
    assert failed == 0


def test_sides_of_two_models_with_the_same_version_number_stay_apart() -> None:
    table = log_table([Request("a", 1, 5.0, labels=[0]), Request("b", 1, 6.0, status=500)])
    models = pa.array(["fraud", "fraud-xgb"])
    table = table.set_column(table.schema.get_field_index("model"), "model", models)
    assert side(table, 1, model="fraud").requests == 1
    assert side(table, 1, model="fraud-xgb").errors == 1
    assert side(table, 1).requests == 2


def test_a_significant_shift_near_the_limit_waits_for_more_requests() -> None:
    # 76 % vs 53 % class 1 on ~100 canary requests: clearly shifted, but the sample's PSI
    # (under 0.2) could as well be 0.3; with more requests it is decided.
    def table(canary: int, positive: float) -> pa.Table:
        rng = np.random.default_rng(9)
        requests = [
            Request(f"b{i}", 1, 4.0, labels=[int(rng.random() < 0.53)]) for i in range(2000)
        ]
        requests += [
            Request(f"c{i}", 2, 4.0, labels=[int(rng.random() < positive)]) for i in range(canary)
        ]
        return log_table(requests)

    few = table(94, 0.76)
    check = compare(side(few, 1), side(few, 2), Thresholds(), min_requests=50)[2]
    assert check.verdict == "inconclusive" and "more requests needed" in check.summary
    many = table(1500, 0.76)
    check = compare(side(many, 1), side(many, 2), Thresholds(), min_requests=50)[2]
    assert check.verdict == "fail", check.summary
