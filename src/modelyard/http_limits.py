"""What a client may hold of a server: uvicorn's HTTP/1.1 protocol with timeouts and limits.

uvicorn's httptools protocol closes idle keep-alive connections and nothing else: a client
that sends a header byte a second (slowloris), a body that stalls, a head of any size, or
thousands of connections are served for as long as they like, each holding a socket and
memory. :class:`LimitedHttpProtocol` (``modelyard serve`` and ``modelyard server`` run it;
the gateway's :class:`~modelyard.serving.http_protocol.GatewayHttpProtocol` is one) adds,
per worker, from :class:`~modelyard.config.Settings`:

- **header timeout**: a request's line and headers must have arrived within
  ``header_timeout_seconds`` of its first byte (a new connection's first request: of the
  connection); else 408 and the connection is closed. A connection that never sends a
  byte is closed without an answer.
- **body timeout**: while a body is read, at most ``body_timeout_seconds`` may pass between
  two reads; else 408 and the connection is closed. A pause, not a total: a large upload
  over a slow link goes on as long as bytes keep coming.
- **head size**: a head (request line and headers, with their line ends) that has not ended
  within ``max_header_bytes`` gets 431 and the connection is closed, as soon as that many
  bytes of it arrived. Exact for a head that starts a read (any request but a pipelined one
  behind a body); one that starts in the middle of a read, behind the body of a pipelined
  request, is counted from the next read. So no head within the limit is refused, and a
  head never holds more memory than the limit plus one read.
- **connections**: a connection beyond ``max_connections`` open ones gets 503 with
  ``Retry-After`` to its first request, and is closed.

The answers are problem+json and end the connection (after a short lingering close, so that
a client still sending reads the answer rather than a reset). Time is checked by one timer
per connection at most, armed only while a request is incomplete at the end of a read: a
request that arrives in one read, the common case, costs a few attribute writes.

This leans on ``HttpToolsProtocol`` internals like :mod:`modelyard.serving.http_protocol`
(the parser callbacks, ``cycle``, ``pipeline``, ``flow``), on the same tested versions;
``tests/serving/test_overload.py`` holds it to them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from modelyard.config import Settings
from modelyard.errors import ModelyardError

# What a connection waits for from its client (``LimitedHttpProtocol.phase``).
IDLE = 0
"""A new connection: its first byte."""
HEAD = 1
"""The rest of a request's line and headers."""
BODY = 2
"""The rest of a request's body."""
DONE = 3
"""Nothing: the request is whole (being answered; between requests uvicorn's keep-alive
timeout applies)."""
CLOSING = 4
"""Nothing more: the connection was refused and closes (what still comes is dropped)."""

LINGER_SECONDS = 2.0
"""How long a refused connection keeps reading (and discarding) before it is closed."""


class RequestTimeout(ModelyardError):
    """The client did not send its request in time."""

    status = 408
    title = "Request timeout"


class HeaderTooLarge(ModelyardError):
    """The request line and headers are over the limit."""

    status = 431
    title = "Request header fields too large"


class TooManyConnections(ModelyardError):
    """The worker holds as many connections as it may."""

    status = 503
    title = "Too many connections"


