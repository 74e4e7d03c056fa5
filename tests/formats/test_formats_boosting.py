"""XGBoost and LightGBM: native files, sklearn wrappers and Boosters, missing frameworks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelyard.errors import MissingExtra
from modelyard.formats import load_model, save_model, validate_model_dir

xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")


def test_xgb_classifier_on_a_dataframe(
    tmp_path: Path, frame_xy: tuple[pd.DataFrame, np.ndarray]
) -> None:
    frame, y = frame_xy
    model = xgb.XGBClassifier(n_estimators=10, max_depth=3, random_state=0).fit(frame, y)
    manifest = save_model(model, tmp_path / "m", input_example=frame.head())
    assert manifest.format == "xgboost"
    assert manifest.options["class"] == "XGBClassifier"
    assert set(manifest.files) == {"model.json"}
    assert any(r.startswith("xgboost==") for r in manifest.requirements)

    validate_model_dir(tmp_path / "m")
    result = load_model(tmp_path / "m").predict(frame)
    np.testing.assert_array_equal(result["predictions"], model.predict(frame))
    np.testing.assert_allclose(result["probabilities"], model.predict_proba(frame), rtol=1e-6)


def test_xgb_regressor_and_booster(tmp_path: Path, xy: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = xy
    target = x @ np.array([1.0, -2.0, 0.5, 0.0])
    regressor = xgb.XGBRegressor(n_estimators=10, random_state=0).fit(x, target)
    save_model(regressor, tmp_path / "reg", input_example=x[:5])
    result = load_model(tmp_path / "reg").predict(x)
    assert set(result) == {"predictions"}
    np.testing.assert_allclose(result["predictions"], regressor.predict(x), rtol=1e-6)

    booster = xgb.train({"max_depth": 2}, xgb.DMatrix(x, label=target), num_boost_round=5)
    manifest = save_model(booster, tmp_path / "booster", input_example=x[:5])
    assert manifest.options["class"] == "Booster"
    result = load_model(tmp_path / "booster").predict(x)
    np.testing.assert_allclose(result["predictions"], booster.predict(xgb.DMatrix(x)), rtol=1e-6)


@pytest.mark.parametrize("classes", [2, 3])
def test_lgbm_classifier(tmp_path: Path, rng: np.random.Generator, classes: int) -> None:
    x = rng.normal(size=(150, 4))
    labels = np.array(["low", "mid", "high"])[:classes]
    y = labels[np.digitize(x[:, 0], np.quantile(x[:, 0], np.linspace(0, 1, classes + 1)[1:-1]))]
    model = lgb.LGBMClassifier(n_estimators=10, verbose=-1, random_state=0).fit(x, y)
    manifest = save_model(model, tmp_path / "m", input_example=x[:5])
    assert manifest.format == "lightgbm"
    assert set(manifest.files) == {"model.txt"}
    assert sorted(manifest.options["classes"]) == sorted(labels.tolist())

    validate_model_dir(tmp_path / "m")
    result = load_model(tmp_path / "m").predict(x)
    np.testing.assert_array_equal(result["predictions"], model.predict(x))
    np.testing.assert_allclose(result["probabilities"], model.predict_proba(x), rtol=1e-6)


def test_lgbm_regressor_and_booster(
    tmp_path: Path, frame_xy: tuple[pd.DataFrame, np.ndarray]
) -> None:
    frame, _ = frame_xy
    target = frame["age"] * 2 - frame["score"]
    regressor = lgb.LGBMRegressor(n_estimators=10, verbose=-1).fit(frame, target)
    save_model(regressor, tmp_path / "reg", input_example=frame.head())
    result = load_model(tmp_path / "reg").predict(frame.to_dict("list"))
    assert set(result) == {"predictions"}
    np.testing.assert_allclose(result["predictions"], regressor.predict(frame), rtol=1e-6)

    booster = lgb.train(
        {"objective": "regression", "verbose": -1}, lgb.Dataset(frame, target), num_boost_round=5
    )
    save_model(booster, tmp_path / "booster", input_example=frame.head())
    result = load_model(tmp_path / "booster").predict(frame)
    np.testing.assert_allclose(result["predictions"], booster.predict(frame), rtol=1e-6)


def test_lightgbm_file_that_is_not_a_model_is_invalid(
    tmp_path: Path, xy: tuple[np.ndarray, np.ndarray]
) -> None:
    from modelyard.errors import InvalidModel
    from modelyard.formats import get_format

    x, y = xy
    model = lgb.LGBMClassifier(n_estimators=3, verbose=-1).fit(x, y)
    manifest = save_model(model, tmp_path / "m", input_example=x[:2])
    (tmp_path / "m" / "model.txt").write_text('{"learner": {}}')
    with pytest.raises(InvalidModel, match=r"model\.txt is not a LightGBM model"):
        get_format("lightgbm").validate(tmp_path / "m", manifest)


@pytest.mark.parametrize("package", ["xgboost", "lightgbm"])
def test_missing_framework_raises_missing_extra(
    tmp_path: Path, xy: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch, package: str
) -> None:
    x, y = xy
    if package == "xgboost":
        model = xgb.XGBClassifier(n_estimators=3).fit(x, y)
    else:
        model = lgb.LGBMClassifier(n_estimators=3, verbose=-1).fit(x, y)
    save_model(model, tmp_path / "m", input_example=x[:2])

    monkeypatch.setitem(sys.modules, package, None)  # `import <package>` now fails
    for call in (
        lambda: load_model(tmp_path / "m"),
        lambda: validate_model_dir(tmp_path / "m"),
        lambda: save_model(model, tmp_path / "again", input_example=x[:2], format=package),
    ):
        with pytest.raises(MissingExtra) as caught:
            call()
        assert caught.value.extra == {"package": package, "extra": package}
        assert f"modelyard[{package}]" in caught.value.detail
    assert not (tmp_path / "again").exists()
