"""Where the guest's kernel, modules and initramfs live: a cache folder outside the checkout
(``$CLOVE_VM_CACHE``, else ``~/.cache/clove-vm``), described by ``manifest.json`` once set up.

Nothing here is committed: ``python -m hil.vm setup`` fills the folder from the package registry
and later runs reuse it. :func:`load` answers either a :class:`VmCache` ready to boot or the reason
a guest cannot run on this machine, which the guest tests turn into ``pytest.skip``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

MANIFEST = "manifest.json"
# Written by setup when this machine cannot run a guest at all (no qemu, no package registry):
# the tests skip with its text instead of failing.
UNAVAILABLE = "unavailable.txt"
QEMU = "qemu-system-x86_64"


def cache_dir() -> Path:
    env = os.environ.get("CLOVE_VM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "clove-vm"


@dataclass(frozen=True)
class VmCache:
    """A set-up cache: one kernel version, its image, its unpacked modules and an initramfs."""

    root: Path
    kernel_version: str
    vmlinuz: Path
    modules: Path  # the unpacked /lib/modules/<version>, bound there inside the guest
    initramfs: Path
    gpio_sim: Path | None  # the out-of-tree gpio-sim.ko, when it built
    gpio_sim_reason: str  # why not, when it did not

    def save(self) -> None:
        fields = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        (self.root / MANIFEST).write_text(json.dumps(fields, indent=2) + "\n")


def load(root: Path | None = None) -> VmCache | str:
    """The cache at ``root`` if a guest can boot from it, else the reason it cannot."""
    root = root or cache_dir()
    unavailable = root / UNAVAILABLE
    if unavailable.exists():
        return unavailable.read_text().strip()
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (run `make vm-setup`)"
    try:
        raw = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return f"no test guest set up in {root} (run `make vm-setup`)"
    gpio = raw.get("gpio_sim")
    cache = VmCache(
        root=root,
        kernel_version=raw["kernel_version"],
        vmlinuz=Path(raw["vmlinuz"]),
        modules=Path(raw["modules"]),
        initramfs=Path(raw["initramfs"]),
        gpio_sim=Path(gpio) if gpio else None,
        gpio_sim_reason=raw.get("gpio_sim_reason", ""),
    )
    for path in (cache.vmlinuz, cache.modules, cache.initramfs):
        if not path.exists():
            return f"the test guest cache in {root} lacks {path} (run `make vm-setup`)"
    return cache
