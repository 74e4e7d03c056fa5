#!/usr/bin/env python3
"""Control-plane benchmark: modelyard vs an MLflow tracking server, over HTTP on 127.0.0.1.

Operations (each measured for a fixed duration, or a fixed count, with N concurrent clients):

  register-version  create a new version of an existing registered model
  resolve-alias     read the version an alias points at
  log-batch         log BATCH metrics to a run in one call (default 10)
  log-metric        log a single metric to a run

Both servers are started by this script (MLflow from bench/.venv-mlflow, see bench/setup.sh;
modelyard with this interpreter), on SQLite and/or PostgreSQL, and rounds are interleaved
(mlflow, modelyard, mlflow, modelyard, ...). Medians over rounds are printed as a table
(rich, then markdown) and written to bench/RESULTS.md under "## registry".

Run with modelyard's Python (needs httpx, rich, numpy; scikit-learn for the setup model):

    bash bench/setup.sh
    python bench/registry/run.py --backend both
    python bench/registry/run.py --only mlflow --backend sqlite --duration 5 --rounds 1

The load generator is a pool of worker processes (--client-procs, default 1), each running
asyncio + one keep-alive httpx.AsyncClient shared by its share of the --concurrency tasks.
It runs on the same 2 cores as the server under test: the table reports the client's and the
server's CPU use so a client-bound result can be recognised.

The modelyard side is the ``ModelyardAdapter`` class below (one method per operation): adjust
it there if the API differs from what is assumed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent
MLFLOW_VENV = BENCH_DIR / ".venv-mlflow"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
SECTION = "## registry"

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402  (bench/common.py: shared by the harnesses)
from common import (  # noqa: E402
    Server,
    _proc_table,
    descendants,
    free_port,
    log,
    md_table,
    tree_cpu,
)

common.TAG = "registry"


def write_results(section: str) -> None:
    common.write_results(SECTION, section)

OPS = ["register-version", "resolve-alias", "log-batch", "log-metric"]
PG_DSN = dict(host="127.0.0.1", port=5432, user="postgres")
MODEL = "bench"
ALIAS = "champion"




def check(r: httpx.Response, *ok: int) -> httpx.Response:
    if r.status_code not in ok:
        raise RuntimeError(f"{r.request.method} {r.request.url.path} -> {r.status_code}: "
                           f"{r.text[:200]}")
    return r


def now_ms() -> int:
    return int(time.time() * 1000)


# ----------------------------------------------------------------------------------------
# Processes: start, CPU accounting over a whole process tree, stop
# ----------------------------------------------------------------------------------------













def wait_healthy(server: Server, base: str, paths, timeout: float) -> float:
    """Wait for a 200 from any of ``paths``, then for the process tree to go quiet (uvicorn's
    other workers may still be importing). Returns seconds from start to the first 200."""
    assert server.proc is not None
    with httpx.Client(timeout=2) as c:
        while True:
            if not server.alive():
                tail = server.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{server.name} exited during start-up:\n{tail}")
            ok = False
            for p in paths:
                with contextlib.suppress(httpx.HTTPError):
                    if c.get(base + p).status_code == 200:
                        ok = True
                        break
            if ok:
                break
            if time.monotonic() - server.started > timeout:
                raise RuntimeError(f"{server.name} not healthy at {base}{paths} "
                                   f"after {timeout:.0f}s; see {server.log_path}")
            time.sleep(0.25)
    healthy = time.monotonic() - server.started
    t1 = time.monotonic()
    while time.monotonic() - t1 < 60:  # < 10% of a core over 1 s, at most 60 s
        a = tree_cpu(server.proc.pid)
        time.sleep(1.0)
        if tree_cpu(server.proc.pid) - a < 0.10:
            break
    log(f"{server.name} healthy after {healthy:.1f}s, "
        f"quiet after {time.monotonic() - server.started:.1f}s")
    return healthy


# ----------------------------------------------------------------------------------------
# Databases
# ----------------------------------------------------------------------------------------

def psql(sql: str) -> None:
    subprocess.run(["psql", "-h", PG_DSN["host"], "-p", str(PG_DSN["port"]), "-U", PG_DSN["user"],
                    "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
                   check=True, stdout=subprocess.DEVNULL)


def recreate_db(name: str) -> None:
    psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    psql(f"CREATE DATABASE {name}")


# ----------------------------------------------------------------------------------------
# Adapters: one per system. Setup runs in the parent (sync); the op methods run in the
# load-generator processes and get (client, ctx, task_id, i); they raise on failure.
# ``ctx`` must be picklable (plain dict).
# ----------------------------------------------------------------------------------------

class Adapter:
    name = "?"
    health_path = "/health"

    def __init__(self, base_url: str, batch: int = 10):
        self.base_url = base_url
        self.batch = batch

    # parent side
    def server(self, backend: str, workdir: Path, port: int, args: argparse.Namespace) -> Server:
        raise NotImplementedError

    def setup(self, n_tasks: int) -> dict[str, Any]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    # load-generator side
    def op(self, name: str) -> Callable:
        return getattr(self, name.replace("-", "_"))

    async def register_version(self, c: httpx.AsyncClient, ctx: dict, task: int, i: int) -> None:
        raise NotImplementedError

    async def resolve_alias(self, c: httpx.AsyncClient, ctx: dict, task: int, i: int) -> None:
        raise NotImplementedError

    async def log_batch(self, c: httpx.AsyncClient, ctx: dict, task: int, i: int) -> None:
        raise NotImplementedError

    async def log_metric(self, c: httpx.AsyncClient, ctx: dict, task: int, i: int) -> None:
        raise NotImplementedError


def _step(ctx: dict, i: int) -> int:
    # Unique per (run, call) across measurements: MLflow's metric primary key includes the
    # step and the timestamp, so repeated (key, step, timestamp, value) would collide.
    return ctx["seq"] * 10_000_000 + i


class MlflowAdapter(Adapter):
    """MLflow tracking server REST API 2.0, in its default configuration (see --mlflow-workers)."""

    name = "mlflow"
    health_path = "/health"
    api = "/api/2.0/mlflow"

    def server(self, backend, workdir, port, args):
        workdir.mkdir(parents=True, exist_ok=True)
        if backend == "sqlite":
            uri = f"sqlite:///{workdir / 'mlflow.db'}"
        else:
            recreate_db(args.mlflow_db)
            # SQLAlchemy 2.1 (pulled in by MLflow 3.17) maps plain postgresql:// to psycopg 3, which
            # the venv lacks: name psycopg2 (installed by setup.sh) explicitly.
            uri = (f"postgresql+psycopg2://{PG_DSN['user']}@{PG_DSN['host']}:{PG_DSN['port']}"
                   f"/{args.mlflow_db}")
        mlflow = MLFLOW_VENV / "bin" / "mlflow"
        if not mlflow.exists():
            raise SystemExit(f"{mlflow} missing: run bash bench/setup.sh first")
        cmd = [str(mlflow), "server", "--backend-store-uri", uri,
               "--default-artifact-root", str(workdir / "artifacts"),
               "--host", "127.0.0.1", "--port", str(port)]
        if args.mlflow_workers:
            cmd += ["--workers", str(args.mlflow_workers)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        # uvicorn (and the huey job runners) are started by name: the venv's bin must be on PATH
        env["PATH"] = f"{MLFLOW_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env.pop("VIRTUAL_ENV", None)
        env.pop("PYTHONPATH", None)
        return Server(f"mlflow/{backend}", cmd, env, workdir / "server.log")

    def describe(self) -> str:
        with contextlib.suppress(Exception):
            return f"MLflow {httpx.get(self.base_url + '/version', timeout=5).text.strip()}"
        return "MLflow"

    def setup(self, n_tasks):
        a = self.api
        with httpx.Client(base_url=self.base_url, timeout=60) as c:
            check(c.post(f"{a}/registered-models/create", json={"name": MODEL}), 200)
            exp = check(c.post(f"{a}/experiments/create", json={"name": MODEL}), 200)
            exp_id = exp.json()["experiment_id"]

            def new_run(name: str) -> str:
                r = check(c.post(f"{a}/runs/create", json={
                    "experiment_id": exp_id, "run_name": name, "start_time": now_ms()}), 200)
                return r.json()["run"]["info"]["run_id"]

            src_run = new_run("model-source")
            # The server accepts runs:/<run_id>/<path> as a source without the files existing,
            # but only together with the matching run_id (else INVALID_PARAMETER_VALUE).
            source = f"runs:/{src_run}/model"
            mv = check(c.post(f"{a}/model-versions/create", json={
                "name": MODEL, "source": source, "run_id": src_run}), 200).json()
            check(c.post(f"{a}/registered-models/alias", json={
                "name": MODEL, "alias": ALIAS, "version": mv["model_version"]["version"]}), 200)
            runs = [new_run(f"r{k}") for k in range(n_tasks)]
        return {"source": source, "src_run": src_run, "runs": runs}

    async def register_version(self, c, ctx, task, i):
        r = await c.post(f"{self.api}/model-versions/create", json={
            "name": MODEL, "source": ctx["source"], "run_id": ctx["src_run"]})
        check(r, 200)

    async def resolve_alias(self, c, ctx, task, i):
        r = await c.get(f"{self.api}/registered-models/alias",
                        params={"name": MODEL, "alias": ALIAS})
        check(r, 200)
        if "model_version" not in r.json():
            raise RuntimeError(f"alias lookup without model_version: {r.text[:200]}")

    async def log_batch(self, c, ctx, task, i):
        ts, step = now_ms(), _step(ctx, i)
        r = await c.post(f"{self.api}/runs/log-batch", json={
            "run_id": ctx["runs"][task],
            "metrics": [{"key": f"m{k}", "value": 0.5 + i * 1e-6 + k, "timestamp": ts,
                         "step": step} for k in range(self.batch)]})
        check(r, 200)

    async def log_metric(self, c, ctx, task, i):
        r = await c.post(f"{self.api}/runs/log-metric", json={
            "run_id": ctx["runs"][task], "key": "loss", "value": 0.5 + i * 1e-6,
            "timestamp": now_ms(), "step": _step(ctx, i)})
        check(r, 200)


class ModelyardAdapter(Adapter):
    """modelyard's control-plane API (/api/v1). Adjust here if the endpoints change."""

    name = "modelyard"
    health_paths = ("/api/v1/health", "/healthz", "/health", "/api/v1/models")
    api = "/api/v1"

    def server(self, backend, workdir, port, args):
        workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env = {k: v for k, v in env.items() if not k.startswith("MODELYARD_")}
        env["MODELYARD_HOME"] = str(workdir / "home")
        if backend == "postgres":
            recreate_db(args.modelyard_db)
            env["MODELYARD_DATABASE_URL"] = (
                f"postgresql+psycopg://{PG_DSN['user']}@{PG_DSN['host']}:{PG_DSN['port']}"
                f"/{args.modelyard_db}")
        if importlib.util.find_spec("modelyard") is None:  # source tree, not installed
            env["PYTHONPATH"] = os.pathsep.join(
                x for x in (str(REPO_DIR / "src"), env.get("PYTHONPATH")) if x)
        cmd = [sys.executable, "-m", "modelyard", "server", "--host", "127.0.0.1",
               "--port", str(port)]
        return Server(f"modelyard/{backend}", cmd, env, workdir / "server.log")

    def describe(self) -> str:
        with contextlib.suppress(Exception):
            import modelyard
            return f"modelyard {modelyard.__version__}"
        return "modelyard"

    def setup(self, n_tasks):
        a = self.api
        if importlib.util.find_spec("modelyard") is None:
            sys.path.insert(0, str(REPO_DIR / "src"))
        from sklearn.linear_model import LogisticRegression

        from modelyard import Client  # the SDK uploads the model's files over HTTP

        rng = np.random.default_rng(0)
        X = rng.normal(size=(200, 4))
        y = (X[:, 0] + X[:, 1] > 0).astype(int)
        model = LogisticRegression().fit(X, y)

        with httpx.Client(base_url=self.base_url, timeout=120) as c:
            check(c.post(f"{a}/models", json={"name": MODEL}), 200, 201, 409)
            v = Client(self.base_url).log_model(model, MODEL, input_example=X[:5])
            digest = v.manifest_digest
            version = getattr(v, "version", 1)
            check(c.put(f"{a}/models/{MODEL}/aliases/{ALIAS}", json={"version": version}),
                  200, 201, 204)
            exp = check(c.post(f"{a}/experiments", json={"name": MODEL}), 200, 201).json()
            # RunCreate takes "experiment" (name or id), not "experiment_id"
            runs = [check(c.post(f"{a}/runs", json={"experiment": exp["id"], "name": f"r{k}"}),
                          200, 201).json()["id"] for k in range(n_tasks)]
        return {"digest": digest, "runs": runs}

    async def register_version(self, c, ctx, task, i):
        r = await c.post(f"{self.api}/models/{MODEL}/versions",
                         json={"manifest_digest": ctx["digest"]})
        check(r, 201)

    async def resolve_alias(self, c, ctx, task, i):
        r = await c.get(f"{self.api}/models/{MODEL}/aliases/{ALIAS}")
        check(r, 200)
        if "version" not in r.json():
            raise RuntimeError(f"alias lookup without version: {r.text[:200]}")

    async def log_batch(self, c, ctx, task, i):
        ts, step = now_ms(), _step(ctx, i)
        r = await c.post(f"{self.api}/runs/{ctx['runs'][task]}/metrics", json={"metrics": [
            {"key": f"m{k}", "value": 0.5 + i * 1e-6 + k, "step": step, "timestamp": ts}
            for k in range(self.batch)]})
        check(r, 200, 201, 204)

    async def log_metric(self, c, ctx, task, i):
        metric = {"key": "loss", "value": 0.5 + i * 1e-6, "step": _step(ctx, i),
                  "timestamp": now_ms()}
        r = await c.post(f"{self.api}/runs/{ctx['runs'][task]}/metrics", json={"metrics": [metric]})
        check(r, 200, 201, 204)


