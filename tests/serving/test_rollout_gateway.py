"""The gateway's side of rollouts: the fast prediction-log flush and the rollout gauges."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tests.serving.conftest import GatewayServer

import modelyard.serving.gateway as gateway_module
from modelyard.client import Client
from modelyard.monitoring.predlog import PredictionLog
from modelyard.rollouts.entities import Analysis, Check, Rollout, RolloutPlan
from modelyard.serving.entities import TrafficPolicy
from modelyard.serving.metrics import rollout_families
from modelyard.workspace import Workspace

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def rollout(
    id: str = "r-1",
    endpoint: str = "fraud",
    *,
    phase: str = "canary",
    step: int = 1,
    weight: float = 25.0,
    failures: int = 0,
    checks: dict[str, str] | None = None,
) -> Rollout:
    analyses = []
    if checks is not None:
        analyses.append(
            Analysis(
                at=NOW,
                phase=phase,  # type: ignore[arg-type]
                step=step,
                weight=weight,
                verdict="fail" if "fail" in checks.values() else "pass",
                baseline_requests=900,
                canary_requests=300,
                checks=[
                    Check(name=name, verdict=verdict, summary=f"{name}: {verdict}")  # type: ignore[arg-type]
                    for name, verdict in checks.items()
                ],
            )
        )
    return Rollout(
        id=id,
        endpoint=endpoint,
        model=endpoint,
        version=2,
        target=f"models:/{endpoint}/2",
        baseline=f"models:/{endpoint}/1",
        plan=RolloutPlan(),
        phase=phase,  # type: ignore[arg-type]
        step=step,
        weight=weight,
        failures=failures,
        started_at=NOW,
        started_by="alice",
        step_started_at=NOW,
        next_analysis_at=NOW,
        analyses=analyses,
    )


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def render(rollouts: list[Rollout]) -> str:
    class Collector:
        def collect(self) -> Any:
            yield from rollout_families(rollouts)

    registry = CollectorRegistry()
    registry.register(Collector())  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


# --- the gauges ------------------------------------------------------------------------------


def test_rollout_families_render_valid_prometheus_text() -> None:
    text = render(
        [
            rollout(
                failures=1,
                checks={"errors": "pass", "latency": "fail", "metric:accuracy": "inconclusive"},
            ),
            rollout("r-2", "churn", phase="shadow", step=-1, weight=0.0),
        ]
    )
    found = samples(text)
    fraud = {"endpoint": "fraud", "rollout": "r-1"}
    churn = {"endpoint": "churn", "rollout": "r-2"}
    assert found["modelyard_rollout_canary_weight", labels(**fraud)] == 25.0
    assert found["modelyard_rollout_canary_weight", labels(**churn)] == 0.0
    assert found["modelyard_rollout_step", labels(**fraud)] == 1
    assert found["modelyard_rollout_step", labels(**churn)] == -1
    assert found["modelyard_rollout_failures", labels(**fraud)] == 1
    phases = {
        dict(k[1])["phase"]: v
        for k, v in found.items()
        if k[0] == "modelyard_rollout_phase" and dict(k[1])["rollout"] == "r-1"
    }
    assert phases == {
        "shadow": 0,
        "canary": 1,
        "promoting": 0,
        "succeeded": 0,
        "rolled_back": 0,
        "aborted": 0,
    }
    assert found["modelyard_rollout_phase", labels(**churn, phase="shadow")] == 1
    checks = {
        (dict(k[1])["check"], dict(k[1])["verdict"]): v
        for k, v in found.items()
        if k[0] == "modelyard_rollout_checks"
    }
    assert checks == {
        ("errors", "pass"): 1,
        ("errors", "fail"): 0,
        ("errors", "inconclusive"): 0,
        ("latency", "pass"): 0,
        ("latency", "fail"): 1,
        ("latency", "inconclusive"): 0,
        ("metric:accuracy", "pass"): 0,
        ("metric:accuracy", "fail"): 0,
        ("metric:accuracy", "inconclusive"): 1,
    }  # and none for r-2, which has no analysis yet
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge" and family.documentation
    # no rollouts: the families are declared and empty
    assert not [k for k in samples(render([])) if k[0].startswith("modelyard_rollout")]


# --- the prediction log's flush --------------------------------------------------------------


def wait_for(condition: Callable[[], bool], seconds: float) -> float | None:
    """Seconds until ``condition`` held (polled), or None if it did not within ``seconds``."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if condition():
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def log_one(log: PredictionLog, endpoint: str, request_id: str) -> None:
    log.log(
        endpoint=endpoint,
        model="m",
        version=1,
        request_id=request_id,
        inputs={"x": np.array([1.0])},
        outputs={"y": np.array([0])},
        rows=1,
        latency_ms=1.0,
    )


