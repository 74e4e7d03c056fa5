"""Signed models in serving: the gateway verifies each version once, when it loads it, and
keeps answering from the version it has when a new one is refused; batch scoring refuses too."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
from tests.serving.conftest import FEATURES, GatewayServer

from modelyard.artifacts import parse_digest
from modelyard.client import Client
from modelyard.registry import ModelVersion
from modelyard.workspace import Workspace


def register(ws: Workspace, model: object, X: pd.DataFrame) -> ModelVersion:
    c = Client(str(ws.settings.resolved_home), settings=ws.settings)
    version: ModelVersion = c.log_model(model, "fraud", input_example=X.head(5))
    c.close()
    return version


def blob_path(ws: Workspace, digest: str) -> Path:
    hexpart = parse_digest(digest)
    return Path(ws.settings.resolved_artifact_root) / "blobs" / "sha256" / hexpart[:2] / hexpart[2:]


def tamper(ws: Workspace, version: ModelVersion) -> tuple[str, Path, bytes]:
    """Overwrite the version's model file in the artifact store and drop the local copy made
    at registration (as on a gateway host that never loaded it): (file, blob path, original)."""
    files = version.manifest["files"]
    name = max(files, key=lambda p: files[p]["size"])
    path = blob_path(ws, files[name]["digest"])
    original = path.read_bytes()
    path.write_bytes(original[:-16] + b"\0" * 16)
    shutil.rmtree(ws.settings.cache_dir / "models" / parse_digest(version.manifest_digest))
    return name, path, original


def body(X: pd.DataFrame) -> dict[str, object]:
    return {"dataframe_split": X.head(1).to_dict(orient="split", index=False)}


class Traffic:
    """Four clients sending requests until stopped; every answer is kept."""

    def __init__(self, url: str, X: pd.DataFrame) -> None:
        self.url, self.body = url, body(X)
        self.results: list[tuple[int, str | None]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._send) for _ in range(4)]
        for t in self.threads:
            t.start()

    def _send(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as c:
            deadline = time.monotonic() + 120  # bounded even if the test body fails
            while not self.stop.is_set() and time.monotonic() < deadline:
                r = c.post("/endpoints/fraud/invocations", json=self.body)
                self.results.append((r.status_code, r.headers.get("x-modelyard-version")))

    def finish(self) -> list[tuple[int, str | None]]:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)
        return self.results


def wait_for(condition, what: str, seconds: float = 30):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while True:
        found = condition()
        if found:
            return found
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def not_ready(url: str) -> str:
    return str(httpx.get(f"{url}/v2/health/ready").json()["not_ready"].get("fraud", ""))


def served_version(url: str, X: pd.DataFrame) -> str:
    r = httpx.post(f"{url}/endpoints/fraud/invocations", json=body(X))
    assert r.status_code == 200, r.text
    return str(r.headers["x-modelyard-version"])


def test_a_tampered_new_version_is_refused_and_the_old_one_keeps_serving(
    gateway: GatewayServer, models, frame
) -> None:  # type: ignore[no-untyped-def]
    ws = gateway.ws
    X, _ = frame
    ws.signing.create_key()
    register(ws, models["lr"], X)
    ws.registry.set_alias("fraud", "champion", 1)
    ws.endpoints.create("fraud", "models:/fraud@champion", runtime="native")
    url = gateway.start()
    assert served_version(url, X) == "fraud/1"
    v2 = register(ws, models["lr2"], X)
    file, path, original = tamper(ws, v2)

    traffic = Traffic(url, X)
    try:
        ws.registry.set_alias("fraud", "champion", 2)
        reason = wait_for(lambda: not_ready(url), "the gateway did not report the refusal")
        assert "still serving version 1" in reason
        assert f"UnverifiedModel: models:/fraud/2: file {file}" in reason
        assert "does not match its signed digest" in reason
        time.sleep(1.0)  # it retries at every refresh; requests keep being answered meanwhile
        assert served_version(url, X) == "fraud/1"
        assert httpx.get(f"{url}/v2/models/fraud/ready").status_code == 200
        metrics = httpx.get(f"{url}/metrics").text
        assert 'modelyard_endpoint_stale{endpoint="fraud"} 1.0' in metrics
        assert 'modelyard_endpoint_ready{endpoint="fraud"} 1.0' in metrics

        path.write_bytes(original)  # restored from a backup: the next retry loads it
        wait_for(lambda: served_version(url, X) == "fraud/2", "v2 was not served once restored")
        assert not_ready(url) == ""
        assert 'modelyard_endpoint_stale{endpoint="fraud"} 0.0' in httpx.get(f"{url}/metrics").text
    finally:
        results = traffic.finish()
    assert len(results) > 20
    assert [r for r in results if r[0] != 200] == []
    assert {r[1] for r in results} == {"fraud/1", "fraud/2"}


def test_unsigned_versions_are_refused_when_required_until_signed(
    gateway: GatewayServer, models, frame
) -> None:  # type: ignore[no-untyped-def]
    ws = gateway.ws
    X, _ = frame
    register(ws, models["lr"], X)
    register(ws, models["rf"], X)  # both registered before there was a key: unsigned
    ws.signing.create_key()
    ws.registry.sign_version("fraud", 1)
    ws.settings.require_signed_models = True
    ws.registry.set_alias("fraud", "champion", 1)
    ws.endpoints.create("fraud", "models:/fraud@champion")
    url = gateway.start()
    assert served_version(url, X) == "fraud/1"

    traffic = Traffic(url, X)
    try:
        ws.registry.set_alias("fraud", "champion", 2)
        reason = wait_for(lambda: not_ready(url), "the gateway did not report the refusal")
        assert "models:/fraud/2 is not signed by a trusted key" in reason
        assert "`modelyard models sign fraud 2`" in reason
        assert served_version(url, X) == "fraud/1"
        ws.registry.sign_version("fraud", 2)
        wait_for(lambda: served_version(url, X) == "fraud/2", "v2 was not served once signed")
    finally:
        results = traffic.finish()
    assert [r for r in results if r[0] != 200] == []
    assert {r[1] for r in results} == {"fraud/1", "fraud/2"}


def test_a_gateway_verifies_from_its_plan_cache_before_loading_the_metadata_store(
    gateway_ws: Workspace, models, frame
) -> None:  # type: ignore[no-untyped-def]
    """The signature is read with sqlite3 on the way to the first answer (no SQLAlchemy)."""
    ws = gateway_ws
    X, _ = frame
    ws.signing.create_key()
    register(ws, models["lr"], X)
    register(ws, models["lr2"], X)
    ws.registry.set_alias("fraud", "champion", 1)
    ws.endpoints.create("fraud", "models:/fraud@champion")  # writes the plan cache
    code = f"""
