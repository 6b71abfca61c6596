"""Fixtures of the exchange plugin's tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_disk import Disk  # noqa: E402


@pytest.fixture
def disk() -> Disk:
    """A fake fdatasync to hand the group commit (or the driver's ``sync_file``)."""
    return Disk()
