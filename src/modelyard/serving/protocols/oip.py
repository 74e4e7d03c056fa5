"""Open Inference Protocol v2 (KServe / Triton REST): request decoding, response encoding.

A request body is ``{"id"?, "inputs": [{"name", "shape", "datatype", "data", "parameters"?}],
"outputs": [{"name"}]?, "parameters"?}``. ``data`` may be flat (row-major) or nested; it is
reshaped to ``shape``. Triton's binary data extension is supported too: pass the value of the
``Inference-Header-Content-Length`` header as ``header_length`` and the inputs whose
``parameters.binary_data_size`` is set are read, in order, from the bytes after the JSON header.

For a "columns" signature each column is an input of shape [n] or [n, 1]; one input of shape
[n, k], k = number of columns, is also accepted (that is how most OIP clients send table rows)
and split into the columns in signature order. A single-input "tensor" model takes its one
input whatever name the client gave it.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from modelyard.errors import BadRequest, InvalidInput
from modelyard.formats.signature import Signature
from modelyard.serving.validation import (
    Columns,
    Inputs,
    column_index,
    table_columns,
    validate_inputs,
    validate_rows,
    validate_table,
)

_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_FROM_NUMPY: dict[np.dtype[Any], str] = {
    dtype: name for name, dtype in _TO_NUMPY.items() if name != "BYTES"
}
DATATYPES = tuple(_TO_NUMPY)

_NUMPY_OPTS = orjson.OPT_SERIALIZE_NUMPY


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype of an OIP datatype ("FP32" -> float32; "BYTES" -> object)."""
    try:
        return _TO_NUMPY[datatype]
    except KeyError:
        raise BadRequest(
            f"unknown OIP datatype {datatype!r}; use one of {', '.join(DATATYPES)}"
        ) from None


def oip_datatype(dtype: Any) -> str:
    """The OIP datatype of a numpy dtype or a signature dtype name ("string" -> "BYTES")."""
    if isinstance(dtype, str) and dtype == "string":
        return "BYTES"
    np_dtype = np.dtype(dtype)
    name = _FROM_NUMPY.get(np_dtype)
    if name is not None:
        return name
    if np_dtype.kind in "OUS":
        return "BYTES"
    raise ValueError(f"numpy dtype {np_dtype} has no Open Inference Protocol datatype")


@dataclass(slots=True)
class InferRequest:
    """A decoded, validated OIP inference request."""

    id: str | None
    inputs: Inputs
    rows: int
    outputs: list[str] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


def _loads(body: bytes, model: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"{model}: the request body is not valid JSON: {exc}") from None


def parse_infer_request(
    body: bytes, signature: Signature, *, model: str, header_length: int | None = None
) -> InferRequest:
    """Decode and validate an OIP v2 inference request body for ``model``.

    Raises BadRequest (400) when the body is not an OIP request (bad JSON, missing or mistyped
    fields, unknown datatype) and InvalidInput (422) when its content does not fit the
    signature or the data do not fill the declared shape.
    """
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise BadRequest(
                f"{model}: Inference-Header-Content-Length is {header_length} but the body has "
                f"{len(body)} bytes"
            )
        doc = _loads(body[:header_length], model)
        binary = memoryview(body)[header_length:]
    else:
        doc = _loads(body, model)
        binary = None
    if not isinstance(doc, dict):
        raise BadRequest(f"{model}: an inference request must be a JSON object with 'inputs'")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest(f"{model}: 'id' must be a string, got {type(request_id).__name__}")
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest(f"{model}: 'parameters' must be a JSON object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest(
            f"{model}: an inference request needs 'inputs': a non-empty list of "
            '{"name", "shape", "datatype", "data"} objects'
        )
    requested = _requested_outputs(doc.get("outputs"), signature, model)
    if binary is None:
        fast = _columns_table(raw_inputs, signature, model)
        if fast is not None:
            return InferRequest(
                id=request_id,
                inputs=fast,
                rows=fast.matrix.shape[1],
                outputs=requested,
                parameters=parameters,
            )

    decoded: list[_Decoded] = []
    offset = 0
    for position, item in enumerate(raw_inputs):
        one = _decode_input(item, position, binary, offset, model)
        offset += one.binary_size
        decoded.append(one)
    if binary is not None and offset != len(binary):
        raise BadRequest(
            f"{model}: the body has {len(binary)} bytes of binary data after the JSON header "
            f"but the inputs' binary_data_size add up to {offset}"
        )
    if signature.kind == "columns" and len(decoded) == 1:
        table = _as_table(decoded[0], signature, model)
        if table is not None:
            inputs, rows = validate_rows(signature, table, model=model)
            return InferRequest(
                id=request_id, inputs=inputs, rows=rows, outputs=requested, parameters=parameters
            )
    arrays = _to_signature(decoded, signature, model)
    inputs, rows = validate_inputs(signature, arrays, model=model)
    return InferRequest(
        id=request_id, inputs=inputs, rows=rows, outputs=requested, parameters=parameters
    )


