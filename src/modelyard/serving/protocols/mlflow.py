"""MLflow's scoring protocol, as served on ``POST /invocations``.

Accepted bodies (the same as ``mlflow models serve``):

- ``application/json`` (an optional ``; charset=...`` is honoured) with exactly one of
  ``dataframe_split`` (``{"columns": [...], "data": [[...], ...], "index"?}``),
  ``dataframe_records`` (``[{"col": value, ...}, ...]``), ``instances`` (a list of rows, of
  ``{name: value}`` dicts, or for a tensor model a list of arrays) or ``inputs`` (a dict of
  name -> values, or a list for a single-tensor model), plus an optional ``params`` object
  (accepted and ignored here);
- ``text/csv`` with a header row naming the columns.

Decoding gives the canonical ``Inputs`` through :func:`validate_inputs`.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from modelyard.errors import BadRequest, InvalidInput
from modelyard.formats.signature import Signature, TensorSpec
from modelyard.serving.validation import (
    Columns,
    Inputs,
    table_columns,
    validate_inputs,
    validate_table,
)

JSON_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
CONTENT_TYPES = ("application/json", "text/csv")

_ACCEPTED = ", ".join(repr(k) for k in JSON_KEYS)


def parse_invocations(
    body: bytes, content_type: str | None, signature: Signature, *, model: str
) -> tuple[Inputs, int]:
    """Decode an ``/invocations`` body for ``model`` and validate it against ``signature``.

    BadRequest (400) for a content type other than JSON or CSV, malformed JSON or CSV, or a
    JSON object without exactly one of the accepted keys; InvalidInput (422) when the
    content does not fit the signature.
    """
    media, charset = _media_type(content_type)
    if media == "application/json":
        raw = _decode_json(body, charset, model)
        if type(raw) is dict and len(raw) == 1 and "dataframe_split" in raw:
            fast = _split_table(raw["dataframe_split"], signature, model)
            if fast is not None:
                return fast, fast.matrix.shape[1]
        return validate_inputs(signature, _from_json(raw, signature, model), model=model)
    if media == "text/csv":
        return validate_inputs(signature, _from_csv(body, charset, signature, model), model=model)
    raise BadRequest(
        f"{model}: unsupported content type {content_type!r} for /invocations; send "
        "'application/json' (with one of "
        f"{_ACCEPTED}) or 'text/csv' (with a header row)",
        accepted=list(CONTENT_TYPES),
    )


def _split_table(value: Any, signature: Signature, model: str) -> Columns | None:
    """The fast path for the common body: ``dataframe_split`` of numbers, every column of
    the signature in its order, for a model that takes :class:`Columns`. None for anything
    else (the general path then decodes it and names what is wrong)."""
    if type(value) is not dict:
        return None
    data = value.get("data")
    if type(data) is not list or not data:
        return None
    names = table_columns(signature)
    if names is None:
        return None
    columns = value.get("columns")
    if columns is not None and (type(columns) is not list or tuple(columns) != names):
        return None
    try:
        rows = np.array(data)
    except (ValueError, TypeError):
        return None
    if rows.ndim != 2:
        return None
    return validate_table(signature, rows.T, model=model)


def _media_type(content_type: str | None) -> tuple[str, str | None]:
    if content_type == "application/json":
        return content_type, None
    if not content_type:
        return "", None
    media, _, rest = content_type.partition(";")
    charset = None
    for param in rest.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"').lower() or None
    return media.strip().lower(), charset


def _text(body: bytes, charset: str | None, model: str) -> str:
    try:
        return body.decode(charset or "utf-8")
    except LookupError:
        raise BadRequest(f"{model}: unknown charset {charset!r}; send UTF-8") from None
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"{model}: the body is not valid {charset or 'utf-8'} text: {exc}"
        ) from None


def _decode_json(body: bytes, charset: str | None, model: str) -> Any:
    data: bytes | str = body
    if charset is not None and codecs.lookup(charset).name not in ("utf-8", "ascii"):
        data = _text(body, charset, model)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"{model}: the request body is not valid JSON: {exc}") from None


def _from_json(raw: Any, signature: Signature, model: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise BadRequest(
            f"{model}: the JSON body must be an object with exactly one of {_ACCEPTED} "
            "(and optionally 'params')"
        )
    keys = [k for k in raw if k != "params"]
    if len(keys) != 1 or keys[0] not in JSON_KEYS:
        got = ", ".join(repr(k) for k in keys) or "none"
        raise BadRequest(
            f"{model}: the JSON body must have exactly one of {_ACCEPTED} "
            f"(and optionally 'params'); got {got}",
            accepted=list(JSON_KEYS),
        )
    params = raw.get("params")
    if params is not None and not isinstance(params, dict):
        raise BadRequest(f"{model}: 'params' must be a JSON object")
    key = keys[0]
    value = raw[key]
    if key == "dataframe_split":
        return _from_split(value, signature, model)
    if key == "dataframe_records":
        if not isinstance(value, list):
            raise BadRequest(f"{model}: 'dataframe_records' must be a list of objects")
        return _from_records(value, signature, model, "dataframe_records")
    if key == "instances":
        return _from_instances(value, signature, model)
    return _from_inputs(value, signature, model)


def _names(signature: Signature) -> list[str]:
    return [spec.name for spec in signature.inputs]


def _columns_from_rows(
    rows: list[Any], columns: list[str], model: str, where: str
) -> dict[str, Any]:
    k = len(columns)
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise BadRequest(f"{model}: {where} row {i} must be a list of values, got {row!r}")
        if len(row) != k:
            raise InvalidInput(
                f"{model}: {where} row {i} has {len(row)} values but there are {k} columns "
                f"({', '.join(repr(c) for c in columns)})",
                row=i,
            )
    if not rows:
        return {name: [] for name in columns}
    if len(rows) == 1:
        return {name: [v] for name, v in zip(columns, rows[0], strict=True)}
    return {name: list(col) for name, col in zip(columns, zip(*rows, strict=True), strict=True)}


def _from_split(value: Any, signature: Signature, model: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("data"), list):
        raise BadRequest(
            f"{model}: 'dataframe_split' must be an object with 'columns' (a list of names) "
            "and 'data' (a list of rows)"
        )
    columns = value.get("columns")
    if columns is None:
        columns = _names(signature)
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise BadRequest(f"{model}: 'dataframe_split.columns' must be a list of column names")
    data = value["data"]
    if signature.kind == "tensor" and len(signature.inputs) == 1:
        name = signature.inputs[0].name
        if name not in columns:  # the table's rows are the tensor's rows
            return {name: data}
    return _columns_from_rows(data, columns, model, "dataframe_split.data")


def _from_records(
    records: list[Any], signature: Signature, model: str, where: str
) -> dict[str, Any]:
    if not records:
        return {name: [] for name in _names(signature)}
    first = records[0]
    if not all(isinstance(r, dict) for r in records):
        raise BadRequest(f"{model}: every entry of '{where}' must be an object")
    if len(records) == 1:
        return {k: [v] for k, v in first.items()}
    names: dict[str, None] = {}
    for record in records:
        for k in record:
            names[k] = None
    out: dict[str, Any] = {}
    for name in names:
        try:
            out[name] = [record[name] for record in records]
        except KeyError:
            row = next(i for i, r in enumerate(records) if name not in r)
            raise InvalidInput(
                f"{model}: '{where}' entry {row} has no value for {name!r}; every record "
                "must name the same columns",
                field=name,
                row=row,
            ) from None
    return out


def _from_instances(value: Any, signature: Signature, model: str) -> dict[str, Any]:
    if not isinstance(value, list):
        raise BadRequest(f"{model}: 'instances' must be a list")
    if value and isinstance(value[0], dict):
        return _from_records(value, signature, model, "instances")
    if signature.kind == "tensor":
        if len(signature.inputs) != 1:
            raise BadRequest(
                f"{model}: this model has several inputs "
                f"({', '.join(repr(n) for n in _names(signature))}); send 'instances' as a "
                "list of {name: value} objects, or use 'inputs'"
            )
        return {signature.inputs[0].name: value}
    names = _names(signature)
    if len(names) == 1 and value and not isinstance(value[0], list):
        return {names[0]: value}  # one column: a list of scalars is the column
    return _columns_from_rows(value, names, model, "instances")


def _from_inputs(value: Any, signature: Signature, model: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        if signature.kind == "tensor" and len(signature.inputs) == 1:
            return {signature.inputs[0].name: value}
        return _from_instances(value, signature, model)
    raise BadRequest(f"{model}: 'inputs' must be an object of name -> values, or a list")


# ---------------------------------------------------------------------------------------------
# CSV


def _from_csv(body: bytes, charset: str | None, signature: Signature, model: str) -> dict[str, Any]:
    text = _text(body, charset, model)
    try:
        lines = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise BadRequest(f"{model}: the body is not valid CSV: {exc}") from None
    lines = [line for line in lines if line]
    if not lines:
        raise BadRequest(f"{model}: the CSV body is empty; send a header row and data rows")
    header, rows = [h.strip() for h in lines[0]], lines[1:]
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise BadRequest(
                f"{model}: CSV data row {i} has {len(row)} fields but the header has {len(header)}"
            )
    specs = {spec.name: spec for spec in signature.inputs}
    if signature.kind == "tensor":
        if len(signature.inputs) != 1:
            raise BadRequest(f"{model}: CSV is only accepted for single-input or column models")
        spec = signature.inputs[0]
        if spec.name not in header:
            # Each CSV row is a tensor row.
            flat = [v for row in rows for v in row]
            column_spec = spec.model_copy(update={"shape": [-1]})
            values = _typed(column_spec, flat, model)
            return {spec.name: values.reshape(len(rows), len(header))}
    columns = _columns_from_rows(rows, header, model, "CSV") if rows else {h: [] for h in header}
    out: dict[str, Any] = {}
    for name, column in columns.items():
        found = specs.get(name)
        out[name] = column if found is None else _typed(found, column, model)
    return out


def _typed(spec: TensorSpec, values: list[str], model: str) -> NDArray[Any]:
    """CSV text as ``spec.dtype``; an empty field is a missing value (NaN)."""
    if spec.dtype == "string":
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    kind = np.dtype(spec.dtype).kind
    parsed: list[Any] = []
    for row, text in enumerate(values):
        text = text.strip()
        try:
            if kind == "f":
                parsed.append(float(text) if text else math.nan)
            elif kind in "iu":
                parsed.append(int(text))
            elif kind == "b":
                parsed.append(text)  # validation reads "true"/"false"/"1"/"0"
            else:
                parsed.append(text)
        except ValueError:
            kinds = {"f": "a number", "i": "an integer", "u": "a non-negative integer"}
            raise InvalidInput(
                f"{model}: input {spec.name!r} must be {kinds.get(kind, 'a value')} "
                f"({spec.dtype}), got {text!r} in row {row}",
                field=spec.name,
                row=row,
            ) from None
    if kind == "b":
        array = np.empty(len(parsed), dtype=object)
        array[:] = parsed
        return array
    return np.array(parsed, dtype=spec.dtype if kind in "fiu" else object)


# ---------------------------------------------------------------------------------------------
# Responses


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _jsonable(array: NDArray[Any]) -> Any:
    array = np.asarray(array)
    if array.dtype.kind in "fiub" and array.flags.c_contiguous:
        return array  # orjson writes numpy arrays natively
    return array.tolist()


def encode_predictions(
    outputs: dict[str, NDArray[Any]], *, names: list[str] | None = None
) -> bytes:
    """The ``/invocations`` response: ``{"predictions": ...}`` as MLflow writes it.

    Which outputs: ``names`` when given; otherwise only ``"predictions"`` when the model has
    an output of that name (a classifier's ``{"predictions", "probabilities"}`` answers with
    its labels, as an MLflow sklearn model does), else all outputs.

    Shape: one output is written as its array (a flat list, or a list of lists when 2-D), as
    MLflow does for a numpy or Series result; several outputs are written as one object per
    row (``[{"predictions": 1, "probabilities": [0.2, 0.8]}, ...]``), as MLflow does for a
    DataFrame result (``orient="records"``). NaN and infinities are written as ``null``.
    """
    if names is None:
        names = ["predictions"] if "predictions" in outputs else list(outputs)
    missing = [n for n in names if n not in outputs]
    if missing:
        raise InvalidInput(
            f"unknown output {missing[0]!r}; the model's outputs are "
            f"{', '.join(repr(k) for k in outputs)}",
            field=missing[0],
        )
    if len(names) == 1:
        doc: dict[str, Any] = {"predictions": _jsonable(outputs[names[0]])}
    else:
        columns = [np.asarray(outputs[n]).tolist() for n in names]
        rows = zip(*columns, strict=True)
        doc = {"predictions": [dict(zip(names, row, strict=True)) for row in rows]}
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY, default=_default)
