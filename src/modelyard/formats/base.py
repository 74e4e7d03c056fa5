"""The ModelFormat protocol, the Predictor it loads, and the registry of formats."""

from __future__ import annotations

import importlib
import pickle
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from modelyard.errors import InvalidInput, InvalidModel, MissingExtra, UntrustedModel
from modelyard.formats.manifest import Manifest
from modelyard.formats.signature import Signature, is_frame

if TYPE_CHECKING:
    import pandas as pd

Outputs = dict[str, NDArray[Any]]


class Predictor(ABC):
    """A loaded model, ready to predict.

    ``predict`` takes a DataFrame or dict of columns ("columns" signatures), or an array or
    dict of arrays ("tensor" signatures), and returns one array per output name.
    """

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.signature: Signature = manifest.signature

    @abstractmethod
    def predict(self, batch: Any) -> Outputs:
        """Run the model on a batch; keys are the signature's output names."""

    def warm_up(self, repeats: int = 3) -> float:
        """Run ``predict`` on an example batch a few times; return the seconds taken."""
        batch = self.signature.example_batch()
        start = time.perf_counter()
        for _ in range(repeats):
            self.predict(batch)
        return time.perf_counter() - start

    # Coercion shared by the formats: requests arrive as JSON-ish dicts of lists.

    def as_frame(self, batch: Any) -> pd.DataFrame:
        """The batch as a DataFrame, with the signature's columns in signature order."""
        import pandas as pd

        names = [spec.name for spec in self.signature.inputs]
        if isinstance(batch, pd.DataFrame):
            frame = batch
        elif isinstance(batch, Mapping):
            frame = pd.DataFrame({str(k): np.asarray(v).reshape(-1) for k, v in batch.items()})
        elif isinstance(batch, list) and batch and isinstance(batch[0], Mapping):
            frame = pd.DataFrame(batch)  # records
        else:
            array = np.asarray(batch)
            if array.ndim != 2 or (names and array.shape[1] != len(names)):
                raise InvalidInput(
                    f"expected a table with columns {names}; got an array of shape {array.shape}"
                )
            frame = pd.DataFrame(array, columns=names or None)
        if not names:
            return frame
        missing = [name for name in names if name not in frame.columns]
        if missing:
            raise InvalidInput(f"the batch is missing column(s) {missing}; expected {names}")
        return frame[names]

    def as_arrays(self, batch: Any) -> dict[str, NDArray[Any]]:
        """The batch as named arrays, cast to the signature's numeric dtypes."""
        specs = {spec.name: spec for spec in self.signature.inputs}
        arrays: dict[str, NDArray[Any]]
        if is_frame(batch):
            if len(specs) == 1 and next(iter(specs)) not in batch.columns:
                arrays = {next(iter(specs)): batch.to_numpy()}
            else:
                arrays = {str(c): batch[c].to_numpy() for c in batch.columns}
        elif isinstance(batch, Mapping):
            arrays = {str(k): np.asarray(v) for k, v in batch.items()}
        else:
            if len(specs) > 1:
                raise InvalidInput(
                    f"this model takes {len(specs)} inputs {list(specs)}; send a dict of arrays"
                )
            arrays = {next(iter(specs), "input"): np.asarray(batch)}
        missing = [name for name, spec in specs.items() if name not in arrays and not spec.optional]
        if missing:
            raise InvalidInput(f"the batch is missing input(s) {missing}; expected {list(specs)}")
        for name, array in arrays.items():
            spec = specs.get(name)
            if spec is None or spec.dtype == "string" or array.dtype.name == spec.dtype:
                continue
            try:
                arrays[name] = array.astype(spec.dtype)
            except (TypeError, ValueError) as exc:
                raise InvalidInput(
                    f"input {name!r} must be {spec.dtype}; cannot convert {array.dtype}: {exc}"
                ) from exc
        return arrays

    def as_array(self, batch: Any) -> NDArray[Any]:
        """The batch as one array: a "tensor" batch's single input, or a table's values."""
        if self.signature.kind == "columns":
            return self.as_frame(batch).to_numpy()
        arrays = self.as_arrays(batch)
        if len(arrays) != 1:
            raise InvalidInput(f"this model takes one array; got inputs {list(arrays)}")
        return next(iter(arrays.values()))