_NUMERIC = frozenset(name for name in _TO_NUMPY if name not in ("BYTES", "BOOL"))


def _columns_table(raw_inputs: list[Any], signature: Signature, model: str) -> Columns | None:
    """The fast path for the common request to a tabular model: one numeric input of shape
    [n] per column, flat JSON data, no binary data. None for anything else (the general
    path then decodes it and names what is wrong)."""
    names = table_columns(signature)
    if names is None or len(raw_inputs) != len(names):
        return None
    index = column_index(signature)
    ordered: list[Any] = [None] * len(names)
    n = -1
    for item in raw_inputs:
        if type(item) is not dict or item.get("parameters"):
            return None
        position = index.get(item.get("name"))  # type: ignore[arg-type]
        shape = item.get("shape")
        data = item.get("data")
        if (
            position is None
            or ordered[position] is not None
            or type(shape) is not list
            or len(shape) != 1
            or type(data) is not list
            or item.get("datatype") not in _NUMERIC
        ):
            return None
        if n < 0:
            n = shape[0]
        if shape[0] != n or len(data) != n or type(n) is not int:
            return None
        ordered[position] = data
    if n < 1:
        return None
    try:
        table = np.array(ordered)
    except (ValueError, TypeError):
        return None
    return validate_table(signature, table, model=model)


def _requested_outputs(raw: Any, signature: Signature, model: str) -> list[str] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise BadRequest(f"{model}: 'outputs' must be a list of {{\"name\": ...}} objects")
    names: list[str] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest(f"{model}: each entry of 'outputs' needs a string 'name'")
        names.append(item["name"])
    known = [spec.name for spec in signature.outputs]
    if known:
        for name in names:
            if name not in known:
                raise InvalidInput(
                    f"{model}: unknown output {name!r}; the model's outputs are "
                    f"{', '.join(repr(k) for k in known)}",
                    field=name,
                )
    return names


@dataclass(slots=True)
class _Decoded:
    name: str
    shape: list[int]
    datatype: str
    # A flat list of ``prod(shape)`` JSON values, or an array already in ``shape``.
    value: list[Any] | NDArray[Any]
    binary_size: int = 0

    def array(self, model: str) -> NDArray[Any]:
        if isinstance(self.value, np.ndarray):
            return self.value
        data = self.value
        array = np.array(data, dtype=object) if self.datatype == "BYTES" else np.array(data)
        if array.dtype.kind not in "fiubO":
            # Strings mixed with numbers: keep the Python values so that validation can
            # name the offending one.
            array = np.array(data, dtype=object)
        self.value = array = array.reshape(self.shape)
        return array


