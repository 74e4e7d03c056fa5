"""Open Inference Protocol v2: requests built by the real Triton client, responses it decodes."""

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
from modelyard.serving.protocols.oip import (
    DATATYPES,
    encode_infer_response,
    model_metadata,
    numpy_dtype,
    oip_datatype,
    parse_infer_request,
)
from modelyard.serving.validation import validate_inputs

httpclient = pytest.importorskip("tritonclient.http")


def fraud_signature() -> Signature:
    return Signature(
        kind="columns",
        inputs=[
            TensorSpec(name="amount", dtype="float64", min=0.0),
            TensorSpec(name="score", dtype="float32", allow_nan=True),
            TensorSpec(name="age", dtype="int64"),
            TensorSpec(name="country", dtype="string", categories=["DE", "FR", "US"]),
            TensorSpec(name="is_new", dtype="bool"),
        ],
        outputs=[
            TensorSpec(name="predictions", dtype="int64"),
            TensorSpec(name="probabilities", dtype="float64", shape=[-1, 2]),
        ],
    )


ROWS: dict[str, list[Any]] = {
    "amount": [10.5, 3.0],
    "score": [0.5, 0.25],
    "age": [30, 41],
    "country": ["DE", "US"],
    "is_new": [True, False],
}


def numeric_signature(k: int = 20) -> Signature:
    return Signature(
        kind="columns", inputs=[TensorSpec(name=f"f{i}", dtype="float64") for i in range(k)]
    )


def image_signature() -> Signature:
    return Signature(
        kind="tensor", inputs=[TensorSpec(name="image", dtype="float32", shape=[-1, 2, 3])]
    )


def triton_body(
    inputs: list[Any], outputs: list[Any] | None = None, request_id: str = ""
) -> tuple[bytes, int | None]:
    """The exact body (and Inference-Header-Content-Length) tritonclient would send."""
    client = httpclient.InferenceServerClient
    if hasattr(client, "generate_request_body"):
        body, json_size = client.generate_request_body(
            inputs, outputs=outputs, request_id=request_id
        )
    else:  # older tritonclient
        from tritonclient.http._utils import _get_inference_request

        body, json_size = _get_inference_request(
            inputs=inputs,
            request_id=request_id,
            outputs=outputs,
            sequence_id=0,
            sequence_start=False,
            sequence_end=False,
            priority=0,
            timeout=None,
            custom_parameters=None,
        )
    return body, json_size


def infer_input(name: str, array: np.ndarray, binary: bool) -> Any:
    datatype = "BYTES" if array.dtype == object else oip_datatype(array.dtype)
    item = httpclient.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array, binary_data=binary)
    return item


def fraud_arrays() -> dict[str, np.ndarray]:
    return {
        "amount": np.array(ROWS["amount"], dtype=np.float64),
        "score": np.array(ROWS["score"], dtype=np.float32).reshape(2, 1),
        "age": np.array(ROWS["age"], dtype=np.int64),
        "country": np.array(ROWS["country"], dtype=object),
        "is_new": np.array(ROWS["is_new"], dtype=np.bool_),
    }


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].shape == b[name].shape, name
        np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_column_inputs(binary: bool) -> None:
    sig = fraud_signature()
    inputs = [infer_input(name, array, binary) for name, array in fraud_arrays().items()]
    outputs = [httpclient.InferRequestedOutput("predictions", binary_data=False)]
    body, header_length = triton_body(inputs, outputs, request_id="req-1")
    assert (header_length is not None) == binary
    request = parse_infer_request(body, sig, model="fraud", header_length=header_length)
    expected, n = validate_inputs(sig, ROWS, model="fraud")
    assert request.rows == n == 2
    assert request.id == "req-1"
    assert request.outputs == ["predictions"]
    assert_same(request.inputs, expected)


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_one_row_tensor_for_a_table(binary: bool) -> None:
    sig = numeric_signature()
    rows = np.arange(40, dtype=np.float64).reshape(2, 20) / 7
    body, header_length = triton_body([infer_input("input__0", rows, binary)])
    request = parse_infer_request(body, sig, model="m", header_length=header_length)
    assert request.rows == 2
    assert list(request.inputs) == [f"f{i}" for i in range(20)]
    for i in range(20):
        np.testing.assert_array_equal(request.inputs[f"f{i}"], rows[:, i])
        assert request.inputs[f"f{i}"].flags.c_contiguous


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_tensor_model(binary: bool) -> None:
    image = (np.arange(12, dtype=np.float32) / 3).reshape(2, 2, 3)
    body, header_length = triton_body([infer_input("pixels", image, binary)])
    request = parse_infer_request(body, image_signature(), model="m", header_length=header_length)
    assert request.rows == 2 and request.outputs is None
    np.testing.assert_array_equal(request.inputs["image"], image)
    assert request.inputs["image"].dtype == np.float32


