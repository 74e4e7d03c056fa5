"""Alert rules: what a rule of each kind may watch, its validated spec, and the alert entities.

A rule's spec is checked when it is created or changed (name, endpoint, a metric that fits
its kind, webhooks that are http(s) URLs, a window the endpoint's monitor closes); a stored
rule is read back without re-validation, so a rule stored under older checks stays
readable. The service that uses them is :class:`~modelyard.monitoring.alerts.AlertService`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelyard.errors import InvalidInput, NotFound
from modelyard.jsonio import JsonFloat, JsonInt, NotABoolean
from modelyard.monitoring.config import MonitorConfig
from modelyard.store.schema import MAX_INTEGER
from modelyard.store.tables import AlertRow, AlertRuleRow, MonitorConfigRow

AlertKind = Literal[
    "drift", "performance", "kpi", "latency", "error_rate", "volume", "extraction", "deadline"
]
Op = Literal[">", ">=", "<", "<="]
AlertStatus = Literal["open", "escalated", "resolved"]
EventKind = Literal["opened", "escalated", "acknowledged", "resolved"]

#: Statuses of an alert that still needs attention.
ACTIVE = ("open", "escalated")
#: What a list of alerts may be filtered by: a status, ``active`` (open or escalated), or
#: ``acknowledged`` (active, and someone said they are on it).
ALERT_FILTERS = ("open", "escalated", "resolved", "active", "acknowledged")

#: Metrics a ``performance`` rule may watch (``<metric>.<slice>`` is accepted too).
PERFORMANCE_METRICS = frozenset(
    {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "mae", "mse", "rmse", "r2"}
)

#: Metrics a ``volume`` rule may watch: traffic per window, and ``idle_windows``, the number
#: of consecutive windows up to this one in which the endpoint answered no request.
VOLUME_METRICS = frozenset({"requests", "rows", "throughput_rps", "idle_windows"})

#: Metrics an ``extraction`` rule may watch: callers flagged in the window, and the highest
#: near-duplicate share, grid share and volume ratio of a caller (monitoring/extraction.py).
EXTRACTION_METRICS = frozenset(
    {
        "extraction_suspects",
        "extraction_near_duplicates",
        "extraction_grid",
        "extraction_volume_ratio",
    }
)

#: Metrics a ``deadline`` rule may watch (monitoring/deadlines.py): ``effective_accuracy``,
#: ``deadline_met_rate``, ``deadline_requests``, and per variant ``deadline_met_rate.<variant>``
#: and ``variant_share.<variant>``.
DEADLINE_METRICS = frozenset({"effective_accuracy", "deadline_met_rate", "deadline_requests"})
DEADLINE_VARIANT_METRICS = frozenset({"deadline_met_rate", "variant_share"})

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: The longest an alert may stay open before it escalates (a year, in seconds).
MAX_ESCALATE_AFTER = 366 * 86_400
_SecondsOpen = Annotated[
    int, Field(gt=0, le=MAX_ESCALATE_AFTER, description="seconds open"), NotABoolean
]
_LATENCY = re.compile(r"^latency_[A-Za-z0-9_.]+$")


# --- entities ---------------------------------------------------------------------------


class _RuleFields(BaseModel):
    name: str = Field(json_schema_extra={"pattern": _NAME.pattern})
    endpoint: str = Field(min_length=1, max_length=256)
    kind: AlertKind
    metric: str = Field(min_length=1, max_length=256)
    op: Op
    threshold: JsonFloat = Field(allow_inf_nan=False)
    window: JsonInt = Field(
        gt=0, le=86_400, description="seconds: one of the endpoint's monitor granularities"
    )
    min_samples: JsonInt = Field(default=30, ge=0, le=MAX_INTEGER)
    escalate_after: _SecondsOpen | None = None
    auto_resolve: StrictBool = False
    webhooks: list[str] = Field(default_factory=list, max_length=20)
    enabled: StrictBool = True


class AlertRuleSpec(_RuleFields):
    """What a rule watches: ``metric op threshold`` on an endpoint's windows of ``window`` s."""

    model_config = {"extra": "forbid"}

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "use up to 128 letters, digits, '.', '_', '-' starting with a letter or digit"
            )
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name the endpoint the rule watches")
        return value

    @field_validator("webhooks")
    @classmethod
    def _webhooks(cls, urls: list[str]) -> list[str]:
        if not urls:
            return []
        import httpx  # ~90 ms to import: only rules with webhooks need it

        for url in urls:
            try:
                parsed = httpx.URL(url)
            except (httpx.InvalidURL, TypeError):
                raise ValueError(f"webhook {url!r} is not a URL") from None
            if parsed.scheme not in ("http", "https") or not parsed.host or len(url) > 2048:
                raise ValueError(f"webhook {url!r} must be an http:// or https:// URL with a host")
        return list(dict.fromkeys(urls))  # the same URL twice would be notified twice

    @model_validator(mode="after")
    def _metric_fits_kind(self) -> AlertRuleSpec:
        if not metric_fits(self.kind, self.metric):
            raise ValueError(
                f"metric {self.metric!r} does not fit kind {self.kind!r}: {METRIC_HELP[self.kind]}"
            )
        return self


METRIC_HELP = {
    "drift": "use drift_share, drifted_features or drift.<feature>",
    "performance": "use one of "
    + ", ".join(sorted(PERFORMANCE_METRICS))
    + " (or <metric>.<slice>)",
    "kpi": "use kpi.<name of a project KPI>",
    "latency": "use a latency_* metric such as latency_p99_ms",
    "error_rate": "use error_rate or errors",
    "volume": "use " + ", ".join(sorted(VOLUME_METRICS)),
    "extraction": "use " + ", ".join(sorted(EXTRACTION_METRICS)),
    "deadline": "use "
    + ", ".join(sorted(DEADLINE_METRICS))
    + ", deadline_met_rate.<variant> or variant_share.<variant>",
}


