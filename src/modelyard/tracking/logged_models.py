"""Logged models (MLflow 3): a model saved in an experiment, usually by a run, before (or
without) registration, with its own params, tags and files.

A logged model starts ``pending``; its files are uploaded (``log_file``), then it is
finalized ``ready`` (or ``failed``). Registering one makes a registry version from its files
(see :func:`modelyard.tracking.locations.resolve_artifact_files`). Its metrics are the
latest metrics of the run that logged it: modelyard records metrics per run, not per model.

Every change is audited; ids are MLflow's form, ``m-<32 hex>``.
"""

from __future__ import annotations

import os
import re
import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from modelyard.errors import Conflict, InvalidInput, NotFound
from modelyard.page import Page, check_limit, decode_token
from modelyard.store.tables import (
    ExperimentRow,
    LoggedModelArtifactRow,
    LoggedModelRow,
    RunRow,
)
from modelyard.tracking.entities import KEY, METRIC_JSON, MetricPoint
from modelyard.tracking.locations import (
    LOGGED_MODEL_ID,
    ArtifactFile,
    check_path,
    files_under,
    prefix_clause,
)
from modelyard.tracking.rows import latest_metric_points

if TYPE_CHECKING:
    from modelyard.workspace import Workspace

LoggedModelStatus = Literal["pending", "ready", "failed"]
STATUSES: tuple[LoggedModelStatus, ...] = ("pending", "ready", "failed")
#: Longest param or tag value kept (a run's params are copied onto the model it logs).
MAX_VALUE = 65_536
#: Characters MLflow refuses in a logged model's name (they would break its URIs).
_BAD_NAME = re.compile(r"[/:.%\"']")
_LISTED = "`mlflow.search_logged_models()` lists the logged models of an experiment"


class LoggedModel(BaseModel):
    """A logged model; ``metrics`` are the latest metrics of ``source_run_id``."""

    model_config = METRIC_JSON

    id: str
    experiment_id: str
    name: str
    source_run_id: str | None = None
    status: LoggedModelStatus = "pending"
    model_type: str = ""
    params: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    metrics: list[MetricPoint] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime
    created_by: str = ""


def _values(values: Mapping[str, Any] | None, what: str) -> dict[str, str]:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise InvalidInput(f"{what}s must be a mapping of key to value")
    out: dict[str, str] = {}
    for key, value in values.items():
        if not isinstance(key, str) or not KEY.match(key):
            raise InvalidInput(
                f"{what} key {key!r} is not valid; use 1-256 letters, digits, spaces and '_-./:'"
            )
        text = value if isinstance(value, str) else str(value)
        if len(text) > MAX_VALUE:
            raise InvalidInput(f"{what} {key!r} is longer than {MAX_VALUE} characters")
        out[key] = text
    return out


def _check_name(name: str | None) -> str:
    if name is None or name == "":
        # MLflow names an unnamed model too; a short random suffix keeps names apart
        return f"model-{secrets.token_hex(4)}"
    if not isinstance(name, str) or len(name) > 256 or _BAD_NAME.search(name):
        raise InvalidInput(
            f"logged model name {name!r} is not valid; use at most 256 characters, "
            "without / : . % \" or '"
        )
    return name


def _check_status(status: str) -> LoggedModelStatus:
    for known in STATUSES:
        if status == known:
            return known
    raise InvalidInput(f"status must be one of {', '.join(STATUSES)}, got {status!r}")


def _status_word(value: str) -> str:
    """A status as MLflow may spell it (``READY``, ``LOGGED_MODEL_READY``,
    ``LOGGED_MODEL_UPLOAD_FAILED``) in modelyard's words (``ready``, ``failed``)."""
    word = value.strip().lower().removeprefix("logged_model_")
    return "failed" if word == "upload_failed" else word


def _no_model(model_id: str) -> str:
    return f"no logged model {model_id!r}; {_LISTED}"


