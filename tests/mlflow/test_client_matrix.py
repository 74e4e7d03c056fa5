"""MLflow's own client, 2.22.5 and 3.17.2, against a live modelyard: a typical training script
(tests/mlflow/train.py) runs unchanged with ``MLFLOW_TRACKING_URI`` and
``MLFLOW_TRACKING_TOKEN``, and what it logged is modelyard's own: runs, params, metrics and
artifacts in tracking, the version with its signature and alias in the registry, and the
version serving through the gateway with the same predictions.

The same script against a real ``mlflow server`` checks the script itself.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.mlflow.conftest import MlflowServer, ModelyardServer, RunMlflow

# The first use of a client version builds its virtualenv (30-70 s), then the script's
# log_model infers the model's requirements in a subprocess of its own.
pytestmark = pytest.mark.timeout(900)

FEATURES = [f"f{i}" for i in range(6)]


class Checks:
    """Every check of a test runs and the test fails at the end with all that failed, so that
    one run says which parts of MLflow's API fall short, not only the first."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    @contextlib.contextmanager
    def __call__(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            self.failed.append(f"{what}: {type(exc).__name__}: {exc}")

    def assert_all(self) -> None:
        if self.failed:
            pytest.fail("\n\n".join(self.failed), pytrace=False)


def check_summary(summary: dict[str, Any] | None, check: Checks) -> dict[str, Any]:
    """What the script saw through MLflow's client is whole and consistent."""
    assert summary is not None, "the script printed no summary"
    run_id, version = summary["run_id"], summary["version"]
    with check("pyfunc.load_model('models:/fraud@champion').predict"):
        assert summary["predictions_match"], "the champion predicts otherwise"
    with check("search_runs"):
        found = {r["run_id"]: r["accuracy"] for r in summary["found_runs"]}
        assert run_id in found, summary["found_runs"]
        assert found[run_id] == pytest.approx(summary["accuracy"])
    with check("search_model_versions"):
        versions = {v["version"]: v for v in summary["found_versions"]}
        assert version in versions, summary["found_versions"]
        assert versions[version]["run_id"] == run_id
    with check("get_metric_history"):
        history = summary["loss_history"]
        assert [step for step, _ in history] == list(range(8)), history
    return summary


def wait_until_ready(url: str, headers: dict[str, str], seconds: float = 120) -> None:
    """Until the gateway has picked the new endpoint up and loaded its model (it checks every
    0.5 s); the request after this one says what went wrong if it never was."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if httpx.get(url, headers=headers).status_code == 200:
            return
        time.sleep(0.2)


def test_the_script_passes_against_mlflow_itself(
    mlflow_python: Path, mlflow_server: MlflowServer, run_mlflow: RunMlflow
) -> None:
    done = run_mlflow(mlflow_python, mlflow_server.url)
    assert done.returncode == 0, done.failure()
    check = Checks()
    check_summary(done.summary, check)
    check.assert_all()


def test_mlflow_client_logs_registers_and_serves_through_modelyard(
    mlflow_python: Path, modelyard_server: ModelyardServer, run_mlflow: RunMlflow
) -> None:
    done = run_mlflow(mlflow_python, modelyard_server.url, token=modelyard_server.token)
    assert done.returncode == 0, done.failure()
    check = Checks()
    summary = check_summary(done.summary, check)
    run_id, number = summary["run_id"], summary["version"]

    with modelyard_server.client() as client:
        with check("modelyard: the run, its params, metrics and tags"):
            run = client.tracking.get_run(run_id)
            assert run.experiment == "fraud-detection"
            assert run.status == "finished"
            assert summary["params"].items() <= run.params.items(), run.params
            assert run.metrics["accuracy"] == pytest.approx(summary["accuracy"])
            assert run.tags["team"] == "risk", run.tags
        with check("modelyard: the metric's history"):
            history = client.tracking.get_metric_history(run_id, "train_loss")
            assert [[p.step, p.value] for p in history] == summary["loss_history"]
        with check("modelyard: the run's artifacts"):
            paths = {a.path for a in client.tracking.list_artifacts(run_id)}
            assert {"config.json", "notes/README.md"} <= paths, paths
            config = json.loads(client.tracking.get_artifact(run_id, "config.json"))
            assert config == {"features": FEATURES, "threshold": 0.5}
        with check("modelyard: the version, its signature and alias"):
            version = client.registry.get_version("fraud", number)
            assert version.run_id == run_id
            assert [spec["name"] for spec in version.signature["inputs"]] == FEATURES
            assert client.registry.get_alias("fraud", "champion").version == number
        client.endpoints.create("fraud", "models:/fraud@champion")

    with check("modelyard: the version serves through the gateway"):
        bearer = {"authorization": f"Bearer {modelyard_server.token}"}
        wait_until_ready(f"{modelyard_server.url}/v2/models/fraud/ready", bearer)
        sample = summary["sample"]
        answer = httpx.post(
            f"{modelyard_server.url}/endpoints/fraud/invocations",
            json={"dataframe_split": {"columns": sample["columns"], "data": sample["data"]}},
            headers=bearer,
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == sample["predictions"]
    check.assert_all()


SET_EXPERIMENT = """
import mlflow
mlflow.set_experiment("fraud-detection")
"""


@pytest.mark.parametrize(
    "token", [None, "not-a-token"], ids=["without a token", "with a wrong token"]
)
def test_the_client_is_refused_without_a_valid_token(
    mlflow3_python: Path,
    modelyard_server: ModelyardServer,
    run_mlflow: RunMlflow,
    tmp_path: Path,
    token: str | None,
) -> None:
    script = tmp_path / "set_experiment.py"
    script.write_text(SET_EXPERIMENT)
    done = run_mlflow(mlflow3_python, modelyard_server.url, token=token, script=script)
    assert done.returncode != 0
    # MLflow's client raises with the server's error code and message
    assert "UNAUTHENTICATED" in done.stderr, done.stderr[-2000:]
    assert "token" in done.stderr.rsplit("UNAUTHENTICATED", 1)[1].lower(), done.stderr[-2000:]
