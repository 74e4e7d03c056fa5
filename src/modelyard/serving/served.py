"""What the gateway serves for one endpoint right now (:class:`Served`), and how a sticky
user key picks its route."""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from modelyard.serving.entities import Endpoint, StickyKey

if TYPE_CHECKING:
    from cachetools import TTLCache

    from modelyard.serving.guard import Guard, Inactive
    from modelyard.serving.pool import LoadedModel
    from modelyard.serving.switching import Switcher


@dataclass(frozen=True)
class Served:
    """One endpoint as the gateway serves it right now."""

    endpoint: Endpoint
    models: tuple[LoadedModel, ...]
    cumulative: tuple[float, ...]
    shadow: LoadedModel | None = None
    cache: TTLCache[bytes, tuple[bytes, dict[str, Any]]] | None = None
    #: With a guard on: each served version's, by (model, version) (see serving/guard.py).
    guards: Mapping[tuple[str, int], Guard | Inactive] | None = None
    #: With ``policy.sticky`` and several routes: where a request's key comes from (None:
    #: routes are drawn at random, and a single route looks at nothing).
    sticky: StickyKey | None = None
    #: The sticky header's name as the request headers have it (lower case), if a header.
    sticky_header: bytes | None = None
    #: With a sticky field: per route, whether its signature is the first route's (a body
    #: parsed with the first route's signature to read the key then serves it as well).
    same_signature: tuple[bool, ...] = ()
    #: With ``policy.variants``: the SLO switching state (see serving/switching.py); the
    #: models are the variants, in the policy's order.
    switch: Switcher | None = None

    def pick(self, key: bytes | None = None) -> LoadedModel:
        """A model by weight: at random, or where a sticky ``key`` falls (see
        :func:`sticky_point`). A single route costs no draw.

        With the routes in their order, the same key stays on the last route (a rollout's
        canary) while that route's share grows, and on the first while it shrinks.
        """
        if len(self.models) == 1:
            return self.models[0]
        point = random.random() if key is None else sticky_point(key)
        return self.models[bisect.bisect_right(self.cumulative, point * self.cumulative[-1])]

    def route_of(self, key: bytes | None) -> int:
        """The index of the route :meth:`pick` chooses for ``key``."""
        point = random.random() if key is None else sticky_point(key)
        return bisect.bisect_right(self.cumulative, point * self.cumulative[-1])

    def by_version(self, version: int) -> LoadedModel | None:
        for m in self.models:
            if m.version.version == version:
                return m
        return None

    @property
    def keys(self) -> set[tuple[str, int, str]]:
        found = {m.key for m in self.models}
        if self.shadow is not None:
            found.add(self.shadow.key)
        return found


def sticky_point(key: bytes) -> float:
    """Where a sticky key falls in [0, 1): the first 8 bytes of its BLAKE2b digest (64-byte
    digest) as a big-endian integer over 2**64, cut to the 53 bits a float holds so that it
    stays below 1. The same in every worker, process, restart and machine (Python's
    ``hash`` of bytes is salted per process)."""
    return (int.from_bytes(hashlib.blake2b(key).digest()[:8], "big") >> 11) * 2.0**-53


def sticky_value(inputs: Mapping[str, Any], name: str) -> bytes | None:
    """Input ``name``'s value in the first row, as a sticky key; None when there is no such
    input or the value is empty or not a scalar. Numbers are written as their shortest
    decimal, a whole float as an integer (42.0 and "42" are the same user)."""
    try:
        column = inputs[name]
        first = column[0] if getattr(column, "ndim", 1) else column
    except (KeyError, IndexError):
        return None
    if isinstance(first, np.ndarray):
        if first.size != 1:
            return None
        first = first.reshape(-1)[0]
    value = first.item() if isinstance(first, np.generic) else first
    if isinstance(value, bytes):
        return value or None
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value)
    return text.encode() if text else None
