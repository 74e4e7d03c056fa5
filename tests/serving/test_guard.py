"""The input guard: rows scored against the served version's reference profile, on both of
the gateway's paths (answered directly, and through ASGI), under each policy."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from tests.serving.conftest import FEATURES, GatewayServer
from tests.serving.test_http_protocol import spy_on_paths

from modelyard.client import Client
from modelyard.config import Settings
from modelyard.errors import InvalidInput
from modelyard.monitoring.predlog import GUARD_SCORE, PredictionLog
from modelyard.monitoring.profiles import Profile
from modelyard.serving.gateway import Gateway
from modelyard.serving.guard import TAIL, Guard
from modelyard.workspace import Workspace

FAR = 50.0  # every feature of the training frame is N(0, 1): 50 is beyond its range


def register(gw: GatewayServer, model: object, X: pd.DataFrame, *, reference: bool) -> None:
    c = Client(str(gw.ws.settings.resolved_home), settings=gw.ws.settings)
    c.log_model(model, "fraud", input_example=X.head(5))
    c.close()
    if reference:
        gw.ws.monitoring.set_reference("models:/fraud/1", data=X)


def rows_body(rows: np.ndarray) -> dict[str, Any]:
    return {"dataframe_split": {"columns": FEATURES, "data": rows.tolist()}}


def mixed_rows(X: pd.DataFrame) -> np.ndarray:
    """Four rows: 0 and 2 from the training data, 1 and 3 far outside it."""
    rows = X.head(4).to_numpy().copy()
    rows[1, :] = FAR
    rows[3, :3] = -FAR  # half the features out of range: score 0.5
    return rows


def post(url: str, body: dict[str, Any], *, asgi: bool) -> httpx.Response:
    # A query string is out of the ordinary: the request takes uvicorn's ASGI path.
    path = f"{url}/endpoints/fraud/invocations" + ("?via=asgi" if asgi else "")
    return httpx.post(path, json=body, timeout=30)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def gateway_ws(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workspace]:
    """The gateway's workspace on SQLite and on PostgreSQL (its reference profiles)."""
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    ws = Workspace.open(Settings(home=tmp_path / "home", database_url=url))
    yield ws
    ws.close()


@pytest.fixture
def served(gateway: GatewayServer, models, frame) -> tuple[GatewayServer, str]:  # type: ignore[no-untyped-def]
    X, _ = frame
    register(gateway, models["lr"], X, reference=True)
    gateway.ws.endpoints.create("fraud", "models:/fraud/1", guard={"policy": "flag"})
    return gateway, gateway.start()


def logged(gw: GatewayServer) -> pa.Table:
    gw.gateway.log.flush()
    return gw.gateway.log.read("fraud")


