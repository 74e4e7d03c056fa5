"""A typical MLflow training script, as MLflow's documentation writes them.

It runs unchanged under MLflow 2.x and 3.x clients (only ``log_model``'s name argument follows
the installed client, as a user upgrading would write it) against whatever
``MLFLOW_TRACKING_URI`` names, and prints a JSON summary of what the client saw as its last
line. The tests run it in a virtualenv holding MLflow (tests/mlflow/venvs.py), never in
modelyard's own environment.
"""

# ruff: noqa: I001  (ruff's src = ["tests"] takes tests/mlflow for the mlflow package)
import json
import os

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.datasets import make_classification
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split

EPOCHS = 8

mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
mlflow.set_experiment("fraud-detection")

features, labels = make_classification(
    n_samples=600, n_features=6, n_informative=4, random_state=42
)
X = pd.DataFrame(features, columns=[f"f{i}" for i in range(6)])
X_train, X_test, y_train, y_test = train_test_split(X, labels, test_size=0.25, random_state=42)

params = {"loss": "log_loss", "alpha": 0.001, "random_state": 7}

with mlflow.start_run(run_name="sgd-baseline") as run:
    mlflow.log_params(params)
    mlflow.log_param("epochs", EPOCHS)
    mlflow.set_tag("team", "risk")

    model = SGDClassifier(**params)
    for epoch in range(EPOCHS):
        model.partial_fit(X_train, y_train, classes=np.unique(labels))
        train_loss = log_loss(y_train, model.predict_proba(X_train))
        mlflow.log_metric("train_loss", train_loss, step=epoch)

    accuracy = accuracy_score(y_test, model.predict(X_test))
    mlflow.log_metric("accuracy", accuracy)
    mlflow.log_dict({"features": list(X.columns), "threshold": 0.5}, "config.json")
    mlflow.log_text("Trained on synthetic transactions.\n", "notes/README.md")

    signature = infer_signature(X_train, model.predict(X_train))
    # MLflow 3 names a logged model with `name`; 2.x took an `artifact_path`
    if int(mlflow.__version__.split(".")[0]) >= 3:
        where = {"name": "model"}
    else:
        where = {"artifact_path": "model"}
    model_info = mlflow.sklearn.log_model(
        model,
        input_example=X_train[:5],
        signature=signature,
        registered_model_name="fraud",
        **where,
    )

client = MlflowClient()
version = model_info.registered_model_version
client.set_registered_model_alias("fraud", "champion", version)

champion = mlflow.pyfunc.load_model("models:/fraud@champion")
predictions = champion.predict(X_test)

runs = mlflow.search_runs(
    experiment_names=["fraud-detection"],
    filter_string="metrics.accuracy > 0.5",
    order_by=["metrics.accuracy DESC"],
)
versions = client.search_model_versions("name='fraud'")
history = client.get_metric_history(run.info.run_id, "train_loss")

sample = X_test.head(20)
print(
    json.dumps(
        {
            "mlflow_version": mlflow.__version__,
            "experiment_id": run.info.experiment_id,
            "run_id": run.info.run_id,
            "params": {**{k: str(v) for k, v in params.items()}, "epochs": str(EPOCHS)},
            "accuracy": accuracy,
            "model_uri": model_info.model_uri,
            "version": int(version),
            "predictions_match": bool(np.array_equal(predictions, model.predict(X_test))),
            "found_runs": [
                {"run_id": r["run_id"], "accuracy": r["metrics.accuracy"]}
                for _, r in runs.iterrows()
            ],
            "found_versions": [
                {"version": int(v.version), "run_id": v.run_id, "aliases": list(v.aliases)}
                for v in versions
            ],
            "loss_history": sorted([m.step, m.value] for m in history),
            "sample": {
                "columns": list(sample.columns),
                "data": sample.to_numpy().tolist(),
                "predictions": model.predict(sample).tolist(),
            },
        }
    )
)
