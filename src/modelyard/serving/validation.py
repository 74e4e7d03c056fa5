"""Request validation: turn decoded request data into the canonical inputs a model gets.

Every protocol (OIP v2, MLflow ``/invocations``...) decodes its body into a dict of lists or
arrays and hands it to :func:`validate_inputs`, which checks it against the model's
:class:`~modelyard.formats.signature.Signature` and returns ``Inputs``: one contiguous numpy
array per input, of the signature's dtype ("string" becomes an object array of ``str``).

- "columns" signature: one 1-D array per column, all of the same length n (n rows).
  A column sent as ``[[v], [v], ...]`` (shape [n, 1]) is accepted and flattened.
- "tensor" signature: one array per named input, rows (the batch) first; the trailing
  dimensions must match the spec (-1 = any size).

Rows are counted from 0 in messages (``row 0`` is the first row). Optional inputs that are
absent are left out of the result. Float columns are validated together as one (k, n)
matrix, so a single-row request with many numeric columns costs a few numpy calls, not one
per column; only when that fast path finds something wrong does the column-by-column path
run to name the offending column and row.

When every input of a "columns" signature is a required float64 column without
categories (a typical tabular model), the result is a :class:`Columns`: a read-only mapping
of the columns that is a view of the validated (k, n) matrix they are rows of, so that
whoever needs the whole table (a batcher, a runtime taking a 2-D array) does not stack the
columns again, and nobody pays for the per-column arrays unless they ask for them.
:func:`validate_table` is the entry point for protocols that can hand over such a table
directly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from modelyard.errors import InvalidInput
from modelyard.formats.signature import Signature, TensorSpec

#: Most rows one request may carry; :func:`validate_inputs` raises :class:`TooManyRows` above it.
MAX_ROWS = 10_000

Inputs = Mapping[str, NDArray[Any]]


class Columns(Mapping[str, NDArray[Any]]):
    """Validated float64 columns that are the rows of one C-contiguous (k, n) ``matrix``.

    A read-only mapping like any ``Inputs`` (column name -> 1-D array, signature order);
    ``matrix[j]`` is the j-th column and ``names`` is the signature's column order. Not a
    dict: the column arrays are made only when asked for (the gateway's fast paths read the
    matrix), and code that needs a real dict must build one (``dict(columns)``).
    """

    __slots__ = ("matrix", "names")

    def __init__(self, names: tuple[str, ...], matrix: NDArray[np.float64]) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != len(names):
            raise ValueError(f"{len(names)} column names for a matrix of shape {matrix.shape}")
        self.names = names
        self.matrix = matrix

    def __getitem__(self, name: str) -> NDArray[Any]:
        return self.matrix[_positions(self.names)[name]]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in _positions(self.names)

    def __repr__(self) -> str:
        return f"Columns({list(self.names)!r}, rows={self.matrix.shape[1]})"


_POSITIONS: dict[tuple[str, ...], dict[str, int]] = {}


def _positions(names: tuple[str, ...]) -> dict[str, int]:
    """Column name -> row of the matrix, per column order (a handful of orders per server)."""
    found = _POSITIONS.get(names)
    if found is None:
        if len(_POSITIONS) >= 1024:
            _POSITIONS.clear()
        found = _POSITIONS[names] = {name: i for i, name in enumerate(names)}
    return found


# The ufuncs' own reductions: ``ndarray.all()`` goes through a Python wrapper that costs
# more than the check itself on a single row.
_all = np.logical_and.reduce
_any = np.logical_or.reduce

_TRUE = frozenset({"true", "1", "yes", "t", "y"})
_FALSE = frozenset({"false", "0", "no", "f", "n"})


class TooManyRows(InvalidInput):
    """The request carries more rows than a single request may (HTTP 413)."""

    status = 413
    title = "Payload too large"


# ---------------------------------------------------------------------------------------------
# Per-signature plan, computed once and cached: what is required, which columns go through the
# float fast path, their bounds.


@dataclass(frozen=True, slots=True)
class _Plan:
    specs: dict[str, TensorSpec]
    required: tuple[str, ...]
    required_set: frozenset[str]
    expected: str  # "'a', 'b'" for messages
    float_specs: tuple[TensorSpec, ...]  # columns signature: float columns without categories
    float_names: tuple[str, ...]
    float_dtypes: tuple[np.dtype[Any], ...]
    all_float64: bool
    other_specs: tuple[TensorSpec, ...]
    finite_idx: NDArray[np.intp] | None  # rows of the float matrix that must be finite
    all_finite: bool
    lo: NDArray[np.float64] | None  # (k, 1) lower bounds, -inf where none
    hi: NDArray[np.float64] | None
    table: bool  # every input a required float64 column: results are Columns
    index: dict[str, int]  # column name -> position in the signature


# Keyed by identity; the signature itself is kept so that its id cannot be reused while cached.
# Signatures are treated as immutable once serving uses them.
_PLANS: dict[int, tuple[Signature, _Plan]] = {}


def _plan(signature: Signature) -> _Plan:
    entry = _PLANS.get(id(signature))
    if entry is not None and entry[0] is signature:
        return entry[1]
    plan = _make_plan(signature)
    if len(_PLANS) > 1024:
        _PLANS.clear()
    _PLANS[id(signature)] = (signature, plan)
    return plan


def _make_plan(signature: Signature) -> _Plan:
    specs = {spec.name: spec for spec in signature.inputs}
    required = tuple(spec.name for spec in signature.inputs if not spec.optional)
    expected = ", ".join(repr(name) for name in specs)
    floats: list[TensorSpec] = []
    others: list[TensorSpec] = []
    for spec in signature.inputs:
        fast = (
            signature.kind == "columns"
            and not spec.optional
            and not spec.categories
            and spec.dtype in ("float64", "float32", "float16")
        )
        (floats if fast else others).append(spec)
    finite = [i for i, spec in enumerate(floats) if not spec.allow_nan]
    has_range = any(spec.min is not None or spec.max is not None for spec in floats)
    lo = hi = None
    if has_range:
        lo = np.array([[-math.inf if s.min is None else s.min] for s in floats], dtype=np.float64)
        hi = np.array([[math.inf if s.max is None else s.max] for s in floats], dtype=np.float64)
    table = (
        signature.kind == "columns"
        and not others
        and bool(floats)
        and all(s.dtype == "float64" for s in floats)
    )
    return _Plan(
        specs=specs,
        required=required,
        required_set=frozenset(required),
        expected=expected,
        float_specs=tuple(floats),
        float_names=tuple(s.name for s in floats),
        float_dtypes=tuple(np.dtype(s.dtype) for s in floats),
        all_float64=all(s.dtype == "float64" for s in floats),
        other_specs=tuple(others),
        finite_idx=np.array(finite, dtype=np.intp) if finite else None,
        all_finite=len(finite) == len(floats),
        lo=lo,
        hi=hi,
        table=table,
        index={spec.name: i for i, spec in enumerate(signature.inputs)},
    )


def table_columns(signature: Signature) -> tuple[str, ...] | None:
    """The column names, in order, when ``signature`` takes :class:`Columns` (every input a
    required float64 column without categories), else None."""
    plan = _plan(signature)
    return plan.float_names if plan.table else None


# ---------------------------------------------------------------------------------------------
# Public entry point


def validate_inputs(
    signature: Signature,
    inputs: Mapping[str, NDArray[Any] | list[Any]],
    *,
    model: str,
    max_rows: int | None = None,
) -> tuple[Inputs, int]:
    """Check ``inputs`` against ``signature``; return the coerced arrays and the row count.

    Raises :class:`InvalidInput` naming the model, the input, the row and what was expected
    when an input is missing or unexpected, a value does not fit the dtype, a float is NaN or
    infinite (unless the spec allows NaN), a value is outside the categories or the min/max
    range, the inputs disagree on the number of rows, or there are no rows;
    :class:`TooManyRows` (413) above ``max_rows`` (default :data:`MAX_ROWS`).
    """
    plan = _plan(signature)
    names = inputs.keys()
    if names - plan.specs.keys():
        name = next(name for name in inputs if name not in plan.specs)
        raise InvalidInput(
            f"{model}: unexpected input {name!r}; expected inputs: {plan.expected}", field=name
        )
    if plan.required_set - names:
        name = next(name for name in plan.required if name not in inputs)
        raise InvalidInput(
            f"{model}: missing input {name!r}; expected inputs: {plan.expected}", field=name
        )
    n = _row_count(inputs, model, MAX_ROWS if max_rows is None else max_rows)

    result: dict[str, NDArray[Any]] = {}
    if plan.float_specs:
        fast = _float_matrix(plan, inputs, n)
        if fast is None:  # something is wrong or unusual: find it column by column
            for spec in plan.float_specs:
                result[spec.name] = array = _checked(spec, inputs[spec.name], model, columns=True)
                _check_rows(inputs, spec.name, array, n, model)
        elif plan.table and isinstance(fast, np.ndarray):
            return Columns(plan.float_names, fast), n
        else:
            result = dict(zip(plan.float_names, fast, strict=True))
    if not plan.other_specs:
        return result, n
    columns = signature.kind == "columns"
    for spec in plan.other_specs:
        if spec.name in inputs:
            result[spec.name] = array = _checked(spec, inputs[spec.name], model, columns=columns)
            _check_rows(inputs, spec.name, array, n, model)
    if plan.float_specs:
        # Keep the signature's column order (models and logs rely on it).
        return {name: result[name] for name in plan.specs if name in result}, n
    return result, n


def _check_rows(
    inputs: Mapping[str, Any], name: str, array: NDArray[Any], n: int, model: str
) -> None:
    if len(array) != n:
        raise InvalidInput(
            f"{model}: all inputs must have the same number of rows: "
            f"{_first_name(inputs)!r} has {n}, {name!r} has {len(array)}",
            field=name,
        )


def _first_name(inputs: Mapping[str, Any]) -> str:
    return next(iter(inputs))


def _row_count(inputs: Mapping[str, Any], model: str, max_rows: int) -> int:
    if not inputs:
        raise InvalidInput(f"{model}: the request has no inputs")
    name = _first_name(inputs)
    value = inputs[name]
    try:
        n = len(value)
    except TypeError:
        raise InvalidInput(
            f"{model}: input {name!r} must be a list of rows, got {_show(value)}", field=name
        ) from None
    if n == 0:
        raise InvalidInput(f"{model}: the request has no rows (input {name!r} is empty)")
    if n > max_rows:
        raise TooManyRows(
            f"{model}: the request has {n} rows; at most {max_rows} rows are allowed per "
            "request: split it into smaller requests",
            rows=n,
            max_rows=max_rows,
        )
    return n


def _float_matrix(
    plan: _Plan, inputs: Mapping[str, Any], n: int
) -> NDArray[Any] | list[NDArray[Any]] | None:
    """All float columns as rows of one (k, n) matrix, or None to take the slow path."""
    values = [inputs[name] for name in plan.float_names]
    try:
        matrix = np.array(values)
    except (ValueError, TypeError):
        return None
    if matrix.ndim != 2 or matrix.shape[1] != n:
        return None
    return _checked_matrix(plan, matrix)


def _checked_matrix(plan: _Plan, matrix: NDArray[Any]) -> NDArray[Any] | list[NDArray[Any]] | None:
    """The float columns' (k, n) matrix checked as a whole; None when anything is off."""
    if matrix.dtype.kind not in "fiu":
        return None
    if matrix.dtype != np.float64:
        matrix = matrix.astype(np.float64)
    if plan.finite_idx is not None:
        checked = matrix if plan.all_finite else matrix[plan.finite_idx]
        if not _all(np.isfinite(checked), axis=None):
            return None
    if plan.lo is not None and plan.hi is not None:
        with np.errstate(invalid="ignore"):
            if _any(matrix < plan.lo, axis=None) or _any(matrix > plan.hi, axis=None):
                return None
    if plan.all_float64:
        return matrix
    return [
        row if dtype == np.float64 else row.astype(dtype)
        for row, dtype in zip(matrix, plan.float_dtypes, strict=True)
    ]


