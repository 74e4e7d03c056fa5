"""Model formats: save a trained model to a directory, validate it, and load it to predict.

Each framework has a ModelFormat (sklearn via skops, onnx, xgboost, lightgbm, torch, pyfunc).
A saved model is a directory of the framework's files plus ``modelyard.json`` (the Manifest:
format, framework versions, Signature, pinned requirements, file digests). Frameworks are
imported only when a model of theirs is saved, validated or loaded.
"""

from modelyard.formats.base import (
    ModelFormat,
    Predictor,
    available_formats,
    detect_format,
    get_format,
)
from modelyard.formats.manifest import MANIFEST_NAME, FileEntry, Manifest, read_manifest
from modelyard.formats.model_dir import load_model, save_model, validate_model_dir
from modelyard.formats.pyfunc import PythonModel
from modelyard.formats.signature import Signature, TensorSpec, infer_signature

__all__ = [
    "MANIFEST_NAME",
    "FileEntry",
    "Manifest",
    "ModelFormat",
    "Predictor",
    "PythonModel",
    "Signature",
    "TensorSpec",
    "available_formats",
    "detect_format",
    "get_format",
    "infer_signature",
    "load_model",
    "read_manifest",
    "save_model",
    "validate_model_dir",
]
