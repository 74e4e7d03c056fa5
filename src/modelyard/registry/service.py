"""The model registry: registered models, immutable numbered versions, aliases, cards.

Version numbers come from a per-model counter incremented under the model row's lock
(``UPDATE ... RETURNING``), so concurrent registrations get 1, 2, 3... with no gap and
no duplicate. A version is created only after every file its manifest lists is in the
artifact store, so no version ever points at a missing artifact.
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
from sqlalchemy import Connection, Update, delete, func, insert, literal, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
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
from modelyard.registry.entities import (
    MAX_RETENTION_DAYS,
    MAX_TAG_KEY,
    MAX_TAG_VALUE,
    Alias,
    DatasetLink,
    Lineage,
    ModelCard,
    ModelVersion,
    RegisteredModel,
    RetentionResult,
    VersionRuntime,
    check_card_sections,
)
from modelyard.registry.uri import (
    ModelRef,
    check_alias,
    check_model_name,
    check_version,
    parse_model_uri,
)
from modelyard.store import Tx
from modelyard.store.tables import (
    ModelAliasRow,
    ModelTagRow,
    ModelVersionDatasetRow,
    ModelVersionRow,
    ModelVersionTagRow,
    RegisteredModelRow,
    VersionRuntimeRow,
)

if TYPE_CHECKING:
    from modelyard.formats import Predictor
    from modelyard.governance.policies import MoveClearance
    from modelyard.governance.signing import ModelSignature, SignatureCheck, Signer
    from modelyard.registry.history import AliasAt, AliasHistory
    from modelyard.workspace import Workspace

#: The longest reason an alias move may give (it goes to the audit record).
MAX_REASON = 2000


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


class RegistryService:
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
        if project:
            self.ws.access.require(Permission.write, project=project, action="add models")
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

    def archive_model(self, name: str, archived: bool = True) -> RegisteredModel:
        """Hide a model from listings (``archived=False`` restores it); its versions stay."""
        self.ws.access.require(Permission.write, model=name, action="archive models")
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
        with self.store.write(self.ws.actor) as tx:
            row = self._model_row(tx.session, name)
            if not row.archived:
                raise Conflict(f"model {name!r} is not archived; archive it first, then delete it")
            versions = tx.session.scalars(
                select(ModelVersionRow.version).where(ModelVersionRow.model_id == row.id)
            ).all()
            tx.session.delete(row)
            tx.record("model.delete", "model", name, {"versions": sorted(versions)}, None)

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

    # --- aliases ----------------------------------------------------------------------

    def set_alias(
        self, name: str, alias: str, version: int, *, reason: str = "", gates_passed: bool = False
    ) -> Alias:
        """Point ``alias`` at ``version`` in one atomic step; readers see old or new.

        A protected alias (governance/policies.py) moves only as its policies allow: a 403
        names the policy and what is missing. ``reason`` goes to the audit record;
        ``gates_passed`` is for a pipeline promotion whose quality gates all passed.
        """
        check_alias(alias)
        if len(reason) > MAX_REASON:
            raise InvalidInput(f"a reason is at most {MAX_REASON} characters")
        clearance = self._clear_move(name, alias, version, gates_passed=gates_passed)
        now = datetime.now(UTC)
        with self.store.write(self.ws.actor) as tx:
            model = self._model_row(tx.session, name)
            row = self._version_row(tx.session, model, version)
            if row.status != "ready":
                raise Conflict(
                    f"{name} v{version} is archived; restore it before giving it an alias"
                )
            previous = tx.session.scalar(
                select(ModelAliasRow.version).where(
                    ModelAliasRow.model_id == model.id, ModelAliasRow.alias == alias
                )
            )
            # (imported here: the PostgreSQL dialect costs ~0.1 s of every start-up on SQLite)
            from sqlalchemy.dialects import postgresql, sqlite

            dialect = postgresql if tx.session.get_bind().dialect.name == "postgresql" else sqlite
            stmt = dialect.insert(ModelAliasRow).values(
                model_id=model.id, alias=alias, version=version, updated_at=now
            )
            tx.session.execute(
                stmt.on_conflict_do_update(
                    index_elements=["model_id", "alias"],
                    set_={"version": version, "updated_at": now},
                )
            )
            after: dict[str, Any] = {"version": version}
            if reason:
                after["reason"] = reason
            if clearance.policies:
                after["policies"] = clearance.policies
            if clearance.approvals:
                after["approvals"] = clearance.approvals
            if gates_passed:
                after["gates_passed"] = True
            tx.record(
                "alias.set",
                "model_alias",
                f"{name}@{alias}",
                None if previous is None else {"version": previous},
                after,
            )
        return Alias(model=name, alias=alias, version=version, updated_at=now)

    def _clear_move(
        self, name: str, alias: str, version: int | None, *, gates_passed: bool = False
    ) -> MoveClearance:
        """Whether the caller may move (None: delete) ``alias``: write on the model, and
        whatever the alias policies covering it ask (:class:`Forbidden` if not)."""
        action = "move aliases" if version is not None else "delete aliases"
        self.ws.access.require(Permission.write, model=name, action=action)
        project = self.get_model(name).project
        return self.ws.policies.check_move(
            name, alias, version, project=project, gates_passed=gates_passed
        )

    def get_alias(self, name: str, alias: str) -> Alias:
        with self.store.read() as s:
            found = s.execute(
                select(ModelAliasRow)
                .join(RegisteredModelRow, RegisteredModelRow.id == ModelAliasRow.model_id)
                .where(RegisteredModelRow.name == name, ModelAliasRow.alias == alias)
            ).scalar()
            if found is None:
                self._model_row(s, name)  # a missing model is reported as such
                raise NotFound(
                    f"model {name!r} has no alias {alias!r}; set it with "
                    f"`modelyard models alias set {name} {alias} VERSION`"
                )
            return Alias(
                model=name, alias=alias, version=found.version, updated_at=found.updated_at
            )

    def delete_alias(self, name: str, alias: str, *, reason: str = "") -> None:
        """Remove ``alias``; a protected one only by an admin of the model."""
        self.ws.access.require(Permission.write, model=name, action="delete aliases")
        current = self.get_alias(name, alias)
        clearance = self._clear_move(name, alias, None)
        with self.store.write(self.ws.actor) as tx:
            model = self._model_row(tx.session, name)
            tx.session.execute(
                delete(ModelAliasRow).where(
                    ModelAliasRow.model_id == model.id, ModelAliasRow.alias == alias
                )
            )
            after: dict[str, Any] = {"reason": reason} if reason else {}
            if clearance.policies:
                after["policies"] = clearance.policies
            tx.record(
                "alias.delete",
                "model_alias",
                f"{name}@{alias}",
                {"version": current.version},
                after or None,
            )

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

    def alias_history(
        self, name: str, alias: str, limit: int = 100, *, as_of: datetime | str | None = None
    ) -> AliasHistory:
        """The moves of an alias (who, when, from which version to which, why), newest
        first, up to ``as_of`` (ISO 8601 with a zone; None: now); see registry/history.py."""
        from modelyard.registry.history import alias_history

        return alias_history(self.ws, name, alias, limit=limit, as_of=as_of)

    def alias_at(self, name: str, alias: str, at: datetime | str) -> AliasAt:
        """Where an alias pointed at ``at``, and the move that put it there."""
        from modelyard.registry.history import alias_at

        return alias_at(self.ws, name, alias, at)

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

    def sign_version(self, name: str, version: int) -> ModelSignature:
        """Sign an existing version with the signing key (or re-sign it with a new one)."""
        return self.ws.signing.sign_version(name, version)

    def get_signature(self, name: str, version: int) -> ModelSignature:
        """A version's signature and its key's standing (``signed`` false: none)."""
        return self.ws.signing.get_signature(name, version)

    def verify_version(self, name: str, version: int) -> SignatureCheck:
        """Check a version's signature and its stored files against the signed digests."""
        return self.ws.signing.verify_version(name, version)

    def record_runtime(
        self,
        name: str,
        version: int,
        runtime: str,
        *,
        status: str,
        artifact_digest: str | None,
        report: Mapping[str, Any],
    ) -> VersionRuntime:
        """Record how an optimised runtime compared with the version's native predictions."""
        self.ws.access.require(Permission.write, model=name, action="record runtime checks")
        if artifact_digest is not None and not self.ws.artifacts.exists(artifact_digest):
            raise InvalidInput(f"no artifact {artifact_digest}; upload the runtime's file first")
        now = datetime.now(UTC)
        with self.store.write(self.ws.actor) as tx:
            row = self._version_row(tx.session, self._model_row(tx.session, name), version)
            existing = tx.session.get(VersionRuntimeRow, (row.id, runtime))
            if existing is not None:
                tx.session.delete(existing)
                tx.session.flush()
            tx.session.add(
                VersionRuntimeRow(
                    version_id=row.id,
                    runtime=runtime,
                    status=status,
                    artifact_digest=artifact_digest,
                    report=dict(report),
                    created_at=now,
                )
            )
            tx.record(
                "version.runtime",
                "model_version",
                f"{name}/{version}",
                None if existing is None else {"runtime": runtime, "status": existing.status},
                {"runtime": runtime, "status": status},
            )
        return VersionRuntime(
            model=name,
            version=version,
            runtime=runtime,
            status=status,
            artifact_digest=artifact_digest,
            report=dict(report),
            created_at=now,
        )

    def get_runtime(self, name: str, version: int, runtime: str) -> VersionRuntime | None:
        """The recorded check of ``runtime`` for a version, if one was made."""
        with self.store.read() as s:
            row = self._version_row(s, self._model_row(s, name), version)
            found = s.get(VersionRuntimeRow, (row.id, runtime))
            if found is None:
                return None
            return VersionRuntime(
                model=name,
                version=version,
                runtime=runtime,
                status=found.status,
                artifact_digest=found.artifact_digest,
                report=found.report,
                created_at=found.created_at,
            )

    # --- cards and lineage ------------------------------------------------------------

    def get_card(self, name: str, version: int) -> ModelCard:
        with self.store.read() as s:
            row = self._version_row(s, self._model_row(s, name), version)
            return ModelCard.model_validate({**row.card, "model": name, "version": version})

    def update_card(self, name: str, version: int, sections: Mapping[str, Any]) -> ModelCard:
        """Replace the given sections of a version's card; others keep their text."""
        self.ws.access.require(Permission.write, model=name, action="change model cards")
        check_card_sections(sections)
        with self.store.write(self.ws.actor) as tx:
            row = self._version_row(tx.session, self._model_row(tx.session, name), version)
            try:
                card = ModelCard.model_validate(
                    {**row.card, **sections, "model": name, "version": version}
                )
            except ValidationError as exc:
                err = exc.errors()[0]
                raise InvalidInput(f"card section {err['loc'][0]!r}: {err['msg']}") from None
            before = {k: row.card.get(k) for k in sections}
            row.card = card.model_dump(mode="json")
            row.updated_at = datetime.now(UTC)
            tx.record("card.update", "model_version", f"{name}/{version}", before, dict(sections))
        return card

    def lineage(self, name: str, version: int) -> Lineage:
        """The run, experiment, datasets, params and code version behind a version."""
        v = self.get_version(name, version)
        lineage = Lineage(model=name, version=version, run_id=v.run_id, source=v.source)
        if v.run_id:
            run = self.ws.tracking.get_run(v.run_id)
            lineage.experiment = run.experiment
            lineage.params = dict(run.params)
            lineage.code_version = run.tags.get("git.commit") or run.tags.get("code_version")
        for link in v.datasets:
            ds = self.ws.tracking.get_dataset_by_id(link.dataset_id)
            lineage.datasets.append(
                {
                    "dataset_id": ds.id,
                    "name": ds.name,
                    "version": ds.version,
                    "digest": ds.digest,
                    "role": link.role,
                }
            )
        return lineage

    def _generated_card(
        self,
        name: str,
        manifest: dict[str, Any],
        description: str,
        run_id: str | None,
        links: list[DatasetLink],
    ) -> dict[str, Any]:
        signature = manifest.get("signature", {})
        outputs = ", ".join(o["name"] for o in signature.get("outputs", [])) or "its outputs"
        inputs = signature.get("inputs", [])
        summary = description or (
            f"A {manifest['framework']} model ({manifest['format']} format) that predicts "
            f"{outputs} from {len(inputs)} input{'s' if len(inputs) != 1 else ''}."
        )
        card = ModelCard(model=name, version=0, summary=summary, signature=signature)
        if run_id:
            run = self.ws.tracking.get_run(run_id)  # NotFound for an unknown run
            card.metrics = dict(run.metrics)
            card.lineage = {"run_id": run_id, "experiment": run.experiment}
            code = run.tags.get("git.commit") or run.tags.get("code_version")
            if code:
                card.lineage["code_version"] = code
        for link in links:
            ds = self.ws.tracking.get_dataset_by_id(link.dataset_id)  # NotFound if unknown
            card.data.append(
                {
                    "dataset_id": ds.id,
                    "name": ds.name,
                    "version": ds.version,
                    "num_rows": ds.num_rows,
                    "digest": ds.digest,
                    "role": link.role,
                }
            )
        return card.model_dump(mode="json")

    # --- rows to entities ---------------------------------------------------------------

    @staticmethod
    def _model_row(s: Session, name: str) -> RegisteredModelRow:
        row = s.scalar(select(RegisteredModelRow).where(RegisteredModelRow.name == name))
        if row is None:
            raise NotFound(f"no model {name!r}; `modelyard models list` shows the registered ones")
        return row

    @staticmethod
    def _version_row(s: Session, model: RegisteredModelRow, version: int) -> ModelVersionRow:
        check_version(version)  # beyond the column's range the database would refuse it
        row = s.scalar(
            select(ModelVersionRow).where(
                ModelVersionRow.model_id == model.id, ModelVersionRow.version == version
            )
        )
        if row is None:
            raise NotFound(
                f"model {model.name!r} has no version {version}; its latest is {model.last_version}"
                if model.last_version
                else f"model {model.name!r} has no version yet"
            )
        return row

    @staticmethod
    def _refuse_if_aliased(s: Session, model: RegisteredModelRow, version: int, verb: str) -> None:
        aliases = s.scalars(
            select(ModelAliasRow.alias).where(
                ModelAliasRow.model_id == model.id, ModelAliasRow.version == version
            )
        ).all()
        if aliases:
            raise Conflict(
                f"cannot {verb} {model.name} v{version}: alias(es) {', '.join(sorted(aliases))} "
                "point at it; move or delete them first"
            )

    @staticmethod
    def _set_tags(
        s: Session, table: Any, key_column: str, owner: str, tags: dict[str, str], remove: list[str]
    ) -> None:
        column = getattr(table, key_column)
        if remove:
            s.execute(delete(table).where(column == owner, table.key.in_(remove)))
        for key, value in tags.items():
            existing = s.get(table, (owner, key))
            if existing is None:
                s.add(table(**{key_column: owner, "key": key, "value": value}))
            else:
                existing.value = value

    def _models(self, s: Session, rows: list[RegisteredModelRow]) -> list[RegisteredModel]:
        ids = [r.id for r in rows]
        if not ids:
            return []
        tags: dict[str, dict[str, str]] = {i: {} for i in ids}
        for t in s.scalars(select(ModelTagRow).where(ModelTagRow.model_id.in_(ids))):
            tags[t.model_id][t.key] = t.value
        aliases: dict[str, dict[str, int]] = {i: {} for i in ids}
        for a in s.scalars(select(ModelAliasRow).where(ModelAliasRow.model_id.in_(ids))):
            aliases[a.model_id][a.alias] = a.version
        latest = dict(
            s.execute(
                select(ModelVersionRow.model_id, func.max(ModelVersionRow.version))
                .where(ModelVersionRow.model_id.in_(ids))
                .group_by(ModelVersionRow.model_id)
            ).all()
        )
        projects = self.ws.projects.names({r.project_id for r in rows if r.project_id})
        return [
            RegisteredModel(
                id=r.id,
                name=r.name,
                description=r.description,
                tags=tags[r.id],
                aliases=aliases[r.id],
                latest_version=latest.get(r.id),
                project=projects.get(r.project_id) if r.project_id else None,
                archived=r.archived,
                created_at=r.created_at,
                updated_at=r.updated_at,
                created_by=r.created_by,
            )
            for r in rows
        ]

    def _versions(self, s: Session, name: str, rows: list[ModelVersionRow]) -> list[ModelVersion]:
        ids = [r.id for r in rows]
        if not ids:
            return []
        tags: dict[str, dict[str, str]] = {i: {} for i in ids}
        for t in s.scalars(
            select(ModelVersionTagRow).where(ModelVersionTagRow.version_id.in_(ids))
        ):
            tags[t.version_id][t.key] = t.value
        links: dict[str, list[DatasetLink]] = {i: [] for i in ids}
        for d in s.scalars(
            select(ModelVersionDatasetRow).where(ModelVersionDatasetRow.version_id.in_(ids))
        ):
            links[d.version_id].append(DatasetLink(dataset_id=d.dataset_id, role=d.role))
        by_version: dict[int, list[str]] = {}
        for a in s.scalars(select(ModelAliasRow).where(ModelAliasRow.model_id == rows[0].model_id)):
            by_version.setdefault(a.version, []).append(a.alias)
        return [
            self._version_entity(
                r, name, tags[r.id], sorted(by_version.get(r.version, [])), links[r.id]
            )
            for r in rows
        ]

    @staticmethod
    def _version_entity(
        r: ModelVersionRow,
        name: str,
        tags: dict[str, str],
        aliases: list[str],
        links: list[DatasetLink],
    ) -> ModelVersion:
        return ModelVersion(
            id=r.id,
            model=name,
            version=r.version,
            manifest_digest=r.manifest_digest,
            format=r.format,
            signature=r.manifest.get("signature", {}),
            manifest=r.manifest,
            description=r.description,
            tags=tags,
            aliases=aliases,
            status=r.status,
            run_id=r.run_id,
            datasets=links,
            source=r.source,
            created_at=r.created_at,
            created_by=r.created_by,
        )
