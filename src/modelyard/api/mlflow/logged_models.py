"""MLflow 3's logged models (``/logged-models``) and ``/runs/outputs``, on the tracking
domain's :class:`~modelyard.tracking.logged_models.LoggedModelService`.

``mlflow.<flavor>.log_model(...)`` under MLflow 3 creates a logged model, links it to the
run (``runs/outputs``), uploads its files through the artifact proxy to the model's
``artifact_uri`` and finalizes it ``READY``. The JSON is MLflow's (service.proto's
``LoggedModel``); a model's metrics are its source run's latest ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from modelyard.api.deps import editor, viewer
from modelyard.api.mlflow.artifacts import file_response
from modelyard.api.mlflow.protocol import (
    INVALID_PARAMETER_VALUE,
    MlflowError,
    MlflowRoute,
    logged_model_uri,
)
from modelyard.api.mlflow.tracking import DEFAULT_EXPERIMENT, DEFAULT_EXPERIMENT_ID
from modelyard.api.mlflow.tracking_messages import double, ms
from modelyard.errors import NotFound
from modelyard.page import MAX_LIMIT
from modelyard.tracking.locations import Location, check_path, file_at, list_directory
from modelyard.tracking.logged_models import LoggedModel
from modelyard.workspace import Workspace

router = APIRouter(route_class=MlflowRoute)

#: MLflow's LoggedModelStatus names (and numbers) for modelyard's statuses.
STATUS_NAMES = {
    "pending": "LOGGED_MODEL_PENDING",
    "ready": "LOGGED_MODEL_READY",
    "failed": "LOGGED_MODEL_UPLOAD_FAILED",
}
_STATUS_NUMBERS = {1: "pending", 2: "ready", 3: "failed"}
#: How many models a search answers when MLflow's client asks for none in particular.
DEFAULT_MAX_RESULTS = 100


class _Body(BaseModel):
    # MLflow's client may send fields this server does not use (the id again, in the body)
    model_config = ConfigDict(extra="ignore")


class KeyValue(_Body):
    key: str
    value: str = ""


class CreateLoggedModel(_Body):
    experiment_id: str
    name: str | None = None
    model_type: str | None = None
    source_run_id: str | None = None
    params: list[KeyValue] = Field(default_factory=list)
    tags: list[KeyValue] = Field(default_factory=list)


class FinalizeLoggedModel(_Body):
    status: str | int


class OrderBy(_Body):
    field_name: str
    ascending: bool = True
    dataset_name: str | None = None
    dataset_digest: str | None = None


class SearchLoggedModels(_Body):
    experiment_ids: list[str] = Field(default_factory=list)
    filter: str | None = None
    datasets: list[dict[str, Any]] = Field(default_factory=list)
    max_results: int | None = None
    order_by: list[OrderBy] = Field(default_factory=list)
    page_token: str | None = None


class SetTags(_Body):
    tags: list[KeyValue] = Field(default_factory=list)


class LogParams(_Body):
    params: list[KeyValue] = Field(default_factory=list)


class ModelOutput(_Body):
    model_id: str
    step: int = 0


class LogOutputs(_Body):
    run_id: str
    models: list[ModelOutput] = Field(default_factory=list)


def _experiment_id(ws: Workspace, wire_id: str) -> str:
    """modelyard's id of the experiment MLflow's ``wire_id`` names ("0": the one named
    Default, made on first use, as the tracking routes have it)."""
    if wire_id == DEFAULT_EXPERIMENT_ID:
        return ws.tracking.get_or_create_experiment(DEFAULT_EXPERIMENT).id
    return wire_id


def _default_id(ws: Workspace) -> str | None:
    """modelyard's id of the experiment named Default, if it exists (a read creates nothing)."""
    try:
        return ws.tracking.get_experiment(DEFAULT_EXPERIMENT).id
    except NotFound:
        return None


def _wire_ids(ws: Workspace) -> Callable[[str], str]:
    """MLflow's id for each of modelyard's experiment ids ("0" for Default)."""
    default = _default_id(ws)
    return lambda experiment_id: (
        DEFAULT_EXPERIMENT_ID if experiment_id == default else experiment_id
    )


def model_json(model: LoggedModel, experiment_id: str) -> dict[str, Any]:
    """A logged model as MLflow's ``LoggedModel`` message, in experiment ``experiment_id``
    (MLflow's id of it)."""
    info: dict[str, Any] = {
        "model_id": model.id,
        "experiment_id": experiment_id,
        "name": model.name,
        "creation_timestamp_ms": ms(model.created_at),
        "last_updated_timestamp_ms": ms(model.updated_at),
        "artifact_uri": logged_model_uri(experiment_id, model.id),
        "status": STATUS_NAMES[model.status],
        "model_type": model.model_type,
        "tags": [{"key": k, "value": v} for k, v in model.tags.items()],
    }
    if model.source_run_id:
        info["source_run_id"] = model.source_run_id
    metrics = [
        {
            "key": m.key,
            "value": double(m.value),
            "timestamp": ms(m.timestamp) if m.timestamp else 0,
            "step": m.step,
            "run_id": model.source_run_id,
            "model_id": model.id,
        }
        for m in model.metrics
    ]
    params = [{"key": k, "value": v} for k, v in model.params.items()]
    return {"info": info, "data": {"params": params, "metrics": metrics}}


def _one(ws: Workspace, model: LoggedModel) -> Response:
    return JSONResponse({"model": model_json(model, _wire_ids(ws)(model.experiment_id))})


def _pairs(items: list[KeyValue]) -> dict[str, str]:
    return {i.key: i.value for i in items}


