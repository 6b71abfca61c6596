"""The first steps of a helper process the kernel starts (a driver host, the egress proxy):
read the start spec the kernel wrote to a pipe, then tie the process's life to the kernel's."""

from __future__ import annotations

import ctypes
import os
import signal
from typing import Any, Final

import msgpack

_PR_SET_PDEATHSIG: Final = 1
_PR_SET_NO_NEW_PRIVS: Final = 38


def read_spec(fd: int, who: str) -> dict[str, Any]:
    """The msgpack map the kernel wrote to ``fd`` (read to its end, then closed).

    :raises SystemExit: naming ``who``, when it is not a map.
    """
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    spec = msgpack.unpackb(b"".join(chunks), raw=False)
    if not isinstance(spec, dict):
        raise SystemExit(f"{who}: bad start spec")
    return spec


def harden(exit_status: int) -> None:
    """Die with the kernel (SIGKILL on its death); never gain privileges through exec. Exits
    with ``exit_status`` when the kernel is already gone."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if os.getppid() == 1:  # the kernel died before PDEATHSIG was set
        raise SystemExit(exit_status)
