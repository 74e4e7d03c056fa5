"""MLflow's tracking REST API (experiments, runs, metrics) over modelyard's tracking service.

Each route reads MLflow's request JSON (``mlflow/protos/service.proto``), calls the tracking
service, and answers in MLflow's JSON: the runs are modelyard's runs, shown alike by its own
API, CLI and dashboard. How MLflow's notions map:

- Experiment ``"0"``, where MLflow's clients log when no experiment is set, is the
  experiment named ``Default`` (created on first use); it is reported back as ``"0"``
  wherever it appears, so the client's comparisons of ids hold. Other ids are modelyard's.
- A deleted experiment is an archived one; a deleted run keeps its data with ``deleted_at``
  set. Both are restored at will, as in MLflow.
- Run statuses are modelyard's in upper case (``SCHEDULED`` is refused: a run exists once it
  runs). An ended run still takes metrics, params and tags, as MLflow's server allows.
- Times are milliseconds since the epoch; NaN and infinite metric values travel as MLflow's
  client sends them, the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.
- Datasets of ``log-inputs`` are recorded by reference (name, digest, source, schema, row
  count) as dataset versions linked to the run; their data stays where it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Query, Response

from modelyard.api.deps import editor, viewer
from modelyard.api.mlflow.protocol import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    MlflowError,
    MlflowRoute,
)
from modelyard.api.mlflow.tracking_messages import (
    CONTEXT_TAG,
    DEFAULT_EXPERIMENT,
    DEFAULT_EXPERIMENT_ID,
    DEFAULT_MAX_RESULTS,
    LOGGED_MODELS_TAG,
    RUN_NAME_TAG,
    CreateExperiment,
    CreateRun,
    DeleteTag,
    ExperimentMessage,
    KeyValue,
    LogBatch,
    LogInputs,
    LogMetric,
    LogModel,
    LogParam,
    Metric,
    RunMessage,
    SearchExperiments,
    SearchRuns,
    SetExperimentTag,
    SetTag,
    UpdateExperiment,
    UpdateRun,
    column_schema,
    dataset_source,
    experiment_json,
    from_ms,
    metric_json,
    num_rows,
    run_info,
    run_json,
    runs_json,
    wire_experiment_id,
)
from modelyard.errors import NotFound
from modelyard.governance import Role
from modelyard.page import MAX_LIMIT, Page, decode_token, encode_token
from modelyard.tracking.entities import Experiment, Lifecycle, Run
from modelyard.tracking.service import ParamChanged
from modelyard.workspace import Workspace

router = APIRouter(route_class=MlflowRoute)

T = TypeVar("T")

#: MLflow's limits (mlflow/utils/validation.py), enforced as its server does.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_RESULTS = 50_000

_VIEW_TYPES: dict[str | int, Lifecycle] = {
    "ACTIVE_ONLY": "active",
    "DELETED_ONLY": "deleted",
    "ALL": "all",
    1: "active",
    2: "deleted",
    3: "all",
}
_STATUSES = {"RUNNING": "running", "FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}
# RunStatus's numbers in MLflow's proto (a client may send the enum as a number)
_STATUS_NUMBERS = {1: "RUNNING", 2: "SCHEDULED", 3: "FINISHED", 4: "FAILED", 5: "KILLED"}


# --- answers and checks -------------------------------------------------------------------


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _ok() -> Response:
    return Response(b"{}", media_type="application/json")


def _lifecycle(view_type: str | int, field: str) -> Lifecycle:
    lifecycle = _VIEW_TYPES.get(view_type)
    if lifecycle is None:
        raise MlflowError(
            INVALID_PARAMETER_VALUE,
            f"{field} {view_type!r} is not a view type; use ACTIVE_ONLY, DELETED_ONLY or ALL",
        )
    return lifecycle


def _status(status: str | int) -> str:
    name = _STATUS_NUMBERS.get(status, status) if isinstance(status, int) else status.upper()
    if name == "SCHEDULED":
        raise MlflowError(
            INVALID_PARAMETER_VALUE,
            "modelyard has no SCHEDULED runs; create the run when it starts (RUNNING)",
        )
    if name not in _STATUSES:
        raise MlflowError(
            INVALID_PARAMETER_VALUE,
            f"status {status!r} is not a run status; use RUNNING, FINISHED, FAILED or KILLED",
        )
    return _STATUSES[name]


def _max_results(value: int) -> int:
    if not 1 <= value <= MAX_RESULTS:
        raise MlflowError(
            INVALID_PARAMETER_VALUE,
            f"max_results must be between 1 and {MAX_RESULTS}, got {value}",
        )
    return value


def _collect(
    fetch: Callable[[int, str | None], Page[T]], max_results: int, token: str | None
) -> tuple[list[T], str | None]:
    """Up to ``max_results`` items from pages of at most modelyard's page size."""
    items: list[T] = []
    while True:
        page = fetch(min(MAX_LIMIT, max_results - len(items)), token)
        items.extend(page.items)
        token = page.next_page_token
        if token is None or len(items) >= max_results:
            return items, token


