#!/usr/bin/env python3
"""The client side of bench/registry/mlflow_client.py: MLflow's own client (``MlflowClient``),
run with bench/.venv-mlflow's python, the same script against any MLflow-speaking server.

    python mlflow_load.py setup  --uri URL --tasks N [--search-runs R --search-versions V]
        prepares what the operations use, through MLflow's client; prints a JSON context.
    python mlflow_load.py worker --uri URL --ctx FILE --tasks 0,1 [--batch 10]
        for each job read on stdin (a JSON line: op, seq, warmup, duration): one call, prints
        "ready", reads the start time (time.monotonic) on stdin, runs the operation from one
        thread per task until the end of the window, prints a JSON result.

Operations: log-batch (BATCH metrics to the task's own run), register (create_model_version
of a model logged at setup, as log_model registers it), search-runs (a filter and an order on
R runs), search-versions (the V versions of one model). Each call's answer is checked.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import numpy as np

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

MODEL = "bench"
SEARCH_MODEL = "bench-search"
EXPERIMENT = "bench"
SEARCH_EXPERIMENT = "bench-search"
#: search-runs cycles through these thresholds (varied queries, each answer checked)
THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.8)
FILTER = "metrics.accuracy > {} and params.solver = 'lbfgs'"


def setup(uri: str, tasks: int, search_runs: int, search_versions: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    mlflow.set_experiment(EXPERIMENT)
    X = np.random.default_rng(0).normal(size=(200, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    with mlflow.start_run(run_name="model-source") as run:
        info = mlflow.sklearn.log_model(
            LogisticRegression().fit(X, y), name="model", input_example=X[:5],
            registered_model_name=MODEL,
        )  # fmt: skip
    # what log_model sent to register the version: the register operation repeats it
    first = client.get_model_version(MODEL, str(info.registered_model_version))
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    runs = [client.create_run(experiment, run_name=f"t{k}").info.run_id for k in range(tasks)]

    search_exp = client.create_experiment(SEARCH_EXPERIMENT)
    rng = np.random.default_rng(1)
    expected = dict.fromkeys(THRESHOLDS, 0)
    for k in range(search_runs):
        accuracy, solver = float(rng.uniform(0.3, 0.9)), ("lbfgs", "saga")[k % 2]
        for threshold in THRESHOLDS:
            expected[threshold] += accuracy > threshold and solver == "lbfgs"
        r = client.create_run(search_exp, run_name=f"s{k}")
        client.log_batch(
            r.info.run_id,
            metrics=[Metric("accuracy", accuracy, int(time.time() * 1000), 0)],
            params=[Param("solver", solver), Param("C", str(0.1 * (k % 7 + 1)))],
        )
        client.set_terminated(r.info.run_id)
    client.create_registered_model(SEARCH_MODEL)
    for _ in range(search_versions):
        client.create_model_version(
            SEARCH_MODEL, first.source, run_id=first.run_id, model_id=info.model_id
        )
    return {
        "source": first.source,
        "run_id": first.run_id,
        "model_id": info.model_id,
        "source_run": run.info.run_id,
        "runs": runs,
        "search_experiment": search_exp,
        "search_expected": [expected[t] for t in THRESHOLDS],
        "search_versions": search_versions,
    }


class Ops:
    """One method per operation: ``(task, i)``; raises when the answer is wrong."""

    def __init__(self, uri: str, ctx: dict, batch: int) -> None:
        mlflow.set_tracking_uri(uri)
        self.client = MlflowClient()
        self.ctx = ctx
        self.batch = batch

    def log_batch(self, task: int, i: int) -> None:
        ts, step = int(time.time() * 1000), self.ctx["seq"] * 10_000_000 + i
        metrics = [Metric(f"m{k}", 0.5 + i * 1e-6 + k, ts, step) for k in range(self.batch)]
        self.client.log_batch(self.ctx["runs"][task], metrics=metrics)

    def register(self, task: int, i: int) -> None:
        version = self.client.create_model_version(
            MODEL, self.ctx["source"], run_id=self.ctx["run_id"], model_id=self.ctx["model_id"]
        )
        if version.status != "READY":
            raise RuntimeError(f"version {version.version} is {version.status}")

    def search_runs(self, task: int, i: int) -> None:
        k = (task + i) % len(THRESHOLDS)
        found = self.client.search_runs(
            [self.ctx["search_experiment"]],
            filter_string=FILTER.format(THRESHOLDS[k]),
            order_by=["metrics.accuracy DESC"],
            max_results=1000,
        )
        expected = self.ctx["search_expected"][k]
        if len(found) != expected:
            raise RuntimeError(f"{len(found)} runs found, {expected} match")
        accuracies = [r.data.metrics["accuracy"] for r in found]
        if accuracies != sorted(accuracies, reverse=True):
            raise RuntimeError("runs not ordered by metrics.accuracy DESC")

    def search_versions(self, task: int, i: int) -> None:
        found = self.client.search_model_versions(f"name='{SEARCH_MODEL}'")
        if len(found) != self.ctx["search_versions"]:
            raise RuntimeError(f"{len(found)} versions found, {self.ctx['search_versions']} made")


def worker(args: argparse.Namespace) -> None:
    """Serve jobs from stdin, one JSON line each (``{"op", "seq", "warmup", "duration"}``):
    make one call, print "ready", read the start time, run, print the result."""
    ctx = json.loads(open(args.ctx).read())  # noqa: SIM115
    tasks = [int(t) for t in args.tasks.split(",")]
    for line in sys.stdin:
        job = json.loads(line)
        ops = Ops(args.uri, {**ctx, "seq": job["seq"]}, args.batch)
        fn = getattr(ops, job["op"].replace("-", "_"))
        fn(tasks[0], -1)  # one call before the start: connections and lazy imports made
        print("ready", flush=True)
        t_start = float(sys.stdin.readline())
        print(json.dumps(run_job(fn, tasks, t_start, job["warmup"], job["duration"])), flush=True)


def run_job(fn, tasks: list[int], t_start: float, warmup: float, duration: float) -> dict:  # type: ignore[no-untyped-def]
    """One thread per task calls ``fn`` from ``t_start`` until the end of the window."""
    measure_from, end = t_start + warmup, t_start + warmup + duration
    lat: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()

    def loop(task: int) -> None:
        i = 0
        while time.monotonic() < end:
            t0 = time.perf_counter()
            try:
                fn(task, i)
                failed = None
            except Exception as exc:  # counted, reported by message
                failed = f"{type(exc).__name__}: {exc}"[:200]
            elapsed = time.perf_counter() - t0
            i += 1
            # counted by completion inside the measured window, as bench/registry/run.py does
            if measure_from <= time.monotonic() <= end:
                with lock:
                    if failed is None:
                        lat.append(elapsed)
                    else:
                        errors[failed] = errors.get(failed, 0) + 1

    time.sleep(max(0.0, t_start - time.monotonic()))
    threads = [threading.Thread(target=loop, args=(t,)) for t in tasks]
    for t in threads:
        t.start()
    time.sleep(max(0.0, measure_from - time.monotonic()))
    cpu0, wall0 = time.process_time(), time.monotonic()
    for t in threads:
        t.join()
    cpu = (time.process_time() - cpu0) / max(1e-9, time.monotonic() - wall0)
    return {"lat": lat, "errors": errors, "cpu": cpu}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["setup", "worker"])
    ap.add_argument("--uri", required=True)
    ap.add_argument("--tasks", default="1")
    ap.add_argument("--search-runs", type=int, default=100)
    ap.add_argument("--search-versions", type=int, default=30)
    ap.add_argument("--ctx")
    ap.add_argument("--batch", type=int, default=10)
    args = ap.parse_args()
    if args.mode == "setup":
        ctx = setup(args.uri, int(args.tasks), args.search_runs, args.search_versions)
        print(json.dumps(ctx), flush=True)
    else:
        worker(args)


if __name__ == "__main__":
    main()
