"""Linux devices a bench makes for itself, as a board's boot would: a ``vcan`` interface for a CAN
bus and a ``gpio-sim`` chip, a real ``/dev/gpiochipN`` whose input lines follow a simulated pull.
Both need root; whatever a bench made here it removes at the end, and what it found it leaves.

gpio-sim comes from ``modprobe gpio-sim`` where the kernel ships it, else from the test guest's
cache (hil.vm.gpiosim builds it out of tree; ``irq_sim.ko`` is loaded first). A chip is
``/sys/kernel/config/gpio-sim/<chip>/bank0`` with ``num_lines`` and named lines, made live by
writing 1 to ``<chip>/live``; each line then has ``/sys/devices/platform/<dev_name>/<chip_name>/
sim_gpioN/{pull,value}``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

NET = Path("/sys/class/net")
CONFIGFS = Path("/sys/kernel/config/gpio-sim")
PLATFORM = Path("/sys/devices/platform")
IFF_UP = 0x1

_chips = itertools.count()


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def _must(*cmd: str) -> None:
    proc = _run(*cmd)
    if proc.returncode != 0:
        raise OSError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")


def _is_up(name: str) -> bool:
    return bool(int((NET / name / "flags").read_text(), 16) & IFF_UP)


def ensure_vcan(name: str) -> bool:
    """The CAN interface ``name`` up: made as a vcan when missing. Answers whether it was made here.

    An existing interface that is down is an error, not brought up: a real controller needs its
    bitrate set first, which is the board's business (``ip link set can0 up type can bitrate ...``).

    :raises OSError: it could not be made (not root, no vcan module), or it is down.
    """
    if (NET / name).exists():
        if not _is_up(name):
            raise OSError(f"CAN interface {name} is down (ip link set up {name})")
        return False
    _run("modprobe", "-a", "vcan", "can_raw")  # may be built in: the next command tells
    _must("ip", "link", "add", name, "type", "vcan")
    _must("ip", "link", "set", "up", name)
    return True


def remove_vcan(name: str) -> None:
    _run("ip", "link", "del", name)


def _guest_gpio_sim() -> Path | None:
    """The gpio-sim module the test guest's cache built, if any."""
    from hil.vm import cache as vm_cache

    try:
        raw = json.loads((vm_cache.cache_dir() / vm_cache.MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return Path(raw["gpio_sim"]) if raw.get("gpio_sim") else None


def load_gpio_sim() -> None:
    """gpio-sim loaded, its configfs folder there.

    :raises OSError: no module to load, or configfs not mounted.
    """
    if CONFIGFS.is_dir():
        return
    if _run("modprobe", "gpio-sim").returncode != 0:
        built = _guest_gpio_sim()
        if built is not None:
            for name, ko in (("irq_sim", built.with_name("irq_sim.ko")), ("gpio_sim", built)):
                if not Path("/sys/module", name).exists():
                    _must("insmod", str(ko))
    if not CONFIGFS.is_dir():
        raise OSError(
            f"no {CONFIGFS}: gpio-sim is not loaded (modprobe gpio-sim; a kernel without it: make vm-setup "
            "builds one for the test guest) or configfs is not mounted (mount -t configfs none /sys/kernel/config)"
        )


def _wait_for(path: Path, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise OSError(f"{path} did not appear within {timeout} s")
        time.sleep(0.01)


@dataclass
class GpioSimChip:
    """A live gpio-sim chip: ``path`` is its character device; lines are addressed by offset."""

    config: Path  # the chip's configfs folder
    path: str  # /dev/gpiochipN
    sysfs: Path  # /sys/devices/platform/<dev_name>/<chip_name>

    @classmethod
    def make(cls, names: dict[int, str], num_lines: int) -> GpioSimChip:
        """A live chip of ``num_lines`` lines, the offsets in ``names`` named (as ``gpioinfo``
        shows them). Every line starts pulled down."""
        load_gpio_sim()
        config = CONFIGFS / f"clove-hil-{os.getpid()}-{next(_chips)}"
        bank = config / "bank0"
        bank.mkdir(parents=True)
        chip = cls(config=config, path="", sysfs=Path())
        try:
            (bank / "num_lines").write_text(str(num_lines))
            for offset, name in names.items():
                (bank / f"line{offset}").mkdir()
                (bank / f"line{offset}" / "name").write_text(name)
            (config / "live").write_text("1")
            dev_name = (config / "dev_name").read_text().strip()
            chip_name = (bank / "chip_name").read_text().strip()
            chip.path, chip.sysfs = f"/dev/{chip_name}", PLATFORM / dev_name / chip_name
            _wait_for(Path(chip.path))  # devtmpfs makes the node as the chip registers
        except OSError:
            chip.remove()
            raise
        return chip

    def _line(self, offset: int, attr: str) -> Path:
        return self.sysfs / f"sim_gpio{offset}" / attr

    def pull(self, offset: int, level: int) -> None:
        """Pull an input line up (1) or down (0): the wire's level, so an edge for its reader."""
        self._line(offset, "pull").write_text("pull-up" if level else "pull-down")

    def value(self, offset: int) -> int:
        """The line's level as the chip sees it (an output's: as its requester drives it)."""
        return int(self._line(offset, "value").read_text().strip())

    def remove(self) -> None:
        """Take the chip down and delete its configfs tree, innermost first (idempotent)."""
        if not self.config.exists():
            return
        if (self.config / "live").read_text().strip() == "1":
            (self.config / "live").write_text("0")
        bank = self.config / "bank0"
        for line in sorted(bank.glob("line*")):
            line.rmdir()
        if bank.exists():
            bank.rmdir()
        self.config.rmdir()
