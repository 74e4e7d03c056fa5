"""SLO switching's parts: deadlines, ranking, the choice, the latency model; and the
endpoint's variants through the SDK (in-process and HTTP), the API and the CLI.

A real `serve` switching under a spike is tests/e2e/test_switching_serve.py."""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard.errors import BadRequest, InvalidInput, NotFound
from modelyard.serving.batcher import Batcher
from modelyard.serving.entities import Endpoint, TrafficPolicy
from modelyard.serving.switching import (
    MARGIN_HALF_LIFE,
    Switcher,
    deadline_ms,
)

# -- deadlines -------------------------------------------------------------------------------


def test_the_shortest_deadline_wins() -> None:
    assert deadline_ms(None, {}, None, "m") is None
    assert deadline_ms(50.0, {}, None, "m") == 50.0
    assert deadline_ms(50.0, {b"x-modelyard-deadline-ms": b"20"}, None, "m") == 20.0
    assert deadline_ms(50.0, {b"x-modelyard-deadline-ms": b"200"}, None, "m") == 50.0
    assert deadline_ms(None, {b"x-modelyard-deadline-ms": b"7.5"}, None, "m") == 7.5
    assert deadline_ms(50.0, {}, {"deadline_ms": 10}, "m") == 10.0
    assert deadline_ms(50.0, {}, {"timeout": 5000}, "m") == 5.0  # tritonclient: µs
    assert deadline_ms(None, {}, {"other": 1}, "m") is None
    assert deadline_ms(None, {b"x-modelyard-deadline-ms": b"1e12"}, None, "m") == 600_000


@pytest.mark.parametrize("bad", [b"soon", b"0", b"-1", b"nan", b"inf", b""])
def test_a_bad_deadline_header_is_a_400(bad: bytes) -> None:
    with pytest.raises(
        BadRequest, match=r"endpoint .fraud.: the x-modelyard-deadline-ms header must"
    ):
        deadline_ms(50.0, {b"x-modelyard-deadline-ms": bad}, None, "fraud")


@pytest.mark.parametrize("bad", [True, "x", 0, -3, None, [1]])
def test_a_bad_deadline_parameter_is_a_400(bad: Any) -> None:
    with pytest.raises(BadRequest, match=r"parameters\.deadline_ms must be a positive number"):
        deadline_ms(50.0, {}, {"deadline_ms": bad}, "fraud")


# -- ranking and the choice ------------------------------------------------------------------


def _endpoint(*variants: dict[str, Any]) -> Endpoint:
    now = pd.Timestamp.now(tz="UTC").to_pydatetime()
    policy = TrafficPolicy(variants=list(variants), slo_ms=100.0)  # type: ignore[arg-type]
    return Endpoint(
        id="e", name="fraud", target="models:/a/1", policy=policy, created_at=now, updated_at=now
    )


def _switcher(endpoint: Endpoint, current: Switcher | None = None) -> Switcher:
    keys = [(f"m{i}", 1) for i in range(len(endpoint.policy.variants))]
    return Switcher.for_endpoint(endpoint, keys, current)


@dataclass
class StubBatcher:
    wait: float | None

    def predicted_wait(self, rows: int = 1) -> float | None:
        return None if self.wait is None else self.wait * rows


@dataclass
class StubModel:
    batcher: StubBatcher


@dataclass
class StubServed:
    models: tuple[StubModel, ...]


def _served(*waits: float | None) -> Any:
    return StubServed(tuple(StubModel(StubBatcher(w)) for w in waits))


def test_variants_rank_by_quality_or_keep_the_policys_order() -> None:
    switcher = _switcher(
        _endpoint(
            {"name": "fast", "target": "models:/b/1", "quality": 0.8},
            {"name": "accurate", "target": "models:/a/1", "quality": 0.9},
        )
    )
    assert [switcher.variants[i].name for i in switcher.order] == ["accurate", "fast"]
    unknown = _switcher(
        _endpoint(
            {"name": "first", "target": "models:/b/1"},
            {"name": "second", "target": "models:/a/1", "quality": 0.9},
        )
    )
    assert [unknown.variants[i].name for i in unknown.order] == ["first", "second"]
    # read later (feedback or a run); the policy's own quality stays
    unknown.set_qualities({"first": (0.5, "feedback"), "second": (0.1, "run")})
    assert [unknown.variants[i].name for i in unknown.order] == ["second", "first"]
    assert (unknown.variants[0].quality, unknown.variants[0].source) == (0.5, "feedback")
    assert (unknown.variants[1].quality, unknown.variants[1].source) == (0.9, "policy")


