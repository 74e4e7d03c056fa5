"""Drift from profiles, checked against scipy on the raw data.

Tolerances (the module documentation of modelyard.monitoring.drift states the same):

- categorical Jensen-Shannon, PSI and chi-square (statistic and p-value): exact, 1e-9
  relative, since category counts are exact;
- numbers, while both digests are exact (at most ~200 distinct values, or any data of at most
  200 rows) and <= 10,000 rows: KS statistic and p-value equal ``scipy.stats.ks_2samp``'s, and
  the normed Wasserstein distance ``scipy.stats.wasserstein_distance``'s, to 1e-9;
- numbers beyond: KS statistic within 0.01 of ``ks_2samp`` (the digest's smooth CDF misses
  some of the raw ECDF's jitter: it tends to be lower, by 0.002 on average); normed
  Wasserstein within 2 % relative + 0.002 absolute; with 1,000+ values a side, numeric PSI
  and Jensen-Shannon within 0.01 absolute + 5 % relative of the same formula on the raw
  values binned at the raw reference's quantiles;
- verdicts agree unless the raw statistic is within that tolerance of the threshold, or for
  p-value methods scipy's p-value is within a factor 3 of it.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial import distance

from modelyard.monitoring.config import DriftConfig, FeatureDriftConfig
from modelyard.monitoring.drift import (
    NUMERIC_BINS,
    PSI_EMPTY_SHARE,
    DriftReport,
    FeatureDrift,
    compare,
)
from modelyard.monitoring.profiles import Profile

# --- scipy on the raw values --------------------------------------------------------------


def raw_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares below edges[0], equal to it, in each (edges[i-1], edges[i]], above edges[-1]."""
    v = np.sort(values)
    le = np.searchsorted(v, edges, side="right") / v.size
    below = np.searchsorted(v, edges[:1], side="left") / v.size
    return np.diff(np.concatenate([[0.0], below, le, [1.0]]))


def raw_edges(reference: np.ndarray) -> np.ndarray:
    qs = np.arange(1, NUMERIC_BINS) / NUMERIC_BINS
    inner = np.quantile(reference, qs, method="inverted_cdf")
    return np.unique(np.concatenate([[reference.min()], inner, [reference.max()]]))


def psi(r: np.ndarray, c: np.ndarray) -> float:
    r, c = r / r.sum(), c / c.sum()
    r, c = np.where(r > 0, r, PSI_EMPTY_SHARE), np.where(c > 0, c, PSI_EMPTY_SHARE)
    return float(np.sum((r - c) * np.log(r / c)))


def raw_statistic(method: str, r: np.ndarray, c: np.ndarray) -> tuple[float, float | None]:
    if method == "wasserstein":
        return stats.wasserstein_distance(r, c) / max(float(np.std(r)), 0.001), None
    if method == "ks":
        res = stats.ks_2samp(r, c)
        return float(res.statistic), float(res.pvalue)
    edges = raw_edges(r)
    rs, cs = raw_shares(r, edges), raw_shares(c, edges)
    if method == "psi":
        return psi(rs, cs), None
    return float(distance.jensenshannon(rs, cs)), None


def verdict(method: str, statistic: float, p_value: float | None, threshold: float) -> bool:
    return bool(p_value < threshold if p_value is not None else statistic >= threshold)


THRESHOLDS = {"wasserstein": 0.1, "ks": 0.05, "psi": 0.2, "jensenshannon": 0.1}
TOLERANCE = {
    "wasserstein": lambda ref: 0.02 * ref + 0.002,
    "ks": lambda ref: 0.01,
    "psi": lambda ref: 0.01 + 0.05 * ref,
    "jensenshannon": lambda ref: 0.01 + 0.05 * ref,
}

N_REF, N_CUR = 100_000, 50_000


