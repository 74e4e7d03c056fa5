"""The prediction log: every answered prediction, off the hot path, in Parquet segments.

The serving gateway calls :meth:`PredictionLog.log` on its event loop for every request. That
call only appends a tuple of references to a :class:`collections.deque` (and bumps a counter
under a lock held for a few instructions); it never converts, never does I/O and never waits.
When more than ``max_queue_rows`` rows are waiting it refuses the record, counts the drop and
returns ``False``: losing log records under overload is preferable to slowing predictions.

One background writer thread drains the queue, groups records by endpoint and column set
(names, dtypes and trailing shapes of the inputs and outputs), and turns each group into an
Arrow table with one row per predicted row:

``request_id`` (string), ``at`` (timestamp[us, UTC]), ``endpoint`` (string), ``model``
(string), ``version`` (int32), ``latency_ms`` (float32, the whole request's latency),
``shadow`` (bool), ``status`` (int16: 200 for an answer, the HTTP status of a failed
request, logged by :meth:`PredictionLog.log_error` with no inputs or outputs), then
``in__<name>`` per input and ``out__<name>`` per output: a scalar per row for 1-D arrays, a
fixed-size list per row for 2-D arrays (class probabilities) and nested fixed-size lists for
more dimensions. Rows scored by an endpoint's input guard also have ``guard_score``
(float32, the row's novelty in [0, 1]; null in rows logged without a guard, and absent from
segments that hold none, as in those written before guards existed). Rows of requests that
came with an API token have ``caller`` (string: the token's id, or the user's name for a
caller without one; null for requests without, and absent from segments that hold none).
Rows of requests that carried a deadline (an endpoint's SLO or the caller's header) have
``variant`` (string: the endpoint variant that answered, null where none was named),
``deadline_ms`` (float32) and ``deadline_met`` (bool: ``latency_ms <= deadline_ms``, false
for a failed request, status 500 or more, such as one shed with 503; null in rows without a
deadline); like ``caller``, each is absent from segments in which no record has it, as in
those written before deadlines existed (see :mod:`modelyard.monitoring.deadlines`).

An endpoint's personal input columns (:meth:`PredictionLog.set_redaction`, see
:mod:`modelyard.monitoring.redaction`) are dropped, hashed or masked by the writer thread
before they become Arrow: the segments never hold their values. The redaction applied is
the endpoint's when the writer takes the record, a few milliseconds after it was logged.

A group becomes a segment when it reaches ``segment_rows`` rows (longer groups are cut at
exactly ``segment_rows``; a multi-row request may straddle two segments) or when its oldest
record has waited ``flush_seconds``, or the endpoint's own interval where one is set
(:meth:`PredictionLog.set_flush`: a rollout's analysis wants its rows within a second). A
segment is written as zstd Parquet to the artifact store and indexed by a
:class:`~modelyard.store.tables.PredictionSegmentRow` (``start_at`` and ``end_at`` are the
smallest and largest ``at`` it holds). Segment rows are data, not audited
changes, so no audit record is made for them. A failed write is retried with exponential
backoff; when every attempt fails the rows are dropped, counted in ``write_errors`` and
``dropped_rows`` and the error is logged, and the writer carries on.

Callers hand over their arrays: they must not modify them after :meth:`~PredictionLog.log`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ulid import ULID

from modelyard.monitoring.heap import give_back

if TYPE_CHECKING:
    from modelyard.monitoring.redaction import Redaction
    from modelyard.store.tables import PredictionSegmentRow
    from modelyard.workspace import Workspace

log = logging.getLogger("modelyard.monitoring.predlog")

__all__ = ["BASE_SCHEMA", "PredictionLog", "PredictionSegment"]

TIMESTAMP = pa.timestamp("us", tz="UTC")

#: The columns every segment starts with; inputs and outputs follow.
BASE_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string()),
        pa.field("at", TIMESTAMP),
        pa.field("endpoint", pa.string()),
        pa.field("model", pa.string()),
        pa.field("version", pa.int32()),
        pa.field("latency_ms", pa.float32()),
        pa.field("shadow", pa.bool_()),
        pa.field("status", pa.int16()),
    ]
)

INPUT_PREFIX = "in__"
OUTPUT_PREFIX = "out__"
#: Each row's novelty score from the endpoint's input guard (see serving/guard.py).
GUARD_SCORE = "guard_score"
#: Who sent each row's request (see :meth:`PredictionLog.log`).
CALLER = "caller"
#: The endpoint variant that answered each row's request.
VARIANT = "variant"
#: The request's deadline in milliseconds, and whether it was met.
DEADLINE_MS = "deadline_ms"
DEADLINE_MET = "deadline_met"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NO_ARRAYS: Mapping[str, Any] = {}
_ONE_US = timedelta(microseconds=1)

# Positions in a queued record (a plain tuple: the cheapest thing to build on the hot path).
_ENDPOINT: Final = 0
_MODEL: Final = 1
_VERSION: Final = 2
_REQUEST_ID: Final = 3
_INPUTS: Final = 4
_OUTPUTS: Final = 5
_ROWS: Final = 6
_LATENCY: Final = 7
_AT: Final = 8
_SHADOW: Final = 9
_STATUS: Final = 10
_GUARD: Final = 11
_CALLER: Final = 12
_VARIANT: Final = 13
_DEADLINE: Final = 14

Record = tuple[
    str,
    str,
    int,
    str,
    Mapping[str, Any],
    Mapping[str, Any],
    int,
    float,
    datetime | float,
    bool,
    int,
    "np.ndarray | None",
    str | None,
    str | None,
    float | None,
]
# (name, dtype kind, trailing shape) per column: records with equal signatures share a segment.
Signature = tuple[tuple[str, str, tuple[int, ...]], ...]
GroupKey = tuple[str, Signature, Signature]


@dataclass(frozen=True)
class PredictionSegment:
    """One Parquet segment of an endpoint's prediction log."""

    id: str
    endpoint: str
    start_at: datetime
    end_at: datetime
    rows: int
    digest: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: PredictionSegmentRow) -> PredictionSegment:
        return cls(
            id=row.id,
            endpoint=row.endpoint,
            start_at=row.start_at,
            end_at=row.end_at,
            rows=row.rows,
            digest=row.digest,
            created_at=row.created_at,
        )


