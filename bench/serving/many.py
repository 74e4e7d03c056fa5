#!/usr/bin/env python3
"""Many models on one modelyard gateway: start curve, density, reload of evicted models, peers.

Real ``python -m modelyard serve --host 127.0.0.1 --port P --workers W`` processes (W = 2 by
default: the gateway's own default on this 2-core machine). Each endpoint ``mNNN`` serves its
own small ONNX model (``models:/mNNN@champion``), registered in a fresh workspace per endpoint
count with the SDK (``Client().log_model(mNNN.onnx, name, alias="champion")`` and
``Client().endpoints.create(name, "models:/mNNN@champion")``, in one child process).
Predictions are OIP v2 ``POST /v2/models/mNNN/infer`` with one FP32 row ``X`` of 20 values,
cycled from a pool of 64 distinct rows. Only the CLI, HTTP and the SDK are used.

Parts (``--parts``, default all):

start    For each endpoint count (``--counts``, default 1,10,50,200; LogisticRegression on 20
         columns converted with skl2onnx, ~0.6 KB each) a fresh server per round, counts
         interleaved, ``--rounds`` rounds: seconds from process start to the first 2xx
         prediction from the first endpoint, from a random one, to /v2/health/ready = 200,
         and until every endpoint has answered one prediction (4 client threads; the sweep
         begins once the first endpoint answered). Medians and the range.
density  In the same runs, once every endpoint has answered, every gateway worker has answered
         every endpoint (connections closed after each request: the kernel picks the worker,
         the x-modelyard-worker header tells which; matters once workers load lazily), and
         the tree is idle (< 10% of a core over 1 s): tree PSS (sum of smaps_rollup Pss over
         the server's processes) -> models per GiB, marginal MiB per model.
reload   ``--reload-models`` (50) endpoints of ~1 MB ONNX RandomForests (70 trees of depth
         10) under MODELYARD_GATEWAY_MEMORY_MB=``--budget-mb`` (16: a few models), with
         ``--reload-workers`` (1: the budget is per worker, and a sequential client on one
         keep-alive connection reaches one worker). A sequential httpx client sends
         ``--reload-requests`` predictions, models drawn with Zipf popularity (weight
         1/k^``--zipf``, ranks shuffled with a fixed seed). Before each request GET /metrics
         on the same connection (so the same worker) says whether the model is in the pool
         (``modelyard_model_loaded``): a request for a model that is not is a reload, and
         /metrics after it gives the gateway's own load + warm-up seconds. (Without that
         gauge: a reload is a request whose model was not among the last 10 asked for.)
         Reload and hit latency p50/p90/p99/max; tree RSS/PSS and resident models at the
         start, the middle and the end.
peers    The same ONNX files (``--peer-counts``, default 1,50,200) in one BentoML service
         (bench/serving/bento_many.py: a dict of InferenceSessions, ``--workers`` workers)
         and in Ray Serve with model multiplexing (bench/serving/ray_many.py, ``--workers``
         replicas): tree PSS once each model answered once. A peer that cannot run says why.

Run with modelyard's Python (numpy, scikit-learn, skl2onnx, httpx, rich) after
``bash bench/setup.sh`` (bench/.venv-bentoml with onnxruntime). Ray Serve is not in
setup.sh (571 MB); for its rows:

    python3 -m venv bench/.venv-ray
    bench/.venv-ray/bin/pip install "ray[serve]==2.60.0" onnxruntime

Then:

    python bench/serving/many.py --write          # the full run: ~10-15 min here (the
                                                  # first run also fits 50 forests, ~2 min)
    python bench/serving/many.py --parts start --counts 1,10 --rounds 1        # smoke

Tables go to stdout (rich), the run directory (bench/runs/many-*/: server logs, raw.json,
report.md) and, with ``--write`` only, the "## many models" section of bench/RESULTS.md.
Trained ONNX files are kept in bench/runs/many-models/ for later runs (same seed, same files).
Every process started is stopped (whole tree, from /proc) even on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import datetime as dt
import json
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

SERVING_DIR = Path(__file__).resolve().parent
BENCH_DIR = SERVING_DIR.parent
REPO_DIR = BENCH_DIR.parent
SRC_DIR = REPO_DIR / "src"
MODELS_CACHE = BENCH_DIR / "runs" / "many-models"
BENTOML_VENV = BENCH_DIR / ".venv-bentoml"
RAY_VENV = Path(os.environ.get("BENCH_RAY_VENV", BENCH_DIR / ".venv-ray"))
SECTION = "## many models"

sys.path.insert(0, str(BENCH_DIR))
import common  # noqa: E402  (bench/common.py: shared by the harnesses)
from common import (  # noqa: E402
    Server,
    free_port,
    log,
    md_table,
    tree_pss,
    tree_snapshot,
    wait_quiet,
)

common.TAG = "many"

SEED = 42
FEATURES = 20
PARTS = ["start", "reload", "peers"]
PEERS = ["bentoml", "ray"]
JSON = {"content-type": "application/json"}
MiB = 2**20
Send = Callable[[httpx.Client, str, int], httpx.Response]


class Skip(Exception):
    """A peer that cannot run here: reported in the table, not a failure of the harness."""


def model_name(i: int) -> str:
    return f"m{i:03d}"


# ----------------------------------------------------------------------------------------
# Models (cached ONNX files) and workspaces
# ----------------------------------------------------------------------------------------


def models_dir(kind: str, args: argparse.Namespace) -> Path:
    return MODELS_CACHE / ("lr" if kind == "lr" else f"rf{args.rf_trees}x{args.rf_depth}")


def ensure_models(kind: str, count: int, args: argparse.Namespace) -> Path:
    """``count`` ONNX files ``mNNN.onnx`` of ``kind`` ("lr" or "rf"), each fitted on its own
    labels (fixed seeds), trained only where missing. Returns their directory."""
    folder = models_dir(kind, args)
    folder.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(count) if not (folder / f"{model_name(i)}.onnx").exists()]
    if not missing:
        return folder
    import warnings

    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    warnings.filterwarnings("ignore")  # skl2onnx's and sklearn's deprecation chatter
    log(f"fitting {len(missing)} {kind} models into {folder}")
    X = np.random.default_rng(SEED).normal(size=(2000, FEATURES)).astype(np.float32)
    for done, i in enumerate(missing, 1):
        rng = np.random.default_rng(SEED + 1 + i)
        y = ((X @ rng.normal(size=FEATURES) + rng.normal(scale=0.5, size=len(X))) > 0).astype(int)
        model: Any
        if kind == "lr":
            model = LogisticRegression(max_iter=1000)
        else:
            model = RandomForestClassifier(
                n_estimators=args.rf_trees, max_depth=args.rf_depth, random_state=i, n_jobs=1
            )
        model.fit(X, y)
        proto = to_onnx(model, X[:1], options={id(model): {"zipmap": False}}, target_opset=17)
        path = folder / f"{model_name(i)}.onnx"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(proto.SerializeToString())
        tmp.replace(path)
        if done % 10 == 0 or done == len(missing):
            log(f"  {done}/{len(missing)} {kind} models fitted")
    return folder


def file_sizes(folder: Path, count: int) -> list[int]:
    return [(folder / f"{model_name(i)}.onnx").stat().st_size for i in range(count)]


def modelyard_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env.pop("VIRTUAL_ENV", None)
    env["PYTHONPATH"] = str(SRC_DIR)  # the work tree's modelyard, even if not pip-installed
    env["MODELYARD_HOME"] = str(home)
    env.update(extra or {})
    return env


def register_child(folder: str, count: int) -> None:
    """In a child process (MODELYARD_HOME set): register and expose ``count`` models."""
    from modelyard import Client

    client = Client()
    started = time.monotonic()
    for i in range(count):
        name = model_name(i)
        client.log_model(Path(folder) / f"{name}.onnx", name, alias="champion")
        client.endpoints.create(name, f"models:/{name}@champion")
        if (i + 1) % 50 == 0 or i + 1 == count:
            print(f"{i + 1}/{count} endpoints ({time.monotonic() - started:.1f}s)", flush=True)


def prepare_workspace(outdir: Path, kind: str, count: int, args: argparse.Namespace) -> Path:
    """A fresh workspace with ``count`` endpoints of ``kind`` models. Returns its home."""
    folder = ensure_models(kind, count, args)
    home = outdir / f"{kind}-{count}" / "home"
    home.mkdir(parents=True)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, __file__, "--register", str(folder), str(count)],
        env=modelyard_env(home),
        capture_output=True,
        text=True,
        timeout=60 + 5 * count,
    )
    (home.parent / "register.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(
            f"registering {count} {kind} models failed ({result.returncode}):\n"
            f"{(result.stderr or result.stdout)[-2000:]}"
        )
    log(f"workspace {home}: {count} endpoints in {time.monotonic() - started:.1f}s")
    return home


def modelyard_server(
    home: Path, workers: int, log_path: Path, extra_env: dict[str, str] | None = None
) -> tuple[Server, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "modelyard", "serve", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--workers", str(workers)]
    server = Server("modelyard", cmd, modelyard_env(home, extra_env), log_path, cwd=home.parent)
    return server, f"http://127.0.0.1:{port}"


# ----------------------------------------------------------------------------------------
# Requests
# ----------------------------------------------------------------------------------------


def _rows() -> list[list[float]]:
    rng = random.Random(SEED)
    return [[round(rng.gauss(0, 1), 5) for _ in range(FEATURES)] for _ in range(64)]


ROWS = _rows()
V2_BODIES = [
    json.dumps(
        {"inputs": [{"name": "X", "shape": [1, FEATURES], "datatype": "FP32", "data": row}]}
    ).encode()
    for row in ROWS
]


def send_modelyard(client: httpx.Client, name: str, i: int) -> httpx.Response:
    return client.post(
        f"/v2/models/{name}/infer", content=V2_BODIES[i % len(V2_BODIES)], headers=JSON
    )


def send_bentoml(client: httpx.Client, name: str, i: int) -> httpx.Response:
    return client.post("/predict", json={"model": name, "input": [ROWS[i % len(ROWS)]]})


def send_ray(client: httpx.Client, name: str, i: int) -> httpx.Response:
    return client.post(
        "/",
        json={"input": [ROWS[i % len(ROWS)]]},
        headers={"serve_multiplexed_model_id": name},
    )


def until_2xx(
    server: Server,
    client: httpx.Client,
    request: Callable[[], httpx.Response],
    what: str,
    timeout: float,
    stop: threading.Event | None = None,
    every: float = 0.02,
) -> float:
    """Repeat ``request`` until it answers 2xx; seconds from the server's start to that
    answer. Raises if the server exits, after ``timeout`` s from its start, or on ``stop``."""
    last = "no answer"
    while True:
        try:
            response = request()
            if 200 <= response.status_code < 300:
                return time.monotonic() - server.started
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.TransportError as exc:
            last = type(exc).__name__
        if not server.alive():
            raise RuntimeError(f"{server.name} exited; see {server.log_path}")
        if time.monotonic() - server.started > timeout:
            raise RuntimeError(f"{server.name}: no 2xx from {what} in {timeout:.0f}s: {last}")
        if stop is not None and stop.is_set():
            raise RuntimeError(f"{server.name}: gave up on {what}")
        time.sleep(every)


def sweep(
    server: Server, base: str, names: list[str], send: Send, timeout: float, threads: int = 4
) -> float:
    """Until every name has answered one 2xx prediction (``threads`` clients); seconds from the
    server's start to the last of them."""
    limits = httpx.Limits(max_connections=threads, max_keepalive_connections=threads)
    with httpx.Client(base_url=base, timeout=60, limits=limits) as client:

        def one(item: tuple[int, str]) -> float:
            i, name = item
            return until_2xx(server, client, lambda: send(client, name, i), name, timeout)

        with ThreadPoolExecutor(threads) as pool:
            return max(pool.map(one, enumerate(names)))


