#!/usr/bin/env python3
"""SLO model switching under load spikes: effective accuracy against single-variant policies.

One ``modelyard serve --workers 1`` (the same process for every policy) serves a task made
here (scikit-learn ``make_classification``, seeded: 20 features, 12 informative, 8 clusters
per class, a non-linear boundary) in three variants: ``accurate`` (an ExtraTrees forest of
``--trees`` full-depth trees), ``middle`` (a RandomForest of 20 trees, depth 8) and ``fast``
(a LogisticRegression). Their holdout accuracy is measured here and given to the switching
endpoints as each variant's ``quality``. Endpoints, all with batching off
(``max_batch_size`` 1) unless named:

  accurate, middle, fast   one variant each (always-accurate, always-middle, always-fast)
  switching                the three variants, ``slo_ms`` = ``--slo-ms``
  switching+cache          the same with the prediction cache on (``ttl_seconds`` 60); its
                           load repeats ``--cache-share`` of its rows from a hot set of 200
  switching+batching       the same on second versions of the same files (the pool keeps
                           one batcher per version) with ``max_batch_size`` ``--batch-size``,
                           ``max_wait_ms`` 2
  accurate+batching        always-accurate on that second version, batching as above

First the accurate variant's capacity is measured closed-loop (16 keep-alive connections,
``--capacity-seconds``), then each policy gets the same open-loop load (bench/switching/
load.py: Poisson arrivals from a seeded schedule, never waiting for answers): ``--steady`` s
at 40 % of that capacity, ``--spike`` s at ``--spike-factor`` (3) times that (120 % of the
capacity), ``--cycles`` times, then ``--tail`` s steady. Every request carries one holdout
row (cycled) and ``x-modelyard-deadline-ms: --slo-ms``. Policies interleaved over
``--rounds`` rounds (each round rotates the order and draws its own arrivals, the same for
every policy of the round).

Per policy, medians over rounds (range): effective accuracy (requests answered 200 within
the deadline, measured from each request's due time, with the right class, over ALL sent),
SLO violations (late, shed or failed, over all sent), p50/p99 latency of the 200s,
throughput, share per variant, CPU per request and PSS of the serve process, load average.

    python bench/switching/run.py                  # ~6 minutes
    python bench/switching/run.py --quick          # ~2 minutes, one round of short windows
    python bench/switching/run.py --write-results  # and replace '## switching' in RESULTS.md
"""

from __future__ import annotations

import argparse
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common
from common import (
    Server,
    free_port,
    keepalive_load,
    log,
    machine_cpu,
    md_table,
    tree_cpu,
    tree_snapshot,
    write_results,
)

common.TAG = "switching"
BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent
SECTION = "## switching"
COLUMNS = [f"f{i}" for i in range(20)]
VARIANTS = ("accurate", "middle", "fast")
MODELS = {"accurate": "fraud-et", "middle": "fraud-rf", "fast": "fraud-lr"}
HOT_ROWS = 200  # the cache stream's repeated rows
STEADY_SHARE = 0.4
CAPACITY_CONNECTIONS = 16
RUSAGE = ("ru_utime", "ru_stime")


@dataclass
class Policy:
    name: str  # the table's label
    endpoint: str
    stream: str = "plain"  # "plain" or "cache" (repeats from the hot set)
    switching: bool = False
    note: str = ""


POLICIES = [
    Policy("always-accurate", "always-accurate"),
    Policy("always-middle", "always-middle"),
    Policy("always-fast", "always-fast"),
    Policy("switching", "switching", switching=True),
    Policy("switching + cache", "switching-cache", stream="cache", switching=True),
    Policy("switching + batching", "switching-batching", switching=True),
    Policy("always-accurate + batching", "always-accurate-batching"),
]
#: What --quick runs unless --policies says otherwise.
QUICK = ("always-accurate", "always-middle", "always-fast", "switching")


# -- data and models ----------------------------------------------------------------------------


@dataclass
class Task:
    train: Any  # DataFrame
    y_train: np.ndarray
    holdout: np.ndarray
    y_holdout: np.ndarray
    models: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    answers: dict[str, np.ndarray] = field(default_factory=dict)  # per variant, on the holdout
    fit_seconds: dict[str, float] = field(default_factory=dict)


