"""Deadlines and effective accuracy: exact figures per window, from labels, from a version's
quality, unweighted; per variant; alert rules on them; version_quality; status everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression

from modelyard import Client
from modelyard.errors import InvalidInput, NotFound
from modelyard.monitoring import PredictionLog
from modelyard.monitoring.entities import DeadlineSummary, VariantDeadline
from modelyard.monitoring.windows import floor_time
from modelyard.workspace import Workspace

# Recent: feedback's default lookback (30 days) and version quality's (7 days) reach it.
T0 = floor_time(datetime.now(UTC) - timedelta(days=1), 3600)
ENDPOINT = "fraud"
DEADLINE = 50.0
X = pd.DataFrame({"f0": [0.0, 1.0, 2.0, 3.0], "f1": [1.0, 0.0, 1.0, 0.0]})
MODEL = LogisticRegression().fit(X, [0, 1, 0, 1])


@dataclass
class Request:
    rid: str
    model: str
    variant: str | None
    latency: float
    predicted: int | None = None  # None: failed (logged with ``status``)
    label: int | None = None
    deadline: float | None = DEADLINE
    status: int = 200
    version: int = 1


def scenario() -> list[Request]:
    """20 requests with a deadline: the accurate variant answers 8 in time (7 right) and 2
    late (right, but late); the fast one answers 8 in time (6 right); 2 are shed. Besides:
    one answer without a deadline and one refused as the caller's error."""
    requests = []
    for i in range(8):
        requests.append(Request(f"a{i}", "fraud", "accurate", 20.0, 1, 1 if i < 7 else 0))
    for i in range(2):
        requests.append(Request(f"late{i}", "fraud", "accurate", 80.0, 1, 1))
    for i in range(8):
        requests.append(Request(f"f{i}", "fraud-small", "fast", 5.0, 1, 1 if i < 6 else 0))
    for i in range(2):
        requests.append(Request(f"shed{i}", "fraud", None, 0.5, status=503, version=0))
    requests.append(Request("plain", "fraud", "accurate", 300.0, 1, 0, deadline=None))
    requests.append(Request("bad", "fraud", "accurate", 1.0, status=422))
    return requests


def register(ws: Workspace, name: str, accuracy: float | None) -> None:
    """Register version 1 of ``name``, evaluated by a run that logged ``accuracy``."""
    run_id = None
    if accuracy is not None:
        run = ws.tracking.start_run("evaluation", name=name)
        ws.tracking.log_metrics(run.id, {"accuracy": accuracy})
        ws.tracking.end_run(run.id)
        run_id = run.id
    client = Client(settings=ws.settings)
    client.log_model(MODEL, name, input_example=X, run_id=run_id)
    client.close()


def setup(ws: Workspace, *, small_accuracy: float | None = 0.8) -> None:
    register(ws, "fraud", 0.9)
    register(ws, "fraud-small", small_accuracy)
    ws.endpoints.create(ENDPOINT, "models:/fraud/1")
    ws.monitoring.configure(ENDPOINT, {"granularities": [300, 3600]})


def log(ws: Workspace, requests: list[Request], start: datetime = T0) -> None:
    """Log ``requests`` through a real prediction log, a second apart from ``start``."""
    plog = PredictionLog(ws, flush_seconds=3600)
    plog.start()
    for i, r in enumerate(requests):
        at = start + timedelta(seconds=i)
        if r.predicted is None:
            assert plog.log_error(
                endpoint=ENDPOINT,
                model=r.model,
                version=r.version,
                request_id=r.rid,
                status=r.status,
                latency_ms=r.latency,
                at=at,
                variant=r.variant,
                deadline_ms=r.deadline,
            )
        else:
            assert plog.log(
                endpoint=ENDPOINT,
                model=r.model,
                version=r.version,
                request_id=r.rid,
                inputs={"amount": np.array([float(i)])},
                outputs={"predictions": np.array([r.predicted])},
                rows=1,
                latency_ms=r.latency,
                at=at,
                variant=r.variant,
                deadline_ms=r.deadline,
            )
    plog.close()


def label(ws: Workspace, requests: list[Request]) -> None:
    items = [{"request_id": r.rid, "label": r.label} for r in requests if r.label is not None]
    result = ws.monitoring.submit_feedback(ENDPOINT, items)
    assert result.stored == len(items)


def five_minutes(ws: Workspace) -> DeadlineSummary | None:
    [status] = ws.monitoring.status(ENDPOINT)
    window = next(w for w in status.windows if w.granularity == 300)
    return window.deadline


