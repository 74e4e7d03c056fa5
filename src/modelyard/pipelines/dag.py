"""Pipelines as code: typed steps composed into a DAG, checked when it is defined.

Three ways to define the same pipeline:

- decorators: ``@step`` on plain functions and ``@pipeline`` on a function whose body calls
  them; at definition the calls return placeholders (:class:`Output`), so running the body
  once traces the DAG, and the function's parameters become pipeline parameters;
- a builder: ``Pipeline("name").add(fn, name=None, **inputs)`` where an input is a constant,
  ``Param("x")`` or ``Output("step")`` / ``Output("step", "key")``;
- a YAML file (:func:`load_yaml`) naming functions as ``"package.module:function"``.

A cycle, a missing or unknown input, an unknown step, a duplicate step name or an output
whose annotated class cannot feed the annotated input is refused with :class:`InvalidInput`
naming the step. A step that declares a parameter annotated :class:`StepContext` receives
one at run time (workspace, run ids, log, lineage helpers).
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from modelyard.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    import pandas as pd

    from modelyard.client import Client
    from modelyard.registry import ModelVersion
    from modelyard.tracking.entities import Dataset
    from modelyard.workspace import Workspace

Stage = Literal["ingest", "preprocess", "train", "evaluate", "deploy", "other"]
STAGES: tuple[str, ...] = ("ingest", "preprocess", "train", "evaluate", "deploy", "other")
STEP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,127}$")
PIPELINE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_REF = re.compile(r"^\$\{(params|steps)\.([A-Za-z0-9_-]+)(?:\.([^.}]+))?\}$")

F = TypeVar("F", bound=Callable[..., Any])


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


# --- placeholders -----------------------------------------------------------------------


class _Placeholder:
    """A value known only at run time; using it in Python logic at definition is an error."""

    def _refuse(self, *_: Any) -> Any:
        raise InvalidInput(
            f"{self!r} has no value while the pipeline is being defined; pass it to a step "
            "instead of using it in the pipeline body"
        )

    __bool__ = __lt__ = __le__ = __gt__ = __ge__ = __add__ = __radd__ = _refuse
    __sub__ = __mul__ = __truediv__ = __len__ = __float__ = __int__ = _refuse


class Param(_Placeholder):
    """A pipeline parameter, given when the pipeline runs (or its default)."""

    def __init__(self, name: str, default: Any = MISSING) -> None:
        if not isinstance(name, str) or not PARAM_NAME.match(name):
            raise InvalidInput(f"parameter name {name!r} must be a Python identifier")
        self.name = name
        self.default = default

    def __repr__(self) -> str:
        return f"Param({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Param) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("param", self.name))


class Output(_Placeholder):
    """The return value of step ``step``, or its item ``key`` (a dict key or tuple index)."""

    def __init__(self, step: str, key: str | int | None = None, *, _arity: int | None = None):
        self.step = step
        self.key = key
        self._arity = _arity

    def __getitem__(self, key: str | int) -> Output:
        if self.key is not None:
            raise InvalidInput(f"{self!r} is already an item of step {self.step!r}")
        return Output(self.step, key)

    def __iter__(self) -> Iterator[Output]:
        if self._arity is None:
            raise InvalidInput(
                f"cannot unpack the output of step {self.step!r}: annotate its return as "
                "tuple[A, B, ...] or take items with output[0], output[1]"
            )
        return iter([Output(self.step, i) for i in range(self._arity)])

    def __repr__(self) -> str:
        return (
            f"Output({self.step!r})" if self.key is None else f"Output({self.step!r}, {self.key!r})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Output) and (other.step, other.key) == (self.step, self.key)

    def __hash__(self) -> int:
        return hash(("output", self.step, self.key))


# --- steps ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepOptions:
    """How a step runs. ``retries`` extra attempts after a failure, waiting ``retry_delay``
    seconds doubled on each retry (at most 30 s); ``timeout`` seconds per attempt; ``cache``
    reuses the stored result of an identical earlier run; ``stage`` groups latency."""

    retries: int = 0
    timeout: float | None = None
    cache: bool = True
    stage: str = "train"
    retry_delay: float = 0.5

    def checked(self, step: str) -> StepOptions:
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) or self.retries < 0:
            raise InvalidInput(f"step {step!r}: retries must be a whole number >= 0")
        if self.timeout is not None and (
            not isinstance(self.timeout, int | float) or self.timeout <= 0
        ):
            raise InvalidInput(f"step {step!r}: timeout must be a positive number of seconds")
        if self.stage not in STAGES:
            raise InvalidInput(
                f"step {step!r}: stage {self.stage!r} is not one of {', '.join(STAGES)}"
            )
        if not isinstance(self.retry_delay, int | float) or self.retry_delay < 0:
            raise InvalidInput(f"step {step!r}: retry_delay must be >= 0 seconds")
        if not isinstance(self.cache, bool):
            raise InvalidInput(f"step {step!r}: cache must be true or false")
        return self


class StepFunction:
    """A function marked as a pipeline step. Called outside a pipeline definition it is the
    plain function; called inside one it adds a step and returns an :class:`Output`."""

    def __init__(self, fn: Callable[..., Any], options: StepOptions, name: str | None = None):
        if isinstance(fn, StepFunction):
            fn = fn.fn
        if not callable(fn):
            raise InvalidInput(f"a step must be a function, not {type(fn).__name__}")
        self.fn: Callable[..., Any] = fn
        self.options = options
        self.name: str = name or str(getattr(fn, "__name__", "step"))
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        tracing = _TRACING.get()
        if tracing is None:
            return self.fn(*args, **kwargs)
        return tracing._add_traced(self, args, kwargs)

    def with_options(self, *, name: str | None = None, **options: Any) -> StepFunction:
        """The same function as a step with another name or other options."""
        return StepFunction(self.fn, replace(self.options, **options), name or self.name)

    def __repr__(self) -> str:
        return f"<step {self.name}>"


def step(
    fn: Callable[..., Any] | None = None,
    *,
    retries: int = 0,
    timeout: float | None = None,
    cache: bool = True,
    stage: str = "train",
    retry_delay: float = 0.5,
    name: str | None = None,
) -> Any:
    """Mark a function as a pipeline step (usable as ``@step`` or ``@step(...)``)."""

    def wrap(f: Callable[..., Any]) -> StepFunction:
        label = name or str(getattr(f, "__name__", "step"))
        options = StepOptions(retries, timeout, cache, stage, retry_delay).checked(label)
        return StepFunction(f, options, name)

    return wrap(fn) if fn is not None else wrap


@dataclass
class StepNode:
    """One step of a pipeline: its function, where each argument comes from, its options."""

    name: str
    fn: Callable[..., Any]
    inputs: dict[str, Any]  # argument -> constant | Param | Output
    options: StepOptions
    context_arg: str | None = None  # the argument that receives the StepContext
    hints: dict[str, Any] = field(default_factory=dict)

    @property
    def upstream(self) -> list[str]:
        return list(dict.fromkeys(v.step for v in self.inputs.values() if isinstance(v, Output)))

    @property
    def function_ref(self) -> str:
        return f"{getattr(self.fn, '__module__', '?')}:{getattr(self.fn, '__qualname__', '?')}"

    @property
    def return_hint(self) -> Any:
        return self.hints.get("return", MISSING)


# --- the pipeline -----------------------------------------------------------------------

_TRACING: contextvars.ContextVar[Pipeline | None] = contextvars.ContextVar(
    "modelyard_pipeline_tracing", default=None
)


class Pipeline:
    """A named DAG of steps and the parameters it takes."""

    def __init__(
        self,
        name: str,
        *,
        params: Mapping[str, Any] | None = None,
        description: str = "",
        source_path: str | Path | None = None,
    ) -> None:
        if not isinstance(name, str) or not PIPELINE_NAME.match(name):
            raise InvalidInput(
                f"pipeline name {name!r} is not valid; use up to 128 letters, digits, '.', '_', "
                "'-' starting with a letter or digit"
            )
        self.name = name
        self.description = description
        self.steps: dict[str, StepNode] = {}
        self.params: dict[str, Any] = {}  # name -> default (MISSING when required)
        self.param_hints: dict[str, Any] = {}
        for key, default in (params or {}).items():
            self.param(key, default)
        if source_path is None:
            # The file that defines the pipeline: its git commit is the code version.
            source_path = sys._getframe(1).f_code.co_filename
        self.source_path = Path(source_path) if source_path else None

    def __repr__(self) -> str:
        return f"<Pipeline {self.name}: {', '.join(self.steps)}>"

    def param(self, name: str, default: Any = MISSING) -> Param:
        """Declare parameter ``name`` (required unless it has a default)."""
        ref = Param(name, default)
        if default is not MISSING or name not in self.params:
            self.params[name] = default
        return ref

    def add(
        self, fn: Callable[..., Any] | StepFunction, name: str | None = None, **inputs: Any
    ) -> Output:
        """Add a step calling ``fn`` with ``inputs``; return its :class:`Output`.

        A step may refer to a step added later; :meth:`validate` (run before every run)
        checks that every referenced step exists.
        """
        sf = fn if isinstance(fn, StepFunction) else StepFunction(fn, StepOptions())
        label = name or sf.name
        if label in self.steps:
            raise InvalidInput(
                f"step {label!r} is defined twice in pipeline {self.name!r}; give each a "
                "distinct name"
            )
        return self._add_node(label, sf, inputs)

    def _add_traced(
        self, sf: StepFunction, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Output:
        sig = inspect.signature(sf.fn)
        try:
            bound = sig.bind_partial(*args, **kwargs)
        except TypeError as exc:
            raise InvalidInput(f"step {sf.name!r}: {exc}") from None
        inputs: dict[str, Any] = {}
        for arg, value in bound.arguments.items():
            kind = sig.parameters[arg].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                raise InvalidInput(f"step {sf.name!r}: pass *{arg} arguments by name")
            if kind is inspect.Parameter.VAR_KEYWORD:
                inputs.update(value)
            else:
                inputs[arg] = value
        label, n = sf.name, 2
        while label in self.steps:  # the same step called twice: number the later calls
            label, n = f"{sf.name}_{n}", n + 1
        return self._add_node(label, sf, inputs)

    def _add_node(self, label: str, sf: StepFunction, inputs: dict[str, Any]) -> Output:
        if not isinstance(label, str) or not STEP_NAME.match(label):
            raise InvalidInput(
                f"step name {label!r} is not valid; use up to 128 letters, digits, '_', '-' "
                "starting with a letter or '_'"
            )
        options = sf.options.checked(label)
        node = _make_node(label, sf.fn, inputs, options)
        for value in node.inputs.values():
            if isinstance(value, Param) and (
                value.name not in self.params or value.default is not MISSING
            ):
                self.param(value.name, value.default)
        self.steps[label] = node
        try:
            self._check_cycles()
            self._check_node_types(node)
            for other in self.steps.values():  # earlier steps that referred to this one
                if other is not node and label in other.upstream:
                    self._check_node_types(other)
        except InvalidInput:
            del self.steps[label]
            raise
        hint = node.return_hint
        arity = (
            len(get_args(hint)) if get_origin(hint) is tuple and ... not in get_args(hint) else None
        )
        return Output(label, _arity=arity)

    # --- checks ---------------------------------------------------------------------------

    def validate(self) -> Pipeline:
        """Refuse references to steps that do not exist, and cycles; return self."""
        if not self.steps:
            raise InvalidInput(f"pipeline {self.name!r} has no steps")
        for node in self.steps.values():
            for arg, value in node.inputs.items():
                if isinstance(value, Output) and value.step not in self.steps:
                    raise InvalidInput(
                        f"step {node.name!r}: input {arg!r} refers to step {value.step!r}, which "
                        f"pipeline {self.name!r} does not have"
                    )
        self._check_cycles()
        return self

    def _check_cycles(self) -> None:
        visiting: list[str] = []
        done: set[str] = set()

        def visit(name: str) -> None:
            if name in done or name not in self.steps:
                return
            if name in visiting:
                loop = [*visiting[visiting.index(name) :], name]
                raise InvalidInput(
                    f"step {name!r} depends on itself: {' -> '.join(loop)}; a pipeline must "
                    "have no cycles"
                )
            visiting.append(name)
            for up in self.steps[name].upstream:
                visit(up)
            visiting.pop()
            done.add(name)

        for name in self.steps:
            visit(name)

    def _check_node_types(self, node: StepNode) -> None:
        for arg, value in node.inputs.items():
            want = node.hints.get(arg, MISSING)
            if isinstance(value, Output) and value.step in self.steps:
                have = _item_hint(self.steps[value.step].return_hint, value.key)
                source = f"step {value.step!r} returns {type_name(have)}"
            elif isinstance(value, Param):
                have = self.param_hints.get(value.name, MISSING)
                source = f"parameter {value.name!r} is {type_name(have)}"
            else:
                continue
            if _classes_clash(have, want):
                raise InvalidInput(
                    f"step {node.name!r}: input {arg!r} expects {type_name(want)} but {source}"
                )

    # --- queries --------------------------------------------------------------------------

    def order(self) -> list[str]:
        """Step names in an order where every step comes after its upstream steps."""
        self.validate()
        seen: dict[str, None] = {}

        def visit(name: str) -> None:
            if name in seen:
                return
            for up in self.steps[name].upstream:
                visit(up)
            seen[name] = None

        for name in self.steps:
            visit(name)
        return list(seen)

    def downstream(self, name: str) -> set[str]:
        """Every step that depends on ``name``, directly or not."""
        found: set[str] = set()
        frontier = [name]
        while frontier:
            current = frontier.pop()
            for node in self.steps.values():
                if current in node.upstream and node.name not in found:
                    found.add(node.name)
                    frontier.append(node.name)
        return found

    def ancestors(self, name: str) -> set[str]:
        found: set[str] = set()
        frontier = [name]
        while frontier:
            for up in self.steps[frontier.pop()].upstream:
                if up not in found:
                    found.add(up)
                    frontier.append(up)
        return found

    def describe(self) -> dict[str, Any]:
        """The definition as plain data (functions by import path): equal for equal pipelines."""
        steps = {}
        for node in self.steps.values():
            steps[node.name] = {
                "function": node.function_ref,
                "inputs": {k: _describe_input(v) for k, v in node.inputs.items()},
                "retries": node.options.retries,
                "timeout": node.options.timeout,
                "cache": node.options.cache,
                "stage": node.options.stage,
            }
        params = {k: (None if v is MISSING else v) for k, v in self.params.items()}
        return {"name": self.name, "params": params, "steps": steps}

    def resolve_params(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """Defaults overlaid with ``given``; unknown or missing parameters are refused."""
        given = dict(given or {})
        # Triggers describe their event in params["trigger"]; a pipeline that does not
        # declare the parameter simply does not use it (the run still records it).
        if "trigger" not in self.params:
            given.pop("trigger", None)
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            known = ", ".join(self.params) or "none"
            raise InvalidInput(
                f"pipeline {self.name!r} has no parameter {', '.join(unknown)}; it takes: {known}"
            )
        values = {k: given.get(k, v) for k, v in self.params.items()}
        missing = [k for k, v in values.items() if v is MISSING]
        if missing:
            raise InvalidInput(
                f"pipeline {self.name!r} needs parameter {', '.join(missing)}; pass --param "
                f"{missing[0]}=VALUE"
            )
        return values


def pipeline(
    fn: Callable[..., Any] | None = None, *, name: str | None = None, description: str = ""
) -> Any:
    """Define a pipeline by running ``fn`` once with placeholders (``@pipeline`` or
    ``@pipeline(name=...)``); the decorated name is bound to the :class:`Pipeline`."""

    def trace(f: Callable[..., Any]) -> Pipeline:
        source = inspect.getsourcefile(f)
        p = Pipeline(
            name or f.__name__,
            description=description or inspect.getdoc(f) or "",
            source_path=source or "",
        )
        hints = _hints(f)
        placeholders = {}
        for pname, param in inspect.signature(f).parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise InvalidInput(f"pipeline {p.name!r}: *args/**kwargs cannot be parameters")
            default = MISSING if param.default is param.empty else param.default
            placeholders[pname] = p.param(pname, default)
            if pname in hints:
                p.param_hints[pname] = hints[pname]
        token = _TRACING.set(p)
        try:
            f(**placeholders)
        finally:
            _TRACING.reset(token)
        return p.validate()

    return trace(fn) if fn is not None else trace


# --- YAML and import paths --------------------------------------------------------------


def import_object(ref: str) -> Any:
    """The object ``"package.module:attr"`` names."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise InvalidInput(f"{ref!r} is not an import path; write 'package.module:name'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise NotFound(f"cannot import {module_name!r} for {ref!r}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise NotFound(f"module {module_name!r} has no {attr!r}") from None
    return obj


def load_yaml(path: str | Path) -> Pipeline:
    """A pipeline from a YAML file::

    name: churn
    params: {rows: 100}
    steps:
      - name: load
        function: mypkg.steps:load
        inputs: {rows: "${params.rows}"}
        stage: ingest
      - name: train
        function: mypkg.steps:train
        inputs: {data: "${steps.load}", alpha: 0.1}
        retries: 1
        timeout: 600
    """
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise NotFound(f"no pipeline file {str(path)!r}") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path.name} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("steps"), list):
        raise InvalidInput(f"{path.name} must be a mapping with 'name' and a list of 'steps'")
    unknown = set(doc) - {"name", "description", "params", "steps"}
    if unknown:
        raise InvalidInput(f"{path.name}: unknown key(s) {', '.join(sorted(unknown))}")
    params = doc.get("params") or {}
    if isinstance(params, list):
        params = dict.fromkeys(params, MISSING)
    if not isinstance(params, dict):
        raise InvalidInput(f"{path.name}: params must map names to default values")
    p = Pipeline(
        str(doc.get("name") or path.stem),
        params=params,
        description=str(doc.get("description") or ""),
        source_path=path.resolve(),
    )
    for i, spec in enumerate(doc["steps"]):
        if not isinstance(spec, dict) or "function" not in spec:
            raise InvalidInput(f"{path.name}: step #{i + 1} needs a 'function: module:name'")
        extra = set(spec) - {"name", "function", "inputs", "retries", "timeout", "stage", "cache"}
        if extra:
            raise InvalidInput(
                f"{path.name}: step #{i + 1} has unknown key(s) {', '.join(sorted(extra))}"
            )
        fn = import_object(str(spec["function"]))
        sf = fn if isinstance(fn, StepFunction) else StepFunction(fn, StepOptions())
        overrides = {k: spec[k] for k in ("retries", "timeout", "stage", "cache") if k in spec}
        sf = sf.with_options(name=spec.get("name"), **overrides)
        inputs = spec.get("inputs") or {}
        if not isinstance(inputs, dict):
            raise InvalidInput(f"{path.name}: inputs of step {sf.name!r} must be a mapping")
        p.add(sf, **{str(k): _yaml_input(sf.name, str(k), v) for k, v in inputs.items()})
    return p.validate()


