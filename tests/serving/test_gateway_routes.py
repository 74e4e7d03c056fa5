"""The gateway's answers at its edges: readiness per endpoint, the same answer for bare
/invocations whatever is loaded, 405s, Triton's config route, request ids a client sends,
metrics that junk URLs cannot grow, and whether the fast path is on, in /metrics."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import uvicorn
from tests.conftest import LiveServer
from tests.serving.conftest import FEATURES, GatewayServer
from tests.serving.test_http_protocol import Reader, connect

from modelyard.client import Client
from modelyard.config import Settings
from modelyard.formats import PythonModel
from modelyard.serving import http_protocol
from modelyard.serving.gateway import Gateway
from modelyard.serving.http_protocol import GatewayHttpProtocol
from modelyard.serving.wire import hot_route
from modelyard.workspace import Workspace

ROWS = {"dataframe_split": {"columns": FEATURES, "data": [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]}}


class Zeros(PythonModel):
    def predict(self, inputs):  # type: ignore[no-untyped-def]
        return np.zeros(len(inputs["f0"]))


@pytest.fixture
def fraud(gateway: GatewayServer, models, frame) -> str:  # type: ignore[no-untyped-def]
    """A gateway serving ``fraud``; ``boom`` is a pickled model it refuses to load."""
    X, _ = frame
    c = Client(str(gateway.ws.settings.resolved_home), settings=gateway.ws.settings)
    c.log_model(models["lr"], "fraud", input_example=X.head(5))
    c.log_model(Zeros(), "boom", input_example=X.head(3))
    c.close()
    gateway.ws.endpoints.create("fraud", "models:/fraud/1")
    return gateway.start()


def problem(r: httpx.Response, status: int, needle: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert needle in body["detail"], body
    return body


def metric_lines(url: str) -> list[str]:
    return [line for line in httpx.get(f"{url}/metrics").text.splitlines() if line]


def test_a_failing_endpoint_is_not_ready_on_its_own(gateway: GatewayServer, fraud: str) -> None:
    gateway.ws.endpoints.create("boom", "models:/boom/1")  # not trusted: cannot be loaded
    deadline = time.monotonic() + 30
    while "boom" not in httpx.get(f"{fraud}/v2/health/ready").json()["not_ready"]:
        assert time.monotonic() < deadline, "the gateway never tried to load boom"
        time.sleep(0.05)
    ready = httpx.get(f"{fraud}/v2/health/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert "trust" in ready.json()["not_ready"]["boom"]
    problem(httpx.get(f"{fraud}/v2/models/boom/ready"), 503, "not ready")
    assert httpx.get(f"{fraud}/v2/models/fraud/ready").status_code == 200
    text = httpx.get(f"{fraud}/metrics").text
    assert 'modelyard_endpoint_ready{endpoint="boom"} 0.0' in text
    assert 'modelyard_endpoint_ready{endpoint="fraud"} 1.0' in text
    # bare /invocations: two endpoints exist, one of them loaded; always the same answer
    for _ in range(3):
        body = problem(httpx.post(f"{fraud}/invocations", json=ROWS), 404, "boom, fraud")
        assert "X-Modelyard-Endpoint" in body["detail"]
    headers = {"x-modelyard-endpoint": "fraud"}
    assert httpx.post(f"{fraud}/invocations", json=ROWS, headers=headers).status_code == 200
    bad = {"x-modelyard-endpoint": b"\xff\xfe"}
    problem(httpx.post(f"{fraud}/invocations", json=ROWS, headers=bad), 400, "endpoint name")


def test_bare_invocations_with_one_endpoint_that_is_not_ready_says_so(
    gateway: GatewayServer, models, frame
) -> None:  # type: ignore[no-untyped-def]
    X, _ = frame
    c = Client(str(gateway.ws.settings.resolved_home), settings=gateway.ws.settings)
    c.log_model(Zeros(), "boom", input_example=X.head(3))
    c.close()
    gateway.ws.endpoints.create("boom", "models:/boom/1")
    url = gateway.start()
    problem(httpx.post(f"{url}/invocations", json=ROWS), 503, "'boom' is not ready")


def test_wrong_methods_get_405_with_allow_and_unknown_routes_a_json_404(fraud: str) -> None:
    for path in (
        "/invocations",
        "/endpoints/fraud/invocations",
        "/v2/models/fraud/infer",
        "/v2/models/fraud/versions/1/infer",
    ):
        for method in ("GET", "PUT", "DELETE"):
            r = httpx.request(method, fraud + path)
            problem(r, 405, "POST only")
            assert r.headers["allow"] == "POST"
    r = httpx.post(f"{fraud}/v2/health/ready")
    problem(r, 405, "GET")
    assert "GET" in r.headers["allow"]
    for path in ("/v2/nothing", "/v2/models/fraud/nothing", "/v2/models/fraud/versions/x"):
        body = problem(httpx.get(fraud + path), 404, "no route")
        assert body["error"] == body["detail"]  # what tritonclient reads
    # the fast path hands a GET to ASGI, which says 405 too
    with connect(fraud) as s:
        s.sendall(b"GET /invocations HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, _ = Reader(s).response()
        assert status == 405 and headers["allow"] == "POST"


def test_tritonclient_reads_the_model_config_and_a_clean_error(fraud: str) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(fraud.removeprefix("http://"))
    config = client.get_model_config("fraud")
    assert config["name"] == "fraud" and config["max_batch_size"] == 0
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [
        (f, "TYPE_FP64", [-1]) for f in FEATURES
    ]
    assert config["output"][0]["name"] == "predictions"
    assert client.get_model_config("fraud", model_version="1")["name"] == "fraud"
    for name, version, needle in [
        ("ghost", "", "no endpoint 'ghost'"),
        ("fraud", "7", "version 7"),
    ]:
        with pytest.raises(InferenceServerException) as failed:
            client.get_model_config(name, model_version=version)
        assert needle in failed.value.message()
        assert failed.value.status() == "404"


def test_a_request_id_must_be_printable_ascii_on_both_paths(fraud: str) -> None:
    path = "/endpoints/fraud/invocations"
    payload = orjson.dumps(ROWS)
    for suffix in ("", "?x=1"):  # the fast path, then ASGI
        for bad in (b"\xff\xfe", b"a" * 129, b"tab\there"):
            with connect(fraud) as s:
                s.sendall(
                    b"POST " + path.encode() + suffix.encode() + b" HTTP/1.1\r\nHost: t\r\n"
                    b"content-type: application/json\r\nx-request-id: " + bad + b"\r\n"
                    b"content-length: %d\r\n\r\n" % len(payload) + payload
                )
                status, headers, body = Reader(s).response()
            assert status == 400, body
            assert headers["content-type"] == "application/problem+json"
            assert "X-Request-Id must be 1 to 128 printable ASCII" in orjson.loads(body)["detail"]
            assert len(headers["x-request-id"]) == 32  # one the gateway made
        good = httpx.post(fraud + path + suffix, json=ROWS, headers={"x-request-id": "a b-1"})
        assert good.status_code == 200 and good.headers["x-request-id"] == "a b-1"
    # OIP's id goes back as X-Request-Id: no header can be smuggled in through it
    oip = {
        "id": "x\r\nset-cookie: stolen=1",
        "inputs": [{"name": f, "shape": [1], "datatype": "FP64", "data": [1.0]} for f in FEATURES],
    }
    r = httpx.post(f"{fraud}/v2/models/fraud/infer", json=oip)
    problem(r, 400, "'id' must be at most 128 printable ASCII")
    assert "set-cookie" not in r.headers


def test_junk_endpoint_names_do_not_grow_the_metrics(fraud: str) -> None:
    def junk(start: int, stop: int) -> None:
        with httpx.Client(base_url=fraud) as c:
            for i in range(start, stop):
                assert c.post(f"/v2/models/junk{i}/infer", json={"inputs": []}).status_code == 404
                assert c.post(f"/endpoints/junk{i}/invocations", json=ROWS).status_code == 404
                r = c.post("/invocations", json=ROWS, headers={"x-modelyard-endpoint": f"j{i}"})
                assert r.status_code == 404

    assert httpx.post(f"{fraud}/endpoints/fraud/invocations", json=ROWS).status_code == 200
    junk(0, 10)
    before = metric_lines(fraud)
    junk(10, 300)
    after = metric_lines(fraud)
    assert len(after) == len(before)
    text = "\n".join(after)
    assert "junk" not in text and 'endpoint="j1' not in text
    assert 'modelyard_request_errors_total{endpoint="unknown",reason="not_found"} 900.0' in text
    assert 'endpoint="fraud"' in text


def test_metrics_say_whether_the_fast_path_is_on(
    fraud: str, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert 'modelyard_gateway_fast_path{reason=""} 1.0' in httpx.get(f"{fraud}/metrics").text
    monkeypatch.setattr(http_protocol, "UVICORN_TESTED", False)
    text = httpx.get(f"{fraud}/metrics").text
    assert f'modelyard_gateway_fast_path{{reason="uvicorn {uvicorn.__version__} is not' in text
    assert "} 0.0" in next(line for line in text.splitlines() if "_fast_path{" in line)
    monkeypatch.undo()
    plain = LiveServer(Gateway(workspace), http="httptools")  # uvicorn's own protocol
    try:
        text = httpx.get(f"{plain.url}/metrics").text
        assert "modelyard_gateway_fast_path{reason=\"the HTTP protocol is not the gateway's" in text
    finally:
        plain.stop()


def _free_sockets(count: int) -> list[socket.socket]:
    found = []
    for _ in range(count):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        found.append(s)
    return found


@pytest.fixture
def two_addresses(tmp_path: Path, models, frame) -> Iterator[tuple[str, str, Workspace]]:  # type: ignore[no-untyped-def]
    """A gateway with auth on, listening on a main address and a metrics address."""
    X, _ = frame
    main, metrics = _free_sockets(2)
    port = metrics.getsockname()[1]
    settings = Settings(home=tmp_path / "home", auth=True, metrics_address=f"127.0.0.1:{port}")
    ws = Workspace.open(settings)
    Client(str(settings.resolved_home), settings=settings).log_model(
        models["lr"], "fraud", input_example=X.head(5)
    )
    ws.endpoints.create("fraud", "models:/fraud/1")
    config = uvicorn.Config(
        Gateway(ws), http=GatewayHttpProtocol, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [main, metrics]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the gateway did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{main.getsockname()[1]}", f"http://127.0.0.1:{port}", ws
    server.should_exit = True
    thread.join(timeout=10)
    ws.close()


def test_the_metrics_address_serves_metrics_without_a_token_and_nothing_else(
    two_addresses: tuple[str, str, Workspace],
) -> None:
    main, metrics, _ = two_addresses
    problem(httpx.get(f"{main}/metrics"), 401, "token")
    r = httpx.get(f"{metrics}/metrics")
    assert r.status_code == 200 and "modelyard_endpoint_ready" in r.text
    for path in ("/endpoints/fraud/invocations", "/v2/models/fraud/infer", "/invocations"):
        problem(httpx.post(metrics + path, json=ROWS), 404, "GET /metrics only")
    problem(httpx.get(f"{metrics}/v2/models/fraud"), 404, "GET /metrics only")
    problem(httpx.get(f"{metrics}/api/v1/models"), 404, "GET /metrics only")
    # the main address still wants its token
    problem(httpx.post(f"{main}/endpoints/fraud/invocations", json=ROWS), 401, "token")


def test_a_metrics_address_must_be_host_and_port(tmp_path: Path) -> None:
    from modelyard.errors import InvalidInput

    for bad in ("9100", "host:", ":9100", "h:99999", "h:x"):
        with pytest.raises(InvalidInput, match="is not HOST:PORT"):
            assert Settings(home=tmp_path, metrics_address=bad).metrics_host_port
    assert Settings(metrics_address="[::1]:9100").metrics_host_port == ("::1", 9100)


def raw(
    url: str, method: str, target: bytes, headers: bytes = b"", payload: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """One request as written here, byte for byte (httpx would normalise the URL)."""
    with connect(url) as s:
        s.sendall(
            method.encode()
            + b" "
            + target
            + b" HTTP/1.1\r\nHost: t\r\n"
            + headers
            + b"content-length: %d\r\n\r\n" % len(payload)
            + payload
        )
        return Reader(s).response()


def raw_problem(answer: tuple[int, dict[str, str], bytes], status: int, needle: str) -> dict:
    got, headers, body = answer
    assert got == status, body
    assert headers["content-type"] == "application/problem+json"
    problem = orjson.loads(body)
    assert needle in problem["detail"], problem
    return problem


def test_a_version_in_a_url_is_a_registry_version_or_a_404_never_a_500(fraud: str) -> None:
    oip = orjson.dumps(
        {"inputs": [{"name": f, "shape": [1], "datatype": "FP64", "data": [1.0]} for f in FEATURES]}
    )
    json = b"content-type: application/json\r\n"
    huge = b"9" * 5000  # int() refuses more than 4300 digits
    # "%C2%B2" is "\N{SUPERSCRIPT TWO}" to ASGI: a digit to str.isdigit(), not to int()
    for version in (b"%C2%B2", huge, b"0", b"2147483648"):
        for suffix in (b"", b"?x=1"):  # the fast path (where it can take it), then ASGI
            target = b"/v2/models/fraud/versions/" + version + b"/infer" + suffix
            raw_problem(raw(fraud, "POST", target, json, oip), 404, "no route")
    # unescaped, uvicorn's parser refuses it before the gateway sees it (another server's
    # might not: the route is no prediction route either way)
    utf8 = "/v2/models/fraud/versions/\N{SUPERSCRIPT TWO}/infer"
    assert raw(fraud, "POST", utf8.encode(), json, oip)[0] < 500
    assert hot_route(utf8) is None and hot_route(utf8.replace("\N{SUPERSCRIPT TWO}", "2"))
    for version in (b"1", b"2147483647"):  # a registry version: served, or not served
        for suffix in (b"", b"?x=1"):
            target = b"/v2/models/fraud/versions/" + version + b"/infer" + suffix
            answer = raw(fraud, "POST", target, json, oip)
            if version == b"1":
                assert answer[0] == 200, answer
            else:
                raw_problem(answer, 404, "does not serve version 2147483647")
    for route in (b"", b"/ready", b"/config"):
        target = b"/v2/models/fraud/versions/" + huge + route
        raw_problem(raw(fraud, "GET", target), 404, "no route")
        target = b"/v2/models/fraud/versions/9999999999" + route
        raw_problem(raw(fraud, "GET", target), 404, "does not serve version 9999999999")
        assert raw(fraud, "GET", b"/v2/models/fraud/versions/1" + route)[0] == 200


def test_headers_a_client_gets_wrong_are_a_400_saying_what_to_send(fraud: str) -> None:
    rows = orjson.dumps(ROWS)
    oip = orjson.dumps(
        {"inputs": [{"name": f, "shape": [1], "datatype": "FP64", "data": [1.0]} for f in FEATURES]}
    )
    for suffix in (b"", b"?x=1"):  # the fast path, then ASGI
        for content_type in (b"application/json\xff", b"text/\xe9t\xe9"):
            head = b"content-type: " + content_type + b"\r\n"
            target = b"/endpoints/fraud/invocations" + suffix
            raw_problem(raw(fraud, "POST", target, head, rows), 400, "send 'application/json'")
            if not content_type.startswith(b"application/json"):
                target = b"/v2/models/fraud/infer" + suffix
                raw_problem(raw(fraud, "POST", target, head, oip), 400, "send application/json")
        for length in (b"9" * 5000, b"1" * 13, b"abc", b""):
            head = b"inference-header-content-length: " + length + b"\r\n"
            target = b"/v2/models/fraud/infer" + suffix
            raw_problem(
                raw(fraud, "POST", target, head, oip), 400, "Inference-Header-Content-Length"
            )
        head = b"inference-header-content-length: %d\r\n" % len(oip)
        assert raw(fraud, "POST", b"/v2/models/fraud/infer" + suffix, head, oip)[0] == 200
