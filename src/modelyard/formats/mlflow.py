"""MLflow model directories as modelyard models, and modelyard models as MLflow directories.

An MLflow model directory holds ``MLmodel`` (YAML: the flavors, the signature, the input
example) beside the flavor's files. Registered in modelyard it keeps every one of its files,
so MLflow's client can download and load it again, and gains a manifest derived from MLmodel
(:func:`mlflow_manifest`): the format from the flavors, the framework versions, the
signature, the requirements, and options naming MLflow's file. The formats then load
MLflow's files under MLflow's names, pickled ones only when trusted.

The other way, :func:`mlflow_layout` says which files make a modelyard version an MLflow model
directory (``mlflow.pyfunc.load_model`` loads it): the version's own files under the names
MLflow's flavor expects, plus a generated MLmodel, requirements and input example.

MLflow itself is never imported: everything here reads and writes its file formats.
"""

from __future__ import annotations

import json
import platform
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import yaml

from modelyard.errors import InvalidInput, InvalidModel, MissingExtra
from modelyard.formats.manifest import MANIFEST_NAME, FileEntry, Manifest
from modelyard.formats.signature import Signature, TensorSpec, infer_signature

MLMODEL = "MLmodel"
REQUIREMENTS = "requirements.txt"
#: Flavors modelyard loads, in the order one is chosen when MLmodel lists several.
FLAVORS = ("onnx", "sklearn", "xgboost", "lightgbm", "pytorch", "python_function")
#: The loader of MLflow's custom Python models (``mlflow.pyfunc.PythonModel`` subclasses).
PYTHON_MODEL_LOADER = "mlflow.pyfunc.model"
#: MLflow's loader hook for a modelyard model directory (see :func:`_load_pyfunc`).
MODELYARD_LOADER = "modelyard.formats.mlflow"
SUPPORTED = (
    "onnx, sklearn, xgboost, lightgbm, pytorch, and python_function models written as an "
    "mlflow.pyfunc.PythonModel"
)
_PICKLES = ("pickle", "cloudpickle")

# MLflow's column types (mlflow/types/schema.py DataType) and modelyard's dtypes.
_COLUMN_DTYPES = {
    "double": "float64",
    "float": "float32",
    "long": "int64",
    "integer": "int32",
    "boolean": "bool",
    "string": "string",
}
_MLFLOW_TYPES = {dtype: kind for kind, dtype in _COLUMN_DTYPES.items()}


#: libyaml's safe loader when PyYAML was built with it: MLmodel is read at every registration,
#: and the pure-Python one took a quarter of its time.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def is_mlflow_dir(path: Path | str) -> bool:
    """Whether ``path`` is an MLflow model directory (MLmodel, no modelyard.json)."""
    root = Path(path)
    return (root / MLMODEL).is_file() and not (root / MANIFEST_NAME).exists()


