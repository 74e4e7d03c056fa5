"""``modelyard server`` and ``modelyard serve``: the processes that answer HTTP.

Kept free of heavy imports: what a command needs is imported when it runs, so that a
server's cold start pays only for what it serves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from modelyard.config import Settings

if TYPE_CHECKING:
    from modelyard.server import Role

TRUST_PICKLED = typer.Option(
    False,
    "--trust-pickled",
    help="load pickle-based models (python_function, custom scikit-learn types), which runs "
    "their code: only if you trust everyone who can register a model "
    "(same as MODELYARD_TRUST_PICKLED_MODELS=true)",
)


def server(
    host: str = typer.Option(None, help="interface to bind (default MODELYARD_HOST or 127.0.0.1)"),
    port: int = typer.Option(None, help="port (default MODELYARD_PORT or 8080)", min=1, max=65535),
    workers: int = typer.Option(0, help="worker processes; 0 means one per core", min=0),
    log_level: str = typer.Option("warning", help="uvicorn log level"),
    trust_pickled: bool = TRUST_PICKLED,
) -> None:
    """Start the control-plane API (under /api/v1, OpenAPI at /docs) and the dashboard (/ui)."""
    _run("control", host, port, workers, log_level, trust_pickled)


def serve(
    host: str = typer.Option(None, help="interface to bind (default MODELYARD_HOST or 127.0.0.1)"),
    port: int = typer.Option(None, help="port (default MODELYARD_PORT or 8080)", min=1, max=65535),
    workers: int = typer.Option(0, help="gateway processes; 0 means one per core", min=0),
    data_plane_only: bool = typer.Option(
        False, "--data-plane-only", help="serve predictions only, without the /api/v1 API"
    ),
    log_level: str = typer.Option("warning", help="uvicorn log level"),
    trust_pickled: bool = TRUST_PICKLED,
    metrics_address: str = typer.Option(
        None,
        "--metrics-address",
        help="HOST:PORT where GET /metrics is also served, without a token, for Prometheus "
        "(default MODELYARD_METRICS_ADDRESS; keep it off public networks)",
    ),
) -> None:
    """Serve every endpoint (OIP v2, MLflow's /invocations), the API and the dashboard (/ui)."""
    role: Role = "gateway" if data_plane_only else "both"
    _run(role, host, port, workers, log_level, trust_pickled, metrics_address)


def _run(
    role: Role,
    host: str | None,
    port: int | None,
    workers: int,
    log_level: str,
    trust_pickled: bool,
    metrics_address: str | None = None,
) -> None:
    from modelyard.server import ensure_free, run

    # Only an explicit flag overrides: without it MODELYARD_TRUST_PICKLED_MODELS decides.
    settings = Settings()
    if trust_pickled:
        settings = settings.model_copy(update={"trust_pickled_models": True})
    if metrics_address is not None:
        settings = settings.model_copy(update={"metrics_address": metrics_address})
    host, port = host or settings.host, port or settings.port
    if role != "gateway":
        ensure_free(host, port)  # a held port is an error, not a dashboard to open
        shown = f"[{host}]" if ":" in host else host
        typer.echo(f"modelyard: dashboard at http://{shown}:{port}/ui", err=True)
    run(settings, host, port, role=role, workers=workers, log_level=log_level)
