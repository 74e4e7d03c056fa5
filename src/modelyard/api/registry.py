"""Registry routes: models, versions, aliases, cards, lineage, URI resolution."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from modelyard.api.deps import editor, viewer
from modelyard.errors import InvalidInput, NotFound
from modelyard.page import Page
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
from modelyard.workspace import Workspace

router = APIRouter(tags=["registry"])


class ModelCreate(BaseModel):
    name: str
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    project: str | None = None


class ModelPatch(BaseModel):
    description: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    remove_tags: list[str] = Field(default_factory=list)
    project: str | None = None


class VersionCreate(BaseModel):
    manifest_digest: str
    run_id: str | None = None
    datasets: list[DatasetLink] = Field(default_factory=list)
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    source: str = ""


class VersionPatch(BaseModel):
    description: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    remove_tags: list[str] = Field(default_factory=list)


class AliasSet(BaseModel):
    version: int = Field(ge=1)


class Retention(BaseModel):
    keep_last: int = Field(ge=1)
    min_age_days: float = Field(default=0, ge=0)
    dry_run: bool = True


def _tag_filters(tag: list[str]) -> dict[str, str]:
    filters = {}
    for item in tag:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise InvalidInput(f"tag filter {item!r} must look like key:value")
        filters[key] = value
    return filters


@router.get("/models", response_model=Page[RegisteredModel])
def list_models(
    q: str | None = None,
    tag: list[str] = Query(default=[], description="key:value, repeatable"),
    project: str | None = None,
    include_archived: bool = False,
    limit: int = 100,
    page_token: str | None = None,
    ws: Workspace = Depends(viewer),
) -> Page[RegisteredModel]:
    return ws.registry.list_models(
        q=q,
        tags=_tag_filters(tag),
        project=project,
        include_archived=include_archived,
        limit=limit,
        page_token=page_token,
    )


@router.post("/models", status_code=201, response_model=RegisteredModel)
def create_model(body: ModelCreate, ws: Workspace = Depends(editor)) -> RegisteredModel:
    return ws.registry.create_model(
        body.name, description=body.description, tags=body.tags, project=body.project
    )


@router.get("/models/{name}", response_model=RegisteredModel)
def get_model(name: str, ws: Workspace = Depends(viewer)) -> RegisteredModel:
    return ws.registry.get_model(name)


@router.patch("/models/{name}", response_model=RegisteredModel)
def update_model(name: str, body: ModelPatch, ws: Workspace = Depends(editor)) -> RegisteredModel:
    return ws.registry.update_model(
        name,
        description=body.description,
        tags=body.tags,
        remove_tags=body.remove_tags,
        project=body.project,
    )


@router.post("/models/{name}/archive", response_model=RegisteredModel)
def archive_model(name: str, ws: Workspace = Depends(editor)) -> RegisteredModel:
    return ws.registry.archive_model(name)


@router.post("/models/{name}/restore", response_model=RegisteredModel)
def restore_model(name: str, ws: Workspace = Depends(editor)) -> RegisteredModel:
    return ws.registry.archive_model(name, archived=False)


@router.delete("/models/{name}", status_code=204)
def delete_model(name: str, ws: Workspace = Depends(editor)) -> None:
    ws.registry.delete_model(name)


@router.post("/models/{name}/retention", response_model=RetentionResult)
def apply_retention(name: str, body: Retention, ws: Workspace = Depends(editor)) -> RetentionResult:
    return ws.registry.apply_retention(
        name, keep_last=body.keep_last, min_age_days=body.min_age_days, dry_run=body.dry_run
    )


@router.get("/models/{name}/versions", response_model=Page[ModelVersion])
def list_versions(
    name: str,
    include_archived: bool = True,
    limit: int = 100,
    page_token: str | None = None,
    ws: Workspace = Depends(viewer),
) -> Page[ModelVersion]:
    return ws.registry.list_versions(
        name, include_archived=include_archived, limit=limit, page_token=page_token
    )


@router.post("/models/{name}/versions", status_code=201, response_model=ModelVersion)
def create_version(name: str, body: VersionCreate, ws: Workspace = Depends(editor)) -> ModelVersion:
    return ws.registry.create_version(
        name,
        body.manifest_digest,
        run_id=body.run_id,
        datasets=body.datasets,
        description=body.description,
        tags=body.tags,
        source=body.source,
    )


@router.get("/models/{name}/versions/{version}", response_model=ModelVersion)
def get_version(name: str, version: int, ws: Workspace = Depends(viewer)) -> ModelVersion:
    return ws.registry.get_version(name, version)


@router.patch("/models/{name}/versions/{version}", response_model=ModelVersion)
def update_version(
    name: str, version: int, body: VersionPatch, ws: Workspace = Depends(editor)
) -> ModelVersion:
    return ws.registry.update_version(
        name, version, description=body.description, tags=body.tags, remove_tags=body.remove_tags
    )


@router.post("/models/{name}/versions/{version}/archive", response_model=ModelVersion)
def archive_version(name: str, version: int, ws: Workspace = Depends(editor)) -> ModelVersion:
    return ws.registry.archive_version(name, version)


@router.post("/models/{name}/versions/{version}/restore", response_model=ModelVersion)
def restore_version(name: str, version: int, ws: Workspace = Depends(editor)) -> ModelVersion:
    return ws.registry.archive_version(name, version, archived=False)


@router.delete("/models/{name}/versions/{version}", status_code=204)
def delete_version(name: str, version: int, ws: Workspace = Depends(editor)) -> None:
    ws.registry.delete_version(name, version)


@router.get("/models/{name}/versions/{version}/card", response_model=ModelCard)
def get_card(name: str, version: int, format: str = "json", ws: Workspace = Depends(viewer)) -> Any:
    card = ws.registry.get_card(name, version)
    if format == "markdown":
        return PlainTextResponse(card.to_markdown(), media_type="text/markdown")
    if format != "json":
        raise InvalidInput("format must be json or markdown")
    return card


@router.patch("/models/{name}/versions/{version}/card", response_model=ModelCard)
def update_card(
    name: str, version: int, body: dict[str, Any], ws: Workspace = Depends(editor)
) -> ModelCard:
    return ws.registry.update_card(name, version, body)


@router.get("/models/{name}/versions/{version}/lineage", response_model=Lineage)
def get_lineage(name: str, version: int, ws: Workspace = Depends(viewer)) -> Lineage:
    return ws.registry.lineage(name, version)


@router.get("/models/{name}/versions/{version}/runtimes/{runtime}", response_model=VersionRuntime)
def get_runtime(
    name: str, version: int, runtime: str, ws: Workspace = Depends(viewer)
) -> VersionRuntime:
    """How an optimised runtime (``onnx``) compared with the version's native predictions."""
    found = ws.registry.get_runtime(name, version, runtime)
    if found is None:
        raise NotFound(f"{name} v{version} has no recorded {runtime} check yet")
    return found


@router.put("/models/{name}/aliases/{alias}", response_model=Alias)
def set_alias(name: str, alias: str, body: AliasSet, ws: Workspace = Depends(editor)) -> Alias:
    return ws.registry.set_alias(name, alias, body.version)


@router.get("/models/{name}/aliases/{alias}", response_model=Alias)
def get_alias(name: str, alias: str, ws: Workspace = Depends(viewer)) -> Alias:
    return ws.registry.get_alias(name, alias)


@router.delete("/models/{name}/aliases/{alias}", status_code=204)
def delete_alias(name: str, alias: str, ws: Workspace = Depends(editor)) -> None:
    ws.registry.delete_alias(name, alias)


@router.get("/resolve", response_model=ModelVersion)
def resolve(uri: str, ws: Workspace = Depends(viewer)) -> ModelVersion:
    """The version a ``models:/name@alias`` or ``models:/name/3`` URI names."""
    return ws.registry.resolve(uri)
