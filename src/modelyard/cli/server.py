"""``modelyard server`` and ``modelyard serve``: the processes that answer HTTP.

Kept free of heavy imports: what a command needs is imported when it runs, so that a
server's cold start pays only for what it serves.
"""

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


def serve(
    host: str = typer.Option(None, help="interface to bind (default MODELYARD_HOST or 127.0.0.1)"),
    port: int = typer.Option(None, help="port (default MODELYARD_PORT or 8080)"),
    workers: int = typer.Option(0, help="gateway processes; 0 means one per core", min=0),
    data_plane_only: bool = typer.Option(
        False, "--data-plane-only", help="serve predictions only, without the /api/v1 API"
    ),
    log_level: str = typer.Option("warning", help="uvicorn log level"),
) -> None:
    """Serve every endpoint over OIP v2 (/v2/models/NAME/infer) and MLflow's /invocations."""
    from modelyard.server import run

    settings = Settings()
    run(
        settings,
        host or settings.host,
        port or settings.port,
        role="gateway" if data_plane_only else "both",
        workers=workers,
        log_level=log_level,
    )
