"""MLflow 3's logged models (``/api/2.0/mlflow/logged-models``, ``/runs/outputs``) on the
tracking domain: the JSON MLflow's client reads, every error in MLflow's form, search, and
MLflow's own REST store (3.x) in a subprocess."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.config import Settings
from modelyard.tracking.entities import Run
from modelyard.workspace import Workspace
from tests.conftest import LiveServer
from tests.mlflow.conftest import RunMlflow

API = "/api/2.0/mlflow"


@pytest.fixture
def run(workspace: Workspace) -> Run:
    return workspace.tracking.start_run("logged-models", name="train")


def call(server: LiveServer, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{server.url}{API}{path}", **kwargs)


def error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code, body
    return str(body["message"])


def create(server: LiveServer, run: Run, **fields: Any) -> dict[str, Any]:
    body = {"experiment_id": run.experiment_id, "source_run_id": run.id, **fields}
    answer = call(server, "POST", "/logged-models", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()["model"]  # type: ignore[no-any-return]


def test_the_lifecycle_of_a_logged_model_in_mlflows_json(
    live_server: LiveServer, workspace: Workspace, run: Run
) -> None:
    workspace.tracking.log_metrics(run.id, {"rmse": 0.25, "bad": math.nan}, step=3)
    before = int(datetime.now(UTC).timestamp() * 1000)
    model = create(
        live_server,
        run,
        name="model",
        model_type="classifier",
        params=[{"key": "alpha", "value": "0.1"}],
        tags=[{"key": "mlflow.user", "value": "ds"}],
    )
    info, data = model["info"], model["data"]
    model_id = info["model_id"]
    assert model_id.startswith("m-") and len(model_id) == 34
    assert info == {
        "model_id": model_id,
        "experiment_id": run.experiment_id,
        "name": "model",
        "creation_timestamp_ms": info["creation_timestamp_ms"],
        "last_updated_timestamp_ms": info["creation_timestamp_ms"],
        "artifact_uri": f"mlflow-artifacts:/{run.experiment_id}/models/{model_id}/artifacts",
        "status": "LOGGED_MODEL_PENDING",
        "model_type": "classifier",
        "source_run_id": run.id,
        "tags": [{"key": "mlflow.user", "value": "ds"}],
    }
    assert info["creation_timestamp_ms"] >= before - 1000
    assert data["params"] == [{"key": "alpha", "value": "0.1"}]
    # a logged model's metrics are its source run's latest ones
    metrics = {m["key"]: m for m in data["metrics"]}
    assert metrics["rmse"]["value"] == 0.25 and metrics["rmse"]["step"] == 3
    assert metrics["rmse"]["run_id"] == run.id and metrics["rmse"]["model_id"] == model_id
    assert metrics["bad"]["value"] == "NaN"

    tags = call(
        live_server,
        "PATCH",
        f"/logged-models/{model_id}/tags",
        json={"tags": [{"key": "team", "value": "risk"}, {"key": "mlflow.user", "value": "x"}]},
    )
    assert {t["key"]: t["value"] for t in tags.json()["model"]["info"]["tags"]} == {
        "mlflow.user": "x",
        "team": "risk",
    }
    assert call(live_server, "DELETE", f"/logged-models/{model_id}/tags/team").json() == {}
    params = call(
        live_server,
        "POST",
        f"/logged-models/{model_id}/params",
        json={"model_id": model_id, "params": [{"key": "depth", "value": "3"}]},
    )
    assert params.json() == {}
    done = call(
        live_server,
        "PATCH",
        f"/logged-models/{model_id}",
        json={"model_id": model_id, "status": "LOGGED_MODEL_READY"},
    ).json()["model"]
    assert done["info"]["status"] == "LOGGED_MODEL_READY"
    assert [t["key"] for t in done["info"]["tags"]] == ["mlflow.user"]
    assert done["data"]["params"] == [
        {"key": "alpha", "value": "0.1"},
        {"key": "depth", "value": "3"},
    ]
    got = call(live_server, "GET", f"/logged-models/{model_id}", params={"allow_deleted": "true"})
    assert got.json()["model"]["info"] == done["info"]
    # the UI's prefix answers the same
    ajax = httpx.get(f"{live_server.url}/ajax-api/2.0/mlflow/logged-models/{model_id}")
    assert ajax.json()["model"]["info"]["model_id"] == model_id

    assert call(live_server, "DELETE", f"/logged-models/{model_id}").json() == {}
    gone = call(live_server, "GET", f"/logged-models/{model_id}")
    assert f"no logged model {model_id!r}" in error(gone, 404, "RESOURCE_DOES_NOT_EXIST")
    actions = [r.action for r in workspace.audit.list(entity_type="logged_model").items]
    assert set(actions) >= {
        "logged_model.create",
        "logged_model.set_tags",
        "logged_model.delete_tag",
        "logged_model.log_params",
        "logged_model.finalize",
        "logged_model.delete",
    }
    assert workspace.audit.verify().ok


def test_an_unnamed_model_gets_a_name_and_log_outputs_links_a_run(
    live_server: LiveServer, workspace: Workspace, run: Run
) -> None:
    answer = call(live_server, "POST", "/logged-models", json={"experiment_id": run.experiment_id})
    info = answer.json()["model"]["info"]
    assert info["name"].startswith("model-") and "source_run_id" not in info
    linked = call(
        live_server,
        "POST",
        "/runs/outputs",
        json={"run_id": run.id, "models": [{"model_id": info["model_id"], "step": 0}]},
    )
    assert linked.json() == {}
    assert workspace.logged_models.get(info["model_id"]).source_run_id == run.id
    assert workspace.logged_models.source_models([run.id]) == {run.id: [info["model_id"]]}


def test_every_error_is_answered_in_mlflows_form(live_server: LiveServer, run: Run) -> None:
    missing = f"m-{'0' * 32}"
    nowhere = call(live_server, "POST", "/logged-models", json={"experiment_id": "42"})
    assert "no experiment with id '42'" in error(nowhere, 404, "RESOURCE_DOES_NOT_EXIST")
    no_run = call(
        live_server,
        "POST",
        "/logged-models",
        json={"experiment_id": run.experiment_id, "source_run_id": "nope"},
    )
    assert "no run 'nope'" in error(no_run, 404, "RESOURCE_DOES_NOT_EXIST")
    bad_name = call(
        live_server,
        "POST",
        "/logged-models",
        json={"experiment_id": run.experiment_id, "name": "a/b"},
    )
    assert "logged model name 'a/b' is not valid" in error(bad_name, 400, "INVALID_PARAMETER_VALUE")
    bad_key = call(
        live_server,
        "POST",
        "/logged-models",
        json={"experiment_id": run.experiment_id, "tags": [{"key": "a\nb", "value": "x"}]},
    )
    assert "tag key" in error(bad_key, 400, "INVALID_PARAMETER_VALUE")
    no_experiment = call(live_server, "POST", "/logged-models", json={"name": "x"})
    assert "experiment_id" in error(no_experiment, 400, "INVALID_PARAMETER_VALUE")

    for method, path, body in (
        ("GET", f"/logged-models/{missing}", None),
        ("PATCH", f"/logged-models/{missing}", {"status": "LOGGED_MODEL_READY"}),
        ("DELETE", f"/logged-models/{missing}", None),
        ("PATCH", f"/logged-models/{missing}/tags", {"tags": []}),
        ("DELETE", f"/logged-models/{missing}/tags/x", None),
        ("POST", f"/logged-models/{missing}/params", {"params": []}),
        ("GET", "/logged-models/not-an-id", None),
    ):
        answer = call(live_server, method, path, json=body)
        assert "no logged model" in error(answer, 404, "RESOURCE_DOES_NOT_EXIST"), path
    unlinked = call(
        live_server,
        "POST",
        "/runs/outputs",
        json={"run_id": run.id, "models": [{"model_id": missing}]},
    )
    assert error(unlinked, 404, "RESOURCE_DOES_NOT_EXIST")

    model_id = create(live_server, run, params=[{"key": "a", "value": "1"}])["info"]["model_id"]
    no_tag = call(live_server, "DELETE", f"/logged-models/{model_id}/tags/absent")
    assert "has no tag 'absent'" in error(no_tag, 404, "RESOURCE_DOES_NOT_EXIST")
    changed = call(
        live_server,
        "POST",
        f"/logged-models/{model_id}/params",
        json={"params": [{"key": "a", "value": "2"}]},
    )
    assert "params are immutable" in error(changed, 400, "INVALID_STATE")
    same = call(
        live_server,
        "POST",
        f"/logged-models/{model_id}/params",
        json={"params": [{"key": "a", "value": "1"}]},
    )
    assert same.status_code == 200
    for status in ("DONE", 7, "LOGGED_MODEL_STATUS_UNSPECIFIED"):
        bad = call(live_server, "PATCH", f"/logged-models/{model_id}", json={"status": status})
        assert "not a logged model status" in error(bad, 400, "INVALID_PARAMETER_VALUE")
    by_number = call(live_server, "PATCH", f"/logged-models/{model_id}", json={"status": 3})
    assert by_number.json()["model"]["info"]["status"] == "LOGGED_MODEL_UPLOAD_FAILED"


def _search(server: LiveServer, **body: Any) -> httpx.Response:
    return call(server, "POST", "/logged-models/search", json=body)


def _names(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [m["info"]["name"] for m in answer.json().get("models", [])]


def test_search_filters_orders_and_pages(
    live_server: LiveServer, workspace: Workspace, run: Run
) -> None:
    ws = workspace
    other = ws.tracking.start_run("logged-models", name="second")
    ws.tracking.log_metrics(run.id, {"acc": 0.9})
    ws.tracking.log_metrics(other.id, {"acc": 0.7})
    exp = run.experiment_id
    a = ws.logged_models.create(exp, name="alpha", source_run_id=run.id, params={"lr": "0.1"})
    b = ws.logged_models.create(exp, name="beta", source_run_id=other.id, tags={"team": "Risk"})
    c = ws.logged_models.create(exp, name="Alpine", model_type="agent")
    ws.logged_models.finalize(a.id, "ready")
    elsewhere = ws.tracking.start_run("another-experiment")
    ws.logged_models.create(elsewhere.experiment_id, name="alpha")

    assert _names(_search(live_server, experiment_ids=[exp])) == ["Alpine", "beta", "alpha"]
    for text, want in (
        ("name = 'alpha'", ["alpha"]),
        ("attributes.name != 'alpha'", ["Alpine", "beta"]),
        ("name LIKE 'Al%'", ["Alpine"]),
        ("name ILIKE 'al%'", ["Alpine", "alpha"]),
        ("status = 'READY'", ["alpha"]),
        ("status = 'LOGGED_MODEL_PENDING'", ["Alpine", "beta"]),
        ("params.lr = '0.1'", ["alpha"]),
        ("tags.team ilike 'risk'", ["beta"]),
        ("metrics.acc > 0.8", ["alpha"]),
        ("metrics.acc >= 0.7 and name != 'alpha'", ["beta"]),
        (f"model_id = '{b.id}'", ["beta"]),
        (f"source_run_id = '{run.id}'", ["alpha"]),
        ("model_type = 'agent'", ["Alpine"]),
        ("creation_timestamp > 0", ["Alpine", "beta", "alpha"]),
        (f"last_updated_timestamp < {1000 * int(c.created_at.timestamp()) - 60_000}", []),
    ):
        assert _names(_search(live_server, experiment_ids=[exp], filter=text)) == want, text

    ordered = _search(
        live_server,
        experiment_ids=[exp],
        order_by=[{"field_name": "metrics.acc", "ascending": False}],
    )
    assert _names(ordered) == ["alpha", "beta", "Alpine"]  # no metric: last
    by_name = _search(
        live_server, experiment_ids=[exp], order_by=[{"field_name": "name", "ascending": True}]
    )
    assert _names(by_name) == ["Alpine", "alpha", "beta"]

    first = _search(live_server, experiment_ids=[exp], max_results=2)
    token = first.json()["next_page_token"]
    rest = _search(live_server, experiment_ids=[exp], max_results=2, page_token=token)
    assert _names(first) + _names(rest) == ["Alpine", "beta", "alpha"]
    assert "next_page_token" not in rest.json()
    both = _search(
        live_server, experiment_ids=[exp, elsewhere.experiment_id], filter="name='alpha'"
    )
    assert _names(both) == ["alpha", "alpha"]


def test_search_errors_say_what_to_fix(live_server: LiveServer, run: Run) -> None:
    exp = [run.experiment_id]
    for body, words in (
        ({"experiment_ids": exp, "filter": "name = alpha"}, "strings in quotes"),
        ({"experiment_ids": exp, "filter": "name = 5"}, "quoted string"),
        ({"experiment_ids": exp, "filter": "colour = 'red'"}, "unknown logged model attribute"),
        ({"experiment_ids": exp, "filter": "metrics.acc > 'x'"}, "compares with a number"),
        ({"experiment_ids": exp, "filter": "name = 'a' or name = 'b'"}, "expected 'and'"),
        ({"experiment_ids": exp, "filter": "name ~ 'a'"}, "cannot read the filter"),
        ({"experiment_ids": exp, "filter": "runs.x = 'a'"}, "unknown field kind"),
        ({"experiment_ids": exp, "order_by": [{"field_name": "params.lr"}]}, "cannot order"),
        ({"experiment_ids": exp, "order_by": [{"field_name": "size"}]}, "unknown logged model"),
        ({"experiment_ids": exp, "page_token": "garbage"}, "page_token is not valid"),
        ({"experiment_ids": exp, "max_results": 0}, "max_results must be positive"),
        ({"experiment_ids": []}, "at least one experiment id"),
        ({"experiment_ids": exp, "datasets": [{"dataset_name": "d"}]}, "not per dataset"),
    ):
        assert words in error(_search(live_server, **body), 400, "INVALID_PARAMETER_VALUE"), body


def test_writes_need_an_editor(tmp_path: Path) -> None:
    from modelyard.api.app import create_app

    ws = Workspace.open(Settings(home=tmp_path / "home", auth=True))
    ws.identities.create_user("vi", "viewer")
    viewer = {"authorization": f"Bearer {ws.identities.create_token('vi').secret}"}
    run = ws.tracking.start_run("roles")
    model = ws.logged_models.create(run.experiment_id, name="m")
    server = LiveServer(create_app(workspace=ws))
    try:
        url = f"{server.url}{API}/logged-models"
        denied = httpx.post(url, json={"experiment_id": run.experiment_id}, headers=viewer)
        assert "this needs editor" in error(denied, 403, "PERMISSION_DENIED")
        finalize = httpx.patch(f"{url}/{model.id}", json={"status": 2}, headers=viewer)
        assert error(finalize, 403, "PERMISSION_DENIED")
        assert httpx.get(f"{url}/{model.id}", headers=viewer).status_code == 200
        found = httpx.post(
            f"{url}/search", json={"experiment_ids": [run.experiment_id]}, headers=viewer
        )
        assert len(found.json()["models"]) == 1
        assert error(httpx.get(f"{url}/{model.id}"), 401, "UNAUTHENTICATED")
    finally:
        server.stop()
        ws.close()


def test_the_uis_routes_list_and_read_a_models_files(
    live_server: LiveServer, workspace: Workspace, run: Run
) -> None:
    model = workspace.logged_models.create(run.experiment_id, name="m")
    workspace.logged_models.log_file(model.id, "MLmodel", b"flavors: {}\n")
    workspace.logged_models.log_file(model.id, "data/model.pkl", b"pk")
    listed = call(live_server, "GET", f"/logged-models/{model.id}/artifacts/directories").json()
    assert listed == {
        "root_uri": f"mlflow-artifacts:/{run.experiment_id}/models/{model.id}/artifacts",
        "files": [
            {"path": "MLmodel", "is_dir": False, "file_size": 12},
            {"path": "data", "is_dir": True},
        ],
    }
    sub = call(
        live_server,
        "GET",
        f"/logged-models/{model.id}/artifacts/directories",
        params={"artifact_directory_path": "data"},
    ).json()
    assert sub["files"] == [{"path": "data/model.pkl", "is_dir": False, "file_size": 2}]
    got = call(
        live_server,
        "GET",
        f"/logged-models/{model.id}/artifacts/files",
        params={"artifact_file_path": "data/model.pkl"},
    )
    assert got.content == b"pk"
    for params, status, code in (
        ({}, 400, "INVALID_PARAMETER_VALUE"),
        ({"artifact_file_path": "../x"}, 400, "INVALID_PARAMETER_VALUE"),
        ({"artifact_file_path": "nope"}, 404, "RESOURCE_DOES_NOT_EXIST"),
    ):
        answer = call(
            live_server, "GET", f"/logged-models/{model.id}/artifacts/files", params=params
        )
        assert error(answer, status, code)


# --- MLflow's own REST store (3.x) ------------------------------------------------------

REST_STORE_SCRIPT = """
import json, os, sys, tempfile
from mlflow.entities import (
    LoggedModelOutput, LoggedModelParameter, LoggedModelStatus, LoggedModelTag,
)
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository
from mlflow.store.tracking.rest_store import RestStore
from mlflow.utils.rest_utils import MlflowHostCreds

