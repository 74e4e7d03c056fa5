#!/usr/bin/env python3
"""Pipelines benchmark: the overhead of running a 10-step pipeline of trivial steps.

modelyard's pipelines (scheduling, caching, lineage recorded in the store) beside the same
functions called directly and beside the same DAG in Prefect, same machine, same run.
DAG (bench/pipelines/steps.py): ``s0 -> s1 .. s8`` (each depends on s0 only) ``-> s9``
(depends on all eight); each step returns a small int or dict computed from its inputs.

Each round runs every system below in its own fresh process (a worker printing one JSON
line), in an order rotated between rounds. A worker makes one warm-up run (discarded; its
time is the "first run" column) and then --runs timed runs:

  direct      bench/pipelines/direct_worker.py: the ten functions called in order
  modelyard   bench/pipelines/modelyard_worker.py, in this environment: a workspace in a
              temporary directory (``Workspace.open(Settings(home=...))``), the pipeline run
              with ``ws.pipelines.run(...)`` on the in-process executor and on the local
              executor (a process per step), each with caching off (``force=True``) and
              with a full cache hit (the same run again, nothing changed)
  prefect     bench/pipelines/prefect_worker.py in bench/.venv-prefect: ``@flow`` +
              ``@task``, default task runner, the middle eight ``.submit()``-ed, its local
              ephemeral API server and SQLite database under a temporary PREFECT_HOME;
              result persistence default (nothing cached) and, apart, with persisted
              results and ``cache_policy=INPUTS + TASK_SOURCE`` (cache hits). Only when
              named (``--systems prefect/no-heartbeat``): a diagnostic with Prefect's
              flow-run heartbeat patched out (see prefect_worker.py)

Reported per system: median wall time per pipeline run (median over rounds of each round's
median), overhead = that - direct, overhead per step, CPU time per run of the worker's whole
process tree (its threads, its step processes, Prefect's API server), and ratios vs Prefect
with the same caching. Prefect's first (cold) run, which starts its server and creates its
database, is reported apart, with import times.

    bash bench/setup.sh prefect                      # once: the Prefect virtualenv
    python bench/pipelines/run.py --rounds 3 --runs 20   # writes "## pipelines" in RESULTS.md
    python bench/pipelines/run.py --rounds 1 --runs 5 --systems direct prefect --no-results
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PIPELINES_DIR = Path(__file__).resolve().parent
BENCH_DIR = PIPELINES_DIR.parent
PREFECT_VENV = BENCH_DIR / ".venv-prefect"
SECTION = "## pipelines"

sys.path.insert(0, str(BENCH_DIR))
import common  # noqa: E402  (bench/common.py: shared by the harnesses)
from common import RESULTS_MD, log, md_table  # noqa: E402

common.TAG = "pipelines"


@dataclass(frozen=True)
class System:
    key: str  # "modelyard/local/force"
    label: str  # as shown in the table
    worker: str  # file name in bench/pipelines
    variant: str  # passed as --variant
    cached: bool  # a full cache hit (compared with Prefect's cached variant)
    venv: Path | None = None  # None: this environment
    default: bool = True  # False: run only when named in full in --systems


SYSTEMS: tuple[System, ...] = (
    System("direct", "direct calls", "direct_worker.py", "plain calls", False),
    System(
        "modelyard/inprocess/force",
        "modelyard, in-process executor, force=True",
        "modelyard_worker.py",
        "inprocess-force",
        False,
    ),
    System(
        "modelyard/inprocess/cached",
        "modelyard, in-process executor, cache hit",
        "modelyard_worker.py",
        "inprocess-cached",
        True,
    ),
    System(
        "modelyard/local/force",
        "modelyard, local executor (process per step), force=True",
        "modelyard_worker.py",
        "local-force",
        False,
    ),
    System(
        "modelyard/local/cached",
        "modelyard, local executor (process per step), cache hit",
        "modelyard_worker.py",
        "local-cached",
        True,
    ),
    System(
        "prefect/default",
        "Prefect, defaults (no result persistence)",
        "prefect_worker.py",
        "default",
        False,
        PREFECT_VENV,
    ),
    System(
        "prefect/cached",
        "Prefect, persisted results + INPUTS+TASK_SOURCE cache, cache hit",
        "prefect_worker.py",
        "cached",
        True,
        PREFECT_VENV,
    ),
    System(
        "prefect/no-heartbeat",
        "Prefect, defaults, flow-run heartbeat patched out (diagnostic)",
        "prefect_worker.py",
        "no-heartbeat",
        False,
        PREFECT_VENV,
        default=False,
    ),
)
BY_KEY = {s.key: s for s in SYSTEMS}


def select(names: list[str]) -> list[System]:
    """Systems whose key equals one of ``names``, or starts with one ("prefect",
    "modelyard/local") when the system is run by default."""
    chosen = [
        s
        for s in SYSTEMS
        if any(s.key == n or (s.default and s.key.startswith(n + "/")) for n in names)
    ]
    unknown = [
        n for n in names if not any(s.key == n or s.key.startswith(n + "/") for s in SYSTEMS)
    ]
    if unknown:
        raise SystemExit(f"unknown system(s) {unknown}; known: {', '.join(BY_KEY)}")
    return chosen


# --- running the workers ------------------------------------------------------------------


def _kill_group(pgid: int, name: str) -> None:
    """SIGKILL whatever is left of a worker's process group (its step processes, servers)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return
    log(f"  {name}: processes left in group {pgid} after the worker: killing them")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def run_worker(system: System, runs: int, outdir: Path, timeout: float) -> dict[str, Any]:
    python = str(system.venv / "bin" / "python") if system.venv else sys.executable
    workdir = Path(tempfile.mkdtemp(prefix=system.key.replace("/", "-") + "-", dir=outdir))
    cmd = [
        python,
        str(PIPELINES_DIR / system.worker),
        "--runs",
        str(runs),
        "--variant",
        system.variant,
        "--workdir",
        str(workdir),
    ]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MODELYARD_", "PYTHON", "PREFECT_", "VIRTUAL_ENV"))
    }
    env["DO_NOT_TRACK"] = "1"
    errlog = workdir / "stderr.log"
    t0 = time.monotonic()
    with open(errlog, "wb") as err:
        # Own session: its process group holds the worker and everything it starts.
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=workdir,
            start_new_session=True,
        )
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"  {system.key}: no result after {timeout:.0f} s: killing it")
            raise
        finally:
            _kill_group(proc.pid, system.key)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        tail = errlog.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{system.key} failed ({proc.returncode}); {errlog}:\n{tail}")
    out = json.loads(stdout.decode().strip().splitlines()[-1])
    out["worker_wall_s"] = wall
    for p in workdir.iterdir():  # the workspace / PREFECT_HOME; the log stays
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
    return out