def read_mlmodel(data: bytes, where: str) -> dict[str, Any]:
    """MLmodel's YAML as a dict; InvalidModel naming ``where`` if it is not MLflow's MLmodel."""
    try:
        document = yaml.load(data, Loader=_SAFE_LOADER)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidModel(f"{where}/MLmodel is not valid YAML: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("flavors"), dict):
        raise InvalidModel(
            f"{where}/MLmodel has no 'flavors' section; it is not an MLflow model's MLmodel"
        )
    # YAML's own types (dates, !!binary bytes, sets) as text: what is kept of MLmodel goes
    # into the manifest's JSON
    try:
        plain: dict[str, Any] = json.loads(json.dumps(document, default=str))
    except (TypeError, ValueError) as exc:
        raise InvalidModel(f"{where}/MLmodel holds something JSON cannot: {exc}") from None
    return plain


# --- MLflow's files -> a manifest -------------------------------------------------------


@dataclass
class _Flavor:
    """What one flavor of MLmodel says about loading the model in modelyard."""

    format: str
    framework: str
    model_file: str
    options: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


def _text(conf: Mapping[str, Any], key: str, default: str = "") -> str:
    value = conf.get(key)
    return default if value is None else str(value)


def _sklearn(conf: Mapping[str, Any]) -> _Flavor:
    serialization = _text(conf, "serialization_format", "cloudpickle")
    if serialization not in ("skops", *_PICKLES):
        raise InvalidModel(
            f"MLmodel's sklearn flavor has serialization_format {serialization!r}; "
            "modelyard reads skops, pickle and cloudpickle"
        )
    return _Flavor(
        "sklearn",
        "scikit-learn",
        _text(conf, "pickled_model", "model.pkl"),
        # MLflow's pyfunc answers predict() alone: the same outputs whoever serves it
        {"serialization": serialization, "probabilities": False},
        {"scikit-learn": _text(conf, "sklearn_version")},
    )


def _xgboost(conf: Mapping[str, Any]) -> _Flavor:
    from modelyard.formats.xgboost import CLASSES

    model_class = _text(conf, "model_class", "xgboost.core.Booster")
    class_name = model_class.rsplit(".", 1)[-1]
    if not model_class.startswith("xgboost.") or class_name not in CLASSES:
        raise InvalidModel(
            f"MLmodel's xgboost flavor names model_class {model_class!r}; modelyard loads "
            f"xgboost's {', '.join(CLASSES)}"
        )
    return _Flavor(
        "xgboost",
        "xgboost",
        _text(conf, "data", "model.xgb"),
        {"class": class_name, "probabilities": False},
        {"xgboost": _text(conf, "xgb_version")},
    )


def _lightgbm(conf: Mapping[str, Any]) -> _Flavor:
    model_class = _text(conf, "model_class", "lightgbm.basic.Booster")
    if not model_class.startswith("lightgbm."):
        raise InvalidModel(f"MLmodel's lightgbm flavor names model_class {model_class!r}")
    booster = model_class == "lightgbm.basic.Booster"
    serialization = "text" if booster else _text(conf, "serialization_format", "cloudpickle")
    if serialization not in ("text", "skops", *_PICKLES):
        raise InvalidModel(
            f"MLmodel's lightgbm flavor has serialization_format {serialization!r}; "
            "modelyard reads LightGBM's text format, skops, pickle and cloudpickle"
        )
    return _Flavor(
        "lightgbm",
        "lightgbm",
        _text(conf, "data", "model.lgb"),
        {"class": model_class.rsplit(".", 1)[-1], "serialization": serialization},
        {"lightgbm": _text(conf, "lgb_version")},
    )


def _onnx(conf: Mapping[str, Any]) -> _Flavor:
    return _Flavor(
        "onnx", "onnx", _text(conf, "data", "model.onnx"), {}, {"onnx": _text(conf, "onnx_version")}
    )


def _pytorch(conf: Mapping[str, Any], files: Mapping[str, FileEntry]) -> _Flavor:
    data = _text(conf, "model_data", "data").strip("/")
    exported = f"{data}/model.pt2"
    if exported in files:
        model_file, serialization = exported, "pt2"
    else:
        # torch.save's pickle, or a TorchScript archive (a scripted module): the loader
        # tells them apart by the archive's contents
        model_file, serialization = f"{data}/model.pth", "torch.save"
    return _Flavor(
        "torch",
        "torch",
        model_file,
        {"serialization": serialization},
        {"torch": _text(conf, "pytorch_version")},
    )


def _python_function(conf: Mapping[str, Any]) -> _Flavor:
    return _Flavor(
        "pyfunc",
        "python",
        _text(conf, "python_model", "python_model.pkl"),
        {"loader_module": PYTHON_MODEL_LOADER, "artifacts": conf.get("artifacts") or {}},
        {"cloudpickle": _text(conf, "cloudpickle_version")},
    )


def _choose_flavor(
    flavors: Mapping[str, Any], files: Mapping[str, FileEntry], where: str
) -> tuple[str, _Flavor]:
    for name in FLAVORS:
        conf = flavors.get(name)
        if not isinstance(conf, Mapping):
            continue
        if name == "python_function":
            if conf.get("loader_module") != PYTHON_MODEL_LOADER:
                continue  # the pyfunc face of a flavor modelyard does not load
            return name, _python_function(conf)
        if name == "pytorch":
            return name, _pytorch(conf, files)
        reader: Callable[[Mapping[str, Any]], _Flavor] = {
            "onnx": _onnx,
            "sklearn": _sklearn,
            "xgboost": _xgboost,
            "lightgbm": _lightgbm,
        }[name]
        return name, reader(conf)
    listed = ", ".join(sorted(flavors)) or "none"
    pyfunc = flavors.get("python_function")
    loader = pyfunc.get("loader_module") if isinstance(pyfunc, Mapping) else None
    through = f" (python_function through {loader})" if loader else ""
    raise InvalidModel(
        f"{where}/MLmodel has flavors {listed}{through}, none of which modelyard loads; "
        f"modelyard loads {SUPPORTED}"
    )


def mlflow_manifest(
    files: Mapping[str, FileEntry], read: Callable[[str], bytes], where: str
) -> Manifest:
    """The manifest of an MLflow model directory whose files are ``files`` (relative path ->
    digest and size), read with ``read(path)``; ``where`` names it in error messages.

    The format is the first flavor of :data:`FLAVORS` the model has; the signature is an ONNX
    graph's own, else MLmodel's signature, else its input example's. InvalidModel says what
    is missing or not loadable.
    """
    listed = {path: entry for path, entry in files.items() if path != MANIFEST_NAME}
    if MLMODEL not in listed:
        nested = sorted(p for p in listed if PurePosixPath(p).name == MLMODEL)
        hint = (
            f"; it is one level down, give {where}/{PurePosixPath(nested[0]).parent} instead"
            if nested
            else ": give the directory MLflow's save_model or log_model wrote (the one holding "
            "MLmodel)"
        )
        raise InvalidModel(f"{where} has no MLmodel file, so it is not an MLflow model{hint}")
    mlmodel = read_mlmodel(read(MLMODEL), where)
    flavor_name, flavor = _choose_flavor(mlmodel["flavors"], listed, where)
    if flavor.model_file not in listed:
        raise InvalidModel(
            f"{where}/MLmodel's {flavor_name} flavor names {flavor.model_file}, which is not "
            "among the model's files; upload the whole MLflow model directory"
        )
    pyfunc = mlmodel["flavors"].get("python_function")
    pyfunc = pyfunc if isinstance(pyfunc, Mapping) else {}
    versions = {k: v for k, v in flavor.versions.items() if v}
    if pyfunc.get("python_version"):
        versions["python"] = str(pyfunc["python_version"])
    if mlmodel.get("mlflow_version"):
        versions["mlflow"] = str(mlmodel["mlflow_version"])
    options = {
        **flavor.options,
        "model_file": flavor.model_file,
        "mlflow": {
            "flavor": flavor_name,
            "flavors": sorted(mlmodel["flavors"]),
            "mlflow_version": mlmodel.get("mlflow_version"),
            "model_uuid": mlmodel.get("model_uuid"),
            "model_id": mlmodel.get("model_id"),
            "run_id": mlmodel.get("run_id"),
        },
    }
    return Manifest(
        format=flavor.format,
        framework=flavor.framework,
        framework_versions=versions,
        signature=_signature(mlmodel, flavor, listed, read, where),
        requirements=_requirements(listed, read, keep_mlflow=flavor.format == "pyfunc"),
        files=dict(sorted(listed.items())),
        options=options,
        created_at=_created_at(mlmodel),
    )


def manifest_for_dir(path: Path | str) -> Manifest:
    """The manifest of the local MLflow model directory ``path`` (see :func:`mlflow_manifest`)."""
    root = Path(path)
    if not root.is_dir():
        raise InvalidInput(f"{root} is not a directory; give the MLflow model's directory")
    return mlflow_manifest(
        Manifest.digest_files(root), lambda rel: (root / rel).read_bytes(), str(root)
    )


def _created_at(mlmodel: Mapping[str, Any]) -> str:
    # MLflow's own time, so the same files always give the same manifest (and digest)
    text = str(mlmodel.get("utc_time_created") or "")
    try:
        when = datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError:
        when = datetime.now(UTC)
    return when.isoformat(timespec="seconds")


def _requirements(
    files: Mapping[str, FileEntry], read: Callable[[str], bytes], *, keep_mlflow: bool
) -> list[str]:
    if REQUIREMENTS not in files:
        return []
    wanted = []
    for raw in read(REQUIREMENTS).decode("utf-8", errors="replace").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        package = line.split(";")[0].split("[")[0]
        for mark in "=<>!~ ":
            package = package.split(mark)[0]
        # modelyard loads the flavor's files itself: MLflow is a requirement of MLflow's loader
        if not keep_mlflow and package.lower() in ("mlflow", "mlflow-skinny"):
            continue
        wanted.append(line)
    return wanted


def _signature(
    mlmodel: Mapping[str, Any],
    flavor: _Flavor,
    files: Mapping[str, FileEntry],
    read: Callable[[str], bytes],
    where: str,
) -> Signature:
    if flavor.format == "onnx":
        # the graph's names are the ones onnxruntime is fed by; MLflow's spec may have none
        from modelyard.formats.onnx import FORMAT as ONNX

        try:
            graph = ONNX.signature_of(read(flavor.model_file))
        except (InvalidInput, MissingExtra):
            graph = None
        if graph is not None:
            return graph
    document = mlmodel.get("signature")
    if isinstance(document, Mapping) and document.get("inputs"):
        return signature_from_mlflow(document, where)
    example = _input_example(mlmodel, files, read, where)
    if example is not None:
        try:
            return infer_signature(example)
        except (TypeError, ValueError) as exc:
            raise InvalidModel(
                f"{where}: no signature can be inferred from its input example ({exc}); log "
                "the model again with signature="
            ) from None
    raise InvalidModel(
        f"{where}/MLmodel has neither a signature nor an input example, so modelyard cannot "
        "check requests for it; log the model again with input_example= (or signature=)"
    )


def _input_example(
    mlmodel: Mapping[str, Any],
    files: Mapping[str, FileEntry],
    read: Callable[[str], bytes],
    where: str,
) -> Any:
    info = mlmodel.get("saved_input_example_info")
    if not isinstance(info, Mapping):
        return None
    path = str(info.get("artifact_path") or "input_example.json")
    if path not in files:
        return None
    try:
        data = json.loads(read(path))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidModel(f"{where}/{path} is not valid JSON: {exc}") from None
    if isinstance(data, Mapping) and info.get("params") is not None and "inputs" in data:
        data = data["inputs"]  # an example with params: {"inputs": ..., "params": ...}
    kind = info.get("type")
    try:
        return _example_batch(data, kind)
    except (TypeError, ValueError) as exc:  # ragged rows, columns that do not fit the data
        raise InvalidModel(f"{where}/{path} is not a {kind} input example: {exc}") from None


def _example_batch(data: Any, kind: Any) -> Any:
    """MLflow's saved input example (its JSON, of type ``kind``) as a batch, if it reads."""
    if kind == "dataframe":
        import pandas as pd

        if isinstance(data, Mapping) and "data" in data:  # pandas' split orient
            return pd.DataFrame(data["data"], columns=data.get("columns"))
        if isinstance(data, list) and data and isinstance(data[0], Mapping):  # records
            return pd.DataFrame(data)
        return None
    if kind == "ndarray":
        if isinstance(data, Mapping):
            inner = data.get("inputs", data)
            if isinstance(inner, Mapping):
                return {str(k): np.asarray(v) for k, v in inner.items()}
            return np.asarray(inner)
        return np.asarray(data)
    if kind == "json_object" and isinstance(data, Mapping):
        return dict(data)
    return None


def _spec_list(value: Any, what: str, where: str) -> list[Mapping[str, Any]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise InvalidModel(f"{where}/MLmodel's signature {what} is not valid JSON") from None
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise InvalidModel(f"{where}/MLmodel's signature {what} is not a list of specs")
    return value


def signature_from_mlflow(document: Mapping[str, Any], where: str = "the model") -> Signature:
    """A Signature from MLmodel's ``signature`` (column or tensor specs, as JSON strings)."""
    inputs = _spec_list(document.get("inputs"), "inputs", where)
    tensor = [spec.get("type") == "tensor" for spec in inputs]
    if any(tensor) and not all(tensor):
        raise InvalidModel(f"{where}/MLmodel's signature mixes column and tensor inputs")
    outputs_raw = document.get("outputs")
    outputs = _spec_list(outputs_raw, "outputs", where) if outputs_raw else []
    default_in = "input" if len(inputs) == 1 else None
    default_out = "predictions" if len(outputs) == 1 else None
    return Signature(
        kind="tensor" if all(tensor) else "columns",
        inputs=[_spec(s, i, default_in, "input", where) for i, s in enumerate(inputs)],
        outputs=[_spec(s, i, default_out, "output", where) for i, s in enumerate(outputs)],
    )


def _spec(
    spec: Mapping[str, Any], index: int, default: str | None, role: str, where: str
) -> TensorSpec:
    name = str(spec.get("name") or default or f"{role}_{index}")
    optional = spec.get("required") is False
    if spec.get("type") == "tensor":
        tensor = spec.get("tensor-spec") or {}
        if not isinstance(tensor, Mapping):
            raise InvalidModel(
                f"{where}/MLmodel: {role} {name!r} has a tensor-spec that is no object"
            )
        raw = str(tensor.get("dtype", "float64"))
        try:
            dtype = np.dtype(raw)
        except TypeError:
            raise InvalidModel(
                f"{where}/MLmodel: {role} {name!r} has tensor dtype {raw!r}"
            ) from None
        text = "string" if dtype.kind in "OUS" else dtype.name
        shape = tensor.get("shape") or [-1]
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) for d in shape
        ):
            raise InvalidModel(
                f"{where}/MLmodel: {role} {name!r} has shape {shape!r}; a shape is a list of "
                "integers (-1: any size)"
            )
        return TensorSpec(name=name, dtype=text, shape=shape, optional=optional)
    kind = str(spec.get("type"))
    if kind not in _COLUMN_DTYPES:
        raise InvalidModel(
            f"{where}/MLmodel: {role} {name!r} has MLflow type {kind!r}, which modelyard does "
            f"not serve; column types it serves: {', '.join(_COLUMN_DTYPES)}"
        )
    return TensorSpec(name=name, dtype=_COLUMN_DTYPES[kind], shape=[-1], optional=optional)