def _pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(20)

    def poisson(lam: float, n: int) -> np.ndarray:
        return rng.poisson(lam, n).astype(float)

    def bimodal(a: float, n: int) -> np.ndarray:
        return np.where(rng.random(n) < a, rng.normal(-2, 0.5, n), rng.normal(2, 1, n))

    return {
        "normal-none": (rng.normal(0, 1, N_REF), rng.normal(0, 1, N_CUR)),
        "normal-shift": (rng.normal(0, 1, N_REF), rng.normal(0.25, 1, N_CUR)),
        "normal-small-shift": (rng.normal(0, 1, N_REF), rng.normal(0.05, 1, N_CUR)),
        "normal-scale": (rng.normal(0, 1, N_REF), rng.normal(0, 1.4, N_CUR)),
        "lognormal-none": (rng.lognormal(0, 1, N_REF), rng.lognormal(0, 1, N_CUR)),
        "lognormal-shift": (rng.lognormal(0, 1, N_REF), rng.lognormal(0.3, 1, N_CUR)),
        "lognormal-heavy": (rng.lognormal(0, 2, N_REF), rng.lognormal(0, 2, N_CUR)),
        "ints-none": (poisson(4, N_REF), poisson(4, N_CUR)),
        "ints-shift": (poisson(4, N_REF), poisson(5, N_CUR)),
        "bimodal-reweighted": (bimodal(0.5, N_REF), bimodal(0.35, N_CUR)),
        "offset-small-spread": (1e6 + rng.normal(0, 0.01, N_REF), 1e6 + rng.normal(0, 0.01, N_CUR)),
    }


PAIRS = _pairs()
REFERENCE = Profile.build({name: r for name, (r, _) in PAIRS.items()})
CURRENT = Profile.build({name: c for name, (_, c) in PAIRS.items()})


@pytest.mark.parametrize("method", ["wasserstein", "ks", "psi", "jensenshannon"])
def test_numeric_statistics_agree_with_scipy_on_raw_data(method: str) -> None:
    report = compare(REFERENCE, CURRENT, DriftConfig(numeric_method=method))
    assert {f.feature for f in report.features} == set(PAIRS)
    for f in report.features:
        r, c = PAIRS[f.feature]
        expected, expected_p = raw_statistic(method, r, c)
        assert f.method == method and f.statistic is not None, f
        assert abs(f.statistic - expected) <= TOLERANCE[method](expected), (
            f.feature, f.statistic, expected,
        )  # fmt: skip
        raw_verdict = verdict(method, expected, expected_p, THRESHOLDS[method])
        if expected_p is None or not THRESHOLDS[method] / 3 <= expected_p <= 3 * THRESHOLDS[method]:
            assert f.drifted is raw_verdict, (f.feature, f.statistic, expected, f.p_value)


def test_default_verdicts_agree_with_scipy() -> None:
    """Above large_sample rows numbers use the normed Wasserstein distance (as Evidently)."""
    report = compare(REFERENCE, CURRENT)
    verdicts = {f.feature: f.drifted for f in report.features}
    expected = {}
    for name, (r, c) in PAIRS.items():
        w, _ = raw_statistic("wasserstein", r, c)
        expected[name] = w >= 0.1
    assert verdicts == expected
    assert verdicts["normal-shift"] and verdicts["normal-scale"] and verdicts["ints-shift"]
    assert not verdicts["normal-none"] and not verdicts["lognormal-heavy"]
    assert report.checked_features == len(PAIRS)
    assert report.drifted_features == sum(expected.values())
    assert report.drift_share == pytest.approx(sum(expected.values()) / len(PAIRS))