class ModelFormat(Protocol):
    """How one framework's models are detected, saved, validated and loaded."""

    name: str
    """The format name recorded in the manifest, e.g. "sklearn"."""
    framework: str
    """The main framework distribution, e.g. "scikit-learn"."""
    extra: str
    """The pip extra that installs the framework: ``pip install 'modelyard[<extra>]'``."""
    packages: tuple[str, ...]
    """Distributions whose installed versions are recorded and pinned in the manifest."""

    def detect(self, model: Any) -> bool:
        """Whether ``model`` is an in-memory model of this format (never imports a framework)."""
        ...

    def signature_of(self, model: Any) -> Signature | None:
        """The signature the model itself declares (an ONNX graph does), else None."""
        ...

    def save(
        self,
        model: Any,
        path: Path,
        signature: Signature,
        options: dict[str, Any],
        input_example: Any = None,
    ) -> dict[str, Any]:
        """Write the model's files into ``path``; return the options to record."""
        ...

    def load(self, path: Path, manifest: Manifest, trusted: bool) -> Predictor:
        """Load the files in ``path``; raise UntrustedModel if that needs ``trusted=True``."""
        ...

    def validate(self, path: Path, manifest: Manifest) -> None:
        """Check cheaply, executing nothing, that the files are this format (InvalidModel)."""
        ...


# Detection order matters: sklearn wrappers of xgboost/lightgbm are sklearn estimators too.
_FORMAT_MODULES: dict[str, str] = {
    "pyfunc": "modelyard.formats.pyfunc",
    "sklearn": "modelyard.formats.sklearn",
    "xgboost": "modelyard.formats.xgboost",
    "lightgbm": "modelyard.formats.lightgbm",
    "onnx": "modelyard.formats.onnx",
    "torch": "modelyard.formats.torch",
}


def available_formats() -> list[str]:
    """The names of all formats, in detection order."""
    return list(_FORMAT_MODULES)


def get_format(name: str) -> ModelFormat:
    """The format called ``name``; InvalidInput if there is none."""
    module = _FORMAT_MODULES.get(name)
    if module is None:
        raise InvalidInput(
            f"unknown model format {name!r}; available formats: {', '.join(_FORMAT_MODULES)}"
        )
    # Format modules are cheap to import: each imports its framework only when used.
    fmt: ModelFormat = importlib.import_module(module).FORMAT
    return fmt


def detect_format(model: Any) -> ModelFormat:
    """The first format whose ``detect`` accepts ``model``; InvalidInput if none does."""
    for name in _FORMAT_MODULES:
        fmt = get_format(name)
        if fmt.detect(model):
            return fmt
    raise InvalidInput(
        f"cannot save a {type(model).__module__}.{type(model).__qualname__}: no model format "
        f"fits it (available formats: {', '.join(_FORMAT_MODULES)}); pass format=..., or wrap "
        "it in a modelyard.formats.PythonModel subclass"
    )


def require(module: str, extra: str) -> Any:
    """Import a framework on first use; :class:`MissingExtra` names the extra to install.

    Frameworks are imported lazily so that ``import modelyard`` stays light.
    """
    try:
        return importlib.import_module(module)
    except (ImportError, OSError) as exc:  # OSError: an install missing its native libraries
        raise MissingExtra(module.partition(".")[0], extra) from exc


# MLflow's flavors keep their files under their own names, some pickled


def model_file(manifest: Manifest, default: str) -> str:
    """The model's file: ``options["model_file"]`` (MLflow's name for it), else ``default``;
    one of the files the manifest lists (so checked to stay inside the model's directory)."""
    name = manifest.options.get("model_file")
    if name is None:
        return default
    if not isinstance(name, str) or name not in manifest.files:
        raise InvalidModel(
            f"modelyard.json names model_file {name!r}, which is not among the files it "
            "lists; save or register the model again"
        )
    return name


def load_pickle(file: Path, manifest: Manifest, trusted: bool) -> Any:
    """Unpickle an MLflow flavor's pickled model, only when ``trusted``."""
    if not trusted:
        flavor = (manifest.options.get("mlflow") or {}).get("flavor", manifest.format)
        how = manifest.options.get("serialization", "pickle")
        raise UntrustedModel(
            f"{file.name} is a {how}d model (MLflow's {flavor} flavor) and loading it runs "
            f"code from the file; {UntrustedModel.HOW_TO_TRUST}"
        )
    try:
        with file.open("rb") as handle:
            return pickle.load(handle)  # only here: the caller trusts the file
    except ModuleNotFoundError as exc:
        raise InvalidModel(
            f"{file.name} needs the Python module {exc.name!r}, which is not installed here; "
            "install what the model's requirements.txt lists"
        ) from exc
    except Exception as exc:
        raise InvalidModel(f"cannot unpickle {file.name}: {type(exc).__name__}: {exc}") from exc


def check_pickle(file: Path) -> None:
    """Check, without unpickling, that ``file`` starts like a pickle (protocol 2 or later)."""
    with file.open("rb") as handle:
        head = handle.read(2)
    if len(head) < 2 or head[0] != 0x80:
        raise InvalidModel(f"{file.name} is not a pickle (expected pickle protocol 2 or later)")
