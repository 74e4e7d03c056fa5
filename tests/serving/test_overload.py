"""Overload and slow clients, over real sockets: a gateway that cannot keep up answers 503
with Retry-After at once instead of queueing without end, and no client holds more of it
than the limits allow (header and body timeouts, head size, connections)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pandas as pd
import pytest
from tests.conftest import LiveServer
from tests.serving.conftest import GatewayServer
from tests.serving.test_http_protocol import Reader, Sleepy, body, connect, request, spy_on_paths

from modelyard.client import Client
from modelyard.config import Settings
from modelyard.http_limits import LimitedHttpProtocol
from modelyard.serving.batcher import Batcher
from modelyard.serving.http_protocol import GatewayHttpProtocol, fast_path_off
from modelyard.workspace import Workspace

INVOCATIONS = "/endpoints/sleepy/invocations"
JSON = {"content-type": "application/json"}
# uvloop timers run on libuv's millisecond clock, cached per loop turn: one may fire a
# little before the monotonic clock says its time has come.
TIMER_SLACK = 0.05


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., GatewayServer]]:
    """Start a gateway serving ``sleepy`` (one predict call per request, as long as its
    ``f1`` says) with the given settings; ``uvicorn`` options go to uvicorn's Config."""
    servers: list[GatewayServer] = []

    def start(uvicorn: dict[str, Any] | None = None, **settings: Any) -> GatewayServer:
        home = tmp_path / f"home{len(servers)}"
        ws = Workspace.open(Settings(home=home, trust_pickled_models=True, **settings))
        example = pd.DataFrame({"f0": [1.0, 2.0], "f1": [0.0, 0.0]})
        Client(str(ws.settings.resolved_home), settings=ws.settings).log_model(
            Sleepy(), "sleepy", input_example=example
        )
        ws.endpoints.create("sleepy", "models:/sleepy/1", batching={"max_batch_size": 1})
        gw = GatewayServer(ws)
        options = {"http": GatewayHttpProtocol, "access_log": False, **(uvicorn or {})}
        gw.server = LiveServer(gw.gateway, **options)
        servers.append(gw)
        return gw

    yield start
    for gw in servers:
        gw.stop()
        gw.ws.close()


def url_of(gw: GatewayServer) -> str:
    assert gw.server is not None
    return gw.server.url


