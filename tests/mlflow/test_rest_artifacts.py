"""MLflow's artifact proxy (``/api/2.0/mlflow-artifacts``) over modelyard's files: raw HTTP
against a live server, MLflow's own artifact repository (2.x and 3.x clients) in a
subprocess, and the resolver of source URIs the registry builds versions from."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard.client import Client
from modelyard.config import Settings
from modelyard.errors import InvalidInput, NotFound
from modelyard.tracking.entities import Run
from modelyard.tracking.locations import ArtifactFile, resolve_artifact_files
from modelyard.workspace import Workspace
from tests.conftest import LiveServer
from tests.mlflow.conftest import RunMlflow

PROXY = "/api/2.0/mlflow-artifacts/artifacts"


@pytest.fixture
def run(workspace: Workspace) -> Run:
    return workspace.tracking.start_run("mlflow-artifacts", name="proxy")


def root(run: Run) -> str:
    """The run's artifact root as MLflow's client sees it (after ``mlflow-artifacts:/``)."""
    return f"{run.experiment_id}/{run.id}/artifacts"


def error(response: httpx.Response, status: int, code: str) -> str:
    """The message of an MLflow-form error answer, after checking its status and code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code, body
    return str(body["message"])


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- the proxy over raw HTTP ------------------------------------------------------------


def test_upload_list_download_delete_a_runs_files(
    live_server: LiveServer, workspace: Workspace, run: Run
) -> None:
    base = f"{live_server.url}{PROXY}/{root(run)}"
    assert httpx.put(f"{base}/notes.txt", content=b"hello").json() == {}
    assert httpx.put(f"{base}/plots/a/loss.png", content=b"\x89PNG").status_code == 200
    assert httpx.put(f"{base}/plots/b.csv", content=b"x,y\n").status_code == 200

    # the files are the run's, in modelyard's tracking and artifact store
    stored = {a.path: a for a in workspace.tracking.list_artifacts(run.id)}
    assert set(stored) == {"notes.txt", "plots/a/loss.png", "plots/b.csv"}
    assert stored["notes.txt"].digest == sha(b"hello")
    assert workspace.artifacts.get_bytes(stored["plots/b.csv"].digest) == b"x,y\n"

    listing = httpx.get(f"{live_server.url}{PROXY}", params={"path": root(run)}).json()
    assert listing == {
        "files": [
            {"path": "notes.txt", "is_dir": False, "file_size": 5},
            {"path": "plots", "is_dir": True},
        ]
    }
    sub = httpx.get(f"{live_server.url}{PROXY}", params={"path": f"{root(run)}/plots"}).json()
    assert sub["files"] == [
        {"path": "a", "is_dir": True},
        {"path": "b.csv", "is_dir": False, "file_size": 4},
    ]
    # a file, or a directory holding nothing, lists as empty (MLflow's client relies on it)
    for path in (f"{root(run)}/notes.txt", f"{root(run)}/nothing-here"):
        assert httpx.get(f"{live_server.url}{PROXY}", params={"path": path}).json() == {}

    got = httpx.get(f"{base}/plots/a/loss.png")
    assert got.status_code == 200 and got.content == b"\x89PNG"
    assert got.headers["content-type"] == "application/octet-stream"

    # the same path again replaces the file; a delete takes a directory with it
    httpx.put(f"{base}/notes.txt", content=b"v2")
    assert httpx.get(f"{base}/notes.txt").content == b"v2"
    assert httpx.delete(f"{base}/plots").json() == {}
    assert [a.path for a in workspace.tracking.list_artifacts(run.id)] == ["notes.txt"]
    assert httpx.delete(f"{base}/plots").status_code == 200  # nothing left there: no error
    audit = workspace.audit.list(action="run.delete_artifacts").items
    assert audit[0].before == {"paths": ["plots/a/loss.png", "plots/b.csv"]}


