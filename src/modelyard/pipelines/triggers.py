"""Triggers: a cron schedule, a monitoring alert or a new dataset version starts a pipeline run.

A trigger keeps a *cursor* (the last thing it saw) in the database. :meth:`TriggerService.poll`
finds each enabled trigger's new events since its cursor:

* ``schedule``: the cron ticks (UTC) in ``(cursor, now]``. After downtime the missed ticks are
  collapsed into ONE run for the latest tick; the older ticks are recorded as ``missed``
  (at most :data:`MAX_MISSED` of them, the most recent).
* ``alert``: alerts opened since the cursor whose kind is in ``alert_kinds`` (and whose rule
  is in ``rules``, when given), on ``endpoint`` when given. Each alert is one event.
* ``dataset``: versions of ``dataset`` registered since the cursor. Versions found together
  start one run, for the newest; the older ones are recorded as ``coalesced``.

Every event is inserted as a :class:`~modelyard.store.tables.TriggerEventRow`, unique by
``(trigger, event_key)``, in the transaction that moves the cursor and *before* the pipeline
is launched (the trigger row is locked meanwhile). So a restart, a crash or a second poller
never starts two runs for one event: at most one run per event, and an event whose launch
was interrupted by a crash stays ``launching``. Within ``cooldown_seconds`` of the trigger's
last launch an event is recorded as ``cooldown`` and starts nothing; a launch that raises is
recorded as ``failed`` with the error (and does not start the cool-down). A disabled trigger
ignores what happens while it is disabled: enabling it starts from that moment.

The service never imports the pipeline core: it is given ``launch(pipeline, params, trigger)
-> run id``. ``params`` are the trigger's params plus ``params["trigger"]``, a description of
the event (for alerts: alert id, endpoint, rule, kind, metric, value, threshold, window start),
which the run records among its params whether or not the pipeline takes it.
"""

from __future__ import annotations

