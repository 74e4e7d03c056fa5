"""Executors: where one attempt of a step runs.

The run loop (:mod:`modelyard.pipelines.runs`) decides what runs when, retries and
records; an executor only runs attempts and reports how each ended. Every executor runs
an attempt the same way (:func:`run_attempt`): load the inputs from the artifact store,
call the function, check the return type, store the outputs.

- :class:`LocalExecutor`: each attempt in its own forked process (``os.fork``: the child
  inherits the pipeline's code and the open workspace, so nothing is pickled on the way
  in), up to ``max_workers`` at once. The child writes its outputs to the artifact store
  and sends back their references through a pipe; its stdout and stderr (file descriptors
  1 and 2, so output of C code and subprocesses too) go to the step's log. A timeout kills
  the child's whole process group; a child that dies without a result is reported with
  its signal or exit code; when the parent dies, Linux kills the children
  (``PR_SET_PDEATHSIG``). Forking a process that runs other threads can deadlock the
  child, so run pipelines from a thread-free process (the CLI, a trigger worker).
- :class:`InProcessExecutor`: one attempt at a time in this process, for debugging and for
  measuring overhead; it cannot enforce timeouts.
- :class:`RayExecutor`: attempts as Ray tasks on a Ray cluster. The workers must reach the
  workspace's database and artifact store. Step functions from modules that are not
  installed packages are shipped by value, so the cluster needs no copy of the project.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import select
import signal
import sys
import tempfile
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelyard.errors import InvalidInput, MissingExtra
from modelyard.pipelines.cache import import_value_libraries, load_output, store_outputs
from modelyard.pipelines.dag import MISSING, StepContext, conforms, type_name

if TYPE_CHECKING:
    from modelyard.config import Settings
    from modelyard.workspace import Workspace

MAX_LOG_BYTES = 1024 * 1024  # the tail of a step's output kept in its log


@dataclass
class Attempt:
    """One try of one step, with everything it needs to run anywhere."""

    step: str
    number: int  # 1 for the first try
    fn: Callable[..., Any]
    values: dict[str, Any]  # constants and parameter values by argument
    refs: dict[str, tuple[dict[str, Any], str | int | None]]  # argument -> (outputs, key)
    context_arg: str | None
    return_hint: Any
    timeout: float | None
    pipeline: str
    run_id: str
    tracking_run_id: str | None
    datasets: list[dict[str, Any]] = field(default_factory=list)  # lineage from upstream


@dataclass
class AttemptResult:
    """How an attempt ended. ``kind`` is "" on success, else error | timeout | crash | type."""

    step: str
    number: int
    ok: bool
    outputs: dict[str, Any] | None = None
    kind: str = ""
    error: str = ""
    log: str = ""
    started: float = 0.0  # wall clock (epoch seconds) of the attempt
    ended: float = 0.0
    compute_start: float = 0.0  # the function call alone
    compute_end: float = 0.0
    datasets: list[dict[str, Any]] = field(default_factory=list)

    @property
    def retryable(self) -> bool:
        # A wrong return type comes from the code, not the weather: trying again cannot help.
        return not self.ok and self.kind != "type"


def run_attempt(
    attempt: Attempt,
    ws: Workspace,
    *,
    reraise_interrupt: bool = False,
) -> AttemptResult:
    """Run one attempt here: inputs in, function, type check, outputs out.

    Never raises, except ``KeyboardInterrupt`` with ``reraise_interrupt`` (Ctrl-C in the
    in-process executor stops the run, not just the step).
    """
    result = AttemptResult(attempt.step, attempt.number, ok=False, started=time.time())
    ctx: StepContext | None = None
    try:
        kwargs = dict(attempt.values)
        for arg, (outputs, key) in attempt.refs.items():
            kwargs[arg] = load_output(ws.artifacts, outputs, key)
        if attempt.context_arg:
            ctx = StepContext(
                ws,
                run_id=attempt.run_id,
                tracking_run_id=attempt.tracking_run_id,
                pipeline=attempt.pipeline,
                step=attempt.step,
                attempt=attempt.number,
                datasets=attempt.datasets,
            )
            kwargs[attempt.context_arg] = ctx
        result.compute_start = time.time()
        try:
            value = attempt.fn(**kwargs)
        finally:
            result.compute_end = time.time()
        if attempt.return_hint is not MISSING and not conforms(value, attempt.return_hint):
            result.kind = "type"
            result.error = (
                f"step {attempt.step!r} returned {type_name(type(value))}, but it is annotated "
                f"to return {type_name(attempt.return_hint)}"
            )
        else:
            result.outputs = store_outputs(ws.artifacts, value)
            result.ok = True
    except BaseException as exc:  # SystemExit and KeyboardInterrupt from a step fail it too
        result.kind = "error"
        result.error = f"step {attempt.step!r} raised {type(exc).__name__}: {exc}"
        traceback.print_exc()
        if reraise_interrupt and isinstance(exc, KeyboardInterrupt):
            raise
    if ctx is not None:
        result.datasets = ctx.logged_datasets
    result.ended = time.time()
    return result


class Executor(ABC):
    """Runs attempts; the run loop asks for capacity, submits, and waits for results."""

    name = "executor"
    blocking = False  # True when wait() runs the step in the caller's thread

    def open(self, ws: Workspace) -> None:  # noqa: B027 - optional hook
        """Prepare to run attempts of a run on ``ws``."""

    @abstractmethod
    def capacity(self) -> int:
        """How many more attempts may start now."""

    @abstractmethod
    def submit(self, attempt: Attempt) -> None:
        """Start an attempt (never blocks for its duration)."""

    @abstractmethod
    def wait(self, timeout: float) -> list[AttemptResult]:
        """Attempts that ended, waiting up to ``timeout`` seconds for the first one."""

    @abstractmethod
    def close(self) -> None:
        """Stop every attempt still running; nothing is left behind."""


def _tail(data: bytes) -> str:
    if len(data) > MAX_LOG_BYTES:
        data = b"[... earlier output cut ...]\n" + data[-MAX_LOG_BYTES:]
    return data.decode("utf-8", errors="replace")


# --- in-process ---------------------------------------------------------------------------


class InProcessExecutor(Executor):
    """One attempt at a time in this process; timeouts are not enforced."""

    name = "inprocess"
    blocking = True

    def __init__(self) -> None:
        self._queue: list[Attempt] = []
        self._ws: Workspace | None = None

    def open(self, ws: Workspace) -> None:
        self._ws = ws

    def capacity(self) -> int:
        return 0 if self._queue else 1

    def submit(self, attempt: Attempt) -> None:
        self._queue.append(attempt)

    def wait(self, timeout: float) -> list[AttemptResult]:
        if not self._queue:
            time.sleep(min(timeout, 0.05))
            return []
        assert self._ws is not None, "open() the executor first"
        attempt = self._queue.pop(0)
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            result = run_attempt(attempt, self._ws, reraise_interrupt=True)
        result.log = _tail(out.getvalue().encode())
        return [result]

    def close(self) -> None:
        self._queue.clear()


# --- local processes ----------------------------------------------------------------------


@dataclass
class _Child:
    attempt: Attempt
    pid: int
    read_fd: int
    log_file: Any
    pidfd: int | None
    started: float
    deadline: float | None
    data: bytearray = field(default_factory=bytearray)
    eof: bool = False

    def message(self) -> AttemptResult | None:
        """The result the child sent, once all of it has arrived (length-prefixed)."""
        if len(self.data) < 8:
            return None
        size = int.from_bytes(self.data[:8], "little")
        if len(self.data) < 8 + size:
            return None
        try:
            result: AttemptResult = pickle.loads(bytes(self.data[8 : 8 + size]))
        except Exception:
            return None
        return result


class LocalExecutor(Executor):
    """Each attempt in its own forked process, up to ``max_workers`` at once.

    A result counts as soon as the child has sent it; the child's exit (tearing down a
    copy of a large address space takes milliseconds) is collected in the background, and
    then whatever the step left running in its process group is killed.
    """

    name = "local"

    def __init__(self, max_workers: int | None = None) -> None:
        if not hasattr(os, "fork"):
            raise InvalidInput("the local executor needs os.fork (Linux or macOS); use inprocess")
        self.max_workers = max_workers or os.cpu_count() or 1
        if self.max_workers < 1:
            raise InvalidInput("max_workers must be at least 1")
        self._ws: Workspace | None = None
        self._children: dict[int, _Child] = {}  # running attempts
        self._exiting: dict[int, int | None] = {}  # pid -> pidfd: result in, exit not yet

    def open(self, ws: Workspace) -> None:
        self._ws = ws
        import_value_libraries()  # once here, rather than in every forked attempt

    def capacity(self) -> int:
        return self.max_workers - len(self._children)

    def submit(self, attempt: Attempt) -> None:
        assert self._ws is not None, "open() the executor first"
        # Unlinked, so nothing is left on disk; closed when the attempt is finished.
        log_file = tempfile.TemporaryFile()  # noqa: SIM115
        read_fd, write_fd = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()  # or the child would inherit, and maybe repeat, buffered text
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(read_fd)
            _child_main(attempt, self._ws, write_fd, log_file.fileno())
        os.close(write_fd)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # also done in the child; whoever runs first wins the race
        os.set_blocking(read_fd, False)
        pidfd = None
        with contextlib.suppress(AttributeError, OSError):
            pidfd = os.pidfd_open(pid)
        now = time.time()
        deadline = time.monotonic() + attempt.timeout if attempt.timeout else None
        self._children[pid] = _Child(attempt, pid, read_fd, log_file, pidfd, now, deadline)

    def wait(self, timeout: float) -> list[AttemptResult]:
        if not self._children and not self._exiting:
            time.sleep(min(timeout, 0.05))
            return []
        now = time.monotonic()
        deadlines = [c.deadline for c in self._children.values() if c.deadline is not None]
        wait_s = max(0.0, min([timeout, *(d - now for d in deadlines)]))
        fds = [c.read_fd for c in self._children.values() if not c.eof]
        fds += [c.pidfd for c in self._children.values() if c.pidfd is not None]
        fds += [fd for fd in self._exiting.values() if fd is not None]
        if None in self._exiting.values() or any(c.pidfd is None for c in self._children.values()):
            wait_s = min(wait_s, 0.02)  # no pidfd: poll for exits
        if not self._children:
            wait_s = min(wait_s, 0.05)  # only exits to collect: do not hold up the caller
        try:
            ready = set(select.select(fds, [], [], wait_s)[0]) if fds else set()
        except InterruptedError:
            ready = set()
        for pid, pidfd in list(self._exiting.items()):
            if (pidfd is None or pidfd in ready) and _exited(pid):
                self._reap(pid, pidfd)
        results = []
        for child in list(self._children.values()):
            if child.read_fd in ready:
                self._drain(child)
            result = child.message()
            if result is not None:
                results.append(self._finish(child, result))
                self._exiting[child.pid] = child.pidfd
                continue
            if (child.pidfd is None or child.pidfd in ready or child.eof) and _exited(child.pid):
                self._drain(child)
                result = child.message()
                status = self._reap(child.pid, child.pidfd)
                results.append(self._finish(child, result or self._crashed(child, status)))
                continue
            if child.deadline is not None and time.monotonic() >= child.deadline:
                _kill_group(child.pid)
                self._reap(child.pid, child.pidfd)
                results.append(self._finish(child, self._timed_out(child)))
        return results

    def _drain(self, child: _Child) -> None:
        while True:
            try:
                chunk = os.read(child.read_fd, 1 << 16)
            except BlockingIOError:
                return
            if not chunk:
                child.eof = True
                return
            child.data += chunk

    def _reap(self, pid: int, pidfd: int | None) -> int:
        """Kill what is left of the process group, collect the exit status, close the pidfd."""
        # Killed while the child is still unreaped, so its group id cannot be reused yet.
        _kill_group(pid)
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            status = 0
        if pidfd is not None:
            os.close(pidfd)
        self._exiting.pop(pid, None)
        return status

    def _finish(self, child: _Child, result: AttemptResult) -> AttemptResult:
        del self._children[child.pid]
        os.close(child.read_fd)
        child.log_file.seek(0)
        result.log = _tail(child.log_file.read())
        child.log_file.close()
        return result

    @staticmethod
    def _crashed(child: _Child, status: int) -> AttemptResult:
        attempt = child.attempt
        result = AttemptResult(attempt.step, attempt.number, ok=False, started=child.started)
        result.kind = "crash"
        result.error = f"step {attempt.step!r}: {_describe_exit(status)} without a result"
        result.ended = time.time()
        return result

    @staticmethod
    def _timed_out(child: _Child) -> AttemptResult:
        attempt = child.attempt
        result = AttemptResult(attempt.step, attempt.number, ok=False, started=child.started)
        result.kind = "timeout"
        result.error = (
            f"step {attempt.step!r} timed out after {attempt.timeout:g} s; its process was killed"
        )
        result.ended = time.time()
        return result

    def close(self) -> None:
        for child in list(self._children.values()):
            _kill_group(child.pid)
            self._reap(child.pid, child.pidfd)
            self._children.pop(child.pid, None)
            os.close(child.read_fd)
            child.log_file.close()
        for pid, pidfd in list(self._exiting.items()):
            self._reap(pid, pidfd)


def _exited(pid: int) -> bool:
    """Whether child ``pid`` has exited, without reaping it."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"its process was killed by {name} (signal {sig})"
    return f"its process exited with code {os.WEXITSTATUS(status)}"