def _page_json(body: dict[str, Any], token: str | None) -> Response:
    if token:
        body["next_page_token"] = token
    return _json(body)


@contextmanager
def _params_immutable() -> Iterator[None]:
    """MLflow answers a changed param as an invalid value, not a conflict of state."""
    try:
        yield
    except ParamChanged as exc:
        raise MlflowError(INVALID_PARAMETER_VALUE, exc.detail) from None


# --- experiments --------------------------------------------------------------------------


def _experiment_id(ws: Workspace, wire_id: str) -> str:
    """modelyard's id of the experiment MLflow's ``wire_id`` names ("0": Default, made on
    first use, as MLflow's server always has it)."""
    if wire_id == DEFAULT_EXPERIMENT_ID:
        return ws.tracking.get_or_create_experiment(DEFAULT_EXPERIMENT).id
    if not wire_id:
        raise MlflowError(INVALID_PARAMETER_VALUE, "give the experiment's id as experiment_id")
    return wire_id


def _known_experiment_ids(ws: Workspace, wire_ids: Sequence[str]) -> list[str]:
    """modelyard's ids for a search: "0" only if Default exists (a read creates nothing)."""
    ids = [i for i in wire_ids if i != DEFAULT_EXPERIMENT_ID]
    if DEFAULT_EXPERIMENT_ID in wire_ids:
        with suppress(NotFound):
            ids.append(ws.tracking.get_experiment(DEFAULT_EXPERIMENT).id)
    return ids


@router.post("/experiments/create")
def create_experiment(body: CreateExperiment, ws: Workspace = Depends(editor)) -> Response:
    # artifact_location is not honoured: files go to modelyard's artifact store, and each
    # run reports where (its artifact_uri)
    tags = {t.key: t.value for t in body.tags}
    exp = ws.tracking.create_experiment(body.name, tags=tags)
    return _json({"experiment_id": wire_experiment_id(exp.id, exp.name)})


@router.get("/experiments/get")
def get_experiment(experiment_id: str = Query(""), ws: Workspace = Depends(viewer)) -> Response:
    if experiment_id == DEFAULT_EXPERIMENT_ID and not ws.identity.role.allows(Role.editor):
        # a viewer's read creates nothing: Default is made by the first who may write
        exp = ws.tracking.get_experiment(DEFAULT_EXPERIMENT)
    else:
        exp = ws.tracking.get_experiment_by_id(_experiment_id(ws, experiment_id))
    return _json({"experiment": experiment_json(exp)})


@router.get("/experiments/get-by-name")
def get_experiment_by_name(
    experiment_name: str = Query(""), ws: Workspace = Depends(viewer)
) -> Response:
    if not experiment_name:
        raise MlflowError(INVALID_PARAMETER_VALUE, "give the experiment's name as experiment_name")
    exp = ws.tracking.get_experiment(experiment_name)
    if exp.name != experiment_name:  # found by id: this route looks up names only
        raise MlflowError(RESOURCE_DOES_NOT_EXIST, f"no experiment named {experiment_name!r}")
    return _json({"experiment": experiment_json(exp)})


