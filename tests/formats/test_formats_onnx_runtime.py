"""ONNX Runtime conversion: sklearn / XGBoost / LightGBM models converted and checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("skl2onnx")
pytest.importorskip("onnxruntime")

from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modelyard.errors import InvalidInput
from modelyard.formats import PythonModel, load_model, read_manifest, save_model
from modelyard.formats.onnx_runtime import (
    ConversionResult,
    OnnxPredictor,
    check_sample,
    convert,
    load_onnx_predictor,
)
from modelyard.formats.signature import infer_signature

COLUMNS = ["age", "income", "tenure", "score", "visits"]


def _data(seed: int, rows: int = 300) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(COLUMNS)))
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] + 0.3 * rng.normal(size=rows) > 0).astype(np.int64)
    return pd.DataFrame(x, columns=COLUMNS), y


def _fresh(seed: int = 99, rows: int = 200) -> pd.DataFrame:
    return _data(seed, rows)[0]


def _assert_same(native: dict[str, Any], onnx: dict[str, Any]) -> None:
    assert set(native) == set(onnx)
    for name, expected in native.items():
        actual = onnx[name]
        assert actual.shape == expected.shape, name
        assert actual.dtype == expected.dtype, name
        if name == "predictions" and "probabilities" in native:
            np.testing.assert_array_equal(actual, expected)
        else:
            np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-4)


def _convert_and_check(tmp_path: Path, model: Any, frame: pd.DataFrame) -> ConversionResult:
    save_model(model, tmp_path / "m", input_example=frame.head())
    result = convert(tmp_path / "m")
    assert result.status == "identical", result.report
    assert result.onnx_bytes is not None
    report = result.report
    assert report["rows"] == 256
    assert report["input_dtype"] in {"float32", "float64"}
    assert report["seconds"] >= 0
    assert "onnxruntime" in report["versions"]

    manifest = read_manifest(tmp_path / "m")
    onnx = load_onnx_predictor(result.onnx_bytes, manifest)
    assert isinstance(onnx, OnnxPredictor)
    assert onnx.signature == manifest.signature
    native = load_model(tmp_path / "m", trusted=True)
    fresh = _fresh()
    expected = native.predict(fresh)
    # A DataFrame, a dict of 1-D columns (the gateway's shape) and single rows all agree.
    _assert_same(expected, onnx.predict(fresh))
    columns = {name: fresh[name].to_numpy() for name in fresh.columns}
    _assert_same(expected, onnx.predict(columns))
    one = {name: [float(fresh[name].iloc[0])] for name in fresh.columns}
    _assert_same(native.predict(pd.DataFrame(one)), onnx.predict(one))
    if onnx.mode == "matrix":  # the gateway's unchecked path for validated tables
        matrix = np.ascontiguousarray(fresh[onnx.columns].to_numpy(), dtype=onnx.dtype)
        _assert_same(expected, onnx.predict_matrix(matrix))
    return result


def test_logistic_regression(tmp_path: Path) -> None:
    frame, y = _data(1)
    result = _convert_and_check(tmp_path, LogisticRegression().fit(frame, y), frame)
    assert result.report["converter"] == "skl2onnx"
    assert result.report["label_mismatches"] == {"predictions": 0}
    assert set(result.report["max_abs_diff"]) == {"probabilities"}


def test_random_forest_classifier(tmp_path: Path) -> None:
    frame, y = _data(2)
    model = RandomForestClassifier(n_estimators=30, max_depth=6, random_state=0).fit(frame, y)
    _convert_and_check(tmp_path, model, frame)


def test_scaler_logistic_pipeline(tmp_path: Path) -> None:
    frame, y = _data(3)
    frame = frame * [10.0, 1000.0, 1.0, 0.1, 5.0] + [40.0, 50_000.0, 3.0, 0.0, 10.0]
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, y)
    save_model(model, tmp_path / "m", input_example=frame.head())
    # Realistic scales: check on the training rows rather than normal(0, 1) noise.
    result = convert(tmp_path / "m", sample=frame)
    assert result.status == "identical", result.report
    assert result.report["rows"] == len(frame)
    assert result.report["sample"] == "given"
    assert result.onnx_bytes is not None
    onnx = load_onnx_predictor(result.onnx_bytes, read_manifest(tmp_path / "m"))
    _assert_same(load_model(tmp_path / "m").predict(frame), onnx.predict(frame))


def test_random_forest_regressor(tmp_path: Path) -> None:
    frame, _ = _data(4)
    target = frame["age"] * 2.0 - frame["income"] + 0.1 * frame["score"]
    model = RandomForestRegressor(n_estimators=20, max_depth=6, random_state=0).fit(frame, target)
    result = _convert_and_check(tmp_path, model, frame)
    assert set(result.report["max_abs_diff"]) == {"predictions"}
    assert result.report["label_mismatches"] == {}


def test_string_class_labels(tmp_path: Path) -> None:
    frame, y = _data(5)
    labels = np.array(["churn", "stay"])[y]
    model = RandomForestClassifier(n_estimators=10, max_depth=5, random_state=0).fit(frame, labels)
    result = _convert_and_check(tmp_path, model, frame)
    onnx = load_onnx_predictor(result.onnx_bytes or b"", read_manifest(tmp_path / "m"))
    predictions = onnx.predict(_fresh())["predictions"]
    assert set(predictions.tolist()) <= {"churn", "stay"}


def test_tensor_signature(tmp_path: Path) -> None:
    frame, y = _data(6)
    x = frame.to_numpy()
    model = LogisticRegression().fit(x, y)
    save_model(model, tmp_path / "m", input_example=x[:5])
    result = convert(tmp_path / "m")
    assert result.status == "identical", result.report
    assert result.onnx_bytes is not None
    onnx = load_onnx_predictor(result.onnx_bytes, read_manifest(tmp_path / "m"))
    fresh = _fresh().to_numpy()
    _assert_same(load_model(tmp_path / "m").predict(fresh), onnx.predict(fresh))


def test_xgb_classifier(tmp_path: Path) -> None:
    pytest.importorskip("onnxmltools")
    xgb = pytest.importorskip("xgboost")
    frame, y = _data(7)
    model = xgb.XGBClassifier(n_estimators=20, max_depth=3, random_state=0).fit(frame, y)
    result = _convert_and_check(tmp_path, model, frame)
    assert result.report["converter"] == "onnxmltools"


def test_lgbm_classifier(tmp_path: Path) -> None:
    pytest.importorskip("onnxmltools")
    lgb = pytest.importorskip("lightgbm")
    frame, y = _data(8)
    labels = np.array(["low", "high"])[y]
    model = lgb.LGBMClassifier(n_estimators=20, verbose=-1, random_state=0).fit(frame, labels)
    _convert_and_check(tmp_path, model, frame)


def test_check_sample_follows_the_signature(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "x": [0.5, 1.5],
            "n": np.array([1, 2], dtype=np.int64),
            "colour": ["red", "blue"],
        }
    )
    signature = infer_signature(frame)
    sample = check_sample(signature, rows=50)
    assert list(sample.columns) == ["x", "n", "colour"]
    assert len(sample) == 50
    assert sample["x"].std() > 0.1
    assert set(sample["colour"]) <= {"red", "blue"}
    assert sample["n"].dtype == np.int64
    again = check_sample(signature, rows=50)
    pd.testing.assert_frame_equal(sample, again)  # fixed seed


def _my_metric(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).sum())


def test_knn_with_custom_metric_is_not_converted(tmp_path: Path) -> None:
    frame, y = _data(9, rows=60)
    model = KNeighborsClassifier(n_neighbors=3, metric=_my_metric).fit(frame, y)
    save_model(model, tmp_path / "m", input_example=frame.head())
    for trusted in (False, True):
        result = convert(tmp_path / "m", trusted=trusted)
        assert result.status in {"unsupported", "failed"}, result.report
        assert result.onnx_bytes is None
        assert result.report["error"]


class Doubler(PythonModel):
    def predict(self, inputs: np.ndarray) -> np.ndarray:
        return inputs * 2


def test_pyfunc_is_unsupported(tmp_path: Path) -> None:
    save_model(Doubler(), tmp_path / "m", input_example=np.ones((2, 2)))
    result = convert(tmp_path / "m", trusted=True)
    assert result.status == "unsupported"
    assert result.onnx_bytes is None
    assert "pyfunc" in result.report["error"]


def test_missing_directory_fails(tmp_path: Path) -> None:
    result = convert(tmp_path / "nothing")
    assert result.status == "failed"
    assert "cannot load" in result.report["error"]


def test_different_outputs_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame, y = _data(10)
    model = LogisticRegression().fit(frame, y)
    save_model(model, tmp_path / "m", input_example=frame.head())
    original = OnnxPredictor.predict

    def skewed(self: OnnxPredictor, batch: Any) -> dict[str, np.ndarray]:
        outputs = original(self, batch)
        outputs["probabilities"] = outputs["probabilities"] + 0.01
        outputs["predictions"] = 1 - outputs["predictions"]
        return outputs

    monkeypatch.setattr(OnnxPredictor, "predict", skewed)
    result = convert(tmp_path / "m")
    assert result.status == "different", result.report
    assert result.report["label_mismatches"]["predictions"] == 256
    assert result.report["max_abs_diff"]["probabilities"] == pytest.approx(0.01, abs=1e-4)
    assert [a["input_dtype"] for a in result.report["attempts"]] == ["float32", "float64"]


def test_bad_batches_are_invalid_input(tmp_path: Path) -> None:
    frame, y = _data(11)
    save_model(LogisticRegression().fit(frame, y), tmp_path / "m", input_example=frame.head())
    result = convert(tmp_path / "m")
    assert result.onnx_bytes is not None
    onnx = load_onnx_predictor(result.onnx_bytes, read_manifest(tmp_path / "m"))
    with pytest.raises(InvalidInput, match="missing"):
        onnx.predict({"age": [1.0]})
    with pytest.raises(InvalidInput):
        onnx.predict({name: ["x"] for name in COLUMNS})
    with pytest.raises(InvalidInput):
        onnx.predict(np.ones((2, 3)))