def test_the_best_variant_that_fits_answers_and_none_sheds() -> None:
    switcher = _switcher(
        _endpoint(
            {"name": "accurate", "target": "models:/a/1", "quality": 0.9},
            {"name": "fast", "target": "models:/b/1", "quality": 0.8},
        )
    )
    served = _served(0.050, 0.002)
    assert switcher.choose(served, 1, 0.100) == (0, 0.050)
    assert switcher.choose(served, 1, 0.010) == (1, 0.002)
    assert switcher.choose(served, 4, 0.100) == (1, 0.008)  # 200 ms for 4 rows: too slow
    assert switcher.choose(served, 1, 0.001) is None
    # a variant whose latency is unknown is predicted to fit: it has to be tried to be known
    position, predicted = switcher.choose(_served(None, 0.002), 1, 0.001) or (None, 0.0)
    assert position == 0 and math.isnan(predicted)


def test_the_margin_learns_the_error_and_fades_while_idle() -> None:
    switcher = _switcher(
        _endpoint(
            {"name": "accurate", "target": "models:/a/1", "quality": 0.9},
            {"name": "fast", "target": "models:/b/1", "quality": 0.8},
        )
    )
    for _ in range(50):  # every request took 60 % longer than its batcher predicted (50 ms)
        switcher.observe(0, 0.030, met=True, wait=0.050)
    state = switcher.variants[0]
    # relative to the prediction: 60 % of 50 ms now, 60 % of 10 ms for a shorter queue
    assert 0.025 < state.margin(0.050) < 0.035
    assert 0.005 < state.margin(0.010) < 0.007
    served = _served(0.050, 0.002)
    assert switcher.choose(served, 1, 0.070)[0] == 1  # type: ignore[index]
    # 50 ms + 30 ms of margin within 70 % of 120 ms (the headroom)
    assert switcher.choose(served, 1, 0.120)[0] == 0  # type: ignore[index]
    switcher.observe(0, math.nan, met=True)  # admitted while unknown: nothing learned
    assert 0.025 < state.margin(0.050) < 0.035
    before = state.margin(0.050)
    state.observed -= 3 * MARGIN_HALF_LIFE
    assert state.margin(0.050) == pytest.approx(before / 8, rel=0.01)
    # the learned error itself faded: one on-time answer does not bring the margin back
    switcher.observe(0, 0.0, met=True, wait=0.050)
    assert state.margin(0.050) < before / 4
    # a stall is clipped: at most 4 x the prediction
    for _ in range(100):
        switcher.observe(0, 10.0, met=False, wait=0.010)
    assert state.margin(0.010) < 0.010 * (4 + 2 * 4)


def test_effective_accuracy_counts_shed_requests_as_missed() -> None:
    switcher = _switcher(
        _endpoint(
            {"name": "accurate", "target": "models:/a/1", "quality": 0.9},
            {"name": "fast", "target": "models:/b/1", "quality": 0.7},
        )
    )
    assert switcher.effective() == (None, None)
    switcher.observe(0, 0.0, met=True)
    switcher.observe(1, math.nan, met=True)  # a cached answer
    switcher.observe(1, 0.0, met=False)
    switcher.refused()
    share, weighted = switcher.effective()
    assert share == 0.5
    assert weighted == pytest.approx((0.9 + 0.7) / 4)
    assert (switcher.variants[0].met, switcher.variants[1].met, switcher.variants[1].missed) == (
        1,
        1,
        1,
    )
    assert switcher.shed == 1


def test_a_new_snapshot_keeps_what_was_learned_per_variant() -> None:
    first = _endpoint(
        {"name": "accurate", "target": "models:/a/1", "quality": 0.9},
        {"name": "fast", "target": "models:/b/1"},
    )
    old = _switcher(first)
    old.set_qualities({"fast": (0.7, "run")})
    for _ in range(20):
        old.observe(0, 0.030, met=True, wait=0.030)
        old.observe(1, 0.010, met=False, wait=0.010)
    old.refused()
    # the policy drops accurate's quality; fast moves to another version
    second = _endpoint(
        {"name": "accurate", "target": "models:/a/1"},
        {"name": "fast", "target": "models:/b/2"},
        {"name": "new", "target": "models:/c/1"},
    )
    new = Switcher.for_endpoint(second, [("m0", 1), ("m1", 2), ("m2", 1)], old)
    accurate, fast, added = new.variants
    assert (accurate.met, fast.missed, added.met, new.shed) == (20, 20, 0, 1)
    assert accurate.quality is None and accurate.source == "unknown"  # not the policy's any more
    assert (fast.quality, fast.source) == (0.7, "run")  # read, kept until the next read
    assert accurate.margin(0.030) > 0.02  # same version: its errors are kept
    assert fast.error_mean == 0.0  # another version: learned again
    assert new.effective()[0] == pytest.approx(20 / 41)


