#!/usr/bin/env python3
"""How fast a rollout pulls a bad canary back, and whether it promotes a good one.

One ``modelyard serve --workers 2 --trust-pickled`` (``MODELYARD_MONITOR_INTERVAL_SECONDS=0``:
only the rollout controller runs beside the gateway, every ``MODELYARD_ROLLOUT_INTERVAL_SECONDS``,
default 1 s) serves endpoint ``fraud`` on ``models:/fraud@champion``, a scikit-learn
LogisticRegression on 20 features. bench/rollouts/load.py sends it an open-loop load of
``--rate`` single-row MLflow requests a second, cycled from a pool of distinct rows, for the
whole run. Each run rolls a new version of ``fraud`` out with ``interval_seconds=10`` and
every other option at its default (steps 5, 25, 50, 100 %, ``min_requests`` 50, default
thresholds); the next run starts as soon as it has ended, and the load stays on until the
last run's ``--window`` s have passed. The canaries:

  errors   a PythonModel around the baseline that raises (500) on 20 % of the pool's rows
  latency  a PythonModel around the baseline that sleeps 30 ms before answering
  outputs  the baseline with its intercept shifted: 80 % of the rows get class 1
  good     a LogisticRegression fitted with C=0.5: nearly the baseline's answers

Per run: seconds from the canary's first answered request (the client sees its
``X-Modelyard-Version``, 500s included) to the rollout's ``ended_at``, and to the canary's
last answered request; the canary's share of the requests sent in the window from the
rollout's start (windows overlap the next runs: a rolled-back canary has weight 0, so its
share counts only its own answers); the verdict and the failing check; for ``good``, whether
``@champion`` moved to it (it is moved back to the baseline at once). Scenarios interleaved;
the table holds medians (range) beside the issue's goals and the floor Flagger's analysis
implies.

    python bench/rollouts/run.py --write                      # the full run, ~10 minutes
    python bench/rollouts/run.py --runs-good 2 --runs-bad 1   # while developing
"""

from __future__ import annotations

import argparse
import collections
import compileall
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common
from common import (
    Server,
    free_port,
    log,
    machine_cpu,
    md_table,
    proc_label,
    tree_cpu,
    tree_snapshot,
    write_results,
)

common.TAG = "rollouts"
BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent
SECTION = "## rollouts"
MODEL = ENDPOINT = "fraud"
COLUMNS = [f"f{i}" for i in range(20)]
SEED = 42
POOL = 1000  # distinct request rows
FAIL_SHARE = 0.2  # the errors canary's failing rows
DELAY = 0.030  # the latency canary's extra seconds
CLASS1_SHARE = 0.8  # the outputs canary's share of class 1
GOOD_C = 0.5
RUSAGE = ("ru_utime", "ru_stime")
SCENARIOS = ("errors", "latency", "outputs", "good")
LABELS = {
    "errors": "(a) 500 on 20 % of requests",
    "latency": "(b) 30 ms slower",
    "outputs": "(c) shifted class distribution",
    "good": "(d) good (C=0.5)",
}
EXPECTED = {"errors": "errors", "latency": "latency", "outputs": "outputs"}
# Flagger: `analysis.interval` "schedule interval (default 60s)", `threshold` "max number of
# failed metric checks before rollback", 5 in its examples (docs.flagger.app, "How it works").
FLAGGER_INTERVAL, FLAGGER_THRESHOLD, FLAGGER_FIRST_STEP = 60.0, 5, 5.0


# -- data and models --------------------------------------------------------------------------


