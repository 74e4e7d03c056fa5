#!/usr/bin/env python3
"""What a token check costs a prediction: the gateway with auth off and on, in the same run.

Two ``modelyard serve`` processes on one workspace (``lr`` of run.py, one endpoint), the same
``--workers`` each, one with ``MODELYARD_AUTH=true``. Every request carries the same valid
``Authorization: Bearer`` header (off ignores it), so both get identical bytes. The load is
``--connections`` keep-alive connections from an asyncio client in this process (raw sockets,
uvloop; wrk is not required), posting single rows cycled from a pool of distinct rows, on
127.0.0.1. Rounds alternate off/on (then on/off), each a 1 s warm-up and ``--duration``
seconds measured: server CPU µs per request (utime + stime of the server's process tree from
/proc, after - before, / answered requests), req/s, p50 and p99 latency. Medians of the
rounds, with their range, and the median of on - off within each round.

Then the check itself, in-process, timed with ``timeit``: a token cached by the worker
(header parsed, sha256, dict lookup, endpoint scope), and the same awaited as the gateway
awaits it.

    python bench/serving/auth_cost.py                 # prints; --write adds "## auth" to RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import run as bench
from common import free_port, md_table, tree_cpu, write_results

SECTION = "## auth"


class Adapter(bench.ModelyardAdapter):
    auth = False

    def _env(self) -> dict[str, str]:
        env = super()._env()
        env["MODELYARD_AUTH"] = "true" if self.auth else "false"
        return env


def _token(adapter: Adapter) -> str:
    token_file = adapter.home / "bench-token"
    if token_file.exists():
        return token_file.read_text().strip()
    r = adapter._cli("users", "create", "bench")
    if r.returncode != 0 and "exists" not in r.stderr:
        raise RuntimeError(r.stderr)
    r = adapter._cli("tokens", "create", "--user", "bench", "--endpoint", adapter.model)
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    secret = r.stdout.split()[0]
    token_file.write_text(secret)
    return secret


def _requests(path: str, rows: list[list[float]], secret: str) -> list[bytes]:
    out = []
    for row in rows:
        body = bench.body_mlflow(row)
        head = (
            f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"authorization: Bearer {secret}\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


async def _connection(
    port: int, requests: list[bytes], until: float, latencies: list[float], failed: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = random.randrange(len(requests))
    try:
        while time.monotonic() < until:
            start = time.perf_counter()
            writer.write(requests[i % len(requests)])
            i += 1
            head = await reader.readuntil(b"\r\n\r\n")
            at = head.find(b"content-length: ") + len(b"content-length: ")
            length = int(head[at : head.index(b"\r\n", at)])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if head[9:12] != b"200":
                failed.append(int(head[9:12]))
    finally:
        writer.close()


def _load(port: int, requests: list[bytes], seconds: float, connections: int) -> dict[str, float]:
    latencies: list[float] = []
    failed: list[int] = []

    async def main() -> None:
        until = time.monotonic() + seconds
        await asyncio.gather(
            *(_connection(port, requests, until, latencies, failed) for _ in range(connections))
        )

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "failed": len(failed),
        "rps": n / seconds,
        "p50": latencies[n // 2] * 1000 if n else 0.0,
        "p99": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else 0.0,
    }


def _wait_ready(server: bench.Server, port: int, request: bytes) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited; see {server.log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2):
                pass
            if _load(port, [request], 0.2, 1)["failed"] == 0:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} did not become ready; see {server.log_path}")


def _in_process(home: Path, model: str, secret: str, number: int) -> dict[str, float]:
    """µs per check of a token the worker has cached, as Gateway.infer makes it."""
    from modelyard.config import Settings
    from modelyard.serving import gateway as gw
    from modelyard.workspace import Workspace

    ws = Workspace.open(Settings(home=home, auth=True), migrate=False)
    try:
        gateway = gw.Gateway(ws)
        tokens = gateway.tokens
        assert tokens is not None
        tokens.put(secret, tokens.load(secret))
        headers = {b"authorization": f"Bearer {secret}".encode(), b"content-length": b"100"}

        from modelyard.governance.identity import bearer_secret

        authorization = headers[b"authorization"]

        def check() -> None:
            found = tokens.get(bearer_secret(authorization))
            assert found is not None and not isinstance(found, str)
            found.require_predict(model)

        async def awaited() -> float:
            start = time.perf_counter()
            for _ in range(number):
                (await tokens.identify(authorization)).require_predict(model)
            return time.perf_counter() - start

        sync_s = min(timeit.repeat(check, number=number, repeat=5))
        async_s = min(asyncio.run(awaited()) for _ in range(5))
        return {"sync": sync_s / number * 1e6, "awaited": async_s / number * 1e6}
    finally:
        ws.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1, help="gateway processes, both sides")
    ap.add_argument("--workdir", default=None, help="keeps the prepared workspace")
    ap.add_argument("--write", action="store_true", help="write the '## auth' section")
    args = ap.parse_args(argv)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="auth-cost-"))
    root.mkdir(parents=True, exist_ok=True)
    info = bench.make_models(root, ["lr"])["lr"]
    ns = argparse.Namespace(workers=args.workers)
    off = Adapter("lr", info, root / "modelyard-lr", ns)
    on = Adapter("lr", info, root / "modelyard-lr", ns)
    on.auth = True
    if not (off.home / "ready").exists():
        off.prepare()
        (off.home / "ready").touch()
    secret = _token(off)
    rows = [[float(v) for v in r] for r in info["X"].head(256).to_numpy()]
    requests = _requests("/endpoints/lr/invocations", rows, secret)
    load_before = os.getloadavg()
    servers = {}
    try:
        for label, adapter in (("off", off), ("on", on)):
            port = free_port()
            server = adapter.server(port)
            server.name = f"modelyard auth {label}"
            server.log_path = root / f"server-{label}.log"
            server.start()
            servers[label] = (server, port)
        for server, port in servers.values():
            _wait_ready(server, port, requests[0])
        results: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
        client_cpu = 0.0
        for r in range(args.rounds):
            order = ("off", "on") if r % 2 == 0 else ("on", "off")
            for label in order:
                server, port = servers[label]
                assert server.proc is not None
                _load(port, requests, 1.0, args.connections)
                before, usage = tree_cpu(server.proc.pid), resource.getrusage(resource.RUSAGE_SELF)
                res = _load(port, requests, args.duration, args.connections)
                after, used = tree_cpu(server.proc.pid), resource.getrusage(resource.RUSAGE_SELF)
                client_cpu += (used.ru_utime + used.ru_stime) - (usage.ru_utime + usage.ru_stime)
                res["cpu_us"] = (after - before) / max(res["requests"], 1) * 1e6
                results[label].append(res)
                print(
                    f"[round {r + 1} auth {label}] {res['rps']:.0f} req/s, "
                    f"{res['cpu_us']:.1f} µs CPU/req, p50 {res['p50']:.2f} ms, "
                    f"p99 {res['p99']:.2f} ms, {res['failed']} failed",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        for server, _ in servers.values():
            server.stop()
    micro = _in_process(off.home, "lr", secret, 200_000)
    load_after = os.getloadavg()

    def med(label: str, key: str) -> str:
        values = [x[key] for x in results[label]]
        return f"{statistics.median(values):.1f} ({min(values):.1f} to {max(values):.1f})"

    rows_md = []
    for label in ("off", "on"):
        failed = sum(x["failed"] for x in results[label])
        total = sum(x["requests"] for x in results[label])
        rows_md.append(
            [
                label,
                med(label, "cpu_us"),
                med(label, "rps"),
                med(label, "p50"),
                med(label, "p99"),
                f"{failed}/{total}",
            ]
        )
    cpu_off = statistics.median(x["cpu_us"] for x in results["off"])
    cpu_on = statistics.median(x["cpu_us"] for x in results["on"])
    # on - off within each round: the two runs of a round met about the same machine load
    paired = sorted(
        on["cpu_us"] - off["cpu_us"] for on, off in zip(results["on"], results["off"], strict=True)
    )
    version = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    section = "\n".join(
        [
            SECTION,
            "",
            f"{time.strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} cores, Python {version}; "
            f"`python bench/serving/auth_cost.py --rounds {args.rounds} --duration "
            f"{args.duration:g} --connections {args.connections} --workers {args.workers}`.",
            "",
            f"- `modelyard serve --workers {args.workers}` twice on one workspace (model `lr` "
            "of run.py, endpoint `lr`), auth off and auth on (`MODELYARD_AUTH=true`, a token "
            "limited to `lr`, cached per worker for `token_cache_seconds`, 5 s). Identical "
            "requests (MLflow `dataframe_split`, one row cycled from 256 distinct rows, the "
            "same `Authorization` header) over "
            f"{args.connections} keep-alive connections from one asyncio process on 127.0.0.1 "
            "(it shares the 2 cores; its CPU "
            f"{client_cpu / (2 * args.rounds * args.duration):.2f} cores on average).",
            f"- Rounds interleaved off/on, then on/off; {args.duration:g} s each after 1 s "
            "warm-up; medians of the rounds (range). CPU = server process tree, µs per answered "
            "request.",
            f"- Load average before: {' '.join(f'{x:.2f}' for x in load_before)}; after: "
            f"{' '.join(f'{x:.2f}' for x in load_after)}.",
            "",
            md_table(
                ["auth", "server CPU µs/req", "req/s", "p50 ms", "p99 ms", "non-200"], rows_md
            ),
            "",
            f"Difference of the medians: {cpu_on - cpu_off:+.1f} µs CPU per request "
            f"({(cpu_on - cpu_off) / cpu_off * 100:+.1f}%); on - off within each round: "
            f"median {statistics.median(paired):+.1f} µs ("
            + ", ".join(f"{d:+.1f}" for d in paired)
            + "). The machine is shared (see the load average): a difference within the "
            "rounds' range is noise, and the in-process figure below is the cost itself.",
            "",
            f"The check itself, in-process (`timeit`, best of 5 x 200,000): "
            f"{micro['sync']:.2f} µs for a cached token (Authorization header parsed, sha256, "
            f"dict lookup, endpoint scope), {micro['awaited']:.2f} µs awaited as "
            "`Gateway.infer` awaits it.",
            "",
        ]
    )
    print(section)
    if args.write:
        write_results(SECTION, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
