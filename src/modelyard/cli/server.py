"""``modelyard server``: the control-plane HTTP API."""

from __future__ import annotations

import typer

from modelyard.config import Settings


def server(
    host: str = typer.Option(None, help="interface to bind (default MODELYARD_HOST or 127.0.0.1)"),
    port: int = typer.Option(None, help="port (default MODELYARD_PORT or 8080)"),
    workers: int = typer.Option(1, help="worker processes"),
    log_level: str = typer.Option("warning", help="uvicorn log level"),
) -> None:
    """Start the API server (OpenAPI at /docs, API under /api/v1)."""
    import uvicorn

    settings = Settings()
    # Migrate once here so workers do not race to create the schema.
    from modelyard.workspace import Workspace

    Workspace.open(settings).close()
    uvicorn.run(
        "modelyard.api.app:app_factory",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level=log_level,
        access_log=False,
    )
