"""The dashboard under ``/ui``: page routers, static files, sign-in, and HTML errors.

Every page is a route of :data:`router` (each page module adds its own), rendered on the
server from the domain services as the signed-in identity. Nothing here is in the OpenAPI
schema: the API is ``/api/v1``; these pages are for people.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.responses import RedirectResponse, Response

from modelyard.errors import ModelyardError, Unauthenticated
from modelyard.ui import auth
from modelyard.ui.auth import LoginRequired, Viewer, viewer
from modelyard.ui.templating import render

PREFIX = "/ui"
STATIC = Path(__file__).parent / "static"


class UiRoute(APIRoute):
    """A page route: errors become HTML pages (never JSON or a stack trace), a missing
    session sends the browser to the sign-in form, and every POST is CSRF-checked first."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                if request.method == "POST":
                    await auth.check_csrf(request)
                return await handler(request)
            except LoginRequired as exc:
                return _to_login(request, exc.detail)
            except ModelyardError as exc:
                return _error(request, exc.status, exc.title, exc.detail)
            except RequestValidationError as exc:
                detail = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors()
                )
                return _error(request, 400, "Bad request", detail)

        return page


router = APIRouter(prefix=PREFIX, route_class=UiRoute, include_in_schema=False)


@router.get("/login")
def login_form(request: Request, next: str = PREFIX, reason: str = "") -> Response:
    ws = request.app.state.workspace
    if not ws.settings.auth:
        return RedirectResponse(_local(next), status_code=303)
    return render(request, None, "login.html", next=_local(next), reason=reason)


@router.post("/login")
async def login(request: Request, token: str = Form(""), next: str = Form(PREFIX)) -> Response:
    ws = request.app.state.workspace
    if not ws.settings.auth:
        return RedirectResponse(_local(next), status_code=303)
    try:
        if not token.strip():
            raise Unauthenticated("paste an API token (modelyard tokens create) to sign in")
        await auth.identify(request, ws, token)
    except ModelyardError as exc:
        return render(request, None, "login.html", status=401, next=_local(next), reason=exc.detail)
    response = RedirectResponse(_local(next), status_code=303)
    auth.set_session(request, response, token.strip())
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    auth.clear_session(request, response)
    return response


def install(app: FastAPI) -> None:
    """Serve the dashboard from ``app``: pages under ``/ui``, static files, HTML 404s."""
    from modelyard.ui.pages import ROUTERS

    for page_router in ROUTERS:
        router.include_router(page_router)

    @router.get("/{path:path}")
    async def not_found(request: Request, path: str, who: Viewer = Depends(viewer)) -> Response:
        return _error(request, 404, "Not found", f"there is no page /ui/{path}", who)

    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="ui-static")
    app.include_router(router)


def _error(
    request: Request, status: int, title: str, detail: str, who: Viewer | None = None
) -> Response:
    headers = {}
    if request.headers.get("hx-request"):
        # htmx swaps only 2xx answers by default: show the message in the page's error area
        headers = {"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"}
    return render(
        request, who, "error.html", status=status, headers=headers, title=title, detail=detail
    )


def _to_login(request: Request, reason: str) -> Response:
    target = f"{PREFIX}/login?next={quote(_local(str(request.url.path)))}&reason={quote(reason)}"
    if request.headers.get("hx-request"):
        return Response(status_code=401, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def _local(path: str) -> str:
    """``path`` if it is a dashboard page, else the home page (no open redirect)."""
    if path.startswith(PREFIX) and not path.startswith("//") and "\\" not in path:
        return path
    return PREFIX
