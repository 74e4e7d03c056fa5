"""OIDC: JWTs of an identity provider as bearer tokens, on the control plane and the gateway.

The provider is a real HTTP server on 127.0.0.1 (discovery document and JWKS) with keys the
tests generate; tokens are signed with joserfc, or forged by hand where joserfc would refuse.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey
from pydantic import ValidationError
from sklearn.linear_model import LogisticRegression
from tests.conftest import LiveServer

from modelyard.config import Settings
from modelyard.errors import Forbidden, Unauthenticated
from modelyard.governance import Identity, Role, TokenCache
from modelyard.governance.identity import TokenCheckUnavailable
from modelyard.governance.oidc import OidcVerifier
from modelyard.workspace import Workspace

AUDIENCE = "modelyard"
ROLE_MAP = {"ml-admins": "admin", "ml-editors": "editor", "ml-viewers": "viewer"}


class Provider:
    """An identity provider's public side: discovery and JWKS, with keys that can rotate."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {"k1": RSAKey.generate_key(2048, {"kid": "k1"})}
        self.jwks_fetches = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": provider.issuer, "jwks_uri": provider.issuer + "/jwks"}
                elif self.path == "/jwks":
                    provider.jwks_fetches += 1
                    body = provider.jwks()
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.as_dict(private=False, use="sig") for k in self.keys.values()]}

    def token(
        self,
        kid: str = "k1",
        *,
        alg: str = "RS256",
        key: Any = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        body = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            "preferred_username": "ada@example.com",
            "groups": ["ml-editors", "staff"],
            "iat": now,
            "exp": now + 300,
        }
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode({"alg": alg, "kid": kid}, body, key or self.keys[kid], algorithms=[alg])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    """A JWT signed by hand: HMAC-SHA256 with ``secret``, or not signed at all (None)."""
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    if secret is None:
        return signing_input + "."
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(mac)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def provider() -> Iterator[Provider]:
    p = Provider()
    yield p
    p.stop()


def oidc_settings(home: Path, provider: Provider, **extra: Any) -> Settings:
    options: dict[str, Any] = {
        "home": home,
        "auth": True,
        "oidc_issuer": provider.issuer,  # keys found by discovery
        "oidc_audience": AUDIENCE,
        "oidc_role_map": ROLE_MAP,
        "oidc_jwks_refetch_seconds": 0.3,
        "token_cache_seconds": 60,
        **extra,
    }
    return Settings(**options)


class ControlPlane:
    def __init__(self, settings: Settings) -> None:
        from modelyard.api.app import create_app

        self.ws = Workspace.open(settings)
        self.server = LiveServer(create_app(workspace=self.ws))

    def get(self, path: str, token: str | None = None) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.get(f"{self.server.url}/api/v1{path}", headers=headers, timeout=10)

    def close(self) -> None:
        self.server.stop()
        self.ws.close()


@pytest.fixture
def api(tmp_path: Path, provider: Provider) -> Iterator[ControlPlane]:
    cp = ControlPlane(oidc_settings(tmp_path / "home", provider))
    yield cp
    cp.close()


def refused(r: httpx.Response, status: int, *needles: str) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    detail: str = r.json()["detail"]
    for needle in needles:
        assert needle in detail, detail
    return detail


def test_a_providers_token_is_an_identity_with_the_mapped_role(
    api: ControlPlane, provider: Provider
) -> None:
    r = api.get("/whoami", provider.token())
    assert r.status_code == 200, r.text
    who = r.json()
    assert {k: who[k] for k in ("name", "role", "endpoints", "groups")} == {
        "name": "ada@example.com",
        "role": "editor",
        "endpoints": None,
        "groups": ["ml-editors", "staff"],
    }
    # the highest role of the groups counts; without preferred_username, the subject names
    token = provider.token(groups=["ml-viewers", "ml-admins"], preferred_username=None)
    who = api.get("/whoami", token).json()
    assert (who["name"], who["role"]) == ("f81d4fae-7dec-11d0-a765-00a0c91e6bf6", "admin")
    assert api.get("/users", token).status_code == 200  # an admin route
    # a viewer's token is refused where an editor is needed, as for an API token
    viewer = provider.token(groups=["ml-viewers"])
    refused(api.get("/users", viewer), 403, "admin")
    # API tokens keep working beside the provider's
    api.ws.identities.create_user("ops", "viewer")
    secret = api.ws.identities.create_token("ops").secret
    assert api.get("/whoami", secret).json()["name"] == "ops"
    assert provider.jwks_fetches == 1  # one fetch served every token


