"""Prometheus metrics of the gateway.

Per-request counts and latencies are kept in plain per-worker counters (a dict lookup and
a few integer additions on the event loop's thread, no locks) and turned into Prometheus
metric families only when ``/metrics`` is scraped: ``prometheus_client``'s own ``Counter``
and ``Histogram`` take a lock and allocate on every update, which showed on the hot path.
Batch sizes, queue depths, cache sizes, model load times and the prediction log's counts
are read from their owners at scrape time too, so they cost nothing per request.

Every update happens on the event loop's thread, and so does the scrape (the ``/metrics``
route), so no update is torn. ``prometheus_client`` is imported at the first scrape, not on
the way to a gateway's first answer.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import CounterMetricFamily

    from modelyard.rollouts.entities import Rollout
    from modelyard.serving.gateway import Gateway
    from modelyard.serving.pool import ModelPool

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_NO_LATENCY = len(LATENCY_BUCKETS) + 1  # index of the sum in a latency series


class _Counters:
    """One labelled counter: label values -> [value, created]."""

    __slots__ = ("doc", "labels", "name", "series")

    def __init__(self, name: str, doc: str, labels: list[str]) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.series: dict[tuple[str, ...], list[float]] = {}

    def inc(self, *labels: str) -> None:
        cell = self.series.get(labels)
        if cell is None:
            cell = self.series[labels] = [0.0, time.time()]
        cell[0] += 1

    def value(self, *labels: str) -> float:
        cell = self.series.get(labels)
        return 0.0 if cell is None else cell[0]

    def family(self) -> CounterMetricFamily:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for labels, (value, created) in self.series.items():
            family.add_metric(list(labels), value, created=created)
        return family


@dataclass
class EndpointTotals:
    """One endpoint's counters so far: requests answered (failed ones too), requests failed,
    latency bucket counts (one per :data:`LATENCY_BUCKETS` bound, then +Inf), cache hits
    and misses."""

    requests: float = 0.0
    errors: float = 0.0
    latency: list[float] = field(default_factory=lambda: [0.0] * _NO_LATENCY)
    cache_hits: float = 0.0
    cache_misses: float = 0.0


class GatewayMetrics:
    """The gateway's metrics in their own registry (several gateways can live in one process).

    - ``modelyard_requests_total{endpoint, version, protocol, code}``: requests answered;
    - ``modelyard_request_latency_seconds{endpoint, version}``: histogram, request received
      to answer sent;
    - ``modelyard_request_errors_total{endpoint, reason}``: failed requests by cause;
    - ``modelyard_cache_lookups_total{endpoint, result}``: prediction cache hits and misses;
    - ``modelyard_shadow_requests_total{endpoint, version, outcome}``: mirrored requests;
    - ``modelyard_requests_shed_total{endpoint, reason}``: requests refused at once with a
      503 because their model was overloaded (``queue_full``, ``deadline``);
    - ``modelyard_http_rejected_total{reason}``: connections the HTTP limits ended
      (``header_timeout``, ``body_timeout``, ``header_too_large``, ``connection_limit``);

    plus whatever the collectors added with :meth:`add_collector` compute at scrape time.
    """

    def __init__(self) -> None:
        self._collectors: list[Callable[[], Iterable[Any]]] = [self._collect]
        self._registry: CollectorRegistry | None = None
        # (endpoint, version, protocol, code) -> (request count cell, latency series)
        self._bound: dict[tuple[str, str, str, int], tuple[list[float], list[float]]] = {}
        self._requests: dict[tuple[str, str, str, str], list[float]] = {}  # [count, created]
        # (endpoint, version) -> bucket counts (one per bound, then +Inf), sum, created
        self._latency: dict[tuple[str, str], list[float]] = {}
        self.errors = _Counters(
            "modelyard_request_errors", "Requests that failed, by cause", ["endpoint", "reason"]
        )
        self.cache = _Counters(
            "modelyard_cache_lookups", "Prediction cache lookups", ["endpoint", "result"]
        )
        self.shadow = _Counters(
            "modelyard_shadow_requests",
            "Requests mirrored to a shadow version",
            ["endpoint", "version", "outcome"],
        )
        self.shed = _Counters(
            "modelyard_requests_shed",
            "Requests refused at once (503) because their model was overloaded",
            ["endpoint", "reason"],
        )
        self.rejected = _Counters(
            "modelyard_http_rejected",
            "Connections ended by the HTTP limits (timeouts, header size, connection count)",
            ["reason"],
        )

    def observe(
        self, endpoint: str, version: str, protocol: str, code: int, seconds: float
    ) -> None:
        """Count one answered request and its latency (a dict lookup and three additions)."""
        bound = self._bound.get((endpoint, version, protocol, code))
        if bound is None:
            bound = self._bind(endpoint, version, protocol, code)
        bound[0][0] += 1
        latency = bound[1]
        latency[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        latency[_NO_LATENCY] += seconds

    def _bind(
        self, endpoint: str, version: str, protocol: str, code: int
    ) -> tuple[list[float], list[float]]:
        now = time.time()
        count = self._requests.setdefault((endpoint, version, protocol, str(code)), [0.0, now])
        latency = self._latency.get((endpoint, version))
        if latency is None:
            latency = self._latency[(endpoint, version)] = [0.0] * (_NO_LATENCY + 1) + [now]
        bound = (count, latency)
        self._bound[(endpoint, version, protocol, code)] = bound
        return bound

    def requests(self, endpoint: str, version: str, protocol: str, code: int) -> float:
        """Requests answered so far with these labels."""
        cell = self._requests.get((endpoint, version, protocol, str(code)))
        return 0.0 if cell is None else cell[0]

    def endpoint_totals(self) -> dict[str, EndpointTotals]:
        """Per endpoint label, its counters so far (summed over versions, protocols, codes
        and reasons): what the live figures publish (serving/live.py). Call it on the
        event loop's thread, as the scrape does."""
        totals: dict[str, EndpointTotals] = {}

        def of(endpoint: str) -> EndpointTotals:
            found = totals.get(endpoint)
            if found is None:
                found = totals[endpoint] = EndpointTotals()
            return found

        for (endpoint, *_), (count, _created) in self._requests.items():
            of(endpoint).requests += count
        for (endpoint, _version), series in self._latency.items():
            latency = of(endpoint).latency
            for i in range(_NO_LATENCY):
                latency[i] += series[i]
        for (endpoint, _reason), (count, _created) in self.errors.series.items():
            of(endpoint).errors += count
        for (endpoint, result), (count, _created) in self.cache.series.items():
            if result == "hit":
                of(endpoint).cache_hits += count
            else:
                of(endpoint).cache_misses += count
        return totals

    def add_collector(self, collect: Callable[[], Iterable[Any]]) -> None:
        """Add metrics computed at scrape time by ``collect``."""
        self._collectors.append(collect)
        if self._registry is not None:
            self._registry.register(_callback(collect))

    @property
    def registry(self) -> CollectorRegistry:
        """A Prometheus registry of all these metrics (built on first use)."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            registry = CollectorRegistry(auto_describe=True)
            for collect in self._collectors:
                registry.register(_callback(collect))
            self._registry = registry
        return self._registry

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def _collect(self) -> list[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
        from prometheus_client.samples import Sample
        from prometheus_client.utils import floatToGoString

        bounds = [floatToGoString(b) for b in LATENCY_BUCKETS] + ["+Inf"]
        requests = CounterMetricFamily(
            "modelyard_requests",
            "Inference requests answered",
            labels=["endpoint", "version", "protocol", "code"],
        )
        for labels, (value, created) in self._requests.items():
            requests.add_metric(list(labels), value, created=created)
        latency = HistogramMetricFamily(
            "modelyard_request_latency_seconds",
            "Time from request received to answer sent",
            labels=["endpoint", "version"],
        )
        created_samples = []
        for (endpoint, version), series in self._latency.items():
            cumulative, running = [], 0.0
            for le, count in zip(bounds, series[:_NO_LATENCY], strict=True):
                running += count
                cumulative.append((le, running))
            latency.add_metric([endpoint, version], cumulative, series[_NO_LATENCY])
            created_samples.append(
                Sample(
                    "modelyard_request_latency_seconds_created",
                    {"endpoint": endpoint, "version": version},
                    series[_NO_LATENCY + 1],
                )
            )
        latency.samples.extend(created_samples)
        return [
            requests,
            latency,
            self.errors.family(),
            self.cache.family(),
            self.shadow.family(),
            self.shed.family(),
            self.rejected.family(),
        ]


def gateway_families(gateway: Gateway) -> list[Any]:
    """The families read from a gateway's pool, prediction log and snapshots at scrape time."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    loaded = GaugeMetricFamily(
        "modelyard_model_loaded",
        "Models in the pool (1 per model, version, runtime)",
        labels=["model", "version", "runtime"],
    )
    load_seconds = GaugeMetricFamily(
        "modelyard_model_load_seconds",
        "Seconds the last load took",
        labels=["model", "version", "runtime", "phase"],
    )
    queue = GaugeMetricFamily(
        "modelyard_batch_queue_depth",
        "Requests waiting for a batch",
        labels=["model", "version"],
    )
    batches = CounterMetricFamily(
        "modelyard_batches", "Predict calls made by the batcher", labels=["model", "version"]
    )
    batch_rows = CounterMetricFamily(
        "modelyard_batch_rows", "Rows predicted by the batcher", labels=["model", "version"]
    )
    calls = CounterMetricFamily(
        "modelyard_predict_calls",
        "Predict calls by where they ran: inline on the event loop, or in a thread",
        labels=["model", "version", "mode"],
    )
    sizes = HistogramMetricFamily(
        "modelyard_batch_size", "Rows per predict call", labels=["model", "version"]
    )
    for m in gateway.pool.snapshot():
        labels = [m["model"], str(m["version"])]
        loaded.add_metric([*labels, m["runtime"]], 1)
        load_seconds.add_metric([*labels, m["runtime"], "load"], m["load_seconds"])
        load_seconds.add_metric([*labels, m["runtime"], "warm_up"], m["warm_seconds"])
        stats = m["batcher"]
        queue.add_metric(labels, stats["queue_depth"])
        batches.add_metric(labels, stats["batches"])
        batch_rows.add_metric(labels, stats["rows"])
        calls.add_metric([*labels, "inline"], stats["inline_calls"])
        calls.add_metric([*labels, "thread"], stats["threaded_calls"])
        buckets = [(str(b), c) for b, c in stats["batch_size_buckets"]]
        sizes.add_metric(labels, buckets, stats["batch_size_sum"])
    logged = CounterMetricFamily(
        "modelyard_prediction_log_rows", "Prediction log rows by outcome", labels=["outcome"]
    )
    log_stats = gateway.log.stats()
    for outcome in ("logged", "written", "dropped"):
        logged.add_metric([outcome], log_stats.get(f"{outcome}_rows", 0))
    cached = GaugeMetricFamily("modelyard_cache_entries", "Cached predictions", labels=["endpoint"])
    for name, served in gateway.state.served.items():
        if served.cache is not None:
            cached.add_metric([name], len(served.cache))
    ready = GaugeMetricFamily(
        "modelyard_endpoint_ready",
        "1 when the endpoint answers predictions, 0 when its models are still loading or "
        "could not be loaded",
        labels=["endpoint"],
    )
    stale = GaugeMetricFamily(
        "modelyard_endpoint_stale",
        "1 when the endpoint answers from versions it had because its new plan (an alias "
        "move, a new target) was refused (e.g. a signature check); /v2/health/ready says why",
        labels=["endpoint"],
    )
    state = gateway.state
    for name in sorted(set(state.served) | set(state.not_ready) | set(state.loading)):
        ready.add_metric([name], 1 if name in gateway.state.served else 0)
        if name in gateway.state.served:
            stale.add_metric([name], 1 if name in gateway.state.not_ready else 0)
    fast = GaugeMetricFamily(
        "modelyard_gateway_fast_path",
        "1 when ordinary prediction requests are answered without ASGI; else 0, and "
        "reason says why",
        labels=["reason"],
    )
    off = gateway.fast_path_off()
    fast.add_metric([off or ""], 0 if off else 1)
    families = [loaded, load_seconds, queue, batches, batch_rows, calls, sizes, logged]
    return [*families, cached, ready, stale, fast, *pool_families(gateway.pool)]


