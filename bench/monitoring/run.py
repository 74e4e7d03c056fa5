#!/usr/bin/env python3
"""Monitoring benchmark: modelyard's profiles + drift vs Evidently's data drift preset.

Same machine, same run, same data. A seeded data set of 20 numeric features (normal, lognormal,
uniform, exponential, Poisson counts, bimodal, gamma, Student t, one with 1 % missing values)
is written once as Parquet: a reference (--ref-rows) and a current window (--rows) in which 5
features drift clearly (a shifted mean, a wider scale, a higher rate, reweighted modes, a
heavier tail) and 15 do not. Each round runs, in separate processes, interleaved (the order
alternates between rounds):

  evidently   bench/monitoring/evidently_worker.py in bench/.venv-evidently:
              ``Report([DataDriftPreset()]).run(current, reference)`` on pandas DataFrames
              read from the Parquet files, plus ``snapshot.dict()`` to read the results
  modelyard   bench/monitoring/modelyard_worker.py in this environment:
              ``Profile.build(reference)``, ``Profile.build(current)`` (from the Arrow tables
              read from the same files) and ``compare``; then, apart, the current data
              profiled in 50,000-row prediction-log segments merged one by one

Timed: the computation only (file reading and imports are reported apart). Medians over
rounds. The per-feature verdicts of both must agree: every disagreement is printed. Profiling
throughput is compared with the gateway's peak request rate from the "## serving" section of
bench/RESULTS.md (each request there is one row to profile).

    bash bench/setup.sh evidently                  # once: the Evidently virtualenv
    python bench/monitoring/run.py --rounds 3      # writes "## monitoring" in bench/RESULTS.md
    python bench/monitoring/run.py --rows 100000 --ref-rows 100000 --rounds 1 --no-results
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MONITORING_DIR = Path(__file__).resolve().parent
BENCH_DIR = MONITORING_DIR.parent
EVIDENTLY_VENV = BENCH_DIR / ".venv-evidently"
SECTION = "## monitoring"
SEED = 42
GATEWAY_FALLBACK = 13_700.0  # req/s, if bench/RESULTS.md has no serving table

sys.path.insert(0, str(BENCH_DIR))
import common  # noqa: E402  (bench/common.py: shared by the harnesses)
from common import RESULTS_MD, log, md_table  # noqa: E402

common.TAG = "monitoring"

# --- data ---------------------------------------------------------------------------------
# name -> (description, reference sampler, current sampler); a sampler is (rng, n) -> array.
Sampler = Any


def _normal(mu: float, sigma: float) -> Sampler:
    return lambda rng, n: rng.normal(mu, sigma, n)


def _lognormal(mu: float, sigma: float) -> Sampler:
    return lambda rng, n: rng.lognormal(mu, sigma, n)


def _poisson(lam: float) -> Sampler:
    return lambda rng, n: rng.poisson(lam, n).astype(np.float64)


def _bimodal(share: float) -> Sampler:
    return lambda rng, n: np.where(
        rng.random(n) < share, rng.normal(-2, 0.7, n), rng.normal(2, 1.0, n)
    )


def _with_missing(sampler: Sampler, share: float) -> Sampler:
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        x = sampler(rng, n)
        x[rng.random(n) < share] = np.nan
        return x

    return draw


FEATURES: dict[str, tuple[str, Sampler, Sampler]] = {
    "f0": ("normal, mean +0.3 sd", _normal(0, 1), _normal(0.3, 1)),
    "f1": ("normal", _normal(10, 2), _normal(10, 2)),
    "f2": ("lognormal", _lognormal(0, 1), _lognormal(0, 1)),
    "f3": (
        "exponential, scale x1.5",
        lambda rng, n: rng.exponential(1.0, n),
        lambda rng, n: rng.exponential(1.5, n),
    ),
    "f4": ("uniform", lambda rng, n: rng.uniform(-1, 1, n), lambda rng, n: rng.uniform(-1, 1, n)),
    "f5": ("Poisson(4)", _poisson(4), _poisson(4)),
    "f6": ("Poisson, rate 4 -> 5", _poisson(4), _poisson(5)),
    "f7": ("bimodal", _bimodal(0.5), _bimodal(0.5)),
    "f8": (
        "gamma(2)",
        lambda rng, n: rng.gamma(2.0, 1.0, n),
        lambda rng, n: rng.gamma(2.0, 1.0, n),
    ),
    "f9": ("bimodal, modes 50/50 -> 35/65", _bimodal(0.5), _bimodal(0.35)),
    "f10": (
        "normal, 1 % missing",
        _with_missing(_normal(0, 1), 0.01),
        _with_missing(_normal(0, 1), 0.01),
    ),
    "f11": (
        "Student t(3)",
        lambda rng, n: rng.standard_t(3, n),
        lambda rng, n: rng.standard_t(3, n),
    ),
    "f12": ("lognormal, sigma 0.5 -> 0.8", _lognormal(0, 0.5), _lognormal(0, 0.8)),
    "f13": ("normal(1000, 5)", _normal(1000, 5), _normal(1000, 5)),
    "f14": ("lognormal(2, 0.3)", _lognormal(2, 0.3), _lognormal(2, 0.3)),
    "f15": (
        "exponential",
        lambda rng, n: rng.exponential(3.0, n),
        lambda rng, n: rng.exponential(3.0, n),
    ),
    "f16": ("beta(2, 5)", lambda rng, n: rng.beta(2, 5, n), lambda rng, n: rng.beta(2, 5, n)),
    "f17": ("Poisson(20)", _poisson(20), _poisson(20)),
    "f18": ("normal, mean +0.02 sd", _normal(0, 1), _normal(0.02, 1)),
    "f19": (
        "uniform(0, 100)",
        lambda rng, n: rng.uniform(0, 100, n),
        lambda rng, n: rng.uniform(0, 100, n),
    ),
}


def make_data(outdir: Path, ref_rows: int, rows: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(SEED)
    paths = []
    for name, n, which in (("reference", ref_rows, 1), ("current", rows, 2)):
        table = pa.table({f: spec[which](rng, n) for f, spec in FEATURES.items()})
        path = outdir / f"{name}.parquet"
        pq.write_table(table, path)
        paths.append(path)
        log(
            f"wrote {path.name}: {n:,} rows x {len(FEATURES)} features "
            f"({path.stat().st_size / 2**20:.0f} MiB)"
        )
    return paths[0], paths[1]


# --- running the systems ------------------------------------------------------------------


def run_worker(system: str, ref: Path, cur: Path, timeout: float) -> dict[str, Any]:
    if system == "evidently":
        cmd = [str(EVIDENTLY_VENV / "bin" / "python"), str(MONITORING_DIR / "evidently_worker.py")]
    else:
        cmd = [sys.executable, str(MONITORING_DIR / "modelyard_worker.py")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELYARD_", "PYTHON"))}
    env["DO_NOT_TRACK"] = "1"  # Evidently's telemetry
    t0 = time.monotonic()
    r = subprocess.run(
        [*cmd, str(ref), str(cur)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ref.parent,
    )
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{system} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


def gateway_peak() -> tuple[float, str]:
    """The highest modelyard req/s in the serving table of bench/RESULTS.md."""
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else ""
    m = re.search(r"^## serving\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    best = 0.0
    for line in (m.group(1) if m else "").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 3 and cells[2].startswith("modelyard"):
            try:
                best = max(best, float(cells[3].replace(",", "")))
            except ValueError:
                continue
    if best:
        return best, "bench/RESULTS.md, ## serving"
    return GATEWAY_FALLBACK, "fallback value (no serving table found)"


# --- report -------------------------------------------------------------------------------


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "—"
    if x != 0 and abs(x) < 10**-digits:
        return f"{x:.1e}"
    return f"{x:,.{digits}f}"


def report(args: argparse.Namespace, runs: dict[str, list[dict]], meta: dict) -> str:
    ev, my = runs["evidently"], runs["modelyard"]
    med = {s: statistics.median(r["compute_s"] for r in rs) for s, rs in runs.items()}
    total_rows = args.ref_rows + args.rows
    speedup = med["evidently"] / med["modelyard"]

    def row(system: str, rs: list[dict], version: str) -> list[str]:
        m = med[system]
        return [
            f"{system} {version}",
            fmt(m, 2),
            " / ".join(fmt(r["compute_s"], 2) for r in rs),
            f"{total_rows / m:,.0f}",
            fmt(statistics.median(r["cpu_s"] for r in rs), 2),
            fmt(statistics.median(r["read_s"] for r in rs), 2),
            fmt(statistics.median(r["import_s"] for r in rs), 2),
            f"{max(r['max_rss_mib'] for r in rs):,.0f}",
            f"{med['evidently'] / m:.1f}x",
        ]

    head = [
        "system",
        "compute s (median)",
        "per round",
        "rows/s (ref + cur)",
        "CPU s",
        "read Parquet s",
        "import s",
        "peak RSS MiB",
        "speed-up vs Evidently",
    ]
    rows = [row("evidently", ev, ev[0]["version"]), row("modelyard", my, my[0]["version"])]

    peak, source = gateway_peak()
    prof = statistics.median(r["profile_current_s"] for r in my)
    seg = statistics.median(r["segments_s"] for r in my)
    phead = ["modelyard step", "seconds (median)", "rows/s", "x gateway peak"]
    prows = [
        [
            "profile reference",
            fmt(statistics.median(r["profile_reference_s"] for r in my), 3),
            f"{args.ref_rows / statistics.median(r['profile_reference_s'] for r in my):,.0f}",
            "",
        ],
        [
            "profile current",
            fmt(prof, 3),
            f"{args.rows / prof:,.0f}",
            f"{args.rows / prof / peak:,.0f}x",
        ],
        ["compare (20 features)", fmt(statistics.median(r["compare_s"] for r in my), 4), "", ""],
        [
            f"current in {args.segment_rows:,}-row segments, merged",
            fmt(seg, 3),
            f"{args.rows / seg:,.0f}",
            f"{args.rows / seg / peak:,.0f}x",
        ],
    ]

    last_ev, last_my = ev[-1]["features"], my[-1]["features"]
    vhead = [
        "feature",
        "data (reference -> current)",
        "Evidently method",
        "Evidently value",
        "Evidently drift",
        "modelyard method",
        "modelyard value",
        "modelyard drift",
        "agree",
    ]
    vrows, disagreements = [], []
    for name, spec in FEATURES.items():
        e, m = last_ev.get(name, {}), last_my.get(name, {})
        agree = e.get("drifted") is not None and e.get("drifted") == m.get("drifted")
        if not agree:
            disagreements.append(name)
        vrows.append(
            [
                name,
                spec[0],
                str(e.get("method", "—")),
                fmt(e.get("statistic"), 4),
                "yes" if e.get("drifted") else "no",
                str(m.get("method", "—")),
                fmt(m.get("statistic"), 4),
                "yes" if m.get("drifted") else "no",
                "✓" if agree else "✗",
            ]
        )
    stable = all(
        {k: v["drifted"] for k, v in r["features"].items()}
        == {k: v["drifted"] for k, v in rs[0]["features"].items()}
        for rs in runs.values()
        for r in rs
    )

    la0, la1 = meta["load_before"], meta["load_after"]
    lines = [
        SECTION,
        "",
        f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} cores "
        f"({platform.machine()}), Python {platform.python_version()}; "
        f"`python bench/monitoring/run.py {' '.join(sys.argv[1:])}`.",
        "",
        f"- Data: {len(FEATURES)} numeric features (seed {SEED}), reference {args.ref_rows:,} "
        f"rows, current {args.rows:,} rows, written once as Parquet; 5 features drift "
        f"(f0, f3, f6, f9, f12), 15 do not (table below).",
        f"- Evidently {ev[0]['version']} (bench/.venv-evidently): "
        f"`Report([DataDriftPreset()]).run(current, reference)` + `snapshot.dict()` on pandas "
        f"DataFrames. modelyard {my[0]['version']}: `Profile.build(reference)` + "
        f"`Profile.build(current)` (Arrow tables) + `compare(...)` with default settings, "
        f"which pick the same methods as the preset (normed Wasserstein, threshold 0.1, above "
        f"1,000 reference rows).",
        f"- Each system in its own process, rounds interleaved (order alternating) "
        f"x{args.rounds}; compute = the computation only, medians over rounds; file reading "
        f"and imports apart; CPU s = the process' CPU time for the computation; rows/s = "
        f"(reference + current rows) / compute s.",
        f"- **modelyard is {speedup:.1f}x faster than Evidently** "
        f"({fmt(med['modelyard'], 2)} s vs {fmt(med['evidently'], 2)} s) with "
        f"**{len(FEATURES) - len(disagreements)}/{len(FEATURES)} identical drift verdicts**"
        + (f" (disagreements: {', '.join(disagreements)})" if disagreements else "")
        + ("" if stable else "; verdicts varied between rounds")
        + ".",
        f"- Profiling keeps up with the gateway: {args.rows / prof:,.0f} rows/s for the current "
        f"window in one batch, {args.rows / seg:,.0f} rows/s in {args.segment_rows:,}-row log "
        f"segments, against the gateway's peak of {peak:,.0f} req/s ({source}), one row each. "
        f"The current profile serialises to {my[-1]['profile_bytes'] / 1024:,.0f} KiB of JSON; "
        f"segmented profiles gave {'the same' if my[-1]['segments_agree'] else 'DIFFERENT'} "
        f"verdicts.",
        "- The machine is shared with other sessions; load average (1/5/15 min) before: "
        f"{' '.join(f'{x:.2f}' for x in la0)}; after: {' '.join(f'{x:.2f}' for x in la1)}.",
        "",
        md_table(head, rows),
        "",
        md_table(phead, prows),
        "",
        md_table(vhead, vrows),
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=1_000_000, help="current window rows")
    ap.add_argument("--ref-rows", type=int, default=1_000_000, help="reference rows")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--segment-rows",
        type=int,
        default=50_000,
        help="rows per prediction-log segment for the incremental measurement",
    )
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per worker run")
    ap.add_argument("--keep", action="store_true", help="keep the Parquet files")
    ap.add_argument("--no-results", action="store_true", help="do not touch bench/RESULTS.md")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (EVIDENTLY_VENV / "bin" / "python").exists():
        raise SystemExit(f"{EVIDENTLY_VENV} missing: run bash bench/setup.sh evidently")
    outdir = BENCH_DIR / "runs" / f"monitoring-{time.strftime('%Y%m%d-%H%M%S')}"
    outdir.mkdir(parents=True, exist_ok=True)
    la = os.getloadavg()
    log(f"work dir {outdir}")
    log(
        f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} on {os.cpu_count()} cores"
        + ("  (busy machine: numbers will be noisy)" if la[0] > 1.0 else "")
    )
    meta: dict[str, Any] = {"load_before": la}
    runs: dict[str, list[dict]] = {"evidently": [], "modelyard": []}
    try:
        ref, cur = make_data(outdir, args.ref_rows, args.rows)
        for i in range(args.rounds):
            order = ["evidently", "modelyard"] if i % 2 == 0 else ["modelyard", "evidently"]
            for system in order:
                out = run_worker(system, ref, cur, args.timeout)
                runs[system].append(out)
                drifted = sorted(
                    (k for k, v in out["features"].items() if v["drifted"]),
                    key=lambda k: int(k[1:]),
                )
                log(
                    f"round {i + 1}/{args.rounds} {system}: compute {out['compute_s']:.2f} s "
                    f"(read {out['read_s']:.2f} s, import {out['import_s']:.2f} s, "
                    f"RSS {out['max_rss_mib']:,.0f} MiB); drifted: {', '.join(drifted)}"
                )
    finally:
        if not args.keep:
            for p in outdir.glob("*.parquet"):
                p.unlink()
    meta["load_after"] = os.getloadavg()
    (outdir / "raw.json").write_text(json.dumps(runs, indent=1))
    for name in FEATURES:
        e, m = runs["evidently"][-1]["features"][name], runs["modelyard"][-1]["features"][name]
        if e["drifted"] != m["drifted"]:
            log(
                f"DISAGREEMENT {name}: Evidently {e['method']} {e['statistic']:.4g} "
                f"drift={e['drifted']}; modelyard {m['method']} {m['statistic']} "
                f"drift={m['drifted']}"
            )
    section = report(args, runs, meta)
    print(section)
    if not args.no_results:
        common.write_results(SECTION, section)
        log(f"updated {RESULTS_MD}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
