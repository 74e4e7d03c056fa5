"""LightGBM models (sklearn wrappers and Boosters), saved in LightGBM's native text format."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import InvalidModel
from modelyard.formats.base import Outputs, Predictor, require
from modelyard.formats.manifest import Manifest
from modelyard.formats.signature import Signature

MODEL_FILE = "model.txt"


class LightGBMFormat:
    """``lightgbm.Booster`` and the sklearn wrappers (LGBMClassifier, LGBMRegressor)."""

    name = "lightgbm"
    framework = "lightgbm"
    extra = "lightgbm"
    packages = ("lightgbm", "numpy")

    def detect(self, model: Any) -> bool:
        lgb = sys.modules.get("lightgbm")
        return lgb is not None and isinstance(model, lgb.Booster | lgb.LGBMModel)

    def signature_of(self, model: Any) -> Signature | None:
        return None

    def save(
        self,
        model: Any,
        path: Path,
        signature: Signature,
        options: dict[str, Any],
        input_example: Any = None,
    ) -> dict[str, Any]:
        lgb = require("lightgbm", "lightgbm")
        booster = model if isinstance(model, lgb.Booster) else model.booster_
        booster.save_model(str(path / MODEL_FILE))
        # Only the booster is saved; a classifier's labels are kept here so that load can map
        # the booster's probabilities back to them without unpickling the wrapper.
        classes = None
        if isinstance(model, lgb.LGBMClassifier):
            classes = np.asarray(model.classes_).tolist()
        return {**options, "class": type(model).__name__, "classes": classes}

    def load(self, path: Path, manifest: Manifest, trusted: bool) -> Predictor:
        lgb = require("lightgbm", "lightgbm")
        try:
            booster = lgb.Booster(model_file=str(path / MODEL_FILE))
        except Exception as exc:
            raise InvalidModel(f"LightGBM cannot load {MODEL_FILE}: {exc}") from exc
        return LightGBMPredictor(manifest, booster)

    def validate(self, path: Path, manifest: Manifest) -> None:
        require("lightgbm", "lightgbm")
        with (path / MODEL_FILE).open("rb") as handle:
            head = handle.read(64)
        # Every LightGBM text model starts with a "tree" line followed by "version=...".
        if not head.startswith(b"tree") or b"version=" not in head:
            raise InvalidModel(
                f"{MODEL_FILE} is not a LightGBM model (expected LightGBM's text format, "
                "starting with 'tree' and 'version=')"
            )


class LightGBMPredictor(Predictor):
    """Outputs "predictions" and, for classifiers, "probabilities" (one column per class)."""

    def __init__(self, manifest: Manifest, booster: Any) -> None:
        super().__init__(manifest)
        self.booster = booster
        classes = manifest.options.get("classes")
        self.classes = None if classes is None else np.asarray(classes)

    def _features(self, batch: Any) -> Any:
        if self.signature.kind == "columns":
            return self.as_frame(batch)
        return self.as_array(batch)

    def predict(self, batch: Any) -> Outputs:
        raw = np.asarray(self.booster.predict(self._features(batch)))
        if self.classes is None:
            return {"predictions": raw}
        # Same rules as LGBMClassifier.predict_proba / predict.
        probabilities = np.column_stack([1.0 - raw, raw]) if raw.ndim == 1 else raw
        predictions = self.classes[np.argmax(probabilities, axis=1)]
        return {"predictions": predictions, "probabilities": probabilities}


FORMAT = LightGBMFormat()