def _status(value: str | int) -> str:
    if isinstance(value, int):
        if value in _STATUS_NUMBERS:
            return _STATUS_NUMBERS[value]
    else:
        for status, name in STATUS_NAMES.items():
            if value.upper() in (name, name.removeprefix("LOGGED_MODEL_")):
                return status
    raise MlflowError(
        INVALID_PARAMETER_VALUE,
        f"status {value!r} is not a logged model status; use LOGGED_MODEL_READY or "
        "LOGGED_MODEL_UPLOAD_FAILED",
    )


def _limit(max_results: int | None) -> int:
    if max_results is None:
        return DEFAULT_MAX_RESULTS
    if max_results < 1:
        raise MlflowError(
            INVALID_PARAMETER_VALUE, f"max_results must be positive, got {max_results}"
        )
    # MLflow's client asks for as many as it wants and pages on next_page_token
    return min(max_results, MAX_LIMIT)


@router.post("/logged-models")
def create(body: CreateLoggedModel, ws: Workspace = Depends(editor)) -> Response:
    return _one(
        ws,
        ws.logged_models.create(
            _experiment_id(ws, body.experiment_id),
            name=body.name,
            source_run_id=body.source_run_id,
            model_type=body.model_type or "",
            params=_pairs(body.params),
            tags=_pairs(body.tags),
        ),
    )


@router.post("/logged-models/search")
def search(body: SearchLoggedModels, ws: Workspace = Depends(viewer)) -> Response:
    if body.datasets or any(o.dataset_name or o.dataset_digest for o in body.order_by):
        raise MlflowError(
            INVALID_PARAMETER_VALUE,
            "modelyard keeps a logged model's metrics per run, not per dataset: search "
            "without datasets (filter on metrics.<key> instead)",
        )
    wire = _wire_ids(ws)
    ids = [i for i in body.experiment_ids if i != DEFAULT_EXPERIMENT_ID]
    if DEFAULT_EXPERIMENT_ID in body.experiment_ids:
        default = _default_id(ws)
        if default is None and not ids:  # Default was never used: it holds nothing
            return JSONResponse({})
        ids += [default] if default else []
    page = ws.logged_models.search(
        ids,
        filter_string=body.filter or "",
        order_by=[(o.field_name, o.ascending) for o in body.order_by],
        limit=_limit(body.max_results),
        page_token=body.page_token,
    )
    answer: dict[str, Any] = {"models": [model_json(m, wire(m.experiment_id)) for m in page.items]}
    if page.next_page_token:
        answer["next_page_token"] = page.next_page_token
    return JSONResponse(answer)


@router.get("/logged-models/{model_id}")
def get(model_id: str, ws: Workspace = Depends(viewer)) -> Response:
    # ``allow_deleted``: a deleted model is gone here (nothing to restore it from)
    return _one(ws, ws.logged_models.get(model_id))


@router.patch("/logged-models/{model_id}")
def finalize(model_id: str, body: FinalizeLoggedModel, ws: Workspace = Depends(editor)) -> Response:
    return _one(ws, ws.logged_models.finalize(model_id, _status(body.status)))


@router.delete("/logged-models/{model_id}")
def delete(model_id: str, ws: Workspace = Depends(editor)) -> Response:
    ws.logged_models.delete(model_id)
    return JSONResponse({})


@router.patch("/logged-models/{model_id}/tags")
def set_tags(model_id: str, body: SetTags, ws: Workspace = Depends(editor)) -> Response:
    return _one(ws, ws.logged_models.set_tags(model_id, _pairs(body.tags)))


@router.delete("/logged-models/{model_id}/tags/{key:path}")
def delete_tag(model_id: str, key: str, ws: Workspace = Depends(editor)) -> Response:
    ws.logged_models.delete_tag(model_id, key)
    return JSONResponse({})


@router.post("/logged-models/{model_id}/params")
def log_params(model_id: str, body: LogParams, ws: Workspace = Depends(editor)) -> Response:
    ws.logged_models.log_params(model_id, _pairs(body.params))
    return JSONResponse({})


@router.get("/logged-models/{model_id}/artifacts/directories")
def list_files(
    model_id: str,
    artifact_directory_path: str = Query(""),
    ws: Workspace = Depends(viewer),
) -> Response:
    """A directory of the model's files (MLflow's UI), paths from the model's root."""
    loc = Location("model", model_id, check_path(artifact_directory_path))
    base = f"{loc.path}/" if loc.path else ""
    files = [
        {"path": base + e.name, "is_dir": True}
        if e.is_dir
        else {"path": base + e.name, "is_dir": False, "file_size": e.size}
        for e in list_directory(ws, loc)
    ]
    root = logged_model_uri(_wire_ids(ws)(ws.logged_models.get(model_id).experiment_id), model_id)
    return JSONResponse({"root_uri": root, "files": files})


@router.get("/logged-models/{model_id}/artifacts/files")
def download_file(
    model_id: str, artifact_file_path: str = Query(""), ws: Workspace = Depends(viewer)
) -> Response:
    """One of the model's files (MLflow's UI)."""
    if not artifact_file_path:
        raise MlflowError(INVALID_PARAMETER_VALUE, "give artifact_file_path=<path in the model>")
    loc = Location("model", model_id, check_path(artifact_file_path))
    return file_response(ws, file_at(ws, loc))


@router.post("/runs/outputs")
def log_outputs(body: LogOutputs, ws: Workspace = Depends(editor)) -> Response:
    """Link logged models to the run that output them (MLflow 3's ``log_model`` calls it)."""
    for output in body.models:
        ws.logged_models.link_run(body.run_id, output.model_id)
    return JSONResponse({})