def touch_every_worker(base: str, names: list[str], send: Send, workers: int) -> tuple[int, int]:
    """Send each name requests on new connections until ``workers`` distinct workers
    (x-modelyard-worker) answered it, at most 8 per worker. Returns (pairs seen, pairs)."""
    if workers <= 1:
        return len(names), len(names)
    seen_pairs = 0
    limits = httpx.Limits(max_keepalive_connections=0)  # a new connection per request
    with httpx.Client(base_url=base, timeout=60, limits=limits) as client:
        for i, name in enumerate(names):
            seen: set[str] = set()
            for attempt in range(8 * workers):
                response = send(client, name, i + attempt)
                if 200 <= response.status_code < 300:
                    seen.add(response.headers.get("x-modelyard-worker", "?"))
                if len(seen) >= workers:
                    break
            seen_pairs += len(seen)
    return seen_pairs, len(names) * workers


def memory(server: Server) -> dict[str, float]:
    assert server.proc is not None
    snapshot = tree_snapshot(server.proc.pid)
    return {
        "pss": tree_pss(server.proc.pid),
        "rss": sum(rss for _, rss in snapshot.values()),
        "procs": len(snapshot),
    }


# ----------------------------------------------------------------------------------------
# /metrics
# ----------------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$", re.M)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for metric, labels, value in _SAMPLE.findall(text):
        if metric == name:
            out.append((dict(_LABEL.findall(labels or "")), float(value)))
    return out


