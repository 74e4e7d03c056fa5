"""Who may do what, where: roles held on the workspace, a project or a model.

A user's own role (``users.role``) holds on the whole workspace. A *role binding* adds a
role for a user or a group (from an OIDC token's groups claim) on the workspace, on one
project (every model of it) or on one model. Bindings only add permissions, never remove
them, so the permissions a caller has on a model are the union of their workspace role and
every binding on the workspace, the model's project and the model.

Domain services ask :meth:`AccessService.require` before a change, so the HTTP API, the CLI
and the SDK refuse the same things with the same message. In-process callers (the CLI and
SDK on a local path or database URL) act as a trusted local operator unless they are a
registered user (see :attr:`modelyard.workspace.Workspace.identity`).
"""

from __future__ import annotations

import builtins
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel
from sqlalchemy import select
from ulid import ULID

from modelyard.errors import AlreadyExists, Forbidden, InvalidInput, NotFound
from modelyard.governance.entities import Identity, Permission, Role
from modelyard.store.tables import RoleBindingRow

if TYPE_CHECKING:
    from modelyard.store import Tx
    from modelyard.workspace import Workspace

__all__ = ["AccessService", "RoleBinding", "Scope", "parse_scope", "parse_subject"]

_NAME = r"[A-Za-z0-9][A-Za-z0-9._@-]{0,255}"
_SUBJECT = re.compile(rf"^(user|group):({_NAME})$")
_SCOPE = re.compile(rf"^(project|model):({_NAME})$")
WORKSPACE = "workspace"
#: What :func:`parse_subject` and :func:`parse_scope` accept, for the OpenAPI document.
SUBJECT_PATTERN = rf"^((user|group):)?{_NAME}$"
SCOPE_PATTERN = rf"^(workspace|(project|model):{_NAME})$"


class RoleBinding(BaseModel):
    """``role`` held by ``subject`` (``user:NAME`` or ``group:NAME``) on ``scope``
    (``workspace``, ``project:NAME`` or ``model:NAME``)."""

    id: str
    subject: str
    role: Role
    scope: str
    created_at: datetime
    created_by: str = ""


class Scope(BaseModel):
    """Where a permission is asked for: the workspace, a project, or a model (and the
    project it belongs to)."""

    model: str | None = None
    project: str | None = None

    def names(self) -> list[str]:
        """The binding scopes that cover this one, widest first."""
        found = [WORKSPACE]
        if self.project:
            found.append(f"project:{self.project}")
        if self.model:
            found.append(f"model:{self.model}")
        return found

    def describe(self) -> str:
        if self.model:
            return f"model {self.model}"
        if self.project:
            return f"project {self.project}"
        return "the workspace"


def parse_subject(value: str) -> str:
    """``user:NAME`` or ``group:NAME``; a bare name is a user."""
    subject = value if ":" in value else f"user:{value}"
    if not _SUBJECT.match(subject):
        raise InvalidInput(
            f"{value!r} is not a subject; use user:NAME or group:NAME (letters, digits, "
            "'.', '_', '@', '-')"
        )
    return subject


def parse_scope(value: str) -> str:
    """``workspace``, ``project:NAME`` or ``model:NAME``."""
    if value == WORKSPACE or _SCOPE.match(value):
        return value
    raise InvalidInput(f"{value!r} is not a scope; use workspace, project:NAME or model:NAME")


