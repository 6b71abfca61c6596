"""Removing the cgroups a dead kernel left behind, whatever still runs in them.

:func:`reap_stale` runs at boot (the kernel's own backend tells where to look);
:func:`reap_dirs` is the mechanism, shared with the warden (:mod:`.warden`), which empties and
removes this kernel's parents once the kernel is gone. :func:`remove_stale` only removes *empty*
leftovers. Backend-neutral: it works on directories through a :class:`~.cgroupfs.CgroupFS`, for
v1 and v2 alike.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from clove.sandbox.cgroupfs import CgroupFS, is_live_kernel, remove_stale_dirs, stale_dirs
from clove.sandbox.cgroups import CgroupBackend, KillFn

__all__ = ["reap_dirs", "reap_stale", "remove_stale"]

log = logging.getLogger(__name__)


def remove_stale(backend: CgroupBackend, *, pid_alive: Callable[[int], bool] | None = None) -> list[Path]:
    """Remove empty parents left by dead kernels next to ``backend``'s own parent(s).

    See :func:`~.cgroupfs.remove_stale_dirs`: with ``kernel_tag="clove-12345"`` this removes
    ``clove-999`` and ``clove-999-kernel`` (and their empty agent cgroups) when pid 999 is dead.

    :param backend: a backend of this kernel; its own parents are never touched.
    :param pid_alive: liveness check for a pid (default: ``os.kill(pid, 0)`` succeeds).
    :returns: the directories removed.
    """
    return remove_stale_dirs(backend.fs, backend.base_dirs, backend.kernel_tag, pid_alive=pid_alive)


def reap_stale(
    backend: CgroupBackend,
    *,
    pid_alive: Callable[[int], bool] | None = None,
    kill: KillFn = os.kill,
    timeout: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Path]:
    """Remove everything dead kernels left behind, on the first try (:func:`reap_dirs`). Called
    at boot, before the loop runs and before this kernel creates any agent cgroup, so the short,
    bounded wait for processes to die blocks nobody.

    A leftover belongs to a dead kernel: a ``clove-<pid>`` parent (and ``-kernel`` leaf) beside
    ours whose pid is no live clove kernel (:func:`~.cgroupfs.is_live_kernel`; another live
    kernel's cgroups are never touched), or a sub-cgroup already inside our own parent, left by
    a dead kernel that had this kernel's pid (in a container the kernel often gets the same pid
    each boot).

    :param pid_alive: whether the kernel named by a parent is alive (default
        :func:`~.cgroupfs.is_live_kernel`).
    :returns: the directories removed, children before their parents.
    """
    alive = pid_alive if pid_alive is not None else is_live_kernel
    roots = stale_dirs(backend.fs, backend.base_dirs, backend.kernel_tag, pid_alive=alive)
    for base in backend.base_dirs:
        own = base / backend.kernel_tag
        roots += [own / child for child in _children(backend.fs, own)]
    return reap_dirs(backend.fs, roots, kill=kill, timeout=timeout, sleep=sleep)


def reap_dirs(
    fs: CgroupFS,
    roots: Sequence[Path],
    *,
    kill: KillFn = os.kill,
    timeout: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Path]:
    """Empty and remove ``roots`` and every cgroup below them, whatever runs there.

    Each round SIGKILLs every task (and writes ``cgroup.kill`` where there is one), *then* thaws
    (a frozen task only dies once thawed; thawing after the kill lets it run no code of its own),
    then removes the directories children before parents. A directory whose processes are still
    exiting refuses with ``EBUSY``; the next round, 10 ms later, kills what was forked meanwhile
    and tries again, until everything is gone or ``timeout`` passes (logged).

    :returns: the directories removed, children before their parents.
    """
    deadline = time.monotonic() + timeout
    removed: list[Path] = []
    while True:
        tree = [d for root in roots for d in _post_order(fs, root)]
        if not tree:
            return removed
        for d in tree:
            _kill_tasks(fs, d, kill)
        busy: list[Path] = []
        for d in tree:
            try:
                fs.rmdir(d)
            except FileNotFoundError:
                continue
            except OSError as err:
                if err.errno != errno.EBUSY:
                    log.warning("cannot remove cgroup %s: %s", d, err.strerror or err)
                busy.append(d)
                continue
            removed.append(d)
        if not busy:
            return removed
        if time.monotonic() > deadline:
            left = sorted({pid for d in busy for pid in _tasks(fs, d)})
            log.warning("cgroups left by a dead kernel still busy: %s (processes %s)", [str(d) for d in busy], left)
            return removed
        sleep(0.01)


def _post_order(fs: CgroupFS, directory: Path) -> list[Path]:
    """``directory`` and every cgroup below it, children before their parent."""
    if not fs.exists(directory / "cgroup.procs"):
        return []
    out: list[Path] = []
    for child in sorted(_children(fs, directory)):
        out += _post_order(fs, directory / child)
    out.append(directory)
    return out


def _tasks(fs: CgroupFS, directory: Path) -> list[int]:
    try:
        return [int(tok) for tok in fs.read_text(directory / "cgroup.procs").split() if tok.isdigit()]
    except OSError:
        return []


def _kill_tasks(fs: CgroupFS, directory: Path, kill: KillFn) -> None:
    if fs.exists(directory / "cgroup.kill"):
        with contextlib.suppress(OSError):
            fs.write_text(directory / "cgroup.kill", "1")
    for pid in _tasks(fs, directory):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)
    for control, thawed in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
        if fs.exists(directory / control):
            with contextlib.suppress(OSError):
                fs.write_text(directory / control, thawed)


def _children(fs: CgroupFS, directory: Path) -> list[str]:
    try:
        return [c for c in fs.listdir(directory) if fs.exists(directory / c / "cgroup.procs")]
    except OSError:
        return []
