"""`modelyard serve` as a real process: several workers, supervised; graceful SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import httpx
import pandas as pd
import pytest

from modelyard.client import Client
from modelyard.config import Settings
from modelyard.monitoring import PredictionLog
from modelyard.workspace import Workspace

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path, models, frame):  # type: ignore[no-untyped-def]
    X, _ = frame
    home = tmp_path / "home"
    c = Client(str(home), settings=Settings(home=home))
    c.log_model(models["lr"], "fraud", input_example=X.head(5), alias="champion")
    c.endpoints.create("fraud", "models:/fraud@champion")
    c.close()
    port = _free_port()

    def start(workers: int, stderr: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
        env = {**os.environ, "MODELYARD_HOME": str(home)}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelyard",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=env,
            stderr=stderr,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
            assert proc.poll() is None, "modelyard serve exited early"
            time.sleep(0.1)
        proc.kill()
        raise AssertionError("modelyard serve did not become ready")

    procs: list[subprocess.Popen[bytes]] = []

    def started(workers: int, stderr: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
        procs.append(start(workers, stderr))
        return procs[-1]

    yield home, f"http://127.0.0.1:{port}", started
    for p in procs:
        if p.poll() is None:
            p.kill()  # its workers get SIGTERM from the kernel (PR_SET_PDEATHSIG)
            p.wait(timeout=10)


def _body(X: pd.DataFrame) -> dict:
    return {"dataframe_split": {"columns": list(X.columns), "data": X.head(1).to_numpy().tolist()}}


def test_two_workers_both_answer(served, frame) -> None:  # type: ignore[no-untyped-def]
    X, _ = frame
    _, url, start = served
    proc = start(2)
    workers = set()
    # New connections are spread across the sockets of the workers that are ready (a worker
    # listens once its models are loaded, so the second may join a little later).
    deadline = time.monotonic() + 60
    while len(workers) < 2 and time.monotonic() < deadline:
        with httpx.Client() as c:
            r = c.post(f"{url}/endpoints/fraud/invocations", json=_body(X))
            assert r.status_code == 200
            workers.add(r.headers["x-modelyard-worker"])
    assert len(workers) == 2
    # the control plane is served by the same processes (built once the data plane is up:
    # a request may wait for it a few seconds)
    assert httpx.get(f"{url}/api/v1/endpoints", timeout=60).json()[0]["name"] == "fraud"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "supervised"])
def test_sigterm_drains_and_flushes_the_prediction_log(served, frame, workers: int) -> None:  # type: ignore[no-untyped-def]
    X, _ = frame
    home, url, start = served
    proc = start(workers)
    answered: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post(f"{url}/endpoints/fraud/invocations", json=_body(X))
                except httpx.TransportError as exc:  # refused after shutdown: never accepted
                    errors.append(type(exc).__name__)
                    return
                if r.status_code == 200:
                    answered.append(1)
                else:
                    errors.append(f"HTTP {r.status_code}")
                    return

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    while len(answered) < 50:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    # uvicorn re-raises SIGTERM once its graceful shutdown is done; the log below shows
    # whether in-flight requests were drained and the prediction log flushed.
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not [e for e in errors if e.startswith("HTTP")]  # no accepted request failed
    ws = Workspace.open(Settings(home=home))
    try:
        logged = PredictionLog(ws).read("fraud").num_rows
    finally:
        ws.close()
    assert logged == len(answered)  # every answered prediction reached the log


def test_client_that_disconnects_mid_request_does_not_hurt(served, frame) -> None:  # type: ignore[no-untyped-def]
    X, _ = frame
    _, url, start = served
    proc = start(1)
    port = int(url.rsplit(":", 1)[1])
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(
                b"POST /endpoints/fraud/invocations HTTP/1.1\r\nHost: x\r\n"
                b'content-type: application/json\r\ncontent-length: 1000\r\n\r\n{"dataf'
            )
    assert httpx.post(f"{url}/endpoints/fraud/invocations", json=_body(X)).status_code == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)


def test_workers_exit_when_the_parent_is_killed(served) -> None:  # type: ignore[no-untyped-def]
    _, _url, start = served
    proc = start(2)
    children = [
        int(pid)
        for pid in subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
        ).stdout.split()
    ]
    assert len(children) == 3  # two workers and the monitor's process
    proc.kill()  # SIGKILL: the parent cannot forward anything
    proc.wait(timeout=10)
    deadline = time.monotonic() + 30
    while any(os.path.exists(f"/proc/{pid}") and _alive(pid) for pid in children):
        assert time.monotonic() < deadline, "gateway workers outlived their parent"
        time.sleep(0.1)


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def _workers_answering(
    url: str, X: pd.DataFrame, count: int, *, besides: frozenset[str] = frozenset()
) -> set[str]:
    """The pids of ``count`` workers that answer predictions (not those in ``besides``)."""
    workers: set[str] = set()
    deadline = time.monotonic() + 60
    while len(workers) < count:
        assert time.monotonic() < deadline, f"only workers {workers} answered"
        try:  # a new connection each time: the kernel spreads them across the workers
            r = httpx.post(f"{url}/endpoints/fraud/invocations", json=_body(X))
        except httpx.TransportError:  # to a worker just killed
            continue
        assert r.status_code == 200, r.text
        if r.headers["x-modelyard-worker"] not in besides:
            workers.add(r.headers["x-modelyard-worker"])
    return workers


def test_a_killed_worker_is_replaced_logged_and_counted(served, frame, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    X, _ = frame
    _, url, start = served
    log = tmp_path / "serve.err"
    with log.open("wb") as err:
        proc = start(2, stderr=err)
    first = _workers_answering(url, X, 2)
    victim = min(first)
    os.kill(int(victim), signal.SIGKILL)
    # The other worker answers meanwhile; a replacement joins it.
    again = _workers_answering(url, X, 2, besides=frozenset({victim}))
    assert first - {victim} <= again
    assert int((again - first).pop()) in _children(proc.pid)
    lines = [line for line in log.read_text().splitlines() if f"(pid {victim})" in line]
    assert len(lines) == 1 and "WARNING" in lines[0], log.read_text()
    assert "was killed by SIGKILL" in lines[0] and "starting a new one in 0.5 s" in lines[0]
    # Every worker reports the supervisor's count (the parent serves no HTTP).
    for _ in range(6):
        metrics = httpx.get(f"{url}/metrics").text
        assert "\nmodelyard_worker_restarts_total 1.0\n" in metrics
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=90) == 0


def test_a_worker_that_does_not_stop_is_killed_after_the_grace_period(  # type: ignore[no-untyped-def]
    served, tmp_path: Path, monkeypatch
) -> None:
    _, _url, start = served
    monkeypatch.setenv("MODELYARD_SHUTDOWN_GRACE_SECONDS", "1")
    # the two workers only: no loops process (the monitor and the rollout controller off)
    monkeypatch.setenv("MODELYARD_MONITOR_INTERVAL_SECONDS", "0")
    monkeypatch.setenv("MODELYARD_ROLLOUT_INTERVAL_SECONDS", "0")
    log = tmp_path / "serve.err"
    with log.open("wb") as err:
        proc = start(2, stderr=err)
    stuck, other = _children(proc.pid)
    os.kill(stuck, signal.SIGSTOP)  # cannot act on SIGTERM (SIGKILL still ends it)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 1
    assert f"(pid {stuck}) did not stop within 1 s of SIGTERM; killing it" in log.read_text()
    assert not _alive(stuck) and not _alive(other)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_serve_runs_the_monitor_and_trigger_loops(served, frame, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from modelyard.store.tables import MonitorLeaseRow

    X, _ = frame
    home, url, start = served
    monkeypatch.setenv("MODELYARD_MONITOR_INTERVAL_SECONDS", "0.5")
    proc = start(2)
    workers = _workers_answering(url, X, 2)
    ws = Workspace.open(Settings(home=home))
    try:
        httpx.post(f"{url}/endpoints/fraud/invocations", json={"inputs": [[0.0] * 6]})
        deadline = time.monotonic() + 30
        names: set[str] = set()
        while time.monotonic() < deadline and names != {"monitor", "triggers"}:
            with ws.store.read() as s:
                names = {r.name for r in s.query(MonitorLeaseRow)}
            time.sleep(0.2)
        assert names == {"monitor", "triggers"}
        with ws.store.read() as s:
            owners = {r.owner for r in s.query(MonitorLeaseRow)}
        # A process of their own runs them, at a lower priority: not a gateway worker, and
        # not the parent (which stays single-threaded, to fork replacement workers safely).
        assert len(owners) == 1
        host, pid = owners.pop().rsplit(":", 1)
        assert host == socket.gethostname()
        assert pid not in workers and _parent_of(int(pid)) == proc.pid
        assert os.getpriority(os.PRIO_PROCESS, int(pid)) == min(
            19, os.getpriority(os.PRIO_PROCESS, proc.pid) + 10
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        with ws.store.read() as s:  # given up at shutdown: another server takes over at once
            assert s.query(MonitorLeaseRow).count() == 0
    finally:
        ws.close()


@pytest.mark.parametrize("command", ["serve", "server"])
def test_a_second_server_on_a_held_port_refuses_to_start(served, command: str) -> None:  # type: ignore[no-untyped-def]
    home, url, start = served
    first = start(1)
    port = url.rsplit(":", 1)[1]
    second = subprocess.run(
        [sys.executable, "-m", "modelyard", command, "--port", port, "--workers", "2"],
        env={**os.environ, "MODELYARD_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 4, second.stderr
    assert f"127.0.0.1:{port} is already in use" in second.stderr
    assert "--port" in second.stderr
    assert "Traceback" not in second.stderr
    # The first still owns every connection.
    codes = {httpx.get(f"{url}/v2/health/ready").status_code for _ in range(12)}
    assert codes == {200} and first.poll() is None


def test_serve_loads_a_pickled_model_only_with_trust_pickled(tmp_path: Path) -> None:
    import cloudpickle

    from modelyard.formats import PythonModel

    class Doubler(PythonModel):
        def predict(self, inputs):  # type: ignore[no-untyped-def]
            return pd.DataFrame(inputs)["x"].to_numpy() * 2

    home = tmp_path / "home"
    c = Client(str(home), settings=Settings(home=home))
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the server cannot import tests
    try:
        c.log_model(Doubler(), "double", input_example=pd.DataFrame({"x": [1.0, 2.0]}))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    c.endpoints.create("double", "models:/double/1")
    c.close()
    body = {"dataframe_split": {"columns": ["x"], "data": [[21.0]]}}

    def answer(*flags: str) -> httpx.Response:
        port = _free_port()
        env = {**os.environ, "MODELYARD_HOME": str(home)}
        env.pop("MODELYARD_TRUST_PICKLED_MODELS", None)
        cmd = [sys.executable, "-m", "modelyard", "serve", "--port", str(port), "--workers", "1"]
        proc = subprocess.Popen([*cmd, *flags], env=env)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.TransportError):
                    httpx.get(f"http://127.0.0.1:{port}/v2/health/live")
                    return httpx.post(
                        f"http://127.0.0.1:{port}/endpoints/double/invocations", json=body
                    )
                assert proc.poll() is None, "modelyard serve exited early"
                time.sleep(0.1)
            raise AssertionError("modelyard serve did not start")
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    refused = answer()
    assert refused.status_code == 503  # that endpoint is not ready; the gateway runs on
    assert "--trust-pickled" in refused.json()["detail"], refused.text
    trusted = answer("--trust-pickled")
    assert trusted.status_code == 200, trusted.text
    assert trusted.json()["predictions"] == [42.0]
