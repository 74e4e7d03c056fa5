"""Ground-truth feedback: labels posted by request id, joined to the logged prediction.

A label is stored beside a copy of what the prediction log holds for its row (model, version,
time, outputs and inputs), so performance is computed from the ``feedback`` table alone and
never has to scan the log again. Joining happens once, when the label arrives: the endpoint's
log segments are searched newest first within ``lookback`` and the search stops as soon as
every request id is found.

A label can arrive before its prediction is in the log: the gateway writes the log in
segments every few seconds, from other processes than the API that receives the label. Such a
label is *held* (a ``pending_feedback`` row) instead of refused; each monitor pass searches the
segments written since for held labels (:meth:`FeedbackService.join_held`) and stores those it
finds. A held label whose prediction does not appear within the endpoint's
``feedback_hold_seconds`` expires; one whose prediction appears but does not fit it is
rejected. Both stay listed (with the reason) for 30 days and are counted in the endpoint's
status, so nothing is dropped silently.

Feedback is data, like metrics: new labels make no audit record. Replacing a label does, since
it changes what performance reports say after the fact.
"""

from __future__ import annotations

import builtins
import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from ulid import ULID

from modelyard.errors import InvalidInput, NotFound
from modelyard.monitoring.config import MonitorConfig
from modelyard.monitoring.predlog import INPUT_PREFIX, OUTPUT_PREFIX, PredictionLog
from modelyard.store.tables import FeedbackRow, MonitorConfigRow, PendingFeedbackRow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from modelyard.store.db import Tx
    from modelyard.workspace import Workspace

log = logging.getLogger("modelyard.monitoring.feedback")

__all__ = [
    "Feedback",
    "FeedbackItem",
    "FeedbackResult",
    "FeedbackService",
    "HeldOutcome",
    "PendingFeedback",
    "load_monitor_config",
]

MAX_ITEMS = 100_000  # per call: bounds the memory one request can take
DEFAULT_LOOKBACK = timedelta(days=30)
#: Expired and rejected held labels stay listed this long.
KEEP_UNMATCHED = timedelta(days=30)
# A segment committed after a search may carry an older ``created_at`` (a slow commit, another
# gateway host's clock): searches for held labels reach back this far before their cursor.
_SEGMENT_MARGIN = timedelta(minutes=5)
_AUDIT_CHUNK = 1000  # replaced labels per audit record
_IN_CHUNK = 500  # request ids per IN (...) when looking up existing feedback
_SHOWN = 5  # ids or items named in an error message

LabelKind = Literal["string", "bool", "integer", "float"]
PendingStatus = Literal["pending", "expired", "rejected"]


class FeedbackItem(BaseModel):
    """The true label of one predicted row: row ``row`` of request ``request_id``."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=128)
    row: int = Field(default=0, ge=0, le=2**31 - 1)
    label: Any = Field(json_schema_extra={"type": ["string", "number", "boolean"]})

    @field_validator("label", mode="before")
    @classmethod
    def _plain(cls, value: Any) -> Any:
        # numpy scalars from SDK users become the JSON scalars they stand for.
        return value.item() if isinstance(value, np.generic) else value


class Feedback(BaseModel):
    """A stored label with the prediction it was joined to."""

    endpoint: str
    request_id: str
    row: int
    model: str
    version: int
    predicted_at: datetime
    label: Any
    prediction: dict[str, Any]  # the logged outputs of the row
    features: dict[str, Any]  # the logged inputs of the row
    revisions: int  # 1 for the first label, +1 each time it was replaced
    received_at: datetime  # when it was joined (for a held label: when its prediction landed)
    received_by: str


class FeedbackResult(BaseModel):
    """What one :meth:`FeedbackService.submit` call stored."""

    endpoint: str
    received: int  # items in the call
    stored: int  # distinct (request id, row) pairs joined and stored now: duplicates count once
    created: int  # rows labelled for the first time
    replaced: int  # rows whose earlier label was replaced (recorded in the audit log)
    pending: int = 0  # labels held until their prediction is logged (see ``held_until``)
    held_until: datetime | None = None  # when held labels of this call expire if still unmatched


class PendingFeedback(BaseModel):
    """A held label: waiting for its prediction, or expired, or rejected (``reason`` says why)."""

    endpoint: str
    request_id: str
    row: int
    label: Any
    status: PendingStatus
    reason: str
    received_at: datetime
    received_by: str
    expires_at: datetime


@dataclass
class HeldOutcome:
    """What one :meth:`FeedbackService.join_held` call did."""

    joined: int = 0
    expired: int = 0
    rejected: int = 0
    still_pending: int = 0
    predicted_at: list[datetime] = field(default_factory=list)  # of the joined labels


def load_monitor_config(ws: Workspace, endpoint: str) -> MonitorConfig:
    """The endpoint's stored monitoring settings, or the defaults when none are stored."""
    with ws.store.read() as session:
        stored = session.scalar(
            select(MonitorConfigRow.config).where(MonitorConfigRow.endpoint == endpoint)
        )
    return MonitorConfig.model_validate(stored or {})


