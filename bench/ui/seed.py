#!/usr/bin/env python3
"""Seed a workspace with the dashboard benchmark's volumes (issue #19).

What it makes, in a MODELYARD_HOME of its own (SQLite by default, or ``--database-url``):

- ``modelyard quickstart``'s project, datasets, run and model ``fraud`` (v1, champion);
- **1,000 versions** of ``fraud``: v2..v1000 registered through ``ws.registry.create_version``
  from v1's stored manifest (the same files; the registry validates them once), each with
  v1's run and dataset links; aliases moved a few times (champion ends on v990, challenger
  on v1000), so alias history has entries;
- five other models with 1-5 versions each;
- an experiment ``sweep`` with **10,000 runs**, each with 5 params, 3 final metrics and two
  metrics over 10 steps (``loss``, ``val_loss``): ``start_run(params=...)``, one
  ``log_metrics`` call of 23 points, ``end_run`` — 3 transactions per run;
- endpoints ``fraud`` (-> ``models:/fraud@champion``) and ``fraud-next`` (-> @challenger);
- **a day of predictions** on ``fraud``: ``--rate`` single-row requests per second (1 ->
  86,400 requests) with timestamps spread over the last 24 h, written by the monitoring's
  ``PredictionLog`` as the gateway would: one segment per ``--segment-seconds`` of traffic
  (the gateway's default flush is 5 s, so 1 req/s makes 17,280 small segments), ~0.5 %
  failed requests, amounts drifting in the last 8 hours;
- ground-truth labels for 20 % of those requests (``submit_feedback``);
- a reference profile, three alert rules, and the monitor's windows closed over the day
  (``ws.monitoring.run_once(now)``: 288 windows of 5 min, 24 of an hour, a day), which
  raise the alerts;
- five runs of a 4-step pipeline (one failing), an alias policy and four approvals (two
  pending, one approved, one rejected); audit records come with every change.

Timings of each stage and the names/ids run.py needs go to ``HOME/seed.json``; a home with
that file and the same volumes is reused (``--force`` seeds again from scratch). A home
without it (a seed that was interrupted) is deleted and seeded again.

    python bench/ui/seed.py                       # bench/ui/.data/home, ~5-10 min once
    python bench/ui/seed.py --versions 100 --runs 500 --rate 0.1 --home /tmp/ui-small
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_HOME = HERE / ".data" / "home"
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from modelyard.config import Settings  # noqa: E402
from modelyard.pipelines import pipeline, step  # noqa: E402
from modelyard.workspace import Workspace  # noqa: E402

MODEL = "fraud"
ENDPOINT = "fraud"
EXPERIMENT = "sweep"
OTHER_MODELS = {"churn": 5, "eta": 3, "spam-filter": 2, "ranker": 4, "forecast": 1}
FEATURES = ["amount", "hour", "account_age_days", "foreign"]
METRIC_STEPS = 10


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )


@contextmanager
def stage(timings: dict[str, float], name: str):
    t0 = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - t0, 2)
    print(f"  {name}: {timings[name]:.1f} s", flush=True)


# --- a small pipeline, run in-process -------------------------------------------------------


@step
def load_rows(rows: int) -> dict:
    rng = np.random.default_rng(rows)
    return {"x": rng.normal(size=rows).tolist()}


@step
def featurise(data: dict) -> dict:
    return {"x2": [v * v for v in data["x"]]}


@step
def train(features: dict, fail: bool) -> float:
    if fail:
        raise RuntimeError("training diverged (seeded failure for the dashboard benchmark)")
    return float(sum(features["x2"]) / len(features["x2"]))


@step
def evaluate(score: float) -> dict:
    return {"score": score, "passed": score < 2.0}


@pipeline(name="fraud-retrain")
def retrain(rows: int = 1000, fail: bool = False):
    data = load_rows(rows)
    evaluate(train(featurise(data), fail))


# --- stages ---------------------------------------------------------------------------------


def quickstart(home: Path, database_url: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env["MODELYARD_HOME"] = str(home)
    if database_url:
        env["MODELYARD_DATABASE_URL"] = database_url
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO / "src"), env.get("PYTHONPATH")) if x)
    subprocess.run(
        [sys.executable, "-m", "modelyard", "quickstart", "--data-dir", str(home / "fraud-data")],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def seed_versions(ws: Workspace, versions: int, info: dict[str, Any]) -> float:
    """v2..``versions`` of fraud from v1's manifest; returns seconds per version."""
    v1 = ws.registry.get_version(MODEL, 1)
    links = [d.model_dump() for d in v1.datasets]
    todo = versions - 1
    t0 = time.perf_counter()
    with progress() as bar:
        task = bar.add_task(f"versions of {MODEL}", total=todo)
        for i in range(2, versions + 1):
            ws.registry.create_version(
                MODEL,
                v1.manifest_digest,
                run_id=v1.run_id,
                datasets=links,
                description=f"retrained on week {i}",
                tags={"week": str(i), "trainer": "nightly"},
                source=f"pipelines:/fraud-retrain/{i}",
            )
            bar.advance(task)
    per = (time.perf_counter() - t0) / max(todo, 1)
    # alias moves: history for the model page
    last = versions
    for v in sorted({max(1, last // 2), max(1, last - 100), max(1, last - 10)}):
        ws.registry.set_alias(MODEL, "champion", v, reason="benchmark seed")
    ws.registry.set_alias(MODEL, "challenger", last, reason="benchmark seed")
    info["champion"] = ws.registry.get_alias(MODEL, "champion").version
    info["challenger"] = last
    for name, n in OTHER_MODELS.items():
        ws.registry.create_model(name, description=f"{name} model (benchmark seed)")
        for _ in range(n):
            ws.registry.create_version(name, v1.manifest_digest, run_id=v1.run_id, datasets=links)
        ws.registry.set_alias(name, "champion", n)
    return per


def seed_runs(ws: Workspace, runs: int, info: dict[str, Any]) -> float:
    """``runs`` finished runs in experiment sweep; returns seconds per run."""
    rng = np.random.default_rng(3)
    tracking = ws.tracking
    tracking.create_experiment(EXPERIMENT, description="hyperparameter sweep (benchmark seed)")
    ids: list[str] = []
    t0 = time.perf_counter()
    with progress() as bar:
        task = bar.add_task(f"runs in {EXPERIMENT}", total=runs)
        for i in range(runs):
            lr = float(10 ** rng.uniform(-4, -1))
            run = tracking.start_run(
                EXPERIMENT,
                name=f"trial-{i:05d}",
                tags={"sampler": "tpe"},
                params={
                    "learning_rate": round(lr, 6),
                    "max_depth": int(rng.integers(2, 12)),
                    "n_estimators": int(rng.integers(50, 500)),
                    "subsample": round(float(rng.uniform(0.5, 1)), 3),
                    "seed": i,
                },
            )
            base = float(rng.uniform(0.2, 0.7))
            points: list[dict[str, Any]] = []
            for s in range(METRIC_STEPS):
                decay = base * (0.8**s)
                points.append({"key": "loss", "value": decay, "step": s})
                points.append({"key": "val_loss", "value": decay * 1.1 + 0.01, "step": s})
            auc = float(np.clip(1 - base / 2 + rng.normal(0, 0.02), 0, 1))
            points += [
                {"key": "roc_auc", "value": auc, "step": 0},
                {"key": "accuracy", "value": float(np.clip(auc - 0.05, 0, 1)), "step": 0},
                {"key": "f1", "value": float(np.clip(auc - 0.15, 0, 1)), "step": 0},
            ]
            tracking.log_metrics(run.id, points)
            tracking.end_run(run.id, "failed" if i % 97 == 0 else "finished")
            ids.append(run.id)
            bar.advance(task)
    info["run_ids"] = [ids[-1], ids[-2], ids[-3], ids[len(ids) // 2], ids[0]]
    return (time.perf_counter() - t0) / max(runs, 1)


def seed_endpoints(ws: Workspace, info: dict[str, Any]) -> None:
    ws.endpoints.create(ENDPOINT, f"models:/{MODEL}@champion")
    ws.endpoints.create("fraud-next", f"models:/{MODEL}@challenger")
    ws.monitoring.configure(
        ENDPOINT, {"granularities": [300, 3600, 86400], "prediction": None, "task": "auto"}
    )
    ws.monitoring.set_reference(f"models:/{MODEL}/{info['champion']}")
    rules = [
        {"name": "fraud-drift", "kind": "drift", "metric": "drift_share", "op": ">",
         "threshold": 0.3, "window": 300, "min_samples": 100},
        {"name": "fraud-p99", "kind": "latency", "metric": "latency_p99_ms", "op": ">",
         "threshold": 20, "window": 300},
        {"name": "fraud-errors", "kind": "error_rate", "metric": "error_rate", "op": ">",
         "threshold": 0.02, "window": 3600},
    ]  # fmt: skip
    for rule in rules:
        ws.monitoring.create_rule({"endpoint": ENDPOINT, **rule})


def seed_predictions(
    ws: Workspace,
    start: datetime,
    end: datetime,
    rate: float,
    segment_seconds: float,
    version: int,
    *,
    seed: int = 11,
    drift_after: float = 2 / 3,
    prefix: str = "req-",
) -> tuple[int, int, int]:
    """Single-row requests on the endpoint from ``start`` to ``end``, ``rate`` per second,
    in segments of ``segment_seconds``; amounts drift after ``drift_after`` of the span.
    Returns (requests, segments written, labels submitted)."""
    import pandas as pd

    from modelyard.cli.quickstart import payments
    from modelyard.monitoring import PredictionLog

    seconds = (end - start).total_seconds()
    n = int(seconds * rate)
    if n <= 0:
        return 0, 0, 0
    rng = np.random.default_rng(seed)
    calm = int(n * drift_after)
    data = pd.concat([payments(rng, calm), payments(rng, n - calm, drift=1.0)], ignore_index=True)
    data = data[FEATURES]
    predictor = ws.registry.load_model(f"models:/{MODEL}/{version}")
    outputs = {k: np.asarray(v) for k, v in predictor.predict(data).items()}
    columns = {name: data[name].to_numpy() for name in FEATURES}
    offsets = np.sort(rng.uniform(0, seconds, n))
    latency = rng.lognormal(np.log(4.0), 0.5, n).astype(np.float32)
    latency[rng.random(n) < 0.01] *= 8  # a slow tail
    failed = rng.random(n) < 0.005
    plog = PredictionLog(ws, flush_seconds=1e9, segment_rows=1_000_000)
    with progress() as bar:
        task = bar.add_task("predictions (requests)", total=n)
        i = 0
        cut = segment_seconds
        while i < n:
            j = int(np.searchsorted(offsets, cut, side="left"))
            for k in range(i, j):
                at = start + timedelta(seconds=float(offsets[k]))
                rid = f"{prefix}{k:07d}"
                if failed[k]:
                    plog.log_error(endpoint=ENDPOINT, model=MODEL, version=version,
                                   request_id=rid, status=500 if k % 2 else 422,
                                   latency_ms=float(latency[k]), at=at)  # fmt: skip
                    continue
                plog.log(
                    endpoint=ENDPOINT,
                    model=MODEL,
                    version=version,
                    request_id=rid,
                    inputs={c: columns[c][k : k + 1] for c in FEATURES},
                    outputs={name: values[k : k + 1] for name, values in outputs.items()},
                    rows=1,
                    latency_ms=float(latency[k]),
                    at=at,
                )
            if j > i:
                plog.flush()  # no writer thread: written here, one segment per column set
            bar.advance(task, j - i)
            i = j
            cut += segment_seconds
    plog.close()
    labelled = _feedback(ws, n, failed, rng, prefix)
    return n, plog.stats()["segments"], labelled


def top_up(home: Path, database_url: str | None = None) -> dict[str, Any]:
    """Log predictions from where the seed's log ends until now (same rate and segments)
    and close the monitor's windows, so that "the last hour" and "the last day" hold
    traffic however long ago the seed ran. Updates and returns seed.json's content."""
    marker = home / "seed.json"
    info = json.loads(marker.read_text())
    ws = Workspace.open(Settings(home=home, database_url=database_url))
    try:
        start = datetime.fromisoformat(info.get("log_end") or info["seeded_at"])
        end = datetime.now(UTC).replace(microsecond=0)
        if (end - start).total_seconds() < 60:
            return info
        print(f"topping up the prediction log: {start:%Y-%m-%d %H:%M} -> {end:%H:%M} UTC")
        n, segments, labelled = seed_predictions(
            ws, start, end, info["rate"], info["segment_seconds"], info["champion"],
            seed=int(end.timestamp()), drift_after=0.0, prefix=f"up{int(end.timestamp())}-",
        )  # fmt: skip
        passed = ws.monitoring.run_once(datetime.now(UTC))
        info["requests"] += n
        info["segments"] += segments
        info["labelled"] += labelled
        info["log_end"] = end.isoformat()
        info.setdefault("top_ups", []).append(
            {"at": end.isoformat(), "requests": n, "windows_closed": passed.windows_closed}
        )
        marker.write_text(json.dumps(info, indent=2))
        return info
    finally:
        ws.close()


def _feedback(
    ws: Workspace, n: int, failed: np.ndarray, rng: np.random.Generator, prefix: str
) -> int:
    """Labels for 20 % of the answered requests, 10 % of them fraud."""
    chosen = [k for k in range(n) if not failed[k] and rng.random() < 0.2]
    items = [{"request_id": f"{prefix}{k:07d}", "row": 0, "label": int(rng.random() < 0.1)}
             for k in chosen]  # fmt: skip
    with progress() as bar:
        task = bar.add_task("feedback labels", total=len(items))
        for at in range(0, len(items), 20_000):
            chunk = items[at : at + 20_000]
            ws.monitoring.submit_feedback(ENDPOINT, chunk)
            bar.advance(task, len(chunk))
    return len(items)


def seed_pipelines(ws: Workspace, info: dict[str, Any]) -> None:
    ids = []
    for k in range(5):
        run = ws.pipelines.run(
            retrain, {"rows": 1000 + k, "fail": k == 3}, executor="inprocess", force=True
        )
        ids.append(run.id)
    info["pipeline_runs"] = ids


def seed_approvals(ws: Workspace, info: dict[str, Any]) -> None:
    from modelyard.governance.policies import move_subject

    ws.policies.set("fraud-champion", f"model:{MODEL}", aliases=["champion"], approvals=1)
    top = info["challenger"]
    ids = []
    for v in (top, top - 1, top - 2, top - 3):
        ids.append(ws.approvals.request(move_subject(MODEL, v, "champion"), {"why": "seed"}).id)
    reviewer = ws.as_actor("reviewer")
    reviewer.approvals.approve(ids[2], "looks good")
    reviewer.approvals.reject(ids[3], "worse on the holdout")
    info["approvals"] = ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", type=Path, default=DEFAULT_HOME)
    ap.add_argument(
        "--database-url",
        default=None,
        help="an EMPTY database (e.g. postgresql+psycopg://postgres@127.0.0.1/ui)",
    )
    ap.add_argument("--versions", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--rate", type=float, default=1.0, help="requests per second over the day")
    ap.add_argument(
        "--segment-seconds",
        type=float,
        default=5.0,
        help="traffic per log segment (the gateway's default flush: 5 s)",
    )
    ap.add_argument("--force", action="store_true", help="seed again from scratch")
    args = ap.parse_args()  # fmt: skip

    home: Path = args.home.resolve()
    marker = home / "seed.json"
    wanted = {"versions": args.versions, "runs": args.runs, "hours": args.hours,
              "rate": args.rate, "segment_seconds": args.segment_seconds,
              "database_url": args.database_url}  # fmt: skip
    if marker.exists() and not args.force:
        done = json.loads(marker.read_text())
        if all(done.get(k) == v for k, v in wanted.items()):
            print(f"{home} is seeded already ({marker}); --force to seed again")
            return
    if home.exists():
        print(f"removing {home} (an earlier or interrupted seed)")
        shutil.rmtree(home)
    home.mkdir(parents=True)

    timings: dict[str, float] = {}
    info: dict[str, Any] = {**wanted, "model": MODEL, "endpoint": ENDPOINT,
                            "experiment": EXPERIMENT}  # fmt: skip
    t_all = time.perf_counter()
    print(f"seeding {home}" + (f" on {args.database_url}" if args.database_url else ""))
    with stage(timings, "quickstart"):
        quickstart(home, args.database_url)
    ws = Workspace.open(Settings(home=home, database_url=args.database_url))
    info["datasets"] = [
        d.model_dump(mode="json") for d in ws.registry.get_version(MODEL, 1).datasets
    ]
    with stage(timings, "versions"):
        info["s_per_version"] = seed_versions(ws, args.versions, info)
    with stage(timings, "runs"):
        info["s_per_run"] = seed_runs(ws, args.runs, info)
    with stage(timings, "endpoints + reference"):
        seed_endpoints(ws, info)
    now = datetime.now(UTC).replace(microsecond=0)
    with stage(timings, "predictions + feedback"):
        start = now - timedelta(hours=args.hours)
        info["requests"], info["segments"], info["labelled"] = seed_predictions(
            ws, start, now, args.rate, args.segment_seconds, info["champion"]
        )
        info["log_end"] = now.isoformat()
    with stage(timings, "monitor pass"):
        passed = ws.monitoring.run_once(datetime.now(UTC))
        info["windows_closed"] = passed.windows_closed
        info["alerts_changed"] = passed.alerts_changed
        if passed.errors:
            print(f"  monitor errors: {passed.errors}")
    with stage(timings, "pipelines"):
        seed_pipelines(ws, info)
    with stage(timings, "approvals"):
        seed_approvals(ws, info)
    info["alerts"] = [a.id for a in ws.monitoring.list_alerts(ENDPOINT)]
    timings["total"] = round(time.perf_counter() - t_all, 1)
    info["timings"] = timings
    info["seeded_at"] = datetime.now(UTC).isoformat()
    info["machine"] = f"{os.cpu_count()} cores, Python {platform.python_version()}"
    ws.close()
    marker.write_text(json.dumps(info, indent=2))
    print(
        json.dumps(
            {
                k: info[k]
                for k in (
                    "timings",
                    "s_per_version",
                    "s_per_run",
                    "requests",
                    "segments",
                    "windows_closed",
                )
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
