"""MLflow's own client and server, for the tests that prove MLflow's client works against
modelyard unchanged.

- ``mlflow2_python`` / ``mlflow3_python``: the python of a virtualenv holding MLflow's client
  2.22.5 (skinny) / 3.17.2 (full), built by pip on first use into a cache that outlives the run
  (tests/mlflow/venvs.py: ~30 s / ~65 s from scratch here); ``mlflow_python`` is either, by
  parameter.
- ``mlflow_server``: a real ``mlflow server`` (3.17.2) on SQLite with its artifact proxy, in a
  temporary directory, stopped at the end of the test.
- ``modelyard_server``: ``modelyard serve`` with auth on (``--trust-pickled``: MLflow's sklearn
  flavor pickles under 2.x), and a token for MLflow's client to send as ``MLFLOW_TRACKING_TOKEN``.
- ``run_mlflow``: runs a script with one of those pythons against a tracking server.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from modelyard.client import Client
from modelyard.config import Settings
from modelyard.workspace import Workspace
from tests.mlflow import venvs
from tests.serve_process import ServeProcess, free_port

TRAIN = Path(__file__).with_name("train.py")


def _python(env: venvs.MlflowEnv) -> Path:
    try:
        return venvs.python_for(env)
    except venvs.VenvError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def mlflow2_python() -> Path:
    """The python of a virtualenv with mlflow-skinny 2.22.5, scikit-learn and pandas."""
    return _python(venvs.MLFLOW2)


@pytest.fixture(scope="session")
def mlflow3_python() -> Path:
    """The python of a virtualenv with mlflow 3.17.2 (full: its server too), scikit-learn,
    pandas and skops."""
    return _python(venvs.MLFLOW3)


@pytest.fixture(params=["mlflow2", "mlflow3"], ids=[venvs.MLFLOW2.name, venvs.MLFLOW3.name])
def mlflow_python(request: pytest.FixtureRequest) -> Path:
    """Each MLflow client version in turn."""
    return request.getfixturevalue(f"{request.param}_python")  # type: ignore[no-any-return]


@dataclass
class Finished:
    """What a script run with MLflow's client left: exit status, output, and its JSON
    summary (the last stdout line that is a JSON object; None if there is none)."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def summary(self) -> dict | None:
        for line in reversed(self.stdout.splitlines()):
            if line.startswith("{"):
                return json.loads(line)  # type: ignore[no-any-return]
        return None

    def failure(self) -> str:
        """The client's traceback, shortened to what says which call failed and why."""
        return f"exit {self.returncode}\n{self.stderr[-4000:]}"


def mlflow_env(tracking_uri: str, token: str | None = None) -> dict[str, str]:
    """The environment for MLflow's client: this one without MLflow's own variables (a
    developer's MLFLOW_TRACKING_URI must not leak in), pointed at ``tracking_uri``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    for name in ("PYTHONPATH", "VIRTUAL_ENV", "MODELYARD_HOME", "MODELYARD_URI"):
        env.pop(name, None)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    if token is not None:
        env["MLFLOW_TRACKING_TOKEN"] = token
    # MLflow's client asks git for the source version: quiet when git finds nothing here
    env["GIT_PYTHON_REFRESH"] = "quiet"
    return env


RunMlflow = Callable[..., Finished]


@pytest.fixture
def run_mlflow(tmp_path: Path) -> RunMlflow:
    """``run_mlflow(python, tracking_uri, token=None, script=TRAIN, args=(), extra_env=None)``:
    run ``script`` with ``python`` in a subprocess (working directory: a fresh temporary one);
    ``extra_env`` adds variables (MLflow's own too) after :func:`mlflow_env`."""

    def run(
        python: Path,
        tracking_uri: str,
        token: str | None = None,
        script: Path = TRAIN,
        args: tuple[str, ...] = (),
        extra_env: Mapping[str, str] | None = None,
    ) -> Finished:
        cwd = tmp_path / f"client-{time.monotonic_ns()}"
        cwd.mkdir()
        env = {**mlflow_env(tracking_uri, token), **(extra_env or {})}
        out = subprocess.run(
            [str(python), str(script), *args],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=600,
        )
        return Finished(out.returncode, out.stdout, out.stderr)

    return run


@dataclass
class MlflowServer:
    """A running ``mlflow server``: its URL, SQLite file, artifact directory and log."""

    url: str
    backend_store_uri: str
    artifacts: Path
    log: Path
    python: Path  # the 3.x client's python, to drive it


@pytest.fixture
def mlflow_server(mlflow3_python: Path, tmp_path: Path) -> Iterator[MlflowServer]:
    """``mlflow server`` 3.17.2 on 127.0.0.1 (one worker, job runner off), backend SQLite in
    a temporary directory, artifacts proxied into ``artifacts/`` there; stopped at the end.
    Starting it takes 5-15 s."""
    root = tmp_path / "mlflow-server"
    root.mkdir()
    port = free_port()
    backend = f"sqlite:///{root / 'mlflow.db'}"
    server = MlflowServer(
        f"http://127.0.0.1:{port}", backend, root / "artifacts", root / "server.log", mlflow3_python
    )
    bin_dir = mlflow3_python.parent
    env = mlflow_env(server.url)
    del env["MLFLOW_TRACKING_URI"]
    # it starts uvicorn (and its job runner) by name: the venv's bin goes first on PATH
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    command = [
        str(bin_dir / "mlflow"), "server",
        "--backend-store-uri", backend,
        "--artifacts-destination", str(server.artifacts),
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    with server.log.open("wb") as log:
        proc = subprocess.Popen(
            command, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_ready(proc, f"{server.url}/health", server.log, "mlflow server", 120)
        yield server
    finally:
        _stop_group(proc)


def _wait_ready(
    proc: subprocess.Popen[bytes], url: str, log: Path, what: str, limit: float
) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=5).status_code == 200:
                return
        if proc.poll() is not None:
            pytest.fail(f"{what} exited early:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"{what} did not answer {url} within {limit:.0f} s (see {log})")


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (its workers too), SIGKILL after 20 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


@dataclass
class ModelyardServer:
    """A running ``modelyard serve`` with auth on; ``token`` is the data scientist's (role
    deployer: logs runs, registers, moves aliases, creates endpoints)."""

    process: ServeProcess
    token: str

    @property
    def url(self) -> str:
        return self.process.url

    def client(self) -> Client:
        """modelyard's own SDK on the same server, as the same user."""
        home = self.process.home.parent / "client-home"
        return Client(self.url, token=self.token, settings=Settings(home=home))


@pytest.fixture
def modelyard_server(tmp_path: Path) -> Iterator[ModelyardServer]:
    """``modelyard serve --trust-pickled`` with ``MODELYARD_AUTH=true`` on a fresh SQLite
    workspace, and a token for user ``ds`` (role deployer)."""
    home = tmp_path / "modelyard"
    ws = Workspace.open(Settings(home=home, auth=True))
    try:
        ws.identities.create_user("ds", "deployer")
        token = ws.identities.create_token("ds", name="mlflow client").secret
    finally:
        ws.close()
    process = ServeProcess(home, env={"MODELYARD_AUTH": "true"})
    process.start("--trust-pickled")
    try:
        yield ModelyardServer(process, token)
    finally:
        process.stop()
