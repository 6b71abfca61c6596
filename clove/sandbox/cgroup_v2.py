"""The cgroup v2 backend: one directory per agent in the unified hierarchy.

Files written per agent (only for requested limits)::

    <parent>/agent-N/memory.max        <bytes>
    <parent>/agent-N/memory.swap.max   0                 (when present: swap cannot dodge the limit)
    <parent>/agent-N/cpu.max           "<quota> <period>"
    <parent>/agent-N/pids.max          <n>

and ``cgroup.freeze`` / ``cgroup.kill`` for freezing and killing.

**Delegation and the "no internal processes" rule.** A v2 cgroup other than the root may not
both contain processes and enable controllers for its children. The parent ``<own>/<kernel_tag>``
never holds processes, but the kernel's own cgroup ``<own>`` usually holds the kernel itself.
If the controllers are not yet enabled in ``<own>/cgroup.subtree_control`` and ``<own>`` is not
the hierarchy root, :meth:`CgroupV2Backend.prepare` moves *this process only* into the leaf
``<own>/<kernel_tag>-kernel`` and then enables them. If ``<own>`` holds other processes too, it
refuses (moving processes it does not own would be a surprise): run the kernel in a cgroup of its
own (systemd ``Delegate=yes``). :meth:`CgroupV2Backend.close` undoes this when it safely can
(no other sub-cgroups of ``<own>``): it disables what it enabled, moves the process back with
whatever it forked after moving (its zygote and warden), and removes the leaf; otherwise the leaf stays and :func:`~.reaper.remove_stale` removes it after
the kernel has exited.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import final

from clove.errors import SandboxError
from clove.sandbox.cgroupfs import (
    CgroupFS,
    ProcCgroupEntry,
    check_component,
    read_int,
    read_keyed,
    read_pids,
    resolve_own_dir,
    rmdir_quiet,
    write_control,
)
from clove.sandbox.cgroups import AgentCgroup, CgroupBackend, KillFn, limit_report
from clove.sandbox.limits import LimitReport, Limits

__all__ = ["V2_CONTROLLERS", "CgroupV2Agent", "CgroupV2Backend", "V2Layout", "discover_v2"]

log = logging.getLogger(__name__)

#: The controllers the backend enables; ``"auto"`` needs all of them.
V2_CONTROLLERS = ("memory", "cpu", "pids")


@dataclass(frozen=True, slots=True)
class V2Layout:
    """Where the unified hierarchy is and where this process sits in it.

    :param mount: the cgroup2 mount (``/sys/fs/cgroup`` or ``/sys/fs/cgroup/unified``).
    :param own: this process's cgroup directory.
    :param controllers: the controllers available in ``own`` (its ``cgroup.controllers``).
    """

    mount: Path
    own: Path
    controllers: frozenset[str]


def discover_v2(
    entries: list[ProcCgroupEntry], cgroup_root: Path, fs: CgroupFS, *, pid: int, complete: bool
) -> tuple[V2Layout | None, str]:
    """Locate the unified hierarchy and this process's cgroup in it.

    :param complete: require all of :data:`V2_CONTROLLERS` (else at least one of them).
    :returns: ``(layout, "")``, or ``(None, reason)`` when unusable.
    """
    entry = next((e for e in entries if e.is_v2), None)
    if entry is None:
        return None, "no cgroup2 ('0::') line in /proc/self/cgroup"
    mount = next(
        (m for m in (cgroup_root, cgroup_root / "unified") if fs.exists(m / "cgroup.controllers")), None
    )
    if mount is None:
        return None, f"no cgroup2 hierarchy mounted at {cgroup_root} or {cgroup_root / 'unified'}"
    own = resolve_own_dir(fs, mount, entry.path, pid=pid)
    if own is None:
        return None, f"own cgroup {entry.path} not found under {mount}"
    try:
        controllers = frozenset(fs.read_text(own / "cgroup.controllers").split())
    except OSError as err:
        return None, f"cannot read {own / 'cgroup.controllers'}: {err.strerror or err}"
    missing = [c for c in V2_CONTROLLERS if c not in controllers]
    if (complete and missing) or len(missing) == len(V2_CONTROLLERS):
        offered = " ".join(sorted(controllers)) or "none"
        return None, (
            f"cgroup2 at {own} lacks {', '.join(missing)} (offers: {offered}); "
            "they are bound to cgroup v1 or not delegated"
        )
    return V2Layout(mount=mount, own=own, controllers=controllers), ""


@final
class CgroupV2Agent(AgentCgroup):
    """One agent's cgroup on v2: a single directory (see :class:`AgentCgroup`)."""

    def __init__(
        self, *, name: str, path: Path, report: dict[str, LimitReport], fs: CgroupFS, kill: KillFn = os.kill
    ) -> None:
        super().__init__(name=name, dirs=(path,), report=report, fs=fs, kill=kill)
        self.path = path
        self._can_freeze = fs.exists(path / "cgroup.freeze")
        self._can_kill = fs.exists(path / "cgroup.kill")

    @property
    def can_freeze(self) -> bool:
        return self._can_freeze

    def freeze(self) -> bool:
        if not self._can_freeze:
            return False
        write_control(self._fs, self.path / "cgroup.freeze", "1")
        return True

    def thaw(self) -> bool:
        if not self._can_freeze:
            return False
        write_control(self._fs, self.path / "cgroup.freeze", "0")
        return True

    def is_frozen(self) -> bool:
        return read_keyed(self._fs, self.path / "cgroup.events").get("frozen") == 1

    def kill_all(self) -> int:
        """SIGKILL everything via ``cgroup.kill`` (Linux >= 5.14), else freeze, kill each, thaw."""
        if not self._can_kill:
            return self._freeze_kill_thaw()
        count = len(self.pids())
        if count == 0:
            return 0
        try:
            self._fs.write_text(self.path / "cgroup.kill", "1")
        except FileNotFoundError:
            return 0
        except OSError as err:
            raise SandboxError(
                f"cannot write '1' to {self.path / 'cgroup.kill'}: {err.strerror or err}",
                details={"path": str(self.path / "cgroup.kill"), "errno": err.errno},
            ) from err
        return count

    def oom_kills(self) -> int:
        return read_keyed(self._fs, self.path / "memory.events").get("oom_kill", 0)

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for key, filename in (
            ("memory_current", "memory.current"),
            ("memory_peak", "memory.peak"),
            ("pids_current", "pids.current"),
        ):
            value = read_int(self._fs, self.path / filename)
            if value is not None:
                out[key] = value
        cpu_stat = read_keyed(self._fs, self.path / "cpu.stat")
        for key, name in (
            ("cpu_usage_us", "usage_usec"),
            ("nr_periods", "nr_periods"),
            ("nr_throttled", "nr_throttled"),
            ("throttled_us", "throttled_usec"),
        ):
            if name in cpu_stat:
                out[key] = cpu_stat[name]
        events = read_keyed(self._fs, self.path / "memory.events")
        if "oom_kill" in events:
            out["oom_kills"] = events["oom_kill"]
        return out