@dataclass
class _Match:
    """Logged rows of one request id, found in one or more segments."""

    at: datetime
    rows: list[tuple[tuple[datetime, str], int, dict[str, Any]]] = field(default_factory=list)


class FeedbackService:
    """Submit and list ground-truth labels of an endpoint's predictions."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.store = ws.store

    def submit(
        self,
        endpoint: str,
        items: Sequence[FeedbackItem | Mapping[str, Any]],
        *,
        lookback: timedelta = DEFAULT_LOOKBACK,
        config: MonitorConfig | None = None,
    ) -> FeedbackResult:
        """Store labels for logged predictions, all in one transaction (all or nothing).

        Each item is joined to the row it labels in the prediction log of the last
        ``lookback``. An item whose prediction is not in the log (yet) is held, for the
        endpoint's ``feedback_hold_seconds``, and joined by the monitor when its prediction is
        logged; ``pending`` counts those. :class:`InvalidInput` names items whose label is not
        a JSON scalar or does not fit the endpoint's task; :class:`NotFound` names unmatched
        items of an endpoint that does not exist (nothing would ever join them). A label for a
        row labelled before replaces it (the latest wins; ``revisions`` counts the labels) and
        the replaced label goes to the audit log. Within one call the last item for a row wins.
        """
        if lookback <= timedelta(0):
            raise InvalidInput("lookback must be positive")
        if len(items) > MAX_ITEMS:
            raise InvalidInput(
                f"{len(items)} feedback items in one call; send at most {MAX_ITEMS} per call"
            )
        parsed = _parse(items)
        latest: dict[tuple[str, int], tuple[int, FeedbackItem]] = {}
        for i, item in enumerate(parsed):
            latest[(item.request_id, item.row)] = (i, item)
        if not latest:
            return FeedbackResult(endpoint=endpoint, received=0, stored=0, created=0, replaced=0)
        config = config or load_monitor_config(self.ws, endpoint)
        now = datetime.now(UTC)

        wanted = {request_id for request_id, _ in latest}
        requests, kinds, _ = self._join(endpoint, wanted, config, since=now - lookback)
        held = [
            (rid, row) for (rid, row) in latest if rid not in requests or row >= len(requests[rid])
        ]
        if held:
            self._check_can_hold(endpoint, held, lookback)
        held_set = set(held)
        bad = []
        for (rid, row), (i, item) in latest.items():
            # A held label is checked against the task now, against its prediction when joined.
            kind = None if (rid, row) in held_set else kinds.get(rid)
            problem = _label_problem(item.label, config.task, kind)
            if problem:
                bad.append(f"#{i + 1} (request {rid!r}, row {row}): {problem}")
        if bad:
            shown = "; ".join(bad[:_SHOWN]) + (" ..." if len(bad) > _SHOWN else "")
            raise InvalidInput(
                f"{len(bad)} feedback item(s) for endpoint {endpoint!r} have a label that does "
                f"not fit: {shown}"
            )

        values = [
            _stored_values(endpoint, rid, row, item.label, requests[rid][row], self.ws.actor)
            for (rid, row), (_i, item) in latest.items()
            if (rid, row) not in held_set
        ]
        hold = timedelta(seconds=config.feedback_hold_seconds)
        with self.store.write(self.ws.actor) as tx:
            # Stamped inside the transaction: the late-label pass reads feedback by the time
            # it was stored, so the stamp must be close to the commit.
            stamp = datetime.now(UTC)
            for value in values:
                value["received_at"] = stamp
            # A label joined now wins over one held earlier for the same row. Held rows are
            # touched before feedback rows, in the order join_held takes them, so the two
            # cannot deadlock on PostgreSQL when a label is re-sent during a join.
            _drop_held(tx.session, endpoint, [(v["request_id"], v["row"]) for v in values])
            replaced = _store(tx, self.store.is_sqlite, endpoint, values)
            if held:
                _hold(
                    tx.session,
                    self.store.is_sqlite,
                    [
                        {
                            "id": str(ULID()),
                            "endpoint": endpoint,
                            "request_id": rid,
                            "row": row,
                            "label": latest[(rid, row)][1].label,
                            "status": "pending",
                            "reason": "",
                            "received_at": stamp,
                            "received_by": self.ws.actor,
                            "expires_at": stamp + hold,
                            "searched_until": None,
                        }
                        for rid, row in held
                    ],
                )
        return FeedbackResult(
            endpoint=endpoint,
            received=len(parsed),
            stored=len(values),
            created=len(values) - replaced,
            replaced=replaced,
            pending=len(held),
            held_until=stamp + hold if held else None,
        )

    def _check_can_hold(
        self, endpoint: str, held: Sequence[tuple[str, int]], lookback: timedelta
    ) -> None:
        """Labels can be held only for an endpoint that exists: its monitor joins them."""
        try:
            self.ws.endpoints.get(endpoint)
        except NotFound:
            unknown = [f"{rid!r}" if row == 0 else f"{rid!r} row {row}" for rid, row in held]
            shown = ", ".join(unknown[:_SHOWN]) + (" ..." if len(unknown) > _SHOWN else "")
            raise NotFound(
                f"{len(unknown)} feedback item(s) match no prediction of endpoint {endpoint!r} "
                f"logged in the last {_days(lookback)}: {shown}; and no endpoint {endpoint!r} "
                "exists to hold them until their predictions are logged: check the endpoint "
                "name, the request ids and rows (or pass a longer lookback)",
                unknown=unknown[:100],
            ) from None

    def join_held(
        self, endpoint: str, *, config: MonitorConfig | None = None, now: datetime | None = None
    ) -> HeldOutcome:
        """Store the held labels of ``endpoint`` whose predictions have been logged since.

        Searches only the segments written since each label's last search. Labels still
        unmatched at their ``expires_at`` (compared with ``now``) expire; labels that do not fit
        their prediction are rejected. Expired and rejected labels older than 30 days are
        deleted.
        """
        now = now or datetime.now(UTC)
        outcome = HeldOutcome()
        with self.store.read() as session:
            held = session.execute(
                select(
                    PendingFeedbackRow.id,
                    PendingFeedbackRow.request_id,
                    PendingFeedbackRow.row,
                    PendingFeedbackRow.label,
                    PendingFeedbackRow.received_at,
                    PendingFeedbackRow.received_by,
                    PendingFeedbackRow.expires_at,
                    PendingFeedbackRow.searched_until,
                ).where(
                    PendingFeedbackRow.endpoint == endpoint,
                    PendingFeedbackRow.status == "pending",
                )
            ).all()
            prune = session.scalar(
                select(func.count())
                .select_from(PendingFeedbackRow)
                .where(
                    PendingFeedbackRow.endpoint == endpoint,
                    PendingFeedbackRow.status != "pending",
                    PendingFeedbackRow.expires_at < now - KEEP_UNMATCHED,
                )
            )
        if prune:
            with self.store.write(self.ws.actor) as tx:
                tx.session.execute(
                    delete(PendingFeedbackRow).where(
                        PendingFeedbackRow.endpoint == endpoint,
                        PendingFeedbackRow.status != "pending",
                        PendingFeedbackRow.expires_at < now - KEEP_UNMATCHED,
                    )
                )
        if not held:
            return outcome
        config = config or load_monitor_config(self.ws, endpoint)
        created_since = min(
            (h.searched_until if h.searched_until is not None else h.received_at) - _SEGMENT_MARGIN
            for h in held
        )
        since = min(h.received_at for h in held) - DEFAULT_LOOKBACK
        requests, kinds, newest = self._join(
            endpoint, {h.request_id for h in held}, config, since=since, created_since=created_since
        )
        joined: dict[str, dict[str, Any]] = {}  # by held row id
        closed: dict[str, tuple[PendingStatus, str]] = {}
        waiting: list[str] = []
        for h in held:
            rows = requests.get(h.request_id)
            if rows is not None and h.row < len(rows):
                problem = _label_problem(h.label, config.task, kinds.get(h.request_id))
                if problem:
                    closed[h.id] = ("rejected", f"its prediction was logged, but {problem}")
                else:
                    joined[h.id] = _stored_values(
                        endpoint, h.request_id, h.row, h.label, rows[h.row], h.received_by
                    )
            elif h.expires_at <= now:
                what = (
                    "no prediction with this request id"
                    if rows is None
                    else (f"the request logged {len(rows)} row(s), not row {h.row}")
                )
                closed[h.id] = (
                    "expired",
                    f"{what} was logged by {h.expires_at.isoformat()} (held "
                    f"{_days(h.expires_at - h.received_at)})",
                )
            else:
                waiting.append(h.id)
        with self.store.write(self.ws.actor) as tx:
            s = tx.session
            # Only rows still as they were read: a label sent meanwhile replaced the row
            # (with a new id), and that newer label wins.
            ids = [h.id for h in held]
            present: set[str] = set()
            for i in range(0, len(ids), _IN_CHUNK):
                present.update(
                    s.scalars(
                        select(PendingFeedbackRow.id)
                        .where(
                            PendingFeedbackRow.id.in_(ids[i : i + _IN_CHUNK]),
                            PendingFeedbackRow.status == "pending",
                        )
                        .with_for_update()
                    )
                )
            stamp = datetime.now(UTC)
            values = [v for key, v in joined.items() if key in present]
            for value in values:
                value["received_at"] = stamp
            _store(tx, self.store.is_sqlite, endpoint, values)
            done = [key for key in joined if key in present]
            for i in range(0, len(done), _IN_CHUNK):
                s.execute(
                    delete(PendingFeedbackRow).where(
                        PendingFeedbackRow.id.in_(done[i : i + _IN_CHUNK])
                    )
                )
            for key, (status, reason) in closed.items():
                if key in present:
                    s.execute(
                        update(PendingFeedbackRow)
                        .where(PendingFeedbackRow.id == key)
                        .values(status=status, reason=reason)
                    )
            still = [key for key in waiting if key in present]
            if newest is not None:
                for i in range(0, len(still), _IN_CHUNK):
                    s.execute(
                        update(PendingFeedbackRow)
                        .where(PendingFeedbackRow.id.in_(still[i : i + _IN_CHUNK]))
                        .values(searched_until=newest)
                    )
        outcome.joined = len(values)
        outcome.predicted_at = [v["predicted_at"] for v in values]
        outcome.expired = sum(
            1 for key, (status, _) in closed.items() if key in present and status == "expired"
        )
        outcome.rejected = sum(
            1 for key, (status, _) in closed.items() if key in present and status == "rejected"
        )
        outcome.still_pending = len(still)
        if outcome.expired or outcome.rejected:
            log.warning(
                "endpoint %s: %d held label(s) expired (no prediction logged in time) and %d "
                "rejected (the label does not fit its prediction); "
                "`modelyard monitor feedback-pending %s` lists them",
                endpoint,
                outcome.expired,
                outcome.rejected,
                endpoint,
            )
        return outcome

    def expire_orphans(self, endpoints: Collection[str], *, now: datetime | None = None) -> int:
        """Expire overdue held labels of endpoints not in ``endpoints`` (deleted since)."""
        now = now or datetime.now(UTC)
        where = [PendingFeedbackRow.status == "pending", PendingFeedbackRow.expires_at <= now]
        if endpoints:
            where.append(PendingFeedbackRow.endpoint.not_in(sorted(endpoints)))
        with self.store.read() as session:  # most passes find none: no write lock for them
            if session.scalar(select(PendingFeedbackRow.id).where(*where).limit(1)) is None:
                return 0
        with self.store.write(self.ws.actor) as tx:
            done = tx.session.execute(
                update(PendingFeedbackRow)
                .where(*where)
                .values(status="expired", reason="its endpoint was deleted")
            )
            return int(done.rowcount or 0)  # type: ignore[attr-defined]

    def held(self, endpoint: str, *, status: str | None = None) -> list[PendingFeedback]:
        """Held labels of ``endpoint`` (one ``status`` or all), oldest first."""
        if status is not None and status not in ("pending", "expired", "rejected"):
            raise InvalidInput(f"status {status!r} is not one of pending, expired, rejected")
        query = select(PendingFeedbackRow).where(PendingFeedbackRow.endpoint == endpoint)
        if status is not None:
            query = query.where(PendingFeedbackRow.status == status)
        query = query.order_by(
            PendingFeedbackRow.received_at, PendingFeedbackRow.request_id, PendingFeedbackRow.row
        )
        with self.store.read() as session:
            return [
                PendingFeedback(
                    endpoint=r.endpoint,
                    request_id=r.request_id,
                    row=r.row,
                    label=r.label,
                    status=r.status,
                    reason=r.reason,
                    received_at=r.received_at,
                    received_by=r.received_by,
                    expires_at=r.expires_at,
                )
                for r in session.scalars(query)
            ]

    def held_counts(self, endpoint: str) -> dict[str, int]:
        """How many held labels of ``endpoint`` are pending, expired and rejected."""
        counts = dict.fromkeys(("pending", "expired", "rejected"), 0)
        with self.store.read() as session:
            for status, count in session.execute(
                select(PendingFeedbackRow.status, func.count())
                .where(PendingFeedbackRow.endpoint == endpoint)
                .group_by(PendingFeedbackRow.status)
            ):
                counts[status] = int(count)
        return counts

    def list(
        self,
        endpoint: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        version: int | None = None,
    ) -> list[Feedback]:
        """Labels of predictions made in ``start <= predicted_at < end``, oldest first."""
        # Plain columns, not ORM objects: several times faster for thousands of rows.
        query = select(*(getattr(FeedbackRow, name) for name in Feedback.model_fields))
        query = query.where(FeedbackRow.endpoint == endpoint)
        if start is not None:
            query = query.where(FeedbackRow.predicted_at >= start)
        if end is not None:
            query = query.where(FeedbackRow.predicted_at < end)
        if version is not None:
            query = query.where(FeedbackRow.version == version)
        query = query.order_by(FeedbackRow.predicted_at, FeedbackRow.request_id, FeedbackRow.row)
        with self.store.read() as session:
            return [Feedback.model_validate(dict(row._mapping)) for row in session.execute(query)]

    # -- joining ----------------------------------------------------------------------------

    def _join(
        self,
        endpoint: str,
        wanted: set[str],
        config: MonitorConfig,
        *,
        since: datetime,
        created_since: datetime | None = None,
    ) -> tuple[
        dict[str, builtins.list[dict[str, Any]]], dict[str, LabelKind | None], datetime | None
    ]:
        """The logged rows of each wanted request (in row order), its prediction's kind, and
        the ``created_at`` of the newest segment searched (segments written since
        ``created_since`` only, when given)."""
        plog = PredictionLog(self.ws)
        segments = plog.segments(endpoint, start=since, created_since=created_since)
        newest = max((s.created_at for s in segments), default=None)
        value_set = pa.array(sorted(wanted), pa.string())
        oldest = pa.scalar(since, pa.timestamp("us", tz="UTC"))
        pending = set(wanted)
        # Ids found only at the very start of a segment: a multi-row request may straddle two
        # segments, so the older segment may hold its first rows (with the same ``at``).
        open_at: dict[str, datetime] = {}
        matches: dict[str, _Match] = {}
        kinds: dict[str, LabelKind | None] = {}
        for segment in sorted(segments, key=lambda s: (s.start_at, s.id), reverse=True):
            if not pending and not open_at:
                break
            if not pending and segment.end_at < min(open_at.values()):
                continue
            file = pq.ParquetFile(pa.BufferReader(self.ws.artifacts.get_bytes(segment.digest)))
            names = file.schema_arrow.names
            wanted_columns = ("request_id", "at", "shadow", "status")
            head = file.read(columns=[c for c in wanted_columns if c in names])
            mask = pc.and_(
                pc.is_in(head["request_id"], value_set=value_set),
                pc.greater_equal(head["at"], oldest),  # a segment may start before `since`
            )
            if "shadow" in names:
                # A shadow version's answer was never served: the label is for the primary's.
                mask = pc.and_(mask, pc.invert(pc.fill_null(head["shadow"], False)))
            if "status" in names:  # a failed request has no prediction to label
                mask = pc.and_(mask, pc.equal(pc.fill_null(head["status"], 200), 200))
            positions = pc.indices_nonzero(mask)
            if len(positions) == 0:
                continue
            columns = ["request_id", "at", "model", "version"]
            columns += [n for n in names if n.startswith((INPUT_PREFIX, OUTPUT_PREFIX))]
            table = file.read(columns=columns).take(positions)
            kind = _prediction_kind(table, config)
            order = (segment.created_at, segment.id)
            starts: dict[str, int] = {}
            for pos, rid, at, model, version, values in zip(
                positions.to_pylist(),
                table["request_id"].to_pylist(),
                table["at"].to_pylist(),
                table["model"].to_pylist(),
                table["version"].to_pylist(),
                _rows(table),
                strict=True,
            ):
                starts.setdefault(rid, pos)
                match = matches.get(rid)
                if match is None or at > match.at:  # a reused request id: the newest wins
                    match = matches[rid] = _Match(at)
                    kinds[rid] = kind
                elif at < match.at:
                    continue
                values.update(model=model, version=version, at=at)
                match.rows.append((order, pos, values))
            for rid, first in starts.items():
                pending.discard(rid)
                if first == 0:
                    open_at.setdefault(rid, matches[rid].at)
                else:
                    open_at.pop(rid, None)
        requests = {
            rid: [values for _, _, values in sorted(m.rows, key=lambda r: (r[0], r[1]))]
            for rid, m in matches.items()
        }
        return requests, kinds, newest


# -- storing ------------------------------------------------------------------------------


def _stored_values(
    endpoint: str, rid: str, row: int, label: Any, logged: dict[str, Any], by: str
) -> dict[str, Any]:
    """A ``feedback`` row for ``label`` joined to its logged row (``received_at`` set later)."""
    return {
        "id": str(ULID()),
        "endpoint": endpoint,
        "request_id": rid,
        "row": row,
        "model": logged["model"],
        "version": logged["version"],
        "predicted_at": logged["at"],
        "label": label,
        "prediction": logged["prediction"],
        "features": logged["features"],
        "revisions": 1,
        "received_by": by,
    }


def _store(tx: Tx, sqlite: bool, endpoint: str, values: Sequence[dict[str, Any]]) -> int:
    """Insert or replace the rows in one statement; audit the replaced labels.

    Returns how many rows replaced an earlier label.
    """
    if not values:
        return 0
    labels = {(v["request_id"], v["row"]): v["label"] for v in values}
    ids = sorted({rid for rid, _ in labels})
    # Read (and on PostgreSQL lock) the rows about to be replaced, so the audit record holds
    # the label that was actually replaced.
    existing: dict[tuple[str, int], tuple[Any, int]] = {}
    for i in range(0, len(ids), _IN_CHUNK):
        query = (
            select(
                FeedbackRow.request_id, FeedbackRow.row, FeedbackRow.label, FeedbackRow.revisions
            )
            .where(FeedbackRow.endpoint == endpoint)
            .where(FeedbackRow.request_id.in_(ids[i : i + _IN_CHUNK]))
            .with_for_update()
        )
        for rid, row, label, revisions in tx.session.execute(query):
            if (rid, row) in labels:
                existing[(rid, row)] = (label, revisions)
    tx.session.execute(_upsert_statement(sqlite), list(values))
    changes = [(pair, old, revisions, labels[pair]) for pair, (old, revisions) in existing.items()]
    for i in range(0, len(changes), _AUDIT_CHUNK):
        chunk = changes[i : i + _AUDIT_CHUNK]
        tx.record(
            "feedback.replace",
            "feedback",
            endpoint if len(chunk) > 1 else f"{endpoint}/{chunk[0][0][0]}/{chunk[0][0][1]}",
            before={
                "labels": [
                    {"request_id": rid, "row": row, "label": old, "revisions": n}
                    for (rid, row), old, n, _new in chunk
                ]
            },
            after={
                "labels": [
                    {"request_id": rid, "row": row, "label": new, "revisions": n + 1}
                    for (rid, row), _old, n, new in chunk
                ]
            },
        )
    return len(existing)


def _hold(session: Session, sqlite: bool, values: Sequence[dict[str, Any]]) -> None:
    """Insert held labels; one held before for the same row is replaced (the latest wins)."""
    table: Table = PendingFeedbackRow.__table__  # type: ignore[assignment]
    stmt = sqlite_insert(table) if sqlite else pg_insert(table)
    replaced = ["id", "label", "status", "reason", "received_at", "received_by", "expires_at"]
    replaced += ["searched_until"]
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.endpoint, table.c.request_id, table.c.row],
        set_={name: stmt.excluded[name] for name in replaced},
    )
    session.execute(stmt, list(values))


def _drop_held(session: Session, endpoint: str, pairs: Sequence[tuple[str, int]]) -> None:
    """Delete held labels of these (request id, row) pairs: a joined label replaced them."""
    if (
        not pairs
        or session.scalar(
            select(PendingFeedbackRow.id).where(PendingFeedbackRow.endpoint == endpoint).limit(1)
        )
        is None
    ):
        return
    wanted = set(pairs)
    ids = sorted({rid for rid, _ in wanted})
    for i in range(0, len(ids), _IN_CHUNK):
        found = session.execute(
            select(PendingFeedbackRow.id, PendingFeedbackRow.request_id, PendingFeedbackRow.row)
            .where(PendingFeedbackRow.endpoint == endpoint)
            .where(PendingFeedbackRow.request_id.in_(ids[i : i + _IN_CHUNK]))
        ).all()
        stale = [key for key, rid, row in found if (rid, row) in wanted]
        if stale:
            session.execute(delete(PendingFeedbackRow).where(PendingFeedbackRow.id.in_(stale)))


# -- helpers --------------------------------------------------------------------------------


def _upsert_statement(sqlite: bool) -> Any:
    """INSERT ... ON CONFLICT (endpoint, request_id, row) DO UPDATE, keeping the row's id."""
    table: Table = FeedbackRow.__table__  # type: ignore[assignment]
    stmt = sqlite_insert(table) if sqlite else pg_insert(table)
    replaced = ["model", "version", "predicted_at", "label", "prediction", "features"]
    replaced += ["received_at", "received_by"]
    return stmt.on_conflict_do_update(
        index_elements=[table.c.endpoint, table.c.request_id, table.c.row],
        set_={
            **{name: stmt.excluded[name] for name in replaced},
            "revisions": table.c.revisions + 1,
        },
    )


