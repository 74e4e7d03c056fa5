"""Endpoint routes: what the gateway serves and how."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field, StrictBool

from modelyard.api.deps import editor, viewer
from modelyard.api.requests import ApiRoute
from modelyard.api.responses import problems
from modelyard.jsonio import JsonFloat, JsonInt, NotABoolean
from modelyard.registry.uri import ModelName, ModelUri
from modelyard.serving import Batching, CacheConfig, Endpoint, TrafficPolicy
from modelyard.serving.entities import (
    MAX_DEADLINE_MS,
    MAX_TIMEOUT_MS,
    ColumnName,
    GuardConfig,
    GuardStatus,
    RedactAction,
    Route,
    Variant,
    VariantStatus,
)
from modelyard.workspace import Workspace

router = APIRouter(tags=["serving"], route_class=ApiRoute)

# The serving domain's settings as a request sends them: a JSON true is not a batch size of 1,
# nor 0 a boolean, and every number is finite.


class RouteRequest(Route):
    target: ModelUri = Field(description="models:/name@alias or models:/name/3")
    weight: JsonFloat = Field(
        gt=0, le=1e9, allow_inf_nan=False, description="relative share; need not sum to 100"
    )


class VariantRequest(Variant):
    target: ModelUri = Field(description="models:/name@alias or models:/name/3")
    quality: JsonFloat | None = Field(
        default=None, allow_inf_nan=False, description="higher is better, e.g. accuracy"
    )


class TrafficPolicyRequest(TrafficPolicy):
    routes: list[RouteRequest] = Field(default_factory=list)  # type: ignore[assignment]
    shadow: ModelUri | None = None
    variants: list[VariantRequest] = Field(  # type: ignore[assignment]
        default_factory=list, max_length=16
    )
    slo_ms: JsonFloat | None = Field(default=None, gt=0, le=MAX_DEADLINE_MS, allow_inf_nan=False)


class BatchingRequest(Batching):
    max_batch_size: JsonInt = Field(default=64, ge=1, le=4096)
    max_wait_ms: JsonFloat = Field(default=2.0, ge=0, le=1000)


class CacheRequest(CacheConfig):
    enabled: StrictBool = False
    max_entries: JsonInt = Field(default=10_000, ge=1, le=10_000_000)
    ttl_seconds: JsonFloat = Field(default=300.0, gt=0, le=366 * 86_400, allow_inf_nan=False)


class GuardRequest(GuardConfig):
    threshold: JsonFloat = Field(default=0.5, gt=0, le=1, allow_inf_nan=False)


Redact = dict[ColumnName, RedactAction]


class EndpointCreate(BaseModel):
    name: ModelName
    target: ModelUri
    policy: TrafficPolicyRequest | None = None
    batching: BatchingRequest | None = None
    cache: CacheRequest | None = None
    runtime: Literal["auto", "native"] = "auto"
    pinned: StrictBool = False
    timeout_ms: JsonInt = Field(default=10_000, ge=1, le=MAX_TIMEOUT_MS)
    guard: GuardRequest | None = None
    redact: Redact | None = Field(default=None, max_length=1000)


class EndpointPatch(BaseModel):
    target: Annotated[ModelUri, Field(min_length=1)] | None = None
    policy: TrafficPolicyRequest | None = None
    batching: BatchingRequest | None = None
    cache: CacheRequest | None = None
    runtime: Literal["auto", "native"] | None = None
    pinned: StrictBool | None = None
    timeout_ms: Annotated[int, Field(ge=1, le=MAX_TIMEOUT_MS), NotABoolean] | None = None
    guard: GuardRequest | None = None
    redact: Redact | None = Field(
        default=None, max_length=1000, description="replaces the redaction whole; {} for none"
    )


@router.get("/endpoints", response_model=list[Endpoint])
def list_endpoints(ws: Workspace = Depends(viewer)) -> list[Endpoint]:
    return ws.endpoints.list()


@router.post("/endpoints", status_code=201, response_model=Endpoint, responses=problems(404))
def create_endpoint(body: EndpointCreate, ws: Workspace = Depends(editor)) -> Endpoint:
    return ws.endpoints.create(
        body.name,
        body.target,
        policy=body.policy,
        batching=body.batching,
        cache=body.cache,
        runtime=body.runtime,
        pinned=body.pinned,
        timeout_ms=body.timeout_ms,
        guard=body.guard,
        redact=body.redact,
    )


@router.get("/endpoints/{name}", response_model=Endpoint)
def get_endpoint(name: str, ws: Workspace = Depends(viewer)) -> Endpoint:
    return ws.endpoints.get(name)


@router.patch("/endpoints/{name}", response_model=Endpoint)
def update_endpoint(name: str, body: EndpointPatch, ws: Workspace = Depends(editor)) -> Endpoint:
    return ws.endpoints.update(name, **body.model_dump(exclude_unset=True, exclude_none=True))


@router.get("/endpoints/{name}/variants", response_model=list[VariantStatus])
def variant_status(name: str, ws: Workspace = Depends(viewer)) -> list[VariantStatus]:
    """The endpoint's variants (empty: not switched by deadline), each with the version it
    resolves to and the quality that ranks it, with its source."""
    return ws.endpoints.variant_status(name)


@router.get("/endpoints/{name}/guard", response_model=GuardStatus)
def guard_status(name: str, ws: Workspace = Depends(viewer)) -> GuardStatus:
    """The endpoint's input guard, and per served version whether it is active and why not."""
    return ws.endpoints.guard_status(name)


@router.delete("/endpoints/{name}", status_code=204)
def delete_endpoint(name: str, ws: Workspace = Depends(editor)) -> None:
    ws.endpoints.delete(name)
