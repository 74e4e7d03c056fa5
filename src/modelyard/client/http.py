"""The HTTP transport: the domain services' interfaces, spoken over the control-plane API.

Each class here mirrors a domain service method for method, so :class:`modelyard.Client`
can hold either the in-process service or this proxy. Errors come back as problem+json
and are raised again as the same :class:`~modelyard.errors.ModelyardError` subclass.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter

from modelyard import errors, jsonio
from modelyard.artifacts import digest_of_file
from modelyard.governance import AuditRecord, Identity, IssuedToken, Token, User
from modelyard.governance.audit import Checkpoint
from modelyard.governance.limits import PredictionLimit
from modelyard.governance.signing import ModelSignature, SignatureCheck
from modelyard.monitoring.alerts import Alert, AlertRule, AlertRuleSpec
from modelyard.monitoring.config import MonitorConfig
from modelyard.monitoring.entities import (
    EndpointDrift,
    EndpointStatus,
    MonitorPass,
    OpsWindow,
    ReferenceProfile,
)
from modelyard.monitoring.kpis import KpiEvaluation
from modelyard.page import Page
from modelyard.projects.entities import KPI, Project, Stakeholder
from modelyard.registry import (
    Alias,
    DatasetLink,
    Lineage,
    ModelCard,
    ModelVersion,
    RegisteredModel,
    RetentionResult,
    VersionRuntime,
)
from modelyard.registry.history import AliasAt, AliasHistory
from modelyard.serving.entities import Endpoint, GuardStatus
from modelyard.tracking.entities import (
    Dataset,
    Experiment,
    MetricPoint,
    Run,
    RunArtifact,
    RunComparison,
)

if TYPE_CHECKING:  # their modules import numpy and pyarrow: loaded by the calls that use them
    from modelyard.monitoring.feedback import (
        Feedback,
        FeedbackItem,
        FeedbackResult,
        PendingFeedback,
    )
    from modelyard.monitoring.performance import PerformanceReport
    from modelyard.monitoring.redaction import ForgetResult

M = TypeVar("M", bound=BaseModel)
API = "/api/v1"


def _error_classes() -> dict[str, type[errors.ModelyardError]]:
    found: dict[str, type[errors.ModelyardError]] = {}
    pending: list[type[errors.ModelyardError]] = [errors.ModelyardError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.title, cls)
        pending.extend(cls.__subclasses__())
    return found


class HttpTransport:
    """An httpx client for one server, turning problem+json answers into exceptions."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 60.0) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._errors = _error_classes()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if "json" in kwargs:
            body = kwargs.pop("json")
            if body is not None:
                kwargs["content"] = jsonio.dumps(body)
                kwargs.setdefault("headers", {})["content-type"] = "application/json"
        try:
            try:
                response = self.http.request(method, API + path, **kwargs)
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
                # A kept-alive connection the server closed as this request went out (it does
                # after a download it had to abort): a read is safe to send once more.
                if method not in ("GET", "HEAD"):
                    raise
                response = self.http.request(method, API + path, **kwargs)
        except httpx.TransportError as exc:
            raise errors.ModelyardError(
                f"cannot reach the modelyard server at {self.url} ({exc}); "
                "is `modelyard server` running?"
            ) from None
        if response.status_code >= 400:
            self._raise(response)
        return response

    def _raise(self, response: httpx.Response) -> None:
        try:
            body = response.json()
        except ValueError:
            body = {"title": "Error", "detail": response.text[:500] or response.reason_phrase}
        title = body.pop("title", "Error")
        detail = body.pop("detail", "")
        body.pop("type", None)
        body.pop("status", None)
        cls = self._errors.get(title)
        if cls is None or cls.status != response.status_code:
            err = errors.ModelyardError(detail or title, **body)
            err.status, err.title = response.status_code, title
            raise err
        if cls is errors.MissingExtra:
            raise errors.MissingExtra(body.get("package", "?"), body.get("extra", "?"))
        raise cls(detail, **body)

    def get(self, path: str, model: type[M], **params: Any) -> M:
        params = {k: v for k, v in params.items() if v is not None}
        return model.model_validate_json(self.request("GET", path, params=params).content)

    def send(self, method: str, path: str, model: type[M] | None, body: Any = None) -> Any:
        response = self.request(method, path, json=body)
        return None if model is None else model.model_validate_json(response.content)

    def close(self) -> None:
        self.http.close()


