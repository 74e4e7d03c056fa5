"""XGBoost models (sklearn wrappers and Boosters), saved in XGBoost's native JSON.

MLflow's xgboost flavor saves UBJSON (``model.ubj``) or the legacy binary format: the file
is ``options["model_file"]`` then, and XGBoost reads each by itself (none is a pickle).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import InvalidModel
from modelyard.formats.base import Outputs, Predictor, model_file, require
from modelyard.formats.manifest import Manifest
from modelyard.formats.signature import Signature

MODEL_FILE = "model.json"

# The classes load may instantiate: a name from the manifest never picks arbitrary code.
_CLASSES = ("XGBClassifier", "XGBRegressor", "XGBRanker", "XGBRFClassifier", "XGBRFRegressor")
_BOOSTER = "Booster"
#: Every class an XGBoost model may be loaded as.
CLASSES = (*_CLASSES, _BOOSTER)


def _class_name(model: Any) -> str:
    # A user subclass is saved as the xgboost class it extends.
    for cls in type(model).__mro__:
        if cls.__module__.startswith("xgboost") and cls.__name__ in (*_CLASSES, _BOOSTER):
            return cls.__name__
    return _BOOSTER


class XGBoostFormat:
    """``xgboost.Booster`` and the sklearn wrappers (XGBClassifier, XGBRegressor, ...)."""

    name = "xgboost"
    framework = "xgboost"
    extra = "xgboost"
    packages = ("xgboost", "numpy")

    def detect(self, model: Any) -> bool:
        xgb = sys.modules.get("xgboost")
        return xgb is not None and isinstance(model, xgb.Booster | xgb.XGBModel)

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
        require("xgboost", "xgboost")
        model.save_model(str(path / MODEL_FILE))
        return {**options, "class": _class_name(model)}

    def load(self, path: Path, manifest: Manifest, trusted: bool) -> Predictor:
        xgb = require("xgboost", "xgboost")
        class_name = manifest.options.get("class", _BOOSTER)
        if class_name not in (*_CLASSES, _BOOSTER):
            raise InvalidModel(
                f"modelyard.json names xgboost class {class_name!r}; expected one of "
                f"{', '.join((*_CLASSES, _BOOSTER))}"
            )
        model = getattr(xgb, class_name)()
        name = model_file(manifest, MODEL_FILE)
        try:
            model.load_model(str(path / name))
        except xgb.core.XGBoostError as exc:
            raise InvalidModel(f"XGBoost cannot load {name}: {str(exc).splitlines()[0]}") from exc
        return XGBoostPredictor(manifest, model, xgb)

    def validate(self, path: Path, manifest: Manifest) -> None:
        require("xgboost", "xgboost")
        name = model_file(manifest, MODEL_FILE)
        if not name.endswith(".json"):
            # UBJSON or the legacy binary format: XGBoost checks them when it loads them
            if (path / name).stat().st_size == 0:
                raise InvalidModel(f"{name} is empty (expected an XGBoost model)")
            return
        try:
            with (path / name).open("rb") as handle:
                document = json.load(handle)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidModel(
                f"{name} is not an XGBoost model (expected XGBoost JSON): {exc}"
            ) from exc
        if not isinstance(document, dict) or "learner" not in document:
            raise InvalidModel(f'{name} is JSON but not an XGBoost model (no "learner" section)')


class XGBoostPredictor(Predictor):
    """Outputs "predictions" and, for classifiers, "probabilities"."""

    def __init__(self, manifest: Manifest, model: Any, xgb: Any) -> None:
        super().__init__(manifest)
        self.model = model
        self.xgb = xgb
        self.booster = model if isinstance(model, xgb.Booster) else model.get_booster()
        # MLflow's xgboost pyfunc answers predict() alone; its versions record False here
        self.probabilities = bool(manifest.options.get("probabilities", True))

    def _features(self, batch: Any) -> Any:
        if self.signature.kind == "columns":
            return self.as_frame(batch)
        array = self.as_array(batch)
        names = self.booster.feature_names
        if names is not None and array.ndim == 2 and array.shape[1] == len(names):
            # A model fitted on a DataFrame rejects a bare array; name its columns.
            import pandas as pd

            return pd.DataFrame(array, columns=names)
        return array

    def predict(self, batch: Any) -> Outputs:
        features = self._features(batch)
        if isinstance(self.model, self.xgb.Booster):
            return {"predictions": np.asarray(self.model.predict(self.xgb.DMatrix(features)))}
        outputs: Outputs = {"predictions": np.asarray(self.model.predict(features))}
        if self.probabilities and isinstance(self.model, self.xgb.XGBClassifier):
            outputs["probabilities"] = np.asarray(self.model.predict_proba(features))
        return outputs


FORMAT = XGBoostFormat()
