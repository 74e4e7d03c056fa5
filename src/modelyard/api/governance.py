"""Governance routes: users, tokens, the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field, StrictBool

from modelyard.api.deps import admin, identity, member, viewer
from modelyard.api.requests import ApiRoute, documented
from modelyard.api.responses import problems
from modelyard.governance import AuditRecord, Identity, IssuedToken, Role, Token, User
from modelyard.governance.access import SCOPE_PATTERN, SUBJECT_PATTERN, RoleBinding
from modelyard.governance.audit import Checkpoint
from modelyard.governance.identity import ENDPOINT_NAME, MAX_TOKEN_DAYS, NAME
from modelyard.governance.policies import (
    ALIAS_PATTERN,
    MAX_APPROVALS,
    POLICY_NAME,
    POLICY_SCOPE,
    AliasPolicy,
)
from modelyard.jsonio import NotABoolean
from modelyard.page import Limit, Page, check_limit, decode_token
from modelyard.workspace import Workspace

router = APIRouter(tags=["governance"], route_class=ApiRoute)


class UserCreate(BaseModel):
    name: Annotated[str, documented(NAME, "up to 128 letters, digits, '.', '_', '@', '-'")]
    role: Role = Role.viewer


class UserPatch(BaseModel):
    role: Role


class TokenCreate(BaseModel):
    user: str
    name: str = ""
    expires_in_days: Annotated[int, Field(ge=1, le=MAX_TOKEN_DAYS), NotABoolean] | None = None
    endpoints: list[Annotated[str, documented(ENDPOINT_NAME)]] | None = Field(
        default=None,
        min_length=1,
        description="limit the token to predicting on these endpoints (and nothing else); "
        "null: not limited",
    )


class VerifyReport(BaseModel):
    ok: bool
    records: int
    head: str
    broken_at: int | None = None
    reason: str = ""
    checkpoint: str = ""


@router.get("/whoami", response_model=Identity)
def whoami(who: Identity = Depends(identity)) -> Identity:
    return who


@router.get("/users", response_model=list[User])
def list_users(ws: Workspace = Depends(admin)) -> list[User]:
    return ws.identities.list_users()


@router.post("/users", status_code=201, response_model=User)
def create_user(body: UserCreate, ws: Workspace = Depends(admin)) -> User:
    return ws.identities.create_user(body.name, body.role)


@router.patch("/users/{name}", response_model=User)
def set_role(name: str, body: UserPatch, ws: Workspace = Depends(admin)) -> User:
    return ws.identities.set_role(name, body.role)


@router.post("/users/{name}/disable", response_model=User)
def disable_user(name: str, ws: Workspace = Depends(admin)) -> User:
    return ws.identities.disable_user(name)


@router.get("/tokens", response_model=list[Token])
def list_tokens(user: str | None = None, ws: Workspace = Depends(admin)) -> list[Token]:
    return ws.identities.list_tokens(user)


@router.post("/tokens", status_code=201, response_model=IssuedToken, responses=problems(404))
def create_token(body: TokenCreate, ws: Workspace = Depends(admin)) -> IssuedToken:
    return ws.identities.create_token(
        body.user, name=body.name, expires_in_days=body.expires_in_days, endpoints=body.endpoints
    )


@router.delete("/tokens/{token_id}", response_model=Token)
def revoke_token(token_id: str, ws: Workspace = Depends(admin)) -> Token:
    return ws.identities.revoke_token(token_id)


@router.get("/audit", response_model=Page[AuditRecord])
def list_audit(
    entity_type: str | None = None,
    entity_id: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    limit: Limit = 100,
    page_token: str | None = None,
    ws: Workspace = Depends(viewer),
) -> Page[AuditRecord]:
    return ws.audit.list(
        entity_type=entity_type,
        entity_id=entity_id,
        actor=actor,
        action=action,
        limit=check_limit(limit),
        offset=decode_token(page_token),
    )


@router.get("/audit/verify", response_model=VerifyReport)
def verify_audit(ws: Workspace = Depends(admin)) -> VerifyReport:
    result = ws.audit.verify()
    return VerifyReport(**result.__dict__)


@router.post("/audit/verify", response_model=VerifyReport, responses=problems(422))
def verify_audit_against(checkpoint: Checkpoint, ws: Workspace = Depends(admin)) -> VerifyReport:
    """Verify the chain and that it still holds a signed checkpoint's record."""
    return VerifyReport(**ws.audit.verify(checkpoint).__dict__)


