"""Monitoring through the SDK (in-process and over HTTP), the API's errors, and the CLI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
from tests.conftest import LiveServer
from tests.monitoring.test_monitor import FEATURES, MODEL, log_traffic, training_frame

from modelyard import Client
from modelyard.errors import Conflict, InvalidInput, NotFound
from modelyard.monitoring.windows import floor_time
from modelyard.workspace import Workspace

# Recent enough for feedback's default 30-day lookback.
T0 = floor_time(datetime.now(UTC) - timedelta(days=1), 3600)


@pytest.fixture
def monitored(workspace: Workspace) -> Workspace:
    X, _ = training_frame()
    c = Client(settings=workspace.settings)
    c.log_model(MODEL, "churn", input_example=X.head(5), alias="champion")
    c.close()
    workspace.endpoints.create("churn", "models:/churn@champion")
    return workspace


def test_the_whole_loop_through_the_sdk(monitored: Workspace, client: Client) -> None:
    m = client.monitoring
    config = m.configure("churn", {"granularities": [300, 3600], "task": "classification"})
    assert config.granularities == [300, 3600]
    X, _ = training_frame()
    ref = m.set_reference("models:/churn@champion", data=X)
    assert ref.rows == len(X) and "f0" in ref.features
    assert m.get_reference("models:/churn/1").source == "data"
    ids = log_traffic(monitored, T0, 1000, shift=2.0, errors=5)
    m.create_rule(
        {
            "name": "drifting",
            "endpoint": "churn",
            "kind": "drift",
            "metric": "drift.f0",
            "op": ">",
            "threshold": 0.5,
            "window": 300,
            "min_samples": 50,
        }
    )
    assert [r.name for r in m.list_rules("churn")] == ["drifting"]

    # Labels arrive before the window closes; the monitor sees them with the window.
    truth = (MODEL.predict(pd.DataFrame([[0.0] * 4], columns=FEATURES)) * 0).tolist()[0]
    result = m.submit_feedback("churn", [{"request_id": rid, "label": truth} for rid in ids[:200]])
    assert result.stored == 200 and result.created == 200

    assert monitored.monitoring.run_once(T0 + timedelta(minutes=6)).windows_closed >= 1
    status = {s.endpoint: s for s in m.status()}["churn"]
    five = next(w for w in status.windows if w.granularity == 300)
    assert five.requests == 1005 and five.drift_status in {"ok", "drift"}
    assert "f0" in five.drifted_features
    assert status.open_alerts == 1 and status.feedback == 200

    drift = m.drift("churn", window=300, start=T0, end=T0 + timedelta(minutes=5))
    assert drift.version == 1 and drift.report.current_rows == 1000
    page = m.drift_html("churn", window=300, start=T0, end=T0 + timedelta(minutes=5))
    assert "<html" in page.lower() and "f0" in page

    ops = m.operations("churn", window=300, start=T0, end=T0 + timedelta(minutes=5))
    assert ops[0].requests == 1005 and ops[0].errors == 5

    perf = m.performance("churn", start=T0, end=T0 + timedelta(minutes=5))
    assert perf.windows and perf.windows[0].samples == 200

    alerts = m.list_alerts("churn", "active")
    assert len(alerts) == 1 and alerts[0].metric == "drift.f0"
    acked = m.acknowledge_alert(alerts[0].id, note="on it")
    assert (acked.status, acked.acknowledgement_note) == ("open", "on it")
    assert acked.acknowledged_by == monitored.actor and acked.acknowledged_at is not None
    assert [a.id for a in m.list_alerts("churn", "acknowledged")] == [acked.id]
    assert m.acknowledge_alert(acked.id).acknowledged_at == acked.acknowledged_at  # idempotent
    resolved = m.resolve_alert(alerts[0].id, note="retrained")
    assert resolved.status == "resolved" and resolved.acknowledged_by == acked.acknowledged_by
    assert m.list_alerts("churn", "active") == []
    with pytest.raises(Conflict, match="only an open or escalated alert can be acknowledged"):
        m.acknowledge_alert(alerts[0].id)


def test_errors_name_what_to_fix(monitored: Workspace, client: Client) -> None:
    m = client.monitoring
    with pytest.raises(NotFound, match="endpoint"):
        m.get_config("nope")
    with pytest.raises(InvalidInput, match="granularities"):
        m.configure("churn", {"granularities": [61]})
    with pytest.raises(NotFound, match="monitor reference"):
        m.get_reference("models:/churn/1")
    with pytest.raises(NotFound, match="logged no predictions"):
        m.drift("churn", window=300, start=T0, end=T0 + timedelta(minutes=5))
    # A label for an endpoint that does not exist could never be joined: refused.
    with pytest.raises(NotFound, match="no endpoint 'nope' exists"):
        m.submit_feedback("nope", [{"request_id": "never-served", "label": 1}])
    with pytest.raises(InvalidInput, match="rejected"):  # names the statuses there are
        m.list_held_feedback("churn", "lost")
    with pytest.raises(NotFound):
        m.resolve_alert("01ARZ3NDEKTSV4RRFFQ69G5FAV")
    with pytest.raises(NotFound, match="monitor alerts"):
        m.acknowledge_alert("01ARZ3NDEKTSV4RRFFQ69G5FAV")
    with pytest.raises(InvalidInput):
        m.create_rule(
            {
                "name": "x",
                "endpoint": "churn",
                "kind": "latency",
                "metric": "f1",
                "op": ">",
                "threshold": 1,
                "window": 300,
            }
        )


def test_bad_requests_get_4xx_problems(monitored: Workspace, live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url + "/api/v1/monitoring") as http:
        r = http.post(
            "/endpoints/churn/feedback",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem")
        r = http.post("/endpoints/churn/feedback", json={"items": []})
        assert r.status_code == 422
        r = http.post("/endpoints/churn/feedback", json={"items": [{"label": 1}]})
        assert r.status_code == 422 and "request_id" in r.text
        r = http.get("/endpoints/churn/drift", params={"window": -5})
        assert r.status_code == 422
        r = http.put("/endpoints/churn/config", json={"drift": {"drift_share": 2}})
        assert r.status_code == 422
        r = http.get("/endpoints/churn/drift", params={"start": "yesterday"})
        assert r.status_code == 422
        r = http.post("/references", json={"uri": "models:/churn/9"})
        assert r.status_code == 404


def test_cli_monitor_commands(monitored: Workspace, tmp_path: Path, run) -> None:  # type: ignore[no-untyped-def]
    # The `run` fixture's home is tmp_path/"home", the monitored workspace's.
    assert monitored.settings.resolved_home == (tmp_path / "home").resolve()

    def cli(*args: str) -> tuple[int, str]:
        result = run(*args, ok=False)
        return result.returncode, result.stdout

    X, _ = training_frame()
    data = tmp_path / "train.parquet"
    X.to_parquet(data)
    code, out = cli("monitor", "reference", "models:/churn/1", "--data", str(data))
    assert code == 0 and "3000 rows" in out
    ids = log_traffic(monitored, T0, 300, shift=2.0)
    code, out = cli("monitor", "run", "--once", "--json")
    assert code == 0 and '"windows_closed"' in out
    code, out = cli("monitor", "status")
    assert code == 0 and "churn" in out
    code, out = cli(
        "monitor",
        "drift",
        "churn",
        "--window",
        "3600",
        "--start",
        T0.isoformat(),
        "--end",
        (T0 + timedelta(hours=1)).isoformat(),
        "--html",
        str(tmp_path / "drift.html"),
    )
    assert code == 0 and "f0" in out and (tmp_path / "drift.html").exists()
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"request_id": ids[:10], "label": [1] * 10}).to_csv(labels, index=False)
    code, out = cli("monitor", "feedback", "churn", "--file", str(labels))
    assert code == 0 and "10 label(s) stored" in out
    # A label for a prediction not in the log (yet) is held, and listed.
    code, out = cli("monitor", "feedback", "churn", "--request-id", "ghost", "--label", "1")
    assert code == 0 and "1 label(s) held until their predictions are logged" in out
    code, out = cli("monitor", "feedback-pending", "churn", "--json")
    assert code == 0 and '"request_id": "ghost"' in out and '"status": "pending"' in out
    code, out = cli("monitor", "feedback", "nowhere", "--request-id", "ghost", "--label", "1")
    assert code != 0
    code, out = cli(
        "monitor",
        "rules",
        "create",
        "slow",
        "--endpoint",
        "churn",
        "--kind",
        "latency",
        "--metric",
        "latency_p99_ms",
        "--threshold",
        "50",
    )
    assert code == 0 and "rule slow" in out
    code, out = cli("monitor", "alerts", "--json")
    assert code == 0 and out.strip().startswith("[")


def test_cli_acknowledges_then_resolves(monitored: Workspace, run) -> None:  # type: ignore[no-untyped-def]
    monitored.monitoring.create_rule(
        {
            "name": "errors",
            "endpoint": "churn",
            "kind": "error_rate",
            "metric": "error_rate",
            "op": ">",
            "threshold": 0.1,
            "window": 300,
        }
    )
    observation = {"requests": 100, "errors": 50, "error_rate": 0.5}
    [alert] = monitored.monitoring.alerts.evaluate("churn", 300, T0, observation, 100)

    result = run("monitor", "ack", alert.id, "--note", "paging the data team")
    assert f"alert {alert.id} acknowledged by" in result.stdout
    result = run("monitor", "alerts", "--status", "acknowledged", "--json")
    assert alert.id in result.stdout and "paging the data team" in result.stdout
    run("monitor", "resolve", alert.id, "--note", "fixed")
    result = run("monitor", "ack", alert.id, ok=False)
    assert result.returncode != 0
    assert "only an open or escalated alert can be acknowledged" in result.stdout + result.stderr
