"""Variants made for you: a quantised or distilled version of a registered model, measured here.

:func:`create_variant` makes a new version from a parent version, either by

- ``quantize="int8"``: ONNX Runtime's dynamic int8 quantisation of the parent's ONNX graph
  (the parent's own for an ``onnx`` version; for sklearn, XGBoost and LightGBM the conversion
  the serving runtime uses, :func:`modelyard.formats.onnx_runtime.convert`). It is saved in
  the ``onnx`` format and takes and returns what the parent does. Only graphs with weight
  matrices quantise (MatMul, Gemm: neural networks); tree ensembles and skl2onnx's linear
  operators do not, and are refused with a pointer to distillation; or
- ``distill="tree" | "logistic" | "linear"``: a shallow decision tree, a logistic regression
  (classifiers) or a ridge regression (regressors) trained on the teacher's (the parent's)
  answers on the parent's training dataset, saved in the sklearn format.

Both are measured beside the parent on the parent's holdout, its dataset linked as test,
evaluation or validation. Without one, they are measured on a seeded 20 % split of its
training dataset (which the parent saw in training; the report says so) and a student is
trained on the other 80 %. Latency is measured on this machine: the median milliseconds of a
single-row predict and of a 64-row batch over a bounded number of calls, with distinct rows
of the holdout cycled.

The variant is registered as the next version of the parent's model (or of ``name``), with:
its source the parent's URI (what :meth:`~modelyard.registry.RegistryService.lineage` shows),
tags ``modelyard.variant.of`` and ``modelyard.variant.kind``, the parent's dataset links, and
a run in the ``variants`` experiment whose metrics are the variant's quality (``accuracy``,
``f1``, ``roc_auc`` or ``mae``, ``rmse``, ``r2``), ``latency_ms_p50_1row``,
``latency_ms_p50_64rows`` and the parent's, prefixed ``parent_``. It is attached to no
endpoint: the user decides.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from modelyard.errors import InvalidInput, ModelyardError
from modelyard.pipelines.variant_data import VariantData, cycle, take_rows, variant_data
from modelyard.registry.entities import DatasetLink, ModelVersion

if TYPE_CHECKING:
    import numpy.typing as npt

    from modelyard.formats import Predictor, Signature
    from modelyard.workspace import Workspace

__all__ = [
    "DISTILL_KINDS",
    "EXPERIMENT",
    "QUANTIZE_KINDS",
    "TAG_KIND",
    "TAG_OF",
    "VariantMeasurement",
    "VariantReport",
    "create_variant",
]

EXPERIMENT = "variants"
TAG_OF = "modelyard.variant.of"
TAG_KIND = "modelyard.variant.kind"
QUANTIZE_KINDS = ("int8",)
DISTILL_KINDS = ("tree", "logistic", "linear")
DEFAULT_DEPTH = 6
MAX_DEPTH = 32
BATCH_ROWS = 64
DEFAULT_CALLS = 200
MIN_CALLS = 10
MAX_CALLS = 1000
#: Each latency measurement stops after this long, whatever its number of calls.
LATENCY_BUDGET_S = 2.0
#: ONNX operators that only a quantised graph holds.
_QUANTISED_OPS = frozenset(
    {
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "ConvInteger",
        "DynamicQuantizeMatMul",
        "DynamicQuantizeLSTM",
        "QAttention",
        "QGemm",
        "QLinearMatMul",
        "QLinearConv",
        "DequantizeLinear",
    }
)
_QUANTISABLE_FORMATS = ("onnx", "sklearn", "xgboost", "lightgbm")
_DISTILL_INSTEAD = "try --distill tree or --distill logistic for a smaller, faster model instead"

Task = Literal["classification", "regression"]
Role = Literal["parent", "parent-onnx", "variant"]
#: The prefix of each role's metrics in the variant's run.
_PREFIX: dict[str, str] = {"parent": "parent_", "parent-onnx": "parent_onnx_", "variant": ""}
Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: what is being done, and how far along it is."""


