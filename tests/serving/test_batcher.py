"""The batcher's scheduling: immediate lone requests, natural batching, errors, shapes, close.

Slow predictions are simulated with a ``threading.Event`` gate inside the fake model, so the
tests sequence events instead of measuring time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from modelyard.serving.batcher import _RECENT, Batcher, BatcherClosed, Overloaded

SLOW = 0.05  # an expected predict time that makes the batcher use its executor
FAST = 1e-6  # one that makes it predict inline


class FakeModel:
    """Doubles ``x``; records every call. ``gate`` blocks calls until set (threaded mode)."""

    def __init__(
        self,
        gate: threading.Event | None = None,
        fail_if: Callable[[dict[str, np.ndarray]], bool] | None = None,
        delay: float = 0.0,
    ) -> None:
        self.gate = gate
        self.delay = delay
        self.fail_if = fail_if
        self.calls = 0
        self.sizes: list[int] = []
        self.batches: list[dict[str, np.ndarray]] = []
        self.started = threading.Event()

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        self.batches.append(inputs)
        self.sizes.append(len(next(iter(inputs.values()))))
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10), "the test never opened the gate"
        if self.delay:
            time.sleep(self.delay)
        if self.fail_if is not None and self.fail_if(inputs):
            raise ValueError("model exploded")
        x = inputs["x"]
        return {"y": x * 2, "total": x.reshape(len(x), -1).sum(axis=1)}


def row(value: float, rows: int = 1, width: int = 2) -> dict[str, np.ndarray]:
    """``rows`` distinct rows of ``width`` features, starting at ``value``."""
    base = value + np.arange(rows, dtype=np.float64)[:, None] / 100
    return {"x": np.repeat(base, width, axis=1)}


async def started(model: FakeModel) -> None:
    """Wait (without blocking the loop) until the model's first call has begun."""
    assert await asyncio.to_thread(model.started.wait, 10)