class LoggedModelService:
    """Create, change, search and delete logged models, and keep their files."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.store = ws.store

    # --- one model ------------------------------------------------------------------------

    def create(
        self,
        experiment_id: str,
        *,
        name: str | None = None,
        source_run_id: str | None = None,
        model_type: str = "",
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> LoggedModel:
        """A new ``pending`` logged model in experiment ``experiment_id`` (its id)."""
        name = _check_name(name)
        param_values = _values(params, "param")
        tag_values = _values(tags, "tag")
        if not isinstance(model_type, str) or len(model_type) > 256:
            raise InvalidInput("model_type must be a string of at most 256 characters")
        now = datetime.now(UTC)
        with self.store.write(self.ws.actor) as tx:
            if tx.session.get(ExperimentRow, experiment_id) is None:
                raise NotFound(
                    f"no experiment with id {experiment_id!r}; "
                    "`modelyard experiments list` shows them"
                )
            if source_run_id:
                run = tx.session.get(RunRow, source_run_id)
                if run is None:
                    raise NotFound(f"no run {source_run_id!r} to be the model's source run")
            row = LoggedModelRow(
                id=f"m-{uuid.uuid4().hex}",
                experiment_id=experiment_id,
                name=name,
                source_run_id=source_run_id or None,
                status="pending",
                model_type=model_type,
                params=param_values,
                tags=tag_values,
                created_at=now,
                updated_at=now,
                created_by=self.ws.actor,
            )
            tx.session.add(row)
            tx.record(
                "logged_model.create",
                "logged_model",
                row.id,
                after={
                    "experiment_id": experiment_id,
                    "name": name,
                    "source_run_id": row.source_run_id,
                    "model_type": model_type,
                    "params": param_values,
                    "tags": tag_values,
                },
            )
            return self._entities(tx.session, [row])[0]

    def get(self, model_id: str) -> LoggedModel:
        with self.store.read() as s:
            return self._entities(s, [_model_row(s, model_id)])[0]

    def finalize(self, model_id: str, status: str) -> LoggedModel:
        """Set the status, ``ready`` once every file is uploaded or ``failed``."""
        new = _check_status(status)
        with self.store.write(self.ws.actor) as tx:
            row = _model_row(tx.session, model_id)
            if row.status != new:
                tx.record(
                    "logged_model.finalize",
                    "logged_model",
                    model_id,
                    {"status": row.status},
                    {"status": new},
                )
                row.status = new
                row.updated_at = datetime.now(UTC)
            return self._entities(tx.session, [row])[0]

    def set_tags(self, model_id: str, tags: Mapping[str, Any]) -> LoggedModel:
        """Set tags; an existing key takes the new value."""
        values = _values(tags, "tag")
        with self.store.write(self.ws.actor) as tx:
            row = _model_row(tx.session, model_id)
            changed = {k: v for k, v in values.items() if row.tags.get(k) != v}
            if changed:
                before = {k: row.tags.get(k) for k in changed}
                row.tags = {**row.tags, **changed}  # a new dict: the JSON column sees the change
                row.updated_at = datetime.now(UTC)
                tx.record("logged_model.set_tags", "logged_model", model_id, before, changed)
            return self._entities(tx.session, [row])[0]

    def delete_tag(self, model_id: str, key: str) -> None:
        with self.store.write(self.ws.actor) as tx:
            row = _model_row(tx.session, model_id)
            if key not in row.tags:
                raise NotFound(f"logged model {model_id} has no tag {key!r}")
            before = row.tags[key]
            row.tags = {k: v for k, v in row.tags.items() if k != key}
            row.updated_at = datetime.now(UTC)
            tx.record("logged_model.delete_tag", "logged_model", model_id, {key: before}, None)

    def log_params(self, model_id: str, params: Mapping[str, Any]) -> None:
        """Add params; a param once logged keeps its value (:class:`Conflict`)."""
        values = _values(params, "param")
        with self.store.write(self.ws.actor) as tx:
            row = _model_row(tx.session, model_id)
            clash = {k: v for k, v in values.items() if row.params.get(k, v) != v}
            if clash:
                detail = ", ".join(f"{k}: {row.params[k]!r} -> {v!r}" for k, v in clash.items())
                raise Conflict(f"params are immutable; logged model {model_id} has {detail}")
            new = {k: v for k, v in values.items() if k not in row.params}
            if new:
                row.params = {**row.params, **new}
                row.updated_at = datetime.now(UTC)
                tx.record("logged_model.log_params", "logged_model", model_id, after=new)

    def link_run(self, run_id: str, model_id: str) -> None:
        """Record that run ``run_id`` output the model (MLflow's log-outputs): it becomes the
        model's source run if it has none. A model keeps a single source run."""
        with self.store.write(self.ws.actor) as tx:
            if tx.session.get(RunRow, run_id) is None:
                raise NotFound(f"no run {run_id!r}; check the run id")
            row = _model_row(tx.session, model_id)
            if row.source_run_id is None:
                row.source_run_id = run_id
                row.updated_at = datetime.now(UTC)
                tx.record(
                    "logged_model.link_run",
                    "logged_model",
                    model_id,
                    {"source_run_id": None},
                    {"source_run_id": run_id},
                )

    def delete(self, model_id: str) -> None:
        """Delete the model and its list of files (the blobs stay until garbage collection;
        a registered version made from them keeps them)."""
        with self.store.write(self.ws.actor) as tx:
            row = _model_row(tx.session, model_id)
            before = {"name": row.name, "experiment_id": row.experiment_id}
            tx.session.execute(
                delete(LoggedModelArtifactRow).where(LoggedModelArtifactRow.model_id == model_id)
            )
            tx.session.delete(row)
            tx.record("logged_model.delete", "logged_model", model_id, before, None)

    # --- many models ----------------------------------------------------------------------

    def search(
        self,
        experiment_ids: Sequence[str],
        *,
        filter_string: str = "",
        order_by: Sequence[tuple[str, bool]] = (),
        limit: int = 100,
        page_token: str | None = None,
    ) -> Page[LoggedModel]:
        """Logged models of the experiments matching ``filter_string``, newest first unless
        ``order_by`` says otherwise.

        The filter is clauses joined by ``and``: attributes (``name``, ``model_id``,
        ``model_type``, ``status``, ``source_run_id``; ``creation_timestamp`` and
        ``last_updated_timestamp`` in ms), ``params.<key>``, ``tags.<key>``,
        ``metrics.<key>``, e.g. ``name = 'model' and metrics.rmse < 0.5``. Strings compare
        with ``= != like ilike``, numbers with ``= != < <= > >=``. ``order_by`` holds
        ``(field, ascending)`` pairs: an attribute or ``metrics.<key>`` (missing values last).
        """
        offset = decode_token(page_token)
        check_limit(limit)
        ids = list(dict.fromkeys(experiment_ids))
        if not ids:
            raise InvalidInput("give at least one experiment id to search logged models in")
        clauses = _parse_filter(filter_string or "")
        orderings = [_ordering(field, ascending) for field, ascending in order_by]
        query = select(LoggedModelRow).where(LoggedModelRow.experiment_id.in_(ids))
        # Equality on an attribute narrows the rows in the database (the common search,
        # MLflow's client finding a run's model by name); the rest is decided here, so that
        # LIKE and string order mean the same on every database.
        for clause in clauses:
            if clause.kind == "attributes" and clause.op == "=" and clause.key in _STRING_ATTRS:
                value = str(clause.value)
                query = query.where(
                    _STRING_ATTRS[clause.key]
                    == (value.lower() if clause.key == "status" else value)
                )
        with self.store.read() as s:
            models = self._entities(s, s.scalars(query).all())
        models = [m for m in models if all(c.matches(m) for c in clauses)]
        models.sort(key=lambda m: m.id)
        keys = orderings or [_Ordering("attributes", "creation_timestamp", ascending=False)]
        for ordering in reversed(keys):
            ordering.sort(models)
        page = models[offset : offset + limit]
        return Page.of(page, offset, limit, more=len(models) > offset + limit)

    def source_models(self, run_ids: Iterable[str]) -> dict[str, list[str]]:
        """The ids of the logged models each run is the source of (oldest first)."""
        ids = list(dict.fromkeys(run_ids))
        out: dict[str, list[str]] = {i: [] for i in ids}
        if ids:
            with self.store.read() as s:
                for run_id, model_id in s.execute(
                    select(LoggedModelRow.source_run_id, LoggedModelRow.id)
                    .where(LoggedModelRow.source_run_id.in_(ids))
                    .order_by(LoggedModelRow.created_at, LoggedModelRow.id)
                ):
                    out[run_id or ""].append(model_id)
        return out

    # --- files ----------------------------------------------------------------------------

    def log_file(
        self, model_id: str, path: str, data: bytes | str | os.PathLike[str]
    ) -> ArtifactFile:
        """Store ``data`` (bytes, or the path of a local file) as ``path`` in the model.

        Logging the same path again replaces what the model points to.
        """
        rel = check_path(path)
        if not rel:
            raise InvalidInput("give the path of a file inside the logged model, e.g. 'MLmodel'")
        with self.store.read() as s:
            _model_row(s, model_id)
        if isinstance(data, bytes | bytearray | memoryview):
            blob = bytes(data)
            digest, size = self.ws.artifacts.put_bytes(blob), len(blob)
        else:
            local = Path(data)
            if not local.is_file():
                raise InvalidInput(f"no file at {str(local)!r}; give bytes or a local file path")
            digest, size = self.ws.artifacts.put_file(local), local.stat().st_size
        with self.store.write(self.ws.actor) as tx:
            row = _model_row(tx.session, model_id)
            existing = tx.session.get(LoggedModelArtifactRow, (model_id, rel))
            after = {"path": rel, "digest": digest, "size": size}
            if existing is None:
                tx.session.add(
                    LoggedModelArtifactRow(model_id=model_id, path=rel, digest=digest, size=size)
                )
                before = None
            else:
                before = {"path": rel, "digest": existing.digest, "size": existing.size}
                existing.digest, existing.size = digest, size
            if before != after:
                row.updated_at = datetime.now(UTC)
                tx.record("logged_model.log_file", "logged_model", model_id, before, after)
        return ArtifactFile(path=rel, digest=digest, size=size)

    def files(self, model_id: str, path: str = "") -> list[ArtifactFile]:
        """The model's files under ``path`` (a directory, or one file), relative to it."""
        with self.store.read() as s:
            _model_row(s, model_id)
            return files_under(s, LoggedModelArtifactRow, model_id, check_path(path))

    def delete_files(self, model_id: str, path: str = "") -> int:
        """Delete the file ``path`` of the model, or everything under it; how many files."""
        rel = check_path(path)
        with self.store.write(self.ws.actor) as tx:
            row = _model_row(tx.session, model_id)
            table = LoggedModelArtifactRow
            paths = tx.session.scalars(
                select(table.path).where(table.model_id == model_id, prefix_clause(table, rel))
            ).all()
            if paths:
                tx.session.execute(
                    delete(table).where(table.model_id == model_id, table.path.in_(paths))
                )
                row.updated_at = datetime.now(UTC)
                tx.record(
                    "logged_model.delete_files",
                    "logged_model",
                    model_id,
                    {"paths": sorted(paths)},
                    None,
                )
            return len(paths)

    # --- entities -------------------------------------------------------------------------

    @staticmethod
    def _entities(session: Session, rows: Sequence[LoggedModelRow]) -> list[LoggedModel]:
        runs = sorted({r.source_run_id for r in rows if r.source_run_id})
        metrics = latest_metric_points(session, runs)
        return [_entity(r, metrics.get(r.source_run_id or "", [])) for r in rows]


def _model_row(session: Session, model_id: str) -> LoggedModelRow:
    row = (
        session.get(LoggedModelRow, model_id)
        if isinstance(model_id, str) and LOGGED_MODEL_ID.match(model_id)
        else None
    )
    if row is None:
        raise NotFound(_no_model(model_id))
    return row


def _entity(row: LoggedModelRow, metrics: list[MetricPoint]) -> LoggedModel:
    return LoggedModel(
        id=row.id,
        experiment_id=row.experiment_id,
        name=row.name,
        source_run_id=row.source_run_id,
        status=_check_status(row.status),
        model_type=row.model_type,
        params=dict(row.params),
        tags=dict(row.tags),
        metrics=metrics,
        created_at=row.created_at,
        updated_at=row.updated_at,
        created_by=row.created_by,
    )


# --- search -----------------------------------------------------------------------------

_STRING_ATTRS: dict[str, Any] = {
    "name": LoggedModelRow.name,
    "model_id": LoggedModelRow.id,
    "model_type": LoggedModelRow.model_type,
    "status": LoggedModelRow.status,
    "source_run_id": LoggedModelRow.source_run_id,
}
_TIME_ATTRS = {
    "creation_timestamp": "created_at",
    "creation_time": "created_at",
    "creation_timestamp_ms": "created_at",
    "last_updated_timestamp": "updated_at",
    "last_updated_time": "updated_at",
    "last_updated_timestamp_ms": "updated_at",
}
_KINDS = {
    "metric": "metrics",
    "metrics": "metrics",
    "param": "params",
    "params": "params",
    "parameter": "params",
    "parameters": "params",
    "tag": "tags",
    "tags": "tags",
    "attribute": "attributes",
    "attributes": "attributes",
    "attr": "attributes",
}
_NUMERIC_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: bool(a == b),
    "!=": lambda a, b: bool(a != b),
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
}
_STRING_OPS = ("=", "!=", "like", "ilike")
_CLAUSE = re.compile(
    r"""\s*(?:(?P<kind>[A-Za-z]+)\.)?(?P<key>`[^`]+`|"[^"]+"|[A-Za-z0-9_\-./:]+)\s*
    (?P<op>!=|<=|>=|=|<|>|(?i:ilike|like)(?=[\s'"]))\s*
    (?P<value>'[^']*'|"[^"]*"|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*""",
    re.VERBOSE,
)
_AND = re.compile(r"and\b", re.IGNORECASE)


