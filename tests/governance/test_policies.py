"""Alias policies: a protected alias moves only with the role, approvals and gates its
policies ask for, whoever asks and however (the API's 403 is in test_authorization.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard.client import Client
from modelyard.errors import AlreadyExists, Forbidden, InvalidInput, NotFound
from modelyard.workspace import Workspace

X = pd.DataFrame(np.random.default_rng(3).normal(size=(40, 3)), columns=["a", "b", "c"])
MODEL = LogisticRegression().fit(X, (X.a > 0).astype(int))


def versions(
    ws: Workspace, name: str = "fraud", count: int = 3, project: str | None = None
) -> None:
    """``count`` versions of ``name`` (one saved model registered again and again)."""
    if project:
        ws.projects.create(project)
        ws.registry.create_model(name, project=project)
    with Client(settings=ws.settings) as client:
        first = client.log_model(MODEL, name, input_example=X.head(3))
    for _ in range(count - 1):
        ws.registry.create_version(name, first.manifest_digest)


@pytest.fixture
def ws(any_workspace: Workspace) -> Workspace:
    """A workspace with fraud v1..v3, @champion on v1, and its people."""
    versions(any_workspace)
    any_workspace.registry.set_alias("fraud", "champion", 1)
    for name, role in [
        ("ed", "editor"),
        ("dee", "deployer"),
        ("ann", "approver"),
        ("bob", "approver"),
        ("root", "admin"),
    ]:
        any_workspace.identities.create_user(name, role)
    return any_workspace


def as_(ws: Workspace, name: str) -> Workspace:
    return ws.as_actor(name)


def test_without_a_policy_an_editor_moves_any_alias(ws: Workspace) -> None:
    assert as_(ws, "ed").registry.set_alias("fraud", "champion", 2).version == 2
    assert as_(ws, "ed").registry.set_alias("fraud", "production", 2).version == 2


def test_the_editor_bypass_is_closed_even_with_an_approval_pending(ws: Workspace) -> None:
    ws.policies.set("fraud-prod", "model:fraud")  # champion, deployer, one approval
    pending = as_(ws, "ed").approvals.request("models:/fraud/2@champion")
    assert pending.status == "pending" and pending.required == 1
    with pytest.raises(Forbidden) as refused:
        as_(ws, "ed").registry.set_alias("fraud", "champion", 2)
    assert "policy 'fraud-prod'" in refused.value.detail
    assert "does not hold role deployer" in refused.value.detail
    assert ws.registry.get_alias("fraud", "champion").version == 1  # nothing moved
    assert [r.after for r in ws.audit.list(action="alias.set").items] == [{"version": 1}]
    # a deployer is refused too while the approval is pending, and told what is missing
    with pytest.raises(Forbidden, match=f"approval {pending.id} .* is pending \\(0 of 1"):
        as_(ws, "dee").registry.set_alias("fraud", "champion", 2)
    # aliases the policy does not name are not protected
    assert as_(ws, "ed").registry.set_alias("fraud", "challenger", 2).version == 2


def test_four_eyes_an_approver_then_a_deployer(ws: Workspace) -> None:
    ws.policies.set("fraud-prod", "model:fraud")
    with pytest.raises(
        Forbidden, match=r"needs 1 approval.*approvals request models:/fraud/2@champion"
    ):
        as_(ws, "dee").registry.set_alias("fraud", "champion", 2)
    pending = as_(ws, "dee").approvals.request("models:/fraud/2@champion")
    with pytest.raises(Forbidden, match="may not decide approvals on model fraud"):
        as_(ws, "ed").approvals.approve(pending.id)  # editors do not approve
    with pytest.raises(Forbidden, match="may not decide approvals"):
        as_(ws, "dee").approvals.approve(pending.id)  # nor deployers
    own = as_(ws, "root").approvals.request("models:/fraud/3@champion")
    with pytest.raises(Forbidden, match="four-eyes"):
        as_(ws, "root").approvals.approve(own.id)  # nor, even an admin, the requester
    approved = as_(ws, "ann").approvals.approve(pending.id, note="holdout looks right")
    assert approved.status == "approved" and approved.approved_by == ["ann"]
    moved = as_(ws, "dee").registry.set_alias("fraud", "champion", 2, reason="better recall")
    assert moved.version == 2
    record = ws.audit.list(action="alias.set").items[0]
    assert record.actor == "dee"
    assert record.after == {
        "version": 2,
        "reason": "better recall",
        "policies": ["fraud-prod"],
        "approvals": [pending.id],
    }
    # the approval is of v2 only: v3 needs its own
    with pytest.raises(Forbidden, match="models:/fraud/3@champion"):
        as_(ws, "dee").registry.set_alias("fraud", "champion", 3)


def test_the_movers_own_approval_does_not_count(ws: Workspace) -> None:
    ws.identities.create_user("both", "approver")
    ws.access.bind("user:both", "deployer", "model:fraud")
    ws.policies.set("fraud-prod", "model:fraud")
    pending = as_(ws, "dee").approvals.request("models:/fraud/2@champion")
    as_(ws, "both").approvals.approve(pending.id)
    with pytest.raises(Forbidden, match="0 approver\\(s\\) other than both; 1 needed"):
        as_(ws, "both").registry.set_alias("fraud", "champion", 2)
    assert as_(ws, "dee").registry.set_alias("fraud", "champion", 2).version == 2


def test_n_approvers(ws: Workspace) -> None:
    ws.policies.set("fraud-prod", "model:fraud", approvals=2)
    pending = as_(ws, "dee").approvals.request("models:/fraud/2@champion")
    assert pending.required == 2
    once = as_(ws, "ann").approvals.approve(pending.id)
    assert once.status == "pending" and once.approved_by == ["ann"]
    assert as_(ws, "ann").approvals.approve(pending.id) == once  # counted once
    with pytest.raises(Forbidden, match="pending \\(1 of 2 approvers"):
        as_(ws, "dee").registry.set_alias("fraud", "champion", 2)
    twice = as_(ws, "bob").approvals.approve(pending.id)
    assert twice.status == "approved" and twice.approved_by == ["ann", "bob"]
    assert as_(ws, "dee").registry.set_alias("fraud", "champion", 2).version == 2


def test_a_rejection_blocks_the_move(ws: Workspace) -> None:
    ws.policies.set("fraud-prod", "model:fraud", approvals=2)
    pending = as_(ws, "dee").approvals.request("models:/fraud/2@champion")
    as_(ws, "ann").approvals.approve(pending.id)
    as_(ws, "bob").approvals.reject(pending.id, note="no bias review")
    with pytest.raises(Forbidden, match="was rejected by bob"):
        as_(ws, "dee").registry.set_alias("fraud", "champion", 2)


def test_gates_only_through_a_promotion(ws: Workspace) -> None:
    ws.policies.set("fraud-gated", "model:fraud", approvals=0, gates=True)
    with pytest.raises(Forbidden, match="only through a pipeline promotion"):
        as_(ws, "dee").registry.set_alias("fraud", "champion", 2)
    moved = as_(ws, "dee").registry.set_alias("fraud", "champion", 2, gates_passed=True)
    assert moved.version == 2
    assert ws.audit.list(action="alias.set").items[0].after["gates_passed"] is True


def test_a_project_policy_covers_its_models_and_patterns(any_workspace: Workspace) -> None:
    ws = any_workspace
    versions(ws, "churn", 2, project="retention")
    versions(ws, "other", 2)
    ws.identities.create_user("ed", "editor")
    ws.policies.set("retention-prod", "project:retention", aliases=["prod*"], approvals=0)
    with pytest.raises(Forbidden, match="policy 'retention-prod'"):
        as_(ws, "ed").registry.set_alias("churn", "prod-eu", 1)
    assert as_(ws, "ed").registry.set_alias("churn", "champion", 1).version == 1  # not named
    assert as_(ws, "ed").registry.set_alias("other", "prod-eu", 1).version == 1  # not in it
    ws.access.bind("user:ed", "deployer", "project:retention")
    assert as_(ws, "ed").registry.set_alias("churn", "prod-eu", 2).version == 2


def test_every_covering_policy_must_be_met(any_workspace: Workspace) -> None:
    ws = any_workspace
    versions(ws, "churn", 2, project="retention")
    ws.identities.create_user("dee", "deployer")
    ws.policies.set("model-lenient", "model:churn", approvals=0)
    ws.policies.set("project-strict", "project:retention", approvals=0, role="admin")
    with pytest.raises(Forbidden, match="policy 'project-strict'"):
        as_(ws, "dee").registry.set_alias("churn", "champion", 2)


def test_deleting_a_protected_alias_takes_an_admin(ws: Workspace) -> None:
    ws.policies.set("fraud-prod", "model:fraud")
    with pytest.raises(Forbidden, match="only an admin of fraud may delete it"):
        as_(ws, "dee").registry.delete_alias("fraud", "champion")
    as_(ws, "root").registry.delete_alias("fraud", "champion", reason="model withdrawn")
    with pytest.raises(NotFound):
        ws.registry.get_alias("fraud", "champion")
    record = ws.audit.list(action="alias.delete").items[0]
    assert record.after == {"reason": "model withdrawn", "policies": ["fraud-prod"]}


def test_policies_are_managed_by_admins_of_their_scope(ws: Workspace) -> None:
    versions(ws, "other", 1)
    with pytest.raises(Forbidden, match="may not change alias policies on model fraud"):
        as_(ws, "dee").policies.set("p", "model:fraud")
    ws.access.bind("user:dee", "admin", "model:fraud")
    made = as_(ws, "dee").policies.set("p", "model:fraud", aliases=["champion", "prod*"])
    assert made.aliases == ["champion", "prod*"] and made.created_by == "dee"
    with pytest.raises(Forbidden):
        as_(ws, "dee").policies.set("q", "model:other")
    with pytest.raises(Forbidden):  # nor move p away to a model dee does not administer
        as_(ws, "dee").policies.set("p", "model:other")
    replaced = as_(ws, "dee").policies.set("p", "model:fraud", approvals=2)
    assert replaced.id == made.id and replaced.approvals == 2 and replaced.aliases == ["champion"]
    assert [p.name for p in ws.policies.list(scope="model:fraud")] == ["p"]
    as_(ws, "dee").policies.delete("p")
    assert ws.policies.list() == []
    actions = [r.action for r in ws.audit.list(entity_type="alias_policy").items]
    assert actions == ["policy.delete", "policy.set", "policy.set"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bad name", "scope": "model:fraud"}, "policy name"),
        ({"name": "p", "scope": "workspace"}, "on a model or a project"),
        ({"name": "p", "scope": "models:fraud"}, "not a scope"),
        ({"name": "p", "scope": "model:fraud", "role": "boss"}, "unknown role 'boss'"),
        ({"name": "p", "scope": "model:fraud", "approvals": 11}, "between 0 and 10"),
        ({"name": "p", "scope": "model:fraud", "approvals": True}, "whole number"),
        ({"name": "p", "scope": "model:fraud", "aliases": ["a/b"]}, "not an alias name"),
    ],
)
def test_bad_policies_are_refused(ws: Workspace, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        ws.policies.set(**kwargs)
    assert ws.policies.list() == []


def test_bindings(ws: Workspace) -> None:
    versions(ws, "other", 1)
    ws.identities.create_user("vi", "viewer")
    with pytest.raises(Forbidden, match="vi may not register versions on model fraud"):
        as_(ws, "vi").registry.create_version(
            "fraud", ws.registry.get_version("fraud", 1).manifest_digest
        )
    binding = ws.access.bind("vi", "editor", "model:fraud")
    assert binding.subject == "user:vi"
    digest = ws.registry.get_version("fraud", 1).manifest_digest
    assert as_(ws, "vi").registry.create_version("fraud", digest).version == 4
    with pytest.raises(Forbidden, match="on model other"):
        as_(ws, "vi").registry.create_version("other", digest)
    with pytest.raises(AlreadyExists):
        ws.access.bind("user:vi", "editor", "model:fraud")
    with pytest.raises(Forbidden, match="may not grant roles"):
        as_(ws, "ed").access.bind("user:vi", "admin", "workspace")
    assert [b.id for b in ws.access.list(subject="vi")] == [binding.id]
    ws.access.unbind(binding.id)
    with pytest.raises(Forbidden):
        as_(ws, "vi").registry.create_version("fraud", digest)
    with pytest.raises(NotFound):
        ws.access.unbind(binding.id)
    with pytest.raises(InvalidInput, match="not a subject"):
        ws.access.bind("team:x", "editor")
    # no dormant grants: to a user or on a model that does not exist (yet)
    with pytest.raises(NotFound, match="no user 'nobody'"):
        ws.access.bind("user:nobody", "editor", "model:fraud")
    with pytest.raises(NotFound, match="nonexistent"):
        ws.access.bind("user:vi", "editor", "model:nonexistent")
    with pytest.raises(NotFound):
        ws.access.bind("user:vi", "editor", "project:nonexistent")
    with pytest.raises(InvalidInput, match="unknown role"):
        ws.access.bind("user:vi", "owner")
    actions = [r.action for r in ws.audit.list(entity_type="role_binding").items]
    assert actions == ["role.unbind", "role.bind"]


def test_group_bindings_and_approvers_scoped_to_a_model(ws: Workspace) -> None:
    from modelyard.governance import Identity, Role

    versions(ws, "other", 2)
    ws.access.bind("group:risk", "approver", "model:fraud")
    member = ws.as_identity(Identity(name="gina", role=Role.viewer, groups=["risk"]))
    outsider = ws.as_identity(Identity(name="olaf", role=Role.viewer, groups=["sales"]))
    fraud = as_(ws, "dee").approvals.request("models:/fraud/2@champion")
    other = as_(ws, "dee").approvals.request("models:/other/2@champion")
    assert member.approvals.approve(fraud.id).status == "approved"
    with pytest.raises(Forbidden, match="gina may not decide approvals on model other"):
        member.approvals.approve(other.id)
    with pytest.raises(Forbidden):
        outsider.approvals.approve(fraud.id)


def test_endpoints_of_a_governed_model_route_through_its_protected_alias(ws: Workspace) -> None:
    """The finding of a trial: an editor pointed the endpoint at any version instead."""
    ws.policies.set("fraud-prod", "model:fraud")
    ed, dee = as_(ws, "ed"), as_(ws, "dee")
    assert ed.endpoints.create("fraud", "models:/fraud@champion").target == "models:/fraud@champion"
    with pytest.raises(Forbidden, match="send an endpoint's traffic to models:/fraud/2"):
        ed.endpoints.update("fraud", target="models:/fraud/2")
    split = {"routes": [{"target": "models:/fraud@champion", "weight": 90}]}
    split["routes"].append({"target": "models:/fraud/3", "weight": 10})
    with pytest.raises(Forbidden, match="models:/fraud/3"):
        ed.endpoints.update("fraud", policy=split)
    ws.registry.set_alias("fraud", "challenger", 3)
    with pytest.raises(Forbidden, match="models:/fraud@challenger"):
        ed.endpoints.create("fraud-b", "models:/fraud@challenger")
    assert ed.endpoints.update("fraud", timeout_ms=5000).timeout_ms == 5000  # targets unchanged
    assert dee.endpoints.update("fraud", policy=split).policy.routes[1].weight == 10
    assert ed.endpoints.update("fraud", timeout_ms=4000).timeout_ms == 4000  # split kept
    assert ws.endpoints.get("fraud").policy.routes[1].target == "models:/fraud/3"


def test_an_approval_clears_one_move(ws: Workspace) -> None:
    ws.policies.set("fraud-prod", "model:fraud")
    dee = as_(ws, "dee")
    pending = dee.approvals.request("models:/fraud/2@champion")
    as_(ws, "ann").approvals.approve(pending.id)
    dee.registry.set_alias("fraud", "champion", 2)
    used = ws.approvals.get(pending.id)
    assert used.used_by == "dee" and used.used_at is not None
    ws.registry.delete_alias("fraud", "champion")  # (an admin's) so that moving back is a move
    with pytest.raises(Forbidden, match=f"approval {pending.id} .* was used by dee"):
        dee.registry.set_alias("fraud", "champion", 2)
    again = dee.approvals.request("models:/fraud/2@champion")
    assert again.id != pending.id and again.status == "pending"
    as_(ws, "bob").approvals.approve(again.id)
    assert dee.registry.set_alias("fraud", "champion", 2).version == 2
    uses = [r.entity_id for r in ws.audit.list(action="approval.use").items]
    assert uses == [again.id, pending.id]


def test_a_governed_model_cannot_leave_its_policies_behind(any_workspace: Workspace) -> None:
    """Trial findings: an editor moved a model out of its project, or deleted it, to get
    round the policies on its aliases."""
    ws = any_workspace
    versions(ws, "churn", 2, project="retention")
    ws.projects.create("sandbox")
    ws.identities.create_user("ed", "editor")
    ws.registry.set_alias("churn", "champion", 1)
    ws.policies.set("retention-prod", "project:retention")
    ed = as_(ws, "ed")
    with pytest.raises(Forbidden, match="ed may not move models on model churn"):
        ed.registry.update_model("churn", project="sandbox")
    assert ws.registry.get_model("churn").project == "retention"
    ws.access.bind("user:ed", "admin", "model:churn")  # an admin of the model, not the project
    with pytest.raises(Forbidden, match="ed may not move models out of it on project retention"):
        ed.registry.update_model("churn", project="sandbox")
    ws.access.unbind(ws.access.list(subject="user:ed")[0].id)
    assert ed.registry.update_model("churn", description="ok").description == "ok"
    with pytest.raises(Forbidden, match="may not archive models an alias policy governs"):
        ed.registry.archive_model("churn")
    ws.registry.archive_model("churn")  # an admin may
    with pytest.raises(Forbidden, match="may not delete models an alias policy governs"):
        ed.registry.delete_model("churn")
    assert ws.registry.get_alias("churn", "champion").version == 1


def test_a_registration_whose_alias_is_refused_says_the_version_exists(ws: Workspace) -> None:
    ws.policies.set("fraud-prod", "model:fraud")
    with (
        Client(settings=ws.settings) as client,
        pytest.raises(Forbidden, match="registered models:/fraud/4, but @champion did not move"),
    ):
        client.registry = ws.as_actor("dee").registry  # the SDK as dee, a deployer
        client.log_model(MODEL, "fraud", input_example=X.head(3), alias="champion")
    assert ws.registry.get_version("fraud", 4).version == 4


def test_grants_on_a_model_go_with_it(ws: Workspace) -> None:
    ws.identities.create_user("vi", "viewer")
    versions(ws, "tmp", 1)
    ws.access.bind("user:vi", "admin", "model:tmp")
    ws.registry.archive_model("tmp")
    ws.registry.delete_model("tmp")
    assert ws.access.list(scope="model:tmp") == []
    versions(ws, "tmp", 1)  # another team's model of the same name
    with pytest.raises(Forbidden):
        as_(ws, "vi").registry.update_model("tmp", description="mine now")
