"""Every route of the HTTP API x every role x every scope: 403 exactly when the caller does
not hold the permission the route needs where it acts, never a 500.

The expectation is written here, apart from the code: a GET reads; a change needs write on
the workspace, except the routes below (a model's own routes: write on that model; user,
token, key and audit-integrity routes: admin; roles and policies: admin of the scope;
approving: approve). A route added without a place here is checked as a plain write.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard.client import Client
from modelyard.config import Settings
from modelyard.governance import Identity, Role
from modelyard.governance.entities import Permission
from modelyard.workspace import Workspace
from tests.conftest import LiveServer

X = pd.DataFrame(np.random.default_rng(5).normal(size=(30, 2)), columns=["a", "b"])
MODEL = LogisticRegression().fit(X, (X.a > 0).astype(int))


@dataclass(frozen=True)
class Caller:
    name: str
    role: Role
    #: scope -> role bound there
    bound: dict[str, Role] = field(default_factory=dict)
    limited: bool = False  # a token limited to predicting on an endpoint

    def holds(self, permission: Permission, scope: str) -> bool:
        if self.limited:
            return False
        if self.role.grants(permission):
            return True
        covering = {"workspace"} | (
            {"model:fraud", "project:payments"} if scope == "model:fraud" else set()
        )
        return any(role.grants(permission) for s, role in self.bound.items() if s in covering)


CALLERS = [
    Caller("vi", Role.viewer),
    Caller("ed", Role.editor),
    Caller("ap", Role.approver),
    Caller("de", Role.deployer),
    Caller("ad", Role.admin),
    Caller("fe", Role.viewer, {"model:fraud": Role.editor}),
    Caller("pe", Role.viewer, {"project:payments": Role.editor}),
    Caller("oe", Role.viewer, {"model:other": Role.editor}),
    Caller("fa", Role.viewer, {"model:fraud": Role.approver}),
    Caller("fadm", Role.viewer, {"model:fraud": Role.admin}),
    Caller("lim", Role.admin, limited=True),
]

#: (method, path regex) -> (permission, scope); first match wins. Scope "model:fraud" for
#: routes that act on the model in the path (or named in the body, as sent below).
EXPECTED: list[tuple[str, str, Permission, str]] = [
    ("GET", r"/users|/tokens|/audit/verify", Permission.admin, "workspace"),
    ("GET", r".*", Permission.read, "workspace"),
    ("HEAD", r".*", Permission.read, "workspace"),
    ("*", r"/users.*|/tokens.*|/audit/.*|/keys.*|/limits.*", Permission.admin, "workspace"),
    ("POST", r"/models", Permission.write, "workspace"),  # a new model, in no project
    # fraud has an alias policy: archiving or deleting it would take its aliases away
    ("POST", r"/models/\{name\}/archive", Permission.admin, "model:fraud"),
    ("DELETE", r"/models/\{name\}", Permission.admin, "model:fraud"),
    ("*", r"/models/\{name\}.*", Permission.write, "model:fraud"),
    ("*", r"/roles.*|/policies.*", Permission.admin, "model:fraud"),
    ("POST", r"/approvals", Permission.write, "model:fraud"),
    ("POST", r"/approvals/\{approval_id\}/.*", Permission.approve, "model:fraud"),
    # rollouts: an editor at the route; on a model alias policies govern, starting one also
    # takes the deploy permission there (tests/rollouts/test_rollouts_api.py); other-ep's
    # model is not governed
    ("*", r"/rollouts.*|/rollout-passes", Permission.write, "workspace"),
    ("*", r".*", Permission.write, "workspace"),
]

#: Valid bodies where the domain decides (FastAPI validates a body before the service runs).
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/models"): {"name": "brand-new"},
    ("POST", "/models/{name}/versions"): {"manifest_digest": "{digest}"},
    ("PATCH", "/models/{name}"): {"description": "checked"},
    ("PATCH", "/models/{name}/versions/{version}"): {"description": "checked"},
    ("PATCH", "/models/{name}/versions/{version}/card"): {"summary": "checked"},
    ("PUT", "/models/{name}/aliases/{alias}"): {"version": 1},
    ("POST", "/models/{name}/retention"): {"keep_last": 50, "dry_run": True},
    ("POST", "/models/{name}/versions/{version}/variants"): {"distill": "tree"},
    ("POST", "/roles"): {"subject": "user:vi", "role": "viewer", "scope": "model:fraud"},
    ("PUT", "/policies/{name}"): {"scope": "model:fraud", "aliases": ["prod"], "approvals": 0},
    ("POST", "/approvals"): {"subject": "models:/fraud/2@champion"},
    ("POST", "/approvals/{approval_id}/approve"): {"note": ""},
    ("POST", "/approvals/{approval_id}/reject"): {"note": ""},
    ("POST", "/rollouts"): {"endpoint": "other-ep", "to": "models:/other/2"},
}


def expected(method: str, path: str) -> tuple[Permission, str]:
    for m, pattern, permission, scope in EXPECTED:
        if m in ("*", method) and re.fullmatch(pattern, path):
            return permission, scope
    raise AssertionError("unreachable: the last rule matches everything")


@dataclass
class World:
    url: str
    tokens: dict[str, str]
    values: dict[str, str]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """A server with auth on, on SQLite and on PostgreSQL."""
    from modelyard.api.app import create_app

    home = tmp_path_factory.mktemp("authz") / "home"
    database = None
    if request.param == "postgres":
        databases = request.getfixturevalue("pg_databases")
        database = databases.create()
    url = databases.url(database) if database else None
    ws = Workspace.open(Settings(home=home, auth=True, database_url=url))
    ws.projects.create("payments")
    ws.registry.create_model("fraud", project="payments")
    with Client(settings=ws.settings) as client:
        v1 = client.log_model(MODEL, "fraud", input_example=X.head(3))
        other = client.log_model(MODEL, "other", input_example=X.head(3))
    ws.registry.create_version("fraud", v1.manifest_digest)
    ws.registry.create_version("other", other.manifest_digest)  # a version to roll out
    ws.endpoints.create("other-ep", "models:/other/1")
    tokens = {}
    for caller in CALLERS:
        ws.identities.create_user(caller.name, caller.role)
        for scope, role in caller.bound.items():
            ws.access.bind(f"user:{caller.name}", role, scope)
        endpoints = ["fraud-ep"] if caller.limited else None
        tokens[caller.name] = ws.identities.create_token(caller.name, endpoints=endpoints).secret
    approval = ws.approvals.request("models:/fraud/2@champion")
    ws.identities.create_user("spare", "viewer")  # a binding for DELETE /roles/{id} to remove
    binding = ws.access.bind("user:spare", "editor", "model:fraud")
    ws.policies.set("matrix", "model:fraud", aliases=["guarded"])
    values = {
        "name": "fraud",
        "version": "1",
        "alias": "challenger",
        "approval_id": approval.id,
        "binding_id": binding.id,
        "key_id": "0" * 16,
        "digest": v1.manifest_digest.removeprefix("sha256:"),
        "ref": "other-ep",  # the rollout POST /rollouts starts, then pause, resume, abort
    }
    server = LiveServer(create_app(workspace=ws))
    try:
        yield World(server.url, tokens, values)
    finally:
        server.stop()
        ws.close()
        if database:
            databases.drop(database)


def routes(url: str) -> list[tuple[str, str]]:
    doc = httpx.get(f"{url}/openapi.json").json()
    found = []
    for path, operations in doc["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method in operations:
            found.append((method.upper(), path.removeprefix("/api/v1")))
    return found


def test_every_route_every_role_every_scope(world: World) -> None:
    checked, problems = 0, []
    http = httpx.Client()
    policy_path = {"/policies/{name}": "matrix"}
    for method, path in routes(world.url):
        concrete = policy_path.get(path) or re.sub(
            r"\{(\w+)\}", lambda m: world.values.get(m.group(1), "x"), path
        )
        body = BODIES.get((method, path))
        if body and "{digest}" in str(body):
            body = {"manifest_digest": "sha256:" + world.values["digest"]}
        anonymous = httpx.request(method, world.url + "/api/v1" + concrete, json=body)
        if anonymous.status_code != 401:
            assert path in ("/health", "/whoami") or anonymous.status_code < 500, (method, path)
            continue  # public
        permission, scope = expected(method, path)
        # the refused first: an allowed call may delete what a refused one must find
        ordered = sorted(CALLERS, key=lambda c: c.holds(permission, scope))
        for caller in ordered:
            allowed = caller.holds(permission, scope) or path == "/whoami"  # any token may ask
            r = http.request(
                method,
                world.url + "/api/v1" + concrete,
                json=body,
                headers={"authorization": f"Bearer {world.tokens[caller.name]}"},
            )
            checked += 1
            if r.status_code >= 500 or (r.status_code == 403) == allowed:
                problems.append(f"{method} {path} as {caller.name}: {r.status_code} {r.text[:160]}")
            elif r.status_code == 403:
                assert r.headers["content-type"].startswith("application/problem+json")
    http.close()
    assert not problems, "\n".join(problems)
    assert checked > 500


def test_the_issues_editor_bypass_is_a_403_naming_the_policy(world: World) -> None:
    def put(caller: str, alias: str) -> httpx.Response:
        return httpx.put(
            f"{world.url}/api/v1/models/fraud/aliases/{alias}",
            json={"version": 2},
            headers={"authorization": f"Bearer {world.tokens[caller]}"},
        )

    refused = put("ed", "guarded")
    assert refused.status_code == 403
    detail = refused.json()["detail"]
    assert "protected by policy 'matrix'" in detail and "role deployer" in detail
    # a deployer still needs the approval
    assert "needs 1 approval" in put("de", "guarded").json()["detail"]
    assert put("ed", "unguarded").status_code == 200  # not named by the policy


def test_whoami_shows_groups_and_a_viewer_sees_bindings(world: World) -> None:
    who = httpx.get(
        f"{world.url}/api/v1/whoami", headers={"authorization": f"Bearer {world.tokens['fe']}"}
    ).json()
    assert Identity(**who) == Identity(name="fe", role=Role.viewer)
    bindings = httpx.get(
        f"{world.url}/api/v1/roles",
        params={"subject": "user:fe"},
        headers={"authorization": f"Bearer {world.tokens['vi']}"},
    ).json()
    assert [(b["role"], b["scope"]) for b in bindings] == [("editor", "model:fraud")]


def test_bad_scopes_and_subjects_are_422(world: World) -> None:
    auth = {"authorization": f"Bearer {world.tokens['ad']}"}
    for body, needle in [
        ({"subject": "team:x", "role": "viewer"}, "not a subject"),
        ({"subject": "user:x", "role": "viewer", "scope": "models:x"}, "not a scope"),
    ]:
        r = httpx.post(f"{world.url}/api/v1/roles", json=body, headers=auth)
        assert r.status_code == 422 and needle in r.json()["detail"], r.text
    r = httpx.post(
        f"{world.url}/api/v1/roles", json={"subject": "user:x", "role": "boss"}, headers=auth
    )
    assert r.status_code == 422
    r = httpx.put(f"{world.url}/api/v1/policies/p", json={"scope": "workspace"}, headers=auth)
    assert r.status_code == 422 and "on a model or a project" in r.json()["detail"]


def test_local_paths_cover_the_sdk(tmp_path: Path) -> None:
    """The SDK in-process as a registered user is refused as over HTTP."""
    ws = Workspace.open(Settings(home=tmp_path / "h"))
    ws.identities.create_user("vi", "viewer")
    from modelyard.errors import Forbidden

    with pytest.raises(Forbidden, match="vi may not create models on model m"):
        ws.as_actor("vi").registry.create_model("m")
    assert ws.registry.create_model("m").name == "m"  # the local operator: admin