def _yaml_input(step_name: str, arg: str, value: Any) -> Any:
    if not isinstance(value, str) or "${" not in value:
        return value
    m = _REF.match(value)
    if m is None:
        raise InvalidInput(
            f"step {step_name!r}: input {arg!r} is {value!r}; references are a whole string, "
            "'${params.NAME}', '${steps.NAME}' or '${steps.NAME.KEY}'"
        )
    kind, name, key = m.groups()
    if kind == "params":
        if key is not None:
            raise InvalidInput(f"step {step_name!r}: input {arg!r}: write '${{params.{name}}}'")
        return Param(name)
    return Output(name, int(key) if key is not None and key.isdigit() else key)


def load_pipeline(source: str | Path) -> Pipeline:
    """The pipeline a YAML path or a ``"package.module:attr"`` import path names."""
    text = str(source)
    if text.endswith((".yaml", ".yml")):
        return load_yaml(text)
    obj = import_object(text)
    if isinstance(obj, StepFunction):
        raise InvalidInput(f"{text!r} is a step, not a pipeline; name the @pipeline function")
    if callable(obj) and not isinstance(obj, Pipeline):
        obj = obj()  # a factory that builds the pipeline
    if not isinstance(obj, Pipeline):
        raise InvalidInput(f"{text!r} is a {type(obj).__name__}, not a Pipeline")
    return obj.validate()