def _search_experiments(ws: Workspace, body: SearchExperiments) -> Response:
    lifecycle = _lifecycle(body.view_type, "view_type")
    decode_token(body.page_token)  # a bad token is refused before anything else

    def fetch(limit: int, token: str | None) -> Page[Experiment]:
        return ws.tracking.search_experiments(
            filter_string=body.filter,
            order_by=body.order_by,
            lifecycle=lifecycle,
            limit=limit,
            page_token=token,
        )

    items, token = _collect(fetch, _max_results(body.max_results), body.page_token)
    # protobuf's JSON, MLflow's server's, leaves an empty list out
    found = {"experiments": [experiment_json(e) for e in items]} if items else {}
    return _page_json(found, token)


@router.post("/experiments/search")
def search_experiments(body: SearchExperiments, ws: Workspace = Depends(viewer)) -> Response:
    return _search_experiments(ws, body)


@router.get("/experiments/search")
def search_experiments_get(
    max_results: int = Query(DEFAULT_MAX_RESULTS),
    page_token: str | None = Query(None),
    filter: str = Query(""),
    order_by: list[str] = Query(default=[]),
    view_type: str = Query("ACTIVE_ONLY"),
    ws: Workspace = Depends(viewer),
) -> Response:
    view: str | int = int(view_type) if view_type.isascii() and view_type.isdigit() else view_type
    body = SearchExperiments(
        max_results=max_results,
        page_token=page_token,
        filter=filter,
        order_by=order_by,
        view_type=view,
    )
    return _search_experiments(ws, body)


@router.post("/experiments/update")
def update_experiment(body: UpdateExperiment, ws: Workspace = Depends(editor)) -> Response:
    if body.experiment_id == DEFAULT_EXPERIMENT_ID:
        raise MlflowError(
            INVALID_PARAMETER_VALUE,
            f"experiment 0 is the one named {DEFAULT_EXPERIMENT!r} and keeps that name; "
            "create another experiment instead",
        )
    ws.tracking.rename_experiment(_experiment_id(ws, body.experiment_id), body.new_name)
    return _ok()


@router.post("/experiments/delete")
def delete_experiment(body: ExperimentMessage, ws: Workspace = Depends(editor)) -> Response:
    if body.experiment_id == DEFAULT_EXPERIMENT_ID:
        raise MlflowError(INVALID_PARAMETER_VALUE, "the default experiment (0) cannot be deleted")
    ws.tracking.archive_experiment(_experiment_id(ws, body.experiment_id))
    return _ok()


@router.post("/experiments/restore")
def restore_experiment(body: ExperimentMessage, ws: Workspace = Depends(editor)) -> Response:
    ws.tracking.restore_experiment(_experiment_id(ws, body.experiment_id))
    return _ok()


@router.post("/experiments/set-experiment-tag")
def set_experiment_tag(body: SetExperimentTag, ws: Workspace = Depends(editor)) -> Response:
    ws.tracking.set_experiment_tags(_experiment_id(ws, body.experiment_id), {body.key: body.value})
    return _ok()


@router.post("/experiments/delete-experiment-tag")
def delete_experiment_tag(body: SetExperimentTag, ws: Workspace = Depends(editor)) -> Response:
    ws.tracking.delete_experiment_tag(_experiment_id(ws, body.experiment_id), body.key)
    return _ok()


# --- runs ---------------------------------------------------------------------------------


@router.post("/runs/create")
def create_run(body: CreateRun, ws: Workspace = Depends(editor)) -> Response:
    tags = {t.key: t.value for t in body.tags}
    name = body.run_name or tags.get(RUN_NAME_TAG, "")
    if name:  # MLflow's server keeps the name in this tag too, and its UI reads it there
        tags[RUN_NAME_TAG] = name
    start = None if body.start_time is None else from_ms(body.start_time, "start_time")
    wire_id = body.experiment_id or DEFAULT_EXPERIMENT_ID
    if wire_id == DEFAULT_EXPERIMENT_ID:  # by name: created with the run if it is the first
        run = ws.tracking.start_run(DEFAULT_EXPERIMENT, name=name, tags=tags, start_time=start)
    else:
        run = ws.tracking.start_run(experiment_id=wire_id, name=name, tags=tags, start_time=start)
    return _json({"run": run_json(run)})  # new: no metrics or inputs to read


