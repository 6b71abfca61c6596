"""The kernel process itself: one per socket, clean shutdown, a loop that never blocks."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from clove.testing.kernel import KernelProcess, poll_for
from tests.conftest import agent_script, cgroup_leftovers, requires_root

pytestmark = [pytest.mark.integration, requires_root]


def test_second_kernel_on_a_live_socket_is_refused(kernel):
    out = subprocess.run(
        [sys.executable, "-m", "clove", "kernel", "--socket", kernel.socket, "--state-dir", str(kernel.dir / "other")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr.strip() == f"clove: another kernel is running on {kernel.socket}"
    assert os.path.exists(kernel.socket)
    with kernel.client() as c:
        assert c.noop("still mine") == "still mine"


def test_stale_socket_is_replaced(make_kernel):
    k = KernelProcess("")
    try:
        os.makedirs(os.path.dirname(k.socket), exist_ok=True)
        import socket

        s = socket.socket(socket.AF_UNIX)
        s.bind(k.socket)
        s.close()  # a socket file nobody listens on
        k.start()
        assert k.call("noop", msg="up") == "up"
        assert oct(os.stat(k.socket).st_mode & 0o777) == "0o660"
    finally:
        k.cleanup()


def test_sigterm_stops_agents_removes_cgroups_and_socket(make_kernel):
    k = make_kernel()
    with k.client() as c:
        ids = [c.spawn(f"a{i}", agent_script(s))["pid"] for i, s in enumerate(["healthy.py", "ignore_term.py", "cpu_hog.py"])]
    pid = k.pid
    assert k.stop() == 0
    assert not os.path.exists(k.socket)
    assert cgroup_leftovers(pid) == []
    for agent_pid in ids:
        assert not os.path.exists(f"/proc/{agent_pid}")
    lines = (k.state_dir / "journal.jsonl").read_text().splitlines()
    assert '"kernel.stopped"' in lines[-1]


def test_killing_a_term_ignoring_agent_does_not_delay_neighbours(kernel):
    with kernel.client() as c:
        c.spawn("stubborn", agent_script("ignore_term.py"))
        poll_for(lambda: b"ready" in c.logs(name="stubborn")["data"], message="ready")
        idle = []
        for _ in range(100):
            t = time.perf_counter()
            c.noop("x")
            idle.append(time.perf_counter() - t)
    done = threading.Event()

    def kill() -> None:
        with kernel.client() as killer:
            killer.kill(name="stubborn")
        done.set()

    thread = threading.Thread(target=kill)
    started = time.monotonic()
    thread.start()
    during = []
    with kernel.client() as c:
        while not done.is_set():
            t = time.perf_counter()
            c.noop("x")
            during.append(time.perf_counter() - t)
    thread.join()
    elapsed = time.monotonic() - started
    assert elapsed >= 2.0  # the kill really waited out the 2 s grace period...
    assert len(during) > 50  # ...while the neighbour kept getting answers
    assert max(during) < 0.25, f"a noop took {max(during) * 1000:.0f} ms during the kill"


def test_require_isolation_refuses_unenforceable_spawns(make_kernel):
    k = make_kernel(sandbox='backend = "rlimit"\nrequire_isolation = true')
    with k.client() as c:
        r = c.spawn("capped", agent_script("healthy.py"), limits={"cpu": "20%"})
        assert r["success"] is False and r["code"] == "sandbox.unenforceable"
        assert "cpu" in r["error"]
        assert c.spawn("open", agent_script("healthy.py"), sandboxed=False)["code"] == "sandbox.unenforceable"
        # Every agent gets the [limits] defaults, a CPU quota among them, which rlimits cannot
        # enforce: asking only for what rlimits can do is not enough any more.
        default = c.spawn("fine", agent_script("healthy.py"), limits={"pids": 64})
        assert default["success"] is False and default["code"] == "sandbox.unenforceable"
        assert default["details"]["cpu"]["requested"] == 50_000 and "pids" not in default["details"]


def test_rlimit_fallback_reports_truthfully(make_kernel):
    k = make_kernel(sandbox='backend = "rlimit"')
    with k.client() as c:
        r = c.spawn("capped", agent_script("healthy.py"), limits={"cpu": "20%", "memory": "512M", "pids": 64})
    limits = r["isolation"]["limits"]
    assert limits["cpu"]["enforced"] is False and "RLIMIT_CPU" in limits["cpu"]["via"]
    assert limits["memory"]["enforced"] is True and "RLIMIT_AS" in limits["memory"]["via"]
    assert limits["pids"] == {"requested": 64, "enforced": True, "via": limits["pids"]["via"], "source": "request", "ceiling": 1024}


def test_agents_and_cgroups_of_a_killed_kernel_are_reaped_by_the_next(make_kernel):
    from tests.conftest import TEST_CONFIG

    crashed = KernelProcess(TEST_CONFIG.format(uid_base=4_100_000, sandbox="")).start()
    try:
        with crashed.client() as c:
            orphan = c.spawn("orphan", agent_script("ignore_term.py"))  # needs no kernel to live
        dead = crashed.pid
        os.kill(dead, 9)
        crashed.proc.wait()
        # The agent dies with its kernel (its G watches the kernel's life line)...
        poll_for(lambda: not _running(orphan["pid"]), timeout=10, message="the orphan to die")
        make_kernel()  # ...and nothing of the dead kernel's cgroups is left once the next one is up
        assert cgroup_leftovers(dead) == []
    finally:
        crashed.cleanup()


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
