"""Create, read, update and delete projects; resolve project names for other domains."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session
from ulid import ULID

from modelyard.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from modelyard.page import Page, check_limit, decode_token
from modelyard.projects.entities import KPI, Project, Stakeholder
from modelyard.store.tables import ExperimentRow, ProjectRow, RegisteredModelRow

if TYPE_CHECKING:
    from modelyard.workspace import Workspace

# Names appear in URLs (/projects/<name>), so they are kept URL-safe.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], items: Iterable[M | dict[str, Any]], what: str) -> list[M]:
    parsed = []
    for i, item in enumerate(items):
        try:
            parsed.append(model.model_validate(item))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidInput(f"{what} #{i + 1} is not valid ({problems})") from None
    return parsed


def _strings(items: Iterable[str], what: str) -> list[str]:
    values = list(items)
    if isinstance(items, str) or not all(isinstance(v, str) for v in values):
        raise InvalidInput(f"{what} must be a list of strings")
    return values


class ProjectService:
    """Projects: the use case behind models and experiments."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.store = ws.store

    def create(
        self,
        name: str,
        *,
        description: str = "",
        objective: str = "",
        kpis: Sequence[KPI | dict[str, Any]] = (),
        constraints: Sequence[str] = (),
        stakeholders: Sequence[Stakeholder | dict[str, Any]] = (),
    ) -> Project:
        """Create a project; :class:`AlreadyExists` if the name is taken."""
        if not NAME.match(name):
            raise InvalidInput(
                f"project name {name!r} is not valid; use up to 128 letters, digits, '.', '_', '-'"
                " starting with a letter or digit"
            )
        kpi_list = _parse(KPI, kpis, "KPI")
        people = _parse(Stakeholder, stakeholders, "stakeholder")
        now = datetime.now(UTC)
        with self.store.write(self.ws.actor) as tx:
            if tx.session.scalar(select(ProjectRow.id).where(ProjectRow.name == name)):
                raise AlreadyExists(f"project {name!r} exists already; pick another name")
            row = ProjectRow(
                id=str(ULID()),
                name=name,
                description=description,
                objective=objective,
                kpis=[k.model_dump() for k in kpi_list],
                constraints=_strings(constraints, "constraints"),
                stakeholders=[s.model_dump() for s in people],
                created_at=now,
                updated_at=now,
            )
            tx.session.add(row)
            project = _project(row)
            tx.record("project.create", "project", name, after=_state(project))
        return project

    def get(self, name: str) -> Project:
        with self.store.read() as s:
            return _project(self._row(s, name))

    def list(
        self, *, q: str | None = None, limit: int = 100, page_token: str | None = None
    ) -> Page[Project]:
        """Projects by name; ``q`` matches a substring of the name, description or objective."""
        offset = decode_token(page_token)
        check_limit(limit)
        query = select(ProjectRow).order_by(ProjectRow.name)
        if q:
            query = query.where(
                or_(
                    ProjectRow.name.icontains(q, autoescape=True),
                    ProjectRow.description.icontains(q, autoescape=True),
                    ProjectRow.objective.icontains(q, autoescape=True),
                )
            )
        with self.store.read() as s:
            rows = s.scalars(query.offset(offset).limit(limit + 1)).all()
            items = [_project(r) for r in rows[:limit]]
        return Page.of(items, offset, limit, more=len(rows) > limit)

    def update(
        self,
        name: str,
        *,
        description: str | None = None,
        objective: str | None = None,
        kpis: Sequence[KPI | dict[str, Any]] | None = None,
        constraints: Sequence[str] | None = None,
        stakeholders: Sequence[Stakeholder | dict[str, Any]] | None = None,
    ) -> Project:
        """Change the fields given (those not ``None``); the others keep their values."""
        changes: dict[str, Any] = {}
        if description is not None:
            changes["description"] = description
        if objective is not None:
            changes["objective"] = objective
        if kpis is not None:
            changes["kpis"] = [k.model_dump() for k in _parse(KPI, kpis, "KPI")]
        if constraints is not None:
            changes["constraints"] = _strings(constraints, "constraints")
        if stakeholders is not None:
            people = _parse(Stakeholder, stakeholders, "stakeholder")
            changes["stakeholders"] = [s.model_dump() for s in people]
        with self.store.write(self.ws.actor) as tx:
            row = self._row(tx.session, name)
            before = {k: getattr(row, k) for k in changes}
            if before == changes:
                return _project(row)
            for key, value in changes.items():
                setattr(row, key, value)
            row.updated_at = datetime.now(UTC)
            tx.record("project.update", "project", name, before, changes)
            return _project(row)

    def delete(self, name: str) -> None:
        """Delete a project no model or experiment links to; :class:`Conflict` otherwise."""
        with self.store.write(self.ws.actor) as tx:
            row = self._row(tx.session, name)
            # The one read of other domains' tables: a count of the rows that point here,
            # because the foreign keys would otherwise fail with an unhelpful database error.
            models = tx.session.scalar(
                select(func.count()).where(RegisteredModelRow.project_id == row.id)
            )
            experiments = tx.session.scalar(
                select(func.count()).where(ExperimentRow.project_id == row.id)
            )
            if models or experiments:
                raise Conflict(
                    f"project {name!r} is still linked to {models} model(s) and "
                    f"{experiments} experiment(s); unlink or delete them first"
                )
            before = _state(_project(row))
            tx.session.delete(row)
            tx.record("project.delete", "project", name, before=before)

    def resolve_id(self, name: str) -> str:
        """The id of project ``name``, for other domains that link to a project."""
        with self.store.read() as s:
            project_id = s.scalar(select(ProjectRow.id).where(ProjectRow.name == name))
        if project_id is None:
            raise NotFound(f"no project {name!r}; create it or see `modelyard projects list`")
        return project_id

    def names(self, ids: Iterable[str]) -> dict[str, str]:
        """``{id: name}`` for the given project ids (unknown ids are left out)."""
        wanted = set(ids)
        if not wanted:
            return {}
        with self.store.read() as s:
            query = select(ProjectRow.id, ProjectRow.name).where(ProjectRow.id.in_(wanted))
            return {pid: pname for pid, pname in s.execute(query)}

    @staticmethod
    def _row(session: Session, name: str) -> ProjectRow:
        row = session.scalar(select(ProjectRow).where(ProjectRow.name == name))
        if row is None:
            raise NotFound(f"no project {name!r}; `modelyard projects list` shows them")
        return row


def _project(row: ProjectRow) -> Project:
    return Project(
        id=row.id,
        name=row.name,
        description=row.description,
        objective=row.objective,
        kpis=[KPI.model_validate(k) for k in row.kpis],
        constraints=list(row.constraints),
        stakeholders=[Stakeholder.model_validate(s) for s in row.stakeholders],
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _state(project: Project) -> dict[str, Any]:
    return project.model_dump(mode="json", exclude={"created_at", "updated_at"})
