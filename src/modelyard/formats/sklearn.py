"""scikit-learn estimators and pipelines, saved with skops (never pickle).

MLflow's sklearn flavor may have pickled its model instead (``options["serialization"]``:
"pickle" or "cloudpickle", under ``options["model_file"]``): such a file loads only trusted.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import InvalidModel, MissingExtra, UntrustedModel
from modelyard.formats.base import Outputs, Predictor, check_pickle, load_pickle, model_file
from modelyard.formats.manifest import Manifest
from modelyard.formats.signature import Signature

MODEL_FILE = "model.skops"
#: Serializations of MLflow's sklearn flavor that unpickle: loading runs code from the file.
PICKLED = ("pickle", "cloudpickle")

# skops reports every type it will not construct by default. Types from these packages are
# library code that only builds data structures (e.g. sklearn.tree._tree.Tree), so loading
# them runs nothing the model's author wrote; anything else needs the caller's trust.
AUTO_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.")

# sklearn wrappers of these frameworks are saved in their native formats instead.
_NATIVE_WRAPPER_PACKAGES = ("xgboost", "lightgbm")


def _skops_io() -> Any:
    try:
        import sklearn  # noqa: F401
        import skops.io
    except ImportError as exc:
        package = "scikit-learn" if "sklearn" in str(exc) else "skops"
        raise MissingExtra(package, "sklearn") from exc
    return skops.io


class SklearnFormat:
    """scikit-learn estimators and pipelines, saved with ``skops.io.dump``."""

    name = "sklearn"
    framework = "scikit-learn"
    extra = "sklearn"
    packages = ("scikit-learn", "skops", "numpy", "scipy")

    def detect(self, model: Any) -> bool:
        base = sys.modules.get("sklearn.base")
        if base is None:  # sklearn was never imported, so model cannot be an estimator
            return False
        package = type(model).__module__.split(".")[0]
        return isinstance(model, base.BaseEstimator) and package not in _NATIVE_WRAPPER_PACKAGES

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
        sio = _skops_io()
        from sklearn.base import is_classifier

        file = path / MODEL_FILE
        sio.dump(model, file)
        names = getattr(model, "feature_names_in_", None)
        return {
            **options,
            "untrusted_types": sorted(sio.get_untrusted_types(file=file)),
            "feature_names": None if names is None else [str(n) for n in names],
            "probabilities": bool(is_classifier(model) and hasattr(model, "predict_proba")),
        }

    def load(self, path: Path, manifest: Manifest, trusted: bool) -> Predictor:
        name = model_file(manifest, MODEL_FILE)
        if manifest.options.get("serialization") in PICKLED:
            return SklearnPredictor(manifest, load_pickle(path / name, manifest, trusted))
        sio = _skops_io()
        file = path / name
        # Ask the file itself, not the manifest: the manifest only says what was saved.
        untrusted = sorted(sio.get_untrusted_types(file=file))
        unknown = [t for t in untrusted if not t.startswith(AUTO_TRUSTED_PREFIXES)]
        if unknown and not trusted:
            raise UntrustedModel(
                f"{name} contains types outside scikit-learn, numpy and scipy: "
                f"{', '.join(unknown)}; loading them may run their code. "
                f"{UntrustedModel.HOW_TO_TRUST[0].upper()}{UntrustedModel.HOW_TO_TRUST[1:]}",
                untrusted_types=unknown,
            )
        model = sio.load(file, trusted=untrusted)
        return SklearnPredictor(manifest, model)

    def validate(self, path: Path, manifest: Manifest) -> None:
        # Checked without importing skops: its import enumerates every scikit-learn
        # estimator (and, where torch is installed, imports torch), seconds of CPU that a
        # registry or gateway should not pay to look at a file. A skops file is a zip
        # archive whose schema.json describes the object tree.
        name = model_file(manifest, MODEL_FILE)
        file = path / name
        if manifest.options.get("serialization") in PICKLED:
            check_pickle(file)
            return
        if not zipfile.is_zipfile(file):
            raise InvalidModel(f"{name} is not a skops file (expected a zip archive)")
        try:
            with zipfile.ZipFile(file) as archive:
                schema = json.loads(archive.read("schema.json"))
        except (KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise InvalidModel(
                f"{name} is not a valid skops file: it has no readable schema.json ({exc})"
            ) from None
        if not isinstance(schema, dict) or "__class__" not in schema:
            raise InvalidModel(f"{name} is not a valid skops file: its schema has no object")


class SklearnPredictor(Predictor):
    """Outputs "predictions" and, for classifiers, "probabilities" (one column per class)."""

    def __init__(self, manifest: Manifest, model: Any) -> None:
        super().__init__(manifest)
        self.model = model
        self.feature_names: list[str] | None = manifest.options.get("feature_names")
        if "feature_names" not in manifest.options:  # MLflow's files: ask the model itself
            names = getattr(model, "feature_names_in_", None)
            self.feature_names = None if names is None else [str(n) for n in names]
        self.probabilities = bool(manifest.options.get("probabilities"))

    def _features(self, batch: Any) -> Any:
        # Give the model what it was fitted on: named columns or a bare array. Anything else
        # makes sklearn warn (or, for column transformers, fail).
        if self.signature.kind == "columns":
            frame = self.as_frame(batch)
            if self.feature_names is None:
                return frame.to_numpy()
            return frame[self.feature_names] if set(self.feature_names) <= set(frame) else frame
        array = self.as_array(batch)
        if self.feature_names is not None and array.ndim == 2:
            import pandas as pd  # only for a model fitted on named columns

            return pd.DataFrame(array, columns=self.feature_names)
        return array

    def predict(self, batch: Any) -> Outputs:
        features = self._features(batch)
        outputs: Outputs = {"predictions": np.asarray(self.model.predict(features))}
        if self.probabilities:
            outputs["probabilities"] = np.asarray(self.model.predict_proba(features))
        return outputs


FORMAT = SklearnFormat()
