"""The HTTP transport: the domain services' interfaces, spoken over the control-plane API.

Each class here mirrors a domain service method for method, so :class:`modelyard.Client`
can hold either the in-process service or this proxy. Errors come back as problem+json
and are raised again as the same :class:`~modelyard.errors.ModelyardError` subclass.

Here: artifacts, the registry, projects and endpoints. The transport is in
http_transport.py, the other proxies beside it (http_identity.py, http_tracking.py,
http_monitoring.py, http_governance.py, http_signing.py, http_rollouts.py); the first three
are importable from here too.
"""

from __future__ import annotations

import builtins
import os
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, TypeAdapter

from modelyard import errors
from modelyard.artifacts import digest_of_file
from modelyard.client.http_identity import HttpAudit as HttpAudit
from modelyard.client.http_identity import HttpIdentities as HttpIdentities
from modelyard.client.http_identity import HttpLimits as HttpLimits
from modelyard.client.http_identity import VerifyReport as VerifyReport
from modelyard.client.http_monitoring import HttpMonitoring as HttpMonitoring
from modelyard.client.http_tracking import HttpTracking as HttpTracking
from modelyard.client.http_transport import API as API
from modelyard.client.http_transport import HttpTransport as HttpTransport
from modelyard.client.http_transport import _dump
from modelyard.client.http_transport import _q as _q
from modelyard.governance.signing import ModelSignature, SignatureCheck
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
from modelyard.serving.entities import Endpoint, GuardStatus, VariantStatus

if TYPE_CHECKING:
    from modelyard.pipelines.variants import VariantReport


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

    def create_variant(
        self,
        parent: str | ModelVersion,
        *,
        quantize: str | None = None,
        distill: str | None = None,
        name: str | None = None,
        target: str | None = None,
        max_depth: int | None = None,
        latency_calls: int = 200,
        progress: Any = None,
    ) -> VariantReport:
        """The server makes and measures the variant (``progress`` is not reported)."""
        from modelyard.pipelines.variants import VariantReport, check_request
        from modelyard.registry.uri import parse_model_uri

        check_request(quantize, distill, max_depth, latency_calls)  # before any request
        if isinstance(parent, ModelVersion):
            model, number = parent.model, parent.version
        else:
            ref = parse_model_uri(parent)
            if ref.version is None:
                resolved = self.resolve(parent)
                model, number = resolved.model, resolved.version
            else:
                model, number = ref.name, ref.version
        body = {
            "quantize": quantize,
            "distill": distill,
            "name": name,
            "target": target,
            "max_depth": max_depth,
            "latency_calls": latency_calls,
        }
        path = f"/models/{_q(model)}/versions/{number}/variants"
        return self.t.send("POST", path, VariantReport, body)

    def sign_version(self, name: str, version: int) -> ModelSignature:
        path = f"/models/{_q(name)}/versions/{version}/signature"
        return self.t.send("POST", path, ModelSignature)

    def get_signature(self, name: str, version: int) -> ModelSignature:
        return self.t.get(f"/models/{_q(name)}/versions/{version}/signature", ModelSignature)

    def verify_version(self, name: str, version: int) -> SignatureCheck:
        path = f"/models/{_q(name)}/versions/{version}/signature/verify"
        return self.t.get(path, SignatureCheck)


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

    def variant_status(self, name: str) -> builtins.list[VariantStatus]:
        data = self.t.request("GET", f"/endpoints/{_q(name)}/variants").json()
        return [VariantStatus.model_validate(v) for v in data]

    def delete(self, name: str) -> None:
        self.t.request("DELETE", f"/endpoints/{_q(name)}")
