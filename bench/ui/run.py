#!/usr/bin/env python3
"""Dashboard benchmark (issue #19): every /ui page with 1,000 versions, 10,000 runs and a day
of predictions, timed over HTTP on 127.0.0.1; MLflow's server answering its UI's data
requests for the same volumes beside it.

    python bench/ui/seed.py            # once (~5 min): bench/ui/.data/home
    python bench/ui/run.py             # ~1 min (the first run seeds MLflow: ~12 min); --quick

What it does:

1. Tops up the seeded prediction log until now (seed.top_up), so "the last hour" and "the last
   day" of the monitoring pages hold traffic however old the seed is.
2. Starts ``modelyard server --workers 1`` (the control plane, which serves /ui; its monitor
   loop runs too, as for a user) on the seeded home, and, unless ``--no-mlflow``,
   ``mlflow server --workers 1`` on a database seeded with the same volumes
   (bench/ui/mlflow_seed.py, cached in bench/ui/.data/mlflow; MLflow from bench/.venv-mlflow,
   see bench/setup.sh).
3. Finds the dashboard's pages in its route table (modelyard.ui.pages.ROUTERS) and fills
   their path parameters from the seed (model ``fraud``, its champion version, experiment
   ``sweep``, a run, ...). A page of the list below with no route is reported "not built":
   other pages are being written, and re-running fills them in. Routes that are not on the
   list are measured too ("extra" rows) when their parameters can be filled.
4. Per page: 2 warm-up requests, then ``--rounds`` rounds; in each round every page once
   (modelyard pages and MLflow requests interleaved, the order rotated each round), one
   request at a time on a keep-alive connection. Time = the client's total time for the whole
   answer on loopback (no server-timing header was found; if a page sends one, its median is
   shown too); server CPU = CPU time of the server's processes during the request. Median
   and p95 over rounds; size = the HTML body in KB (uncompressed). Goal: median < 300 ms.

Results: a table on stdout, bench/ui/.data/results.json, and the ``## dashboard`` section of
bench/RESULTS.md. bench/ui/page_profile.py explains a slow page (SQL statements and functions).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
REPO = BENCH.parent
DATA = HERE / ".data"
MLFLOW_VENV = BENCH / ".venv-mlflow"
SECTION = "## dashboard"
NONE = "-"
GOAL_MS = 300.0

sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(HERE))
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))
import common  # noqa: E402
from common import Server, descendants, free_port, log, md_table  # noqa: E402

common.TAG = "ui"

# The pages issue #19 names, in order: key, what the row shows, a pattern of the route's path
# (relative to /ui) and the query a page needs. The first route matching a pattern is used.
_P = r"\{[^}/]+\}"
PAGES: list[tuple[str, str, str, dict[str, str]]] = [
    ("home", "endpoints, last hour, alerts, rollouts, runs, approvals", r"^/$", {}),
    ("models", "model list (6 models)", r"^/models$", {}),
    ("model", "model with {versions:,} versions (50 a page)", rf"^/models/{_P}$", {}),
    ("version", "its champion version", rf"^/models/{_P}/(versions/)?{_P}$", {}),
    ("dataset", "training dataset", rf"^/datasets/{_P}/{_P}$", {}),
    ("experiments", "experiment list", r"^/experiments$", {}),
    ("experiment", "experiment with {runs:,} runs (50 a page)", rf"^/experiments/{_P}$", {}),
    ("run", "one run (5 params, 5 metrics, 2 over 10 steps)",
     rf"^(/experiments/{_P})?/runs/{_P}$", {}),
    ("compare", "3 runs side by side", r"compare", {}),
    ("endpoint", "endpoint fraud ({requests:,} logged requests)", rf"^/endpoints/{_P}$", {}),
    ("endpoint live", "its live fragment (htmx)",
     rf"^/endpoints/{_P}/(live|charts?|stats|metrics|fragment)", {}),
    ("monitoring", "monitoring of fraud", r"^/monitoring$", {"endpoint": "fraud"}),
    ("monitoring performance", "its performance section (htmx, after the page): a day of labels",
     r"^/monitoring/performance$", {"endpoint": "fraud", "window": "3600"}),
    ("pipelines", "pipeline runs", r"^/pipelines$", {}),
    ("pipeline run", "a run's DAG, steps, logs", rf"^/pipelines/(runs/{_P}|{_P}/runs/{_P})$", {}),
    ("approvals", "pending approvals", r"^/approvals$", {}),
    ("audit", "audit log ({audit_records:,} records)", r"^/audit$", {}),
]  # fmt: skip
SKIP_ROUTES = re.compile(r"^/(login|logout|static)")
HX_PATHS = re.compile(r"live|fragment|chart|stats|poll|performance", re.I)
ULID = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b")


@dataclass
class Target:
    """One thing to time: a modelyard page or an MLflow request (or several, summed)."""

    key: str
    what: str
    system: str  # "modelyard" | "mlflow"
    requests: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    route: str = ""
    note: str = ""  # why it is not measured ("not built", "no value for {x}")
    extra: bool = False
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    server_timing: list[float] = field(default_factory=list)
    status: int | None = None
    size: int = 0

    @property
    def measured(self) -> bool:
        return bool(self.requests) and not self.note


# --- the seed ---------------------------------------------------------------------------


def load_seed(home: Path, database_url: str | None, top_up: bool) -> dict[str, Any]:
    marker = home / "seed.json"
    if not marker.exists():
        raise SystemExit(f"{home} is not seeded: run python bench/ui/seed.py first")
    if top_up:
        import seed

        info = seed.top_up(home, database_url)
    else:
        info = json.loads(marker.read_text())
    # names the routes need that seed.json keeps as ids
    from modelyard.config import Settings
    from modelyard.workspace import Workspace

    ws = Workspace.open(Settings(home=home, database_url=database_url), migrate=False)
    try:
        training = next(d for d in info["datasets"] if d["role"] == "training")
        ds = ws.tracking.get_dataset_by_id(training["dataset_id"])
        info["dataset"] = {"name": ds.name, "version": ds.version}
        pending = [a.id for a in ws.approvals.list(status="pending", limit=5)]
        info["pending_approval"] = pending[0] if pending else info["approvals"][0]
        info["audit_records"] = _count_audit(ws)
    finally:
        ws.close()
    return info


def _count_audit(ws: Any) -> int:
    from sqlalchemy import text

    with ws.store.read() as s:
        return int(s.execute(text("select count(*) from audit_log")).scalar() or 0)


# --- modelyard's pages --------------------------------------------------------------------


def ui_routes() -> list[Any]:
    """The dashboard's GET routes, as the server will have them (same source tree)."""
    from modelyard.ui.pages import ROUTERS

    out = []
    for router in ROUTERS:
        for route in router.routes:
            if "GET" in getattr(route, "methods", set()) and not SKIP_ROUTES.search(route.path):
                out.append(route)
    return out