# --- the step context -------------------------------------------------------------------


class StepContext:
    """What a step can use at run time, when it declares an argument annotated with this.

    ``log(msg)`` goes to the step's log. ``log_dataset`` and ``register_model`` record
    lineage: a model registered here links to the pipeline's tracking run (its params,
    metrics and code version) and to the dataset versions logged by this step and the
    steps upstream of it.
    """

    def __init__(
        self,
        ws: Workspace,
        *,
        run_id: str,
        tracking_run_id: str | None,
        pipeline: str,
        step: str,
        attempt: int,
        datasets: list[dict[str, Any]] | None = None,
    ) -> None:
        self.ws = ws
        self.run_id = run_id
        self.tracking_run_id = tracking_run_id
        self.pipeline = pipeline
        self.step = step
        self.attempt = attempt
        self.upstream_datasets = list(datasets or [])
        self.logged_datasets: list[dict[str, Any]] = []
        self._client: Client | None = None

    def log(self, message: str) -> None:
        """Add a line to this step's log."""
        print(message, flush=True)

    @property
    def client(self) -> Client:
        """An SDK client on the same workspace, acting as the same user."""
        if self._client is None:
            from modelyard.client import Client

            settings = self.ws.settings.model_copy(update={"uri": None})
            self._client = Client(None, settings=settings)
            if self._client.workspace is not None:
                self._client.workspace.act_as(self.ws.identity)
        return self._client

    def log_dataset(
        self, name: str, data: pd.DataFrame, *, context: str = "training", source: str = ""
    ) -> Dataset:
        """Register ``data`` as a version of dataset ``name``, an input of this run."""
        ds = self.ws.tracking.log_dataset(
            name, data, source=source, run_id=self.tracking_run_id, context=context
        )
        self.logged_datasets.append(
            {"dataset_id": ds.id, "name": ds.name, "version": ds.version, "context": context}
        )
        return ds

    def register_model(
        self,
        model: Any,
        name: str,
        input_example: Any = None,
        *,
        alias: str | None = None,
        description: str = "",
        tags: Mapping[str, Any] | None = None,
        format: str | None = None,
    ) -> ModelVersion:
        """Save and register ``model`` as the next version of ``name``, with its lineage."""
        from modelyard.registry import DatasetLink

        roles = {"training", "validation", "test", "evaluation"}
        links: dict[str, DatasetLink] = {}
        for d in [*self.upstream_datasets, *self.logged_datasets]:
            role = d.get("context", "training")
            links.setdefault(
                d["dataset_id"],
                DatasetLink(dataset_id=d["dataset_id"], role=role if role in roles else "training"),
            )
        all_tags = {"pipeline": self.pipeline, "pipeline_run": self.run_id, **(tags or {})}
        version: ModelVersion = self.client.log_model(
            model,
            name,
            input_example=input_example,
            run_id=self.tracking_run_id,
            datasets=list(links.values()),
            description=description,
            tags=all_tags,
            alias=alias,
            format=format,
        )
        print(f"registered {version.uri}", flush=True)
        return version


