"""The rollout routes on a real server: start, read, pause, resume, abort, promote, run, and
every refusal as a problem document that says what to fix."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.config import Settings
from modelyard.rollouts import Rollout
from modelyard.workspace import Workspace
from tests.conftest import LiveServer
from tests.rollouts.conftest import Traffic, register_versions, send

FAST = {"interval_seconds": 10, "min_requests": 50}


@pytest.fixture
def api(fraud_sqlite: Workspace, live_server: LiveServer) -> Iterator[httpx.Client]:
    """An HTTP client on the API of a workspace with fraud v1 (champion), v2 and an endpoint
    fraud on models:/fraud@champion."""
    with httpx.Client(base_url=live_server.url + "/api/v1", timeout=30) as http:
        yield http


def problem(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    detail: str = r.json()["detail"]
    return detail


def rollout(r: httpx.Response, status: int = 200) -> Rollout:
    assert r.status_code == status, r.text
    return Rollout.model_validate(r.json())


def test_start_read_and_list(api: httpx.Client, fraud_sqlite: Workspace) -> None:
    started = rollout(
        api.post(
            "/rollouts",
            json={"endpoint": "fraud", "to": "models:/fraud/2", "plan": {"steps": [10, 50, 100]}},
        ),
        201,
    )
    assert (started.phase, started.step, started.weight) == ("canary", 0, 10.0)
    assert started.baseline == "models:/fraud@champion" and started.target == "models:/fraud/2"
    assert started.plan.finish == "alias" and started.plan.interval_seconds == 30.0  # defaults
    assert [e.kind for e in started.events] == ["started"]
    assert rollout(api.get(f"/rollouts/{started.id}")) == started
    assert rollout(api.get("/rollouts/fraud")).id == started.id  # by the endpoint's name
    routes = fraud_sqlite.endpoints.get("fraud").policy.routes
    assert [(r.target, r.weight) for r in routes] == [
        ("models:/fraud@champion", 90.0),
        ("models:/fraud/2", 10.0),
    ]

    def ids(**params: Any) -> list[str]:
        r = api.get("/rollouts", params=params)
        assert r.status_code == 200, r.text
        return [item["id"] for item in r.json()]

    assert ids() == ids(active="true") == ids(endpoint="fraud") == [started.id]
    assert ids(active="false") == ids(endpoint="other") == []
    detail = problem(
        api.post("/rollouts", json={"endpoint": "fraud", "to": "models:/fraud/2"}), 409
    )
    assert f"has rollout {started.id} running" in detail and "rollouts abort fraud" in detail


def test_pause_resume_abort_and_what_an_ended_rollout_refuses(
    api: httpx.Client, fraud_sqlite: Workspace
) -> None:
    started = rollout(
        api.post("/rollouts", json={"endpoint": "fraud", "to": "models:/fraud/2"}), 201
    )
    paused = rollout(api.post("/rollouts/fraud/pause", json={"reason": "a dashboard looks odd"}))
    assert paused.paused and paused.events[-1].kind == "paused"
    assert paused.events[-1].detail == "a dashboard looks odd"
    assert "paused already" in problem(api.post("/rollouts/fraud/pause"), 409)
    resumed = rollout(api.post(f"/rollouts/{started.id}/resume"))
    assert not resumed.paused and resumed.step_started_at > started.step_started_at
    assert "is not paused" in problem(api.post("/rollouts/fraud/resume"), 409)
    aborted = rollout(api.post("/rollouts/fraud/abort", json={"reason": "wrong version"}))
    assert aborted.phase == "aborted" and aborted.weight == 0.0
    assert aborted.reason == "aborted by local: wrong version"
    endpoint = fraud_sqlite.endpoints.get("fraud")
    assert endpoint.policy.routes == [] and endpoint.policy.rollout is None
    for action in ("pause", "resume", "abort", "promote"):
        detail = problem(api.post(f"/rollouts/fraud/{action}"), 409)
        assert f"has ended (aborted); there is nothing to {action}" in detail
    assert api.get("/rollouts", params={"active": True}).json() == []
    # an abort without a body
    again = rollout(api.post("/rollouts", json={"endpoint": "fraud", "to": "models:/fraud/2"}), 201)
    assert rollout(api.post(f"/rollouts/{again.id}/abort")).reason == "aborted by local"


def test_promote_moves_the_alias(api: httpx.Client, fraud_sqlite: Workspace) -> None:
    rollout(api.post("/rollouts", json={"endpoint": "fraud", "to": "models:/fraud/2"}), 201)
    promoted = rollout(api.post("/rollouts/fraud/promote"))
    assert promoted.phase == "succeeded" and promoted.weight == 100.0
    assert promoted.reason == "promoted by local: @champion moved to v2"
    assert fraud_sqlite.registry.get_alias("fraud", "champion").version == 2
    endpoint = fraud_sqlite.endpoints.get("fraud")
    assert endpoint.target == "models:/fraud@champion" and endpoint.policy.routes == []


def test_finish_endpoint_points_the_endpoint_at_the_version(
    api: httpx.Client, fraud_sqlite: Workspace
) -> None:
    body = {"endpoint": "fraud", "to": "models:/fraud/2", "plan": {"finish": "endpoint"}}
    rollout(api.post("/rollouts", json=body), 201)
    assert rollout(api.post("/rollouts/fraud/promote")).phase == "succeeded"
    assert fraud_sqlite.endpoints.get("fraud").target == "models:/fraud/2"
    assert fraud_sqlite.registry.get_alias("fraud", "champion").version == 1


def test_analyses_come_with_their_checks(api: httpx.Client, fraud_sqlite: Workspace) -> None:
    ws = fraud_sqlite
    started = rollout(
        api.post("/rollouts", json={"endpoint": "fraud", "to": "models:/fraud/2", "plan": FAST}),
        201,
    )
    send(ws, Traffic(seed=1), at=started.step_started_at)
    ws.rollouts.tick(started.id, started.next_analysis_at + timedelta(seconds=1))
    stepped = rollout(api.get("/rollouts/fraud"))
    assert stepped.weight == 25.0 and stepped.analysis_count == 1
    (analysis,) = stepped.analyses
    assert analysis.verdict == "pass" and analysis.canary_requests > 50
    assert {"errors", "latency", "outputs"} <= {c.name for c in analysis.checks}
    assert all(c.summary for c in analysis.checks)
    listed = api.get("/rollouts").json()
    assert [a["verdict"] for a in listed[0]["analyses"]] == ["pass"]


def test_run_is_one_controller_pass(api: httpx.Client) -> None:
    body = {"endpoint": "fraud", "to": "models:/fraud/2", "plan": {"deadline_seconds": 1}}
    rollout(api.post("/rollouts", json=body), 201)
    r = api.post("/rollout-passes")
    assert r.status_code == 200 and r.json() == {"acted": [], "errors": [], "skipped": False}
    time.sleep(1.1)
    acted = api.post("/rollout-passes").json()["acted"]
    assert acted == ["fraud: rolled back: the deadline passed (1 s after the start)"]
    assert rollout(api.get("/rollouts/fraud")).phase == "rolled_back"


@pytest.mark.parametrize(
    ("plan", "needle"),
    [
        ({"steps": [50, 20]}, "plan.steps: steps must increase, e.g. [5, 25, 50, 100]"),
        ({"steps": []}, "plan.steps: List should have at least 1 item"),
        ({"steps": [5, 101]}, "plan.steps.1: Input should be less than or equal to 100"),
        (
            {"interval_seconds": 0},
            "plan.interval_seconds: Input should be greater than or equal to 1",
        ),
        ({"interval_seconds": True}, "plan.interval_seconds: a boolean is not a number"),
        ({"min_requests": 2.5}, "plan.min_requests: Input should be a valid integer"),
        ({"early_errors": 1}, "plan.early_errors: Input should be a valid boolean"),
        ({"thresholds": {"alpha": 0.7}}, "plan.thresholds.alpha: Input should be less than 0.5"),
        ({"thresholds": {"max_p99_ms": True}}, "a boolean is not a number"),
        ({"interval": 10}, "plan.interval: Extra inputs are not permitted"),
        ({"thresholds": {"p99": 3}}, "plan.thresholds.p99: Extra inputs are not permitted"),
        ({"finish": "now"}, "plan.finish: Input should be 'alias' or 'endpoint'"),
        ({"alias": "bad alias"}, "plan.alias: alias 'bad alias' is not valid"),
        ({"sticky": {"header": "x-user", "field": "user"}}, "not both"),
        ({"webhooks": ["ftp://example.com"]}, "plan.webhooks.0: String should match"),
    ],
)
def test_a_bad_plan_is_a_422_that_says_what_to_fix(
    api: httpx.Client, plan: dict[str, Any], needle: str
) -> None:
    r = api.post("/rollouts", json={"endpoint": "fraud", "to": "models:/fraud/2", "plan": plan})
    assert needle in problem(r, 422)
    assert api.get("/rollouts").json() == []


def test_other_refusals(api: httpx.Client) -> None:
    def start(**body: Any) -> httpx.Response:
        return api.post("/rollouts", json={"endpoint": "fraud", "to": "models:/fraud/2", **body})

    assert "no rollout 'nope'" in problem(api.get("/rollouts/nope"), 404)
    assert "no rollout 'nope'" in problem(api.post("/rollouts/nope/pause"), 404)
    assert "nope" in problem(start(endpoint="nope"), 404)
    assert "fraud" in problem(start(to="models:/fraud/9"), 404)
    detail = problem(start(to="models:/fraud@champion"), 409)
    assert "already serves models:/fraud/1" in detail
    assert "is not a model URI" in problem(start(to="models:/fraud/x"), 422)
    assert "to: Field required" in problem(api.post("/rollouts", json={"endpoint": "fraud"}), 422)
    assert "extra" in problem(start(plann={}), 422).lower()
    assert "limit" in problem(api.get("/rollouts", params={"limit": 0}), 422)
    assert "reason" in problem(api.post("/rollouts/fraud/pause", json={"reason": 3}), 422)
    assert "not valid JSON" in problem(
        api.post("/rollouts", content=b"{", headers={"content-type": "application/json"}), 400
    )


@pytest.fixture
def governed(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A server with auth on over fraud, which an alias policy governs, and tokens by role."""
    from modelyard.api.app import create_app

    ws = Workspace.open(Settings(home=tmp_path / "governed", auth=True))
    register_versions(ws)
    ws.policies.set("guarded", scope="model:fraud", approvals=1)
    tokens = {}
    for name, role in [("vi", "viewer"), ("ed", "editor"), ("de", "deployer")]:
        ws.identities.create_user(name, role)
        tokens[name] = ws.identities.create_token(name).secret
    server = LiveServer(create_app(workspace=ws))
    try:
        yield server.url + "/api/v1", tokens
    finally:
        server.stop()
        ws.close()


