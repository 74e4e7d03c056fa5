"""``modelyard server``: the control-plane HTTP API."""

from __future__ import annotations

import typer

from modelyard.config import Settings


def server(
    host: str = typer.Option(None, help="interface to bind (default MODELYARD_HOST or 127.0.0.1)"),
    port: int = typer.Option(None, help="port (default MODELYARD_PORT or 8080)"),
    workers: int = typer.Option(0, help="worker processes; 0 means one per core", min=0),
    log_level: str = typer.Option("warning", help="uvicorn log level"),
) -> None:
    """Start the control-plane API (OpenAPI at /docs, API under /api/v1)."""
    from modelyard.server import run

    settings = Settings()
    run(
        settings,
        host or settings.host,
        port or settings.port,
        role="control",
        workers=workers,
        log_level=log_level,
    )
