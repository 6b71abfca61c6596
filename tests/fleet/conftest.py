"""The fleet tests' hub: a real ``nats-server -js`` on a free port with a private store, run
with the example hub config (configs/fleet-hub.conf: its users and permissions are what the
boards and the operator connect as), and helpers that read the hub as an operator would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clove.testing import syspackages
from clove.testing.kernel import poll_for

ROOT = Path(__file__).resolve().parents[2]
HUB_CONFIG = ROOT / "configs" / "fleet-hub.conf"
PASSWORDS = {"admin": "change-me-admin", "operator": "change-me-operator", "board-a": "change-me-board-a", "board-b": "change-me-board-b", "board-c": "change-me-board-c"}


def _nats_server() -> tuple[str | None, str]:
    """The binary (installed with apt where missing and we are root, as `make fleet-setup`), or
    ``None`` and why not."""
    reason = syspackages.ensure({"nats-server": "nats-server"})
    return (None, reason) if reason is not None else (syspackages.which("nats-server"), "")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class Hub:
    """One nats-server; :meth:`kill` and :meth:`start` again keep its port and store.

    :param host: the address it listens on (boards in network namespaces reach it on their
        bridge's address, :mod:`clove.testing.netfleet`).
    """

    def __init__(self, binary: str, workdir: Path, host: str = "127.0.0.1") -> None:
        self.binary = binary
        self.dir = workdir
        self.host = host
        self.port = free_port(host)
        self.url = f"nats://{host}:{self.port}"
        text = HUB_CONFIG.read_text()
        text = text.replace("listen: 127.0.0.1:4222", f"listen: {host}:{self.port}")
        text = text.replace("store_dir: /var/lib/clove-hub", f"store_dir: {workdir / 'store'}")
        assert str(self.port) in text and str(workdir) in text, "configs/fleet-hub.conf changed its listen or store_dir line"
        self.config = workdir / "hub.conf"
        self.config.write_text(text)
        self.proc: subprocess.Popen[bytes] | None = None
        for user, password in PASSWORDS.items():
            (workdir / f"{user}.pass").write_text(password + "\n")

    def password_file(self, user: str) -> str:
        return str(self.dir / f"{user}.pass")

    def start(self) -> Hub:
        log = open(self.dir / "hub.log", "ab")  # noqa: SIM115 - the server writes it
        self.proc = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        poll_for(lambda: _listening(self.port, self.host) or self._died(), 15, message="nats-server to listen")
        return self

    def _died(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"nats-server exited {self.proc.returncode}: {(self.dir / 'hub.log').read_text()[-2000:]}")
        return False

    def kill(self) -> None:
        """SIGKILL, as a crash: the server gets no chance to tidy up."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def fleet_cli(self, *args: str, user: str = "operator") -> subprocess.CompletedProcess[str]:
        """``clove fleet ARGS`` as ``user`` against this hub."""
        command = [sys.executable, "-m", "clove", "fleet", *args, "--server", self.url, "--user", user, "--password-file", self.password_file(user)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    def board_config(self, board: str, *, heartbeat: float = 0.5, lost_after: float = 2.0) -> str:
        return f"""
[fleet]
servers = ["{self.url}"]
board = "{board}"
user = "{board}"
password_file = "{self.password_file(board)}"
heartbeat = {heartbeat}
lost_after = {lost_after}
"""

    # ---- reading the hub in-process (fast enough to poll) --------------------------------------

    def _read(self, body: Any) -> Any:
        import nats

        from clove.fleet.subjects import FleetNames

        async def main() -> Any:
            nc = await nats.connect(self.url, user="operator", password=PASSWORDS["operator"], allow_reconnect=False, error_cb=_quiet)
            try:
                return await body(nc.jetstream(timeout=5), FleetNames("clove"))
            finally:
                await nc.close()

        return asyncio.run(main())

    def boards(self) -> dict[str, dict[str, Any]]:
        from clove.fleet.reader import board_rows

        async def body(js: Any, names: Any) -> Any:
            return {row["board"]: row for row in await board_rows(js, names)}

        return dict(self._read(body))

    def records(self, board: str) -> list[dict[str, Any]]:
        from clove.fleet.reader import board_records

        async def body(js: Any, names: Any) -> Any:
            return [record async for _seq, record in board_records(js, names, board)]

        return list(self._read(body))


async def _quiet(err: Exception) -> None:
    pass


@pytest.fixture
def hub() -> Iterator[Hub]:
    with running_hub() as h:
        yield h


@contextlib.contextmanager
def running_hub(host: str = "127.0.0.1") -> Iterator[Hub]:
    """A started hub listening on ``host``, its stream and bucket made (``clove fleet init``);
    skips the test where there is no nats-server."""
    binary, why = _nats_server()
    if binary is None:
        pytest.skip(f"no nats-server: {why}")
    workdir = Path(tempfile.mkdtemp(prefix="clvhub", dir="/tmp"))
    h = Hub(binary, workdir, host)
    try:
        h.start()
        init = h.fleet_cli("init", "--json", user="admin")
        assert init.returncode == 0, init.stderr
        assert json.loads(init.stdout)["stream"] == "CLOVE_AUDIT"
        yield h
    finally:
        h.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def journal_ids(state_dir: Path) -> list[int]:
    """The ids in a kernel's active journal file, read from disk as the shipper does."""
    path = state_dir / "journal.jsonl"
    try:
        lines = path.read_bytes().split(b"\n")[:-1]
    except FileNotFoundError:
        return []
    return [json.loads(line)["id"] for line in lines]


def journal_events(state_dir: Path) -> list[str]:
    path = state_dir / "journal.jsonl"
    return [json.loads(line)["event_type"] for line in path.read_bytes().split(b"\n")[:-1]]
