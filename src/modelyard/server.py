"""Running modelyard's ASGI applications on every core, each worker with its own socket.

With ``uvicorn --workers`` all workers accept from one shared socket, and under keep-alive
load the kernel may hand every connection to the same worker while the others idle (seen
with ``mlflow models serve -w 2``). Here each worker binds its own socket with
SO_REUSEPORT, so the kernel spreads new connections across workers by hash.

Start-up is ordered for the first answer (cold start):

- The parent imports what a gateway worker needs before it can answer, then forks; the
  workers inherit those modules instead of each importing them (and share their pages).
  Not what a worker imports after it listens: SQLAlchemy and the table definitions would
  save ~19 MiB per worker but put ~0.5 s of imports before the first answer, and importing
  onnxruntime starts a native thread, after which forking is not known to be safe.
- A worker's socket is bound at once but listens only once the worker knows its endpoints
  (from the plan cache, else the registry): until then the kernel gives new connections to
  the workers that listen. The models then load in the background, several endpoints at
  once, each endpoint ready on its own; a request to one still loading waits for that load
  (which starts at once if its turn has not come), at most its timeout, then gets a 503
  with Retry-After (see serving/gateway.py). ``/v2/health/ready`` answers 200 once every
  endpoint has loaded (or failed to).
- In the gateway workers the control-plane API (FastAPI, every domain's router, the
  dashboard, and pandas which the dashboard's monitoring pages import: ~95 MiB and ~3 s of
  imports per worker here) is not needed for predictions. A worker builds it on its first
  control-plane request only, in a background thread; that request, and those arriving
  meanwhile, wait for it (the event loop does not). Building it eagerly in every worker
  doubled the memory of an idle 2-worker tree serving an ONNX model (PSS 376 -> ~230 MiB
  without it, with the other changes of bench/serving/memory.py); building it in one worker
  only cannot work, as the kernel, not modelyard, picks the worker of each connection
  (SO_REUSEPORT). ``modelyard_control_plane_built`` on ``/metrics`` tells whether a worker
  has built it.

Memory stays near the floor in steady state: a prediction-log segment's Arrow and malloc
memory is given back after it is written (monitoring/heap.py), and the loops process runs
each monitor pass, which imports pandas and scipy and reads the log, in a short-lived child
(:func:`_run_loops`, monitoring/loop.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Literal

import uvicorn

from modelyard.config import Settings
from modelyard.errors import Conflict, InvalidInput
from modelyard.supervisor import Supervisor

if TYPE_CHECKING:
    from modelyard.forkserver import ForkServer
    from modelyard.serving.gateway import Gateway
    from modelyard.workspace import Workspace

log = logging.getLogger("modelyard.server")

Role = Literal["control", "gateway", "both"]
#: Seconds of a worker's shutdown grace kept for flushing the prediction log and exiting.
FLUSH_BUDGET = 10.0
ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def ensure_free(host: str, port: int) -> None:
    """Refuse to start on an address that another process already listens on.

    The workers bind with SO_REUSEPORT, so on a held port the kernel would split the
    connections between this server and the other one without a word. A plain bind (with
    SO_REUSEADDR only, so that connections of an earlier run still in TIME_WAIT do not count)
    fails on any listening socket, with or without SO_REUSEPORT.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise InvalidInput(f"cannot bind {host}:{port}: {exc.strerror}") from None
            raise Conflict(
                f"{host}:{port} is already in use by another process (a modelyard server or "
                f"serve started earlier?): stop it, or start this one with --port "
                f"(see who holds it: ss -ltnp 'sport = :{port}')"
            ) from None