# --- a modelyard version -> an MLflow model directory -------------------------------------


@dataclass(frozen=True)
class MlflowLayout:
    """An MLflow model directory made of a version's files.

    ``files`` maps each path of the directory to the version's file it is (the same bytes);
    ``generated`` holds the files made for MLflow (MLmodel, requirements, input example).
    """

    files: dict[str, str]
    generated: dict[str, bytes]

    def paths(self) -> list[str]:
        return sorted({*self.files, *self.generated})


def _mlflow_column_type(dtype: str) -> str:
    if dtype in _MLFLOW_TYPES:
        return _MLFLOW_TYPES[dtype]
    kind = np.dtype(dtype).kind
    return "long" if kind in "iu" else "double" if kind == "f" else "string"


def signature_to_mlflow(
    signature: Signature, outputs: list[TensorSpec] | None = None
) -> dict[str, Any]:
    """MLmodel's ``signature`` for a Signature (``outputs``: only these of its outputs)."""
    if signature.kind == "columns":
        inputs = [
            {"type": _mlflow_column_type(s.dtype), "name": s.name, "required": not s.optional}
            for s in signature.inputs
        ]
    else:
        inputs = [_tensor_doc(s) for s in signature.inputs]
    chosen = signature.outputs if outputs is None else outputs
    return {
        "inputs": json.dumps(inputs),
        "outputs": json.dumps([_tensor_doc(s) for s in chosen]) if chosen else None,
        "params": None,
    }


