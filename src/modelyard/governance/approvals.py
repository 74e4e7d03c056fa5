"""Approvals: a human sign-off that a policy requires before a change (e.g. a promotion).

A request names a subject (``models:/fraud/4@champion``); at most one request per subject is
pending at a time, so asking twice returns the same request. A request needs ``required``
distinct approvers (the most any alias policy covering the subject asks, else one); it is
approved when that many have approved, rejected as soon as one rejects. The workspace's
caller decides, if they hold the approve permission on the subject's model (the approver
and admin roles); with four-eyes (the default) the requester may not approve their own
request, only withdraw it by rejecting. Every request and decision is an audit record.
"""

from __future__ import annotations

import builtins
import hashlib
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import select, text
from ulid import ULID

from modelyard.errors import Conflict, Forbidden, InvalidInput, NotFound
from modelyard.governance.entities import Permission
from modelyard.page import check_limit
from modelyard.store.tables import ApprovalRow

if TYPE_CHECKING:
    from modelyard.store import Tx
    from modelyard.workspace import Workspace

__all__ = ["Approval", "ApprovalService", "ApprovalStatus"]

ApprovalStatus = Literal["pending", "approved", "rejected"]
_STATUSES = ("pending", "approved", "rejected")
MAX_SUBJECT = 512
MAX_NOTE = 5000


class Approval(BaseModel):
    id: str
    subject: str
    status: ApprovalStatus
    requested_by: str
    requested_at: datetime
    decided_by: str = ""
    decided_at: datetime | None = None
    note: str = ""
    context: dict[str, Any] = Field(default_factory=dict)
    required: int = 1
    approved_by: list[str] = Field(default_factory=list)
    #: An approval clears one alias move: when and by whom it was used.
    used_at: datetime | None = None
    used_by: str = ""


