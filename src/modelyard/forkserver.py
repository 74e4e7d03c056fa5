"""Running a function in a short-lived child process, forked from a single-threaded template.

What a monitor pass imports and allocates (pandas, scipy, a day of the prediction log, some
150 MiB) a Python process keeps once the pass is over: extension modules are never unloaded
and freed memory is only partly given back. A child that does the pass and exits gives all
of it back. Forking the child straight from the process that wants the pass would be unsafe
there, as other threads run beside it (the trigger poller, the rollout controller, SQLite):
a child inherits whatever lock another thread held at that instant. So :class:`ForkServer`
forks a template process while its creator still has a single thread, and each call has the
template, which never starts a thread, fork the child. The template is a copy of its
creator's memory at that moment and touches almost none of it, so it costs little besides
the pages it shares; the modules imported before it was made are shared with every child
and need not be imported again.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pickle
import signal
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, Pipe
from typing import Any

log = logging.getLogger("modelyard.forkserver")

__all__ = ["ForkServer", "ForkedCallFailed"]


class ForkedCallFailed(RuntimeError):
    """The function raised in the child, or the child died or ran out of time."""


class ForkServer:
    """Forks a template process now; :meth:`call` runs a function in a fresh child of it.

    Make it while the calling process has a single thread. Functions and their arguments
    and results travel pickled; a function is sent by reference, so it must be importable at
    module level. One call at a time (callers from several threads take turns).
    """

    def __init__(self) -> None:
        if threading.active_count() != 1:
            raise RuntimeError(
                "a ForkServer must be made while its process has a single thread "
                f"({threading.active_count()} are running)"
            )
        ours, theirs = Pipe()
        pid = os.fork()
        if pid == 0:  # the template
            ours.close()
            code = 0
            try:
                _serve(theirs)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        self.pid = pid
        self._conn = ours
        self._lock = threading.Lock()
        self._closed = False
        #: Set by :meth:`close` (not when the template died on its own).
        self.closed = False

    @property
    def alive(self) -> bool:
        """Whether the template is still there to fork children."""
        if self._closed:
            return False
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self._closed = True
        return not self._closed

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float) -> Any:
        """``fn(*args)`` in a fresh child; its result. The child is killed after ``timeout``
        seconds. Raises :class:`ForkedCallFailed` if ``fn`` raised (with its traceback), the
        child died or timed out, or the template is gone."""
        # The time limit goes first, as is: the template does not unpickle the call, which
        # could import modules into it (and so into every later child, unshared).
        request = struct.pack("d", timeout) + pickle.dumps((fn, args))
        with self._lock:
            if self._closed:
                raise ForkedCallFailed("the fork server was closed")
            try:
                self._conn.send_bytes(request)
                reply = pickle.loads(self._conn.recv_bytes())
            except (EOFError, OSError) as exc:
                self._closed = True
                raise ForkedCallFailed(
                    f"the fork server's template process is gone ({exc})"
                ) from exc
        if reply[0] == "ok":
            return reply[1]
        raise ForkedCallFailed(reply[1])

    def close(self) -> None:
        """Stop the template and any child of it at once (a call under way fails)."""
        self._closed = self.closed = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)  # its child follows (parent-death signal)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self._conn.close()


def _die_with_parent(sig: int) -> None:
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, sig)  # PR_SET_PDEATHSIG


def _serve(conn: Connection) -> None:
    """The template: for each request, fork a child that runs it; answer for a child that
    could not (it died, or was killed at its time limit)."""
    parent = os.getppid()
    _die_with_parent(signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the call
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the parent decides
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, OSError):
            return
        (timeout,) = struct.unpack_from("d", request)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _die_with_parent(signal.SIGKILL)
                conn.send_bytes(_run(request[struct.calcsize("d") :]))
                code = 0
            finally:
                os._exit(code)
        failure = _wait(pid, timeout)
        if failure is not None:
            conn.send_bytes(pickle.dumps(("error", failure)))


def _run(request: bytes) -> bytes:
    """In the child: the pickled reply to ``request``."""
    try:
        fn, args = pickle.loads(request)
        return pickle.dumps(("ok", fn(*args)))
    except BaseException as exc:
        text = "".join(traceback.format_exception(exc)).rstrip()
        return pickle.dumps(("error", f"{type(exc).__name__}: {exc}\n{text}"))


def _wait(pid: int, timeout: float) -> str | None:
    """Reap the child; None if it answered (exit 0), else what went wrong."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            if code == 0:
                return None
            if code < 0:
                return f"the child process was killed by {signal.Signals(-code).name}"
            return f"the child process exited with code {code} without answering"
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return f"the child process took more than {timeout:g} s and was killed"
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