def loaded_models(text: str) -> set[str] | None:
    """Models in the pool per ``modelyard_model_loaded``; None if /metrics has no such gauge."""
    if "# TYPE modelyard_model_loaded " not in text:
        return None
    samples = metric_samples(text, "modelyard_model_loaded")
    return {labels.get("model", "?") for labels, value in samples if value > 0}


def load_seconds(text: str, model: str) -> float | None:
    """The gateway's own seconds for ``model``'s last load plus warm-up, if /metrics says."""
    samples = metric_samples(text, "modelyard_model_load_seconds")
    values = [value for labels, value in samples if labels.get("model") == model]
    return sum(values) if values else None


def pool_bytes(text: str) -> dict[str, float]:
    """Byte gauges about the pool the gateway may expose (``modelyard_pool_*bytes*``,
    ``modelyard_model_*bytes*``), summed over their labels."""
    out: dict[str, float] = {}
    for metric, _, value in _SAMPLE.findall(text):
        if re.fullmatch(r"modelyard_(pool|model)_\w*bytes\w*", metric) and not metric.endswith(
            ("_created", "_count", "_sum", "_bucket")
        ):
            out[metric] = out.get(metric, 0.0) + float(value)
    return out


# ----------------------------------------------------------------------------------------
# Part 1 + 2: start curve and density
# ----------------------------------------------------------------------------------------


