"""The manifest: ``modelyard.json``, written next to a saved model's files.

It records what is needed to load the model again safely: the format, the framework
versions it was saved with, its signature, pinned requirements and a digest of every file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from modelyard.errors import InvalidModel
from modelyard.formats.signature import Signature

MANIFEST_NAME = "modelyard.json"

# Bump when the directory layout changes in a way older readers cannot load.
FORMAT_VERSION = 1

_CHUNK = 1 << 20


class FileEntry(BaseModel):
    """The digest (``"sha256:<hex>"``) and size in bytes of one saved file."""

    digest: str
    size: int


class Manifest(BaseModel):
    """The contents of ``modelyard.json``."""

    format: str
    format_version: int = FORMAT_VERSION
    framework: str
    framework_versions: dict[str, str]
    signature: Signature
    requirements: list[str] = Field(default_factory=list)
    files: dict[str, FileEntry] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    created_at: str

    @staticmethod
    def digest_files(directory: Path | str) -> dict[str, FileEntry]:
        """The entry of every file under ``directory`` (relative posix path), bar the manifest."""
        root = Path(directory)
        entries: dict[str, FileEntry] = {}
        for file in sorted(root.rglob("*")):
            if not file.is_file() or file.is_symlink():
                continue
            relative = file.relative_to(root).as_posix()
            if relative == MANIFEST_NAME:
                continue
            entries[relative] = digest_file(file)
        return entries

    def write(self, directory: Path | str) -> Path:
        """Write this manifest as ``modelyard.json`` in ``directory``."""
        target = Path(directory) / MANIFEST_NAME
        target.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return target


def digest_file(file: Path) -> FileEntry:
    """The sha256 digest and size of one file, read in chunks so large models fit in memory."""
    sha = hashlib.sha256()
    size = 0
    with file.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return FileEntry(digest=f"sha256:{sha.hexdigest()}", size=size)


def read_manifest(path: Path | str) -> Manifest:
    """Read and parse the manifest of the model directory ``path``.

    Raises InvalidModel when it is missing or garbled.
    """
    directory = Path(path)
    file = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise InvalidModel(f"{directory} is not a directory; give the directory save_model wrote")
    if not file.is_file():
        raise InvalidModel(
            f"{directory} has no {MANIFEST_NAME}; save the model with "
            "modelyard.formats.save_model (or Client.log_model) to create it"
        )
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModel(
            f"{MANIFEST_NAME} in {directory} is not valid JSON ({exc}); save the model again"
        ) from exc
    try:
        manifest = Manifest.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '<root>'}: {error['msg']}"
            for error in exc.errors()[:5]
        )
        raise InvalidModel(
            f"{MANIFEST_NAME} in {directory} is not a valid manifest ({problems}); "
            "save the model again"
        ) from exc
    if manifest.format_version > FORMAT_VERSION:
        raise InvalidModel(
            f"{MANIFEST_NAME} in {directory} has format_version {manifest.format_version}, "
            f"newer than this modelyard reads ({FORMAT_VERSION}); upgrade modelyard"
        )
    return manifest