ADAPTERS: dict[str, type[Adapter]] = {"mlflow": MlflowAdapter, "modelyard": ModelyardAdapter}


# ----------------------------------------------------------------------------------------
# Load generator: persistent worker processes, each an asyncio loop with its share of tasks.
# ----------------------------------------------------------------------------------------

@dataclass
class Job:
    system: str
    base_url: str
    batch: int
    op: str
    ctx: dict
    task_ids: list[int]
    t_start: float      # time.monotonic() (system-wide clock on Linux) when requests begin
    warmup: float       # seconds of requests not counted
    duration: float     # measured seconds (ignored when count is set)
    count: int | None   # ops for this worker to measure instead of a duration


def _worker_main(conn) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    with contextlib.suppress(ImportError):
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    while True:
        job = conn.recv()
        if job is None:
            return
        try:
            conn.send(asyncio.run(_run_job(job)))
        except Exception as e:  # report, keep serving
            conn.send({"fatal": f"{type(e).__name__}: {e}"})


async def _run_job(job: Job) -> dict:
    adapter = ADAPTERS[job.system](job.base_url, job.batch)
    fn = adapter.op(job.op)
    n = len(job.task_ids)
    lat: list[float] = []
    errors = 0
    samples: dict[str, int] = {}
    measure_from = job.t_start + job.warmup
    end = measure_from + job.duration
    remaining = [job.count] if job.count else None
    done_at = [0.0]
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=job.base_url, limits=limits, timeout=30.0) as c:
        async def task(tid: int) -> None:
            nonlocal errors
            i = 0
            while True:
                now = time.monotonic()
                counted: bool | None = None  # duration mode: decided by completion time
                if remaining is None:
                    if now >= end:
                        return
                elif now >= measure_from:
                    if remaining[0] <= 0:
                        return
                    remaining[0] -= 1
                    counted = True
                else:
                    counted = False
                t0 = time.perf_counter()
                try:
                    await fn(c, job.ctx, tid, i)
                    ok = True
                except Exception as e:
                    ok = False
                    msg = f"{type(e).__name__}: {e}"[:160]
                    samples[msg] = samples.get(msg, 0) + 1
                t1 = time.perf_counter()
                i += 1
                tm = time.monotonic()
                if counted is None:
                    counted = measure_from <= tm <= end
                if counted:
                    if ok:
                        lat.append(t1 - t0)
                    else:
                        errors += 1
                    done_at[0] = tm

        delay = job.t_start - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        # CPU of this process over the measured window only (warm-up excluded).
        cpu0 = [None]

        async def mark() -> None:
            await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
            cpu0[0] = (time.process_time(), time.monotonic())

        marker = asyncio.create_task(mark())
        await asyncio.gather(*(task(t) for t in job.task_ids))
        await marker
        cpu_s = time.process_time() - cpu0[0][0]
        wall = max(1e-9, time.monotonic() - cpu0[0][1])
    return {"lat": np.asarray(lat, dtype=np.float64).tobytes(), "errors": errors,
            "samples": samples, "cpu": cpu_s / wall,
            "elapsed": (done_at[0] - measure_from) if job.count else job.duration}


