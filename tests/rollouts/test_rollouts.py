"""Rollouts in the domain: start, the controller's verdicts and what it does with them."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import orjson
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard.client import Client
from modelyard.errors import Conflict, Forbidden, InvalidInput, NotFound
from modelyard.rollouts import Rollout, RolloutPlan
from modelyard.workspace import Workspace
from tests.rollouts.conftest import Traffic, passing_report, send, training_frame

FAST = {"interval_seconds": 10, "min_requests": 50}


def feed(ws: Workspace, rollout: Rollout, traffic: Traffic, **where: Any) -> None:
    """Traffic in the rollout's current step (the gateway logs it after the step began)."""
    send(ws, traffic, at=ws.rollouts.get(rollout.id).step_started_at, **where)


def due(ws: Workspace, rollout: Rollout) -> str:
    """One controller look at ``rollout`` just after its analysis falls due."""
    current = ws.rollouts.get(rollout.id)
    return ws.rollouts.tick(rollout.id, current.next_analysis_at + timedelta(seconds=1))


def test_start_routes_a_share_to_the_canary_and_one_rollout_per_endpoint(fraud: Workspace) -> None:
    ws = fraud
    rollout = ws.rollouts.start("fraud", "models:/fraud/2", FAST)
    assert (rollout.phase, rollout.step, rollout.weight) == ("canary", 0, 5.0)
    assert rollout.baseline == "models:/fraud@champion" and rollout.target == "models:/fraud/2"
    assert rollout.plan.finish == "alias" and rollout.plan.alias == "champion"
    policy = ws.endpoints.get("fraud").policy
    assert policy.rollout == rollout.id
    assert [(r.target, r.weight) for r in policy.routes] == [
        ("models:/fraud@champion", 95.0),
        ("models:/fraud/2", 5.0),
    ]
    with pytest.raises(Conflict, match=r"has rollout .* running"):
        ws.rollouts.start("fraud", "models:/fraud/2")
    with pytest.raises(Conflict, match="under rollout"):
        ws.endpoints.update("fraud", target="models:/fraud/2")
    with pytest.raises(Conflict, match="under rollout"):
        ws.endpoints.delete("fraud")
    # what a rollout does not drive still changes
    assert ws.endpoints.update("fraud", timeout_ms=5000).policy.rollout == rollout.id
    assert ws.rollouts.get("fraud").id == rollout.id  # by endpoint name
    assert [r.id for r in ws.rollouts.active()] == [rollout.id]
    actions = [r.action for r in ws.audit.list(entity_type="rollout").items]
    assert actions == ["rollout.start"]


def test_bad_starts_say_what_to_fix(fraud: Workspace) -> None:
    ws = fraud
    with pytest.raises(Conflict, match="already serves models:/fraud/1"):
        ws.rollouts.start("fraud", "models:/fraud@champion")
    with pytest.raises(NotFound):
        ws.rollouts.start("fraud", "models:/fraud/9")
    with pytest.raises(NotFound):
        ws.rollouts.start("nope", "models:/fraud/2")
    with pytest.raises(InvalidInput, match=r"plan\.steps: .*must increase"):
        ws.rollouts.start("fraud", "models:/fraud/2", {"steps": [50, 20]})
    with pytest.raises(InvalidInput, match=r"plan\.interval_seconds"):
        ws.rollouts.start("fraud", "models:/fraud/2", {"interval_seconds": 0})
    with pytest.raises(InvalidInput, match=r"policy\.rollout is set by"):
        ws.endpoints.update("fraud", policy={"rollout": "01X"})
    ws.endpoints.update(
        "fraud",
        policy={
            "routes": [
                {"target": "models:/fraud/1", "weight": 1},
                {"target": "models:/fraud/2", "weight": 1},
            ]
        },
    )
    with pytest.raises(Conflict, match="splits its traffic by hand"):
        ws.rollouts.start("fraud", "models:/fraud/2")
    assert ws.rollouts.list() == []


