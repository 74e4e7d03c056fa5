"""MLflow's model registry REST API (``registered-models/*``, ``model-versions/*``) on
modelyard's registry: MLflow's JSON, versions made of MLflow files uploaded through the
artifact proxy (runs and MLflow 3's logged models), stages as aliases under governance,
searches, every error in MLflow's form, and a registered MLflow version serving through the
gateway."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from modelyard.config import Settings
from modelyard.tracking.entities import Run
from modelyard.workspace import Workspace
from tests.conftest import LiveServer
from tests.mlflow.conftest import RunMlflow
from tests.mlflow.conftest import mlflow3_python as mlflow3_python
from tests.mlflow.saved_models import batch, expected, saved_models

pytestmark = pytest.mark.timeout(900)

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"


@pytest.fixture(scope="module")
def mlflow_dirs(mlflow3_python: Path) -> Path:
    return saved_models(mlflow3_python)


@pytest.fixture
def run(workspace: Workspace) -> Run:
    return workspace.tracking.start_run("registry", name="train")


def call(url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{url}{API}{path}", timeout=60, **kwargs)


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code, body
    return str(body["message"])


def upload(url: str, location: str, src: Path) -> None:
    """Upload a directory's files through MLflow's artifact proxy, as MLflow's client does."""
    for file in sorted(src.rglob("*")):
        if file.is_file():
            rel = file.relative_to(src).as_posix()
            r = httpx.put(f"{url}{ARTIFACTS}/{location}/{rel}", content=file.read_bytes())
            assert r.status_code == 200, r.text


def run_location(run: Run, path: str = "model") -> str:
    return f"{run.experiment_id}/{run.id}/artifacts/{path}"


def create_version(url: str, name: str, source: str, **fields: Any) -> dict[str, Any]:
    body = {"name": name, "source": source, **fields}
    return ok(call(url, "POST", "/model-versions/create", json=body))["model_version"]  # type: ignore[no-any-return]


def registered(url: str, name: str) -> dict[str, Any]:
    return ok(call(url, "GET", "/registered-models/get", params={"name": name}))["registered_model"]  # type: ignore[no-any-return]


def version_of(url: str, name: str, version: int) -> dict[str, Any]:
    answer = call(url, "GET", "/model-versions/get", params={"name": name, "version": str(version)})
    return ok(answer)["model_version"]  # type: ignore[no-any-return]


# --- registered models --------------------------------------------------------------------


def test_registered_models_in_mlflows_json(live_server: LiveServer) -> None:
    url = live_server.url
    body = {
        "name": "fraud",
        "description": "card fraud",
        "tags": [{"key": "team", "value": "risk"}],
    }
    model = ok(call(url, "POST", "/registered-models/create", json=body))["registered_model"]
    assert model["name"] == "fraud" and model["description"] == "card fraud"
    assert model["tags"] == [{"key": "team", "value": "risk"}]
    assert model["latest_versions"] == [] and model["aliases"] == []
    assert model["creation_timestamp"] > 0 and model["last_updated_timestamp"] > 0
    again = call(url, "POST", "/registered-models/create", json={"name": "fraud"})
    assert "exists already" in error(again, 400, "RESOURCE_ALREADY_EXISTS")

    patched = call(
        url, "PATCH", "/registered-models/update", json={"name": "fraud", "description": "v2"}
    )
    assert ok(patched)["registered_model"]["description"] == "v2"
    tag = {"name": "fraud", "key": "owner", "value": "ana"}
    assert ok(call(url, "POST", "/registered-models/set-tag", json=tag)) == {}
    assert {"key": "owner", "value": "ana"} in registered(url, "fraud")["tags"]
    gone = {"name": "fraud", "key": "owner"}
    assert ok(call(url, "DELETE", "/registered-models/delete-tag", json=gone)) == {}
    assert registered(url, "fraud")["tags"] == [{"key": "team", "value": "risk"}]

    renamed = call(
        url, "POST", "/registered-models/rename", json={"name": "fraud", "new_name": "fraud2"}
    )
    assert ok(renamed)["registered_model"]["name"] == "fraud2"
    missing = call(url, "GET", "/registered-models/get", params={"name": "fraud"})
    assert "no model 'fraud'" in error(missing, 404, "RESOURCE_DOES_NOT_EXIST")
    # the ajax-api prefix (MLflow's UI) answers the same
    ui = httpx.get(f"{url}/ajax-api/2.0/mlflow/registered-models/get", params={"name": "fraud2"})
    assert ui.json()["registered_model"]["name"] == "fraud2"

    assert ok(call(url, "DELETE", "/registered-models/delete", json={"name": "fraud2"})) == {}
    missing = call(url, "GET", "/registered-models/get", params={"name": "fraud2"})
    error(missing, 404, "RESOURCE_DOES_NOT_EXIST")
    nothing = call(url, "DELETE", "/registered-models/delete", json={"name": "fraud2"})
    error(nothing, 404, "RESOURCE_DOES_NOT_EXIST")
    invalid = call(url, "POST", "/registered-models/create", json={"name": "no spaces please"})
    assert "model name 'no spaces please' is not valid" in error(
        invalid, 400, "INVALID_PARAMETER_VALUE"
    )