class LoadGen:
    def __init__(self, procs: int):
        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        for _ in range(procs):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker_main, args=(child,), daemon=True)
            p.start()
            self.conns.append(parent)
            self.procs.append(p)

    def run(self, system: str, base_url: str, batch: int, op: str, ctx: dict, concurrency: int,
            warmup: float, duration: float, count: int | None, server_pid: int) -> dict:
        k = len(self.conns)
        shares = [list(range(concurrency))[w::k] for w in range(k)]
        t_start = time.monotonic() + 0.3
        for w, conn in enumerate(self.conns):
            wc = None if not count else count // k + (1 if w < count % k else 0)
            conn.send(Job(system, base_url, batch, op, ctx, shares[w], t_start, warmup,
                          duration, wc))
        # server CPU over the measured window
        time.sleep(max(0.0, t_start + warmup - time.monotonic()))
        s0, w0 = tree_cpu(server_pid), time.monotonic()
        if not count:
            time.sleep(max(0.0, t_start + warmup + duration - time.monotonic()))
            s1, w1 = tree_cpu(server_pid), time.monotonic()
        parts = [conn.recv() for conn in self.conns]
        if count:
            s1, w1 = tree_cpu(server_pid), time.monotonic()
        for p in parts:
            if "fatal" in p:
                raise RuntimeError(f"load generator failed: {p['fatal']}")
        lat = np.concatenate([np.frombuffer(p["lat"], dtype=np.float64) for p in parts])
        errors = sum(p["errors"] for p in parts)
        samples: dict[str, int] = {}
        for p in parts:
            for m, n in p["samples"].items():
                samples[m] = samples.get(m, 0) + n
        elapsed = max(p["elapsed"] for p in parts)
        return {
            "ops": len(lat) / elapsed if elapsed > 0 else 0.0,
            "p50": float(np.percentile(lat, 50)) * 1e3 if len(lat) else float("nan"),
            "p99": float(np.percentile(lat, 99)) * 1e3 if len(lat) else float("nan"),
            "n": len(lat), "errors": errors, "samples": samples,
            "client_cpu": sum(p["cpu"] for p in parts),
            "server_cpu": (s1 - s0) / max(1e-9, w1 - w0),
        }

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(Exception):
                conn.send(None)
        for p in self.procs:
            p.join(3)
            if p.is_alive():
                p.terminate()
                p.join(3)
            if p.is_alive():
                p.kill()


