#!/usr/bin/env python3
"""Memory of ``modelyard serve``, per process: the parent, each gateway worker, the loops.

The workspace is run.py's (``ModelyardAdapter``): a scikit-learn LogisticRegression fitted on
a pandas DataFrame f0..f19 (seed 42), logged with ``Client.log_model``, alias ``champion``,
endpoint ``lr`` (``modelyard endpoints create``), served through ONNX Runtime; plus a reference
profile from the training rows, so that the monitor's passes compute drift as well.
``python -m modelyard serve --workers N`` then runs on 127.0.0.1 and, for every process of
its tree, RSS and PSS (``/proc/PID/smaps_rollup``; PSS divides each shared page between the
processes sharing it, so the PSS of a tree adds up and its RSS does not) are read:

  idle      after start-up, ``--warm`` requests and the loops' first monitor pass (every
            ``--monitor-interval`` s, 3 here), once the tree is quiet
  round k   after each of ``--rounds`` rounds of ``--requests`` requests: MLflow
            ``dataframe_split`` bodies of 1 row (four in five) or 10 rows, cycled from a pool
            of 512 distinct bodies of the training rows, over ``--connections`` keep-alive
            connections from an asyncio client in this process
  pass k    with ``--log-rows`` > 0: that many synthetic predictions (10-row requests spread
            over the past 2 hours, as the gateway logs them) are written to the prediction log
            before the server starts; before each of ``--passes`` passes the monitor's
            watermarks are deleted (a bench device: the next pass then reads the whole log
            again), and the loops process is read once the pass is over

plus which heavy libraries each process has mapped (shared objects under pandas/_libs,
sklearn, scipy, pyarrow, onnxruntime, sqlalchemy in ``/proc/PID/maps``), and, for the
control plane (pure Python: no shared object to see), the gateway's
``modelyard_control_plane_built`` gauge on ``/metrics`` (one worker answers each scrape).

    python bench/serving/memory.py                               # 2 workers, 3 rounds
    python bench/serving/memory.py --log-rows 200000 --passes 3  # and the loops process
    python bench/serving/memory.py --src /tmp/before/src         # another source tree

Prints a table (MiB); nothing is written to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import sqlite3
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common
import run as bench
from common import free_port, md_table, tree_cpu

common.TAG = "memory"
MIB = 1024 * 1024
#: Shared objects that tell a library is loaded: (label, pattern in /proc/PID/maps).
LIBRARIES = (
    ("pandas", "/pandas/_libs/"),
    ("sklearn", "/sklearn/"),
    ("scipy", "/scipy/"),
    ("pyarrow", "/pyarrow/"),
    ("onnxruntime", "/onnxruntime/"),
    ("sqlalchemy", "/sqlalchemy/"),
)


class Adapter(bench.ModelyardAdapter):
    src = str(bench.REPO_DIR / "src")
    monitor_interval = 30.0

    def _env(self) -> dict[str, str]:
        env = super()._env()
        env["PYTHONPATH"] = self.src
        env["MODELYARD_MONITOR_INTERVAL_SECONDS"] = str(self.monitor_interval)
        return env

    def cli(self, *argv: str) -> str:
        r = self._cli(*argv)
        if r.returncode != 0:
            raise RuntimeError(f"modelyard {' '.join(argv)} failed: {r.stderr or r.stdout}")
        return r.stdout


# ----------------------------------------------------------------------------------------
# /proc
# ----------------------------------------------------------------------------------------


def memory(pid: int) -> dict[str, int]:
    """Rss, Pss, Private_Clean + Private_Dirty ("Uss") in bytes, from smaps_rollup."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {}
    for line in text.splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            out[key] = int(parts[0]) * 1024
    out["Uss"] = out.get("Private_Clean", 0) + out.get("Private_Dirty", 0)
    return out


def libraries(pid: int) -> list[str]:
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ["?"]
    return [label for label, pattern in LIBRARIES if pattern in maps]


def listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on 127.0.0.1:``port`` (from /proc/net/tcp)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            inodes.add(inode)
    return inodes


def processes(root: int, port: int) -> dict[str, int]:
    """label -> pid: "parent", "worker-<i>" (its children listening on ``port``), "loops" (the
    other child), and "loops-template" (the loops' fork server, a child of the loops process
    where there is one; the short-lived children of a monitor pass are not counted)."""
    inodes = listening_inodes(port)
    out = {"parent": root}
    workers, others = [], []
    table = common._proc_table()
    for pid in common.descendants(root, table):
        if pid == root or table[pid][0] != root:
            continue
        try:
            links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:
            continue
        if any(f"socket:[{inode}]" in links for inode in inodes):
            workers.append(pid)
        else:
            others.append(pid)
    for i, pid in enumerate(sorted(workers)):
        out[f"worker-{i}"] = pid
    for i, pid in enumerate(sorted(others)):
        out["loops" if i == 0 else f"other-{i}"] = pid
    templates = [p for p in table if "loops" in out and table[p][0] == out["loops"]]
    for i, pid in enumerate(sorted(templates)):
        out["loops-template" if i == 0 else f"loops-child-{i}"] = pid
    return out


def snapshot(state: str, procs: dict[str, int]) -> list[dict[str, Any]]:
    rows = []
    for label, pid in procs.items():
        m = memory(pid)
        rows.append(
            {
                "state": state,
                "process": label,
                "pid": pid,
                "rss": m.get("Rss", 0) / MIB,
                "pss": m.get("Pss", 0) / MIB,
                "uss": m.get("Uss", 0) / MIB,
                "libraries": libraries(pid),
            }
        )
    total_rss = sum(r["rss"] for r in rows)
    total_pss = sum(r["pss"] for r in rows)
    common.log(
        f"{state:8s} tree RSS {total_rss:6.0f} MiB, PSS {total_pss:6.0f} MiB  "
        + "  ".join(f"{r['process']} {r['rss']:.0f}/{r['pss']:.0f}" for r in rows)
    )
    return rows


def quiet(pid: int, limit: float = 0.08, most: float = 60.0) -> None:
    """Wait until the tree under ``pid`` uses less than ``limit`` cores over a second."""
    deadline = time.monotonic() + most
    while time.monotonic() < deadline:
        before = tree_cpu(pid)
        time.sleep(1.0)
        if tree_cpu(pid) - before < limit:
            return


# ----------------------------------------------------------------------------------------
# Load
# ----------------------------------------------------------------------------------------


def bodies(X: Any) -> list[bytes]:
    """512 distinct bodies: four in five of 1 row, the others of 10 rows."""
    data = X.to_numpy()
    rng = np.random.default_rng(11)
    out = []
    for i in range(512):
        picks = [i % len(data)] if i % 5 else list(rng.choice(len(data), 10, replace=False))
        rows = [[float(v) for v in data[j]] for j in picks]
        out.append(json.dumps({"dataframe_split": {"columns": bench.COLUMNS, "data": rows}}))
    return [b.encode() for b in out]


def raw_requests(path: str, payloads: list[bytes]) -> list[bytes]:
    head = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    return [f"{head}content-length: {len(b)}\r\n\r\n".encode() + b for b in payloads]


