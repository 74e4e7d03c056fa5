"""The endpoints pages: every endpoint, and one endpoint's policy, live charts, last hour
and recent predictions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from fastapi import Depends, Request
from starlette.responses import Response

from modelyard.errors import ModelyardError
from modelyard.monitoring.entities import OpsWindow
from modelyard.registry.uri import parse_model_uri
from modelyard.serving.entities import Endpoint
from modelyard.serving.live import LiveSeries
from modelyard.ui.auth import Viewer, viewer
from modelyard.ui.charts import Chart
from modelyard.ui.routing import page_router
from modelyard.ui.templating import render
from modelyard.workspace import Workspace

router = page_router()

#: Endpoints per page of the list.
PAGE = 50
#: What the live charts show (the gateway workers keep 5 minutes).
LIVE_SECONDS = 300.0
#: The "last hour" charts, from the monitor's closed windows.
HOUR = timedelta(hours=1)
#: Recent predictions shown.
PREDICTIONS = 50
#: Inputs and outputs shown per prediction, and the characters of each value.
SHOWN_INPUTS, SHOWN_OUTPUTS, VALUE_CHARS = 4, 2, 24


@router.get("/endpoints")
def endpoint_list(request: Request, page: str = "", who: Viewer = Depends(viewer)) -> Response:
    everything = who.ws.endpoints.list()  # ordered by name: the page token is the last one
    after = [e for e in everything if e.name > page] if page else everything
    shown = after[:PAGE]
    return render(
        request,
        who,
        "endpoints/list.html",
        endpoints=[(e, serving(e)) for e in shown],
        total=len(everything),
        next_token=shown[-1].name if len(after) > PAGE else None,
    )


@router.get("/endpoints/{name}")
def endpoint_page(request: Request, name: str, who: Viewer = Depends(viewer)) -> Response:
    ws = who.ws
    endpoint = ws.endpoints.get(name)  # NotFound: the 404 page
    now = datetime.now(UTC)
    variants, variants_error = [], ""
    if endpoint.policy.variants:
        try:
            variants = ws.endpoints.variant_status(name)
        except ModelyardError as exc:
            variants_error = exc.detail
    rollouts = ws.rollouts.list(name, limit=1)  # one runs at a time: the newest
    try:
        hour = ws.monitoring.operations(name, start=now - HOUR, end=now)
    except ModelyardError:
        hour = []
    try:
        predictions = recent_predictions(ws, name)
    except ModelyardError as exc:  # e.g. a segment missing from the artifact store
        predictions = Predictions([], [], [], None, error=exc.detail)
    return render(
        request,
        who,
        "endpoints/detail.html",
        routes=serving(endpoint),
        variants=variants,
        variants_error=variants_error,
        rollout=rollouts[0] if rollouts else None,
        hour_charts=hour_charts(hour, now),
        predictions=predictions,
        model_href=model_href,
        **live_context(ws, endpoint),
    )


@router.get("/endpoints/{name}/live")
def endpoint_live(
    request: Request, name: str, paused: str = "", who: Viewer = Depends(viewer)
) -> Response:
    """The live charts alone: what the endpoint page's live region fetches every 2 s
    (``paused``: the reader paused the updates; 204, htmx keeps what it shows)."""
    endpoint = who.ws.endpoints.get(name)
    if paused:
        return Response(status_code=204)
    return render(request, who, "endpoints/_live.html", **live_context(who.ws, endpoint))


def serving(endpoint: Endpoint) -> list[tuple[str, str, float | None]]:
    """What answers the endpoint's requests: (name, model URI, share in percent), a
    variant's share being its deadline's choice (None)."""
    return [
        (d.name or d.target, d.target, d.share)
        for d in endpoint.destinations()
        if d.role != "shadow"
    ]


def model_href(uri: str) -> str:
    """The dashboard page of the model (or version) a model URI names; "" if none."""
    try:
        ref = parse_model_uri(uri)
    except ModelyardError:
        return ""
    base = f"/ui/models/{quote(ref.name, safe='')}"
    return f"{base}/versions/{ref.version}" if ref.version is not None else base


def live_context(ws: Workspace, endpoint: Endpoint) -> dict[str, Any]:
    series = ws.endpoints.live(endpoint.name, LIVE_SECONDS)
    return {
        "endpoint": endpoint,
        "live": series,
        "live_charts": live_charts(series, cache=endpoint.cache.enabled),
        "live_off": not ws.settings.live_stats_seconds,
    }


def live_charts(series: LiveSeries, *, cache: bool) -> list[Chart]:
    """The live charts of ``series``: requests/s, latency percentiles, errors/s, batch size
    and, with the cache on, its hit rate."""
    labels = [t.strftime("%H:%M:%S") for t in series.times]
    charts = [
        Chart(
            "Requests per second",
            labels,
            {"requests/s": series.requests_per_second},
            unit=" req/s",
            id="live-requests",
        ),
        Chart(
            "Latency",
            labels,
            {
                "p50": series.latency_p50_ms,
                "p95": series.latency_p95_ms,
                "p99": series.latency_p99_ms,
            },
            unit=" ms",
            id="live-latency",
        ),
        Chart(
            "Errors per second",
            labels,
            {"errors/s": series.errors_per_second},
            unit=" err/s",
            id="live-errors",
        ),
        Chart(
            "Mean batch size",
            labels,
            {"rows per predict call": series.batch_size},
            unit=" rows",
            id="live-batch",
        ),
    ]
    if cache:
        rates = [None if r is None else 100 * r for r in series.cache_hit_rate]
        charts.append(Chart("Cache hit rate", labels, {"hits": rates}, unit=" %", id="live-cache"))
    return charts


def hour_charts(windows: list[OpsWindow], now: datetime) -> list[Chart]:
    """The last hour in the monitor's closed windows: traffic, latency, error rate (a window
    with no row is a gap)."""
    if not windows:
        return []
    size = windows[0].window_end - windows[0].window_start
    newest = max(w.window_start for w in windows)
    slots = [newest - k * size for k in reversed(range(max(1, HOUR // size)))]
    by_start = {w.window_start: w for w in windows}
    rows = [by_start.get(s) for s in slots]
    labels = [s.strftime("%H:%M") for s in slots]

    def values(field: str, scale: float = 1.0) -> list[float | None]:
        found = [None if w is None else getattr(w, field) for w in rows]
        return [None if v is None else v * scale for v in found]

    return [
        Chart(
            "Requests per second",
            labels,
            {"requests/s": values("throughput_rps")},
            unit=" req/s",
            id="hour-requests",
        ),
        Chart(
            "Latency",
            labels,
            {
                "p50": values("latency_p50_ms"),
                "p95": values("latency_p95_ms"),
                "p99": values("latency_p99_ms"),
            },
            unit=" ms",
            id="hour-latency",
        ),
        Chart(
            "Error rate",
            labels,
            {"errors": values("error_rate", 100.0)},
            unit=" %",
            id="hour-errors",
        ),
    ]


@dataclass
class Predictions:
    """The newest rows of an endpoint's prediction log, and how far the log has reached."""

    rows: list[dict[str, Any]]
    inputs: list[str]
    outputs: list[str]
    logged_until: datetime | None
    error: str = ""


