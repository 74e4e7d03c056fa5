"""Alert rules and alerts: conditions on an endpoint's windows, fired once, escalated, resolved.

The monitor loop hands :meth:`AlertService.evaluate` one *observation* per endpoint and closed
window: a flat mapping of metric names (``error_rate``, ``latency_p99_ms``, ``drift_share``,
``drift.<feature>``, ``accuracy``, ``kpi.<name>``...) to values, plus sample counts. Each
enabled rule of that endpoint and window compares its metric with its threshold:

* the metric is missing or not a finite number, or has fewer than ``min_samples`` samples:
  the window is *insufficient* and the rule neither fires nor resolves (a ``volume`` rule
  judges every window: no traffic is what it measures);
* the condition holds and the rule has no active (open or escalated) alert: one opens;
* the condition holds and an alert is active: no second alert (an alert fires once), the
  alert's evidence notes the newest breaching window;
* the condition no longer holds in a later window and the rule has ``auto_resolve``: the
  active alert resolves.

A rule never opens an alert for a window that is not later than the window of its newest
alert, so evaluating a window twice (a monitor restart, or labels that arrived late) never
opens two alerts. The check
runs in the write transaction with the rule row locked (PostgreSQL ``FOR UPDATE``; SQLite
serialises write transactions already).

Every opening, escalation and resolution is (a) audited in the same transaction, (b) posted
as JSON to the rule's webhooks after commit, from a background thread with retries (the
outcome is appended to the alert's ``notifications``), and (c) published to in-process
subscribers (:meth:`AlertService.subscribe`) as an :class:`AlertEvent`.

An ``extraction`` rule's metrics are not in the monitor's observation: :meth:`AlertService.
evaluate` adds them (see :mod:`modelyard.monitoring.extraction`) when such a rule watches the
window, and its alerts' evidence names the suspect callers and why.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import weakref
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential
from ulid import ULID

from modelyard import jsonio
from modelyard.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from modelyard.jsonio import JsonFloat, JsonInt, NotABoolean
from modelyard.monitoring.config import MonitorConfig
from modelyard.store import Store
from modelyard.store.schema import MAX_INTEGER
from modelyard.store.tables import AlertRow, AlertRuleRow, MonitorConfigRow

if TYPE_CHECKING:
    from modelyard.monitoring.extraction import ExtractionReport
    from modelyard.workspace import Workspace

log = logging.getLogger("modelyard.monitoring.alerts")

__all__ = [
    "ACTIVE",
    "EXTRACTION_METRICS",
    "PERFORMANCE_METRICS",
    "VOLUME_METRICS",
    "Alert",
    "AlertEvent",
    "AlertKind",
    "AlertRule",
    "AlertRuleSpec",
    "AlertService",
    "AlertStatus",
    "WebhookPolicy",
]

AlertKind = Literal["drift", "performance", "kpi", "latency", "error_rate", "volume", "extraction"]
Op = Literal[">", ">=", "<", "<="]
AlertStatus = Literal["open", "escalated", "resolved"]
EventKind = Literal["opened", "escalated", "resolved"]

#: Statuses of an alert that still needs attention.
ACTIVE = ("open", "escalated")

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

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: The longest an alert may stay open before it escalates (a year, in seconds).
MAX_ESCALATE_AFTER = 366 * 86_400
_SecondsOpen = Annotated[
    int, Field(gt=0, le=MAX_ESCALATE_AFTER, description="seconds open"), NotABoolean
]
_LATENCY = re.compile(r"^latency_[A-Za-z0-9_.]+$")
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": lambda v, t: v > t,
    ">=": lambda v, t: v >= t,
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
}
# Where a rule's sample count comes from when the lead metric has no count of its own.
_SAMPLES_BY_KIND = {
    "drift": "rows",
    "performance": "feedback_samples",
    "latency": "requests",
    "error_rate": "requests",
    "kpi": "samples",
    "volume": "requests",
    "extraction": "rows",
}
# The observation keys kept as an alert's evidence, by kind: (exact names, prefixes).
_EVIDENCE: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "drift": (frozenset({"drift_share", "drifted_features", "rows", "samples"}), ("drift.",)),
    "performance": (
        PERFORMANCE_METRICS | {"feedback_samples", "samples"},
        tuple(f"{m}." for m in PERFORMANCE_METRICS),
    ),
    "latency": (frozenset({"requests", "throughput_rps"}), ("latency_",)),
    "error_rate": (frozenset({"errors", "requests", "error_rate", "rows"}), ()),
    "kpi": (frozenset({"samples"}), ("kpi.",)),
    "volume": (VOLUME_METRICS | {"errors"}, ()),
    "extraction": (EXTRACTION_METRICS, ()),
}


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
    many windows breached (``breaching_windows``) and, once resolved, the ``resolution``.
    ``notifications`` lists webhook deliveries (event, url, ok, status, attempts, error, at).
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
    resolved_at: datetime | None = None
    resolved_by: str = ""
    resolution_note: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict)
    notifications: list[dict[str, Any]] = Field(default_factory=list)


class AlertEvent(BaseModel):
    """What subscribers and webhooks receive when an alert opens, escalates or resolves."""

    kind: EventKind
    alert: Alert
    rule: AlertRule


# --- notifications ----------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookPolicy:
    """How webhooks are called: attempts with exponential backoff, each with a short timeout."""

    attempts: int = 4
    backoff: float = 0.5  # seconds before the second attempt; doubles each time
    max_backoff: float = 8.0
    timeout: float = 5.0


class _Retryable(Exception):
    """A delivery failure worth another attempt (connection error, timeout, 5xx, 408, 429)."""


Subscriber = Callable[[AlertEvent], None]


@dataclass
class _Hub:
    """What every AlertService of one store shares: subscribers and the delivery threads."""

    subscribers: list[Subscriber] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    pending: set[Future[None]] = field(default_factory=set)
    executor: ThreadPoolExecutor | None = None

    def submit(self, fn: Callable[[], None]) -> None:
        with self.lock:
            if self.executor is None:
                self.executor = ThreadPoolExecutor(4, thread_name_prefix="modelyard-webhook")
            future = self.executor.submit(fn)
            self.pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self.lock:
            self.pending.discard(future)

    def wait(self, timeout: float | None) -> bool:
        with self.lock:
            pending = set(self.pending)
        _, not_done = wait(pending, timeout=timeout)
        return not not_done


# Keyed by the Store so that services made from one workspace (and its as_actor views) share
# one hub, and the hub goes away with the store.
_HUBS: weakref.WeakKeyDictionary[Store, _Hub] = weakref.WeakKeyDictionary()
_HUBS_LOCK = threading.Lock()


def _hub(store: Store) -> _Hub:
    with _HUBS_LOCK:
        hub = _HUBS.get(store)
        if hub is None:
            hub = _HUBS[store] = _Hub()
        return hub


# --- the service ------------------------------------------------------------------------


@dataclass
class _Pending:
    """Events of one transaction, published once it has committed."""

    events: list[AlertEvent] = field(default_factory=list)

    def add(self, kind: EventKind, row: AlertRow, rule: AlertRuleRow) -> Alert:
        alert = _alert(row)
        self.events.append(AlertEvent(kind=kind, alert=alert, rule=_rule(rule)))
        return alert


class AlertService:
    """Alert rules, the alerts they open, and who hears about them."""

    def __init__(self, ws: Workspace, *, webhooks: WebhookPolicy | None = None) -> None:
        self.ws = ws
        self.store = ws.store
        self.webhooks = webhooks or WebhookPolicy()
        self._hub = _hub(ws.store)

    # rules ------------------------------------------------------------------------------

    def create_rule(self, spec: AlertRuleSpec | Mapping[str, Any]) -> AlertRule:
        """Create a rule; :class:`AlreadyExists` if the name is taken."""
        spec = _spec(spec if isinstance(spec, AlertRuleSpec) else dict(spec))
        now = datetime.now(UTC)
        with self.store.write(self.ws.actor) as tx:
            _check_window(tx.session, spec.endpoint, spec.window)
            if tx.session.scalar(select(AlertRuleRow.id).where(AlertRuleRow.name == spec.name)):
                raise AlreadyExists(f"alert rule {spec.name!r} exists already; pick another name")
            row = AlertRuleRow(
                id=str(ULID()),
                name=spec.name,
                endpoint=spec.endpoint,
                spec=_stored(spec),
                enabled=spec.enabled,
                created_at=now,
                updated_at=now,
                created_by=self.ws.actor,
            )
            tx.session.add(row)
            rule = _rule(row)
            tx.record("alert_rule.create", "alert_rule", spec.name, after=spec.model_dump())
        return rule

    def get_rule(self, name: str) -> AlertRule:
        with self.store.read() as s:
            return _rule(_rule_row(s, name))

    def list_rules(self, endpoint: str | None = None) -> list[AlertRule]:
        """Rules by name, optionally only those of ``endpoint``."""
        query = select(AlertRuleRow).order_by(AlertRuleRow.name)
        if endpoint is not None:
            query = query.where(AlertRuleRow.endpoint == endpoint)
        with self.store.read() as s:
            return [_rule(r) for r in s.scalars(query)]

    def update_rule(self, name: str, /, **changes: Any) -> AlertRule:
        """Change the given fields of a rule (all but its name); open alerts keep theirs."""
        unknown = set(changes) - set(AlertRuleSpec.model_fields)
        if unknown:
            raise InvalidInput(
                f"alert rules have no field(s) {', '.join(sorted(unknown))}; "
                f"change any of {', '.join(f for f in AlertRuleSpec.model_fields if f != 'name')}"
            )
        if "name" in changes and changes["name"] != name:
            raise InvalidInput("an alert rule cannot be renamed; create a new rule instead")
        with self.store.write(self.ws.actor) as tx:
            row = _rule_row(tx.session, name, lock=True)
            current = _spec_of(row)
            spec = _spec({**current.model_dump(), **changes})
            if spec == current:
                return _rule(row)
            if (spec.endpoint, spec.window) != (current.endpoint, current.window):
                _check_window(tx.session, spec.endpoint, spec.window)
            before, after = current.model_dump(), spec.model_dump()
            row.endpoint, row.enabled, row.spec = spec.endpoint, spec.enabled, _stored(spec)
            row.updated_at = datetime.now(UTC)
            tx.record_change("alert_rule.update", "alert_rule", name, before, after)
            return _rule(row)

    def delete_rule(self, name: str) -> None:
        """Delete a rule and its alerts (their history stays in the audit log)."""
        with self.store.write(self.ws.actor) as tx:
            row = _rule_row(tx.session, name, lock=True)
            alerts = tx.session.scalar(
                select(func.count()).select_from(AlertRow).where(AlertRow.rule_id == row.id)
            )
            before = {**_spec_of(row).model_dump(), "alerts": alerts}
            tx.session.delete(row)  # the alerts go by ON DELETE CASCADE
            tx.record("alert_rule.delete", "alert_rule", name, before=before)

    # evaluation -------------------------------------------------------------------------

    def evaluate(
        self,
        endpoint: str,
        window: int,
        window_start: datetime,
        observation: Mapping[str, float | None],
        samples: Mapping[str, int] | int,
        *,
        now: datetime | None = None,
        kinds: Collection[str] | None = None,
        late: bool = False,
    ) -> list[Alert]:
        """Check the enabled rules of ``endpoint`` and ``window`` against one window.

        ``kinds``: only rules of these kinds. ``late``: the window was evaluated before and
        is evaluated again because labels arrived after it closed; an alert it opens says so
        (``evidence.late_labels``), and it opens none inside an incident that an earlier
        alert of the rule already covered (one resolved by a later window, or resolved by
        hand after this window ended). Returns the alerts this call opened, resolved or
        updated (newest value noted).
        """
        window_start = _utc(window_start)
        now = _utc(now) if now is not None else datetime.now(UTC)
        # Most (endpoint, window) pairs have no rule: find out without taking the write lock.
        if not self.has_rules(endpoint, window, kinds):
            return []
        details = None  # an extraction rule's evidence: the suspects, named
        report = self._extraction(endpoint, window, window_start, kinds)
        if report is not None:
            observation = {**observation, **report.observation()}
            if isinstance(samples, Mapping):
                samples = {**samples, **dict.fromkeys(EXTRACTION_METRICS, report.rows)}
            details = report.evidence()
        pending = _Pending()
        changed: list[Alert] = []
        with self.store.write(self.ws.actor) as tx:
            s = tx.session
            rules = s.scalars(
                select(AlertRuleRow)
                .where(AlertRuleRow.endpoint == endpoint, AlertRuleRow.enabled.is_(True))
                .order_by(AlertRuleRow.id)  # one lock order for every writer: no deadlocks
                .with_for_update()
            ).all()
            for rule in rules:
                spec = _spec_of(rule)
                if spec.window != window or (kinds is not None and spec.kind not in kinds):
                    continue
                value = _number(observation.get(spec.metric))
                count = _samples(spec, samples)
                # A volume rule judges every window: no traffic is its observation, not a
                # lack of samples.
                if value is None or (spec.kind != "volume" and count < spec.min_samples):
                    continue  # insufficient: neither fires nor resolves
                check = _Check(rule, spec, window_start, value, count, now, self.ws.actor, late)
                if spec.kind == "extraction":
                    check.details = details
                outcome = check.apply(s, observation)
                if outcome is None:
                    continue
                row, what, before = outcome
                if what == "updated":
                    changed.append(_alert(row))
                    continue
                action = "alert.open" if what == "opened" else "alert.resolve"
                tx.record(action, "alert", row.id, before, _audit_state(row))
                changed.append(pending.add(what, row, rule))
        self._publish(pending)
        return changed

    def _extraction(
        self, endpoint: str, window: int, start: datetime, kinds: Collection[str] | None
    ) -> ExtractionReport | None:
        """The window's callers judged, when an extraction rule watches it (None: none, or
        the log could not be read: the rule then sees an insufficient window)."""
        if kinds is not None and "extraction" not in kinds:
            return None
        if not self.has_rules(endpoint, window, ("extraction",)):
            return None
        from modelyard.monitoring.extraction import observe

        try:
            return observe(self.ws, endpoint, start, window)
        except Exception:
            log.exception("extraction analysis of %s from %s failed", endpoint, start)
            return None

    def has_rules(
        self, endpoint: str, window: int | None = None, kinds: Collection[str] | None = None
    ) -> bool:
        """Whether ``endpoint`` has enabled rules (of ``window``, of ``kinds``)."""
        with self.store.read() as s:
            specs = s.scalars(
                select(AlertRuleRow.spec).where(
                    AlertRuleRow.endpoint == endpoint, AlertRuleRow.enabled.is_(True)
                )
            ).all()
        return any(
            (window is None or spec.get("window") == window)
            and (kinds is None or spec.get("kind") in kinds)
            for spec in specs
        )

    def escalate_due(
        self, now: datetime | None = None, *, endpoint: str | None = None
    ) -> list[Alert]:
        """Escalate the open alerts older than their rule's ``escalate_after``.

        Alerts of disabled rules are left alone (disabling a rule mutes it).
        """
        now = _utc(now) if now is not None else datetime.now(UTC)
        pending = _Pending()
        escalated: list[Alert] = []
        with self.store.write(self.ws.actor) as tx:
            s = tx.session
            query = select(AlertRow.id, AlertRow.rule_id, AlertRow.opened_at).where(
                AlertRow.status == "open"
            )
            if endpoint is not None:
                query = query.where(AlertRow.endpoint == endpoint)
            candidates = s.execute(query).all()
            if not candidates:
                return []
            rules = {
                r.id: r
                for r in s.scalars(
                    select(AlertRuleRow)
                    .where(AlertRuleRow.id.in_({c.rule_id for c in candidates}))
                    .order_by(AlertRuleRow.id)
                    .with_for_update()
                )
            }
            for alert_id, rule_id, opened_at in sorted(candidates, key=lambda c: c.opened_at):
                rule = rules.get(rule_id)
                if rule is None or not rule.enabled:
                    continue
                after = _spec_of(rule).escalate_after
                if after is None or opened_at + timedelta(seconds=after) > now:
                    continue
                row = s.scalar(
                    select(AlertRow)
                    .where(AlertRow.id == alert_id, AlertRow.status == "open")
                    .with_for_update()
                )
                if row is None:  # resolved meanwhile
                    continue
                row.status, row.escalated_at = "escalated", now
                tx.record("alert.escalate", "alert", row.id, {"status": "open"}, _audit_state(row))
                escalated.append(pending.add("escalated", row, rule))
        self._publish(pending)
        return escalated

    def resolve(self, alert_id: str, by: str | None = None, note: str = "") -> Alert:
        """Resolve an open or escalated alert; :class:`Conflict` if it is resolved already."""
        pending = _Pending()
        with self.store.write(self.ws.actor) as tx:
            s = tx.session
            rule_id = s.scalar(select(AlertRow.rule_id).where(AlertRow.id == alert_id))
            if rule_id is None:
                raise NotFound(_no_alert(alert_id))
            # Rule first, then alert: the lock order evaluate() uses.
            rule = s.scalar(
                select(AlertRuleRow).where(AlertRuleRow.id == rule_id).with_for_update()
            )
            row = s.scalar(select(AlertRow).where(AlertRow.id == alert_id).with_for_update())
            if rule is None or row is None:
                raise NotFound(_no_alert(alert_id))
            if row.status == "resolved":
                raise Conflict(
                    f"alert {alert_id} was resolved already at {row.resolved_at:%Y-%m-%d %H:%M:%S}"
                    f" UTC by {row.resolved_by or 'unknown'}"
                )
            before = {"status": row.status}
            _resolve_row(row, by or self.ws.actor, note, datetime.now(UTC), auto=False)
            tx.record("alert.resolve", "alert", row.id, before, _audit_state(row))
            alert = pending.add("resolved", row, rule)
        self._publish(pending)
        return alert

    # reading ----------------------------------------------------------------------------

    def get_alert(self, alert_id: str) -> Alert:
        with self.store.read() as s:
            row = s.get(AlertRow, alert_id)
            if row is None:
                raise NotFound(_no_alert(alert_id))
            return _alert(row)

    def list_alerts(
        self,
        endpoint: str | None = None,
        status: str | Sequence[str] | None = None,
        since: datetime | None = None,
        *,
        rule: str | None = None,
        limit: int | None = None,
    ) -> list[Alert]:
        """Alerts oldest first (by ``opened_at``, then id), opened at or after ``since``.

        ``status`` is one status, several, or ``"active"`` (open or escalated). Pollers pass
        the ``opened_at`` of the newest alert they saw as ``since`` and skip ids they know:
        the order is stable, and ``since`` is inclusive so no alert is ever skipped.
        """
        statuses = _statuses(status)
        query = select(AlertRow).order_by(AlertRow.opened_at, AlertRow.id)
        if endpoint is not None:
            query = query.where(AlertRow.endpoint == endpoint)
        if statuses is not None:
            query = query.where(AlertRow.status.in_(statuses))
        if since is not None:
            query = query.where(AlertRow.opened_at >= _utc(since))
        if limit is not None:
            if limit < 1:
                raise InvalidInput(f"limit must be at least 1, got {limit}")
            query = query.limit(limit)
        with self.store.read() as s:
            if rule is not None:
                query = query.where(AlertRow.rule_id == _rule_row(s, rule).id)
            return [_alert(r) for r in s.scalars(query)]

    # events -----------------------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(event)`` for every alert opened, escalated or resolved in-process.

        Callbacks run in the thread that made the change, after it committed; keep them quick
        (hand long work to a thread). Returns a function that unsubscribes.
        """
        hub = self._hub
        with hub.lock:
            hub.subscribers.append(callback)

        def unsubscribe() -> None:
            with hub.lock:
                if callback in hub.subscribers:
                    hub.subscribers.remove(callback)

        return unsubscribe

    def flush_notifications(self, timeout: float | None = None) -> bool:
        """Wait for webhook deliveries under way; False if some were still running at timeout."""
        return self._hub.wait(timeout)

    def _publish(self, pending: _Pending) -> None:
        if not pending.events:
            return
        with self._hub.lock:
            subscribers = list(self._hub.subscribers)
        for event in pending.events:
            for url in event.rule.webhooks:
                self._hub.submit(_Delivery(self.store, self.webhooks, event, url).run)
            for callback in subscribers:
                try:
                    callback(event)
                except Exception:
                    log.exception(
                        "alert subscriber %r failed on %s alert %s",
                        callback,
                        event.kind,
                        event.alert.id,
                    )


