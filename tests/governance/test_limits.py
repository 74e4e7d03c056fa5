"""Prediction limits: their definitions (service, API, CLI, SDK) and a worker's book of
token buckets and daily counts, shared between workers through the store."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sqlalchemy import select
from tests.conftest import LiveServer

from modelyard.client import Client
from modelyard.config import Settings
from modelyard.errors import InvalidInput, NotFound
from modelyard.governance.entities import Identity
from modelyard.governance.limits import LimitBook, LimitExceeded, parse_rate, utc_day
from modelyard.store.tables import QuotaUsageRow
from modelyard.workspace import Workspace

COLUMNS = ["a", "b", "c"]


def _deploy(ws: Workspace, *endpoints: str) -> None:
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 3)), columns=COLUMNS)
    client = Client(settings=ws.settings)
    client.log_model(LogisticRegression().fit(X, X.a > 0), "fraud", input_example=X.head(3))
    client.close()
    for name in endpoints:
        ws.endpoints.create(name, "models:/fraud/1")


@pytest.fixture
def deployed(any_workspace: Workspace) -> Workspace:
    _deploy(any_workspace, "fraud", "churn")
    return any_workspace


def _caller(ws: Workspace, user: str) -> tuple[str, Identity]:
    """A token of ``user`` and the identity a gateway sees for it."""
    if user not in {u.name for u in ws.identities.list_users()}:
        ws.identities.create_user(user)
    issued = ws.identities.create_token(user)
    return issued.id, ws.identities.authenticate(issued.secret)


def test_parse_rate() -> None:
    assert parse_rate("50/s") == 50
    assert parse_rate(" 300 / m ") == 5
    assert parse_rate("90/hour") == pytest.approx(0.025)
    assert parse_rate("2.5") == 2.5
    assert parse_rate(7) == 7.0
    for bad in ["", "fast", "50/day", "-1/s", "0", "1e9", "nan", True, 0, float("inf")]:
        with pytest.raises(InvalidInput):
            parse_rate(bad)  # type: ignore[arg-type]


def test_set_list_replace_delete_and_audit(deployed: Workspace) -> None:
    limits = deployed.limits
    token, _ = _caller(deployed, "app")
    endpoint = limits.set(endpoint="fraud", rate="50/s", burst=100, daily=100_000)
    assert (endpoint.scope, endpoint.rate, endpoint.burst, endpoint.daily) == (
        "endpoint:fraud",
        50.0,
        100,
        100_000,
    )
    mine = limits.set(token=token, rate="5/s", daily=1000)
    assert mine.scope == f"token:{token}" and mine.burst == 5  # default: one second's worth
    pair = limits.set(token=token, endpoint="churn", daily=10)
    assert pair.scope == f"token:{token}/endpoint:churn" and pair.rate is None
    assert pair.day == utc_day() and pair.rows_today == 0
    assert [x.scope for x in limits.list()] == sorted([endpoint.scope, mine.scope, pair.scope])
    assert [x.id for x in limits.list(endpoint="churn")] == [pair.id]
    assert {x.id for x in limits.list(token=token)} == {mine.id, pair.id}

    # Setting a scope again replaces its limit whole (same id, history in the audit log).
    replaced = limits.set(endpoint="fraud", daily=5)
    assert replaced.id == endpoint.id and (replaced.rate, replaced.burst) == (None, None)
    assert limits.get(endpoint.id).daily == 5
    record = deployed.audit.list(action="limit.set", entity_id="endpoint:fraud").items[0]
    assert record.before == {"rate": 50.0, "burst": 100, "daily": 100_000}
    assert record.after is not None and record.after["daily"] == 5

    limits.delete(pair.id)
    assert pair.id not in {x.id for x in limits.list()}
    with pytest.raises(NotFound, match="limits list"):
        limits.delete(pair.id)
    with pytest.raises(NotFound, match="limits list"):
        limits.get("01NOPE")
    assert deployed.audit.list(action="limit.delete").items[0].entity_id == pair.scope


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"rate": "5/s"}, "needs a scope"),
        ({"endpoint": "fraud"}, "needs a rate"),
        ({"endpoint": "fraud", "rate": "lots"}, "is not a number"),
        ({"endpoint": "fraud", "daily": 10, "burst": 5}, "--burst goes with --rate"),
        ({"endpoint": "fraud", "rate": 5, "burst": 0}, "burst must be"),
        ({"endpoint": "fraud", "daily": 0}, "daily must be"),
        ({"endpoint": "fraud", "daily": True}, "daily must be"),
        ({"endpoint": "bad name!", "daily": 1}, "not valid"),
        ({"token": "not-an-id", "daily": 1}, "not a token id"),
    ],
)
def test_what_is_refused_says_what_to_fix(deployed: Workspace, kwargs: dict, needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        deployed.limits.set(**kwargs)


def test_unknown_endpoint_or_token_is_not_found(deployed: Workspace) -> None:
    with pytest.raises(NotFound, match="endpoints list"):
        deployed.limits.set(endpoint="nope", daily=1)
    with pytest.raises(NotFound, match="tokens list"):
        deployed.limits.set(token="01JZZZZZZZZZZZZZZZZZZZZZZZ", daily=1)
    assert deployed.limits.list() == []


# --- a worker's book -----------------------------------------------------------------------


async def _loaded(ws: Workspace) -> LimitBook:
    book = LimitBook()
    await book.load(ws.limits)
    return book


def test_a_token_bucket_lets_a_burst_through_then_the_rate(deployed: Workspace) -> None:
    deployed.limits.set(endpoint="fraud", rate=20, burst=3)

    async def run() -> None:
        book = await _loaded(deployed)
        for _ in range(3):
            book.admit("fraud", None).charge(1)
        with pytest.raises(LimitExceeded) as refused:
            book.admit("fraud", None)
        exc = refused.value
        assert exc.status == 429 and exc.retry_after == 1
        assert "rate limit of 20/s" in exc.detail and "--rate N/s" in exc.detail
        assert exc.problem()["kind"] == "rate" and exc.problem()["scope"] == "endpoint:fraud"
        assert dict(exc.headers)[b"ratelimit-limit"] == b"3"
        book.admit("churn", None)  # another endpoint has no limit
        await asyncio.sleep(0.12)  # 20/s: two tokens back, not more
        book.admit("fraud", None)
        book.admit("fraud", None)
        with pytest.raises(LimitExceeded):
            book.admit("fraud", None)

    asyncio.run(run())


def test_every_applicable_limit_is_checked_and_a_refusal_costs_no_token(
    deployed: Workspace,
) -> None:
    app_token, app = _caller(deployed, "app")
    _, other = _caller(deployed, "other")
    deployed.limits.set(endpoint="fraud", rate=1000, burst=5)
    deployed.limits.set(token=app_token, rate=0.001, burst=2)
    deployed.limits.set(token=app_token, endpoint="churn", daily=3)

    async def run() -> None:
        book = await _loaded(deployed)
        book.admit("fraud", app)
        book.admit("churn", app).charge(3)  # the token's bucket: now empty
        with pytest.raises(LimitExceeded, match=f"token {app_token} \\(of app\\)"):
            book.admit("fraud", app)
        # the endpoint's bucket lost only the one token it let through
        for _ in range(4):
            book.admit("fraud", other)
        with pytest.raises(LimitExceeded, match="endpoint 'fraud'"):
            book.admit("fraud", other)
        # without auth a request counts under the endpoint's limits only
        with pytest.raises(LimitExceeded, match="endpoint 'fraud'"):
            book.admit("fraud", None)
        admitted = book.admit("churn", None)
        assert admitted.caller is None and admitted.rules == ()
        assert book.admit("churn", other).caller == other.token_id

    asyncio.run(run())


def test_a_daily_quota_counts_rows_and_refuses_until_midnight_utc(deployed: Workspace) -> None:
    deployed.limits.set(endpoint="fraud", daily=100)

    async def run() -> None:
        book = await _loaded(deployed)
        book.admit("fraud", None).charge(60)
        book.admit("fraud", None).charge(60)  # admitted below the quota: answered whole
        with pytest.raises(LimitExceeded) as refused:
            book.admit("fraud", None)
        exc = refused.value
        left = 86_400 - time.time() % 86_400
        assert abs(exc.retry_after - left) <= 2 and "00:00 UTC" in exc.detail
        assert exc.problem()["kind"] == "daily" and "--daily N" in exc.detail
        assert dict(exc.headers)[b"ratelimit-policy"] == b"100;w=86400"
        assert await book.sync(deployed.limits)

    asyncio.run(run())
    (limit,) = deployed.limits.list()
    assert (limit.rows_today, limit.requests_today) == (120, 2)


def test_workers_share_the_daily_count_and_a_restart_keeps_it(deployed: Workspace) -> None:
    deployed.limits.set(endpoint="fraud", daily=100)

    async def run() -> None:
        first, second = await _loaded(deployed), await _loaded(deployed)
        for _ in range(5):
            first.admit("fraud", None).charge(10)
            second.admit("fraud", None).charge(10)
        # Each worker alone has counted 50 rows: both still admit until they exchange.
        first.admit("fraud", None)
        second.admit("fraud", None)
        assert await first.sync(deployed.limits)
        assert await second.sync(deployed.limits)  # adds its 50, reads back 100
        with pytest.raises(LimitExceeded):
            second.admit("fraud", None)
        first.admit("fraud", None)  # not until its next exchange (one flush interval)
        assert await first.sync(deployed.limits)
        with pytest.raises(LimitExceeded):
            first.admit("fraud", None)
        # a new worker (a restart) starts from the store's count
        with pytest.raises(LimitExceeded):
            (await _loaded(deployed)).admit("fraud", None)

    asyncio.run(run())
    with deployed.store.read() as s:
        stored = s.execute(select(QuotaUsageRow.rows, QuotaUsageRow.requests)).all()
    assert [tuple(r) for r in stored] == [(100, 10)]


def test_counts_survive_a_failed_exchange_and_a_new_day_starts_from_zero(
    deployed: Workspace, tmp_path: Path
) -> None:
    deployed.limits.set(endpoint="fraud", daily=50)
    deployed.limits.set(endpoint="churn", daily=50)
    broken = Workspace(  # a store without the tables: every exchange fails
        Settings(home=tmp_path / "gone", database_url=f"sqlite:///{tmp_path}/empty.db"),
        deployed.artifacts,
    )

    async def run() -> None:
        book = await _loaded(deployed)
        book.admit("fraud", None).charge(30)
        assert not await book.sync(broken.limits)  # the store did not answer: kept
        book.admit("fraud", None).charge(30)
        with pytest.raises(LimitExceeded):
            book.admit("fraud", None)
        assert await book.sync(deployed.limits)
        assert book.counts()["endpoint:fraud"] == (60, 2)
        # Rows counted just before midnight UTC; the next request comes after it: they go
        # to yesterday's row, and today's count starts from zero.
        book.admit("churn", None).charge(50)
        book._day -= 1
        book._day_ends -= 86_400
        book.admit("churn", None).charge(5)
        book.admit("fraud", None)  # yesterday's quota is not today's
        assert await book.sync(deployed.limits)

    asyncio.run(run())
    broken.close()
    with deployed.store.read() as s:
        rows = {(r.scope, r.day): r.rows for r in s.scalars(select(QuotaUsageRow))}
    today = utc_day()
    assert rows == {
        ("endpoint:fraud", today): 60,
        ("endpoint:churn", today - timedelta(days=1)): 50,
        ("endpoint:churn", today): 5,
    }


def test_limits_set_while_running_reach_the_book_at_its_next_exchange(
    deployed: Workspace,
) -> None:
    async def run() -> None:
        book = await _loaded(deployed)
        assert not book.active
        book.admit("fraud", None)
        limit = deployed.limits.set(endpoint="fraud", daily=1)
        assert await book.sync(deployed.limits)
        book.admit("fraud", None).charge(1)
        with pytest.raises(LimitExceeded):
            book.admit("fraud", None)
        deployed.limits.delete(limit.id)
        assert await book.sync(deployed.limits)
        assert not book.active
        book.admit("fraud", None)

    asyncio.run(run())


# --- adapters ------------------------------------------------------------------------------


def test_sdk_in_process_and_over_http(client: Client, workspace: Workspace) -> None:
    _deploy(workspace, "fraud")
    made = client.limits.set(endpoint="fraud", rate="300/m", daily=10)
    assert (made.rate, made.burst, made.daily) == (5.0, 5, 10)
    assert [x.id for x in client.limits.list(endpoint="fraud")] == [made.id]
    assert client.limits.get(made.id).scope == "endpoint:fraud"
    with pytest.raises(InvalidInput, match="is not a number"):
        client.limits.set(endpoint="fraud", rate="soon")
    with pytest.raises(NotFound):
        client.limits.set(endpoint="nope", daily=1)
    client.limits.delete(made.id)
    assert client.limits.list() == []


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[str, Workspace, dict[str, str], dict[str, str]]]:
    ws = Workspace.open(Settings(home=tmp_path / "home", auth=True))
    _deploy(ws, "fraud")
    ws.identities.create_user("root", "admin")
    ws.identities.create_user("vic", "viewer")
    admin = {"authorization": "Bearer " + ws.identities.create_token("root").secret}
    viewer = {"authorization": "Bearer " + ws.identities.create_token("vic").secret}
    from modelyard.api.app import create_app

    server = LiveServer(create_app(workspace=ws))
    yield server.url + "/api/v1", ws, admin, viewer
    server.stop()
    ws.close()


def test_api_admins_change_limits_viewers_read_them(secured) -> None:  # type: ignore[no-untyped-def]
    url, ws, admin, viewer = secured
    body = {"endpoint": "fraud", "rate": "50/s", "burst": 100, "daily": 100000}
    refused = httpx.put(f"{url}/limits", json=body, headers=viewer)
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    made = httpx.put(f"{url}/limits", json=body, headers=admin)
    assert made.status_code == 200, made.text
    limit_id = made.json()["id"]
    listed = httpx.get(f"{url}/limits", headers=viewer)
    assert listed.status_code == 200 and [x["id"] for x in listed.json()] == [limit_id]
    assert httpx.get(f"{url}/limits/{limit_id}", headers=viewer).json()["daily"] == 100000
    for bad in [{"endpoint": "fraud", "rate": True}, {"endpoint": "fraud", "daily": -1}, {}]:
        answer = httpx.put(f"{url}/limits", json=bad, headers=admin)
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
    assert httpx.delete(f"{url}/limits/{limit_id}", headers=viewer).status_code == 403
    assert httpx.delete(f"{url}/limits/{limit_id}", headers=admin).status_code == 204
    assert httpx.get(f"{url}/limits/{limit_id}", headers=viewer).status_code == 404
    assert ws.audit.list(action="limit.delete").items[0].actor == "root"


def test_cli(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ws = Workspace.open(Settings(home=tmp_path / "home"))
    _deploy(ws, "fraud")
    token, _ = _caller(ws, "app")
    ws.close()
    made = run(
        "limits", "set", "--endpoint", "fraud", "--rate", "50/s", "--burst", "100",
        "--daily", "100000", "--json",
    )  # fmt: skip
    endpoint_limit = json.loads(made.stdout)
    assert endpoint_limit["scope"] == "endpoint:fraud" and endpoint_limit["burst"] == 100
    out = run("limits", "set", "--token", token, "--rate", "5/s", "--daily", "1000").stdout
    assert f"token:{token}" in out
    listed = json.loads(run("limits", "list", "--json").stdout)
    assert {x["scope"] for x in listed} == {"endpoint:fraud", f"token:{token}"}
    assert all(x["rows_today"] == 0 for x in listed)
    table = run("limits", "list").stdout
    assert "endpoint:fraud" in table and "100000" in table
    refused = run("limits", "set", "--endpoint", "fraud", ok=False)
    assert refused.returncode == 2 and "needs a rate" in refused.stderr
    missing = run("limits", "delete", "01NOPE", ok=False)
    assert missing.returncode == 3 and "limits list" in missing.stderr
    run("limits", "delete", endpoint_limit["id"])
    assert [x["scope"] for x in json.loads(run("limits", "list", "--json").stdout)] == [
        f"token:{token}"
    ]
