"""Virtualenvs holding MLflow's own client (and server), built by pip on demand into a cache
that outlives the test run.

MLflow is never a dependency of modelyard: the compatibility tests run MLflow's client in a
subprocess from one of these. Each is built once per machine (under a file lock, so parallel
runs wait for one build) into ``~/.cache/modelyard-tests/venvs/<name>-<version>`` (or
``$MODELYARD_TEST_CACHE/venvs``), and counts as built only when a marker written after a
successful install names the same requirements and ``import mlflow`` reports the version: a
half-made one (a killed run) is built again. ``python -m tests.mlflow.venvs`` builds them all.

While developing, ``MODELYARD_TEST_MLFLOW2_PYTHON`` / ``MODELYARD_TEST_MLFLOW3_PYTHON`` may
name the python of an existing environment to use instead (it is checked the same way).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("MODELYARD_TEST_CACHE") or Path.home() / ".cache" / "modelyard-tests")
VENVS = CACHE / "venvs"
MARKER = ".modelyard-ready"


def locked_versions(names: tuple[str, ...]) -> list[str]:
    """``name==version`` for each of ``names`` that modelyard's lock (constraints.txt) pins, so
    that a model pickled by MLflow's client unpickles in modelyard's environment."""
    pins = {}
    lock = REPO / "constraints.txt"
    if lock.exists():
        for line in lock.read_text().splitlines():
            match = re.match(r"([A-Za-z0-9_.-]+)==([^\s#;]+)", line)
            if match:
                pins[match[1].lower()] = match[2]
    return [f"{n}=={pins[n]}" if n in pins else n for n in names]


@dataclass(frozen=True)
class MlflowEnv:
    """One virtualenv: MLflow's ``package`` at ``version`` plus ``extras`` pinned to the lock."""

    package: str
    version: str
    extras: tuple[str, ...]
    override: str  # the environment variable that may name an existing python instead

    @property
    def name(self) -> str:
        return f"{self.package}-{self.version}"

    @property
    def requirements(self) -> list[str]:
        return [f"{self.package}=={self.version}", *locked_versions(self.extras)]


_SKLEARN = ("scikit-learn", "pandas", "numpy", "scipy", "cloudpickle")
#: MLflow 2.x: the skinny client (its sklearn flavor pickles with cloudpickle).
MLFLOW2 = MlflowEnv("mlflow-skinny", "2.22.5", _SKLEARN, "MODELYARD_TEST_MLFLOW2_PYTHON")
#: MLflow 3.x: the full package (the tests need its server too, and one full install takes
#: less time than a skinny one plus a full one); its sklearn flavor saves with skops. The
#: other flavors' frameworks make the MLflow models of each flavor the format tests load.
MLFLOW3 = MlflowEnv(
    "mlflow",
    "3.17.2",
    (*_SKLEARN, "skops", "xgboost", "lightgbm", "onnx", "onnxruntime"),
    "MODELYARD_TEST_MLFLOW3_PYTHON",
)
ENVS = (MLFLOW2, MLFLOW3)

_CHECK = "import mlflow, mlflow.sklearn, sklearn, pandas; print(mlflow.__version__)"


class VenvError(RuntimeError):
    """A virtualenv could not be built (the message holds the tail of pip's output)."""


def works(python: Path, env: MlflowEnv) -> bool:
    """Whether ``python`` imports MLflow at ``env.version`` (and scikit-learn, pandas)."""
    if not python.exists():
        return False
    try:
        out = subprocess.run(
            [str(python), "-c", _CHECK], capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0 and out.stdout.strip() == env.version


def python_for(env: MlflowEnv, *, log: bool = False) -> Path:
    """The python of ``env``'s virtualenv, built first when it is missing or broken."""
    if os.environ.get(env.override):
        python = Path(os.environ[env.override])
        if not works(python, env):
            raise VenvError(f"{env.override}={python} does not import mlflow {env.version}")
        return python
    root = VENVS / env.name
    python = root / "bin" / "python"
    marker = root / MARKER
    wanted = "\n".join(env.requirements)
    VENVS.mkdir(parents=True, exist_ok=True)
    with FileLock(str(VENVS / f"{env.name}.lock"), timeout=1800):
        if marker.exists() and marker.read_text() == wanted and works(python, env):
            return python
        start = time.monotonic()
        shutil.rmtree(root, ignore_errors=True)
        _run([sys.executable, "-m", "venv", "--without-pip", str(root)], env)
        # this interpreter's pip installs into the new venv: no pip bootstrap there
        _run(
            [sys.executable, "-m", "pip", "--python", str(python), "install",
             "--disable-pip-version-check", "--quiet", *env.requirements],
            env,
        )  # fmt: skip
        if not works(python, env):
            raise VenvError(f"{root} was built but does not import mlflow {env.version}")
        marker.write_text(wanted)
        if log:
            print(f"built {root} in {time.monotonic() - start:.0f} s", file=sys.stderr)
        return python


def _run(command: list[str], env: MlflowEnv) -> None:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    except subprocess.TimeoutExpired:
        raise VenvError(f"building {env.name} took over 20 minutes: {command}") from None
    if out.returncode != 0:
        tail = (out.stdout + out.stderr)[-3000:]
        raise VenvError(f"building {env.name} failed ({' '.join(command[:6])} ...):\n{tail}")


if __name__ == "__main__":
    for mlflow_env in ENVS:
        print(python_for(mlflow_env, log=True))
