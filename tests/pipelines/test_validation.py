"""Data validation: each check catches its fault, passes clean data, and reads well."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from modelyard.errors import InvalidInput
from modelyard.monitoring.profiles import Profile
from modelyard.pipelines.validation import (
    DataChecks,
    DataValidationFailed,
    reference_profile,
    require_valid,
    validate,
)
from modelyard.workspace import Workspace

COLUMNS = {
    "age": "integer",
    "income": "number",
    "city": "string",
    "member": "bool",
    "signup": "datetime",
}


def frame(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "income": rng.gamma(25.0, 2_000.0, n),
            "city": rng.choice(["paris", "lyon", "nice"], n),
            "member": rng.random(n) > 0.5,
            "signup": pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 10**7, n), "s"),
        }
    )


REFERENCE = Profile.build(frame(5000, seed=1).drop(columns=["signup"]))

CHECKS = DataChecks(
    min_rows=100,
    columns=COLUMNS,
    max_missing={"*": 0.01},
    ranges={"age": (0, 120), "income": (0, None)},
    categories={"city": ["paris", "lyon", "nice"]},
    max_new_categories=0.01,
    max_duplicates=0.0,
    drift={"critical_features": ["income"]},
)


def test_clean_data_passes_every_check() -> None:
    report = validate(frame(), CHECKS, reference=REFERENCE)
    assert report.passed, report.summary()
    assert list(report.checks) == [
        "min_rows",
        "columns",
        "max_missing",
        "ranges",
        "categories",
        "max_new_categories",
        "duplicates",
        "drift",
    ]
    assert not any(c.skipped for c in report.checks.values())
    text = report.summary()
    assert text.startswith("data validation passed: 8 checks (2,000 rows, 5 columns)")
    assert "PASS drift: 0 of 4 features drifted: within limits" in text
    assert require_valid(frame(), CHECKS, reference=REFERENCE).passed


def test_min_rows() -> None:
    report = validate(frame(50), {"min_rows": 100})
    assert not report.passed
    assert report.checks["min_rows"].message == "50 rows < the minimum 100"


def test_columns_missing_extra_and_wrong_kind() -> None:
    data = frame().drop(columns=["member"]).assign(extra=1, age=lambda d: d.age.astype(str))
    check = validate(data, {"columns": COLUMNS}).checks["columns"]
    assert not check.passed
    assert check.details["missing"] == ["member"] and check.details["extra"] == ["extra"]
    assert check.details["wrong_kind"]["age"]["expected"] == "integer"
    assert "missing 'member'" in check.message and "unexpected 'extra'" in check.message
    assert "age is" in check.message and "expected integer" in check.message
    allowed = validate(frame().assign(extra=1), {"columns": COLUMNS, "allow_extra_columns": True})
    assert allowed.passed


def test_column_kinds_tolerate_missing_values() -> None:
    data = pd.DataFrame(
        {
            "age": [1.0, np.nan, 3.0],  # ints with a gap become floats
            "city": ["a", None, "c"],
            "member": pd.array([True, None, False], dtype="boolean"),
            "income": pd.array([1, None, 3], dtype="Int64"),
            "signup": pd.to_datetime(["2025-01-01", None, "2025-01-03"]),
        }
    )
    assert validate(data, {"columns": COLUMNS}).passed
    halves = data.assign(age=[1.5, np.nan, 3.0])
    assert validate(halves, {"columns": COLUMNS}).checks["columns"].details["wrong_kind"] == {
        "age": {"expected": "integer", "actual": "float64"}
    }


def test_missing_values_per_column_and_default() -> None:
    data = frame(1000)
    data.loc[:49, "income"] = np.nan  # 5 %
    data.loc[:4, "city"] = None  # 0.5 %
    check = validate(data, {"max_missing": {"*": 0.01, "city": 0.0}}).checks["max_missing"]
    assert not check.passed
    assert set(check.details["failed"]) == {"income", "city"}
    assert "income: 5.00% missing > 1.00%" in check.message
    assert "city: 0.50% missing > 0.00%" in check.message
    assert validate(data, {"max_missing": 0.1}).passed
    absent = validate(data, {"max_missing": {"nope": 0.1}}).checks["max_missing"]
    assert not absent.passed and "not in the data: 'nope'" in absent.message


def test_ranges() -> None:
    data = frame(1000)
    data.loc[[3, 7, 9], "age"] = [-4, 300, 300]
    check = validate(data, {"ranges": {"age": [0, 120], "income": [None, None]}}).checks["ranges"]
    assert not check.passed
    assert check.details["age"]["outside"] == 3
    assert check.details["age"]["examples"] == [-4, 300]
    assert check.details["age"]["min"] == -4 and check.details["age"]["max"] == 300
    assert check.message == "age: 3 values outside [0, 120] (e.g. -4, 300)"
    bad_kind = validate(data, {"ranges": {"city": [0, 1]}}).checks["ranges"]
    assert not bad_kind.passed and "ranges apply to numbers" in bad_kind.message


def test_categories() -> None:
    data = frame(1000)
    data.loc[:9, "city"] = "berlin"
    data.loc[10:12, "city"] = "rome"
    check = validate(data, {"categories": {"city": ["paris", "lyon", "nice"]}}).checks["categories"]
    assert not check.passed
    assert check.details["city"] == {"unexpected": 13, "examples": {"berlin": 10, "rome": 3}}
    assert "city: 13 values not among the 3 allowed: 'berlin' (10), 'rome' (3)" in check.message


def test_new_categories_against_the_reference() -> None:
    data = frame(1000)
    data.loc[:49, "city"] = "berlin"  # 5 % never seen in the reference
    check = validate(data, {"max_new_categories": {"city": 0.02}}, reference=REFERENCE).checks[
        "max_new_categories"
    ]
    assert not check.passed
    city = check.details["columns"]["city"]
    assert city["reference_categories"] == 3 and city["current_categories"] == 4
    assert city["new_share"] == pytest.approx(0.05) and city["examples"] == ["berlin"]
    assert "'berlin'" in check.message and "5.00% of values > 2.00%" in check.message
    assert validate(data, {"max_new_categories": 0.1}, reference=REFERENCE).passed


def test_duplicates() -> None:
    data = frame(1000)
    data = pd.concat([data, data.iloc[:20]], ignore_index=True)
    check = validate(data, {"max_duplicates": 0.01}).checks["duplicates"]
    assert not check.passed
    assert check.details["duplicates"] == 20 and check.details["examples"][0] == 1000
    assert check.message == "20 duplicate rows (1.96%) > 1.00%"
    assert validate(data, {"max_duplicates": 0.05}).passed


def test_drift_of_the_dataset_and_of_critical_features() -> None:
    shifted = frame(2000).assign(income=lambda d: d.income * 1.5)
    check = validate(shifted, {"drift": {"critical_features": ["income"]}}, reference=REFERENCE)
    drift = check.checks["drift"]
    assert not drift.passed
    assert drift.details["features"]["income"]["status"] == "drift"
    assert "critical features drifted: 'income'" in drift.message
    assert "dataset drift" not in drift.message  # 1 of 4 features is below drift_share
    assert validate(shifted, {"drift": {}}, reference=REFERENCE).passed

    everything = shifted.assign(
        age=lambda d: d.age + 30, city="paris", member=lambda d: d.member & False
    )
    dataset = validate(everything, {"drift": {}}, reference=REFERENCE).checks["drift"]
    assert not dataset.passed and dataset.message.startswith("dataset drift: 4 of 4 features")


def test_reference_checks_are_skipped_without_a_reference() -> None:
    report = validate(frame(), {"drift": {}, "max_new_categories": 0.0})
    assert report.passed
    assert all(c.skipped for c in report.checks.values())
    assert "SKIP drift: skipped: no reference profile given" in report.summary()


def test_require_valid_raises_a_readable_report() -> None:
    data = frame(500)
    data.loc[:2, "age"] = -1
    with pytest.raises(DataValidationFailed) as caught:
        require_valid(data, CHECKS, reference=REFERENCE)
    err = caught.value
    assert err.status == 422 and isinstance(err, InvalidInput)
    lines = err.detail.splitlines()
    assert lines[0] == "data validation failed: 1 of 8 checks failed (500 rows, 5 columns)"
    assert lines[1] == "  FAIL ranges: age: 3 values outside [0, 120] (e.g. -1)"
    assert len(lines) == 9
    problem = err.problem()
    assert problem["title"] == "Data validation failed"
    assert problem["report"]["checks"]["ranges"]["passed"] is False


def test_bad_checks_are_refused() -> None:
    with pytest.raises(InvalidInput, match="max_rowz"):
        validate(frame(10), {"max_rowz": 3})
    with pytest.raises(InvalidInput, match="max_missing"):
        validate(frame(10), {"max_missing": 1.5})
    with pytest.raises(InvalidInput, match="DataFrame"):
        validate({"a": [1]}, {})  # type: ignore[arg-type]


def test_a_million_rows_validate_in_about_a_second() -> None:
    data = frame(1_000_000, seed=3)
    start = time.perf_counter()
    report = validate(data, CHECKS, reference=REFERENCE)
    elapsed = time.perf_counter() - start
    assert report.passed, report.summary()
    assert elapsed < 5, f"{elapsed:.2f}s"  # about 0.5 s here; generous for shared machines


def test_reference_profile_of_a_model_version(workspace: Workspace) -> None:
    from sklearn.linear_model import LinearRegression

    from modelyard import Client

    data = frame(300).drop(columns=["signup", "city", "member"])
    with Client(settings=workspace.settings) as client:
        client.log_model(
            LinearRegression().fit(data[["age"]], data.income), "inc", input_example=data[["age"]]
        )
    assert reference_profile(workspace, "models:/inc/1") is None
    workspace.monitoring.set_reference("models:/inc/1", data=data[["age"]])
    ref = reference_profile(workspace, "models:/inc/1")
    assert ref is not None and "age" in ref.features
    assert validate(data, {"drift": {}}, reference=ref).passed
