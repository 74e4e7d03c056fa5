"""Fill an MLflow installation for the import tests, or dump what it holds, with MLflow's own
client (run with a python that has MLflow; never in modelyard's environment).

    python import_seed.py seed [--unloadable] [--running]  # into MLFLOW_TRACKING_URI
    python import_seed.py finish RUN_ID         # log two more points to a run, then end it
    python import_seed.py dump                  # everything, as MLflow's client reads it

``seed`` makes experiments ``churn`` (tags, a description) and ``fraud``; runs with params,
metric histories over steps, tags and artifact files (one nested, one binary), a run that
failed, a run that logged a dataset input, and a deleted run; registered model ``churn-model``
(description, tags) with two scikit-learn versions (descriptions, tags) and aliases
``champion`` (2) and ``old`` (1). With ``--unloadable``, also ``custom-loader``: one version
whose only flavor is python_function through a loader module of its own, which modelyard
cannot load, and ``custom-python``: one version of an ``mlflow.pyfunc.PythonModel``. With
``--running``, also run ``still-running`` in ``fraud``, left running with three ``loss``
points (``finish`` adds two and ends it). The last stdout line is a JSON object.
"""

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import mlflow.data
import mlflow.sklearn
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

import mlflow
from mlflow import MlflowClient

MLFLOW3 = mlflow.__version__ >= "3"


def _name(value: str) -> dict:
    return {"name": value} if MLFLOW3 else {"artifact_path": value}


def seed(unloadable: bool, running: bool) -> dict:
    client = MlflowClient()
    churn = client.create_experiment(
        "churn", tags={"team": "growth", "mlflow.note.content": "churn models"}
    )
    fraud = client.create_experiment("fraud")
    frame = pd.DataFrame({"a": np.arange(20.0), "b": np.arange(20.0) % 3})
    labels = (frame["a"] > 9).astype(int)
    files = Path(tempfile.mkdtemp())
    (files / "notes.txt").write_text("hello artifacts\n")
    (files / "plots").mkdir()
    (files / "plots" / "curve.bin").write_bytes(bytes(range(256)) * 4)
    runs, model_uris = {}, []
    for i, (experiment, name) in enumerate([(churn, "lr-1"), (churn, "lr-2"), (fraud, "fr-1")]):
        with mlflow.start_run(experiment_id=experiment, run_name=name) as run:
            mlflow.log_params({"C": str(0.1 * (i + 1)), "solver": "lbfgs"})
            for step in range(5):
                mlflow.log_metric("loss", 1.0 / (step + 1 + i), step=step)
            mlflow.log_metric("auc", 0.8 + i / 100)
            mlflow.log_metric("nan_metric", float("nan"))
            mlflow.set_tags({"stage": "dev", "idx": str(i)})
            mlflow.log_artifact(str(files / "notes.txt"))
            mlflow.log_artifacts(str(files), artifact_path="more")
            if experiment == churn:
                model = LogisticRegression(C=0.1 * (i + 1)).fit(frame, labels)
                info = mlflow.sklearn.log_model(
                    model, input_example=frame.head(3), **_name("model")
                )
                model_uris.append((run.info.run_id, info.model_uri))
            else:
                dataset = mlflow.data.from_pandas(frame, name="train-frame")
                mlflow.log_input(dataset, context="training")
            runs[name] = run.info.run_id
    with mlflow.start_run(experiment_id=fraud, run_name="failed-run") as run:
        mlflow.log_param("x", "1")
        runs["failed-run"] = run.info.run_id
    client.set_terminated(runs["failed-run"], "FAILED")
    with mlflow.start_run(experiment_id=fraud, run_name="deleted-run") as run:
        mlflow.log_param("x", "2")
        runs["deleted-run"] = run.info.run_id
    client.delete_run(runs["deleted-run"])

    client.create_registered_model("churn-model", tags={"owner": "ana"}, description="churn")
    for run_id, model_uri in model_uris:
        version = mlflow.register_model(model_uri, "churn-model", tags={"src": run_id[:6]})
        client.update_model_version("churn-model", version.version, description=f"from {run_id}")
    client.set_registered_model_alias("churn-model", "champion", "2")
    client.set_registered_model_alias("churn-model", "old", "1")
    if unloadable:
        data = files / "weights.txt"
        data.write_text("1 2 3\n")
        with mlflow.start_run(experiment_id=fraud, run_name="custom") as run:
            info = mlflow.pyfunc.log_model(
                loader_module="my_loader", data_path=str(data), **_name("custom")
            )
            runs["custom"] = run.info.run_id
        mlflow.register_model(info.model_uri, "custom-loader")
        with mlflow.start_run(experiment_id=fraud, run_name="python-model") as run:
            info = mlflow.pyfunc.log_model(
                python_model=Doubler(), input_example=frame.head(2), **_name("doubler")
            )
            runs["python-model"] = run.info.run_id
        mlflow.register_model(info.model_uri, "custom-python")
    if running:
        run = client.create_run(fraud, run_name="still-running")
        for step in range(3):
            client.log_metric(run.info.run_id, "loss", 1.0 / (step + 1), step=step)
        runs["still-running"] = run.info.run_id
    return {"experiments": {"churn": churn, "fraud": fraud}, "runs": runs}


