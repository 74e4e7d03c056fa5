#!/usr/bin/env python3
"""modelyard's gateway alone: server CPU time per request and cold start, for tuning.

Throughput on a shared 2-core machine moves with whatever else runs; the CPU time the
server's process tree spends per answered request moves much less. For each model (``lr``,
``rf``, fitted as in run.py) this prepares a workspace once (kept in ``--workdir`` for later
runs), then, ``--rounds`` times, for each source tree given with ``--src`` (interleaved, so
that two versions of the code meet the same machine load):

- starts ``python -m modelyard serve`` with that tree on ``PYTHONPATH`` (its bytecode compiled
  first, as ``pip install`` does) and records the cold start (process start to the first 2xx
  prediction, the probe run.py uses);
- for each target (``modelyard``: MLflow ``dataframe_split`` on
  ``/endpoints/NAME/invocations``; ``modelyard-v2``: OIP v2 on ``/v2/models/NAME/infer``):
  a 1 s wrk warm-up, then one wrk run of ``--duration`` s; CPU µs per request =
  (utime + stime of the server's process tree from /proc, after - before) / requests,
  and wrk's p99 latency;
- stops the server.

Medians over rounds are printed; nothing is written to bench/RESULTS.md.

    python bench/serving/cpu_cost.py --workdir /tmp/cc --src new=src --src old=/tmp/old/src
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import run as bench
from common import free_port, tree_snapshot


class Adapter(bench.ModelyardAdapter):
    src = str(bench.REPO_DIR / "src")

    def _env(self) -> dict[str, str]:
        env = super()._env()
        env["PYTHONPATH"] = self.src
        return env


def _cpu(pid: int) -> float:
    return sum(c for c, _ in tree_snapshot(pid).values())


def _one_round(adapter: Adapter, args: argparse.Namespace, root: Path) -> dict[str, float]:
    probe = adapter.targets()[0]
    port = free_port()
    server = adapter.server(port)
    server.start()
    out: dict[str, float] = {}
    try:
        out["cold"], _ = bench.wait_ready(
            server, f"http://127.0.0.1:{port}{probe.path}", probe.body, 120
        )
        assert server.proc is not None
        for target in adapter.targets():
            if target.row not in args.targets or not args.duration:
                continue
            body_file = root / f"{adapter.model}-{target.row}.json"
            body_file.write_bytes(target.body)
            url = f"http://127.0.0.1:{port}{target.path}"
            bench.run_wrk(url, body_file, args.concurrency, args.threads, 1.0, 10)
            before = _cpu(server.proc.pid)
            res = bench.run_wrk(url, body_file, args.concurrency, args.threads, args.duration, 10)
            after = _cpu(server.proc.pid)
            if res["errors"]:
                print(f"  {res['errors']} errors!", file=sys.stderr)
            out[target.row] = (after - before) / max(res["requests"], 1) * 1e6
            out[target.row + " rps"] = res["rps"]
            out[target.row + " p99"] = res["p99"]
    finally:
        server.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="lr,rf")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=4.0, help="wrk seconds (0: cold start only)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--targets", default="modelyard,modelyard-v2")
    ap.add_argument(
        "--src",
        action="append",
        default=[],
        help="LABEL=PATH of a source tree to run (repeatable; default: this repo)",
    )
    ap.add_argument("--workdir", default=None, help="keeps the prepared workspaces")
    args = ap.parse_args(argv)
    args.targets = [t for t in args.targets.split(",") if t]
    models = [m for m in args.models.split(",") if m]
    srcs = [tuple(s.split("=", 1)) for s in args.src] or [("src", Adapter.src)]
    root = Path(args.workdir or tempfile.mkdtemp(prefix="cpu-cost-"))
    root.mkdir(parents=True, exist_ok=True)
    ns = argparse.Namespace(workers=args.workers)
    infos = bench.make_models(root, models)  # fixed seed: the same models every time
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for model in models:
        adapters = []
        for label, path in srcs:
            adapter = Adapter(model, infos[model], root / f"modelyard-{model}", ns)
            adapter.src = str(Path(path).resolve())
            adapters.append((label, adapter))
        first = adapters[0][1]
        if not (first.home / "ready").exists():
            first.prepare()
            (first.home / "ready").touch()
        for r in range(args.rounds):
            for label, adapter in adapters:
                res = _one_round(adapter, args, root)
                results.setdefault((model, label), []).append(res)
                shown = ", ".join(f"{k} {v:.3g}" for k, v in res.items())
                print(f"[{model} {label} round {r}] {shown}", file=sys.stderr, flush=True)
    print(f"work dir {root}; medians of {args.rounds} rounds (cold start s, CPU µs/request)")
    for (model, label), rounds in results.items():
        keys = rounds[0].keys()
        med = {k: statistics.median(r[k] for r in rounds) for k in keys}
        colds = ", ".join(f"{r['cold']:.2f}" for r in rounds)
        parts = [f"{model} {label}: cold {med['cold']:.2f} s ({colds})"]
        for t in args.targets:
            if t in med:
                parts.append(
                    f"{t} {med[t]:.1f} µs/req ({med[t + ' rps']:.0f} req/s, "
                    f"p99 {med[t + ' p99']:.1f} ms)"
                )
        print("; ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
