"""Prediction limit routes: rate limits and daily quotas per token and endpoint."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from modelyard.api.deps import admin, viewer
from modelyard.api.requests import ApiRoute, documented
from modelyard.api.responses import problems
from modelyard.governance.identity import ENDPOINT_NAME
from modelyard.governance.limits import RATE_HELP, PredictionLimit
from modelyard.jsonio import JsonFloat, NotABoolean
from modelyard.store.schema import MAX_BIGINT, MAX_INTEGER
from modelyard.workspace import Workspace

router = APIRouter(tags=["governance"], route_class=ApiRoute)


class LimitSet(BaseModel):
    """A limit's scope (an endpoint, a token, or both) and its rate and/or daily quota."""

    model_config = {"extra": "forbid"}

    endpoint: Annotated[str, documented(ENDPOINT_NAME)] | None = None
    token: str | None = Field(
        default=None, max_length=64, description="an API token's id (`modelyard tokens list`)"
    )
    rate: JsonFloat | Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description=RATE_HELP
    )
    burst: Annotated[int, Field(ge=1, le=MAX_INTEGER), NotABoolean] | None = Field(
        default=None, description="requests at once before the rate applies; default: 1 s worth"
    )
    daily: Annotated[int, Field(ge=1, le=MAX_BIGINT), NotABoolean] | None = Field(
        default=None, description="rows predicted per UTC day, across every gateway worker"
    )


@router.get("/limits", response_model=list[PredictionLimit])
def list_limits(
    endpoint: str | None = None, token: str | None = None, ws: Workspace = Depends(viewer)
) -> list[PredictionLimit]:
    return ws.limits.list(endpoint=endpoint, token=token)


@router.put("/limits", response_model=PredictionLimit, responses=problems(404))
def set_limit(body: LimitSet, ws: Workspace = Depends(admin)) -> PredictionLimit:
    """Set the limit of a scope (replacing the one it has)."""
    return ws.limits.set(
        endpoint=body.endpoint,
        token=body.token,
        rate=body.rate,
        burst=body.burst,
        daily=body.daily,
    )


@router.get("/limits/{limit_id}", response_model=PredictionLimit)
def get_limit(limit_id: str, ws: Workspace = Depends(viewer)) -> PredictionLimit:
    return ws.limits.get(limit_id)


@router.delete("/limits/{limit_id}", status_code=204)
def delete_limit(limit_id: str, ws: Workspace = Depends(admin)) -> None:
    ws.limits.delete(limit_id)
