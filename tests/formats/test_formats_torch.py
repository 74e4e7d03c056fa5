"""PyTorch models saved as TorchScript."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelyard.errors import InvalidModel, MissingExtra
from modelyard.formats import Manifest, load_model, read_manifest, save_model, validate_model_dir

torch = pytest.importorskip("torch")

# torch 2.13 deprecates TorchScript (in favour of torch.export); the format still uses it.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")


class TwoInputs(torch.nn.Module):  # type: ignore[name-defined]
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 1)

    # TorchScript compiles from these annotations, so they must be torch.Tensor.
    def forward(self, features: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:  # type: ignore[name-defined]
        return self.linear(features).squeeze(-1) + offset


def _mlp() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def test_plain_module_is_traced(tmp_path: Path, xy: tuple[np.ndarray, np.ndarray]) -> None:
    x = xy[0].astype(np.float32)
    model = _mlp()
    manifest = save_model(model, tmp_path / "m", input_example=x[:5])
    assert manifest.format == "torch"
    assert manifest.options["traced"] is True
    assert manifest.signature.outputs[0].name == "predictions"
    assert manifest.signature.outputs[0].shape == [-1, 2]
    assert any(r.startswith("torch==") and "+" not in r for r in manifest.requirements)

    validate_model_dir(tmp_path / "m")
    predictor = load_model(tmp_path / "m")
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(predictor.predict(x)["predictions"], expected, rtol=1e-5)
    # A JSON-ish list of float64 rows is cast to the signature's float32.
    listed = predictor.predict(x[:2].astype(np.float64).tolist())["predictions"]
    np.testing.assert_allclose(listed, expected[:2], rtol=1e-5)
    assert predictor.warm_up() >= 0


def test_scripted_module_with_two_inputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.jit.script(TwoInputs())
    example = {
        "features": np.ones((4, 3), dtype=np.float32),
        "offset": np.arange(4, dtype=np.float32),
    }
    manifest = save_model(model, tmp_path / "m", input_example=example)
    assert manifest.options["traced"] is False
    assert [s.name for s in manifest.signature.inputs] == ["features", "offset"]

    result = load_model(tmp_path / "m").predict(example)["predictions"]
    with torch.no_grad():
        expected = model(torch.ones(4, 3), torch.arange(4.0)).numpy()
    np.testing.assert_allclose(result, expected, rtol=1e-6)


def test_torch_save_pickle_is_not_torchscript(tmp_path: Path) -> None:
    directory = tmp_path / "m"
    save_model(_mlp(), directory, input_example=np.zeros((2, 4), dtype=np.float32))
    torch.save(_mlp().state_dict(), directory / "model.pt")  # a pickle zip, no code/
    assert zipfile.is_zipfile(directory / "model.pt")
    manifest = read_manifest(directory)
    manifest.files = Manifest.digest_files(directory)
    manifest.write(directory)
    with pytest.raises(InvalidModel, match=r"model\.pt is a zip file but not TorchScript"):
        validate_model_dir(directory)


def test_missing_torch_raises_missing_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_model(_mlp(), tmp_path / "m", input_example=np.zeros((2, 4), dtype=np.float32))
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingExtra, match=r"modelyard\[torch\]"):
        load_model(tmp_path / "m")