def test_set_flush_makes_an_endpoints_rows_readable_within_a_second(
    workspace: Workspace,
) -> None:
    with PredictionLog(workspace, flush_seconds=30) as log:
        log.set_flush("fast", 1.0)
        log_one(log, "fast", "a")
        log_one(log, "slow", "b")
        waited = wait_for(lambda: log.read("fast").num_rows == 1, 3)
        # well before the usual 5 s (not timed closer: the machine may be busy)
        assert waited is not None and waited < 4, waited
        assert log.read("slow").num_rows == 0  # still waiting for its 30 s
        log.set_flush("fast", None)  # back to the log's own interval
        log_one(log, "fast", "c")
        assert wait_for(lambda: log.read("fast").num_rows == 2, 1.5) is None
        log.flush()
        assert log.read("fast").num_rows == 2 and log.read("slow").num_rows == 1
        with pytest.raises(ValueError, match="positive"):
            log.set_flush("fast", 0)


# --- through a real gateway ------------------------------------------------------------------


def split_body(X: pd.DataFrame) -> dict[str, Any]:
    return {"dataframe_split": {"columns": list(X.columns), "data": X.to_numpy().tolist()}}


def set_policy(ws: Workspace, name: str, policy: TrafficPolicy) -> None:
    """Change the policy as a rollout does (by hand, policy.rollout is refused)."""
    with ws.store.write(ws.actor) as tx:
        ws.endpoints.set_rollout_policy(tx, name, policy)
    ws.endpoints.changed()


class FakeRollouts:
    """What ``ws.rollouts.active()`` returns, until the rollouts service is there."""

    def __init__(self, found: list[Rollout]) -> None:
        self.found = found
        self.calls = 0
        self.failure: Exception | None = None
        self.lock = threading.Lock()

    def __call__(self, ws: object) -> list[Rollout]:
        with self.lock:
            self.calls += 1
        if self.failure is not None:
            raise self.failure
        return list(self.found)


