"""ONNX models, run with onnxruntime on the CPU."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import InvalidInput, InvalidModel
from modelyard.formats.base import Outputs, Predictor, model_file, require
from modelyard.formats.manifest import Manifest
from modelyard.formats.onnx_runtime import METADATA_KEY, predictor_for_session
from modelyard.formats.signature import Signature, TensorSpec, dtype_name, is_frame

MODEL_FILE = "model.onnx"


def _value_spec(onnx: Any, value: Any) -> TensorSpec:
    """The spec of one graph input or output (a ValueInfoProto)."""
    kind = value.type.WhichOneof("value")
    if kind == "sequence_type":
        # e.g. skl2onnx's ZipMap: a list of {class: probability}; predict turns it into a
        # [batch, classes] array.
        element = value.type.sequence_type.elem_type
        if element.WhichOneof("value") == "map_type":
            return TensorSpec(
                name=value.name,
                dtype=_elem_dtype(onnx, element.map_type.value_type.tensor_type.elem_type),
                shape=[-1, -1],
            )
        return TensorSpec(name=value.name, dtype="string", shape=[-1])
    tensor = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    return TensorSpec(name=value.name, dtype=_elem_dtype(onnx, tensor.elem_type), shape=dims)


def _elem_dtype(onnx: Any, elem_type: int) -> str:
    return dtype_name(onnx.helper.tensor_dtype_to_np_dtype(elem_type))


def _as_model_proto(onnx: Any, model: Any) -> Any:
    if isinstance(model, onnx.ModelProto):
        return model
    try:
        if isinstance(model, bytes | bytearray):
            return onnx.load_model_from_string(bytes(model))
        if isinstance(model, str | Path):
            return onnx.load(str(model))
    except Exception as exc:
        raise InvalidInput(f"cannot read the ONNX model ({type(exc).__name__}: {exc})") from exc
    raise InvalidInput(
        f"the onnx format saves an onnx.ModelProto, bytes or a .onnx path, "
        f"not a {type(model).__name__}"
    )


class OnnxFormat:
    """ONNX graphs (``onnx.ModelProto``, serialized bytes or a path to a .onnx file)."""

    name = "onnx"
    framework = "onnx"
    extra = "onnx"
    packages = ("onnx", "onnxruntime")

    def detect(self, model: Any) -> bool:
        if isinstance(model, str | Path):
            return str(model).endswith(".onnx") and Path(model).is_file()
        onnx = sys.modules.get("onnx")
        return onnx is not None and isinstance(model, onnx.ModelProto)

    def signature_of(self, model: Any) -> Signature | None:
        onnx = require("onnx", "onnx")
        graph = _as_model_proto(onnx, model).graph
        # Old exporters list initializers (weights) among the inputs; they are not inputs.
        weights = {init.name for init in graph.initializer}
        return Signature(
            kind="tensor",
            inputs=[_value_spec(onnx, v) for v in graph.input if v.name not in weights],
            outputs=[_value_spec(onnx, v) for v in graph.output],
        )

    def save(
        self,
        model: Any,
        path: Path,
        signature: Signature,
        options: dict[str, Any],
        input_example: Any = None,
    ) -> dict[str, Any]:
        onnx = require("onnx", "onnx")
        proto = _as_model_proto(onnx, model)
        try:
            onnx.checker.check_model(proto)
        except Exception as exc:
            raise InvalidInput(f"the ONNX model is invalid: {exc}") from exc
        (path / MODEL_FILE).write_bytes(proto.SerializeToString())
        opsets = {entry.domain or "ai.onnx": entry.version for entry in proto.opset_import}
        return {**options, "opsets": opsets, "producer": proto.producer_name}

    def load(self, path: Path, manifest: Manifest, trusted: bool) -> Predictor:
        ort = require("onnxruntime", "onnx")
        session_options = ort.SessionOptions()
        # One thread per session: serving runs many requests in parallel, and per-session
        # thread pools would oversubscribe the CPU.
        session_options.intra_op_num_threads = 1
        session_options.inter_op_num_threads = 1
        name = model_file(manifest, MODEL_FILE)  # MLflow's onnx flavor may name it otherwise
        try:
            session = ort.InferenceSession(
                str(path / name), session_options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise InvalidModel(f"onnxruntime cannot load {name}: {exc}") from exc
        if METADATA_KEY in session.get_modelmeta().custom_metadata_map:
            # A graph converted from another format (e.g. a quantised variant of a sklearn
            # version): it takes and returns what the model it was converted from did.
            return predictor_for_session(session, manifest)
        return OnnxPredictor(manifest, session)

    def validate(self, path: Path, manifest: Manifest) -> None:
        onnx = require("onnx", "onnx")
        name = model_file(manifest, MODEL_FILE)
        try:
            onnx.checker.check_model(str(path / name))
        except Exception as exc:
            raise InvalidModel(
                f"{name} is not a valid ONNX model (expected a serialized "
                f"onnx.ModelProto): {type(exc).__name__}: {exc}"
            ) from exc


_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


class OnnxPredictor(Predictor):
    """Feeds the graph's inputs by name; outputs are the graph's outputs."""

    def __init__(self, manifest: Manifest, session: Any) -> None:
        super().__init__(manifest)
        self.session = session
        self.inputs = session.get_inputs()
        self.output_names = [o.name for o in session.get_outputs()]

    def _feeds(self, batch: Any) -> dict[str, Any]:
        # is_frame: pandas is not imported for an ONNX model (a gateway worker serving
        # only ONNX models never loads it; see server.py)
        frame = is_frame(batch)
        if len(self.inputs) == 1 and not frame and not isinstance(batch, Mapping):
            arrays = {self.inputs[0].name: np.asarray(batch)}
        elif len(self.inputs) == 1 and frame:
            arrays = {self.inputs[0].name: batch.to_numpy()}
        else:
            arrays = self.as_arrays(batch)
        feeds: dict[str, Any] = {}
        for graph_input in self.inputs:
            if graph_input.name not in arrays:
                raise InvalidInput(
                    f"the batch is missing input {graph_input.name!r}; expected "
                    f"{[i.name for i in self.inputs]}"
                )
            array = arrays[graph_input.name]
            # A table column arrives 1-D; converted sklearn models want it as [batch, 1].
            if array.ndim == 1 and len(graph_input.shape) == 2:
                array = array.reshape(-1, 1)
            dtype = _ORT_DTYPES.get(graph_input.type)
            feeds[graph_input.name] = array if dtype is None else array.astype(dtype, copy=False)
        return feeds

    def predict(self, batch: Any) -> Outputs:
        results = self.session.run(self.output_names, self._feeds(batch))
        return {
            name: _as_array(value) for name, value in zip(self.output_names, results, strict=True)
        }


def _as_array(value: Any) -> Any:
    if isinstance(value, list) and value and isinstance(value[0], Mapping):
        keys = list(value[0])  # ZipMap: one {class: probability} per row
        return np.asarray([[row[k] for k in keys] for row in value])
    return np.asarray(value)


FORMAT = OnnxFormat()
