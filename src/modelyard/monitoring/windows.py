"""Window profiles: every closed time window of an endpoint's prediction log, profiled once.

For each endpoint and granularity the monitor keeps a watermark: every window that ends at or
before it has been profiled. A pass profiles the windows that have closed since (a window is
closed ``lateness_seconds`` after its end, long enough for the gateway's log writer to have
flushed it), writes one :class:`~modelyard.store.tables.WindowProfileRow` per model version
that answered in the window, and moves the watermark, all in one transaction. A window's row
is always rebuilt whole from its log segments, so a pass that is repeated after a crash
replaces rather than adds: no window is skipped and none is counted twice.

The finest granularity is read from the log; coarser ones that are multiples of it are merged
from the finer rows (profiles are mergeable), so an hour or a day never re-reads the log.

What a window holds per version: a :class:`~modelyard.monitoring.profiles.Profile` of the
inputs (by name) and outputs (``output.<name>``; a 2-D output such as class probabilities
becomes ``output.<name>[i]`` per column), a profile of request latencies (one value per
request, not per row), and counts of requests, rows and failed requests by status; and, for
requests that carried a deadline, counts per endpoint variant of such requests, of those that
met it and of those that failed (see :mod:`modelyard.monitoring.deadlines`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import select
from ulid import ULID

from modelyard.monitoring.predlog import (
    DEADLINE_MET,
    DEADLINE_MS,
    INPUT_PREFIX,
    OUTPUT_PREFIX,
    VARIANT,
    PredictionLog,
)
from modelyard.monitoring.profiles import Profile
from modelyard.store.tables import MonitorWatermarkRow, WindowProfileRow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from modelyard.workspace import Workspace

__all__ = [
    "OUTPUT_FEATURE_PREFIX",
    "WindowContent",
    "WindowProfiler",
    "floor_time",
    "profile_table",
]

#: Outputs appear in profiles as ``output.<name>`` so they cannot clash with input names.
OUTPUT_FEATURE_PREFIX = "output."
#: 2-D inputs or outputs wider than this are not profiled column by column.
MAX_PROFILED_WIDTH = 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def floor_time(at: datetime, granularity: int) -> datetime:
    """The start of the ``granularity``-second window (aligned to the epoch) holding ``at``."""
    seconds = int((at - _EPOCH).total_seconds())
    return _EPOCH + timedelta(seconds=seconds - seconds % granularity)


@dataclass
class WindowContent:
    """What one model version did in one window."""

    model: str
    version: int
    features: Profile = field(default_factory=lambda: Profile.build({}))
    latency: Profile = field(default_factory=lambda: Profile.build({}))
    requests: int = 0
    rows: int = 0
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    #: Variant ("" where none was named) -> [requests with a deadline, met, failed].
    deadlines: dict[str, list[int]] = field(default_factory=dict)

    def add(self, other: WindowContent) -> None:
        self.features = self.features.merge(other.features)
        self.latency = self.latency.merge(other.latency)
        self.requests += other.requests
        self.rows += other.rows
        self.errors += other.errors
        for status, count in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + count
        for variant, counts in other.deadlines.items():
            mine = self.deadlines.setdefault(variant, [0, 0, 0])
            for i, count in enumerate(counts):
                mine[i] += count

    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "features": self.features.to_dict(),
            "latency": self.latency.to_dict(),
            "statuses": self.statuses,
        }
        if self.deadlines:
            payload["deadlines"] = self.deadlines
        return payload

    @classmethod
    def from_row(cls, row: WindowProfileRow) -> WindowContent:
        payload = row.profile
        return cls(
            model=row.model,
            version=row.version,
            features=Profile.from_dict(payload["features"]),
            latency=Profile.from_dict(payload["latency"]),
            requests=row.requests,
            rows=row.rows,
            errors=row.errors,
            statuses=dict(payload.get("statuses", {})),
            deadlines={k: list(v) for k, v in payload.get("deadlines", {}).items()},
        )


def profile_table(table: pa.Table) -> dict[tuple[str, int], WindowContent]:
    """Profile logged rows (one window's worth) per (model, version)."""
    contents: dict[tuple[str, int], WindowContent] = {}
    if table.num_rows == 0:
        return contents
    keys = pa.table({"model": table["model"], "version": table["version"]})
    for model, version in set(zip(*(c.to_pylist() for c in keys.columns), strict=True)):
        mask = pc.and_(
            pc.equal(table["model"], pa.scalar(model, pa.string())),
            pc.equal(table["version"], pa.scalar(version, pa.int32())),
        )
        contents[(model, version)] = _content(model, version, table.filter(mask))
    return contents


def _content(model: str, version: int, table: pa.Table) -> WindowContent:
    status = (
        pc.fill_null(table["status"], 200)
        if "status" in table.column_names
        else pa.repeat(pa.scalar(200, pa.int16()), table.num_rows)
    )
    failed = pc.not_equal(status, 200)
    answered = table.filter(pc.invert(failed))
    # One latency per request: a request of n rows is logged as n rows with equal latency.
    request_ids = table["request_id"].to_numpy(zero_copy_only=False)
    _, first = np.unique(request_ids, return_index=True)
    latency = table["latency_ms"].to_numpy(zero_copy_only=False)[np.sort(first)]
    statuses: dict[str, int] = {}
    failed_status = pc.filter(status, failed)
    if len(failed_status):
        counts = pc.value_counts(failed_status).to_pylist()
        statuses = {str(c["values"]): int(c["counts"]) for c in counts}
    return WindowContent(
        model=model,
        version=version,
        features=Profile.build(dict(_feature_columns(answered))),
        latency=Profile.build({"latency_ms": latency.astype(np.float64)}),
        requests=len(first),
        rows=answered.num_rows,
        errors=int(sum(statuses.values())),
        statuses=statuses,
        deadlines=_deadline_counts(table, status),
    )


def _deadline_counts(table: pa.Table, status: Any) -> dict[str, list[int]]:
    """Per variant: requests that carried a deadline, those that met it, those that failed.

    Shadow rows and requests refused as the caller's error (4xx) are left out: neither is
    an answer the endpoint owed in time.
    """
    if DEADLINE_MS not in table.column_names:
        return {}
    keep = pc.is_valid(table[DEADLINE_MS])
    if "shadow" in table.column_names:
        keep = pc.and_(keep, pc.invert(pc.fill_null(table["shadow"], False)))
    client = pc.and_(pc.greater_equal(status, 400), pc.less(status, 500))
    keep = pc.and_(keep, pc.invert(client))
    rows = table.filter(keep)
    if rows.num_rows == 0:
        return {}
    _, first = np.unique(rows["request_id"].to_numpy(zero_copy_only=False), return_index=True)
    first = np.sort(first)
    codes = pc.filter(status, keep).to_numpy(zero_copy_only=False)[first]
    met = (
        pc.fill_null(rows[DEADLINE_MET], False).to_numpy(zero_copy_only=False)[first]
        if DEADLINE_MET in rows.column_names
        else np.zeros(len(first), dtype=bool)
    )
    variants = (
        np.asarray(pc.fill_null(rows[VARIANT], "").to_numpy(zero_copy_only=False), dtype=object)
        if VARIANT in rows.column_names
        else np.full(rows.num_rows, "", dtype=object)
    )[first]
    counts: dict[str, list[int]] = {}
    for name in sorted(set(variants.tolist())):
        mine = variants == name
        counts[name] = [
            int(mine.sum()),
            int((met & mine).sum()),
            int(((codes >= 500) & mine).sum()),
        ]
    return counts


def _feature_columns(table: pa.Table) -> Iterator[tuple[str, Any]]:
    for name in table.column_names:
        if name.startswith(INPUT_PREFIX):
            yield from _flatten(name[len(INPUT_PREFIX) :], table[name])
        elif name.startswith(OUTPUT_PREFIX):
            yield from _flatten(OUTPUT_FEATURE_PREFIX + name[len(OUTPUT_PREFIX) :], table[name])


def _flatten(name: str, column: pa.ChunkedArray) -> Iterator[tuple[str, Any]]:
    column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if not pa.types.is_fixed_size_list(column.type):
        yield name, column.to_numpy(zero_copy_only=False)
        return
    width = column.type.list_size
    if width > MAX_PROFILED_WIDTH or pa.types.is_fixed_size_list(column.type.value_type):
        return
    # Null rows (from segments without this column) become NaN: missing, not a value.
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    matrix = np.full((len(column), width), np.nan)
    matrix[valid] = values.reshape(-1, width)
    for i in range(width):
        yield f"{name}[{i}]", matrix[:, i]


class WindowProfiler:
    """Closes the windows of one endpoint at one granularity; see the module documentation."""

    def __init__(self, ws: Workspace, log: PredictionLog | None = None) -> None:
        self.ws = ws
        self.log = log or PredictionLog(ws)

    def watermark(self, endpoint: str, granularity: int) -> datetime | None:
        with self.ws.store.read() as session:
            row = session.get(MonitorWatermarkRow, (endpoint, granularity))
            return row.done_until if row else None

    def close_windows(
        self,
        endpoint: str,
        granularity: int,
        *,
        now: datetime,
        lateness: int,
        finer: int | None = None,
        max_windows: int = 288,
        origin: datetime | None = None,
    ) -> list[datetime]:
        """Profile the windows closed since the watermark; return their start times.

        ``finer``: a granularity dividing this one whose windows are already closed; windows
        are then merged from its rows instead of read from the log. At most ``max_windows``
        windows per call, so a long catch-up is done in bounded steps. Windows start at the
        first logged prediction or, for an endpoint that has logged none, at ``origin`` (when
        it was created; at most ``max_windows`` windows back): an endpoint nobody calls still
        gets its (empty) windows, so rules on traffic volume can see the silence.
        """
        start = self.watermark(endpoint, granularity)
        horizon = floor_time(now - timedelta(seconds=lateness), granularity)
        if start is None:
            first = self._first_logged(endpoint)
            if first is None:
                if origin is None:
                    return []
                first = max(origin, horizon - max_windows * timedelta(seconds=granularity))
            start = floor_time(first, granularity)
        if finer is not None:
            finer_done = self.watermark(endpoint, finer)
            if finer_done is None:
                return []
            horizon = min(horizon, floor_time(finer_done, granularity))
        if horizon <= start:
            return []
        step = timedelta(seconds=granularity)
        end = min(horizon, start + max_windows * step)
        if finer is not None:
            contents = self._merge_finer(endpoint, finer, granularity, start, end)
        else:
            contents = self._read_log(endpoint, granularity, start, end)
        with self.ws.store.write(self.ws.actor) as tx:
            session = tx.session
            for (window_start, _, _), content in contents.items():
                self._upsert(session, endpoint, granularity, window_start, content)
            mark = session.get(MonitorWatermarkRow, (endpoint, granularity))
            stamp = datetime.now(UTC)
            if mark is None:
                session.add(
                    MonitorWatermarkRow(
                        endpoint=endpoint, granularity=granularity, done_until=end, updated_at=stamp
                    )
                )
            else:
                mark.done_until = end
                mark.updated_at = stamp
        windows = []
        at = start
        while at < end:
            windows.append(at)
            at += step
        return windows

    def contents(
        self,
        endpoint: str,
        granularity: int,
        start: datetime,
        end: datetime,
        *,
        version: int | None = None,
    ) -> list[tuple[datetime, WindowContent]]:
        """Stored window contents with ``start <= window_start < end``, oldest first."""
        query = (
            select(WindowProfileRow)
            .where(
                WindowProfileRow.endpoint == endpoint,
                WindowProfileRow.granularity == granularity,
                WindowProfileRow.window_start >= start,
                WindowProfileRow.window_start < end,
            )
            .order_by(WindowProfileRow.window_start, WindowProfileRow.version)
        )
        if version is not None:
            query = query.where(WindowProfileRow.version == version)
        with self.ws.store.read() as session:
            return [(r.window_start, WindowContent.from_row(r)) for r in session.scalars(query)]

    def last_busy(self, endpoint: str, granularity: int, until: datetime) -> datetime | None:
        """The start of the newest stored window at or before ``until`` with a request."""
        from sqlalchemy import func

        with self.ws.store.read() as session:
            return session.scalar(
                select(func.max(WindowProfileRow.window_start)).where(
                    WindowProfileRow.endpoint == endpoint,
                    WindowProfileRow.granularity == granularity,
                    WindowProfileRow.window_start <= until,
                    WindowProfileRow.requests > 0,
                )
            )

    def labels_until(self, endpoint: str) -> dict[int, datetime | None]:
        """Per closed granularity: how far the late-label pass has read the feedback."""
        with self.ws.store.read() as session:
            return {
                g: mark
                for g, mark in session.execute(
                    select(MonitorWatermarkRow.granularity, MonitorWatermarkRow.labels_until).where(
                        MonitorWatermarkRow.endpoint == endpoint
                    )
                )
            }

    def set_labels_until(self, endpoint: str, mark: datetime) -> None:
        """Note that feedback received up to ``mark`` has reached every closed window."""
        with self.ws.store.write(self.ws.actor) as tx:
            for row in tx.session.scalars(
                select(MonitorWatermarkRow).where(MonitorWatermarkRow.endpoint == endpoint)
            ):
                if row.labels_until is None or row.labels_until < mark:
                    row.labels_until = mark

    # -- internals ----------------------------------------------------------------------------

    def _first_logged(self, endpoint: str) -> datetime | None:
        segments = self.log.segments(endpoint)
        return min((s.start_at for s in segments), default=None)

    def _read_log(
        self, endpoint: str, granularity: int, start: datetime, end: datetime
    ) -> dict[tuple[datetime, str, int], WindowContent]:
        contents: dict[tuple[datetime, str, int], WindowContent] = {}
        g_us = granularity * 1_000_000
        for segment in self.log.segments(endpoint, start, end):
            table = pq.read_table(pa.BufferReader(self.ws.artifacts.get_bytes(segment.digest)))
            at = table["at"].cast(pa.int64()).to_numpy(zero_copy_only=False)
            lo, hi = _micros(start), _micros(end)
            keep = (at >= lo) & (at < hi)
            if not keep.any():
                continue
            buckets = (at - at % g_us)[keep]
            table = table.filter(pa.array(keep))
            for bucket in np.unique(buckets):
                part = table.filter(pa.array(buckets == bucket))
                window_start = _EPOCH + timedelta(microseconds=int(bucket))
                for (model, version), content in profile_table(part).items():
                    key = (window_start, model, version)
                    if key in contents:
                        contents[key].add(content)
                    else:
                        contents[key] = content
        return contents

    def _merge_finer(
        self, endpoint: str, finer: int, granularity: int, start: datetime, end: datetime
    ) -> dict[tuple[datetime, str, int], WindowContent]:
        contents: dict[tuple[datetime, str, int], WindowContent] = {}
        for window_start, content in self.contents(endpoint, finer, start, end):
            key = (floor_time(window_start, granularity), content.model, content.version)
            if key in contents:
                contents[key].add(content)
            else:
                contents[key] = content
        return contents

    @staticmethod
    def _upsert(
        session: Session,
        endpoint: str,
        granularity: int,
        window_start: datetime,
        content: WindowContent,
    ) -> None:
        row = session.scalars(
            select(WindowProfileRow).where(
                WindowProfileRow.endpoint == endpoint,
                WindowProfileRow.model == content.model,
                WindowProfileRow.version == content.version,
                WindowProfileRow.granularity == granularity,
                WindowProfileRow.window_start == window_start,
            )
        ).one_or_none()
        values: Mapping[str, Any] = {
            "rows": content.rows,
            "requests": content.requests,
            "errors": content.errors,
            "profile": content.payload(),
            "updated_at": datetime.now(UTC),
        }
        if row is None:
            session.add(
                WindowProfileRow(
                    id=str(ULID()),
                    endpoint=endpoint,
                    model=content.model,
                    version=content.version,
                    granularity=granularity,
                    window_start=window_start,
                    window_end=window_start + timedelta(seconds=granularity),
                    **values,
                )
            )
        else:
            for key, value in values.items():
                setattr(row, key, value)


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)
