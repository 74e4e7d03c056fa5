"""Approvals: one pending request per subject, four-eyes decisions, every step audited."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from modelyard.errors import Conflict, Forbidden, InvalidInput, NotFound
from modelyard.governance import ApprovalService
from modelyard.workspace import Workspace

SUBJECT = "models:/fraud/4@champion"


def test_request_is_idempotent_per_subject(any_workspace: Workspace) -> None:
    ws = any_workspace
    first = ws.approvals.request(SUBJECT, {"reason": "promotion"})
    again = ws.as_actor("carol").approvals.request(SUBJECT)
    other = ws.approvals.request("models:/fraud/5@champion")
    assert again.id == first.id and again.requested_by == "local"
    assert other.id != first.id
    assert first.status == "pending" and first.context == {"reason": "promotion"}
    assert [a.id for a in ws.approvals.list(subject=SUBJECT)] == [first.id]
    assert {a.id for a in ws.approvals.list(status="pending")} == {first.id, other.id}


def test_concurrent_requests_make_one_approval(any_workspace: Workspace) -> None:
    ws = any_workspace
    with ThreadPoolExecutor(6) as pool:
        ids = set(pool.map(lambda i: ws.as_actor(f"u{i}").approvals.request(SUBJECT).id, range(12)))
    assert len(ids) == 1
    assert len(ws.approvals.list(subject=SUBJECT)) == 1


def test_another_person_approves_and_the_audit_log_names_them(any_workspace: Workspace) -> None:
    ws = any_workspace.as_actor("alice")
    pending = ws.approvals.request(SUBJECT)
    approved = ws.as_actor("bob").approvals.approve(pending.id, note="metrics look right")
    assert approved.status == "approved" and approved.decided_by == "bob"
    assert approved.note == "metrics look right" and approved.decided_at is not None
    assert ws.approvals.get(pending.id) == approved
    assert ws.approvals.latest(SUBJECT) == approved

    records = ws.audit.list(entity_type="approval", entity_id=pending.id).items
    assert [(r.action, r.actor) for r in reversed(records)] == [
        ("approval.request", "alice"),
        ("approval.approve", "bob"),
    ]
    assert records[0].after is not None
    assert records[0].after["decided_by"] == "bob" and records[0].after["subject"] == SUBJECT
    assert ws.audit.verify().ok


def test_self_approval_is_refused_unless_allowed(any_workspace: Workspace) -> None:
    ws = any_workspace.as_actor("alice")
    pending = ws.approvals.request(SUBJECT)
    with pytest.raises(Forbidden, match="four-eyes"):
        ws.approvals.approve(pending.id)
    assert ws.approvals.get(pending.id).status == "pending"
    assert ws.audit.list(action="approval.approve").items == []

    lenient = ApprovalService(ws, allow_self_approval=True)
    assert lenient.approve(pending.id).decided_by == "alice"


def test_reject_then_request_again(any_workspace: Workspace) -> None:
    ws = any_workspace.as_actor("alice")
    first = ws.approvals.request(SUBJECT)
    # The requester may withdraw their own request.
    rejected = ws.approvals.reject(first.id, note="wrong holdout")
    assert rejected.status == "rejected" and rejected.decided_by == "alice"
    assert ws.approvals.latest(SUBJECT) == rejected
    second = ws.approvals.request(SUBJECT)
    assert second.id != first.id and second.status == "pending"
    assert ws.approvals.latest(SUBJECT) == second
    assert [a.status for a in ws.approvals.list(subject=SUBJECT)] == ["pending", "rejected"]
    assert ws.audit.list(action="approval.reject").items[0].actor == "alice"


def test_a_decision_is_final(any_workspace: Workspace) -> None:
    ws = any_workspace
    pending = ws.as_actor("alice").approvals.request(SUBJECT)
    bob = ws.as_actor("bob").approvals
    approved = bob.approve(pending.id)
    assert bob.approve(pending.id) == approved  # the same decision again is a no-op
    with pytest.raises(Conflict, match="already approved by bob"):
        bob.reject(pending.id)
    with pytest.raises(Conflict):
        ws.as_actor("carol").approvals.approve(pending.id)
    assert len(ws.audit.list(action="approval.approve").items) == 1


def test_bad_input(workspace: Workspace) -> None:
    with pytest.raises(NotFound, match="modelyard approvals list"):
        workspace.approvals.get("01HZZZZZZZZZZZZZZZZZZZZZZZ")
    with pytest.raises(NotFound):
        workspace.as_actor("bob").approvals.approve("nope")
    with pytest.raises(InvalidInput):
        workspace.approvals.request("")
    with pytest.raises(InvalidInput):
        workspace.approvals.list(status="maybe")  # type: ignore[arg-type]
    assert workspace.approvals.latest("models:/none/1@champion") is None
