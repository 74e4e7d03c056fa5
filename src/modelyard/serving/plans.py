"""What the gateway serves, resolved from the registry, and a copy on disk for the next start.

:func:`resolve` turns every endpoint into the versions and runtimes that answer it (a
:class:`Plan` each). That needs the metadata store: SQLAlchemy and the table definitions,
a third of a gateway's way to its first answer on a 2-core machine. So the plans are also
written to ``<home>/gateway-plans.json`` (by a gateway after each sync, and by the endpoint
commands after each change), stamped with the audit log's newest sequence number, and a
gateway that starts later serves those plans at once if the audit log still ends at that
number. Every change that can move what is served
(endpoints, aliases, versions, runtime checks) is audited, so an unchanged stamp means the
registry would resolve the same plans; the gateway opens the store after it listens and
resolves everything again on its first refresh all the same.

Only for a SQLite store, whose stamp the standard library's sqlite3 reads in milliseconds.
Anything unexpected (another database, another schema revision or modelyard version, a
stamp that moved, a file that does not parse) means no cache: the gateway reads the store.
The file is trusted as much as the database beside it; the model files it names are still
verified against their digests when they are loaded.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from modelyard.config import Settings
from modelyard.errors import ModelyardError
from modelyard.registry.entities import ModelVersion
from modelyard.registry.uri import parse_model_uri
from modelyard.serving.entities import Endpoint
from modelyard.serving.runtime import resolve_runtime
from modelyard.store.schema import HEAD_REVISION, read_sqlite, sqlite_file

if TYPE_CHECKING:
    from modelyard.workspace import Workspace

log = logging.getLogger("modelyard.gateway")

FILE_NAME = "gateway-plans.json"
FORMAT = 1

Errors = dict[str, tuple[str, str]]  # endpoint -> (why it is not ready, model name)


@dataclass
class Plan:
    """What an endpoint should serve, resolved from the registry."""

    endpoint: Endpoint
    routes: list[tuple[ModelVersion, float, str]]  # version, weight, runtime
    shadow: tuple[ModelVersion, str] | None = None
    #: The ONNX file of each (model, version) served on runtime "onnx".
    onnx_files: dict[tuple[str, int], str] = field(default_factory=dict)


@dataclass
class Resolved:
    """Every endpoint's plan, and the audit log's newest sequence number read before them."""

    stamp: int
    plans: list[Plan]
    errors: Errors


def resolve(ws: Workspace) -> Resolved:
    """Resolve every endpoint's targets to versions and runtimes (blocking).

    The stamp is read first: a change made while resolving is seen at the next refresh.
    """
    stamp = ws.audit.last_seq()
    plans: list[Plan] = []
    errors: Errors = {}
    for endpoint in ws.endpoints.list():
        try:
            routes = endpoint.policy.routes or []
            pairs = (
                [(r.target, r.weight) for r in routes]
                or [(v.target, 1.0) for v in endpoint.policy.variants]
                or [(endpoint.target, 1.0)]
            )
            plan = Plan(endpoint, [])
            for target, weight in pairs:
                version = ws.registry.resolve(target)
                plan.routes.append((version, weight, _runtime(ws, plan, version)))
            if endpoint.policy.shadow:
                version = ws.registry.resolve(endpoint.policy.shadow)
                plan.shadow = (version, _runtime(ws, plan, version))
            plans.append(plan)
        except ModelyardError as exc:
            errors[endpoint.name] = (exc.detail, _model_name(endpoint.target))
    return Resolved(stamp, plans, errors)


def refresh(ws: Workspace) -> None:
    """Write the cache from the store now (after a change to the endpoints)."""
    if sqlite_file(ws.settings.resolved_database_url) is not None:
        write(ws.settings, resolve(ws))


def audit_stamp(settings: Settings) -> int | None:
    """The audit log's newest sequence number, read with sqlite3 (None: not a SQLite store,
    or it cannot be read that way)."""
    rows = read_sqlite(settings.resolved_database_url, "SELECT max(seq) FROM audit_log")
    if rows is None:
        return None
    return int(rows[0][0] or 0)


def read(settings: Settings) -> Resolved | None:
    """The cached plans, if they are what the registry would resolve now; else None."""
    path = settings.resolved_home / FILE_NAME
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring the gateway's plan cache %s: %s", path, exc)
        return None
    if not isinstance(data, dict) or data.get("key") != _key(settings):
        return None
    stamp = audit_stamp(settings)
    if stamp is None or data.get("stamp") != stamp:
        return None
    try:
        return Resolved(
            stamp,
            [_plan(p) for p in data["plans"]],
            {name: (reason, model) for name, (reason, model) in data["errors"].items()},
        )
    except (KeyError, TypeError, ValueError, ValidationError) as exc:
        log.warning("ignoring the gateway's plan cache %s: %s", path, exc)
        return None


def write(settings: Settings, resolved: Resolved) -> None:
    """Replace the cached plans (atomically: a reader sees the old file or the new one)."""
    if sqlite_file(settings.resolved_database_url) is None:
        return  # read() could not check its stamp
    path = settings.resolved_home / FILE_NAME
    data = {
        "key": _key(settings),
        "stamp": resolved.stamp,
        "plans": [_plan_json(p) for p in resolved.plans],
        "errors": resolved.errors,
    }
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home: start-ups just read the store
        log.warning("could not write the gateway's plan cache %s: %s", path, exc)
        tmp.unlink(missing_ok=True)


def _runtime(ws: Workspace, plan: Plan, version: ModelVersion) -> str:
    runtime, onnx_file = resolve_runtime(ws, plan.endpoint.runtime, version)
    if onnx_file is not None:
        plan.onnx_files[version.model, version.version] = onnx_file
    return runtime


def _model_name(target: str) -> str:
    try:
        return parse_model_uri(target).name
    except ModelyardError:
        return ""


def _key(settings: Settings) -> dict[str, Any]:
    from modelyard import __version__

    return {
        "format": FORMAT,
        "modelyard": __version__,
        "schema": HEAD_REVISION,
        "database": settings.resolved_database_url,
    }


def _plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "endpoint": plan.endpoint.model_dump(mode="json"),
        "routes": [[v.model_dump(mode="json"), w, rt] for v, w, rt in plan.routes],
        "shadow": (
            None
            if plan.shadow is None
            else [plan.shadow[0].model_dump(mode="json"), plan.shadow[1]]
        ),
        "onnx_files": [[m, v, digest] for (m, v), digest in plan.onnx_files.items()],
    }


def _plan(data: dict[str, Any]) -> Plan:
    shadow = data["shadow"]
    return Plan(
        Endpoint.model_validate(data["endpoint"]),
        [(ModelVersion.model_validate(v), float(w), str(rt)) for v, w, rt in data["routes"]],
        None if shadow is None else (ModelVersion.model_validate(shadow[0]), str(shadow[1])),
        {(str(m), int(v)): str(digest) for m, v, digest in data["onnx_files"]},
    )