url, experiment_id, run_id = sys.argv[1:4]
store = RestStore(lambda: MlflowHostCreds(url))
params = [LoggedModelParameter(f"p{i}", str(i)) for i in range(150)]  # past one request's 100
model = store.create_logged_model(
    experiment_id, name="model", source_run_id=run_id, model_type="sklearn",
    tags=[LoggedModelTag("mlflow.user", "ds")], params=params,
)
store.log_outputs(run_id, [LoggedModelOutput(model.model_id, 0)])
repo = MlflowArtifactsRepository(model.artifact_location, tracking_uri=url)
src = tempfile.mkdtemp()
with open(os.path.join(src, "MLmodel"), "w") as f:
    f.write("flavors: {}")
repo.log_artifacts(src)
store.set_logged_model_tags(model.model_id, [LoggedModelTag("stage", "dev")])
store.delete_logged_model_tag(model.model_id, "stage")
ready = store.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
found = store.search_logged_models([experiment_id], filter_string="name = 'model'")
try:
    store.get_logged_model("m-" + "0" * 32)
    missing = None
except MlflowException as exc:
    missing = exc.error_code
print(json.dumps({
    "id": model.model_id,
    "params": len(store.get_logged_model(model.model_id).params),
    "status": str(ready.status),
    "tags": ready.tags,
    "found": [m.model_id for m in found],
    "files": [f.path for f in repo.list_artifacts()],
    "missing": missing,
}))
"""


def test_mlflows_rest_store_works_unchanged(
    mlflow3_python: Path,
    run_mlflow: RunMlflow,
    live_server: LiveServer,
    workspace: Workspace,
    run: Run,
    tmp_path: Path,
) -> None:
    script = tmp_path / "rest_store.py"
    script.write_text(REST_STORE_SCRIPT)
    done = run_mlflow(
        mlflow3_python,
        live_server.url,
        script=script,
        args=(live_server.url, run.experiment_id, run.id),
    )
    assert done.returncode == 0, done.failure()
    summary = done.summary
    assert summary is not None
    assert summary == {
        "id": summary["id"],
        "params": 150,
        "status": "READY",
        "tags": {"mlflow.user": "ds"},
        "found": [summary["id"]],
        "files": ["MLmodel"],
        "missing": "RESOURCE_DOES_NOT_EXIST",
    }
    model = workspace.logged_models.get(summary["id"])
    assert (model.status, model.source_run_id, model.model_type) == ("ready", run.id, "sklearn")
    assert [f.path for f in workspace.logged_models.files(model.id)] == ["MLmodel"]


# --- the service, on SQLite and PostgreSQL ----------------------------------------------


def test_the_service_on_both_databases(any_workspace: Workspace) -> None:
    from modelyard.errors import Conflict, NotFound
    from modelyard.tracking.locations import Location, delete_files, list_directory

    ws = any_workspace
    run = ws.tracking.start_run("db", params={"lr": "0.1"})
    ws.tracking.log_metrics(run.id, {"acc": 0.5}, step=1)
    ws.tracking.log_metrics(run.id, {"acc": 0.75}, step=2)
    model = ws.logged_models.create(
        run.experiment_id, name="clf", source_run_id=run.id, params={"lr": 0.1}, tags={"t": 1}
    )
    assert (model.params, model.tags) == ({"lr": "0.1"}, {"t": "1"})
    assert [(m.key, m.value, m.step) for m in model.metrics] == [("acc", 0.75, 2)]
    ws.logged_models.set_tags(model.id, {"u": "v"})
    ws.logged_models.log_params(model.id, {"depth": 3})
    with pytest.raises(Conflict, match="params are immutable"):
        ws.logged_models.log_params(model.id, {"lr": "0.2"})
    ws.logged_models.log_file(model.id, "MLmodel", b"m")
    ws.logged_models.log_file(model.id, "data/100%_x.bin", b"x")
    ws.logged_models.log_file(model.id, "data_other.bin", b"y")
    # LIKE's wildcards in a path are plain characters under a prefix
    assert [f.path for f in ws.logged_models.files(model.id, "data")] == ["100%_x.bin"]
    loc = Location("model", model.id)
    assert [(e.name, e.is_dir) for e in list_directory(ws, loc)] == [
        ("MLmodel", False),
        ("data", True),
        ("data_other.bin", False),
    ]
    assert delete_files(ws, Location("model", model.id, "data")) == 1
    found = ws.logged_models.search([run.experiment_id], filter_string="metrics.acc > 0.7")
    assert [m.id for m in found.items] == [model.id]
    got = ws.logged_models.get(model.id)
    assert (got.tags, got.params) == ({"t": "1", "u": "v"}, {"depth": "3", "lr": "0.1"})
    ws.tracking.log_artifact(run.id, "a/b.txt", b"b")
    assert delete_files(ws, Location("run", run.id, "a")) == 1
    assert ws.tracking.list_artifacts(run.id) == []
    ws.logged_models.delete(model.id)
    with pytest.raises(NotFound):
        ws.logged_models.get(model.id)
    assert ws.audit.verify().ok


# --- MLflow's log_model and load_model, 2.x and 3.x -------------------------------------

LOG_MODEL_SCRIPT = """
import json, sys
import mlflow, numpy as np
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