def finish(run_id: str) -> dict:
    client = MlflowClient()
    for step in range(3, 5):
        client.log_metric(run_id, "loss", 1.0 / (step + 1), step=step)
    client.set_tag(run_id, "finished_by", "finish")
    client.set_terminated(run_id, "FINISHED")
    return {"finished": run_id}


class Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input * 2


def _digests(folder: str) -> dict:
    root = Path(folder)
    return {
        p.relative_to(root).as_posix(): "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _run_files(client: MlflowClient, run_id: str) -> dict:
    if not client.list_artifacts(run_id):
        return {}
    return _digests(client.download_artifacts(run_id, "", tempfile.mkdtemp()))


def dump() -> dict:
    from mlflow.entities import ViewType

    client = MlflowClient()
    out: dict = {"experiments": {}, "runs": {}, "models": {}}
    for exp in client.search_experiments(view_type=ViewType.ALL):
        out["experiments"][exp.name] = {
            "id": exp.experiment_id,
            "tags": dict(exp.tags),
            "deleted": exp.lifecycle_stage == "deleted",
        }
        for run in client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL):
            info, data = run.info, run.data
            out["runs"][info.run_id] = {
                "experiment": exp.name,
                "name": info.run_name,
                "status": info.status,
                "start_time": info.start_time,
                "end_time": info.end_time,
                "deleted": info.lifecycle_stage == "deleted",
                "params": dict(data.params),
                "tags": dict(data.tags),
                "metrics": {
                    key: [
                        [m.step, m.timestamp, repr(float(m.value))]
                        for m in client.get_metric_history(info.run_id, key)
                    ]
                    for key in data.metrics
                },
                "artifacts": _run_files(client, info.run_id),
            }
    for model in client.search_registered_models():
        full = client.get_registered_model(model.name)
        versions = {}
        for v in client.search_model_versions(f"name='{model.name}'"):
            files = mlflow.artifacts.download_artifacts(
                f"models:/{model.name}/{v.version}", dst_path=tempfile.mkdtemp()
            )
            versions[str(v.version)] = {
                "description": v.description or "",
                "tags": dict(v.tags),
                "run_id": v.run_id,
                "source": v.source,
                "files": _digests(files),
            }
        out["models"][model.name] = {
            "description": full.description or "",
            "tags": dict(full.tags),
            "aliases": {a: int(v) for a, v in (full.aliases or {}).items()},
            "versions": versions,
        }
    return out


if __name__ == "__main__":
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    if sys.argv[1] == "dump":
        result = dump()
    elif sys.argv[1] == "finish":
        result = finish(sys.argv[2])
    else:
        result = seed("--unloadable" in sys.argv, "--running" in sys.argv)
    print(json.dumps(result))
