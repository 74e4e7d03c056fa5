"""What the benchmark harnesses share: process trees from /proc, servers, result files.

Each harness sets ``TAG`` (its log prefix) and calls :func:`write_results` with its own
section of bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"
TAG = "bench"


def log(msg: str) -> None:
    print(f"[{TAG} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_table() -> dict[int, tuple[int, float, int]]:
    """pid -> (ppid, cpu seconds, rss bytes) for every process, from /proc/<pid>/stat."""
    out: dict[int, tuple[int, float, int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                raw = f.read().decode(errors="replace")
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2 :].split()
        # fields after the name: state(0) ppid(1) ... utime(11) stime(12) ... rss(21, pages)
        if rest[0] == "Z":
            continue
        out[int(d)] = (
            int(rest[1]),
            (int(rest[11]) + int(rest[12])) / CLK_TCK,
            int(rest[21]) * PAGE,
        )
    return out


def descendants(root: int, table: dict | None = None) -> list[int]:
    table = table if table is not None else _proc_table()
    children: dict[int, list[int]] = {}
    for pid, row in table.items():
        children.setdefault(row[0], []).append(pid)
    out, stack = [], [root]
    while stack:
        p = stack.pop()
        if p in table:
            out.append(p)
        stack.extend(children.get(p, []))
    return out


def tree_snapshot(root: int) -> dict[int, tuple[float, int]]:
    """pid -> (cpu seconds, rss bytes) for the live processes of the tree under ``root``."""
    table = _proc_table()
    return {p: (table[p][1], table[p][2]) for p in descendants(root, table)}


def tree_pss(root: int) -> int:
    """Proportional set size in bytes of the live processes of the tree under ``root``.

    The sum of ``Pss:`` from /proc/<pid>/smaps_rollup: a page shared by k processes counts
    1/k in each, so the pages a forked worker shares with its parent count once over the
    tree, where summed RSS counts them once per process. (Pages shared with processes outside
    the tree, libc and the like, count only their share.) A process that exits meanwhile is
    left out.
    """
    total = 0
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
                for line in f:
                    if line.startswith(b"Pss:"):
                        total += int(line.split()[1]) * 1024  # kB
                        break
        except (OSError, ValueError, IndexError):
            continue
    return total


def proc_label(pid: int) -> str:
    """A short name for a process, from its command line."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    argv = [a for a in argv if a]
    if not argv:
        return "?"
    joined = " ".join(argv)
    for key, name in (
        ("multiprocessing.spawn", "mp-worker"),
        ("multiprocessing.fork", "mp-worker"),
        ("resource_tracker", "mp-tracker"),
        ("_bentoml_impl.worker", "bento-worker"),
        ("circus", "bento-arbiter"),
    ):
        if key in joined:
            return name
    skip_next = False
    for a in argv:
        base = os.path.basename(a)
        if skip_next:
            return base[:24]
        if base.startswith("python") or base in ("env",):
            continue
        if a in ("-m", "-c"):
            skip_next = a == "-m"
            if a == "-c":
                return "python-c"
            continue
        if a.startswith("-"):
            continue
        return base[:24]
    return os.path.basename(argv[0])[:24]


@dataclass
class Server:
    name: str
    cmd: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path | None = None
    proc: subprocess.Popen | None = None
    started: float = 0.0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = open(self.log_path, "wb")  # noqa: SIM115 - kept open for the process' life
        log(f"starting {self.name}: {shlex.join(self.cmd)}  (log: {self.log_path})")
        self.started = time.monotonic()
        # Own session: Ctrl-C in the terminal reaches only this script, which stops it.
        self.proc = subprocess.Popen(
            self.cmd,
            env=self.env,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.cwd,
        )
        logf.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 15.0) -> None:
        if self.proc is None:
            return
        p, self.proc = self.proc, None
        pids = descendants(p.pid)
        log(f"stopping {self.name} (pid {p.pid}, {len(pids)} processes)")
        # SIGTERM to the group and, for processes that left it (BentoML's workers), to the
        # parent only via the group: the parent shuts its workers down itself.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            log(f"{self.name} ignored SIGTERM for {grace:.0f}s: killing")
        # Anything of the tree still alive (its own group, or one that left it) is killed.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(x) for x in pids):
            time.sleep(0.2)
        for x in pids:
            if _alive(x):
                log(f"  killing leftover pid {x} ({proc_label(x)})")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(x, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            p.wait(5)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b") ")[-1][:1] != b"Z"
    except OSError:
        return False


def md_table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(x.replace("|", "\\|") for x in r) + " |" for r in rows]
    return "\n".join(out)


async def _keepalive_connection(
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
            await reader.readexactly(int(head[at : head.index(b"\r\n", at)]))
            latencies.append(time.perf_counter() - start)
            if head[9:12] != b"200":
                failed.append(int(head[9:12]))
    finally:
        writer.close()


def keepalive_load(
    port: int, requests: list[bytes], seconds: float, connections: int
) -> dict[str, float]:
    """Send ``requests`` (whole raw HTTP/1.1 requests, cycled from a random start) to
    127.0.0.1:``port`` over ``connections`` keep-alive connections for ``seconds``, from an
    asyncio client in this process (uvloop when installed; wrk is not required).

    Returns the answered requests, the non-200 among them, req/s, and p50/p99 latency in ms.
    """
    latencies: list[float] = []
    failed: list[int] = []

    async def main() -> None:
        until = time.monotonic() + seconds
        await asyncio.gather(
            *(
                _keepalive_connection(port, requests, until, latencies, failed)
                for _ in range(connections)
            )
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


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat.

    busy is user + nice + system + irq + softirq over all cores; steal is the time the
    hypervisor ran something else while this VM wanted the CPU. Differences over a run show
    what the processes a benchmark watches do not: other sessions' work, and the host's.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def tree_cpu(root: int) -> float:
    """CPU seconds used so far by the live processes of the tree under ``root``."""
    return sum(cpu for cpu, _ in tree_snapshot(root).values())


def wait_quiet(root: int, below: float = 0.10, limit: float = 60.0) -> float:
    """Wait until the tree under ``root`` uses less than ``below`` of a core over 1 s, at most
    ``limit`` s (workers may still import or load after the first answer). Returns the
    seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        before = tree_cpu(root)
        time.sleep(1.0)
        if tree_cpu(root) - before < below:
            break
    return time.monotonic() - start


def write_results(heading: str, section: str, replaces: tuple[str, ...] = ()) -> None:
    """Replace (or append) only the ``heading`` section ("## serving"...) of bench/RESULTS.md.

    ``replaces``: headings of older sections this one takes over; they are removed, and the
    new section goes where the first of them (or ``heading``) was.
    """
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n"
    lines = text.splitlines()
    at: int | None = None
    for old in (heading, *replaces):
        start = next((i for i, ln in enumerate(lines) if ln.strip() == old), None)
        if start is None:
            continue
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        del lines[start:end]
        at = start if at is None else min(at, start)
    if at is None:
        text = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    else:
        lines[at:at] = [*section.rstrip("\n").splitlines(), ""]
        text = "\n".join(lines).rstrip("\n") + "\n"
    RESULTS_MD.write_text(text)
