"""The benchmark DAG as a modelyard pipeline; one JSON line on stdout.

Run in modelyard's environment:

    python modelyard_worker.py --runs 20 --variant local-force --workdir DIR

A workspace (SQLite metadata + local artifact store) under ``DIR``, opened with
``Workspace.open(Settings(home=DIR/...))``; the pipeline is defined with ``@step`` /
``@pipeline`` on the shared functions of steps.py and run with ``ws.pipelines.run(...)``, which
records each run, its steps, cache keys, outputs and tracking run in the store as usual.

Variants: ``{inprocess,local}-{force,cached}``: the in-process executor or the local one (a
process per step, independent steps in parallel); ``force=True`` on every run (nothing
cached), or the same run again unchanged (after the warm-up run, every step a cache hit).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import measure
import steps

t0 = time.perf_counter()
import modelyard  # noqa: E402  (timed: import_s)
from modelyard.config import Settings  # noqa: E402
from modelyard.pipelines import pipeline, step  # noqa: E402
from modelyard.workspace import Workspace  # noqa: E402

import_s = time.perf_counter() - t0

S0 = step(steps.s0)
MIDDLE = [step(f) for f in steps.MIDDLE]
S9 = step(steps.s9)


@pipeline(name="bench-dag")
def dag(seed: int = steps.SEED):
    a = S0(seed)
    S9(*(m(a) for m in MIDDLE))


VARIANTS = ("inprocess-force", "inprocess-cached", "local-force", "local-cached")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--variant", choices=VARIANTS, default="local-force")
    ap.add_argument("--workdir", type=Path, required=True)
    args = ap.parse_args()
    executor, caching = args.variant.split("-")
    force = caching == "force"
    want_status = "succeeded" if force else "cached"

    t0 = time.perf_counter()
    ws = Workspace.open(Settings(home=args.workdir / "modelyard-home"))
    setup_s = time.perf_counter() - t0
    first = True

    def run_once():
        return ws.pipelines.run(dag, {"seed": steps.SEED}, executor=executor, force=force)

    def check(run) -> dict:
        nonlocal first
        if run.status != "succeeded":
            raise SystemExit(f"run {run.id} {run.status}: {run.error}")
        statuses = {s.name: s.status for s in run.steps}
        # The warm-up run of a cached variant computes every step; every later one hits.
        expected = "succeeded" if first else want_status
        first = False
        if len(statuses) != steps.N_STEPS or set(statuses.values()) != {expected}:
            raise SystemExit(f"run {run.id}: step statuses {statuses}, expected all {expected}")
        return ws.pipelines.output(run.id, "s9")

    def extra() -> dict:
        runs = ws.pipelines.list_runs("bench-dag", limit=1000).items
        last = ws.pipelines.get_run(runs[0].id)
        return {
            "recorded_runs": len(runs),
            "last_summary": {
                k: last.summary.get(k) for k in ("total_s", "overhead_s", "git_commit")
            },
        }

    try:
        measure.measure(
            "modelyard",
            args.variant,
            modelyard.__version__,
            run_once,
            args.runs,
            import_s=import_s,
            setup_s=setup_s,
            check=check,
            extra=extra,
        )
    finally:
        ws.close()


if __name__ == "__main__":
    main()
