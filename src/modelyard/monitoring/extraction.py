"""Model extraction: one caller's queries that look like someone copying the model.

An alert rule of kind ``extraction`` (see :mod:`modelyard.monitoring.alerts`) has the monitor
analyse each closed window of its endpoint's prediction log, per caller (the log's ``caller``
column: the API token; with auth off every request is one anonymous caller). Of each caller's
answered rows (at most :data:`MAX_ROWS`, sampled; the :data:`MAX_CALLERS` busiest callers),
on the numeric input features, three signals:

* ``near_duplicates``: the share of the caller's distinct rows whose nearest neighbour among
  them (a k-d tree on features scaled by the window's spread) differs from it in exactly one
  feature, the others equal: the mark of sweeping one feature at a time from a base point.
  Rows drawn from a continuous distribution score about 0.
* ``grid``: the share of features taking few, evenly spaced values (3 to
  :data:`GRID_MAX_VALUES` distinct values, at most a quarter of the rows, three quarters of
  the gaps between consecutive values equal to within 1%).
* ``volume_ratio``: the caller's requests in this window over its mean per window in the
  :data:`BASELINE_WINDOWS` windows before (at most 7 days); only for a caller seen in them.

A caller is a *suspect* when near_duplicates or grid is at least :data:`SHARE_FLAG`, or the
volume ratio at least :data:`VOLUME_FLAG` with :data:`VOLUME_MIN_REQUESTS` requests or more.
The two shares must also stand out against the rest of the window's traffic: with
:data:`MIN_ROWS` rows or more from other callers, the others' share (computed alike on their
pooled rows) plus :data:`MARGIN` must not reach the caller's. Inputs that are gridded by
nature (small integers, categories coded as numbers) then do not make every caller a suspect;
an endpoint with a single caller has no such comparison, and its gridded features count.

The rule's metric is one of :data:`EXTRACTION_METRICS`: ``extraction_suspects`` (callers
flagged) or the highest ``extraction_near_duplicates``, ``extraction_grid`` or
``extraction_volume_ratio`` among callers with enough rows; the alert's evidence names each
suspect, its user, and the reasons.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy.spatial import cKDTree

from modelyard.monitoring.alerts import EXTRACTION_METRICS
from modelyard.monitoring.predlog import CALLER, INPUT_PREFIX, PredictionLog

if TYPE_CHECKING:
    from modelyard.workspace import Workspace

log = logging.getLogger("modelyard.monitoring.extraction")

__all__ = ["EXTRACTION_METRICS", "CallerFinding", "ExtractionReport", "analyse", "observe"]

MAX_ROWS = 2_000  # per caller (and for the others' pool): bounds the k-d trees
MAX_CALLERS = 20  # the busiest in the window
MIN_ROWS = 20  # a caller's (or the others') rows below which the shares are not judged
SHARE_FLAG = 0.5
MARGIN = 0.3
GRID_MAX_VALUES = 64
VOLUME_FLAG = 10.0
VOLUME_MIN_REQUESTS = 100
BASELINE_WINDOWS = 24
BASELINE_MAX = timedelta(days=7)
ANONYMOUS = "anonymous"


@dataclass
class CallerFinding:
    """What one caller's queries in a window look like."""

    caller: str  # a token id, a user name, or "anonymous"
    user: str | None
    rows: int
    requests: int
    near_duplicates: float | None = None
    grid: float | None = None
    volume_ratio: float | None = None
    usual_requests: float | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def suspect(self) -> bool:
        return bool(self.reasons)

    def as_evidence(self) -> dict[str, Any]:
        return {
            "caller": self.caller,
            "user": self.user,
            "rows": self.rows,
            "requests": self.requests,
            "near_duplicates": _rounded(self.near_duplicates),
            "grid": _rounded(self.grid),
            "volume_ratio": _rounded(self.volume_ratio),
            "reasons": self.reasons,
        }


@dataclass
class ExtractionReport:
    """The callers of one window, judged."""

    rows: int
    callers: list[CallerFinding]

    @property
    def suspects(self) -> list[CallerFinding]:
        return [c for c in self.callers if c.suspect]

    def observation(self) -> dict[str, float | None]:
        """The metrics an ``extraction`` rule compares with its threshold."""

        def highest(values: list[float | None]) -> float | None:
            known = [v for v in values if v is not None]
            return max(known) if known else None

        return {
            "extraction_suspects": float(len(self.suspects)),
            "extraction_near_duplicates": highest([c.near_duplicates for c in self.callers]),
            "extraction_grid": highest([c.grid for c in self.callers]),
            "extraction_volume_ratio": highest([c.volume_ratio for c in self.callers]),
        }

    def evidence(self) -> dict[str, Any]:
        """What an alert keeps: every suspect by name, with its reasons, and a summary."""
        suspects = self.suspects
        summary = "; ".join(
            f"{_who(c)}: {', '.join(r.split(':')[0] for r in c.reasons)}" for c in suspects
        )
        return {
            "suspects": [c.as_evidence() for c in suspects],
            "summary": summary or "no suspect caller",
            "callers_analysed": len(self.callers),
        }


