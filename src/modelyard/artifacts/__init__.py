"""Content-addressed artifact store (sha256) over fsspec."""

from modelyard.artifacts.store import (
    ArtifactStore,
    BlobSource,
    digest_of_bytes,
    digest_of_file,
    materialize,
    parse_digest,
)

__all__ = [
    "ArtifactStore",
    "BlobSource",
    "digest_of_bytes",
    "digest_of_file",
    "materialize",
    "parse_digest",
]