# Records per Arrow slice (see PredictionLog._convert). Each slice ends with a GIL hand-over,
# and hand-overs are what the writer costs most: 256 → 1024 cut the gateway's CPU per request
# by ~2% under wrk (bench/serving/cpu_cost.py) with no worse p99.
_CONVERT_EVERY = 1024


@dataclass
class _Group:
    """Records of one endpoint and column set waiting to become a segment."""

    endpoint: str
    inputs: list[str]
    outputs: list[str]
    since: float  # monotonic time the oldest waiting record arrived
    records: list[Record] = field(default_factory=list)
    rows: int = 0
    carry: pa.Table | None = None  # rows left over after cutting full segments
    converted: list[pa.Table] = field(default_factory=list)  # slices already in Arrow form


class PredictionLog:
    """Append-only log of served predictions; see the module documentation."""

    def __init__(
        self,
        ws: Workspace,
        *,
        max_queue_rows: int = 200_000,
        segment_rows: int = 50_000,
        flush_seconds: float = 5.0,
        retries: int = 3,
        retry_backoff: float = 0.5,
        poll_seconds: float = 0.05,
    ) -> None:
        if max_queue_rows < 1 or segment_rows < 1:
            raise ValueError("max_queue_rows and segment_rows must be at least 1")
        self.ws = ws
        self.max_queue_rows = max_queue_rows
        self.segment_rows = segment_rows
        self.flush_seconds = flush_seconds
        self.retries = max(0, retries)
        self.retry_backoff = retry_backoff
        self._poll_seconds = poll_seconds
        self.poll_seconds = min(poll_seconds, flush_seconds) if flush_seconds > 0 else poll_seconds

        self._queue: collections.deque[Record] = collections.deque()
        # Producer side, changed under _lock (held for a few instructions only).
        self._lock = threading.Lock()
        self._accepted_rows = 0
        self._dropped_queue_rows = 0
        #: Records refused by :meth:`log` because the queue was full (or the log closed).
        self.dropped = 0
        # Writer side, changed only while holding _process_lock.
        self._process_lock = threading.Lock()
        self._groups: dict[GroupKey, _Group] = {}
        self._done_rows = 0  # written or lost: no longer pending
        self._written_rows = 0
        self._lost_rows = 0
        self._segments = 0
        self._write_errors = 0
        self._invalid_records = 0
        # Writer thread control.
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._flush_cond = threading.Condition()
        self._flush_requested = 0
        self._flush_done = 0
        #: Endpoint -> what its personal input columns become (read by the writer thread).
        self._redactions: dict[str, Redaction] = {}
        #: Endpoint -> its flush interval, where it is not ``flush_seconds``.
        self._flushes: dict[str, float] = {}

    # -- hot path ---------------------------------------------------------------------------

    def log(
        self,
        *,
        endpoint: str,
        model: str,
        version: int,
        request_id: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
        rows: int,
        latency_ms: float,
        at: datetime | None = None,
        shadow: bool = False,
        guard: np.ndarray | None = None,
        caller: str | None = None,
        variant: str | None = None,
        deadline_ms: float | None = None,
    ) -> bool:
        """Queue one answered request of ``rows`` predicted rows; ``False`` if it was dropped.

        O(1) and non-blocking: the arrays are kept by reference and converted later by the
        writer thread. ``at`` defaults to now; ``guard``: each row's novelty score;
        ``caller``: who sent it (an API token's id; None: no token); ``variant``: the
        endpoint variant that answered; ``deadline_ms``: the request's deadline (None: none).
        """
        # Appending under the lock keeps close() exact: once it has set _closed, nothing
        # more reaches the queue. The lock is held for a check, an add and an append.
        with self._lock:
            if self._closed or self._accepted_rows - self._done_rows + rows > self.max_queue_rows:
                self.dropped += 1
                self._dropped_queue_rows += rows
                return False
            self._accepted_rows += rows
            self._queue.append(
                (
                    endpoint,
                    model,
                    version,
                    request_id,
                    inputs,
                    outputs,
                    rows,
                    latency_ms,
                    time.time() if at is None else at,
                    shadow,
                    200,
                    guard,
                    caller,
                    variant,
                    deadline_ms,
                )
            )
        return True

    def log_error(
        self,
        *,
        endpoint: str,
        model: str,
        version: int,
        request_id: str,
        status: int,
        latency_ms: float,
        at: datetime | None = None,
        variant: str | None = None,
        deadline_ms: float | None = None,
    ) -> bool:
        """Queue one failed request (one row, no inputs or outputs); ``False`` if dropped.

        Error rates per window come from these rows; like :meth:`log`, it never blocks.
        ``variant`` and ``deadline_ms`` as in :meth:`log`: a request shed with 503 that had a
        deadline is logged with it, and counts as a missed deadline.
        """
        with self._lock:
            if self._closed or self._accepted_rows - self._done_rows + 1 > self.max_queue_rows:
                self.dropped += 1
                self._dropped_queue_rows += 1
                return False
            self._accepted_rows += 1
            self._queue.append(
                (
                    endpoint,
                    model,
                    version,
                    request_id,
                    _NO_ARRAYS,
                    _NO_ARRAYS,
                    1,
                    latency_ms,
                    time.time() if at is None else at,
                    False,
                    status,
                    None,
                    None,
                    variant,
                    deadline_ms,
                )
            )
        return True

    def set_redaction(self, endpoint: str, redaction: Redaction | None) -> None:
        """What the writer does to ``endpoint``'s personal input columns from now on."""
        if redaction is None:
            self._redactions.pop(endpoint, None)
        else:
            self._redactions[endpoint] = redaction

    def set_flush(self, endpoint: str, seconds: float | None) -> None:
        """Write ``endpoint``'s rows once the oldest has waited ``seconds`` (None: back to
        ``flush_seconds``). Shorter intervals make more, smaller segments."""
        if seconds is None:
            self._flushes.pop(endpoint, None)
        elif seconds > 0:
            self._flushes[endpoint] = seconds
        else:
            raise ValueError(f"a flush interval must be positive, got {seconds}")
        # the writer wakes often enough for the shortest interval (read at each wait)
        shortest = min(self._flushes.values(), default=self.flush_seconds)
        poll = self._poll_seconds
        self.poll_seconds = min(poll, shortest) if shortest > 0 else poll

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background writer thread (once; calling again does nothing)."""
        if self._closed:
            raise RuntimeError("the prediction log is closed")
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._run, name="modelyard-predlog", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def flush(self, timeout: float = 10.0) -> None:
        """Write everything queued before this call; :class:`TimeoutError` if not done in time.

        Without a running writer thread the work is done in the calling thread.
        """
        if not self.running:
            with self._process_lock:
                self._process(force=True)
            return
        with self._flush_cond:
            self._flush_requested += 1
            target = self._flush_requested
        self._wake.set()
        with self._flush_cond:
            if not self._flush_cond.wait_for(lambda: self._flush_done >= target, timeout):
                raise TimeoutError(
                    f"the prediction log did not flush within {timeout}s "
                    f"({self.stats()['queued_rows']} rows still queued)"
                )

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new records, write everything queued, and stop the writer thread."""
        with self._lock:
            self._closed = True
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._stop.set()
            self._wake.set()
            thread.join(timeout)
            if thread.is_alive():
                log.warning(
                    "prediction log writer still busy after %ss; %d rows may be lost",
                    timeout,
                    self.stats()["queued_rows"],
                )
                return
        # Records that slipped in while closing, or a log that was never started.
        with self._process_lock:
            self._process(force=True)

    def __enter__(self) -> PredictionLog:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        """Counters: rows logged, written, dropped (queue full or write failed), still queued."""
        accepted = self._accepted_rows
        done = self._done_rows
        return {
            "logged_rows": accepted,
            "written_rows": self._written_rows,
            "dropped_rows": self._dropped_queue_rows + self._lost_rows,
            "queued_rows": accepted - done,
            "segments": self._segments,
            "write_errors": self._write_errors,
            "dropped_records": self.dropped,
            "invalid_records": self._invalid_records,
        }

    # -- writer -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
            stopping = self._stop.is_set()
            with self._flush_cond:
                requested = self._flush_requested
            written = self._segments + self._write_errors
            try:
                with self._process_lock:
                    self._process(force=stopping or requested > self._flush_done)
            except Exception:  # never let the writer die
                log.exception("prediction log writer failed; continuing")
            if self._segments + self._write_errors != written and not stopping:
                # Encoding a segment takes tens of MiB from Arrow's pool and malloc, which
                # both keep once freed: a gateway worker would stay at its peak for good.
                give_back()
            if requested > self._flush_done:
                with self._flush_cond:
                    self._flush_done = requested
                    self._flush_cond.notify_all()
            if stopping:
                return

    def _process(self, *, force: bool) -> None:
        """Drain the queue into groups and write the groups that are due (all if ``force``)."""
        queue = self._queue
        add = self._add
        while queue:
            try:
                record = queue.popleft()
            except IndexError:
                break
            add(record)
        now = time.monotonic()
        flushes = self._flushes
        for key in list(self._groups):
            group = self._groups[key]
            due = flushes.get(group.endpoint, self.flush_seconds) if flushes else self.flush_seconds
            if force or now - group.since >= due:
                self._write_group(group, final=True)
                del self._groups[key]
            elif group.rows >= self.segment_rows:
                self._write_group(group, final=False)
                if group.rows == 0:
                    del self._groups[key]

    def _add(self, record: Record) -> None:
        (
            endpoint,
            model,
            version,
            request_id,
            raw_in,
            raw_out,
            rows,
            latency,
            at,
            shadow,
            status,
            guard,
            caller,
            variant,
            deadline,
        ) = record
        try:
            redaction = self._redactions.get(endpoint)
            if redaction is not None and raw_in:
                raw_in = redaction.apply(raw_in)
            inputs, in_signature = _prepare(raw_in, rows)
            outputs, out_signature = _prepare(raw_out, rows)
        except Exception as exc:  # a record that cannot be redacted is not written raw
            self._invalid_records += 1
            self._lose(rows)
            log.warning(
                "dropped prediction record %s of endpoint %s: %s", request_id, endpoint, exc
            )
            return
        key = (endpoint, in_signature, out_signature)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(
                endpoint, list(inputs), list(outputs), time.monotonic()
            )
        group.records.append(
            (
                endpoint,
                model,
                version,
                request_id,
                inputs,
                outputs,
                rows,
                latency,
                at,
                shadow,
                status,
                guard,
                caller,
                variant,
                deadline,
            )
        )
        group.rows += rows
        if len(group.records) >= _CONVERT_EVERY:
            self._convert(group)

    def _convert(self, group: _Group) -> None:
        """Turn the group's waiting records into Arrow now, a small slice at a time.

        Converting a whole segment at once holds the GIL in long C calls (concatenating tens
        of thousands of small arrays), stalling the gateway's event loop for tens of ms; slices
        of a thousand records keep every hold well under a millisecond, and the sleep(0) hands
        the GIL back.
        """
        try:
            group.converted.append(_to_table(group))
        except Exception:
            rows = sum(r[_ROWS] for r in group.records)
            self._write_errors += 1
            self._lose(rows)
            group.rows -= rows
            log.exception(
                "could not convert %d prediction rows of endpoint %s; they are dropped",
                rows,
                group.endpoint,
            )
        group.records = []
        time.sleep(0)

    def _lose(self, rows: int) -> None:
        self._lost_rows += rows
        self._done_rows += rows

    def _write_group(self, group: _Group, *, final: bool) -> None:
        """Write ``group`` as segments of ``segment_rows``; keep a partial tail unless final."""
        try:
            pieces = [group.carry] if group.carry is not None else []
            pieces += group.converted
            if group.records:
                pieces.append(_to_table(group))
            if not pieces:
                table = pa.Table.from_batches([], schema=BASE_SCHEMA)  # (empty_table: pandas)
            elif len(pieces) == 1:
                table = pieces[0]
            else:
                table = pa.concat_tables(pieces, promote_options="permissive")
        except Exception:
            self._write_errors += 1
            self._lose(group.rows)
            log.exception(
                "could not convert %d prediction rows of endpoint %s; they are dropped",
                group.rows,
                group.endpoint,
            )
            group.records, group.rows, group.carry, group.converted = [], 0, None, []
            return
        group.records, group.carry, group.converted = [], None, []
        size = self.segment_rows
        offset = 0
        while offset < table.num_rows:
            if not final and table.num_rows - offset < size:
                group.carry = table.slice(offset)
                group.since = time.monotonic()
                break
            chunk = table.slice(offset, size)
            offset += chunk.num_rows
            self._write_segment(group.endpoint, chunk)
        group.rows = 0 if group.carry is None else group.carry.num_rows

    def _write_segment(self, endpoint: str, table: pa.Table) -> None:
        rows = table.num_rows
        try:
            data = segment_bytes(table)
            start_at, end_at = _bounds(table["at"])
        except Exception:
            self._write_errors += 1
            self._lose(rows)
            log.exception("could not encode %d prediction rows of %s; dropped", rows, endpoint)
            return
        # The metadata tables load here, in the writer's thread, not on a gateway's way to
        # its first answer (see serving/plans.py).
        from modelyard.store.tables import PredictionSegmentRow

        delay = self.retry_backoff
        for attempt in range(self.retries + 1):
            try:
                digest = self.ws.artifacts.put_bytes(data)
                with self.ws.store.write(self.ws.actor) as tx:
                    tx.session.add(
                        PredictionSegmentRow(
                            id=str(ULID()),
                            endpoint=endpoint,
                            start_at=start_at,
                            end_at=end_at,
                            rows=rows,
                            digest=digest,
                            created_at=datetime.now(UTC),
                        )
                    )
            except Exception as exc:
                if attempt < self.retries:
                    log.warning(
                        "writing a prediction segment of %s failed (attempt %d of %d): %s",
                        endpoint,
                        attempt + 1,
                        self.retries + 1,
                        exc,
                    )
                    time.sleep(delay)
                    delay *= 2
                    continue
                self._write_errors += 1
                self._lose(rows)
                log.error(
                    "dropped %d prediction rows of endpoint %s: writing their segment failed "
                    "%d times",
                    rows,
                    endpoint,
                    self.retries + 1,
                    exc_info=True,
                )
                return
            self._written_rows += rows
            self._done_rows += rows
            self._segments += 1
            return

    # -- reading ----------------------------------------------------------------------------

    def segments(
        self,
        endpoint: str,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        created_since: datetime | None = None,
    ) -> list[PredictionSegment]:
        """The segments of ``endpoint`` that may hold rows with ``start <= at < end``
        (and, with ``created_since``, only those written at or after it)."""
        from sqlalchemy import select

        from modelyard.store.tables import PredictionSegmentRow

        query = select(PredictionSegmentRow).where(PredictionSegmentRow.endpoint == endpoint)
        if start is not None:
            query = query.where(PredictionSegmentRow.end_at >= _aware(start))
        if end is not None:
            query = query.where(PredictionSegmentRow.start_at < _aware(end))
        if created_since is not None:
            query = query.where(PredictionSegmentRow.created_at >= _aware(created_since))
        query = query.order_by(PredictionSegmentRow.start_at, PredictionSegmentRow.id)
        with self.ws.store.read() as session:
            return [PredictionSegment.from_row(row) for row in session.scalars(query)]

    def newest(self, endpoint: str, rows: int) -> tuple[pa.Table, datetime | None]:
        """At least ``rows`` of the newest logged rows of ``endpoint`` (all, if it logged
        fewer), newest first, and the time the log reaches (None: nothing logged).

        Reads the newest segments only, by the (endpoint, start_at) index: a month of log
        costs what a minute does."""
        from sqlalchemy import select

        from modelyard.store.tables import PredictionSegmentRow

        query = (
            select(PredictionSegmentRow)
            .where(PredictionSegmentRow.endpoint == endpoint)
            .order_by(PredictionSegmentRow.start_at.desc(), PredictionSegmentRow.id.desc())
        )
        picked: list[PredictionSegment] = []
        with self.ws.store.read() as session:
            # A segment holds at least one row; flushes of one request are common.
            for row in session.scalars(query.limit(max(rows, 1))):
                picked.append(PredictionSegment.from_row(row))
                if sum(s.rows for s in picked) >= rows:
                    break
        if not picked:
            return BASE_SCHEMA.empty_table(), None
        tables = [
            pq.read_table(pa.BufferReader(self.ws.artifacts.get_bytes(s.digest))) for s in picked
        ]
        table = (
            tables[0]
            if len(tables) == 1
            else pa.concat_tables(tables, promote_options="permissive")
        )
        table = table.sort_by([("at", "descending")])
        return table, max(s.end_at for s in picked)

    def read(
        self,
        endpoint: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        version: int | None = None,
    ) -> pa.Table:
        """The logged rows of ``endpoint`` with ``start <= at < end`` (and ``version``).

        Segments with different column sets are concatenated by column name; a column missing
        from a segment is null in its rows. Rows come in segment order.
        """
        pc = _compute()
        tables = []
        for segment in self.segments(endpoint, start, end):
            table = pq.read_table(pa.BufferReader(self.ws.artifacts.get_bytes(segment.digest)))
            mask = None
            if start is not None:
                mask = _and(mask, pc.greater_equal(table["at"], _ts(start)))
            if end is not None:
                mask = _and(mask, pc.less(table["at"], _ts(end)))
            if version is not None:
                mask = _and(mask, pc.equal(table["version"], pa.scalar(version, pa.int32())))
            if mask is not None:
                table = table.filter(mask)
            if table.num_rows:
                tables.append(table)
        if not tables:
            return BASE_SCHEMA.empty_table()
        if len(tables) == 1:
            return tables[0]
        return pa.concat_tables(tables, promote_options="permissive")