def metric(url: str, name: str, **labels: str) -> float:
    """The value of one sample of ``/metrics`` (0 when it is not there)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def problem_of(response: httpx.Response | tuple[int, dict[str, str], bytes]) -> dict[str, Any]:
    if isinstance(response, httpx.Response):
        content_type, payload = response.headers["content-type"], response.content
    else:
        content_type, payload = response[1]["content-type"], response[2]
    assert content_type == "application/problem+json"
    problem: dict[str, Any] = orjson.loads(payload)
    return problem


# -- overload: a bounded queue, and a deadline ----------------------------------------------


@pytest.mark.slow
def test_twice_the_sustainable_load_sheds_with_503_and_keeps_the_queue_bounded(
    serve: Callable[..., GatewayServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests arrive at twice the rate the model can answer; beyond a queue of 4 they are
    refused at once, so the admitted ones wait for at most the queue ahead of them.

    The client shares this process (and its GIL) with the server, so its clock says little
    on a loaded machine: the bound is checked on what the server records (the batcher's
    queue depth, the shed counter), not on latencies measured here.
    """
    service = 0.05  # seconds per request (one predict call each: max_batch_size 1)
    max_queue = 4
    depths: list[int] = []  # the batcher's queue depth each time its worker takes a batch
    real_take = Batcher._take

    def take(self: Batcher) -> Any:
        # Depth only grows between two takes (nothing here times out or is cancelled), so
        # the largest depth seen by a take is the largest the queue ever was.
        depths.append(self.queue_depth)
        return real_take(self)

    monkeypatch.setattr(Batcher, "_take", take)
    gw = serve(gateway_max_queue=max_queue)
    url = url_of(gw)
    payload = body(1.0, service)
    assert httpx.post(f"{url}{INVOCATIONS}", content=payload, headers=JSON).status_code == 200

    count, interval = 120, service / 2  # 2x the sustainable 20 requests a second, for 3 s

    async def load() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

            async def one(i: int) -> httpx.Response:
                # Offsets from the start: a client that falls behind sends the late ones
                # together, which only adds to the overload.
                await asyncio.sleep(i * interval)
                return await client.post(INVOCATIONS, content=payload, headers=JSON)

            return await asyncio.gather(*(one(i) for i in range(count)))

    depths.clear()  # the warm-up request's
    results = asyncio.run(load())
    statuses = [r.status_code for r in results]
    assert set(statuses) <= {200, 503}, statuses  # no 500, nothing else
    shed = [r for r in results if r.status_code == 503]
    assert shed and len(shed) < count, statuses  # some refused, some answered
    for answer in shed:
        assert int(answer.headers["retry-after"]) >= 1
        problem = problem_of(answer)
        assert problem["status"] == 503 and problem["title"] == "Overloaded"
        assert "MODELYARD_GATEWAY_MAX_QUEUE" in problem["detail"]
        assert problem["retry_after"] == int(answer.headers["retry-after"])
    # The queue filled up to its bound and never past it: an admitted request waits for at
    # most the call running and the max_queue requests ahead of it, whatever the load.
    # (Unbounded, it would grow by 20 requests a second for the whole 3 s.)
    assert depths and max(depths) == max_queue, depths
    counted = metric(url, "modelyard_requests_shed_total", endpoint="sleepy", reason="queue_full")
    assert counted == len(shed)
    late = metric(url, "modelyard_requests_shed_total", endpoint="sleepy", reason="deadline")
    assert late == 0


def test_a_request_that_would_wait_past_its_deadline_is_shed_at_once(
    serve: Callable[..., GatewayServer],
) -> None:
    """X-Modelyard-Timeout-Ms (or the endpoint's timeout_ms) is the request's deadline: when
    the work queued ahead cannot be done by then, the answer is 503 right away, as an OIP
    error member on /v2 routes."""
    gw = serve()
    url = url_of(gw)
    service = 0.2
    assert httpx.post(f"{url}{INVOCATIONS}", content=body(1.0, service), headers=JSON).is_success
    busy = [connect(url) for _ in range(3)]  # connected first: the 3 arrive together
    try:
        for s in busy:
            s.sendall(request(body(1.0, service), path=INVOCATIONS))
        deadline = time.monotonic() + 10
        while metric(url, "modelyard_batch_queue_depth", model="sleepy", version="1") < 2:
            assert time.monotonic() < deadline, "the requests never queued"
            time.sleep(0.01)
        # 2 queued calls and its own take at least 600 ms: past a 300 ms deadline
        v2 = orjson.dumps(
            {
                "inputs": [
                    {"name": "f0", "shape": [1], "datatype": "FP64", "data": [1.0]},
                    {"name": "f1", "shape": [1], "datatype": "FP64", "data": [0.0]},
                ]
            }
        )
        late = {**JSON, "x-modelyard-timeout-ms": "300"}
        oip = httpx.post(f"{url}/v2/models/sleepy/infer", content=v2, headers=late)
        mlflow = httpx.post(f"{url}{INVOCATIONS}", content=body(1.0), headers=late)
        for answer in (oip, mlflow):
            assert answer.status_code == 503, answer.text
            assert int(answer.headers["retry-after"]) >= 1
            problem = problem_of(answer)
            assert "after this request's 300 ms timeout" in problem["detail"]
        assert problem_of(oip)["error"] == problem_of(oip)["detail"]  # what tritonclient reads
        for bad in ("soon", "0", "9" * 5000, "-5"):
            answer = httpx.post(
                f"{url}{INVOCATIONS}",
                content=body(1.0),
                headers={**JSON, "x-modelyard-timeout-ms": bad},
            )
            assert answer.status_code == 400, (bad, answer.text)
            assert "X-Modelyard-Timeout-Ms must be a whole number" in problem_of(answer)["detail"]
        assert [Reader(s).response()[0] for s in busy] == [200] * 3  # the admitted ones
    finally:
        for s in busy:
            s.close()
    counted = metric(url, "modelyard_requests_shed_total", endpoint="sleepy", reason="deadline")
    assert counted == 2


