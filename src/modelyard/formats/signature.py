"""Signatures: the named, typed inputs and outputs of a model.

A signature is inferred once, at save time, from an input example; serving later uses it to
validate requests and to build a warm-up batch.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, Field

from modelyard.errors import InvalidInput

if TYPE_CHECKING:
    import pandas as pd


def is_frame(value: Any) -> bool:
    """Whether ``value`` is a pandas DataFrame, without importing pandas.

    pandas is imported by what needs it (inferring a signature, a native predictor): the
    gateway's fast paths never do, and leaving it out saves about 0.5 s of a server's start.
    If pandas was never imported, nothing can be a DataFrame; nor while another thread is
    still importing it (``sys.modules`` holds it before ``DataFrame`` is defined).
    """
    frame = getattr(sys.modules.get("pandas"), "DataFrame", None)
    return frame is not None and isinstance(value, frame)


# Above this many distinct values a string column is free text, not a category.
MAX_CATEGORIES = 50

Category = str | int | float


class TensorSpec(BaseModel):
    """One named input or output: a column of a table or a whole array.

    ``dtype`` is a numpy-style name ("float64", "int64", "bool", ...) or "string";
    ``-1`` in ``shape`` means any size (the first dimension is the batch).
    """

    name: str
    dtype: str
    shape: list[int] = Field(default_factory=lambda: [-1])
    optional: bool = False
    min: float | None = None
    max: float | None = None
    categories: list[Category] | None = None
    allow_nan: bool = False

    def example_values(self, n: int) -> NDArray[Any]:
        """An array of ``n`` rows that satisfies this spec (a category, a value in range, or 0)."""
        shape = [
            n if i == 0 and d == -1 else (1 if d == -1 else d) for i, d in enumerate(self.shape)
        ]
        if self.categories:
            rows = shape[0] if shape else 1
            values = [self.categories[i % len(self.categories)] for i in range(rows)]
            flat = np.asarray(values, dtype=object if self.dtype == "string" else self.dtype)
            per_row = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            return np.repeat(flat, per_row).reshape(shape)
        if self.dtype == "string":
            return np.full(shape, "", dtype=object)
        return np.full(shape, self._example_number(), dtype=self.dtype)

    def _example_number(self) -> float:
        if self.min is not None and self.max is not None:
            return (self.min + self.max) / 2
        if self.min is not None:
            return self.min
        if self.max is not None:
            return self.max
        return 0


class Signature(BaseModel):
    """The inputs and outputs of a model.

    ``kind="columns"``: a table (DataFrame or dict of 1-D columns), one spec per column.
    ``kind="tensor"``: one or more named arrays; a bare array is named "input".
    """

    kind: Literal["columns", "tensor"]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec] = Field(default_factory=list)

    def example_batch(self, n: int = 1) -> pd.DataFrame | dict[str, NDArray[Any]] | NDArray[Any]:
        """A valid input of ``n`` rows, e.g. for warm-up.

        A DataFrame for "columns"; for "tensor" a bare array when there is one input,
        else a dict of arrays.
        """
        if self.kind == "columns":
            import pandas as pd

            return pd.DataFrame({spec.name: spec.example_values(n) for spec in self.inputs})
        arrays = {spec.name: spec.example_values(n) for spec in self.inputs}
        if len(arrays) == 1:
            return next(iter(arrays.values()))
        return arrays


def dtype_name(dtype: Any) -> str:
    """The signature dtype name of a numpy or pandas dtype: strings and objects are "string"."""
    import pandas as pd

    if isinstance(dtype, pd.CategoricalDtype):
        return dtype_name(dtype.categories.dtype)
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        return "string"
    # Nullable pandas dtypes (Int64, Float64) carry the numpy dtype they stand for.
    return np.dtype(getattr(dtype, "numpy_dtype", dtype)).name


def _column_spec(name: str, column: pd.Series) -> TensorSpec:
    import pandas as pd

    dtype = dtype_name(column.dtype)
    categories: list[Category] | None = None
    if isinstance(column.dtype, pd.CategoricalDtype):
        categories = [_plain(v) for v in column.dtype.categories]
    elif dtype == "string":
        distinct = column.dropna().unique()
        if len(distinct) <= MAX_CATEGORIES:
            categories = sorted(str(v) for v in distinct)
    allow_nan = dtype.startswith("float") and bool(column.isna().any())
    return TensorSpec(
        name=str(name), dtype=dtype, shape=[-1], categories=categories, allow_nan=allow_nan
    )


def _array_spec(name: str, array: NDArray[Any]) -> TensorSpec:
    dtype = dtype_name(array.dtype)
    shape = [-1, *array.shape[1:]] if array.ndim else []
    allow_nan = array.dtype.kind == "f" and bool(np.isnan(array).any())
    return TensorSpec(name=name, dtype=dtype, shape=list(shape), allow_nan=allow_nan)


def _plain(value: Any) -> Category:
    # numpy scalars are not JSON-serialisable; categories must be plain Python values.
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str | int | float):
        return value
    return str(value)


def _is_columns(example: Mapping[str, Any]) -> bool:
    # A dict is a table when every value is one-dimensional (a list or a 1-D array).
    return all(np.ndim(value) == 1 for value in example.values())


def _infer_specs(
    example: Any, default_name: str
) -> tuple[Literal["columns", "tensor"], list[TensorSpec]]:
    import pandas as pd

    if isinstance(example, pd.DataFrame):
        return "columns", [_column_spec(str(c), example[c]) for c in example.columns]
    if isinstance(example, pd.Series):
        return "columns", [_column_spec(str(example.name or default_name), example)]
    if isinstance(example, Mapping):
        if not example:
            raise InvalidInput("the example is an empty dict; give at least one column or array")
        if _is_columns(example):
            frame = pd.DataFrame({str(k): v for k, v in example.items()})
            return "columns", [_column_spec(str(c), frame[c]) for c in frame.columns]
        return "tensor", [_array_spec(str(k), np.asarray(v)) for k, v in example.items()]
    if isinstance(example, np.ndarray | Sequence) and not isinstance(example, str | bytes):
        return "tensor", [_array_spec(default_name, np.asarray(example))]
    if hasattr(example, "__array__"):  # e.g. a torch tensor or a pyarrow array
        return "tensor", [_array_spec(default_name, np.asarray(example))]
    raise InvalidInput(
        f"cannot infer a signature from a {type(example).__name__}; give a pandas DataFrame, "
        "a dict of columns or arrays, a numpy array or a list of rows"
    )


def infer_signature(input_example: Any, output_example: Any = None) -> Signature:
    """Infer a signature from an input example and, optionally, the model's output on it.

    A DataFrame or a dict of 1-D columns gives a "columns" signature (categories recorded for
    string columns with at most 50 distinct values); an array, a list of rows or a dict of
    arrays gives a "tensor" signature. min/max are never inferred: set them yourself.
    """
    kind, inputs = _infer_specs(input_example, default_name="input")
    outputs = output_specs(output_example) if output_example is not None else []
    return Signature(kind=kind, inputs=inputs, outputs=outputs)


def output_specs(output_example: Any) -> list[TensorSpec]:
    """Output specs from a model's output: an array is "predictions", a dict names its arrays."""
    if isinstance(output_example, Mapping):
        # Outputs are always named arrays; a dict of 1-D outputs is not a table.
        return [_array_spec(str(k), np.asarray(v)) for k, v in output_example.items()]
    return _infer_specs(output_example, default_name="predictions")[1]
