"""Optimised runtime: convert a saved sklearn / XGBoost / LightGBM model to ONNX and check it.

The serving gateway needs thousands of single-row predictions per second; a RandomForest
through sklearn manages ~140. ONNX Runtime runs the same trees at tens of thousands of calls
a second. :func:`convert` turns a saved model directory into ONNX bytes, runs both the native
model and the ONNX graph on a check sample and says whether every output agrees:

* ``"identical"``: labels exactly equal, probabilities / regression values within
  ``atol=1e-5, rtol=1e-4``. Only then should the gateway serve :class:`OnnxPredictor`.
* ``"different"``: converted, but the outputs disagree (the bytes are returned for
  inspection; do not serve them).
* ``"unsupported"``: no converter exists for this model (or this format).
* ``"failed"``: the model could not be loaded, converted or run; ``report["error"]`` says why.

:func:`convert` never raises for a model it cannot handle: the reason is in the report.

The ONNX bytes carry a ``modelyard.onnx_runtime`` metadata entry (JSON) that tells
:class:`OnnxPredictor` how to feed the graph (column order, input dtype) and how to map its
outputs back to the native predictor's names, dtypes and shapes (string class labels too).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from modelyard.errors import InvalidInput, InvalidModel, ModelyardError
from modelyard.formats.base import Outputs, Predictor, get_format, require
from modelyard.formats.manifest import Manifest
from modelyard.formats.model_dir import validate_model_dir
from modelyard.formats.signature import Signature, TensorSpec, is_frame

Status = Literal["identical", "different", "failed", "unsupported"]

METADATA_KEY = "modelyard.onnx_runtime"
"""The ONNX metadata_props key holding the JSON that OnnxPredictor needs."""

ATOL = 1e-5
RTOL = 1e-4
SEED = 20240611

_SUPPORTED_FORMATS = ("sklearn", "xgboost", "lightgbm")
_CONVERTER_PACKAGES = {
    "sklearn": ("skl2onnx", "scikit-learn"),
    "xgboost": ("onnxmltools", "xgboost"),
    "lightgbm": ("onnxmltools", "lightgbm"),
}


@dataclass
class ConversionResult:
    """The outcome of :func:`convert`; serve ``onnx_bytes`` only when status is "identical"."""

    status: Status
    onnx_bytes: bytes | None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return self.status == "identical"


class Unsupported(Exception):
    """No converter for this model; becomes status "unsupported"."""


# --------------------------------------------------------------------------------------------
# The predictor (the hot path)
# --------------------------------------------------------------------------------------------


def _session(model: bytes | str, save_ort_as: str | None = None) -> Any:
    """An ONNX Runtime session of ``model`` (bytes, or the path of a file: ONNX, or ONNX
    Runtime's own format when it ends in ``.ort``). ``save_ort_as``: also write the optimised
    graph there, in ONNX Runtime's format, which loads in about two thirds of the time (no
    protobuf to parse, nothing left to optimise; same kernels, same outputs), on this
    machine and this onnxruntime version only."""
    ort = require("onnxruntime", "onnx")
    options = ort.SessionOptions()
    # One thread per session: the gateway runs many requests in parallel.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Errors only: converters declare loose output shapes that ORT warns about on every run.
    options.log_severity_level = 3
    if save_ort_as is not None:
        options.optimized_model_filepath = save_ort_as
        options.add_session_config_entry("session.save_model_format", "ORT")
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise InvalidModel(f"onnxruntime cannot load the converted model: {exc}") from exc


class _OutputMap:
    """How one ONNX output becomes one native output (name, dtype, shape, class labels)."""

    __slots__ = ("classes", "dtype", "index", "name", "tail")

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.name: str = spec["name"]
        self.index: int = int(spec["index"])
        self.dtype: np.dtype[Any] = np.dtype(spec["dtype"])
        self.tail: tuple[int, ...] = tuple(spec.get("tail") or ())
        classes = spec.get("classes")
        self.classes: NDArray[Any] | None = (
            None if classes is None else np.asarray(classes, dtype=self.dtype)
        )

    def apply(self, value: Any) -> NDArray[Any]:
        array = np.asarray(value)
        if self.classes is not None:  # the graph gives class indices (LightGBM boosters)
            array = self.classes[array.astype(np.intp, copy=False).reshape(-1)]
        elif array.dtype != self.dtype:
            array = array.astype(self.dtype)
        if array.shape[1:] != self.tail:
            array = array.reshape(array.shape[0], *self.tail)
        # ONNX Runtime may return an array over a buffer of its own: one that outlives the call
        # (in the prediction log, in a cache) keeps that memory, and much of the session's
        # with it (about 1 MB for a forest), after the model is evicted. A copy frees it.
        root = array
        while isinstance(root, np.ndarray) and root.base is not None:
            root = root.base
        if root is not array and not isinstance(root, np.ndarray):
            array = array.copy()
        return array


class OnnxPredictor(Predictor):
    """A converted model run by ONNX Runtime, with the native predictor's inputs and outputs.

    Takes the same batches (DataFrame, dict of 1-D columns, 2-D array, records) and returns
    the same output names, dtypes and shapes as the native predictor it was converted from.
    """

    def __init__(self, manifest: Manifest, session: Any, meta: Mapping[str, Any]) -> None:
        super().__init__(manifest)
        self.session = session
        self.meta = dict(meta)
        self.mode: str = meta.get("mode", "matrix")
        self.columns: list[str] = list(meta.get("columns") or [])
        self.dtype: np.dtype[Any] = np.dtype(meta.get("input_dtype", "float32"))
        graph_inputs = session.get_inputs()
        self.input_name: str = meta.get("input_name") or graph_inputs[0].name
        # "columns" mode: one graph input per column, each [n, 1] of its own dtype.
        self.column_inputs: list[tuple[str, str, np.dtype[Any]]] = [
            (c["column"], c["input"], np.dtype(c["dtype"])) for c in meta.get("column_inputs", [])
        ]
        self.onnx_output_names: list[str] = [o.name for o in session.get_outputs()]
        self.outputs = [_OutputMap(spec) for spec in meta.get("outputs", [])]
        if not self.outputs:  # bytes not written by convert: graph outputs as they are
            self.outputs = [
                _OutputMap({"name": n, "index": i, "dtype": "float32"})
                for i, n in enumerate(self.onnx_output_names)
            ]
        self._run: Callable[..., list[Any]] = session.run
        # The binding under InferenceSession.run: the wrapper re-checks the feed's names and
        # output names on every call (~5 µs), which predict_matrix's callers already ensure.
        binding = getattr(session, "_sess", None)
        self._run_unchecked: Callable[..., list[Any]] = (
            binding.run
            if binding is not None and callable(getattr(binding, "run", None))
            else lambda names, feeds, _options: session.run(names, feeds)
        )
        self._columns_kind = self.signature.kind == "columns"

    # -- inputs --------------------------------------------------------------------------------

    def _matrix(self, batch: Any) -> NDArray[Any]:
        """The batch as one C-contiguous [n, k] matrix of the graph's input dtype."""
        dtype = self.dtype
        try:
            if isinstance(batch, Mapping) and self._columns_kind:
                try:
                    values = [batch[name] for name in self.columns]
                except KeyError:
                    raise InvalidInput(
                        f"the batch is missing column(s) "
                        f"{[c for c in self.columns if c not in batch]}; expected {self.columns}"
                    ) from None
                # One copy: [k, n], then a transposed view; a single row needs no more.
                stacked = np.array(values, dtype=dtype)
                if stacked.ndim == 1:  # one scalar per column: one row
                    return stacked.reshape(1, -1)
                if stacked.ndim != 2:
                    raise InvalidInput(
                        f"columns must be 1-D; got an array of shape {stacked.shape[::-1]}"
                    )
                matrix = stacked.T
                return matrix if matrix.shape[0] == 1 else np.ascontiguousarray(matrix)
            if self._columns_kind and is_frame(batch):
                missing = [c for c in self.columns if c not in batch.columns]
                if missing:
                    raise InvalidInput(
                        f"the batch is missing column(s) {missing}; expected {self.columns}"
                    )
                return np.ascontiguousarray(batch[self.columns].to_numpy(dtype=dtype))
            if self._columns_kind:
                if isinstance(batch, list) and batch and isinstance(batch[0], Mapping):
                    return self._matrix(self.as_frame(batch))
                matrix = np.asarray(batch, dtype=dtype)
            else:
                if isinstance(batch, Mapping):
                    if self.input_name in batch:
                        batch = batch[self.input_name]
                    elif len(batch) == 1:
                        batch = next(iter(batch.values()))
                    else:
                        raise InvalidInput(f"this model takes one array; got inputs {list(batch)}")
                elif is_frame(batch):
                    batch = batch.to_numpy()
                matrix = np.asarray(batch, dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"the batch must be numeric ({dtype.name}): {exc}") from exc
        width = len(self.columns) if self.columns else self.meta.get("width")
        if matrix.ndim != 2 or (width is not None and matrix.shape[1] != width):
            raise InvalidInput(
                f"expected a [rows, {width}] table; got an array of shape {matrix.shape}"
            )
        return np.ascontiguousarray(matrix)

    def _column_feeds(self, batch: Any) -> dict[str, NDArray[Any]]:
        frame = self.as_frame(batch)
        feeds: dict[str, NDArray[Any]] = {}
        for column, name, dtype in self.column_inputs:
            values = frame[column].to_numpy()
            try:
                array = (
                    values.astype(str).astype(object)
                    if dtype.kind == "O"
                    else values.astype(dtype, copy=False)
                )
            except (TypeError, ValueError) as exc:
                raise InvalidInput(f"column {column!r} must be {dtype.name}: {exc}") from exc
            feeds[name] = array.reshape(-1, 1)
        return feeds

    def feeds(self, batch: Any) -> dict[str, NDArray[Any]]:
        """The graph's input feeds for a batch."""
        if self.mode == "columns":
            return self._column_feeds(batch)
        return {self.input_name: self._matrix(batch)}

    def warm_up(self, repeats: int = 3) -> float:
        """Like :meth:`Predictor.warm_up`, with the columns as a dict of arrays when the graph
        takes one matrix: no DataFrame, so warming up does not import pandas (~0.5 s of a
        gateway worker's start)."""
        if self.mode != "matrix" or not self._columns_kind:
            return super().warm_up(repeats)
        batch = {spec.name: spec.example_values(1) for spec in self.signature.inputs}
        start = time.perf_counter()
        for _ in range(repeats):
            self.predict(batch)
        return time.perf_counter() - start

    # -- predict -------------------------------------------------------------------------------

    def predict_matrix(self, matrix: NDArray[Any]) -> Outputs:
        """``predict`` for a C-contiguous [n, width] matrix of the graph's input dtype, as the
        gateway builds from validated columns: no conversion and no checks."""
        results = self._run_unchecked(self.onnx_output_names, {self.input_name: matrix}, None)
        return {out.name: out.apply(results[out.index]) for out in self.outputs}

    def predict(self, batch: Any) -> Outputs:
        if self.mode == "columns":
            feeds = self._column_feeds(batch)
        else:
            feeds = {self.input_name: self._matrix(batch)}
        results = self._run(self.onnx_output_names, feeds)
        return {out.name: out.apply(results[out.index]) for out in self.outputs}


