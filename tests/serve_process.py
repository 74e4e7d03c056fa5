"""`modelyard serve` as a child process on a free loopback port, for the tests that need the
real thing (workers, the loops process, signals, restarts)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx


def free_port() -> int:
    """A port nothing listens on now (the OS's choice on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServeProcess:
    """`modelyard serve` on ``home`` (and ``database_url``, if given), started and stopped at
    will; its stderr goes to ``home/serve.log`` (read it when a test fails)."""

    def __init__(
        self,
        home: Path,
        *,
        database_url: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "MODELYARD_HOME": str(home), **(env or {})}
        if database_url:
            self.env["MODELYARD_DATABASE_URL"] = database_url
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *options: str, workers: int = 1, ready_seconds: float = 60) -> None:
        """Start it (``options``: more `serve` options) and wait until it is ready."""
        command = [sys.executable, "-m", "modelyard", "serve", "--port", str(self.port)]
        self.home.mkdir(parents=True, exist_ok=True)
        with (self.home / "serve.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [*command, "--workers", str(workers), *options], env=self.env, stderr=log
            )
        deadline = time.monotonic() + ready_seconds
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/v2/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None, "modelyard serve exited early (see serve.log)"
            time.sleep(0.1)
        raise AssertionError("modelyard serve did not become ready")

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, then wait for the graceful shutdown (killed after ``timeout`` s); the
        exit status (None: it was not running)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"modelyard serve did not stop within {timeout} s") from None

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
