"""Rollouts through a real `modelyard serve`: real traffic, the server's own controller.

One `serve` process (two gateway workers and its loops process) and a steady stream of
single-row requests from two client threads. Each scenario rolls out a new version of
``fraud`` and waits for the controller's verdict: (a) a canary that fails 20 % of its
requests, (b) one 30 ms slower, (c) one whose answers lean to one class, (d) a good one;
then a restart of `serve` in the middle of a rollout, and a rollout a pipeline's promotion
starts.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard.client import Client
from modelyard.config import Settings
from modelyard.rollouts import Rollout
from modelyard.workspace import Workspace
from tests.rollouts.conftest import passing_report
from tests.serve_process import ServeProcess

pytestmark = pytest.mark.slow

FEATURES = ["f0", "f1", "f2"]
PLAN = {
    "steps": [20, 50, 100],
    "interval_seconds": 2,
    "min_requests": 30,
    "max_inconclusive": 20,
}


def _frame() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(7)
    X = pd.DataFrame(rng.normal(size=(500, len(FEATURES))), columns=FEATURES)
    return X, ((X.f0 + X.f1) > 0).astype(int)


def _models() -> dict[str, object]:
    """The baseline and a canary of each kind. The pyfunc ones are local classes, so
    cloudpickle stores them by value and `serve` needs no test module to load them."""
    from modelyard.formats import PythonModel

    X, y = _frame()
    base = LogisticRegression().fit(X, y)

    class Flaky(PythonModel):
        """Answers like the baseline; fails on every fifth row of the pool the load cycles
        through. Not at random, nor on the input example or the warm-up's rows: those are
        checked before it serves, and a canary that fails them would not even load."""

        def __init__(self, inner: LogisticRegression) -> None:
            self.inner = inner
            self.unlucky = set(X.f0.iloc[5::5].round(9))

        def predict(self, inputs):  # type: ignore[no-untyped-def]
            frame = pd.DataFrame({k: np.asarray(v) for k, v in inputs.items()})
            if frame.f0.round(9).isin(self.unlucky).any():
                raise RuntimeError("flaky canary")
            return self.inner.predict(frame[FEATURES])

    class Slow(Flaky):
        """Answers like the baseline, 30 ms later."""

        def predict(self, inputs):  # type: ignore[no-untyped-def]
            time.sleep(0.03)
            frame = pd.DataFrame({k: np.asarray(v) for k, v in inputs.items()})
            return self.inner.predict(frame[FEATURES])

    class Same(Flaky):
        """The baseline's answers, as a Python model (the shape the bad ones have)."""

        def predict(self, inputs):  # type: ignore[no-untyped-def]
            frame = pd.DataFrame({k: np.asarray(v) for k, v in inputs.items()})
            return self.inner.predict(frame[FEATURES])

    class Leaning(Flaky):
        """Answers class 1 whenever f2 > -1 (84 % of rows): about 9 answers in 10 become 1,
        where the baseline says 1 to fewer than half."""

        def predict(self, inputs):  # type: ignore[no-untyped-def]
            frame = pd.DataFrame({k: np.asarray(v) for k, v in inputs.items()})
            return np.where(frame.f2 > -1.0, 1, self.inner.predict(frame[FEATURES]))

    return {
        "base": Same(base),
        "flaky": Flaky(base),
        "slow": Slow(base),
        "shifted": Leaning(base),
        "good": Same(LogisticRegression(C=0.5).fit(X, y)),
    }