def param_value(template: str, name: str, prev: str, info: dict[str, Any]) -> str | None:
    """The seeded value for path parameter ``name`` that follows segment ``prev``."""
    area = template.strip("/").split("/")[0]
    n = name.lower()
    pipeline_runs = info["pipeline_runs"]
    if area == "pipelines" and (prev == "runs" or "run" in n or n == "id"):
        return pipeline_runs[-1]
    if area == "datasets":
        return str(info["dataset"]["version"]) if "version" in n else info["dataset"]["name"]
    if "version" in n or prev == "versions":
        return str(info["champion"])
    if prev == "steps" or "step" in n:
        return "train"
    if prev in ("models",) or n in ("model", "model_name"):
        return info["model"]
    if prev == "experiments" or "experiment" in n:
        return info["experiment"]
    if prev == "runs" or n in ("run", "run_id"):
        return info["run_ids"][0]
    if prev in ("endpoints", "monitoring") or "endpoint" in n:
        return info["endpoint"]
    if prev == "pipelines" or "pipeline" in n:
        return "fraud-retrain"
    if prev == "approvals" or "approval" in n:
        return info["pending_approval"]
    if prev == "alerts" or "alert" in n:
        return info["alerts"][0] if info.get("alerts") else None
    if n in ("name", "id"):
        by_area = {"models": info["model"], "experiments": info["experiment"],
                   "endpoints": info["endpoint"], "runs": info["run_ids"][0],
                   "approvals": info["pending_approval"]}  # fmt: skip
        return by_area.get(area)
    return None


