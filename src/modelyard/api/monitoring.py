"""Monitoring routes: status, references, drift, operations, feedback, performance, alerts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field, StrictFloat, StrictInt, StrictStr

from modelyard.api.deps import editor, viewer
from modelyard.api.requests import ApiRoute, patch_body
from modelyard.api.responses import problems
from modelyard.jsonio import JsonTime
from modelyard.monitoring.alerts import Alert, AlertRule, AlertRuleSpec
from modelyard.monitoring.config import MonitorConfig
from modelyard.monitoring.entities import (
    EndpointDrift,
    EndpointStatus,
    MonitorPass,
    OpsWindow,
    ReferenceProfile,
)
from modelyard.monitoring.feedback import (
    Feedback,
    FeedbackItem,
    FeedbackResult,
    PendingFeedback,
)
from modelyard.monitoring.kpis import KpiEvaluation
from modelyard.monitoring.performance import PerformanceReport
from modelyard.monitoring.redaction import ForgetResult
from modelyard.registry.uri import ModelUri, VersionNumber
from modelyard.workspace import Workspace

router = APIRouter(prefix="/monitoring", tags=["monitoring"], route_class=ApiRoute)


Window = Query(
    None, ge=60, le=86_400, description="window length in seconds (a monitored granularity)"
)
Start = Query(None, description="range start (ISO 8601, UTC)")
End = Query(None, description="range end, exclusive (ISO 8601, UTC)")


class ReferenceCreate(BaseModel):
    uri: ModelUri = Field(description="models:/name/3 or models:/name@alias")
    dataset: str | None = Field(default=None, description="a registered dataset's name")
    dataset_version: VersionNumber | None = None
    data: dict[str, list[Any]] | None = Field(
        default=None, description="columns of reference rows, when no dataset is named"
    )


class FeedbackBatch(BaseModel):
    items: list[FeedbackItem] = Field(min_length=1, max_length=100_000)


class ForgetBody(BaseModel):
    key: str = Field(min_length=1, max_length=256, description="an input column, e.g. customer_id")
    value: StrictStr | StrictInt | StrictFloat = Field(
        description="the subject's value of that column"
    )


class ResolveBody(BaseModel):
    note: str = ""


class AcknowledgeBody(BaseModel):
    note: str = Field(default="", description="what you are doing about it")


@router.get("/status", response_model=list[EndpointStatus], responses=problems(404))
def status(endpoint: str | None = None, ws: Workspace = Depends(viewer)) -> list[EndpointStatus]:
    return ws.monitoring.status(endpoint)


@router.post("/run", response_model=MonitorPass)
def run_once(ws: Workspace = Depends(editor)) -> MonitorPass:
    """Run one monitor pass now (the server also runs them on its own)."""
    return ws.monitoring.run_once()


@router.get("/endpoints/{endpoint}/config", response_model=MonitorConfig)
def get_config(endpoint: str, ws: Workspace = Depends(viewer)) -> MonitorConfig:
    return ws.monitoring.get_config(endpoint)


@router.put("/endpoints/{endpoint}/config", response_model=MonitorConfig)
def configure(endpoint: str, body: MonitorConfig, ws: Workspace = Depends(editor)) -> MonitorConfig:
    return ws.monitoring.configure(endpoint, body)


@router.post(
    "/references", status_code=201, response_model=ReferenceProfile, responses=problems(404)
)
def set_reference(body: ReferenceCreate, ws: Workspace = Depends(editor)) -> ReferenceProfile:
    return ws.monitoring.set_reference(
        body.uri, data=body.data, dataset=body.dataset, dataset_version=body.dataset_version
    )


@router.get("/references", response_model=ReferenceProfile, responses=problems(404))
def get_reference(
    uri: ModelUri, include_profile: bool = False, ws: Workspace = Depends(viewer)
) -> ReferenceProfile:
    return ws.monitoring.get_reference(uri, include_profile=include_profile)


@router.get("/endpoints/{endpoint}/drift", response_model=EndpointDrift)
def drift(
    endpoint: str,
    window: int | None = Window,
    start: JsonTime | None = Start,
    end: JsonTime | None = End,
    version: VersionNumber | None = None,
    ws: Workspace = Depends(viewer),
) -> EndpointDrift:
    return ws.monitoring.drift(endpoint, window=window, start=start, end=end, version=version)


@router.get("/endpoints/{endpoint}/drift.html", response_class=HTMLResponse)
def drift_html(
    endpoint: str,
    window: int | None = Window,
    start: JsonTime | None = Start,
    end: JsonTime | None = End,
    version: VersionNumber | None = None,
    ws: Workspace = Depends(viewer),
) -> HTMLResponse:
    page = ws.monitoring.drift_html(endpoint, window=window, start=start, end=end, version=version)
    return HTMLResponse(page)


@router.get("/endpoints/{endpoint}/operations", response_model=list[OpsWindow])
def operations(
    endpoint: str,
    window: int | None = Window,
    start: JsonTime | None = Start,
    end: JsonTime | None = End,
    version: VersionNumber | None = None,
    ws: Workspace = Depends(viewer),
) -> list[OpsWindow]:
    return ws.monitoring.operations(endpoint, window=window, start=start, end=end, version=version)


@router.get("/endpoints/{endpoint}/performance", response_model=PerformanceReport)
def performance(
    endpoint: str,
    window: int | None = Window,
    start: JsonTime | None = Start,
    end: JsonTime | None = End,
    version: VersionNumber | None = None,
    slice_by: str | None = Query(None, description="an input feature to compare segments by"),
    ws: Workspace = Depends(viewer),
) -> PerformanceReport:
    return ws.monitoring.performance(
        endpoint, window=window, start=start, end=end, version=version, slice_by=slice_by
    )


@router.post("/endpoints/{endpoint}/feedback", response_model=FeedbackResult)
def submit_feedback(
    endpoint: str, body: FeedbackBatch, ws: Workspace = Depends(editor)
) -> FeedbackResult:
    """Store labels by request id: ``stored`` joined now, ``pending`` held until their
    predictions are logged (the monitor joins them; see ``/feedback/pending``)."""
    return ws.monitoring.submit_feedback(endpoint, body.items)


@router.get("/endpoints/{endpoint}/feedback/pending", response_model=list[PendingFeedback])
def list_held_feedback(
    endpoint: str,
    status: Literal["pending", "expired", "rejected"] | None = Query(
        None, description="pending, expired or rejected (default: all)"
    ),
    ws: Workspace = Depends(viewer),
) -> list[PendingFeedback]:
    return ws.monitoring.list_held_feedback(endpoint, status)


@router.get("/endpoints/{endpoint}/feedback", response_model=list[Feedback])
def list_feedback(
    endpoint: str,
    start: JsonTime | None = Start,
    end: JsonTime | None = End,
    version: VersionNumber | None = None,
    ws: Workspace = Depends(viewer),
) -> list[Feedback]:
    return ws.monitoring.list_feedback(endpoint, start=start, end=end, version=version)


@router.post(
    "/endpoints/{endpoint}/forget", response_model=ForgetResult, responses=problems(404, 409)
)
def forget(endpoint: str, body: ForgetBody, ws: Workspace = Depends(editor)) -> ForgetResult:
    """Remove one subject's rows from the endpoint's prediction log by a key column's value
    (hashed with the redaction key when the column is hashed); audited without the value."""
    return ws.monitoring.forget(endpoint, body.key, str(body.value))


@router.get("/rules", response_model=list[AlertRule])
def list_rules(endpoint: str | None = None, ws: Workspace = Depends(viewer)) -> list[AlertRule]:
    return ws.monitoring.list_rules(endpoint)


@router.post("/rules", status_code=201, response_model=AlertRule, responses=problems(404))
def create_rule(body: AlertRuleSpec, ws: Workspace = Depends(editor)) -> AlertRule:
    return ws.monitoring.create_rule(body)


@router.get("/rules/{name}", response_model=AlertRule)
def get_rule(name: str, ws: Workspace = Depends(viewer)) -> AlertRule:
    return ws.monitoring.get_rule(name)


if TYPE_CHECKING:
    RulePatch = BaseModel
else:
    RulePatch = patch_body(AlertRuleSpec, "RulePatch", fixed=("name",))


@router.patch("/rules/{name}", response_model=AlertRule)
def update_rule(
    name: str,
    body: RulePatch,
    ws: Workspace = Depends(editor),
) -> AlertRule:
    return ws.monitoring.update_rule(name, **body.model_dump(exclude_unset=True))


@router.delete("/rules/{name}", status_code=204)
def delete_rule(name: str, ws: Workspace = Depends(editor)) -> None:
    ws.monitoring.delete_rule(name)


@router.get("/alerts", response_model=list[Alert], responses=problems(404))
def list_alerts(
    endpoint: str | None = None,
    status: Literal["open", "escalated", "resolved", "active", "acknowledged"] | None = Query(
        None, description="active: open or escalated; acknowledged: active and acknowledged"
    ),
    since: JsonTime | None = Query(None, description="opened at or after (ISO 8601)"),
    rule: str | None = None,
    limit: int | None = Query(None, ge=1, le=10_000),
    ws: Workspace = Depends(viewer),
) -> list[Alert]:
    return ws.monitoring.list_alerts(endpoint, status, since, rule=rule, limit=limit)


@router.get("/alerts/{alert_id}", response_model=Alert)
def get_alert(alert_id: str, ws: Workspace = Depends(viewer)) -> Alert:
    return ws.monitoring.get_alert(alert_id)


@router.post("/alerts/{alert_id}/resolve", response_model=Alert)
def resolve_alert(
    alert_id: str, body: ResolveBody | None = None, ws: Workspace = Depends(editor)
) -> Alert:
    return ws.monitoring.resolve_alert(alert_id, note=body.note if body else "")


@router.post("/alerts/{alert_id}/acknowledge", response_model=Alert)
def acknowledge_alert(
    alert_id: str, body: AcknowledgeBody | None = None, ws: Workspace = Depends(editor)
) -> Alert:
    """Say you are on an open or escalated alert: it stays open but stops escalating. Again
    on an acknowledged alert: unchanged (the first acknowledgement stands); 409 if resolved."""
    return ws.monitoring.acknowledge_alert(alert_id, note=body.note if body else "")


@router.get("/kpis", response_model=list[KpiEvaluation], responses=problems(404))
def kpis(
    project: str,
    endpoint: str | None = None,
    kpi: str | None = None,
    since: JsonTime | None = None,
    window: int | None = Window,
    ws: Workspace = Depends(viewer),
) -> list[KpiEvaluation]:
    return ws.monitoring.kpis(project, endpoint=endpoint, kpi=kpi, since=since, window=window)
