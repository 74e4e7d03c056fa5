"""The audit log: append-only, hash-chained records of every change.

Each record's hash covers its content and the previous record's hash, so editing or
deleting a record breaks the chain at that point; :meth:`AuditLog.verify` finds it.
Records are appended inside the transaction that made the change (see ``Store.write``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import func, insert, select, update
from ulid import ULID

from modelyard.governance.entities import AuditRecord
from modelyard.page import Page
from modelyard.store import Store, Tx
from modelyard.store.tables import AuditHeadRow, AuditRow

GENESIS = "0" * 64
_COLUMNS = [c.name for c in AuditRow.__table__.columns]


def _canonical(value: Any) -> Any:
    """JSON-safe form that survives a round trip through the database unchanged."""
    try:
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str)
    except TypeError:  # an integer beyond 64 bits (a run's param, a card's lineage...)
        text = orjson.dumps(_big_ints_as_text(value), option=orjson.OPT_NON_STR_KEYS, default=str)
    return orjson.loads(text)


def _big_ints_as_text(value: Any) -> Any:
    """``value`` with the integers orjson cannot write (beyond 64 bits) as their digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, dict):
        return {k: _big_ints_as_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_big_ints_as_text(v) for v in value]
    return value


def _at(value: datetime) -> str:
    # Hashed at the precision both databases keep (microseconds), in UTC.
    return value.astimezone(UTC).isoformat()


def record_hash(row: AuditRow) -> str:
    """The hash of ``row``'s content chained to its ``prev_hash``."""
    body = {
        "seq": row.seq,
        "id": row.id,
        "at": _at(row.at),
        "actor": row.actor,
        "action": row.action,
        "entity_type": row.entity_type,
        "entity_id": row.entity_id,
        "before": row.before,
        "after": row.after,
    }
    payload = row.prev_hash.encode() + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(payload).hexdigest()


_ONE_STATEMENT_ROWS = 1000


def append_events(tx: Tx) -> None:
    """Chain ``tx``'s queued events onto the log; the ``before_commit`` hook of the store."""
    session = tx.session
    # Locks the head row (SQLite's writers are serialised already and ignore FOR UPDATE).
    seq, prev = session.execute(
        select(AuditHeadRow.seq, AuditHeadRow.hash).where(AuditHeadRow.id == 1).with_for_update()
    ).one()
    now = datetime.now(UTC)
    rows = []
    for event in tx.events:
        seq += 1
        row = AuditRow(
            seq=seq,
            id=str(ULID()),
            at=now,
            actor=tx.actor,
            action=event.action,
            entity_type=event.entity_type,
            entity_id=event.entity_id,
            before=_canonical(event.before),
            after=_canonical(event.after),
            prev_hash=prev,
            hash="",
        )
        row.hash = prev = record_hash(row)
        rows.append({c: getattr(row, c) for c in _COLUMNS})
    # Core statements: this runs while the chain's lock is held, so it is kept cheap.
    conn = session.connection()
    move_head = update(AuditHeadRow).where(AuditHeadRow.id == 1).values(seq=seq, hash=prev)
    # A multi-VALUES insert has 11 parameters a row: beyond ~5,900 rows PostgreSQL's limit
    # of 65,535 parameters is hit, so big changes take the executemany path.
    if conn.dialect.name == "postgresql" and len(rows) <= _ONE_STATEMENT_ROWS:
        # one round trip: the head moves in a CTE
        conn.execute(insert(AuditRow).values(rows).add_cte(move_head.cte("head")))
    else:
        conn.execute(insert(AuditRow), rows)
        conn.execute(move_head)
    tx.events.clear()


@dataclass
class VerifyResult:
    """Outcome of :meth:`AuditLog.verify`."""

    ok: bool
    records: int
    head: str
    broken_at: int | None = None
    reason: str = ""


class AuditLog:
    """Read and verify the audit chain."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def last_seq(self) -> int:
        """The sequence number of the newest record (0 for an empty log): every audited
        change raises it, so a reader can tell cheaply that nothing changed since it looked."""
        with self.store.read() as s:
            return s.scalar(select(func.max(AuditRow.seq))) or 0

    def list(
        self,
        *,
        entity_type: str | None = None,
        entity_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> Page[AuditRecord]:
        """Records, newest first, optionally filtered."""
        query = select(AuditRow).order_by(AuditRow.seq.desc())
        for column, value in (
            (AuditRow.entity_type, entity_type),
            (AuditRow.entity_id, entity_id),
            (AuditRow.actor, actor),
            (AuditRow.action, action),
        ):
            if value is not None:
                query = query.where(column == value)
        with self.store.read() as s:
            rows = s.scalars(query.offset(offset).limit(limit + 1)).all()
            items = [_record(r) for r in rows[:limit]]
        return Page.of(items, offset, limit, more=len(rows) > limit)

    def _rows(self, batch: int = 1000) -> Iterator[AuditRow]:
        after = 0
        while True:
            with self.store.read() as s:
                rows = s.scalars(
                    select(AuditRow).where(AuditRow.seq > after).order_by(AuditRow.seq).limit(batch)
                ).all()
            if not rows:
                return
            yield from rows
            after = rows[-1].seq

    def verify(self) -> VerifyResult:
        """Walk the whole chain; report the first record whose hash or link is wrong, or
        records missing at its end (the head row, moved with every append, says where the
        chain ended when the walk began)."""
        with self.store.read() as s:
            head_seq, head_hash = s.execute(
                select(AuditHeadRow.seq, AuditHeadRow.hash).where(AuditHeadRow.id == 1)
            ).one()
        prev, expected_seq, count = GENESIS, 1, 0
        hash_at_head = GENESIS if head_seq == 0 else None
        for row in self._rows():
            if row.seq != expected_seq:
                return VerifyResult(
                    False, count, prev, expected_seq, f"record {expected_seq} is missing"
                )
            if row.prev_hash != prev:
                return VerifyResult(
                    False,
                    count,
                    prev,
                    row.seq,
                    f"record {row.seq} does not link to its predecessor",
                )
            if record_hash(row) != row.hash:
                return VerifyResult(
                    False,
                    count,
                    prev,
                    row.seq,
                    f"record {row.seq} was altered after it was written",
                )
            if row.seq == head_seq:
                hash_at_head = row.hash
            prev, expected_seq, count = row.hash, expected_seq + 1, count + 1
        if count < head_seq:
            return VerifyResult(
                False,
                count,
                prev,
                count + 1,
                f"records {count + 1} to {head_seq} are missing: the chain's head says "
                f"{head_seq} records were written",
            )
        if hash_at_head != head_hash:
            return VerifyResult(
                False,
                count,
                prev,
                head_seq,
                f"record {head_seq} is not the one the chain's head recorded: the newest "
                "records were replaced",
            )
        return VerifyResult(True, count, prev)


def _record(row: AuditRow) -> AuditRecord:
    return AuditRecord(
        seq=row.seq,
        id=row.id,
        at=datetime.fromisoformat(_at(row.at)),
        actor=row.actor,
        action=row.action,
        entity_type=row.entity_type,
        entity_id=row.entity_id,
        before=row.before,
        after=row.after,
        hash=row.hash,
    )