def _like(pattern: str, *, ignore_case: bool) -> re.Pattern[str]:
    """SQL's LIKE as a regular expression: ``%`` any run of characters, ``_`` any one."""
    parts = [".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _attribute(model: LoggedModel, key: str) -> str | float | None:
    if key in _TIME_ATTRS:
        stamp: datetime = getattr(model, _TIME_ATTRS[key])
        return float(int(stamp.timestamp() * 1000))
    if key == "model_id":
        return model.id
    if key == "status":
        return model.status.upper()
    value = getattr(model, key)
    return None if value is None else str(value)


def _field(kind: str | None, key: str) -> tuple[str, str]:
    resolved = _KINDS.get((kind or "attributes").lower())
    if resolved is None:
        raise InvalidInput(
            f"unknown field kind {kind!r}; use metrics., params., tags. or an attribute "
            "(name, model_id, model_type, status, source_run_id, creation_timestamp, "
            "last_updated_timestamp)"
        )
    if key[0] in '`"':
        key = key[1:-1]
    if resolved == "attributes" and key not in _STRING_ATTRS and key not in _TIME_ATTRS:
        known = ", ".join([*_STRING_ATTRS, "creation_timestamp", "last_updated_timestamp"])
        raise InvalidInput(f"unknown logged model attribute {key!r}; use one of {known}")
    return resolved, key


@dataclass
class _Clause:
    kind: str
    key: str
    op: str
    value: str | float

    def matches(self, model: LoggedModel) -> bool:
        lhs: str | float | None
        if self.kind == "metrics":
            lhs = next((m.value for m in model.metrics if m.key == self.key), None)
        elif self.kind == "params":
            lhs = model.params.get(self.key)
        elif self.kind == "tags":
            lhs = model.tags.get(self.key)
        else:
            lhs = _attribute(model, self.key)
        if lhs is None:
            return False
        if self.op in ("like", "ilike"):
            pattern = _like(str(self.value), ignore_case=self.op == "ilike")
            return pattern.fullmatch(str(lhs)) is not None
        if isinstance(lhs, float) != isinstance(self.value, float):
            return False
        return _NUMERIC_OPS[self.op](lhs, self.value)


def _parse_filter(text: str) -> list[_Clause]:
    clauses: list[_Clause] = []
    pos = 0
    if not text.strip():
        return clauses
    while True:
        m = _CLAUSE.match(text, pos)
        if m is None:
            raise InvalidInput(
                f"cannot read the filter at {text[pos : pos + 30]!r}; write clauses like "
                "\"name = 'model' and metrics.rmse < 0.5\" (strings in quotes)"
            )
        kind, key = _field(m["kind"], m["key"])
        op, raw = m["op"].lower(), m["value"]
        quoted = raw[0] in "'\""
        numeric = kind == "metrics" or (kind == "attributes" and key in _TIME_ATTRS)
        if numeric:
            if quoted or op not in _NUMERIC_OPS:
                raise InvalidInput(
                    f"{key} compares with a number using = != < <= > >=, e.g. {key} > 0.5"
                )
            value: str | float = float(raw)
        else:
            if op not in _STRING_OPS or not quoted:
                raise InvalidInput(
                    f"{key} compares with a quoted string using = != like ilike, e.g. {key} = 'x'"
                )
            value = raw[1:-1]
            if kind == "attributes" and key == "status":
                value = _status_word(value).upper()
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


@dataclass
class _Ordering:
    kind: str
    key: str
    ascending: bool

    def value(self, model: LoggedModel) -> Any:
        if self.kind == "metrics":
            return next((m.value for m in model.metrics if m.key == self.key), None)
        if self.key in _TIME_ATTRS:  # the full time: models made in one millisecond keep order
            return getattr(model, _TIME_ATTRS[self.key])
        return _attribute(model, self.key)

    def sort(self, models: list[LoggedModel]) -> None:
        """Sort ``models`` in place by this field (stable), models without it last."""
        present = [m for m in models if self.value(m) is not None]
        missing = [m for m in models if self.value(m) is None]
        present.sort(key=self.value, reverse=not self.ascending)
        models[:] = present + missing


def _ordering(field: str, ascending: bool) -> _Ordering:
    if not isinstance(field, str) or not field.strip():
        raise InvalidInput("order_by needs a field_name, e.g. 'creation_timestamp'")
    kind, _, key = field.strip().partition(".") if "." in field else ("", "", field.strip())
    resolved, key = _field(kind or None, key)
    if resolved not in ("attributes", "metrics"):
        raise InvalidInput(
            f"cannot order logged models by {field!r}; order by an attribute or metrics.<key>"
        )
    return _Ordering(resolved, key, bool(ascending))
