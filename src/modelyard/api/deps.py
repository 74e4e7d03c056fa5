"""Request dependencies: who is calling, and the workspace acting as them.

They are ``async`` on purpose: FastAPI runs every synchronous dependency in its thread pool,
and three thread hops per request cost more than the endpoint's own work on fast routes.
Only a token lookup (auth on, token not cached) goes to a thread, as it reads the database.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends, Request

from modelyard.errors import Forbidden
from modelyard.governance import LOCAL_USER, Identity, Role, TokenCache
from modelyard.workspace import Workspace


async def workspace(request: Request) -> Workspace:
    ws: Workspace = request.app.state.workspace
    return ws


async def identity(request: Request, ws: Workspace = Depends(workspace)) -> Identity:
    """The caller: the bearer token's user, or the local user when auth is off."""
    if not ws.settings.auth:
        return LOCAL_USER
    header = request.headers.get("authorization")  # Starlette's str holds latin-1 bytes
    return await token_cache(request, ws).identify(
        None if header is None else header.encode("latin-1")
    )


def token_cache(request: Request, ws: Workspace) -> TokenCache:
    """The application's cache of verified tokens (API tokens and OIDC JWTs), made on first
    use; the dashboard's session cookie is checked through it too."""
    state = request.app.state
    tokens: TokenCache | None = getattr(state, "tokens", None)
    if tokens is None or tokens.identities is not ws.identities:
        from modelyard.governance.oidc import OidcVerifier

        settings = ws.settings
        oidc = OidcVerifier.from_settings(settings)
        tokens = state.tokens = TokenCache(ws.identities, settings.token_cache_seconds, oidc=oidc)
    return tokens


def requires(role: Role) -> Callable[..., Awaitable[Workspace]]:
    """A dependency giving the workspace as the caller, if their workspace role allows
    ``role``. Routes on a model or project ask for :data:`member` instead: the domain service
    checks the permission on that resource (roles bound there count)."""

    async def dependency(
        ws: Workspace = Depends(workspace), who: Identity = Depends(identity)
    ) -> Workspace:
        who.require_unlimited("the HTTP API")
        if not who.role.allows(role):
            raise Forbidden(f"{who.name} has role {who.role.value}; this needs {role.value}")
        return ws.as_identity(who)

    return dependency


viewer = requires(Role.viewer)
editor = requires(Role.editor)
admin = requires(Role.admin)
#: Any user; the domain service decides on the resource (governance/access.py).
member = viewer
