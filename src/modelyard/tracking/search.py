"""The search grammar of runs and experiments: filters and orderings, compiled to SQL.

A filter is clauses joined by ``and``, each ``<kind>.<key> <op> <value>`` (MLflow's grammar,
so that filters written for MLflow work unchanged)::

    metrics.rmse < 0.5 and params.alpha = '0.1' and tags.team != 'x'
    attributes.status = 'FINISHED' and attributes.start_time > 1700000000000
    attributes.run_id in ('01J...', '01K...') and tags.note is null
    datasets.name = 'train' and datasets.context = 'training'

Metrics compare their latest value with a number (``= != < <= > >=``); params, tags and
string attributes compare strings (``= != like ilike``, ``in``/``not in`` with a list of
strings for attributes and datasets, ``is null``/``is not null`` for params and tags); the
time attributes compare milliseconds since the epoch, as MLflow's clients send them. Keys
with other characters go in backticks or double quotes: ``metrics.`val loss` < 1``. A field
without a kind is an attribute (``status = 'failed'``). Run statuses match in any case.

An ordering is ``<kind>.<key> [asc|desc]``; values a run or experiment lacks sort last.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, not_, select

from modelyard.errors import InvalidInput
from modelyard.store.tables import (
    DatasetRow,
    ExperimentRow,
    ExperimentTagRow,
    MetricRow,
    RunInputRow,
    RunParamRow,
    RunRow,
    RunTagRow,
)

Value = str | float | tuple[str, ...] | None

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
_LIST_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "in": lambda column, values: column.in_(values),
    "not in": lambda column, values: column.not_in(values),
}
_NULL_OPS = ("is null", "is not null")

_FIELD = re.compile(
    r"""\s*(?:(?P<kind>[A-Za-z_]+)\.)?(?P<key>`[^`]+`|"[^"]+"|[A-Za-z0-9_\-./:]+)"""
)
_OP = re.compile(
    r"\s*(?P<op>!=|<>|<=|>=|=|<|>"
    r"|(?i:not\s+in|in|ilike|like|is\s+not\s+null|is\s+null)(?![A-Za-z0-9_]))"
)
_VALUE = re.compile(
    r"""\s*(?P<value>'[^']*'|"[^"]*"
    |[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![A-Za-z0-9_])
    |(?i:nan|[-+]?inf(?:inity)?)(?![A-Za-z0-9_])
    |\((?P<list>[^()]*)\))""",
    re.VERBOSE,
)
_LIST_ITEM = re.compile(r"""\s*('[^']*'|"[^"]*")\s*(?:,|$)""")
_AND = re.compile(r"\s*and(?![A-Za-z0-9_])", re.IGNORECASE)
_END = re.compile(r"\s*$")
_ORDER = re.compile(
    r"""^\s*(?:(?P<kind>[A-Za-z_]+)\.)?(?P<key>`[^`]+`|"[^"]+"|[A-Za-z0-9_\-./:]+)"""
    r"(?:\s+(?P<dir>asc|desc))?\s*$",
    re.IGNORECASE,
)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Most clauses a filter may hold: each is a subquery, and PostgreSQL's planner takes
#: seconds from about a hundred of them (a minute at 300).
MAX_CLAUSES = 50
_EXAMPLE = "write clauses like \"metrics.rmse < 0.5 and params.alpha = '0.1'\" (strings in quotes)"


@dataclass(frozen=True)
class Fields:
    """What a grammar can name: kinds (with their aliases) and attributes."""

    what: str  # "run" or "experiment", for messages
    kinds: Mapping[str, str]  # alias -> kind
    strings: Mapping[str, Any]  # string attribute (and aliases) -> column
    times: Mapping[str, Any]  # time attribute (and aliases) -> column
    lists: frozenset[str]  # kinds whose string fields take in / not in
    nullable: frozenset[str]  # kinds that take is null / is not null

    def attribute_names(self) -> str:
        return ", ".join([*self.strings, *self.times])