@dataclass
class Load:
    """Two threads sending single rows until stopped; answers counted by version."""

    url: str
    rows: list[dict[str, float]]
    versions: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for i in range(2):
            thread = threading.Thread(target=self._send, args=(i,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _send(self, offset: int) -> None:
        with httpx.Client(timeout=10) as client:
            i = offset
            while not self.stop.is_set():
                row = self.rows[i % len(self.rows)]
                i += 2
                try:
                    r = client.post(
                        f"{self.url}/endpoints/fraud/invocations",
                        json={"dataframe_records": [row]},
                    )
                except httpx.TransportError:
                    self.statuses[-1] += 1
                    time.sleep(0.05)
                    continue
                self.statuses[r.status_code] += 1
                self.versions[r.headers.get("x-modelyard-version", "-")] += 1
                time.sleep(0.005)  # about 100 requests a second from the two threads

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)


class Served(ServeProcess):
    """A home with ``fraud`` v1 as champion behind an endpoint, and `modelyard serve` on it
    (two gateway workers and the loops process)."""

    def __init__(self, home: Path) -> None:
        super().__init__(
            home,
            env={
                "MODELYARD_MONITOR_INTERVAL_SECONDS": "0",
                "MODELYARD_ROLLOUT_INTERVAL_SECONDS": "0.5",
            },
        )
        self.settings = Settings(home=home)
        self.models = _models()
        X, _ = _frame()
        self.example = X.head(5)
        self.rows = X.to_dict("records")
        client = self.client()
        client.log_model(self.models["base"], "fraud", input_example=self.example, alias="champion")
        client.endpoints.create("fraud", "models:/fraud@champion")
        client.close()

    def client(self) -> Client:
        return Client(str(self.home), settings=self.settings)

    def register(self, kind: str) -> int:
        client = self.client()
        try:
            return client.log_model(self.models[kind], "fraud", input_example=self.example).version
        finally:
            client.close()

    def start(self) -> None:  # type: ignore[override]
        super().start("--trust-pickled", workers=2)

    def wait_for_end(self, ws: Workspace, rollout_id: str, timeout: float = 60) -> Rollout:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rollout = ws.rollouts.get(rollout_id)
            if not rollout.active:
                return rollout
            time.sleep(0.2)
        raise AssertionError(f"the rollout did not end: {ws.rollouts.get(rollout_id)}")

    def versions_now(self, count: int = 100) -> Counter[str]:
        """Which versions answer ``count`` requests sent now."""
        seen: Counter[str] = Counter()
        with httpx.Client(timeout=10) as client:
            for row in self.rows[:count]:
                r = client.post(
                    f"{self.url}/endpoints/fraud/invocations", json={"dataframe_records": [row]}
                )
                assert r.status_code == 200, r.text
                seen[r.headers["x-modelyard-version"]] += 1
        return seen


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = Served(tmp_path_factory.mktemp("rollouts") / "home")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def ws(served: Served) -> Iterator[Workspace]:
    workspace = Workspace.open(served.settings, migrate=False)
    yield workspace
    workspace.close()


def _roll(served: Served, ws: Workspace, kind: str, **plan: object) -> tuple[Rollout, Load]:
    version = served.register(kind)
    load = Load(served.url, served.rows)
    load.start()
    time.sleep(0.5)  # steady traffic first
    rollout = ws.rollouts.start("fraud", f"models:/fraud/{version}", {**PLAN, **plan})
    ended = served.wait_for_end(ws, rollout.id)
    load.finish()
    return ended, load


def _story(rollout: Rollout) -> str:
    """Every analysis of ``rollout``, one line each, for a failure message."""
    return "\n".join(
        f"step {a.step} {a.verdict}{' (early)' if a.early else ''}: "
        + "; ".join(c.summary for c in a.checks)
        for a in rollout.analyses
    )


@pytest.mark.parametrize(
    ("kind", "check"),
    [("flaky", "errors"), ("slow", "latency"), ("shifted", "outputs")],
)
def test_a_bad_canary_is_rolled_back(served: Served, ws: Workspace, kind: str, check: str) -> None:
    champion = ws.registry.get_alias("fraud", "champion").version
    ended, load = _roll(served, ws, kind)
    assert ended.phase == "rolled_back", ended
    failed = {c.name for a in ended.analyses for c in a.checks if c.verdict == "fail"}
    assert check in failed, ended.analyses
    # rolled back at its first step: worse beyond a margin but not yet significant is
    # inconclusive (the step waits), never a pass
    assert ended.step == 0, _story(ended)
    canary = f"fraud/{ended.version}"
    share = load.versions[canary] / max(1, sum(load.versions.values()))
    assert share < 0.35, load.versions  # its first step's 20 %, give or take chance
    # the gateway sends it nothing new within a refresh
    time.sleep(1.0)
    assert served.versions_now() == Counter({f"fraud/{champion}": 100})
    assert ws.registry.get_alias("fraud", "champion").version == champion
    endpoint = ws.endpoints.get("fraud")
    assert endpoint.policy.routes == [] and endpoint.policy.rollout is None


def test_a_good_canary_is_promoted(served: Served, ws: Workspace) -> None:
    ended, load = _roll(served, ws, "good")
    assert ended.phase == "succeeded", ended
    assert ended.step == len(PLAN["steps"]) - 1
    # an analysis that came before min_requests is inconclusive; none may fail
    assert [a.verdict for a in ended.analyses].count("pass") == len(PLAN["steps"])
    assert "fail" not in [a.verdict for a in ended.analyses]
    assert ws.registry.get_alias("fraud", "champion").version == ended.version
    assert load.statuses[500] == 0
    time.sleep(1.0)
    assert served.versions_now() == Counter({f"fraud/{ended.version}": 100})


def test_a_restarted_serve_carries_the_rollout_on(served: Served, ws: Workspace) -> None:
    version = served.register("good")
    load = Load(served.url, served.rows)
    load.start()
    rollout = ws.rollouts.start(
        "fraud", f"models:/fraud/{version}", {**PLAN, "interval_seconds": 3}
    )
    deadline = time.monotonic() + 30
    while ws.rollouts.get(rollout.id).step < 1:
        assert time.monotonic() < deadline, ws.rollouts.get(rollout.id)
        time.sleep(0.2)
    served.stop()
    mid = ws.rollouts.get(rollout.id)
    assert mid.active and mid.step >= 1
    served.start()
    ended = served.wait_for_end(ws, rollout.id)
    load.finish()
    assert ended.phase == "succeeded", ended
    assert ws.registry.get_alias("fraud", "champion").version == version


def test_a_pipeline_promotion_releases_through_serve(served: Served, ws: Workspace) -> None:
    from modelyard.pipelines.gates import get_promotion, promote
    from modelyard.rollouts import RolloutPlan

    champion = ws.registry.get_alias("fraud", "champion").version
    version = served.register("good")
    report = passing_report(ws, candidate=version, champion=champion)
    load = Load(served.url, served.rows)
    load.start()
    promotion = promote(ws, report, rollout=RolloutPlan.model_validate(PLAN))
    assert not promotion.promoted and promotion.rollout_id
    ended = served.wait_for_end(ws, promotion.rollout_id)
    load.finish()
    assert ended.phase == "succeeded", ended
    deadline = time.monotonic() + 5  # recorded on the promotion just after the rollout ends
    while not get_promotion(ws, promotion.id).promoted:
        assert time.monotonic() < deadline, get_promotion(ws, promotion.id)
        time.sleep(0.1)
    assert ws.registry.get_alias("fraud", "champion").version == version