def _tensor_doc(spec: TensorSpec) -> dict[str, Any]:
    dtype = "object" if spec.dtype == "string" else spec.dtype
    return {
        "type": "tensor",
        "tensor-spec": {"dtype": dtype, "shape": spec.shape},
        "name": spec.name,
    }


def _example(signature: Signature) -> tuple[dict[str, Any], Any]:
    """MLmodel's saved_input_example_info and the example's JSON, built from the signature
    (modelyard keeps a signature, not the example rows)."""
    batch = signature.example_batch(2)
    info: dict[str, Any] = {"artifact_path": "input_example.json"}
    if signature.kind == "columns":
        frame: Any = batch
        info.update(type="dataframe", pandas_orient="split")
        return info, {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}
    info["type"] = "ndarray"
    if isinstance(batch, dict):
        return info, {k: np.asarray(v).tolist() for k, v in batch.items()}
    return info, np.asarray(batch).tolist()


def _modelyard_version() -> str:
    try:
        return version("modelyard")
    except PackageNotFoundError:
        return ""


def _predictions(signature: Signature) -> list[TensorSpec]:
    return [s for s in signature.outputs if s.name == "predictions"]


def mlflow_layout(manifest: Manifest, manifest_json: bytes | None = None) -> MlflowLayout:
    """The MLflow model directory made of the files of a version with ``manifest``.

    A version registered from MLflow's files is them, as they were. Otherwise the format's
    MLflow flavor describes the version's own files (sklearn via skops, xgboost, lightgbm,
    onnx, TorchScript as pytorch); a pyfunc model is loaded through modelyard itself
    (``loader_module: modelyard.formats.mlflow``, modelyard installed where MLflow loads it),
    which needs ``manifest_json``, the version's modelyard.json.
    """
    if MLMODEL in manifest.files:
        return MlflowLayout({p: p for p in manifest.files}, {})
    options = manifest.options
    python = manifest.framework_versions.get("python") or platform.python_version()
    env = {"conda": "conda.yaml", "virtualenv": "python_env.yaml"}
    pyfunc: dict[str, Any] = {"env": env, "python_version": python}
    model_file = str(options.get("model_file") or "")
    files = {p: p for p in manifest.files}
    generated: dict[str, bytes] = {}
    outputs = _predictions(manifest.signature)
    requirements = list(manifest.requirements)
    fmt = manifest.format
    versions = manifest.framework_versions
    flavors: dict[str, Any]
    if fmt == "sklearn" and options.get("serialization", "skops") == "skops":
        name = model_file or "model.skops"
        flavors = {
            "sklearn": {
                "code": None,
                "pickled_model": name,
                "serialization_format": "skops",
                "sklearn_version": versions.get("scikit-learn"),
                "skops_trusted_types": list(options.get("untrusted_types") or []),
            },
            "python_function": {
                **pyfunc,
                "loader_module": "mlflow.sklearn",
                "model_path": name,
                "predict_fn": "predict",
            },
        }
    elif fmt == "xgboost":
        name = model_file or "model.json"
        cls = str(options.get("class", "Booster"))
        flavors = {
            "xgboost": {
                "code": None,
                "data": name,
                "model_class": "xgboost.core.Booster"
                if cls == "Booster"
                else f"xgboost.sklearn.{cls}",
                "model_format": PurePosixPath(name).suffix.lstrip(".") or "json",
                "xgb_version": versions.get("xgboost"),
            },
            "python_function": {**pyfunc, "loader_module": "mlflow.xgboost", "data": name},
        }
    elif fmt == "lightgbm" and options.get("serialization", "text") == "text":
        name = model_file or "model.txt"
        flavors = {
            "lightgbm": {
                "code": None,
                "data": name,
                "model_class": "lightgbm.basic.Booster",
                "lgb_version": versions.get("lightgbm"),
            },
            "python_function": {**pyfunc, "loader_module": "mlflow.lightgbm", "data": name},
        }
    elif fmt == "onnx":
        name = model_file or "model.onnx"
        outputs = list(manifest.signature.outputs)
        flavors = {
            "onnx": {
                "code": None,
                "data": name,
                "onnx_session_options": None,
                "onnx_version": versions.get("onnx"),
                "providers": ["CPUExecutionProvider"],
            },
            "python_function": {**pyfunc, "loader_module": "mlflow.onnx", "data": name},
        }
    elif fmt == "torch" and not options.get("serialization"):
        # TorchScript: MLflow's torch.load hands the archive to torch.jit.load
        del files[model_file or "model.pt"]
        files["data/model.pth"] = model_file or "model.pt"
        generated["data/pickle_module_info.txt"] = b"mlflow.pytorch.pickle_module"
        outputs = list(manifest.signature.outputs)
        flavors = {
            "pytorch": {
                "code": None,
                "model_data": "data",
                "pytorch_version": versions.get("torch"),
            },
            "python_function": {
                **pyfunc,
                "loader_module": "mlflow.pytorch",
                "data": "data",
                "pickle_module_name": "mlflow.pytorch.pickle_module",
            },
        }
    else:
        if manifest_json is None:
            raise InvalidInput(f"a {fmt} model is exported with its modelyard.json; give it")
        files = {f"modelyard/{p}": p for p in manifest.files}
        generated[f"modelyard/{MANIFEST_NAME}"] = manifest_json
        outputs = list(manifest.signature.outputs)
        mine = _modelyard_version()
        requirements.append(f"modelyard=={mine}" if mine and mine != "dev" else "modelyard")
        flavors = {
            "python_function": {**pyfunc, "loader_module": MODELYARD_LOADER, "data": "modelyard"}
        }
    info, example = _example(manifest.signature)
    created = datetime.fromisoformat(manifest.created_at)
    mlmodel = {
        "flavors": flavors,
        "model_uuid": uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(manifest.files, default=str)).hex,
        "utc_time_created": created.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
        "signature": signature_to_mlflow(manifest.signature, outputs),
        "saved_input_example_info": info,
    }
    generated[MLMODEL] = yaml.safe_dump(mlmodel, sort_keys=True).encode()
    generated["input_example.json"] = json.dumps(example).encode()
    generated[REQUIREMENTS] = ("\n".join(requirements) + "\n").encode()
    generated["python_env.yaml"] = yaml.safe_dump(
        {"python": python, "build_dependencies": ["pip"], "dependencies": ["-r requirements.txt"]},
        sort_keys=False,
    ).encode()
    generated["conda.yaml"] = yaml.safe_dump(
        {
            "name": "mlflow-env",
            "channels": ["conda-forge"],
            "dependencies": [f"python={python}", "pip", {"pip": ["mlflow", *requirements]}],
        },
        sort_keys=False,
    ).encode()
    return MlflowLayout(files, generated)