def observe(ws: Workspace, endpoint: str, start: datetime, seconds: int) -> ExtractionReport:
    """Read the window ``[start, start + seconds)`` of ``endpoint``'s log (and the caller
    volumes of the windows before it) and judge its callers."""
    plog = PredictionLog(ws)
    table = plog.read(endpoint, start=start, end=start + timedelta(seconds=seconds))
    baseline_start = start - min(timedelta(seconds=seconds * BASELINE_WINDOWS), BASELINE_MAX)
    windows = max(1, round((start - baseline_start).total_seconds() / seconds))
    history = _requests_by_caller(plog, ws, endpoint, baseline_start, start)
    users = _users(ws)
    return analyse(table, history=history, baseline_windows=windows, users=users)


def analyse(
    table: pa.Table,
    *,
    history: dict[str, int] | None = None,
    baseline_windows: int = BASELINE_WINDOWS,
    users: dict[str, str] | None = None,
    seed: int = 0,
) -> ExtractionReport:
    """Judge the callers of one window of logged rows (see the module). ``history``: each
    caller's requests in the ``baseline_windows`` windows before."""
    table = _answered(table)
    if table.num_rows == 0:
        return ExtractionReport(0, [])
    callers = _callers(table)
    features = _features(table)
    request_ids = table["request_id"].to_numpy(zero_copy_only=False)
    rng = np.random.default_rng(seed)
    scale = None
    if features is not None:
        spread = np.nanstd(features, axis=0)
        scale = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)
    names, inverse, counts = np.unique(callers, return_inverse=True, return_counts=True)
    busiest = np.argsort(-counts, kind="stable")[:MAX_CALLERS]
    findings = []
    for index in busiest:
        caller = str(names[index])
        mine = inverse == index
        finding = CallerFinding(
            caller=caller,
            user=(users or {}).get(caller),
            rows=int(counts[index]),
            requests=len(np.unique(request_ids[mine])),
        )
        if features is not None and scale is not None:
            _judge_shares(finding, features, mine, scale, rng)
        _judge_volume(finding, history, baseline_windows)
        findings.append(finding)
    return ExtractionReport(table.num_rows, findings)


# --- the signals --------------------------------------------------------------------------


def _judge_shares(
    finding: CallerFinding,
    features: np.ndarray,
    mine: np.ndarray,
    scale: np.ndarray,
    rng: np.random.Generator,
) -> None:
    rows = _sample(features[mine], rng)
    if len(rows) < MIN_ROWS:
        return
    others = _sample(features[~mine], rng)
    enough_others = len(others) >= MIN_ROWS
    checks = [("near_duplicates", _near_duplicate_share), ("grid", _grid_share)]
    for name, measure in checks:
        share = measure(rows, scale)
        setattr(finding, name, share)
        if share is None or share < SHARE_FLAG:
            continue
        baseline = measure(others, scale) if enough_others else None
        if baseline is not None and share < baseline + MARGIN:
            continue
        against = (
            f" (other callers: {baseline:.0%})" if baseline is not None else " (no other callers)"
        )
        if name == "near_duplicates":
            finding.reasons.append(
                f"near_duplicates: {share:.0%} of its distinct rows have a nearest neighbour "
                f"differing in a single feature{against}"
            )
        else:
            finding.reasons.append(
                f"grid: {share:.0%} of the features take few, evenly spaced values{against}"
            )


def _judge_volume(finding: CallerFinding, history: dict[str, int] | None, windows: int) -> None:
    if history is None or finding.caller not in history:
        return  # a new caller has no usual volume
    usual = history[finding.caller] / max(windows, 1)
    finding.usual_requests = usual
    ratio = finding.requests / max(usual, 1.0)
    finding.volume_ratio = ratio
    if ratio >= VOLUME_FLAG and finding.requests >= VOLUME_MIN_REQUESTS:
        finding.reasons.append(
            f"volume: {finding.requests} requests, {ratio:.0f} times its usual {usual:.1f} "
            f"per window"
        )