def start_round(
    home: Path, count: int, rnd: int, args: argparse.Namespace, outdir: Path, started: list
) -> dict[str, Any]:
    names = [model_name(i) for i in range(count)]
    other = random.Random(f"{args.seed}-{rnd}-{count}").choice(names[1:]) if count > 1 else None
    server, base = modelyard_server(
        home, args.workers, outdir / f"lr-{count}" / f"serve-r{rnd + 1}.log"
    )
    started.append(server)
    result: dict[str, Any] = {"count": count, "round": rnd + 1, "random_name": other}
    stop = threading.Event()
    server.start()
    try:
        with ThreadPoolExecutor(3) as pool:

            def first_answer(name: str) -> float:
                with httpx.Client(base_url=base, timeout=60) as client:
                    return until_2xx(
                        server,
                        client,
                        lambda: send_modelyard(client, name, 0),
                        name,
                        args.start_timeout,
                        stop,
                    )

            def ready() -> float:
                with httpx.Client(base_url=base, timeout=60) as client:
                    return until_2xx(
                        server,
                        client,
                        lambda: client.get("/v2/health/ready"),
                        "/v2/health/ready",
                        args.start_timeout,
                        stop,
                    )

            f_first = pool.submit(first_answer, names[0])
            f_other = pool.submit(first_answer, other) if other else None
            f_ready = pool.submit(ready)
            try:
                result["first"] = f_first.result()
                result["all"] = sweep(server, base, names, send_modelyard, args.start_timeout)
                result["random"] = f_other.result() if f_other else result["first"]
                result["ready"] = f_ready.result()
            finally:
                stop.set()
        result["touched"] = touch_every_worker(base, names, send_modelyard, args.workers)
        assert server.proc is not None
        result["quiet_wait"] = wait_quiet(server.proc.pid)
        result.update(memory(server))
    finally:
        server.stop()
    log(
        f"{count:4d} endpoints round {rnd + 1}: first {result['first']:.2f}s, random "
        f"{result['random']:.2f}s, ready {result['ready']:.2f}s, all {result['all']:.2f}s; "
        f"PSS {result['pss'] / MiB:.0f} MiB, RSS {result['rss'] / MiB:.0f} MiB in "
        f"{result['procs']} processes (worker/endpoint pairs {result['touched'][0]}/"
        f"{result['touched'][1]})"
    )
    return result


def run_start(args: argparse.Namespace, outdir: Path, started: list) -> list[dict[str, Any]]:
    homes = {n: prepare_workspace(outdir, "lr", n, args) for n in args.counts}
    results = []
    for rnd in range(args.rounds):
        # Interleaved, alternating direction: no count always runs first or last.
        order = args.counts if rnd % 2 == 0 else list(reversed(args.counts))
        for count in order:
            results.append(start_round(homes[count], count, rnd, args, outdir, started))
    return results


# ----------------------------------------------------------------------------------------
# Part 3: reloads under a memory budget
# ----------------------------------------------------------------------------------------


def zipf_sequence(models: int, requests: int, exponent: float, seed: int) -> list[int]:
    """``requests`` model indexes; rank k has weight 1/k^exponent, ranks shuffled."""
    rng = random.Random(seed)
    ranks = list(range(models))
    rng.shuffle(ranks)  # ranks[k]: the model of popularity rank k + 1
    weights = [0.0] * models
    for k, model in enumerate(ranks):
        weights[model] = 1.0 / (k + 1) ** exponent
    return rng.choices(range(models), weights=weights, k=requests)


