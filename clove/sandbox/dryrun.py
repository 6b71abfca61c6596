"""A :class:`~.cgroupfs.CgroupFS` that reads the real hierarchy and only pretends to change it.

``clove doctor`` runs the kernel's own :func:`~.backends.detect_backend` (and so each backend's
``prepare``) against this filesystem: the backend chosen, the reasons and the changes it would
make are exactly the kernel's, and nothing on the host changes. Every ``mkdir``, ``rmdir`` and
write is checked the way the kernel would refuse it where that can be known without doing it:

* a read-only mount (``EROFS``) or no write permission (``EACCES``, by ``access(2)``);
* ``ENOENT`` for a file or parent that does not exist, ``EEXIST`` for a directory that does;
* on cgroup v2, ``EBUSY`` for enabling controllers in ``cgroup.subtree_control`` of a non-root
  cgroup that still holds processes (the "no internal processes" rule), counting the moves
  into ``cgroup.procs`` this filesystem pretended.

What it cannot know (a write the kernel refuses for its value) is taken as accepted.
:attr:`DryRunCgroupFS.changes` lists what was pretended, in order.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import final

from clove.sandbox.cgroupfs import RealCgroupFS

__all__ = ["DryRunCgroupFS", "is_writable"]


def is_writable(path: Path) -> int:
    """``0`` when this process may write ``path``, else the errno the kernel would give."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return errno.EROFS
    except OSError as err:
        return err.errno or errno.EIO
    return 0 if os.access(path, os.W_OK) else errno.EACCES


def _refuse(code: int, path: Path) -> OSError:
    return OSError(code, os.strerror(code), str(path))


@final
class DryRunCgroupFS:
    """Reads pass through to the real files; changes are checked and remembered, never made.

    :param writable: returns ``0`` or the errno for writing a path (default :func:`is_writable`;
        tests give their own, since root may write anything).
    """

    def __init__(self, writable: Callable[[Path], int] = is_writable) -> None:
        self._real = RealCgroupFS()
        self._writable = writable
        self._made: set[Path] = set()
        self._removed: set[Path] = set()
        self._moved: dict[int, Path] = {}  # pid -> the cgroup it was pretended into
        #: What would have been done: ``("mkdir", path)``, ``("rmdir", path)``, ``("write", path, text)``.
        self.changes: list[tuple[str, ...]] = []

    def _pretend(self, path: Path) -> bool:
        """Whether ``path`` is, or lies inside, a directory this filesystem pretended to make."""
        return path in self._made or path.parent in self._made

    def exists(self, path: Path) -> bool:
        if path in self._removed or path.parent in self._removed:
            return False
        return self._pretend(path) or self._real.exists(path)

    def listdir(self, path: Path) -> list[str]:
        names = set() if path in self._made else set(self._real.listdir(path))
        names |= {p.name for p in self._made if p.parent == path}
        return sorted(names - {p.name for p in self._removed if p.parent == path})

    def read_text(self, path: Path) -> str:
        if self._pretend(path):
            return ""  # a new cgroup: no processes, nothing enabled for its children
        return self._real.read_text(path)

    def mkdir(self, path: Path) -> None:
        if self.exists(path):
            raise _refuse(errno.EEXIST, path)
        if not self.exists(path.parent):
            raise _refuse(errno.ENOENT, path)
        if not self._pretend(path.parent) and (code := self._writable(path.parent)):
            raise _refuse(code, path)
        self._removed.discard(path)
        self._made.add(path)
        self.changes.append(("mkdir", str(path)))

    def rmdir(self, path: Path) -> None:
        if not self.exists(path):
            raise _refuse(errno.ENOENT, path)
        if path in self._made:
            self._made.discard(path)
        elif code := self._writable(path.parent):
            raise _refuse(code, path)
        else:
            self._removed.add(path)
        self.changes.append(("rmdir", str(path)))

    def write_text(self, path: Path, text: str) -> None:
        if not self.exists(path):
            raise _refuse(errno.ENOENT, path)
        if not self._pretend(path):
            if code := self._writable(path):
                raise _refuse(code, path)
            if path.name == "cgroup.subtree_control" and "+" in text and self._holds_processes(path.parent):
                raise _refuse(errno.EBUSY, path)
        if path.name == "cgroup.procs" and text.strip().isdigit():
            self._moved[int(text)] = path.parent
        self.changes.append(("write", str(path), text))

    def _holds_processes(self, cgroup: Path) -> bool:
        """Whether a non-root v2 cgroup still has processes once the pretended moves are counted."""
        if not self._real.exists(cgroup.parent / "cgroup.procs"):
            return False  # the hierarchy's root is exempt from the rule
        try:
            pids = [int(tok) for tok in self._real.read_text(cgroup / "cgroup.procs").split() if tok.isdigit()]
        except OSError:
            return False
        return any(self._moved.get(pid, cgroup) == cgroup for pid in pids)