# -- conversion -----------------------------------------------------------------------------


def _prepare(arrays: Mapping[str, Any], rows: int) -> tuple[Mapping[str, Any], Signature]:
    """Check that every array has ``rows`` rows; return the arrays and their signature.

    The signature uses the dtype kind, not the exact dtype: "<U3" and "<U5" (or int32 and
    int64) concatenate into one column, so requests with different string widths share a
    segment. Names keep the caller's order (the gateway always uses the same one).
    """
    matrix = getattr(arrays, "matrix", None)
    if matrix is not None:  # the gateway's validated table: one (k, rows) matrix
        extra = getattr(arrays, "extra", None)
        if extra:  # and columns beside it (hashed by a redaction)
            return arrays, _redacted_signature(arrays, matrix, extra, rows)
        return arrays, _matrix_signature(arrays, matrix, rows)
    out: dict[str, np.ndarray] | None = None
    signature = []
    for name, value in arrays.items():
        arr = value
        if type(arr) is not np.ndarray:
            arr = np.asarray(value)
        shape = arr.shape
        if not shape:
            arr = arr.reshape(1)
            shape = (1,)
        if shape[0] != rows:
            raise ValueError(f"{name!r} has {shape[0]} rows, the request has {rows}")
        if arr is not value and out is None:
            out = dict(arrays)
        if out is not None:
            out[name] = arr
        kind = arr.dtype.kind
        signature.append((name, "O" if kind == "U" else kind, shape[1:]))
    return (arrays if out is None else out), tuple(signature)


