"""A workspace with a model in two versions and an endpoint on its champion, and a way to
write a step's traffic straight into the prediction log (as the gateway would)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard.client import Client
from modelyard.monitoring.predlog import PredictionLog
from modelyard.pipelines.gates import GateReport
from modelyard.workspace import Workspace

FEATURES = ["f0", "f1", "f2"]


def training_frame(seed: int = 3) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(300, len(FEATURES))), columns=FEATURES)
    y = ((X.f0 + X.f1) > 0).astype(int)
    return X, y


def register_versions(ws: Workspace, name: str = "fraud", count: int = 2) -> None:
    """``count`` versions of ``name`` (v1 champion) and an endpoint on models:/NAME@champion."""
    X, y = training_frame()
    client = Client(str(ws.settings.resolved_home), settings=ws.settings)
    try:
        for i in range(count):
            model = LogisticRegression(C=1.0 / (i + 1)).fit(X, y)
            client.log_model(model, name, input_example=X.head(5), alias=None if i else "champion")
    finally:
        client.close()
    ws.endpoints.create(name, f"models:/{name}@champion")


@pytest.fixture
def fraud(any_workspace: Workspace) -> Workspace:
    register_versions(any_workspace)
    return any_workspace


@pytest.fixture
def fraud_sqlite(workspace: Workspace) -> Workspace:
    register_versions(workspace)
    return workspace


@dataclass
class Traffic:
    """How each side behaves in a simulated step."""

    requests: int = 2_000
    share: float = 0.05  # of requests to the canary
    canary_errors: float = 0.0  # share of the canary's requests answered 500
    baseline_ms: float = 4.0
    canary_ms: float = 4.0
    baseline_positive: float = 0.5  # share of class 1 in the answers
    canary_positive: float = 0.5
    seed: int = 0


def send(
    ws: Workspace,
    traffic: Traffic,
    *,
    endpoint: str = "fraud",
    baseline: int = 1,
    canary: int = 2,
    at: datetime | None = None,
    shadow: bool = False,
) -> None:
    """Write ``traffic`` into the endpoint's prediction log, as the gateway logs it."""
    rng = np.random.default_rng(traffic.seed)
    at = at or datetime.now(UTC)
    with PredictionLog(ws) as log:
        for i in range(traffic.requests):
            when = at + timedelta(milliseconds=i)
            x = {name: rng.normal(size=1) for name in FEATURES}
            to_canary = rng.random() < traffic.share
            version = canary if to_canary else baseline
            rid = f"r{traffic.seed}-{i}"
            if to_canary and rng.random() < traffic.canary_errors:
                log.log_error(
                    endpoint=endpoint,
                    model="fraud",
                    version=version,
                    request_id=rid,
                    status=500,
                    latency_ms=1.0,
                    at=when,
                )
                continue
            positive = traffic.canary_positive if to_canary else traffic.baseline_positive
            ms = traffic.canary_ms if to_canary else traffic.baseline_ms
            label = np.array([int(rng.random() < positive)])
            latency = float(rng.gamma(4.0, ms / 4.0))
            answer = partial(
                log.log, endpoint=endpoint, model="fraud", request_id=rid, inputs=x, rows=1, at=when
            )
            if shadow:  # the baseline answers every request; the shadow gets a copy
                answer(version=baseline, outputs={"label": label}, latency_ms=latency)
                copy = label if rng.random() >= traffic.canary_errors else 1 - label
                shadow_ms = float(rng.gamma(4.0, traffic.canary_ms / 4.0))
                answer(version=canary, outputs={"label": copy}, latency_ms=shadow_ms, shadow=True)
                continue
            answer(version=version, outputs={"label": label}, latency_ms=latency)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "home"


def passing_report(ws: Workspace, candidate: int = 2, champion: int = 1) -> GateReport:
    """A gate report in which every rule passed: ``candidate`` may replace ``champion``."""
    return GateReport(
        candidate=f"models:/fraud/{candidate}",
        model="fraud",
        version=candidate,
        alias="champion",
        subject=f"models:/fraud/{candidate}@champion",
        champion_version=champion,
        task="classification",
        holdout_rows=100,
        candidate_metrics={"accuracy": 0.9},
        champion_metrics={"accuracy": 0.8},
        rules=[],
        passed=True,
        evaluated_at=datetime.now(UTC),
        evaluated_by="test",
    )
