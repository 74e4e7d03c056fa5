"""MLflow model directories as modelyard models (formats/mlflow.py and the formats' loaders
of MLflow's files), and modelyard versions exported as MLflow model directories.

The MLflow directories are saved by MLflow 3 itself (tests/mlflow/mlflow_models.py) in its
own virtualenv; an exported directory is loaded back by ``mlflow.pyfunc.load_model`` there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from tests.mlflow.conftest import mlflow3_python as mlflow3_python
from tests.mlflow.saved_models import batch, expected, predict_with_mlflow, saved_models

from modelyard.client import Client
from modelyard.errors import InvalidModel, UntrustedModel
from modelyard.formats import load_model, save_model
from modelyard.formats.mlflow import (
    MLMODEL,
    is_mlflow_dir,
    manifest_for_dir,
    mlflow_layout,
    signature_from_mlflow,
    signature_to_mlflow,
)
from modelyard.workspace import Workspace

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def mlflow_dirs(mlflow3_python: Path) -> Path:
    return saved_models(mlflow3_python)


def as_modelyard(src: Path, tmp_path: Path) -> Path:
    """A copy of the MLflow directory with the manifest modelyard derives for it."""
    target = tmp_path / src.name
    shutil.copytree(src, target)
    manifest_for_dir(src).write(target)
    return target


def close(got: Any, want: Any) -> None:
    np.testing.assert_allclose(
        np.asarray(got, dtype=float), np.asarray(want, dtype=float), rtol=1e-5
    )


# --- MLmodel -> manifest -> predictions ---------------------------------------------------

# (kind, format, model file, serialization, loads without trust)
FLAVORS = [
    ("sklearn-skops", "sklearn", "model.skops", "skops", True),
    ("sklearn-cloudpickle", "sklearn", "model.pkl", "cloudpickle", False),
    ("xgboost", "xgboost", "model.ubj", None, True),
    ("lightgbm", "lightgbm", "model.lgb", "text", True),
    ("onnx", "onnx", "model.onnx", None, True),
]


@pytest.mark.parametrize(("kind", "fmt", "file", "serialization", "free"), FLAVORS)
def test_each_flavor_predicts_what_mlflow_predicts(
    mlflow_dirs: Path,
    tmp_path: Path,
    kind: str,
    fmt: str,
    file: str,
    serialization: Any,
    free: bool,
) -> None:
    src = mlflow_dirs / kind
    assert is_mlflow_dir(src)
    manifest = manifest_for_dir(src)
    assert manifest.format == fmt
    assert manifest.options["model_file"] == file
    assert manifest.options.get("serialization") == serialization
    assert manifest.options["mlflow"]["flavor"] == kind.split("-")[0]
    assert MLMODEL in manifest.files and "requirements.txt" in manifest.files
    assert manifest.framework_versions["mlflow"] == "3.17.2"
    assert not any(r.startswith("mlflow") for r in manifest.requirements), manifest.requirements
    rows = batch(mlflow_dirs)
    want = expected(mlflow_dirs)[kind]
    if fmt == "onnx":
        # the graph's own names and dtypes: it is fed by them
        assert [(s.name, s.dtype) for s in manifest.signature.inputs] == [("x", "float32")]
        assert [s.name for s in manifest.signature.outputs] == ["score"]
        inputs: Any = rows.to_numpy(np.float32)
    else:
        assert manifest.signature.kind == "columns"
        assert [s.name for s in manifest.signature.inputs] == ["a", "b", "c"]
        inputs = rows
    path = as_modelyard(src, tmp_path)
    if not free:
        with pytest.raises(
            UntrustedModel, match=r"model\.pkl is a cloudpickled model .*--trust-pickled"
        ):
            load_model(path)
    outputs = load_model(path, trusted=not free).predict(inputs)
    assert len(outputs) == 1  # MLflow's pyfunc answers predict() alone
    close(next(iter(outputs.values())), want)


def test_the_same_files_give_the_same_manifest(mlflow_dirs: Path) -> None:
    a = manifest_for_dir(mlflow_dirs / "xgboost")
    b = manifest_for_dir(mlflow_dirs / "xgboost")
    assert a.model_dump_json() == b.model_dump_json()  # the digest a registration stores


def test_a_local_mlflow_directory_registers_loads_and_serves_its_files(
    mlflow_dirs: Path, workspace: Workspace, client: Client
) -> None:
    """Through the SDK, in-process and over HTTP (``client``'s two transports)."""
    src = mlflow_dirs / "sklearn-cloudpickle"
    before = sorted(p.name for p in src.iterdir())
    version = client.register_model(src, "churn", tags={"from": "mlflow"})
    assert version.format == "sklearn"
    assert set(version.manifest["files"]) == set(before)  # every MLflow file kept
    assert version.manifest["options"]["model_file"] == "model.pkl"
    with pytest.raises(UntrustedModel):
        client.load_model("models:/churn/1")
    got = client.load_model("models:/churn/1", trusted=True).predict(batch(mlflow_dirs))
    close(got["predictions"], expected(mlflow_dirs)["sklearn-cloudpickle"])
    assert sorted(p.name for p in src.iterdir()) == before  # nothing written into MLflow's dir
    # MLflow's client downloads the version's files: MLflow's own, as they were
    files = workspace.registry.mlflow_files(version)
    assert set(files) == set(before)
    assert files[MLMODEL].digest == version.manifest["files"][MLMODEL]["digest"]


def test_an_mlflow_python_model_registers_but_needs_mlflow_to_load(
    mlflow_dirs: Path, workspace: Workspace
) -> None:
    with Client(str(workspace.settings.resolved_home), settings=workspace.settings) as client:
        version = client.register_model(mlflow_dirs / "pyfunc", "custom")
        assert version.format == "pyfunc"
        for trusted in (False, True):
            with pytest.raises(InvalidModel, match=r"needs the mlflow package.*sklearn, xgboost"):
                client.load_model("models:/custom/1", trusted=trusted)


# --- what is not an MLflow model modelyard loads ------------------------------------------


def write_mlmodel(path: Path, document: dict[str, Any], **files: bytes) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / MLMODEL).write_text(yaml.safe_dump(document))
    for name, data in files.items():
        (path / name).write_bytes(data)
    return path


