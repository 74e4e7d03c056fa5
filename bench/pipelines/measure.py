"""Worker side of the pipelines benchmark: time one warm-up run and N runs, print JSON.

Stdlib only (imported by workers in modelyard's environment and in bench/.venv-prefect).
CPU time covers the whole process tree of the worker: its own threads (``process_time``),
reaped child processes (``RUSAGE_CHILDREN``: a process per step) and live descendants read
from /proc (Prefect's ephemeral API server, a process pool), as deltas around the N runs.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/common.py
import common
from steps import EXPECTED, N_STEPS

STARTED = time.perf_counter()


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    me = os.getpid()
    live = sum(cpu for pid, (cpu, _) in common.tree_snapshot(me).items() if pid != me)
    return ru.ru_utime + ru.ru_stime + live


def _peak_rss_mib() -> float:
    rss = {pid: r for pid, (_, r) in common.tree_snapshot(os.getpid()).items()}
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return max(own, sum(rss.values()) / 2**20)


def measure(
    system: str,
    variant: str,
    version: str,
    run_once: Callable[[], Any],
    runs: int,
    *,
    import_s: float,
    setup_s: float = 0.0,
    check: Callable[[Any], Any] = lambda out: out,
    extra: Callable[[], dict] | None = None,
) -> None:
    """Run once (cold, discarded), then ``runs`` times; print one JSON line on stdout.

    ``check(out)`` turns what ``run_once`` returned into the DAG's result (or raises); it
    runs outside the timed and CPU-counted loop."""
    t0 = time.perf_counter()
    first = check(run_once())
    cold_s = time.perf_counter() - t0
    if first != EXPECTED:
        raise SystemExit(f"{system}/{variant}: wrong result {first!r}, expected {EXPECTED!r}")

    times: list[float] = []
    outs: list[Any] = []
    children0 = _children_cpu()
    self0 = time.process_time()  # read inside the /proc scans: their cost is not counted
    for _ in range(runs):
        t = time.perf_counter()
        outs.append(run_once())
        times.append(time.perf_counter() - t)
    self1 = time.process_time()
    children1 = _children_cpu()
    for out in outs:  # after the measurement: checking may read results back from a store
        if check(out) != EXPECTED:
            raise SystemExit(f"{system}/{variant}: wrong result {out!r}")
    result = {
        "system": system,
        "variant": variant,
        "version": version,
        "steps": N_STEPS,
        "import_s": import_s,
        "setup_s": setup_s,
        "cold_s": cold_s,
        "runs_s": times,
        "cpu_self_s": (self1 - self0) / runs,
        "cpu_children_s": (children1 - children0) / runs,
        "peak_rss_mib": _peak_rss_mib(),
        "processes": len(common.tree_snapshot(os.getpid())),
        "worker_s": time.perf_counter() - STARTED,
    }
    if extra is not None:
        result.update(extra())
    print(json.dumps(result), flush=True)