def test_rename_is_refused_while_an_endpoint_serves_the_model(
    live_server: LiveServer, workspace: Workspace, mlflow_dirs: Path, run: Run
) -> None:
    url = live_server.url
    ok(call(url, "POST", "/registered-models/create", json={"name": "fraud"}))
    upload(url, run_location(run), mlflow_dirs / "sklearn-skops")
    create_version(url, "fraud", f"runs:/{run.id}/model")
    workspace.endpoints.create("scoring", "models:/fraud/1")
    refused = call(
        url, "POST", "/registered-models/rename", json={"name": "fraud", "new_name": "x"}
    )
    assert "endpoint scoring refer(s) to it by name" in error(refused, 400, "INVALID_STATE")
    ok(call(url, "POST", "/registered-models/create", json={"name": "taken"}))
    workspace.endpoints.delete("scoring")
    taken = call(
        url, "POST", "/registered-models/rename", json={"name": "fraud", "new_name": "taken"}
    )
    assert "model 'taken' exists already" in error(taken, 400, "RESOURCE_ALREADY_EXISTS")


def test_search_registered_models_filters_orders_and_pages(live_server: LiveServer) -> None:
    url = live_server.url
    for name, team in (("fraud-cards", "risk"), ("fraud-loans", "credit"), ("churn", "risk")):
        body = {"name": name, "tags": [{"key": "team", "value": team}]}
        ok(call(url, "POST", "/registered-models/create", json=body))

    def names(**params: Any) -> list[str]:
        found = ok(call(url, "GET", "/registered-models/search", params=params))
        return [m["name"] for m in found.get("registered_models", [])]

    assert names() == ["churn", "fraud-cards", "fraud-loans"]
    assert names(filter="name LIKE 'fraud%'") == ["fraud-cards", "fraud-loans"]
    assert names(filter="name ILIKE '%LOANS'") == ["fraud-loans"]
    assert names(filter="name = 'churn'") == ["churn"]
    assert names(filter="tags.team = 'risk'") == ["churn", "fraud-cards"]
    assert names(filter="name LIKE 'fraud%' and tags.`team` = 'risk'") == ["fraud-cards"]
    # != holds where the tag is missing too (MLflow's client leaves prompts out so)
    assert names(filter="tags.team != 'risk'") == ["fraud-loans"]
    assert names(filter="tags.`mlflow.prompt.is_prompt` != 'true'") == [
        "churn",
        "fraud-cards",
        "fraud-loans",
    ]
    assert names(filter="name IN ('churn', 'fraud-loans')") == ["churn", "fraud-loans"]
    assert names(filter="name NOT IN ('churn')") == ["fraud-cards", "fraud-loans"]
    assert names(order_by=["name DESC"]) == ["fraud-loans", "fraud-cards", "churn"]
    first = ok(call(url, "GET", "/registered-models/search", params={"max_results": 2}))
    assert [m["name"] for m in first["registered_models"]] == ["churn", "fraud-cards"]
    rest = call(
        url,
        "GET",
        "/registered-models/search",
        params={"max_results": 2, "page_token": first["next_page_token"]},
    )
    assert [m["name"] for m in ok(rest)["registered_models"]] == ["fraud-loans"]
    assert "next_page_token" not in ok(rest)

    bad = call(url, "GET", "/registered-models/search", params={"filter": "owner = 'x'"})
    assert "cannot filter on 'owner'" in error(bad, 400, "INVALID_PARAMETER_VALUE")
    bad = call(url, "GET", "/registered-models/search", params={"filter": "name = fraud"})
    assert "quote the value of name" in error(bad, 400, "INVALID_PARAMETER_VALUE")
    bad = call(url, "GET", "/registered-models/search", params={"filter": "name > 'a'"})
    assert "name takes =, !=, LIKE, ILIKE, IN, NOT IN, not >" in error(
        bad, 400, "INVALID_PARAMETER_VALUE"
    )
    bad = call(
        url, "GET", "/registered-models/search", params={"filter": "name = 'a' OR name = 'b'"}
    )
    assert "clauses are joined with AND only" in error(bad, 400, "INVALID_PARAMETER_VALUE")
    bad = call(url, "GET", "/registered-models/search", params={"order_by": ["size DESC"]})
    assert "cannot order by 'size'" in error(bad, 400, "INVALID_PARAMETER_VALUE")
    bad = call(url, "GET", "/registered-models/search", params={"page_token": "nonsense"})
    assert "page_token is not valid" in error(bad, 400, "INVALID_PARAMETER_VALUE")


