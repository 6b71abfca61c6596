"""configs/clove.service: ``systemd-analyze verify`` finds nothing to say about it, and it keeps
the settings the kernel depends on (delegation, a stop that lets the kernel stop its agents)
without the hardening options that would break cgroup or namespace management."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "configs" / "clove.service"
INSTALLED_AT = "/usr/local/bin/clove"


def settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is missing: install the Debian package 'systemd' (make ops-setup)")
    return subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)


def installed_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit as installed here: ExecStart points at this checkout's ``clove`` (verify checks
    that the command exists), everything else unchanged."""
    clove = Path(sys.executable).parent / "clove"
    if not clove.exists():
        pytest.skip(f"no clove entry point at {clove} (pip install -e .)")
    copy = tmp_path / "clove.service"
    copy.write_text((text or UNIT.read_text()).replace(INSTALLED_AT, str(clove)))
    return copy


def test_systemd_analyze_verify_is_silent(tmp_path: Path) -> None:
    result = verify(installed_copy(tmp_path))
    assert result.returncode == 0 and result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


def test_verify_would_catch_a_mistake(tmp_path: Path) -> None:
    """The check above means something: a misspelt key or a bad value is reported."""
    broken = UNIT.read_text().replace("Delegate=yes", "Delegate=sometimes").replace("KillMode=mixed", "KillMod=mixed")
    result = verify(installed_copy(tmp_path, broken))
    assert "KillMod" in result.stderr and "sometimes" in result.stderr


def test_the_kernel_owns_its_cgroup_subtree_and_stops_its_agents() -> None:
    s = settings()
    assert s["Delegate"] == ["yes"] and s["KillMode"] == ["mixed"] and s["Restart"] == ["on-failure"]
    assert s["StateDirectory"] == ["clove"] and s["RuntimeDirectory"] == ["clove"] and s["Group"] == ["clove"]
    assert "--socket /run/clove/clove.sock" in s["ExecStart"][0] and "--state-dir /var/lib/clove" in s["ExecStart"][0]


@pytest.mark.parametrize(
    "option",
    ["ProtectControlGroups", "ProtectKernelTunables", "RestrictNamespaces", "PrivateUsers", "ProtectHostname",
     "PrivateDevices", "DeviceAllow", "ProtectClock", "PrivateNetwork", "SystemCallFilter", "CapabilityBoundingSet"],
)  # fmt: skip
def test_no_hardening_that_breaks_cgroups_namespaces_or_devices(option: str) -> None:
    assert option not in settings()
