"""Prometheus metrics of the gateway.

Per-request counters and latency histograms are updated on the hot path through children
bound once per (endpoint, version); batch sizes, queue depths, cache sizes, model load times
and the prediction log's counts are read from their owners only when ``/metrics`` is
scraped, so they cost nothing per request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class GatewayMetrics:
    """The gateway's metrics in their own registry (several gateways can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "modelyard_requests",
            "Inference requests answered",
            ["endpoint", "version", "protocol", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "modelyard_request_latency_seconds",
            "Time from request received to answer sent",
            ["endpoint", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "modelyard_request_errors",
            "Requests that failed, by cause",
            ["endpoint", "reason"],
            registry=self.registry,
        )
        self.cache = Counter(
            "modelyard_cache_lookups",
            "Prediction cache lookups",
            ["endpoint", "result"],
            registry=self.registry,
        )
        self.shadow = Counter(
            "modelyard_shadow_requests",
            "Requests mirrored to a shadow version",
            ["endpoint", "version", "outcome"],
            registry=self.registry,
        )
        self._bound: dict[tuple[str, ...], Any] = {}

    def observe(
        self, endpoint: str, version: str, protocol: str, code: int, seconds: float
    ) -> None:
        """Count one answered request; children are bound once and reused."""
        key = (endpoint, version, protocol, str(code))
        pair = self._bound.get(key)
        if pair is None:
            pair = (self.requests.labels(*key), self.latency.labels(endpoint, version))
            self._bound[key] = pair
        pair[0].inc()
        pair[1].observe(seconds)

    def add_collector(self, collect: Callable[[], Iterable[Any]]) -> None:
        """Add metrics computed at scrape time by ``collect``."""
        self.registry.register(_Callback(collect))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Callback(Collector):
    def __init__(self, collect: Callable[[], Iterable[Any]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Any]:
        yield from self._collect()

    def describe(self) -> list[Any]:
        return []