# ----------------------------------------------------------------------------------------
# Orchestration
# ----------------------------------------------------------------------------------------

@dataclass
class Cell:
    rounds: list[dict] = field(default_factory=list)

    def med(self, key: str) -> float:
        vals = [r[key] for r in self.rounds]
        return float(np.median(vals)) if vals else float("nan")

    def errors(self) -> int:
        return sum(r["errors"] for r in self.rounds)

    def calls(self) -> int:
        return sum(r["n"] + r["errors"] for r in self.rounds)


def run_backend(backend: str, systems: list[str], args, loadgen: LoadGen, outdir: Path,
                results: dict, info: dict, servers: list[Server]) -> None:
    live: dict[str, tuple[Adapter, Server, dict]] = {}
    try:
        for system in systems:
            port = free_port()
            adapter = ADAPTERS[system](f"http://127.0.0.1:{port}", args.batch)
            server = adapter.server(backend, outdir / backend / system, port, args)
            servers.append(server)
            server.start()
            paths = getattr(adapter, "health_paths", (adapter.health_path,))
            healthy = wait_healthy(server, adapter.base_url, paths, args.start_timeout)
            ctx = adapter.setup(args.concurrency)
            live[system] = (adapter, server, ctx)
            info.setdefault("startup", {})[f"{system}/{backend}"] = healthy
            info.setdefault("versions", {})[system] = adapter.describe()
            if system == "mlflow":
                info["mlflow_workers"] = _count_uvicorn_workers(server)
        seq = 0
        for rnd in range(args.rounds):
            for system in systems:
                adapter, server, ctx = live[system]
                for op in args.ops:
                    seq += 1
                    if not server.alive():
                        raise RuntimeError(f"{server.name} died; see {server.log_path}")
                    res = loadgen.run(system, adapter.base_url, args.batch, op,
                                      {**ctx, "seq": seq}, args.concurrency, args.warmup,
                                      args.duration, args.count, server.proc.pid)
                    results.setdefault((backend, op, system), Cell()).rounds.append(res)
                    per = {"log-batch": args.batch, "log-metric": 1}.get(op)
                    mps = f" ({res['ops'] * per:8.1f} metrics/s)" if per else ""
                    log(f"{backend:8s} round {rnd + 1}/{args.rounds} {system:9s} {op:16s} "
                        f"{res['ops']:8.1f} ops/s{mps} "
                        f"p50 {res['p50']:7.1f} ms p99 {res['p99']:7.1f} ms "
                        f"err {res['errors']:4d}  cpu client {res['client_cpu']:.2f} "
                        f"server {res['server_cpu']:.2f}")
                    for m, n in list(res["samples"].items())[:3]:
                        log(f"    {n}x {m}")
    finally:
        for _, server, _ in live.values():
            server.stop()


