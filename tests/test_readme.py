"""Every shell block of README.md and docs/quickstart.md runs, in order, as written.

Each page's ```bash blocks run in one bash process (``set -e``: the first command that fails
fails the test and names its block), so a server started in the background by one block
answers the next, as in a reader's terminal. The run has a fresh working folder and
``MODELYARD_HOME``; ``examples`` is importable as from the checkout's root.

One adaptation: the blocks that install the package and run this very test suite. This test
runs inside that installation, so the ``pip install ... &&`` in front of a command is dropped,
and the line that runs the tests is not run again from inside them.

Run alone with ``python -m pytest -m readme``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.readme, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/quickstart.md"]
BLOCK = re.compile(r"^```(?:bash|sh|shell)\n(.*?)^```", re.MULTILINE | re.DOTALL)
INSTALL = re.compile(r"^pip install [^&]*&&\s*")
TEST_COMMAND = "python -m pytest"
PORT = 8080  # the README's


def shell_blocks(page: Path) -> list[str]:
    """The shell blocks of ``page``, adapted as the module docstring says."""
    blocks = []
    for block in BLOCK.findall(page.read_text()):
        lines = [INSTALL.sub("", line) for line in block.splitlines()]
        blocks.append("\n".join(line for line in lines if TEST_COMMAND not in line))
    return blocks


def script(blocks: list[str]) -> str:
    parts = ["set -e"]
    for i, block in enumerate(blocks, 1):
        parts += [f"echo '>>> block {i}' >&2", block]
    return "\n".join(parts) + "\n"


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait_port_free(port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not _port_free(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_the_install_block_is_adapted_and_nothing_else() -> None:
    blocks = shell_blocks(ROOT / "README.md")
    assert blocks[0].splitlines()[0].startswith("modelyard quickstart")
    assert TEST_COMMAND not in "\n".join(blocks)
    # Only the first block installs; every later block runs exactly as printed.
    raw = BLOCK.findall((ROOT / "README.md").read_text())
    assert [b.rstrip("\n") for b in raw[1:]] == blocks[1:]


@pytest.mark.parametrize("page", PAGES)
def test_every_shell_block_runs(page: str, tmp_path: Path) -> None:
    blocks = shell_blocks(ROOT / page)
    assert blocks, f"{page} has no shell blocks"
    assert _wait_port_free(PORT, 30), f"port {PORT} is taken; the pages' servers need it"
    env = {
        **os.environ,
        "MODELYARD_HOME": str(tmp_path / "home"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "NO_COLOR": "1",
    }
    for name in list(env):
        if name.startswith("MODELYARD_") and name != "MODELYARD_HOME":
            del env[name]
    work = tmp_path / "work"
    work.mkdir()
    log = tmp_path / "output.txt"
    with log.open("w") as out:
        # A file, not a pipe: a server left in the background would hold a pipe open.
        proc = subprocess.Popen(
            ["bash", "-c", script(blocks)],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its background servers share its process group
        )
        try:
            proc.wait(timeout=400)
        finally:
            # What the blocks left running (modelyard serve &), as a reader's kill %1 would.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            _wait_port_free(PORT, 30)
    output = log.read_text()
    failed = re.findall(r">>> block (\d+)", output)
    assert proc.returncode == 0, (
        f"{page}: block {failed[-1] if failed else '?'} failed (exit {proc.returncode}):\n"
        f"{output[-6000:]}"
    )
    assert "Traceback" not in output, output[-6000:]