class VariantMeasurement(BaseModel):
    """One model's quality on the holdout and its latency on this machine."""

    role: Role
    uri: str
    runtime: str = Field(description="what ran the model: sklearn, onnxruntime int8, ...")
    metrics: dict[str, float | None]
    latency_ms_p50_1row: float
    latency_ms_p50_64rows: float
    latency_calls: int = Field(description="single-row calls measured (fewer: time bound)")
    size_bytes: int | None = None


class VariantReport(BaseModel):
    """A variant registered from a parent, and both measured side by side."""

    version: ModelVersion
    parent: str
    kind: str = Field(description="int8, distilled-tree, distilled-logistic, distilled-linear")
    description: str
    task: Task
    target: str
    run_id: str
    holdout: str = Field(description="which data the quality was measured on")
    holdout_rows: int
    holdout_is_split: bool = Field(description="a split of the training data, not a holdout")
    measurements: list[VariantMeasurement]
    notes: list[str] = Field(default_factory=list)

    def measurement(self, role: str) -> VariantMeasurement | None:
        """The measurement of ``role`` (parent, parent-onnx, variant), if made."""
        return next((m for m in self.measurements if m.role == role), None)


# --- the request --------------------------------------------------------------------------


def check_request(
    quantize: str | None,
    distill: str | None,
    max_depth: int | None = None,
    latency_calls: int = DEFAULT_CALLS,
) -> str:
    """The variant kind a request asks for (``int8``, ``distilled-tree``...); InvalidInput
    naming what to fix otherwise."""
    if (quantize is None) == (distill is None):
        raise InvalidInput(
            "give exactly one of quantize (--quantize int8) or distill "
            f"(--distill {'|'.join(DISTILL_KINDS)})"
            + (", not both" if quantize is not None else "")
        )
    if quantize is not None and quantize not in QUANTIZE_KINDS:
        raise InvalidInput(
            f"unknown quantisation {quantize!r}; use one of: {', '.join(QUANTIZE_KINDS)}"
        )
    if distill is not None and distill not in DISTILL_KINDS:
        raise InvalidInput(
            f"unknown distillation {distill!r}; use one of: {', '.join(DISTILL_KINDS)} "
            "(a shallow decision tree, a logistic regression, a linear model)"
        )
    if max_depth is not None and distill != "tree":
        raise InvalidInput("max_depth applies to --distill tree only")
    if max_depth is not None and not 1 <= max_depth <= MAX_DEPTH:
        raise InvalidInput(f"max_depth must be between 1 and {MAX_DEPTH}, got {max_depth}")
    if isinstance(latency_calls, bool) or not MIN_CALLS <= latency_calls <= MAX_CALLS:
        raise InvalidInput(
            f"latency_calls must be between {MIN_CALLS} and {MAX_CALLS}, got {latency_calls}"
        )
    return quantize if quantize is not None else f"distilled-{distill}"


# --- measuring ----------------------------------------------------------------------------


def _latency_ms(
    predict: Callable[[Any], Any], batches: list[Any], calls: int, tick: Callable[[int], None]
) -> tuple[float, int]:
    """The median milliseconds of ``calls`` predicts (fewer past the time budget)."""
    import numpy as np

    for batch in batches[:3]:  # warm-up: first calls allocate
        predict(batch)
    times: list[int] = []
    deadline = time.perf_counter() + LATENCY_BUDGET_S
    for i in range(calls):
        start = time.perf_counter_ns()
        predict(batches[i % len(batches)])
        times.append(time.perf_counter_ns() - start)
        if i % 20 == 19:
            tick(20)
        if time.perf_counter() > deadline and len(times) >= MIN_CALLS:
            break
    return float(np.median(times)) / 1e6, len(times)