@router.get("/runs/get")
def get_run(
    run_id: str = Query(""), run_uuid: str = Query(""), ws: Workspace = Depends(viewer)
) -> Response:
    run = ws.tracking.get_run(RunMessage(run_id=run_id, run_uuid=run_uuid).run)
    return _json({"run": runs_json(ws, [run])[0]})


@router.post("/runs/update")
def update_run(body: UpdateRun, ws: Workspace = Depends(editor)) -> Response:
    status = None if body.status is None else _status(body.status)
    end = None if body.end_time is None else from_ms(body.end_time, "end_time")
    run = ws.tracking.update_run(body.run, status=status, end_time=end, name=body.run_name)
    if body.run_name:
        ws.tracking.set_tags(run.id, {RUN_NAME_TAG: body.run_name})
    return _json({"run_info": run_info(run)})


@router.post("/runs/delete")
def delete_run(body: RunMessage, ws: Workspace = Depends(editor)) -> Response:
    ws.tracking.delete_run(body.run)
    return _ok()


@router.post("/runs/restore")
def restore_run(body: RunMessage, ws: Workspace = Depends(editor)) -> Response:
    ws.tracking.restore_run(body.run)
    return _ok()


@router.post("/runs/search")
def search_runs(body: SearchRuns, ws: Workspace = Depends(viewer)) -> Response:
    lifecycle = _lifecycle(body.run_view_type, "run_view_type")
    max_results = _max_results(body.max_results)
    decode_token(body.page_token)
    if not body.experiment_ids:
        raise MlflowError(
            INVALID_PARAMETER_VALUE, "give the experiments to search as experiment_ids"
        )
    ids = _known_experiment_ids(ws, body.experiment_ids)

    def fetch(limit: int, token: str | None) -> Page[Run]:
        return ws.tracking.search_runs(
            experiment_ids=ids,
            filter_string=body.filter,
            order_by=body.order_by,
            lifecycle=lifecycle,
            limit=limit,
            page_token=token,
        )

    runs, token = _collect(fetch, max_results, body.page_token)
    return _page_json({"runs": runs_json(ws, runs)} if runs else {}, token)


def _log_batch(
    ws: Workspace,
    run_id: str,
    metrics: Sequence[Metric] = (),
    params: Sequence[KeyValue] = (),
    tags: Sequence[KeyValue] = (),
) -> None:
    param_values: dict[str, str] = {}
    for p in params:
        if param_values.setdefault(p.key, p.value) != p.value:
            raise MlflowError(
                INVALID_PARAMETER_VALUE,
                f"param {p.key!r} is given twice with different values "
                f"({param_values[p.key]!r}, {p.value!r}); send each param once",
            )
    tag_values = {t.key: t.value for t in tags}
    points = [
        {
            "key": m.key,
            "value": m.value,
            "step": m.step,
            "timestamp": None if m.timestamp is None else from_ms(m.timestamp, "timestamp"),
        }
        for m in metrics
    ]
    with _params_immutable():
        ws.tracking.log_batch(
            run_id,
            metrics=points,
            params=param_values,
            tags=tag_values,
            running_only=False,
            # MLflow 3's log_model logs the run's points again, with the model's id
            skip_repeated=any(m.model_id for m in metrics),
        )
    if RUN_NAME_TAG in tag_values:  # the tag renames the run, as on MLflow's server
        ws.tracking.update_run(run_id, name=tag_values[RUN_NAME_TAG])


@router.post("/runs/log-metric")
def log_metric(body: LogMetric, ws: Workspace = Depends(editor)) -> Response:
    _log_batch(ws, body.run, metrics=[body])
    return _ok()


@router.post("/runs/log-parameter")
def log_param(body: LogParam, ws: Workspace = Depends(editor)) -> Response:
    _log_batch(ws, body.run, params=[KeyValue(key=body.key, value=body.value)])
    return _ok()


@router.post("/runs/set-tag")
def set_tag(body: SetTag, ws: Workspace = Depends(editor)) -> Response:
    _log_batch(ws, body.run, tags=[KeyValue(key=body.key, value=body.value)])
    return _ok()


