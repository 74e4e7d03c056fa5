"""Page routes: errors as HTML pages, sign-in redirects, CSRF checks."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import RedirectResponse, Response

from modelyard.errors import ModelyardError
from modelyard.ui import auth
from modelyard.ui.auth import LoginRequired, Viewer
from modelyard.ui.templating import render

PREFIX = "/ui"
log = logging.getLogger("modelyard.ui")


def page_router() -> APIRouter:
    """A router for one area's pages (each page module's ``router``)."""
    return APIRouter(route_class=UiRoute)


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
                return _to_login(request, exc.reason)
            except ModelyardError as exc:
                return error_page(request, exc.status, exc.title, exc.detail)
            except RequestValidationError as exc:
                detail = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors()
                )
                return error_page(request, 400, "Bad request", detail)
            except (HTTPException, ClientDisconnect):
                raise
            except Exception:
                # a bug: logged with its trace for us, a page without it for the user
                incident = uuid.uuid4().hex[:12]
                log.exception("dashboard page %s failed (incident %s)", request.url.path, incident)
                return error_page(
                    request,
                    500,
                    "Internal error",
                    f"this page failed on the server (incident {incident} in its log); "
                    "reload it, and report the incident if it fails again",
                )

        return page


def error_page(
    request: Request, status: int, title: str, detail: str, who: Viewer | None = None
) -> Response:
    headers = {}
    if request.headers.get("hx-request"):
        # the message goes to the page's status area, not where the fragment would have gone
        headers = {"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"}
    return render(
        request, who, "error.html", status=status, headers=headers, title=title, detail=detail
    )


def _to_login(request: Request, reason: str) -> Response:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":  # after signing in, show the page the form was on
        here = request.headers.get("hx-current-url") or PREFIX
        here = urlsplit(here).path
    target = f"{PREFIX}/login?next={quote(local_path(here), safe='/')}&reason={quote(reason)}"
    if request.headers.get("hx-request"):
        return Response(status_code=401, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def local_path(path: str) -> str:
    """``path`` if it is a dashboard page, else the home page (no open redirect)."""
    if path.startswith(PREFIX) and not path.startswith("//") and "\\" not in path:
        return path
    return PREFIX
