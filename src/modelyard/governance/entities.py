"""What governance hands out: identities, tokens, audit records."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel


class Role(StrEnum):
    """What a user may do: viewers read, editors change, admins also manage users."""

    viewer = "viewer"
    editor = "editor"
    admin = "admin"

    def allows(self, needed: Role) -> bool:
        order = [Role.viewer, Role.editor, Role.admin]
        return order.index(self) >= order.index(needed)


class User(BaseModel):
    id: str
    name: str
    role: Role
    created_at: datetime
    disabled: bool = False


class Identity(BaseModel):
    """Who is calling, as established from a token (or the local single user)."""

    name: str
    role: Role
    #: The endpoints the token may predict on; None: every endpoint, and the HTTP API as
    #: the role allows. A token limited to endpoints may only predict (see docs/api.md).
    endpoints: list[str] | None = None

    def may_predict(self, endpoint: str) -> bool:
        return self.endpoints is None or endpoint in self.endpoints


class Token(BaseModel):
    id: str
    user: str
    name: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked: bool = False
    #: The endpoints it may predict on, and nothing else; None: not limited.
    endpoints: list[str] | None = None


class IssuedToken(Token):
    """A token just created; ``secret`` is shown this once and stored only hashed."""

    secret: str


class AuditRecord(BaseModel):
    seq: int
    id: str
    at: datetime
    actor: str
    action: str
    entity_type: str
    entity_id: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    hash: str
