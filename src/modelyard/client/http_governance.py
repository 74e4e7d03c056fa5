"""Governance services over HTTP: role bindings, alias policies, approvals.

Each class mirrors its domain service method for method (see ``http.py``).
"""

from __future__ import annotations

import builtins
from typing import Any

from pydantic import TypeAdapter

from modelyard.client.http import HttpTransport, _q
from modelyard.governance.access import RoleBinding
from modelyard.governance.approvals import Approval
from modelyard.governance.entities import Role
from modelyard.governance.policies import AliasPolicy


class HttpAccess:
    """:class:`~modelyard.governance.access.AccessService` over HTTP."""

    def __init__(self, t: HttpTransport) -> None:
        self.t = t

    def bind(self, subject: str, role: str | Role, scope: str = "workspace") -> RoleBinding:
        body = {"subject": subject, "role": str(role), "scope": scope}
        return self.t.send("POST", "/roles", RoleBinding, body)

    def unbind(self, binding_id: str) -> RoleBinding:
        return self.t.send("DELETE", f"/roles/{_q(binding_id)}", RoleBinding)

    def list(self, subject: str | None = None, scope: str | None = None) -> list[RoleBinding]:
        params = {k: v for k, v in {"subject": subject, "scope": scope}.items() if v}
        response = self.t.request("GET", "/roles", params=params)
        return TypeAdapter(list[RoleBinding]).validate_json(response.content)


class HttpPolicies:
    """:class:`~modelyard.governance.policies.PolicyService` over HTTP."""

    def __init__(self, t: HttpTransport) -> None:
        self.t = t

    def set(
        self,
        name: str,
        scope: str,
        *,
        aliases: builtins.list[str] | None = None,
        role: str | Role = Role.deployer,
        approvals: int = 1,
        gates: bool = False,
    ) -> AliasPolicy:
        body: dict[str, Any] = {
            "scope": scope,
            "role": str(role),
            "approvals": approvals,
            "gates": gates,
        }
        if aliases:
            body["aliases"] = aliases
        return self.t.send("PUT", f"/policies/{_q(name)}", AliasPolicy, body)

    def get(self, name: str) -> AliasPolicy:
        return self.t.get(f"/policies/{_q(name)}", AliasPolicy)

    def list(self, scope: str | None = None) -> builtins.list[AliasPolicy]:
        params = {"scope": scope} if scope else {}
        response = self.t.request("GET", "/policies", params=params)
        return TypeAdapter(list[AliasPolicy]).validate_json(response.content)

    def delete(self, name: str) -> None:
        self.t.request("DELETE", f"/policies/{_q(name)}")


class HttpApprovals:
    """:class:`~modelyard.governance.approvals.ApprovalService` over HTTP."""

    def __init__(self, t: HttpTransport) -> None:
        self.t = t

    def request(self, subject: str, context: dict[str, Any] | None = None) -> Approval:
        body = {"subject": subject, "context": context or {}}
        return self.t.send("POST", "/approvals", Approval, body)

    def approve(self, approval_id: str, note: str = "") -> Approval:
        return self.t.send(
            "POST", f"/approvals/{_q(approval_id)}/approve", Approval, {"note": note}
        )

    def reject(self, approval_id: str, note: str = "") -> Approval:
        return self.t.send("POST", f"/approvals/{_q(approval_id)}/reject", Approval, {"note": note})

    def get(self, approval_id: str) -> Approval:
        return self.t.get(f"/approvals/{_q(approval_id)}", Approval)

    def list(
        self, status: str | None = None, subject: str | None = None, *, limit: int = 100
    ) -> builtins.list[Approval]:
        params = {k: v for k, v in {"status": status, "subject": subject}.items() if v}
        response = self.t.request("GET", "/approvals", params=params)
        return TypeAdapter(list[Approval]).validate_json(response.content)[:limit]

    def latest(self, subject: str) -> Approval | None:
        found = self.list(subject=subject)
        return found[0] if found else None
