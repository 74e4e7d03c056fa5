"""A workspace: settings, the metadata store, the artifact store, and who is acting.

Domain services are built from a workspace and reach each other through it, never through
each other's tables. ``as_actor`` returns a view that records changes under another name
(the API makes one per authenticated request).
"""

from __future__ import annotations

import copy
import threading
from functools import cached_property
from typing import TYPE_CHECKING

from modelyard.artifacts import ArtifactStore
from modelyard.artifacts.scratch import sweep
from modelyard.config import Settings

if TYPE_CHECKING:
    from modelyard.governance.access import AccessService
    from modelyard.governance.approvals import ApprovalService
    from modelyard.governance.audit import AuditLog
    from modelyard.governance.entities import Identity
    from modelyard.governance.identity import Identities
    from modelyard.governance.limits import LimitService
    from modelyard.governance.policies import PolicyService
    from modelyard.governance.signing import SigningService
    from modelyard.monitoring.service import MonitoringService
    from modelyard.pipelines.service import PipelineService
    from modelyard.projects.service import ProjectService
    from modelyard.registry.service import RegistryService
    from modelyard.rollouts.service import RolloutService
    from modelyard.serving.endpoints import EndpointService
    from modelyard.store import Store
    from modelyard.tracking.logged_models import LoggedModelService
    from modelyard.tracking.service import TrackingService


class Workspace:
    """The state one modelyard installation works on.

    The metadata store (SQLAlchemy and every table) is opened on first use: a gateway
    answers its first requests from its plan cache without it (see serving/plans.py).
    """

    def __init__(self, settings: Settings, artifacts: ArtifactStore, actor: str = "local") -> None:
        self.settings = settings
        self.artifacts = artifacts
        self.actor = actor
        self._identity: Identity | None = None
        self._db = _LazyStore(settings.resolved_database_url)

    @classmethod
    def open(cls, settings: Settings | None = None, *, migrate: bool = True) -> Workspace:
        """Open (and by default migrate) the workspace the settings describe."""
        settings = settings or Settings()
        settings.resolved_home.mkdir(parents=True, exist_ok=True)
        options = {}
        if settings.artifact_root and settings.artifact_root.startswith("s3://"):
            options = {"endpoint_url": settings.s3_endpoint_url} if settings.s3_endpoint_url else {}
        artifacts = ArtifactStore(
            settings.resolved_artifact_root,
            max_blob_bytes=settings.max_upload_bytes,
            storage_options=options,
        )
        ws = cls(settings, artifacts)
        ws.sweep_scratch()
        if migrate:
            ws.store.migrate()
        return ws

    def sweep_scratch(self) -> int:
        """Remove what killed processes left half-written (uploads, staged and cached
        models); how many entries. A few directory listings: done whenever one opens."""
        return (
            self.artifacts.sweep()
            + sweep(self.settings.staging_dir, only_scratch=True)
            + sweep(self.settings.cache_dir / "models")
        )

    @property
    def store(self) -> Store:
        """The metadata store, opened on first use."""
        return self._db.get()

    def as_actor(self, actor: str) -> Workspace:
        """The same workspace, recording changes as made by ``actor``; what ``actor`` may
        do is looked up when first asked (see :attr:`identity`)."""
        if actor == self.actor:
            return self
        return self._view(actor, None)

    def as_identity(self, identity: Identity) -> Workspace:
        """The same workspace acting as an authenticated caller (the HTTP adapters)."""
        if identity == self._identity:
            return self
        return self._view(identity.name, identity)

    @property
    def identity(self) -> Identity:
        """Who is acting, and their workspace role. Set by :meth:`as_identity`; else a
        registered user of the actor's name, or (the CLI or SDK in-process, on files the
        caller can read anyway) a local operator with the admin role."""
        if self._identity is None:
            from modelyard.errors import NotFound
            from modelyard.governance.entities import Identity, Role

            try:
                user = self.identities.get_user(self.actor)
                role = Role.viewer if user.disabled else user.role
            except NotFound:
                role = Role.admin
            self._identity = Identity(name=self.actor, role=role)
        return self._identity

    def act_as(self, identity: Identity) -> None:
        """Make this workspace, and the services already made from it, act as ``identity``:
        for a workspace a process made for its own use (a pipeline step's SDK client)."""
        self.actor = identity.name
        self._identity = identity

    def _view(self, actor: str, identity: Identity | None) -> Workspace:
        view = copy.copy(self)
        view.__dict__ = {k: v for k, v in self.__dict__.items() if k in _SHARED}
        view.actor = actor
        view._identity = identity
        return view

    @cached_property
    def registry(self) -> RegistryService:
        from modelyard.registry.service import RegistryService

        return RegistryService(self)

    @cached_property
    def tracking(self) -> TrackingService:
        from modelyard.tracking.service import TrackingService

        return TrackingService(self)

    @cached_property
    def logged_models(self) -> LoggedModelService:
        from modelyard.tracking.logged_models import LoggedModelService

        return LoggedModelService(self)

    @cached_property
    def projects(self) -> ProjectService:
        from modelyard.projects.service import ProjectService

        return ProjectService(self)

    @cached_property
    def endpoints(self) -> EndpointService:
        from modelyard.serving.endpoints import EndpointService

        return EndpointService(self)

    @cached_property
    def rollouts(self) -> RolloutService:
        from modelyard.rollouts.service import RolloutService

        return RolloutService(self)

    @cached_property
    def monitoring(self) -> MonitoringService:
        from modelyard.monitoring.service import MonitoringService

        return MonitoringService(self)

    @cached_property
    def pipelines(self) -> PipelineService:
        from modelyard.pipelines.service import PipelineService

        return PipelineService(self)

    @cached_property
    def identities(self) -> Identities:
        from modelyard.governance.identity import Identities

        return Identities(self.store, self.actor)

    @cached_property
    def audit(self) -> AuditLog:
        from modelyard.governance.audit import AuditLog

        return AuditLog(self.store, self.signing)

    @cached_property
    def signing(self) -> SigningService:
        from modelyard.governance.signing import SigningService

        return SigningService(self)

    @cached_property
    def access(self) -> AccessService:
        from modelyard.governance.access import AccessService

        return AccessService(self)

    @cached_property
    def policies(self) -> PolicyService:
        from modelyard.governance.policies import PolicyService

        return PolicyService(self)

    @cached_property
    def approvals(self) -> ApprovalService:
        from modelyard.governance.approvals import ApprovalService

        return ApprovalService(self)

    @cached_property
    def limits(self) -> LimitService:
        from modelyard.governance.limits import LimitService

        return LimitService(self)

    def close(self) -> None:
        self._db.close()


_SHARED = {"settings", "_db", "artifacts", "actor"}


class _LazyStore:
    """A workspace's metadata store, shared by its views, opened once by whoever asks first."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._store: Store | None = None
        self._lock = threading.Lock()

    def get(self) -> Store:
        store = self._store
        if store is None:
            with self._lock:
                store = self._store
                if store is None:
                    from modelyard.governance.audit import append_events
                    from modelyard.store import Store

                    store = self._store = Store(self.url, before_commit=append_events)
        return store

    def close(self) -> None:
        if self._store is not None:
            self._store.dispose()