def variants(summary: DeadlineSummary) -> dict[str | None, VariantDeadline]:
    return {v.variant: v for v in summary.variants}


def test_effective_accuracy_counts_the_right_answers_in_time(any_workspace: Workspace) -> None:
    ws = any_workspace
    setup(ws)
    requests = scenario()
    log(ws, requests)
    label(ws, requests)
    assert not ws.monitoring.run_once(T0 + timedelta(minutes=6)).errors

    summary = five_minutes(ws)
    assert summary is not None
    assert (summary.requests, summary.met, summary.late, summary.failed) == (20, 16, 2, 2)
    assert summary.deadline_met_rate == 0.8
    # 7 + 6 right answers in time of 20 requests: late right answers and shed requests count
    # as wrong, the answer without a deadline and the refused request not at all.
    assert summary.effective_accuracy == pytest.approx(13 / 20, abs=1e-12)
    assert summary.basis == "feedback" and summary.metric == "accuracy" and summary.note == ""
    assert summary.labelled == 16  # the labelled answers in time
    by = variants(summary)
    assert set(by) == {"accurate", "fast", None}
    accurate, fast, shed = by["accurate"], by["fast"], by[None]
    assert (accurate.model, accurate.version, accurate.requests, accurate.met) == (
        "fraud",
        1,
        10,
        8,
    )
    assert (accurate.share, accurate.met_rate, accurate.failed) == (0.5, 0.8, 0)
    assert accurate.quality == 7 / 8 and accurate.quality_source == "window"
    assert accurate.quality_samples == 8
    assert (fast.model, fast.requests, fast.met, fast.share, fast.met_rate) == (
        "fraud-small",
        8,
        8,
        0.4,
        1.0,
    )
    assert fast.quality == 0.75 and fast.quality_source == "window"
    assert (shed.model, shed.version, shed.requests, shed.met, shed.failed) == ("fraud", 0, 2, 0, 2)
    assert shed.share == 0.1 and shed.met_rate == 0.0 and shed.quality is None

    # The hour, merged from its 5-minute windows, has the same figures.
    ws.monitoring.run_once(T0 + timedelta(hours=1, minutes=1))
    [status] = ws.monitoring.status(ENDPOINT)
    hour = next(w for w in status.windows if w.granularity == 3600)
    assert hour.window_start == T0 and hour.deadline is not None
    assert hour.deadline.model_dump() == summary.model_dump()


def test_without_labels_answers_are_weighed_by_their_runs_metric(workspace: Workspace) -> None:
    setup(workspace)
    log(workspace, scenario())
    workspace.monitoring.run_once(T0 + timedelta(minutes=6))
    summary = five_minutes(workspace)
    assert summary is not None and summary.basis == "quality"
    # (8 in time x 0.9 + 8 in time x 0.8) / 20
    assert summary.effective_accuracy == pytest.approx((8 * 0.9 + 8 * 0.8) / 20, abs=1e-12)
    assert summary.labelled == 0
    by = variants(summary)
    assert (by["accurate"].quality, by["accurate"].quality_source) == (0.9, "run")
    assert (by["fast"].quality, by["fast"].quality_source) == (0.8, "run")
    assert by["fast"].quality_samples is None


def test_an_unknown_quality_leaves_the_share_in_time_unweighted(workspace: Workspace) -> None:
    setup(workspace, small_accuracy=None)  # the fast variant has no evaluation run
    log(workspace, scenario())
    workspace.monitoring.run_once(T0 + timedelta(minutes=6))
    summary = five_minutes(workspace)
    assert summary is not None and summary.basis == "unweighted"
    assert summary.effective_accuracy == summary.deadline_met_rate == 0.8
    assert "models:/fraud-small/1" in summary.note and "unweighted" in summary.note
    assert variants(summary)["fast"].quality is None