def _near_duplicate_share(rows: np.ndarray, scale: np.ndarray) -> float | None:
    """The share of distinct rows whose nearest distinct row differs in exactly one feature."""
    if rows.shape[1] < 2:
        return None  # with one feature every neighbour differs in one
    distinct = np.unique(rows, axis=0)
    if len(distinct) < 3:
        return None
    scaled = distinct / scale
    _, nearest = cKDTree(scaled).query(scaled, k=2)
    neighbour = distinct[nearest[:, 1]]
    differing = (~np.isclose(distinct, neighbour, rtol=1e-9, atol=0.0)).sum(axis=1)
    return float(np.mean(differing == 1))


def _grid_share(rows: np.ndarray, scale: np.ndarray) -> float | None:
    """The share of features whose values are few and evenly spaced."""
    del scale  # the same signature as _near_duplicate_share
    gridded = [_gridded(rows[:, j]) for j in range(rows.shape[1])]
    return float(np.mean(gridded)) if gridded else None


def _gridded(values: np.ndarray) -> bool:
    distinct = np.unique(values)
    if not 3 <= len(distinct) <= min(GRID_MAX_VALUES, len(values) / 4):
        return False
    gaps = np.diff(distinct)
    typical = float(np.median(gaps))
    if typical <= 0:
        return False
    return bool(np.mean(np.abs(gaps - typical) <= 0.01 * typical) >= 0.75)


# --- reading -----------------------------------------------------------------------------


def _answered(table: pa.Table) -> pa.Table:
    """The rows the endpoint answered (no errors, no shadow predictions)."""
    if table.num_rows == 0:
        return table
    mask = None
    if "status" in table.column_names:
        mask = pc.equal(pc.fill_null(table["status"], 200), 200)
    if "shadow" in table.column_names:
        live = pc.invert(pc.fill_null(table["shadow"], False))
        mask = live if mask is None else pc.and_(mask, live)
    return table if mask is None else table.filter(mask)


def _callers(table: pa.Table) -> np.ndarray:
    if CALLER not in table.column_names:
        return np.full(table.num_rows, ANONYMOUS, dtype=object)
    return np.asarray(
        pc.fill_null(table[CALLER], ANONYMOUS).to_numpy(zero_copy_only=False), dtype=object
    )


def _features(table: pa.Table) -> np.ndarray | None:
    """The numeric input columns as one float matrix (rows with a missing value dropped
    later, per caller); None without any."""
    columns = []
    for name in table.column_names:
        if not name.startswith(INPUT_PREFIX):
            continue
        kind = table.schema.field(name).type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
            columns.append(
                pc.cast(table[name], pa.float64()).to_numpy(zero_copy_only=False).astype(float)
            )
    if not columns:
        return None
    return np.column_stack(columns)


def _sample(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rows = rows[np.isfinite(rows).all(axis=1)]
    if len(rows) > MAX_ROWS:
        rows = rows[rng.choice(len(rows), MAX_ROWS, replace=False)]
    return rows


def _requests_by_caller(
    plog: PredictionLog, ws: Workspace, endpoint: str, start: datetime, end: datetime
) -> dict[str, int]:
    """Requests per caller in ``[start, end)``, reading only the columns needed."""
    wanted = ("request_id", "at", "status", "shadow", CALLER)
    counts: dict[str, int] = {}
    for segment in plog.segments(endpoint, start, end):
        source = pq.ParquetFile(pa.BufferReader(ws.artifacts.get_bytes(segment.digest)))
        present = [c for c in wanted if c in source.schema_arrow.names]
        table = source.read(columns=present)
        at = table.schema.field("at").type
        inside = pc.and_(
            pc.greater_equal(table["at"], pa.scalar(start, at)),
            pc.less(table["at"], pa.scalar(end, at)),
        )
        table = _answered(table.filter(inside))
        grouped = (
            pa.table({"caller": _callers(table), "request_id": table["request_id"]})
            .group_by("caller")
            .aggregate([("request_id", "count_distinct")])
        )
        for caller, n in zip(
            grouped["caller"].to_pylist(),
            grouped["request_id_count_distinct"].to_pylist(),
            strict=True,
        ):
            counts[caller] = counts.get(caller, 0) + n
    return counts


def _users(ws: Workspace) -> dict[str, str]:
    """Token id -> its user's name, to name the callers."""
    try:
        return {token.id: token.user for token in ws.identities.list_tokens()}
    except Exception:  # naming is a courtesy: an alert must not fail for it
        log.warning("could not read the tokens to name callers", exc_info=True)
        return {}


def _who(finding: CallerFinding) -> str:
    if finding.user:
        return f"token {finding.caller} of {finding.user}"
    return finding.caller


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
