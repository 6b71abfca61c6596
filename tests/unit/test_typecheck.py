"""The kernel, SDK, HIL harness and first-party drivers stay clean under mypy --strict (settings in
pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_mypy_strict_is_clean() -> None:
    pytest.importorskip("mypy")
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "clove", "clove_sdk", "hil", "plugins/serial/clove_driver_serial", "plugins/can/clove_driver_can", "plugins/gpio/clove_driver_gpio", "plugins/exchange/clove_driver_exchange"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
