#!/usr/bin/env python3
"""Open-loop load for bench/rollouts/run.py: POSTs at a fixed rate until stdin closes.

Request ``i`` is started at ``start + i / rate`` whether or not the earlier ones were
answered (an open loop: a slow or failing version does not slow the offered load down), from
one asyncio process (uvloop when installed) writing raw HTTP/1.1 over keep-alive connections,
as bench/common.py's ``keepalive_load`` does: a request takes an idle connection or opens
one (at most ``--connections``). httpx's pool was tried first and could not keep up on this
shared 2-core machine (see bench/rollouts/NOTES.md).

Each request records the wall-clock time it was started and answered, the status (0: no
answer, e.g. a timeout or a closed connection) and the version that answered
(``X-Modelyard-Version: <model>/<n>``; 0 without that header).

When stdin closes it waits for the requests in flight (at most ``--timeout`` s), writes
everything to ``--out`` (``.npz``) and prints one JSON line: requests, CPU seconds, how late
the starts were. Every 10 s it prints its progress to stderr.

    python bench/rollouts/load.py --url http://127.0.0.1:8000/endpoints/fraud/invocations \
        --bodies bodies.json --rate 200 --out load.npz < /dev/null
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import threading
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Recorder:
    """Per request: started, answered (wall clock), status, version; lists grown in order."""

    def __init__(self) -> None:
        self.sent: list[float] = []
        self.answered: list[float] = []
        self.status: list[int] = []
        self.version: list[int] = []
        self.late: list[float] = []  # how long after its due time each request started

    def new(self, sent: float, late: float) -> int:
        self.sent.append(sent)
        self.answered.append(float("nan"))
        self.status.append(0)
        self.version.append(0)
        self.late.append(late)
        return len(self.sent) - 1


def _header(head: bytes, name: bytes) -> bytes | None:
    at = head.find(b"\r\n" + name + b":")
    if at < 0:
        return None
    start = at + len(name) + 3
    return head[start : head.index(b"\r\n", start)].strip()


def _version(value: bytes | None) -> int:
    if not value:
        return 0
    _, _, number = value.rpartition(b"/")
    return int(number) if number.isdigit() else 0


class Stale(Exception):
    """The connection was closed before the request reached the server."""


class Client:
    """Keep-alive connections to one server, at most ``limit`` in use at a time."""

    def __init__(self, host: str, port: int, limit: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.idle: deque[Connection] = deque()
        self.slots = asyncio.Semaphore(limit)
        self.busy = 0

    async def post(self, request: bytes) -> tuple[int, int] | None:
        """(status, version) of the answer, or None when there was none."""
        async with self.slots:
            self.busy += 1
            try:
                return await self._exchange(request)
            finally:
                self.busy -= 1

    async def _exchange(self, request: bytes) -> tuple[int, int] | None:
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

    async def _on(self, conn: Connection | None, request: bytes) -> tuple[int, int] | None:
        head = b""
        try:
            async with asyncio.timeout(self.timeout):
                if conn is None:
                    conn = await asyncio.open_connection(self.host, self.port)
                reader, writer = conn
                writer.write(request)
                head = (await reader.readuntil(b"\r\n\r\n")).lower()
                length = _header(head, b"content-length")
                await reader.readexactly(int(length or 0))
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
        return int(head[9:12]), _version(_header(head, b"x-modelyard-version"))

    def close(self) -> None:
        while self.idle:
            self.idle.pop()[1].close()


async def run(args: argparse.Namespace, requests: list[bytes], stop: asyncio.Event) -> Recorder:
    url = urlsplit(args.url)
    client = Client(url.hostname or "127.0.0.1", url.port or 80, args.connections, args.timeout)
    rec = Recorder()
    tasks: set[asyncio.Task[None]] = set()
    # One wall-clock reading; later times are monotonic offsets from it, so a clock step
    # during the run does not move them.
    wall, mono = time.time(), time.monotonic()

    async def one(i: int, request: bytes) -> None:
        answer = await client.post(request)
        if answer is not None:
            rec.answered[i] = wall + (time.monotonic() - mono)
            rec.status[i], rec.version[i] = answer

    i, report = 0, mono + 10.0
    while not stop.is_set():
        due = mono + i / args.rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.monotonic()
        if now >= report:
            report += 10.0
            print(
                f"{time.strftime('%H:%M:%S')} started {len(rec.sent)} in flight {len(tasks)} "
                f"connections {client.busy} in use, "
                f"{len(client.idle)} idle",
                file=sys.stderr,
                flush=True,
            )
        at = rec.new(wall + (now - mono), now - due)
        task = asyncio.create_task(one(at, requests[i % len(requests)]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    if tasks:
        await asyncio.wait(tasks, timeout=args.timeout + 1)
    client.close()
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--bodies", required=True, help="a JSON list of request bodies (objects)")
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second")
    ap.add_argument("--connections", type=int, default=256, help="at most this many at once")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    ap.add_argument("--out", required=True, help=".npz file written at the end")
    args = ap.parse_args(argv)
    url = urlsplit(args.url)
    head = (
        f"POST {url.path} HTTP/1.1\r\nhost: {url.netloc}\r\ncontent-type: application/json\r\n"
        "content-length: "
    )
    bodies = [json.dumps(b).encode() for b in json.loads(Path(args.bodies).read_text())]
    requests = [f"{head}{len(b)}\r\n\r\n".encode() + b for b in bodies]

    async def start() -> Recorder:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def wait_for_eof() -> None:
            with contextlib.suppress(OSError):
                sys.stdin.buffer.read()
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=wait_for_eof, daemon=True).start()
        return await run(args, requests, stop)

    try:
        import uvloop
    except ImportError:
        rec = asyncio.run(start())
    else:
        rec = uvloop.run(start())
    np.savez(
        args.out,
        sent=np.array(rec.sent),
        answered=np.array(rec.answered),
        status=np.array(rec.status, dtype=np.int16),
        version=np.array(rec.version, dtype=np.int32),
        late=np.array(rec.late),
    )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    late = np.array(rec.late) * 1000 if rec.late else np.zeros(1)
    print(
        json.dumps(
            {
                "requests": len(rec.sent),
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
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
