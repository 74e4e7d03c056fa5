"""The dashboard under ``/ui``: page routers, static files, sign-in, and HTML errors.

Every page is a route of a page module's router (``pages.ROUTERS``; sign-in and sign-out are
:data:`session`'s), rendered on the server from the domain services as the signed-in
identity. Nothing here is in the OpenAPI schema: the API is ``/api/v1``; these pages are for
people.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response

from modelyard.errors import ModelyardError, Unauthenticated
from modelyard.ui import auth
from modelyard.ui.auth import Viewer, viewer
from modelyard.ui.routing import PREFIX, UiRoute, error_page, local_path, page_router
from modelyard.ui.templating import render

STATIC = Path(__file__).parent / "static"

session = page_router()


@session.get("/login")
def login_form(request: Request, next: str = PREFIX, reason: str = "") -> Response:
    ws = request.app.state.workspace
    if not ws.settings.auth:
        return RedirectResponse(local_path(next), status_code=303)
    shown = auth.SIGN_IN_REASONS.get(reason, "")  # a code: a link cannot put words here
    return render(request, None, "login.html", next=local_path(next), reason=shown)


@session.post("/login")
async def login(request: Request, token: str = Form(""), next: str = Form(PREFIX)) -> Response:
    ws = request.app.state.workspace
    if not ws.settings.auth:
        return RedirectResponse(local_path(next), status_code=303)
    try:
        if not token.strip():
            raise Unauthenticated("paste an API token (modelyard tokens create) to sign in")
        await auth.identify(request, ws, token)
    except ModelyardError as exc:
        return render(
            request, None, "login.html", status=401, next=local_path(next), reason=exc.detail
        )
    response = RedirectResponse(local_path(next), status_code=303)
    auth.set_session(request, response, token.strip())
    return response


@session.post("/logout")
def logout(request: Request) -> Response:
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    auth.clear_session(request, response)
    return response


async def not_found(request: Request, path: str, who: Viewer = Depends(viewer)) -> Response:
    return error_page(request, 404, "Not found", f"there is no page /ui/{path}", who)


def install(app: FastAPI) -> None:
    """Serve the dashboard from ``app``: pages under ``/ui``, static files, HTML 404s."""
    from modelyard.ui.pages import ROUTERS

    # A new router per app: the module-level routers are only read (an app built many times
    # in one process, as the tests do, must not pile routes onto a shared one).
    router = APIRouter(prefix=PREFIX, route_class=UiRoute, include_in_schema=False)
    for child in (session, *ROUTERS):
        router.include_router(child)
    router.add_api_route("/{path:path}", not_found, methods=["GET"])
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="ui-static")
    app.include_router(router)
    api_errors = app.exception_handlers[HTTPException]

    async def http_error(request: Request, exc: Exception) -> Response:
        """Under /ui, what routing refuses (a method, a static file, a form it cannot read)
        is a page too; elsewhere it is the API's problem+json."""
        if not request.url.path.startswith(f"{PREFIX}/") or not isinstance(exc, HTTPException):
            answer = api_errors(request, exc)
            return await answer if inspect.isawaitable(answer) else answer
        detail = {
            404: f"there is no page {request.url.path}",
            405: f"{request.method} is not how {request.url.path} is used: open it as a page",
        }.get(exc.status_code, str(exc.detail))
        response = error_page(request, exc.status_code, "Not a page here", detail)
        if exc.status_code == 405:
            response.headers["allow"] = "GET"
        return response

    app.add_exception_handler(HTTPException, http_error)
