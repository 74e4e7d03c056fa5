"""The experiments pages: experiments, an experiment's runs table, a run, runs compared."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

from fastapi import Depends, Query, Request
from starlette.responses import Response

from modelyard.errors import InvalidInput
from modelyard.tracking.entities import MetricPoint, Run
from modelyard.ui.auth import Viewer, viewer
from modelyard.ui.charts import Chart
from modelyard.ui.routing import page_router
from modelyard.ui.templating import render

router = page_router()

#: Rows per page of the experiments list and of a runs table.
PAGE_SIZE = 50
#: Param and metric columns a runs table shows at most; the rest are on the run's page.
MAX_COLUMNS = 8
#: How many runs the compare page takes.
MIN_COMPARE, MAX_COMPARE = 2, 5
#: Metric charts a page draws at most (each is one history query per run).
MAX_CHARTS = 20
#: Points a chart (and its data table) holds at most; longer histories are thinned evenly.
MAX_POINTS = 500
#: Model versions listed on a run's page.
MAX_VERSIONS = 50


@router.get("/experiments")
def experiments(
    request: Request, q: str = "", page: str | None = None, who: Viewer = Depends(viewer)
) -> Response:
    tracking = who.ws.tracking
    found = tracking.list_experiments(q=q or None, limit=PAGE_SIZE, page_token=page)
    return render(
        request,
        who,
        "experiments/list.html",
        experiments=found.items,
        counts=tracking.count_runs([e.id for e in found.items]),
        next_token=found.next_page_token,
        q=q,
    )


@router.get("/experiments/{id_or_name:path}")
def experiment(
    request: Request,
    id_or_name: str,
    filter: str = "",
    order: str = "",
    page: str | None = None,
    who: Viewer = Depends(viewer),
) -> Response:
    tracking = who.ws.tracking
    exp = tracking.get_experiment(id_or_name)
    runs: list[Run] = []
    next_token, error = None, None
    try:
        found = tracking.search_runs(
            exp.id,
            filter_string=filter,
            order_by=order or None,
            limit=PAGE_SIZE,
            page_token=page,
        )
        runs, next_token = found.items, found.next_page_token
    except InvalidInput as exc:
        # The runs table's own page, with the message and the filter as typed, to fix it there.
        error = exc.detail
    sort_key = _sorted_metric(order)
    descending = order.strip().lower().endswith(" desc")
    param_keys = _columns((r.params for r in runs), MAX_COLUMNS)
    metric_keys = _columns((r.metrics for r in runs), MAX_COLUMNS, first=sort_key)
    return render(
        request,
        who,
        "experiments/runs.html",
        status=422 if error else 200,
        experiment=exp,
        runs=runs,
        next_token=next_token,
        filter=filter,
        order=order,
        error=error,
        param_keys=param_keys,
        metric_keys=metric_keys,
        hidden={
            r.id: len(set(r.params) - set(param_keys)) + len(set(r.metrics) - set(metric_keys))
            for r in runs
        },
        orders=_order_choices(metric_keys, order),
        sort_key=sort_key,
        descending=descending,
        sort_links={
            k: metric_order(k, descending=not (k == sort_key and descending)) for k in metric_keys
        },
        params={k: v for k, v in (("filter", filter), ("order", order)) if v},
    )


@router.get("/runs/compare")
def compare(
    request: Request, run: list[str] = Query(default=[]), who: Viewer = Depends(viewer)
) -> Response:
    ids = list(dict.fromkeys(r.strip() for r in run if r.strip()))
    if not MIN_COMPARE <= len(ids) <= MAX_COMPARE:
        raise InvalidInput(
            f"select {MIN_COMPARE} to {MAX_COMPARE} runs to compare, not {len(ids)}: tick "
            "their boxes in an experiment's runs table and press Compare"
        )
    tracking = who.ws.tracking
    comparison = tracking.compare_runs(ids)  # NotFound names any unknown id
    names = _series_names(ids, comparison.run_names)
    differing_metrics = [
        k for k, values in comparison.metrics.items() if not _same(values.values())
    ]
    shared = [
        k for k, values in comparison.metrics.items() if all(v is not None for v in values.values())
    ]
    charts = []
    for i, key in enumerate(shared[:MAX_CHARTS]):
        histories = {names[r]: _by_step(tracking.get_metric_history(r, key)) for r in ids}
        charts.append(_chart(key, histories, f"compare-{i}"))
    return render(
        request,
        who,
        "experiments/compare.html",
        comparison=comparison,
        names=names,
        differing_params=set(comparison.differing_params),
        differing_metrics=set(differing_metrics),
        charts=charts,
        more_charts=max(len(shared) - MAX_CHARTS, 0),
    )


@router.get("/runs/{run_id}")
def run_page(request: Request, run_id: str, who: Viewer = Depends(viewer)) -> Response:
    ws = who.ws
    run = ws.tracking.get_run(run_id)
    keys = sorted(run.metrics)
    chart_ids = {key: f"metric-{i}" for i, key in enumerate(keys[:MAX_CHARTS])}
    charts = [
        _chart(key, {key: _by_step(ws.tracking.get_metric_history(run.id, key))}, chart_id)
        for key, chart_id in chart_ids.items()
    ]
    return render(
        request,
        who,
        "experiments/run.html",
        run=run,
        versions=ws.registry.search_versions(run_id=run.id, limit=MAX_VERSIONS).items,
        charts=charts,
        chart_ids=chart_ids,
        more_charts=max(len(keys) - MAX_CHARTS, 0),
    )


@router.get("/runs/{run_id}/artifacts/{path:path}")
def artifact(request: Request, run_id: str, path: str, who: Viewer = Depends(viewer)) -> Response:
    """A run's file, as a download (never shown inline: it is whatever the run logged)."""
    data = who.ws.tracking.get_artifact(run_id, path)
    name = quote(path.rsplit("/", 1)[-1], safe="")
    return Response(
        data,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{name}",
            "X-Content-Type-Options": "nosniff",
        },
    )


