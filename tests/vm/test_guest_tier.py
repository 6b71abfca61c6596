"""The guest tier: boot the test guest (hil.vm) a few times, each running a selection of
tests/guest inside a stock Linux kernel with cgroup v2 only, SocketCAN and gpio-sim chips.

Skips with the reason where this machine cannot run a guest (``make vm-setup`` records why).
A selection that times out has its qemu killed before the test returns (hil.vm.guest.run).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import pytest

from hil.vm import cache as vm_cache
from hil.vm import guest

CHECKOUT = Path(__file__).resolve().parents[2]
SELECTIONS = {
    "cgroup2": ["tests/guest/test_cgroup_v2.py", "tests/guest/test_doctor_guest.py"],
    "devices": ["tests/guest/test_socketcan.py", "tests/guest/test_gpio.py"],
}
#: Selections too long for every `make test` (the rover bench on its Linux board takes about
#: 12 minutes under emulation): `make test-vm` runs them, with CLOVE_VM_FULL=1.
FULL_SELECTIONS = {
    "rover": ["tests/guest/test_rover_linux.py"],
}
if os.environ.get("CLOVE_VM_FULL") == "1":
    SELECTIONS.update(FULL_SELECTIONS)
BOOT_TIMEOUT = 900.0
#: Boots a selection may take when the guest's own kernel panics before the command ends.
BOOTS = 2
PANIC = "Kernel panic - not syncing"

pytestmark = [pytest.mark.integration, pytest.mark.timeout(BOOTS * BOOT_TIMEOUT + 60)]


@pytest.mark.parametrize("selection", sorted(SELECTIONS))
def test_guest_selection(selection: str, tmp_path: Path) -> None:
    cache = vm_cache.load()
    if isinstance(cache, str):
        pytest.skip(cache)
    paths = [p for p in SELECTIONS[selection] if (CHECKOUT / p).exists()]
    command = " ".join(
        [shlex.quote(sys.executable), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "timeout=900", "-ra",
         f"--junitxml={guest.GUEST_RESULTS}/junit.xml", *paths]
    )  # fmt: skip
    for attempt in range(1, BOOTS + 1):
        results = tmp_path / f"boot{attempt}"
        results.mkdir()
        result = guest.run(command, cache=cache, results=results, cwd=CHECKOUT, timeout=BOOT_TIMEOUT)
        if result.exit_code is not None or PANIC not in result.console:
            break
        # The emulator, not the code under test: the guest kernel itself died (under TCG it
        # sometimes oopses on an int3 of its own live code patching). Boot again, once.
        print(f"guest {selection}: the guest kernel panicked on boot {attempt}; booting again")
    figures = results / "figures.jsonl"
    for line in figures.read_text().splitlines() if figures.exists() else []:
        print("figure:", json.loads(line))
    print(f"guest {selection}: boot to command {result.boot_seconds} s, total {result.seconds:.1f} s")
    assert not result.timed_out, f"guest timed out after {BOOT_TIMEOUT} s:\n{result.output[-6000:]}"
    assert result.exit_code is not None, f"the guest never finished the command:\n{result.console[-4000:]}"
    assert result.exit_code == 0, result.output[-8000:]
    assert "passed" in result.output.splitlines()[-1], result.output[-2000:]
