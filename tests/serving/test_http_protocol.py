"""The gateway's own HTTP/1.1 protocol, over raw sockets: what uvicorn's would do, answered
without ASGI for ordinary prediction requests, and through ASGI for everything else."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
import uvicorn
from tests.conftest import LiveServer
from tests.serving.conftest import GatewayServer

from modelyard.client import Client
from modelyard.config import Settings
from modelyard.formats import PythonModel
from modelyard.server import _say_whether_fast
from modelyard.serving import http_protocol
from modelyard.serving.gateway import Gateway
from modelyard.serving.http_protocol import GatewayHttpProtocol
from modelyard.workspace import Workspace


class Sleepy(PythonModel):
    """Answers f0 * 2, after sleeping f1 seconds (when f1 > 0)."""

    def predict(self, inputs):  # type: ignore[no-untyped-def]
        f1 = float(np.asarray(inputs["f1"]).max())
        if f1 > 0:
            time.sleep(f1)
        return np.asarray(inputs["f0"], dtype=float) * 2


@pytest.fixture
def url(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A gateway serving ``sleepy``; ``request.param``: uvicorn's access log on (default off).

    On means as uvicorn's command line has it: ``access_log`` and a level that writes lines
    (INFO); off, what ``modelyard serve`` has (``access_log=False``, level WARNING).
    """
    access_log = getattr(request, "param", False)
    ws = Workspace.open(Settings(home=tmp_path / "home", trust_pickled_models=True))
    example = pd.DataFrame({"f0": [1.0, 2.0], "f1": [0.0, 0.0]})
    Client(str(ws.settings.resolved_home), settings=ws.settings).log_model(
        Sleepy(), "sleepy", input_example=example
    )
    ws.endpoints.create("sleepy", "models:/sleepy/1")
    gw = GatewayServer(ws)
    gw.server = LiveServer(
        gw.gateway,
        http=GatewayHttpProtocol,
        timeout_keep_alive=1,
        access_log=access_log,
        log_level="info" if access_log else "warning",
    )
    yield gw.server.url
    gw.stop()
    ws.close()


def body(f0: float, f1: float = 0.0) -> bytes:
    return orjson.dumps({"dataframe_split": {"columns": ["f0", "f1"], "data": [[f0, f1]]}})


def request(payload: bytes, path: str = "/endpoints/sleepy/invocations", extra: str = "") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n{extra}\r\n"
    )
    return head.encode() + payload


def connect(url: str) -> socket.socket:
    port = int(url.rsplit(":", 1)[1])
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


