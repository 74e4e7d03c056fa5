"""OpenID Connect: JWTs of an identity provider (Keycloak, Okta, Entra ID...) as bearer tokens.

:class:`~modelyard.governance.identity.TokenCache` hands a bearer value shaped like a JWT to
an :class:`OidcVerifier`, which checks it against the provider's published keys (JWKS) and
its claims against the settings, and makes an :class:`Identity` of it: the name from the
username claim, the groups from the groups claim, the role from ``oidc_role_map``.

What it refuses, and why:

- algorithms other than RS256, ES256 and EdDSA (Ed25519): never ``none``, never a shared
  secret (HS256...), so that a public key cannot be used as an HMAC secret;
- keys of the wrong type or algorithm for the token, and symmetric keys in the JWKS;
- a wrong ``iss`` or ``aud``, a token without ``exp``, or one outside ``nbf``/``exp``
  (a minute of leeway for clocks).

The keys are fetched with httpx and kept ``oidc_jwks_cache_seconds``; a token naming a key
id the provider does not publish makes them fetched again, but at most once per
``oidc_jwks_refetch_seconds`` (forged key ids cannot make the server hammer the provider),
and a failed fetch is retried no sooner either. A verified token is trusted until its
``exp``, or for ``token_cache_seconds`` at most, like an API token.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import orjson
from cachetools import TLRUCache
from joserfc import jws
from joserfc.errors import (
    ClaimError,
    ExpiredTokenError,
    JoseError,
    MissingClaimError,
    UnsupportedAlgorithmError,
)
from joserfc.jwk import Key, import_key
from joserfc.jwt import JWTClaimsRegistry

from modelyard.errors import Forbidden, Unauthenticated
from modelyard.governance.entities import Identity, Role
from modelyard.governance.identity import TokenCheckUnavailable

if TYPE_CHECKING:
    from modelyard.config import Settings

log = logging.getLogger("modelyard.governance")

#: The signature algorithms accepted; ``Ed25519`` is RFC 9864's name for EdDSA on Ed25519.
ALGORITHMS = ("RS256", "ES256", "EdDSA", "Ed25519")
ACCEPTED = "RS256, ES256 or EdDSA"
#: Seconds of clock difference tolerated on ``exp``, ``nbf`` and ``iat``.
LEEWAY_SECONDS = 60
MAX_JWT_CHARS = 16 * 1024
MAX_JWKS_BYTES = 1024 * 1024
FETCH_TIMEOUT_SECONDS = 5.0
#: Verified tokens remembered per verifier (each until it expires or the TTL passes).
MAX_CACHED_TOKENS = 10_000
_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


class _Registry(jws.JWSRegistry):
    """joserfc's registry of the accepted algorithms, without its warning on every use of
    "EdDSA" (RFC 9864 prefers "Ed25519"): providers publish "EdDSA" today, and the warning
    would fill the log without telling an operator anything to do."""

    def get_alg(self, name: str) -> jws.JWSAlgModel:
        if name not in ALGORITHMS or name not in self.algorithms:
            raise UnsupportedAlgorithmError(f"algorithm {name!r} is not accepted")
        return self.algorithms[name]


_REGISTRY = _Registry(algorithms=list(ALGORITHMS), strict_check_header=False)
NOT_A_JWT = (
    "the bearer token is not a valid JWT (header.payload.signature, each base64url); send "
    "an access token from the identity provider, or a modelyard API token"
)


def looks_like_jwt(secret: str) -> bool:
    """Whether a bearer value is shaped like a JWT (three base64url parts); API tokens have
    no dot."""
    return len(secret) <= MAX_JWT_CHARS and _JWT.fullmatch(secret) is not None


class OidcVerifier:
    """Verifies an identity provider's JWTs and makes identities of them.

    :meth:`identify` belongs to one event loop (the server's), like
    :class:`~modelyard.governance.identity.TokenCache`, which calls it.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        role_map: Mapping[str, str | Role],
        jwks_url: str | None = None,
        groups_claim: str = "groups",
        username_claim: str = "preferred_username",
        token_ttl: float = 5.0,
        jwks_cache_seconds: float = 3600.0,
        refetch_seconds: float = 60.0,
        leeway: int = LEEWAY_SECONDS,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.role_map = {group: Role(role) for group, role in role_map.items()}
        self.jwks_url = jwks_url
        self.groups_claim = groups_claim
        self.username_claim = username_claim
        self.token_ttl = token_ttl
        self.jwks_cache_seconds = jwks_cache_seconds
        self.refetch_seconds = refetch_seconds
        self.leeway = leeway
        # sha256 of a token -> (identity, monotonic deadline)
        self._verified: TLRUCache[bytes, tuple[Identity, float]] = TLRUCache(
            MAX_CACHED_TOKENS, lambda _key, value, _now: value[1]
        )
        self._keys: dict[str, tuple[Key, str | None]] | None = None  # kid -> (key, its alg)
        self._fetched_at = 0.0  # time.monotonic() of the last fetch that worked
        self._attempted_at: float | None = None  # ... of the last fetch begun
        self._error = ""  # why the last fetch failed
        self._fetching: asyncio.Future[None] | None = None
        self._discovered: str | None = None  # jwks_uri from the discovery document

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcVerifier | None:
        """The verifier the settings ask for; None when OIDC is not configured."""
        if not settings.auth or not settings.oidc_issuer:
            return None
        assert settings.oidc_audience is not None  # Settings refuses an issuer without one
        return cls(
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            role_map=settings.oidc_role_map,
            jwks_url=settings.oidc_jwks_url,
            groups_claim=settings.oidc_groups_claim,
            username_claim=settings.oidc_username_claim,
            token_ttl=settings.token_cache_seconds,
            jwks_cache_seconds=settings.oidc_jwks_cache_seconds,
            refetch_seconds=settings.oidc_jwks_refetch_seconds,
        )

    async def identify(self, token: str) -> Identity:
        """Who ``token`` (a JWT) says the caller is: :class:`Unauthenticated` (401) if it is
        not a valid token of the provider, :class:`Forbidden` (403) if none of the caller's
        groups has a role, :class:`TokenCheckUnavailable` (503) if the provider's keys cannot
        be had now."""
        digest = hashlib.sha256(token.encode()).digest()
        found = self._verified.get(digest)
        if found is not None:
            return found[0]
        signed = _parse(token)
        header = signed.headers()
        kid = _header_kid(header)
        _check_algorithm(header.get("alg"))
        keys = await self._keys_with(kid)
        claims = self._verify(signed, header, kid, keys)
        identity = self._identity(claims)
        left = min(self.token_ttl, float(claims["exp"]) - time.time())
        if left > 0:
            self._verified[digest] = (identity, time.monotonic() + left)
        return identity

    # --- the token ------------------------------------------------------------------------

    def _verify(
        self,
        signed: jws.CompactSignature,
        header: Mapping[str, Any],
        kid: str | None,
        keys: dict[str, tuple[Key, str | None]],
    ) -> dict[str, Any]:
        alg = str(header["alg"])
        if kid is None:
            if len(keys) != 1:
                raise Unauthenticated(
                    "the JWT names no signing key (no `kid` in its header) and the identity "
                    f"provider publishes {len(keys)}; send a token the provider issued"
                )
            kid = next(iter(keys))
        entry = keys.get(kid)
        if entry is None:
            raise Unauthenticated(
                f"the JWT is signed with key id {kid!r}, which the identity provider's keys "
                f"({self._keys_source()}) do not include; if the provider has just rotated "
                f"its keys, retry in {math.ceil(self.refetch_seconds)} s"
            )
        key, key_alg = entry
        if key_alg is not None and key_alg != alg:
            raise Unauthenticated(
                f"the JWT says it is signed with {alg}, but the provider's key {kid!r} is for "
                f"{key_alg}; the token was not issued by {self.issuer}"
            )
        try:
            valid = jws.validate_compact(signed, key, registry=_REGISTRY)
        except JoseError:  # e.g. an RSA key for ES256: the token cannot be the provider's
            valid = False
        if not valid:
            raise Unauthenticated(
                f"the JWT's signature does not verify with the identity provider's key {kid!r}: "
                f"it was altered, or not issued by {self.issuer}"
            )
        try:
            claims = orjson.loads(signed.payload or b"")
        except orjson.JSONDecodeError:
            claims = None
        if not isinstance(claims, dict):
            raise Unauthenticated("the JWT's payload is not a JSON object of claims")
        self._check_claims(claims)
        return claims

    def _check_claims(self, claims: dict[str, Any]) -> None:
        registry = JWTClaimsRegistry(
            leeway=self.leeway,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            exp={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise Unauthenticated(
                f"the JWT expired at {_when(claims.get('exp'))}; get a fresh token from the "
                "identity provider"
            ) from None
        except MissingClaimError as exc:
            raise Unauthenticated(
                f"the JWT lacks the claim(s) {exc.claim}: modelyard accepts only tokens with "
                "an issuer (iss), an audience (aud) and an expiry (exp)"
            ) from None
        except ClaimError as exc:
            raise Unauthenticated(self._claim_problem(exc.claim, claims)) from None

    def _claim_problem(self, claim: str, claims: dict[str, Any]) -> str:
        value = claims.get(claim)
        if claim == "iss":
            return (
                f"the JWT was issued by {value!r}, not by {self.issuer!r} "
                "(MODELYARD_OIDC_ISSUER): get a token from that identity provider"
            )
        if claim == "aud":
            return (
                f"the JWT is for audience {value!r}, not {self.audience!r} "
                "(MODELYARD_OIDC_AUDIENCE): ask the identity provider for a token for that client"
            )
        if claim in ("nbf", "iat"):
            return (
                f"the JWT is not valid before {_when(value)} ({claim}); check the clocks of "
                "this server and of the identity provider"
            )
        return f"the JWT's claim {claim!r} is not valid ({value!r})"

    def _identity(self, claims: dict[str, Any]) -> Identity:
        name = claims.get(self.username_claim)
        if not (isinstance(name, str) and name):
            name = claims.get("sub")
        if not (isinstance(name, str) and name and len(name) <= 256 and name.isprintable()):
            raise Unauthenticated(
                f"the JWT names nobody: it has no usable {self.username_claim!r} or 'sub' claim "
                "(a name of 1 to 256 printable characters)"
            )
        groups = _groups(_claim(claims, self.groups_claim))
        roles = [self.role_map[g] for g in groups if g in self.role_map]
        if not roles:
            seen = ", ".join(groups) if groups else "none"
            raise Forbidden(
                f"{name} (signed in with {self.issuer}) has no role here: their groups "
                f"(claim {self.groups_claim!r}) are {seen}, and MODELYARD_OIDC_ROLE_MAP gives "
                f"roles to {', '.join(sorted(self.role_map))}; add one of these groups to "
                "the user at the provider, or map one of theirs"
            )
        return Identity(name=name, role=_highest(roles), groups=groups)

    # --- the provider's keys -----------------------------------------------------------------

    async def _keys_with(self, kid: str | None) -> dict[str, tuple[Key, str | None]]:
        """The provider's keys, fetched again first if they are stale or lack ``kid`` (and
        the last fetch is ``refetch_seconds`` old); :class:`TokenCheckUnavailable` when
        there are none to check with."""
        now = time.monotonic()
        keys = self._keys
        wanted = (
            keys is None
            or now - self._fetched_at >= self.jwks_cache_seconds
            or (kid is not None and kid not in keys)
        )
        if self._fetching is None and wanted:
            attempted = self._attempted_at
            if attempted is None or now - attempted >= self.refetch_seconds:
                self._attempted_at = now
                self._fetching = asyncio.ensure_future(self._fetch())
                self._fetching.add_done_callback(self._fetched)
        if self._fetching is not None:
            await asyncio.shield(self._fetching)
        if self._keys is None:
            waited = time.monotonic() - (self._attempted_at or 0.0)
            retry = max(1, math.ceil(self.refetch_seconds - waited))
            raise TokenCheckUnavailable(
                f"the identity provider's keys could not be fetched ({self._error}); "
                f"retry in {retry} s",
                retry_after=retry,
            )
        return self._keys

    def _fetched(self, done: asyncio.Future[None]) -> None:
        self._fetching = None
        if not done.cancelled() and done.exception() is not None:
            log.warning("could not fetch the identity provider's keys: %s", done.exception())

    async def _fetch(self) -> None:
        try:
            source = self.jwks_url or await self._discover()
            if _is_url(source):
                document = await _get_json(source)
            else:
                path = Path(source.removeprefix("file://"))
                document = orjson.loads(path.read_bytes()[: MAX_JWKS_BYTES + 1])
            keys = _parse_jwks(document)
        except Exception as exc:  # whatever the network or the document did: a 503, not a 500
            self._error = f"{self._keys_source()}: {exc}"
            if self._keys is not None:
                log.warning("keeping the identity provider's keys fetched before: %s", exc)
            return
        self._keys, self._fetched_at, self._error = keys, time.monotonic(), ""

    async def _discover(self) -> str:
        if self._discovered is None:
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            document = await _get_json(url)
            jwks_uri = document.get("jwks_uri") if isinstance(document, dict) else None
            if not isinstance(jwks_uri, str) or not _is_url(jwks_uri):
                raise ValueError(f"{url} names no jwks_uri; set MODELYARD_OIDC_JWKS_URL")
            host = urlsplit(jwks_uri).hostname or ""
            if jwks_uri.startswith("http://") and host not in ("127.0.0.1", "::1", "localhost"):
                # keys fetched in clear could be swapped in transit: as for the settings
                raise ValueError(
                    f"{url} names a plain-http jwks_uri {jwks_uri!r}; the keys must come "
                    "over https (or set MODELYARD_OIDC_JWKS_URL)"
                )
            self._discovered = jwks_uri
        return self._discovered

    def _keys_source(self) -> str:
        return self.jwks_url or self._discovered or f"{self.issuer} (discovery)"


def _parse(token: str) -> jws.CompactSignature:
    if not looks_like_jwt(token):
        raise Unauthenticated(NOT_A_JWT)
    try:
        signed = jws.extract_compact(token.encode("ascii"), registry=_REGISTRY)
        header = signed.headers()
    except (JoseError, ValueError, TypeError):
        raise Unauthenticated(NOT_A_JWT) from None
    if not isinstance(header, dict):
        raise Unauthenticated(NOT_A_JWT)
    return signed


def _header_kid(header: Mapping[str, Any]) -> str | None:
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise Unauthenticated("the JWT's key id (kid) is not a string")
    return kid


def _check_algorithm(alg: object) -> None:
    if alg in ALGORITHMS:
        return
    if not isinstance(alg, str) or alg.lower() == "none":
        raise Unauthenticated(
            f"the JWT is not signed (alg {alg!r}); modelyard accepts {ACCEPTED} signatures only"
        )
    if alg.upper().startswith("HS"):
        raise Unauthenticated(
            f"the JWT is signed with {alg}, a shared-secret algorithm modelyard never accepts "
            f"from an identity provider; have it sign with {ACCEPTED}"
        )
    raise Unauthenticated(f"the JWT's algorithm {alg!r} is not accepted; use {ACCEPTED}")


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    """A claim by name, or by a dotted path into objects (Keycloak's realm_access.roles)."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _groups(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [g for g in value if isinstance(g, str)]
    return []


def _highest(roles: list[Role]) -> Role:
    """The role of ``roles`` that includes the most others (admin over editor over viewer);
    between two that do not include each other, the one declared later in :class:`Role`."""
    order = list(Role)
    return max(roles, key=lambda r: (sum(r.allows(o) for o in order), order.index(r)))


def _when(value: Any) -> str:
    try:
        return datetime.fromtimestamp(float(value), UTC).isoformat(timespec="seconds")
    except (TypeError, ValueError, OverflowError, OSError):
        return repr(value)


def _is_url(source: str) -> bool:
    return source.startswith(("https://", "http://"))


async def _get_json(url: str) -> Any:
    """A JSON document from ``url``, at most :data:`MAX_JWKS_BYTES`; ValueError or
    httpx.HTTPError if it cannot be had."""
    async with (
        httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS) as http,
        http.stream("GET", url, headers={"accept": "application/json"}) as response,
    ):
        if response.status_code != 200:
            raise ValueError(f"{urlsplit(url).netloc} answered {response.status_code}")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_JWKS_BYTES:
                raise ValueError(f"the document is over {MAX_JWKS_BYTES} bytes")
    return orjson.loads(body)


def _parse_jwks(document: Any) -> dict[str, tuple[Key, str | None]]:
    """The signing keys of a JWKS document by key id; ValueError if it has none usable."""
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("not a JWKS document (a JSON object with a 'keys' list)")
    keys: dict[str, tuple[Key, str | None]] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        alg = entry.get("alg")
        # Symmetric keys, encryption keys and keys for other algorithms never verify here.
        if entry.get("kty") not in ("RSA", "EC", "OKP") or entry.get("use", "sig") != "sig":
            continue
        if alg is not None and alg not in ALGORITHMS:
            continue
        try:
            key = import_key(entry)
        except (JoseError, ValueError, TypeError) as exc:
            log.warning("skipping a key of the identity provider (%s): %s", entry.get("kid"), exc)
            continue
        kid = entry.get("kid")
        keys[kid if isinstance(kid, str) else key.thumbprint()] = (key, alg)
    if not keys:
        raise ValueError(f"no signing key for {ACCEPTED} in the provider's JWKS")
    return keys
