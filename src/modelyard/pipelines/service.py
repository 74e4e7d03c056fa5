"""``ws.pipelines``: register pipelines, run them, and read their runs and outputs."""

from __future__ import annotations

import builtins
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from sqlalchemy import select, update
from ulid import ULID

from modelyard import jsonio
from modelyard.errors import Conflict, InvalidInput, ModelyardError, NotFound
from modelyard.page import Page, check_limit, decode_token
from modelyard.pipelines.cache import load_output
from modelyard.pipelines.dag import PIPELINE_NAME, Pipeline, load_pipeline
from modelyard.pipelines.executors import Executor, make_executor
from modelyard.pipelines.runs import PipelineRun, PipelineRunner, Progress, run_entity
from modelyard.store.tables import PipelineRow, PipelineRunRow, PipelineStepRow

if TYPE_CHECKING:
    from modelyard.pipelines.triggers import TriggerService
    from modelyard.workspace import Workspace

STALE_AFTER_S = 60.0  # twelve missed heartbeats


class RegisteredPipeline(BaseModel):
    """A pipeline the platform can run by name (triggers do): where its definition lives."""

    name: str
    source: str
    description: str = ""
    created_at: datetime
    updated_at: datetime
    created_by: str = ""


def _registered(row: PipelineRow) -> RegisteredPipeline:
    return RegisteredPipeline(
        name=row.name,
        source=row.source,
        description=row.description,
        created_at=row.created_at,
        updated_at=row.updated_at,
        created_by=row.created_by,
    )


def _normalised_source(source: str | Path) -> str:
    text = str(source)
    if text.endswith((".yaml", ".yml")):
        return str(Path(text).expanduser().resolve())
    return text


