"""MLflow's REST API, answered by modelyard's own domains: MLflow's client works unchanged.

``mlflow.set_tracking_uri("http://127.0.0.1:8080")`` and the client's calls land here:
tracking (``/api/2.0/mlflow/experiments``, ``runs``, ``metrics``), the model registry
(``registered-models``, ``model-versions``), MLflow 3's logged models, and the artifact
proxy (``/api/2.0/mlflow-artifacts/artifacts``). Each route translates MLflow's request into
a call on a domain service and the answer back into MLflow's JSON; nothing is stored twice.
docs/mlflow.md says what maps how, and what does not.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request, Response

#: Where MLflow's client sends its REST calls (the UI's ``ajax-api`` mirrors it).
PREFIXES = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")
#: Where MLflow's client sends artifact uploads and downloads (``mlflow-artifacts:/`` URIs).
ARTIFACTS_PREFIX = "/api/2.0/mlflow-artifacts"


def install(app: FastAPI) -> None:
    """Mount MLflow's REST API on ``app`` (left out of modelyard's OpenAPI document)."""
    from modelyard.api.mlflow import artifacts, logged_models, registry, tracking

    for prefix in PREFIXES:
        api = APIRouter(prefix=prefix, include_in_schema=False)
        for module in (tracking, registry, logged_models):
            api.include_router(module.router)
        api.add_api_route("/{rest:path}", _not_served, methods=_METHODS)
        app.include_router(api)
    app.include_router(artifacts.router, prefix=ARTIFACTS_PREFIX, include_in_schema=False)


_METHODS = ["GET", "POST", "PATCH", "PUT", "DELETE"]


async def _not_served(request: Request) -> Response:
    """Any other MLflow route, in MLflow's form: its client then says which call failed,
    where a problem+json 404 would reach the user as an internal error."""
    from modelyard.api.mlflow.protocol import ENDPOINT_NOT_FOUND, error_response

    return error_response(
        ENDPOINT_NOT_FOUND,
        f"modelyard does not serve MLflow's {request.method} {request.url.path}; "
        "docs/mlflow.md lists the MLflow routes it serves",
    )
