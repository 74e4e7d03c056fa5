"""MLflow's wire conventions: its error form, and the route class that speaks it.

MLflow's client reads ``{"error_code": ..., "message": ...}`` and decides on the code (a
``RESOURCE_DOES_NOT_EXIST`` from ``get-by-name`` means "no such experiment", not a failure),
so every error under an MLflow route is answered in that form with MLflow's status for it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from modelyard.api.requests import ApiRoute
from modelyard.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Forbidden,
    InvalidInput,
    ModelyardError,
    NotFound,
    PayloadTooLarge,
    Unauthenticated,
)

log = logging.getLogger("modelyard.api.mlflow")

RESOURCE_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
RESOURCE_ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"
INVALID_PARAMETER_VALUE = "INVALID_PARAMETER_VALUE"
INVALID_STATE = "INVALID_STATE"
PERMISSION_DENIED = "PERMISSION_DENIED"
UNAUTHENTICATED = "UNAUTHENTICATED"
INTERNAL_ERROR = "INTERNAL_ERROR"
ENDPOINT_NOT_FOUND = "ENDPOINT_NOT_FOUND"

#: MLflow's HTTP status for each error code (mlflow/protos/databricks.proto, as its server).
STATUS = {
    RESOURCE_DOES_NOT_EXIST: 404,
    RESOURCE_ALREADY_EXISTS: 400,
    INVALID_PARAMETER_VALUE: 400,
    INVALID_STATE: 400,
    PERMISSION_DENIED: 403,
    UNAUTHENTICATED: 401,
    INTERNAL_ERROR: 500,
    ENDPOINT_NOT_FOUND: 404,
}


class MlflowError(ModelyardError):
    """An error MLflow's client should see with a given ``error_code``."""

    def __init__(self, error_code: str, detail: str) -> None:
        super().__init__(detail)
        self.error_code = error_code
        self.status = STATUS.get(error_code, 400)


def error_code(exc: ModelyardError) -> str:
    """MLflow's code for one of modelyard's errors."""
    if isinstance(exc, MlflowError):
        return exc.error_code
    if isinstance(exc, NotFound):
        return RESOURCE_DOES_NOT_EXIST
    if isinstance(exc, AlreadyExists):
        return RESOURCE_ALREADY_EXISTS
    if isinstance(exc, Conflict):
        return INVALID_STATE
    if isinstance(exc, (InvalidInput, BadRequest, PayloadTooLarge)):
        return INVALID_PARAMETER_VALUE
    if isinstance(exc, Unauthenticated):
        return UNAUTHENTICATED
    if isinstance(exc, Forbidden) or exc.status == 403:
        return PERMISSION_DENIED
    if exc.status < 500:
        return INVALID_PARAMETER_VALUE
    return INTERNAL_ERROR


def error_response(code: str, message: str, status: int | None = None) -> Response:
    body = orjson.dumps({"error_code": code, "message": message})
    return Response(
        body, status_code=status or STATUS.get(code, 400), media_type="application/json"
    )


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "")
            return f"the body is not valid JSON ({reason}); send a JSON object in UTF-8"
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query"))
        parts.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request is not valid"


class MlflowRoute(ApiRoute):
    """A route that answers every error in MLflow's form, never with a stack trace."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await handle(request)
            except ModelyardError as exc:
                if exc.status >= 500:
                    log.error("%s: %s", exc.title, exc.detail)
                code = error_code(exc)
                # MLflow's client retries 429 and 503 with backoff: keep them as they are
                retry = exc.status if exc.status in (429, 503) else None
                return error_response(code, exc.detail, retry)
            except RequestValidationError as exc:
                return error_response(INVALID_PARAMETER_VALUE, _validation_message(exc))
            except HTTPException as exc:
                code = (
                    RESOURCE_DOES_NOT_EXIST if exc.status_code == 404 else INVALID_PARAMETER_VALUE
                )
                return error_response(code, str(exc.detail), exc.status_code)
            except ClientDisconnect:  # not a fault: the app's handler ends it quietly
                raise
            except Exception:  # a bug: its trace goes to the log, the client gets an incident
                incident = uuid.uuid4().hex[:12]
                log.exception("unexpected error, incident %s", incident)
                return error_response(
                    INTERNAL_ERROR,
                    f"the server failed unexpectedly (incident {incident}); its log says why",
                )

        return handler


# -- where artifacts live, as MLflow's client sees them ------------------------------------
# The proxy (``/api/2.0/mlflow-artifacts/artifacts/<path>``) maps these paths onto the files
# of runs, of logged models and of registered versions; the layout is MLflow's own, so
# paths copied from an MLflow server's UI read the same.


def run_artifact_uri(experiment_id: str, run_id: str) -> str:
    """A run's ``artifact_uri``: uploads under it go through modelyard to the run's files."""
    return f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts"


def logged_model_uri(experiment_id: str, model_id: str) -> str:
    """A logged model's ``artifact_location`` (MLflow 3)."""
    return f"mlflow-artifacts:/{experiment_id}/models/{model_id}/artifacts"


def version_download_uri(name: str, version: int) -> str:
    """Where a registered version's files are read (``get-download-uri``)."""
    return f"mlflow-artifacts:/registry/{name}/{version}"
