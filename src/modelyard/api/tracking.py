"""Tracking routes: experiments, runs, params, metrics, run artifacts, datasets."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field, WithJsonSchema

from modelyard.api.artifacts import Digest
from modelyard.api.deps import editor, viewer
from modelyard.api.requests import ApiRoute, documented
from modelyard.api.responses import OctetStreamResponse, problems
from modelyard.artifacts.scratch import scratch_dir
from modelyard.page import Limit, Page
from modelyard.registry.uri import VersionNumber
from modelyard.tracking.entities import (
    KEY,
    Dataset,
    Experiment,
    MetricPoint,
    Run,
    RunArtifact,
    RunComparison,
)
from modelyard.tracking.service import DATASET_NAME
from modelyard.workspace import Workspace

router = APIRouter(tags=["tracking"], route_class=ApiRoute)

ExperimentName = Annotated[
    str,
    documented(
        r"^[^\x00-\x1f]*[^\s\x00-\x1f\x85][^\x00-\x1f]*$",
        "up to 256 characters, not only spaces, no control characters",
        max_length=256,
    ),
]
#: Params or tags of a run: any JSON values, under keys the tracking domain checks.
Values = Annotated[
    dict[str, Any], WithJsonSchema({"type": "object", "propertyNames": {"pattern": KEY.pattern}})
]
DatasetName = Annotated[str, documented(DATASET_NAME, "letters, digits, '.', '_', '-'")]
ArtifactPath = Annotated[
    str, documented(r"^[^/\\][^\\]*$", "relative, with '/' between parts", max_length=1024)
]


class ExperimentCreate(BaseModel):
    name: ExperimentName
    description: str = ""
    project: str | None = None


class RunCreate(BaseModel):
    experiment: ExperimentName = Field(description="experiment name or id; a new name creates it")
    name: str = ""
    tags: Values = Field(default_factory=dict)
    params: Values = Field(default_factory=dict)


class RunEnd(BaseModel):
    status: Literal["finished", "failed", "killed"] = "finished"


class Metrics(BaseModel):
    metrics: list[MetricPoint]


class KeyValues(BaseModel):
    values: Values


class DatasetCreate(BaseModel):
    name: DatasetName
    artifact_digest: Digest = Field(description="digest of the uploaded .parquet or .csv bytes")
    file_format: Literal["parquet", "csv"] = "parquet"
    source: str = ""
    run_id: str | None = None
    context: str = "training"


@router.post("/experiments", status_code=201, response_model=Experiment, responses=problems(404))
def create_experiment(body: ExperimentCreate, ws: Workspace = Depends(editor)) -> Experiment:
    return ws.tracking.create_experiment(
        body.name, description=body.description, project=body.project
    )


@router.get("/experiments", response_model=Page[Experiment], responses=problems(404))
def list_experiments(
    q: str | None = None,
    project: str | None = None,
    limit: Limit = 100,
    page_token: str | None = None,
    ws: Workspace = Depends(viewer),
) -> Page[Experiment]:
    return ws.tracking.list_experiments(q=q, project=project, limit=limit, page_token=page_token)


@router.get("/experiments/{name_or_id}", response_model=Experiment)
def get_experiment(name_or_id: str, ws: Workspace = Depends(viewer)) -> Experiment:
    return ws.tracking.get_experiment(name_or_id)


@router.post("/runs", status_code=201, response_model=Run)
def start_run(body: RunCreate, ws: Workspace = Depends(editor)) -> Run:
    return ws.tracking.start_run(
        body.experiment, name=body.name, tags=body.tags, params=body.params
    )


@router.get("/runs", response_model=Page[Run], responses=problems(404))
def search_runs(
    experiment: str,
    filter: str = "",
    order_by: list[str] = Query(default=[]),
    limit: Limit = 100,
    page_token: str | None = None,
    ws: Workspace = Depends(viewer),
) -> Page[Run]:
    return ws.tracking.search_runs(
        experiment,
        filter_string=filter,
        order_by=order_by or None,
        limit=limit,
        page_token=page_token,
    )


@router.get("/runs/compare", response_model=RunComparison, responses=problems(404))
def compare_runs(
    run_id: list[str] = Query(min_length=1), ws: Workspace = Depends(viewer)
) -> RunComparison:
    return ws.tracking.compare_runs(run_id)


@router.get("/runs/{run_id}", response_model=Run)
def get_run(run_id: str, ws: Workspace = Depends(viewer)) -> Run:
    return ws.tracking.get_run(run_id)


@router.post("/runs/{run_id}/end", response_model=Run)
def end_run(run_id: str, body: RunEnd, ws: Workspace = Depends(editor)) -> Run:
    return ws.tracking.end_run(run_id, body.status)


@router.post("/runs/{run_id}/metrics", status_code=204)
def log_metrics(run_id: str, body: Metrics, ws: Workspace = Depends(editor)) -> Response:
    ws.tracking.log_metrics(run_id, body.metrics)
    return Response(status_code=204)


@router.get("/runs/{run_id}/metrics/{key}", response_model=list[MetricPoint])
def metric_history(run_id: str, key: str, ws: Workspace = Depends(viewer)) -> list[MetricPoint]:
    return ws.tracking.get_metric_history(run_id, key)


@router.post("/runs/{run_id}/params", status_code=204)
def log_params(run_id: str, body: KeyValues, ws: Workspace = Depends(editor)) -> Response:
    ws.tracking.log_params(run_id, body.values)
    return Response(status_code=204)


@router.post("/runs/{run_id}/tags", status_code=204)
def set_tags(run_id: str, body: KeyValues, ws: Workspace = Depends(editor)) -> Response:
    ws.tracking.set_tags(run_id, body.values)
    return Response(status_code=204)


@router.put(
    "/runs/{run_id}/artifacts/{path:path}",
    status_code=201,
    response_model=RunArtifact,
    responses=problems(413),
    openapi_extra={
        "requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}
    },
)
async def log_artifact(
    run_id: str, path: ArtifactPath, request: Request, ws: Workspace = Depends(editor)
) -> RunArtifact:
    from starlette.concurrency import run_in_threadpool

    from modelyard.errors import PayloadTooLarge

    body = await request.body()
    if len(body) > ws.settings.max_upload_bytes:
        raise PayloadTooLarge(f"artifact is over the {ws.settings.max_upload_bytes} byte limit")
    return await run_in_threadpool(ws.tracking.log_artifact, run_id, path, body)


@router.get("/runs/{run_id}/artifacts", response_model=list[RunArtifact])
def list_artifacts(run_id: str, ws: Workspace = Depends(viewer)) -> list[RunArtifact]:
    return ws.tracking.list_artifacts(run_id)


@router.get("/runs/{run_id}/artifacts/{path:path}", response_class=OctetStreamResponse)
def get_artifact(run_id: str, path: ArtifactPath, ws: Workspace = Depends(viewer)) -> Response:
    return Response(ws.tracking.get_artifact(run_id, path), media_type="application/octet-stream")


@router.post("/datasets", status_code=201, response_model=Dataset, responses=problems(404))
def log_dataset(body: DatasetCreate, ws: Workspace = Depends(editor)) -> Dataset:
    """Register a dataset whose file was uploaded to ``/artifacts`` first."""
    with scratch_dir(ws.settings.staging_dir) as tmp:  # swept if the server is killed here
        path = ws.artifacts.get_file(body.artifact_digest, tmp / f"data.{body.file_format}")
        return ws.tracking.log_dataset(
            body.name, path, source=body.source, run_id=body.run_id, context=body.context
        )


@router.get("/datasets", response_model=Page[Dataset])
def list_datasets(
    name: str | None = None,
    q: str | None = None,
    limit: Limit = 100,
    page_token: str | None = None,
    ws: Workspace = Depends(viewer),
) -> Page[Dataset]:
    return ws.tracking.list_datasets(name=name, q=q, limit=limit, page_token=page_token)


@router.get("/datasets/by-id/{dataset_id}", response_model=Dataset)
def get_dataset_by_id(dataset_id: str, ws: Workspace = Depends(viewer)) -> Dataset:
    return ws.tracking.get_dataset_by_id(dataset_id)


@router.get("/datasets/{name}", response_model=Dataset)
def get_dataset(
    name: DatasetName, version: VersionNumber | None = None, ws: Workspace = Depends(viewer)
) -> Dataset:
    return ws.tracking.get_dataset(name, version)
