"""Performance from feedback: metrics equal scikit-learn's, windows, slices, edge cases."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm

from modelyard.errors import InvalidInput
from modelyard.monitoring import PredictionLog
from modelyard.monitoring.config import MonitorConfig
from modelyard.monitoring.feedback import FeedbackService
from modelyard.monitoring.performance import PerformanceReport, performance
from modelyard.workspace import Workspace

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # midnight: hour windows start on the hour
START, END = T0 - timedelta(days=1), T0 + timedelta(days=1)
LOOKBACK = timedelta(days=3650)  # the fixed test times are far from now


def labelled(
    ws: Workspace,
    rows: Sequence[dict[str, Any]],
    *,
    endpoint: str = "churn",
) -> None:
    """Log each row as a one-row request through a real prediction log, then post its label.

    A row: ``inputs`` and ``outputs`` (name -> scalar or list), ``label``, and optionally
    ``at`` (default T0 + i seconds) and ``version`` (default 1).
    """
    plog = PredictionLog(ws, flush_seconds=3600)
    plog.start()
    for i, row in enumerate(rows):
        plog.log(
            endpoint=endpoint,
            model="m",
            version=row.get("version", 1),
            request_id=f"r{i}",
            inputs={k: np.asarray([v]) for k, v in row["inputs"].items()},
            outputs={k: np.asarray([v]) for k, v in row["outputs"].items()},
            rows=1,
            latency_ms=1.0,
            at=row.get("at", T0 + timedelta(seconds=i)),
        )
    plog.close()
    items = [{"request_id": f"r{i}", "label": row["label"]} for i, row in enumerate(rows)]
    FeedbackService(ws).submit(endpoint, items, lookback=LOOKBACK)


def binary_rows(n: int, seed: int = 1, **extra: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A noisy binary classifier: rows to log and the raw arrays to check against."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p1 = np.clip(0.5 * y + rng.uniform(0, 0.6, n) - 0.05, 0.01, 0.99).astype(np.float32)
    pred = (p1 >= 0.5).astype(np.int64)
    age = rng.integers(18, 90, n)
    plan = rng.choice(["basic", "pro", "team"], n)
    rows = [
        {
            "inputs": {"age": int(age[i]), "plan": str(plan[i])},
            "outputs": {
                "predictions": int(pred[i]),
                "probabilities": np.array([1 - p1[i], p1[i]], dtype=np.float32),
            },
            "label": int(y[i]),
            **extra,
        }
        for i in range(n)
    ]
    return rows, {"y": y, "pred": pred, "p1": p1, "age": age, "plan": plan}


def assert_json_safe(report: PerformanceReport) -> None:
    text = report.model_dump_json()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text)


def test_binary_metrics_equal_sklearn(any_workspace: Workspace) -> None:
    rows, raw = binary_rows(200)
    labelled(any_workspace, rows)
    report = performance(any_workspace, "churn", start=START, end=END)
    assert report.task == "classification"
    assert (report.prediction, report.probabilities) == ("predictions", "probabilities")
    assert report.classes == [0, 1] and report.positive_label == 1
    [window] = report.windows
    assert (window.window_start, window.window_end) == (START, END)
    assert window.version == 1 and window.samples == 200 and window.status == "ok"
    y, pred = raw["y"], raw["pred"]
    proba = np.stack([1 - raw["p1"], raw["p1"]], axis=1).astype(np.float64)
    proba /= proba.sum(axis=1, keepdims=True)
    expected = {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred),
        "recall": skm.recall_score(y, pred),
        "f1": skm.f1_score(y, pred),
        "roc_auc": skm.roc_auc_score(y, raw["p1"]),
        "log_loss": skm.log_loss(y, proba),
    }
    assert window.metrics == pytest.approx(expected, rel=1e-6)
    assert window.reasons == {}
    assert window.confusion is not None
    assert window.confusion.labels == [0, 1]
    assert window.confusion.matrix == skm.confusion_matrix(y, pred).tolist()
    assert_json_safe(report)


def test_multiclass_string_labels_use_macro_averages(any_workspace: Workspace) -> None:
    rng = np.random.default_rng(3)
    classes = ["bird", "cat", "dog"]
    n = 150
    y = rng.choice(classes, n)
    raw = rng.dirichlet([1, 1, 1], n)
    raw[np.arange(n), [classes.index(c) for c in y]] += 0.8  # mostly right
    proba = (raw / raw.sum(axis=1, keepdims=True)).astype(np.float32)
    pred = np.array(classes)[proba.argmax(axis=1)]
    rows = [
        {
            "inputs": {"x": float(i)},
            "outputs": {"label": str(pred[i]), "scores": proba[i]},
            "label": str(y[i]),
        }
        for i in range(n)
    ]
    labelled(any_workspace, rows)
    report = performance(any_workspace, "churn", start=START, end=END)
    assert report.task == "classification"
    assert report.probabilities == "scores"  # the one list-valued output
    assert report.classes == classes and report.positive_label is None
    [window] = report.windows
    p64 = proba.astype(np.float64)
    p64 /= p64.sum(axis=1, keepdims=True)
    expected = {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, average="macro"),
        "recall": skm.recall_score(y, pred, average="macro"),
        "f1": skm.f1_score(y, pred, average="macro"),
        "roc_auc": skm.roc_auc_score(y, p64, multi_class="ovr", labels=classes),
        "log_loss": skm.log_loss(y, p64, labels=classes),
    }
    assert window.metrics == pytest.approx(expected, rel=1e-6)
    assert window.confusion is not None
    assert window.confusion.matrix == skm.confusion_matrix(y, pred, labels=classes).tolist()


def test_windows_split_by_time_and_version(any_workspace: Workspace) -> None:
    rows, raw = binary_rows(120)
    # Hour 0: versions 1 and 2; hour 1: version 1 only; one row just before midnight.
    for i, row in enumerate(rows):
        row["at"] = T0 + timedelta(minutes=i) if i < 119 else T0 - timedelta(seconds=1)
        row["version"] = 2 if i < 60 and i % 2 else 1
    labelled(any_workspace, rows)
    report = performance(
        any_workspace,
        "churn",
        start=T0 - timedelta(hours=1),
        end=T0 + timedelta(hours=2),
        granularity=3600,
        min_samples=10,
    )
    got = [(w.window_start, w.version, w.samples, w.status) for w in report.windows]
    assert got == [
        (T0 - timedelta(hours=1), 1, 1, "insufficient"),
        (T0, 1, 30, "ok"),
        (T0, 2, 30, "ok"),
        (T0 + timedelta(hours=1), 1, 59, "ok"),
    ]
    assert all(w.window_end - w.window_start == timedelta(hours=1) for w in report.windows)
    hour1 = report.windows[3]
    idx = np.arange(60, 119)
    assert hour1.metrics["accuracy"] == pytest.approx(
        skm.accuracy_score(raw["y"][idx], raw["pred"][idx])
    )
    pooled = performance(
        any_workspace, "churn", start=START, end=END, granularity=3600, by_version=False
    )
    assert [(w.window_start, w.version, w.samples) for w in pooled.windows] == [
        (T0 - timedelta(hours=1), None, 1),
        (T0, None, 60),
        (T0 + timedelta(hours=1), None, 59),
    ]
    only_v2 = performance(any_workspace, "churn", start=START, end=END, version=2)
    assert [(w.version, w.samples) for w in only_v2.windows] == [(2, 30)]
    # A range that holds no labelled prediction: no windows, no task.
    empty = performance(
        any_workspace, "churn", start=T0 + timedelta(days=5), end=T0 + timedelta(days=6)
    )
    assert empty.task is None and empty.windows == []


def test_slices_by_category_and_by_quartile(any_workspace: Workspace) -> None:
    rows, raw = binary_rows(400, seed=5)
    labelled(any_workspace, rows)
    y, pred, age, plan = raw["y"], raw["pred"], raw["age"], raw["plan"]

    by_plan = performance(any_workspace, "churn", start=START, end=END, slice_by="plan")
    [window] = by_plan.windows
    slices = {s.value: s for s in window.slices}
    assert set(slices) == {"basic", "pro", "team"}
    assert sum(s.samples for s in window.slices) == 400
    for value, s in slices.items():
        assert s.kind == "value" and s.feature == "plan"
        mask = plan == value
        assert s.samples == int(mask.sum())
        assert s.metrics["recall"] == pytest.approx(skm.recall_score(y[mask], pred[mask]))
        assert s.metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(y[mask], raw["p1"][mask]))

    by_age = performance(any_workspace, "churn", start=START, end=END, slice_by="age")
    [window] = by_age.windows
    edges = np.quantile(age, [0, 0.25, 0.5, 0.75, 1])
    assert [s.kind for s in window.slices] == ["range"] * 4
    assert [(s.low, s.high) for s in window.slices] == [
        (pytest.approx(edges[i]), pytest.approx(edges[i + 1])) for i in range(4)
    ]
    for i, s in enumerate(window.slices):
        upper = age <= edges[4] if i == 3 else age < edges[i + 1]
        mask = (age >= edges[i]) & upper
        assert s.samples == int(mask.sum())
        assert s.metrics["accuracy"] == pytest.approx(skm.accuracy_score(y[mask], pred[mask]))
    assert sum(s.samples for s in window.slices) == 400

    with pytest.raises(InvalidInput, match=r"no input 'agee'.*age, plan"):
        performance(any_workspace, "churn", start=START, end=END, slice_by="agee")


def test_bias_between_groups_shows_in_slices(workspace: Workspace) -> None:
    # The model is right for "a" and always wrong for "b".
    rows = []
    for i in range(80):
        group, label = "ab"[i % 2], (i // 2) % 2
        predicted = label if group == "a" else 1 - label
        rows.append(
            {"inputs": {"group": group}, "outputs": {"predictions": predicted}, "label": label}
        )
    labelled(workspace, rows)
    report = performance(workspace, "churn", start=START, end=END, slice_by="group")
    accuracy = {s.value: s.metrics["accuracy"] for s in report.windows[0].slices}
    assert accuracy == {"a": 1.0, "b": 0.0}
    assert report.windows[0].metrics["accuracy"] == 0.5


def test_insufficient_and_undefined_metrics(any_workspace: Workspace) -> None:
    # Five rows, every label 1: too few samples, and ROC AUC undefined (one class).
    rows = [
        {
            "inputs": {"x": float(i)},
            "outputs": {"predictions": 1, "probabilities": [0.2, 0.8]},
            "label": 1,
        }
        for i in range(5)
    ]
    labelled(any_workspace, rows)
    report = performance(any_workspace, "churn", start=START, end=END)
    [window] = report.windows
    assert window.samples == 5 and window.status == "insufficient"
    assert window.metrics["accuracy"] == 1.0  # shown, but flagged by the status
    assert window.metrics["roc_auc"] is None
    assert "one class" in window.reasons["roc_auc"]
    assert window.metrics["log_loss"] == pytest.approx(-math.log(0.8))
    assert_json_safe(report)

    # Nothing predicted or labelled positive: precision, recall and F1 are undefined.
    neg = performance(
        any_workspace, "churn", start=START, end=END, config=MonitorConfig(positive_label=0)
    )
    window = neg.windows[0]
    assert neg.positive_label == 0
    assert window.metrics["precision"] is None and window.metrics["recall"] is None
    assert window.metrics["f1"] is None
    assert "no row was predicted 0" in window.reasons["precision"]
    assert_json_safe(neg)


def test_positive_label_and_task_from_config(workspace: Workspace) -> None:
    rows, raw = binary_rows(100, seed=9)
    labelled(workspace, rows)
    y, pred = raw["y"], raw["pred"]
    report = performance(
        workspace, "churn", start=START, end=END, config=MonitorConfig(positive_label="0")
    )
    metrics = report.windows[0].metrics
    assert report.positive_label == 0  # "0" matched to the integer class
    assert metrics["precision"] == pytest.approx(skm.precision_score(y, pred, pos_label=0))
    assert metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(y == 0, 1 - raw["p1"]))

    unknown = performance(
        workspace, "churn", start=START, end=END, config=MonitorConfig(positive_label="yes")
    )
    assert unknown.windows[0].metrics["f1"] is None
    assert "positive label 'yes'" in unknown.windows[0].reasons["f1"]

    forced = performance(
        workspace, "churn", start=START, end=END, config=MonitorConfig(task="regression")
    )
    assert forced.task == "regression"
    assert forced.windows[0].metrics["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))


def test_regression_metrics_equal_sklearn(any_workspace: Workspace) -> None:
    rng = np.random.default_rng(11)
    n = 80
    x = rng.uniform(0, 10, n)
    y = 3 * x + rng.normal(0, 2, n)
    pred = 3 * x + 1
    rows = [
        {"inputs": {"x": float(x[i])}, "outputs": {"value": float(pred[i])}, "label": float(y[i])}
        for i in range(n)
    ]
    labelled(any_workspace, rows)
    report = performance(any_workspace, "churn", start=START, end=END, slice_by="x")
    assert report.task == "regression" and report.classes is None
    [window] = report.windows
    assert window.metrics == pytest.approx(
        {
            "mae": skm.mean_absolute_error(y, pred),
            "rmse": math.sqrt(skm.mean_squared_error(y, pred)),
            "r2": skm.r2_score(y, pred),
        }
    )
    assert window.confusion is None
    assert len(window.slices) == 4 and sum(s.samples for s in window.slices) == n


def test_regression_with_constant_labels_has_no_r2(workspace: Workspace) -> None:
    rows = [
        {"inputs": {"x": float(i)}, "outputs": {"value": 1.5 + i}, "label": 2.0} for i in range(3)
    ]
    labelled(workspace, rows)
    [window] = performance(workspace, "churn", start=START, end=END).windows
    assert window.metrics["r2"] is None and "same" in window.reasons["r2"]
    assert window.metrics["mae"] == pytest.approx(
        skm.mean_absolute_error([2.0] * 3, [1.5, 2.5, 3.5])
    )


def test_auto_task_integer_labels(workspace: Workspace) -> None:
    # Integer labels among the integer predictions: classes (no probabilities output).
    classes = [
        {"inputs": {"x": 1.0}, "outputs": {"y": i % 3}, "label": (i + i // 4) % 3}
        for i in range(30)
    ]
    labelled(workspace, classes, endpoint="tickets")
    report = performance(workspace, "tickets", start=START, end=END)
    assert report.task == "classification"
    assert set(report.windows[0].metrics) == {"accuracy", "precision", "recall", "f1"}
    # Integer counts a regressor predicts, with labels it never predicted: regression.
    counts = [{"inputs": {"x": 1.0}, "outputs": {"y": i}, "label": i + 7} for i in range(30)]
    labelled(workspace, counts, endpoint="visits")
    assert performance(workspace, "visits", start=START, end=END).task == "regression"


def test_unknown_class_order_and_explicit_classes(workspace: Workspace) -> None:
    # Three probability columns but only two string classes seen: the order is unknown.
    rows = [
        {
            "inputs": {"x": 1.0},
            "outputs": {"label": "a" if i % 2 else "b", "probabilities": [0.6, 0.3, 0.1]},
            "label": "a" if i % 3 else "b",
        }
        for i in range(12)
    ]
    labelled(workspace, rows)
    report = performance(workspace, "churn", start=START, end=END)
    window = report.windows[0]
    assert report.classes is None
    assert window.metrics["roc_auc"] is None and window.metrics["log_loss"] is None
    assert "class order" in window.reasons["log_loss"]
    assert window.metrics["accuracy"] is not None
    given = performance(workspace, "churn", start=START, end=END, classes=["a", "b", "c"])
    assert given.classes == ["a", "b", "c"]
    y = ["a" if i % 3 else "b" for i in range(12)]
    assert given.windows[0].metrics["log_loss"] == pytest.approx(
        skm.log_loss(y, [[0.6, 0.3, 0.1]] * 12, labels=["a", "b", "c"])
    )


def test_bad_arguments(workspace: Workspace) -> None:
    with pytest.raises(InvalidInput, match="end must be after start"):
        performance(workspace, "churn", start=END, end=START)
    with pytest.raises(InvalidInput, match="granularity"):
        performance(workspace, "churn", start=START, end=END, granularity=0)
