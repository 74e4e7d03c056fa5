"""Users, roles and API tokens. Tokens are random secrets stored only as sha256 hashes."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from cachetools import TTLCache
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
#: The longest a token may be issued for (a century).
MAX_TOKEN_DAYS = 36_500
ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,255}$")  # as endpoints are named
MAX_SECRET_CHARS = 256  # ours are 47; anything much longer is not one of ours


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
        self,
        user: str,
        *,
        name: str = "",
        expires_in_days: int | None = None,
        endpoints: list[str] | None = None,
    ) -> IssuedToken:
        """Issue a token for ``user``; with ``endpoints`` it may predict on those endpoints
        and do nothing else (a credential to hand to an application)."""
        if expires_in_days is not None and not 1 <= expires_in_days <= MAX_TOKEN_DAYS:
            raise InvalidInput(f"expires_in_days must be between 1 and {MAX_TOKEN_DAYS}")
        if endpoints is not None:
            endpoints = _endpoint_names(endpoints)
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
                endpoints=endpoints,
            )
            tx.session.add(row)
            after: dict[str, object] = {"user": user, "name": name}
            if endpoints is not None:
                after["endpoints"] = endpoints
            tx.record("token.create", "token", row.id, after=after)
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
        return self.authenticate_until(secret)[0]

    def authenticate_until(self, secret: str) -> tuple[Identity, datetime | None]:
        """:meth:`authenticate`, and when the token expires (None: never)."""
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
        return Identity(name=user.name, role=Role(user.role), endpoints=token.endpoints), expires

    @staticmethod
    def _user_row(session: Session, name: str) -> UserRow:
        row = session.scalar(select(UserRow).where(UserRow.name == name))
        if row is None:
            raise NotFound(f"no user {name!r}; `modelyard users list` shows them")
        return row


class TokenCache:
    """Bearer tokens as the data plane checks them: each looked up at most once per ``ttl``
    seconds in a process, so that a prediction costs a hash and a dict lookup, not a query.

    A revoked token, or one of a disabled user, therefore keeps working for at most ``ttl``
    seconds in a process that saw it; an expiring one stops at its expiry. Refusals are
    remembered apart, in a bounded cache, so that a flood of bad tokens cannot push the
    good ones out; a secret that is not shaped like ours is refused without a lookup.

    :meth:`get` and :meth:`put` touch the cache and belong to one thread (an event loop's);
    :meth:`load` queries the database and may run in any thread.
    """

    def __init__(self, identities: Identities, ttl: float, max_refused: int = 4096) -> None:
        self.identities = identities
        self.ttl = ttl
        # sha256 digest -> (identity, monotonic deadline); one entry per valid token seen
        self._valid: dict[bytes, tuple[Identity, float]] = {}
        self._refused: TTLCache[bytes, str] = TTLCache(max_refused, ttl)

    @staticmethod
    def key(secret: str) -> bytes:
        return hashlib.sha256(secret.encode()).digest()

    def get(self, secret: str) -> Identity | str | None:
        """The identity behind ``secret``, why it is refused (a message), or None: unknown
        here, :meth:`load` it."""
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > MAX_SECRET_CHARS:
            return "the API token is not valid; create one with `modelyard tokens create`"
        key = self.key(secret)
        found = self._valid.get(key)
        if found is not None:
            if found[1] > time.monotonic():
                return found[0]
            del self._valid[key]
            return None
        refused: str | None = self._refused.get(key)
        return refused

    def load(self, secret: str) -> Lookup:
        """Look ``secret`` up in the database (blocking), for :meth:`put`."""
        try:
            identity, expires = self.identities.authenticate_until(secret)
        except Unauthenticated as exc:
            return Lookup(exc.detail, 0.0)
        until = time.monotonic() + self.ttl
        if expires is not None:
            left = (expires - datetime.now(UTC)).total_seconds()
            until = min(until, time.monotonic() + left)
        return Lookup(identity, until)

    def put(self, secret: str, lookup: Lookup) -> Identity | str:
        """Remember what :meth:`load` found; the identity, or why the token is refused."""
        key = self.key(secret)
        if isinstance(lookup.found, str):
            self._refused[key] = lookup.found
        else:
            self._valid[key] = (lookup.found, lookup.until)
        return lookup.found


class Lookup(NamedTuple):
    """A token looked up: the identity (or why it is refused), and until when to trust that."""

    found: Identity | str
    until: float  # time.monotonic(); unused for a refusal (the refused cache has its own TTL)


def _endpoint_names(names: list[str]) -> list[str]:
    if not names:
        raise InvalidInput(
            "a token limited to endpoints needs at least one endpoint name; "
            "leave endpoints out for a token that is not limited"
        )
    for name in names:
        if not isinstance(name, str) or not ENDPOINT_NAME.match(name):
            raise InvalidInput(
                f"endpoint name {name!r} is not valid; use letters, digits, '.', '_', '-'"
            )
    return sorted(set(names))


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
        endpoints=row.endpoints,
    )
