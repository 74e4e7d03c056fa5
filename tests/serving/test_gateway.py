"""The gateway over real HTTP: OIP v2 (with tritonclient), MLflow scoring, errors, policies."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select
from tests.serving.conftest import FEATURES, GatewayServer

from modelyard.client import Client


def register(
    gw: GatewayServer, model: object, name: str, X: pd.DataFrame, alias: str | None = None
) -> int:
    c = Client(str(gw.ws.settings.resolved_home), settings=gw.ws.settings)
    v = c.log_model(model, name, input_example=X.head(5), alias=alias)
    c.close()
    return v.version


def split_body(X: pd.DataFrame) -> dict:
    return {"dataframe_split": {"columns": list(X.columns), "data": X.to_numpy().tolist()}}


def test_mlflow_and_oip_answers_match_sklearn(gateway: GatewayServer, models, frame) -> None:
    X, _ = frame
    register(gateway, models["lr"], "fraud", X, alias="champion")
    gateway.ws.endpoints.create("fraud", "models:/fraud@champion")
    url = gateway.start()
    rows = X.head(7)
    expected = models["lr"].predict(rows)

    r = httpx.post(f"{url}/endpoints/fraud/invocations", json=split_body(rows))
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == expected.tolist()
    assert r.headers["x-modelyard-version"] == "fraud/1"
    assert r.headers["x-request-id"]

    # MLflow's bare /invocations serves the only endpoint
    r = httpx.post(f"{url}/invocations", json={"dataframe_records": rows.to_dict("records")})
    assert r.json()["predictions"] == expected.tolist()

    # OIP v2 with the real Triton client
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("fraud")
    meta = client.get_model_metadata("fraud")
    assert [i["name"] for i in meta["inputs"]] == FEATURES
    inputs = []
    for name in FEATURES:
        tensor = triton.InferInput(name, [len(rows)], "FP64")
        tensor.set_data_from_numpy(rows[name].to_numpy(), binary_data=False)
        inputs.append(tensor)
    result = client.infer(
        "fraud",
        inputs,
        request_id="req-42",
        outputs=[triton.InferRequestedOutput("predictions", binary_data=False)],
    )
    np.testing.assert_array_equal(result.as_numpy("predictions"), expected)
    response = result.get_response()
    assert response["model_version"] == "1" and response["id"] == "req-42"


def test_bad_requests_get_problem_json(gateway: GatewayServer, models, frame) -> None:
    X, _ = frame
    register(gateway, models["lr"], "fraud", X)
    gateway.ws.endpoints.create("fraud", "models:/fraud/1")
    url = gateway.start()
    ep = f"{url}/endpoints/fraud/invocations"

    def problem(r: httpx.Response, status: int, needle: str, endpoint: str = "fraud") -> None:
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert needle in body["detail"], body
        assert body["endpoint"] == endpoint

    problem(
        httpx.post(ep, content=b"{not json", headers={"content-type": "application/json"}),
        400,
        "JSON",
    )
    problem(
        httpx.post(ep, content=b"a,b\n1,2", headers={"content-type": "application/xml"}),
        400,
        "content type",
    )
    missing = X.head(1).drop(columns=["f3"])
    problem(httpx.post(ep, json=split_body(missing)), 422, "f3")
    bad = X.head(2).astype(object)
    bad.iloc[1, 0] = "abc"
    problem(httpx.post(ep, json=split_body(bad)), 422, "f0")
    nan = X.head(1).copy()
    nan.iloc[0, 2] = np.nan
    r = httpx.post(
        ep,
        content=b'{"dataframe_split": {"columns": '
        + str(FEATURES).replace("'", '"').encode()
        + b', "data": [[1, 2, NaN, 4, 5, 6]]}}',
        headers={"content-type": "application/json"},
    )
    assert 400 <= r.status_code < 500
    problem(
        httpx.post(f"{url}/endpoints/ghost/invocations", json=split_body(X.head(1))),
        404,
        "ghost",
        endpoint="ghost",
    )
    problem(
        httpx.post(f"{url}/v2/models/fraud/versions/9/infer", json={"inputs": []}), 404, "version 9"
    )
    big = b"x" * (50 * 1024 * 1024)  # 50 MB
    problem(httpx.post(ep, content=big, headers={"content-type": "application/json"}), 413, "limit")
    # ...and it still serves
    assert httpx.post(ep, json=split_body(X.head(1))).status_code == 200


def test_model_that_raises_gets_500_and_others_keep_working(
    gateway: GatewayServer, models, frame
) -> None:
    from modelyard.formats import PythonModel

    class Exploding(PythonModel):
        def predict(self, inputs):  # type: ignore[no-untyped-def]
            if float(np.asarray(inputs["f0"])[0]) > 100:
                raise ValueError("cannot score amounts above 100")
            return np.zeros(len(inputs["f0"]))

    X, _ = frame
    c = Client(str(gateway.ws.settings.resolved_home), settings=gateway.ws.settings)
    c.log_model(Exploding(), "boom", input_example=X.head(3))
    register(gateway, models["lr"], "fraud", X)
    gateway.ws.endpoints.create("fraud", "models:/fraud/1")
    gateway.ws.endpoints.create("boom", "models:/boom/1")
    url = gateway.start()
    # pyfunc needs trust: the endpoint reports why it is not ready
    r = httpx.post(f"{url}/endpoints/boom/invocations", json=split_body(X.head(1)))
    assert r.status_code == 503 and "trusted" in r.json()["detail"]
    assert (
        httpx.post(f"{url}/endpoints/fraud/invocations", json=split_body(X.head(1))).status_code
        == 200
    )
    # the gateway stays ready (a load balancer keeps it); boom alone is not
    ready = httpx.get(f"{url}/v2/health/ready")
    assert ready.status_code == 200 and "boom" in ready.json()["not_ready"]
    assert httpx.get(f"{url}/v2/models/boom/ready").status_code == 503
    assert httpx.get(f"{url}/v2/models/fraud/ready").status_code == 200


def _load(url: str, path: str, body: dict, stop: threading.Event, results: list) -> None:
    with httpx.Client(base_url=url, timeout=30) as c:
        deadline = time.monotonic() + 300  # bounded even if the test body fails
        while not stop.is_set() and time.monotonic() < deadline:
            r = c.post(path, json=body)
            results.append((r.status_code, r.headers.get("x-modelyard-version"), r.text))


def test_alias_moves_under_load_fail_no_request(gateway: GatewayServer, models, frame) -> None:
    """Move champion 20 times while 4 clients send requests: none fails, each names its version."""
    X, _ = frame
    register(gateway, models["lr"], "fraud", X, alias="champion")
    register(gateway, models["lr2"], "fraud", X)
    gateway.ws.endpoints.create("fraud", "models:/fraud@champion")
    url = gateway.start()
    body = split_body(X.head(1))
    results: list = []
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=_load, args=(url, "/endpoints/fraud/invocations", body, stop, results)
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    try:
        seen_versions = set()
        for i in range(20):
            target = 2 if i % 2 == 0 else 1
            gateway.ws.registry.set_alias("fraud", "champion", target)
            deadline = time.monotonic() + 30
            while True:  # wait until the gateway answers with the new version
                r = httpx.post(f"{url}/endpoints/fraud/invocations", json=body)
                assert r.status_code == 200, r.text
                if r.headers["x-modelyard-version"] == f"fraud/{target}":
                    seen_versions.add(target)
                    break
                assert time.monotonic() < deadline, "the gateway did not follow the alias"
                time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert seen_versions == {1, 2}
    assert len(results) > 20
    failed = [r for r in results if r[0] != 200]
    assert failed == []
    assert {r[1] for r in results} <= {"fraud/1", "fraud/2"}


def test_weighted_split_and_shadow(gateway: GatewayServer, models, frame) -> None:
    X, _ = frame
    register(gateway, models["lr"], "fraud", X)
    register(gateway, models["lr2"], "fraud", X)
    register(gateway, models["rf"], "fraud", X)
    gateway.ws.endpoints.create(
        "fraud",
        "models:/fraud/1",
        policy={
            "routes": [
                {"target": "models:/fraud/1", "weight": 3},
                {"target": "models:/fraud/2", "weight": 1},
            ],
            "shadow": "models:/fraud/3",
        },
    )
    url = gateway.start()
    answered = []
    with httpx.Client(base_url=url) as c:
        for _ in range(200):
            r = c.post("/endpoints/fraud/invocations", json=split_body(X.head(1)))
            assert r.status_code == 200
            answered.append(r.headers["x-modelyard-version"])
    share = answered.count("fraud/1") / len(answered)
    assert 0.6 < share < 0.9  # 3:1 split; 200 draws
    assert "fraud/3" not in answered  # shadow answers are never returned
    gateway.gateway.log.flush()
    table = gateway.gateway.log.read("fraud")
    shadow_rows = table.filter(table["shadow"]).num_rows
    assert shadow_rows > 0 and set(table.filter(table["shadow"])["version"].to_pylist()) == {3}


def test_cache_hits_are_counted(gateway: GatewayServer, models, frame) -> None:
    X, _ = frame
    register(gateway, models["lr"], "fraud", X)
    gateway.ws.endpoints.create(
        "fraud", "models:/fraud/1", cache={"enabled": True, "max_entries": 100, "ttl_seconds": 60}
    )
    url = gateway.start()
    body = split_body(X.head(1))
    first = httpx.post(f"{url}/endpoints/fraud/invocations", json=body)
    second = httpx.post(f"{url}/endpoints/fraud/invocations", json=body)
    assert (
        first.headers["x-modelyard-cache"] == "miss"
        and second.headers["x-modelyard-cache"] == "hit"
    )
    assert first.content == second.content
    metrics = httpx.get(f"{url}/metrics").text
    assert 'modelyard_cache_lookups_total{endpoint="fraud",result="hit"} 1.0' in metrics


def test_metrics_prediction_log_and_onnx_runtime(gateway: GatewayServer, models, frame) -> None:
    X, _ = frame
    register(gateway, models["rf"], "forest", X)
    gateway.ws.endpoints.create("forest", "models:/forest/1")
    url = gateway.start()
    rows = X.head(5)
    r = httpx.post(f"{url}/endpoints/forest/invocations", json=split_body(rows))
    assert r.json()["predictions"] == models["rf"].predict(rows).tolist()
    recorded = gateway.ws.registry.get_runtime("forest", 1, "onnx")
    assert recorded is not None and recorded.status == "identical"
    metrics = httpx.get(f"{url}/metrics").text
    assert 'modelyard_model_loaded{model="forest",runtime="onnx",version="1"} 1.0' in metrics
    assert (
        'modelyard_requests_total{code="200",endpoint="forest",protocol="mlflow",version="1"}'
        in metrics
    )
    assert "modelyard_request_latency_seconds_bucket" in metrics
    assert "modelyard_batch_size_bucket" in metrics
    gateway.gateway.log.flush()
    table = gateway.gateway.log.read("forest")
    assert table.num_rows == 5
    assert table["request_id"][0].as_py() == r.headers["x-request-id"]


def test_failed_requests_reach_the_prediction_log_with_their_status(
    gateway: GatewayServer, models, frame
) -> None:
    X, _ = frame
    register(gateway, models["lr"], "fraud", X)
    gateway.ws.endpoints.create("fraud", "models:/fraud/1")
    url = gateway.start()
    good = httpx.post(f"{url}/endpoints/fraud/invocations", json=split_body(X.head(1)))
    assert good.status_code == 200
    bad = httpx.post(
        f"{url}/endpoints/fraud/invocations",
        json=split_body(X.head(1).drop(columns=["f3"])),
        headers={"x-request-id": "bad-1"},
    )
    assert bad.status_code == 422
    wrong_version = httpx.post(f"{url}/v2/models/fraud/versions/9/infer", json={"inputs": []})
    assert wrong_version.status_code == 404
    # an unknown endpoint has no log to go to
    assert httpx.post(f"{url}/endpoints/ghost/invocations", json={}).status_code == 404
    gateway.gateway.log.flush()
    table = gateway.gateway.log.read("fraud").sort_by("at")
    assert table["status"].to_pylist() == [200, 422, 404]
    assert table["request_id"].to_pylist() == [
        good.headers["x-request-id"],
        "bad-1",
        wrong_version.headers["x-request-id"],
    ]
    assert table["version"].to_pylist() == [1, 1, 0]  # no version was chosen for the 404
    assert table["model"].to_pylist() == ["fraud"] * 3
    assert all(ms > 0 for ms in table["latency_ms"].to_pylist())
    assert gateway.gateway.log.read("ghost").num_rows == 0


def test_native_runtime_opt_out(gateway: GatewayServer, models, frame) -> None:
    X, _ = frame
    register(gateway, models["lr"], "fraud", X)
    gateway.ws.endpoints.create("fraud", "models:/fraud/1", runtime="native")
    url = gateway.start()
    assert (
        httpx.post(f"{url}/endpoints/fraud/invocations", json=split_body(X.head(1))).status_code
        == 200
    )
    assert gateway.ws.registry.get_runtime("fraud", 1, "onnx") is None
    assert 'runtime="native"' in httpx.get(f"{url}/metrics").text


def test_predict_that_raises_is_a_500_naming_the_model(tmp_path, models, frame) -> None:  # type: ignore[no-untyped-def]
    from modelyard.config import Settings
    from modelyard.formats import PythonModel
    from modelyard.workspace import Workspace

    class Exploding(PythonModel):
        def predict(self, inputs):  # type: ignore[no-untyped-def]
            if float(np.asarray(inputs["f0"])[0]) > 100:
                raise ValueError("cannot score amounts above 100")
            return np.zeros(len(inputs["f0"]))

    X, _ = frame
    ws = Workspace.open(Settings(home=tmp_path / "trusting", trust_pickled_models=True))
    gw = GatewayServer(ws)
    try:
        c = Client(str(ws.settings.resolved_home), settings=ws.settings)
        c.log_model(Exploding(), "boom", input_example=X.head(3))
        ws.endpoints.create("boom", "models:/boom/1")
        url = gw.start()
        ok_row = X.head(1)
        bad_row = ok_row.copy()
        bad_row.iloc[0, 0] = 1000.0
        r = httpx.post(f"{url}/endpoints/boom/invocations", json=split_body(bad_row))
        assert r.status_code == 500
        body = r.json()
        assert body["model"] == "boom" and body["version"] == 1
        assert "cannot score amounts above 100" in body["detail"]
        assert "Traceback" not in r.text
        good = httpx.post(f"{url}/endpoints/boom/invocations", json=split_body(ok_row))
        assert good.status_code == 200 and good.json()["predictions"] == [0.0]
        gw.gateway.log.flush()
        assert gw.gateway.log.read("boom").sort_by("at")["status"].to_pylist() == [500, 200]
    finally:
        gw.stop()
        ws.close()


def test_tritonclient_binary_tensors_and_errors(gateway: GatewayServer, models, frame) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    X, _ = frame
    register(gateway, models["rf"], "forest", X)
    gateway.ws.endpoints.create("forest", "models:/forest/1")
    url = gateway.start()
    rows = X.head(4)
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    inputs = []
    for name in FEATURES:
        tensor = triton.InferInput(name, [len(rows)], "FP64")
        tensor.set_data_from_numpy(rows[name].to_numpy())  # binary_data=True, the default
        inputs.append(tensor)
    result = client.infer("forest", inputs)
    np.testing.assert_array_equal(result.as_numpy("predictions"), models["rf"].predict(rows))
    # ONNX Runtime computes in float32: equal within the tolerance its recorded check uses
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), models["rf"].predict_proba(rows), atol=1e-5
    )
    with pytest.raises(InferenceServerException, match="f5"):
        client.infer("forest", inputs[:-1])  # a missing column: the error reaches the client


def test_memory_budget_evicts_and_reloads_on_demand(tmp_path, models, frame) -> None:  # type: ignore[no-untyped-def]
    """Three endpoints, room for about one model: every request still gets its answer."""
    from tests.conftest import LiveServer

    from modelyard.config import Settings
    from modelyard.serving.gateway import Gateway
    from modelyard.workspace import Workspace

    X, _ = frame
    ws = Workspace.open(Settings(home=tmp_path / "small"))
    c = Client(str(ws.settings.resolved_home), settings=ws.settings)
    for name in ("lr", "lr2", "rf"):
        c.log_model(models[name], name, input_example=X.head(5))
        ws.endpoints.create(name, f"models:/{name}/1", runtime="native")
    gw = Gateway(ws, memory_budget_bytes=1, refresh_seconds=60)  # nothing fits: always evict
    server = LiveServer(gw)
    try:
        with httpx.Client(base_url=server.url) as http:
            for _ in range(3):
                for name in ("lr", "lr2", "rf"):
                    r = http.post(f"/endpoints/{name}/invocations", json=split_body(X.head(2)))
                    assert r.status_code == 200, r.text
                    assert r.json()["predictions"] == models[name].predict(X.head(2)).tolist()
        assert gw.pool.events["evictions"] > 0 and gw.pool.events["loads"] > 3
    finally:
        server.stop()
        ws.close()


def test_slow_model_times_out_with_503(tmp_path, frame) -> None:  # type: ignore[no-untyped-def]
    from modelyard.config import Settings
    from modelyard.formats import PythonModel
    from modelyard.workspace import Workspace

    class Slow(PythonModel):
        def predict(self, inputs):  # type: ignore[no-untyped-def]
            if float(np.asarray(inputs["f0"])[0]) > 100:
                time.sleep(2)
            return np.zeros(len(inputs["f0"]))

    X, _ = frame
    ws = Workspace.open(Settings(home=tmp_path / "slow", trust_pickled_models=True))
    gw = GatewayServer(ws)
    try:
        Client(str(ws.settings.resolved_home), settings=ws.settings).log_model(
            Slow(), "slow", input_example=X.head(3)
        )
        ws.endpoints.create("slow", "models:/slow/1", timeout_ms=200)
        url = gw.start()
        slow_row = X.head(1).copy()
        slow_row.iloc[0, 0] = 1000.0
        r = httpx.post(f"{url}/endpoints/slow/invocations", json=split_body(slow_row))
        assert r.status_code == 503
        assert "did not answer within 200 ms" in r.json()["detail"]
        gw.gateway.log.flush()
        logged = gw.gateway.log.read("slow")
        assert logged["status"].to_pylist() == [503] and logged["version"].to_pylist() == [1]
    finally:
        gw.stop()
        ws.close()


def test_refresh_resolves_only_after_a_change(
    gateway: GatewayServer, models, frame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While nothing is audited the refresher asks one question, not every endpoint's
    resolution; a change is followed at the next refresh, and an unaudited one (a database
    edited by hand) at the periodic full sync."""
    from modelyard.serving import gateway as gateway_module
    from modelyard.serving import plans
    from modelyard.store.tables import ModelAliasRow

    X, _ = frame
    register(gateway, models["lr"], "fraud", X, alias="champion")
    register(gateway, models["lr2"], "fraud", X)
    gateway.ws.endpoints.create("fraud", "models:/fraud@champion")
    gw = gateway.gateway
    calls = []
    resolve = plans.resolve
    monkeypatch.setattr(plans, "resolve", lambda ws: calls.append(1) or resolve(ws))
    monkeypatch.setattr(gateway_module, "FULL_SYNC_EVERY", 10**6)
    url = gateway.start()

    def version() -> str:
        r = httpx.post(f"{url}/endpoints/fraud/invocations", json=split_body(X.head(1)))
        assert r.status_code == 200, r.text
        return r.headers["x-modelyard-version"]

    def wait_for(expected: str) -> None:
        deadline = time.monotonic() + 30
        while version() != expected:
            assert time.monotonic() < deadline, f"the gateway did not move to {expected}"
            time.sleep(0.05)

    assert version() == "fraud/1"
    time.sleep(1.0)  # ten refreshes with nothing changed
    assert len(calls) == 1  # the check of the cached plans, just after start-up
    gateway.ws.registry.set_alias("fraud", "champion", 2)
    wait_for("fraud/2")
    time.sleep(0.5)  # loading version 2 may have recorded its ONNX conversion (audited)
    settled = len(calls)
    assert 2 <= settled <= 3
    with gateway.ws.store.write("test") as tx:  # behind the audit log's back
        tx.session.delete(tx.session.scalars(select(ModelAliasRow)).one())
    time.sleep(0.5)
    assert version() == "fraud/2" and len(calls) == settled
    monkeypatch.setattr(gateway_module, "FULL_SYNC_EVERY", 2)
    deadline = time.monotonic() + 30
    while gw.state.not_ready.get("fraud") is None:
        assert time.monotonic() < deadline, "the full sync did not see the alias go"
        time.sleep(0.05)


def test_the_serving_domain_bounds_policies_for_every_caller(gateway_ws) -> None:  # type: ignore[no-untyped-def]
    """The SDK in process gets the same bounds as the HTTP API (not only its request models)."""
    from modelyard.errors import InvalidInput
    from modelyard.serving import TrafficPolicy

    for bad in (float("inf"), float("nan"), 1e12):
        with pytest.raises((InvalidInput, ValueError)):
            TrafficPolicy.model_validate({"routes": [{"target": "models:/a/1", "weight": bad}]})
    from modelyard.serving import CacheConfig

    with pytest.raises(ValueError):
        CacheConfig(enabled=True, ttl_seconds=float("inf"))