def query_values(route: Any, info: dict[str, Any], wanted: dict[str, str]) -> tuple[list, str]:
    """Query parameters for ``route``: the page's own (``wanted``), three run ids for a
    compare page, the endpoint where one is asked for; a required one we cannot fill is a note."""
    pairs: list[tuple[str, str]] = list(wanted.items())
    note = ""
    for f in getattr(route.dependant, "query_params", []):
        name = getattr(f, "alias", None) or f.name
        if name in wanted:
            continue
        annotation = getattr(getattr(f, "field_info", None), "annotation", None)
        is_list = typing.get_origin(annotation) is list or (
            typing.get_origin(annotation)
            in (typing.Union, getattr(__import__("types"), "UnionType", None))
            and any(typing.get_origin(a) is list for a in typing.get_args(annotation))
        )
        low = name.lower()
        if "compare" in route.path and ("run" in low or low in ("ids", "id", "r")):
            ids = info["run_ids"][:3]
            pairs += [(name, i) for i in ids] if is_list else [(name, ",".join(ids))]
        elif "endpoint" in low:
            pairs.append((name, info["endpoint"]))
        elif getattr(f, "required", False):
            note = f"needs query {name}"
    return pairs, note


def plan_pages(info: dict[str, Any]) -> list[Target]:
    routes = ui_routes()
    used: set[str] = set()
    targets: list[Target] = []

    def build(key: str, what: str, route: Any, wanted: dict[str, str], extra: bool) -> Target:
        t = Target(key, what, "modelyard", route=route.path, extra=extra)
        path = route.path
        segments = path.strip("/").split("/")
        values = {}
        for i, seg in enumerate(segments):
            m = re.fullmatch(r"\{([^}:]+)(:[^}]*)?\}", seg)
            if not m:
                continue
            prev = segments[i - 1] if i else ""
            value = param_value(path, m.group(1), prev, info)
            if value is None:
                t.note = f"no value for {{{m.group(1)}}}"
                return t
            values[m.group(1)] = value
        url = path
        for name, value in values.items():
            url = re.sub(r"\{" + re.escape(name) + r"(:[^}]*)?\}", value, url)
        pairs, note = query_values(route, info, wanted)
        if note:
            t.note = note
            return t
        url = "/ui" + (url if url != "/" else "/") + (f"?{urlencode(pairs)}" if pairs else "")
        t.requests = [("GET", url, None)]
        if HX_PATHS.search(path):
            t.headers = {"hx-request": "true"}
        return t

    for key, what, pattern, wanted in PAGES:
        route = next((r for r in routes if re.search(pattern, r.path) and r.path not in used),
                     None)  # fmt: skip
        if route is None:
            targets.append(Target(key, what.format(**info), "modelyard", note="not built"))
            continue
        used.add(route.path)
        targets.append(build(key, what.format(**info), route, wanted, extra=False))
    for route in routes:
        if route.path in used:
            continue
        used.add(route.path)
        targets.append(build(route.path, "", route, {}, extra=True))
    return targets


# --- MLflow's side ------------------------------------------------------------------------


