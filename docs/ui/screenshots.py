"""Regenerate the dashboard's screenshots in docs/ui/ (the pictures in docs/ui.md).

    python docs/ui/screenshots.py            # about a minute; needs /usr/bin/chromium

It makes a workspace of its own in a temporary folder (the quickstart's model, a second
version, an endpoint under traffic, drift, an open alert, runs, a pipeline run, a pending
approval), starts `modelyard serve` on a free loopback port, and photographs each page with
Debian's chromium through Playwright at 1280 px (and the home page at phone width). Nothing
outside the temporary folder and docs/ui/*.png is touched.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the PNG files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelyard-shots-") as tmp:
        home, data = Path(tmp) / "home", Path(tmp) / "data"
        home.mkdir()
        data.mkdir()
        env = {**os.environ, "MODELYARD_HOME": str(home), "NO_COLOR": "1"}
        step("training the quickstart's model (two versions)")
        for alias in ("champion", "challenger"):
            modelyard(env, "quickstart", "--alias", alias, "--data-dir", str(data))
        step("running the churn example's pipeline")
        sys.path.insert(0, str(REPO))
        from examples.churn_retrain.pipeline import make_data

        make_data(2000, seed=1).to_csv(data / "customers.csv", index=False)
        modelyard(env, "datasets", "log", "churn-train", str(data / "customers.csv"))
        modelyard(
            env,
            "pipelines",
            "register",
            "churn-retrain",
            "examples.churn_retrain.pipeline:churn_retrain",
        )
        modelyard(env, "pipelines", "run", "churn-retrain", "-p", "dataset=churn-train")
        step("asking for an approval to move @champion")
        modelyard(env, "policies", "set", "fraud-prod", "--scope", "model:fraud")
        modelyard(env, "approvals", "request", "models:/fraud/2@champion")
        seed_history(home, data)
        with serve(env) as url:
            seed_live(url, data)
            shoot(url, home, args.out)
    step(f"done: {args.out}")


def step(text: str) -> None:
    print(f"- {text}", file=sys.stderr, flush=True)


def modelyard(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "modelyard", *args],
        env=env,
        check=True,
        capture_output=True,
        cwd=REPO,
    )


def seed_history(home: Path, data: Path) -> None:
    """What takes hours to happen on its own, made in-process: runs with step metrics, and
    two hours of predictions (calm, then drifted payments) with labels and a drift alert."""
    from modelyard.config import Settings
    from modelyard.monitoring import PredictionLog
    from modelyard.monitoring.windows import floor_time
    from modelyard.workspace import Workspace

    ws = Workspace.open(Settings(home=home))
    try:
        step("logging runs with metrics over steps")
        rng = np.random.default_rng(3)
        for lr in (0.3, 0.1, 0.03):
            run = ws.tracking.start_run("fraud-tuning", name=f"lr={lr}")
            ws.tracking.log_params(run.id, {"learning_rate": lr, "max_depth": 4})
            loss = 1.0
            for epoch in range(20):
                loss *= 1 - lr * rng.uniform(0.2, 0.6)
                ws.tracking.log_metrics(run.id, {"loss": loss, "auc": 1 - loss / 2}, step=epoch)
            ws.tracking.end_run(run.id)
        step("logging two hours of predictions, the second drifted, with labels")
        train = pd.read_parquet(data / "train.parquet")
        ws.monitoring.set_reference("models:/fraud@champion", data=train)
        ws.monitoring.create_rule(
            {
                "name": "fraud-drift",
                "endpoint": "fraud",
                "kind": "drift",
                "metric": "drift_share",
                "op": ">",
                "threshold": 0.3,
                "window": 300,
            }
        )
        model = ws.registry.load_model("models:/fraud@champion")
        calm = train.drop(columns="is_fraud").sample(600, random_state=1)
        drifted = pd.read_csv(data / "payments.csv").head(400)
        labels = pd.concat([train.loc[calm.index, "is_fraud"], pd.Series([0] * len(drifted))])
        start = floor_time(datetime.now(UTC) - timedelta(hours=2), 3600)
        log = PredictionLog(ws, flush_seconds=3600)
        log.start()
        frames = [(calm, 0), (drifted, 3600)]
        for frame, offset in frames:
            answers = model.predict(frame)
            for i in range(len(frame)):
                at = start + timedelta(seconds=offset + 3000 * i / len(frame))
                log.log(
                    endpoint="fraud",
                    model="fraud",
                    version=1,
                    request_id=f"h{offset}-{i}",
                    inputs={c: frame[c].to_numpy()[i : i + 1] for c in frame.columns},
                    outputs={k: np.asarray(v)[i : i + 1] for k, v in answers.items()},
                    rows=1,
                    latency_ms=float(rng.gamma(2, 1.5)),
                    at=at,
                )
        log.close()
        ws.endpoints.create("fraud", "models:/fraud@champion")
        ids = [f"h0-{i}" for i in range(len(calm))] + [f"h3600-{i}" for i in range(len(drifted))]
        ws.monitoring.submit_feedback(
            "fraud",
            [{"request_id": r, "label": int(label)} for r, label in zip(ids, labels, strict=True)],
        )
        step("closing the monitor's windows over them")
        ws.monitoring.run_once()
    finally:
        ws.close()


@contextmanager
def serve(env: dict[str, str]) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    step(f"starting modelyard serve on 127.0.0.1:{port}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelyard", "serve", "--port", str(port), "--workers", "1"],
        env={**env, "MODELYARD_MONITOR_INTERVAL_SECONDS": "2"},
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("modelyard serve did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def seed_live(url: str, data: Path) -> None:
    """Traffic for the live charts: a few hundred requests over some seconds."""
    step("sending traffic to the fraud endpoint")
    rows = pd.read_csv(data / "payments.csv")
    stop = time.monotonic() + 12
    with httpx.Client(base_url=url) as http:
        i = 0
        while time.monotonic() < stop:
            batch = rows.iloc[i % len(rows) : i % len(rows) + 1 + i % 4]
            http.post(
                "/endpoints/fraud/invocations",
                json={"dataframe_split": batch.to_dict(orient="split", index=False)},
            )
            i += 1
            time.sleep(0.02)


def pages(home: Path) -> list[tuple[str, str]]:
    """(file name, path) of each page to photograph, with the ids of what was made."""
    from modelyard.config import Settings
    from modelyard.workspace import Workspace

    ws = Workspace.open(Settings(home=home), migrate=False)
    try:
        run_ids = [r.id for r in ws.tracking.search_runs("fraud-tuning").items]
        pipeline_run = ws.pipelines.list_runs().items[0].id
        alert = ws.monitoring.list_alerts("fraud")[0].id
        approval = ws.approvals.list(status="pending")[0].id
    finally:
        ws.close()
    compare = "&".join(f"run={r}" for r in run_ids[:3])
    return [
        ("home", "/ui/"),
        ("models", "/ui/models"),
        ("model", "/ui/models/fraud"),
        ("version", "/ui/models/fraud/versions/1"),
        ("dataset", "/ui/datasets/fraud-train/1"),
        ("experiment", "/ui/experiments/fraud-tuning"),
        ("run", f"/ui/runs/{run_ids[0]}"),
        ("compare", f"/ui/runs/compare?{compare}"),
        ("endpoint", "/ui/endpoints/fraud"),
        ("monitoring", "/ui/monitoring?endpoint=fraud&window=300"),
        ("alert", f"/ui/monitoring/alerts/{alert}"),
        ("pipelines", "/ui/pipelines"),
        ("pipeline-run", f"/ui/pipelines/runs/{pipeline_run}"),
        ("approvals", "/ui/approvals"),
        ("approval", f"/ui/approvals/{approval}"),
        ("audit", "/ui/audit"),
    ]


def shoot(url: str, home: Path, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(base_url=url, viewport={"width": 1280, "height": 900})
        for name, path in pages(home):
            step(f"photographing {path}")
            page.goto(path)
            page.wait_for_load_state("networkidle")  # sections htmx loads after the page
            page.screenshot(path=str(out / f"{name}.png"), full_page=True)
        phone = browser.new_page(base_url=url, viewport={"width": 390, "height": 844})
        phone.goto("/ui/")
        phone.screenshot(path=str(out / "home-phone.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