class Reader:
    """Reads whole HTTP/1.1 responses (Content-Length framed) off a socket, in order."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"connection closed mid-response: {self.buffer!r}"
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode().split("\r\n")
        headers = {}
        for line in lines:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            assert self._fill(), "connection closed mid-body"
        payload, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, payload

    def closed(self) -> bool:
        """True when the server closes the connection (within the socket's timeout)."""
        return not self.buffer and not self._fill()


def predictions(payload: bytes) -> list[float]:
    return [float(p) for p in orjson.loads(payload)["predictions"]]


def test_keep_alive_answers_in_one_write_with_uvicorns_headers(url: str) -> None:
    with connect(url) as s:
        reader = Reader(s)
        for i in range(5):
            s.sendall(request(body(float(i))))
            status, headers, payload = reader.response()
            assert status == 200
            assert predictions(payload) == [2.0 * i]
            assert headers["x-modelyard-version"] == "sleepy/1"
            assert headers["content-type"] == "application/json"
            assert len(headers["x-request-id"]) == 32
            assert "date" in headers and "server" in headers  # uvicorn's defaults
            assert "connection" not in headers
        # uvicorn's keep-alive timeout (1 s here) still closes an idle connection
        s.settimeout(5)
        assert reader.closed()


def test_pipelined_requests_are_answered_in_order(url: str) -> None:
    """The first is slow; the others (fast path, ASGI route, v2) wait their turn."""
    v2 = orjson.dumps(
        {
            "inputs": [
                {"name": "f0", "shape": [1], "datatype": "FP64", "data": [7.0]},
                {"name": "f1", "shape": [1], "datatype": "FP64", "data": [0.0]},
            ]
        }
    )
    with connect(url) as s:
        s.sendall(
            request(body(1.0, 0.3))
            + b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n"
            + request(body(2.0))
            + request(v2, path="/v2/models/sleepy/infer")
            + request(body(3.0), path="/endpoints/sleepy/invocations?from=asgi")
        )
        reader = Reader(s)
        first = reader.response()
        assert first[0] == 200 and predictions(first[2]) == [2.0]
        live = reader.response()
        assert live[0] == 200 and orjson.loads(live[2]) == {"live": True}
        second = reader.response()
        assert predictions(second[2]) == [4.0]
        third = reader.response()
        assert orjson.loads(third[2])["outputs"][0]["data"] == [14.0]
        fourth = reader.response()
        assert predictions(fourth[2]) == [6.0]


def spy_on_paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which way each prediction reaches Gateway.infer: "direct" or through "asgi"."""
    paths: list[str] = []
    infer = Gateway.infer

    async def spy(self, route, headers, body=None, *, receive=None):  # type: ignore[no-untyped-def]
        paths.append("asgi" if receive is not None else "direct")
        return await infer(self, route, headers, body, receive=receive)

    monkeypatch.setattr(Gateway, "infer", spy)
    return paths


def test_requests_out_of_the_ordinary_take_the_asgi_path_and_answer_alike(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = spy_on_paths(monkeypatch)
    json = {"content-type": "application/json"}
    invocations = f"{url}/endpoints/sleepy/invocations"
    fast = httpx.post(invocations, content=body(4.0), headers=json)

    def chunks() -> Iterator[bytes]:
        payload = body(4.0)
        yield payload[:10]
        yield payload[10:]

    chunked = httpx.post(invocations, content=chunks(), headers=json)
    query = httpx.post(f"{invocations}?x=1", content=body(4.0), headers=json)
    escaped = httpx.post(f"{url}/endpoints/sleep%79/invocations", content=body(4.0), headers=json)
    for r in (fast, chunked, query, escaped):
        assert r.status_code == 200, r.text
        assert predictions(r.content) == [8.0]
        assert r.headers["x-modelyard-version"] == "sleepy/1"
        assert set(r.headers) == set(fast.headers)

    with connect(url) as s:  # Expect: 100-continue gets its interim answer first
        payload = body(5.0)
        s.sendall(
            request(b"", extra="expect: 100-continue\r\n").replace(
                b"length: 0", b"length: %d" % len(payload)
            )
        )
        interim = s.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(payload)
        reader = Reader(s)
        reader.buffer = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n") :]
        status, _, answer = reader.response()
        assert status == 200 and predictions(answer) == [10.0]
    assert paths == ["direct", "asgi", "asgi", "asgi", "asgi"]


def test_oversized_and_broken_requests_get_problems_and_the_connection_serves_on(
    url: str,
) -> None:
    too_big = 64 * 1024 * 1024
    with connect(url) as s:
        reader = Reader(s)
        # declared over the limit: refused before the body is read (ASGI path)
        s.sendall(
            b"POST /endpoints/sleepy/invocations HTTP/1.1\r\nHost: t\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % too_big
        )
        status, headers, payload = reader.response()
        assert status == 413 and headers["content-type"] == "application/problem+json"
        assert "limit" in orjson.loads(payload)["detail"]
    with connect(url) as s:
        reader = Reader(s)
        s.sendall(request(b"{not json"))
        status, headers, payload = reader.response()
        assert status == 400 and "JSON" in orjson.loads(payload)["detail"]
        s.sendall(request(body(1.0), path="/endpoints/ghost/invocations"))
        status, _, payload = reader.response()
        assert status == 404 and orjson.loads(payload)["endpoint"] == "ghost"
        s.sendall(request(body(1.0)))  # same connection, still serving
        status, _, payload = reader.response()
        assert status == 200 and predictions(payload) == [2.0]
    with connect(url) as s:  # not HTTP at all: uvicorn's 400, and the gateway goes on
        s.sendall(b"NONSENSE\r\n\r\n")
        assert s.recv(1024).startswith(b"HTTP/1.1 400")
    r = httpx.post(f"{url}/endpoints/sleepy/invocations", json=orjson.loads(body(1.0)))
    assert r.status_code == 200


def test_connection_close_and_http_1_0_close_after_the_answer(url: str) -> None:
    with connect(url) as s:
        s.sendall(request(body(1.0), extra="connection: close\r\n"))
        reader = Reader(s)
        status, headers, payload = reader.response()
        assert status == 200 and predictions(payload) == [2.0]
        assert headers["connection"] == "close"
        assert reader.closed()
    with connect(url) as s:
        s.sendall(request(body(3.0)).replace(b"HTTP/1.1", b"HTTP/1.0", 1))
        reader = Reader(s)
        status, headers, payload = reader.response()
        assert status == 200 and predictions(payload) == [6.0]
        assert reader.closed()


def test_clients_that_disconnect_are_counted_and_hurt_nothing(url: str) -> None:
    payload = body(1.0)
    for _ in range(3):  # gone halfway through the body
        with connect(url) as s:
            s.sendall(request(payload)[: -len(payload) // 2])
    for _ in range(3):  # gone while the model is working on the answer
        with connect(url) as s:
            s.sendall(request(body(1.0, 0.2)))
    time.sleep(0.8)
    r = httpx.post(f"{url}/endpoints/sleepy/invocations", json=orjson.loads(body(6.0)))
    assert r.status_code == 200 and predictions(r.content) == [12.0]
    metrics = httpx.get(f"{url}/metrics").text
    line = next(
        x
        for x in metrics.splitlines()
        if x.startswith("modelyard_request_errors_total") and "client_disconnected" in x
    )
    assert line.endswith(" 3.0"), line


class Lines(logging.Handler):
    """The messages of the records it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def access_logger() -> Iterator[logging.Logger]:
    """uvicorn's access logger; afterwards without the :class:`Lines` handlers a test added,
    at its level and propagation from before."""
    logger = logging.getLogger("uvicorn.access")
    level, propagate = logger.level, logger.propagate
    yield logger
    for handler in [h for h in logger.handlers if isinstance(h, Lines)]:
        logger.removeHandler(handler)
    logger.setLevel(level)
    logger.propagate = propagate


@pytest.mark.parametrize("url", [True], indirect=True)
def test_with_uvicorns_access_log_on_predictions_go_through_asgi(
    url: str, monkeypatch: pytest.MonkeyPatch, access_logger: logging.Logger
) -> None:
    """uvicorn writes access lines from its ASGI cycle: none may go missing."""
    paths = spy_on_paths(monkeypatch)
    lines = Lines()
    access_logger.addHandler(lines)
    r = httpx.post(f"{url}/endpoints/sleepy/invocations", json=orjson.loads(body(2.0)))
    assert r.status_code == 200 and predictions(r.content) == [4.0]
    assert paths == ["asgi"]
    assert any("/endpoints/sleepy/invocations" in line for line in lines.lines), lines.lines


def test_the_fast_path_is_off_exactly_when_uvicorn_would_write_access_lines(
    url: str, monkeypatch: pytest.MonkeyPatch, access_logger: logging.Logger
) -> None:
    """A handler on ``uvicorn.access`` at WARNING writes no access line, so it turns nothing
    off: what pytest 9.1+ does to every non-propagating logger (``access_log=False`` makes
    uvicorn's one), and what an operator's logging set-up may do. At INFO, uvicorn writes a
    line per request: each takes the ASGI path, and each line is written."""
    paths = spy_on_paths(monkeypatch)
    lines = Lines()
    access_logger.addHandler(lines)
    invocations = f"{url}/endpoints/sleepy/invocations"
    assert access_logger.getEffectiveLevel() == logging.WARNING
    assert httpx.post(invocations, json=orjson.loads(body(1.0))).status_code == 200
    access_logger.setLevel(logging.INFO)
    assert httpx.post(invocations, json=orjson.loads(body(1.0))).status_code == 200
    assert paths == ["direct", "asgi"]
    assert len(lines.lines) == 1 and "/endpoints/sleepy/invocations" in lines.lines[0]
    # on a uvicorn it is not tested on, the gateway is uvicorn's protocol unchanged
    access_logger.setLevel(logging.WARNING)
    monkeypatch.setattr(http_protocol, "UVICORN_TESTED", False)
    assert httpx.post(invocations, json=orjson.loads(body(1.0))).status_code == 200
    assert paths == ["direct", "asgi", "asgi"]


def test_a_gateway_worker_says_at_start_up_whether_the_fast_path_is_on_and_why_not(
    workspace: Workspace,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    access_logger: logging.Logger,
) -> None:
    gateway = Gateway(workspace)

    def said(**options: object) -> list[tuple[str, str]]:
        caplog.clear()
        # log_config=None: this Config leaves the process's logging as it is
        config = uvicorn.Config(gateway, http=GatewayHttpProtocol, log_config=None, **options)
        with caplog.at_level(logging.INFO, logger="modelyard.server"):
            _say_whether_fast(config)
        return [(r.levelname, r.getMessage()) for r in caplog.records]

    access_logger.addHandler(Lines())  # as pytest 9.1+ or an operator's set-up leaves it
    access_logger.setLevel(logging.WARNING)
    assert said() == [
        ("INFO", "gateway fast path on: prediction requests are answered without ASGI")
    ]
    off = "gateway fast path off, every request goes through ASGI: "
    # uvicorn's concurrency limit leaves it on: only requests over the limit take ASGI (503)
    assert said(limit_concurrency=10) == said()
    assert said(root_path="/ml") == [("WARNING", off + "uvicorn's root_path is set")]
    access_logger.setLevel(logging.INFO)
    assert said() == [
        (
            "WARNING",
            off + "uvicorn's access log is on (logger 'uvicorn.access' has handlers at INFO)",
        )
    ]
    kept = access_logger.handlers[:]  # pytest's own among them, when it attached them
    access_logger.handlers[:] = []
    access_logger.propagate = False
    try:
        assert said()[0][0] == "INFO"  # at INFO but with nowhere to write: no access log
    finally:
        access_logger.handlers[:] = kept
    monkeypatch.setattr(http_protocol, "UVICORN_TESTED", False)
    ((level, message),) = said()
    assert level == "WARNING"
    assert message == off + (
        f"uvicorn {uvicorn.__version__} is not a version it is tested on (0.54, 0.55)"
    )
