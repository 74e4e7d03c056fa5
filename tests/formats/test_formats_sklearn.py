"""scikit-learn models saved with skops: round trips and the trust rules."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from modelyard.errors import InvalidModel, UntrustedModel
from modelyard.formats import (
    MANIFEST_NAME,
    detect_format,
    load_model,
    read_manifest,
    save_model,
    validate_model_dir,
)


def _double(values: np.ndarray) -> np.ndarray:
    # Module-level, so skops records it as a (non-sklearn) function type.
    return values * 2.0


def test_logistic_regression_round_trip(tmp_path: Path, xy: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = xy
    model = LogisticRegression().fit(x, y)
    manifest = save_model(model, tmp_path / "m", input_example=x[:5])

    assert manifest.format == "sklearn"
    assert manifest.framework == "scikit-learn"
    assert {"scikit-learn", "skops", "python", "modelyard"} <= set(manifest.framework_versions)
    assert any(r.startswith("scikit-learn==") for r in manifest.requirements)
    assert any(r.startswith("skops==") for r in manifest.requirements)
    assert set(manifest.files) == {"model.skops"}
    assert manifest.files["model.skops"].digest.startswith("sha256:")
    assert manifest.signature.kind == "tensor"
    outputs = {s.name: s for s in manifest.signature.outputs}
    assert outputs["predictions"].shape == [-1]
    assert outputs["probabilities"].shape == [-1, 2]
    assert read_manifest(tmp_path / "m") == manifest
    assert json.loads((tmp_path / "m" / MANIFEST_NAME).read_text())["format"] == "sklearn"

    assert validate_model_dir(tmp_path / "m") == manifest
    predictor = load_model(tmp_path / "m")
    result = predictor.predict(x)
    np.testing.assert_array_equal(result["predictions"], model.predict(x))
    np.testing.assert_allclose(result["probabilities"], model.predict_proba(x))
    # A dict of lists (a JSON request) is coerced to an array.
    listed = predictor.predict({"input": x[:3].tolist()})
    np.testing.assert_array_equal(listed["predictions"], model.predict(x[:3]))
    assert predictor.warm_up() >= 0


def test_random_forest_on_a_dataframe_keeps_feature_names(
    tmp_path: Path, frame_xy: tuple[pd.DataFrame, np.ndarray]
) -> None:
    frame, y = frame_xy
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(frame, y)
    manifest = save_model(model, tmp_path / "rf", input_example=frame.head())

    assert manifest.signature.kind == "columns"
    assert [s.name for s in manifest.signature.inputs] == list(frame.columns)
    assert manifest.options["untrusted_types"] == ["sklearn.tree._tree.Tree"]
    assert manifest.options["feature_names"] == list(frame.columns)

    predictor = load_model(tmp_path / "rf")  # sklearn types are trusted automatically
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "X does not have valid feature names"
        result = predictor.predict(frame)
        shuffled = predictor.predict(frame[list(reversed(frame.columns))].to_dict("list"))
    np.testing.assert_array_equal(result["predictions"], model.predict(frame))
    np.testing.assert_allclose(result["probabilities"], model.predict_proba(frame))
    np.testing.assert_array_equal(shuffled["predictions"], model.predict(frame))


def test_regressor_has_no_probabilities(tmp_path: Path, xy: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = xy
    target = x @ np.array([1.0, -2.0, 0.5, 0.0])
    model = RandomForestRegressor(n_estimators=5, random_state=0).fit(x, target)
    save_model(model, tmp_path / "reg", input_example=x[:5])
    result = load_model(tmp_path / "reg").predict(x)
    assert set(result) == {"predictions"}
    np.testing.assert_allclose(result["predictions"], model.predict(x))


def test_pipeline_round_trip(tmp_path: Path, frame_xy: tuple[pd.DataFrame, np.ndarray]) -> None:
    frame, y = frame_xy
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, y)
    manifest = save_model(model, tmp_path / "pipe", input_example=frame.head(3))
    assert manifest.format == "sklearn"
    result = load_model(tmp_path / "pipe").predict(frame)
    np.testing.assert_array_equal(result["predictions"], model.predict(frame))
    np.testing.assert_allclose(result["probabilities"], model.predict_proba(frame))


def test_non_sklearn_type_needs_trust(tmp_path: Path, xy: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = xy
    model = make_pipeline(FunctionTransformer(_double), LogisticRegression()).fit(x, y)
    manifest = save_model(model, tmp_path / "custom", input_example=x[:5])
    custom = [t for t in manifest.options["untrusted_types"] if t.endswith("_double")]
    assert custom

    validate_model_dir(tmp_path / "custom")  # validation constructs nothing: no trust needed
    with pytest.raises(UntrustedModel, match="_double") as caught:
        load_model(tmp_path / "custom")
    assert caught.value.extra["untrusted_types"] == custom

    result = load_model(tmp_path / "custom", trusted=True).predict(x)
    np.testing.assert_array_equal(result["predictions"], model.predict(x))


def test_corrupt_skops_file_is_invalid(tmp_path: Path, xy: tuple[np.ndarray, np.ndarray]) -> None:
    from modelyard.formats import get_format

    x, y = xy
    manifest = save_model(LogisticRegression().fit(x, y), tmp_path / "m", input_example=x[:2])
    (tmp_path / "m" / "model.skops").write_text("not a zip")
    with pytest.raises(InvalidModel, match=r"model\.skops is not a skops file"):
        get_format("sklearn").validate(tmp_path / "m", manifest)


def test_detection_leaves_boosting_wrappers_to_their_formats(
    xy: tuple[np.ndarray, np.ndarray],
) -> None:
    xgboost = pytest.importorskip("xgboost")
    lightgbm = pytest.importorskip("lightgbm")
    assert detect_format(LogisticRegression()).name == "sklearn"
    assert detect_format(xgboost.XGBClassifier()).name == "xgboost"
    assert detect_format(lightgbm.LGBMRegressor()).name == "lightgbm"
