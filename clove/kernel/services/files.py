"""The file service behind ``fs.read`` and ``fs.write`` (and the working directory of ``exec``):
a path is resolved in the caller's own view of the filesystem, checked against the caller's
grants, and opened with the caller's own Unix permissions.

**Whose filesystem.** An agent sees its sandbox: ``/tmp`` is its private tmpfs and the rest is
its read-only mount view. The kernel reaches that view through ``/proc/<agent pid>/root`` (the
process is pinned by a ``/proc/<pid>`` directory fd and checked to run as the agent's uid, so a
reused pid cannot stand in for it). An operator sees the host. Relative paths start at the
agent's work dir, or at the operator process's working directory.

**Resolution** walks the path one component at a time below that root
(:func:`~clove.sandbox.rootfs.resolve`): each step is one ``fstatat``/``openat2`` on a
single name, ``..`` never climbs above the root, and a symlink's text is resolved again
*inside* the root (magic ``/proc`` links included, which are read as text, never followed). The
result is the canonical path in the caller's view, with no symlink and no ``..`` left, and that
is what the grants are checked against.

**TOCTOU.** The file is then opened with ``openat2(root, canonical, RESOLVE_IN_ROOT |
RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)``: if anything on the way was swapped for a symlink
after the check, the open fails (``ELOOP``) instead of landing somewhere unchecked.

**Unix permissions.** The kernel is root; the whole walk and the open run with the caller's
file-system credentials (``setfsuid``/``setfsgid`` and its supplementary groups, per thread, on
the loop's thread only, restored before the handler returns; see
:func:`~clove.sandbox.rootfs.acting_as`). So an agent can never read a 0600 root file
through the kernel even where a grant pattern matches, files it creates are owned by its uid,
and an operator's files are owned by the operator.

Reads are capped at :data:`MAX_READ_BYTES` (``quota.exceeded`` beyond); writes are bounded by
the kernel's maximum message size. Only regular files are read or written.
"""

from __future__ import annotations

import base64
import errno
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from clove.errors import (
    CloveError,
    Conflict,
    InternalError,
    InvalidArguments,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
)
from clove.kernel.core.agents import AgentState
from clove.kernel.core.deferred import Deferred
from clove.sandbox.rootfs import FINAL, Credentials, acting_as, openat2, resolve

if TYPE_CHECKING:
    from clove.kernel.core.agents import Agent
    from clove.kernel.core.principal import Principal
    from clove.kernel.core.sessions import OperatorSession
    from clove.kernel.services.host import ServiceHost, ServiceRegistry
    from clove.kernel.supervision.supervisor import Supervisor
    from clove.policy import Permissions

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_READ_BYTES: Final = 16 << 20
MAX_PATH: Final = 4096


# ---- views -------------------------------------------------------------------------------------


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


def fs_error(err: OSError, path: str, who: str = "caller") -> CloveError:
    """The structured error for an ``OSError`` met while resolving or opening ``path``."""
    code = err.errno
    details = {"path": path, "errno": errno.errorcode.get(code or 0, str(code))}
    if code in (errno.ENOENT, errno.ENOTDIR):
        return NotFound(f"no such file or directory: {path}", details=details)
    if code in (errno.EACCES, errno.EPERM):
        return PermissionDenied(f"{path}: permission denied for the {who}'s user", details=details)
    if code == errno.EROFS:
        return PermissionDenied(f"{path} is on a read-only file system in the {who}'s view", details=details)
    if code == errno.ELOOP:
        return PermissionDenied(f"{path}: a symlink appeared on the way, or too many links", details=details)
    if code == errno.EISDIR:
        return InvalidArguments(f"{path} is a directory", details={**details, "argument": "path"})
    if code in (errno.ENXIO, errno.ENODEV):
        return InvalidArguments(f"{path} is not a regular file", details={**details, "argument": "path"})
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return QuotaExceeded(f"{path}: {err.strerror}", details=details)
    if code in (errno.EBUSY, errno.ETXTBSY):
        return Conflict(f"{path}: {err.strerror}", details=details)
    if code == errno.ENAMETOOLONG:
        return InvalidArguments(f"{path}: name too long", details={**details, "argument": "path"})
    return InternalError(f"{path}: {err.strerror}", details=details)


# ---- the operations, on a view -----------------------------------------------------------------


def _regular(fd: int, path: str) -> os.stat_result:
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        raise InvalidArguments(f"{path} is a directory", details={"argument": "path", "path": path})
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArguments(f"{path} is not a regular file", details={"argument": "path", "path": path})
    return st


def read_file(
    view: View, perms: Permissions, path: str, *, max_bytes: int = MAX_READ_BYTES
) -> dict[str, Any]:
    """``{success, content, size, encoding, path}``; ``content`` is text when the bytes are
    UTF-8, else base64 (``encoding`` says which)."""
    wanted = view.absolute(path)
    with acting_as(view.creds):
        try:
            resolved, st = resolve(view.root_fd, wanted)
            if st is None:
                raise FileNotFoundError(errno.ENOENT, "missing", resolved)
            perms.check_read(resolved)
            fd = openat2(view.root_fd, resolved, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY, resolve=FINAL)
        except OSError as err:
            raise fs_error(err, wanted, view.who) from None
    try:
        size = _regular(fd, resolved).st_size
        if size > max_bytes:
            raise QuotaExceeded(
                f"{resolved} is {size} bytes; fs.read returns at most {max_bytes}",
                details={"path": resolved, "size": size, "max_bytes": max_bytes},
            )
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            raise QuotaExceeded(
                f"{resolved} is larger than {max_bytes} bytes",
                details={"path": resolved, "max_bytes": max_bytes},
            )
    except OSError as err:
        raise fs_error(err, resolved, view.who) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    try:
        content, encoding = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        content, encoding = base64.b64encode(data).decode("ascii"), "base64"
    return {"success": True, "content": content, "size": len(data), "encoding": encoding, "path": resolved}


