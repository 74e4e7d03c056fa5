"""The gateway's plan cache: a restart serves the cached plans only while they are current."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from tests.serving.conftest import GatewayServer

from modelyard.config import Settings
from modelyard.serving import plans
from modelyard.serving.gateway import Gateway
from modelyard.workspace import Workspace


def _log(ws: Workspace, model: object, X: pd.DataFrame, name: str = "fraud") -> int:
    from modelyard.client import Client

    c = Client(str(ws.settings.resolved_home), settings=ws.settings)
    version = c.log_model(model, name, input_example=X.head(5)).version
    c.close()
    return version


def _body(X: pd.DataFrame) -> dict[str, object]:
    return {"dataframe_split": X.head(1).to_dict(orient="split", index=False)}


def _served_version(url: str, X: pd.DataFrame) -> int:
    r = httpx.post(f"{url}/endpoints/fraud/invocations", json=_body(X))
    assert r.status_code == 200, r.text
    return int(r.headers["x-modelyard-version"].removeprefix("fraud/"))


@pytest.fixture
def deployed(gateway_ws: Workspace, models, frame) -> Workspace:  # type: ignore[no-untyped-def]
    X, _ = frame
    v1 = _log(gateway_ws, models["lr"], X)
    gateway_ws.registry.set_alias("fraud", "champion", v1)
    gateway_ws.endpoints.create("fraud", "models:/fraud@champion")
    return gateway_ws


def test_endpoint_changes_write_a_cache_that_matches_the_registry(deployed: Workspace) -> None:
    cached = plans.read(deployed.settings)
    assert cached is not None
    fresh = plans.resolve(deployed)
    assert cached == fresh
    (plan,) = cached.plans
    version, weight, runtime = plan.routes[0]
    assert (plan.endpoint.name, version.version, weight, runtime) == ("fraud", 1, 1.0, "onnx")
    assert set(plan.onnx_files) == {("fraud", 1)}

    deployed.endpoints.update("fraud", timeout_ms=500)
    updated = plans.read(deployed.settings)
    assert updated is not None and updated.stamp > cached.stamp
    assert updated.plans[0].endpoint.timeout_ms == 500

    deployed.endpoints.delete("fraud")
    emptied = plans.read(deployed.settings)
    assert emptied is not None and emptied.plans == [] and emptied.errors == {}


def test_any_audited_change_makes_the_cache_stale(deployed: Workspace, models, frame) -> None:  # type: ignore[no-untyped-def]
    X, _ = frame
    assert plans.read(deployed.settings) is not None
    v2 = _log(deployed, models["lr2"], X)  # registering a version is audited too
    assert plans.read(deployed.settings) is None
    plans.refresh(deployed)
    assert plans.read(deployed.settings) is not None
    deployed.registry.set_alias("fraud", "champion", v2)
    assert plans.read(deployed.settings) is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # cut short
        lambda text: "[]",
        lambda text: json.dumps({**json.loads(text), "plans": [{"endpoint": {}}]}),
        lambda text: json.dumps({**json.loads(text), "key": {"format": 0}}),
        lambda text: json.dumps({**json.loads(text), "stamp": json.loads(text)["stamp"] - 1}),
    ],
    ids=["truncated", "not-an-object", "bad-plan", "other-key", "other-stamp"],
)
def test_a_damaged_or_foreign_cache_is_ignored(deployed: Workspace, damage, frame) -> None:  # type: ignore[no-untyped-def]
    X, _ = frame
    path = deployed.settings.resolved_home / plans.FILE_NAME
    path.write_text(damage(path.read_text()))
    assert plans.read(deployed.settings) is None

    server = GatewayServer(deployed)  # starts from the store instead
    try:
        assert _served_version(server.start(), X) == 1
    finally:
        server.stop()
    assert plans.read(deployed.settings) == plans.resolve(deployed)  # and rewrote the cache


def test_a_change_made_while_no_gateway_ran_is_served_at_start(deployed, models, frame) -> None:  # type: ignore[no-untyped-def]
    X, _ = frame
    v2 = _log(deployed, models["lr2"], X)
    deployed.registry.set_alias("fraud", "champion", v2)
    server = GatewayServer(deployed)
    try:
        assert _served_version(server.start(), X) == v2
    finally:
        server.stop()


def test_cached_plans_are_checked_against_the_store_after_start(deployed, models, frame) -> None:  # type: ignore[no-untyped-def]
    """Plans that claim to be current but are not (edited by hand) last one refresh."""
    X, _ = frame
    v2 = _log(deployed, models["lr2"], X)
    deployed.registry.set_alias("fraud", "champion", v2)
    plans.resolve(deployed)  # records version 2's ONNX check (an audited change)
    wrong = plans.resolve(deployed)
    wrong.plans[0].routes[0] = (deployed.registry.get_version("fraud", 1), 1.0, "onnx")
    plans.write(deployed.settings, wrong)
    assert plans.read(deployed.settings) == wrong  # taken for current

    server = GatewayServer(deployed)
    try:
        url = server.start()
        deadline = time.monotonic() + 10
        while _served_version(url, X) != v2:
            assert time.monotonic() < deadline, "the gateway kept the cached plans"
            time.sleep(0.05)
        assert server.gateway.settled.wait(5)  # the refresh that read the store
    finally:
        server.stop()
    assert plans.read(deployed.settings) == plans.resolve(deployed)


def test_no_cache_without_sqlite(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url="postgresql://postgres@127.0.0.1/test")
    plans.write(settings, plans.Resolved(1, [], {}))
    assert not (tmp_path / plans.FILE_NAME).exists()
    assert plans.read(settings) is None


def test_a_read_only_home_does_not_fail_the_change(deployed: Workspace) -> None:
    path = deployed.settings.resolved_home / plans.FILE_NAME
    path.unlink()
    path.mkdir()  # os.replace onto a directory fails
    deployed.endpoints.update("fraud", timeout_ms=700)
    assert deployed.endpoints.get("fraud").timeout_ms == 700
    assert plans.read(deployed.settings) is None


def test_a_gateway_answers_from_the_cache_before_loading_the_metadata_store(
    deployed: Workspace, frame
) -> None:  # type: ignore[no-untyped-def]
    X, _ = frame
    code = f"""