import builtins
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from croniter import croniter
from pydantic import (
    BaseModel,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from ulid import ULID

from modelyard.errors import AlreadyExists, InvalidInput, NotFound
from modelyard.jsonio import NotABoolean
from modelyard.loops import PassLoop
from modelyard.monitoring.alerts import AlertEvent, AlertKind
from modelyard.store.leases import Lease, process_owner
from modelyard.store.tables import PipelineRow, TriggerEventRow, TriggerRow

if TYPE_CHECKING:
    from modelyard.workspace import Workspace

log = logging.getLogger("modelyard.pipelines.triggers")

__all__ = [
    "ALERT_COOLDOWN",
    "DEFAULT_ALERT_KINDS",
    "MAX_MISSED",
    "Launch",
    "Trigger",
    "TriggerEvent",
    "TriggerKind",
    "TriggerLoop",
    "TriggerPass",
    "TriggerService",
    "TriggerSpec",
]

TriggerKind = Literal["schedule", "alert", "dataset"]
Outcome = Literal["launching", "started", "failed", "cooldown", "missed", "coalesced"]

#: ``launch(pipeline, params, trigger) -> pipeline run id``; wired to ``ws.pipelines.run``.
Launch = Callable[[str, dict[str, Any], dict[str, Any]], str]

#: Alert kinds an alert trigger reacts to unless told otherwise: retraining helps with these.
DEFAULT_ALERT_KINDS: tuple[AlertKind, ...] = ("drift", "performance", "kpi")
#: Default cool-down of alert triggers (seconds); other kinds default to none.
ALERT_COOLDOWN = 3600
#: Missed cron ticks recorded individually after downtime (the most recent ones).
MAX_MISSED = 100
#: How far back alert triggers look for alerts that committed late (see ``_alerts``).
ALERT_LOOKBACK = timedelta(minutes=5)
#: The name of the lease row (in the generic lease table) that trigger loops share.
LEASE = "triggers"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: The longest cool-down a trigger may have (a year, in seconds).
MAX_COOLDOWN = 366 * 86_400
_ALERT_PAGE = 1000
_KIND_FIELDS = {"schedule": ("cron",), "alert": ("endpoint", "alert_kinds", "rules"), "dataset": ()}


# --- entities ---------------------------------------------------------------------------


class _TriggerFields(BaseModel):
    name: str = Field(json_schema_extra={"pattern": _NAME.pattern})
    pipeline: str = Field(min_length=1, max_length=256)
    kind: TriggerKind
    cron: str | None = None
    endpoint: str | None = Field(default=None, min_length=1, max_length=256)
    alert_kinds: list[AlertKind] | None = None
    rules: list[str] = Field(default_factory=list, max_length=100)
    dataset: str | None = Field(default=None, min_length=1, max_length=256)
    params: dict[str, Any] = Field(default_factory=dict)
    cooldown_seconds: Annotated[int, Field(ge=0, le=MAX_COOLDOWN), NotABoolean] | None = None
    enabled: StrictBool = True


class TriggerSpec(_TriggerFields):
    """What starts a pipeline: ``schedule`` (``cron``), ``alert`` (filter) or ``dataset``.

    ``alert_kinds`` defaults to drift, performance and kpi (every kind when ``rules`` are
    named); ``cooldown_seconds`` to 3600 for alert triggers and 0 for the others.
    """

    model_config = {"extra": "forbid"}

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "use up to 128 letters, digits, '.', '_', '-' starting with a letter or digit"
            )
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            value = " ".join(value.split())
            if not croniter.is_valid(value):
                raise ValueError(
                    f"{value!r} is not a cron expression; use five fields "
                    "(minute hour day month weekday, UTC) such as '0 3 * * *', or '@daily'"
                )
        return value

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "trigger" in value:
            raise ValueError("params.trigger is set by the trigger itself (the event it saw)")
        try:
            json.dumps(value)  # not orjson: an integer beyond 64 bits is JSON too
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValueError(f"params must be JSON values: {exc}") from None
        return value

    @model_validator(mode="after")
    def _fits_kind(self) -> TriggerSpec:
        wrong = [
            f
            for kind, fields in _KIND_FIELDS.items()
            if kind != self.kind
            for f in fields
            if getattr(self, f) not in (None, [])
        ]
        if self.kind != "dataset" and self.dataset is not None:
            wrong.append("dataset")
        if wrong:
            raise ValueError(f"a {self.kind} trigger takes no {', '.join(sorted(set(wrong)))}")
        if self.kind == "schedule" and not self.cron:
            raise ValueError("a schedule trigger needs cron, e.g. '0 3 * * *' (UTC)")
        if self.kind == "dataset" and not self.dataset:
            raise ValueError("a dataset trigger needs the name of the dataset it watches")
        if self.kind == "alert":
            if self.alert_kinds is None:  # named rules: any kind; else what retraining helps
                self.alert_kinds = list(_ALERT_KINDS if self.rules else DEFAULT_ALERT_KINDS)
            elif not self.alert_kinds:
                raise ValueError(f"alert_kinds: name at least one of {', '.join(_ALERT_KINDS)}")
            self.alert_kinds = list(dict.fromkeys(self.alert_kinds))
            self.rules = list(dict.fromkeys(self.rules))
        if self.cooldown_seconds is None:
            self.cooldown_seconds = ALERT_COOLDOWN if self.kind == "alert" else 0
        return self


_ALERT_KINDS: tuple[AlertKind, ...] = get_args(AlertKind)


class Trigger(_TriggerFields):
    """A stored trigger, with its cursor (the last event it saw) and its last launch."""

    id: str
    cursor: dict[str, Any] = Field(default_factory=dict)
    last_fired_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    created_by: str = ""


