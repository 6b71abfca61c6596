"""The warden: a small process that empties and removes the kernel's cgroups once the kernel is gone.

Every agent's G already takes its tree down when the kernel's life line breaks
(:mod:`clove.sandbox.lifeline`). The warden is the second line, for what G cannot reach:
an agent paused by the cgroup freezer (G is frozen with it), a G that was killed, anything that
got out of G's reach but not out of its cgroup (a command run by ``exec`` inside an agent without
namespaces), and the driver hosts. It holds a read end of the life line and nothing else; it
knows no agent, only the kernel's parent cgroup in each hierarchy (``<own>/clove-<pid>``), so it
never needs updating. On EOF it kills every process under those parents, thaws frozen ones so the
SIGKILLs land, removes the directories children first (:func:`~.reaper.reap_dirs`), and exits.
At an orderly shutdown the kernel closes the life line last and the warden finds nothing left.

It runs in its own session (no terminal signal reaches it) with no parent-death signal (it must
outlive the kernel). If it dies while the kernel lives, the kernel starts another.

Run as ``python -m clove.sandbox.warden <lifeline fd> <parent dir>...``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

#: How long the warden keeps killing and removing before it gives up on a busy cgroup.
REAP_TIMEOUT = 10.0


class Warden:
    """The kernel's handle on its warden process.

    :param lifeline: the read end of the kernel's life line.
    :param parents: the kernel's parent cgroup directories, one per hierarchy.
    """

    def __init__(self, lifeline: int, parents: Sequence[Path], *, python: str = sys.executable) -> None:
        self.lifeline = lifeline
        self.parents = tuple(parents)
        self.python = python
        self.pidfd = -1
        self.started_at = 0.0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the warden (non-blocking). ``pidfd`` turns readable when it exits.

        :raises OSError: it could not be started.
        """
        self._proc = subprocess.Popen(
            [self.python, "-m", "clove.sandbox.warden", str(self.lifeline), *map(str, self.parents)],
            pass_fds=[self.lifeline],
            stdin=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,
        )
        self.pidfd = os.pidfd_open(self._proc.pid)
        self.started_at = time.monotonic()

    def reap(self) -> int | None:
        """After ``pidfd`` fired: reap it and close the pidfd; returns its exit status."""
        code = self._proc.poll() if self._proc is not None else None
        if code is not None:
            self._proc = None
            self._close_pidfd()
        return code

    def wait(self, timeout: float) -> None:
        """At shutdown, once the life line is closed: let it finish its sweep, kill it if it lingers."""
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("the warden did not finish within %.1f s; killing it", timeout)
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        self._close_pidfd()

    def _close_pidfd(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    lifeline = int(args[0])
    parents = [Path(p) for p in args[1:]]
    while True:  # the kernel never writes: this returns b"" once its write end is gone
        try:
            if not os.read(lifeline, 64):
                break
        except InterruptedError:
            continue
    from clove.sandbox.cgroupfs import RealCgroupFS
    from clove.sandbox.reaper import reap_dirs

    logging.basicConfig(level=logging.WARNING, format="clove warden %(process)d: %(message)s")
    reap_dirs(RealCgroupFS(), parents, timeout=REAP_TIMEOUT)


if __name__ == "__main__":
    main()
