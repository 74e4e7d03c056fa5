"""Registry routes: models, versions, variants, aliases, cards, lineage, URI resolution."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, WithJsonSchema, model_validator

from modelyard.api.artifacts import Digest
from modelyard.api.deps import member, viewer
from modelyard.api.requests import ApiRoute
from modelyard.api.responses import problems
from modelyard.errors import InvalidInput, NotFound
from modelyard.jsonio import JsonFloat, JsonInt
from modelyard.page import Limit, Page
from modelyard.pipelines.variants import (
    DEFAULT_CALLS,
    MAX_CALLS,
    MAX_DEPTH,
    MIN_CALLS,
    VariantReport,
)
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
from modelyard.registry.entities import (
    MAX_RETENTION_DAYS,
    MAX_TAG_KEY,
    MAX_TAG_VALUE,
    CardSections,
    check_card_sections,
)
from modelyard.registry.history import TIME_FORMAT, AliasHistory
from modelyard.registry.service import MAX_REASON
from modelyard.registry.uri import MAX_VERSION, AliasName, ModelName, ModelUri, VersionNumber
from modelyard.workspace import Workspace

router = APIRouter(tags=["registry"], route_class=ApiRoute)

#: Tags as the registry keeps them (longer values are refused).
Tags = dict[
    Annotated[str, Field(min_length=1, max_length=MAX_TAG_KEY)],
    Annotated[str, Field(max_length=MAX_TAG_VALUE)],
]
TagFilter = Annotated[str, WithJsonSchema({"type": "string", "pattern": "^[^:]+:"})]


class ModelCreate(BaseModel):
    name: ModelName
    description: str = ""
    tags: Tags = Field(default_factory=dict)
    project: str | None = None


class ModelPatch(BaseModel):
    description: str | None = None
    tags: Tags = Field(default_factory=dict)
    remove_tags: list[str] = Field(default_factory=list)
    project: str | None = None


class VersionCreate(BaseModel):
    manifest_digest: Digest
    run_id: str | None = None
    datasets: list[DatasetLink] = Field(default_factory=list)
    description: str = ""
    tags: Tags = Field(default_factory=dict)
    source: str = ""


class VersionPatch(BaseModel):
    description: str | None = None
    tags: Tags = Field(default_factory=dict)
    remove_tags: list[str] = Field(default_factory=list)


class AliasSet(BaseModel):
    version: VersionNumber
    reason: str = Field(default="", max_length=MAX_REASON, description="kept in the audit log")


class Retention(BaseModel):
    keep_last: JsonInt = Field(ge=1, le=MAX_VERSION)
    min_age_days: JsonFloat = Field(default=0, ge=0, le=MAX_RETENTION_DAYS, allow_inf_nan=False)
    # Strict: 0 is not false (a real retention ran for "dry_run": 0).
    dry_run: StrictBool = Field(default=True, description="only report what would go")


def _tag_filters(tag: list[str]) -> dict[str, str]:
    filters = {}
    for item in tag:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise InvalidInput(f"tag filter {item!r} must look like key:value")
        filters[key] = value
    return filters


@router.get("/models", response_model=Page[RegisteredModel], responses=problems(404))
def list_models(
    q: str | None = None,
    tag: list[TagFilter] = Query(default=[], description="key:value, repeatable"),
    project: str | None = None,
    include_archived: bool = False,
    limit: Limit = 100,
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


@router.post("/models", status_code=201, response_model=RegisteredModel, responses=problems(404))
def create_model(body: ModelCreate, ws: Workspace = Depends(member)) -> RegisteredModel:
    return ws.registry.create_model(
        body.name, description=body.description, tags=body.tags, project=body.project
    )


@router.get("/models/{name}", response_model=RegisteredModel)
def get_model(name: ModelName, ws: Workspace = Depends(viewer)) -> RegisteredModel:
    return ws.registry.get_model(name)


@router.patch("/models/{name}", response_model=RegisteredModel)
def update_model(
    name: ModelName, body: ModelPatch, ws: Workspace = Depends(member)
) -> RegisteredModel:
    return ws.registry.update_model(
        name,
        description=body.description,
        tags=body.tags,
        remove_tags=body.remove_tags,
        project=body.project,
    )


@router.post("/models/{name}/archive", response_model=RegisteredModel)
def archive_model(name: ModelName, ws: Workspace = Depends(member)) -> RegisteredModel:
    return ws.registry.archive_model(name)


@router.post("/models/{name}/restore", response_model=RegisteredModel)
def restore_model(name: ModelName, ws: Workspace = Depends(member)) -> RegisteredModel:
    return ws.registry.archive_model(name, archived=False)


@router.delete("/models/{name}", status_code=204)
def delete_model(name: ModelName, ws: Workspace = Depends(member)) -> None:
    ws.registry.delete_model(name)


@router.post("/models/{name}/retention", response_model=RetentionResult)
def apply_retention(
    name: ModelName, body: Retention, ws: Workspace = Depends(member)
) -> RetentionResult:
    return ws.registry.apply_retention(
        name, keep_last=body.keep_last, min_age_days=body.min_age_days, dry_run=body.dry_run
    )


@router.get("/models/{name}/versions", response_model=Page[ModelVersion])
def list_versions(
    name: ModelName,
    include_archived: bool = True,
    limit: Limit = 100,
    page_token: str | None = None,
    ws: Workspace = Depends(viewer),
) -> Page[ModelVersion]:
    return ws.registry.list_versions(
        name, include_archived=include_archived, limit=limit, page_token=page_token
    )


@router.post("/models/{name}/versions", status_code=201, response_model=ModelVersion)
def create_version(
    name: ModelName, body: VersionCreate, ws: Workspace = Depends(member)
) -> ModelVersion:
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
def get_version(
    name: ModelName, version: VersionNumber, ws: Workspace = Depends(viewer)
) -> ModelVersion:
    return ws.registry.get_version(name, version)


@router.patch("/models/{name}/versions/{version}", response_model=ModelVersion)
def update_version(
    name: ModelName, version: VersionNumber, body: VersionPatch, ws: Workspace = Depends(member)
) -> ModelVersion:
    return ws.registry.update_version(
        name, version, description=body.description, tags=body.tags, remove_tags=body.remove_tags
    )


@router.post("/models/{name}/versions/{version}/archive", response_model=ModelVersion)
def archive_version(
    name: ModelName, version: VersionNumber, ws: Workspace = Depends(member)
) -> ModelVersion:
    return ws.registry.archive_version(name, version)


@router.post("/models/{name}/versions/{version}/restore", response_model=ModelVersion)
def restore_version(
    name: ModelName, version: VersionNumber, ws: Workspace = Depends(member)
) -> ModelVersion:
    return ws.registry.archive_version(name, version, archived=False)


@router.delete("/models/{name}/versions/{version}", status_code=204)
def delete_version(
    name: ModelName, version: VersionNumber, ws: Workspace = Depends(member)
) -> None:
    ws.registry.delete_version(name, version)


@router.get(
    "/models/{name}/versions/{version}/card",
    response_model=ModelCard,
    responses={200: {"content": {"text/markdown": {"schema": {"type": "string"}}}}},
)
def get_card(
    name: ModelName,
    version: VersionNumber,
    format: Literal["json", "markdown"] = "json",
    ws: Workspace = Depends(viewer),
) -> Any:
    card = ws.registry.get_card(name, version)
    if format == "markdown":
        return PlainTextResponse(card.to_markdown(), media_type="text/markdown")
    return card


class CardPatch(CardSections):
    """The sections to replace; the others keep their text."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known(cls, data: Any) -> Any:
        try:
            check_card_sections(data if isinstance(data, dict) else ())
        except InvalidInput as exc:  # the registry's message, rather than "extra inputs"
            raise ValueError(exc.detail) from None
        return data