def validate_table(
    signature: Signature, table: NDArray[Any], *, model: str, max_rows: int | None = None
) -> Columns | None:
    """Validated :class:`Columns` from ``table``, a (k, n) numeric array whose j-th row is the
    signature's j-th column, or None when the signature does not take Columns or something
    in the table is off (then the general path, which names the problem, must run).

    :class:`TooManyRows` above ``max_rows`` (default :data:`MAX_ROWS`).
    """
    plan = _plan(signature)
    if (
        not plan.table
        or table.ndim != 2
        or table.shape[0] != len(plan.float_names)
        or not table.shape[1]
        or table.dtype.kind not in "fiu"
    ):
        return None
    n = table.shape[1]
    if n > (MAX_ROWS if max_rows is None else max_rows):
        _row_count(
            {plan.float_names[0]: table[0]}, model, MAX_ROWS if max_rows is None else max_rows
        )
    if table.dtype != np.float64 or not table.flags.c_contiguous:
        table = np.ascontiguousarray(table, dtype=np.float64)
    fast = _checked_matrix(plan, table)
    if not isinstance(fast, np.ndarray):
        return None
    return Columns(plan.float_names, fast)


def column_index(signature: Signature) -> dict[str, int]:
    """Input name -> position in the signature."""
    return _plan(signature).index


