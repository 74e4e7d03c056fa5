#!/usr/bin/env python3
"""Open-loop load for bench/switching/run.py: POSTs at arrival times fixed in advance.

The schedule (``--schedule``, an ``.npz`` with ``due``: seconds from the start, and ``row``:
which body each request carries) is made by the harness from a seeded generator, so every
policy of a round gets the same arrivals. Request ``i`` is written at ``start + due[i]``
whether or not the earlier ones were answered (an open loop: a slow policy does not slow the
offered load down), from one asyncio process (uvloop when installed) writing raw HTTP/1.1 over
keep-alive connections, as bench/rollouts/load.py does (httpx's pool could not keep an open
loop on this 2-core machine, see bench/rollouts/NOTES.md). A request takes an idle
connection or opens one (at most ``--connections`` at once).

Each request carries ``x-modelyard-deadline-ms: --deadline-ms``. Per request it records, in
seconds from the start (monotonic clock): when it was due and when it was written and
answered; the status (0: no answer within ``--timeout``, or the connection failed); the
predicted class (the first number in the body's ``predictions``; -1 when none); the model
that answered (the name before ``/`` in ``x-modelyard-version``, as an index into
``--models``; -1 without it); the variant (``x-modelyard-variant``, an index into
``--variants``; -1 without it); and whether ``x-modelyard-cache`` said ``hit``.

When the schedule is done and every request answered or timed out, it writes ``--out``
(``.npz``) and prints one JSON line: requests, its CPU seconds, how late the writes were.

    python bench/switching/load.py --url http://127.0.0.1:8000/endpoints/fraud/invocations \
        --bodies bodies.json --schedule schedule.npz --deadline-ms 50 --out load.npz
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Answer = tuple[int, int, bytes | None, bytes | None, bytes | None]


def _header(head: bytes, name: bytes) -> bytes | None:
    at = head.find(b"\r\n" + name + b":")
    if at < 0:
        return None
    start = at + len(name) + 3
    return head[start : head.index(b"\r\n", start)].strip()


def _prediction(body: bytes) -> int:
    """The first integer after the first ``[`` (``{"predictions":[1]}``); -1 when none."""
    at = body.find(b"[")
    if at < 0:
        return -1
    end = at + 1
    while end < len(body) and body[end : end + 1].isdigit():
        end += 1
    return int(body[at + 1 : end]) if end > at + 1 else -1


class Stale(Exception):
    """The connection was closed before the request reached the server."""


class Client:
    """Keep-alive connections to one server, at most ``limit`` in use at a time."""

    def __init__(self, host: str, port: int, limit: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.idle: deque[Connection] = deque()
        self.slots = asyncio.Semaphore(limit)

    async def post(self, request: bytes, wrote: list[float], i: int, mono: float) -> Answer | None:
        """(status, prediction, model, variant, cache) of the answer, or None without one."""
        async with self.slots:
            wrote[i] = time.monotonic() - mono
            conn = self.idle.pop() if self.idle else None
            if conn is not None:
                # The server closes a connection idle for a few seconds (uvicorn: 5 s); the
                # first write on it then reads EOF. Try once more on a new connection, as
                # HTTP clients do, rather than count a request the server never saw.
                with contextlib.suppress(Stale):
                    return await self._on(conn, request)
            with contextlib.suppress(Stale):
                return await self._on(None, request)
            return None

    async def _on(self, conn: Connection | None, request: bytes) -> Answer | None:
        head = b""
        try:
            async with asyncio.timeout(self.timeout):
                if conn is None:
                    conn = await asyncio.open_connection(self.host, self.port)
                reader, writer = conn
                writer.write(request)
                head = (await reader.readuntil(b"\r\n\r\n")).lower()
                length = _header(head, b"content-length")
                body = await reader.readexactly(int(length or 0))
        except (OSError, EOFError, ValueError, TimeoutError, asyncio.LimitOverrunError) as exc:
            if conn is not None:
                conn[1].close()
            if not head and isinstance(exc, EOFError | ConnectionResetError):
                raise Stale from exc
            return None
        if _header(head, b"connection") == b"close":
            writer.close()
        else:
            self.idle.append(conn)
        status = int(head[9:12])
        version = _header(head, b"x-modelyard-version")
        model = version.rpartition(b"/")[0] if version else None
        return (
            status,
            _prediction(body) if status == 200 else -1,
            model,
            _header(head, b"x-modelyard-variant"),
            _header(head, b"x-modelyard-cache"),
        )

    def close(self) -> None:
        while self.idle:
            self.idle.pop()[1].close()


async def run(args: argparse.Namespace, requests: list[bytes], due: np.ndarray,
              rows: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
    url = urlsplit(args.url)
    client = Client(url.hostname or "127.0.0.1", url.port or 80, args.connections, args.timeout)
    models = {name.encode(): i for i, name in enumerate(args.models.split(",")) if name}
    variants = {name.encode(): i for i, name in enumerate(args.variants.split(",")) if name}
    n = len(due)
    wrote = np.full(n, np.nan)
    done = np.full(n, np.nan)
    status = np.zeros(n, dtype=np.int16)
    pred = np.full(n, -1, dtype=np.int8)
    model = np.full(n, -1, dtype=np.int8)
    variant = np.full(n, -1, dtype=np.int8)
    hit = np.zeros(n, dtype=np.int8)
    tasks: set[asyncio.Task[None]] = set()
    mono = time.monotonic()

    async def one(i: int) -> None:
        answer = await client.post(requests[rows[i]], wrote, i, mono)
        if answer is None:
            return
        done[i] = time.monotonic() - mono
        status[i], pred[i] = answer[0], answer[1]
        model[i] = models.get(answer[2], -1) if answer[2] else -1
        variant[i] = variants.get(answer[3], -1) if answer[3] else -1
        hit[i] = answer[4] == b"hit"

    report = 10.0
    for i in range(n):
        delay = due[i] - (time.monotonic() - mono)
        if delay > 0:
            await asyncio.sleep(delay)
        if due[i] >= report:
            report += 10.0
            print(f"{time.strftime('%H:%M:%S')} started {i} in flight {len(tasks)}",
                  file=sys.stderr, flush=True)  # fmt: skip
        task = asyncio.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=args.timeout + 1)
    client.close()
    return {"due": due, "wrote": wrote, "done": done, "status": status, "pred": pred,
            "model": model, "variant": variant, "hit": hit}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--bodies", required=True, help="a JSON list of request bodies (objects)")
    ap.add_argument("--schedule", required=True, help=".npz with due (s) and row (index)")
    ap.add_argument("--deadline-ms", type=float, required=True, help="x-modelyard-deadline-ms")
    ap.add_argument("--models", default="", help="model names, comma-separated (indices)")
    ap.add_argument("--variants", default="", help="variant names, comma-separated (indices)")
    ap.add_argument("--connections", type=int, default=2048, help="at most this many at once")
    ap.add_argument("--timeout", type=float, default=2.0, help="seconds per request")
    ap.add_argument("--out", required=True, help=".npz file written at the end")
    args = ap.parse_args(argv)
    url = urlsplit(args.url)
    head = (
        f"POST {url.path} HTTP/1.1\r\nhost: {url.netloc}\r\ncontent-type: application/json\r\n"
        f"x-modelyard-deadline-ms: {args.deadline_ms:g}\r\ncontent-length: "
    )
    bodies = [json.dumps(b).encode() for b in json.loads(Path(args.bodies).read_text())]
    requests = [f"{head}{len(b)}\r\n\r\n".encode() + b for b in bodies]
    with np.load(args.schedule) as schedule:
        due, rows = schedule["due"], schedule["row"]
    before = resource.getrusage(resource.RUSAGE_SELF)  # the run's CPU, not the imports'
    try:
        import uvloop
    except ImportError:
        records = asyncio.run(run(args, requests, due, rows))
    else:
        records = uvloop.run(run(args, requests, due, rows))
    np.savez(args.out, **records)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    late = (records["wrote"] - records["due"]) * 1000
    late = late[~np.isnan(late)] if np.isfinite(late).any() else np.zeros(1)
    print(
        json.dumps(
            {
                "requests": len(due),
                "cpu_seconds": usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime,
                "late_ms_p50": float(np.percentile(late, 50)),
                "late_ms_p99": float(np.percentile(late, 99)),
                "late_ms_max": float(late.max()),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
