"""Agents die with their kernel, and only with it.

* A kernel killed with SIGKILL takes every agent's whole tree with it at once (forked children and
  commands run by ``exec`` inside the agents included, a paused agent too), through the life
  line every agent's G watches and the warden that empties the kernel's cgroups.
* The next kernel's boot removes every cgroup a dead kernel left, on the first try, and never
  touches a live kernel's.
* A zygote that dies takes no agent with it: the kernel starts a new one and keeps supervising
  the running agents (their exits, kills and commands) itself.

Every wait polls; processes are watched through pidfds, so a reused pid cannot fool a check.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import signal
import time
from pathlib import Path

import pytest

from clove.testing.kernel import KernelProcess, poll_for
from tests.conftest import TEST_CONFIG, agent_row, agent_script, cgroup_leftovers, requires_root

pytestmark = [pytest.mark.integration, requires_root]

#: How long the processes of a SIGKILLed kernel's agents may take to go (measured: see below).
GONE_WITHIN = 3.0


def _config() -> str:
    return TEST_CONFIG.format(uid_base=random.randrange(300_000, 4_000_000, 1000), sandbox="")


def _marker() -> str:
    """A ``sleep`` argument no other test on this machine uses: it names a command's process."""
    return str(random.randrange(5_000_000, 9_000_000))


def _line(k: KernelProcess, name: str, prefix: str, timeout: float = 30.0) -> dict:
    """The JSON after ``prefix`` on the last such line the agent printed."""

    def find() -> dict | None:
        data = k.call("agent.logs", name=name, offset=0, max_bytes=1 << 20)["data"].decode()
        found = [line[len(prefix) :] for line in data.splitlines() if line.startswith(prefix)]
        return json.loads(found[-1]) if found else None

    return poll_for(find, timeout, message=f"{name}'s {prefix.strip()} line")


