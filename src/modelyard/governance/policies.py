"""Alias policies: which aliases are protected, and what moving one requires.

A policy sits on a model (``model:fraud``) or on a project (``project:payments``: every model
of it) and protects aliases by name or pattern (``champion``, ``prod*``; ``champion`` when
none are named). Moving a protected alias (setting it, or creating it) requires everything
each policy that covers it asks for:

- ``role``: the mover holds this role's permissions on the model (``deployer`` by default);
- ``approvals``: that many people other than the mover approved the move, as the approval
  of ``models:/NAME/VERSION@ALIAS`` (four eyes at ``1``, the default);
- ``gates``: the move is a pipeline promotion whose quality gates all passed.

Deleting a protected alias takes an admin of the model. The registry asks
:meth:`PolicyService.check_move` inside every alias change, so the API, the CLI, the SDK and
pipelines are refused alike, with a 403 that names the policy and says what is missing.
"""

from __future__ import annotations

import builtins
import fnmatch
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field
from sqlalchemy import select
from ulid import ULID

from modelyard.errors import Forbidden, InvalidInput, NotFound
from modelyard.governance.access import Scope, parse_scope
from modelyard.governance.entities import Permission, Role
from modelyard.store.tables import AliasPolicyRow

if TYPE_CHECKING:
    from modelyard.workspace import Workspace

__all__ = ["AliasPolicy", "MoveClearance", "PolicyService", "move_subject"]

POLICY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
POLICY_SCOPE = r"^(project|model):[A-Za-z0-9][A-Za-z0-9._@-]{0,255}$"
ALIAS_PATTERN = re.compile(r"^[A-Za-z0-9_*?\[\]-][A-Za-z0-9_.*?\[\]-]{0,255}$")
MAX_APPROVALS = 10
DEFAULT_ALIASES = ("champion",)


class AliasPolicy(BaseModel):
    """What moving the ``aliases`` of the models in ``scope`` requires."""

    id: str
    name: str
    scope: str = Field(description="model:NAME or project:NAME")
    aliases: list[str] = Field(description="alias names or patterns (fnmatch)")
    role: Role = Role.deployer
    approvals: int = Field(default=1, ge=0, le=MAX_APPROVALS)
    gates: bool = False
    created_at: datetime
    updated_at: datetime
    created_by: str = ""

    def covers(self, alias: str) -> bool:
        return any(fnmatch.fnmatchcase(alias, pattern) for pattern in self.aliases)

    def describe(self) -> str:
        needs = [f"role {self.role.value}"]
        if self.approvals:
            needs.append(f"{self.approvals} approval{'s' if self.approvals > 1 else ''}")
        if self.gates:
            needs.append("passing quality gates")
        return ", ".join(needs)


@dataclass
class MoveClearance:
    """What let an alias move: the policies that covered it and the approvals used."""

    policies: list[str] = field(default_factory=list)
    approvals: list[str] = field(default_factory=list)


def move_subject(model: str, version: int, alias: str) -> str:
    """What an approval of moving ``alias`` of ``model`` to ``version`` is about."""
    return f"models:/{model}/{version}@{alias}"