def _kill_group(pid: int) -> None:
    for kill, target in ((os.killpg, pid), (os.kill, pid)):
        try:
            kill(target, signal.SIGKILL)
            return
        except ProcessLookupError:
            continue
        except PermissionError:
            continue


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def _child_main(attempt: Attempt, ws: Workspace, write_fd: int, log_fd: int) -> None:
    status = 70
    try:
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)  # its own group: a timeout kills the step's subprocesses too
        _die_with_parent()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # a step that reads input gets EOF, not the terminal
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        sys.stdout = io.TextIOWrapper(
            io.FileIO(1, "w", closefd=False),
            encoding="utf-8",
            errors="replace",
            line_buffering=True,
        )
        sys.stderr = io.TextIOWrapper(
            io.FileIO(2, "w", closefd=False),
            encoding="utf-8",
            errors="replace",
            line_buffering=True,
        )
        # The parent's pooled connections must not be used (or closed) here: start afresh.
        ws.store.engine.dispose(close=False)
        result = run_attempt(attempt, ws)
        sys.stdout.flush()
        sys.stderr.flush()
        payload = pickle.dumps(result)
        view = memoryview(len(payload).to_bytes(8, "little") + payload)
        while view:
            view = view[os.write(write_fd, view) :]
        status = 0
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc()
            sys.stderr.flush()
    finally:
        os._exit(status)


