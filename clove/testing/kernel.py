"""Run a real kernel in a subprocess for tests, demos and benchmarks.

Each :class:`KernelProcess` gets its own short temporary directory (Unix socket paths are
limited to 107 bytes) holding the control socket, the state dir and the kernel's log, so tests
never touch ``/tmp/clove.sock`` and can run beside a production kernel.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from clove_sdk import CloveClient
from clove_sdk.client import kernel_listening

T = TypeVar("T")


def poll_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, message: str = "condition") -> T:
    """Call ``condition`` until it returns something truthy; return that.

    :raises TimeoutError: naming ``message`` when ``timeout`` passes first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


class KernelProcess:
    """A ``clove kernel`` child process with private paths.

    :param config: TOML text for the kernel's config (socket and state dir come from the
        command line); ``config_file`` uses an existing file instead.
    :param state_dir: reuse a state dir (a kernel restart); by default a fresh one.
    """

    def __init__(
        self,
        config: str = "",
        *,
        config_file: str | None = None,
        env: dict[str, str] | None = None,
        base_dir: str | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        cwd: str | None = None,
        cgroup: str | os.PathLike[str] | None = None,
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="clv", dir=base_dir or "/tmp"))
        os.chmod(self.dir, 0o755)
        self.socket = str(self.dir / "k.sock")
        self.state_dir = Path(state_dir) if state_dir is not None else self.dir / "state"
        self.config_path = Path(config_file) if config_file else self.dir / "kernel.toml"
        if not config_file:
            self.config_path.write_text(config)
        self.log_path = self.dir / "kernel.log"
        self.env = {**os.environ, **(env or {})}
        self.env.pop("CLOVE_SOCKET", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.cwd = cwd  # the kernel's working directory (default: the caller's)
        # Start the kernel in this cgroup (v2), as a service manager would; default: the caller's.
        self.cgroup = Path(cgroup) if cgroup is not None else None

    def start(self, timeout: float = 20.0) -> KernelProcess:
        with open(self.log_path, "ab") as log:
            command = [sys.executable, "-m", "clove", "kernel", "--config", str(self.config_path), "--socket", self.socket, "--state-dir", str(self.state_dir)]
            if self.cgroup is not None:
                # Join the cgroup first, then become the kernel: the kernel's pid is the one placed.
                command = ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.cgroup), *command]
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
            )

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"kernel exited with {self.proc.returncode}:\n{self.log()}")
            # Listening, not only there: a stale socket file is there before the kernel replaces
            # it, and a client fails at once on one.
            return kernel_listening(self.socket)

        poll_for(up, timeout, message="the kernel's socket")
        with self.client(timeout=timeout) as c:
            c.hello()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None  # noqa: S101
        return self.proc.pid

    def client(self, timeout: float = 10.0) -> CloveClient:
        return CloveClient(self.socket, timeout=timeout)

    def call(self, syscall: str, **body: Any) -> Any:
        with self.client() as c:
            return c.call(syscall, **body)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait (SIGKILL after ``timeout``); returns the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> KernelProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