experiment = sys.argv[1]
major = int(mlflow.__version__.split(".")[0])
X = np.random.default_rng(0).normal(size=(50, 3))
clf = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
if experiment != "0":
    mlflow.set_experiment(experiment)
with mlflow.start_run() as run:
    mlflow.log_metric("acc", 0.9)
    if major >= 3:
        info = mlflow.sklearn.log_model(clf, name="model", input_example=X[:2])
    else:
        info = mlflow.sklearn.log_model(clf, artifact_path="model", input_example=X[:2])
run_id = run.info.run_id
same = lambda model: bool((model.predict(X) == clf.predict(X)).all())
out = {"major": major, "run_id": run_id, "model_uri": info.model_uri}
out["load"] = same(mlflow.sklearn.load_model(info.model_uri))
out["runs_uri"] = same(mlflow.pyfunc.load_model(f"runs:/{run_id}/model"))
if major >= 3:
    model = mlflow.get_logged_model(info.model_id)
    out["logged"] = {
        "experiment_id": model.experiment_id,
        "status": str(model.status),
        "source_run_id": model.source_run_id,
        "metrics": {m.key: m.value for m in model.metrics},
        "last": mlflow.last_logged_model().model_id == info.model_id,
        "found": [m.model_id for m in mlflow.search_logged_models(
            experiment_ids=[model.experiment_id], output_format="list")],
    }