def run_reload(args: argparse.Namespace, outdir: Path, started: list) -> dict[str, Any]:
    count = args.reload_models
    home = prepare_workspace(outdir, "rf", count, args)
    sizes = file_sizes(models_dir("rf", args), count)
    names = [model_name(i) for i in range(count)]
    server, base = modelyard_server(
        home,
        args.reload_workers,
        outdir / f"rf-{count}" / "serve.log",
        {"MODELYARD_GATEWAY_MEMORY_MB": str(args.budget_mb)},
    )
    started.append(server)
    out: dict[str, Any] = {
        "models": count,
        "budget_mb": args.budget_mb,
        "workers": args.reload_workers,
        "file_sizes": sizes,
        "requests": args.reload_requests,
    }
    sequence = zipf_sequence(count, args.reload_requests, args.zipf, args.seed)
    records: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    errors: list[str] = []
    workers_seen: set[str] = set()
    server.start()
    try:
        with httpx.Client(base_url=base, timeout=120) as client:
            until_2xx(
                server,
                client,
                lambda: send_modelyard(client, names[0], 0),
                names[0],
                args.start_timeout,
            )
            until_2xx(
                server,
                client,
                lambda: client.get("/v2/health/ready"),
                "/v2/health/ready",
                args.start_timeout,
            )
            out["start_seconds"] = time.monotonic() - server.started
            assert server.proc is not None
            wait_quiet(server.proc.pid)

            def point(label: str, done: int) -> None:
                text = client.get("/metrics").text
                loaded = loaded_models(text)
                points.append(
                    {
                        "point": label,
                        "requests": done,
                        "resident": None if loaded is None else len(loaded),
                        "pool_bytes": pool_bytes(text),
                        **memory(server),
                    }
                )

            point("start", 0)
            recent: list[str] = []  # distinct models, most recently asked for last
            for i, model in enumerate(sequence):
                name = names[model]
                loaded = loaded_models(client.get("/metrics").text)
                if loaded is not None:
                    reload, how = name not in loaded, "metrics"
                else:
                    reload, how = name not in recent[-args.recency :], "recency"
                begin = time.perf_counter()
                response = send_modelyard(client, name, i)
                elapsed = time.perf_counter() - begin
                if not 200 <= response.status_code < 300:
                    errors.append(f"{name}: {response.status_code} {response.text[:200]}")
                else:
                    workers_seen.add(response.headers.get("x-modelyard-worker", "?"))
                    record = {"model": name, "reload": reload, "how": how, "seconds": elapsed}
                    if reload and how == "metrics":
                        record["server_seconds"] = load_seconds(client.get("/metrics").text, name)
                    records.append(record)
                with contextlib.suppress(ValueError):
                    recent.remove(name)
                recent.append(name)
                if i + 1 == len(sequence) // 2:
                    point("mid", i + 1)
            point("end", len(sequence))
    finally:
        server.stop()
    out.update(records=records, points=points, errors=errors, workers_seen=sorted(workers_seen))
    reloads = [r for r in records if r["reload"]]
    log(
        f"reload: {len(records)} requests, {len(reloads)} reloads "
        f"({records[0]['how'] if records else '?'}), {len(errors)} errors, "
        f"workers {sorted(workers_seen)}"
    )
    return out


# ----------------------------------------------------------------------------------------
# Part 4: peers
# ----------------------------------------------------------------------------------------


def peer_server(
    peer: str, count: int, folder: Path, workers: int, log_path: Path
) -> tuple[Server, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENTOML_", "RAY_"))}
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    env.update(BENCH_MODELS_DIR=str(folder), BENCH_MODELS_COUNT=str(count), BENCH_PORT=str(port))
    if peer == "bentoml":
        if not (BENTOML_VENV / "bin" / "bentoml").exists():
            raise Skip(f"{BENTOML_VENV}/bin/bentoml missing: run bash bench/setup.sh")
        check = subprocess.run([str(BENTOML_VENV / "bin" / "python"), "-c", "import onnxruntime"])
        if check.returncode != 0:
            raise Skip(f"no onnxruntime in {BENTOML_VENV}: run bash bench/setup.sh bentoml")
        env["PATH"] = f"{BENTOML_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env.update(
            BENTOML_HOME=str(log_path.parent / "bentoml_home"),
            BENTOML_DO_NOT_TRACK="true",
            BENCH_BENTO_WORKERS=str(workers),
        )
        cmd = [str(BENTOML_VENV / "bin" / "bentoml"), "serve", "bento_many:Many"]
        cmd += ["--working-dir", str(SERVING_DIR), "--host", "127.0.0.1", "--port", str(port)]
    else:
        python = RAY_VENV / "bin" / "python"
        if not python.exists():
            raise Skip(
                f"no {RAY_VENV}: python3 -m venv {RAY_VENV} && {RAY_VENV}/bin/pip install "
                '"ray[serve]==2.60.0" onnxruntime'
            )
        # Ray's session files stay in /tmp/ray: its socket paths must fit in 107 bytes. A
        # single-node "cluster" on loopback: with clusters enabled (the default on Linux)
        # Ray binds and talks to the machine's own address instead.
        env.update(
            BENCH_RAY_REPLICAS=str(workers),
            RAY_USAGE_STATS_ENABLED="0",
            RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        )
        cmd = [str(python), str(SERVING_DIR / "ray_many.py")]
    return Server(peer, cmd, env, log_path, cwd=log_path.parent), f"http://127.0.0.1:{port}"


def peer_round(
    peer: str, count: int, args: argparse.Namespace, outdir: Path, started: list
) -> dict[str, Any]:
    folder = ensure_models("lr", count, args)
    workdir = outdir / f"{peer}-{count}"
    workdir.mkdir(parents=True, exist_ok=True)
    server, base = peer_server(peer, count, folder, args.workers, workdir / "server.log")
    send = send_bentoml if peer == "bentoml" else send_ray
    names = [model_name(i) for i in range(count)]
    started.append(server)
    server.start()
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            first = until_2xx(
                server, client, lambda: send(client, names[0], 0), names[0], args.start_timeout
            )
        every = sweep(server, base, names, send, args.start_timeout)
        assert server.proc is not None
        wait_quiet(server.proc.pid)
        result = {"count": count, "first": first, "all": every, **memory(server)}
    finally:
        server.stop()
    log(
        f"{peer} {count} models: first {first:.2f}s, all {every:.2f}s, PSS "
        f"{result['pss'] / MiB:.0f} MiB in {result['procs']} processes"
    )
    return result


