#!/usr/bin/env python3
"""Serving benchmark: modelyard's gateway vs MLflow vs BentoML vs FastAPI vs a bare ASGI app.

Same machine, same run, interleaved. For each model (a scikit-learn LogisticRegression ``lr``
and a RandomForestClassifier ``rf`` with 100 trees of max_depth 8, both fitted on a pandas
DataFrame with 20 named columns f0..f19, fixed seed) every server is started fresh (cold start
= process start to first successful prediction), its process tree's PSS is read once idle, it
is warmed up with one discarded 2 s wrk run per target, then measured with
``wrk -t2 -cC -dDs --latency -s post.lua`` on 127.0.0.1 in rounds that interleave the servers
(the order rotated by one each round). Every request carries one row, the next of a pool of
``--pool`` (1,000) distinct rows drawn from the training data with a fixed seed and cycled
(post.lua prebuilds every request from a file of one body per line); every server gets the
same rows in its own format.

Process counts: modelyard's gateway and the bare app run the same number of worker
processes, ``--workers N`` (default 2, one per core here; passed to ``modelyard serve
--workers``), and both as a parent that forks N workers, each listening on its own
SO_REUSEPORT socket (bare_asgi.py copies modelyard.server's way rather than ``uvicorn
--workers``, whose workers share one socket, so that keep-alive connections may all land on
one worker). The bare app also runs with 1 worker ("bare-1w"), the reference of the
one-worker peers. MLflow, BentoML and FastAPI keep their defaults (``--peer-workers`` passes a
count to them). Every row states its workers and the processes counted in its tree. Servers:

  mlflow        ``mlflow models serve --env-manager local`` (bench/.venv-mlflow), /invocations;
                1 uvicorn worker under the mlflow CLI (``-w 2`` behaved like one worker, PEERS.md)
  bentoml       ``bentoml serve`` of bench/serving/bento_service.py, adaptive batching on
                (bench/.venv-bentoml), /predict; 1 worker under a parent
  fastapi       bench/serving/fastapi_app.py under uvicorn, /invocations (pydantic + sklearn);
                1 process
  bare-1w, bare-Nw  bench/serving/bare_asgi.py: parses nothing, the HTTP ceiling
  modelyard     ``python -m modelyard serve --workers N`` gateway: two rows, MLflow-format
                /endpoints/{name}/invocations ("modelyard") and OIP v2 /v2/models/{name}/infer
                ("modelyard-v2"), on the same server

Per row: req/s, p50, p99 (median over rounds and the range, min to max), errors, server CPU µs
per request (utime + stime of the server's whole process tree from /proc over the run, over
the requests wrk counted), PSS MiB of the whole tree (common.tree_pss: pages a forked worker
shares with its parent count once) idle after start and after its last round, and ratios of
req/s taken round by round: ÷ bare (the bare app with the same worker count, same round and
clients), ÷ mlflow, ÷ bentoml. Further tables: cold start and where the CPU went (median
round), the tree PSS after every round (growth), the load average before, between rounds and
after, and the in-process ceiling: sklearn ``predict`` on one row (a prebuilt DataFrame) and
ONNX Runtime (skl2onnx) on one row, calls/s.

Run with modelyard's Python (needs numpy, pandas, scikit-learn, joblib, rich; skl2onnx and
onnxruntime for the ONNX ceiling, fastapi/uvicorn/uvloop/httptools for the FastAPI and bare
servers) after ``bash bench/setup.sh`` (MLflow + BentoML venvs, wrk):

    python bench/serving/run.py                             # everything, 3 rounds of 10 s
    python bench/serving/run.py --models lr --servers bare,bare-1w,modelyard --rounds 1 \\
        --duration 5 --clients 16 --no-write

The report goes to a rich table, to stdout and the run directory (bench/runs/serving-*/
section.md), and to the "## serving" section of bench/RESULTS.md unless ``--no-write``.
Every process started is stopped (whole process tree, collected from /proc) even on Ctrl-C.
The modelyard side is ``ModelyardAdapter`` below: adjust it there if the CLI or routes change.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVING_DIR = Path(__file__).resolve().parent
BENCH_DIR = SERVING_DIR.parent
REPO_DIR = BENCH_DIR.parent
MLFLOW_VENV = BENCH_DIR / ".venv-mlflow"
BENTOML_VENV = BENCH_DIR / ".venv-bentoml"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
SECTION = "## serving"

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402  (bench/common.py: shared by the harnesses)
from common import (  # noqa: E402
    Server,
    free_port,
    log,
    machine_cpu,
    md_table,
    proc_label,
    tree_pss,
    tree_snapshot,
)

common.TAG = "serving"


def write_results(section: str) -> None:
    common.write_results(SECTION, section)


LUA = SERVING_DIR / "post.lua"

#: "bare" runs --workers N processes (its rows are labelled bare-Nw), "bare-1w" one.
SERVERS = ["mlflow", "bentoml", "fastapi", "bare-1w", "bare", "modelyard"]
MODELS = ["lr", "rf"]
COLUMNS = [f"f{i}" for i in range(20)]
SEED = 42


class Skip(Exception):
    """A system that cannot be run here (yet): reported, not a failure of the harness."""


# ----------------------------------------------------------------------------------------
# Probing a server (processes, CPU and PSS of their trees: bench/common.py)
# ----------------------------------------------------------------------------------------


LAST_HEADERS: dict[str, str] = {}


def post(url: str, body: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            LAST_HEADERS.clear()
            LAST_HEADERS.update({k.lower(): v for k, v in r.headers.items()})
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(server: Server, url: str, body: bytes, timeout: float) -> tuple[float, bytes]:
    """POST ``body`` until a 2xx, then wait for the process tree to go quiet (workers may still
    import). Returns (seconds from process start to the first successful prediction, body)."""
    assert server.proc is not None
    last = ""
    while True:
        if not server.alive():
            tail = server.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{server.name} exited during start-up:\n{tail}")
        try:
            code, resp = post(url, body, timeout=5)
            if 200 <= code < 300:
                break
            last = f"{code}: {resp[:200]!r}"
        except (OSError, urllib.error.URLError) as e:
            last = type(e).__name__
        if time.monotonic() - server.started > timeout:
            raise RuntimeError(
                f"{server.name}: no successful prediction from {url} after "
                f"{timeout:.0f}s (last: {last}); see {server.log_path}"
            )
        time.sleep(0.05)
    cold = time.monotonic() - server.started
    t1 = time.monotonic()
    while time.monotonic() - t1 < 60:  # < 10% of a core over 1 s, at most 60 s
        a = sum(c for c, _ in tree_snapshot(server.proc.pid).values())
        time.sleep(1.0)
        if sum(c for c, _ in tree_snapshot(server.proc.pid).values()) - a < 0.10:
            break
    log(
        f"{server.name} first prediction after {cold:.2f}s, "
        f"quiet after {time.monotonic() - server.started:.1f}s"
    )
    return cold, resp


def clean_env(*drop_prefixes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop_prefixes or ("\0",))}
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    return env


# ----------------------------------------------------------------------------------------
# Models and request bodies
# ----------------------------------------------------------------------------------------


def make_models(outdir: Path, names: list[str], pool: int = 1000) -> dict[str, dict[str, Any]]:
    """Fit the models on a DataFrame (fixed seed), save each as joblib. Returns
    name -> {"model", "path", "X", "row", "expected", "pool"}: ``row`` is the first training
    row, ``pool`` ``pool`` distinct training rows drawn with a fixed seed (the request rows)."""
    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(SEED)
    X = pd.DataFrame(rng.normal(size=(2000, 20)), columns=COLUMNS)
    w = rng.normal(size=20)
    y = ((X.to_numpy() @ w + rng.normal(scale=0.5, size=2000)) > 0).astype(int)
    picked = np.random.default_rng(SEED + 1).choice(len(X), size=min(pool, len(X)), replace=False)
    rows = [[round(float(v), 6) for v in X.iloc[i]] for i in picked]
    out = {}
    (outdir / "models").mkdir(parents=True, exist_ok=True)
    for name in names:
        if name == "lr":
            model = LogisticRegression(max_iter=1000, random_state=SEED)
        elif name == "rf":
            model = RandomForestClassifier(n_estimators=100, max_depth=8, random_state=SEED)
        else:
            raise SystemExit(f"unknown model {name!r}")
        model.fit(X, y)
        path = outdir / "models" / f"{name}.joblib"
        joblib.dump(model, path)
        row = [round(float(v), 6) for v in X.iloc[0]]
        expected = int(model.predict(pd.DataFrame([row], columns=COLUMNS))[0])
        out[name] = {
            "model": model,
            "path": path,
            "X": X,
            "row": row,
            "expected": expected,
            "pool": rows,
        }
    return out


def body_mlflow(row: list[float]) -> bytes:
    return json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [row]}}).encode()


def body_v2(row: list[float]) -> bytes:
    return json.dumps(
        {
            "inputs": [
                {"name": c, "shape": [1], "datatype": "FP64", "data": [v]}
                for c, v in zip(COLUMNS, row, strict=True)
            ]
        }
    ).encode()


def body_bento(row: list[float]) -> bytes:
    return json.dumps({"input": [row]}).encode()


# ----------------------------------------------------------------------------------------
# Adapters: one per server. ``prepare`` runs before the server starts (logs the model, ...),
# ``server`` builds the command, ``targets`` are the measured (row name, path, bodies) on it,
# ``workers`` is the number of worker processes it is started with.
# ----------------------------------------------------------------------------------------


@dataclass
class Target:
    row: str
    path: str
    bodies: list[bytes]

    @property
    def body(self) -> bytes:
        """The first body: the probe request."""
        return self.bodies[0]


def _rows(info: dict) -> list[list[float]]:
    return info.get("pool") or [info["row"]]


class Adapter:
    name = "?"

    def __init__(self, model: str, info: dict, workdir: Path, args: argparse.Namespace):
        self.model, self.info, self.workdir, self.args = model, info, workdir, args
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def workers(self) -> int:
        """Worker processes this server runs (a peer's default unless --peer-workers)."""
        return getattr(self.args, "peer_workers", None) or 1

    def prepare(self) -> None:
        pass

    def server(self, port: int) -> Server:
        raise NotImplementedError

    def targets(self) -> list[Target]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


class MlflowAdapter(Adapter):
    """``mlflow models serve --env-manager local`` from bench/.venv-mlflow (1 uvicorn worker by
    default; --peer-workers passes -w)."""

    name = "mlflow"

    def _env(self) -> dict[str, str]:
        env = clean_env("MLFLOW_")
        # `mlflow models serve` starts a bare `uvicorn`: the venv's bin must be on PATH (else 127)
        env["PATH"] = f"{MLFLOW_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{self.workdir / 'mlflow.db'}"
        return env

    def prepare(self) -> None:
        py = MLFLOW_VENV / "bin" / "python"
        if not (MLFLOW_VENV / "bin" / "mlflow").exists():
            raise Skip(f"{MLFLOW_VENV}/bin/mlflow missing: run bash bench/setup.sh first")
        t0 = time.monotonic()
        r = subprocess.run(
            [str(py), str(SERVING_DIR / "mlflow_log.py"), str(self.info["path"]), self.model],
            env=self._env(),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=600,
        )
        (self.workdir / "log_model.log").write_text(r.stdout + r.stderr)
        m = re.search(r"^MODEL_URI=(\S+)", r.stdout, re.M)
        if r.returncode != 0 or not m:
            raise RuntimeError(
                f"logging {self.model} to MLflow failed ({r.returncode}):\n"
                f"{(r.stdout + r.stderr)[-2000:]}"
            )
        self.model_uri = m.group(1)
        log(f"mlflow: logged {self.model} as {self.model_uri} in {time.monotonic() - t0:.1f}s")

    def server(self, port):
        cmd = [
            str(MLFLOW_VENV / "bin" / "mlflow"),
            "models",
            "serve",
            "-m",
            self.model_uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ]
        if self.args.peer_workers:
            cmd += ["-w", str(self.args.peer_workers)]
        return Server("mlflow", cmd, self._env(), self.workdir / "server.log", cwd=self.workdir)

    def targets(self):
        return [Target("mlflow", "/invocations", [body_mlflow(r) for r in _rows(self.info)])]

    def describe(self):
        return f"MLflow {_pkg_version(MLFLOW_VENV, 'mlflow')}"


class BentomlAdapter(Adapter):
    """``bentoml serve bento_service:Classifier`` from bench/.venv-bentoml, adaptive batching."""

    name = "bentoml"

    def prepare(self):
        if not (BENTOML_VENV / "bin" / "bentoml").exists():
            raise Skip(f"{BENTOML_VENV}/bin/bentoml missing: run bash bench/setup.sh first")

    def server(self, port):
        env = clean_env("BENTOML_")
        env["PATH"] = f"{BENTOML_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["BENCH_MODEL_PATH"] = str(self.info["path"])
        env["BENTOML_HOME"] = str(self.workdir / "bentoml_home")
        env["BENTOML_DO_NOT_TRACK"] = "true"
        env["BENCH_BENTO_MAX_BATCH"] = str(self.args.bento_max_batch)
        env["BENCH_BENTO_MAX_LATENCY_MS"] = str(self.args.bento_max_latency_ms)
        if self.args.peer_workers:
            env["BENCH_BENTO_WORKERS"] = str(self.args.peer_workers)
        cmd = [
            str(BENTOML_VENV / "bin" / "bentoml"),
            "serve",
            "bento_service:Classifier",
            "--working-dir",
            str(SERVING_DIR),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        return Server("bentoml", cmd, env, self.workdir / "server.log", cwd=self.workdir)

    def targets(self):
        return [Target("bentoml", "/predict", [body_bento(r) for r in _rows(self.info)])]

    def describe(self):
        return f"BentoML {_pkg_version(BENTOML_VENV, 'bentoml')}"


def _uvicorn_cmd(app: str, port: int, workers: int | None) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--app-dir",
        str(SERVING_DIR),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    if workers:
        cmd += ["--workers", str(workers)]
    return cmd


class FastapiAdapter(Adapter):
    """bench/serving/fastapi_app.py under uvicorn, in this (modelyard's) environment."""

    name = "fastapi"

    def server(self, port):
        env = clean_env()
        env["BENCH_MODEL_PATH"] = str(self.info["path"])
        return Server(
            "fastapi",
            _uvicorn_cmd("fastapi_app:app", port, self.args.peer_workers),
            env,
            self.workdir / "server.log",
        )

    def targets(self):
        return [Target("fastapi", "/invocations", [body_mlflow(r) for r in _rows(self.info)])]

    def describe(self):
        import fastapi
        import uvicorn

        return f"FastAPI {fastapi.__version__} (uvicorn {uvicorn.__version__})"


class BareAdapter(Adapter):
    """bench/serving/bare_asgi.py: fixed answer, parses nothing; ``--workers`` worker processes
    forked by a parent, each on its own SO_REUSEPORT socket, as modelyard's gateway runs."""

    name = "bare"

    @property
    def workers(self) -> int:
        return self.args.workers

    def server(self, port):
        cmd = [
            sys.executable,
            str(SERVING_DIR / "bare_asgi.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(self.workers),
        ]
        return Server(f"bare-{self.workers}w", cmd, clean_env(), self.workdir / "server.log")

    def targets(self):
        bodies = [body_mlflow(r) for r in _rows(self.info)]
        return [Target(f"bare-{self.workers}w", "/invocations", bodies)]

    def describe(self):
        import uvicorn

        return f"bare ASGI (uvicorn {uvicorn.__version__} + uvloop + httptools)"


class Bare1Adapter(BareAdapter):
    """The bare app with one worker process: the reference of the one-worker peers."""

    name = "bare-1w"

    @property
    def workers(self) -> int:
        return 1


def _modelyard_setup(home: str, model_path: str, name: str) -> None:
    """Runs in a spawned child process: log the model with modelyard's SDK, alias champion."""
    import joblib
    import numpy as np
    import pandas as pd

    from modelyard import Client

    model = joblib.load(model_path)
    X = pd.DataFrame(np.random.default_rng(SEED).normal(size=(5, 20)), columns=COLUMNS)
    c = Client(home)
    v = c.log_model(model, name, input_example=X.head(5))
    c.set_alias(name, "champion", v.version)


class ModelyardAdapter(Adapter):
    """modelyard's serving gateway. Assumed (adjust here if it differs):

    - setup, before the server starts: SDK ``Client(home).log_model(model, name,
      input_example=X.head(5))`` + ``set_alias(name, "champion", version)`` (in a child
      process), then ``python -m modelyard endpoints create NAME --model models:/NAME@champion``,
      both with ``MODELYARD_HOME=<home>``;
    - server: ``python -m modelyard serve --host 127.0.0.1 --port PORT --workers N`` (without
      ``--workers`` if args.workers is unset: one per core), ``MODELYARD_HOME=<home>``;
    - rows: "modelyard" = MLflow format POST /endpoints/NAME/invocations (dataframe_split);
      "modelyard-v2" = OIP v2 POST /v2/models/NAME/infer (one FP64 input per column).
    """

    name = "modelyard"

    @property
    def workers(self) -> int:
        return getattr(self.args, "workers", None) or os.cpu_count() or 1

    @property
    def home(self) -> Path:
        return self.workdir / "home"

    def _env(self) -> dict[str, str]:
        env = clean_env("MODELYARD_")
        env["MODELYARD_HOME"] = str(self.home)
        src = str(REPO_DIR / "src")
        env["PYTHONPATH"] = src  # the work tree's modelyard, even if not pip-installed
        return env

    def _cli(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "modelyard", *argv],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.workdir,
        )

    def prepare(self):
        # Is the gateway there yet? (`serve` and `endpoints` commands)
        for cmd in (["serve", "--help"], ["endpoints", "create", "--help"]):
            r = self._cli(*cmd)
            if r.returncode != 0:
                raise Skip(
                    f"`python -m modelyard {' '.join(cmd[:-1])}` is not available yet "
                    f"(exit {r.returncode}: {(r.stderr or r.stdout).strip()[-200:]})"
                )
        self.home.mkdir(parents=True, exist_ok=True)
        p = mp.get_context("spawn").Process(
            target=_modelyard_setup, args=(str(self.home), str(self.info["path"]), self.model)
        )
        old = os.environ.get("MODELYARD_HOME")
        os.environ["MODELYARD_HOME"] = str(self.home)  # inherited by the spawned child
        try:
            p.start()
            p.join(300)
        finally:
            if old is None:
                os.environ.pop("MODELYARD_HOME", None)
            else:
                os.environ["MODELYARD_HOME"] = old
        if p.exitcode != 0:
            raise RuntimeError(
                f"modelyard SDK setup (log_model/set_alias) failed: exit {p.exitcode}"
            )
        r = self._cli(
            "endpoints", "create", self.model, "--model", f"models:/{self.model}@champion"
        )
        (self.workdir / "endpoint_create.log").write_text(r.stdout + r.stderr)
        if r.returncode != 0:
            raise RuntimeError(
                f"modelyard endpoints create failed ({r.returncode}): "
                f"{(r.stderr or r.stdout)[-1000:]}"
            )

    def server(self, port):
        # Start like an installed copy: `pip install` compiles bytecode (the peers' venvs have
        # it), but a source tree on PYTHONPATH under PYTHONDONTWRITEBYTECODE=1 (set on this
        # machine) never gets any, and recompiling modelyard's modules added ~0.25 s to every
        # cold start. compileall skips the files whose bytecode is current.
        compileall.compile_dir(Path(self._env()["PYTHONPATH"]) / "modelyard", quiet=1)
        cmd = [
            sys.executable,
            "-m",
            "modelyard",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        if getattr(self.args, "workers", None):
            cmd += ["--workers", str(self.args.workers)]
        return Server("modelyard", cmd, self._env(), self.workdir / "server.log", cwd=self.workdir)

    def targets(self):
        rows = _rows(self.info)
        return [
            Target(
                "modelyard",
                f"/endpoints/{self.model}/invocations",
                [body_mlflow(r) for r in rows],
            ),
            Target("modelyard-v2", f"/v2/models/{self.model}/infer", [body_v2(r) for r in rows]),
        ]

    def describe(self):
        with contextlib.suppress(Exception):
            import importlib.metadata as md

            return f"modelyard {md.version('modelyard')}"
        return "modelyard"


ADAPTERS: dict[str, type[Adapter]] = {
    "mlflow": MlflowAdapter,
    "bentoml": BentomlAdapter,
    "fastapi": FastapiAdapter,
    "bare-1w": Bare1Adapter,
    "bare": BareAdapter,
    "modelyard": ModelyardAdapter,
}


def _pkg_version(venv: Path, pkg: str) -> str:
    r = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            f"import importlib.metadata as m; print(m.version({pkg!r}))",
        ],
        capture_output=True,
        text=True,
    )
    return r.stdout.strip() or "?"


# ----------------------------------------------------------------------------------------
# wrk
# ----------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        return float("nan")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    res: dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else float("nan")
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.0+)?%\s+(\S+)", out, re.M)
        res[f"p{pct}"] = _ms(m.group(1)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    res["errors"] = res["non2xx"] + res["socket_errors"]
    return res


def run_wrk(
    url: str, body_file: Path, conc: int, threads: int, duration: float, timeout_s: float
) -> dict[str, Any]:
    """One wrk run POSTing the bodies of ``body_file`` (one per line, cycled) to ``url``."""
    cmd = [
        "wrk",
        f"-t{min(threads, conc)}",
        f"-c{conc}",
        f"-d{duration:g}s",
        "--latency",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(LUA),
        url,
    ]
    env = dict(os.environ, WRK_BODY_FILE=str(body_file))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=duration + timeout_s + 30
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0 or "Requests/sec" not in r.stdout:
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stdout[-500:]} {r.stderr[-500:]}")
    res = parse_wrk(r.stdout)
    res["wrk_cpu"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    res["raw"] = r.stdout
    return res


# ----------------------------------------------------------------------------------------
# In-process ceiling
# ----------------------------------------------------------------------------------------


def _time_calls(fn, duration: float) -> dict[str, float]:
    for _ in range(50):
        fn()
    lat = []
    t0 = time.perf_counter()
    end = t0 + duration
    while True:
        a = time.perf_counter()
        fn()
        b = time.perf_counter()
        lat.append(b - a)
        if b >= end:
            break
    total = time.perf_counter() - t0
    lat.sort()
    return {
        "calls_s": len(lat) / total,
        "p50": lat[len(lat) // 2] * 1e3,
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3,
    }


def inprocess(info: dict, duration: float) -> dict[str, dict[str, float]]:
    import numpy as np
    import pandas as pd

    model = info["model"]
    df = pd.DataFrame([info["row"]], columns=COLUMNS)
    out = {"sklearn predict": _time_calls(lambda: model.predict(df), duration)}
    try:
        import onnxruntime as ort
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        onx = convert_sklearn(
            model,
            initial_types=[("input", FloatTensorType([None, 20]))],
            options={id(model): {"zipmap": False}},
        )
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(onx.SerializeToString(), so, providers=["CPUExecutionProvider"])
        x = np.asarray([info["row"]], dtype=np.float32)
        label = sess.get_outputs()[0].name
        got = int(sess.run([label], {"input": x})[0][0])
        if got != info["expected"]:
            log(f"onnxruntime predicts {got}, sklearn {info['expected']} (float32 rounding?)")
        out["onnxruntime (skl2onnx)"] = _time_calls(
            lambda: sess.run([label], {"input": x}), duration
        )
    except ImportError as e:
        log(f"ONNX ceiling skipped: {e}")
    return out


# ----------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------


@dataclass
class Cell:
    """The rounds measured for one (model, clients, row)."""

    rounds: list[dict] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        return [r[key] for r in self.rounds if r.get(key) == r.get(key)]

    def med(self, key: str) -> float:
        vals = self.values(key)
        return statistics.median(vals) if vals else float("nan")

    def median_round(self) -> dict:
        rs = sorted(self.rounds, key=lambda r: r["rps"])
        return rs[(len(rs) - 1) // 2]


@dataclass
class Live:
    adapter: Adapter
    server: Server
    base: str
    targets: list[Target]
    body_files: dict[str, Path]

    @property
    def label(self) -> str:
        """The server's name in the tables: its first row's."""
        return self.targets[0].row


def cpu_by_process(before: dict, after: dict) -> list[tuple[str, int, float]]:
    """[(label, pid, cpu seconds)] over the window, every process of the tree, biggest first."""
    out = []
    for pid, (cpu, _) in after.items():
        out.append((proc_label(pid), pid, cpu - before.get(pid, (0.0, 0))[0]))
    return sorted(out, key=lambda x: -x[2])


def start_server(
    system: str, model: str, info: dict, args, outdir: Path, meta: dict, started: list[Server]
) -> Live:
    """Prepare and start one server, probe every target with a few of its bodies, write the
    body files for wrk and read the idle tree's PSS."""
    wd = outdir / model / system
    adapter = ADAPTERS[system](model, info, wd, args)
    adapter.prepare()
    port = free_port()
    server = adapter.server(port)
    started.append(server)
    server.start()
    assert server.proc is not None
    base = f"http://127.0.0.1:{port}"
    targets = adapter.targets()
    cold, _ = wait_ready(server, base + targets[0].path, targets[0].body, args.start_timeout)
    body_files = {}
    for t in targets:
        if any(b"\n" in b for b in t.bodies):
            raise RuntimeError(f"{t.row}: a body spans lines; post.lua reads one per line")
        bf = wd / f"bodies-{t.row}.jsonl"
        bf.write_bytes(b"\n".join(t.bodies) + b"\n")
        body_files[t.row] = bf
        for body in t.bodies[:3]:  # a few different rows answer 2xx before any load
            code, resp = post(base + t.path, body, timeout=30)
            if not 200 <= code < 300:
                raise RuntimeError(f"{t.row}: POST {t.path} -> {code}: {resp[:300]!r}")
        log(
            f"{t.row}: POST {t.path} -> {code} {resp[:120].decode(errors='replace')}  "
            f"({len(t.bodies)} distinct bodies, {len(t.bodies[0])}-{max(map(len, t.bodies))} B)"
        )
        # A response cache could still serve a pool cycled many times a second: say so if
        # the server reports one (modelyard: x-modelyard-cache).
        cache = {k: v for k, v in LAST_HEADERS.items() if "cache" in k}
        if cache:
            log(f"{t.row}: cache headers {cache}: repeated rows may be served from a cache")
            meta.setdefault("cache_headers", {})[t.row] = cache
        meta.setdefault("cold", {})[(model, t.row)] = cold
        meta.setdefault("sample", {})[(model, t.row)] = resp[:200].decode(errors="replace")
        meta.setdefault("rows", {})[(model, t.row)] = {
            "system": system,
            "server": targets[0].row,
            "workers": adapter.workers,
        }
    meta.setdefault("versions", {})[system] = adapter.describe()
    lv = Live(adapter, server, base, targets, body_files)
    pss = tree_pss(server.proc.pid)
    meta.setdefault("pss", {})[(model, lv.label)] = [pss]
    meta.setdefault("nprocs", {})[(model, lv.label)] = len(tree_snapshot(server.proc.pid))
    log(
        f"{lv.label}: {adapter.workers} worker(s), "
        f"{meta['nprocs'][(model, lv.label)]} processes, idle PSS {pss / 2**20:.1f} MiB"
    )
    return lv


def measure(lv: Live, t: Target, conc: int, args) -> dict[str, Any]:
    """One measured wrk run of target ``t``, with the server tree's CPU, processes and PSS."""
    assert lv.server.proc is not None
    pid = lv.server.proc.pid
    before = tree_snapshot(pid)
    machine_before = machine_cpu()
    res = run_wrk(
        lv.base + t.path, lv.body_files[t.row], conc, args.threads, args.duration, args.wrk_timeout
    )
    after = tree_snapshot(pid)
    machine_after = machine_cpu()
    res["procs"] = cpu_by_process(before, after)
    res["server_cpu"] = sum(c for _, _, c in res["procs"])
    res["cpu_us"] = res["server_cpu"] / res["requests"] * 1e6 if res["requests"] else float("nan")
    # The rest of the machine during the run: other processes, and time the host took the
    # vCPUs away (steal).
    res["other_cpu"] = machine_after[0] - machine_before[0] - res["server_cpu"] - res["wrk_cpu"]
    res["steal"] = machine_after[1] - machine_before[1]
    res["rss"] = sum(r for _, r in after.values())
    res["nprocs"] = len(after)
    res["pss"] = tree_pss(pid)
    return res


def run_model(
    model: str,
    info: dict,
    systems: list[str],
    args,
    outdir: Path,
    results: dict,
    meta: dict,
    started: list[Server],
) -> None:
    la = os.getloadavg()
    log(f"=== model {model}: load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    ip = inprocess(info, args.inproc_duration)
    for k, v in ip.items():
        meta.setdefault("inproc", {})[(model, k)] = v
        log(
            f"{model} in-process {k}: {v['calls_s']:,.0f} calls/s "
            f"(p50 {v['p50'] * 1e3:.0f} us, p99 {v['p99'] * 1e3:.0f} us)"
        )
    live: dict[str, Live] = {}
    try:
        for system in systems:
            try:
                live[system] = start_server(system, model, info, args, outdir, meta, started)
            except Skip as e:
                log(f"SKIP {system}: {e}")
                meta.setdefault("skipped", {})[system] = str(e)
            except Exception as e:
                import traceback

                traceback.print_exc()
                meta.setdefault("failures", []).append(
                    f"{model}/{system}: {type(e).__name__}: {str(e)[:300]}"
                )
                log(f"FAILED {model}/{system}: {e}")
        # warm-up: one discarded run per target at the highest client count
        for lv in live.values():
            for t in lv.targets:
                with contextlib.suppress(Exception):
                    r = run_wrk(
                        lv.base + t.path,
                        lv.body_files[t.row],
                        max(args.clients),
                        args.threads,
                        args.warmup,
                        args.wrk_timeout,
                    )
                    log(f"warm-up {model} {t.row}: {r['rps']:.0f} req/s (discarded)")
        pairs = [(lv, t) for lv in live.values() for t in lv.targets]
        for rnd in range(args.rounds):
            la = os.getloadavg()
            meta.setdefault("load_rounds", []).append((model, rnd + 1, la))
            log(f"--- {model} round {rnd + 1}/{args.rounds}: load average {la[0]:.2f}")
            k = rnd % len(pairs) if pairs else 0
            for conc in args.clients:
                for lv, t in pairs[k:] + pairs[:k]:  # order rotated each round
                    if not lv.server.alive():
                        msg = f"{model}/{lv.label} died; see {lv.server.log_path}"
                        if msg not in meta.setdefault("failures", []):
                            meta["failures"].append(msg)
                        continue
                    res = measure(lv, t, conc, args)
                    res["round"] = rnd
                    raw = res.pop("raw")
                    (lv.adapter.workdir / f"wrk-{t.row}-c{conc}-r{rnd + 1}.txt").write_text(raw)
                    results.setdefault((model, conc, t.row), Cell()).rounds.append(res)
                    # The tree's PSS after its last run of each round: growth over rounds.
                    track = meta["pss"][(model, lv.label)]
                    track += [float("nan")] * (rnd + 2 - len(track))
                    track[rnd + 1] = res["pss"]
                    log(
                        f"{model} c{conc:<3d} round {rnd + 1}/{args.rounds} {t.row:13s} "
                        f"{res['rps']:9.1f} req/s p50 {res['p50']:8.2f} ms "
                        f"p99 {res['p99']:8.2f} ms err {res['errors']:5d}  "
                        f"{res['cpu_us']:7.1f} us/req (server {res['server_cpu']:.1f}s "
                        f"wrk {res['wrk_cpu']:.1f}s other {res['other_cpu']:.1f}s "
                        f"steal {res['steal']:.1f}s) PSS {res['pss'] / 2**20:.1f} MiB"
                    )
    finally:
        for lv in live.values():
            lv.server.stop()


# ----------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------


def fmt(x: float, nd: int = 1) -> str:
    return "—" if x != x else f"{x:,.{nd}f}"


def spread(vals: list[float], nd: int = 1, unit: str = "") -> str:
    """Median of ``vals`` and, with more than one, their range (min to max)."""
    vals = [v for v in vals if v == v]
    if not vals:
        return "—"
    med = fmt(statistics.median(vals), nd) + unit
    return med if min(vals) == max(vals) else f"{med} ({fmt(min(vals), nd)}–{fmt(max(vals), nd)})"  # noqa: RUF001


def round_ratios(a: Cell, b: Cell | None) -> list[float]:
    """req/s of ``a`` over req/s of ``b`` in the same round, for every round both ran."""
    if b is None:
        return []
    base = {r["round"]: r["rps"] for r in b.rounds}
    return [r["rps"] / base[r["round"]] for r in a.rounds if base.get(r["round"], 0) > 0]


def ratio_text(vals: list[float]) -> str:
    return spread(vals, 2 if all(v >= 0.1 for v in vals) else 4, "×")  # noqa: RUF001


def build_rows(results: dict, models: list[str], args, meta: dict):
    """The report's tables, each as (head, rows): main, CPU/cold start, PSS growth, in-process."""
    head = [
        "model",
        "clients",
        "server",
        "workers / processes",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "CPU µs/req",
        "PSS MiB idle",
        "PSS MiB after",
        "÷ bare (same workers)",
        "÷ mlflow",
        "÷ bentoml",
    ]
    chead = [
        "model",
        "clients",
        "server",
        "cold start s",
        "server CPU s (per process)",
        "wrk CPU s",
        "other / steal CPU s",
    ]
    rows, crows = [], []
    nan = float("nan")
    row_info = meta.get("rows", {})
    for m in models:
        order = [r for (mm, r) in row_info if mm == m]
        bare_of = {
            row_info[(m, r)]["workers"]: r
            for r in order
            if row_info[(m, r)]["system"] in ("bare", "bare-1w")
        }
        for conc in args.clients:
            cells = {r: results[(m, conc, r)] for r in order if (m, conc, r) in results}
            for r, c in cells.items():
                ri = row_info[(m, r)]
                bare = cells.get(bare_of.get(ri["workers"], ""))
                total_req = sum(x["requests"] for x in c.rounds)
                errs = sum(x["errors"] for x in c.rounds)
                last = c.rounds[-1]
                idle = meta.get("pss", {}).get((m, ri["server"]), [nan])[0]
                rows.append(
                    [
                        m,
                        str(conc),
                        r,
                        f"{ri['workers']} / {last['nprocs']}",
                        spread(c.values("rps"), 0),
                        spread(c.values("p50"), 2),
                        spread(c.values("p99"), 2),
                        f"{errs}/{total_req}" if errs else "0",
                        spread(c.values("cpu_us"), 0),
                        fmt(idle / 2**20, 0),
                        fmt(last["pss"] / 2**20, 0),
                        ratio_text(round_ratios(c, bare)),
                        ratio_text(round_ratios(c, cells.get("mlflow"))),
                        ratio_text(round_ratios(c, cells.get("bentoml"))),
                    ]
                )
                mr = c.median_round()
                procs = [(lbl, cpu) for lbl, _, cpu in mr["procs"] if cpu >= 0.05]
                per = ", ".join(f"{lbl} {cpu:.1f}" for lbl, cpu in procs[:6]) or "0"
                crows.append(
                    [
                        m,
                        str(conc),
                        r,
                        fmt(meta.get("cold", {}).get((m, r), nan), 2),
                        f"{mr['server_cpu']:.1f} ({per})",
                        f"{mr['wrk_cpu']:.1f}",
                        f"{mr.get('other_cpu', nan):.1f} / {mr.get('steal', nan):.1f}",
                    ]
                )
    ghead = ["model", "server", "workers / processes", "idle"] + [
        f"after round {i + 1}" for i in range(args.rounds)
    ]
    grows = []
    for (m, label), track in meta.get("pss", {}).items():
        ri = row_info[(m, label)]
        vals = [fmt(x / 2**20, 1) for x in track]
        vals += ["—"] * (args.rounds + 1 - len(vals))
        grows.append([m, label, f"{ri['workers']} / {meta['nprocs'][(m, label)]}", *vals])
    ihead = ["model", "in-process (1 row, 1 thread)", "calls/s", "p50 µs", "p99 µs"]
    irows = [
        [m, k, fmt(v["calls_s"], 0), fmt(v["p50"] * 1e3, 0), fmt(v["p99"] * 1e3, 0)]
        for (m, k), v in meta.get("inproc", {}).items()
    ]
    return (head, rows), (chead, crows), (ghead, grows), (ihead, irows)


def _loads(la) -> str:
    return " ".join(f"{x:.2f}" for x in la) if la else "?"


def report(results: dict, models: list[str], args, meta: dict, outdir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    tables = build_rows(results, models, args, meta)
    titles = [
        f"serving: medians (min–max) of {args.rounds} round(s), wrk -t{args.threads} "  # noqa: RUF001
        f"-d{args.duration:g}s, one-row JSON POSTs cycled over {args.pool} distinct rows",
        "cold start, and where the CPU went in the median round (s)",
        "PSS MiB of each server's process tree, idle and after each round",
        f"in-process ceiling ({args.inproc_duration:g} s each)",
    ]
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 260)
    for title, (head, rows) in zip(titles, tables, strict=True):
        t = Table(title=title)
        for h in head:
            t.add_column(h, justify="left" if h in ("model", "server") else "right")
        group = 2 if "clients" in head else 1  # a section per (model, clients) or model
        prev = None
        for r in rows:
            if prev is not None and r[:group] != prev:
                t.add_section()
            prev = r[:group]
            t.add_row(*r)
        console.print(t)

    versions = meta.get("versions", {})
    w = args.workers
    peers = args.peer_workers
    lines = [
        SECTION,
        "",
        f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} cores "
        f"({platform.machine()}), Python {platform.python_version()}; "
        f"`python bench/serving/run.py {' '.join(sys.argv[1:])}`; "
        f"{meta.get('elapsed', 0) / 60:.0f} min.",
        "",
        f"- Servers: {', '.join(dict.fromkeys(versions[s] for s in SERVERS if s in versions))}. "
        f"modelyard `serve --workers {w}` and the bare ASGI app (bare-{w}w) run {w} worker "
        f"process(es) each, both as a parent that forks its workers, each worker on its own "
        f"SO_REUSEPORT socket; bare-1w is the bare app in one process. "
        + (
            f"MLflow, BentoML and FastAPI with {peers} workers (--peer-workers). "
            if peers
            else "MLflow (`models serve`, 1 uvicorn worker under the mlflow CLI), BentoML "
            "(1 worker under its parent) and FastAPI (1 uvicorn process) in their defaults. "
        )
        + '"workers / processes" = worker processes started / processes in the server\'s '
        f"tree. BentoML adaptive batching on (max_batch_size {args.bento_max_batch}, "
        f"max_latency_ms {args.bento_max_latency_ms}). FastAPI and bare without access log.",
        f"- Models: scikit-learn LogisticRegression (`lr`) and RandomForestClassifier (`rf`, 100 "
        f"trees, max_depth 8), fitted on a DataFrame f0..f19 (seed {SEED}). Each request is one "
        f"row, the next of {args.pool} distinct training rows (seed {SEED + 1}) cycled by "
        f"post.lua, the same rows for every server in its format: MLflow `dataframe_split` "
        f'(mlflow, fastapi, bare, modelyard), `{{"input": [[...]]}}` (bentoml /predict), OIP '
        f"v2 one FP64 input per column (modelyard-v2).",
        f"- Load: `wrk -t{args.threads} -c<clients> -d{args.duration:g}s --latency "
        f"--timeout {args.wrk_timeout:g}s -s bench/serving/post.lua` on 127.0.0.1, sharing the "
        f"cores with the server. Each server started fresh per model, one {args.warmup:g} s "
        f"warm-up run per row discarded, then {args.rounds} round(s) over all servers and "
        f"client counts, the order rotated each round. Figures are medians over rounds with "
        f"the range (min–max); errors = (non-2xx + socket errors)/requests over all rounds; "  # noqa: RUF001
        f"CPU µs/req = utime+stime of the server's whole process tree (/proc) during the run "
        f"÷ requests; PSS = sum of `Pss:` of /proc/PID/smaps_rollup over the tree (shared "
        f"pages counted once), idle after start-up and after the row's last round; ratios "
        f"are req/s ÷ req/s in the same round and clients, then median (range); ÷ bare = "
        f"against the bare app with the row's worker count; cold start = process start to "
        f"first 2xx prediction; other / steal = the rest of the machine's busy CPU in the "
        f"median round (/proc/stat, minus server and wrk) / CPU the hypervisor took.",
        "- The machine is shared: other sessions' processes may run beside the benchmark "
        "(compare the load average with the cores); judge ratios within one run.",
        f"- Load average (1/5/15 min) before: {_loads(meta.get('load_before'))}; at each "
        f"round's start (1 min): "
        + ", ".join(f"{m} r{r} {la[0]:.2f}" for m, r, la in meta.get("load_rounds", []))
        + f"; after: {_loads(meta.get('load_after'))}.",
    ]
    for row, headers in meta.get("cache_headers", {}).items():
        lines.append(f"- **Cache headers on {row}:** {headers} (rows repeat every pool cycle).")
    for s, why in meta.get("skipped", {}).items():
        lines.append(f"- **Skipped {s}:** {why}")
    for f in meta.get("failures", []):
        lines.append(f"- **Failed:** {f}")
    for head, rows in tables:
        lines += ["", md_table(head, rows)]
    lines.append("")
    section = "\n".join(lines)
    print(section)
    (outdir / "section.md").write_text(section)
    if args.no_write:
        log(f"--no-write: bench/RESULTS.md untouched; section in {outdir / 'section.md'}")
    else:
        write_results(section)
        log(f"updated {RESULTS_MD}")


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument("--models", default="lr,rf", help=f"comma list from {MODELS}")
    ap.add_argument(
        "--clients",
        "--concurrency",
        default="16,64",
        help="comma list of wrk connection counts",
    )
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"comma list from {SERVERS} (bare: --workers processes)",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=2,
        help="worker processes of modelyard's gateway and of the bare app (bare-1w: 1)",
    )
    ap.add_argument(
        "--peer-workers",
        type=int,
        default=None,
        help="worker processes for MLflow, BentoML and FastAPI (default: each one's default, 1)",
    )
    ap.add_argument("--pool", type=int, default=1000, help="distinct rows cycled (max 2000)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (-t)")
    ap.add_argument("--warmup", type=float, default=2.0, help="discarded wrk run, seconds")
    ap.add_argument(
        "--wrk-timeout",
        type=float,
        default=10.0,
        help="wrk --timeout: slower responses count as socket timeouts",
    )
    ap.add_argument(
        "--inproc-duration",
        type=float,
        default=3.0,
        help="seconds per in-process ceiling measurement",
    )
    ap.add_argument(
        "--bento-max-batch",
        type=int,
        default=100,
        help="BentoML max_batch_size (100 = BentoML's default)",
    )
    ap.add_argument(
        "--bento-max-latency-ms",
        type=int,
        default=60000,
        help="BentoML max_latency_ms (60000 = BentoML's default)",
    )
    ap.add_argument("--start-timeout", type=float, default=180.0)
    ap.add_argument(
        "--no-write",
        "--no-results",
        action="store_true",
        help="do not touch bench/RESULTS.md (the section still goes to stdout and the run dir)",
    )
    args = ap.parse_args(argv)
    args.models = _csv(args.models)
    args.servers = _csv(args.servers)
    args.clients = [int(x) for x in _csv(args.clients)]
    if bad := set(args.models) - set(MODELS):
        ap.error(f"unknown models {sorted(bad)}")
    if bad := set(args.servers) - set(SERVERS):
        ap.error(f"unknown servers {sorted(bad)}")
    if args.workers < 1 or (args.peer_workers is not None and args.peer_workers < 1):
        ap.error("--workers and --peer-workers must be at least 1")
    if not 1 <= args.pool <= 2000:
        ap.error("--pool must be between 1 and 2000 (the training rows)")
    if not args.clients or min(args.clients) < 1 or args.rounds < 1 or args.duration <= 0:
        ap.error("--clients, --rounds and --duration must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: run bash bench/setup.sh (apt-get install -y wrk)")
    systems = [s for s in SERVERS if s in args.servers]
    if args.workers == 1 and "bare" in systems and "bare-1w" in systems:
        systems.remove("bare-1w")  # the same server twice
    outdir = BENCH_DIR / "runs" / f"serving-{time.strftime('%Y%m%d-%H%M%S')}"
    outdir.mkdir(parents=True, exist_ok=True)
    la = os.getloadavg()
    log(f"work dir {outdir}")
    log(
        f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} on {os.cpu_count()} cores"
        + ("  (busy machine: numbers will be noisy)" if la[0] > 1.0 else "")
    )

    # SIGTERM behaves like Ctrl-C so that the finally blocks stop the servers.
    def _term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    # Ctrl-C raises KeyboardInterrupt even when started from a shell that ignores SIGINT
    # for background jobs (a non-interactive `cmd &` inherits SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    results: dict = {}
    meta: dict = {"load_before": la}
    started: list[Server] = []
    code = 0
    t0 = time.monotonic()
    try:
        log("fitting models")
        infos = make_models(outdir, args.models, args.pool)
        for m in args.models:
            run_model(m, infos[m], systems, args, outdir, results, meta, started)
    except KeyboardInterrupt:
        log("interrupted: stopping servers")
        code = 130
    except Exception as e:
        import traceback

        traceback.print_exc()
        meta.setdefault("failures", []).append(f"{type(e).__name__}: {str(e)[:300]}")
        code = 1
    finally:
        for s in started:
            s.stop()
    meta["load_after"] = os.getloadavg()
    meta["elapsed"] = time.monotonic() - t0
    log(f"measured in {meta['elapsed']:.0f} s")
    if results and code != 130:
        report(results, args.models, args, meta, outdir)
    (outdir / "raw.json").write_text(
        json.dumps(
            {f"{m}/c{c}/{r}": cell.rounds for (m, c, r), cell in results.items()},
            indent=1,
            default=str,
        )
    )
    for f in meta.get("failures", []):
        log(f"FAILED {f}")
    if meta.get("failures") and code == 0:
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
