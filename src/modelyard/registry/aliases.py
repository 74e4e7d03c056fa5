"""Aliases of a model (``champion``, ``challenger``...): set, read, delete, and their history.

A move is one atomic upsert, so readers see the old version or the new one, never none.
A protected alias moves only as the alias policies covering it allow
(governance/policies.py); every move goes to the audit chain, which is also where its
history is read from (registry/history.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from modelyard.errors import Conflict, InvalidInput, NotFound
from modelyard.governance.approvals import ApprovalService
from modelyard.governance.entities import Permission
from modelyard.registry.entities import Alias
from modelyard.registry.rows import RegistryRows
from modelyard.registry.uri import check_alias
from modelyard.store.tables import ModelAliasRow, RegisteredModelRow

if TYPE_CHECKING:
    from modelyard.governance.policies import MoveClearance
    from modelyard.registry.entities import RegisteredModel
    from modelyard.registry.history import AliasAt, AliasHistory
    from modelyard.store.db import Tx

#: The longest reason an alias move may give (it goes to the audit record).
MAX_REASON = 2000


class RegistryAliases(RegistryRows):
    """The alias operations of :class:`~modelyard.registry.service.RegistryService`."""

    if TYPE_CHECKING:  # defined by RegistryService; declared here for the type checker

        def get_model(self, name: str) -> RegisteredModel: ...

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        reason: str = "",
        gates_passed: bool = False,
        tx: Tx | None = None,
    ) -> Alias:
        """Point ``alias`` at ``version`` in one atomic step; readers see old or new.

        A protected alias (governance/policies.py) moves only as its policies allow: a 403
        names the policy and what is missing. ``reason`` goes to the audit record;
        ``gates_passed`` is for a pipeline promotion whose quality gates all passed. In
        ``tx`` (a transaction of this store the caller commits), the move commits with the
        caller's other changes, or not at all.
        """
        check_alias(alias)
        if len(reason) > MAX_REASON:
            raise InvalidInput(f"a reason is at most {MAX_REASON} characters")
        clearance = self._clear_move(name, alias, version, gates_passed=gates_passed)
        if tx is not None:
            return self._move(tx, name, alias, version, reason, clearance, gates_passed)
        with self.store.write(self.ws.actor) as own:
            return self._move(own, name, alias, version, reason, clearance, gates_passed)

    def _move(
        self,
        tx: Tx,
        name: str,
        alias: str,
        version: int,
        reason: str,
        clearance: MoveClearance,
        gates_passed: bool,
    ) -> Alias:
        now = datetime.now(UTC)
        model = self._model_row(tx.session, name)
        row = self._version_row(tx.session, model, version)
        if row.status != "ready":
            raise Conflict(f"{name} v{version} is archived; restore it before giving it an alias")
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
            # each approval clears one move: used now, with the move, or not at all
            ApprovalService.consume(tx, clearance.approvals, self.ws.actor)
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

    def check_alias_move(
        self, name: str, alias: str, version: int | None, *, gates_passed: bool = False
    ) -> None:
        """:class:`Forbidden` (naming what is missing) unless the caller could move ``alias``
        to ``version`` (None: delete it) now; nothing moves and no approval is used."""
        self._clear_move(name, alias, version, gates_passed=gates_passed)

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
