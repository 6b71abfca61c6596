"""Boot the test guest, run one command in it, and return its exit code and output.

One :func:`run` is one boot: qemu with software emulation (the ``/dev/kvm`` of the machines this
runs on cannot boot a stock kernel; see docs/testing.md), the host's ``/`` shared read-only, and a
results folder shared writable. The command is a shell script run from the checkout inside the
guest's own cgroup. Whatever happens on the host side (a timeout, an exception, pytest's timeout
interrupting the wait), the qemu process is killed and reaped before :func:`run` returns.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hil.vm.cache import QEMU, VmCache
from hil.vm.stage2 import RESULTS

GUEST_RESULTS = RESULTS


@dataclass(frozen=True)
class GuestResult:
    """What one boot produced. ``exit_code`` is ``None`` when the command never finished."""

    exit_code: int | None
    output: str
    console: str
    boot_seconds: float | None  # qemu start to the command starting
    seconds: float
    timed_out: bool
    results: Path


def qemu_command(cache: VmCache, results: Path, *, cpus: int, memory_mb: int) -> list[str]:
    append = "console=ttyS0 quiet loglevel=3 cgroup_no_v1=all panic=-1 rdinit=/init"
    return [
        QEMU,
        "-accel", "tcg,thread=multi", "-cpu", "qemu64", "-M", "pc",
        "-smp", str(cpus), "-m", f"{memory_mb}M",
        "-display", "none", "-no-reboot", "-nodefaults", "-serial", "stdio",
        "-kernel", str(cache.vmlinuz), "-initrd", str(cache.initramfs), "-append", append,
        "-fsdev", "local,id=hostroot,path=/,security_model=passthrough,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        "-fsdev", f"local,id=results,path={results},security_model=passthrough,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=results,mount_tag=results",
    ]  # fmt: skip


def command_script(command: str, *, cwd: Path, env: Mapping[str, str]) -> str:
    """The script the guest runs: a private ``/tmp`` unless the checkout lives there, then the
    command from ``cwd`` with ``env`` exported."""
    lines = ["set -u"]
    if not str(cwd).startswith("/tmp/"):
        lines.append("mount -t tmpfs -o mode=1777 tmpfs /tmp")
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    lines += [f"cd {shlex.quote(str(cwd))}", command]
    return "\n".join(lines) + "\n"


def run(
    command: str,
    *,
    cache: VmCache,
    results: Path,
    cwd: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cpus: int = 2,
    memory_mb: int = 2048,
) -> GuestResult:
    """Boot, run ``command`` (shell) in ``cwd`` inside the guest, and collect the result.

    :param results: an empty host folder shared writable at ``GUEST_RESULTS`` in the guest.
    :param timeout: seconds for the whole boot; on expiry qemu is killed and ``timed_out`` set.
    """
    results.mkdir(parents=True, exist_ok=True)
    for stale in ("exit_code", "output", "started"):
        (results / stale).unlink(missing_ok=True)
    guest_env = {"CLOVE_GUEST": "1", "CLOVE_GUEST_RESULTS": GUEST_RESULTS, **(env or {})}
    (results / "command.sh").write_text(command_script(command, cwd=cwd, env=guest_env))
    console_path = results / "console.log"
    start = time.monotonic()
    wall_start = time.time()
    timed_out = False
    with open(console_path, "wb") as console:
        proc = subprocess.Popen(
            qemu_command(cache, results, cpus=cpus, memory_mb=memory_mb),
            stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill(proc)
    seconds = time.monotonic() - start
    started = results / "started"
    boot = started.stat().st_mtime - wall_start if started.exists() else None
    code_file = results / "exit_code"
    code = int(code_file.read_text().strip()) if code_file.exists() and code_file.read_text().strip() else None
    output = (results / "output").read_text(errors="replace") if (results / "output").exists() else ""
    return GuestResult(
        exit_code=code,
        output=output,
        console=console_path.read_text(errors="replace"),
        boot_seconds=boot,
        seconds=seconds,
        timed_out=timed_out,
        results=results,
    )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL qemu (its own session, started by us, so by pid) and reap it."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
