"""Metrics, metric history, search and comparison on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import event

from modelyard.errors import Conflict, InvalidInput, NotFound
from modelyard.tracking.entities import MetricPoint, Run, RunComparison
from modelyard.workspace import Workspace


def test_metric_history_is_ordered_by_step_then_time(any_workspace: Workspace) -> None:
    ws = any_workspace
    run = ws.tracking.start_run("e")
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    ws.tracking.log_metrics(
        run.id,
        [
            MetricPoint(key="loss", value=0.3, step=2, timestamp=t0),
            MetricPoint(key="loss", value=0.9, step=0, timestamp=t0 + timedelta(seconds=5)),
            {"key": "loss", "value": 0.5, "step": 1, "timestamp": t0 + timedelta(seconds=2)},
            MetricPoint(key="loss", value=0.8, step=0, timestamp=t0),
            MetricPoint(key="acc", value=0.1, step=0),
        ],
    )
    history = ws.tracking.get_metric_history(run.id, "loss")
    assert [(p.step, p.value) for p in history] == [(0, 0.8), (0, 0.9), (1, 0.5), (2, 0.3)]
    assert history[0].timestamp == t0
    # Latest = highest step, not last logged.
    assert ws.tracking.get_run(run.id).metrics == {"acc": 0.1, "loss": 0.3}
    assert ws.tracking.get_metric_history(run.id, "unknown") == []


def test_bulk_log_of_1000_points(any_workspace: Workspace) -> None:
    ws = any_workspace
    run = ws.tracking.start_run("e")
    values = np.random.default_rng(0).normal(size=1000)
    ws.tracking.log_metrics(
        run.id, [MetricPoint(key="x", value=float(v), step=i) for i, v in enumerate(values)]
    )
    history = ws.tracking.get_metric_history(run.id, "x")
    assert [p.value for p in history] == values.tolist()
    assert [p.step for p in history] == list(range(1000))
    assert ws.tracking.get_run(run.id).metrics == {"x": values[-1]}


def test_mapping_form_and_special_values(any_workspace: Workspace) -> None:
    ws = any_workspace
    run = ws.tracking.start_run("e")
    ws.tracking.log_metrics(
        run.id, {"nan": float("nan"), "inf": float("-inf"), "np": np.float32(1.5), "i": 3}, step=7
    )
    got = ws.tracking.get_run(run.id)
    assert math.isnan(got.metrics["nan"])
    assert got.metrics["inf"] == float("-inf")
    assert got.metrics["np"] == 1.5 and got.metrics["i"] == 3.0
    assert ws.tracking.get_metric_history(run.id, "np")[0].step == 7
    parsed = Run.model_validate_json(got.model_dump_json())
    assert math.isnan(parsed.metrics["nan"]) and parsed.metrics["inf"] == float("-inf")


def test_metric_errors(any_workspace: Workspace) -> None:
    ws = any_workspace
    run = ws.tracking.start_run("e")
    with pytest.raises(InvalidInput, match="metric 'rmse' has value 'abc'"):
        ws.tracking.log_metrics(run.id, {"ok": 1.0, "rmse": "abc"})
    with pytest.raises(InvalidInput, match="metric 'flag'"):
        ws.tracking.log_metrics(run.id, [{"key": "flag", "value": True}])
    with pytest.raises(InvalidInput, match="metric 'none'"):
        ws.tracking.log_metrics(run.id, {"none": None})
    with pytest.raises(InvalidInput, match="step"):
        ws.tracking.log_metrics(run.id, [{"key": "s", "value": 1.0, "step": 1.5}])
    with pytest.raises(InvalidInput, match="timestamp"):
        ws.tracking.log_metrics(run.id, [{"key": "s", "value": 1.0, "timestamp": "now"}])
    with pytest.raises(InvalidInput, match="metric key"):
        ws.tracking.log_metrics(run.id, {"": 1.0})
    with pytest.raises(InvalidInput, match="metric key"):
        ws.tracking.log_metrics(run.id, [{"key": ["a"], "value": 1.0}])
    with pytest.raises(InvalidInput, match="'key' and a 'value'"):
        ws.tracking.log_metrics(run.id, [{"value": 1.0}])
    # Nothing of a rejected call was stored.
    assert ws.tracking.get_run(run.id).metrics == {}
    with pytest.raises(NotFound, match="no run"):
        ws.tracking.log_metrics("missing", {"a": 1.0})
    with pytest.raises(NotFound):
        ws.tracking.get_metric_history("missing", "a")
    ws.tracking.end_run(run.id)
    with pytest.raises(Conflict, match="is finished; metrics can only be logged to a running run"):
        ws.tracking.log_metrics(run.id, {"late": 1.0})


def _runs(ws: Workspace) -> dict[str, Run]:
    runs = {}
    for name, alpha, rmse, status in [
        ("a", "0.1", 0.9, "finished"),
        ("b", "0.2", 0.4, "finished"),
        ("c", "0.1", 0.2, "failed"),
        ("d", "0.3", None, "running"),
    ]:
        run = ws.tracking.start_run("search", name=name, params={"alpha": alpha}, tags={"n": name})
        if rmse is not None:
            ws.tracking.log_metrics(run.id, [MetricPoint(key="rmse", value=rmse + 1, step=0)])
            ws.tracking.log_metrics(run.id, [MetricPoint(key="rmse", value=rmse, step=1)])
        if status != "running":
            ws.tracking.end_run(run.id, status)
        runs[name] = run
    return runs


def _names(page: object) -> list[str]:
    return [r.name for r in page.items]  # type: ignore[attr-defined]


def test_search_filters_on_latest_metric_params_tags_attributes(any_workspace: Workspace) -> None:
    ws = any_workspace
    _runs(ws)
    search = ws.tracking.search_runs
    assert _names(search("search")) == ["d", "c", "b", "a"]  # newest first
    assert _names(search("search", filter_string="metrics.rmse < 0.5")) == ["c", "b"]
    assert _names(search("search", filter_string="metrics.rmse >= 1.2")) == []
    assert _names(
        search("search", filter_string="metrics.rmse < 0.5 and params.alpha = '0.1'")
    ) == ["c"]
    assert _names(search("search", filter_string='params.alpha != "0.1"')) == ["d", "b"]
    assert _names(search("search", filter_string="tags.n like 'a%'")) == ["a"]
    assert _names(search("search", filter_string="attributes.status = 'failed'")) == ["c"]
    assert _names(search("search", filter_string="metric.`rmse` > 0.3 AND run.name = 'a'")) == ["a"]


def test_search_order_and_pages(any_workspace: Workspace) -> None:
    ws = any_workspace
    _runs(ws)
    search = ws.tracking.search_runs
    assert _names(search("search", order_by="metrics.rmse asc")) == ["c", "b", "a", "d"]
    assert _names(search("search", order_by="metrics.rmse desc")) == ["a", "b", "c", "d"]
    assert _names(search("search", order_by=["params.alpha desc", "name"])) == [
        "d",
        "b",
        "a",
        "c",
    ]
    assert _names(search("search", order_by="start_time")) == ["a", "b", "c", "d"]
    first = search("search", order_by="metrics.rmse", limit=3)
    assert _names(first) == ["c", "b", "a"]
    second = search("search", order_by="metrics.rmse", limit=3, page_token=first.next_page_token)
    assert _names(second) == ["d"] and second.next_page_token is None
    best = search("search", order_by="metrics.rmse", limit=1).items[0]
    assert best.metrics == {"rmse": 0.2} and best.params == {"alpha": "0.1"}


@pytest.mark.parametrize(
    "bad",
    [
        "metrics.rmse < 'x'",
        "metrics.rmse like 0.1",
        "params.alpha < '1'",
        "rmse < 1",
        "secrets.a = '1'",
        "attributes.color = 'x'",
        "metrics.rmse < 1 or params.a = '1'",
        "metrics.rmse < 1; drop table runs",
        "attributes.start_time = '1'",
    ],
)
def test_search_rejects_bad_filters(any_workspace: Workspace, bad: str) -> None:
    any_workspace.tracking.create_experiment("search")
    with pytest.raises(InvalidInput):
        any_workspace.tracking.search_runs("search", filter_string=bad)


def test_search_errors(any_workspace: Workspace) -> None:
    ws = any_workspace
    ws.tracking.create_experiment("search")
    with pytest.raises(NotFound, match="no experiment"):
        ws.tracking.search_runs("missing")
    with pytest.raises(InvalidInput, match="order_by"):
        ws.tracking.search_runs("search", order_by="metrics.rmse sideways")
    with pytest.raises(InvalidInput, match="page_token"):
        ws.tracking.search_runs("search", page_token="xyz")
    with pytest.raises(InvalidInput, match="limit"):
        ws.tracking.search_runs("search", limit=5000)


def test_compare_runs(any_workspace: Workspace) -> None:
    ws = any_workspace
    one = ws.tracking.start_run("e", name="one", params={"alpha": 0.1, "depth": 3})
    two = ws.tracking.start_run("e", name="two", params={"alpha": 0.2, "depth": 3, "seed": 1})
    ws.tracking.log_metrics(one.id, {"rmse": 0.5})
    ws.tracking.log_metrics(two.id, {"rmse": 0.4, "mae": 0.3})
    comparison = ws.tracking.compare_runs([one.id, two.id, one.id])
    assert comparison.run_ids == [one.id, two.id]
    assert comparison.run_names == {one.id: "one", two.id: "two"}
    assert comparison.params["alpha"] == {one.id: "0.1", two.id: "0.2"}
    assert comparison.params["seed"] == {one.id: None, two.id: "1"}
    assert comparison.differing_params == ["alpha", "seed"]
    assert comparison.metrics == {
        "mae": {one.id: None, two.id: 0.3},
        "rmse": {one.id: 0.5, two.id: 0.4},
    }
    assert RunComparison.model_validate_json(comparison.model_dump_json()) == comparison
    with pytest.raises(NotFound, match="missing"):
        ws.tracking.compare_runs([one.id, "missing"])
    with pytest.raises(InvalidInput):
        ws.tracking.compare_runs([])


def test_log_metrics_is_one_status_check_and_one_insert(any_workspace: Workspace) -> None:
    ws = any_workspace
    run = ws.tracking.start_run("e")
    statements: list[str] = []

    def _seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            statements.append(statement.split()[0].upper())

    event.listen(ws.store.engine, "before_cursor_execute", _seen)
    try:
        ws.tracking.log_metrics(
            run.id, [MetricPoint(key=f"k{i % 7}", value=i, step=i) for i in range(1000)]
        )
    finally:
        event.remove(ws.store.engine, "before_cursor_execute", _seen)
    assert statements == ["SELECT", "INSERT"]
    assert ws.audit.list(entity_id=run.id).items[0].action == "run.start"
