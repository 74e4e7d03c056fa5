"""Request dependencies: who is calling, and the workspace acting as them.

They are ``async`` on purpose: FastAPI runs every synchronous dependency in its thread pool,
and three thread hops per request cost more than the endpoint's own work on fast routes.
Only a token lookup (auth on) goes to a thread, as it reads the database.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from modelyard.errors import Forbidden, Unauthenticated
from modelyard.governance import LOCAL_USER, Identity, Role
from modelyard.workspace import Workspace


async def workspace(request: Request) -> Workspace:
    ws: Workspace = request.app.state.workspace
    return ws


async def identity(request: Request, ws: Workspace = Depends(workspace)) -> Identity:
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
    found: Identity = await run_in_threadpool(ws.identities.authenticate, secret.strip())
    return found


def requires(role: Role) -> Callable[..., Awaitable[Workspace]]:
    """A dependency giving the workspace as the caller, if their role allows ``role``."""

    async def dependency(
        ws: Workspace = Depends(workspace), who: Identity = Depends(identity)
    ) -> Workspace:
        if who.endpoints is not None:
            raise Forbidden(
                f"this token of {who.name} may only predict (on {', '.join(who.endpoints)}); "
                "the HTTP API needs a token created without --endpoint"
            )
        if not who.role.allows(role):
            raise Forbidden(f"{who.name} has role {who.role.value}; this needs {role.value}")
        return ws.as_actor(who.name)

    return dependency


viewer = requires(Role.viewer)
editor = requires(Role.editor)
admin = requires(Role.admin)
