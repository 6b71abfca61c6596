"""clove doctor's other lines (Landlock, seccomp, user namespaces, SocketCAN, GPIO, disk, configured
devices), its JSON and text, and the command's config errors, on fake trees (FakeHost)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from clove.cli.doctor.host import DiskFacts
from clove.cli.doctor.host_checks import disk_check
from clove.cli.doctor.schema import CHECK_IDS, EXIT_BAD_CONFIG, SCHEMA_VERSION, STATUSES
from clove.cli.doctor.text import report_text
from clove.cli.main import main
from clove.config import JournalSection, KernelConfig, SandboxSection, load_config
from clove.testing.fakehost import FakeHost
from tests.unit.test_doctor_cgroups import run, status, v1_host


def test_missing_landlock_disabled_at_boot_names_lsm(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    host.lsm("lockdown", "capability", "yama", "apparmor")
    landlock = run(host, landlock_abi=0).check("landlock")
    assert landlock is not None and landlock.status == "missing"
    assert landlock.facts["abi"] == 0 and landlock.facts["enforces"]["fs"] is False
    assert landlock.facts["lsm"] == ["lockdown", "capability", "yama", "apparmor"]
    assert landlock.fix is not None and "lsm=" in landlock.fix


def test_missing_landlock_without_securityfs_asks_for_a_kernel(tmp_path: Path) -> None:
    landlock = run(v1_host(tmp_path), landlock_abi=0).check("landlock")
    assert landlock is not None and landlock.status == "missing" and landlock.facts["lsm"] is None
    assert landlock.fix is not None and "CONFIG_SECURITY_LANDLOCK" in landlock.fix


def test_old_landlock_abi_warns_what_it_cannot_rule(tmp_path: Path) -> None:
    landlock = run(v1_host(tmp_path), landlock_abi=3).check("landlock")
    assert landlock is not None and landlock.status == "warn"
    assert landlock.facts["enforces"] == {"fs": True, "tcp": False, "abstract_unix": False, "signals": False}
    assert "TCP" in landlock.summary and landlock.fix is not None and "6.12" in landlock.fix


def test_landlock_off_in_config_warns(tmp_path: Path) -> None:
    report = run(v1_host(tmp_path), KernelConfig(sandbox=SandboxSection(landlock=False)))
    assert status(report, "landlock") == "warn"


def test_apparmor_restricted_userns_is_reported_and_needs_nothing_from_clove(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    host.sysctl("kernel/apparmor_restrict_unprivileged_userns", 1)
    host.sysctl("kernel/unprivileged_userns_clone", 1)
    host.sysctl("user/max_user_namespaces", 63000)
    userns = run(host, userns=(0, errno.EPERM)).check("userns")
    assert userns is not None and userns.status == "ok" and userns.fix is None
    assert userns.facts["usable"] is False and userns.facts["create"] is True and userns.facts["capabilities_inside"] is False
    assert userns.facts["sysctl"] == {
        "kernel.apparmor_restrict_unprivileged_userns": 1,
        "kernel.unprivileged_userns_clone": 1,
        "user.max_user_namespaces": 63000,
    }
    assert "AppArmor" in userns.summary
    assert "kernel.apparmor_restrict_unprivileged_userns=0" in userns.meaning and "AppArmor profile" in userns.meaning


def test_userns_refused_by_debian_switch(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    host.sysctl("kernel/unprivileged_userns_clone", 0)
    userns = run(host, userns=(errno.EPERM, errno.EPERM)).check("userns")
    assert userns is not None and "unprivileged_userns_clone = 0" in userns.summary
    assert userns.facts["sysctl"]["kernel.apparmor_restrict_unprivileged_userns"] is None


def test_usable_userns_without_seccomp_is_a_warning(tmp_path: Path) -> None:
    report = run(v1_host(tmp_path), seccomp_library="pyseccomp cannot load libseccomp: no libseccomp.so.2")
    seccomp, userns = report.check("seccomp"), report.check("userns")
    assert seccomp is not None and seccomp.status == "missing" and seccomp.fix is not None and "libseccomp" in seccomp.fix
    assert userns is not None and userns.status == "warn" and userns.fix is not None
    assert "max_user_namespaces=0" in userns.fix


def test_seccomp_without_filter_mode(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    (host.proc / "sys/kernel/seccomp/actions_avail").unlink()
    seccomp = run(host).check("seccomp")
    assert seccomp is not None and seccomp.status == "missing" and seccomp.facts["filter"] is False
    assert seccomp.fix is not None and "CONFIG_SECCOMP_FILTER" in seccomp.fix


def test_seccomp_ok_reports_user_notification(tmp_path: Path) -> None:
    seccomp = run(v1_host(tmp_path)).check("seccomp")
    assert seccomp is not None and seccomp.status == "ok"
    assert seccomp.facts["user_notif"] is True and seccomp.facts["own_mode"] == 0


def test_namespace_refused_in_a_container(tmp_path: Path) -> None:
    ns = run(v1_host(tmp_path), namespaces={"mount": 0, "uts": 0, "ipc": 0, "pid": 0, "net": errno.EPERM}).check("namespaces")
    assert ns is not None and ns.status == "missing" and ns.facts["errors"] == {"net": "Operation not permitted"}
    assert ns.facts["present"]["user"] is True


def test_socketcan_interfaces_are_listed_by_type(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    host.net_interface("eth0", type=1)
    host.net_interface("vcan0")
    host.net_interface("can0", operstate="down", mtu=72, hardware=True)
    host.modules("vcan", "can_raw", "can")
    can = run(host).check("socketcan")
    assert can is not None and can.status == "warn" and can.fix is not None and "ip link set can0 up" in can.fix
    assert [i["name"] for i in can.facts["interfaces"]] == ["can0", "vcan0"]
    assert can.facts["interfaces"][0] == {"name": "can0", "operstate": "down", "fd": True, "virtual": False}
    assert can.facts["modules"] == ["can", "can_raw", "vcan"]


def test_socketcan_family_missing_hints_the_modules(tmp_path: Path) -> None:
    report = run(v1_host(tmp_path), can_family=errno.EAFNOSUPPORT)
    can = report.check("socketcan")
    assert can is not None and can.status == "missing" and can.fix is not None and "modprobe can can_raw" in can.fix
    assert run(v1_host(tmp_path / "b"), can_family=errno.EPROTONOSUPPORT).check("socketcan").fix.startswith("modprobe can_raw")  # type: ignore[union-attr]


def test_no_can_interface_hints_vcan(tmp_path: Path) -> None:
    can = run(v1_host(tmp_path)).check("socketcan")
    assert can is not None and can.status == "warn" and can.fix is not None and "modprobe vcan" in can.fix


def test_gpiochips_with_sysfs_labels(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    host.gpiochip(1, label="gpio-sim.0-node0", lines=16, base=560)
    host.gpiochip(0, label="pinctrl-bcm2711", lines=58)
    gpio = run(host).check("gpio")
    assert gpio is not None and gpio.status == "ok"
    chips = gpio.facts["chips"]
    assert [(Path(c["path"]).name, c["label"], c["lines"], c["source"]) for c in chips] == [
        ("gpiochip0", "pinctrl-bcm2711", 58, "sysfs"),
        ("gpiochip1", "gpio-sim.0-node0", 16, "sysfs"),
    ]
    assert chips[0]["access"] == "rw"


def test_no_gpiochip_is_missing(tmp_path: Path) -> None:
    assert status(run(v1_host(tmp_path)), "gpio") == "missing"


def test_disk_below_the_journal_reserve_is_missing() -> None:
    config = KernelConfig(journal=JournalSection(disk_reserve_bytes=64 << 20))
    low = disk_check(DiskFacts("/srv/clove", "/srv", 10 << 20, 1 << 30, ""), config)
    assert low.status == "missing" and "disk_reserve_bytes" in low.summary and low.facts["reserve_bytes"] == 64 << 20
    assert low.facts["state_dir"] == "/srv/clove" and low.facts["probed"] == "/srv"
    roomy = disk_check(DiskFacts("/srv/clove", "/srv/clove", 10 << 30, 20 << 30, ""), config)
    assert roomy.status == "ok"
    closed = disk_check(DiskFacts("/srv/clove", "/srv", 10 << 30, 20 << 30, "/srv: Permission denied"), config)
    assert closed.status == "missing" and closed.facts["writable"] is False


def test_disk_line_uses_the_state_dir_given(tmp_path: Path) -> None:
    disk = run(v1_host(tmp_path)).check("disk")
    assert disk is not None and disk.facts["state_dir"] == str(tmp_path / "state") and disk.facts["probed"] == str(tmp_path)
    assert disk.facts["free_bytes"] > 0 and disk.facts["reserve_bytes"] == 32 << 20


def test_configured_socketcan_device_without_its_channel(tmp_path: Path) -> None:
    config_file = tmp_path / "k.toml"
    config_file.write_text('[devices.motor]\ndriver = "can"\ninterface = "socketcan"\nchannel = "can1"\n')
    host = v1_host(tmp_path / "host")
    host.net_interface("vcan0")
    device = run(host, load_config(config_file)).check("device.motor")
    assert device is not None and device.status == "missing" and device.facts["channel"] == "can1"
    assert device.fix is not None and "type vcan" in device.fix


def test_report_json_is_the_documented_schema(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    report = run(host)
    data = json.loads(json.dumps(report.to_dict()))
    assert set(data) == {"schema", "host", "config", "state_dir", "checks", "isolation", "exit_status"}
    assert data["schema"] == SCHEMA_VERSION and data["config"] is None and data["exit_status"] == 0
    assert set(data["host"]) == {"hostname", "kernel", "machine", "euid"}
    assert set(data["isolation"]) == {"required", "honoured", "backend", "limits", "agents", "reasons"}
    for check in data["checks"]:
        assert set(check) == {"id", "title", "status", "summary", "meaning", "fix", "facts"}
        assert check["status"] in STATUSES and (check["id"] in CHECK_IDS or check["id"].startswith("device."))
        assert check["fix"] is None or check["status"] != "ok"
    ids = [c["id"] for c in data["checks"]]
    assert ids == ["cgroup.version", "cgroup.v1", "cgroup.backend", "namespaces", "landlock", "seccomp", "userns",
                   "workdir", "disk", "socketcan", "gpio"]  # fmt: skip


def test_text_report_shows_status_fix_and_verdict(tmp_path: Path) -> None:
    text = report_text(run(FakeHost(tmp_path), KernelConfig(sandbox=SandboxSection(require_isolation=True))))
    assert "missing  cgroup version" in text and "fix: mount cgroup v2" in text
    assert "require_isolation is on; it would NOT be honoured here" in text


def test_bad_config_names_file_and_key_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_file = tmp_path / "bad.toml"
    config_file.write_text('[sandbox]\nrequire_isolation = "yes"\n')
    assert main(["doctor", "--config", str(config_file)]) == EXIT_BAD_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("clove: ") and str(config_file) in err and "[sandbox].require_isolation" in err
    assert main(["doctor", "--config", str(tmp_path / "none.toml")]) == EXIT_BAD_CONFIG
    assert "no such file" in capsys.readouterr().err
