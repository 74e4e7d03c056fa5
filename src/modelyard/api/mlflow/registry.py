"""MLflow's model registry (``registered-models/*``, ``model-versions/*``) on modelyard's
registry: the JSON is MLflow's (model_registry.proto), the models, versions, aliases, tags
and descriptions are modelyard's own, under its governance.

- A version is created from files already uploaded through the artifact proxy (a run's or a
  logged model's, or another version's): they are referenced where they are, and MLmodel
  gives the version its manifest (formats/mlflow.py). Every version is ``READY``.
- MLflow's stages are aliases: ``Staging`` is the alias ``staging``, ``Production`` the alias
  ``production``, ``Archived`` an archived version, ``None`` none of those. A version's
  ``current_stage`` is read from them; a transition moves or removes the alias (through the
  alias policies and approvals, as any alias move: a refusal is ``PERMISSION_DENIED`` with
  the policy's reason) and archives or restores the version.
- Searches take MLflow's filter language (``name LIKE '%fraud%' AND tags.team = 'risk'``,
  ``run_id = '...'``) and ``order_by``, and page with ``page_token``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from modelyard.api.deps import member, viewer
from modelyard.api.mlflow.protocol import (
    INVALID_PARAMETER_VALUE,
    MlflowError,
    MlflowRoute,
    version_download_uri,
)
from modelyard.api.mlflow.tracking_messages import ms
from modelyard.errors import Conflict
from modelyard.formats.manifest import FileEntry
from modelyard.page import MAX_LIMIT
from modelyard.registry import ModelVersion, RegisteredModel
from modelyard.registry.search import Match, Op, Order
from modelyard.workspace import Workspace

router = APIRouter(route_class=MlflowRoute)

#: MLflow's stages and the aliases that stand for them (Archived: an archived version).
STAGE_ALIASES = {"Staging": "staging", "Production": "production"}
STAGES = ("None", "Staging", "Production", "Archived")
#: How many results a search answers when MLflow's client asks for none in particular.
DEFAULT_MAX_RESULTS = 100


# --- requests -------------------------------------------------------------------------------


class _Body(BaseModel):
    # MLflow's clients send fields this server does not use (run_link, deployment_job_id)
    model_config = ConfigDict(extra="ignore")


class Tag(_Body):
    key: str
    value: str = ""


class CreateModel(_Body):
    name: str
    tags: list[Tag] = Field(default_factory=list)
    description: str | None = None


class ModelName(_Body):
    name: str


class RenameModel(_Body):
    name: str
    new_name: str


class UpdateModel(_Body):
    name: str
    description: str | None = None


class ModelTag(_Body):
    name: str
    key: str
    value: str = ""


class DeleteModelTag(_Body):
    name: str
    key: str


class LatestVersions(_Body):
    name: str
    stages: list[str] = Field(default_factory=list)


class SetAlias(_Body):
    name: str
    alias: str
    version: str | int


class DeleteAlias(_Body):
    name: str
    alias: str


class CreateVersion(_Body):
    name: str
    source: str
    run_id: str | None = None
    tags: list[Tag] = Field(default_factory=list)
    description: str | None = None
    model_id: str | None = None


class VersionRef(_Body):
    name: str
    version: str | int


class UpdateVersion(VersionRef):
    description: str | None = None


class VersionTag(VersionRef):
    key: str
    value: str = ""


class DeleteVersionTag(VersionRef):
    key: str


class TransitionStage(VersionRef):
    stage: str
    archive_existing_versions: bool = False


def _number(version: str | int) -> int:
    text = str(version).strip()
    # isdigit() alone takes '²', which int() refuses
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 2**31 - 1:
        raise MlflowError(
            INVALID_PARAMETER_VALUE, f"version must be a positive integer, got {version!r}"
        )
    return int(text)


def _limit(max_results: int | None) -> int:
    if max_results is None:
        return DEFAULT_MAX_RESULTS
    if max_results < 1:
        raise MlflowError(
            INVALID_PARAMETER_VALUE, f"max_results must be positive, got {max_results}"
        )
    # MLflow's client asks for up to 10,000 versions at once: it pages on next_page_token
    return min(max_results, MAX_LIMIT)


# --- answers --------------------------------------------------------------------------------


def _ms(when: datetime | None) -> int:
    return ms(when) or 0


def stage_of(version: ModelVersion) -> str:
    """MLflow's ``current_stage`` of a version, read from its aliases and status."""
    if "production" in version.aliases:
        return "Production"
    if "staging" in version.aliases:
        return "Staging"
    return "Archived" if version.status == "archived" else "None"