class TriggerEvent(BaseModel):
    """One event a trigger saw and what came of it.

    ``outcome``: ``started`` (``run_id`` is the run), ``failed`` (the launch raised; ``detail``
    has the error), ``cooldown``, ``missed`` (a cron tick folded into a later tick's run),
    ``coalesced`` (a dataset version folded into a newer one's run), or ``launching`` (the
    launch is under way, or was interrupted by a crash).
    """

    id: str
    trigger: str
    trigger_id: str
    pipeline: str
    kind: TriggerKind
    event_key: str
    event_at: datetime
    outcome: Outcome
    run_id: str | None = None
    detail: str = ""
    created_at: datetime


class TriggerPass(BaseModel):
    """What one pass of the trigger loop did."""

    started_at: datetime
    seconds: float = 0.0
    events: list[TriggerEvent] = Field(default_factory=list)
    skipped: bool = False  # another process holds the trigger lease
    errors: list[str] = Field(default_factory=list)


# --- the service ------------------------------------------------------------------------


@dataclass
class _Found:
    """An event found past a trigger's cursor."""

    key: str
    at: datetime
    about: dict[str, Any]  # what params["trigger"] says about it
    outcome: Outcome = "launching"
    detail: str = ""


@dataclass
class _Reserved:
    """An event row written before launching."""

    row_id: str
    found: _Found
    created_at: datetime
    fired_at: datetime | None = None
    previous_fired_at: datetime | None = None