def test_a_good_canary_walks_every_step_and_moves_the_alias(fraud: Workspace) -> None:
    ws = fraud
    rollout = ws.rollouts.start("fraud", "models:/fraud/2", FAST)
    weights = []
    for step in range(4):
        current = ws.rollouts.get(rollout.id)
        weights.append(current.weight)
        feed(ws, rollout, Traffic(share=current.weight / 100, seed=step))
        done = due(ws, rollout)
        assert "rolled back" not in done, ws.rollouts.get(rollout.id).analyses[-1]
    assert weights == [5.0, 25.0, 50.0, 100.0]
    ended = ws.rollouts.get(rollout.id)
    assert ended.phase == "succeeded", ended.reason
    assert ws.registry.get_alias("fraud", "champion").version == 2
    endpoint = ws.endpoints.get("fraud")
    assert endpoint.target == "models:/fraud@champion"
    assert endpoint.policy.routes == [] and endpoint.policy.rollout is None
    assert [a.verdict for a in ended.analyses] == ["pass"] * 4
    assert ended.analyses[0].checks and all(c.summary for c in ended.analyses[0].checks)
    kinds = [e.kind for e in ended.events]
    assert kinds == ["started", "step", "step", "step", "passed", "succeeded"]
    assert ws.rollouts.active() == []
    # the endpoint is free again
    ws.endpoints.update("fraud", timeout_ms=2000)


@pytest.mark.parametrize(
    ("traffic", "check"),
    [
        (Traffic(canary_errors=0.2), "errors"),
        (Traffic(share=0.25, canary_ms=34.0), "latency"),
        (Traffic(share=0.25, canary_positive=0.85), "outputs"),
    ],
    ids=["errors", "latency", "outputs"],
)
def test_a_bad_canary_is_rolled_back_at_the_first_analysis(
    fraud: Workspace, traffic: Traffic, check: str
) -> None:
    ws = fraud
    plan = {**FAST, "early_errors": False}
    if traffic.share == 0.25:
        plan["steps"] = [25, 50, 100]
    rollout = ws.rollouts.start("fraud", "models:/fraud/2", plan)
    feed(ws, rollout, traffic)
    done = due(ws, rollout)
    assert done.startswith("rolled back"), done
    ended = ws.rollouts.get(rollout.id)
    assert ended.phase == "rolled_back" and ended.weight == 0.0
    failed = [c for c in ended.analyses[-1].checks if c.verdict == "fail"]
    assert [c.name for c in failed] == [check]
    assert failed[0].summary in ended.reason
    endpoint = ws.endpoints.get("fraud")
    assert endpoint.policy.routes == [] and endpoint.policy.rollout is None
    assert endpoint.target == "models:/fraud@champion"
    assert ws.registry.get_alias("fraud", "champion").version == 1
    assert ws.audit.list(action="rollout.rollback").items


def test_the_early_error_check_rolls_back_before_the_interval_ends(fraud_sqlite: Workspace) -> None:
    ws = fraud_sqlite
    rollout = ws.rollouts.start("fraud", "models:/fraud/2", {**FAST, "interval_seconds": 60})
    feed(ws, rollout, Traffic(requests=800, share=0.25, canary_errors=0.5))
    done = ws.rollouts.tick(rollout.id, rollout.started_at + timedelta(seconds=5))
    assert done.startswith("rolled back: early error check"), done
    ended = ws.rollouts.get(rollout.id)
    assert ended.analyses[-1].early and ended.analyses[-1].verdict == "fail"
    # a healthy canary is not judged early (once the first one's rows, 1 ms apart, are past)
    time.sleep(0.9)
    again = ws.rollouts.start("fraud", "models:/fraud/2", {**FAST, "interval_seconds": 60})
    feed(ws, again, Traffic(requests=800, share=0.25, seed=5))
    assert ws.rollouts.tick(again.id, again.started_at + timedelta(seconds=5)) == ""
    assert ws.rollouts.get(again.id).analyses == []