def _decode_input(
    item: Any, position: int, binary: memoryview | None, offset: int, model: str
) -> _Decoded:
    if not isinstance(item, dict):
        raise BadRequest(f"{model}: inputs[{position}] must be an object")
    name = item.get("name")
    if not isinstance(name, str):
        raise BadRequest(f"{model}: inputs[{position}] needs a string 'name'")
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise BadRequest(
            f"{model}: input {name!r} needs a 'shape': a list of non-negative integers, "
            f"got {shape!r}"
        )
    datatype = item.get("datatype")
    if datatype not in _TO_NUMPY:
        raise BadRequest(
            f"{model}: input {name!r} has datatype {datatype!r}; use one of {', '.join(DATATYPES)}"
        )
    size = shape[0] if len(shape) == 1 else math.prod(shape)
    params = item.get("parameters")
    if params and isinstance(params, dict) and params.get("binary_data_size") is not None:
        binary_size = params["binary_data_size"]
        if binary is None:
            raise BadRequest(
                f"{model}: input {name!r} uses binary data (binary_data_size) but no "
                "Inference-Header-Content-Length was given"
            )
        if type(binary_size) is not int or offset + binary_size > len(binary):
            raise BadRequest(
                f"{model}: input {name!r} says binary_data_size={binary_size!r} but only "
                f"{len(binary) - offset} bytes are left in the body"
            )
        chunk = binary[offset : offset + binary_size]
        array = _from_binary(name, datatype, chunk, size, model).reshape(shape)
        return _Decoded(name, shape, datatype, array, binary_size)
    if "data" not in item:
        raise BadRequest(f"{model}: input {name!r} has no 'data'")
    data = item["data"]
    if not isinstance(data, list):
        data = [data]
    if len(data) == size and (not data or not isinstance(data[0], list)):
        return _Decoded(name, shape, datatype, data)  # flat: converted lazily
    try:
        array = np.array(data, dtype=object) if datatype == "BYTES" else np.array(data)
    except (ValueError, TypeError):
        raise InvalidInput(
            f"{model}: input {name!r}: 'data' is nested unevenly; give a flat row-major "
            f"list of {size} values for shape {shape}",
            field=name,
        ) from None
    if array.size != size:
        raise InvalidInput(
            f"{model}: input {name!r} has {array.size} values in 'data' but its shape {shape} "
            f"needs {size}",
            field=name,
        )
    if array.dtype.kind not in "fiubO":
        array = np.array(data, dtype=object)
    return _Decoded(name, shape, datatype, array.reshape(shape))


def _from_binary(
    name: str, datatype: str, chunk: memoryview, size: int, model: str
) -> NDArray[Any]:
    if datatype == "BYTES":
        items: list[str] = []
        pos = 0
        raw = bytes(chunk)
        while pos < len(raw):
            if pos + 4 > len(raw):
                break
            (length,) = struct.unpack_from("<I", raw, pos)
            pos += 4
            items.append(raw[pos : pos + length].decode("utf-8", errors="replace"))
            pos += length
        if len(items) != size or pos != len(raw):
            raise InvalidInput(
                f"{model}: input {name!r} has {len(items)} BYTES elements in its binary data "
                f"but its shape needs {size}",
                field=name,
            )
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out
    dtype = _TO_NUMPY[datatype]
    if len(chunk) != size * dtype.itemsize:
        raise InvalidInput(
            f"{model}: input {name!r} has {len(chunk)} bytes of binary data but its shape and "
            f"datatype {datatype} need {size * dtype.itemsize}",
            field=name,
        )
    return np.frombuffer(chunk, dtype=dtype.newbyteorder("<")).copy()


def _as_table(one: _Decoded, signature: Signature, model: str) -> NDArray[Any] | None:
    """The one input of a "columns" request as an (n, k) table of rows, if it is one."""
    k = len(signature.inputs)
    shape = one.shape
    if len(shape) != 2 or shape[1] != k:
        return None
    if k == 1 and one.name == signature.inputs[0].name:
        return None  # one column sent as [n, 1]
    return one.array(model)


