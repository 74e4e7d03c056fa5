"""SLO model switching through a real `modelyard serve` (one gateway worker).

``fraud`` has two variants: ``accurate``, a Python model that takes 20 ms a call and
predicts one row per call (batching off), and ``fast``, a logistic regression that answers
in about a millisecond. The endpoint's SLO is 250 ms: wide, so that a busy machine does not
blur the picture. One client at a time leaves the accurate variant's queue empty;
twenty-four at once queue 500 ms or more of work behind it, twice the SLO, so the gateway
sends part of the spike to the fast variant, and everything back once it is over.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard.client import Client
from modelyard.config import Settings
from modelyard.errors import InvalidInput
from modelyard.workspace import Workspace
from tests.serve_process import ServeProcess

pytestmark = pytest.mark.slow

FEATURES = ["f0", "f1", "f2"]
SLO_MS = 250


def _frame() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(11)
    X = pd.DataFrame(rng.normal(size=(400, len(FEATURES))), columns=FEATURES)
    return X, ((X.f0 + X.f1) > 0).astype(int)


def _accurate(inner: LogisticRegression) -> object:
    from modelyard.formats import PythonModel

    class Deliberate(PythonModel):
        """The logistic regression's answers, 20 ms a call."""

        def __init__(self, inner: LogisticRegression) -> None:
            self.inner = inner

        def predict(self, inputs):  # type: ignore[no-untyped-def]
            time.sleep(0.02)
            frame = pd.DataFrame({k: np.asarray(v) for k, v in inputs.items()})[FEATURES]
            # the outputs of the fast variant (a scikit-learn classifier): variants answer alike
            return {
                "predictions": self.inner.predict(frame),
                "probabilities": self.inner.predict_proba(frame),
            }

    return Deliberate(inner)


class Serve(ServeProcess):
    def __init__(self, home: Path) -> None:
        super().__init__(
            home,
            env={
                "MODELYARD_MONITOR_INTERVAL_SECONDS": "0",
                "MODELYARD_ROLLOUT_INTERVAL_SECONDS": "0",
            },
        )
        X, y = _frame()
        self.rows = X.to_dict("records")
        inner = LogisticRegression().fit(X, y)
        client = Client(str(home), settings=Settings(home=home))
        example = X.head(5)
        client.log_model(_accurate(inner), "fraud", input_example=example, alias="champion")
        client.log_model(inner, "fraud-small", input_example=example, alias="champion")
        client.log_model(
            LogisticRegression().fit(X[["f0", "f1"]], y),
            "fraud-two",
            input_example=example[["f0", "f1"]],
        )
        client.endpoints.create(
            "fraud",
            "models:/fraud@champion",
            policy={
                "variants": [
                    {"name": "fast", "target": "models:/fraud-small@champion", "quality": 0.8},
                    {"name": "accurate", "target": "models:/fraud@champion", "quality": 0.95},
                ],
                "slo_ms": SLO_MS,
            },
            batching={"max_batch_size": 1},
        )
        client.endpoints.create("slow", "models:/fraud@champion", batching={"max_batch_size": 1})
        client.close()

    def send(self, client: httpx.Client, i: int, **headers: str) -> httpx.Response:
        return client.post(
            f"{self.url}/endpoints/fraud/invocations",
            json={"dataframe_records": [self.rows[i % len(self.rows)]]},
            headers=headers,
        )

    def phase(self, clients: int, requests: int) -> tuple[Counter[str], Counter[int]]:
        """``requests`` requests from ``clients`` concurrent clients: the variants that
        answered, and the statuses."""
        variants: Counter[str] = Counter()
        statuses: Counter[int] = Counter()

        def run(offset: int) -> None:
            with httpx.Client(timeout=10) as client:
                for i in range(offset, requests, clients):
                    r = self.send(client, i)
                    statuses[r.status_code] += 1
                    variants[r.headers.get("x-modelyard-variant", "-")] += 1

        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(run, range(clients)))
        return variants, statuses


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    server = Serve(tmp_path_factory.mktemp("switching") / "home")
    server.start("--trust-pickled")
    yield server
    server.stop()


