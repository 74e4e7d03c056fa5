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

Someone on call *acknowledges* an active alert (:meth:`AlertService.acknowledge`) to say
they are on it: the alert keeps its status (open or escalated) until it is resolved, records
who and when (and a note), and no longer escalates. Acknowledging is idempotent (a second
acknowledgement keeps the first); acknowledging a resolved alert is a :class:`Conflict`.

Every opening, escalation, acknowledgement and resolution is (a) audited in the same
transaction, (b) posted
as JSON to the rule's webhooks after commit, from a background thread with retries (the
outcome is appended to the alert's ``notifications``), and (c) published to in-process
subscribers (:meth:`AlertService.subscribe`) as an :class:`AlertEvent`.

An ``extraction`` rule's metrics are not in the monitor's observation: :meth:`AlertService.
evaluate` adds them (see :mod:`modelyard.monitoring.extraction`) when such a rule watches the

The parts: rule kinds, specs and the alert entities in alert_rules.py; a rule applied to a
window in alert_evaluation.py; subscribers and webhooks in alert_notifications.py. Their
public names are importable from here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, get_args

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session
from ulid import ULID

from modelyard.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from modelyard.governance.entities import Permission
from modelyard.monitoring.alert_evaluation import _Check, _number, _resolve_row, _samples
from modelyard.monitoring.alert_notifications import (
    Subscriber,
    WebhookPolicy,
    _Delivery,
    _hub,
    _Pending,
)
from modelyard.monitoring.alert_rules import (
    ACTIVE,
    ALERT_FILTERS,
    EXTRACTION_METRICS,
    PERFORMANCE_METRICS,
    VOLUME_METRICS,
    Alert,
    AlertEvent,
    AlertKind,
    AlertRule,
    AlertRuleSpec,
    AlertStatus,
    _alert,
    _check_window,
    _rule,
    _rule_row,
    _spec,
    _spec_of,
    _stored,
)
from modelyard.monitoring.alert_rules import MAX_ESCALATE_AFTER as MAX_ESCALATE_AFTER
from modelyard.monitoring.alert_rules import METRIC_HELP as METRIC_HELP
from modelyard.monitoring.alert_rules import EventKind as EventKind
from modelyard.monitoring.alert_rules import Op as Op
from modelyard.monitoring.alert_rules import metric_fits as metric_fits
from modelyard.page import Page, check_limit, decode_token
from modelyard.store.tables import AlertRow, AlertRuleRow

if TYPE_CHECKING:
    from modelyard.monitoring.extraction import ExtractionReport
    from modelyard.workspace import Workspace

log = logging.getLogger("modelyard.monitoring.alerts")

