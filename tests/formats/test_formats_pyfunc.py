"""Custom Python models: cloudpickle, artifacts, and the trust requirement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelyard.errors import InvalidModel, UntrustedModel
from modelyard.formats import (
    PythonModel,
    detect_format,
    get_format,
    load_model,
    save_model,
    validate_model_dir,
)


class Scaler(PythonModel):
    """Multiplies a column by a factor read from an artifact file."""

    def __init__(self, factor_file: Path) -> None:
        self.artifacts = {"factor": factor_file}
        self.factor = 0.0

    def load_context(self, artifacts: dict[str, Path]) -> None:
        self.factor = float(artifacts["factor"].read_text())

    def predict(self, inputs: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"scaled": inputs["x"] * self.factor, "label": inputs["name"]})


class Doubler(PythonModel):
    def predict(self, inputs: np.ndarray) -> np.ndarray:
        return inputs * 2


def test_round_trip_with_artifacts(tmp_path: Path) -> None:
    factor = tmp_path / "factor.txt"
    factor.write_text("3")
    model = Scaler(factor)
    model.load_context({"factor": factor})
    example = pd.DataFrame({"x": [1.0, 2.0], "name": ["a", "b"]})

    assert detect_format(model).name == "pyfunc"
    manifest = save_model(model, tmp_path / "m", input_example=example)
    assert manifest.format == "pyfunc"
    assert set(manifest.files) == {"python_model.pkl", "artifacts/factor"}
    assert [s.name for s in manifest.signature.outputs] == ["scaled", "label"]

    factor.write_text("100")  # the model uses its own copy of the artifact
    validate_model_dir(tmp_path / "m")
    predictor = load_model(tmp_path / "m", trusted=True)
    result = predictor.predict({"x": [1.0, 5.0], "name": ["p", "q"]})
    np.testing.assert_allclose(result["scaled"], [3.0, 15.0])
    assert result["label"].tolist() == ["p", "q"]


def test_loading_needs_trust(tmp_path: Path) -> None:
    save_model(Doubler(), tmp_path / "m", input_example=np.ones((2, 2)))
    validate_model_dir(tmp_path / "m")  # never unpickles
    with pytest.raises(UntrustedModel, match="--trust-pickled"):
        load_model(tmp_path / "m")
    result = load_model(tmp_path / "m", trusted=True).predict(np.ones((3, 2)))
    np.testing.assert_array_equal(result["predictions"], np.full((3, 2), 2.0))


def test_empty_pickle_is_invalid(tmp_path: Path) -> None:
    manifest = save_model(Doubler(), tmp_path / "m", input_example=np.ones((2, 2)))
    (tmp_path / "m" / "python_model.pkl").write_bytes(b"")
    with pytest.raises(InvalidModel, match=r"python_model\.pkl is missing or empty"):
        get_format("pyfunc").validate(tmp_path / "m", manifest)