def test_flag_names_the_rows_in_a_header_on_both_paths_and_logs_every_score(
    served: tuple[GatewayServer, str], frame, models, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw, url = served
    X, _ = frame
    paths = spy_on_paths(monkeypatch)
    rows = mixed_rows(X)
    for asgi in (False, True):
        r = post(url, rows_body(rows), asgi=asgi)
        assert r.status_code == 200, r.text
        assert r.headers["x-modelyard-guard"] == "flagged; rows=1,3; score=1.00"
        # flagged rows are still answered
        expected = models["lr"].predict(pd.DataFrame(rows, columns=FEATURES))
        assert r.json()["predictions"] == expected.tolist()
        clean = post(url, rows_body(X.head(3).to_numpy()), asgi=asgi)
        assert clean.headers["x-modelyard-guard"].startswith("ok; score=0.")
    assert paths == ["direct", "direct", "asgi", "asgi"]

    table = logged(gw)
    assert table.num_rows == 14
    flagged = table.filter(pa.compute.equal(table["request_id"], r.headers["x-request-id"]))
    scores = flagged[GUARD_SCORE].to_numpy()
    assert scores[1] == 1.0 and scores[3] == pytest.approx(0.5)
    assert scores[0] < 0.2 and scores[2] < 0.2


def test_threshold_decides_which_rows_are_flagged(served: tuple[GatewayServer, str], frame) -> None:
    gw, url = served
    X, _ = frame
    gw.ws.endpoints.update("fraud", guard={"policy": "flag", "threshold": 0.75})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the gateway follows the change within a refresh
        r = post(url, rows_body(mixed_rows(X)), asgi=False)
        if r.headers["x-modelyard-guard"] == "flagged; rows=1; score=1.00":
            break
        time.sleep(0.1)
    assert r.headers["x-modelyard-guard"] == "flagged; rows=1; score=1.00"


def test_reject_answers_422_naming_rows_features_and_why_and_predicts_nothing(
    served: tuple[GatewayServer, str], frame, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw, url = served
    X, _ = frame
    gw.ws.endpoints.update("fraud", guard={"policy": "reject"})
    predicted: list[int] = []
    predict = Gateway._predict

    async def counting(self, loaded, inputs, rows, timeout_ms):  # type: ignore[no-untyped-def]
        predicted.append(rows)
        return await predict(self, loaded, inputs, rows, timeout_ms)

    monkeypatch.setattr(Gateway, "_predict", counting)
    deadline = time.monotonic() + 10
    r = post(url, rows_body(mixed_rows(X)), asgi=False)
    while r.status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
        r = post(url, rows_body(mixed_rows(X)), asgi=False)
    predicted.clear()
    for asgi in (False, True):
        r = post(url, rows_body(mixed_rows(X)), asgi=asgi)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        problem = r.json()
        assert problem["title"] == "Input rejected"
        assert problem["rows"] == [1, 3]
        assert "2 of 4 rows" in problem["detail"] and "models:/fraud/1" in problem["detail"]
        assert "f0=50 above the range seen in training" in problem["detail"]
        first, second = problem["details"]
        assert first["row"] == 1 and first["score"] == 1.0
        assert {f["feature"] for f in first["features"]} == set(FEATURES)
        assert {f["reason"] for f in first["features"]} == {"out_of_range"}
        # the training range is not told to callers: they could stay just inside it
        assert all("range" not in f and f["side"] == "above" for f in first["features"])
        assert str(round(X["f0"].max(), 3)) not in r.text
        assert second["row"] == 3
        assert {f["feature"] for f in second["features"] if f["reason"] == "out_of_range"} == {
            "f0",
            "f1",
            "f2",
        }
    assert predicted == []
    ok = post(url, rows_body(X.head(5).to_numpy()), asgi=False)
    assert ok.status_code == 200 and predicted == [5]
    assert "x-modelyard-guard" not in ok.headers  # reject says nothing when all is well

    table = logged(gw)
    rejected = table.filter(pa.compute.equal(table["request_id"], r.headers["x-request-id"]))
    assert rejected["status"].to_pylist() == [422]


def test_log_policy_only_logs_the_scores(served: tuple[GatewayServer, str], frame) -> None:
    gw, url = served
    X, _ = frame
    gw.ws.endpoints.update("fraud", guard={"policy": "log"})
    deadline = time.monotonic() + 10
    r = post(url, rows_body(mixed_rows(X)), asgi=False)
    while "x-modelyard-guard" in r.headers and time.monotonic() < deadline:
        time.sleep(0.1)
        r = post(url, rows_body(mixed_rows(X)), asgi=False)
    assert r.status_code == 200 and "x-modelyard-guard" not in r.headers
    table = logged(gw)
    mine = table.filter(pa.compute.equal(table["request_id"], r.headers["x-request-id"]))
    assert mine[GUARD_SCORE].to_numpy()[[1, 3]].tolist() == [1.0, 0.5]


def test_a_version_without_reference_is_not_guarded_and_says_so_until_it_has_one(
    gateway: GatewayServer, models, frame
) -> None:
    X, _ = frame
    register(gateway, models["lr"], X, reference=False)
    gateway.ws.endpoints.create("fraud", "models:/fraud/1", guard={"policy": "reject"})
    status = gateway.ws.endpoints.guard_status("fraud")
    (version,) = status.versions
    assert not version.active and "no reference profile" in version.reason
    url = gateway.start()
    for asgi in (False, True):
        r = post(url, rows_body(mixed_rows(X)), asgi=asgi)
        assert r.status_code == 200, r.text
        assert r.headers["x-modelyard-guard"] == "inactive"

    gateway.ws.monitoring.set_reference("models:/fraud/1", data=X)
    assert gateway.ws.endpoints.guard_status("fraud").versions[0].active
    deadline = time.monotonic() + 10
    while r.status_code == 200 and time.monotonic() < deadline:  # the gateway follows
        time.sleep(0.1)
        r = post(url, rows_body(mixed_rows(X)), asgi=False)
    assert r.status_code == 422 and r.json()["rows"] == [1, 3]


def test_guard_settings_through_sdk_and_api(client, models, frame) -> None:  # type: ignore[no-untyped-def]
    X, _ = frame
    client.log_model(models["lr"], "fraud", input_example=X.head(5))
    endpoint = client.endpoints.create("fraud", "models:/fraud/1")
    assert endpoint.guard.policy == "off"
    endpoint = client.endpoints.update("fraud", guard={"policy": "flag", "threshold": 0.3})
    assert (endpoint.guard.policy, endpoint.guard.threshold) == ("flag", 0.3)
    assert client.endpoints.get("fraud").guard == endpoint.guard
    status = client.endpoints.guard_status("fraud")
    assert status.policy == "flag" and not status.versions[0].active
    assert "modelyard monitor reference" in status.versions[0].reason
    for bad in ({"policy": "block"}, {"policy": "flag", "threshold": 0}):
        with pytest.raises(InvalidInput):
            client.endpoints.update("fraud", guard=bad)
    assert client.endpoints.get("fraud").guard.threshold == 0.3


def test_guard_commands(run) -> None:  # type: ignore[no-untyped-def]
    run("quickstart", "--rows", "400", "--name", "qs")
    run("endpoints", "create", "qs", "--model", "models:/qs@champion")
    out = run("endpoints", "guard", "qs", "--policy", "reject", "--threshold", "0.4").stdout
    assert "reject (threshold 0.4)" in out and "no reference profile" in out
    run("monitor", "reference", "models:/qs/1")  # from the training dataset in its lineage
    out = run("endpoints", "guard", "qs").stdout
    assert "models:/qs/1: active" in out
    out = run("endpoints", "guard", "qs", "--off", "--json").stdout
    assert '"policy": "off"' in out
    bad = run("endpoints", "guard", "qs", "--policy", "nope", ok=False)
    assert bad.returncode == 2 and "guard.policy" in bad.stderr


def test_scores_follow_the_reference_tails_and_categories() -> None:
    rng = np.random.default_rng(3)
    n = 20_000
    reference = {
        "x": rng.normal(size=n),
        "city": rng.choice(["paris", "oslo", "rome"], size=n),
        "output.p": rng.normal(size=n),  # outputs are not the caller's: not scored
    }
    guard = Guard.build("m", 1, datetime.now(UTC), Profile.build(reference))
    assert guard.names == ["x", "city"]

    own = guard.score({"x": reference["x"], "city": reference["city"]}, n)
    # a reference row scores 0 but in its tails: on average half the tails' share per feature
    assert own.scores.mean() == pytest.approx(TAIL / 2 / 2, rel=0.3)
    # only its own extremes are at the edge of what it saw
    extremes = {int(reference["x"].argmin()), int(reference["x"].argmax())}
    assert set(np.flatnonzero(own.scores >= 0.5).tolist()) == extremes

    lo, hi = reference["x"].min(), reference["x"].max()
    inner = np.quantile(reference["x"], 1 - TAIL / 2)
    x = np.array([0.0, hi + 1, lo - 1, np.nan, (inner + hi) / 2, 0.0])
    city = np.array(["oslo", "oslo", "rome", "paris", "rome", "lima"], dtype=object)
    verdict = guard.score({"x": x, "city": city}, 6)
    novelty_x = verdict.novelty[0]
    assert novelty_x[[0, 1, 2, 3]].tolist() == [0.0, 1.0, 1.0, 1.0]  # NaN: never missing
    assert 0.0 < novelty_x[4] < 1.0  # in the upper tail, between its inner edge and the max
    assert verdict.novelty[1].tolist() == [0, 0, 0, 0, 0, 1]
    assert verdict.scores.tolist() == pytest.approx([0, 0.5, 0.5, 0.5, novelty_x[4] / 2, 0.5])
    assert [f["reason"] for f in verdict.explain(5)] == ["unseen_category"]
    assert verdict.explain(2)[0] == {
        "feature": "x",
        "novelty": 1.0,
        "reason": "out_of_range",
        "side": "below",
        "value": lo - 1,
    }


def test_segments_without_guard_scores_still_read(workspace: Workspace) -> None:
    plog = PredictionLog(workspace, flush_seconds=3600)
    for i, guard in enumerate((None, np.array([0.25, 1.0], dtype=np.float32))):
        plog.log(
            endpoint="fraud",
            model="fraud",
            version=1,
            request_id=f"r{i}",
            inputs={"f0": np.array([1.0, 2.0])},
            outputs={"predictions": np.array([0, 1])},
            rows=2,
            latency_ms=1.0,
            guard=guard,
        )
        plog.flush()  # one segment each: the first has no guard_score column
    segments = plog.segments("fraud")
    assert len(segments) == 2
    table = plog.read("fraud")
    assert table[GUARD_SCORE].to_pylist() == [None, None, 0.25, 1.0]
    plog.close()