def test_a_large_upload_is_spooled_and_arrives_whole(
    live_server: LiveServer, workspace: Workspace, run: Run
) -> None:
    data = os.urandom(9 * 1024 * 1024 + 7)  # past what is held in memory
    url = f"{live_server.url}{PROXY}/{root(run)}/weights.bin"

    def chunks() -> Iterator[bytes]:  # no content-length: chunked transfer
        for start in range(0, len(data), 1 << 20):
            yield data[start : start + (1 << 20)]

    assert httpx.put(url, content=chunks(), timeout=60).status_code == 200
    [stored] = workspace.tracking.list_artifacts(run.id)
    assert (stored.size, stored.digest) == (len(data), sha(data))
    assert httpx.get(url, timeout=60).content == data
    staging = workspace.settings.staging_dir
    assert not staging.exists() or not any(staging.iterdir())  # the scratch file is gone


def test_uploads_over_the_size_limit_are_refused(tmp_path: Path) -> None:
    ws = Workspace.open(Settings(home=tmp_path / "home", max_upload_bytes=1000))
    server = LiveServer(_app(ws))
    try:
        run = ws.tracking.start_run("limits")
        url = f"{server.url}{PROXY}/{root(run)}/big.bin"
        declared = httpx.put(url, content=b"x" * 1001)
        assert "over the 1000 byte limit" in error(declared, 400, "INVALID_PARAMETER_VALUE")
        assert "MODELYARD_MAX_UPLOAD_BYTES" in declared.json()["message"]
        streamed = httpx.put(url, content=iter([b"x" * 600, b"x" * 600]))
        assert "over the 1000 byte limit" in error(streamed, 400, "INVALID_PARAMETER_VALUE")
        assert ws.tracking.list_artifacts(run.id) == []
        assert httpx.put(url, content=b"x" * 1000).status_code == 200
    finally:
        server.stop()
        ws.close()


def _app(ws: Workspace) -> object:
    from modelyard.api.app import create_app

    return create_app(workspace=ws)