# Signatures of the gateway's validated tables, by column names and dtype kind: most records
# have one, and building it column by column costs more than the rest of the record.
_MATRIX_SIGNATURES: dict[tuple[tuple[str, ...], str], Signature] = {}


def _matrix_signature(arrays: Any, matrix: np.ndarray, rows: int) -> Signature:
    """The signature of a mapping of columns that are the rows of one 2-D ``matrix``
    (:class:`modelyard.serving.validation.Columns`: ``names`` gives their order)."""
    names: tuple[str, ...] = arrays.names
    if matrix.ndim != 2 or matrix.shape[0] != len(names) or matrix.shape[1] != rows:
        raise ValueError(
            f"a table of {len(names)} columns has shape {matrix.shape}, the request has {rows} rows"
        )
    key = (names, matrix.dtype.kind)
    signature = _MATRIX_SIGNATURES.get(key)
    if signature is None:
        if len(_MATRIX_SIGNATURES) >= 1024:
            _MATRIX_SIGNATURES.clear()
        kind = "O" if key[1] == "U" else key[1]
        signature = _MATRIX_SIGNATURES[key] = tuple((name, kind, ()) for name in names)
    return signature


def _redacted_signature(
    arrays: Any, matrix: np.ndarray, extra: Mapping[str, np.ndarray], rows: int
) -> Signature:
    """The signature of :class:`~modelyard.monitoring.redaction.RedactedColumns`: a matrix
    (``names``) and other columns (``extra``), in the order of ``order``."""
    beside = []
    for name, arr in extra.items():
        if arr.ndim == 0 or arr.shape[0] != rows:
            raise ValueError(f"{name!r} has {arr.shape[:1]} rows, the request has {rows}")
        kind = arr.dtype.kind
        beside.append((name, "O" if kind == "U" else kind, arr.shape[1:]))
    key = (arrays.order, tuple(beside), _matrix_signature(arrays, matrix, rows))
    signature = _REDACTED_SIGNATURES.get(key)
    if signature is None:
        if len(_REDACTED_SIGNATURES) >= 1024:
            _REDACTED_SIGNATURES.clear()
        by_name = {entry[0]: entry for entry in (*key[2], *beside)}
        signature = _REDACTED_SIGNATURES[key] = tuple(by_name[name] for name in arrays.order)
    return signature