import asyncio, json, sys
from modelyard.config import Settings
from modelyard.workspace import Workspace
from modelyard.serving.gateway import Gateway
from modelyard.serving.wire import hot_route

async def main():
    ws = Workspace.open(Settings(home={str(deployed.settings.resolved_home)!r}), migrate=False)
    gateway = Gateway(ws)
    await gateway.start()
    reply = await gateway.infer(
        hot_route("/endpoints/fraud/invocations"),
        {{b"content-type": b"application/json"}},
        body={json.dumps(_body(X)).encode()!r},
    )
    print(reply.status, reply.version.decode(), "sqlalchemy" in sys.modules)
    print("settled" if gateway.settled.is_set() else "unsettled")
    await gateway.stop()

asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # Not settled yet: the store is read by the first refresh (and objects loaded by then
    # are frozen for the garbage collector only after it, see server._freeze_when_settled).
    assert out.stdout.split() == ["200", "fraud/1", "False", "unsettled"]

    (deployed.settings.resolved_home / plans.FILE_NAME).unlink()  # the control experiment
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["200", "fraud/1", "True", "settled"]


def test_gateway_writes_the_cache_after_it_syncs(deployed: Workspace) -> None:
    (deployed.settings.resolved_home / plans.FILE_NAME).unlink()
    import asyncio

    async def run() -> None:
        gateway = Gateway(deployed, refresh_seconds=60)
        await gateway.start()
        await gateway.stop()

    asyncio.run(run())
    assert plans.read(deployed.settings) == plans.resolve(deployed)


def test_the_server_makes_the_cache_current_before_forking(deployed: Workspace) -> None:
    from modelyard.server import _refresh_plans

    path = deployed.settings.resolved_home / plans.FILE_NAME
    path.unlink()
    _refresh_plans(deployed.settings)
    assert plans.read(deployed.settings) == plans.resolve(deployed)

    path.unlink()
    broken = deployed.settings.model_copy(
        update={"database_url": f"sqlite:///{deployed.settings.resolved_home / 'missing' / 'x.db'}"}
    )
    _refresh_plans(broken)  # the workers will resolve for themselves and report it
    assert not path.exists()
