"""Request dependencies: who is calling, and the workspace acting as them."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request

from modelyard.errors import Forbidden, Unauthenticated
from modelyard.governance import LOCAL_USER, Identity, Role
from modelyard.workspace import Workspace


def workspace(request: Request) -> Workspace:
    ws: Workspace = request.app.state.workspace
    return ws


def identity(request: Request, ws: Workspace = Depends(workspace)) -> Identity:
    """The caller: the bearer token's user, or the local user when auth is off."""
    if not ws.settings.auth:
        return LOCAL_USER
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret:
        raise Unauthenticated(
            "this server requires an API token: send 'Authorization: Bearer <token>' "
            "(set MODELYARD_TOKEN for the CLI and SDK)"
        )
    return ws.identities.authenticate(secret.strip())


def requires(role: Role) -> Callable[..., Workspace]:
    """A dependency giving the workspace as the caller, if their role allows ``role``."""

    def dependency(
        ws: Workspace = Depends(workspace), who: Identity = Depends(identity)
    ) -> Workspace:
        if not who.role.allows(role):
            raise Forbidden(f"{who.name} has role {who.role.value}; this needs {role.value}")
        return ws.as_actor(who.name)

    return dependency


viewer = requires(Role.viewer)
editor = requires(Role.editor)
admin = requires(Role.admin)