# --- report -------------------------------------------------------------------------------


def ms(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "—"
    v = x * 1000
    if v != 0 and abs(v) < 0.01:
        return f"{v:.4f}"
    return f"{v:,.{digits}f}"


def ratio(peer: float | None, mine: float | None) -> str:
    if peer is None or mine is None or mine <= 0:
        return "—"
    return f"{peer / mine:,.1f}x"


def summarise(rs: list[dict]) -> dict[str, Any]:
    per_round = [statistics.median(r["runs_s"]) for r in rs]
    return {
        "wall": statistics.median(per_round),
        "per_round": per_round,
        "cpu": statistics.median(r["cpu_self_s"] + r["cpu_children_s"] for r in rs),
        "cpu_self": statistics.median(r["cpu_self_s"] for r in rs),
        "cold": statistics.median(r["cold_s"] for r in rs),
        "import": statistics.median(r["import_s"] for r in rs),
        "setup": statistics.median(r.get("setup_s", 0.0) for r in rs),
        "rss": max(r["peak_rss_mib"] for r in rs),
        "version": rs[0]["version"],
        "rounds": len(rs),
        "runs": sum(len(r["runs_s"]) for r in rs),
        "p90": statistics.quantiles([t for r in rs for t in r["runs_s"]], n=10)[-1]
        if sum(len(r["runs_s"]) for r in rs) >= 2
        else max(r["runs_s"][0] for r in rs),
    }


def report(args: argparse.Namespace, results: dict[str, list[dict]], meta: dict) -> str:
    stats = {k: summarise(rs) for k, rs in results.items() if rs}
    direct = stats.get("direct", {}).get("wall")
    n_steps = next(iter(results.values()))[0]["steps"] if results else 10

    def over(k: str) -> float | None:
        return None if direct is None or k not in stats else stats[k]["wall"] - direct

    head = [
        "system",
        "wall ms / run (median)",
        "per round",
        "p90 ms",
        "overhead ms / run",
        "overhead ms / step",
        "CPU ms / run (all processes)",
        "wall: Prefect / this",
        "overhead: Prefect / this",
        "CPU: Prefect / this",
    ]
    rows = []
    for s in SYSTEMS:
        if s.key not in stats:
            continue
        st, o = stats[s.key], over(s.key)
        ref_key = "prefect/cached" if s.cached else "prefect/default"
        ref = stats.get(ref_key)
        is_peer = s.key.startswith("prefect/") or s.key == "direct"  # no ratio
        rows.append(
            [
                s.label,
                ms(st["wall"], 2 if st["wall"] < 0.01 else 1),
                " / ".join(ms(x, 2 if x < 0.01 else 1) for x in st["per_round"]),
                ms(st["p90"], 2 if st["p90"] < 0.01 else 1),
                "—" if s.key == "direct" else ms(o, 1),
                "—" if s.key == "direct" else ms(None if o is None else o / n_steps, 2),
                ms(st["cpu"], 2 if st["cpu"] < 0.01 else 1),
                "" if is_peer or ref is None else ratio(ref["wall"], st["wall"]),
                "" if is_peer or ref is None or s.key == "direct" else ratio(over(ref_key), o),
                "" if is_peer or ref is None else ratio(ref["cpu"], st["cpu"]),
            ]
        )

    chead = [
        "system",
        "version",
        "import s",
        "first run s (cold, discarded)",
        "processes at end",
        "RSS MiB at end (tree)",
    ]
    crows = []
    for s in SYSTEMS:
        if s.key not in stats:
            continue
        st = stats[s.key]
        rs = results[s.key]
        crows.append(
            [
                s.label,
                st["version"],
                f"{st['import']:.2f}",
                f"{st['cold']:.3f}",
                str(max(r["processes"] for r in rs)),
                f"{st['rss']:,.0f}",
            ]
        )

    summary = []
    pairs = [
        ("modelyard/inprocess/force", "prefect/default"),
        ("modelyard/local/force", "prefect/default"),
        ("modelyard/inprocess/cached", "prefect/cached"),
        ("modelyard/local/cached", "prefect/cached"),
    ]
    for mine, peer in pairs:
        if mine in stats and peer in stats and direct is not None:
            summary.append(
                f"{BY_KEY[mine].label}: overhead {ms(over(mine))} ms/run vs Prefect's "
                f"{ms(over(peer))} ms ({ratio(over(peer), over(mine))} less), CPU "
                f"{ms(stats[mine]['cpu'])} vs {ms(stats[peer]['cpu'])} ms/run"
            )
    la0, la1 = meta["load_before"], meta["load_after"]
    prefect_cold = stats.get("prefect/default", {}).get("cold")
    lines = [
        SECTION,
        "",
        f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} cores "
        f"({platform.machine()}), Python {platform.python_version()}; "
        f"`python bench/pipelines/run.py {' '.join(sys.argv[1:])}`.",
        "",
        f"- DAG: {n_steps} trivial steps, `s0 -> s1..s8 (parallel) -> s9` "
        "(bench/pipelines/steps.py); the same functions in every system, checked to give "
        "the same result on every run.",
        f"- Each system in its own fresh process per round, rounds x{meta['rounds_done']} "
        f"(order rotated between rounds); per round 1 warm-up run (discarded, shown as "
        f"'first run') then {args.runs} timed runs. wall = median over rounds of each "
        f"round's median; overhead = wall - direct calls' wall; CPU = CPU time per run of "
        f"the worker's whole process tree (step processes and Prefect's API server "
        f"included), median over rounds.",
        "- modelyard: a fresh workspace (SQLite + local artifacts) in a temporary directory "
        "per worker; every run recorded in the store with its steps and lineage. Prefect: "
        "its ephemeral API server (a uvicorn subprocess) and SQLite database under a "
        "temporary PREFECT_HOME, defaults otherwise (console logging, heartbeats, "
        "ThreadPoolTaskRunner). The 'Prefect / this' columns compare with Prefect's "
        "variant of the same caching: without caching with its defaults, cache hits "
        "with its cached variant.",
    ]
    if summary:
        lines.append("- " + "; ".join(summary) + ".")
    if prefect_cold is not None:
        lines.append(
            f"- Prefect's first run in a fresh process and home (starting its API server, "
            f"creating its database): {prefect_cold:.1f} s (median), besides "
            f"{stats['prefect/default']['import']:.1f} s of imports."
        )
    lines.append(
        "- Where the time goes (Prefect's ~1 s floor per flow run, modelyard's fixed cost "
        "per run): bench/NOTES.md, section 'pipelines'."
    )
    if meta.get("skipped"):
        lines.append(f"- Not run (time limit or failure): {', '.join(meta['skipped'])}.")
    lines += [
        "- The machine is shared with other sessions; load average (1/5/15 min) before: "
        f"{' '.join(f'{x:.2f}' for x in la0)}; after: {' '.join(f'{x:.2f}' for x in la1)}.",
        "",
        md_table(head, rows),
        "",
        md_table(chead, crows),
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=20, help="timed pipeline runs per worker")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--systems",
        nargs="+",
        default=["direct", "modelyard", "prefect"],
        help=f"systems or prefixes of: {', '.join(BY_KEY)} (the last one only by its name)",
    )
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per worker")
    ap.add_argument(
        "--max-minutes",
        type=float,
        default=45.0,
        help="start no worker after this many minutes; report what was measured",
    )
    ap.add_argument("--no-results", action="store_true", help="do not touch bench/RESULTS.md")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    systems = select(args.systems)
    if "direct" not in [s.key for s in systems]:
        systems.insert(0, BY_KEY["direct"])  # the baseline of every overhead
    if any(s.venv for s in systems) and not (PREFECT_VENV / "bin" / "python").exists():
        raise SystemExit(f"{PREFECT_VENV} missing: run bash bench/setup.sh prefect")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    outdir = BENCH_DIR / "runs" / f"pipelines-{time.strftime('%Y%m%d-%H%M%S')}"
    outdir.mkdir(parents=True, exist_ok=True)
    la = os.getloadavg()
    log(f"work dir {outdir}")
    log(
        f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} on {os.cpu_count()} cores"
        + ("  (busy machine: numbers will be noisy)" if la[0] > 1.0 else "")
    )
    meta: dict[str, Any] = {"load_before": la, "skipped": [], "rounds_done": 0}
    results: dict[str, list[dict]] = {s.key: [] for s in systems}
    deadline = time.monotonic() + args.max_minutes * 60
    for i in range(args.rounds):
        k = i % len(systems)
        order = systems[k:] + systems[:k]
        for system in order:
            if time.monotonic() > deadline:
                meta["skipped"].append(f"{system.key} (round {i + 1})")
                log(f"round {i + 1}: past --max-minutes, skipping {system.key}")
                continue
            try:
                out = run_worker(system, args.runs, outdir, args.timeout)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                meta["skipped"].append(f"{system.key} (round {i + 1}: failed)")
                log(f"round {i + 1} {system.key}: FAILED: {exc}")
                continue
            results[system.key].append(out)
            log(
                f"round {i + 1}/{args.rounds} {system.key}: median "
                f"{statistics.median(out['runs_s']) * 1000:,.2f} ms/run, CPU "
                f"{(out['cpu_self_s'] + out['cpu_children_s']) * 1000:,.1f} ms/run, first "
                f"run {out['cold_s']:.3f} s, import {out['import_s']:.2f} s, worker "
                f"{out['worker_wall_s']:.1f} s"
            )
        meta["rounds_done"] = i + 1
    meta["load_after"] = os.getloadavg()
    (outdir / "raw.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    results = {k: v for k, v in results.items() if v}
    if "direct" not in results:
        raise SystemExit("the direct baseline did not run: no report")
    section = report(args, results, meta)
    print(section)
    if not args.no_results:
        common.write_results(SECTION, section)
        log(f"updated {RESULTS_MD}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