RUN_FIELDS = Fields(
    what="run",
    kinds={
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
        "run": "attributes",
        "dataset": "datasets",
        "datasets": "datasets",
    },
    strings={
        "id": RunRow.id,
        "run_id": RunRow.id,
        "name": RunRow.name,
        "run_name": RunRow.name,
        "status": RunRow.status,
        "created_by": RunRow.created_by,
        "user_id": RunRow.created_by,
    },
    times={
        "start_time": RunRow.start_time,
        "created": RunRow.start_time,
        "end_time": RunRow.end_time,
    },
    lists=frozenset({"attributes", "datasets"}),
    nullable=frozenset({"params", "tags"}),
)
EXPERIMENT_FIELDS = Fields(
    what="experiment",
    kinds={
        "attribute": "attributes",
        "attributes": "attributes",
        "attr": "attributes",
        "tag": "tags",
        "tags": "tags",
    },
    strings={"name": ExperimentRow.name, "id": ExperimentRow.id, "experiment_id": ExperimentRow.id},
    times={"creation_time": ExperimentRow.created_at, "last_update_time": ExperimentRow.created_at},
    lists=frozenset({"attributes"}),
    nullable=frozenset({"tags"}),
)
_DATASET_COLUMNS = {"name": DatasetRow.name, "digest": DatasetRow.digest}


@dataclass(frozen=True)
class Clause:
    """One comparison of a filter: ``kind.key op value`` (value None for ``is null``)."""

    kind: str
    key: str
    op: str
    value: Value


@dataclass(frozen=True)
class Ordering:
    kind: str
    key: str
    descending: bool


def _unquote(key: str) -> str:
    return key[1:-1] if key[:1] in '`"' else key


def _resolve(fields: Fields, kind: str | None, key: str) -> tuple[str, str]:
    resolved = "attributes" if kind is None else fields.kinds.get(kind.lower())
    if resolved is None:
        kinds = sorted({f"{k}." for k in fields.kinds.values()})
        raise InvalidInput(f"unknown field kind {kind!r}; use {', '.join(kinds)}")
    key = _unquote(key)
    if resolved == "attributes" and key not in fields.strings and key not in fields.times:
        raise InvalidInput(
            f"unknown {fields.what} attribute {key!r}; use one of {fields.attribute_names()}"
        )
    if resolved == "datasets" and key not in ("name", "digest", "context"):
        raise InvalidInput(f"unknown dataset field {key!r}; use datasets.name, digest or context")
    return resolved, key


def _number(raw: str) -> float:
    return float(raw.lower().replace("infinity", "inf"))


def _clause(
    fields: Fields, kind: str, key: str, op: str, raw: str | None, items: str | None
) -> Clause:
    name = f"{kind}.{key}"
    if op in _NULL_OPS:
        if kind not in fields.nullable:
            raise InvalidInput(f"{name} cannot be compared with {op}; only params and tags can")
        return Clause(kind, key, op, None)
    assert raw is not None
    quoted = raw[:1] in "'\""
    if items is not None or op in _LIST_OPS:
        if kind not in fields.lists or op not in _LIST_OPS or items is None:
            raise InvalidInput(
                f"{name} {op} needs a list: use in / not in with ('a', 'b') on attributes"
                + (" or datasets" if "datasets" in fields.lists else "")
            )
        values = _list(items, name)
        if kind == "attributes" and key in fields.times:
            raise InvalidInput(f"{name} compares with a number, not a list")
        return Clause(kind, key, op, values)
    if kind == "metrics" or (kind == "attributes" and key in fields.times):
        if quoted or op not in _NUMERIC_OPS:
            example = "0.5" if kind == "metrics" else "1700000000000 (milliseconds since the epoch)"
            raise InvalidInput(
                f"{name} compares with a number using = != < <= > >=, e.g. {name} < {example}"
            )
        return Clause(kind, key, op, _number(raw))
    if op not in _STRING_OPS:
        raise InvalidInput(f"{name} compares strings using = != like ilike, not {op!r}")
    return Clause(kind, key, op, raw[1:-1] if quoted else raw)