def test_nested_and_flat_data_decode_alike() -> None:
    image = (np.arange(12, dtype=np.float64) / 3).reshape(2, 2, 3)
    for data in (image.reshape(-1).tolist(), image.tolist()):
        body = orjson.dumps(
            {"inputs": [{"name": "image", "shape": [2, 2, 3], "datatype": "FP32", "data": data}]}
        )
        request = parse_infer_request(body, image_signature(), model="m")
        np.testing.assert_array_equal(request.inputs["image"], image.astype(np.float32))


def test_all_column_encodings_agree() -> None:
    sig = numeric_signature(3)
    rows = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    bodies = [
        {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": rows}]},
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2, 3],
                    "datatype": "FP64",
                    "data": [v for r in rows for v in r],
                }
            ]
        },
        {
            "inputs": [
                {"name": f"f{i}", "shape": [2], "datatype": "FP64", "data": [r[i] for r in rows]}
                for i in range(3)
            ]
        },
        {
            "inputs": [
                {
                    "name": f"f{i}",
                    "shape": [2, 1],
                    "datatype": "INT64",
                    "data": [int(r[i]) for r in rows],
                }
                for i in range(3)
            ]
        },
    ]
    results = [parse_infer_request(orjson.dumps(b), sig, model="m").inputs for b in bodies]
    for other in results[1:]:
        assert_same(results[0], other)


def bad(body: Any, cls: type[Exception], sig: Signature | None = None) -> str:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(cls) as info:
        parse_infer_request(raw, sig or fraud_signature(), model="fraud")
    return str(info.value)


def col(
    name: str, datatype: str, data: list[Any], shape: list[int] | None = None
) -> dict[str, Any]:
    return {"name": name, "shape": shape or [len(data)], "datatype": datatype, "data": data}


def good_columns(**override: dict[str, Any]) -> list[dict[str, Any]]:
    columns = {
        "amount": col("amount", "FP64", ROWS["amount"]),
        "score": col("score", "FP32", ROWS["score"]),
        "age": col("age", "INT64", ROWS["age"]),
        "country": col("country", "BYTES", ROWS["country"]),
        "is_new": col("is_new", "BOOL", ROWS["is_new"]),
    }
    columns.update(override)
    return list(columns.values())


def test_malformed_requests_are_bad_requests() -> None:
    assert "not valid JSON" in bad(b"{nope", BadRequest)
    assert "'inputs'" in bad({"id": "x"}, BadRequest)
    assert "'inputs'" in bad({"inputs": []}, BadRequest)
    message = bad({"inputs": [col("amount", "FLOAT", [1.0])]}, BadRequest)
    assert "input 'amount' has datatype 'FLOAT'" in message and "FP64" in message
    message = bad({"inputs": [{"name": "amount", "datatype": "FP64", "data": [1]}]}, BadRequest)
    assert "input 'amount' needs a 'shape'" in message
    message = bad({"inputs": [{"name": "amount", "shape": [1], "datatype": "FP64"}]}, BadRequest)
    assert "input 'amount' has no 'data'" in message
    assert "'id' must be a string" in bad({"id": 3, "inputs": good_columns()}, BadRequest)


def test_data_that_does_not_fill_the_shape() -> None:
    message = bad(
        {"inputs": good_columns(amount=col("amount", "FP64", [1.0, 2.0, 3.0], [2]))}, InvalidInput
    )
    assert message == "fraud: input 'amount' has 3 values in 'data' but its shape [2] needs 2"


def test_content_errors_name_the_field() -> None:
    message = bad(
        {"inputs": good_columns(amount=col("amount", "FP64", [1.0, "abc"]))}, InvalidInput
    )
    assert message == "fraud: input 'amount' must be a number (float64), got 'abc' in row 1"
    message = bad(
        {"inputs": good_columns(country=col("country", "BYTES", ["DE", "XX"]))}, InvalidInput
    )
    assert "input 'country' got 'XX' in row 1" in message
    message = bad(
        {"inputs": good_columns(age=col("age", "INT64", [1, 2, 3, 4], [2, 2]))}, InvalidInput
    )
    assert "input 'age' is a column and must have shape [n] or [n, 1]" in message
    columns = good_columns()[:-1]
    assert "missing input 'is_new'" in bad({"inputs": columns}, InvalidInput)
    extra = [*good_columns(), col("colour", "BYTES", ["red", "blue"])]
    assert "unexpected input 'colour'" in bad({"inputs": extra}, InvalidInput)
    message = bad({"inputs": good_columns(), "outputs": [{"name": "nope"}]}, InvalidInput)
    assert "unknown output 'nope'" in message and "'probabilities'" in message


