"""``[sandbox]`` keys of the spare pool: defaults, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from clove.config import KernelConfig, load_config
from clove.errors import ConfigError


def load(tmp_path: Path, text: str) -> KernelConfig:
    path = tmp_path / "kernel.toml"
    path.write_text(text)
    return load_config(path)


def test_defaults(tmp_path: Path) -> None:
    sandbox = load(tmp_path, "").sandbox
    assert (sandbox.spares_max, sandbox.spares_min, sandbox.spares_per_agent) == (8, 1, 2)


def test_spares_can_be_switched_off(tmp_path: Path) -> None:
    assert load(tmp_path, "[sandbox]\nspares_max = 0\nspares_min = 0\n").sandbox.spares_max == 0


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("spares_max = -1", "spares_max", "must be between 0 and 64, got -1"),
        ("spares_max = 65", "spares_max", "must be between 0 and 64, got 65"),
        ('spares_max = "8"', "spares_max", "expected int, got str '8'"),
        ("spares_max = 2.5", "spares_max", "expected int, got float 2.5"),
        ("spares_min = 3\nspares_max = 2", "spares_min", "must be at most spares_max (2), got 3"),
        ("spares_max = 0", "spares_min", "must be at most spares_max (0), got 1"),
        ("spares_per_agent = -2", "spares_per_agent", "must be between 0 and 64, got -2"),
        ("spares_per_agent = true", "spares_per_agent", "expected int, got bool True"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, key: str, message: str) -> None:
    path = tmp_path / "kernel.toml"
    path.write_text(f"[sandbox]\n{text}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.message == f"{path}: [sandbox].{key}: {message}"
    assert info.value.details == {"table": "sandbox", "key": key}
