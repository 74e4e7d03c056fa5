"""The HTTP API's contract: problem+json errors, OpenAPI, limits, roles."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelyard.config import Settings
from modelyard.workspace import Workspace
from tests.conftest import LiveServer

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, *needles: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    assert body["title"] and body["detail"]
    assert "Traceback" not in response.text
    for needle in needles:
        assert needle in body["detail"], body["detail"]
    return body


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url + "/api/v1") as c:
        yield c


def test_openapi_and_health(live_server: LiveServer) -> None:
    doc = httpx.get(live_server.url + "/openapi.json").json()
    assert "/api/v1/models/{name}/versions" in doc["paths"]
    assert "/api/v1/runs/{run_id}/metrics" in doc["paths"]
    assert httpx.get(live_server.url + "/api/v1/health").json()["status"] == "ok"


def test_malformed_json_is_400(http: httpx.Client) -> None:
    r = http.post("/models", content=b'{"name": ', headers={"content-type": "application/json"})
    assert_problem(r, 400, "not valid JSON")


def test_missing_and_wrong_typed_fields_are_422_naming_the_field(http: httpx.Client) -> None:
    body = assert_problem(http.post("/models", json={"description": "x"}), 422, "name")
    assert body["errors"][0]["field"] == "name"
    assert_problem(
        http.put("/models/m/aliases/champion", json={"version": "three"}), 422, "version"
    )
    assert_problem(http.put("/models/m/aliases/champion", json={"version": 0}), 422, "version")
    assert_problem(http.get("/models", params={"limit": 0}), 422, "limit")


def test_unknown_route_model_and_duplicate(http: httpx.Client) -> None:
    assert_problem(http.get("/nowhere"), 404, "no such endpoint")
    assert_problem(http.get("/models/ghost"), 404, "ghost")
    assert http.post("/models", json={"name": "twice"}).status_code == 201
    assert_problem(http.post("/models", json={"name": "twice"}), 409, "exists")
    assert_problem(http.delete("/models"), 405)


def test_upload_digest_mismatch_and_download(http: httpx.Client, workspace: Workspace) -> None:
    data = b"hello model"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    wrong = "sha256:" + hashlib.sha256(b"other").hexdigest()
    assert_problem(http.put(f"/artifacts/{wrong}", content=data), 422, "hashes to")
    assert not workspace.artifacts.exists(wrong)
    assert http.put(f"/artifacts/{digest}", content=data).status_code == 201
    assert http.put(f"/artifacts/{digest}", content=data).json()["created"] is False
    assert http.head(f"/artifacts/{digest}").status_code == 200
    assert http.get(f"/artifacts/{digest}").content == data
    assert_problem(http.get(f"/artifacts/{wrong}"), 404)
    assert_problem(http.put("/artifacts/sha256:nothex", content=data), 422, "not a digest")


def test_a_damaged_blob_is_a_clean_problem_not_a_cut_connection(
    http: httpx.Client, workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    data = b"weights" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert http.put(f"/artifacts/{digest}", content=data).status_code == 201
    Path(workspace.artifacts._path(digest)).write_bytes(data[:-1] + b"X")  # damaged on disk
    body = assert_problem(http.get(f"/artifacts/{digest}"), 500, "does not match its digest")
    assert body["title"] == "Artifact corrupted"
    assert http.head(f"/artifacts/{digest}").status_code == 200  # the connection serves on
    assert "Traceback" not in caplog.text and "response already started" not in caplog.text


def test_oversized_upload_is_413_and_stores_nothing(tmp_path: Path) -> None:
    from modelyard.api.app import create_app

    ws = Workspace.open(Settings(home=tmp_path / "h", max_upload_bytes=1000))
    server = LiveServer(create_app(workspace=ws))
    try:
        data = b"x" * 5000
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = httpx.put(f"{server.url}/api/v1/artifacts/{digest}", content=data)
        assert_problem(r, 413, "limit")
        assert list(ws.artifacts.digests()) == []

        def chunks() -> Iterator[bytes]:  # no content-length: the stream itself is counted
            yield data[:2500]
            yield data[2500:]

        r = httpx.put(f"{server.url}/api/v1/artifacts/{digest}", content=chunks())
        assert_problem(r, 413, "limit")
        assert list(ws.artifacts.digests()) == []
    finally:
        server.stop()
        ws.close()


def test_wrong_format_model_file_is_refused(http: httpx.Client, tmp_path: Path) -> None:
    """A manifest that says sklearn over a file that is not a skops archive gets a 4xx."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from modelyard.formats import MANIFEST_NAME, Manifest, save_model

    X = np.random.default_rng(0).normal(size=(50, 3))
    model_dir = tmp_path / "m"
    save_model(LogisticRegression().fit(X, X[:, 0] > 0), model_dir, input_example=X[:3])
    manifest = Manifest.model_validate_json((model_dir / MANIFEST_NAME).read_text())
    (name,) = manifest.files
    bogus = b"this is not a skops file"
    manifest.files[name].digest = "sha256:" + hashlib.sha256(bogus).hexdigest()
    manifest.files[name].size = len(bogus)
    raw = manifest.model_dump_json().encode()
    manifest_digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    http.put(f"/artifacts/{manifest.files[name].digest}", content=bogus).raise_for_status()
    http.put(f"/artifacts/{manifest_digest}", content=raw).raise_for_status()
    r = http.post("/models/bad/versions", json={"manifest_digest": manifest_digest})
    assert 400 <= r.status_code < 500
    assert_problem(r, r.status_code)
    assert http.get("/models/bad").status_code == 404


