"""Users, roles and API tokens. Tokens are random secrets stored only as sha256 hashes."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session
from ulid import ULID

from modelyard.errors import AlreadyExists, InvalidInput, NotFound, Unauthenticated
from modelyard.governance.entities import Identity, IssuedToken, Role, Token, User
from modelyard.store import Store
from modelyard.store.tables import TokenRow, UserRow

TOKEN_PREFIX = "myd_"
LOCAL_USER = Identity(name="local", role=Role.admin)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidInput(
            f"unknown role {value!r}; use one of: {', '.join(r.value for r in Role)}"
        ) from None


class Identities:
    """Create users, issue and revoke tokens, and authenticate a presented token."""

    def __init__(self, store: Store, actor: str) -> None:
        self.store = store
        self.actor = actor

    def create_user(self, name: str, role: str | Role = Role.viewer) -> User:
        if not NAME.match(name):
            raise InvalidInput(
                f"user name {name!r} is not valid; use letters, digits, '.', '_', '@', '-'"
            )
        role = parse_role(role)
        with self.store.write(self.actor) as tx:
            if tx.session.scalar(select(UserRow).where(UserRow.name == name)):
                raise AlreadyExists(f"user {name!r} exists already")
            row = UserRow(
                id=str(ULID()),
                name=name,
                role=role.value,
                created_at=datetime.now(UTC),
                disabled=False,
            )
            tx.session.add(row)
            user = _user(row)
            tx.record("user.create", "user", name, after={"role": role.value})
        return user

    def get_user(self, name: str) -> User:
        with self.store.read() as s:
            return _user(self._user_row(s, name))

    def list_users(self) -> list[User]:
        with self.store.read() as s:
            return [_user(r) for r in s.scalars(select(UserRow).order_by(UserRow.name))]

    def set_role(self, name: str, role: str | Role) -> User:
        role = parse_role(role)
        with self.store.write(self.actor) as tx:
            row = self._user_row(tx.session, name)
            before = row.role
            row.role = role.value
            tx.record("user.set_role", "user", name, {"role": before}, {"role": role.value})
            return _user(row)

    def disable_user(self, name: str) -> User:
        with self.store.write(self.actor) as tx:
            row = self._user_row(tx.session, name)
            row.disabled = True
            tx.record("user.disable", "user", name, {"disabled": False}, {"disabled": True})
            return _user(row)

    def create_token(
        self, user: str, *, name: str = "", expires_in_days: int | None = None
    ) -> IssuedToken:
        if expires_in_days is not None and expires_in_days <= 0:
            raise InvalidInput("expires_in_days must be a positive number of days")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self.store.write(self.actor) as tx:
            owner = self._user_row(tx.session, user)
            row = TokenRow(
                id=str(ULID()),
                user_id=owner.id,
                name=name,
                token_hash=hash_token(secret),
                created_at=now,
                expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
                revoked=False,
            )
            tx.session.add(row)
            tx.record("token.create", "token", row.id, after={"user": user, "name": name})
            token = _token(row, user)
        return IssuedToken(**token.model_dump(), secret=secret)

    def list_tokens(self, user: str | None = None) -> list[Token]:
        with self.store.read() as s:
            query = select(TokenRow, UserRow.name).join(UserRow).order_by(TokenRow.created_at)
            if user is not None:
                query = query.where(UserRow.name == user)
            return [_token(t, u) for t, u in s.execute(query)]

    def revoke_token(self, token_id: str) -> Token:
        with self.store.write(self.actor) as tx:
            found = tx.session.execute(
                select(TokenRow, UserRow.name).join(UserRow).where(TokenRow.id == token_id)
            ).first()
            if found is None:
                raise NotFound(f"no token {token_id!r}; `modelyard tokens list` shows them")
            row, owner = found
            row.revoked = True
            tx.record("token.revoke", "token", token_id, {"revoked": False}, {"revoked": True})
            return _token(row, owner)

    def authenticate(self, secret: str) -> Identity:
        """The identity behind a bearer token; :class:`Unauthenticated` if it is not valid."""
        with self.store.read() as s:
            found = s.execute(
                select(TokenRow, UserRow)
                .join(UserRow)
                .where(TokenRow.token_hash == hash_token(secret))
            ).first()
        if found is None:
            raise Unauthenticated(
                "the API token is not valid; create one with `modelyard tokens create`"
            )
        token, user = found
        expires = token.expires_at
        if token.revoked or user.disabled or (expires is not None and expires < datetime.now(UTC)):
            raise Unauthenticated("the API token was revoked or has expired; create a new one")
        return Identity(name=user.name, role=Role(user.role))

    @staticmethod
    def _user_row(session: Session, name: str) -> UserRow:
        row = session.scalar(select(UserRow).where(UserRow.name == name))
        if row is None:
            raise NotFound(f"no user {name!r}; `modelyard users list` shows them")
        return row


def _user(row: UserRow) -> User:
    return User(
        id=row.id,
        name=row.name,
        role=Role(row.role),
        created_at=row.created_at,
        disabled=row.disabled,
    )


def _token(row: TokenRow, user: str) -> Token:
    return Token(
        id=row.id,
        user=user,
        name=row.name,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked=row.revoked,
    )