def _raw(server: LiveServer, method: str, target: str) -> tuple[int, dict[str, str]]:
    """A request with its target sent exactly as written (httpx would resolve '..')."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, target, body=b"x" if method == "PUT" else None)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_paths_that_would_leave_their_place_are_refused(
    live_server: LiveServer, workspace: Workspace, run: Run
) -> None:
    workspace.tracking.log_artifact(run.id, "inside.txt", b"ok")
    escapes = [
        f"{PROXY}/{root(run)}/../../../etc/passwd",
        f"{PROXY}/{root(run)}/%2e%2e/%2e%2e/x",
        f"{PROXY}/{root(run)}/%2E%2E%2Fx",
        f"{PROXY}/{root(run)}/a%5C..%5Cb",
        f"{PROXY}//etc/passwd",
        f"{PROXY}/{root(run)}/a%00b",
    ]
    for target in escapes:
        for method in ("GET", "PUT", "DELETE"):
            status, body = _raw(live_server, method, target)
            assert status == 400, (method, target, body)
            assert body["error_code"] == "INVALID_PARAMETER_VALUE"
            assert any(w in body["message"] for w in ("'..'", "relative", "NUL")), body
    for path in ("/etc", f"{root(run)}/../../x", "a\\b"):
        listed = httpx.get(f"{live_server.url}{PROXY}", params={"path": path})
        assert error(listed, 400, "INVALID_PARAMETER_VALUE")
    assert [a.path for a in workspace.tracking.list_artifacts(run.id)] == ["inside.txt"]


def test_what_does_not_exist_is_answered_in_mlflows_form(
    live_server: LiveServer, workspace: Workspace, run: Run
) -> None:
    workspace.tracking.log_artifact(run.id, "dir/file.txt", b"ok")
    url = f"{live_server.url}{PROXY}"
    missing_run = f"{run.experiment_id}/01J00000000000000000000000/artifacts"
    for method in ("GET", "PUT", "DELETE"):
        answer = httpx.request(method, f"{url}/{missing_run}/x.txt", content=b"")
        assert "no run '01J00000000000000000000000'" in error(
            answer, 404, "RESOURCE_DOES_NOT_EXIST"
        )
    listed = httpx.get(url, params={"path": missing_run})
    assert "no run" in error(listed, 404, "RESOURCE_DOES_NOT_EXIST")
    model = f"{run.experiment_id}/models/m-{'0' * 32}/artifacts/MLmodel"
    assert "no logged model" in error(httpx.get(f"{url}/{model}"), 404, "RESOURCE_DOES_NOT_EXIST")

    assert "no file" in error(
        httpx.get(f"{url}/{root(run)}/nope.txt"), 404, "RESOURCE_DOES_NOT_EXIST"
    )
    assert "is a directory" in error(
        httpx.get(f"{url}/{root(run)}/dir"), 404, "RESOURCE_DOES_NOT_EXIST"
    )
    assert "is a directory" in error(
        httpx.get(f"{url}/{root(run)}"), 404, "RESOURCE_DOES_NOT_EXIST"
    )
    for bad in ("foo", f"{run.experiment_id}/{run.id}", "registry/m/x/MLmodel"):
        assert error(httpx.get(f"{url}/{bad}"), 400, "INVALID_PARAMETER_VALUE")
    assert "not a logged model id" in error(
        httpx.get(f"{url}/{run.experiment_id}/models/m-1/artifacts/x"),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    assert "the root is not listed" in error(httpx.get(url), 400, "INVALID_PARAMETER_VALUE")
    no_file = httpx.put(f"{url}/{root(run)}", content=b"x")
    assert "give a file path" in error(no_file, 400, "INVALID_PARAMETER_VALUE")


def test_multipart_upload_is_declined_as_mlflows_client_expects(
    live_server: LiveServer, run: Run
) -> None:
    answer = httpx.post(
        f"{live_server.url}/api/2.0/mlflow-artifacts/mpu/create/{root(run)}",
        json={"path": "big.bin", "num_parts": 3},
    )
    assert answer.status_code == 501
    assert answer.json() == {
        "error_code": "NOT_IMPLEMENTED",
        "message": "Multipart upload is not supported for the current artifact repository",
    }


def test_a_logged_models_files_through_the_proxy(
    live_server: LiveServer, workspace: Workspace, run: Run
) -> None:
    model = workspace.logged_models.create(run.experiment_id, name="model", source_run_id=run.id)
    base = f"{live_server.url}{PROXY}/{run.experiment_id}/models/{model.id}/artifacts"
    httpx.put(f"{base}/MLmodel", content=b"flavors: {}\n").raise_for_status()
    httpx.put(f"{base}/model/model.pkl", content=b"\x80\x04").raise_for_status()
    assert [f.path for f in workspace.logged_models.files(model.id)] == [
        "MLmodel",
        "model/model.pkl",
    ]
    listed = httpx.get(
        f"{live_server.url}{PROXY}",
        params={"path": f"{run.experiment_id}/models/{model.id}/artifacts"},
    ).json()
    assert listed["files"] == [
        {"path": "MLmodel", "is_dir": False, "file_size": 12},
        {"path": "model", "is_dir": True},
    ]
    assert httpx.get(f"{base}/model/model.pkl").content == b"\x80\x04"
    httpx.delete(f"{base}/model").raise_for_status()
    assert [f.path for f in workspace.logged_models.files(model.id)] == ["MLmodel"]


@pytest.fixture
def native_version(workspace: Workspace) -> tuple[str, int]:
    X = pd.DataFrame(np.random.default_rng(3).normal(size=(40, 2)), columns=["a", "b"])
    client = Client(settings=workspace.settings)
    try:
        version = client.log_model(
            LogisticRegression().fit(X, (X.a > 0).astype(int)), "fraud", input_example=X[:5]
        )
    finally:
        client.close()
    return version.model, version.version


def test_a_registered_versions_files_are_read_only(
    live_server: LiveServer, workspace: Workspace, native_version: tuple[str, int]
) -> None:
    from modelyard.registry.mlflow_files import mlflow_files

    name, number = native_version
    # a native version reads as an MLflow model directory: its files and a made MLmodel
    files = mlflow_files(workspace, workspace.registry.get_version(name, number))
    assert "MLmodel" in files
    listed = httpx.get(
        f"{live_server.url}{PROXY}", params={"path": f"registry/{name}/{number}"}
    ).json()
    assert {f["path"] for f in listed["files"]} == {p.split("/")[0] for p in files}
    for path, entry in files.items():
        got = httpx.get(f"{live_server.url}{PROXY}/registry/{name}/{number}/{path}")
        assert got.status_code == 200 and sha(got.content) == entry.digest, path
    mlmodel = httpx.get(f"{live_server.url}{PROXY}/registry/{name}/{number}/MLmodel")
    assert b"flavors" in mlmodel.content

    for method in ("PUT", "DELETE"):
        answer = httpx.request(
            method, f"{live_server.url}{PROXY}/registry/{name}/{number}/MLmodel", content=b"x"
        )
        assert "read-only" in error(answer, 400, "INVALID_STATE")
    missing = httpx.get(f"{live_server.url}{PROXY}/registry/{name}/99/MLmodel")
    assert error(missing, 404, "RESOURCE_DOES_NOT_EXIST")
    no_model = httpx.get(f"{live_server.url}{PROXY}/registry/absent/1/MLmodel")
    assert error(no_model, 404, "RESOURCE_DOES_NOT_EXIST")


def test_reads_need_a_viewer_and_writes_an_editor(tmp_path: Path) -> None:
    ws = Workspace.open(Settings(home=tmp_path / "home", auth=True))
    tokens = {}
    for name, role in (("vi", "viewer"), ("ed", "editor")):
        ws.identities.create_user(name, role)
        tokens[name] = {"authorization": f"Bearer {ws.identities.create_token(name).secret}"}
    run = ws.tracking.start_run("roles")
    server = LiveServer(_app(ws))
    try:
        url = f"{server.url}{PROXY}/{root(run)}/f.txt"
        assert error(httpx.put(url, content=b"x"), 401, "UNAUTHENTICATED")
        denied = httpx.put(url, content=b"x", headers=tokens["vi"])
        assert "this needs editor" in error(denied, 403, "PERMISSION_DENIED")
        assert error(httpx.delete(url, headers=tokens["vi"]), 403, "PERMISSION_DENIED")
        assert httpx.put(url, content=b"x", headers=tokens["ed"]).status_code == 200
        assert httpx.get(url, headers=tokens["vi"]).content == b"x"
        listed = httpx.get(f"{server.url}{PROXY}", params={"path": root(run)}, headers=tokens["vi"])
        assert listed.json()["files"][0]["path"] == "f.txt"
    finally:
        server.stop()
        ws.close()


# --- MLflow's own artifact repository, 2.x and 3.x --------------------------------------

REPO_SCRIPT = """
import json, os, sys, tempfile
import mlflow
from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

