"""Searching models and versions by conditions on their fields and tags, in any order.

An adapter translates its own query language (MLflow's ``name LIKE '%fraud%' AND
tags.team = 'risk'``) into :class:`Match` and :class:`Order` values; this module turns them
into SQL, so a search reads only the page it returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Select, func, select

from modelyard.errors import InvalidInput
from modelyard.page import Page, check_limit, decode_token
from modelyard.registry.rows import RegistryRows
from modelyard.store.tables import (
    ModelTagRow,
    ModelVersionDatasetRow,
    ModelVersionRow,
    ModelVersionTagRow,
    RegisteredModelRow,
)

if TYPE_CHECKING:
    from modelyard.registry.entities import ModelVersion, RegisteredModel

Op = Literal["=", "!=", "<", "<=", ">", ">=", "like", "ilike", "in", "not in"]
TAG = "tag:"

#: What a model search matches and sorts on ("tag:KEY" matches a tag's value).
MODEL_FIELDS = ("name", "created_at", "updated_at")
#: What a version search matches and sorts on.
VERSION_FIELDS = ("name", "version", "run_id", "source", "created_at", "updated_at")


@dataclass(frozen=True)
class Match:
    """One condition: ``field op value``; ``field`` is a field name or ``"tag:KEY"``.

    ``tag:KEY != value`` holds where the tag is missing too (MLflow's client leaves its
    prompts out with ``tags.`mlflow.prompt.is_prompt` != 'true'``).
    """

    field: str
    op: Op
    value: str | int | tuple[str, ...]


@dataclass(frozen=True)
class Order:
    """One sort key: a field name, ascending or not."""

    field: str
    ascending: bool = True


def _compare(column: Any, op: Op, value: Any) -> Any:
    if op == "in":
        return column.in_(list(value))
    if op == "not in":
        return column.not_in(list(value))
    if op == "like":
        return column.like(value)
    if op == "ilike":
        return func.lower(column).like(str(value).lower())
    comparisons = {
        "=": column.__eq__,
        "!=": column.__ne__,
        "<": column.__lt__,
        "<=": column.__le__,
        ">": column.__gt__,
        ">=": column.__ge__,
    }
    return comparisons[op](value)


def _unknown(field: str, fields: Sequence[str]) -> InvalidInput:
    return InvalidInput(f"cannot search on {field!r}; the fields are {', '.join(fields)} and tags")


def model_query(where: Sequence[Match], order_by: Sequence[Order]) -> Select[Any]:
    """The registered models (archived ones left out) matching ``where``, in order."""
    columns = {
        "name": RegisteredModelRow.name,
        "created_at": RegisteredModelRow.created_at,
        "updated_at": RegisteredModelRow.updated_at,
    }
    query = select(RegisteredModelRow).where(RegisteredModelRow.archived.is_(False))
    for match in where:
        if match.field.startswith(TAG):
            key = ModelTagRow.key == match.field.removeprefix(TAG)
            if match.op == "!=":
                same = select(ModelTagRow.model_id).where(key, ModelTagRow.value == match.value)
                query = query.where(RegisteredModelRow.id.not_in(same))
                continue
            tagged = select(ModelTagRow.model_id).where(
                key, _compare(ModelTagRow.value, match.op, match.value)
            )
            query = query.where(RegisteredModelRow.id.in_(tagged))
        elif match.field in columns:
            query = query.where(_compare(columns[match.field], match.op, match.value))
        else:
            raise _unknown(match.field, MODEL_FIELDS)
    keys = []
    for order in order_by:
        if order.field not in columns:
            raise _unknown(order.field, MODEL_FIELDS)
        column = columns[order.field]
        keys.append(column.asc() if order.ascending else column.desc())
    return query.order_by(*keys, RegisteredModelRow.name)


def version_query(
    where: Sequence[Match], order_by: Sequence[Order]
) -> Select[ModelVersionRow, str]:
    """Versions of any model, with their model's name, matching ``where``, in order (newest
    first unless ``order_by`` says otherwise)."""
    columns = {
        "name": RegisteredModelRow.name,
        "version": ModelVersionRow.version,
        "run_id": ModelVersionRow.run_id,
        "source": ModelVersionRow.source,
        "created_at": ModelVersionRow.created_at,
        "updated_at": ModelVersionRow.updated_at,
    }
    query = select(ModelVersionRow, RegisteredModelRow.name).join(
        RegisteredModelRow, RegisteredModelRow.id == ModelVersionRow.model_id
    )
    for match in where:
        if match.field.startswith(TAG):
            key = ModelVersionTagRow.key == match.field.removeprefix(TAG)
            if match.op == "!=":
                same = select(ModelVersionTagRow.version_id).where(
                    key, ModelVersionTagRow.value == match.value
                )
                query = query.where(ModelVersionRow.id.not_in(same))
                continue
            tagged = select(ModelVersionTagRow.version_id).where(
                key, _compare(ModelVersionTagRow.value, match.op, match.value)
            )
            query = query.where(ModelVersionRow.id.in_(tagged))
        elif match.field in columns:
            query = query.where(_compare(columns[match.field], match.op, match.value))
        else:
            raise _unknown(match.field, VERSION_FIELDS)
    keys = []
    for order in order_by:
        if order.field not in columns:
            raise _unknown(order.field, VERSION_FIELDS)
        column = columns[order.field]
        keys.append(column.asc() if order.ascending else column.desc())
    return query.order_by(*keys, ModelVersionRow.created_at.desc(), ModelVersionRow.id.desc())


class RegistrySearch(RegistryRows):
    """The searches of :class:`~modelyard.registry.service.RegistryService`."""

    def search_models(
        self,
        *,
        where: Sequence[Match] = (),
        order_by: Sequence[Order] = (),
        limit: int = 100,
        page_token: str | None = None,
    ) -> Page[RegisteredModel]:
        """Registered models (not archived ones) matching every condition of ``where``,
        sorted by ``order_by`` then by name."""
        check_limit(limit)
        offset = decode_token(page_token)
        query = model_query(where, order_by)
        with self.store.read() as s:
            rows = list(s.scalars(query.offset(offset).limit(limit + 1)))
            items = self._models(s, rows[:limit])
        return Page.of(items, offset, limit, more=len(rows) > limit)

    def search_versions(
        self,
        *,
        run_id: str | None = None,
        dataset_id: str | None = None,
        where: Iterable[Match] = (),
        order_by: Iterable[Order] = (),
        limit: int = 100,
        page_token: str | None = None,
    ) -> Page[ModelVersion]:
        """Versions of any model, newest first: those registered from tracking run
        ``run_id``, and (or) trained or evaluated on dataset version ``dataset_id`` (each
        one's ``datasets`` says in which role), and matching every condition of ``where``
        (see registry/search.py), sorted by ``order_by`` first."""
        check_limit(limit)
        offset = decode_token(page_token)
        query = version_query(list(where), list(order_by))
        if run_id is not None:
            query = query.where(ModelVersionRow.run_id == run_id)
        if dataset_id is not None:
            query = query.where(
                ModelVersionRow.id.in_(
                    select(ModelVersionDatasetRow.version_id).where(
                        ModelVersionDatasetRow.dataset_id == dataset_id
                    )
                )
            )
        with self.store.read() as s:
            found = s.execute(query.offset(offset).limit(limit + 1)).all()
            by_model: dict[str, list[ModelVersionRow]] = {}
            for row, name in found[:limit]:
                by_model.setdefault(name, []).append(row)
            # a model's versions are built together: a few queries per model, not per version
            built = {
                v.id: v for name, rows in by_model.items() for v in self._versions(s, name, rows)
            }
        items = [built[row.id] for row, _ in found[:limit]]
        return Page.of(items, offset, limit, more=len(found) > limit)
