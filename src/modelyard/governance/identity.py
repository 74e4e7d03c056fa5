"""Users, roles and API tokens. Tokens are random secrets stored only as sha256 hashes.

:func:`bearer_secret` and :class:`TokenCache` are how every HTTP adapter (the control-plane
API, the gateway) establishes who is calling.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from cachetools import TTLCache
from sqlalchemy import select
from sqlalchemy.orm import Session
from ulid import ULID

from modelyard.errors import AlreadyExists, InvalidInput, ModelyardError, NotFound, Unauthenticated
from modelyard.governance.entities import Identity, IssuedToken, Role, Token, User
from modelyard.store import Store
from modelyard.store.tables import TokenRow, UserRow

if TYPE_CHECKING:
    from modelyard.governance.oidc import OidcVerifier

log = logging.getLogger("modelyard.governance")

TOKEN_PREFIX = "myd_"
SECRET_BYTES = 32  # of randomness per token: 43 characters of unpadded base64url
#: What :meth:`Identities.create_token` issues: the prefix and ``token_urlsafe(32)``.
#: Nothing else can be a token, so nothing else is looked up.
SECRET = re.compile(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_-]{43}")
SECRET_CHARS = len(TOKEN_PREFIX) + 43
NOT_VALID = "the API token is not valid; create one with `modelyard tokens create`"
NO_OIDC = (
    "this server does not accept identity-provider (OIDC) tokens: send a modelyard API token "
    "(`modelyard tokens create`), or have the operator set MODELYARD_OIDC_ISSUER"
)
LOCAL_USER = Identity(name="local", role=Role.admin)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
#: The longest a token may be issued for (a century).
MAX_TOKEN_DAYS = 36_500
ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,255}$")  # as endpoints are named
#: Token lookups (database queries) one :class:`TokenCache` runs at once; beyond, a request
#: whose token is not cached gets :class:`TokenCheckUnavailable` (503, retry after a second).
MAX_TOKEN_LOOKUPS = 8


class TokenCheckUnavailable(ModelyardError):
    """The token could not be checked now: too many lookups in flight, or the database did
    not answer; retry after ``retry_after`` seconds."""

    status = 503
    title = "Not ready"

    def __init__(self, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.retry_after = retry_after


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def bearer_secret(authorization: bytes | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header (its raw bytes; None: no
    such header); :class:`Unauthenticated` without one. Whether it is shaped like a token
    is :meth:`TokenCache.get`'s to say."""
    if authorization is None:
        raise Unauthenticated(
            "this server requires an API token: send 'Authorization: Bearer <token>' "
            "(`modelyard tokens create --user NAME [--endpoint ENDPOINT]` makes one; the CLI "
            "and SDK send MODELYARD_TOKEN)"
        )
    scheme, _, secret = authorization.partition(b" ")
    secret = secret.strip()
    if scheme.lower() != b"bearer" or not secret or not secret.isascii():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return secret.decode("ascii")


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidInput(
            f"unknown role {value!r}; use one of: {', '.join(r.value for r in Role)}"
        ) from None


class Identities:
    """Create users, issue and revoke tokens, and authenticate a presented token."""

    #: Bumped by every change that can take a permission away (role, disabled user, revoked
    #: token), after it is committed: a :class:`TokenCache` then forgets what it trusted, so
    #: that a change made in this process holds at once (in others, after their TTL).
    changes: ClassVar[int] = 0

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
            user = _user(row)
        Identities.changes += 1
        return user

    def disable_user(self, name: str) -> User:
        with self.store.write(self.actor) as tx:
            row = self._user_row(tx.session, name)
            row.disabled = True
            tx.record("user.disable", "user", name, {"disabled": False}, {"disabled": True})
            user = _user(row)
        Identities.changes += 1
        return user

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
        secret = TOKEN_PREFIX + secrets.token_urlsafe(SECRET_BYTES)
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
            token = _token(row, owner)
        Identities.changes += 1
        return token

    def authenticate(self, secret: str) -> Identity:
        """The identity behind a bearer token; :class:`Unauthenticated` if it is not valid."""
        return self.authenticate_until(secret)[0]

    def authenticate_until(self, secret: str) -> tuple[Identity, datetime | None]:
        """:meth:`authenticate`, and when the token expires (None: never)."""
        if SECRET.fullmatch(secret) is None:  # not one we issued: no need to ask the database
            raise Unauthenticated(NOT_VALID)
        with self.store.read() as s:
            found = s.execute(
                select(TokenRow, UserRow)
                .join(UserRow)
                .where(TokenRow.token_hash == hash_token(secret))
            ).first()
        if found is None:
            raise Unauthenticated(NOT_VALID)
        token, user = found
        expires = token.expires_at
        if token.revoked or user.disabled or (expires is not None and expires < datetime.now(UTC)):
            raise Unauthenticated("the API token was revoked or has expired; create a new one")
        identity = Identity(
            name=user.name, role=Role(user.role), endpoints=token.endpoints, token_id=token.id
        )
        return identity, expires

    @staticmethod
    def _user_row(session: Session, name: str) -> UserRow:
        row = session.scalar(select(UserRow).where(UserRow.name == name))
        if row is None:
            raise NotFound(f"no user {name!r}; `modelyard users list` shows them")
        return row


