"""KPI evaluation per endpoint window: breaches by direction, not measurable, upserts,
history, and KPI values feeding alert rules of kind ``kpi``."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from modelyard.errors import InvalidInput, NotFound
from modelyard.monitoring.alerts import AlertService
from modelyard.monitoring.kpis import (
    KpiEvaluation,
    evaluate_kpis,
    is_breached,
    kpi_history,
    kpi_observation,
    kpi_samples,
)
from modelyard.projects.entities import KPI, Project
from modelyard.store.tables import KpiEvaluationRow
from modelyard.workspace import Workspace

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
W = 3600


def window(i: int) -> datetime:
    return T0 + timedelta(seconds=W * i)


def churn(ws: Workspace) -> Project:
    return ws.projects.create(
        "churn",
        kpis=[
            KPI(name="accuracy", target=0.9, direction="maximize"),
            KPI(name="p99", target=50, direction="minimize", unit="ms", metric="latency_p99_ms"),
            KPI(name="conversion", target=0.03, direction="maximize", unit="%"),
            KPI(name="revenue", target=1000, direction="maximize"),
        ],
    )


def test_breach_by_direction_and_not_measurable(any_workspace: Workspace) -> None:
    ws = any_workspace
    project = churn(ws)
    observation = {"accuracy": 0.85, "latency_p99_ms": 50.0, "conversion": None, "rows": 900}
    evals = evaluate_kpis(ws, "churn", "churn-ep", W, window(0), observation, now=window(1))
    assert [(e.kpi, e.value, e.breached) for e in evals] == [
        ("accuracy", 0.85, True),  # below the target to maximise
        ("p99", 50.0, False),  # at the target is not a miss
        ("conversion", None, None),  # in the observation but unmeasured
        ("revenue", None, None),  # not in the observation at all
    ]
    p99 = evals[1]
    assert (p99.metric, p99.direction, p99.unit, p99.target) == (
        "latency_p99_ms",
        "minimize",
        "ms",
        50.0,
    )
    assert (p99.project, p99.project_id, p99.endpoint) == ("churn", project.id, "churn-ep")
    assert (p99.window, p99.window_start, p99.window_end) == (W, window(0), window(1))
    assert p99.evaluated_at == window(1)
    assert KpiEvaluation.model_validate_json(p99.model_dump_json()) == p99

    later = evaluate_kpis(ws, project.id, "churn-ep", W, window(1), {"latency_p99_ms": 51})
    assert later[1].breached is True  # by id too; above the target to minimise
    assert (
        evaluate_kpis(ws, "churn", "e", W, window(0), {"accuracy": float("nan")})[0].breached
        is None
    )


def test_is_breached() -> None:
    up = KPI(name="auc", target=0.8, direction="maximize")
    down = KPI(name="cost", target=2, direction="minimize")
    assert (is_breached(up, 0.79), is_breached(up, 0.8), is_breached(up, None)) == (
        True,
        False,
        None,
    )
    assert (is_breached(down, 2.1), is_breached(down, 2.0)) == (True, False)


def test_re_evaluating_a_window_replaces_it(any_workspace: Workspace) -> None:
    ws = any_workspace
    churn(ws)
    first = evaluate_kpis(ws, "churn", "ep", W, window(0), {"accuracy": 0.5})
    second = evaluate_kpis(ws, "churn", "ep", W, window(0), {"accuracy": 0.95, "revenue": 5})
    assert [e.id for e in second] == [e.id for e in first]  # updated in place
    assert [(e.kpi, e.value, e.breached) for e in second if e.value is not None] == [
        ("accuracy", 0.95, False),
        ("revenue", 5.0, True),
    ]
    # Another endpoint or granularity is another window.
    evaluate_kpis(ws, "churn", "ep2", W, window(0), {"accuracy": 0.5})
    evaluate_kpis(ws, "churn", "ep", 300, window(0), {"accuracy": 0.5})
    with ws.store.read() as s:
        assert s.query(KpiEvaluationRow).count() == 12

    # A KPI removed from the project drops out of a re-evaluated window.
    ws.projects.update("churn", kpis=[KPI(name="accuracy", target=0.9, direction="maximize")])
    again = evaluate_kpis(ws, "churn", "ep", W, window(0), {"accuracy": 0.7})
    assert [(e.kpi, e.value) for e in again] == [("accuracy", 0.7)]
    assert len(kpi_history(ws, "churn", endpoint="ep", window=W)) == 1


def test_concurrent_evaluations_never_duplicate(any_workspace: Workspace) -> None:
    ws = any_workspace
    churn(ws)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            evaluate_kpis(ws, "churn", "ep", W, window(0), {"accuracy": 0.8 + i / 100})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    history = kpi_history(ws, "churn")
    assert len(history) == 4 and round(history[0].value or 0, 2) in (0.8, 0.81, 0.82, 0.83)


def test_history_filters_and_order(any_workspace: Workspace) -> None:
    ws = any_workspace
    churn(ws)
    for i in (2, 0, 1):
        evaluate_kpis(ws, "churn", "ep", W, window(i), {"accuracy": 0.8 + i / 100, "revenue": i})
    evaluate_kpis(ws, "churn", "other", W, window(0), {"accuracy": 0.99})
    everything = kpi_history(ws, "churn")
    assert len(everything) == 16
    assert [e.window_start for e in everything] == sorted(e.window_start for e in everything)
    accuracy = kpi_history(ws, "churn", endpoint="ep", kpi="accuracy")
    assert [e.value for e in accuracy] == pytest.approx([0.8, 0.81, 0.82])
    assert [e.breached for e in accuracy] == [True, True, True]
    assert len(kpi_history(ws, "churn", kpi="accuracy", since=window(1))) == 2
    assert kpi_history(ws, "churn", window=300) == []
    # The definition is read from the project now: a removed KPI has no direction.
    ws.projects.update("churn", kpis=[KPI(name="accuracy", target=0.9, direction="maximize")])
    revenue = kpi_history(ws, "churn", kpi="revenue")
    assert revenue and all(e.direction is None and e.metric is None for e in revenue)


def test_unknown_project_and_bad_input(workspace: Workspace) -> None:
    with pytest.raises(NotFound, match="no project"):
        evaluate_kpis(workspace, "missing", "ep", W, T0, {})
    with pytest.raises(NotFound):
        kpi_history(workspace, "missing")
    churn(workspace)
    with pytest.raises(InvalidInput, match="endpoint"):
        evaluate_kpis(workspace, "churn", "", W, T0, {})
    with pytest.raises(InvalidInput, match="window"):
        evaluate_kpis(workspace, "churn", "ep", 0, T0, {})
    # A project without KPIs evaluates to nothing.
    workspace.projects.create("bare")
    assert evaluate_kpis(workspace, "bare", "ep", W, T0, {"accuracy": 1.0}) == []


def test_kpi_metric_field_keeps_existing_projects_working(workspace: Workspace) -> None:
    project = churn(workspace)
    assert project.kpis[0].metric is None and project.kpis[1].metric == "latency_p99_ms"
    assert workspace.projects.get("churn") == project
    with pytest.raises(ValueError, match="metric"):
        KPI(name="x", target=1, direction="maximize", metric="")


def test_kpi_values_feed_kpi_alert_rules(any_workspace: Workspace) -> None:
    ws = any_workspace
    churn(ws)
    alerts = AlertService(ws)
    alerts.create_rule(
        {
            "name": "conversion-low",
            "endpoint": "ep",
            "kind": "kpi",
            "metric": "kpi.conversion",
            "op": "<",
            "threshold": 0.03,
            "window": W,
            "min_samples": 200,
        }
    )
    observation: dict[str, float | None] = {"conversion": 0.021, "accuracy": 0.95}
    samples = {"conversion": 250, "accuracy": 40, "samples": 1000}
    evals = evaluate_kpis(ws, "churn", "ep", W, window(0), observation)
    assert kpi_observation(evals) == {
        "kpi.accuracy": 0.95,
        "kpi.p99": None,
        "kpi.conversion": 0.021,
        "kpi.revenue": None,
    }
    # Each KPI counts its metric's samples; without one, the window's.
    assert kpi_samples(evals, samples) == {
        "kpi.accuracy": 40,
        "kpi.p99": 1000,
        "kpi.conversion": 250,
        "kpi.revenue": 1000,
    }
    assert kpi_samples(evals, 7) == {f"kpi.{e.kpi}": 7 for e in evals}
    observation.update(kpi_observation(evals))
    [alert] = alerts.evaluate(
        "ep", W, window(0), observation, {**samples, **kpi_samples(evals, samples)}
    )
    assert (alert.kind, alert.metric, alert.value, alert.samples) == (
        "kpi",
        "kpi.conversion",
        0.021,
        250,
    )
