"""Custom Python models: a PythonModel subclass, saved with cloudpickle.

Loading unpickles the author's code, so it always needs ``trusted=True``.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import InvalidInput, InvalidModel, UntrustedModel
from modelyard.formats.base import Outputs, Predictor, model_file, require
from modelyard.formats.manifest import Manifest
from modelyard.formats.signature import Signature, is_frame

MODEL_FILE = "python_model.pkl"
ARTIFACTS_DIR = "artifacts"


class PythonModel:
    """Subclass this to serve any Python code.

    Set ``artifacts`` (name -> file or directory path) to ship files with the model; after
    loading, ``load_context`` receives the same names mapped to the copies' paths.
    """

    artifacts: dict[str, str | Path] = {}

    def load_context(self, artifacts: dict[str, Path]) -> None:
        """Called once after loading, e.g. to open the artifact files."""

    def predict(self, inputs: Any) -> Any:
        """Return an array, a DataFrame or a dict of arrays for a batch of ``inputs``."""
        raise NotImplementedError


class PyfuncFormat:
    """Instances of PythonModel subclasses (pickled with cloudpickle)."""

    name = "pyfunc"
    framework = "python"
    extra = "pyfunc"
    packages = ("cloudpickle", "numpy", "pandas")

    def detect(self, model: Any) -> bool:
        return isinstance(model, PythonModel)

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
        cloudpickle = require("cloudpickle", "pyfunc")
        if not isinstance(model, PythonModel):
            raise InvalidInput(
                f"the pyfunc format saves modelyard.formats.PythonModel subclasses, "
                f"not a {type(model).__name__}"
            )
        artifacts: dict[str, str] = {}
        for name, source in (model.artifacts or {}).items():
            source_path = Path(source)
            if not source_path.exists():
                raise InvalidInput(f"artifact {name!r} does not exist: {source_path}")
            relative = f"{ARTIFACTS_DIR}/{name}"
            if source_path.is_dir():
                shutil.copytree(source_path, path / relative)
            else:
                (path / ARTIFACTS_DIR).mkdir(exist_ok=True)
                shutil.copyfile(source_path, path / relative)
            artifacts[name] = relative
        (path / MODEL_FILE).write_bytes(cloudpickle.dumps(model))
        return {
            **options,
            "class": f"{type(model).__module__}.{type(model).__qualname__}",
            "artifacts": artifacts,
        }

    def load(self, path: Path, manifest: Manifest, trusted: bool) -> Predictor:
        loader = manifest.options.get("loader_module")
        if loader is not None:
            # An MLflow PythonModel: its pickle imports mlflow, which modelyard never does
            raise InvalidModel(
                f"this is an MLflow python_function model ({loader}): unpickling "
                f"{model_file(manifest, MODEL_FILE)} needs the mlflow package, which modelyard "
                "does not load models with; serve it with MLflow, or log the model with a "
                "flavor modelyard loads (sklearn, xgboost, lightgbm, onnx or pytorch)"
            )
        if not trusted:
            author_class = manifest.options.get("class", "a PythonModel")
            raise UntrustedModel(
                f"this model is pickled Python code ({author_class}) and loading it runs that "
                f"code; {UntrustedModel.HOW_TO_TRUST}"
            )
        cloudpickle = require("cloudpickle", "pyfunc")
        with (path / MODEL_FILE).open("rb") as handle:
            model = cloudpickle.load(handle)
        artifacts = {
            name: path / rel for name, rel in manifest.options.get("artifacts", {}).items()
        }
        model.load_context(artifacts)
        return PyfuncPredictor(manifest, model)

    def validate(self, path: Path, manifest: Manifest) -> None:
        require("cloudpickle", "pyfunc")
        name = model_file(manifest, MODEL_FILE)
        file = path / name
        # Never unpickle here: that would run the author's code.
        if not file.is_file() or file.stat().st_size == 0:
            raise InvalidModel(f"{name} is missing or empty (expected a pickled PythonModel)")


class PyfuncPredictor(Predictor):
    """Passes the batch to ``PythonModel.predict`` and names its result's arrays."""

    def __init__(self, manifest: Manifest, model: PythonModel) -> None:
        super().__init__(manifest)
        self.model = model

    def predict(self, batch: Any) -> Outputs:
        if self.signature.kind == "columns":
            inputs: Any = self.as_frame(batch)
        elif isinstance(batch, Mapping) or len(self.signature.inputs) > 1:
            inputs = self.as_arrays(batch)
        else:
            inputs = self.as_array(batch)
        result = self.model.predict(inputs)
        if is_frame(result):
            return {str(c): result[c].to_numpy() for c in result.columns}
        if isinstance(result, Mapping):
            return {str(k): np.asarray(v) for k, v in result.items()}
        return {"predictions": np.asarray(result)}


FORMAT = PyfuncFormat()
