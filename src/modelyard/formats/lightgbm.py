"""LightGBM models (sklearn wrappers and Boosters), saved in LightGBM's native text format.

MLflow's lightgbm flavor saves a Booster as text (``model.lgb``) and a sklearn wrapper with
skops, pickle or cloudpickle (``options["serialization"]``); the wrapper is loaded to take its
booster and classes. skops' types from lightgbm, scikit-learn, numpy and scipy load freely,
pickles only when trusted.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import InvalidModel, UntrustedModel
from modelyard.formats.base import (
    Outputs,
    Predictor,
    check_pickle,
    load_pickle,
    model_file,
    require,
)
from modelyard.formats.manifest import Manifest
from modelyard.formats.signature import Signature

MODEL_FILE = "model.txt"
# Types a skops file of MLflow's LGBMClassifier holds that only rebuild data (LightGBM's
# Booster parses its model text); anything else needs the caller's trust.
_SKOPS_TRUSTED = ("lightgbm.", "sklearn.", "numpy.", "scipy.", "collections.OrderedDict")


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
        name = model_file(manifest, MODEL_FILE)
        serialization = manifest.options.get("serialization", "text")
        if serialization != "text":
            wrapper = _load_wrapper(path / name, manifest, serialization, trusted)
            return LightGBMPredictor(manifest, wrapper.booster_, wrapper=wrapper)
        try:
            booster = lgb.Booster(model_file=str(path / name))
        except Exception as exc:
            raise InvalidModel(f"LightGBM cannot load {name}: {exc}") from exc
        return LightGBMPredictor(manifest, booster)

    def validate(self, path: Path, manifest: Manifest) -> None:
        require("lightgbm", "lightgbm")
        name = model_file(manifest, MODEL_FILE)
        serialization = manifest.options.get("serialization", "text")
        if serialization in ("pickle", "cloudpickle"):
            check_pickle(path / name)
            return
        if serialization == "skops":
            if not zipfile.is_zipfile(path / name):
                raise InvalidModel(f"{name} is not a skops file (expected a zip archive)")
            return
        with (path / name).open("rb") as handle:
            head = handle.read(64)
        # Every LightGBM text model starts with a "tree" line followed by "version=...".
        if not head.startswith(b"tree") or b"version=" not in head:
            raise InvalidModel(
                f"{name} is not a LightGBM model (expected LightGBM's text format, "
                "starting with 'tree' and 'version=')"
            )


def _load_wrapper(file: Path, manifest: Manifest, serialization: str, trusted: bool) -> Any:
    """MLflow's pickled or skops-saved LGBMClassifier / LGBMRegressor."""
    if serialization != "skops":
        return load_pickle(file, manifest, trusted)
    sio = require("skops.io", "sklearn")
    untrusted = sorted(sio.get_untrusted_types(file=file))
    unknown = [t for t in untrusted if not t.startswith(_SKOPS_TRUSTED)]
    if unknown and not trusted:
        raise UntrustedModel(
            f"{file.name} contains types outside lightgbm, scikit-learn, numpy and scipy: "
            f"{', '.join(unknown)}; loading them may run their code. "
            f"{UntrustedModel.HOW_TO_TRUST[0].upper()}{UntrustedModel.HOW_TO_TRUST[1:]}",
            untrusted_types=unknown,
        )
    return sio.load(file, trusted=untrusted)


class LightGBMPredictor(Predictor):
    """Outputs "predictions" and, for classifiers, "probabilities" (one column per class)."""

    def __init__(self, manifest: Manifest, booster: Any, wrapper: Any = None) -> None:
        super().__init__(manifest)
        self.booster = booster
        # MLflow's sklearn wrapper answers its own predict() (labels), as MLflow's pyfunc does
        self.wrapper = wrapper
        classes = manifest.options.get("classes")
        self.classes = None if classes is None else np.asarray(classes)

    def _features(self, batch: Any) -> Any:
        if self.signature.kind == "columns":
            return self.as_frame(batch)
        return self.as_array(batch)

    def predict(self, batch: Any) -> Outputs:
        if self.wrapper is not None:
            return {"predictions": np.asarray(self.wrapper.predict(self._features(batch)))}
        raw = np.asarray(self.booster.predict(self._features(batch)))
        if self.classes is None:
            return {"predictions": raw}
        # Same rules as LGBMClassifier.predict_proba / predict.
        probabilities = np.column_stack([1.0 - raw, raw]) if raw.ndim == 1 else raw
        predictions = self.classes[np.argmax(probabilities, axis=1)]
        return {"predictions": predictions, "probabilities": probabilities}


FORMAT = LightGBMFormat()
