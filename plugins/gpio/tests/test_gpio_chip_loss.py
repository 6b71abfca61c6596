"""``simulate = "auto"`` and a chip that goes: a device that has opened the real chip is never
reopened on a simulated one (its e-stop would never fire again). ``gpiod`` is replaced by a
minimal fake request, as the real-chip tests do; the guest tests cover a real chip."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gpiod
import pytest

from clove.drivers import DeviceUnavailable
from clove_driver_gpio import GpioConfig, GpioDriver


class FakeRequest:
    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()

    @property
    def fd(self) -> int:
        return self.read_fd

    def release(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


@pytest.fixture
def chip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "gpiochip0"
    path.touch()
    monkeypatch.setattr(gpiod, "is_gpiochip_device", lambda p: p == str(path) and path.exists())
    monkeypatch.setattr(gpiod, "request_lines", lambda *_a, **_k: FakeRequest())
    return path


def driver(chip: Path, state_dir: Path | None) -> GpioDriver:
    config: GpioConfig = GpioDriver.parse_config(
        {"chip": str(chip), "lines": {"estop": 0}, "simulate": "auto"}
    )
    made = GpioDriver(config)
    made.state_dir = str(state_dir) if state_dir is not None else None
    return made


def test_a_chip_seen_before_is_unavailable_when_gone_not_simulated(chip: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with driver(chip, state) as real:
        assert real.simulated is False
    chip.unlink()  # unplugged
    with pytest.raises(DeviceUnavailable, match="is gone") as caught:
        driver(chip, state).open()
    assert caught.value.details == {"chip": str(chip)}
    chip.touch()  # back
    with driver(chip, state) as again:
        assert again.simulated is False


def test_a_chip_never_seen_is_still_simulated(chip: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    other = tmp_path / "gpiochip7"
    with driver(chip, state):
        pass
    with driver(other, state) as simulated:  # another chip's note does not count for this one
        assert simulated.simulated is True
    chip.unlink()
    with driver(chip, None) as outside_a_host:  # no state dir: nothing remembered
        assert outside_a_host.simulated is True


def test_the_note_is_the_chip_path(chip: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with driver(chip, state):
        pass
    notes: dict[str, Any] = {p.name: p.read_text() for p in state.iterdir()}
    assert notes == {"real-chip": str(chip)}