def _list(items: str, name: str) -> tuple[str, ...]:
    values: list[str] = []
    pos = 0
    while pos < len(items):
        m = _LIST_ITEM.match(items, pos)
        if m is None or m.end() == pos:
            raise InvalidInput(f"{name}: write the list as ('a', 'b'), each value in quotes")
        values.append(m[1][1:-1])
        pos = m.end()
    if not values:
        raise InvalidInput(f"{name}: the list is empty; give at least one value in quotes")
    return tuple(values)


def parse_filter(text: str | None, fields: Fields = RUN_FIELDS) -> list[Clause]:
    """The clauses of a filter; :class:`InvalidInput` saying what to fix if it is not one."""
    text = text or ""
    clauses: list[Clause] = []
    if not text.strip():
        return clauses
    pos = 0
    while True:
        field = _FIELD.match(text, pos)
        op = _OP.match(text, field.end()) if field else None
        if field is None or op is None:
            if clauses and _END.match(text, pos):
                raise InvalidInput("the filter ends with 'and'; add a clause after it or drop it")
            raise InvalidInput(f"cannot read the filter at {text[pos : pos + 30]!r}; {_EXAMPLE}")
        kind, key = _resolve(fields, field["kind"], field["key"])
        op_name = " ".join(op["op"].lower().split()).replace("<>", "!=")
        pos = op.end()
        raw = items = None
        if op_name not in _NULL_OPS:
            value = _VALUE.match(text, pos)
            if value is None:
                raise InvalidInput(
                    f"cannot read the value of {kind}.{key} at {text[pos : pos + 30]!r}; "
                    "put strings in quotes, numbers without"
                )
            raw, items, pos = value["value"], value["list"], value.end()
        clauses.append(_clause(fields, kind, key, op_name, raw, items))
        if _END.match(text, pos):
            return clauses
        if len(clauses) == MAX_CLAUSES:
            raise InvalidInput(
                f"the filter has more than {MAX_CLAUSES} clauses; narrow it with fewer "
                "(an 'in' list takes many values in one clause)"
            )
        conj = _AND.match(text, pos)
        if conj is None:
            raise InvalidInput(
                f"expected 'and' at {text[pos : pos + 30]!r}; clauses are joined with 'and' "
                "('or' is not supported)"
            )
        pos = conj.end()


def parse_order_by(
    order_by: str | Sequence[str] | None, fields: Fields = RUN_FIELDS
) -> list[Ordering]:
    """The orderings of ``order_by`` (``"metrics.rmse asc"``, ``["start_time desc"]``)."""
    items = [order_by] if isinstance(order_by, str) else list(order_by or [])
    orderings = []
    for item in items:
        m = _ORDER.match(item)
        if m is None:
            raise InvalidInput(
                f"cannot read order_by {item!r}; write e.g. 'metrics.rmse asc' or 'start_time desc'"
            )
        kind, key = _resolve(fields, m["kind"], m["key"])
        if kind == "datasets":
            raise InvalidInput(f"runs cannot be ordered by datasets.{key}; filter on it instead")
        orderings.append(Ordering(kind, key, (m["dir"] or "asc").lower() == "desc"))
    return orderings


# --- to SQL -------------------------------------------------------------------------------


def _time(ms: float, name: str) -> datetime:
    try:
        if not math.isfinite(ms):
            raise ValueError
        return EPOCH + timedelta(milliseconds=ms)
    except (OverflowError, ValueError):
        raise InvalidInput(f"{name}: {ms} is not a time in milliseconds since the epoch") from None


def _time_condition(column: Any, op: str, ms: float, name: str) -> ColumnElement[bool]:
    """Compare a time with a whole millisecond (times are stored finer, clients send ms)."""
    start = _time(ms, name)
    end = start + timedelta(milliseconds=1)
    conditions = {
        "=": and_(column >= start, column < end),
        "!=": not_(and_(column >= start, column < end)),
        "<": column < start,
        "<=": column < end,
        ">": column >= end,
        ">=": column >= start,
    }
    return conditions[op]


