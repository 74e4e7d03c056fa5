"""MLflow's tracking messages: its requests as modelyard reads them, and its JSON forms of
experiments, runs, metrics and dataset inputs as modelyard writes them.

The fields are MLflow's (``mlflow/protos/service.proto``); what each maps to in modelyard is
said in :mod:`modelyard.api.mlflow.tracking`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from modelyard.api.mlflow.protocol import INVALID_PARAMETER_VALUE, MlflowError, run_artifact_uri
from modelyard.tracking.entities import ColumnSchema, Dataset, Experiment, MetricPoint, Run
from modelyard.tracking.search import EPOCH

if TYPE_CHECKING:
    from modelyard.workspace import Workspace

#: MLflow's default experiment: its id, and the modelyard experiment that stands for it.
DEFAULT_EXPERIMENT_ID = "0"
DEFAULT_EXPERIMENT = "Default"
#: Tags MLflow's clients and server give a meaning.
RUN_NAME_TAG = "mlflow.runName"
LOGGED_MODELS_TAG = "mlflow.log-model.history"
CONTEXT_TAG = "mlflow.data.context"
NOTE_TAG = "mlflow.note.content"

# MLflow's column types for the pandas dtypes modelyard records of a dataset's columns
_MLFLOW_TYPES = {
    "float64": "double",
    "float32": "float",
    "int64": "long",
    "int32": "integer",
    "bool": "boolean",
    "object": "string",
    "string": "string",
    "datetime64[ns]": "datetime",
}
_SOURCE = re.compile(r"^(?P<type>[a-z][a-z0-9_]*):(?P<source>\{.*\})$", re.DOTALL)
DEFAULT_MAX_RESULTS = 1000


class Message(BaseModel):
    """A request message: unknown fields are ignored, numbers read as strings where MLflow
    has strings (protobuf's JSON parser does the same)."""

    model_config = ConfigDict(coerce_numbers_to_str=True, extra="ignore")


class KeyValue(Message):
    key: str
    value: str = ""


class RunMessage(Message):
    run_id: str = ""
    run_uuid: str = ""  # MLflow's old name for run_id; its clients send both

    @property
    def run(self) -> str:
        run_id = self.run_id or self.run_uuid
        if not run_id:
            raise MlflowError(INVALID_PARAMETER_VALUE, "give the run's id as run_id")
        return run_id


class CreateExperiment(Message):
    name: str = ""
    artifact_location: str = ""
    tags: list[KeyValue] = Field(default_factory=list)


class ExperimentMessage(Message):
    experiment_id: str = ""


class UpdateExperiment(ExperimentMessage):
    new_name: str = ""


class SetExperimentTag(ExperimentMessage):
    key: str = ""
    value: str = ""


class SearchExperiments(Message):
    max_results: int = DEFAULT_MAX_RESULTS
    page_token: str | None = None
    filter: str = ""
    order_by: list[str] = Field(default_factory=list)
    view_type: str | int = "ACTIVE_ONLY"


class CreateRun(Message):
    experiment_id: str = ""
    user_id: str = ""
    run_name: str = ""
    start_time: int | None = None
    tags: list[KeyValue] = Field(default_factory=list)


class UpdateRun(RunMessage):
    status: str | int | None = None
    end_time: int | None = None
    run_name: str | None = None


class SearchRuns(Message):
    experiment_ids: list[str] = Field(default_factory=list)
    filter: str = ""
    run_view_type: str | int = "ACTIVE_ONLY"
    max_results: int = DEFAULT_MAX_RESULTS
    order_by: list[str] = Field(default_factory=list)
    page_token: str | None = None


class Metric(Message):
    key: str
    value: float
    timestamp: int | None = None
    step: int = 0
    #: MLflow 3: the logged model the point is also for (not kept: a model's metrics are
    #: its run's); dataset_name and dataset_digest are not kept either
    model_id: str = ""


class LogMetric(RunMessage, Metric):
    pass


class LogParam(RunMessage):
    key: str
    value: str = ""


class SetTag(RunMessage):
    key: str
    value: str = ""


class DeleteTag(RunMessage):
    key: str


class LogBatch(RunMessage):
    metrics: list[Metric] = Field(default_factory=list)
    params: list[KeyValue] = Field(default_factory=list)
    tags: list[KeyValue] = Field(default_factory=list)


class LogModel(RunMessage):
    model_json: str = ""


class DatasetMessage(Message):
    name: str = ""
    digest: str = ""
    source_type: str = ""
    source: str = ""
    schema_: str = Field("", alias="schema")
    profile: str = ""


class DatasetInput(Message):
    tags: list[KeyValue] = Field(default_factory=list)
    dataset: DatasetMessage


class LogInputs(RunMessage):
    datasets: list[DatasetInput] = Field(default_factory=list)


# --- MLflow's JSON forms ------------------------------------------------------------------


def ms(time: datetime | None) -> int | None:
    """A time as MLflow writes it: milliseconds since the epoch."""
    if time is None:
        return None
    return (time - EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int, what: str) -> datetime:
    """The time MLflow's ``ms`` stands for; ``what`` names the field in the error."""
    try:
        return EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        raise MlflowError(
            INVALID_PARAMETER_VALUE, f"{what} {ms} is not a time in milliseconds since the epoch"
        ) from None


def double(value: float) -> float | str:
    """A double as MLflow's JSON writes it: non-finite values as strings."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def pairs(values: dict[str, str]) -> list[dict[str, str]]:
    """Tags or params as MLflow lists them: ``[{"key": ..., "value": ...}]``."""
    return [{"key": k, "value": v} for k, v in values.items()]


def wire_experiment_id(experiment_id: str, name: str) -> str:
    """The id MLflow's client sees for an experiment: "0" for Default."""
    return DEFAULT_EXPERIMENT_ID if name == DEFAULT_EXPERIMENT else experiment_id


def experiment_json(exp: Experiment) -> dict[str, Any]:
    """MLflow's ``Experiment``; the description is its ``mlflow.note.content`` tag."""
    wire_id = wire_experiment_id(exp.id, exp.name)
    tags = dict(exp.tags)
    if exp.description and NOTE_TAG not in tags:
        tags[NOTE_TAG] = exp.description
    created = ms(exp.created_at)
    return {
        "experiment_id": wire_id,
        "name": exp.name,
        "artifact_location": f"mlflow-artifacts:/{wire_id}",
        "lifecycle_stage": "deleted" if exp.archived else "active",
        "creation_time": created,
        # modelyard does not keep an experiment's last change: its creation stands in
        "last_update_time": created,
        "tags": pairs(tags),
    }


def run_info(run: Run) -> dict[str, Any]:
    """MLflow's ``RunInfo``."""
    experiment_id = wire_experiment_id(run.experiment_id, run.experiment)
    info: dict[str, Any] = {
        "run_id": run.id,
        "run_uuid": run.id,
        "run_name": run.name,
        "experiment_id": experiment_id,
        "user_id": run.created_by,
        "status": run.status.upper(),
        "start_time": ms(run.start_time),
        "artifact_uri": run_artifact_uri(experiment_id, run.id),
        "lifecycle_stage": "deleted" if run.deleted_at else "active",
    }
    if run.end_time is not None:
        info["end_time"] = ms(run.end_time)
    return info


def metric_json(point: MetricPoint) -> dict[str, Any]:
    """MLflow's ``Metric``."""
    return {
        "key": point.key,
        "value": double(point.value),
        "timestamp": ms(point.timestamp),
        "step": point.step,
    }


def dataset_source(source_type: str, source: str) -> str:
    """The source modelyard records for a dataset MLflow's client describes: its type and
    its JSON, as ``local:{"uri": ...}``, read back by :func:`dataset_json`."""
    return f"{source_type}:{source}" if source_type else source


def dataset_json(dataset: Dataset) -> dict[str, Any]:
    """MLflow's ``Dataset`` of a dataset version (a column spec schema, a row count)."""
    m = _SOURCE.match(dataset.source)
    columns = [
        {"type": _MLFLOW_TYPES.get(c.dtype, c.dtype), "name": c.name} for c in dataset.schema_
    ]
    profile: dict[str, int] = {"num_rows": dataset.num_rows}
    if columns:
        profile["num_elements"] = dataset.num_rows * len(columns)
    return {
        "name": dataset.name,
        "digest": dataset.digest,
        "source_type": m["type"] if m else "",
        "source": m["source"] if m else dataset.source,
        "schema": orjson.dumps({"mlflow_colspec": columns}).decode() if columns else "",
        "profile": orjson.dumps(profile).decode(),
    }


def run_json(
    run: Run, latest: Sequence[MetricPoint] = (), datasets: Mapping[str, Dataset] | None = None
) -> dict[str, Any]:
    """MLflow's ``Run``: ``latest`` holds the last point of each metric, ``datasets`` the
    versions its inputs name (by id)."""
    datasets = datasets or {}
    inputs = [
        {
            "tags": [{"key": CONTEXT_TAG, "value": i.context}] if i.context else [],
            "dataset": dataset_json(datasets[i.dataset_id]),
        }
        for i in run.inputs
        if i.dataset_id in datasets
    ]
    return {
        "info": run_info(run),
        "data": {
            "metrics": [metric_json(p) for p in latest],
            "params": pairs(run.params),
            "tags": pairs(run.tags),
        },
        "inputs": {"dataset_inputs": inputs} if inputs else {},
    }


def runs_json(ws: Workspace, runs: Sequence[Run]) -> list[dict[str, Any]]:
    """MLflow's form of ``runs``, with each metric's last point and each input's dataset
    read in one query each."""
    latest = ws.tracking.latest_metrics([r.id for r in runs])
    dataset_ids = {i.dataset_id for r in runs for i in r.inputs}
    datasets = ws.tracking.datasets_by_id(list(dataset_ids)) if dataset_ids else {}
    return [run_json(run, latest.get(run.id, ()), datasets) for run in runs]


def column_schema(text: str) -> list[ColumnSchema]:
    """The columns of MLflow's dataset schema (a column spec); none for a tensor spec."""
    if not text:
        return []
    try:
        schema = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise MlflowError(INVALID_PARAMETER_VALUE, "a dataset's schema must be JSON") from None
    columns = schema.get("mlflow_colspec") if isinstance(schema, dict) else None
    if not isinstance(columns, list):
        return []
    return [
        ColumnSchema(name=str(c.get("name", i)), dtype=str(c.get("type", "")))
        for i, c in enumerate(columns)
        if isinstance(c, dict)
    ]


def num_rows(profile: str) -> int | None:
    """The row count in MLflow's dataset profile, if it states one."""
    try:
        values = orjson.loads(profile) if profile else None
    except orjson.JSONDecodeError:
        return None
    rows = values.get("num_rows") if isinstance(values, dict) else None
    return rows if isinstance(rows, int) and not isinstance(rows, bool) else None