# --- helpers ----------------------------------------------------------------------------


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return get_type_hints(fn)
    except Exception:  # an annotation that does not resolve: keep the ones that do
        hints = {}
        for key, value in getattr(fn, "__annotations__", {}).items():
            if not isinstance(value, str):
                hints[key] = value
            elif value.rsplit(".", 1)[-1] == "StepContext":
                hints[key] = StepContext
        return hints


def _make_node(
    label: str, fn: Callable[..., Any], inputs: dict[str, Any], options: StepOptions
) -> StepNode:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        raise InvalidInput(f"step {label!r}: cannot read the signature of {fn!r}") from None
    hints = _hints(fn)
    context_arg = next((k for k, v in hints.items() if v is StepContext and k != "return"), None)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    for arg, value in inputs.items():
        if arg == context_arg:
            raise InvalidInput(f"step {label!r}: {arg!r} receives the StepContext; do not wire it")
        if arg not in sig.parameters and not accepts_any:
            raise InvalidInput(
                f"step {label!r}: {getattr(fn, '__name__', fn)!r} has no argument {arg!r}; it "
                f"takes {', '.join(sig.parameters) or 'none'}"
            )
        _check_constant(label, arg, value)
    for arg, param in sig.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or arg == context_arg:
            continue
        if param.kind is param.POSITIONAL_ONLY:
            raise InvalidInput(f"step {label!r}: positional-only argument {arg!r} is not supported")
        if arg not in inputs and param.default is param.empty:
            raise InvalidInput(
                f"step {label!r}: required input {arg!r} is not wired; pass a constant, "
                "Param(...) or Output(...)"
            )
        if arg in inputs and not isinstance(inputs[arg], Param | Output):
            want = hints.get(arg, MISSING)
            if _value_clashes(inputs[arg], want):
                raise InvalidInput(
                    f"step {label!r}: input {arg!r} expects {type_name(want)}, got "
                    f"{type(inputs[arg]).__name__} {inputs[arg]!r:.60}"
                )
    return StepNode(label, fn, dict(inputs), options, context_arg, hints)


