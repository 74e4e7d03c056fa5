"""Batch scoring: files in, predictions out, resumable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from modelyard.errors import InvalidInput
from modelyard.formats import load_model, save_model
from modelyard.serving.batch import score_file


@pytest.fixture
def predictor(tmp_path: Path, models, frame):  # type: ignore[no-untyped-def]
    X, _ = frame
    save_model(models["lr"], tmp_path / "m", input_example=X.head(5))
    return load_model(tmp_path / "m")


@pytest.mark.parametrize(("src", "dst"), [("in.parquet", "out.parquet"), ("in.csv", "out.csv")])
def test_scores_every_row(tmp_path: Path, predictor, models, frame, src: str, dst: str) -> None:  # type: ignore[no-untyped-def]
    X, _ = frame
    source = tmp_path / src
    X.to_parquet(source) if src.endswith("parquet") else X.to_csv(source, index=False)
    seen = []
    result = score_file(
        predictor, source, tmp_path / dst, model="lr", chunk_rows=64, progress=seen.append
    )
    assert (result.rows, result.chunks, result.resumed_chunks) == (400, 7, 0)
    assert sum(seen) == 400
    out = (
        pd.read_parquet(tmp_path / dst) if dst.endswith("parquet") else pd.read_csv(tmp_path / dst)
    )
    np.testing.assert_array_equal(out["predictions"], models["lr"].predict(X))
    np.testing.assert_allclose(out["probabilities_1"], models["lr"].predict_proba(X)[:, 1])
    np.testing.assert_allclose(out["f0"], X.f0)
    assert not (tmp_path / (dst + ".parts")).exists()


def test_resumes_after_interruption(tmp_path: Path, predictor, frame) -> None:  # type: ignore[no-untyped-def]
    X, _ = frame
    X.to_parquet(tmp_path / "in.parquet")
    calls = []
    original = predictor.predict

    def flaky(batch):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during chunk 4
        return original(batch)

    predictor.predict = flaky
    with pytest.raises(KeyboardInterrupt):
        score_file(
            predictor, tmp_path / "in.parquet", tmp_path / "out.parquet", model="lr", chunk_rows=100
        )
    assert not (tmp_path / "out.parquet").exists()
    result = score_file(
        predictor, tmp_path / "in.parquet", tmp_path / "out.parquet", model="lr", chunk_rows=100
    )
    assert result.resumed_chunks == 3 and len(calls) == 5
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 400


def test_bad_files_are_refused(tmp_path: Path, predictor, frame) -> None:  # type: ignore[no-untyped-def]
    X, _ = frame
    with pytest.raises(InvalidInput, match="does not exist"):
        score_file(predictor, tmp_path / "nope.parquet", tmp_path / "o.parquet", model="lr")
    (tmp_path / "in.json").write_text("{}")
    with pytest.raises(InvalidInput, match=r"\.parquet or \.csv"):
        score_file(predictor, tmp_path / "in.json", tmp_path / "o.parquet", model="lr")
    X.drop(columns=["f2"]).to_parquet(tmp_path / "missing.parquet")
    with pytest.raises(InvalidInput, match="f2"):
        score_file(predictor, tmp_path / "missing.parquet", tmp_path / "o.parquet", model="lr")
