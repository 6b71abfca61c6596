"""``clove doctor --json`` on this host, as a subprocess: every fact it reports is checked against
what this test reads from /proc and /sys itself (or learns by its own trial), and the run leaves
no cgroup behind. A cgroup v2 guest runs the same command under its VM harness."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROOT = os.geteuid() == 0
V1_CONTROLLERS = {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "net_prio", "blkio",
                  "perf_event", "hugetlb", "pids", "rdma", "misc"}  # fmt: skip


def doctor(*args: str, tmp_path: Path) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "clove", "doctor", "--json", "--state-dir", str(tmp_path / "state"), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.stderr == "", proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def check(report: dict[str, Any], check_id: str) -> dict[str, Any]:
    found = [c for c in report["checks"] if c["id"] == check_id]
    assert len(found) == 1, f"{check_id}: {[c['id'] for c in report['checks']]}"
    return found[0]


def mounts() -> tuple[dict[str, str], str | None]:
    """v1 controller -> its mount point, and where cgroup2 is mounted."""
    v1: dict[str, str] = {}
    v2 = None
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _dev, point, fstype, options = line.split()[:4]
        if fstype == "cgroup2":
            v2 = point
        elif fstype == "cgroup":
            for option in set(options.split(",")) & V1_CONTROLLERS:
                v1[option] = point
    return v1, v2


def landlock_abi() -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return max(0, int(libc.syscall(ctypes.c_long(444), None, ctypes.c_size_t(0), ctypes.c_uint32(1))))


def read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text())
    except (OSError, ValueError):
        return None


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    code, report = doctor(tmp_path=tmp_path_factory.mktemp("doctor"))
    assert code == 0 and report["exit_status"] == 0  # no config: require_isolation is off
    return report


def test_cgroup_mode_and_hierarchies_match_proc(host: dict[str, Any]) -> None:
    v1, v2_mount = mounts()
    facts = check(host, "cgroup.version")["facts"]
    expected = ("hybrid" if v2_mount else "v1") if v1 else ("v2" if v2_mount else "none")
    assert facts["mode"] == expected
    assert set(facts["v1_mounted"]) == set(v1)
    assert facts["v2_mount"] == v2_mount
    unified = next((line[3:] for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::")), None)
    if v2_mount and unified is not None and Path(v2_mount, unified.lstrip("/"), "cgroup.controllers").exists():
        own = Path(v2_mount, unified.lstrip("/"))
        assert facts["v2"]["own"] == str(own).rstrip("/")
        assert facts["v2"]["controllers"] == (own / "cgroup.controllers").read_text().split()
        assert facts["v2"]["enabled"] == (own / "cgroup.subtree_control").read_text().split()
    if expected in ("v1", "hybrid"):
        own = check(host, "cgroup.v1")["facts"]
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _hid, controllers, path = line.split(":", 2)
            for controller in controllers.split(","):
                if controller in own and controller in v1:
                    direct = Path(v1[controller]) / path.lstrip("/")
                    if direct.is_dir():
                        assert own[controller]["own"] == str(direct).rstrip("/")


def test_backend_is_what_the_kernel_would_pick_and_nothing_was_made(host: dict[str, Any]) -> None:
    v1, v2_mount = mounts()
    backend = check(host, "cgroup.backend")["facts"]
    offered = set(Path(v2_mount, "cgroup.controllers").read_text().split()) if v2_mount else set()
    if ROOT and v1 and not {"memory", "cpu", "pids"} <= offered and {"memory", "cpu", "pids"} <= set(v1):
        assert backend["name"] == "cgroup1" and backend["controllers"] == ["cpu", "memory", "pids"]
        assert "cgroup2" in backend["reasons"]
    for parent in (backend["describe"].get("parents") or {}).values():
        assert not os.path.exists(parent), f"the doctor made {parent}"
    for change in backend["changes"]:
        assert change[0] != "mkdir" or not os.path.exists(change[1])


def test_landlock_seccomp_and_namespaces_match_the_kernel(host: dict[str, Any]) -> None:
    assert check(host, "landlock")["facts"]["abi"] == landlock_abi()
    seccomp = check(host, "seccomp")["facts"]
    actions = Path("/proc/sys/kernel/seccomp/actions_avail").read_text().split()
    assert seccomp["actions"] == actions and seccomp["user_notif"] == ("user_notif" in actions)
    ns = check(host, "namespaces")["facts"]
    assert ns["euid"] == os.geteuid()
    entries = {"mount": "mnt", "uts": "uts", "ipc": "ipc", "pid": "pid", "net": "net", "user": "user", "cgroup": "cgroup"}
    assert ns["present"] == {k: os.path.exists(f"/proc/self/ns/{v}") for k, v in entries.items()}
    if shutil.which("unshare"):
        made = subprocess.run(["unshare", "-m", "-u", "-i", "-p", "-n", "-f", "true"], capture_output=True, check=False).returncode == 0
        assert all(ns["created"].values()) == made


def test_user_namespace_facts_match_sysctls_and_a_trial(host: dict[str, Any]) -> None:
    facts = check(host, "userns")["facts"]
    assert facts["sysctl"] == {
        "kernel.apparmor_restrict_unprivileged_userns": read_int("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        "kernel.unprivileged_userns_clone": read_int("/proc/sys/kernel/unprivileged_userns_clone"),
        "user.max_user_namespaces": read_int("/proc/sys/user/max_user_namespaces"),
    }
    if ROOT and shutil.which("setpriv") and shutil.which("unshare"):
        trial = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "unshare", "-U", "-m", "true"]
        assert facts["usable"] == (subprocess.run(trial, capture_output=True, check=False).returncode == 0)


def test_can_and_gpio_match_sysfs_and_dev(host: dict[str, Any]) -> None:
    can = check(host, "socketcan")["facts"]
    net = Path("/sys/class/net")
    expected = sorted(p.name for p in net.iterdir() if (p / "type").read_text().strip() == "280") if net.is_dir() else []
    assert [i["name"] for i in can["interfaces"]] == expected
    try:
        socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW).close()
        works = True
    except OSError:
        works = False
    assert can["family"] == works
    chips = [c["path"] for c in check(host, "gpio")["facts"]["chips"]]
    found = sorted((p for p in Path("/dev").glob("gpiochip*") if p.name[8:].isdigit()), key=lambda p: int(p.name[8:]))
    assert chips == [str(p) for p in found]


def test_disk_is_measured_where_the_state_dir_will_be(host: dict[str, Any]) -> None:
    facts = check(host, "disk")["facts"]
    probed = facts["probed"]
    assert facts["state_dir"].startswith(probed) and os.path.isdir(probed)
    stats = os.statvfs(probed)
    free = stats.f_bavail * stats.f_frsize
    assert abs(facts["free_bytes"] - free) < max(free // 20, 512 << 20)  # other writers, generous margin
    assert facts["reserve_bytes"] == 32 << 20


def test_require_isolation_sets_the_exit_status(tmp_path: Path) -> None:
    fallback = tmp_path / "rlimit.toml"
    fallback.write_text('[sandbox]\nrequire_isolation = true\nbackend = "rlimit"\n')
    code, report = doctor("--config", str(fallback), tmp_path=tmp_path)
    assert code == 1 and report["exit_status"] == 1 and report["isolation"]["honoured"] is False
    assert report["config"] == str(fallback) and any("cpu" in r for r in report["isolation"]["reasons"])
    strict = tmp_path / "strict.toml"
    strict.write_text("[sandbox]\nrequire_isolation = true\n")
    code, report = doctor("--config", str(strict), tmp_path=tmp_path)
    assert code == (0 if report["isolation"]["honoured"] else 1)
    if ROOT and report["isolation"]["backend"] in ("cgroup1", "cgroup2"):
        assert code == 0 and all(r["enforced"] for r in report["isolation"]["limits"].values())


def test_text_output_and_config_errors(tmp_path: Path) -> None:
    text = subprocess.run([sys.executable, "-m", "clove", "doctor", "--state-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert text.returncode == 0 and text.stdout.startswith("clove doctor: ") and "isolation: require_isolation is off" in text.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[sandbox]\nbackend = 'v3'\n")
    proc = subprocess.run([sys.executable, "-m", "clove", "doctor", "--config", str(bad)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"clove: {bad}: [sandbox].backend: expected one of")
