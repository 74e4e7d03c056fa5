"""Log a joblib-saved scikit-learn model to MLflow (run with bench/.venv-mlflow's python).

    python mlflow_log.py MODEL.joblib NAME  (MLFLOW_TRACKING_URI set; prints the model URI)

MLflow 3.17 saves scikit-learn models with skops; a RandomForest's trees need
``skops_trusted_types=["sklearn.tree._tree.Tree"]``.
"""

import sys

import joblib
import mlflow
import numpy as np
import pandas as pd

path, name = sys.argv[1], sys.argv[2]
model = joblib.load(path)
cols = [f"f{i}" for i in range(20)]
example = pd.DataFrame(np.random.default_rng(0).normal(size=(5, 20)), columns=cols)
mlflow.set_experiment("bench-serving")
with mlflow.start_run(run_name=name):
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        input_example=example,
        skops_trusted_types=["sklearn.tree._tree.Tree"],
    )
print("MODEL_URI=" + info.model_uri)
