"""With auth on, the data plane asks for a token too: a predict permission scoped to endpoints,
checked alike on the fast path and through ASGI, cached per worker, revocation honoured."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from tests.serving.conftest import FEATURES, GatewayServer
from tests.serving.test_http_protocol import Reader, connect

from modelyard.client import Client
from modelyard.config import Settings
from modelyard.governance.identity import Identities
from modelyard.workspace import Workspace

ROWS = {"dataframe_split": {"columns": FEATURES, "data": [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]}}
OIP = {
    "inputs": [
        {"name": f, "shape": [1], "datatype": "FP64", "data": [0.5 + i]}
        for i, f in enumerate(FEATURES)
    ]
}


class Secured:
    """A gateway with auth on serving ``fraud`` and ``churn``, and three tokens."""

    def __init__(self, tmp_path: Path, models: dict, frame: tuple, cache_seconds: float) -> None:
        X, _ = frame
        settings = Settings(home=tmp_path / "home", auth=True, token_cache_seconds=cache_seconds)
        self.ws = Workspace.open(settings)
        c = Client(str(settings.resolved_home), settings=settings)
        c.log_model(models["lr"], "fraud", input_example=X.head(5))
        c.log_model(models["rf"], "churn", input_example=X.head(5))
        c.close()
        self.ws.endpoints.create("fraud", "models:/fraud/1")
        self.ws.endpoints.create("churn", "models:/churn/1")
        ids = self.ws.identities
        ids.create_user("app")
        ids.create_user("ops", "viewer")
        self.fraud_only = ids.create_token("app", name="fraud app", endpoints=["fraud"])
        self.anywhere = ids.create_token("ops")
        self.gateway = GatewayServer(self.ws)
        self.url = self.gateway.start()

    @staticmethod
    def bearer(secret: str) -> dict[str, str]:
        return {"authorization": f"Bearer {secret}"}

    def close(self) -> None:
        self.gateway.stop()
        self.ws.close()


@pytest.fixture
def secured(tmp_path: Path, models, frame) -> Iterator[Secured]:  # type: ignore[no-untyped-def]
    s = Secured(tmp_path, models, frame, cache_seconds=60)
    yield s
    s.close()


PREDICT = [
    ("/invocations", ROWS),
    ("/endpoints/fraud/invocations", ROWS),
    ("/v2/models/fraud/infer", OIP),
    ("/v2/models/fraud/versions/1/infer", OIP),
]
METADATA = [
    "/v2",
    "/v2/models/fraud",
    "/v2/models/fraud/versions/1",
    "/v2/models/fraud/ready",
    "/v2/models/fraud/config",
    "/metrics",
]
OPEN = ["/v2/health/live", "/v2/health/ready", "/ping", "/health"]


def _refused(r: httpx.Response, status: int, needle: str) -> None:
    assert r.status_code == status, (r.request.url, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    assert needle in r.json()["detail"], r.json()
    if status == 401:
        assert r.headers["www-authenticate"] == "Bearer"


def test_no_token_or_a_bad_one_is_refused_on_every_protected_route(secured: Secured) -> None:
    url = secured.url
    bad_headers: list[dict[str, str]] = [
        {},
        {"authorization": "Bearer myd_garbage"},
        {"authorization": "Bearer not-even-ours"},
        {"authorization": f"Basic {secured.anywhere.secret}"},
    ]
    for headers in bad_headers:
        for path, body in PREDICT:
            _refused(httpx.post(url + path, json=body, headers=headers), 401, "token")
            # and through ASGI (a query string takes the request off the fast path)
            _refused(httpx.post(f"{url}{path}?x=1", json=body, headers=headers), 401, "token")
        for path in METADATA:
            _refused(httpx.get(url + path, headers=headers), 401, "token")
    # the fast path itself, on a raw connection: refused, and the connection serves on
    with connect(url) as s:
        reader = Reader(s)
        payload = httpx.Request("POST", "/", json=ROWS).read()
        head = (
            b"POST /endpoints/fraud/invocations HTTP/1.1\r\nHost: t\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n" % len(payload)
        )
        s.sendall(head + b"\r\n" + payload)
        status, headers, _ = reader.response()
        assert status == 401 and headers["www-authenticate"] == "Bearer"
        auth = f"authorization: Bearer {secured.anywhere.secret}\r\n".encode()
        s.sendall(head + auth + b"\r\n" + payload)
        assert reader.response()[0] == 200
    for path in OPEN:
        assert httpx.get(url + path).status_code == 200, path
    # with auth on, the open readiness route does not say why an endpoint is not ready; a
    # token not limited to endpoints sees why (a limited or a wrong one does not)
    assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True}
    ready = f"{url}/v2/health/ready"
    assert httpx.get(ready, headers=secured.bearer(secured.anywhere.secret)).json() == {
        "ready": True,
        "not_ready": {},
    }
    for headers in [secured.bearer(secured.fraud_only.secret), bad_headers[1]]:
        assert httpx.get(ready, headers=headers).json() == {"ready": True}


def test_a_token_scoped_to_one_endpoint_predicts_there_only(secured: Secured) -> None:
    url = secured.url
    fraud = secured.bearer(secured.fraud_only.secret)
    for path, body in PREDICT[1:]:
        r = httpx.post(url + path, json=body, headers=fraud)
        assert r.status_code == 200, r.text
    for path in METADATA[:-1]:
        assert httpx.get(url + path, headers=fraud).status_code == 200, path
    # bare /invocations with two endpoints names the endpoint by header
    r = httpx.post(
        f"{url}/invocations", json=ROWS, headers={**fraud, "x-modelyard-endpoint": "fraud"}
    )
    assert r.status_code == 200
    for path, body in [
        ("/endpoints/churn/invocations", ROWS),
        ("/v2/models/churn/infer", OIP),
        ("/endpoints/churn/invocations?x=1", ROWS),
    ]:
        _refused(httpx.post(url + path, json=body, headers=fraud), 403, "'churn'")
    r = httpx.post(
        f"{url}/invocations", json=ROWS, headers={**fraud, "x-modelyard-endpoint": "churn"}
    )
    _refused(r, 403, "'churn'")
    for path in ("/v2/models/churn", "/v2/models/churn/ready", "/v2/models/churn/config"):
        _refused(httpx.get(url + path, headers=fraud), 403, "'churn'")
    # a token limited to endpoints may only predict: not /metrics, not the HTTP API
    _refused(httpx.get(f"{url}/metrics", headers=fraud), 403, "--endpoint")
    _refused(httpx.get(f"{url}/api/v1/models", headers=fraud), 403, "only predict")
    # a token that is not limited predicts everywhere and reads /metrics
    anywhere = secured.bearer(secured.anywhere.secret)
    for path, body in [("/endpoints/churn/invocations", ROWS), ("/v2/models/fraud/infer", OIP)]:
        assert httpx.post(url + path, json=body, headers=anywhere).status_code == 200
    metrics = httpx.get(f"{url}/metrics", headers=anywhere)
    assert metrics.status_code == 200
    # refused requests are counted (under the endpoint's name only if it exists)
    assert 'modelyard_request_errors_total{endpoint="churn",reason="forbidden"}' in metrics.text


def test_the_token_is_looked_up_once_per_worker_while_cached(
    secured: Secured, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[str] = []
    real = Identities.authenticate_until

    def counting(self: Identities, secret: str):  # type: ignore[no-untyped-def]
        lookups.append(secret)
        return real(self, secret)

    monkeypatch.setattr(Identities, "authenticate_until", counting)
    headers = secured.bearer(secured.anywhere.secret)
    with httpx.Client(base_url=secured.url, headers=headers) as c:
        for _ in range(20):
            assert c.post("/endpoints/fraud/invocations", json=ROWS).status_code == 200
            assert c.get("/v2/models/churn").status_code == 200
    assert lookups == [secured.anywhere.secret]


def test_a_revoked_token_stops_working_once_its_cache_entry_expires(
    tmp_path: Path, models, frame
) -> None:  # type: ignore[no-untyped-def]
    s = Secured(tmp_path, models, frame, cache_seconds=0.3)
    try:
        headers = s.bearer(s.fraud_only.secret)
        path = f"{s.url}/endpoints/fraud/invocations"
        assert httpx.post(path, json=ROWS, headers=headers).status_code == 200
        s.ws.identities.revoke_token(s.fraud_only.id)
        time.sleep(0.4)  # past the 0.3 s the worker trusts what it looked up
        _refused(httpx.post(path, json=ROWS, headers=headers), 401, "revoked")
        # a disabled user's tokens too
        anywhere = s.bearer(s.anywhere.secret)
        assert httpx.post(path, json=ROWS, headers=anywhere).status_code == 200
        s.ws.identities.disable_user("ops")
        time.sleep(0.4)
        _refused(httpx.post(path, json=ROWS, headers=anywhere), 401, "revoked")
    finally:
        s.close()


def test_tokens_limited_to_endpoints_through_the_cli_and_sdk(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("users", "create", "app")
    out = run("tokens", "create", "--user", "app", "--endpoint", "fraud", "--endpoint", "x.y")
    secret = out.stdout.split()[0]
    assert secret.startswith("myd_")
    listed = orjson.loads(run("tokens", "list", "--json").stdout)
    assert [t["endpoints"] for t in listed] == [["fraud", "x.y"]]
    bad = run("tokens", "create", "--user", "app", "--endpoint", "no/slash", ok=False)
    assert bad.returncode != 0 and "endpoint name 'no/slash' is not valid" in bad.stderr
    ws = Workspace.open(Settings(home=tmp_path / "home"))
    try:
        who = ws.identities.authenticate(secret)
        assert who.endpoints == ["fraud", "x.y"] and who.may_predict("fraud")
        assert not who.may_predict("churn")
    finally:
        ws.close()


def test_the_http_api_creates_tokens_limited_to_endpoints(client) -> None:  # type: ignore[no-untyped-def]
    client.identities.create_user("app")
    issued = client.identities.create_token("app", endpoints=["fraud"])
    assert issued.endpoints == ["fraud"]
    assert [t.endpoints for t in client.identities.list_tokens("app")] == [["fraud"]]
    assert client.identities.create_token("app").endpoints is None
    with pytest.raises(Exception, match=r"at least (one endpoint|1 item)"):
        client.identities.create_token("app", endpoints=[])


def _counting_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    lookups: list[str] = []
    real = Identities.authenticate_until

    def counting(self: Identities, secret: str):  # type: ignore[no-untyped-def]
        lookups.append(secret)
        return real(self, secret)

    monkeypatch.setattr(Identities, "authenticate_until", counting)
    return lookups


def _shaped_like_ours() -> str:
    return "myd_" + secrets.token_urlsafe(32)  # what create_token makes, but never issued


def test_a_secret_not_shaped_like_an_issued_one_costs_no_lookup(
    secured: Secured, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = _counting_lookups(monkeypatch)
    url = secured.url
    issued = secured.anywhere.secret
    for secret in (
        "myd_" + "a" * 200,
        "myd_" + "a" * 42,
        "myd_" + "!" * 43,
        "myd_garbage",
        issued[4:] + "abcd",  # the right length, the wrong prefix
    ):
        headers = secured.bearer(secret)
        for suffix in ("", "?x=1"):  # the fast path, then ASGI
            r = httpx.post(f"{url}/endpoints/fraud/invocations{suffix}", json=ROWS, headers=headers)
            _refused(r, 401, "not valid")
        _refused(httpx.get(f"{url}/v2/models/fraud", headers=headers), 401, "not valid")
    assert lookups == []
    # one shaped like ours is looked up, once: its refusal is remembered
    unknown = _shaped_like_ours()
    for _ in range(3):
        r = httpx.post(
            f"{url}/endpoints/fraud/invocations", json=ROWS, headers=secured.bearer(unknown)
        )
        _refused(r, 401, "not valid")
    assert lookups == [unknown]


def test_token_lookups_in_flight_are_bounded_and_beyond_it_a_503_says_when_to_retry(
    secured: Secured, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = secured.url
    anywhere = secured.bearer(secured.anywhere.secret)
    assert httpx.post(f"{url}/endpoints/fraud/invocations", json=ROWS, headers=anywhere).is_success
    tokens = secured.gateway.gateway.tokens
    assert tokens is not None
    tokens.max_lookups = 2
    release = threading.Event()
    real = Identities.authenticate_until
    started: list[str] = []

    def slow(self: Identities, secret: str):  # type: ignore[no-untyped-def]
        started.append(secret)
        release.wait(30)
        return real(self, secret)

    monkeypatch.setattr(Identities, "authenticate_until", slow)
    held = [_shaped_like_ours() for _ in range(2)]
    answers: list[int] = []

    def send(secret: str) -> None:
        r = httpx.post(
            f"{url}/endpoints/fraud/invocations", json=ROWS, headers=secured.bearer(secret)
        )
        answers.append(r.status_code)

    threads = [threading.Thread(target=send, args=(s,)) for s in held]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(started) < 2:
            assert time.monotonic() < deadline, "the lookups did not start"
            time.sleep(0.01)
        for path, suffix in (
            ("/endpoints/fraud/invocations", ""),
            ("/v2/models/fraud/infer", "?x=1"),
        ):
            body = ROWS if "invocations" in path else OIP
            r = httpx.post(
                url + path + suffix,
                json=body,
                headers=secured.bearer(_shaped_like_ours()),
                timeout=5,
            )
            _refused(r, 503, "retry")
            assert r.headers["retry-after"] == "1"
        r = httpx.get(
            f"{url}/v2/models/fraud", headers=secured.bearer(_shaped_like_ours()), timeout=5
        )
        _refused(r, 503, "retry")
        # a token looked up already is not held up
        r = httpx.post(f"{url}/endpoints/fraud/invocations", json=ROWS, headers=anywhere, timeout=5)
        assert r.status_code == 200
        assert sorted(started) == sorted(held)  # nothing else reached the database
    finally:
        release.set()
        for t in threads:
            t.join(10)
    assert answers == [401, 401]


def test_bare_invocations_names_only_the_endpoints_the_token_may_predict_on(
    secured: Secured,
) -> None:
    fraud = secured.bearer(secured.fraud_only.secret)
    anywhere = secured.bearer(secured.anywhere.secret)
    for suffix in ("", "?x=1"):  # the fast path, then ASGI
        r = httpx.post(f"{secured.url}/invocations{suffix}", json=ROWS, headers=fraud)
        _refused(r, 404, "(endpoints: fraud)")
        assert "churn" not in r.text
        r = httpx.post(f"{secured.url}/invocations{suffix}", json=ROWS, headers=anywhere)
        _refused(r, 404, "(endpoints: churn, fraud)")
