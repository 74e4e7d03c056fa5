"""The live figures: workers publish their recent counters, a reader merges them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from tests.serving.conftest import GatewayServer

from modelyard.client import Client
from modelyard.config import Settings
from modelyard.errors import InvalidInput, NotFound
from modelyard.serving.live import (
    KEEPALIVE_SECONDS,
    STALE_SECONDS,
    GatewayCounts,
    LivePublisher,
    merge,
    quantile,
    read_live,
)
from modelyard.serving.metrics import LATENCY_BUCKETS
from modelyard.store.tables import LiveStatsRow
from modelyard.workspace import Workspace

BUCKETS = len(LATENCY_BUCKETS) + 1


def counts(
    requests: float = 0,
    errors: float = 0,
    rows: float = 0,
    batches: float = 0,
    hits: float = 0,
    misses: float = 0,
    latency: dict[int, float] | None = None,
) -> tuple[float, ...]:
    buckets = [0.0] * BUCKETS
    for i, n in (latency or {}).items():
        buckets[i] = float(n)
    return (
        float(requests),
        float(errors),
        float(rows),
        float(batches),
        float(hits),
        float(misses),
        *buckets,
    )


def sample(t: float, **kwargs: Any) -> list[float]:
    return [t, *counts(**kwargs)]


@pytest.fixture
def ws(any_workspace: Workspace) -> Workspace:
    """A workspace on SQLite, then on PostgreSQL."""
    return any_workspace


def rows_of(ws: Workspace) -> dict[tuple[str, str], LiveStatsRow]:
    with ws.store.read() as s:
        return {(r.worker, r.endpoint): r for r in s.scalars(select(LiveStatsRow))}


# --- merging ------------------------------------------------------------------------------


def test_two_workers_merge_into_one_series_per_bucket() -> None:
    # now 1000.7: the newest bucket ends at 1000; 10 s are the buckets ending 992 ... 1000
    a = [
        sample(990 + 2 * k, requests=10 * k, errors=k, rows=10 * k, batches=5 * k, hits=3 * k,
               misses=7 * k, latency={4: 10 * k})
        for k in range(6)
    ]  # fmt: skip
    b = [
        sample(990 + 2 * k, requests=4 * k, rows=4 * k, batches=4 * k, latency={6: 4 * k})
        for k in range(6)
    ]
    series = merge("fraud", [a, b], now=1000.7, seconds=10)
    assert [t.timestamp() for t in series.times] == [992, 994, 996, 998, 1000]
    assert series.workers == 2 and series.requests == 70 and series.errors == 5
    assert series.requests_per_second == [7.0] * 5
    assert series.errors_per_second == [0.5] * 5
    assert series.batch_size == [pytest.approx(14 / 9)] * 5
    assert series.cache_hit_rate == [pytest.approx(0.3)] * 5
    # 10 requests in (5 ms, 10 ms], 4 in (25 ms, 50 ms], per bucket
    assert series.latency_p50_ms == [pytest.approx(5 + 5 * 7 / 10)] * 5
    assert series.latency_p99_ms == [pytest.approx(25 + 25 * (0.99 * 14 - 10) / 4)] * 5


def test_a_delta_is_shared_by_the_buckets_it_spans_and_silence_is_zero() -> None:
    # one sample 3 s after another (a late tick): 12 requests over (993, 996]; then nothing
    worker = [sample(990), sample(993), sample(996, requests=12)]
    series = merge("fraud", [worker], now=1000.7, seconds=12)
    times = [t.timestamp() for t in series.times]
    assert times == [990, 992, 994, 996, 998, 1000]
    by_time = dict(zip(times, series.requests_per_second, strict=True))
    assert by_time[990] is None  # before the worker's first sample: unknown
    assert by_time[992] == 0 and by_time[994] == pytest.approx(4 / 2)  # 1 s of 3: 4 requests
    assert by_time[996] == pytest.approx(8 / 2)
    # no sample after 996: the worker writes when its counters change, so none changed
    assert by_time[998] == 0 and by_time[1000] == 0
    assert series.latency_p50_ms[-1] is None and series.cache_hit_rate[-1] is None


def test_quantiles_interpolate_inside_latency_buckets() -> None:
    assert quantile([0.0] * BUCKETS, 0.5) is None
    buckets = [0.0] * BUCKETS
    buckets[2] = 90  # (1 ms, 2.5 ms]
    buckets[-1] = 10  # over the largest bound
    assert quantile(buckets, 0.5) == pytest.approx(0.001 + 0.0015 * 50 / 90)
    assert quantile(buckets, 0.9) == pytest.approx(0.0025)
    assert quantile(buckets, 0.99) == LATENCY_BUCKETS[-1]  # as Prometheus says: the last bound
    first = [0.0] * BUCKETS
    first[0] = 4  # (0, 0.5 ms]
    assert quantile(first, 0.25) == pytest.approx(0.0005 / 4)


def test_samples_of_another_layout_are_skipped() -> None:
    good = [sample(996), sample(998, requests=4)]
    series = merge("fraud", [good, [[996, 1, 2], "x"], []], now=1000.7, seconds=4)
    assert series.workers == 1
    assert series.requests_per_second == [2.0, 0.0]


# --- publishing and reading through the store ---------------------------------------------


def test_nothing_is_written_while_idle(ws: Workspace) -> None:
    current = {"fraud": counts()}
    publisher = LivePublisher(ws, lambda: current, 2.0, worker="host:1")
    start = time.time()

    async def ticks() -> list[int]:
        written = []
        for k in range(3):  # idle since it started
            written.append(await publisher.publish(now=start + 2 * k))
        current["fraud"] = counts(requests=5, latency={3: 5})
        written.append(await publisher.publish(now=start + 6))  # traffic: written
        written.append(await publisher.publish(now=start + 8))  # unchanged: not written
        # still unchanged, but the ring shows traffic: refreshed, so readers keep it
        written.append(await publisher.publish(now=start + 8 + KEEPALIVE_SECONDS))
        return written

    assert asyncio.run(ticks()) == [0, 0, 0, 1, 0, 1]
    samples = rows_of(ws)[("host:1", "fraud")].samples
    assert samples[0][1:] == list(counts())  # from its start, when every count was zero
    assert samples[4] == sample(round(start + 6, 3), requests=5, latency={3: 5})
    assert read_live(ws, "fraud", 60, now=start + 10).requests == pytest.approx(5)


def test_what_was_answered_before_the_first_sample_counts(ws: Workspace) -> None:
    publisher = LivePublisher(ws, lambda: {"fraud": counts(requests=3)}, 2.0, worker="host:1")
    start = time.time()
    assert asyncio.run(publisher.publish(now=start + 1)) == 1
    assert read_live(ws, "fraud", 10, now=start + 4).requests == pytest.approx(3)


def test_an_endpoint_served_again_counts_from_where_it_was(ws: Workspace) -> None:
    current: dict[str, tuple[float, ...]] = {"fraud": counts(requests=5)}
    publisher = LivePublisher(ws, lambda: current, 2.0, worker="host:1")
    start = time.time() // 2 * 2 + 2

    async def ticks() -> list[int]:
        written = [await publisher.publish(now=start)]
        current.pop("fraud")  # deleted, then created again: its counters kept counting
        written.append(await publisher.publish(now=start + 2))
        current["fraud"] = counts(requests=5)
        written.append(await publisher.publish(now=start + 4))  # unchanged: not written
        current["fraud"] = counts(requests=7)
        written.append(await publisher.publish(now=start + 6))
        return written

    assert asyncio.run(ticks()) == [1, 0, 0, 1]
    assert read_live(ws, "fraud", 10, now=start + 7).requests == pytest.approx(2)


def test_stale_workers_are_ignored_then_deleted(ws: Workspace) -> None:
    now = time.time() // 2 * 2 + 1  # the series ends at a multiple of 2 s: now - 1
    gone = LivePublisher(ws, dict, 2.0, worker="host:1")
    live = LivePublisher(ws, dict, 2.0, worker="host:2")
    old = now - STALE_SECONDS - 10
    gone.write({"fraud": [sample(old - 2), sample(old, requests=100)]}, old)
    assert read_live(ws, "fraud", 60, now=now).workers == 0  # ignored by readers
    assert ("host:1", "fraud") in rows_of(ws)
    live.write({"fraud": [sample(now - 5), sample(now - 3, requests=6)]}, now)
    assert set(rows_of(ws)) == {("host:2", "fraud")}  # deleted by the next writer
    series = read_live(ws, "fraud", 60, now=now)
    assert series.workers == 1 and series.requests == pytest.approx(6)


def test_live_of_an_unknown_endpoint_is_not_found(ws: Workspace) -> None:
    with pytest.raises(NotFound, match="modelyard endpoints list"):
        ws.endpoints.live("nope")
    with pytest.raises(InvalidInput, match="between 2 and 300"):
        read_live(ws, "fraud", 3600)


def test_batch_counts_never_go_back_when_a_version_is_loaded_again() -> None:
    def model(key: str, rows: int, batches: int) -> Any:
        stats = SimpleNamespace(rows=rows, batches=batches)
        return SimpleNamespace(key=key, batcher=SimpleNamespace(stats=stats))

    served: dict[str, Any] = {}
    metrics = SimpleNamespace(endpoint_totals=dict)
    gateway = SimpleNamespace(metrics=metrics, state=SimpleNamespace(served=served))
    read = GatewayCounts(gateway)  # type: ignore[arg-type]
    first = model("v1", 30, 10)
    served["fraud"] = SimpleNamespace(models=(first, first))  # a model twice counts once
    assert read()["fraud"][2:4] == (30, 10)
    first.batcher.stats.rows, first.batcher.stats.batches = 40, 12
    assert read()["fraud"][2:4] == (40, 12)
    served["fraud"] = SimpleNamespace(models=(model("v1", 3, 1),))  # reloaded: a new batcher
    assert read()["fraud"][2:4] == (43, 13)


def test_a_gateway_publishes_what_it_answers(tmp_path: Path, models: Any, frame: Any) -> None:
    X, _ = frame
    ws = Workspace.open(Settings(home=tmp_path / "home", live_stats_seconds=0.25))
    server = GatewayServer(ws)
    try:
        client = Client(str(ws.settings.resolved_home), settings=ws.settings)
        client.log_model(models["lr"], "fraud", input_example=X.head(5))
        client.close()
        ws.endpoints.create("fraud", "models:/fraud/1", cache={"enabled": True, "ttl_seconds": 60})
        url = server.start()
        body = {"dataframe_split": {"columns": list(X.columns), "data": X.head(3).values.tolist()}}
        with httpx.Client(base_url=url) as http:
            for _ in range(20):
                assert http.post("/endpoints/fraud/invocations", json=body).status_code == 200
            assert http.post("/endpoints/fraud/invocations", json={"x": 1}).status_code == 400
        deadline = time.monotonic() + 20
        series = ws.endpoints.live("fraud", 60)
        while series.requests < 21 and time.monotonic() < deadline:
            time.sleep(0.25)
            series = ws.endpoints.live("fraud", 60)
        assert series.requests == pytest.approx(21) and series.errors == pytest.approx(1)
        assert series.workers == 1 and series.updated_at is not None
        assert any(v for v in series.latency_p50_ms if v is not None)
        assert any(v == pytest.approx(3.0) for v in series.batch_size if v is not None)
        # 1 miss, then 19 hits
        assert sum(v or 0 for v in series.requests_per_second) * 2 == pytest.approx(21)
        assert any(v is not None and v > 0.5 for v in series.cache_hit_rate)
    finally:
        server.stop()
        ws.close()