def test_roles_are_enforced(tmp_path: Path) -> None:
    from modelyard.api.app import create_app

    ws = Workspace.open(Settings(home=tmp_path / "h", auth=True))
    ids = ws.identities
    ids.create_user("root", "admin")
    ids.create_user("ed", "editor")
    ids.create_user("vi", "viewer")
    admin = ids.create_token("root").secret
    editor = ids.create_token("ed").secret
    viewer_token = ids.create_token("vi")
    server = LiveServer(create_app(workspace=ws))
    try:

        def call(method: str, path: str, token: str | None, **kw: object) -> httpx.Response:
            headers = {"authorization": f"Bearer {token}"} if token else {}
            return httpx.request(method, f"{server.url}/api/v1{path}", headers=headers, **kw)  # type: ignore[arg-type]

        assert_problem(call("GET", "/models", None), 401, "token")
        assert_problem(call("GET", "/models", "myd_wrong"), 401, "not valid")
        assert call("GET", "/models", viewer_token.secret).status_code == 200
        assert_problem(
            call("POST", "/models", viewer_token.secret, json={"name": "m"}), 403, "editor"
        )
        assert call("POST", "/models", editor, json={"name": "m"}).status_code == 201
        assert_problem(call("POST", "/users", editor, json={"name": "x"}), 403, "admin")
        assert call("POST", "/users", admin, json={"name": "x"}).status_code == 201
        assert call("GET", "/whoami", editor).json() == {
            "name": "ed",
            "role": "editor",
            "endpoints": None,
            "groups": [],
        }

        # the change is attributed to the caller
        record = ws.audit.list(action="model.create").items[0]
        assert record.actor == "ed"

        call("DELETE", f"/tokens/{viewer_token.id}", admin).raise_for_status()
        assert_problem(call("GET", "/models", viewer_token.secret), 401, "revoked")
    finally:
        server.stop()
        ws.close()


def test_tokens_are_parsed_checked_and_cached_as_the_gateway_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelyard.api.app import create_app
    from modelyard.governance.identity import Identities

    lookups: list[str] = []
    real = Identities.authenticate_until

    def counting(self: Identities, secret: str):  # type: ignore[no-untyped-def]
        lookups.append(secret)
        return real(self, secret)

    monkeypatch.setattr(Identities, "authenticate_until", counting)
    ws = Workspace.open(Settings(home=tmp_path / "h", auth=True, token_cache_seconds=60))
    ids = ws.identities
    ids.create_user("root", "admin")
    ids.create_user("ed", "editor")
    admin = ids.create_token("root").secret
    editor = ids.create_token("ed").secret
    server = LiveServer(create_app(workspace=ws))
    try:

        def call(method: str, path: str, authorization: bytes, **kw: object) -> httpx.Response:
            headers = {"authorization": authorization}
            return httpx.request(method, f"{server.url}/api/v1{path}", headers=headers, **kw)  # type: ignore[arg-type]

        # not shaped like an issued token: refused without asking the database
        for junk in (b"myd_" + b"a" * 200, b"myd_" + b"!" * 43, b"myd_wrong"):
            assert_problem(call("GET", "/models", b"Bearer " + junk), 401, "not valid")
        for header in (b"Bearer \xff\xfe", b"Basic " + editor.encode(), b"Bearer"):
            assert_problem(call("GET", "/models", header), 401, "'Bearer <token>'")
        assert lookups == []
        # looked up once, then cached
        for _ in range(5):
            assert call("GET", "/models", b"Bearer " + editor.encode()).status_code == 200
        assert lookups == [editor]
        # a change made in this process holds at once, cache or not
        r = call("PATCH", "/users/ed", b"Bearer " + admin.encode(), json={"role": "viewer"})
        assert r.status_code == 200, r.text
        r = call("POST", "/models", b"Bearer " + editor.encode(), json={"name": "m"})
        assert_problem(r, 403, "viewer")
    finally:
        server.stop()
        ws.close()