def _columns(values: Iterable[dict[str, Any]], cap: int, *, first: str | None = None) -> list[str]:
    """The ``cap`` keys most runs of the page have (then by name); ``first`` leads if given."""
    counts = Counter(k for v in values for k in v)
    keys = sorted(counts, key=lambda k: (-counts[k], k))
    if first is not None and first in counts:
        keys.remove(first)
        keys.insert(0, first)
    return sorted(keys[:cap], key=lambda k: (k != first, k))


def _sorted_metric(order: str) -> str | None:
    """The metric key ``order`` sorts by, if it is a single metric ordering."""
    text = order.strip()
    for prefix in ("metrics.", "metric."):
        if text.lower().startswith(prefix):
            key = text[len(prefix) :]
            for suffix in (" asc", " desc"):
                if key.lower().endswith(suffix):
                    key = key[: -len(suffix)]
            key = key.strip()
            return key[1:-1] if key.startswith("`") and key.endswith("`") else key
    return None


def metric_order(key: str, descending: bool) -> str:
    """The ``order_by`` text that sorts runs by metric ``key``."""
    return f"metrics.`{key}` {'desc' if descending else 'asc'}"


def _order_choices(metric_keys: Sequence[str], current: str) -> list[tuple[str, str]]:
    """The sort box's options as (order_by, label); the current one is kept if not listed."""
    choices = [("", "Newest first"), ("attributes.start_time asc", "Oldest first")]
    for key in metric_keys:
        choices.append((metric_order(key, True), f"{key}, highest first"))
        choices.append((metric_order(key, False), f"{key}, lowest first"))
    if current and current not in {c for c, _ in choices}:
        choices.append((current, current))
    return choices


def _by_step(points: Sequence[MetricPoint]) -> dict[int, float | None]:
    """A history as step -> value (the last point logged at a step wins; non-finite is a gap,
    as a chart cannot place it)."""
    return {p.step: p.value if math.isfinite(p.value) else None for p in points}


def _chart(key: str, histories: dict[str, dict[int, float | None]], chart_id: str) -> Chart:
    """One line per history over the union of their steps, thinned to :data:`MAX_POINTS`."""
    steps = sorted({s for h in histories.values() for s in h})
    title = key
    if len(steps) > MAX_POINTS:
        stride = math.ceil(len(steps) / MAX_POINTS)
        kept = steps[::stride]
        if kept[-1] != steps[-1]:
            kept.append(steps[-1])
        title = f"{key} (every {stride}th of {len(steps):,} steps)"
        steps = kept
    return Chart(
        title=title,
        labels=[str(s) for s in steps],
        series={name: [h.get(s) for s in steps] for name, h in histories.items()},
        id=chart_id,
    )


def _series_names(ids: Sequence[str], names: dict[str, str]) -> dict[str, str]:
    """A distinct label per run: its name, with the end of its id where names repeat."""
    counts = Counter(names.get(i) or "" for i in ids)
    return {
        i: (names.get(i) or "") if (names.get(i) and counts[names[i]] == 1) else _label(i, names)
        for i in ids
    }


def _label(run_id: str, names: dict[str, str]) -> str:
    name = names.get(run_id) or ""
    return f"{name} ({run_id[-6:]})" if name else f"run {run_id[-6:]}"


def _same(values: Iterable[float | None]) -> bool:
    """Whether every run has the same value (NaN equals NaN here; missing differs)."""
    seen = {"nan" if v is not None and math.isnan(v) else v for v in values}
    return len(seen) <= 1
