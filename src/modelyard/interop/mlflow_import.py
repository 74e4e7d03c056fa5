"""Importing an MLflow installation: experiments, runs (params, every metric point, tags,
artifact files), registered models (description, tags), their versions (files, description,
tags, lineage to the imported run) and aliases, through tracking's and the registry's
public services.

What came from where is kept on the imported things, so that a second import finds them,
copies only what is new, and costs one listing per experiment and per model:

- an imported run carries the tags ``mlflow.import.run_id`` (MLflow's run id, a UUID unique
  across servers), ``mlflow.import.source`` (where it was read) and ``mlflow.import.state``:
  ``partial`` until all of the run is copied and the run has ended in MLflow, then
  ``complete``. A partial run (an interrupted import, or a run still going in MLflow) is
  completed by the next import: missing params, tags, metric points and files are added.
- an imported version carries ``mlflow.import.version`` (``<model>/<MLflow version>``) and
  ``mlflow.import.source``; ``mlflow.run_id`` names its MLflow run.
- experiments and registered models are matched by name.

Nothing is skipped silently: each experiment, run, run artifact, model, version and alias
ends up in the report as imported, already there, skipped (deleted in MLflow, or an alias
that was moved here since) or failed, with the reason.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from modelyard.artifacts.scratch import scratch_dir
from modelyard.errors import ModelyardError, NotFound
from modelyard.interop.mlflow_source import (
    MlflowExperiment,
    MlflowModel,
    MlflowPoint,
    MlflowRun,
    MlflowSource,
    MlflowUnreachable,
    MlflowVersion,
)
from modelyard.page import MAX_LIMIT

if TYPE_CHECKING:
    from modelyard.registry.entities import ModelVersion, RegisteredModel
    from modelyard.tracking.entities import Experiment, Run
    from modelyard.workspace import Workspace

RUN_ID_TAG = "mlflow.import.run_id"
SOURCE_TAG = "mlflow.import.source"
STATE_TAG = "mlflow.import.state"
VERSION_TAG = "mlflow.import.version"
VERSION_RUN_TAG = "mlflow.run_id"
STAGE_TAG = "mlflow.current_stage"
#: MLflow keeps an experiment's description in this tag.
NOTE_TAG = "mlflow.note.content"
PARTIAL, COMPLETE = "partial", "complete"
#: MLflow's final run statuses and modelyard's.
END_STATUS = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}

KINDS = ("experiments", "runs", "run artifacts", "metric points", "models", "versions", "aliases")
Outcome = Literal["imported", "existing", "skipped", "failed"]
#: ``progress(done, total, what)``: called before each experiment, run, model and version.
Progress = Callable[[int, int, str], None]


class ImportItem(BaseModel):
    """One thing of MLflow's and what became of it."""

    kind: str
    #: MLflow's name for it: an experiment name, a run id, ``run id/path``, ``model/version``,
    #: ``model@alias``
    item: str
    outcome: Outcome
    #: what it is in modelyard: an experiment or run id, ``models:/name/N``
    target: str = ""
    #: why it was skipped or failed (or a note on an imported one)
    reason: str = ""


class ImportCounts(BaseModel):
    imported: int = 0
    existing: int = 0
    skipped: int = 0
    failed: int = 0


class ImportReport(BaseModel):
    """What an import did: counts per kind, and every item with its outcome."""

    source: str
    counts: dict[str, ImportCounts] = Field(
        default_factory=lambda: {kind: ImportCounts() for kind in KINDS}
    )
    items: list[ImportItem] = Field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(c.failed for c in self.counts.values())

    def problems(self) -> list[ImportItem]:
        """The items skipped or failed, and imported ones that carry a note."""
        return [i for i in self.items if i.outcome in ("skipped", "failed") or i.reason]

    def add(
        self, kind: str, item: str, outcome: Outcome, *, target: str = "", reason: str = ""
    ) -> None:
        setattr(self.counts[kind], outcome, getattr(self.counts[kind], outcome) + 1)
        self.items.append(
            ImportItem(kind=kind, item=item, outcome=outcome, target=target, reason=reason)
        )