def _q(value: str) -> str:
    return quote(value, safe="")


class HttpArtifacts:
    """Blob upload and download with the same verification as the artifact store."""

    def __init__(self, t: HttpTransport) -> None:
        self.t = t

    def exists(self, digest: str) -> bool:
        response = self.t.http.head(f"{API}/artifacts/{digest}")
        if response.status_code not in (200, 404):
            self.t._raise(response)
        return response.status_code == 200

    def put_file(self, path: str | os.PathLike[str], digest: str | None = None) -> str:
        digest = digest or digest_of_file(path)
        if not self.exists(digest):
            with open(path, "rb") as f:
                self.t.request("PUT", f"/artifacts/{digest}", content=f)
        return digest

    def get_file(self, digest: str, dest: str | os.PathLike[str]) -> Path:
        import hashlib

        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        h = hashlib.sha256()
        try:
            with self.t.http.stream("GET", f"{API}/artifacts/{digest}") as response:
                if response.status_code >= 400:
                    response.read()
                    self.t._raise(response)
                with open(tmp, "wb") as out:
                    for chunk in response.iter_bytes(1024 * 1024):
                        h.update(chunk)
                        out.write(chunk)
            if "sha256:" + h.hexdigest() != digest:
                raise errors.ArtifactCorrupted(
                    f"download of {digest} does not match its digest; try again"
                )
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest


