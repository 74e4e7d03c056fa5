"""Pipeline runs: the run loop, what it records, and the entities it hands out.

The loop walks the DAG: a step whose upstream steps all succeeded gets a cache key (its
code and input hashes); an entry under that key is reused (status ``cached``), otherwise
the step is submitted to the executor, retried on failure with a doubling delay, and its
outputs cached. A failed step skips its downstream steps; independent branches go on, so
their results are cached for the next run. Every state change is written to the metadata
store (batched per loop turn), and the run heartbeats while it lives, so a run whose
process died is found and failed by :meth:`PipelineService.reap_stale`.

Each run has a tracking run in experiment ``pipeline:<name>``: the pipeline parameters as
params (with ``trigger``, the description of the event that started a triggered run), the
code version as tags (``git.commit`` of the definition's repository when there is one,
``code_version`` always: a hash of the definition and every step's code), the numbers
returned by ``evaluate`` steps as metrics, and step and stage durations.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import bindparam, update
from ulid import ULID

from modelyard.errors import NotFound
from modelyard.pipelines.cache import (
    StepCache,
    code_hash,
    definition_hash,
    load_output,
    numeric_items,
    output_hash,
    value_hash,
)
from modelyard.pipelines.dag import STAGES, Output, Param, Pipeline, StepNode
from modelyard.pipelines.executors import Attempt, AttemptResult, Executor
from modelyard.store.tables import Base, PipelineRunRow, PipelineStepRow

if TYPE_CHECKING:
    from modelyard.workspace import Workspace

logger = logging.getLogger("modelyard.pipelines")

StepStatus = Literal["pending", "running", "succeeded", "failed", "cached", "skipped"]
RunStatus = Literal["running", "succeeded", "failed"]
HEARTBEAT_S = 5.0
FLUSH_S = 0.05
MAX_RETRY_DELAY_S = 30.0
DONE = ("succeeded", "cached", "failed", "skipped")

Progress = Callable[[str, str, int], None]  # (step, status, attempt)


class StepRun(BaseModel):
    """One step of a run. ``duration_s`` is the step function's own time (None if it did
    not run); ``started_at``/``finished_at`` span its attempts including process start."""

    name: str
    status: StepStatus
    stage: str = "other"
    upstream: list[str] = Field(default_factory=list)
    attempts: int = 0
    cache_key: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    outputs: dict[str, Any] = Field(default_factory=dict)
    log: str = ""
    error: str = ""


class PipelineRun(BaseModel):
    """A run of a pipeline with its steps (in DAG order) and summary.

    ``summary`` holds the stage latencies ``ingest_s``, ``preprocess_s``, ``train_s``,
    ``evaluate_s``, ``deploy_s`` (wall time while a step of that stage was computing),
    ``total_s`` (the whole run) and ``overhead_s`` (time no step was computing: scheduling,
    processes, caching, recording).
    """

    id: str
    pipeline: str
    status: RunStatus
    trigger: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    executor: str = "local"
    tracking_run_id: str | None = None
    started_at: datetime
    finished_at: datetime | None = None
    error: str = ""
    summary: dict[str, Any] = Field(default_factory=dict)
    owner: str = ""
    heartbeat_at: datetime | None = None
    steps: list[StepRun] = Field(default_factory=list)

    def step(self, name: str) -> StepRun:
        for s in self.steps:
            if s.name == name:
                return s
        raise NotFound(f"run {self.id} has no step {name!r}; it has {', '.join(self.step_names)}")

    @property
    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]

    @property
    def stage_timings(self) -> dict[str, float]:
        keys = [f"{s}_s" for s in STAGES] + ["total_s", "overhead_s"]
        return {k: float(self.summary[k]) for k in keys if k in self.summary}


def run_entity(row: PipelineRunRow, steps: list[PipelineStepRow] | None = None) -> PipelineRun:
    run = PipelineRun(
        id=row.id,
        pipeline=row.pipeline,
        status=row.status,
        trigger=row.trigger,
        params=row.params,
        executor=row.executor,
        tracking_run_id=row.tracking_run_id,
        started_at=row.started_at,
        finished_at=row.finished_at,
        error=row.error,
        summary=row.summary,
        owner=row.owner,
        heartbeat_at=row.heartbeat_at,
    )
    if steps is not None:
        info = row.summary.get("steps", {})
        order = {name: i for i, name in enumerate(info)}
        for s in sorted(steps, key=lambda s: (order.get(s.step, len(order)), s.step)):
            meta = info.get(s.step, {})
            run.steps.append(
                StepRun(
                    name=s.step,
                    status=s.status,
                    stage=meta.get("stage", "other"),
                    upstream=meta.get("upstream", []),
                    attempts=s.attempts,
                    cache_key=s.cache_key,
                    started_at=s.started_at,
                    finished_at=s.finished_at,
                    duration_s=meta.get("duration_s"),
                    outputs=s.outputs,
                    log=s.log,
                    error=s.error,
                )
            )
    return run


def owner_id() -> str:
    """Who runs a run: this host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def git_commit(path: Path | None) -> str | None:
    """The commit checked out where ``path`` lives, ``-dirty`` if the file differs from it."""
    if path is None or not path.exists():
        return None
    folder = path if path.is_dir() else path.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--", str(path)],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