SIGNATURE = {
    "inputs": json.dumps([{"type": "double", "name": "a", "required": True}]),
    "outputs": json.dumps([{"type": "long", "required": True}]),
}


def test_a_directory_without_mlmodel_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("hello")
    with pytest.raises(InvalidModel, match="has no MLmodel file, so it is not an MLflow model"):
        manifest_for_dir(tmp_path / "run")
    # the run's root rather than the model's directory: say where MLmodel is
    write_mlmodel(tmp_path / "run" / "model", {"flavors": {}})
    with pytest.raises(InvalidModel, match=r"one level down, give .*run/model instead"):
        manifest_for_dir(tmp_path / "run")


def test_flavors_modelyard_does_not_load_are_named_with_the_ones_it_does(tmp_path: Path) -> None:
    path = write_mlmodel(
        tmp_path / "keras",
        {
            "flavors": {
                "keras": {"data": "data"},
                "python_function": {"loader_module": "mlflow.tensorflow"},
            },
            "signature": SIGNATURE,
        },
    )
    with pytest.raises(InvalidModel) as caught:
        manifest_for_dir(path)
    message = caught.value.detail
    assert "flavors keras, python_function (python_function through mlflow.tensorflow)" in message
    assert "modelyard loads onnx, sklearn, xgboost, lightgbm, pytorch" in message


def test_garbled_or_incomplete_mlmodels_are_refused_with_the_reason(
    mlflow_dirs: Path, tmp_path: Path
) -> None:
    garbled = tmp_path / "garbled"
    garbled.mkdir()
    (garbled / MLMODEL).write_text("flavors: [unclosed")
    with pytest.raises(InvalidModel, match="MLmodel is not valid YAML"):
        manifest_for_dir(garbled)
    with pytest.raises(InvalidModel, match="has no 'flavors' section"):
        manifest_for_dir(write_mlmodel(tmp_path / "noflavors", {"mlflow_version": "3.0"}))
    missing = write_mlmodel(
        tmp_path / "missing",
        {"flavors": {"sklearn": {"pickled_model": "model.pkl"}}, "signature": SIGNATURE},
    )
    with pytest.raises(InvalidModel, match=r"sklearn flavor names model\.pkl, which is not among"):
        manifest_for_dir(missing)
    with pytest.raises(InvalidModel, match="neither a signature nor an input example"):
        manifest_for_dir(mlflow_dirs / "sklearn-bare")
    odd = write_mlmodel(
        tmp_path / "odd",
        {
            "flavors": {"sklearn": {"pickled_model": "m.pkl", "serialization_format": "joblib"}},
            "signature": SIGNATURE,
        },
        **{"m.pkl": b"\x80\x04."},
    )
    with pytest.raises(InvalidModel, match="serialization_format 'joblib'"):
        manifest_for_dir(odd)


