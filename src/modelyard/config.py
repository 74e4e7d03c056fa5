"""Settings: the one place that reads the environment (``MODELYARD_*`` variables)."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


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
    live_stats_seconds: float = Field(
        default=2.0,
        ge=0,
        le=60,
        description="how often each gateway worker writes its recent per-endpoint counters "
        "(requests, errors, latency, batch sizes, cache hits) to the metadata store, where "
        "the dashboard's live charts read them (only when they changed); 0 turns it off",
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
    limits_flush_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="how often a gateway worker adds the rows it counted against daily "
        "prediction quotas to the shared counts and reads back the totals and the limits; a "
        "quota holds across workers to within what they answer in this interval",
    )
    oidc_issuer: str | None = Field(
        default=None,
        description="with auth on, also accept JWTs (bearer tokens) from this OpenID Connect "
        "identity provider; a token's `iss` must equal it (e.g. "
        "https://keycloak.example.com/realms/ml); unset: only modelyard API tokens",
    )
    oidc_audience: str | None = Field(
        default=None,
        validate_default=True,
        description="the `aud` a JWT must carry (the client id the provider issues tokens "
        "for); required with oidc_issuer",
    )
    oidc_jwks_url: str | None = Field(
        default=None,
        validate_default=True,
        description="where the provider's signing keys (JWKS) are: an https URL or a local "
        "file; unset: the jwks_uri of <issuer>/.well-known/openid-configuration",
    )
    oidc_groups_claim: str = Field(
        default="groups",
        min_length=1,
        description="the claim holding the caller's groups; a dotted path reaches into "
        "objects (realm_access.roles)",
    )
    oidc_username_claim: str = Field(
        default="preferred_username",
        min_length=1,
        description="the claim naming the caller; `sub` when a token lacks it",
    )
    oidc_role_map: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        validate_default=True,
        description="group -> role: ml-admins=admin,ml-editors=editor (or a JSON object); "
        "a caller gets the highest role of their groups; required with oidc_issuer",
    )
    oidc_jwks_cache_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="how long the provider's keys are used before they are fetched again",
    )
    oidc_jwks_refetch_seconds: float = Field(
        default=60.0,
        ge=0,
        description="the shortest time between two fetches of the keys caused by a token "
        "with an unknown key id or by a failed fetch: forged key ids cannot hammer the provider",
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
    rollout_interval_seconds: float = Field(
        default=1.0,
        ge=0,
        description="how often the server's rollout controller looks at running rollouts "
        "(analyses fall due every plan's interval_seconds; between them it looks for "
        "overwhelming errors); 0 turns it off (run `modelyard rollouts run` instead)",
    )
    redaction_key: SecretStr | None = Field(
        default=None,
        description="the key of the HMAC-SHA256 that replaces input columns an endpoint "
        "hashes in the prediction log (`modelyard endpoints redact --hash`), at least 16 "
        "characters; the same in the gateway and the server. Required to hash a column",
    )
    signing_key: Path | None = Field(
        default=None,
        description="private Ed25519 key (PEM) that signs new model versions and audit "
        "checkpoints; unset: the workspace's newest trusted key under <home>/keys, if any",
    )
    require_signed_models: bool = Field(
        default=False,
        description="refuse to load a model version that is not signed by a trusted key "
        "(unsigned, or signed by a key that is unknown or revoked)",
    )
    trusted_key_ids: str = Field(
        default="",
        description="comma-separated signing key ids to trust, whatever the metadata store "
        "says (someone who can write to the database could add a key of their own); empty: "
        "the keys trusted in the store",
    )
    s3_endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint")
    uri: str | None = Field(
        default=None, description="server URL for the CLI and SDK; unset means work in-process"
    )
    token: str | None = Field(default=None, description="API token the CLI and SDK send")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)

    @field_validator("oidc_audience")
    @classmethod
    def _audience_with_issuer(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("oidc_issuer") and not value:
            raise ValueError(
                "required with MODELYARD_OIDC_ISSUER: set it to the client id (the `aud`) "
                "the identity provider issues modelyard's tokens for"
            )
        return value

    @property
    def pinned_key_ids(self) -> frozenset[str]:
        """:attr:`trusted_key_ids` as a set (empty: not pinned)."""
        return frozenset(k.strip() for k in self.trusted_key_ids.split(",") if k.strip())

    @field_validator("oidc_jwks_url")
    @classmethod
    def _keys_over_tls(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Keys fetched in clear could be swapped in transit, and any token forged with them.
        url = value if value is not None else info.data.get("oidc_issuer")
        if url and url.startswith("http://"):
            host = urlsplit(url).hostname or ""
            if host not in ("127.0.0.1", "::1", "localhost"):
                what = "the JWKS URL" if value is not None else "the issuer (keys are found there)"
                raise ValueError(
                    f"{what} {url!r} is plain http: use https, or a local JWKS file "
                    "(MODELYARD_OIDC_JWKS_URL=/path/jwks.json); http is accepted on loopback only"
                )
        return value

    @field_validator("oidc_role_map", mode="before")
    @classmethod
    def _parse_role_map(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("{"):
            try:
                return json.loads(text)
            except ValueError as exc:
                raise ValueError(
                    f'not a JSON object ({exc}); write e.g. {{"ml-admins": "admin"}} or '
                    "ml-admins=admin,ml-editors=editor"
                ) from None
        pairs: dict[str, str] = {}
        for item in (p.strip() for p in text.split(",")):
            if not item:
                continue
            group, sep, role = item.rpartition("=")
            if not sep or not group.strip():
                raise ValueError(
                    f"{item!r} is not GROUP=ROLE; write e.g. ml-admins=admin,ml-editors=editor "
                    "(or a JSON object)"
                )
            pairs[group.strip()] = role.strip()
        return pairs

    @field_validator("oidc_role_map")
    @classmethod
    def _role_map_roles(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if not value:
            if info.data.get("oidc_issuer"):
                raise ValueError(
                    "required with MODELYARD_OIDC_ISSUER: map the provider's groups to roles, "
                    "e.g. ml-admins=admin,ml-editors=editor,ml-viewers=viewer"
                )
            return value
        from modelyard.governance.entities import Role  # (only when a map is set: it is heavy)

        roles = {}
        for group, name in value.items():
            try:
                roles[group] = Role(name).value
            except ValueError:
                raise ValueError(
                    f"group {group!r} maps to {name!r}, which is not a role; use one of: "
                    + ", ".join(r.value for r in Role)
                ) from None
        return roles

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