def validate_rows(
    signature: Signature, rows: NDArray[Any], *, model: str, max_rows: int | None = None
) -> tuple[Inputs, int]:
    """Like :func:`validate_inputs` for a "columns" signature given as one (n, k) array of rows.

    Column j of ``rows`` is the signature's j-th input. When every column is a float column the
    whole table is checked in a few numpy calls without splitting it first.
    """
    names = [spec.name for spec in signature.inputs]
    if signature.kind != "columns" or rows.ndim != 2 or rows.shape[1] != len(names):
        raise InvalidInput(
            f"{model}: expected rows of {len(names)} values "
            f"({', '.join(repr(c) for c in names)}), got an array of shape {list(rows.shape)}"
        )
    plan = _plan(signature)
    if len(plan.float_names) == len(names) and rows.dtype.kind in "fiu" and len(rows):
        n = len(rows)
        limit = MAX_ROWS if max_rows is None else max_rows
        if n > limit:
            _row_count({names[0]: rows}, model, limit)
        matrix = np.ascontiguousarray(rows.T, dtype=np.float64)
        fast = _checked_matrix(plan, matrix)
        if fast is not None:
            if plan.table and isinstance(fast, np.ndarray):
                return Columns(plan.float_names, fast), n
            return dict(zip(plan.float_names, fast, strict=True)), n
    columns = dict(zip(names, np.ascontiguousarray(rows.T), strict=True))
    return validate_inputs(signature, columns, model=model, max_rows=max_rows)