def test_mlflow_signatures_become_modelyard_signatures() -> None:
    columns = signature_from_mlflow(
        {
            "inputs": json.dumps(
                [
                    {"type": "double", "name": "amount", "required": True},
                    {"type": "string", "name": "country", "required": False},
                    {"type": "long", "name": "n"},
                    {"type": "boolean", "name": "new"},
                ]
            ),
            "outputs": json.dumps(
                [{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]
            ),
        }
    )
    assert columns.kind == "columns"
    assert [(s.name, s.dtype, s.optional) for s in columns.inputs] == [
        ("amount", "float64", False),
        ("country", "string", True),
        ("n", "int64", False),
        ("new", "bool", False),
    ]
    assert [(s.name, s.dtype) for s in columns.outputs] == [("predictions", "int64")]
    tensor = signature_from_mlflow(
        {
            "inputs": json.dumps(
                [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 28, 28]}}]
            )
        }
    )
    assert tensor.kind == "tensor"
    assert [(s.name, s.dtype, s.shape) for s in tensor.inputs] == [
        ("input", "float32", [-1, 28, 28])
    ]
    # and back: MLflow reads what modelyard writes
    assert json.loads(signature_to_mlflow(columns)["inputs"])[1] == {
        "type": "string",
        "name": "country",
        "required": False,
    }
    with pytest.raises(
        InvalidModel, match="has MLflow type 'datetime', which modelyard does not serve"
    ):
        signature_from_mlflow({"inputs": json.dumps([{"type": "datetime", "name": "when"}])})
    with pytest.raises(InvalidModel, match="mixes column and tensor inputs"):
        signature_from_mlflow(
            {
                "inputs": json.dumps(
                    [
                        {"type": "double", "name": "a"},
                        {"type": "tensor", "tensor-spec": {"dtype": "float32"}},
                    ]
                )
            }
        )


# --- MLflow's pytorch flavor (saved here: MLflow's virtualenv has no torch) ---------------


def test_mlflow_pytorch_files_load_scripted_freely_and_pickled_only_trusted(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")

    class Double(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return x * 2

    document = {
        "flavors": {
            "pytorch": {"model_data": "data", "pytorch_version": str(torch.__version__)},
            "python_function": {"loader_module": "mlflow.pytorch", "data": "data"},
        },
        "signature": {
            "inputs": json.dumps(
                [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 2]}}]
            )
        },
    }
    x = np.ones((3, 2), np.float32)
    for how in ("scripted", "pickled"):
        path = write_mlmodel(tmp_path / how, document)
        (path / "data").mkdir()
        if how == "scripted":
            scripted = torch.jit.trace(Double(), torch.ones(1, 2))
            torch.jit.save(scripted, str(path / "data" / "model.pth"))
        else:  # as MLflow saves it: torch.save with cloudpickle (a local class goes by value)
            import cloudpickle

            torch.save(Double(), str(path / "data" / "model.pth"), pickle_module=cloudpickle)
        manifest = manifest_for_dir(path)
        assert (manifest.format, manifest.options["model_file"]) == ("torch", "data/model.pth")
        manifest.write(path)
        if how == "pickled":
            with pytest.raises(
                UntrustedModel, match=r"model.pth is a pickled module \(torch.save\)"
            ):
                load_model(path)
        got = load_model(path, trusted=how == "pickled").predict(x)
        np.testing.assert_array_equal(got["predictions"], x * 2)


# --- a modelyard version -> an MLflow model directory -------------------------------------


