"""Deadlines and effective accuracy: how many requests were answered in time, and how well.

An endpoint with variants (several models answering the same task at different speeds and
accuracies) gives each request a deadline and logs, per request, the ``variant`` that
answered, the ``deadline_ms`` and whether it was met (``deadline_met``; see
:mod:`modelyard.monitoring.predlog`). Each closed window counts, per (model, version) and
variant, the requests that carried a deadline, those that met it and those that failed
(status 500 or more, such as a request shed with 503); shadow answers and requests refused as
the caller's error (4xx) are not counted (:mod:`modelyard.monitoring.windows`).

From those counts, per window:

* ``deadline_met_rate``: the share of the requests with a deadline answered in time;
* ``effective_accuracy``: the share answered correctly *and* in time. Each version's answers
  in time count with a weight, its quality (the endpoint's ``quality_metric``, accuracy by
  default): ``sum(met_v * quality_v) / requests``. A version's quality is, in order:

  1. ``window``: the metric of its answers in time that have labels in this window, once they
     number :data:`MIN_WINDOW_LABELS` or cover all its answers in time. With every answer in
     time labelled (and one row per request) the accuracy-weighted figure is exactly the
     share of requests answered correctly in time;
  2. ``feedback``: the metric of its labelled predictions on this endpoint over the last 7
     days (:meth:`~modelyard.monitoring.service.MonitoringService.version_quality`, at least
     200 labels);
  3. ``run``: the metric as its evaluation run logged it (the version's ``run_id``);

  and when a version that answered in time has none of these, the figure is the share
  answered in time without weights, and says so (``basis`` ``unweighted`` and a ``note``).

Late and failed requests count as wrong whatever their label: an answer after its deadline is
no answer to the caller who stopped waiting.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import select

from modelyard.errors import InvalidInput, NotFound
from modelyard.monitoring.entities import DeadlineSummary, VariantDeadline
from modelyard.monitoring.predlog import DEADLINE_MET, PredictionLog
from modelyard.store.tables import FeedbackRow

if TYPE_CHECKING:
    from modelyard.monitoring.config import MonitorConfig
    from modelyard.monitoring.windows import WindowContent
    from modelyard.workspace import Workspace

__all__ = [
    "MIN_WINDOW_LABELS",
    "QUALITY_WINDOW",
    "Quality",
    "deadline_observation",
    "on_time_labels",
    "run_quality",
    "summarize",
    "variant_quality",
    "version_quality",
]

#: Labelled answers in time a version needs in a window for the window's labels to weigh it
#: (fewer are enough when they are all its answers in time).
MIN_WINDOW_LABELS = 30
#: How far back a version's quality from feedback looks.
QUALITY_WINDOW = timedelta(days=7)

#: A version's quality: (value, labels behind it or None, where it comes from).
Quality = tuple[float, int | None, Literal["feedback", "run"]]
Group = tuple[str, int]  # (model, version)


def summarize(
    ws: Workspace,
    endpoint: str,
    start: datetime,
    end: datetime,
    contents: Sequence[WindowContent],
    config: MonitorConfig,
    quality: Callable[[str, int], Quality | None],
    *,
    log: PredictionLog | None = None,
) -> DeadlineSummary | None:
    """The deadline figures of the window ``[start, end)`` from its stored ``contents``;
    None when no request in it carried a deadline.

    ``quality(model, version)`` gives a version's quality when the window's labels do not
    (feedback of the last days or its run's metric; None: unknown).
    """
    counts: dict[Group, list[int]] = {}
    entries: list[tuple[str | None, Group, list[int]]] = []
    for content in contents:
        group = (content.model, content.version)
        for name, (n, ok, bad) in sorted(content.deadlines.items()):
            if not n:
                continue
            total = counts.setdefault(group, [0, 0, 0])
            total[0], total[1], total[2] = total[0] + n, total[1] + ok, total[2] + bad
            entries.append((name or None, group, [n, ok, bad]))
    requests = sum(c[0] for c in counts.values())
    if not requests:
        return None
    met = sum(c[1] for c in counts.values())
    failed = sum(c[2] for c in counts.values())
    metric = config.quality_metric
    answered = {g: c[1] for g, c in counts.items() if c[1]}

    labelled = 0
    weights: dict[Group, tuple[float, int | None, Literal["window", "feedback", "run"]]] = {}
    if answered:
        from modelyard.monitoring.performance import group_metrics

        labels = on_time_labels(ws, endpoint, start, end, log=log)
        labelled = sum(len(rows) for rows in labels.values())
        for group, (metrics, used) in group_metrics(labels, config).items():
            value = metrics.get(metric)
            if (
                value is not None
                and _finite(value)
                and group in answered
                and used >= min(MIN_WINDOW_LABELS, answered[group])
            ):
                weights[group] = (float(value), used, "window")
        for group in answered:
            if group not in weights:
                found = quality(*group)
                if found is not None:
                    weights[group] = found

    unknown = sorted(g for g in answered if g not in weights)
    note = ""
    basis: Literal["feedback", "quality", "unweighted"]
    if not answered:
        effective = 0.0
        basis, note = "feedback", "no request was answered in time"
    elif unknown:
        effective = met / requests
        basis = "unweighted"
        names = ", ".join(f"models:/{m}/{v}" for m, v in unknown)
        note = (
            f"{metric} of {names} is unknown (no labels, no {metric} in its evaluation run): "
            "effective accuracy is the share answered in time, unweighted"
        )
    else:
        effective = sum(answered[g] * weights[g][0] for g in answered) / requests
        sources = {weights[g][2] for g in answered}
        basis = "feedback" if sources == {"window"} else "quality"

    variants = []
    for variant, group, (n, ok, bad) in sorted(
        entries, key=lambda e: (e[0] or "", e[1][0], e[1][1])
    ):
        weight = weights.get(group)
        variants.append(
            VariantDeadline(
                variant=variant,
                model=group[0],
                version=group[1],
                requests=n,
                share=n / requests,
                met=ok,
                failed=bad,
                met_rate=ok / n if n else None,
                quality=weight[0] if weight else None,
                quality_source=weight[2] if weight else None,
                quality_samples=weight[1] if weight else None,
            )
        )
    return DeadlineSummary(
        requests=requests,
        met=met,
        late=requests - met - failed,
        failed=failed,
        deadline_met_rate=met / requests,
        effective_accuracy=effective,
        basis=basis,
        metric=metric,
        labelled=labelled,
        note=note,
        variants=variants,
    )


def on_time_labels(
    ws: Workspace,
    endpoint: str,
    start: datetime,
    end: datetime,
    *,
    log: PredictionLog | None = None,
) -> dict[Group, list[tuple[Any, Mapping[str, Any]]]]:
    """The labelled rows of answers that met their deadline in ``[start, end)``, per
    (model, version): ``(label, logged outputs)`` pairs.

    Feedback holds each label with its prediction's time and request id, not whether it was
    in time: that is read from the log (only the few columns needed, and only when the
    window has labels).
    """
    with ws.store.read() as session:
        found = session.execute(
            select(
                FeedbackRow.request_id,
                FeedbackRow.predicted_at,
                FeedbackRow.model,
                FeedbackRow.version,
                FeedbackRow.label,
                FeedbackRow.prediction,
            ).where(
                FeedbackRow.endpoint == endpoint,
                FeedbackRow.predicted_at >= start,
                FeedbackRow.predicted_at < end,
            )
        ).all()
    if not found:
        return {}
    plog = log or PredictionLog(ws)
    ids = pa.array(sorted({row[0] for row in found}), pa.string())
    in_time: set[tuple[str, int]] = set()
    wanted = ("request_id", "at", "shadow", "status", DEADLINE_MET)
    for segment in plog.segments(endpoint, start, end):
        source = pq.ParquetFile(pa.BufferReader(ws.artifacts.get_bytes(segment.digest)))
        names = source.schema_arrow.names
        if DEADLINE_MET not in names:
            continue  # written before deadlines, or without any
        table = source.read(columns=[c for c in wanted if c in names])
        mask = pc.and_(
            pc.is_in(table["request_id"], value_set=ids), pc.fill_null(table[DEADLINE_MET], False)
        )
        if "shadow" in names:
            mask = pc.and_(mask, pc.invert(pc.fill_null(table["shadow"], False)))
        if "status" in names:
            mask = pc.and_(mask, pc.equal(pc.fill_null(table["status"], 200), 200))
        table = table.filter(mask)
        at = table["at"].cast(pa.int64()).to_pylist()
        in_time.update(zip(table["request_id"].to_pylist(), at, strict=True))
    labels: dict[Group, list[tuple[Any, Mapping[str, Any]]]] = {}
    for request_id, predicted_at, model, version, label, prediction in found:
        if (request_id, _micros(predicted_at)) in in_time:
            labels.setdefault((model, version), []).append((label, prediction))
    return labels


def version_quality(
    ws: Workspace,
    endpoint: str,
    model: str,
    version: int,
    metric: str = "accuracy",
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    min_samples: int = 200,
    max_samples: int = 10_000,
) -> tuple[float, int] | None:
    """``metric`` of ``models:/model/version``'s labelled predictions on ``endpoint``, and the
    number of labels it was computed from; None with fewer than ``min_samples``.

    Predictions made in ``[since, until)`` (default: the last :data:`QUALITY_WINDOW`), the
    newest ``max_samples`` of them: one query on the feedback table's (endpoint, time) index
    reading labels and outputs only. ``metric``: any metric a performance report gives;
    InvalidInput when it is not one the endpoint's labels give.
    """
    from modelyard.monitoring.feedback import load_monitor_config
    from modelyard.monitoring.performance import METRICS, group_metrics

    if metric not in METRICS:
        raise InvalidInput(
            f"metric {metric!r} is not one feedback gives; use one of " + ", ".join(sorted(METRICS))
        )
    if min_samples < 1 or max_samples < min_samples:
        raise InvalidInput(
            f"min_samples ({min_samples}) must be at least 1 and at most max_samples "
            f"({max_samples})"
        )
    until = until or datetime.now(UTC)
    since = since or until - QUALITY_WINDOW
    if since >= until:
        raise InvalidInput(
            f"since ({since.isoformat()}) must be before until ({until.isoformat()})"
        )
    with ws.store.read() as session:
        found = session.execute(
            select(FeedbackRow.label, FeedbackRow.prediction)
            .where(
                FeedbackRow.endpoint == endpoint,
                FeedbackRow.predicted_at >= since,
                FeedbackRow.predicted_at < until,
                FeedbackRow.model == model,
                FeedbackRow.version == version,
            )
            .order_by(FeedbackRow.predicted_at.desc())
            .limit(max_samples)
        ).all()
    if len(found) < min_samples:
        return None
    config = load_monitor_config(ws, endpoint)
    measured = group_metrics({0: [(label, outputs) for label, outputs in found]}, config).get(0)
    if measured is None:
        return None
    metrics, used = measured
    if metric not in metrics:
        raise InvalidInput(
            f"endpoint {endpoint!r}'s labels give {', '.join(sorted(metrics))}, not {metric!r}"
        )
    value = metrics[metric]
    if value is None or used < min_samples:
        return None
    return value, used


def variant_quality(
    ws: Workspace, endpoint: str, model: str, version: int, metric: str
) -> Quality | None:
    """A version's quality when a window's labels do not give it: from its labelled
    predictions on ``endpoint`` of the last days, else from its evaluation run."""
    try:
        found = version_quality(ws, endpoint, model, version, metric)
    except InvalidInput:  # the endpoint's labels do not give this metric
        found = None
    if found is not None:
        return found[0], found[1], "feedback"
    value = run_quality(ws, model, version, metric)
    return None if value is None else (value, None, "run")


def run_quality(ws: Workspace, model: str, version: int, metric: str) -> float | None:
    """``metric`` as the version's evaluation run logged it; None without a run or metric."""
    try:
        run_id = ws.registry.get_version(model, version).run_id
        if run_id is None:
            return None
        value = ws.tracking.get_run(run_id).metrics.get(metric)
    except NotFound:
        return None
    return float(value) if value is not None and _finite(value) else None


def deadline_observation(
    summary: DeadlineSummary | None,
) -> tuple[dict[str, float | None], dict[str, int]]:
    """The alert-rule metrics of a window's deadline figures, and their sample counts:
    ``effective_accuracy``, ``deadline_met_rate``, ``deadline_requests``, and per named
    variant ``deadline_met_rate.<variant>`` and ``variant_share.<variant>``."""
    if summary is None:
        return {}, {}
    observation: dict[str, float | None] = {
        "deadline_requests": summary.requests,
        "deadline_met_rate": summary.deadline_met_rate,
        "effective_accuracy": summary.effective_accuracy,
    }
    samples = dict.fromkeys(observation, summary.requests)
    per_variant: dict[str, list[int]] = {}
    for entry in summary.variants:
        if entry.variant is not None:
            mine = per_variant.setdefault(entry.variant, [0, 0])
            mine[0] += entry.requests
            mine[1] += entry.met
    for variant, (requests, met) in per_variant.items():
        observation[f"deadline_met_rate.{variant}"] = met / requests
        observation[f"variant_share.{variant}"] = requests / summary.requests
        samples[f"deadline_met_rate.{variant}"] = requests
        samples[f"variant_share.{variant}"] = summary.requests
    return observation, samples


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(at: datetime) -> int:
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at
    return (at - _EPOCH) // timedelta(microseconds=1)