_LOGGED_MODEL = re.compile(r"^models:/(m-[0-9a-f]{32})(?:/|$)")


def version_json(version: ModelVersion) -> dict[str, Any]:
    """A version as MLflow's ``ModelVersion`` message."""
    answer: dict[str, Any] = {
        "name": version.model,
        "version": str(version.version),
        "creation_timestamp": _ms(version.created_at),
        "last_updated_timestamp": _ms(version.updated_at or version.created_at),
        "user_id": version.created_by,
        "current_stage": stage_of(version),
        "description": version.description,
        "source": version.source,
        "run_id": version.run_id or "",
        "status": "READY",
        "run_link": "",
        "tags": [{"key": k, "value": v} for k, v in sorted(version.tags.items())],
        "aliases": sorted(version.aliases),
    }
    logged = _LOGGED_MODEL.match(version.source)
    model_id = (
        logged[1]
        if logged
        else (version.manifest.get("options", {}).get("mlflow") or {}).get("model_id")
    )
    if model_id:
        answer["model_id"] = model_id
    return answer


def _latest_versions(ws: Workspace, name: str) -> list[ModelVersion]:
    """The newest version in each stage (MLflow's ``latest_versions``), by stage order."""
    found: dict[str, ModelVersion] = {}
    token = None
    while len(found) < len(STAGES):
        page = ws.registry.list_versions(name, limit=MAX_LIMIT, page_token=token)
        for version in page.items:  # newest first
            found.setdefault(stage_of(version), version)
        token = page.next_page_token
        if token is None:
            break
    return [found[s] for s in STAGES if s in found]


def model_json(ws: Workspace, model: RegisteredModel) -> dict[str, Any]:
    """A registered model as MLflow's ``RegisteredModel`` message."""
    return {
        "name": model.name,
        "creation_timestamp": _ms(model.created_at),
        "last_updated_timestamp": _ms(model.updated_at),
        "user_id": model.created_by,
        "description": model.description,
        "latest_versions": [version_json(v) for v in _latest_versions(ws, model.name)],
        "tags": [{"key": k, "value": v} for k, v in sorted(model.tags.items())],
        "aliases": [
            {"alias": alias, "version": str(number)}
            for alias, number in sorted(model.aliases.items())
        ],
    }


def _model(ws: Workspace, model: RegisteredModel) -> Response:
    return JSONResponse({"registered_model": model_json(ws, model)})


def _version(version: ModelVersion) -> Response:
    return JSONResponse({"model_version": version_json(version)})


def _empty() -> Response:
    return JSONResponse({})


# --- MLflow's filter and order_by -----------------------------------------------------------