def test_bad_tokens_are_refused_with_what_is_wrong(api: ControlPlane, provider: Provider) -> None:
    now = int(time.time())
    stranger = RSAKey.generate_key(2048, {"kid": "k1"})
    public_pem = provider.keys["k1"].as_pem(private=False)
    claims = {"iss": provider.issuer, "aud": AUDIENCE, "sub": "x", "exp": now + 300}
    cases = [
        (provider.token(exp=now - 3600), "expired"),
        (provider.token(iss="https://evil.example.com"), "issued by 'https://evil.example.com'"),
        (provider.token(aud="another-app"), "audience 'another-app'"),
        (provider.token(exp=None), "exp"),
        (provider.token(nbf=now + 3600), "not valid before"),
        (provider.token(key=stranger), "signature does not verify"),
        (provider.token(kid="forged", key=stranger), "key id 'forged'"),
        (forged({"alg": "none", "kid": "k1"}, claims, None), "not signed"),
        (forged({"alg": "HS256", "kid": "k1"}, claims, public_pem), "HS256"),
        ("eyJhbGciOi.garbage.x", "not a valid JWT"),
        ("a.b", "not a valid JWT"),  # two parts: neither a JWT nor an API token
    ]
    # a token whose signature was cut from another: valid parts, wrong signature
    good = provider.token().split(".")
    cases.append((".".join([*good[:2], provider.token(sub="y").split(".")[2]]), "signature"))
    for token, needle in cases:
        detail = refused(api.get("/whoami", token), 401, needle)
        assert "Traceback" not in detail
    # the gateway's token parser sees the same
    refused(api.get("/models", "a.b.c"), 401, "not a valid JWT")


def test_a_caller_in_no_mapped_group_is_forbidden_with_the_groups_named(
    api: ControlPlane, provider: Provider
) -> None:
    detail = refused(api.get("/whoami", provider.token(groups=["staff", "finance"])), 403)
    assert "staff, finance" in detail
    assert "ml-admins, ml-editors, ml-viewers" in detail
    detail = refused(api.get("/whoami", provider.token(groups=None)), 403)
    assert "groups" in detail and "none" in detail


def test_keys_rotated_at_the_provider_are_fetched_again(
    api: ControlPlane, provider: Provider
) -> None:
    assert api.get("/whoami", provider.token()).status_code == 200
    assert provider.jwks_fetches == 1
    provider.keys = {"k2": ECKey.generate_key("P-256", {"kid": "k2"})}
    rotated = provider.token("k2", alg="ES256")
    deadline = time.monotonic() + 5
    while (r := api.get("/whoami", rotated)).status_code != 200:
        # refetched at most every oidc_jwks_refetch_seconds (0.3 s here)
        refused(r, 401, "key id 'k2'", "retry in")
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert r.json()["role"] == "editor"
    assert provider.jwks_fetches == 2


def test_a_provider_that_cannot_be_reached_is_a_503(tmp_path: Path, provider: Provider) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/jwks"
    cp = ControlPlane(oidc_settings(tmp_path / "home", provider, oidc_jwks_url=nowhere))
    try:
        r = cp.get("/whoami", provider.token())
        refused(r, 503, "keys could not be fetched", "retry in")
        assert r.json()["retry_after"] >= 1
    finally:
        cp.close()


def test_predictions_on_the_gateway_take_a_providers_token(
    tmp_path: Path, provider: Provider
) -> None:
    from tests.serving.conftest import GatewayServer

    from modelyard.client import Client

    settings = oidc_settings(tmp_path / "home", provider)
    ws = Workspace.open(settings)
    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(50, 3)), columns=["a", "b", "c"])
    c = Client(str(settings.resolved_home), settings=settings)
    c.log_model(LogisticRegression().fit(X, X.a > 0), "fraud", input_example=X.head(5))
    c.close()
    ws.endpoints.create("fraud", "models:/fraud/1")
    gateway = GatewayServer(ws)
    url = gateway.start()
    try:
        body = {"dataframe_split": {"columns": ["a", "b", "c"], "data": [[0.5, 0.1, 0.2]]}}
        for path in ("/endpoints/fraud/invocations", "/endpoints/fraud/invocations?q=1"):
            # the fast path, and ASGI (a query string takes the request off the fast path)
            ok = httpx.post(url + path, json=body, headers=_bearer(provider.token()))
            assert ok.status_code == 200, ok.text
            assert ok.json()["predictions"] == [True]
            expired = provider.token(exp=int(time.time()) - 3600)
            refused(httpx.post(url + path, json=body, headers=_bearer(expired)), 401, "expired")
            unmapped = provider.token(groups=["staff"])
            refused(httpx.post(url + path, json=body, headers=_bearer(unmapped)), 403, "staff")
        # the control plane the gateway carries takes it too
        r = httpx.get(f"{url}/api/v1/whoami", headers=_bearer(provider.token()))
        assert r.json()["name"] == "ada@example.com"
    finally:
        gateway.stop()
        ws.close()


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


# --- the verifier on its own ----------------------------------------------------------------


def verifier(provider: Provider, **options: Any) -> OidcVerifier:
    return OidcVerifier(
        issuer=provider.issuer,
        audience=AUDIENCE,
        role_map=ROLE_MAP,
        jwks_url=provider.issuer + "/jwks",
        **options,
    )


def test_forged_key_ids_do_not_make_the_provider_fetched_again(provider: Provider) -> None:
    v = verifier(provider, refetch_seconds=60)
    stranger = RSAKey.generate_key(2048)

    async def flood() -> list[str]:
        assert (await v.identify(provider.token())).role is Role.editor
        messages = []
        for i in range(50):
            with pytest.raises(Unauthenticated) as caught:
                await v.identify(provider.token(f"forged-{i}", key=stranger))
            messages.append(caught.value.detail)
        return messages

    messages = asyncio.run(flood())
    assert provider.jwks_fetches == 1
    assert "key id 'forged-49'" in messages[-1] and "retry in 60 s" in messages[-1]