async def settle() -> None:
    """Let every ready task run up to its next real wait."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_lone_request_runs_at_once_in_a_batch_of_one() -> None:
    async def main() -> None:
        model = FakeModel()
        batcher = Batcher(model.predict, max_batch_size=64, max_wait_ms=50.0, name="m:1")
        inputs = row(3.0)
        out = await batcher.submit(inputs, 1)
        assert model.calls == 1
        assert model.sizes == [1]
        assert model.batches[0] is inputs  # fast path: the caller's dict, untouched
        np.testing.assert_array_equal(out["y"], [[6.0, 6.0]])
        stats = batcher.stats
        assert (stats.batches, stats.rows, stats.requests, stats.waits) == (1, 1, 1, 0)
        assert stats.threaded_calls == 1  # no estimate yet: the first call is kept off the loop
        assert stats.queue_depth == 0
        assert stats.batch_size_buckets[0] == (1.0, 1)
        assert stats.prometheus_buckets()[-1] == ("+Inf", 1.0)
        await batcher.close()

    asyncio.run(main())


def test_fast_model_predicts_inline_and_slow_model_in_a_thread() -> None:
    async def main() -> None:
        fast, slow = FakeModel(), FakeModel()
        inline = Batcher(fast.predict, expected_predict_seconds=FAST)
        threaded = Batcher(slow.predict, expected_predict_seconds=SLOW)
        await inline.submit(row(1.0), 1)
        await threaded.submit(row(1.0), 1)
        assert (inline.stats.inline_calls, inline.stats.threaded_calls) == (1, 0)
        assert (threaded.stats.inline_calls, threaded.stats.threaded_calls) == (0, 1)
        assert inline.stats.ewma_seconds_per_row is not None
        await inline.close()
        await threaded.close()

    asyncio.run(main())


def test_concurrent_requests_are_batched_and_each_caller_gets_its_rows() -> None:
    async def main() -> None:
        gate = threading.Event()
        model = FakeModel(gate)
        batcher = Batcher(
            model.predict, max_batch_size=16, max_wait_ms=0.0, expected_predict_seconds=SLOW
        )
        first = asyncio.create_task(batcher.submit(row(1000.0), 1))
        await started(model)  # the first request runs alone while the others arrive
        rows = [1 + i % 2 for i in range(63)]
        tasks = [
            asyncio.create_task(batcher.submit(row(float(i), n), n)) for i, n in enumerate(rows)
        ]
        await settle()
        assert batcher.stats.queue_depth == 63
        assert batcher.stats.queued_rows == sum(rows)
        gate.set()
        results = await asyncio.gather(*tasks)
        np.testing.assert_array_equal((await first)["y"], [[2000.0, 2000.0]])

        assert model.sizes[0] == 1
        assert model.calls < 64 // 4
        assert max(model.sizes) <= 16
        assert sum(model.sizes) == 1 + sum(rows)
        for i, (n, out) in enumerate(zip(rows, results, strict=True)):
            expected = row(float(i), n)["x"]
            np.testing.assert_array_equal(out["y"], expected * 2)
            np.testing.assert_array_equal(out["total"], expected.sum(axis=1))
        stats = batcher.stats
        assert stats.batches == model.calls
        assert stats.rows == 1 + sum(rows)
        assert stats.batch_size_count == model.calls
        assert stats.queue_depth == 0
        await batcher.close()

    asyncio.run(main())


def test_an_exception_reaches_exactly_the_callers_of_its_batch() -> None:
    async def main() -> None:
        gate = threading.Event()
        model = FakeModel(gate, fail_if=lambda inputs: bool((inputs["x"] < 0).any()))
        batcher = Batcher(model.predict, max_wait_ms=0.0, expected_predict_seconds=SLOW)
        first = asyncio.create_task(batcher.submit(row(1.0), 1))
        await started(model)
        doomed = [asyncio.create_task(batcher.submit(row(v), 1)) for v in (2.0, -1.0, 3.0)]
        await settle()
        gate.set()
        outcomes = await asyncio.gather(*doomed, return_exceptions=True)
        assert all(isinstance(o, ValueError) for o in outcomes), outcomes
        np.testing.assert_array_equal((await first)["y"], [[2.0, 2.0]])
        assert model.sizes == [1, 3]

        later = await batcher.submit(row(5.0), 1)  # the batcher keeps working
        np.testing.assert_array_equal(later["y"], [[10.0, 10.0]])
        assert batcher.stats.failed_batches == 1
        await batcher.close()

    asyncio.run(main())


def test_a_lone_failing_request_gets_its_exception() -> None:
    async def main() -> None:
        model = FakeModel(fail_if=lambda inputs: True)
        batcher = Batcher(model.predict, expected_predict_seconds=FAST)
        with pytest.raises(ValueError, match="exploded"):
            await batcher.submit(row(1.0), 1)
        model.fail_if = None
        assert (await batcher.submit(row(1.0), 1))["y"].shape == (1, 2)
        await batcher.close()

    asyncio.run(main())


def test_requests_of_different_shapes_are_not_concatenated() -> None:
    async def main() -> None:
        gate = threading.Event()
        model = FakeModel(gate)
        batcher = Batcher(model.predict, max_wait_ms=0.0, expected_predict_seconds=SLOW)
        first = asyncio.create_task(batcher.submit(row(1.0), 1))
        await started(model)
        requests: list[tuple[dict[str, Any], int]] = [
            (row(1.0), 1),
            (row(2.0, width=3), 1),
            (row(3.0, rows=2), 2),
            ({"x": np.array([[4, 4]], dtype=np.int64)}, 1),  # another dtype
            ({**row(5.0), "extra": np.zeros(1)}, 1),  # another set of keys
            (row(6.0, width=3), 1),
        ]
        tasks = [asyncio.create_task(batcher.submit(x, n)) for x, n in requests]
        await settle()
        gate.set()
        results = await asyncio.gather(*tasks)
        await first

        for (inputs, _), out in zip(requests, results, strict=True):
            np.testing.assert_array_equal(out["y"], inputs["x"] * 2)
            assert out["y"].dtype == inputs["x"].dtype
        # Every call saw one layout; the 2-wide floats and the 3-wide floats were grouped.
        for batch in model.batches:
            assert len({x.shape[1:] for x in batch.values() if x.ndim > 1}) <= 1
        assert sorted(model.sizes[1:]) == [1, 1, 2, 3]
        assert model.calls == 5
        assert batcher.stats.split_batches == 1
        await batcher.close()

    asyncio.run(main())


def test_close_finishes_queued_work_and_refuses_new_work() -> None:
    async def main() -> None:
        gate = threading.Event()
        model = FakeModel(gate)
        batcher = Batcher(model.predict, name="churn:2", expected_predict_seconds=SLOW)
        first = asyncio.create_task(batcher.submit(row(1.0), 1))
        await started(model)
        queued = asyncio.create_task(batcher.submit(row(2.0), 1))
        await settle()
        closing = asyncio.create_task(batcher.close())
        await settle()
        assert not closing.done()  # waits for the queued request
        with pytest.raises(BatcherClosed, match="churn:2"):
            await batcher.submit(row(3.0), 1)
        gate.set()
        await closing
        np.testing.assert_array_equal((await queued)["y"], [[4.0, 4.0]])
        await first
        assert batcher.closed
        with pytest.raises(BatcherClosed) as caught:
            await batcher.submit(row(4.0), 1)
        assert caught.value.status == 503
        assert model.calls == 2

    asyncio.run(main())


def test_a_cancelled_caller_is_skipped() -> None:
    async def main() -> None:
        gate = threading.Event()
        model = FakeModel(gate)
        batcher = Batcher(model.predict, max_wait_ms=0.0, expected_predict_seconds=SLOW)
        first = asyncio.create_task(batcher.submit(row(1.0), 1))
        await started(model)
        gone = asyncio.create_task(batcher.submit(row(2.0), 1))
        kept = asyncio.create_task(batcher.submit(row(3.0), 1))
        await settle()
        gone.cancel()
        gate.set()
        np.testing.assert_array_equal((await kept)["y"], [[6.0, 6.0]])
        await first
        assert gone.cancelled()
        assert model.sizes == [1, 1]
        await batcher.close()

    asyncio.run(main())


def test_a_busy_slow_model_waits_for_a_fuller_batch_and_a_cheap_one_never_waits() -> None:
    async def main() -> None:
        gate = threading.Event()
        model = FakeModel(gate)
        batcher = Batcher(
            model.predict, max_batch_size=8, max_wait_ms=1000.0, expected_predict_seconds=SLOW
        )
        first = asyncio.create_task(batcher.submit(row(0.0), 1))
        await started(model)
        tasks = [asyncio.create_task(batcher.submit(row(float(i)), 1)) for i in (1, 2)]
        await settle()  # two quick arrivals: the arrival rate is high, the queue below half
        gate.set()
        results = [await first, *await asyncio.gather(*tasks)]
        for i, out in enumerate(results):
            np.testing.assert_array_equal(out["y"], row(float(i))["x"] * 2)
        assert model.sizes == [1, 2]
        assert batcher.stats.waits == 1
        await batcher.close()

        cheap = FakeModel()
        inline = Batcher(
            cheap.predict, max_batch_size=8, max_wait_ms=1000.0, expected_predict_seconds=FAST
        )
        for i in range(20):  # back to back: frequent arrivals, but nothing to wait for
            await inline.submit(row(float(i)), 1)
        burst = [asyncio.create_task(inline.submit(row(float(i)), 1)) for i in range(3)]
        await asyncio.gather(*burst)
        assert inline.stats.waits == 0
        assert inline.stats.inline_calls == cheap.calls == 23
        await inline.close()

    asyncio.run(main())


def test_back_to_back_requests_to_a_slow_model_stop_waiting() -> None:
    async def main() -> None:
        model = FakeModel(delay=0.002)  # waits past WAIT_SECONDS: runs in the executor
        batcher = Batcher(model.predict, max_wait_ms=1.0)
        for i in range(30):
            out = await batcher.submit(row(float(i)), 1)
            np.testing.assert_array_equal(out["y"], row(float(i))["x"] * 2)
        assert model.sizes == [1] * 30
        # It uses little CPU (it sleeps), so after 16 executor calls one inline probe checks
        # whether it is cheap after all: it is not (2 ms of wall time), and it stays there.
        assert batcher.stats.threaded_calls == 29 and batcher.stats.inline_calls == 1
        assert batcher.stats.waits < 10  # unproductive waits are given up
        await batcher.close()

    asyncio.run(main())


def test_a_cheap_model_timed_in_the_executor_comes_back_inline() -> None:
    """Under load an executor call's wall time includes waiting for the GIL: a cheap model
    that ended up there (say one inline call was preempted) must not stay there."""

    async def main() -> None:
        model = FakeModel()  # microseconds of CPU
        batcher = Batcher(model.predict, max_wait_ms=0.0, expected_predict_seconds=SLOW)
        real_timed = batcher._timed

        def gil_bound(inputs: dict[str, np.ndarray]) -> tuple[Any, float, float]:
            outputs, _, cpu = real_timed(inputs)
            return outputs, 0.002, cpu  # 2 ms of wall time, as a busy event loop makes it

        batcher._timed = gil_bound  # type: ignore[method-assign]
        for i in range(20):
            await batcher.submit(row(float(i)), 1)
        assert batcher.stats.threaded_calls == 16  # then the probe ran inline and stayed
        assert batcher.stats.inline_calls == 4
        await batcher.close()

    asyncio.run(main())


def test_a_queued_request_times_out_and_its_rows_are_not_predicted() -> None:
    async def main() -> None:
        gate = threading.Event()
        model = FakeModel(gate)
        batcher = Batcher(model.predict, max_wait_ms=0.0, expected_predict_seconds=SLOW)
        first = asyncio.create_task(batcher.submit(row(1.0), 1))
        await started(model)
        with pytest.raises(TimeoutError):  # admitted (its expected wait is ~0.1 s), then late
            await batcher.submit(row(2.0), 1, timeout=0.3)
        gate.set()
        await first
        await settle()
        assert model.sizes == [1]  # the timed-out request was dropped from the queue
        out = await batcher.submit(row(3.0), 1, timeout=5)
        np.testing.assert_array_equal(out["y"], row(3.0)["x"] * 2)
        await batcher.close()

    asyncio.run(main())


def test_one_slow_inline_call_is_not_enough_to_leave_the_event_loop() -> None:
    """A cheap model whose inline call was once preempted (simulated by one slow call) stays
    inline; slow calls in a row move it to the executor."""

    async def main() -> None:
        model = FakeModel()
        batcher = Batcher(model.predict, max_wait_ms=0.0, expected_predict_seconds=FAST)
        await batcher.submit(row(0.0), 1)
        model.delay = 0.005
        await batcher.submit(row(1.0), 1)  # one 5 ms hiccup
        model.delay = 0.0
        for i in range(5):
            await batcher.submit(row(float(i)), 1)
        assert batcher.stats.threaded_calls == 0 and batcher.stats.inline_calls == 7
        model.delay = 0.005  # now really slow: every recent call is slow
        for i in range(_RECENT + 2):
            await batcher.submit(row(float(i)), 1)
        assert batcher.stats.threaded_calls > 0
        await batcher.close()

    asyncio.run(main())


def test_a_cheap_model_slowed_down_now_and_then_stays_inline() -> None:
    """On a busy machine a cheap call is now and then slow (preempted, the GIL taken by
    another thread while native code runs): only the fast ones say what the model costs."""

    async def main() -> None:
        model = FakeModel()
        batcher = Batcher(model.predict, max_wait_ms=0.0, expected_predict_seconds=FAST)
        for i in range(40):
            model.delay = 0.003 if i % 2 else 0.0  # every other call stalls for 3 ms
            await batcher.submit(row(float(i)), 1)
        assert batcher.stats.threaded_calls == 0 and batcher.stats.inline_calls == 40
        await batcher.close()

    asyncio.run(main())


def test_a_batch_size_is_costed_by_its_own_calls() -> None:
    """A call's cost is far from proportional to its rows: once a 16-row call of a cheap
    model has been seen to be cheap, 16-row calls run inline too."""

    def busy(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    class FixedCost(FakeModel):
        def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            busy(0.00005)  # 50 µs of CPU whatever the rows: 16 x 50 µs would not be cheap
            return super().predict(inputs)

    async def main() -> None:
        model = FixedCost()
        batcher = Batcher(model.predict, max_wait_ms=0.0, expected_predict_seconds=FAST)
        await batcher.submit(row(0.0), 1)  # inline: ~50 µs for one row
        for i in range(10):
            await batcher.submit(row(float(i), rows=16), 16)
        assert model.sizes == [1] + [16] * 10
        # The first 16-row call, scaled from the 1-row cost, went to the executor; measured
        # there, it was cheap, and the others ran inline (a thread hop slowed down by a busy
        # machine may take a call or two more to show it).
        assert batcher.stats.threaded_calls <= 3
        assert batcher.stats.inline_calls == 11 - batcher.stats.threaded_calls
        await batcher.close()

    asyncio.run(main())


def test_a_cheap_model_groups_requests_that_arrive_together_and_not_a_lone_clients() -> None:
    """Concurrent requests share predict calls through the worker; a client that waits for
    each answer is predicted by submit itself; the batcher follows the traffic both ways."""

    async def main() -> None:
        model = FakeModel()
        batcher = Batcher(model.predict, expected_predict_seconds=FAST, name="m:1")

        async def together(base: float) -> None:
            values = [base + i for i in range(8)]
            outs = await asyncio.gather(*(batcher.submit(row(v), 1) for v in values))
            for value, out in zip(values, outs, strict=True):
                np.testing.assert_array_equal(out["y"], [[2 * value, 2 * value]])

        for round_ in range(30):  # 240 requests, 8 at a time
            await together(100.0 * round_)
        assert model.calls <= 40, model.sizes  # ~one call per 8, not 240
        assert batcher.stats.direct_calls == 0

        calls, direct = model.calls, batcher.stats.direct_calls
        for i in range(300):  # one at a time: predicted by submit itself, bar the probes
            out = await batcher.submit(row(float(i)), 1)
            np.testing.assert_array_equal(out["y"], [[2.0 * i, 2.0 * i]])
        assert model.calls - calls == 300
        assert batcher.stats.direct_calls - direct >= 270  # the rest: probes

        calls = model.calls
        for round_ in range(30):  # concurrent again: a probe sees it and grouping resumes
            await together(100.0 * round_)
        assert model.calls - calls <= 100, model.sizes[-60:]
        assert batcher.stats.inline_calls == model.calls  # all of it on the event loop
        await batcher.close()

    asyncio.run(main())


def test_a_full_queue_sheds_at_once_and_never_grows_past_its_bound() -> None:
    """Overload: beyond ``max_queue`` waiting requests, a request is refused right away with
    Overloaded (503, Retry-After); those admitted are all answered."""

    async def main() -> None:
        gate = threading.Event()
        model = FakeModel(gate)
        batcher = Batcher(
            model.predict, max_wait_ms=0.0, max_queue=8, expected_predict_seconds=SLOW, name="m:1"
        )
        first = asyncio.create_task(batcher.submit(row(0.0), 1))
        await started(model)  # the model is busy: what comes now has to queue
        calls = [asyncio.create_task(batcher.submit(row(float(i)), 1)) for i in range(1, 101)]
        await settle()
        shed = [c for c in calls if c.done() and isinstance(c.exception(), Overloaded)]
        assert len(shed) == 92 and batcher.queue_depth == 8
        error = shed[0].exception()
        assert isinstance(error, Overloaded)
        assert error.status == 503 and error.reason == "queue_full"
        assert error.retry_after >= 1 and error.problem()["retry_after"] == error.retry_after
        assert "8 requests queued" in error.detail and "MODELYARD_GATEWAY_MAX_QUEUE" in error.detail
        gate.set()
        await first
        admitted = [c for c in calls if c not in shed]
        for i, call in enumerate(admitted, start=1):
            np.testing.assert_array_equal((await call)["y"], row(float(i))["x"] * 2)
        stats = batcher.stats
        assert stats.shed == 92 and stats.requests == 9 and stats.queue_depth == 0
        await batcher.close()

    asyncio.run(main())


def test_a_request_that_would_wait_past_its_timeout_is_shed_at_once() -> None:
    async def main() -> None:
        gate = threading.Event()
        model = FakeModel(gate)
        batcher = Batcher(
            model.predict, max_batch_size=1, max_wait_ms=0.0, expected_predict_seconds=SLOW
        )
        first = asyncio.create_task(batcher.submit(row(0.0), 1))
        await started(model)
        queued = [asyncio.create_task(batcher.submit(row(float(i)), 1)) for i in range(1, 4)]
        await settle()
        # 3 queued calls and its own at >= 50 ms each: at least 200 ms, past 100 ms
        wait = batcher.expected_wait(1)
        assert wait is not None and 4 * SLOW <= wait <= 5 * SLOW
        with pytest.raises(Overloaded) as shed:
            await batcher.submit(row(9.0), 1, timeout=0.1)
        assert shed.value.reason == "deadline" and shed.value.retry_after >= 1
        assert "after this request's 100 ms timeout" in shed.value.detail
        late_enough = asyncio.create_task(batcher.submit(row(5.0), 1, timeout=10))
        await settle()
        assert not late_enough.done()  # admitted: queued behind the others
        gate.set()
        await first
        for call in [*queued, late_enough]:
            await call
        assert batcher.stats.shed == 1
        await batcher.close()

    asyncio.run(main())


def test_the_expected_wait_is_unknown_until_a_call_is_costed_and_nothing_is_shed_on_it() -> None:
    async def main() -> None:
        gate = threading.Event()
        model = FakeModel(gate)
        batcher = Batcher(model.predict, max_wait_ms=0.0)  # no cost estimate at all
        assert batcher.expected_wait() is None
        first = asyncio.create_task(batcher.submit(row(0.0), 1))
        await started(model)
        second = asyncio.create_task(batcher.submit(row(1.0), 1, timeout=1e-6))
        await settle()
        assert batcher.stats.shed == 0  # admitted (then its timer ran out), not shed
        gate.set()
        await first
        with pytest.raises(TimeoutError):  # its timer ran out while it waited
            await second
        await batcher.close()

    asyncio.run(main())


def test_requests_that_timed_out_or_were_cancelled_in_the_queue_stop_counting_at_once() -> None:
    """A dead queued request must not count toward max_queue, the expected wait or the queue
    depth while it waits for the worker to reach it: with max_queue 4 and 4 requests timed
    out behind a busy model, the next request is admitted, not shed with queue_full."""

    async def main() -> None:
        gate = threading.Event()
        model = FakeModel(gate)
        batcher = Batcher(
            model.predict,
            max_batch_size=1,
            max_wait_ms=0.0,
            max_queue=4,
            expected_predict_seconds=SLOW,
            name="m:1",
        )
        first = asyncio.create_task(batcher.submit(row(0.0), 1))
        await started(model)  # the model is busy until the gate opens
        expiring = [  # admitted (expected waits ~0.1 and ~0.15 s), then late
            asyncio.create_task(batcher.submit(row(float(i)), 1, timeout=0.5)) for i in (1, 2)
        ]
        cancelled = [asyncio.create_task(batcher.submit(row(float(i)), 1)) for i in (3, 4)]
        await settle()
        assert batcher.queue_depth == 4 and batcher.stats.queued_rows == 4
        for task in cancelled:
            task.cancel()
        for task in expiring:
            with pytest.raises(TimeoutError):
                await task
        await settle()
        assert all(task.cancelled() for task in cancelled)
        stats = batcher.stats
        assert stats.queue_depth == 0 and stats.queued_rows == 0
        # The running call is past its expected cost: only the new request's own call is left.
        assert batcher.expected_wait(1) == SLOW  # nothing dead counted ahead
        # The queue bound counts live requests only: four more are admitted, the fifth shed.
        admitted = [asyncio.create_task(batcher.submit(row(float(i)), 1)) for i in range(5, 10)]
        await settle()
        assert [task.done() for task in admitted] == [False] * 4 + [True]
        assert isinstance(admitted[-1].exception(), Overloaded)
        assert batcher.stats.shed == 1 and batcher.queue_depth == 4
        gate.set()
        await first
        for i, task in enumerate(admitted[:-1], start=5):
            np.testing.assert_array_equal((await task)["y"], row(float(i))["x"] * 2)
        assert model.sizes == [1] * 5  # the dead requests were never predicted
        assert batcher.queue_depth == 0 and batcher.stats.queued_rows == 0
        assert len(batcher._queue) == 0
        await batcher.close()

    asyncio.run(main())


def test_dead_entries_do_not_pile_up_behind_a_long_call() -> None:
    """Cancelled requests leave the deque before the worker reaches them once they outnumber
    the live ones, so their inputs are not held for the whole of a long call."""

    async def main() -> None:
        gate = threading.Event()
        model = FakeModel(gate)
        batcher = Batcher(
            model.predict, max_wait_ms=0.0, max_queue=8, expected_predict_seconds=SLOW
        )
        first = asyncio.create_task(batcher.submit(row(0.0), 1))
        await started(model)
        kept = asyncio.create_task(batcher.submit(row(1.0), 1))
        for round_ in range(100):  # 800 requests queued and cancelled, 8 at a time
            tasks = [asyncio.create_task(batcher.submit(row(2.0), 1)) for _ in range(7)]
            await settle()
            assert not any(task.done() for task in tasks), round_  # all admitted
            for task in tasks:
                task.cancel()
            await settle()
        assert batcher.queue_depth == 1 and batcher.stats.shed == 0
        assert len(batcher._queue) <= 2 * 1 + 64 + 7
        gate.set()
        await first
        np.testing.assert_array_equal((await kept)["y"], row(1.0)["x"] * 2)
        assert model.sizes == [1, 1]
        await batcher.close()

    asyncio.run(main())
