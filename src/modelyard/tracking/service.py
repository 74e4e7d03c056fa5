"""Experiments, runs, params, tags, metrics, run artifacts and datasets.

Every change of state (experiment created, run started, updated, ended, deleted or restored,
params logged, tags set, artifact stored, dataset registered or linked to a run) is written
with an audit record. Metric points are the exception: see :meth:`TrackingService.log_metrics`.
The service is assembled from parts: experiments in experiments.py, datasets in datasets.py,
the search grammar in search.py, and runs, params, tags, metrics and artifacts here.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Float, bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType
from ulid import ULID

from modelyard.errors import Conflict, InvalidInput, NotFound
from modelyard.page import Page, check_limit, decode_token
from modelyard.store import Tx
from modelyard.store.tables import (
    Base,
    ExperimentRow,
    MetricRow,
    RunArtifactRow,
    RunParamRow,
    RunRow,
    RunTagRow,
)
from modelyard.tracking import search
from modelyard.tracking.datasets import DATASET_NAME as DATASET_NAME  # re-exported
from modelyard.tracking.datasets import TrackingDatasets
from modelyard.tracking.entities import (
    MAX_STEP,
    Lifecycle,
    MetricPoint,
    Run,
    RunArtifact,
    RunComparison,
)
from modelyard.tracking.experiments import TrackingExperiments, check_experiment_name
from modelyard.tracking.rows import (
    check_key,
    latest_metric_points,
    no_run,
    run_entities,
    stringify,
)

END_STATUSES = ("finished", "failed", "killed")
RUN_STATUSES = ("running", *END_STATUSES)
MAX_RUN_NAME = 256

# SQLite has no NaN (it stores NULL, which run_metrics.value forbids), so there NaN is
# stored as the text 'NaN'; the value is bound untyped on SQLite because SQLAlchemy's
# Float would turn the text back into a float. SQLite sorts text after every number, as
# PostgreSQL sorts NaN, so filters and ordering agree on both databases.
INSERT_METRICS = insert(Base.metadata.tables[MetricRow.__tablename__]).values(
    value=bindparam("metric_value", type_=Float().with_variant(NullType(), "sqlite"))
)


class ParamChanged(Conflict):
    """A param logged again with another value: params are immutable."""


def _check_run_name(name: Any) -> str:
    if not isinstance(name, str) or len(name) > MAX_RUN_NAME:
        raise InvalidInput(f"run name must be a string of at most {MAX_RUN_NAME} characters")
    return name


class TrackingService(TrackingExperiments, TrackingDatasets):
    """Record what training runs did: params, metrics, artifacts and the datasets they used."""

    # --- runs -----------------------------------------------------------------------------

    def start_run(
        self,
        experiment: str = "",
        *,
        experiment_id: str | None = None,
        name: str = "",
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        start_time: datetime | None = None,
    ) -> Run:
        """Start a run in ``experiment`` (a name or id; a new name creates the experiment),
        or in the existing experiment with id ``experiment_id``. ``start_time`` (default:
        now) is for a client that timed the start itself."""
        param_values = stringify(params, "param")
        tag_values = stringify(tags, "tag")
        _check_run_name(name)
        if not experiment and experiment_id is None:
            raise InvalidInput("name the experiment to start the run in")
        now = datetime.now(UTC) if start_time is None else _utc(start_time, "start_time")
        with self.store.write(self.ws.actor) as tx:
            exp: ExperimentRow | None
            if experiment_id is not None:
                exp = self._experiment_by_id(tx.session, experiment_id)
            else:
                exp = self._find_experiment(tx.session, experiment)
            if exp is None:
                exp = self._insert_experiment(tx, check_experiment_name(experiment), "", None)
            elif exp.archived:
                raise Conflict(
                    f"experiment {exp.name!r} is archived; restore it, or start the run in "
                    "another experiment"
                )
            row = RunRow(
                id=str(ULID()),
                experiment_id=exp.id,
                name=name,
                status="running",
                start_time=now,
                end_time=None,
                created_by=self.ws.actor,
            )
            tx.session.add(row)
            # No ORM relationships link these tables, so the unit of work does not order the
            # inserts by foreign key: write the parents first.
            tx.session.flush()
            tx.session.add_all(
                RunParamRow(run_id=row.id, key=k, value=v) for k, v in param_values.items()
            )
            tx.session.add_all(
                RunTagRow(run_id=row.id, key=k, value=v) for k, v in tag_values.items()
            )
            tx.record(
                "run.start",
                "run",
                row.id,
                after={
                    "experiment": exp.name,
                    "name": name,
                    "params": param_values,
                    "tags": tag_values,
                },
            )
            return Run(
                id=row.id,
                experiment_id=exp.id,
                experiment=exp.name,
                name=name,
                status="running",
                start_time=now,
                created_by=self.ws.actor,
                params=param_values,
                tags=tag_values,
            )

    def get_run(self, run_id: str) -> Run:
        """A run with its params, tags, latest metrics, inputs and artifacts."""
        with self.store.read() as s:
            return run_entities(s, [self._run_row(s, run_id)])[0]

    def end_run(self, run_id: str, status: str = "finished") -> Run:
        """End a running run as finished, failed or killed; the same end twice is a no-op."""
        if status not in END_STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(END_STATUSES)}, got {status!r}")
        with self.store.write(self.ws.actor) as tx:
            row = self._run_row(tx.session, run_id)
            if row.status != "running" and row.status != status:
                raise Conflict(
                    f"run {run_id} has already ended as {row.status!r}; start a new run instead"
                )
            if row.status == "running":
                row.status = status
                row.end_time = datetime.now(UTC)
                tx.record("run.end", "run", run_id, {"status": "running"}, {"status": status})
            return run_entities(tx.session, [row])[0]

    def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        end_time: datetime | None = None,
        name: str | None = None,
    ) -> Run:
        """Change a run's status, end time or name, as MLflow's clients do.

        Unlike :meth:`end_run`, any status may follow any other: ``running`` again resumes
        an ended run (its end time stays until it ends again). Ending without an
        ``end_time`` ends it now. A deleted run cannot be updated: restore it first.
        """
        if status is not None and status not in RUN_STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(RUN_STATUSES)}, got {status!r}")
        if name is not None:
            _check_run_name(name)
        with self.store.write(self.ws.actor) as tx:
            row = self._active_run_row(tx.session, run_id, "updated")
            before = {"status": row.status, "end_time": row.end_time, "name": row.name}
            if status is not None:
                row.status = status
                if status != "running" and end_time is None and before["status"] == "running":
                    row.end_time = datetime.now(UTC)
            if end_time is not None:
                row.end_time = _utc(end_time, "end_time")
            if name is not None:
                row.name = name
            after = {"status": row.status, "end_time": row.end_time, "name": row.name}
            if after != before:
                tx.record_change("run.update", "run", run_id, _audited(before), _audited(after))
            return run_entities(tx.session, [row])[0]

    def delete_run(self, run_id: str) -> None:
        """Delete a run: it is kept (and can be restored), but searches leave it out."""
        with self.store.write(self.ws.actor) as tx:
            row = self._run_row(tx.session, run_id)
            if row.deleted_at is None:
                row.deleted_at = datetime.now(UTC)
                tx.record(
                    "run.delete", "run", run_id, after={"deleted_at": row.deleted_at.isoformat()}
                )

    def restore_run(self, run_id: str) -> None:
        """Bring a deleted run back."""
        with self.store.write(self.ws.actor) as tx:
            row = self._run_row(tx.session, run_id)
            if row.deleted_at is not None:
                tx.record("run.restore", "run", run_id, {"deleted_at": row.deleted_at.isoformat()})
                row.deleted_at = None

    def search_runs(
        self,
        experiment: str | None = None,
        *,
        experiment_ids: Sequence[str] | None = None,
        filter_string: str = "",
        order_by: str | Sequence[str] | None = None,
        lifecycle: Lifecycle = "active",
        limit: int = 100,
        page_token: str | None = None,
    ) -> Page[Run]:
        """Runs of ``experiment`` (a name or id) and of ``experiment_ids`` (ids; unknown
        ones have no runs) matching ``filter_string``, newest first unless ``order_by``.

        The filter is clauses joined by ``and``, each ``<kind>.<key> <op> <value>``:
        ``metrics.rmse < 0.5``, ``params.alpha = '0.1'``, ``tags.team != 'x'``,
        ``attributes.status = 'finished'``. Metrics compare their latest value with a number
        (``= != < <= > >=``); params, tags and attributes compare strings (``= != like ilike``).
        Keys with other characters go in backticks: ``metrics.`val loss` < 1``.
        ``order_by`` is e.g. ``"metrics.rmse asc"`` or ``["params.alpha", "start_time desc"]``;
        runs without the ordering value come last. :mod:`modelyard.tracking.search` has the
        whole grammar (MLflow's). ``lifecycle`` picks runs in use, deleted ones, or all.
        """
        offset = decode_token(page_token)
        check_limit(limit)
        clauses = search.parse_filter(filter_string)
        orderings = search.parse_order_by(order_by) or [
            search.Ordering("attributes", "start_time", descending=True)
        ]
        if experiment is None and experiment_ids is None:
            raise InvalidInput("name the experiment whose runs to search")
        with self.store.read() as s:
            ids = list(experiment_ids or ())
            if experiment is not None:
                ids.append(self._experiment_row(s, experiment).id)
            query = select(RunRow).where(
                RunRow.experiment_id.in_(ids), *(search.run_condition(c) for c in clauses)
            )
            if lifecycle != "all":
                deleted = RunRow.deleted_at.is_not(None)
                query = query.where(deleted if lifecycle == "deleted" else ~deleted)
            query = query.order_by(
                *(search.run_order_column(o) for o in orderings), RunRow.id.desc()
            )
            rows = s.scalars(query.offset(offset).limit(limit + 1)).all()
            items = run_entities(s, rows[:limit])
        return Page.of(items, offset, limit, more=len(rows) > limit)

    def compare_runs(self, run_ids: Sequence[str]) -> RunComparison:
        """Params and latest metrics of ``run_ids`` side by side, and which params differ."""
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            raise InvalidInput("give at least one run id to compare")
        with self.store.read() as s:
            rows = s.scalars(select(RunRow).where(RunRow.id.in_(ids))).all()
            missing = set(ids) - {r.id for r in rows}
            if missing:
                raise NotFound(f"no run(s) {', '.join(sorted(missing))}; check the run ids")
            by_id = {r.id: r for r in run_entities(s, rows)}
        runs = [by_id[i] for i in ids]
        param_keys = sorted({k for r in runs for k in r.params})
        metric_keys = sorted({k for r in runs for k in r.metrics})
        params = {k: {r.id: r.params.get(k) for r in runs} for k in param_keys}
        return RunComparison(
            run_ids=ids,
            run_names={r.id: r.name for r in runs},
            params=params,
            metrics={k: {r.id: r.metrics.get(k) for r in runs} for k in metric_keys},
            differing_params=[k for k, v in params.items() if len(set(v.values())) > 1],
        )

    def _active_run_row(self, session: Session, run_id: str, what: str) -> RunRow:
        row = self._run_row(session, run_id)
        if row.deleted_at is not None:
            raise Conflict(f"run {run_id} is deleted; restore it before it is {what}")
        return row

    def _running_row(self, session: Session, run_id: str, what: str) -> RunRow:
        row = self._active_run_row(session, run_id, f"given {what}")
        _check_running(run_id, row.status, what)
        return row

    # --- params and tags ------------------------------------------------------------------

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log params as strings; a param once logged keeps its value (:class:`ParamChanged`)."""
        values = stringify(params, "param")
        if not values:
            return
        with self.store.write(self.ws.actor) as tx:
            self._running_row(tx.session, run_id, "params")
            self._add_params(tx, run_id, values)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set tags (as strings); unlike params, tags may change, also after the run ended."""
        values = stringify(tags, "tag")
        if not values:
            return
        with self.store.write(self.ws.actor) as tx:
            self._active_run_row(tx.session, run_id, "tagged")
            self._upsert_tags(tx, run_id, values)

    def delete_tag(self, run_id: str, key: str) -> None:
        """Remove tag ``key`` from the run (:class:`NotFound` if it has no such tag)."""
        with self.store.write(self.ws.actor) as tx:
            self._active_run_row(tx.session, run_id, "changed")
            row = tx.session.get(RunTagRow, (run_id, key))
            if row is None:
                raise NotFound(
                    f"run {run_id} has no tag {key!r}; `modelyard runs show {run_id}` lists them"
                )
            tx.record("run.delete_tag", "run", run_id, {key: row.value}, None)
            tx.session.execute(
                delete(RunTagRow).where(RunTagRow.run_id == run_id, RunTagRow.key == key)
            )

    def append_to_tag(self, run_id: str, key: str, entry: Any) -> None:
        """Append ``entry`` to the JSON list tag ``key`` holds (a new list if the run has no
        such tag), in one transaction: concurrent appends are all kept."""
        check_key(key, "tag")
        with self.store.write(self.ws.actor) as tx:
            self._active_run_row(tx.session, run_id, "tagged")
            row = tx.session.get(RunTagRow, (run_id, key), with_for_update=True)
            entries: list[Any] = []
            if row is not None:
                try:
                    entries = orjson.loads(row.value)
                except orjson.JSONDecodeError:
                    entries = None  # type: ignore[assignment]
                if not isinstance(entries, list):
                    raise Conflict(f"tag {key!r} of run {run_id} does not hold a JSON list")
            value = orjson.dumps([*entries, entry]).decode()
            self._upsert_tags(tx, run_id, {key: value})

    def _add_params(self, tx: Tx, run_id: str, values: Mapping[str, str]) -> None:
        existing = dict(
            tx.session.execute(
                select(RunParamRow.key, RunParamRow.value).where(
                    RunParamRow.run_id == run_id, RunParamRow.key.in_(values)
                )
            ).all()
        )
        changed = {k: (existing[k], v) for k, v in values.items() if existing.get(k, v) != v}
        if changed:
            detail = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise ParamChanged(
                f"params are immutable; run {run_id} already has {detail}; start a new run"
            )
        new = {k: v for k, v in values.items() if k not in existing}
        if not new:
            return
        tx.session.add_all(RunParamRow(run_id=run_id, key=k, value=v) for k, v in new.items())
        tx.record("run.log_params", "run", run_id, after=new)
        try:
            tx.session.flush()
        except IntegrityError:
            raise Conflict(
                f"params of run {run_id} were logged concurrently; log them again"
            ) from None

    def _upsert_tags(self, tx: Tx, run_id: str, values: Mapping[str, str]) -> None:
        rows = {
            r.key: r
            for r in tx.session.scalars(
                select(RunTagRow).where(RunTagRow.run_id == run_id, RunTagRow.key.in_(values))
            )
        }
        before: dict[str, str | None] = {}
        after: dict[str, str] = {}
        for key, value in values.items():
            row = rows.get(key)
            if row is None:
                tx.session.add(RunTagRow(run_id=run_id, key=key, value=value))
                before[key] = None
            elif row.value != value:
                before[key] = row.value
                row.value = value
            else:
                continue
            after[key] = value
        if after:
            tx.record("run.set_tags", "run", run_id, before, after)

    # --- metrics --------------------------------------------------------------------------

    def log_metrics(
        self,
        run_id: str,
        metrics: Sequence[MetricPoint | Mapping[str, Any]] | Mapping[str, Any],
        *,
        step: int = 0,
    ) -> None:
        """Append metric points to a running run in one bulk insert.

        ``metrics`` is a list of :class:`MetricPoint` (or dicts with the same keys), or a
        ``{key: value}`` mapping logged at ``step``. Values must be numbers; NaN and
        infinities are accepted, as in MLflow.
        """
        self.log_batch(run_id, metrics=metrics, step=step)

    def log_batch(
        self,
        run_id: str,
        *,
        metrics: Sequence[MetricPoint | Mapping[str, Any]] | Mapping[str, Any] = (),
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        step: int = 0,
        running_only: bool = True,
        skip_repeated: bool = False,
    ) -> None:
        """Log metric points, params and tags to a run in one write transaction.

        Each part is checked as by :meth:`log_metrics`, :meth:`log_params` and
        :meth:`set_tags`, all before anything is written: the batch is logged whole or not
        at all. With ``running_only`` False an ended run takes them too (MLflow's clients
        log to ended runs); a deleted run never does. With ``skip_repeated`` a point equal
        to one the run has (key, step, time and value) is not stored again, as MLflow's
        server does: its 3.x client logs a run's points again to link them to a model.
        """
        rows = self._metric_rows(run_id, metrics, step)
        param_values = stringify(params, "param")
        tag_values = stringify(tags, "tag")
        # Metric points are measurements, not changes of state: they are not audited, so
        # logging them costs one status check and one bulk INSERT (a benchmarked hot path).
        # Who logged them is known from the run's own audited start.
        with self.store.write(self.ws.actor) as tx:
            state = tx.session.execute(
                select(RunRow.status, RunRow.deleted_at).where(RunRow.id == run_id)
            ).first()
            if state is None:
                raise NotFound(no_run(run_id))
            status, deleted_at = state
            if deleted_at is not None:
                raise Conflict(f"run {run_id} is deleted; restore it before logging to it")
            if running_only:
                what = "metrics" if rows else "params" if param_values else "tags"
                if rows or param_values:
                    _check_running(run_id, status, what)
            if param_values:
                self._add_params(tx, run_id, param_values)
            if tag_values:
                self._upsert_tags(tx, run_id, tag_values)
            if rows and skip_repeated:
                rows = self._new_points(tx.session, run_id, rows)
            if rows:
                tx.session.execute(INSERT_METRICS, rows)

    @staticmethod
    def _new_points(
        session: Session, run_id: str, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The ``rows`` the run does not hold already (NaN equal to NaN)."""
        logged = {
            _point(key, step, timestamp, value)
            for key, step, timestamp, value in session.execute(
                select(MetricRow.key, MetricRow.step, MetricRow.timestamp, MetricRow.value).where(
                    MetricRow.run_id == run_id,
                    MetricRow.key.in_({r["key"] for r in rows}),
                    MetricRow.step.in_({r["step"] for r in rows}),
                )
            )
        }
        fresh = []
        for r in rows:
            point = _point(r["key"], r["step"], r["timestamp"], r["metric_value"])
            if point not in logged:
                logged.add(point)
                fresh.append(r)
        return fresh

    def _metric_rows(
        self,
        run_id: str,
        metrics: Sequence[MetricPoint | Mapping[str, Any]] | Mapping[str, Any],
        step: int,
    ) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        if isinstance(metrics, Mapping):
            points: Iterable[tuple[Any, Any, Any, Any]] = [
                (k, v, step, None) for k, v in metrics.items()
            ]
        else:
            points = [_point_fields(p) for p in metrics]
        keys: set[str] = set()
        rows = []
        for key, value, point_step, timestamp in points:
            if not (isinstance(key, str) and key in keys):
                keys.add(check_key(key, "metric"))
            rows.append(
                {
                    "run_id": run_id,
                    "key": key,
                    "metric_value": self._stored_metric(_metric_value(key, value)),
                    "step": _metric_step(key, point_step),
                    "timestamp": _metric_time(key, timestamp, now),
                }
            )
        return rows

    def _stored_metric(self, value: float) -> float | str:
        if self.store.is_sqlite and math.isnan(value):
            return "NaN"
        return value

    def get_metric_history(self, run_id: str, key: str) -> list[MetricPoint]:
        """Every point logged for ``key`` in the run, by step then timestamp."""
        with self.store.read() as s:
            self._run_row(s, run_id)
            rows = s.execute(
                select(MetricRow.key, MetricRow.value, MetricRow.step, MetricRow.timestamp)
                .where(MetricRow.run_id == run_id, MetricRow.key == key)
                .order_by(MetricRow.step, MetricRow.timestamp, MetricRow.id)
            ).all()
        return [MetricPoint(key=k, value=float(v), step=st, timestamp=ts) for k, v, st, ts in rows]

    def latest_metrics(self, run_ids: Sequence[str]) -> dict[str, list[MetricPoint]]:
        """The last point (highest step, then newest) of each metric of each run, in one
        query: what :attr:`Run.metrics` holds, with steps and times."""
        with self.store.read() as s:
            return latest_metric_points(s, list(dict.fromkeys(run_ids)))

    # --- run artifacts --------------------------------------------------------------------

    def log_artifact(
        self, run_id: str, path: str, data: bytes | str | os.PathLike[str]
    ) -> RunArtifact:
        """Store ``data`` (bytes, or the path of a local file) as ``path`` inside the run.

        Logging the same path again replaces what the run points to.
        """
        rel = _artifact_path(path)
        with self.store.read() as s:
            self._run_row(s, run_id)
        if isinstance(data, bytes | bytearray | memoryview):
            blob = bytes(data)
            digest, size = self.ws.artifacts.put_bytes(blob), len(blob)
        else:
            local = Path(data)
            if not local.is_file():
                raise InvalidInput(f"no file at {str(local)!r}; give bytes or a local file path")
            digest, size = self.ws.artifacts.put_file(local), local.stat().st_size
        with self.store.write(self.ws.actor) as tx:
            self._run_row(tx.session, run_id)
            row = tx.session.get(RunArtifactRow, (run_id, rel))
            before = None if row is None else {"path": rel, "digest": row.digest, "size": row.size}
            if row is None:
                tx.session.add(RunArtifactRow(run_id=run_id, path=rel, digest=digest, size=size))
            else:
                row.digest, row.size = digest, size
            artifact = RunArtifact(path=rel, digest=digest, size=size)
            if before != artifact.model_dump():
                tx.record("run.log_artifact", "run", run_id, before, artifact.model_dump())
        return artifact

    def list_artifacts(self, run_id: str) -> list[RunArtifact]:
        with self.store.read() as s:
            self._run_row(s, run_id)
            rows = s.scalars(
                select(RunArtifactRow)
                .where(RunArtifactRow.run_id == run_id)
                .order_by(RunArtifactRow.path)
            ).all()
        return [RunArtifact(path=r.path, digest=r.digest, size=r.size) for r in rows]

    def get_artifact(self, run_id: str, path: str) -> bytes:
        """The bytes stored as ``path`` in the run, verified against their digest."""
        rel = _artifact_path(path)
        with self.store.read() as s:
            self._run_row(s, run_id)
            row = s.get(RunArtifactRow, (run_id, rel))
        if row is None:
            raise NotFound(
                f"run {run_id} has no artifact {rel!r}; `modelyard runs show {run_id}` lists them"
            )
        return self.ws.artifacts.get_bytes(row.digest)


# --- metric points ----------------------------------------------------------------------


def _point_fields(point: MetricPoint | Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
    if isinstance(point, MetricPoint):
        return point.key, point.value, point.step, point.timestamp
    if isinstance(point, Mapping):
        if "key" not in point or "value" not in point:
            raise InvalidInput("each metric point needs a 'key' and a 'value'")
        return point["key"], point["value"], point.get("step", 0), point.get("timestamp")
    raise InvalidInput(f"{point!r} is not a metric point; give MetricPoint(key, value, step)")


def _metric_value(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInput(f"metric {key!r} has value {value!r}; a metric value must be a number")
    return float(value)


def _metric_step(key: str, step: Any) -> int:
    valid = isinstance(step, numbers.Integral) and not isinstance(step, bool)
    if not valid or abs(int(step)) > MAX_STEP:
        raise InvalidInput(f"metric {key!r} has step {step!r}; a step must be a 64-bit integer")
    return int(step)


def _metric_time(key: str, timestamp: Any, default: datetime) -> datetime:
    if timestamp is None:
        return default
    if not isinstance(timestamp, datetime):
        raise InvalidInput(f"metric {key!r} has timestamp {timestamp!r}; give a datetime")
    # A naive timestamp is taken to be UTC, the only time zone modelyard stores.
    return timestamp.astimezone(UTC)


def _artifact_path(path: str) -> str:
    if not isinstance(path, str) or path.startswith("/") or "\\" in path:
        raise InvalidInput(f"artifact path {path!r} must be a relative path using '/'")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or len(path) > 1024:
        raise InvalidInput(f"artifact path {path!r} must name a file inside the run, without '..'")
    return "/".join(parts)


def _check_running(run_id: str, status: str, what: str) -> None:
    if status != "running":
        raise Conflict(
            f"run {run_id} is {status}; {what} can only be logged to a running run, start a new run"
        )


def _point(key: str, step: int, timestamp: datetime, value: Any) -> tuple[Any, ...]:
    number = float(value)
    return key, step, timestamp, "NaN" if math.isnan(number) else number


def _utc(time: Any, what: str) -> datetime:
    if not isinstance(time, datetime):
        raise InvalidInput(f"{what} must be a datetime, got {time!r}")
    return time.astimezone(UTC)  # a naive time is taken to be UTC, as everywhere


def _audited(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}