_CLAUSE = re.compile(
    r"""\s*(?P<field>(?:(?:tags?|attributes?)\.)?(?:`[^`]+`|"[^"]+"|[A-Za-z_][A-Za-z0-9_.\-]*))\s*
    (?P<op>!=|<=|>=|=|<|>|(?i:ilike|like|not\s+in|in)(?=[\s('"]))\s*
    (?P<value>'[^']*'|"[^"]*"|\([^)]*\)|[^\s()'"]+)\s*""",
    re.VERBOSE,
)
_AND = re.compile(r"and\b", re.IGNORECASE)
#: Most clauses a filter may hold: each is a subquery, and PostgreSQL's planner takes
#: seconds from about a hundred of them.
MAX_CLAUSES = 50
_QUOTED = re.compile(r"""'([^']*)'|"([^"]*)\"""")
#: MLflow's searchable fields: name in the filter -> (modelyard's field, allowed operators).
_MODEL_FIELDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "name": ("name", ("=", "!=", "like", "ilike", "in", "not in")),
}
_VERSION_FIELDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "name": ("name", ("=", "!=", "like", "ilike", "in", "not in")),
    "run_id": ("run_id", ("=", "!=", "in", "not in")),
    "source_path": ("source", ("=", "!=", "like", "ilike")),
    "version_number": ("version", ("=", "!=", "<", "<=", ">", ">=")),
}
_TAG_OPS: tuple[str, ...] = ("=", "!=", "like", "ilike")
_MODEL_ORDER = {
    "name": "name",
    "timestamp": "created_at",
    "creation_timestamp": "created_at",
    "last_updated_timestamp": "updated_at",
}
_VERSION_ORDER = {**_MODEL_ORDER, "version_number": "version"}


def _unquote(text: str) -> str:
    return text[1:-1] if text[:1] in "`\"'" and text[-1:] == text[:1] else text


def _value(raw: str, field: str, op: str) -> str | int | tuple[str, ...]:
    if op in ("in", "not in"):
        if not raw.startswith("("):
            raise MlflowError(INVALID_PARAMETER_VALUE, f"{field} IN takes a list: ('a', 'b')")
        return tuple(a or b for a, b in _QUOTED.findall(raw))
    if raw.startswith("("):
        raise MlflowError(INVALID_PARAMETER_VALUE, f"a list is only for IN, not {field} {op}")
    if field == "version":
        digits = raw.lstrip("-")
        if not (digits.isascii() and digits.isdigit()):
            raise MlflowError(
                INVALID_PARAMETER_VALUE, f"version_number compares with a number, got {raw}"
            )
        return int(raw)
    if raw[:1] not in "'\"":
        raise MlflowError(INVALID_PARAMETER_VALUE, f"quote the value of {field}: '{raw}'")
    return raw[1:-1]


def parse_filter(text: str, fields: dict[str, tuple[str, tuple[str, ...]]]) -> list[Match]:
    """MLflow's registry filter (clauses joined with AND) as conditions of registry/search.py."""
    matches: list[Match] = []
    pos, text = 0, text.strip()
    while pos < len(text):
        found = _CLAUSE.match(text, pos)
        if found is None:
            raise MlflowError(
                INVALID_PARAMETER_VALUE,
                f"cannot parse the filter at {text[pos : pos + 40]!r}; write clauses like "
                f"name LIKE '%fraud%' joined with AND (fields: {', '.join(fields)}, tags.<key>)",
            )
        raw_field, op = found["field"], " ".join(found["op"].lower().split())
        kind, dot, key = raw_field.partition(".")
        if dot and kind.lower() in ("tag", "tags"):
            field, allowed = "tag:" + _unquote(key), _TAG_OPS
        else:
            name = _unquote(
                key if dot and kind.lower() in ("attribute", "attributes") else raw_field
            )
            if name not in fields:
                raise MlflowError(
                    INVALID_PARAMETER_VALUE,
                    f"cannot filter on {name!r}; the fields are {', '.join(fields)} and tags.<key>",
                )
            field, allowed = fields[name]
        if op not in allowed:
            raise MlflowError(
                INVALID_PARAMETER_VALUE,
                f"{raw_field} takes {', '.join(o.upper() for o in allowed)}, not {op.upper()}",
            )
        op_value: Op = op  # type: ignore[assignment]  # checked against ``allowed`` above
        matches.append(Match(field, op_value, _value(found["value"], field, op)))
        pos = found.end()
        if pos < len(text) and len(matches) == MAX_CLAUSES:
            raise MlflowError(
                INVALID_PARAMETER_VALUE,
                f"the filter has more than {MAX_CLAUSES} clauses; narrow it with fewer "
                "(IN takes many values in one clause)",
            )
        if pos < len(text):
            joined = _AND.match(text, pos)
            if joined is None:
                raise MlflowError(
                    INVALID_PARAMETER_VALUE,
                    f"expected AND at {text[pos : pos + 40]!r}; clauses are joined with AND only",
                )
            pos = joined.end()
    return matches