__all__ = [
    "ACTIVE",
    "ALERT_FILTERS",
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

# --- the service ------------------------------------------------------------------------


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

        Alerts of disabled rules are left alone (disabling a rule mutes it), and so are
        acknowledged alerts (someone is on it already).
        """
        now = _utc(now) if now is not None else datetime.now(UTC)
        pending = _Pending()
        escalated: list[Alert] = []
        with self.store.write(self.ws.actor) as tx:
            s = tx.session
            query = select(AlertRow.id, AlertRow.rule_id, AlertRow.opened_at).where(
                AlertRow.status == "open", AlertRow.acknowledged_at.is_(None)
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
                    .where(
                        AlertRow.id == alert_id,
                        AlertRow.status == "open",
                        AlertRow.acknowledged_at.is_(None),
                    )
                    .with_for_update()
                )
                if row is None:  # resolved or acknowledged meanwhile
                    continue
                row.status, row.escalated_at = "escalated", now
                tx.record("alert.escalate", "alert", row.id, {"status": "open"}, _audit_state(row))
                escalated.append(pending.add("escalated", row, rule))
        self._publish(pending)
        return escalated

    def resolve(self, alert_id: str, by: str | None = None, note: str = "") -> Alert:
        """Resolve an open or escalated alert; :class:`Conflict` if it is resolved already.

        Needs the write permission on the workspace, as the API's route does.
        """
        self.ws.access.require(Permission.write, action="resolve alerts")
        _check_note(note)
        pending = _Pending()
        with self.store.write(self.ws.actor) as tx:
            s = tx.session
            rule, row = _locked(s, alert_id)
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

    def acknowledge(self, alert_id: str, by: str | None = None, note: str = "") -> Alert:
        """Say someone is on an open or escalated alert: it stays active, records who, when
        and ``note``, and no longer escalates.

        :class:`Conflict` if the alert is resolved. Acknowledging an acknowledged alert
        changes nothing and returns it (the first acknowledgement stands). Needs the write
        permission on the workspace, as resolving does.
        """
        self.ws.access.require(Permission.write, action="acknowledge alerts")
        _check_note(note)
        pending = _Pending()
        with self.store.write(self.ws.actor) as tx:
            s = tx.session
            rule, row = _locked(s, alert_id)
            if row.status == "resolved":
                raise Conflict(
                    f"alert {alert_id} was resolved at {row.resolved_at:%Y-%m-%d %H:%M:%S} UTC"
                    f" by {row.resolved_by or 'unknown'}; only an open or escalated alert can "
                    "be acknowledged"
                )
            if row.acknowledged_at is not None:
                return _alert(row)  # idempotent: a retry or a second responder
            before = {"status": row.status}
            row.acknowledged_at, row.acknowledged_by = datetime.now(UTC), by or self.ws.actor
            row.evidence = {**row.evidence, "acknowledgement": {"note": note}}
            tx.record("alert.acknowledge", "alert", row.id, before, _audit_state(row))
            alert = pending.add("acknowledged", row, rule)
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

        ``status`` is one status, several, ``"active"`` (open or escalated) or
        ``"acknowledged"`` (active and acknowledged). Pollers pass the ``opened_at`` of the
        newest alert they saw as ``since`` and skip ids they know: the order is stable, and
        ``since`` is inclusive so no alert is ever skipped.
        """
        wanted = _status_filter(status)
        query = select(AlertRow).order_by(AlertRow.opened_at, AlertRow.id)
        if endpoint is not None:
            query = query.where(AlertRow.endpoint == endpoint)
        if wanted is not None:
            query = query.where(wanted)
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

    def recent_alerts(
        self,
        endpoint: str | None = None,
        status: str | Sequence[str] | None = None,
        *,
        limit: int = 20,
        page_token: str | None = None,
    ) -> Page[Alert]:
        """Alerts newest first (by ``opened_at``, then id), a page at a time; ``status`` as
        in :meth:`list_alerts`."""
        check_limit(limit)
        offset = decode_token(page_token)
        wanted = _status_filter(status)
        query = select(AlertRow).order_by(AlertRow.opened_at.desc(), AlertRow.id.desc())
        if endpoint is not None:
            query = query.where(AlertRow.endpoint == endpoint)
        if wanted is not None:
            query = query.where(wanted)
        with self.store.read() as s:
            rows = s.scalars(query.offset(offset).limit(limit + 1)).all()
            items = [_alert(r) for r in rows[:limit]]
        return Page.of(items, offset, limit, more=len(rows) > limit)

    # events -----------------------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(event)`` for every alert opened, escalated, acknowledged or resolved
        in-process.

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
    if row.acknowledged_at is not None:
        state["acknowledged_by"] = row.acknowledged_by
        state["acknowledgement_note"] = ev.get("acknowledgement", {}).get("note", "")
    if row.status == "resolved":
        state["resolved_by"] = row.resolved_by
        state["note"] = ev.get("resolution", {}).get("note", "")
    return state


def _locked(s: Session, alert_id: str) -> tuple[AlertRuleRow, AlertRow]:
    """An alert and its rule, locked for a change; :class:`NotFound` if there is none."""
    rule_id = s.scalar(select(AlertRow.rule_id).where(AlertRow.id == alert_id))
    if rule_id is None:
        raise NotFound(_no_alert(alert_id))
    # Rule first, then alert: the lock order evaluate() uses.
    rule = s.scalar(select(AlertRuleRow).where(AlertRuleRow.id == rule_id).with_for_update())
    row = s.scalar(select(AlertRow).where(AlertRow.id == alert_id).with_for_update())
    if rule is None or row is None:
        raise NotFound(_no_alert(alert_id))
    return rule, row


def _no_alert(alert_id: str) -> str:
    return f"no alert {alert_id!r}; `modelyard monitor alerts` lists them"


# --- small pieces -----------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _status_filter(status: str | Sequence[str] | None) -> ColumnElement[bool] | None:
    """The condition on alert rows that ``status`` (one filter or several, any of them) asks
    for; None for every alert."""
    if status is None:
        return None
    wanted: Iterable[str] = [status] if isinstance(status, str) else status
    statuses: list[str] = []
    acknowledged = False
    valid = get_args(AlertStatus)
    for s in wanted:
        if s == "active":
            statuses.extend(ACTIVE)
        elif s == "acknowledged":
            acknowledged = True
        elif s in valid:
            statuses.append(s)
        else:
            raise InvalidInput(f"alert status {s!r} is not one of {', '.join(ALERT_FILTERS)}")
    condition: ColumnElement[bool] = AlertRow.status.in_(statuses)
    if acknowledged:
        ack = and_(AlertRow.status.in_(ACTIVE), AlertRow.acknowledged_at.is_not(None))
        condition = or_(condition, ack) if statuses else ack
    return condition


#: The longest note an acknowledgement or a resolution may carry (it is kept with the alert).
MAX_NOTE = 2000


def _check_note(note: str) -> None:
    if len(note) > MAX_NOTE:
        raise InvalidInput(f"a note holds at most {MAX_NOTE} characters, not {len(note)}")