def _to_signature(decoded: list[_Decoded], signature: Signature, model: str) -> dict[str, Any]:
    if signature.kind == "columns":
        names = [spec.name for spec in signature.inputs]
        values: dict[str, Any] = {}
        for one in decoded:
            name, shape = one.name, one.shape
            if name in values:
                raise BadRequest(f"{model}: input {name!r} is given twice")
            if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
                value = one.value
                values[name] = value.reshape(-1) if isinstance(value, np.ndarray) else value
                continue
            raise InvalidInput(
                f"{model}: input {name!r} is a column and must have shape [n] or [n, 1]; "
                f"got {shape}. To send whole rows, send one input of shape "
                f"[n, {len(names)}] with the columns in this order: "
                f"{', '.join(repr(c) for c in names)}",
                field=name,
            )
        return values
    if len(decoded) == 1 and len(signature.inputs) == 1:
        return {signature.inputs[0].name: decoded[0].array(model)}
    arrays: dict[str, Any] = {}
    for one in decoded:
        if one.name in arrays:
            raise BadRequest(f"{model}: input {one.name!r} is given twice")
        arrays[one.name] = one.array(model)
    return arrays


# ---------------------------------------------------------------------------------------------
# Responses and metadata


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def output_tensor(name: str, array: Any) -> dict[str, Any]:
    """One OIP output tensor: name, shape, datatype and flat row-major data."""
    array = np.asarray(array)
    datatype = oip_datatype(array.dtype)
    flat = np.ascontiguousarray(array).reshape(-1)
    if datatype == "BYTES" or array.dtype.kind not in "fiub":
        data: Any = flat.tolist()
    else:
        data = flat  # orjson writes numpy arrays natively
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}


def encode_infer_response(
    *,
    model: str,
    version: str,
    outputs: dict[str, NDArray[Any]],
    request_id: str | None,
    requested: list[str] | None = None,
    parameters: dict[str, Any] | None = None,
) -> bytes:
    """The OIP v2 response body for ``outputs`` (only the ``requested`` ones when given),
    with the response's ``parameters`` if any.

    NaN and infinities have no JSON form and are written as ``null``.
    """
    names = list(outputs) if requested is None else requested
    tensors = []
    for name in names:
        if name not in outputs:
            raise InvalidInput(
                f"{model}: unknown output {name!r}; the model's outputs are "
                f"{', '.join(repr(k) for k in outputs)}",
                field=name,
            )
        tensors.append(output_tensor(name, outputs[name]))
    doc: dict[str, Any] = {"model_name": model, "model_version": str(version)}
    if request_id is not None:
        doc["id"] = request_id
    if parameters:
        doc["parameters"] = parameters
    doc["outputs"] = tensors
    return orjson.dumps(doc, option=_NUMPY_OPTS, default=_default)


def model_metadata(
    name: str, versions: list[str], signature: Signature, platform: str
) -> dict[str, Any]:
    """The OIP model metadata document (``GET /v2/models/{name}``).

    Columns of a "columns" signature are reported as inputs of shape [-1] each.
    """

    def tensors(specs: Any, columns: bool) -> list[dict[str, Any]]:
        return [
            {
                "name": spec.name,
                "datatype": _spec_datatype(spec.dtype),
                "shape": [-1] if columns else list(spec.shape),
            }
            for spec in specs
        ]

    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": platform,
        "inputs": tensors(signature.inputs, signature.kind == "columns"),
        "outputs": tensors(signature.outputs, False),
    }


def _spec_datatype(dtype: str) -> str:
    try:
        return oip_datatype(dtype)
    except (TypeError, ValueError):
        return "BYTES"


def model_config(metadata: dict[str, Any]) -> dict[str, Any]:
    """Triton's model configuration (``GET /v2/models/{name}/config``, which tritonclient's
    ``get_model_config`` reads), made from the metadata document of :func:`model_metadata`.

    It declares no batch dimension (``max_batch_size`` 0): every shape includes its rows
    (-1), as in the metadata.
    """

    def tensors(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                "name": t["name"],
                "data_type": "TYPE_STRING" if t["datatype"] == "BYTES" else f"TYPE_{t['datatype']}",
                "dims": t["shape"],
            }
            for t in items
        ]

    return {
        "name": metadata["name"],
        "platform": metadata["platform"],
        "backend": "modelyard",
        "max_batch_size": 0,
        "input": tensors(metadata["inputs"]),
        "output": tensors(metadata["outputs"]),
    }
