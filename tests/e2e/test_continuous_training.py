"""The whole loop: served traffic drifts, monitoring alerts, a trigger retrains, the gate
promotes, the gateway follows the alias, and no request fails on the way."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from examples.churn_retrain.pipeline import FEATURES, make_data

from modelyard import Client
from modelyard.config import Settings
from modelyard.monitoring.windows import floor_time
from modelyard.pipelines.delivery import delivery_report
from modelyard.workspace import Workspace
from tests.serving.conftest import GatewayServer

SOURCE = "examples.churn_retrain.pipeline:churn_retrain"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Workspace, GatewayServer, str]]:
    ws = Workspace.open(Settings(home=tmp_path / "home"))
    # Version 1: trained by the pipeline itself on the original data, made champion.
    ws.tracking.log_dataset("churn-train", make_data(3000, seed=1))
    ws.pipelines.register("churn-retrain", SOURCE)
    first = ws.pipelines.run("churn-retrain", {"dataset": "churn-train"}, executor="inprocess")
    assert first.status == "succeeded", first.error
    assert ws.registry.get_alias("churn", "champion").version == 1
    ws.endpoints.create("churn", "models:/churn@champion")
    ws.monitoring.configure("churn", {"granularities": [300], "lateness_seconds": 0})
    gateway = GatewayServer(ws)
    url = gateway.start()
    yield ws, gateway, url
    gateway.stop()
    ws.close()


class Traffic:
    """Steady single-row requests from a thread, counting statuses and answering versions."""

    def __init__(self, url: str, rows: list[dict[str, float]]) -> None:
        self.url, self.rows = url, rows
        self.statuses: Counter[int] = Counter()
        self.versions: Counter[str] = Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            i = 0
            while not self.stop.is_set():
                row = self.rows[i % len(self.rows)]
                r = http.post("/endpoints/churn/invocations", json={"dataframe_records": [row]})
                self.statuses[r.status_code] += 1
                self.versions[r.headers.get("x-modelyard-version", "?")] += 1
                i += 1

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def test_drift_alert_retrains_gates_and_promotes_without_a_failed_request(served) -> None:  # type: ignore[no-untyped-def]
    ws, gateway, url = served
    ws.monitoring.create_rule(
        {
            "name": "churn-drift",
            "endpoint": "churn",
            "kind": "drift",
            "metric": "drift_share",
            "op": ">",
            "threshold": 0.2,
            "window": 300,
            "min_samples": 100,
        }
    )
    ws.pipelines.triggers.create(
        {
            "name": "retrain-on-drift",
            "pipeline": "churn-retrain",
            "kind": "alert",
            "endpoint": "churn",
            "params": {"dataset": "churn-new"},
        }
    )
    # Customers change: tenure shifts by a year. New labelled data lands as a dataset.
    drifted = make_data(3000, seed=2, tenure_shift=12.0)
    ws.tracking.log_dataset("churn-new", drifted)
    rows = drifted[FEATURES].head(500).to_dict(orient="records")

    with Traffic(url, rows) as traffic:
        deadline = time.monotonic() + 60
        while sum(traffic.statuses.values()) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        gateway.gateway.log.flush()
        # Close the current 5-minute window now instead of waiting for the clock.
        now = floor_time(datetime.now(UTC), 300) + timedelta(seconds=300)
        monitor = ws.monitoring.run_once(now)
        assert monitor.alerts_changed >= 1, monitor
        alert = ws.monitoring.list_alerts("churn", "active")[0]
        assert alert.metric == "drift_share" and alert.value is not None and alert.value > 0.2

        fired = ws.pipelines.triggers.poll()
        started = [e for e in fired if e.outcome == "started"]
        assert len(started) == 1 and started[0].event_key == f"alert:{alert.id}"
        run = ws.pipelines.wait(started[0].run_id, timeout=120)
        assert run.status == "succeeded", run.error
        assert ws.registry.get_alias("churn", "champion").version == 2

        # The gateway follows the alias under load.
        deadline = time.monotonic() + 30
        while traffic.versions["churn/2"] < 50 and time.monotonic() < deadline:
            time.sleep(0.05)

    assert traffic.versions["churn/2"] >= 50, traffic.versions
    assert set(traffic.statuses) == {200}, traffic.statuses  # not one failed request
    # The same alert never starts a second run.
    assert [e for e in ws.pipelines.triggers.poll() if e.outcome == "started"] == []

    lineage = ws.registry.lineage("churn", 2)
    assert [d["name"] for d in lineage.datasets] == ["churn-new"]
    assert lineage.experiment == "pipeline:churn-retrain"
    assert f"'alert_id': '{alert.id}'" in lineage.params["trigger"]  # which alert retrained it
    stages = run.summary
    for stage in ("ingest_s", "preprocess_s", "train_s", "evaluate_s", "deploy_s", "total_s"):
        assert stages[stage] >= 0
    report = delivery_report(ws, "churn")
    churn = report.models[0]
    assert churn.promotions == 2 and churn.lead_time is not None
    assert churn.lead_time.samples >= 1 and churn.by_trigger.get("alert") == 1


def test_a_failed_gate_never_changes_what_is_served(served) -> None:  # type: ignore[no-untyped-def]
    ws, _, url = served
    # Labels that no longer follow the features: any candidate is worse than the champion.
    noise = make_data(3000, seed=3)
    noise["churned"] = (noise.index % 2).astype(int)
    ws.tracking.log_dataset("churn-noise", noise)
    run = ws.pipelines.run("churn-retrain", {"dataset": "churn-noise"}, executor="local")
    assert run.status == "succeeded"
    assert ws.registry.get_alias("churn", "champion").version == 1
    deploy = next(s for s in run.steps if s.name == "deploy")
    assert "promoted=False" in deploy.log
    with httpx.Client(base_url=url) as http:
        r = http.post(
            "/endpoints/churn/invocations",
            json={"dataframe_records": noise[FEATURES].head(1).to_dict(orient="records")},
        )
    assert r.status_code == 200 and r.headers["x-modelyard-version"] == "churn/1"
    client = Client(settings=ws.settings)
    assert client.get_version("models:/churn@champion").version == 1
    client.close()
