"""Live figures of an endpoint: what its gateway workers answered in the last few minutes.

The gateway's counters live in each worker process (:mod:`.metrics`), and a dashboard request
lands on any worker, or on a control plane that has no gateway at all. So every worker
publishes its recent counters to the metadata store, where any process (on any host, SQLite
or PostgreSQL) can read them:

- :class:`LivePublisher`, run by each gateway worker: every ``live_stats_seconds`` (at the
  wall clock's multiples of it, so that the workers' samples line up) it reads its
  cumulative per-endpoint counters on the event loop's thread (the counters the requests
  already update; nothing is added to the hot path), appends them to a ring of the last
  :data:`RING_SECONDS`, and writes the ring of each endpoint whose counters changed since
  its last write to its row of the ``live_stats`` table (one row per worker and endpoint).
  The write runs in a thread; a failure is logged and tried again at the next change. An
  idle worker writes nothing, except a refresh every :data:`KEEPALIVE_SECONDS` while its
  ring still shows traffic, so that a reader keeps its past minutes. Each write deletes
  the rows of workers silent for more than :data:`STALE_SECONDS` (gone, or idle for long).
- :func:`read_live` (``ws.endpoints.live``): merges the live workers' rows into one series
  per :data:`STEP_SECONDS` bucket: requests/s, errors/s, latency percentiles (from the summed
  deltas of the latency histogram's buckets, interpolated inside a bucket), mean batch size
  and cache hit rate.

A sample is a list: its Unix time, then :data:`FIELDS` (cumulative counts), then the latency
histogram's bucket counts (one per :data:`~.metrics.LATENCY_BUCKETS` bound, then +Inf).
Batch figures are those of the batchers of the versions an endpoint serves (not its
shadow's); an endpoint sharing a version with another shares its batcher's figures.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from modelyard.errors import InvalidInput
from modelyard.serving.metrics import LATENCY_BUCKETS, EndpointTotals

if TYPE_CHECKING:
    from modelyard.serving.gateway import Gateway
    from modelyard.workspace import Workspace

log = logging.getLogger("modelyard.gateway")

#: The width of a bucket of the merged series.
STEP_SECONDS = 2.0
#: How far back a worker's ring (and so a series) reaches.
RING_SECONDS = 300.0
#: A row not written for this long is a gone (or long idle) worker's: deleted, not read.
STALE_SECONDS = 60.0
#: How often an idle worker rewrites a row whose ring still shows traffic (< STALE_SECONDS).
KEEPALIVE_SECONDS = 20.0
#: The newest bucket of a series ends this long before the read at least: the workers write
#: their samples a moment after each multiple of the interval.
WRITE_GRACE_SECONDS = 0.5

#: The cumulative counts of a sample after its time, before the latency buckets.
FIELDS = ("requests", "errors", "batch_rows", "batches", "cache_hits", "cache_misses")
_REQUESTS, _ERRORS, _ROWS, _BATCHES, _HITS, _MISSES = range(len(FIELDS))
_LATENCY = len(FIELDS)
_WIDTH = len(FIELDS) + len(LATENCY_BUCKETS) + 1  # counts per sample

#: One endpoint's cumulative counts, in the order of :data:`FIELDS`, then latency buckets.
Counts = tuple[float, ...]
_ZERO: Counts = (0.0,) * _WIDTH


class LiveSeries(BaseModel):
    """An endpoint's recent figures, one value per bucket (None: nothing known there; the
    rates are 0, not None, where live workers counted nothing)."""

    endpoint: str
    step_seconds: float
    #: Each bucket's end.
    times: list[datetime]
    requests_per_second: list[float | None]
    errors_per_second: list[float | None]
    latency_p50_ms: list[float | None]
    latency_p95_ms: list[float | None]
    latency_p99_ms: list[float | None]
    #: Rows per predict call of the endpoint's batchers.
    batch_size: list[float | None]
    #: Hits over lookups of the endpoint's prediction cache (None: no lookups).
    cache_hit_rate: list[float | None]
    #: Requests (and failed ones) in the whole series.
    requests: float = 0.0
    errors: float = 0.0
    #: The workers whose rows were merged, and the newest write among them.
    workers: int = 0
    updated_at: datetime | None = None


# --- a worker's side ---------------------------------------------------------------------


def worker_id() -> str:
    """This process as a ``live_stats`` worker: ``hostname:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"[-128:]


