"""Scratch space that a killed process does not leave behind.

What must appear complete or not at all is written under a scratch name first: a blob being
uploaded, a model saved before it is uploaded, a model directory being copied into the
cache. A process killed there (SIGKILL, the OOM killer, a power cut) cannot remove it, and a
saved model is easily 100 MB, so each scratch name ends with its owner: ``@<pid>.<start
time>.<pid namespace>.<random>.<host>``. :func:`sweep` removes the entries whose owner is
gone: at once when that process no longer runs on this host (the start time tells a reused
pid apart), after :data:`STALE_AFTER_SECONDS` untouched when it ran elsewhere (a directory
shared between machines, where this host cannot see the process), and, in a directory that
holds nothing but scratch entries, untagged entries of older versions after that age too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("modelyard.artifacts")

#: How long an entry whose owner this host cannot check is kept after its last change.
STALE_AFTER_SECONDS = 24 * 3600.0

_HOST = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "host"
_TAG = re.compile(r"@(\d+)\.(\d+)\.(\d+)\.[0-9a-f]+\.([A-Za-z0-9.-]+)$")


def _pid_namespace() -> int:
    # Two containers may share a hostname and a volume; their pids mean different processes.
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


_NAMESPACE = _pid_namespace()
_PROC = os.path.isdir("/proc/self")


def _started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22; the command name (field 2, in parentheses) may itself hold spaces.
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


def scratch_name(prefix: str = "") -> str:
    """A new scratch name for this process: ``prefix`` followed by the owner tag."""
    pid = os.getpid()
    started = _started(pid) or 0
    return f"{prefix}@{pid}.{started}.{_NAMESPACE}.{secrets.token_hex(4)}.{_HOST}"


def _owner_gone(name: str) -> bool | None:
    """Whether the process that owns scratch entry ``name`` is gone; None if this host
    cannot tell (no owner tag, or an owner on another host or in another pid namespace)."""
    match = _TAG.search(name)
    if match is None:
        return None
    pid, started, namespace, host = match.groups()
    if host != _HOST or int(namespace) != _NAMESPACE:
        return None
    if _PROC:
        return _started(int(pid)) != int(started)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def sweep(directory: Path, *, only_scratch: bool = False) -> int:
    """Remove the scratch entries in ``directory`` that their owners left behind; how many.

    ``only_scratch``: everything in ``directory`` is scratch space, so entries without an
    owner tag (left by older versions) are removed too once :data:`STALE_AFTER_SECONDS` old.
    Other entries are never touched. One listing, and a stat per scratch entry.
    """
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    removed = 0
    now = time.time()
    for entry in entries:
        gone = _owner_gone(entry.name)
        if gone is None:
            if "@" not in entry.name and not only_scratch:
                continue
            try:
                gone = now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_SECONDS
            except FileNotFoundError:
                continue
        if not gone:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
        removed += 1
    if removed:
        log.info("removed %d scratch entries left by stopped processes in %s", removed, directory)
    return removed


@contextlib.contextmanager
def scratch_dir(parent: Path) -> Iterator[Path]:
    """A new directory under ``parent``, removed on exit (after a kill, by a later sweep).

    ``parent`` holds scratch directories only; what earlier processes left there is swept
    first, so it cannot grow without bound even if nothing else sweeps it.
    """
    parent.mkdir(parents=True, exist_ok=True)
    sweep(parent, only_scratch=True)
    path = parent / scratch_name()
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
