"""MLflow model directories saved by MLflow itself (tests/mlflow/mlflow_models.py), made once
per machine into the test cache (beside the MLflow virtualenvs) and reused while the script
and the MLflow python are the same.

The MLflow 3 virtualenv needs xgboost, lightgbm and onnx for them (tests/mlflow/venvs.py).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

from filelock import FileLock

from tests.mlflow import venvs

SCRIPT = Path(__file__).with_name("mlflow_models.py")
MARKER = ".modelyard-ready"


def saved_models(python: Path) -> Path:
    """The directory holding one MLflow model directory per kind of mlflow_models.py, plus
    ``batch.json`` and ``expected.json`` (what MLflow's pyfunc predicts for the batch)."""
    key = hashlib.sha256(SCRIPT.read_bytes() + str(python).encode()).hexdigest()[:16]
    root = venvs.CACHE / "mlflow-models" / key
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock", timeout=900):
        if (root / MARKER).exists():
            return root
        shutil.rmtree(root, ignore_errors=True)
        done = subprocess.run(
            [str(python), str(SCRIPT), str(root)],
            capture_output=True,
            text=True,
            timeout=600,
            env=venvs_env(),
        )
        if done.returncode != 0:
            raise AssertionError(
                f"{SCRIPT.name} failed with {python} (its virtualenv needs xgboost, lightgbm "
                f"and onnx beside mlflow):\n{done.stderr[-3000:]}"
            )
        (root / MARKER).write_text(done.stdout)
    return root


def venvs_env() -> dict[str, str]:
    from tests.mlflow.conftest import mlflow_env

    env = mlflow_env("file:///nonexistent")
    env.pop("MLFLOW_TRACKING_URI")
    return env


def expected(root: Path) -> dict[str, list]:  # type: ignore[type-arg]
    return json.loads((root / "expected.json").read_text())  # type: ignore[no-any-return]


def batch(root: Path):  # type: ignore[no-untyped-def]
    import pandas as pd

    split = json.loads((root / "batch.json").read_text())
    return pd.DataFrame(split["data"], columns=split["columns"])


def predict_with_mlflow(python: Path, model_dir: Path, batch_json: Path) -> list:  # type: ignore[type-arg]
    """What ``mlflow.pyfunc.load_model(model_dir).predict`` answers for the batch."""
    done = subprocess.run(
        [str(python), str(SCRIPT), "--predict", str(model_dir), str(batch_json)],
        capture_output=True,
        text=True,
        timeout=600,
        env=venvs_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