def run_peers(args: argparse.Namespace, outdir: Path, started: list) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for peer in args.peers:
        rows = []
        try:
            for count in args.peer_counts:
                rows.append(peer_round(peer, count, args, outdir, started))
            out[peer] = {"rows": rows}
        except Skip as exc:
            log(f"SKIP {peer}: {exc}")
            out[peer] = {"rows": rows, "skipped": str(exc)}
        except Exception as exc:  # a peer failing must not lose the rest of the run
            log(f"FAILED {peer}: {exc}")
            out[peer] = {"rows": rows, "failed": f"{type(exc).__name__}: {str(exc)[:300]}"}
    return out


# ----------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------


def spread(values: list[float], digits: int = 2) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of non-empty ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def density_rows(
    system: str,
    workers: str,
    copies: str,
    by_count: dict[int, list[float]],
    rss: dict[int, list[float]],
    procs: dict[int, list[int]],
) -> list[list[str]]:
    rows = []
    counts = sorted(by_count)
    pss = {n: statistics.median(v) for n, v in by_count.items()}
    for j, n in enumerate(counts):
        marginal = "—"
        if j > 0:
            prev = counts[j - 1]
            marginal = f"{(pss[n] - pss[prev]) / (n - prev) / MiB:.2f}"
        above = "—"
        if 1 in pss and n > 1:
            above = f"{(pss[n] - pss[1]) / (n - 1) / MiB:.2f}"
        rows.append(
            [
                system,
                str(n),
                workers,
                copies,
                spread([v / MiB for v in by_count[n]], 0),
                f"{statistics.median(rss[n]) / MiB:.0f}",
                str(max(procs[n])),
                f"{n / (pss[n] / 2**30):.0f}",
                marginal,
                above,
            ]
        )
    return rows