def test_quality_from_recent_feedback_tells_models_with_one_version_number_apart(
    workspace: Workspace,
) -> None:
    """Labels of earlier traffic weigh a window that has none; fraud/1 and fraud-small/1 are
    different versions although both are version 1."""
    setup(workspace)
    earlier = T0 - timedelta(hours=2)
    history = [
        Request(f"h{i}", "fraud", None, 1.0, 1, 1 if i < 190 else 0, deadline=None)
        for i in range(200)
    ] + [
        Request(f"k{i}", "fraud-small", None, 1.0, 1, 1 if i < 140 else 0, deadline=None)
        for i in range(200)
    ]
    log(workspace, history, start=earlier)
    label(workspace, history)
    log(workspace, scenario())
    m = workspace.monitoring

    assert m.version_quality(ENDPOINT, "fraud", 1) == (0.95, 200)
    assert m.version_quality(ENDPOINT, "fraud-small", 1) == (0.7, 200)
    assert m.version_quality(ENDPOINT, "fraud-small", 2) is None  # no labels
    assert m.version_quality(ENDPOINT, "fraud", 1, min_samples=201) is None
    assert m.version_quality(ENDPOINT, "fraud", 1, since=T0) is None  # none since T0
    # The newest labels only, when asked for fewer.
    assert m.version_quality(ENDPOINT, "fraud", 1, max_samples=20, min_samples=20) == (0.5, 20)
    truth = [1] * 140 + [0] * 60
    f1 = m.version_quality(ENDPOINT, "fraud-small", 1, "f1")
    assert f1 == (pytest.approx(skm.f1_score(truth, [1] * 200)), 200)

    m.run_once(T0 + timedelta(minutes=6))
    summary = five_minutes(workspace)
    assert summary is not None and summary.basis == "quality"
    assert summary.effective_accuracy == pytest.approx((8 * 0.95 + 8 * 0.7) / 20, abs=1e-12)
    by = variants(summary)
    assert (by["accurate"].quality, by["accurate"].quality_source) == (0.95, "feedback")
    assert (by["fast"].quality, by["fast"].quality_samples) == (0.7, 200)


def test_version_quality_errors_say_what_to_fix(workspace: Workspace) -> None:
    setup(workspace)
    requests = scenario()
    log(workspace, requests)
    label(workspace, requests)
    m = workspace.monitoring
    assert m.version_quality(ENDPOINT, "fraud", 1, min_samples=5) == (
        pytest.approx(9 / 11),  # the late answers and the one without a deadline count too
        11,
    )
    with pytest.raises(InvalidInput, match="use one of accuracy"):
        m.version_quality(ENDPOINT, "fraud", 1, "precision@5")
    with pytest.raises(InvalidInput, match="not 'r2'"):  # classification labels
        m.version_quality(ENDPOINT, "fraud", 1, "r2", min_samples=1)
    with pytest.raises(InvalidInput, match="min_samples"):
        m.version_quality(ENDPOINT, "fraud", 1, min_samples=0)
    with pytest.raises(InvalidInput, match="must be before"):
        m.version_quality(ENDPOINT, "fraud", 1, since=T0, until=T0)
    with pytest.raises(NotFound, match="nope"):
        m.version_quality("nope", "fraud", 1)


def rule(name: str, metric: str, op: str, threshold: float, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "endpoint": ENDPOINT,
        "kind": "deadline",
        "metric": metric,
        "op": op,
        "threshold": threshold,
        "window": 300,
        "min_samples": 10,
        **extra,
    }


def test_alert_rules_on_deadline_metrics_fire(workspace: Workspace) -> None:
    setup(workspace)
    requests = scenario()
    log(workspace, requests)
    label(workspace, requests)
    m = workspace.monitoring
    m.create_rule(rule("effective", "effective_accuracy", "<", 0.7))
    m.create_rule(rule("in-time", "deadline_met_rate", "<", 0.9))
    m.create_rule(rule("accurate-late", "deadline_met_rate.accurate", "<", 0.9))
    m.create_rule(rule("fast-busy", "variant_share.fast", ">", 0.5))  # 0.4: quiet
    m.create_rule(rule("few", "effective_accuracy", "<", 0.7, min_samples=21))  # 20: too few
    m.create_rule(rule("traffic", "deadline_requests", ">=", 20))
    assert not m.run_once(T0 + timedelta(minutes=6)).errors
    fired = {a.rule: a for a in m.list_alerts(ENDPOINT)}
    assert set(fired) == {"effective", "in-time", "accurate-late", "traffic"}
    assert fired["effective"].value == pytest.approx(0.65, abs=1e-12)
    assert fired["effective"].samples == 20
    assert fired["effective"].evidence["observation"]["deadline_met_rate"] == 0.8
    assert fired["in-time"].value == 0.8
    assert (fired["accurate-late"].value, fired["accurate-late"].samples) == (0.8, 10)
    assert fired["traffic"].value == 20

    for bad, why in (
        (rule("x", "accuracy", "<", 1), "does not fit kind 'deadline'"),
        (rule("x", "variant_share", ">", 1), "variant_share.<variant>"),
        (rule("x", "effective_accuracy.fast", "<", 1), "deadline_met_rate.<variant>"),
    ):
        with pytest.raises(InvalidInput, match=why):
            m.create_rule(bad)


