"""Keeping a server's worker processes running, and stopping them cleanly.

The parent of ``modelyard serve --workers N`` forks its workers and then only supervises:
a worker that dies without being asked to (SIGKILL, the OOM killer, a crash in native
code) is logged and replaced, after a delay that doubles while replacements keep dying
young, so a worker that fails at start-up does not spin. SIGTERM or SIGINT stops the
replacing, forwards SIGTERM, and waits a bounded grace period for the workers to drain.

The parent itself stays single-threaded: a process forked while other threads run inherits
whatever locks they held at that instant, so the monitor and trigger loops run in a process
of their own (see server.py). Who restarts the parent is the init system's business
(systemd, Kubernetes: docs/operations.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.context import ForkContext
from multiprocessing.process import BaseProcess
from typing import Any

log = logging.getLogger("modelyard.supervisor")

_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
_CLEAN_EXITS = {0, -signal.SIGTERM, -signal.SIGINT}  # stopped when asked to


@dataclass
class Backoff:
    """The delay before replacing a worker: ``first``, doubling up to ``longest`` while the
    replacements keep dying within ``stable_after`` seconds, ``first`` again after one lived
    longer."""

    first: float = 0.5
    longest: float = 30.0
    stable_after: float = 60.0
    _next: float | None = None

    def delay(self, uptime: float) -> float:
        """The delay before replacing a worker that died after ``uptime`` seconds."""
        if self._next is None or uptime >= self.stable_after:
            self._next = self.first
        delay = self._next
        self._next = min(2 * delay, self.longest)
        return delay


@dataclass
class _Slot:
    name: str
    target: Callable[..., object]
    args: tuple[Any, ...]
    process: BaseProcess | None = None
    started: float = 0.0
    restart_at: float | None = None
    backoff: Backoff = field(default_factory=Backoff)


def _how(exitcode: int) -> str:
    if exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-exitcode).name}"
        return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


class Supervisor:
    """Runs the processes given to :meth:`add` until SIGTERM or SIGINT, replacing any that die.

    ``restarts`` counts the replacements, in memory shared with every worker forked after
    it was made (the workers report it in ``/metrics``; the parent serves no HTTP).
    """

    def __init__(self, ctx: ForkContext, *, grace: float) -> None:
        self.ctx = ctx
        self.grace = grace
        self.restarts: Any = ctx.RawValue("Q", 0)
        self._slots: list[_Slot] = []
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    def add(self, name: str, target: Callable[..., object], *args: Any) -> None:
        """Run ``target(*args)`` in a process named ``name`` (kept running by :meth:`run`)."""
        self._slots.append(_Slot(name, target, args))

    def run(self) -> int:
        """Start the processes and keep them running until SIGTERM or SIGINT, then stop
        them; 0 if every one stopped cleanly within the grace period, else 1."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _STOP_SIGNALS}
        try:
            for slot in self._slots:
                self._start(slot)
            while not self._stopping:
                self._wait()
                self._reap()
                self._restart_due()
            return self._stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _on_signal(self, _signum: int, _frame: object) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):  # the pipe is full: the loop wakes anyway
            os.write(self._wake_w, b"\0")

    def _start(self, slot: _Slot) -> None:
        # A signal that arrives while forking waits in the child until it has its own
        # handlers (see _boot), instead of running the parent's handler there.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            process = self.ctx.Process(target=self._boot, args=(slot,), name=slot.name)
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        slot.process, slot.started, slot.restart_at = process, time.monotonic(), None

    def _boot(self, slot: _Slot) -> None:
        """In the new process: default signal handling, then the slot's target.

        A worker installs its own handlers once it serves; uvicorn re-raises the signal after
        its graceful shutdown, which then ends the process without a traceback.
        """
        os.close(self._wake_r)
        os.close(self._wake_w)
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        slot.target(*slot.args)

    def _wait(self) -> None:
        """Until a process exits, a signal arrives or a replacement is due."""
        waitables: list[Any] = [s.process.sentinel for s in self._slots if s.process is not None]
        due = [s.restart_at for s in self._slots if s.restart_at is not None]
        timeout = max(0.0, min(due) - time.monotonic()) if due else None
        if self._wake_r in wait([*waitables, self._wake_r], timeout):
            os.read(self._wake_r, 4096)

    def _reap(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            process = slot.process
            if process is None or process.exitcode is None:
                continue
            uptime = now - slot.started
            if self._stopping:
                log.warning("%s (pid %s) %s", slot.name, process.pid, _how(process.exitcode))
            else:
                delay = slot.backoff.delay(uptime)
                slot.restart_at = now + delay
                log.warning(
                    "%s (pid %s) %s after %.1f s; starting a new one in %.1f s",
                    slot.name,
                    process.pid,
                    _how(process.exitcode),
                    uptime,
                    delay,
                )
            process.close()
            slot.process = None

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if slot.restart_at is None or slot.restart_at > now or self._stopping:
                continue
            try:
                self._start(slot)
            except OSError as exc:  # out of processes or memory: try again later
                delay = slot.backoff.delay(uptime=0.0)
                slot.restart_at = now + delay
                log.error("could not start %s: %s; trying again in %.1f s", slot.name, exc, delay)
                continue
            self.restarts.value += 1  # shared memory: every worker reports the new count
            assert slot.process is not None
            log.info("%s restarted (pid %s)", slot.name, slot.process.pid)

    def _stop_all(self) -> int:
        self._reap()  # those already dead are not waited for
        running = [s for s in self._slots if s.process is not None]
        for slot in running:
            assert slot.process is not None
            slot.process.terminate()
        deadline = time.monotonic() + self.grace
        for slot in running:
            assert slot.process is not None
            slot.process.join(max(0.0, deadline - time.monotonic()))
        clean = True
        for slot in running:
            process = slot.process
            assert process is not None
            if process.exitcode is None:
                log.error(
                    "%s (pid %s) did not stop within %.0f s of SIGTERM; killing it",
                    slot.name,
                    process.pid,
                    self.grace,
                )
                process.kill()
                process.join()
                clean = False
            elif process.exitcode not in _CLEAN_EXITS:
                log.warning("%s (pid %s) %s", slot.name, process.pid, _how(process.exitcode))
                clean = False
        return 0 if clean else 1
