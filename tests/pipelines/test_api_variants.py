"""``POST /models/{name}/versions/{version}/variants`` on a real server: 201 with the report,
problem+json 4xx that says what to fix otherwise, nothing registered then."""

from __future__ import annotations

import httpx

from modelyard import Client
from modelyard.workspace import Workspace
from tests.conftest import LiveServer
from tests.pipelines.test_variants import CALLS, seed


def test_variants_over_http(workspace: Workspace, live_server: LiveServer) -> None:
    with Client(str(workspace.settings.resolved_home), settings=workspace.settings) as local:
        parent = seed(local)
    with httpx.Client(base_url=live_server.url + "/api/v1", timeout=60) as http:
        r = http.post(
            "/models/fraud/versions/1/variants",
            json={"distill": "tree", "name": "fraud-small", "max_depth": 2, "latency_calls": CALLS},
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["version"]["model"] == "fraud-small" and body["version"]["version"] == 1
        assert body["version"]["source"] == parent and body["kind"] == "distilled-tree"
        assert [m["role"] for m in body["measurements"]] == ["parent", "variant"]
        assert {"accuracy", "f1", "roc_auc"} <= set(body["measurements"][1]["metrics"])
        run = http.get(f"/runs/{body['run_id']}").json()
        assert run["metrics"]["accuracy"] == body["measurements"][1]["metrics"]["accuracy"]

        for payload, status, words in [
            ({}, 422, "exactly one of quantize"),
            ({"quantize": "int8", "distill": "tree"}, 422, "not both"),
            ({"quantize": "int8"}, 422, "--distill"),  # a tree ensemble does not quantise
            ({"distill": "tree", "target": "nope"}, 422, "no column 'nope'"),
            ({"distill": "tree", "latency_calls": 5}, 422, "latency_calls"),
        ]:
            r = http.post("/models/fraud/versions/1/variants", json=payload)
            assert r.status_code == status, (payload, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert words in r.json()["detail"] or words in r.text, (payload, r.text)
        r = http.post("/models/fraud/versions/1/variants", json={"quantize": "int4"})
        assert r.status_code == 422 and "quantize" in r.text
        assert (
            http.post("/models/ghost/versions/1/variants", json={"distill": "tree"}).status_code
            == 404
        )
        assert (
            http.post("/models/fraud/versions/9/variants", json={"distill": "tree"}).status_code
            == 404
        )
        assert http.get("/models/fraud").json()["latest_version"] == 1
