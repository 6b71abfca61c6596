"""The device broker on a real kernel with real driver hosts, using the hardware-free
``loopback`` driver: grants on every operation, the stream through grants and filters, bounded
queues, and supervision of hosts that crash, hang, leak or fail to open."""

from __future__ import annotations

import os

import pytest

from clove.errors import DeviceBroken, DeviceTimeout, DeviceUnavailable, InvalidArguments
from clove.testing.kernel import poll_for
from tests.conftest import agent_script, read_report, requires_root

pytestmark = [pytest.mark.integration, requires_root]

DEVICES = """
[devices.loop]
driver = "loopback"
heartbeat_timeout = 2
call_timeout = 1
backoff_initial = 0.1
backoff_max = 0.5
limits = { memory = "96M", pids = 16 }

[devices.other]
driver = "loopback"
pollable = false
"""


def _state(k, name: str) -> dict:  # noqa: ANN001
    return k.call("device.info", device=name)["device"]


def _ready(k, name: str, *, after: int = 0) -> dict:  # noqa: ANN001
    return poll_for(lambda: (d := _state(k, name))["state"] == "ready" and d["incarnation"] > after and d, 20, message=f"{name} ready")


@pytest.fixture
def devkernel(make_kernel):  # noqa: ANN001, ANN201
    k = make_kernel(DEVICES)
    _ready(k, "loop")
    _ready(k, "other")
    return k


def test_agent_round_trip_through_its_grant(devkernel):
    with devkernel.client() as op:
        op.spawn("user", agent_script("device_user.py"), args=["roundtrip", "other"], devices={"loop": {"ops": ["write", "recv"], "tags": ["ok", "other"]}})
        report = read_report(devkernel, "user")
    assert report["list"] == ["loop"]  # only the device it holds a grant on
    assert report["write"]["written"] == 1
    assert report["items"][0] == ["ok", {"n": 1}]


def test_receive_grant_hides_items_outside_it(devkernel):
    with devkernel.client() as op:
        op.spawn("watcher", agent_script("device_user.py"), args=["watch"], devices={"loop": {"ops": ["recv"], "tags": ["ok"]}})
        poll_for(lambda: b"READY" in op.logs(name="watcher")["data"], message="watcher ready")
        loop = op.device("loop")
        loop.write(tag="hidden", data="x", count=5)
        loop.write(tag="ok", data="seen", count=2)
        loop.write(tag="hidden", data="end")
        loop.write(tag="ok", data="end")
        report = read_report(devkernel, "watcher")
    assert report["tags"] == ["ok", "ok", "ok"]


def test_denials_name_what_is_not_granted_and_are_journaled(devkernel):
    with devkernel.client() as op:
        op.spawn("rogue", agent_script("device_user.py"), args=["forbidden"], devices={"loop": {"ops": ["write"], "tags": ["ok"]}})
        report = read_report(devkernel, "rogue")
        assert report == {"tag": "perm.denied", "op": "perm.denied", "device": "perm.denied"}
        security = op.get_audit_log(category="SECURITY", limit=100)["entries"]
    denied = [(e["syscall"], e["args"].get("op"), e["args"].get("device")) for e in security if e["agent_name"] == "rogue"]
    assert ("device.call", "write", "loop") in denied  # the forbidden tag
    assert ("device.call", "crash", "loop") in denied  # the op outside the grant
    assert ("device.call", "write", "other") in denied  # the device without a grant
    assert _state(devkernel, "loop")["counters"]["denied"] >= 2


def test_rate_limit_refuses_calls_beyond_the_grant(devkernel):
    with devkernel.client() as op:
        op.spawn("limited", agent_script("device_user.py"), args=["burst"], devices={"loop": {"ops": ["write"], "tags": ["ok"], "max_rate_hz": 5}})
        report = read_report(devkernel, "limited")
    # A 5/s grant admits its burst (one call) and then about 5 per second: far fewer than 50.
    assert report["allowed"] >= 1 and report["refused"] >= 40, report
    assert report["codes"] == ["quota.exceeded"]


def test_operator_uses_every_device_and_sees_bounded_queues(devkernel):
    with devkernel.client() as op:
        loop = op.device("loop")
        assert loop.subscribe(queue=10) == {"success": True, "queue": 10, "dropped": 0}
        loop.write(tag="t", count=100)
        poll_for(lambda: _state(devkernel, "loop")["counters"]["items_in"] >= 100, message="items in")
        items = loop.recv(max_items=1000)
        assert [i["seq"] for i in items] == list(range(91, 101))  # the newest ten, the oldest dropped
        assert op.call("device.recv", device="loop")["dropped"] == 90
        with pytest.raises(InvalidArguments, match="device.recv"):  # the stream is not an operation
            loop.call("recv")
    assert devkernel.call("kernel.info")["resources"]["device_subscriptions"] == 0  # gone with the session


def test_crash_mid_call_answers_broken_then_the_host_comes_back(devkernel):
    before = _ready(devkernel, "loop")
    with devkernel.client() as op:
        loop = op.device("loop")
        loop.subscribe()
        with pytest.raises(DeviceBroken, match="host went down"):
            loop.crash()
        after = _ready(devkernel, "loop", after=before["incarnation"])
        assert after["restarts"] == before["restarts"] + 1 and after["host_pid"] != before["host_pid"]
        # The other device, the kernel and this subscription carried on.
        assert op.device("other").write(tag="x")["written"] == 1
        loop.write(tag="again")
        assert [i["tag"] for i in loop.recv(timeout=5)] == ["again"]
        events = [e["event_type"] for e in op.get_audit_log(category="DEVICE", limit=200)["entries"]]
    assert "device.down" in events and events.count("device.up") >= 2


