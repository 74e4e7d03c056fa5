"""BentoML peer for bench/serving/many.py: N ONNX models in one service.

BentoML has no registry-driven multi-model routing: one service holds what its ``__init__``
loads. Here that is one ONNX Runtime session per model file, in a dict, and one API that
takes the model's name. Started by many.py with bench/.venv-bentoml's ``bentoml serve``:

    BENCH_MODELS_DIR=dir BENCH_MODELS_COUNT=50 BENCH_BENTO_WORKERS=2 \\
        bentoml serve bento_many:Many --working-dir bench/serving

POST /predict with ``{"model": "mNNN", "input": [[20 floats]]}``; answers the labels.
"""

from __future__ import annotations

import os

import bentoml
import numpy as np
import onnxruntime as ort

MODELS_DIR = os.environ["BENCH_MODELS_DIR"]
COUNT = int(os.environ["BENCH_MODELS_COUNT"])
WORKERS = int(os.environ.get("BENCH_BENTO_WORKERS", "1"))


@bentoml.service(workers=WORKERS, traffic={"timeout": 30})
class Many:
    def __init__(self) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # as modelyard's ONNX predictor
        options.inter_op_num_threads = 1
        self.sessions = {
            name: ort.InferenceSession(
                os.path.join(MODELS_DIR, f"{name}.onnx"),
                options,
                providers=["CPUExecutionProvider"],
            )
            for name in (f"m{i:03d}" for i in range(COUNT))
        }

    @bentoml.api
    def predict(self, model: str, input: np.ndarray) -> np.ndarray:
        return self.sessions[model].run(["label"], {"X": input.astype(np.float32)})[0]
