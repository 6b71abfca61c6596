"""The container image (docs/container.md): built locally with debootstrap + podman, run
privileged with the control socket's directory mounted, operated from the host through the SDK.

The image is built by ``container/build.py`` and reused while its inputs (the sources it bakes in)
are unchanged, so only the first run, or one after a change, pays for the build. Skipped, with the
reason, where podman cannot build or run here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clove.testing.kernel import poll_for
from clove_sdk import CloveClient, KernelUnavailable

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "container" / "build.py"
LEAK = "/opt/clove/examples/agents/leak.py"  # baked into the image

# A cold build (debootstrap, wheels, podman build on vfs) takes minutes; a cached one seconds.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


def podman_env() -> dict[str, str]:
    """The private podman configuration build.py uses (never the host's)."""
    out = subprocess.run([sys.executable, str(BUILD), "--print-env"], capture_output=True, text=True, check=True).stdout
    env = dict(os.environ)
    for line in out.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    return env


@pytest.fixture(scope="module")
def image() -> tuple[str, dict[str, str]]:
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("needs root: the container runs --privileged to manage its agents' cgroups")
    build = subprocess.run([sys.executable, str(BUILD)], capture_output=True, text=True, timeout=1100)
    if build.returncode == 2:
        pytest.skip(f"podman/debootstrap unavailable: {build.stderr.strip()[-500:]}")
    env = podman_env()
    if build.returncode != 0:
        # Podman itself unusable here (storage driver, privileges) is a skip; a failed build is not.
        info = subprocess.run(["podman", "info"], env=env, capture_output=True, text=True, timeout=120)
        if info.returncode != 0:
            pytest.skip(f"podman cannot run here: {info.stderr.strip()[-500:]}")
    assert build.returncode == 0, build.stderr[-3000:]
    return build.stdout.strip().splitlines()[-1], env


@pytest.fixture
def container(image: tuple[str, dict[str, str]], tmp_path: Path) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """A running kernel container; yields (id, host path of its control socket, podman env).
    Removed by id."""
    ref, env = image
    sockdir = tmp_path / "run"
    sockdir.mkdir()
    # podman writes the id here before it starts the container, so one that fails to start is
    # removed as well.
    cidfile = tmp_path / "cid"
    started = time.monotonic()
    run = subprocess.run(
        ["podman", "run", "-d", "--cidfile", str(cidfile), "--privileged", "--network=none",
         "-v", f"{sockdir}:/run/clove", ref],
        env=env, capture_output=True, text=True, timeout=120,
    )
    cid = cidfile.read_text().strip() if cidfile.exists() else ""
    sock = sockdir / "clove.sock"
    try:
        assert run.returncode == 0, run.stderr
        poll_for(lambda: _answers(sock), timeout=60, interval=0.05, message="the container's control socket")
        print(f"container start to socket answering: {time.monotonic() - started:.2f} s")
        yield cid, sock, env
    finally:
        if cid:
            logs = subprocess.run(["podman", "logs", cid], env=env, capture_output=True, text=True, timeout=60)
            print(logs.stdout[-2000:], logs.stderr[-2000:])
            # -v: the anonymous volume of its state dir goes with it.
            subprocess.run(["podman", "rm", "-f", "-v", "-t", "5", cid], env=env, capture_output=True, timeout=120, check=True)


def _answers(sock: Path) -> bool:
    if not sock.exists():
        return False
    try:
        with CloveClient(str(sock), timeout=2) as c:
            return c.noop("up") == "up"
    except KernelUnavailable:
        return False


def container_memory_cgroup(cid: str, env: dict[str, str]) -> Path:
    """The host path of the container's own memory cgroup (v1 where mounted, else v2)."""
    pid = subprocess.run(
        ["podman", "inspect", "--format", "{{.State.Pid}}", cid], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    entries = [line.split(":", 2) for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()]
    for _, controllers, path in entries:
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/")
    unified = next(path for hid, _, path in entries if hid == "0")
    return Path("/sys/fs/cgroup") / unified.lstrip("/")


def test_agent_in_the_container_is_oom_killed_at_its_memory_limit(container: tuple[str, Path, dict[str, str]]) -> None:
    cid, sock, env = container
    with CloveClient(str(sock)) as c:
        spawned = c.spawn("leak", LEAK, limits={"memory": "64M"})
        assert spawned["success"], spawned
        memory = spawned["isolation"]["limits"]["memory"]
        assert memory["enforced"] is True, spawned["isolation"]
        # The kernel made its agents' cgroups under the container's own cgroup, not at a root.
        own = container_memory_cgroup(cid, env)
        assert [d.name for d in own.glob("clove-*") if d.is_dir()], f"no clove-* cgroup under {own}"

        def exited() -> dict[str, Any] | None:
            row = next(a for a in c.list_agents() if a["name"] == "leak")
            return row if row["state"] == "exited" else None

        row = poll_for(exited, timeout=60, message="the leak to be OOM killed")
        assert row is not None
        assert row["exit_reason"] == "oom_killed", row
        assert row["exit_signal"] == 9, row
        log = c.logs(name="leak")["data"].decode()
        held = [int(line.split()[1]) for line in log.splitlines() if line.startswith("holding")]
        assert held and max(held) <= 64, log[-500:]
        assert c.noop("alive") == "alive"
        # The host client's pid is not in the container's pid namespace: its session must still
        # last (the reaper, checking at most once a second, must not take it for a dead client).
        session = c.hello()["session_id"]
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            assert c.hello()["session_id"] == session, "the host operator's session was reaped"
            time.sleep(0.25)  # a check that something does not happen within the window
