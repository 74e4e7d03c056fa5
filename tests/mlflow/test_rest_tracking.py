"""MLflow's tracking REST API on modelyard, in MLflow's own JSON, over a real server.

Raw requests as MLflow's client sends them (protos/service.proto, store/tracking/rest_store.py)
for every route and its error paths; the runs they make are modelyard's runs, read back
through modelyard's own API too. The last test drives MLflow's real 3.x client.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from modelyard.config import Settings
from modelyard.workspace import Workspace
from tests.conftest import LiveServer
from tests.mlflow.conftest import RunMlflow

PREFIX = "/api/2.0/mlflow"
T0 = 1_700_000_000_000  # a start time in ms, as MLflow's client sends it


class Mlflow:
    """MLflow's REST API on a live server: ``call`` expects success, ``fail`` an error."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> httpx.Response:
        if method == "GET":
            return self.http.get(PREFIX + path, params=params)
        return self.http.post(PREFIX + path, json=body)

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> dict[str, Any]:
        answer = self.request(method, path, body, **params)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def post(self, path: str, body: Any) -> dict[str, Any]:
        return self.call("POST", path, body)

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self.call("GET", path, **params)

    def fail(
        self, method: str, path: str, body: Any, status: int, code: str, *words: str, **params: Any
    ) -> str:
        """The message of an error answer, checked for status, code and ``words``."""
        answer = self.request(method, path, body, **params)
        assert answer.status_code == status, answer.text
        error = answer.json()
        assert error["error_code"] == code, error
        for word in words:
            assert word in error["message"], error
        return str(error["message"])

    # shorthands for the common calls
    def experiment(self, name: str, **extra: Any) -> str:
        return str(self.post("/experiments/create", {"name": name, **extra})["experiment_id"])

    def run(self, experiment_id: str, name: str = "", **extra: Any) -> dict[str, Any]:
        body = {"experiment_id": experiment_id, "run_name": name, "start_time": T0, **extra}
        run: dict[str, Any] = self.post("/runs/create", body)["run"]
        return run

    def get_run(self, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self.get("/runs/get", run_id=run_id)["run"]
        return run

    def search(self, experiment_ids: list[str], **body: Any) -> dict[str, Any]:
        return self.post("/runs/search", {"experiment_ids": experiment_ids, **body})


@pytest.fixture
def server(any_workspace: Workspace) -> Iterator[LiveServer]:
    """modelyard's API over a workspace on SQLite, then on PostgreSQL."""
    from modelyard.api.app import create_app

    server = LiveServer(create_app(workspace=any_workspace))
    yield server
    server.stop()


@pytest.fixture
def api(server: LiveServer) -> Iterator[Mlflow]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield Mlflow(http)


def _pairs(items: list[dict[str, str]]) -> dict[str, str]:
    return {i["key"]: i["value"] for i in items}


def _names(answer: dict[str, Any]) -> list[str]:
    return [r["info"]["run_name"] for r in answer.get("runs", [])]


# --- experiments --------------------------------------------------------------------------


def test_experiment_lifecycle(api: Mlflow) -> None:
    exp_id = api.experiment("churn", tags=[{"key": "team", "value": "growth"}])
    exp = api.get("/experiments/get", experiment_id=exp_id)["experiment"]
    assert exp["experiment_id"] == exp_id and exp["name"] == "churn"
    assert exp["lifecycle_stage"] == "active" and _pairs(exp["tags"]) == {"team": "growth"}
    assert exp["artifact_location"] == f"mlflow-artifacts:/{exp_id}"
    assert isinstance(exp["creation_time"], int) and exp["last_update_time"] >= exp["creation_time"]
    by_name = api.get("/experiments/get-by-name", experiment_name="churn")["experiment"]
    assert by_name == exp

    api.post("/experiments/update", {"experiment_id": exp_id, "new_name": "churn-v2"})
    api.post("/experiments/set-experiment-tag", {"experiment_id": exp_id, "key": "k", "value": "v"})
    api.post("/experiments/set-experiment-tag", {"experiment_id": exp_id, "key": "k", "value": "w"})
    api.post("/experiments/delete-experiment-tag", {"experiment_id": exp_id, "key": "team"})
    exp = api.get("/experiments/get", experiment_id=exp_id)["experiment"]
    assert exp["name"] == "churn-v2" and _pairs(exp["tags"]) == {"k": "w"}

    api.post("/experiments/delete", {"experiment_id": exp_id})
    assert api.get("/experiments/get", experiment_id=exp_id)["experiment"]["lifecycle_stage"] == (
        "deleted"
    )
    assert api.post("/experiments/search", {}) == {}
    deleted = api.post("/experiments/search", {"view_type": "DELETED_ONLY"})["experiments"]
    assert [e["name"] for e in deleted] == ["churn-v2"]
    # the name of a deleted experiment stays taken, and new runs are refused there
    api.fail(
        "POST",
        "/experiments/create",
        {"name": "churn-v2"},
        400,
        "RESOURCE_ALREADY_EXISTS",
        "restore",
    )
    api.fail("POST", "/runs/create", {"experiment_id": exp_id}, 400, "INVALID_STATE", "archived")
    api.post("/experiments/restore", {"experiment_id": exp_id})
    assert [e["name"] for e in api.post("/experiments/search", {})["experiments"]] == ["churn-v2"]


def test_search_experiments_filters_orders_and_pages(api: Mlflow) -> None:
    for name, team in (("a-fraud", "fraud"), ("b-fraud", "fraud"), ("c-churn", "growth")):
        api.experiment(name, tags=[{"key": "team", "value": team}])
    search = api.post
    assert [e["name"] for e in search("/experiments/search", {})["experiments"]] == [
        "c-churn",
        "b-fraud",
        "a-fraud",
    ]  # newest first
    named = search("/experiments/search", {"filter": "name LIKE '%fraud'", "order_by": ["name"]})
    assert [e["name"] for e in named["experiments"]] == ["a-fraud", "b-fraud"]
    tagged = search("/experiments/search", {"filter": "tags.team = 'growth'"})
    assert [e["name"] for e in tagged["experiments"]] == ["c-churn"]
    untagged = search("/experiments/search", {"filter": "tags.owner IS NULL", "max_results": 5})
    assert len(untagged["experiments"]) == 3
    first = search("/experiments/search", {"max_results": 2, "order_by": ["name ASC"]})
    assert [e["name"] for e in first["experiments"]] == ["a-fraud", "b-fraud"]
    second = search(
        "/experiments/search",
        {"max_results": 2, "order_by": ["name ASC"], "page_token": first["next_page_token"]},
    )
    assert [e["name"] for e in second["experiments"]] == ["c-churn"]
    assert "next_page_token" not in second
    # the GET form, as some clients send it
    got = api.get("/experiments/search", filter="name = 'b-fraud'", view_type="ALL")
    assert [e["name"] for e in got["experiments"]] == ["b-fraud"]


def test_experiment_errors(api: Mlflow) -> None:
    exp_id = api.experiment("taken")
    api.fail(
        "POST", "/experiments/create", {"name": "taken"}, 400, "RESOURCE_ALREADY_EXISTS", "taken"
    )
    api.fail("POST", "/experiments/create", {"name": ""}, 400, "INVALID_PARAMETER_VALUE", "name")
    api.fail(
        "GET",
        "/experiments/get",
        None,
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "nope",
        experiment_id="nope",
    )
    api.fail(
        "GET",
        "/experiments/get-by-name",
        None,
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "missing",
        experiment_name="missing",
    )
    # an id is not looked up as a name, nor a name as an id
    api.fail("GET", "/experiments/get", None, 404, "RESOURCE_DOES_NOT_EXIST", experiment_id="taken")
    api.fail(
        "GET",
        "/experiments/get-by-name",
        None,
        404,
        "RESOURCE_DOES_NOT_EXIST",
        experiment_name=exp_id,
    )
    for path in ("/experiments/delete", "/experiments/restore"):
        api.fail("POST", path, {"experiment_id": "nope"}, 404, "RESOURCE_DOES_NOT_EXIST")
    api.post("/experiments/update", {"experiment_id": exp_id, "new_name": "taken"})  # no-op
    other = api.experiment("other")
    api.fail(
        "POST",
        "/experiments/update",
        {"experiment_id": other, "new_name": "taken"},
        400,
        "RESOURCE_ALREADY_EXISTS",
        "taken",
    )
    api.fail(
        "POST",
        "/experiments/delete-experiment-tag",
        {"experiment_id": exp_id, "key": "none"},
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "none",
    )
    api.fail(
        "POST",
        "/experiments/set-experiment-tag",
        {"experiment_id": exp_id, "key": "bad\nkey", "value": "v"},
        400,
        "INVALID_PARAMETER_VALUE",
        "key",
    )
    bad = api.fail(
        "POST",
        "/experiments/search",
        {"filter": "name = 'a' or name = 'b'"},
        400,
        "INVALID_PARAMETER_VALUE",
        "'and'",
    )
    assert "or" in bad
    api.fail(
        "POST",
        "/experiments/search",
        {"filter": "params.a = '1'"},
        400,
        "INVALID_PARAMETER_VALUE",
        "unknown field kind 'params'",
    )
    api.fail(
        "POST",
        "/experiments/search",
        {"view_type": "SOME"},
        400,
        "INVALID_PARAMETER_VALUE",
        "ACTIVE_ONLY",
    )
    for bad_max in (0, 50_001):
        api.fail(
            "POST",
            "/experiments/search",
            {"max_results": bad_max},
            400,
            "INVALID_PARAMETER_VALUE",
            "max_results",
        )
    api.fail(
        "POST",
        "/experiments/search",
        {"page_token": "not-ours"},
        400,
        "INVALID_PARAMETER_VALUE",
        "page_token",
    )


def test_default_experiment_is_zero(api: Mlflow) -> None:
    """MLflow's clients log to experiment "0" unless told otherwise: modelyard's experiment
    named Default, reported back as "0" wherever it appears."""
    default = api.get("/experiments/get", experiment_id="0")["experiment"]
    assert default["experiment_id"] == "0" and default["name"] == "Default"
    run = api.run("0", "first")
    assert run["info"]["experiment_id"] == "0"
    assert run["info"]["artifact_uri"] == f"mlflow-artifacts:/0/{run['info']['run_id']}/artifacts"
    unset = api.post("/runs/create", {"run_name": "unset"})["run"]  # no experiment_id at all
    assert unset["info"]["experiment_id"] == "0"
    assert _names(api.search(["0"], order_by=["run_name"])) == ["first", "unset"]
    assert (
        api.get("/experiments/get-by-name", experiment_name="Default")["experiment"][
            "experiment_id"
        ]
        == "0"
    )
    api.fail(
        "POST",
        "/experiments/delete",
        {"experiment_id": "0"},
        400,
        "INVALID_PARAMETER_VALUE",
        "default",
    )
    api.fail(
        "POST",
        "/experiments/update",
        {"experiment_id": "0", "new_name": "x"},
        400,
        "INVALID_PARAMETER_VALUE",
        "Default",
    )
    # MLflow's UI calls the same routes under /ajax-api
    answer = api.http.get("/ajax-api/2.0/mlflow/experiments/get", params={"experiment_id": "0"})
    assert answer.status_code == 200 and answer.json()["experiment"]["name"] == "Default"


def test_search_of_zero_before_default_exists_is_empty(api: Mlflow) -> None:
    assert api.search(["0"]) == {}
    api.fail(
        "POST",
        "/runs/search",
        {"experiment_ids": ["0"], "filter": "x"},
        400,
        "INVALID_PARAMETER_VALUE",
    )


# --- runs ---------------------------------------------------------------------------------


def test_run_lifecycle_and_data(api: Mlflow, any_workspace: Workspace, server: LiveServer) -> None:
    exp_id = api.experiment("lifecycle")
    tags = [
        {"key": "mlflow.user", "value": "alice"},
        {"key": "mlflow.source.type", "value": "LOCAL"},
    ]
    run = api.run(exp_id, "first", tags=tags)
    info = run["info"]
    run_id = info["run_id"]
    assert info["run_uuid"] == run_id and info["experiment_id"] == exp_id
    assert info["status"] == "RUNNING" and info["lifecycle_stage"] == "active"
    assert info["start_time"] == T0 and "end_time" not in info
    assert info["artifact_uri"] == f"mlflow-artifacts:/{exp_id}/{run_id}/artifacts"
    assert _pairs(run["data"]["tags"]) == {
        "mlflow.user": "alice",
        "mlflow.source.type": "LOCAL",
        "mlflow.runName": "first",
    }

    for step, value in enumerate([1.0, 0.5, 0.25]):
        api.post(
            "/runs/log-metric",
            {
                "run_id": run_id,
                "run_uuid": run_id,
                "key": "loss",
                "value": value,
                "timestamp": T0 + step,
                "step": step,
            },
        )
    # MLflow's client writes NaN and infinities as strings (protobuf's JSON)
    api.post("/runs/log-metric", {"run_id": run_id, "key": "nan", "value": "NaN", "timestamp": T0})
    api.post(
        "/runs/log-metric", {"run_id": run_id, "key": "inf", "value": "-Infinity", "timestamp": T0}
    )
    api.post("/runs/log-parameter", {"run_id": run_id, "key": "alpha", "value": "0.5"})
    api.post("/runs/log-parameter", {"run_id": run_id, "key": "alpha", "value": "0.5"})  # same: OK
    api.post("/runs/set-tag", {"run_id": run_id, "key": "team", "value": "fraud"})
    api.post(
        "/runs/log-batch",
        {
            "run_id": run_id,
            "metrics": [{"key": "acc", "value": 0.9, "timestamp": T0, "step": 0}],
            "params": [{"key": "depth", "value": "3"}],
            "tags": [{"key": "team", "value": "risk"}],
        },
    )

    data = api.get_run(run_id)["data"]
    metrics = {m["key"]: m for m in data["metrics"]}
    assert metrics["loss"] == {"key": "loss", "value": 0.25, "timestamp": T0 + 2, "step": 2}
    assert metrics["nan"]["value"] == "NaN" and metrics["inf"]["value"] == "-Infinity"
    assert metrics["acc"]["value"] == 0.9
    assert _pairs(data["params"]) == {"alpha": "0.5", "depth": "3"}
    assert _pairs(data["tags"])["team"] == "risk"

    history = api.get("/metrics/get-history", run_id=run_id, metric_key="loss")["metrics"]
    assert [(m["step"], m["value"], m["timestamp"]) for m in history] == [
        (0, 1.0, T0),
        (1, 0.5, T0 + 1),
        (2, 0.25, T0 + 2),
    ]
    assert all(m["run_id"] == run_id for m in history)
    page = api.get("/metrics/get-history", run_id=run_id, metric_key="loss", max_results=2)
    assert [m["step"] for m in page["metrics"]] == [0, 1]
    rest = api.get(
        "/metrics/get-history",
        run_id=run_id,
        metric_key="loss",
        max_results=2,
        page_token=page["next_page_token"],
    )
    assert [m["step"] for m in rest["metrics"]] == [2] and "next_page_token" not in rest
    assert api.get("/metrics/get-history", run_id=run_id, metric_key="never") == {}

    ended = api.post(
        "/runs/update",
        {
            "run_id": run_id,
            "run_uuid": run_id,
            "status": "FINISHED",
            "end_time": T0 + 60_000,
            "run_name": "renamed",
        },
    )["run_info"]
    assert ended["status"] == "FINISHED" and ended["end_time"] == T0 + 60_000
    assert ended["run_name"] == "renamed"
    # MLflow's server takes data after a run ended (an evaluation logged later)
    api.post("/runs/log-metric", {"run_id": run_id, "key": "late", "value": 1, "timestamp": T0})
    # MLflow's client resumes a run as RUNNING with its old end time, then ends it again
    resumed = api.post(
        "/runs/update", {"run_id": run_id, "status": "RUNNING", "end_time": T0 + 60_000}
    )
    assert resumed["run_info"]["status"] == "RUNNING"
    api.post("/runs/update", {"run_id": run_id, "status": "KILLED"})
    got = api.get_run(run_id)
    assert got["info"]["status"] == "KILLED" and got["info"]["end_time"] > T0 + 60_000
    assert _pairs(got["data"]["tags"])["mlflow.runName"] == "renamed"

    api.post("/runs/delete-tag", {"run_id": run_id, "key": "team"})
    assert "team" not in _pairs(api.get_run(run_id)["data"]["tags"])

    # the same run, in modelyard's own API
    own = httpx.get(f"{server.url}/api/v1/runs/{run_id}").json()
    assert own["name"] == "renamed" and own["status"] == "killed"
    assert own["params"] == {"alpha": "0.5", "depth": "3"} and own["metrics"]["loss"] == 0.25
    actions = [r.action for r in any_workspace.audit.list(entity_id=run_id, limit=100).items]
    assert {"run.start", "run.log_params", "run.set_tags", "run.update", "run.delete_tag"} <= set(
        actions
    )


def test_delete_and_restore_run(api: Mlflow) -> None:
    exp_id = api.experiment("deleting")
    keep, gone = api.run(exp_id, "keep"), api.run(exp_id, "gone")
    gone_id = gone["info"]["run_id"]
    api.post("/runs/delete", {"run_id": gone_id})
    assert api.get_run(gone_id)["info"]["lifecycle_stage"] == "deleted"
    assert _names(api.search([exp_id])) == ["keep"]
    assert _names(api.search([exp_id], run_view_type="DELETED_ONLY")) == ["gone"]
    assert sorted(_names(api.search([exp_id], run_view_type="ALL"))) == ["gone", "keep"]
    for path, body in (
        ("/runs/log-metric", {"run_id": gone_id, "key": "m", "value": 1, "timestamp": T0}),
        ("/runs/set-tag", {"run_id": gone_id, "key": "t", "value": "v"}),
        ("/runs/update", {"run_id": gone_id, "status": "FINISHED"}),
    ):
        api.fail("POST", path, body, 400, "INVALID_STATE", "deleted", "restore")
    api.post("/runs/restore", {"run_id": gone_id})
    assert api.get_run(gone_id)["info"]["lifecycle_stage"] == "active"
    assert sorted(_names(api.search([exp_id]))) == ["gone", "keep"]
    assert keep["info"]["lifecycle_stage"] == "active"


def test_run_errors(api: Mlflow) -> None:
    exp_id = api.experiment("errors")
    run_id = api.run(exp_id, "r")["info"]["run_id"]
    missing = "01ZZZZZZZZZZZZZZZZZZZZZZZZ"
    api.fail("GET", "/runs/get", None, 404, "RESOURCE_DOES_NOT_EXIST", missing, run_id=missing)
    for path, body in (
        ("/runs/update", {"run_id": missing, "status": "FINISHED"}),
        ("/runs/delete", {"run_id": missing}),
        ("/runs/restore", {"run_id": missing}),
        ("/runs/log-metric", {"run_id": missing, "key": "m", "value": 1, "timestamp": T0}),
        ("/runs/log-parameter", {"run_id": missing, "key": "p", "value": "1"}),
        ("/runs/set-tag", {"run_id": missing, "key": "t", "value": "1"}),
        ("/runs/delete-tag", {"run_id": missing, "key": "t"}),
        ("/runs/log-batch", {"run_id": missing, "metrics": [{"key": "m", "value": 1}]}),
        ("/runs/log-model", {"run_id": missing, "model_json": _model_json(missing)}),
        ("/runs/log-inputs", {"run_id": missing, "datasets": [_dataset_input()]}),
    ):
        api.fail("POST", path, body, 404, "RESOURCE_DOES_NOT_EXIST", missing)
    api.fail(
        "GET",
        "/metrics/get-history",
        None,
        404,
        "RESOURCE_DOES_NOT_EXIST",
        run_id=missing,
        metric_key="m",
    )
    api.fail(
        "POST", "/runs/create", {"experiment_id": "nope"}, 404, "RESOURCE_DOES_NOT_EXIST", "nope"
    )
    api.fail("POST", "/runs/delete", {}, 400, "INVALID_PARAMETER_VALUE", "run_id")
    api.fail(
        "GET",
        "/metrics/get-history",
        None,
        400,
        "INVALID_PARAMETER_VALUE",
        "metric_key",
        run_id=run_id,
    )

    # params are immutable: the same value again is fine, another is refused
    api.post("/runs/log-parameter", {"run_id": run_id, "key": "alpha", "value": "0.1"})
    api.fail(
        "POST",
        "/runs/log-parameter",
        {"run_id": run_id, "key": "alpha", "value": "0.2"},
        400,
        "INVALID_PARAMETER_VALUE",
        "immutable",
        "'0.1' -> '0.2'",
    )
    api.fail(
        "POST",
        "/runs/log-batch",
        {"run_id": run_id, "params": [{"key": "alpha", "value": "0.3"}]},
        400,
        "INVALID_PARAMETER_VALUE",
        "immutable",
    )
    api.fail(
        "POST",
        "/runs/log-batch",
        {"run_id": run_id, "params": [{"key": "b", "value": "1"}, {"key": "b", "value": "2"}]},
        400,
        "INVALID_PARAMETER_VALUE",
        "given twice",
    )
    api.fail(
        "POST",
        "/runs/delete-tag",
        {"run_id": run_id, "key": "none"},
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "none",
    )
    api.fail(
        "POST",
        "/runs/log-metric",
        {"run_id": run_id, "key": "m", "value": "high", "timestamp": T0},
        400,
        "INVALID_PARAMETER_VALUE",
        "value",
    )
    api.fail(
        "POST",
        "/runs/log-metric",
        {"run_id": run_id, "key": "bad\nkey", "value": 1, "timestamp": T0},
        400,
        "INVALID_PARAMETER_VALUE",
        "metric key",
    )
    api.fail(
        "POST",
        "/runs/update",
        {"run_id": run_id, "status": "DONE"},
        400,
        "INVALID_PARAMETER_VALUE",
        "RUNNING, FINISHED, FAILED or KILLED",
    )
    api.fail(
        "POST",
        "/runs/update",
        {"run_id": run_id, "status": "SCHEDULED"},
        400,
        "INVALID_PARAMETER_VALUE",
        "SCHEDULED",
    )
    api.fail(
        "POST",
        "/runs/create",
        {"experiment_id": exp_id, "start_time": 10**20},
        400,
        "INVALID_PARAMETER_VALUE",
        "start_time",
    )
    # malformed JSON, and JSON that is not an object
    answer = api.http.post(
        PREFIX + "/runs/log-batch",
        content=b'{"run_id": ',
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 400 and answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "the body is not valid JSON" in answer.json()["message"]
    api.fail("POST", "/runs/log-batch", [1, 2], 400, "INVALID_PARAMETER_VALUE")


def test_points_logged_again_for_a_model_are_kept_once(api: Mlflow) -> None:
    """MLflow 3's log_model logs the run's points of a step again, with the model's id; its
    server keeps each point once, and so does modelyard."""
    run_id = api.run(api.experiment("relink"))["info"]["run_id"]
    points = [
        {"key": "loss", "value": 0.5, "timestamp": T0, "step": 0},
        {"key": "loss", "value": 0.25, "timestamp": T0 + 1, "step": 1},
        {"key": "nan", "value": "NaN", "timestamp": T0, "step": 0},
    ]
    api.post("/runs/log-batch", {"run_id": run_id, "metrics": points})
    model = "m-" + "0" * 32
    again = [{**p, "model_id": model} for p in points]
    new = {"key": "loss", "value": 0.2, "timestamp": T0 + 2, "step": 1, "model_id": model}
    api.post("/runs/log-batch", {"run_id": run_id, "metrics": [*again, new]})
    history = api.get("/metrics/get-history", run_id=run_id, metric_key="loss")["metrics"]
    assert [(m["step"], m["value"]) for m in history] == [(0, 0.5), (1, 0.25), (1, 0.2)]
    assert len(api.get("/metrics/get-history", run_id=run_id, metric_key="nan")["metrics"]) == 1
    # without a model's id, a point logged twice is two points (modelyard's rule)
    api.post("/runs/log-metric", {"run_id": run_id, **points[0]})
    assert len(api.get("/metrics/get-history", run_id=run_id, metric_key="loss")["metrics"]) == 4


@pytest.mark.parametrize(
    ("metrics", "params", "tags", "words"),
    [
        (1001, 0, 0, ("at most 1000 metrics", "1001")),
        (0, 101, 0, ("at most 100 params", "101")),
        (0, 0, 101, ("at most 100 tags", "101")),
        (950, 60, 0, ("at most 1000 metrics, params and tags together", "1010")),
    ],
)
def test_log_batch_limits(
    api: Mlflow, metrics: int, params: int, tags: int, words: tuple[str, ...]
) -> None:
    run_id = api.run(api.experiment("limits"))["info"]["run_id"]
    body = {
        "run_id": run_id,
        "metrics": [{"key": "m", "value": i, "timestamp": T0, "step": i} for i in range(metrics)],
        "params": [{"key": f"p{i}", "value": "1"} for i in range(params)],
        "tags": [{"key": f"t{i}", "value": "1"} for i in range(tags)],
    }
    api.fail("POST", "/runs/log-batch", body, 400, "INVALID_PARAMETER_VALUE", *words, "split")
    assert api.get_run(run_id)["data"].get("metrics") == []  # nothing of it was logged


def test_log_batch_is_one_write_transaction(api: Mlflow, any_workspace: Workspace) -> None:
    run_id = api.run(api.experiment("one-tx"))["info"]["run_id"]
    transactions: list[object] = []
    metrics = [{"key": f"m{i % 10}", "value": i, "timestamp": T0, "step": i} for i in range(1000)]
    engine = any_workspace.store.engine

    def _begin(connection: object) -> None:
        transactions.append(connection)

    event.listen(engine, "begin", _begin)
    try:
        api.post("/runs/log-batch", {"run_id": run_id, "metrics": metrics})
        api.post(
            "/runs/log-batch",
            {
                "run_id": run_id,
                "metrics": metrics[:100],
                "params": [{"key": f"p{i}", "value": str(i)} for i in range(100)],
                "tags": [{"key": f"t{i}", "value": str(i)} for i in range(100)],
            },
        )
    finally:
        event.remove(engine, "begin", _begin)
    assert len(transactions) == 2  # one each, reads included
    history = api.get("/metrics/get-history", run_id=run_id, metric_key="m3")["metrics"]
    assert len(history) == 110


def test_search_runs(api: Mlflow) -> None:
    exp_id = api.experiment("search")
    other_id = api.experiment("search-other")
    rows = [
        ("a", 0.9, "x", "fraud", "FINISHED"),
        ("b", 0.5, "y", "fraud", "FINISHED"),
        ("c", 0.2, "x", "risk", "FAILED"),
        ("d", 1.5, "x", "fraud", "RUNNING"),
    ]
    ids = {}
    for i, (name, rmse, p, team, status) in enumerate(rows):
        run = api.run(exp_id, name, start_time=T0 + i * 1000)
        run_id = run["info"]["run_id"]
        ids[name] = run_id
        api.post(
            "/runs/log-batch",
            {
                "run_id": run_id,
                "metrics": [{"key": "rmse", "value": rmse, "timestamp": T0, "step": 0}],
                "params": [{"key": "p", "value": p}],
                "tags": [{"key": "team", "value": team}],
            },
        )
        if status != "RUNNING":
            api.post("/runs/update", {"run_id": run_id, "status": status, "end_time": T0 + 5000})
    api.run(other_id, "elsewhere", start_time=T0 + 9000)

    def names(filter: str = "", **body: Any) -> list[str]:
        return _names(api.search([exp_id], filter=filter, **body))

    assert names() == ["d", "c", "b", "a"]  # newest first
    everything = "metrics.rmse > 0.3 and params.p = 'x' and tags.team = 'fraud'"
    assert names(f"{everything} and attributes.status = 'FINISHED'") == ["a"]
    assert names("status = 'finished'") == ["b", "a"]  # statuses match in any case
    assert names("attributes.run_name = 'c'") == ["c"]
    assert names("run_name LIKE 'a%'") == ["a"]
    assert names(f"attributes.start_time >= {T0 + 2000}") == ["d", "c"]
    assert names(f"attributes.start_time = {T0 + 1000}") == ["b"]
    assert names(f"attributes.end_time < {T0 + 10_000}") == ["c", "b", "a"]
    assert names(f"attributes.run_id IN ('{ids['a']}', '{ids['c']}')") == ["c", "a"]
    assert names(f"attributes.run_id NOT IN ('{ids['a']}')") == ["d", "c", "b"]
    assert names("tags.team != 'fraud'") == ["c"]
    assert names("tags.owner IS NULL and params.p IS NOT NULL") == ["d", "c", "b", "a"]
    assert names("tags.`team` ILIKE 'FR%' and metrics.\"rmse\" <= 0.9") == ["b", "a"]
    assert names(order_by=["metrics.rmse DESC"]) == ["d", "a", "b", "c"]
    assert names(order_by=["params.p", "attributes.start_time DESC"]) == ["d", "c", "a", "b"]
    assert names(order_by=["start_time"]) == ["a", "b", "c", "d"]
    both = _names(api.search([exp_id, other_id], order_by=["run_name"]))
    assert both == ["a", "b", "c", "d", "elsewhere"]
    assert _names(api.search([exp_id, "01ZZZZZZZZZZZZZZZZZZZZZZZZ", "nope"])) == [
        "d",
        "c",
        "b",
        "a",
    ]

    first = api.search([exp_id], max_results=3, order_by=["metrics.rmse"])
    assert _names(first) == ["c", "b", "a"]
    second = api.search(
        [exp_id], max_results=3, order_by=["metrics.rmse"], page_token=first["next_page_token"]
    )
    assert _names(second) == ["d"] and "next_page_token" not in second
    run = api.search([exp_id], filter="run_name = 'a'")["runs"][0]
    assert run["data"]["metrics"][0]["key"] == "rmse" and _pairs(run["data"]["params"]) == {
        "p": "x"
    }
    assert run["info"]["status"] == "FINISHED" and run["info"]["end_time"] == T0 + 5000


@pytest.mark.parametrize(
    ("filter", "words"),
    [
        ("metrics.rmse > 'high'", ("metrics.rmse compares with a number",)),
        ("metrics.rmse < 1 or params.p = 'x'", ("'and'",)),
        ("params.p < '1'", ("compares strings",)),
        ("colour = 'red'", ("unknown run attribute 'colour'", "start_time")),
        ("secrets.a = '1'", ("unknown field kind 'secrets'",)),
        ("attributes.start_time > 'yesterday'", ("milliseconds since the epoch",)),
        ("params.p IN ('x')", ("in / not in",)),
        ("metrics.rmse IS NULL", ("only params and tags",)),
        ("attributes.run_id IN ('a', b)", ("('a', 'b')",)),
        ("datasets.size = '1'", ("datasets.name, digest or context",)),
        ("metrics.rmse <", ("cannot read the value of metrics.rmse",)),
        ("metrics.rmse < 1 and ", ("ends with 'and'",)),
        ("rmse@ = 1", ("cannot read the filter at", "strings in quotes")),
    ],
)
def test_search_runs_refuses_bad_filters_saying_what_to_fix(
    api: Mlflow, filter: str, words: tuple[str, ...]
) -> None:
    exp_id = api.experiment("bad-filters")
    api.fail(
        "POST",
        "/runs/search",
        {"experiment_ids": [exp_id], "filter": filter},
        400,
        "INVALID_PARAMETER_VALUE",
        *words,
    )


def test_search_runs_other_errors(api: Mlflow) -> None:
    exp_id = api.experiment("search-errors")
    for body, words in (
        ({"experiment_ids": []}, ("experiment_ids",)),
        ({"experiment_ids": [exp_id], "order_by": ["metrics.rmse sideways"]}, ("order_by",)),
        ({"experiment_ids": [exp_id], "run_view_type": "NONE"}, ("DELETED_ONLY",)),
        ({"experiment_ids": [exp_id], "max_results": 50_001}, ("50000",)),
        ({"experiment_ids": [exp_id], "page_token": "xyz"}, ("page_token",)),
    ):
        api.fail("POST", "/runs/search", body, 400, "INVALID_PARAMETER_VALUE", *words)


def test_search_runs_beyond_a_page_of_modelyard(api: Mlflow, any_workspace: Workspace) -> None:
    """MLflow's client asks for pages of 10,000 runs; modelyard's pages hold 1,000."""
    exp_id = api.experiment("many")
    for i in range(1005):
        any_workspace.tracking.start_run(experiment_id=exp_id, name=f"r{i:04d}")
    page = api.search([exp_id], max_results=1003, order_by=["run_name"])
    assert len(page["runs"]) == 1003 and page["runs"][-1]["info"]["run_name"] == "r1002"
    rest = api.search(
        [exp_id], max_results=10_000, order_by=["run_name"], page_token=page["next_page_token"]
    )
    assert _names(rest) == ["r1003", "r1004"] and "next_page_token" not in rest


# --- inputs and logged models -------------------------------------------------------------


def _dataset_input(
    name: str = "train", digest: str = "5d059f95", context: str = "training"
) -> dict[str, Any]:
    """A dataset input as MLflow's client sends it for ``mlflow.data.from_pandas``."""
    schema = {
        "mlflow_colspec": [
            {"type": "double", "name": "x", "required": True},
            {"type": "long", "name": "y", "required": True},
        ]
    }
    return {
        "tags": [{"key": "mlflow.data.context", "value": context}],
        "dataset": {
            "name": name,
            "digest": digest,
            "source_type": "local",
            "source": json.dumps({"uri": "/data/train.csv"}),
            "schema": json.dumps(schema),
            "profile": json.dumps({"num_rows": 150, "num_elements": 300}),
        },
    }


def test_log_inputs_records_datasets_by_reference(api: Mlflow, server: LiveServer) -> None:
    exp_id = api.experiment("inputs")
    run_id = api.run(exp_id, "with-data")["info"]["run_id"]
    api.post(
        "/runs/log-inputs",
        {
            "run_id": run_id,
            "datasets": [_dataset_input(), _dataset_input("holdout", "aa11", "eval")],
        },
    )
    api.post("/runs/log-inputs", {"run_id": run_id, "datasets": [_dataset_input()]})  # same again
    inputs = api.get_run(run_id)["inputs"]["dataset_inputs"]
    by_name = {i["dataset"]["name"]: i for i in inputs}
    assert set(by_name) == {"train", "holdout"}
    train = by_name["train"]
    assert _pairs(train["tags"]) == {"mlflow.data.context": "training"}
    assert train["dataset"]["digest"] == "5d059f95" and train["dataset"]["source_type"] == "local"
    assert json.loads(train["dataset"]["source"]) == {"uri": "/data/train.csv"}
    schema = json.loads(train["dataset"]["schema"])["mlflow_colspec"]
    assert [(c["name"], c["type"]) for c in schema] == [("x", "double"), ("y", "long")]
    assert json.loads(train["dataset"]["profile"])["num_rows"] == 150
    assert _names(api.search([exp_id], filter="datasets.name = 'holdout'")) == ["with-data"]
    assert _names(api.search([exp_id], filter="datasets.context = 'test'")) == []
    # modelyard's own API shows the run's inputs and the dataset versions
    own = httpx.get(f"{server.url}/api/v1/runs/{run_id}").json()
    assert sorted((i["name"], i["version"], i["context"]) for i in own["inputs"]) == [
        ("holdout", 1, "eval"),
        ("train", 1, "training"),
    ]
    dataset = httpx.get(f"{server.url}/api/v1/datasets/train").json()
    assert dataset["num_rows"] == 150 and dataset["artifact_digest"] is None

    bad = _dataset_input("no spaces please")
    api.fail(
        "POST",
        "/runs/log-inputs",
        {"run_id": run_id, "datasets": [bad]},
        400,
        "INVALID_PARAMETER_VALUE",
        "dataset name",
    )
    nameless = _dataset_input("")
    api.fail(
        "POST",
        "/runs/log-inputs",
        {"run_id": run_id, "datasets": [nameless]},
        400,
        "INVALID_PARAMETER_VALUE",
        "name and a digest",
    )


def _model_json(run_id: str, path: str = "model") -> str:
    return json.dumps(
        {
            "artifact_path": path,
            "flavors": {"sklearn": {"pickled_model": "model.pkl"}},
            "utc_time_created": "2026-12-07 10:00:00.000000",
            "run_id": run_id,
        }
    )


def test_log_model_appends_to_the_history_tag(api: Mlflow) -> None:
    run_id = api.run(api.experiment("log-model"))["info"]["run_id"]
    api.post("/runs/log-model", {"run_id": run_id, "model_json": _model_json(run_id, "model")})
    api.post("/runs/log-model", {"run_id": run_id, "model_json": _model_json(run_id, "second")})
    history = json.loads(_pairs(api.get_run(run_id)["data"]["tags"])["mlflow.log-model.history"])
    assert [m["artifact_path"] for m in history] == ["model", "second"]
    api.fail(
        "POST",
        "/runs/log-model",
        {"run_id": run_id, "model_json": json.dumps({"artifact_path": "m"})},
        400,
        "INVALID_PARAMETER_VALUE",
        "flavors",
    )
    api.fail(
        "POST",
        "/runs/log-model",
        {"run_id": run_id, "model_json": "not json"},
        400,
        "INVALID_PARAMETER_VALUE",
        "JSON",
    )


# --- auth ---------------------------------------------------------------------------------


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A server with auth on, and tokens of an editor and a viewer."""
    from modelyard.api.app import create_app

    ws = Workspace.open(Settings(home=tmp_path / "auth-home", auth=True))
    ws.identities.create_user("ed", "editor")
    ws.identities.create_user("vi", "viewer")
    tokens = {who: ws.identities.create_token(who).secret for who in ("ed", "vi")}
    server = LiveServer(create_app(workspace=ws))
    yield server.url, tokens
    server.stop()
    ws.close()


def test_bearer_token_as_mlflow_sends_it(auth_server: tuple[str, dict[str, str]]) -> None:
    url, tokens = auth_server
    editor = {"Authorization": f"Bearer {tokens['ed']}"}
    viewer = {"Authorization": f"Bearer {tokens['vi']}"}
    created = httpx.post(
        f"{url}{PREFIX}/experiments/create", json={"name": "secure"}, headers=editor
    )
    assert created.status_code == 200, created.text
    exp_id = created.json()["experiment_id"]
    run = httpx.post(f"{url}{PREFIX}/runs/create", json={"experiment_id": exp_id}, headers=editor)
    assert run.json()["run"]["info"]["user_id"] == "ed"
    got = httpx.get(
        f"{url}{PREFIX}/experiments/get", params={"experiment_id": exp_id}, headers=viewer
    )
    assert got.status_code == 200

    anonymous = httpx.get(f"{url}{PREFIX}/experiments/get", params={"experiment_id": exp_id})
    assert anonymous.status_code == 401
    assert anonymous.json()["error_code"] == "UNAUTHENTICATED"
    wrong = httpx.get(
        f"{url}{PREFIX}/experiments/get",
        params={"experiment_id": exp_id},
        headers={"Authorization": "Bearer not-a-token"},
    )
    assert wrong.status_code == 401 and wrong.json()["error_code"] == "UNAUTHENTICATED"
    refused = httpx.post(f"{url}{PREFIX}/experiments/create", json={"name": "x"}, headers=viewer)
    assert refused.status_code == 403
    assert (
        refused.json()["error_code"] == "PERMISSION_DENIED"
        and "editor" in refused.json()["message"]
    )


# --- MLflow's own client ------------------------------------------------------------------

SANITY = textwrap.dedent(
    """
    import json, math
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_experiment("sanity")
    with mlflow.start_run(run_name="r1") as run:
        mlflow.log_param("alpha", 0.5)
        mlflow.log_params({"depth": 3, "kind": "tree"})
        for step in range(3):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"acc": 0.9, "nan": float("nan")})
        mlflow.set_tag("team", "fraud")
    client = MlflowClient()
    found = mlflow.search_runs(
        filter_string="metrics.acc > 0.5 and params.alpha = '0.5' and tags.team = 'fraud'"
        " and attributes.status = 'FINISHED'",
        order_by=["metrics.acc DESC"],
        output_format="list",
    )
    run = client.get_run(run.info.run_id)
    with mlflow.start_run(run_id=run.info.run_id):  # resume, log, end again
        mlflow.log_metric("late", 1.0)
    print(json.dumps({
        "found": [r.info.run_id for r in found],
        "run_id": run.info.run_id,
        "status": client.get_run(run.info.run_id).info.status,
        "history": [[m.step, m.value] for m in client.get_metric_history(run.info.run_id, "loss")],
        "params": run.data.params,
        "nan": math.isnan(run.data.metrics["nan"]),
        "team": run.data.tags["team"],
        "experiments": sorted(e.name for e in client.search_experiments()),
    }))
    """
)


def test_mlflow_3_client_tracks_through_modelyard(
    mlflow3_python: Path,
    run_mlflow: RunMlflow,
    live_server: LiveServer,
    workspace: Workspace,
    tmp_path: Path,
) -> None:
    script = tmp_path / "sanity.py"
    script.write_text(SANITY)
    done = run_mlflow(mlflow3_python, live_server.url, script=script)
    assert done.returncode == 0, done.failure()
    summary = done.summary
    assert summary is not None
    assert summary["found"] == [summary["run_id"]] and summary["status"] == "FINISHED"
    assert summary["history"] == [[0, 1.0], [1, 0.5], [2, 1 / 3]]
    assert summary["params"] == {"alpha": "0.5", "depth": "3", "kind": "tree"}
    assert summary["nan"] is True and summary["team"] == "fraud"
    assert summary["experiments"] == ["sanity"]
    run = workspace.tracking.get_run(summary["run_id"])  # modelyard's own run
    assert run.experiment == "sanity" and run.name == "r1" and run.status == "finished"
    assert run.metrics["late"] == 1.0 and math.isnan(run.metrics["nan"])