def _scores(
    predictor: Predictor, data: VariantData, task: Task | None, notes: dict[str, str], prefix: str
) -> tuple[Task, dict[str, float | None], npt.NDArray[Any]]:
    from modelyard.pipelines.gates import _default_metrics, _infer_task, _metrics, _split_outputs

    try:
        outputs = predictor.predict(data.holdout)
    except ModelyardError:
        raise
    except Exception as exc:
        raise InvalidInput(
            f"the {prefix.rstrip('.') or 'model'} failed on the holdout "
            f"({type(exc).__name__}: {exc})"
        ) from None
    prediction, proba = _split_outputs(outputs)
    chosen: Task = task or _infer_task(data.y, prediction, proba)
    metrics = _metrics(chosen, _default_metrics(chosen), data.y, prediction, proba, notes, prefix)
    return chosen, metrics, prediction


def _size(manifest: Mapping[str, Any]) -> int:
    return sum(int(entry.get("size", 0)) for entry in manifest.get("files", {}).values())


# --- making the variant -------------------------------------------------------------------


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the converters' and quantiser's advice (root-logger warnings, warnings)."""

    def drop(record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname and "skl2onnx" not in record.pathname

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(drop)


def _fp32_graph(
    ws: Workspace, parent: ModelVersion, trusted: bool, notes: list[str]
) -> tuple[bytes, bool]:
    """The parent's float ONNX graph, and whether it predicts as the parent does."""
    if parent.format == "onnx":
        return (ws.registry.local_path(parent) / "model.onnx").read_bytes(), True
    recorded = ws.registry.get_runtime(parent.model, parent.version, "onnx")
    if recorded is not None and recorded.usable:
        assert recorded.artifact_digest is not None
        return ws.artifacts.get_bytes(recorded.artifact_digest), True
    from modelyard.formats.onnx_runtime import convert

    with _quiet():
        result = convert(ws.registry.local_path(parent), trusted=trusted)
    if result.onnx_bytes is None:
        raise InvalidInput(
            f"cannot quantise {parent.uri}: it does not convert to ONNX "
            f"({result.report.get('error', result.status)}); {_DISTILL_INSTEAD}"
        )
    if not result.identical:
        notes.append(
            "the parent's ONNX conversion differs from it on a check sample "
            f"(max abs diff {result.report.get('max_abs_diff')}); the holdout numbers show "
            "the effect"
        )
    return result.onnx_bytes, result.identical


def _int8(fp32: bytes, uri: str, scratch: Path) -> Any:
    """The graph quantised to int8 (an onnx.ModelProto); InvalidInput if nothing quantises."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    advice = (
        "dynamic int8 quantisation applies to weight matrices (MatMul, Gemm: neural "
        f"networks), not to tree ensembles or linear operators; {_DISTILL_INSTEAD}"
    )
    source, target = scratch / "fp32.onnx", scratch / "int8.onnx"
    source.write_bytes(fp32)
    ops = sorted({node.op_type for node in onnx.load_model_from_string(fp32).graph.node})
    try:
        with _quiet():
            quantize_dynamic(source, target, weight_type=QuantType.QInt8)
    except Exception as exc:
        raise InvalidInput(
            f"ONNX Runtime cannot quantise {uri} (its graph: {', '.join(ops)}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; {advice}"
        ) from None
    quantised = onnx.load(str(target))
    if not {node.op_type for node in quantised.graph.node} & _QUANTISED_OPS:
        raise InvalidInput(
            f"nothing in {uri} quantises to int8: its ONNX graph holds {', '.join(ops)}; " + advice
        )
    return quantised


def _student(kind: str, task: Task, max_depth: int | None, train: Any, uri: str) -> Any:
    """An untrained student estimator for ``kind``, with the preprocessing ``train`` needs."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    depth = max_depth or DEFAULT_DEPTH
    if kind == "logistic" and task == "regression":
        raise InvalidInput(
            f"{uri} is a regressor: a logistic regression cannot learn its answers; "
            "use --distill linear (a ridge regression) or --distill tree"
        )
    estimator: Any
    if kind == "tree":
        tree = DecisionTreeClassifier if task == "classification" else DecisionTreeRegressor
        estimator = tree(max_depth=depth, random_state=0)
    elif task == "classification":
        estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    else:
        estimator = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    if not hasattr(train, "columns"):
        return estimator
    text = [str(c) for c in train.columns if train[c].dtype.kind not in "biuf"]
    gaps = bool(train.isna().any().any())
    if not text and not gaps:
        return estimator
    # Text columns become one-hot categories; gaps are filled: the tree and the linear
    # models take neither.
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder

    numeric = [str(c) for c in train.columns if str(c) not in text]
    prepare = ColumnTransformer(
        [
            ("numeric", SimpleImputer(strategy="median"), numeric),
            (
                "text",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                text,
            ),
        ]
    )
    return make_pipeline(prepare, estimator)


