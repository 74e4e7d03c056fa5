"""What tracking hands out: experiments, runs, metrics, run artifacts, datasets."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelyard.jsonio import JsonFloat, JsonTime, NotABoolean

RunStatus = Literal["running", "finished", "failed", "killed"]
#: Which runs (or experiments) a search returns: those in use, the deleted (archived), or all.
Lifecycle = Literal["active", "deleted", "all"]
#: The largest metric step (a 64-bit column).
MAX_STEP = 2**63 - 1
#: The largest step a MetricPoint takes: JSON numbers are exact to 2**53 in most clients.
MAX_JSON_STEP = 2**53 - 1
#: Keys of params, metrics and tags.
KEY = re.compile(r"^[A-Za-z0-9_\-. /:]{1,256}$")

# Metric values may be NaN or infinite (as in MLflow); JSON has no literal for them, so
# models carrying metric values write them as the strings "NaN"/"Infinity" (as the API
# does), which pydantic parses back.
METRIC_JSON = ConfigDict(ser_json_inf_nan="strings")


class Experiment(BaseModel):
    id: str
    name: str
    description: str = ""
    project: str | None = None
    archived: bool = False
    created_at: datetime
    tags: dict[str, str] = Field(default_factory=dict)


class MetricPoint(BaseModel):
    """One value of a metric at a step; ``timestamp`` defaults to the time it is logged."""

    model_config = METRIC_JSON

    key: str = Field(json_schema_extra={"pattern": KEY.pattern})
    value: JsonFloat
    step: Annotated[int, Field(ge=-MAX_JSON_STEP, le=MAX_JSON_STEP), NotABoolean] = 0
    timestamp: JsonTime | None = None


class RunArtifact(BaseModel):
    """A file stored with a run, at ``path`` inside the run."""

    path: str
    digest: str
    size: int


class RunInput(BaseModel):
    """A dataset version a run used, and in what role."""

    dataset_id: str
    name: str
    version: int
    digest: str
    context: str = "training"


class Run(BaseModel):
    """A run with its params, tags, latest metric values, inputs and artifacts."""

    model_config = METRIC_JSON

    id: str
    experiment_id: str
    experiment: str
    name: str = ""
    status: RunStatus
    start_time: datetime
    end_time: datetime | None = None
    created_by: str = ""
    #: When the run was deleted (it is kept, and can be restored); None while in use.
    deleted_at: datetime | None = None
    params: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    inputs: list[RunInput] = Field(default_factory=list)
    artifacts: list[RunArtifact] = Field(default_factory=list)


class RunComparison(BaseModel):
    """Params and latest metrics of several runs side by side, keyed by name then run id.

    A run that lacks a param or metric has ``None`` there. ``differing_params`` lists the
    params whose value is not the same in every run (a missing value counts as different).
    """

    model_config = METRIC_JSON

    run_ids: list[str]
    run_names: dict[str, str]
    params: dict[str, dict[str, str | None]]
    metrics: dict[str, dict[str, float | None]]
    differing_params: list[str]


class ColumnSchema(BaseModel):
    name: str
    dtype: str


class Histogram(BaseModel):
    """``counts[i]`` values fall in ``[edges[i], edges[i + 1])`` (the last bin is closed)."""

    counts: list[int]
    edges: list[float]


class NumericProfile(BaseModel):
    """Statistics of a numeric column; ``None`` where there are no finite values."""

    kind: Literal["numeric"] = "numeric"
    count: int
    missing: int
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    p25: float | None = None
    p50: float | None = None
    p75: float | None = None
    max: float | None = None
    histogram: Histogram | None = None


class ValueCount(BaseModel):
    value: str
    count: int


class CategoricalProfile(BaseModel):
    """Statistics of a non-numeric column: distinct values and the ten most frequent."""

    kind: Literal["categorical"] = "categorical"
    count: int
    missing: int
    distinct: int
    top: list[ValueCount] = Field(default_factory=list)


ColumnProfile = Annotated[NumericProfile | CategoricalProfile, Field(discriminator="kind")]


class Dataset(BaseModel):
    """One version of a named dataset: content digest, schema, size and column profiles."""

    id: str
    name: str
    version: int
    digest: str
    source: str = ""
    num_rows: int
    schema_: list[ColumnSchema] = Field(alias="schema")
    profile: dict[str, ColumnProfile]
    artifact_digest: str | None = None
    created_at: datetime
    created_by: str = ""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)