def test_too_little_traffic_is_inconclusive_then_rolled_back(fraud_sqlite: Workspace) -> None:
    ws = fraud_sqlite
    plan = {**FAST, "min_requests": 500, "max_inconclusive": 2}
    rollout = ws.rollouts.start("fraud", "models:/fraud/2", plan)
    feed(ws, rollout, Traffic(requests=300))
    assert due(ws, rollout) == ""
    first = ws.rollouts.get(rollout.id)
    assert first.phase == "canary" and first.inconclusive == 1
    assert first.analyses[-1].verdict == "inconclusive"
    done = due(ws, rollout)
    assert done.startswith("rolled back") and "inconclusive" in done and "min_requests" in done


def test_pause_resume_abort_and_promote(fraud_sqlite: Workspace) -> None:
    ws = fraud_sqlite
    rollout = ws.rollouts.start("fraud", "models:/fraud/2", FAST)
    paused = ws.rollouts.pause("fraud", "looking at a dashboard")
    assert paused.paused
    with pytest.raises(Conflict, match="paused already"):
        ws.rollouts.pause("fraud")
    feed(ws, rollout, Traffic(canary_errors=0.5))
    assert due(ws, rollout) == ""  # paused: no analysis acts
    resumed = ws.rollouts.resume(rollout.id)
    assert not resumed.paused and resumed.step_started_at > rollout.step_started_at
    promoted = ws.rollouts.promote("fraud")
    assert promoted.phase == "succeeded"
    assert ws.registry.get_alias("fraud", "champion").version == 2
    with pytest.raises(Conflict, match="has ended"):
        ws.rollouts.abort(rollout.id)
    # and an abort puts the baseline back
    second = ws.rollouts.start("fraud", "models:/fraud/1", FAST)
    aborted = ws.rollouts.abort(second.id, "wrong version")
    assert aborted.phase == "aborted" and "wrong version" in aborted.reason
    assert ws.endpoints.get("fraud").policy.routes == []
    assert ws.registry.get_alias("fraud", "champion").version == 2
    assert [r.id for r in ws.rollouts.list("fraud")] == [second.id, rollout.id]
    with pytest.raises(NotFound, match="no rollout"):
        ws.rollouts.get("nope")


def test_finish_endpoint_points_the_endpoint_at_the_version(fraud_sqlite: Workspace) -> None:
    ws = fraud_sqlite
    rollout = ws.rollouts.start(
        "fraud", "models:/fraud/2", {**FAST, "steps": [50, 100], "finish": "endpoint"}
    )
    for step in range(2):
        feed(ws, rollout, Traffic(share=ws.rollouts.get(rollout.id).weight / 100, seed=10 + step))
        due(ws, rollout)
    assert ws.rollouts.get(rollout.id).phase == "succeeded"
    assert ws.endpoints.get("fraud").target == "models:/fraud/2"
    assert ws.registry.get_alias("fraud", "champion").version == 1


def test_a_policy_holds_the_release_until_it_is_approved(fraud_sqlite: Workspace) -> None:
    ws = fraud_sqlite
    ws.policies.set("guarded", scope="model:fraud", approvals=1)
    rollout = ws.rollouts.start("fraud", "models:/fraud/2", {**FAST, "steps": [50, 100]})
    feed(ws, rollout, Traffic(share=0.5, seed=20))
    done = due(ws, rollout)
    assert done.startswith("waiting") and "approval" in done
    held = ws.rollouts.get(rollout.id)
    assert (held.phase, held.weight) == ("canary", 50.0) and "approval" in held.reason
    routes = ws.endpoints.get("fraud").policy.routes
    assert [r.weight for r in routes] == [50.0, 50.0]  # not all traffic before the approval
    approval = ws.approvals.request("models:/fraud/2@champion")
    ws.as_actor("alice").approvals.approve(approval.id)
    feed(ws, rollout, Traffic(share=0.5, seed=21))
    assert "canary at 100" in due(ws, rollout)
    feed(ws, rollout, Traffic(share=1.0, seed=22))
    due(ws, rollout)
    assert ws.rollouts.get(rollout.id).phase == "succeeded"
    assert ws.registry.get_alias("fraud", "champion").version == 2
    assert ws.approvals.get(approval.id).used_at is not None


