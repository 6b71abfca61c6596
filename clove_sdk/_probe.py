"""Is a kernel there? One Unix-socket ``connect`` on the endpoint's socket file.

ZeroMQ connects to an ``ipc://`` path that does not exist, or to a socket file nobody listens on
(a kernel that died without removing it), without complaint, and a request then waits the whole
reply timeout. The client asks this module once per connection instead, and fails at once.
"""

from __future__ import annotations

import errno
import socket

IPC = "ipc://"

# What a refused probe means; any other error (a full backlog, a timeout) is a busy kernel, which
# is still a kernel: the reply timeout decides then.
_REASONS = {
    errno.ENOENT: "the socket file does not exist",
    errno.ENOTDIR: "the socket file does not exist",
    errno.ECONNREFUSED: "nothing is listening on it (a stale socket file: no kernel runs there)",
    errno.EACCES: "permission denied (its owner and group decide who may connect)",
    errno.EPERM: "permission denied (its owner and group decide who may connect)",
}


def socket_path(endpoint: str) -> str:
    """The file-system path of an ``ipc://`` endpoint (or of a bare path)."""
    return endpoint[len(IPC) :] if endpoint.startswith(IPC) else endpoint


def _connect_error(path: str, timeout: float = 1.0) -> OSError | None:
    """The error of one ``connect`` to the Unix socket at ``path`` (``None``: accepted)."""
    address = "\0" + path[1:] if path.startswith("@") else path  # ZeroMQ's "@name": abstract
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(address)
    except OSError as err:
        return err
    finally:
        probe.close()
    return None


def why_unreachable(endpoint: str) -> str | None:
    """Why no kernel can answer at ``endpoint`` (a missing socket file, no listener, no right to
    connect), or ``None`` when one may: something accepted the connection, or was too busy to
    say. Endpoints other than ``ipc://`` are not probed (``None``)."""
    if not endpoint.startswith(IPC):
        return None
    err = _connect_error(socket_path(endpoint))
    return None if err is None else _REASONS.get(err.errno or 0)


def kernel_listening(socket_path_or_endpoint: str) -> bool:
    """True when a process accepts connections on the socket (a fast liveness probe that does
    not wait for a ZeroMQ timeout)."""
    return _connect_error(socket_path(socket_path_or_endpoint)) is None