class HttpRegistry:
    """:class:`~modelyard.registry.RegistryService` over HTTP."""

    def __init__(self, t: HttpTransport) -> None:
        self.t = t

    def create_model(
        self,
        name: str,
        *,
        description: str = "",
        tags: Mapping[str, Any] | None = None,
        project: str | None = None,
    ) -> RegisteredModel:
        body = {
            "name": name,
            "description": description,
            "tags": dict(tags or {}),
            "project": project,
        }
        return self.t.send("POST", "/models", RegisteredModel, body)

    def get_model(self, name: str) -> RegisteredModel:
        return self.t.get(f"/models/{_q(name)}", RegisteredModel)

    def list_models(
        self,
        *,
        q: str | None = None,
        tags: Mapping[str, str] | None = None,
        project: str | None = None,
        include_archived: bool = False,
        limit: int = 100,
        page_token: str | None = None,
    ) -> Page[RegisteredModel]:
        tag = [f"{k}:{v}" for k, v in (tags or {}).items()]
        return self.t.get(
            "/models",
            Page[RegisteredModel],
            q=q,
            tag=tag,
            project=project,
            include_archived=include_archived,
            limit=limit,
            page_token=page_token,
        )

    def update_model(
        self,
        name: str,
        *,
        description: str | None = None,
        tags: Mapping[str, Any] | None = None,
        remove_tags: Iterable[str] = (),
        project: str | None = None,
    ) -> RegisteredModel:
        body = {
            "description": description,
            "tags": dict(tags or {}),
            "remove_tags": list(remove_tags),
            "project": project,
        }
        return self.t.send("PATCH", f"/models/{_q(name)}", RegisteredModel, body)

    def archive_model(self, name: str, archived: bool = True) -> RegisteredModel:
        verb = "archive" if archived else "restore"
        return self.t.send("POST", f"/models/{_q(name)}/{verb}", RegisteredModel)

    def delete_model(self, name: str) -> None:
        self.t.request("DELETE", f"/models/{_q(name)}")

    def create_version(
        self,
        name: str,
        manifest_digest: str,
        *,
        run_id: str | None = None,
        datasets: Iterable[DatasetLink | Mapping[str, str]] = (),
        description: str = "",
        tags: Mapping[str, Any] | None = None,
        source: str = "",
        create_model: bool = True,
    ) -> ModelVersion:
        links = [DatasetLink.model_validate(d).model_dump() for d in datasets]
        body = {
            "manifest_digest": manifest_digest,
            "run_id": run_id,
            "datasets": links,
            "description": description,
            "tags": dict(tags or {}),
            "source": source,
        }
        return self.t.send("POST", f"/models/{_q(name)}/versions", ModelVersion, body)

    def get_version(self, name: str, version: int) -> ModelVersion:
        return self.t.get(f"/models/{_q(name)}/versions/{version}", ModelVersion)

    def list_versions(
        self,
        name: str,
        *,
        include_archived: bool = True,
        limit: int = 100,
        page_token: str | None = None,
    ) -> Page[ModelVersion]:
        return self.t.get(
            f"/models/{_q(name)}/versions",
            Page[ModelVersion],
            include_archived=include_archived,
            limit=limit,
            page_token=page_token,
        )

    def update_version(
        self,
        name: str,
        version: int,
        *,
        description: str | None = None,
        tags: Mapping[str, Any] | None = None,
        remove_tags: Iterable[str] = (),
    ) -> ModelVersion:
        body = {
            "description": description,
            "tags": dict(tags or {}),
            "remove_tags": list(remove_tags),
        }
        return self.t.send("PATCH", f"/models/{_q(name)}/versions/{version}", ModelVersion, body)

    def archive_version(self, name: str, version: int, archived: bool = True) -> ModelVersion:
        verb = "archive" if archived else "restore"
        return self.t.send("POST", f"/models/{_q(name)}/versions/{version}/{verb}", ModelVersion)

    def delete_version(self, name: str, version: int) -> None:
        self.t.request("DELETE", f"/models/{_q(name)}/versions/{version}")

    def apply_retention(
        self, name: str, *, keep_last: int, min_age_days: float = 0, dry_run: bool = True
    ) -> RetentionResult:
        body = {"keep_last": keep_last, "min_age_days": min_age_days, "dry_run": dry_run}
        return self.t.send("POST", f"/models/{_q(name)}/retention", RetentionResult, body)

    def set_alias(self, name: str, alias: str, version: int, *, reason: str = "") -> Alias:
        body = {"version": version, "reason": reason}
        return self.t.send("PUT", f"/models/{_q(name)}/aliases/{_q(alias)}", Alias, body)

    def get_alias(self, name: str, alias: str) -> Alias:
        return self.t.get(f"/models/{_q(name)}/aliases/{_q(alias)}", Alias)

    def delete_alias(self, name: str, alias: str, *, reason: str = "") -> None:
        params = {"reason": reason} if reason else {}
        self.t.request("DELETE", f"/models/{_q(name)}/aliases/{_q(alias)}", params=params)

    def alias_history(
        self, name: str, alias: str, limit: int = 100, *, as_of: datetime | str | None = None
    ) -> AliasHistory:
        return self.t.get(
            f"/models/{_q(name)}/aliases/{_q(alias)}/history",
            AliasHistory,
            limit=limit,
            as_of=as_of.isoformat() if isinstance(as_of, datetime) else as_of,
        )

    def alias_at(self, name: str, alias: str, at: datetime | str) -> AliasAt:
        return AliasAt.of(self.alias_history(name, alias, 1, as_of=at))

    def resolve(self, uri: str) -> ModelVersion:
        return self.t.get("/resolve", ModelVersion, uri=str(uri))

    def get_card(self, name: str, version: int) -> ModelCard:
        return self.t.get(f"/models/{_q(name)}/versions/{version}/card", ModelCard)

    def update_card(self, name: str, version: int, sections: Mapping[str, Any]) -> ModelCard:
        return self.t.send(
            "PATCH", f"/models/{_q(name)}/versions/{version}/card", ModelCard, dict(sections)
        )

    def get_runtime(self, name: str, version: int, runtime: str) -> VersionRuntime | None:
        try:
            return self.t.get(
                f"/models/{_q(name)}/versions/{version}/runtimes/{_q(runtime)}", VersionRuntime
            )
        except errors.NotFound:
            return None

    def lineage(self, name: str, version: int) -> Lineage:
        return self.t.get(f"/models/{_q(name)}/versions/{version}/lineage", Lineage)

    def sign_version(self, name: str, version: int) -> ModelSignature:
        path = f"/models/{_q(name)}/versions/{version}/signature"
        return self.t.send("POST", path, ModelSignature)

    def get_signature(self, name: str, version: int) -> ModelSignature:
        return self.t.get(f"/models/{_q(name)}/versions/{version}/signature", ModelSignature)

    def verify_version(self, name: str, version: int) -> SignatureCheck:
        path = f"/models/{_q(name)}/versions/{version}/signature/verify"
        return self.t.get(path, SignatureCheck)