class TriggerService:
    """Triggers of pipelines and the events they saw; ``launch`` starts a run."""

    def __init__(self, ws: Workspace, launch: Launch, *, owner: str | None = None) -> None:
        self.ws = ws
        self.store = ws.store
        self.launch = launch
        # Services of one process share the lease; the lease keeps processes apart.
        self.owner = owner or process_owner()

    # triggers ---------------------------------------------------------------------------

    def _acts_as(self) -> dict[str, Any] | None:
        """Who the trigger's runs will act as: the caller, unless the local operator."""
        who = self.ws.identity
        if who.name == "local":
            return None
        return {"name": who.name, "role": who.role.value, "groups": list(who.groups)}

    def create(self, spec: TriggerSpec | Mapping[str, Any]) -> Trigger:
        """Create a trigger; it sees events from now on. :class:`AlreadyExists` if named so."""
        spec = _spec(spec if isinstance(spec, TriggerSpec) else dict(spec))
        now = datetime.now(UTC)
        cursor = self._start_cursor(spec, now)
        with self.store.write(self.ws.actor) as tx:
            s = tx.session
            _check_pipeline(s, spec.pipeline)
            if s.scalar(select(TriggerRow.id).where(TriggerRow.name == spec.name)):
                raise AlreadyExists(f"trigger {spec.name!r} exists already; pick another name")
            row = TriggerRow(
                id=str(ULID()),
                name=spec.name,
                pipeline=spec.pipeline,
                kind=spec.kind,
                spec=_stored(spec),
                enabled=spec.enabled,
                cursor=cursor,
                last_fired_at=None,
                created_at=now,
                updated_at=now,
                created_by=self.ws.actor,
                acts_as=self._acts_as(),
            )
            s.add(row)
            try:
                s.flush()
            except IntegrityError:
                raise AlreadyExists(
                    f"trigger {spec.name!r} was created at the same time; pick another name"
                ) from None
            tx.record("trigger.create", "pipeline_trigger", spec.name, after=spec.model_dump())
            return _trigger(row)

    def get(self, name: str) -> Trigger:
        with self.store.read() as s:
            return _trigger(_row(s, name))

    def update(self, name: str, /, **changes: Any) -> Trigger:
        """Change fields of a trigger (not its name or kind); the cursor is kept.

        Enabling a disabled trigger, or changing its cron or dataset, restarts its cursor
        from now: what happened before starts nothing.
        """
        unknown = set(changes) - set(TriggerSpec.model_fields)
        if unknown:
            raise InvalidInput(
                f"triggers have no field(s) {', '.join(sorted(unknown))}; change any of "
                + ", ".join(f for f in TriggerSpec.model_fields if f not in ("name", "kind"))
            )
        with self.store.write(self.ws.actor) as tx:
            row = _row(tx.session, name, lock=True)
            current = _spec_of(row)
            for fixed in ("name", "kind"):
                if fixed in changes and changes[fixed] != getattr(current, fixed):
                    raise InvalidInput(
                        f"a trigger's {fixed} cannot change; delete it and create a new one"
                    )
            spec = _spec({**current.model_dump(), **changes})
            if spec == current:
                return _trigger(row)
            if spec.pipeline != current.pipeline:
                _check_pipeline(tx.session, spec.pipeline)
            now = datetime.now(UTC)
            restart = (spec.enabled and not row.enabled) or any(
                getattr(spec, f) != getattr(current, f) for f in ("cron", "dataset")
            )
            if restart:
                row.cursor = self._start_cursor(spec, now)
            before, after = current.model_dump(), spec.model_dump()
            row.pipeline, row.enabled, row.spec = spec.pipeline, spec.enabled, _stored(spec)
            row.updated_at = now
            row.acts_as = self._acts_as()  # who changed it answers for what it does now
            tx.record_change("trigger.update", "pipeline_trigger", name, before, after)
            return _trigger(row)

    def delete(self, name: str) -> None:
        """Delete a trigger and its events (the audit log keeps the history)."""
        with self.store.write(self.ws.actor) as tx:
            row = _row(tx.session, name, lock=True)
            count = tx.session.scalar(
                select(func.count())
                .select_from(TriggerEventRow)
                .where(TriggerEventRow.trigger_id == row.id)
            )
            before = {**_spec_of(row).model_dump(), "events": int(count or 0)}
            tx.session.delete(row)  # the events go by ON DELETE CASCADE
            tx.record("trigger.delete", "pipeline_trigger", name, before=before)

    def events(
        self,
        trigger: str | None = None,
        *,
        outcome: str | Sequence[str] | None = None,
        limit: int = 100,
    ) -> builtins.list[TriggerEvent]:
        """What triggers saw, newest first; optionally one trigger's, or some outcomes'."""
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        query = (
            select(TriggerEventRow, TriggerRow)
            .join(TriggerRow, TriggerRow.id == TriggerEventRow.trigger_id)
            .order_by(
                TriggerEventRow.created_at.desc(),
                TriggerEventRow.event_at.desc(),
                TriggerEventRow.id.desc(),
            )
            .limit(limit)
        )
        if outcome is not None:
            outcomes = [outcome] if isinstance(outcome, str) else list(outcome)
            bad = [o for o in outcomes if o not in get_args(Outcome)]
            if bad:
                raise InvalidInput(
                    f"outcome {bad[0]!r} is not one of {', '.join(get_args(Outcome))}"
                )
            query = query.where(TriggerEventRow.outcome.in_(outcomes))
        with self.store.read() as s:
            if trigger is not None:
                query = query.where(TriggerEventRow.trigger_id == _row(s, trigger).id)
            return [_event(e, t) for e, t in s.execute(query).all()]

    # polling ----------------------------------------------------------------------------

    def poll(
        self, now: datetime | None = None, *, kinds: Sequence[TriggerKind] | None = None
    ) -> builtins.list[TriggerEvent]:
        """Act on every enabled trigger's new events; returns the events recorded.

        Safe to call from many threads and processes at once: each event is acted on once.
        """
        events, _ = self._poll(now, kinds)
        return events

    def run_once(self, now: datetime | None = None, *, lease_seconds: float = 120.0) -> TriggerPass:
        """One pass of the trigger loop: take the lease, then :meth:`poll`."""
        started = time.perf_counter()
        now = _utc(now) if now is not None else datetime.now(UTC)
        result = TriggerPass(started_at=now)
        if not self._take_lease(now, lease_seconds):
            result.skipped = True
            return result
        result.events, result.errors = self._poll(now, None)
        result.seconds = time.perf_counter() - started
        return result

    def subscribe_alerts(self) -> Callable[[], None]:
        """Handle alerts as they open (in-process), not only at the next poll.

        Registers with the alert service; each opened alert wakes a worker thread that polls
        the alert triggers (subscribers must be quick, launching is not). The poll stays the
        durable path: an alert opened in another process is seen by the next poll. Returns a
        function that unsubscribes and stops the worker.
        """
        wake, stop = threading.Event(), threading.Event()

        def work() -> None:
            while True:
                wake.wait()
                if stop.is_set():
                    return
                wake.clear()
                try:
                    self.poll(kinds=("alert",))
                except Exception:
                    log.exception("polling alert triggers after an alert failed")

        def on_alert(event: AlertEvent) -> None:
            if event.kind == "opened":
                wake.set()

        worker = threading.Thread(target=work, name="modelyard-trigger-alerts", daemon=True)
        worker.start()
        unsubscribe = self.ws.monitoring.alerts.subscribe(on_alert)

        def close() -> None:
            unsubscribe()
            stop.set()
            wake.set()
            worker.join(30)

        return close

    def _poll(
        self, now: datetime | None, kinds: Sequence[TriggerKind] | None
    ) -> tuple[builtins.list[TriggerEvent], builtins.list[str]]:
        now = _utc(now) if now is not None else datetime.now(UTC)
        query = select(TriggerRow.id, TriggerRow.name).where(TriggerRow.enabled.is_(True))
        if kinds is not None:
            query = query.where(TriggerRow.kind.in_(kinds))
        with self.store.read() as s:
            targets = s.execute(query.order_by(TriggerRow.name)).all()
        events: list[TriggerEvent] = []
        errors: list[str] = []
        for trigger_id, name in targets:
            try:
                events.extend(self._poll_one(trigger_id, now))
            except Exception as exc:  # one broken trigger must not stop the others
                log.exception("polling trigger %s failed", name)
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
        return events, errors

    def _poll_one(self, trigger_id: str, now: datetime) -> builtins.list[TriggerEvent]:
        # A look without the write lock first: most polls find nothing new.
        with self.store.read() as s:
            seen = s.get(TriggerRow, trigger_id)
            if seen is None or not seen.enabled:
                return []
        found, cursor = self._find(_spec_of(seen), seen.cursor, now)
        if not found and cursor == seen.cursor:
            return []
        try:
            with self.store.write(self.ws.actor) as tx:
                s = tx.session
                # The row lock makes pollers of one trigger take turns (SQLite: the write lock).
                row = s.scalar(
                    select(TriggerRow).where(TriggerRow.id == trigger_id).with_for_update()
                )
                if row is None or not row.enabled:
                    return []
                spec = _spec_of(row)
                found, cursor = self._find(spec, row.cursor, now)
                reserved = self._reserve(s, row, spec, found, now)
                if cursor != row.cursor:
                    row.cursor = cursor
        except IntegrityError:
            # Another poller recorded these events first (a safety net: the lock prevents it).
            log.info("trigger %s: events recorded by another poller", trigger_id)
            return []
        return [self._launch(row, spec, r) for r in reserved]

    def _reserve(
        self,
        s: Session,
        row: TriggerRow,
        spec: TriggerSpec,
        found: list[_Found],
        now: datetime,
    ) -> list[_Reserved]:
        reserved = []
        cooldown = timedelta(seconds=spec.cooldown_seconds or 0)
        for event in found:
            fired_at = previous = None
            if event.outcome == "launching":
                last = row.last_fired_at
                if cooldown and last is not None and now < last + cooldown:
                    event.outcome = "cooldown"
                    event.detail = (
                        f"within the {spec.cooldown_seconds} s cool-down after the launch at "
                        f"{last.isoformat()}"
                    )
                else:
                    previous, fired_at = last, now
                    row.last_fired_at = now
            event_row = TriggerEventRow(
                id=str(ULID()),
                trigger_id=row.id,
                event_key=event.key[:512],
                event_at=event.at,
                outcome=event.outcome,
                run_id=None,
                detail=event.detail,
                created_at=now,
            )
            s.add(event_row)
            reserved.append(_Reserved(event_row.id, event, now, fired_at, previous))
        s.flush()  # a duplicate event raises IntegrityError here, before anything launches
        return reserved

    def _launch(self, row: TriggerRow, spec: TriggerSpec, reserved: _Reserved) -> TriggerEvent:
        event = reserved.found
        if event.outcome != "launching":
            return _event_of(reserved, row, event.outcome, None, event.detail)
        info: dict[str, Any] = {
            "kind": spec.kind,
            "trigger": spec.name,
            "trigger_id": row.id,
            "event": event.key,
            "event_at": event.at.isoformat(),
            "by": f"trigger:{spec.name}",
        }
        if row.acts_as:  # its runs act as whoever set it up, not as the local operator
            info.update(by=row.acts_as["name"], role=row.acts_as["role"])
            info["groups"] = row.acts_as.get("groups") or []
        params = {**spec.params, "trigger": {"name": spec.name, "event": event.key, **event.about}}
        run_id: str | None = None
        try:
            result = self.launch(spec.pipeline, params, info)
            outcome: Outcome = "started"
            detail = event.detail
            if isinstance(result, str) and 0 < len(result) <= 26:
                run_id = result
            else:
                detail = f"{detail}; the launcher returned {result!r}, not a run id".lstrip("; ")
        except Exception as exc:
            log.warning("trigger %s: launching %s failed: %s", spec.name, spec.pipeline, exc)
            outcome, detail = "failed", f"{type(exc).__name__}: {exc}"
        with self.store.write(self.ws.actor) as tx:
            s = tx.session
            trigger = s.scalar(select(TriggerRow).where(TriggerRow.id == row.id).with_for_update())
            stored = s.get(TriggerEventRow, reserved.row_id)
            if trigger is None or stored is None:  # deleted meanwhile
                return _event_of(reserved, row, outcome, run_id, detail)
            stored.outcome, stored.run_id, stored.detail = outcome, run_id, detail
            if outcome == "failed" and trigger.last_fired_at == reserved.fired_at:
                trigger.last_fired_at = reserved.previous_fired_at  # no cool-down after a failure
            tx.record(
                "trigger.fire",
                "pipeline_trigger",
                spec.name,
                after={
                    "pipeline": spec.pipeline,
                    "event": event.key,
                    "outcome": outcome,
                    "run_id": run_id,
                    "detail": detail,
                },
            )
            return _event(stored, trigger)

    # finding events ---------------------------------------------------------------------

    def _start_cursor(self, spec: TriggerSpec, now: datetime) -> dict[str, Any]:
        if spec.kind == "schedule":
            return {"at": now.isoformat()}
        if spec.kind == "alert":
            return {"since": now.isoformat(), "floor": now.isoformat(), "seen": {}}
        assert spec.dataset is not None
        latest = self.ws.tracking.list_datasets(name=spec.dataset, limit=1).items
        return {"version": latest[0].version if latest else 0}

    def _find(
        self, spec: TriggerSpec, cursor: dict[str, Any], now: datetime
    ) -> tuple[list[_Found], dict[str, Any]]:
        if spec.kind == "schedule":
            return _ticks(spec, cursor, now)
        if spec.kind == "alert":
            return self._alerts(spec, cursor)
        return self._datasets(spec, cursor)

    def _alerts(
        self, spec: TriggerSpec, cursor: dict[str, Any]
    ) -> tuple[list[_Found], dict[str, Any]]:
        # An alert's opened_at is taken before its transaction commits, so one may appear a
        # little after a newer one: look back ALERT_LOOKBACK and skip the ids already seen.
        since = datetime.fromisoformat(cursor["since"])
        floor = datetime.fromisoformat(cursor.get("floor", cursor["since"]))
        seen: dict[str, str] = dict(cursor.get("seen") or {})
        alerts = self.ws.monitoring.alerts.list_alerts(
            spec.endpoint, None, max(floor, since - ALERT_LOOKBACK), limit=_ALERT_PAGE
        )
        found = []
        newest = since
        for alert in alerts:
            if alert.id in seen or alert.opened_at < floor:
                continue
            seen[alert.id] = alert.opened_at.isoformat()
            newest = max(newest, alert.opened_at)
            if alert.kind not in (spec.alert_kinds or ()):
                continue
            if spec.rules and alert.rule not in spec.rules:
                continue
            about = {
                "alert_id": alert.id,
                "endpoint": alert.endpoint,
                "rule": alert.rule,
                "kind": alert.kind,
                "metric": alert.metric,
                "value": alert.value,
                "threshold": alert.threshold,
                "window_start": alert.window_start.isoformat(),
            }
            found.append(_Found(f"alert:{alert.id}", alert.opened_at, about))
        keep = newest - ALERT_LOOKBACK
        seen = {i: at for i, at in seen.items() if datetime.fromisoformat(at) >= keep}
        return found, {"since": newest.isoformat(), "floor": floor.isoformat(), "seen": seen}

    def _datasets(
        self, spec: TriggerSpec, cursor: dict[str, Any]
    ) -> tuple[list[_Found], dict[str, Any]]:
        assert spec.dataset is not None
        after = int(cursor.get("version", 0))
        new = []
        token: str | None = None
        while True:  # newest first: stop at the cursor
            page = self.ws.tracking.list_datasets(name=spec.dataset, limit=100, page_token=token)
            fresh = [d for d in page.items if d.version > after]
            new.extend(fresh)
            if len(fresh) < len(page.items) or page.next_page_token is None:
                break
            token = page.next_page_token
        if not new:
            return [], cursor
        new.sort(key=lambda d: d.version)
        newest = new[-1]
        found = [
            _Found(
                f"dataset:{d.name}/{d.version}",
                d.created_at,
                {"dataset": d.name, "version": d.version, "dataset_id": d.id},
            )
            for d in new
        ]
        for event in found[:-1]:
            event.outcome = "coalesced"
            event.detail = f"folded into the event for version {newest.version} (same poll)"
        return found, {"version": newest.version}

    # the lease --------------------------------------------------------------------------

    @cached_property
    def _lease(self) -> Lease:
        return Lease(self.store, LEASE, self.owner)

    def _take_lease(self, now: datetime, seconds: float) -> bool:
        """Hold (or renew) the trigger lease; False while another live process holds it."""
        return self._lease.take(now, seconds)

    def release_lease(self) -> None:
        """Give the lease up (at shutdown), so another process can take over at once."""
        self._lease.release()

    # listing (last: the method name shadows the builtin in the class body) -------------

    def list(self, pipeline: str | None = None) -> builtins.list[Trigger]:
        """Triggers by name, optionally only those of ``pipeline``."""
        query = select(TriggerRow).order_by(TriggerRow.name)
        if pipeline is not None:
            query = query.where(TriggerRow.pipeline == pipeline)
        with self.store.read() as s:
            return [_trigger(r) for r in s.scalars(query)]


