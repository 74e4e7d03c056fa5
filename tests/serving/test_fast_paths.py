"""The hot path's shortcuts give what the general path gives: same arrays, same errors.

For a model whose inputs are all float64 columns (the common tabular model) the protocols
decode a whole request into one validated (k, n) table (``Columns``); every test here runs
the same body through the shortcut and through the general path (the shortcut switched off)
and compares the outcome.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.errors import ModelyardError
from modelyard.formats.signature import Signature, TensorSpec
from modelyard.serving import validation
from modelyard.serving.batcher import Batcher
from modelyard.serving.metrics import GatewayMetrics
from modelyard.serving.protocols import mlflow, oip
from modelyard.serving.validation import Columns, TooManyRows

NAMES = ("a", "b", "c")


def table_signature() -> Signature:
    return Signature(
        kind="columns",
        inputs=[
            TensorSpec(name="a", dtype="float64", min=0.0),
            TensorSpec(name="b", dtype="float64", allow_nan=True),
            TensorSpec(name="c", dtype="float64", max=100.0),
        ],
    )


def outcome(parse: Any) -> tuple[str, Any]:
    try:
        inputs, rows = parse()
    except ModelyardError as exc:
        return "error", (type(exc).__name__, exc.detail)
    return "ok", (rows, list(inputs), [np.asarray(v).tolist() for v in inputs.values()])


def same(fast: tuple[str, Any], general: tuple[str, Any]) -> None:
    assert fast[0] == general[0], (fast, general)
    if fast[0] == "error":
        assert fast[1] == general[1]
        return
    rows, names, values = fast[1]
    assert (rows, names) == general[1][:2]
    for x, y in zip(values, general[1][2], strict=True):
        np.testing.assert_array_equal(np.asarray(x, dtype=float), np.asarray(y, dtype=float))


values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.sampled_from([None, True, "x", 150.0, -1.0]),
)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.lists(values, min_size=2, max_size=4), min_size=0, max_size=4),
    columns=st.sampled_from([list(NAMES), ["c", "b", "a"], None, ["a", "b"], ["a", "b", "d"]]),
)
def test_dataframe_split_shortcut_matches_the_general_path(
    rows: list[list[Any]], columns: list[str] | None
) -> None:
    sig = table_signature()
    split: dict[str, Any] = {"data": rows}
    if columns is not None:
        split["columns"] = columns
    body = orjson.dumps({"dataframe_split": split})
    fast = outcome(lambda: mlflow.parse_invocations(body, "application/json", sig, model="m"))
    with pytest.MonkeyPatch.context() as m:
        m.setattr(mlflow, "_split_table", lambda *a: None)
        general = outcome(
            lambda: mlflow.parse_invocations(body, "application/json", sig, model="m")
        )
    same(fast, general)


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(st.lists(values, min_size=0, max_size=3), min_size=3, max_size=3),
    order=st.permutations(list(NAMES)),
    datatype=st.sampled_from(["FP64", "FP32", "INT64", "BYTES", "BOOL"]),
    shape_bump=st.sampled_from([0, 0, 0, 1]),
)
def test_oip_shortcut_matches_the_general_path(
    data: list[list[Any]],
    order: list[str],
    datatype: str,
    shape_bump: int,
) -> None:
    sig = table_signature()
    inputs = [
        {"name": name, "shape": [len(column) + shape_bump], "datatype": datatype, "data": column}
        for name, column in zip(order, data, strict=True)
    ]
    body = orjson.dumps({"id": "r1", "inputs": inputs})

    def parse() -> tuple[Any, int]:
        request = oip.parse_infer_request(body, sig, model="m")
        return request.inputs, request.rows

    fast = outcome(parse)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(oip, "_columns_table", lambda *a: None)
        general = outcome(parse)
    same(fast, general)


def test_a_clean_table_becomes_columns_of_one_matrix() -> None:
    sig = table_signature()
    body = orjson.dumps({"dataframe_split": {"columns": list(NAMES), "data": [[1, 2, 3]] * 2}})
    inputs, rows = mlflow.parse_invocations(body, "application/json", sig, model="m")
    assert type(inputs) is Columns and rows == 2
    assert inputs.names == NAMES and inputs.matrix.shape == (3, 2)
    assert inputs.matrix.dtype == np.float64 and inputs.matrix.flags.c_contiguous
    assert all(np.shares_memory(inputs[n], inputs.matrix) for n in NAMES)
    assert isinstance(inputs, Mapping) and list(inputs) == list(NAMES) and len(inputs) == 3
    assert "b" in inputs and "z" not in inputs and dict(inputs).keys() == set(NAMES)
    with pytest.raises(KeyError):
        inputs["z"]
    for i, name in enumerate(NAMES):
        np.testing.assert_array_equal(inputs[name], [i + 1.0] * 2)


def test_validate_table() -> None:
    sig = table_signature()
    ok = validation.validate_table(sig, np.array([[1.0], [math.nan], [3.0]]), model="m")
    assert ok is not None and ok.matrix.shape == (3, 1)
    assert validation.validate_table(sig, np.array([[-1.0], [0.0], [3.0]]), model="m") is None
    assert validation.validate_table(sig, np.array([[1.0], [0.0], [math.inf]]), model="m") is None
    assert validation.validate_table(sig, np.zeros((2, 1)), model="m") is None
    with pytest.raises(TooManyRows):
        validation.validate_table(sig, np.zeros((3, 5)), model="m", max_rows=4)
    mixed = Signature(
        kind="columns",
        inputs=[TensorSpec(name="a", dtype="float64"), TensorSpec(name="b", dtype="int64")],
    )
    assert validation.table_columns(mixed) is None
    assert validation.validate_table(mixed, np.zeros((2, 1)), model="m") is None


def test_batcher_merges_columns_into_one_matrix() -> None:
    seen: list[Any] = []

    def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(inputs)
        return {"y": np.asarray(inputs["a"]) * 2}

    async def main() -> None:
        batcher = Batcher(predict, max_wait_ms=0.0, expected_predict_seconds=0.05)
        sig = table_signature()
        requests = [
            validation.validate_table(sig, np.array([[float(i)], [0.0], [1.0]]), model="m")
            for i in range(3)
        ]
        outs = await asyncio.gather(*(batcher.submit(r, 1) for r in requests))  # type: ignore[arg-type]
        assert [o["y"].tolist() for o in outs] == [[0.0], [2.0], [4.0]]
        merged = [b for b in seen if len(b["a"]) > 1]
        assert merged and all(type(b) is Columns for b in merged)
        await batcher.close()

    asyncio.run(main())


def test_metrics_render_as_prometheus_counters_and_histograms() -> None:
    metrics = GatewayMetrics()
    metrics.observe("fraud", "1", "mlflow", 200, 0.0007)
    metrics.observe("fraud", "1", "mlflow", 200, 0.02)
    metrics.observe("fraud", "1", "v2", 422, 3.0)
    metrics.errors.inc("fraud", "invalid_input")
    text = metrics.render().decode()
    assert (
        'modelyard_requests_total{code="200",endpoint="fraud",protocol="mlflow",version="1"} 2.0'
        in text
    )
    assert (
        'modelyard_requests_total{code="422",endpoint="fraud",protocol="v2",version="1"} 1.0'
        in text
    )
    assert (
        'modelyard_request_latency_seconds_bucket{endpoint="fraud",le="0.0005",version="1"} 0.0'
        in text
    )
    assert (
        'modelyard_request_latency_seconds_bucket{endpoint="fraud",le="0.001",version="1"} 1.0'
        in text
    )
    assert (
        'modelyard_request_latency_seconds_bucket{endpoint="fraud",le="0.025",version="1"} 2.0'
        in text
    )
    assert (
        'modelyard_request_latency_seconds_bucket{endpoint="fraud",le="+Inf",version="1"} 3.0'
        in text
    )
    assert 'modelyard_request_latency_seconds_count{endpoint="fraud",version="1"} 3.0' in text
    assert 'modelyard_request_errors_total{endpoint="fraud",reason="invalid_input"} 1.0' in text
    assert "modelyard_request_latency_seconds_created" in text
    assert metrics.requests("fraud", "1", "mlflow", 200) == 2


def test_request_ids_look_like_uuid4_and_do_not_repeat() -> None:
    import uuid

    from modelyard.serving.wire import new_request_id

    ids = [new_request_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for rid in ids[:5]:
        assert len(rid) == 32 and uuid.UUID(hex=rid).version == 4