@dataclass
class _Check:
    """One rule applied to one window, under the rule's lock."""

    rule: AlertRuleRow
    spec: AlertRuleSpec
    window_start: datetime
    value: float
    samples: int
    now: datetime
    actor: str
    late: bool = False
    details: Mapping[str, Any] | None = None  # more evidence (an extraction rule's suspects)

    def apply(
        self, s: Session, observation: Mapping[str, float | None]
    ) -> tuple[AlertRow, Literal["opened", "resolved", "updated"], dict[str, Any] | None] | None:
        """``(alert, what happened, its state before)``, or None when nothing changed."""
        spec, start, value = self.spec, self.window_start, self.value
        breached = _COMPARE[spec.op](value, spec.threshold)
        active = s.scalar(
            select(AlertRow)
            .where(AlertRow.rule_id == self.rule.id, AlertRow.status.in_(ACTIVE))
            .order_by(AlertRow.opened_at.desc(), AlertRow.id.desc())
            .limit(1)
            .with_for_update()
        )
        latest = {"value": value, "window_start": start.isoformat(), "samples": self.samples}
        if active is not None:
            # The newest breaching window: older windows (a re-run) change nothing.
            seen = datetime.fromisoformat(active.evidence["latest"]["window_start"])
            if breached:
                if start < seen or (start == seen and active.evidence["latest"] == latest):
                    return None
                evidence = dict(active.evidence)
                if start > seen:
                    evidence["breaching_windows"] = evidence.get("breaching_windows", 1) + 1
                evidence["latest"] = latest
                active.evidence = evidence  # a new dict: JSON columns do not track mutation
                return active, "updated", None
            if spec.auto_resolve and start > seen:
                before = {"status": active.status}
                note = (
                    f"auto-resolved: {spec.metric} = {value:g} is no longer {spec.op} "
                    f"{spec.threshold:g} in the window from {start.isoformat()}"
                )
                _resolve_row(active, self.actor, note, self.now, auto=True, window=start)
                return active, "resolved", before
            return None
        if not breached:
            return None
        newest = s.scalar(
            select(func.max(AlertRow.window_start)).where(AlertRow.rule_id == self.rule.id)
        )
        if newest is not None and start <= newest:
            return None  # this window (or a later one) fired already: fire once
        end = start + timedelta(seconds=spec.window)
        if self.late and self._covered(s, start, end):
            return None
        row = AlertRow(
            id=str(ULID()),
            rule_id=self.rule.id,
            endpoint=self.rule.endpoint,
            status="open",
            window_start=start,
            value=value,
            evidence={
                "rule": self.rule.name,
                "kind": spec.kind,
                "metric": spec.metric,
                "op": spec.op,
                "threshold": spec.threshold,
                "window": spec.window,
                "window_start": start.isoformat(),
                "window_end": end.isoformat(),
                "samples": self.samples,
                "min_samples": spec.min_samples,
                "observation": _evidence(spec, observation),
                "latest": latest,
                "breaching_windows": 1,
                **({"late_labels": True} if self.late else {}),
                **(self.details or {}),
            },
            opened_at=self.now,
            escalated_at=None,
            resolved_at=None,
            resolved_by="",
            notifications=[],
        )
        s.add(row)
        return row, "opened", None

    def _covered(self, s: Session, start: datetime, end: datetime) -> bool:
        """Whether the rule's previous alert, resolved, spanned the window from ``start``."""
        previous = s.scalar(
            select(AlertRow)
            .where(AlertRow.rule_id == self.rule.id, AlertRow.window_start < start)
            .order_by(AlertRow.window_start.desc())
            .limit(1)
        )
        if previous is None or previous.resolved_at is None:
            return False
        resolution = previous.evidence.get("resolution") or {}
        if resolution.get("window_start"):
            return datetime.fromisoformat(resolution["window_start"]) > start
        return previous.resolved_at >= end


