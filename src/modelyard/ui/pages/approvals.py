"""The approvals pages: what waits for a sign-off, deciding it, and completing the move.

An approval does not move an alias by itself: it clears one move of
``models:/NAME/VERSION@ALIAS``, which someone allowed to move the alias (the requester, as a
rule) then makes, as ``modelyard models alias set`` does. The request's page offers that step
once the approval is granted, so "approve, then see the alias move" takes two clicks by two
people, which is what four eyes means.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import orjson
from fastapi import Depends, Form, Query, Request
from starlette.responses import RedirectResponse, Response

from modelyard.errors import Forbidden, InvalidInput, NotFound
from modelyard.governance.approvals import ALIAS_MOVE, MAX_NOTE, Approval
from modelyard.governance.entities import Permission
from modelyard.governance.policies import AliasPolicy
from modelyard.page import MAX_LIMIT, check_limit
from modelyard.registry.entities import Alias
from modelyard.ui.auth import Viewer, viewer
from modelyard.ui.routing import page_router
from modelyard.ui.templating import render

router = page_router()

PAGE = 50
#: The approval's own records in the audit chain, its history.
HISTORY_ACTIONS = ("approval.request", "approval.approve", "approval.reject", "approval.use")


@dataclass(frozen=True)
class Move:
    """What an approval of ``models:/NAME/VERSION@ALIAS`` clears: one alias move."""

    model: str
    version: int
    alias: str

    @classmethod
    def of(cls, subject: str) -> Move | None:
        found = ALIAS_MOVE.match(subject)
        if found is None:
            return None
        return cls(found.group(1), int(found.group(2)), found.group(3))


def context_summary(approval: Approval) -> list[tuple[str, str]]:
    """The request's context as short ``(key, value)`` pairs; who decided is shown apart."""
    pairs = []
    for key, value in approval.context.items():
        if key == "deciders" or value in (None, "", [], {}):
            continue
        text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
        pairs.append((key, text))
    return pairs


@router.get("/approvals")
def approvals_list(
    request: Request,
    status: str = "",
    limit: int = Query(PAGE, description=f"requests per list, 1 to {MAX_LIMIT}"),
    who: Viewer = Depends(viewer),
) -> Response:
    check_limit(limit)
    service = who.ws.approvals
    wanted = status or None
    pending: list[Approval] = []
    decided: list[Approval] = []
    if wanted in (None, "pending"):
        pending = service.list(status="pending", limit=min(limit + 1, MAX_LIMIT))
    if wanted is None:
        # the newest decided ones of either kind: each list is newest first, so the newest
        # ``limit + 1`` of the two together are among their first ``limit + 1``
        both = service.list(status="approved", limit=min(limit + 1, MAX_LIMIT)) + service.list(
            status="rejected", limit=min(limit + 1, MAX_LIMIT)
        )
        decided = sorted(both, key=lambda a: (a.requested_at, a.id), reverse=True)
    elif wanted != "pending":
        decided = service.list(status=wanted, limit=min(limit + 1, MAX_LIMIT))  # type: ignore[arg-type]
    more = (len(pending) > limit or len(decided) > limit) and limit < MAX_LIMIT
    return render(
        request,
        who,
        "approvals/list.html",
        shown=wanted or "",
        pending=[(a, Move.of(a.subject), context_summary(a)) for a in pending[:limit]],
        decided=[(a, Move.of(a.subject), context_summary(a)) for a in decided[:limit]],
        more_limit=min(limit * 2, MAX_LIMIT) if more else None,
    )


@router.get("/approvals/{approval_id}")
def approval_page(request: Request, approval_id: str, who: Viewer = Depends(viewer)) -> Response:
    ws = who.ws
    approval = ws.approvals.get(approval_id)
    move = Move.of(approval.subject)
    me = who.identity.name
    pending = approval.status == "pending"
    may_approve = who.can("approve")
    own = approval.requested_by == me and not ws.approvals.allow_self_approval
    alias: Alias | None = None
    policies: list[AliasPolicy] = []
    model_exists = False
    newer = None
    project = None
    if move is not None:
        try:
            project = ws.registry.get_model(move.model).project
            model_exists = True
            policies = ws.policies.covering(move.model, move.alias, project)
            alias = ws.registry.get_alias(move.model, move.alias)
        except NotFound:
            pass  # a model deleted since, or an alias not set yet: the page says so
        latest = ws.approvals.latest(approval.subject)
        if latest is not None and latest.id != approval.id:
            newer = latest
    clears = (
        move is not None
        and model_exists
        and approval.status == "approved"
        and approval.used_at is None
        and newer is None
    )
    # Offered as the move itself will decide: the policies' role (bindings on the model or
    # project count), four eyes, and write on the model.
    refused = ""
    if clears and move is not None:
        try:
            ws.policies.check_move(move.model, move.alias, move.version, project=project)
            if not ws.access.allowed(Permission.write, model=move.model, project=project):
                refused = f"{me} may not change model {move.model} (it needs write)"
        except Forbidden as exc:
            refused = exc.detail
    history = ws.audit.entity_records("approval", approval.id, actions=HISTORY_ACTIONS, limit=50)
    return render(
        request,
        who,
        "approvals/detail.html",
        approval=approval,
        move=move,
        context=context_summary(approval),
        deciders=approval.context.get("deciders") or {},
        alias=alias,
        policies=policies,
        model_exists=model_exists,
        newer=newer,
        history=history,
        offer_approve=pending and may_approve and not own and me not in approval.approved_by,
        offer_reject=pending and may_approve,
        offer_withdraw=pending and approval.requested_by == me and not may_approve,
        own=pending and own and may_approve,
        clears=clears,
        offer_move=clears and not refused,
        move_refused=refused,
        max_note=MAX_NOTE,
    )


@router.post("/approvals/{approval_id}/approve")
def approve(
    approval_id: str, note: str = Form(""), who: Viewer = Depends(viewer)
) -> RedirectResponse:
    """Approve as the signed-in user; the service refuses non-approvers and the requester."""
    who.ws.approvals.approve(approval_id, note=note)
    return RedirectResponse(f"/ui/approvals/{quote(approval_id)}", status_code=303)


@router.post("/approvals/{approval_id}/reject")
def reject(
    approval_id: str, note: str = Form(""), who: Viewer = Depends(viewer)
) -> RedirectResponse:
    """Reject (an approver) or withdraw (the requester)."""
    who.ws.approvals.reject(approval_id, note=note)
    return RedirectResponse(f"/ui/approvals/{quote(approval_id)}", status_code=303)


@router.post("/approvals/{approval_id}/move")
def complete_move(
    approval_id: str, reason: str = Form(""), who: Viewer = Depends(viewer)
) -> RedirectResponse:
    """Make the alias move an approval cleared, as ``modelyard models alias set`` would: the
    alias policies decide (and use the approval) exactly as for the CLI or the API."""
    ws = who.ws
    approval = ws.approvals.get(approval_id)
    move = Move.of(approval.subject)
    if move is None:
        raise InvalidInput(
            f"approval {approval_id} is of {approval.subject}, not of an alias move "
            "(models:/NAME/VERSION@ALIAS): there is nothing to move here"
        )
    ws.registry.set_alias(
        move.model,
        move.alias,
        move.version,
        reason=reason.strip() or f"approval {approval_id}",
    )
    return RedirectResponse(f"/ui/approvals/{quote(approval_id)}", status_code=303)
