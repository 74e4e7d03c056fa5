"""A version's files on local disk (kept apart from the service: no database needed)."""

from __future__ import annotations

from pathlib import Path

from modelyard.artifacts import BlobSource, materialize, parse_digest
from modelyard.registry.entities import ModelVersion


def version_dir(source: BlobSource, version: ModelVersion, cache_dir: Path) -> Path:
    """Materialise a version's files under ``cache_dir``, keyed by its manifest digest.

    Each file is verified against its digest on the way.
    """
    from modelyard.formats import MANIFEST_NAME

    files = {path: entry["digest"] for path, entry in version.manifest["files"].items()}
    files[MANIFEST_NAME] = version.manifest_digest
    dest = cache_dir / "models" / parse_digest(version.manifest_digest)
    return materialize(source, files, dest)