class ApprovalService:
    """Request, decide and look up approvals, acting as the workspace's actor."""

    def __init__(self, ws: Workspace, *, allow_self_approval: bool = False) -> None:
        self.ws = ws
        self.store = ws.store
        self.allow_self_approval = allow_self_approval

    def request(self, subject: str, context: dict[str, Any] | None = None) -> Approval:
        """A pending approval of ``subject``: the existing one, or a new one."""
        if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT:
            raise InvalidInput(f"an approval subject is 1 to {MAX_SUBJECT} characters")
        # on a model: editors of that model may ask; anything else: editors of the workspace
        self.ws.access.require(
            Permission.write, model=_model_of(subject), action="request approvals"
        )
        required = self._required(subject)
        with self.store.write(self.ws.actor) as tx:
            self._lock_subject(tx, subject)
            row = tx.session.scalars(
                select(ApprovalRow)
                .where(ApprovalRow.subject == subject, ApprovalRow.status == "pending")
                .order_by(ApprovalRow.requested_at.desc())
                .limit(1)
            ).first()
            if row is not None:
                return _approval(row)
            row = ApprovalRow(
                id=str(ULID()),
                subject=subject,
                status="pending",
                requested_by=self.ws.actor,
                requested_at=datetime.now(UTC),
                decided_by="",
                decided_at=None,
                note="",
                context=dict(context or {}),
                required=required,
                approved_by=[],
            )
            tx.session.add(row)
            tx.record(
                "approval.request",
                "approval",
                row.id,
                None,
                {
                    "subject": subject,
                    "status": "pending",
                    "required": required,
                    "context": row.context,
                },
            )
            return _approval(row)

    def approve(self, approval_id: str, note: str = "") -> Approval:
        """Approve as the workspace's actor (not the requester, unless self-approval is on)."""
        return self._decide(approval_id, "approved", note)

    def reject(self, approval_id: str, note: str = "") -> Approval:
        """Reject as the workspace's actor; the requester may reject to withdraw."""
        return self._decide(approval_id, "rejected", note)

    def get(self, approval_id: str) -> Approval:
        with self.store.read() as s:
            row = s.get(ApprovalRow, approval_id)
            if row is None:
                raise NotFound(_not_found(approval_id))
            return _approval(row)

    def list(
        self,
        status: ApprovalStatus | None = None,
        subject: str | None = None,
        *,
        limit: int = 100,
    ) -> builtins.list[Approval]:
        """Approvals, newest first, optionally by status and subject."""
        if status is not None and status not in _STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(_STATUSES)}, not {status!r}")
        check_limit(limit)
        query = select(ApprovalRow).order_by(ApprovalRow.requested_at.desc(), ApprovalRow.id.desc())
        if status is not None:
            query = query.where(ApprovalRow.status == status)
        if subject is not None:
            query = query.where(ApprovalRow.subject == subject)
        with self.store.read() as s:
            return [_approval(r) for r in s.scalars(query.limit(limit))]

    def latest(self, subject: str) -> Approval | None:
        """The newest approval of ``subject``, whatever its status; None if never requested."""
        found = self.list(subject=subject, limit=1)
        return found[0] if found else None

    # --- internals --------------------------------------------------------------------

    def _decide(self, approval_id: str, status: ApprovalStatus, note: str) -> Approval:
        if len(note) > MAX_NOTE:
            raise InvalidInput(f"a note is at most {MAX_NOTE} characters")
        actor = self.ws.actor
        current = self.get(approval_id)
        if not (status == "rejected" and current.requested_by == actor):  # withdrawing
            self.ws.access.require(
                Permission.approve, model=_model_of(current.subject), action="decide approvals"
            )
        with self.store.write(actor) as tx:
            row = tx.session.get(ApprovalRow, approval_id, with_for_update=True)
            if row is None:
                raise NotFound(_not_found(approval_id))
            approvers = list(row.approved_by or [])
            if row.status != "pending":
                if row.status == status and (row.decided_by == actor or actor in approvers):
                    return _approval(row)  # the same decision twice: nothing to do
                raise Conflict(
                    f"approval {approval_id} was already {row.status} by {row.decided_by} "
                    f"at {row.decided_at:%Y-%m-%d %H:%M} UTC; request a new one to decide again"
                )
            if status == "approved" and row.requested_by == actor and not self.allow_self_approval:
                raise Forbidden(
                    f"{actor} requested approval {approval_id} and may not approve it: "
                    "another person must (four-eyes)"
                )
            if status == "approved" and actor in approvers:
                return _approval(row)  # counted already
            if status == "approved":
                approvers.append(actor)
                row.approved_by = approvers
            done = status == "rejected" or len(approvers) >= max(row.required or 1, 1)
            if done:
                row.status = status
                row.decided_by = actor
                row.decided_at = datetime.now(UTC)
            row.note = note
            # who decided, as they were then: a gate asking for a role checks this (an OIDC
            # decider is no registered user to look up later)
            who = self.ws.identity
            deciders = dict((row.context or {}).get("deciders") or {})
            deciders[actor] = {"role": who.role.value, "groups": list(who.groups)}
            row.context = {**(row.context or {}), "deciders": deciders}
            tx.record(
                f"approval.{'approve' if status == 'approved' else 'reject'}",
                "approval",
                row.id,
                {"status": "pending"},
                {
                    "subject": row.subject,
                    "status": row.status,
                    "decided_by": actor,
                    "approved_by": approvers,
                    "note": note,
                },
            )
            return _approval(row)

    @staticmethod
    def consume(tx: Tx, approval_ids: builtins.list[str], by: str) -> None:
        """Mark approvals used, in the transaction of the change they cleared: each clears
        one move, so moving the same way again needs a new approval."""
        for approval_id in approval_ids:
            row = tx.session.get(ApprovalRow, approval_id, with_for_update=True)
            if row is None or row.used_at is not None:
                raise Conflict(
                    f"approval {approval_id} was used meanwhile by another change; "
                    "request a new one"
                )
            row.used_at = datetime.now(UTC)
            row.used_by = by
            tx.record("approval.use", "approval", approval_id, None, {"used_by": by})

    def _required(self, subject: str) -> int:
        """Approvers a subject needs: what the alias policies covering it ask, else one."""
        match = ALIAS_MOVE.match(subject)
        if match is None:
            return 1
        model, alias = match.group(1), match.group(3)
        try:
            project = self.ws.registry.get_model(model).project
        except NotFound:
            project = None
        return max(self.ws.policies.approvals_required(model, alias, project), 1)

    @staticmethod
    def _lock_subject(tx: Tx, subject: str) -> None:
        """Serialise requests for one subject (SQLite writes are serial already)."""
        bind = tx.session.get_bind()
        if bind.dialect.name == "postgresql":
            key = int.from_bytes(hashlib.sha256(subject.encode()).digest()[:8], "big", signed=True)
            tx.session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


def _approval(row: ApprovalRow) -> Approval:
    return Approval(
        id=row.id,
        subject=row.subject,
        status=row.status,
        requested_by=row.requested_by,
        requested_at=row.requested_at,
        decided_by=row.decided_by or "",
        decided_at=row.decided_at,
        note=row.note or "",
        context=dict(row.context or {}),
        required=row.required or 1,
        approved_by=list(row.approved_by or []),
        used_at=row.used_at,
        used_by=row.used_by or "",
    )


#: The subject of an approval that clears one alias move: models:/NAME/VERSION@ALIAS.
ALIAS_MOVE = re.compile(r"^models:/([^/@]+)/(\d+)@([^/@]+)$")


def _model_of(subject: str) -> str | None:
    """The model an approval subject is about (``models:/NAME/...``); None: not a model."""
    if not subject.startswith("models:/"):
        return None
    name = subject[len("models:/") :].split("/", 1)[0].split("@", 1)[0]
    return name or None


def _not_found(approval_id: str) -> str:
    return f"no approval {approval_id!r}; list them with `modelyard approvals list`"
