"""Pipeline runs in the store: what a run records, lineage of the models it registers,
registered pipelines, YAML runs, and runs whose process died."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io  # noqa: F401 - registering a model imports it (and torch): once here, not per step
from sklearn.linear_model import LogisticRegression

import modelyard.client  # noqa: F401 - likewise, inherited by every forked step process
from modelyard.config import Settings
from modelyard.errors import InvalidInput, NotFound
from modelyard.pipelines import Pipeline, StepContext, pipeline, step
from modelyard.workspace import Workspace

FEATURES = ["a", "b"]


@step(stage="ingest")
def ingest(rows: int, ctx: StepContext) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    df = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.normal(size=rows)})
    df["y"] = (df.a + df.b > 0).astype(int)
    ctx.log_dataset("churn-train", df)
    ctx.log(f"logged {rows} rows")
    return df


@step(stage="train")
def train(df: pd.DataFrame, C: float) -> LogisticRegression:
    return LogisticRegression(C=C).fit(df[FEATURES], df.y)


@step(stage="evaluate")
def evaluate(model: LogisticRegression, df: pd.DataFrame) -> dict[str, float]:
    return {"accuracy": float(model.score(df[FEATURES], df.y))}


@step(stage="deploy", cache=False)
def register(
    model: LogisticRegression, df: pd.DataFrame, metrics: dict[str, float], ctx: StepContext
) -> int:
    version = ctx.register_model(model, "churn", df[FEATURES].head(5), alias="challenger")
    return version.version


@pipeline(name="churn")
def churn(rows: int = 60, C: float = 1.0):
    df = ingest(rows)
    model = train(df, C)
    register(model, df, evaluate(model, df))


def test_a_run_records_steps_tracking_and_lineage_of_its_model(any_workspace: Workspace) -> None:
    ws = any_workspace
    run = ws.pipelines.run(churn, {"C": 0.5})
    assert run.status == "succeeded", run.error
    assert run.step_names == ["ingest", "train", "evaluate", "register"]
    assert [s.stage for s in run.steps] == ["ingest", "train", "evaluate", "deploy"]
    assert run.params == {"rows": 60, "C": 0.5}
    assert run.trigger == {"kind": "manual", "by": ws.actor}
    assert run.owner.endswith(f":{os.getpid()}") and run.heartbeat_at is not None
    assert "logged 60 rows" in run.step("ingest").log
    assert ws.pipelines.output(run.id, "register") == 1
    assert isinstance(ws.pipelines.output(run.id, "train"), LogisticRegression)
    timings = run.stage_timings
    assert set(timings) >= {"ingest_s", "preprocess_s", "train_s", "evaluate_s", "deploy_s"}
    assert timings["total_s"] >= timings["train_s"] + timings["deploy_s"]
    assert timings["overhead_s"] > 0 and timings["preprocess_s"] == 0

    tracking = ws.tracking.get_run(run.tracking_run_id)
    assert tracking.experiment == "pipeline:churn" and tracking.status == "finished"
    assert tracking.params == {"rows": "60", "C": "0.5"}
    assert 0.5 < tracking.metrics["accuracy"] <= 1.0
    assert {"duration_s.train", "latency.total_s", "latency.train_s"} <= set(tracking.metrics)
    assert tracking.tags["pipeline_run"] == run.id
    assert tracking.tags["code_version"].startswith("sha256:")
    assert [(i.name, i.version, i.context) for i in tracking.inputs] == [
        ("churn-train", 1, "training")
    ]

    lineage = ws.registry.lineage("churn", 1)
    assert lineage.run_id == run.tracking_run_id and lineage.experiment == "pipeline:churn"
    assert lineage.params == {"rows": "60", "C": "0.5"}
    assert [(d["name"], d["version"], d["role"]) for d in lineage.datasets] == [
        ("churn-train", 1, "training")
    ]
    # This file lives in a git checkout: the code version is its commit (dirty while the
    # file has uncommitted changes); outside one it is the definition's hash.
    assert lineage.code_version is not None
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", lineage.code_version)
    assert ws.registry.get_alias("churn", "challenger").version == 1

    # Again: the cached steps do not run, but the registering step (cache=False) does, and
    # the new version still links to the dataset the cached ingest step logged.
    again = ws.pipelines.run(churn, {"C": 0.5})
    assert [s.status for s in again.steps] == ["cached", "cached", "cached", "succeeded"]
    assert ws.pipelines.output(again.id, "register") == 2
    lineage2 = ws.registry.lineage("churn", 2)
    assert lineage2.run_id == again.tracking_run_id
    assert [(d["name"], d["version"]) for d in lineage2.datasets] == [("churn-train", 1)]
    tracking2 = ws.tracking.get_run(again.tracking_run_id)
    assert [(i.name, i.version) for i in tracking2.inputs] == [("churn-train", 1)]
    assert tracking2.metrics["accuracy"] == tracking.metrics["accuracy"]

    listed = ws.pipelines.list_runs("churn").items
    assert [r.id for r in listed] == [again.id, run.id] and listed[0].steps == []
    assert ws.pipelines.list_runs(status="failed").items == []
    assert ws.pipelines.get_run(run.id) == run
    with pytest.raises(NotFound, match="no pipeline run"):
        ws.pipelines.get_run("01J0000000000000000000000")
    with pytest.raises(InvalidInput, match="status must be"):
        ws.pipelines.list_runs(status="done")


# --- registered pipelines and YAML -------------------------------------------------------


@step(stage="ingest")
def numbers(n: int) -> list[int]:
    return list(range(n))


@step(stage="preprocess")
def squares(xs: list[int]) -> list[int]:
    return [x * x for x in xs]


@step(stage="evaluate")
def stats(xs: list[int], ys: list[int]) -> dict[str, float]:
    return {"sum_x": float(sum(xs)), "sum_y": float(sum(ys))}


@pipeline(name="numbers")
def numbers_pipeline(n: int = 4):
    xs = numbers(n)
    stats(xs, squares(xs))


def test_register_then_run_by_name_and_from_yaml(workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    reg = ws.pipelines.register("numbers", f"{__name__}:numbers_pipeline")
    assert reg.source == f"{__name__}:numbers_pipeline" and reg.created_by == ws.actor
    assert [p.name for p in ws.pipelines.list().items] == ["numbers"]
    first = ws.pipelines.run("numbers", {"n": 3})
    assert first.status == "succeeded"
    assert ws.pipelines.output(first.id, "stats") == {"sum_x": 3.0, "sum_y": 5.0}

    yaml_path = tmp_path / "numbers.yaml"
    yaml_path.write_text(
        f"""