class TriggerLoop(PassLoop):
    """Run ``TriggerService.run_once()`` every ``interval`` seconds until :meth:`stop`.

    Every process may run one: the ``triggers`` lease lets one act at a time, and another
    takes over within a lease period when it stops or dies.
    """

    name = "triggers"
    service: TriggerService
    last: TriggerPass | None

    def __init__(self, service: TriggerService, interval: float = 30.0) -> None:
        super().__init__(service, interval)


# --- schedules --------------------------------------------------------------------------


def _ticks(
    spec: TriggerSpec, cursor: dict[str, Any], now: datetime
) -> tuple[list[_Found], dict[str, Any]]:
    """The cron ticks in ``(cursor, now]``: the latest to launch, the others missed."""
    assert spec.cron is not None
    after = datetime.fromisoformat(cursor["at"])
    if now <= after:
        return [], cursor
    # croniter's get_prev is exclusive; a microsecond later makes ``now`` itself a candidate.
    it = croniter(spec.cron, now + timedelta(microseconds=1))
    ticks: list[datetime] = []
    more = False
    while True:
        tick = it.get_prev(datetime).astimezone(UTC)
        if tick <= after:
            break
        if len(ticks) > MAX_MISSED:
            more = True
            break
        ticks.append(tick)
    if not ticks:
        return [], cursor  # nothing between: the cursor need not move
    new_cursor = {"at": now.isoformat()}
    ticks.reverse()  # oldest first
    latest = ticks[-1]
    missed = len(ticks) - 1
    found = [_Found(_tick_key(t), t, {"tick": t.isoformat()}) for t in ticks]
    for event in found[:-1]:
        event.outcome = "missed"
        event.detail = f"no poll ran at this tick; folded into the event {_tick_key(latest)}"
    if missed:
        count = f"more than {missed}" if more else str(missed)
        found[-1].detail = f"{count} earlier tick(s) since {after.isoformat()} were missed"
    return found, new_cursor


