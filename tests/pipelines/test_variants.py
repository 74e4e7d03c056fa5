"""Variants made for you: int8 quantisation and distillation of registered versions, measured
beside their parent on its holdout and registered with their lineage; through the domain
function and the SDK on both transports. Real sklearn models, a real registry."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor
from sklearn.neural_network import MLPClassifier

from modelyard import Client
from modelyard.errors import InvalidInput, NotFound, UntrustedModel
from modelyard.formats import PythonModel
from modelyard.pipelines.variants import TAG_KIND, TAG_OF, VariantReport, create_variant
from modelyard.workspace import Workspace

FEATURES = ["amount", "age", "score", "hour"]
CALLS = 10  # the fewest latency calls: tests check behaviour, bench/ measures


def table(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 4)), columns=FEATURES)
    frame["label"] = ((frame.amount + frame.age * frame.score) > 0).astype(int)
    frame["spend"] = 3 * frame.amount - 2 * frame.hour + frame.age * frame.score
    return frame


TRAIN, TEST = table(300, 1), table(150, 2)
X = TRAIN[FEATURES]
GBM = GradientBoostingClassifier(n_estimators=20, max_depth=2, random_state=0).fit(X, TRAIN.label)
FOREST = RandomForestRegressor(n_estimators=10, max_depth=4, random_state=0).fit(X, TRAIN.spend)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # not converged in 200 steps: good enough to quantise
    MLP = MLPClassifier((16,), max_iter=200, random_state=0).fit(X, TRAIN.label)


def seed(
    client: Client,
    model: Any = GBM,
    *,
    name: str = "fraud",
    target: str = "label",
    roles: tuple[str, ...] = ("training", "test"),
    alias: str | None = None,
) -> str:
    """Register ``model`` with datasets of ``roles`` (each holding ``target``); its URI."""
    other = "spend" if target == "label" else "label"
    frames = {"training": TRAIN.drop(columns=[other]), "test": TEST.drop(columns=[other])}
    links = []
    for role in roles:
        ds = client.log_dataset(f"{name}-{role}", frames[role], context=role)
        links.append({"dataset_id": ds.id, "role": role})
    version = client.log_model(model, name, input_example=X.head(5), datasets=links, alias=alias)
    return version.uri


@pytest.fixture
def local(workspace: Workspace) -> Client:
    return Client(str(workspace.settings.resolved_home), settings=workspace.settings)


def test_distilled_tree_of_a_classifier_is_the_next_version_with_its_lineage(
    workspace: Workspace, local: Client
) -> None:
    parent = seed(local)
    report = create_variant(workspace, parent, distill="tree", max_depth=3, latency_calls=CALLS)

    v = report.version
    assert (v.model, v.version, v.format) == ("fraud", 2, "sklearn")
    assert v.source == parent == "models:/fraud/1"
    assert v.tags[TAG_OF] == parent and v.tags[TAG_KIND] == "distilled-tree"
    assert sorted(d.role for d in v.datasets) == ["test", "training"]
    assert report.kind == "distilled-tree" and report.task == "classification"
    assert report.target == "label" and report.holdout == "fraud-test v1 (test)"
    assert report.holdout_rows == len(TEST) and not report.holdout_is_split
    assert "decision tree (depth <= 3)" in report.description

    # The run holds the variant's quality and latency, and the parent's on the same holdout.
    run = workspace.tracking.get_run(v.run_id)
    assert run.experiment == "variants" and run.status == "finished"
    assert run.params["parent"] == parent and run.params["max_depth"] == "3"
    assert run.tags[TAG_OF] == parent
    for key in ("accuracy", "f1", "roc_auc", "latency_ms_p50_1row", "latency_ms_p50_64rows"):
        assert key in run.metrics and f"parent_{key}" in run.metrics
    assert 0 <= run.metrics["agreement_with_parent"] <= 1
    parent_m, variant_m = report.measurement("parent"), report.measurement("variant")
    assert parent_m is not None and variant_m is not None
    assert run.metrics["accuracy"] == variant_m.metrics["accuracy"]
    assert run.metrics["parent_accuracy"] == parent_m.metrics["accuracy"]
    assert parent_m.uri == parent and variant_m.uri == v.uri and variant_m.runtime == "sklearn"
    assert variant_m.latency_ms_p50_1row > 0 and variant_m.latency_calls <= CALLS
    # The parent's holdout score, recomputed here, is what the report says.
    expected = float((GBM.predict(TEST[FEATURES]) == TEST.label).mean())
    assert parent_m.metrics["accuracy"] == pytest.approx(expected)

    lineage = workspace.registry.lineage("fraud", 2)
    assert lineage.source == parent and lineage.experiment == "variants"
    assert workspace.registry.get_card("fraud", 2).lineage["parent"] == parent
    # A drop-in: the same input columns as the parent, the same output names.
    outputs = workspace.registry.load_model(v.uri).predict(TEST[FEATURES].head(3))
    assert set(outputs) == {"predictions", "probabilities"}


def test_distilled_linear_model_of_a_regressor_under_another_name(
    workspace: Workspace, local: Client
) -> None:
    parent = seed(local, FOREST, name="spend", target="spend")
    report = create_variant(
        workspace, parent, distill="linear", name="spend-small", latency_calls=CALLS
    )
    assert report.version.uri == "models:/spend-small/1" and report.task == "regression"
    assert report.kind == "distilled-linear" and "ridge regression" in report.description
    metrics = workspace.tracking.get_run(report.run_id).metrics
    assert {"r2", "mae", "parent_r2", "parent_mae"} <= set(metrics)
    assert "agreement_with_parent" not in metrics
    assert workspace.registry.get_model("spend").latest_version == 1

    with pytest.raises(InvalidInput, match=r"regressor.*--distill linear"):
        create_variant(workspace, parent, distill="logistic", latency_calls=CALLS)


def test_int8_quantisation_of_a_neural_network(workspace: Workspace, local: Client) -> None:
    parent = seed(local, MLP, alias="champion")
    report = create_variant(
        workspace, "models:/fraud@champion", quantize="int8", latency_calls=CALLS
    )

    v = report.version
    assert (v.version, v.format, v.tags[TAG_KIND]) == (2, "onnx", "int8")
    assert v.source == parent and report.kind == "int8"
    assert [m.role for m in report.measurements] == ["parent", "parent-onnx", "variant"]
    variant_m = report.measurement("variant")
    assert variant_m is not None and variant_m.runtime == "onnxruntime int8"
    metrics = workspace.tracking.get_run(v.run_id).metrics
    assert {"accuracy", "parent_accuracy", "parent_onnx_latency_ms_p50_1row"} <= set(metrics)
    assert metrics["accuracy"] > 0.7  # int8 weights: close to the parent, not equal

    graph = onnx.load(str(workspace.registry.local_path(v) / "model.onnx")).graph
    assert "MatMulInteger" in {node.op_type for node in graph.node}
    # It takes the parent's columns and answers with the parent's outputs.
    predictor = workspace.registry.load_model(v)
    outputs = predictor.predict({c: TEST[c].to_numpy()[:4] for c in FEATURES})
    assert outputs["predictions"].shape == (4,) and outputs["probabilities"].shape == (4, 2)


def test_int8_of_an_onnx_version_needs_the_target_of_its_bare_array(
    workspace: Workspace, local: Client
) -> None:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = clone(MLP).fit(X.to_numpy(), TRAIN.label)
    graph = convert_sklearn(
        net,
        initial_types=[("input", FloatTensorType([None, 4]))],
        options={id(net): {"zipmap": False}},
    )
    test = local.log_dataset("onnx-test", TEST.drop(columns=["spend"]), context="test")
    v = local.log_model(graph, "net", datasets=[{"dataset_id": test.id, "role": "test"}])
    with pytest.raises(InvalidInput, match=r"bare array.*--target"):
        create_variant(workspace, v.uri, quantize="int8", latency_calls=CALLS)
    report = create_variant(workspace, v.uri, quantize="int8", target="label", latency_calls=CALLS)
    assert report.version.format == "onnx" and report.target == "label"
    assert [m.role for m in report.measurements] == ["parent", "variant"]
    assert report.measurement("variant").metrics["accuracy"] is not None  # type: ignore[union-attr]


def test_tree_ensembles_do_not_quantise_and_nothing_is_registered(
    workspace: Workspace, local: Client
) -> None:
    parent = seed(local)
    with pytest.raises(InvalidInput, match=r"TreeEnsembleClassifier.*--distill") as caught:
        create_variant(workspace, parent, quantize="int8", latency_calls=CALLS)
    assert caught.value.status == 422
    assert workspace.registry.get_model("fraud").latest_version == 1
    with pytest.raises(NotFound):  # refused before any run was recorded
        workspace.tracking.get_experiment("variants")


def test_without_a_holdout_quality_is_measured_on_a_split_and_says_so(
    workspace: Workspace, local: Client
) -> None:
    parent = seed(local, roles=("training",))
    report = create_variant(workspace, parent, distill="tree", latency_calls=CALLS)
    assert report.holdout_is_split
    assert report.holdout == "a 20% split of fraud-training v1 (training) (60 of 300 rows, seed 0)"
    assert report.holdout_rows == 60
    assert any("no test, evaluation or validation dataset" in n for n in report.notes)
    assert any("optimistic" in n and "other rows" in n for n in report.notes)
    assert workspace.tracking.get_run(report.run_id).params["holdout"] == report.holdout


class Doubler(PythonModel):
    def predict(self, inputs: Any) -> Any:
        return (np.asarray(inputs["amount"]) > 0).astype(int)


def test_bad_requests_say_what_to_fix(workspace: Workspace, local: Client) -> None:
    parent = seed(local)
    for kwargs, message in [
        ({}, "exactly one of quantize"),
        ({"quantize": "int8", "distill": "tree"}, "not both"),
        ({"quantize": "int4"}, "unknown quantisation 'int4'"),
        ({"distill": "forest"}, "unknown distillation 'forest'"),
        ({"distill": "logistic", "max_depth": 3}, "max_depth applies to --distill tree"),
        ({"distill": "tree", "max_depth": 0}, "max_depth must be between 1"),
        ({"distill": "tree", "latency_calls": 5}, "latency_calls must be between"),
        ({"distill": "tree", "target": "nope"}, "no column 'nope'"),
        ({"distill": "tree", "target": "amount"}, "'amount' is an input"),
        ({"distill": "tree", "name": "bad name!"}, "model name 'bad name!' is not valid"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            create_variant(workspace, parent, **{"latency_calls": CALLS, **kwargs})
    with pytest.raises(NotFound):
        create_variant(workspace, "models:/ghost/1", distill="tree")
    with pytest.raises(NotFound):
        create_variant(workspace, "models:/fraud/9", distill="tree")
    with pytest.raises(InvalidInput):
        create_variant(workspace, "not a uri", distill="tree")

    only_test = seed(local, name="no-training", roles=("test",))
    with pytest.raises(InvalidInput, match=r"no training dataset linked.*--dataset ID:training"):
        create_variant(workspace, only_test, distill="tree", latency_calls=CALLS)
    bare = local.log_model(GBM, "bare", input_example=X.head(5)).uri
    with pytest.raises(InvalidInput, match="no dataset linked to measure quality"):
        create_variant(workspace, bare, quantize="int8", latency_calls=CALLS)
    # Several columns besides the inputs: which one is the target must be said.
    both = local.log_dataset("both-test", TEST, context="test")
    wide = local.log_model(
        GBM, "wide", input_example=X.head(5), datasets=[{"dataset_id": both.id, "role": "test"}]
    ).uri
    with pytest.raises(InvalidInput, match=r"several columns.*\(label, spend\).*--target"):
        create_variant(workspace, wide, quantize="int8", latency_calls=CALLS)

    # A pickled parent: no int8, and distilled only when trusted.
    pyfunc = local.log_model(
        Doubler(),
        "custom",
        input_example=X.head(5),
        datasets=[
            {"dataset_id": d.dataset_id, "role": d.role} for d in local.get_version(parent).datasets
        ],
    ).uri
    with pytest.raises(InvalidInput, match=r"int8 quantisation takes.*pyfunc model.*--distill"):
        create_variant(workspace, pyfunc, quantize="int8", latency_calls=CALLS)
    with pytest.raises(UntrustedModel):
        create_variant(workspace, pyfunc, distill="tree", latency_calls=CALLS)
    report = create_variant(workspace, pyfunc, distill="tree", trusted=True, latency_calls=CALLS)
    assert report.version.format == "sklearn" and report.task == "classification"
    # The student learns the teacher's rule (amount > 0), not the holdout's labels.
    assert workspace.tracking.get_run(report.run_id).metrics["agreement_with_parent"] > 0.95
    assert workspace.registry.get_model("fraud").latest_version == 1


def test_the_sdk_makes_variants_in_process_and_over_http(client: Client) -> None:
    parent = seed(client, alias="champion")
    report = client.registry.create_variant(
        "models:/fraud@champion", distill="logistic", latency_calls=CALLS
    )
    assert isinstance(report, VariantReport)
    assert report.version.uri == "models:/fraud/2" and report.parent == parent
    assert client.tracking.get_run(report.run_id).metrics["parent_accuracy"] > 0.5
    assert client.registry.lineage("fraud", 2).source == parent

    with pytest.raises(InvalidInput, match=r"TreeEnsembleClassifier.*--distill"):
        client.registry.create_variant(parent, quantize="int8", latency_calls=CALLS)
    with pytest.raises(InvalidInput, match="exactly one"):
        client.registry.create_variant(parent, latency_calls=CALLS)
    with pytest.raises(NotFound):
        client.registry.create_variant("models:/fraud/7", distill="tree", latency_calls=CALLS)