@router.post("/audit/checkpoint", response_model=Checkpoint, responses=problems(409, 422))
def audit_checkpoint(ws: Workspace = Depends(admin)) -> Checkpoint:
    """Sign the chain's end with the server's signing key; keep the answer elsewhere."""
    return ws.audit.checkpoint()


# --- scoped roles and alias policies --------------------------------------------------


Subject = Annotated[str, documented(SUBJECT_PATTERN, "user:NAME or group:NAME")]
Scope = Annotated[str, documented(SCOPE_PATTERN, "workspace, project:NAME or model:NAME")]
PolicyScope = Annotated[str, documented(POLICY_SCOPE, "model:NAME or project:NAME")]
PolicyName = Annotated[str, documented(POLICY_NAME, "up to 128 letters, digits, '.', '_', '-'")]
AliasPattern = Annotated[str, documented(ALIAS_PATTERN, "an alias name or fnmatch pattern")]


class BindingCreate(BaseModel):
    subject: Subject = Field(examples=["user:alice"])
    role: Role
    scope: Scope = "workspace"


class PolicySet(BaseModel):
    scope: PolicyScope = Field(examples=["model:fraud"])
    aliases: list[AliasPattern] = Field(
        default_factory=lambda: ["champion"], min_length=1, max_length=100
    )
    role: Role = Role.deployer
    approvals: Annotated[int, Field(ge=0, le=MAX_APPROVALS), NotABoolean] = 1
    gates: StrictBool = False


@router.get("/roles", response_model=list[RoleBinding])
def list_bindings(
    subject: Subject | None = None, scope: Scope | None = None, ws: Workspace = Depends(viewer)
) -> list[RoleBinding]:
    """Role bindings, optionally of one subject or on one scope."""
    return ws.access.list(subject=subject, scope=scope)


@router.post(
    "/roles", status_code=201, response_model=RoleBinding, responses=problems(403, 404, 409)
)
def bind_role(body: BindingCreate, ws: Workspace = Depends(member)) -> RoleBinding:
    """Grant a role on a scope (admins of that scope)."""
    return ws.access.bind(body.subject, body.role, body.scope)


@router.delete("/roles/{binding_id}", response_model=RoleBinding, responses=problems(403, 404))
def unbind_role(binding_id: str, ws: Workspace = Depends(member)) -> RoleBinding:
    return ws.access.unbind(binding_id)


@router.get("/policies", response_model=list[AliasPolicy])
def list_policies(scope: Scope | None = None, ws: Workspace = Depends(viewer)) -> list[AliasPolicy]:
    return ws.policies.list(scope=scope)


@router.get("/policies/{name}", response_model=AliasPolicy, responses=problems(404))
def get_policy(name: PolicyName, ws: Workspace = Depends(viewer)) -> AliasPolicy:
    return ws.policies.get(name)


@router.put("/policies/{name}", response_model=AliasPolicy, responses=problems(403))
def set_policy(name: PolicyName, body: PolicySet, ws: Workspace = Depends(member)) -> AliasPolicy:
    """Create or replace an alias policy (admins of its scope)."""
    return ws.policies.set(
        name,
        body.scope,
        aliases=body.aliases,
        role=body.role,
        approvals=body.approvals,
        gates=body.gates,
    )


@router.delete("/policies/{name}", status_code=204, responses=problems(403, 404))
def delete_policy(name: PolicyName, ws: Workspace = Depends(member)) -> None:
    ws.policies.delete(name)
