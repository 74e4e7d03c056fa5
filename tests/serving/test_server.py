"""modelyard.server's pieces that need no process: the control plane built in the background."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from modelyard.server import LazyApp, _freeze_when_settled, _socket


def test_lazy_app_is_built_once_in_a_thread_and_early_requests_wait_for_it() -> None:
    builds: list[str] = []
    answered: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        answered.append(scope["path"])

    def build() -> Any:
        time.sleep(0.2)  # an import that takes a while
        builds.append(threading.current_thread().name)
        return app

    async def main() -> None:
        lazy = LazyApp(build)
        # A request before anyone asked for the app: it starts the build and waits for it.
        first = asyncio.create_task(lazy({"path": "/a"}, None, None))
        await asyncio.sleep(0.05)
        assert not answered  # still building, and the event loop was free meanwhile
        assert lazy.load() is lazy.load()  # one build, whoever asks
        await asyncio.gather(first, lazy({"path": "/b"}, None, None))
        await lazy({"path": "/c"}, None, None)

    asyncio.run(main())
    assert builds == ["modelyard-lazy-app"]
    assert answered == ["/a", "/b", "/c"]


def test_a_failed_build_reaches_the_request() -> None:
    def build() -> Any:
        raise RuntimeError("no control plane today")

    async def main() -> None:
        with pytest.raises(RuntimeError, match="no control plane"):
            await LazyApp(build)({"path": "/"}, None, None)

    asyncio.run(main())


def test_what_a_worker_loads_after_it_listens_is_frozen_once_it_has_settled() -> None:
    """The metadata store loads after a gateway worker listens; its objects must leave the
    collector's oldest generation (each full collection walked them while holding the GIL),
    but only once it is loaded."""
    gc.freeze()  # everything before the test: not the test's business
    before = gc.get_freeze_count()
    gateway = SimpleNamespace(settled=threading.Event())
    try:
        _freeze_when_settled(gateway)  # type: ignore[arg-type]
        store = [[i] for i in range(20_000)]  # the store's objects (lists: tracked)
        time.sleep(0.2)
        # Frozen objects that die leave the count, so compare with half of what was made.
        half = before + len(store) // 2
        assert gc.get_freeze_count() < half  # the gateway has not settled yet
        gateway.settled.set()
        deadline = time.monotonic() + 10
        while gc.get_freeze_count() < half:
            assert time.monotonic() < deadline, "nothing was frozen after the gateway settled"
            time.sleep(0.02)
    finally:
        gc.unfreeze()


def test_a_lazy_app_is_not_built_until_asked_and_freezes_what_it_built() -> None:
    """The control plane of a gateway worker (role both) is built on its first request only;
    its objects then leave the collector's oldest generation too."""
    builds: list[int] = []

    def build() -> Any:
        builds.append(1)
        return [[i] for i in range(20_000)]  # the control plane's objects

    gc.freeze()
    before = gc.get_freeze_count()
    try:
        lazy = LazyApp(build)
        time.sleep(0.1)
        assert not builds and not lazy.built
        app = lazy.load().result(10)
        assert builds == [1] and lazy.built
        assert gc.get_freeze_count() >= before + len(app) // 2
    finally:
        gc.unfreeze()


def test_worker_socket_is_bound_but_not_listening() -> None:
    import socket

    sock = _socket("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):  # nobody is listening yet
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        sock.listen(8)  # what the event loop does once the worker is ready
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        sock.close()


def test_the_way_to_a_first_answer_imports_no_heavy_library() -> None:
    """Cold start: `modelyard serve` and a gateway worker loading an ONNX model need neither
    pandas, scipy, the client, the other commands, Starlette's router nor Prometheus's
    client; they cost ~1.5 s of imports here."""
    import subprocess
    import sys

    code = """
import sys
from modelyard.cli.main import app, load_command
load_command("serve")
import modelyard.server, modelyard.workspace
modelyard.server._preload("both")
import modelyard.formats.onnx_runtime
heavy = sorted(
    name for name in ("pandas", "scipy", "sklearn", "fastapi", "modelyard.client", "rich",
                      "modelyard.cli.models", "pyarrow.compute", "starlette",
                      "prometheus_client")
    if name in sys.modules
)
print(",".join(heavy))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