def make_task(args: argparse.Namespace) -> Task:
    """The dataset, the three variants fitted on it, and their holdout answers."""
    import pandas as pd
    from sklearn.datasets import make_classification
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    X, y = make_classification(
        n_samples=args.train_rows + args.holdout_rows, n_features=len(COLUMNS),
        n_informative=12, n_redundant=2, n_clusters_per_class=8, class_sep=1.2, flip_y=0.01,
        random_state=args.seed,
    )  # fmt: skip
    X = np.round(X, 4)  # short bodies; the models see exactly what is sent
    n = args.train_rows
    task = Task(pd.DataFrame(X[:n], columns=COLUMNS), y[:n], X[n:], y[n:])
    task.models = {
        "accurate": ExtraTreesClassifier(n_estimators=args.trees, n_jobs=2, random_state=args.seed),
        "middle": RandomForestClassifier(n_estimators=20, max_depth=8, random_state=args.seed),
        "fast": LogisticRegression(max_iter=1000),
    }
    frame = pd.DataFrame(task.holdout, columns=COLUMNS)
    for name, model in task.models.items():
        start = time.perf_counter()
        model.fit(task.train, task.y_train)
        task.fit_seconds[name] = time.perf_counter() - start
        task.answers[name] = np.asarray(model.predict(frame)).astype(int)
        task.accuracy[name] = float((task.answers[name] == task.y_holdout).mean())
    return task


def bodies(task: Task) -> list[dict[str, Any]]:
    return [
        {"dataframe_split": {"columns": COLUMNS, "data": [row.tolist()]}} for row in task.holdout
    ]


# -- the workspace ------------------------------------------------------------------------------


def register(client: Any, ws: Any, task: Task, args: argparse.Namespace) -> dict[str, Any]:
    """Register the variants (and a second version of each for the batching endpoint) and
    create every endpoint. Returns facts for the report (runtime per variant, seconds)."""
    facts: dict[str, Any] = {"register_seconds": {}, "runtime": {}}
    example = task.train.head(5)
    for name in VARIANTS:
        start = time.perf_counter()
        client.log_model(task.models[name], MODELS[name], input_example=example)
        facts["register_seconds"][name] = time.perf_counter() - start
    one = {"max_batch_size": 1}
    for name in VARIANTS:
        start = time.perf_counter()  # the first endpoint on a version settles its runtime
        client.endpoints.create(f"always-{name}", f"models:/{MODELS[name]}/1", batching=one)
        facts["register_seconds"][name] += time.perf_counter() - start
        checked = ws.registry.get_runtime(MODELS[name], 1, "onnx")
        facts["runtime"][name] = "onnx" if checked is not None and checked.usable else "native"
    # The same files as version 2 (no upload; same manifest digest), and the runtime check
    # made on version 1 recorded on it: the check compares these very files.
    for name in VARIANTS:
        model = MODELS[name]
        second = client.register_model(f"models:/{model}/1", model)
        checked = ws.registry.get_runtime(model, 1, "onnx")
        if (
            checked is not None
            and second.manifest_digest == ws.registry.resolve(f"models:/{model}/1").manifest_digest
        ):
            ws.registry.record_runtime(
                model, second.version, "onnx", status=checked.status,
                artifact_digest=checked.artifact_digest,
                report={**checked.report, "bench": "copied from version 1 (same files)"},
            )  # fmt: skip

    def policy(version: int) -> dict[str, Any]:
        return {
            "variants": [
                {"name": v, "target": f"models:/{MODELS[v]}/{version}",
                 "quality": round(task.accuracy[v], 4)}
                for v in VARIANTS
            ],
            "slo_ms": args.slo_ms,
        }  # fmt: skip

    batching = {"max_batch_size": args.batch_size, "max_wait_ms": 2}
    client.endpoints.create(
        "always-accurate-batching", f"models:/{MODELS['accurate']}/2", batching=batching
    )
    created = client.endpoints.create(
        "switching", f"models:/{MODELS['accurate']}/1", policy=policy(1), batching=one
    )
    facts["switching"] = bool(getattr(created.policy, "variants", None))
    if not facts["switching"]:
        log("this modelyard has no variants on endpoints: the switching rows are left out")
        return facts
    client.endpoints.create(
        "switching-cache", f"models:/{MODELS['accurate']}/1", policy=policy(1), batching=one,
        cache={"enabled": True, "ttl_seconds": 60},
    )  # fmt: skip
    client.endpoints.create(
        "switching-batching", f"models:/{MODELS['accurate']}/2", policy=policy(2),
        batching=batching,
    )  # fmt: skip
    return facts