def pool_families(pool: ModelPool) -> list[Any]:
    """The model pool's memory (see serving/pool.py): what counts against the budget, and
    the events and loads that show whether the budget fits the traffic."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    used = GaugeMetricFamily(
        "modelyard_model_pool_bytes",
        "Bytes of models in this worker's pool, as measured when each was loaded: loaded "
        "(what MODELYARD_GATEWAY_MEMORY_MB bounds, with reserved), reserved (loads in "
        "progress), draining (evicted, finishing their requests)",
        labels=["state"],
    )
    used.add_metric(["loaded"], pool.memory_loaded_bytes)
    used.add_metric(["reserved"], pool.memory_reserved_bytes)
    used.add_metric(["draining"], pool.memory_draining_bytes)
    peak = GaugeMetricFamily(
        "modelyard_model_pool_peak_bytes",
        "The most bytes of loaded models this worker's pool has held at once",
        value=pool.peak_loaded_bytes,
    )
    families: list[Any] = [used, peak]
    if pool.memory_budget_bytes is not None:
        families.append(
            GaugeMetricFamily(
                "modelyard_model_pool_budget_bytes",
                "MODELYARD_GATEWAY_MEMORY_MB in bytes (per worker)",
                value=pool.memory_budget_bytes,
            )
        )
    size = GaugeMetricFamily(
        "modelyard_model_size_bytes",
        "Bytes a loaded model counts for; source: measured at its load, reported by its "
        "loader, or estimated from its files",
        labels=["model", "version", "runtime", "source"],
    )
    for m in pool.snapshot():
        if m["state"] == "ready":
            labels = [m["model"], str(m["version"]), m["runtime"], m["size_source"]]
            size.add_metric(labels, m["size_bytes"])
    events = CounterMetricFamily(
        "modelyard_model_pool_events",
        "Model pool events: loads, evictions, over_budget (a model loaded although nothing "
        "more could be evicted), load_failures, retires, trims (memory handed back)",
        labels=["event"],
    )
    for event in ("loads", "evictions", "over_budget", "load_failures", "retires", "trims"):
        events.add_metric([event], pool.events.get(event, 0))
    loads = CounterMetricFamily(
        "modelyard_model_loads",
        "Loads of each model in this worker; more than one: it was evicted and loaded again "
        "(a busy model loaded often wants a larger budget)",
        labels=["model", "version", "runtime"],
    )
    for (model, version, runtime), count in pool.loads_by_key.items():
        loads.add_metric([model, str(version), runtime], count)
    return [*families, size, events, loads]


def rollout_families(rollouts: list[Rollout]) -> list[Any]:
    """The gauges of ``rollouts`` (running, or ended a little while ago; each with at most
    its latest analysis).

    - ``modelyard_rollout_canary_weight{endpoint, rollout}``: the canary's share, in percent;
    - ``modelyard_rollout_phase{endpoint, rollout, phase}``: 1 for the current phase, 0 for
      the others;
    - ``modelyard_rollout_step{endpoint, rollout}``: the index of the current canary step
      (-1: the shadow phase);
    - ``modelyard_rollout_checks{endpoint, rollout, check, verdict}``: per check of the
      latest analysis, 1 for its verdict, 0 for the others;
    - ``modelyard_rollout_failures{endpoint, rollout}``: consecutive failed analyses;
    - ``modelyard_rollout_paused{endpoint, rollout}``: 1 while paused.

    The labels are bounded: one rollout per endpoint at a time, the phases and verdicts are
    fixed, and the checks are those an endpoint's plan and KPIs define.
    """
    from typing import get_args

    from prometheus_client.core import GaugeMetricFamily

    from modelyard.rollouts.entities import Phase, Verdict

    labels = ["endpoint", "rollout"]
    weight = GaugeMetricFamily(
        "modelyard_rollout_canary_weight",
        "The rollout's canary share of the endpoint's traffic, in percent",
        labels=labels,
    )
    phase = GaugeMetricFamily(
        "modelyard_rollout_phase",
        "1 for the rollout's current phase (shadow, canary, promoting, ...), 0 for the others",
        labels=[*labels, "phase"],
    )
    step = GaugeMetricFamily(
        "modelyard_rollout_step",
        "The index of the rollout's current canary step (-1: the shadow phase)",
        labels=labels,
    )
    checks = GaugeMetricFamily(
        "modelyard_rollout_checks",
        "1 for each check's verdict in the rollout's latest analysis, 0 for the others",
        labels=[*labels, "check", "verdict"],
    )
    failures = GaugeMetricFamily(
        "modelyard_rollout_failures",
        "Consecutive failed analyses of the rollout",
        labels=labels,
    )
    paused = GaugeMetricFamily(
        "modelyard_rollout_paused",
        "1 while a person has paused the rollout",
        labels=labels,
    )
    phases, verdicts = get_args(Phase), get_args(Verdict)
    for rollout in rollouts:
        names = [rollout.endpoint, rollout.id]
        weight.add_metric(names, rollout.weight)
        for name in phases:
            phase.add_metric([*names, name], 1 if rollout.phase == name else 0)
        step.add_metric(names, rollout.step)
        failures.add_metric(names, rollout.failures)
        paused.add_metric(names, 1 if rollout.paused else 0)
        if rollout.analyses:
            for check in rollout.analyses[-1].checks:
                for verdict in verdicts:
                    checks.add_metric(
                        [*names, check.name, verdict], 1 if check.verdict == verdict else 0
                    )
    return [weight, phase, step, checks, failures, paused]


def _callback(collect: Callable[[], Iterable[Any]]) -> Any:
    """A Prometheus collector yielding what ``collect`` returns at each scrape."""
    from prometheus_client.registry import Collector

    class _Callback(Collector):
        def collect(self) -> Iterator[Any]:
            yield from collect()

        def describe(self) -> list[Any]:
            return []

    return _Callback()
