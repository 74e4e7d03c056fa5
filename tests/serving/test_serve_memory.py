"""What `modelyard serve`'s processes load: a gateway worker serving an ONNX model needs
neither pandas, scikit-learn nor the control plane until asked; the loops process does not
keep what a monitor pass loads (bench/serving/memory.py measures how much that is)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select
from tests.serve_process import ServeProcess

from modelyard.client import Client
from modelyard.config import Settings
from modelyard.monitoring import PredictionLog
from modelyard.store.tables import PredictionSegmentRow, WindowProfileRow
from modelyard.workspace import Workspace

pytestmark = pytest.mark.slow

#: Shared objects whose mapping shows a library is loaded (pure-Python FastAPI has none: its
#: gauge tells instead).
PANDAS, SKLEARN, SCIPY, ONNXRUNTIME = "/pandas/_libs/", "/sklearn/", "/scipy/", "/onnxruntime/"


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _body(X: pd.DataFrame, start: int, rows: int) -> dict:
    part = X.iloc[start : start + rows]
    return {"dataframe_split": {"columns": list(X.columns), "data": part.to_numpy().tolist()}}


def _built_gauges(url: str, scrapes: int = 12) -> set[str]:
    """The workers' ``modelyard_control_plane_built`` values seen over a few scrapes (a new
    connection each: the kernel picks the worker)."""
    seen = set()
    for _ in range(scrapes):
        for line in httpx.get(f"{url}/metrics").text.splitlines():
            if line.startswith("modelyard_control_plane_built "):
                seen.add(line.split()[1])
    return seen


def _segments(ws: Workspace) -> int:
    with ws.store.read() as s:
        return int(s.scalar(select(func.count()).select_from(PredictionSegmentRow)) or 0)


def test_an_onnx_gateway_worker_loads_neither_pandas_sklearn_nor_the_control_plane(  # type: ignore[no-untyped-def]
    tmp_path: Path, models, frame
) -> None:
    X, _ = frame
    home = tmp_path / "home"
    c = Client(str(home), settings=Settings(home=home))
    c.log_model(models["lr"], "fraud", input_example=X.head(5), alias="champion")
    c.endpoints.create("fraud", "models:/fraud@champion")
    c.close()
    server = ServeProcess(home, env={"MODELYARD_MONITOR_INTERVAL_SECONDS": "0"})
    server.start(workers=2)
    ws = Workspace.open(Settings(home=home))
    try:
        workers: set[int] = set()
        for i in range(200):  # varied rows, a new connection each: both workers answer
            r = httpx.post(f"{server.url}/endpoints/fraud/invocations", json=_body(X, i, 1 + i % 7))
            assert r.status_code == 200, r.text
            workers.add(int(r.headers["x-modelyard-worker"]))
        assert len(workers) == 2
        assert set(_children(server.proc.pid)) >= workers  # type: ignore[union-attr]
        deadline = time.monotonic() + 30  # the log's writers flush within 5 s
        while _segments(ws) < 2:
            assert time.monotonic() < deadline, "the workers wrote no prediction-log segment"
            time.sleep(0.2)
        for pid in workers:
            maps = _maps(pid)
            assert ONNXRUNTIME in maps  # it served through ONNX Runtime, not scikit-learn
            assert PANDAS not in maps, f"worker {pid} loaded pandas"
            assert SKLEARN not in maps, f"worker {pid} loaded scikit-learn"
        assert _built_gauges(server.url) == {"0.0"}
        # The control plane is built on a worker's first control-plane request, which waits
        # for it and is answered.
        for _ in range(8):
            r = httpx.get(f"{server.url}/api/v1/models/fraud", timeout=60)
            assert r.status_code == 200, r.text
            assert r.json()["name"] == "fraud"
        assert "1.0" in _built_gauges(server.url)
    finally:
        ws.close()
        server.stop()


def _log_past_predictions(home: Path, X: pd.DataFrame, requests: int) -> None:
    """``requests`` predictions of 10 rows each, 40 to 10 minutes ago (their 5-minute windows
    are all closed), as a gateway logs them."""
    ws = Workspace.open(Settings(home=home))
    rng = np.random.default_rng(3)
    start = datetime.now(UTC) - timedelta(minutes=40)
    plog = PredictionLog(ws)
    plog.start()
    try:
        for i in range(requests):
            rows = X.sample(10, random_state=i)
            p = rng.random(10)
            plog.log(
                endpoint="fraud",
                model="fraud",
                version=1,
                request_id=f"past-{i}",
                inputs={c: rows[c].to_numpy() for c in X.columns},
                outputs={
                    "predictions": (p > 0.5).astype(np.int64),
                    "probabilities": np.stack([1 - p, p], axis=1),
                },
                rows=10,
                latency_ms=1.0,
                at=start + timedelta(minutes=30) * i / requests,
            )
    finally:
        plog.close()
        ws.close()


def test_the_loops_process_keeps_nothing_of_a_monitor_pass_that_read_the_log(  # type: ignore[no-untyped-def]
    tmp_path: Path, models, frame
) -> None:
    """A pass that closes windows reads the log with pyarrow and profiles it with pandas and
    scipy; it runs in a child of the loops process, which loads none of them."""
    X, _ = frame
    home = tmp_path / "home"
    c = Client(str(home), settings=Settings(home=home))
    c.log_model(models["lr"], "fraud", input_example=X.head(5), alias="champion")
    c.endpoints.create("fraud", "models:/fraud@champion")
    c.close()
    _log_past_predictions(home, X, 300)
    server = ServeProcess(home, env={"MODELYARD_MONITOR_INTERVAL_SECONDS": "0.5"})
    server.start(workers=2)
    ws = Workspace.open(Settings(home=home))
    try:
        deadline = time.monotonic() + 60
        while True:
            with ws.store.read() as s:
                rows = s.scalar(select(func.sum(WindowProfileRow.rows))) or 0
            if rows >= 3000:  # every logged row is in a closed window's profile
                break
            assert time.monotonic() < deadline, f"the monitor profiled {rows} of 3000 rows"
            time.sleep(0.2)
        parent = server.proc.pid  # type: ignore[union-attr]
        # the loops process: the parent's child that runs at a lower priority
        (loops,) = [
            pid
            for pid in _children(parent)
            if os.getpriority(os.PRIO_PROCESS, pid) > os.getpriority(os.PRIO_PROCESS, parent)
        ]
        for pid in [loops, *_children(loops)]:  # the loops process and its fork server
            maps = _maps(pid)
            assert PANDAS not in maps and SCIPY not in maps, f"process {pid} kept pandas/scipy"
    finally:
        ws.close()
        server.stop()