async def _connection(port: int, requests: list[bytes], todo: list[int], failed: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while todo[0] > 0:
            todo[0] -= 1
            writer.write(requests[todo[0] % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            at = head.lower().find(b"content-length: ") + len(b"content-length: ")
            await reader.readexactly(int(head[at : head.index(b"\r\n", at)]))
            if head[9:12] != b"200":
                failed.append(int(head[9:12]))
    finally:
        writer.close()


def load(port: int, requests: list[bytes], count: int, connections: int) -> tuple[float, int]:
    """Send ``count`` requests over ``connections`` keep-alive connections; (seconds, non-200)."""
    todo, failed = [count], []

    async def main() -> None:
        await asyncio.gather(
            *(_connection(port, requests, todo, failed) for _ in range(connections))
        )

    start = time.monotonic()
    asyncio.run(main())
    return time.monotonic() - start, len(failed)


def control_plane_built(port: int, scrapes: int = 8) -> str:
    """What the workers' ``modelyard_control_plane_built`` gauges say over a few scrapes (each
    on a new connection, so the kernel picks a worker): "0", "1", "0,1" or "?" (no gauge)."""
    seen = set()
    for _ in range(scrapes):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            continue
        m = re.search(r"^modelyard_control_plane_built (\S+)$", text, re.M)
        seen.add(str(int(float(m.group(1)))) if m else "?")
    return ",".join(sorted(seen)) or "?"


# ----------------------------------------------------------------------------------------
# The monitor's passes over a synthetic log
# ----------------------------------------------------------------------------------------


def _write_log(home: str, rows: int) -> None:
    """Runs in a spawned child: ``rows`` predictions of endpoint lr in 10-row requests, spread
    evenly over the past two hours, through the gateway's own PredictionLog."""
    from datetime import UTC, datetime, timedelta

    from modelyard.config import Settings
    from modelyard.monitoring.predlog import PredictionLog
    from modelyard.workspace import Workspace

    ws = Workspace.open(Settings(home=Path(home)), migrate=False)
    rng = np.random.default_rng(5)
    requests = rows // 10
    start = datetime.now(UTC) - timedelta(hours=2, minutes=5)
    step = timedelta(hours=2) / requests
    plog = PredictionLog(ws)
    plog.start()
    for i in range(requests):
        x = rng.normal(size=(10, 20))
        p = 1 / (1 + np.exp(-x.sum(axis=1)))
        plog.log(
            endpoint="lr",
            model="lr",
            version=1,
            request_id=f"synthetic-{i}",
            inputs={c: x[:, j].copy() for j, c in enumerate(bench.COLUMNS)},
            outputs={
                "predictions": (p > 0.5).astype(np.int64),
                "probabilities": np.stack([1 - p, p], axis=1),
            },
            rows=10,
            latency_ms=float(rng.gamma(2.0, 0.5)),
            at=start + i * step,
        )
        if i % 2000 == 1999:
            plog.flush(60)
    plog.close(120)
    ws.close()


def wait_loops(home: Path, timeout: float = 60.0) -> None:
    """Wait until the loops process has made its first monitor pass (its lease is taken)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(home / "modelyard.db", timeout=30) as db:
            if db.execute("SELECT count(*) FROM monitor_leases WHERE name = 'monitor'").fetchone()[
                0
            ]:
                return
        time.sleep(0.5)
    common.log("no monitor pass within 60 s: the idle reading may precede the loops")


def reset_watermarks(home: Path) -> None:
    with sqlite3.connect(home / "modelyard.db", timeout=30) as db:
        db.execute("DELETE FROM monitor_watermarks")


def wait_pass(home: Path, pid: int, timeout: float = 300.0) -> float:
    """Wait until the monitor has closed the 5-minute windows again and ``pid`` is quiet."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        with sqlite3.connect(home / "modelyard.db", timeout=30) as db:
            done = db.execute(
                "SELECT count(*) FROM monitor_watermarks WHERE granularity = 3600"
            ).fetchone()[0]
        if done:
            break
        time.sleep(0.5)
    else:
        raise RuntimeError("the monitor did not pass within 300 s")
    quiet(pid, limit=0.05)
    return time.monotonic() - start


# ----------------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> str:
    states = list(dict.fromkeys(r["state"] for r in rows))
    procs = list(dict.fromkeys(r["process"] for r in rows))
    head = ["process"] + [f"{s} RSS/PSS" for s in states]
    out = []
    for p in [*procs, "tree"]:
        line = [p]
        for s in states:
            mine = [r for r in rows if r["state"] == s and (p == "tree" or r["process"] == p)]
            if not mine:
                line.append("-")
                continue
            line.append(f"{sum(r['rss'] for r in mine):.0f} / {sum(r['pss'] for r in mine):.0f}")
        out.append(line)
    return md_table(head, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--warm", type=int, default=20, help="requests before the idle reading")
    ap.add_argument("--requests", type=int, default=20000, help="requests per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--log-rows", type=int, default=0, help="synthetic predictions to log")
    ap.add_argument("--passes", type=int, default=3, help="monitor passes over that log")
    ap.add_argument("--monitor-interval", type=float, default=3.0)
    ap.add_argument("--src", default=str(bench.REPO_DIR / "src"), help="modelyard's source tree")
    ap.add_argument("--workdir", type=Path, help="kept between runs (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="also write the readings here")
    args = ap.parse_args()

    root = args.workdir or Path(tempfile.mkdtemp(prefix="modelyard-memory-"))
    info = bench.make_models(root, ["lr"])["lr"]
    ns = argparse.Namespace(workers=args.workers)
    adapter = Adapter("lr", info, root / "modelyard-lr", ns)
    adapter.src = str(Path(args.src).resolve())
    adapter.monitor_interval = args.monitor_interval
    marker = adapter.home / f"bench-memory-{args.log_rows}"
    if not marker.exists():
        adapter.prepare()
        train = root / "train.parquet"
        info["X"].to_parquet(train)
        adapter.cli("monitor", "reference", "models:/lr/1", "--data", str(train))
        if args.log_rows:
            os.environ["MODELYARD_HOME"] = str(adapter.home)
            p = mp.get_context("spawn").Process(
                target=_write_log, args=(str(adapter.home), args.log_rows)
            )
            p.start()
            p.join(600)
            if p.exitcode != 0:
                raise SystemExit(f"writing the synthetic log failed: exit {p.exitcode}")
        marker.touch()
    requests = raw_requests("/endpoints/lr/invocations", bodies(info["X"]))
    port = free_port()
    server = adapter.server(port)
    readings: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    try:
        server.start()
        assert server.proc is not None
        probe = adapter.targets()[0]
        bench.wait_ready(server, f"http://127.0.0.1:{port}{probe.path}", probe.body, 120)
        load(port, requests, args.warm, 1)
        wait_loops(adapter.home)
        quiet(server.proc.pid)
        procs = processes(server.proc.pid, port)
        readings += snapshot("idle", procs)
        extra["control_plane_idle"] = control_plane_built(port)
        for r in range(1, args.rounds + 1):
            seconds, failed = load(port, requests, args.requests, args.connections)
            common.log(
                f"round {r}: {args.requests} requests in {seconds:.1f}s "
                f"({args.requests / seconds:.0f} req/s), {failed} non-200"
            )
            quiet(server.proc.pid)
            readings += snapshot(f"round {r}", procs)
        extra["control_plane_after"] = control_plane_built(port)
        if args.log_rows and "loops" in procs:
            loops = {k: v for k, v in procs.items() if k.startswith("loops")}
            for k in range(1, args.passes + 1):
                reset_watermarks(adapter.home)
                seconds = wait_pass(adapter.home, procs["loops"])
                common.log(f"pass {k} over {args.log_rows} logged rows done in {seconds:.1f}s")
                readings += snapshot(f"pass {k}", loops)
    finally:
        server.stop()
    print(table(readings))
    print()
    libs = {r["process"]: r["libraries"] for r in readings}  # each process's last reading
    for label, found in libs.items():
        print(f"{label}: {', '.join(found) or 'none of ' + ', '.join(x for x, _ in LIBRARIES)}")
    print(
        f"control plane built (workers' gauge): idle {extra['control_plane_idle']}, "
        f"after the rounds {extra['control_plane_after']}"
    )
    if args.json:
        args.json.write_text(json.dumps({"readings": readings, **extra}, indent=1))


if __name__ == "__main__":
    main()