def write_file(
    view: View, perms: Permissions, path: str, data: bytes, *, append: bool = False
) -> dict[str, Any]:
    """Create or replace (``append``: extend) a regular file: ``{success, bytes_written, path}``.
    A new file belongs to the view's user; missing directories are not created."""
    wanted = view.absolute(path)
    flags = (
        os.O_WRONLY
        | os.O_CREAT
        | os.O_NOFOLLOW
        | os.O_NONBLOCK
        | os.O_NOCTTY
        | (os.O_APPEND if append else os.O_TRUNC)
    )
    with acting_as(view.creds):
        try:
            resolved, st = resolve(view.root_fd, wanted)
            perms.check_write(resolved)
            if st is not None and not stat.S_ISREG(st.st_mode):
                raise OSError(
                    errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.ENXIO, "not a regular file", resolved
                )
            fd = openat2(view.root_fd, resolved, flags, 0o644, resolve=FINAL)
        except OSError as err:
            raise fs_error(err, wanted, view.who) from None
    try:
        _regular(fd, resolved)
        view_data = memoryview(data)
        written = 0
        while written < len(data):
            written += os.write(fd, view_data[written:])
    except OSError as err:
        raise fs_error(err, resolved, view.who) from None
    finally:
        os.close(fd)
    return {"success": True, "bytes_written": written, "path": resolved}


def find_directory(view: View, perms: Permissions, path: str | None) -> str:
    """The canonical path of a directory the caller may read (``exec``'s working directory);
    ``None`` means the view's own working directory."""
    wanted = view.absolute(path if path is not None else (view.cwd or "/"))
    with acting_as(view.creds):
        try:
            resolved, st = resolve(view.root_fd, wanted)
        except OSError as err:
            raise fs_error(err, wanted, view.who) from None
    if st is None:
        raise NotFound(f"no such directory: {wanted}", details={"path": wanted})
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidArguments(
            f"{resolved} is not a directory", details={"argument": "cwd", "path": resolved}
        )
    perms.check_read(resolved)
    return resolved


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


# ---- the service -------------------------------------------------------------------------------


def when_started(supervisor: Supervisor, ctx: Principal, action: Callable[[], T]) -> T | Deferred:
    """Run ``action`` now, or once the calling agent is known to run.

    An agent's first requests can reach the kernel before the zygote's report that it started
    (the agent is still ``starting``, its pid unknown): those wait for that report instead of
    failing. Errors ``action`` raises then reject the returned :class:`Deferred`.
    """
    agent = ctx.agent
    runtime = supervisor.runtime(agent) if agent is not None else None
    if agent is None or runtime is None or agent.state is not AgentState.STARTING or agent.pid is not None:
        return action()
    deferred = Deferred()

    def started(_agent: Agent, error: CloveError | None) -> None:
        if error is not None:
            deferred.reject(error)
            return
        try:
            result = action()
        except CloveError as err:
            deferred.reject(err)
            return
        except Exception:
            log.exception("a request waiting for its agent's start failed")
            deferred.reject(InternalError("the request failed inside the kernel; see the kernel log"))
            return
        if isinstance(result, Deferred):
            result.bind(
                lambda value, err: deferred.reject(err) if err is not None else deferred.resolve(value)
            )
        else:
            deferred.resolve(result)

    runtime.start_waiters.append(started)
    return deferred


class FileService:
    """``kernel.files``: the file syscalls' entry points, one view per call."""

    def __init__(self, kernel: ServiceHost) -> None:
        self.kernel = kernel
        self.max_read_bytes = MAX_READ_BYTES

    def view(self, ctx: Principal) -> View:
        if ctx.agent is not None:
            return agent_view(ctx.agent, self.kernel.supervisor.work_dir(ctx.agent))
        return operator_view(ctx.session)

    def read(self, ctx: Principal, path: str) -> dict[str, Any] | Deferred:
        def action() -> dict[str, Any]:
            with self.view(ctx) as view:
                return read_file(view, ctx.perms, path, max_bytes=self.max_read_bytes)

        return when_started(self.kernel.supervisor, ctx, action)

    def write(
        self, ctx: Principal, path: str, data: bytes, *, append: bool
    ) -> dict[str, Any] | Deferred:
        def action() -> dict[str, Any]:
            with self.view(ctx) as view:
                return write_file(view, ctx.perms, path, data, append=append)

        return when_started(self.kernel.supervisor, ctx, action)

    def directory(self, ctx: Principal, path: str | None) -> str:
        with self.view(ctx) as view:
            return find_directory(view, ctx.perms, path)


def attach(kernel: ServiceRegistry) -> None:
    """Build the file service as ``kernel.files`` (it keeps no state between calls: no hooks)."""
    kernel.files = FileService(kernel)