def mlflow_targets(ml: dict[str, Any]) -> list[Target]:
    """The data requests MLflow's UI makes for the same views (it renders them in the
    browser: these are the server's part only). Keys pair with modelyard's rows."""
    api = "/ajax-api/2.0/mlflow"
    exp = ml["experiment_id"]
    runs = ml["runs"]

    def search(n: int) -> dict[str, Any]:
        return {"experiment_ids": [exp], "max_results": n, "run_view_type": "ACTIVE_ONLY",
                "order_by": ["attributes.start_time DESC"]}  # fmt: skip

    versions = {"filter": "name='fraud'", "order_by": ["version_number DESC"]}

    def first(n: int) -> str:
        return urlencode({**versions, "max_results": n}, doseq=True)

    return [
        Target("models", "registered-models/search, 25", "mlflow",
               [("GET", f"{api}/registered-models/search?max_results=25", None)]),
        Target("model", "registered-models/get + model-versions/search, 25 of 1,000 (its UI's "
               "default page)", "mlflow",
               [("GET", f"{api}/registered-models/get?name=fraud", None),
                ("GET", f"{api}/model-versions/search?{first(25)}", None)]),
        Target("model/50", "registered-models/get + model-versions/search, 50 of 1,000",
               "mlflow",
               [("GET", f"{api}/registered-models/get?name=fraud", None),
                ("GET", f"{api}/model-versions/search?{first(50)}", None)]),
        Target("model/100", "model-versions/search, 100 of 1,000", "mlflow",
               [("GET", f"{api}/model-versions/search?{first(100)}", None)]),
        Target("experiments", "experiments/search, 25", "mlflow",
               [("POST", f"{api}/experiments/search", {"max_results": 25})]),
        Target("experiment", "runs/search, first 50 of 10,000", "mlflow",
               [("POST", f"{api}/runs/search", search(50))]),
        Target("experiment/100", "runs/search, first 100 of 10,000", "mlflow",
               [("POST", f"{api}/runs/search", search(100))]),
        Target("run", "runs/get + metrics/get-history (loss)", "mlflow",
               [("GET", f"{api}/runs/get?run_id={runs[0]}", None),
                ("GET", f"{api}/metrics/get-history?run_id={runs[0]}&metric_key=loss", None)]),
        Target("compare", "runs/get x3", "mlflow",
               [("GET", f"{api}/runs/get?run_id={r}", None) for r in runs[:3]]),
    ]  # fmt: skip


def ensure_mlflow_seed(info: dict[str, Any]) -> dict[str, Any]:
    folder = DATA / "mlflow"
    marker = folder / "seed.json"
    if marker.exists():
        ml = json.loads(marker.read_text())
        if ml["versions"] == info["versions"] and ml["n_runs"] == info["runs"]:
            return ml
    python = MLFLOW_VENV / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} missing: run bash bench/setup.sh mlflow (or --no-mlflow)")
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    runs = info["runs"]
    log(f"seeding MLflow with {runs} runs and {info['versions']} versions (once; ~5 min)")
    t0 = time.perf_counter()
    out = subprocess.run(
        [str(python), str(HERE / "mlflow_seed.py"), "--db", str(folder / "mlflow.db"),
         "--artifacts", str(folder / "artifacts"), "--versions", str(info["versions"]),
         "--runs", str(runs)],
        check=True, stdout=subprocess.PIPE, text=True, env=_mlflow_env(),
    )  # fmt: skip
    ml = json.loads(out.stdout.strip().splitlines()[-1])
    ml["seed_s"] = round(time.perf_counter() - t0, 1)
    marker.write_text(json.dumps(ml, indent=2))
    return ml