@dataclass
class _Delivery:
    """One event posted to one webhook, with retries; the outcome is kept on the alert."""

    store: Store
    policy: WebhookPolicy
    event: AlertEvent
    url: str

    attempts: int = 0

    def run(self) -> None:
        started = datetime.now(UTC)
        outcome: dict[str, Any] = {"event": self.event.kind, "url": self.url}
        try:
            status = self._post()
            ok = 200 <= status < 300
            outcome.update(ok=ok, status=status, error=None if ok else f"HTTP {status}")
        except Exception as exc:
            outcome.update(ok=False, status=None, error=str(exc) or type(exc).__name__)
        outcome.update(attempts=self.attempts, at=started.isoformat())
        if not outcome["ok"]:
            log.warning(
                "webhook %s for %s alert %s failed: %s",
                self.url,
                self.event.kind,
                self.event.alert.id,
                outcome["error"],
            )
        try:
            self._record(outcome)
        except Exception:
            log.exception("could not record the webhook outcome of alert %s", self.event.alert.id)

    def _post(self) -> int:
        import httpx

        body = jsonio.dumps(
            {"event": f"alert.{self.event.kind}", **self.event.model_dump(mode="json")}
        )
        headers = {
            "content-type": "application/json",
            "user-agent": "modelyard-alerts",
            "x-modelyard-event": f"alert.{self.event.kind}",
            # Stable across retries, so a receiver can drop a repeat it already handled.
            "x-modelyard-delivery": f"{self.event.alert.id}:{self.event.kind}",
        }
        retrying = Retrying(
            stop=stop_after_attempt(self.policy.attempts),
            wait=wait_exponential(multiplier=self.policy.backoff, max=self.policy.max_backoff),
            retry=retry_if_exception_type(_Retryable),
            reraise=True,
        )
        with httpx.Client(timeout=self.policy.timeout, follow_redirects=False) as client:
            for attempt in retrying:
                with attempt:
                    self.attempts += 1
                    try:
                        response = client.post(self.url, content=body, headers=headers)
                    except httpx.TransportError as exc:
                        raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
                    if response.status_code >= 500 or response.status_code in (408, 429):
                        raise _Retryable(f"HTTP {response.status_code}")
                    return response.status_code
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    def _record(self, outcome: dict[str, Any]) -> None:
        with self.store.write("system") as tx:
            row = tx.session.scalar(
                select(AlertRow).where(AlertRow.id == self.event.alert.id).with_for_update()
            )
            if row is not None:  # gone if its rule was deleted meanwhile
                row.notifications = [*row.notifications, outcome]


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
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
        resolution_note=resolution.get("note", ""),
        evidence=ev,
        notifications=list(row.notifications or []),
    )