# --- versions from MLflow's files -----------------------------------------------------------


def test_versions_from_a_runs_files_in_mlflows_json(
    live_server: LiveServer, workspace: Workspace, mlflow_dirs: Path, run: Run
) -> None:
    url = live_server.url
    ok(call(url, "POST", "/registered-models/create", json={"name": "fraud"}))
    upload(url, run_location(run), mlflow_dirs / "sklearn-skops")
    source = f"mlflow-artifacts:/{run_location(run)}"  # what MLflow 2's register_model sends
    tags = [{"key": "stage", "value": "candidate"}]
    v1 = create_version(url, "fraud", source, run_id=run.id, tags=tags, description="first")
    assert v1["version"] == "1" and v1["status"] == "READY" and v1["current_stage"] == "None"
    assert (v1["name"], v1["source"], v1["run_id"]) == ("fraud", source, run.id)
    assert v1["tags"] == tags and v1["description"] == "first" and v1["aliases"] == []
    v2 = create_version(url, "fraud", f"runs:/{run.id}/model")  # the run comes from the source
    assert (v2["version"], v2["run_id"]) == ("2", run.id)

    # modelyard's own version: the format from MLmodel, every MLflow file kept, by digest
    version = workspace.registry.get_version("fraud", 1)
    assert version.format == "sklearn"
    assert {"MLmodel", "model.skops", "requirements.txt"} <= set(version.manifest["files"])
    stored = {a.path: a.digest for a in workspace.tracking.list_artifacts(run.id)}
    assert version.manifest["files"]["model.skops"]["digest"] == stored["model/model.skops"]
    got = workspace.registry.load_model("models:/fraud/2").predict(batch(mlflow_dirs))
    np.testing.assert_array_equal(got["predictions"], expected(mlflow_dirs)["sklearn-skops"])
    # skops loads without trust, so the version gets the ONNX fast path as native ones do
    from modelyard.serving.runtime import check_onnx

    assert check_onnx(workspace, version).status == "identical"

    uri = ok(
        call(
            url, "GET", "/model-versions/get-download-uri", params={"name": "fraud", "version": "1"}
        )
    )
    assert uri == {"artifact_uri": "mlflow-artifacts:/registry/fraud/1"}
    assert version_of(url, "fraud", 2)["source"] == f"runs:/{run.id}/model"
    latest = registered(url, "fraud")["latest_versions"]
    assert [(v["version"], v["current_stage"]) for v in latest] == [("2", "None")]

    update = {"name": "fraud", "version": "1", "description": "the first"}
    updated = ok(call(url, "PATCH", "/model-versions/update", json=update))["model_version"]
    assert updated["description"] == "the first"
    tag = {"name": "fraud", "version": "1", "key": "validated", "value": "yes"}
    ok(call(url, "POST", "/model-versions/set-tag", json=tag))
    assert {"key": "validated", "value": "yes"} in version_of(url, "fraud", 1)["tags"]
    ok(
        call(
            url,
            "DELETE",
            "/model-versions/delete-tag",
            json={"name": "fraud", "version": "1", "key": "stage"},
        )
    )
    assert version_of(url, "fraud", 1)["tags"] == [{"key": "validated", "value": "yes"}]

    def found(text: str, **params: Any) -> list[str]:
        answer = ok(call(url, "GET", "/model-versions/search", params={"filter": text, **params}))
        return [f"{v['name']}/{v['version']}" for v in answer.get("model_versions", [])]

    assert found("name = 'fraud'") == ["fraud/2", "fraud/1"]
    assert found(f"run_id = '{run.id}' AND version_number > 1") == ["fraud/2"]
    assert found(f"run_id IN ('{run.id}', 'other')", order_by=["version_number ASC"]) == [
        "fraud/1",
        "fraud/2",
    ]
    assert found("tags.validated = 'yes'") == ["fraud/1"]
    assert found("source_path LIKE 'runs:/%'") == ["fraud/2"]
    assert found("name = 'fraud'", max_results=10_000) == ["fraud/2", "fraud/1"]  # MLflow's default
    bad = call(url, "GET", "/model-versions/search", params={"filter": "version_number = 'x'"})
    assert "version_number compares with a number" in error(bad, 400, "INVALID_PARAMETER_VALUE")

    ok(call(url, "DELETE", "/model-versions/delete", json={"name": "fraud", "version": "2"}))
    gone = call(url, "GET", "/model-versions/get", params={"name": "fraud", "version": "2"})
    assert "model 'fraud' has no version 2" in error(gone, 404, "RESOURCE_DOES_NOT_EXIST")