def parse_order_by(items: Sequence[str], fields: dict[str, str]) -> list[Order]:
    """MLflow's ``order_by`` (``"name ASC"``, ``"last_updated_timestamp DESC"``)."""
    orders = []
    for item in items:
        parts = item.split()
        if (
            not parts
            or len(parts) > 2
            or (len(parts) == 2 and parts[1].upper() not in ("ASC", "DESC"))
        ):
            raise MlflowError(
                INVALID_PARAMETER_VALUE, f"order_by {item!r} must look like 'name ASC'"
            )
        key = parts[0].removeprefix("attributes.").removeprefix("attribute.")
        if key not in fields:
            raise MlflowError(
                INVALID_PARAMETER_VALUE,
                f"cannot order by {key!r}; order by {', '.join(fields)}",
            )
        orders.append(Order(fields[key], len(parts) == 1 or parts[1].upper() == "ASC"))
    return orders


def _page(key: str, items: list[dict[str, Any]], token: str | None) -> Response:
    answer: dict[str, Any] = {key: items}
    if token:
        answer["next_page_token"] = token
    return JSONResponse(answer)


# --- registered models ----------------------------------------------------------------------


@router.post("/registered-models/create")
def create_model(body: CreateModel, ws: Workspace = Depends(member)) -> Response:
    model = ws.registry.create_model(
        body.name, description=body.description or "", tags={t.key: t.value for t in body.tags}
    )
    return _model(ws, model)


@router.get("/registered-models/get")
def get_model(name: str = Query(""), ws: Workspace = Depends(viewer)) -> Response:
    return _model(ws, ws.registry.get_model(name))


@router.get("/registered-models/search")
def search_models(
    filter: str = Query(""),
    max_results: int | None = Query(None),
    order_by: list[str] = Query(default=[]),
    page_token: str | None = Query(None),
    ws: Workspace = Depends(viewer),
) -> Response:
    page = ws.registry.search_models(
        where=parse_filter(filter, _MODEL_FIELDS),
        order_by=parse_order_by(order_by, _MODEL_ORDER),
        limit=_limit(max_results),
        page_token=page_token or None,
    )
    return _page("registered_models", [model_json(ws, m) for m in page.items], page.next_page_token)


@router.post("/registered-models/rename")
def rename_model(body: RenameModel, ws: Workspace = Depends(member)) -> Response:
    return _model(ws, ws.registry.rename_model(body.name, body.new_name))


@router.patch("/registered-models/update")
def update_model(body: UpdateModel, ws: Workspace = Depends(member)) -> Response:
    return _model(ws, ws.registry.update_model(body.name, description=body.description))


@router.delete("/registered-models/delete")
def delete_model(body: ModelName, ws: Workspace = Depends(member)) -> Response:
    # modelyard deletes archived models only: MLflow's delete is both steps
    if not ws.registry.get_model(body.name).archived:
        ws.registry.archive_model(body.name)
    ws.registry.delete_model(body.name)
    return _empty()


@router.post("/registered-models/set-tag")
def set_model_tag(body: ModelTag, ws: Workspace = Depends(member)) -> Response:
    ws.registry.update_model(body.name, tags={body.key: body.value})
    return _empty()


