#!/usr/bin/env python3
"""The gateway's own Python per request, in-process: no sockets, no HTTP parser.

Drives ``Gateway`` (the ASGI app ``modelyard serve`` runs) with a fake ``receive``/``send``
on a workspace prepared by ``bench/serving/cpu_cost.py`` (``--home``), sequentially, and
prints the CPU time of the event loop's thread per request (best of ``--repeat`` runs) for
the MLflow ``dataframe_split`` body and the OIP v2 body.
``--no-log`` replaces the prediction log with one that keeps nothing (the log's writer
thread converts records in the background: its CPU is part of the server's, but not of the
request's latency). ``--process-cpu`` counts every thread of the process instead.
``--profile`` adds a cProfile of the MLflow path (top functions by own time).

    python bench/serving/inproc_gateway.py --home /tmp/cc/modelyard-lr/home --name lr
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench

PROCESS_CPU = False  # --process-cpu: count every thread (the log writer's too)


def scope_for(path: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8080),
    }


async def drive(app: Any, path: str, body: bytes, n: int) -> tuple[float, int]:
    scope = scope_for(path, body)
    message = {"type": "http.request", "body": body, "more_body": False}
    status = [0]

    async def receive() -> dict[str, Any]:
        return message

    async def send(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            status[0] = msg["status"]

    clock = time.process_time if PROCESS_CPU else time.thread_time
    start = clock()
    for _ in range(n):
        await app(scope, receive, send)
    return (clock() - start) / n * 1e6, status[0]


class _NoLog:
    """A prediction log that keeps nothing: the gateway's cost without the log's writer."""

    def log(self, **_: Any) -> bool:
        return True

    def log_error(self, **_: Any) -> bool:
        return True

    def set_redaction(self, endpoint: str, redaction: Any) -> None:
        pass

    def set_flush(self, endpoint: str, seconds: float | None) -> None:
        pass

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def flush(self) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return {}


async def main_async(args: argparse.Namespace) -> None:
    from modelyard.config import Settings
    from modelyard.serving.gateway import Gateway
    from modelyard.workspace import Workspace

    ws = Workspace.open(Settings(home=Path(args.home)), migrate=False)
    gw = Gateway(ws, prediction_log=_NoLog() if args.no_log else None)
    await gw.start()
    gc.freeze()  # as modelyard.server does once a worker has loaded what it serves
    row = [round(0.1 * i, 6) for i in range(20)]
    targets = {
        "mlflow": (f"/endpoints/{args.name}/invocations", bench.body_mlflow(row)),
        "v2": (f"/v2/models/{args.name}/infer", bench.body_v2(row)),
    }
    for label, (path, body) in targets.items():
        await drive(gw, path, body, 500)
        best = min([(await drive(gw, path, body, args.n))[0] for _ in range(args.repeat)])
        _, status = await drive(gw, path, body, 1)
        where = "in the process" if PROCESS_CPU else "on the event loop's thread"
        print(f"{label}: {best:.1f} µs CPU/request {where} (status {status})")
    if args.profile:
        path, body = targets[args.profile]
        prof = cProfile.Profile()
        prof.enable()
        await drive(gw, path, body, args.n)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
    await gw.stop()
    ws.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", required=True)
    ap.add_argument("--name", required=True, help="endpoint name")
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=5, help="runs of n requests; the best counts")
    ap.add_argument("--no-log", action="store_true", help="a prediction log that keeps nothing")
    ap.add_argument(
        "--process-cpu",
        action="store_true",
        help="count the CPU time of every thread (the log writer's too), not only the loop's",
    )
    ap.add_argument("--switch-interval", type=float, default=None, help="sys.setswitchinterval")
    ap.add_argument("--profile", choices=["mlflow", "v2"], default=None)
    args = ap.parse_args()
    global PROCESS_CPU
    PROCESS_CPU = args.process_cpu
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
