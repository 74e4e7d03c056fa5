"""``modelyard.Client``: one interface over two transports.

``Client()`` or ``Client("./path")`` or ``Client("postgresql+psycopg://...")`` works
in-process on a workspace; ``Client("http://host:8080")`` talks to a server. Both expose the
same services (``client.registry``, ``client.tracking``, ``client.projects``,
``client.identities``, ``client.audit``, ``client.access``, ``client.policies``,
``client.approvals``, ``client.rollouts``...) and the conveniences below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from modelyard.config import Settings
from modelyard.errors import Forbidden, InvalidInput
from modelyard.registry import Alias, DatasetLink, ModelVersion
from modelyard.workspace import Workspace

if TYPE_CHECKING:
    from modelyard.client.http_rollouts import Rollouts
    from modelyard.formats import Predictor, Signature
    from modelyard.tracking.entities import Dataset, Run

Progress = Callable[[str, int], None]


def _settings_for(uri: str | None, settings: Settings) -> Settings:
    if not uri:
        return settings
    if "://" in uri:  # a database URL
        return settings.model_copy(update={"database_url": uri})
    return settings.model_copy(update={"home": Path(uri)})


class Client:
    """The modelyard SDK."""

    def __init__(
        self, uri: str | None = None, *, token: str | None = None, settings: Settings | None = None
    ) -> None:
        settings = settings or Settings()
        uri = uri or settings.uri
        self.settings = settings
        self._active_run: str | None = None
        ws: Workspace | None = None
        if uri is not None and uri.startswith(("http://", "https://")):
            from modelyard.client import http

            transport = http.HttpTransport(uri, token=token or settings.token)
            self._close = transport.close
            self._transport: http.HttpTransport | None = transport
            self._artifacts: Any = http.HttpArtifacts(transport)
            self.registry: Any = http.HttpRegistry(transport)
            self.tracking: Any = http.HttpTracking(transport, self._artifacts)
            self.projects: Any = http.HttpProjects(transport)
            self.identities: Any = http.HttpIdentities(transport)
            self.limits: Any = http.HttpLimits(transport)
            self.audit: Any = http.HttpAudit(transport)
            self.endpoints: Any = http.HttpEndpoints(transport)
            self.monitoring: Any = http.HttpMonitoring(transport)
            from modelyard.client import http_governance

            self.access: Any = http_governance.HttpAccess(transport)
            self.policies: Any = http_governance.HttpPolicies(transport)
            self.approvals: Any = http_governance.HttpApprovals(transport)
            from modelyard.client.http_signing import HttpKeys

            self.keys: Any = HttpKeys(transport)
        else:
            ws = Workspace.open(_settings_for(uri, settings))
            self.settings = ws.settings
            self._close = ws.close
            self._transport = None
            self.registry = ws.registry
            self.tracking = ws.tracking
            self.projects = ws.projects
            self.identities = ws.identities
            self.limits = ws.limits
            self.audit = ws.audit
            self.endpoints = ws.endpoints
            self.monitoring = ws.monitoring
            self.access = ws.access
            self.policies = ws.policies
            self.approvals = ws.approvals
            self.keys = ws.signing
            self._artifacts = ws.artifacts
        self.workspace = ws  # None over HTTP

    @cached_property
    def rollouts(self) -> Rollouts:
        """Rollouts (made on first use: the controller's analysis imports pyarrow)."""
        if self._transport is None:
            assert self.workspace is not None
            return self.workspace.rollouts
        from modelyard.client.http_rollouts import HttpRollouts

        return HttpRollouts(self._transport)

    # --- models -------------------------------------------------------------------------

    def log_model(
        self,
        model: Any,
        name: str,
        *,
        input_example: Any = None,
        signature: Signature | None = None,
        format: str | None = None,
        requirements: list[str] | None = None,
        run_id: str | None = None,
        datasets: Iterable[DatasetLink | Mapping[str, str]] = (),
        description: str = "",
        tags: Mapping[str, Any] | None = None,
        alias: str | None = None,
        progress: Progress | None = None,
    ) -> ModelVersion:
        """Save ``model`` in its format, upload it, and register it as the next version."""
        from modelyard.artifacts.scratch import scratch_dir
        from modelyard.formats import save_model

        # A model saved here may be 100s of MB: in the workspace's staging directory, a
        # process killed mid-way leaves it to the next sweep, not to /tmp for ever.
        with scratch_dir(self.settings.staging_dir) as tmp:
            path = tmp / "model"
            save_model(
                model,
                path,
                input_example=input_example,
                signature=signature,
                format=format,
                requirements=requirements,
            )
            run = run_id or self._active_run
            return self.register_model(
                path,
                name,
                run_id=run,
                datasets=datasets,
                description=description,
                tags=tags,
                alias=alias,
                progress=progress,
                source=f"runs:/{run}" if run else "log_model",
            )

    def register_model(
        self,
        model: str | Path,
        name: str,
        *,
        run_id: str | None = None,
        datasets: Iterable[DatasetLink | Mapping[str, str]] = (),
        description: str = "",
        tags: Mapping[str, Any] | None = None,
        alias: str | None = None,
        progress: Progress | None = None,
        source: str | None = None,
    ) -> ModelVersion:
        """Register a saved model directory, or an existing version (``models:/...``).

        ``source`` records where the model came from; by default, the path or URI given.
        """
        if isinstance(model, str) and model.startswith("models:/"):
            digest = self.registry.resolve(model).manifest_digest
            origin = model
        else:
            digest = self.upload_model_dir(Path(model), progress=progress)
            origin = str(Path(model).resolve())
        version: ModelVersion = self.registry.create_version(
            name,
            digest,
            run_id=run_id,
            datasets=datasets,
            description=description,
            tags=tags,
            source=source or origin,
        )
        if alias:
            try:
                self.registry.set_alias(name, alias, version.version)
            except Forbidden as exc:  # registered all the same: say so, not only the refusal
                raise Forbidden(
                    f"registered {version.uri}, but @{alias} did not move: {exc.detail}"
                ) from None
            version.aliases.append(alias)
        return version

    def upload_model_dir(self, path: Path, *, progress: Progress | None = None) -> str:
        """Upload a saved model's files, then its manifest; return the manifest's digest.

        ``path`` is a directory save_model wrote, or an MLflow model directory (MLmodel, no
        modelyard.json): its files go as they are, with a manifest derived from MLmodel
        (see modelyard.formats.mlflow). The manifest goes last, so a registration can only
        ever see a complete upload.
        """
        from modelyard.formats import MANIFEST_NAME, validate_model_dir
        from modelyard.formats.mlflow import is_mlflow_dir, manifest_for_dir

        if not path.is_dir():
            raise InvalidInput(
                f"{path} is not a directory; pass a model saved with save_model, or an MLflow "
                "model directory"
            )
        mlflow = is_mlflow_dir(path)
        manifest = manifest_for_dir(path) if mlflow else validate_model_dir(path)
        for rel, entry in manifest.files.items():
            self._artifacts.put_file(path / rel, entry.digest)
            if progress:
                progress(rel, entry.size)
        if not mlflow:
            digest: str = self._artifacts.put_file(path / MANIFEST_NAME)
            if progress:
                progress(MANIFEST_NAME, (path / MANIFEST_NAME).stat().st_size)
            return digest
        from modelyard.artifacts.scratch import scratch_dir

        # the derived manifest is written beside nothing of the user's: MLflow's directory
        # stays as it is
        with scratch_dir(self.settings.staging_dir) as tmp:
            file = tmp / MANIFEST_NAME
            file.write_bytes(manifest.model_dump_json(indent=2).encode() + b"\n")
            digest = self._artifacts.put_file(file)
            if progress:
                progress(MANIFEST_NAME, file.stat().st_size)
        return digest

    def _verified_dir(self, version: ModelVersion) -> Path:
        from modelyard.governance.signing import verified_dir

        return verified_dir(
            self._artifacts,
            version,
            self.settings.cache_dir,
            self.registry.get_signature(version.model, version.version),
            require=self.settings.require_signed_models,
            pinned=self.settings.pinned_key_ids,
        )

    def load_model(self, uri: str | ModelVersion, *, trusted: bool = False) -> Predictor:
        """Load ``models:/name@alias`` (or ``/3``, ``/latest``) to a predictor, its signature
        and files verified (see governance/signing.py; MODELYARD_REQUIRE_SIGNED_MODELS)."""
        from modelyard.formats import load_model

        version = uri if isinstance(uri, ModelVersion) else self.registry.resolve(uri)
        return load_model(self._verified_dir(version), trusted=trusted)

    def export_model(
        self, uri: str | ModelVersion, path: str | Path, *, format: str = "mlflow"
    ) -> Path:
        """Write a version as an MLflow model directory at ``path`` (new, or empty) that
        ``mlflow.pyfunc.load_model`` loads: MLmodel with its flavor, signature, input example
        and requirements beside the version's files (verified first, as load_model does)."""
        from modelyard.formats.mlflow import export_mlflow

        if format != "mlflow":
            raise InvalidInput(f"cannot export to {format!r}; the export format is mlflow")
        version = uri if isinstance(uri, ModelVersion) else self.registry.resolve(uri)
        return export_mlflow(self._verified_dir(version), path)

    def set_alias(self, name: str, alias: str, version: int, *, reason: str = "") -> Alias:
        """Move ``alias`` of model ``name`` to ``version`` (as its alias policies allow)."""
        result: Alias = self.registry.set_alias(name, alias, version, reason=reason)
        return result

    def get_version(self, uri: str) -> ModelVersion:
        """The version a ``models:/`` URI names."""
        result: ModelVersion = self.registry.resolve(uri)
        return result

    # --- tracking -----------------------------------------------------------------------

    def start_run(
        self,
        experiment: str = "default",
        *,
        name: str = "",
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> ActiveRun:
        """Start a run; use it as a context manager to end it as finished or failed."""
        run = self.tracking.start_run(experiment, name=name, tags=tags, params=params)
        self._active_run = run.id
        return ActiveRun(self, run)

    def end_run(self, status: str = "finished", run_id: str | None = None) -> Run:
        run: Run = self.tracking.end_run(self._run(run_id), status)
        if run.id == self._active_run:
            self._active_run = None
        return run

    def log_params(self, params: Mapping[str, Any], *, run_id: str | None = None) -> None:
        self.tracking.log_params(self._run(run_id), dict(params))

    def log_metrics(
        self, metrics: Mapping[str, float], *, step: int = 0, run_id: str | None = None
    ) -> None:
        """Log several metrics at one step in one call."""
        from modelyard.tracking.entities import MetricPoint

        points = [MetricPoint(key=k, value=v, step=step) for k, v in metrics.items()]
        self.tracking.log_metrics(self._run(run_id), points)

    def log_metric(
        self, key: str, value: float, *, step: int = 0, run_id: str | None = None
    ) -> None:
        self.log_metrics({key: value}, step=step, run_id=run_id)

    def set_tags(self, tags: Mapping[str, Any], *, run_id: str | None = None) -> None:
        self.tracking.set_tags(self._run(run_id), dict(tags))

    def log_dataset(
        self,
        name: str,
        data: Any,
        *,
        source: str = "",
        context: str = "training",
        run_id: str | None = None,
    ) -> Dataset:
        """Register a dataset (content hash, schema, rows, profile) and link it to the run."""
        ds: Dataset = self.tracking.log_dataset(
            name, data, source=source, run_id=run_id or self._active_run, context=context
        )
        return ds

    def _run(self, run_id: str | None) -> str:
        run = run_id or self._active_run
        if run is None:
            raise InvalidInput("no active run; call start_run() first or pass run_id")
        return run

    def close(self) -> None:
        self._close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ActiveRun:
    """A started run; as a context manager it ends the run, failed if the block raised."""

    def __init__(self, client: Client, run: Run) -> None:
        self.client = client
        self.run = run
        self.id = run.id

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.client.end_run("failed" if exc_type else "finished", run_id=self.id)


__all__ = ["ActiveRun", "Client"]
