"""Datasets: digests, versions, profiles, storage and run inputs, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelyard.errors import InvalidInput, NotFound
from modelyard.tracking.entities import CategoricalProfile, Dataset, NumericProfile
from modelyard.workspace import Workspace


def _frame(seed: int = 0, rows: int = 500) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(10, 3, size=rows)
    x[::50] = np.nan
    return pd.DataFrame(
        {
            "x": x,
            "n": rng.integers(0, 100, size=rows),
            "city": rng.choice(
                ["paris", "rome", "oslo", "kyiv"], size=rows, p=[0.4, 0.3, 0.2, 0.1]
            ),
        }
    )


def test_digest_is_stable_and_versions_deduplicate(any_workspace: Workspace) -> None:
    ws = any_workspace
    df = _frame()
    first = ws.tracking.log_dataset("houses", df, source="s3://bucket/houses.csv")
    again = ws.tracking.log_dataset("houses", _frame().set_index("n", drop=False))
    assert again == first  # same content (the index is not content): the same version
    assert first.version == 1
    assert first.digest.startswith("sha256:") and len(first.digest) == 71
    changed = df.copy()
    changed.loc[3, "n"] = 1000
    second = ws.tracking.log_dataset("houses", changed)
    assert second.version == 2 and second.digest != first.digest
    reordered = ws.tracking.log_dataset("houses", df[["n", "x", "city"]])
    assert reordered.version == 3  # column order and schema are part of the content
    other = ws.tracking.log_dataset("other", df)
    assert other.version == 1 and other.digest == first.digest
    assert [d.version for d in ws.tracking.list_datasets(name="houses").items] == [3, 2, 1]
    assert len(ws.audit.list(action="dataset.create").items) == 4


def test_schema_rows_and_round_trip(any_workspace: Workspace) -> None:
    ws = any_workspace
    df = _frame()
    ds = ws.tracking.log_dataset("houses", df)
    assert ds.num_rows == 500
    assert [(c.name, c.dtype) for c in ds.schema_] == [(c, str(t)) for c, t in df.dtypes.items()]
    assert ws.tracking.get_dataset("houses") == ds
    assert ws.tracking.get_dataset("houses", 1) == ds
    assert ws.tracking.get_dataset_by_id(ds.id) == ds
    assert ds.created_at.tzinfo is not None
    as_json = ds.model_dump_json()
    assert '"schema":' in as_json
    assert Dataset.model_validate_json(as_json) == ds


def test_profile_equals_numpy(any_workspace: Workspace) -> None:
    ws = any_workspace
    df = _frame()
    ds = ws.tracking.log_dataset("houses", df)
    x = ds.profile["x"]
    assert isinstance(x, NumericProfile)
    values = df["x"].dropna().to_numpy()
    assert x.count == len(values) and x.missing == 10
    assert x.mean == pytest.approx(np.mean(values))
    assert x.std == pytest.approx(np.std(values, ddof=1))
    assert x.min == np.min(values) and x.max == np.max(values)
    assert [x.p25, x.p50, x.p75] == pytest.approx(np.percentile(values, [25, 50, 75]))
    counts, edges = np.histogram(values, bins=10)
    assert x.histogram is not None
    assert x.histogram.counts == counts.tolist()
    assert x.histogram.edges == pytest.approx(edges.tolist())
    n = ds.profile["n"]
    assert isinstance(n, NumericProfile) and n.missing == 0
    assert n.mean == pytest.approx(df["n"].mean())
    city = ds.profile["city"]
    assert isinstance(city, CategoricalProfile)
    expected = df["city"].value_counts()
    assert city.count == 500 and city.missing == 0 and city.distinct == 4
    assert [(v.value, v.count) for v in city.top] == list(expected.items())


def test_profile_edge_cases(any_workspace: Workspace) -> None:
    ws = any_workspace
    df = pd.DataFrame(
        {
            "empty": [np.nan, np.nan, np.nan],
            "inf": [1.0, np.inf, 3.0],
            "flag": [True, False, True],
            "many": ["a", "b", None],
        }
    )
    ds = ws.tracking.log_dataset("edge", df)
    empty = ds.profile["empty"]
    assert isinstance(empty, NumericProfile) and empty.mean is None and empty.missing == 3
    inf = ds.profile["inf"]
    assert isinstance(inf, NumericProfile) and inf.mean == 2.0 and inf.count == 3
    flag = ds.profile["flag"]
    assert isinstance(flag, CategoricalProfile) and flag.distinct == 2
    many = ds.profile["many"]
    assert isinstance(many, CategoricalProfile) and many.missing == 1
    top = ws.tracking.log_dataset("wide", pd.DataFrame({"k": [str(i) for i in range(50)]}))
    k = top.profile["k"]
    assert isinstance(k, CategoricalProfile) and len(k.top) == 10 and k.distinct == 50


def test_store_and_load(any_workspace: Workspace, tmp_path: Path) -> None:
    ws = any_workspace
    df = _frame()
    ds = ws.tracking.log_dataset("houses", df)
    assert ds.artifact_digest is not None and ws.artifacts.exists(ds.artifact_digest)
    pd.testing.assert_frame_equal(ws.tracking.load_dataset("houses", 1), df)
    meta_only = ws.tracking.log_dataset("light", df, store_data=False)
    assert meta_only.artifact_digest is None
    with pytest.raises(NotFound, match="store_data=False"):
        ws.tracking.load_dataset("light")
    stored_later = ws.tracking.log_dataset("light", df)
    assert stored_later.version == 1 and stored_later.artifact_digest is not None
    pd.testing.assert_frame_equal(ws.tracking.load_dataset("light"), df)


def test_log_from_csv_and_parquet_files(any_workspace: Workspace, tmp_path: Path) -> None:
    ws = any_workspace
    df = _frame()
    csv, parquet = tmp_path / "d.csv", tmp_path / "d.parquet"
    df.head(100).to_csv(csv, index=False)
    df.to_parquet(parquet, index=False)
    from_parquet = ws.tracking.log_dataset("files", parquet)
    assert from_parquet.source == str(parquet)
    assert from_parquet.digest == ws.tracking.log_dataset("frame", df).digest
    from_csv = ws.tracking.log_dataset("files", str(csv), source="exported")
    assert from_csv.source == "exported" and from_csv.num_rows == 100
    assert from_csv.version == 2
    txt = tmp_path / "d.txt"
    txt.write_text("x")
    with pytest.raises(InvalidInput, match=r"\.csv or \.parquet"):
        ws.tracking.log_dataset("files", txt)
    with pytest.raises(InvalidInput, match="no file at"):
        ws.tracking.log_dataset("files", tmp_path / "missing.csv")


def test_run_inputs(any_workspace: Workspace) -> None:
    ws = any_workspace
    run = ws.tracking.start_run("e")
    train = ws.tracking.log_dataset("train", _frame(1), run_id=run.id)
    ws.tracking.log_dataset("train", _frame(1), run_id=run.id)  # already linked: no-op
    test = ws.tracking.log_dataset("test", _frame(2), run_id=run.id, context="evaluation")
    inputs = ws.tracking.get_run(run.id).inputs
    assert [(i.name, i.version, i.context, i.dataset_id) for i in inputs] == [
        ("test", 1, "evaluation", test.id),
        ("train", 1, "training", train.id),
    ]
    assert len(ws.audit.list(action="run.log_input").items) == 2
    assert ws.audit.verify().ok


def test_dataset_errors(any_workspace: Workspace) -> None:
    ws = any_workspace
    df = _frame()
    with pytest.raises(InvalidInput, match="dataset name"):
        ws.tracking.log_dataset("bad name", df)
    with pytest.raises(InvalidInput, match="DataFrame or a file path"):
        ws.tracking.log_dataset("d", [1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="unique"):
        ws.tracking.log_dataset("d", pd.DataFrame([[1, 2]], columns=["a", "a"]))
    with pytest.raises(InvalidInput, match="cannot be hashed"):
        ws.tracking.log_dataset("d", pd.DataFrame({"a": [[1], [2]]}))
    with pytest.raises(InvalidInput, match="context"):
        ws.tracking.log_dataset("d", df, context="")
    with pytest.raises(NotFound, match="no run"):
        ws.tracking.log_dataset("d", df, run_id="missing")
    with pytest.raises(NotFound, match="no dataset 'd'"):
        ws.tracking.get_dataset("d")
    ws.tracking.log_dataset("d", df)
    with pytest.raises(NotFound, match="has no version 9"):
        ws.tracking.get_dataset("d", 9)
    with pytest.raises(NotFound):
        ws.tracking.get_dataset_by_id("missing")
    with pytest.raises(InvalidInput, match="page_token"):
        ws.tracking.list_datasets(page_token="!!")
