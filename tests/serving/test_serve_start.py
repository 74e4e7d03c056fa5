"""`modelyard serve` with many endpoints: it listens before every model is loaded, each
endpoint becomes ready on its own, a request to one still loading waits for it (or gets a 503
with Retry-After), never a 404, and /v2/health/ready says 200 only once all are loaded.

The models are pyfunc models that take ``LOAD_SECONDS`` to load (``load_context`` sleeps), so
loading every endpoint two at a time takes a known least time; the assertions rest on that
lower bound, never on how fast anything answers.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import httpx
import numpy as np
import pandas as pd
import pytest
from tests.serve_process import free_port

from modelyard.client import Client
from modelyard.config import Settings
from modelyard.formats import PythonModel

pytestmark = pytest.mark.slow

ENDPOINTS = 30
LOAD_SECONDS = 0.5  # per endpoint; two load at once: about 7.5 s to load them all
BODY = {"dataframe_split": {"columns": ["x"], "data": [[21.0]]}}


class SlowToLoad(PythonModel):
    """Answers ``x * factor``, after a load that takes ``LOAD_SECONDS``."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def load_context(self, artifacts: dict[str, Path]) -> None:
        time.sleep(LOAD_SECONDS)

    def predict(self, inputs):  # type: ignore[no-untyped-def]
        return np.asarray(inputs["x"], dtype=float) * self.factor


def _register(home: Path, count: int) -> None:
    """Endpoints e0..e{count-1}, each on its own model mN@champion (factor N + 1)."""
    c = Client(str(home), settings=Settings(home=home))
    example = pd.DataFrame({"x": [1.0, 2.0]})
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the server cannot import tests
    try:
        for i in range(count):
            c.log_model(SlowToLoad(i + 1), f"m{i}", input_example=example, alias="champion")
            c.endpoints.create(f"e{i}", f"models:/m{i}@champion")
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        c.close()