def load_onnx_predictor(
    onnx: bytes | str | os.PathLike[str], manifest: Manifest, *, save_ort_as: str | None = None
) -> OnnxPredictor:
    """An OnnxPredictor for bytes from :func:`convert` (or a file of them, or the ``.ort``
    file ``save_ort_as`` wrote: see :func:`_session`), with ``manifest``'s signature.

    From bytes, the session keeps them as long as it lives (onnxruntime's Python binding
    does); from a file, it does not."""
    model = onnx if isinstance(onnx, bytes) else os.fspath(onnx)
    return predictor_for_session(_session(model, save_ort_as), manifest)


def predictor_for_session(session: Any, manifest: Manifest) -> OnnxPredictor:
    """An OnnxPredictor over an open session of bytes from :func:`convert` (or derived from
    them, e.g. quantised: the ``modelyard.onnx_runtime`` metadata says how to feed the graph)."""
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    meta: dict[str, Any] = {}
    if raw:
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidModel(f"the ONNX metadata {METADATA_KEY!r} is not JSON: {exc}") from exc
    if not meta.get("columns") and manifest.signature.kind == "columns":
        meta["columns"] = [spec.name for spec in manifest.signature.inputs]
    return OnnxPredictor(manifest, session, meta)


# --------------------------------------------------------------------------------------------
# The check sample
# --------------------------------------------------------------------------------------------


