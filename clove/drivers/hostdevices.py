"""The device hardware this host offers drivers, without any driver loaded (``clove doctor``):
the SocketCAN protocol family and CAN interfaces, and the GPIO chips.

Plain Linux interfaces only (no python-can, no libgpiod), every path under roots the caller
gives, so a test builds a fake ``/proc``, ``/sys`` and ``/dev``. The one live trial (opening a
``CAN_RAW`` socket) can be replaced by its result.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import grp
import os
import pwd
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = ["ARPHRD_CAN", "CAN_MODULES", "CanFacts", "CanInterface", "GpioChip", "can_family_errno", "probe_can", "probe_gpio"]

#: ``/sys/class/net/<if>/type`` of a CAN interface (linux/if_arp.h).
ARPHRD_CAN: Final = 280
#: The MTU of a CAN FD interface (``struct canfd_frame``); classic CAN has 16.
_CANFD_MTU: Final = 72
#: The kernel modules behind SocketCAN, as ``/proc/modules`` names them.
CAN_MODULES: Final = ("can", "can_raw", "vcan")


def can_family_errno() -> int:
    """``0`` when ``socket(AF_CAN, SOCK_RAW, CAN_RAW)`` works here, else its errno
    (``EAFNOSUPPORT``: no ``can`` module; ``EPROTONOSUPPORT``: no ``can_raw``)."""
    family = getattr(socket, "AF_CAN", 29)
    try:
        sock = socket.socket(family, socket.SOCK_RAW, getattr(socket, "CAN_RAW", 1))
    except OSError as err:
        return err.errno or errno.EAFNOSUPPORT
    sock.close()
    return 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class CanInterface:
    """:param virtual: no hardware device behind it (a ``vcan``)."""

    name: str
    operstate: str
    fd: bool
    virtual: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "operstate": self.operstate, "fd": self.fd, "virtual": self.virtual}


@dataclass(frozen=True, slots=True)
class CanFacts:
    """:param family: ``0`` when a ``CAN_RAW`` socket opens, else its errno.
    :param modules: which of :data:`CAN_MODULES` are loaded (built-in ones are not listed)."""

    family: int
    interfaces: tuple[CanInterface, ...]
    modules: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family == 0, "family_error": os.strerror(self.family) if self.family else None,
            "interfaces": [i.to_dict() for i in self.interfaces], "modules": list(self.modules),
        }  # fmt: skip


def probe_can(*, proc: Path = Path("/proc"), sys: Path = Path("/sys"), family: int | None = None) -> CanFacts:
    """:param family: the trial's errno, or ``None`` to open a ``CAN_RAW`` socket here."""
    interfaces = []
    net = sys / "class" / "net"
    try:
        names = sorted(os.listdir(net))
    except OSError:
        names = []
    for name in names:
        if _read(net / name / "type") != str(ARPHRD_CAN):
            continue
        interfaces.append(
            CanInterface(
                name=name,
                operstate=_read(net / name / "operstate") or "unknown",
                fd=_read(net / name / "mtu") == str(_CANFD_MTU),
                virtual=not (net / name / "device").exists(),
            )
        )
    loaded = {line.split()[0] for line in (_read(proc / "modules") or "").splitlines() if line.strip()}
    return CanFacts(
        family=can_family_errno() if family is None else family,
        interfaces=tuple(interfaces),
        modules=tuple(m for m in CAN_MODULES if m in loaded),
    )


# ---- GPIO --------------------------------------------------------------------------------------


class _ChipInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * 32), ("label", ctypes.c_char * 32), ("lines", ctypes.c_uint32)]


#: ``GPIO_GET_CHIPINFO_IOCTL``: ``_IOR(0xB4, 0x01, struct gpiochip_info)`` (linux/gpio.h).
_GET_CHIPINFO: Final = (2 << 30) | (ctypes.sizeof(_ChipInfo) << 16) | (0xB4 << 8) | 0x01


@dataclass(frozen=True, slots=True)
class GpioChip:
    """One ``/dev/gpiochipN``: its label and line count when readable, who may open it.

    :param access: what the prober may do: ``"rw"``, ``"r"``, ``"w"`` or ``""``; ``owner``: ``user:group mode``.
    :param source: where label and lines came from: ``ioctl``, ``sysfs`` or ``""`` (unknown).
    """

    path: str
    label: str | None
    lines: int | None
    access: str
    owner: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "label": self.label, "lines": self.lines, "access": self.access,
                "owner": self.owner, "source": self.source or None}  # fmt: skip


def _chipinfo(path: Path) -> tuple[str, int] | None:
    """Label and line count from the character device itself, or ``None``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = _ChipInfo()
        fcntl.ioctl(fd, _GET_CHIPINFO, info)
    except OSError:
        return None
    finally:
        os.close(fd)
    return info.label.decode(errors="replace"), int(info.lines)


def _sysfs_info(sys: Path, name: str) -> tuple[str, int] | None:
    """Label and line count from sysfs: the legacy class device under the chip's bus device."""
    for entry in sorted((sys / "bus" / "gpio" / "devices" / name / "gpio").glob("gpiochip*")):
        label, lines = _read(entry / "label"), _read(entry / "ngpio")
        if label is not None and lines is not None and lines.isdigit():
            return label, int(lines)
    return None


def _owner(st: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group} {stat.filemode(st.st_mode)}"


def probe_gpio(*, dev: Path = Path("/dev"), sys: Path = Path("/sys")) -> tuple[GpioChip, ...]:
    """Every ``gpiochipN`` under ``dev``, in number order."""
    chips = []
    paths = [p for p in dev.glob("gpiochip*") if p.name[len("gpiochip") :].isdigit()]
    for path in sorted(paths, key=lambda p: int(p.name[len("gpiochip") :])):
        try:
            st = path.stat()
        except OSError:
            continue
        info, source = _chipinfo(path), "ioctl"
        if info is None:
            info, source = _sysfs_info(sys, path.name), "sysfs"
        access = ("r" if os.access(path, os.R_OK) else "") + ("w" if os.access(path, os.W_OK) else "")
        chips.append(
            GpioChip(
                path=str(path),
                label=None if info is None else info[0],
                lines=None if info is None else info[1],
                access=access,
                owner=_owner(st),
                source=source if info is not None else "",
            )
        )
    return tuple(chips)