@router.patch("/models/{name}/versions/{version}/card", response_model=ModelCard)
def update_card(
    name: ModelName, version: VersionNumber, body: CardPatch, ws: Workspace = Depends(member)
) -> ModelCard:
    return ws.registry.update_card(name, version, body.model_dump(exclude_unset=True))


@router.get("/models/{name}/versions/{version}/lineage", response_model=Lineage)
def get_lineage(
    name: ModelName, version: VersionNumber, ws: Workspace = Depends(viewer)
) -> Lineage:
    return ws.registry.lineage(name, version)


@router.get("/models/{name}/versions/{version}/runtimes/{runtime}", response_model=VersionRuntime)
def get_runtime(
    name: ModelName, version: VersionNumber, runtime: str, ws: Workspace = Depends(viewer)
) -> VersionRuntime:
    """How an optimised runtime (``onnx``) compared with the version's native predictions."""
    found = ws.registry.get_runtime(name, version, runtime)
    if found is None:
        raise NotFound(f"{name} v{version} has no recorded {runtime} check yet")
    return found


class VariantCreate(BaseModel):
    """Exactly one of ``quantize`` or ``distill``."""

    quantize: Literal["int8"] | None = Field(
        default=None, description="ONNX Runtime's dynamic quantisation of the parent's graph"
    )
    distill: Literal["tree", "logistic", "linear"] | None = Field(
        default=None, description="a student trained on the parent's answers on its training data"
    )
    name: ModelName | None = Field(
        default=None, description="register under this model (default: the parent's)"
    )
    target: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="the holdout's target column, when it is not the only non-input column",
    )
    max_depth: JsonInt | None = Field(
        default=None, ge=1, le=MAX_DEPTH, description="the tree's depth (distill: tree)"
    )
    latency_calls: JsonInt = Field(
        default=DEFAULT_CALLS, ge=MIN_CALLS, le=MAX_CALLS, description="calls per measurement"
    )


