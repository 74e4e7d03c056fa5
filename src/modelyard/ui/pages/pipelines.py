"""The pipelines pages: registered pipelines with their triggers, runs, and a run with its
DAG, steps, logs and the promotions its gates decided."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from fastapi import Depends, Request
from starlette.responses import Response

from modelyard.pipelines.dag import STAGES
from modelyard.pipelines.gates import list_promotions
from modelyard.pipelines.runs import PipelineRun, StepRun
from modelyard.pipelines.triggers import Trigger
from modelyard.ui.auth import Viewer, viewer
from modelyard.ui.charts import Chart
from modelyard.ui.dag import DagStep, RunGraph
from modelyard.ui.routing import page_router
from modelyard.ui.templating import render

router = page_router()

#: Rows per page of the runs list and of the registered pipelines.
PAGE_SIZE = 50
#: The end of a step's log a run page shows; the CLI prints the whole log.
LOG_TAIL_BYTES = 64 * 1024
#: Promotions a run's page lists (a run usually decides one).
MAX_PROMOTIONS = 20
STATUSES = ("running", "succeeded", "failed")


@router.get("/pipelines")
def pipelines(
    request: Request,
    status: str = "",
    pipeline: str = "",
    page: str | None = None,
    pipelines_page: str | None = None,
    who: Viewer = Depends(viewer),
) -> Response:
    service = who.ws.pipelines
    runs = service.list_runs(
        pipeline or None, status or None, limit=PAGE_SIZE, page_token=page or None
    )
    registered = service.list(limit=PAGE_SIZE, page_token=pipelines_page or None)
    names = {p.name for p in registered.items}
    # One query for every trigger (there are tens, not thousands), grouped by pipeline.
    triggers: dict[str, list[Trigger]] = defaultdict(list)
    for t in service.triggers.list():
        if t.pipeline in names:
            triggers[t.pipeline].append(t)
    params = {k: v for k, v in (("status", status), ("pipeline", pipeline)) if v}
    return render(
        request,
        who,
        "pipelines/list.html",
        runs=runs.items,
        next_token=runs.next_page_token,
        registered=registered.items,
        registered_next=registered.next_page_token,
        triggers=triggers,
        params=params,
        status_filter=status,
        pipeline=pipeline,
        statuses=STATUSES,
    )


@router.get("/pipelines/runs/{run_id}")
def run_page(request: Request, run_id: str, who: Viewer = Depends(viewer)) -> Response:
    """A run; htmx asks for it again every 2 s while it runs and gets the body alone."""
    run = who.ws.pipelines.get_run(run_id)
    promotions = list_promotions(who.ws, pipeline_run_id=run.id, limit=MAX_PROMOTIONS)
    graph = RunGraph(
        [DagStep(s.name, s.status, s.upstream, _step_note(s)) for s in run.steps],
        anchor="step-",
    )
    return render(
        request,
        who,
        "pipelines/run.html",
        run=run,
        graph=graph,
        logs={s.name: log_tail(s.log) for s in run.steps},
        durations={s.name: step_seconds(s) for s in run.steps},
        stages=stage_chart(run),
        promotions=promotions,
        log_tail_kb=LOG_TAIL_BYTES // 1024,
    )


def log_tail(log: str, limit: int = LOG_TAIL_BYTES) -> tuple[str, int]:
    """The last ``limit`` bytes of ``log`` from a line start, and how many bytes were cut."""
    data = log.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return log, 0
    tail = data[-limit:]
    newline = tail.find(b"\n")
    if 0 <= newline < len(tail) - 1:
        tail = tail[newline + 1 :]
    return tail.decode("utf-8", errors="replace"), len(data) - len(tail)


def step_seconds(step: StepRun) -> float | None:
    """The step's own compute time, else the span of its attempts (None if it did not run)."""
    if step.duration_s is not None:
        return step.duration_s
    return _span(step.started_at, step.finished_at)


def _span(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def _step_note(step: StepRun) -> str:
    seconds = step_seconds(step)
    if step.status == "cached":
        return "output reused from the cache"
    return "" if seconds is None else f"{seconds:.3g} s"


def stage_chart(run: PipelineRun) -> Chart | None:
    """Time per stage (wall time while a step of the stage computed), and the overhead."""
    timings = run.stage_timings
    labels = [s for s in STAGES if f"{s}_s" in timings] + (
        ["overhead"] if "overhead_s" in timings else []
    )
    if not labels:
        return None
    values: list[Any] = [timings[f"{label}_s"] for label in labels]
    return Chart(
        "Time per stage",
        labels,
        {"seconds": values},
        unit=" s",
        kind="bars",
        height=160,
        id="stage-times",
    )