def _random_values(spec: TensorSpec, rows: int, rng: np.random.Generator) -> NDArray[Any]:
    shape = [
        rows if i == 0 and d == -1 else (1 if d == -1 else d) for i, d in enumerate(spec.shape)
    ]
    if not shape:
        shape = [rows]
    size = int(np.prod(shape))
    if spec.categories:
        picks = rng.integers(0, len(spec.categories), size=size)
        values = np.asarray(spec.categories, dtype=object)[picks]
        dtype = object if spec.dtype == "string" else spec.dtype
        return values.astype(dtype).reshape(shape)
    if spec.dtype == "string":
        raise Unsupported(f"input {spec.name!r} is free text (no categories): give sample=")
    if spec.dtype == "bool":
        return rng.integers(0, 2, size=size).astype(bool).reshape(shape)
    kind = np.dtype(spec.dtype).kind
    low = spec.min
    high = spec.max
    if kind in "iu":
        lo = int(low) if low is not None else (0 if kind == "u" else -3)
        hi = int(high) if high is not None else lo + 6
        return rng.integers(lo, hi + 1, size=size).astype(spec.dtype).reshape(shape)
    if low is not None and high is not None:
        values = rng.uniform(low, high, size=size)
    else:
        values = rng.normal(0.0, 1.0, size=size)
        if low is not None:
            values = low + np.abs(values)
        elif high is not None:
            values = high - np.abs(values)
    if spec.allow_nan:
        values[rng.random(size) < 0.05] = np.nan
    return values.astype(spec.dtype).reshape(shape)