def report(data: dict[str, Any], args: argparse.Namespace, outdir: Path) -> str:
    meta = data["meta"]
    lines = [
        SECTION,
        "",
        f"bench/serving/many.py, {meta['date']}; {os.cpu_count()} cores, load average "
        f"{meta['load_before'][0]:.2f} before, {meta['load_after'][0]:.2f} after; "
        f"{meta['modelyard']}, onnxruntime {meta['onnxruntime']}. `modelyard serve --workers "
        f"{args.workers}` (the default on 2 cores) on 127.0.0.1; OIP v2 predictions of one row.",
        "",
    ]
    tables: list[tuple[str, list[str], list[list[str]]]] = []
    start = data.get("start")
    if start:
        sizes = meta.get("lr_sizes") or [0]
        lines += [
            f"**Start** (each endpoint its own LogisticRegression on {FEATURES} columns as "
            f"ONNX, {statistics.mean(sizes):.0f} B per file): seconds from process start, "
            f"median (min-max) of {args.rounds} rounds, counts interleaved.",
            "",
        ]
        head = ["endpoints", "workers", "first endpoint s", "random endpoint s",
                "/v2/health/ready s", "all answered s"]  # fmt: skip
        rows = []
        for n in args.counts:
            rs = [r for r in start if r["count"] == n]
            rows.append(
                [
                    str(n),
                    str(args.workers),
                    spread([r["first"] for r in rs]),
                    spread([r["random"] for r in rs]) if n > 1 else "(= first)",
                    spread([r["ready"] for r in rs]),
                    spread([r["all"] for r in rs]),
                ]
            )
        tables.append(("start", head, rows))
        lines += [md_table(head, rows), ""]

    density_head = ["system", "models", "workers", "copies of each model", "tree PSS MiB",
                    "tree RSS MiB", "processes", "models per GiB PSS",
                    "marginal MiB/model (vs previous row)", "MiB/model above 1 model"]  # fmt: skip
    drows: list[list[str]] = []
    if start:
        pss: dict[int, list[float]] = {}
        rss: dict[int, list[float]] = {}
        procs: dict[int, list[int]] = {}
        for r in start:
            pss.setdefault(r["count"], []).append(r["pss"])
            rss.setdefault(r["count"], []).append(r["rss"])
            procs.setdefault(r["count"], []).append(r["procs"])
        short = [r for r in start if r["touched"][0] < r["touched"][1]]
        drows += density_rows("modelyard", str(args.workers), f"{args.workers} (one per worker)",
                              pss, rss, procs)  # fmt: skip
        if short:
            lines.append(
                f"Not every worker answered every endpoint in {len(short)} run(s) "
                "(see raw.json: touched)."
            )
    peers = data.get("peers") or {}
    peer_notes = []
    for peer, got in peers.items():
        rows_ = got.get("rows") or []
        if rows_:
            copies = f"{args.workers} (one per worker)" if peer == "bentoml" else (
                "1 (in the replica that got its first request)")  # fmt: skip
            label = f"{peer} ({meta.get(peer + '_version', '?')})"
            drows += density_rows(
                label,
                str(args.workers) + (" workers" if peer == "bentoml" else " replicas"),
                copies,
                {r["count"]: [r["pss"]] for r in rows_},
                {r["count"]: [r["rss"]] for r in rows_},
                {r["count"]: [r["procs"]] for r in rows_},
            )
        if "skipped" in got or "failed" in got:
            peer_notes.append([peer, "no", got.get("skipped") or got.get("failed", "")])
        else:
            how = {
                "bentoml": "yes, by hand: one service whose __init__ opens every model into a "
                "dict, an API taking the model's name (bench/serving/bento_many.py); every "
                "worker loads every model at start, no eviction, no registry",
                "ray": "yes: Serve model multiplexing (@serve.multiplexed, model id in a "
                "header; bench/serving/ray_many.py), loaded on first request per replica, "
                "LRU per replica",
            }[peer]
            peer_notes.append([peer, "yes", how])
    if drows:
        lines += [
            "**Density**: tree PSS once every endpoint answered (every worker, every "
            "endpoint) and the tree is idle; modelyard: median (min-max) over the start "
            "rounds, peers: one run each.",
            "",
            md_table(density_head, drows),
            "",
        ]
        tables.append(("density", density_head, drows))
    if peer_notes:
        head = ["peer", "N models in one service?", "how / why not"]
        lines += [md_table(head, peer_notes), ""]
        tables.append(("peers", head, peer_notes))
        for peer, got in peers.items():
            for r in got.get("rows") or []:
                lines.append(
                    f"- {peer}, {r['count']} models: first answer {r['first']:.2f}s, all "
                    f"{r['all']:.2f}s after process start."
                )
        lines.append("")

    reload = data.get("reload")
    if reload:
        sizes = reload["file_sizes"]
        records = reload["records"]
        reloads = [r["seconds"] * 1e3 for r in records if r["reload"]]
        hits = [r["seconds"] * 1e3 for r in records if not r["reload"]]
        server_side = [
            r["server_seconds"] * 1e3 for r in records if r.get("server_seconds") is not None
        ]
        how = records[0]["how"] if records else "?"
        lines += [
            f"**Reload** of evicted models: {reload['models']} endpoints, each a RandomForest "
            f"({args.rf_trees} trees, depth {args.rf_depth}) as ONNX, files "
            f"{statistics.mean(sizes) / 1e6:.2f} MB ({min(sizes) / 1e6:.2f}-"
            f"{max(sizes) / 1e6:.2f}); MODELYARD_GATEWAY_MEMORY_MB={reload['budget_mb']}, "
            f"--workers {reload['workers']}; {reload['requests']} sequential requests "
            f"(httpx, keep-alive), Zipf popularity 1/k^{args.zipf}; reloads told apart by "
            + (
                "/metrics (modelyard_model_loaded before each request)."
                if how == "metrics"
                else f"recency (model not among the last {args.recency} asked for)."
            )
            + f" Start to ready with the budget: {reload['start_seconds']:.2f}s.",
            "",
        ]
        head = ["requests", "count", "share", "p50 ms", "p90 ms", "p99 ms", "max ms",
                "gateway load+warm-up p50 ms"]  # fmt: skip
        rows = []
        for label, values, extra in (
            ("reload", reloads, server_side),
            ("hit (model resident)", hits, []),
        ):
            if not values:
                rows.append([label, "0", "0%", "—", "—", "—", "—", "—"])
                continue
            rows.append(
                [
                    label,
                    str(len(values)),
                    f"{len(values) / max(1, len(records)):.0%}",
                    f"{percentile(values, 50):.2f}",
                    f"{percentile(values, 90):.2f}",
                    f"{percentile(values, 99):.2f}",
                    f"{max(values):.2f}",
                    f"{percentile(extra, 50):.2f}" if extra else "—",
                ]
            )
        lines += [md_table(head, rows), ""]
        tables.append(("reload latency", head, rows))
        head = ["point", "requests done", "tree RSS MiB", "tree PSS MiB", "models resident",
                "budget MiB (per worker)", "pool bytes reported"]  # fmt: skip
        rows = []
        for p in reload["points"]:
            reported = ", ".join(f"{k} {v / MiB:.1f} MiB" for k, v in p["pool_bytes"].items())
            rows.append(
                [
                    p["point"],
                    str(p["requests"]),
                    f"{p['rss'] / MiB:.0f}",
                    f"{p['pss'] / MiB:.0f}",
                    "—" if p["resident"] is None else str(p["resident"]),
                    str(reload["budget_mb"]),
                    reported or "—",
                ]
            )
        lines += [md_table(head, rows), ""]
        tables.append(("memory during the Zipf run", head, rows))
        if reload["errors"]:
            lines += [f"{len(reload['errors'])} failed requests, first: {reload['errors'][0]}", ""]
    failures = data.get("failures") or []
    if failures:
        lines += ["Failures: " + "; ".join(failures), ""]
    _print_rich(tables)
    return "\n".join(lines)


