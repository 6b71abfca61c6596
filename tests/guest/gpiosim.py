"""``gpio-sim`` chips for the guest tests: a real GPIO chip character device, made through
configfs, whose input lines the test drives with a simulated pull and whose outputs it reads.

The module is built out of tree into the test guest's cache (hil.vm.gpiosim) and loaded here
with ``insmod`` (``irq_sim.ko`` first: gpio-sim's interrupts come from it). A chip is
``/sys/kernel/config/gpio-sim/<chip>/bank0`` with ``num_lines`` and line names, made live by
writing 1 to ``<chip>/live``; it then shows up as ``/dev/<chip_name>`` and each line has
``/sys/devices/platform/<dev_name>/<chip_name>/sim_gpioN/{pull,value}``.
"""

from __future__ import annotations

import itertools
import subprocess
from dataclasses import dataclass
from pathlib import Path

CONFIGFS = Path("/sys/kernel/config/gpio-sim")
PLATFORM = Path("/sys/devices/platform")

_chips = itertools.count()


def load_module(ko: Path) -> None:
    """Insert ``irq_sim.ko`` and ``gpio-sim.ko`` (from the same folder) unless already loaded."""
    for name, path in (("irq_sim", ko.with_name("irq_sim.ko")), ("gpio_sim", ko)):
        if not Path("/sys/module", name).exists():
            subprocess.run(["insmod", str(path)], check=True, capture_output=True)


@dataclass
class SimChip:
    """A live gpio-sim chip: ``path`` is its character device; lines are addressed by offset."""

    config: Path  # the chip's configfs folder
    path: str  # /dev/gpiochipN
    sysfs: Path  # /sys/devices/platform/<dev_name>/<chip_name>

    def _line(self, offset: int, attr: str) -> Path:
        return self.sysfs / f"sim_gpio{offset}" / attr

    def pull(self, offset: int, level: int) -> None:
        """Pull an input line up (1) or down (0): the simulated wire level, so an edge."""
        self._line(offset, "pull").write_text("pull-up" if level else "pull-down")

    def value(self, offset: int) -> int:
        """The line's level as the chip sees it (an output's: as its requester drives it)."""
        return int(self._line(offset, "value").read_text().strip())

    @property
    def live(self) -> bool:
        return (self.config / "live").read_text().strip() == "1"

    def set_live(self, live: bool) -> None:
        """Unplug (``False``) or plug the chip back (``True``): its device node goes and comes,
        as a USB expander's does. Back, it takes the lowest free chip number."""
        (self.config / "live").write_text("1" if live else "0")
        if live:
            self.path, self.sysfs = _where(self.config)

    def remove(self) -> None:
        """Take the chip down and delete its configfs tree (innermost folders first)."""
        if self.live:  # writing the state it is already in is refused (EPERM)
            self.set_live(False)
        bank = self.config / "bank0"
        for line in sorted(bank.glob("line*")):
            line.rmdir()
        bank.rmdir()
        self.config.rmdir()


def make_chip(names: dict[int, str], num_lines: int = 8) -> SimChip:
    """A live chip of ``num_lines`` lines, the offsets in ``names`` named (as ``gpioinfo``
    shows them). Every line starts pulled down."""
    config = CONFIGFS / f"clove-test-{next(_chips)}"
    bank = config / "bank0"
    bank.mkdir(parents=True)
    (bank / "num_lines").write_text(str(num_lines))
    for offset, name in names.items():
        (bank / f"line{offset}").mkdir()
        (bank / f"line{offset}" / "name").write_text(name)
    (config / "live").write_text("1")
    path, sysfs = _where(config)
    return SimChip(config=config, path=path, sysfs=sysfs)


def _where(config: Path) -> tuple[str, Path]:
    """A live chip's character device and its sysfs folder (both numbered when it goes live)."""
    dev_name = (config / "dev_name").read_text().strip()
    chip_name = (config / "bank0" / "chip_name").read_text().strip()
    return f"/dev/{chip_name}", PLATFORM / dev_name / chip_name
