"""The model registry: registered models, immutable numbered versions, aliases, cards.

Version numbers come from a per-model counter incremented under the model row's lock
(``UPDATE ... RETURNING``), so concurrent registrations get 1, 2, 3... with no gap and
no duplicate. A version is created only after every file its manifest lists is in the
artifact store, so no version ever points at a missing artifact.

The service is assembled from parts: models, versions and loading here, aliases in
aliases.py, cards, lineage and runtime records in cards.py, and the row-to-entity
conversions they all use in rows.py.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError
from sqlalchemy import Connection, Update, func, insert, literal, or_, select, update
from sqlalchemy.exc import IntegrityError
from ulid import ULID

from modelyard.artifacts import ArtifactStore, materialize, parse_digest
from modelyard.errors import (
    AlreadyExists,
    Conflict,
    InvalidInput,
    InvalidModel,
    MissingExtra,
    NotFound,
)
from modelyard.governance.entities import Permission
from modelyard.page import Page, check_limit, decode_token
from modelyard.registry.aliases import MAX_REASON as MAX_REASON  # re-exported
from modelyard.registry.aliases import RegistryAliases
from modelyard.registry.cards import RegistryCards
from modelyard.registry.entities import (
    MAX_RETENTION_DAYS,
    MAX_TAG_KEY,
    MAX_TAG_VALUE,
    DatasetLink,
    ModelVersion,
    RegisteredModel,
    RetentionResult,
)
from modelyard.registry.search import RegistrySearch
from modelyard.registry.uri import ModelRef, check_model_name, parse_model_uri
from modelyard.store import Tx
from modelyard.store.tables import (
    ModelAliasRow,
    ModelTagRow,
    ModelVersionDatasetRow,
    ModelVersionRow,
    ModelVersionTagRow,
    RegisteredModelRow,
)

if TYPE_CHECKING:
    from modelyard.formats import FileEntry, Predictor
    from modelyard.governance.signing import ModelSignature, SignatureCheck, Signer
    from modelyard.pipelines.variants import Progress as VariantProgress
    from modelyard.pipelines.variants import VariantReport
    from modelyard.workspace import Workspace


def _check_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not key or len(key) > MAX_TAG_KEY:
            raise InvalidInput(f"tag key {key!r} must be a non-empty string of at most 256 chars")
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        if len(text) > MAX_TAG_VALUE:
            raise InvalidInput(f"tag {key!r} is longer than {MAX_TAG_VALUE} characters")
        out[key] = text
    return out


@functools.lru_cache(maxsize=2048)
def _checked_manifest(artifacts: ArtifactStore, digest: str) -> dict[str, Any]:
    """The manifest stored at ``digest``, after checking every file it lists is stored.

    Cached: blobs are immutable, so a manifest checked once stays valid.
    """
    from modelyard.formats import Manifest

    parse_digest(digest)
    if not artifacts.exists(digest):
        raise InvalidInput(
            f"no manifest {digest} in the artifact store; upload the model's files and "
            "its modelyard.json first (Client.log_model does both)"
        )
    try:
        manifest = Manifest.model_validate_json(artifacts.get_bytes(digest))
    except ValidationError as exc:
        raise InvalidModel(
            f"blob {digest} is not a modelyard manifest: {exc.errors()[0]['msg']}"
        ) from None
    missing = [path for path, entry in manifest.files.items() if not artifacts.exists(entry.digest)]
    if missing:
        raise InvalidInput(
            f"the manifest lists files that were never uploaded: {', '.join(sorted(missing))}; "
            "upload them before registering the version"
        )
    return manifest.model_dump(mode="json")


# Striped locks for version registration (see create_version); 64 stripes bound the memory.
_VERSION_LOCKS = [threading.Lock() for _ in range(64)]

# Manifests whose files passed their format's check; content-addressed, so never stale.
_VALIDATED: set[str] = set()


def _validate_files(ws: Workspace, digest: str, manifest: dict[str, Any]) -> None:
    """Check the stored files really are of the manifest's format (no code is executed).

    A registry may hold models of frameworks it does not have installed; those are
    checked for completeness only.
    """
    from modelyard.formats import validate_model_dir

    files = {path: entry["digest"] for path, entry in manifest["files"].items()}
    path = materialize(
        ws.artifacts,
        {**files, "modelyard.json": digest},
        ws.settings.cache_dir / "models" / parse_digest(digest),
    )
    with contextlib.suppress(MissingExtra):
        validate_model_dir(path)


class RegistryService(RegistryAliases, RegistryCards, RegistrySearch):
    """Registered models, versions, aliases, model cards and lineage."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.store = ws.store

    # --- registered models ------------------------------------------------------------

    def create_model(
        self,
        name: str,
        *,
        description: str = "",
        tags: Mapping[str, Any] | None = None,
        project: str | None = None,
    ) -> RegisteredModel:
        """Register a new model name."""
        self.ws.access.require(
            Permission.write, model=name, project=project, action="create models"
        )
        check_model_name(name)
        checked = _check_tags(tags)
        project_id = self.ws.projects.resolve_id(project) if project else None
        try:
            with self.store.write(self.ws.actor) as tx:
                if tx.session.scalar(
                    select(RegisteredModelRow.id).where(RegisteredModelRow.name == name)
                ):
                    raise AlreadyExists(f"model {name!r} exists already")
                self._add_model_row(tx, name, datetime.now(UTC), description, project_id, checked)
                tx.record(
                    "model.create",
                    "model",
                    name,
                    after={"description": description, "tags": checked, "project": project},
                )
        except IntegrityError:
            raise AlreadyExists(f"model {name!r} exists already") from None
        return self.get_model(name)

    def _add_model_row(
        self,
        tx: Tx,
        name: str,
        now: datetime,
        description: str = "",
        project_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        row = RegisteredModelRow(
            id=str(ULID()),
            name=name,
            description=description,
            project_id=project_id,
            archived=False,
            last_version=0,
            created_at=now,
            updated_at=now,
            created_by=self.ws.actor,
        )
        tx.session.add(row)
        tx.session.flush()  # no relationships are mapped: the parent row must exist first
        tx.session.add_all(
            ModelTagRow(model_id=row.id, key=k, value=v) for k, v in (tags or {}).items()
        )

    def get_model(self, name: str) -> RegisteredModel:
        with self.store.read() as s:
            row = self._model_row(s, name)
            return self._models(s, [row])[0]

    def list_models(
        self,
        *,
        q: str | None = None,
        tags: Mapping[str, str] | None = None,
        project: str | None = None,
        include_archived: bool = False,
        limit: int = 100,
        page_token: str | None = None,
    ) -> Page[RegisteredModel]:
        """Models by name, filtered by a text query on name or description, tags, project."""
        check_limit(limit)
        offset = decode_token(page_token)
        query = select(RegisteredModelRow).order_by(RegisteredModelRow.name)
        if not include_archived:
            query = query.where(RegisteredModelRow.archived.is_(False))
        if q:
            pattern = f"%{q.lower()}%"
            query = query.where(
                or_(
                    func.lower(RegisteredModelRow.name).like(pattern),
                    func.lower(RegisteredModelRow.description).like(pattern),
                )
            )
        for key, value in (tags or {}).items():
            query = query.where(
                RegisteredModelRow.id.in_(
                    select(ModelTagRow.model_id).where(
                        ModelTagRow.key == key, ModelTagRow.value == value
                    )
                )
            )
        if project:
            query = query.where(
                RegisteredModelRow.project_id == self.ws.projects.resolve_id(project)
            )
        with self.store.read() as s:
            rows = list(s.scalars(query.offset(offset).limit(limit + 1)))
            items = self._models(s, rows[:limit])
        return Page.of(items, offset, limit, more=len(rows) > limit)

    def update_model(
        self,
        name: str,
        *,
        description: str | None = None,
        tags: Mapping[str, Any] | None = None,
        remove_tags: Iterable[str] = (),
        project: str | None = None,
    ) -> RegisteredModel:
        """Change a model's description, tags or project; only what is given changes."""
        self.ws.access.require(Permission.write, model=name, action="change models")
        current = self.get_model(name).project
        if project and project != current:
            # a model's project decides which bindings and alias policies hold on it
            self.ws.access.require(Permission.admin, model=name, action="move models")
            self.ws.access.require(Permission.write, project=project, action="add models")
            if current and self.ws.policies.governs_project(current):
                # leaving a project's policies behind is for that project's admins
                self.ws.access.require(
                    Permission.admin, project=current, action="move models out of it"
                )
        checked = _check_tags(tags)
        remove = list(remove_tags)
        project_id = self.ws.projects.resolve_id(project) if project else None
        with self.store.write(self.ws.actor) as tx:
            row = self._model_row(tx.session, name)
            before = self._models(tx.session, [row])[0].model_dump(
                include={"description", "tags", "project"}
            )
            if description is not None:
                row.description = description
            if project_id is not None:
                row.project_id = project_id
            self._set_tags(tx.session, ModelTagRow, "model_id", row.id, checked, remove)
            row.updated_at = datetime.now(UTC)
            tx.session.flush()
            after = self._models(tx.session, [row])[0]
            tx.record(
                "model.update",
                "model",
                name,
                before,
                after.model_dump(include={"description", "tags", "project"}),
            )
        return after

    def rename_model(self, name: str, new_name: str) -> RegisteredModel:
        """Give a model a new name; its versions, aliases and tags go with it.

        Refused (Conflict, naming them) while something refers to the model by name and
        would not follow: an endpoint serving it, role bindings or alias policies on it.
        """
        self.ws.access.require(Permission.write, model=name, action="rename models")
        check_model_name(new_name)
        self.get_model(name)  # NotFound first
        holders = [
            f"endpoint {ep.name}"
            for ep in self.ws.endpoints.list()
            if any(_names_model(d.target, name) for d in ep.destinations())
        ]
        holders += [f"role binding {b.id}" for b in self.ws.access.list(scope=f"model:{name}")]
        holders += [f"alias policy {p.name}" for p in self.ws.policies.list(f"model:{name}")]
        if holders:
            raise Conflict(
                f"cannot rename model {name!r}: {', '.join(holders)} refer(s) to it by name; "
                "remove them, rename, then make them again for the new name"
            )
        with self.store.write(self.ws.actor) as tx:
            row = self._model_row(tx.session, name)
            if tx.session.scalar(
                select(RegisteredModelRow.id).where(RegisteredModelRow.name == new_name)
            ):
                raise AlreadyExists(f"model {new_name!r} exists already; choose another name")
            row.name = new_name
            row.updated_at = datetime.now(UTC)
            tx.record("model.rename", "model", name, {"name": name}, {"name": new_name})
        return self.get_model(new_name)

    def archive_model(self, name: str, archived: bool = True) -> RegisteredModel:
        """Hide a model from listings (``archived=False`` restores it); its versions stay."""
        self.ws.access.require(Permission.write, model=name, action="archive models")
        if archived:
            self._require_admin_if_governed(name, "archive models an alias policy governs")
        with self.store.write(self.ws.actor) as tx:
            row = self._model_row(tx.session, name)
            tx.record(
                "model.archive" if archived else "model.restore",
                "model",
                name,
                {"archived": row.archived},
                {"archived": archived},
            )
            row.archived = archived
            row.updated_at = datetime.now(UTC)
        return self.get_model(name)

    def delete_model(self, name: str) -> None:
        """Delete an archived model with all its versions and aliases."""
        self.ws.access.require(Permission.write, model=name, action="delete models")
        self._require_admin_if_governed(name, "delete models an alias policy governs")
        with self.store.write(self.ws.actor) as tx:
            row = self._model_row(tx.session, name)
            if not row.archived:
                raise Conflict(f"model {name!r} is not archived; archive it first, then delete it")
            versions = tx.session.scalars(
                select(ModelVersionRow.version).where(ModelVersionRow.model_id == row.id)
            ).all()
            tx.session.delete(row)
            tx.record("model.delete", "model", name, {"versions": sorted(versions)}, None)
            # a model registered later under this name is another model: no grants carry over
            self.ws.access.drop_scope(tx, f"model:{name}")

    def _require_admin_if_governed(self, name: str, action: str) -> None:
        """Archiving or deleting a model takes its protected aliases with it: an admin's."""
        try:
            project = self.get_model(name).project
        except NotFound:
            return  # reported by the caller's own lookup
        if self.ws.policies.governs(name, project):
            self.ws.access.require(Permission.admin, model=name, project=project, action=action)

    # --- versions ---------------------------------------------------------------------

    def create_version(
        self,
        name: str,
        manifest_digest: str,
        *,
        run_id: str | None = None,
        datasets: Iterable[DatasetLink | Mapping[str, str]] = (),
        description: str = "",
        tags: Mapping[str, Any] | None = None,
        source: str = "",
        create_model: bool = True,
    ) -> ModelVersion:
        """Register the next version of ``name`` from a stored manifest.

        The model is created first when it does not exist and ``create_model`` is true.
        """
        self.ws.access.require(Permission.write, model=name, action="register versions")
        check_model_name(name)
        checked = _check_tags(tags)
        manifest = _checked_manifest(self.ws.artifacts, manifest_digest)
        if manifest_digest not in _VALIDATED:
            _validate_files(self.ws, manifest_digest, manifest)
            _VALIDATED.add(manifest_digest)
        links = [
            d if isinstance(d, DatasetLink) else DatasetLink.model_validate(d) for d in datasets
        ]
        card = self._generated_card(name, manifest, description, run_id, links)
        signer = self.ws.signing.signer()  # None: no signing key; signed in the same transaction
        now = datetime.now(UTC)
        # Registrations of one model serialise on its row lock in the database anyway; queueing
        # them here first keeps one transaction per process waiting there instead of every
        # request thread, which turns a convoy of database wake-ups into cheap thread hand-offs.
        with _VERSION_LOCKS[hash(name) % len(_VERSION_LOCKS)]:
            insert = functools.partial(
                self._insert_version,
                name,
                manifest_digest,
                manifest,
                card,
                checked,
                links,
                run_id=run_id,
                description=description,
                source=source,
                now=now,
                signer=signer,
            )
            try:
                return insert(create_model=create_model)
            except IntegrityError:
                # Another writer created the same model first; its row exists now, so retry.
                return insert(create_model=False)

    def create_version_from_mlflow(
        self,
        name: str,
        files: Mapping[str, FileEntry],
        *,
        where: str,
        run_id: str | None = None,
        description: str = "",
        tags: Mapping[str, Any] | None = None,
        source: str = "",
    ) -> ModelVersion:
        """Register the next version of ``name`` from an MLflow model's stored files
        (relative path -> digest and size; ``where`` names them in errors); see
        :func:`modelyard.registry.mlflow_files.register_mlflow_files`."""
        from modelyard.registry.mlflow_files import register_mlflow_files

        return register_mlflow_files(
            self.ws,
            name,
            files,
            where=where,
            run_id=run_id,
            description=description,
            tags=tags,
            source=source,
        )

    def mlflow_files(self, version: ModelVersion) -> dict[str, FileEntry]:
        """The files MLflow's client reads as ``version``'s model directory (path -> digest
        and size); see :func:`modelyard.registry.mlflow_files.mlflow_files`."""
        from modelyard.registry.mlflow_files import mlflow_files

        return mlflow_files(self.ws, version)

    def _insert_version(
        self,
        name: str,
        manifest_digest: str,
        manifest: dict[str, Any],
        card: dict[str, Any],
        tags: dict[str, str],
        links: list[DatasetLink],
        *,
        run_id: str | None,
        description: str,
        source: str,
        create_model: bool,
        now: datetime,
        signer: Signer | None = None,
    ) -> ModelVersion:
        # Everything between the counter bump and the commit holds the model row's lock, so
        # it is kept to a few Core statements with every value prepared beforehand.
        bump = (
            update(RegisteredModelRow)
            .where(RegisteredModelRow.name == name)
            .values(last_version=RegisteredModelRow.last_version + 1, updated_at=now)
            .returning(RegisteredModelRow.id, RegisteredModelRow.last_version)
        )
        values = {
            "id": str(ULID()),
            "manifest_digest": manifest_digest,
            "format": manifest["format"],
            "manifest": manifest,
            "description": description,
            "status": "ready",
            "run_id": run_id,
            "source": source,
            "created_at": now,
            "updated_at": now,
            "created_by": self.ws.actor,
            "card": card,  # its version number is filled in when the card is read
        }
        audit_after = {
            "manifest_digest": manifest_digest,
            "run_id": run_id,
            "format": manifest["format"],
        }
        with self.store.write(self.ws.actor) as tx:
            conn = tx.session.connection()
            bumped = self._bump_and_insert(conn, bump, values)
            if bumped is None:
                if not create_model:
                    raise NotFound(f"no model {name!r}; create it first")
                self._add_model_row(tx, name, now)
                tx.record("model.create", "model", name, after={"description": "", "tags": {}})
                bumped = self._bump_and_insert(conn, bump, values)
                assert bumped is not None
            values["model_id"], number = bumped
            values["version"] = number
            if tags:
                conn.execute(
                    insert(ModelVersionTagRow),
                    [{"version_id": values["id"], "key": k, "value": v} for k, v in tags.items()],
                )
            if links:
                conn.execute(
                    insert(ModelVersionDatasetRow),
                    [
                        {"version_id": values["id"], "dataset_id": d.dataset_id, "role": d.role}
                        for d in links
                    ],
                )
            tx.record("version.create", "model_version", f"{name}/{number}", after=audit_after)
            if signer is not None:
                self.ws.signing.add_signature(
                    tx,
                    signer,
                    version_id=values["id"],
                    model=name,
                    version=number,
                    manifest_digest=manifest_digest,
                    manifest=manifest,
                )
        return self._version_entity(ModelVersionRow(**values), name, tags, [], links)

    @staticmethod
    def _bump_and_insert(
        conn: Connection, bump: Update, values: dict[str, Any]
    ) -> tuple[str, int] | None:
        """Take the next version number and insert the version row; None if no such model.

        On PostgreSQL this is one statement (one round trip while the model row is locked).
        """
        if conn.dialect.name == "postgresql":
            bumped = bump.cte("bumped")
            columns = list(values)
            table = ModelVersionRow.__table__.c
            source = select(
                *(literal(values[c], type_=table[c].type).label(c) for c in columns),
                bumped.c.id.label("model_id"),
                bumped.c.last_version.label("version"),
            )
            row = conn.execute(
                insert(ModelVersionRow)
                .from_select([*columns, "model_id", "version"], source)
                .add_cte(bumped)
                .returning(ModelVersionRow.model_id, ModelVersionRow.version)
            ).first()
            return None if row is None else (row[0], row[1])
        found = conn.execute(bump).first()
        if found is None:
            return None
        conn.execute(insert(ModelVersionRow), {**values, "model_id": found[0], "version": found[1]})
        return found[0], found[1]

    def get_version(self, name: str, version: int) -> ModelVersion:
        with self.store.read() as s:
            model = self._model_row(s, name)
            row = self._version_row(s, model, version)
            return self._versions(s, name, [row])[0]

    def list_versions(
        self,
        name: str,
        *,
        include_archived: bool = True,
        limit: int = 100,
        page_token: str | None = None,
    ) -> Page[ModelVersion]:
        """Versions of a model, newest first."""
        check_limit(limit)
        offset = decode_token(page_token)
        with self.store.read() as s:
            model = self._model_row(s, name)
            query = (
                select(ModelVersionRow)
                .where(ModelVersionRow.model_id == model.id)
                .order_by(ModelVersionRow.version.desc())
            )
            if not include_archived:
                query = query.where(ModelVersionRow.status == "ready")
            rows = list(s.scalars(query.offset(offset).limit(limit + 1)))
            items = self._versions(s, name, rows[:limit])
        return Page.of(items, offset, limit, more=len(rows) > limit)

    def update_version(
        self,
        name: str,
        version: int,
        *,
        description: str | None = None,
        tags: Mapping[str, Any] | None = None,
        remove_tags: Iterable[str] = (),
    ) -> ModelVersion:
        """Change a version's description or tags. Its files and manifest never change."""
        self.ws.access.require(Permission.write, model=name, action="change versions")
        checked = _check_tags(tags)
        remove = list(remove_tags)
        with self.store.write(self.ws.actor) as tx:
            model = self._model_row(tx.session, name)
            row = self._version_row(tx.session, model, version)
            before = self._versions(tx.session, name, [row])[0]
            if description is not None:
                row.description = description
            self._set_tags(tx.session, ModelVersionTagRow, "version_id", row.id, checked, remove)
            row.updated_at = datetime.now(UTC)
            tx.session.flush()
            after = self._versions(tx.session, name, [row])[0]
            fields = {"description", "tags"}
            tx.record(
                "version.update",
                "model_version",
                f"{name}/{version}",
                before.model_dump(include=fields),
                after.model_dump(include=fields),
            )
        return after

    def archive_version(self, name: str, version: int, archived: bool = True) -> ModelVersion:
        """Archive a version (or restore it); an aliased version cannot be archived."""
        self.ws.access.require(Permission.write, model=name, action="archive versions")
        with self.store.write(self.ws.actor) as tx:
            model = self._model_row(tx.session, name)
            row = self._version_row(tx.session, model, version)
            if archived:
                self._refuse_if_aliased(tx.session, model, version, "archive")
            status = "archived" if archived else "ready"
            tx.record(
                "version.archive" if archived else "version.restore",
                "model_version",
                f"{name}/{version}",
                {"status": row.status},
                {"status": status},
            )
            row.status = status
            row.updated_at = datetime.now(UTC)
        return self.get_version(name, version)

    def delete_version(self, name: str, version: int) -> None:
        """Delete a version's record; refused while an alias points at it."""
        self.ws.access.require(Permission.write, model=name, action="delete versions")
        with self.store.write(self.ws.actor) as tx:
            model = self._model_row(tx.session, name)
            row = self._version_row(tx.session, model, version)
            self._refuse_if_aliased(tx.session, model, version, "delete")
            tx.session.delete(row)
            tx.record(
                "version.delete",
                "model_version",
                f"{name}/{version}",
                {"manifest_digest": row.manifest_digest},
                None,
            )

    def apply_retention(
        self, name: str, *, keep_last: int, min_age_days: float = 0, dry_run: bool = True
    ) -> RetentionResult:
        """Delete versions beyond the newest ``keep_last`` that are older than ``min_age_days``.

        Aliased versions are always kept. ``dry_run`` only reports what would go.
        """
        self.ws.access.require(Permission.write, model=name, action="delete versions")
        if keep_last < 1:
            raise InvalidInput(
                "keep_last must be at least 1: a retention rule never deletes every version"
            )
        if not 0 <= min_age_days <= MAX_RETENTION_DAYS:  # NaN fails too
            raise InvalidInput(
                f"min_age_days must be between 0 and {MAX_RETENTION_DAYS}, got {min_age_days}"
            )
        cutoff = datetime.now(UTC) - timedelta(days=min_age_days)
        with self.store.read() as s:
            model = self._model_row(s, name)
            rows = s.scalars(
                select(ModelVersionRow)
                .where(ModelVersionRow.model_id == model.id)
                .order_by(ModelVersionRow.version.desc())
            ).all()
            aliased = set(
                s.scalars(select(ModelAliasRow.version).where(ModelAliasRow.model_id == model.id))
            )
        doomed = [
            r.version
            for r in rows[keep_last:]
            if r.version not in aliased and r.created_at <= cutoff
        ]
        if not dry_run:
            for version in doomed:
                self.delete_version(name, version)
        kept = [r.version for r in rows if r.version not in doomed]
        return RetentionResult(model=name, deleted=doomed, kept=kept, dry_run=dry_run)

    def resolve(self, uri: str | ModelRef) -> ModelVersion:
        """The version a ``models:/`` URI names."""
        ref = parse_model_uri(uri) if isinstance(uri, str) else uri
        if ref.alias is not None:
            return self.get_version(ref.name, self.get_alias(ref.name, ref.alias).version)
        if ref.version is not None:
            return self.get_version(ref.name, ref.version)
        with self.store.read() as s:
            model = self._model_row(s, ref.name)
            row = s.scalars(
                select(ModelVersionRow)
                .where(ModelVersionRow.model_id == model.id, ModelVersionRow.status == "ready")
                .order_by(ModelVersionRow.version.desc())
                .limit(1)
            ).first()
            if row is None:
                raise NotFound(f"model {ref.name!r} has no version yet; register one first")
            return self._versions(s, ref.name, [row])[0]

    # --- loading ----------------------------------------------------------------------

    def local_path(self, version: ModelVersion) -> Path:
        """A local directory with the version's files, each verified against its digest, after
        its signature check (see governance/signing.py)."""
        return self.ws.signing.local_copy(version)

    def load_model(self, uri: str | ModelVersion, *, trusted: bool = False) -> Predictor:
        """Load a version (by URI or entity) into a :class:`~modelyard.formats.Predictor`."""
        from modelyard.formats import load_model

        version = self.resolve(uri) if isinstance(uri, str) else uri
        return load_model(self.local_path(version), trusted=trusted)

    def create_variant(
        self,
        parent: str | ModelVersion,
        *,
        quantize: str | None = None,
        distill: str | None = None,
        name: str | None = None,
        target: str | None = None,
        max_depth: int | None = None,
        latency_calls: int = 200,
        progress: VariantProgress | None = None,
    ) -> VariantReport:
        """Quantise (``quantize="int8"``) or distill (``distill="tree"``, ``"logistic"``,
        ``"linear"``) ``parent`` into a new version, measured beside it on its holdout and
        here for latency; see :mod:`modelyard.pipelines.variants`."""
        from modelyard.pipelines.variants import create_variant

        return create_variant(
            self.ws,
            parent,
            quantize=quantize,
            distill=distill,
            name=name,
            target=target,
            max_depth=max_depth,
            latency_calls=latency_calls,
            progress=progress,
        )

    def sign_version(self, name: str, version: int) -> ModelSignature:
        """Sign an existing version with the signing key (or re-sign it with a new one)."""
        return self.ws.signing.sign_version(name, version)

    def get_signature(self, name: str, version: int) -> ModelSignature:
        """A version's signature and its key's standing (``signed`` false: none)."""
        return self.ws.signing.get_signature(name, version)

    def verify_version(self, name: str, version: int) -> SignatureCheck:
        """Check a version's signature and its stored files against the signed digests."""
        return self.ws.signing.verify_version(name, version)


def _names_model(target: str, name: str) -> bool:
    """Whether an endpoint's target (``models:/NAME...``) is a version of model ``name``."""
    try:
        return parse_model_uri(target).name == name
    except InvalidInput:
        return False
