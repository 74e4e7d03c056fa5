"""The control-plane application: every domain's router under ``/api/v1``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from modelyard import __version__
from modelyard.api import (
    artifacts,
    governance,
    keys,
    limits,
    monitoring,
    pipelines,
    problems,
    projects,
    registry,
    rollouts,
    serving,
    tracking,
)
from modelyard.api.responses import ApiJSONResponse, install_openapi
from modelyard.config import Settings
from modelyard.workspace import Workspace

API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None, workspace: Workspace | None = None) -> FastAPI:
    """Build the API over ``workspace`` (or one opened from ``settings`` at start-up)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = workspace is None
        app.state.workspace = workspace or Workspace.open(settings)
        try:
            yield
        finally:
            if owned:
                app.state.workspace.close()

    app = FastAPI(
        title="modelyard",
        version=__version__,
        description="Registry, tracking and governance for machine-learning models.",
        lifespan=lifespan,
        default_response_class=ApiJSONResponse,
    )
    if workspace is not None:  # usable before start-up too (tests, in-process mounting)
        app.state.workspace = workspace
    problems.install(app)
    install_openapi(app, auth=(workspace.settings if workspace else settings or Settings()).auth)

    api = APIRouter(prefix=API_PREFIX)

    @api.get("/health", tags=["meta"])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    for module in (
        registry,
        artifacts,
        tracking,
        projects,
        serving,
        rollouts,
        monitoring,
        pipelines,
        governance,
        keys,
        limits,
    ):
        api.include_router(module.router)
    app.include_router(api)
    from modelyard.api.mlflow import install as install_mlflow

    install_mlflow(app)
    from modelyard.ui.app import install as install_ui

    install_ui(app)
    return app


def app_factory() -> FastAPI:
    """Entry point for ``uvicorn --factory`` (settings from the environment)."""
    return create_app(Settings())
