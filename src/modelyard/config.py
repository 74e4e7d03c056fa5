"""Settings: the one place that reads the environment (``MODELYARD_*`` variables)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where modelyard keeps its state and how its server behaves.

    Every field can be set by an environment variable named ``MODELYARD_<FIELD>``.
    """

    model_config = SettingsConfigDict(env_prefix="MODELYARD_", extra="ignore")

    home: Path = Field(default=Path(".modelyard"), description="state directory")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default SQLite at <home>/modelyard.db"
    )
    artifact_root: str | None = Field(
        default=None, description="local path or s3://bucket/prefix; default <home>/artifacts"
    )
    auth: bool = Field(
        default=False,
        description="require API tokens; off means local single-user mode (everyone is admin)",
    )
    max_upload_bytes: int = Field(default=2 * 1024**3, description="largest artifact upload")
    trust_pickled_models: bool = Field(
        default=False,
        description="let the gateway load pickle-based (pyfunc) models; only if you trust "
        "everyone who can register a model",
    )
    gateway_memory_mb: int | None = Field(
        default=None, description="model pool budget; least recently used models are evicted"
    )
    gateway_refresh_seconds: float = Field(
        default=0.5, gt=0, description="how often the gateway checks for alias and endpoint changes"
    )
    prediction_log_queue_rows: int = Field(
        default=200_000, ge=1, description="rows the prediction log may hold before it drops"
    )
    prediction_log_segment_rows: int = Field(
        default=50_000, ge=1, description="rows per Parquet segment of the prediction log"
    )
    max_request_bytes: int = Field(
        default=8 * 1024**2, description="largest inference request body the gateway accepts"
    )
    gateway_max_queue: int = Field(
        default=1024,
        ge=1,
        description="requests that may wait for one model in a gateway worker; beyond, and "
        "when the expected wait is past the request's timeout, 503 with Retry-After at once",
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="time a client has to send a request's line and headers (a new "
        "connection: from connecting); past it, 408 and the connection is closed",
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="longest pause between two reads of a request body; past it, 408 and "
        "the connection is closed",
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="largest request line plus headers; larger, 431 and the connection is closed",
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="open connections per server worker; a connection beyond gets 503 with "
        "Retry-After and is closed",
    )
    token_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="with auth on, how long a server process (gateway worker or control "
        "plane) trusts a token it looked up: a token revoked, or a user disabled or changed, "
        "in another process keeps its old rights for at most this long; 0 looks every "
        "request up",
    )
    metrics_address: str | None = Field(
        default=None,
        description="HOST:PORT where `modelyard serve` also answers GET /metrics, without a "
        "token (for Prometheus; keep it off public networks); unset: /metrics only on the "
        "main port, behind a token when auth is on",
    )
    shutdown_grace_seconds: float = Field(
        default=60.0,
        gt=0,
        description="on SIGTERM, how long `modelyard serve` and `server` with several workers "
        "wait for them to finish in-flight requests and flush the prediction log before "
        "killing them; a worker gives in-flight requests this less 10 s (kept for the flush)",
    )
    monitor_interval_seconds: float = Field(
        default=30.0,
        ge=0,
        description="how often the server's monitor closes windows and checks alert rules, "
        "and its trigger poller starts due pipeline runs; 0 turns both off (run `modelyard "
        "monitor run` and `modelyard pipelines triggers poll` instead)",
    )
    s3_endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint")
    uri: str | None = Field(
        default=None, description="server URL for the CLI and SDK; unset means work in-process"
    )
    token: str | None = Field(default=None, description="API token the CLI and SDK send")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)

    @cached_property
    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.resolved_home / 'modelyard.db'}"

    @property
    def resolved_artifact_root(self) -> str:
        return self.artifact_root or str(self.resolved_home / "artifacts")

    @property
    def metrics_host_port(self) -> tuple[str, int] | None:
        """``metrics_address`` as (host, port); None when unset."""
        if self.metrics_address is None:
            return None
        host, sep, port = self.metrics_address.rpartition(":")
        host = host.strip("[]")  # [::1]:9100
        if not (sep and host and port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            from modelyard.errors import InvalidInput

            raise InvalidInput(
                f"metrics address {self.metrics_address!r} is not HOST:PORT; "
                "e.g. --metrics-address 127.0.0.1:9100"
            )
        return host, int(port)

    @property
    def cache_dir(self) -> Path:
        """Local copies of model files, verified against their digests."""
        return self.resolved_home / "cache"

    @property
    def staging_dir(self) -> Path:
        """Models saved before they are uploaded; what a killed process leaves is swept."""
        return self.cache_dir / "staging"