def test_a_spike_moves_traffic_to_the_fast_variant_and_back(serve: Serve) -> None:
    quiet, statuses = serve.phase(clients=1, requests=60)
    assert statuses == Counter({200: 60})
    # ranked by quality, not by the policy's order: the accurate one answers a lone client
    assert quiet["accurate"] >= 57, quiet
    spike, statuses = serve.phase(clients=24, requests=720)
    assert statuses[200] >= 700, statuses  # shed only when no variant fits
    assert spike["fast"] >= 180, spike  # a quarter or more of the spike
    assert spike["accurate"] >= 5, spike  # and the accurate one what it can in time
    after, statuses = serve.phase(clients=1, requests=60)
    assert statuses == Counter({200: 60})
    assert after["accurate"] >= 55, after


def test_the_deadline_header_and_oip_parameters_are_honoured(serve: Serve) -> None:
    with httpx.Client(timeout=10) as client:
        # 15 ms: only the fast variant can make it
        r = serve.send(client, 1, **{"x-modelyard-deadline-ms": "15"})
        assert r.status_code == 200, r.text
        assert r.headers["x-modelyard-variant"] == "fast"
        assert r.headers["x-modelyard-version"] == "fraud-small/1"
        # a longer deadline than the SLO: the SLO still holds, and accurate fits in it
        r = serve.send(client, 2, **{"x-modelyard-deadline-ms": "5000"})
        assert r.headers["x-modelyard-variant"] == "accurate"
        body = {
            "inputs": [
                {"name": name, "shape": [1], "datatype": "FP64", "data": [0.5]} for name in FEATURES
            ],
            "parameters": {"deadline_ms": 15},
        }
        r = client.post(f"{serve.url}/v2/models/fraud/infer", json=body)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["parameters"] == {"variant": "fast", "model": "fraud-small"}
        assert doc["model_version"] == "1"
        # tritonclient's timeout, in microseconds
        body["parameters"] = {"timeout": 15000}
        assert (
            client.post(f"{serve.url}/v2/models/fraud/infer", json=body).json()["parameters"][
                "variant"
            ]
            == "fast"
        )
        body["parameters"] = {}
        assert (
            client.post(f"{serve.url}/v2/models/fraud/infer", json=body).json()["parameters"][
                "variant"
            ]
            == "accurate"
        )


def test_a_request_no_variant_can_answer_in_time_is_shed(serve: Serve) -> None:
    with httpx.Client(timeout=10) as client:
        r = serve.send(client, 3, **{"x-modelyard-deadline-ms": "0.0001"})
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"
        problem = r.json()
        assert (
            "no variant of endpoint 'fraud' can answer within the 0.0001 ms deadline"
            in (problem["detail"])
        )
        assert "fast ~" in problem["detail"] and "accurate ~" in problem["detail"]
        for bad in ("soon", "0", "-5", "nan", "inf"):
            r = serve.send(client, 3, **{"x-modelyard-deadline-ms": bad})
            assert r.status_code == 400, (bad, r.text)
            assert "x-modelyard-deadline-ms header must be a positive number" in r.json()["detail"]


def test_a_deadline_on_an_endpoint_without_variants_sheds_what_would_be_late(
    serve: Serve,
) -> None:
    """One model, 20 ms a call, one call at a time: of 12 requests sent at once with a 100 ms
    deadline, those behind 100 ms of queue are refused at once instead of answered late."""
    url = f"{serve.url}/endpoints/slow/invocations"

    def send(i: int) -> httpx.Response:
        body = {"dataframe_records": [serve.rows[i]]}
        return httpx.post(url, json=body, headers={"x-modelyard-deadline-ms": "100"}, timeout=10)

    with httpx.Client(timeout=10) as client:  # warm: its latency is known
        for i in range(5):
            assert client.post(url, json={"dataframe_records": [serve.rows[i]]}).status_code == 200
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(send, range(12)))
    statuses = Counter(r.status_code for r in answers)
    assert statuses[200] >= 2 and statuses[503] >= 2, statuses
    shed = next(r for r in answers if r.status_code == 503)
    assert (
        "the model of endpoint 'slow' cannot answer within the 100 ms deadline"
        in (shed.json()["detail"])
    )
    assert "x-modelyard-variant" not in shed.headers
    # OIP's parameters, on an endpoint without an SLO or variants
    body = {
        "inputs": [
            {"name": name, "shape": [1], "datatype": "FP64", "data": [0.5]} for name in FEATURES
        ],
        "parameters": {"deadline_ms": 0.001},
    }
    r = httpx.post(f"{serve.url}/v2/models/slow/infer", json=body, timeout=10)
    assert r.status_code == 503, r.text
    body["parameters"] = {"deadline_ms": 5000}
    assert httpx.post(f"{serve.url}/v2/models/slow/infer", json=body, timeout=10).status_code == 200


