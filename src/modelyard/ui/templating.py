"""Rendering pages: the Jinja2 environment, its filters, and the response helpers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

from modelyard import __version__
from modelyard.ui.auth import CSRF_FIELD, Viewer, csrf_token, keep_csrf
from modelyard.ui.charts import Chart, sparkline

#: What a table shows for a value not known (an en dash).
NONE = "\u2013"

#: Every page: scripts and styles from the dashboard only (htmx runs no inline script), no
#: framing by another site (the pages have approve buttons), nothing kept in caches.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")


def render(
    request: Request,
    viewer: Viewer | None,
    template: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """The page ``template`` for ``viewer``, with the CSRF token its forms need."""
    context.update(
        request=request,
        viewer=viewer,
        csrf=csrf_token(request),
        csrf_field=CSRF_FIELD,
        version=__version__,
        partial=request.headers.get("hx-request") == "true"
        and request.headers.get("hx-boosted") != "true",
    )
    response = TEMPLATES.TemplateResponse(
        request,
        template,
        context,
        status_code=status,
        headers={**SECURITY_HEADERS, **(headers or {})},
    )
    keep_csrf(request, response)
    return response


def ago(value: datetime | None, now: datetime | None = None) -> str:
    """``value`` as "5 min ago" (the exact time is in the element's title)."""
    if value is None:
        return "never"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    seconds = ((now or datetime.now(UTC)) - value).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            text = f"{int(seconds // size)} {unit}"
            break
    else:
        text = f"{int(seconds)} s"
    return f"in {text}" if future else f"{text} ago"


def when(value: datetime | None) -> str:
    """A UTC time to the second, as every page shows times."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def num(value: float | int | None, digits: int = 3) -> str:
    """A number for a table cell: thousands separated, floats to ``digits`` significant."""
    if value is None:
        return NONE
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 1):
        return f"{int(value):,}"
    return f"{float(value):.{digits}g}"


def pct(value: float | None, digits: int = 1) -> str:
    return NONE if value is None else f"{100 * float(value):.{digits}f} %"


def ms(value: float | None) -> str:
    if value is None:
        return NONE
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.3g} ms"


TEMPLATES.env.filters.update(ago=ago, when=when, num=num, pct=pct, ms=ms)
TEMPLATES.env.globals.update(sparkline=sparkline, Chart=Chart)
