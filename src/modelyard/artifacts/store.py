"""Content-addressed blob store over fsspec.

Blobs live at ``<root>/blobs/sha256/<2 hex>/<62 hex>``. A write streams to a temporary
name under ``<root>/tmp/`` while hashing and is moved into place only when complete, so a
killed upload leaves nothing visible; what it leaves in ``tmp/`` is swept when a store is
opened again (see artifacts/scratch.py). Every read is checked against the digest.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol

import fsspec

from modelyard.artifacts.scratch import scratch_name, sweep
from modelyard.errors import ArtifactCorrupted, InvalidInput, NotFound, PayloadTooLarge

CHUNK = 1024 * 1024
PREFIX = "sha256:"


def digest_of_file(path: str | os.PathLike[str]) -> str:
    """The ``sha256:<hex>`` digest of a local file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return PREFIX + h.hexdigest()


def digest_of_bytes(data: bytes) -> str:
    """The ``sha256:<hex>`` digest of ``data``."""
    return PREFIX + hashlib.sha256(data).hexdigest()


def parse_digest(digest: str) -> str:
    """The hex part of a ``sha256:<hex>`` digest; :class:`InvalidInput` if malformed."""
    if not isinstance(digest, str) or not digest.startswith(PREFIX):
        raise InvalidInput(f"{digest!r} is not a digest; expected 'sha256:' and 64 hex digits")
    hexpart = digest[len(PREFIX) :]
    if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise InvalidInput(f"{digest!r} is not a digest; expected 'sha256:' and 64 hex digits")
    return hexpart


class ArtifactStore:
    """Blobs by digest on a local directory, S3 (``s3://bucket/prefix``) or any fsspec URL."""

    def __init__(
        self,
        root: str,
        *,
        max_blob_bytes: int | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        fs, path = fsspec.core.url_to_fs(root, **(storage_options or {}))
        self.fs = fs
        self.root = path.rstrip("/")
        self.url = root
        self.max_blob_bytes = max_blob_bytes
        self.is_local = "file" in (
            fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
        )
        if self.is_local:
            self.fs.makedirs(f"{self.root}/tmp", exist_ok=True)

    def sweep(self) -> int:
        """Remove the partial uploads of processes that were killed; how many (local only).

        On S3 a killed upload never completed its (multipart) write, so no object exists;
        the bucket's lifecycle rule for incomplete multipart uploads frees their parts.
        """
        return sweep(Path(self.root) / "tmp", only_scratch=True) if self.is_local else 0

    def _path(self, digest: str) -> str:
        hexpart = parse_digest(digest)
        return f"{self.root}/blobs/sha256/{hexpart[:2]}/{hexpart[2:]}"

    def put(self, stream: BinaryIO | IO[bytes], *, expected: str | None = None) -> str:
        """Store the bytes of ``stream``; return their digest.

        With ``expected``, the upload is refused unless the content hashes to it.
        """
        tmp = f"{self.root}/tmp/{scratch_name()}"
        h = hashlib.sha256()
        size = 0
        try:
            with self.fs.open(tmp, "wb") as out:
                for chunk in iter(lambda: stream.read(CHUNK), b""):
                    size += len(chunk)
                    if self.max_blob_bytes is not None and size > self.max_blob_bytes:
                        raise PayloadTooLarge(
                            f"upload is over the {self.max_blob_bytes} byte limit; "
                            "raise MODELYARD_MAX_UPLOAD_BYTES to accept it"
                        )
                    h.update(chunk)
                    out.write(chunk)
                if self.is_local:
                    out.flush()
                    os.fsync(out.fileno())
            digest = PREFIX + h.hexdigest()
            if expected is not None and expected != digest:
                raise InvalidInput(
                    f"uploaded content hashes to {digest}, not {expected}; the upload was "
                    "damaged in transit, send it again"
                )
            final = self._path(digest)
            if self.fs.exists(final):
                return digest
            if self.is_local:
                Path(final).parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)  # atomic on one filesystem
            else:
                self.fs.mv(tmp, final)
            return digest
        finally:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)

    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; return its digest."""
        import io

        return self.put(io.BytesIO(data))

    def put_file(self, path: str | os.PathLike[str], digest: str | None = None) -> str:
        """Store a local file; return its digest.

        With a known ``digest``, a blob already stored is not written again.
        """
        if digest is not None and self.exists(digest):
            return digest
        with open(path, "rb") as f:
            return self.put(f, expected=digest)

    def exists(self, digest: str) -> bool:
        return bool(self.fs.exists(self._path(digest)))

    def size(self, digest: str) -> int:
        try:
            return int(self.fs.size(self._path(digest)))
        except FileNotFoundError:
            raise NotFound(f"no artifact {digest}") from None

    def open(self, digest: str) -> Iterator[bytes]:
        """Stream the blob in chunks; raises :class:`ArtifactCorrupted` at the end on mismatch."""
        path = self._path(digest)
        try:
            f = self.fs.open(path, "rb")
        except FileNotFoundError:
            raise NotFound(f"no artifact {digest}") from None
        return self._verified(f, digest)

    def _verified(self, f: Any, digest: str) -> Iterator[bytes]:
        h = hashlib.sha256()
        with f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                h.update(chunk)
                yield chunk
        if PREFIX + h.hexdigest() != digest:
            raise ArtifactCorrupted(
                f"stored blob {digest} does not match its digest; restore it from a backup "
                "or register the model again"
            )

    def get_bytes(self, digest: str) -> bytes:
        """The whole blob, verified before it is returned."""
        return b"".join(self.open(digest))

    def get_file(self, digest: str, dest: str | os.PathLike[str]) -> Path:
        """Copy the blob to a local file, verified before it appears at ``dest``."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        try:
            with open(tmp, "wb") as out:
                for chunk in self.open(digest):
                    out.write(chunk)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def delete(self, digest: str) -> None:
        path = self._path(digest)
        if self.fs.exists(path):
            self.fs.rm(path)

    def digests(self) -> Iterator[str]:
        """Every stored digest (for garbage collection and checks)."""
        base = f"{self.root}/blobs/sha256"
        if not self.fs.exists(base):
            return
        for path in self.fs.find(base):
            parts = path.rstrip("/").split("/")
            yield PREFIX + parts[-2] + parts[-1]


class BlobSource(Protocol):
    """Anything that can copy a blob to a local file, verified: the store or an HTTP client."""

    def get_file(self, digest: str, dest: str | os.PathLike[str]) -> Path: ...


def materialize(source: BlobSource, files: dict[str, str], dest: Path) -> Path:
    """Write ``{relative path: digest}`` into directory ``dest``, each file verified.

    The directory appears complete or not at all; an existing one is reused, since its
    name is the digest of the manifest that lists these files.
    """
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(scratch_name(f".{dest.name}.part"))  # swept if this process is killed
    try:
        inside = tmp.resolve()
        for rel, digest in files.items():
            target = (tmp / rel).resolve()
            # Strictly inside: a path naming the directory itself ("", ".", "a/..") would
            # put a file where the model directory belongs.
            if target == inside or not target.is_relative_to(inside):
                raise InvalidInput(f"artifact path {rel!r} escapes the model directory")
            source.get_file(digest, target)
        try:
            os.replace(tmp, dest)
        except OSError:
            if not dest.exists():  # another process may have won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
