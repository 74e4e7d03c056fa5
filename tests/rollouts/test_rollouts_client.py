"""``client.rollouts``: the same scenario, the same entities and the same errors in-process
and over HTTP."""

from __future__ import annotations

import pytest

from modelyard.client import Client
from modelyard.errors import Conflict, InvalidInput, NotFound
from modelyard.rollouts import Rollout, RolloutPlan, StickyKey, Thresholds
from modelyard.rollouts.service import RolloutPass
from modelyard.workspace import Workspace


def test_a_rollout_through_the_sdk(client: Client, fraud_sqlite: Workspace) -> None:
    plan = RolloutPlan(
        steps=[10, 50, 100],
        interval_seconds=15,
        sticky=StickyKey(header="x-user"),
        thresholds=Thresholds(alpha=0.05, max_p99_ms=250),
    )
    started = client.rollouts.start("fraud", "models:/fraud/2", plan)
    assert isinstance(started, Rollout)
    assert (started.phase, started.weight, started.plan.steps) == ("canary", 10.0, [10, 50, 100])
    assert started.plan.sticky == StickyKey(header="x-user")
    assert started.plan.thresholds.max_p99_ms == 250 and started.plan.finish == "alias"
    assert client.rollouts.get("fraud") == client.rollouts.get(started.id) == started
    assert [r.id for r in client.rollouts.list()] == [started.id]
    assert [r.id for r in client.rollouts.list("fraud", active=True)] == [started.id]
    assert client.rollouts.list(active=False) == [] and client.rollouts.list("other") == []
    assert [r.id for r in client.rollouts.active()] == [started.id]

    with pytest.raises(Conflict, match=f"has rollout {started.id} running"):
        client.rollouts.start("fraud", "models:/fraud/2")
    paused = client.rollouts.pause("fraud", "hold on")
    assert paused.paused and paused.events[-1].detail == "hold on"
    with pytest.raises(Conflict, match="paused already"):
        client.rollouts.pause("fraud")
    assert not client.rollouts.resume("fraud").paused
    assert isinstance(client.rollouts.run_once(), RolloutPass)

    promoted = client.rollouts.promote(started.id)
    assert promoted.phase == "succeeded" and promoted.weight == 100.0
    assert client.registry.get_alias("fraud", "champion").version == 2
    with pytest.raises(Conflict, match="has ended"):
        client.rollouts.abort("fraud")

    # back to v1 with a plan as a mapping, then aborted
    second = client.rollouts.start("fraud", "models:/fraud/1", {"finish": "endpoint"})
    aborted = client.rollouts.abort(second.id, "changed my mind")
    assert aborted.phase == "aborted" and aborted.reason == "aborted by local: changed my mind"
    assert client.endpoints.get("fraud").target == "models:/fraud@champion"
    assert [r.id for r in client.rollouts.list("fraud")] == [second.id, started.id]
    assert client.rollouts.list(limit=1)[0].id == second.id


def test_the_same_errors_on_both_transports(client: Client, fraud_sqlite: Workspace) -> None:
    with pytest.raises(NotFound, match="no rollout 'nope'"):
        client.rollouts.get("nope")
    with pytest.raises(NotFound, match="no rollout 'nope'"):
        client.rollouts.promote("nope")
    with pytest.raises(NotFound):
        client.rollouts.start("nope", "models:/fraud/2")
    with pytest.raises(InvalidInput, match=r"plan\.steps: (Value error, )?steps must increase"):
        client.rollouts.start("fraud", "models:/fraud/2", {"steps": [50, 20]})
    with pytest.raises(InvalidInput, match=r"plan\.interval_seconds: .*greater than or equal to 1"):
        client.rollouts.start("fraud", "models:/fraud/2", {"interval_seconds": 0})
    with pytest.raises(InvalidInput, match="limit"):
        client.rollouts.list(limit=0)
    with pytest.raises(Conflict, match="already serves"):
        client.rollouts.start("fraud", "models:/fraud/1")
    assert client.rollouts.list() == []
