"""A prediction request and its reply as they are on the wire, before the gateway decides
anything: the route a POST is for, the headers it may carry, its body, the errors both
transports answer, and the :class:`Reply` either writes."""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, NamedTuple

from modelyard.errors import BadRequest, ModelyardError, PayloadTooLarge, Unauthenticated
from modelyard.store.schema import MAX_INTEGER

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PROBLEM = b"application/problem+json"
JSON = b"application/json"
BAD_REQUEST_ID = (
    "X-Request-Id must be 1 to 128 printable ASCII characters (letters, digits, '-', '_', "
    "...); leave it out and the gateway makes one"
)


class ModelFailed(ModelyardError):
    """The model raised while predicting; the gateway keeps serving everything else."""

    status = 500
    title = "Model failed"


class InternalError(ModelyardError):
    """Something failed in the gateway itself (a bug): answered as problem+json, and logged."""

    status = 500
    title = "Internal error"


class NotReady(ModelyardError):
    """The endpoint exists but its model is not loaded (yet), or it took too long."""

    status = 503
    title = "Not ready"


class MethodNotAllowed(ModelyardError):
    """A route the gateway serves, asked with a method it does not answer."""

    status = 405
    title = "Method not allowed"

    def __init__(self, detail: str, allow: str = "POST") -> None:
        super().__init__(detail)
        self.allow = allow  # the Allow header


# A prediction route: endpoint name (None: MLflow's bare /invocations), protocol, version.
HotRoute = tuple[str | None, str, int | None]
#: A version in a URL: ASCII digits, as many as a registry version can have (1 to
#: MAX_INTEGER); more would be no version, and would cost int() dearly.
VERSION_DIGITS = len(str(MAX_INTEGER))


def valid_request_id(text: str) -> bool:
    """Whether a client's request id (``X-Request-Id``, OIP's ``id``) may be used: 1 to 128
    printable ASCII characters, as it goes back in a response header and into the
    prediction log."""
    return 0 < len(text) <= 128 and text.isascii() and text.isprintable()


def version_number(text: str) -> int | None:
    """The version a URL names (1 to MAX_INTEGER in ASCII digits), else None."""
    if 0 < len(text) <= VERSION_DIGITS and text.isascii() and text.isdigit():
        number = int(text)
        if 0 < number <= MAX_INTEGER:
            return number
    return None


def hot_route(path: str) -> HotRoute | None:
    """The prediction route a POST to ``path`` is for; None for every other route."""
    if path.endswith("/infer") and path.startswith("/v2/models/"):
        parts = path[len("/v2/models/") : -len("/infer")].split("/")
        if len(parts) == 1:
            return parts[0], "v2", None
        if len(parts) == 3 and parts[1] == "versions":
            version = version_number(parts[2])
            if version is not None:
                return parts[0], "v2", version
    elif path == "/invocations":
        return None, "mlflow", None
    elif path.endswith("/invocations") and path.startswith("/endpoints/") and path.count("/") == 3:
        return path[len("/endpoints/") : -len("/invocations")], "mlflow", None
    return None


class Reply(NamedTuple):
    """The answer to a prediction request, before a transport writes it."""

    status: int
    body: bytes
    content_type: bytes
    request_id: str
    version: bytes  # X-Modelyard-Version; empty when no version was chosen
    cache: bytes  # X-Modelyard-Cache (hit, miss); empty without a cache
    extra: tuple[tuple[bytes, bytes], ...] = ()  # e.g. WWW-Authenticate on a 401

    def headers(self, worker: bytes) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"content-type", self.content_type),
            (b"content-length", str(len(self.body)).encode()),
            (b"x-request-id", self.request_id.encode()),
            (b"x-modelyard-worker", worker),
        ]
        if self.version:
            headers.append((b"x-modelyard-version", self.version))
        if self.cache:
            headers.append((b"x-modelyard-cache", self.cache))
        if self.extra:
            headers.extend(self.extra)
        return headers


