#!/usr/bin/env python3
"""Registry benchmark through MLflow's own client: `mlflow server` vs modelyard's MLflow API.

The same client script (bench/registry/mlflow_load.py: MLflow 3.17.2's ``MlflowClient``, run
with bench/.venv-mlflow's python) talks to both servers over HTTP on 127.0.0.1:

  log-batch        client.log_batch(run, 10 metrics)            /runs/log-batch
  register         client.create_model_version(name, source...)  /model-versions/create
  search-runs      client.search_runs(filter, order_by) on R runs /runs/search
  search-versions  client.search_model_versions("name='...'")     /model-versions/search

Servers (started here, both with --workers N, default 2 = one per core here):
  mlflow     `mlflow server --workers N` (uvicorn; its job runner on, as by default),
             artifacts proxied to a local directory
  modelyard  `modelyard server --workers N` (the control plane, which answers MLflow's API)
on SQLite and/or PostgreSQL (127.0.0.1:5432, user postgres; fresh databases every run).

Rounds are interleaved (mlflow, modelyard, mlflow, ...; every operation per system per round);
the table gives medians over rounds, their range, and ratios; the load average is printed.
The load generator (--procs processes x --threads threads of MLflow's synchronous client)
shares the machine's cores with the server: client and server CPU are reported beside.

    bash bench/setup.sh mlflow
    python bench/registry/mlflow_client.py                       # both backends, ~8 min
    python bench/registry/mlflow_client.py --backend sqlite --rounds 1 --duration 3 --no-results
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402  (bench/common.py: shared by the harnesses)
from common import Server, free_port, log, md_table, tree_cpu  # noqa: E402
from run import MLFLOW_VENV, PG_DSN, recreate_db, wait_healthy  # noqa: E402

common.TAG = "registry-mlflow-client"
BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent
LOAD = Path(__file__).resolve().parent / "mlflow_load.py"
SECTION = "## registry through MLflow's client"
OPS = ["log-batch", "register", "search-runs", "search-versions"]
SYSTEMS = ["mlflow", "modelyard"]
HEALTH = {"mlflow": ("/health",), "modelyard": ("/api/v1/health", "/healthz", "/health")}


def mlflow_python() -> Path:
    python = MLFLOW_VENV / "bin" / "python"
    if not (MLFLOW_VENV / "bin" / "mlflow").exists():
        raise SystemExit(f"{MLFLOW_VENV} has no mlflow: run bash bench/setup.sh mlflow first")
    return python


def server_for(system: str, backend: str, workdir: Path, port: int, args: Any) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    db = f"{args.db_prefix}_{system}"
    if system == "mlflow":
        if backend == "sqlite":
            uri = f"sqlite:///{workdir / 'mlflow.db'}"
        else:
            recreate_db(db)
            # SQLAlchemy 2.1 (MLflow 3.17's) means psycopg 3 by postgresql://: name psycopg2
            uri = f"postgresql+psycopg2://{PG_DSN['user']}@{PG_DSN['host']}:{PG_DSN['port']}/{db}"
        cmd = [str(MLFLOW_VENV / "bin" / "mlflow"), "server", "--backend-store-uri", uri,
               "--artifacts-destination", str(workdir / "artifacts"),
               "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        # uvicorn and the job runner are started by name: the venv's bin first on PATH
        env["PATH"] = f"{MLFLOW_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        for name in ("VIRTUAL_ENV", "PYTHONPATH"):
            env.pop(name, None)
        return Server(f"mlflow/{backend}", cmd, env, workdir / "server.log", cwd=workdir)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELYARD_", "MLFLOW_"))}
    env["MODELYARD_HOME"] = str(workdir / "home")
    if backend == "postgres":
        recreate_db(db)
        env["MODELYARD_DATABASE_URL"] = (
            f"postgresql+psycopg://{PG_DSN['user']}@{PG_DSN['host']}:{PG_DSN['port']}/{db}")
    if importlib.util.find_spec("modelyard") is None:  # the source tree, not installed
        env["PYTHONPATH"] = os.pathsep.join(
            x for x in (str(REPO_DIR / "src"), env.get("PYTHONPATH")) if x)
    cmd = [sys.executable, "-m", "modelyard", "server", "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(args.workers)]
    return Server(f"modelyard/{backend}", cmd, env, workdir / "server.log", cwd=workdir)


def client_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MODELYARD_"))}
    for name in ("VIRTUAL_ENV", "PYTHONPATH"):
        env.pop(name, None)
    env["GIT_PYTHON_REFRESH"] = "quiet"
    return env


def setup(base_url: str, workdir: Path, args: Any) -> Path:
    """Prepare the server through MLflow's client; returns the context file."""
    t0 = time.monotonic()
    out = subprocess.run(
        [str(mlflow_python()), str(LOAD), "setup", "--uri", base_url,
         "--tasks", str(args.procs * args.threads), "--search-runs", str(args.search_runs),
         "--search-versions", str(args.search_versions)],
        capture_output=True, text=True, env=client_env(), cwd=workdir, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"setup through MLflow's client failed:\n{out.stderr[-3000:]}")
    ctx = workdir / "ctx.json"
    ctx.write_text(out.stdout.strip().splitlines()[-1])
    log(f"setup of {base_url} through MLflow's client: {time.monotonic() - t0:.1f} s")
    return ctx


