"""BentoML peer: the same scikit-learn model behind an adaptive-batching API.

Started by bench/serving/run.py with bench/.venv-bentoml's ``bentoml serve``:

    BENCH_MODEL_PATH=model.joblib bentoml serve bento_service:Classifier --working-dir bench/serving

POST /predict with ``{"input": [[f0, ..., f19]]}`` (one row per request; BentoML's adaptive
batching concatenates concurrent requests along axis 0 before calling ``predict``).
Environment: BENCH_MODEL_PATH (joblib file), BENCH_BENTO_WORKERS (default 1, BentoML's default),
BENCH_BENTO_MAX_BATCH (default 100) and BENCH_BENTO_MAX_LATENCY_MS (default 60000): BentoML's
own defaults (the latency is a cap: a request that cannot be served within it gets a 503).
"""

from __future__ import annotations

import os

import bentoml
import joblib
import numpy as np
import pandas as pd

COLUMNS = [f"f{i}" for i in range(20)]
WORKERS = int(os.environ.get("BENCH_BENTO_WORKERS", "1"))
MAX_BATCH = int(os.environ.get("BENCH_BENTO_MAX_BATCH", "100"))
MAX_LATENCY_MS = int(os.environ.get("BENCH_BENTO_MAX_LATENCY_MS", "60000"))


@bentoml.service(workers=WORKERS, traffic={"timeout": 30})
class Classifier:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["BENCH_MODEL_PATH"])

    @bentoml.api(
        batchable=True, batch_dim=0, max_batch_size=MAX_BATCH, max_latency_ms=MAX_LATENCY_MS
    )
    def predict(self, input: np.ndarray) -> np.ndarray:
        # Named columns, as the model was fitted on a DataFrame (no feature-name warning).
        return self.model.predict(pd.DataFrame(input, columns=COLUMNS))