def metric_fits(kind: str, metric: str) -> bool:
    """Whether a rule of ``kind`` may watch ``metric``."""
    head, dot, rest = metric.partition(".")
    if kind == "drift":
        return metric in ("drift_share", "drifted_features") or (head == "drift" and bool(rest))
    if kind == "performance":
        return head in PERFORMANCE_METRICS and (not dot or bool(rest))
    if kind == "kpi":
        return head == "kpi" and bool(rest)
    if kind == "latency":
        return bool(_LATENCY.match(metric))
    if kind == "error_rate":
        return metric in ("error_rate", "errors")
    if kind == "volume":
        return metric in VOLUME_METRICS
    if kind == "extraction":
        return metric in EXTRACTION_METRICS
    if kind == "deadline":
        return metric in DEADLINE_METRICS or (head in DEADLINE_VARIANT_METRICS and bool(rest))
    return False


class AlertRule(_RuleFields):
    """A stored rule."""

    id: str
    created_at: datetime
    updated_at: datetime
    created_by: str = ""


class Alert(BaseModel):
    """One firing of a rule, with the evidence it fired on.

    ``value`` and ``window_start`` are those of the window that opened it; ``evidence`` also
    holds the observation subset it fired on, the newest breaching window (``latest``), how
    many windows breached (``breaching_windows``), once acknowledged the ``acknowledgement``
    and once resolved the ``resolution``. An acknowledged alert keeps its status (open or
    escalated) until resolved, but no longer escalates. ``notifications`` lists webhook
    deliveries (event, url, ok, status, attempts, error, at).
    """

    id: str
    rule: str
    rule_id: str
    endpoint: str
    kind: AlertKind
    metric: str
    op: Op
    threshold: float
    window: int
    window_start: datetime
    window_end: datetime
    value: float | None
    samples: int | None = None
    status: AlertStatus
    opened_at: datetime
    escalated_at: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str = ""
    acknowledgement_note: str = ""
    resolved_at: datetime | None = None
    resolved_by: str = ""
    resolution_note: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict)
    notifications: list[dict[str, Any]] = Field(default_factory=list)


class AlertEvent(BaseModel):
    """What subscribers and webhooks receive when an alert opens, escalates, is acknowledged
    or resolves."""

    kind: EventKind
    alert: Alert
    rule: AlertRule


# --- rows <-> entities ------------------------------------------------------------------


def _spec(data: AlertRuleSpec | dict[str, Any]) -> AlertRuleSpec:
    if isinstance(data, AlertRuleSpec):
        return data
    try:
        return AlertRuleSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'rule'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"alert rule is not valid ({problems})") from None


def _stored(spec: AlertRuleSpec) -> dict[str, Any]:
    return spec.model_dump(exclude={"name", "endpoint", "enabled"})


def _spec_of(row: AlertRuleRow) -> AlertRuleSpec:
    # Built without re-validation: a rule stored under older checks must stay readable.
    return AlertRuleSpec.model_construct(**_RuleFields.model_validate(_fields(row)).model_dump())


def _fields(row: AlertRuleRow) -> dict[str, Any]:
    return {**row.spec, "name": row.name, "endpoint": row.endpoint, "enabled": row.enabled}


def _rule(row: AlertRuleRow) -> AlertRule:
    return AlertRule(
        **_fields(row),
        id=row.id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        created_by=row.created_by,
    )


def _rule_row(s: Session, name: str, *, lock: bool = False) -> AlertRuleRow:
    query = select(AlertRuleRow).where(AlertRuleRow.name == name)
    row = s.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise NotFound(f"no alert rule {name!r}; `modelyard monitor alerts rules` lists them")
    return row


def _alert(row: AlertRow) -> Alert:
    ev = row.evidence
    resolution = ev.get("resolution") or {}
    acknowledgement = ev.get("acknowledgement") or {}
    return Alert(
        id=row.id,
        rule=ev["rule"],
        rule_id=row.rule_id,
        endpoint=row.endpoint,
        kind=ev["kind"],
        metric=ev["metric"],
        op=ev["op"],
        threshold=ev["threshold"],
        window=ev["window"],
        window_start=row.window_start,
        window_end=datetime.fromisoformat(ev["window_end"]),
        value=row.value,
        samples=ev.get("samples"),
        status=row.status,
        opened_at=row.opened_at,
        escalated_at=row.escalated_at,
        acknowledged_at=row.acknowledged_at,
        acknowledged_by=row.acknowledged_by or "",
        acknowledgement_note=acknowledgement.get("note", ""),
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
        resolution_note=resolution.get("note", ""),
        evidence=ev,
        notifications=list(row.notifications or []),
    )


def _check_window(s: Session, endpoint: str, window: int) -> None:
    """A rule's window must be one the monitor closes for its endpoint, or it never fires."""
    config = s.get(MonitorConfigRow, endpoint)
    try:
        granularities = MonitorConfig.model_validate(config.config if config else {}).granularities
    except ValidationError:
        return  # an unreadable config is the monitor's to report, not a reason to refuse
    if window not in granularities:
        raise InvalidInput(
            f"window {window} s is not one of endpoint {endpoint!r}'s monitoring windows "
            f"{sorted(granularities)}; use one of them or add it to the endpoint's granularities"
        )