_REDACTED_SIGNATURES: dict[tuple[Any, ...], Signature] = {}


def _to_table(group: _Group) -> pa.Table:
    records = group.records
    n = len(records)
    counts = np.fromiter((r[_ROWS] for r in records), dtype=np.int64, count=n)
    single = bool((counts == 1).all())

    def per_row(values: np.ndarray) -> np.ndarray:
        return values if single else np.repeat(values, counts)

    request_ids = np.array([r[_REQUEST_ID] for r in records], dtype=object)
    models = np.array([r[_MODEL] for r in records], dtype=object)
    ats = np.fromiter((_micros(r[_AT]) for r in records), dtype=np.int64, count=n)
    versions = np.fromiter((r[_VERSION] for r in records), dtype=np.int32, count=n)
    latencies = np.fromiter((r[_LATENCY] for r in records), dtype=np.float32, count=n)
    shadows = np.fromiter((r[_SHADOW] for r in records), dtype=np.bool_, count=n)
    statuses = np.fromiter((r[_STATUS] for r in records), dtype=np.int16, count=n)
    total = int(counts.sum())
    columns: dict[str, pa.Array] = {
        "request_id": _strings_per_row(request_ids, None if single else counts),
        "at": _from_numpy(per_row(ats), TIMESTAMP),
        "endpoint": _repeated(group.endpoint, total),
        "model": _strings_per_row(models, None if single else counts),
        "version": _from_numpy(per_row(versions)),
        "latency_ms": _from_numpy(per_row(latencies)),
        "shadow": _from_numpy(per_row(shadows)),
        "status": _from_numpy(per_row(statuses)),
    }
    if any(r[_GUARD] is not None for r in records):
        scores = np.concatenate(
            [
                np.full(r[_ROWS], np.nan, np.float32) if r[_GUARD] is None else r[_GUARD]
                for r in records
            ]
        ).astype(np.float32, copy=False)
        columns[GUARD_SCORE] = _from_numpy(scores, mask=np.isnan(scores))
    if any(r[_CALLER] is not None for r in records):
        callers = np.array([r[_CALLER] for r in records], dtype=object)
        columns[CALLER] = _strings_per_row(callers, None if single else counts)
    if any(r[_VARIANT] is not None for r in records):
        variants = np.array([r[_VARIANT] for r in records], dtype=object)
        columns[VARIANT] = _strings_per_row(variants, None if single else counts)
    if any(r[_DEADLINE] is not None for r in records):
        deadlines = np.fromiter(
            (np.nan if r[_DEADLINE] is None else r[_DEADLINE] for r in records),
            dtype=np.float64,
            count=n,
        )
        # Judged on the request's own latency (not its float32 copy); a failed request,
        # shed or not, missed its deadline however fast it failed.
        exact = np.fromiter((r[_LATENCY] for r in records), dtype=np.float64, count=n)
        met = (exact <= deadlines) & (statuses < 500)
        missing = per_row(np.isnan(deadlines))
        columns[DEADLINE_MS] = _from_numpy(per_row(deadlines).astype(np.float32), mask=missing)
        columns[DEADLINE_MET] = _from_numpy(per_row(met), mask=missing)
    found = [getattr(r[_INPUTS], "matrix", None) for r in records]
    matrices: list[np.ndarray] = [m for m in found if m is not None]
    names = getattr(records[0][_INPUTS], "names", None)
    if (
        group.inputs
        and len(matrices) == n
        and names is not None
        and all(getattr(r[_INPUTS], "names", None) == names for r in records)
    ):  # one join, not one per column (and the columns beside the matrix, if any)
        joined = matrices[0] if n == 1 else np.concatenate(matrices, axis=1)
        position = {name: i for i, name in enumerate(names)}
        for name in group.inputs:
            index = position.get(name)
            columns[INPUT_PREFIX + name] = (
                _from_numpy(joined[index])
                if index is not None
                else _arrow_column([r[_INPUTS][name] for r in records])
            )
    else:
        for name in group.inputs:
            columns[INPUT_PREFIX + name] = _arrow_column([r[_INPUTS][name] for r in records])
    for name in group.outputs:
        columns[OUTPUT_PREFIX + name] = _arrow_column([r[_OUTPUTS][name] for r in records])
    return pa.table(columns)