# --- ray ----------------------------------------------------------------------------------

_WORKER_WORKSPACES: dict[str, Workspace] = {}


def _ray_attempt(payload: bytes, settings: Settings, identity: dict[str, Any]) -> AttemptResult:
    """The Ray task: open (once per worker) the workspace and run the attempt here, acting
    as the run does (``identity``: its name, role and groups)."""
    import cloudpickle

    from modelyard.governance.entities import Identity
    from modelyard.workspace import Workspace

    key = settings.model_dump_json()
    ws = _WORKER_WORKSPACES.get(key)
    if ws is None:
        ws = _WORKER_WORKSPACES[key] = Workspace.open(settings, migrate=False)
    attempt: Attempt = cloudpickle.loads(payload)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        result = run_attempt(attempt, ws.as_identity(Identity(**identity)))
    result.log = _tail(out.getvalue().encode())
    return result


class RayExecutor(Executor):
    """Attempts as Ray tasks. Connects to ``address`` (``"auto"``, ``"ray://host:10001"``)
    or, with None, to the Ray instance this process started (or starts a local one)."""

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: float = 1) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self._ws: Workspace | None = None
        self._pending: dict[Any, tuple[Attempt, float, float | None]] = {}
        self._slots = 1
        self._remote: Any = None

    def open(self, ws: Workspace) -> None:
        try:
            import ray
        except ImportError:
            raise MissingExtra("ray", "ray") from None
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        self._ws = ws
        self._remote = ray.remote(_ray_attempt)
        cpus = float(ray.cluster_resources().get("CPU", 1))
        self._slots = max(1, int(cpus // self.num_cpus))

    def capacity(self) -> int:
        # Only as many in flight as the cluster runs at once, so a timeout measures running
        # time, not time queued behind other steps.
        return self._slots - len(self._pending)

    def submit(self, attempt: Attempt) -> None:
        assert self._ws is not None and self._remote is not None, "open() the executor first"
        payload = _pickle_attempt(attempt)
        ref = self._remote.options(
            num_cpus=self.num_cpus, max_retries=0, name=f"{attempt.pipeline}.{attempt.step}"
        ).remote(payload, self._ws.settings, self._ws.identity.model_dump())
        deadline = time.monotonic() + attempt.timeout if attempt.timeout else None
        self._pending[ref] = (attempt, time.time(), deadline)

    def wait(self, timeout: float) -> list[AttemptResult]:
        import ray

        if not self._pending:
            time.sleep(min(timeout, 0.05))
            return []
        now = time.monotonic()
        deadlines = [d for _, _, d in self._pending.values() if d is not None]
        wait_s = max(0.0, min([timeout, *(d - now for d in deadlines)]))
        refs = list(self._pending)
        ready, _ = ray.wait(refs, num_returns=1, timeout=wait_s)
        if ready:  # collect whatever else finished meanwhile
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        results = []
        for ref in ready:
            attempt, started, _ = self._pending.pop(ref)
            try:
                results.append(ray.get(ref))
            except Exception as exc:  # the worker died or Ray failed: no result
                result = AttemptResult(attempt.step, attempt.number, ok=False, started=started)
                result.kind = "crash"
                result.error = (
                    f"step {attempt.step!r}: its Ray worker failed: {type(exc).__name__}: {exc}"
                )
                result.ended = time.time()
                results.append(result)
        for ref, (attempt, started, deadline) in list(self._pending.items()):
            if deadline is not None and time.monotonic() >= deadline:
                ray.cancel(ref, force=True)
                self._pending.pop(ref)
                result = AttemptResult(attempt.step, attempt.number, ok=False, started=started)
                result.kind = "timeout"
                result.error = (
                    f"step {attempt.step!r} timed out after {attempt.timeout:g} s; its Ray "
                    "task was cancelled"
                )
                result.ended = time.time()
                results.append(result)
        return results

    def close(self) -> None:
        if not self._pending:
            return
        import ray

        for ref in self._pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        self._pending.clear()


def _pickle_attempt(attempt: Attempt) -> bytes:
    """cloudpickle the attempt, shipping project code (not installed packages) by value."""
    import cloudpickle

    module = sys.modules.get(getattr(attempt.fn, "__module__", "") or "")
    by_value = module is not None and _is_project_module(module)
    if by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        return bytes(cloudpickle.dumps(attempt))
    finally:
        if by_value:
            with contextlib.suppress(ValueError):
                cloudpickle.unregister_pickle_by_value(module)


def _is_project_module(module: Any) -> bool:
    name = module.__name__
    path = getattr(module, "__file__", None) or ""
    if name == "__main__" or name.startswith("modelyard.") or not path:
        return False
    return "site-packages" not in path and "dist-packages" not in path


def make_executor(spec: str | Executor) -> Executor:
    """An executor from its name (local, inprocess, ray) or as given."""
    if isinstance(spec, Executor):
        return spec
    factories: dict[str, Callable[[], Executor]] = {
        "local": LocalExecutor,
        "inprocess": InProcessExecutor,
        "ray": RayExecutor,
    }
    if spec not in factories:
        raise InvalidInput(f"unknown executor {spec!r}; use one of {', '.join(factories)}")
    return factories[spec]()


__all__ = [
    "Attempt",
    "AttemptResult",
    "Executor",
    "InProcessExecutor",
    "LocalExecutor",
    "RayExecutor",
    "make_executor",
    "run_attempt",
]
