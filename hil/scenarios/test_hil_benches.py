"""Our own HIL scenarios, in plain pytest through the clove_hil plugin's fixtures: the rover
bench and one bench per fault family, each with every assertion passing, and nothing left
behind by a run (processes, ptys, sockets, cgroups)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

BENCHES = Path(__file__).resolve().parent.parent / "benches"

pytestmark = [pytest.mark.integration, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for the kernel's sandbox")]


def _pts() -> set[str]:
    return set(os.listdir("/dev/pts"))


def _children() -> set[int]:
    me = str(os.getpid())
    found = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        found.add(int(pid))
            except (OSError, IndexError):
                continue
    return found


def _clove_cgroups() -> set[str]:
    """Every kernel's cgroup directory (clove-<pid>) in each hierarchy this process sits in."""
    found = set()
    for line in open("/proc/self/cgroup").read().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            base = Path("/sys/fs/cgroup") / controller / path.lstrip("/")
            if controller and not controller.startswith("name=") and base.is_dir():
                found.update(d.name for d in base.iterdir() if d.name.startswith("clove-"))
    return found


def _explain(report) -> str:  # noqa: ANN001
    failed = [f"{o.name}: expected {o.expected}, measured {o.measured} ({o.detail})" for o in report.outcomes if not o.passed]
    return "\n".join(failed + report.errors)


@pytest.mark.timeout(240)
def test_rover_bench_passes_and_leaves_nothing_behind(hil_bench):
    pts, children = _pts(), _children()
    report = hil_bench(BENCHES / "rover.toml")
    assert report.passed, _explain(report)
    interlock = next(o for o in report.outcomes if o.kind == "frame_after")
    assert interlock.measured < 50  # zero speed on the bus, ms after the e-stop edge
    assert _pts() <= pts, "ptys left open"
    assert _children() <= children, "processes left running"
    assert report.kernel_pid and f"clove-{report.kernel_pid}" not in _clove_cgroups(), "cgroups left behind"
    assert report.summary["journal_verified"] and report.summary["oom_kills"] >= 1


@pytest.mark.timeout(120)
@pytest.mark.parametrize("bench", ["fault-can", "fault-serial", "fault-gpio", "fault-kernel", "trading"])
def test_fault_scenarios_react_as_declared(hil_bench, bench):
    report = hil_bench(BENCHES / f"{bench}.toml")
    assert report.passed, _explain(report)
    assert report.timeline, "the fault plan ran"


@pytest.mark.timeout(120)
def test_a_recorded_bus_session_drives_a_bench(hil_bench, tmp_path):
    """A captured session (here: the motor controller reporting an out-of-range command, then
    odometry) is played onto the bench's bus with its timestamps; the telemetry agent reacts to
    the replayed frames as it would to live ones."""
    import can

    from hil.motor import encode_fault, encode_odometry

    log = tmp_path / "session.asc"
    with can.Logger(str(log)) as writer:
        t = 1_000.0
        for i in range(20):
            msg = encode_odometry(100, 100, 10 * i)
            msg.timestamp = t + i * 0.02
            writer.on_message_received(msg)
        fault = encode_fault(1, 2500)
        fault.timestamp = t + 0.5
        writer.on_message_received(fault)
    bench = tmp_path / "replay.toml"
    bench.write_text(
        (BENCHES / "fault-kernel.toml").read_text().split("[[faults]]")[0].replace('deployment = "../../configs/', f'deployment = "{BENCHES.parent.parent}/configs/')
        + f'\n[[faults]]\nname = "replay"\nat = 1.0\nkind = "can_replay"\nsim = "bus"\nlog = "{log}"\n'
        + '\n[[assertions]]\nname = "telemetry reported the replayed fault"\nkind = "event"\ntype = "MOTOR_FAULT"\nmin = 1\n'
        + '\n[[assertions]]\nname = "the replayed fault frame was on the bus"\nkind = "frame_after"\nafter = "replay"\nbus = "bus"\nid = 0x1F0\nwithin_ms = 2000\n'
    )
    report = hil_bench(bench)
    assert report.passed, _explain(report)