def _resolve_row(
    row: AlertRow,
    by: str,
    note: str,
    now: datetime,
    *,
    auto: bool,
    window: datetime | None = None,
) -> None:
    row.status, row.resolved_at, row.resolved_by = "resolved", now, by
    resolution: dict[str, Any] = {"note": note, "auto": auto}
    if window is not None:  # the window that was back within the threshold
        resolution["window_start"] = window.isoformat()
    row.evidence = {**row.evidence, "resolution": resolution}


def _audit_state(row: AlertRow) -> dict[str, Any]:
    ev = row.evidence
    state = {
        "rule": ev["rule"],
        "endpoint": row.endpoint,
        "status": row.status,
        "metric": ev["metric"],
        "op": ev["op"],
        "threshold": ev["threshold"],
        "value": row.value,
        "window": ev["window"],
        "window_start": ev["window_start"],
    }
    if row.status == "resolved":
        state["resolved_by"] = row.resolved_by
        state["note"] = ev.get("resolution", {}).get("note", "")
    return state


def _no_alert(alert_id: str) -> str:
    return f"no alert {alert_id!r}; `modelyard monitor alerts` lists them"


# --- small pieces -----------------------------------------------------------------------


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


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _number(value: Any) -> float | None:
    """``value`` as a finite float; None for missing, non-numeric, NaN or infinite values."""
    if value is None or isinstance(value, str):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _samples(spec: AlertRuleSpec, samples: Mapping[str, int] | int) -> int:
    """The sample count behind a rule's metric: its own, its family's, the kind's, or overall."""
    if not isinstance(samples, Mapping):
        return int(samples)
    head = spec.metric.partition(".")[0]
    for key in (spec.metric, head, _SAMPLES_BY_KIND[spec.kind], "samples", "rows"):
        if key in samples and samples[key] is not None:
            return int(samples[key])
    return 0  # unknown counts as none: an unproven window must not fire


def _evidence(spec: AlertRuleSpec, observation: Mapping[str, Any]) -> dict[str, float | None]:
    names, prefixes = _EVIDENCE[spec.kind]
    return {
        key: _number(value)
        for key, value in observation.items()
        if key == spec.metric or key in names or key.startswith(prefixes)
    }


def _statuses(status: str | Sequence[str] | None) -> list[str] | None:
    if status is None:
        return None
    wanted: Iterable[str] = [status] if isinstance(status, str) else status
    result: list[str] = []
    valid = get_args(AlertStatus)
    for s in wanted:
        if s == "active":
            result.extend(ACTIVE)
        elif s in valid:
            result.append(s)
        else:
            raise InvalidInput(f"alert status {s!r} is not one of {', '.join(valid)}, active")
    return result