@dataclass(frozen=True)
class HttpLimits:
    """The limits a :class:`LimitedHttpProtocol` enforces (see the module doc)."""

    header_timeout: float
    body_timeout: float
    max_header_bytes: int
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            header_timeout=settings.header_timeout_seconds,
            body_timeout=settings.body_timeout_seconds,
            max_header_bytes=settings.max_header_bytes,
            max_connections=settings.max_connections,
        )


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of the module doc.

    Pass ``LimitedHttpProtocol.for_settings(settings)`` as ``uvicorn.Config(http=...)``.
    Without limits (the class itself, for an app that brings none) it is uvicorn's protocol.
    """

    #: The limits of every connection, set by :meth:`for_settings`; None: :meth:`_limits`.
    limits: ClassVar[HttpLimits | None] = None

    @classmethod
    def for_settings(cls, settings: Settings) -> type[Self]:
        """This protocol with the limits of ``settings``."""
        attributes = {"limits": HttpLimits.from_settings(settings), "__module__": cls.__module__}
        return type(cls.__name__, (cls,), attributes)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http_limits = self._limits()
        #: What the connection waits for from its client: IDLE, HEAD, BODY or DONE. Set by
        #: the parser callbacks; a subclass that answers a request without calling them
        #: sets it too.
        self.phase = IDLE
        self._messages = 0  # requests begun on this connection
        self._head_bytes = 0  # of the head in progress, counted as the module doc says
        self._since = 0.0  # when the wait of the phase began (the head's first read, ...)
        self._watch: asyncio.TimerHandle | None = None
        self._watch_at = 0.0
        self._refused = False  # beyond the connection limit: its first request gets a 503

    def _limits(self) -> HttpLimits | None:
        """The limits of this connection (a subclass may take them from its app)."""
        return self.limits

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self.http_limits
        if limits is None:
            return
        self._refused = len(self.connections) > limits.max_connections
        self._since = self.loop.time()
        self._arm(self._since + limits.header_timeout)

    def data_received(self, data: bytes) -> None:
        limits = self.http_limits
        entry = self.phase
        if entry == DONE and limits is not None and len(data) < limits.max_header_bytes:
            # The common case, inline: a read that starts a request and cannot carry its
            # head past the limit; nothing left to wait for once it is parsed.
            begun = self._messages
            super().data_received(data)
            if self.phase != DONE:
                self._after(data, entry, begun, limits)
            return
        if limits is None:
            super().data_received(data)
            return
        if entry == CLOSING:
            return
        if self._refused:
            self._refuse(
                TooManyConnections(
                    f"this server worker holds {limits.max_connections} connections, its "
                    "limit (MODELYARD_MAX_CONNECTIONS); retry in a second, or reuse "
                    "connections (keep-alive)"
                ),
                "connection_limit",
                retry_after=1,
            )
            return
        limit = limits.max_header_bytes
        while True:
            # A read that could carry a head past the limit is fed in two parts: up to the
            # limit, then the rest (so a head is measured exactly, whatever the reads).
            entry = self.phase
            if entry == BODY:
                room = len(data)
            else:
                room = limit - (self._head_bytes if entry == HEAD else 0)
            if len(data) <= room:
                self._feed(data, entry, limits)
                return
            if not self._feed(data[:room], entry, limits):
                return
            data = data[room:]

    def _feed(self, data: bytes, entry: int, limits: HttpLimits) -> bool:
        """Parse ``data`` (which came while waiting for ``entry``), then check the head's size
        and time the wait for the rest of the request. False once the connection is ending."""
        begun = self._messages
        super().data_received(data)
        return self._after(data, entry, begun, limits)

    def _after(self, data: bytes, entry: int, begun: int, limits: HttpLimits) -> bool:
        """After ``data`` was parsed: check the head's size and time the wait for the rest of
        the request (see :meth:`_feed`)."""
        if self.transport.is_closing():
            return False
        phase = self.phase
        if phase == HEAD:
            if self._messages == begun:  # the same head goes on
                self._head_bytes += len(data)
            else:
                # Begun in this read: at its start after a finished request (or as a new
                # connection's first), else behind a body, counted from the next read.
                at_start = entry in (IDLE, DONE) and self._messages == begun + 1
                self._head_bytes = len(data) if at_start else 0
                if entry != IDLE:  # a new connection's first head is timed from connecting
                    self._since = self.loop.time()
            if self._head_bytes >= limits.max_header_bytes:  # and it has not ended yet
                self._refuse(
                    HeaderTooLarge(
                        f"the request line and headers are over {limits.max_header_bytes} "
                        "bytes (MODELYARD_MAX_HEADER_BYTES): send fewer or shorter headers"
                    ),
                    "header_too_large",
                )
                return False
            self._arm(self._since + limits.header_timeout)
        elif phase == BODY:
            self._since = self.loop.time()
            self._arm(self._since + limits.body_timeout)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        super().connection_lost(exc)

    # -- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.phase = HEAD
        self._messages += 1
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self.phase = BODY
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.phase = DONE
        super().on_message_complete()

    # -- timeouts ---------------------------------------------------------------------------

    def _arm(self, deadline: float) -> None:
        """Have :meth:`_check` run at ``deadline`` at the latest (one timer per connection)."""
        watch = self._watch
        if watch is not None:
            if self._watch_at <= deadline:
                return
            watch.cancel()
        self._watch_at = deadline
        self._watch = self.loop.call_at(deadline, self._check)

    def _check(self) -> None:
        self._watch = None
        phase = self.phase
        limits = self.http_limits
        if phase >= DONE or limits is None or self.transport.is_closing():
            return
        timeout = limits.body_timeout if phase == BODY else limits.header_timeout
        now = self.loop.time()
        if self.flow.read_paused:  # we stopped reading (a pipelined request waits its turn)
            self._since = now
        deadline = self._since + timeout
        if deadline > now:
            self._arm(deadline)
            return
        if phase == IDLE:  # connected and silent: there is no request to answer
            self._count("header_timeout")
            self.transport.close()
            return
        if phase == HEAD:
            detail = (
                f"the request line and headers did not arrive within {timeout:g} s "
                "(MODELYARD_HEADER_TIMEOUT_SECONDS): send them at once"
            )
            self._refuse(RequestTimeout(detail), "header_timeout")
        else:
            detail = (
                f"the request body stalled: nothing arrived for {timeout:g} s "
                "(MODELYARD_BODY_TIMEOUT_SECONDS): send the body without pauses"
            )
            self._refuse(RequestTimeout(detail), "body_timeout")

    # -- refusing ---------------------------------------------------------------------------

    def _refuse(self, exc: ModelyardError, reason: str, retry_after: int | None = None) -> None:
        """Answer ``exc`` as problem+json and close the connection (see the module doc)."""
        phase = self.phase
        self.phase = DONE
        self._count(reason)
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        cycle = self.cycle
        if phase == HEAD and cycle is not None and not cycle.response_complete:
            # An earlier request is still being answered: let that answer out, then close.
            cycle.keep_alive = False
            self.phase = CLOSING
            self.flow.pause_reading()
            return
        if self.pipeline or (phase == BODY and not self._drop_request()):
            self.transport.close()  # an answer is under way: one can't be slipped in
            return
        body = orjson.dumps(exc.problem())
        lines = [STATUS_LINE[exc.status]]
        for name, value in self.server_state.default_headers:
            lines += (name, b": ", value, b"\r\n")
        lines += (
            b"content-type: application/problem+json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n",
        )
        if retry_after is not None:
            lines.append(b"retry-after: %d\r\n" % retry_after)
        lines += (b"\r\n", body)
        self.transport.write(b"".join(lines))
        self._linger()

    def _drop_request(self) -> bool:
        """Detach the request whose body stalled from its handler: False if it has begun
        answering already. The handler sees a disconnected client."""
        cycle: Any = self.cycle
        if cycle is None:
            return True
        if cycle.response_started:
            return False
        cycle.disconnected = True
        cycle.message_event.set()
        return True

    def _linger(self) -> None:
        """Close once the answer is out, still reading (and dropping) what the client sends
        meanwhile: closing a socket with unread data resets it, which can destroy the answer
        before the client reads it."""
        self.phase = CLOSING
        self.flow.resume_reading()
        transport = self.transport
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, transport.close)

    def _count(self, reason: str) -> None:
        """Count a refusal (``header_timeout``, ``body_timeout``, ``header_too_large``,
        ``connection_limit``); a subclass with metrics records it."""


__all__ = [
    "HeaderTooLarge",
    "HttpLimits",
    "LimitedHttpProtocol",
    "RequestTimeout",
    "TooManyConnections",
]