import asyncio, json, sys
from modelyard.config import Settings
from modelyard.workspace import Workspace
from modelyard.serving.gateway import Gateway
from modelyard.serving.wire import hot_route

async def main():
    settings = Settings(home={str(ws.settings.resolved_home)!r}, require_signed_models=True)
    gateway = Gateway(Workspace.open(settings, migrate=False))
    await gateway.start()
    reply = await gateway.infer(
        hot_route("/endpoints/fraud/invocations"),
        {{b"content-type": b"application/json"}},
        body={json.dumps(body(X)).encode()!r},
    )
    print(reply.status, "sqlalchemy" in sys.modules, json.dumps(gateway.state.not_ready))
    await gateway.stop()

asyncio.run(main())
"""
    run = [sys.executable, "-c", code]
    out = subprocess.run(run, capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip().split(maxsplit=2) == ["200", "False", "{}"]

    # A tampered version is refused on that path too, before the store is opened.
    ws.registry.set_alias("fraud", "champion", 2)
    ws.endpoints.update("fraud", timeout_ms=5000)  # rewrites the plan cache
    file, _, _ = tamper(ws, ws.registry.get_version("fraud", 2))
    out = subprocess.run(run, capture_output=True, text=True, check=True, timeout=120)
    status, uses_sqlalchemy, reasons = out.stdout.strip().split(maxsplit=2)
    assert (status, uses_sqlalchemy) == ("503", "False")
    assert f"models:/fraud/2: file {file}" in json.loads(reasons)["fraud"]


def test_batch_scoring_refuses_what_loading_refuses(
    run, monkeypatch, tmp_path: Path, models, frame
) -> None:  # type: ignore[no-untyped-def]
    X, _ = frame
    source = tmp_path / "rows.csv"
    X.head(50).to_csv(source, index=False)
    c = Client(str(tmp_path / "home"))
    c.log_model(models["lr"], "fraud", input_example=X.head(5))
    ws = c.workspace
    assert ws is not None
    args = ("predict", "models:/fraud/1", "-i", str(source), "-o", str(tmp_path / "out.csv"))
    monkeypatch.setenv("MODELYARD_REQUIRE_SIGNED_MODELS", "true")
    try:
        refused = run(*args, ok=False)
        assert refused.returncode == 5
        assert "models:/fraud/1 is not signed by a trusted key" in refused.stderr
        run("keys", "create")
        assert "signed with key" in run("models", "sign", "fraud", "1").stdout
        assert "wrote 50 rows" in run(*args).stdout
        assert set(FEATURES) <= set(pd.read_csv(tmp_path / "out.csv").columns)

        file, _, _ = tamper(ws, ws.registry.get_version("fraud", 1))
        refused = run(*args, ok=False)
        assert refused.returncode == 5
        assert f"models:/fraud/1: file {file}" in refused.stderr.replace("\n", "")
        verified = run("models", "verify", "fraud", "1", ok=False)
        assert verified.returncode == 1 and "tampered" in verified.stdout
    finally:
        c.close()
