"""One incarnation of a driver host process, as the kernel sees it: start it inside its own
cgroup, know when it dies (a pidfd on the loop), kill it, clean up after it.

The host is confined by its cgroup (memory, CPU, pids), ``no_new_privs`` and a parent-death
signal. It keeps the kernel's user and network namespace, because devices need it: a tty's
permissions, a SocketCAN interface, a ``socket://`` port. :meth:`HostProcess.isolation` says so.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack

from clove.errors import DeviceUnavailable, SandboxError

if TYPE_CHECKING:
    from clove.config import DeviceSpec
    from clove.sandbox.cgroups import AgentCgroup, CgroupBackend

log = logging.getLogger(__name__)


class HostProcess:
    """A started host. ``pidfd`` becomes readable when it exits; then call :meth:`reap`."""

    def __init__(
        self, spec: DeviceSpec, incarnation: int, *, endpoint: str, heartbeat: float,
        discard: Callable[[AgentCgroup], None],
    ) -> None:  # fmt: skip
        """:param discard: kills and removes a cgroup, retrying later while it is busy (the
        supervisor's :meth:`~clove.kernel.supervision.supervisor.Supervisor.discard_cgroup`)."""
        self.discard = discard
        self.spec = spec
        self.incarnation = incarnation
        self.endpoint = endpoint
        self.heartbeat = heartbeat
        self.proc: subprocess.Popen[bytes] | None = None
        self.cgroup: AgentCgroup | None = None
        self.pidfd = -1
        self.limit_report: dict[str, Any] = {}
        #: The driver's durable directory (kept across host restarts and kernel restarts).
        self.state_dir: str | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, backend: CgroupBackend | None, log_path: str) -> None:
        """Create the cgroup, start the process, move it in, then hand it its spec.

        :raises DeviceUnavailable: the process or its cgroup could not be set up.
        """
        if backend is not None:
            try:
                self.cgroup = backend.create(f"dev-{self.spec.name}-{self.incarnation}", self.spec.limits)
            except SandboxError as err:
                raise DeviceUnavailable(f"device {self.spec.name}: cannot create the host's cgroup: {err.message}") from None
            self.limit_report = {k: v.to_dict() for k, v in self.cgroup.report().items()}
        gate_r, gate_w = os.pipe()
        try:
            with open(log_path, "ab") as log_file:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "clove.drivers.host", str(gate_r)],
                    pass_fds=[gate_r],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=log_file,
                    close_fds=True,
                    start_new_session=True,
                )
        except OSError as err:
            os.close(gate_w)
            self._discard_cgroup()
            raise DeviceUnavailable(f"device {self.spec.name}: cannot start its host: {err.strerror}") from None
        finally:
            os.close(gate_r)
        try:
            if self.cgroup is not None:
                self.cgroup.attach(self.proc.pid)
            self.pidfd = os.pidfd_open(self.proc.pid)
            os.write(gate_w, self._start_spec())
        except (OSError, SandboxError) as err:
            self.proc.kill()
            self.proc.wait()
            self._discard_cgroup()
            raise DeviceUnavailable(f"device {self.spec.name}: cannot confine its host: {err}") from None
        finally:
            os.close(gate_w)

    def _start_spec(self) -> bytes:
        return bytes(msgpack.packb(
            {
                "device": self.spec.name,
                "driver": self.spec.driver,
                "plugin": self.spec.plugin,
                "config": self.spec.raw,
                "endpoint": self.endpoint,
                "incarnation": self.incarnation,
                "heartbeat": self.heartbeat,
                "state_dir": self.state_dir,
            },
            use_bin_type=True,
        ))

    def isolation(self) -> dict[str, Any]:
        return {
            "cgroup": self.limit_report or "none (no cgroup backend)",
            "no_new_privs": True,
            "namespaces": "the kernel's (device access needs them)",
        }

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL the host and anything it started (its whole cgroup)."""
        self.signal(signal.SIGKILL)
        if self.cgroup is not None:
            try:
                self.cgroup.kill_all()
            except (OSError, SandboxError):
                pass

    def reap(self) -> int | None:
        """The exit status once the process is gone (``-N`` for signal N), else ``None``."""
        if self.proc is None:
            return None
        return self.proc.poll()

    def oom_killed(self) -> bool:
        return self.cgroup is not None and self.cgroup.oom_kills() > 0

    def cleanup(self) -> None:
        """After the exit: close the pidfd and remove the cgroup."""
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        self._discard_cgroup()

    def _discard_cgroup(self) -> None:
        if self.cgroup is not None:
            try:
                self.discard(self.cgroup)
            except (OSError, SandboxError) as err:
                log.warning("device %s: cgroup cleanup failed: %s", self.spec.name, err)
            self.cgroup = None
