"""No 500 from input: every value a client controls is refused with a 4xx problem document.

Each test is one of the inputs that answered 500, or was accepted when it should not have
been, before (issue 15), on a real server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard.api.app import create_app
from modelyard.config import Settings
from modelyard.workspace import Workspace
from tests.api.test_api import PROBLEM, assert_problem
from tests.conftest import LiveServer

HUGE = "99999999999999999999"  # beyond 64 bits
INT32_MAX = 2**31 - 1
KPI = {"name": "approval rate", "direction": "maximize", "target": 0.9}


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url + "/api/v1") as c:
        yield c


@pytest.fixture
def fraud(workspace: Workspace) -> str:
    """A model with two versions (the second is the latest), and an endpoint on it."""
    from modelyard.client import Client

    client = Client(str(workspace.settings.resolved_home), settings=workspace.settings)
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 2)), columns=["a", "b"])
    model = LogisticRegression().fit(X, X.a > 0)
    client.log_model(model, "fraud", input_example=X[:3])
    client.log_model(model, "fraud", input_example=X[:3])
    workspace.endpoints.create("fraud", "models:/fraud/2")
    return "fraud"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("POST", "/archive"),
        ("POST", "/restore"),
        ("GET", "/card"),
        ("PATCH", "/card"),
        ("GET", "/lineage"),
        ("GET", "/runtimes/onnx"),
    ],
)
def test_version_beyond_its_column_is_422_naming_the_range(
    http: httpx.Client, fraud: str, method: str, path: str
) -> None:
    for version in (HUGE, str(INT32_MAX + 1), "0"):
        r = http.request(method, f"/models/{fraud}/versions/{version}{path}", json={})
        body = assert_problem(r, 422, "version")
        assert str(INT32_MAX) in body["detail"] or "greater than or equal to 1" in body["detail"]


def test_a_forged_page_token_beyond_64_bits_is_422(http: httpx.Client) -> None:
    import base64

    forged = base64.urlsafe_b64encode(f"o:{HUGE}".encode()).decode()
    assert_problem(http.get("/models", params={"page_token": forged}), 422, "page_token")


def test_alias_to_a_version_beyond_its_column_is_422(http: httpx.Client, fraud: str) -> None:
    r = http.put(f"/models/{fraud}/aliases/champion", json={"version": INT32_MAX + 1})
    assert_problem(r, 422, str(INT32_MAX))
    r = http.put(f"/models/{fraud}/aliases/champion", json={"version": int(HUGE)})
    assert_problem(r, 422, str(INT32_MAX))


def test_uri_with_a_version_beyond_its_column_is_422(http: httpx.Client, fraud: str) -> None:
    assert_problem(http.get("/resolve", params={"uri": f"models:/{fraud}/{HUGE}"}), 422)
    # so long that int() itself refuses it (4,300 digits)
    r = http.get("/resolve", params={"uri": f"models:/{fraud}/{'9' * 5000}"})
    assert_problem(r, 422, str(INT32_MAX))
    assert http.get("/resolve", params={"uri": f"models:/{fraud}/2"}).json()["version"] == 2


def test_retention_refuses_huge_ages_and_runs_only_when_dry_run_is_false(
    http: httpx.Client, fraud: str
) -> None:
    url = f"/models/{fraud}/retention"
    assert_problem(http.post(url, json={"keep_last": 1, "min_age_days": 1e308}), 422, "36500")
    overflow = b'{"keep_last": 1, "min_age_days": 1e400}'  # JSON reads it as infinity
    r = http.post(url, content=overflow, headers={"content-type": "application/json"})
    assert_problem(r, 422, "min_age_days")
    # 0 is not false: nothing is deleted, and the caller is told to send a boolean
    assert_problem(http.post(url, json={"keep_last": 1, "dry_run": 0}), 422, "dry_run")
    assert_problem(http.post(url, json={"keep_last": True}), 422, "boolean is not a number")
    assert [v["version"] for v in http.get(f"/models/{fraud}/versions").json()["items"]] == [2, 1]
    r = http.post(url, json={"keep_last": 1, "dry_run": False})
    assert r.status_code == 200 and r.json()["deleted"] == [1]


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("PATCH", "/models/fraud/versions/1/card", {"metrics": {"auc": False}}, "metrics"),
        ("POST", "/projects", {"name": "p", "kpis": [KPI | {"target": True}]}, "target"),
        ("PATCH", "/endpoints/fraud", {"pinned": 0}, "pinned"),
        ("PATCH", "/endpoints/fraud", {"cache": {"enabled": 1}}, "enabled"),
        ("PATCH", "/endpoints/fraud", {"batching": {"max_batch_size": True}}, "max_batch_size"),
        ("PATCH", "/endpoints/fraud", {"timeout_ms": True}, "timeout_ms"),
        ("PUT", "/monitoring/endpoints/fraud/config", {"lateness_seconds": True}, "lateness"),
        ("PUT", "/monitoring/endpoints/fraud/config", {"granularities": [True]}, "granularities"),
        ("POST", "/tokens", {"user": "local", "expires_in_days": True}, "expires_in_days"),
    ],
)
def test_a_boolean_is_not_a_number_nor_a_number_a_boolean(
    http: httpx.Client, fraud: str, method: str, path: str, body: dict, field: str
) -> None:
    assert_problem(http.request(method, path, json=body), 422, field)


def test_alert_rule_numbers_and_booleans_are_strict(http: httpx.Client, fraud: str) -> None:
    rule = {
        "name": "auc-drop",
        "endpoint": fraud,
        "kind": "performance",
        "metric": "accuracy",
        "op": "<",
        "threshold": 0.8,
        "window": 300,
    }
    assert_problem(http.post("/monitoring/rules", json={**rule, "threshold": True}), 422)
    assert_problem(http.post("/monitoring/rules", json={**rule, "enabled": 1}), 422, "enabled")
    too_long = {**rule, "escalate_after": 10**12}  # once overflowed the escalation pass
    assert_problem(http.post("/monitoring/rules", json=too_long), 422, "escalate_after")
    assert http.post("/monitoring/rules", json=rule).status_code == 201
    assert_problem(http.patch("/monitoring/rules/auc-drop", json={"window": False}), 422)
    assert_problem(http.patch("/monitoring/rules/auc-drop", json={"colour": "red"}), 422)
    r = http.patch("/monitoring/rules/auc-drop", json={"threshold": 0.7})
    assert r.status_code == 200 and r.json()["threshold"] == 0.7


def test_durations_that_overflow_a_date_are_422(http: httpx.Client) -> None:
    r = http.post("/tokens", json={"user": "local", "expires_in_days": 10**7})
    assert_problem(r, 422, "expires_in_days")
    trigger = {"name": "t", "pipeline": "p", "kind": "dataset", "dataset": "d"}
    r = http.post("/triggers", json={**trigger, "cooldown_seconds": 10**12})
    assert_problem(r, 422, "cooldown_seconds")


def test_times_are_iso_8601_text(http: httpx.Client, fraud: str) -> None:
    assert_problem(http.get("/monitoring/alerts", params={"since": "0.5"}), 422, "ISO 8601")
    # a valid offset that leaves year 1 in UTC
    r = http.get("/monitoring/alerts", params={"since": "0001-01-01T00:00:00+01:00"})
    assert_problem(r, 422, "out of range")
    assert http.get("/monitoring/alerts", params={"since": "2026-01-01T00:00:00Z"}).json() == []
    r = http.get(f"/monitoring/endpoints/{fraud}/feedback", params={"start": "7"})
    assert_problem(r, 422, "ISO 8601")
    run = http.post("/runs", json={"experiment": "e"}).json()
    point = {"key": "loss", "value": 0.5, "timestamp": 0}
    assert_problem(http.post(f"/runs/{run['id']}/metrics", json={"metrics": [point]}), 422)


def test_bodies_that_are_not_unicode_json_are_400(http: httpx.Client) -> None:
    json_type = {"content-type": "application/json"}
    r = http.post("/models", content=b'{"name": "a", "description": "\\ud800"}', headers=json_type)
    assert_problem(r, 400, "unpaired surrogate")
    r = http.post("/models", content=b'{"name": "\xff\xfe"}', headers=json_type)
    assert_problem(r, 400, "UTF-8")
    assert http.get("/models/a").status_code == 404  # nothing half-stored
    # what the API always read stays readable: NaN metric values, integers beyond 64 bits
    run = http.post("/runs", json={"experiment": "e"}).json()
    nan = b'{"metrics": [{"key": "loss", "value": NaN}]}'
    assert http.post(f"/runs/{run['id']}/metrics", content=nan, headers=json_type).is_success
    big = f'{{"user": "local", "expires_in_days": {HUGE}}}'.encode()
    assert_problem(http.post("/tokens", content=big, headers=json_type), 422, "36500")


def test_integers_beyond_64_bits_in_free_form_json_are_kept_exactly(
    http: httpx.Client, fraud: str, workspace: Workspace
) -> None:
    """Card sections and run params take any JSON; the audit log's encoder (orjson, 64 bits)
    answered a 500 for such a change."""
    card = {"lineage": {"seed": int(HUGE)}}
    r = http.patch(f"/models/{fraud}/versions/1/card", json=card)
    assert r.status_code == 200 and r.json()["lineage"] == {"seed": int(HUGE)}
    r = http.post("/runs", json={"experiment": "e", "params": {"seed": -int(HUGE)}})
    assert r.status_code == 201
    assert http.get(f"/runs/{r.json()['id']}").json()["params"]["seed"] == f"-{HUGE}"  # text
    trigger = {"name": "t", "pipeline": "p", "kind": "dataset", "dataset": "d"}
    r = http.post("/triggers", json={**trigger, "params": {"seed": int(HUGE)}})
    assert_problem(r, 404, "pipeline")  # past validation: the pipeline is not registered
    assert workspace.audit.verify().ok  # the chain hashes the change as recorded


def test_nul_characters_are_never_a_500(any_workspace: Workspace) -> None:
    """PostgreSQL cannot store U+0000 in text, which was a 500 there; SQLite stores it."""
    server = LiveServer(create_app(workspace=any_workspace))
    stores_nul = any_workspace.store.is_sqlite
    try:
        with httpx.Client(base_url=server.url + "/api/v1") as http:
            for r in (
                http.post("/models", json={"name": "m", "description": "a\x00b"}),
                http.post("/runs", json={"experiment": "e", "params": {"k": "x\x00"}}),
                http.get("/models", params={"q": "a\x00"}),
                http.get("/models/a%00b"),
            ):
                if r.status_code == 422:
                    assert not stores_nul
                    assert_problem(r, 422, "NUL")
                else:
                    assert r.status_code < 500, r.text
    finally:
        server.stop()


def test_wrong_method_is_405_allowing_every_method_of_the_path(http: httpx.Client) -> None:
    r = http.request("TRACE", "/models/fraud")
    body = assert_problem(r, 405, "DELETE, GET, PATCH")
    assert r.headers["allow"] == "DELETE, GET, PATCH"
    assert "headers" not in body
    assert http.request("OPTIONS", "/artifacts/x").headers["allow"] == "GET, HEAD, PUT"


def test_an_emptied_target_is_refused_not_ignored(http: httpx.Client, fraud: str) -> None:
    assert_problem(http.patch(f"/endpoints/{fraud}", json={"target": ""}), 422, "target")


def test_openapi_declares_the_problem_documents_each_operation_answers(tmp_path: Path) -> None:
    doc = create_app(Settings(home=tmp_path, auth=False)).openapi()
    assert {"HTTPValidationError", "ValidationError"}.isdisjoint(doc["components"]["schemas"])
    assert "errors" in doc["components"]["schemas"]["Problem"]["properties"]
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            errors = {s: r for s, r in operation["responses"].items() if s[0] in "45"}
            assert "5XX" in errors, (method, path)
            if path != "/api/v1/health":
                assert {"401", "403"} <= set(errors), (method, path)
            if "{" in path:
                assert "404" in errors, (method, path)
            if operation.get("parameters") or operation.get("requestBody"):
                assert "422" in errors, (method, path)
            for declared in errors.values():
                if method == "head":
                    assert "content" not in declared
                else:
                    schema = declared["content"][PROBLEM]["schema"]
                    assert declared["content"].keys() == {PROBLEM}
                    assert schema == {"$ref": "#/components/schemas/Problem"}
    version = doc["paths"]["/api/v1/models/{name}/versions/{version}"]["get"]
    assert version["parameters"][1]["schema"]["maximum"] == INT32_MAX
    assert "413" in doc["paths"]["/api/v1/artifacts/{digest}"]["put"]["responses"]
    assert "400" in doc["paths"]["/api/v1/models"]["post"]["responses"]  # malformed JSON
    assert "security" not in version and "securitySchemes" not in doc["components"]

    with_auth = create_app(Settings(home=tmp_path, auth=True)).openapi()
    assert with_auth["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    secured = with_auth["paths"]["/api/v1/models"]["get"]
    assert secured["security"] == [{"bearer": []}]
    assert "security" not in with_auth["paths"]["/api/v1/health"]["get"]


def test_errors_are_served_as_declared(http: httpx.Client, fraud: str) -> None:
    """A 422 from request validation is a problem document listing the fields."""
    r = http.get(f"/models/{fraud}/versions/{HUGE}")
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["errors"][0]["field"] == "path.version"
    data = b"x"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert http.put(f"/artifacts/{digest}", content=data).status_code == 201
    assert http.head(f"/artifacts/{digest}").status_code == 200


def test_the_sdk_and_cli_get_the_same_answers_in_process(workspace: Workspace) -> None:
    """The domain checks the same bounds: an in-process caller gets InvalidInput, not an
    OverflowError from the database driver."""
    from modelyard.errors import InvalidInput

    workspace.registry.create_model("m")
    with pytest.raises(InvalidInput, match=str(INT32_MAX)):
        workspace.registry.get_version("m", int(HUGE))
    with pytest.raises(InvalidInput, match="min_age_days"):
        workspace.registry.apply_retention("m", keep_last=1, min_age_days=1e308)
    with pytest.raises(InvalidInput, match="min_age_days"):
        workspace.registry.apply_retention("m", keep_last=1, min_age_days=float("nan"))
    with pytest.raises(InvalidInput, match="expires_in_days"):
        workspace.identities.create_token("local", expires_in_days=10**7)


def test_auth_on_documents_and_answers_401_on_a_bad_token(tmp_path: Path) -> None:
    ws = Workspace.open(Settings(home=tmp_path / "h", auth=True))
    server = LiveServer(create_app(workspace=ws))
    try:
        r = httpx.get(
            f"{server.url}/api/v1/models/m/versions/{HUGE}",
            headers={"authorization": b"Bearer \xff\xfe"},
        )
        assert_problem(r, 401)
    finally:
        server.stop()
        ws.close()