def check_sample(signature: Signature, rows: int = 256, seed: int = SEED) -> Any:
    """A random batch of ``rows`` rows that satisfies ``signature`` (fixed seed).

    Floats are normal(0, 1) (uniform within min/max when both are set; 5% NaN when the
    spec allows NaN), ints are small, categories are drawn from the spec's categories.
    """
    rng = np.random.default_rng(seed)
    if signature.kind == "columns":
        import pandas as pd

        return pd.DataFrame({s.name: _random_values(s, rows, rng) for s in signature.inputs})
    arrays = {s.name: _random_values(s, rows, rng) for s in signature.inputs}
    return next(iter(arrays.values())) if len(arrays) == 1 else arrays


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


@dataclass
class _Plan:
    """What the graph takes: one [n, k] matrix, or one [n, 1] input per column."""

    mode: Literal["matrix", "columns"]
    columns: list[str]
    width: int | None
    column_specs: list[TensorSpec] = field(default_factory=list)


def _plan(predictor: Predictor, model: Any) -> _Plan:
    signature = predictor.signature
    if signature.kind == "columns":
        names = [spec.name for spec in signature.inputs]
        # The native predictor hands the model its fitted column order when it has one.
        fitted = predictor.manifest.options.get("feature_names")
        order = [str(n) for n in fitted] if fitted and set(fitted) <= set(names) else names
        specs = {spec.name: spec for spec in signature.inputs}
        if any(specs[n].dtype == "string" for n in order):
            return _Plan("columns", order, len(order), [specs[n] for n in order])
        return _Plan("matrix", order, len(order))
    if len(signature.inputs) != 1:
        raise Unsupported("models with several tensor inputs are not converted")
    shape = signature.inputs[0].shape
    if len(shape) != 2 or shape[1] < 1:
        raise Unsupported(f"the input must be a [rows, features] matrix; its shape is {shape}")
    if signature.inputs[0].dtype == "string":
        raise Unsupported("string tensor inputs are not converted")
    return _Plan("matrix", [], shape[1])