version = mlflow.register_model(info.model_uri, "fraud")
MlflowClient().set_registered_model_alias("fraud", "champion", version.version)
out["champion"] = same(mlflow.pyfunc.load_model("models:/fraud@champion"))
print(json.dumps(out))
"""


@pytest.mark.parametrize("experiment", ["0", "fraud-training"])
def test_mlflows_log_model_and_load_model_work_unchanged(
    experiment: str,
    mlflow_python: Path,
    run_mlflow: RunMlflow,
    live_server: LiveServer,
    workspace: Workspace,
    tmp_path: Path,
) -> None:
    script = tmp_path / "log_model.py"
    script.write_text(LOG_MODEL_SCRIPT)
    done = run_mlflow(mlflow_python, live_server.url, script=script, args=(experiment,))
    assert done.returncode == 0, done.failure()
    out = done.summary
    assert out is not None
    assert (out["load"], out["runs_uri"], out["champion"]) == (True, True, True)
    run_id = out["run_id"]
    if out["major"] == 2:
        # 2.x logs the model as files of the run
        assert out["model_uri"] == f"runs:/{run_id}/model"
        paths = [a.path for a in workspace.tracking.list_artifacts(run_id)]
        assert "model/MLmodel" in paths
        return
    # 3.x logs a logged model, linked to the run, its files in the model's own place
    model_id = out["model_uri"].removeprefix("models:/")
    assert out["logged"] == {
        "experiment_id": experiment if experiment == "0" else out["logged"]["experiment_id"],
        "status": "READY",
        "source_run_id": run_id,
        "metrics": {"acc": 0.9},
        "last": True,
        "found": [model_id],
    }
    model = workspace.logged_models.get(model_id)
    assert (model.status, model.source_run_id, model.name) == ("ready", run_id, "model")
    files = [f.path for f in workspace.logged_models.files(model_id)]
    assert "MLmodel" in files and any(p.startswith("model.") for p in files)
    assert workspace.tracking.list_artifacts(run_id) == []