# -- slow and greedy clients -----------------------------------------------------------------


@pytest.mark.slow
def test_500_slow_connections_do_not_stop_normal_traffic_and_are_closed_after_the_timeout(
    serve: Callable[..., GatewayServer],
) -> None:
    """Slowloris: each connection sends its head a byte at a time. Normal requests are
    answered meanwhile; the slow ones get 408 once the header timeout has passed.

    Two gateways, so that no phase races a timeout on a loaded machine: the traffic phase
    runs against a header timeout far longer than it can take, the closing phase against a
    short one, trickling bytes only while the timeout cannot have passed yet.
    """
    head = request(body(1.0), path=INVOCATIONS)

    # Normal traffic goes on while 500 slow heads hold their connections.
    gw = serve(header_timeout_seconds=600.0)
    url = url_of(gw)
    assert gw.server is not None
    state = gw.server.server.server_state
    slow = [connect(url) for _ in range(500)]
    try:
        statuses = []
        for i in range(10):  # a byte a connection every 0.1 s
            for s in slow:
                s.send(head[i : i + 1])
            statuses.append(
                httpx.post(f"{url}{INVOCATIONS}", content=body(float(i)), headers=JSON).status_code
            )
            time.sleep(0.1)
        assert statuses == [200] * 10
        assert len(state.connections) >= 500  # the slow ones were all open meanwhile
    finally:
        for s in slow:
            s.close()

    # A head that keeps trickling in is still answered 408 and closed once the timeout (a
    # bound on the whole head, not on a pause) has passed. (6 s: opening 500 connections
    # took over 2 s on a busy CI machine, and the trickle must start before the timeout.)
    timeout = 6.0
    gw = serve(header_timeout_seconds=timeout)
    url = url_of(gw)
    start = time.monotonic()  # before any connection: the server's clocks start later
    slow = []
    try:
        for _ in range(500):  # its first byte at once: a silent connection gets no answer
            slow.append(connect(url))
            slow[-1].send(head[:1])
        sent = 1
        # Send only while the timeout cannot have passed for any of them (their clocks
        # started after ``start``; 1.5 s to spare): a byte that arrives after the server
        # closed would reset the connection before its 408 is read.
        while time.monotonic() - start < timeout - 1.5 and sent < 10:
            time.sleep(0.1)
            for s in slow:
                s.send(head[sent : sent + 1])
            sent += 1
        assert sent >= 2, "no byte trickled in before the timeout"
        for s in slow:
            s.settimeout(timeout + 30)
            reader = Reader(s)
            status, _, payload = reader.response()
            assert status == 408
            assert "MODELYARD_HEADER_TIMEOUT_SECONDS" in orjson.loads(payload)["detail"]
            assert reader.closed()
        assert time.monotonic() - start >= timeout - TIMER_SLACK  # not before the timeout
    finally:
        for s in slow:
            s.close()
    assert metric(url, "modelyard_http_rejected_total", reason="header_timeout") == 500
    assert httpx.post(f"{url}{INVOCATIONS}", content=body(2.0), headers=JSON).status_code == 200


def test_a_silent_connection_is_closed_after_the_header_timeout_without_an_answer(
    serve: Callable[..., GatewayServer],
) -> None:
    url = url_of(serve(header_timeout_seconds=0.5))
    with connect(url) as s:
        assert s.recv(1024) == b""  # closed by the server, no answer (within the 10 s timeout)


