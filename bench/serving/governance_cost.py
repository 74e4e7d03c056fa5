#!/usr/bin/env python3
"""What each governance check costs a prediction on modelyard's gateway, in one run.

Served: one workspace (model ``lr`` of run.py, alias ``champion``, its reference profile made
from the training rows) with an endpoint per configuration, all on ``models:/lr@champion``,
and one ``modelyard serve --workers N`` per configuration (the same N for all, same env but
``MODELYARD_AUTH``), started side by side as the auth_cost.py and limits_cost.py it replaces
did, only one under load at a time:

  plain   endpoint ``lr``, auth off
  auth    endpoint ``lr``, auth on (a token limited to ``lr`` and ``lr-all``, cached per worker)
  limits  ``lr-limits``: a rate limit and a daily quota that never refuse
  guard   ``lr-guard``: ``endpoints guard --policy flag``
  redact  ``lr-redact``: ``endpoints redact --hash f0`` (MODELYARD_REDACTION_KEY set)
  all     ``lr-all``: auth on, the limit, the guard and the redaction together

Every request is an MLflow ``dataframe_split`` body of ``--rows`` rows cycled from a pool of
distinct bodies, with the same ``Authorization`` header (ignored with auth off), over
``--connections`` keep-alive connections from an asyncio client in this process. Rounds
rotate the order of the configurations; each is a 1 s warm-up then ``--duration`` s
measured: server CPU µs per request (the server's process tree from /proc), req/s, p50,
p99, non-200. Medians over rounds (range), and the median over rounds of the difference
from ``plain`` in the same round.

In-process (``timeit``, best of 5): the cached token check, ``LimitBook`` admit + charge
with 0, 1, 3 limits, the guard's scoring and the redaction of a record at 1, 100, 1000
rows; per registration and per load (never per request): registering a version unsigned
and signed, reading and verifying a signature, the checked local copy, a whole load.

    python bench/serving/governance_cost.py --rounds 5 --duration 4 --write
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
import timeit
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common
import run as bench
from common import free_port, keepalive_load, md_table, tree_cpu, write_results

common.TAG = "governance"
SECTION = "## governance"
REPLACES = ("## auth", "## limits")  # the sections of auth_cost.py and limits_cost.py
CONFIGS = ("plain", "auth", "limits", "guard", "redact", "all")
ENDPOINT = {c: "lr" if c in ("plain", "auth") else f"lr-{c}" for c in CONFIGS}
WITH_AUTH = ("auth", "all")
LIMIT = ("--rate", "1000000/s", "--burst", "1000000", "--daily", "1000000000000")
HASHED = "f0"
REDACTION_KEY = "bench-redaction-key-6c1d0e2f"
SIZES = (1, 100, 1000)
P_MS = (("p50", "{:.2f}"), ("p99", "{:.2f}"))


class Adapter(bench.ModelyardAdapter):
    auth = False

    def _env(self) -> dict[str, str]:
        env = super()._env()
        env["MODELYARD_AUTH"] = "true" if self.auth else "false"
        env["MODELYARD_REDACTION_KEY"] = REDACTION_KEY
        return env

    def cli(self, *argv: str) -> str:
        r = self._cli(*argv)
        if r.returncode != 0:
            raise RuntimeError(f"modelyard {' '.join(argv)} failed: {r.stderr or r.stdout}")
        return r.stdout


def _prepare(adapter: Adapter, info: dict[str, Any]) -> str:
    """Model, endpoints, reference, limits, guards, redactions and a token (once per
    workdir); the token's secret."""
    token_file = adapter.home / "bench-token"
    if token_file.exists():
        return token_file.read_text().strip()
    adapter.prepare()  # model lr (alias champion) and endpoint lr, as run.py makes them
    train = adapter.workdir / "train.parquet"
    info["X"].to_parquet(train)
    adapter.cli("monitor", "reference", "models:/lr/1", "--data", str(train))
    for name in ("lr-limits", "lr-guard", "lr-redact", "lr-all"):
        adapter.cli("endpoints", "create", name, "--model", "models:/lr@champion")
    for name in ("lr-limits", "lr-all"):
        adapter.cli("limits", "set", "--endpoint", name, *LIMIT)
    for name in ("lr-guard", "lr-all"):
        adapter.cli("endpoints", "guard", name, "--policy", "flag")
    for name in ("lr-redact", "lr-all"):
        adapter.cli("endpoints", "redact", name, "--hash", HASHED)
    adapter.cli("users", "create", "bench")
    made = adapter.cli(
        "tokens", "create", "--user", "bench", "--endpoint", "lr", "--endpoint", "lr-all", "--json"
    )
    token_file.write_text(json.loads(made)["secret"])
    return token_file.read_text().strip()


