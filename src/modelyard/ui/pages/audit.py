"""The audit pages: the hash-chained log, searchable, and a check of the chain."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import Depends, Query, Request
from starlette.responses import RedirectResponse, Response

from modelyard.errors import Forbidden
from modelyard.governance.entities import AuditRecord
from modelyard.page import MAX_LIMIT, check_limit
from modelyard.registry.history import parse_instant
from modelyard.ui.auth import Viewer, viewer
from modelyard.ui.routing import PREFIX, page_router
from modelyard.ui.templating import render

router = page_router()

PAGE = 50
#: The filters of AuditLog.list the page's search form offers, in its order.
FILTERS = ("actor", "action", "entity_type", "entity_id")


def _time(value: str, what: str) -> datetime | None:
    """A form's time: ISO 8601; without a zone it is UTC, as every time on the dashboard
    (a ``datetime-local`` input sends none), and a date alone is its midnight."""
    value = value.strip()
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return parse_instant(value, what)  # which says what is wrong with it
    return parse_instant(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC), what)


def _json(value: Any) -> str:
    return orjson.dumps(
        value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str
    ).decode()


def changes(record: AuditRecord) -> list[tuple[str, str, str]]:
    """``(field, before, after)`` for each top-level field a record changed, as short JSON
    ("" where the field was absent)."""
    before, after = record.before or {}, record.after or {}
    rows = []
    for key in sorted(set(before) | set(after)):
        if key in before and key in after and before[key] == after[key]:
            continue
        rows.append((key, _short(before, key), _short(after, key)))
    return rows


def _short(values: dict[str, Any], key: str) -> str:
    return orjson.dumps(values[key], default=str).decode() if key in values else ""


@router.get("/audit")
def audit_log(
    request: Request,
    actor: str = "",
    action: str = "",
    entity_type: str = "",
    entity_id: str = "",
    since: str = "",
    until: str = "",
    before: int | None = Query(None, ge=1, description="show records older than this seq"),
    limit: int = Query(PAGE, description=f"records per page, 1 to {MAX_LIMIT}"),
    who: Viewer = Depends(viewer),
) -> Response:
    check_limit(limit)
    filters = {
        "actor": actor.strip(),
        "action": action.strip(),
        "entity_type": entity_type.strip(),
        "entity_id": entity_id.strip(),
    }
    page = who.ws.audit.list(
        actor=filters["actor"] or None,
        action=filters["action"] or None,
        entity_type=filters["entity_type"] or None,
        entity_id=filters["entity_id"] or None,
        before_seq=before,
        since=_time(since, "from"),
        until=_time(until, "to"),
        limit=limit,
    )
    params = {k: v for k, v in {**filters, "since": since, "until": until}.items() if v}
    if limit != PAGE:
        params["limit"] = str(limit)
    records = [(r, changes(r), _json(r.before), _json(r.after)) for r in page.items]
    return render(
        request,
        who,
        "audit/list.html",
        filters=filters,
        since=since,
        until=until,
        before=before,
        params=params,
        records=records,
        older=page.items[-1].seq if page.next_page_token and page.items else None,
        filtered=bool(params.keys() - {"limit"}),
        may_verify=who.can("admin"),
    )


@router.get("/audit/verify")
def verify_again() -> Response:
    """The verify result's address, reloaded or typed: the audit page, with the button."""
    return RedirectResponse(f"{PREFIX}/audit", status_code=303)


@router.post("/audit/verify")
def verify(request: Request, who: Viewer = Depends(viewer)) -> Response:
    """Walk the whole chain (``modelyard audit verify``); an admin's check, as in the API."""
    if not who.can("admin"):
        raise Forbidden(
            f"{who.identity.name} has role {who.identity.role.value}; verifying the audit "
            "chain needs admin (it reads every record): ask an admin, or run "
            "`modelyard audit verify` on the server"
        )
    result = who.ws.audit.verify()
    return render(request, who, "audit/verify.html", result=result)
