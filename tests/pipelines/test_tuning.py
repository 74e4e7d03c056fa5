"""Hyperparameter search: every trial a tracking run, reproducible, failures recorded."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from modelyard import Client
from modelyard.errors import InvalidInput
from modelyard.pipelines.tuning import TuningFailed, tune
from modelyard.workspace import Workspace

SPACE = {
    "x": {"type": "float", "low": -5.0, "high": 5.0},
    "depth": {"type": "int", "low": 1, "high": 6},
    "kind": {"type": "categorical", "choices": ["a", "b"]},
    "lr": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
}


def score(p: dict[str, Any]) -> float:
    return -((p["x"] - 2.0) ** 2) - abs(p["depth"] - 3) + (0.5 if p["kind"] == "b" else 0.0)


def test_every_trial_is_a_run(any_workspace: Workspace) -> None:
    ws = any_workspace
    parent = ws.tracking.start_run("tuning", name="pipeline")
    result = tune(
        ws,
        score,
        space=SPACE,
        n_trials=8,
        experiment="tuning",
        parent_run_id=parent.id,
        study_name="study-1",
    )
    assert len(result.trials) == 8
    assert [t.number for t in result.trials] == list(range(8))
    assert result.best_value == max(t.value for t in result.trials if t.value is not None)
    assert result.best_params == next(
        t.params for t in result.trials if t.run_id == result.best_run_id
    )
    assert set(result.best_params) == set(SPACE)

    runs = ws.tracking.search_runs(
        "tuning", filter_string="tags.`modelyard.study` = 'study-1'", limit=50
    ).items
    assert len(runs) == 8
    by_id = {r.id: r for r in runs}
    for trial in result.trials:
        run = by_id[trial.run_id]
        assert run.status == "finished"
        assert run.metrics["objective"] == pytest.approx(trial.value)
        assert run.params["kind"] == trial.params["kind"]
        assert float(run.params["x"]) == pytest.approx(trial.params["x"])
        assert run.tags["modelyard.parent_run_id"] == parent.id
        assert run.tags["modelyard.trial"] == str(trial.number)
        assert run.tags["modelyard.trial_state"] == "COMPLETE"
    tags = ws.tracking.get_run(parent.id).tags
    assert tags["modelyard.tuning_study"] == "study-1"
    assert tags["modelyard.best_run_id"] == result.best_run_id


def test_a_seed_makes_the_search_reproducible(workspace: Workspace) -> None:
    def params(seed: int) -> list[dict[str, Any]]:
        result = tune(workspace, score, space=SPACE, n_trials=12, experiment="rep", seed=seed)
        return [t.params for t in result.trials]

    first = params(7)
    assert params(7) == first
    assert params(8) != first


def test_a_failing_trial_is_recorded_and_the_search_goes_on(workspace: Workspace) -> None:
    calls = []

    def flaky(p: dict[str, Any]) -> float:
        calls.append(p)
        if len(calls) in (2, 5):
            raise RuntimeError("training diverged")
        if len(calls) == 6:
            return float("nan")
        return score(p)

    result = tune(workspace, flaky, space=SPACE, n_trials=7, experiment="flaky")
    assert len(calls) == 7
    states = [t.state for t in result.trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE", "FAIL", "FAIL", "COMPLETE"]
    failed = result.trials[1]
    assert failed.value is None and "RuntimeError: training diverged" in failed.error
    assert "returned nan" in result.trials[5].error
    run = workspace.tracking.get_run(failed.run_id)
    assert run.status == "failed"
    assert run.tags["modelyard.trial_state"] == "FAIL"
    assert "training diverged" in run.tags["modelyard.error"]
    assert set(run.params) == set(SPACE) and "objective" not in run.metrics
    assert result.best_run_id not in {t.run_id for t in result.trials if t.state == "FAIL"}


def test_objective_taking_an_optuna_trial(workspace: Workspace) -> None:
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -3, 3)
        if trial.number == 3:
            raise optuna.TrialPruned()
        if trial.number == 4:
            trial.suggest_int("n", 1, 3)
            raise ValueError("bad n")
        return -(x**2)

    result = tune(
        workspace,
        objective,
        n_trials=6,
        direction="minimize",
        experiment="trial-api",
        metric="loss",
        seed=1,
    )
    assert result.best_value == min(t.value for t in result.trials if t.value is not None)
    pruned, failed = result.trials[3], result.trials[4]
    assert pruned.state == "PRUNED" and failed.state == "FAIL"
    assert workspace.tracking.get_run(pruned.run_id).status == "killed"
    failed_run = workspace.tracking.get_run(failed.run_id)
    assert set(failed_run.params) == {"x", "n"}
    best = workspace.tracking.get_run(result.best_run_id)
    assert best.metrics["loss"] == pytest.approx(result.best_value)
    assert float(best.params["x"]) == pytest.approx(result.best_params["x"])


def test_works_through_the_client(workspace: Workspace) -> None:
    with Client(settings=workspace.settings) as client:
        result = tune(client, score, space=SPACE, n_trials=3, experiment="via-client")
    assert len(workspace.tracking.search_runs("via-client").items) == 3
    assert result.best_trial in {0, 1, 2}


def test_no_completed_trial_fails_the_search(workspace: Workspace) -> None:
    def broken(p: dict[str, Any]) -> float:
        raise KeyError("feature_x")

    with pytest.raises(TuningFailed, match=r"none of the 3 trials.*feature_x"):
        tune(workspace, broken, space=SPACE, n_trials=3, experiment="broken")
    assert all(r.status == "failed" for r in workspace.tracking.search_runs("broken").items)


@pytest.mark.parametrize(
    ("space", "match"),
    [
        ({}, "empty"),
        ({"x": {"type": "float", "low": 1}}, "high"),
        ({"x": {"type": "normal", "low": 0, "high": 1}}, "x"),
        ({"x": {"type": "int", "low": 5, "high": 1}}, "above"),
        ({"x": {"type": "float", "low": 0, "high": 1, "log": True}}, "log"),
        ({"x": {"type": "categorical", "choices": []}}, "choices"),
    ],
)
def test_bad_search_space(workspace: Workspace, space: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        tune(workspace, score, space=space, n_trials=1, experiment="bad")


def test_bad_arguments(workspace: Workspace) -> None:
    with pytest.raises(InvalidInput, match="n_trials"):
        tune(workspace, score, space=SPACE, n_trials=0, experiment="bad")
    with pytest.raises(InvalidInput, match="direction"):
        tune(workspace, score, space=SPACE, n_trials=1, experiment="bad", direction="up")  # type: ignore[arg-type]
