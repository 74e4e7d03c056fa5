"""Ray Serve peer for bench/serving/many.py: N ONNX models behind one deployment with model
multiplexing (``@serve.multiplexed``), one ONNX Runtime session per model.

Started by many.py with bench/.venv-ray's Python (a local Ray cluster in this process:
GCS, raylet, the Serve controller and proxy, one worker per replica):

    BENCH_MODELS_DIR=dir BENCH_MODELS_COUNT=50 BENCH_RAY_REPLICAS=2 BENCH_PORT=8000 \\
        python bench/serving/ray_many.py

POST / with the header ``serve_multiplexed_model_id: mNNN`` and ``{"input": [[20 floats]]}``;
answers ``{"label": [...]}``. A model is loaded by the replica that first gets a request
for it (up to BENCH_MODELS_COUNT per replica, then least recently used ones are unloaded).
SIGTERM ends it at once (see main).
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import onnxruntime as ort
import ray
from ray import serve
from starlette.requests import Request

MODELS_DIR = os.environ["BENCH_MODELS_DIR"]
COUNT = int(os.environ["BENCH_MODELS_COUNT"])
REPLICAS = int(os.environ.get("BENCH_RAY_REPLICAS", "1"))
PORT = int(os.environ.get("BENCH_PORT", "8000"))


@serve.deployment(num_replicas=REPLICAS, ray_actor_options={"num_cpus": 0})
class Many:
    @serve.multiplexed(max_num_models_per_replica=COUNT)
    async def get_model(self, model_id: str) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # as modelyard's ONNX predictor
        options.inter_op_num_threads = 1
        return ort.InferenceSession(
            os.path.join(MODELS_DIR, f"{model_id}.onnx"),
            options,
            providers=["CPUExecutionProvider"],
        )

    async def __call__(self, request: Request) -> dict[str, list[int]]:
        session = await self.get_model(serve.get_multiplexed_model_id())
        x = np.asarray((await request.json())["input"], dtype=np.float32)
        return {"label": session.run(["label"], {"X": x})[0].tolist()}


def main() -> None:
    # A small object store: nothing here passes large objects (the default takes 30% of RAM).
    # (many.py sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: Ray's own traffic stays on loopback.)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, object_store_memory=80 * 2**20)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(Many.bind(), route_prefix="/")
    # After ray.init, which installs its own SIGTERM handler. many.py sends SIGTERM to the
    # whole process group, GCS and raylet included, so serve.shutdown() would wait for a GCS
    # that is gone: exit at once; the raylet's death ends the replicas (many.py kills any
    # process of the tree still alive after a few seconds).
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print(f"ray_many: serving {COUNT} models on 127.0.0.1:{PORT}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
