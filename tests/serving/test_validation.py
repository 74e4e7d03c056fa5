"""validate_inputs: coercion to the signature and every error path, with its message."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modelyard.errors import InvalidInput
from modelyard.formats.signature import Signature, TensorSpec
from modelyard.serving import validation
from modelyard.serving.validation import TooManyRows, validate_inputs


def fraud_signature() -> Signature:
    return Signature(
        kind="columns",
        inputs=[
            TensorSpec(name="amount", dtype="float64", min=0.0, max=1e6),
            TensorSpec(name="score", dtype="float32", allow_nan=True),
            TensorSpec(name="age", dtype="int64", min=0),
            TensorSpec(name="country", dtype="string", categories=["DE", "FR", "US"]),
            TensorSpec(name="is_new", dtype="bool"),
            TensorSpec(name="note", dtype="string", optional=True),
        ],
    )


def tensor_signature() -> Signature:
    return Signature(
        kind="tensor", inputs=[TensorSpec(name="image", dtype="float32", shape=[-1, 2, 3])]
    )


def good_rows() -> dict[str, list[object]]:
    return {
        "amount": [10.5, 3],
        "score": [0.5, None],
        "age": [30, 41.0],
        "country": ["DE", "US"],
        "is_new": [True, False],
    }


def test_columns_are_coerced_to_signature_dtypes_and_order() -> None:
    inputs, n = validate_inputs(fraud_signature(), good_rows(), model="fraud")
    assert n == 2
    assert list(inputs) == ["amount", "score", "age", "country", "is_new"]
    assert inputs["amount"].dtype == np.float64
    np.testing.assert_array_equal(inputs["amount"], [10.5, 3.0])
    assert inputs["score"].dtype == np.float32
    assert inputs["score"][0] == np.float32(0.5) and math.isnan(inputs["score"][1])
    assert inputs["age"].dtype == np.int64
    np.testing.assert_array_equal(inputs["age"], [30, 41])
    assert inputs["country"].dtype == object
    assert inputs["country"].tolist() == ["DE", "US"]
    assert all(type(v) is str for v in inputs["country"])
    assert inputs["is_new"].dtype == np.bool_
    for array in inputs.values():
        assert array.flags.c_contiguous and array.ndim == 1


def test_arrays_and_lists_give_the_same_result() -> None:
    rows = good_rows()
    arrays = {
        "amount": np.array([10.5, 3.0]),
        "score": np.array([0.5, np.nan], dtype=np.float32),
        "age": np.array([30, 41], dtype=np.int32),
        "country": np.array(["DE", "US"]),
        "is_new": np.array([[True], [False]]),
    }
    a, _ = validate_inputs(fraud_signature(), rows, model="fraud")
    b, _ = validate_inputs(fraud_signature(), arrays, model="fraud")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert a[name].dtype == b[name].dtype


def test_optional_input_may_be_given_or_left_out() -> None:
    rows = good_rows() | {"note": ["a", "b"]}
    inputs, _ = validate_inputs(fraud_signature(), rows, model="fraud")
    assert inputs["note"].tolist() == ["a", "b"]


def test_float_fast_path_with_many_columns() -> None:
    sig = Signature(
        kind="columns", inputs=[TensorSpec(name=f"f{i}", dtype="float64") for i in range(20)]
    )
    inputs, n = validate_inputs(sig, {f"f{i}": [i] for i in range(20)}, model="m")
    assert n == 1
    assert [float(inputs[f"f{i}"][0]) for i in range(20)] == [float(i) for i in range(20)]
    assert all(a.flags.c_contiguous for a in inputs.values())


def err(
    signature: Signature, inputs: dict[str, object], cls: type[Exception] = InvalidInput
) -> str:
    with pytest.raises(cls) as info:
        validate_inputs(signature, inputs, model="fraud")  # type: ignore[arg-type]
    return str(info.value)


def test_missing_input_names_it_and_lists_expected() -> None:
    rows = good_rows()
    del rows["age"]
    message = err(fraud_signature(), rows)
    assert message.startswith("fraud: missing input 'age'")
    assert "'amount'" in message and "'is_new'" in message


def test_unexpected_input_is_named() -> None:
    message = err(fraud_signature(), good_rows() | {"colour": [1, 2]})
    assert "unexpected input 'colour'" in message


def test_string_in_numeric_column_names_column_and_row() -> None:
    rows = good_rows() | {"amount": [1.0, "abc"]}
    message = err(fraud_signature(), rows)
    assert message == "fraud: input 'amount' must be a number (float64), got 'abc' in row 1"


def test_string_in_numeric_column_from_numpy_strings() -> None:
    rows = good_rows() | {"age": np.array(["1", "x"])}
    assert "input 'age' must be an integer (int64), got '1' in row 0" in err(
        fraud_signature(), rows
    )


def test_non_integral_float_in_int_column() -> None:
    rows = good_rows() | {"age": [30, 2.5]}
    assert "input 'age' must be an integer (int64), got 2.5 in row 1" in err(
        fraud_signature(), rows
    )


def test_bool_column_accepts_bools_01_and_strings_but_not_other_values() -> None:
    for values in ([True, False], [1, 0], ["true", "False"]):
        inputs, _ = validate_inputs(fraud_signature(), good_rows() | {"is_new": values}, model="f")
        assert inputs["is_new"].tolist() == [True, False]
    message = err(fraud_signature(), good_rows() | {"is_new": [True, 2]})
    assert "input 'is_new' must be a boolean" in message and "got 2 in row 1" in message
    message = err(fraud_signature(), good_rows() | {"is_new": [True, "maybe"]})
    assert "got 'maybe' in row 1" in message


def test_column_of_booleans_in_numeric_column_rejected() -> None:
    rows = good_rows() | {"age": [True, False]}
    assert "input 'age' must be an integer (int64), got true in row 0" in err(
        fraud_signature(), rows
    )


def test_number_in_string_column() -> None:
    rows = good_rows() | {"country": ["DE", 7]}
    assert "input 'country' must be a string (string), got 7 in row 1" in err(
        fraud_signature(), rows
    )


def test_columns_of_different_lengths() -> None:
    rows = good_rows() | {"age": [1, 2, 3]}
    message = err(fraud_signature(), rows)
    assert "same number of rows" in message and "'age' has 3" in message


def test_nan_and_inf_rejected_unless_allowed() -> None:
    message = err(fraud_signature(), good_rows() | {"amount": [1.0, None]})
    assert "input 'amount' must be a number (float64), got null in row 1" in message
    message = err(fraud_signature(), good_rows() | {"amount": np.array([np.inf, 1.0])})
    assert "input 'amount' must be a finite number" in message and "row 0" in message
    message = err(fraud_signature(), good_rows() | {"amount": np.array([1.0, np.nan])})
    assert "NaN" in message and "row 1" in message
    # score allows NaN
    validate_inputs(fraud_signature(), good_rows() | {"score": [math.nan, math.inf]}, model="f")


def test_category_outside_the_allowed_set() -> None:
    message = err(fraud_signature(), good_rows() | {"country": ["DE", "XX"]})
    assert "input 'country' got 'XX' in row 1" in message
    assert "'DE', 'FR', 'US'" in message


def test_numeric_categories() -> None:
    sig = Signature(
        kind="columns", inputs=[TensorSpec(name="level", dtype="int64", categories=[1, 2, 3])]
    )
    validate_inputs(sig, {"level": [1, 3]}, model="m")
    with pytest.raises(InvalidInput, match=r"'level' got 7 in row 1.*1, 2, 3"):
        validate_inputs(sig, {"level": [1, 7]}, model="m")


def test_min_and_max() -> None:
    message = err(fraud_signature(), good_rows() | {"amount": [-1.0, 2.0]})
    assert "input 'amount' must be >= 0.0, got -1.0 in row 0" in message
    message = err(fraud_signature(), good_rows() | {"amount": [1.0, 2e6]})
    assert "input 'amount' must be <= 1000000.0" in message and "row 1" in message
    message = err(fraud_signature(), good_rows() | {"age": [5, -3]})
    assert "input 'age' must be >= 0" in message and "row 1" in message


def test_no_rows() -> None:
    rows = {k: [] for k in good_rows()}
    assert "no rows" in err(fraud_signature(), rows)


def test_too_many_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "MAX_ROWS", 1)
    with pytest.raises(TooManyRows) as info:
        validate_inputs(fraud_signature(), good_rows(), model="fraud")
    assert info.value.status == 413
    assert isinstance(info.value, InvalidInput)
    assert "2 rows" in str(info.value) and "at most 1" in str(info.value)


def test_tensor_shapes() -> None:
    sig = tensor_signature()
    data = np.arange(12, dtype=np.float64).reshape(2, 2, 3)
    inputs, n = validate_inputs(sig, {"image": data.tolist()}, model="m")
    assert n == 2 and inputs["image"].dtype == np.float32 and inputs["image"].shape == (2, 2, 3)
    with pytest.raises(
        InvalidInput, match=r"'image' must have shape \[-1, 2, 3\].*got shape \[2, 3, 2\]"
    ):
        validate_inputs(sig, {"image": np.zeros((2, 3, 2))}, model="m")
    with pytest.raises(InvalidInput, match="rows of different lengths"):
        validate_inputs(sig, {"image": [[[1, 2, 3], [4, 5, 6]], [[1, 2, 3]]]}, model="m")


def test_tensor_inputs_must_agree_on_rows() -> None:
    sig = Signature(
        kind="tensor",
        inputs=[
            TensorSpec(name="a", dtype="int64", shape=[-1, 2]),
            TensorSpec(name="b", dtype="float64", shape=[-1]),
        ],
    )
    inputs, n = validate_inputs(sig, {"a": [[1, 2], [3, 4]], "b": [0.5, 1.5]}, model="m")
    assert n == 2 and inputs["a"].dtype == np.int64
    with pytest.raises(InvalidInput, match="same number of rows"):
        validate_inputs(sig, {"a": [[1, 2], [3, 4]], "b": [0.5]}, model="m")


def test_error_carries_field_and_row_for_problem_documents() -> None:
    with pytest.raises(InvalidInput) as info:
        validate_inputs(fraud_signature(), good_rows() | {"amount": [1.0, "x"]}, model="fraud")
    problem = info.value.problem()
    assert problem["status"] == 422 and problem["field"] == "amount" and problem["row"] == 1


def test_validate_rows_splits_a_table_into_columns() -> None:
    sig = Signature(
        kind="columns",
        inputs=[
            TensorSpec(name="a", dtype="float64"),
            TensorSpec(name="b", dtype="float32", max=5),
        ],
    )
    inputs, n = validation.validate_rows(sig, np.array([[1, 2], [3, 4]]), model="m")
    assert n == 2 and inputs["a"].tolist() == [1.0, 3.0] and inputs["b"].dtype == np.float32
    assert inputs["a"].flags.c_contiguous
    with pytest.raises(InvalidInput, match=r"input 'b' must be <= 5\.0, got 9\.0 in row 1"):
        validation.validate_rows(sig, np.array([[1.0, 2.0], [3.0, 9.0]]), model="m")
    with pytest.raises(InvalidInput, match="expected rows of 2 values"):
        validation.validate_rows(sig, np.zeros((2, 3)), model="m")