# -- the batcher's latency model -------------------------------------------------------------


def test_the_batcher_predicts_its_queue_and_each_batch_size() -> None:
    asyncio.run(_batcher_predicts())


async def _batcher_predicts() -> None:
    def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = len(inputs["x"])
        time.sleep(0.004 + 0.001 * rows)  # a fixed cost per call, and one per row
        return {"y": inputs["x"]}

    batcher = Batcher(predict, max_batch_size=8, max_wait_ms=0)
    try:
        assert batcher.predicted_wait(1) is None
        for _ in range(5):
            await batcher.submit({"x": np.zeros(1)}, 1)
            await batcher.submit({"x": np.zeros(8)}, 8)
        one, eight = batcher.predicted_wait(1), batcher.predicted_wait(8)
        assert one is not None and eight is not None
        assert 0.004 < one < eight  # each size its own median
        # 4 rows, never seen: on the line between 1 and 8 rows, not 4 x the 1-row cost
        four = batcher.predicted_wait(4)
        assert four is not None and one < four < eight and four < 4 * one
        # 16 rows, over the batch size of 8: one call of 16 rows (taken alone), on the line
        sixteen = batcher.predicted_wait(16)
        assert sixteen is not None and eight < sixteen < 2 * eight
    finally:
        await batcher.close()


# -- adapters --------------------------------------------------------------------------------


def _frame() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(200, 2)), columns=["f0", "f1"])
    return X, (X.f0 > 0).astype(int)


POLICY = {
    "variants": [
        {"name": "accurate", "target": "models:/fraud@champion", "quality": 0.93},
        {"name": "fast", "target": "models:/fraud-small/1"},
    ],
    "slo_ms": 50,
}


def test_variants_through_the_sdk(client) -> None:  # type: ignore[no-untyped-def]
    X, y = _frame()
    client.log_model(
        LogisticRegression().fit(X, y), "fraud", input_example=X.head(3), alias="champion"
    )
    client.log_model(LogisticRegression(C=0.1).fit(X, y), "fraud-small", input_example=X.head(3))
    endpoint = client.endpoints.create("fraud", "models:/fraud@champion", policy=POLICY)
    assert [v.name for v in endpoint.policy.variants] == ["accurate", "fast"]
    assert endpoint.policy.slo_ms == 50 and endpoint.policy.quality_metric == "accuracy"
    assert endpoint.targets() == ["models:/fraud@champion", "models:/fraud-small/1"]
    status = client.endpoints.variant_status("fraud")
    assert [(v.name, v.model, v.version, v.quality, v.source) for v in status] == [
        ("accurate", "fraud", 1, 0.93, "policy"),
        ("fast", "fraud-small", 1, None, "unknown"),
    ]
    with pytest.raises(NotFound):
        client.endpoints.variant_status("nothing")
    with pytest.raises(InvalidInput, match="variants need slo_ms"):
        client.endpoints.update("fraud", policy={"variants": POLICY["variants"]})
    with pytest.raises(InvalidInput, match="variant names must be unique"):
        client.endpoints.update("fraud", policy={**POLICY, "variants": [POLICY["variants"][0]] * 2})
    with pytest.raises(InvalidInput):
        client.endpoints.update(
            "fraud",
            policy={**POLICY, "variants": [{"name": "Bad Name", "target": "models:/fraud/1"}]},
        )
    assert client.endpoints.get("fraud").policy.slo_ms == 50  # nothing stored was lost
    cleared = client.endpoints.update("fraud", policy={"routes": []})
    assert cleared.policy.variants == [] and cleared.policy.slo_ms is None


def test_a_rollout_cannot_start_on_a_switched_endpoint(workspace) -> None:  # type: ignore[no-untyped-def]
    from modelyard.client import Client
    from modelyard.errors import Conflict

    X, y = _frame()
    client = Client(str(workspace.settings.resolved_home), settings=workspace.settings)
    client.log_model(
        LogisticRegression().fit(X, y), "fraud", input_example=X.head(3), alias="champion"
    )
    client.log_model(LogisticRegression().fit(X, y), "fraud-small", input_example=X.head(3))
    client.endpoints.create("fraud", "models:/fraud@champion", policy=POLICY)
    with pytest.raises(Conflict, match="switches between variants by deadline"):
        workspace.rollouts.start("fraud", "models:/fraud-small/1", {})
    client.close()