class GatewayCounts:
    """Reads a gateway's cumulative counts per served endpoint (call it on the event loop's
    thread, where the counters are updated).

    A batcher's counts start at zero when its version is loaded again (an alias moved, a
    model evicted and reloaded): the endpoint's batch counts add up what each batcher
    counted since it was last read, so they never go back.
    """

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        # endpoint -> model key -> (batcher, its rows, its batches) as last read
        self._seen: dict[str, dict[Any, tuple[Any, int, int]]] = {}
        self._batched: dict[str, list[int]] = {}  # endpoint -> [rows, batches] so far

    def __call__(self) -> dict[str, Counts]:
        totals = self.gateway.metrics.endpoint_totals()
        served = self.gateway.state.served
        for gone in set(self._seen) - set(served):
            del self._seen[gone]  # (its batchers with it; its totals stay, if it comes back)
        counts = {}
        for name, current in served.items():
            rows, batches = self._batches(name, current.models)
            t = totals.get(name) or EndpointTotals()
            counts[name] = (
                t.requests,
                t.errors,
                float(rows),
                float(batches),
                t.cache_hits,
                t.cache_misses,
                *t.latency,
            )
        return counts

    def _batches(self, endpoint: str, models: Sequence[Any]) -> tuple[int, int]:
        seen = self._seen.setdefault(endpoint, {})
        total = self._batched.setdefault(endpoint, [0, 0])
        keys = set()
        for model in models:
            if model.key in keys:
                continue
            keys.add(model.key)
            batcher = model.batcher
            stats = batcher.stats
            before = seen.get(model.key)
            rows, batches = (before[1], before[2]) if before and before[0] is batcher else (0, 0)
            total[0] += max(0, stats.rows - rows)
            total[1] += max(0, stats.batches - batches)
            seen[model.key] = (batcher, stats.rows, stats.batches)
        for key in set(seen) - keys:
            del seen[key]
        return total[0], total[1]