def _arrow_column(parts: list[np.ndarray]) -> pa.Array:
    values = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if values.ndim == 1:
        return _from_numpy(values)
    column = _from_numpy(values.reshape(-1))
    for size in reversed(values.shape[1:]):
        column = pa.FixedSizeListArray.from_arrays(column, size)
    return column


def _from_numpy(
    values: np.ndarray, type: pa.DataType | None = None, *, mask: np.ndarray | None = None
) -> pa.Array:
    """``pa.array(values, type, mask=mask)`` for a 1-D array, without importing pandas.

    ``pa.array`` asks pandas whether its input is a Series, and so imports it (some 40 MiB
    per process, 90 with what it maps) in a gateway worker that needs nothing else of it.
    Numbers, booleans and strings, what predictions are made of, are built from their
    buffers here (``type`` is then the numbers' own, or one of the same width, such as
    TIMESTAMP for int64); anything else still goes through ``pa.array``.
    """
    kind = values.dtype.kind
    if mask is not None and mask.any():
        validity: pa.Buffer | None = pa.py_buffer(np.packbits(~mask, bitorder="little"))
        nulls = int(np.count_nonzero(mask))
    else:
        validity, nulls = None, 0
    if kind in "iuf" and values.dtype.isnative:
        values = np.ascontiguousarray(values)
        arrow_type = type or pa.from_numpy_dtype(values.dtype)
        return pa.Array.from_buffers(
            arrow_type, len(values), [validity, pa.py_buffer(values)], null_count=nulls
        )
    if kind == "b" and type is None:
        bits = np.packbits(values, bitorder="little")
        return pa.Array.from_buffers(
            pa.bool_(), len(values), [validity, pa.py_buffer(bits)], null_count=nulls
        )
    if kind in "OU" and type is None and validity is None:
        strings = _strings(values)
        if strings is not None:
            return strings
    return pa.array(values, type, mask=mask)


