"""Data validation: check a DataFrame against declared expectations before training on it.

:func:`validate` runs the checks a :class:`DataChecks` declares and returns a
:class:`ValidationReport` (one :class:`CheckResult` per check, with counts and a sample of
offending values); :func:`require_valid` raises :class:`DataValidationFailed` with the readable
report instead. Every check is vectorised (pandas/numpy): a million rows take about a second.

Checks that compare with a reference (``max_new_categories``, ``drift``) use a
:class:`~modelyard.monitoring.profiles.Profile` (e.g. a model version's reference profile, see
:func:`reference_profile`); without one they are skipped, and the report says so.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelyard.errors import InvalidInput, NotFound
from modelyard.monitoring.config import DriftConfig
from modelyard.monitoring.drift import compare
from modelyard.monitoring.profiles import CategoricalProfile, NumericProfile, Profile

if TYPE_CHECKING:
    from modelyard.workspace import Workspace

__all__ = [
    "CheckResult",
    "ColumnKind",
    "DataChecks",
    "DataValidationFailed",
    "DriftCheck",
    "ValidationReport",
    "reference_profile",
    "require_valid",
    "validate",
]

ColumnKind = Literal["number", "integer", "string", "bool", "datetime", "any"]
Rate = Annotated[float, Field(ge=0.0, le=1.0)]
Bounds = tuple[float | None, float | None]
SAMPLE = 5  # offending values shown per column


class DataValidationFailed(InvalidInput):
    """A dataset failed its validation checks; the detail is the readable report."""

    title = "Data validation failed"

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.summary(), report=report.model_dump(mode="json"))
        self.report = report


class DriftCheck(DriftConfig):
    """Drift settings (see :class:`DriftConfig`) plus what makes the check fail."""

    fail_on_dataset_drift: bool = True  # the share of drifted features reaches drift_share
    critical_features: list[str] = Field(default_factory=list)  # any of these drifting fails


class DataChecks(BaseModel):
    """What a dataset must satisfy; every field is optional and checked only when set.

    ``columns`` maps expected names to kinds; missing columns fail, and so do extra ones
    unless ``allow_extra_columns``. ``ranges`` are inclusive ``[min, max]`` (None: open).
    ``max_missing`` and ``max_new_categories`` take a rate or ``{column or "*": rate}``.
    """

    model_config = ConfigDict(extra="forbid")

    min_rows: int | None = Field(default=None, ge=0)
    columns: dict[str, ColumnKind] | None = None
    allow_extra_columns: bool = False
    max_missing: dict[str, Rate] | Rate | None = None
    ranges: dict[str, Bounds] = Field(default_factory=dict)
    categories: dict[str, list[Any]] = Field(default_factory=dict)
    max_new_categories: dict[str, Rate] | Rate | None = None
    max_duplicates: Rate | None = None
    drift: DriftCheck | None = None


class CheckResult(BaseModel):
    """One check's verdict; a skipped check counts as passed."""

    name: str
    passed: bool
    skipped: bool = False
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ValidationReport(BaseModel):
    """Every check that ran, by name, with the dataset's shape."""

    rows: int
    columns: int
    checks: dict[str, CheckResult]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks.values())

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks.values() if not c.passed]

    def summary(self) -> str:
        """A few readable lines: the verdict, then failed, passed and skipped checks."""
        failed = self.failures
        head = (
            f"data validation passed: {len(self.checks)} checks"
            if not failed
            else f"data validation failed: {len(failed)} of {len(self.checks)} checks failed"
        )
        lines = [f"{head} ({self.rows:,} rows, {self.columns} columns)"]
        ordered = failed + [c for c in self.checks.values() if c.passed]
        for c in ordered:
            mark = "SKIP" if c.skipped else "PASS" if c.passed else "FAIL"
            lines.append(f"  {mark} {c.name}: {c.message}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


# --- entry points -------------------------------------------------------------------------


def validate(
    data: pd.DataFrame, checks: DataChecks | dict[str, Any], *, reference: Profile | None = None
) -> ValidationReport:
    """Run ``checks`` on ``data`` (and against ``reference`` where a check needs it)."""
    if not isinstance(data, pd.DataFrame):
        raise InvalidInput(f"data must be a pandas DataFrame, not {type(data).__name__}")
    if not data.columns.is_unique:
        raise InvalidInput("the DataFrame has duplicate column names")
    spec = checks if isinstance(checks, DataChecks) else _parse_checks(checks)
    results: list[CheckResult] = []
    if spec.min_rows is not None:
        results.append(_min_rows(data, spec.min_rows))
    if spec.columns is not None:
        results.append(_columns(data, spec.columns, spec.allow_extra_columns))
    if spec.max_missing is not None:
        results.append(_missing(data, _per_column(spec.max_missing)))
    if spec.ranges:
        results.append(_ranges(data, spec.ranges))
    if spec.categories:
        results.append(_categories(data, spec.categories))
    if spec.max_new_categories is not None:
        results.append(_new_categories(data, _per_column(spec.max_new_categories), reference))
    if spec.max_duplicates is not None:
        results.append(_duplicates(data, spec.max_duplicates))
    if spec.drift is not None:
        results.append(_drift(data, spec.drift, reference))
    return ValidationReport(
        rows=len(data), columns=data.shape[1], checks={r.name: r for r in results}
    )


def require_valid(
    data: pd.DataFrame, checks: DataChecks | dict[str, Any], *, reference: Profile | None = None
) -> ValidationReport:
    """:func:`validate`, raising :class:`DataValidationFailed` when any check fails."""
    report = validate(data, checks, reference=reference)
    if not report.passed:
        raise DataValidationFailed(report)
    return report


def reference_profile(ws: Workspace, uri: str) -> Profile | None:
    """The reference profile of the version ``uri`` names, or None if it has none."""
    try:
        ref = ws.monitoring.get_reference(uri, include_profile=True)
    except NotFound:
        return None
    return None if ref.profile is None else Profile.from_dict(ref.profile)


def _parse_checks(checks: dict[str, Any]) -> DataChecks:
    try:
        return DataChecks.model_validate(checks)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "checks"
        raise InvalidInput(f"data checks: {where}: {err['msg']}") from None


# --- the checks ---------------------------------------------------------------------------


def _min_rows(data: pd.DataFrame, least: int) -> CheckResult:
    n = len(data)
    ok = n >= least
    return CheckResult(
        name="min_rows",
        passed=ok,
        message=f"{n:,} rows {'>=' if ok else '<'} the minimum {least:,}",
        details={"rows": n, "min_rows": least},
    )


def _columns(data: pd.DataFrame, expected: dict[str, ColumnKind], allow_extra: bool) -> CheckResult:
    present = [str(c) for c in data.columns]
    missing = [c for c in expected if c not in data.columns]
    extra = [c for c in present if c not in expected]
    wrong = {
        name: {"expected": kind, "actual": str(data[name].dtype)}
        for name, kind in expected.items()
        if name in data.columns and not _is_kind(data[name], kind)
    }
    problems = []
    if missing:
        problems.append(f"missing {_names(missing)}")
    if extra and not allow_extra:
        problems.append(f"unexpected {_names(extra)}")
    if wrong:
        problems.append(
            "wrong kind: "
            + ", ".join(f"{n} is {w['actual']}, expected {w['expected']}" for n, w in wrong.items())
        )
    message = (
        "; ".join(problems)
        if problems
        else f"{_n(len(expected), 'expected column')} present with the expected kinds"
        + (f" ({len(extra)} extra allowed)" if extra else "")
    )
    return CheckResult(
        name="columns",
        passed=not problems,
        message=message,
        details={"missing": missing, "extra": extra, "wrong_kind": wrong},
    )


def _missing(data: pd.DataFrame, limits: dict[str, float]) -> CheckResult:
    n = len(data)
    counts = data.isna().sum()
    default = limits.get("*")
    targets = {c: limits.get(c, default) for c in map(str, data.columns)}
    targets.update({c: r for c, r in limits.items() if c != "*"})
    absent = [c for c in targets if c not in data.columns]
    per: dict[str, Any] = {}
    bad: list[str] = []
    for col, limit in targets.items():
        if limit is None or col in absent:
            continue
        count = int(counts[col])
        rate = count / n if n else 0.0
        per[col] = {"missing": count, "rate": rate, "max": limit}
        if rate > limit:
            bad.append(col)
    problems = [f"{c}: {_pct(per[c]['rate'])} missing > {_pct(per[c]['max'])}" for c in bad]
    if absent:
        problems.append(f"not in the data: {_names(absent)}")
    message = (
        "; ".join(problems) if problems else f"{_n(len(per), 'column')} within the missing limit"
    )
    return CheckResult(
        name="max_missing",
        passed=not problems,
        message=message,
        details={"columns": per, "failed": bad, "absent": absent},
    )


def _ranges(
    data: pd.DataFrame, ranges: dict[str, tuple[float | None, float | None]]
) -> CheckResult:
    per: dict[str, Any] = {}
    problems: list[str] = []
    for col, (lo, hi) in ranges.items():
        bounds = f"[{'-inf' if lo is None else _num(lo)}, {'inf' if hi is None else _num(hi)}]"
        if col not in data.columns:
            problems.append(f"{col}: not in the data")
            per[col] = {"error": "not in the data"}
            continue
        series = data[col]
        if not pd.api.types.is_numeric_dtype(series.dtype):
            problems.append(f"{col}: ranges apply to numbers, the column is {series.dtype}")
            per[col] = {"error": f"not numeric ({series.dtype})"}
            continue
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.zeros(values.shape, dtype=bool)
        if lo is not None:
            bad |= values < lo
        if hi is not None:
            bad |= values > hi
        count = int(np.count_nonzero(bad))
        finite = values[~np.isnan(values)]
        per[col] = {
            "min": _plain(finite.min()) if finite.size else None,
            "max": _plain(finite.max()) if finite.size else None,
            "range": [lo, hi],
            "outside": count,
            "examples": [_plain(v) for v in pd.unique(values[bad])[:SAMPLE]],
        }
        if count:
            shown = ", ".join(_num(v) for v in per[col]["examples"])
            problems.append(f"{col}: {count:,} values outside {bounds} (e.g. {shown})")
    message = "; ".join(problems) if problems else f"{_n(len(ranges), 'column')} within range"
    return CheckResult(name="ranges", passed=not problems, message=message, details=per)


def _categories(data: pd.DataFrame, allowed: dict[str, list[Any]]) -> CheckResult:
    per: dict[str, Any] = {}
    problems: list[str] = []
    for col, values in allowed.items():
        if col not in data.columns:
            problems.append(f"{col}: not in the data")
            per[col] = {"error": "not in the data"}
            continue
        series = data[col]
        bad = series.notna().to_numpy() & ~series.isin(values).to_numpy()
        count = int(np.count_nonzero(bad))
        top = series[bad].value_counts().head(SAMPLE) if count else pd.Series(dtype=object)
        examples = {_key(k): int(v) for k, v in top.items()}
        per[col] = {"unexpected": count, "examples": examples}
        if count:
            shown = ", ".join(f"{k!r} ({v:,})" for k, v in examples.items())
            problems.append(f"{col}: {count:,} values not among the {len(values)} allowed: {shown}")
    message = (
        "; ".join(problems)
        if problems
        else f"{_n(len(allowed), 'column')} with allowed values only"
    )
    return CheckResult(name="categories", passed=not problems, message=message, details=per)


def _new_categories(
    data: pd.DataFrame, limits: dict[str, float], reference: Profile | None
) -> CheckResult:
    name = "max_new_categories"
    if reference is None:
        return _skipped(name, "no reference profile given")
    default = limits.get("*")
    features = {
        c: f
        for c, f in reference.features.items()
        if isinstance(f, CategoricalProfile) and c in data.columns
    }
    targets = {c: limits.get(c, default) for c in features}
    per: dict[str, Any] = {}
    problems: list[str] = []
    for col, limit in targets.items():
        if limit is None:
            continue
        feature = features[col]
        counts = data[col].value_counts(dropna=True, sort=False)
        keys = [_key(v) for v in counts.index.tolist()]
        n = counts.to_numpy()
        total = int(n.sum())
        # A reference that overflowed may hide any value in its "other": none is called new.
        new = np.array([k not in feature.counts for k in keys], dtype=bool)
        if feature.other:
            new[:] = False
        share = float(n[new].sum() / total) if total else 0.0
        order = np.argsort(-n[new], kind="stable")[:SAMPLE]
        new_keys = [k for k, is_new in zip(keys, new, strict=True) if is_new]
        per[col] = {
            "reference_categories": len(feature.counts) + (1 if feature.other else 0),
            "current_categories": len(keys),
            "new_categories": len(new_keys),
            "new_share": share,
            "max": limit,
            "examples": [new_keys[i] for i in order],
        }
        if share > limit:
            shown = ", ".join(repr(k) for k in per[col]["examples"])
            problems.append(
                f"{col}: {len(new_keys)} categories never seen in the reference ({shown}) are "
                f"{_pct(share)} of values > {_pct(limit)}"
            )
    unmatched = [c for c in limits if c != "*" and c not in features]
    if unmatched:
        problems.append(f"not categorical columns of both data and reference: {_names(unmatched)}")
    message = (
        "; ".join(problems)
        if problems
        else f"{_n(len(per), 'categorical column')} within the share of new categories"
    )
    return CheckResult(name=name, passed=not problems, message=message, details={"columns": per})


def _duplicates(data: pd.DataFrame, limit: float) -> CheckResult:
    n = len(data)
    try:
        dup = data.duplicated(keep="first").to_numpy()
    except TypeError as exc:  # unhashable cells (lists, dicts)
        return CheckResult(
            name="duplicates", passed=False, message=f"cannot compare rows: {exc}", details={}
        )
    count = int(np.count_nonzero(dup))
    share = count / n if n else 0.0
    ok = share <= limit
    return CheckResult(
        name="duplicates",
        passed=ok,
        message=f"{count:,} duplicate rows ({_pct(share)}) {'<=' if ok else '>'} {_pct(limit)}",
        details={
            "duplicates": count,
            "share": share,
            "max": limit,
            "examples": [_plain(i) for i in data.index[dup][:SAMPLE]],
        },
    )


def _drift(data: pd.DataFrame, check: DriftCheck, reference: Profile | None) -> CheckResult:
    if reference is None:
        return _skipped("drift", "no reference profile given")
    kinds: dict[str, str] = {}
    for col, feature in reference.features.items():
        if col not in data.columns:
            continue
        series = data[col]
        numeric = pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(
            series.dtype
        )
        if isinstance(feature, NumericProfile) and numeric:
            kinds[col] = "numeric"
        elif isinstance(feature, CategoricalProfile) and not pd.api.types.is_datetime64_any_dtype(
            series.dtype
        ):
            kinds[col] = "categorical"
    if not kinds:
        return CheckResult(
            name="drift",
            passed=False,
            message="no column of the data can be compared with the reference profile",
            details={"reference_features": sorted(reference.features)},
        )
    current = Profile.build(data[list(kinds)], kinds=kinds)
    ref = Profile(rows=reference.rows, features={c: reference.features[c] for c in kinds})
    config = DriftConfig.model_validate(check.model_dump(include=set(DriftConfig.model_fields)))
    report = compare(ref, current, config)
    details: dict[str, Any] = {
        "drift_share": report.drift_share,
        "drifted_features": report.drifted_features,
        "checked_features": report.checked_features,
        "dataset_drift": report.dataset_drift,
        "features": {
            f.feature: {
                "status": f.status,
                "method": f.method,
                "statistic": f.statistic,
                "p_value": f.p_value,
                "threshold": f.threshold,
                "message": f.message,
            }
            for f in report.features
        },
    }
    if report.dataset_drift is None:
        return _skipped("drift", "too few rows to judge drift (see min_samples)", details)
    drifted = [f.feature for f in report.features if f.drifted]
    critical = [c for c in check.critical_features if c in drifted]
    problems = []
    if check.fail_on_dataset_drift and report.dataset_drift:
        problems.append(
            f"dataset drift: {report.drifted_features} of {report.checked_features} features "
            f"drifted ({_pct(report.drift_share)} >= {_pct(check.drift_share)})"
        )
    if critical:
        problems.append(f"critical features drifted: {_names(critical)}")
    if problems:
        reasons = "; ".join(f"{f.feature}: {f.message}" for f in report.features if f.drifted)
        message = "; ".join(problems) + f" [{reasons}]"
    else:
        message = (
            f"{report.drifted_features} of {report.checked_features} features drifted"
            + (f" ({_names(drifted)})" if drifted else "")
            + ": within limits"
        )
    return CheckResult(name="drift", passed=not problems, message=message, details=details)


# --- small pieces -------------------------------------------------------------------------


def _skipped(name: str, why: str, details: dict[str, Any] | None = None) -> CheckResult:
    return CheckResult(
        name=name, passed=True, skipped=True, message=f"skipped: {why}", details=details or {}
    )


def _per_column(limit: dict[str, float] | float) -> dict[str, float]:
    return dict(limit) if isinstance(limit, dict) else {"*": limit}


_NUMERIC_INFERRED = frozenset({"integer", "floating", "mixed-integer-float", "decimal"})


def _is_kind(series: pd.Series, kind: ColumnKind) -> bool:
    """Whether ``series`` holds values of ``kind`` (missing values allowed)."""
    types = pd.api.types
    dtype = series.dtype
    if kind == "any":
        return True
    if kind == "datetime":
        return bool(types.is_datetime64_any_dtype(dtype))
    if kind == "bool":
        if types.is_bool_dtype(dtype):
            return True
        return types.is_object_dtype(dtype) and types.infer_dtype(series, skipna=True) in (
            "boolean",
            "empty",
        )
    if kind == "string":
        if isinstance(dtype, pd.CategoricalDtype):
            return types.infer_dtype(dtype.categories, skipna=True) in ("string", "empty")
        if types.is_object_dtype(dtype):
            return types.infer_dtype(series, skipna=True) in ("string", "empty")
        return bool(types.is_string_dtype(dtype))
    # number / integer
    if types.is_bool_dtype(dtype):
        return False
    if types.is_object_dtype(dtype):
        inferred = types.infer_dtype(series, skipna=True)
        return inferred == "integer" if kind == "integer" else inferred in _NUMERIC_INFERRED
    if not types.is_numeric_dtype(dtype):
        return False
    if kind == "number" or types.is_integer_dtype(dtype):
        return True
    # Floats are integers when every value is whole (a missing value makes ints floats).
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    values = values[~np.isnan(values)]
    return bool(np.all(np.isfinite(values)) and np.all(values == np.floor(values)))


def _key(value: Any) -> str:
    """A category as profiles store it: the value stringified."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value.item() if isinstance(value, np.generic) else value)


def _plain(value: Any) -> Any:
    """A JSON-safe Python value."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, pd.Timestamp | datetime | date):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _pct(rate: float) -> str:
    return f"{rate * 100:.2f}%"


def _names(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:10])
    return shown + (f" and {len(names) - 10} more" if len(names) > 10 else "")
