"""Rollout routes: start, watch and end a new version's way into an endpoint's traffic."""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, TypeVar, cast

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, StrictBool, create_model
from pydantic.fields import FieldInfo

from modelyard.api.deps import editor, viewer
from modelyard.api.requests import ApiRoute
from modelyard.api.responses import problems
from modelyard.jsonio import NotABoolean
from modelyard.page import Limit
from modelyard.registry.uri import ModelName, ModelUri
from modelyard.rollouts import Rollout, RolloutPlan
from modelyard.rollouts.service import RolloutPass
from modelyard.workspace import Workspace

router = APIRouter(tags=["rollouts"], route_class=ApiRoute)

M = TypeVar("M", bound=BaseModel)


class _Forbid(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _as_sent(annotation: Any, bounds: list[Any]) -> tuple[Any, bool]:
    """``annotation`` as a JSON body carries it, and whether ``bounds`` went into it.

    A number refuses a boolean (pydantic alone reads true as 1) and a boolean a number; the
    bounds go before that check, where the JSON schema still states them. Other types stay
    as they are.
    """
    if annotation is bool:
        return StrictBool, False
    if annotation in (int, float):
        return Annotated[(annotation, *bounds, NotABoolean)], True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        inner = [m for info in args[1:] for m in getattr(info, "metadata", [info])]
        sent, _ = _as_sent(args[0], inner)
        return (annotation if sent is args[0] else sent), False
    kinds = [a for a in args if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(kinds) == 1:  # X | None
        sent, moved = _as_sent(kinds[0], bounds)
        return (annotation if sent is kinds[0] else sent | None), moved
    if origin is list:
        sent, _ = _as_sent(args[0], [])
        return (annotation if sent is args[0] else list[sent]), False  # type: ignore[valid-type]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _request_body(annotation), False
    return annotation, False


def _request_body(model: type[M], **overrides: Any) -> type[M]:
    """``model`` as a request sends it: JSON's numbers and booleans, no unknown keys (a
    misspelt option is refused, not ignored); its bounds, defaults and checks unchanged.
    ``overrides`` are fields as ``create_model`` takes them."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        sent, moved = _as_sent(info.annotation, list(info.metadata))
        if moved:  # the bounds are in the annotation now, not on the field as well
            info = FieldInfo.merge_field_infos(info)
            info.metadata = []
        fields[name] = (sent, info)
    bases: tuple[type[BaseModel], ...] = (model, _Forbid)
    created = create_model(
        f"{model.__name__}Request",
        __base__=bases,
        __doc__=model.__doc__,
        __module__=__name__,
        **(fields | overrides),
    )
    return cast(type[M], created)


RolloutPlanRequest = _request_body(RolloutPlan)


class RolloutStart(_Forbid):
    endpoint: ModelName = Field(description="the endpoint whose traffic the rollout drives")
    to: ModelUri = Field(description="the new version: models:/NAME/VERSION (or @ALIAS)")
    plan: RolloutPlanRequest | None = Field(  # type: ignore[valid-type]
        default=None, description="how it proceeds; every field has a default"
    )


class RolloutNote(_Forbid):
    reason: str = Field(default="", max_length=2000, description="why, for the timeline")


@router.post("/rollouts", status_code=201, response_model=Rollout, responses=problems(404))
def start(body: RolloutStart, ws: Workspace = Depends(editor)) -> Rollout:
    """Start rolling ``to`` out on ``endpoint``: 409 while the endpoint has one running."""
    plan = None if body.plan is None else body.plan.model_dump(exclude_unset=True)
    return ws.rollouts.start(body.endpoint, body.to, plan)


@router.get("/rollouts", response_model=list[Rollout])
def list_rollouts(
    endpoint: str | None = None,
    active: bool | None = None,
    limit: Limit = 100,
    ws: Workspace = Depends(viewer),
) -> list[Rollout]:
    """Rollouts, newest first, each with its latest analysis (``active=true``: running)."""
    return ws.rollouts.list(endpoint, active=active, limit=limit)


@router.post("/rollout-passes", response_model=RolloutPass)
def run_once(ws: Workspace = Depends(editor)) -> RolloutPass:
    """One controller pass now (a server with its loops on runs one every second)."""
    return ws.rollouts.run_once()


@router.get("/rollouts/{ref}", response_model=Rollout)
def get_rollout(ref: str, ws: Workspace = Depends(viewer)) -> Rollout:
    """A rollout by id, or an endpoint's running (else latest) one by the endpoint's name."""
    return ws.rollouts.get(ref)


@router.post("/rollouts/{ref}/pause", response_model=Rollout)
def pause(ref: str, body: RolloutNote | None = None, ws: Workspace = Depends(editor)) -> Rollout:
    """Hold the weights where they are; no analysis acts until resumed."""
    return ws.rollouts.pause(ref, body.reason if body else "")


@router.post("/rollouts/{ref}/resume", response_model=Rollout)
def resume(ref: str, ws: Workspace = Depends(editor)) -> Rollout:
    """Carry on from the paused step; its window starts again."""
    return ws.rollouts.resume(ref)


@router.post("/rollouts/{ref}/abort", response_model=Rollout)
def abort(ref: str, body: RolloutNote | None = None, ws: Workspace = Depends(editor)) -> Rollout:
    """Send every request back to the baseline now; the rollout ends aborted."""
    return ws.rollouts.abort(ref, body.reason if body else "")


@router.post("/rollouts/{ref}/promote", response_model=Rollout)
def promote(ref: str, ws: Workspace = Depends(editor)) -> Rollout:
    """Skip the remaining steps and finish now (an alias move is checked as any other)."""
    return ws.rollouts.promote(ref)
