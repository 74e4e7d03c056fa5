"""RFC 9457 problem+json for every error the API returns; never a stack trace."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

try:
    from fastapi.routing import iter_route_contexts
except ImportError:  # FastAPI before 0.160: included routes are flat in app.routes
    iter_route_contexts = None  # type: ignore[assignment]

from modelyard.errors import ModelyardError

log = logging.getLogger("modelyard.api")

PROBLEM = "application/problem+json"


def problem_response(status: int, title: str, detail: str, **extra: Any) -> Response:
    body = {
        "type": f"https://modelyard.dev/problems/{title.lower().replace(' ', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    return Response(orjson.dumps(body, default=str), status_code=status, media_type=PROBLEM)


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if p != "body") or "body"


async def _modelyard_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelyardError)
    if exc.status >= 500:
        log.error("%s: %s", exc.title, exc.detail)
    return problem_response(exc.status, exc.title, exc.detail, **exc.extra)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        first = next(e for e in errors if e.get("type") == "json_invalid")
        reason = (first.get("ctx") or {}).get("error", "")
        return problem_response(
            400,
            "Bad request",
            f"the body is not valid JSON ({reason}); send a JSON object in UTF-8",
        )
    fields = [
        # A check's own message says what to fix; pydantic puts "Value error, " before it.
        {"field": _location(e["loc"]), "message": e["msg"].removeprefix("Value error, ")}
        for e in errors
    ]
    detail = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return problem_response(422, "Invalid input", detail, errors=fields)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on the request's path.

    Starlette's own ``Allow`` names only the first route that matched the path, and routes
    are one per method here (``GET /models/{name}``, ``PATCH /models/{name}``...).
    """
    root = request.scope.get("root_path", "")
    path = request.scope["path"].removeprefix(root) if root else request.scope["path"]
    routes: Any = request.app.routes
    if iter_route_contexts is not None:  # FastAPI >= 0.160 nests included routers
        routes = iter_route_contexts(routes)
    methods: set[str] = set()
    for route in routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        detail = f"no such endpoint {request.method} {request.url.path}; see /docs for the API"
    elif exc.status_code == 405:
        allowed = _allowed_methods(request)
        headers["Allow"] = ", ".join(allowed)
        detail = (
            f"{request.method} is not allowed on {request.url.path}; "
            f"use {', '.join(allowed) or 'another path'}"
        )
    elif exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        detail = "the body could not be read as JSON; send a JSON object encoded in UTF-8"
    else:
        detail = str(exc.detail)
    titles = {
        400: "Bad request",
        401: "Unauthenticated",
        404: "Not found",
        405: "Method not allowed",
    }
    response = problem_response(exc.status_code, titles.get(exc.status_code, "Error"), detail)
    response.headers.update(headers)
    return response


async def _client_disconnected(request: Request, exc: Exception) -> Response:
    # Not a server fault (an upload cancelled, a network cut): one line, no traceback. The
    # answer goes nowhere; it only ends the request.
    log.info("client disconnected during %s %s", request.method, request.url.path)
    return problem_response(
        400, "Client disconnected", "the client closed the connection before the request ended"
    )


async def _unexpected(_: Request, exc: Exception) -> Response:
    incident = uuid.uuid4().hex[:12]
    log.exception("unexpected error, incident %s", incident, exc_info=exc)
    return problem_response(
        500,
        "Internal error",
        f"the server failed unexpectedly (incident {incident}); the server log has the details",
        incident=incident,
    )


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into problem+json."""
    app.add_exception_handler(ModelyardError, _modelyard_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
    app.add_exception_handler(Exception, _unexpected)