def test_one_controller_acts_at_a_time(fraud_sqlite: Workspace) -> None:
    from modelyard.rollouts.service import RolloutService

    ws = fraud_sqlite
    first = RolloutService(ws, owner="a")
    second = RolloutService(ws, owner="b")
    assert not second.run_once().skipped  # nothing running: no lease taken, no write
    ws.rollouts.start("fraud", "models:/fraud/2", FAST)
    assert not first.run_once().skipped
    assert second.run_once().skipped
    first.release_lease()
    assert not second.run_once().skipped


def test_the_deadline_rolls_back(fraud_sqlite: Workspace) -> None:
    ws = fraud_sqlite
    rollout = ws.rollouts.start("fraud", "models:/fraud/2", {**FAST, "deadline_seconds": 30})
    done = ws.rollouts.tick(rollout.id, rollout.started_at + timedelta(seconds=31))
    assert done.startswith("rolled back: the deadline passed")


def test_webhooks_hear_the_end(fraud_sqlite: Workspace) -> None:
    heard: list[tuple[str, dict]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            heard.append((self.headers["x-modelyard-event"], orjson.loads(body)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ws = fraud_sqlite
        url = f"http://127.0.0.1:{server.server_port}/hook"
        rollout = ws.rollouts.start("fraud", "models:/fraud/2", {**FAST, "webhooks": [url]})
        feed(ws, rollout, Traffic(canary_errors=0.3))
        due(ws, rollout)
        deadline = threading.Event()
        for _ in range(100):
            if heard:
                break
            deadline.wait(0.05)
        assert heard and heard[0][0] == "rollout.rolled_back"
        body = heard[0][1]
        assert body["rollout"]["id"] == rollout.id and body["rollout"]["reason"]
        assert body["rollout"]["analyses"][-1]["verdict"] == "fail"
    finally:
        server.shutdown()


def test_a_pipeline_promotion_releases_through_a_rollout(fraud_sqlite: Workspace) -> None:
    from modelyard.pipelines.gates import get_promotion, promote

    ws = fraud_sqlite
    report = passing_report(ws)
    promotion = promote(ws, report, rollout=RolloutPlan(**FAST, steps=[50, 100]))
    assert not promotion.promoted and promotion.rollout_id is not None
    rollout = ws.rollouts.get(promotion.rollout_id)
    assert rollout.promotion_id == promotion.id and rollout.target == "models:/fraud/2"
    for step in range(2):
        feed(
            ws,
            ws.rollouts.get(str(promotion.rollout_id)),
            Traffic(share=ws.rollouts.get(rollout.id).weight / 100, seed=30 + step),
        )
        due(ws, rollout)
    assert ws.rollouts.get(rollout.id).phase == "succeeded"
    assert get_promotion(ws, promotion.id).promoted
    assert ws.registry.get_alias("fraud", "champion").version == 2
    # a rolled-back release is a refused promotion, with the reason
    report = passing_report(ws, candidate=1, champion=2)
    promotion = promote(ws, report, rollout={**FAST})
    feed(
        ws,
        ws.rollouts.get(str(promotion.rollout_id)),
        Traffic(canary_errors=0.4, seed=40),
        baseline=2,
        canary=1,
    )
    due(ws, ws.rollouts.get(str(promotion.rollout_id)))
    refused = get_promotion(ws, promotion.id)
    assert not refused.promoted and any("rolled back" in r for r in refused.reasons)


def test_forbidden_callers_cannot_start(fraud_sqlite: Workspace) -> None:
    from modelyard.governance.entities import Identity, Role

    ws = fraud_sqlite
    ws.policies.set("guarded", scope="model:fraud", approvals=1)
    viewer = ws.as_identity(Identity(name="vera", role=Role.editor))
    with pytest.raises(Forbidden):
        viewer.rollouts.start("fraud", "models:/fraud/2")


def test_a_shadow_phase_compares_answers_before_any_traffic_moves(fraud_sqlite: Workspace) -> None:
    ws = fraud_sqlite
    rollout = ws.rollouts.start("fraud", "models:/fraud/2", {**FAST, "shadow_requests": 200})
    assert (rollout.phase, rollout.step, rollout.weight) == ("shadow", -1, 0.0)
    policy = ws.endpoints.get("fraud").policy
    assert policy.shadow == "models:/fraud/2" and policy.routes == []
    feed(ws, rollout, Traffic(requests=100), shadow=True)
    assert due(ws, rollout) == ""  # 100 mirrored of 200: inconclusive, still shadowing
    assert ws.rollouts.get(rollout.id).analyses[-1].verdict == "inconclusive"
    feed(ws, rollout, Traffic(requests=300, seed=1), shadow=True)
    assert "canary at 5" in due(ws, rollout)
    stepped = ws.endpoints.get("fraud").policy
    assert stepped.shadow is None and [r.weight for r in stepped.routes] == [95.0, 5.0]
    # a shadow that answers otherwise never gets traffic
    ws.rollouts.abort(rollout.id)
    time.sleep(0.5)  # past the first rollout's rows
    second = ws.rollouts.start("fraud", "models:/fraud/2", {**FAST, "shadow_requests": 200})
    feed(ws, second, Traffic(requests=400, canary_errors=0.3, seed=2), shadow=True)
    done = due(ws, second)
    assert done.startswith("rolled back") and "disagreement" in done, done
    assert ws.endpoints.get("fraud").policy.shadow is None


def test_feedback_fails_a_canary_whose_answers_are_wrong(fraud_sqlite: Workspace) -> None:
    from modelyard.monitoring.predlog import PredictionLog

    ws = fraud_sqlite
    rollout = ws.rollouts.start("fraud", "models:/fraud/2", {**FAST, "steps": [50, 100]})
    # the same spread of answers on both sides: only the labels tell them apart
    feed(ws, rollout, Traffic(requests=400, share=0.5, seed=50))
    logged = PredictionLog(ws).read("fraud").to_pylist()
    labels = []
    for i, row in enumerate(logged):
        predicted = int(row["out__label"])
        wrong = row["version"] == 2 and i % 2 == 0  # the canary is right half the time
        labels.append(
            {"request_id": row["request_id"], "label": 1 - predicted if wrong else predicted}
        )
    ws.monitoring.submit_feedback("fraud", labels)
    done = due(ws, rollout)
    assert done.startswith("rolled back"), done
    failed = [c for c in ws.rollouts.get(rollout.id).analyses[-1].checks if c.verdict == "fail"]
    assert [c.name for c in failed] == ["metric:accuracy"]
    assert failed[0].figures["baseline"] > 0.95 > 0.6 > failed[0].figures["canary"]


def test_plans_and_policies_that_cannot_work_are_refused(fraud_sqlite: Workspace) -> None:
    ws = fraud_sqlite
    with pytest.raises(InvalidInput, match="first step of 100 % leaves no baseline"):
        ws.rollouts.start("fraud", "models:/fraud/2", {"steps": [100]})
    with pytest.raises(InvalidInput, match="would not follow"):
        ws.rollouts.start("fraud", "models:/fraud/2", {"alias": "prod"})
    with pytest.raises(InvalidInput, match=r"policy\.rollout is set by"):
        ws.endpoints.update("fraud", policy={"rollout": ""})
    assert ws.rollouts.start("fraud", "models:/fraud/2", {"steps": [100], "shadow_requests": 10})


def test_a_stale_endpoint_edit_cannot_bring_an_ended_rollout_back(
    fraud_sqlite: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = fraud_sqlite
    rollout = ws.rollouts.start("fraud", "models:/fraud/2", FAST)
    stale = ws.endpoints.get("fraud")  # read while the rollout runs
    ws.rollouts.abort(rollout.id)
    monkeypatch.setattr(ws.endpoints, "get", lambda name: stale)
    ws.endpoints.update("fraud", timeout_ms=3000)  # only what it was given is written
    monkeypatch.undo()
    endpoint = ws.endpoints.get("fraud")
    assert endpoint.timeout_ms == 3000
    assert endpoint.policy.routes == [] and endpoint.policy.rollout is None


def test_the_finish_is_all_or_nothing(
    fraud_sqlite: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = fraud_sqlite
    rollout = ws.rollouts.start("fraud", "models:/fraud/2", {**FAST, "steps": [50, 100]})
    feed(ws, rollout, Traffic(share=0.5, seed=60))
    due(ws, rollout)
    service = ws.rollouts

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the process died here")

    monkeypatch.setattr(service, "_end", crash)
    feed(ws, rollout, Traffic(share=1.0, seed=61))
    with pytest.raises(RuntimeError):
        due(ws, rollout)
    assert ws.registry.get_alias("fraud", "champion").version == 1  # the move went with it
    assert ws.rollouts.get(rollout.id).phase in ("canary", "promoting")
    monkeypatch.undo()
    due(ws, rollout)
    assert ws.rollouts.get(rollout.id).phase == "succeeded"
    assert ws.registry.get_alias("fraud", "champion").version == 2


def test_a_paused_rollout_still_meets_its_deadline(fraud_sqlite: Workspace) -> None:
    ws = fraud_sqlite
    rollout = ws.rollouts.start("fraud", "models:/fraud/2", {**FAST, "deadline_seconds": 60})
    ws.rollouts.pause(rollout.id)
    done = ws.rollouts.tick(rollout.id, rollout.started_at + timedelta(seconds=61))
    assert done.startswith("rolled back: the deadline passed")
    assert ws.endpoints.get("fraud").policy.routes == []


def test_a_baseline_moved_by_someone_else_ends_the_rollout(fraud_sqlite: Workspace) -> None:
    ws = fraud_sqlite
    rollout = ws.rollouts.start("fraud", "models:/fraud/2", FAST)
    # a hotfix: champion moves to a new version while the canary is at 5 %
    X, y = training_frame()
    client = Client(str(ws.settings.resolved_home), settings=ws.settings)
    hotfix = client.log_model(LogisticRegression().fit(X, y), "fraud", input_example=X.head(5))
    client.close()
    ws.registry.set_alias("fraud", "champion", hotfix.version)
    done = ws.rollouts.tick(rollout.id)
    assert done.startswith("aborted") and "moved from v1 to v3" in done
    assert ws.registry.get_alias("fraud", "champion").version == 3  # the hotfix stays
    assert ws.endpoints.get("fraud").policy.routes == []


def test_promote_to_the_endpoint_takes_the_callers_deploy_permission(
    fraud_sqlite: Workspace,
) -> None:
    from modelyard.governance.entities import Identity, Role

    ws = fraud_sqlite
    ws.endpoints.update("fraud", target="models:/fraud/1")
    rollout = ws.rollouts.start("fraud", "models:/fraud/2", FAST)
    assert rollout.plan.finish == "endpoint"
    ws.policies.set("guarded", scope="model:fraud", approvals=1)
    editor = ws.as_identity(Identity(name="eddie", role=Role.editor))
    with pytest.raises(Forbidden):
        editor.rollouts.promote(rollout.id)
    assert ws.endpoints.get("fraud").target == "models:/fraud/1"
    assert ws.rollouts.get(rollout.id).active


def test_a_canary_the_gateway_never_served_fails_at_once(fraud_sqlite: Workspace) -> None:
    ws = fraud_sqlite
    rollout = ws.rollouts.start("fraud", "models:/fraud/2", FAST)
    feed(ws, rollout, Traffic(share=0.0))  # 2,000 requests, none to the canary
    done = due(ws, rollout)
    assert done.startswith("rolled back: serving: the canary answered none"), done
    assert "trust-pickled" in done
