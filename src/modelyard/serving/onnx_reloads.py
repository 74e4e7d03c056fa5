"""Loading an evicted ONNX model again, cheaply.

Under a memory budget (see serving/pool.py) a gateway evicts models and loads them again on
their next request, which waits for it. A first load checks the version's signature and its
local files (governance/signing.py: a query of the metadata store, a digest of the manifest
file), reads and verifies the ONNX file, and has ONNX Runtime parse and optimise the graph.
For an ONNX forest of 0.8 MB that was about 2 ms of checks, 1 ms of reading and 12 ms of
session (CPU time, here). A reload of a version this process has loaded before skips what
it has done already:

* the checks: the version was verified by this process at its first load, and the manifest
  read then is kept (a few KB). (A signing key revoked since is noticed by the next first
  load, not by a reload: a reload serves what the process served before the eviction.)
* the ONNX parse and the graph optimisations: the first reload has ONNX Runtime write the
  optimised graph in its own format (``.ort``) to a directory of this process (under
  ``MODELYARD_HOME/cache/onnx-reload``, readable by its user only, deleted at exit); later
  reloads load that file, about a third faster, into a session that takes a third of the
  memory (1.8 MB against 5.2 MB for that forest, measured; for one thing it does not keep
  the model's bytes, which onnxruntime's Python binding holds for a session made of bytes).
  The file is made of bytes that were verified against their digest; it is only valid on
  this machine with this onnxruntime, which a per-process directory guarantees.

Reloads take turns in the pool's load thread; the lock here keeps the bookkeeping safe
should two pools share one instance.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # onnx_runtime is imported with the first ONNX model
    from modelyard.formats.manifest import Manifest
    from modelyard.formats.onnx_runtime import OnnxPredictor
    from modelyard.registry import ModelVersion

log = logging.getLogger("modelyard.serving")


@dataclass
class _Known:
    digest: str  # of the ONNX file
    manifest: Manifest  # as verified at the first load
    ort_file: Path | None = None


class OnnxReloads:
    """What a gateway keeps of each ONNX model it has loaded, to load it again quickly.

    ``read(digest)`` returns an artifact's bytes, verified; ``directory`` is where the
    per-process directory of ``.ort`` files is made (on the first reload).
    """

    def __init__(self, read: Callable[[str], bytes], directory: Path) -> None:
        self._read = read
        self._base = directory
        self._dir: Path | None = None
        self._dir_failed = False
        self._known: dict[str, _Known] = {}
        self._lock = threading.Lock()

    def first(
        self, version: ModelVersion, digest: str, onnx_bytes: bytes, manifest: Manifest
    ) -> OnnxPredictor:
        """Load a version (verified by the caller) for the first time, and remember it."""
        from modelyard.formats.onnx_runtime import load_onnx_predictor

        predictor = load_onnx_predictor(onnx_bytes, manifest)
        with self._lock:
            self._known[version.id] = _Known(digest, manifest)
        return predictor

    def retain(self, version_ids: set[str]) -> None:
        """Forget every version but ``version_ids`` (those still served): a version that left
        its endpoints is checked again (signature, digests) when a plan brings it back, as
        docs/governance.md promises for a moved alias."""
        with self._lock:
            for gone in self._known.keys() - version_ids:
                del self._known[gone]

    def again(self, version: ModelVersion, digest: str | None) -> OnnxPredictor | None:
        """Load a version loaded before from ONNX file ``digest`` (None: whichever it was);
        None when it was not (or from another file): load it as a first time."""
        with self._lock:
            known = self._known.get(version.id)
            if known is None or (digest is not None and digest != known.digest):
                return None
            ort_file = known.ort_file
        from modelyard.formats.onnx_runtime import load_onnx_predictor

        if ort_file is not None:
            try:
                return load_onnx_predictor(ort_file, known.manifest)
            except Exception as exc:  # deleted meanwhile, say: made again below
                log.warning(
                    "loading %s from %s failed, loading it afresh: %s", version.uri, ort_file, exc
                )
        onnx_bytes = self._read(known.digest)
        target = self._ort_path(known.digest)
        if target is None:
            return load_onnx_predictor(onnx_bytes, known.manifest)
        try:
            predictor = load_onnx_predictor(onnx_bytes, known.manifest, save_ort_as=str(target))
        except Exception as exc:
            log.warning("could not keep %s in ONNX Runtime's format: %s", version.uri, exc)
            with contextlib.suppress(OSError):
                target.unlink()
            return load_onnx_predictor(onnx_bytes, known.manifest)
        if target.is_file():
            with self._lock:
                known.ort_file = target
        return predictor

    def _ort_path(self, digest: str) -> Path | None:
        """Where the ``.ort`` file of ``digest`` goes; None when no directory can be made."""
        with self._lock:
            if self._dir is None and not self._dir_failed:
                try:
                    self._dir = _private_dir(self._base)
                except OSError as exc:
                    self._dir_failed = True
                    log.warning(
                        "cannot make a directory for reloads under %s (%s): evicted ONNX "
                        "models load again from their ONNX files",
                        self._base,
                        exc,
                    )
                else:
                    weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)
            if self._dir is None:
                return None
            return self._dir / f"{digest.rsplit(':', 1)[-1]}.ort"


def _private_dir(base: Path) -> Path:
    """A new directory for this process under ``base`` (mode 0700), after deleting those of
    processes that are gone (killed before they could delete their own)."""
    base.mkdir(parents=True, exist_ok=True)
    for old in base.iterdir():
        pid = old.name.split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=base))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


__all__ = ["OnnxReloads"]
