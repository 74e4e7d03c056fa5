"""Signature inference and example batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelyard.errors import InvalidInput
from modelyard.formats import Signature, TensorSpec, infer_signature


def test_dataframe_with_mixed_columns_gives_a_columns_signature() -> None:
    frame = pd.DataFrame(
        {
            "price": [1.5, np.nan, 3.0, 4.0],
            "rooms": np.array([1, 2, 3, 4], dtype=np.int64),
            "city": ["paris", "lyon", "paris", "nice"],
            "flag": [True, False, True, True],
            "code": pd.Series([1, 2, 3, 4], dtype=np.int32),
        }
    )
    signature = infer_signature(frame)
    assert signature.kind == "columns"
    specs = {spec.name: spec for spec in signature.inputs}
    assert list(specs) == ["price", "rooms", "city", "flag", "code"]
    assert {name: spec.dtype for name, spec in specs.items()} == {
        "price": "float64",
        "rooms": "int64",
        "city": "string",
        "flag": "bool",
        "code": "int32",
    }
    assert all(spec.shape == [-1] for spec in signature.inputs)
    assert specs["city"].categories == ["lyon", "nice", "paris"]
    assert specs["price"].categories is None
    assert specs["price"].allow_nan is True
    assert specs["rooms"].allow_nan is False
    assert all(spec.min is None and spec.max is None for spec in signature.inputs)
    assert signature.outputs == []


def test_string_column_with_many_values_has_no_categories() -> None:
    frame = pd.DataFrame({"name": [f"user-{i}" for i in range(51)]})
    assert infer_signature(frame).inputs[0].categories is None
    frame = pd.DataFrame({"name": [f"user-{i % 50}" for i in range(200)]})
    assert len(infer_signature(frame).inputs[0].categories or []) == 50


def test_object_and_categorical_columns_are_strings() -> None:
    frame = pd.DataFrame(
        {
            "obj": pd.Series(["a", "b"], dtype=object),
            "cat": pd.Categorical(["x", "y"], categories=["x", "y", "z"]),
        }
    )
    specs = infer_signature(frame).inputs
    assert [spec.dtype for spec in specs] == ["string", "string"]
    assert specs[1].categories == ["x", "y", "z"]


def test_ndarray_gives_a_tensor_named_input() -> None:
    signature = infer_signature(np.zeros((10, 3, 2), dtype=np.float32))
    assert signature.kind == "tensor"
    assert signature.inputs == [TensorSpec(name="input", dtype="float32", shape=[-1, 3, 2])]


def test_list_of_rows_gives_a_tensor() -> None:
    signature = infer_signature([[1, 2], [3, 4]])
    assert signature.kind == "tensor"
    assert signature.inputs[0].dtype == "int64"
    assert signature.inputs[0].shape == [-1, 2]


def test_dict_of_lists_gives_columns_and_dict_of_arrays_gives_tensors() -> None:
    columns = infer_signature({"a": [1.0, 2.0], "b": ["x", "y"]})
    assert columns.kind == "columns"
    assert [(s.name, s.dtype) for s in columns.inputs] == [("a", "float64"), ("b", "string")]

    tensors = infer_signature(
        {"image": np.zeros((2, 8, 8), dtype=np.float32), "mask": np.ones((2, 8), dtype=bool)}
    )
    assert tensors.kind == "tensor"
    assert [(s.name, s.dtype, s.shape) for s in tensors.inputs] == [
        ("image", "float32", [-1, 8, 8]),
        ("mask", "bool", [-1, 8]),
    ]


def test_outputs_are_inferred_from_an_array_or_a_dict() -> None:
    signature = infer_signature(np.zeros((4, 2)), np.zeros(4, dtype=np.int64))
    assert signature.outputs == [TensorSpec(name="predictions", dtype="int64", shape=[-1])]

    signature = infer_signature(
        np.zeros((4, 2)),
        {"label": np.array(["a", "b", "a", "b"]), "proba": np.zeros((4, 3), dtype=np.float32)},
    )
    assert [(s.name, s.dtype, s.shape) for s in signature.outputs] == [
        ("label", "string", [-1]),
        ("proba", "float32", [-1, 3]),
    ]


def test_unsupported_example_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="cannot infer a signature"):
        infer_signature(object())


def test_signature_round_trips_through_json() -> None:
    signature = infer_signature(pd.DataFrame({"a": [1.0], "b": ["x"]}), np.zeros(1))
    assert Signature.model_validate_json(signature.model_dump_json()) == signature


def test_example_batch_for_columns_uses_categories_and_ranges() -> None:
    signature = Signature(
        kind="columns",
        inputs=[
            TensorSpec(name="city", dtype="string", categories=["lyon", "paris"]),
            TensorSpec(name="age", dtype="int64", min=18, max=30),
            TensorSpec(name="income", dtype="float64", min=1000.0),
            TensorSpec(name="score", dtype="float32"),
            TensorSpec(name="note", dtype="string"),
        ],
        outputs=[],
    )
    batch = signature.example_batch(3)
    assert isinstance(batch, pd.DataFrame)
    assert list(batch.columns) == ["city", "age", "income", "score", "note"]
    assert batch["city"].tolist() == ["lyon", "paris", "lyon"]
    assert batch["age"].tolist() == [24, 24, 24]
    assert batch["age"].dtype == np.int64
    assert batch["income"].tolist() == [1000.0] * 3
    assert batch["score"].dtype == np.float32
    assert (batch["score"] == 0).all()


def test_example_batch_for_tensors() -> None:
    single = infer_signature(np.ones((5, 3), dtype=np.float32))
    batch = single.example_batch(2)
    assert isinstance(batch, np.ndarray)
    assert batch.shape == (2, 3)
    assert batch.dtype == np.float32

    multi = infer_signature({"a": np.ones((5, 2, 2)), "b": np.ones((5, 4), dtype=np.int32)})
    batch = multi.example_batch()
    assert isinstance(batch, dict)
    assert batch["a"].shape == (1, 2, 2)
    assert batch["b"].dtype == np.int32


def test_is_frame_while_another_thread_imports_pandas(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload's warm-up asked is_frame while another thread was importing pandas: the
    half-made module has no DataFrame yet, and the answer is no (it raised AttributeError,
    which the gateway answered with a 500)."""
    import sys
    import types

    from modelyard.formats.signature import is_frame

    monkeypatch.setitem(sys.modules, "pandas", types.ModuleType("pandas"))
    assert is_frame(object()) is False
