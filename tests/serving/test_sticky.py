"""Sticky routing: a header or an input field hashes a request's user to one route, stably."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from tests.serving.conftest import GatewayServer

from modelyard.client import Client
from modelyard.serving.served import Served, sticky_point, sticky_value
from modelyard.serving.validation import Columns


def register(gw: GatewayServer, model: object, X: pd.DataFrame, name: str = "fraud") -> int:
    c = Client(str(gw.ws.settings.resolved_home), settings=gw.ws.settings)
    v = c.log_model(model, name, input_example=X.head(5))
    c.close()
    return v.version


def split_body(X: pd.DataFrame) -> dict[str, Any]:
    return {"dataframe_split": {"columns": list(X.columns), "data": X.to_numpy().tolist()}}


def v2_body(X: pd.DataFrame) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": c, "shape": [len(X)], "datatype": "FP64", "data": X[c].tolist()}
            for c in X.columns
        ]
    }


def expected_route(key: bytes, weights: list[float]) -> int:
    """The route index a key must land on, computed here from the documented rule."""
    u = int.from_bytes(hashlib.blake2b(key).digest()[:8], "big") / 2**64
    return int(np.searchsorted(np.cumsum(weights), u * sum(weights), side="right"))


def served_with(weights: list[float]) -> Served:
    """A snapshot whose "models" are their route indexes (pick only reads the weights)."""
    models: Any = tuple(range(len(weights)))
    return Served(None, models, tuple(np.cumsum(weights).tolist()))  # type: ignore[arg-type]


# --- the hash and the key --------------------------------------------------------------------


def test_sticky_point_is_the_documented_stable_hash() -> None:
    # a fixed value: any change of the rule (or a salted hash) moves users between versions
    assert sticky_point(b"user-1") == pytest.approx(
        int.from_bytes(hashlib.blake2b(b"user-1").digest()[:8], "big") / 2**64, abs=2**-52
    )
    assert sticky_point(b"user-1") == sticky_point(b"user-1")
    points = [sticky_point(f"user-{i}".encode()) for i in range(20_000)]
    assert all(0 <= p < 1 for p in points)
    # uniform enough that weights are shares: a 5 % route gets about 5 % of users
    assert 0.045 < np.mean(np.array(points) >= 0.95) < 0.055
    assert sticky_point(b"\xff" * 8) < 1  # the top of the range never reaches 1


def test_sticky_value_reads_the_first_row_and_normalises_numbers() -> None:
    columns = Columns(("user", "amount"), np.array([[42.0, 7.0], [1.5, 2.5]]))
    assert sticky_value(columns, "user") == b"42"  # a whole float is the integer's user
    assert sticky_value(columns, "amount") == b"1.5"
    assert sticky_value(columns, "missing") is None
    assert sticky_value({"user": np.array(["ann", "bob"], dtype=object)}, "user") == b"ann"
    assert sticky_value({"user": np.array([42, 7])}, "user") == b"42"
    assert sticky_value({"user": np.array([[42], [7]])}, "user") == b"42"  # (n, 1) tensor
    assert sticky_value({"user": np.array([[1, 2]])}, "user") is None  # not a scalar
    assert sticky_value({"user": np.array([""], dtype=object)}, "user") is None
    assert sticky_value({"flag": np.array([True])}, "flag") == b"true"


def test_a_key_on_the_canary_stays_there_while_its_share_grows() -> None:
    keys = [f"user-{i}".encode() for i in range(5_000)]
    before: set[bytes] = set()
    for canary in (1, 5, 25, 50, 75, 99):
        served = served_with([100 - canary, canary])
        on_canary = {k for k in keys if served.pick(k) == 1}
        assert before <= on_canary, f"keys left the canary when it grew to {canary} %"
        assert abs(len(on_canary) / len(keys) - canary / 100) < 0.03
        assert all(served.pick(k) == expected_route(k, [100 - canary, canary]) for k in keys[:500])
        before = on_canary
    # and back down (a rollback step): keys only leave the canary, none joins it
    shrunk = {k for k in keys if served_with([90, 10]).pick(k) == 1}
    assert shrunk <= before


def test_without_a_key_the_pick_is_random_and_one_route_is_free() -> None:
    served = served_with([50, 50])
    random.seed(3)
    assert {served.pick() for _ in range(100)} == {0, 1}
    single = served_with([1])
    assert single.pick(b"anyone") == 0 and single.pick() == 0


# --- through a real gateway ------------------------------------------------------------------


def test_sticky_header_keeps_each_user_on_one_version_across_gateways(
    gateway: GatewayServer, models: dict[str, object], frame: tuple[pd.DataFrame, pd.Series]
) -> None:
    X, _ = frame
    register(gateway, models["lr"], X)
    register(gateway, models["lr2"], X)
    weights = [50.0, 50.0]
    gateway.ws.endpoints.create(
        "fraud",
        "models:/fraud/1",
        policy={
            "routes": [
                {"target": "models:/fraud/1", "weight": weights[0]},
                {"target": "models:/fraud/2", "weight": weights[1]},
            ],
            "sticky": {"header": "X-User-Id"},
        },
    )
    url = gateway.start()
    second = GatewayServer(gateway.ws)
    try:
        url2 = second.start()
        body = split_body(X.head(1))
        users = [f"u{i}" for i in range(40)]
        seen: dict[str, set[str]] = {u: set() for u in users}
        with httpx.Client() as c:
            for round_ in range(5):
                for i, user in enumerate(users):
                    name = ("X-User-Id", "x-user-id", "X-USER-ID")[(i + round_) % 3]
                    base = url if round_ % 2 == 0 else url2
                    r = c.post(
                        f"{base}/endpoints/fraud/invocations", json=body, headers={name: user}
                    )
                    assert r.status_code == 200, r.text
                    seen[user].add(r.headers["x-modelyard-version"])
                # through ASGI too (a chunked body is not the fast path's): the same answer
                user = users[round_]
                r = c.post(
                    f"{url}/endpoints/fraud/invocations",
                    content=iter([httpx.Request("POST", "/", json=body).content]),
                    headers={"content-type": "application/json", "x-user-id": user},
                )
                assert r.status_code == 200, r.text
                seen[user].add(r.headers["x-modelyard-version"])
            for user in users:
                assert len(seen[user]) == 1, f"{user} saw {seen[user]}"
                (version,) = seen[user]
                expected = expected_route(user.encode(), weights) + 1
                assert version == f"fraud/{expected}"
            assert {v for s in seen.values() for v in s} == {"fraud/1", "fraud/2"}
            # a request without the key still answers (at random)
            missing = set()
            for _ in range(30):
                r = c.post(f"{url}/endpoints/fraud/invocations", json=body)
                assert r.status_code == 200, r.text
                missing.add(r.headers["x-modelyard-version"])
            assert missing == {"fraud/1", "fraud/2"}
            r = c.post(f"{url}/endpoints/fraud/invocations", json=body, headers={"x-user-id": ""})
            assert r.status_code == 200
    finally:
        second.stop()


def test_sticky_field_routes_by_the_first_rows_value_in_both_protocols(
    gateway: GatewayServer, models: dict[str, object], frame: tuple[pd.DataFrame, pd.Series]
) -> None:
    X, _ = frame
    register(gateway, models["lr"], X)
    # the canary's signature differs (f5 is an integer), so a request chosen for it is
    # parsed again, with its own signature
    register(gateway, models["lr2"], X.assign(f5=X.f5.round().astype("int64")))
    weights = [30.0, 70.0]
    gateway.ws.endpoints.create(
        "fraud",
        "models:/fraud/1",
        policy={
            "routes": [
                {"target": "models:/fraud/1", "weight": weights[0]},
                {"target": "models:/fraud/2", "weight": weights[1]},
            ],
            "sticky": {"field": "f0"},
        },
    )
    url = gateway.start()
    versions = set()
    with httpx.Client(base_url=url) as c:
        for user in range(1000, 1030):
            rows = X.sample(3, random_state=user).assign(f5=lambda d: d.f5.round())
            rows.iloc[0, 0] = float(user)  # the user id rides in f0 of the first row
            expected = f"fraud/{expected_route(str(user).encode(), weights) + 1}"
            answers = [
                c.post("/endpoints/fraud/invocations", json=split_body(rows)),
                c.post("/v2/models/fraud/infer", json=v2_body(rows)),
                c.post(  # chunked: the ASGI path, which reads the body before the pick
                    "/endpoints/fraud/invocations",
                    content=iter([httpx.Request("POST", "/", json=split_body(rows)).content]),
                    headers={"content-type": "application/json"},
                ),
            ]
            for r in answers:
                assert r.status_code == 200, r.text
                assert r.headers["x-modelyard-version"] == expected
            chosen: Any = models["lr2"] if expected == "fraud/2" else models["lr"]
            assert answers[0].json()["predictions"] == chosen.predict(rows).tolist()
            versions.add(expected)
        assert versions == {"fraud/1", "fraud/2"}
        # each version judges the input by its own signature: f5 = 0.5 suits the baseline,
        # not the canary
        for user in (1000, 1001, 1002, 1003):
            rows = X.head(1).assign(f0=float(user), f5=0.5)
            r = c.post("/endpoints/fraud/invocations", json=split_body(rows))
            if expected_route(str(user).encode(), weights) == 1:
                assert r.status_code == 422 and "f5" in r.json()["detail"], r.text
            else:
                assert r.status_code == 200, r.text
        # input that fits no signature is still a 422 that names what to fix
        bad = c.post(
            "/endpoints/fraud/invocations", json=split_body(X.head(1).drop(columns=["f3"]))
        )
        assert bad.status_code == 422 and "f3" in bad.json()["detail"]
