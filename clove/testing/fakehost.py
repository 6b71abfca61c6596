"""A fake host under a directory: ``proc/``, ``sys/`` and ``dev/`` trees for probes that take
their roots as arguments (``clove doctor``'s), so a test describes a machine in a few calls.

Plain files only: cgroup directories with their control files, ``/proc/self/cgroup`` and
``/proc/self/mounts`` kept consistent with the hierarchies added, sysctls, network interfaces
and GPIO chips (``/dev/gpiochipN`` is a regular file, so label and lines come from sysfs).
Every cgroup holds the calling process unless told otherwise, as the prober's own would.

    host = FakeHost(tmp_path)
    host.cgroup_v2(own="system.slice/clove.service", controllers=("memory", "cpu", "pids"))
    host.sysctl("kernel/apparmor_restrict_unprivileged_userns", 1)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

__all__ = ["FakeHost"]

#: Every controller a v2 root offers on a typical machine.
V2_ROOT_CONTROLLERS: Final = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc")


class FakeHost:
    """:param root: an empty directory; ``proc``, ``sys`` and ``dev`` are made under it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc = root / "proc"
        self.sys = root / "sys"
        self.dev = root / "dev"
        self.cgroup_root = self.sys / "fs" / "cgroup"
        for d in (self.proc / "self" / "ns", self.proc / "sys" / "kernel" / "seccomp", self.cgroup_root, self.dev):
            d.mkdir(parents=True, exist_ok=True)
        self._mounts: list[str] = []
        self._cgroups: list[str] = []
        self._flush()
        self.write("proc/self/status", "Name:\tpython\nSeccomp:\t0\nSeccomp_filters:\t0\n")
        self.write("proc/sys/kernel/seccomp/actions_avail", "kill_process kill_thread trap errno user_notif trace log allow\n")
        for entry in ("mnt", "uts", "ipc", "pid", "net", "user", "cgroup"):
            self.write(f"proc/self/ns/{entry}", "")

    def write(self, relative: str, text: str) -> Path:
        """Write a file under the root (parents made)."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def _flush(self) -> None:
        self.write("proc/self/mounts", "".join(self._mounts))
        self.write("proc/self/cgroup", "".join(self._cgroups))

    def _cgroup_dir(self, path: Path, files: dict[str, str]) -> None:
        path.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (path / name).write_text(text)

    def cgroup_v1(self, controllers: Iterable[str], *, own: str = "", pids: Iterable[int] | None = None) -> None:
        """Mount one v1 hierarchy (``"cpu,cpuacct"`` co-mounts) with this process in ``own``."""
        group = ",".join(controllers)
        mount = self.cgroup_root / group
        procs = "".join(f"{p}\n" for p in (pids if pids is not None else [os.getpid()]))
        self._cgroup_dir(mount, {"cgroup.procs": "" if own else procs})
        parts = [p for p in own.split("/") if p]
        for i in range(1, len(parts) + 1):
            last = i == len(parts)
            self._cgroup_dir(mount.joinpath(*parts[:i]), {"cgroup.procs": procs if last else ""})
        self._mounts.append(f"cgroup /sys/fs/cgroup/{group} cgroup rw,nosuid,nodev,noexec,relatime,{group} 0 0\n")
        self._cgroups.insert(0, f"{len(self._cgroups) + 1}:{group}:/{own}\n")
        self._flush()

    def cgroup_v2(
        self,
        *,
        own: str = "",
        controllers: Iterable[str] = V2_ROOT_CONTROLLERS,
        enabled: Iterable[str] = (),
        pids: Iterable[int] | None = None,
        unified: bool = False,
    ) -> Path:
        """Mount the unified hierarchy (at ``unified/`` beside v1 ones when ``unified``), with this
        process (or ``pids``) in ``own``, which offers ``controllers`` and enables ``enabled``
        for its children. Returns ``own``'s directory."""
        mount = self.cgroup_root / "unified" if unified else self.cgroup_root
        offered = tuple(controllers)
        procs = "".join(f"{p}\n" for p in (pids if pids is not None else [os.getpid()]))
        parts = [p for p in own.split("/") if p]
        root_files = {"cgroup.controllers": " ".join(V2_ROOT_CONTROLLERS if parts else offered) + "\n",
                      "cgroup.subtree_control": " ".join(offered if parts else enabled) + "\n",
                      "cgroup.procs": "" if parts else procs}  # fmt: skip
        self._cgroup_dir(mount, root_files)
        for i in range(1, len(parts) + 1):
            last = i == len(parts)
            self._cgroup_dir(
                mount.joinpath(*parts[:i]),
                {"cgroup.controllers": " ".join(offered) + "\n",
                 "cgroup.subtree_control": " ".join(enabled if last else offered) + "\n",
                 "cgroup.procs": procs if last else ""},
            )  # fmt: skip
        where = "/sys/fs/cgroup/unified" if unified else "/sys/fs/cgroup"
        self._mounts.append(f"cgroup2 {where} cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n")
        self._cgroups.append(f"0::/{own}\n")
        self._flush()
        return mount.joinpath(*parts)

    def sysctl(self, name: str, value: int | str) -> None:
        """``/proc/sys/<name>``, e.g. ``"kernel/apparmor_restrict_unprivileged_userns"``."""
        self.write(f"proc/sys/{name}", f"{value}\n")

    def lsm(self, *modules: str) -> None:
        """The active security modules (``/sys/kernel/security/lsm``)."""
        self.write("sys/kernel/security/lsm", ",".join(modules))

    def net_interface(self, name: str, *, type: int = 280, operstate: str = "up", mtu: int = 16, hardware: bool = False) -> None:
        """A network interface in ``/sys/class/net`` (``type`` 280 is CAN)."""
        base = f"sys/class/net/{name}"
        self.write(f"{base}/type", f"{type}\n")
        self.write(f"{base}/operstate", f"{operstate}\n")
        self.write(f"{base}/mtu", f"{mtu}\n")
        if hardware:
            (self.root / base / "device").mkdir()

    def gpiochip(self, number: int, *, label: str, lines: int, base: int = 512) -> Path:
        """``/dev/gpiochipN`` and its sysfs label and line count."""
        chip = self.write(f"dev/gpiochip{number}", "")
        legacy = f"sys/bus/gpio/devices/gpiochip{number}/gpio/gpiochip{base}"
        self.write(f"{legacy}/label", f"{label}\n")
        self.write(f"{legacy}/ngpio", f"{lines}\n")
        return chip

    def modules(self, *names: str) -> None:
        """Loaded kernel modules (``/proc/modules``)."""
        self.write("proc/modules", "".join(f"{n} 16384 0 - Live 0x0000000000000000\n" for n in names))