def _width(plan: _Plan, model: Any) -> int:
    if plan.width is not None:
        return plan.width
    n = getattr(model, "n_features_in_", None)
    if n is None:
        raise Unsupported("cannot tell the number of input features")
    return int(n)


def _initial_types(plan: _Plan, dtype: str, types: Any) -> list[tuple[str, Any]]:
    tensor = types.FloatTensorType if dtype == "float32" else types.DoubleTensorType
    if plan.mode == "matrix":
        return [("input", tensor([None, plan.width]))]
    result: list[tuple[str, Any]] = []
    for spec in plan.column_specs:
        if spec.dtype == "string":
            result.append((spec.name, types.StringTensorType([None, 1])))
        elif np.dtype(spec.dtype).kind in "iub":
            result.append((spec.name, types.Int64TensorType([None, 1])))
        else:
            result.append((spec.name, tensor([None, 1])))
    return result


def _convert_sklearn(model: Any, plan: _Plan, dtype: str) -> bytes:
    try:
        import skl2onnx
        from skl2onnx.common import data_types
        from skl2onnx.common.exceptions import MissingConverter, MissingShapeCalculator
        from sklearn.base import is_classifier
    except ImportError as exc:
        raise Unsupported(f"skl2onnx is not installed ({exc}); pip install skl2onnx") from exc
    options: dict[Any, Any] | None = None
    if is_classifier(model):
        options = {id(model): {"zipmap": False}}
    try:
        onx = skl2onnx.convert_sklearn(
            model, initial_types=_initial_types(plan, dtype, data_types), options=options
        )
    except (MissingConverter, MissingShapeCalculator) as exc:
        raise Unsupported(f"skl2onnx has no converter: {_first_line(exc)}") from exc
    except NotImplementedError as exc:
        raise Unsupported(f"skl2onnx cannot convert this model: {_first_line(exc)}") from exc
    return bytes(onx.SerializeToString())


def _onnxmltools() -> Any:
    try:
        import onnxmltools
        from onnxmltools.convert.common import data_types
    except ImportError as exc:
        raise Unsupported(f"onnxmltools is not installed ({exc}); pip install onnxmltools") from exc
    return onnxmltools, data_types


def _convert_xgboost(model: Any, plan: _Plan, dtype: str) -> bytes:
    import copy

    import xgboost as xgb

    onnxmltools, data_types = _onnxmltools()
    if plan.mode != "matrix":
        raise Unsupported("XGBoost models with string inputs are not converted")
    if isinstance(model, xgb.Booster):
        raise Unsupported(
            "raw xgboost.Booster models are not converted (their objective decides whether "
            "predictions are labels or probabilities); save the XGBClassifier/XGBRegressor"
        )
    # The converter reads the tree dump, which names features "f0", "f1", ... only when the
    # booster has no feature names: convert a copy without them.
    model = copy.deepcopy(model)
    model.get_booster().feature_names = None
    model.get_booster().feature_types = None
    try:
        onx = onnxmltools.convert_xgboost(
            model, initial_types=[("input", data_types.FloatTensorType([None, plan.width]))]
        )
    except NotImplementedError as exc:
        raise Unsupported(f"onnxmltools cannot convert this model: {_first_line(exc)}") from exc
    return bytes(onx.SerializeToString())