class RequestIds:
    """Request ids: 32 hex digits laid out as a UUID version 4 (like ``uuid4().hex``).

    The first 80 bits (74 of them random) are drawn once per process, the last 48 count up
    from a random start: unique across workers and restarts like random ids, and several
    times cheaper than drawing 122 random bits for every request. Not secret: the client
    gets them back in ``X-Request-Id``.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        raw = bytearray(os.urandom(16))
        raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
        digits = raw.hex()
        self.prefix = digits[:20]
        self.counter = itertools.count(int(digits[20:], 16))

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFF:012x}"


new_request_id = RequestIds()
if hasattr(os, "register_at_fork"):  # a forked worker must not repeat its parent's ids
    os.register_at_fork(after_in_child=new_request_id.reset)


def extra_headers(exc: ModelyardError) -> tuple[tuple[bytes, bytes], ...]:
    """Headers an error's answer must carry (RFC 9110: a 401 says how to authenticate,
    a 405 what is allowed)."""
    if isinstance(exc, Unauthenticated):
        return ((b"www-authenticate", b"Bearer"),)
    if isinstance(exc, MethodNotAllowed):
        return ((b"allow", exc.allow.encode()),)
    retry_after = getattr(exc, "retry_after", None)  # Overloaded, token checks
    if isinstance(retry_after, int):  # RFC 9110: when to try again
        return ((b"retry-after", b"%d" % retry_after),)
    return ()


def request_timeout_ms(limit: int, headers: Mapping[bytes, bytes]) -> int:
    """A request's timeout: its endpoint's, or X-Modelyard-Timeout-Ms when that is shorter."""
    given = headers.get(b"x-modelyard-timeout-ms")
    if given is None:
        return limit
    if not given.isdigit() or len(given) > 9 or int(given) == 0:
        raise BadRequest(
            "X-Modelyard-Timeout-Ms must be a whole number of milliseconds from 1 to "
            f"999999999, got {given[:40].decode('ascii', 'replace')!r}; leave it out for the "
            f"endpoint's timeout ({limit} ms)"
        )
    return min(limit, int(given))


def require_json(headers: Mapping[bytes, bytes], model: str) -> None:
    content_type = headers.get(b"content-type")
    if content_type is not None and not content_type.startswith(b"application/json"):
        raise BadRequest(
            f"{model}: content type {content_type[:100].decode('ascii', 'replace')!r} is not "
            "accepted; send application/json"
        )


def invocations_content_type(headers: Mapping[bytes, bytes], model: str) -> str:
    """The Content-Type of an ``/invocations`` request ("": none)."""
    try:
        return (headers.get(b"content-type") or b"").decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(
            f"{model}: the Content-Type header is not ASCII; send 'application/json' or 'text/csv'"
        ) from None


def binary_header_length(value: bytes, model: str) -> int:
    """OIP's ``Inference-Header-Content-Length``: the JSON header's length in bytes."""
    if not (0 < len(value) <= 12 and value.isdigit()):
        raise BadRequest(
            f"{model}: Inference-Header-Content-Length must be the length in bytes of the "
            "JSON before the binary data (up to 12 digits), got "
            f"{value[:40].decode('ascii', 'replace')!r}; leave it out for a JSON-only body"
        )
    return int(value)


def length_over(digits: bytes, limit: int) -> bool:
    """Whether a length in ASCII digits (a Content-Length) is over ``limit``, without int()
    of thousands of digits."""
    return len(digits) > 18 or int(digits) > limit


async def read_body(receive: Receive, limit: int, headers: Mapping[bytes, bytes]) -> bytes | None:
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and length_over(declared, limit):
        stated = declared.decode() if len(declared) <= 18 else "more than 10^18"
        raise PayloadTooLarge(
            f"request body of {stated} bytes is over the {limit} byte limit; send "
            "fewer rows per request or raise MODELYARD_MAX_REQUEST_BYTES"
        )
    message = await receive()
    if message["type"] == "http.disconnect":
        return None
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"request body is over the {limit} byte limit; send fewer rows per request "
                "or raise MODELYARD_MAX_REQUEST_BYTES"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_reply(send: Send, reply: Reply, worker: bytes) -> None:
    try:
        headers = reply.headers(worker)
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
    except OSError:  # the client disconnected before the answer; nothing left to do
        pass
