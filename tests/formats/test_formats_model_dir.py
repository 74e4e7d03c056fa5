"""Model directories: format choice, manifest checks, and what save_model refuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard.errors import InvalidInput, InvalidModel
from modelyard.formats import (
    MANIFEST_NAME,
    Signature,
    TensorSpec,
    available_formats,
    get_format,
    load_model,
    read_manifest,
    save_model,
    validate_model_dir,
)


@pytest.fixture
def saved(tmp_path: Path, xy: tuple[np.ndarray, np.ndarray]) -> Path:
    x, y = xy
    directory = tmp_path / "model"
    save_model(LogisticRegression().fit(x, y), directory, input_example=x[:5])
    return directory


def test_formats_are_listed_in_detection_order() -> None:
    assert available_formats() == ["pyfunc", "sklearn", "xgboost", "lightgbm", "onnx", "torch"]
    for name in available_formats():
        fmt = get_format(name)
        assert fmt.name == name
        assert fmt.framework and fmt.extra
    with pytest.raises(InvalidInput, match="available formats: pyfunc, sklearn"):
        get_format("caffe")


def test_importing_formats_imports_no_framework() -> None:
    code = (
        "import sys, modelyard.formats\n"
        "heavy = {'torch', 'xgboost', 'lightgbm', 'onnxruntime', 'onnx', 'sklearn', 'skops'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_unsupported_object_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no model format fits it") as caught:
        save_model({"weights": [1, 2]}, tmp_path / "m", input_example=np.ones((1, 2)))
    assert "pyfunc, sklearn, xgboost, lightgbm, onnx, torch" in caught.value.detail
    assert not (tmp_path / "m").exists()


def test_signature_or_example_is_required(
    tmp_path: Path, xy: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = xy
    model = LogisticRegression().fit(x, y)
    with pytest.raises(InvalidInput, match="give input_example="):
        save_model(model, tmp_path / "m")
    signature = Signature(
        kind="tensor", inputs=[TensorSpec(name="input", dtype="float64", shape=[-1, 4])]
    )
    manifest = save_model(model, tmp_path / "m", signature=signature)
    assert manifest.signature == signature
    np.testing.assert_array_equal(
        load_model(tmp_path / "m").predict(x)["predictions"], model.predict(x)
    )


def test_save_refuses_a_non_empty_directory(saved: Path, xy: tuple[np.ndarray, ...]) -> None:
    x, y = xy
    with pytest.raises(InvalidInput, match="not an empty directory"):
        save_model(LogisticRegression().fit(x, y), saved, input_example=x[:2])


def test_failed_save_leaves_nothing(tmp_path: Path, xy: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = xy
    model = LogisticRegression().fit(x, y)
    with pytest.raises(InvalidInput, match="failed on input_example"):
        save_model(model, tmp_path / "m", input_example=np.ones((2, 7)))
    assert list(tmp_path.iterdir()) == []


def test_tampered_file_is_invalid(saved: Path) -> None:
    data = bytearray((saved / "model.skops").read_bytes())
    data[-1] ^= 0xFF  # same size, different digest
    (saved / "model.skops").write_bytes(bytes(data))
    with pytest.raises(InvalidModel, match=r"model\.skops does not match its digest"):
        validate_model_dir(saved)
    with pytest.raises(InvalidModel, match=r"model\.skops"):
        load_model(saved)


def test_truncated_file_is_invalid(saved: Path) -> None:
    data = (saved / "model.skops").read_bytes()
    (saved / "model.skops").write_bytes(data[:-10])
    with pytest.raises(InvalidModel, match=r"model\.skops does not match its digest"):
        validate_model_dir(saved)


def test_missing_listed_file_is_invalid(saved: Path) -> None:
    (saved / "model.skops").unlink()
    with pytest.raises(InvalidModel, match=r"model\.skops is listed .* but missing"):
        validate_model_dir(saved)


def test_missing_manifest_is_invalid(saved: Path) -> None:
    (saved / MANIFEST_NAME).unlink()
    with pytest.raises(InvalidModel, match=r"has no modelyard\.json; save the model"):
        read_manifest(saved)
    with pytest.raises(InvalidModel, match=r"has no modelyard\.json"):
        load_model(saved)


def test_garbled_manifest_is_invalid(saved: Path) -> None:
    (saved / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(InvalidModel, match="not valid JSON"):
        read_manifest(saved)
    (saved / MANIFEST_NAME).write_text(json.dumps({"format": "sklearn"}))
    with pytest.raises(InvalidModel, match=r"not a valid manifest .*signature"):
        read_manifest(saved)


def test_unknown_format_in_manifest_is_invalid(saved: Path) -> None:
    document = json.loads((saved / MANIFEST_NAME).read_text())
    document["format"] = "caffe"
    (saved / MANIFEST_NAME).write_text(json.dumps(document))
    with pytest.raises(InvalidModel, match="unknown model format 'caffe'"):
        validate_model_dir(saved)


def test_unlisted_file_is_invalid(saved: Path) -> None:
    (saved / "sub").mkdir()
    (saved / "sub" / "payload.pkl").write_bytes(b"x")
    with pytest.raises(InvalidModel, match=r"not listed in modelyard\.json: sub/payload\.pkl"):
        validate_model_dir(saved)


def test_path_outside_the_directory_is_invalid(saved: Path) -> None:
    document = json.loads((saved / MANIFEST_NAME).read_text())
    document["files"]["../escape"] = {"digest": "sha256:00", "size": 1}
    (saved / MANIFEST_NAME).write_text(json.dumps(document))
    with pytest.raises(InvalidModel, match="outside the model directory"):
        validate_model_dir(saved)