# ---------------------------------------------------------------------------------------------
# Column by column: coercion and checks with precise messages


def _checked(spec: TensorSpec, value: Any, model: str, *, columns: bool) -> NDArray[Any]:
    array = coerce(spec, value, model=model)
    if columns:
        if array.ndim == 2 and array.shape[1] == 1:
            array = array.reshape(-1)
        if array.ndim != 1:
            raise InvalidInput(
                f"{model}: input {spec.name!r} is a column and must be a flat list of values "
                f"(shape [n] or [n, 1]), got shape {list(array.shape)}",
                field=spec.name,
            )
    else:
        _check_shape(spec, array, model)
    _check_values(spec, array, model)
    return np.ascontiguousarray(array)


def _check_shape(spec: TensorSpec, array: NDArray[Any], model: str) -> None:
    want = spec.shape
    ok = array.ndim == len(want) and array.ndim >= 1
    if ok:
        ok = all(w == -1 or w == g for w, g in zip(want[1:], array.shape[1:], strict=True))
    if not ok:
        raise InvalidInput(
            f"{model}: input {spec.name!r} must have shape {want} (rows first, -1 = any size), "
            f"got shape {list(array.shape)}",
            field=spec.name,
        )


def _what(spec: TensorSpec) -> str:
    kind = "string" if spec.dtype == "string" else np.dtype(spec.dtype).kind
    word = {
        "f": "a number",
        "i": "an integer",
        "u": "a non-negative integer",
        "b": "a boolean (true or false)",
        "string": "a string",
    }.get(kind, "a value")
    return f"{word} ({spec.dtype})"


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _row_of(array: NDArray[Any], flat_index: int) -> int:
    if array.ndim <= 1:
        return flat_index
    return int(np.unravel_index(flat_index, array.shape)[0])


def _bad_value(spec: TensorSpec, model: str, value: Any, row: int) -> InvalidInput:
    return InvalidInput(
        f"{model}: input {spec.name!r} must be {_what(spec)}, got {_show(value)} in row {row}",
        field=spec.name,
        row=row,
    )