def _count_uvicorn_workers(server: Server) -> int:
    table = _proc_table()
    n = 0
    for pid in descendants(server.proc.pid, table):
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            if b"multiprocessing.spawn" in cmd or b"gunicorn" in cmd:
                n += 1
    return n


# ----------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------

def fmt(x: float, nd: int = 1) -> str:
    return "—" if x != x else f"{x:,.{nd}f}"


def build_rows(results: dict, backends: list[str], systems: list[str], ops: list[str], batch: int):
    head = ["backend", "operation"]
    for s in systems:
        head += [f"{s} ops/s", f"{s} p50 ms", f"{s} p99 ms", f"{s} err"]
    both = len(systems) == 2
    if both:
        head.append("ratio my/mlf")
    head.append("metrics/s " + " / ".join(systems))
    rows, diag = [], []
    for b in backends:
        for op in ops:
            label = {"log-batch": f"log-batch ({batch}/call)",
                     "log-metric": "log-metric (1/call)"}.get(op, op)
            row = [b, label]
            ops_s = {}
            for s in systems:
                cell = results.get((b, op, s))
                if cell is None:
                    row += ["—"] * 4
                    ops_s[s] = float("nan")
                    continue
                ops_s[s] = cell.med("ops")
                row += [fmt(ops_s[s]), fmt(cell.med("p50")), fmt(cell.med("p99")),
                        f"{cell.errors()}/{cell.calls()}" if cell.errors() else "0"]
                diag.append([b, op, s, f"{cell.med('client_cpu'):.2f}",
                             f"{cell.med('server_cpu'):.2f}",
                             " ".join(fmt(r["ops"]) for r in cell.rounds)])
            if both:
                m, y = ops_s["mlflow"], ops_s["modelyard"]
                row.append(f"{y / m:.2f}×" if m == m and y == y and m > 0 else "—")
            per = {"log-batch": batch, "log-metric": 1}.get(op)
            row.append(" / ".join(fmt(ops_s[s] * per, 0) for s in systems) if per else "")
            rows.append(row)
    dhead = ["backend", "operation", "system", "client CPU (cores)", "server CPU (cores)",
             "ops/s per round"]
    return head, rows, dhead, diag






