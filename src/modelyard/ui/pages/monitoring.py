"""The monitoring pages: an endpoint's drift (per feature with its histograms, and over
time), its performance from feedback, and its alerts, which people acknowledge and resolve."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import Depends, Form, Query, Request
from starlette.responses import RedirectResponse, Response

from modelyard.errors import InvalidInput, ModelyardError
from modelyard.monitoring import alerts
from modelyard.monitoring.drift import FeatureDrift
from modelyard.monitoring.entities import EndpointDrift, WindowDrift
from modelyard.monitoring.performance import PerformanceReport
from modelyard.monitoring.report import histogram
from modelyard.monitoring.service import HISTORY_WINDOWS, history_granularity
from modelyard.ui.auth import Viewer, viewer
from modelyard.ui.charts import Chart
from modelyard.ui.routing import PREFIX, local_path, page_router
from modelyard.ui.templating import render
from modelyard.workspace import Workspace

router = page_router()

#: The alert filters the page offers, in order ("all": no filter).
STATUS_FILTERS = ("active", "open", "escalated", "acknowledged", "resolved", "all")
ALERTS_PER_PAGE = 20
#: Histograms drawn per window (drifted features first); the table lists every feature.
MAX_HISTOGRAMS = 12
#: What a note may hold (it is kept in the alert's evidence).
MAX_NOTE = alerts.MAX_NOTE
#: Metrics a performance chart shows first, if the labels give them.
PREFERRED_METRICS = ("accuracy", "f1", "roc_auc", "rmse", "mae", "r2")


@dataclass
class Section:
    """One part of the page, or why it is empty (a message that says what to do)."""

    value: Any = None
    message: str = ""


@router.get("/monitoring")
def monitoring(
    request: Request,
    endpoint: str | None = None,
    window: int | None = Query(None, description="window length in seconds"),
    at: datetime | None = Query(None, description="start of the window to show drift for"),
    status: str = "active",
    metric: str | None = None,
    page: str | None = None,
    who: Viewer = Depends(viewer),
) -> Response:
    ws = who.ws
    endpoints = [e.name for e in ws.endpoints.list()]
    if status not in STATUS_FILTERS:
        raise InvalidInput(f"status {status!r} is not one of {', '.join(STATUS_FILTERS)}")
    if not endpoints:
        return render(request, who, "monitoring/index.html", endpoints=[], endpoint=None)
    name = endpoint or endpoints[0]
    config = ws.monitoring.get_config(name)  # an unknown endpoint: its NotFound, a 404 page
    if window is not None and window not in config.granularities:
        raise InvalidInput(
            f"window {window} s is not one of endpoint {name!r}'s monitoring windows; "
            f"pick one of {', '.join(str(g) for g in config.granularities)}"
        )
    granularity = window or history_granularity(config.granularities)
    history = _section(lambda: ws.monitoring.drift_history(name, window=granularity))
    if at is not None:
        at = _window_start(at, granularity)
    else:
        at = next((h.window_start for h in reversed(history.value or []) if h.rows), None)
    drift = _section(lambda: _drift(ws, name, granularity, at))
    # Performance is computed from every label of the day (the page's slowest part): it
    # arrives after the page, from its own route (performance_section below).
    section = {"endpoint": name, "window": granularity, "status": status, "metric": metric}
    if at is not None:
        section["at"] = at.isoformat()
    alerts = ws.monitoring.recent_alerts(
        name,
        None if status == "all" else status,
        limit=ALERTS_PER_PAGE,
        page_token=page,
    )
    return render(
        request,
        who,
        "monitoring/index.html",
        endpoints=endpoints,
        endpoint=name,
        granularities=config.granularities,
        granularity=granularity,
        window_names={g: _duration(g) for g in config.granularities},
        at=at,
        history=history,
        history_chart=_history_chart(history.value or [], granularity),
        drift=drift,
        performance_url=f"{PREFIX}/monitoring/performance?"
        + urlencode({k: v for k, v in section.items() if v is not None}),
        alert_status=status,  # (``status`` is the response's)
        statuses=STATUS_FILTERS,
        alerts=alerts,
        here=_here(request),
    )


@router.get("/monitoring/performance")
def performance_section(
    request: Request,
    endpoint: str,
    window: int,
    status: str = "active",
    at: datetime | None = None,
    metric: str | None = None,
    who: Viewer = Depends(viewer),
) -> Response:
    """The monitoring page's performance section (htmx loads it after the page)."""
    ws = who.ws
    config = ws.monitoring.get_config(endpoint)
    if window not in config.granularities:
        raise InvalidInput(
            f"window {window} s is not one of endpoint {endpoint!r}'s monitoring windows; "
            f"pick one of {', '.join(str(g) for g in config.granularities)}"
        )
    return render(
        request,
        who,
        "monitoring/_performance.html",
        endpoint=endpoint,
        granularity=window,
        window_names={g: _duration(g) for g in config.granularities},
        alert_status=status,
        at=at,
        performance=_section(lambda: _performance(ws, endpoint, window, metric)),
    )


@router.get("/monitoring/alerts/{alert_id}")
def alert_page(request: Request, alert_id: str, who: Viewer = Depends(viewer)) -> Response:
    alert = who.ws.monitoring.get_alert(alert_id)  # NotFound: the 404 page
    observation = alert.evidence.get("observation") or {}
    notifications = [{**n, "url": _site(str(n.get("url", "")))} for n in alert.notifications]
    return render(
        request,
        who,
        "monitoring/alert.html",
        alert=alert,
        observation=sorted(observation.items()),
        notifications=notifications,
        evidence={k: v for k, v in alert.evidence.items() if k != "observation"},
        here=_here(request),
    )


