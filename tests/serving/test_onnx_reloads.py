"""Loading an evicted ONNX model again (serving/onnx_reloads.py): the same answers, from a
per-process file in ONNX Runtime's format after the first reload, without the first load's
checks; a version whose ONNX file changed, or that left its endpoints, is not a reload."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np

from modelyard.client import Client
from modelyard.config import Settings
from modelyard.formats import read_manifest
from modelyard.serving.onnx_reloads import OnnxReloads
from modelyard.serving.runtime import check_onnx
from modelyard.workspace import Workspace


def test_a_reload_answers_the_same_from_onnx_runtimes_format(tmp_path: Path, models, frame) -> None:  # type: ignore[no-untyped-def]
    X, _ = frame
    settings = Settings(home=tmp_path / "home")
    c = Client(str(settings.resolved_home), settings=settings)
    c.log_model(models["rf"], "forest", input_example=X.head(5))
    c.close()
    ws = Workspace.open(settings)
    try:
        version = ws.registry.get_version("forest", 1)
        runtime = check_onnx(ws, version)
        assert runtime.usable and runtime.artifact_digest is not None
        digest = runtime.artifact_digest
        reads: list[str] = []

        def read(wanted: str) -> bytes:
            reads.append(wanted)
            return ws.artifacts.get_bytes(wanted)

        base = tmp_path / "reload"
        reloads = OnnxReloads(read, base)
        assert reloads.again(version, digest) is None  # never loaded: a first load
        manifest = read_manifest(ws.signing.local_copy(version))
        first = reloads.first(version, digest, ws.artifacts.get_bytes(digest), manifest)
        rows = np.ascontiguousarray(X.to_numpy(), dtype=first.dtype)
        expected = first.predict_matrix(rows)

        second = reloads.again(version, digest)  # reads the ONNX file, writes the .ort
        assert second is not None and reads == [digest]
        ort_files = list(base.glob("*/*.ort"))
        assert len(ort_files) == 1
        third = reloads.again(version, None)  # from the .ort file: nothing read
        assert third is not None and reads == [digest]
        assert third.signature == first.signature
        for again in (second, third):
            got = again.predict_matrix(rows)
            assert got.keys() == expected.keys()
            for name, values in expected.items():
                np.testing.assert_array_equal(got[name], values)

        assert reloads.again(version, "sha256:" + "0" * 64) is None  # another ONNX file

        reloads.retain({version.id})  # still served: still a reload
        assert reloads.again(version, digest) is not None
        reloads.retain(set())  # no endpoint serves it: brought back, it is checked again
        assert reloads.again(version, digest) is None

        del reloads
        gc.collect()
        assert not ort_files[0].exists()  # the process's directory goes with it
    finally:
        ws.close()
