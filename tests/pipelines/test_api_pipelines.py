"""Pipelines over the HTTP API: register, start a run in its own process, read it back;
triggers, promotions, delivery, maturity, approvals; bad input gets 4xx problems."""

from __future__ import annotations

import time

import httpx

from modelyard.workspace import Workspace
from tests.conftest import LiveServer

SOURCE = "tests.pipelines.test_cli_pipelines:nums_pipeline"


def test_pipelines_over_http(workspace: Workspace, live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url + "/api/v1", timeout=60) as http:
        r = http.post("/pipelines", json={"name": "nums", "source": SOURCE})
        assert r.status_code == 201, r.text
        assert [p["name"] for p in http.get("/pipelines").json()["items"]] == ["nums"]

        r = http.post("/pipelines/nums/runs", json={"params": {"n": 4}, "executor": "inprocess"})
        assert r.status_code == 202, r.text
        run_id = r.json()["run_id"]
        deadline = time.monotonic() + 60
        while (run := http.get(f"/pipeline-runs/{run_id}").json())["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert run["status"] == "succeeded", run
        assert {s["name"] for s in run["steps"]} == {"numbers", "total"}
        assert http.get("/pipeline-runs", params={"pipeline": "nums"}).json()["items"]

        r = http.post(
            "/triggers",
            json={"name": "hourly", "pipeline": "nums", "kind": "schedule", "cron": "0 * * * *"},
        )
        assert r.status_code == 201, r.text
        assert http.get("/triggers/hourly").json()["cron"] == "0 * * * *"
        assert http.get("/trigger-events").json() == []
        assert http.get("/promotions").json() == []
        assert http.get("/delivery").json()["models"] == []
        assert http.get("/maturity").json()["level"] >= 0
        assert http.get("/approvals", params={"status": "pending"}).json() == []

        # Bad input: 4xx with a problem body, nothing stored.
        assert http.post(
            "/pipelines", json={"name": "x", "source": "no.such:thing"}
        ).status_code in (
            404,
            422,
        )
        assert http.post("/pipelines/ghost/runs", json={}).status_code == 404
        r = http.post(
            "/triggers",
            json={"name": "t", "pipeline": "nums", "kind": "schedule", "cron": "every day"},
        )
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem")
        assert (
            http.post(
                "/triggers",
                json={"name": "t", "pipeline": "ghost", "kind": "schedule", "cron": "0 * * * *"},
            ).status_code
            == 404
        )
        assert http.get("/approvals", params={"status": "maybe"}).status_code == 422
        assert http.post("/approvals/01ARZ3NDEKTSV4RRFFQ69G5FAV/approve").status_code == 404
        assert [t["name"] for t in http.get("/triggers").json()] == ["hourly"]
