"""Adaptive request batching: one queue and one worker task per loaded model.

Callers ``await batcher.submit(inputs, rows)`` and get back their own slice of the outputs
of the predict call their request was grouped into.

How a batch is formed (the adaptivity):

* One worker task per batcher runs at most one ``predict`` at a time.
* When a request arrives and nothing is running, it is predicted at once: no timer, no
  waiting. The worker wakes on the next event-loop iteration, so requests submitted in the
  same iteration are grouped for free.
* For a cheap model (see below) ``submit`` may call ``predict`` itself, skipping even the hop
  to the worker (a future, the worker's wake-up and two more loop iterations: about 60 µs of
  CPU here, more than a cheap model's whole call). That pays for a lone client, but not
  under concurrent load, where the requests parsed in one loop iteration can share one call
  through the worker instead (with 16 clients on 2 workers that saved ~17% of the CPU per
  request). So the batcher keeps an EWMA of the requests per worker batch: while it is at
  least ``_GROUPING`` (1.5) requests go through the worker; below, ``submit`` predicts
  itself, and after every ``_PROBE_GROUPING`` (64) such calls the next ``_PROBE_LENGTH``
  (4) requests go through the worker again, with whatever arrives in their loop iterations,
  to see whether requests now arrive together (a lone client pays the hop on 4 in 68).
* While a predict runs, arrivals queue; the next batch takes everything queued, up to
  ``max_batch_size`` rows ("natural batching"). The busier the model, the bigger the batch;
  a lone request is never delayed.
* An extra wait of at most ``max_wait_ms`` is added only when (a) the batch is below half of
  ``max_batch_size``, (b) the recent arrival rate (an EWMA of the time between arrivals)
  says another request will arrive within the wait, (c) the batch would run in the executor
  (for an inline-cheap model a wait costs far more than it saves: event-loop timers have
  about 1 ms granularity), and (d) recent waits did gain requests (an EWMA of arrivals per
  wait >= 0.5; otherwise one wait in ``_PROBE_EVERY`` batches probes again). (d) keeps a
  client that sends requests back to back, each after the previous answer, from paying a
  wait on every request: its arrivals are frequent but never come during a wait. The wait is
  cut short as soon as the batch reaches half of ``max_batch_size``, or when no request
  arrived for about two mean inter-arrival gaps.

How a batch is executed:

* A call's expected cost is the smallest duration among the last ``_RECENT`` (8) calls of
  its batch size (the histogram's power-of-two buckets: a call's cost is far from
  proportional to its rows, since for small batches a fixed cost per call dominates). A size
  not seen yet is scaled from the nearest smaller one seen (or from
  ``expected_predict_seconds``); a bigger size seen to be cheap makes it cheap.
* If the expected cost is under ``INLINE_SECONDS`` (0.2 ms), ``predict`` is called inline on
  the event loop: a hop to a thread and back costs more than the call. Otherwise it runs in
  ``executor`` (default: a one-thread ``ThreadPoolExecutor`` owned by this batcher;
  predictors release the GIL in native code) so the loop keeps serving. Until a cost is
  known, the first call runs in the executor.
* Why the smallest of recent durations: on a busy machine a call's duration is inflated now
  and then, by preemption, by steal time on a shared VM, and, since native predictors
  release the GIL, by other threads taking it. An average would then send a cheap model to
  the executor, where each call costs several times more CPU (the GIL handed back and
  forth) and the machine gets busier still. A model really got slower only when all of its
  recent calls were slow.
* Probing back inline: a call in the executor is timed in wall time, which includes the time
  its thread waits for the GIL while the event loop is busy, so under load a cheap model may
  look expensive there for good. So the executor thread also measures its own CPU time;
  after ``_PROBE_THREADED`` executor calls in a row that each used less than
  ``_PROBE_CPU_SECONDS`` of CPU (GIL contention inflates a thread's CPU time several-fold,
  so the bar is higher than ``INLINE_SECONDS``), the next call runs inline as a probe, and
  its duration joins the recent ones. A model that fails the probe stays in the executor,
  paying one inline call per ``_PROBE_THREADED`` calls; one that uses more CPU never probes.

``submit(..., timeout=)`` bounds a queued request's wait: past it the caller gets
:class:`TimeoutError` and its rows are dropped from the queue if they have not been taken
yet. A request predicted inline by ``submit`` itself never waits, so it sets no timer.
A request that times out or is cancelled while queued stops counting when its future's done
callback runs (the next loop iteration): from then on it counts toward neither
``max_queue``, the expected wait nor the queue depth, though its entry stays in the deque
until the worker reaches it (or until dead entries outnumber live ones, when the deque is
compacted, so their memory stays bounded).

Overload (admission): a request that would have to queue is refused at once with
:class:`Overloaded` (503, with the seconds after which to retry) when ``max_queue`` requests
are queued already, or when :meth:`Batcher.expected_wait` says its answer would come after
its ``timeout``. The expected wait is a lower bound (see :meth:`Batcher.expected_wait`), so a
request is shed only when even the model's best recent speed cannot answer it in time; the
queue bound catches the rest. A request the model would finish late is worth less than a
fast refusal: the client can retry elsewhere, and the requests admitted keep a latency
bounded by the queue, whatever the offered load.

Inputs are mappings of name -> ndarray with the batch dimension first. A batch of one request is
passed through untouched (no concatenation, no slicing copies); otherwise each key is
``np.concatenate``-d along axis 0 and every caller receives views of its rows. Requests whose
keys, dtypes or trailing shapes differ from the others are predicted in a separate call.
If ``predict`` raises, every caller of that call gets the exception as-is, and the batcher
carries on with later requests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from modelyard.errors import ModelyardError
from modelyard.serving.validation import Columns

Inputs = Mapping[str, NDArray[Any]]
Outputs = dict[str, NDArray[Any]]
PredictFn = Callable[[Inputs], Outputs]

log = logging.getLogger("modelyard.serving")

INLINE_SECONDS = 0.0002
"""Predict calls estimated below this run inline on the event loop; others in the executor."""

_ALPHA = 0.2  # EWMA weight of the newest observation
_PROBE_EVERY = 64  # after unproductive waits, try waiting again once per this many batches
_GROUPING = 1.5  # requests per worker batch from which cheap requests go through the worker
_PROBE_GROUPING = 64  # direct calls between two probes through the worker
_PROBE_LENGTH = 4  # requests a probe sends through the worker (one could be its turn's last)
_PROBE_THREADED = 16  # executor calls that used little CPU before an inline probe
_PROBE_CPU_SECONDS = 0.001  # "little CPU" for an executor call (see the module doc)
_RECENT = 8  # calls per batch-size bucket whose smallest duration is the expected cost
_MAX_GAP = 1.0  # inter-arrival gaps are clipped, so traffic resuming after idling is seen soon
_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)  # batch-size histogram bounds (le)
_STALE_SECONDS = 2.0  # a batch size not called for this long has stale recent durations
_BOUNDS = (*_BUCKETS, 2048)  # the rows a bucket's calls have at most (+Inf: taken as 2048)


class BatcherClosed(ModelyardError):
    """The model is being unloaded or replaced; the request can be retried."""

    status = 503
    title = "Model unavailable"


def _closed_predict(inputs: Inputs) -> Outputs:
    raise BatcherClosed("the model was unloaded; retry the request")


class Overloaded(ModelyardError):
    """The model has more work queued than it can answer in time; retry after ``retry_after``
    seconds. ``reason``: ``queue_full`` or ``deadline``."""

    status = 503
    title = "Overloaded"

    def __init__(self, detail: str, *, retry_after: int, reason: str, **extra: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **extra)
        self.retry_after = retry_after
        self.reason = reason


class BatchOutputMismatch(ModelyardError):
    """The model returned a different number of rows than it was given."""

    status = 500
    title = "Model output mismatch"


@dataclass
class BatcherStats:
    """A snapshot of a batcher's counters (all counts since it was created)."""

    name: str
    requests: int
    batches: int
    rows: int
    queue_depth: int
    queued_rows: int
    inline_calls: int
    threaded_calls: int
    direct_calls: int
    """Inline calls made by ``submit`` itself, without the hop to the worker."""
    failed_batches: int
    split_batches: int
    """Batches that held requests of different shapes and were predicted in several calls."""
    waits: int
    """Batches that waited for more arrivals before running."""
    ewma_predict_seconds: float | None
    """EWMA of the duration of one predict call (see the module doc for what counts)."""
    ewma_seconds_per_row: float | None
    ewma_interarrival_seconds: float | None
    batch_size_buckets: list[tuple[float, int]] = field(default_factory=list)
    """Cumulative histogram of rows per predict call: (upper bound, count), Prometheus style;
    the last bound is ``inf``."""
    batch_size_sum: int = 0
    batch_size_count: int = 0
    shed: int = 0
    """Requests refused with :class:`Overloaded` (queue full, or past their deadline)."""

    def prometheus_buckets(self) -> list[tuple[str, float]]:
        """The histogram as ``HistogramMetricFamily.add_metric(labels, buckets, sum_value)``
        takes it: cumulative ``(le, count)`` pairs ending with ``"+Inf"``."""
        return [
            ("+Inf" if bound == float("inf") else f"{bound:g}", float(count))
            for bound, count in self.batch_size_buckets
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "requests": self.requests,
            "batches": self.batches,
            "rows": self.rows,
            "queue_depth": self.queue_depth,
            "queued_rows": self.queued_rows,
            "inline_calls": self.inline_calls,
            "threaded_calls": self.threaded_calls,
            "direct_calls": self.direct_calls,
            "failed_batches": self.failed_batches,
            "split_batches": self.split_batches,
            "waits": self.waits,
            "ewma_predict_seconds": self.ewma_predict_seconds,
            "ewma_seconds_per_row": self.ewma_seconds_per_row,
            "ewma_interarrival_seconds": self.ewma_interarrival_seconds,
            "batch_size_buckets": [
                ["+Inf" if bound == float("inf") else bound, count]
                for bound, count in self.batch_size_buckets
            ],
            "batch_size_sum": self.batch_size_sum,
            "batch_size_count": self.batch_size_count,
            "shed": self.shed,
        }


