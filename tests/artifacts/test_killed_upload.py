"""A process killed mid-upload or mid-registration leaves nothing half-visible."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from artifact_models import save_tiny_model  # tests/artifacts/artifact_models.py

from modelyard.artifacts import ArtifactStore, digest_of_bytes, digest_of_file
from modelyard.config import Settings
from modelyard.errors import InvalidInput
from modelyard.formats import MANIFEST_NAME
from modelyard.workspace import Workspace

pytestmark = pytest.mark.slow

CHUNK = 256 * 1024
CHUNKS = 40  # 10 MiB in all


def _content() -> bytes:
    return b"".join(bytes([i % 251]) * CHUNK for i in range(CHUNKS))


def _wait_for(path: Path, proc: subprocess.Popen[bytes], limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        if proc.poll() is not None:
            _out, err = proc.communicate()
            pytest.fail(f"child exited early ({proc.returncode}): {err.decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("child never reached the kill point")
        time.sleep(0.02)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


UPLOADER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from modelyard.artifacts import ArtifactStore

    root, marker = sys.argv[1], Path(sys.argv[2])
    CHUNK, CHUNKS = {chunk}, {chunks}

    def chunks():
        for i in range(CHUNKS):
            if i == CHUNKS // 2:
                marker.write_text("midway")
                time.sleep(120)  # killed here
            yield bytes([i % 251]) * CHUNK

    class Stream:
        def __init__(self):
            self.it = chunks()
        def read(self, n=-1):
            return next(self.it, b"")

    print(ArtifactStore(root).put(Stream()))
    """
).format(chunk=CHUNK, chunks=CHUNKS)


def test_killed_upload_leaves_no_blob(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    marker = tmp_path / "midway"
    proc = subprocess.Popen(
        [sys.executable, "-c", UPLOADER, str(root), str(marker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait_for(marker, proc)
    time.sleep(0.2)  # let the child flush what it has buffered so far (not an assertion)
    _kill(proc)

    store = ArtifactStore(str(root))
    # The upload really was cut off mid-way: a partial temporary file exists...
    partial = [p for p in (root / "tmp").iterdir()]
    assert partial, "the child should have started writing before it was killed"
    assert all(p.stat().st_size < len(_content()) for p in partial)
    # ...but no blob is visible.
    assert list(store.digests()) == []
    assert not store.exists(digest_of_bytes(_content()))
    # The partial file is swept (as whenever a workspace opens): its writer is gone.
    assert store.sweep() == len(partial)
    assert list((root / "tmp").iterdir()) == []

    # The same content uploads cleanly afterwards.
    data = _content()
    digest = store.put_bytes(data)
    assert digest == digest_of_bytes(data)
    assert list(store.digests()) == [digest]
    assert store.get_bytes(digest) == data


REGISTRAR = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from modelyard.config import Settings
    from modelyard.formats import MANIFEST_NAME
    from modelyard.workspace import Workspace

    home, model_dir, marker, manifest_first = sys.argv[1:5]
    ws = Workspace.open(Settings(home=home))
    files = sorted(p for p in Path(model_dir).rglob("*") if p.is_file())
    manifest = Path(model_dir) / MANIFEST_NAME
    others = [p for p in files if p != manifest]
    if manifest_first == "1":
        ws.artifacts.put_file(manifest)  # the model files never make it
    else:
        for p in others:
            ws.artifacts.put_file(p)
    Path(marker).write_text("uploaded")
    time.sleep(120)  # killed before the manifest upload / registration
    """
)


@pytest.mark.parametrize("manifest_first", [False, True], ids=["files-only", "manifest-first"])
def test_killed_registration_leaves_no_broken_version(tmp_path: Path, manifest_first: bool) -> None:
    home = tmp_path / "home"
    settings = Settings(home=home)
    ws = Workspace.open(settings)
    try:
        # A good version registered beforehand.
        good = save_tiny_model(tmp_path / "good")
        for p in good.rglob("*"):
            if p.is_file():
                ws.artifacts.put_file(p)
        ws.registry.create_version("m", digest_of_file(good / MANIFEST_NAME))

        other = save_tiny_model(tmp_path / "other", seed=1)  # different weights
        other_files = [p for p in other.rglob("*") if p.is_file() and p.name != MANIFEST_NAME]
        assert other_files and not any(ws.artifacts.exists(digest_of_file(p)) for p in other_files)
        marker = tmp_path / "uploaded"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                REGISTRAR,
                str(home),
                str(other),
                str(marker),
                "1" if manifest_first else "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _wait_for(marker, proc)
        _kill(proc)

        manifest_digest = digest_of_file(other / MANIFEST_NAME)
        # Registering from the half-uploaded state is refused, whatever is missing.
        with pytest.raises(InvalidInput):
            ws.registry.create_version("m", manifest_digest)

        # No version points at a missing artifact.
        versions_seen = 0
        for model in ws.registry.list_models(include_archived=True).items:
            for version in ws.registry.list_versions(model.name).items:
                versions_seen += 1
                assert ws.artifacts.exists(version.manifest_digest)
                for path, entry in version.manifest["files"].items():
                    assert ws.artifacts.exists(entry["digest"]), (version.uri, path)
        assert versions_seen == 1
        assert [v.version for v in ws.registry.list_versions("m").items] == [1]
        assert ws.audit.verify().ok
    finally:
        ws.close()
