"""Prediction limits in a running gateway: 429 on the fast path and through ASGI, per token and
per endpoint, daily quotas counted in rows, shared by workers, kept across a restart."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.compute as pc
import pytest
from tests.serve_process import ServeProcess
from tests.serving.conftest import FEATURES, GatewayServer

from modelyard.client import Client
from modelyard.config import Settings
from modelyard.monitoring import PredictionLog
from modelyard.workspace import Workspace

FLUSH = 0.2  # MODELYARD_LIMITS_FLUSH_SECONDS of these gateways


def _rows(n: int) -> dict:
    data = [[0.1 * i + j for j in range(len(FEATURES))] for i in range(n)]
    return {"dataframe_split": {"columns": FEATURES, "data": data}}


def _deploy(settings: Settings, models: dict, frame: tuple) -> None:
    X, _ = frame
    c = Client(str(settings.resolved_home), settings=settings)
    c.log_model(models["lr"], "fraud", input_example=X.head(5))
    c.close()
    ws = Workspace.open(settings)
    ws.endpoints.create("fraud", "models:/fraud/1")
    ws.endpoints.create("churn", "models:/fraud/1")
    ws.close()


class Limited:
    """A live gateway (fast path on) over a workspace with two endpoints."""

    def __init__(self, tmp_path: Path, models: dict, frame: tuple, *, auth: bool) -> None:
        settings = Settings(home=tmp_path / "home", auth=auth, limits_flush_seconds=FLUSH)
        _deploy(settings, models, frame)
        self.ws = Workspace.open(settings)
        self.server = GatewayServer(self.ws)
        self.url = self.server.start()

    def post(self, path: str, rows: int = 1, **kwargs: object) -> httpx.Response:
        return httpx.post(self.url + path, json=_rows(rows), **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        self.server.stop()
        self.ws.close()


@pytest.fixture
def limited(tmp_path: Path, models, frame) -> Iterator[Limited]:  # type: ignore[no-untyped-def]
    g = Limited(tmp_path, models, frame, auth=False)
    yield g
    g.close()


def _refused(r: httpx.Response, kind: str, limit_id: str) -> dict:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["kind"] == kind and problem["limit"] == limit_id, problem
    assert limit_id in problem["detail"] and "modelyard limits set" in problem["detail"]
    assert int(r.headers["retry-after"]) == problem["retry_after"] >= 1
    assert r.headers["ratelimit-remaining"] == "0"
    assert int(r.headers["ratelimit-reset"]) == problem["retry_after"]
    return problem


def test_over_a_rate_limit_both_paths_answer_429_with_retry_after(limited: Limited) -> None:
    limit = limited.ws.limits.set(endpoint="fraud", rate="1/m", burst=2)
    time.sleep(3 * FLUSH)  # the gateway takes it at its next exchange
    assert limited.post("/endpoints/fraud/invocations").status_code == 200
    assert limited.post("/endpoints/fraud/invocations").status_code == 200
    for path in ("/endpoints/fraud/invocations", "/endpoints/fraud/invocations?through=asgi"):
        problem = _refused(limited.post(path), "rate", limit.id)
        assert 1 <= problem["retry_after"] <= 60  # 1/m: a token a minute
        assert limited.post(path).headers["ratelimit-limit"] == "2"
    # another endpoint is not limited; refusals are not the endpoint's traffic in the log
    assert limited.post("/endpoints/churn/invocations").status_code == 200
    log = limited.server.gateway.log
    log.flush()
    statuses = PredictionLog(limited.ws).read("fraud")["status"].to_pylist()
    assert 429 not in statuses and statuses.count(200) >= 1


def test_a_daily_quota_counts_rows_and_refuses_until_midnight_utc(limited: Limited) -> None:
    limit = limited.ws.limits.set(endpoint="fraud", daily=25)
    time.sleep(3 * FLUSH)
    path = "/endpoints/fraud/invocations"
    for _ in range(3):  # 10, 20, then 30: admitted at 20, answered whole
        assert limited.post(path, rows=10).status_code == 200
    problem = _refused(limited.post(path, rows=1), "daily", limit.id)
    left = 86_400 - time.time() % 86_400
    assert abs(problem["retry_after"] - left) <= 2 and "00:00 UTC" in problem["detail"]
    _refused(limited.post(path + "?x=1", rows=1), "daily", limit.id)  # through ASGI too
    time.sleep(3 * FLUSH)
    (used,) = limited.ws.limits.list()
    assert (used.rows_today, used.requests_today) == (30, 3)


def test_token_limits_with_auth_on(tmp_path: Path, models, frame) -> None:  # type: ignore[no-untyped-def]
    g = Limited(tmp_path, models, frame, auth=True)
    try:
        ids = g.ws.identities
        ids.create_user("app")
        app = ids.create_token("app")
        other = ids.create_token("app")
        on_churn = g.ws.limits.set(token=app.id, endpoint="churn", rate="1/h", burst=1)
        everywhere = g.ws.limits.set(token=app.id, daily=5)
        time.sleep(3 * FLUSH)
        mine = {"authorization": f"Bearer {app.secret}"}
        theirs = {"authorization": f"Bearer {other.secret}"}
        assert g.post("/endpoints/churn/invocations", headers=mine).status_code == 200
        problem = _refused(
            g.post("/endpoints/churn/invocations", headers=mine), "rate", on_churn.id
        )
        assert f"token {app.id} (of app) on endpoint 'churn'" in problem["detail"]
        assert g.post("/endpoints/churn/invocations", headers=theirs).status_code == 200
        assert g.post("/endpoints/fraud/invocations", rows=4, headers=mine).status_code == 200
        _refused(g.post("/endpoints/fraud/invocations", headers=mine), "daily", everywhere.id)
        assert g.post("/endpoints/fraud/invocations", headers=theirs).status_code == 200
        # the prediction log says who asked (the token's id)
        g.server.gateway.log.flush()
        table = PredictionLog(g.ws).read("fraud")
        answered = table.filter(pc.equal(table["status"], 200))
        assert sorted(set(answered["caller"].to_pylist())) == sorted([app.id, other.id])
    finally:
        g.close()


# --- real `modelyard serve` processes -----------------------------------------------------


class Served(ServeProcess):
    """`modelyard serve` on a workspace (SQLite or PostgreSQL), started and stopped at will."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            settings.resolved_home,
            database_url=settings.database_url,
            env={"MODELYARD_LIMITS_FLUSH_SECONDS": str(FLUSH)},
        )
        self.settings = settings

    def stop(self, timeout: float = 60) -> int | None:
        status = super().stop(timeout)
        # uvicorn re-raises SIGTERM once its graceful shutdown is done
        assert status in (0, -signal.SIGTERM), status
        return status


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def served(request: pytest.FixtureRequest, tmp_path: Path, models, frame) -> Iterator[Served]:  # type: ignore[no-untyped-def]
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    settings = Settings(home=tmp_path / "home", database_url=url)
    _deploy(settings, models, frame)
    server = Served(settings)
    yield server
    server.kill()


