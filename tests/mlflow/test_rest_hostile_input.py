"""MLflow's REST API given what no MLflow client sends: odd digits, MLmodels that parse but
describe nothing modelyard can read, filters of hundreds of clauses, lists beyond what one
database query takes. Each is a 4xx in MLflow's form saying what to fix, never a 500, and a
refusal changes nothing (a stage transition a policy refuses moves no alias)."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.config import Settings
from modelyard.governance import LOCAL_USER
from modelyard.workspace import Workspace
from tests.conftest import LiveServer

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
SKLEARN = (
    "flavors:\n  sklearn:\n    pickled_model: model.pkl\n    serialization_format: cloudpickle\n"
)
SIGNATURE = 'signature:\n  inputs: \'[{"type": "double", "name": "x"}]\'\n'


def error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code, body
    return str(body["message"])


def refused(response: httpx.Response) -> str:
    return error(response, 400, "INVALID_PARAMETER_VALUE")


class Mlflow:
    """MLflow's REST API of a live server, as a bearer of ``token`` (None: auth off)."""

    def __init__(self, url: str, token: str | None = None) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=60)

    def post(self, path: str, body: Any) -> httpx.Response:
        return self.http.post(API + path, json=body)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(API + path, params=params)

    def ok(self, response: httpx.Response) -> dict[str, Any]:
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def model_dir(self, path: str, mlmodel: str, **files: bytes) -> str:
        """Upload an MLflow model directory to ``path`` of a new run; its runs:/ URI."""
        exp = self.ok(self.post("/experiments/create", {"name": f"e-{path}"}))["experiment_id"]
        run = self.ok(self.post("/runs/create", {"experiment_id": exp}))["run"]["info"]["run_id"]
        files = {"MLmodel": mlmodel.encode(), "model.pkl": pickle.dumps(1, protocol=4), **files}
        for name, data in files.items():
            put = self.http.put(f"{ARTIFACTS}/{exp}/{run}/artifacts/{path}/{name}", content=data)
            assert put.status_code == 200, put.text
        return f"runs:/{run}/{path}"


@pytest.fixture
def api(live_server: LiveServer) -> Iterator[Mlflow]:
    client = Mlflow(live_server.url)
    yield client
    client.http.close()


def test_digits_beyond_ascii_are_not_numbers(api: Mlflow) -> None:
    # str.isdigit() holds for "²", which int() refuses
    api.ok(api.post("/registered-models/create", {"name": "m"}))
    assert "positive integer" in refused(api.get("/model-versions/get", name="m", version="²"))
    alias = api.post("/registered-models/alias", {"name": "m", "alias": "a", "version": "²"})
    assert "positive integer" in refused(alias)
    search = api.get("/model-versions/search", filter="version_number = ²")
    assert "compares with a number" in refused(search)
    assert "view type" in refused(api.get("/experiments/search", view_type="²"))
    listing = api.http.get(ARTIFACTS, params={"path": "registry/m/²"})
    assert "not a version number" in refused(listing)


@pytest.mark.parametrize(
    ("mlmodel", "files", "reason"),
    [
        (
            SKLEARN + 'signature:\n  inputs: \'[{"type": "tensor", "tensor-spec": '
            '{"dtype": "float64", "shape": ["a"]}}]\'\n',
            {},
            "a shape is a list of integers",
        ),
        (
            SKLEARN + 'signature:\n  inputs: \'[{"type": "tensor", "tensor-spec": 5}]\'\n',
            {},
            "tensor-spec that is no object",
        ),
        (
            SKLEARN + "saved_input_example_info:\n  artifact_path: input_example.json\n"
            "  type: ndarray\n",
            {"input_example.json": b"[[1, 2], [3]]"},
            "is not a ndarray input example",
        ),
        (
            SKLEARN + "saved_input_example_info:\n  artifact_path: input_example.json\n"
            "  type: dataframe\n",
            {"input_example.json": b'{"columns": ["a", "b"], "data": [[1]]}'},
            "is not a dataframe input example",
        ),
        (
            SKLEARN + "saved_input_example_info:\n  artifact_path: input_example.json\n"
            "  type: dataframe\n",
            {"input_example.json": b'[{"a": {"b": 1}}]'},
            "no signature can be inferred from its input example",
        ),
    ],
    ids=["shape", "tensor-spec", "ragged-example", "columns-example", "nested-example"],
)
def test_mlmodels_that_describe_nothing_readable_are_refused(
    api: Mlflow, mlmodel: str, files: dict[str, bytes], reason: str
) -> None:
    source = api.model_dir("model", mlmodel, **files)
    api.ok(api.post("/registered-models/create", {"name": "m"}))
    answer = api.post("/model-versions/create", {"name": "m", "source": source})
    assert reason in refused(answer)


def test_yaml_types_of_mlmodel_are_kept_as_text(api: Mlflow) -> None:
    # !!binary is bytes to YAML, which a manifest's JSON cannot hold
    source = api.model_dir("model", SKLEARN + "run_id: !!binary /w==\n" + SIGNATURE)
    api.ok(api.post("/registered-models/create", {"name": "m"}))
    api.ok(api.post("/model-versions/create", {"name": "m", "source": source}))