def test_variants_through_the_api(live_server, workspace) -> None:  # type: ignore[no-untyped-def]
    from modelyard.client import Client

    X, y = _frame()
    client = Client(str(workspace.settings.resolved_home), settings=workspace.settings)
    client.log_model(
        LogisticRegression().fit(X, y), "fraud", input_example=X.head(3), alias="champion"
    )
    client.log_model(LogisticRegression().fit(X, y), "fraud-small", input_example=X.head(3))
    client.close()
    url = f"{live_server.url}/api/v1/endpoints"
    body = {"name": "fraud", "target": "models:/fraud@champion", "policy": POLICY}
    for bad, where in (
        ({**POLICY, "slo_ms": 0}, "slo_ms"),
        ({**POLICY, "slo_ms": True}, "slo_ms"),
        ({"variants": POLICY["variants"]}, "variants need slo_ms"),
        (
            {**POLICY, "variants": [{"name": "a", "target": "models:/fraud/1", "quality": "hi"}]},
            "quality",
        ),
    ):
        r = httpx.post(url, json={**body, "policy": bad})
        assert r.status_code == 422, r.text
        assert where in r.text
    r = httpx.post(
        url,
        json={
            **body,
            "policy": {**POLICY, "variants": [{"name": "a", "target": "models:/nothing/1"}]},
        },
    )
    assert r.status_code == 404, r.text
    r = httpx.post(url, json=body)
    assert r.status_code == 201, r.text
    assert r.json()["policy"]["variants"][0] == {
        "name": "accurate",
        "target": "models:/fraud@champion",
        "quality": 0.93,
    }


def test_variant_commands(run) -> None:  # type: ignore[no-untyped-def]
    run("quickstart", "--rows", "400", "--name", "qs")
    out = run(
        "endpoints",
        "create",
        "qs",
        "--variant",
        "accurate=models:/qs@champion",
        "--variant",
        "same=models:/qs/1",
        "--slo-ms",
        "40",
        "--quality",
        "accurate=0.9",
        "--json",
    ).stdout
    endpoint = json.loads(out)
    assert endpoint["target"] == "models:/qs@champion"
    assert endpoint["policy"]["slo_ms"] == 40
    assert endpoint["policy"]["variants"][0]["quality"] == 0.9
    for args, message in (
        (("--variant", "accurate"), "must look like NAME=models:/MODEL@ALIAS"),
        (
            ("--variant", "a=models:/qs/1", "--slo-ms", "40", "--quality", "b=0.3"),
            "NAME one of the variants (a)",
        ),
        (
            ("--variant", "a=models:/qs/1", "--slo-ms", "40", "--quality", "a=high"),
            "'high' is not a number",
        ),
        (("--variant", "a=models:/qs/1", "--split", "models:/qs/1=1"), "give one or the other"),
        (("--slo-ms", "40", "--split", "models:/qs/1=1"), "give one or the other"),
        (
            ("--variant", "a=models:/qs/1", "--variant", "a=models:/qs/1", "--slo-ms", "9"),
            "--variant a is given twice",
        ),
        (("--variant", "a=models:/qs/1"), "variants need slo_ms"),
    ):
        result = run("endpoints", "create", "other", *args, ok=False)
        assert result.returncode != 0
        assert message in result.stderr + result.stdout, (args, result.stderr)
    # an option alone changes that part of the policy and keeps the rest
    run("endpoints", "update", "qs", "--slo-ms", "25")
    policy = json.loads(run("endpoints", "show", "qs", "--json").stdout)["policy"]
    assert policy["slo_ms"] == 25 and [v["name"] for v in policy["variants"]] == [
        "accurate",
        "same",
    ]
    run("endpoints", "update", "qs", "--quality", "same=0.5")
    policy = json.loads(run("endpoints", "show", "qs", "--json").stdout)["policy"]
    assert [v.get("quality") for v in policy["variants"]] == [0.9, 0.5]
    result = run("endpoints", "update", "qs", "--split", "models:/qs/1=1", ok=False)
    assert "--clear-policy` first" in result.stderr + result.stdout
    run("endpoints", "update", "qs", "--slo-ms", "80", "--variant", "accurate=models:/qs/1")
    assert json.loads(run("endpoints", "show", "qs", "--json").stdout)["policy"]["slo_ms"] == 80
    shown = run("endpoints", "variants", "qs").stdout
    # update replaced the variants: one, ranked by the quickstart run's accuracy
    assert "accurate" in shown and "│ run" in shown and "same" not in shown
    run("endpoints", "update", "qs", "--clear-policy")
    assert "has no variants" in run("endpoints", "variants", "qs").stdout
    assert json.loads(run("endpoints", "show", "qs", "--json").stdout)["policy"]["variants"] == []
    assert "--variant" in run("endpoints", "create", "--help").stdout