def test_binary_data_size_must_match() -> None:
    sig = image_signature()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1, 2, 3],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 20},
                }
            ]
        }
    )
    body = header + np.zeros(5, dtype=np.float32).tobytes()
    with pytest.raises(InvalidInput, match="input 'image' has 20 bytes of binary data"):
        parse_infer_request(body, sig, model="m", header_length=len(header))
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length"):
        parse_infer_request(header, sig, model="m")


def test_response_decodes_with_tritonclient() -> None:
    outputs = {
        "predictions": np.array([1, 0], dtype=np.int64),
        "probabilities": np.array([[0.1, 0.9], [0.75, 0.25]]),
        "label": np.array(["fraud", "ok"], dtype=object),
        "flag": np.array([True, False]),
        "small": np.array([1.5, 2.5], dtype=np.float32),
    }
    body = encode_infer_response(model="fraud", version="3", outputs=outputs, request_id="r1")
    result = httpclient.InferResult.from_response_body(body)
    doc = result.get_response()
    assert doc["model_name"] == "fraud" and doc["model_version"] == "3" and doc["id"] == "r1"
    assert [o["datatype"] for o in doc["outputs"]] == ["INT64", "FP64", "BYTES", "BOOL", "FP32"]
    for name, array in outputs.items():
        decoded = result.as_numpy(name)
        assert decoded.shape == array.shape
        np.testing.assert_array_equal(decoded, array)
        if name != "label":
            assert decoded.dtype == array.dtype


def test_response_with_requested_outputs_only() -> None:
    outputs = {"predictions": np.array([1]), "probabilities": np.array([[0.5, 0.5]])}
    body = encode_infer_response(
        model="fraud", version="1", outputs=outputs, request_id=None, requested=["probabilities"]
    )
    doc = orjson.loads(body)
    assert "id" not in doc
    assert [o["name"] for o in doc["outputs"]] == ["probabilities"]
    assert doc["outputs"][0]["shape"] == [1, 2] and doc["outputs"][0]["data"] == [0.5, 0.5]
    with pytest.raises(InvalidInput, match="unknown output 'nope'"):
        encode_infer_response(
            model="fraud", version="1", outputs=outputs, request_id=None, requested=["nope"]
        )


def test_model_metadata() -> None:
    meta = model_metadata("fraud", ["1", "2"], fraud_signature(), "sklearn_skops")
    assert meta["name"] == "fraud" and meta["versions"] == ["1", "2"]
    assert meta["platform"] == "sklearn_skops"
    assert meta["inputs"][0] == {"name": "amount", "datatype": "FP64", "shape": [-1]}
    assert meta["inputs"][3] == {"name": "country", "datatype": "BYTES", "shape": [-1]}
    assert meta["inputs"][4] == {"name": "is_new", "datatype": "BOOL", "shape": [-1]}
    assert meta["outputs"][1] == {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]}
    meta = model_metadata("img", ["1"], image_signature(), "onnx")
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 2, 3]}]
    orjson.dumps(meta)


def test_datatype_mapping_round_trips() -> None:
    for datatype in DATATYPES:
        assert oip_datatype(numpy_dtype(datatype)) == datatype
    assert oip_datatype("string") == "BYTES"
    assert oip_datatype(np.dtype("<U3")) == "BYTES"
    with pytest.raises(BadRequest):
        numpy_dtype("FLOAT")


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        dtype=np.float64,
        shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8),
        elements=st.floats(allow_nan=False, allow_infinity=False, width=64),
    )
)
def test_encode_then_parse_round_trips_floats(array: np.ndarray) -> None:
    sig = Signature(
        kind="tensor", inputs=[TensorSpec(name="x", dtype="float64", shape=[-1, array.shape[1]])]
    )
    response = orjson.loads(
        encode_infer_response(model="m", version="1", outputs={"x": array}, request_id=None)
    )
    request = parse_infer_request(orjson.dumps({"inputs": response["outputs"]}), sig, model="m")
    np.testing.assert_array_equal(request.inputs["x"], array)
    assert request.rows == array.shape[0]


def test_one_bytes_table_with_mixed_columns() -> None:
    rows = [list(r) for r in zip(*ROWS.values(), strict=True)]
    body = orjson.dumps(
        {"inputs": [{"name": "input", "shape": [2, 5], "datatype": "BYTES", "data": rows}]}
    )
    request = parse_infer_request(body, fraud_signature(), model="fraud")
    expected, _ = validate_inputs(fraud_signature(), ROWS, model="fraud")
    assert_same(request.inputs, expected)


def test_table_with_a_bad_value_names_column_and_row() -> None:
    sig = numeric_signature(3)
    body = orjson.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3, 4, None, 6]}
            ]
        }
    )
    with pytest.raises(
        InvalidInput, match="input 'f1' must be a number \\(float64\\), got null in row 1"
    ):
        parse_infer_request(body, sig, model="m")
