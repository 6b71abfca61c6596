"""``clove devices``, ``clove device`` and ``clove run`` against a real kernel."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from clove.testing.kernel import poll_for
from tests.conftest import agent_script, read_report, requires_root

pytestmark = [pytest.mark.integration, requires_root]


def clove(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clove.cli.main", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def devkernel(make_kernel):  # noqa: ANN001, ANN201
    k = make_kernel('[devices.loop]\ndriver = "loopback"\n')
    poll_for(lambda: k.call("device.info", device="loop")["device"]["state"] == "ready", 20, message="loop ready")
    return k


def test_devices_lists_state_pid_and_counters(devkernel):
    assert clove("device", "loop", "write", "tag=a", "data=0x10", "--socket", devkernel.socket).returncode == 0
    out = clove("devices", "--socket", devkernel.socket)
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "DRIVER", "STATE", "HOST", "PID"]
    info = devkernel.call("device.info", device="loop")["device"]
    assert row.split()[:6] == ["loop", "loopback", "ready", str(info["host_pid"]), "0", "0"]
    listed = json.loads(clove("devices", "--json", "--socket", devkernel.socket).stdout)
    assert listed[0]["counters"]["calls"] == 1


def test_device_call_parses_values_and_reports_errors(devkernel):
    out = clove("device", "loop", "write", "tag=a", "data=hex:0a0b", "count=2", "--json", "--socket", devkernel.socket)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["written"] == 2
    bad = clove("device", "loop", "write", "nokey", "--socket", devkernel.socket)
    assert bad.returncode == 1 and bad.stderr.strip() == "clove: device: expected key=value, got 'nokey'"
    unknown = clove("device", "nope", "write", "tag=a", "--socket", devkernel.socket)
    assert unknown.returncode == 1 and "no device 'nope' is configured [notfound]" in unknown.stderr


def test_run_starts_the_configs_agents_on_a_running_kernel(devkernel, tmp_path):
    config = tmp_path / "deploy.toml"
    config.write_text(
        '[devices.loop]\ndriver = "loopback"\n'
        f'[agents.user]\nscript = "{agent_script("device_user.py")}"\nargs = ["roundtrip"]\n'
        '[agents.user.devices.loop]\nops = ["write", "recv"]\ntags = ["ok"]\n'
    )
    out = clove("run", str(config), "--socket", devkernel.socket)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("started user (id ")
    assert read_report(devkernel, "user")["items"] == [["ok", {"n": 1}]]


def test_run_names_the_file_and_key_of_a_config_error(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[devices.loop]\ndriver = "loopback"\npollable = "yes"\n')
    out = clove("run", str(config), "--socket", str(tmp_path / "none.sock"))
    assert out.returncode == 2 or out.returncode == 1
    assert out.stderr.strip() == f"clove: {config}: [devices.loop].pollable: expected bool, got string 'yes'"


def test_describe_lists_a_drivers_keys_and_operations_without_a_kernel():
    out = clove("devices", "--describe", "serial", "--socket", "/nonexistent/k.sock")
    assert out.returncode == 0, out.stderr
    assert "    port: string (required)" in out.stdout and "    write(data):" in out.stdout
    assert "stream: bytes, received with device.recv; grant op 'read'" in out.stdout
    described = json.loads(clove("devices", "--describe", "gpio", "--json").stdout)
    assert set(described["ops"]) == {"get", "set", "info"} and described["stream_op"] == "watch"
    missing = clove("devices", "--describe", "lidar")
    assert missing.returncode == 1 and "driver plugin 'lidar' is not installed" in missing.stderr