# -- serve, load --------------------------------------------------------------------------------


def _env(home: Path, src: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env.pop("VIRTUAL_ENV", None)
    env["PYTHONPATH"] = str(src)
    env["MODELYARD_HOME"] = str(home)
    env["MODELYARD_MONITOR_INTERVAL_SECONDS"] = "0"  # no monitoring loop beside serving
    return env


def serve(home: Path, root: Path, src: Path) -> tuple[Server, int]:
    # Bytecode as an installed copy has it (bench/NOTES.md, "Bytecode and cold start").
    compileall.compile_dir(src / "modelyard", quiet=1)
    port = free_port()
    cmd = [sys.executable, "-m", "modelyard", "serve", "--host", "127.0.0.1", "--port",
           str(port), "--workers", "1"]  # fmt: skip
    server = Server("modelyard serve", cmd, _env(home, src), root / "serve.log", cwd=root)
    server.start()
    return server, port


def wait_ready(server: Server, url: str, body: bytes, limit: float = 180.0) -> float:
    start = time.monotonic()
    while time.monotonic() < start + limit:
        if not server.alive():
            raise RuntimeError(f"serve exited; see {server.log_path}")
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                answer.read()
                return time.monotonic() - start
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {limit:g} s; see {server.log_path}")


def raw_requests(port: int, endpoint: str, payloads: list[bytes]) -> list[bytes]:
    head = (
        f"POST /endpoints/{endpoint}/invocations HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        "content-type: application/json\r\ncontent-length: "
    )
    return [f"{head}{len(b)}\r\n\r\n".encode() + b for b in payloads]


def pss_bytes(root: int) -> int:
    """Proportional set size of the process tree under ``root`` (smaps_rollup)."""
    total = 0
    for pid in tree_snapshot(root):
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) * 1024
                break
    return total


@dataclass
class Schedule:
    due: np.ndarray  # seconds from the start
    row: np.ndarray  # holdout row per request
    phase: np.ndarray  # 0 steady, 1 spike, 2 tail
    duration: float


def schedule(args: argparse.Namespace, steady: float, spike: float, round_: int,
             stream: str, holdout: int) -> Schedule:  # fmt: skip
    """Poisson arrivals, piecewise constant rate; the same for every policy of a round."""
    rng = np.random.default_rng(args.seed * 1000 + round_)
    phases = [(0, steady, args.steady), (1, spike, args.spike)] * args.cycles
    phases.append((2, steady, args.tail))
    due, phase, start = [], [], 0.0
    for label, rate, seconds in phases:
        count = int(rate * seconds * 1.2) + 50
        times = start + np.cumsum(rng.exponential(1.0 / rate, size=count))
        times = times[times < start + seconds]
        due.append(times)
        phase.append(np.full(len(times), label, dtype=np.int8))
        start += seconds
    due_all = np.concatenate(due)
    rows = np.resize(rng.permutation(holdout), len(due_all))
    if stream == "cache":
        hot = np.random.default_rng(args.seed).choice(holdout, HOT_ROWS, replace=False)
        repeat = rng.random(len(due_all)) < args.cache_share
        rows = np.where(repeat, hot[rng.integers(HOT_ROWS, size=len(due_all))], rows)
    return Schedule(due_all, rows, np.concatenate(phase), start)


def run_load(root: Path, port: int, policy: Policy, sched: Schedule, args: argparse.Namespace,
             tag: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:  # fmt: skip
    path = root / f"schedule-{tag}.npz"
    np.savez(path, due=sched.due, row=sched.row)
    out = root / f"load-{tag}.npz"
    cmd = [
        sys.executable, str(Path(__file__).with_name("load.py")),
        "--url", f"http://127.0.0.1:{port}/endpoints/{policy.endpoint}/invocations",
        "--bodies", str(root / "bodies.json"), "--schedule", str(path),
        "--deadline-ms", f"{args.slo_ms:g}", "--models", ",".join(MODELS[v] for v in VARIANTS),
        "--variants", ",".join(VARIANTS), "--out", str(out),
    ]  # fmt: skip
    with (root / "load.log").open("ab") as err:
        done = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=err, timeout=sched.duration + 60, check=True
        )
    with np.load(out) as data:
        return json.loads(done.stdout), {k: data[k] for k in data.files}