def test_a_verified_token_is_trusted_no_longer_than_its_expiry(provider: Provider) -> None:
    v = verifier(provider, token_ttl=60, leeway=0)
    token = provider.token(exp=int(time.time()) + 2)

    async def check() -> None:
        assert (await v.identify(token)).name == "ada@example.com"
        assert (await v.identify(token)).name == "ada@example.com"  # from the cache
        deadline = time.monotonic() + 4
        while True:
            try:
                await v.identify(token)
            except Unauthenticated as exc:
                assert "expired" in exc.detail
                return
            assert time.monotonic() < deadline, "a token outlived its exp in the cache"
            await asyncio.sleep(0.1)

    asyncio.run(check())


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")  # signing it, in the test
def test_keys_from_a_file_and_eddsa(tmp_path: Path, provider: Provider) -> None:
    provider.keys["ed"] = OKPKey.generate_key("Ed25519", {"kid": "ed"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(provider.jwks()))
    v = OidcVerifier(
        issuer=provider.issuer, audience=AUDIENCE, role_map=ROLE_MAP, jwks_url=str(path)
    )
    who = asyncio.run(v.identify(provider.token("ed", alg="EdDSA", groups=["ml-admins"])))
    assert (who.name, who.role, who.groups) == ("ada@example.com", Role.admin, ["ml-admins"])
    assert provider.jwks_fetches == 0


def test_a_nested_groups_claim(provider: Provider) -> None:
    v = verifier(provider, groups_claim="realm_access.roles")
    token = provider.token(groups=None, realm_access={"roles": ["ml-viewers", "offline_access"]})
    who = asyncio.run(v.identify(token))
    assert who.role is Role.viewer and who.groups == ["ml-viewers", "offline_access"]
    with pytest.raises(Forbidden, match=r"realm_access\.roles"):
        asyncio.run(v.identify(provider.token()))


def test_without_oidc_a_jwt_is_refused_as_such(workspace: Workspace, provider: Provider) -> None:
    cache = TokenCache(workspace.identities, ttl=5)
    with pytest.raises(Unauthenticated, match="does not accept identity-provider"):
        asyncio.run(cache.identify(f"Bearer {provider.token()}".encode()))
    settings = Settings(home=workspace.settings.home, auth=True)
    assert OidcVerifier.from_settings(settings) is None


def test_a_provider_down_at_first_is_retried_after_the_refetch_interval(
    provider: Provider,
) -> None:
    port = free_port()
    v = OidcVerifier(
        issuer=provider.issuer,
        audience=AUDIENCE,
        role_map=ROLE_MAP,
        jwks_url=f"http://127.0.0.1:{port}/jwks",
        refetch_seconds=0.2,
    )

    async def check() -> Identity:
        with pytest.raises(TokenCheckUnavailable, match=f"127.0.0.1:{port}"):
            await v.identify(provider.token())
        v.jwks_url = provider.issuer + "/jwks"  # the provider is back
        with pytest.raises(TokenCheckUnavailable):  # not asked again at once
            await v.identify(provider.token())
        await asyncio.sleep(0.25)
        return await v.identify(provider.token())

    assert asyncio.run(check()).role is Role.editor
    assert provider.jwks_fetches == 1


def test_settings_parse_and_check_the_oidc_configuration(tmp_path: Path) -> None:
    base = {"home": tmp_path, "oidc_issuer": "https://id.example.com/realms/ml"}
    s = Settings(**base, oidc_audience="m", oidc_role_map="ml-admins=admin, ml-readers=reader")  # type: ignore[arg-type]
    assert s.oidc_role_map == {"ml-admins": "admin", "ml-readers": "viewer"}
    s = Settings(**base, oidc_audience="m", oidc_role_map='{"a,b": "editor"}')  # type: ignore[arg-type]
    assert s.oidc_role_map == {"a,b": "editor"}
    problems = [
        ({"oidc_role_map": {"a": "admin"}}, "OIDC_ISSUER"),  # no audience
        ({"oidc_audience": "m"}, "map the provider's groups"),  # no role map
        ({"oidc_audience": "m", "oidc_role_map": "a=root"}, "not a role"),
        ({"oidc_audience": "m", "oidc_role_map": "admins"}, "GROUP=ROLE"),
        ({"oidc_audience": "m", "oidc_role_map": "{nope"}, "JSON"),
        (
            {"oidc_audience": "m", "oidc_role_map": "a=admin", "oidc_jwks_url": "http://id/jwks"},
            "plain http",
        ),
    ]
    for extra, needle in problems:
        with pytest.raises(ValidationError, match=needle):
            Settings(**base, **extra)
    with pytest.raises(ValidationError, match="plain http"):
        Settings(home=tmp_path, oidc_issuer="http://id.example.com", oidc_audience="m")