def _mlflow_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{MLFLOW_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    return env


# --- servers and timing -------------------------------------------------------------------


def wait_up(server: Server, url: str, timeout: float = 120) -> float:
    t0 = time.monotonic()
    with httpx.Client(timeout=5) as c:
        while True:
            if not server.alive():
                tail = server.log_path.read_text(errors="replace")[-2000:]
                raise SystemExit(f"{server.name} exited during start-up:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if c.get(url).status_code == 200:
                    return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise SystemExit(f"{server.name} not up after {timeout:.0f}s: {server.log_path}")
            time.sleep(0.25)


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of every thread of ``pids`` (schedstat: nanoseconds, not 10 ms ticks)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
    return total / 1e9


def server_timing(header: str | None) -> float | None:
    if not header:
        return None
    durs = [float(m) for m in re.findall(r"dur=([0-9.]+)", header)]
    return sum(durs) if durs else None


def hit(c: httpx.Client, t: Target, pids: list[int]) -> None:
    """One timed visit: every request of ``t`` in turn."""
    cpu0 = cpu_seconds(pids)
    elapsed = 0.0
    timing = 0.0
    size = 0
    status = 200
    for method, url, body in t.requests:
        t0 = time.perf_counter()
        r = c.request(method, url, json=body, headers=t.headers)
        content = r.content
        elapsed += time.perf_counter() - t0
        size += len(content)
        if r.status_code != 200:
            status = r.status_code
        st = server_timing(r.headers.get("server-timing"))
        if st is not None:
            timing += st
    t.times.append(elapsed * 1000)
    t.cpu.append((cpu_seconds(pids) - cpu0) * 1000)
    if timing:
        t.server_timing.append(timing)
    t.status, t.size = status, size


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))] if s else float("nan")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- main ---------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", type=Path, default=DATA / "home")
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="5 rounds")
    ap.add_argument("--no-mlflow", action="store_true")
    ap.add_argument("--no-top-up", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="do not touch bench/RESULTS.md")
    args = ap.parse_args()
    rounds = 5 if args.quick else args.rounds
    home = args.home.resolve()
    started = dt.datetime.now()
    load_before = loadavg()

    info = load_seed(home, args.database_url, top_up=not args.no_top_up)
    targets = plan_pages(info)
    ml_targets: list[Target] = []
    ml: dict[str, Any] = {}
    if not args.no_mlflow:
        ml = ensure_mlflow_seed(info)
        ml_targets = mlflow_targets(ml)

    servers: list[Server] = []
    try:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
        env["MODELYARD_HOME"] = str(home)
        if args.database_url:
            env["MODELYARD_DATABASE_URL"] = args.database_url
        env["PYTHONPATH"] = os.pathsep.join(
            x for x in (str(REPO / "src"), env.get("PYTHONPATH")) if x
        )
        my = Server("modelyard", [sys.executable, "-m", "modelyard", "server", "--workers", "1",
                                  "--host", "127.0.0.1", "--port", str(port)],
                    env, DATA / "logs" / "modelyard.log")  # fmt: skip
        my.start()
        servers.append(my)
        my_url = f"http://127.0.0.1:{port}"
        up = wait_up(my, my_url + "/api/v1/health")
        log(f"modelyard up after {up:.1f}s")
        ml_url = ""
        ml_server = None
        if ml_targets:
            mport = free_port()
            cmd = [str(MLFLOW_VENV / "bin" / "mlflow"), "server", "--backend-store-uri",
                   f"sqlite:///{DATA / 'mlflow' / 'mlflow.db'}", "--default-artifact-root",
                   str(DATA / "mlflow" / "artifacts"), "--host", "127.0.0.1", "--port",
                   str(mport), "--workers", "1"]  # fmt: skip
            ml_server = Server("mlflow", cmd, _mlflow_env(), DATA / "logs" / "mlflow.log")
            ml_server.start()
            servers.append(ml_server)
            ml_url = f"http://127.0.0.1:{mport}"
            log(f"mlflow up after {wait_up(ml_server, ml_url + '/health', 180):.1f}s")
        time.sleep(2)  # let both settle (imports in worker processes)
        my_pids = descendants(my.proc.pid) if my.proc else []
        ml_pids = descendants(ml_server.proc.pid) if ml_server and ml_server.proc else []

        live = [t for t in targets if t.measured]
        with httpx.Client(base_url=my_url, timeout=120) as c, \
                httpx.Client(base_url=ml_url or my_url, timeout=120) as m:  # fmt: skip
            for t in live:
                for _ in range(2):
                    hit(c, t, my_pids)
                t.times.clear(), t.cpu.clear(), t.server_timing.clear()
                if t.status == 404:
                    t.note = "404 (route exists: seeded values?)"
            for t in ml_targets:
                for _ in range(2):
                    hit(m, t, ml_pids)
                t.times.clear(), t.cpu.clear()
            live = [t for t in live if not t.note]
            log(f"timing {len(live)} pages + {len(ml_targets)} MLflow requests x {rounds} rounds")
            for r in range(rounds):
                order = live[r % max(len(live), 1) :] + live[: r % max(len(live), 1)]
                sides = [(c, order, my_pids), (m, ml_targets, ml_pids)]
                if r % 2:
                    sides.reverse()
                for client, group, pids in sides:
                    for t in group:
                        hit(client, t, pids)
                if r % 5 == 4:
                    log(f"  round {r + 1}/{rounds}")
    finally:
        for s in servers:
            s.stop()
    load_after = loadavg()
    report(info, ml, targets, ml_targets, rounds, started, load_before, load_after, args)


def verdict_of(median_ms: float, status: int | None) -> str:
    if status is not None and 300 <= status < 400:
        return "(a redirect)"
    return "yes" if median_ms < GOAL_MS and status == 200 else "**no**"


def fmt(x: float) -> str:
    return NONE if x != x else (f"{x:,.0f}" if x >= 100 else f"{x:.1f}")