def test_gateway_serves_rollout_metrics_and_flushes_fast_while_a_rollout_runs(
    gateway: GatewayServer,
    models: dict[str, object],
    frame: tuple[pd.DataFrame, pd.Series],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    X, _ = frame
    c = Client(str(gateway.ws.settings.resolved_home), settings=gateway.ws.settings)
    c.log_model(models["lr"], "fraud", input_example=X.head(5))
    c.log_model(models["lr2"], "fraud", input_example=X.head(5))
    c.close()
    routes = [
        {"target": "models:/fraud/1", "weight": 75},
        {"target": "models:/fraud/2", "weight": 25},
    ]
    gateway.ws.endpoints.create("fraud", "models:/fraud/1", policy={"routes": routes})
    set_policy(gateway.ws, "fraud", TrafficPolicy(routes=routes, rollout="r-1"))
    service = FakeRollouts([rollout(checks={"errors": "pass", "latency": "pass"})])
    monkeypatch.setattr(gateway_module, "_active_rollouts", service)
    monkeypatch.setattr(gateway_module, "ROLLOUT_METRICS_SECONDS", 0.2)
    monkeypatch.setattr(gateway_module, "ENDED_ROLLOUT_SECONDS", 1.0)
    url = gateway.start()
    fraud = labels(endpoint="fraud", rollout="r-1")

    def metrics() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return samples(httpx.get(f"{url}/metrics").text)

    assert wait_for(lambda: ("modelyard_rollout_canary_weight", fraud) in metrics(), 5)
    found = metrics()
    assert found["modelyard_rollout_canary_weight", fraud] == 25.0
    assert found["modelyard_rollout_checks", fraud | labels(check="latency", verdict="pass")] == 1

    # the rollout's analysis sees rows within about a second (the log's own flush is 5 s)
    log = gateway.gateway.log
    r = httpx.post(f"{url}/endpoints/fraud/invocations", json=split_body(X.head(1)))
    assert r.status_code == 200
    waited = wait_for(lambda: log.read("fraud").num_rows == 1, 3)
    assert waited is not None and waited < 4, waited

    # the service failing (e.g. not wired yet): said once, the last figures stay
    service.found = [rollout(weight=50.0)]
    with caplog.at_level(logging.WARNING, logger="modelyard.gateway"):
        service.failure = AttributeError("'Workspace' object has no attribute 'rollouts'")
        calls = service.calls
        assert wait_for(lambda: service.calls >= calls + 3, 5)
        assert metrics()["modelyard_rollout_canary_weight", fraud] == 25.0
        said = [r for r in caplog.records if "active rollouts" in r.getMessage()]
        assert len(said) == 1, said
        service.failure = None
    assert wait_for(lambda: metrics()["modelyard_rollout_canary_weight", fraud] == 50.0, 5)

    # the rollout ends: its gauges stay a while (ENDED_ROLLOUT_SECONDS, here 1 s), then no
    # more reads, no gauges, and the log's usual flush again
    set_policy(gateway.ws, "fraud", TrafficPolicy(routes=routes[:1]))
    time.sleep(0.5)
    assert ("modelyard_rollout_canary_weight", fraud) in metrics()
    gone = wait_for(
        lambda: not [k for k in metrics() if k[0] == "modelyard_rollout_canary_weight"], 5
    )
    assert gone is not None
    calls = service.calls
    time.sleep(0.6)
    assert service.calls == calls
    r = httpx.post(f"{url}/endpoints/fraud/invocations", json=split_body(X.head(1)))
    assert r.status_code == 200
    assert wait_for(lambda: log.read("fraud").num_rows == 2, 1.5) is None
    log.flush()
    assert log.read("fraud").num_rows == 2


def test_a_started_rollout_shows_on_metrics_through_the_rollouts_service(
    gateway: GatewayServer, models: dict[str, object], frame: tuple[pd.DataFrame, pd.Series]
) -> None:
    X, _ = frame
    c = Client(str(gateway.ws.settings.resolved_home), settings=gateway.ws.settings)
    c.log_model(models["lr"], "fraud", input_example=X.head(5))
    c.log_model(models["lr2"], "fraud", input_example=X.head(5))
    c.close()
    gateway.ws.endpoints.create("fraud", "models:/fraud/1")
    url = gateway.start()
    started = gateway.ws.rollouts.start(
        "fraud", "models:/fraud/2", {"steps": [20, 100], "finish": "endpoint"}
    )
    fraud = labels(endpoint="fraud", rollout=started.id)

    def weight() -> float | None:
        return samples(httpx.get(f"{url}/metrics").text).get(
            ("modelyard_rollout_canary_weight", fraud)
        )

    assert wait_for(lambda: weight() == started.weight, 5), weight()
    found = samples(httpx.get(f"{url}/metrics").text)
    assert found["modelyard_rollout_phase", fraud | labels(phase=started.phase)] == 1
    gateway.ws.rollouts.abort("fraud", "enough")
    # an ended rollout stays on /metrics a while, its phase at 1: something to alert on
    aborted = ("modelyard_rollout_phase", fraud | labels(phase="aborted"))
    assert wait_for(lambda: samples(httpx.get(f"{url}/metrics").text).get(aborted) == 1, 5)
    assert weight() == 0.0