def _tick_key(tick: datetime) -> str:
    fmt = "%Y-%m-%dT%H:%MZ" if tick.second == 0 else "%Y-%m-%dT%H:%M:%SZ"
    return f"cron:{tick.strftime(fmt)}"


# --- rows <-> entities ------------------------------------------------------------------


def _spec(data: TriggerSpec | dict[str, Any]) -> TriggerSpec:
    if isinstance(data, TriggerSpec):
        return data
    try:
        return TriggerSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'trigger'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"trigger is not valid ({problems})") from None


def _stored(spec: TriggerSpec) -> dict[str, Any]:
    return spec.model_dump(exclude={"name", "pipeline", "kind", "enabled"})


def _fields(row: TriggerRow) -> dict[str, Any]:
    return {
        **row.spec,
        "name": row.name,
        "pipeline": row.pipeline,
        "kind": row.kind,
        "enabled": row.enabled,
    }


def _spec_of(row: TriggerRow) -> TriggerSpec:
    # Built without re-validation: a trigger stored under older checks must stay readable.
    return TriggerSpec.model_construct(**_TriggerFields.model_validate(_fields(row)).model_dump())


def _trigger(row: TriggerRow) -> Trigger:
    return Trigger(
        **_fields(row),
        id=row.id,
        cursor=dict(row.cursor or {}),
        last_fired_at=row.last_fired_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        created_by=row.created_by,
    )


