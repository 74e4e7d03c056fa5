"""Versions made of an MLflow model's files, and the MLflow files of any version.

A version registered from MLflow (through MLflow's REST API, or ``Client.register_model`` on
a local MLflow directory) references the files where they already are in the artifact
store, by digest: nothing is copied. Its manifest is derived from MLmodel
(:func:`modelyard.formats.mlflow.mlflow_manifest`) and stored beside them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from modelyard.artifacts import digest_of_bytes
from modelyard.formats.manifest import FileEntry, Manifest
from modelyard.formats.mlflow import mlflow_layout, mlflow_manifest
from modelyard.governance.entities import Permission

if TYPE_CHECKING:
    from modelyard.registry.entities import ModelVersion
    from modelyard.workspace import Workspace


def register_mlflow_files(
    ws: Workspace,
    name: str,
    files: Mapping[str, FileEntry],
    *,
    where: str,
    run_id: str | None = None,
    description: str = "",
    tags: Mapping[str, Any] | None = None,
    source: str = "",
) -> ModelVersion:
    """Register the next version of ``name`` from an MLflow model directory's files (each
    relative path -> its digest and size, all in the artifact store).

    InvalidModel (naming ``where``) when the files are no MLflow model modelyard loads.
    """
    ws.access.require(Permission.write, model=name, action="register versions")
    manifest = mlflow_manifest(
        files, lambda path: ws.artifacts.get_bytes(files[path].digest), where
    )
    digest = ws.artifacts.put_bytes(manifest.model_dump_json(indent=2).encode() + b"\n")
    return ws.registry.create_version(
        name, digest, run_id=run_id, description=description, tags=tags, source=source
    )


def mlflow_files(ws: Workspace, version: ModelVersion) -> dict[str, FileEntry]:
    """The files MLflow's client reads as ``version``'s model directory (path -> digest and
    size, every one in the artifact store): its own files under MLflow's names plus the
    generated MLmodel, requirements and input example (see
    :func:`modelyard.formats.mlflow.mlflow_layout`). A version registered from MLflow is
    its files as they were."""
    manifest_json = ws.artifacts.get_bytes(version.manifest_digest)
    manifest = Manifest.model_validate_json(manifest_json)
    layout = mlflow_layout(manifest, manifest_json)
    out = {path: manifest.files[original] for path, original in layout.files.items()}
    for path, data in layout.generated.items():
        # the same manifest always makes the same bytes: each is stored once
        digest = digest_of_bytes(data)
        if not ws.artifacts.exists(digest):
            ws.artifacts.put_bytes(data)
        out[path] = FileEntry(digest=digest, size=len(data))
    return dict(sorted(out.items()))
