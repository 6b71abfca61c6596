"""A simbus channel's name and its hub's socket files (the endpoints every side agrees on).

The hub binds three ``ipc`` sockets in its directory: ``<channel>.pub``, ``<channel>.sub`` and
``<channel>.ctl`` (see :mod:`hil.simbus`).
"""

from __future__ import annotations

import os
import re
import socket
from typing import NamedTuple

#: Where hubs put their sockets unless told otherwise (``$CLOVE_SIMBUS_DIR`` overrides it).
DEFAULT_DIR = "/tmp/clove-simbus"
DIR_ENV = "CLOVE_SIMBUS_DIR"

_CHANNEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path holds 108 bytes, NUL included


class SimBusError(Exception):
    """The hub cannot start, cannot be reached, or refused a control request."""


class SimBusPaths(NamedTuple):
    """The socket files of one channel's hub."""

    pub: str  #: the hub publishes here; nodes' SUB sockets connect
    sub: str  #: the hub collects here; nodes' PUB sockets connect
    ctl: str  #: the hub's control socket (REP)

    @staticmethod
    def endpoint(path: str) -> str:
        return "ipc://" + path


def validate_channel(channel: object) -> str:
    """``channel`` itself, if it is a valid channel name.

    :raises ValueError: not 1-64 letters, digits, ``_``, ``.`` or ``-`` starting with a letter or digit.
    """
    if not isinstance(channel, str) or not _CHANNEL_RE.fullmatch(channel):
        raise ValueError(
            "a simbus channel is 1-64 characters of letters, digits, '_', '.' and '-', starting "
            f"with a letter or digit (e.g. 'rover'), got {channel!r}"
        )
    return channel


def resolve_dir(simbus_dir: str | os.PathLike[str] | None) -> str:
    """The absolute socket directory: ``simbus_dir``, else ``$CLOVE_SIMBUS_DIR``, else :data:`DEFAULT_DIR`."""
    if simbus_dir is None:
        simbus_dir = os.environ.get(DIR_ENV) or DEFAULT_DIR
    return os.path.abspath(os.fspath(simbus_dir))


def simbus_paths(channel: str, simbus_dir: str | os.PathLike[str] | None = None) -> SimBusPaths:
    """The socket paths of ``channel``'s hub in ``simbus_dir`` (default: :data:`DEFAULT_DIR`).

    :raises ValueError: the channel name is invalid, or the paths are too long for a Unix socket.
    """
    channel = validate_channel(channel)
    base = resolve_dir(simbus_dir)
    paths = SimBusPaths(*(os.path.join(base, f"{channel}.{kind}") for kind in ("pub", "sub", "ctl")))
    longest = max(paths, key=lambda p: len(os.fsencode(p)))
    if len(os.fsencode(longest)) > _SUN_PATH_MAX:
        raise ValueError(
            f"socket path {longest!r} is longer than a Unix socket allows ({_SUN_PATH_MAX} bytes); "
            "use a shorter simbus directory or channel name"
        )
    return paths


def listening(path: str) -> bool:
    """Whether something accepts connections on the Unix socket ``path`` (False: absent or stale).

    A failure that does not tell (e.g. permission denied) counts as listening; ZeroMQ then decides.
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True
    finally:
        probe.close()
    return True
