"""`modelyard serve --metrics-address` as a real process, with auth on and two workers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from modelyard.client import Client
from modelyard.config import Settings

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_metrics_on_its_own_address_and_wants_tokens_elsewhere(
    tmp_path: Path, models, frame
) -> None:  # type: ignore[no-untyped-def]
    X, _ = frame
    home = tmp_path / "home"
    settings = Settings(home=home, auth=True)
    c = Client(str(home), settings=settings)
    c.log_model(models["lr"], "fraud", input_example=X.head(5))
    c.endpoints.create("fraud", "models:/fraud/1")
    ws = c.workspace
    assert ws is not None
    ws.identities.create_user("app")
    secret = ws.identities.create_token("app", endpoints=["fraud"]).secret
    c.close()
    port, metrics_port = _free_port(), _free_port()
    env = {**os.environ, "MODELYARD_HOME": str(home), "MODELYARD_AUTH": "true"}
    command = [sys.executable, "-m", "modelyard", "serve", "--port", str(port), "--workers", "2"]
    bad = subprocess.run(
        [*command, "--metrics-address", "nowhere"], env=env, capture_output=True, timeout=60
    )
    assert bad.returncode != 0 and b"is not HOST:PORT" in bad.stderr
    proc = subprocess.Popen(
        [*command, "--metrics-address", f"127.0.0.1:{metrics_port}"],
        env=env,
    )
    try:
        url, metrics = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, "modelyard serve exited early"
            assert time.monotonic() < deadline, "modelyard serve did not become ready"
            time.sleep(0.1)
        rows = {"instances": X.head(2).to_numpy().tolist()}
        endpoint = f"{url}/endpoints/fraud/invocations"
        assert httpx.post(endpoint, json=rows).status_code == 401
        headers = {"authorization": f"Bearer {secret}"}
        assert httpx.post(endpoint, json=rows, headers=headers).status_code == 200
        assert httpx.get(f"{url}/metrics").status_code == 401
        for _ in range(10):  # each worker listens there too (a new connection each time)
            r = httpx.get(f"{metrics}/metrics")
            assert r.status_code == 200 and 'modelyard_gateway_fast_path{reason=""} 1.0' in r.text
        assert httpx.post(f"{metrics}/endpoints/fraud/invocations", json=rows).status_code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=60)