def _socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` beside the other workers' (SO_REUSEPORT).

    It is not listening yet: the event loop listens when uvicorn starts serving on it, after
    the application's start-up, so no connection waits on a worker that does not know its
    endpoints yet.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class LazyApp:
    """An ASGI app built on first need, in a background thread (or ahead of it by :meth:`load`).

    Requests that arrive before it is built wait for it (without blocking the event loop).
    """

    def __init__(self, build: Callable[[], ASGIApp]) -> None:
        self._build = build
        self._app: ASGIApp | None = None
        self._future: concurrent.futures.Future[ASGIApp] | None = None
        self._lock = threading.Lock()

    def load(self) -> concurrent.futures.Future[ASGIApp]:
        """Start building the app in a daemon thread (once); its future."""
        with self._lock:
            if self._future is None:
                self._future = concurrent.futures.Future()
                threading.Thread(target=self._run, name="modelyard-lazy-app", daemon=True).start()
            return self._future

    @property
    def built(self) -> bool:
        """Whether the app has been built (it is not, until something asked for it)."""
        return self._app is not None

    def _run(self) -> None:
        assert self._future is not None
        try:
            app = self._build()
        except BaseException as exc:
            self._future.set_exception(exc)
            return
        # What the build imported lives as long as the process: out of the collector's
        # way, as everything loaded before serving is (see run_worker)
        gc.freeze()
        self._app = app
        self._future.set_result(app)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        app = self._app
        if app is None:
            app = await asyncio.wrap_future(self.load())
        await app(scope, receive, send)


def _freeze_when_settled(gateway: Gateway, timeout: float = 300.0) -> None:
    """Freeze the garbage collector's objects again once a gateway worker has loaded what it
    loads after it listens: the metadata store (after a start from the plan cache). The
    control plane, built on its first request (role ``both``), freezes its own (LazyApp).

    Those are some 150,000 long-lived objects. Left in the collector's oldest generation, each
    full collection walked them while holding the GIL: 80-100 ms pauses, several times a
    minute under load, which were most of the gateway's p99 latency.
    """

    def wait_then_freeze() -> None:
        gateway.settled.wait(timeout)
        gc.freeze()

    threading.Thread(target=wait_then_freeze, name="modelyard-gc-freeze", daemon=True).start()


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker if its parent dies, even by SIGKILL (no orphans)."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def _child(
    settings: Settings, host: str, port: int, role: Role, log_level: str, restarts: Any
) -> None:
    _die_with_parent()
    run_worker(settings, host, port, role, log_level, loops=False, restarts=restarts)


def _run_loops(settings: Settings) -> None:
    """The monitor and trigger loops (see :class:`_Loops`) in a process beside the workers,
    until SIGTERM or SIGINT. Not in the supervising parent, which must stay single-threaded
    to fork replacement workers safely (see supervisor.py).

    The monitor's passes run in short-lived children of a fork server made here, while this
    process still has one thread (see monitoring/loop.py): what a pass loads goes away with
    its child. What every pass needs is imported first, so the children share it.
    """
    import modelyard.monitoring.loop
    import modelyard.monitoring.service
    import modelyard.pipelines.triggers
    import modelyard.rollouts.service
    import modelyard.store.tables  # noqa: F401
    from modelyard.forkserver import ForkServer
    from modelyard.workspace import Workspace

    _die_with_parent()
    with contextlib.suppress(OSError):
        os.nice(10)  # serving first: the monitor takes what CPU the workers leave
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    fork_server = None
    if settings.monitor_interval_seconds > 0:
        gc.freeze()  # the template and the passes share these pages: leave them untouched
        try:
            fork_server = ForkServer()
        except (OSError, RuntimeError):  # the passes run here instead, as with one worker
            log.warning("cannot fork the monitor's passes; they run in process", exc_info=True)
    service = _Loops(Workspace.open(settings, migrate=False), fork_server=fork_server)
    service.start_later(_loops_delay(settings))
    try:
        stop.wait()
    finally:
        service.stop()
        service.ws.close()


def _restarts_metric(restarts: Any) -> Callable[[], list[Any]]:
    """``modelyard_worker_restarts_total`` at scrape time, from the supervisor's shared count."""

    def collect() -> list[Any]:
        from prometheus_client.core import CounterMetricFamily

        return [
            CounterMetricFamily(
                "modelyard_worker_restarts",
                "Worker processes the supervisor replaced after they died",
                value=restarts.value,
            )
        ]

    return collect


def _control_plane(ws: Workspace) -> ASGIApp:
    from modelyard.api.app import create_app

    return create_app(workspace=ws)


def _control_plane_metric(lazy: LazyApp) -> Callable[[], list[Any]]:
    """``modelyard_control_plane_built``: 1 once this worker has built the control plane."""

    def collect() -> list[Any]:
        from prometheus_client.core import GaugeMetricFamily

        return [
            GaugeMetricFamily(
                "modelyard_control_plane_built",
                "1 once this gateway worker has built the control-plane API (on its first "
                "control-plane request), else 0",
                value=1 if lazy.built else 0,
            )
        ]

    return collect


def run_worker(
    settings: Settings,
    host: str,
    port: int,
    role: Role,
    log_level: str,
    *,
    loops: bool = True,
    restarts: Any = None,
) -> None:
    """Serve ``role`` in this process until SIGTERM (graceful) or SIGINT.

    ``loops``: also run the monitor and trigger loops here (a single-process server; with
    several workers the parent runs them, see :func:`run`).
    """
    # Control plane: a request thread holding a database lock must win the GIL back quickly
    # after each round trip; with CPython's default 5 ms switch interval, threads busy
    # parsing other requests keep it waiting, and everyone queued on that lock waits too.
    # A gateway keeps the default: its requests run on the event loop's thread, and forcing
    # that thread to hand the GIL to a background thread (the prediction log's writer) every
    # 0.5 ms cost ~10% more CPU per prediction here.
    if role == "control":
        sys.setswitchinterval(0.0005)

    from modelyard.workspace import Workspace

    ws = Workspace.open(settings, migrate=False)
    app: Any
    http: Any
    lazy: LazyApp | None = None
    gateway: Gateway | None = None
    if role == "control":
        from modelyard.http_limits import LimitedHttpProtocol

        app = _control_plane(ws)
        # uvicorn's httptools protocol with header and body timeouts, a header size limit
        # and a connection limit (see http_limits.py)
        http = LimitedHttpProtocol.for_settings(settings)
    else:
        from modelyard.serving.gateway import Gateway
        from modelyard.serving.http_protocol import GatewayHttpProtocol

        if role == "both":
            lazy = LazyApp(lambda: _control_plane(ws))
        app = gateway = Gateway(ws, control_plane=lazy, load_before_serving=False)
        if lazy is not None:
            gateway.metrics.add_collector(_control_plane_metric(lazy))
        if restarts is not None:  # a supervised worker (see run)
            gateway.metrics.add_collector(_restarts_metric(restarts))
        http = GatewayHttpProtocol.for_settings(settings)  # the HTTP limits of http_limits.py
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level=log_level,
        access_log=False,
        # In-flight requests get the supervisor's grace less what flushing the prediction log
        # and exiting need, so a drained worker is not killed before it has flushed.
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_seconds - FLUSH_BUDGET)),
        # A gateway answers its prediction routes without ASGI (see serving/http_protocol.py).
        http=http,
        loop="uvloop",
        ws="none",  # no websocket routes: do not import a websocket implementation
        # Nothing here reads the client address or scheme that X-Forwarded-* would rewrite;
        # without the middleware every request skips one ASGI layer.
        proxy_headers=False,
    )
    if gateway is not None:
        _say_whether_fast(config)
    service = _Loops(ws) if loops and _Loops.wanted(settings, role) else None

    def on_serving() -> None:
        # The control plane (role "both") is not built here: see the module documentation.
        if service is not None:
            service.start_later(_loops_delay(settings))
        if gateway is not None:
            _freeze_when_settled(gateway)

    server = _Server(config, on_serving=on_serving)
    # Everything loaded so far lives as long as the process: keep the garbage collector from
    # walking it again and again (and, in a forked worker, from touching the pages it shares
    # with its parent).
    gc.freeze()
    sockets = [_socket(host, port)]
    metrics = settings.metrics_host_port
    if metrics is not None and role != "control":  # the gateway tells it apart by its port
        sockets.append(_socket(*metrics))
    try:
        server.run(sockets=sockets)
    finally:
        if service is not None:
            service.stop()
        ws.close()


def _say_whether_fast(config: uvicorn.Config) -> None:
    """One line: whether a gateway worker answers its prediction routes without ASGI, and if
    not, why (see serving/http_protocol.py). After ``uvicorn.Config`` has set up logging."""
    from modelyard.serving.http_protocol import fast_path_off

    reason = fast_path_off(config)
    if reason is None:
        log.info("gateway fast path on: prediction requests are answered without ASGI")
    else:
        log.warning("gateway fast path off, every request goes through ASGI: %s", reason)


def _loops_delay(settings: Settings) -> float:
    """Seconds after serving begins before the loops start: nothing on the way to a first
    answer (a shorter interval, as tests set, starts them sooner)."""
    interval = settings.monitor_interval_seconds or settings.rollout_interval_seconds
    return min(5.0, interval)


class _Loops:
    """The monitor, the trigger poller and the rollout controller, in background threads.

    With several workers a process of their own runs them (:func:`_run_loops`), at a lower
    CPU priority: a monitor pass is seconds of Python (profiles, drift), which in a gateway
    worker would take the GIL from its event loop in the middle of requests. A
    single-process server runs them itself. Database leases let one process act at a time
    (several servers may share a database). They start a few seconds after serving begins,
    so they cost nothing on the way to the first answer.
    """

    @staticmethod
    def wanted(settings: Settings, role: Role) -> bool:
        return role != "gateway" and (
            settings.monitor_interval_seconds > 0 or settings.rollout_interval_seconds > 0
        )

    def __init__(self, ws: Any, *, fork_server: ForkServer | None = None) -> None:
        self.ws = ws
        #: Where the monitor's passes run (None: in this process).
        self.fork_server = fork_server
        self._stops: list[Callable[[], object]] = []
        self._timer: threading.Timer | None = None

    def start_later(self, delay: float) -> None:
        self._timer = threading.Timer(delay, self._start)
        self._timer.daemon = True
        self._timer.start()

    def _start(self) -> None:
        from modelyard.monitoring.loop import ForkedMonitor, MonitorLoop
        from modelyard.pipelines.triggers import TriggerLoop
        from modelyard.rollouts.service import RolloutLoop

        settings = self.ws.settings
        if settings.monitor_interval_seconds > 0:
            interval = settings.monitor_interval_seconds
            trigger_service = self.ws.pipelines.triggers
            if self.fork_server is None:
                monitor = MonitorLoop(self.ws.monitoring, interval)
            else:
                # The alerts a forked pass opens reach no subscriber here: the alert triggers
                # are polled after it instead, as the subscription below would have.
                forked = ForkedMonitor(
                    self.ws,
                    self.fork_server,
                    on_alerts=lambda: trigger_service.poll(kinds=("alert",)),
                )
                monitor = MonitorLoop(forked, interval)
            triggers = TriggerLoop(trigger_service, interval)
            self._stops += [self.ws.pipelines.triggers.subscribe_alerts(), monitor.stop]
            self._stops.append(triggers.stop)
            monitor.start()
            triggers.start()
        if settings.rollout_interval_seconds > 0:
            rollouts = RolloutLoop(self.ws.rollouts, settings.rollout_interval_seconds)
            self._stops.append(rollouts.stop)
            rollouts.start()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.fork_server is not None:  # a pass under way is dropped (passes are redone)
            self.fork_server.close()
        for stop in self._stops:
            stop()


class _Server(uvicorn.Server):
    """uvicorn's server, calling ``on_serving`` once it listens."""

    def __init__(self, config: uvicorn.Config, on_serving: Callable[[], object] | None) -> None:
        super().__init__(config)
        self.on_serving = on_serving

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.on_serving is not None and not self.should_exit:
            self.on_serving()


def _preload(role: Role) -> None:
    import uvicorn.lifespan.on
    import uvicorn.loops.uvloop
    import uvicorn.protocols.http.httptools_impl
    import uvicorn.server  # noqa: F401

    if role == "control":
        import modelyard.api.app
        import modelyard.http_limits
    else:
        import modelyard.serving.gateway
        import modelyard.serving.http_protocol  # noqa: F401


def _refresh_plans(settings: Settings) -> None:
    """Make the gateway's plan cache current before forking (see serving/plans.py).

    With current plans every worker starts from them; otherwise each would import the
    metadata store's modules and resolve every endpoint itself, at the same time, on the
    same cores. Here that happens once, and the workers inherit the imported modules.
    """
    from modelyard.serving import plans
    from modelyard.workspace import Workspace

    if plans.read(settings) is not None:
        return
    ws = Workspace.open(settings, migrate=False)
    try:
        plans.refresh(ws)
    except Exception:  # the workers resolve for themselves, and say what is wrong
        log.warning("could not resolve the endpoints before starting the workers", exc_info=True)
    finally:
        ws.close()


def _log_to_stderr(level: str) -> None:
    """Show modelyard's own log lines (a worker restarted, a client gone) on stderr from
    ``level`` up, unless logging was configured already. The workers inherit it."""
    logger = logging.getLogger("modelyard")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    number = logging.getLevelName(level.upper())
    logger.setLevel(number if isinstance(number, int) else logging.DEBUG)  # uvicorn's "trace"


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
    flushed (the prediction log) before the processes exit. With several workers this
    process supervises them: one that dies is replaced (see supervisor.py).
    """
    from modelyard.store.schema import sqlite_at_head
    from modelyard.workspace import Workspace

    _log_to_stderr(log_level)
    ensure_free(host, port)
    metrics = settings.metrics_host_port if role != "control" else None
    if metrics is not None:
        if metrics[1] == port:
            raise InvalidInput(
                f"the metrics address {settings.metrics_address} must use another port than "
                f"the gateway ({port})"
            )
        ensure_free(*metrics)
    # Migrate once, before the workers could race to. A SQLite file already at the newest
    # revision is recognised without SQLAlchemy, which the workers may not need before
    # their first answer (see serving/plans.py).
    if not sqlite_at_head(settings.resolved_database_url):
        Workspace.open(settings).close()
    count = workers or os.cpu_count() or 1
    if role != "control" and count > 1:
        _refresh_plans(settings)
    if count == 1:
        run_worker(settings, host, port, role, log_level)
        return
    # Import once here and fork: the workers inherit the loaded modules instead of each
    # importing them again. Only what a worker needs before its first answer: the control
    # plane of a gateway worker is built after it listens (LazyApp). Nothing has started an
    # event loop yet, so forking is safe.
    _preload(role)
    gc.freeze()  # as in run_worker: for the parent's own collections, and shared pages

    supervisor = Supervisor(
        multiprocessing.get_context("fork"), grace=settings.shutdown_grace_seconds
    )
    for i in range(count):
        args = (settings, host, port, role, log_level, supervisor.restarts)
        supervisor.add(f"modelyard-{role}-{i}", _child, *args)
    if _Loops.wanted(settings, role):
        supervisor.add("modelyard-loops", _run_loops, settings)
    if supervisor.run() != 0:
        sys.exit(1)
