"""The API's responses: JSON bodies, and the problem documents each operation declares.

Every error is an RFC 9457 problem document (:mod:`modelyard.api.problems`). The OpenAPI
document says so for each operation, with the statuses it can answer, derived from the
operation's shape rather than listed by hand on a hundred routes:

- 401 and 403 on every operation but ``/health`` (a token is needed when auth is on);
- 422 where the operation takes parameters or a body (validation), and 400 where the body is
  JSON (malformed JSON);
- 404 where the path names something (``/models/{name}``);
- 409 on operations that change state (a name taken, an aliased version, an ended run);
- 5XX everywhere (a bug, a damaged blob, the database down).

A route adds what its shape does not show with ``responses=problems(...)``: a list that
names a project (404), an upload (413).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from modelyard import jsonio
from modelyard.api.problems import PROBLEM

#: Why each status is answered, as the OpenAPI document describes it.
PROBLEM_STATUSES: dict[int | str, str] = {
    400: "Bad request: the body is not valid JSON",
    401: "Unauthenticated: no token, or a wrong, revoked or expired one (auth on)",
    403: "Forbidden: the token's role or scope does not allow this",
    404: "Not found: a thing the request names does not exist",
    409: "Conflict: the change conflicts with the current state (a name taken, ...)",
    413: "Payload too large: over MODELYARD_MAX_UPLOAD_BYTES",
    422: "Invalid input: a value is out of range, of the wrong type, or inconsistent",
    "5XX": "Server error: a bug (see `incident` in the server log) or the store unavailable",
}
_STATE_CHANGING = frozenset({"post", "put", "patch", "delete"})
_UNAUTHENTICATED_PATHS = frozenset({"/api/v1/health"})


class FieldError(BaseModel):
    """One invalid field of a request."""

    field: str = Field(description="where: a dotted path such as items.0.label, or body")
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem document; ``detail`` says what to fix."""

    model_config = ConfigDict(extra="allow")  # extension members, by error

    type: str = Field(description="a URI naming the kind of problem")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    errors: list[FieldError] | None = Field(
        default=None, description="invalid fields (422 from request validation)"
    )
    incident: str | None = Field(default=None, description="500: the id in the server log")


class ApiJSONResponse(JSONResponse):
    """Standard JSON even for NaN and infinite metric values (see :mod:`modelyard.jsonio`)."""

    def render(self, content: Any) -> bytes:
        return jsonio.dumps(content)


class OctetStreamResponse(Response):
    """Raw bytes (as the OpenAPI document declares a route's answer)."""

    media_type = "application/octet-stream"


def problem(status: int | str) -> dict[str, Any]:
    """The OpenAPI response object of a problem answered with ``status``."""
    return {
        "description": PROBLEM_STATUSES[status],
        "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the problems its shape does not show (see the module)."""
    return {status: problem(status) for status in statuses}


def _derived(path: str, method: str, operation: dict[str, Any]) -> list[int | str]:
    statuses: list[int | str] = ["5XX"]
    if path not in _UNAUTHENTICATED_PATHS:
        statuses += [401, 403]
    parameters = operation.get("parameters", [])
    body = operation.get("requestBody")
    if parameters or body:
        statuses.append(422)
    if body and any(t.endswith("json") for t in body.get("content", {})):
        statuses.append(400)
    if any(p["in"] == "path" for p in parameters):
        statuses.append(404)
    if method in _STATE_CHANGING:
        statuses.append(409)
    return statuses


def _with_problems(doc: dict[str, Any], *, auth: bool) -> dict[str, Any]:
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schemas["Problem"].pop("$defs", {}))
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            # FastAPI's own 422 says application/json; ours are problem documents.
            if "HTTPValidationError" in str(responses.get("422", "")):
                del responses["422"]
            for status in _derived(path, method, operation):
                declared = problem(status)
                if method == "head":  # the same statuses, without a body
                    declared.pop("content")
                responses.setdefault(str(status), declared)
            operation["responses"] = dict(sorted(responses.items()))
            if auth and path not in _UNAUTHENTICATED_PATHS:
                operation["security"] = [{"bearer": []}]
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    if auth:
        doc["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "an API token"}
        }
    return doc


def install_openapi(app: FastAPI, *, auth: bool) -> None:
    """Make ``app``'s OpenAPI document declare its problem responses (and bearer auth)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        doc = generate()  # FastAPI's, cached until the routes change
        if "Problem" not in doc.get("components", {}).get("schemas", {}):
            _with_problems(doc, auth=auth)
        return doc

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
