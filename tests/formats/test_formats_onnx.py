"""ONNX models: signature from the graph, onnxruntime round trip, invalid files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from modelyard.errors import InvalidModel
from modelyard.formats import (
    Manifest,
    detect_format,
    load_model,
    read_manifest,
    save_model,
    validate_model_dir,
)


@pytest.fixture
def converted(xy: tuple[np.ndarray, np.ndarray]) -> tuple[object, LogisticRegression]:
    x, y = xy
    model = LogisticRegression().fit(x, y)
    proto = to_onnx(
        model, x[:1].astype(np.float32), options={id(model): {"zipmap": False}}, target_opset=17
    )
    return proto, model


def test_signature_comes_from_the_graph(tmp_path: Path, converted: tuple[object, object]) -> None:
    proto, _ = converted
    assert detect_format(proto).name == "onnx"
    manifest = save_model(proto, tmp_path / "m")  # no input example needed
    signature = manifest.signature
    assert signature.kind == "tensor"
    assert [(s.name, s.dtype, s.shape) for s in signature.inputs] == [("X", "float32", [-1, 4])]
    assert [s.name for s in signature.outputs] == ["label", "probabilities"]
    assert signature.outputs[1].dtype == "float32"
    assert set(manifest.files) == {"model.onnx"}
    assert {"onnx", "onnxruntime"} <= set(manifest.framework_versions)


def test_round_trip_matches_sklearn(
    tmp_path: Path, converted: tuple[object, LogisticRegression], xy: tuple[np.ndarray, np.ndarray]
) -> None:
    proto, model = converted
    x, _ = xy
    save_model(proto, tmp_path / "m", input_example=x[:3])
    validate_model_dir(tmp_path / "m")
    predictor = load_model(tmp_path / "m")
    options = predictor.session.get_session_options()  # type: ignore[attr-defined]
    assert options.intra_op_num_threads == 1

    result = predictor.predict(x)  # float64 is cast to the graph's float32
    np.testing.assert_array_equal(result["label"], model.predict(x))
    np.testing.assert_allclose(result["probabilities"], model.predict_proba(x), atol=1e-5)
    listed = predictor.predict({"X": x[:2].tolist()})
    np.testing.assert_array_equal(listed["label"], model.predict(x[:2]))
    assert predictor.warm_up() >= 0


def test_bytes_and_paths_can_be_saved(tmp_path: Path, converted: tuple[object, object]) -> None:
    proto, _ = converted
    data = proto.SerializeToString()  # type: ignore[attr-defined]
    assert save_model(data, tmp_path / "from-bytes", format="onnx").format == "onnx"
    file = tmp_path / "model.onnx"
    file.write_bytes(data)
    assert save_model(file, tmp_path / "from-path").format == "onnx"


def test_text_file_as_onnx_is_invalid(tmp_path: Path, converted: tuple[object, object]) -> None:
    proto, _ = converted
    directory = tmp_path / "m"
    save_model(proto, directory)
    (directory / "model.onnx").write_text("this is not a protobuf\n")
    # Re-digest so that only the format check can notice.
    manifest = read_manifest(directory)
    manifest.files = Manifest.digest_files(directory)
    manifest.write(directory)
    with pytest.raises(InvalidModel, match=r"model\.onnx is not a valid ONNX model"):
        validate_model_dir(directory)
