"""A tiny saved model for the artifact tests."""

from __future__ import annotations

from pathlib import Path


def save_tiny_model(path: Path, seed: int = 0) -> Path:
    """A small sklearn LogisticRegression saved with modelyard.formats.save_model."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from modelyard.formats import save_model

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 3))
    y = (x[:, 0] > 0).astype(np.int64)
    save_model(LogisticRegression().fit(x, y), path, input_example=x[:3])
    return path