class Clients:
    """--procs persistent processes of mlflow_load.py, each with --threads tasks."""

    def __init__(self, base_url: str, ctx: Path, workdir: Path, args: Any) -> None:
        n = args.procs * args.threads
        self.procs = []
        for w in range(args.procs):
            tasks = ",".join(str(t) for t in range(n)[w::args.procs])
            errlog = open(workdir / f"client-{w}.log", "wb")  # noqa: SIM115 - the process' life
            self.procs.append(subprocess.Popen(
                [str(mlflow_python()), str(LOAD), "worker", "--uri", base_url, "--ctx", str(ctx),
                 "--tasks", tasks, "--batch", str(args.batch)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog, text=True,
                env=client_env(), cwd=workdir, start_new_session=True))
            errlog.close()

    def run(self, op: str, seq: int, server_pid: int, args: Any) -> dict:
        job = json.dumps({"op": op, "seq": seq, "warmup": args.warmup, "duration": args.duration})
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(job + "\n")
            p.stdin.flush()
        for p in self.procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"client process {p.pid} failed before {op}: {line[:300]!r} "
                                   "(see client-*.log in the run directory)")
        t_start = time.monotonic() + 0.2
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(f"{t_start}\n")
            p.stdin.flush()
        time.sleep(max(0.0, t_start + args.warmup - time.monotonic()))
        s0, w0 = tree_cpu(server_pid), time.monotonic()
        time.sleep(max(0.0, t_start + args.warmup + args.duration - time.monotonic()))
        s1, w1 = tree_cpu(server_pid), time.monotonic()
        parts = []
        for p in self.procs:
            assert p.stdout is not None
            parts.append(json.loads(p.stdout.readline()))
        lat = np.array([x for part in parts for x in part["lat"]], dtype=np.float64)
        samples: dict[str, int] = {}
        for part in parts:
            for message, count in part["errors"].items():
                samples[message] = samples.get(message, 0) + count
        return {
            "ops": len(lat) / args.duration,
            "p50": float(np.percentile(lat, 50)) * 1e3 if len(lat) else float("nan"),
            "p99": float(np.percentile(lat, 99)) * 1e3 if len(lat) else float("nan"),
            "n": len(lat), "errors": sum(samples.values()), "samples": samples,
            "client_cpu": sum(part["cpu"] for part in parts),
            "server_cpu": (s1 - s0) / max(1e-9, w1 - w0),
        }

    def close(self) -> None:
        for p in self.procs:
            with contextlib.suppress(Exception):
                assert p.stdin is not None
                p.stdin.close()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def run_backend(backend: str, args: Any, outdir: Path, results: dict, info: dict,
                servers: list[Server]) -> None:
    live: dict[str, tuple[str, Server, Clients]] = {}
    try:
        for system in args.systems:
            port = free_port()
            workdir = outdir / backend / system
            server = server_for(system, backend, workdir, port, args)
            servers.append(server)
            server.start()
            base = f"http://127.0.0.1:{port}"
            healthy = wait_healthy(server, base, HEALTH[system], args.start_timeout)
            info.setdefault("startup", {})[f"{system}/{backend}"] = healthy
            ctx = setup(base, workdir, args)
            live[system] = (base, server, Clients(base, ctx, workdir, args))
        seq = 0
        for rnd in range(args.rounds):
            for system in args.systems:
                base, server, clients = live[system]
                for op in args.ops:
                    seq += 1
                    if not server.alive():
                        raise RuntimeError(f"{server.name} died; see {server.log_path}")
                    assert server.proc is not None
                    res = clients.run(op, seq, server.proc.pid, args)
                    results.setdefault((backend, op, system), []).append(res)
                    log(f"{backend:8s} round {rnd + 1}/{args.rounds} {system:9s} {op:15s} "
                        f"{res['ops']:8.1f} ops/s p50 {res['p50']:7.1f} ms "
                        f"p99 {res['p99']:7.1f} ms err {res['errors']:4d}  "
                        f"cpu client {res['client_cpu']:.2f} server {res['server_cpu']:.2f}")
                    for message, count in list(res["samples"].items())[:3]:
                        log(f"    {count}x {message}")
    finally:
        for _, server, clients in live.values():
            clients.close()
            server.stop()