def _string_condition(column: Any, clause: Clause) -> ColumnElement[bool]:
    value = clause.value
    if clause.op in _LIST_OPS:
        return _LIST_OPS[clause.op](column, list(value or ()))  # type: ignore[arg-type]
    return _STRING_OPS[clause.op](column, value)


def latest_metric(key: str) -> Any:
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


def _run_value(table: Any, key: str) -> Any:
    return select(table.value).where(table.run_id == RunRow.id, table.key == key).scalar_subquery()


def _status(clause: Clause) -> Clause:
    """Statuses are stored in lower case; MLflow writes them in upper case."""
    value = clause.value
    if isinstance(value, tuple):
        return Clause(clause.kind, clause.key, clause.op, tuple(v.lower() for v in value))
    return Clause(clause.kind, clause.key, clause.op, str(value).lower())


def run_condition(clause: Clause) -> ColumnElement[bool]:
    """The SQL condition on ``RunRow`` that ``clause`` stands for."""
    kind, key, op = clause.kind, clause.key, clause.op
    if kind == "metrics":
        return _NUMERIC_OPS[op](latest_metric(key), clause.value)
    if kind in ("params", "tags"):
        table: Any = RunParamRow if kind == "params" else RunTagRow
        present = exists().where(table.run_id == RunRow.id, table.key == key)
        if op == "is null":
            return ~present
        if op == "is not null":
            return present
        return exists().where(
            table.run_id == RunRow.id, table.key == key, _string_condition(table.value, clause)
        )
    if kind == "datasets":
        column = RunInputRow.context if key == "context" else _DATASET_COLUMNS[key]
        return exists().where(
            RunInputRow.run_id == RunRow.id,
            DatasetRow.id == RunInputRow.dataset_id,
            _string_condition(column, clause),
        )
    if key in RUN_FIELDS.times:
        return _time_condition(RUN_FIELDS.times[key], op, float(clause.value), f"{kind}.{key}")  # type: ignore[arg-type]
    if key == "status":
        clause = _status(clause)
    return _string_condition(RUN_FIELDS.strings[key], clause)


def run_order_column(ordering: Ordering) -> Any:
    """The ``ORDER BY`` term of ``ordering`` (missing values last)."""
    kind, key = ordering.kind, ordering.key
    if kind == "metrics":
        column = latest_metric(key)
    elif kind == "params":
        column = _run_value(RunParamRow, key)
    elif kind == "tags":
        column = _run_value(RunTagRow, key)
    else:
        column = RUN_FIELDS.times.get(key, RUN_FIELDS.strings.get(key))
    return (column.desc() if ordering.descending else column.asc()).nulls_last()


def experiment_condition(clause: Clause) -> ColumnElement[bool]:
    """The SQL condition on ``ExperimentRow`` that ``clause`` stands for."""
    if clause.kind == "tags":
        tag = ExperimentTagRow
        present = exists().where(tag.experiment_id == ExperimentRow.id, tag.key == clause.key)
        if clause.op == "is null":
            return ~present
        if clause.op == "is not null":
            return present
        return exists().where(
            tag.experiment_id == ExperimentRow.id,
            tag.key == clause.key,
            _string_condition(tag.value, clause),
        )
    times = EXPERIMENT_FIELDS.times
    if clause.key in times:
        name = f"attributes.{clause.key}"
        return _time_condition(times[clause.key], clause.op, float(clause.value), name)  # type: ignore[arg-type]
    return _string_condition(EXPERIMENT_FIELDS.strings[clause.key], clause)


def experiment_order_column(ordering: Ordering) -> Any:
    if ordering.kind == "tags":
        tag = ExperimentTagRow
        column: Any = (
            select(tag.value)
            .where(tag.experiment_id == ExperimentRow.id, tag.key == ordering.key)
            .scalar_subquery()
        )
    else:
        fields = EXPERIMENT_FIELDS
        column = fields.times.get(ordering.key, fields.strings.get(ordering.key))
    return (column.desc() if ordering.descending else column.asc()).nulls_last()
