"""Model performance from ground-truth feedback, per time window, version and slice.

Computed from the ``feedback`` table alone: each label was stored with the logged outputs and
inputs of its row, so no prediction-log scan is needed. scikit-learn computes every metric.

Task (``MonitorConfig.task``; ``auto`` decides from the data of the whole report):
classification when a probabilities output exists, when any label is a string or a boolean,
or when every label is a whole number and every predicted value is an integer, with each
label among the predicted values (or every label and prediction 0 or 1); regression otherwise.

Classification metrics: ``accuracy``, ``precision``, ``recall``, ``f1`` (two classes: of the
positive label, i.e. ``positive_label`` or else the larger label; more classes: macro averages,
a class never predicted counting 0 as in scikit-learn), ``roc_auc`` and ``log_loss`` when a
probabilities output exists, and a confusion matrix. Regression metrics: ``mae``, ``rmse``,
``r2``. A metric that is undefined for a window (ROC AUC with one class among the labels,
precision with nothing predicted positive, R² of constant labels) is ``None`` with its reason
in ``reasons``; no NaN ever reaches JSON.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import orjson
from pydantic import BaseModel, Field
from sqlalchemy import Text, cast, select

from modelyard.errors import InvalidInput
from modelyard.monitoring.config import MonitorConfig
from modelyard.monitoring.feedback import load_monitor_config
from modelyard.store.tables import FeedbackRow

if TYPE_CHECKING:
    from modelyard.workspace import Workspace

__all__ = [
    "METRICS",
    "ConfusionMatrix",
    "PerformanceReport",
    "PerformanceSlice",
    "PerformanceWindow",
    "group_metrics",
    "performance",
]

#: Every metric a report may hold, by name.
METRICS = frozenset(
    {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "mae", "rmse", "r2"}
)

Task = Literal["classification", "regression"]
K = TypeVar("K")
Status = Literal["ok", "insufficient"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_CATEGORIES = 20  # slices of a categorical feature; rarer values are pooled as "other"
_FEW_NUMBERS = 4  # a numeric feature with at most this many values is sliced per value
_PROBABILITY_NAMES = ("probabilities", "probability", "proba", "probas", "predict_proba")


class ConfusionMatrix(BaseModel):
    """Counts of (true label, predicted label): ``matrix[i][j]``, true ``labels[i]``."""

    labels: list[Any]
    matrix: list[list[int]]


class PerformanceSlice(BaseModel):
    """Metrics of the rows of one window whose feature has one value or lies in one range."""

    feature: str
    kind: Literal["value", "range", "missing", "other"]
    value: Any = None  # kind "value": the feature's value
    low: float | None = None  # kind "range": low <= x < high (the last range includes high)
    high: float | None = None
    samples: int
    status: Status
    metrics: dict[str, float | None]
    reasons: dict[str, str] = Field(default_factory=dict)


class PerformanceWindow(BaseModel):
    """Metrics of one version in one time window (of prediction time)."""

    window_start: datetime
    window_end: datetime
    version: int | None  # None: every version together (by_version=False)
    samples: int  # labelled predictions
    status: Status  # "insufficient": fewer than min_samples; metrics shown, not to be trusted
    metrics: dict[str, float | None]
    reasons: dict[str, str] = Field(default_factory=dict)  # why a metric is None
    confusion: ConfusionMatrix | None = None
    slices: list[PerformanceSlice] = Field(default_factory=list)


class PerformanceReport(BaseModel):
    """Performance of an endpoint per window and version; windows without labels are left out."""

    endpoint: str
    task: Task | None  # None: no feedback in the range
    start: datetime
    end: datetime
    granularity: int | None  # seconds; None: one window for the whole range
    version: int | None
    slice_by: str | None
    min_samples: int
    prediction: str | None  # the output compared with the labels
    probabilities: str | None  # the output of class probabilities, if any
    classes: list[Any] | None  # the class order of ``probabilities``, when known
    positive_label: Any = None  # two classes: the class precision/recall/F1 are about
    windows: list[PerformanceWindow]


@dataclass
class _Row:
    version: int
    window: datetime
    label: Any
    predicted: Any
    proba: list[Any] | None
    feature: Any


@dataclass
class _Context:
    """What every window of one report shares, so their metrics compare."""

    task: Task
    classes: list[Any]  # classes seen (labels and predictions), or the known class order
    known_order: bool  # ``classes`` is the column order of the probabilities
    order_reason: str
    positive: Any
    positive_reason: str
    has_proba: bool


def performance(
    ws: Workspace,
    endpoint: str,
    *,
    start: datetime,
    end: datetime,
    granularity: int | None = None,
    version: int | None = None,
    slice_by: str | None = None,
    config: MonitorConfig | None = None,
    min_samples: int = 30,
    classes: Sequence[Any] | None = None,
    by_version: bool = True,
) -> PerformanceReport:
    """Performance of ``endpoint``'s predictions made in ``start <= t < end`` that have labels.

    Windows are ``granularity`` seconds aligned to the epoch (None: one window ``[start,
    end)``), one per version (or, with ``by_version=False``, one for all versions together,
    as an endpoint-wide KPI wants). ``slice_by`` names an input: each window then also has metrics
    per value (strings, booleans, numbers with few values; the 20 most frequent, the rest
    pooled) or per quartile range of the labelled rows (other numbers). ``classes`` is the
    column order of the probabilities output when the model does not follow scikit-learn's
    (sorted labels); by default it is inferred from the labels and predictions seen.
    """
    start, end = _utc(start), _utc(end)
    if end <= start:
        raise InvalidInput("end must be after start")
    if granularity is not None and granularity < 1:
        raise InvalidInput("granularity must be at least 1 second")
    if min_samples < 1:
        raise InvalidInput("min_samples must be at least 1")
    config = config or load_monitor_config(ws, endpoint)
    rows, prediction, probabilities = _load(
        ws, endpoint, start, end, granularity, version, slice_by, config
    )
    report = PerformanceReport(
        endpoint=endpoint,
        task=None,
        start=start,
        end=end,
        granularity=granularity,
        version=version,
        slice_by=slice_by,
        min_samples=min_samples,
        prediction=prediction,
        probabilities=probabilities,
        classes=None,
        windows=[],
    )
    if not rows:
        return report
    ctx = _context(rows, config, classes)
    report.task = ctx.task
    if ctx.task == "classification":
        report.classes = ctx.classes if ctx.known_order else None
        report.positive_label = ctx.positive if len(ctx.classes) <= 2 else None
    slicer = _Slicer(slice_by, [r.feature for r in rows]) if slice_by else None

    groups: dict[tuple[datetime, int], list[_Row]] = {}
    for row in rows:
        groups.setdefault((row.window, row.version if by_version else -1), []).append(row)
    for (window, ver), members in sorted(groups.items(), key=lambda g: g[0]):
        metrics, reasons, confusion = _metrics(members, ctx)
        window_end = end if granularity is None else window + timedelta(seconds=granularity)
        slices = []
        if slicer is not None:
            for key, part in slicer.split(members):
                m, r, _ = _metrics(part, ctx)
                slices.append(
                    PerformanceSlice(
                        feature=slicer.feature,
                        **key,
                        samples=len(part),
                        status=_status(len(part), min_samples),
                        metrics=m,
                        reasons=r,
                    )
                )
        report.windows.append(
            PerformanceWindow(
                window_start=window,
                window_end=window_end,
                version=ver if by_version else None,
                samples=len(members),
                status=_status(len(members), min_samples),
                metrics=metrics,
                reasons=reasons,
                confusion=confusion,
                slices=slices,
            )
        )
    return report


def group_metrics(
    groups: Mapping[K, Sequence[tuple[Any, Mapping[str, Any]]]],
    config: MonitorConfig,
) -> dict[K, tuple[dict[str, float | None], int]]:
    """Metrics of labelled predictions per group, and how many rows each used.

    A group holds ``(label, logged outputs)`` pairs, as feedback stores them. The task, the
    output compared and the class order are decided once over every group, as a report's
    windows share them, so the groups' metrics compare. Rows with nothing to compare (no
    predicted value) are left out; a group left empty is absent from the answer.
    """
    pairs = [pair for members in groups.values() for pair in members]
    if not pairs:
        return {}
    first = pairs[0][1]
    probabilities = _probabilities_output(dict(first), config)
    prediction = config.prediction or next(
        (k for k, v in first.items() if k != probabilities and not isinstance(v, list)), None
    )
    rows: dict[K, list[_Row]] = {}
    for key, members in groups.items():
        for label, outputs in members:
            predicted = outputs.get(prediction) if prediction else None
            if predicted is None or isinstance(predicted, list) or label is None:
                continue
            proba = outputs.get(probabilities) if probabilities else None
            rows.setdefault(key, []).append(_Row(0, _EPOCH, label, predicted, proba, None))
    if not rows:
        return {}
    ctx = _context([r for members in rows.values() for r in members], config, None)
    return {key: (_metrics(members, ctx)[0], len(members)) for key, members in rows.items()}


# -- loading --------------------------------------------------------------------------------


def _load(
    ws: Workspace,
    endpoint: str,
    start: datetime,
    end: datetime,
    granularity: int | None,
    version: int | None,
    slice_by: str | None,
    config: MonitorConfig,
) -> tuple[list[_Row], str | None, str | None]:
    """The labelled rows (with a predicted value) and the names of the outputs used."""
    where = [
        FeedbackRow.endpoint == endpoint,
        FeedbackRow.predicted_at >= start,
        FeedbackRow.predicted_at < end,
    ]
    if version is not None:
        where.append(FeedbackRow.version == version)
    # The JSON columns are read as text and parsed here: SQLite hands a JSON number back as
    # a number, which SQLAlchemy's JSON type meets with a TypeError and an ABC check per row
    # (a third of a day's labels' loading time); orjson parses the rest several times faster.
    columns: list[Any] = [
        FeedbackRow.version,
        FeedbackRow.predicted_at,
        cast(FeedbackRow.label, Text),
        cast(FeedbackRow.prediction, Text),
    ]
    if slice_by is not None:
        # Only the one input is read from the database, not every row's whole feature dict.
        columns.append(FeedbackRow.__table__.c.features[slice_by])
    with ws.store.read() as session:
        if slice_by is not None:
            sample = session.scalar(select(FeedbackRow.features).where(*where).limit(1))
            if sample is not None and slice_by not in sample:
                known = ", ".join(sorted(sample)) or "none"
                raise InvalidInput(
                    f"endpoint {endpoint!r} has no input {slice_by!r} to slice by; its inputs: "
                    f"{known}"
                )
        result = session.execute(select(*columns).where(*where)).all()
    if not result:
        return [], config.prediction, config.probabilities
    parsed = [(r[0], r[1], _json(r[2]), _json(r[3]), *r[4:]) for r in result]
    first = parsed[0][3]
    probabilities = _probabilities_output(first, config)
    prediction = config.prediction or next(
        (k for k, v in first.items() if k != probabilities and not isinstance(v, list)), None
    )
    step = timedelta(seconds=granularity) if granularity else None
    rows = []
    for found in parsed:
        ver, at, label, outputs = found[0], found[1], found[2], found[3]
        predicted = outputs.get(prediction) if prediction else None
        if predicted is None or isinstance(predicted, list) or label is None:
            continue  # nothing to compare (an output the row's version did not have)
        window = start if step is None else _EPOCH + ((at - _EPOCH) // step) * step
        proba = outputs.get(probabilities) if probabilities else None
        feature = found[4] if slice_by is not None else None
        rows.append(_Row(ver, window, label, predicted, proba, feature))
    return rows, prediction, probabilities


def _json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # NaN or Infinity, which Python's json writes and reads
        import json

        return json.loads(text)


def _probabilities_output(outputs: dict[str, Any], config: MonitorConfig) -> str | None:
    if config.probabilities is not None:
        return config.probabilities
    lists = [k for k, v in outputs.items() if isinstance(v, list)]
    named = [k for k in lists if k.lower() in _PROBABILITY_NAMES]
    if named:
        return named[0]
    return lists[0] if len(lists) == 1 else None


# -- task and classes -----------------------------------------------------------------------


def _context(rows: list[_Row], config: MonitorConfig, classes: Sequence[Any] | None) -> _Context:
    has_proba = any(r.proba is not None for r in rows)
    task: Task
    if config.task != "auto":
        task = config.task
    elif has_proba or any(isinstance(r.label, str | bool) for r in rows):
        task = "classification"
    elif all(_whole(r.label) for r in rows) and all(
        isinstance(r.predicted, int) and not isinstance(r.predicted, bool) for r in rows
    ):
        predicted = {r.predicted for r in rows}
        labels = {r.label for r in rows}
        # 0/1 alone counts as classes too: a model that predicts one class only for a
        # while must not have its report switch to regression metrics.
        binary = labels | predicted <= {0, 1}
        task = "classification" if labels <= predicted or binary else "regression"
    else:
        task = "regression"
    if task == "regression":
        return _Context(task, [], False, "", None, "", has_proba)

    for r in rows:  # 1.0 from a JSON client and the logged integer 1 are one class
        if isinstance(r.label, float) and isinstance(r.predicted, int) and r.label.is_integer():
            r.label = int(r.label)
    seen = _sorted({r.label for r in rows} | {r.predicted for r in rows})
    widths = {len(r.proba) for r in rows if r.proba is not None}
    order: list[Any] = seen
    known, reason = False, ""
    if classes is not None:
        order, known = [*classes], True
    elif len(widths) > 1:
        reason = f"the probabilities have different lengths ({sorted(widths)})"
    elif widths:
        width = widths.pop()
        if width == len(seen):
            # scikit-learn orders predict_proba's columns by the sorted class labels.
            known = True
        elif all(_whole(c) and not isinstance(c, bool) for c in seen) and all(
            0 <= c < width for c in seen
        ):
            order, known = list(range(width)), True  # class indices 0..width-1
        else:
            reason = (
                f"the class order of the probabilities is unknown: {width} columns, but "
                f"{len(seen)} classes seen; pass classes"
            )
    positive, positive_reason = _positive(config.positive_label, order)
    return _Context(task, order, known, reason, positive, positive_reason, has_proba)


def _positive(configured: Any, classes: list[Any]) -> tuple[Any, str]:
    if configured is None:
        return (classes[-1] if classes else None), ""
    if configured in classes:
        return configured, ""
    same = [c for c in classes if str(c) == str(configured)]
    if len(same) == 1:  # "1" configured for integer labels
        return same[0], ""
    return None, f"the positive label {configured!r} is not among the classes {classes}"


# -- metrics --------------------------------------------------------------------------------


def _metrics(
    rows: list[_Row], ctx: _Context
) -> tuple[dict[str, float | None], dict[str, str], ConfusionMatrix | None]:
    from sklearn import config_context

    # The arguments are this module's constants: checking them was most of each metric
    # call's time on a window of a few hundred labels (a day of hourly windows on the
    # dashboard: bench/ui/NOTES.md). The arrays are still checked.
    with config_context(skip_parameter_validation=True):
        if ctx.task == "regression":
            metrics, reasons = _regression(rows)
            return metrics, reasons, None
        return _classification(rows, ctx)


def _regression(rows: list[_Row]) -> tuple[dict[str, float | None], dict[str, str]]:
    from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

    names = ("mae", "rmse", "r2")
    numeric = [r for r in rows if _number(r.label) and _number(r.predicted)]
    if not numeric:
        return dict.fromkeys(names), dict.fromkeys(
            names, "the labels or predictions are not numbers"
        )
    y = np.array([float(r.label) for r in numeric])
    p = np.array([float(r.predicted) for r in numeric])
    metrics: dict[str, float | None] = {
        "mae": float(mean_absolute_error(y, p)),
        "rmse": float(root_mean_squared_error(y, p)),
        "r2": None,
    }
    reasons = {}
    if len(y) < 2:
        reasons["r2"] = "undefined for fewer than 2 labels"
    elif float(np.ptp(y)) == 0.0:
        reasons["r2"] = "undefined when every label is the same"
    else:
        metrics["r2"] = float(r2_score(y, p))
    if len(numeric) < len(rows):
        reasons["samples"] = f"{len(rows) - len(numeric)} rows without numbers left out"
    return _finite(metrics, reasons)


def _classification(
    rows: list[_Row], ctx: _Context
) -> tuple[dict[str, float | None], dict[str, str], ConfusionMatrix | None]:
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    names = ["accuracy", "precision", "recall", "f1"]
    if ctx.has_proba:
        names += ["roc_auc", "log_loss"]
    metrics: dict[str, float | None] = dict.fromkeys(names)
    reasons: dict[str, str] = {}
    y_list = [r.label for r in rows]
    p_list = [r.predicted for r in rows]
    kinds = {_kind(v) for v in y_list} | {_kind(v) for v in p_list}
    if len(kinds) > 1:
        why = f"labels and predictions mix {' and '.join(sorted(kinds))}; they cannot be compared"
        return metrics, dict.fromkeys(names, why), None
    y, p = np.asarray(y_list), np.asarray(p_list)
    metrics["accuracy"] = float(accuracy_score(y, p))
    if len(ctx.classes) <= 2:
        if ctx.positive is None:
            for name in ("precision", "recall", "f1"):
                reasons[name] = ctx.positive_reason
        else:
            # Booleans against the positive class: exactly sklearn's binary metrics, and
            # defined even when a window holds one class only.
            yb, pb = y == ctx.positive, p == ctx.positive
            # one call for the three: each of precision_score, recall_score and f1_score
            # computes all of them
            scores = precision_recall_fscore_support(yb, pb, average="binary", zero_division=np.nan)
            for name, value in zip(("precision", "recall", "f1"), scores[:3], strict=True):
                metrics[name] = float(value)
            undefined = {
                "precision": f"no row was predicted {ctx.positive!r}",
                "recall": f"no row is labelled {ctx.positive!r}",
                "f1": f"no row was predicted or labelled {ctx.positive!r}",
            }
            for name, text in undefined.items():
                value = metrics[name]
                if value is not None and math.isnan(value):
                    metrics[name], reasons[name] = None, text
    else:
        scores = precision_recall_fscore_support(y, p, average="macro", zero_division=0.0)
        for name, value in zip(("precision", "recall", "f1"), scores[:3], strict=True):
            metrics[name] = float(value)
    if ctx.has_proba:
        _probability_metrics(rows, y, ctx, metrics, reasons)
    confusion = None
    try:
        matrix = confusion_matrix(y, p, labels=np.asarray(ctx.classes))
        confusion = ConfusionMatrix(labels=[_plain(c) for c in ctx.classes], matrix=matrix.tolist())
    except ValueError:  # given classes none of which is among the labels
        reasons["confusion"] = f"no label is among the classes {ctx.classes}"
    metrics, reasons = _finite(metrics, reasons)
    return metrics, reasons, confusion


def _probability_metrics(
    rows: list[_Row],
    y: np.ndarray,
    ctx: _Context,
    metrics: dict[str, float | None],
    reasons: dict[str, str],
) -> None:
    from sklearn.metrics import log_loss, roc_auc_score

    if not ctx.known_order:
        reasons["roc_auc"] = reasons["log_loss"] = ctx.order_reason
        return
    width = len(ctx.classes)
    usable = [
        r.proba is not None
        and len(r.proba) == width
        and all(_number(v) and math.isfinite(v) for v in r.proba)
        for r in rows
    ]
    if not all(usable):
        missing = usable.count(False)
        reasons["roc_auc"] = reasons["log_loss"] = (
            f"{missing} of {len(rows)} rows have no usable probabilities ({width} numbers)"
        )
        return
    proba = np.array([r.proba for r in rows], dtype=np.float64)
    sums = proba.sum(axis=1, keepdims=True)
    # Logged float32 probabilities sum to 1 only approximately; sklearn warns about that.
    proba = np.divide(proba, sums, out=np.full_like(proba, 1.0 / width), where=sums > 0)
    classes = ctx.classes
    present = set(y.tolist())
    unknown = present - set(classes)
    if unknown:
        why = f"labels {_sorted(unknown)} are not among the classes {classes}"
        reasons["roc_auc"] = reasons["log_loss"] = why
        return
    metrics["log_loss"] = float(log_loss(y, proba, labels=classes))
    if width == 2:
        if ctx.positive is None:
            reasons["roc_auc"] = ctx.positive_reason
        elif len(present) < 2:
            reasons["roc_auc"] = "undefined when the labels hold one class only"
        else:
            scores = proba[:, classes.index(ctx.positive)]
            metrics["roc_auc"] = float(roc_auc_score(y == ctx.positive, scores))
    elif len(present) < width:
        missing_classes = _sorted(set(classes) - present)
        reasons["roc_auc"] = f"undefined while classes {missing_classes} have no label here"
    else:
        metrics["roc_auc"] = float(
            roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=classes)
        )


def _finite(
    metrics: dict[str, float | None], reasons: dict[str, str]
) -> tuple[dict[str, float | None], dict[str, str]]:
    for name, value in metrics.items():
        if value is not None and not math.isfinite(value):
            metrics[name] = None
            reasons.setdefault(name, "not a finite number for this window")
    return metrics, reasons


# -- slices ---------------------------------------------------------------------------------


class _Slicer:
    """Assigns rows to the segments of one feature, fixed over the whole report."""

    def __init__(self, feature: str, values: list[Any]) -> None:
        self.feature = feature
        present = [v for v in values if v is not None]
        for v in present:
            if isinstance(v, list | dict):
                raise InvalidInput(f"input {feature!r} is not a scalar; pick a scalar input")
        numbers = [float(v) for v in present if _number(v)]
        self.edges: np.ndarray | None = None
        self.top: list[Any] = []
        if present and len(numbers) == len(present) and len(set(numbers)) > _FEW_NUMBERS:
            # Quartiles of the labelled rows; equal quartiles (skewed data) merge.
            finite = np.array([x for x in numbers if math.isfinite(x)])
            self.edges = np.unique(np.quantile(finite, [0.0, 0.25, 0.5, 0.75, 1.0]))
        else:
            counts = Counter(_hashable(v) for v in present)
            self.top = [v for v, _ in counts.most_common(MAX_CATEGORIES)]
            self.top.sort(key=lambda v: (-counts[v], str(v)))

    def split(self, rows: list[_Row]) -> Iterable[tuple[dict[str, Any], list[_Row]]]:
        parts: dict[tuple[int, Any], list[_Row]] = {}
        keys: dict[tuple[int, Any], dict[str, Any]] = {}
        for row in rows:
            key, spec = self._key(row.feature)
            parts.setdefault(key, []).append(row)
            keys.setdefault(key, spec)
        for key in sorted(parts, key=lambda k: k[0]):
            yield keys[key], parts[key]

    def _key(self, value: Any) -> tuple[tuple[int, Any], dict[str, Any]]:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return (10**6, None), {"kind": "missing"}
        if self.edges is not None:
            edges = self.edges
            x = float(value)
            i = int(np.searchsorted(edges[1:-1], x, side="right")) if len(edges) > 2 else 0
            i = min(i, max(len(edges) - 2, 0))
            low, high = float(edges[i]), float(edges[min(i + 1, len(edges) - 1)])
            return (i, None), {"kind": "range", "low": low, "high": high}
        value = _hashable(value)
        if value in self.top:
            return (self.top.index(value), value), {"kind": "value", "value": value}
        return (10**6 - 1, None), {"kind": "other"}


# -- small things ---------------------------------------------------------------------------


def _status(samples: int, min_samples: int) -> Status:
    return "ok" if samples >= min_samples else "insufficient"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer()
    )


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return "strings"
    if isinstance(value, bool):
        return "booleans"
    return "numbers"


def _sorted(values: Iterable[Any]) -> list[Any]:
    items = list(values)
    try:
        return sorted(items)
    except TypeError:  # mixed kinds: still a stable order
        return sorted(items, key=lambda v: (type(v).__name__, str(v)))


def _hashable(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) else str(value)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
