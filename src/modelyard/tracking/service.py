"""Experiments, runs, params, tags, metrics, run artifacts and datasets.

Every change of state (experiment created, run started or ended, params logged, tags set,
artifact stored, dataset registered or linked to a run) is written with an audit record.
Metric points are the exception: see :meth:`TrackingService.log_metrics`.
"""

from __future__ import annotations

import hashlib
import io
import math
import numbers
import operator
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Float, Select, and_, bindparam, func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased
from sqlalchemy.types import NullType
from ulid import ULID

from modelyard.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from modelyard.page import MAX_LIMIT, Page, check_limit, decode_token
from modelyard.store import Tx
from modelyard.store.tables import (
    Base,
    DatasetRow,
    ExperimentRow,
    MetricRow,
    RunArtifactRow,
    RunInputRow,
    RunParamRow,
    RunRow,
    RunTagRow,
)
from modelyard.tracking.entities import (
    KEY,
    MAX_STEP,
    CategoricalProfile,
    ColumnSchema,
    Dataset,
    Experiment,
    Histogram,
    MetricPoint,
    NumericProfile,
    Run,
    RunArtifact,
    RunComparison,
    RunInput,
    ValueCount,
)

if TYPE_CHECKING:
    import pandas as pd

    from modelyard.workspace import Workspace

END_STATUSES = ("finished", "failed", "killed")
# Dataset names appear in URLs, so they are kept URL-safe.
DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,255}$")
TOP_VALUES = 10
HISTOGRAM_BINS = 10

# SQLite has no NaN (it stores NULL, which run_metrics.value forbids), so there NaN is
# stored as the text 'NaN'; the value is bound untyped on SQLite because SQLAlchemy's
# Float would turn the text back into a float. SQLite sorts text after every number, as
# PostgreSQL sorts NaN, so filters and ordering agree on both databases.
INSERT_METRICS = insert(Base.metadata.tables[MetricRow.__tablename__]).values(
    value=bindparam("metric_value", type_=Float().with_variant(NullType(), "sqlite"))
)


def _check_key(key: Any, what: str) -> str:
    if not isinstance(key, str) or not KEY.match(key):
        raise InvalidInput(
            f"{what} key {key!r} is not valid; use 1-256 letters, digits, spaces and '_-./:'"
        )
    return key


def _stringify(values: Mapping[str, Any] | None, what: str) -> dict[str, str]:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise InvalidInput(f"{what}s must be a mapping of key to value")
    return {_check_key(k, what): str(v) for k, v in values.items()}


def _check_experiment_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 256:
        raise InvalidInput("experiment name must be 1-256 characters and not only spaces")
    if any(ord(c) < 32 for c in name):
        raise InvalidInput(f"experiment name {name!r} contains control characters; remove them")
    return name