class LivePublisher:
    """A gateway worker's publisher of its recent counters (see the module documentation).

    ``read`` gives the cumulative counts per endpoint (:class:`GatewayCounts` for a
    gateway); it is called on the event loop's thread, the store is written in a thread.
    """

    def __init__(
        self,
        ws: Workspace,
        read: Callable[[], Mapping[str, Counts]],
        seconds: float,
        *,
        worker: str | None = None,
    ) -> None:
        if seconds <= 0:
            raise ValueError("seconds must be positive (0 turns the publisher off)")
        self.ws = ws
        self.read = read
        self.seconds = seconds
        self.worker = worker or worker_id()
        self._size = math.ceil(RING_SECONDS / seconds) + 1
        self._rings: dict[str, deque[list[float]]] = {}
        #: endpoint -> the counts of its last write, and when (Unix time); like ``_latest``,
        #: kept after the endpoint goes
        self._written: dict[str, tuple[Counts, float]] = {}
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        #: When the counts were last read (at first: when they started, all at zero), and
        #: each endpoint's then (kept after it goes: the counters stay if it comes back).
        self._last = time.time()
        self._latest: dict[str, Counts] = {}

    @classmethod
    def start_for(cls, gateway: Gateway) -> LivePublisher | None:
        """Start publishing ``gateway``'s counters (None: ``live_stats_seconds`` is 0)."""
        seconds = gateway.ws.settings.live_stats_seconds
        if not seconds:
            return None
        publisher = cls(gateway.ws, GatewayCounts(gateway), seconds)
        publisher._task = asyncio.create_task(publisher._run())
        return publisher

    async def stop(self) -> None:
        """Stop publishing (a write under way finishes in its thread)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        due = 0.0
        while True:
            # the next multiple of the interval, never the one just sampled (a timer may
            # fire a hair early)
            now = time.time()
            due = max(due + self.seconds, (now // self.seconds + 1) * self.seconds)
            await asyncio.sleep(due - now)
            try:
                await self.publish()
            except Exception:  # a bug of ours must not stop the publishing for good
                log.exception("publishing the live figures failed")

    async def publish(self, now: float | None = None) -> int:
        """Take a sample and write the rows due (in a thread); how many were written."""
        now = time.time() if now is None else now
        due = self.sample(now)
        if not due:
            return 0
        try:
            await asyncio.to_thread(
                self.write, {name: ring for name, (_, ring) in due.items()}, now
            )
        except Exception as exc:  # the rings keep the samples: the next change writes them
            if not self._failing:
                log.warning("could not write the live figures (tried again): %r", exc)
            self._failing = True
            return 0
        if self._failing:
            log.info("writing the live figures works again")
            self._failing = False
        for name, (counts, _) in due.items():
            self._written[name] = (counts, now)
        return len(due)

    def sample(self, now: float) -> dict[str, tuple[Counts, list[list[float]]]]:
        """Append the counts now to each endpoint's ring; the rings due to be written,
        with the counts they end with."""
        counts = self.read()
        for gone in set(self._rings) - set(counts):
            del self._rings[gone]
        due = {}
        for name, current in counts.items():
            ring = self._rings.get(name)
            if ring is None:  # new: its counts at the last read start the ring
                before = self._latest.get(name, _ZERO)
                ring = self._rings[name] = deque([[round(self._last, 3), *before]], self._size)
            ring.append([round(now, 3), *current])
            self._latest[name] = current
            written = self._written.get(name)
            if current != (written[0] if written else _ZERO) or (
                written is not None
                and now - written[1] >= KEEPALIVE_SECONDS
                and ring[0][1:] != ring[-1][1:]
            ):
                due[name] = (current, list(ring))
        self._last = now
        return due

    def write(self, rings: Mapping[str, list[list[float]]], now: float) -> None:
        """Upsert this worker's row of each endpoint in ``rings`` and delete the rows of
        workers silent for over :data:`STALE_SECONDS` (blocking)."""
        from sqlalchemy import delete

        from modelyard.store.tables import LiveStatsRow

        at = datetime.fromtimestamp(now, UTC)
        with self.ws.store.write(self.ws.actor) as tx:
            session = tx.session
            stale = at - timedelta(seconds=STALE_SECONDS)
            session.execute(delete(LiveStatsRow).where(LiveStatsRow.updated_at < stale))
            for endpoint, samples in rings.items():
                row = session.get(LiveStatsRow, (self.worker, endpoint))
                if row is None:
                    session.add(
                        LiveStatsRow(
                            worker=self.worker, endpoint=endpoint, updated_at=at, samples=samples
                        )
                    )
                else:
                    row.updated_at, row.samples = at, samples


# --- a reader's side ---------------------------------------------------------------------


def read_live(
    ws: Workspace, endpoint: str, seconds: float = RING_SECONDS, *, now: float | None = None
) -> LiveSeries:
    """The last ``seconds`` of ``endpoint`` (at most :data:`RING_SECONDS`), merged from the
    rows of its live workers, in :data:`STEP_SECONDS` buckets (oldest first)."""
    from sqlalchemy import select

    from modelyard.store.tables import LiveStatsRow

    if not STEP_SECONDS <= seconds <= RING_SECONDS:
        raise InvalidInput(
            f"seconds must be between {STEP_SECONDS:g} and {RING_SECONDS:g} (the workers keep "
            f"{RING_SECONDS:g} s), got {seconds:g}"
        )
    now = time.time() if now is None else now
    fresh = datetime.fromtimestamp(now - STALE_SECONDS, UTC)
    with ws.store.read() as session:
        rows = session.execute(
            select(LiveStatsRow.updated_at, LiveStatsRow.samples).where(
                LiveStatsRow.endpoint == endpoint, LiveStatsRow.updated_at >= fresh
            )
        ).all()
    newest = max((updated for updated, _ in rows), default=None)
    return merge(endpoint, [samples for _, samples in rows], now, seconds, newest)


def merge(
    endpoint: str,
    workers: Sequence[Sequence[Any]],
    now: float,
    seconds: float = RING_SECONDS,
    updated_at: datetime | None = None,
) -> LiveSeries:
    """Merge the samples of live ``workers`` (each a list of samples) into one series.

    Each delta between a worker's consecutive samples is shared among the buckets its
    interval overlaps, in proportion; after a worker's last sample its counts are taken as
    unchanged up to the series' end (a worker writes whenever they change).
    """
    step = STEP_SECONDS
    n = max(1, int(seconds // step))
    end = math.floor((now - WRITE_GRACE_SECONDS) / step) * step
    start = end - n * step
    sums = [[0.0] * _WIDTH for _ in range(n)]
    known = [False] * n
    merged = 0
    for samples in workers:
        valid = sorted((s for s in samples if _valid(s)), key=lambda s: s[0])
        if not valid:
            continue
        merged += 1
        if valid[-1][0] < end:  # unchanged since: zero deltas up to the end
            valid.append([end, *valid[-1][1:]])
        for before, after in pairwise(valid):
            t0, t1 = float(before[0]), float(after[0])
            t0 = min(t0, t1 - 1e-3)  # samples taken in the same millisecond
            if t1 <= start or t0 >= end:
                continue
            deltas = [
                max(0.0, float(a) - float(b)) for a, b in zip(after[1:], before[1:], strict=True)
            ]
            moved = any(deltas)
            first = max(0, int((max(t0, start) - start) // step))
            last = min(n - 1, math.ceil((min(t1, end) - start) / step) - 1)
            for i in range(first, last + 1):
                lo, hi = start + i * step, start + (i + 1) * step
                overlap = min(t1, hi) - max(t0, lo)
                if overlap <= 0:
                    continue
                known[i] = True
                if moved:
                    share = overlap / (t1 - t0)
                    bucket = sums[i]
                    for k, delta in enumerate(deltas):
                        if delta:
                            bucket[k] += delta * share
    series = LiveSeries(
        endpoint=endpoint,
        step_seconds=step,
        times=[datetime.fromtimestamp(start + (i + 1) * step, UTC) for i in range(n)],
        requests_per_second=[],
        errors_per_second=[],
        latency_p50_ms=[],
        latency_p95_ms=[],
        latency_p99_ms=[],
        batch_size=[],
        cache_hit_rate=[],
        workers=merged,
        updated_at=updated_at,
    )
    for bucket, seen in zip(sums, known, strict=True):
        series.requests += bucket[_REQUESTS]
        series.errors += bucket[_ERRORS]
        if not seen:
            for values in _figures(series):
                values.append(None)
            continue
        series.requests_per_second.append(bucket[_REQUESTS] / step)
        series.errors_per_second.append(bucket[_ERRORS] / step)
        latency = bucket[_LATENCY:]
        series.latency_p50_ms.append(_ms(quantile(latency, 0.5)))
        series.latency_p95_ms.append(_ms(quantile(latency, 0.95)))
        series.latency_p99_ms.append(_ms(quantile(latency, 0.99)))
        batches = bucket[_BATCHES]
        series.batch_size.append(bucket[_ROWS] / batches if batches > 1e-9 else None)
        lookups = bucket[_HITS] + bucket[_MISSES]
        series.cache_hit_rate.append(bucket[_HITS] / lookups if lookups > 1e-9 else None)
    return series


def quantile(counts: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (seconds) of a latency histogram's bucket counts (one per
    :data:`~.metrics.LATENCY_BUCKETS` bound, then +Inf), interpolated linearly inside its
    bucket; the largest bound when it falls in +Inf (as Prometheus' histogram_quantile)."""
    total = sum(counts)
    if total <= 1e-9:
        return None
    target = q * total
    running = 0.0
    for i, count in enumerate(counts):
        if count <= 0:
            continue
        if running + count >= target:
            if i >= len(LATENCY_BUCKETS):
                return float(LATENCY_BUCKETS[-1])
            low = 0.0 if i == 0 else float(LATENCY_BUCKETS[i - 1])
            high = float(LATENCY_BUCKETS[i])
            return low + (high - low) * (target - running) / count
        running += count
    return float(LATENCY_BUCKETS[-1])


def _figures(series: LiveSeries) -> list[list[float | None]]:
    return [
        series.requests_per_second,
        series.errors_per_second,
        series.latency_p50_ms,
        series.latency_p95_ms,
        series.latency_p99_ms,
        series.batch_size,
        series.cache_hit_rate,
    ]


def _valid(sample: Any) -> bool:
    """A sample of this layout (a row written by another modelyard version is skipped)."""
    return (
        isinstance(sample, list)
        and len(sample) == _WIDTH + 1
        and all(isinstance(v, int | float) for v in sample)
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000