def test_who_may_start_and_promote(governed: tuple[str, dict[str, str]]) -> None:
    url, tokens = governed

    def call(method: str, path: str, who: str, **kwargs: Any) -> httpx.Response:
        auth = {"authorization": f"Bearer {tokens[who]}"}
        return httpx.request(method, url + path, headers=auth, **kwargs)

    body = {"endpoint": "fraud", "to": "models:/fraud/2"}
    assert "needs editor" in problem(call("POST", "/rollouts", "vi", json=body), 403)
    # the route lets an editor in; the governed model needs the deploy permission
    detail = problem(call("POST", "/rollouts", "ed", json=body), 403)
    assert "send an endpoint's traffic to models:/fraud/2" in detail
    started = rollout(call("POST", "/rollouts", "de", json=body), 201)
    assert started.started_by == "de"
    assert rollout(call("GET", "/rollouts/fraud", "vi")).id == started.id
    assert "needs editor" in problem(call("POST", "/rollouts/fraud/pause", "vi"), 403)
    # promoting moves @champion, which the policy guards with an approval
    assert "approval" in problem(call("POST", "/rollouts/fraud/promote", "de"), 403)
    assert rollout(call("GET", "/rollouts/fraud", "vi")).phase == "canary"
    assert call("POST", "/rollouts/fraud/abort", "ed").status_code == 200
    assert httpx.get(url + "/rollouts").status_code == 401
