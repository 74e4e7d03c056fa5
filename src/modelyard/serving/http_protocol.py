"""The gateway's HTTP/1.1 protocol: uvicorn's, with the prediction routes answered directly.

Under uvicorn every request becomes an ASGI scope, a request-response cycle with its own
event, ``receive`` and ``send`` coroutines, and a header check per response header. On this
machine that layer cost about 40 µs of the 55 µs a bare ASGI app spends per request, as
much as the gateway's validation and prediction of a row. :class:`GatewayHttpProtocol`
keeps everything of uvicorn's protocol (parsing, keep-alive and its timeout, pipelining,
flow control, graceful shutdown) and, for an ordinary ``POST`` to ``.../infer`` or
``.../invocations``, collects the body itself, asks :meth:`Gateway.infer` and writes the
answer in one piece.

Anything out of the ordinary takes uvicorn's ASGI path unchanged: a chunked or oversized
body, ``Expect: 100-continue``, a query string or escaped path, an upgrade, uvicorn's
``limit_concurrency`` when it is exceeded (its ASGI path answers the 503), a root path, an
access log. Both paths end in the same :meth:`Gateway.infer`, so they answer alike, and
the limits of :class:`~modelyard.http_limits.LimitedHttpProtocol` (timeouts, head size,
connections), which this protocol is, apply to both.

"An access log" means exactly what makes uvicorn write an access line from its ASGI cycle:
the ``uvicorn.access`` logger has handlers (uvicorn's own test, made per connection) and
is enabled for INFO (made per line). A handler alone is not enough: pytest (9.1 and later)
attaches its capture handlers to every non-propagating logger, which is what uvicorn's
``access_log=False`` makes of ``uvicorn.access``, and an operator's logging set-up may do
the same; with the logger at WARNING no line is written, so no request need go through ASGI
for one. ``modelyard serve`` has no access log.

This leans on uvicorn's ``HttpToolsProtocol`` internals (its parser callbacks, ``cycle``
and ``pipeline``); ``tests/serving/test_http_protocol.py`` holds it to them, on the uvicorn
versions in :data:`TESTED_UVICORN`. On any other version the fast path stays off and the
gateway is uvicorn's protocol with only the HTTP limits added; :func:`fast_path_off` says
why, and a gateway worker says it at start-up.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from modelyard.http_limits import BODY, DONE, HttpLimits, LimitedHttpProtocol
from modelyard.serving.gateway import Gateway
from modelyard.serving.wire import HotRoute, Reply, hot_route, length_over

log = logging.getLogger("modelyard.gateway")

#: The uvicorn minor versions whose ``HttpToolsProtocol`` internals this module is held to:
#: 0.55 by the tests (the lock's), 0.54 by reading its source against 0.55's (the same in
#: everything used here).
TESTED_UVICORN = ("0.54", "0.55")
#: Whether the installed uvicorn is one of those (else every request takes the ASGI path).
UVICORN_TESTED = ".".join(uvicorn.__version__.split(".")[:2]) in TESTED_UVICORN


def fast_path_off(config: uvicorn.Config) -> str | None:
    """Why :class:`GatewayHttpProtocol` under ``config`` would answer no request itself, as
    the logging stands now; None when it answers the ordinary prediction requests.

    The same conditions as the protocol's, per server rather than per request.
    """
    access = logging.getLogger("uvicorn.access")
    if not (isinstance(config.http, type) and issubclass(config.http, GatewayHttpProtocol)):
        return f"the HTTP protocol is {config.http!r}, not the gateway's"
    if not isinstance(config.app, Gateway):
        return "the application is not a Gateway"
    if not UVICORN_TESTED:
        return (
            f"uvicorn {uvicorn.__version__} is not a version it is tested on "
            f"({', '.join(TESTED_UVICORN)})"
        )
    if config.root_path:
        return "uvicorn's root_path is set"
    if access.hasHandlers() and access.isEnabledFor(logging.INFO):
        return "uvicorn's access log is on (logger 'uvicorn.access' has handlers at INFO)"
    return None


class GatewayHttpProtocol(LimitedHttpProtocol):
    """uvicorn's httptools protocol that answers a :class:`Gateway`'s prediction routes.

    Pass it as ``uvicorn.Config(gateway, http=GatewayHttpProtocol)``, with the limits of the
    gateway's settings (or ``http=GatewayHttpProtocol.for_settings(settings)``); with any
    other app it behaves as :class:`~modelyard.http_limits.LimitedHttpProtocol`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        app = self.config.app
        self.gateway = app if isinstance(app, Gateway) and UVICORN_TESTED else None
        if isinstance(app, Gateway):
            app.http_config = self.config  # for its fast-path gauge in /metrics

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # --metrics-address answers /metrics only: through ASGI, where the gateway tells its
        # connections apart by port
        port = self.gateway.metrics_port if self.gateway is not None else None
        if port is not None and self.server is not None and self.server[1] == port:
            self.gateway = None

    def _limits(self) -> HttpLimits | None:
        app = self.config.app
        if self.limits is None and isinstance(app, Gateway):
            return HttpLimits.from_settings(app.ws.settings)
        return self.limits

    def on_headers_complete(self) -> None:
        fast = self._fast_request()
        if fast is None:
            super().on_headers_complete()
            return
        self.phase = BODY
        route, headers = fast
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        cycle = _Cycle(self, route, headers, keep_alive)
        existing = self.cycle
        self.cycle = cycle  # type: ignore[assignment]
        if existing is None or existing.response_complete:
            cycle.start()
        else:  # pipelined behind an unfinished answer: uvicorn starts it when that one ends
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, None))  # type: ignore[arg-type]

    def _fast_request(self) -> tuple[HotRoute, dict[bytes, bytes]] | None:
        """The route and headers of a request this protocol answers itself, else None."""
        gateway = self.gateway
        if (
            gateway is None
            # uvicorn writes access lines from its ASGI cycle only: exactly when it would
            # write one (its per-connection test, then the logger's level, as it does)
            or (self.access_log and self.access_logger.isEnabledFor(logging.INFO))
            or self.expect_100_continue
            or (  # over uvicorn's concurrency limit: its ASGI path answers the 503
                self.limit_concurrency is not None
                and (
                    len(self.connections) >= self.limit_concurrency
                    or len(self.tasks) >= self.limit_concurrency
                )
            )
            or self.root_path
            or self.parser.get_method() != b"POST"
            or b"?" in self.url
            or b"%" in self.url
            or self.parser.should_upgrade()
        ):
            return None
        try:
            route = hot_route(self.url.decode("ascii"))
        except UnicodeDecodeError:
            return None
        if route is None:
            return None
        headers = dict(self.headers)
        length = headers.get(b"content-length")
        if (
            length is None  # chunked, or no body: ASGI reads it, or says what is missing
            or not length.isdigit()
            or length_over(length, gateway.max_body)
            or b"transfer-encoding" in headers
        ):
            return None
        return route, headers

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        # uvicorn calls this for a pipelined request once the one before it is answered.
        if type(cycle) is _Cycle:
            cycle.start()
        else:
            super()._start_asgi_task(cycle, app)

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle) is _Cycle:
            cycle.body += body  # bounded: its Content-Length is within the gateway's limit
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if type(cycle) is _Cycle:
            self.phase = DONE
            cycle.complete()
        else:
            super().on_message_complete()

    def _drop_request(self) -> bool:
        if type(self.cycle) is _Cycle:  # its body never came: it has no task to stop
            self.cycle = None
            return True
        return super()._drop_request()

    def _count(self, reason: str) -> None:
        app = self.config.app
        if isinstance(app, Gateway):
            app.metrics.rejected.inc(reason)

    def connection_lost(self, exc: Exception | None) -> None:
        cycle = self.cycle
        if type(cycle) is _Cycle:
            cycle.disconnected = not cycle.response_complete
            gateway = self.gateway
            if not cycle.received and gateway is not None:  # gone halfway through its body
                label = gateway.metric_label(cycle.route[0])
                gateway.metrics.errors.inc(label, "client_disconnected")
            self.cycle = None  # uvicorn must not touch a cycle that is not its own
        super().connection_lost(exc)


