from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression


@pytest.fixture(scope="session")
def training_data() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(7)
    X = pd.DataFrame(rng.normal(size=(300, 4)), columns=["amount", "age", "score", "hour"])
    y = ((X.amount + 0.5 * X.score) > 0).astype(int)
    return X, y


@pytest.fixture(scope="session")
def logreg(training_data: tuple[pd.DataFrame, pd.Series]) -> LogisticRegression:
    X, y = training_data
    return LogisticRegression().fit(X, y)
