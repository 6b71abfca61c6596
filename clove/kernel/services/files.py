"""The file service behind ``fs.read`` and ``fs.write`` (and the working directory of ``exec``):
a path is resolved in the caller's own view of the filesystem, checked against the caller's
grants, and opened with the caller's own Unix permissions.

**Whose filesystem.** An agent sees its sandbox, an operator the host: see
:mod:`.fileviews` for the views and how the kernel reaches an agent's.

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
import os
import stat
from typing import TYPE_CHECKING, Any, Final

from clove.errors import (
    CloveError,
    Conflict,
    InternalError,
    InvalidArguments,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    ResourceExhausted,
)
from clove.kernel.services.fileviews import View, agent_view, operator_view
from clove.kernel.services.started import when_started
from clove.sandbox.rootfs import FINAL, acting_as, openat2, resolve

if TYPE_CHECKING:
    from clove.kernel.core.deferred import Deferred
    from clove.kernel.core.principal import Principal
    from clove.kernel.services.host import ServiceHost, ServiceRegistry
    from clove.policy import Permissions

MAX_READ_BYTES: Final = 16 << 20


# A file that exists but cannot be used as a regular file: ``/proc/self/mem`` (EIO at offset 0),
# some /proc and /sys files (EINVAL, EOPNOTSUPP), a device behind a failing disk (EIO).
_UNUSABLE: Final = frozenset({errno.EIO, errno.EINVAL, errno.EOVERFLOW, errno.EOPNOTSUPP, errno.ENODATA})


def fs_error(err: OSError, path: str, who: str = "caller") -> CloveError:
    """The structured error for an ``OSError`` met on ``path`` (resolving, opening, reading or
    writing it), under the file service's codes: ``internal`` is left for what is no file's
    fault. ``path`` is what the caller asked for: never the resolved one, which for
    ``/proc/self/...`` names the kernel's own pid."""
    code = err.errno
    details = {"path": path, "errno": errno.errorcode.get(code or 0, str(code))}
    if code in (errno.ENOENT, errno.ENOTDIR, errno.ESTALE):
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
    if code in _UNUSABLE:
        return InvalidArguments(f"{path} cannot be used as a regular file: {err.strerror}", details={**details, "argument": "path"})
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return QuotaExceeded(f"{path}: {err.strerror}", details=details)
    if code in (errno.EBUSY, errno.ETXTBSY, errno.EAGAIN, errno.EINTR):
        return Conflict(f"{path}: {err.strerror}", details=details)
    if code in (errno.ENOMEM, errno.EMFILE, errno.ENFILE):
        return ResourceExhausted(f"{path}: {err.strerror} (the kernel is short of it: try later)", details=details)
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
    # From here on errors name the path as asked: the resolved one may be /proc/<kernel pid>/...
    try:
        size = _regular(fd, wanted).st_size
        if size > max_bytes:
            raise QuotaExceeded(
                f"{wanted} is {size} bytes; fs.read returns at most {max_bytes}",
                details={"path": wanted, "size": size, "max_bytes": max_bytes},
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
                f"{wanted} is larger than {max_bytes} bytes",
                details={"path": wanted, "max_bytes": max_bytes},
            )
    except OSError as err:
        raise fs_error(err, wanted, view.who) from None
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
        _regular(fd, wanted)  # errors name the path as asked, as in read_file
        view_data = memoryview(data)
        written = 0
        while written < len(data):
            written += os.write(fd, view_data[written:])
    except OSError as err:
        raise fs_error(err, wanted, view.who) from None
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


# ---- the service -------------------------------------------------------------------------------


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
