"""Users, roles and API tokens."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from modelyard.errors import AlreadyExists, InvalidInput, NotFound, Unauthenticated
from modelyard.governance import Role
from modelyard.store.tables import TokenRow, UserRow
from modelyard.workspace import Workspace


def _all_token_values(ws: Workspace) -> list[str]:
    with ws.store.read() as s:
        rows = s.scalars(select(TokenRow)).all()
        return [str(getattr(r, c.key)) for r in rows for c in TokenRow.__table__.columns]


def test_token_is_stored_hashed_and_authenticates(any_workspace: Workspace) -> None:
    ids = any_workspace.identities
    user = ids.create_user("ada", "editor")
    assert user.role is Role.editor and not user.disabled
    issued = ids.create_token("ada", name="laptop")
    assert issued.secret.startswith("myd_") and len(issued.secret) > 30
    values = _all_token_values(any_workspace)
    assert all(issued.secret not in v for v in values)
    assert hashlib.sha256(issued.secret.encode()).hexdigest() in values
    identity = ids.authenticate(issued.secret)
    assert (identity.name, identity.role) == ("ada", Role.editor)
    listed = ids.list_tokens("ada")
    assert [(t.id, t.name, t.user) for t in listed] == [(issued.id, "laptop", "ada")]
    assert not hasattr(listed[0], "secret")
    # Two tokens never share a secret.
    assert ids.create_token("ada").secret != issued.secret


def test_unknown_or_altered_token_is_refused(any_workspace: Workspace) -> None:
    ids = any_workspace.identities
    ids.create_user("ada")
    issued = ids.create_token("ada")
    for bad in ["", "myd_nope", issued.secret + "x", issued.secret[:-1]]:
        with pytest.raises(Unauthenticated):
            ids.authenticate(bad)


def test_revoked_token_is_refused(any_workspace: Workspace) -> None:
    ids = any_workspace.identities
    ids.create_user("ada")
    keep = ids.create_token("ada")
    gone = ids.create_token("ada")
    revoked = ids.revoke_token(gone.id)
    assert revoked.revoked
    with pytest.raises(Unauthenticated):
        ids.authenticate(gone.secret)
    assert ids.authenticate(keep.secret).name == "ada"
    with pytest.raises(NotFound):
        ids.revoke_token("01ARZ3NDEKTSV4RRFFQ69G5FAV")


def test_expired_token_is_refused(any_workspace: Workspace) -> None:
    ids = any_workspace.identities
    ids.create_user("ada")
    issued = ids.create_token("ada", expires_in_days=1)
    assert issued.expires_at is not None
    assert ids.authenticate(issued.secret).name == "ada"  # not yet expired
    with any_workspace.store.engine.begin() as conn:
        conn.execute(
            update(TokenRow)
            .where(TokenRow.id == issued.id)
            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    with pytest.raises(Unauthenticated):
        ids.authenticate(issued.secret)
    with pytest.raises(InvalidInput):
        ids.create_token("ada", expires_in_days=0)


def test_disabled_user_is_refused(any_workspace: Workspace) -> None:
    ids = any_workspace.identities
    ids.create_user("ada", "admin")
    issued = ids.create_token("ada")
    assert ids.disable_user("ada").disabled
    with pytest.raises(Unauthenticated):
        ids.authenticate(issued.secret)


def test_roles(any_workspace: Workspace) -> None:
    ids = any_workspace.identities
    with pytest.raises(InvalidInput, match="role"):
        ids.create_user("ada", "superuser")
    assert ids.list_users() == []
    ids.create_user("ada")
    assert ids.get_user("ada").role is Role.viewer
    assert ids.set_role("ada", "admin").role is Role.admin
    with pytest.raises(InvalidInput):
        ids.set_role("ada", "root")
    assert ids.get_user("ada").role is Role.admin
    assert Role.admin.allows(Role.editor) and not Role.viewer.allows(Role.editor)


def test_duplicate_and_invalid_users(any_workspace: Workspace) -> None:
    ids = any_workspace.identities
    ids.create_user("ada")
    with pytest.raises(AlreadyExists):
        ids.create_user("ada", "admin")
    for bad in ["", " ada", "a/b", "x" * 200, "-lead"]:
        with pytest.raises(InvalidInput):
            ids.create_user(bad)
    with pytest.raises(NotFound):
        ids.create_token("nobody")
    with any_workspace.store.read() as s:
        assert s.scalars(select(UserRow.name)).all() == ["ada"]


def test_identity_changes_are_audited(any_workspace: Workspace) -> None:
    ws = any_workspace.as_actor("root")
    ws.identities.create_user("ada")
    token = ws.identities.create_token("ada")
    ws.identities.set_role("ada", "editor")
    ws.identities.revoke_token(token.id)
    ws.identities.disable_user("ada")
    records = list(reversed(ws.audit.list().items))
    assert [(r.actor, r.action) for r in records] == [
        ("root", "user.create"),
        ("root", "token.create"),
        ("root", "user.set_role"),
        ("root", "token.revoke"),
        ("root", "user.disable"),
    ]
    assert all(token.secret not in str(r.after) for r in records)
    assert ws.audit.verify().ok


def test_token_cache_remembers_lookups_and_honours_expiry(workspace: Workspace) -> None:
    import time

    from modelyard.governance import TokenCache

    ids = workspace.identities
    ids.create_user("app")
    issued = ids.create_token("app", expires_in_days=1, endpoints=["fraud", "churn", "fraud"])
    assert issued.endpoints == ["churn", "fraud"]
    cache = TokenCache(ids, ttl=60)
    assert cache.get(issued.secret) is None  # not looked up yet
    who = cache.put(issued.secret, cache.load(issued.secret))
    assert not isinstance(who, str) and who.endpoints == ["churn", "fraud"]
    assert cache.get(issued.secret) == who
    # a secret not shaped like ours is refused without a lookup; others once looked up
    assert "not valid" in str(cache.get("Basic abc"))
    assert cache.put("myd_nope", cache.load("myd_nope")) == cache.get("myd_nope")
    # trusted until the TTL, but never past the token's own expiry
    with workspace.store.engine.begin() as conn:
        conn.execute(
            update(TokenRow)
            .where(TokenRow.id == issued.id)
            .values(expires_at=datetime.now(UTC) + timedelta(seconds=0.3))
        )
    cache.put(issued.secret, cache.load(issued.secret))
    time.sleep(0.4)
    assert cache.get(issued.secret) is None
    assert "expired" in str(cache.put(issued.secret, cache.load(issued.secret)))
    with pytest.raises(InvalidInput, match="at least one endpoint"):
        ids.create_token("app", endpoints=[])


def test_only_an_issued_secret_in_a_bearer_header_gets_looked_up(workspace: Workspace) -> None:
    import asyncio

    from modelyard.governance import TokenCache, TokenCheckUnavailable, bearer_secret
    from modelyard.governance.identity import SECRET

    ids = workspace.identities
    ids.create_user("app")
    issued = ids.create_token("app")
    assert SECRET.fullmatch(issued.secret)
    assert bearer_secret(b"Bearer  " + issued.secret.encode() + b" ") == issued.secret
    for header in (None, b"Basic abc", b"Bearer", b"Bearer \xff", b"bearer "):
        with pytest.raises(Unauthenticated):
            bearer_secret(header)
    for bad in ("myd_" + "a" * 200, "myd_" + "!" * 43, "xyz_" + issued.secret[4:]):
        with pytest.raises(Unauthenticated, match="not valid"):  # without a query
            ids.authenticate(bad)
    cache = TokenCache(ids, ttl=60, max_lookups=1)
    gate = threading.Event()
    real = ids.authenticate_until

    def slow(secret: str):  # type: ignore[no-untyped-def]
        gate.wait(10)
        return real(secret)

    async def scenario() -> None:
        ids.authenticate_until = slow  # type: ignore[method-assign]
        header = b"Bearer " + issued.secret.encode()
        first = asyncio.ensure_future(cache.identify(header))
        same = asyncio.ensure_future(cache.identify(header))  # waits for the same lookup
        await asyncio.sleep(0.05)
        other = b"Bearer myd_" + b"x" * 43
        with pytest.raises(TokenCheckUnavailable) as busy:
            await cache.identify(other)
        assert busy.value.status == 503 and busy.value.retry_after == 1
        gate.set()
        assert (await first).name == (await same).name == "app"
        with pytest.raises(Unauthenticated):
            await cache.identify(other)

        def broken(secret: str):  # type: ignore[no-untyped-def]
            raise OSError("database went away")

        ids.authenticate_until = broken  # type: ignore[method-assign]
        with pytest.raises(TokenCheckUnavailable, match="did not answer"):
            await cache.identify(b"Bearer myd_" + b"y" * 43)
        ids.authenticate_until = real  # type: ignore[method-assign]
        # a change made in this process holds at once: the cache forgets what it trusted
        assert cache.get(issued.secret) is not None
        ids.revoke_token(issued.id)
        assert cache.get(issued.secret) is None
        with pytest.raises(Unauthenticated, match="revoked"):
            await cache.identify(header)

    asyncio.run(scenario())


def test_a_lookup_that_began_before_a_change_is_not_trusted_after_it(
    workspace: Workspace,
) -> None:
    from modelyard.governance import TokenCache

    ids = workspace.identities
    ids.create_user("app", "editor")
    issued = ids.create_token("app")
    cache = TokenCache(ids, ttl=60)
    before = cache.load(issued.secret)
    ids.set_role("app", "viewer")
    assert cache.put(issued.secret, before) == before.found  # answered, not remembered
    assert cache.get(issued.secret) is None
    after = cache.put(issued.secret, cache.load(issued.secret))
    assert not isinstance(after, str) and after.role is Role.viewer
    assert cache.get(issued.secret) == after


def test_a_token_limited_to_endpoints_may_only_predict_there() -> None:
    from modelyard.errors import Forbidden
    from modelyard.governance import Identity

    limited = Identity(name="app", role=Role.admin, endpoints=["fraud"])
    limited.require_predict("fraud")
    with pytest.raises(Forbidden, match="may predict on fraud only, not on 'churn'"):
        limited.require_predict("churn")
    with pytest.raises(Forbidden, match=r"only predict \(on fraud\); the HTTP API needs"):
        limited.require_unlimited("the HTTP API")
    anywhere = Identity(name="ops", role=Role.viewer)
    anywhere.require_predict("churn")
    anywhere.require_unlimited("/metrics")
