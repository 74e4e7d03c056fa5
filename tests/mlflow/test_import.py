"""`modelyard import mlflow`: a real MLflow server and real file stores, filled by MLflow's own
client (2.x and 3.x, tests/mlflow/import_seed.py), imported, and compared with what MLflow's
client reads back from them: nothing lost, and a second import adds nothing.

The MLflow venvs, the server and ``run_mlflow`` come from tests/mlflow/conftest.py.
"""

from __future__ import annotations

import http.server
import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from modelyard.config import Settings
from modelyard.errors import UntrustedModel
from modelyard.interop.mlflow_import import (
    COMPLETE,
    PARTIAL,
    RUN_ID_TAG,
    SOURCE_TAG,
    STATE_TAG,
    VERSION_TAG,
    ImportReport,
    import_mlflow,
)
from modelyard.interop.mlflow_source import open_source
from modelyard.tracking.entities import Run
from modelyard.workspace import Workspace
from tests.mlflow.conftest import MlflowServer, RunMlflow
from tests.serve_process import free_port

SEED = Path(__file__).with_name("import_seed.py")
#: A file MLflow's client adds to a registered version's files when it downloads them.
DOWNLOAD_ONLY = "registered_model_meta"


def _mlflow(run_mlflow: RunMlflow, python: Path, uri: str, *args: str) -> dict[str, Any]:
    """Run import_seed.py with MLflow's client against ``uri``; its JSON line."""
    done = run_mlflow(
        python, uri, script=SEED, args=args, extra_env={"MLFLOW_ALLOW_FILE_STORE": "true"}
    )
    assert done.returncode == 0, done.failure()
    assert done.summary is not None, done.stdout
    return done.summary


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELYARD_", "MLFLOW_"))}
    env["COLUMNS"] = "1000"  # one line per message, as a log would read it
    return subprocess.run(
        [sys.executable, "-m", "modelyard", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _counts(report: ImportReport | dict[str, Any], kind: str) -> tuple[int, int, int, int]:
    counts = report["counts"][kind] if isinstance(report, dict) else report.counts[kind]
    if not isinstance(counts, dict):
        counts = counts.model_dump()
    return counts["imported"], counts["existing"], counts["skipped"], counts["failed"]


def _failed(report: ImportReport) -> dict[str, str]:
    return {i.item: i.reason for i in report.items if i.outcome == "failed"}


@pytest.fixture
def workspace_at(tmp_path: Path) -> Iterator[Workspace]:
    ws = Workspace.open(Settings(home=tmp_path / "ws"))
    yield ws
    ws.close()


def _imported_run(ws: Workspace, experiment: str, mlflow_run_id: str) -> Run | None:
    found = ws.tracking.search_runs(
        experiment, filter_string=f"tags.`{RUN_ID_TAG}` = '{mlflow_run_id}'", lifecycle="all"
    ).items
    assert len(found) <= 1, f"run {mlflow_run_id} was imported {len(found)} times"
    return found[0] if found else None


def _millis(when: Any) -> int | None:
    return None if when is None else round(when.timestamp() * 1000)


def _check_everything_is_there(
    ws: Workspace, dump: dict[str, Any], source: str, *, unloadable: tuple[str, ...] = ()
) -> None:
    """Every experiment, run, model, version and alias MLflow's client reads is in the
    workspace with the same values (the deleted run and the ``unloadable`` models excepted)."""
    for name, exp in dump["experiments"].items():
        here = ws.tracking.get_experiment(name)
        assert exp["tags"].items() <= here.tags.items()
        assert here.description == exp["tags"].get("mlflow.note.content", "")
    runs = 0
    for run_id, run in dump["runs"].items():
        here = _imported_run(ws, run["experiment"], run_id)
        if run["deleted"]:
            assert here is None
            continue
        assert here is not None, f"run {run['name']} ({run_id}) was not imported"
        runs += 1
        assert here.name == run["name"]
        assert here.status == run["status"].lower()
        assert _millis(here.start_time) == run["start_time"]
        assert _millis(here.end_time) == run["end_time"]
        assert here.params == run["params"]
        assert here.tags == {
            **run["tags"],
            RUN_ID_TAG: run_id,
            SOURCE_TAG: source,
            STATE_TAG: COMPLETE,
        }
        for key, points in run["metrics"].items():
            history = ws.tracking.get_metric_history(here.id, key)
            mine = sorted([p.step, _millis(p.timestamp), repr(p.value)] for p in history)
            assert mine == sorted(points), f"metric {key} of run {run['name']}"
        assert set(here.metrics) == set(run["metrics"])
        assert {a.path: a.digest for a in here.artifacts} == run["artifacts"]
    assert runs >= 4
    for name, model in dump["models"].items():
        if name in unloadable:
            continue
        here_model = ws.registry.get_model(name)
        assert here_model.description == model["description"]
        assert model["tags"].items() <= here_model.tags.items()
        versions = {
            v.tags[VERSION_TAG]: v
            for v in ws.registry.list_versions(name).items
            if VERSION_TAG in v.tags
        }
        assert set(versions) == {f"{name}/{n}" for n in model["versions"]}
        for number, version in model["versions"].items():
            here_version = versions[f"{name}/{number}"]
            assert here_version.description == version["description"]
            assert version["tags"].items() <= here_version.tags.items()
            assert here_version.source == version["source"]
            run = _imported_run(
                ws, dump["runs"][version["run_id"]]["experiment"], version["run_id"]
            )
            assert run is not None and here_version.run_id == run.id
            files = {p: e["digest"] for p, e in here_version.manifest["files"].items()}
            expected = {p: d for p, d in version["files"].items() if p != DOWNLOAD_ONLY}
            assert files == expected, f"the files of {name} version {number}"
        assert here_model.aliases == {
            alias: versions[f"{name}/{number}"].version
            for alias, number in model["aliases"].items()
        }


# --- a tracking server --------------------------------------------------------------------


def test_import_from_a_server_then_again(
    mlflow_server: MlflowServer, run_mlflow: RunMlflow, tmp_path: Path
) -> None:
    seeded = _mlflow(run_mlflow, mlflow_server.python, mlflow_server.url, "seed")
    dump = _mlflow(run_mlflow, mlflow_server.python, mlflow_server.url, "dump")

    first = _cli(tmp_path, "--uri", "ws", "import", "mlflow", "--from", mlflow_server.url, "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["source"] == mlflow_server.url
    assert _counts(report, "experiments") == (3, 0, 0, 0)  # Default, churn, fraud
    assert _counts(report, "runs") == (4, 0, 1, 0)
    assert _counts(report, "run artifacts") == (9, 0, 0, 0)
    points = sum(
        len(h) for r in dump["runs"].values() if not r["deleted"] for h in r["metrics"].values()
    )
    assert _counts(report, "metric points") == (points, 0, 0, 0)
    assert _counts(report, "models") == (1, 0, 0, 0)
    assert _counts(report, "versions") == (2, 0, 0, 0)
    assert _counts(report, "aliases") == (2, 0, 0, 0)
    skipped = [i for i in report["items"] if i["outcome"] == "skipped"]
    assert skipped == [
        {
            "kind": "runs",
            "item": seeded["runs"]["deleted-run"],
            "outcome": "skipped",
            "target": "",
            "reason": "deleted in MLflow (restore it there to import it)",
        }
    ]
    dataset_note = next(i for i in report["items"] if i["item"] == seeded["runs"]["fr-1"])
    assert "dataset inputs (train-frame) are not imported" in dataset_note["reason"]

    ws = Workspace.open(Settings(home=tmp_path / "ws"))
    try:
        _check_everything_is_there(ws, dump, mlflow_server.url)
        # MLflow 3 saved the models with skops: they load here as they are
        champion = ws.registry.load_model("models:/churn-model@champion")
        predictions = champion.predict(pd.DataFrame({"a": [1.0, 15.0], "b": [0.0, 1.0]}))
        assert list(predictions["predictions"]) == [0, 1]
    finally:
        ws.close()

    again = _cli(tmp_path, "--uri", "ws", "import", "mlflow", "--from", mlflow_server.url, "--json")
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert [i for i in second["items"] if i["outcome"] == "imported"] == []
    assert _counts(second, "experiments") == (0, 3, 0, 0)
    assert _counts(second, "runs") == (0, 4, 1, 0)
    assert _counts(second, "metric points") == (0, 0, 0, 0)
    assert _counts(second, "versions") == (0, 2, 0, 0)
    assert _counts(second, "aliases") == (0, 2, 0, 0)
    ws = Workspace.open(Settings(home=tmp_path / "ws"))
    try:
        _check_everything_is_there(ws, dump, mlflow_server.url)  # nothing twice
    finally:
        ws.close()


# --- file stores, written by each client ------------------------------------------------


def test_import_from_a_file_store(
    mlflow_python: Path, run_mlflow: RunMlflow, tmp_path: Path, workspace_at: Workspace
) -> None:
    store = tmp_path / "mlruns"
    uri = store.as_uri()
    _mlflow(run_mlflow, mlflow_python, uri, "seed", "--unloadable")
    dump = _mlflow(run_mlflow, mlflow_python, uri, "dump")
    seen: list[tuple[int, int, str]] = []

    report = import_mlflow(
        workspace_at, open_source(str(store)), progress=lambda *a: seen.append(a)
    )
    # the model whose only flavor needs its own loader module is listed, with the reason
    failed = _failed(report)
    assert list(failed) == ["custom-loader/1"]
    assert "python_function through my_loader" in failed["custom-loader/1"]
    assert "none of which modelyard loads" in failed["custom-loader/1"]
    assert _counts(report, "versions") == (3, 0, 0, 1)
    assert _counts(report, "runs") == (6, 0, 1, 0)
    _check_everything_is_there(workspace_at, dump, str(store), unloadable=("custom-loader",))
    # an MLflow PythonModel registers with its files, and says it cannot be served here
    python_model = next(i for i in report.items if i.item == "custom-python/1")
    assert python_model.outcome == "imported"
    assert "modelyard cannot serve it: its pickle needs mlflow" in python_model.reason
    # one progress call per experiment, run, model and version, counted up to the total
    total = seen[0][1]
    assert [done for done, _, _ in seen] == list(range(total))
    assert total == 3 + 7 + 3 + 4 and {t for _, t, _ in seen} == {total}
    assert seen[0][2] == "experiment Default" and seen[-1][2] == "version custom-python/1"

    pickled = workspace_at.registry.get_version("churn-model", 1)
    if pickled.manifest["options"].get("serialization") == "cloudpickle":  # MLflow 2.x
        # registering it did not unpickle it; loading it needs trust
        with pytest.raises(UntrustedModel, match="cloudpickled model"):
            workspace_at.registry.load_model("models:/churn-model/1")
    model = workspace_at.registry.load_model("models:/churn-model/1", trusted=True)
    assert list(model.predict(pd.DataFrame({"a": [15.0], "b": [1.0]}))["predictions"]) == [1]

    # an alias moved here since is not moved back, and says so
    workspace_at.registry.set_alias("churn-model", "old", 2)
    again = import_mlflow(workspace_at, open_source(str(store)))
    assert [i for i in again.items if i.outcome == "imported"] == []
    assert _counts(again, "runs") == (0, 6, 1, 0)
    assert _counts(again, "versions") == (0, 3, 0, 1)
    assert _counts(again, "aliases") == (0, 1, 1, 0)
    moved = next(i for i in again.items if i.item == "churn-model@old")
    assert moved.outcome == "skipped" and moved.target == "models:/churn-model/2"
    assert "points at version 2 here, at MLflow's version 1 (imported as 1)" in moved.reason
    assert workspace_at.registry.get_model("churn-model").aliases == {"champion": 2, "old": 2}


def test_a_run_still_going_in_mlflow_is_completed_by_the_next_import(
    mlflow2_python: Path, run_mlflow: RunMlflow, tmp_path: Path, workspace_at: Workspace
) -> None:
    store = tmp_path / "mlruns"
    seeded = _mlflow(run_mlflow, mlflow2_python, store.as_uri(), "seed", "--running")
    running = seeded["runs"]["still-running"]
    # one run's artifact folder is gone while the first import runs
    lr1 = next(store.glob(f"*/{seeded['runs']['lr-1']}"))
    (lr1 / "artifacts").rename(lr1 / "artifacts.away")

    first = import_mlflow(workspace_at, open_source(str(store)))
    failed = _failed(first)
    # its version could not be imported either (its files were in that folder), nor the alias
    assert set(failed) == {f"{seeded['runs']['lr-1']}/", "churn-model/1", "churn-model@old"}
    assert "artifact folder of run" in failed[f"{seeded['runs']['lr-1']}/"]
    assert failed[f"{seeded['runs']['lr-1']}/"].endswith("is missing")
    assert _counts(first, "runs") == (5, 0, 1, 0)
    assert _counts(first, "versions") == (1, 0, 0, 1)
    live = _imported_run(workspace_at, "fraud", running)
    assert live is not None and live.status == "running" and live.tags[STATE_TAG] == PARTIAL
    assert len(workspace_at.tracking.get_metric_history(live.id, "loss")) == 3
    note = next(i for i in first.items if i.item == running)
    assert "running in MLflow: left running here" in note.reason

    (lr1 / "artifacts.away").rename(lr1 / "artifacts")
    _mlflow(run_mlflow, mlflow2_python, store.as_uri(), "finish", running)
    dump = _mlflow(run_mlflow, mlflow2_python, store.as_uri(), "dump")

    second = import_mlflow(workspace_at, open_source(str(store)))
    assert _failed(second) == {}
    assert _counts(second, "runs") == (2, 3, 1, 0)  # the two partial ones are completed
    assert _counts(second, "metric points") == (2, 0, 0, 0)  # only the two new points
    assert _counts(second, "versions") == (1, 1, 0, 0)
    assert _counts(second, "aliases") == (1, 1, 0, 0)
    _check_everything_is_there(workspace_at, dump, str(store))
    # MLflow's version 1 came second: it is version 2 here, and @old follows it
    assert workspace_at.registry.get_model("churn-model").aliases == {"champion": 1, "old": 2}


# --- what fails, and says why ---------------------------------------------------------


def test_a_version_whose_files_are_gone_is_listed_and_the_rest_imported(
    mlflow2_python: Path, run_mlflow: RunMlflow, tmp_path: Path
) -> None:
    store = tmp_path / "mlruns"
    seeded = _mlflow(run_mlflow, mlflow2_python, store.as_uri(), "seed")
    shutil.rmtree(next(store.glob(f"*/{seeded['runs']['lr-1']}/artifacts/model")))
    # the other version's pickle would write a file if anything unpickled it
    marker = tmp_path / "unpickled"
    trap = pickle.dumps(_Trap(marker), protocol=4)
    next(store.glob(f"*/{seeded['runs']['lr-2']}/artifacts/model/model.pkl")).write_bytes(trap)

    done = _cli(tmp_path, "--uri", "ws", "import", "mlflow", "--from", str(store))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: 2 item(s) failed to import (listed above); what was imported is kept: fix the "
        "cause and run the import again to add the rest"
    )
    out = done.stdout
    assert "the files of churn-model version 1 are missing" in out
    assert "│ versions      │        1 │             0 │       0 │      1 │" in out
    # the alias on the missing version cannot follow it; the other one moved
    assert "│ aliases       │        1 │             0 │       0 │      1 │" in out
    assert "the version it points at in MLflow (1) was not imported" in out

    ws = Workspace.open(Settings(home=tmp_path / "ws"))
    try:
        model = ws.registry.get_model("churn-model")
        assert model.aliases == {"champion": 1}  # MLflow's version 2, the only one here
        assert ws.registry.get_version("churn-model", 1).tags[VERSION_TAG] == "churn-model/2"
    finally:
        ws.close()
    # registering a pickled model does not load it
    assert not marker.exists()


class _Trap:
    """Unpickling it creates the file ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def test_an_unreachable_server_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    for given in (url, f"http://ana:s3cret@127.0.0.1:{port}"):
        done = _cli(tmp_path, "--uri", "ws", "import", "mlflow", "--from", given)
        assert done.returncode == 1
        # named without the credentials a URL may carry
        assert done.stderr.startswith(f"error: cannot reach the MLflow server at {url} (")
        assert "is `mlflow server` running there? Check the URL given to --from" in done.stderr
        assert "s3cret" not in done.stderr and done.stdout == ""
        assert not (tmp_path / "ws").exists()


@pytest.fixture
def not_mlflow(tmp_path: Path) -> Iterator[str]:
    """An HTTP server that is not MLflow (a static file server)."""
    root = tmp_path / "site"
    root.mkdir()

    def handler(*args: Any) -> http.server.SimpleHTTPRequestHandler:
        return http.server.SimpleHTTPRequestHandler(*args, directory=str(root))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_what_is_not_an_mlflow_installation_is_refused(tmp_path: Path, not_mlflow: str) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("not MLflow")
    cases = [
        (
            str(plain),
            2,
            f"error: {plain} is not an MLflow file store: it has no experiment folders "
            "(<id>/meta.yaml) and no models/ folder; give the mlruns directory MLflow wrote",
        ),
        (
            "nowhere",
            3,
            "error: no directory 'nowhere'; give an MLflow file store (the mlruns directory) or "
            "a tracking server's URL",
        ),
        (
            "sqlite:///mlflow.db",
            2,
            "error: cannot read MLflow from 'sqlite:///mlflow.db': give a tracking server's URL "
            "(http://...) or a file store directory (./mlruns); for a database store, start "
            "`mlflow server --backend-store-uri sqlite:///mlflow.db` and import from its URL",
        ),
        (
            not_mlflow,
            2,
            f"error: {not_mlflow} is not an MLflow tracking server: "
            "/api/2.0/mlflow/experiments/search answered 501; give the URL `mlflow server` prints",
        ),
    ]
    for source, code, message in cases:
        done = _cli(tmp_path, "--uri", "ws", "import", "mlflow", "--from", source)
        assert (done.returncode, done.stderr.strip()) == (code, message), source
        assert not (tmp_path / "ws").exists()
    through_server = _cli(
        tmp_path, "--uri", "http://127.0.0.1:1", "import", "mlflow", "--from", str(plain)
    )
    assert through_server.returncode == 2
    assert through_server.stderr.strip() == (
        "error: import works on a workspace (a path or a database URL), not through a server; "
        "drop the http:// --uri, or run it where the server's workspace is"
    )
