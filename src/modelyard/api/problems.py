"""RFC 9457 problem+json for every error the API returns; never a stack trace."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

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
            400, "Bad request", f"the body is not valid JSON ({reason}); send a JSON object"
        )
    fields = [{"field": _location(e["loc"]), "message": e["msg"]} for e in errors]
    detail = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return problem_response(422, "Invalid input", detail, errors=fields)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        detail = f"no such endpoint {request.method} {request.url.path}; see /docs for the API"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    else:
        detail = str(exc.detail)
    titles = {404: "Not found", 405: "Method not allowed", 401: "Unauthenticated"}
    return problem_response(
        exc.status_code, titles.get(exc.status_code, "Error"), detail, headers=None
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
    app.add_exception_handler(Exception, _unexpected)