def import_mlflow(
    ws: Workspace, source: MlflowSource, *, progress: Progress | None = None
) -> ImportReport:
    """Import everything ``source`` holds into the workspace; see the module's docstring.

    A failure of one item is recorded in the report and the import goes on; only a source
    that stops answering (:class:`MlflowUnreachable`) ends it, and the next import resumes.
    """
    return _Import(ws, source, progress).run()


def _millis_time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _point_key(step: int, timestamp_ms: int, value: float) -> tuple[int, int, str]:
    # NaN != NaN, so values are compared as text
    return step, timestamp_ms, repr(float(value))


class _Import:
    def __init__(self, ws: Workspace, source: MlflowSource, progress: Progress | None) -> None:
        self.ws = ws
        self.source = source
        self.progress = progress
        self.report = ImportReport(source=source.location)
        self.run_ids: dict[str, str] = {}  # MLflow run id -> modelyard run id
        self.registered_logged_models: set[str] = set()  # m-... ids versions were made from
        self.done = 0
        self.total = 0
        self.scratch = Path()

    def run(self) -> ImportReport:
        experiments = self.source.experiments()
        runs = {e.id: self.source.runs(e) for e in experiments if not e.deleted}
        models = self.source.models()
        versions = {m.name: self.source.versions(m) for m in models}
        self.registered_logged_models = {
            v.source[len("models:/") :].split("/")[0]
            for listed in versions.values()
            for v in listed
            if v.source.startswith("models:/m-")
        }
        self.total = (
            len(experiments)
            + sum(len(r) for r in runs.values())
            + len(models)
            + sum(len(v) for v in versions.values())
        )
        with scratch_dir(self.ws.settings.staging_dir) as scratch:
            self.scratch = scratch
            for experiment in experiments:
                self._experiment(experiment, runs.get(experiment.id, []))
            for model in models:
                self._model(model, versions[model.name])
        return self.report

    def _tick(self, what: str) -> None:
        if self.progress is not None:
            self.progress(self.done, self.total, what)
        self.done += 1

    @contextlib.contextmanager
    def _folder(self) -> Iterator[Path]:
        path = Path(tempfile.mkdtemp(dir=self.scratch))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    # --- experiments and runs -------------------------------------------------------------

    def _experiment(self, experiment: MlflowExperiment, runs: list[MlflowRun]) -> None:
        self._tick(f"experiment {experiment.name}")
        if experiment.deleted:
            self.report.add(
                "experiments",
                experiment.name,
                "skipped",
                reason="deleted in MLflow (restore it there to import it with its runs)",
            )
            return
        tracking = self.ws.tracking
        try:
            try:
                found = tracking.get_experiment(experiment.name)
                outcome: Outcome = "existing"
            except NotFound:
                found = tracking.create_experiment(
                    experiment.name, description=experiment.tags.get(NOTE_TAG, "")
                )
                outcome = "imported"
            tags = {k: v for k, v in experiment.tags.items() if found.tags.get(k) != v}
            if tags:
                tracking.set_experiment_tags(found.id, tags)
                outcome = "imported"
            imported = self._imported_runs(found)
        except ModelyardError as exc:
            self.report.add("experiments", experiment.name, "failed", reason=exc.detail)
            for run in runs:
                self._tick(f"run {run.name or run.id}")
                self.report.add(
                    "runs",
                    run.id,
                    "failed",
                    reason=f"its experiment {experiment.name!r} could not be imported",
                )
            return
        self.report.add("experiments", experiment.name, outcome, target=found.id)
        for run in runs:
            self._run(found, run, imported.get(run.id))

    def _imported_runs(self, experiment: Experiment) -> dict[str, Run]:
        """The runs of ``experiment`` imported before, by MLflow run id: one paged search."""
        found: dict[str, Run] = {}
        token: str | None = None
        while True:
            page = self.ws.tracking.search_runs(
                experiment.id,
                filter_string=f"tags.`{RUN_ID_TAG}` like '%'",
                lifecycle="all",  # one deleted here since is still imported: not again
                limit=MAX_LIMIT,
                page_token=token,
            )
            for run in page.items:
                found[run.tags[RUN_ID_TAG]] = run
            token = page.next_page_token
            if not token:
                return found

    def _run(self, experiment: Experiment, run: MlflowRun, existing: Run | None) -> None:
        self._tick(f"run {run.name or run.id}")
        if run.deleted:
            kept = f"; imported before as run {existing.id}, which is kept" if existing else ""
            self.report.add(
                "runs",
                run.id,
                "skipped",
                reason=f"deleted in MLflow (restore it there to import it){kept}",
            )
            return
        if existing is not None and existing.tags.get(STATE_TAG) == COMPLETE:
            self.run_ids[run.id] = existing.id
            self.report.add("runs", run.id, "existing", target=existing.id)
            return
        try:
            run_id, wrote = self._copy_run(experiment, run, existing)
        except MlflowUnreachable:
            raise
        except ModelyardError as exc:
            self.report.add("runs", run.id, "failed", reason=exc.detail)
            return
        self.run_ids[run.id] = run_id
        notes = []
        if run.status not in END_STATUS:
            notes.append(
                f"{run.status.lower()} in MLflow: left running here; a later import adds what "
                "it logs next and ends it"
            )
        unregistered = [m for m in run.logged_models if m not in self.registered_logged_models]
        if unregistered:
            notes.append(
                f"its MLflow 3 logged models that were never registered ({', '.join(unregistered)})"
                " are not imported; register them in MLflow first to import them as versions"
            )
        if run.dataset_inputs:
            notes.append(
                f"its dataset inputs ({', '.join(run.dataset_inputs)}) are not imported: MLflow "
                "keeps their description only, a modelyard dataset holds the data "
                "(`modelyard datasets` registers it)"
            )
        self.report.add(
            "runs",
            run.id,
            "imported" if wrote else "existing",
            target=run_id,
            reason="; ".join(notes),
        )

    def _copy_run(
        self, experiment: Experiment, run: MlflowRun, existing: Run | None
    ) -> tuple[str, bool]:
        """Create (or complete) the run; its id, and whether anything was written."""
        tracking = self.ws.tracking
        if existing is None:
            tags = {
                **run.tags,
                RUN_ID_TAG: run.id,
                SOURCE_TAG: self.source.location,
                STATE_TAG: PARTIAL,
            }
            # params and tags go in with the run, in one transaction
            created = tracking.start_run(
                experiment_id=experiment.id,
                name=run.name,
                params=run.params,
                tags=tags,
                start_time=None if run.start_time is None else _millis_time(run.start_time),
            )
            run_id, stored = created.id, {}
            status: str = created.status
            wrote = True
        else:
            run_id, status = existing.id, existing.status
            stored = {a.path: a.size for a in existing.artifacts}
            wrote = False
            if status == "running":
                params = {k: v for k, v in run.params.items() if k not in existing.params}
                if params:
                    tracking.log_params(run_id, params)
                    wrote = True
            tags = {k: v for k, v in run.tags.items() if existing.tags.get(k) != v}
            if tags:
                tracking.set_tags(run_id, tags)
                wrote = True
        if status == "running":
            wrote = self._metrics(run, run_id, fresh=existing is None) > 0 or wrote
            end = END_STATUS.get(run.status)
            if end is not None:
                ended = None if run.end_time is None else _millis_time(run.end_time)
                tracking.update_run(run_id, status=end, end_time=ended)
                status, wrote = end, True
        copied, all_there = self._artifacts(run, run_id, stored)
        if all_there and status != "running":
            tracking.set_tags(run_id, {STATE_TAG: COMPLETE})
        return run_id, wrote or copied

    def _metrics(self, run: MlflowRun, run_id: str, *, fresh: bool) -> int:
        """Log every point of every metric not logged yet, in one insert; how many."""
        points: list[MlflowPoint] = []
        for key in run.metric_keys:
            history = self.source.metric_history(run, key)
            if not fresh:  # a partial run: keep only the points it lacks (as a multiset)
                have = Counter(
                    _point_key(p.step, round((p.timestamp or _EPOCH).timestamp() * 1000), p.value)
                    for p in self.ws.tracking.get_metric_history(run_id, key)
                )
                missing = []
                for p in history:
                    k = _point_key(p.step, p.timestamp, p.value)
                    if have[k]:
                        have[k] -= 1
                    else:
                        missing.append(p)
                history = missing
            points.extend(history)
        if points:
            self.ws.tracking.log_metrics(
                run_id,
                [
                    {
                        "key": p.key,
                        "value": p.value,
                        "step": p.step,
                        "timestamp": _millis_time(p.timestamp),
                    }
                    for p in points
                ],
            )
        self.report.counts["metric points"].imported += len(points)
        return len(points)

    def _artifacts(self, run: MlflowRun, run_id: str, stored: dict[str, int]) -> tuple[bool, bool]:
        """Copy the run's files the modelyard run lacks; (whether any was copied, whether
        all of them are there now)."""
        try:
            listing = self.source.artifacts(run)
        except MlflowUnreachable:
            raise
        except ModelyardError as exc:
            self.report.add("run artifacts", f"{run.id}/", "failed", reason=exc.detail)
            return False, False
        copied, all_there = False, True
        for artifact in listing:
            item = f"{run.id}/{artifact.path}"
            if artifact.path in stored and artifact.size in (None, stored[artifact.path]):
                self.report.add("run artifacts", item, "existing", target=run_id)
                continue
            try:
                with self._folder() as folder:
                    file = self.source.artifact_file(run, artifact.path, folder)
                    self.ws.tracking.log_artifact(run_id, artifact.path, file)
            except MlflowUnreachable:
                raise
            except ModelyardError as exc:
                self.report.add("run artifacts", item, "failed", reason=exc.detail)
                all_there = False
                continue
            except OSError as exc:  # a file of the store that cannot be read
                self.report.add("run artifacts", item, "failed", reason=str(exc))
                all_there = False
                continue
            self.report.add("run artifacts", item, "imported", target=run_id)
            copied = True
        return copied, all_there

    # --- registered models, versions, aliases ---------------------------------------------

    def _model(self, model: MlflowModel, versions: list[MlflowVersion]) -> None:
        self._tick(f"model {model.name}")
        registry = self.ws.registry
        try:
            try:
                found = registry.get_model(model.name)
                outcome: Outcome = "existing"
                tags = {k: v for k, v in model.tags.items() if found.tags.get(k) != v}
                description = model.description if not found.description else None
                if tags or description:
                    registry.update_model(model.name, description=description, tags=tags)
                    outcome = "imported"
            except NotFound:
                registry.create_model(
                    model.name,
                    description=model.description,
                    tags={**model.tags, SOURCE_TAG: self.source.location},
                )
                outcome = "imported"
            numbers = self._imported_versions(model.name)
        except ModelyardError as exc:
            self.report.add("models", model.name, "failed", reason=exc.detail)
            for version in versions:
                self._tick(f"version {version.name}/{version.version}")
                self.report.add(
                    "versions",
                    f"{version.name}/{version.version}",
                    "failed",
                    reason=f"its model {model.name!r} could not be imported",
                )
            for alias in sorted(model.aliases):
                self.report.add(
                    "aliases",
                    f"{model.name}@{alias}",
                    "failed",
                    reason=f"its model {model.name!r} could not be imported",
                )
            return
        self.report.add("models", model.name, outcome, target=f"models:/{model.name}")
        for version in versions:
            self._version(version, numbers)
        self._aliases(model, registry.get_model(model.name), numbers)

    def _imported_versions(self, name: str) -> dict[str, int]:
        """The versions of model ``name`` imported before: MLflow's ``name/N`` -> version."""
        found: dict[str, int] = {}
        token: str | None = None
        while True:
            page = self.ws.registry.list_versions(name, limit=MAX_LIMIT, page_token=token)
            for version in page.items:
                if VERSION_TAG in version.tags:
                    found[version.tags[VERSION_TAG]] = version.version
            token = page.next_page_token
            if not token:
                return found

    def _version(self, version: MlflowVersion, numbers: dict[str, int]) -> None:
        key = f"{version.name}/{version.version}"
        self._tick(f"version {key}")
        if key in numbers:
            target = f"models:/{version.name}/{numbers[key]}"
            self.report.add("versions", key, "existing", target=target)
            return
        if version.status != "READY":
            self.report.add(
                "versions",
                key,
                "failed",
                reason=f"MLflow has it as {version.status}: its registration never finished",
            )
            return
        tags = {**version.tags, VERSION_TAG: key, SOURCE_TAG: self.source.location}
        if version.run_id:
            tags[VERSION_RUN_TAG] = version.run_id
        if version.stage not in ("", "None"):
            tags[STAGE_TAG] = version.stage  # MLflow's deprecated stages; modelyard has aliases
        try:
            with self._folder() as folder:
                files = folder / "model"
                files.mkdir()
                self.source.download_version(version, files)
                created = self._register(version, files, tags)
        except MlflowUnreachable:
            raise
        except ModelyardError as exc:
            self.report.add("versions", key, "failed", reason=exc.detail)
            return
        numbers[key] = created.version
        notes = []
        if created.manifest.get("options", {}).get("loader_module"):
            notes.append(
                "an MLflow python_function model: its files are kept (MLflow's client loads "
                "them from here), but modelyard cannot serve it: its pickle needs mlflow"
            )
        if version.run_id and version.run_id not in self.run_ids:
            notes.append(f"its MLflow run {version.run_id} was not imported: no lineage to it")
        self.report.add("versions", key, "imported", target=created.uri, reason="; ".join(notes))

    def _register(self, version: MlflowVersion, files: Path, tags: dict[str, str]) -> ModelVersion:
        """Register the downloaded files of ``version`` through the registry: the one place
        MLflow's files become a modelyard version. The registry derives the manifest from
        MLmodel (formats/mlflow.py) and keeps the files as MLflow wrote them; nothing is
        loaded (or unpickled) to register them."""
        from modelyard.formats import MANIFEST_NAME, Manifest, validate_model_dir
        from modelyard.formats.mlflow import mlflow_manifest

        where = version.source or f"{version.name}/{version.version}"
        options: dict[str, Any] = {
            "run_id": self.run_ids.get(version.run_id),
            "description": version.description,
            "tags": tags,
            "source": version.source,
        }
        if (files / MANIFEST_NAME).exists():  # a modelyard model someone put in MLflow
            manifest = validate_model_dir(files)
            for rel, entry in manifest.files.items():
                self.ws.artifacts.put_file(files / rel, entry.digest)
            digest = self.ws.artifacts.put_file(files / MANIFEST_NAME)
            return self.ws.registry.create_version(
                version.name, digest, create_model=False, **options
            )
        listed = Manifest.digest_files(files)
        # checked here first, so that the files of a model modelyard cannot load are not
        # uploaded only to be refused
        mlflow_manifest(listed, lambda rel: (files / rel).read_bytes(), where)
        for rel, entry in listed.items():
            self.ws.artifacts.put_file(files / rel, entry.digest)
        return self.ws.registry.create_version_from_mlflow(
            version.name, listed, where=where, **options
        )

    def _aliases(
        self, model: MlflowModel, registered: RegisteredModel, numbers: dict[str, int]
    ) -> None:
        for alias, mlflow_version in sorted(model.aliases.items()):
            item = f"{model.name}@{alias}"
            target = numbers.get(f"{model.name}/{mlflow_version}")
            here = registered.aliases.get(alias)
            if target is None:
                self.report.add(
                    "aliases",
                    item,
                    "failed",
                    reason=f"the version it points at in MLflow ({mlflow_version}) was not "
                    "imported",
                )
            elif here == target:
                self.report.add("aliases", item, "existing", target=f"models:/{model.name}/{here}")
            elif here is not None:
                self.report.add(
                    "aliases",
                    item,
                    "skipped",
                    target=f"models:/{model.name}/{here}",
                    reason=f"points at version {here} here, at MLflow's version {mlflow_version} "
                    f"(imported as {target}) there; not moved: `modelyard models alias set "
                    f"{model.name} {alias} {target}` moves it",
                )
            else:
                try:
                    self.ws.registry.set_alias(
                        model.name,
                        alias,
                        target,
                        reason=f"imported from MLflow at {self.source.location}",
                    )
                except ModelyardError as exc:
                    self.report.add("aliases", item, "failed", reason=exc.detail)
                    continue
                self.report.add(
                    "aliases", item, "imported", target=f"models:/{model.name}/{target}"
                )


_EPOCH = datetime.fromtimestamp(0, UTC)
