"""The HTTP ceiling: a raw ASGI callable that answers every request with a fixed small JSON
body. It drains the request body (so keep-alive stays correct) but parses nothing.

Run it the way ``modelyard serve`` runs its gateway, so that "÷ bare" compares equal process
counts and equal connection spreading:

    python bench/serving/bare_asgi.py --host 127.0.0.1 --port 8000 --workers 2

With ``--workers N`` > 1 the parent imports uvicorn, uvloop and httptools, binds N sockets to
the same address with SO_REUSEPORT (as ``modelyard.server._socket`` does) and forks N workers,
each serving its own socket with uvicorn (uvloop, httptools, no access log); the parent only
waits for them and forwards SIGTERM/SIGINT. Not ``uvicorn --workers N``: there all workers
accept from one shared socket, and under keep-alive load the kernel may hand every
connection to one worker while the others idle (seen with ``mlflow models serve -w 2``,
shared/PEERS.md); SO_REUSEPORT spreads new connections across the workers' sockets by hash,
as it does for modelyard. With ``--workers 1`` the one process serves by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket

BODY = b'{"predictions": [0]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
START = {"type": "http.response.start", "status": 200, "headers": HEADERS}
END = {"type": "http.response.body", "body": BODY}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:  # drain, do not parse
        msg = await receive()
        more = msg.get("more_body", False)
    await send(START)
    await send(END)


def _socket(host: str, port: int) -> socket.socket:
    """Bound beside the other workers' sockets (SO_REUSEPORT); uvicorn listens on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _serve(sock: socket.socket) -> None:
    import uvicorn

    config = uvicorn.Config(
        app, loop="uvloop", http="httptools", access_log=False, log_level="warning"
    )
    uvicorn.Server(config).run(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="bare ASGI app on N SO_REUSEPORT workers")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    # Imported before forking, as modelyard's parent preloads: the workers share the pages.
    import httptools  # noqa: F401
    import uvicorn  # noqa: F401
    import uvloop  # noqa: F401

    socks = [_socket(args.host, args.port) for _ in range(max(1, args.workers))]
    if len(socks) == 1:
        _serve(socks[0])
        return 0
    pids = []
    for i, sock in enumerate(socks):
        pid = os.fork()
        if pid == 0:
            for other in socks[:i] + socks[i + 1 :]:
                other.close()
            code = 1
            try:
                _serve(sock)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for s in socks:
        s.close()

    def forward(signum: int, _frame: object) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        code = code or abs(os.waitstatus_to_exitcode(status))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