def _as_array(spec: TensorSpec, value: Any, model: str) -> NDArray[Any]:
    if isinstance(value, np.ndarray):
        return value
    try:
        array = np.array(value)
    except (ValueError, TypeError):
        # Ragged nesting ([[1, 2], [3]]): numpy refuses to build a regular array.
        raise InvalidInput(
            f"{model}: input {spec.name!r} has rows of different lengths; every row must have "
            "the same shape",
            field=spec.name,
        ) from None
    if array.dtype.kind in "US":
        # Strings mixed with numbers ([1.0, "abc"]): numpy turned every value into a string;
        # keep the Python values so that the message names the one that is wrong.
        array = np.array(value, dtype=object)
    return array


def coerce(spec: TensorSpec, value: Any, *, model: str) -> NDArray[Any]:
    """``value`` (a list or array) as an array of ``spec.dtype``, or InvalidInput naming the row.

    Ints are accepted for float inputs and integral floats for int inputs; booleans are
    accepted only for bool inputs (as true/false, 0/1 or the strings "true"/"false"); a
    "string" input takes only strings and becomes an object array of ``str``.
    """
    if spec.dtype == "string":
        return _coerce_string(spec, value, model)
    target = np.dtype(spec.dtype)
    array = _as_array(spec, value, model)
    kind = array.dtype.kind
    if target.kind == "f":
        if kind in "fiu":
            return array.astype(target, copy=False)
        if kind == "O":
            return _coerce_objects(spec, array, model, target)
        return _first_bad(spec, array, model, lambda _v: False)
    if target.kind in "iu":
        if kind in "iu":
            if target.kind == "u" and kind == "i" and array.size and array.min() < 0:
                bad = int(np.argmax(array.reshape(-1) < 0))
                raise _bad_value(spec, model, array.reshape(-1)[bad], _row_of(array, bad))
            return array.astype(target, copy=False)
        if kind == "f":
            flat = array.reshape(-1)
            with np.errstate(invalid="ignore"):
                ok = np.isfinite(flat) & (np.floor(flat) == flat)
                if target.kind == "u":
                    ok &= flat >= 0
            if not ok.all():
                bad = int(np.argmin(ok))
                raise _bad_value(spec, model, flat[bad], _row_of(array, bad))
            return array.astype(target)
        if kind == "O":
            return _coerce_objects(spec, array, model, target)
        return _first_bad(spec, array, model, lambda _v: False)
    if target.kind == "b":
        if kind == "b":
            return array
        if kind in "iu":
            flat = array.reshape(-1)
            ok = (flat == 0) | (flat == 1)
            if not ok.all():
                bad = int(np.argmin(ok))
                raise _bad_value(spec, model, flat[bad], _row_of(array, bad))
            return array.astype(np.bool_)
        if kind in "OUS":
            return _coerce_bool_objects(spec, array, model)
        return _first_bad(spec, array, model, lambda _v: False)
    try:  # datetimes and other numpy dtypes: numpy's own conversion
        return array.astype(target)
    except (ValueError, TypeError):
        raise InvalidInput(
            f"{model}: input {spec.name!r} must be of dtype {spec.dtype}", field=spec.name
        ) from None


def _first_bad(spec: TensorSpec, array: NDArray[Any], model: str, ok: Any) -> NDArray[Any]:
    for i, item in enumerate(array.reshape(-1).tolist()):
        if not ok(item):
            raise _bad_value(spec, model, item, _row_of(array, i))
    return array  # pragma: no cover - callers only come here with a bad element


def _coerce_objects(
    spec: TensorSpec, array: NDArray[Any], model: str, target: np.dtype[Any]
) -> NDArray[Any]:
    # Mixed Python values (from JSON: numbers with null, strings or booleans).
    items = array.reshape(-1).tolist()
    is_float = target.kind == "f"
    for i, item in enumerate(items):
        if item is None and is_float and spec.allow_nan:
            items[i] = math.nan
            continue
        number = isinstance(item, int | float) and not isinstance(item, bool)
        if number and (is_float or float(item).is_integer()):
            continue
        raise _bad_value(spec, model, item, _row_of(array, i))
    try:
        return np.array(items, dtype=target).reshape(array.shape)
    except OverflowError:
        raise InvalidInput(
            f"{model}: input {spec.name!r} has a value out of range for {spec.dtype}",
            field=spec.name,
        ) from None