def test_a_slow_head_behind_an_answer_in_progress_lets_that_answer_out_then_closes(
    serve: Callable[..., GatewayServer],
) -> None:
    url = url_of(serve(header_timeout_seconds=0.3))
    assert httpx.post(f"{url}{INVOCATIONS}", content=body(1.0, 0.05), headers=JSON).is_success
    with connect(url) as s:  # a 1 s prediction, then the start of a head that never ends
        s.sendall(request(body(2.0, 1.0), path=INVOCATIONS) + b"POST /endpoints/sle")
        reader = Reader(s)
        status, headers, payload = reader.response()
        assert status == 200 and orjson.loads(payload)["predictions"] == [4.0]
        assert headers["connection"] == "close"
        assert reader.closed()
    assert metric(url, "modelyard_http_rejected_total", reason="header_timeout") == 1


def test_a_head_over_the_limit_gets_431_and_a_head_within_it_is_served(
    serve: Callable[..., GatewayServer],
) -> None:
    limit = 4096
    url = url_of(serve(max_header_bytes=limit))
    within = f"x-pad: {'a' * 3000}\r\n"
    over = f"x-pad: {'a' * 5000}\r\n"
    with connect(url) as s:
        reader = Reader(s)
        s.sendall(request(body(1.0), path=INVOCATIONS, extra=within))
        assert reader.response()[0] == 200
        # pipelined: the second head starts behind the first's body, in the same read
        s.sendall(request(body(2.0), path=INVOCATIONS) + request(body(3.0), extra=within))
        assert reader.response()[0] == 200 and reader.response()[0] == 200
        s.sendall(request(body(4.0), path=INVOCATIONS, extra=over))
        answer = reader.response()
        assert answer[0] == 431 and answer[1]["connection"] == "close"
        assert "MODELYARD_MAX_HEADER_BYTES" in problem_of(answer)["detail"]
        assert reader.closed()
    with connect(url) as s:  # a head that never ends is refused as it grows, not at its end
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nx-pad: ")
        status = None
        for _ in range(20):
            try:
                s.sendall(b"a" * 1000)
            except OSError:  # closed by the server already
                break
            time.sleep(0.02)
        status = Reader(s).response()[0]
        assert status == 431
    assert metric(url, "modelyard_http_rejected_total", reason="header_too_large") == 2