# A queued request: (inputs, rows, future of the caller, the done callback that stops counting
# it if the caller gives up while it is queued: removed from the future when it is taken).
_Request = tuple[
    Inputs, int, "asyncio.Future[Outputs]", Callable[["asyncio.Future[Outputs]"], None]
]
_COMPACT_SLACK = 64  # dead entries tolerated in the deque beyond as many as it has live ones


class Batcher:
    """Groups concurrent requests for one model into one ``predict`` call (see module doc)."""

    def __init__(
        self,
        predict: PredictFn,
        *,
        max_batch_size: int = 64,
        max_wait_ms: float = 2.0,
        max_queue: int = 1024,
        name: str = "",
        executor: concurrent.futures.Executor | None = None,
        expected_predict_seconds: float | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._predict = predict
        self._executor = executor
        self._owns_executor = executor is None
        self._half = max(1, max_batch_size // 2)

        # The deque may hold dead entries (their caller gave up) until the worker reaches them;
        # ``_depth`` and ``_queued_rows`` count only the others (see ``_gone``).
        self._queue: deque[_Request] = deque()
        self._depth = 0
        self._queued_rows = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None  # set while the worker is idle
        self._closed = False
        self._idle = False  # the worker is parked with an empty queue (not mid-batch)
        self._wait_gain = 1.0  # EWMA of the requests a fill wait gained
        self._skipped_waits = 0
        self._cheap_in_thread = 0  # executor calls in a row that used little CPU (probe)
        self._grouped = 1.0  # EWMA of the requests per batch the worker takes
        self._direct_since_probe = 0
        self._probe_left = 0

        # Estimates.
        self._ewma_call: float | None = expected_predict_seconds
        self._ewma_row: float | None = expected_predict_seconds
        self._ewma_rows_per_call = 1.0
        # Per batch-size bucket: the durations of its recent calls, and their minimum (the
        # expected cost of a call of that size, see the module doc).
        self._recent: list[deque[float]] = [deque(maxlen=_RECENT) for _ in range(len(_BUCKETS) + 1)]
        self._bucket_cost: list[float | None] = [None] * (len(_BUCKETS) + 1)
        # ... and their median: what a call of that size typically costs now (a prediction,
        # where ``_bucket_cost`` is a floor).
        self._bucket_typical: list[float | None] = [None] * (len(_BUCKETS) + 1)
        # ... the cheapest call of that size ever seen, and when the last one ended: a size
        # not called for ``_STALE_SECONDS`` has its recent durations dropped at its next
        # call, and is predicted at its best meanwhile (see ``_typical``).
        self._bucket_best: list[float | None] = [None] * (len(_BUCKETS) + 1)
        self._bucket_seen: list[float] = [0.0] * (len(_BUCKETS) + 1)
        self._ewma_gap: float | None = None
        self._last_arrival = 0.0

        # Counters.
        self._requests = 0
        self._batches = 0
        self._rows = 0
        self._inline = 0
        self._direct_calls = 0
        self._threaded = 0
        self._failed = 0
        self._split = 0
        self._waits = 0
        self._shed = 0
        self._running: tuple[float, int] | None = None  # (start, rows) of the executor's call
        self._hist = [0] * (len(_BUCKETS) + 1)

    # -- the hot path -------------------------------------------------------------------------

    async def submit(self, inputs: Inputs, rows: int, timeout: float | None = None) -> Outputs:
        """Queue ``inputs`` (``rows`` rows, batch dimension first); return this caller's outputs.

        Raises whatever ``predict`` raised for the call this request was part of,
        :class:`BatcherClosed` once :meth:`close` has been called, and :class:`TimeoutError`
        when the request waited ``timeout`` seconds without an answer.
        """
        if self._closed:
            raise BatcherClosed(
                f"model {self.name or '(unnamed)'} is being unloaded; retry the request",
                model=self.name,
            )
        loop = self._loop
        if loop is None:
            loop = self._start()
        now = time.perf_counter()
        last = self._last_arrival
        self._last_arrival = now
        if last:
            gap = now - last
            if gap > _MAX_GAP:
                gap = _MAX_GAP
            ewma = self._ewma_gap
            self._ewma_gap = gap if ewma is None else ewma + _ALPHA * (gap - ewma)
        self._requests += 1
        if self._idle and not self._queue and self._inline_for(rows) and self._direct():
            # Nothing queued or running, the model is cheap and requests do not arrive
            # together: predict right here, without the hop to the worker task.
            self._inline += 1
            self._direct_calls += 1
            try:
                return self._predict(inputs)
            except Exception:
                self._failed += 1
                raise
            finally:
                self._observe(time.perf_counter() - now, rows)
        depth = self._depth
        if depth >= self.max_queue or (timeout is not None and (depth or not self._idle)):
            self._admit(rows, timeout)  # it would have to wait: refuse it now if it is hopeless
        future: asyncio.Future[Outputs] = loop.create_future()
        gone = functools.partial(self._gone, rows)
        future.add_done_callback(gone)
        self._queue.append((inputs, rows, future, gone))
        self._depth = depth + 1
        self._queued_rows += rows
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if timeout is None:
            return await future
        timer = loop.call_later(timeout, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    def _admit(self, rows: int, timeout: float | None) -> None:
        """Raise :class:`Overloaded` if the queue is full, or if a request of ``rows`` rows
        queued now would be answered after ``timeout`` seconds."""
        if self._depth >= self.max_queue:
            reason = "queue_full"
            problem = (
                f"model {self.name or '(unnamed)'} has {self._depth} requests queued, its "
                "limit (MODELYARD_GATEWAY_MAX_QUEUE)"
            )
        else:
            wait = self.expected_wait(rows)
            if wait is None or timeout is None or wait <= timeout:
                return
            reason = "deadline"
            problem = (
                f"model {self.name or '(unnamed)'} would answer in about {wait * 1000:.0f} ms "
                f"({self._depth} requests queued), after this request's "
                f"{timeout * 1000:.0f} ms timeout"
            )
        self._requests -= 1  # counted on arrival, never predicted
        self._shed += 1
        drained = self.expected_wait(0)
        retry_after = max(1, math.ceil(drained)) if drained is not None else 1
        raise Overloaded(
            f"{problem}: retry after {retry_after} s, or add gateway workers",
            retry_after=retry_after,
            reason=reason,
        )

    def expected_wait(self, rows: int = 1) -> float | None:
        """Seconds until a request of ``rows`` rows, queued now, would have its answer: what is
        left of the call running in the executor (if any), then the calls taking the queued
        rows and its own, each costed as the cheapest recent call of its size. None until a
        call has been timed (or estimated: ``expected_predict_seconds``).

        A lower bound, so that nothing is shed on a guess: a call never costs less for more
        rows, so a size not seen yet is costed as the nearest smaller one seen.
        """
        size = self.max_batch_size
        ahead = self._queued_rows + rows
        cost = self._cost_floor(min(ahead, size) or 1)
        if cost is None:
            return None
        wait = -(-ahead // size) * cost
        running = self._running
        if running is not None:
            started, running_rows = running
            left = (self._cost_floor(running_rows) or 0.0) - (time.perf_counter() - started)
            if left > 0:
                wait += left
        return wait

    def predicted_wait(self, rows: int = 1) -> float | None:
        """Seconds until a request of ``rows`` rows, queued now, would typically have its
        answer: what :meth:`expected_wait` computes, with each call costed at the median of
        the recent calls of its size instead of the cheapest (a size not seen yet is scaled
        from the nearest smaller one seen, in proportion to its rows). None until a call has
        been timed. The latency model of SLO switching (see serving/switching.py)."""
        size = self.max_batch_size
        if rows >= size:  # taken alone, in one call, once the rows queued ahead are done
            queued = self._queued_rows
            ahead = self._typical(min(queued, size)) if queued else 0.0
            cost = self._typical(rows)
            if cost is None or ahead is None:
                return None
            wait = -(-queued // size) * ahead + cost
        else:
            ahead_rows = self._queued_rows + rows
            cost = self._typical(min(ahead_rows, size))
            if cost is None:
                return None
            wait = -(-ahead_rows // size) * cost
        running = self._running
        if running is not None:
            started, running_rows = running
            left = (self._typical(running_rows) or 0.0) - (time.perf_counter() - started)
            if left > 0:
                wait += left
        return wait

    def _typical(self, rows: int) -> float | None:
        """A call's typical cost on ``rows`` rows: its size's median if seen; else a line
        (fixed cost per call plus a cost per row) through the nearest sizes seen around it
        or below it; with a single size seen, in proportion to the rows (pessimistic)."""
        typical = self._bucket_typical
        index = _bucket(rows)
        known = typical[index]
        if known is not None:
            if time.perf_counter() - self._bucket_seen[index] < _STALE_SECONDS:
                return known
            # Not called lately (SLO switching sent its requests elsewhere): what it cost
            # then may have been a busy moment. Predict its best, so that a request is sent
            # to measure it again, rather than never trying it.
            best = self._bucket_best[index]
            return known if best is None else min(known, best)
        seen = [(_BOUNDS[i], c) for i, c in enumerate(typical) if c is not None]
        if not seen:
            return self._ewma_call
        below = [point for point in seen if point[0] < rows]
        above = [point for point in seen if point[0] > rows]
        if below and above:
            (n0, c0), (n1, c1) = below[-1], above[0]
        elif len(below) >= 2:
            (n0, c0), (n1, c1) = below[-2], below[-1]
        else:
            n1, c1 = (below or above)[-1 if below else 0]
            return c1 * rows / n1 if below else c1
        slope = max((c1 - c0) / (n1 - n0), 0.0)
        return max(c0 + slope * (rows - n0), 0.0)

    def _cost_floor(self, rows: int) -> float | None:
        costs = self._bucket_cost
        for index in range(_bucket(rows), -1, -1):
            cost = costs[index]
            if cost is not None:
                return cost
        return self._ewma_call

    def _gone(self, rows: int, future: asyncio.Future[Outputs]) -> None:
        """Done callback of a queued request's future: it completed (timed out, or its caller
        was cancelled) before ``_take`` took it, so it stops counting now. ``_take`` removes
        this callback from the futures it takes, so each request is uncounted exactly once.

        When dead entries outnumber the live ones (plus some slack) the deque is compacted:
        dead entries would otherwise pile up behind a long call, each holding its inputs.
        Amortized O(1): a compaction of n entries follows at least n / 2 of these calls.
        """
        self._depth -= 1
        self._queued_rows -= rows
        queue = self._queue
        if len(queue) > 2 * self._depth + _COMPACT_SLACK:
            live = [request for request in queue if not request[2].done()]
            queue.clear()
            queue.extend(live)

    def _direct(self) -> bool:
        """Whether ``submit`` should predict a cheap request itself (see the module doc)."""
        if self._grouped >= _GROUPING:
            return False
        if self._probe_left:
            self._probe_left -= 1
            return False
        self._direct_since_probe += 1
        if self._direct_since_probe >= _PROBE_GROUPING:
            # A probe: the next few requests, and whatever their loop iterations bring with
            # them, go through the worker.
            self._direct_since_probe = 0
            self._probe_left = _PROBE_LENGTH - 1
            return False
        return True

    def _start(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._worker = loop.create_task(self._run(), name=f"batcher:{self.name}")
        return loop

    # -- the worker ---------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        while True:
            while queue and queue[0][2].done():  # dead entries (see ``_gone``) at the head
                queue.popleft()
            if not queue:
                if self._closed:
                    return
                waiter = loop.create_future()
                self._waiter = waiter
                self._idle = True
                try:
                    await waiter
                finally:
                    self._idle = False
                continue
            if self._should_wait():
                await self._fill(loop)
            batch = self._take()
            if batch:
                self._grouped += _ALPHA * (len(batch) - self._grouped)
                await self._execute(loop, batch)

    def _should_wait(self) -> bool:
        """Whether to wait for more arrivals before predicting what is queued."""
        gap = self._ewma_gap
        if (
            self.max_wait <= 0
            or self._closed
            or self._queued_rows >= self._half
            or gap is None
            or gap >= self.max_wait
            or self._inline_for(self._queued_rows)
        ):
            return False
        if self._wait_gain >= 0.5:
            return True
        # Recent waits gained nothing (the clients wait on us: a closed loop). Try again now
        # and then, in case the traffic changed.
        self._skipped_waits += 1
        if self._skipped_waits >= _PROBE_EVERY:
            self._skipped_waits = 0
            return True
        return False

    def _inline_for(self, rows: int) -> bool:
        """Whether a call on ``rows`` rows is expected to be cheap enough to run inline."""
        costs = self._bucket_cost
        index = _bucket(rows)
        known = costs[index]
        if known is not None:
            return known < INLINE_SECONDS
        # A bigger batch known to be cheap makes this one cheap; else scale the nearest
        # smaller known bucket (or the overall estimate) in proportion to the rows.
        for bigger in costs[index + 1 :]:
            if bigger is not None and bigger < INLINE_SECONDS:
                return True
        for smaller in range(index - 1, -1, -1):
            cost = costs[smaller]
            if cost is not None:
                return cost * (1 << (index - smaller)) < INLINE_SECONDS
        estimate = self._ewma_call
        if estimate is None:
            return False
        if rows > self._ewma_rows_per_call:
            estimate *= rows / self._ewma_rows_per_call
        return estimate < INLINE_SECONDS

    async def _fill(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait (at most ``max_wait``) for more arrivals while they keep coming."""
        self._waits += 1
        before = self._requests
        try:
            await self._collect(loop)
        finally:
            gained = self._requests - before
            self._wait_gain += _ALPHA * (gained - self._wait_gain)

    async def _collect(self, loop: asyncio.AbstractEventLoop) -> None:
        deadline = loop.time() + self.max_wait
        while self._queued_rows < self._half and not self._closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            gap = self._ewma_gap or self.max_wait
            seen = self._requests
            waiter = loop.create_future()
            self._waiter = waiter
            handle = loop.call_later(min(remaining, max(2.0 * gap, 5e-5)), _wake, waiter)
            try:
                await waiter
            finally:
                handle.cancel()
                if self._waiter is waiter:
                    self._waiter = None
            if self._requests == seen:  # nobody came during a couple of gaps: go now
                return
            # Woken by an arrival (submit sets the waiter): keep collecting.

    def _take(self) -> list[_Request]:
        """Pop up to ``max_batch_size`` rows of live requests (at least one request)."""
        queue = self._queue
        batch: list[_Request] = []
        total = 0
        limit = self.max_batch_size
        while queue:
            request = queue[0]
            future = request[2]
            if future.done():  # the caller gave up: skip its work (``_gone`` uncounts it)
                queue.popleft()
                continue
            rows = request[1]
            if batch and total + rows > limit:
                break
            queue.popleft()
            future.remove_done_callback(request[3])
            self._depth -= 1
            self._queued_rows -= rows
            batch.append(request)
            total += rows
        return batch

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[_Request]) -> None:
        if len(batch) == 1:
            await self._execute_group(loop, batch)
            return
        for group in self._groups(batch):
            await self._execute_group(loop, group)

    def _groups(self, batch: list[_Request]) -> list[list[_Request]]:
        """Split a batch into groups of requests that can be concatenated together."""
        first = _layout(batch[0][0])
        groups: dict[object, list[_Request]] | None = None
        for index in range(1, len(batch)):
            layout = _layout(batch[index][0])
            if layout != first:
                groups = {}
                for request in batch:
                    groups.setdefault(_layout(request[0]), []).append(request)
                break
        if groups is None:
            return [batch]
        self._split += 1
        return list(groups.values())

    async def _execute_group(self, loop: asyncio.AbstractEventLoop, group: list[_Request]) -> None:
        total = 0
        for request in group:
            total += request[1]
        try:
            first = group[0][0]
            if len(group) == 1:
                merged = first
            elif type(first) is Columns:  # same layout: all Columns of the same names
                tables = [r[0].matrix for r in group]  # type: ignore[attr-defined]
                merged = Columns(first.names, np.concatenate(tables, axis=1))
            else:
                keys = first.keys()
                merged = {key: np.concatenate([r[0][key] for r in group]) for key in keys}
            outputs = await self._call(loop, merged, total)
            if len(group) > 1:
                for key, value in outputs.items():
                    if np.ndim(value) == 0 or len(value) != total:
                        raise BatchOutputMismatch(
                            f"model {self.name or '(unnamed)'} returned output {key!r} of shape "
                            f"{np.shape(value)} for a batch of {total} rows; its outputs must "
                            "have one row per input row to be batched (set max_batch_size=1)",
                            model=self.name,
                        )
        except BaseException as exc:
            self._failed += 1
            _fail(group, exc)
            if not isinstance(exc, Exception):
                raise
            return
        if len(group) == 1:
            if not group[0][2].done():
                group[0][2].set_result(outputs)
            return
        start = 0
        for _, rows, future, _ in group:
            end = start + rows
            if not future.done():
                future.set_result({key: value[start:end] for key, value in outputs.items()})
            start = end

    async def _call(self, loop: asyncio.AbstractEventLoop, inputs: Inputs, rows: int) -> Outputs:
        """Run one predict call, inline or in the executor, and update the estimates."""
        probe = self._cheap_in_thread >= _PROBE_THREADED
        if probe or self._inline_for(rows):
            self._inline += 1
            start = time.perf_counter()
            try:
                outputs = self._predict(inputs)
            finally:
                if probe:
                    self._cheap_in_thread = 0
                self._observe(time.perf_counter() - start, rows)
        else:
            self._threaded += 1
            executor = self._executor
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=f"batcher-{self.name}"
                )
                self._executor = executor
            start = time.perf_counter()
            self._running = (start, rows)
            try:
                outputs, seconds, cpu = await loop.run_in_executor(executor, self._timed, inputs)
            except BaseException:
                self._running = None
                self._cheap_in_thread = 0
                self._observe(time.perf_counter() - start, rows)
                raise
            self._running = None
            self._cheap_in_thread = self._cheap_in_thread + 1 if cpu < _PROBE_CPU_SECONDS else 0
            self._observe(seconds, rows)
        return outputs

    def _timed(self, inputs: Inputs) -> tuple[Outputs, float, float]:
        """Runs in the executor: time measured here leaves out the hop to the thread.

        Returns the outputs, the wall time and the CPU time of this thread.
        """
        start = time.perf_counter()
        cpu = time.thread_time()
        outputs = self._predict(inputs)
        return outputs, time.perf_counter() - start, time.thread_time() - cpu

    def _count(self, rows: int) -> None:
        self._batches += 1
        self._rows += rows
        self._hist[_bucket(rows)] += 1

    def _observe(self, seconds: float, rows: int) -> None:
        self._count(rows)
        index = _bucket(rows)
        recent = self._recent[index]
        now = time.perf_counter()
        if now - self._bucket_seen[index] >= _STALE_SECONDS:
            recent.clear()  # durations from before a pause describe another moment
        self._bucket_seen[index] = now
        recent.append(seconds)
        self._bucket_cost[index] = min(recent)
        self._bucket_typical[index] = sorted(recent)[len(recent) // 2]
        best = self._bucket_best[index]
        if self._batches > 1 and (best is None or seconds < best):  # not the first, cold call
            self._bucket_best[index] = seconds
        per_row = seconds / rows if rows > 0 else seconds
        if self._ewma_call is None or self._ewma_row is None:
            self._ewma_call = seconds
            self._ewma_row = per_row
            self._ewma_rows_per_call = float(max(rows, 1))
            return
        self._ewma_call += _ALPHA * (seconds - self._ewma_call)
        self._ewma_row += _ALPHA * (per_row - self._ewma_row)
        self._ewma_rows_per_call += _ALPHA * (max(rows, 1) - self._ewma_rows_per_call)

    # -- lifecycle and introspection ----------------------------------------------------------

    async def close(self) -> None:
        """Finish the queued work, then stop; later :meth:`submit` calls raise BatcherClosed."""
        self._closed = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        worker = self._worker
        if worker is not None and not worker.done():
            if worker.get_loop() is asyncio.get_running_loop():
                await worker
            else:  # the loop it ran on is gone: nothing can finish the queue any more
                worker.cancel()
        if self._owns_executor and self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        # Nothing calls it any more: let go of the model it holds (a closed batcher may
        # outlive its model, in an endpoint's snapshot of an evicted model).
        self._predict = _closed_predict

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queue_depth(self) -> int:
        """Requests queued whose callers still wait for them."""
        return self._depth

    @property
    def stats(self) -> BatcherStats:
        cumulative: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*_BUCKETS, float("inf")), self._hist, strict=True):
            running += count
            cumulative.append((float(bound), running))
        return BatcherStats(
            name=self.name,
            requests=self._requests,
            batches=self._batches,
            rows=self._rows,
            queue_depth=self._depth,
            queued_rows=self._queued_rows,
            inline_calls=self._inline,
            threaded_calls=self._threaded,
            direct_calls=self._direct_calls,
            failed_batches=self._failed,
            split_batches=self._split,
            waits=self._waits,
            ewma_predict_seconds=self._ewma_call,
            ewma_seconds_per_row=self._ewma_row,
            ewma_interarrival_seconds=self._ewma_gap,
            batch_size_buckets=cumulative,
            batch_size_sum=self._rows,
            batch_size_count=self._batches,
            shed=self._shed,
        )

    def __repr__(self) -> str:
        return (
            f"Batcher({self.name!r}, max_batch_size={self.max_batch_size}, "
            f"max_wait_ms={self.max_wait * 1000:g}, queued={self._depth})"
        )


def _fail(requests: list[_Request], exc: BaseException) -> None:
    """Give every caller of a failed call the exception (cancel them if it is a cancellation)."""
    for request in requests:
        future = request[2]
        if future.done():
            continue
        if isinstance(exc, asyncio.CancelledError):
            future.cancel()
        else:
            future.set_exception(exc)


def _expire(future: asyncio.Future[Outputs]) -> None:
    """A queued request's timeout: its caller stops waiting; ``_gone`` uncounts its rows at
    once if it is still queued, and ``_take`` skips them."""
    if not future.done():
        future.set_exception(TimeoutError())


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _bucket(rows: int) -> int:
    """Index of the histogram bucket for a batch of ``rows`` rows (powers of two, then +Inf)."""
    index = (rows - 1).bit_length() if rows > 1 else 0
    return index if index < len(_BUCKETS) else len(_BUCKETS)


def _layout(inputs: Inputs) -> object:
    """What must match for two requests to be concatenated: keys, dtypes, trailing shapes.

    Inputs that are not a dict of arrays get a unique layout, so they are predicted alone
    (and fail alone, if the model rejects them). Validated :class:`Columns` of one signature
    share the layout of their column names (all float64 columns of n rows).
    """
    if type(inputs) is Columns:
        return inputs.names
    try:
        return tuple((key, value.dtype, value.shape[1:]) for key, value in inputs.items())
    except AttributeError:
        return object()


__all__ = [
    "BatchOutputMismatch",
    "Batcher",
    "BatcherClosed",
    "BatcherStats",
    "Inputs",
    "Overloaded",
]
