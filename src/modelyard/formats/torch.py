"""PyTorch models, saved as TorchScript (a plain nn.Module is traced with the input example).

MLflow's pytorch flavor saves ``data/model.pth`` (``options["model_file"]``) with torch.save,
which pickles the module unless it was scripted (then it is a TorchScript archive), or
``data/model.pt2`` with torch.export (whose loading unpickles too). TorchScript loads freely;
the others only when trusted.
"""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import InvalidInput, InvalidModel, UntrustedModel
from modelyard.formats.base import Outputs, Predictor, model_file, require
from modelyard.formats.manifest import Manifest
from modelyard.formats.signature import Signature

MODEL_FILE = "model.pt"


def _to_tensors(torch: Any, batch: Any, signature: Signature) -> tuple[Any, ...]:
    """The batch as the positional tensors the module's forward takes, in signature order."""
    if isinstance(batch, torch.Tensor):
        return (batch,)
    if isinstance(batch, tuple | list) and batch and isinstance(batch[0], torch.Tensor):
        return tuple(batch)
    specs = signature.inputs
    if signature.kind == "columns":
        import pandas as pd

        frame = batch if isinstance(batch, pd.DataFrame) else pd.DataFrame(batch)
        # A table goes in as one [batch, columns] float tensor, the usual shape for an MLP.
        names = [spec.name for spec in specs] or list(frame.columns)
        return (torch.from_numpy(frame[names].to_numpy(dtype=np.float32)),)
    if isinstance(batch, Mapping):
        missing = [spec.name for spec in specs if spec.name not in batch]
        if missing:
            raise InvalidInput(f"the batch is missing input(s) {missing}")
        arrays = [np.asarray(batch[spec.name], dtype=spec.dtype) for spec in specs]
    else:
        if len(specs) > 1:
            raise InvalidInput(
                f"this model takes {len(specs)} inputs {[s.name for s in specs]}; "
                "send a dict of arrays"
            )
        dtype = specs[0].dtype if specs else None
        arrays = [np.asarray(batch, dtype=dtype)]
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)


class TorchFormat:
    """``torch.nn.Module`` (traced) and ``torch.jit.ScriptModule``, saved with torch.jit.save."""

    name = "torch"
    framework = "torch"
    extra = "torch"
    packages = ("torch", "numpy")

    def detect(self, model: Any) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(model, torch.nn.Module)

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
        torch = require("torch", "torch")
        traced = not isinstance(model, torch.jit.ScriptModule)
        if traced:
            # Tracing records the operations run on this example; without one, a batch built
            # from the signature has the right names, dtypes and shapes.
            example = input_example if input_example is not None else signature.example_batch(2)
            model.eval()
            with torch.no_grad():
                try:
                    model = torch.jit.trace(model, _to_tensors(torch, example, signature))
                except Exception as exc:
                    raise InvalidInput(
                        f"cannot trace the torch model on the input example ({exc}); pass a "
                        "torch.jit.script()-ed module instead"
                    ) from exc
        torch.jit.save(model, str(path / MODEL_FILE))
        return {**options, "traced": traced}

    def load(self, path: Path, manifest: Manifest, trusted: bool) -> Predictor:
        torch = require("torch", "torch")
        name = model_file(manifest, MODEL_FILE)
        file = path / name
        if manifest.options.get("serialization") and not _is_torchscript(file):
            return TorchPredictor(manifest, _load_pickled(torch, file, manifest, trusted), torch)
        # TorchScript is code in TorchScript's own language plus tensors; loading it does not
        # run arbitrary Python, so it needs no trust.
        try:
            module = torch.jit.load(str(file), map_location="cpu")
        except Exception as exc:
            raise InvalidModel(f"torch cannot load {name} as TorchScript: {exc}") from exc
        module.eval()
        return TorchPredictor(manifest, module, torch)

    def validate(self, path: Path, manifest: Manifest) -> None:
        require("torch", "torch")
        name = model_file(manifest, MODEL_FILE)
        file = path / name
        if manifest.options.get("serialization"):
            # MLflow's torch.save or torch.export file: checked when a trusted caller loads it
            if file.stat().st_size == 0:
                raise InvalidModel(f"{name} is empty (expected MLflow's saved PyTorch model)")
            return
        if not zipfile.is_zipfile(file):
            raise InvalidModel(f"{name} is not a TorchScript archive (expected a zip file)")
        if not _is_torchscript(file):
            raise InvalidModel(
                f"{name} is a zip file but not TorchScript (expected code/ and data.pkl; "
                "save modules with torch.jit.save, not torch.save)"
            )


def _is_torchscript(file: Path) -> bool:
    """Whether ``file`` is a TorchScript archive (read from its zip directory, not loaded)."""
    if not zipfile.is_zipfile(file):
        return False
    with zipfile.ZipFile(file) as archive:
        names = archive.namelist()
    return any("/code/" in n for n in names) and any(n.endswith("data.pkl") for n in names)


def _load_pickled(torch: Any, file: Path, manifest: Manifest, trusted: bool) -> Any:
    """MLflow's torch.save'd (pickled) or torch.export'ed module, only when ``trusted``."""
    exported = manifest.options.get("serialization") == "pt2"
    if not trusted:
        how = "torch.export archive" if exported else "pickled module (torch.save)"
        raise UntrustedModel(
            f"{file.name} is a {how} from MLflow's pytorch flavor and loading it runs code "
            f"from the file; {UntrustedModel.HOW_TO_TRUST}"
        )
    try:
        if exported:
            module = torch.export.load(str(file)).module()
        else:
            module = torch.load(str(file), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise InvalidModel(f"torch cannot load {file.name}: {type(exc).__name__}: {exc}") from exc
    if hasattr(module, "eval"):
        module.eval()
    return module


class TorchPredictor(Predictor):
    """A tensor output is "predictions"; tuples and dicts use the signature's output names."""

    def __init__(self, manifest: Manifest, module: Any, torch: Any) -> None:
        super().__init__(manifest)
        self.module = module
        self.torch = torch

    def predict(self, batch: Any) -> Outputs:
        tensors = _to_tensors(self.torch, batch, self.signature)
        with self.torch.inference_mode():
            result = self.module(*tensors)
        if isinstance(result, Mapping):
            return {str(k): _numpy(v) for k, v in result.items()}
        if isinstance(result, tuple | list):
            names = [spec.name for spec in self.signature.outputs]
            if len(names) != len(result):
                names = [f"output_{i}" for i in range(len(result))]
            return {name: _numpy(v) for name, v in zip(names, result, strict=True)}
        return {"predictions": _numpy(result)}


def _numpy(value: Any) -> Any:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


FORMAT = TorchFormat()