def _check_constant(label: str, arg: str, value: Any) -> None:
    items: list[Any] = []
    if isinstance(value, list | tuple | set):
        items = list(value)
    elif isinstance(value, dict):
        items = list(value.values())
    if any(isinstance(v, _Placeholder) for v in items):
        raise InvalidInput(
            f"step {label!r}: input {arg!r} nests step outputs or parameters in a container; "
            "pass each one as its own argument"
        )


def _describe_input(value: Any) -> Any:
    if isinstance(value, Param):
        return f"${{params.{value.name}}}"
    if isinstance(value, Output):
        return (
            f"${{steps.{value.step}}}"
            if value.key is None
            else f"${{steps.{value.step}.{value.key}}}"
        )
    return value


def _item_hint(hint: Any, key: str | int | None) -> Any:
    """The annotated type of item ``key`` of a value annotated ``hint`` (MISSING if unknown)."""
    if key is None:
        return hint
    if hint is MISSING:
        return MISSING
    if get_origin(hint) is tuple and isinstance(key, int):
        args = get_args(hint)
        if ... not in args and 0 <= key < len(args):
            return args[key]
        return MISSING
    if typing.is_typeddict(hint) and isinstance(key, str):
        return get_type_hints(hint).get(key, MISSING)
    return MISSING