def test_filters_of_too_many_clauses_are_refused(api: Mlflow) -> None:
    exp = api.ok(api.post("/experiments/create", {"name": "e"}))["experiment_id"]
    many = " and ".join(f"params.p{i} = 'a'" for i in range(51))
    runs = api.post("/runs/search", {"experiment_ids": [exp], "filter": many})
    assert "more than 50 clauses" in refused(runs)
    experiments = api.post("/experiments/search", {"filter": many.replace("params", "tags")})
    assert "more than 50 clauses" in refused(experiments)
    fifty = " and ".join(f"params.p{i} = 'a'" for i in range(50))
    assert api.ok(api.post("/runs/search", {"experiment_ids": [exp], "filter": fifty})) == {}
    tags = " AND ".join(f"tags.t{i} = 'a'" for i in range(51))
    assert "more than 50 clauses" in refused(api.get("/model-versions/search", filter=tags))
    assert "more than 50 clauses" in refused(api.get("/registered-models/search", filter=tags))


def test_logged_model_search_pages_beyond_a_page_of_modelyard(api: Mlflow) -> None:
    # MLflow's client sends the max_results it was given and pages on next_page_token
    exp = api.ok(api.post("/experiments/create", {"name": "e"}))["experiment_id"]
    api.ok(api.post("/logged-models", {"experiment_id": exp}))
    found = api.post("/logged-models/search", {"experiment_ids": [exp], "max_results": 5000})
    assert len(api.ok(found)["models"]) == 1
    zero = api.post("/logged-models/search", {"experiment_ids": [exp], "max_results": 0})
    assert "max_results must be positive" in refused(zero)


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[tuple[Workspace, str]]:
    from modelyard.api.app import create_app

    ws = Workspace.open(Settings(home=tmp_path / "auth-home", auth=True))
    server = LiveServer(create_app(workspace=ws))
    yield ws, server.url
    server.stop()
    ws.close()


def test_a_viewer_reading_experiment_zero_creates_nothing(
    auth_server: tuple[Workspace, str],
) -> None:
    ws, url = auth_server
    ws.identities.create_user("vi", "viewer")
    viewer = Mlflow(url, ws.identities.create_token("vi").secret)
    missing = viewer.get("/experiments/get", experiment_id="0")
    assert "Default" in error(missing, 404, "RESOURCE_DOES_NOT_EXIST")
    assert ws.tracking.list_experiments().items == []
    ws.identities.create_user("ed", "editor")
    editor = Mlflow(url, ws.identities.create_token("ed").secret)
    made = editor.ok(editor.get("/experiments/get", experiment_id="0"))["experiment"]
    assert made["experiment_id"] == "0" and made["name"] == "Default"
    assert viewer.ok(viewer.get("/experiments/get", experiment_id="0"))["experiment"] == made


def test_a_transition_a_policy_refuses_moves_no_alias(auth_server: tuple[Workspace, str]) -> None:
    ws, url = auth_server
    ws.identities.create_user("ad", "admin")
    ws.identities.create_user("dp", "deployer")
    admin = Mlflow(url, ws.identities.create_token("ad").secret)
    deployer = Mlflow(url, ws.identities.create_token("dp").secret)
    source = admin.model_dir("model", SKLEARN + SIGNATURE)
    admin.ok(admin.post("/registered-models/create", {"name": "m"}))
    admin.ok(admin.post("/model-versions/create", {"name": "m", "source": source}))
    to_production = {"name": "m", "version": "1", "stage": "Production"}
    admin.ok(admin.post("/model-versions/transition-stage", to_production))
    ws.as_identity(LOCAL_USER).policies.set(
        "prod", "model:m", aliases=["production"], role="deployer", approvals=0
    )
    # Staging would move freely, but leaving Production deletes a protected alias
    to_staging = {"name": "m", "version": "1", "stage": "Staging"}
    answer = deployer.post("/model-versions/transition-stage", to_staging)
    assert "only an admin of m may delete it" in error(answer, 403, "PERMISSION_DENIED")
    assert ws.registry.get_model("m").aliases == {"production": 1}


@pytest.mark.postgres
def test_more_values_than_one_query_takes_is_bad_input(pg_url: str, tmp_path: Path) -> None:
    # PostgreSQL takes at most 65,535 parameters a query; psycopg calls more "operational",
    # which is not the database being unavailable (a 503 MLflow's client would retry)
    from modelyard.api.app import create_app

    ws = Workspace.open(Settings(home=tmp_path / "home", database_url=pg_url))
    server = LiveServer(create_app(workspace=ws))
    try:
        api = Mlflow(server.url)
        ids = [f"x{i}" for i in range(70_000)]
        answer = api.post("/runs/search", {"experiment_ids": ids})
        assert "more values than one database query takes" in refused(answer)
        api.http.close()
    finally:
        server.stop()
        ws.close()


def test_an_mlflow_route_modelyard_does_not_serve_answers_in_mlflows_form(
    tmp_path: Path,
) -> None:
    from fastapi.testclient import TestClient

    from modelyard.api.app import create_app

    ws = Workspace.open(Settings(home=tmp_path / "home"))
    try:
        with TestClient(create_app(workspace=ws)) as client:
            for method, path in (
                ("POST", "/api/2.0/mlflow/traces"),
                ("GET", "/ajax-api/2.0/mlflow/gateway/routes"),
                ("GET", "/api/2.0/mlflow/runs/log-batch"),  # a route, another method
            ):
                answer = client.request(method, path)
                assert answer.status_code == 404, (path, answer.text)
                body = answer.json()
                assert body["error_code"] == "ENDPOINT_NOT_FOUND", body
                assert path in body["message"] and "docs/mlflow.md" in body["message"]
            # the served routes still answer
            ok = client.get("/api/2.0/mlflow/experiments/get-by-name?experiment_name=none")
            assert ok.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    finally:
        ws.close()