uri, out = sys.argv[1], sys.argv[2]
repo = MlflowArtifactsRepository(uri)
src = tempfile.mkdtemp()
with open(os.path.join(src, "a.txt"), "w") as f:
    f.write("hello")
os.makedirs(os.path.join(src, "sub", "deep"))
with open(os.path.join(src, "sub", "deep", "b.bin"), "wb") as f:
    f.write(bytes(range(256)) * 40000)
repo.log_artifact(os.path.join(src, "a.txt"))
repo.log_artifacts(os.path.join(src, "sub"), "dir")
top = [(f.path, f.is_dir, f.file_size) for f in repo.list_artifacts()]
below = [(f.path, f.is_dir) for f in repo.list_artifacts("dir")]
one = repo.list_artifacts("a.txt")
got = repo.download_artifacts("", out)
files = sorted(
    os.path.relpath(os.path.join(r, n), got) for r, _, names in os.walk(got) for n in names
)
repo.delete_artifacts("dir")
after = [f.path for f in repo.list_artifacts()]
print(json.dumps({"top": top, "below": below, "one": one, "files": files, "after": after}))
"""


def test_mlflows_artifact_repository_works_unchanged(
    mlflow_python: Path,
    run_mlflow: RunMlflow,
    live_server: LiveServer,
    workspace: Workspace,
    run: Run,
    tmp_path: Path,
) -> None:
    script = tmp_path / "repo.py"
    script.write_text(REPO_SCRIPT)
    out = tmp_path / "downloaded"
    out.mkdir()
    uri = f"mlflow-artifacts:/{root(run)}"
    done = run_mlflow(mlflow_python, live_server.url, script=script, args=(uri, str(out)))
    assert done.returncode == 0, done.failure()
    assert done.summary == {
        "top": [["a.txt", False, 5], ["dir", True, None]],
        "below": [["dir/deep", True]],
        "one": [],
        "files": ["a.txt", "dir/deep/b.bin"],
        "after": ["a.txt"],
    }
    assert (out / "dir" / "deep" / "b.bin").read_bytes() == bytes(range(256)) * 40000
    assert [a.path for a in workspace.tracking.list_artifacts(run.id)] == ["a.txt"]


# --- resolving source URIs --------------------------------------------------------------


def test_source_uris_resolve_to_their_files(
    workspace: Workspace, run: Run, native_version: tuple[str, int]
) -> None:
    ws = workspace
    ws.tracking.log_artifact(run.id, "model/MLmodel", b"m")
    ws.tracking.log_artifact(run.id, "model/data/weights.bin", b"w")
    ws.tracking.log_artifact(run.id, "notes.txt", b"n")
    expected = [
        ArtifactFile("MLmodel", sha(b"m"), 1),
        ArtifactFile("data/weights.bin", sha(b"w"), 1),
    ]
    for uri in (
        f"runs:/{run.id}/model",
        f"runs:/{run.id}/model/",
        f"mlflow-artifacts:/{root(run)}/model",
        f"mlflow-artifacts://127.0.0.1:5000/{root(run)}/model",
        f"http://127.0.0.1:5000{PROXY}/{root(run)}/model",
        f"{root(run)}/model",
    ):
        assert resolve_artifact_files(ws, uri) == expected, uri
    # a single file comes by its name
    assert resolve_artifact_files(ws, f"runs:/{run.id}/notes.txt") == [
        ArtifactFile("notes.txt", sha(b"n"), 1)
    ]
    assert len(resolve_artifact_files(ws, f"runs:/{run.id}")) == 3

    # MLflow 3 logs a model in a run as a logged model named like the path
    model = ws.logged_models.create(run.experiment_id, name="clf", source_run_id=run.id)
    ws.logged_models.log_file(model.id, "MLmodel", b"lm")
    ws.logged_models.log_file(model.id, "model.pkl", b"pk")
    by_model = [ArtifactFile("MLmodel", sha(b"lm"), 2), ArtifactFile("model.pkl", sha(b"pk"), 2)]
    for uri in (
        f"models:/{model.id}",
        f"mlflow-artifacts:/{run.experiment_id}/models/{model.id}/artifacts",
        f"runs:/{run.id}/clf",
    ):
        assert resolve_artifact_files(ws, uri) == by_model, uri
    assert resolve_artifact_files(ws, f"models:/{model.id}/model.pkl") == by_model[1:]

    from modelyard.registry.mlflow_files import mlflow_files

    name, number = native_version
    made = mlflow_files(ws, ws.registry.get_version(name, number))
    want = [ArtifactFile(p, e.digest, e.size) for p, e in made.items()]
    ws.registry.set_alias(name, "champion", number)
    for uri in (
        f"registry/{name}/{number}",
        f"mlflow-artifacts:/registry/{name}/{number}",
        f"models:/{name}/{number}",
        f"models:/{name}@champion",
        f"models:/{name}/latest",
    ):
        assert resolve_artifact_files(ws, uri) == want, uri


def test_source_uris_that_name_nothing(workspace: Workspace, run: Run) -> None:
    ws = workspace
    with pytest.raises(NotFound, match="holds no files"):
        resolve_artifact_files(ws, f"runs:/{run.id}/model")
    with pytest.raises(NotFound, match="no run 'nope'"):
        resolve_artifact_files(ws, "runs:/nope/model")
    with pytest.raises(NotFound, match="no logged model"):
        resolve_artifact_files(ws, f"models:/m-{'a' * 32}")
    with pytest.raises(NotFound):
        resolve_artifact_files(ws, "models:/absent/1")
    for bad, why in (
        ("s3://bucket/model", "give runs:/, models:/ or mlflow-artifacts:/"),
        ("runs:/", "names no run"),
        (f"runs:/{run.id}/../x", "'..'"),
        ("mlflow-artifacts:/foo", "names no files"),
        ("http://host/somewhere/else", "not a modelyard artifact URL"),
        ("", "give a source URI"),
    ):
        with pytest.raises(InvalidInput, match=why):
            resolve_artifact_files(ws, bad)


FLUENT_SCRIPT = """
import json, os, sys, tempfile
import mlflow
from mlflow import MlflowClient

