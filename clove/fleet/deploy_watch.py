"""The board's deploy watcher: a helper process that follows the board's desired state on the
hub and publishes the board's reports (docs/fleet.md, "Deploy").

``python -m clove.fleet.deploy_watch SETTINGS`` (started by
:mod:`clove.kernel.services.fleet_deploy` through :class:`clove.fleet.process.LinkProcess`,
so it speaks the same line protocol as the fleet link and dies with the kernel):

* it hears the board's desired key (a plain subscription to ``$KV.<bucket>.desired.<board>``)
  and, on every message and on every (re)connect, reads the key's newest revision with a
  direct get: a board that was offline, or restarted, reconciles to the latest state. A
  revision it already handed over is not handed over twice;
* each new revision goes up as ``{"kind": "desired", "details": {revision, size, data,
  deleted}}`` (``data`` left out past :data:`~clove.fleet.deploy.MAX_DESIRED_BYTES`: the kernel
  refuses it by its size);
* the kernel's reports come down as ``{"reply": "status", "data": {...}}``; the newest is
  published (acknowledged) under ``status.<board>``, retried until it is, and a newer one
  replaces one not yet published: the key holds one report anyway;
* ``connected``, ``disconnected`` and ``error`` events, as the link's.

The hub gives each board exactly these rights: subscribe to its desired subject, direct-get it,
publish its status (configs/fleet-hub.conf). A process of its own, not a thread of the kernel:
the kernel's loop never waits on the network or runs nats-py's Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from typing import Any, Final

import orjson
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from clove.fleet.connect import Endpoint
from clove.fleet.deploy import MAX_DESIRED_BYTES, DeployNames
from clove.sandbox.linux import set_process_name

__all__ = ["DeployWatcher", "main"]

RETRY_WAIT: Final = 1.0
#: A read of the desired key that keeps failing is retried at most this far apart.
MAX_RETRY_WAIT: Final = 30.0
ACK_TIMEOUT: Final = 5.0
#: A line from the kernel longer than this is dropped (a report is a few KiB).
MAX_LINE: Final = 1 << 20


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


class DeployWatcher:
    """One board's watcher (the helper process's whole job); :meth:`run` until stdin closes."""

    def __init__(self, endpoint: Endpoint, names: DeployNames, board: str, *, stdin: int = 0, stdout: int = 1) -> None:
        self.endpoint = endpoint
        self.names = names
        self.board = board
        self.stdin, self.stdout = stdin, stdout
        self.desired_subject = names.subject(names.desired_key(board))
        self.status_subject = names.subject(names.status_key(board))
        self._fetch = asyncio.Event()
        self._publish = asyncio.Event()
        self._done = asyncio.Event()
        self._status: bytes | None = None  # the newest report not yet acknowledged
        self._handed = 0  # the newest revision handed to the kernel
        self._buf = b""
        self._last_error = ""
        self._nc = Client()

    def _emit(self, kind: str, **details: Any) -> None:
        data = memoryview(orjson.dumps({"kind": kind, "details": details}) + b"\n")
        try:
            while data:
                data = data[os.write(self.stdout, data) :]
        except OSError:  # the kernel is gone
            self._done.set()

    def _error(self, message: str) -> None:
        if message != self._last_error:  # one event per distinct failure, not one per retry
            self._last_error = message
            self._emit("error", message=message)

    async def run(self) -> int:
        os.set_blocking(self.stdin, False)
        loop = asyncio.get_running_loop()
        loop.add_reader(self.stdin, self._on_stdin)
        parent = os.getppid()
        tasks = [asyncio.create_task(self._connect()), asyncio.create_task(self._fetcher()), asyncio.create_task(self._publisher())]
        try:
            while not self._done.is_set() and os.getppid() == parent:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._done.wait(), 1.0)
        finally:
            loop.remove_reader(self.stdin)
            for task in tasks:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._nc.close(), 1.0)
        return 0

    # ---- the kernel's side of the pipe ----------------------------------------------------------

    def _on_stdin(self) -> None:
        try:
            data = os.read(self.stdin, 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._done.set()  # the kernel closed the channel (or died)
            return
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        if len(self._buf) > MAX_LINE:
            self._buf = b""
        for line in lines:
            try:
                message = orjson.loads(line) if line else None
            except orjson.JSONDecodeError:
                continue
            if isinstance(message, dict) and message.get("reply") == "status" and isinstance(message.get("data"), dict):
                self._status = orjson.dumps(message["data"])
                self._publish.set()

    # ---- the hub's side ---------------------------------------------------------------------------

    async def _connect(self) -> None:
        nc = self._nc

        async def on_error(err: Exception) -> None:
            self._error(f"deploy watcher: {_describe(err)}")

        async def on_disconnected() -> None:
            self._emit("disconnected")

        async def on_reconnected() -> None:
            self._emit("connected", reconnected=True)
            self._fetch.set()  # whatever was written meanwhile
            self._publish.set()

        try:
            options = self.endpoint.options()
        except OSError as err:
            self._error(f"deploy watcher: cannot read the fleet credentials: {err}")
            return
        while True:
            try:
                await nc.connect(
                    **options, error_cb=on_error, disconnected_cb=on_disconnected, reconnected_cb=on_reconnected,
                    allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=1, connect_timeout=2,
                )  # fmt: skip
                break
            except Exception as err:
                self._error(f"deploy watcher: cannot connect: {_describe(err)}")
                await asyncio.sleep(RETRY_WAIT)
        try:
            await nc.subscribe(self.desired_subject, cb=self._on_desired)
        except Exception as err:  # the key is still read at every reconnect
            self._error(f"deploy watcher: cannot subscribe to {self.desired_subject}: {_describe(err)}")
        self._emit("connected", reconnected=False)
        self._fetch.set()
        self._publish.set()

    async def _on_desired(self, _msg: Any) -> None:
        self._fetch.set()  # the message is a nudge: the direct get says which revision it is

    async def _fetcher(self) -> None:
        js = self._nc.jetstream(timeout=ACK_TIMEOUT)
        delay = RETRY_WAIT
        while True:
            await self._fetch.wait()
            self._fetch.clear()
            if not self._nc.is_connected:
                continue  # reconnecting sets it again
            try:
                msg = await js.get_last_msg(self.names.stream, self.desired_subject, direct=True)
            except NotFoundError:
                delay = RETRY_WAIT
                continue  # nothing deployed to this board yet: a write nudges it
            except Exception as err:  # no bucket yet (no 'clove fleet init'), no right, a timeout
                self._error(f"deploy watcher: cannot read {self.desired_subject}: {_describe(err)}")
                with contextlib.suppress(asyncio.TimeoutError):  # a nudge, or the retry time, whichever is first
                    await asyncio.wait_for(self._fetch.wait(), delay)
                delay = min(delay * 2, MAX_RETRY_WAIT)
                self._fetch.set()
                continue
            delay = RETRY_WAIT
            revision = int(msg.seq or 0)
            if revision <= self._handed:
                continue
            self._handed = revision
            data: bytes = msg.data or b""
            details: dict[str, Any] = {"revision": revision, "size": len(data), "deleted": not data}
            if data and len(data) <= MAX_DESIRED_BYTES:
                details["data"] = data.decode("utf-8", "replace")
            self._emit("desired", **details)

    async def _publisher(self) -> None:
        js = self._nc.jetstream(timeout=ACK_TIMEOUT)
        delay = RETRY_WAIT
        while True:
            await self._publish.wait()
            self._publish.clear()
            status = self._status
            if status is None or not self._nc.is_connected:
                continue
            try:
                await js.publish(self.status_subject, status, timeout=ACK_TIMEOUT)
            except Exception as err:
                self._error(f"deploy watcher: cannot publish the report: {_describe(err)}")
                with contextlib.suppress(asyncio.TimeoutError):  # a newer report, or the retry time
                    await asyncio.wait_for(self._publish.wait(), delay)
                delay = min(delay * 2, MAX_RETRY_WAIT)
                self._publish.set()
                continue
            delay = RETRY_WAIT
            if self._status is status:
                self._status = None  # acknowledged; a newer one set the event again


async def _watch(settings: dict[str, Any]) -> int:
    endpoint = dict(settings["endpoint"], servers=tuple(settings["endpoint"]["servers"]))
    return await DeployWatcher(Endpoint(**endpoint), DeployNames(settings["prefix"]), settings["board"]).run()


def main(argv: list[str] | None = None) -> int:
    """The helper process: ``SETTINGS`` is ``{endpoint, prefix, board}`` as JSON."""
    settings = json.loads((argv if argv is not None else sys.argv)[1])
    with contextlib.suppress(OSError):  # its own name in top
        set_process_name(f"clove-deploy-{settings['board']}")
    return asyncio.run(_watch(settings))


if __name__ == "__main__":
    sys.exit(main())