def native_models(tmp_path: Path) -> dict[str, Path]:
    from sklearn.ensemble import RandomForestClassifier
    from xgboost import XGBRegressor

    rng = np.random.default_rng(5)
    X = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    y = (X.a - X.c > 0).astype(int)
    out = {}
    forest = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(X, y)
    out["sklearn"] = tmp_path / "native-sklearn"
    save_model(forest, out["sklearn"], input_example=X.head(5))
    out["xgboost"] = tmp_path / "native-xgboost"
    save_model(
        XGBRegressor(n_estimators=5).fit(X, y.astype(float)),
        out["xgboost"],
        input_example=X.head(5),
    )
    return out


def test_exported_versions_load_in_mlflow_and_predict_the_same(
    mlflow_dirs: Path,
    mlflow3_python: Path,
    workspace: Workspace,
    tmp_path: Path,
) -> None:
    rows = batch(mlflow_dirs)
    with Client(str(workspace.settings.resolved_home), settings=workspace.settings) as client:
        for fmt, path in native_models(tmp_path).items():
            version = client.register_model(path, f"native-{fmt}")
            target = client.export_model(version, tmp_path / f"export-{fmt}")
            mlmodel = yaml.safe_load((target / MLMODEL).read_text())
            assert fmt in mlmodel["flavors"] and "python_function" in mlmodel["flavors"]
            assert json.loads(mlmodel["signature"]["inputs"])[0]["name"] == "a"
            assert (target / "requirements.txt").read_text().strip()
            assert (target / "input_example.json").is_file()
            mine = client.load_model(version).predict(rows)["predictions"]
            theirs = predict_with_mlflow(mlflow3_python, target, mlflow_dirs / "batch.json")
            close(theirs, mine)
        # a version registered from MLflow exports as MLflow's files, unchanged
        version = client.register_model(mlflow_dirs / "onnx", "from-mlflow")
        target = client.export_model("models:/from-mlflow/1", tmp_path / "export-onnx")
        for file in (mlflow_dirs / "onnx").iterdir():
            assert (target / file.name).read_bytes() == file.read_bytes()
        assert not (target / "modelyard.json").exists()


def test_models_export_on_the_command_line(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LinearRegression

    X = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.0, 1.0, 0.0, 1.0]})
    save_model(LinearRegression().fit(X, [1.0, 2.0, 3.0, 4.0]), tmp_path / "lr", input_example=X)
    run("models", "register", "lr", str(tmp_path / "lr"))
    done = run("models", "export", "models:/lr/1", str(tmp_path / "out"))
    assert "exported lr v1 (sklearn)" in done.stdout
    assert (tmp_path / "out" / MLMODEL).is_file()
    refused = run("models", "export", "models:/lr/1", str(tmp_path / "out"), ok=False)
    assert refused.returncode != 0
    assert "exists and is not an empty directory" in refused.stderr
    refused = run(
        "models", "export", "models:/lr/1", str(tmp_path / "x"), "--format", "onnx", ok=False
    )
    assert "the export format is mlflow" in refused.stderr


def test_the_pyfunc_format_exports_through_modelyards_loader(tmp_path: Path) -> None:
    from modelyard.formats import PythonModel

    class Plus(PythonModel):
        def predict(self, inputs: Any) -> Any:
            return inputs["a"] + 1

    manifest = save_model(Plus(), tmp_path / "plus", input_example=pd.DataFrame({"a": [1.0, 2.0]}))
    raw = (tmp_path / "plus" / "modelyard.json").read_bytes()
    layout = mlflow_layout(manifest, raw)
    mlmodel = yaml.safe_load(layout.generated[MLMODEL])
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "modelyard.formats.mlflow"
    assert layout.files == {"modelyard/python_model.pkl": "python_model.pkl"}
    assert layout.generated["modelyard/modelyard.json"] == raw
    assert b"modelyard" in layout.generated["requirements.txt"]
    # what MLflow's loader hook does with it (pickled: only with trust, as everywhere)
    from modelyard.formats import mlflow as hook

    with pytest.raises(UntrustedModel):
        hook._load_pyfunc(str(tmp_path / "plus"))


def test_a_model_file_outside_the_listed_files_is_refused(
    mlflow_dirs: Path, tmp_path: Path
) -> None:
    path = as_modelyard(mlflow_dirs / "xgboost", tmp_path)
    manifest = manifest_for_dir(mlflow_dirs / "xgboost")
    manifest.options["model_file"] = "/etc/hostname"
    manifest.write(path)
    with pytest.raises(InvalidModel, match="names model_file '/etc/hostname', which is not among"):
        load_model(path)
