"""The home page: what is serving, is it healthy, and what waits on someone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import Depends, Request
from starlette.responses import Response

from modelyard.errors import ModelyardError
from modelyard.serving.entities import Endpoint
from modelyard.ui.auth import Viewer, viewer
from modelyard.ui.pages.endpoints import serving
from modelyard.ui.routing import page_router
from modelyard.ui.templating import render
from modelyard.workspace import Workspace

router = page_router()

#: The home page's look back, in 5-minute windows (the monitor's finest by default).
HOUR = timedelta(hours=1)


@router.get("/")
def home(request: Request, who: Viewer = Depends(viewer)) -> Response:
    ws = who.ws
    now = datetime.now(UTC)
    endpoints = [endpoint_summary(ws, e, now) for e in ws.endpoints.list()]
    return render(
        request,
        who,
        "home.html",
        endpoints=endpoints,
        alerts=ws.monitoring.recent_alerts(status="active", limit=20).items,
        rollouts=ws.rollouts.active(),
        pipeline_runs=ws.pipelines.list_runs(limit=10).items,
        approvals=ws.approvals.list(status="pending", limit=20),
    )


def endpoint_summary(ws: Workspace, endpoint: Endpoint, now: datetime) -> dict[str, Any]:
    """An endpoint's row on the home page: what it serves and its last hour in windows."""
    policy = endpoint.policy
    try:
        ops = ws.monitoring.operations(endpoint.name, start=now - HOUR, end=now)
    except ModelyardError:
        ops = []
    drift = None
    try:
        status = ws.monitoring.status(endpoint.name)[0]
        drift = next((w.drift_status for w in status.windows if w.drift_status), None)
        open_alerts = status.open_alerts
    except ModelyardError:
        open_alerts = 0
    last = ops[-1] if ops else None
    return {
        "endpoint": endpoint,
        "serving": serving(endpoint),
        "shadow": policy.shadow,
        "rps": [w.throughput_rps for w in ops],
        "p99": [w.latency_p99_ms for w in ops],
        "errors": [w.error_rate for w in ops],
        "last": last,
        "drift": drift,
        "open_alerts": open_alerts,
    }
