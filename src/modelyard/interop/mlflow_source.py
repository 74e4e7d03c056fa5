"""Reading what an MLflow installation holds, without MLflow: a tracking server over its
REST API (httpx), or a file store (an ``mlruns`` directory) from its files (pyyaml).

Both give the same plain records: experiments, runs (params, tags, metric histories,
artifact files), registered models (tags, aliases) and their versions (tags, files).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from modelyard.errors import InvalidInput, ModelyardError


class MlflowUnreachable(ModelyardError):
    """The MLflow server does not answer at all: the import cannot go on."""

    status = 502
    exit_code = 1
    title = "MLflow unreachable"


class MlflowReadError(ModelyardError):
    """One thing could not be read from MLflow (its files are missing, the server refused)."""

    status = 502
    exit_code = 1
    title = "MLflow read failed"


@dataclass
class MlflowExperiment:
    id: str
    name: str
    deleted: bool = False
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class MlflowRun:
    id: str
    experiment_id: str
    name: str
    status: str  # RUNNING, SCHEDULED, FINISHED, FAILED, KILLED
    start_time: int | None  # milliseconds since the epoch, as MLflow keeps them
    end_time: int | None
    deleted: bool
    artifact_uri: str
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metric_keys: list[str] = field(default_factory=list)
    #: Datasets the run logged as inputs (MLflow keeps their description only, no data).
    dataset_inputs: list[str] = field(default_factory=list)
    #: Ids of the models the run logged as MLflow 3 logged models (``m-...``).
    logged_models: list[str] = field(default_factory=list)


@dataclass
class MlflowPoint:
    key: str
    value: float
    step: int
    timestamp: int  # milliseconds


@dataclass
class MlflowArtifact:
    path: str  # relative to the run's artifact root, '/'-separated
    size: int | None


@dataclass
class MlflowModel:
    name: str
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)


@dataclass
class MlflowVersion:
    name: str
    version: int
    source: str
    run_id: str
    status: str  # READY, PENDING_REGISTRATION, FAILED_REGISTRATION
    description: str = ""
    stage: str = "None"
    tags: dict[str, str] = field(default_factory=dict)
    storage_location: str = ""  # the file store's resolved location of the files, if any


class MlflowSource(Protocol):
    """What the importer reads; :func:`open_source` makes one."""

    #: Where it reads from, as shown and recorded (a URL without credentials, or a path).
    location: str

    def experiments(self) -> list[MlflowExperiment]: ...

    def runs(self, experiment: MlflowExperiment) -> list[MlflowRun]: ...

    def metric_history(self, run: MlflowRun, key: str) -> list[MlflowPoint]: ...

    def artifacts(self, run: MlflowRun) -> list[MlflowArtifact]: ...

    def artifact_file(self, run: MlflowRun, path: str, scratch: Path) -> Path:
        """A local file holding the artifact: the store's own file, or a download into
        ``scratch`` (the caller removes it)."""
        ...

    def models(self) -> list[MlflowModel]: ...

    def versions(self, model: MlflowModel) -> list[MlflowVersion]: ...

    def download_version(self, version: MlflowVersion, dest: Path) -> None:
        """Copy the version's files (MLmodel and the rest) into the empty folder ``dest``."""
        ...

    def close(self) -> None: ...


def open_source(location: str, *, timeout: float = 60.0) -> MlflowSource:
    """The MLflow server at ``location`` (``http(s)://...``) or the file store there (a
    directory, or ``file://...``). Checked before anything is imported: an unreachable
    server or a directory MLflow did not write raises, naming ``location``."""
    from modelyard.interop.mlflow_files import MlflowFileStore
    from modelyard.interop.mlflow_server import MlflowServer

    if location.startswith(("http://", "https://")):
        return MlflowServer(location, timeout=timeout)
    if location.startswith("file:"):
        return MlflowFileStore(Path(unquote(urlsplit(location).path)))
    if "://" in location or location.startswith(("sqlite:", "postgresql", "mysql")):
        raise InvalidInput(
            f"cannot read MLflow from {location!r}: give a tracking server's URL (http://...) or "
            "a file store directory (./mlruns); for a database store, start `mlflow server "
            f"--backend-store-uri {location}` and import from its URL"
        )
    return MlflowFileStore(Path(location))


# --- shared by both readers ----------------------------------------------------------


def millis(value: Any) -> int | None:
    """A time in milliseconds since the epoch, as MLflow keeps them (None if absent)."""
    return None if value in (None, "") else int(value)


def inside(root: Path, rel: str) -> Path:
    """``root / rel``, refusing a path that would leave ``root`` (a hostile listing)."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise MlflowReadError(f"MLflow listed the artifact path {rel!r}, which leaves its folder")
    return root.joinpath(*parts)


def local_dir(uri: str) -> Path | None:
    """The local folder a ``file:`` URI or an absolute path names, if it exists."""
    if uri.startswith("file:"):
        path = Path(unquote(urlsplit(uri).path))
    elif uri.startswith("/"):
        path = Path(uri)
    else:
        return None
    return path if path.is_dir() else None


def copy_tree(source: Path, dest: Path) -> int:
    """Copy every file under ``source`` into ``dest``; how many."""
    count = 0
    for file in sorted(source.rglob("*")):
        if file.is_file():
            target = dest / file.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target)
            count += 1
    return count