def test_versions_from_an_mlflow_3_logged_model(
    live_server: LiveServer, workspace: Workspace, mlflow_dirs: Path, run: Run
) -> None:
    url = live_server.url
    ok(call(url, "POST", "/registered-models/create", json={"name": "boost"}))
    logged = workspace.logged_models.create(run.experiment_id, name="model", source_run_id=run.id)
    upload(url, f"{run.experiment_id}/models/{logged.id}/artifacts", mlflow_dirs / "xgboost")
    # MLflow 3's log_model(registered_model_name=...) sends models:/<model id> and model_id
    v1 = create_version(url, "boost", f"models:/{logged.id}", model_id=logged.id)
    assert (v1["model_id"], v1["run_id"]) == (logged.id, run.id)
    location = f"mlflow-artifacts:/{run.experiment_id}/models/{logged.id}/artifacts"
    v2 = create_version(url, "boost", location)
    assert v2["version"] == "2"
    assert workspace.registry.get_version("boost", 2).format == "xgboost"
    got = workspace.registry.load_model("models:/boost/1").predict(batch(mlflow_dirs))
    np.testing.assert_array_equal(got["predictions"], expected(mlflow_dirs)["xgboost"])
    # MLflow 3 registers a model logged in a run by the run's path too
    v3 = create_version(url, "boost", f"runs:/{run.id}/model")
    digest = workspace.registry.get_version("boost", 1).manifest_digest
    assert workspace.registry.get_version("boost", 3).manifest_digest == digest
    assert v3["run_id"] == run.id
    # and from another registered version: the same manifest
    ok(call(url, "POST", "/registered-models/create", json={"name": "copy"}))
    create_version(url, "copy", "models:/boost/1")
    assert workspace.registry.get_version("copy", 1).manifest_digest == digest


def test_an_onnx_version_loads_and_predicts(
    live_server: LiveServer, workspace: Workspace, mlflow_dirs: Path, run: Run
) -> None:
    url = live_server.url
    ok(call(url, "POST", "/registered-models/create", json={"name": "linear"}))
    upload(url, run_location(run, "onnx-model"), mlflow_dirs / "onnx")
    create_version(url, "linear", f"runs:/{run.id}/onnx-model")
    version = workspace.registry.get_version("linear", 1)
    assert version.format == "onnx"
    assert [s["name"] for s in version.signature["inputs"]] == ["x"]
    rows = batch(mlflow_dirs).to_numpy(np.float32)
    got = workspace.registry.load_model(version).predict(rows)
    np.testing.assert_allclose(got["score"], expected(mlflow_dirs)["onnx"], rtol=1e-6)


