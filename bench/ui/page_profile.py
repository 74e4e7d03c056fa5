#!/usr/bin/env python3
"""Where a dashboard page spends its time: SQL statements and Python functions, in-process.

Builds the app on the seeded home (``create_app(workspace=...)``), requests each page through
Starlette's TestClient (2 warm-ups, then ``--repeat`` requests), and prints per page: the
median time, how many SQL statements it ran and their time, the statements that took longest
(grouped by text), the handler thread's CPU time, and the functions with the most cumulative
CPU time under cProfile (timer: the thread's CPU clock, so other processes' turns on a shared
machine are not charged to whatever function was running).

    python bench/ui/page_profile.py "/ui/monitoring?endpoint=fraud" /ui/endpoints/fraud
    python bench/ui/page_profile.py --slowest 3     # the 3 slowest pages of the last run.py
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))


class SqlLog:
    """Statements and their time, from SQLAlchemy's cursor events."""

    def __init__(self) -> None:
        self.on = False
        self.by_text: dict[str, list[float]] = defaultdict(list)
        self._t0: list[float] = []

    def attach(self, engine) -> None:
        from sqlalchemy import event

        @event.listens_for(engine, "before_cursor_execute")
        def _before(conn, cursor, statement, params, context, executemany):
            self._t0.append(time.perf_counter())

        @event.listens_for(engine, "after_cursor_execute")
        def _after(conn, cursor, statement, params, context, executemany):
            spent = time.perf_counter() - self._t0.pop()
            if self.on:
                key = re.sub(r"\s+", " ", statement)[:160]
                self.by_text[key].append(spent)

    def reset(self) -> None:
        self.by_text.clear()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--home", type=Path, default=HERE / ".data" / "home")
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--slowest", type=int, default=0)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--cpu-only", action="store_true", help="time and CPU only, no profile")
    args = ap.parse_args()
    paths = list(args.paths)
    if args.slowest:
        results = json.loads((HERE / ".data" / "results.json").read_text())["results"]
        timed = [r for r in results if r.get("median_ms") and not r["key"].startswith("mlflow:")]
        timed.sort(key=lambda r: -r["median_ms"])
        paths += [r["path"] for r in timed[: args.slowest]]
    if not paths:
        raise SystemExit("name pages (/ui/...) or --slowest N")

    from fastapi.testclient import TestClient

    from modelyard.api.app import create_app
    from modelyard.config import Settings
    from modelyard.workspace import Workspace

    ws = Workspace.open(Settings(home=args.home.resolve(), database_url=args.database_url))
    sql = SqlLog()
    sql.attach(ws.store.engine)
    if getattr(ws.store, "_write_engine", None) is not ws.store.engine:
        sql.attach(ws.store._write_engine)
    app = create_app(workspace=ws)
    # Page handlers are sync: FastAPI runs them in a worker thread, which cProfile (one
    # thread's hook) would not see from here. Profile inside that thread instead.
    import fastapi.routing

    current: list[cProfile.Profile] = []
    cpu: list[float] = []  # the handler thread's CPU time per request, profiler off
    threadpool = fastapi.routing.run_in_threadpool

    async def profiled(func, *a, **kw):
        def call(*a, **kw):
            if not current:
                t0 = time.thread_time()
                try:
                    return func(*a, **kw)
                finally:
                    cpu.append(time.thread_time() - t0)
            current[0].enable()
            try:
                return func(*a, **kw)
            finally:
                current[0].disable()

        return await threadpool(call, *a, **kw)

    fastapi.routing.run_in_threadpool = profiled
    with TestClient(app) as client:
        for path in paths:
            headers = {"hx-request": "true"} if path.endswith("/live") else {}
            for _ in range(2):
                client.get(path, headers=headers)
            cpu.clear()
            plain = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                client.get(path, headers=headers)
                plain.append((time.perf_counter() - t0) * 1000)
            print(f"\n=== {path}: {statistics.median(plain):.1f} ms, handler CPU "
                  f"{statistics.median(cpu) * 1000:.1f} ms (medians of {args.repeat}, "
                  "in-process, not profiled)")  # fmt: skip
            if args.cpu_only:
                continue
            times = []
            sql.reset()
            sql.on = True
            # CPU time of the handler's thread, not wall time: on a shared machine the wall
            # clock charges other processes' turns to whatever function was running.
            prof = cProfile.Profile(time.thread_time)
            current[:] = [prof]
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                r = client.get(path, headers=headers)
                times.append((time.perf_counter() - t0) * 1000)
            current.clear()
            sql.on = False
            n = args.repeat
            count = sum(len(v) for v in sql.by_text.values()) / n
            spent = sum(sum(v) for v in sql.by_text.values()) / n * 1000
            print(f"status {r.status_code}, {len(r.content) / 1024:.1f} KB")
            print(f"median {statistics.median(times):.1f} ms (profiled, in-process); "
                  f"{count:.0f} SQL statements per request, {spent:.1f} ms in SQL")  # fmt: skip
            top = sorted(sql.by_text.items(), key=lambda kv: -sum(kv[1]))[:8]
            for text, spent_list in top:
                print(f"  {len(spent_list) / n:6.0f}x {sum(spent_list) / n * 1000:8.1f} ms  {text}")
            out = io.StringIO()
            stats = pstats.Stats(prof, stream=out).sort_stats("cumulative")
            print(f"handler CPU {stats.total_tt / n * 1000:.1f} ms per request (profiled)")
            stats.print_stats(args.top)
            body = out.getvalue()
            print(body[body.find("   ncalls") :])
    ws.close()


if __name__ == "__main__":
    main()