def _train_student(
    teacher: Predictor, data: VariantData, kind: str, task: Task, max_depth: int | None, uri: str
) -> Any:
    from modelyard.pipelines.gates import _split_outputs

    try:
        answers, _ = _split_outputs(teacher.predict(data.train))
    except ModelyardError:
        raise
    except Exception as exc:
        raise InvalidInput(
            f"{uri} failed on its training dataset {data.train_description} "
            f"({type(exc).__name__}: {exc})"
        ) from None
    student = _student(kind, task, max_depth, data.train, uri)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence advice on the teacher's exact answers
        try:
            student.fit(data.train, answers)
        except ValueError as exc:
            raise InvalidInput(f"cannot train a {kind} student on {uri}'s answers: {exc}") from None
    return student


@dataclass
class _Made:
    """A variant saved in a model directory, and what to say about it."""

    runtime: str
    description: str
    parent_onnx: Predictor | None = None  # the parent as the gateway's ONNX Runtime runs it
    notes: list[str] = field(default_factory=list)


def _quantised(
    ws: Workspace,
    parent: ModelVersion,
    signature: Signature,
    data: VariantData,
    trusted: bool,
    scratch: Path,
    model_dir: Path,
) -> _Made:
    from modelyard.formats import read_manifest, save_model
    from modelyard.formats.onnx_runtime import load_onnx_predictor

    notes: list[str] = []
    fp32, identical = _fp32_graph(ws, parent, trusted, notes)
    save_model(
        _int8(fp32, parent.uri, scratch),
        model_dir,
        signature=signature.model_copy(update={"outputs": []}),
        input_example=take_rows(data.holdout, cycle(len(data.y), 5)),
        format="onnx",
    )
    parent_onnx = None
    if identical and parent.format != "onnx":
        manifest = read_manifest(ws.registry.local_path(parent))
        parent_onnx = load_onnx_predictor(fp32, manifest)
    return _Made(
        "onnxruntime int8",
        f"int8 dynamic quantisation (ONNX Runtime) of {parent.uri}",
        parent_onnx,
        notes,
    )


def _distilled(
    teacher: Predictor,
    parent: ModelVersion,
    signature: Signature,
    data: VariantData,
    kind: str,
    task: Task,
    max_depth: int | None,
    model_dir: Path,
) -> _Made:
    from modelyard.formats import save_model

    student = _train_student(teacher, data, kind, task, max_depth, parent.uri)
    save_model(
        student,
        model_dir,
        signature=signature.model_copy(update={"outputs": []}),
        input_example=take_rows(data.holdout, cycle(len(data.y), 5)),
    )
    what = {
        "tree": f"decision tree (depth <= {max_depth or DEFAULT_DEPTH})",
        "logistic": "logistic regression",
        "linear": "logistic regression" if task == "classification" else "ridge regression",
    }[kind]
    return _Made("sklearn", f"{what} distilled from {parent.uri} on {data.train_description}")


def _register(
    ws: Workspace,
    path: Path,
    name: str,
    parent: ModelVersion,
    kind: str,
    description: str,
    run_id: str,
    links: list[DatasetLink],
) -> ModelVersion:
    from modelyard.formats import MANIFEST_NAME, validate_model_dir

    manifest = validate_model_dir(path)
    for rel, entry in manifest.files.items():
        ws.artifacts.put_file(path / rel, entry.digest)
    digest = ws.artifacts.put_file(path / MANIFEST_NAME)
    version = ws.registry.create_version(
        name,
        digest,
        run_id=run_id,
        datasets=links,
        description=description,
        tags={TAG_OF: parent.uri, TAG_KIND: kind},
        source=parent.uri,
    )
    card = ws.registry.get_card(name, version.version)
    ws.registry.update_card(
        name,
        version.version,
        {"lineage": {**card.lineage, "parent": parent.uri, "variant_kind": kind}},
    )
    return version


