"""Endpoint routes: what the gateway serves and how."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from modelyard.api.deps import editor, viewer
from modelyard.serving import Batching, CacheConfig, Endpoint, TrafficPolicy
from modelyard.workspace import Workspace

router = APIRouter(tags=["serving"])


class EndpointCreate(BaseModel):
    name: str
    target: str
    policy: TrafficPolicy | None = None
    batching: Batching | None = None
    cache: CacheConfig | None = None
    runtime: Literal["auto", "native"] = "auto"
    pinned: bool = False
    timeout_ms: int = 10_000


class EndpointPatch(BaseModel):
    target: str | None = None
    policy: TrafficPolicy | None = None
    batching: Batching | None = None
    cache: CacheConfig | None = None
    runtime: Literal["auto", "native"] | None = None
    pinned: bool | None = None
    timeout_ms: int | None = None


@router.get("/endpoints", response_model=list[Endpoint])
def list_endpoints(ws: Workspace = Depends(viewer)) -> list[Endpoint]:
    return ws.endpoints.list()


@router.post("/endpoints", status_code=201, response_model=Endpoint)
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
    )


@router.get("/endpoints/{name}", response_model=Endpoint)
def get_endpoint(name: str, ws: Workspace = Depends(viewer)) -> Endpoint:
    return ws.endpoints.get(name)


@router.patch("/endpoints/{name}", response_model=Endpoint)
def update_endpoint(name: str, body: EndpointPatch, ws: Workspace = Depends(editor)) -> Endpoint:
    return ws.endpoints.update(name, **body.model_dump(exclude_unset=True, exclude_none=True))


@router.delete("/endpoints/{name}", status_code=204)
def delete_endpoint(name: str, ws: Workspace = Depends(editor)) -> None:
    ws.endpoints.delete(name)
