"""Scratch space: what a killed process leaves half-written is swept, nothing else is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from modelyard.artifacts.scratch import STALE_AFTER_SECONDS, scratch_dir, scratch_name, sweep
from modelyard.config import Settings
from modelyard.workspace import Workspace

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from modelyard.artifacts.scratch import scratch_dir

    parent, marker = Path(sys.argv[1]), Path(sys.argv[2])
    with scratch_dir(parent) as d:
        (d / "model.bin").write_bytes(b"x" * 1000)
        marker.write_text(str(d))
        time.sleep(120)  # killed here, or left running
    """
)


def _hold(parent: Path, marker: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """A process holding a scratch directory under ``parent``; that directory."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(parent), str(marker)])
    deadline = time.monotonic() + 60
    while not marker.exists() or not marker.read_text():
        assert proc.poll() is None, "the holder exited early"
        assert time.monotonic() < deadline, "the holder never made its directory"
        time.sleep(0.02)
    return proc, Path(marker.read_text())


def _killed(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_sweep_removes_what_a_killed_process_left_and_keeps_a_live_ones(tmp_path: Path) -> None:
    parent = tmp_path / "staging"
    dead, dead_dir = _hold(parent, tmp_path / "dead")
    live, live_dir = _hold(parent, tmp_path / "live")
    try:
        _killed(dead)
        assert dead_dir.exists()  # a SIGKILL leaves it behind...
        assert sweep(parent) == 1  # ...until the next sweep
        assert not dead_dir.exists()
        assert live_dir.exists() and (live_dir / "model.bin").exists()
    finally:
        _killed(live)
    sweep(parent)
    assert list(parent.iterdir()) == []


def test_a_reused_pid_does_not_keep_litter_alive(tmp_path: Path) -> None:
    # This process's pid, with another start time: the owner died and its pid was reused.
    pid, started, rest = scratch_name().lstrip("@").split(".", 2)
    reused = tmp_path / f"@{pid}.{int(started) + 1}.{rest}"
    mine = tmp_path / scratch_name()
    reused.mkdir()
    mine.mkdir()
    assert sweep(tmp_path) == 1
    assert not reused.exists() and mine.exists()


def test_what_this_host_cannot_check_is_kept_until_stale(tmp_path: Path) -> None:
    pid, started, namespace, rand, _host = scratch_name().lstrip("@").split(".", 4)
    elsewhere = tmp_path / f".abc.part@{pid}.{started}.{namespace}.{rand}.other-host.example"
    untagged = tmp_path / "0123456789abcdef"  # a partial upload of an older version
    model = tmp_path / ("f" * 64)  # not scratch at all: a cached model directory
    for path in (elsewhere, untagged, model):
        path.mkdir()
    assert sweep(tmp_path) == 0 and sweep(tmp_path, only_scratch=True) == 0
    for path in (elsewhere, untagged, model):
        _age(path, STALE_AFTER_SECONDS + 60)
    assert sweep(tmp_path) == 1  # only the tagged one: the others may not be scratch
    assert not elsewhere.exists() and untagged.exists() and model.exists()
    assert sweep(tmp_path, only_scratch=True) == 2
    assert list(tmp_path.iterdir()) == []


def test_scratch_dir_is_removed_on_exit_and_sweeps_its_parent(tmp_path: Path) -> None:
    proc, left = _hold(tmp_path, tmp_path.parent / f"{tmp_path.name}.marker")
    _killed(proc)
    with scratch_dir(tmp_path) as d:
        assert not left.exists()  # swept on the way in
        (d / "f").write_bytes(b"x")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError), scratch_dir(tmp_path) as d:
        raise RuntimeError("a failing save")
    assert not d.exists()


LOGGER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from modelyard.client import Client
    from modelyard.config import Settings

    home, marker = sys.argv[1], Path(sys.argv[2])
    x = np.random.default_rng(0).normal(size=(40, 3))
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(np.int64))

    def killed_here(self, path, *args, **kwargs):  # saved, not yet uploaded
        marker.write_text(str(path))
        time.sleep(120)

    Client.register_model = killed_here
    Client(home, settings=Settings(home=home)).log_model(model, "m", input_example=x[:3])
    """
)


@pytest.mark.slow
def test_a_kill_during_log_model_leaves_nothing_once_the_workspace_opens(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = Settings(home=home)
    Workspace.open(settings).close()
    marker = tmp_path / "saved"
    proc = subprocess.Popen([sys.executable, "-c", LOGGER, str(home), str(marker)])
    deadline = time.monotonic() + 120
    while not marker.exists() or not marker.read_text():
        assert proc.poll() is None, "log_model exited early"
        assert time.monotonic() < deadline, "log_model never saved the model"
        time.sleep(0.05)
    _killed(proc)
    saved = Path(marker.read_text())
    # The model was staged in the workspace, not in the system's temporary directory...
    assert saved.is_relative_to(settings.staging_dir) and (saved / "modelyard.json").exists()
    live, live_dir = _hold(settings.staging_dir, tmp_path / "live")  # an upload under way
    try:
        Workspace.open(settings).close()  # ...and the next start of anything removes it
        assert not saved.parent.exists()
        assert live_dir.exists()
    finally:
        _killed(live)
    Workspace.open(settings).close()
    assert list(settings.staging_dir.iterdir()) == []