def _event(row: TriggerEventRow, trigger: TriggerRow) -> TriggerEvent:
    return TriggerEvent(
        id=row.id,
        trigger=trigger.name,
        trigger_id=trigger.id,
        pipeline=trigger.pipeline,
        kind=trigger.kind,
        event_key=row.event_key,
        event_at=row.event_at,
        outcome=row.outcome,
        run_id=row.run_id,
        detail=row.detail,
        created_at=row.created_at,
    )


def _event_of(
    reserved: _Reserved, trigger: TriggerRow, outcome: Outcome, run_id: str | None, detail: str
) -> TriggerEvent:
    return TriggerEvent(
        id=reserved.row_id,
        trigger=trigger.name,
        trigger_id=trigger.id,
        pipeline=trigger.pipeline,
        kind=trigger.kind,
        event_key=reserved.found.key,
        event_at=reserved.found.at,
        outcome=outcome,
        run_id=run_id,
        detail=detail,
        created_at=reserved.created_at,
    )


def _row(s: Session, name: str, *, lock: bool = False) -> TriggerRow:
    query = select(TriggerRow).where(TriggerRow.name == name)
    row = s.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise NotFound(f"no trigger {name!r}; `modelyard pipelines triggers` lists them")
    return row


def _check_pipeline(s: Session, name: str) -> None:
    if s.get(PipelineRow, name) is None:
        raise NotFound(
            f"no pipeline {name!r}; register it before giving it a trigger "
            "(`modelyard pipelines` lists the registered pipelines)"
        )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
