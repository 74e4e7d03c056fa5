"""Concurrent writer processes: consecutive version numbers and atomic alias moves."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from modelyard.artifacts import digest_of_file
from modelyard.config import Settings
from modelyard.errors import NotFound
from modelyard.formats import MANIFEST_NAME
from modelyard.workspace import Workspace

pytestmark = pytest.mark.slow

WRITERS = 8


def _save_tiny_model(path: Path) -> Path:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from modelyard.formats import save_model

    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 3))
    y = (x[:, 1] > 0).astype(np.int64)
    save_model(LogisticRegression().fit(x, y), path, input_example=x[:3])
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings_for(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "sqlite":
        return Settings(home=tmp_path / "home")
    return Settings(home=tmp_path / "home", database_url=request.getfixturevalue("pg_url"))


def _upload_model(ws: Workspace, tmp_path: Path) -> str:
    model_dir = _save_tiny_model(tmp_path / "model")
    for p in model_dir.rglob("*"):
        if p.is_file():
            ws.artifacts.put_file(p)
    return digest_of_file(model_dir / MANIFEST_NAME)


CHILD_PRELUDE = """
import sys, time
from pathlib import Path
from modelyard.config import Settings
from modelyard.workspace import Workspace

home, url, digest, ready, go = sys.argv[1:6]
ws = Workspace.open(Settings(home=home, database_url=url or None), migrate=False)
ws.registry.list_models()  # imports done and a connection open before the start line
Path(ready).write_text("")
while not Path(go).exists():
    time.sleep(0.002)
"""

FLIP = CHILD_PRELUDE + textwrap.dedent(
    """
    for i in range(200):
        ws.registry.set_alias("m", "champion", 2 if i % 2 == 0 else 1)
    ws.close()
    print("done")
    """
)


def _start(
    script: str, settings: Settings, digest: str, tmp_path: Path, n: int
) -> list[subprocess.Popen[bytes]]:
    go = tmp_path / "go"
    procs, readies = [], []
    for i in range(n):
        ready = tmp_path / f"ready-{script.__hash__()}-{i}"
        readies.append(ready)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    script,
                    str(settings.home),
                    settings.database_url or "",
                    digest,
                    str(ready),
                    str(go),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    deadline = time.monotonic() + 90
    while not all(r.exists() for r in readies):
        for p in procs:
            if p.poll() is not None:
                _, err = p.communicate()
                pytest.fail(f"a child died before the start line: {err.decode()[-3000:]}")
        if time.monotonic() > deadline:
            for p in procs:
                p.kill()
            pytest.fail("children never got ready")
        time.sleep(0.01)
    go.write_text("")  # everyone starts at once
    return procs


def _results(procs: list[subprocess.Popen[bytes]]) -> list[str]:
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err.decode()[-3000:]
        outs.append(out.decode().strip())
    return outs


# The writers are forked from a server process that imported everything registration
# needs once, so they are warm and truly start together (at the barrier) without paying
# seconds of imports each.
PRELOAD = [
    "modelyard.workspace",
    "modelyard.registry.service",
    "modelyard.formats",
    "modelyard.formats.sklearn",
    "skops.io",
    "sklearn.linear_model",
]


def _register_worker(home: str, url: str, digest: str, barrier, results) -> None:  # type: ignore[no-untyped-def]
    import traceback

    try:
        ws = Workspace.open(Settings(home=home, database_url=url or None), migrate=False)
        ws.registry.list_models()  # a connection open before the start line
        barrier.wait(timeout=120)
        results.put(("ok", ws.registry.create_version("m", digest).version))
        ws.close()
    except BaseException:  # report everything to the parent
        results.put(("error", traceback.format_exc()))


def _run_writers(settings: Settings, digest: str) -> list[int]:
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    barrier, results = ctx.Barrier(WRITERS), ctx.Queue()
    procs = [
        ctx.Process(
            target=_register_worker,
            args=(str(settings.home), settings.database_url or "", digest, barrier, results),
        )
        for _ in range(WRITERS)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    errors = [detail for kind, detail in outcomes if kind != "ok"]
    assert errors == [], errors[0] if errors else ""
    return [detail for _, detail in outcomes]


@pytest.mark.parametrize("model_exists", [True, False], ids=["model-exists", "model-created"])
def test_concurrent_registrations_get_consecutive_versions(
    settings_for: Settings, tmp_path: Path, model_exists: bool
) -> None:
    ws = Workspace.open(settings_for)
    try:
        digest = _upload_model(ws, tmp_path)
        if model_exists:
            ws.registry.create_model("m")
        numbers = sorted(_run_writers(settings_for, digest))
        assert numbers == list(range(1, WRITERS + 1))
        versions = sorted(v.version for v in ws.registry.list_versions("m").items)
        assert versions == list(range(1, WRITERS + 1))
        model = ws.registry.get_model("m")
        assert model.latest_version == WRITERS
        assert len(ws.registry.list_models().items) == 1
        # Every registration was audited, in one unbroken chain.
        created = ws.audit.list(action="version.create", limit=100).items
        assert sorted(r.entity_id for r in created) == sorted(
            f"m/{i}" for i in range(1, WRITERS + 1)
        )
        assert len(ws.audit.list(action="model.create").items) == 1
        result = ws.audit.verify()
        assert result.ok, result.reason
    finally:
        ws.close()


def test_alias_moves_are_atomic_for_readers(settings_for: Settings, tmp_path: Path) -> None:
    ws = Workspace.open(settings_for)
    try:
        digest = _upload_model(ws, tmp_path)
        ws.registry.create_version("m", digest)
        ws.registry.create_version("m", digest)
        ws.registry.set_alias("m", "champion", 1)
        (flipper,) = _start(FLIP, settings_for, digest, tmp_path, 1)
        seen: list[int] = []
        errors: list[Exception] = []
        while flipper.poll() is None:
            try:
                seen.append(ws.registry.get_alias("m", "champion").version)
            except NotFound as exc:  # the alias must never be missing mid-move
                errors.append(exc)
        # One more read after the writer is done.
        seen.append(ws.registry.get_alias("m", "champion").version)
        assert _results([flipper]) == ["done"]
        assert errors == []
        assert set(seen) <= {1, 2}
        assert ws.registry.get_alias("m", "champion").version == 1  # 200 moves, ends on 1
        moves = [r for r in ws.audit.list(action="alias.set", limit=1000).items]
        assert len(moves) == 201
        assert ws.audit.verify().ok
    finally:
        ws.close()
