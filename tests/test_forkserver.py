"""ForkServer: calls run in fresh children of a single-threaded template, and every way a call
can go wrong comes back as ForkedCallFailed. Each scenario runs in a fresh interpreter: a
fork server must be made while its process has a single thread, which pytest's need not."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PRELUDE = """
import os, signal, threading, time
from modelyard.forkserver import ForkServer, ForkedCallFailed

def pid():
    return os.getpid()

def parent():
    return os.getppid()

def fail(text):
    raise ValueError(text)

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def sleep(seconds):
    time.sleep(seconds)
    return seconds

def grow(mib):
    block = bytearray(mib * 1024 * 1024)  # touched: resident
    return len(block)

def alive(p):
    try:
        with open(f"/proc/{p}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False

def rss_mib(p):
    with open(f"/proc/{p}/status") as f:
        line = next(l for l in f if l.startswith("VmRSS"))
    return int(line.split()[1]) // 1024
"""


def run(code: str) -> None:
    script = PRELUDE + textwrap.dedent(code)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_each_call_runs_in_a_fresh_child_of_the_template() -> None:
    run(
        """
        server = ForkServer()
        first, second = server.call(pid, timeout=10), server.call(pid, timeout=10)
        assert len({os.getpid(), server.pid, first, second}) == 4
        assert server.call(parent, timeout=10) == server.pid
        assert server.call(sleep, 0.01, timeout=10) == 0.01  # arguments and results travel
        server.close()
        """
    )


def test_what_a_child_allocates_goes_away_with_it() -> None:
    run(
        """
        server = ForkServer()
        before = rss_mib(os.getpid()), rss_mib(server.pid)
        assert server.call(grow, 300, timeout=30) == 300 * 1024 * 1024
        after = rss_mib(os.getpid()), rss_mib(server.pid)
        # 300 MiB were resident in the child; neither this process nor the template grew
        # (10 MiB of slack for the pickled call and the allocator)
        assert after[0] < before[0] + 10 and after[1] < before[1] + 10, (before, after)
        server.close()
        """
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("server.call(fail, 'no window today', timeout=10)", "ValueError: no window today"),
        ("server.call(die, timeout=10)", "killed by SIGKILL"),
        ("server.call(sleep, 30, timeout=0.5)", "took more than 0.5 s and was killed"),
    ],
)
def test_a_failed_call_raises_and_the_next_one_works(call: str, message: str) -> None:
    run(
        f"""
        server = ForkServer()
        try:
            {call}
        except ForkedCallFailed as exc:
            assert {message!r} in str(exc), str(exc)
        else:
            raise AssertionError("the call did not fail")
        assert server.alive
        assert server.call(sleep, 0, timeout=10) == 0
        server.close()
        """
    )


def test_it_refuses_to_start_beside_other_threads() -> None:
    run(
        """
        stop = threading.Event()
        threading.Thread(target=stop.wait).start()
        try:
            ForkServer()
        except RuntimeError as exc:
            assert "single thread" in str(exc)
        else:
            raise AssertionError("made beside another thread")
        finally:
            stop.set()
        """
    )


def test_close_stops_the_template_and_a_call_under_way() -> None:
    run(
        """
        server = ForkServer()
        failed = []

        def call():
            try:
                server.call(sleep, 30, timeout=60)
            except ForkedCallFailed as exc:
                failed.append(str(exc))

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.5)
        children = open(f"/proc/{server.pid}/task/{server.pid}/children").read()
        (child,) = [int(p) for p in children.split()]
        server.close()
        caller.join(10)
        assert failed and not caller.is_alive()
        assert not server.alive and server.closed
        assert not os.path.exists(f"/proc/{server.pid}")  # reaped
        deadline = time.monotonic() + 10
        while alive(child):  # the child follows its template
            assert time.monotonic() < deadline, "the pass's child outlived its template"
            time.sleep(0.05)
        """
    )


def test_a_forked_monitor_pass_profiles_the_log_and_alerts_for_its_process(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The monitor's pass in a child: the windows are profiled and the rule fires, the lease
    is held as the calling process, its alert callback runs, and neither pandas nor scipy
    (which profiling imports) is loaded in the caller."""
    setup = f"""
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from modelyard.client import Client
from modelyard.config import Settings
from modelyard.monitoring.predlog import PredictionLog
from modelyard.workspace import Workspace

home = Path({str(tmp_path)!r})
X = pd.DataFrame({{"x": np.arange(20.0)}})
c = Client(str(home), settings=Settings(home=home))
c.log_model(LogisticRegression().fit(X, X.x > 9), "m", input_example=X.head(3))
c.endpoints.create("e", "models:/m/1")
c.close()
ws = Workspace.open(Settings(home=home))
ws.monitoring.alerts.create_rule(
    dict(name="busy", endpoint="e", kind="volume", metric="requests", op=">",
         threshold=0, window=300, min_samples=0)
)
log = PredictionLog(ws)
log.start()
start = datetime.now(UTC) - timedelta(minutes=20)
for i in range(200):
    log.log(endpoint="e", model="m", version=1, request_id=f"r{{i}}",
            inputs={{"x": np.array([float(i)])}}, outputs={{"predictions": np.array([1])}},
            rows=1, latency_ms=1.0, at=start + timedelta(seconds=3 * i))
log.close()
ws.close()
"""
    run_pass = f"""
import sys
from pathlib import Path

from modelyard.config import Settings
from modelyard.forkserver import ForkServer
from modelyard.monitoring.loop import ForkedMonitor, MonitorLoop
from modelyard.store.tables import MonitorLeaseRow
from modelyard.workspace import Workspace

server = ForkServer()  # first: this process has a single thread yet
ws = Workspace.open(Settings(home=Path({str(tmp_path)!r})))
calls = []
loop = MonitorLoop(ForkedMonitor(ws, server, on_alerts=lambda: calls.append(1)), 60)
loop.run(max_passes=1)
result = loop.last
assert result is not None and not result.skipped and not result.errors, result
assert result.windows_closed > 0 and result.alerts_changed > 0, result
assert calls == [1]
assert ws.monitoring.alerts.list_alerts("e"), "no alert stored"
with ws.store.read() as s:
    assert s.query(MonitorLeaseRow).count() == 0  # released by the loop: held as this process
server.close()
ws.close()
print(",".join(m for m in ("pandas", "scipy") if m in sys.modules))
"""
    for code in (setup, run_pass):
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