def _repeated(text: str, n: int) -> pa.Array:
    """A string array of ``n`` times ``text`` (``take`` would import ``pyarrow.compute``)."""
    encoded = text.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(encoded)
    return pa.Array.from_buffers(
        pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(encoded * n)]
    )


def _strings_per_row(values: np.ndarray, counts: np.ndarray | None) -> pa.Array:
    """A string column of each record's ``values`` (str or None) repeated for its ``counts``
    rows (None: one row each); each string is encoded once, not once per row."""
    strings = _strings(values, counts)
    if strings is not None:
        return strings
    return _from_numpy(values if counts is None else np.repeat(values, counts))


def _strings(values: np.ndarray, counts: np.ndarray | None = None) -> pa.Array | None:
    """A string array of ``values`` (str, or None for null), each repeated ``counts`` times
    (None: once); None if a value is neither."""
    try:
        encoded = [None if v is None else str.encode(v) for v in values.tolist()]
    except (TypeError, UnicodeEncodeError):
        return None
    n = len(encoded)
    lengths = np.fromiter((0 if e is None else len(e) for e in encoded), np.int64, n)
    missing = np.fromiter((e is None for e in encoded), np.bool_, n)
    if counts is None:
        data = b"".join(e for e in encoded if e is not None)
    else:
        data = b"".join(e * c for e, c in zip(encoded, counts.tolist(), strict=True) if e)
        lengths, missing = np.repeat(lengths, counts), np.repeat(missing, counts)
        n = len(lengths)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] >= 2**31:  # beyond a string array's 32-bit offsets
        return None
    nulls = int(np.count_nonzero(missing))
    validity = pa.py_buffer(np.packbits(~missing, bitorder="little")) if nulls else None
    return pa.Array.from_buffers(
        pa.string(),
        n,
        [validity, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)],
        null_count=nulls,
    )


