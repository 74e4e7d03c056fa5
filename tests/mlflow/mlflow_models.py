"""Save MLflow model directories with MLflow itself, for the tests of modelyard's MLflow format.

Run by a python holding MLflow (tests/mlflow/venvs.py): ``python mlflow_models.py OUT [KIND...]``
writes one MLflow model directory per KIND under OUT (all kinds when none is named), the batch
the tests predict on (``OUT/batch.json``, pandas' split orient) and what MLflow's own
``mlflow.pyfunc.load_model(...).predict`` answers for it (``OUT/expected.json``).

``python mlflow_models.py --predict DIR BATCH_JSON`` prints MLflow's prediction for a model
directory as JSON (how an exported modelyard model is checked).

Never imported by modelyard's tests: MLflow is not in modelyard's environment.
"""

# ruff: noqa: I001  (ruff's src = ["tests"] takes tests/mlflow for the mlflow package)
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"

import mlflow
import mlflow.pyfunc
import mlflow.sklearn
from mlflow.models import infer_signature

FEATURES = ["a", "b", "c"]


def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(200, 3)), columns=FEATURES)
    y = (X.a + 0.5 * X.b - X.c > 0).astype(np.int64).to_numpy()
    return X, y


def sklearn_model() -> object:
    from sklearn.linear_model import LogisticRegression

    X, y = data()
    return LogisticRegression().fit(X, y)


def save(kind: str, path: Path) -> None:
    X, y = data()
    example = X.head(3)
    if kind == "sklearn-skops":  # MLflow 3's default serialization
        model = sklearn_model()
        signature = infer_signature(X, model.predict(X))
        mlflow.sklearn.save_model(
            model, path, serialization_format="skops", signature=signature, input_example=example
        )
    elif kind == "sklearn-cloudpickle":  # MLflow 2's default
        mlflow.sklearn.save_model(
            sklearn_model(), path, serialization_format="cloudpickle", input_example=example
        )
    elif kind == "sklearn-bare":  # neither a signature nor an input example
        mlflow.sklearn.save_model(sklearn_model(), path, serialization_format="pickle")
    elif kind == "xgboost":
        import xgboost as xgb

        model = xgb.XGBClassifier(n_estimators=8, max_depth=3).fit(X, y)
        mlflow.xgboost.save_model(model, path, input_example=example)
    elif kind == "lightgbm":
        import lightgbm as lgb

        model = lgb.LGBMRegressor(n_estimators=8, verbose=-1).fit(X, y.astype(float))
        mlflow.lightgbm.save_model(model.booster_, path, input_example=example)
    elif kind == "onnx":
        from onnx import TensorProto, helper, numpy_helper

        weights = numpy_helper.from_array(np.array([[1.0], [2.0], [-1.0]], np.float32), "w")
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["score"])],
            "linear",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
            [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
            [weights],
        )
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        proto.ir_version = 8
        mlflow.onnx.save_model(proto, path, input_example=example.to_numpy(np.float32))
    elif kind == "pyfunc":

        class Doubler(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
                return model_input["a"] * 2

        mlflow.pyfunc.save_model(path, python_model=Doubler(), input_example=example)
    else:
        raise SystemExit(f"unknown kind {kind}")


def predict(path: Path, batch: pd.DataFrame) -> list:  # type: ignore[type-arg]
    model = mlflow.pyfunc.load_model(str(path))
    flavors = model.metadata.flavors
    if "onnx" in flavors:
        answer = model.predict(batch.to_numpy(np.float32))
    else:
        answer = model.predict(batch)
    if isinstance(answer, dict):
        answer = next(iter(answer.values()))
    if isinstance(answer, pd.DataFrame):
        answer = answer.iloc[:, 0]
    return np.asarray(answer).tolist()


KINDS = [
    "sklearn-skops",
    "sklearn-cloudpickle",
    "sklearn-bare",
    "xgboost",
    "lightgbm",
    "onnx",
    "pyfunc",
]


def main() -> None:
    if sys.argv[1] == "--predict":
        split = json.loads(Path(sys.argv[3]).read_text())
        batch = pd.DataFrame(split["data"], columns=split["columns"])
        print(json.dumps(predict(Path(sys.argv[2]), batch)))
        return
    out = Path(sys.argv[1])
    kinds = sys.argv[2:] or KINDS
    out.mkdir(parents=True, exist_ok=True)
    X, _ = data()
    batch = X.iloc[50:57]
    (out / "batch.json").write_text(batch.to_json(orient="split", index=False))
    expected = {}
    for kind in kinds:
        save(kind, out / kind)
        if kind != "pyfunc":
            expected[kind] = predict(out / kind, batch)
    (out / "expected.json").write_text(json.dumps(expected))
    print(json.dumps({"mlflow": mlflow.__version__, "kinds": kinds}))


if __name__ == "__main__":
    main()
