"""An in-memory cgroup filesystem that behaves like the kernel's, for tests without root.

:class:`FakeCgroupFS` implements :class:`clove.sandbox.cgroupfs.CgroupFS`. Mount v1 and v2
hierarchies with :meth:`~FakeCgroupFS.add_v1_hierarchy` / :meth:`~FakeCgroupFS.add_v2_hierarchy`,
put plain files such as ``/proc/self/cgroup`` with :meth:`~FakeCgroupFS.add_file`, and register
processes with :meth:`~FakeCgroupFS.add_process`. It mimics the kernel where the backends depend
on it:

* ``mkdir`` creates the control files of the hierarchy's controllers (v2: of the controllers
  enabled in the parent's ``cgroup.subtree_control``); ``EEXIST``/``ENOENT`` as usual.
* ``rmdir`` fails with ``EBUSY`` while the cgroup has processes or sub-cgroups, and on a root.
* writing a pid to ``cgroup.procs`` moves it within that hierarchy (``ESRCH`` for unknown pids;
  v2: ``EBUSY`` into a non-root cgroup that has controllers enabled for its children).
* limit files validate their format (``EINVAL``) and memory limits round down to the page size;
  ``memory.limit_in_bytes`` may not exceed ``memory.memsw.limit_in_bytes`` and vice versa.
* ``cgroup.subtree_control`` takes ``+ctrl``/``-ctrl`` (``ENOENT`` for unavailable controllers,
  ``EBUSY`` for the no-internal-processes rule).
* ``cgroup.kill`` and :meth:`~FakeCgroupFS.kill` with SIGKILL remove processes everywhere;
  a SIGKILL to a process in a frozen cgroup takes effect on thaw, as on v1.
* writing to a read-only file gives ``EACCES``; :meth:`~FakeCgroupFS.fail` injects any errno.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import final

__all__ = ["FakeCgroupFS"]

_UNLIMITED_V1 = "9223372036854771712"
_V1_FILES: dict[str, dict[str, str]] = {
    "memory": {
        "memory.limit_in_bytes": _UNLIMITED_V1,
        "memory.usage_in_bytes": "0",
        "memory.max_usage_in_bytes": "0",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        "memory.failcnt": "0",
    },
    "cpu": {
        "cpu.cfs_period_us": "100000",
        "cpu.cfs_quota_us": "-1",
        "cpu.stat": "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n",
    },
    "cpuacct": {"cpuacct.usage": "0"},
    "pids": {"pids.max": "max", "pids.current": "0"},
    "freezer": {"freezer.state": "THAWED"},
}
_V2_FILES: dict[str, dict[str, str]] = {
    "memory": {
        "memory.max": "max",
        "memory.current": "0",
        "memory.peak": "0",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
    },
    "cpu": {"cpu.max": "max 100000"},
    "pids": {"pids.max": "max", "pids.current": "0"},
}
_WRITABLE = {
    "cgroup.procs", "tasks", "cgroup.subtree_control", "cgroup.freeze", "cgroup.kill", "freezer.state",
    "memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "cpu.cfs_period_us", "cpu.cfs_quota_us",
    "pids.max", "memory.max", "memory.swap.max", "cpu.max",
}  # fmt: skip
_NO_ROOT = {"pids.max", "pids.current", "freezer.state", "cgroup.freeze", "cgroup.kill", "cgroup.events"}


def _err(code: int, path: object) -> OSError:
    return OSError(code, os.strerror(code), str(path))


def _require(ok: bool, path: PurePosixPath) -> None:
    if not ok:
        raise _err(errno.EINVAL, path)


@dataclass(eq=False)
class _Hierarchy:
    mount: PurePosixPath
    version: int
    controllers: tuple[str, ...]
    memsw: bool = True
    swap: bool = True
    freeze: bool = True
    kill: bool = True


@dataclass(eq=False)
class _Node:
    hier: _Hierarchy
    path: PurePosixPath
    files: dict[str, str] = field(default_factory=dict)
    procs: set[int] = field(default_factory=set)
    subtree: list[str] = field(default_factory=list)
    frozen: bool = False

    @property
    def is_root(self) -> bool:
        return self.path == self.hier.mount


@final
class FakeCgroupFS:
    """In-memory :class:`~clove.sandbox.cgroupfs.CgroupFS` with kernel-like behaviour.

    :param page_size: memory limits round down to a multiple of this.

    Public state for assertions: :attr:`signals` (every ``(pid, sig)`` sent through
    :meth:`kill`), :attr:`killed` (pids that died), :attr:`writes` (every successful
    ``(path, text)`` write, in order). :attr:`v1_freeze_result` is what ``freezer.state`` reads
    after ``FROZEN`` is written (set ``"FREEZING"`` to model a freeze still in progress).
    """

    def __init__(self, *, page_size: int = 4096) -> None:
        self.page_size = page_size
        self.signals: list[tuple[int, int]] = []
        self.killed: set[int] = set()
        self.writes: list[tuple[str, str]] = []
        self.v1_freeze_result = "FROZEN"
        self._plain: dict[PurePosixPath, str] = {}
        self._hiers: list[_Hierarchy] = []
        self._nodes: dict[PurePosixPath, _Node] = {}
        self._alive: set[int] = set()
        self._pending_kill: set[int] = set()
        self._fail: dict[tuple[str, PurePosixPath], int] = {}

    # -- set-up ------------------------------------------------------------------------------
    def add_v1_hierarchy(self, mount: str | Path, controllers: Iterable[str], *, memsw: bool = True) -> None:
        """Mount a v1 hierarchy with ``controllers`` (``memsw=False``: no swap accounting)."""
        hier = _Hierarchy(PurePosixPath(mount), 1, tuple(controllers), memsw=memsw)
        self._mount(hier)

    def add_v2_hierarchy(
        self,
        mount: str | Path,
        controllers: Iterable[str] = ("memory", "cpu", "pids"),
        *,
        swap: bool = True,
        freeze: bool = True,
        kill: bool = True,
    ) -> None:
        """Mount the unified hierarchy offering ``controllers`` at its root."""
        hier = _Hierarchy(PurePosixPath(mount), 2, tuple(controllers), swap=swap, freeze=freeze, kill=kill)
        self._mount(hier)

    def add_file(self, path: str | Path, text: str) -> None:
        """Create or replace a plain (non-cgroup) file, such as ``/proc/self/cgroup``."""
        self._plain[PurePosixPath(path)] = text

    def makedirs(self, path: str | Path) -> None:
        """``mkdir -p`` inside a hierarchy (for the cgroups a test starts in)."""
        p = PurePosixPath(path)
        for ancestor in [*reversed(p.parents), p]:
            if ancestor not in self._nodes and self._hier_of(ancestor) is not None:
                self.mkdir(ancestor)

    def add_process(self, pid: int, *, cgroups: Iterable[str | Path] = (), parent: int | None = None) -> None:
        """Register a live process, placed in ``cgroups`` (one dir per hierarchy), else with
        ``parent``'s cgroups (a fork: ``BlockingIOError`` if a ``pids.max`` is reached), else in
        every hierarchy's root."""
        if parent is not None and parent not in self._alive:
            raise ProcessLookupError(errno.ESRCH, "No such process")
        places = {self._hier_of(PurePosixPath(c)): PurePosixPath(c) for c in cgroups}
        targets: list[_Node] = []
        for hier in self._hiers:
            if hier in places:
                node = self._node(places[hier])
            elif parent is not None:
                node = next(n for n in self._nodes.values() if n.hier is hier and parent in n.procs)
                if not self._fork_allowed(node):
                    raise BlockingIOError(errno.EAGAIN, "fork: pids.max reached", str(node.path))
            else:
                node = self._nodes[hier.mount]
            targets.append(node)
        self._alive.add(pid)
        for node in targets:
            self._move(pid, node)

    def set_value(self, path: str | Path, text: str) -> None:
        """Set a control file's content directly (counters such as ``memory.oom_control``)."""
        p = PurePosixPath(path)
        node = self._node(p.parent)
        if p.name not in node.files:
            raise _err(errno.ENOENT, p)
        node.files[p.name] = text

    def fail(self, op: str, path: str | Path, code: int) -> None:
        """Make the next ``op`` (``"mkdir"``, ``"rmdir"``, ``"read"``, ``"write"``) on ``path``
        raise :class:`OSError` with ``code``."""
        self._fail[(op, PurePosixPath(path))] = code

    def kill(self, pid: int, sig: int) -> None:
        """An ``os.kill`` for the fake processes; SIGKILL makes them exit (on thaw if frozen)."""
        if pid not in self._alive:
            raise ProcessLookupError(errno.ESRCH, "No such process")
        self.signals.append((pid, sig))
        if sig == signal.SIGKILL:
            if any(n.frozen and pid in n.procs for n in self._nodes.values()):
                self._pending_kill.add(pid)
            else:
                self._exit(pid)

    def cgroup_dirs(self) -> list[str]:
        """Every non-root cgroup directory, sorted (for leak checks)."""
        return sorted(str(p) for p, n in self._nodes.items() if not n.is_root)

    # -- CgroupFS ----------------------------------------------------------------------------
    def mkdir(self, path: Path | PurePosixPath) -> None:
        p = PurePosixPath(path)
        self._maybe_fail("mkdir", p)
        if p in self._nodes or p in self._plain:
            raise FileExistsError(errno.EEXIST, "File exists", str(p))
        parent = self._nodes.get(p.parent)
        if parent is None:
            raise _err(errno.ENOENT if not self._is_plain_dir(p.parent) else errno.EACCES, p)
        node = _Node(parent.hier, p)
        node.files = self._control_files(parent.hier, parent, root=False)
        self._nodes[p] = node

    def rmdir(self, path: Path | PurePosixPath) -> None:
        p = PurePosixPath(path)
        self._maybe_fail("rmdir", p)
        node = self._nodes.get(p)
        if node is None:
            raise _err(errno.ENOENT, p)
        if node.is_root or node.procs or self._children(node):
            raise _err(errno.EBUSY, p)
        del self._nodes[p]

    def read_text(self, path: Path | PurePosixPath) -> str:
        p = PurePosixPath(path)
        self._maybe_fail("read", p)
        if p in self._plain:
            return self._plain[p]
        if p in self._nodes or self._is_plain_dir(p):
            raise _err(errno.EISDIR, p)
        node = self._nodes.get(p.parent)
        if node is None or p.name not in node.files:
            raise _err(errno.ENOENT, p)
        return self._render(node, p.name)

    def write_text(self, path: Path | PurePosixPath, text: str) -> None:
        p = PurePosixPath(path)
        self._maybe_fail("write", p)
        node = self._nodes.get(p.parent)
        if node is None or p.name not in node.files:
            raise _err(errno.ENOENT, p)
        if p.name not in _WRITABLE:
            raise _err(errno.EACCES, p)
        self._write(node, p.name, text.strip(), p)
        self.writes.append((str(p), text))

    def exists(self, path: Path | PurePosixPath) -> bool:
        p = PurePosixPath(path)
        if p in self._plain or p in self._nodes or self._is_plain_dir(p):
            return True
        node = self._nodes.get(p.parent)
        return node is not None and p.name in node.files

    def listdir(self, path: Path | PurePosixPath) -> list[str]:
        p = PurePosixPath(path)
        node = self._nodes.get(p)
        if node is not None:
            return sorted(node.files) + sorted(c.path.name for c in self._children(node))
        if not self._is_plain_dir(p):
            raise _err(errno.ENOENT, p)
        names = {q.relative_to(p).parts[0] for q in [*self._plain, *self._nodes] if p in q.parents}
        return sorted(names)

    # -- kernel model ------------------------------------------------------------------------
    def _mount(self, hier: _Hierarchy) -> None:
        self._hiers.append(hier)
        root = _Node(hier, hier.mount)
        root.files = self._control_files(hier, None, root=True)
        self._nodes[hier.mount] = root

    def _control_files(self, hier: _Hierarchy, parent: _Node | None, *, root: bool) -> dict[str, str]:
        files = {"cgroup.procs": ""}
        if hier.version == 1:
            files["tasks"] = ""
            for c in hier.controllers:
                files.update(_V1_FILES.get(c, {}))
            if "memory" in hier.controllers and hier.memsw:
                files["memory.memsw.limit_in_bytes"] = _UNLIMITED_V1
        else:
            files.update({"cgroup.controllers": "", "cgroup.subtree_control": "", "cpu.stat": ""})
            files.update({"cgroup.events": "", "cgroup.type": "domain"})
            if hier.freeze:
                files["cgroup.freeze"] = "0"
            if hier.kill:
                files["cgroup.kill"] = ""
            for c in parent.subtree if parent is not None else ():
                files.update(self._v2_controller_files(hier, c))
        if root:
            for name in _NO_ROOT:
                files.pop(name, None)
        return files

    @staticmethod
    def _v2_controller_files(hier: _Hierarchy, controller: str) -> dict[str, str]:
        files = dict(_V2_FILES.get(controller, {}))
        if controller == "memory" and hier.swap:
            files["memory.swap.max"] = "max"
        return files

    def _render(self, node: _Node, name: str) -> str:
        if name in ("cgroup.procs", "tasks"):
            return "".join(f"{pid}\n" for pid in sorted(node.procs))
        if name == "pids.current":
            return f"{len(self._subtree_procs(node))}\n"
        if name == "cgroup.controllers":
            parent = self._nodes.get(node.path.parent)
            avail = node.hier.controllers if node.is_root or parent is None else parent.subtree
            return " ".join(avail) + "\n"
        if name == "cgroup.subtree_control":
            return " ".join(node.subtree) + "\n"
        if name == "cgroup.events":
            populated = int(bool(self._subtree_procs(node)))
            return f"populated {populated}\nfrozen {int(node.frozen)}\n"
        if name == "cpu.stat" and node.hier.version == 2 and not node.files[name]:
            return (
                "usage_usec 0\nuser_usec 0\nsystem_usec 0\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n"
            )
        return node.files[name]

    def _write(self, node: _Node, name: str, text: str, p: PurePosixPath) -> None:
        if name in ("cgroup.procs", "tasks"):
            pid = self._int(text, p)
            if pid not in self._alive:
                raise _err(errno.ESRCH, p)
            if node.hier.version == 2 and not node.is_root and node.subtree:
                raise _err(errno.EBUSY, p)
            self._move(pid, node)
        elif name == "cgroup.subtree_control":
            self._subtree_control(node, text.split(), p)
        elif name == "cgroup.kill":
            _require(text == "1", p)
            for pid in self._subtree_procs(node):
                self._exit(pid)
        elif name in ("cgroup.freeze", "freezer.state"):
            _require(text in (("0", "1") if name == "cgroup.freeze" else ("FROZEN", "THAWED")), p)
            node.frozen = text in ("1", "FROZEN")
            node.files[name] = self.v1_freeze_result if text == "FROZEN" else text
            self._thawed(node)
        else:
            node.files[name] = self._limit(node, name, text, p)

    def _limit(self, node: _Node, name: str, text: str, p: PurePosixPath) -> str:
        """Validate a limit value as the kernel does; returns what the file reads back."""
        if name in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
            value = self._int(text, p)
            value = int(_UNLIMITED_V1) if value == -1 else value - value % self.page_size
            mem, memsw = (
                node.files.get("memory.limit_in_bytes"),
                node.files.get("memory.memsw.limit_in_bytes"),
            )
            if name == "memory.limit_in_bytes":
                _require(memsw is None or value <= int(memsw), p)  # memory <= memory+swap
            else:
                _require(mem is None or value >= int(mem), p)
            return str(value)
        if name == "cpu.cfs_period_us":
            _require(1000 <= self._int(text, p) <= 1_000_000, p)
        elif name == "cpu.cfs_quota_us":
            _require(self._int(text, p) == -1 or self._int(text, p) >= 1000, p)
        elif name in ("pids.max", "memory.max", "memory.swap.max") and text != "max":
            value = self._int(text, p)
            _require(value >= 0, p)
            return text if name == "pids.max" else str(value - value % self.page_size)
        elif name == "cpu.max":
            parts = text.split()
            _require(1 <= len(parts) <= 2 and (parts[0] == "max" or self._int(parts[0], p) >= 1000), p)
            period = self._int(parts[1], p) if len(parts) == 2 else int(node.files[name].split()[1])
            _require(1000 <= period <= 1_000_000, p)
            return f"{parts[0]} {period}"
        return text

    def _subtree_control(self, node: _Node, tokens: list[str], p: PurePosixPath) -> None:
        available = node.hier.controllers if node.is_root else self._nodes[node.path.parent].subtree
        for tok in tokens:
            if len(tok) < 2 or tok[0] not in "+-" or tok[1:] not in available:
                raise _err(errno.ENOENT if tok[:1] in ("+", "-") else errno.EINVAL, p)
        for tok in tokens:
            ctrl = tok[1:]
            if tok[0] == "+" and ctrl not in node.subtree:
                if not node.is_root and node.procs:
                    raise _err(errno.EBUSY, p)
                node.subtree.append(ctrl)
                for child in self._children(node):
                    child.files.update(self._v2_controller_files(node.hier, ctrl))
            elif tok[0] == "-" and ctrl in node.subtree:
                if any(ctrl in child.subtree for child in self._children(node)):
                    raise _err(errno.EBUSY, p)
                node.subtree.remove(ctrl)
                for child in self._children(node):
                    for fname in self._v2_controller_files(node.hier, ctrl):
                        child.files.pop(fname, None)

    def _fork_allowed(self, node: _Node) -> bool:
        walk: _Node | None = node
        while walk is not None:
            limit = walk.files.get("pids.max", "max")
            if limit != "max" and len(self._subtree_procs(walk)) >= int(limit):
                return False
            walk = None if walk.is_root else self._nodes.get(walk.path.parent)
        return True

    def _thawed(self, node: _Node) -> None:
        if not node.frozen:
            for pid in sorted(self._pending_kill & node.procs):
                self._exit(pid)

    def _exit(self, pid: int) -> None:
        self._alive.discard(pid)
        self._pending_kill.discard(pid)
        self.killed.add(pid)
        for n in self._nodes.values():
            n.procs.discard(pid)

    def _move(self, pid: int, node: _Node) -> None:
        for n in self._nodes.values():
            if n.hier is node.hier:
                n.procs.discard(pid)
        node.procs.add(pid)

    def _children(self, node: _Node) -> list[_Node]:
        return [n for p, n in self._nodes.items() if p.parent == node.path and p != node.path]

    def _subtree_procs(self, node: _Node) -> set[int]:
        out: set[int] = set()
        for p, n in self._nodes.items():
            if p == node.path or node.path in p.parents:
                out |= n.procs
        return out

    def _hier_of(self, p: PurePosixPath) -> _Hierarchy | None:
        return next((h for h in self._hiers if p == h.mount or h.mount in p.parents), None)

    def _node(self, p: PurePosixPath) -> _Node:
        node = self._nodes.get(p)
        if node is None:
            raise _err(errno.ENOENT, p)
        return node

    def _is_plain_dir(self, p: PurePosixPath) -> bool:
        return p not in self._nodes and any(p in q.parents for q in [*self._plain, *self._nodes])

    def _maybe_fail(self, op: str, p: PurePosixPath) -> None:
        code = self._fail.pop((op, p), None)
        if code is not None:
            raise _err(code, p)

    @staticmethod
    def _int(text: str, p: PurePosixPath) -> int:
        try:
            return int(text)
        except ValueError:
            raise _err(errno.EINVAL, p) from None