def test_metrics_show_each_variant(serve: Serve) -> None:
    with httpx.Client(timeout=10) as client:
        for i in range(5):
            assert serve.send(client, i).status_code == 200
        text = client.get(f"{serve.url}/metrics").text
    assert (
        'modelyard_variant_requests_total{deadline="met",endpoint="fraud",variant="accurate"}'
        in (text)
    )
    assert 'modelyard_variant_quality{endpoint="fraud",variant="fast"} 0.8' in text
    assert 'modelyard_deadline_shed_total{endpoint="fraud"}' in text
    assert 'modelyard_variant_predicted_seconds{endpoint="fraud",variant="accurate"}' in text
    assert 'modelyard_effective_accuracy{endpoint="fraud"}' in text


def test_variants_must_take_the_same_inputs_and_need_an_slo(serve: Serve) -> None:
    ws = Workspace.open(Settings(home=serve.home), migrate=False)
    try:
        with pytest.raises(InvalidInput, match=r"fraud-two.*has inputs f0, f1, fraud has"):
            ws.endpoints.create(
                "mixed",
                "models:/fraud@champion",
                policy={
                    "variants": [
                        {"name": "fraud", "target": "models:/fraud@champion"},
                        {"name": "fraud-two", "target": "models:/fraud-two/1"},
                    ],
                    "slo_ms": 50,
                },
            )
        with pytest.raises(InvalidInput, match="variants need slo_ms"):
            ws.endpoints.create(
                "no-slo",
                "models:/fraud@champion",
                policy={"variants": [{"name": "a", "target": "models:/fraud@champion"}]},
            )
        with pytest.raises(InvalidInput, match="leave out routes and sticky"):
            ws.endpoints.create(
                "both",
                "models:/fraud@champion",
                policy={
                    "variants": [{"name": "a", "target": "models:/fraud@champion"}],
                    "slo_ms": 50,
                    "routes": [{"target": "models:/fraud@champion", "weight": 1}],
                },
            )
    finally:
        ws.close()


def test_an_alias_moving_to_other_inputs_is_refused_and_the_old_variants_keep_serving(
    serve: Serve,
) -> None:
    ws = Workspace.open(Settings(home=serve.home), migrate=False)
    try:
        ws.registry.set_alias("fraud-small", "champion", 1)
        other = Client(str(serve.home), settings=Settings(home=serve.home))
        X, y = _frame()
        version = other.log_model(
            LogisticRegression().fit(X[["f0", "f1"]], y),
            "fraud-small",
            input_example=X[["f0", "f1"]].head(5),
        ).version
        other.close()
        ws.registry.set_alias("fraud-small", "champion", version)
        deadline = time.monotonic() + 30
        reason = ""
        while time.monotonic() < deadline and "fraud" not in reason:
            time.sleep(0.3)
            reason = (
                httpx.get(f"{serve.url}/v2/health/ready")
                .json()
                .get("not_ready", {})
                .get("fraud", "")
            )
        assert "variant fast (fraud-small/2) has f0, f1" in reason, reason
        with httpx.Client(timeout=10) as client:  # still the old variants, all of them
            r = serve.send(client, 1, **{"x-modelyard-deadline-ms": "15"})
            assert r.status_code == 200, r.text
            assert r.headers["x-modelyard-version"] == "fraud-small/1"
    finally:
        ws.registry.set_alias("fraud-small", "champion", 1)
        ws.close()