class TokenCache:
    """Bearer tokens as the HTTP adapters check them: each looked up at most once per
    ``ttl`` seconds in a process, so that a request costs a hash and a dict lookup, not a
    query.

    A revoked token, or one of a disabled user, therefore keeps working for at most ``ttl``
    seconds in a process that saw it (at once in the process that made the change, see
    :attr:`Identities.changes`); an expiring one stops at its expiry. Refusals are
    remembered apart, in a bounded cache, so that a flood of bad tokens cannot push the
    good ones out. A secret not shaped like the ones issued is refused without a lookup,
    and at most ``max_lookups`` lookups run at once: unauthenticated callers cannot make
    the database work at will.

    :meth:`identify`, :meth:`get` and :meth:`put` touch the cache and belong to one thread
    (an event loop's); :meth:`load` queries the database and may run in any thread.
    """

    def __init__(
        self,
        identities: Identities,
        ttl: float,
        max_refused: int = 4096,
        max_lookups: int = MAX_TOKEN_LOOKUPS,
        oidc: OidcVerifier | None = None,
    ) -> None:
        self.identities = identities
        self.ttl = ttl
        self.max_lookups = max_lookups
        #: Checks JWTs of an identity provider (governance/oidc.py); None: they are refused.
        self.oidc = oidc
        # sha256 digest -> (identity, monotonic deadline); one entry per valid token seen
        self._valid: dict[bytes, tuple[Identity, float]] = {}
        self._refused: TTLCache[bytes, str] = TTLCache(max_refused, ttl)
        self._changes = Identities.changes  # as of what is cached
        self._lookups: dict[str, asyncio.Future[Identity | str]] = {}  # secret -> in flight

    @staticmethod
    def key(secret: str) -> bytes:
        return hashlib.sha256(secret.encode()).digest()

    async def identify(self, authorization: bytes | None) -> Identity:
        """Who sends ``authorization`` (an ``Authorization`` header's bytes; None: none):
        :class:`Unauthenticated` if nobody, :class:`TokenCheckUnavailable` if that cannot
        be told now. Looks the token up (in a thread) only when it is not cached."""
        secret = bearer_secret(authorization)
        if "." in secret:  # a JWT: an API token has no dot
            if self.oidc is None:
                raise Unauthenticated(NO_OIDC)
            return await self.oidc.identify(secret)
        found = self.get(secret)
        if found is None:
            found = await self._look_up(secret)
        if isinstance(found, str):
            raise Unauthenticated(found)
        return found

    def get(self, secret: str) -> Identity | str | None:
        """The identity behind ``secret``, why it is refused (a message), or None: unknown
        here, :meth:`load` it."""
        if len(secret) != SECRET_CHARS:
            return NOT_VALID
        if self._changes != Identities.changes:
            self._forget()
        key = self.key(secret)
        found = self._valid.get(key)
        if found is not None:  # only issued secrets get here: no need to check the shape
            if found[1] > time.monotonic():
                return found[0]
            del self._valid[key]
            return None
        if SECRET.fullmatch(secret) is None:
            return NOT_VALID
        refused: str | None = self._refused.get(key)
        return refused

    def load(self, secret: str) -> Lookup:
        """Look ``secret`` up in the database (blocking), for :meth:`put`."""
        changes = Identities.changes
        try:
            identity, expires = self.identities.authenticate_until(secret)
        except Unauthenticated as exc:
            return Lookup(exc.detail, 0.0, changes)
        until = time.monotonic() + self.ttl
        if expires is not None:
            left = (expires - datetime.now(UTC)).total_seconds()
            until = min(until, time.monotonic() + left)
        return Lookup(identity, until, changes)

    def put(self, secret: str, lookup: Lookup) -> Identity | str:
        """Remember what :meth:`load` found; the identity, or why the token is refused."""
        if self._changes != Identities.changes:
            self._forget()
        if lookup.changes == self._changes:  # else it may predate a change: not kept
            key = self.key(secret)
            if isinstance(lookup.found, str):
                self._refused[key] = lookup.found
            else:
                self._valid[key] = (lookup.found, lookup.until)
        return lookup.found

    def _forget(self) -> None:
        self._valid.clear()
        self._refused.clear()
        self._changes = Identities.changes

    async def _look_up(self, secret: str) -> Identity | str:
        # In a thread, off the event loop; requests that bring the same token meanwhile
        # wait for the same lookup, which finishes (and is cached) even if they go away.
        pending = self._lookups.get(secret)
        if pending is None:
            if len(self._lookups) >= self.max_lookups:
                raise TokenCheckUnavailable(
                    "too many API tokens are being checked at once; retry in a second"
                )
            pending = asyncio.ensure_future(self._load_and_put(secret))
            self._lookups[secret] = pending
            pending.add_done_callback(lambda done: self._looked_up(secret, done))
        try:
            return await asyncio.shield(pending)
        except Exception:
            raise TokenCheckUnavailable(
                "the API token could not be checked: the metadata database did not answer; "
                "retry shortly"
            ) from None

    async def _load_and_put(self, secret: str) -> Identity | str:
        return self.put(secret, await asyncio.to_thread(self.load, secret))

    def _looked_up(self, secret: str, done: asyncio.Future[Identity | str]) -> None:
        self._lookups.pop(secret, None)
        if not done.cancelled() and done.exception() is not None:
            log.warning("could not look an API token up: %s", done.exception())


class Lookup(NamedTuple):
    """A token looked up: the identity (or why it is refused), until when to trust that,
    and :attr:`Identities.changes` when the lookup began."""

    found: Identity | str
    until: float  # time.monotonic(); unused for a refusal (the refused cache has its own TTL)
    changes: int


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
