"""Profiles: exact counts and moments, accurate quantiles, merging, (de)serialisation."""

from __future__ import annotations

import json
import math

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from modelyard.errors import InvalidInput
from modelyard.monitoring.profiles import (
    MAX_CATEGORIES,
    CategoricalProfile,
    NumericProfile,
    Profile,
)


def numeric(p: Profile, name: str) -> NumericProfile:
    f = p.features[name]
    assert isinstance(f, NumericProfile)
    return f


def categorical(p: Profile, name: str) -> CategoricalProfile:
    f = p.features[name]
    assert isinstance(f, CategoricalProfile)
    return f


def roundtrip(p: Profile) -> Profile:
    return Profile.from_dict(json.loads(json.dumps(p.to_dict(), allow_nan=False)))


# --- building -----------------------------------------------------------------------------


def test_numeric_counts_and_moments_are_exact() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, 50_000)
    x[:100] = np.nan
    x[100:110] = np.inf
    x[110:115] = -np.inf
    f = numeric(Profile.build({"x": x}), "x")
    finite = x[np.isfinite(x)]
    assert (f.count, f.missing, f.infinite, f.rows) == (finite.size, 100, 15, 50_000)
    assert f.min == finite.min() and f.max == finite.max()
    assert f.mean == pytest.approx(finite.mean(), rel=1e-12)
    assert f.std == pytest.approx(finite.std(), rel=1e-12)  # population std (ddof=0)
    assert f.variance == pytest.approx(finite.var(), rel=1e-12)


def test_the_input_array_is_not_modified() -> None:
    x = np.random.default_rng(2).normal(size=1000)
    before = x.copy()
    Profile.build({"x": x})
    np.testing.assert_array_equal(x, before)


def test_kinds_are_inferred_from_dtypes() -> None:
    n = 6
    columns = {
        "f": np.linspace(0, 1, n),
        "i": np.arange(n),
        "u8": np.arange(n, dtype=np.uint8),
        "b": np.array([True, False] * 3),
        "s": np.array(list("abcabc")),
        "o": np.array(["x", None, "y", "x", "z", None], dtype=object),
        "num_list": [1, None, 2.5, 3, float("nan"), 4],
        "cat": pd.Series(list("aabbcc"), dtype="category"),
        "nullable_int": pd.Series([1, None, 3, 4, 5, 6], dtype="Int64"),
        "str_list": ["a", "b", "a", "b", "a", "b"],
        "arrow_f": pa.array([1.0, None, 3.0, 4.0, 5.0, 6.0]),
        "arrow_s": pa.chunked_array([["a", "b", None], ["c", "a", "b"]]),
        "arrow_b": pa.array([True, False, True, None, True, False]),
    }
    p = Profile.build(columns)
    kinds = {name: f.kind for name, f in p.features.items()}
    assert kinds == {
        "f": "numeric", "i": "numeric", "u8": "numeric", "b": "categorical",
        "s": "categorical", "o": "categorical", "num_list": "numeric", "cat": "categorical",
        "nullable_int": "numeric", "str_list": "categorical", "arrow_f": "numeric",
        "arrow_s": "categorical", "arrow_b": "categorical",
    }  # fmt: skip
    assert p.rows == n
    assert numeric(p, "num_list").missing == 2
    assert numeric(p, "nullable_int").missing == 1
    assert numeric(p, "arrow_f").missing == 1
    assert categorical(p, "o").missing == 2
    assert categorical(p, "o").counts == {"x": 2, "y": 1, "z": 1}
    assert categorical(p, "b").counts == {"True": 3, "False": 3}
    assert categorical(p, "arrow_s").counts == {"a": 2, "b": 2, "c": 1}
    assert categorical(p, "arrow_b").missing == 1


def test_dataframes_and_arrow_tables_are_accepted() -> None:
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "c": ["a", "b", "a"]})
    from_df = Profile.build(df).to_dict()
    from_arrow = Profile.build(pa.Table.from_pandas(df, preserve_index=False)).to_dict()
    from_dict = Profile.build({"x": [1.0, 2.0, 3.0], "c": ["a", "b", "a"]}).to_dict()
    assert from_df == from_arrow == from_dict