@pytest.mark.parametrize("path", [INVOCATIONS, f"{INVOCATIONS}?via=asgi"])
def test_a_stalled_body_gets_408_and_a_slow_one_that_keeps_coming_is_served(
    serve: Callable[..., GatewayServer], path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The body timeout is a pause between reads, on the fast path and through ASGI."""
    paths = spy_on_paths(monkeypatch)
    timeout, pause = 2.0, 0.3  # a pause far under the timeout, even on a loaded machine
    url = url_of(serve(body_timeout_seconds=timeout))
    payload = body(5.0)
    start = time.monotonic()  # before the connection: the server's clock starts later
    with connect(url) as s:
        s.settimeout(timeout + 20)
        s.sendall(request(payload, path=path)[: -len(payload) + 5])  # then a stall
        reader = Reader(s)
        answer = reader.response()  # after the timeout
        assert time.monotonic() - start >= timeout - TIMER_SLACK
        assert answer[0] == 408
        assert "MODELYARD_BODY_TIMEOUT_SECONDS" in problem_of(answer)["detail"]
        assert reader.closed()
    with connect(url) as s:  # short pauses, longer than the timeout in all, never at once
        whole = request(payload, path=path)
        head, rest = whole[: -len(payload)], payload
        s.sendall(head)
        pieces = 10  # 10 pauses of 0.3 s: 3 s in all, 1.5 times the timeout
        chunks = [
            rest[len(rest) * i // pieces : len(rest) * (i + 1) // pieces] for i in range(pieces)
        ]
        assert all(chunks) and pieces * pause >= 1.5 * timeout
        for chunk in chunks:
            time.sleep(pause)
            s.sendall(chunk)
        status, _, answer_body = Reader(s).response()
        assert status == 200 and orjson.loads(answer_body)["predictions"] == [10.0]
    assert set(paths) == {"asgi" if "?" in path else "direct"}
    assert metric(url, "modelyard_http_rejected_total", reason="body_timeout") == 1


def test_connections_beyond_the_limit_get_503_and_the_fast_path_stays_on(
    serve: Callable[..., GatewayServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = spy_on_paths(monkeypatch)
    gw = serve(max_connections=3)
    url = url_of(gw)
    assert gw.server is not None
    assert fast_path_off(gw.server.server.config) is None
    held = [connect(url) for _ in range(3)]
    try:
        for i, s in enumerate(held):  # keep-alive: each stays open after its answer
            s.sendall(request(body(float(i)), path=INVOCATIONS))
            assert Reader(s).response()[0] == 200
        with connect(url) as extra:
            extra.sendall(request(body(1.0), path=INVOCATIONS))
            reader = Reader(extra)
            answer = reader.response()
            assert answer[0] == 503 and answer[1]["retry-after"] == "1"
            assert "MODELYARD_MAX_CONNECTIONS" in problem_of(answer)["detail"]
            assert reader.closed()
        held.pop().close()
        state = gw.server.server.server_state
        deadline = time.monotonic() + 10
        while len(state.connections) > 2:  # the server has seen the close
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with connect(url) as again:
            again.sendall(request(body(2.0), path=INVOCATIONS))
            assert Reader(again).response()[0] == 200
    finally:
        for s in held:
            s.close()
    assert paths == ["direct"] * 4
    assert metric(url, "modelyard_http_rejected_total", reason="connection_limit") == 1


def test_uvicorns_concurrency_limit_keeps_the_fast_path(
    serve: Callable[..., GatewayServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = spy_on_paths(monkeypatch)
    gw = serve(uvicorn={"limit_concurrency": 5})
    assert gw.server is not None
    assert fast_path_off(gw.server.server.config) is None
    answer = httpx.post(f"{url_of(gw)}{INVOCATIONS}", content=body(1.0), headers=JSON)
    assert answer.status_code == 200 and paths == ["direct"]


def test_the_control_plane_has_the_same_limits(workspace: Workspace) -> None:
    from modelyard.api.app import create_app

    settings = workspace.settings.model_copy(update={"header_timeout_seconds": 0.5})
    server = LiveServer(
        create_app(workspace=workspace), http=LimitedHttpProtocol.for_settings(settings)
    )
    try:
        with connect(server.url) as s:
            s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\n")
            reader = Reader(s)
            answer = reader.response()
            assert answer[0] == 408 and problem_of(answer)["status"] == 408
            assert reader.closed()
        assert httpx.get(f"{server.url}/api/v1/health").status_code == 200
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["serve", "server"])
def test_modelyard_serve_and_server_take_the_limits_from_the_environment(
    tmp_path: Path, command: str
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {
        **os.environ,
        "MODELYARD_HOME": str(tmp_path / "home"),
        "MODELYARD_HEADER_TIMEOUT_SECONDS": "0.5",
        "MODELYARD_MAX_HEADER_BYTES": "2048",
    }
    argv = [sys.executable, "-m", "modelyard", command, "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(argv, env=env)
    url = f"http://127.0.0.1:{port}"
    health = "/v2/health/live" if command == "serve" else "/api/v1/health"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, f"{command} did not start"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}{health}").status_code == 200:
                    break
            time.sleep(0.1)
        with connect(url) as s:
            s.sendall(f"GET {health} HTTP/1.1\r\n".encode())
            assert Reader(s).response()[0] == 408
        with connect(url) as s:
            s.sendall(f"GET {health} HTTP/1.1\r\nx-pad: {'a' * 3000}\r\n\r\n".encode())
            assert Reader(s).response()[0] == 431
    finally:
        proc.terminate()
        proc.wait(30)
