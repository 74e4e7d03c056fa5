"""A client that goes away mid-upload is not a server error: one INFO line, no traceback."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from modelyard.workspace import Workspace
from tests.conftest import LiveServer

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """``caplog``, with uvicorn's records too (its logger does not propagate)."""
    caplog.set_level(logging.INFO, logger="modelyard")
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        uvicorn_log.removeHandler(caplog.handler)


def _upload_half_and_close(port: int, path: str) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(
            f"PUT {path} HTTP/1.1\r\nHost: x\r\ncontent-type: application/octet-stream\r\n"
            "content-length: 1000000\r\n\r\n".encode()
            + b"x" * 50_000
        )


@pytest.mark.parametrize("route", ["artifact", "run artifact"])
def test_a_client_that_disconnects_mid_upload_is_logged_once_at_info(
    route: str, live_server: LiveServer, workspace: Workspace, logs: pytest.LogCaptureFixture
) -> None:
    if route == "artifact":
        path = f"/api/v1/artifacts/{DIGEST}"
    else:
        run = workspace.tracking.start_run("default")
        path = f"/api/v1/runs/{run.id}/artifacts/model.bin"
    _upload_half_and_close(live_server.port, path)
    deadline = time.monotonic() + 20
    while not (ours := [r for r in logs.records if r.name.startswith(("modelyard", "uvicorn"))]):
        assert time.monotonic() < deadline, "the server logged nothing about the disconnect"
        time.sleep(0.02)
    time.sleep(0.2)  # let anything else the request logs arrive (not an assertion)
    ours = [r for r in logs.records if r.name.startswith(("modelyard", "uvicorn"))]
    assert [(r.levelno, r.getMessage()) for r in ours] == [
        (logging.INFO, f"client disconnected during PUT {path}")
    ]
    assert ours[0].exc_info is None
    # nothing half-written is left, and the server answers the next client
    assert not workspace.artifacts.exists(DIGEST)
    assert list((workspace.settings.resolved_home / "artifacts" / "tmp").iterdir()) == []
    assert httpx.get(f"{live_server.url}/api/v1/health").status_code == 200
