"""A pipeline run started over the API acts as its starter: its steps may change what the
starter may, and a protected alias refuses them as it refuses the starter."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from tests.conftest import LiveServer

from modelyard.client import Client
from modelyard.config import Settings
from modelyard.pipelines import StepContext, pipeline, step
from modelyard.workspace import Workspace

X = pd.DataFrame(np.random.default_rng(9).normal(size=(30, 2)), columns=["a", "b"])


@step(cache=False)
def move_champion(version: int, ctx: StepContext) -> str:
    """A step that moves @champion directly, as a careless (or hostile) pipeline might."""
    return ctx.client.set_alias("fraud", "champion", version).model_dump_json()


@pipeline(name="mover")
def mover(version: int = 2) -> None:
    move_champion(version=version)


def run_as(url: str, token: str) -> dict:
    auth = {"authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url + "/api/v1", headers=auth, timeout=60) as http:
        r = http.post("/pipelines/mover/runs", json={"params": {}, "executor": "inprocess"})
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 60
        while (run := http.get(f"/pipeline-runs/{r.json()['run_id']}").json())["status"] == (
            "running"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        return dict(run)


@pytest.mark.timeout(180)
def test_a_run_acts_as_the_user_who_started_it(tmp_path: Path) -> None:
    from modelyard.api.app import create_app

    ws = Workspace.open(Settings(home=tmp_path / "home", auth=True))
    model = LogisticRegression().fit(X, (X.a > 0).astype(int))
    with Client(settings=ws.settings) as client:
        for _ in range(2):
            client.log_model(model, "fraud", input_example=X.head(3))
    ws.registry.set_alias("fraud", "champion", 1)
    ws.pipelines.register("mover", "tests.governance.test_pipeline_identity:mover")
    ws.policies.set("fraud-prod", "model:fraud", approvals=0)  # a deployer moves it alone
    ws.identities.create_user("ed", "editor")
    ws.identities.create_user("dee", "deployer")
    ed, dee = (ws.identities.create_token(u).secret for u in ("ed", "dee"))
    server = LiveServer(create_app(workspace=ws))
    try:
        refused = run_as(server.url, ed)
        assert refused["status"] == "failed"
        assert "protected by policy 'fraud-prod'" in refused["error"]
        assert "ed does not hold role deployer" in refused["error"]
        assert ws.registry.get_alias("fraud", "champion").version == 1

        moved = run_as(server.url, dee)
        assert moved["status"] == "succeeded", moved
        assert ws.registry.get_alias("fraud", "champion").version == 2
        assert ws.audit.list(action="alias.set").items[0].actor == "dee"
    finally:
        server.stop()
        ws.close()