def test_kill_9_mid_stream_gives_clear_errors_and_the_stream_resumes(devkernel):
    before = _ready(devkernel, "loop")
    with devkernel.client() as op:
        op.subscribe(["DEVICE_DOWN", "DEVICE_UP"])
        loop = op.device("loop")
        loop.subscribe()
        loop.write(tag="a", count=10)
        os.kill(before["host_pid"], 9)
        poll_for(lambda: _state(devkernel, "loop")["state"] != "ready" or _state(devkernel, "loop")["incarnation"] > before["incarnation"], message="outage seen")
        try:
            loop.write(tag="during")
        except DeviceUnavailable as err:  # while it restarts: a clear error, not a hang
            assert "loop" in err.message  # noqa: PT017 - it may also succeed, after the restart
        _ready(devkernel, "loop", after=before["incarnation"])
        loop.write(tag="b", count=3)
        got = poll_for(lambda: [i for i in loop.recv(max_items=100, timeout=1) if i["tag"] == "b"], message="stream after restart")
        assert len(got) == 3
        kinds = [e["type"] for e in op.poll_events(max_events=50, timeout=2)["events"]]
    assert "DEVICE_DOWN" in kinds and "DEVICE_UP" in kinds


def test_hung_host_is_killed_by_the_heartbeat_watchdog(devkernel):
    before = _ready(devkernel, "loop")
    with devkernel.client() as op:
        with pytest.raises(DeviceTimeout):  # the caller is answered at call_timeout...
            op.device("loop").call("hang", reply_timeout=20)
        after = _ready(devkernel, "loop", after=before["incarnation"])  # ...and the silent host replaced
        hung = [e for e in op.get_audit_log(category="DEVICE", limit=200)["entries"] if e["event_type"] == "device.hung"]
    assert hung and "heartbeat" in hung[0]["details"]["reason"]
    assert after["host_pid"] != before["host_pid"]


def test_leaking_host_is_oom_killed_in_its_cgroup_and_restarted(devkernel):
    before = _ready(devkernel, "loop")
    with devkernel.client() as op:
        with pytest.raises((DeviceBroken, DeviceTimeout)):  # killed mid-call (or, on a slow day, late)
            op.device("loop").call("leak", reply_timeout=20, megabytes=400)
        _ready(devkernel, "loop", after=before["incarnation"])
        downs = [e["details"]["reason"] for e in op.get_audit_log(category="DEVICE", limit=200)["entries"] if e["event_type"] == "device.down"]
    assert downs == ["oom_killed"]
    assert devkernel.call("noop") is not None


def test_device_that_cannot_open_is_unavailable_and_retried(make_kernel):
    k = make_kernel('[devices.broken]\ndriver = "loopback"\nfail_open = true\nbackoff_initial = 0.1\nbackoff_max = 0.2\n')
    state = poll_for(lambda: (d := _state(k, "broken"))["restarts"] >= 3 and d, 20, message="retries")
    assert state["state"] in ("down", "starting") and "fail_open" in state["last_error"]
    with k.client() as op, pytest.raises(DeviceUnavailable, match="broken"):
        op.device("broken").write(tag="x")


def test_a_host_runs_in_its_own_cgroup_without_new_privileges(devkernel):
    host = _state(devkernel, "loop")["host_pid"]
    status = open(f"/proc/{host}/status").read()
    assert "NoNewPrivs:\t1" in status
    cgroups = open(f"/proc/{host}/cgroup").read()
    memory = next(line for line in cgroups.splitlines() if ":memory:" in line)
    assert "/dev-loop-" in memory  # its own cgroup, under the kernel's
    limit = int(open(f"/sys/fs/cgroup/memory{memory.split(':', 2)[2]}/memory.limit_in_bytes").read())
    assert limit == 96 << 20  # the device table's limits = { memory = "96M" }


def test_hosts_are_gone_after_the_kernel_stops(make_kernel):
    k = make_kernel(DEVICES)
    pids = [_ready(k, name)["host_pid"] for name in ("loop", "other")]
    k.stop()
    poll_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in pids), 10, message="hosts to exit")


def test_drivers_learn_the_caller_from_the_kernel_and_items_can_be_addressed(devkernel):
    grant = {"ops": ["whoami", "recv"], "tags": ["*"]}
    with devkernel.client() as op:
        for name in ("alice", "bob"):
            op.spawn(name, agent_script("device_whoami.py"), devices={"loop": grant})
        for name in ("alice", "bob"):
            poll_for(lambda n=name: b"READY" in op.logs(name=n)["data"], 15, message=f"{name} ready")
        poll_for(lambda: _state(devkernel, "loop")["subscribers"] == 2, message="two subscribers")
        loop = op.device("loop")
        loop.write(tag="for-alice", to="alice")
        loop.write(tag="for-bob", to="bob")
        loop.write(tag="everyone", data="end")
        assert loop.whoami()["operator"] is True
        alice, bob = read_report(devkernel, "alice"), read_report(devkernel, "bob")
    assert alice["whoami"]["agent"] == "alice" and alice["whoami"]["grant"]["tags"] == ["*"]
    assert bob["whoami"]["agent"] == "bob" and bob["whoami"]["operator"] is False
    assert alice["tags"] == ["for-alice", "everyone"] and bob["tags"] == ["for-bob", "everyone"]