mlflow.set_experiment("fluent")
src = tempfile.mkdtemp()
with open(os.path.join(src, "data.csv"), "w") as f:
    f.write("a,b\\n1,2\\n")
with mlflow.start_run() as run:
    mlflow.log_artifact(os.path.join(src, "data.csv"))
    mlflow.log_artifact(os.path.join(src, "data.csv"), artifact_path="inputs")
    mlflow.log_text("hello", "notes/t.txt")
    mlflow.log_dict({"k": 1}, "notes/d.json")
run_id = run.info.run_id
notes = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="notes")
one = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="inputs/data.csv")
client = MlflowClient()
print(json.dumps({
    "run_id": run_id,
    "notes": sorted(os.listdir(notes)),
    "text": open(os.path.join(notes, "t.txt")).read(),
    "one": open(one).read(),
    "top": sorted((f.path, f.is_dir) for f in client.list_artifacts(run_id)),
    "inputs": [(f.path, f.file_size) for f in client.list_artifacts(run_id, "inputs")],
    "loaded": mlflow.artifacts.load_text(f"runs:/{run_id}/notes/t.txt"),
}))
"""


def test_mlflows_fluent_artifact_calls_land_in_the_runs_files(
    mlflow_python: Path,
    run_mlflow: RunMlflow,
    live_server: LiveServer,
    workspace: Workspace,
    tmp_path: Path,
) -> None:
    script = tmp_path / "fluent.py"
    script.write_text(FLUENT_SCRIPT)
    done = run_mlflow(mlflow_python, live_server.url, script=script)
    assert done.returncode == 0, done.failure()
    summary = done.summary
    assert summary is not None
    assert summary == {
        "run_id": summary["run_id"],
        "notes": ["d.json", "t.txt"],
        "text": "hello",
        "one": "a,b\n1,2\n",
        "top": [["data.csv", False], ["inputs", True], ["notes", True]],
        "inputs": [["inputs/data.csv", 8]],
        "loaded": "hello",
    }
    stored = workspace.tracking.list_artifacts(summary["run_id"])
    assert [a.path for a in stored] == [
        "data.csv",
        "inputs/data.csv",
        "notes/d.json",
        "notes/t.txt",
    ]
    assert stored[0].digest == sha(b"a,b\n1,2\n")