def _coerce_bool_objects(spec: TensorSpec, array: NDArray[Any], model: str) -> NDArray[Any]:
    items = array.reshape(-1).tolist()
    out = np.empty(len(items), dtype=np.bool_)
    for i, item in enumerate(items):
        if isinstance(item, bool):
            out[i] = item
        elif isinstance(item, int) and item in (0, 1):
            out[i] = bool(item)
        elif isinstance(item, str) and item.strip().lower() in _TRUE:
            out[i] = True
        elif isinstance(item, str) and item.strip().lower() in _FALSE:
            out[i] = False
        else:
            raise _bad_value(spec, model, item, _row_of(array, i))
    return out.reshape(array.shape)


def _coerce_string(spec: TensorSpec, value: Any, model: str) -> NDArray[Any]:
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "U":
            return value.astype(object)
        if value.dtype.kind not in "OS":
            return _first_bad(spec, value, model, lambda _v: False)
        array = value.astype(object)
    else:
        try:
            array = np.array(value, dtype=object)
        except (ValueError, TypeError):
            raise InvalidInput(
                f"{model}: input {spec.name!r} has rows of different lengths", field=spec.name
            ) from None
    items = array.reshape(-1).tolist()
    changed = False
    for i, item in enumerate(items):
        if type(item) is str:
            continue
        if isinstance(item, bytes):
            try:
                items[i] = item.decode()
                changed = True
                continue
            except UnicodeDecodeError:
                pass
        raise _bad_value(spec, model, item, _row_of(array, i))
    if changed:
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out.reshape(array.shape)
    return array


def _check_values(spec: TensorSpec, array: NDArray[Any], model: str) -> None:
    kind = array.dtype.kind
    if kind == "f" and not spec.allow_nan:
        finite = np.isfinite(array)
        if not finite.all():
            bad = int(np.argmin(finite.reshape(-1)))
            value = array.reshape(-1)[bad]
            shown = "NaN (null or missing)" if math.isnan(value) else _show(value)
            raise InvalidInput(
                f"{model}: input {spec.name!r} must be a finite number ({spec.dtype}), got "
                f"{shown} in row {_row_of(array, bad)}; this input does not allow missing or "
                "infinite values",
                field=spec.name,
                row=_row_of(array, bad),
            )
    if spec.categories:
        _check_categories(spec, array, model)
    if (spec.min is not None or spec.max is not None) and kind in "fiu":
        flat = array.reshape(-1)
        with np.errstate(invalid="ignore"):
            for bound, bad_mask, word in (
                (spec.min, None if spec.min is None else flat < spec.min, ">="),
                (spec.max, None if spec.max is None else flat > spec.max, "<="),
            ):
                if bad_mask is not None and bad_mask.any():
                    bad = int(np.argmax(bad_mask))
                    raise InvalidInput(
                        f"{model}: input {spec.name!r} must be {word} {bound}, got "
                        f"{_show(flat[bad])} in row {_row_of(array, bad)}",
                        field=spec.name,
                        row=_row_of(array, bad),
                    )


def _check_categories(spec: TensorSpec, array: NDArray[Any], model: str) -> None:
    categories = spec.categories or []
    flat = array.reshape(-1)
    if array.dtype.kind == "O":
        allowed = set(categories)
        items = flat.tolist()
        if len(items) == 1:
            bad_rows = [] if items[0] in allowed else [0]
        else:
            bad_rows = [i for i, item in enumerate(items) if item not in allowed]
        if not bad_rows:
            return
        bad = bad_rows[0]
        value: Any = items[bad]
    else:
        ok = np.isin(flat, np.array(categories, dtype=array.dtype))
        if array.dtype.kind == "f" and spec.allow_nan:
            ok |= np.isnan(flat)
        if ok.all():
            return
        bad = int(np.argmin(ok))
        value = flat[bad]
    shown = ", ".join(_show(c) for c in categories)
    raise InvalidInput(
        f"{model}: input {spec.name!r} got {_show(value)} in row {_row_of(array, bad)}, "
        f"which is not one of the allowed values: {shown}",
        field=spec.name,
        row=_row_of(array, bad),
        allowed=list(categories),
    )
