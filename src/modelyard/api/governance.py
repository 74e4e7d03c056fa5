"""Governance routes: users, tokens, the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from modelyard.api.deps import admin, identity, viewer
from modelyard.api.requests import ApiRoute, documented
from modelyard.api.responses import problems
from modelyard.governance import AuditRecord, Identity, IssuedToken, Role, Token, User
from modelyard.governance.identity import ENDPOINT_NAME, MAX_TOKEN_DAYS, NAME
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