@pytest.mark.parametrize("n", [25, 150, 2000])
def test_small_exact_samples_match_scipy_exactly(n: int) -> None:
    rng = np.random.default_rng(n)
    r = rng.normal(size=n) if n <= 150 else rng.integers(0, 60, n).astype(float)
    c = rng.normal(0.3, 1.2, n) if n <= 150 else rng.integers(5, 70, n).astype(float)
    ref, cur = Profile.build({"x": r}), Profile.build({"x": c})
    for method in ("ks", "wasserstein"):
        f = compare(ref, cur, DriftConfig(numeric_method=method, min_samples=10)).features[0]
        expected, expected_p = raw_statistic(method, r, c)
        assert f.statistic == pytest.approx(expected, rel=1e-9, abs=1e-12)
        if expected_p is not None:
            assert f.p_value == pytest.approx(expected_p, rel=1e-9, abs=1e-300)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_ref=st.integers(50, 8000),
    n_cur=st.integers(50, 8000),
    shift=st.floats(-1, 1),
    scale=st.floats(0.5, 2),
    seed=st.integers(0, 2**32 - 1),
)
def test_ks_and_wasserstein_agree_on_random_normals(
    n_ref: int, n_cur: int, shift: float, scale: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    r, c = rng.normal(0, 1, n_ref), rng.normal(shift, scale, n_cur)
    ref, cur = Profile.build({"x": r}), Profile.build({"x": c})
    for method in ("ks", "wasserstein"):
        f = compare(ref, cur, DriftConfig(numeric_method=method)).features[0]
        expected, expected_p = raw_statistic(method, r, c)
        assert f.statistic is not None
        assert abs(f.statistic - expected) <= TOLERANCE[method](expected)
        near = expected_p is not None and 0.05 / 3 <= expected_p <= 0.15
        near = near or (expected_p is None and abs(expected - 0.1) <= TOLERANCE[method](0.1))
        if not near:
            assert f.drifted is verdict(method, expected, expected_p, THRESHOLDS[method])


# --- categories: exact ---------------------------------------------------------------------


def _categorical_case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(30)
    r = rng.choice(["a", "b", "c", "d"], 20_000, p=[0.4, 0.3, 0.2, 0.1]).astype(object)
    c = rng.choice(["a", "b", "c", "new1", "new2"], 15_000, p=[0.35, 0.3, 0.25, 0.07, 0.03])
    c = c.astype(object)
    r[:50] = None  # missing values are left out of every statistic
    c[:500] = None
    return r, c


def _raw_counts(r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, c = r[r != None], c[c != None]  # noqa: E711 - elementwise on object arrays
    keys = sorted(set(r) | set(c))
    return (np.array([np.sum(r == k) for k in keys], float),
            np.array([np.sum(c == k) for k in keys], float))  # fmt: skip


def test_categorical_statistics_are_exact() -> None:
    r, c = _categorical_case()
    ref, cur = Profile.build({"c": r}), Profile.build({"c": c})
    rc, cc = _raw_counts(r, c)
    for method in ("jensenshannon", "psi", "chisquare"):
        f = compare(ref, cur, DriftConfig(categorical_method=method)).features[0]
        assert f.new_categories == ["new1", "new2"]  # most frequent first
        assert f.reference_missing_rate == pytest.approx(50 / 20_000)
        assert f.current_missing_rate == pytest.approx(500 / 15_000)
        assert f.drifted is True
        if method == "jensenshannon":
            assert f.statistic == pytest.approx(
                distance.jensenshannon(rc / rc.sum(), cc / cc.sum()), rel=1e-9
            )
        elif method == "psi":
            assert f.statistic == pytest.approx(psi(rc, cc), rel=1e-9)
        else:
            res = stats.chi2_contingency(np.vstack([rc, cc]), correction=False)
            assert f.statistic == pytest.approx(res.statistic, rel=1e-9)
            assert f.p_value == pytest.approx(res.pvalue, rel=1e-9, abs=1e-300)


def test_categorical_defaults_and_small_differences() -> None:
    rng = np.random.default_rng(31)
    r = rng.choice(["x", "y", "z"], 5000, p=[0.5, 0.3, 0.2])
    same = rng.choice(["x", "y", "z"], 5000, p=[0.5, 0.3, 0.2])
    small = rng.choice(["x", "y", "z"], 800, p=[0.5, 0.3, 0.2])
    report = compare(Profile.build({"c": r}), Profile.build({"c": same}))
    assert report.features[0].method == "jensenshannon" and report.features[0].drifted is False
    # a reference of <= large_sample rows: chi-square
    report = compare(Profile.build({"c": small}), Profile.build({"c": same}))
    f = report.features[0]
    assert f.method == "chisquare" and f.p_value is not None and f.drifted is (f.p_value < 0.05)
    rc, cc = _raw_counts(small.astype(object), same.astype(object))
    assert f.p_value == pytest.approx(
        stats.chi2_contingency(np.vstack([rc, cc]), correction=False).pvalue, rel=1e-9
    )


def test_a_new_category_is_drift_evidence() -> None:
    r = np.array(["a", "b"] * 5000)
    c = np.array(["a", "b"] * 4500 + ["never-seen"] * 1000)
    f = compare(Profile.build({"c": r}), Profile.build({"c": c})).features[0]
    assert f.new_categories == ["never-seen"]
    assert f.status == "drift" and f.statistic is not None and f.statistic > 0.1
    assert "never seen" in f.message and "10.0%" in f.message


# --- method choice and configuration --------------------------------------------------------


def test_default_methods_follow_sample_size_and_distinct_values() -> None:
    rng = np.random.default_rng(40)
    big = Profile.build({"x": rng.normal(size=5000), "flag": rng.integers(0, 2, 5000)})
    small = Profile.build({"x": rng.normal(size=800), "flag": rng.integers(0, 2, 800)})
    methods = {f.feature: f.method for f in compare(big, big).features}
    assert methods == {"x": "wasserstein", "flag": "jensenshannon"}
    methods = {f.feature: f.method for f in compare(small, big).features}
    assert methods == {"x": "ks", "flag": "chisquare"}


def test_per_feature_overrides_and_disabled_features() -> None:
    rng = np.random.default_rng(41)
    ref = Profile.build({"a": rng.normal(size=5000), "b": rng.normal(size=5000),
                         "c": rng.normal(size=5000)})  # fmt: skip
    cur = Profile.build({"a": rng.normal(0.05, 1, 5000), "b": rng.normal(size=5000),
                         "c": rng.normal(size=5000)})  # fmt: skip
    cfg = DriftConfig(
        features={
            "a": FeatureDriftConfig(method="wasserstein", threshold=0.01),
            "b": FeatureDriftConfig(method="psi"),
            "c": FeatureDriftConfig(enabled=False),
        }
    )
    report = compare(ref, cur, cfg)
    by = {f.feature: f for f in report.features}
    assert set(by) == {"a", "b"}
    assert by["a"].threshold == 0.01 and by["a"].drifted is True
    assert by["b"].method == "psi" and by["b"].threshold == 0.2


def test_a_numeric_only_method_on_categories_is_an_error_not_a_crash() -> None:
    ref = Profile.build({"c": ["a", "b"] * 100, "x": np.arange(200.0)})
    cfg = DriftConfig(features={"c": FeatureDriftConfig(method="ks")})
    by = {f.feature: f for f in compare(ref, ref, cfg).features}
    assert by["c"].status == "error" and by["c"].drifted is None
    assert "numeric features only" in by["c"].message
    assert by["x"].status == "ok"


def test_kind_mismatch_is_an_error() -> None:
    ref = Profile.build({"x": np.arange(100.0)})
    cur = Profile.build({"x": [str(i) for i in range(100)]})
    f = compare(ref, cur).features[0]
    assert f.status == "error" and "numeric in the reference but categorical" in f.message


# --- edge cases ----------------------------------------------------------------------------


def test_too_few_current_rows_is_insufficient_never_no_drift() -> None:
    rng = np.random.default_rng(50)
    ref = Profile.build({"x": rng.normal(size=5000), "c": rng.choice(["a", "b"], 5000)})
    cur = Profile.build({"x": rng.normal(size=10), "c": rng.choice(["a", "b"], 10)})
    report = compare(ref, cur, DriftConfig(min_samples=30))
    assert report.status == "insufficient" and report.dataset_drift is None
    assert report.checked_features == 0 and report.drift_share == 0.0
    for f in report.features:
        assert f.status == "insufficient" and f.drifted is None
        assert "fewer than min_samples=30" in f.message
    empty = compare(ref, Profile.build({"x": np.array([]), "c": []}))
    assert empty.status == "insufficient"


def test_few_non_missing_values_are_insufficient() -> None:
    rng = np.random.default_rng(51)
    x = rng.normal(size=1000)
    x[5:] = np.nan
    report = compare(Profile.build({"x": rng.normal(size=5000)}), Profile.build({"x": x}))
    f = report.features[0]
    assert f.status == "insufficient" and f.drifted is None and "5 non-missing" in f.message


def test_all_missing_feature_is_reported_missing() -> None:
    rng = np.random.default_rng(52)
    ref = Profile.build({"x": rng.normal(size=5000), "c": rng.choice(["a", "b"], 5000),
                         "y": rng.normal(size=5000)})  # fmt: skip
    cur = Profile.build({"x": np.full(500, np.nan), "c": [None] * 500,
                         "y": rng.normal(size=500)})  # fmt: skip
    report = compare(ref, cur)
    by = {f.feature: f for f in report.features}
    for name in ("x", "c"):
        assert by[name].status == "missing" and by[name].drifted is None
        assert by[name].current_missing_rate == 1.0
        assert "all 500 values are missing" in by[name].message
    assert by["y"].status == "ok"
    assert report.checked_features == 1 and report.status == "ok"


def test_a_feature_absent_from_one_side_is_missing() -> None:
    rng = np.random.default_rng(53)
    ref = Profile.build({"x": rng.normal(size=2000), "gone": rng.normal(size=2000)})
    cur = Profile.build({"x": rng.normal(size=2000), "added": rng.choice(["a"], 2000)})
    by = {f.feature: f for f in compare(ref, cur).features}
    assert by["gone"].status == "missing" and "not in the current profile" in by["gone"].message
    assert by["added"].status == "missing"
    assert "not in the reference profile" in by["added"].message
    assert by["added"].kind == "categorical" and by["x"].status == "ok"


def test_zero_variance_reference_does_not_divide_by_zero() -> None:
    rng = np.random.default_rng(54)
    const = np.full(5000, 3.0)
    ref = Profile.build({"x": const})
    for method in ("wasserstein", "ks", "psi", "jensenshannon", "chisquare"):
        cfg = DriftConfig(numeric_method=method)
        same = compare(ref, Profile.build({"x": np.full(4000, 3.0)}), cfg).features[0]
        assert same.status == "ok", (method, same)
        moved = compare(ref, Profile.build({"x": np.full(4000, 3.5)}), cfg).features[0]
        noisy = compare(ref, Profile.build({"x": rng.normal(3, 1, 4000)}), cfg).features[0]
        for f in (moved, noisy):
            assert f.status == "drift", (method, f)
            assert f.statistic is not None and np.isfinite(f.statistic)
    # normed by max(std, 0.001), as Evidently
    f = compare(ref, Profile.build({"x": np.full(4000, 3.5)}),
                DriftConfig(numeric_method="wasserstein")).features[0]  # fmt: skip
    assert f.statistic == pytest.approx(0.5 / 0.001)


def test_infinite_values_are_counted_and_ignored() -> None:
    rng = np.random.default_rng(55)
    cur = rng.normal(size=5000)
    cur[:100] = np.inf
    cur[100:120] = -np.inf
    f = compare(Profile.build({"x": rng.normal(size=5000)}), Profile.build({"x": cur}))
    feature = f.features[0]
    assert feature.status == "ok" and feature.current_rows == 4880
    assert "infinite values ignored: 0 in the reference, 120 in the current" in feature.message


def test_dataset_drift_uses_the_drift_share() -> None:
    rng = np.random.default_rng(56)
    cols = {f"f{i}": rng.normal(size=3000) for i in range(4)}
    moved = {k: v + (1.0 if k in ("f0", "f1") else 0.0) for k, v in cols.items()}
    ref, cur = Profile.build(cols), Profile.build(moved)
    half = compare(ref, cur)
    assert half.drifted_features == 2 and half.drift_share == 0.5
    assert half.dataset_drift is True and half.status == "drift"  # >= drift_share (0.5)
    strict = compare(ref, cur, DriftConfig(drift_share=0.75))
    assert strict.dataset_drift is False and strict.status == "ok"


def test_reports_serialise_as_json() -> None:
    report = compare(REFERENCE, CURRENT)
    again = DriftReport.model_validate_json(report.model_dump_json())
    assert again == report
    assert isinstance(again.features[0], FeatureDrift)
