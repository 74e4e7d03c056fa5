"""Who is looking at the dashboard, and whether a form really came from it.

- **Session.** With auth on, a user signs in with an API token (or an OIDC JWT); the token is
  kept in a cookie the page's scripts cannot read (``HttpOnly``), sent only to ``/ui``, never
  on a request started by another site (``SameSite=Strict``), and only over HTTPS
  (``Secure``) unless the dashboard is on a loopback address, where browsers keep a secure
  cookie on plain HTTP too. Each request checks the token as the API does (its cache, its
  expiry, a revocation), so signing a token out of the API signs it out here.
- **CSRF.** Every state change is a POST carrying a token equal to the ``modelyard_csrf``
  cookie (double submit: another site can neither read that cookie nor set it for this host),
  and a POST whose ``Origin`` names another host is refused before that.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request
from starlette.responses import Response

from modelyard.api.deps import token_cache
from modelyard.errors import Forbidden, ModelyardError, Unauthenticated
from modelyard.governance import LOCAL_USER, Identity
from modelyard.governance.entities import Permission
from modelyard.workspace import Workspace

SESSION_COOKIE = "modelyard_session"
CSRF_COOKIE = "modelyard_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
COOKIE_PATH = "/ui"
#: How long a sign-in lasts in the browser; the token's own expiry still applies.
SESSION_SECONDS = 12 * 3600


@dataclass(frozen=True)
class Viewer:
    """The identity a page is rendered for and the workspace acting as it."""

    identity: Identity
    ws: Workspace
    signed_in: bool  # False with auth off: there is nobody to sign out

    def can(self, permission: str) -> bool:
        """Whether the identity's workspace role grants ``permission`` (read, write,
        deploy, approve, admin). Only decides what the page offers: the services check
        every action again, bindings on models and projects included."""
        return self.identity.role.grants(Permission(permission))


class LoginRequired(ModelyardError):
    """No valid session: the page sends the browser to the sign-in form, which says why by
    :data:`SIGN_IN_REASONS` (a code in the address, never text a link could make it show)."""

    status = 401
    title = "Sign-in required"

    def __init__(self, reason: str) -> None:
        super().__init__(SIGN_IN_REASONS[reason])
        self.reason = reason


SIGN_IN_REASONS = {
    "signin": "Sign in with an API token to see this page.",
    "ended": "Your session ended (the token was revoked or expired, or its user disabled): "
    "sign in again.",
}


async def viewer(request: Request) -> Viewer:
    """The request's :class:`Viewer`; :class:`LoginRequired` when auth is on and the session
    cookie is missing or no longer valid."""
    ws: Workspace = request.app.state.workspace
    if not ws.settings.auth:
        return Viewer(LOCAL_USER, ws.as_identity(LOCAL_USER), signed_in=False)
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        raise LoginRequired("signin")
    try:
        who = await identify(request, ws, secret)
    except (Unauthenticated, Forbidden):
        raise LoginRequired("ended") from None
    return Viewer(who, ws.as_identity(who), signed_in=True)


async def identify(request: Request, ws: Workspace, secret: str) -> Identity:
    """The identity behind a token or JWT, as the API would take it; the dashboard refuses
    tokens limited to endpoints (they may only predict)."""
    try:
        raw = f"Bearer {secret.strip()}".encode("latin-1")
    except UnicodeEncodeError:
        raise Unauthenticated("that is not a modelyard token") from None
    who = await token_cache(request, ws).identify(raw)
    who.require_unlimited("the dashboard")
    return who


def set_session(request: Request, response: Response, secret: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=SESSION_SECONDS,
        path=COOKIE_PATH,
        httponly=True,
        secure=_secure(request),
        # Lax: a link to a page from a chat or a mail opens it signed in; forms are guarded
        # by the CSRF token and the Origin check, not by the cookie's SameSite
        samesite="lax",
    )


def clear_session(request: Request, response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path=COOKIE_PATH, httponly=True, secure=_secure(request), samesite="lax"
    )


def csrf_token(request: Request) -> str:
    """The CSRF token for forms on this page: the browser's, or a new one that
    :func:`keep_csrf` sets with the response."""
    token = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "csrf", None)
    if not token:
        token = request.state.csrf = secrets.token_urlsafe(24)
    return str(token)


def keep_csrf(request: Request, response: Response) -> None:
    """Set the CSRF cookie if this request made a new token."""
    token = getattr(request.state, "csrf", None)
    if token and not request.cookies.get(CSRF_COOKIE):
        response.set_cookie(
            CSRF_COOKIE,
            token,
            path=COOKIE_PATH,
            httponly=True,
            secure=_secure(request),
            samesite="strict",
        )


async def check_csrf(request: Request) -> None:
    """:class:`Forbidden` unless this POST came from a dashboard page."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden(f"this form was sent from {origin}, not from the dashboard")
    expected = request.cookies.get(CSRF_COOKIE)
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    # as bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500)
    if not expected or not sent or not hmac.compare_digest(_utf8(expected), _utf8(sent)):
        raise Forbidden("this form has expired: reload the page and try again")


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _secure(request: Request) -> bool:
    if request.url.scheme == "https":
        return True
    host = request.url.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
