"""Running modelyard's ASGI applications on every core, each worker with its own socket.

With ``uvicorn --workers`` all workers accept from one shared socket, and under keep-alive
load the kernel may hand every connection to the same worker while the others idle (seen
with ``mlflow models serve -w 2``). Here each worker binds its own socket with
SO_REUSEPORT, so the kernel spreads new connections across workers by hash.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
from typing import Any, Literal

from modelyard.config import Settings

Role = Literal["control", "gateway", "both"]


def _socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker if its parent dies, even by SIGKILL (no orphans)."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def _child(settings: Settings, host: str, port: int, role: Role, log_level: str) -> None:
    _die_with_parent()
    run_worker(settings, host, port, role, log_level)


def run_worker(settings: Settings, host: str, port: int, role: Role, log_level: str) -> None:
    """Serve ``role`` in this process until SIGTERM (graceful) or SIGINT."""
    import uvicorn

    # A request thread holding a database lock must win the GIL back quickly after each
    # round trip; with CPython's default 5 ms switch interval, threads busy parsing other
    # requests keep it waiting, and everyone queued on that lock waits too.
    sys.setswitchinterval(0.0005)

    from modelyard.workspace import Workspace

    ws = Workspace.open(settings, migrate=False)
    from modelyard.api.app import create_app

    control = create_app(workspace=ws) if role != "gateway" else None
    app: Any = control
    if role != "control":
        from modelyard.serving.gateway import Gateway

        app = Gateway(ws, control_plane=control)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=30,
        http="httptools",
        loop="uvloop",
    )
    try:
        uvicorn.Server(config).run(sockets=[_socket(host, port)])
    finally:
        ws.close()


def run(
    settings: Settings,
    host: str,
    port: int,
    *,
    role: Role,
    workers: int = 0,
    log_level: str = "warning",
) -> None:
    """Run ``workers`` processes (0: one per core) serving ``role`` on ``host:port``.

    SIGTERM stops accepting, lets in-flight requests finish and flushes what must be
    flushed (the prediction log) before the processes exit.
    """
    from modelyard.workspace import Workspace

    Workspace.open(settings).close()  # migrate once, before the workers could race to
    count = workers or os.cpu_count() or 1
    if count == 1:
        run_worker(settings, host, port, role, log_level)
        return
    # Import once here and fork: the workers inherit the loaded modules instead of each
    # importing them again, which roughly halves the cold start on two cores. Nothing has
    # started a thread or an event loop yet, so forking is safe.
    import modelyard.api.app
    import modelyard.serving.gateway  # noqa: F401

    ctx = multiprocessing.get_context("fork")
    children = [
        ctx.Process(
            target=_child,
            args=(settings, host, port, role, log_level),
            name=f"modelyard-{role}-{i}",
        )
        for i in range(count)
    ]
    for child in children:
        child.start()

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        child.join()
    if any(c.exitcode not in (0, -signal.SIGTERM) for c in children):
        sys.exit(1)
