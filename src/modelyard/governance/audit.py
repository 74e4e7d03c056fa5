"""The audit log: append-only, hash-chained records of every change.

Each record's hash covers its content and the previous record's hash, so editing or
deleting a record breaks the chain at that point; :meth:`AuditLog.verify` finds it.
Records are appended inside the transaction that made the change (see ``Store.write``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import func, insert, select, update
from ulid import ULID

from modelyard.errors import Conflict, InvalidInput
from modelyard.governance.entities import AuditRecord
from modelyard.jsonio import JsonTime, NotABoolean
from modelyard.page import Page
from modelyard.store import Store, Tx
from modelyard.store.tables import AuditHeadRow, AuditRow

if TYPE_CHECKING:
    from modelyard.governance.signing import SigningService

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
    """Outcome of :meth:`AuditLog.verify`; ``checkpoint`` says how a given checkpoint fared."""

    ok: bool
    records: int
    head: str
    broken_at: int | None = None
    reason: str = ""
    checkpoint: str = ""


class Checkpoint(BaseModel):
    """A signed statement that the chain held record ``seq`` with ``hash`` at time ``at``.

    Kept outside the database (a file, an object store), it catches what the chain alone
    cannot: the newest records deleted together with the head row moved back, or the whole
    chain rewritten from some record on.
    """

    seq: Annotated[int, Field(ge=0), NotABoolean]
    hash: str = Field(pattern="^[0-9a-f]{64}$")
    at: JsonTime = Field(description="when it was taken (UTC)")
    key_id: str = Field(pattern="^[0-9a-f]{16}$")
    signature: str = Field(max_length=256, description="base64 Ed25519 signature of signed_bytes()")

    @property
    def at_text(self) -> str:
        """``at`` as signed: ISO 8601 in UTC with a Z (a time without a zone is UTC)."""
        at = self.at if self.at.tzinfo else self.at.replace(tzinfo=UTC)
        return at.astimezone(UTC).isoformat().replace("+00:00", "Z")

    def signed_bytes(self) -> bytes:
        """What the signature covers: the other fields as canonical JSON."""
        body = {"seq": self.seq, "hash": self.hash, "at": self.at_text, "key_id": self.key_id}
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)

    @property
    def label(self) -> str:
        return f"checkpoint {self.at_text}"

    @classmethod
    def parse(cls, data: bytes | str | Mapping[str, Any]) -> Checkpoint:
        """A checkpoint from its JSON; :class:`InvalidInput` naming what is wrong."""
        try:
            if isinstance(data, Mapping):
                return cls.model_validate(data)
            return cls.model_validate_json(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "the document"
            raise InvalidInput(
                f"not a modelyard audit checkpoint ({where}: {err['msg']}); give the file "
                "`modelyard audit checkpoint` wrote"
            ) from None


def write_checkpoint(
    checkpoint: Checkpoint, url: str, storage_options: Mapping[str, Any] | None = None
) -> None:
    """Write ``checkpoint`` as JSON to a local path or any fsspec URL (s3://bucket/key...)."""
    import fsspec

    with fsspec.open(url, "wb", **(storage_options or {})) as out:
        out.write(checkpoint.model_dump_json(indent=2).encode() + b"\n")


def read_checkpoint(url: str, storage_options: Mapping[str, Any] | None = None) -> Checkpoint:
    """Read a checkpoint from a local path or any fsspec URL."""
    import fsspec

    try:
        with fsspec.open(url, "rb", **(storage_options or {})) as f:
            data = f.read()
    except FileNotFoundError:
        raise InvalidInput(
            f"no checkpoint at {url}; give the file `audit checkpoint` wrote"
        ) from None
    return Checkpoint.parse(data)


class AuditLog:
    """Read and verify the audit chain; take and check signed checkpoints of it."""

    def __init__(self, store: Store, signing: SigningService | None = None) -> None:
        self.store = store
        self.signing = signing

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
        before_seq: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> Page[AuditRecord]:
        """Records, newest first, optionally filtered: older than record ``before_seq`` (a
        cursor that stays put while new records arrive, unlike ``offset``), written at or
        after ``since`` and at or before ``until``."""
        query = select(AuditRow).order_by(AuditRow.seq.desc())
        if before_seq is not None:
            query = query.where(AuditRow.seq < before_seq)
        if since is not None:
            query = query.where(AuditRow.at >= since)
        if until is not None:
            query = query.where(AuditRow.at <= until)
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

    def entity_records(
        self,
        entity_type: str,
        entity_id: str,
        *,
        actions: tuple[str, ...],
        until: datetime | None = None,
        after_seq: int = 0,
        limit: int = 100,
    ) -> Sequence[AuditRecord]:
        """One entity's records of ``actions``, newest first: at most ``limit``, written at
        or before ``until`` (None: now) and after record ``after_seq``.

        The actions narrow the scan to their index (``ix_audit_log_action``), and ``seq``
        bounds it: the chain's order is the order the changes were committed in.
        """
        query = (
            select(AuditRow)
            .where(
                AuditRow.action.in_(actions),
                AuditRow.entity_type == entity_type,
                AuditRow.entity_id == entity_id,
                AuditRow.seq > after_seq,
            )
            .order_by(AuditRow.seq.desc())
            .limit(limit)
        )
        if until is not None:
            query = query.where(AuditRow.at <= until)
        with self.store.read() as s:
            return [_record(r) for r in s.scalars(query)]

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

    def checkpoint(self) -> Checkpoint:
        """Sign the end of the chain as it is now, after checking the whole chain: a
        checkpoint vouches for every record up to its own."""
        signer = self._signing().require_signer()  # first: no key, no need to walk
        result = self.verify()
        if not result.ok:
            raise Conflict(
                f"the audit chain is broken ({result.reason}); a checkpoint would vouch for "
                "it: find out what happened first (`modelyard audit verify`)"
            )
        at = datetime.now(UTC).replace(microsecond=0)
        checkpoint = Checkpoint(
            seq=result.records, hash=result.head, at=at, key_id=signer.key_id, signature=""
        )
        checkpoint.signature = signer.sign(checkpoint.signed_bytes())
        return checkpoint

    def _signing(self) -> SigningService:
        if self.signing is None:
            raise InvalidInput("this audit log has no signing service; open it from a workspace")
        return self.signing

    def verify(self, checkpoint: Checkpoint | Mapping[str, Any] | None = None) -> VerifyResult:
        """Walk the whole chain; report the first record whose hash or link is wrong, or
        records missing at its end (the head row, moved with every append, says where the
        chain ended when the walk began).

        With a ``checkpoint`` (its signature checked first, by a trusted key), also report a
        chain that no longer holds the checkpoint's record: truncated below it, or rewritten
        at or before it.
        """
        cp = None
        if checkpoint is not None:
            cp = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.parse(checkpoint)
            why = self._signing().verify_bytes(cp.key_id, cp.signed_bytes(), cp.signature)
            if why is not None:
                return VerifyResult(
                    False, 0, "", None, f"{cp.label} is refused: {why}", f"refused: {why}"
                )
        with self.store.read() as s:
            head = s.execute(
                select(AuditHeadRow.seq, AuditHeadRow.hash).where(AuditHeadRow.id == 1)
            ).first()
        head_seq, head_hash = (None, None) if head is None else head
        prev, expected_seq, count = GENESIS, 1, 0
        hash_at_head = GENESIS if head_seq == 0 else None
        hash_at_cp = GENESIS if cp is not None and cp.seq == 0 else None
        for row in self._rows():
            if row.seq != expected_seq:
                return self._broken(
                    cp, count, prev, expected_seq, f"record {expected_seq} is missing"
                )
            if row.prev_hash != prev:
                return self._broken(
                    cp, count, prev, row.seq, f"record {row.seq} does not link to its predecessor"
                )
            if record_hash(row) != row.hash:
                return self._broken(
                    cp, count, prev, row.seq, f"record {row.seq} was altered after it was written"
                )
            if row.seq == head_seq:
                hash_at_head = row.hash
            if cp is not None and row.seq == cp.seq:
                hash_at_cp = row.hash
            prev, expected_seq, count = row.hash, expected_seq + 1, count + 1
        findings: list[tuple[int, str]] = []  # (record, what is wrong), most telling first
        if cp is not None:
            if count < cp.seq:
                lost = cp.seq - count
                end = f"the chain ends at record {count}" if count else "the chain is empty"
                findings.append(
                    (
                        count + 1,
                        f"{end} but {cp.label} saw record {cp.seq}: {lost} record"
                        f"{'s were' if lost != 1 else ' was'} deleted",
                    )
                )
            elif hash_at_cp != cp.hash:
                findings.append(
                    (
                        cp.seq,
                        f"record {cp.seq} is not the one {cp.label} saw (hash "
                        f"{(hash_at_cp or '')[:16]}, signed {cp.hash[:16]}): the chain was "
                        f"rewritten at or before record {cp.seq}",
                    )
                )
        if head_seq is None:
            findings.append(
                (
                    count + 1,
                    f"the chain's head row (audit_head) is missing: it was deleted; the chain "
                    f"holds {count} records",
                )
            )
        elif count < head_seq:
            findings.append(
                (
                    count + 1,
                    f"records {count + 1} to {head_seq} are missing: the chain's head says "
                    f"{head_seq} records were written",
                )
            )
        elif hash_at_head != head_hash:
            findings.append(
                (
                    head_seq,
                    f"record {head_seq} is not the one the chain's head recorded: the newest "
                    "records were replaced",
                )
            )
        note = ""
        if cp is not None:
            seen = cp.seq <= count and hash_at_cp == cp.hash
            note = f"{cp.label} (record {cp.seq}, key {cp.key_id}): " + (
                "the chain still holds its record" if seen else "contradicted"
            )
        if findings:
            reason = "; ".join(text for _, text in findings)
            return VerifyResult(False, count, prev, findings[0][0], reason, note)
        return VerifyResult(True, count, prev, None, "", note)

    @staticmethod
    def _broken(cp: Checkpoint | None, count: int, prev: str, at: int, reason: str) -> VerifyResult:
        note = ""
        if cp is not None:
            note = f"{cp.label} (record {cp.seq}): " + (
                "the chain is broken before it" if at <= cp.seq else "the chain is broken after it"
            )
        return VerifyResult(False, count, prev, at, reason, note)


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
