"""Reading an MLflow file store (an ``mlruns`` directory) from its files."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from modelyard.errors import InvalidInput, NotFound
from modelyard.interop.mlflow_source import (
    MlflowArtifact,
    MlflowExperiment,
    MlflowModel,
    MlflowPoint,
    MlflowReadError,
    MlflowRun,
    MlflowVersion,
    copy_tree,
    inside,
    local_dir,
    millis,
)

#: MLflow's run statuses as its file store writes them (mlflow/protos/service.proto).
RUN_STATUS = {1: "RUNNING", 2: "SCHEDULED", 3: "FINISHED", 4: "FAILED", 5: "KILLED"}
#: The stage MLflow's file store gives a deleted model version (it keeps its folder).
DELETED_VERSION_STAGE = "Deleted_Internal"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise MlflowReadError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise MlflowReadError(f"{path} is not an MLflow meta.yaml (no mapping in it)")
    return data


def _key_files(folder: Path) -> dict[str, Path]:
    """The files under ``folder`` by key: MLflow stores key ``a/b`` as the file ``a/b``."""
    if not folder.is_dir():
        return {}
    return {f.relative_to(folder).as_posix(): f for f in sorted(folder.rglob("*")) if f.is_file()}


def _key_values(folder: Path) -> dict[str, str]:
    return {k: f.read_text(encoding="utf-8") for k, f in _key_files(folder).items()}


class MlflowFileStore:
    """An MLflow file store: ``<experiment id>/meta.yaml``, ``<experiment id>/<run id>/...``,
    ``models/<name>/...``, and deleted experiments under ``.trash/``."""

    def __init__(self, root: Path) -> None:
        given = root
        root = root.expanduser().resolve()
        if not root.is_dir():
            raise NotFound(
                f"no directory {str(given)!r}; give an MLflow file store (the mlruns "
                "directory) or a tracking server's URL"
            )
        self.root = root
        self.location = str(root)
        if not self._experiment_dirs() and not (root / "models").is_dir():
            raise InvalidInput(
                f"{given} is not an MLflow file store: it has no experiment folders "
                "(<id>/meta.yaml) and no models/ folder; give the mlruns directory MLflow wrote"
            )
        self._run_dirs: dict[str, Path] | None = None

    def close(self) -> None:
        pass

    def _experiment_dirs(self) -> list[tuple[Path, bool]]:
        found = []
        for parent, deleted in ((self.root, False), (self.root / ".trash", True)):
            if not parent.is_dir():
                continue
            for d in sorted(parent.iterdir()):
                if d.name not in ("models", ".trash") and (d / "meta.yaml").is_file():
                    found.append((d, deleted))
        return found

    def experiments(self) -> list[MlflowExperiment]:
        found = []
        for folder, trashed in self._experiment_dirs():
            meta = _read_yaml(folder / "meta.yaml")
            if "experiment_id" not in meta or "name" not in meta:
                continue  # not an experiment folder
            found.append(
                MlflowExperiment(
                    id=str(meta["experiment_id"]),
                    name=str(meta["name"]),
                    deleted=trashed or meta.get("lifecycle_stage") == "deleted",
                    tags=_key_values(folder / "tags"),
                )
            )
        return found

    def _experiment_dir(self, experiment_id: str) -> Path:
        for parent in (self.root, self.root / ".trash"):
            if (parent / experiment_id / "meta.yaml").is_file():
                return parent / experiment_id
        raise MlflowReadError(f"experiment {experiment_id} has no folder in {self.root}")

    def runs(self, experiment: MlflowExperiment) -> list[MlflowRun]:
        folder = self._experiment_dir(experiment.id)
        runs = []
        for d in sorted(folder.iterdir()):
            if not (d / "meta.yaml").is_file() or d.name in ("models", "tags", "datasets"):
                continue
            meta = _read_yaml(d / "meta.yaml")
            run_id = meta.get("run_id") or meta.get("run_uuid")
            if not run_id:
                continue
            status = meta.get("status", 3)
            tags = _key_values(d / "tags")
            runs.append(
                MlflowRun(
                    id=str(run_id),
                    experiment_id=experiment.id,
                    name=meta.get("run_name") or tags.get("mlflow.runName", ""),
                    status=RUN_STATUS.get(status, str(status))
                    if isinstance(status, int)
                    else status,
                    start_time=millis(meta.get("start_time")),
                    end_time=millis(meta.get("end_time")),
                    deleted=meta.get("lifecycle_stage") == "deleted",
                    artifact_uri=str(meta.get("artifact_uri") or ""),
                    params=_key_values(d / "params"),
                    tags=tags,
                    metric_keys=sorted(_key_files(d / "metrics")),
                    dataset_inputs=_dataset_inputs(d),
                    logged_models=_logged_models(d / "outputs"),
                )
            )
        runs.sort(key=lambda r: (r.start_time or 0, r.id))
        return runs

    def _run_dir(self, run_id: str, experiment_id: str = "") -> Path:
        if experiment_id:
            candidate = self._experiment_dir(experiment_id) / run_id
            if candidate.is_dir():
                return candidate
        if self._run_dirs is None:
            self._run_dirs = {
                d.name: d
                for folder, _ in self._experiment_dirs()
                for d in folder.iterdir()
                if (d / "meta.yaml").is_file()
            }
        if run_id not in self._run_dirs:
            raise MlflowReadError(f"run {run_id} has no folder in {self.root}")
        return self._run_dirs[run_id]

    def metric_history(self, run: MlflowRun, key: str) -> list[MlflowPoint]:
        file = _key_files(self._run_dir(run.id, run.experiment_id) / "metrics").get(key)
        if file is None:
            raise MlflowReadError(f"run {run.id} has no metric file for {key!r}")
        points = []
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            try:
                # "<timestamp> <value> <step>"; files of very old versions have no step
                step = int(fields[2]) if len(fields) > 2 else 0
                points.append(MlflowPoint(key, float(fields[1]), step, int(fields[0])))
            except (ValueError, IndexError):
                raise MlflowReadError(
                    f"{file} line {number} is not '<time> <value> <step>'"
                ) from None
        return points

    def _artifact_dir(self, run: MlflowRun) -> Path:
        return self._artifact_root(run.id, run.artifact_uri, run.experiment_id)

    def _artifact_root(self, run_id: str, artifact_uri: str, experiment_id: str = "") -> Path:
        local = local_dir(artifact_uri)
        if local is not None:
            return local
        # a store copied from elsewhere: its runs' absolute URIs point at the old place
        moved = self._run_dir(run_id, experiment_id) / "artifacts"
        if moved.is_dir():
            return moved
        if artifact_uri.startswith(("file:", "/")) or not artifact_uri:
            raise MlflowReadError(
                f"the artifact folder of run {run_id} ({artifact_uri or 'none'}) is missing"
            )
        raise MlflowReadError(
            f"the artifacts of run {run_id} are at {artifact_uri}, which the importer "
            "cannot read; import through an MLflow server that serves them (--from http://...)"
        )

    def artifacts(self, run: MlflowRun) -> list[MlflowArtifact]:
        root = self._artifact_dir(run)
        return [
            MlflowArtifact(f.relative_to(root).as_posix(), f.stat().st_size)
            for f in sorted(root.rglob("*"))
            if f.is_file()
        ]

    def artifact_file(self, run: MlflowRun, path: str, scratch: Path) -> Path:
        file = inside(self._artifact_dir(run), path)
        if not file.is_file():
            raise MlflowReadError(f"run {run.id} has no artifact file {path!r} any more")
        return file

    def models(self) -> list[MlflowModel]:
        folder = self.root / "models"
        if not folder.is_dir():
            return []
        models = []
        for d in sorted(folder.iterdir()):
            if not (d / "meta.yaml").is_file():
                continue
            meta = _read_yaml(d / "meta.yaml")
            aliases = {str(k): int(v) for k, v in (meta.get("aliases") or {}).items()}
            aliases.update(
                {k: int(v.strip()) for k, v in _key_values(d / "aliases").items() if v.strip()}
            )
            models.append(
                MlflowModel(
                    name=str(meta.get("name", d.name)),
                    description=meta.get("description") or "",
                    tags=_key_values(d / "tags"),
                    aliases=aliases,
                )
            )
        return models

    def versions(self, model: MlflowModel) -> list[MlflowVersion]:
        folder = self.root / "models" / model.name
        versions = []
        for d in folder.glob("version-*"):
            if not (d / "meta.yaml").is_file():
                continue
            meta = _read_yaml(d / "meta.yaml")
            if meta.get("current_stage") == DELETED_VERSION_STAGE:
                continue  # deleted in MLflow: MLflow itself shows it nowhere
            versions.append(
                MlflowVersion(
                    name=model.name,
                    version=int(meta["version"]),
                    source=str(meta.get("source") or ""),
                    run_id=str(meta.get("run_id") or ""),
                    status=str(meta.get("status") or "READY"),
                    description=meta.get("description") or "",
                    stage=str(meta.get("current_stage") or "None"),
                    tags=_key_values(d / "tags"),
                    storage_location=str(meta.get("storage_location") or ""),
                )
            )
        return sorted(versions, key=lambda v: v.version)

    def download_version(self, version: MlflowVersion, dest: Path) -> None:
        folder = self._version_dir(version)
        if folder is None or copy_tree(folder, dest) == 0:
            where = version.storage_location or version.source
            raise MlflowReadError(
                f"the files of {version.name} version {version.version} are missing: nothing "
                f"at {where}"
            )

    def _version_dir(self, version: MlflowVersion) -> Path | None:
        for uri in (version.storage_location, version.source):
            if not uri:
                continue
            if uri.startswith("models:/m-"):  # an MLflow 3 logged model
                model_id = uri[len("models:/") :].split("/")[0]
                for folder, _ in self._experiment_dirs():
                    candidate = folder / "models" / model_id / "artifacts"
                    if candidate.is_dir():
                        return candidate
                continue
            if uri.startswith("runs:/"):
                run_id, _, sub = uri[len("runs:/") :].partition("/")
                try:
                    meta = _read_yaml(self._run_dir(run_id) / "meta.yaml")
                    root = self._artifact_root(run_id, str(meta.get("artifact_uri") or ""))
                except MlflowReadError:
                    continue
                candidate = root.joinpath(*[p for p in sub.split("/") if p])
                if candidate.is_dir():
                    return candidate
                continue
            local = local_dir(uri)
            if local is not None:
                return local
            moved = self._relocated(uri)
            if moved is not None:
                return moved
            if uri.startswith("mlflow-artifacts:"):
                raise MlflowReadError(
                    f"the files of {version.name} version {version.version} are in an MLflow "
                    f"server's artifact store ({uri}); import from that server's URL instead"
                )
        return None

    def _relocated(self, uri: str) -> Path | None:
        """Where a ``file:`` path of a store that was moved is now: the longest tail of the
        old path that exists inside this store."""
        if not uri.startswith(("file:", "/")):
            return None
        parts = Path(unquote(urlsplit(uri).path)).parts
        for i in range(1, len(parts)):
            candidate = self.root.joinpath(*parts[i:])
            if candidate.is_dir():
                return candidate
        return None


def _dataset_inputs(run_dir: Path) -> list[str]:
    """The names of the datasets a run logged as inputs: ``inputs/<id>/meta.yaml`` names a
    dataset of the experiment, ``<experiment>/datasets/<id>/meta.yaml``."""
    folder = run_dir / "inputs"
    if not folder.is_dir():
        return []
    names = []
    for d in sorted(folder.iterdir()):
        if not (d / "meta.yaml").is_file():
            continue
        link = _read_yaml(d / "meta.yaml")
        if link.get("source_type") != "DATASET":
            continue
        dataset_id = str(link.get("source_id") or "")
        dataset = run_dir.parent / "datasets" / dataset_id / "meta.yaml"
        names.append(str(_read_yaml(dataset).get("name")) if dataset.is_file() else dataset_id)
    return names


def _logged_models(folder: Path) -> list[str]:
    """The logged models a run's ``outputs/<id>/meta.yaml`` name (MLflow 3)."""
    if not folder.is_dir():
        return []
    found = []
    for d in sorted(folder.iterdir()):
        if (d / "meta.yaml").is_file():
            meta = _read_yaml(d / "meta.yaml")
            if meta.get("destination_type") == "MODEL_OUTPUT":
                found.append(str(meta.get("destination_id") or d.name))
    return found
