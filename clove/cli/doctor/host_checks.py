"""The host lines of the report: the state dir's disk, SocketCAN, GPIO chips, and each configured
device's hardware (docs/doctor.md says what each means)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from clove.cli.doctor.host import DiskFacts
from clove.cli.doctor.schema import Check
from clove.cli.render import human_bytes
from clove.config import KernelConfig
from clove.drivers.hostdevices import CanFacts, GpioChip

__all__ = ["can_check", "device_checks", "disk_check", "gpio_check"]

_VCAN = "modprobe vcan && ip link add dev vcan0 type vcan && ip link set vcan0 up"


def _workdir_budget(config: KernelConfig) -> int:
    """What the config's sandboxed agents' work-dir images may grow to, together."""
    return sum(config.limits.for_agent(a.name).workdir_bytes for a in config.agents if a.sandboxed and not a.working_dir)


def disk_check(disk: DiskFacts, config: KernelConfig) -> Check:
    reserve = config.journal.disk_reserve_bytes
    workdirs = _workdir_budget(config)
    data = disk.to_dict() | {"reserve_bytes": reserve, "agent_workdirs_bytes": workdirs}
    title = "state dir disk"
    where = disk.state_dir if disk.probed == disk.state_dir else f"{disk.state_dir} (to be made under {disk.probed})"
    if disk.write_error:
        return Check(id="disk", title=title, status="missing", facts=data, summary=f"{where}: not writable ({disk.write_error})",
                     meaning="the kernel cannot keep its journal, state store or agent dirs there: it does not start",
                     fix="run the kernel as root, or set [kernel].state_dir (or --state-dir) to a directory it owns")  # fmt: skip
    free = human_bytes(disk.free)
    if disk.free is not None and disk.free < reserve:
        return Check(
            id="disk", title=title, status="missing", facts=data,
            summary=f"{where}: {free} free, below [journal].disk_reserve_bytes ({human_bytes(reserve)})",
            meaning="the kernel refuses agents' new work with resource.exhausted from the start (records are never dropped)",
            fix="free space on that filesystem, or put [kernel].state_dir on a larger one",
        )  # fmt: skip
    if disk.free is not None and disk.free < reserve + workdirs:
        return Check(
            id="disk", title=title, status="warn", facts=data,
            summary=f"{where}: {free} free; the reserve ({human_bytes(reserve)}) and the config's agents' work dirs "
            f"({human_bytes(workdirs)}) need more",
            meaning="work-dir images are sparse and grow as agents write: a full disk fails their writes with I/O "
            "errors, and below the reserve new work is refused",
            fix="free space, lower [limits].workdir_bytes, or put [kernel].state_dir on a larger filesystem",
        )  # fmt: skip
    return Check(
        id="disk", title=title, status="ok", facts=data,
        summary=f"{where}: {free} free of {human_bytes(disk.total)}; reserve {human_bytes(reserve)}",
        meaning="room for the journal's reserve and the configured agents' work dirs",
    )  # fmt: skip


def can_check(can: CanFacts) -> Check:
    data = can.to_dict()
    title = "SocketCAN"
    scope = 'matters for [devices] with driver = "can" and interface = "socketcan"; python-can\'s virtual interface needs none of it'
    if can.family:
        module = "can_raw" if can.family == errno.EPROTONOSUPPORT else "can can_raw"
        return Check(
            id="socketcan", title=title, status="missing", facts=data,
            summary=f"socket(AF_CAN, SOCK_RAW, CAN_RAW) fails: {os.strerror(can.family)}",
            meaning=f"no SocketCAN bus can be opened here; {scope}",
            fix=f"modprobe {module} (a kernel built with CONFIG_CAN and CONFIG_CAN_RAW; some VM and container kernels lack them)",
        )  # fmt: skip
    if not can.interfaces:
        return Check(id="socketcan", title=title, status="warn", facts=data,
                     summary="the CAN_RAW protocol works; no CAN interface (type 280) exists",
                     meaning=f"a socketcan device has no channel to open; {scope}",
                     fix=f"bring up the adapter's interface, or for a virtual bus: {_VCAN}")  # fmt: skip
    listed = ", ".join(f"{i.name} ({'vcan' if i.virtual else 'hardware'}{', FD' if i.fd else ''}, {i.operstate})" for i in can.interfaces)
    down = [i.name for i in can.interfaces if i.operstate == "down"]
    if down:
        return Check(id="socketcan", title=title, status="warn", facts=data, summary=f"CAN interfaces: {listed}",
                     meaning=f"a bus on an interface that is down receives and sends nothing; {scope}",
                     fix=f"ip link set {down[0]} up (hardware: ip link set {down[0]} up type can bitrate 500000)")  # fmt: skip
    return Check(id="socketcan", title=title, status="ok", facts=data, summary=f"CAN interfaces: {listed}",
                 meaning=f"socketcan devices can open these channels; {scope}")  # fmt: skip


def gpio_check(chips: tuple[GpioChip, ...]) -> Check:
    data = {"chips": [c.to_dict() for c in chips]}
    title = "GPIO chips"
    scope = 'matters for [devices] with driver = "gpio"; a simulated chip (sim_socket) needs none'
    if not chips:
        return Check(id="gpio", title=title, status="missing", facts=data, summary="no /dev/gpiochip*",
                     meaning=f"no GPIO device can be opened here; {scope}",
                     fix="the board's GPIO driver (or gpio-sim for a simulated chip: modprobe gpio-sim)")  # fmt: skip
    listed = ", ".join(
        f"{Path(c.path).name} ({c.label or 'label unreadable'}, {c.lines if c.lines is not None else '?'} lines, {c.owner})" for c in chips
    )
    closed = [Path(c.path).name for c in chips if c.access != "rw"]
    if closed:
        return Check(id="gpio", title=title, status="warn", facts=data, summary=f"{listed}; not read-write for uid {os.geteuid()}: {', '.join(closed)}",
                     meaning=f"a device on those chips fails to open as this user; {scope}",
                     fix="run the kernel as root, or give its user the chip's group (a udev rule)")  # fmt: skip
    return Check(id="gpio", title=title, status="ok", facts=data, summary=listed, meaning=f"gpio devices can open these chips; {scope}")


def device_checks(config: KernelConfig, can: CanFacts, chips: tuple[GpioChip, ...]) -> list[Check]:
    """One line per configured device whose hardware this host can be asked about."""
    checks = []
    names = {i.name for i in can.interfaces}
    for spec in config.devices:
        raw = spec.raw
        title = f"device {spec.name}"
        data = {"driver": spec.driver}
        if spec.driver == "can" and raw.get("interface") == "socketcan":
            channel = str(raw.get("channel"))
            data["channel"] = channel
            if channel in names and not can.family:
                checks.append(Check(id=f"device.{spec.name}", title=title, status="ok", facts=data,
                                    summary=f"socketcan channel {channel} exists", meaning="the device's driver can open its bus"))  # fmt: skip
            else:
                checks.append(Check(id=f"device.{spec.name}", title=title, status="missing", facts=data,
                                    summary=f"socketcan channel {channel} does not exist" + (" (no SocketCAN)" if can.family else ""),
                                    meaning="the device's host cannot open its bus: the device stays unavailable and is retried",
                                    fix=f"bring up {channel}, or for a test bus: {_VCAN.replace('vcan0', channel)}"))  # fmt: skip
        elif spec.driver == "gpio" and not raw.get("sim_socket"):
            chip = str(raw.get("chip", "/dev/gpiochip0"))
            data["chip"] = chip
            found = next((c for c in chips if c.path == chip or Path(c.path).name == Path(chip).name), None)
            ok = found is not None and found.access == "rw"
            checks.append(Check(id=f"device.{spec.name}", title=title, status="ok" if ok else "missing", facts=data,
                                summary=f"GPIO chip {chip} " + ("is there" if ok else "is missing" if found is None else "is not read-write"),
                                meaning="the device's driver can open its chip" if ok else "the device's host cannot open its chip",
                                fix=None if ok else "the board's GPIO driver, or run the kernel as root"))  # fmt: skip
        elif spec.driver == "serial" and str(raw.get("port", "")).startswith("/"):
            port = str(raw["port"])
            data["port"] = port
            ok = os.path.exists(port) and os.access(port, os.R_OK | os.W_OK)
            checks.append(Check(id=f"device.{spec.name}", title=title, status="ok" if ok else "missing", facts=data,
                                summary=f"serial port {port} " + ("is there" if ok else "is missing or not read-write"),
                                meaning="the device's driver can open its port" if ok else "the device's host cannot open its port",
                                fix=None if ok else "plug the adapter in, or run the kernel as root"))  # fmt: skip
    return checks
