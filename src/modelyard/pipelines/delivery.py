"""Delivery KPIs and the MLOps maturity report, from what the platform itself saw.

:func:`delivery_report` measures, per model, from its promotions (quality-gate decisions),
the pipeline runs behind them, the trigger events that started those runs and the alias
history in the audit log:

* ``promotions``: candidates that passed every gate and moved an alias, counted per ISO week;
  ``gate_failure_rate`` = candidates refused / candidates checked.
* ``mean_deploy_s``: mean ``deploy_s`` of the runs behind the model's candidates.
* ``mean_validation_s``: mean of ``evaluate_s`` + gate time per run (the gate time is the
  run summary's ``gate_s`` or else the promotion report's ``seconds``; 0 when neither is set).
* ``deployment_velocity_per_day``, as issue 5 words it, "models promoted per unit time =
  models ready / (mean deploy time + mean validation time)", with models ready = promotions:
  ``promotions / (mean_deploy_s + mean_validation_s) * 86400``.
* ``lead_time``: from the trigger to serving, per promotion: from ``triggered_at``, else the
  ``event_at`` of the trigger event that started its run, else the run's start, to the
  promotion's ``decided_at``: mean, p50, p90 (linear interpolation) in seconds.
* ``change_failure_rate`` = promotions later rolled back / promotions. A promotion is rolled
  back when ``rolled_back_at`` is set, or when the first later move of its alias (moves that
  set its own version again are skipped) points the alias at an older version. A move to a
  newer version supersedes it; deleting the alias is neither.

:func:`maturity_report` grades the setup from level 0 to 3 on evidence (counts) only:

0. ``manual``: models are trained, checked and promoted by hand.
1. ``pipeline automation`` (Google's MLOps level 1): models registered with lineage, pipelines
   registered and run, quality gates checked before promotion.
2. ``CI/CD automation`` (Google's level 2): runs started by a schedule or new data, and
   promotions made by pipelines rather than by hand.
3. ``CI/CD + continuous training``: monitoring with reference profiles and alert rules,
   ground-truth feedback, and monitoring alerts that started retraining runs.

A level counts when every criterion of it and of the levels below is met.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from modelyard.errors import InvalidInput
from modelyard.page import Page
from modelyard.store.tables import (
    PipelineRow,
    PipelineRunRow,
    PromotionRow,
    TriggerEventRow,
    TriggerRow,
)

if TYPE_CHECKING:
    from modelyard.governance.entities import AuditRecord
    from modelyard.workspace import Workspace

__all__ = [
    "LEVELS",
    "DeliveryReport",
    "LeadTime",
    "MaturityCriterion",
    "MaturityReport",
    "ModelDelivery",
    "WeekCount",
    "delivery_report",
    "maturity_report",
]

DAY = 86_400.0
T = TypeVar("T")

#: The maturity levels, lowest first.
LEVELS = {
    0: "manual",
    1: "pipeline automation",
    2: "CI/CD automation",
    3: "CI/CD + continuous training",
}


# --- delivery KPIs ----------------------------------------------------------------------


class WeekCount(BaseModel):
    week: str  # ISO week, e.g. "2026-W47"
    promotions: int


class LeadTime(BaseModel):
    """Seconds from the event that started the work to the new version serving."""

    samples: int
    mean_s: float
    p50_s: float
    p90_s: float


class ModelDelivery(BaseModel):
    """How one model's changes reached production."""

    model: str
    candidates: int  # checked by quality gates
    promotions: int  # passed and moved an alias
    gate_failures: int
    gate_failure_rate: float | None
    promotions_per_week: list[WeekCount] = Field(default_factory=list)  # first to last week
    mean_promotions_per_week: float | None = None
    mean_deploy_s: float | None = None
    mean_validation_s: float | None = None
    deployment_velocity_per_day: float | None = None
    lead_time: LeadTime | None = None
    rollbacks: int = 0
    rolled_back_versions: list[int] = Field(default_factory=list)
    change_failure_rate: float | None = None
    by_trigger: dict[str, int] = Field(default_factory=dict)  # promotions by how the run began


class DeliveryReport(BaseModel):
    generated_at: datetime
    since: datetime | None = None
    models: list[ModelDelivery]