@router.post("/runs/delete-tag")
def delete_tag(body: DeleteTag, ws: Workspace = Depends(editor)) -> Response:
    ws.tracking.delete_tag(body.run, body.key)
    return _ok()


@router.post("/runs/log-batch")
def log_batch(body: LogBatch, ws: Workspace = Depends(editor)) -> Response:
    counts = {"metrics": len(body.metrics), "params": len(body.params), "tags": len(body.tags)}
    limits = {
        "metrics": MAX_METRICS_PER_BATCH,
        "params": MAX_PARAMS_TAGS_PER_BATCH,
        "tags": MAX_PARAMS_TAGS_PER_BATCH,
    }
    for what, count in counts.items():
        if count > limits[what]:
            raise MlflowError(
                INVALID_PARAMETER_VALUE,
                f"a batch can hold at most {limits[what]} {what}, this one has {count}; "
                "split them across several requests",
            )
    total = sum(counts.values())
    if total > MAX_ENTITIES_PER_BATCH:
        raise MlflowError(
            INVALID_PARAMETER_VALUE,
            f"a batch can hold at most {MAX_ENTITIES_PER_BATCH} metrics, params and tags "
            f"together, this one has {total}; split them across several requests",
        )
    _log_batch(ws, body.run, body.metrics, body.params, body.tags)
    return _ok()


@router.post("/runs/log-model")
def log_model(body: LogModel, ws: Workspace = Depends(editor)) -> Response:
    """Add a logged model's description to the run's ``mlflow.log-model.history`` tag."""
    try:
        model = orjson.loads(body.model_json)
    except orjson.JSONDecodeError:
        model = None
    if not isinstance(model, dict):
        raise MlflowError(INVALID_PARAMETER_VALUE, "model_json must be a JSON object (MLmodel)")
    missing = {"artifact_path", "flavors", "utc_time_created", "run_id"} - set(model)
    if missing:
        raise MlflowError(
            INVALID_PARAMETER_VALUE,
            f"model_json lacks the fields {', '.join(sorted(missing))}",
        )
    ws.tracking.append_to_tag(body.run, LOGGED_MODELS_TAG, model)
    return _ok()


@router.post("/runs/log-inputs")
def log_inputs(body: LogInputs, ws: Workspace = Depends(editor)) -> Response:
    # models (MLflow 3's logged models as inputs) are not recorded as run inputs
    run_id = body.run
    for item in body.datasets:
        ds = item.dataset
        if not ds.name or not ds.digest:
            raise MlflowError(INVALID_PARAMETER_VALUE, "each dataset needs a name and a digest")
        context = next((t.value for t in item.tags if t.key == CONTEXT_TAG), "")
        ws.tracking.log_dataset_reference(
            ds.name,
            ds.digest,
            source=dataset_source(ds.source_type, ds.source),
            num_rows=num_rows(ds.profile),
            schema=column_schema(ds.schema_),
            run_id=run_id,
            context=context,
        )
    return _ok()


# --- metrics ------------------------------------------------------------------------------


@router.get("/metrics/get-history")
def get_metric_history(
    run_id: str = Query(""),
    run_uuid: str = Query(""),
    metric_key: str = Query(""),
    max_results: int | None = Query(None),
    page_token: str | None = Query(None),
    ws: Workspace = Depends(viewer),
) -> Response:
    run = RunMessage(run_id=run_id, run_uuid=run_uuid).run
    if not metric_key:
        raise MlflowError(INVALID_PARAMETER_VALUE, "give the metric's key as metric_key")
    offset = decode_token(page_token)
    points = ws.tracking.get_metric_history(run, metric_key)
    limit = len(points) if max_results is None else _max_results_history(max_results)
    page = points[offset : offset + limit]
    body: dict[str, Any] = {}
    if page:
        body["metrics"] = [{**metric_json(p), "run_id": run} for p in page]
    more = offset + limit < len(points)
    return _page_json(body, encode_token(offset + limit) if more else None)


def _max_results_history(value: int) -> int:
    if value < 1:
        raise MlflowError(
            INVALID_PARAMETER_VALUE, f"max_results must be a positive number of points, got {value}"
        )
    return value
