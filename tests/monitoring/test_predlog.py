"""The prediction log: round trip, segmenting, time filtering, overload, write failures."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from modelyard.monitoring import PredictionLog
from modelyard.workspace import Workspace

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def plog(workspace: Workspace) -> Iterator[PredictionLog]:
    pl = PredictionLog(workspace, flush_seconds=3600, retry_backoff=0.001)
    pl.start()
    yield pl
    pl.close()


def log_one(pl: PredictionLog, endpoint: str = "churn", i: int = 0, **kw: Any) -> bool:
    args: dict[str, Any] = {
        "endpoint": endpoint,
        "model": "churn-model",
        "version": 1,
        "request_id": f"r{i}",
        "inputs": {"x": np.array([float(i)])},
        "outputs": {"y": np.array([i % 2])},
        "rows": 1,
        "latency_ms": 1.5,
        "at": T0 + timedelta(seconds=i),
    }
    args.update(kw)
    return pl.log(**args)


def test_round_trip_values_types_and_row_expansion(any_workspace: Workspace) -> None:
    pl = PredictionLog(any_workspace, flush_seconds=3600)
    pl.start()
    proba = np.array([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5]], dtype=np.float32)
    assert pl.log(
        endpoint="churn",
        model="churn-model",
        version=3,
        request_id="req-a",
        inputs={
            "age": np.array([31, 45, 52], dtype=np.int64),
            "plan": np.array(["basic", "pro", "basic"]),
            "spend": np.array([10.5, 20.25, 0.0]),
        },
        outputs={"label": np.array([1, 0, 1]), "proba": proba},
        rows=3,
        latency_ms=12.5,
        at=T0,
    )
    assert pl.log(
        endpoint="churn",
        model="churn-model-b",
        version=4,
        request_id="req-b",
        inputs={
            "age": np.array([20], dtype=np.int64),
            "plan": np.array(["pro"]),
            "spend": np.array([1.0]),
        },
        outputs={"label": np.array([0]), "proba": np.array([[0.7, 0.3]], dtype=np.float32)},
        rows=1,
        latency_ms=3.0,
        at=T0 + timedelta(seconds=1),
        shadow=True,
    )
    pl.flush()
    table = pl.read("churn")
    pl.close()

    assert table.num_rows == 4
    schema = table.schema
    assert schema.field("request_id").type == pa.string()
    assert schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("endpoint").type == pa.string()
    assert schema.field("model").type == pa.string()
    assert schema.field("version").type == pa.int32()
    assert schema.field("latency_ms").type == pa.float32()
    assert schema.field("shadow").type == pa.bool_()
    assert schema.field("in__age").type == pa.int64()
    assert schema.field("in__plan").type == pa.string()
    assert schema.field("in__spend").type == pa.float64()
    assert schema.field("out__label").type == pa.int64()
    proba_type = schema.field("out__proba").type
    assert pa.types.is_fixed_size_list(proba_type) or pa.types.is_list(proba_type)
    assert proba_type.value_type == pa.float32()

    rows = table.to_pylist()
    assert [r["request_id"] for r in rows] == ["req-a", "req-a", "req-a", "req-b"]
    assert [r["at"] for r in rows] == [T0, T0, T0, T0 + timedelta(seconds=1)]
    assert {r["endpoint"] for r in rows} == {"churn"}
    assert [r["model"] for r in rows] == ["churn-model"] * 3 + ["churn-model-b"]
    assert [r["version"] for r in rows] == [3, 3, 3, 4]
    assert [r["latency_ms"] for r in rows] == [12.5, 12.5, 12.5, 3.0]
    assert [r["shadow"] for r in rows] == [False, False, False, True]
    assert [r["in__age"] for r in rows] == [31, 45, 52, 20]
    assert [r["in__plan"] for r in rows] == ["basic", "pro", "basic", "pro"]
    assert [r["in__spend"] for r in rows] == [10.5, 20.25, 0.0, 1.0]
    assert [r["out__label"] for r in rows] == [1, 0, 1, 0]
    got = np.array([r["out__proba"] for r in rows], dtype=np.float32)
    np.testing.assert_array_equal(got, np.vstack([proba, [[0.7, 0.3]]]).astype(np.float32))

    stats = pl.stats()
    assert stats["logged_rows"] == 4
    assert stats["written_rows"] == 4
    assert stats["queued_rows"] == 0
    assert stats["dropped_rows"] == 0
    assert stats["write_errors"] == 0
    assert stats["segments"] == 1
    (segment,) = pl.segments("churn")
    assert segment.rows == 4
    assert segment.start_at == T0
    assert segment.end_at == T0 + timedelta(seconds=1)
    assert segment.digest.startswith("sha256:")
    assert any_workspace.artifacts.exists(segment.digest)


def test_default_time_is_now(plog: PredictionLog) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    assert log_one(plog, at=None)
    plog.flush()
    (at,) = plog.read("churn").column("at").to_pylist()
    assert before <= at <= datetime.now(UTC) + timedelta(seconds=1)


def test_segments_split_by_endpoint_and_column_set(plog: PredictionLog) -> None:
    for i in range(5):
        log_one(plog, "a", i)
    for i in range(3):
        log_one(plog, "b", i)
    # Same endpoint, another column set (a new model version with one more feature).
    log_one(plog, "a", 10, inputs={"x": np.array([1.0]), "z": np.array([2.0])})
    plog.flush()

    assert sorted(s.rows for s in plog.segments("a")) == [1, 5]
    assert [s.rows for s in plog.segments("b")] == [3]
    a = plog.read("a")
    assert a.num_rows == 6
    assert set(a.column("endpoint").to_pylist()) == {"a"}
    z = dict(zip(a.column("request_id").to_pylist(), a.column("in__z").to_pylist(), strict=True))
    assert z["r10"] == 2.0
    assert z["r0"] is None
    assert set(plog.read("b").column("request_id").to_pylist()) == {"r0", "r1", "r2"}
    assert plog.read("nobody").num_rows == 0


def test_segments_split_by_size(workspace: Workspace) -> None:
    pl = PredictionLog(workspace, segment_rows=4, flush_seconds=3600)
    pl.start()
    for i in range(3):  # three 3-row requests: 9 rows -> 4 + 4 + 1
        assert pl.log(
            endpoint="e",
            model="m",
            version=1,
            request_id=f"r{i}",
            inputs={"x": np.arange(3, dtype=np.float64) + 10 * i},
            outputs={"y": np.zeros(3)},
            rows=3,
            latency_ms=1.0,
            at=T0 + timedelta(seconds=i),
        )
    pl.close()
    segments = pl.segments("e")
    assert [s.rows for s in segments] == [4, 4, 1]
    table = pl.read("e")
    assert table.column("in__x").to_pylist() == [0, 1, 2, 10, 11, 12, 20, 21, 22]
    assert table.column("request_id").to_pylist() == ["r0"] * 3 + ["r1"] * 3 + ["r2"] * 3
    assert pl.stats()["segments"] == 3


def test_time_and_version_filtering(plog: PredictionLog) -> None:
    for i in range(10):
        log_one(plog, i=i, version=1 if i < 5 else 2)
        if i in (3, 6):  # separate segments so segment pruning is exercised too
            plog.flush()
    plog.flush()
    assert [s.rows for s in plog.segments("churn")] == [4, 3, 3]

    start, end = T0 + timedelta(seconds=2), T0 + timedelta(seconds=5)
    got = plog.read("churn", start=start, end=end)
    assert got.column("request_id").to_pylist() == ["r2", "r3", "r4"]
    # Only segments that can hold rows in [start, end) are read.
    assert [s.rows for s in plog.segments("churn", start, end)] == [4, 3]
    assert [s.rows for s in plog.segments("churn", T0 + timedelta(seconds=7))] == [3]
    assert plog.segments("churn", end=T0) == []

    assert plog.read("churn", start=T0 + timedelta(seconds=8)).column("request_id").to_pylist() == [
        "r8",
        "r9",
    ]
    assert plog.read("churn", end=T0 + timedelta(seconds=1)).num_rows == 1
    assert plog.read("churn", version=2).column("request_id").to_pylist() == [
        f"r{i}" for i in range(5, 10)
    ]
    later = T0 + timedelta(seconds=7)
    assert plog.read("churn", start=start, end=later, version=2).num_rows == 2
    # Naive datetimes are taken as UTC.
    naive = plog.read("churn", start=start.replace(tzinfo=None), end=end.replace(tzinfo=None))
    assert naive.num_rows == 3


def test_flush_makes_everything_visible(plog: PredictionLog) -> None:
    for i in range(200):
        assert log_one(plog, i=i)
    plog.flush()
    assert plog.read("churn").num_rows == 200
    stats = plog.stats()
    assert stats["logged_rows"] == stats["written_rows"] == 200
    assert stats["queued_rows"] == 0


def test_writes_after_flush_seconds_without_flush(workspace: Workspace) -> None:
    pl = PredictionLog(workspace, flush_seconds=0.01)
    pl.start()
    log_one(pl)
    # Liveness, not timing: the writer gets there on its own, however slow the machine.
    deadline = time.monotonic() + 60
    while pl.stats()["written_rows"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pl.read("churn").num_rows == 1
    pl.close()


def test_overload_drops_without_blocking(workspace: Workspace) -> None:
    pl = PredictionLog(workspace, max_queue_rows=5)  # writer not started
    assert all(log_one(pl, i=i) for i in range(4))
    three_rows = {"inputs": {"x": np.zeros(3)}, "outputs": {"y": np.zeros(3)}, "rows": 3}
    assert log_one(pl, i=50, **three_rows) is False  # 4 + 3 > 5
    assert log_one(pl, i=4) is True  # exactly 5
    assert log_one(pl, i=5) is False
    assert log_one(pl, i=6) is False
    assert pl.dropped == 3
    stats = pl.stats()
    assert stats["logged_rows"] == 5
    assert stats["queued_rows"] == 5
    assert stats["dropped_rows"] == 5
    assert stats["written_rows"] == 0

    pl.flush()  # without a writer thread, flush writes in the caller
    assert pl.stats()["queued_rows"] == 0
    assert log_one(pl, i=7) is True  # room again
    pl.close()
    ids = pl.read("churn").column("request_id").to_pylist()
    assert ids == [f"r{i}" for i in (0, 1, 2, 3, 4, 7)]
    assert log_one(pl, i=8) is False  # closed


class FlakyPut:
    def __init__(self, real: Any, failures: int) -> None:
        self.real = real
        self.failures = failures
        self.calls = 0

    def __call__(self, data: bytes) -> str:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise OSError("artifact store unreachable")
        return str(self.real(data))


def test_write_failure_is_retried(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    flaky = FlakyPut(workspace.artifacts.put_bytes, failures=2)
    monkeypatch.setattr(workspace.artifacts, "put_bytes", flaky)
    pl = PredictionLog(workspace, flush_seconds=3600, retries=3, retry_backoff=0.001)
    pl.start()
    log_one(pl)
    pl.flush()
    assert flaky.calls == 3
    stats = pl.stats()
    assert stats["write_errors"] == 0
    assert stats["written_rows"] == 1
    assert pl.read("churn").num_rows == 1
    pl.close()


def test_write_failure_is_counted_and_writer_keeps_working(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    flaky = FlakyPut(workspace.artifacts.put_bytes, failures=3)
    monkeypatch.setattr(workspace.artifacts, "put_bytes", flaky)
    pl = PredictionLog(workspace, flush_seconds=3600, retries=2, retry_backoff=0.001)
    pl.start()
    for i in range(4):
        log_one(pl, i=i)
    pl.flush()
    stats = pl.stats()
    assert flaky.calls == 3
    assert stats["write_errors"] == 1
    assert stats["dropped_rows"] == 4
    assert stats["written_rows"] == 0
    assert stats["queued_rows"] == 0
    assert pl.segments("churn") == []

    assert pl.running
    for i in range(4, 7):
        assert log_one(pl, i=i)
    pl.flush()
    assert pl.read("churn").column("request_id").to_pylist() == ["r4", "r5", "r6"]
    stats = pl.stats()
    assert stats["write_errors"] == 1
    assert stats["written_rows"] == 3
    pl.close()


def test_index_failure_is_retried(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = workspace.store.write
    failures = [1]

    def flaky_write(actor: str) -> Any:
        if failures[0]:
            failures[0] -= 1
            raise RuntimeError("database went away")
        return real_write(actor)

    monkeypatch.setattr(workspace.store, "write", flaky_write)
    pl = PredictionLog(workspace, flush_seconds=3600, retry_backoff=0.001)
    pl.start()
    log_one(pl)
    pl.flush()
    assert pl.stats()["write_errors"] == 0
    assert pl.read("churn").num_rows == 1
    pl.close()


def test_invalid_record_is_dropped_not_fatal(plog: PredictionLog) -> None:
    assert log_one(plog, i=0, inputs={"x": np.zeros(2)})  # 2 values for a 1-row request
    assert log_one(plog, i=1)
    plog.flush()
    assert plog.read("churn").column("request_id").to_pylist() == ["r1"]
    stats = plog.stats()
    assert stats["invalid_records"] == 1
    assert stats["dropped_rows"] == 1
    assert stats["queued_rows"] == 0


def test_close_drains_and_stops(workspace: Workspace) -> None:
    pl = PredictionLog(workspace, segment_rows=100, flush_seconds=3600)
    pl.start()
    pl.start()  # one writer thread only
    for i in range(250):
        assert log_one(pl, i=i)
    pl.close()
    assert not pl.running
    stats = pl.stats()
    assert stats["written_rows"] == 250
    assert stats["queued_rows"] == 0
    assert sorted(s.rows for s in pl.segments("churn")) == [50, 100, 100]
    assert log_one(pl, i=999) is False
    with pytest.raises(RuntimeError):
        pl.start()


def test_context_manager(workspace: Workspace) -> None:
    with PredictionLog(workspace) as pl:
        log_one(pl)
    assert pl.read("churn").num_rows == 1


def test_many_records_are_converted_in_slices_and_kept_in_order(workspace, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Over _CONVERT_EVERY records go through the incremental conversion; none is lost."""
    import numpy as np

    from modelyard.monitoring import PredictionLog, predlog

    monkeypatch.setattr(predlog, "_CONVERT_EVERY", 256)  # 1,000 records: three slices and a rest
    log = PredictionLog(workspace, segment_rows=700)
    n = 1000
    for i in range(n):
        assert log.log(
            endpoint="e",
            model="m",
            version=1,
            request_id=f"r{i}",
            inputs={"x": np.array([float(i)])},
            outputs={"y": np.array([i % 2])},
            rows=1,
            latency_ms=1.0,
        )
    log.flush()
    table = log.read("e")
    assert table.num_rows == n
    assert table["request_id"].to_pylist() == [f"r{i}" for i in range(n)]
    assert table["in__x"].to_pylist() == [float(i) for i in range(n)]
    assert log.stats()["written_rows"] == n and len(log.segments("e")) == 2