def _parse(items: Sequence[FeedbackItem | Mapping[str, Any]]) -> list[FeedbackItem]:
    parsed = []
    for i, item in enumerate(items):
        try:
            parsed.append(FeedbackItem.model_validate(item))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'item'}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidInput(f"feedback item #{i + 1} is not valid ({problems})") from None
        label = parsed[-1].label
        if label is None or not isinstance(label, str | int | float | bool):
            raise InvalidInput(
                f"feedback item #{i + 1}: the label must be a number, a string or a boolean, "
                f"not {type(label).__name__}"
            )
        if isinstance(label, float) and not math.isfinite(label):
            raise InvalidInput(f"feedback item #{i + 1}: the label must be finite, not {label}")
    return parsed


def _prediction_output(names: Sequence[str], config: MonitorConfig) -> str | None:
    """The output holding the predicted label or value: configured, else the first output."""
    if config.prediction is not None:
        return config.prediction if config.prediction in names else None
    for name in names:
        if name != config.probabilities:
            return name
    return None


def _prediction_kind(table: pa.Table, config: MonitorConfig) -> LabelKind | None:
    outputs = [n[len(OUTPUT_PREFIX) :] for n in table.column_names if n.startswith(OUTPUT_PREFIX)]
    scalar = [n for n in outputs if not _is_list(table.schema.field(OUTPUT_PREFIX + n).type)]
    name = _prediction_output(scalar, config)
    if name is None:
        return None
    dtype = table.schema.field(OUTPUT_PREFIX + name).type
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_integer(dtype):
        return "integer"
    if pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "float"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "string"
    return None