@router.delete("/registered-models/delete-tag")
def delete_model_tag(body: DeleteModelTag, ws: Workspace = Depends(member)) -> Response:
    ws.registry.update_model(body.name, remove_tags=[body.key])
    return _empty()


def _latest(ws: Workspace, name: str, stages: Sequence[str]) -> Response:
    wanted = {_stage(s) for s in stages} if stages else set(STAGES)
    versions = [v for v in _latest_versions(ws, name) if stage_of(v) in wanted]
    return JSONResponse({"model_versions": [version_json(v) for v in versions]})


@router.post("/registered-models/get-latest-versions")
def latest_versions(body: LatestVersions, ws: Workspace = Depends(viewer)) -> Response:
    return _latest(ws, body.name, body.stages)


@router.get("/registered-models/get-latest-versions")
def latest_versions_get(
    name: str = Query(""), stages: list[str] = Query(default=[]), ws: Workspace = Depends(viewer)
) -> Response:
    return _latest(ws, name, stages)


@router.post("/registered-models/alias")
def set_alias(body: SetAlias, ws: Workspace = Depends(member)) -> Response:
    ws.registry.set_alias(body.name, body.alias, _number(body.version))
    return _empty()


@router.delete("/registered-models/alias")
def delete_alias(body: DeleteAlias, ws: Workspace = Depends(member)) -> Response:
    ws.registry.delete_alias(body.name, body.alias)
    return _empty()


@router.get("/registered-models/alias")
def get_by_alias(
    name: str = Query(""), alias: str = Query(""), ws: Workspace = Depends(viewer)
) -> Response:
    found = ws.registry.get_alias(name, alias)
    return _version(ws.registry.get_version(name, found.version))


# --- model versions -------------------------------------------------------------------------


@router.post("/model-versions/create")
def create_version(body: CreateVersion, ws: Workspace = Depends(member)) -> Response:
    from modelyard.tracking.locations import locate, resolve_artifact_files

    ws.registry.get_model(body.name)  # MLflow registers versions of existing models only
    tags = {t.key: t.value for t in body.tags}
    description = body.description or ""
    run_id = body.run_id or None
    where = locate(ws, body.source)
    if where.kind == "version" and not where.path:
        # another registered version: the same manifest, whatever its format
        version = ws.registry.create_version(
            body.name,
            ws.registry.get_version(where.owner, where.version).manifest_digest,
            run_id=run_id,
            description=description,
            tags=tags,
            source=body.source,
            create_model=False,
        )
        return _version(version)
    files = {
        f.path: FileEntry(digest=f.digest, size=f.size)
        for f in resolve_artifact_files(ws, body.source)
    }
    if run_id is None and where.kind == "run":
        run_id = where.owner
    elif run_id is None and where.kind == "model":
        run_id = ws.logged_models.get(where.owner).source_run_id
    version = ws.registry.create_version_from_mlflow(
        body.name,
        files,
        where=body.source,
        run_id=run_id,
        description=description,
        tags=tags,
        source=body.source,
    )
    return _version(version)


@router.get("/model-versions/get")
def get_version(
    name: str = Query(""), version: str = Query(""), ws: Workspace = Depends(viewer)
) -> Response:
    return _version(ws.registry.get_version(name, _number(version)))


@router.get("/model-versions/search")
def search_versions(
    filter: str = Query(""),
    max_results: int | None = Query(None),
    order_by: list[str] = Query(default=[]),
    page_token: str | None = Query(None),
    ws: Workspace = Depends(viewer),
) -> Response:
    page = ws.registry.search_versions(
        where=parse_filter(filter, _VERSION_FIELDS),
        order_by=parse_order_by(order_by, _VERSION_ORDER),
        limit=_limit(max_results),
        page_token=page_token or None,
    )
    return _page("model_versions", [version_json(v) for v in page.items], page.next_page_token)


@router.patch("/model-versions/update")
def update_version(body: UpdateVersion, ws: Workspace = Depends(member)) -> Response:
    version = ws.registry.update_version(
        body.name, _number(body.version), description=body.description
    )
    return _version(version)