def test_failed_requests_are_logged_with_their_status(plog: PredictionLog) -> None:
    assert log_one(plog, i=0)
    assert plog.log_error(
        endpoint="churn",
        model="churn-model",
        version=1,
        request_id="bad",
        status=422,
        latency_ms=0.4,
        at=T0 + timedelta(seconds=1),
    )
    plog.flush()
    table = plog.read("churn").sort_by("at")
    assert table["request_id"].to_pylist() == ["r0", "bad"]
    assert table["status"].to_pylist() == [200, 422]
    # The failed request has no inputs or outputs: its row holds nulls there.
    assert table["in__x"].to_pylist() == [0.0, None]


def test_gateway_tables_are_logged_like_plain_columns(
    plog: PredictionLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway hands over validated Columns (one matrix); they land exactly as a dict of
    the same columns would, in one segment with them, multi-row requests included."""
    from modelyard.monitoring import predlog
    from modelyard.serving.validation import Columns

    monkeypatch.setattr(predlog, "_CONVERT_EVERY", 256)

    names = ("a", "b", "c")
    rng = np.random.default_rng(3)
    expected: dict[str, list[float]] = {name: [] for name in names}
    for i in range(600):  # over _CONVERT_EVERY: the slices join the matrices
        rows = 1 + i % 3
        matrix = np.ascontiguousarray(rng.normal(size=(3, rows)))
        inputs: Any = (
            {n: matrix[j].copy() for j, n in enumerate(names)}
            if i % 50 == 0  # now and then a plain dict of the same columns
            else Columns(names, matrix)
        )
        for j, name in enumerate(names):
            expected[name].extend(matrix[j].tolist())
        assert log_one(plog, i=i, inputs=inputs, outputs={"y": np.arange(rows)}, rows=rows)
    plog.flush()
    table = plog.read("churn")
    assert len(plog.segments("churn")) == 1
    assert table.num_rows == len(expected["a"])
    for name in names:
        assert table[f"in__{name}"].type == pa.float64()
        assert table[f"in__{name}"].to_pylist() == expected[name]


def test_gateway_table_with_the_wrong_row_count_is_dropped(plog: PredictionLog) -> None:
    from modelyard.serving.validation import Columns

    bad = Columns(("a", "b"), np.zeros((2, 3)))
    assert log_one(plog, i=0, inputs=bad, rows=1, outputs={"y": np.array([0])})
    assert log_one(plog, i=1)
    plog.flush()
    assert plog.stats()["invalid_records"] == 1
    assert plog.read("churn")["request_id"].to_pylist() == ["r1"]


def test_variant_and_deadline_columns(plog: PredictionLog) -> None:
    """A deadline is met when the request answered within it; a failed request (shed with 503)
    missed it however fast it failed; rows without a deadline hold nulls."""
    from modelyard.monitoring.predlog import DEADLINE_MET, DEADLINE_MS, VARIANT

    assert log_one(plog, i=0, variant="accurate", deadline_ms=50.0, latency_ms=20.0)
    assert log_one(plog, i=1, variant="accurate", deadline_ms=50.0, latency_ms=80.0)
    assert log_one(plog, i=2, variant="fast", deadline_ms=50.0, latency_ms=50.0)  # just in time
    assert log_one(plog, i=3, latency_ms=5.0)  # no variant, no deadline
    assert log_one(  # a two-row request: both rows carry its variant and deadline
        plog,
        i=4,
        variant="fast",
        deadline_ms=10.0,
        latency_ms=4.0,
        inputs={"x": np.array([4.0, 4.5])},
        outputs={"y": np.array([0, 1])},
        rows=2,
    )
    assert plog.log_error(
        endpoint="churn",
        model="churn-model",
        version=0,
        request_id="shed",
        status=503,
        latency_ms=0.2,
        at=T0 + timedelta(seconds=5),
        deadline_ms=50.0,
    )
    assert plog.log_error(  # a failure without a deadline: no verdict
        endpoint="churn",
        model="churn-model",
        version=1,
        request_id="broken",
        status=500,
        latency_ms=1.0,
        at=T0 + timedelta(seconds=6),
        variant="fast",
    )
    plog.flush()
    table = plog.read("churn").sort_by("at")
    assert table["request_id"].to_pylist() == ["r0", "r1", "r2", "r3", "r4", "r4", "shed", "broken"]
    assert table[VARIANT].to_pylist() == [
        "accurate",
        "accurate",
        "fast",
        None,
        "fast",
        "fast",
        None,
        "fast",
    ]
    assert table[VARIANT].type == pa.string()
    assert table[DEADLINE_MS].type == pa.float32()
    assert table[DEADLINE_MS].to_pylist() == [50.0, 50.0, 50.0, None, 10.0, 10.0, 50.0, None]
    assert table[DEADLINE_MET].type == pa.bool_()
    assert table[DEADLINE_MET].to_pylist() == [True, False, True, None, True, True, False, None]


def test_segments_without_deadlines_have_no_deadline_columns(plog: PredictionLog) -> None:
    """Like guard_score and caller, the columns appear only in segments whose records have
    them; reading old and new segments together gives nulls for the old rows."""
    from modelyard.monitoring.predlog import DEADLINE_MET, DEADLINE_MS, VARIANT

    assert log_one(plog, i=0)
    plog.flush()
    old = plog.read("churn")
    assert not {VARIANT, DEADLINE_MS, DEADLINE_MET} & set(old.column_names)
    assert log_one(plog, i=1, variant="fast", deadline_ms=30.0, latency_ms=40.0)
    assert log_one(plog, i=2, variant="fast")  # a variant without a deadline
    plog.flush()
    both = plog.read("churn").sort_by("at")
    assert len(plog.segments("churn")) == 2
    assert both[VARIANT].to_pylist() == [None, "fast", "fast"]
    assert both[DEADLINE_MS].to_pylist() == [None, 30.0, None]
    assert both[DEADLINE_MET].to_pylist() == [None, False, None]


def test_newest_reads_only_the_newest_segments(workspace: Workspace) -> None:
    pl = PredictionLog(workspace, segment_rows=4, flush_seconds=3600)
    pl.start()
    for i in range(5):  # five 3-row requests: 15 rows -> 4 + 4 + 4 + 3
        assert pl.log(
            endpoint="e",
            model="m",
            version=1,
            request_id=f"r{i}",
            inputs={"x": np.arange(3, dtype=np.float64) + 10 * i},
            outputs={"y": np.zeros(3)},
            rows=3,
            latency_ms=1.0,
            at=T0 + timedelta(seconds=i),
        )
    pl.close()
    table, until = pl.newest("e", 5)
    # the two newest segments, newest request first (a request's rows in their order)
    assert table.column("in__x").to_pylist() == [40, 41, 42, 30, 31, 32, 22]
    assert until == T0 + timedelta(seconds=4)
    empty, nothing = pl.newest("other", 5)
    assert empty.num_rows == 0 and nothing is None


def test_recent_predictions_of_an_endpoint(workspace: Workspace) -> None:
    from modelyard.errors import InvalidInput, NotFound

    with pytest.raises(NotFound):
        workspace.monitoring.recent_predictions("no-such-endpoint")
    with pytest.raises(InvalidInput):
        workspace.monitoring.recent_predictions("churn", limit=0)
