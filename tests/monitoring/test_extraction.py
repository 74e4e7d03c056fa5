"""Extraction alerts: a caller sweeping one feature at a time fires, normal traffic does not."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression
from tests.serving.conftest import GatewayServer

from modelyard import Client
from modelyard.config import Settings
from modelyard.errors import InvalidInput
from modelyard.monitoring import PredictionLog
from modelyard.monitoring.extraction import MAX_ROWS, analyse
from modelyard.workspace import Workspace

FEATURES = [f"f{i}" for i in range(6)]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RULE = {
    "name": "copying",
    "endpoint": "scoring",
    "kind": "extraction",
    "metric": "extraction_suspects",
    "op": ">=",
    "threshold": 1,
    "window": 300,
    "min_samples": 100,
}


def training_rows(n: int, seed: int) -> np.ndarray:
    """Rows of the training distribution: correlated normals."""
    cov = np.full((len(FEATURES), len(FEATURES)), 0.4) + 0.6 * np.eye(len(FEATURES))
    return np.random.default_rng(seed).multivariate_normal(np.zeros(len(FEATURES)), cov, n)


def sweep(values: int = 30) -> np.ndarray:
    """An extraction attack: from the mean, one feature at a time over a grid."""
    rows = []
    for j in range(len(FEATURES)):
        for value in np.linspace(-3, 3, values):
            row = np.zeros(len(FEATURES))
            row[j] = value
            rows.append(row)
    return np.array(rows)


X_TRAIN = training_rows(2000, seed=1)
MODEL = LogisticRegression().fit(
    pd.DataFrame(X_TRAIN, columns=FEATURES), X_TRAIN[:, 0] + X_TRAIN[:, 1] > 0
)


def _deploy(ws: Workspace) -> dict[str, str]:
    """The model behind endpoint ``scoring``, and a token id per caller."""
    client = Client(str(ws.settings.resolved_home), settings=ws.settings)
    frame = pd.DataFrame(X_TRAIN, columns=FEATURES)
    client.log_model(MODEL, "scoring", input_example=frame.head(5))
    client.close()
    ws.endpoints.create("scoring", "models:/scoring/1")
    ws.monitoring.configure("scoring", {"granularities": [300], "lateness_seconds": 30})
    tokens = {}
    for user in ("alice", "bob", "mallory"):
        ws.identities.create_user(user)
        tokens[user] = ws.identities.create_token(user).id
    return tokens


@pytest.fixture
def ws(any_workspace: Workspace) -> Iterator[Workspace]:
    yield any_workspace


def log_rows(
    ws: Workspace, caller: str, rows: np.ndarray, start: datetime, *, per_request: int = 10
) -> None:
    """Log ``rows`` as requests of ``per_request`` rows by ``caller``, over 4 minutes."""
    plog = PredictionLog(ws, flush_seconds=3600)
    plog.start()
    batches = range(0, len(rows), per_request)
    for n, i in enumerate(batches):
        batch = rows[i : i + per_request]
        plog.log(
            endpoint="scoring",
            model="scoring",
            version=1,
            request_id=f"{caller}-{start:%H%M}-{n}",
            inputs={name: batch[:, j] for j, name in enumerate(FEATURES)},
            outputs={"predictions": MODEL.predict(pd.DataFrame(batch, columns=FEATURES))},
            rows=len(batch),
            latency_ms=2.0,
            at=start + timedelta(seconds=240 * n / len(batches)),
            caller=caller,
        )
    plog.close()


def test_a_one_feature_sweep_fires_and_normal_traffic_does_not(ws: Workspace) -> None:
    tokens = _deploy(ws)
    ws.monitoring.create_rule(RULE)
    later = T0 + timedelta(minutes=5)
    for start, seed in ((T0, 10), (later, 20)):  # two windows of normal traffic
        log_rows(ws, tokens["alice"], training_rows(600, seed), start)
        log_rows(ws, tokens["bob"], training_rows(400, seed + 1), start)
    log_rows(ws, tokens["mallory"], sweep(), later)  # and the attack in the second

    result = ws.monitoring.run_once(T0 + timedelta(minutes=11))
    assert result.windows_closed == 2 and not result.errors
    (alert,) = ws.monitoring.list_alerts("scoring")
    assert alert.kind == "extraction" and alert.window_start == later
    assert alert.value == 1.0 and alert.samples == 1000 + 180
    (suspect,) = alert.evidence["suspects"]
    assert (suspect["caller"], suspect["user"]) == (tokens["mallory"], "mallory")
    assert suspect["rows"] == 180 and suspect["near_duplicates"] > 0.9
    reasons = " ".join(suspect["reasons"])
    assert "near_duplicates" in reasons and "grid" in reasons, reasons
    assert "mallory" in alert.evidence["summary"]
    assert alert.evidence["callers_analysed"] == 3
    assert alert.evidence["observation"]["extraction_near_duplicates"] > 0.9  # mallory's


def test_normal_traffic_alone_never_fires(ws: Workspace) -> None:
    tokens = _deploy(ws)
    ws.monitoring.create_rule({**RULE, "name": "any-sign", "metric": "extraction_grid"})
    ws.monitoring.create_rule(
        {**RULE, "name": "dups", "metric": "extraction_near_duplicates", "threshold": 0.2}
    )
    for i in range(3):
        start = T0 + timedelta(minutes=5 * i)
        log_rows(ws, tokens["alice"], training_rows(800, 30 + i), start, per_request=1)
        log_rows(ws, tokens["bob"], training_rows(300, 40 + i), start, per_request=25)
    # a control: fires on any judged window, so the rules above saw every window judged
    ws.monitoring.create_rule({**RULE, "name": "control", "op": ">=", "threshold": 0})
    result = ws.monitoring.run_once(T0 + timedelta(minutes=16))
    assert result.windows_closed == 3 and not result.errors
    (control,) = ws.monitoring.list_alerts("scoring")
    assert control.rule == "control" and control.value == 0.0
    assert control.evidence["suspects"] == [] and control.evidence["callers_analysed"] == 2
    observed = control.evidence["observation"]
    assert observed["extraction_near_duplicates"] < 0.05 and observed["extraction_grid"] == 0


def test_through_the_gateway_the_log_names_the_caller_and_the_attack_fires(
    tmp_path: Path,
) -> None:
    ws = Workspace.open(Settings(home=tmp_path / "home", auth=True))
    tokens = _deploy(ws)
    secrets = {user: ws.identities.create_token(user) for user in ("alice", "mallory")}
    ws.monitoring.create_rule(RULE)
    server = GatewayServer(ws)
    url = server.start()
    try:

        def send(user: str, rows: np.ndarray) -> None:
            headers = {"authorization": f"Bearer {secrets[user].secret}"}
            with httpx.Client(base_url=url, headers=headers) as c:
                for i in range(0, len(rows), 10):
                    body = {"dataframe_split": {"columns": FEATURES, "data": rows[i : i + 10]}}
                    r = c.post("/endpoints/scoring/invocations", json=_listed(body))
                    assert r.status_code == 200, r.text

        send("alice", training_rows(500, seed=5))
        send("mallory", sweep())
        server.gateway.log.flush()
        table = PredictionLog(ws).read("scoring")
        assert set(table["caller"].to_pylist()) == {secrets["alice"].id, secrets["mallory"].id}
        # close every window up to now (the traffic may straddle two)
        result = ws.monitoring.run_once(datetime.now(UTC) + timedelta(minutes=11))
        assert not result.errors
        alerts = ws.monitoring.list_alerts("scoring")
        assert alerts, "the sweep did not fire"
        for alert in alerts:
            named = {s["user"] for s in alert.evidence["suspects"]}
            assert named == {"mallory"}, alert.evidence
        assert tokens  # the fixture's own tokens were never used: not callers
    finally:
        server.stop()
        ws.close()


def _listed(body: dict) -> dict:
    split = body["dataframe_split"]
    return {"dataframe_split": {**split, "data": np.asarray(split["data"]).tolist()}}


# --- the analysis alone ---------------------------------------------------------------------


def _table(parts: list[tuple[str, np.ndarray, int]]) -> pa.Table:
    """Logged rows: (caller, rows, rows per request) each."""
    columns: dict[str, list] = {"request_id": [], "caller": [], "status": [], "shadow": []}
    features: list[np.ndarray] = []
    for caller, rows, per_request in parts:
        columns["request_id"] += [f"{caller}-{i // per_request}" for i in range(len(rows))]
        columns["caller"] += [caller] * len(rows)
        columns["status"] += [200] * len(rows)
        columns["shadow"] += [False] * len(rows)
        features.append(rows)
    matrix = np.vstack(features)
    for j, name in enumerate(FEATURES):
        columns[f"in__{name}"] = matrix[:, j].tolist()
    return pa.table(columns)


def test_a_volume_far_above_the_callers_usual_is_flagged() -> None:
    rows = training_rows(900, seed=3)
    report = analyse(
        _table([("alice", rows[:300], 1), ("bob", rows[300:600], 1), ("carol", rows[600:], 1)]),
        history={"alice": 48, "carol": 7200},  # over 24 windows: 2 and 300 a window
        baseline_windows=24,
    )
    found = {c.caller: c for c in report.callers}
    assert found["alice"].volume_ratio == pytest.approx(150)
    assert found["alice"].reasons and "150 times its usual 2.0" in found["alice"].reasons[0]
    assert found["bob"].volume_ratio is None and not found["bob"].suspect  # new: no usual
    assert found["carol"].volume_ratio == pytest.approx(1) and not found["carol"].suspect
    assert report.observation()["extraction_suspects"] == 1.0


def test_inputs_gridded_by_nature_make_no_caller_a_suspect() -> None:
    rng = np.random.default_rng(4)

    def small_integers(n: int) -> np.ndarray:  # counts and codes, like most tables have
        return np.column_stack(
            [rng.integers(0, 4, n), rng.integers(0, 3, n), rng.integers(1, 6, n)]
            + [rng.normal(size=n) for _ in range(3)]
        ).astype(float)

    report = analyse(_table([(name, small_integers(400), 5) for name in ("alice", "bob", "carol")]))
    assert all(c.grid == pytest.approx(0.5) for c in report.callers)  # half gridded...
    assert report.suspects == []  # ...as much as everyone else's: nobody stands out
    # a sweep among them still stands out
    report = analyse(_table([("alice", small_integers(400), 5), ("mallory", sweep(), 10)]))
    assert [c.caller for c in report.suspects] == ["mallory"]


def test_the_cost_is_bounded_by_sampling() -> None:
    busy = training_rows(60_000, seed=6)
    started = time.perf_counter()
    report = analyse(_table([("alice", busy, 100), ("mallory", sweep(), 10)]))
    seconds = time.perf_counter() - started
    assert [c.caller for c in report.suspects] == ["mallory"]
    assert report.callers[0].rows == 60_000 > MAX_ROWS  # counted whole, analysed sampled
    assert seconds < 10, seconds


def test_an_extraction_rule_watches_extraction_metrics_only(ws: Workspace) -> None:
    _deploy(ws)
    with pytest.raises(InvalidInput, match="extraction_suspects"):
        ws.monitoring.create_rule({**RULE, "metric": "requests"})
    with pytest.raises(InvalidInput, match="does not fit kind 'volume'"):
        ws.monitoring.create_rule({**RULE, "kind": "volume"})
