"""The registry's rows and how they become entities, shared by every part of the service.

:class:`RegistryRows` is the base of :class:`~modelyard.registry.service.RegistryService`
and of its parts (aliases.py, cards.py): it finds a model's or a version's row (NotFound
with what to do when there is none) and builds ``RegisteredModel`` and ``ModelVersion``
from rows, a whole list in a few queries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from modelyard.errors import Conflict, NotFound
from modelyard.registry.entities import DatasetLink, ModelVersion, RegisteredModel
from modelyard.registry.uri import check_version
from modelyard.store.tables import (
    ModelAliasRow,
    ModelTagRow,
    ModelVersionDatasetRow,
    ModelVersionRow,
    ModelVersionTagRow,
    RegisteredModelRow,
)

if TYPE_CHECKING:
    from modelyard.store import Store
    from modelyard.workspace import Workspace


class RegistryRows:
    """Rows to entities: the lookups and conversions the registry's parts share."""

    ws: Workspace
    store: Store

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
            updated_at=r.updated_at,
            created_by=r.created_by,
        )