def test_qualities_come_from_feedback_then_the_run(workspace) -> None:  # type: ignore[no-untyped-def]
    """The gateway's ranking input: labelled feedback on the version at this endpoint once
    there are 200 labels, else the version's run metric, else unknown; never for a variant
    whose quality the policy sets."""
    from datetime import timedelta

    from tests.monitoring.test_deadlines import T0, Request, label, log, register

    from modelyard.serving.switching import qualities

    register(workspace, "fraud", 0.9)
    register(workspace, "fraud-small", None)
    register(workspace, "fraud-fixed", 0.1)
    variants = [
        {"name": "accurate", "target": "models:/fraud/1"},
        {"name": "fast", "target": "models:/fraud-small/1"},
        {"name": "fixed", "target": "models:/fraud-fixed/1", "quality": 0.5},
    ]
    endpoint = workspace.endpoints.create(
        "fraud", "models:/fraud/1", policy={"variants": variants, "slo_ms": 50}
    )
    versions = [workspace.registry.resolve(v["target"]) for v in variants]
    assert qualities(workspace, endpoint, versions) == {
        "accurate": (0.9, "run"),
        "fast": (None, "unknown"),
    }
    history = [
        Request(f"k{i}", "fraud-small", "fast", 1.0, 1, 1 if i < 150 else 0) for i in range(200)
    ] + [Request(f"h{i}", "fraud", "accurate", 1.0, 1, 1 if i < 120 else 0) for i in range(200)]
    log(workspace, history, start=T0 - timedelta(hours=2))
    label(workspace, history)
    assert qualities(workspace, endpoint, versions) == {
        "accurate": (0.6, "feedback"),  # the labels say otherwise than the run
        "fast": (0.75, "feedback"),
    }
    # a metric the labels do not give (r2 of a classifier) and no run has: unknown
    other = workspace.endpoints.update(
        "fraud", policy={"variants": variants, "slo_ms": 50, "quality_metric": "r2"}
    )
    assert qualities(workspace, other, versions) == {
        "accurate": (None, "unknown"),
        "fast": (None, "unknown"),
    }


def test_a_batch_size_not_called_lately_is_predicted_at_its_best_then_measured_again() -> None:
    asyncio.run(_stale())


async def _stale() -> None:
    delay = [0.005]

    def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(delay[0])
        return {"y": inputs["x"]}

    batcher = Batcher(predict, max_batch_size=8, max_wait_ms=0)
    try:
        for _ in range(2):  # 5 ms: its best (the first, cold call is not counted)
            await batcher.submit({"x": np.zeros(1)}, 1)
        delay[0] = 0.040  # a busy moment
        for _ in range(5):
            await batcher.submit({"x": np.zeros(1)}, 1)
        busy = batcher.predicted_wait(1)
        assert busy is not None and busy >= 0.040
        time.sleep(2.1)  # no call for longer than the staleness bound (2 s)
        stale = batcher.predicted_wait(1)
        assert stale is not None and stale < 0.02  # its best: worth a try
        delay[0] = 0.010
        await batcher.submit({"x": np.zeros(1)}, 1)
        fresh = batcher.predicted_wait(1)
        assert fresh is not None and 0.010 <= fresh < 0.040  # the busy moment is forgotten
    finally:
        await batcher.close()


def test_when_no_margin_fits_the_soonest_variant_still_answers_if_its_prediction_does() -> None:
    switcher = _switcher(
        _endpoint(
            {"name": "accurate", "target": "models:/a/1", "quality": 0.9},
            {"name": "fast", "target": "models:/b/1", "quality": 0.8},
        )
    )
    for _ in range(50):  # both learned to be 40 ms late: a stalled event loop, say
        switcher.observe(0, 0.040, met=False, wait=0.030)
        switcher.observe(1, 0.040, met=False, wait=0.005)
    served = _served(0.030, 0.005)
    # neither fits 70 % of 20 ms with its margin; fast's prediction alone does: not a 503
    assert switcher.choose(served, 1, 0.020) == (1, 0.005)
    assert switcher.choose(served, 1, 0.004) is None  # not even the prediction fits