def create_variant(
    ws: Workspace,
    parent: str | ModelVersion,
    *,
    quantize: str | None = None,
    distill: str | None = None,
    name: str | None = None,
    target: str | None = None,
    max_depth: int | None = None,
    latency_calls: int = DEFAULT_CALLS,
    trusted: bool = False,
    progress: Progress | None = None,
) -> VariantReport:
    """Make, measure and register a variant of ``parent`` (a ``models:/`` URI or version).

    Exactly one of ``quantize`` (``"int8"``) or ``distill`` (``"tree"``, ``"logistic"``,
    ``"linear"``). The variant becomes the next version of ``name`` (default: the parent's
    model). ``target`` names the holdout's target column when it cannot be told from the
    model's inputs; ``max_depth`` is the tree's (default 6); ``latency_calls`` bounds each
    latency measurement. Pickle-based parents load only with ``trusted`` (or the server's
    MODELYARD_TRUST_PICKLED_MODELS).
    """
    from modelyard.artifacts.scratch import scratch_dir
    from modelyard.formats import Signature, load_model, read_manifest
    from modelyard.governance.entities import Permission
    from modelyard.registry.uri import check_model_name, parse_model_uri

    kind = check_request(quantize, distill, max_depth, latency_calls)
    report = progress or (lambda stage, done, total: None)
    owner = parent.model if isinstance(parent, ModelVersion) else parse_model_uri(parent).name
    target_name = check_model_name(name or owner)
    # Refused before anything is looked up or trained.
    ws.access.require(Permission.write, model=target_name, action="register versions")
    version = parent if isinstance(parent, ModelVersion) else ws.registry.resolve(parent)
    trusted = trusted or ws.settings.trust_pickled_models
    signature = Signature.model_validate(version.signature)
    if quantize is not None and version.format not in _QUANTISABLE_FORMATS:
        raise InvalidInput(
            f"int8 quantisation takes {', '.join(_QUANTISABLE_FORMATS)} versions; "
            f"{version.uri} is a {version.format} model; {_DISTILL_INSTEAD}"
        )
    if distill is not None and signature.kind == "tensor" and len(signature.inputs) != 1:
        raise InvalidInput(
            f"{version.uri} takes {len(signature.inputs)} arrays; distillation trains on a "
            "table or a single [rows, features] array"
        )

    report("reading the datasets", 0, 1)
    data = variant_data(ws, version, signature, target, distill is not None)
    report("loading the parent", 0, 1)
    teacher = ws.registry.load_model(version, trusted=trusted)
    metric_notes: dict[str, str] = {}
    task, parent_metrics, parent_prediction = _scores(teacher, data, None, metric_notes, "parent.")

    with scratch_dir(ws.settings.staging_dir) as scratch:
        model_dir = scratch / "variant"
        if quantize is not None:
            report("quantising to int8", 0, 1)
            made = _quantised(ws, version, signature, data, trusted, scratch, model_dir)
        else:
            assert distill is not None
            report(f"training a {distill} student", 0, 1)
            made = _distilled(
                teacher, version, signature, data, distill, task, max_depth, model_dir
            )
        variant = load_model(model_dir, trusted=True)  # made here, of sklearn or ONNX types
        _, variant_metrics, variant_prediction = _scores(variant, data, task, metric_notes, "")

        measured: list[tuple[Role, str, Predictor]] = [("parent", version.format, teacher)]
        if made.parent_onnx is not None:
            measured.append(("parent-onnx", "onnxruntime fp32", made.parent_onnx))
        measured.append(("variant", made.runtime, variant))
        latency = _measure([(role, p) for role, _, p in measured], data, latency_calls, report)

        report("registering", 0, 1)
        variant_manifest = read_manifest(model_dir).model_dump(mode="json")
        sizes = {"parent": _size(version.manifest), "variant": _size(variant_manifest)}
        metrics = {
            **{k: v for k, v in variant_metrics.items() if v is not None},
            **{f"parent_{k}": v for k, v in parent_metrics.items() if v is not None},
            **{f"{_PREFIX[r]}latency_ms_p50_1row": one for r, (one, _, _) in latency.items()},
            **{f"{_PREFIX[r]}latency_ms_p50_64rows": many for r, (_, many, _) in latency.items()},
            "size_bytes": float(sizes["variant"]),
            "parent_size_bytes": float(sizes["parent"]),
        }
        if task == "classification":
            metrics["agreement_with_parent"] = float(
                (variant_prediction == parent_prediction).mean()
            )
        params = {
            "parent": version.uri,
            "kind": kind,
            "task": task,
            "target": data.target,
            "holdout": data.description,
            **({"max_depth": max_depth or DEFAULT_DEPTH} if distill == "tree" else {}),
            **({"training": data.train_description} if distill else {}),
        }
        registered, run_id = _record(
            ws, model_dir, target_name, version, kind, made.description, data, params, metrics
        )

    uris = {"parent": version.uri, "parent-onnx": version.uri, "variant": registered.uri}
    return VariantReport(
        version=registered,
        parent=version.uri,
        kind=kind,
        description=made.description,
        task=task,
        target=data.target,
        run_id=run_id,
        holdout=data.description,
        holdout_rows=len(data.y),
        holdout_is_split=data.is_split,
        measurements=[
            VariantMeasurement(
                role=role,
                uri=uris[role],
                runtime=runtime,
                metrics=variant_metrics if role == "variant" else parent_metrics,
                latency_ms_p50_1row=latency[role][0],
                latency_ms_p50_64rows=latency[role][1],
                latency_calls=latency[role][2],
                size_bytes=sizes.get(role),
            )
            for role, runtime, _ in measured
        ],
        notes=[*data.notes, *made.notes, *(f"{k}: {why}" for k, why in metric_notes.items())],
    )