# Statements built once with parameters: their compiled form is cached, where building
# them with values each time costs milliseconds per step (SQLAlchemy cache-key work).
_STEPS = Base.metadata.tables[PipelineStepRow.__tablename__]
_RUNS = Base.metadata.tables[PipelineRunRow.__tablename__]
_STEP_UPDATE = (
    update(_STEPS)
    .where(_STEPS.c.id == bindparam("b_id"))
    .values(
        {
            name: bindparam(f"b_{name}")
            for name in (
                "status",
                "attempts",
                "cache_key",
                "started_at",
                "finished_at",
                "outputs",
                "log",
                "error",
            )
        }
    )
)
_RUN_BEAT = (
    update(_RUNS)
    .where(_RUNS.c.id == bindparam("b_id"))
    .values(heartbeat_at=bindparam("b_heartbeat_at"), summary=bindparam("b_summary"))
)


def _union_seconds(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


@dataclass
class _Step:
    node: StepNode
    row_id: str
    code: str
    status: str = "pending"
    attempts: int = 0
    key: str | None = None
    outputs: dict[str, Any] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    logs: list[str] = field(default_factory=list)
    error: str = ""
    compute: list[tuple[float, float]] = field(default_factory=list)
    duration_s: float | None = None
    datasets: list[dict[str, Any]] = field(default_factory=list)
    retry_at: float | None = None
    in_flight: bool = False
    looked_up: bool = False
    dirty: bool = False


class PipelineRunner:
    """Runs one pipeline once; :meth:`run` returns the run id when the run has ended."""

    def __init__(
        self,
        ws: Workspace,
        pipeline: Pipeline,
        params: Mapping[str, Any] | None,
        executor: Executor,
        *,
        force: bool = False,
        trigger: Mapping[str, Any] | None = None,
        progress: Progress | None = None,
        run_id: str | None = None,
    ) -> None:
        self.ws = ws
        self.pipeline = pipeline.validate()
        self.values = pipeline.resolve_params(params)
        # What the run records as its params: the values, plus a trigger's description of its
        # event (params["trigger"]) even when the pipeline does not take it, so the lineage of
        # a version it registers says which alert, tick or dataset version started it.
        self.recorded = dict(self.values)
        if params is not None and "trigger" in params:
            self.recorded["trigger"] = params["trigger"]
        self.executor = executor
        self.force = force
        self.trigger = dict(trigger or {"kind": "manual"})
        self.trigger.setdefault("by", ws.actor)
        self.progress = progress
        self.cache = StepCache(ws.store, ws.artifacts)
        self.order = pipeline.order()
        self.run_id = run_id or str(ULID())
        self.tracking_run_id: str | None = None
        self.steps = {
            name: _Step(pipeline.steps[name], str(ULID()), code_hash(pipeline.steps[name].fn))
            for name in self.order
        }
        self._pending_cache: list[tuple[str, str, dict[str, Any]]] = []
        self._value_hashes: dict[int, str] = {}
        self._started = time.time()
        self._last_beat = 0.0
        self._last_flush = 0.0
        self._failure = ""
        self._code: dict[str, Any] = {}

    # --- the run --------------------------------------------------------------------------

    def run(self) -> str:
        self._begin()
        status, error = "failed", ""
        beat = _Heartbeat(self.ws, self.run_id) if self.executor.blocking else None
        try:
            self.executor.open(self.ws)
            self._loop()
            failed = [s for s in self.steps.values() if s.status == "failed"]
            status = "failed" if failed else "succeeded"
            error = self._failure
        except BaseException as exc:
            error = (
                "interrupted"
                if isinstance(exc, KeyboardInterrupt)
                else f"the run loop failed: {type(exc).__name__}: {exc}"
            )
            raise
        finally:
            if beat is not None:
                beat.stop()
            self.executor.close()
            try:
                self._end(status, error)
            except Exception:
                if status == "succeeded":
                    raise
                # Already failing: keep the first error; the reaper fails the run later.
                logger.exception("could not record the end of pipeline run %s", self.run_id)
        return self.run_id

    def _loop(self) -> None:
        self._advance()
        while True:
            active = [s for s in self.steps.values() if s.status not in DONE]
            if not active:
                self._flush(final=True)
                return
            # Written while the submitted steps run, so the write delays none of them.
            self._flush()
            now = time.monotonic()
            wait_s = min(1.0, max(0.0, self._last_beat + HEARTBEAT_S - now))
            if self._unwritten():
                wait_s = min(wait_s, max(0.0, self._last_flush + FLUSH_S - now))
            retries = [s.retry_at for s in active if s.retry_at is not None and not s.in_flight]
            if retries:
                wait_s = max(0.0, min(wait_s, min(retries) - now))
            for result in self.executor.wait(wait_s):
                self._handle(result)
            self._advance()

    def _advance(self) -> None:
        """Settle every step that can be settled now; submit what can run."""
        now = time.monotonic()
        for name in self.order:
            s = self.steps[name]
            if s.status == "pending":
                ups = [self.steps[u] for u in s.node.upstream]
                if any(u.status in ("failed", "skipped") for u in ups):
                    blocker = next(u for u in ups if u.status in ("failed", "skipped"))
                    self._set(
                        s,
                        "skipped",
                        error=f"skipped: upstream step {blocker.node.name!r} {blocker.status}",
                    )
                    continue
                if not all(u.status in ("succeeded", "cached") for u in ups):
                    continue
                if s.key is None:
                    s.key = self._cache_key(s)
                    s.dirty = True
                if s.node.options.cache and not self.force and not s.looked_up:
                    s.looked_up = True  # a miss stays a miss while the step waits for a slot
                    hit = self.cache.lookup(s.key)
                    if hit is not None:
                        self._cached(s, hit)
                        continue
                if self.executor.capacity() > 0:
                    self._submit(s)
            elif (
                s.status == "running"
                and not s.in_flight
                and s.retry_at is not None
                and s.retry_at <= now
                and self.executor.capacity() > 0
            ):
                self._submit(s)

    def _cache_key(self, s: _Step) -> str:
        from modelyard.pipelines.cache import cache_key

        hashes = {}
        for arg, value in s.node.inputs.items():
            if isinstance(value, Output):
                upstream = self.steps[value.step].outputs
                assert upstream is not None
                hashes[arg] = output_hash(upstream, value.key)
            elif isinstance(value, Param):
                hashes[arg] = self._hash(self.values[value.name])
            else:
                hashes[arg] = self._hash(value)
        return cache_key(s.code, hashes)

    def _hash(self, value: Any) -> str:
        # Constants are hashed once per run even when several steps share them.
        if id(value) not in self._value_hashes:
            self._value_hashes[id(value)] = value_hash(value)
        return self._value_hashes[id(value)]

    def _submit(self, s: _Step) -> None:
        node = s.node
        s.attempts += 1
        s.in_flight = True
        s.retry_at = None
        if s.started_at is None:
            s.started_at = datetime.now(UTC)
        values, refs = {}, {}
        for arg, value in node.inputs.items():
            if isinstance(value, Output):
                outputs = self.steps[value.step].outputs
                assert outputs is not None
                refs[arg] = (outputs, value.key)
            elif isinstance(value, Param):
                values[arg] = self.values[value.name]
            else:
                values[arg] = value
        lineage: list[dict[str, Any]] = []
        for up in self.pipeline.ancestors(node.name):
            lineage.extend(self.steps[up].datasets)
        attempt = Attempt(
            step=node.name,
            number=s.attempts,
            fn=node.fn,
            values=values,
            refs=refs,
            context_arg=node.context_arg,
            return_hint=node.return_hint,
            timeout=node.options.timeout,
            pipeline=self.pipeline.name,
            run_id=self.run_id,
            tracking_run_id=self.tracking_run_id,
            datasets=lineage,
        )
        self._set(s, "running", attempt=s.attempts)
        self.executor.submit(attempt)

    def _handle(self, result: AttemptResult) -> None:
        s = self.steps[result.step]
        s.in_flight = False
        total = s.node.options.retries + 1
        if result.compute_end > result.compute_start > 0:
            s.compute.append((result.compute_start, result.compute_end))
        log = result.log
        if not result.ok:
            log = (
                log + ("" if not log or log.endswith("\n") else "\n")
            ) + f"[modelyard] {result.error}\n"
        if total > 1:
            log = f"--- attempt {result.number} of {total} ---\n{log}"
        s.logs.append(log)
        if result.ok:
            s.datasets.extend(result.datasets)
            assert result.outputs is not None
            s.outputs = {**result.outputs, "datasets": s.datasets}
            s.duration_s = result.compute_end - result.compute_start
            if s.node.options.cache and s.key is not None:
                self._pending_cache.append((s.key, s.node.name, s.outputs))
            self._log_metrics(s)
            self._set(s, "succeeded", attempt=result.number)
            return
        if result.retryable and s.attempts < total:
            delay = min(s.node.options.retry_delay * 2 ** (s.attempts - 1), MAX_RETRY_DELAY_S)
            s.retry_at = time.monotonic() + delay
            s.error = result.error
            s.dirty = True
            self._notify(s.node.name, "retrying", s.attempts)
            return
        s.duration_s = result.compute_end - result.compute_start if result.compute_end > 0 else None
        tries = f" (after {s.attempts} attempts)" if s.attempts > 1 else ""
        self._failure = self._failure or f"{result.error}{tries}"
        self._set(s, "failed", error=f"{result.error}{tries}", attempt=result.number)

    def _cached(self, s: _Step, outputs: dict[str, Any]) -> None:
        s.outputs = outputs
        s.datasets = list(outputs.get("datasets", []))
        s.started_at = s.finished_at = datetime.now(UTC)
        self._relink_datasets(s)
        self._log_metrics(s)
        self._set(s, "cached")

    def _relink_datasets(self, s: _Step) -> None:
        """Datasets a cached step logged when it ran are inputs of this run too."""
        if not self.tracking_run_id:
            return
        for d in s.datasets:
            try:
                frame = self.ws.tracking.load_dataset(d["name"], d["version"])
                self.ws.tracking.log_dataset(
                    d["name"],
                    frame,
                    run_id=self.tracking_run_id,
                    context=d.get("context", "training"),
                )
            except Exception as exc:  # the data was not kept: lineage of this run lacks it
                s.logs.append(
                    f"[modelyard] could not link dataset {d['name']} v{d['version']}: {exc}\n"
                )

    def _log_metrics(self, s: _Step) -> None:
        if s.node.options.stage != "evaluate" or not self.tracking_run_id or s.outputs is None:
            return
        refs = s.outputs.get("refs", {})
        if s.outputs.get("kind") != "value" or refs.get("value", {}).get("format") != "json":
            return
        metrics = numeric_items(load_output(self.ws.artifacts, s.outputs))
        if metrics:
            self.ws.tracking.log_metrics(self.tracking_run_id, metrics)

    def _set(self, s: _Step, status: str, *, error: str = "", attempt: int = 0) -> None:
        s.status = status
        if error:
            s.error = error
        elif status in ("succeeded", "running"):
            s.error = ""
        if status in DONE and s.finished_at is None:
            s.finished_at = datetime.now(UTC)
        s.dirty = True
        self._notify(s.node.name, status, attempt)

    def _notify(self, step: str, status: str, attempt: int) -> None:
        if self.progress is not None:
            self.progress(step, status, attempt)

    # --- recording ------------------------------------------------------------------------

    def _summary(self, *, final: bool) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        intervals: dict[str, list[tuple[float, float]]] = {stage: [] for stage in STAGES}
        for s in self.steps.values():
            intervals[s.node.options.stage].extend(s.compute)
        for stage in STAGES:
            summary[f"{stage}_s"] = round(_union_seconds(intervals[stage]), 6)
        total = time.time() - self._started
        busy = _union_seconds([i for s in self.steps.values() for i in s.compute])
        summary["total_s"] = round(total, 6)
        summary["overhead_s"] = round(max(0.0, total - busy), 6)
        summary["final"] = final
        summary["steps"] = {
            name: {
                "stage": s.node.options.stage,
                "upstream": s.node.upstream,
                "function": s.node.function_ref,
                "duration_s": None if s.duration_s is None else round(s.duration_s, 6),
            }
            for name, s in self.steps.items()
        }
        return summary

    def _begin(self) -> None:
        from modelyard.store.tables import PipelineStepRow

        p = self.pipeline
        code_version = definition_hash(p, {n: s.code for n, s in self.steps.items()})
        commit = git_commit(p.source_path)
        tags = {
            "pipeline": p.name,
            "pipeline_run": self.run_id,
            "code_version": code_version,
            "trigger": str(self.trigger.get("kind", "manual")),
        }
        if commit:
            tags["git.commit"] = commit
        run = self.ws.tracking.start_run(
            f"pipeline:{p.name}", name=self.run_id, params=self.recorded, tags=tags
        )
        self.tracking_run_id = run.id
        now = datetime.now(UTC)
        summary = self._summary(final=False)
        summary.update(code_version=code_version, git_commit=commit)
        self._code = {"code_version": code_version, "git_commit": commit}
        with self.ws.store.write(self.ws.actor) as tx:
            tx.session.add(
                PipelineRunRow(
                    id=self.run_id,
                    pipeline=p.name,
                    status="running",
                    trigger=self.trigger,
                    params=_jsonable_params(self.recorded),
                    executor=self.executor.name,
                    tracking_run_id=run.id,
                    started_at=now,
                    finished_at=None,
                    error="",
                    summary=summary,
                    owner=owner_id(),
                    heartbeat_at=now,
                )
            )
            tx.session.flush()
            tx.session.add_all(
                PipelineStepRow(
                    id=s.row_id,
                    run_id=self.run_id,
                    step=name,
                    status="pending",
                    attempts=0,
                    cache_key=None,
                    started_at=None,
                    finished_at=None,
                    outputs={},
                    log="",
                    error="",
                )
                for name, s in self.steps.items()
            )
            tx.record(
                "pipeline_run.start",
                "pipeline_run",
                self.run_id,
                after={
                    "pipeline": p.name,
                    "params": _jsonable_params(self.recorded),
                    "trigger": self.trigger,
                    "executor": self.executor.name,
                    "tracking_run_id": run.id,
                    **self._code,
                },
            )
        self._last_beat = time.monotonic()

    def _unwritten(self) -> bool:
        return bool(self._pending_cache) or any(s.dirty for s in self.steps.values())

    def _flush(self, *, final: bool = False) -> None:
        """Write changed steps, new cache entries and the heartbeat: at most every FLUSH_S
        (steps that take milliseconds would otherwise each wait for a commit)."""
        now = time.monotonic()
        beat_due = now - self._last_beat >= HEARTBEAT_S
        due = final or beat_due or now - self._last_flush >= FLUSH_S
        if not due or not (final or beat_due or self._unwritten()):
            return
        self._last_flush = now
        dirty = [s for s in self.steps.values() if s.dirty]
        summary = {**self._summary(final=final), **self._code}
        with self.ws.store.write(self.ws.actor) as tx:
            for key, step, outputs in self._pending_cache:
                self.cache.save(key, self.pipeline.name, step, outputs, tx=tx)
            if dirty:
                tx.session.execute(
                    _STEP_UPDATE,
                    [
                        {
                            "b_id": s.row_id,
                            "b_status": s.status,
                            "b_attempts": s.attempts,
                            "b_cache_key": s.key,
                            "b_started_at": s.started_at,
                            "b_finished_at": s.finished_at,
                            "b_outputs": s.outputs or {},
                            "b_log": "".join(s.logs),
                            "b_error": s.error if s.status != "running" or s.retry_at else "",
                        }
                        for s in dirty
                    ],
                )
            tx.session.execute(
                _RUN_BEAT,
                {"b_id": self.run_id, "b_heartbeat_at": datetime.now(UTC), "b_summary": summary},
            )
        for s in dirty:
            s.dirty = False
        self._pending_cache.clear()
        self._last_beat = time.monotonic()

    def _end(self, status: str, error: str) -> None:
        for s in self.steps.values():  # after an interruption: nothing stays "running"
            if s.status == "running":
                self._set(s, "failed", error=s.error or "interrupted before the step finished")
            elif s.status == "pending":
                self._set(s, "skipped", error="the run ended before this step started")
        self._flush(final=True)
        summary = {**self._summary(final=True), **self._code}
        if self.tracking_run_id:
            metrics = {
                f"duration_s.{n}": s.duration_s
                for n, s in self.steps.items()
                if s.duration_s is not None
            }
            metrics.update({f"latency.{k}": v for k, v in summary.items() if k.endswith("_s")})
            self.ws.tracking.log_metrics(self.tracking_run_id, metrics)
            self.ws.tracking.end_run(
                self.tracking_run_id, "finished" if status == "succeeded" else "failed"
            )
        with self.ws.store.write(self.ws.actor) as tx:
            tx.session.execute(
                update(PipelineRunRow)
                .where(PipelineRunRow.id == self.run_id)
                .values(
                    status=status,
                    finished_at=datetime.now(UTC),
                    error=error,
                    summary=summary,
                    heartbeat_at=datetime.now(UTC),
                )
            )
            tx.record(
                "pipeline_run.end",
                "pipeline_run",
                self.run_id,
                {"status": "running"},
                {"status": status, "error": error},
            )


class _Heartbeat:
    """Heartbeats from a thread while a blocking executor keeps the loop busy in a step."""

    def __init__(self, ws: Workspace, run_id: str) -> None:
        self.ws, self.run_id = ws, run_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="pipeline-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            # A missed beat is tried again next time.
            with contextlib.suppress(Exception), self.ws.store.write(self.ws.actor) as tx:
                tx.session.execute(
                    update(PipelineRunRow)
                    .where(PipelineRunRow.id == self.run_id)
                    .values(heartbeat_at=datetime.now(UTC))
                )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _jsonable_params(values: Mapping[str, Any]) -> dict[str, Any]:
    from modelyard.pipelines.cache import is_jsonable

    return {k: v if is_jsonable(v) else repr(v) for k, v in values.items()}
