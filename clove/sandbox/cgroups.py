"""Per-agent cgroups: the backend contract (:class:`CgroupBackend`, :class:`AgentCgroup`) and
the helpers both backends share.

Layout (the same for both backends, once per v1 hierarchy)::

    <this process's own cgroup>/            # delegated to us; never a hierarchy root by default
    └── <kernel_tag>/                       # CgroupBackend parent, e.g. "clove-12345"
        ├── agent-1/                        # one AgentCgroup per agent
        └── agent-2/

The two backends live in :mod:`.cgroup_v2` (unified hierarchy: ``memory.max``, ``cpu.max``,
``pids.max``, ``cgroup.freeze``, ``cgroup.kill``) and :mod:`.cgroup_v1` (``memory.limit_in_bytes``,
``cpu.cfs_quota_us``, ``pids.max``, ``freezer.state``); both import this module, never each
other. :func:`.backends.detect_backend` picks one; when none is usable the kernel falls back to
:mod:`.rlimits`. What dead kernels left behind is removed by :mod:`.reaper`. Every filesystem
access goes through a :class:`~.cgroupfs.CgroupFS`, so unit tests run against
:class:`clove.testing.FakeCgroupFS`.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import ClassVar

from clove.errors import SandboxError
from clove.sandbox.cgroupfs import CgroupFS, check_component, read_pids, write_control
from clove.sandbox.limits import NOT_REQUESTED, LimitReport, Limits

__all__ = [
    "AgentCgroup",
    "CgroupBackend",
    "KillFn",
    "LimitWriter",
    "limit_report",
]

log = logging.getLogger(__name__)

#: ``os.kill``-shaped callable; injectable so the kernel's host layer (or a test) can own signals.
KillFn = Callable[[int, int], None]


class AgentCgroup(ABC):
    """The cgroup(s) of one agent: one directory on v2, one per v1 hierarchy.

    :param name: the agent's cgroup name (one path component, e.g. ``"agent-7"``).
    :param dirs: the agent's cgroup directories, each already created.
    :param report: how each limit is enforced (keys ``memory``, ``cpu``, ``pids``).
    :param fs: the cgroup filesystem.
    :param kill: sends a signal to a pid (``os.kill``).
    """

    def __init__(
        self,
        *,
        name: str,
        dirs: tuple[Path, ...],
        report: dict[str, LimitReport],
        fs: CgroupFS,
        kill: KillFn = os.kill,
    ) -> None:
        self.name = name
        self.dirs = dirs
        self.attach_paths: tuple[str, ...] = tuple(str(d / "cgroup.procs") for d in dirs)
        self._report = dict(report)
        self._fs = fs
        self._kill = kill
        #: Called with the name once every directory is gone (the backend stops tracking it).
        self.on_removed: Callable[[str], object] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} dirs={[str(d) for d in self.dirs]}>"

    @property
    @abstractmethod
    def can_freeze(self) -> bool:
        """Whether :meth:`freeze` can work (a freezer is available)."""

    def attach(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into every directory of this cgroup.

        A child normally joins by itself, writing ``str(os.getpid())`` to each of
        :attr:`attach_paths` before it unshares namespaces; this is the same from outside.

        :raises SandboxError: a write was refused (the process may then be in some of the
            directories and not others; kill it).
        """
        for path in self.attach_paths:
            write_control(self._fs, Path(path), str(pid))

    def report(self) -> dict[str, LimitReport]:
        """How each limit is enforced: exactly the keys ``"memory"``, ``"cpu"``, ``"pids"``."""
        return dict(self._report)

    def pids(self) -> list[int]:
        """Every process in the cgroup (the union over its directories), sorted.

        :raises SandboxError: a ``cgroup.procs`` file exists but cannot be read.
        """
        found: set[int] = set()
        for d in self.dirs:
            found.update(read_pids(self._fs, d / "cgroup.procs"))
        return sorted(found)

    @abstractmethod
    def freeze(self) -> bool:
        """Ask the kernel to freeze every process; does not wait for it to finish.

        :returns: False if there is no freezer, True once the request is written.
        :raises SandboxError: the freezer refused the write (for example the cgroup is gone).
        """

    @abstractmethod
    def thaw(self) -> bool:
        """Undo :meth:`freeze`. Returns False if there is no freezer.

        :raises SandboxError: the freezer refused the write.
        """

    @abstractmethod
    def is_frozen(self) -> bool:
        """True only when the freeze has completed (not while it is still in progress)."""

    @abstractmethod
    def kill_all(self) -> int:
        """SIGKILL every process in the cgroup without waiting for them to die.

        Safe to call repeatedly and after the cgroup is gone. Call it again until :meth:`pids`
        is empty: a process forked while the kill was in flight can escape one round.

        :returns: how many processes were signalled.
        """

    @abstractmethod
    def oom_kills(self) -> int:
        """How many processes the memory controller's OOM killer has killed here (0 if unknown)."""

    @abstractmethod
    def stats(self) -> dict[str, int]:
        """Usage counters, each key present only when known: ``memory_current``, ``memory_peak``,
        ``cpu_usage_us``, ``nr_periods``, ``nr_throttled``, ``throttled_us``, ``pids_current``,
        ``oom_kills``."""

    def remove(self) -> bool:
        """``rmdir`` every directory of this cgroup (never a recursive delete).

        :returns: True when all directories are gone (also if they already were); False if one
            is still busy (``EBUSY``: processes still in it), so the caller retries later.
        :raises SandboxError: ``rmdir`` failed for another reason (for example ``EACCES``).
        """
        gone = True
        for d in self.dirs:
            try:
                self._fs.rmdir(d)
            except FileNotFoundError:
                continue
            except OSError as err:
                if err.errno == errno.EBUSY:
                    gone = False
                    continue
                raise SandboxError(
                    f"cannot remove cgroup {d}: {err.strerror or err}",
                    details={"path": str(d), "errno": err.errno},
                ) from err
        if gone and self.on_removed is not None:
            self.on_removed(self.name)
        return gone

    def _signal_each(self, sig: int) -> int:
        """Send ``sig`` to every pid listed now; pids that vanished meanwhile are not counted."""
        count = 0
        for pid in self.pids():
            try:
                self._kill(pid, sig)
            except ProcessLookupError:
                continue
            count += 1
        return count

    def _freeze_kill_thaw(self) -> int:
        """Kill-all without ``cgroup.kill``: freeze (best effort), SIGKILL each pid, thaw.

        Freezing stops the processes from forking while they are signalled; the SIGKILLs are
        delivered on thaw. It does not wait for the freeze to complete.
        """
        froze = False
        if self.can_freeze:
            try:
                froze = self.freeze()
            except SandboxError as err:
                log.debug("kill_all %s: freeze failed: %s", self.name, err)
        count = self._signal_each(signal.SIGKILL)
        if froze:
            try:
                self.thaw()
            except SandboxError as err:
                log.debug("kill_all %s: thaw failed: %s", self.name, err)
        return count


