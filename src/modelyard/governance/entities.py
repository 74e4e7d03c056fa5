"""What governance hands out: identities, tokens, audit records."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from modelyard.errors import Forbidden


class Permission(StrEnum):
    """What a role grants: read, change, move protected aliases, approve, administer."""

    read = "read"
    write = "write"
    deploy = "deploy"
    approve = "approve"
    admin = "admin"


class Role(StrEnum):
    """A named set of permissions, held on the workspace (a user's role) or bound on a
    project or a model (see governance/access.py). ``reader`` is accepted for ``viewer``."""

    viewer = "viewer"
    editor = "editor"
    approver = "approver"
    deployer = "deployer"
    admin = "admin"

    @classmethod
    def _missing_(cls, value: object) -> Role | None:
        return cls.viewer if value == "reader" else None

    @property
    def permissions(self) -> frozenset[Permission]:
        return ROLE_PERMISSIONS[self]

    def grants(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self]

    def allows(self, needed: Role) -> bool:
        """Whether this role holds every permission of ``needed``."""
        return ROLE_PERMISSIONS[needed] <= ROLE_PERMISSIONS[self]


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.viewer: frozenset({Permission.read}),
    Role.editor: frozenset({Permission.read, Permission.write}),
    Role.approver: frozenset({Permission.read, Permission.approve}),
    Role.deployer: frozenset({Permission.read, Permission.write, Permission.deploy}),
    Role.admin: frozenset(Permission),
}


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
    #: Groups the identity belongs to (from an OIDC token's groups claim); role bindings
    #: on a group apply to its members.
    groups: list[str] = []
    #: The API token presented (its id), for per-token limits; None: none (auth off, OIDC).
    #: Not part of the identity as shown (``/whoami``): the caller knows their token.
    token_id: str | None = Field(default=None, exclude=True)

    def may_predict(self, endpoint: str) -> bool:
        return self.endpoints is None or endpoint in self.endpoints

    def require_predict(self, endpoint: str) -> None:
        """:class:`Forbidden` unless this identity may predict on ``endpoint``."""
        if self.endpoints is not None and endpoint not in self.endpoints:
            raise Forbidden(
                f"this token of {self.name} may predict on {', '.join(self.endpoints)} only, "
                f"not on {endpoint!r}; use a token created with --endpoint {endpoint}"
            )

    def require_unlimited(self, what: str, hint: str = "") -> None:
        """A token limited to endpoints may only predict: :class:`Forbidden` when this one
        asks for anything else (``what``, as the message names it; ``hint``: another way)."""
        if self.endpoints is not None:
            raise Forbidden(
                f"this token of {self.name} may only predict (on {', '.join(self.endpoints)}); "
                f"{what} needs a token created without --endpoint" + (f" ({hint})" if hint else "")
            )


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
