"""Project KPIs measured on endpoint windows: the value, the target, and whether it was missed.

For every window the monitor closes, :func:`evaluate_kpis` takes each KPI of the project
(read through ``ws.projects``), looks up its metric (``kpi.metric``, or the KPI's name) in the
window's observation and records a :class:`KpiEvaluation`: *breached* when the value is below
the target of a KPI to maximise or above that of one to minimise, ``None`` when the
observation does not measure it (still recorded, so a gap shows in the history).

Evaluations are data, like window profiles, so they are not audited; a breach that matters
is made an alert by a rule of kind ``kpi`` on ``kpi.<name>`` (see :func:`kpi_observation`).
Re-evaluating a window replaces that window's evaluations, it never adds to them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from ulid import ULID

from modelyard.errors import InvalidInput, NotFound
from modelyard.projects.entities import KPI, Project
from modelyard.store.tables import KpiEvaluationRow

if TYPE_CHECKING:
    from modelyard.workspace import Workspace

__all__ = [
    "KpiEvaluation",
    "evaluate_kpis",
    "is_breached",
    "kpi_history",
    "kpi_observation",
    "kpi_samples",
]

_KEY = ["project_id", "kpi", "endpoint", "granularity", "window_start"]


class KpiEvaluation(BaseModel):
    """One KPI on one endpoint window.

    ``metric``, ``direction`` and ``unit`` come from the project's current definition of the
    KPI (``None`` if the project no longer has it); ``target`` is the one evaluated against.
    """

    id: str
    project: str
    project_id: str
    kpi: str
    metric: str | None
    endpoint: str
    window: int
    window_start: datetime
    window_end: datetime
    value: float | None
    target: float
    direction: Literal["maximize", "minimize"] | None
    unit: str = ""
    breached: bool | None
    evaluated_at: datetime


def is_breached(kpi: KPI, value: float | None) -> bool | None:
    """Whether ``value`` misses ``kpi``'s target; None when there is no value."""
    if value is None:
        return None
    return value < kpi.target if kpi.direction == "maximize" else value > kpi.target


def evaluate_kpis(
    ws: Workspace,
    project_name_or_id: str,
    endpoint: str,
    window: int,
    window_start: datetime,
    observation: Mapping[str, float | None],
    *,
    now: datetime | None = None,
) -> list[KpiEvaluation]:
    """Evaluate and record every KPI of the project on one endpoint window (in KPI order)."""
    if not endpoint:
        raise InvalidInput("name the endpoint the KPIs were measured on")
    if window <= 0:
        raise InvalidInput(f"window must be a positive number of seconds, got {window}")
    project = _project(ws, project_name_or_id)
    start = _utc(window_start)
    now = _utc(now) if now is not None else datetime.now(UTC)
    # The last definition of a name wins, as one window holds one evaluation per KPI.
    kpis = {k.name: k for k in project.kpis}
    values = []
    for kpi in kpis.values():
        value = _number(observation.get(kpi.metric or kpi.name))
        values.append(
            {
                "id": str(ULID()),
                "project_id": project.id,
                "kpi": kpi.name,
                "endpoint": endpoint,
                "granularity": window,
                "window_start": start,
                "value": value,
                "target": kpi.target,
                "breached": is_breached(kpi, value),
                "evaluated_at": now,
            }
        )
    where = (
        KpiEvaluationRow.project_id == project.id,
        KpiEvaluationRow.endpoint == endpoint,
        KpiEvaluationRow.granularity == window,
        KpiEvaluationRow.window_start == start,
    )
    with ws.store.write(ws.actor) as tx:
        s = tx.session
        # KPIs the project no longer has drop out of the window: it is replaced whole.
        s.execute(delete(KpiEvaluationRow).where(*where, KpiEvaluationRow.kpi.notin_(kpis)))
        if values:
            # An upsert, so two monitors evaluating one window at once cannot collide.
            insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
            stmt = insert(KpiEvaluationRow).values(values)
            stmt = stmt.on_conflict_do_update(
                index_elements=_KEY,
                set_={c: stmt.excluded[c] for c in ("value", "target", "breached", "evaluated_at")},
            )
            s.execute(stmt)
        rows = {r.kpi: r for r in s.scalars(select(KpiEvaluationRow).where(*where))}
    return [_evaluation(rows[name], project) for name in kpis if name in rows]


def kpi_history(
    ws: Workspace,
    project: str,
    endpoint: str | None = None,
    kpi: str | None = None,
    since: datetime | None = None,
    *,
    window: int | None = None,
) -> list[KpiEvaluation]:
    """Recorded evaluations, oldest window first, optionally filtered.

    ``since`` keeps windows starting at or after it; ``window`` keeps one granularity.
    """
    found = _project(ws, project)
    query = (
        select(KpiEvaluationRow)
        .where(KpiEvaluationRow.project_id == found.id)
        .order_by(
            KpiEvaluationRow.window_start,
            KpiEvaluationRow.granularity,
            KpiEvaluationRow.endpoint,
            KpiEvaluationRow.kpi,
        )
    )
    if endpoint is not None:
        query = query.where(KpiEvaluationRow.endpoint == endpoint)
    if kpi is not None:
        query = query.where(KpiEvaluationRow.kpi == kpi)
    if since is not None:
        query = query.where(KpiEvaluationRow.window_start >= _utc(since))
    if window is not None:
        query = query.where(KpiEvaluationRow.granularity == window)
    with ws.store.read() as s:
        return [_evaluation(r, found) for r in s.scalars(query)]


def kpi_observation(evaluations: Iterable[KpiEvaluation]) -> dict[str, float | None]:
    """``{"kpi.<name>": value}``, to merge into the observation alert rules see."""
    return {f"kpi.{e.kpi}": e.value for e in evaluations}


def kpi_samples(
    evaluations: Iterable[KpiEvaluation], samples: Mapping[str, int] | int
) -> dict[str, int]:
    """``{"kpi.<name>": count}``: each KPI counts the samples of the metric it is measured by."""
    result = {}
    for e in evaluations:
        metric = e.metric or e.kpi
        if isinstance(samples, Mapping):
            count = samples.get(metric, samples.get("samples"))
            if count is not None:
                result[f"kpi.{e.kpi}"] = int(count)
        else:
            result[f"kpi.{e.kpi}"] = int(samples)
    return result


def _project(ws: Workspace, name_or_id: str) -> Project:
    """The project by name, or else by id (both through the projects service)."""
    try:
        return ws.projects.get(name_or_id)
    except NotFound:
        name = ws.projects.names([name_or_id]).get(name_or_id)
        if name is None:
            raise
        return ws.projects.get(name)


def _evaluation(row: KpiEvaluationRow, project: Project) -> KpiEvaluation:
    kpi = next((k for k in reversed(project.kpis) if k.name == row.kpi), None)
    return KpiEvaluation(
        id=row.id,
        project=project.name,
        project_id=project.id,
        kpi=row.kpi,
        metric=(kpi.metric or kpi.name) if kpi else None,
        endpoint=row.endpoint,
        window=row.granularity,
        window_start=row.window_start,
        window_end=row.window_start + timedelta(seconds=row.granularity),
        value=row.value,
        target=row.target,
        direction=kpi.direction if kpi else None,
        unit=kpi.unit if kpi else "",
        breached=row.breached,
        evaluated_at=row.evaluated_at,
    )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _number(value: Any) -> float | None:
    """A finite float, or None: a NaN or a non-number does not measure a KPI."""
    if value is None or isinstance(value, str):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
