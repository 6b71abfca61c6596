"""Whose filesystem a file request sees: a :class:`View` is one caller's root, working
directory and credentials (:mod:`clove.kernel.services.files` resolves, checks and opens paths
in it).

An agent sees its sandbox: ``/tmp`` is its private tmpfs and the rest is its read-only mount
view. The kernel reaches that view through ``/proc/<agent pid>/root`` (the process is pinned by
a ``/proc/<pid>`` directory fd and checked to run as the agent's uid, so a reused pid cannot
stand in for it). An operator sees the host. Relative paths start at the agent's work dir, or at
the operator process's working directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from clove.errors import Conflict, InvalidArguments
from clove.sandbox.rootfs import Credentials

if TYPE_CHECKING:
    from clove.kernel.core.agents import Agent
    from clove.kernel.core.sessions import OperatorSession

MAX_PATH: Final = 4096


@dataclass(eq=False)
class View:
    """One caller's filesystem: its root (an ``O_PATH`` fd the view owns), the directory
    relative paths start from, and the credentials every access uses."""

    root_fd: int
    cwd: str | None
    creds: Credentials | None = None
    who: str = "caller"

    def close(self) -> None:
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    def __enter__(self) -> View:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def absolute(self, path: str) -> str:
        """``path`` made absolute in this view (not resolved).

        :raises InvalidArguments: empty, too long, a NUL byte, or relative with no base.
        """
        if not path or len(path) > MAX_PATH or "\x00" in path:
            raise InvalidArguments("path must be 1-4096 characters without NUL", details={"argument": "path"})
        if path.startswith("/"):
            return path
        if self.cwd is None:
            raise InvalidArguments(
                f"relative path {path!r}, but the {self.who}'s working directory is unknown: "
                "give an absolute path",
                details={"argument": "path", "path": path},
            )
        return self.cwd.rstrip("/") + "/" + path


# ---- whose view --------------------------------------------------------------------------------


def _status_ids(proc_fd: int) -> tuple[list[int], list[int], list[int]]:
    """Uid, Gid and Groups of the process behind a ``/proc/<pid>`` fd."""
    fd = os.open("status", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc_fd)
    try:
        text = os.read(fd, 1 << 16).decode(errors="replace")
    finally:
        os.close(fd)
    found: dict[str, list[int]] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            found[key] = [int(v) for v in value.split()]
    return found.get("Uid", []), found.get("Gid", []), found.get("Groups", [])


def agent_view(agent: Agent, work_dir: str) -> View:
    """The agent's own filesystem (its mount namespace), as its uid.

    :raises Conflict: the agent has no running process.
    """
    not_running = Conflict(
        f"agent {agent.name!r} is not running ({agent.state.value}); "
        "its files are reachable only while it runs",
        details={"agent_id": agent.id, "state": agent.state.value},
    )
    if agent.pid is None:
        raise not_running
    if not agent.spec.sandboxed or agent.uid is None:
        return View(os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), work_dir, None, who="agent")
    try:
        proc_fd = os.open(f"/proc/{agent.pid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise not_running from None
    try:
        # The /proc/<pid> fd pins that very process: if it died and the pid was reused, these
        # fail rather than describe the newcomer. Only the agent's processes run as its uid.
        root_fd = os.open("root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=proc_fd)
        try:
            uids, _, _ = _status_ids(proc_fd)
        except OSError:
            os.close(root_fd)
            raise
        if not uids or any(u != agent.uid for u in uids):
            os.close(root_fd)
            raise not_running
    except (FileNotFoundError, ProcessLookupError, PermissionError):  # gone, or a zombie
        raise not_running from None
    finally:
        os.close(proc_fd)
    return View(root_fd, work_dir, Credentials(agent.uid, agent.uid, ()), who="agent")


def operator_identity(session: OperatorSession | None) -> tuple[Credentials | None, str | None]:
    """An operator's credentials (from the control socket's peer credentials and its process's
    groups) and working directory; ``None`` for what is unknown or needs no switch."""
    if session is None or session.uid is None:
        return None, None
    gid = session.gid if session.gid is not None else session.uid
    groups: tuple[int, ...] = (gid,)
    cwd: str | None = None
    if session.pid is not None:
        try:
            proc_fd = os.open(f"/proc/{session.pid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            proc_fd = -1
        if proc_fd >= 0:
            try:
                uids, _, proc_groups = _status_ids(proc_fd)
                if uids and uids[0] == session.uid:  # still the process that connected
                    groups = tuple(proc_groups)
                    cwd = os.readlink("cwd", dir_fd=proc_fd)
            except OSError:
                pass
            finally:
                os.close(proc_fd)
    if os.geteuid() != 0 or session.uid == os.geteuid():
        return None, cwd
    return Credentials(session.uid, gid, groups), cwd


def operator_view(session: OperatorSession | None) -> View:
    """The host's filesystem, with the operator's own permissions."""
    creds, cwd = operator_identity(session)
    return View(os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), cwd, creds, who="operator")