class PipelineService:
    """Pipelines: definitions by name, runs with their steps, and step outputs."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.store = ws.store

    # --- definitions ----------------------------------------------------------------------

    def register(
        self, name: str, source: str | Path, *, description: str = ""
    ) -> RegisteredPipeline:
        """Record where pipeline ``name`` is defined (``"package.module:attr"`` or a YAML
        path), so it can be run by name later; registering again replaces the source.

        The source is loaded now, so a broken definition is refused here, not at 3 a.m.
        """
        if not isinstance(name, str) or not PIPELINE_NAME.match(name):
            raise InvalidInput(
                f"pipeline name {name!r} is not valid; use up to 128 letters, digits, '.', "
                "'_', '-' starting with a letter or digit"
            )
        text = _normalised_source(source)
        p = load_pipeline(text)
        if p.name != name:
            raise InvalidInput(
                f"{text} defines pipeline {p.name!r}, not {name!r}; register it as {p.name!r}"
            )
        now = datetime.now(UTC)
        description = description or p.description
        with self.store.write(self.ws.actor) as tx:
            row = tx.session.get(PipelineRow, name)
            before = None
            if row is None:
                row = PipelineRow(
                    name=name,
                    source=text,
                    description=description,
                    created_at=now,
                    updated_at=now,
                    created_by=self.ws.actor,
                )
                tx.session.add(row)
            else:
                before = {"source": row.source, "description": row.description}
                row.source, row.description, row.updated_at = text, description, now
            tx.record(
                "pipeline.register",
                "pipeline",
                name,
                before,
                {"source": text, "description": description},
            )
            return _registered(row)

    def get(self, name: str) -> RegisteredPipeline:
        with self.store.read() as s:
            row = s.get(PipelineRow, name)
        if row is None:
            raise NotFound(f"no pipeline {name!r}; `modelyard pipelines list` shows them")
        return _registered(row)

    def list(self, *, limit: int = 100, page_token: str | None = None) -> Page[RegisteredPipeline]:
        """Registered pipelines by name."""
        offset = decode_token(page_token)
        check_limit(limit)
        query = select(PipelineRow).order_by(PipelineRow.name).offset(offset).limit(limit + 1)
        with self.store.read() as s:
            rows = s.scalars(query).all()
        return Page.of(
            [_registered(r) for r in rows[:limit]], offset, limit, more=len(rows) > limit
        )

    def load(self, pipeline: str | Path | Pipeline) -> Pipeline:
        """The pipeline a registered name, an import path or a YAML path names."""
        if isinstance(pipeline, Pipeline):
            return pipeline.validate()
        text = str(pipeline)
        with self.store.read() as s:
            row = s.get(PipelineRow, text) if PIPELINE_NAME.match(text) else None
        if row is not None:
            return load_pipeline(row.source)
        if ":" in text or text.endswith((".yaml", ".yml")):
            return load_pipeline(text)
        raise NotFound(
            f"no pipeline {text!r}; register it, or give 'package.module:attr' or a .yaml file"
        )

    # --- runs -----------------------------------------------------------------------------

    def run(
        self,
        pipeline: str | Path | Pipeline,
        params: Mapping[str, Any] | None = None,
        *,
        executor: str | Executor = "local",
        force: bool = False,
        trigger: Mapping[str, Any] | None = None,
        progress: Progress | None = None,
        run_id: str | None = None,
    ) -> PipelineRun:
        """Run a pipeline to its end and return the run (``status`` tells how it went).

        ``executor`` is ``"local"`` (a process per step, in parallel), ``"inprocess"``,
        ``"ray"`` or an :class:`Executor`. ``force`` runs every step even if cached.
        ``trigger`` says why it runs (``{"kind": "schedule", "event": ...}``); manual by default.
        ``progress(step, status, attempt)`` is called as steps change state.
        """
        p = self.load(pipeline)
        self.reap_stale()
        runner = PipelineRunner(
            self.ws,
            p,
            params,
            make_executor(executor),
            force=force,
            trigger=trigger,
            progress=progress,
            run_id=run_id,
        )
        return self.get_run(runner.run())

    def start(
        self,
        pipeline: str,
        params: Mapping[str, Any] | None = None,
        *,
        executor: str = "local",
        trigger: Mapping[str, Any] | None = None,
        started_timeout: float = 120.0,
    ) -> str:
        """Start a registered pipeline in a new process; return its run id once it runs.

        The run lives in its own ``modelyard pipelines run`` process, so a server (with its
        threads) never forks step processes itself, and the run survives the caller. Raises if
        the process ends before the run is recorded (its error output says why).
        """
        self.get(pipeline)
        run_id = str(ULID())
        command = [
            sys.executable, "-m", "modelyard", "pipelines", "run", pipeline,
            "--executor", executor, "--run-id", run_id, "--json",
            "--params-json", jsonio.dumps(dict(params or {})).decode(),
            "--trigger-json", jsonio.dumps(dict(trigger or {"kind": "manual"})).decode(),
        ]  # fmt: skip
        settings = self.ws.settings
        env = {
            **os.environ,
            "MODELYARD_HOME": str(settings.resolved_home),
            "MODELYARD_DATABASE_URL": settings.resolved_database_url,
            "MODELYARD_ARTIFACT_ROOT": settings.resolved_artifact_root,
        }
        env.pop("MODELYARD_URI", None)
        if settings.s3_endpoint_url:
            env["MODELYARD_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
        logs = settings.resolved_home / "pipeline-runs"
        logs.mkdir(parents=True, exist_ok=True)
        out = (logs / f"{run_id}.log").open("wb")
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()
        deadline = time.monotonic() + started_timeout
        while time.monotonic() < deadline:
            with self.store.read() as s:
                if s.get(PipelineRunRow, run_id) is not None:
                    return run_id
            if proc.poll() is not None:
                tail = (logs / f"{run_id}.log").read_text(errors="replace")[-2000:]
                raise ModelyardError(
                    f"pipeline {pipeline!r} did not start (exit {proc.returncode}): {tail}"
                )
            time.sleep(0.05)
        proc.kill()
        raise ModelyardError(f"pipeline {pipeline!r} did not start within {started_timeout} s")

    def wait(self, run_id: str, *, timeout: float = 3600.0, poll: float = 0.1) -> PipelineRun:
        """The run once it has ended (``TimeoutError`` after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.get_run(run_id)
            if run.status != "running":
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"pipeline run {run_id} still running after {timeout} s")
            time.sleep(poll)

    @cached_property
    def triggers(self) -> TriggerService:
        """Triggers that start this workspace's pipelines (schedule, alert, new data)."""
        from modelyard.pipelines.triggers import TriggerService

        return TriggerService(self.ws, self._launch)

    def _launch(self, pipeline: str, params: dict[str, Any], trigger: dict[str, Any]) -> str:
        return self.start(pipeline, params, trigger=trigger)

    def get_run(self, run_id: str) -> PipelineRun:
        """A run with its steps, logs and outputs."""
        with self.store.read() as s:
            row = s.get(PipelineRunRow, run_id) if isinstance(run_id, str) else None
            if row is None:
                raise NotFound(f"no pipeline run {run_id!r}; `modelyard pipelines runs` lists them")
            steps = s.scalars(select(PipelineStepRow).where(PipelineStepRow.run_id == run_id)).all()
            return run_entity(row, builtins.list(steps))

    def list_runs(
        self,
        pipeline: str | None = None,
        status: str | None = None,
        *,
        limit: int = 100,
        page_token: str | None = None,
    ) -> Page[PipelineRun]:
        """Runs, newest first, without their steps (``get_run`` has them)."""
        if status is not None and status not in ("running", "succeeded", "failed"):
            raise InvalidInput(f"status must be running, succeeded or failed, not {status!r}")
        offset = decode_token(page_token)
        check_limit(limit)
        query = select(PipelineRunRow)
        if pipeline is not None:
            query = query.where(PipelineRunRow.pipeline == pipeline)
        if status is not None:
            query = query.where(PipelineRunRow.status == status)
        query = query.order_by(PipelineRunRow.started_at.desc(), PipelineRunRow.id.desc())
        with self.store.read() as s:
            rows = s.scalars(query.offset(offset).limit(limit + 1)).all()
        return Page.of([run_entity(r) for r in rows[:limit]], offset, limit, more=len(rows) > limit)

    def output(self, run_id: str, step: str) -> Any:
        """The value step ``step`` returned in run ``run_id`` (loaded from the artifact store).

        Outputs that are not DataFrames, arrays or JSON are cloudpickled by the pipeline's
        own code; loading them runs that code, as the pipeline itself would.
        """
        with self.store.read() as s:
            row = s.scalar(
                select(PipelineStepRow).where(
                    PipelineStepRow.run_id == run_id, PipelineStepRow.step == step
                )
            )
        if row is None:
            self.get_run(run_id)  # NotFound for an unknown run
            raise NotFound(f"run {run_id} has no step {step!r}")
        if row.status not in ("succeeded", "cached") or not row.outputs.get("refs"):
            raise Conflict(f"step {step!r} of run {run_id} is {row.status}; it has no output")
        return load_output(self.ws.artifacts, row.outputs)

    def reap_stale(
        self, now: datetime | None = None, *, stale_after: float = STALE_AFTER_S
    ) -> builtins.list[str]:
        """Fail runs whose process stopped heartbeating ``stale_after`` seconds before ``now``;
        return their ids. Their unfinished steps fail or are skipped, their tracking runs fail."""
        now = now or datetime.now(UTC)
        cutoff = now - timedelta(seconds=stale_after)
        reaped: builtins.list[tuple[str, str | None]] = []
        stale = select(PipelineRunRow.id).where(
            PipelineRunRow.status == "running", PipelineRunRow.heartbeat_at < cutoff
        )
        with self.store.read() as s:  # the usual answer is none: no write lock for that
            if s.scalar(stale.limit(1)) is None:
                return []
        with self.store.write(self.ws.actor) as tx:
            rows = tx.session.scalars(
                select(PipelineRunRow)
                .where(PipelineRunRow.status == "running", PipelineRunRow.heartbeat_at < cutoff)
                .with_for_update(skip_locked=True)
            ).all()
            for row in rows:
                beat = (
                    row.heartbeat_at.isoformat(timespec="seconds") if row.heartbeat_at else "never"
                )
                row.status = "failed"
                row.finished_at = now
                row.error = (
                    f"the process running it stopped (owner {row.owner or 'unknown'}, last "
                    f"heartbeat {beat})"
                )
                for old, new, why in (
                    ("running", "failed", "the process running the pipeline stopped"),
                    ("pending", "skipped", "the process running the pipeline stopped"),
                ):
                    tx.session.execute(
                        update(PipelineStepRow)
                        .where(PipelineStepRow.run_id == row.id, PipelineStepRow.status == old)
                        .values(status=new, error=why, finished_at=now)
                    )
                tx.record(
                    "pipeline_run.reap",
                    "pipeline_run",
                    row.id,
                    {"status": "running"},
                    {"status": "failed", "error": row.error},
                )
                reaped.append((row.id, row.tracking_run_id))
        for _, tracking_run in reaped:
            if tracking_run:
                # Ended already, or removed: nothing to close.
                with contextlib.suppress(Conflict, NotFound):
                    self.ws.tracking.end_run(tracking_run, "failed")
        return [run_id for run_id, _ in reaped]
