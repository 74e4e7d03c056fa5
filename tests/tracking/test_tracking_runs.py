"""Experiments, runs, params and tags on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from modelyard.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from modelyard.tracking.entities import Experiment, Run
from modelyard.workspace import Workspace


def test_experiment_round_trip_and_lookup(any_workspace: Workspace) -> None:
    ws = any_workspace
    ws.projects.create("churn")
    exp = ws.tracking.create_experiment("baseline", description="first try", project="churn")
    assert exp.project == "churn"
    assert ws.tracking.get_experiment("baseline") == exp
    assert ws.tracking.get_experiment(exp.id) == exp
    assert exp.created_at.tzinfo is not None
    assert Experiment.model_validate_json(exp.model_dump_json()) == exp


def test_experiment_errors(any_workspace: Workspace) -> None:
    ws = any_workspace
    ws.tracking.create_experiment("e")
    with pytest.raises(AlreadyExists, match="experiment 'e' exists already"):
        ws.tracking.create_experiment("e")
    with pytest.raises(NotFound, match="no project"):
        ws.tracking.create_experiment("f", project="missing")
    with pytest.raises(NotFound, match="no experiment 'nope'"):
        ws.tracking.get_experiment("nope")
    for bad in ["", "   ", "x" * 257, "tab\there"]:
        with pytest.raises(InvalidInput):
            ws.tracking.create_experiment(bad)


def test_get_or_create_experiment(any_workspace: Workspace) -> None:
    ws = any_workspace
    first = ws.tracking.get_or_create_experiment("e")
    assert ws.tracking.get_or_create_experiment("e") == first
    assert len(ws.audit.list(action="experiment.create").items) == 1


def test_list_experiments_pages_and_filters(any_workspace: Workspace) -> None:
    ws = any_workspace
    ws.projects.create("p")
    for i in range(5):
        ws.tracking.create_experiment(f"exp-{i}", project="p" if i < 2 else None)
    page = ws.tracking.list_experiments(limit=3)
    assert [e.name for e in page.items] == ["exp-0", "exp-1", "exp-2"]
    rest = ws.tracking.list_experiments(limit=3, page_token=page.next_page_token)
    assert [e.name for e in rest.items] == ["exp-3", "exp-4"]
    assert rest.next_page_token is None
    in_project = ws.tracking.list_experiments(project="p").items
    assert [(e.name, e.project) for e in in_project] == [("exp-0", "p"), ("exp-1", "p")]
    assert [e.name for e in ws.tracking.list_experiments(q="P-4").items] == ["exp-4"]
    with pytest.raises(InvalidInput, match="page_token"):
        ws.tracking.list_experiments(page_token="bm90LWFuLW9mZnNldA==")


def test_start_run_creates_experiment_and_round_trips(any_workspace: Workspace) -> None:
    ws = any_workspace
    run = ws.tracking.start_run(
        "new-exp", name="r1", params={"alpha": 0.1, "layers": 3}, tags={"team": "ml"}
    )
    assert run.status == "running"
    assert run.params == {"alpha": "0.1", "layers": "3"}
    got = ws.tracking.get_run(run.id)
    assert got == run
    assert got.experiment == "new-exp"
    assert ws.tracking.get_experiment("new-exp").id == got.experiment_id
    assert Run.model_validate_json(got.model_dump_json()) == got
    # A run can also be started in an experiment given by id.
    by_id = ws.tracking.start_run(got.experiment_id)
    assert by_id.experiment == "new-exp"


def test_end_run(any_workspace: Workspace) -> None:
    ws = any_workspace
    run = ws.tracking.start_run("e")
    ended = ws.tracking.end_run(run.id, "failed")
    assert ended.status == "failed"
    assert ended.end_time is not None and ended.end_time >= ended.start_time
    assert ws.tracking.end_run(run.id, "failed") == ended  # the same end again is a no-op
    with pytest.raises(Conflict, match="already ended as 'failed'"):
        ws.tracking.end_run(run.id, "finished")
    with pytest.raises(InvalidInput, match="status must be one of"):
        ws.tracking.end_run(run.id, "done")
    with pytest.raises(NotFound, match="no run"):
        ws.tracking.end_run("01HZZZZZZZZZZZZZZZZZZZZZZZ")


def test_params_are_immutable(any_workspace: Workspace) -> None:
    ws = any_workspace
    run = ws.tracking.start_run("e", params={"alpha": 0.1})
    ws.tracking.log_params(run.id, {"alpha": 0.1, "beta": "x"})  # same value again is fine
    with pytest.raises(Conflict, match=r"params are immutable.*alpha.*start a new run"):
        ws.tracking.log_params(run.id, {"alpha": 0.2, "gamma": 1})
    # The failed call changed nothing, not even its new key.
    assert ws.tracking.get_run(run.id).params == {"alpha": "0.1", "beta": "x"}
    with pytest.raises(InvalidInput, match="param key"):
        ws.tracking.log_params(run.id, {"bad\nkey": 1})
    with pytest.raises(NotFound):
        ws.tracking.log_params("missing", {"a": 1})
    ws.tracking.end_run(run.id)
    with pytest.raises(Conflict, match="running run"):
        ws.tracking.log_params(run.id, {"late": 1})


def test_tags_are_mutable(any_workspace: Workspace) -> None:
    ws = any_workspace
    run = ws.tracking.start_run("e", tags={"stage": "dev"})
    ws.tracking.set_tags(run.id, {"stage": "prod", "owner": "ana"})
    ws.tracking.end_run(run.id)
    ws.tracking.set_tags(run.id, {"reviewed": True})  # allowed after the run ended
    assert ws.tracking.get_run(run.id).tags == {
        "owner": "ana",
        "reviewed": "True",
        "stage": "prod",
    }
    with pytest.raises(NotFound):
        ws.tracking.set_tags("missing", {"a": "b"})
    [record] = ws.audit.list(action="run.set_tags", limit=1, offset=1).items
    assert record.before == {"stage": "dev", "owner": None}
    assert record.after == {"stage": "prod", "owner": "ana"}


def test_state_changes_are_audited(any_workspace: Workspace) -> None:
    ws = any_workspace
    run = ws.tracking.start_run("e", params={"a": 1})
    ws.tracking.log_params(run.id, {"b": 2})
    ws.tracking.log_params(run.id, {"b": 2})  # nothing new: nothing recorded
    ws.tracking.set_tags(run.id, {"t": "1"})
    ws.tracking.log_metrics(run.id, {"loss": 0.5})  # measurements are not audited
    ws.tracking.end_run(run.id)
    actions = [r.action for r in ws.audit.list().items]
    assert actions == [
        "run.end",
        "run.set_tags",
        "run.log_params",
        "run.start",
        "experiment.create",
    ]
    start = ws.audit.list(action="run.start").items[0]
    assert start.entity_id == run.id
    assert start.after == {"experiment": "e", "name": "", "params": {"a": "1"}, "tags": {}}
    assert ws.audit.verify().ok


def test_unknown_run_is_not_found(any_workspace: Workspace) -> None:
    with pytest.raises(NotFound, match="no run 'nope'"):
        any_workspace.tracking.get_run("nope")