def delivery_report(
    ws: Workspace, model: str | None = None, *, since: datetime | None = None
) -> DeliveryReport:
    """Delivery KPIs of ``model`` (or of every model with promotions) since ``since``."""
    since = _utc(since) if since is not None else None
    if model is not None:
        ws.registry.get_model(model)  # NotFound names the model
    query = select(PromotionRow).order_by(PromotionRow.decided_at, PromotionRow.id)
    if model is not None:
        query = query.where(PromotionRow.model == model)
    if since is not None:
        query = query.where(PromotionRow.decided_at >= since)
    with ws.store.read() as s:
        promotions = list(s.scalars(query))
        run_ids = {p.pipeline_run_id for p in promotions if p.pipeline_run_id}
        runs: dict[str, PipelineRunRow] = {}
        started_by: dict[str | None, datetime] = {}
        for ids in _chunks(run_ids):
            runs.update(
                (r.id, r)
                for r in s.scalars(select(PipelineRunRow).where(PipelineRunRow.id.in_(ids)))
            )
            started_by.update(
                (e.run_id, e.event_at)
                for e in s.scalars(select(TriggerEventRow).where(TriggerEventRow.run_id.in_(ids)))
            )
    by_model: dict[str, list[PromotionRow]] = {}
    for p in promotions:
        by_model.setdefault(p.model, []).append(p)
    if model is not None:
        by_model.setdefault(model, [])
    models = [
        _model_delivery(ws, name, rows, runs, started_by) for name, rows in sorted(by_model.items())
    ]
    return DeliveryReport(generated_at=datetime.now(UTC), since=since, models=models)


def _model_delivery(
    ws: Workspace,
    model: str,
    promotions: list[PromotionRow],
    runs: dict[str, PipelineRunRow],
    started_by: dict[str | None, datetime],
) -> ModelDelivery:
    promoted = [p for p in promotions if p.promoted]
    refused = len(promotions) - len(promoted)
    result = ModelDelivery(
        model=model,
        candidates=len(promotions),
        promotions=len(promoted),
        gate_failures=refused,
        gate_failure_rate=refused / len(promotions) if promotions else None,
    )
    weeks = _weeks(p.decided_at for p in promoted)
    result.promotions_per_week = weeks
    if weeks:
        result.mean_promotions_per_week = len(promoted) / len(weeks)

    deploys, validations = [], []
    for p in promotions:
        run = runs.get(p.pipeline_run_id or "")
        summary = run.summary if run is not None else {}
        deploy = _seconds(summary.get("deploy_s"))
        if deploy is not None:
            deploys.append(deploy)
        evaluate = _seconds(summary.get("evaluate_s"))
        gate = _seconds(summary.get("gate_s"))
        if gate is None:
            gate = _seconds((p.report or {}).get("seconds"))
        if evaluate is not None or gate is not None:
            validations.append((evaluate or 0.0) + (gate or 0.0))
    result.mean_deploy_s = _mean(deploys)
    result.mean_validation_s = _mean(validations)
    if result.mean_deploy_s is not None and result.mean_validation_s is not None:
        cycle = result.mean_deploy_s + result.mean_validation_s
        if cycle > 0:
            result.deployment_velocity_per_day = len(promoted) / cycle * DAY

    leads = []
    for p in promoted:
        run = runs.get(p.pipeline_run_id or "")
        start = (
            p.triggered_at
            or started_by.get(p.pipeline_run_id)
            or (run.started_at if run is not None else None)
        )
        if start is not None:
            leads.append(max(0.0, (p.decided_at - start).total_seconds()))
    if leads:
        p50, p90 = np.percentile(leads, [50, 90])
        result.lead_time = LeadTime(
            samples=len(leads), mean_s=float(np.mean(leads)), p50_s=float(p50), p90_s=float(p90)
        )

    histories: dict[str, list[AuditRecord]] = {}
    for p in promoted:
        if p.alias not in histories:
            histories[p.alias] = _alias_history(ws, model, p.alias)
        if p.rolled_back_at is not None or _rolled_back(p, histories[p.alias]):
            result.rolled_back_versions.append(p.version)
    result.rollbacks = len(result.rolled_back_versions)
    if promoted:
        result.change_failure_rate = result.rollbacks / len(promoted)

    kinds = Counter(
        str((runs[p.pipeline_run_id].trigger or {}).get("kind", "unknown"))
        if p.pipeline_run_id in runs
        else "none"
        for p in promoted
    )
    result.by_trigger = dict(sorted(kinds.items()))
    return result


def _alias_history(ws: Workspace, model: str, alias: str) -> list[AuditRecord]:
    """Every move of ``model@alias``, oldest first."""
    records: list[AuditRecord] = []
    offset = 0
    while True:
        page = ws.audit.list(
            entity_type="model_alias", entity_id=f"{model}@{alias}", limit=1000, offset=offset
        )
        records.extend(page.items)
        if page.next_page_token is None:
            break
        offset += len(page.items)
    records.reverse()
    return [r for r in records if r.action in ("alias.set", "alias.delete")]


