"""What the guest tests share: the marker that keeps them to the guest, cgroups made the way a
service manager makes them, and figures handed back to the host through the results share."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_GUEST = os.environ.get("CLOVE_GUEST") == "1"
guest_only = pytest.mark.skipif(not IN_GUEST, reason="runs inside the test guest (tests/vm, make test-vm)")

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Python under software emulation runs about 9x slower than on the host: waits scale with it.
SLOW = 10.0


def record_figure(name: str, value: object) -> None:
    """Append a measured figure for the host-side report (``figures.jsonl`` in the results share)."""
    results = os.environ.get("CLOVE_GUEST_RESULTS")
    if results:
        with open(Path(results) / "figures.jsonl", "a") as out:
            out.write(json.dumps({"name": name, "value": value}) + "\n")


def walk_cgroups(top: Path) -> Iterator[Path]:
    """Every cgroup under ``top``, deepest first (the order they can be removed in)."""
    for root, dirs, _files in os.walk(top, topdown=False):
        for d in dirs:
            yield Path(root) / d
    yield top


def remove_service(path: Path) -> list[str]:
    """Stop a service cgroup the way systemd does (kill what is left, trim the tree); answers
    what could not be removed."""
    if not path.exists():
        return []
    if (path / "cgroup.kill").exists():
        (path / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + 30
    left: list[str] = []
    for cg in walk_cgroups(path):
        while True:
            try:
                cg.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as err:
                if time.monotonic() > deadline:
                    left.append(f"{cg}: {err.strerror}")
                    break
                time.sleep(0.05)
    return left
