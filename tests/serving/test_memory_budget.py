"""`modelyard serve` under MODELYARD_GATEWAY_MEMORY_MB: 50 ONNX endpoints, Zipf traffic.

A real server process (one worker: the budget is per worker, and this process is the
worker) serves 50 endpoints, each on its own version of a random forest served through ONNX
Runtime (about 6 MB once loaded from its ONNX file, 2 MB from ONNX Runtime's own format on a
reload), under a budget that holds a handful of them. A sequential client sends 1,500
requests, the endpoints drawn with Zipf popularity (weight 1/k^1.5, ranks shuffled so that
popularity has nothing to do with load order). Checked:

* every request is answered 200;
* the pool never held more bytes of loaded models than the budget (its peak gauge, as
  measured at each load) and never had to load over it;
* eviction follows use, not load order: the most popular endpoint's model (~40% of the
  requests) is loaded again far less often than a load-order (FIFO) pool would. With K
  models resident and M misses, FIFO evicts every model, the hot one included, once per K
  loads, so the hot model is loaded about M/K times (0.64-1.0 of M/K over 300 simulated runs
  of this traffic, K from 4 to 16); least recently used keeps it (0.02-0.39). The bound is
  half of M/K;
* the worker's RSS stays within its size before any model was loaded (the server starts
  with no endpoint; they are created once it listens) plus the budget plus 128 MiB. The
  margin covers what the models' runtime adds once, whatever the budget: onnxruntime's
  shared library and its one-time set-up (about 40 MB), the allocator's free memory not yet
  handed back, the prediction log's buffers, and the endpoints' own state (metrics, plans):
  about 60-90 MB over the budget here. A worker that kept the evicted models (the 50 models
  alone are about 300 MB) or their memory fails it.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier

from modelyard.client import Client
from modelyard.config import Settings
from modelyard.serving.runtime import check_onnx
from modelyard.workspace import Workspace

pytestmark = pytest.mark.slow

ENDPOINTS = 50
BUDGET_MIB = 24
REQUESTS = 1500
ZIPF = 1.5
MARGIN_MIB = 128
MIB = 1024 * 1024
FEATURES = [f"f{i}" for i in range(6)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """A workspace with 50 versions of one forest, each with its ONNX runtime recorded (the
    conversion made once: the versions share their files), and no endpoint yet."""
    home = tmp_path_factory.mktemp("budget") / "home"
    rng = np.random.default_rng(11)
    X = pd.DataFrame(rng.normal(size=(2000, len(FEATURES))), columns=FEATURES)
    y = ((X.f0 + X.f1 - X.f2 + rng.normal(size=len(X))) > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=60, max_depth=10, random_state=0).fit(X, y)
    settings = Settings(home=home)
    c = Client(str(home), settings=settings)
    first = c.log_model(forest, "forest", input_example=X.head(5))
    for _ in range(ENDPOINTS - 1):
        c.register_model(f"models:/forest/{first.version}", "forest")
    c.close()
    ws = Workspace.open(settings)
    runtime = check_onnx(ws, ws.registry.get_version("forest", first.version))
    assert runtime.usable, runtime.report
    for number in range(first.version + 1, first.version + ENDPOINTS):
        ws.registry.record_runtime(
            "forest",
            number,
            "onnx",
            status=runtime.status,
            artifact_digest=runtime.artifact_digest,
            report=runtime.report,
        )
    ws.close()
    return home, list(range(first.version, first.version + ENDPOINTS))


@pytest.fixture
def server(home: tuple[Path, list[int]]) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = _free_port()
    env = {
        **os.environ,
        "MODELYARD_HOME": str(home[0]),
        "MODELYARD_GATEWAY_MEMORY_MB": str(BUDGET_MIB),
    }
    argv = [sys.executable, "-m", "modelyard", "serve", "--port", str(port)]
    argv += ["--workers", "1", "--data-plane-only"]
    proc = subprocess.Popen(argv, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _until(lambda: _get(f"{url}/v2/health/ready") == 200, proc, "did not become ready")
        yield proc, url
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=30).status_code
    except httpx.TransportError:
        return 0


def _until(condition: Any, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if condition():
            return
        assert proc.poll() is None, "modelyard serve exited early"
        time.sleep(0.1)
    raise AssertionError(f"modelyard serve {what} within 120 s")


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


_SAMPLE = re.compile(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", re.M)


def _metrics(text: str, name: str) -> dict[str, float]:
    """Samples of one metric by their labels (as written)."""
    return {
        labels or "": float(value)
        for metric, labels, value in _SAMPLE.findall(text)
        if metric == name
    }


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for the RSS")
def test_a_budget_holds_under_zipf_traffic_over_fifty_endpoints(home, server) -> None:  # type: ignore[no-untyped-def]
    path, versions = home
    proc, url = server
    time.sleep(1.0)  # let the start-up settle (the plan cache, the collector's freeze)
    before_models = _rss(proc.pid)

    ws = Workspace.open(Settings(home=path))
    names = [f"e{i:02d}" for i in range(ENDPOINTS)]
    version_of = dict(zip(names, versions, strict=True))
    for name, number in version_of.items():
        ws.endpoints.create(name, f"models:/forest/{number}")
    ws.close()

    client = httpx.Client(base_url=url, timeout=60)

    def all_ready() -> bool:
        ready = _metrics(client.get("/metrics").text, "modelyard_endpoint_ready")
        return sum(ready.values()) == ENDPOINTS

    _until(all_ready, proc, "did not serve the 50 new endpoints")

    rng = np.random.default_rng(2024)
    ranked = list(rng.permutation(names))  # ranked[k]: popularity rank k + 1
    weights = 1.0 / np.arange(1, ENDPOINTS + 1) ** ZIPF
    picks = rng.choice(ENDPOINTS, size=REQUESTS, p=weights / weights.sum())
    rows = rng.normal(size=(64, len(FEATURES))).round(4).tolist()
    text = client.get("/metrics").text
    loads_before = _metrics(text, "modelyard_model_pool_events_total")['event="loads"']

    peak_rss = _rss(proc.pid)
    failures = []
    for i, k in enumerate(picks):
        body = {"dataframe_split": {"columns": FEATURES, "data": [rows[i % len(rows)]]}}
        r = client.post(f"/endpoints/{ranked[k]}/invocations", json=body)
        if r.status_code != 200:
            failures.append(f"{ranked[k]}: {r.status_code} {r.text[:200]}")
        if i % 25 == 0:
            peak_rss = max(peak_rss, _rss(proc.pid))
    peak_rss = max(peak_rss, _rss(proc.pid))
    text = client.get("/metrics").text
    client.close()

    assert not failures, failures[:5]

    budget = BUDGET_MIB * MIB
    events = _metrics(text, "modelyard_model_pool_events_total")
    assert events['event="over_budget"'] == 0
    assert _metrics(text, "modelyard_model_pool_budget_bytes")[""] == budget
    peak_loaded = _metrics(text, "modelyard_model_pool_peak_bytes")[""]
    assert 0 < peak_loaded <= budget
    sizes = _metrics(text, "modelyard_model_size_bytes")
    assert sizes and all('source="measured"' in labels for labels in sizes)
    assert sum(sizes.values()) <= budget

    # Least recently used by request, not by load: the hot model is rarely loaded again.
    resident = len(sizes)
    misses = events['event="loads"'] - loads_before
    loads = _metrics(text, "modelyard_model_loads_total")
    hot = version_of[ranked[0]]
    hot_loads = next(v for labels, v in loads.items() if f'version="{hot}"' in labels)
    assert resident >= 4, f"the budget should hold several models, it holds {resident}"
    assert misses > 0
    assert hot_loads <= 0.5 * misses / resident, (hot_loads, misses, resident)

    # The worker's memory: the budget, plus what the runtime and the endpoints add once.
    assert peak_rss <= before_models + budget + MARGIN_MIB * MIB, (
        f"RSS {peak_rss / MIB:.0f} MiB; {before_models / MIB:.0f} MiB before any model, "
        f"budget {BUDGET_MIB} MiB, margin {MARGIN_MIB} MiB"
    )
