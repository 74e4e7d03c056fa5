"""Seed an MLflow tracking database with the dashboard benchmark's volumes (MLflow's venv).

The same shapes as bench/ui/seed.py: experiment ``sweep`` with RUNS runs (5 params, 3 final
metrics, ``loss`` and ``val_loss`` over 10 steps, one tag), registered model ``fraud`` with
VERSIONS versions (source ``runs:/<run>/model`` of one run; MLflow's server accepts a
source without files when it names its run), five other models with 1-5 versions. Written
through ``MlflowClient`` on the SQLite URI (MLflow's SqlAlchemyStore, no server), with
``log_batch`` per run. Prints a JSON line with the ids run.py needs and the timings.

    bench/.venv-mlflow/bin/python bench/ui/mlflow_seed.py --db DIR/mlflow.db --artifacts DIR/a
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

OTHER_MODELS = {"churn": 5, "eta": 3, "spam-filter": 2, "ranker": 4, "forecast": 1}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--versions", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=10_000)
    args = ap.parse_args()
    uri = f"sqlite:///{args.db}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("sweep", artifact_location=f"file://{args.artifacts}")
    rng = np.random.default_rng(3)
    t0 = time.perf_counter()
    ids = []
    for i in range(args.runs):
        run = client.create_run(exp, run_name=f"trial-{i:05d}", tags={"sampler": "tpe"})
        rid = run.info.run_id
        now = int(time.time() * 1000)
        lr = float(10 ** rng.uniform(-4, -1))
        params = [
            Param("learning_rate", str(round(lr, 6))),
            Param("max_depth", str(int(rng.integers(2, 12)))),
            Param("n_estimators", str(int(rng.integers(50, 500)))),
            Param("subsample", str(round(float(rng.uniform(0.5, 1)), 3))),
            Param("seed", str(i)),
        ]
        base = float(rng.uniform(0.2, 0.7))
        metrics = []
        for s in range(10):
            decay = base * (0.8**s)
            metrics.append(Metric("loss", decay, now, s))
            metrics.append(Metric("val_loss", decay * 1.1 + 0.01, now, s))
        auc = float(np.clip(1 - base / 2 + rng.normal(0, 0.02), 0, 1))
        metrics += [
            Metric("roc_auc", auc, now, 0),
            Metric("accuracy", float(np.clip(auc - 0.05, 0, 1)), now, 0),
            Metric("f1", float(np.clip(auc - 0.15, 0, 1)), now, 0),
        ]
        client.log_batch(rid, metrics=metrics, params=params, tags=[RunTag("seeded", "1")])
        client.set_terminated(rid, "FAILED" if i % 97 == 0 else "FINISHED")
        ids.append(rid)
        if i % 1000 == 999:
            rate = (i + 1) / (time.perf_counter() - t0)
            print(f"  runs {i + 1}/{args.runs} ({rate:.0f}/s)", file=sys.stderr, flush=True)
    runs_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    client.create_registered_model("fraud", description="benchmark seed")
    source_run = ids[0]
    for i in range(args.versions):
        client.create_model_version(
            "fraud",
            f"runs:/{source_run}/model",
            run_id=source_run,
            tags={"week": str(i + 1)},
            description=f"retrained on week {i + 1}",
        )
        if i % 200 == 199:
            print(f"  versions {i + 1}/{args.versions}", file=sys.stderr, flush=True)
    client.set_registered_model_alias("fraud", "champion", str(max(1, args.versions - 10)))
    client.set_registered_model_alias("fraud", "challenger", str(args.versions))
    for name, n in OTHER_MODELS.items():
        client.create_registered_model(name)
        for _ in range(n):
            client.create_model_version(name, f"runs:/{source_run}/model", run_id=source_run)
    versions_s = time.perf_counter() - t1
    print(
        json.dumps(
            {
                "experiment_id": exp,
                "runs": [ids[-1], ids[-2], ids[-3], ids[len(ids) // 2], ids[0]],
                "n_runs": args.runs,
                "versions": args.versions,
                "s_per_run": runs_s / max(args.runs, 1),
                "s_per_version": versions_s / max(args.versions, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