@router.post("/monitoring/alerts/{alert_id}/acknowledge")
def acknowledge(
    alert_id: str,
    note: str = Form("", max_length=MAX_NOTE),
    next: str = Form(""),
    who: Viewer = Depends(viewer),
) -> Response:
    who.ws.monitoring.acknowledge_alert(alert_id, note=note.strip())
    return RedirectResponse(_back(next, alert_id), status_code=303)


@router.post("/monitoring/alerts/{alert_id}/resolve")
def resolve(
    alert_id: str,
    note: str = Form("", max_length=MAX_NOTE),
    next: str = Form(""),
    who: Viewer = Depends(viewer),
) -> Response:
    who.ws.monitoring.resolve_alert(alert_id, note=note.strip())
    return RedirectResponse(_back(next, alert_id), status_code=303)


# --- the page's parts -------------------------------------------------------------------


def _section(make: Callable[[], Any]) -> Section:
    """A part of the page; the service's error (nothing logged yet, no reference profile)
    shown in its place rather than as the whole page."""
    try:
        return Section(make())
    except ModelyardError as exc:
        return Section(message=exc.detail)


@dataclass
class FeatureView:
    drift: FeatureDrift
    chart: Chart | None
    empty: str


def _drift(ws: Workspace, endpoint: str, granularity: int, at: datetime | None) -> dict[str, Any]:
    """Per-feature drift of one window (default: the last ``granularity`` seconds)."""
    end = None if at is None else at + timedelta(seconds=granularity)
    found: EndpointDrift
    found, reference, current = ws.monitoring.drift_profiles(
        endpoint, window=granularity, start=at, end=end
    )
    features = found.report.features
    drawn = sorted(features, key=lambda f: not f.drifted)[:MAX_HISTOGRAMS]
    views = []
    for i, f in enumerate(drawn):
        h = histogram(reference.features.get(f.feature), current.features.get(f.feature))
        chart = None
        if not h.empty:
            none: list[float | None] = [None] * len(h.labels)
            chart = Chart(
                f"{f.feature}: reference vs current",
                h.labels,
                {
                    "reference": _percent(h.reference) if h.reference else none,
                    "current": _percent(h.current) if h.current else none,
                },
                unit=" %",
                kind="bars",
                id=f"histogram-{i}",
            )
        views.append(FeatureView(f, chart, h.empty))
    return {"drift": found, "histograms": views, "hidden": len(features) - len(drawn)}


def _window_start(at: datetime, granularity: int) -> datetime:
    """``at`` in UTC; :class:`InvalidInput` unless it and the end of its window are times
    (year 1 to 9999), so that no date arithmetic overflows into a 500."""
    try:
        utc = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or utc > datetime.max.replace(tzinfo=UTC) - timedelta(seconds=granularity):
        raise InvalidInput(
            f"at {at.isoformat()} leaves no room for a {_duration(granularity)} window (times "
            "run from year 1 to 9999); pick a window under Drift over time"
        )
    return utc


def _percent(shares: Sequence[float]) -> list[float | None]:
    return [100 * s for s in shares]


def _history_chart(history: list[WindowDrift], granularity: int) -> Chart:
    return Chart(
        "Drifted features per window",
        [_label(h.window_start, granularity) for h in history],
        {
            "drifted share": [
                None if h.drift_share is None else 100 * h.drift_share for h in history
            ]
        },
        unit=" %",
        id="drift-over-time",
        width=840,
        height=220,
    )


def _performance(
    ws: Workspace, endpoint: str, granularity: int, metric: str | None
) -> dict[str, Any]:
    """The chosen metric per window and version, from feedback: over the last day, or the
    last 48 windows if they are shorter (as drift over time)."""
    now = datetime.now(UTC)
    span = min(timedelta(days=1), HISTORY_WINDOWS * timedelta(seconds=granularity))
    report: PerformanceReport = ws.monitoring.performance(
        endpoint, window=granularity, start=now - span, end=now
    )
    given = {m for w in report.windows for m, v in w.metrics.items() if v is not None}
    metrics = [m for m in PREFERRED_METRICS if m in given] + sorted(given - {*PREFERRED_METRICS})
    if metric is not None and metric not in metrics and report.windows:
        raise InvalidInput(
            f"the labels of {endpoint!r} give no {metric!r}; pick one of {', '.join(metrics)}"
        )
    chosen = metric or (metrics[0] if metrics else None)
    starts = sorted({w.window_start for w in report.windows})
    versions = sorted({w.version for w in report.windows}, key=lambda v: v or 0)
    values = {(w.window_start, w.version): w.metrics.get(chosen or "") for w in report.windows}
    chart = Chart(
        f"{chosen or 'performance'} per window",
        [_label(s, granularity) for s in starts],
        {
            ("all versions" if v is None else f"version {v}"): [values.get((s, v)) for s in starts]
            for v in versions
        },
        id="performance",
        width=840,
        height=220,
    )
    samples = sum(w.samples for w in report.windows)
    return {
        "report": report,
        "metrics": metrics,
        "metric": chosen,
        "chart": chart,
        "samples": samples,
        "span": _duration(int(span.total_seconds())),
    }


def _duration(seconds: int) -> str:
    """A window length as people say it: "5 min", "1 h", "1 d"."""
    for unit, size in (("d", 86_400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _label(at: datetime, granularity: int) -> str:
    return at.strftime("%Y-%m-%d" if granularity >= 86_400 else "%H:%M")


def _here(request: Request) -> str:
    """This page's path and query: where a form on it comes back to."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def _back(next: str, alert_id: str) -> str:
    return local_path(next) if next else f"{PREFIX}/monitoring/alerts/{alert_id}"


def _site(url: str) -> str:
    """A webhook URL without its path and query, which often hold its secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}/…" if parts.hostname else "(not shown)"