def test_late_labels_reevaluate_effective_accuracy(workspace: Workspace) -> None:
    setup(workspace)
    requests = scenario()
    log(workspace, requests)
    m = workspace.monitoring
    m.create_rule(rule("effective", "effective_accuracy", "<", 0.66))
    first = m.run_once(T0 + timedelta(minutes=6))
    assert first.windows_closed == 1 and m.list_alerts(ENDPOINT) == []  # 0.68 from the runs

    label(workspace, requests)  # the truth: 0.65
    later = m.run_once(T0 + timedelta(minutes=7))
    assert later.windows_reevaluated >= 1 and not later.errors
    [alert] = m.list_alerts(ENDPOINT)
    assert alert.value == pytest.approx(0.65, abs=1e-12)
    assert alert.window_start == T0 and alert.evidence["late_labels"] is True


def test_traffic_without_deadlines_has_no_deadline_figures(workspace: Workspace) -> None:
    setup(workspace)
    plain = [Request(f"p{i}", "fraud", None, 1.0, 1, 1, deadline=None) for i in range(40)]
    log(workspace, plain)
    m = workspace.monitoring
    m.create_rule(rule("in-time", "deadline_met_rate", "<", 1.0, min_samples=0))
    m.run_once(T0 + timedelta(minutes=6))
    assert five_minutes(workspace) is None
    assert m.list_alerts(ENDPOINT) == []  # no deadline metric: the window is insufficient
    contents = [c for _, c in m.windows.contents(ENDPOINT, 300, T0, T0 + timedelta(minutes=5))]
    observation, _ = m.observe(ENDPOINT, 300, T0, contents, m.get_config(ENDPOINT))
    assert observation["requests"] == 40 and "effective_accuracy" not in observation


def test_status_over_the_sdk(workspace: Workspace, client: Client) -> None:
    setup(workspace)
    requests = scenario()
    log(workspace, requests)
    label(workspace, requests)
    workspace.monitoring.run_once(T0 + timedelta(minutes=6))
    [status] = client.monitoring.status(ENDPOINT)
    window = next(w for w in status.windows if w.granularity == 300)
    assert window.deadline is not None
    assert window.deadline.model_dump() == five_minutes(workspace).model_dump()  # type: ignore[union-attr]


def test_cli_status_shows_deadlines_and_variants(workspace: Workspace, tmp_path: Path, run) -> None:  # type: ignore[no-untyped-def]
    assert workspace.settings.resolved_home == (tmp_path / "home").resolve()
    setup(workspace)
    requests = scenario()
    log(workspace, requests)
    label(workspace, requests)
    workspace.monitoring.run_once(T0 + timedelta(minutes=6))
    out = run("monitor", "status", ENDPOINT).stdout
    assert "eff. accuracy" in out and "65.00% (feedback)" in out and "80.00%" in out
    assert "variants" in out and "models:/fraud-small/1" in out and "accurate" in out
    out = run("monitor", "status", ENDPOINT, "--json").stdout
    assert '"effective_accuracy": 0.65' in out and '"basis": "feedback"' in out


def test_a_window_where_every_request_was_shed(workspace: Workspace) -> None:
    """Shed requests are logged as version 0 (no variant chose them): a window of nothing
    else is judged (its rules fire) and shown, not an error."""
    setup(workspace)
    workspace.monitoring.create_rule(rule("in-time", "deadline_met_rate", "<", 0.5))
    shed = [Request(f"s{i}", "fraud", None, 0.5, status=503, version=0) for i in range(30)]
    log(workspace, shed)
    result = workspace.monitoring.run_once(T0 + timedelta(minutes=6))
    assert not result.errors, result.errors
    summary = five_minutes(workspace)
    assert summary is not None
    assert (summary.requests, summary.met, summary.failed) == (30, 0, 30)
    assert summary.deadline_met_rate == 0.0
    [alert] = workspace.monitoring.list_alerts(ENDPOINT)
    assert alert.rule == "in-time" and alert.value == 0.0
    with pytest.raises(NotFound, match="every request there failed or was refused"):
        workspace.monitoring.drift(ENDPOINT, start=T0, end=T0 + timedelta(minutes=5))