def _rolled_back(promotion: PromotionRow, history: Sequence[AuditRecord]) -> bool:
    """Whether the first later move of the alias went back to an older version."""
    for record in history:
        if record.at <= promotion.decided_at:
            continue
        if record.action == "alias.delete":
            return False
        version = (record.after or {}).get("version")
        if version == promotion.version:
            continue  # the promotion's own move (recorded just after its decision) or a repeat
        return isinstance(version, int) and version < promotion.version
    return False


def _weeks(times: Iterable[datetime]) -> list[WeekCount]:
    counts = Counter(_monday(t) for t in times)
    if not counts:
        return []
    first, last = min(counts), max(counts)
    weeks = []
    week = first
    while week <= last:
        year, number, _ = week.isocalendar()
        weeks.append(WeekCount(week=f"{year}-W{number:02d}", promotions=counts.get(week, 0)))
        week += timedelta(days=7)
    return weeks


def _monday(t: datetime) -> date:
    day = t.astimezone(UTC).date()
    return day - timedelta(days=day.weekday())


# --- maturity ---------------------------------------------------------------------------


class MaturityCriterion(BaseModel):
    """One piece of evidence the grade rests on."""

    key: str
    level: int
    title: str
    met: bool
    evidence: dict[str, int]
    advice: str  # what to do when it is not met


class MaturityReport(BaseModel):
    generated_at: datetime
    level: int
    name: str
    criteria: list[MaturityCriterion]
    next_steps: list[str]  # the unmet criteria of the next level, as things to do


def maturity_report(ws: Workspace) -> MaturityReport:
    """Grade the setup from level 0 (manual) to 3 (CI/CD + continuous training)."""
    evidence = _Evidence(ws)
    criteria = [
        MaturityCriterion(
            key="lineage",
            level=1,
            title="Models registered with lineage (run and datasets)",
            met=evidence.versions_with_lineage > 0,
            evidence={
                "models": evidence.models,
                "versions": evidence.versions,
                "versions_with_run": evidence.versions_with_run,
                "versions_with_datasets": evidence.versions_with_datasets,
                "versions_with_lineage": evidence.versions_with_lineage,
            },
            advice="register models from tracked runs, with the datasets they were trained "
            "on (log_dataset in the run, then log_model with datasets=...)",
        ),
        MaturityCriterion(
            key="pipelines",
            level=1,
            title="Training pipelines registered and run",
            met=evidence.pipelines > 0 and evidence.succeeded_runs > 0,
            evidence={
                "pipelines": evidence.pipelines,
                "runs": evidence.runs,
                "succeeded_runs": evidence.succeeded_runs,
            },
            advice="write the training as a pipeline, register it and run it "
            "(`modelyard pipelines run`) instead of training in a notebook",
        ),
        MaturityCriterion(
            key="quality_gates",
            level=1,
            title="Quality gates checked before promotion",
            met=evidence.candidates > 0,
            evidence={
                "candidates_checked": evidence.candidates,
                "promoted": evidence.promoted,
                "refused": evidence.candidates - evidence.promoted,
            },
            advice="promote through quality gates (thresholds, no worse than the champion) "
            "instead of moving aliases by hand",
        ),
        MaturityCriterion(
            key="triggered_runs",
            level=2,
            title="Runs started by a schedule or by new data",
            met=evidence.started.get("schedule", 0) + evidence.started.get("dataset", 0) > 0,
            evidence={
                "schedule_triggers": evidence.triggers.get("schedule", 0),
                "dataset_triggers": evidence.triggers.get("dataset", 0),
                "runs_started_by_schedule": evidence.started.get("schedule", 0),
                "runs_started_by_data": evidence.started.get("dataset", 0),
            },
            advice="add a schedule or dataset trigger to the training pipeline so it "
            "retrains without anyone starting it",
        ),
        MaturityCriterion(
            key="automatic_promotions",
            level=2,
            title="Promotions made by pipelines, not by hand",
            met=evidence.automatic_promotions > 0,
            evidence={
                "automatic_promotions": evidence.automatic_promotions,
                "promotions": evidence.promoted,
            },
            advice="let the pipeline's gate step promote the candidate that passes, so a "
            "better model reaches serving without a manual step",
        ),
        MaturityCriterion(
            key="monitoring",
            level=3,
            title="Monitoring with reference profiles and alert rules",
            met=evidence.references > 0 and evidence.alert_rules > 0,
            evidence={
                "versions_with_reference_profile": evidence.references,
                "alert_rules": evidence.alert_rules,
            },
            advice="set a reference profile for served versions (`set_reference`) and alert "
            "rules on drift and performance",
        ),
        MaturityCriterion(
            key="feedback",
            level=3,
            title="Ground-truth feedback received",
            met=evidence.feedback > 0,
            evidence={"feedback_labels": evidence.feedback, "endpoints": evidence.endpoints},
            advice="post ground-truth labels for served predictions so performance is "
            "measured on real outcomes",
        ),
        MaturityCriterion(
            key="alert_retraining",
            level=3,
            title="Monitoring alerts that started retraining",
            met=evidence.started.get("alert", 0) > 0,
            evidence={
                "alert_triggers": evidence.triggers.get("alert", 0),
                "runs_started_by_alerts": evidence.started.get("alert", 0),
            },
            advice="add an alert trigger (drift, performance, KPI) to the training pipeline "
            "to close the loop from monitoring to retraining",
        ),
    ]
    level = 0
    for candidate in sorted(LEVELS)[1:]:
        if all(c.met for c in criteria if c.level == candidate):
            level = candidate
        else:
            break
    next_steps = [c.advice for c in criteria if c.level == level + 1 and not c.met]
    return MaturityReport(
        generated_at=datetime.now(UTC),
        level=level,
        name=LEVELS[level],
        criteria=criteria,
        next_steps=next_steps,
    )