def export_mlflow(model_dir: Path | str, target: Path | str) -> Path:
    """Write the MLflow model directory of the modelyard model in ``model_dir`` (a saved or
    downloaded version: its files and modelyard.json) into the new directory ``target``."""
    import shutil

    from modelyard.formats.manifest import read_manifest

    source, out = Path(model_dir), Path(target)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInput(f"{out} exists and is not an empty directory; choose a new path")
    manifest = read_manifest(source)
    layout = mlflow_layout(manifest, (source / MANIFEST_NAME).read_bytes())
    out.mkdir(parents=True, exist_ok=True)
    for path, original in layout.files.items():
        dest = out / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / original, dest)
    for path, data in layout.generated.items():
        dest = out / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    return out


# --- MLflow's loader hook -----------------------------------------------------------------


class MlflowPyfunc:
    """What ``mlflow.pyfunc.load_model`` gets for an exported modelyard model directory."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        outputs = self.predictor.predict(data)
        if len(outputs) == 1:
            return next(iter(outputs.values()))
        import pandas as pd

        return pd.DataFrame(
            {k: list(v) if np.ndim(v) > 1 else np.asarray(v) for k, v in outputs.items()}
        )


def _load_pyfunc(path: str) -> MlflowPyfunc:
    """MLflow's hook for ``loader_module: modelyard.formats.mlflow``: the modelyard model in
    ``path``, loaded by modelyard (pickled formats only with
    MODELYARD_TRUST_PICKLED_MODELS=true)."""
    from modelyard.config import Settings
    from modelyard.formats.model_dir import load_model

    return MlflowPyfunc(load_model(path, trusted=Settings().trust_pickled_models))


__all__ = [
    "FLAVORS",
    "MLMODEL",
    "MlflowLayout",
    "export_mlflow",
    "is_mlflow_dir",
    "manifest_for_dir",
    "mlflow_layout",
    "mlflow_manifest",
    "read_mlmodel",
    "signature_from_mlflow",
    "signature_to_mlflow",
]
