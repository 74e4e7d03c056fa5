"""Alias history: every move of an alias, and where it pointed at a given time.

The source is the audit chain (governance's :class:`~modelyard.governance.audit.AuditLog`):
each move of an alias is recorded there, in the transaction that made it, as ``alias.set``
or ``alias.delete`` of the entity ``model_alias`` ``NAME@ALIAS``, with the version before
and after, and what else the move carried (a reason, the approvals that cleared it...). So
the history is as tamper-evident as the chain (``modelyard audit verify``), and needs no
table of its own.

A model deleted and registered again under the same name starts a new history: records
older than the model's last ``model.delete`` belong to the model that was deleted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from modelyard.errors import BadRequest, NotFound
from modelyard.governance.entities import AuditRecord
from modelyard.page import check_limit
from modelyard.registry.uri import check_alias

if TYPE_CHECKING:
    from modelyard.workspace import Workspace

ALIAS_ACTIONS = ("alias.set", "alias.delete")
TIME_FORMAT = "ISO 8601 with a time zone, e.g. 2026-12-01T10:00Z or 2026-12-01T11:00+01:00"
MAX_TIME_CHARS = 64
#: Keys of a move's audit record shown apart; the others go to :attr:`AliasMove.details`.
_SHOWN = frozenset({"version", "reason", "approval", "approvals"})


class AliasMove(BaseModel):
    """One move of an alias, as the audit chain recorded it."""

    at: datetime
    actor: str
    action: Literal["set", "delete"]
    #: The version the alias pointed at before (None: it did not exist).
    before: int | None = None
    #: The version it points at after (None: the move deleted it).
    after: int | None = None
    reason: str | None = None
    #: The approvals that cleared the move (ids; `modelyard approvals show ID`).
    approvals: list[str] = Field(default_factory=list)
    #: What else the record says about the move (policies that covered it, gates passed...).
    details: dict[str, Any] = Field(default_factory=dict)
    #: The audit record's number (`modelyard audit list --entity-id NAME@ALIAS`).
    seq: int


class AliasHistory(BaseModel):
    """The moves of ``model@alias``, newest first, up to ``as_of`` (None: now)."""

    model: str
    alias: str
    as_of: datetime | None = None
    #: The version the alias pointed at as of then (None: it did not exist, or was deleted).
    version: int | None = None
    moves: list[AliasMove]
    #: Older moves exist beyond the limit asked for.
    more: bool = False


class AliasAt(BaseModel):
    """Where ``model@alias`` pointed at ``at``, and the move that put it there (None: the
    alias did not exist yet)."""

    model: str
    alias: str
    at: datetime
    version: int | None = None
    move: AliasMove | None = None

    @classmethod
    def of(cls, history: AliasHistory) -> AliasAt:
        """The answer an :class:`AliasHistory` asked ``as_of`` a time holds."""
        assert history.as_of is not None
        return cls(
            model=history.model,
            alias=history.alias,
            at=history.as_of,
            version=history.version,
            move=history.moves[0] if history.moves else None,
        )


def parse_instant(value: datetime | str, what: str = "time") -> datetime:
    """``value`` as an aware UTC datetime; :class:`BadRequest` (400) for anything but an
    ISO 8601 time with a zone (``Z`` or an offset): a time without one is ambiguous."""
    if isinstance(value, datetime):
        when = value
    else:
        shown = value if len(value) <= MAX_TIME_CHARS else value[:MAX_TIME_CHARS] + "..."
        try:
            if len(value) > MAX_TIME_CHARS:
                raise ValueError
            when = datetime.fromisoformat(value.strip().upper())  # RFC 3339 allows t and z
        except ValueError:
            raise BadRequest(f"{what} {shown!r} is not a time; use {TIME_FORMAT}") from None
    if when.utcoffset() is None:
        raise BadRequest(f"{what} {str(value)!r} has no time zone; use {TIME_FORMAT} (Z is UTC)")
    try:
        return when.astimezone(UTC)
    except OverflowError:  # within a day of year 1 or 9999: as early or late as can be
        earliest = datetime.min.replace(tzinfo=UTC)
        return earliest if when.year == 1 else datetime.max.replace(tzinfo=UTC)


def alias_history(
    ws: Workspace,
    name: str,
    alias: str,
    *,
    limit: int = 100,
    as_of: datetime | str | None = None,
) -> AliasHistory:
    """The moves of ``name@alias``, newest first, at most ``limit``, up to ``as_of``;
    :class:`NotFound` if the model does not exist, or the alias never did."""
    check_alias(alias)
    check_limit(limit)
    until = None if as_of is None else parse_instant(as_of)
    ws.registry.get_model(name)  # a missing model is reported as such
    entity = f"{name}@{alias}"
    since = _model_began(ws, name)
    records = ws.audit.entity_records(
        "model_alias", entity, actions=ALIAS_ACTIONS, until=until, after_seq=since, limit=limit + 1
    )
    if not records and (
        until is None
        or not ws.audit.entity_records(
            "model_alias", entity, actions=ALIAS_ACTIONS, after_seq=since, limit=1
        )
    ):
        raise NotFound(
            f"model {name!r} has no alias {alias!r} and never had one; "
            f"`modelyard models show {name}` lists its aliases"
        )
    moves = [_move(r) for r in records[:limit]]
    return AliasHistory(
        model=name,
        alias=alias,
        as_of=until,
        version=moves[0].after if moves else None,
        moves=moves,
        more=len(records) > limit,
    )


def alias_at(ws: Workspace, name: str, alias: str, at: datetime | str) -> AliasAt:
    """Where ``name@alias`` pointed at ``at``; :class:`NotFound` as :func:`alias_history`."""
    return AliasAt.of(alias_history(ws, name, alias, limit=1, as_of=at))


def _model_began(ws: Workspace, name: str) -> int:
    """The audit record after which the model of this name is the one that exists now."""
    deleted = ws.audit.entity_records("model", name, actions=("model.delete",), limit=1)
    return deleted[0].seq if deleted else 0


def _move(record: AuditRecord) -> AliasMove:
    before = record.before or {}
    after = record.after or {}
    approvals = after.get("approvals")
    if not isinstance(approvals, list):
        approvals = [after["approval"]] if after.get("approval") else []
    reason = after.get("reason")
    deleted = record.action == "alias.delete"
    return AliasMove(
        at=record.at,
        actor=record.actor,
        action="delete" if deleted else "set",
        before=_version(before),
        after=None if deleted else _version(after),
        reason=str(reason) if reason else None,
        approvals=[str(a) for a in approvals],
        details={k: v for k, v in after.items() if k not in _SHOWN},
        seq=record.seq,
    )


def _version(values: dict[str, Any]) -> int | None:
    version = values.get("version")
    return version if isinstance(version, int) and not isinstance(version, bool) else None