@router.delete("/model-versions/delete")
def delete_version(body: VersionRef, ws: Workspace = Depends(member)) -> Response:
    ws.registry.delete_version(body.name, _number(body.version))
    return _empty()


@router.get("/model-versions/get-download-uri")
def download_uri(
    name: str = Query(""), version: str = Query(""), ws: Workspace = Depends(viewer)
) -> Response:
    number = _number(version)
    ws.registry.get_version(name, number)  # NotFound for an unknown version
    return JSONResponse({"artifact_uri": version_download_uri(name, number)})


@router.post("/model-versions/set-tag")
def set_version_tag(body: VersionTag, ws: Workspace = Depends(member)) -> Response:
    ws.registry.update_version(body.name, _number(body.version), tags={body.key: body.value})
    return _empty()


@router.delete("/model-versions/delete-tag")
def delete_version_tag(body: DeleteVersionTag, ws: Workspace = Depends(member)) -> Response:
    ws.registry.update_version(body.name, _number(body.version), remove_tags=[body.key])
    return _empty()


def _stage(text: str) -> str:
    for stage in STAGES:
        if text.strip().lower() == stage.lower():
            return stage
    raise MlflowError(
        INVALID_PARAMETER_VALUE,
        f"Invalid Model Version stage: {text!r}; use one of {', '.join(STAGES)} (in modelyard, "
        "Staging and Production are the aliases staging and production)",
    )


@router.post("/model-versions/transition-stage")
def transition_stage(body: TransitionStage, ws: Workspace = Depends(member)) -> Response:
    return _version(
        transition(
            ws, body.name, _number(body.version), _stage(body.stage), body.archive_existing_versions
        )
    )


def transition(
    ws: Workspace, name: str, number: int, stage: str, archive_existing: bool = False
) -> ModelVersion:
    """Move version ``number`` of ``name`` to MLflow's ``stage`` (see the module's docstring).

    The alias moves first, through the alias policies: a refusal changes nothing. With
    ``archive_existing``, the version that held the stage before is archived (unless an
    alias still points at it: it is kept then, as modelyard archives no aliased version).
    """
    registry = ws.registry
    version = registry.get_version(name, number)
    alias = STAGE_ALIASES.get(stage)
    if archive_existing and alias is None:
        raise MlflowError(
            INVALID_PARAMETER_VALUE,
            f"archive_existing_versions applies to Staging and Production, not {stage}",
        )
    others = sorted(set(version.aliases) - set(STAGE_ALIASES.values()))
    if stage == "Archived" and others:
        raise Conflict(
            f"cannot archive {name} v{number}: alias(es) {', '.join(others)} point at it; "
            "move or delete them first"
        )
    previous: int | None = None
    # one stage at a time: the other stage's alias leaves this version
    leaving = [a for a in STAGE_ALIASES.values() if a != alias and a in version.aliases]
    # every alias change is checked before any is made, so that a refusal changes nothing
    for other in leaving:
        registry.check_alias_move(name, other, None)
    if alias is not None:
        registry.check_alias_move(name, alias, number)
        if version.status == "archived":
            registry.archive_version(name, number, archived=False)
        previous = registry.get_model(name).aliases.get(alias)
        if previous != number:
            registry.set_alias(name, alias, number, reason=f"MLflow stage {stage}")
    for other in leaving:
        registry.delete_alias(name, other, reason=f"MLflow stage {stage}")
    if stage == "Archived" and version.status != "archived":
        registry.archive_version(name, number)
    elif stage == "None" and version.status == "archived":
        registry.archive_version(name, number, archived=False)
    if archive_existing and previous is not None and previous != number:
        with contextlib.suppress(Conflict):  # another alias still points at it: kept
            registry.archive_version(name, previous)
    return registry.get_version(name, number)
