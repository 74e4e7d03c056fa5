"""The benchmark DAG as a Prefect flow; one JSON line on stdout.

Run with bench/.venv-prefect/bin/python:

    python prefect_worker.py --runs 20 --variant default --workdir DIR

``@flow`` + ``@task`` with the default task runner (ThreadPoolTaskRunner); s0 is called, the
eight middle tasks are ``.submit()``-ed and s9 is called on their results. Prefect's own local
(ephemeral) API server and SQLite database live under ``DIR`` (PREFECT_HOME): nothing is
shared between workers and no network is used beyond that server on 127.0.0.1.

Variants:
  default       Prefect's defaults (results not persisted, so nothing is cached)
  cached        ``persist_result=True`` and ``cache_policy=INPUTS + TASK_SOURCE`` on every
                task: after the warm-up run every task run is a cache hit
  no-heartbeat  diagnostic, not a configuration Prefect offers: default, with the flow-run
                heartbeat patched out (``prefect.flow_engine._send_heartbeats``). Its thread
                sleeps in 1 s steps and the flow joins it at exit, so that join sets a floor
                of about 1 s per flow run; ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` cannot turn
                it off (at least 30 s, no "off" value)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def configure(workdir: Path) -> None:
    """Environment for Prefect, before it is imported (its settings read it at import)."""
    home = workdir / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
            "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
            # No network: no telemetry from the client or the server, no update checks.
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # Start-up of the ephemeral server (uvicorn + migrations) exceeds the default
            # 20 s on a loaded 2-core machine; this is a limit, not a delay.
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600",
        }
    )
    os.environ.pop("PREFECT_API_URL", None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--variant", choices=("default", "cached", "no-heartbeat"), default="default")
    ap.add_argument("--workdir", type=Path, required=True)
    args = ap.parse_args()
    configure(args.workdir)
    import measure
    import steps

    t0 = time.perf_counter()
    import prefect
    from prefect import flow, task
    from prefect.cache_policies import INPUTS, TASK_SOURCE

    import_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    options: dict = {}
    if args.variant == "cached":
        options = {"persist_result": True, "cache_policy": INPUTS + TASK_SOURCE}
    s0 = task(steps.s0, **options)
    middle = [task(f, **options) for f in steps.MIDDLE]
    s9 = task(steps.s9, **options)

    @flow(name="bench-dag")
    def dag(seed: int = steps.SEED) -> dict:
        a = s0(seed)
        futures = [t.submit(a) for t in middle]
        return s9(*(f.result() for f in futures))

    if args.variant == "no-heartbeat":
        import contextlib

        import prefect.flow_engine

        def no_heartbeats(engine: object, join_on_exit: bool = True) -> contextlib.nullcontext:
            return contextlib.nullcontext()

        prefect.flow_engine._send_heartbeats = no_heartbeats
    setup_s = time.perf_counter() - t0

    measure.measure(
        "prefect",
        args.variant,
        prefect.__version__,
        lambda: dag(steps.SEED),
        args.runs,
        import_s=import_s,
        setup_s=setup_s,
    )
    sys.stdout.flush()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
