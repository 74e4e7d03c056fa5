"""Hyperparameter search with optuna, every trial recorded as a tracking run.

:func:`tune` runs a study with a seeded TPE sampler (same seed and objective: same trials).
Each trial is a run in ``experiment`` with its params, the objective's value as a metric,
and tags naming the study, the trial, its state and the parent run. A trial whose objective
raises or returns a non-number is recorded as a failed run and the search goes on; an error
of the tracking store itself stops the search.

The objective takes an ``optuna.Trial`` (it suggests its own params), or, when ``space`` is
given, a dict of params sampled from that declarative space::

    {"C": {"type": "float", "low": 1e-3, "high": 10, "log": True},
     "max_depth": {"type": "int", "low": 2, "high": 8},
     "kernel": {"type": "categorical", "choices": ["linear", "rbf"]}}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, Protocol

import optuna
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from ulid import ULID

from modelyard.errors import InvalidInput, ModelyardError

__all__ = [
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "TrialRecord",
    "TuningFailed",
    "TuningResult",
    "tune",
]

TAG_STUDY = "modelyard.study"
TAG_TRIAL = "modelyard.trial"
TAG_STATE = "modelyard.trial_state"
TAG_PARENT = "modelyard.parent_run_id"
TAG_ERROR = "modelyard.error"
TAG_TUNED = "modelyard.tuning_study"  # on the parent run
TAG_BEST = "modelyard.best_run_id"  # on the parent run
MAX_ERROR = 2000

Objective = Callable[[optuna.Trial], float] | Callable[[dict[str, Any]], float]
TrialState = Literal["COMPLETE", "FAIL", "PRUNED"]


class TuningFailed(ModelyardError):
    """No trial of a search completed."""

    status = 422
    exit_code = 1
    title = "Tuning failed"


class FloatParam(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = None


class IntParam(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = 1


class CategoricalParam(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["categorical"]
    choices: list[bool | int | float | str | None] = Field(min_length=1)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
_SPACE = TypeAdapter(dict[str, Param])


class TrialRecord(BaseModel):
    number: int
    params: dict[str, Any]
    value: float | None
    run_id: str
    state: TrialState
    error: str = ""


class TuningResult(BaseModel):
    study: str
    experiment: str
    direction: Literal["maximize", "minimize"]
    metric: str
    best_params: dict[str, Any]
    best_value: float
    best_run_id: str
    best_trial: int
    trials: list[TrialRecord]


class _Tracking(Protocol):
    def start_run(
        self,
        experiment: str,
        *,
        name: str = "",
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any: ...

    def end_run(self, run_id: str, status: str = "finished") -> Any: ...

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, run_id: str, metrics: Any, *, step: int = 0) -> None: ...

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None: ...


class _ObjectiveFailed(Exception):
    """Raised to optuna after a failed trial was recorded, so it marks it FAIL and goes on."""


def tune(
    ws_or_client: Any,
    objective: Objective,
    *,
    space: Mapping[str, Any] | None = None,
    n_trials: int,
    direction: Literal["maximize", "minimize"] = "maximize",
    experiment: str,
    seed: int = 0,
    timeout: float | None = None,
    parent_run_id: str | None = None,
    study_name: str | None = None,
    metric: str = "objective",
) -> TuningResult:
    """Search ``n_trials`` trials (or until ``timeout`` seconds) and return the best.

    ``ws_or_client`` is a Workspace or a Client (anything with ``.tracking``).
    Raises :class:`TuningFailed` if no trial completes.
    """
    tracking: _Tracking = ws_or_client.tracking
    if n_trials < 1:
        raise InvalidInput("n_trials must be at least 1")
    if direction not in ("maximize", "minimize"):
        raise InvalidInput(f"direction must be 'maximize' or 'minimize', not {direction!r}")
    if timeout is not None and timeout <= 0:
        raise InvalidInput("timeout must be a positive number of seconds")
    params_space = _parse_space(space) if space is not None else None
    name = study_name or f"tune-{ULID()}"
    records: list[TrialRecord] = []

    def run_trial(trial: optuna.Trial) -> float:
        tags = {TAG_STUDY: name, TAG_TRIAL: trial.number}
        if parent_run_id:
            tags[TAG_PARENT] = parent_run_id
        sampled = _sample(trial, params_space) if params_space is not None else None
        run = tracking.start_run(
            experiment, name=f"{name}-trial-{trial.number}", tags=tags, params=sampled
        )
        trial.set_user_attr("run_id", run.id)
        state: TrialState = "COMPLETE"
        value: float | None = None
        error = ""
        try:
            raw = objective(sampled) if sampled is not None else objective(trial)  # type: ignore[arg-type]
            value = _number(raw)
        except optuna.TrialPruned:
            state = "PRUNED"
        except Exception as exc:
            state, error = "FAIL", f"{type(exc).__name__}: {exc}"[:MAX_ERROR]
        params = dict(trial.params)
        if sampled is None and params:
            tracking.log_params(run.id, params)
        if value is not None:
            tracking.log_metrics(run.id, {metric: value})
        tracking.set_tags(run.id, {TAG_STATE: state, **({TAG_ERROR: error} if error else {})})
        status = {"COMPLETE": "finished", "FAIL": "failed", "PRUNED": "killed"}[state]
        tracking.end_run(run.id, status)
        records.append(
            TrialRecord(
                number=trial.number,
                params=params,
                value=value,
                run_id=run.id,
                state=state,
                error=error,
            )
        )
        if state == "PRUNED":
            raise optuna.TrialPruned()
        if state == "FAIL":
            raise _ObjectiveFailed(error)
        assert value is not None
        return value

    study = optuna.create_study(
        study_name=name,
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=seed),
    )
    study.optimize(run_trial, n_trials=n_trials, timeout=timeout, catch=(_ObjectiveFailed,))
    done = [r for r in records if r.state == "COMPLETE"]
    if not done:
        first = next((r.error for r in records if r.error), "every trial was pruned")
        raise TuningFailed(
            f"none of the {len(records)} trials of study {name} completed; first error: {first}",
            study=name,
        )
    best = study.best_trial
    best_record = next(r for r in records if r.number == best.number)
    if parent_run_id:
        tracking.set_tags(
            parent_run_id,
            {TAG_TUNED: name, TAG_BEST: best_record.run_id},
        )
    return TuningResult(
        study=name,
        experiment=experiment,
        direction=direction,
        metric=metric,
        best_params=dict(best.params),
        best_value=float(best.value) if best.value is not None else math.nan,
        best_run_id=best_record.run_id,
        best_trial=best.number,
        trials=records,
    )


def _parse_space(space: Mapping[str, Any]) -> dict[str, FloatParam | IntParam | CategoricalParam]:
    try:
        parsed = _SPACE.validate_python(dict(space))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InvalidInput(f"search space: {where}: {err['msg']}") from None
    if not parsed:
        raise InvalidInput("the search space is empty; give at least one parameter")
    for key, p in parsed.items():
        if isinstance(p, FloatParam | IntParam) and p.low > p.high:
            raise InvalidInput(f"search space: {key}: low {p.low} is above high {p.high}")
        if isinstance(p, FloatParam | IntParam) and p.log and p.low <= 0:
            raise InvalidInput(f"search space: {key}: a log scale needs low > 0")
        if isinstance(p, FloatParam) and p.log and p.step is not None:
            raise InvalidInput(f"search space: {key}: give log or step, not both")
    return parsed


def _sample(
    trial: optuna.Trial, space: Mapping[str, FloatParam | IntParam | CategoricalParam]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, p in space.items():
        if isinstance(p, FloatParam):
            out[key] = trial.suggest_float(key, p.low, p.high, log=p.log, step=p.step)
        elif isinstance(p, IntParam):
            out[key] = trial.suggest_int(key, p.low, p.high, log=p.log, step=p.step)
        else:
            out[key] = trial.suggest_categorical(key, p.choices)
    return out


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"the objective returned {value!r}, not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"the objective returned {number}")
    return number