class AccessService:
    """Grant roles on scopes, and check the workspace's caller against them."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws

    # --- checks -----------------------------------------------------------------------

    def require(
        self,
        permission: Permission,
        *,
        model: str | None = None,
        project: str | None = None,
        action: str = "",
    ) -> None:
        """:class:`Forbidden` unless the caller holds ``permission`` on the model (or
        project, or the workspace when neither is given); ``action`` names what was tried."""
        who = self.ws.identity
        if who.role.grants(permission):  # the common case: no query
            return
        scope = self._scope(model, project)
        roles = self.roles(scope, who)
        if any(role.grants(permission) for role in roles):
            return
        held = ", ".join(sorted(r.value for r in roles)) or "none"
        granting = [r.value for r in Role if r.grants(permission)]
        needs = "role admin" if len(granting) == 1 else f"role {', '.join(granting[:-1])} or admin"
        raise Forbidden(
            f"{who.name} may not {action or permission.value} on {scope.describe()}: "
            f"that needs the {permission.value} permission ({needs}) and "
            f"{who.name} holds {held} there; an admin can grant it with `modelyard roles "
            f"bind user:{who.name} ROLE --scope {scope.names()[-1]}`"
        )

    def allowed(
        self, permission: Permission, *, model: str | None = None, project: str | None = None
    ) -> bool:
        try:
            self.require(permission, model=model, project=project)
        except Forbidden:
            return False
        return True

    def roles(self, scope: Scope, who: Identity | None = None) -> set[Role]:
        """Every role ``who`` (default: the caller) holds on ``scope`` or a wider one."""
        who = who or self.ws.identity
        subjects = [f"user:{who.name}", *(f"group:{g}" for g in who.groups)]
        with self.ws.store.read() as s:
            bound = s.scalars(
                select(RoleBindingRow.role).where(
                    RoleBindingRow.subject.in_(subjects), RoleBindingRow.scope.in_(scope.names())
                )
            ).all()
        return {who.role, *(Role(r) for r in bound)}

    def _scope(self, model: str | None, project: str | None) -> Scope:
        if model is not None and project is None:
            try:
                project = self.ws.registry.get_model(model).project
            except NotFound:
                project = None  # a model about to be created: its bindings may exist already
        return Scope(model=model, project=project)

    # --- bindings ---------------------------------------------------------------------

    def bind(self, subject: str, role: str | Role, scope: str = WORKSPACE) -> RoleBinding:
        """Grant ``role`` to ``subject`` on ``scope`` (admins of that scope only)."""
        subject, scope = parse_subject(subject), parse_scope(scope)
        role = _role(role)
        self._require_admin_of(scope, "grant roles")
        self._require_exists(subject, scope)
        with self.ws.store.write(self.ws.actor) as tx:
            exists = tx.session.scalar(
                select(RoleBindingRow.id).where(
                    RoleBindingRow.subject == subject,
                    RoleBindingRow.role == role.value,
                    RoleBindingRow.scope == scope,
                )
            )
            if exists:
                raise AlreadyExists(f"{subject} holds {role.value} on {scope} already ({exists})")
            row = RoleBindingRow(
                id=str(ULID()),
                subject=subject,
                role=role.value,
                scope=scope,
                created_at=datetime.now(UTC),
                created_by=self.ws.actor,
            )
            tx.session.add(row)
            tx.record(
                "role.bind",
                "role_binding",
                row.id,
                None,
                {"subject": subject, "role": role.value, "scope": scope},
            )
            return _binding(row)

    def unbind(self, binding_id: str) -> RoleBinding:
        """Take a binding away (admins of its scope only)."""
        with self.ws.store.read() as s:
            row = s.get(RoleBindingRow, binding_id)
            if row is None:
                raise NotFound(f"no role binding {binding_id!r}; `modelyard roles list` shows them")
            scope = row.scope
        self._require_admin_of(scope, "take roles away")
        with self.ws.store.write(self.ws.actor) as tx:
            row = tx.session.get(RoleBindingRow, binding_id)
            if row is None:
                raise NotFound(f"no role binding {binding_id!r}; `modelyard roles list` shows them")
            binding = _binding(row)
            tx.session.delete(row)
            tx.record(
                "role.unbind",
                "role_binding",
                binding_id,
                {"subject": binding.subject, "role": binding.role.value, "scope": binding.scope},
                None,
            )
        from modelyard.governance.identity import Identities

        Identities.changes += 1  # cached identities do not carry bindings; harmless, explicit
        return binding

    def list(
        self, subject: str | None = None, scope: str | None = None
    ) -> builtins.list[RoleBinding]:
        """Bindings, optionally of one subject or on one scope."""
        query = select(RoleBindingRow).order_by(RoleBindingRow.scope, RoleBindingRow.subject)
        if subject is not None:
            query = query.where(RoleBindingRow.subject == parse_subject(subject))
        if scope is not None:
            query = query.where(RoleBindingRow.scope == parse_scope(scope))
        with self.ws.store.read() as s:
            return [_binding(r) for r in s.scalars(query)]

    @staticmethod
    def drop_scope(tx: Tx, scope: str) -> None:
        """Remove every binding on ``scope``, in the transaction that deletes what it names
        (each removal an audit record)."""
        rows = tx.session.scalars(select(RoleBindingRow).where(RoleBindingRow.scope == scope))
        for row in rows.all():
            tx.session.delete(row)
            tx.record(
                "role.unbind",
                "role_binding",
                row.id,
                {"subject": row.subject, "role": row.role, "scope": row.scope},
                None,
            )

    def _require_exists(self, subject: str, scope: str) -> None:
        """A grant to a user or on a model that does not exist would wait, unseen, for
        someone to create one of that name: refused. Users of an identity provider (OIDC)
        are not registered here, so with OIDC on any user name is taken."""
        kind, _, name = scope.partition(":")
        if kind == "model":
            self.ws.registry.get_model(name)  # NotFound says so
        elif kind == "project":
            self.ws.projects.get(name)
        who_kind, _, who = subject.partition(":")
        if who_kind == "user" and not self.ws.settings.oidc_issuer:
            self.ws.identities.get_user(who)

    def _require_admin_of(self, scope: str, action: str) -> None:
        kind, _, name = scope.partition(":")
        self.require(
            Permission.admin,
            model=name if kind == "model" else None,
            project=name if kind == "project" else None,
            action=action,
        )


def _role(value: str | Role) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidInput(
            f"unknown role {value!r}; use one of: {', '.join(r.value for r in Role)}"
        ) from None


def _binding(row: RoleBindingRow) -> RoleBinding:
    return RoleBinding(
        id=row.id,
        subject=row.subject,
        role=Role(row.role),
        scope=row.scope,
        created_at=row.created_at,
        created_by=row.created_by,
    )