class _Cycle:
    """One prediction request on a connection: its body, then its answer.

    Carries the attributes uvicorn's protocol reads on whatever ``cycle`` it holds
    (``response_complete``, ``keep_alive``) so that shutdown and pipelining treat it like
    uvicorn's own cycle.
    """

    __slots__ = (
        "body",
        "disconnected",
        "headers",
        "keep_alive",
        "protocol",
        "received",
        "response_complete",
        "route",
        "started",
    )

    def __init__(
        self,
        protocol: GatewayHttpProtocol,
        route: HotRoute,
        headers: dict[bytes, bytes],
        keep_alive: bool,
    ) -> None:
        self.protocol = protocol
        self.route = route
        self.headers = headers
        self.keep_alive = keep_alive
        self.body = bytearray()
        self.started = False  # its turn on the connection has come
        self.received = False  # the whole body is in
        self.disconnected = False
        self.response_complete = False

    def start(self) -> None:
        self.started = True
        if self.received:
            self._run()

    def complete(self) -> None:
        self.received = True
        if self.started:
            self._run()

    def _run(self) -> None:
        tasks = self.protocol.server_state.tasks
        task = self.protocol.loop.create_task(self._answer())
        task.add_done_callback(tasks.discard)
        tasks.add(task)

    async def _answer(self) -> None:
        protocol = self.protocol
        assert protocol.gateway is not None
        try:
            reply = await protocol.gateway.infer(self.route, self.headers, bytes(self.body))
        except asyncio.CancelledError:  # shutdown's grace period is over
            protocol.transport.close()
            raise
        except Exception:  # infer answers its own failures as problem+json: this is a bug
            log.exception("the gateway failed to answer a request")
            protocol.transport.close()
            return
        assert reply is not None  # only a body read from ASGI can go missing
        if protocol.flow.write_paused and not self.disconnected:
            await protocol.flow.drain()
        if self.disconnected:  # the client went away while its answer was computed
            return
        protocol.transport.write(self._encode(reply))
        self.response_complete = True
        if not self.keep_alive:
            protocol.transport.close()
        protocol.on_response_complete()

    def _encode(self, reply: Reply) -> bytes:
        protocol = self.protocol
        assert protocol.gateway is not None
        lines = [STATUS_LINE[reply.status]]
        for name, value in protocol.server_state.default_headers:
            lines += (name, b": ", value, b"\r\n")
        for name, value in reply.headers(protocol.gateway.worker):
            lines += (name, b": ", value, b"\r\n")
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
        lines += (b"\r\n", reply.body)
        return b"".join(lines)


__all__ = ["TESTED_UVICORN", "GatewayHttpProtocol", "fast_path_off"]
