"""Content-addressed artifact store (sha256) over fsspec."""

from modelyard.artifacts.store import (
    ArtifactStore,
    digest_of_bytes,
    digest_of_file,
    parse_digest,
)

__all__ = ["ArtifactStore", "digest_of_bytes", "digest_of_file", "parse_digest"]