def _ticks(k: KernelProcess, name: str) -> int:
    data = k.call("agent.logs", name=name, offset=-4096, max_bytes=4096)["data"].decode()
    counts = [int(line[len("ticks=") :]) for line in data.splitlines() if line.startswith("ticks=")]
    return counts[-1] if counts else 0


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _tree(root: int) -> set[int]:
    """``root``, its parent (G: the agent tree's root) and every descendant of ``root``."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        fields = _stat(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, stack = {root}, [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            found.add(child)
            stack.append(child)
    parent = _stat(root)
    if parent is not None:
        found.add(int(parent[1]))
    return found


def _with_argv(*argv: str) -> list[int]:
    want = ("\0".join(argv) + "\0").encode()
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as f:
            if f.read() == want:
                found.append(int(entry))
    return found


class Watched:
    """Processes held by pidfds: :meth:`alive` cannot be fooled by a pid reused meanwhile."""

    def __init__(self) -> None:
        self.fds: dict[int, int] = {}

    def add(self, pids: set[int] | list[int]) -> None:
        for pid in pids:
            if pid not in self.fds and pid > 1:
                with contextlib.suppress(ProcessLookupError):
                    self.fds[pid] = os.pidfd_open(pid)

    def alive(self) -> list[int]:
        poller = select.poll()
        for fd in self.fds.values():
            poller.register(fd, select.POLLIN)
        ended = {fd for fd, _ in poller.poll(0)}
        return sorted(pid for pid, fd in self.fds.items() if fd not in ended)

    def kill_survivors(self) -> None:
        """After a failure: end what we started (by pidfd), so a broken build leaks nothing."""
        for pid in self.alive():
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.fds[pid], signal.SIGKILL)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _release_cgroups(kernel_pid: int) -> None:
    """After a failure: thaw and empty what a dead kernel of ours left, then remove it."""
    for base in {Path(d).parent for d in cgroup_leftovers(kernel_pid)}:
        top = base / f"clove-{kernel_pid}"
        dirs = sorted((d for d, _, _ in os.walk(top)), key=len, reverse=True)

        def one_round(dirs: list[str] = dirs, top: Path = top) -> bool:
            for d in dirs:
                with contextlib.suppress(OSError), open(f"{d}/cgroup.procs") as f:
                    for pid in f.read().split():
                        with contextlib.suppress(OSError):
                            os.kill(int(pid), signal.SIGKILL)
                if os.path.exists(f"{d}/freezer.state"):
                    with contextlib.suppress(OSError), open(f"{d}/freezer.state", "w") as f:
                        f.write("THAWED")
            for d in dirs:
                with contextlib.suppress(OSError):
                    os.rmdir(d)
            return not os.path.exists(top)

        with contextlib.suppress(TimeoutError):
            poll_for(one_round, 5, message=f"{top} to go")


def test_a_killed_kernel_takes_every_agent_tree_with_it() -> None:
    k = KernelProcess(_config()).start()
    watched = Watched()
    dead = k.pid
    try:
        markers = {"boxed": _marker(), "free": _marker()}
        with k.client() as c:
            assert c.spawn("hog", agent_script("cpu_hog.py"))["success"]
            assert c.spawn("frozen", agent_script("cpu_hog.py"))["success"]
            assert c.spawn("boxed", agent_script("lifeline.py"), args=[markers["boxed"]])["success"]
            free = c.spawn("free", agent_script("lifeline.py"), args=[markers["free"]], sandboxed=False)
            assert free["success"]
            assert c.pause(name="frozen")
        for name, marker in markers.items():
            assert _line(k, name, "READY ")["exec"]["success"]
            watched.add(poll_for(lambda m=marker: _with_argv("sleep", m), 15, message=f"{name}'s command"))
        for name in ("hog", "frozen", *markers):
            tree = _tree(agent_row(k, name)["pid"])
            assert len(tree) >= 2, (name, tree)  # the agent and its G at least
            watched.add(tree)
        for name in markers:
            assert len(_tree(agent_row(k, name)["pid"])) >= 3, name  # ...and the child it forked
        warden = k.call("kernel.info").get("warden_pid")
        assert len(watched.alive()) >= 12

        started = time.monotonic()
        os.kill(dead, signal.SIGKILL)
        k.proc.wait()
        poll_for(lambda: not watched.alive(), GONE_WITHIN, interval=0.002, message="the agents' processes")
        gone_after = time.monotonic() - started
        print(f"\n{len(watched.fds)} agent processes gone {gone_after * 1000:.0f} ms after the kernel died")

        # The warden removes the dead kernel's cgroups, then ends too.
        poll_for(lambda: not cgroup_leftovers(dead), 10, message="the dead kernel's cgroups to go")
        if warden is not None:
            poll_for(lambda: _stat(warden) is None or _stat(warden)[0] == "Z", 10, message="the warden's end")
    finally:
        watched.kill_survivors()
        watched.close()
        _release_cgroups(dead)
        k.cleanup()


def test_the_next_boot_removes_a_dead_kernels_cgroups_on_the_first_try(make_kernel) -> None:
    bystander = make_kernel()  # a live kernel: its agents and cgroups are not a dead one's
    with bystander.client() as c:
        assert c.spawn("neighbour", agent_script("cpu_hog.py"))["success"]
    neighbour = agent_row(bystander, "neighbour")["pid"]

    crashed = KernelProcess(_config()).start()
    watched = Watched()
    dead = crashed.pid
    try:
        with crashed.client() as c:
            assert c.spawn("boxed", agent_script("cpu_hog.py"))["success"]
            assert c.spawn("free", agent_script("healthy.py"), sandboxed=False)["success"]
            assert c.spawn("frozen", agent_script("cpu_hog.py"))["success"]
            assert c.pause(name="frozen")  # its G is frozen too: only a cgroup-wide kill reaches it
        frozen = _tree(agent_row(crashed, "frozen")["pid"])
        watched.add(frozen)
        warden = crashed.call("kernel.info").get("warden_pid")
        # A crash that takes the warden too: stop the kernel (so it cannot start another), kill both.
        os.kill(dead, signal.SIGSTOP)
        if warden is not None:
            os.kill(warden, signal.SIGKILL)
        os.kill(dead, signal.SIGKILL)
        crashed.proc.wait()
        left = cgroup_leftovers(dead)
        assert left, "nothing left for the next boot to remove"
        assert watched.alive(), "the frozen agent should still be there"

        restarted = make_kernel(state_dir=crashed.state_dir)  # its boot reaps what the dead one left
        assert cgroup_leftovers(dead) == [], f"left after the first boot: {cgroup_leftovers(dead)}"
        assert not watched.alive()
        assert restarted.call("agent.list")["agents"] == []

        row = agent_row(bystander, "neighbour")  # the live kernel's agent and cgroups are untouched
        assert (row["state"], row["pid"]) == ("running", neighbour)
        assert cgroup_leftovers(bystander.pid)
        restarted.stop()
    finally:
        watched.kill_survivors()
        watched.close()
        _release_cgroups(dead)
        crashed.cleanup()


def test_a_dead_zygote_is_replaced_and_running_agents_stay_supervised(make_kernel) -> None:
    k = make_kernel()
    old = k.call("kernel.info")["zygote_pid"]
    with k.client() as c:
        assert c.spawn("boxed", agent_script("lifeline.py"), args=[_marker(), "7"])["success"]
        free = c.spawn("free", agent_script("lifeline.py"), args=[_marker(), "9"], sandboxed=False)
        assert free["success"]
        assert c.spawn("victim", agent_script("lifeline.py"), args=[_marker()])["success"]
        assert c.spawn("hog", agent_script("cpu_hog.py"))["success"]
    for name in ("boxed", "free", "victim"):
        _line(k, name, "READY ")
    pids = {name: agent_row(k, name)["pid"] for name in ("boxed", "free", "victim", "hog")}

    started = time.monotonic()
    os.kill(old, signal.SIGKILL)
    new = poll_for(lambda: (z := k.call("kernel.info")["zygote_pid"]) != old and z, 10, message="a zygote")
    with k.client() as c:  # new agents start through the new zygote
        late = poll_for(lambda: c.spawn("late", agent_script("healthy.py"))["success"], 15, message="a spawn")
    took = time.monotonic() - started
    print(f"\nzygote {old} killed; {new} started; the first spawn through it took {took * 1000:.0f} ms")
    assert late
    assert agent_row(k, "late")["state"] == "running"

    # The running agents kept their processes and are still served.
    for name, pid in pids.items():
        row = agent_row(k, name)
        assert (row["state"], row["pid"]) == ("running", pid), row
    before = {name: _ticks(k, name) for name in ("boxed", "free")}
    poll_for(lambda: all(_ticks(k, n) > before[n] + 20 for n in before), 15, message="more ticks")

    # Commands still run inside them, now forked by the new zygote (in the agent's own namespaces).
    for name, hostname in (("boxed", "clove-boxed"), ("free", os.uname().nodename)):
        os.kill(pids[name], signal.SIGUSR1)
        result = _line(k, name, "EXEC ")
        assert result["success"], result
        assert result["stdout"] == hostname + "\n", result

    # Their exits are still seen, with the exact code and reason.
    for name, code in (("boxed", 7), ("free", 9)):
        os.kill(pids[name], signal.SIGUSR2)
        row = poll_for(lambda n=name: (r := agent_row(k, n))["state"] == "exited" and r, 15, message=name)
        assert (row["exit_reason"], row["exit_code"], row["exit_signal"]) == ("exited", code, None), row
    os.kill(pids["hog"], signal.SIGKILL)
    row = poll_for(lambda: (r := agent_row(k, "hog"))["state"] == "exited" and r, 15, message="hog to die")
    assert (row["exit_reason"], row["exit_signal"]) == ("signaled", signal.SIGKILL), row

    # And an operator can still stop one.
    with k.client() as c:
        assert c.kill(name="victim")
    assert "victim" not in [a["name"] for a in k.call("agent.list")["agents"]]
    assert _stat(pids["victim"]) is None or _stat(pids["victim"])[0] == "Z"