def _convert_lightgbm(model: Any, plan: _Plan, dtype: str) -> bytes:
    onnxmltools, data_types = _onnxmltools()
    if plan.mode != "matrix":
        raise Unsupported("LightGBM models with string inputs are not converted")
    try:
        onx = onnxmltools.convert_lightgbm(
            model,
            initial_types=[("input", data_types.FloatTensorType([None, plan.width]))],
            zipmap=False,
        )
    except NotImplementedError as exc:
        raise Unsupported(f"onnxmltools cannot convert this model: {_first_line(exc)}") from exc
    return bytes(onx.SerializeToString())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    if len(line) > 300:  # converters put whole attribute arrays in their messages
        line = line[:297] + "..."
    return f"{type(exc).__name__}: {line}"


def _native_model(predictor: Predictor, fmt: str) -> Any:
    model = getattr(predictor, "booster" if fmt == "lightgbm" else "model", None)
    if model is None:
        raise Unsupported(f"the {fmt} predictor does not expose its model")
    return model


def _output_maps(
    native: Outputs,
    onnx_names: list[str],
    classes: list[Any] | None,
    labels_only: bool = False,
) -> list[dict[str, Any]]:
    """Which ONNX output feeds which native output: labels first, then probabilities.

    ``labels_only``: a classifier whose version answers its labels alone (MLflow's, as
    MLflow's pyfunc does): the graph's label output feeds "predictions", the rest is unused.
    """
    unknown = sorted(set(native) - {"predictions", "probabilities"})
    if unknown:
        raise Unsupported(f"the native model has outputs {unknown} that no converter produces")
    classifier = "probabilities" in native
    if classifier and len(onnx_names) < 2:
        raise Unsupported(f"the converted classifier has outputs {onnx_names}, not label+proba")
    if not classifier and len(onnx_names) != 1 and not labels_only:
        raise Unsupported(
            f"the native model outputs only predictions but the graph gives {onnx_names} "
            "(a booster trained as a classifier, saved without its classes?)"
        )
    maps = []
    for index, name in enumerate(
        ["predictions", "probabilities"] if classifier else ["predictions"]
    ):
        value = np.asarray(native[name])
        spec: dict[str, Any] = {
            "name": name,
            "index": index,
            "dtype": value.dtype.str if value.dtype.kind != "O" else "object",
            "tail": list(value.shape[1:]),
        }
        if name == "predictions" and classes is not None:
            spec["classes"] = [_plain(c) for c in classes]
        maps.append(spec)
    return maps


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _with_metadata(onnx_bytes: bytes, meta: dict[str, Any]) -> bytes:
    import onnx

    proto = onnx.load_model_from_string(onnx_bytes)
    entries = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(entries)
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(meta)
    return bytes(proto.SerializeToString())