#: Writes one limit and returns how it is enforced (the report's ``via``).
LimitWriter = Callable[[int], str]


def limit_report(limits: Limits, have: frozenset[str] | set[str], writers: dict[str, LimitWriter]) -> dict[str, LimitReport]:
    """Apply each requested limit with its writer, in the order memory, cpu, pids; a limit whose
    controller is missing is reported as not enforced, an unrequested one as such.

    :raises SandboxError: from a writer whose file refused the value.
    """
    report: dict[str, LimitReport] = {}
    for key, value in (("memory", limits.memory_bytes), ("cpu", limits.cpu_quota_us), ("pids", limits.pids)):
        if value is None:
            report[key] = LimitReport(None, False, NOT_REQUESTED)
        elif key not in have:
            report[key] = LimitReport(value, False, f"no {key} controller")
        else:
            report[key] = LimitReport(value, True, writers[key](value))
    return report


class CgroupBackend(ABC):
    """Creates and removes agent cgroups under ``<own cgroup>/<kernel_tag>``.

    Usable as a context manager (``close()`` on exit).

    :param kernel_tag: the kernel's parent cgroup name, e.g. ``"clove-12345"``.
    :param fs: the cgroup filesystem.
    :param kill: sends a signal to a pid (``os.kill``).
    """

    name: ClassVar[str]

    def __init__(self, *, kernel_tag: str, fs: CgroupFS, kill: KillFn = os.kill) -> None:
        check_component("kernel_tag", kernel_tag)
        self.kernel_tag = kernel_tag
        self.fs = fs
        self._kill = kill
        self._agents: dict[str, AgentCgroup] = {}
        self._prepared = False
        self._closed = False

    def __enter__(self) -> CgroupBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    @abstractmethod
    def base_dirs(self) -> tuple[Path, ...]:
        """This process's own cgroup directories, under which the ``kernel_tag`` parents live."""

    @abstractmethod
    def prepare(self) -> None:
        """Create the parent cgroup(s) and make the controllers available there. Idempotent.

        :func:`~.backends.detect_backend` calls it, so a backend that cannot work is never returned;
        :meth:`create` calls it too.

        :raises SandboxError: a directory or control file was refused; whatever this call had
            made is removed again.
        """

    @abstractmethod
    def create(self, name: str, limits: Limits) -> AgentCgroup:
        """Create the agent's cgroup ``<parent>/<name>`` and write ``limits`` into it.

        :raises SandboxError: the name is invalid or taken, a directory or limit file was
            refused (the message names the file); nothing half-made is left behind.
        """

    @abstractmethod
    def close(self) -> None:
        """Remove every agent cgroup still present and the parent(s); safe to call twice.

        Busy cgroups (agents still alive) are left in place with a warning.
        """

    @abstractmethod
    def describe(self) -> dict[str, object]:
        """JSON-safe facts for the kernel's info: ``backend``, ``parents``, ``controllers``..."""

    @abstractmethod
    def apply_limits(self, agent: AgentCgroup, limits: Limits) -> dict[str, LimitReport]:
        """Write ``limits`` into an existing agent cgroup (one made ahead of time with no
        limits, already holding the process that will become the agent); returns the report.

        :raises SandboxError: a limit file refused the value (e.g. memory already above it).
        """

    @abstractmethod
    def controllers(self) -> frozenset[str]:
        """The limit controllers (``memory``, ``cpu``, ``pids``) this backend can apply."""

    def planned_report(self, limits: Limits) -> dict[str, LimitReport]:
        """What :meth:`create` would enforce for ``limits``, without creating anything (used to
        refuse a spawn under ``require_isolation`` before any process exists)."""
        def planned(key: str) -> LimitWriter:
            return lambda _value: f"{self.name} {key} controller"

        return limit_report(limits, self.controllers(), {key: planned(key) for key in ("memory", "cpu", "pids")})

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxError(f"{self.name} backend {self.kernel_tag!r} is closed")

    def _register(self, agent: AgentCgroup) -> None:
        """Track ``agent`` until it is removed (so :meth:`close` can clean up what is left)."""
        self._agents[agent.name] = agent
        agent.on_removed = lambda name: self._agents.pop(name, None)

    def _close_agents(self) -> None:
        for agent in list(self._agents.values()):
            try:
                gone = agent.remove()
            except SandboxError as err:
                log.warning("cannot remove %r: %s", agent, err)
                continue
            if not gone:  # removed ones drop out of _agents through on_removed
                log.warning("cgroup of %s still has processes; left in place", agent.name)