@pytest.mark.slow
def test_a_restart_does_not_reset_a_daily_quota(served: Served) -> None:
    ws = Workspace.open(served.settings)
    try:
        limit = ws.limits.set(endpoint="fraud", daily=25)
        path = f"{served.url}/endpoints/fraud/invocations"
        served.start()
        for _ in range(2):
            assert httpx.post(path, json=_rows(10)).status_code == 200
        served.stop()  # SIGTERM: the worker adds what it counted before it exits
        assert ws.limits.get(limit.id).rows_today == 20
        served.start()
        # at once, before any flush: the restarted gateway loaded today's 20 rows
        assert httpx.post(path, json=_rows(10)).status_code == 200
        _refused(httpx.post(path, json=_rows(1)), "daily", limit.id)
        served.stop()
        assert (ws.limits.get(limit.id).rows_today, ws.limits.get(limit.id).requests_today) == (
            30,
            3,
        )
    finally:
        ws.close()


@pytest.mark.slow
def test_workers_share_a_daily_quota_within_a_flush_interval(served: Served) -> None:
    ws = Workspace.open(served.settings)
    try:
        quota = 120
        limit = ws.limits.set(endpoint="fraud", daily=quota)
        served.start(workers=2)
        path = f"{served.url}/endpoints/fraud/invocations"
        answered: dict[str, int] = {}
        started = deadline = time.monotonic()
        deadline += 60
        while time.monotonic() < deadline:
            r = httpx.post(path, json=_rows(1))  # a new connection each: both workers serve
            if r.status_code == 429:
                break
            assert r.status_code == 200, r.text
            worker = r.headers["x-modelyard-worker"]
            answered[worker] = answered.get(worker, 0) + 1
        per_second = sum(answered.values()) / (time.monotonic() - started)
        time.sleep(3 * FLUSH)  # every worker has read the others' counts by now
        refusing = set()
        for _ in range(40):
            r = httpx.post(path, json=_rows(1))
            _refused(r, "daily", limit.id)
            refusing.add(r.headers["x-modelyard-worker"])
        assert len(answered) == 2 and refusing == set(answered), (answered, refusing)
        # each worker alone counted fewer rows than the quota, yet both refuse: they count
        # the other's. Past the quota: at most what was answered in one flush interval.
        assert all(n < quota for n in answered.values()), answered
        assert quota <= sum(answered.values()) <= quota + per_second * FLUSH + 1
        served.stop()
        assert ws.limits.get(limit.id).rows_today == sum(answered.values())
    finally:
        ws.close()