class TrackingService:
    """Record what training runs did: params, metrics, artifacts and the datasets they used."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.store = ws.store

    # --- experiments ----------------------------------------------------------------------

    def create_experiment(
        self, name: str, *, description: str = "", project: str | None = None
    ) -> Experiment:
        """Create an experiment, optionally linked to a project by name."""
        _check_experiment_name(name)
        project_id = self.ws.projects.resolve_id(project) if project else None
        with self.store.write(self.ws.actor) as tx:
            row = self._insert_experiment(tx, name, description, project_id)
        return _experiment(row, project)

    def get_experiment(self, name_or_id: str) -> Experiment:
        with self.store.read() as s:
            row = self._experiment_row(s, name_or_id)
        return self._experiments([row])[0]

    def list_experiments(
        self,
        *,
        q: str | None = None,
        project: str | None = None,
        limit: int = 100,
        page_token: str | None = None,
    ) -> Page[Experiment]:
        """Experiments by name; ``q`` matches a substring of the name or description."""
        offset = decode_token(page_token)
        check_limit(limit)
        query = select(ExperimentRow).order_by(ExperimentRow.name)
        if q:
            query = query.where(
                or_(
                    ExperimentRow.name.icontains(q, autoescape=True),
                    ExperimentRow.description.icontains(q, autoescape=True),
                )
            )
        if project:
            query = query.where(ExperimentRow.project_id == self.ws.projects.resolve_id(project))
        with self.store.read() as s:
            rows = s.scalars(query.offset(offset).limit(limit + 1)).all()
        return Page.of(self._experiments(rows[:limit]), offset, limit, more=len(rows) > limit)

    def count_runs(self, experiment_ids: Sequence[str]) -> dict[str, int]:
        """How many runs each experiment has, in one grouped query (absent ids count 0)."""
        ids = list(dict.fromkeys(experiment_ids))
        if len(ids) > MAX_LIMIT:
            raise InvalidInput(f"count runs of at most {MAX_LIMIT} experiments at once")
        counts = dict.fromkeys(ids, 0)
        if ids:
            with self.store.read() as s:
                counts.update(
                    s.execute(
                        select(RunRow.experiment_id, func.count())
                        .where(RunRow.experiment_id.in_(ids))
                        .group_by(RunRow.experiment_id)
                    )
                    .tuples()
                    .all()
                )
        return counts

    def get_or_create_experiment(self, name: str) -> Experiment:
        """The experiment called ``name``, created if it does not exist yet."""
        try:
            return self.get_experiment(name)
        except NotFound:
            pass
        try:
            return self.create_experiment(name)
        except (AlreadyExists, IntegrityError):  # created concurrently by someone else
            return self.get_experiment(name)

    def _insert_experiment(
        self, tx: Tx, name: str, description: str, project_id: str | None
    ) -> ExperimentRow:
        if tx.session.scalar(select(ExperimentRow.id).where(ExperimentRow.name == name)):
            raise AlreadyExists(f"experiment {name!r} exists already; pick another name")
        row = ExperimentRow(
            id=str(ULID()),
            name=name,
            description=description,
            project_id=project_id,
            archived=False,
            created_at=datetime.now(UTC),
        )
        tx.session.add(row)
        tx.record(
            "experiment.create",
            "experiment",
            name,
            after={"id": row.id, "description": description, "project_id": project_id},
        )
        return row

    def _experiments(self, rows: Sequence[ExperimentRow]) -> list[Experiment]:
        names = self.ws.projects.names(r.project_id for r in rows if r.project_id)
        return [_experiment(r, names.get(r.project_id or "")) for r in rows]

    @staticmethod
    def _find_experiment(session: Session, name_or_id: str) -> ExperimentRow | None:
        row = session.get(ExperimentRow, name_or_id) if len(name_or_id) == 26 else None
        return row or session.scalar(select(ExperimentRow).where(ExperimentRow.name == name_or_id))

    def _experiment_row(self, session: Session, name_or_id: str) -> ExperimentRow:
        row = self._find_experiment(session, name_or_id)
        if row is None:
            raise NotFound(f"no experiment {name_or_id!r}; `modelyard experiments list` shows them")
        return row

    # --- runs -----------------------------------------------------------------------------

    def start_run(
        self,
        experiment: str,
        *,
        name: str = "",
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Run:
        """Start a run in ``experiment`` (a name or id; a new name creates the experiment)."""
        param_values = _stringify(params, "param")
        tag_values = _stringify(tags, "tag")
        if len(name) > 256:
            raise InvalidInput("run name must be at most 256 characters")
        now = datetime.now(UTC)
        with self.store.write(self.ws.actor) as tx:
            exp = self._find_experiment(tx.session, experiment)
            if exp is None:
                exp = self._insert_experiment(tx, _check_experiment_name(experiment), "", None)
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
            return _runs(s, [self._run_row(s, run_id)])[0]

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
            return _runs(tx.session, [row])[0]

    def search_runs(
        self,
        experiment: str,
        *,
        filter_string: str = "",
        order_by: str | Sequence[str] | None = None,
        limit: int = 100,
        page_token: str | None = None,
    ) -> Page[Run]:
        """Runs of ``experiment`` matching ``filter_string``, newest first unless ``order_by``.

        The filter is clauses joined by ``and``, each ``<kind>.<key> <op> <value>``:
        ``metrics.rmse < 0.5``, ``params.alpha = '0.1'``, ``tags.team != 'x'``,
        ``attributes.status = 'finished'``. Metrics compare their latest value with a number
        (``= != < <= > >=``); params, tags and attributes compare strings (``= != like ilike``).
        Keys with other characters go in backticks: ``metrics.`val loss` < 1``.
        ``order_by`` is e.g. ``"metrics.rmse asc"`` or ``["params.alpha", "start_time desc"]``;
        runs without the ordering value come last.
        """
        offset = decode_token(page_token)
        check_limit(limit)
        clauses = _parse_filter(filter_string)
        orderings = _parse_order_by(order_by)
        with self.store.read() as s:
            exp = self._experiment_row(s, experiment)
            query = select(RunRow).where(RunRow.experiment_id == exp.id)
            for clause in clauses:
                query = clause.apply(query, exp.id)
            order_columns = []
            for ordering in orderings:
                query, column = ordering.apply(query, exp.id)
                order_columns.append(column)
            query = query.order_by(*order_columns, RunRow.id.desc())
            rows = s.scalars(query.offset(offset).limit(limit + 1)).all()
            items = _runs(s, rows[:limit])
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
            by_id = {r.id: r for r in _runs(s, rows)}
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

    @staticmethod
    def _run_row(session: Session, run_id: str) -> RunRow:
        row = session.get(RunRow, run_id) if isinstance(run_id, str) else None
        if row is None:
            raise NotFound(_no_run(run_id))
        return row

    def _running_row(self, session: Session, run_id: str, what: str) -> RunRow:
        row = self._run_row(session, run_id)
        if row.status != "running":
            raise Conflict(
                f"run {run_id} is {row.status}; {what} can only be logged to a running run, "
                "start a new run"
            )
        return row

    # --- params and tags ------------------------------------------------------------------

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log params as strings; a param once logged keeps its value (:class:`Conflict`)."""
        values = _stringify(params, "param")
        if not values:
            return
        with self.store.write(self.ws.actor) as tx:
            self._running_row(tx.session, run_id, "params")
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
                raise Conflict(
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

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set tags (as strings); unlike params, tags may change, also after the run ended."""
        values = _stringify(tags, "tag")
        if not values:
            return
        with self.store.write(self.ws.actor) as tx:
            self._run_row(tx.session, run_id)
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
        now = datetime.now(UTC)
        if isinstance(metrics, Mapping):
            points: list[tuple[Any, Any, Any, Any]] = [
                (k, v, step, None) for k, v in metrics.items()
            ]
        else:
            points = [_point_fields(p) for p in metrics]
        keys: set[str] = set()
        rows = []
        for key, value, point_step, timestamp in points:
            if not (isinstance(key, str) and key in keys):
                keys.add(_check_key(key, "metric"))
            rows.append(
                {
                    "run_id": run_id,
                    "key": key,
                    "metric_value": self._stored_metric(_metric_value(key, value)),
                    "step": _metric_step(key, point_step),
                    "timestamp": _metric_time(key, timestamp, now),
                }
            )
        # Metric points are measurements, not changes of state: they are not audited, so
        # logging them costs one status check and one bulk INSERT (a benchmarked hot path).
        # Who logged them is known from the run's own audited start.
        with self.store.write(self.ws.actor) as tx:
            status = tx.session.scalar(select(RunRow.status).where(RunRow.id == run_id))
            if status is None:
                raise NotFound(_no_run(run_id))
            if status != "running":
                raise Conflict(
                    f"run {run_id} is {status}; metrics can only be logged to a running run, "
                    "start a new run"
                )
            if rows:
                tx.session.execute(INSERT_METRICS, rows)

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

    # --- datasets -------------------------------------------------------------------------

    def log_dataset(
        self,
        name: str,
        data: pd.DataFrame | str | os.PathLike[str],
        *,
        source: str = "",
        run_id: str | None = None,
        context: str = "training",
        store_data: bool = True,
    ) -> Dataset:
        """Register a dataset version: digest, schema, row count and column profiles.

        ``data`` is a DataFrame or the path of a ``.csv`` or ``.parquet`` file. Content equal
        to an existing version of ``name`` returns that version instead of a new one. With
        ``store_data`` the data is kept in the artifact store (as Parquet) for
        :meth:`load_dataset`. With ``run_id`` the version is recorded as an input of the run.
        """
        if not isinstance(name, str) or not DATASET_NAME.match(name):
            raise InvalidInput(
                f"dataset name {name!r} is not valid; use letters, digits, '.', '_', '-' "
                "starting with a letter or digit"
            )
        if not context or len(context) > 32:
            raise InvalidInput("context must be 1-32 characters, e.g. 'training' or 'evaluation'")
        frame, source = _load_frame(data, source)
        digest = _content_digest(frame)
        schema = [ColumnSchema(name=c, dtype=str(t)) for c, t in frame.dtypes.items()]
        profile = {c: p.model_dump(mode="json") for c, p in _profile(frame).items()}
        artifact_digest = self.ws.artifacts.put_bytes(_parquet(frame)) if store_data else None
        with self.store.write(self.ws.actor) as tx:
            if run_id is not None:
                self._run_row(tx.session, run_id)
            row = tx.session.scalar(
                select(DatasetRow).where(DatasetRow.name == name, DatasetRow.digest == digest)
            )
            if row is None:
                last = tx.session.scalar(
                    select(func.max(DatasetRow.version)).where(DatasetRow.name == name)
                )
                row = DatasetRow(
                    id=str(ULID()),
                    name=name,
                    version=(last or 0) + 1,
                    digest=digest,
                    source=source,
                    num_rows=len(frame),
                    schema_=[c.model_dump() for c in schema],
                    profile=profile,
                    artifact_digest=artifact_digest,
                    created_at=datetime.now(UTC),
                    created_by=self.ws.actor,
                )
                tx.session.add(row)
                try:
                    tx.session.flush()  # before the run input that refers to it
                except IntegrityError:
                    raise Conflict(
                        f"another version of dataset {name!r} was registered at the same "
                        "time; log it again"
                    ) from None
                tx.record(
                    "dataset.create",
                    "dataset",
                    row.id,
                    after={
                        "name": name,
                        "version": row.version,
                        "digest": digest,
                        "num_rows": row.num_rows,
                        "source": source,
                        "artifact_digest": artifact_digest,
                    },
                )
            elif artifact_digest and row.artifact_digest is None:
                row.artifact_digest = artifact_digest
                tx.record(
                    "dataset.store_data",
                    "dataset",
                    row.id,
                    {"artifact_digest": None},
                    {"artifact_digest": artifact_digest},
                )
            link = (run_id, row.id, context)
            if run_id is not None and tx.session.get(RunInputRow, link) is None:
                tx.session.add(RunInputRow(run_id=run_id, dataset_id=row.id, context=context))
                tx.record(
                    "run.log_input",
                    "run",
                    run_id,
                    after={
                        "dataset_id": row.id,
                        "name": name,
                        "version": row.version,
                        "context": context,
                    },
                )
            try:
                tx.session.flush()
            except IntegrityError:
                raise Conflict(
                    f"run {run_id} was linked to dataset {name!r} at the same time; log it again"
                ) from None
            return _dataset(row)

    def get_dataset(self, name: str, version: int | None = None) -> Dataset:
        """Version ``version`` of dataset ``name``, or its latest version."""
        with self.store.read() as s:
            return _dataset(self._dataset_row(s, name, version))

    def get_dataset_by_id(self, dataset_id: str) -> Dataset:
        with self.store.read() as s:
            row = s.get(DatasetRow, dataset_id)
        if row is None:
            raise NotFound(f"no dataset with id {dataset_id!r}; {_DATASETS_LISTED}")
        return _dataset(row)

    def list_datasets(
        self,
        *,
        name: str | None = None,
        q: str | None = None,
        limit: int = 100,
        page_token: str | None = None,
    ) -> Page[Dataset]:
        """Dataset versions by name, newest version first; ``q`` matches part of the name."""
        offset = decode_token(page_token)
        check_limit(limit)
        query = select(DatasetRow).order_by(DatasetRow.name, DatasetRow.version.desc())
        if name is not None:
            query = query.where(DatasetRow.name == name)
        if q:
            query = query.where(DatasetRow.name.icontains(q, autoescape=True))
        with self.store.read() as s:
            rows = s.scalars(query.offset(offset).limit(limit + 1)).all()
        return Page.of([_dataset(r) for r in rows[:limit]], offset, limit, more=len(rows) > limit)

    def dataset_runs(
        self, dataset_id: str, *, limit: int = 100, page_token: str | None = None
    ) -> Page[Run]:
        """The runs that logged the dataset version ``dataset_id`` as an input, newest first."""
        offset = decode_token(page_token)
        check_limit(limit)
        query = (
            select(RunRow)
            .where(
                RunRow.id.in_(
                    select(RunInputRow.run_id).where(RunInputRow.dataset_id == dataset_id)
                )
            )
            .order_by(RunRow.start_time.desc(), RunRow.id.desc())
        )
        with self.store.read() as s:
            rows = s.scalars(query.offset(offset).limit(limit + 1)).all()
            items = _runs(s, rows[:limit])
        return Page.of(items, offset, limit, more=len(rows) > limit)

    def load_dataset(self, name: str, version: int | None = None) -> pd.DataFrame:
        """The data of a dataset version, read back from the artifact store."""
        with self.store.read() as s:
            row = self._dataset_row(s, name, version)
        if row.artifact_digest is None:
            raise NotFound(
                f"dataset {name!r} version {row.version} was logged with store_data=False; "
                "its data is not in the artifact store, log it again with store_data=True"
            )
        import pandas as pd

        return pd.read_parquet(io.BytesIO(self.ws.artifacts.get_bytes(row.artifact_digest)))

    @staticmethod
    def _dataset_row(session: Session, name: str, version: int | None) -> DatasetRow:
        query = select(DatasetRow).where(DatasetRow.name == name)
        if version is None:
            query = query.order_by(DatasetRow.version.desc()).limit(1)
        else:
            query = query.where(DatasetRow.version == version)
        row = session.scalar(query)
        if row is None:
            if version is None:
                raise NotFound(f"no dataset {name!r}; {_DATASETS_LISTED}")
            raise NotFound(f"dataset {name!r} has no version {version}; {_DATASETS_LISTED}")
        return row


# --- building entities ------------------------------------------------------------------


def _experiment(row: ExperimentRow, project: str | None) -> Experiment:
    return Experiment(
        id=row.id,
        name=row.name,
        description=row.description,
        project=project,
        archived=row.archived,
        created_at=row.created_at,
    )


def _latest_metrics(run_ids: Sequence[str]) -> Select[Any]:
    """``(run_id, key, value)`` of the last point of each metric: highest step, then newest."""
    rank = func.row_number().over(
        partition_by=(MetricRow.run_id, MetricRow.key),
        order_by=(MetricRow.step.desc(), MetricRow.timestamp.desc(), MetricRow.id.desc()),
    )
    ranked = (
        select(MetricRow.run_id, MetricRow.key, MetricRow.value, rank.label("rank"))
        .where(MetricRow.run_id.in_(run_ids))
        .subquery()
    )
    return select(ranked.c.run_id, ranked.c.key, ranked.c.value).where(ranked.c.rank == 1)


def _runs(session: Session, rows: Sequence[RunRow]) -> list[Run]:
    """Entities for ``rows`` with a fixed number of queries, however many runs there are."""
    if not rows:
        return []
    ids = [r.id for r in rows]
    experiments = dict(
        session.execute(
            select(ExperimentRow.id, ExperimentRow.name).where(
                ExperimentRow.id.in_({r.experiment_id for r in rows})
            )
        ).all()
    )
    params: dict[str, dict[str, str]] = {i: {} for i in ids}
    for p in session.scalars(
        select(RunParamRow).where(RunParamRow.run_id.in_(ids)).order_by(RunParamRow.key)
    ):
        params[p.run_id][p.key] = p.value
    tags: dict[str, dict[str, str]] = {i: {} for i in ids}
    for t in session.scalars(
        select(RunTagRow).where(RunTagRow.run_id.in_(ids)).order_by(RunTagRow.key)
    ):
        tags[t.run_id][t.key] = t.value
    metrics: dict[str, dict[str, float]] = {i: {} for i in ids}
    for run_id, key, value in session.execute(_latest_metrics(ids).order_by("key")):
        metrics[run_id][key] = float(value)
    inputs: dict[str, list[RunInput]] = {i: [] for i in ids}
    for link, ds in session.execute(
        select(RunInputRow, DatasetRow)
        .join(DatasetRow, DatasetRow.id == RunInputRow.dataset_id)
        .where(RunInputRow.run_id.in_(ids))
        .order_by(DatasetRow.name, DatasetRow.version, RunInputRow.context)
    ):
        inputs[link.run_id].append(
            RunInput(
                dataset_id=ds.id,
                name=ds.name,
                version=ds.version,
                digest=ds.digest,
                context=link.context,
            )
        )
    artifacts: dict[str, list[RunArtifact]] = {i: [] for i in ids}
    for a in session.scalars(
        select(RunArtifactRow).where(RunArtifactRow.run_id.in_(ids)).order_by(RunArtifactRow.path)
    ):
        artifacts[a.run_id].append(RunArtifact(path=a.path, digest=a.digest, size=a.size))
    return [
        Run(
            id=r.id,
            experiment_id=r.experiment_id,
            experiment=experiments.get(r.experiment_id, ""),
            name=r.name,
            status=r.status,
            start_time=r.start_time,
            end_time=r.end_time if r.end_time else None,
            created_by=r.created_by,
            params=params[r.id],
            tags=tags[r.id],
            metrics=metrics[r.id],
            inputs=inputs[r.id],
            artifacts=artifacts[r.id],
        )
        for r in rows
    ]


def _dataset(row: DatasetRow) -> Dataset:
    return Dataset.model_validate(
        {
            "id": row.id,
            "name": row.name,
            "version": row.version,
            "digest": row.digest,
            "source": row.source,
            "num_rows": row.num_rows,
            "schema": row.schema_,
            "profile": row.profile,
            "artifact_digest": row.artifact_digest,
            "created_at": row.created_at,
            "created_by": row.created_by,
        }
    )


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


# --- search -----------------------------------------------------------------------------

_KINDS = {
    "metric": "metrics",
    "metrics": "metrics",
    "param": "params",
    "params": "params",
    "tag": "tags",
    "tags": "tags",
    "attribute": "attributes",
    "attributes": "attributes",
    "attr": "attributes",
    "run": "attributes",
}
_ATTRIBUTES = {
    "id": RunRow.id,
    "run_id": RunRow.id,
    "name": RunRow.name,
    "run_name": RunRow.name,
    "status": RunRow.status,
    "start_time": RunRow.start_time,
    "end_time": RunRow.end_time,
    "created_by": RunRow.created_by,
}
_NUMERIC_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_STRING_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "like": lambda column, value: column.like(value),
    "ilike": lambda column, value: column.ilike(value),
}
_FIELD = r"(?P<kind>[A-Za-z]+)\.(?P<key>`[^`]+`|[A-Za-z0-9_\-./:]+)"
_CLAUSE = re.compile(
    rf"""\s*{_FIELD}\s*
    (?P<op>!=|<=|>=|=|<|>|(?i:ilike|like)(?=[\s'"]))\s*
    (?P<value>'[^']*'|"[^"]*"|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|(?i:nan|[-+]?inf))\s*""",
    re.VERBOSE,
)
_AND = re.compile(r"and\b", re.IGNORECASE)
_ORDER = re.compile(
    r"^\s*(?:(?P<kind>[A-Za-z]+)\.)?(?P<key>`[^`]+`|[A-Za-z0-9_\-./:]+)"
    r"(?:\s+(?P<dir>asc|desc))?\s*$",
    re.IGNORECASE,
)


def _field(kind: str, key: str) -> tuple[str, str]:
    resolved = _KINDS.get(kind.lower())
    if resolved is None:
        raise InvalidInput(
            f"unknown field kind {kind!r}; use metrics., params., tags. or attributes."
        )
    key = key[1:-1] if key.startswith("`") else key
    if resolved == "attributes" and key not in _ATTRIBUTES:
        raise InvalidInput(f"unknown run attribute {key!r}; use one of {', '.join(_ATTRIBUTES)}")
    return resolved, key


def _latest_metric(key: str) -> Any:
    """The value of the last point of metric ``key`` of the run in the outer query.

    A subquery correlated with the run, one seek of ix_run_metrics_run_key_step per run: a
    ranked (window) subquery joined to the runs instead is re-run for every row on SQLite,
    and a filter and an ordering on two metrics took a minute over 10,000 runs.
    """
    return (
        select(MetricRow.value)
        .where(MetricRow.run_id == RunRow.id, MetricRow.key == key)
        .order_by(MetricRow.step.desc(), MetricRow.timestamp.desc(), MetricRow.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def _value_column(
    query: Select[Any], kind: str, key: str, experiment_id: str, *, outer: bool
) -> tuple[Select[Any], Any]:
    """Join what ``kind.key`` names onto the runs query; return the query and its column."""
    if kind == "attributes":
        return query, _ATTRIBUTES[key]
    if kind == "metrics":
        # a run without the metric has NULL here: a filter drops it, an ordering puts it last
        return query, _latest_metric(key)
    table: Any = aliased(RunParamRow) if kind == "params" else aliased(RunTagRow)
    on = and_(table.run_id == RunRow.id, table.key == key)
    return query.join(table, on, isouter=outer), table.value


@dataclass
class _Clause:
    kind: str
    key: str
    op: str
    value: str | float

    def apply(self, query: Select[Any], experiment_id: str) -> Select[Any]:
        query, column = _value_column(query, self.kind, self.key, experiment_id, outer=False)
        ops = _NUMERIC_OPS if self.kind == "metrics" else _STRING_OPS
        return query.where(ops[self.op](column, self.value))


@dataclass
class _Ordering:
    kind: str
    key: str
    descending: bool

    def apply(self, query: Select[Any], experiment_id: str) -> tuple[Select[Any], Any]:
        query, column = _value_column(query, self.kind, self.key, experiment_id, outer=True)
        return query, (column.desc() if self.descending else column.asc()).nulls_last()


def _parse_filter(text: str) -> list[_Clause]:
    clauses: list[_Clause] = []
    pos, text = 0, text or ""
    if not text.strip():
        return clauses
    while True:
        m = _CLAUSE.match(text, pos)
        if m is None:
            raise InvalidInput(
                f"cannot read the filter at {text[pos : pos + 30]!r}; write clauses like "
                "\"metrics.rmse < 0.5 and params.alpha = '0.1'\" (strings in quotes)"
            )
        kind, key = _field(m["kind"], m["key"])
        op, raw = m["op"].lower(), m["value"]
        quoted = raw[0] in "'\""
        if kind == "metrics":
            if quoted or op not in _NUMERIC_OPS:
                raise InvalidInput(
                    f"metrics.{key} compares with a number using = != < <= > >=, e.g. "
                    f"metrics.{key} < 0.5"
                )
            value: str | float = float(raw)
        else:
            if op not in _STRING_OPS:
                raise InvalidInput(
                    f"{kind}.{key} compares strings using = != like ilike, not {op!r}"
                )
            if kind == "attributes" and key in ("start_time", "end_time"):
                raise InvalidInput(f"attributes.{key} can be ordered by but not filtered on")
            value = raw[1:-1] if quoted else raw
        clauses.append(_Clause(kind, key, op, value))
        pos = m.end()
        if pos == len(text):
            return clauses
        conj = _AND.match(text, pos)
        if conj is None:
            raise InvalidInput(
                f"expected 'and' at {text[pos : pos + 30]!r}; clauses are joined with 'and'"
            )
        pos = conj.end()


def _parse_order_by(order_by: str | Sequence[str] | None) -> list[_Ordering]:
    if not order_by:
        return [_Ordering("attributes", "start_time", descending=True)]
    items = [order_by] if isinstance(order_by, str) else list(order_by)
    orderings = []
    for item in items:
        m = _ORDER.match(item)
        if m is None:
            raise InvalidInput(
                f"cannot read order_by {item!r}; write e.g. 'metrics.rmse asc' or 'start_time desc'"
            )
        kind, key = _field(m["kind"] or "attributes", m["key"])
        orderings.append(_Ordering(kind, key, (m["dir"] or "asc").lower() == "desc"))
    return orderings


# --- datasets ---------------------------------------------------------------------------


def _load_frame(data: Any, source: str) -> tuple[pd.DataFrame, str]:
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        frame = data
    elif isinstance(data, str | os.PathLike):
        path = Path(data)
        if not path.is_file():
            raise InvalidInput(f"no file at {str(path)!r}; give a DataFrame or a .csv/.parquet")
        suffix = path.suffix.lower()
        if suffix == ".csv":
            frame = pd.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise InvalidInput(f"cannot read {path.name!r}; give a .csv or .parquet file")
        source = source or str(path)
    else:
        raise InvalidInput(
            f"cannot log a {type(data).__name__} as a dataset; give a DataFrame or a file path"
        )
    # Column names become strings (Parquet requires it) and the index is dropped: a dataset
    # is its columns, so a reordered or renumbered index is the same data.
    frame = frame.rename(columns=str).reset_index(drop=True)
    duplicated = frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        raise InvalidInput(f"column names must be unique; rename {', '.join(duplicated)}")
    return frame, source


def _content_digest(frame: pd.DataFrame) -> str:
    """sha256 of the schema and of pandas' per-row hashes (``hash_pandas_object``).

    Chosen over hashing Parquet bytes because the Parquet writer embeds its own and the
    pandas version in the file, so equal data would hash differently after an upgrade;
    the row hashes depend only on the values, their order, and the column dtypes.
    """
    import pandas as pd

    h = hashlib.sha256()
    h.update(orjson.dumps([[name, str(dtype)] for name, dtype in frame.dtypes.items()]))
    try:
        rows = pd.util.hash_pandas_object(frame, index=False)
    except TypeError as exc:
        raise InvalidInput(
            f"the dataset has values that cannot be hashed ({exc}); use scalar columns"
        ) from None
    h.update(rows.to_numpy(dtype="<u8").tobytes())
    return "sha256:" + h.hexdigest()


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, engine="pyarrow", index=False)
    return buffer.getvalue()


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _profile(frame: pd.DataFrame) -> dict[str, NumericProfile | CategoricalProfile]:
    """Per-column statistics. Numeric statistics cover the finite values; ``std`` is the
    sample standard deviation (ddof=1, pandas' convention); quantiles interpolate linearly
    (numpy's default)."""
    import numpy as np
    import pandas as pd

    profiles: dict[str, NumericProfile | CategoricalProfile] = {}
    for name in frame.columns:
        column = frame[name]
        missing = int(column.isna().sum())
        count = len(column) - missing
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            values = column.dropna().to_numpy(dtype="float64")
            finite = values[np.isfinite(values)]
            if finite.size == 0:
                profiles[name] = NumericProfile(count=count, missing=missing)
                continue
            p25, p50, p75 = np.percentile(finite, [25, 50, 75])
            counts, edges = np.histogram(finite, bins=HISTOGRAM_BINS)
            profiles[name] = NumericProfile(
                count=count,
                missing=missing,
                mean=_finite(np.mean(finite)),
                std=_finite(np.std(finite, ddof=1)) if finite.size > 1 else None,
                min=_finite(np.min(finite)),
                p25=_finite(p25),
                p50=_finite(p50),
                p75=_finite(p75),
                max=_finite(np.max(finite)),
                histogram=Histogram(counts=counts.tolist(), edges=edges.tolist()),
            )
        else:
            counts_by_value = column.value_counts(dropna=True)
            profiles[name] = CategoricalProfile(
                count=count,
                missing=missing,
                distinct=int(column.nunique(dropna=True)),
                top=[
                    ValueCount(value=str(v), count=int(c))
                    for v, c in counts_by_value.head(TOP_VALUES).items()
                ],
            )
    return profiles


_DATASETS_LISTED = "`modelyard datasets list` shows the logged datasets"


def _no_run(run_id: str) -> str:
    return f"no run {run_id!r}; check the run id (`modelyard runs list EXPERIMENT` lists runs)"