# -- one window's figures -----------------------------------------------------------------------


def measure(rec: dict[str, np.ndarray], sched: Schedule, task: Task,
            args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """A window's figures from the client's records."""
    n = len(rec["due"])
    latency = (rec["done"] - rec["due"]) * 1000  # from the due time: the caller's view
    status = rec["status"]
    answered = status == 200
    in_time = answered & (latency <= args.slo_ms)
    label = task.y_holdout[sched.row]
    correct = in_time & (rec["pred"] == label)
    spike = sched.phase == 1
    lat_ok = latency[answered]
    shares = {v: float((answered & (rec["model"] == i)).sum() / max(answered.sum(), 1))
              for i, v in enumerate(VARIANTS)}  # fmt: skip
    return {
        "requests": n,
        "effective": float(correct.sum() / n),
        "effective_spike": float(correct[spike].sum() / max(spike.sum(), 1)),
        "accuracy_answered": float(correct.sum() / max(in_time.sum(), 1)),
        "violations": float(1 - in_time.sum() / n),
        "late": float((answered & ~in_time).sum() / n),
        "shed": float((status == 503).sum() / n),
        "failed": float(((status != 200) & (status != 503)).sum() / n),
        "no_answer": int((status == 0).sum()),
        "p50": float(np.percentile(lat_ok, 50)) if len(lat_ok) else None,
        "p99": float(np.percentile(lat_ok, 99)) if len(lat_ok) else None,
        "throughput": float(answered.sum() / sched.duration),
        "goodput": float(in_time.sum() / sched.duration),
        "offered": float(n / sched.duration),
        "share": shares,
        "cache_hits": float(rec["hit"][answered].mean()) if answered.any() else 0.0,
        # What each variant would score on this very stream with no deadline.
        "ceiling": {v: float((task.answers[v][sched.row] == label).mean()) for v in VARIANTS},
        "timeline": timeline(rec, sched, in_time, args),
    }


def timeline(rec: dict[str, np.ndarray], sched: Schedule, in_time: np.ndarray,
             args: argparse.Namespace) -> list[dict[str, Any]]:  # fmt: skip
    """Per second of due time: requests, the share of each variant among them (by the
    version that answered), in time, shed, and the p99 latency of the answered."""
    out = []
    latency = (rec["done"] - rec["due"]) * 1000
    for second in range(int(np.ceil(sched.duration))):
        at = (rec["due"] >= second) & (rec["due"] < second + 1)
        n = int(at.sum())
        if not n:
            continue
        answered = at & (rec["status"] == 200)
        out.append({
            "second": second, "phase": int(sched.phase[at][0]), "requests": n,
            **{v: round(float((at & (rec["model"] == i)).sum() / n), 3)
               for i, v in enumerate(VARIANTS)},
            "in_time": round(float(in_time[at].mean()), 3),
            "shed": round(float((rec["status"][at] == 503).mean()), 3),
            "p99": round(float(np.percentile(latency[answered], 99)), 1)
            if answered.any() else None,
        })  # fmt: skip
    return out


def timeline_text(m: dict[str, Any]) -> str:
    """A window's timeline, one line per second (for the log)."""
    lines = []
    for t in m["timeline"]:
        phase = ("steady", "SPIKE", "tail")[t["phase"]]
        lines.append(
            f"    {t['second']:3d}s {phase:6s} {t['requests']:5d} req  "
            + " ".join(f"{v} {t[v]:4.0%}" for v in VARIANTS)
            + f"  in time {t['in_time']:4.0%}  shed {t['shed']:4.0%}  p99 {t['p99'] or 0:6.1f} ms"
        )
    return "\n".join(lines)


# -- report -------------------------------------------------------------------------------------


def _range(values: list[float | None], fmt: str = "{:.1f}") -> str:
    found = [v for v in values if v is not None]
    if not found:
        return "—"
    mid = statistics.median(found)
    if len(found) == 1:
        return fmt.format(mid)
    return f"{fmt.format(mid)} ({fmt.format(min(found))} to {fmt.format(max(found))})"


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(args: argparse.Namespace, task: Task, facts: dict[str, Any],
           windows: list[dict[str, Any]], meta: dict[str, Any]) -> str:  # fmt: skip
    by: dict[str, list[dict[str, Any]]] = {}
    for w in windows:
        by.setdefault(w["policy"], []).append(w)
    # The headline compares with the single variants served as switching is (batching off).
    singles = [p.name for p in POLICIES
               if not p.switching and p.name in by and "batching" not in p.name]  # fmt: skip
    best_single = max(singles, key=lambda p: _med([w["m"]["effective"] for w in by[p]]),
                      default=None)  # fmt: skip
    best = _med([w["m"]["effective"] for w in by[best_single]]) if best_single else None
    rows = []
    for p in POLICIES:
        ws = by.get(p.name)
        if not ws:
            continue
        m = [w["m"] for w in ws]
        effective = [x["effective"] * 100 for x in m]
        delta = "" if best is None else f"{_med(effective) - best * 100:+.1f}"
        share = " / ".join(f"{_med([x['share'][v] * 100 for x in m]):.0f}" for v in VARIANTS)
        if p.stream == "cache":
            share += f" (hits {_med([x['cache_hits'] * 100 for x in m]):.0f})"
        rows.append([
            p.name, str(len(ws)),
            _range(effective), delta,
            _range([x["effective_spike"] * 100 for x in m]),
            _range([x["accuracy_answered"] * 100 for x in m]),
            _range([x["violations"] * 100 for x in m], "{:.2f}"),
            " / ".join(f"{_med([x[k] * 100 for x in m]):.2f}" for k in ("late", "shed", "failed")),
            _range([x["p50"] for x in m]), _range([x["p99"] for x in m]),
            _range([x["goodput"] for x in m], "{:,.0f}"),
            share,
            _range([w["server_cpu"] / w["m"]["requests"] * 1000 for w in ws], "{:.3f}"),
            _range([w["pss"] / 2**20 for w in ws], "{:,.0f}"),
            _range([w["client_cpu"] / w["seconds"] for w in ws], "{:.2f}"),
            _range([w["other_cpu"] / w["seconds"] for w in ws], "{:.2f}"),
            _range([w["loadavg"] for w in ws], "{:.2f}"),
        ])  # fmt: skip
    head = [
        "policy", "rounds", "effective accuracy %", "Δ vs best single (points)",
        "effective accuracy in spikes %", "accuracy of in-time answers %",
        "SLO violations %", "late / shed / failed %", "p50 ms", "p99 ms", "in-time req/s",
        "share accurate / middle / fast %", "serve CPU ms / request", "serve PSS MiB",
        "load client CPU (cores)", "other CPU (cores)", "load avg (1 min)",
    ]  # fmt: skip
    switching = by.get("switching")
    goal = "switching rows not run (this modelyard has no variants)"
    if switching and best is not None:
        eff = _med([w["m"]["effective"] for w in switching]) * 100
        viol = _med([w["m"]["violations"] for w in switching]) * 100
        gain = eff - best * 100
        met = gain >= 5 and viol <= 1
        goal = (
            f"**Goal (issue 18): switching's effective accuracy ≥ 5 points above the best "
            f"single variant with SLO violations ≤ 1 %: {'met' if met else 'missed'}** — "
            f"switching {eff:.1f} % vs {best_single} {best * 100:.1f} % ({gain:+.1f} points), "
            f"violations {viol:.2f} %."
        )
    pair = by.get("switching + batching"), by.get("always-accurate + batching")
    if pair[0] and pair[1]:
        a, b = (_med([w["m"]["effective"] for w in ws]) * 100 for ws in pair)
        va, vb = (_med([w["m"]["violations"] for w in ws]) * 100 for ws in pair)
        goal += (
            f" With batching on both: switching + batching {a:.1f} % (violations {va:.2f} %) "
            f"vs always-accurate + batching {b:.1f} % ({vb:.2f} %): {a - b:+.1f} points."
        )
    acc = task.accuracy
    cap = meta["capacity"]
    cost = {v: 1000 / cap[v] for v in cap}
    ceiling = _med([w["m"]["ceiling"]["accurate"] for w in windows]) * 100
    flags = {"rounds": args.rounds, "steady": args.steady, "spike": args.spike,
             "spike-factor": args.spike_factor,
             "cycles": args.cycles, "tail": args.tail, "slo-ms": args.slo_ms,
             "trees": args.trees}  # fmt: skip
    command = "python bench/switching/run.py" + "".join(f" --{k} {v:g}" for k, v in flags.items())
    client = meta["load"]
    lines = [
        SECTION,
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} cores ({platform.machine()}), "
        f"Python {platform.python_version()}; `{command}`; {meta['seconds'] / 60:.1f} min in "
        "all. Method and caveats: bench/switching/NOTES.md.",
        "",
        f"- Task: `make_classification` (seed {args.seed}; 20 features, 12 informative, 8 "
        f"clusters per class), {args.train_rows:,} training rows, {args.holdout_rows:,} "
        f"holdout rows sent as requests (one row each). Variants (holdout accuracy, runtime "
        f"the gateway chose): accurate = ExtraTrees {args.trees} full-depth trees "
        f"({acc['accurate']:.1%}, {facts['runtime']['accurate']}), middle = RandomForest 20 "
        f"trees depth 8 ({acc['middle']:.1%}, {facts['runtime']['middle']}), fast = "
        f"LogisticRegression ({acc['fast']:.1%}, {facts['runtime']['fast']}); these are the "
        "variants' `quality`.",
        f"- One `modelyard serve --workers 1` for every policy. Capacity, closed loop, 16 "
        f"connections, batching off: accurate {cap['accurate']:,.0f} req/s "
        f"({cost['accurate']:.2f} ms per request), middle {cap['middle']:,.0f} "
        f"({cost['middle']:.2f} ms), fast {cap['fast']:,.0f} ({cost['fast']:.2f} ms): the "
        f"accurate variant costs {cap['fast'] / cap['accurate']:.1f}x the fast one per "
        f"request, gateway included. The accurate variant with batching (`max_batch_size` "
        f"{args.batch_size}): {cap['accurate+batching']:,.0f} req/s, so the spike is "
        f"{meta['spike_rate'] / cap['accurate+batching']:.0%} of that.",
        f"- Open-loop load (bench/switching/load.py, raw HTTP/1.1, Poisson arrivals from a "
        f"seeded schedule): {meta['steady_rate']:,.0f} req/s steady (40 % of the accurate "
        f"capacity) for {args.steady:g} s, {meta['spike_rate']:,.0f} req/s "
        f"({args.spike_factor:g}x) for "
        f"{args.spike:g} s, x{args.cycles}, then {args.tail:g} s steady; "
        f"{_med([w['m']['requests'] for w in windows]):,.0f} requests per window, each "
        f"carrying `x-modelyard-deadline-ms: {args.slo_ms:g}`; switching endpoints have "
        f"`slo_ms` {args.slo_ms:g}. Client writes were late by p99 "
        f"{_med([c['late_ms_p99'] for c in client]):.1f} ms (max "
        f"{max(c['late_ms_max'] for c in client):.1f}).",
        "- Effective accuracy: answered 200 within the deadline (from each request's due "
        "time) with the right class, over all requests sent; 'in spikes': over the requests "
        "due during the spikes. SLO violations: late, shed (503) or failed, over all sent. "
        "In-time req/s: answers within the deadline per second of window. Share: of the "
        "answered requests, by the "
        f"`x-modelyard-version` that answered. The accurate variant scores {ceiling:.1f} % on "
        "the requests sent with no deadline (the ceiling). Cache row: "
        f"{args.cache_share:.0%} of its requests repeat one of {HOT_ROWS} hot rows. Batching "
        f"row: `max_batch_size` {args.batch_size}, `max_wait_ms` 2 (every other row: 1).",
        f"- Medians over rounds (range); rounds interleaved, order rotated. CPU: serve "
        f"process per request sent; load client and 'other' (the rest of the machine: "
        f"harness, other sessions) in cores over the window. Load average (1/5/15 min) "
        f"before: {' '.join(f'{x:.2f}' for x in meta['loadavg_before'])}; after: "
        f"{' '.join(f'{x:.2f}' for x in meta['loadavg_after'])}.",
        "",
        md_table(head, rows),
        "",
        goal,
        "",
    ]
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="~2 min: one round of short windows (--rounds 1 --steady 3 "
                         "--spike 5 --tail 2 --capacity-seconds 3 --gap 1) over "
                         f"{', '.join(QUICK)} unless --policies is given")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=2, help="rounds over every policy (2)")
    ap.add_argument("--steady", type=float, default=6.0, help="seconds at 40 %% of capacity (6)")
    ap.add_argument("--spike", type=float, default=10.0, help="seconds at 3x that (10)")
    ap.add_argument("--spike-factor", type=float, default=3.0,
                    help="spike rate over the steady rate (3)")  # fmt: skip
    ap.add_argument("--cycles", type=int, default=1, help="steady + spike, this many times (1)")
    ap.add_argument("--tail", type=float, default=4.0, help="seconds steady after the spikes (4)")
    ap.add_argument("--slo-ms", type=float, default=50.0, help="deadline of every request (50)")
    ap.add_argument("--trees", type=int, default=300, help="trees of the accurate variant (300)")
    ap.add_argument("--train-rows", type=int, default=10_000, help="(10,000)")
    ap.add_argument("--holdout-rows", type=int, default=30_000,
                    help="rows sent; more than a window's requests, so only the cache "
                         "row's hot rows repeat within its cache's TTL (30,000)")  # fmt: skip
    ap.add_argument(
        "--cache-share",
        type=float,
        default=0.3,
        help="share of the cache row's requests that repeat a hot row (0.3)",
    )
    ap.add_argument(
        "--batch-size", type=int, default=32, help="max_batch_size of the batching rows (32)"
    )
    ap.add_argument(
        "--capacity-seconds",
        type=float,
        default=4.0,
        help="closed-loop capacity measurement of the accurate variant (4)",
    )
    ap.add_argument("--gap", type=float, default=1.5, help="seconds between windows (1.5)")
    ap.add_argument("--policies", default=None,
                    help="endpoints to run, comma-separated (default: all: "
                         f"{','.join(p.endpoint for p in POLICIES)})")  # fmt: skip
    ap.add_argument("--seed", type=int, default=7, help="data, models and arrivals (7)")
    ap.add_argument("--src", default=str(REPO_DIR / "src"), help="the modelyard source served")
    ap.add_argument("--workdir", default=None, help="default bench/runs/switching-<time>")
    ap.add_argument("--write-results", action="store_true",
                    help=f"replace {SECTION!r} in bench/RESULTS.md")  # fmt: skip
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.steady, args.spike, args.tail = 1, 3.0, 5.0, 2.0
        args.capacity_seconds, args.gap = 3.0, 1.0
        args.policies = args.policies or ",".join(QUICK)
    wanted = set((args.policies or ",".join(p.endpoint for p in POLICIES)).split(","))
    policies = [p for p in POLICIES if p.endpoint in wanted]
    if not policies:
        ap.error(f"--policies names none of {', '.join(p.endpoint for p in POLICIES)}")

    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    began = time.monotonic()
    src = Path(args.src).resolve()
    sys.path.insert(0, str(src))
    root = Path(args.workdir or BENCH_DIR / "runs" / f"switching-{time.strftime('%Y%m%d-%H%M%S')}")
    root.mkdir(parents=True, exist_ok=True)
    home = root / "home"
    os.environ.pop("MODELYARD_HOME", None)
    log(f"work dir {root}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    from modelyard.client import Client
    from modelyard.config import Settings
    from modelyard.workspace import Workspace

    task = make_task(args)
    log("holdout accuracy: " + ", ".join(f"{v} {task.accuracy[v]:.4f}" for v in VARIANTS)
        + " (fit " + ", ".join(f"{task.fit_seconds[v]:.1f}" for v in VARIANTS) + " s)")  # fmt: skip
    settings = Settings(home=home)
    client = Client(str(home), settings=settings)
    ws = Workspace.open(settings, migrate=False)
    try:
        facts = register(client, ws, task, args)
    finally:
        ws.close()
        client.close()
    log(f"registered; runtimes {facts['runtime']}; seconds "
        + ", ".join(f"{v} {s:.1f}" for v, s in facts["register_seconds"].items()))  # fmt: skip
    if not facts["switching"]:
        policies = [p for p in policies if not p.switching]
    payloads = [json.dumps(b).encode() for b in bodies(task)]
    (root / "bodies.json").write_text(json.dumps(bodies(task)))

    server, port = serve(home, root, src)
    windows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {"load": []}
    try:
        endpoints = [f"always-{v}" for v in VARIANTS] + ["always-accurate-batching"]
        endpoints += [p.endpoint for p in policies]
        for endpoint in dict.fromkeys(endpoints):
            url = f"http://127.0.0.1:{port}/endpoints/{endpoint}/invocations"
            log(f"{endpoint} ready after {wait_ready(server, url, payloads[0]):.1f} s")
            # Warm-up: teaches the batchers (and the switching latency model) their costs.
            keepalive_load(port, raw_requests(port, endpoint, payloads), 0.5, 4)
        capacity = {}
        for v in VARIANTS:
            seconds = args.capacity_seconds if v == "accurate" else args.capacity_seconds / 2
            result = keepalive_load(
                port, raw_requests(port, f"always-{v}", payloads), seconds, CAPACITY_CONNECTIONS
            )
            capacity[v] = result["rps"]
            log(f"capacity {v}: {result['rps']:,.0f} req/s (p50 {result['p50']:.2f} ms, "
                f"{result['failed']} failed)")  # fmt: skip
        # For the reader: how far batching alone moves the accurate variant's capacity.
        result = keepalive_load(
            port, raw_requests(port, "always-accurate-batching", payloads),
            args.capacity_seconds / 2, CAPACITY_CONNECTIONS,
        )  # fmt: skip
        capacity["accurate+batching"] = result["rps"]
        log(f"capacity accurate with batching: {result['rps']:,.0f} req/s")
        meta["capacity"] = capacity
        steady = STEADY_SHARE * capacity["accurate"]
        spike = args.spike_factor * steady
        meta["steady_rate"], meta["spike_rate"] = steady, spike
        meta["loadavg_before"] = os.getloadavg()
        assert server.proc is not None
        serve_pid = server.proc.pid
        for r in range(args.rounds):
            order = policies[r % len(policies) :] + policies[: r % len(policies)]
            for p in order:
                sched = schedule(args, steady, spike, r, p.stream, len(task.holdout))
                time.sleep(args.gap)
                cpu0, busy0 = tree_cpu(serve_pid), machine_cpu()
                self0 = resource.getrusage(resource.RUSAGE_SELF)
                t0 = time.monotonic()
                summary, rec = run_load(root, port, p, sched, args, f"{r}-{p.endpoint}")
                seconds = time.monotonic() - t0
                cpu1, busy1 = tree_cpu(serve_pid), machine_cpu()
                self1 = resource.getrusage(resource.RUSAGE_SELF)
                harness = sum(getattr(self1, f) - getattr(self0, f) for f in RUSAGE)
                server_cpu = cpu1 - cpu0
                m = measure(rec, sched, task, args)
                window = {
                    "policy": p.name, "round": r, "m": m, "seconds": seconds,
                    "server_cpu": server_cpu, "client_cpu": summary["cpu_seconds"],
                    "other_cpu": busy1[0] - busy0[0] - server_cpu - summary["cpu_seconds"]
                    - harness,
                    "steal": busy1[1] - busy0[1], "pss": pss_bytes(serve_pid),
                    "loadavg": os.getloadavg()[0], "load": summary,
                }  # fmt: skip
                windows.append(window)
                meta["load"].append(summary)
                log(f"round {r + 1} {p.name}: effective {m['effective']:.1%} (spikes "
                    f"{m['effective_spike']:.1%}), violations {m['violations']:.2%} (late "
                    f"{m['late']:.2%}, shed {m['shed']:.2%}, failed {m['failed']:.2%}), p99 "
                    f"{m['p99'] or 0:.1f} ms, share "
                    + "/".join(f"{m['share'][v]:.0%}" for v in VARIANTS)
                    + f", serve CPU {server_cpu / seconds:.2f} cores, client "
                    f"{summary['cpu_seconds'] / seconds:.2f}")  # fmt: skip
                if p.switching:
                    log(f"  timeline of round {r + 1} {p.name}:\n{timeline_text(m)}")
                if not server.alive():
                    raise RuntimeError(f"serve exited; see {server.log_path}")
        meta["loadavg_after"] = os.getloadavg()
    finally:
        server.stop()
    meta["seconds"] = time.monotonic() - began
    raw = {"args": vars(args), "facts": facts, "accuracy": task.accuracy, "meta": meta,
           "windows": windows}  # fmt: skip
    (root / "raw.json").write_text(json.dumps(raw, indent=1, default=str))
    section = report(args, task, facts, windows, meta)
    print(section)
    if args.write_results:
        write_results(SECTION, section)
        log(f"wrote {SECTION} in {common.RESULTS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
