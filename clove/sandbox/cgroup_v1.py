"""The cgroup v1 backend: one directory per agent in each of the memory, cpu(, cpuacct), pids
and freezer hierarchies.

Files written per agent (only for requested limits)::

    memory/.../agent-N/memory.limit_in_bytes         <bytes>     (first)
    memory/.../agent-N/memory.memsw.limit_in_bytes   <bytes>     (when swap accounting exists:
                                                                  memory+swap, so swap cannot
                                                                  dodge the limit)
    cpu/.../agent-N/cpu.cfs_period_us                <period>
    cpu/.../agent-N/cpu.cfs_quota_us                 <quota>
    pids/.../agent-N/pids.max                        <n>

The agent directories are created in every available hierarchy even without limits, so that
:meth:`~CgroupV1Agent.kill_all`, freezing and the statistics work for every agent. Hierarchies
are located from ``/proc/self/cgroup`` (``N:cpu,cpuacct:/path``) and the mount directories
under the cgroup root (``cpu,cpuacct`` or ``cpu``); co-mounted controllers share one directory.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import final

from clove.errors import SandboxError
from clove.sandbox.cgroupfs import (
    CgroupFS,
    ProcCgroupEntry,
    check_component,
    read_int,
    read_keyed,
    resolve_own_dir,
    rmdir_quiet,
    write_control,
)
from clove.sandbox.cgroups import AgentCgroup, CgroupBackend, KillFn, limit_report
from clove.sandbox.limits import LimitReport, Limits

__all__ = ["V1_CONTROLLERS", "V1_REQUIRED", "CgroupV1Agent", "CgroupV1Backend", "V1Layout", "discover_v1"]

log = logging.getLogger(__name__)

#: Controllers an agent gets a directory in, when mounted.
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer")
#: Controllers whose absence makes ``"auto"`` skip cgroup v1.
V1_REQUIRED = ("memory", "cpu", "pids")


@dataclass(frozen=True, slots=True)
class V1Layout:
    """Where this process sits in each v1 hierarchy.

    :param own: controller -> this process's own cgroup directory in that controller's hierarchy.
    :param missing: controller -> why it is unavailable.
    """

    own: Mapping[str, Path]
    missing: Mapping[str, str] = field(default_factory=dict)


def discover_v1(
    entries: list[ProcCgroupEntry], cgroup_root: Path, fs: CgroupFS, *, pid: int, complete: bool
) -> tuple[V1Layout | None, str]:
    """Locate the v1 hierarchies of this process.

    :param entries: parsed ``/proc/self/cgroup``.
    :param cgroup_root: where the hierarchies are mounted.
    :param complete: require all of :data:`V1_REQUIRED` (else at least one of them).
    :returns: ``(layout, "")``, or ``(None, reason)`` when unusable.
    """
    own: dict[str, Path] = {}
    missing: dict[str, str] = {}
    for controller in V1_CONTROLLERS:
        entry = next((e for e in entries if e.hierarchy != 0 and controller in e.controllers), None)
        if entry is None:
            missing[controller] = f"no {controller} hierarchy in /proc/self/cgroup"
            continue
        mounts = [cgroup_root / ",".join(entry.controllers), cgroup_root / controller]
        mount = next((m for m in mounts if fs.exists(m / "cgroup.procs")), None)
        if mount is None:
            missing[controller] = f"{controller} hierarchy not mounted at {mounts[0]} or {mounts[1]}"
            continue
        found = resolve_own_dir(fs, mount, entry.path, pid=pid)
        if found is None:
            missing[controller] = f"own {controller} cgroup {entry.path} not found under {mount}"
            continue
        own[controller] = found
    required_missing = [c for c in V1_REQUIRED if c not in own]
    if (complete and required_missing) or all(c not in own for c in V1_REQUIRED):
        return None, "; ".join(missing[c] for c in required_missing)
    return V1Layout(own=own, missing=missing), ""


@final
class CgroupV1Agent(AgentCgroup):
    """One agent's cgroups on v1: a directory per hierarchy (see :class:`AgentCgroup`).

    :param by_controller: controller -> the agent's directory in that controller's hierarchy.
    """

    def __init__(
        self,
        *,
        name: str,
        by_controller: Mapping[str, Path],
        report: dict[str, LimitReport],
        fs: CgroupFS,
        kill: KillFn = os.kill,
    ) -> None:
        dirs = tuple(dict.fromkeys(by_controller.values()))
        super().__init__(name=name, dirs=dirs, report=report, fs=fs, kill=kill)
        self._by = dict(by_controller)

    @property
    def can_freeze(self) -> bool:
        return "freezer" in self._by

    def _file(self, controller: str, filename: str) -> Path | None:
        d = self._by.get(controller)
        return None if d is None else d / filename

    def freeze(self) -> bool:
        state = self._file("freezer", "freezer.state")
        if state is None:
            return False
        write_control(self._fs, state, "FROZEN")
        return True

    def thaw(self) -> bool:
        state = self._file("freezer", "freezer.state")
        if state is None:
            return False
        write_control(self._fs, state, "THAWED")
        return True

    def is_frozen(self) -> bool:
        state = self._file("freezer", "freezer.state")
        if state is None:
            return False
        try:
            return self._fs.read_text(state).strip() == "FROZEN"
        except OSError:
            return False

    def kill_all(self) -> int:
        return self._freeze_kill_thaw()

    def oom_kills(self) -> int:
        control = self._file("memory", "memory.oom_control")
        if control is None:
            return 0
        return read_keyed(self._fs, control).get("oom_kill", 0)

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}

        def put(key: str, value: int | None) -> None:
            if value is not None:
                out[key] = value

        if "memory" in self._by:
            mem = self._by["memory"]
            put("memory_current", read_int(self._fs, mem / "memory.usage_in_bytes"))
            put("memory_peak", read_int(self._fs, mem / "memory.max_usage_in_bytes"))
            put("oom_kills", read_keyed(self._fs, mem / "memory.oom_control").get("oom_kill"))
        if "cpuacct" in self._by:
            ns = read_int(self._fs, self._by["cpuacct"] / "cpuacct.usage")
            put("cpu_usage_us", None if ns is None else ns // 1000)
        if "cpu" in self._by:
            cpu_stat = read_keyed(self._fs, self._by["cpu"] / "cpu.stat")
            put("nr_periods", cpu_stat.get("nr_periods"))
            put("nr_throttled", cpu_stat.get("nr_throttled"))
            throttled_ns = cpu_stat.get("throttled_time")
            put("throttled_us", None if throttled_ns is None else throttled_ns // 1000)
        if "pids" in self._by:
            put("pids_current", read_int(self._fs, self._by["pids"] / "pids.current"))
        return out


@final
class CgroupV1Backend(CgroupBackend):
    """Agent cgroups on the v1 hierarchies (see the module docstring).

    :param layout: from :func:`discover_v1`.
    :param kernel_tag: the parent directory's name in each hierarchy.
    :param fs: the cgroup filesystem.
    :param kill: signal sender used by :meth:`CgroupV1Agent.kill_all`.
    """

    name = "cgroup1"

    def __init__(self, layout: V1Layout, *, kernel_tag: str, fs: CgroupFS, kill: KillFn = os.kill) -> None:
        super().__init__(kernel_tag=kernel_tag, fs=fs, kill=kill)
        self._layout = layout
        self._parent_of = {c: d / kernel_tag for c, d in layout.own.items()}
        self._parents = tuple(dict.fromkeys(self._parent_of.values()))

    @property
    def base_dirs(self) -> tuple[Path, ...]:
        return tuple(dict.fromkeys(self._layout.own.values()))

    def prepare(self) -> None:
        self._check_open()
        if self._prepared:
            return
        made: list[Path] = []
        for parent in self._parents:
            try:
                self.fs.mkdir(parent)
            except FileExistsError:
                continue
            except OSError as err:
                for d in reversed(made):
                    rmdir_quiet(self.fs, d)
                raise SandboxError(
                    f"cannot create cgroup {parent}: {err.strerror or err}",
                    details={"path": str(parent), "errno": err.errno},
                ) from err
            made.append(parent)
        self._prepared = True

    def create(self, name: str, limits: Limits) -> CgroupV1Agent:
        check_component("name", name)
        self.prepare()
        by_controller = {c: p / name for c, p in self._parent_of.items()}
        made: list[Path] = []
        try:
            for d in dict.fromkeys(by_controller.values()):
                try:
                    self.fs.mkdir(d)
                except OSError as err:
                    why = "already exists" if err.errno == errno.EEXIST else (err.strerror or str(err))
                    raise SandboxError(
                        f"cannot create cgroup {d}: {why}", details={"path": str(d), "errno": err.errno}
                    ) from err
                made.append(d)
            report = self._apply(by_controller, limits)
        except SandboxError:
            for d in reversed(made):
                rmdir_quiet(self.fs, d)
            raise
        agent = CgroupV1Agent(
            name=name, by_controller=by_controller, report=report, fs=self.fs, kill=self._kill
        )
        self._register(agent)
        log.debug("created %r with %s", agent, limits)
        return agent

    def apply_limits(self, agent: AgentCgroup, limits: Limits) -> dict[str, LimitReport]:
        if not isinstance(agent, CgroupV1Agent):
            raise SandboxError(f"{agent!r} is not a cgroup v1 agent")
        agent._report = self._apply(agent._by, limits)
        return dict(agent._report)

    def _apply(self, dirs: Mapping[str, Path], limits: Limits) -> dict[str, LimitReport]:
        """Write the limit files; returns the report. Raises :class:`SandboxError` on a refusal."""

        def memory(mem: int) -> str:
            write_control(self.fs, dirs["memory"] / "memory.limit_in_bytes", str(mem))
            memsw = dirs["memory"] / "memory.memsw.limit_in_bytes"
            if not self.fs.exists(memsw):
                return "memory.limit_in_bytes"
            write_control(self.fs, memsw, str(mem))  # memory+swap: swap cannot dodge the limit
            return "memory.limit_in_bytes+memory.memsw.limit_in_bytes"

        def cpu(quota: int) -> str:
            write_control(self.fs, dirs["cpu"] / "cpu.cfs_period_us", str(limits.cpu_period_us))
            write_control(self.fs, dirs["cpu"] / "cpu.cfs_quota_us", str(quota))
            return "cpu.cfs_quota_us"

        def pids(count: int) -> str:
            write_control(self.fs, dirs["pids"] / "pids.max", str(count))
            return "pids.max"

        return limit_report(limits, set(dirs), {"memory": memory, "cpu": cpu, "pids": pids})

    def close(self) -> None:
        self._close_agents()
        for parent in reversed(self._parents):
            rmdir_quiet(self.fs, parent)
        self._closed = True

    def controllers(self) -> frozenset[str]:
        return frozenset(c for c in ("memory", "cpu", "pids") if c in self._layout.own)

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "kernel_tag": self.kernel_tag,
            "parents": {c: str(p) for c, p in self._parent_of.items()},
            "controllers": sorted(self._layout.own),
            "missing": dict(self._layout.missing),
        }