def recent_predictions(ws: Workspace, endpoint: str, limit: int = PREDICTIONS) -> Predictions:
    """The newest ``limit`` logged rows of ``endpoint``, newest first, as the page shows them."""
    table, until = ws.monitoring.recent_predictions(endpoint, limit)
    if until is None:
        return Predictions([], [], [], None)
    names = table.column_names
    inputs = [c for c in names if c.startswith("in__")][:SHOWN_INPUTS]
    outputs = [c for c in names if c.startswith("out__")][:SHOWN_OUTPUTS]
    shown = [
        {
            **{k: row.get(k) for k in ("at", "request_id", "model", "version", "status")},
            "latency_ms": row.get("latency_ms"),
            "shadow": bool(row.get("shadow")),
            "variant": row.get("variant"),
            "inputs": [short(row.get(c)) for c in inputs],
            "outputs": [short(row.get(c)) for c in outputs],
        }
        for row in table.to_pylist()
    ]
    return Predictions(
        shown,
        [c.removeprefix("in__") for c in inputs],
        [c.removeprefix("out__") for c in outputs],
        until,
    )


def short(value: Any) -> str:
    """A logged value for a table cell: numbers to 4 significant digits, at most
    :data:`VALUE_CHARS` characters."""
    if value is None:
        return ""
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, list):
        text = "[" + ", ".join(short(v) for v in value[:4]) + (", …]" if len(value) > 4 else "]")
    else:
        text = str(value)
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"