def report(
    info: dict[str, Any],
    ml: dict[str, Any],
    targets: list[Target],
    ml_targets: list[Target],
    rounds: int,
    started: dt.datetime,
    load_before: str,
    load_after: str,
    args: argparse.Namespace,
) -> None:
    head = ["page", "what", "path", "status", "median ms", "p95 ms", "server CPU ms",
            "KB", "< 300 ms"]  # fmt: skip
    history = _history()  # earlier runs' medians and ratios, newest last
    rows = []
    results = []
    for t in targets:
        path = t.requests[0][1] if t.requests else (t.route and f"/ui{t.route}") or ""
        shown = ULID.sub(lambda m: m[0][:8] + "..", path)
        if not t.times:
            verdict = "not built" if t.note == "not built" else NONE
            rows.append([t.key, t.what, f"`{shown}`" if shown else "", t.note or "?",
                         "", "", "", "", verdict])  # fmt: skip
            results.append({"key": t.key, "path": path, "note": t.note})
            continue
        med, p95 = statistics.median(t.times), pct(t.times, 0.95)
        cpu = statistics.median(t.cpu)
        st = f" (server-timing {statistics.median(t.server_timing):.1f})" if t.server_timing else ""
        rows.append([t.key + (" (extra)" if t.extra else ""), t.what, f"`{shown}`",
                     str(t.status), fmt(med) + st, fmt(p95), fmt(cpu), f"{t.size / 1024:,.1f}",
                     verdict_of(med, t.status)])  # fmt: skip
        results.append({"key": t.key, "path": path, "status": t.status, "median_ms": med,
                        "p95_ms": p95, "cpu_ms": cpu, "kb": t.size / 1024, "times": t.times,
                        "server_timing": t.server_timing})  # fmt: skip
    table = md_table(head, rows)

    peer = ""
    ratios: dict[str, float] = {}
    if ml_targets:
        by_key = {t.key: t for t in targets if t.times}
        phead = ["view", "modelyard page (HTML, rendered)", "modelyard median ms",
                 "MLflow server requests (JSON; the browser renders)", "MLflow median ms",
                 "MLflow p95 ms", "MLflow server CPU ms", "KB", "modelyard ÷ MLflow"]  # fmt: skip
        prows = []
        for t in ml_targets:
            base = t.key.split("/")[0]
            mine = by_key.get(base)
            med = statistics.median(t.times) if t.times else float("nan")
            my_med = statistics.median(mine.times) if mine else float("nan")
            ratio = f"{my_med / med:.2f}x" if mine and med else NONE
            before = [h["ratios"][t.key] for h in history if t.key in h.get("ratios", {})]
            if before:
                ratio += f" (earlier: {', '.join(f'{r:.2f}x' for r in before[-2:])})"
            if mine and med:
                ratios[t.key] = my_med / med
            page = ULID.sub(lambda m: m[0][:8] + "..", mine.requests[0][1]) if mine else ""
            prows.append([t.key, page or "not built", fmt(my_med),
                          t.what, fmt(med), fmt(pct(t.times, 0.95)),
                          fmt(statistics.median(t.cpu)) if t.cpu else NONE,
                          f"{t.size / 1024:,.1f}", ratio])  # fmt: skip
            results.append({"key": f"mlflow:{t.key}", "median_ms": med, "times": t.times,
                            "cpu_ms": statistics.median(t.cpu) if t.cpu else None,
                            "kb": t.size / 1024})  # fmt: skip
        peer = md_table(phead, prows)

    over = [r for r in results if r.get("median_ms", 0) >= GOAL_MS and "mlflow:" not in r["key"]]
    over_text = []
    for r in over:
        before = [h["medians"][r["key"]] for h in history if r["key"] in h.get("medians", {})]
        earlier = f"; earlier runs {', '.join(fmt(b) for b in before[-2:])}" if before else ""
        over_text.append(f"{r['key']} ({fmt(r['median_ms'])} ms{earlier})")
    built = [t for t in targets if t.times and not t.extra]
    missing = [t.key for t in targets if t.note == "not built"]
    mlver = _mlflow_version() if ml_targets else ""
    import modelyard

    quick = " --quick" if args.quick else ""
    lines = [
        SECTION,
        "",
        f"{started:%Y-%m-%d %H:%M}; {os.cpu_count()} cores ({platform.machine()}), "
        f"Python {platform.python_version()}; `python bench/ui/run.py{quick}` "
        f"({rounds} rounds).",
        "",
        f"- Data (bench/ui/seed.py, SQLite): model `fraud` with {info['versions']:,} versions "
        f"(+5 small models), experiment `sweep` with {info['runs']:,} runs "
        f"(5 params, 3 final metrics, 2 metrics over 10 steps), endpoint `fraud` with "
        f"{info['requests']:,} logged requests over the last day and more (1 req/s, one log "
        f"segment per 5 s as the gateway writes them: {info['segments']:,} segments), "
        f"{info.get('labelled', 0):,} labels, the monitor's 5-min/hour/day windows closed, "
        f"alerts, 5 pipeline runs, 4 approvals, {info.get('audit_records', 0):,} audit records. "
        f"Seeding took {info['timings']['total']:.0f} s "
        f"({info['s_per_version'] * 1000:.1f} ms per version through "
        f"`registry.create_version`, {info['s_per_run'] * 1000:.1f} ms per run: start_run + "
        f"log_metrics + end_run; monitor catch-up over the day "
        f"{info['timings'].get('monitor pass', 0):.0f} s).",
        f"- Server: `modelyard server --workers 1` (modelyard {modelyard.__version__}; its "
        f"monitor loop on, as for a user), auth off, on 127.0.0.1. One client, one request at "
        f"a time on a keep-alive connection; 2 warm-ups per page, then {rounds} rounds, every "
        f"page once per round (order rotated; MLflow's requests interleaved). **Time = the "
        f"client's total for the whole answer on loopback** (the pages send no server-timing "
        f"header); server CPU = CPU time of the server's processes during the request "
        f"(less sensitive to the other sessions sharing the 2 cores). KB = HTML body.",
        f"- Load average before: {load_before}; after: {load_after} (the machine is shared).",
        f"- Goal (issue #19): every page under {GOAL_MS:.0f} ms. "
        + (f"Over it: {', '.join(over_text)}. " if over else
           f"All {len(built)} measured pages meet it. ")
        + (f"Not built yet (404 when this ran): {', '.join(missing)}." if missing else ""),
        "",
        table,
    ]  # fmt: skip
    if peer:
        lines += [
            "",
            f"MLflow {mlver} (`mlflow server --workers 1`, SQLite, seeded with the same volumes "
            f"by bench/ui/mlflow_seed.py in {ml.get('seed_s', 0):.0f} s): MLflow's UI is a "
            "React app that renders in the browser, so its server's part of a view is the "
            "JSON its UI asks for (the requests below, as its bundle sends them; a row with "
            "several requests sums them). modelyard's figure is the whole rendered page: the "
            "comparison favours MLflow by the browser's rendering and by the page content "
            "modelyard adds (charts, aliases, lineage).",
            "",
            peer,
        ]
    lines += ["", "Where the time goes in the slow pages: bench/ui/NOTES.md."]
    section = "\n".join(lines) + "\n"
    print("\n" + section)
    (DATA / "results.json").write_text(json.dumps({"started": started.isoformat(),
                                                     "results": results}, indent=1))  # fmt: skip
    medians = {r["key"]: r["median_ms"] for r in results
               if r.get("median_ms") and not r["key"].startswith("mlflow:")}  # fmt: skip
    with (DATA / "history.jsonl").open("a") as f:
        f.write(
            json.dumps(
                {
                    "started": started.isoformat(),
                    "rounds": rounds,
                    "medians": medians,
                    "ratios": ratios,
                }
            )
            + "\n"
        )
    if not args.no_write:
        common.write_results(SECTION, section)
        log("wrote bench/RESULTS.md (## dashboard)")


def _history() -> list[dict[str, Any]]:
    """Earlier runs' page medians and MLflow ratios (bench/ui/.data/history.jsonl)."""
    path = DATA / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _mlflow_version() -> str:
    out = subprocess.run([str(MLFLOW_VENV / "bin" / "mlflow"), "--version"], capture_output=True,
                         text=True, env=_mlflow_env())  # fmt: skip
    return out.stdout.strip().split()[-1] if out.returncode == 0 else "?"


if __name__ == "__main__":
    main()
