"""Saving, validating and loading a model directory: the model's files plus modelyard.json."""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePosixPath
from typing import Any

from modelyard.errors import InvalidInput, InvalidModel, ModelyardError
from modelyard.formats.base import ModelFormat, Predictor, detect_format, get_format
from modelyard.formats.manifest import MANIFEST_NAME, Manifest, digest_file, read_manifest
from modelyard.formats.signature import Signature, infer_signature, output_specs


def save_model(
    model: Any,
    path: Path | str,
    *,
    input_example: Any = None,
    signature: Signature | None = None,
    format: str | None = None,
    requirements: list[str] | None = None,
) -> Manifest:
    """Save ``model`` into the new directory ``path`` and return its manifest.

    The format is detected unless ``format`` is given. The signature is ``signature``, else
    the one the model declares (ONNX), else inferred from ``input_example``; when an
    input example is given the saved model is loaded back and run on it, which checks
    that it works and records its outputs. The directory appears only once complete.
    """
    fmt = get_format(format) if format is not None else detect_format(model)
    target = Path(path)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InvalidInput(f"{target} exists and is not an empty directory; choose a new path")
    if signature is None:
        signature = fmt.signature_of(model)
    if signature is None:
        if input_example is None:
            raise InvalidInput(
                "give input_example= (a few rows of real input) or signature= so the "
                "model's inputs and outputs can be recorded"
            )
        signature = infer_signature(input_example)

    target.parent.mkdir(parents=True, exist_ok=True)
    # Write into a sibling staging directory and rename it at the end, so a crash or a
    # failing model never leaves a half-written model directory behind.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        options = fmt.save(model, staging, signature, {}, input_example=input_example)
        versions = framework_versions(fmt)
        manifest = Manifest(
            format=fmt.name,
            framework=fmt.framework,
            framework_versions=versions,
            signature=signature,
            requirements=_pins(fmt, versions) + list(requirements or []),
            files=Manifest.digest_files(staging),
            options=options,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        if input_example is not None:
            outputs = _run_example(fmt, staging, manifest, input_example)
            if not signature.outputs:
                manifest.signature = signature.model_copy(update={"outputs": output_specs(outputs)})
        manifest.write(staging)
        if target.exists():
            target.rmdir()  # empty, checked above
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _run_example(fmt: ModelFormat, path: Path, manifest: Manifest, example: Any) -> Any:
    # The files were written from the caller's own in-memory object, so they are trusted.
    predictor = fmt.load(path, manifest, trusted=True)
    try:
        return predictor.predict(example)
    except ModelyardError:
        raise
    except Exception as exc:
        raise InvalidInput(
            f"the saved {fmt.name} model failed on input_example ({type(exc).__name__}: {exc}); "
            "give an example the model accepts"
        ) from exc


def framework_versions(fmt: ModelFormat) -> dict[str, str]:
    """Installed versions of the format's packages, plus python and modelyard."""
    versions: dict[str, str] = {}
    for dist in fmt.packages:
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            continue
    versions["python"] = platform.python_version()
    try:
        versions["modelyard"] = version("modelyard")
    except PackageNotFoundError:
        versions["modelyard"] = "dev"
    return versions


def _pins(fmt: ModelFormat, versions: dict[str, str]) -> list[str]:
    # Drop local version labels ("2.13.0+cpu"): indexes publish the public version only.
    return [f"{dist}=={versions[dist].split('+')[0]}" for dist in fmt.packages if dist in versions]


def validate_model_dir(path: Path | str) -> Manifest:
    """Check a model directory and return its manifest; InvalidModel naming what is wrong.

    The manifest must parse, every listed file must exist with its recorded size and
    digest, no other file may be present, and the format's own check must pass.
    """
    root = Path(path)
    manifest = read_manifest(root)
    for relative, entry in manifest.files.items():
        parts = PurePosixPath(relative)
        if parts.is_absolute() or ".." in parts.parts:
            raise InvalidModel(f"{MANIFEST_NAME} lists {relative!r}, outside the model directory")
        file = root / relative
        if file.is_symlink() or not file.is_file():
            raise InvalidModel(
                f"{relative} is listed in {MANIFEST_NAME} but missing from {root}; "
                "copy the whole model directory"
            )
        # Compare sizes first: a cheap check that catches truncated copies without hashing.
        actual = digest_file(file) if file.stat().st_size == entry.size else None
        if actual is None or actual.digest != entry.digest:
            raise InvalidModel(
                f"{relative} does not match its digest in {MANIFEST_NAME} (expected "
                f"{entry.digest}, {entry.size} bytes): it was modified or corrupted; "
                "save the model again"
            )
    extra = sorted(
        item.relative_to(root).as_posix()
        for item in root.rglob("*")
        if (item.is_file() or item.is_symlink())
        and item.relative_to(root).as_posix() not in manifest.files
        and item.relative_to(root).as_posix() != MANIFEST_NAME
    )
    if extra:
        raise InvalidModel(
            f"{root} holds file(s) not listed in {MANIFEST_NAME}: {', '.join(extra)}; "
            "remove them or save the model again"
        )
    try:
        fmt = get_format(manifest.format)
    except InvalidInput as exc:
        raise InvalidModel(f"{MANIFEST_NAME} in {root}: {exc.detail}") from exc
    fmt.validate(root, manifest)
    return manifest


def load_model(path: Path | str, *, trusted: bool = False) -> Predictor:
    """Validate the model directory ``path`` and load it.

    Formats that would execute code from the files (pickle) raise UntrustedModel unless
    ``trusted=True``.
    """
    manifest = validate_model_dir(path)
    return get_format(manifest.format).load(Path(path), manifest, trusted)


__all__ = ["load_model", "read_manifest", "save_model", "validate_model_dir"]
