"""Shared fixtures: real kernels on private paths, and leak checks after each one stops."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clove.testing.kernel import KernelProcess, poll_for

AGENTS = Path(__file__).parent / "agents"


def agent_script(name: str) -> str:
    return str(AGENTS / name)


def _own_cgroup_dirs() -> list[Path]:
    dirs = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            if controller and not controller.startswith("name="):
                dirs.append(Path("/sys/fs/cgroup") / controller / path.lstrip("/"))

    return [d for d in dirs if d.is_dir()]


def cgroup_leftovers(kernel_pid: int) -> list[str]:
    """Directories named after this kernel that still exist in any of our hierarchies."""
    return [str(d / f"clove-{kernel_pid}") for d in _own_cgroup_dirs() if (d / f"clove-{kernel_pid}").exists()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def processes_with_uids(low: int, high: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:"):
                if low <= int(line.split()[1]) < high:
                    found.append(int(entry))
                break
    return found


TEST_CONFIG = """
[sandbox]
kill_grace = 2.0
uid_base = {uid_base}
{sandbox}
[supervisor]
backoff_initial = 0.2
backoff_max = 2.0
stable_after = 5.0
"""


@pytest.fixture
def make_kernel() -> Iterator[Callable[..., KernelProcess]]:
    """Start kernels with the test config (plus ``extra`` TOML); each is stopped and checked
    for leaks (cgroups, processes, socket) at teardown."""
    made: list[tuple[KernelProcess, int, int]] = []

    def make(
        extra: str = "", *, sandbox: str = "", state_dir: str | os.PathLike[str] | None = None, cwd: str | None = None
    ) -> KernelProcess:
        """``sandbox``: extra lines for the ``[sandbox]`` table; ``extra``: more tables;
        ``state_dir``: reuse the state dir of an earlier (stopped) kernel; ``cwd``: the kernel's
        working directory."""
        uid_base = random.randrange(300_000, 4_000_000, 1000)
        config = TEST_CONFIG.format(uid_base=uid_base, sandbox=sandbox) + extra
        k = KernelProcess(config, state_dir=state_dir, cwd=cwd).start()
        made.append((k, uid_base, k.call("kernel.info")["zygote_pid"]))
        return k

    yield make
    problems = []
    for k, uid_base, zygote in made:
        pid = k.pid
        code = k.stop()
        if code != 0:
            problems.append(f"kernel exited {code}:\n{k.log()[-4000:]}")
        if os.path.exists(k.socket):
            problems.append(f"socket left behind: {k.socket}")
        if _alive(zygote):
            problems.append(f"zygote {zygote} outlived its kernel")
        left = cgroup_leftovers(pid)
        if left:
            problems.append(f"cgroups left behind: {left}")
        try:
            poll_for(lambda: not processes_with_uids(uid_base, uid_base + 1000), 5, message="agent processes to end")  # noqa: B023 - polled within this iteration
        except TimeoutError:
            problems.append(f"agent processes left behind: {processes_with_uids(uid_base, uid_base + 1000)}")
        k.cleanup()
    assert not problems, "\n".join(problems)


@pytest.fixture
def kernel(make_kernel: Callable[..., KernelProcess]) -> KernelProcess:
    return make_kernel()


def read_report(k: KernelProcess, name: str, timeout: float = 15.0) -> dict:
    """The JSON line an agent printed after ``REPORT ``."""

    def find() -> dict | None:
        data = k.call("agent.logs", name=name, offset=0, max_bytes=1 << 20)["data"].decode()
        for line in data.splitlines():
            if line.startswith("REPORT "):
                return json.loads(line[len("REPORT ") :])
        return None

    return poll_for(find, timeout, message=f"{name}'s report")


def agent_row(k: KernelProcess, name: str) -> dict:
    for row in k.call("agent.list")["agents"]:
        if row["name"] == name:
            return row
    raise KeyError(name)


requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for cgroups, namespaces and uid separation")
