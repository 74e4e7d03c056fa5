"""modelyard's profiles and drift on two Parquet files; one JSON line on stdout.

Run with modelyard's Python:

    python modelyard_worker.py REFERENCE.parquet CURRENT.parquet [SEGMENT_ROWS]

Measures: profile the reference, profile the current data, compare (the timed "compute"); then
separately the current data profiled incrementally in prediction-log segments of SEGMENT_ROWS
rows (50,000, the log's default) merged one by one, as the monitor builds window profiles.
"""

from __future__ import annotations

import json
import resource
import sys
import time

t0 = time.perf_counter()
import orjson  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

import modelyard  # noqa: E402
from modelyard.monitoring.drift import compare  # noqa: E402
from modelyard.monitoring.profiles import Profile  # noqa: E402

import_s = time.perf_counter() - t0


def main(reference_path: str, current_path: str, segment_rows: int) -> None:
    t0 = time.perf_counter()
    reference = pq.read_table(reference_path)
    current = pq.read_table(current_path)
    read_s = time.perf_counter() - t0

    start, c0 = time.perf_counter(), time.process_time()
    reference_profile = Profile.build(reference)
    t1 = time.perf_counter()
    current_profile = Profile.build(current)
    t2 = time.perf_counter()
    report = compare(reference_profile, current_profile)
    t3 = time.perf_counter()
    compute_s, cpu_s = t3 - start, time.process_time() - c0

    t0 = time.perf_counter()
    window = Profile()
    for batch in current.to_batches(max_chunksize=segment_rows):
        window = window.merge(Profile.build(batch))
    segments_s = time.perf_counter() - t0
    segmented = compare(reference_profile, window)

    print(
        json.dumps(
            {
                "system": "modelyard",
                "version": modelyard.__version__,
                "import_s": import_s,
                "read_s": read_s,
                "compute_s": compute_s,
                "cpu_s": cpu_s,
                "profile_reference_s": t1 - start,
                "profile_current_s": t2 - t1,
                "compare_s": t3 - t2,
                "segments_s": segments_s,
                "segments_agree": [f.drifted for f in segmented.features]
                == [f.drifted for f in report.features],
                "profile_bytes": len(orjson.dumps(current_profile.to_dict())),
                "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "features": {
                    f.feature: {
                        "method": f.method,
                        "threshold": f.threshold,
                        "statistic": f.statistic,
                        "drifted": f.drifted,
                        "status": f.status,
                    }
                    for f in report.features
                },
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 50_000)