def report(results, backends, systems, args, info, failures=()) -> None:
    from rich.console import Console
    from rich.table import Table

    head, rows, dhead, diag = build_rows(results, backends, systems, args.ops, args.batch)
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
    t = Table(title=f"registry: medians of {args.rounds} round(s)")
    for h in head:
        t.add_column(h, justify="left" if h in ("backend", "operation") else "right")
    for r in rows:
        t.add_row(*r)
    console.print(t)
    d = Table(title="diagnostics: medians of CPU use during the measured window")
    for h in dhead:
        d.add_column(h)
    for r in diag:
        d.add_row(*r)
    console.print(d)

    workers = info.get("mlflow_workers")
    meas = (f"{args.count} ops per measurement" if args.count
            else f"{args.duration:g} s per measurement after {args.warmup:g} s warm-up")
    lines = [
        SECTION, "",
        f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} cores "
        f"({platform.machine()}), Python {platform.python_version()}; "
        f"`python bench/registry/run.py {' '.join(sys.argv[1:])}`.",
        "",
        f"- Systems: {', '.join(info.get('versions', {}).get(s, s) for s in systems)}."
        + (f" MLflow in its default configuration: `mlflow server` = uvicorn with "
           f"{workers} worker processes (plus its job-runner/huey processes)"
           + ("" if not args.mlflow_workers else ", forced by --mlflow-workers")
           + "." if "mlflow" in systems else ""),
        f"- Load: {args.concurrency} concurrent keep-alive clients (asyncio + httpx in "
        f"{args.client_procs} process(es)) on the same machine; {meas}; rounds interleaved "
        f"({' → '.join(systems)}) ×{args.rounds}; ops/s, p50, p99 are medians over rounds, "
        f"err = failed/total calls over all rounds.",
        "- Server start-up to first healthy answer (s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in info.get("startup", {}).items()) + ".",
        "- The load generator shares the 2 cores with the server: see the CPU columns; a "
        "client near 1.0 core per process is the bottleneck, not the server.",
        "",
        md_table(head, rows), "", md_table(dhead, diag), "",
    ]
    if failures:
        lines[-1:-1] = ["**Failed:** " + "; ".join(failures), ""]
    section = "\n".join(lines)
    print(section)
    if not args.no_results:
        write_results(section)
        log(f"updated {RESULTS_MD}")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--concurrency", type=int, default=16, help="concurrent clients")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per op")
    ap.add_argument("--count", type=int, default=None,
                    help="measure this many ops per op and system instead of a duration")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=["mlflow", "modelyard"], default=None)
    ap.add_argument("--ops", default=",".join(OPS), help=f"comma list from {OPS}")
    ap.add_argument("--batch", type=int, default=10, help="metrics per log-batch call")
    ap.add_argument("--client-procs", type=int, default=1,
                    help="load-generator processes (the clients are split among them)")
    ap.add_argument("--mlflow-workers", type=int, default=None,
                    help="override MLflow's worker count (default: MLflow's own default)")
    ap.add_argument("--mlflow-db", default="bench_mlflow")
    ap.add_argument("--modelyard-db", default="bench_modelyard")
    ap.add_argument("--start-timeout", type=float, default=180.0)
    ap.add_argument("--no-results", action="store_true", help="do not touch bench/RESULTS.md")
    args = ap.parse_args(argv)
    args.ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    bad = set(args.ops) - set(OPS)
    if bad:
        ap.error(f"unknown ops {sorted(bad)}")
    if args.client_procs < 1 or args.concurrency < args.client_procs:
        ap.error("need 1 <= --client-procs <= --concurrency")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    systems = [args.only] if args.only else ["mlflow", "modelyard"]
    if "postgres" in backends and not shutil.which("psql"):
        raise SystemExit("psql not found (needed to create the PostgreSQL databases)")
    outdir = BENCH_DIR / "runs" / f"registry-{time.strftime('%Y%m%d-%H%M%S')}"
    log(f"work dir {outdir}")

    # SIGTERM behaves like Ctrl-C so that the finally blocks stop the servers.
    def _term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _term)
    # Ctrl-C raises KeyboardInterrupt even when started from a shell that ignores SIGINT
    # for background jobs (a non-interactive `cmd &` inherits SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    servers: list[Server] = []
    results: dict = {}
    info: dict = {}
    failures: list[str] = []
    loadgen = LoadGen(args.client_procs)
    try:
        for b in backends:
            try:
                run_backend(b, systems, args, loadgen, outdir, results, info, servers)
            except Exception as e:  # report what was measured, fail at the end
                import traceback
                traceback.print_exc()
                failures.append(f"{b}: {type(e).__name__}: {str(e)[:300]}")
                log(f"backend {b} failed: {failures[-1]}")
    except KeyboardInterrupt:
        log("interrupted: stopping servers")
        return 130
    finally:
        for s in servers:
            s.stop()
        loadgen.close()
    if results:
        report(results, backends, systems, args, info, failures)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "raw.json").write_text(json.dumps(
        {f"{b}/{op}/{s}": [{k: v for k, v in r.items()} for r in cell.rounds]
         for (b, op, s), cell in results.items()}, indent=1))
    for f in failures:
        log(f"FAILED {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