def test_kinds_can_be_forced() -> None:
    p = Profile.build({"code": [1, 2, 2, 3]}, kinds={"code": "categorical"})
    assert categorical(p, "code").counts == {"1": 1, "2": 2, "3": 1}
    p = Profile.build({"v": ["1.5", "2", None]}, kinds={"v": "numeric"})
    assert numeric(p, "v").count == 2 and numeric(p, "v").missing == 1
    with pytest.raises(InvalidInput, match="non-numbers"):
        Profile.build({"v": ["a", "b"]}, kinds={"v": "numeric"})
    with pytest.raises(InvalidInput, match="numeric' or 'categorical"):
        Profile.build({"v": [1]}, kinds={"v": "text"})


@pytest.mark.parametrize(
    ("columns", "match"),
    [
        ({"a": [1, 2], "b": [1, 2, 3]}, "different lengths"),
        ({"a": np.zeros((2, 2))}, "1-D"),
        ({1: [1, 2]}, "non-empty strings"),
        ({"a": "abc"}, "1-D array"),
        ({"a": 3}, "1-D array"),
        ({"t": np.array(["2024-01-01"], dtype="datetime64[ns]")}, "unsupported dtype"),
        ([1, 2, 3], "mapping of name"),
    ],
)
def test_bad_columns_are_invalid_input(columns: object, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        Profile.build(columns)  # type: ignore[arg-type]


def test_empty_and_all_missing_columns() -> None:
    assert Profile.build({}).rows == 0
    p = Profile.build({"x": np.array([], dtype=float), "c": []})
    assert p.rows == 0 and numeric(p, "x").count == 0
    p = Profile.build({"x": np.full(10, np.nan)})
    f = numeric(p, "x")
    assert (f.count, f.missing, f.min, f.max) == (0, 10, None, None)
    assert np.isnan(f.quantiles([0.5])).all() and np.isnan(f.cdf([0.0])).all()
    assert roundtrip(p).to_dict() == p.to_dict()


def test_extreme_values_stay_json_safe() -> None:
    p = Profile.build({"x": np.array([1e308, -1e308, 1e308, 5.0])})
    f = numeric(p, "x")
    assert f.count == 4 and math.isfinite(f.mean) and math.isfinite(f.m2)
    assert orjson.loads(orjson.dumps(p.to_dict())) == p.to_dict()
    roundtrip(p)


# --- quantiles ----------------------------------------------------------------------------


def test_small_profiles_are_exact() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=150)
    f = numeric(Profile.build({"x": x}), "x")
    assert f.exact
    xs = np.sort(x)
    # Rank k/n is the k-th value (smallest with cdf >= q); between two ranks, the next value.
    k = np.arange(1, x.size + 1)
    np.testing.assert_array_equal(f.quantiles(k / x.size), xs)
    np.testing.assert_array_equal(f.quantiles((k - 0.5) / x.size), xs)
    assert f.quantiles([0.0])[0] == xs[0]
    points = np.concatenate([x, rng.normal(size=50)])
    np.testing.assert_allclose(f.cdf(points), (x[None, :] <= points[:, None]).mean(axis=1))
    np.testing.assert_allclose(
        f.cdf(points, inclusive=False), (x[None, :] < points[:, None]).mean(axis=1)
    )


def test_discrete_values_stay_exact_at_any_size() -> None:
    x = np.random.default_rng(4).poisson(3.0, 200_000).astype(float)
    f = numeric(Profile.build({"x": x}), "x")
    assert f.exact
    values, weights = f.weighted_values()
    uniq, counts = np.unique(x, return_counts=True)
    np.testing.assert_array_equal(values, uniq)
    np.testing.assert_array_equal(weights, counts)
    qs = np.linspace(0.005, 0.995, 100)  # away from ties at the values' exact ranks
    np.testing.assert_array_equal(f.quantiles(qs), np.quantile(x, qs, method="inverted_cdf"))