def _bodies(X: Any, rows: int) -> list[bytes]:
    """256 distinct single rows, or 64 bodies of ``rows`` rows drawn from the training rows."""
    data = X.to_numpy()
    rng = np.random.default_rng(7)
    picks = (
        [[i] for i in range(256)]
        if rows == 1
        else [list(rng.choice(len(data), rows, replace=False)) for _ in range(64)]
    )
    return [
        json.dumps(
            {
                "dataframe_split": {
                    "columns": bench.COLUMNS,
                    "data": [[float(v) for v in data[i]] for i in pick],
                }
            }
        ).encode()
        for pick in picks
    ]


def _requests(path: str, bodies: list[bytes], secret: str) -> list[bytes]:
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {secret}\r\ncontent-length: "
    )
    return [f"{head}{len(b)}\r\n\r\n".encode() + b for b in bodies]


def _wait_ready(server: bench.Server, port: int, path: str, body: bytes, secret: str) -> str:
    """Wait until ``server`` predicts; its X-Modelyard-Guard header ('' without a guard)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited; see {server.log_path}")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}",
            data=body,
            method="POST",
            headers={"content-type": "application/json", "authorization": f"Bearer {secret}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return reply.headers.get("x-modelyard-guard", "")
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{server.name} did not become ready; see {server.log_path}")


def _served(args: argparse.Namespace, adapters: dict[str, Adapter], secret: str, X: Any) -> dict:
    bodies = _bodies(X, args.rows)
    servers: dict[str, tuple[bench.Server, int]] = {}
    results: dict[str, list[dict[str, float]]] = {c: [] for c in CONFIGS}
    client_cpu = 0.0
    try:
        for config in CONFIGS:
            server = adapters[config].server(port := free_port())
            server.name, server.log_path = f"gateway {config}", args.root / f"server-{config}.log"
            server.start()
            servers[config] = (server, port)
        for config, (server, port) in servers.items():
            path = f"/endpoints/{ENDPOINT[config]}/invocations"
            guard = _wait_ready(server, port, path, bodies[0], secret)
            if config in ("guard", "all") and not guard.startswith(("ok", "flagged")):
                raise RuntimeError(f"{config}: the guard is not active ({guard!r})")
        idle = _quiet([server for server, _ in servers.values()])
        for r in range(args.rounds):
            order = CONFIGS[r % len(CONFIGS) :] + CONFIGS[: r % len(CONFIGS)]
            for config in order:
                server, port = servers[config]
                assert server.proc is not None
                requests = _requests(f"/endpoints/{ENDPOINT[config]}/invocations", bodies, secret)
                keepalive_load(port, requests, 1.0, args.connections)
                before, usage = tree_cpu(server.proc.pid), resource.getrusage(resource.RUSAGE_SELF)
                res = keepalive_load(port, requests, args.duration, args.connections)
                after, used = tree_cpu(server.proc.pid), resource.getrusage(resource.RUSAGE_SELF)
                client_cpu += used.ru_utime + used.ru_stime - usage.ru_utime - usage.ru_stime
                res["cpu_us"] = (after - before) / max(res["requests"], 1) * 1e6
                results[config].append(res)
                common.log(
                    f"round {r + 1} {config:6s} {res['rps']:7.0f} req/s {res['cpu_us']:6.1f} "
                    f"µs CPU/req p50 {res['p50']:.2f} p99 {res['p99']:.2f} ms "
                    f"{res['failed']} non-200"
                )
    finally:
        for server, _ in servers.values():
            server.stop()
    seconds = len(CONFIGS) * args.rounds * args.duration
    return {"results": results, "client_cores": client_cpu / seconds, "idle_cores": idle}


def _quiet(servers: list[bench.Server], limit: float = 0.25, most: float = 60) -> float:
    """Wait (at most ``most`` s) until the servers, started together, have finished loading:
    under ``limit`` cores together over 1 s. The cores they use then, idle."""
    pids = [s.proc.pid for s in servers if s.proc is not None]
    deadline = time.monotonic() + most
    while True:
        before = sum(tree_cpu(pid) for pid in pids)
        time.sleep(1.0)
        used = sum(tree_cpu(pid) for pid in pids) - before
        if used < limit or time.monotonic() > deadline:
            return used


def _best(fn: Any, number: int, repeat: int = 5) -> float:
    """µs per call: the best of ``repeat`` timings of ``number`` calls."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def _in_process(home: Path, secret: str, X: Any) -> dict[str, float]:
    """µs per call of each per-request check, as ``Gateway.infer`` and the log's writer make it."""
    from modelyard.config import Settings
    from modelyard.governance.entities import Identity, Role
    from modelyard.governance.identity import bearer_secret
    from modelyard.governance.limits import LimitBook, LimitSpec, LimitState
    from modelyard.monitoring.redaction import Redaction
    from modelyard.serving.gateway import Gateway
    from modelyard.serving.guard import Guard, apply_guard, load_guard
    from modelyard.serving.validation import Columns
    from modelyard.workspace import Workspace

    out: dict[str, float] = {}
    ws = Workspace.open(Settings(home=home, auth=True), migrate=False)
    try:
        tokens = Gateway(ws).tokens
        assert tokens is not None
        tokens.put(secret, tokens.load(secret))
        authorization = f"Bearer {secret}".encode()

        def check() -> None:
            found = tokens.get(bearer_secret(authorization))
            assert found is not None and not isinstance(found, str)
            found.require_predict("lr")

        async def awaited(number: int) -> float:
            start = time.perf_counter()
            for _ in range(number):
                (await tokens.identify(authorization)).require_predict("lr")
            return (time.perf_counter() - start) / number * 1e6

        out["token"] = _best(check, 200_000)
        out["token awaited"] = min(asyncio.run(awaited(200_000)) for _ in range(5))
        version = ws.registry.resolve("models:/lr/1")
        guard = load_guard(ws, version)
        if not isinstance(guard, Guard):
            raise RuntimeError(f"models:/lr/1 has no guard: {guard}")
        config = ws.endpoints.get("lr-guard").guard
    finally:
        ws.close()

    def book(*specs: LimitSpec) -> LimitBook:
        made = LimitBook()
        made.apply(LimitState(made.day, list(specs), {}))
        return made

    rate, burst, daily = 1e6, 1_000_000, 10**12
    endpoint = LimitSpec("1", "endpoint:lr", "lr", None, rate, burst, daily)
    token = LimitSpec("2", "token:T", None, "T", rate, burst, daily)
    pair = LimitSpec("3", "token:T/endpoint:lr", "lr", "T", rate, burst, daily)
    caller = Identity(name="app", role=Role.viewer, token_id="T")
    cases = {
        "0": (book(), None),
        "1": (book(endpoint), None),
        "3": (book(endpoint, token, pair), caller),
    }
    for label, (made, who) in cases.items():
        out[f"limits {label}"] = _best(lambda m=made, w=who: m.admit("lr", w).charge(1), 200_000)
    redaction = Redaction({HASHED: "hash"}, REDACTION_KEY.encode())
    data = X.to_numpy()
    for rows in SIZES:  # distinct training rows, as served: some reach a tail
        pool = [Columns(tuple(bench.COLUMNS), np.ascontiguousarray(data[i : i + rows].T))
                for i in range(0, min(len(data), 256 * rows) - rows + 1, rows)]  # fmt: skip
        passes = max(1, 20_000 // rows // len(pool))

        def each(fn: Any, pool: list = pool, passes: int = passes) -> float:
            return _best(lambda: [fn(c) for c in pool], passes) / len(pool)

        out[f"score {rows}"] = each(lambda c, n=rows: guard.score(c, n))
        out[f"guard {rows}"] = each(lambda c, n=rows: apply_guard(config, guard, c, n))
        out[f"redact {rows}"] = each(redaction.apply)
    return out


def _signing(root: Path, info: dict[str, Any], registrations: int = 20) -> dict[str, Any]:
    """Per registration and per load: unsigned vs signed, in two fresh workspaces."""
    from modelyard.client import Client
    from modelyard.config import Settings
    from modelyard.governance.signing import check_signature
    from modelyard.workspace import Workspace

    sides: dict[str, Any] = {}
    for label in ("unsigned", "signed"):
        home = root / f"signing-{label}"
        shutil.rmtree(home, ignore_errors=True)
        ws = Workspace.open(Settings(home=home))
        if label == "signed":
            ws.signing.create_key()
        client = Client(str(home), settings=ws.settings)
        version = client.log_model(info["model"], "lr", input_example=info["X"].head(5))
        client.close()
        sides[label] = (ws, version)
    register: dict[str, list[float]] = {"unsigned": [], "signed": []}
    for i in range(registrations):  # the same manifest registered again: interleaved
        for label in ("unsigned", "signed") if i % 2 == 0 else ("signed", "unsigned"):
            ws, version = sides[label]
            start = time.perf_counter()
            ws.registry.create_version("lr", version.manifest_digest)
            register[label].append((time.perf_counter() - start) * 1000)
    out: dict[str, Any] = {"register": register}
    ws, version = sides["signed"]
    record = ws.signing.signature_of(version)
    if not check_signature(version, record).ok:
        raise RuntimeError(f"the signed side does not verify: {check_signature(version, record)}")
    out["read"] = _best(lambda: ws.signing.signature_of(version), 200)
    out["verify"] = _best(lambda: check_signature(version, record), 200)
    for label, (ws, version) in sides.items():
        ws.signing.local_copy(version)  # fetched once; later loads check the local copy
        out[f"copy {label}"] = _best(lambda w=ws, v=version: w.signing.local_copy(v), 50) / 1000
        out[f"load {label}"] = (
            _best(lambda w=ws, v=version: w.registry.load_model(v), 10, repeat=3) / 1000
        )
        ws.close()
    return out


def _range(values: list[float], fmt: str = "{:.1f}") -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{fmt.format(mid)} ({fmt.format(low)} to {fmt.format(high)})"


def _report(args: argparse.Namespace, served: dict, micro: dict, signing: dict, load: dict) -> str:
    results, m, reg = served["results"], micro, signing["register"]
    served_rows = []
    for config in CONFIGS:
        runs = results[config]
        paired = [x["cpu_us"] - p["cpu_us"] for x, p in zip(runs, results["plain"], strict=True)]
        failed, total = (sum(int(x[k]) for x in runs) for k in ("failed", "requests"))
        served_rows.append(
            [config, _range([x["cpu_us"] for x in runs])]
            + ["" if config == "plain" else _range(paired, "{:+.1f}")]
            + [_range([x[k] for x in runs], f) for k, f in (("rps", "{:,.0f}"), *P_MS)]
            + [f"{failed}/{total}"]
        )
    check_rows = [
        ["auth: cached token (header, sha256, dict lookup, endpoint scope)", "any",
         f"{m['token']:.2f}", f"{m['token awaited']:.2f} awaited, as `Gateway.infer` does"],
    ]  # fmt: skip
    for n, why in (("0", "none set"), ("1", "the endpoint's"), ("3", "token, endpoint, both")):
        check_rows.append([f"limits: `admit` + `charge`, {n} limits", "any",
                           f"{m[f'limits {n}']:.2f}", why])  # fmt: skip
    for rows in SIZES:
        guard, score, redact = (m[f"{k} {rows}"] for k in ("guard", "score", "redact"))
        check_rows += [
            [f"guard: `apply_guard`, flag (score + header), {rows} rows", str(rows),
             f"{guard:.1f}", f"{guard / rows:.3f}/row; `Guard.score` {score:.1f}"],
            [f"redaction: `Redaction.apply`, 1 column hashed, {rows} rows", str(rows),
             f"{redact:.1f}", f"{redact / rows:.2f}/row, in the log's writer thread"],
        ]  # fmt: skip
    sign_rows = [
        ["register a version (`create_version`), unsigned", _range(reg["unsigned"], "{:.2f}")],
        ["register a version, signed", _range(reg["signed"], "{:.2f}")],
        ["read the signature (`signature_of`)", f"{signing['read'] / 1000:.3f}"],
        ["verify it (`check_signature`: payload + Ed25519)", f"{signing['verify'] / 1000:.3f}"],
        ["checked local copy (`local_copy`), unsigned", f"{signing['copy unsigned']:.2f}"],
        ["checked local copy, signed", f"{signing['copy signed']:.2f}"],
        ["whole load (`registry.load_model`), unsigned", f"{signing['load unsigned']:.1f}"],
        ["whole load, signed", f"{signing['load signed']:.1f}"],
    ]
    w, la = args.workers, {k: " ".join(f"{x:.2f}" for x in v) for k, v in load.items()}
    lines = [
        SECTION,
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; `python bench/serving/governance_cost.py --rounds "
        f"{args.rounds} --duration {args.duration:g} --rows {args.rows} --connections "
        f"{args.connections} --workers {w}`.",
        "",
        "- One workspace (model `lr` of run.py; its reference profile from the 2,000 training "
        "rows), an endpoint per configuration on `models:/lr@champion`, and six `modelyard "
        f"serve --workers {w}`, one per configuration, running side by side, one under load at "
        "a time. plain: `lr`, auth off; auth: `lr`, `MODELYARD_AUTH=true`, a token limited to "
        f"`lr` and `lr-all`; limits: `limits set {' '.join(LIMIT)}` (never refuses); guard: "
        f"`endpoints guard --policy flag`; redact: `endpoints redact --hash {HASHED}`; all: "
        "auth + limits + guard + redact. MODELYARD_REDACTION_KEY is set for every server.",
        f"- Identical requests: MLflow `dataframe_split` of {args.rows} row(s) cycled from "
        f"{256 if args.rows == 1 else 64} distinct bodies, the same `Authorization` header "
        f"(ignored with auth off), {args.connections} keep-alive connections from one asyncio "
        f"process on 127.0.0.1 ({served['client_cores']:.2f} cores on average; the six "
        f"servers idle before the rounds: {served['idle_cores']:.2f} cores together).",
        f"- {args.rounds} rounds, the order rotated each round; {args.duration:g} s each after "
        "1 s warm-up; medians over rounds (range). CPU = the server's process tree per answered "
        "request; Δ = the configuration minus `plain` in the same round, median (range).",
        f"- Load average before: {la['before']}; after the served rounds: {la['after']}.",
        "",
        md_table(["config", "server CPU µs/req", "Δ vs plain µs/req", "req/s", "p50 ms",
                  "p99 ms", "non-200"], served_rows),
        "",
        "The machine is shared: a Δ within the rounds' range is noise. The checks themselves, "
        "in-process (`timeit`, best of 5, µs per call; guard and redaction averaged over "
        "distinct training rows, 256 single rows or chunks of 100 and 1000). A hot loop is a "
        "floor: in the request path, among the rest of the gateway's work, the same calls "
        "cost more (compare Δ above).",
        "",
        md_table(["check per request", "rows", "µs", "notes"], check_rows),
        "",
        "Signing, per registration and per load, never per request (a small model, SQLite, two "
        f"fresh workspaces, one with a key; registrations: median of {len(reg['signed'])}, "
        "interleaved (range); the rest: best of 3 to 5; ms):",
        "",
        md_table(["per registration / per load", "ms"], sign_rows),
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--rows", type=int, default=1, choices=(1, 100), help="rows per request")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1, help="gateway processes, every server")
    ap.add_argument("--workdir", default=None, help="keeps the prepared workspace")
    ap.add_argument("--write", action="store_true", help=f"replace {SECTION!r} in RESULTS.md")
    args = ap.parse_args(argv)
    args.root = Path(args.workdir or tempfile.mkdtemp(prefix="governance-cost-"))
    args.root.mkdir(parents=True, exist_ok=True)
    info = bench.make_models(args.root, ["lr"])["lr"]
    ns = argparse.Namespace(workers=args.workers)
    adapters = {c: Adapter("lr", info, args.root / "modelyard-lr", ns) for c in CONFIGS}
    for config in WITH_AUTH:
        adapters[config].auth = True
    secret = _prepare(adapters["plain"], info)
    load = {"before": os.getloadavg()}
    served = _served(args, adapters, secret, info["X"])
    load["after"] = os.getloadavg()
    micro = _in_process(adapters["plain"].home, secret, info["X"])
    signing = _signing(args.root, info)
    section = _report(args, served, micro, signing, load)
    print(section)
    if args.write:
        write_results(SECTION, section, replaces=REPLACES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