class VerifyReport(BaseModel):
    ok: bool
    records: int
    head: str
    broken_at: int | None = None
    reason: str = ""
    checkpoint: str = ""


class HttpIdentities:
    """:class:`~modelyard.governance.Identities` over HTTP."""

    def __init__(self, t: HttpTransport) -> None:
        self.t = t

    def whoami(self) -> Identity:
        return self.t.get("/whoami", Identity)

    def create_user(self, name: str, role: str = "viewer") -> User:
        return self.t.send("POST", "/users", User, {"name": name, "role": str(role)})

    def list_users(self) -> list[User]:
        return TypeAdapter(list[User]).validate_json(self.t.request("GET", "/users").content)

    def set_role(self, name: str, role: str) -> User:
        return self.t.send("PATCH", f"/users/{_q(name)}", User, {"role": str(role)})

    def disable_user(self, name: str) -> User:
        return self.t.send("POST", f"/users/{_q(name)}/disable", User)

    def create_token(
        self,
        user: str,
        *,
        name: str = "",
        expires_in_days: int | None = None,
        endpoints: list[str] | None = None,
    ) -> IssuedToken:
        body = {
            "user": user,
            "name": name,
            "expires_in_days": expires_in_days,
            "endpoints": endpoints,
        }
        return self.t.send("POST", "/tokens", IssuedToken, body)

    def list_tokens(self, user: str | None = None) -> list[Token]:
        params = {"user": user} if user else {}
        return TypeAdapter(list[Token]).validate_json(
            self.t.request("GET", "/tokens", params=params).content
        )

    def revoke_token(self, token_id: str) -> Token:
        return self.t.send("DELETE", f"/tokens/{_q(token_id)}", Token)


class HttpLimits:
    """:class:`~modelyard.governance.limits.LimitService` over HTTP."""

    def __init__(self, t: HttpTransport) -> None:
        self.t = t

    def set(
        self,
        *,
        endpoint: str | None = None,
        token: str | None = None,
        rate: float | int | str | None = None,
        burst: int | None = None,
        daily: int | None = None,
    ) -> PredictionLimit:
        body = {"endpoint": endpoint, "token": token, "rate": rate, "burst": burst, "daily": daily}
        return self.t.send("PUT", "/limits", PredictionLimit, body)

    def list(
        self, *, endpoint: str | None = None, token: str | None = None
    ) -> list[PredictionLimit]:
        params = {k: v for k, v in {"endpoint": endpoint, "token": token}.items() if v is not None}
        response = self.t.request("GET", "/limits", params=params)
        return TypeAdapter(list[PredictionLimit]).validate_json(response.content)

    def get(self, limit_id: str) -> PredictionLimit:
        return self.t.get(f"/limits/{_q(limit_id)}", PredictionLimit)

    def delete(self, limit_id: str) -> None:
        self.t.request("DELETE", f"/limits/{_q(limit_id)}")


