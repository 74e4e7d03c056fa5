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
    port: int = 8080

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
    def cache_dir(self) -> Path:
        """Local copies of model files, verified against their digests."""
        return self.resolved_home / "cache"