@router.post(
    "/models/{name}/versions/{version}/variants", status_code=201, response_model=VariantReport
)
def create_variant(
    name: ModelName, version: VersionNumber, body: VariantCreate, ws: Workspace = Depends(member)
) -> VariantReport:
    """Quantise or distill a version into the next version (of ``name`` in the body, or of
    this model), measured beside it on its holdout and for latency on the server; 422 with
    the reason (and what to try instead) when the version cannot be made so."""
    return ws.registry.create_variant(
        f"models:/{name}/{version}",
        quantize=body.quantize,
        distill=body.distill,
        name=body.name,
        target=body.target,
        max_depth=body.max_depth,
        latency_calls=body.latency_calls,
    )


@router.put("/models/{name}/aliases/{alias}", response_model=Alias, responses=problems(403))
def set_alias(
    name: ModelName, alias: AliasName, body: AliasSet, ws: Workspace = Depends(member)
) -> Alias:
    """Point an alias at a version; a protected alias only as its policies allow (403)."""
    return ws.registry.set_alias(name, alias, body.version, reason=body.reason)


@router.get("/models/{name}/aliases/{alias}", response_model=Alias)
def get_alias(name: ModelName, alias: AliasName, ws: Workspace = Depends(viewer)) -> Alias:
    return ws.registry.get_alias(name, alias)


@router.delete("/models/{name}/aliases/{alias}", status_code=204, responses=problems(403))
def delete_alias(
    name: ModelName,
    alias: AliasName,
    reason: Annotated[str, Query(max_length=MAX_REASON)] = "",
    ws: Workspace = Depends(member),
) -> None:
    ws.registry.delete_alias(name, alias, reason=reason)


@router.get(
    "/models/{name}/aliases/{alias}/history",
    response_model=AliasHistory,
    responses=problems(400, 404),
)
def alias_history(
    name: ModelName,
    alias: AliasName,
    limit: Limit = 100,
    as_of: Annotated[
        str | None,
        WithJsonSchema({"type": "string", "format": "date-time"}),
        Query(description=f"where the alias pointed then: {TIME_FORMAT}"),
    ] = None,
    ws: Workspace = Depends(viewer),
) -> AliasHistory:
    """The moves of an alias, newest first (up to ``as_of``), from the audit chain: when,
    who, the version before and after, the reason and approvals; 400 for a bad time."""
    return ws.registry.alias_history(name, alias, limit, as_of=as_of)


@router.get("/resolve", response_model=ModelVersion, responses=problems(404))
def resolve(uri: ModelUri, ws: Workspace = Depends(viewer)) -> ModelVersion:
    """The version a ``models:/name@alias`` or ``models:/name/3`` URI names."""
    return ws.registry.resolve(uri)