def fmt(x: float, nd: int = 1) -> str:
    return "—" if x != x else f"{x:,.{nd}f}"


def med(rounds: list[dict], key: str) -> float:
    return float(np.median([r[key] for r in rounds])) if rounds else float("nan")


def build_rows(results: dict, backends: list[str], args: Any) -> tuple:
    systems = args.systems
    head = ["backend", "operation"]
    for s in systems:
        head += [f"{s} ops/s (range)", f"{s} p50 ms", f"{s} p99 ms", f"{s} err"]
    if len(systems) == 2:
        head.append("ratio my/mlf")
    rows, diag = [], []
    for b in backends:
        for op in args.ops:
            label = f"log-batch ({args.batch}/call)" if op == "log-batch" else op
            row, ops_s = [b, label], {}
            for s in systems:
                rounds = results.get((b, op, s), [])
                if not rounds:
                    row += ["—"] * 4
                    ops_s[s] = float("nan")
                    continue
                ops_s[s] = med(rounds, "ops")
                lo, hi = min(r["ops"] for r in rounds), max(r["ops"] for r in rounds)
                errors, calls = sum(r["errors"] for r in rounds), sum(r["n"] + r["errors"]
                                                                      for r in rounds)
                row += [f"{fmt(ops_s[s])} ({fmt(lo)}–{fmt(hi)})", fmt(med(rounds, "p50")),
                        fmt(med(rounds, "p99")), f"{errors}/{calls}" if errors else "0"]
                per_op = med(rounds, "server_cpu") / ops_s[s] * 1e3 if ops_s[s] else float("nan")
                diag.append([b, op, s, f"{med(rounds, 'client_cpu'):.2f}",
                             f"{med(rounds, 'server_cpu'):.2f}", fmt(per_op),
                             " ".join(fmt(r["ops"]) for r in rounds)])
            if len(systems) == 2:
                m, y = ops_s["mlflow"], ops_s["modelyard"]
                row.append(f"{y / m:.2f}×" if m == m and y == y and m > 0 else "—")
            rows.append(row)
    dhead = ["backend", "operation", "system", "client CPU (cores)", "server CPU (cores)",
             "server CPU ms/op", "ops/s per round"]
    return head, rows, dhead, diag


def mlflow_version() -> str:
    out = subprocess.run([str(mlflow_python()), "-c", "import mlflow; print(mlflow.__version__)"],
                         capture_output=True, text=True, env=client_env())
    return out.stdout.strip() or "?"