def _bounds(at: pa.ChunkedArray) -> tuple[datetime, datetime]:
    """The earliest and latest time of a (non-empty, null-free) ``at`` column, read from its
    buffers: ``pyarrow.compute`` and timestamp scalars would load more than a gateway needs."""
    lows, highs = [], []
    for chunk in at.chunks:
        if len(chunk):
            micros = np.frombuffer(
                chunk.buffers()[1], np.int64, count=len(chunk), offset=chunk.offset * 8
            )
            lows.append(int(micros.min()))
            highs.append(int(micros.max()))
    return _EPOCH + min(lows) * _ONE_US, _EPOCH + max(highs) * _ONE_US


def _micros(at: datetime | float) -> int:
    if isinstance(at, datetime):
        return (_aware(at) - _EPOCH) // _ONE_US
    return round(at * 1_000_000)


def _aware(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def _ts(at: datetime) -> pa.Scalar:
    return pa.scalar(_micros(at), pa.int64()).cast(TIMESTAMP)


def _and(mask: Any, other: Any) -> Any:
    return other if mask is None else _compute().and_(mask, other)


def _compute() -> Any:
    """``pyarrow.compute``, imported on first use: it takes ~0.2 s, and a gateway needs it
    only when a segment is written, well after it started answering."""
    import pyarrow.compute as pc

    return pc


def segment_bytes(table: pa.Table) -> bytes:
    """A segment's Parquet file (zstd), as the log writes them."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())
