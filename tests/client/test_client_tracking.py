"""Tracking and lineage through the SDK, in-process and over HTTP: the same scenario twice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard.client import Client
from modelyard.errors import Conflict, InvalidInput, NotFound


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    df = pd.DataFrame(
        {
            "x1": rng.normal(size=200),
            "x2": rng.normal(size=200),
            "segment": rng.choice(["a", "b"], size=200),
        }
    )
    df["y"] = (df.x1 + df.x2 > 0).astype(int)
    return df


def test_run_dataset_model_lineage(client: Client, data: pd.DataFrame) -> None:
    with client.start_run("churn", name="first", tags={"git.commit": "abc123"}) as run:
        ds = client.log_dataset("churn-train", data, source="unit test")
        client.log_params({"C": 0.5, "penalty": "l2"})
        for step, loss in enumerate([0.9, 0.5, 0.3]):
            client.log_metrics({"loss": loss}, step=step)
        model = LogisticRegression(C=0.5).fit(data[["x1", "x2"]], data.y)
        client.log_metrics({"auc": 0.93})
        v = client.log_model(
            model,
            "churn",
            input_example=data[["x1", "x2"]].head(3),
            datasets=[{"dataset_id": ds.id, "role": "training"}],
        )

    finished = client.tracking.get_run(run.id)
    assert finished.status == "finished"
    assert finished.params == {"C": "0.5", "penalty": "l2"}
    assert finished.metrics == {"loss": 0.3, "auc": 0.93}
    assert [i.dataset_id for i in finished.inputs] == [ds.id]
    history = client.tracking.get_metric_history(run.id, "loss")
    assert [(p.step, p.value) for p in history] == [(0, 0.9), (1, 0.5), (2, 0.3)]

    assert ds.num_rows == 200 and [c.name for c in ds.schema_] == ["x1", "x2", "segment", "y"]
    assert ds.profile["x1"].mean == pytest.approx(data.x1.mean())
    again = client.log_dataset("churn-train", data)
    assert (again.id, again.version) == (ds.id, 1)  # same content: no new version
    pd.testing.assert_frame_equal(
        client.tracking.load_dataset("churn-train").reset_index(drop=True),
        data.reset_index(drop=True),
        check_dtype=False,
    )

    assert v.run_id == run.id and v.source == f"runs:/{run.id}"
    lineage = client.registry.lineage("churn", v.version)
    assert lineage.experiment == "churn" and lineage.code_version == "abc123"
    assert lineage.params["C"] == "0.5"
    assert lineage.datasets[0]["digest"] == ds.digest
    card = client.registry.get_card("churn", v.version)
    assert card.metrics["auc"] == 0.93 and card.data[0]["num_rows"] == 200


def test_failed_block_marks_run_failed(client: Client) -> None:
    with pytest.raises(RuntimeError), client.start_run("e") as run:
        raise RuntimeError("training diverged")
    assert client.tracking.get_run(run.id).status == "failed"


def test_search_and_compare(client: Client) -> None:
    ids = []
    for c, auc in [("0.1", 0.7), ("1.0", 0.9), ("10", 0.8)]:
        with client.start_run("grid", params={"C": c}) as run:
            client.log_metrics({"auc": auc})
        ids.append(run.id)
    best = client.tracking.search_runs(
        "grid", filter_string="metrics.auc > 0.75", order_by="metrics.auc desc"
    )
    assert [r.params["C"] for r in best.items] == ["1.0", "10"]
    comparison = client.tracking.compare_runs(ids)
    assert comparison.differing_params == ["C"]
    assert comparison.metrics["auc"][ids[1]] == 0.9


def test_tracking_errors(client: Client) -> None:
    with pytest.raises(NotFound):
        client.tracking.get_run("01HZZZZZZZZZZZZZZZZZZZZZZZ")
    run = client.tracking.start_run("errs", params={"lr": 0.1})
    with pytest.raises(Conflict, match="immutable"):
        client.tracking.log_params(run.id, {"lr": 0.2})
    with pytest.raises(InvalidInput):
        client.tracking.log_metrics(run.id, [{"key": "m", "value": "high"}])
    client.tracking.end_run(run.id)
    with pytest.raises(Conflict):
        client.log_metrics({"late": 1.0}, run_id=run.id)
    with pytest.raises(InvalidInput, match="no active run"):
        Client.log_params(client, {"a": 1})
