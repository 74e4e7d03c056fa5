"""Pipeline routes: definitions, runs, triggers, promotions, approvals, delivery KPIs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from modelyard.api.deps import editor, member, viewer
from modelyard.api.requests import ApiRoute, documented, patch_body
from modelyard.api.responses import problems
from modelyard.governance.approvals import MAX_SUBJECT, Approval
from modelyard.page import Limit, Page
from modelyard.pipelines.dag import PIPELINE_NAME
from modelyard.pipelines.delivery import (
    DeliveryReport,
    MaturityReport,
    delivery_report,
    maturity_report,
)
from modelyard.pipelines.gates import Promotion, list_promotions
from modelyard.pipelines.runs import PipelineRun
from modelyard.pipelines.service import RegisteredPipeline
from modelyard.pipelines.triggers import Trigger, TriggerEvent, TriggerSpec
from modelyard.workspace import Workspace

router = APIRouter(tags=["pipelines"], route_class=ApiRoute)


class PipelineCreate(BaseModel):
    name: Annotated[str, documented(PIPELINE_NAME, "up to 128 letters, digits, '.', '_', '-'")]
    source: str = Field(description='"package.module:attr" or a YAML path the server can read')
    description: str = ""


class RunCreate(BaseModel):
    params: dict[str, Any] = Field(default_factory=dict)
    executor: str = Field(default="local", description="local, inprocess or ray")


class RunStarted(BaseModel):
    run_id: str


class Decision(BaseModel):
    note: str = ""


@router.get("/pipelines", response_model=Page[RegisteredPipeline])
def list_pipelines(
    limit: Limit = 100, page_token: str | None = None, ws: Workspace = Depends(viewer)
) -> Page[RegisteredPipeline]:
    return ws.pipelines.list(limit=limit, page_token=page_token)


@router.post(
    "/pipelines", status_code=201, response_model=RegisteredPipeline, responses=problems(404)
)
def register_pipeline(body: PipelineCreate, ws: Workspace = Depends(editor)) -> RegisteredPipeline:
    return ws.pipelines.register(body.name, body.source, description=body.description)


@router.get("/pipelines/{name}", response_model=RegisteredPipeline)
def get_pipeline(name: str, ws: Workspace = Depends(viewer)) -> RegisteredPipeline:
    return ws.pipelines.get(name)


@router.post("/pipelines/{name}/runs", status_code=202, response_model=RunStarted)
def start_run(name: str, body: RunCreate, ws: Workspace = Depends(editor)) -> RunStarted:
    """Start a run in its own process; poll ``/pipeline-runs/{run_id}`` for its outcome."""
    who = ws.identity  # the run acts as its starter: their role decides what it may change
    trigger = {"kind": "manual", "by": who.name, "role": who.role.value, "groups": who.groups}
    run_id = ws.pipelines.start(name, body.params, executor=body.executor, trigger=trigger)
    return RunStarted(run_id=run_id)


@router.get("/pipeline-runs", response_model=Page[PipelineRun])
def list_runs(
    pipeline: str | None = None,
    status: Literal["running", "succeeded", "failed"] | None = None,
    limit: Limit = 100,
    page_token: str | None = None,
    ws: Workspace = Depends(viewer),
) -> Page[PipelineRun]:
    return ws.pipelines.list_runs(pipeline, status, limit=limit, page_token=page_token)


@router.get("/pipeline-runs/{run_id}", response_model=PipelineRun)
def get_run(run_id: str, ws: Workspace = Depends(viewer)) -> PipelineRun:
    return ws.pipelines.get_run(run_id)


@router.get("/triggers", response_model=list[Trigger])
def list_triggers(pipeline: str | None = None, ws: Workspace = Depends(viewer)) -> list[Trigger]:
    return ws.pipelines.triggers.list(pipeline)


@router.post("/triggers", status_code=201, response_model=Trigger, responses=problems(404))
def create_trigger(body: TriggerSpec, ws: Workspace = Depends(editor)) -> Trigger:
    return ws.pipelines.triggers.create(body)


@router.get("/triggers/{name}", response_model=Trigger)
def get_trigger(name: str, ws: Workspace = Depends(viewer)) -> Trigger:
    return ws.pipelines.triggers.get(name)


if TYPE_CHECKING:
    TriggerPatch = BaseModel
else:
    TriggerPatch = patch_body(TriggerSpec, "TriggerPatch", fixed=("name", "kind"))


@router.patch("/triggers/{name}", response_model=Trigger)
def update_trigger(
    name: str,
    body: TriggerPatch,
    ws: Workspace = Depends(editor),
) -> Trigger:
    return ws.pipelines.triggers.update(name, **body.model_dump(exclude_unset=True))


@router.delete("/triggers/{name}", status_code=204)
def delete_trigger(name: str, ws: Workspace = Depends(editor)) -> None:
    ws.pipelines.triggers.delete(name)


@router.get("/trigger-events", response_model=list[TriggerEvent], responses=problems(404))
def trigger_events(
    trigger: str | None = None,
    limit: int = Query(100, ge=1, le=10_000),
    ws: Workspace = Depends(viewer),
) -> list[TriggerEvent]:
    return ws.pipelines.triggers.events(trigger, limit=limit)


@router.get("/promotions", response_model=list[Promotion], responses=problems(404))
def promotions(
    model: str | None = None,
    limit: Limit = 100,
    ws: Workspace = Depends(viewer),
) -> list[Promotion]:
    return list_promotions(ws, model, limit=limit)


@router.get("/delivery", response_model=DeliveryReport, responses=problems(404))
def delivery(model: str | None = None, ws: Workspace = Depends(viewer)) -> DeliveryReport:
    return delivery_report(ws, model)


@router.get("/maturity", response_model=MaturityReport)
def maturity(ws: Workspace = Depends(viewer)) -> MaturityReport:
    return maturity_report(ws)


@router.get("/approvals", response_model=list[Approval])
def list_approvals(
    status: Literal["pending", "approved", "rejected"] | None = None,
    subject: str | None = None,
    ws: Workspace = Depends(viewer),
) -> list[Approval]:
    return ws.approvals.list(status=status, subject=subject)


class ApprovalCreate(BaseModel):
    subject: str = Field(
        min_length=1, max_length=MAX_SUBJECT, examples=["models:/fraud/4@champion"]
    )
    context: dict[str, Any] = Field(default_factory=dict)


@router.post("/approvals", response_model=Approval, responses=problems(403))
def request_approval(body: ApprovalCreate, ws: Workspace = Depends(member)) -> Approval:
    """Ask for an approval of ``subject`` (the pending one if there is one already)."""
    return ws.approvals.request(body.subject, body.context)


@router.get("/approvals/{approval_id}", response_model=Approval, responses=problems(404))
def get_approval(approval_id: str, ws: Workspace = Depends(viewer)) -> Approval:
    return ws.approvals.get(approval_id)


@router.post("/approvals/{approval_id}/approve", response_model=Approval, responses=problems(403))
def approve(
    approval_id: str, body: Decision | None = None, ws: Workspace = Depends(member)
) -> Approval:
    """Approve as the caller (an approver of the subject's model; never the requester)."""
    return ws.approvals.approve(approval_id, note=body.note if body else "")


@router.post("/approvals/{approval_id}/reject", response_model=Approval, responses=problems(403))
def reject(
    approval_id: str, body: Decision | None = None, ws: Workspace = Depends(member)
) -> Approval:
    return ws.approvals.reject(approval_id, note=body.note if body else "")