class _Evidence:
    """Counts read from each domain's service (and this domain's own tables)."""

    def __init__(self, ws: Workspace) -> None:
        self._registry(ws)
        self._pipelines(ws)
        self._monitoring(ws)

    def _registry(self, ws: Workspace) -> None:
        self.models = self.versions = 0
        self.versions_with_run = self.versions_with_datasets = self.versions_with_lineage = 0
        models = _all_pages(partial(ws.registry.list_models, include_archived=True, limit=1000))
        for model in models:
            self.models += 1
            for version in _all_pages(partial(ws.registry.list_versions, model.name, limit=1000)):
                self.versions += 1
                self.versions_with_run += version.run_id is not None
                self.versions_with_datasets += bool(version.datasets)
                self.versions_with_lineage += version.run_id is not None and bool(version.datasets)

    def _pipelines(self, ws: Workspace) -> None:
        with ws.store.read() as s:
            self.pipelines = int(s.scalar(select(func.count()).select_from(PipelineRow)) or 0)
            statuses = dict(
                s.execute(
                    select(PipelineRunRow.status, func.count()).group_by(PipelineRunRow.status)
                ).all()
            )
            self.runs = int(sum(statuses.values()))
            self.succeeded_runs = int(statuses.get("succeeded", 0))
            promoted = dict(
                s.execute(
                    select(PromotionRow.promoted, func.count()).group_by(PromotionRow.promoted)
                ).all()
            )
            self.candidates = int(sum(promoted.values()))
            self.promoted = int(promoted.get(True, 0))
            self.automatic_promotions = int(
                s.scalar(
                    select(func.count())
                    .select_from(PromotionRow)
                    .where(
                        PromotionRow.promoted.is_(True), PromotionRow.pipeline_run_id.is_not(None)
                    )
                )
                or 0
            )
            self.triggers: dict[str, int] = {
                k: int(v)
                for k, v in s.execute(
                    select(TriggerRow.kind, func.count()).group_by(TriggerRow.kind)
                ).all()
            }
            self.started: dict[str, int] = {
                k: int(v)
                for k, v in s.execute(
                    select(TriggerRow.kind, func.count())
                    .join(TriggerEventRow, TriggerEventRow.trigger_id == TriggerRow.id)
                    .where(TriggerEventRow.outcome == "started")
                    .group_by(TriggerRow.kind)
                ).all()
            }

    def _monitoring(self, ws: Workspace) -> None:
        referenced: set[str] = set()
        offset = 0
        while True:
            page = ws.audit.list(action="monitor.reference", limit=1000, offset=offset)
            referenced.update(r.entity_id for r in page.items)
            if page.next_page_token is None:
                break
            offset += len(page.items)
        self.references = len(referenced)
        self.alert_rules = len(ws.monitoring.alerts.list_rules())
        statuses = ws.monitoring.status()
        self.endpoints = len(statuses)
        self.feedback = sum(s.feedback for s in statuses)


# --- small pieces -----------------------------------------------------------------------


def _all_pages(fetch: Callable[..., Page[T]]) -> Iterator[T]:
    """Every item of a paged listing (``fetch(page_token=...)``)."""
    token: str | None = None
    while True:
        page = fetch(page_token=token)
        yield from page.items
        token = page.next_page_token
        if token is None:
            return


def _chunks(ids: set[str], size: int = 500) -> Iterator[list[str]]:
    """``ids`` a few hundred at a time (databases limit bind parameters)."""
    ordered = sorted(ids)
    for i in range(0, len(ordered), size):
        yield ordered[i : i + size]


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if np.isfinite(value) and value >= 0 else None


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _utc(value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidInput(f"since must be a datetime, got {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