class HttpAudit:
    """:class:`~modelyard.governance.AuditLog` over HTTP."""

    def __init__(self, t: HttpTransport) -> None:
        self.t = t

    def list(
        self,
        *,
        entity_type: str | None = None,
        entity_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> Page[AuditRecord]:
        from modelyard.page import encode_token

        return self.t.get(
            "/audit",
            Page[AuditRecord],
            entity_type=entity_type,
            entity_id=entity_id,
            actor=actor,
            action=action,
            limit=limit,
            page_token=encode_token(offset) if offset else None,
        )

    def verify(self, checkpoint: Checkpoint | Mapping[str, Any] | None = None) -> VerifyReport:
        if checkpoint is None:
            return self.t.get("/audit/verify", VerifyReport)
        body = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.parse(checkpoint)
        return self.t.send("POST", "/audit/verify", VerifyReport, body.model_dump(mode="json"))

    def checkpoint(self) -> Checkpoint:
        return self.t.send("POST", "/audit/checkpoint", Checkpoint)


class HttpTracking:
    """:class:`~modelyard.tracking.service.TrackingService` over HTTP."""

    def __init__(self, t: HttpTransport, artifacts: HttpArtifacts) -> None:
        self.t = t
        self.artifacts = artifacts

    def create_experiment(
        self, name: str, *, description: str = "", project: str | None = None
    ) -> Experiment:
        body = {"name": name, "description": description, "project": project}
        return self.t.send("POST", "/experiments", Experiment, body)

    def get_experiment(self, name_or_id: str) -> Experiment:
        return self.t.get(f"/experiments/{_q(name_or_id)}", Experiment)

    def list_experiments(
        self,
        *,
        q: str | None = None,
        project: str | None = None,
        limit: int = 100,
        page_token: str | None = None,
    ) -> Page[Experiment]:
        return self.t.get(
            "/experiments",
            Page[Experiment],
            q=q,
            project=project,
            limit=limit,
            page_token=page_token,
        )

    def start_run(
        self,
        experiment: str,
        *,
        name: str = "",
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Run:
        body = {
            "experiment": experiment,
            "name": name,
            "tags": dict(tags or {}),
            "params": dict(params or {}),
        }
        return self.t.send("POST", "/runs", Run, body)

    def get_run(self, run_id: str) -> Run:
        return self.t.get(f"/runs/{_q(run_id)}", Run)

    def end_run(self, run_id: str, status: str = "finished") -> Run:
        return self.t.send("POST", f"/runs/{_q(run_id)}/end", Run, {"status": status})

    def search_runs(
        self,
        experiment: str,
        *,
        filter_string: str = "",
        order_by: str | list[str] | None = None,
        limit: int = 100,
        page_token: str | None = None,
    ) -> Page[Run]:
        order = [order_by] if isinstance(order_by, str) else list(order_by or [])
        return self.t.get(
            "/runs",
            Page[Run],
            experiment=experiment,
            filter=filter_string,
            order_by=order,
            limit=limit,
            page_token=page_token,
        )

    def compare_runs(self, run_ids: Iterable[str]) -> RunComparison:
        return self.t.get("/runs/compare", RunComparison, run_id=list(run_ids))

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        self.t.request("POST", f"/runs/{_q(run_id)}/params", json={"values": dict(params)})

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        self.t.request("POST", f"/runs/{_q(run_id)}/tags", json={"values": dict(tags)})

    def log_metrics(
        self,
        run_id: str,
        metrics: Iterable[MetricPoint | Mapping[str, Any]] | Mapping[str, Any],
        *,
        step: int = 0,
    ) -> None:
        if isinstance(metrics, Mapping):
            points = [{"key": k, "value": v, "step": step} for k, v in metrics.items()]
        else:
            points = [
                m.model_dump(mode="json", exclude_none=True)
                if isinstance(m, MetricPoint)
                else dict(m)
                for m in metrics
            ]
        self.t.request("POST", f"/runs/{_q(run_id)}/metrics", json={"metrics": points})

    def get_metric_history(self, run_id: str, key: str) -> list[MetricPoint]:
        return TypeAdapter(list[MetricPoint]).validate_json(
            self.t.request("GET", f"/runs/{_q(run_id)}/metrics/{_q(key)}").content
        )

    def log_artifact(
        self, run_id: str, path: str, data: bytes | str | os.PathLike[str]
    ) -> RunArtifact:
        content = data if isinstance(data, bytes) else Path(data).read_bytes()
        return RunArtifact.model_validate_json(
            self.t.request(
                "PUT", f"/runs/{_q(run_id)}/artifacts/{quote(path)}", content=content
            ).content
        )

    def list_artifacts(self, run_id: str) -> list[RunArtifact]:
        return TypeAdapter(list[RunArtifact]).validate_json(
            self.t.request("GET", f"/runs/{_q(run_id)}/artifacts").content
        )

    def get_artifact(self, run_id: str, path: str) -> bytes:
        return self.t.request("GET", f"/runs/{_q(run_id)}/artifacts/{quote(path)}").content

    def log_dataset(
        self,
        name: str,
        data: Any,
        *,
        source: str = "",
        run_id: str | None = None,
        context: str = "training",
    ) -> Dataset:
        """Upload the data as Parquet (or the given .csv/.parquet file), then register it."""
        import pandas as pd

        with tempfile.TemporaryDirectory() as tmp:
            if isinstance(data, pd.DataFrame):
                path = Path(tmp) / "data.parquet"
                data.to_parquet(path, index=False)
            else:
                path = Path(data)
            fmt = "csv" if path.suffix.lower() == ".csv" else "parquet"
            digest = self.artifacts.put_file(path)
        body = {
            "name": name,
            "artifact_digest": digest,
            "file_format": fmt,
            "source": source,
            "run_id": run_id,
            "context": context,
        }
        return self.t.send("POST", "/datasets", Dataset, body)

    def get_dataset(self, name: str, version: int | None = None) -> Dataset:
        return self.t.get(f"/datasets/{_q(name)}", Dataset, version=version)

    def get_dataset_by_id(self, dataset_id: str) -> Dataset:
        return self.t.get(f"/datasets/by-id/{_q(dataset_id)}", Dataset)

    def list_datasets(
        self,
        *,
        name: str | None = None,
        q: str | None = None,
        limit: int = 100,
        page_token: str | None = None,
    ) -> Page[Dataset]:
        return self.t.get(
            "/datasets", Page[Dataset], name=name, q=q, limit=limit, page_token=page_token
        )

    def load_dataset(self, name: str, version: int | None = None) -> Any:
        import pandas as pd

        ds = self.get_dataset(name, version)
        if ds.artifact_digest is None:
            raise errors.NotFound(f"dataset {name} v{ds.version} was registered without its data")
        with tempfile.TemporaryDirectory() as tmp:
            path = self.artifacts.get_file(ds.artifact_digest, Path(tmp) / "data.parquet")
            return pd.read_parquet(path)


class HttpProjects:
    """:class:`~modelyard.projects.service.ProjectService` over HTTP."""

    def __init__(self, t: HttpTransport) -> None:
        self.t = t

    def create(
        self,
        name: str,
        *,
        description: str = "",
        objective: str = "",
        kpis: Iterable[KPI | Mapping[str, Any]] = (),
        constraints: Iterable[str] = (),
        stakeholders: Iterable[Stakeholder | Mapping[str, Any]] = (),
    ) -> Project:
        body = {
            "name": name,
            "description": description,
            "objective": objective,
            "kpis": [_dump(k) for k in kpis],
            "constraints": list(constraints),
            "stakeholders": [_dump(s) for s in stakeholders],
        }
        return self.t.send("POST", "/projects", Project, body)

    def get(self, name: str) -> Project:
        return self.t.get(f"/projects/{_q(name)}", Project)

    def list(
        self, *, q: str | None = None, limit: int = 100, page_token: str | None = None
    ) -> Page[Project]:
        return self.t.get("/projects", Page[Project], q=q, limit=limit, page_token=page_token)

    def update(self, name: str, **fields: Any) -> Project:
        body = {
            k: (
                [_dump(i) for i in v]
                if k in ("kpis", "stakeholders")
                else list(v)
                if k == "constraints"
                else v
            )
            for k, v in fields.items()
            if v is not None
        }
        return self.t.send("PATCH", f"/projects/{_q(name)}", Project, body)

    def delete(self, name: str) -> None:
        self.t.request("DELETE", f"/projects/{_q(name)}")


def _dump(item: Any) -> Any:
    return item.model_dump(mode="json") if isinstance(item, BaseModel) else dict(item)


class HttpEndpoints:
    """:class:`~modelyard.serving.endpoints.EndpointService` over HTTP."""

    def __init__(self, t: HttpTransport) -> None:
        self.t = t

    def create(self, name: str, target: str, **fields: Any) -> Endpoint:
        body = {
            "name": name,
            "target": target,
            **{
                k: _dump(v) if isinstance(v, BaseModel) else v
                for k, v in fields.items()
                if v is not None
            },
        }
        return self.t.send("POST", "/endpoints", Endpoint, body)

    def get(self, name: str) -> Endpoint:
        return self.t.get(f"/endpoints/{_q(name)}", Endpoint)

    def list(self) -> list[Endpoint]:
        return TypeAdapter(list[Endpoint]).validate_json(
            self.t.request("GET", "/endpoints").content
        )

    def update(self, name: str, **fields: Any) -> Endpoint:
        body = {
            k: _dump(v) if isinstance(v, BaseModel) else v
            for k, v in fields.items()
            if v is not None
        }
        return self.t.send("PATCH", f"/endpoints/{_q(name)}", Endpoint, body)

    def guard_status(self, name: str) -> GuardStatus:
        return self.t.get(f"/endpoints/{_q(name)}/guard", GuardStatus)

    def delete(self, name: str) -> None:
        self.t.request("DELETE", f"/endpoints/{_q(name)}")


class HttpMonitoring:
    """:class:`~modelyard.monitoring.service.MonitoringService` over HTTP."""

    def __init__(self, t: HttpTransport) -> None:
        self.t = t

    def _list(self, path: str, model: Any, **params: Any) -> Any:
        params = {k: _param(v) for k, v in params.items() if v is not None}
        return TypeAdapter(model).validate_json(self.t.request("GET", path, params=params).content)

    def status(self, endpoint: str | None = None) -> list[EndpointStatus]:
        return self._list("/monitoring/status", list[EndpointStatus], endpoint=endpoint)

    def run_once(self) -> MonitorPass:
        return self.t.send("POST", "/monitoring/run", MonitorPass)

    def get_config(self, endpoint: str) -> MonitorConfig:
        return self.t.get(f"/monitoring/endpoints/{_q(endpoint)}/config", MonitorConfig)

    def configure(self, endpoint: str, config: MonitorConfig | Mapping[str, Any]) -> MonitorConfig:
        body = _dump(config) if isinstance(config, BaseModel) else dict(config)
        return self.t.send(
            "PUT", f"/monitoring/endpoints/{_q(endpoint)}/config", MonitorConfig, body
        )

    def set_reference(
        self,
        uri: str,
        *,
        data: Any = None,
        dataset: str | None = None,
        dataset_version: int | None = None,
    ) -> ReferenceProfile:
        if data is not None and not isinstance(data, Mapping):
            import pandas as pd

            frame = data if isinstance(data, pd.DataFrame) else pd.read_parquet(data)
            # NaN travels as null (missing), not as the string "NaN".
            data = frame.astype(object).where(frame.notna(), None).to_dict(orient="list")
        if data is not None:
            data = {str(k): [_param(x) for x in v] for k, v in dict(data).items()}
        body = {"uri": uri, "data": data, "dataset": dataset, "dataset_version": dataset_version}
        return self.t.send("POST", "/monitoring/references", ReferenceProfile, body)

    def get_reference(self, uri: str, *, include_profile: bool = False) -> ReferenceProfile:
        return self.t.get(
            "/monitoring/references", ReferenceProfile, uri=uri, include_profile=include_profile
        )

    def _range(self, **kw: Any) -> dict[str, Any]:
        return {k: _param(v) for k, v in kw.items() if v is not None}

    def drift(self, endpoint: str, **kw: Any) -> EndpointDrift:
        return self.t.get(
            f"/monitoring/endpoints/{_q(endpoint)}/drift", EndpointDrift, **self._range(**kw)
        )

    def drift_html(self, endpoint: str, **kw: Any) -> str:
        response = self.t.request(
            "GET", f"/monitoring/endpoints/{_q(endpoint)}/drift.html", params=self._range(**kw)
        )
        return response.text

    def operations(self, endpoint: str, **kw: Any) -> list[OpsWindow]:
        return self._list(f"/monitoring/endpoints/{_q(endpoint)}/operations", list[OpsWindow], **kw)

    def performance(self, endpoint: str, **kw: Any) -> PerformanceReport:
        from modelyard.monitoring.performance import PerformanceReport

        return self.t.get(
            f"/monitoring/endpoints/{_q(endpoint)}/performance",
            PerformanceReport,
            **self._range(**kw),
        )

    def submit_feedback(
        self, endpoint: str, items: Iterable[FeedbackItem | Mapping[str, Any]]
    ) -> FeedbackResult:
        from modelyard.monitoring.feedback import FeedbackResult

        body = {"items": [_dump(i) if isinstance(i, BaseModel) else dict(i) for i in items]}
        return self.t.send(
            "POST", f"/monitoring/endpoints/{_q(endpoint)}/feedback", FeedbackResult, body
        )

    def list_feedback(self, endpoint: str, **kw: Any) -> list[Feedback]:
        from modelyard.monitoring.feedback import Feedback

        return self._list(f"/monitoring/endpoints/{_q(endpoint)}/feedback", list[Feedback], **kw)

    def list_held_feedback(self, endpoint: str, status: str | None = None) -> list[PendingFeedback]:
        from modelyard.monitoring.feedback import PendingFeedback

        return self._list(
            f"/monitoring/endpoints/{_q(endpoint)}/feedback/pending",
            list[PendingFeedback],
            status=status,
        )

    def create_rule(self, spec: AlertRuleSpec | Mapping[str, Any]) -> AlertRule:
        body = _dump(spec) if isinstance(spec, BaseModel) else dict(spec)
        return self.t.send("POST", "/monitoring/rules", AlertRule, body)

    def get_rule(self, name: str) -> AlertRule:
        return self.t.get(f"/monitoring/rules/{_q(name)}", AlertRule)

    def list_rules(self, endpoint: str | None = None) -> list[AlertRule]:
        return self._list("/monitoring/rules", list[AlertRule], endpoint=endpoint)

    def update_rule(self, name: str, **changes: Any) -> AlertRule:
        return self.t.send("PATCH", f"/monitoring/rules/{_q(name)}", AlertRule, changes)

    def delete_rule(self, name: str) -> None:
        self.t.request("DELETE", f"/monitoring/rules/{_q(name)}")

    def list_alerts(
        self,
        endpoint: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        *,
        rule: str | None = None,
        limit: int | None = None,
    ) -> list[Alert]:
        return self._list(
            "/monitoring/alerts",
            list[Alert],
            endpoint=endpoint,
            status=status,
            since=since,
            rule=rule,
            limit=limit,
        )

    def get_alert(self, alert_id: str) -> Alert:
        return self.t.get(f"/monitoring/alerts/{_q(alert_id)}", Alert)

    def resolve_alert(self, alert_id: str, note: str = "") -> Alert:
        return self.t.send(
            "POST", f"/monitoring/alerts/{_q(alert_id)}/resolve", Alert, {"note": note}
        )

    def kpis(self, project: str, **kw: Any) -> list[KpiEvaluation]:
        return self._list("/monitoring/kpis", list[KpiEvaluation], project=project, **kw)

    def forget(self, endpoint: str, key: str, value: str) -> ForgetResult:
        from modelyard.monitoring.redaction import ForgetResult

        body = {"key": key, "value": str(value)}
        return self.t.send(
            "POST", f"/monitoring/endpoints/{_q(endpoint)}/forget", ForgetResult, body
        )


def _param(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value