def report(results: dict, backends: list[str], args: Any, info: dict, failures: list[str],
           argv: list[str]) -> None:
    head, rows, dhead, diag = build_rows(results, backends, args)
    try:
        import modelyard
        my_version = modelyard.__version__
    except ImportError:
        my_version = "?"
    load = " → ".join(f"{a:.1f}" for a in (info["load_before"][0], os.getloadavg()[0]))
    lines = [
        SECTION, "",
        f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} cores "
        f"({platform.machine()}), Python {platform.python_version()}; "
        f"`{' '.join(['python bench/registry/mlflow_client.py', *argv])}`; "
        f"1-minute load average {load} (start → end, this benchmark's own processes "
        "included).",
        "",
        f"- Client: MLflow {info['mlflow_version']}'s own `MlflowClient` "
        f"(bench/registry/mlflow_load.py, the same script against both servers), "
        f"{args.procs} processes × {args.threads} threads = {args.procs * args.threads} "
        "concurrent synchronous callers, each keeping its connections alive.",
        f"- Servers, {args.workers} worker processes each: `mlflow server --workers "
        f"{args.workers}` (MLflow {info['mlflow_version']}, uvicorn; plus its job-runner "
        f"processes, on as by default), and `modelyard server --workers {args.workers}` "
        f"(modelyard {my_version}, the control plane answering MLflow's REST API).",
        f"- {args.duration:g} s per measurement after {args.warmup:g} s warm-up; rounds "
        f"interleaved ({' → '.join(args.systems)}) ×{args.rounds}; ops/s is the median over "
        "rounds (range in brackets), p50/p99 medians over rounds, err = failed/total calls.",
        f"- search-runs: `metrics.accuracy > X and params.solver = 'lbfgs'` (X cycling over "
        f"0.4–0.8) ordered by accuracy DESC, over {args.search_runs} runs; search-versions: "
        f"the {args.search_versions} versions of one model; register: "
        "`create_model_version` of the model logged at setup (as "
        "`log_model(registered_model_name=...)` does). Every answer is checked.",
        "- Server start-up to first healthy answer (s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in info.get("startup", {}).items()) + ".",
        "",
        md_table(head, rows), "", md_table(dhead, diag), "",
    ]
    if failures:
        lines[-1:-1] = ["**Failed:** " + "; ".join(failures), ""]
    section = "\n".join(lines)
    print(section)
    if not args.no_results:
        common.write_results(SECTION, section)
        log(f"updated {common.RESULTS_MD}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--only", choices=SYSTEMS, default=None)
    ap.add_argument("--ops", default=",".join(OPS), help=f"comma list from {OPS}")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                    help="worker processes of each server")
    ap.add_argument("--procs", type=int, default=4, help="client processes")
    ap.add_argument("--threads", type=int, default=2, help="client threads per process")
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=10, help="metrics per log-batch call")
    ap.add_argument("--search-runs", type=int, default=100)
    ap.add_argument("--search-versions", type=int, default=30)
    ap.add_argument("--db-prefix", default="bench_mlfclient")
    ap.add_argument("--start-timeout", type=float, default=180.0)
    ap.add_argument("--no-results", action="store_true", help="do not touch bench/RESULTS.md")
    args = ap.parse_args(argv)
    args.ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    if set(args.ops) - set(OPS):
        ap.error(f"unknown ops {sorted(set(args.ops) - set(OPS))}")
    args.systems = [args.only] if args.only else SYSTEMS
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    if "postgres" in backends and not shutil.which("psql"):
        raise SystemExit("psql not found (needed to create the PostgreSQL databases)")
    outdir = BENCH_DIR / "runs" / f"registry-mlflow-client-{time.strftime('%Y%m%d-%H%M%S')}"
    log(f"work dir {outdir}; load average {os.getloadavg()[0]:.1f}")

    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    servers: list[Server] = []
    results: dict = {}
    info: dict = {"load_before": os.getloadavg(), "mlflow_version": mlflow_version()}
    failures: list[str] = []
    try:
        for b in backends:
            try:
                run_backend(b, args, outdir, results, info, servers)
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
    if results:
        report(results, backends, args, info, failures, argv)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "raw.json").write_text(json.dumps(
        {f"{b}/{op}/{s}": rounds for (b, op, s), rounds in results.items()}, indent=1))
    for f in failures:
        log(f"FAILED {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
