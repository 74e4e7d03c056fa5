"""Pipelines: typed steps in a DAG, cached by code and inputs, run locally or on Ray.

Define with :func:`step` and :func:`pipeline` (or :class:`Pipeline` and ``add``, or a YAML
file), run with ``ws.pipelines.run(...)`` (:class:`PipelineService`) or
``modelyard pipelines run``.
"""

from modelyard.pipelines.dag import (
    STAGES,
    Output,
    Param,
    Pipeline,
    StepContext,
    StepFunction,
    StepOptions,
    load_pipeline,
    load_yaml,
    pipeline,
    step,
)
from modelyard.pipelines.executors import (
    Executor,
    InProcessExecutor,
    LocalExecutor,
    RayExecutor,
)
from modelyard.pipelines.runs import PipelineRun, StepRun
from modelyard.pipelines.service import PipelineService, RegisteredPipeline

__all__ = [
    "STAGES",
    "Executor",
    "InProcessExecutor",
    "LocalExecutor",
    "Output",
    "Param",
    "Pipeline",
    "PipelineRun",
    "PipelineService",
    "RayExecutor",
    "RegisteredPipeline",
    "StepContext",
    "StepFunction",
    "StepOptions",
    "StepRun",
    "load_pipeline",
    "load_yaml",
    "pipeline",
    "step",
]