@pytest.mark.parametrize("dist", ["normal", "lognormal", "uniform", "bimodal"])
def test_large_profile_ranks_are_accurate(dist: str) -> None:
    rng = np.random.default_rng(5)
    n = 200_000
    x = {
        "normal": lambda: rng.normal(size=n),
        "lognormal": lambda: rng.lognormal(0, 1, n),
        "uniform": lambda: rng.uniform(-1, 1, n),
        "bimodal": lambda: np.concatenate([rng.normal(-3, 1, n // 2), rng.normal(3, 0.5, n // 2)]),
    }[dist]()
    f = numeric(Profile.build({"x": x}), "x")
    assert f.weighted_values()[0].size <= 250  # ~compression / 2 centroids
    xs = np.sort(x)
    qs = np.linspace(0.001, 0.999, 199)
    true_rank = np.searchsorted(xs, f.quantiles(qs), side="right") / n
    assert np.max(np.abs(true_rank - qs)) < 0.003
    points = np.quantile(x, qs)
    assert np.max(np.abs(f.cdf(points) - qs)) < 0.003


# --- update and merge ---------------------------------------------------------------------


def test_update_adds_rows_and_tracks_absent_columns() -> None:
    p = Profile.build({"x": [1.0, 2.0], "c": ["a", "b"]})
    p.update({"x": [3.0], "new": ["z"]})
    assert p.rows == 3
    assert numeric(p, "x").count == 3
    assert categorical(p, "c").missing == 1  # absent from the second batch
    assert categorical(p, "new").missing == 2  # absent from the first
    assert all(f.rows == p.rows for f in p.features.values())


def test_a_rejected_batch_changes_nothing() -> None:
    p = Profile.build({"x": [1.0, 2.0], "c": ["a", "b"]})
    before = p.to_dict()
    with pytest.raises(InvalidInput, match="numeric in this profile"):
        p.update({"c": ["a"], "x": ["text"]}, kinds={"x": "categorical"})
    with pytest.raises(InvalidInput, match="non-numbers"):
        p.update({"c": ["a"], "x": ["text"]})
    assert p.to_dict() == before


def test_merge_equals_profile_of_all_rows() -> None:
    rng = np.random.default_rng(6)
    x = rng.gamma(2.0, 3.0, 60_000)
    c = rng.choice(list("abcde"), 60_000)
    a = Profile.build({"x": x[:25_000], "c": c[:25_000]})
    b = Profile.build({"x": x[25_000:], "c": c[25_000:]})
    a_before, b_before = a.to_dict(), b.to_dict()
    merged, whole = a.merge(b), Profile.build({"x": x, "c": c})
    assert a.to_dict() == a_before and b.to_dict() == b_before  # inputs unchanged
    fm, fw = numeric(merged, "x"), numeric(whole, "x")
    assert (fm.count, fm.min, fm.max) == (fw.count, fw.min, fw.max)
    assert fm.mean == pytest.approx(fw.mean, rel=1e-12)
    assert fm.m2 == pytest.approx(fw.m2, rel=1e-9)
    qs = np.linspace(0.01, 0.99, 99)
    true = np.searchsorted(np.sort(x), fm.quantiles(qs), side="right") / x.size
    assert np.max(np.abs(true - qs)) < 0.003
    assert categorical(merged, "c").counts == categorical(whole, "c").counts


def test_merge_counts_one_sided_features_as_missing() -> None:
    a = Profile.build({"x": [1.0, 2.0, 3.0]})
    b = Profile.build({"c": ["u", "v"]})
    m = a.merge(b)
    assert m.rows == 5
    assert numeric(m, "x").missing == 2 and numeric(m, "x").count == 3
    assert categorical(m, "c").missing == 3
    with pytest.raises(InvalidInput, match="cannot be merged"):
        a.merge(Profile.build({"x": ["text"]}))


def test_many_small_batches_stay_accurate() -> None:
    rng = np.random.default_rng(7)
    x = rng.lognormal(0, 1, 100_000)
    p = Profile()
    for part in np.array_split(x, 500):
        p.update({"x": part})
    f = numeric(p, "x")
    assert f.count == x.size and f.weighted_values()[0].size <= 250
    qs = np.linspace(0.01, 0.99, 99)
    true = np.searchsorted(np.sort(x), f.quantiles(qs), side="right") / x.size
    assert np.max(np.abs(true - qs)) < 0.005


def test_categories_are_capped_and_the_rest_summed() -> None:
    values = [f"v{i}" for i in range(MAX_CATEGORIES + 200)] + ["v0"] * 5
    p = Profile.build({"c": values})
    f = categorical(p, "c")
    assert len(f.counts) == MAX_CATEGORIES
    assert f.total == len(values) and f.other == 200
    assert f.counts["v0"] == 6  # the most frequent is kept
    m = p.merge(p)
    assert categorical(m, "c").total == 2 * len(values)
    assert sum(categorical(p, "c").frequencies().values()) == pytest.approx(1 - 200 / len(values))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hnp.arrays(np.float64, st.integers(0, 3000), elements=st.floats(allow_subnormal=False)),
    st.integers(1, 5),
)
def test_any_floats_profile_merge_and_roundtrip(x: np.ndarray, parts: int) -> None:
    """NaN, inf, huge and tiny values: counts exact, batches = whole, JSON round trip."""
    whole = Profile.build({"x": x})
    batched = Profile()
    for part in np.array_split(x, parts):
        batched.update({"x": part})
    merged = Profile()
    for part in np.array_split(x, parts):
        merged = merged.merge(Profile.build({"x": part}))
    finite = x[np.isfinite(x)]
    for p in (whole, batched, merged):
        f = numeric(p, "x")
        assert (f.count, f.missing, f.infinite) == (
            finite.size, int(np.isnan(x).sum()), int(np.isinf(x).sum()),
        )  # fmt: skip
        assert p.rows == x.size
        if finite.size:
            assert (f.min, f.max) == (finite.min(), finite.max())
            q = f.quantiles([0.0, 0.5, 1.0])
            assert q[0] == finite.min() and q[-1] == finite.max()
            assert finite.min() <= q[1] <= finite.max()
        assert roundtrip(p).to_dict() == p.to_dict()


# --- serialisation ------------------------------------------------------------------------


def test_to_dict_is_json_and_roundtrips() -> None:
    rng = np.random.default_rng(8)
    p = Profile.build({"x": rng.normal(size=5000), "c": rng.choice(["a", "b"], 5000)})
    doc = p.to_dict()
    assert doc["version"] == 1 and doc["rows"] == 5000
    assert orjson.loads(orjson.dumps(doc)) == doc
    back = roundtrip(p)
    assert back.to_dict() == doc
    np.testing.assert_array_equal(
        numeric(back, "x").quantiles([0.1, 0.5, 0.9]), numeric(p, "x").quantiles([0.1, 0.5, 0.9])
    )


def test_twenty_numeric_features_serialise_small() -> None:
    rng = np.random.default_rng(9)
    p = Profile.build({f"f{i}": rng.normal(size=200_000) for i in range(20)})
    size = len(orjson.dumps(p.to_dict()))
    assert size < 100_000, size  # ~4.5 KB a feature whatever the row count


def _valid_doc() -> dict:
    return Profile.build({"x": np.arange(500.0), "c": ["a", "b"] * 250}).to_dict()


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update(version=2), "version 2"),
        (lambda d: d.pop("rows"), "rows"),
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d.update(rows=-1), "rows"),
        (lambda d: d.update(rows="500"), "rows"),
        (lambda d: d.update(rows=400), "covers 500 rows"),
        (lambda d: d["features"]["x"].update(kind="text"), "kind"),
        (lambda d: d["features"]["x"].update(count=True), "count"),
        (lambda d: d["features"]["x"].update(means="%%%"), "does not decode"),
        (lambda d: d["features"]["x"].update(means=""), "differ in length"),
        (lambda d: d["features"]["x"].update(weights=d["features"]["x"]["means"]), "weights"),
        (lambda d: d["features"]["x"].update(min=10.0), "within \\[min, max\\]"),
        (lambda d: d["features"]["x"].update(min=None), "min and max"),
        (lambda d: d["features"]["x"].update(mean=float("nan")), "mean"),
        (lambda d: d["features"]["x"].update(m2=-1.0), "m2"),
        (lambda d: d["features"]["x"].update(compression=1), "compression"),
        (lambda d: d["features"]["c"]["counts"].update(a=-1), "counts"),
        (lambda d: d["features"]["c"].update(counts=[1]), "counts"),
        (lambda d: d.update(features=[]), "features"),
    ],
)
def test_malformed_documents_are_invalid_input(mutate, match: str) -> None:  # type: ignore[no-untyped-def]
    doc = _valid_doc()
    mutate(doc)
    with pytest.raises(InvalidInput, match=match):
        Profile.from_dict(doc)


def test_non_mapping_document_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        Profile.from_dict([1, 2])  # type: ignore[arg-type]