def _data() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Training rows and labels (as bench/serving's), and the pool of request rows."""
    rng = np.random.default_rng(SEED)
    X = pd.DataFrame(rng.normal(size=(2000, 20)), columns=COLUMNS)
    w = rng.normal(size=20)
    y = ((X.to_numpy() @ w + rng.normal(scale=0.5, size=2000)) > 0).astype(int)
    pool = np.round(rng.normal(size=(POOL, 20)), 6)
    return X, y, pool


def _models(X: pd.DataFrame, y: np.ndarray, pool: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """The baseline and each canary, with what they answer on the pool.

    The Python models are local classes so that cloudpickle stores them by value and
    ``serve`` loads them without this file. The errors canary fails on a fixed fifth of the
    pool's rows (picked by f0's value), not at random: the pool's warm-up calls ``predict``
    three times on the input example before a version serves, and a random 20 % would fail
    about half of those loads, a different scenario (a canary that fails to load).
    """
    import copy

    from sklearn.linear_model import LogisticRegression

    from modelyard.formats import PythonModel

    columns = list(COLUMNS)
    base = LogisticRegression(max_iter=1000).fit(X, y)
    failing = np.random.default_rng(SEED + 1).choice(POOL, int(POOL * FAIL_SHARE), replace=False)

    def frame_of(inputs: Any) -> pd.DataFrame:
        if isinstance(inputs, pd.DataFrame):
            return inputs[columns]
        return pd.DataFrame({k: np.asarray(v).reshape(-1) for k, v in inputs.items()})[columns]

    class Flaky(PythonModel):
        """The baseline's answers; a request with one of the failing rows raises."""

        def __init__(self, inner: Any, failing: frozenset[float]) -> None:
            self.inner = inner
            self.failing = failing

        def predict(self, inputs: Any) -> Any:
            frame = frame_of(inputs)
            if any(v in self.failing for v in frame["f0"].tolist()):
                raise RuntimeError("canary failure (bench: one row in five fails)")
            return self.inner.predict(frame)

    class Slow(PythonModel):
        """The baseline's answers, DELAY seconds later."""

        def __init__(self, inner: Any, delay: float) -> None:
            self.inner = inner
            self.delay = delay

        def predict(self, inputs: Any) -> Any:
            time.sleep(self.delay)
            return self.inner.predict(frame_of(inputs))

    shifted = copy.deepcopy(base)
    scores = base.decision_function(pd.DataFrame(pool, columns=COLUMNS))
    shifted.intercept_ = shifted.intercept_ - np.quantile(scores, 1 - CLASS1_SHARE)
    good = LogisticRegression(C=GOOD_C, max_iter=1000).fit(X, y)
    canaries = {
        "errors": Flaky(base, frozenset(float(v) for v in pool[failing, 0])),
        "latency": Slow(base, DELAY),
        "outputs": shifted,
        "good": good,
    }
    frame = pd.DataFrame(pool, columns=COLUMNS)
    answers = base.predict(frame)
    facts = {
        "baseline class-1 share": float(answers.mean()),
        "outputs canary class-1 share": float(shifted.predict(frame).mean()),
        "good canary agreement": float((good.predict(frame) == answers).mean()),
        "errors canary failing rows": len(failing) / POOL,
    }
    return base, {"canaries": canaries, "facts": facts, "failing": failing}


def _bodies(pool: np.ndarray) -> list[dict[str, Any]]:
    return [{"dataframe_split": {"columns": COLUMNS, "data": [row.tolist()]}} for row in pool]


# -- serve, load --------------------------------------------------------------------------------


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env.pop("VIRTUAL_ENV", None)
    env["PYTHONPATH"] = str(REPO_DIR / "src")  # the work tree's modelyard
    env["MODELYARD_HOME"] = str(home)
    env["MODELYARD_MONITOR_INTERVAL_SECONDS"] = "0"  # only the rollout controller beside serving
    return env


def _serve(home: Path, root: Path, workers: int) -> tuple[Server, int]:
    # Bytecode as an installed copy has it (bench/NOTES.md, "Bytecode and cold start").
    compileall.compile_dir(REPO_DIR / "src" / "modelyard", quiet=1)
    port = free_port()
    cmd = [sys.executable, "-m", "modelyard", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--trust-pickled"]  # fmt: skip
    server = Server("modelyard serve", cmd, _env(home), root / "serve.log", cwd=root)
    server.start()
    return server, port


def _wait_ready(server: Server, url: str, body: bytes) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"serve exited; see {server.log_path}")
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"serve did not answer; see {server.log_path}")


@dataclass
class Load:
    """bench/rollouts/load.py in its own process (its CPU apart from the harness')."""

    proc: subprocess.Popen[bytes]
    out: Path

    @classmethod
    def start(cls, url: str, bodies: Path, rate: float, root: Path) -> Load:
        out = root / "load.npz"
        cmd = [sys.executable, str(Path(__file__).with_name("load.py")), "--url", url,
               "--bodies", str(bodies), "--rate", str(rate), "--out", str(out)]  # fmt: skip
        with (root / "load.log").open("wb") as err:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                start_new_session=True,
            )  # fmt: skip
        return cls(proc, out)

    def finish(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Close its stdin; its summary and records once it has written them."""
        try:
            out, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError("the load process did not finish; see load.log") from None
        with np.load(self.out) as data:
            return json.loads(out), {k: data[k] for k in data.files}

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


# -- the runs ---------------------------------------------------------------------------------


def _order(runs_bad: int, runs_good: int) -> list[str]:
    """Bad scenarios (rotated each round) and good runs spread evenly among them."""
    bad = [s for r in range(runs_bad) for s in (SCENARIOS[:3][r % 3 :] + SCENARIOS[:3][: r % 3])]
    keyed = [((i + 0.5) / len(bad), s) for i, s in enumerate(bad)]
    keyed += [((i + 0.5) / runs_good, "good") for i in range(runs_good)]
    if not keyed:
        raise SystemExit("nothing to run: --runs-bad and --runs-good are both 0")
    return [s for _, s in sorted(keyed, key=lambda k: k[0])]


def _roll(ws: Any, client: Any, kind: str, version: int, args: argparse.Namespace) -> dict:
    """One rollout of ``version``: start it, wait for its end, record it."""
    rollout = ws.rollouts.start(
        ENDPOINT, f"models:/{MODEL}/{version}", {"interval_seconds": args.interval}
    )
    started = rollout.started_at.timestamp()
    ended, timed_out, champion = None, False, None
    while True:
        now = time.time()
        if ended is None:
            current = ws.rollouts.get(rollout.id)
            if not current.active:
                ended = current
                champion = ws.registry.get_alias(MODEL, "champion").version
            elif now > started + args.run_timeout:
                log(f"  {kind} v{version}: no verdict after {args.run_timeout:g} s: aborting")
                ws.rollouts.abort(rollout.id, reason="bench: no verdict in time")
                timed_out = True
                continue
        if ended is not None:
            break
        time.sleep(0.25)
    failed = [
        {"check": c.name, "early": a.early, "summary": c.summary, "at": a.at.timestamp()}
        for a in ended.analyses
        if a.verdict == "fail"
        for c in a.checks
        if c.verdict == "fail"
    ]
    record = {
        "kind": kind,
        "version": version,
        "rollout": rollout.id,
        "started": started,
        "ended": ended.ended_at.timestamp() if ended.ended_at else None,
        "phase": ended.phase,
        "reason": ended.reason,
        "step": ended.step,
        "weight": ended.weight,
        "failed": failed,
        "analyses": len(ended.analyses),
        "champion_at_end": champion,
        "promoted": ended.phase == "succeeded" and champion == version,
        "timed_out": timed_out,
    }
    checks = sorted({f["check"] + (" early" if f["early"] else "") for f in failed})
    log(
        f"  {kind} v{version}: {ended.phase} after "
        f"{(record['ended'] or started) - started:.1f} s (step {ended.step}, "
        f"{', '.join(checks) or 'no failed check'}); @champion -> v{champion}"
    )
    return record


def _measure(
    run: dict, load: dict[str, np.ndarray], window: float, failing: np.ndarray
) -> dict[str, Any]:
    """The run's figures from the client's records (request ``i`` carried row ``i % POOL``)."""
    sent, answered, status, version = (load[k] for k in ("sent", "answered", "status", "version"))
    canary = version == run["version"]
    fails = np.zeros(POOL, dtype=bool)
    fails[failing] = True
    failing_row = fails[np.arange(len(sent)) % POOL]
    in_window = (sent >= run["started"]) & (sent < run["started"] + window)
    out: dict[str, Any] = {
        "window_requests": int(in_window.sum()),
        "window_canary": int((in_window & canary).sum()),
        "window_no_answer": int((in_window & (status == 0)).sum()),
        "window_5xx_without_version": int((in_window & (status >= 500) & (version == 0)).sum()),
        "canary_answers": int(canary.sum()),
        "canary_5xx": int((canary & (status >= 500)).sum()),
        # 5xx on a row the errors canary does not fail on: a call for a batch of requests
        # fails every request of it.
        "canary_5xx_other_rows": int((canary & (status >= 500) & ~failing_row).sum()),
    }
    out["share"] = out["window_canary"] / max(out["window_requests"], 1)
    if canary.any():
        first, last = float(answered[canary].min()), float(answered[canary].max())
        out["first"], out["last"] = first, last
        out["to_end"] = run["ended"] - first if run["ended"] else None
        out["to_last"] = last - first
        latency = (answered - sent) * 1000
        ok = status == 200
        span = (sent >= first) & (sent <= last)
        base = ok & span & (version != run["version"]) & (version > 0)
        out["canary_p50_ms"] = (
            float(np.median(latency[canary & ok])) if (canary & ok).any() else None
        )
        out["baseline_p50_ms"] = float(np.median(latency[base])) if base.any() else None
        # The baseline's tail while the canary served: a canary that blocks a worker's event
        # loop (rather than a thread) slows the baseline's answers on that worker too.
        out["baseline_p99_ms"] = float(np.percentile(latency[base], 99)) if base.any() else None
    return out


# -- report ---------------------------------------------------------------------------------


def _range(values: list[float], fmt: str = "{:.1f}") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    low, mid, high = min(values), statistics.median(values), max(values)
    if len(values) == 1:
        return fmt.format(mid)
    return f"{fmt.format(mid)} ({fmt.format(low)} to {fmt.format(high)})"


def _checks(runs: list[dict]) -> str:
    seen: collections.Counter[str] = collections.Counter()
    for r in runs:
        names = sorted({f["check"] + (" (early look)" if f["early"] else "") for f in r["failed"]})
        seen[" + ".join(names) or "none"] += 1
    return "; ".join(f"{name} {n}/{len(runs)}" for name, n in seen.most_common())


def _verdicts(runs: list[dict]) -> str:
    seen = collections.Counter(
        "promoted" if r["promoted"] else r["phase"].replace("_", " ") for r in runs
    )
    return "; ".join(f"{v} {n}/{len(runs)}" for v, n in seen.most_common())


def _goal(kind: str, runs: list[dict], interval: float) -> tuple[str, str]:
    limit = 2 * interval
    if kind == "good":
        promoted = sum(r["promoted"] for r in runs)
        return (
            "promoted every run",
            f"{'met' if promoted == len(runs) else 'missed'} ({promoted}/{len(runs)})",
        )
    back = [r for r in runs if r["phase"] == "rolled_back"]
    fast = [r for r in back if r["m"].get("to_end") is not None and r["m"]["to_end"] <= limit]
    goal = f"rolled back ≤ {limit:g} s"
    ok = len(fast) == len(runs)
    note = f"{len(fast)}/{len(runs)} ≤ {limit:g} s"
    if kind == "errors":
        goal += ", < 1 % served"
        small = sum(r["m"]["share"] < 0.01 for r in runs)
        ok = ok and small == len(runs)
        note += f", {small}/{len(runs)} < 1 %"
    return goal, f"{'met' if ok else 'missed'} ({note})"


def _report(args: argparse.Namespace, runs: list[dict], meta: dict) -> str:
    rows = []
    for kind in SCENARIOS:
        mine = [r for r in runs if r["kind"] == kind]
        if not mine:
            continue
        m = [r["m"] for r in mine]
        goal, met = _goal(kind, mine, args.interval)
        rows.append([
            LABELS[kind], str(len(mine)), _verdicts(mine), _checks(mine),
            _range([x.get("to_end") for x in m]),
            "" if kind == "good" else _range([x.get("to_last") for x in m]),
            "" if kind == "good" else _range([x["share"] * 100 for x in m], "{:.2f}"),
            _range([x["canary_answers"] for x in m], "{:,.0f}"),
            _range([x["canary_5xx"] / max(x["canary_answers"], 1) * 100 for x in m], "{:.0f}"),
            f"{_range([x.get('canary_p50_ms') for x in m], '{:.1f}')} / "
            f"{_range([x.get('baseline_p50_ms') for x in m], '{:.1f}')}",
            _range([x.get("baseline_p99_ms") for x in m]),
            goal, met,
        ])  # fmt: skip
    floors = [
        (FLAGGER_INTERVAL, "Flagger floor: interval 1m (default) x threshold 5"),
        (args.interval, f"Flagger floor: interval {args.interval:g} s x threshold 5"),
    ]
    for interval, label in floors:
        floor = interval * FLAGGER_THRESHOLD
        share = FLAGGER_FIRST_STEP * min(floor, args.window) / args.window
        rows.append([label, "", "", "", f"≥ {floor:g}", "", f"{share:.2f}", *[""] * 6])
    cpu, la, facts = meta["cpu"], meta["loadavg"], meta["facts"]
    per_process = ", ".join(f"{name} {s / cpu['seconds']:.2f}" for name, s in cpu["per_process"])
    seconds = meta["seconds"]
    header = [
        "canary", "runs", "verdict", "failing check",
        "s first canary answer → ended_at (d: promoted)", "s → last canary answer",
        f"% of requests answered by canary, {args.window:g} s window",
        "canary answers", "canary 5xx %", "p50 ms canary / baseline", "baseline p99 ms",
        "goal (issue 17)", "",
    ]  # fmt: skip
    flags = {"rate": args.rate, "runs-bad": args.runs_bad, "runs-good": args.runs_good,
             "window": args.window, "interval": args.interval}  # fmt: skip
    command = "python bench/rollouts/run.py" + "".join(f" --{k} {v:g}" for k, v in flags.items())
    lines = [
        SECTION,
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} cores ({platform.machine()}), "
        f"Python {platform.python_version()}; `{command}`; {seconds / 60:.1f} min.",
        "",
        f"- One `modelyard serve --workers {args.workers} --trust-pickled` "
        "(MODELYARD_MONITOR_INTERVAL_SECONDS=0; rollout controller every "
        f"{meta['rollout_interval']:g} s, the default), endpoint `fraud` on "
        "`models:/fraud@champion`: a scikit-learn LogisticRegression on 20 features. Open-loop "
        f"load: {args.rate:g} req/s of single-row MLflow `dataframe_split` bodies cycled from "
        f"{POOL} distinct rows, raw HTTP/1.1 over keep-alive connections from one asyncio "
        "process (bench/rollouts/load.py), on through every run "
        f"({meta['load']['requests']:,} requests; started late by p50 "
        f"{meta['load']['late_ms_p50']:.1f} / p99 {meta['load']['late_ms_p99']:.1f} ms; "
        f"{meta['no_answer']} without an answer).",
        "- Each run starts a rollout of a new version with "
        f"`interval_seconds={args.interval:g}` and the other options at their defaults "
        "(steps 5, 25, 50, 100 %; `min_requests` 50; `max_failures` 1; early error look on; "
        "default thresholds). Canaries: (a) a PythonModel around the baseline that raises "
        f"on a fixed {FAIL_SHARE:.0%} of the pool's rows (a random 20 % would also fail the "
        "pool's warm-up calls, i.e. the load, about half the time), (b) a PythonModel around "
        f"the baseline that sleeps {DELAY * 1000:g} ms, (c) the baseline with a shifted "
        f"intercept (class 1 on {facts['outputs canary class-1 share']:.0%} of the pool "
        f"against {facts['baseline class-1 share']:.0%}), (d) a LogisticRegression with "
        f"C={GOOD_C} (the baseline's answer on {facts['good canary agreement']:.1%} of the "
        f"pool). Scenarios interleaved: {' '.join(s[0] for s in meta['order'])}. The next "
        "run starts 1 s after a rollback (inside the previous window: a rolled-back canary "
        "has weight 0), or 2 s after a promoted (d) is moved back (`@champion` to v1).",
        "- Times: the client's wall clock against the rollout's `started_at`/`ended_at` "
        "(same machine). First/last canary answer: the arrival of the first/last answer "
        "carrying the canary's `X-Modelyard-Version`; its 500s carry it "
        f"({meta['five_xx_without_version']} 5xx answers without it in all windows). "
        "`ended_at`: when the controller wrote the rollback (canary weight 0) or, for (d), the "
        "promotion; the gateway follows within a refresh, the last canary answer shows when. "
        f"Share: the canary's answers / all requests sent in the {args.window:g} s from "
        "`started_at` (not given for (d), moved back after its promotion). Canary 5xx %: of "
        f"its answers ({meta['collateral_5xx']} of them on rows it does not fail on: requests "
        "batched into one failing call). Baseline p99: over the canary's first to last "
        "answer. Medians over runs (range).",
        "- Flagger's floor: a rollback needs `threshold` failed checks, one per `interval` "
        "(docs.flagger.app: interval default 60s; threshold 5 in its examples), so at least "
        "interval x threshold after the canary gets traffic, while a "
        f"{FLAGGER_FIRST_STEP:g} % first step serves (share: over the {args.window:g} s "
        "window).",
        f"- CPU over the {seconds:.0f} s of runs, in cores: serve {cpu['server'] / seconds:.2f} "
        f"({per_process}), load client {cpu['client'] / seconds:.2f}, harness "
        f"{cpu['harness'] / seconds:.2f}, other {cpu['other'] / seconds:.2f} / steal "
        f"{cpu['steal'] / seconds:.2f}. Load average (1/5/15 min) before: "
        f"{' '.join(f'{x:.2f}' for x in la['before'])}; after: "
        f"{' '.join(f'{x:.2f}' for x in la['after'])}.",
        "",
        md_table(header, rows),
        "",
    ]
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second")
    ap.add_argument("--runs-bad", type=int, default=3, help="runs of each bad canary")
    ap.add_argument("--runs-good", type=int, default=10, help="runs of the good canary")
    ap.add_argument("--window", type=float, default=60.0, help="seconds observed per run")
    ap.add_argument("--interval", type=float, default=10.0, help="the plan's interval_seconds")
    ap.add_argument("--run-timeout", type=float, default=180.0, help="abort a rollout after")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--write", action="store_true", help=f"replace {SECTION!r} in RESULTS.md")
    args = ap.parse_args(argv)

    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    root = Path(args.workdir or BENCH_DIR / "runs" / f"rollouts-{time.strftime('%Y%m%d-%H%M%S')}")
    root.mkdir(parents=True, exist_ok=True)
    home = root / "home"
    os.environ.pop("MODELYARD_HOME", None)
    log(f"work dir {root}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    from modelyard.client import Client
    from modelyard.config import Settings
    from modelyard.workspace import Workspace

    settings = Settings(home=home)
    X, y, pool = _data()
    base, made = _models(X, y, pool)
    order = _order(args.runs_bad, args.runs_good)
    client = Client(str(home), settings=settings)
    example = X.head(5)
    baseline = client.log_model(base, MODEL, input_example=example, alias="champion").version
    client.endpoints.create(ENDPOINT, f"models:/{MODEL}@champion")
    # Every canary registered before the load starts: the runs measure only the rollouts.
    versions = [
        client.log_model(made["canaries"][kind], MODEL, input_example=example).version
        for kind in order
    ]
    log(f"registered v{baseline} (baseline) and {len(versions)} canaries; order {order}")
    bodies = root / "bodies.json"
    bodies.write_text(json.dumps(_bodies(pool)))
    url_path = f"/endpoints/{ENDPOINT}/invocations"

    server, port = _serve(home, root, args.workers)
    load: Load | None = None
    ws = Workspace.open(settings, migrate=False)
    runs: list[dict] = []
    try:
        url = f"http://127.0.0.1:{port}{url_path}"
        _wait_ready(server, url, json.dumps(_bodies(pool[:1])[0]).encode())
        load = Load.start(url, bodies, args.rate, root)
        time.sleep(5.0)  # steady traffic first
        assert server.proc is not None
        serve_pid, client_pid = server.proc.pid, load.proc.pid
        la_before = os.getloadavg()
        tree_before, busy_before = tree_snapshot(serve_pid), machine_cpu()
        client_before = tree_cpu(client_pid)
        usage_before, began = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        for i, (kind, version) in enumerate(zip(order, versions, strict=True)):
            log(f"run {i + 1}/{len(order)}: {kind} (v{version})")
            record = _roll(ws, client, kind, version, args)
            runs.append(record)
            # The next rollout starts within the window of this one: a rolled-back canary
            # has weight 0 (its share counts only its own answers), a promoted one is moved
            # back to the baseline first (its share is not reported).
            if record["champion_at_end"] != baseline:
                client.set_alias(MODEL, "champion", baseline, reason="bench: next run")
                time.sleep(2.0)  # the gateway follows within a refresh
            else:
                time.sleep(1.0)
            if not server.alive():
                raise RuntimeError(f"serve exited; see {server.log_path}")
        last_window = max(r["started"] for r in runs) + args.window
        while time.time() < last_window + 1.0:  # the last windows' requests, answered
            time.sleep(0.5)
        seconds = time.monotonic() - began
        tree_after, busy_after = tree_snapshot(serve_pid), machine_cpu()
        labels = [(pid, v, proc_label(pid)) for pid, v in tree_after.items()]
        client_cpu = tree_cpu(client_pid) - client_before
        usage_after, la_after = resource.getrusage(resource.RUSAGE_SELF), os.getloadavg()
        summary, records = load.finish()
        load = None
    finally:
        if load is not None:
            load.kill()
        server.stop()
        ws.close()
        client.close()

    for run in runs:
        run["m"] = _measure(run, records, args.window, made["failing"])
    per = [
        ("parent" if pid == serve_pid else label, cpu - tree_before.get(pid, (0.0, 0))[0])
        for pid, (cpu, _), label in labels
    ]
    server_cpu = sum(cpu for _, cpu in per)
    harness = sum(getattr(usage_after, f) - getattr(usage_before, f) for f in RUSAGE)
    meta = {
        "order": order,
        "seconds": seconds,
        "facts": made["facts"],
        "load": summary,
        "rollout_interval": Settings.model_fields["rollout_interval_seconds"].default,
        "no_answer": int((records["status"] == 0).sum()),
        "five_xx_without_version": sum(r["m"]["window_5xx_without_version"] for r in runs),
        "collateral_5xx": sum(r["m"]["canary_5xx_other_rows"] for r in runs),
        "loadavg": {"before": la_before, "after": la_after},
        "cpu": {
            "seconds": seconds,
            "server": server_cpu,
            "per_process": sorted(per, key=lambda kv: -kv[1]),
            "client": client_cpu,
            "harness": harness,
            "other": busy_after[0] - busy_before[0] - server_cpu - client_cpu - harness,
            "steal": busy_after[1] - busy_before[1],
        },
    }
    (root / "raw.json").write_text(json.dumps({"runs": runs, "meta": meta}, indent=1, default=str))
    section = _report(args, runs, meta)
    print(section)
    if args.write:
        write_results(SECTION, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