def test_what_cannot_become_a_version_gets_mlflows_errors(
    live_server: LiveServer, workspace: Workspace, mlflow_dirs: Path, run: Run, tmp_path: Path
) -> None:
    url = live_server.url
    missing_model = call(
        url,
        "POST",
        "/model-versions/create",
        json={"name": "ghost", "source": f"runs:/{run.id}/model"},
    )
    assert "no model 'ghost'" in error(missing_model, 404, "RESOURCE_DOES_NOT_EXIST")
    ok(call(url, "POST", "/registered-models/create", json={"name": "fraud"}))

    def attempt(source: str) -> httpx.Response:
        return call(url, "POST", "/model-versions/create", json={"name": "fraud", "source": source})

    assert "no run" in error(
        attempt("runs:/01JUNKNOWNRUN0000000000000/model"), 404, "RESOURCE_DOES_NOT_EXIST"
    )
    assert "holds no files" in error(
        attempt(f"runs:/{run.id}/nothing-here"), 404, "RESOURCE_DOES_NOT_EXIST"
    )
    assert "no logged model" in error(
        attempt(f"models:/m-{'0' * 32}"), 404, "RESOURCE_DOES_NOT_EXIST"
    )
    assert "cannot read files from" in error(
        attempt("s3://bucket/model"), 400, "INVALID_PARAMETER_VALUE"
    )

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "README.md").write_text("not a model")
    upload(url, run_location(run, "notes"), notes)
    message = error(attempt(f"runs:/{run.id}/notes"), 400, "INVALID_PARAMETER_VALUE")
    assert "has no MLmodel file, so it is not an MLflow model" in message
    # the run's root rather than the model's directory
    upload(url, run_location(run), mlflow_dirs / "sklearn-skops")
    message = error(attempt(f"runs:/{run.id}"), 400, "INVALID_PARAMETER_VALUE")
    assert "one level down" in message and "/model instead" in message

    keras = tmp_path / "keras"
    keras.mkdir()
    mlmodel = {
        "flavors": {"keras": {"data": "data"}, "python_function": {"loader_module": "mlflow.keras"}}
    }
    (keras / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    upload(url, run_location(run, "keras"), keras)
    message = error(attempt(f"runs:/{run.id}/keras"), 400, "INVALID_PARAMETER_VALUE")
    assert "none of which modelyard loads" in message
    assert "modelyard loads onnx, sklearn, xgboost, lightgbm, pytorch" in message

    upload(url, run_location(run, "bare"), mlflow_dirs / "sklearn-bare")
    message = error(attempt(f"runs:/{run.id}/bare"), 400, "INVALID_PARAMETER_VALUE")
    assert "neither a signature nor an input example" in message
    assert workspace.registry.get_model("fraud").latest_version is None  # nothing registered

    unknown = call(url, "GET", "/model-versions/get", params={"name": "fraud", "version": "7"})
    error(unknown, 404, "RESOURCE_DOES_NOT_EXIST")
    bad = call(url, "GET", "/model-versions/get", params={"name": "fraud", "version": "seven"})
    assert "version must be a positive integer" in error(bad, 400, "INVALID_PARAMETER_VALUE")
    uri = call(
        url, "GET", "/model-versions/get-download-uri", params={"name": "fraud", "version": "7"}
    )
    error(uri, 404, "RESOURCE_DOES_NOT_EXIST")
    no_name = call(url, "POST", "/model-versions/create", json={"source": "runs:/x/model"})
    assert "name" in error(no_name, 400, "INVALID_PARAMETER_VALUE")


# --- aliases and stages -----------------------------------------------------------------------


@pytest.fixture
def three_versions(live_server: LiveServer, mlflow_dirs: Path, run: Run) -> Iterator[str]:
    url = live_server.url
    ok(call(url, "POST", "/registered-models/create", json={"name": "fraud"}))
    upload(url, run_location(run), mlflow_dirs / "sklearn-skops")
    for _ in range(3):
        create_version(url, "fraud", f"runs:/{run.id}/model")
    yield url


def test_aliases_in_mlflows_json(three_versions: str) -> None:
    url = three_versions
    body = {"name": "fraud", "alias": "champion", "version": "2"}
    assert ok(call(url, "POST", "/registered-models/alias", json=body)) == {}
    assert registered(url, "fraud")["aliases"] == [{"alias": "champion", "version": "2"}]
    assert version_of(url, "fraud", 2)["aliases"] == ["champion"]
    found = ok(
        call(url, "GET", "/registered-models/alias", params={"name": "fraud", "alias": "champion"})
    )
    assert found["model_version"]["version"] == "2"
    ok(call(url, "DELETE", "/registered-models/alias", json={"name": "fraud", "alias": "champion"}))
    gone = call(
        url, "GET", "/registered-models/alias", params={"name": "fraud", "alias": "champion"}
    )
    assert "model 'fraud' has no alias 'champion'" in error(gone, 404, "RESOURCE_DOES_NOT_EXIST")
    unknown = call(url, "POST", "/registered-models/alias", json={**body, "version": "9"})
    error(unknown, 404, "RESOURCE_DOES_NOT_EXIST")
    bad = call(url, "POST", "/registered-models/alias", json={**body, "alias": "bad alias"})
    assert "alias 'bad alias' is not valid" in error(bad, 400, "INVALID_PARAMETER_VALUE")
    nomodel = call(url, "GET", "/registered-models/alias", params={"name": "ghost", "alias": "x"})
    error(nomodel, 404, "RESOURCE_DOES_NOT_EXIST")


def transition(url: str, version: int, stage: str, **fields: Any) -> httpx.Response:
    body = {"name": "fraud", "version": str(version), "stage": stage, **fields}
    return call(url, "POST", "/model-versions/transition-stage", json=body)


def stages(url: str) -> dict[str, str]:
    return {str(n): version_of(url, "fraud", n)["current_stage"] for n in (1, 2, 3)}


def test_stages_are_the_staging_and_production_aliases(
    three_versions: str, workspace: Workspace
) -> None:
    url = three_versions
    moved = ok(transition(url, 1, "Production"))["model_version"]
    assert (moved["current_stage"], moved["aliases"]) == ("Production", ["production"])
    assert workspace.registry.get_alias("fraud", "production").version == 1
    ok(transition(url, 2, "staging"))  # any case, as MLflow takes it
    assert stages(url) == {"1": "Production", "2": "Staging", "3": "None"}

    # Staging -> Production, archiving the version that was in Production
    ok(transition(url, 2, "Production", archive_existing_versions=True))
    assert stages(url) == {"1": "Archived", "2": "Production", "3": "None"}
    assert "staging" not in registered(url, "fraud")["aliases"]
    assert workspace.registry.get_version("fraud", 1).status == "archived"

    latest = ok(
        call(
            url,
            "POST",
            "/registered-models/get-latest-versions",
            json={"name": "fraud", "stages": ["Production"]},
        )
    )
    assert [v["version"] for v in latest["model_versions"]] == ["2"]
    every = ok(call(url, "GET", "/registered-models/get-latest-versions", params={"name": "fraud"}))
    assert {v["current_stage"]: v["version"] for v in every["model_versions"]} == {
        "None": "3",
        "Production": "2",
        "Archived": "1",
    }
    # out of the archive and back to no stage
    ok(transition(url, 1, "Staging"))
    assert stages(url) == {"1": "Staging", "2": "Production", "3": "None"}
    ok(transition(url, 1, "None"))
    ok(transition(url, 3, "Archived"))
    assert stages(url) == {"1": "None", "2": "Production", "3": "Archived"}
    ok(transition(url, 3, "None"))
    assert workspace.registry.get_version("fraud", 3).status == "ready"

    bad = transition(url, 3, "QA")
    message = error(bad, 400, "INVALID_PARAMETER_VALUE")
    assert (
        "Invalid Model Version stage: 'QA'; use one of None, Staging, Production, Archived"
        in message
    )
    bad = transition(url, 3, "None", archive_existing_versions=True)
    assert "applies to Staging and Production" in error(bad, 400, "INVALID_PARAMETER_VALUE")
    workspace.registry.set_alias("fraud", "champion", 3)
    kept = transition(url, 3, "Archived")
    assert "alias(es) champion point at it" in error(kept, 400, "INVALID_STATE")
    error(transition(url, 9, "Staging"), 404, "RESOURCE_DOES_NOT_EXIST")


def test_a_stage_move_a_policy_refuses_is_permission_denied_and_changes_nothing(
    three_versions: str, workspace: Workspace
) -> None:
    url = three_versions
    workspace.policies.set("fraud-prod", "model:fraud", aliases=["production"], approvals=1)
    message = error(transition(url, 1, "Production"), 403, "PERMISSION_DENIED")
    assert "fraud-prod" in message and "approval" in message
    assert stages(url) == {"1": "None", "2": "None", "3": "None"}
    refused = call(
        url,
        "POST",
        "/registered-models/alias",
        json={"name": "fraud", "alias": "production", "version": "1"},
    )
    assert "fraud-prod" in error(refused, 403, "PERMISSION_DENIED")
    ok(transition(url, 1, "Staging"))  # staging is not under the policy


# --- serving --------------------------------------------------------------------------------


def test_a_pickled_mlflow_version_serves_through_the_gateway(
    tmp_path: Path, mlflow_dirs: Path
) -> None:
    from tests.serving.conftest import GatewayServer

    ws = Workspace.open(Settings(home=tmp_path / "home", trust_pickled_models=True))
    gateway = GatewayServer(ws)
    try:
        url = gateway.start()  # the control plane (MLflow's API too) answers on the same port
        run = ws.tracking.start_run("serving", name="train")
        ok(call(url, "POST", "/registered-models/create", json={"name": "churn"}))
        upload(url, run_location(run), mlflow_dirs / "sklearn-cloudpickle")
        create_version(url, "churn", f"runs:/{run.id}/model")
        ok(
            call(
                url,
                "POST",
                "/registered-models/alias",
                json={"name": "churn", "alias": "champion", "version": "1"},
            )
        )
        ws.endpoints.create("churn", "models:/churn@champion")
        deadline = time.monotonic() + 60  # the gateway picks the new endpoint up (refresh)
        while httpx.get(f"{url}/v2/models/churn/ready").status_code != 200:
            assert time.monotonic() < deadline, "the gateway never served the new endpoint"
            time.sleep(0.1)
        rows = batch(mlflow_dirs)
        want = expected(mlflow_dirs)["sklearn-cloudpickle"]
        split = {
            "dataframe_split": {"columns": list(rows.columns), "data": rows.to_numpy().tolist()}
        }
        answer = httpx.post(f"{url}/endpoints/churn/invocations", json=split, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": want}
        inputs = [
            {"name": c, "shape": [len(rows)], "datatype": "FP64", "data": rows[c].tolist()}
            for c in rows.columns
        ]
        oip = httpx.post(f"{url}/v2/models/churn/infer", json={"inputs": inputs}, timeout=60)
        assert oip.status_code == 200, oip.text
        assert oip.json()["outputs"][0]["data"] == want
        # a process that trusts pickles checked it against ONNX: the fast path serves it
        runtime = ws.registry.get_runtime("churn", 1, "onnx")
        assert runtime is not None and runtime.status == "identical", runtime
    finally:
        gateway.stop()
        ws.close()


def test_a_pickled_version_is_not_judged_for_onnx_without_trust(
    tmp_path: Path, mlflow_dirs: Path
) -> None:
    """Without trust the check cannot load the model: that is no verdict on the model, so
    nothing is recorded and a trusting process checks it later."""
    from modelyard.client import Client
    from modelyard.serving.runtime import check_onnx

    home = tmp_path / "home"
    client = Client(str(home))
    try:
        version = client.register_model(mlflow_dirs / "sklearn-cloudpickle", "churn")
    finally:
        client.close()
    ws = Workspace.open(Settings(home=home))
    try:
        result = check_onnx(ws, version)
        assert result.status == "failed" and "UntrustedModel" in result.report["error"]
        assert ws.registry.get_runtime("churn", version.version, "onnx") is None
    finally:
        ws.close()
    trusted = Workspace.open(Settings(home=home, trust_pickled_models=True))
    try:
        assert check_onnx(trusted, version).status == "identical"
        assert trusted.registry.get_runtime("churn", version.version, "onnx") is not None
    finally:
        trusted.close()


# --- MLflow's own client --------------------------------------------------------------------

CLIENT_SCRIPT = """
import json, sys
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

run_id = sys.argv[1]
client = MlflowClient()
client.create_registered_model("fraud", tags={"team": "risk"}, description="card fraud")
source = f"runs:/{run_id}/model"
for _ in range(3):
    client.create_model_version("fraud", source, run_id=run_id, tags={"k": "v"})
client.set_registered_model_alias("fraud", "champion", "2")
client.transition_model_version_stage("fraud", "1", "Production")
client.transition_model_version_stage("fraud", "3", "Production", archive_existing_versions=True)
client.set_model_version_tag("fraud", "3", "checked", "yes")
client.update_model_version("fraud", "3", description="third")
model = client.get_registered_model("fraud")
latest = client.get_latest_versions("fraud", stages=["Production"])
found = client.search_registered_models(filter_string="name LIKE 'fra%'")
versions = client.search_model_versions(f"run_id = '{run_id}'")
by_alias = client.get_model_version_by_alias("fraud", "champion")
uri = client.get_model_version_download_uri("fraud", "3")
client.rename_registered_model("fraud", "fraud2")
client.delete_registered_model_alias("fraud2", "champion")
client.delete_model_version("fraud2", "2")
errors = {}
for what, call in {
    "model": lambda: client.get_registered_model("fraud"),
    "version": lambda: client.get_model_version("fraud2", "2"),
    "alias": lambda: client.get_model_version_by_alias("fraud2", "champion"),
    "stage": lambda: client.transition_model_version_stage("fraud2", "3", "QA"),
}.items():
    try:
        call()
        errors[what] = None
    except MlflowException as exc:
        errors[what] = exc.error_code
client.delete_registered_model("fraud2")
print(json.dumps({
    "model": [model.name, model.description, model.tags, model.aliases],
    "latest": sorted([v.version, v.current_stage] for v in model.latest_versions),
    "production": [v.version for v in latest],
    "found": [m.name for m in found],
    "versions": sorted([v.version, v.current_stage, v.status, v.tags] for v in versions),
    "by_alias": by_alias.version,
    "uri": uri,
    "errors": errors,
    "left": [m.name for m in client.search_registered_models()],
}))
"""


def test_mlflows_client_works_unchanged(
    mlflow_python: Path,
    run_mlflow: RunMlflow,
    live_server: LiveServer,
    mlflow_dirs: Path,
    run: Run,
    tmp_path: Path,
) -> None:
    upload(live_server.url, run_location(run), mlflow_dirs / "sklearn-skops")
    script = tmp_path / "registry_client.py"
    script.write_text(CLIENT_SCRIPT)
    done = run_mlflow(mlflow_python, live_server.url, script=script, args=(run.id,))
    assert done.returncode == 0, done.failure()
    assert done.summary == {
        # Production is the alias production: MLflow's client lists it with the others
        "model": ["fraud", "card fraud", {"team": "risk"}, {"champion": "2", "production": "3"}],
        "latest": [["1", "Archived"], ["2", "None"], ["3", "Production"]],
        "production": ["3"],
        "found": ["fraud"],
        "versions": [
            ["1", "Archived", "READY", {"k": "v"}],
            ["2", "None", "READY", {"k": "v"}],
            ["3", "Production", "READY", {"checked": "yes", "k": "v"}],
        ],
        "by_alias": "2",
        "uri": "mlflow-artifacts:/registry/fraud/3",
        "errors": {
            "model": "RESOURCE_DOES_NOT_EXIST",
            "version": "RESOURCE_DOES_NOT_EXIST",
            "alias": "RESOURCE_DOES_NOT_EXIST",
            "stage": "INVALID_PARAMETER_VALUE",
        },
        "left": [],
    }
