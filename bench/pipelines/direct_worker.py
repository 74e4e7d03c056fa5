"""The 10 step functions called directly, in order: the baseline. One JSON line on stdout.

python direct_worker.py --runs 20
"""

from __future__ import annotations

import argparse
import platform
import time

t0 = time.perf_counter()
import measure  # noqa: E402
from steps import run_direct  # noqa: E402

import_s = time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--variant", default="plain calls")
    ap.add_argument("--workdir", default=None)  # unused: same CLI as the other workers
    args = ap.parse_args()
    measure.measure(
        "direct",
        args.variant,
        f"Python {platform.python_version()}",
        run_direct,
        args.runs,
        import_s=import_s,
    )


if __name__ == "__main__":
    main()