def _label_problem(label: Any, task: str, kind: LabelKind | None) -> str | None:
    """Why ``label`` does not fit the endpoint's task and logged prediction, or None."""
    is_number = isinstance(label, int | float) and not isinstance(label, bool)
    if task == "regression" and not is_number:
        return f"label {label!r} is not a number, and the endpoint is a regressor"
    if kind == "string" and not isinstance(label, str):
        return f"label {label!r} is not a string, and the endpoint predicts strings"
    if kind == "bool" and not isinstance(label, bool):
        return f"label {label!r} is not true/false, and the endpoint predicts booleans"
    if kind in ("integer", "float") and not is_number:
        return f"label {label!r} is not a number, and the endpoint predicts numbers"
    if (
        task == "classification"
        and kind == "integer"
        and isinstance(label, float)
        and not label.is_integer()
    ):
        return f"label {label!r} is not a whole number, and the endpoint predicts class numbers"
    return None


def _is_list(dtype: pa.DataType) -> bool:
    return bool(
        pa.types.is_fixed_size_list(dtype)
        or pa.types.is_list(dtype)
        or pa.types.is_large_list(dtype)
    )


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    """Per row: ``{"prediction": {output: value}, "features": {input: value}}``, JSON-safe."""
    outputs = {
        n[len(OUTPUT_PREFIX) :]: _column(table[n])
        for n in table.column_names
        if n.startswith(OUTPUT_PREFIX)
    }
    inputs = {
        n[len(INPUT_PREFIX) :]: _column(table[n])
        for n in table.column_names
        if n.startswith(INPUT_PREFIX)
    }
    return [
        {
            "prediction": {name: values[i] for name, values in outputs.items()},
            "features": {name: values[i] for name, values in inputs.items()},
        }
        for i in range(table.num_rows)
    ]


def _column(column: pa.ChunkedArray) -> list[Any]:
    """A column as JSON-safe Python values (NaN and infinities become null)."""
    values = column.to_pylist()
    dtype = column.type
    while _is_list(dtype):
        dtype = dtype.value_type
    if pa.types.is_string(dtype) or pa.types.is_integer(dtype) or pa.types.is_boolean(dtype):
        return values
    return [_json_safe(v) for v in values]


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "isoformat"):  # dates, times and timestamps
        return value.isoformat()
    if isinstance(value, Decimal):
        return _json_safe(float(value))
    return str(value)


def _days(span: timedelta) -> str:
    days = span / timedelta(days=1)
    return f"{days:g} days" if days >= 1 else f"{span.total_seconds():g} seconds"