@final
class CgroupV2Backend(CgroupBackend):
    """Agent cgroups in the unified hierarchy (see the module docstring).

    :param layout: from :func:`discover_v2`.
    :param kernel_tag: the parent directory's name under this process's own cgroup.
    :param fs: the cgroup filesystem.
    :param kill: signal sender, used only when ``cgroup.kill`` is missing.
    """

    name = "cgroup2"

    def __init__(self, layout: V2Layout, *, kernel_tag: str, fs: CgroupFS, kill: KillFn = os.kill) -> None:
        super().__init__(kernel_tag=kernel_tag, fs=fs, kill=kill)
        self._layout = layout
        self.parent = layout.own / kernel_tag
        self._controllers = tuple(c for c in V2_CONTROLLERS if c in layout.controllers)
        self._kernel_leaf: Path | None = None
        self._enabled_in_own: tuple[str, ...] = ()

    @property
    def base_dirs(self) -> tuple[Path, ...]:
        return (self._layout.own,)

    def prepare(self) -> None:
        self._check_open()
        if self._prepared:
            return
        own = self._layout.own
        try:
            enabled = set(self.fs.read_text(own / "cgroup.subtree_control").split())
        except OSError as err:
            raise SandboxError(
                f"cannot read {own / 'cgroup.subtree_control'}: {err.strerror or err}",
                details={"path": str(own / "cgroup.subtree_control"), "errno": err.errno},
            ) from err
        missing = tuple(c for c in self._controllers if c not in enabled)
        made_parent = False
        try:
            if missing:
                if own != self._layout.mount:
                    self._leave_own_cgroup()
                write_control(self.fs, own / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))
                self._enabled_in_own = missing
            try:
                self.fs.mkdir(self.parent)
                made_parent = True
            except FileExistsError:
                pass
            except OSError as err:
                raise SandboxError(
                    f"cannot create cgroup {self.parent}: {err.strerror or err}",
                    details={"path": str(self.parent), "errno": err.errno},
                ) from err
            if self._controllers:
                write_control(
                    self.fs,
                    self.parent / "cgroup.subtree_control",
                    " ".join(f"+{c}" for c in self._controllers),
                )
        except SandboxError:
            if made_parent:
                rmdir_quiet(self.fs, self.parent)
            self._restore_own_cgroup()
            raise
        self._prepared = True

    def _leave_own_cgroup(self) -> None:
        """Move this process out of ``own`` into ``own/<tag>-kernel`` (see module docstring)."""
        own = self._layout.own
        me = os.getpid()
        procs = read_pids(self.fs, own / "cgroup.procs")
        if not procs:
            return
        others = [p for p in procs if p != me]
        if others:
            raise SandboxError(
                f"cgroup {own} holds other processes ({', '.join(map(str, others[:8]))}), so it cannot "
                "enable controllers for sub-cgroups; start the kernel in a cgroup of its own "
                "(systemd Delegate=yes)",
                details={"path": str(own), "pids": others[:32]},
            )
        leaf = own / f"{self.kernel_tag}-kernel"
        try:
            self.fs.mkdir(leaf)
        except FileExistsError:
            pass
        except OSError as err:
            raise SandboxError(
                f"cannot create cgroup {leaf}: {err.strerror or err}",
                details={"path": str(leaf), "errno": err.errno},
            ) from err
        self._kernel_leaf = leaf
        write_control(self.fs, leaf / "cgroup.procs", str(me))
        log.info("moved kernel pid %d into %s to enable controllers in %s", me, leaf, own)

    def _restore_own_cgroup(self) -> None:
        """Best-effort undo of :meth:`_leave_own_cgroup` and of what was enabled in ``own``."""
        leaf = self._kernel_leaf
        if leaf is None:
            return
        own = self._layout.own
        try:
            others = [
                n for n in self.fs.listdir(own) if n != leaf.name and self.fs.exists(own / n / "cgroup.procs")
            ]
        except OSError:
            others = ["?"]
        if others:
            log.info("leaving kernel in %s: %s has other sub-cgroups", leaf, own)
            return
        try:
            if self._enabled_in_own:
                write_control(
                    self.fs, own / "cgroup.subtree_control", " ".join(f"-{c}" for c in self._enabled_in_own)
                )
                self._enabled_in_own = ()
            # The kernel first, then what it forked after moving (its zygote, its warden): the
            # leaf holds nothing else, and a leaf with a process in it cannot be removed.
            me = os.getpid()
            write_control(self.fs, own / "cgroup.procs", str(me))
            for pid in read_pids(self.fs, leaf / "cgroup.procs"):
                try:
                    write_control(self.fs, own / "cgroup.procs", str(pid))
                except SandboxError:
                    pass  # it exited meanwhile
        except SandboxError as err:
            log.warning("cannot move the kernel back to %s: %s", own, err)
            return
        if rmdir_quiet(self.fs, leaf):
            self._kernel_leaf = None

    def create(self, name: str, limits: Limits) -> CgroupV2Agent:
        check_component("name", name)
        self.prepare()
        path = self.parent / name
        try:
            self.fs.mkdir(path)
        except OSError as err:
            why = "already exists" if isinstance(err, FileExistsError) else (err.strerror or str(err))
            raise SandboxError(
                f"cannot create cgroup {path}: {why}", details={"path": str(path), "errno": err.errno}
            ) from err
        try:
            report = self._apply(path, limits)
        except SandboxError:
            rmdir_quiet(self.fs, path)
            raise
        agent = CgroupV2Agent(name=name, path=path, report=report, fs=self.fs, kill=self._kill)
        self._register(agent)
        log.debug("created %r with %s", agent, limits)
        return agent

    def apply_limits(self, agent: AgentCgroup, limits: Limits) -> dict[str, LimitReport]:
        if not isinstance(agent, CgroupV2Agent):
            raise SandboxError(f"{agent!r} is not a cgroup v2 agent")
        agent._report = self._apply(agent.path, limits)
        return dict(agent._report)

    def _apply(self, path: Path, limits: Limits) -> dict[str, LimitReport]:
        """Write the limit files; returns the report. Raises :class:`SandboxError` on a refusal."""

        def memory(mem: int) -> str:
            write_control(self.fs, path / "memory.max", str(mem))
            if not self.fs.exists(path / "memory.swap.max"):
                return "memory.max"
            write_control(self.fs, path / "memory.swap.max", "0")  # swap cannot dodge the limit
            return "memory.max+memory.swap.max"

        def cpu(quota: int) -> str:
            write_control(self.fs, path / "cpu.max", f"{quota} {limits.cpu_period_us}")
            return "cpu.max"

        def pids(count: int) -> str:
            write_control(self.fs, path / "pids.max", str(count))
            return "pids.max"

        return limit_report(limits, set(self._controllers), {"memory": memory, "cpu": cpu, "pids": pids})

    def close(self) -> None:
        self._close_agents()
        if rmdir_quiet(self.fs, self.parent):
            self._restore_own_cgroup()
        self._closed = True

    def controllers(self) -> frozenset[str]:
        return frozenset(c for c in ("memory", "cpu", "pids") if c in self._controllers)

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "kernel_tag": self.kernel_tag,
            "mount": str(self._layout.mount),
            "parents": {"unified": str(self.parent)},
            "controllers": list(self._controllers),
            "missing": [c for c in V2_CONTROLLERS if c not in self._controllers],
            "kernel_leaf": None if self._kernel_leaf is None else str(self._kernel_leaf),
        }
