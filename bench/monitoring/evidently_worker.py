"""Evidently's data drift preset on two Parquet files; one JSON line on stdout.

Run with bench/.venv-evidently/bin/python (Evidently 0.7 API: ``Report([DataDriftPreset()])``):

    python evidently_worker.py REFERENCE.parquet CURRENT.parquet
"""

from __future__ import annotations

import json
import resource
import sys
import time

t0 = time.perf_counter()
import pandas as pd  # noqa: E402
from evidently import Report  # noqa: E402
from evidently import __version__ as evidently_version  # noqa: E402
from evidently.presets import DataDriftPreset  # noqa: E402

import_s = time.perf_counter() - t0


def main(reference_path: str, current_path: str) -> None:
    t0 = time.perf_counter()
    reference = pd.read_parquet(reference_path)
    current = pd.read_parquet(current_path)
    read_s = time.perf_counter() - t0

    t0, c0 = time.perf_counter(), time.process_time()
    snapshot = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)
    result = snapshot.dict()  # the results, as a caller would read them
    compute_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0

    features = {}
    for metric in result["metrics"]:
        config = metric["config"]
        if not config["type"].endswith("ValueDrift"):
            continue
        method, threshold, value = config["method"], config["threshold"], metric["value"]
        # p-value methods drift below their threshold (KS: <=, chi-square: <), distances at or
        # above it: Evidently's own rules (legacy/calculations/stattests).
        if "p_value" in method:
            drifted = value <= threshold if method.startswith("K-S") else value < threshold
        else:
            drifted = value >= threshold
        features[config["column"]] = {
            "method": method,
            "threshold": threshold,
            "statistic": value,
            "drifted": bool(drifted),
        }
    print(
        json.dumps(
            {
                "system": "evidently",
                "version": evidently_version,
                "import_s": import_s,
                "read_s": read_s,
                "compute_s": compute_s,
                "cpu_s": cpu_s,
                "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "features": features,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