def _measure(
    predictors: list[tuple[Role, Predictor]], data: VariantData, calls: int, report: Progress
) -> dict[Role, tuple[float, float, int]]:
    """Median ms of each predictor on one row and on 64 rows, and the single-row calls made."""
    n = len(data.y)
    singles = [take_rows(data.holdout, cycle(n, 1, start=i)) for i in range(min(n, 64))]
    batches = [
        take_rows(data.holdout, cycle(n, BATCH_ROWS, start=i * BATCH_ROWS)) for i in range(4)
    ]
    batch_calls = max(calls // 4, MIN_CALLS)
    total = len(predictors) * (calls + batch_calls)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done = min(done + n, total)
        report("measuring latency", done, total)

    latency: dict[Role, tuple[float, float, int]] = {}
    for role, predictor in predictors:
        one, made = _latency_ms(predictor.predict, singles, calls, tick)
        many, _ = _latency_ms(predictor.predict, batches, batch_calls, tick)
        latency[role] = (one, many, made)
    return latency


def _record(
    ws: Workspace,
    path: Path,
    name: str,
    parent: ModelVersion,
    kind: str,
    description: str,
    data: VariantData,
    params: dict[str, Any],
    metrics: dict[str, float],
) -> tuple[ModelVersion, str]:
    """A run in the variants experiment with the measurements, and the version registered
    from ``path`` with that run; the run ends failed if the registration fails."""
    run = ws.tracking.start_run(
        EXPERIMENT,
        name=f"{parent.model}-v{parent.version}-{kind}",
        tags={TAG_OF: parent.uri, TAG_KIND: kind},
        params=params,
    )
    try:
        ws.tracking.log_metrics(run.id, {k: v for k, v in metrics.items() if math.isfinite(v)})
        version = _register(ws, path, name, parent, kind, description, run.id, data.links)
    except BaseException:
        ws.tracking.end_run(run.id, "failed")
        raise
    ws.tracking.end_run(run.id, "finished")
    return version, run.id