@contextlib.contextmanager
def _serving(home: Path, workers: int = 1) -> Iterator[str]:
    """`modelyard serve --trust-pickled` on ``home``, yielded as soon as it answers at all
    (/v2/health/live), not once it is ready."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MODELYARD_HOME": str(home)}
    command = [sys.executable, "-m", "modelyard", "serve", "--port", str(port)]
    with (home / "serve.log").open("ab") as log:
        proc = subprocess.Popen(
            [*command, "--workers", str(workers), "--trust-pickled"], env=env, stderr=log
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/v2/health/live").status_code == 200:
                    break
            assert proc.poll() is None, "modelyard serve exited early (see serve.log)"
            assert time.monotonic() < deadline, "modelyard serve did not listen"
            time.sleep(0.02)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for(condition, what: str, seconds: float = 120):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not (found := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return found


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("many") / "home"
    _register(home, ENDPOINTS)
    return home


def test_endpoints_become_ready_one_by_one_and_requests_wait_for_theirs(many: Path) -> None:
    last, other = f"e{ENDPOINTS - 1}", f"e{ENDPOINTS - 2}"
    with _serving(many) as url, httpx.Client(base_url=url, timeout=60) as http:
        # Listening, with about 7.5 s of loading ahead: not ready, and it says what loads.
        ready = http.get("/v2/health/ready")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        loading = ready.json()["not_ready"]
        assert loading.get(last) == "still loading its models", loading
        # One endpoint's readiness: 503, still loading, with Retry-After (not a 404).
        r = http.get(f"/v2/models/{other}/ready")
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        assert "still loading" in r.json()["detail"]

        # A request that cannot wait (1 ms) for its endpoint's load: 503, try again later.
        r = http.post(
            f"/endpoints/{other}/invocations", json=BODY, headers={"x-modelyard-timeout-ms": "1"}
        )
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        assert "still loading" in r.json()["detail"] and r.json()["endpoint"] == other
        # One that can: the last endpoint in line loads now, out of turn, and answers.
        r = http.post(f"/endpoints/{last}/invocations", json=BODY)
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": [21.0 * ENDPOINTS]}
        assert r.headers["x-modelyard-version"] == f"m{ENDPOINTS - 1}/1"
        assert http.get(f"/v2/models/{last}/ready").status_code == 200
        assert http.get("/v2/health/ready").status_code == 503  # the others still load

        # Every endpoint, asked from several threads while they load: answered, or (only when
        # a request allows itself 1 ms) 503: still loading, with Retry-After, or not answered
        # within 1 ms; never a 404 or a 500.
        answers: list[tuple[str, int, str | None, str]] = []

        def ask(names: list[str]) -> None:
            with httpx.Client(base_url=url, timeout=60) as c:
                for name in names:
                    r = c.post(f"/v2/models/{name}/infer", json=_oip(), headers=_short(name))
                    detail = r.json().get("detail", "") if r.status_code != 200 else ""
                    answers.append((name, r.status_code, r.headers.get("retry-after"), detail))

        names = [f"e{i}" for i in range(ENDPOINTS)]
        threads = [threading.Thread(target=ask, args=(names[i::3],)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(answers) == ENDPOINTS
        assert {code for _, code, _, _ in answers} <= {200, 503}, answers
        assert all(code == 200 for name, code, _, _ in answers if not _short(name)), answers
        for _, code, after, detail in answers:
            if code == 503 and "still loading" in detail:
                assert after == "1", answers
            elif code == 503:  # its 1 ms ran out, or the batcher foresaw it would
                assert "did not answer within 1 ms" in detail or "1 ms timeout" in detail, answers

        # Ready means every endpoint is: once it says 200, each one answers.
        _wait_for(lambda: http.get("/v2/health/ready").status_code == 200, "never ready")
        assert http.get("/v2/health/ready").json() == {"ready": True, "not_ready": {}}
        for i, name in enumerate(names):
            assert http.get(f"/v2/models/{name}/ready").status_code == 200, name
            r = http.post(f"/endpoints/{name}/invocations", json=BODY)
            assert r.status_code == 200 and r.json() == {"predictions": [21.0 * (i + 1)]}
        metrics = http.get("/metrics").text
        assert f'modelyard_endpoint_ready{{endpoint="{last}"}} 1.0' in metrics
        assert 'modelyard_endpoint_ready{endpoint="e0"} 0.0' not in metrics


def test_two_workers_answer_every_endpoint_while_they_load(many: Path) -> None:
    """With two workers (the default here), each loading on its own, no request at start
    is refused for want of an endpoint."""
    with _serving(many, workers=2) as url:
        codes: list[int] = []

        def ask(names: list[str]) -> None:
            for name in names:  # a connection each: the kernel spreads them across workers
                codes.append(
                    httpx.post(f"{url}/endpoints/{name}/invocations", json=BODY).status_code
                )

        names = [f"e{i}" for i in reversed(range(ENDPOINTS))]
        threads = [threading.Thread(target=ask, args=(names[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert codes == [200] * ENDPOINTS


def test_a_changed_endpoint_answers_from_its_old_version_until_the_new_one_is_loaded(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    _register(home, 1)
    with _serving(home) as url, httpx.Client(base_url=url, timeout=60) as http:
        _wait_for(lambda: http.get("/v2/health/ready").status_code == 200, "never ready")
        c = Client(str(home), settings=Settings(home=home))
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        try:
            example = pd.DataFrame({"x": [1.0, 2.0]})
            c.log_model(SlowToLoad(100), "m0", input_example=example, alias="champion")
        finally:
            cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
            c.close()
        # The new version takes LOAD_SECONDS to load: the old one answers meanwhile.
        seen = []
        while not seen or seen[-1] != "m0/2":
            r = http.post("/endpoints/e0/invocations", json=BODY)
            assert r.status_code == 200, r.text
            seen.append(r.headers["x-modelyard-version"])
            assert len(seen) < 10_000, "the new version was never served"
        assert seen[0] == "m0/1" and seen == sorted(seen)  # never back to the old one
        assert r.json() == {"predictions": [2100.0]}


def _oip() -> dict[str, object]:
    return {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [21.0]}]}


def _short(name: str) -> dict[str, str]:
    """Every third endpoint's request waits at most 1 ms for its load."""
    return {"x-modelyard-timeout-ms": "1"} if int(name[1:]) % 3 == 0 else {}