def _print_rich(tables: list[tuple[str, list[str], list[list[str]]]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        for title, head, rows in tables:
            print(f"\n{title}\n{md_table(head, rows)}")
        return
    console = Console(width=max(Console().width, 180))  # wide tables, also in a log file
    for title, head, rows in tables:
        table = Table(title=title)
        for h in head:
            table.add_column(h)
        for r in rows:
            table.add_row(*r)
        console.print(table)


# ----------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma list from {PARTS}")
    ap.add_argument("--counts", default="1,10,50,200", help="endpoint counts (start, density)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the start curve")
    ap.add_argument("--workers", type=int, default=2, help="gateway workers (and peers')")
    ap.add_argument("--start-timeout", type=float, default=600.0, help="seconds per start")
    ap.add_argument("--reload-models", type=int, default=50)
    ap.add_argument("--reload-requests", type=int, default=2000)
    ap.add_argument("--reload-workers", type=int, default=1, help="workers of the reload run")
    ap.add_argument("--budget-mb", type=int, default=16, help="MODELYARD_GATEWAY_MEMORY_MB")
    ap.add_argument("--zipf", type=float, default=1.1, help="popularity exponent")
    ap.add_argument("--recency", type=int, default=10, help="fallback reload classification")
    ap.add_argument("--rf-trees", type=int, default=70, help="trees per reload model")
    ap.add_argument("--rf-depth", type=int, default=10)
    ap.add_argument("--peers", default=",".join(PEERS), help=f"comma list from {PEERS}")
    ap.add_argument("--peer-counts", default="1,50,200", help="model counts of the peer rows")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    ap.add_argument("--register", nargs=2, metavar=("DIR", "COUNT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.parts = _csv(args.parts)
    args.peers = _csv(args.peers)
    args.counts = sorted({int(x) for x in _csv(args.counts)})
    args.peer_counts = sorted({int(x) for x in _csv(args.peer_counts)})
    if bad := set(args.parts) - set(PARTS):
        ap.error(f"unknown parts {sorted(bad)}")
    if bad := set(args.peers) - set(PEERS):
        ap.error(f"unknown peers {sorted(bad)}")
    if min(args.counts + args.peer_counts, default=1) < 1:
        ap.error("counts must be at least 1")
    if max(args.counts + args.peer_counts + [args.reload_models], default=0) > 999:
        ap.error("at most 999 models (names m000..m999)")
    return args


def _version(python: Path, package: str) -> str:
    result = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True,
        text=True,
    )
    return result.stdout.strip() or "?"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.register:
        register_child(args.register[0], int(args.register[1]))
        return 0
    outdir = BENCH_DIR / "runs" / f"many-{time.strftime('%Y%m%d-%H%M%S')}"
    outdir.mkdir(parents=True)
    load = os.getloadavg()
    log(f"work dir {outdir}; load average {load[0]:.2f} on {os.cpu_count()} cores")

    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # Start like an installed copy: compiled bytecode (PYTHONDONTWRITEBYTECODE may be set).
    compileall.compile_dir(SRC_DIR / "modelyard", quiet=1)
    meta: dict[str, Any] = {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "load_before": load,
        "modelyard": "modelyard " + _version(Path(sys.executable), "modelyard"),
        "onnxruntime": _version(Path(sys.executable), "onnxruntime"),
    }
    data: dict[str, Any] = {"meta": meta, "args": vars(args)}
    started: list[Server] = []
    code = 0
    try:
        if "start" in args.parts:
            data["start"] = run_start(args, outdir, started)
            meta["lr_sizes"] = file_sizes(models_dir("lr", args), max(args.counts))
        if "reload" in args.parts:
            data["reload"] = run_reload(args, outdir, started)
        if "peers" in args.parts:
            if "bentoml" in args.peers and (BENTOML_VENV / "bin" / "python").exists():
                meta["bentoml_version"] = "BentoML " + _version(
                    BENTOML_VENV / "bin" / "python", "bentoml"
                )
            if "ray" in args.peers and (RAY_VENV / "bin" / "python").exists():
                meta["ray_version"] = "Ray " + _version(RAY_VENV / "bin" / "python", "ray")
            data["peers"] = run_peers(args, outdir, started)
    except KeyboardInterrupt:
        log("interrupted: stopping servers")
        code = 130
    except Exception as exc:
        import traceback

        traceback.print_exc()
        data.setdefault("failures", []).append(f"{type(exc).__name__}: {str(exc)[:300]}")
        code = 1
    finally:
        for server in started:
            server.stop()
    meta["load_after"] = os.getloadavg()
    (outdir / "raw.json").write_text(json.dumps(data, indent=1, default=str))
    if code != 130 and any(k in data for k in ("start", "reload", "peers")):
        section = report(data, args, outdir)
        (outdir / "report.md").write_text(section + "\n")
        print(section)
        if args.write:
            common.write_results(SECTION, section)
            log(f"updated {common.RESULTS_MD}")
    log(f"raw data and logs in {outdir}")
    return code


if __name__ == "__main__":
    sys.exit(main())
