"""Executors with real processes: parallel steps, the step cache, and every way a step can
fail (raise, time out, wrong type, killed), on the local, in-process and Ray executors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from modelyard.pipelines import (
    InProcessExecutor,
    LocalExecutor,
    Output,
    Param,
    Pipeline,
    step,
)
from modelyard.workspace import Workspace


@step(stage="ingest")
def source(rows: int) -> pd.DataFrame:
    print(f"making {rows} rows")
    return pd.DataFrame({"x": range(rows)})


@step(stage="preprocess")
def doubled(df: pd.DataFrame, delay: float = 0.0) -> pd.DataFrame:
    time.sleep(delay)
    return df * 2


@step(stage="preprocess")
def tripled(df: pd.DataFrame, delay: float = 0.0) -> pd.DataFrame:
    time.sleep(delay)
    return df * 3


@step(stage="preprocess")
def incremented(df: pd.DataFrame, delay: float = 0.0) -> pd.DataFrame:
    time.sleep(delay)
    return df + 1


@step(stage="evaluate")
def combine(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, float]:
    return {"total": float(a.x.sum() + b.x.sum()), "rows": float(len(a))}


def diamond(delay: float = 0.0, left=doubled) -> Pipeline:  # type: ignore[no-untyped-def]
    p = Pipeline("diamond")
    df = p.add(source, rows=Param("rows", 5))
    a = p.add(left, name="left", df=df, delay=delay)
    b = p.add(incremented, name="right", df=df, delay=delay)
    p.add(combine, a=a, b=b)
    return p


def statuses(run) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {s.name: s.status for s in run.steps}


def test_diamond_runs_middle_steps_in_parallel_then_from_cache(any_workspace: Workspace) -> None:
    ws = any_workspace
    run = ws.pipelines.run(diamond(delay=0.5), executor=LocalExecutor(max_workers=2))
    assert run.status == "succeeded", run.error
    assert ws.pipelines.output(run.id, "combine") == {"total": 35.0, "rows": 5.0}
    left, right = run.step("left"), run.step("right")
    assert left.started_at and left.finished_at and right.started_at and right.finished_at
    # Both middle steps were running at the same time...
    assert left.started_at < right.finished_at and right.started_at < left.finished_at
    # ...so the preprocess stage took about one step's time, not two.
    assert run.summary["preprocess_s"] < left.duration_s + right.duration_s - 0.25
    assert run.step("source").log == "making 5 rows\n"

    # Unchanged: nothing runs again.
    start = time.monotonic()
    again = ws.pipelines.run(diamond(delay=0.5))
    assert time.monotonic() - start < 2.0
    assert set(statuses(again).values()) == {"cached"}
    assert [s.attempts for s in again.steps] == [0, 0, 0, 0]
    assert ws.pipelines.output(again.id, "combine") == {"total": 35.0, "rows": 5.0}

    # One step's code changed: it and what depends on it run, the rest comes from the cache.
    changed = ws.pipelines.run(diamond(delay=0.5, left=tripled))
    assert statuses(changed) == {
        "source": "cached",
        "left": "succeeded",
        "right": "cached",
        "combine": "succeeded",
    }
    assert ws.pipelines.output(changed.id, "combine") == {"total": 45.0, "rows": 5.0}

    # A different parameter changes the inputs of everything downstream of it.
    other = ws.pipelines.run(diamond(), {"rows": 3}, executor="inprocess")
    assert set(statuses(other).values()) == {"succeeded"}

    forced = ws.pipelines.run(diamond(), {"rows": 3}, executor="inprocess", force=True)
    assert set(statuses(forced).values()) == {"succeeded"}
    assert forced.step("left").cache_key == other.step("left").cache_key


def test_inprocess_and_local_executors_give_the_same_outputs(workspace: Workspace) -> None:
    local = workspace.pipelines.run(diamond(), force=True)
    inproc = workspace.pipelines.run(diamond(), executor=InProcessExecutor(), force=True)
    assert inproc.executor == "inprocess" and local.executor == "local"
    for name in ("source", "left", "right", "combine"):
        assert local.step(name).cache_key == inproc.step(name).cache_key
        assert local.step(name).outputs["refs"] == inproc.step(name).outputs["refs"]


# --- faults -------------------------------------------------------------------------------


@step
def boom(df: pd.DataFrame) -> int:
    print("about to fail")
    print("details on stderr", file=sys.stderr)
    raise ValueError("bad input")


@step(timeout=0.5)
def hang(folder: str) -> int:
    helper = subprocess.Popen(["sleep", "60"])  # a subprocess of the step: must die too
    Path(folder, "pids").write_text(f"{os.getpid()} {helper.pid}")
    print("waiting forever", flush=True)
    time.sleep(60)
    return 1


@step(retries=2)
def wrong_type(df: pd.DataFrame) -> int:
    return "three"  # type: ignore[return-value]


@step(retries=1, retry_delay=0.05)
def killed(df: pd.DataFrame) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return 0


@step(retries=2, retry_delay=0.05)
def flaky(marker: str) -> int:
    path = Path(marker)
    if not path.exists():
        path.write_text("tried")
        raise RuntimeError("first try fails")
    print("second try works")
    return 42


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_a_step_that_raises_fails_the_run_with_its_traceback_and_output(
    workspace: Workspace,
) -> None:
    p = Pipeline("raises")
    df = p.add(source, rows=3)
    p.add(boom, df=df)
    p.add(half_of, n=Output("boom"))
    p.add(incremented, name="independent", df=df)
    run = workspace.pipelines.run(p)
    assert run.status == "failed"
    assert run.error == "step 'boom' raised ValueError: bad input"
    failed = run.step("boom")
    assert failed.status == "failed" and failed.attempts == 1
    assert "about to fail\n" in failed.log and "details on stderr\n" in failed.log
    assert 'raise ValueError("bad input")' in failed.log  # the traceback
    assert run.step("half_of").status == "skipped"
    assert run.step("half_of").error == "skipped: upstream step 'boom' failed"
    assert run.step("independent").status == "succeeded"
    tracking = workspace.tracking.get_run(run.tracking_run_id)
    assert tracking.status == "failed"


@step
def half_of(n: int) -> float:
    return n / 2


def test_a_step_that_times_out_is_killed_with_its_subprocesses(
    workspace: Workspace, tmp_path: Path
) -> None:
    p = Pipeline("hangs")
    p.add(hang, folder=str(tmp_path))
    start = time.monotonic()
    run = workspace.pipelines.run(p)
    assert time.monotonic() - start < 5
    assert run.status == "failed"
    step_run = run.step("hang")
    assert step_run.error == "step 'hang' timed out after 0.5 s; its process was killed"
    assert "waiting forever" in step_run.log
    pids = [int(x) for x in (tmp_path / "pids").read_text().split()]
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids), "a step process was left running"


def test_a_step_returning_the_wrong_type_fails_without_retries(workspace: Workspace) -> None:
    p = Pipeline("types")
    p.add(wrong_type, df=p.add(source, rows=3))
    run = workspace.pipelines.run(p)
    assert run.status == "failed"
    s = run.step("wrong_type")
    assert s.error == "step 'wrong_type' returned str, but it is annotated to return int"
    assert s.attempts == 1  # the code is wrong: trying again cannot help


def test_a_killed_worker_is_retried_then_failed_naming_the_signal(workspace: Workspace) -> None:
    p = Pipeline("killed")
    p.add(killed, df=p.add(source, rows=3))
    run = workspace.pipelines.run(p)
    assert run.status == "failed"
    s = run.step("killed")
    assert s.attempts == 2
    assert s.error == (
        "step 'killed': its process was killed by SIGKILL (signal 9) without a result "
        "(after 2 attempts)"
    )
    assert "--- attempt 1 of 2 ---" in s.log and "--- attempt 2 of 2 ---" in s.log
    assert workspace.pipelines.get_run(run.id).status == "failed"  # nothing left running


def test_a_retry_can_succeed(workspace: Workspace, tmp_path: Path) -> None:
    p = Pipeline("flaky")
    p.add(flaky, marker=str(tmp_path / "marker"))
    run = workspace.pipelines.run(p)
    assert run.status == "succeeded", run.error
    s = run.step("flaky")
    assert (s.status, s.attempts, s.error) == ("succeeded", 2, "")
    assert "RuntimeError: first try fails" in s.log and "second try works" in s.log
    assert workspace.pipelines.output(run.id, "flaky") == 42


# --- ray ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_instance():  # type: ignore[no-untyped-def]
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_executor_gives_the_same_outputs(workspace: Workspace, ray_instance) -> None:  # type: ignore[no-untyped-def]
    from modelyard.pipelines import RayExecutor

    local = workspace.pipelines.run(diamond(), executor="inprocess")
    on_ray = workspace.pipelines.run(diamond(), executor=RayExecutor(), force=True)
    assert on_ray.status == "succeeded", on_ray.error
    assert on_ray.executor == "ray"
    assert set(statuses(on_ray).values()) == {"succeeded"}
    for name in ("source", "left", "right", "combine"):
        assert on_ray.step(name).outputs["refs"] == local.step(name).outputs["refs"]
    assert on_ray.step("source").log == "making 5 rows\n"

    p = Pipeline("ray-faults")
    p.add(boom, df=p.add(source, rows=2))
    failed = workspace.pipelines.run(p, executor=RayExecutor())
    assert failed.status == "failed" and failed.error == "step 'boom' raised ValueError: bad input"
    assert "details on stderr" in failed.step("boom").log