class PolicyService:
    """Declare alias policies and check alias moves against them."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws

    def set(
        self,
        name: str,
        scope: str,
        *,
        aliases: builtins.list[str] | None = None,
        role: str | Role = Role.deployer,
        approvals: int = 1,
        gates: bool = False,
    ) -> AliasPolicy:
        """Create policy ``name``, or replace it; admins of ``scope`` only."""
        if not isinstance(name, str) or not POLICY_NAME.match(name):
            raise InvalidInput(
                f"policy name {name!r} is not valid; use up to 128 letters, digits, '.', '_', '-'"
            )
        scope = parse_scope(scope)
        if scope == "workspace":
            raise InvalidInput(
                "an alias policy is on a model or a project: model:NAME or project:NAME"
            )
        patterns = list(aliases) if aliases else list(DEFAULT_ALIASES)
        for pattern in patterns:
            if not isinstance(pattern, str) or not ALIAS_PATTERN.match(pattern):
                raise InvalidInput(f"{pattern!r} is not an alias name or pattern")
        try:
            role = Role(role)
        except ValueError:
            raise InvalidInput(
                f"unknown role {role!r}; use one of: {', '.join(r.value for r in Role)}"
            ) from None
        if isinstance(approvals, bool) or not isinstance(approvals, int):
            raise InvalidInput("approvals is a whole number")
        if not 0 <= approvals <= MAX_APPROVALS:
            raise InvalidInput(f"approvals must be between 0 and {MAX_APPROVALS}")
        self._require_admin(scope)
        now = datetime.now(UTC)
        state = {
            "scope": scope,
            "aliases": patterns,
            "role": role.value,
            "approvals": approvals,
            "gates": bool(gates),
        }
        with self.ws.store.write(self.ws.actor) as tx:
            row = tx.session.scalar(select(AliasPolicyRow).where(AliasPolicyRow.name == name))
            before = None
            if row is None:
                row = AliasPolicyRow(
                    id=str(ULID()), name=name, created_at=now, created_by=self.ws.actor
                )
                tx.session.add(row)
            else:
                before = _state(row)
                if row.scope != scope:
                    self._require_admin(row.scope)  # moving a policy away needs both scopes
            row.scope, row.aliases, row.role = scope, patterns, role.value
            row.approvals, row.gates, row.updated_at = approvals, bool(gates), now
            tx.record("policy.set", "alias_policy", name, before, state)
            return _policy(row)

    def get(self, name: str) -> AliasPolicy:
        with self.ws.store.read() as s:
            row = s.scalar(select(AliasPolicyRow).where(AliasPolicyRow.name == name))
            if row is None:
                raise NotFound(f"no alias policy {name!r}; `modelyard policies list` shows them")
            return _policy(row)

    def list(self, scope: str | None = None) -> builtins.list[AliasPolicy]:
        query = select(AliasPolicyRow).order_by(AliasPolicyRow.name)
        if scope is not None:
            query = query.where(AliasPolicyRow.scope == parse_scope(scope))
        with self.ws.store.read() as s:
            return [_policy(r) for r in s.scalars(query)]

    def delete(self, name: str) -> None:
        """Remove a policy; admins of its scope only."""
        policy = self.get(name)
        self._require_admin(policy.scope)
        with self.ws.store.write(self.ws.actor) as tx:
            row = tx.session.scalar(select(AliasPolicyRow).where(AliasPolicyRow.name == name))
            if row is None:
                raise NotFound(f"no alias policy {name!r}; `modelyard policies list` shows them")
            tx.session.delete(row)
            tx.record("policy.delete", "alias_policy", name, _state(row), None)

    def covering(
        self, model: str, alias: str, project: str | None = None
    ) -> builtins.list[AliasPolicy]:
        """The policies that protect ``alias`` of ``model`` (in ``project``)."""
        scopes = [f"model:{model}"] + ([f"project:{project}"] if project else [])
        with self.ws.store.read() as s:
            rows = s.scalars(
                select(AliasPolicyRow)
                .where(AliasPolicyRow.scope.in_(scopes))
                .order_by(AliasPolicyRow.name)
            ).all()
            return [p for p in map(_policy, rows) if p.covers(alias)]

    def governs(self, model: str, project: str | None = None) -> bool:
        """Whether any alias policy covers some alias of ``model`` (in ``project``)."""
        scopes = [f"model:{model}"] + ([f"project:{project}"] if project else [])
        with self.ws.store.read() as s:
            found = s.scalar(
                select(AliasPolicyRow.id).where(AliasPolicyRow.scope.in_(scopes)).limit(1)
            )
        return found is not None

    def governs_project(self, project: str) -> bool:
        """Whether an alias policy sits on ``project`` (and so on every model in it)."""
        with self.ws.store.read() as s:
            found = s.scalar(
                select(AliasPolicyRow.id).where(AliasPolicyRow.scope == f"project:{project}")
            )
        return found is not None

    def check_routing(self, uri: str) -> None:
        """:class:`Forbidden` unless the caller may send an endpoint's traffic to ``uri``.

        On a model an alias policy governs, a protected alias is the way in (its moves are
        checked); a version number or another alias takes the deploy permission on the
        model, or traffic would reach a version no approval cleared.
        """
        from modelyard.registry.uri import parse_model_uri

        ref = parse_model_uri(uri)
        try:
            project = self.ws.registry.get_model(ref.name).project
        except NotFound:
            return  # resolving the URI reports it
        if not self.governs(ref.name, project):
            return
        if ref.alias is not None and self.covering(ref.name, ref.alias, project):
            return
        self.ws.access.require(
            Permission.deploy,
            model=ref.name,
            project=project,
            action=f"send an endpoint's traffic to {uri} (alias policies govern {ref.name}: "
            "point endpoints at a protected alias, or ask a deployer)",
        )

    def approvals_required(self, model: str, alias: str, project: str | None = None) -> int:
        """How many approvers a move of ``alias`` needs: the most any covering policy asks."""
        return max((p.approvals for p in self.covering(model, alias, project)), default=1)

    def check_move(
        self,
        model: str,
        alias: str,
        version: int | None,
        *,
        project: str | None = None,
        gates_passed: bool = False,
    ) -> MoveClearance:
        """:class:`Forbidden`, naming the policy and what is missing, unless the caller may
        point ``alias`` of ``model`` at ``version`` (None: delete the alias)."""
        policies = self.covering(model, alias, project)
        clearance = MoveClearance(policies=[p.name for p in policies])
        if not policies:
            return clearance
        who = self.ws.identity
        scope = Scope(model=model, project=project)
        held: set[Permission] = set()
        for role in self.ws.access.roles(scope, who):
            held |= role.permissions
        for policy in policies:
            prefix = (
                f"@{alias} of {model} is protected by policy {policy.name!r} ({policy.describe()})"
            )
            if version is None:
                if Permission.admin not in held:
                    raise Forbidden(f"{prefix}: only an admin of {model} may delete it")
                continue
            if not policy.role.permissions <= held:
                raise Forbidden(
                    f"{prefix}: {who.name} does not hold role {policy.role.value} on {model}; "
                    f"an admin can grant it with `modelyard roles bind user:{who.name} "
                    f"{policy.role.value} --scope model:{model}`"
                )
            if policy.gates and not gates_passed:
                raise Forbidden(
                    f"{prefix}: it moves only through a pipeline promotion whose quality "
                    f"gates pass (`modelyard pipelines promote ...`), not directly"
                )
            if policy.approvals:
                approval, missing = self._approval(
                    model, version, alias, policy.approvals, who.name
                )
                if approval is None:
                    raise Forbidden(f"{prefix}: {missing}")
                if approval not in clearance.approvals:
                    clearance.approvals.append(approval)
        return clearance

    def _approval(
        self, model: str, version: int, alias: str, needed: int, mover: str
    ) -> tuple[str | None, str]:
        """The id of an approval that clears the move, or None and what is missing."""
        subject = move_subject(model, version, alias)
        latest = self.ws.approvals.latest(subject)
        how = (
            f"request it with `modelyard approvals request {subject}`, then an approver runs "
            "`modelyard approvals approve ID`"
        )
        if latest is None:
            return None, f"moving it to v{version} needs {needed} approval(s) of {subject}; {how}"
        if latest.status == "pending":
            have = len(latest.approved_by)
            return None, (
                f"approval {latest.id} of {subject} is pending ({have} of {latest.required} "
                f"approvers so far); an approver runs `modelyard approvals approve {latest.id}`"
            )
        if latest.status == "approved" and latest.used_at is not None:
            when = f"{latest.used_at:%Y-%m-%d %H:%M} UTC"
            return None, (
                f"approval {latest.id} of {subject} was used by {latest.used_by} at {when} "
                f"(an approval clears one move); {how}"
            )
        if latest.status == "rejected":
            why = f"was rejected by {latest.decided_by}"
            return None, f"approval {latest.id} of {subject} {why}; {how}"
        others = [a for a in (latest.approved_by or [latest.decided_by]) if a != mover]
        if len(others) < needed:
            return None, (
                f"approval {latest.id} of {subject} has {len(others)} approver(s) other than "
                f"{mover}; {needed} needed (four eyes: the mover's own approval does not count)"
            )
        return latest.id, ""

    def _require_admin(self, scope: str) -> None:
        kind, _, name = scope.partition(":")
        self.ws.access.require(
            Permission.admin,
            model=name if kind == "model" else None,
            project=name if kind == "project" else None,
            action="change alias policies",
        )


def _state(row: AliasPolicyRow) -> dict[str, object]:
    return {
        "scope": row.scope,
        "aliases": list(row.aliases),
        "role": row.role,
        "approvals": row.approvals,
        "gates": row.gates,
    }


def _policy(row: AliasPolicyRow) -> AliasPolicy:
    return AliasPolicy(
        id=row.id,
        name=row.name,
        scope=row.scope,
        aliases=list(row.aliases),
        role=Role(row.role),
        approvals=row.approvals,
        gates=row.gates,
        created_at=row.created_at,
        updated_at=row.updated_at,
        created_by=row.created_by,
    )
