"""The monitor: closed windows from the log, drift per window, ops figures, alerts, restarts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard import Client
from modelyard.errors import InvalidInput, NotFound
from modelyard.monitoring import PredictionLog
from modelyard.monitoring.service import MonitoringService
from modelyard.monitoring.windows import floor_time
from modelyard.store.tables import WindowProfileRow
from modelyard.workspace import Workspace

FEATURES = ["f0", "f1", "f2", "f3"]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def training_frame(n: int = 3000, seed: int = 1) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)
    y = ((X.f0 + X.f1) > 0).astype(int)
    return X, y


def fitted() -> LogisticRegression:
    X, y = training_frame()
    return LogisticRegression().fit(X, y)


MODEL = fitted()


@pytest.fixture
def ws(any_workspace: Workspace) -> Iterator[Workspace]:
    X, _ = training_frame()
    client = Client(settings=any_workspace.settings)
    client.log_model(MODEL, "churn", input_example=X.head(5), alias="champion")
    client.close()
    any_workspace.endpoints.create("churn", "models:/churn@champion")
    any_workspace.monitoring.configure(
        "churn", {"granularities": [300, 3600], "lateness_seconds": 30}
    )
    yield any_workspace


def log_traffic(
    ws: Workspace,
    start: datetime,
    rows: int,
    *,
    shift: float = 0.0,
    errors: int = 0,
    seed: int = 7,
    prefix: str = "r",
) -> list[str]:
    """Log ``rows`` single-row predictions evenly over 4 minutes from ``start``."""
    rng = np.random.default_rng(seed)
    pl = PredictionLog(ws, flush_seconds=3600)
    pl.start()
    ids = []
    X = rng.normal(size=(rows, len(FEATURES)))
    X[:, 0] += shift
    proba = MODEL.predict_proba(pd.DataFrame(X, columns=FEATURES))
    for i in range(rows):
        rid = f"{prefix}{i}"
        ids.append(rid)
        at = start + timedelta(seconds=240 * i / rows)
        pl.log(
            endpoint="churn",
            model="churn",
            version=1,
            request_id=rid,
            inputs={name: X[i : i + 1, j] for j, name in enumerate(FEATURES)},
            outputs={
                "predictions": np.array([int(proba[i, 1] > 0.5)]),
                "probabilities": proba[i : i + 1],
            },
            rows=1,
            latency_ms=1.0 + (i % 10),
            at=at,
        )
    for i in range(errors):
        pl.log_error(
            endpoint="churn",
            model="churn",
            version=1,
            request_id=f"{prefix}bad{i}",
            status=422,
            latency_ms=0.5,
            at=start + timedelta(seconds=i),
        )
    pl.close()
    return ids


def test_windows_drift_operations_and_one_alert(ws: Workspace) -> None:
    X, _ = training_frame()
    ref = ws.monitoring.set_reference("models:/churn/1", data=X)
    assert ref.rows == len(X)
    assert {"f0", "output.predictions", "output.probabilities[1]"} <= set(ref.features)
    log_traffic(ws, T0, 1000)
    log_traffic(ws, T0 + timedelta(minutes=5), 1000, shift=2.0, errors=20, prefix="s")
    ws.monitoring.create_rule(
        {
            "name": "f0-drift",
            "endpoint": "churn",
            "kind": "drift",
            "metric": "drift_share",
            "op": ">",
            "threshold": 0.1,
            "window": 300,
            "min_samples": 100,
        }
    )

    now = T0 + timedelta(minutes=11)  # 12:10:30 closes 12:00 and 12:05, not 12:10
    first = ws.monitoring.run_once(now)
    assert first.windows_closed == 2 and not first.errors
    assert first.alerts_changed >= 1

    ops = ws.monitoring.operations("churn", window=300, start=T0, end=T0 + timedelta(minutes=10))
    assert [w.requests for w in ops] == [1000, 1020]
    assert ops[0].errors == 0 and ops[1].errors == 20
    assert ops[1].error_rate == pytest.approx(20 / 1020)
    assert 1.0 <= ops[0].latency_p50_ms <= 10.0  # type: ignore[operator]
    assert ops[0].throughput_rps == pytest.approx(1000 / 300)

    calm = ws.monitoring.drift("churn", window=300, start=T0, end=T0 + timedelta(minutes=5))
    shifted = ws.monitoring.drift(
        "churn", window=300, start=T0 + timedelta(minutes=5), end=T0 + timedelta(minutes=10)
    )
    assert calm.report.current_rows == 1000 and shifted.report.current_rows == 1000
    drifted = {f.feature for f in shifted.report.features if f.drifted}
    assert "f0" in drifted and "f1" not in drifted
    assert calm.report.drifted_features == 0, calm.report.features

    alerts = ws.monitoring.list_alerts("churn")
    assert len(alerts) == 1 and alerts[0].window_start == T0 + timedelta(minutes=5)

    # The same pass again, and a pass by a "restarted" monitor: nothing is counted twice.
    again = ws.monitoring.run_once(now)
    assert again.windows_closed == 0 and again.alerts_changed == 0
    ws.monitoring.release_lease()
    restarted = MonitoringService(ws, owner="restarted")
    assert restarted.run_once(now).windows_closed == 0
    restarted.release_lease()

    # An hour later the 12:00 hour closes, merged from its 5-minute windows.
    later = ws.monitoring.run_once(T0 + timedelta(hours=1, minutes=1))
    assert later.windows_closed >= 1
    hour = ws.monitoring.operations("churn", window=3600, start=T0, end=T0 + timedelta(hours=1))
    assert [w.requests for w in hour] == [2020]
    assert hour[0].errors == 20
    assert len(ws.monitoring.list_alerts("churn")) == 1


def test_drift_over_time_a_window_at_a_time(ws: Workspace) -> None:
    X, _ = training_frame()
    ws.monitoring.set_reference("models:/churn/1", data=X)
    log_traffic(ws, T0, 1000)
    log_traffic(ws, T0 + timedelta(minutes=10), 1000, shift=2.0, prefix="s")
    assert ws.monitoring.drift_history("churn") == []  # nothing closed yet
    ws.monitoring.run_once(T0 + timedelta(minutes=16))
    history = ws.monitoring.drift_history("churn", window=300)
    # The day before the newest closed window, at most 48 windows: up to 12:15.
    assert len(history) == 48 and history[-1].window_end == T0 + timedelta(minutes=15)
    calm, idle, shifted = history[-3:]
    assert (calm.window_start, calm.status, calm.rows) == (T0, "ok", 1000)
    assert calm.drift_share == 0 and calm.version == 1
    assert (idle.status, idle.rows, idle.drift_share) == ("no-traffic", 0, None)
    assert shifted.status in {"ok", "drift"} and "f0" in shifted.drifted_features
    assert shifted.drift_share is not None and shifted.drift_share > 0
    assert all(h.status == "no-traffic" for h in history[:-3])
    # Hourly windows by default: none of them has closed yet.
    assert ws.monitoring.drift_history("churn") == []
    ranged = ws.monitoring.drift_history(
        "churn", window=300, start=T0 + timedelta(minutes=2), end=T0 + timedelta(hours=5)
    )
    assert [h.window_start for h in ranged] == [T0 + timedelta(minutes=m) for m in (0, 5, 10)]
    with pytest.raises(InvalidInput, match="at most 1000"):
        ws.monitoring.drift_history("churn", window=300, start=T0 - timedelta(days=5))

    drift, reference, current = ws.monitoring.drift_profiles(
        "churn", window=300, start=T0 + timedelta(minutes=10), end=T0 + timedelta(minutes=15)
    )
    assert drift.report.current_rows == current.rows == 1000
    assert reference.rows == len(X)
    assert {f.feature for f in drift.report.features} <= set(reference.features)
    assert current.features["f0"].mean > reference.features["f0"].mean + 1  # type: ignore[union-attr]


def test_rebuilding_a_window_replaces_it(ws: Workspace) -> None:
    log_traffic(ws, T0, 200)
    service = ws.monitoring
    service.run_once(T0 + timedelta(minutes=6))
    # Lose the watermark (a crash between passes): the window is rebuilt, not added to.
    from modelyard.store.tables import MonitorWatermarkRow

    with ws.store.write("test") as tx:
        tx.session.query(MonitorWatermarkRow).delete()
    service.run_once(T0 + timedelta(minutes=6))
    with ws.store.read() as session:
        rows = session.query(WindowProfileRow).filter_by(granularity=300).all()
    assert len(rows) == 1 and rows[0].requests == 200 and rows[0].rows == 200


def test_catch_up_after_downtime_skips_no_window(ws: Workspace) -> None:
    for k in range(6):  # one batch every 5 minutes for half an hour
        log_traffic(ws, T0 + timedelta(minutes=5 * k), 40, seed=k, prefix=f"w{k}-")
    result = ws.monitoring.run_once(T0 + timedelta(hours=2))
    ops = ws.monitoring.operations("churn", window=300, start=T0, end=T0 + timedelta(hours=2))
    assert [w.requests for w in ops] == [40] * 6
    assert result.windows_closed >= 6


def test_few_rows_are_insufficient_not_no_drift(ws: Workspace) -> None:
    X, _ = training_frame()
    ws.monitoring.set_reference("models:/churn/1", data=X)
    log_traffic(ws, T0, 10, shift=5.0)
    ws.monitoring.run_once(T0 + timedelta(minutes=6))
    drift = ws.monitoring.drift("churn", window=300, start=T0, end=T0 + timedelta(minutes=5))
    assert drift.report.status == "insufficient"
    assert drift.report.dataset_drift is None


def test_second_monitor_waits_for_the_lease(ws: Workspace) -> None:
    log_traffic(ws, T0, 50)
    a, b = MonitoringService(ws, owner="a"), MonitoringService(ws, owner="b")
    assert not a.run_once(T0 + timedelta(minutes=6)).skipped
    assert b.run_once(T0 + timedelta(minutes=6)).skipped
    a.release_lease()
    assert not b.run_once(T0 + timedelta(minutes=6)).skipped


def test_reference_errors_say_what_to_do(ws: Workspace) -> None:
    with pytest.raises(NotFound, match="monitor reference"):
        ws.monitoring.get_reference("models:/churn/1")
    with pytest.raises(InvalidInput, match="training dataset"):
        ws.monitoring.set_reference("models:/churn/1")
    with pytest.raises(InvalidInput, match="lacks input column"):
        ws.monitoring.set_reference("models:/churn/1", data=pd.DataFrame({"f0": [1.0, 2.0]}))
    with pytest.raises(InvalidInput, match="no rows"):
        ws.monitoring.set_reference("models:/churn/1", data=pd.DataFrame(columns=FEATURES))


def test_reference_from_the_training_dataset_in_the_lineage(ws: Workspace) -> None:
    X, y = training_frame(seed=3)
    client = Client(settings=ws.settings)
    with client.start_run(experiment="churn"):
        ds = client.log_dataset("churn-train", X)
        version = client.log_model(
            LogisticRegression().fit(X, y),
            "churn",
            input_example=X.head(5),
            datasets=[{"dataset_id": ds.id, "role": "training"}],
        )
    client.close()
    ref = ws.monitoring.set_reference(f"models:/churn/{version.version}")
    assert ref.source == "dataset:churn-train/1" and ref.rows == len(X)


def test_bad_settings_are_refused(ws: Workspace) -> None:
    with pytest.raises(InvalidInput, match="divide a day"):
        ws.monitoring.configure("churn", {"granularities": [7]})
    with pytest.raises(InvalidInput, match="task"):
        ws.monitoring.configure("churn", {"task": "clustering"})
    with pytest.raises(NotFound):
        ws.monitoring.configure("nope", {})
    assert ws.monitoring.get_config("churn").granularities == [300, 3600]


# Recent enough for feedback's 30-day lookback and the 7-day late-label lookback.
RECENT = floor_time(datetime.now(UTC) - timedelta(days=1), 3600)


def wrong_labels(ws: Workspace) -> list[dict[str, object]]:
    """A label for every logged prediction, each the opposite of what was predicted."""
    logged = PredictionLog(ws).read("churn").to_pydict()
    return [
        {"request_id": rid, "label": 1 - int(predicted)}
        for rid, predicted in zip(logged["request_id"], logged["out__predictions"], strict=True)
    ]


def test_late_labels_reevaluate_their_closed_window_and_can_alert(ws: Workspace) -> None:
    log_traffic(ws, RECENT, 200)
    ws.monitoring.create_rule(
        {
            "name": "accuracy",
            "endpoint": "churn",
            "kind": "performance",
            "metric": "accuracy",
            "op": "<",
            "threshold": 0.9,
            "window": 300,
            "min_samples": 50,
        }
    )
    first = ws.monitoring.run_once(RECENT + timedelta(minutes=6))
    assert first.windows_closed == 1 and first.alerts_changed == 0  # no labels yet

    # Days later (for the window), the labels come: every prediction was wrong.
    ws.monitoring.submit_feedback("churn", wrong_labels(ws)[:100])
    report = ws.monitoring.performance(
        "churn", window=300, start=RECENT, end=RECENT + timedelta(minutes=5)
    )
    assert report.windows[0].metrics["accuracy"] == 0.0

    # Beyond the configured lookback, a window is not evaluated again ...
    ws.monitoring.configure("churn", {"granularities": [300, 3600], "late_labels_seconds": 60})
    bounded = ws.monitoring.run_once(RECENT + timedelta(minutes=11))
    assert bounded.windows_reevaluated == 0 and ws.monitoring.list_alerts("churn") == []

    # ... within it, the next pass evaluates the window again, and the rule opens an alert
    # naming that window.
    ws.monitoring.configure("churn", {"granularities": [300, 3600]})
    later = ws.monitoring.run_once(RECENT + timedelta(minutes=16))
    assert later.windows_reevaluated == 1 and later.alerts_changed == 1 and not later.errors
    [alert] = ws.monitoring.list_alerts("churn")
    assert alert.rule == "accuracy" and alert.value == 0.0 and alert.samples == 100
    assert (alert.window_start, alert.window_end) == (RECENT, RECENT + timedelta(minutes=5))
    assert alert.evidence["late_labels"] is True

    # Passes after that open nothing more.
    again = ws.monitoring.run_once(RECENT + timedelta(minutes=21))
    assert again.alerts_changed == 0 and len(ws.monitoring.list_alerts("churn")) == 1


def test_volume_rules_see_traffic_stop(ws: Workspace) -> None:
    log_traffic(ws, T0, 50)  # the 12:00 window is busy, then nothing comes
    monitoring = ws.monitoring
    for name, metric, op, threshold in [
        ("silent", "idle_windows", ">=", 3),
        ("quiet", "requests", "<", 10),
        ("slow-traffic", "throughput_rps", "<", 0.01),
    ]:
        monitoring.create_rule(
            {
                "name": name,
                "endpoint": "churn",
                "kind": "volume",
                "metric": metric,
                "op": op,
                "threshold": threshold,
                "window": 300,
                # No traffic is what a volume rule measures, not a lack of samples.
                "min_samples": 100,
            }
        )
    monitoring.run_once(T0 + timedelta(minutes=16))  # closes 12:00, 12:05 and 12:10
    opened = {a.rule: a for a in monitoring.list_alerts("churn")}
    assert set(opened) == {"quiet", "slow-traffic"}
    assert opened["quiet"].window_start == T0 + timedelta(minutes=5)
    assert opened["quiet"].value == 0 and opened["slow-traffic"].value == 0

    monitoring.run_once(T0 + timedelta(minutes=21))  # 12:15: the third silent window
    [silent] = monitoring.list_alerts("churn", rule="silent")
    assert silent.window_start == T0 + timedelta(minutes=15) and silent.value == 3
    assert silent.evidence["observation"]["requests"] == 0


def test_an_endpoint_nobody_calls_gets_empty_windows_and_can_alert(ws: Workspace) -> None:
    # Nothing logged at all: windows start when the endpoint was created.
    created = ws.endpoints.get("churn").created_at
    ws.monitoring.create_rule(
        {
            "name": "never-called",
            "endpoint": "churn",
            "kind": "volume",
            "metric": "idle_windows",
            "op": ">=",
            "threshold": 3,
            "window": 300,
        }
    )
    passed = ws.monitoring.run_once(created + timedelta(minutes=21))
    assert passed.windows_closed >= 4 and not passed.errors
    ops = ws.monitoring.operations("churn", window=300)
    assert ops == []  # empty windows store nothing ...
    [alert] = ws.monitoring.list_alerts("churn")  # ... but are judged
    assert alert.window_start == floor_time(created, 300) + timedelta(minutes=10)
    assert alert.value == 3


def test_drift_before_any_window_closed_covers_the_last_window_seconds(ws: Workspace) -> None:
    """Traffic of a moment ago, just before a window boundary, is found right after it."""
    X, _ = training_frame()
    ws.monitoring.set_reference("models:/churn/1", data=X)
    now = datetime.now(UTC)
    if now.second >= 50:  # leave the minute's boundary well behind the traffic below
        time.sleep(61 - now.second)
        now = datetime.now(UTC)
    boundary = now.replace(second=0, microsecond=0)
    log_traffic(ws, boundary - timedelta(seconds=250), 100)  # ends 10 s before the boundary
    # No window has closed (no monitor pass): the aligned minute so far holds nothing, the
    # last 300 s hold all of it.
    drift = ws.monitoring.drift("churn", window=300)
    assert drift.report.current_rows == 100
