"""Experiments: create, find, search, rename, tag, archive and restore.

An archived experiment is MLflow's "deleted" one: kept with its runs, hidden from active
searches, refusing new runs, and restored at will. Its name stays taken meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from ulid import ULID

from modelyard.errors import AlreadyExists, InvalidInput, NotFound
from modelyard.page import MAX_LIMIT, Page, check_limit, decode_token
from modelyard.store import Tx
from modelyard.store.tables import ExperimentRow, ExperimentTagRow, RunRow
from modelyard.tracking import search
from modelyard.tracking.entities import Experiment, Lifecycle
from modelyard.tracking.rows import TrackingRows, experiment_entity, stringify


def check_experiment_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 256:
        raise InvalidInput("experiment name must be 1-256 characters and not only spaces")
    if any(ord(c) < 32 for c in name):
        raise InvalidInput(f"experiment name {name!r} contains control characters; remove them")
    return name


class TrackingExperiments(TrackingRows):
    """The experiment operations of :class:`~modelyard.tracking.service.TrackingService`."""

    def create_experiment(
        self,
        name: str,
        *,
        description: str = "",
        project: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> Experiment:
        """Create an experiment, optionally linked to a project by name."""
        check_experiment_name(name)
        tag_values = stringify(tags, "tag")
        project_id = self.ws.projects.resolve_id(project) if project else None
        with self.store.write(self.ws.actor) as tx:
            row = self._insert_experiment(tx, name, description, project_id)
            if tag_values:
                tx.session.flush()  # the experiment before its tags (no ORM relationship)
                tx.session.add_all(
                    ExperimentTagRow(experiment_id=row.id, key=k, value=v)
                    for k, v in tag_values.items()
                )
                tx.record("experiment.set_tags", "experiment", name, after=tag_values)
        return experiment_entity(row, project, tag_values)

    def get_experiment(self, name_or_id: str) -> Experiment:
        with self.store.read() as s:
            return self._experiments(s, [self._experiment_row(s, name_or_id)])[0]

    def get_experiment_by_id(self, experiment_id: str) -> Experiment:
        """The experiment with id ``experiment_id`` (a name is not looked up)."""
        with self.store.read() as s:
            return self._experiments(s, [self._experiment_by_id(s, experiment_id)])[0]

    def list_experiments(
        self,
        *,
        q: str | None = None,
        project: str | None = None,
        limit: int = 100,
        page_token: str | None = None,
    ) -> Page[Experiment]:
        """Experiments by name; ``q`` matches a substring of the name or description."""
        offset = decode_token(page_token)
        check_limit(limit)
        query = select(ExperimentRow).order_by(ExperimentRow.name)
        if q:
            query = query.where(
                or_(
                    ExperimentRow.name.icontains(q, autoescape=True),
                    ExperimentRow.description.icontains(q, autoescape=True),
                )
            )
        if project:
            query = query.where(ExperimentRow.project_id == self.ws.projects.resolve_id(project))
        with self.store.read() as s:
            rows = s.scalars(query.offset(offset).limit(limit + 1)).all()
            items = self._experiments(s, rows[:limit])
        return Page.of(items, offset, limit, more=len(rows) > limit)

    def search_experiments(
        self,
        *,
        filter_string: str = "",
        order_by: str | Sequence[str] | None = None,
        lifecycle: Lifecycle = "active",
        limit: int = 100,
        page_token: str | None = None,
    ) -> Page[Experiment]:
        """Experiments matching ``filter_string``, newest first unless ``order_by``.

        The filter compares ``name`` (``= != like ilike``), ``id`` (also ``in``), tags
        (``tags.team = 'fraud'``, ``is null``) and ``creation_time`` (milliseconds since the
        epoch), clauses joined by ``and``; see :mod:`modelyard.tracking.search`.
        ``lifecycle`` picks active, deleted (archived) or all experiments.
        """
        offset = decode_token(page_token)
        check_limit(limit)
        clauses = search.parse_filter(filter_string, search.EXPERIMENT_FIELDS)
        orderings = search.parse_order_by(order_by, search.EXPERIMENT_FIELDS) or [
            search.Ordering("attributes", "creation_time", descending=True)
        ]
        query = select(ExperimentRow).where(*(search.experiment_condition(c) for c in clauses))
        if lifecycle != "all":
            query = query.where(ExperimentRow.archived.is_(lifecycle == "deleted"))
        query = query.order_by(
            *(search.experiment_order_column(o) for o in orderings), ExperimentRow.id
        )
        with self.store.read() as s:
            rows = s.scalars(query.offset(offset).limit(limit + 1)).all()
            items = self._experiments(s, rows[:limit])
        return Page.of(items, offset, limit, more=len(rows) > limit)

    def count_runs(self, experiment_ids: Sequence[str]) -> dict[str, int]:
        """How many runs each experiment has, in one grouped query (absent ids count 0)."""
        ids = list(dict.fromkeys(experiment_ids))
        if len(ids) > MAX_LIMIT:
            raise InvalidInput(f"count runs of at most {MAX_LIMIT} experiments at once")
        counts = dict.fromkeys(ids, 0)
        if ids:
            with self.store.read() as s:
                counts.update(
                    s.execute(
                        select(RunRow.experiment_id, func.count())
                        .where(RunRow.experiment_id.in_(ids))
                        .group_by(RunRow.experiment_id)
                    )
                    .tuples()
                    .all()
                )
        return counts

    def get_or_create_experiment(self, name: str) -> Experiment:
        """The experiment called ``name``, created if it does not exist yet."""
        try:
            return self.get_experiment(name)
        except NotFound:
            pass
        try:
            return self.create_experiment(name)
        except (AlreadyExists, IntegrityError):  # created concurrently by someone else
            return self.get_experiment(name)

    def rename_experiment(self, experiment_id: str, new_name: str) -> Experiment:
        """Give the experiment ``experiment_id`` the name ``new_name`` (not taken)."""
        check_experiment_name(new_name)
        with self.store.write(self.ws.actor) as tx:
            row = self._experiment_by_id(tx.session, experiment_id)
            if row.name != new_name:
                self._check_name_free(tx, new_name)
                tx.record(
                    "experiment.rename",
                    "experiment",
                    row.name,
                    {"name": row.name},
                    {"name": new_name},
                )
                row.name = new_name
            return self._experiments(tx.session, [row])[0]

    def archive_experiment(self, experiment_id: str) -> None:
        """Archive (MLflow: delete) an experiment: kept, hidden, closed to new runs."""
        self._set_archived(experiment_id, True)

    def restore_experiment(self, experiment_id: str) -> None:
        """Bring an archived experiment back into use."""
        self._set_archived(experiment_id, False)

    def _set_archived(self, experiment_id: str, archived: bool) -> None:
        with self.store.write(self.ws.actor) as tx:
            row = self._experiment_by_id(tx.session, experiment_id)
            if row.archived != archived:
                action = "experiment.archive" if archived else "experiment.restore"
                tx.record(
                    action,
                    "experiment",
                    row.name,
                    {"archived": row.archived},
                    {"archived": archived},
                )
                row.archived = archived

    def set_experiment_tags(self, experiment_id: str, tags: Mapping[str, Any]) -> None:
        """Set tags (as strings) on the experiment ``experiment_id``."""
        values = stringify(tags, "tag")
        if not values:
            return
        with self.store.write(self.ws.actor) as tx:
            exp = self._experiment_by_id(tx.session, experiment_id)
            rows = {
                r.key: r
                for r in tx.session.scalars(
                    select(ExperimentTagRow).where(
                        ExperimentTagRow.experiment_id == exp.id,
                        ExperimentTagRow.key.in_(values),
                    )
                )
            }
            before: dict[str, str | None] = {}
            after: dict[str, str] = {}
            for key, value in values.items():
                row = rows.get(key)
                if row is not None and row.value == value:
                    continue
                before[key] = None if row is None else row.value
                after[key] = value
                if row is None:
                    tx.session.add(ExperimentTagRow(experiment_id=exp.id, key=key, value=value))
                else:
                    row.value = value
            if after:
                tx.record("experiment.set_tags", "experiment", exp.name, before, after)

    def delete_experiment_tag(self, experiment_id: str, key: str) -> None:
        """Remove tag ``key`` from the experiment (:class:`NotFound` if it has no such tag)."""
        with self.store.write(self.ws.actor) as tx:
            exp = self._experiment_by_id(tx.session, experiment_id)
            row = tx.session.get(ExperimentTagRow, (exp.id, key))
            if row is None:
                raise NotFound(f"experiment {exp.name!r} has no tag {key!r}")
            tx.record("experiment.delete_tag", "experiment", exp.name, {key: row.value}, None)
            tx.session.execute(
                delete(ExperimentTagRow).where(
                    ExperimentTagRow.experiment_id == exp.id, ExperimentTagRow.key == key
                )
            )

    def _check_name_free(self, tx: Tx, name: str) -> None:
        taken = tx.session.scalar(select(ExperimentRow.archived).where(ExperimentRow.name == name))
        if taken is not None:
            state = " (archived: restore it instead)" if taken else ""
            raise AlreadyExists(f"experiment {name!r} exists already{state}; pick another name")

    def _insert_experiment(
        self, tx: Tx, name: str, description: str, project_id: str | None
    ) -> ExperimentRow:
        self._check_name_free(tx, name)
        row = ExperimentRow(
            id=str(ULID()),
            name=name,
            description=description,
            project_id=project_id,
            archived=False,
            created_at=datetime.now(UTC),
        )
        tx.session.add(row)
        tx.record(
            "experiment.create",
            "experiment",
            name,
            after={"id": row.id, "description": description, "project_id": project_id},
        )
        return row