def _concrete(hint: Any) -> bool:
    return isinstance(hint, type) and hint is not typing.Any and hint is not object


def _classes_clash(have: Any, want: Any) -> bool:
    """True when both are concrete classes and ``have`` cannot stand for ``want``."""
    if not (_concrete(have) and _concrete(want)):
        return False
    if issubclass(have, want):
        return False
    # PEP 484's numeric tower: an int is acceptable where a float is expected.
    return not (want is float and have is int) and not (want is complex and have in (int, float))


def _value_clashes(value: Any, want: Any) -> bool:
    if not _concrete(want) or value is None:
        return False
    return not conforms(value, want)


def conforms(value: Any, hint: Any) -> bool:
    """Whether ``value`` matches annotation ``hint`` (shallowly: ``list[int]`` checks list)."""
    if hint is MISSING or hint is typing.Any or hint is object or isinstance(hint, TypeVar):
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(conforms(value, arg) for arg in get_args(hint))
    if origin is typing.Annotated:
        return conforms(value, get_args(hint)[0])
    if origin is Literal:
        return value in get_args(hint)
    if isinstance(origin, type):
        return isinstance(value, origin)
    if typing.is_typeddict(hint):
        return isinstance(value, dict)
    if isinstance(hint, type):
        if isinstance(value, hint):
            return True
        if hint is float:
            return isinstance(value, int) and not isinstance(value, bool)
        if hint is complex:
            return isinstance(value, int | float) and not isinstance(value, bool)
        return False
    return True  # a form we do not check (Callable, Protocol...)


def type_name(hint: Any) -> str:
    if hint is MISSING:
        return "an unannotated value"
    if isinstance(hint, type) and get_origin(hint) is None:
        return (
            hint.__qualname__
            if hint.__module__ == "builtins"
            else f"{hint.__module__}.{hint.__qualname__}"
        )
    return str(hint).replace("typing.", "")