def compare(
    native: Outputs, converted: Outputs, *, atol: float = ATOL, rtol: float = RTOL
) -> tuple[bool, dict[str, Any]]:
    """Compare every native output with the converted one: labels exactly, values closely."""
    classifier = "probabilities" in native
    ok = True
    details: dict[str, Any] = {}
    for name, expected_raw in native.items():
        expected = np.asarray(expected_raw)
        if name not in converted:
            details[name] = {"missing": True}
            ok = False
            continue
        actual = np.asarray(converted[name])
        entry: dict[str, Any] = {"dtype": expected.dtype.str, "onnx_dtype": actual.dtype.str}
        if expected.shape != actual.shape:
            entry["shape_mismatch"] = [list(expected.shape), list(actual.shape)]
            details[name] = entry
            ok = False
            continue
        exact = (name == "predictions" and classifier) or expected.dtype.kind not in "fc"
        if exact:
            equal = expected == actual
            if expected.dtype.kind == "f":
                equal |= np.isnan(expected) & np.isnan(actual)
            mismatches = int(expected.size - np.count_nonzero(equal))
            entry["label_mismatches"] = mismatches
            entry["dtype_matches"] = expected.dtype == actual.dtype
            ok = ok and mismatches == 0 and expected.dtype == actual.dtype
        else:
            e = expected.astype(np.float64)
            a = actual.astype(np.float64)
            both_nan = np.isnan(e) & np.isnan(a)
            diff = np.where(both_nan, 0.0, np.abs(e - a))
            entry["max_abs_diff"] = float(np.nanmax(diff, initial=0.0)) if diff.size else 0.0
            close = np.isclose(a, e, atol=atol, rtol=rtol, equal_nan=True)
            entry["not_close"] = int(close.size - np.count_nonzero(close))
            ok = ok and entry["not_close"] == 0
        details[name] = entry
    return ok, details


_CONVERTERS: dict[str, Callable[[Any, _Plan, str], bytes]] = {
    "sklearn": _convert_sklearn,
    "xgboost": _convert_xgboost,
    "lightgbm": _convert_lightgbm,
}


def _load_native(path: Path, trusted: bool) -> tuple[Manifest, Predictor]:
    manifest = validate_model_dir(path)
    return manifest, get_format(manifest.format).load(path, manifest, trusted)


def convert(
    path: Path | str,
    *,
    sample: Any | None = None,
    rows: int = 256,
    trusted: bool = False,
) -> ConversionResult:
    """Convert the saved model directory ``path`` to ONNX and check it against the native model.

    ``sample`` is the check batch (any batch the native predictor takes); without one,
    ``rows`` random rows are generated from the signature (:func:`check_sample`). float32
    inputs are tried first; sklearn models fall back to float64 when float32 differs.
    ``trusted`` follows :func:`~modelyard.formats.load_model` (sklearn types are trusted
    anyway). Never raises for a model it cannot handle: see ``status`` and ``report``.
    """
    start = time.perf_counter()
    report: dict[str, Any] = {
        "path": str(path),
        "versions": {
            d: v for d in ("onnx", "onnxruntime", "skl2onnx", "onnxmltools") if (v := _version(d))
        },
    }

    def done(status: Status, onnx_bytes: bytes | None = None, error: str | None = None) -> Any:
        if error is not None:
            report["error"] = error
        report["status"] = status
        report["seconds"] = round(time.perf_counter() - start, 4)
        return ConversionResult(status, onnx_bytes, report)

    try:
        manifest, native = _load_native(Path(path), trusted)
    except ModelyardError as exc:
        return done("failed", error=f"cannot load the model: {type(exc).__name__}: {exc.detail}")
    except Exception as exc:
        return done("failed", error=f"cannot load the model: {_first_line(exc)}")
    fmt = manifest.format
    report["format"] = fmt
    if fmt not in _SUPPORTED_FORMATS:
        return done(
            "unsupported",
            error=f"{fmt} models are not converted to ONNX (only {', '.join(_SUPPORTED_FORMATS)})",
        )
    converter_dist, framework_dist = _CONVERTER_PACKAGES[fmt]
    report["converter"] = converter_dist
    report["versions"][framework_dist] = _version(framework_dist)
    try:
        model = _native_model(native, fmt)
        report["model"] = f"{type(model).__module__}.{type(model).__qualname__}"
        plan = _plan(native, model)
        plan.width = _width(plan, model)
        if sample is None:
            sample = check_sample(native.signature, rows)
            report["sample"] = "generated"
        else:
            report["sample"] = "given"
        expected = native.predict(sample)
        report["rows"] = len(next(iter(expected.values())))
    except Unsupported as exc:
        return done("unsupported", error=str(exc))
    except ModelyardError as exc:
        return done("failed", error=f"the native model failed on the sample: {exc.detail}")
    except Exception as exc:
        return done("failed", error=f"the native model failed on the sample: {_first_line(exc)}")

    classes = manifest.options.get("classes") if fmt == "lightgbm" else None
    # MLflow's classifiers answer predict() alone (formats/mlflow.py records that)
    labels_only = manifest.options.get("probabilities") is False
    dtypes = ["float32", "float64"] if fmt == "sklearn" else ["float32"]
    attempts: list[dict[str, Any]] = []
    report["attempts"] = attempts
    best: tuple[bytes, dict[str, Any]] | None = None
    for dtype in dtypes:
        attempt: dict[str, Any] = {"input_dtype": dtype}
        attempts.append(attempt)
        try:
            raw = _CONVERTERS[fmt](model, plan, dtype)
            meta = _meta(plan, dtype, fmt, raw, expected, classes, labels_only)
            onnx_bytes = _with_metadata(raw, meta)
            predictor = load_onnx_predictor(onnx_bytes, manifest)
            ok, details = compare(expected, predictor.predict(sample))
        except Unsupported as exc:
            attempt["error"] = str(exc)
            if dtype == dtypes[0]:
                return done("unsupported", error=str(exc))
            continue
        except ModelyardError as exc:
            attempt["error"] = f"{type(exc).__name__}: {exc.detail}"
            continue
        except Exception as exc:
            attempt["error"] = _first_line(exc)
            continue
        attempt["outputs"] = details
        attempt["identical"] = ok
        if ok:
            _summarise(report, attempt)
            return done("identical", onnx_bytes)
        if best is None:
            best = (onnx_bytes, attempt)
    if best is not None:
        _summarise(report, best[1])
        return done("different", best[0])
    return done(
        "failed", error="; ".join(f"{a['input_dtype']}: {a.get('error')}" for a in attempts)
    )


