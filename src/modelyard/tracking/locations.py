"""Where MLflow's artifact locations point among the files modelyard holds.

MLflow's client names files by location, and modelyard answers the locations it hands out
(api/mlflow/protocol.py) from its own records, nothing copied:

- ``<experiment>/<run id>/artifacts/<path>``: a run's files (tracking);
- ``<experiment>/models/<m-id>/artifacts/<path>``: a logged model's files (MLflow 3);
- ``registry/<model>/<version>/<path>``: a registered version's files, read-only.

Source URIs name the same files: ``mlflow-artifacts:/<location>``, ``runs:/<run id>/<path>``,
``models:/m-<id>[/<path>]``, ``models:/<name>/<version>[/<path>]`` and
``models:/<name>@<alias>``. :func:`resolve_artifact_files` lists what one of them holds (the
registry makes a version from it); the other functions serve MLflow's artifact proxy.

Paths are relative, with ``/`` between parts; one that could leave its place (absolute,
``..``, a backslash, a NUL) is refused wherever it comes from.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

from sqlalchemy import ColumnElement, delete, select, true
from sqlalchemy.orm import Session

from modelyard.errors import Conflict, InvalidInput, NotFound
from modelyard.store.tables import LoggedModelArtifactRow, LoggedModelRow, RunArtifactRow, RunRow

if TYPE_CHECKING:
    from modelyard.workspace import Workspace

#: Longest artifact path (the path columns hold 1024 characters).
MAX_PATH = 1024
#: A logged model's id, as MLflow makes them.
LOGGED_MODEL_ID = re.compile(r"^m-[0-9a-f]{32}$")
#: Where the proxy serves artifacts (``mlflow-artifacts:/`` and the HTTP form of a location).
PROXY_ROUTE = "/api/2.0/mlflow-artifacts/artifacts/"

Kind = Literal["run", "model", "version"]
FileTable = type[RunArtifactRow] | type[LoggedModelArtifactRow]

_LOCATIONS = (
    "<experiment>/<run id>/artifacts/<path>, <experiment>/models/<model id>/artifacts/<path> "
    "or registry/<model>/<version>/<path>"
)


@dataclass(frozen=True)
class ArtifactFile:
    """A stored file: ``path`` (relative to what was asked for), digest and size."""

    path: str
    digest: str
    size: int


@dataclass(frozen=True)
class DirectoryEntry:
    """What a directory holds: a file (with its size) or a directory, by its ``name``."""

    name: str
    is_dir: bool
    size: int | None = None


@dataclass(frozen=True)
class Location:
    """A place among the files of a run, a logged model or a registered version.

    ``owner`` is the run id, the logged model id or the registered model's name; ``path``
    is inside the owner's files ('' is their root).
    """

    kind: Kind
    owner: str
    path: str = ""
    version: int = 0

    def __str__(self) -> str:
        where = {
            "run": f"run {self.owner}",
            "model": f"logged model {self.owner}",
            "version": f"version {self.version} of model {self.owner!r}",
        }[self.kind]
        return f"{self.path!r} in {where}" if self.path else where


def check_path(path: str, what: str = "artifact path") -> str:
    """``path`` made canonical (no empty or ``.`` parts; '' for the root), or
    :class:`InvalidInput` if it is absolute, climbs with ``..``, or holds a backslash or NUL."""
    if not isinstance(path, str):
        raise InvalidInput(f"{what} must be a string")
    if len(path) > MAX_PATH:
        raise InvalidInput(f"{what} is longer than {MAX_PATH} characters")
    if path.startswith("/") or "\\" in path or "\x00" in path:
        raise InvalidInput(
            f"{what} {path!r} must be relative, with '/' between parts (no backslash, no NUL)"
        )
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidInput(f"{what} {path!r} must stay inside its place; remove the '..'")
    return "/".join(parts)


def parse_artifact_path(path: str) -> Location:
    """The location an artifact proxy path names (what follows ``.../artifacts/``)."""
    rel = check_path(path)
    parts = rel.split("/") if rel else []
    if len(parts) >= 3 and parts[0] == "registry":
        return Location("version", parts[1], "/".join(parts[3:]), _version_number(parts[2]))
    if len(parts) >= 4 and parts[1] == "models" and parts[3] == "artifacts":
        if not LOGGED_MODEL_ID.match(parts[2]):
            raise InvalidInput(f"{parts[2]!r} is not a logged model id (m- and 32 hex digits)")
        return Location("model", parts[2], "/".join(parts[4:]))
    if len(parts) >= 3 and parts[2] == "artifacts":
        return Location("run", parts[1], "/".join(parts[3:]))
    raise InvalidInput(f"artifact path {path!r} names no files modelyard holds; use {_LOCATIONS}")


def _version_number(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 2**31 - 1:
        raise InvalidInput(f"{text!r} is not a version number; use registry/<model>/<version>")
    return int(text)


def locate(ws: Workspace, uri: str) -> Location:
    """The location a source URI or artifact path names (aliases resolved to versions)."""
    if not isinstance(uri, str) or not uri:
        raise InvalidInput("give a source URI, e.g. runs:/<run id>/model or models:/m-<id>")
    scheme, colon, rest = uri.partition(":")
    if not colon or "/" in scheme:
        return parse_artifact_path(uri)
    if scheme == "mlflow-artifacts":
        return parse_artifact_path(urlparse(uri).path.lstrip("/"))
    if scheme in ("http", "https"):
        path = urlparse(uri).path
        if PROXY_ROUTE not in path:
            raise InvalidInput(f"{uri!r} is not a modelyard artifact URL (…{PROXY_ROUTE}…)")
        return parse_artifact_path(path.split(PROXY_ROUTE, 1)[1])
    if scheme == "runs":
        run_id, _, sub = rest.lstrip("/").partition("/")
        if not run_id:
            raise InvalidInput(f"{uri!r} names no run; write runs:/<run id>/<path>")
        return Location("run", run_id, check_path(sub))
    if scheme == "models":
        return _model_location(ws, uri, rest.lstrip("/"))
    raise InvalidInput(
        f"cannot read files from {uri!r}; give runs:/, models:/ or mlflow-artifacts:/ URIs"
    )


def _model_location(ws: Workspace, uri: str, rest: str) -> Location:
    from modelyard.registry.uri import parse_model_uri

    first, _, sub = rest.partition("/")
    if LOGGED_MODEL_ID.match(first):
        return Location("model", first, check_path(sub))
    if "@" in first:  # models:/<name>@<alias>[/<path>]
        ref_text, path = first, sub
    else:  # models:/<name>/<version or latest>[/<path>]
        number, _, path = sub.partition("/")
        ref_text = f"{first}/{number}"
    found = ws.registry.resolve(parse_model_uri(f"models:/{ref_text}"))
    return Location("version", found.model, check_path(path), found.version)


# --- reading ----------------------------------------------------------------------------


def prefix_clause(table: FileTable, path: str) -> ColumnElement[bool]:
    """Rows of ``table`` at ``path`` or under it ('' is everything)."""
    if not path:
        return true()
    return (table.path == path) | table.path.startswith(path + "/", autoescape=True)


def _owner_column(table: FileTable) -> Any:
    return RunArtifactRow.run_id if table is RunArtifactRow else LoggedModelArtifactRow.model_id


def files_under(session: Session, table: FileTable, owner: str, path: str) -> list[ArtifactFile]:
    """The files of ``owner`` in ``table`` under ``path``, relative to it (a file: its name)."""
    rows = session.execute(
        select(table.path, table.digest, table.size)
        .where(_owner_column(table) == owner, prefix_clause(table, path))
        .order_by(table.path)
    ).all()
    return _relative([ArtifactFile(p, d, s) for p, d, s in rows], path)


def _relative(files: list[ArtifactFile], path: str) -> list[ArtifactFile]:
    if not path:
        return files
    exact = [f for f in files if f.path == path]
    if exact:
        return [ArtifactFile(posixpath.basename(path), exact[0].digest, exact[0].size)]
    cut = len(path) + 1
    return [ArtifactFile(f.path[cut:], f.digest, f.size) for f in files]


def _stored(ws: Workspace, loc: Location) -> list[ArtifactFile]:
    """The owner's files at or under ``loc.path``, by their full path inside the owner;
    :class:`NotFound` if the owner does not exist."""
    if loc.kind == "version":
        files = version_files(ws, loc.owner, loc.version)
        if not loc.path:
            return files
        under = loc.path + "/"
        return [f for f in files if f.path == loc.path or f.path.startswith(under)]
    table: FileTable = RunArtifactRow if loc.kind == "run" else LoggedModelArtifactRow
    with ws.store.read() as s:
        _check_owner(s, loc)
        rows = s.execute(
            select(table.path, table.digest, table.size)
            .where(_owner_column(table) == loc.owner, prefix_clause(table, loc.path))
            .order_by(table.path)
        ).all()
    return [ArtifactFile(p, d, s) for p, d, s in rows]


def _check_owner(session: Session, loc: Location) -> None:
    if loc.kind == "run":
        if session.get(RunRow, loc.owner) is None:
            raise NotFound(f"no run {loc.owner!r}; check the run id in the artifact path")
    elif session.get(LoggedModelRow, loc.owner) is None:
        raise NotFound(f"no logged model {loc.owner!r}; check the model id in the artifact path")


def version_files(ws: Workspace, name: str, version: int) -> list[ArtifactFile]:
    """The files of a registered version as MLflow's client reads its model directory: an
    MLflow-logged version's files as they were, a native one's under MLflow's names with an
    ``MLmodel`` made from its manifest (the registry's
    :func:`~modelyard.registry.mlflow_files.mlflow_files`)."""
    found = ws.registry.get_version(name, version)
    files = ws.registry.mlflow_files(found)
    return [ArtifactFile(p, e.digest, e.size) for p, e in files.items()]


def files_at(ws: Workspace, loc: Location) -> list[ArtifactFile]:
    """The files at ``loc`` (a directory, or one file), relative to it (a file: its name)."""
    return _relative(_stored(ws, loc), loc.path)


def file_at(ws: Workspace, loc: Location) -> ArtifactFile:
    """The one file ``loc`` names; :class:`NotFound` if there is none (or a directory)."""
    if not loc.path:
        raise NotFound(f"{loc} is a directory; list it (GET .../artifacts?path=...)")
    files = _stored(ws, loc)
    for f in files:
        if f.path == loc.path:
            return f
    if files:
        raise NotFound(f"{loc} is a directory; list it (GET .../artifacts?path=...)")
    raise NotFound(f"no file {loc}")


def list_directory(ws: Workspace, loc: Location) -> list[DirectoryEntry]:
    """What the directory ``loc`` holds, one level down, by name. A file, or a directory
    holding nothing, lists as empty (as MLflow's stores answer); a missing owner is
    :class:`NotFound`."""
    files = _stored(ws, loc)
    if any(f.path == loc.path for f in files):
        return []
    cut = len(loc.path) + 1 if loc.path else 0
    entries: dict[str, DirectoryEntry] = {}
    for f in files:
        name, sep, _ = f.path[cut:].partition("/")
        if sep:
            entries.setdefault(name, DirectoryEntry(name, True))
        else:
            entries[name] = DirectoryEntry(name, False, f.size)
    return [entries[n] for n in sorted(entries)]


def resolve_artifact_files(ws: Workspace, source: str) -> list[ArtifactFile]:
    """The files a source URI or artifact path names, relative to it (a single file: by its
    name), sorted by path; :class:`NotFound` if it holds none.

    ``runs:/<run id>/<name>`` whose run has no files there names the run's logged model
    called ``<name>`` (how MLflow 3 logs a model in a run), as MLflow's client reads it.
    """
    loc = locate(ws, source)
    files = files_at(ws, loc)
    if not files and loc.kind == "run" and loc.path:
        name, _, rest = loc.path.partition("/")
        with ws.store.read() as s:
            model_id = s.scalar(
                select(LoggedModelRow.id)
                .where(LoggedModelRow.source_run_id == loc.owner, LoggedModelRow.name == name)
                .order_by(LoggedModelRow.created_at.desc(), LoggedModelRow.id.desc())
                .limit(1)
            )
        if model_id is not None:
            files = files_at(ws, Location("model", model_id, rest))
    if not files:
        raise NotFound(f"{source!r} holds no files; check the URI (a run's path, or a model id)")
    return files


# --- writing ----------------------------------------------------------------------------


def store_file(ws: Workspace, loc: Location, data: bytes | os.PathLike[str]) -> ArtifactFile:
    """Store ``data`` (bytes, or the path of a local file) as the file ``loc`` names."""
    if not loc.path:
        raise InvalidInput(f"give a file path inside {loc} to upload to")
    if loc.kind == "version":
        raise _read_only(loc)
    if loc.kind == "model":
        return ws.logged_models.log_file(loc.owner, loc.path, data)
    stored = ws.tracking.log_artifact(loc.owner, loc.path, data)
    return ArtifactFile(stored.path, stored.digest, stored.size)


def check_writable(ws: Workspace, loc: Location) -> None:
    """:class:`NotFound` if the owner of ``loc`` does not exist, :class:`Conflict` if it is
    read-only: what an upload would hit, known before its body is read."""
    if loc.kind == "version":
        raise _read_only(loc)
    with ws.store.read() as s:
        _check_owner(s, loc)


def delete_files(ws: Workspace, loc: Location) -> int:
    """Delete the file ``loc`` names, or every file under it; how many (0: nothing there).

    The blobs stay in the artifact store (a registered version may share them) until its
    garbage collection.
    """
    if loc.kind == "version":
        raise _read_only(loc)
    if loc.kind == "model":
        return ws.logged_models.delete_files(loc.owner, loc.path)
    table = RunArtifactRow
    with ws.store.write(ws.actor) as tx:
        _check_owner(tx.session, loc)
        paths = tx.session.scalars(
            select(table.path).where(table.run_id == loc.owner, prefix_clause(table, loc.path))
        ).all()
        if paths:
            tx.session.execute(
                delete(table).where(table.run_id == loc.owner, table.path.in_(paths))
            )
            tx.record(
                "run.delete_artifacts",
                "run",
                loc.owner,
                {"paths": sorted(paths)},
                None,
            )
    return len(paths)


def _read_only(loc: Location) -> Conflict:
    return Conflict(
        f"{loc} is read-only: a registered version never changes; log the files to a run or "
        "a logged model and register a new version from it"
    )
