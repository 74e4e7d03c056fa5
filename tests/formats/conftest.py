"""Small generated training data shared by the format tests (fixed seeds, no downloads)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.fixture
def xy(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A binary classification problem: 120 rows, 4 float features."""
    x = rng.normal(size=(120, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] > 0).astype(np.int64)
    return x, y


@pytest.fixture
def frame_xy(xy: tuple[np.ndarray, np.ndarray]) -> tuple[pd.DataFrame, np.ndarray]:
    """The same problem as a DataFrame with named columns."""
    x, y = xy
    return pd.DataFrame(x, columns=["age", "income", "tenure", "score"]), y
