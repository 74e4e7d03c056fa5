"""MLflow /invocations: every documented body decodes to the same canonical arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from modelyard.errors import BadRequest, InvalidInput
from modelyard.formats.signature import Signature, TensorSpec
from modelyard.serving.protocols.mlflow import encode_predictions, parse_invocations

JSON = "application/json"


def ab_signature() -> Signature:
    return Signature(
        kind="columns",
        inputs=[TensorSpec(name="a", dtype="float64"), TensorSpec(name="b", dtype="int64")],
    )


def mixed_signature() -> Signature:
    return Signature(
        kind="columns",
        inputs=[
            TensorSpec(name="amount", dtype="float64"),
            TensorSpec(name="country", dtype="string", categories=["DE", "US"]),
            TensorSpec(name="is_new", dtype="bool"),
        ],
    )


def tensor_signature() -> Signature:
    return Signature(kind="tensor", inputs=[TensorSpec(name="x", dtype="float32", shape=[-1, 3])])


def parse(body: Any, sig: Signature, content_type: str | None = JSON) -> tuple[dict[str, Any], int]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return parse_invocations(raw, content_type, sig, model="fraud")


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        np.testing.assert_array_equal(a[name], b[name])


# The request bodies exactly as MLflow's documentation shows them (one row a=1, b=2).
DOC_BODIES: list[tuple[bytes, str]] = [
    (b'{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}}', JSON),
    (b'{"dataframe_split": {"index": [0], "columns": ["a", "b"], "data": [[1, 2]]}}', JSON),
    (b'{"dataframe_records": [{"a": 1, "b": 2}]}', JSON),
    (b'{"instances": [[1, 2]]}', JSON),
    (b'{"instances": [{"a": 1, "b": 2}]}', JSON),
    (b'{"inputs": {"a": [1], "b": [2]}}', JSON),
    (b'{"inputs": [[1, 2]]}', JSON),
    (b'{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}, "params": {"k": 1}}', JSON),
    (b'{"dataframe_records": [{"a": 1, "b": 2}]}', "application/json; charset=utf-8"),
    (b"a,b\n1,2\n", "text/csv"),
    (b"a,b\r\n1,2\r\n", "text/csv; charset=utf-8"),
]


@pytest.mark.parametrize(("body", "content_type"), DOC_BODIES)
def test_documented_bodies_decode_to_the_same_arrays(body: bytes, content_type: str) -> None:
    inputs, n = parse_invocations(body, content_type, ab_signature(), model="fraud")
    assert n == 1
    assert_same(inputs, {"a": np.array([1.0]), "b": np.array([2], dtype=np.int64)})


def test_many_rows_in_every_format() -> None:
    rows = [[1.5, "DE", True], [2.0, "US", False], [3.25, "DE", True]]
    cols = ["amount", "country", "is_new"]
    records = [dict(zip(cols, r, strict=True)) for r in rows]
    bodies: list[tuple[bytes, str]] = [
        (orjson.dumps({"dataframe_split": {"columns": cols, "data": rows}}), JSON),
        (orjson.dumps({"dataframe_records": records}), JSON),
        (orjson.dumps({"instances": rows}), JSON),
        (orjson.dumps({"instances": records}), JSON),
        (orjson.dumps({"inputs": {c: [r[i] for r in rows] for i, c in enumerate(cols)}}), JSON),
        (b"amount,country,is_new\n1.5,DE,true\n2.0,US,false\n3.25,DE,True\n", "text/csv"),
    ]
    results = [parse(body, mixed_signature(), ct) for body, ct in bodies]
    first, n = results[0]
    assert n == 3
    assert first["amount"].tolist() == [1.5, 2.0, 3.25]
    assert first["country"].tolist() == ["DE", "US", "DE"]
    assert first["is_new"].tolist() == [True, False, True]
    for other, m in results[1:]:
        assert m == 3
        assert_same(first, other)


def test_tensor_model_bodies() -> None:
    expected = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    for body in (
        {"instances": [[1, 2, 3], [4, 5, 6]]},
        {"inputs": [[1, 2, 3], [4, 5, 6]]},
        {"inputs": {"x": [[1, 2, 3], [4, 5, 6]]}},
        {"dataframe_split": {"columns": ["c0", "c1", "c2"], "data": [[1, 2, 3], [4, 5, 6]]}},
    ):
        inputs, n = parse(body, tensor_signature())
        assert n == 2
        assert inputs["x"].dtype == np.float32
        np.testing.assert_array_equal(inputs["x"], expected)
    inputs, _ = parse(b"c0,c1,c2\n1,2,3\n4,5,6\n", tensor_signature(), "text/csv")
    np.testing.assert_array_equal(inputs["x"], expected)


def test_unsupported_content_types() -> None:
    for content_type in ("text/plain", None, "application/xml"):
        with pytest.raises(BadRequest) as info:
            parse(b'{"inputs": {"a": [1], "b": [2]}}', ab_signature(), content_type)
        assert "unsupported content type" in str(info.value)
        assert "application/json" in str(info.value) and "text/csv" in str(info.value)


def test_json_key_errors_list_the_accepted_keys() -> None:
    for body in (
        {"data": [[1, 2]]},
        {"instances": [[1, 2]], "inputs": {"a": [1], "b": [2]}},
        {"params": {}},
        {"columns": ["a", "b"], "data": [[1, 2]]},
    ):
        with pytest.raises(BadRequest) as info:
            parse(body, ab_signature())
        message = str(info.value)
        for key in ("dataframe_split", "dataframe_records", "instances", "inputs"):
            assert key in message
    with pytest.raises(BadRequest, match="not valid JSON"):
        parse(b"{oops", ab_signature())
    with pytest.raises(BadRequest, match="must be an object"):
        parse(b"[1, 2]", ab_signature())
    with pytest.raises(BadRequest, match="'params' must be a JSON object"):
        parse({"inputs": {"a": [1], "b": [2]}, "params": [1]}, ab_signature())


def test_content_errors_name_field_and_row() -> None:
    with pytest.raises(InvalidInput) as info:
        parse(
            {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], ["abc", 3]]}},
            ab_signature(),
        )
    assert str(info.value) == "fraud: input 'a' must be a number (float64), got 'abc' in row 1"
    with pytest.raises(InvalidInput, match="row 1 has 3 values but there are 2 columns"):
        parse(
            {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [1, 2, 3]]}},
            ab_signature(),
        )
    with pytest.raises(InvalidInput, match="entry 1 has no value for 'b'"):
        parse({"dataframe_records": [{"a": 1, "b": 2}, {"a": 1}]}, ab_signature())
    with pytest.raises(InvalidInput, match="missing input 'b'"):
        parse({"inputs": {"a": [1]}}, ab_signature())
    with pytest.raises(InvalidInput, match="unexpected input 'c'"):
        parse({"dataframe_records": [{"a": 1, "b": 2, "c": 3}]}, ab_signature())
    with pytest.raises(
        InvalidInput, match="input 'b' must be an integer \\(int64\\), got 'x' in row 1"
    ):
        parse(b"a,b\n1,2\n3,x\n", ab_signature(), "text/csv")
    with pytest.raises(InvalidInput, match="input 'country' got 'FR' in row 0"):
        parse(
            {"dataframe_records": [{"amount": 1, "country": "FR", "is_new": True}]},
            mixed_signature(),
        )
    with pytest.raises(InvalidInput, match="no rows"):
        parse({"dataframe_split": {"columns": ["a", "b"], "data": []}}, ab_signature())
    with pytest.raises(
        InvalidInput, match="input 'a' must be a finite number \\(float64\\), got NaN"
    ):
        parse(b"a,b\n,2\n", ab_signature(), "text/csv")


def test_malformed_csv() -> None:
    with pytest.raises(BadRequest, match="CSV data row 0 has 3 fields but the header has 2"):
        parse(b"a,b\n1,2,3\n", ab_signature(), "text/csv")
    with pytest.raises(BadRequest, match="empty"):
        parse(b"", ab_signature(), "text/csv")


def test_encode_single_output_is_a_flat_list() -> None:
    body = encode_predictions({"predictions": np.array([1, 0, 1])})
    assert orjson.loads(body) == {"predictions": [1, 0, 1]}
    body = encode_predictions({"y": np.array([[0.1, 0.9], [0.5, 0.5]])})
    assert orjson.loads(body) == {"predictions": [[0.1, 0.9], [0.5, 0.5]]}
    body = encode_predictions({"label": np.array(["a", "b"], dtype=object)})
    assert orjson.loads(body) == {"predictions": ["a", "b"]}


def test_encode_classifier_returns_labels_only_unless_asked() -> None:
    outputs = {"predictions": np.array([1, 0]), "probabilities": np.array([[0.2, 0.8], [0.6, 0.4]])}
    assert orjson.loads(encode_predictions(outputs)) == {"predictions": [1, 0]}
    both = orjson.loads(encode_predictions(outputs, names=["predictions", "probabilities"]))
    assert both == {
        "predictions": [
            {"predictions": 1, "probabilities": [0.2, 0.8]},
            {"predictions": 0, "probabilities": [0.6, 0.4]},
        ]
    }
    several = orjson.loads(encode_predictions({"a": np.array([1.5]), "b": np.array(["x"])}))
    assert several == {"predictions": [{"a": 1.5, "b": "x"}]}
    with pytest.raises(InvalidInput, match="unknown output 'nope'"):
        encode_predictions(outputs, names=["nope"])


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        dtype=np.float64,
        shape=st.integers(min_value=1, max_value=30),
        elements=st.floats(allow_nan=False, allow_infinity=False, width=64),
    )
)
def test_encode_then_parse_round_trips_floats(array: np.ndarray) -> None:
    sig = Signature(kind="columns", inputs=[TensorSpec(name="predictions", dtype="float64")])
    predictions = orjson.loads(encode_predictions({"predictions": array}))["predictions"]
    body = orjson.dumps({"inputs": {"predictions": predictions}})
    inputs, n = parse_invocations(body, JSON, sig, model="m")
    assert n == len(array)
    np.testing.assert_array_equal(inputs["predictions"], array)