name: numbers
params: {{n: 4}}
steps:
  - {{name: numbers, function: "{__name__}:numbers", inputs: {{n: "${{params.n}}"}}}}
  - {{name: squares, function: "{__name__}:squares", inputs: {{xs: "${{steps.numbers}}"}}}}
  - name: stats
    function: {__name__}:stats
    inputs: {{xs: "${{steps.numbers}}", ys: "${{steps.squares}}"}}
"""
    )
    # The YAML pipeline is the decorated one: same steps, same keys, so all cached.
    from_yaml = ws.pipelines.run(yaml_path, {"n": 3})
    assert [s.status for s in from_yaml.steps] == ["cached", "cached", "cached"]
    assert [s.cache_key for s in from_yaml.steps] == [s.cache_key for s in first.steps]

    again = ws.pipelines.register("numbers", yaml_path, description="from a file")
    assert again.source == str(yaml_path.resolve()) and again.description == "from a file"
    assert ws.pipelines.run("numbers").status == "succeeded"  # n=4: new inputs
    assert {r.pipeline for r in ws.pipelines.list_runs(status="succeeded").items} == {"numbers"}

    with pytest.raises(InvalidInput, match="defines pipeline 'numbers', not 'other'"):
        ws.pipelines.register("other", yaml_path)
    with pytest.raises(NotFound, match="cannot import 'no_such_module'"):
        ws.pipelines.register("x", "no_such_module:pipe")
    with pytest.raises(NotFound, match="no pipeline 'ghost'"):
        ws.pipelines.run("ghost")


# --- runs whose process died ----------------------------------------------------------------


@step
def sleepy(folder: str) -> int:
    Path(folder, "pid").write_text(str(os.getpid()))
    time.sleep(60)
    return 1


def _run_sleepy(settings: Settings, folder: str) -> None:
    ws = Workspace.open(settings, migrate=False)
    p = Pipeline("sleepy")
    p.add(sleepy, folder=folder)
    ws.pipelines.run(p)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_a_run_whose_process_died_is_reaped(any_workspace: Workspace, tmp_path: Path) -> None:
    ws = any_workspace
    proc = multiprocessing.get_context("fork").Process(
        target=_run_sleepy, args=(ws.settings, str(tmp_path))
    )
    proc.start()
    deadline = time.monotonic() + 30

    def step_running() -> bool:
        runs = ws.pipelines.list_runs("sleepy").items
        return bool(runs) and ws.pipelines.get_run(runs[0].id).steps[0].status == "running"

    while not ((tmp_path / "pid").exists() and step_running()):
        assert time.monotonic() < deadline and proc.is_alive(), "the run did not start"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # the process running the pipeline dies mid-step
    proc.join()
    step_pid = int((tmp_path / "pid").read_text())
    while _alive(step_pid):  # ...and takes its step process with it
        assert time.monotonic() < deadline, "the step process outlived its run"
        time.sleep(0.05)

    [run] = ws.pipelines.list_runs("sleepy").items
    assert run.status == "running" and run.owner.endswith(f":{proc.pid}")
    assert ws.pipelines.reap_stale() == []  # its last heartbeat is recent
    later = datetime.now(UTC) + timedelta(minutes=2)
    assert ws.pipelines.reap_stale(later) == [run.id]
    reaped = ws.pipelines.get_run(run.id)
    assert reaped.status == "failed" and reaped.finished_at == later
    assert reaped.error.startswith(f"the process running it stopped (owner {run.owner}")
    assert reaped.step("sleepy").status == "failed"
    assert ws.tracking.get_run(run.tracking_run_id).status == "failed"
    assert ws.pipelines.reap_stale(later) == []  # once