def _meta(
    plan: _Plan,
    dtype: str,
    fmt: str,
    raw: bytes,
    expected: Outputs,
    classes: list[Any] | None,
    labels_only: bool = False,
) -> dict[str, Any]:
    import onnx

    graph = onnx.load_model_from_string(raw).graph
    onnx_names = [o.name for o in graph.output]
    meta: dict[str, Any] = {
        "source_format": fmt,
        "mode": plan.mode,
        "columns": plan.columns,
        "width": plan.width,
        "input_dtype": dtype,
        "input_name": graph.input[0].name,
        "outputs": _output_maps(expected, onnx_names, classes, labels_only),
    }
    if plan.mode == "columns":
        by_name = {i.name: i for i in graph.input}
        meta["column_inputs"] = [
            {
                "column": spec.name,
                "input": spec.name,
                "dtype": _column_dtype(by_name[spec.name].type.tensor_type.elem_type),
            }
            for spec in plan.column_specs
        ]
    return meta


def _column_dtype(elem_type: int) -> str:
    import onnx

    np_dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    return "object" if np.dtype(np_dtype).kind in "OSU" else np.dtype(np_dtype).name


def _summarise(report: dict[str, Any], attempt: dict[str, Any]) -> None:
    report["input_dtype"] = attempt["input_dtype"]
    outputs = attempt.get("outputs", {})
    report["max_abs_diff"] = {
        name: entry["max_abs_diff"] for name, entry in outputs.items() if "max_abs_diff" in entry
    }
    report["label_mismatches"] = {
        name: entry["label_mismatches"]
        for name, entry in outputs.items()
        if "label_mismatches" in entry
    }


__all__ = [
    "ConversionResult",
    "OnnxPredictor",
    "check_sample",
    "compare",
    "convert",
    "load_onnx_predictor",
    "predictor_for_session",
]
