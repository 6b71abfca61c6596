"""A board's link to the fleet: one daemon thread running its own asyncio loop with nats-py.

The kernel runs it inside a helper process (:mod:`clove.fleet.process`, which relays between
the kernel's pipes and these queues), so its Python never competes with the kernel's loop
for the GIL. Whoever owns it talks to it only through

* :meth:`FleetLink.offer_inventory`: a bounded queue of inventory snapshots (the newest wins);
* :meth:`FleetLink.send_reply`: an answer to a signed command, published on its reply subject
  (at most :data:`MAX_REPLIES` in flight; past that it is refused, and the caller says so);
* :meth:`FleetLink.events`: a queue of connection and shipping events, with a wake-up pipe
  (:meth:`FleetLink.fileno`) the loop watches, as :class:`~clove.kernel.core.workers.WorkerPool`
  does.

Shipping (docs/fleet.md, "The audit journal"): from the persisted position, read records after
it (at most :data:`MAX_BATCH` records and :data:`MAX_BATCH_BYTES` bytes at a time: that is all
the link holds), publish them in id order with publish acknowledgements (pipelined, each with
``Nats-Msg-Id`` = board + id so a resend is stored once), advance the position over the
acknowledged prefix and persist it. While disconnected nothing is read; on reconnect shipping
resumes from the position, so records written meanwhile are sent in order.

Commands (docs/fleet.md, "Commands"): the link subscribes to the board's command subject and
the fleet-wide one and hands every message on as a ``command`` event with its bytes and reply
subject; it decides nothing (the kernel verifies the signature). A message over
:data:`MAX_COMMAND_BYTES`, or one arriving while :data:`MAX_QUEUED_COMMANDS` are still waiting
for the kernel, is dropped, counted, and reported as an ``error`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, final

import orjson
from nats.aio.client import Client

from clove.fleet.connect import Endpoint
from clove.fleet.position import ShippedPosition
from clove.fleet.subjects import MSG_ID_HEADER, FleetNames
from clove.sandbox.linux import set_process_name

__all__ = ["MAX_BATCH", "MAX_BATCH_BYTES", "MAX_COMMAND_BYTES", "MAX_QUEUED_COMMANDS", "MAX_REPLIES", "FleetLink", "LinkEvent", "ReadAfter"]

log = logging.getLogger(__name__)

#: At most this many records, and about this many bytes, are read and in flight at once.
MAX_BATCH: Final = 512
MAX_BATCH_BYTES: Final = 1 << 20
ACK_TIMEOUT: Final = 5.0
IDLE_POLL: Final = 0.05  # how often an idle shipper looks for new records
RETRY_WAIT: Final = 0.5
#: Pings to the server every heartbeat (at most this often apart), and this many unanswered
#: close the connection, so that a silently dead link is noticed and reconnected.
PING_INTERVAL_MAX: Final = 5
PINGS_OUTSTANDING: Final = 3
SHIPPED_EVERY: Final = 0.5  # at most one "shipped" event this often
EVENT_BACKLOG: Final = 256  # events the loop has not collected; more are dropped (counted)
#: A signed command is a few hundred bytes; anything this long is not one.
MAX_COMMAND_BYTES: Final = 64 << 10
#: Commands handed on but not yet collected by the kernel; more are dropped (counted).
MAX_QUEUED_COMMANDS: Final = 64
#: Replies being published at once; more are refused by :meth:`FleetLink.send_reply`.
MAX_REPLIES: Final = 256

#: ``read_after(after_id, max_records, max_bytes)``: journal lines with ids above ``after_id``,
#: oldest first, as ``(id, line)`` (the canonical line without its newline).
ReadAfter = Callable[[int, int, int], list[tuple[int, bytes]]]


@final
@dataclass(frozen=True, slots=True)
class LinkEvent:
    """``kind``: ``connected``, ``disconnected``, ``unreachable``, ``shipped``, ``error``,
    ``command`` (``{data: the wire bytes as str, reply: subject or None}``)."""

    kind: str
    details: dict[str, Any]


@final
class FleetLink:
    """The link thread. :meth:`start` once; :meth:`close` at shutdown. Every public method
    but :meth:`close` is cheap and never blocks (loop-thread safe).

    :param heartbeat: the inventory is published at least this often (the heartbeat).
    :param lost_after: published with the entry, so readers know when to call it lost.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        names: FleetNames,
        board: str,
        *,
        read_after: ReadAfter,
        position: ShippedPosition,
        heartbeat: float,
        lost_after: float,
    ) -> None:
        self.endpoint = endpoint
        self.names = names
        self.board = board
        self._read_after = read_after
        self._position = position
        self.heartbeat = heartbeat
        self.lost_after = lost_after
        self._inventory: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=2)
        self._events: queue.SimpleQueue[LinkEvent] = queue.SimpleQueue()
        self._queued_events = 0  # approximate: written by the link thread, reset by the loop
        self.dropped_events = 0
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # The link thread's own state from here on.
        self._shipped = position.load()
        self._connected = False
        self._reported_unreachable = False
        self._last_error = ""
        self._queued_commands = 0  # approximate, as _queued_events
        self.dropped_commands = 0
        self._drop_reported = False
        self._replies_in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nc: Client | None = None

    # ---- the loop thread's side ----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"clove-fleet-{self.board}", daemon=True)
        self._thread.start()

    def fileno(self) -> int:
        return self._wake_r

    @property
    def shipped_at_start(self) -> int:
        return self._position.load()

    def offer_inventory(self, inventory: dict[str, Any]) -> None:
        """Hand over the newest inventory; an older one not yet published is replaced."""
        while True:
            try:
                self._inventory.put_nowait(inventory)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._inventory.get_nowait()

    def send_reply(self, subject: str, data: bytes) -> bool:
        """Publish ``data`` on ``subject`` (a command's reply inbox) from the link's loop; ``False``
        when it cannot be taken (not connected yet, or :data:`MAX_REPLIES` in flight)."""
        loop, nc = self._loop, self._nc
        if loop is None or nc is None or self._replies_in_flight >= MAX_REPLIES:
            return False
        self._replies_in_flight += 1
        try:
            loop.call_soon_threadsafe(lambda: loop.create_task(self._publish_reply(nc, subject, data)))
        except RuntimeError:  # the loop has closed
            self._replies_in_flight -= 1
            return False
        return True

    def report(self, message: str) -> None:
        """An ``error`` event from the link's owner (say, a reply it could not hand over)."""
        self._post("error", message=message)

    async def _publish_reply(self, nc: Client, subject: str, data: bytes) -> None:
        try:
            await nc.publish(subject, data)
        except Exception as err:  # the connection is gone: the operator sees no answer
            self._post("error", message=f"cannot answer a command on {subject}: {_describe(err)}")
        finally:
            self._replies_in_flight -= 1

    def events(self) -> list[LinkEvent]:
        """Every event since the last call (drains the wake-up pipe)."""
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 4096):
                pass
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                break
        self._queued_events = 0
        self._queued_commands = 0
        self._drop_reported = False
        return out

    def close(self, wait: float = 2.0) -> bool:
        """Stop the thread (it closes its connection); waits at most ``wait`` seconds."""
        self._stopping.set()
        if self._thread is None:
            return True
        self._thread.join(wait)
        stopped = not self._thread.is_alive()
        if stopped:
            os.close(self._wake_r)
            os.close(self._wake_w)
        return stopped

    # ---- the link thread ----------------------------------------------------------------------

    def _post(self, kind: str, **details: Any) -> None:
        if self._queued_events >= EVENT_BACKLOG and kind == "shipped":
            self.dropped_events += 1
            return
        self._queued_events += 1
        self._events.put(LinkEvent(kind, details))
        with contextlib.suppress(OSError):  # a full pipe: the loop wakes anyway
            os.write(self._wake_w, b"\0")

    def _run(self) -> None:
        with contextlib.suppress(OSError):  # its own name in /proc: top and the bench see its CPU
            set_process_name("clove-fleet")
        try:
            asyncio.run(self._main())
        except Exception as err:  # a bug here must not take the kernel down: report it
            log.exception("the fleet link stopped")
            self._post("error", message=f"the fleet link stopped: {err!r}")

    async def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(min(IDLE_POLL, max(0.0, deadline - time.monotonic())))

    async def _main(self) -> None:
        nc = Client()

        async def on_error(err: Exception) -> None:
            message = f"{type(err).__name__}: {err}".strip()
            if not self._connected and not self._reported_unreachable:
                self._reported_unreachable = True
                self._post("unreachable", servers=list(self.endpoint.servers), reason=message)
            elif message != self._last_error:
                self._last_error = message
                log.debug("fleet: %s", message)

        async def on_disconnected() -> None:
            if self._connected:
                self._connected = False
                self._post("disconnected", reason=self._last_error or "connection lost")

        async def on_reconnected() -> None:
            self._connected = True
            self._reported_unreachable = False
            self._post("connected", server=_url(nc), reconnected=True)

        try:
            options = self.endpoint.options()
        except OSError as err:
            self._post("error", message=f"cannot read the fleet credentials: {err}")
            return
        connecting = asyncio.create_task(
            nc.connect(
                **options,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                allow_reconnect=True,
                max_reconnect_attempts=-1,  # a board keeps trying, for ever
                reconnect_time_wait=1,
                connect_timeout=2,
                # A link cut without a reset (a cable, a NAT dropping state) shows only as pings
                # unanswered: nats-py's default (3 minutes) would leave shipping stalled on a dead
                # socket that long; this notices within about three heartbeats.
                ping_interval=max(1, int(min(self.heartbeat, PING_INTERVAL_MAX))),
                max_outstanding_pings=PINGS_OUTSTANDING,
            )
        )
        while not connecting.done() and not self._stopping.is_set():
            await asyncio.sleep(IDLE_POLL)
        if not connecting.done():
            connecting.cancel()
            with contextlib.suppress(BaseException):
                await connecting
            return
        connecting.result()
        self._loop, self._nc = asyncio.get_running_loop(), nc
        try:
            for subject in (self.names.command_subject(self.board), self.names.command_all):
                await nc.subscribe(subject, cb=self._on_command)
        except Exception as err:  # the board still ships; commands will not reach it
            self._post("error", message=f"cannot subscribe to fleet commands: {_describe(err)}")
        self._connected = True
        self._post("connected", server=_url(nc), reconnected=False, shipped=self._shipped)
        try:
            await asyncio.gather(self._ship(nc), self._beat(nc))
        finally:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(nc.close(), 1.0)

    async def _on_command(self, msg: Any) -> None:
        if len(msg.data) > MAX_COMMAND_BYTES or self._queued_commands >= MAX_QUEUED_COMMANDS:
            self.dropped_commands += 1
            why = f"over {MAX_COMMAND_BYTES} bytes" if len(msg.data) > MAX_COMMAND_BYTES else f"{MAX_QUEUED_COMMANDS} commands already waiting"
            if not self._drop_reported:  # once per drain of the queue, so a flood cannot grow it
                self._drop_reported = True
                self._post("error", message=f"a fleet command on {msg.subject} was dropped: {why}", dropped_commands=self.dropped_commands)
            return
        self._queued_commands += 1
        self._post("command", data=msg.data.decode("utf-8", "replace"), reply=msg.reply or None)

    async def _ship(self, nc: Client) -> None:
        js = nc.jetstream()
        subject = self.names.audit_subject(self.board)
        last_report, reported = 0.0, self._shipped
        while not self._stopping.is_set():
            if not nc.is_connected:
                await self._pause(IDLE_POLL)
                continue
            try:
                batch = self._read_after(self._shipped, MAX_BATCH, MAX_BATCH_BYTES)
            except OSError as err:
                self._post("error", message=f"cannot read the journal: {err}")
                await self._pause(RETRY_WAIT)
                continue
            if not batch:
                if reported < self._shipped:  # caught up: say where, even inside SHIPPED_EVERY
                    reported = self._shipped
                    self._post("shipped", seq=reported)
                await self._pause(IDLE_POLL)
                continue
            acked, failure = await self._publish(js, subject, batch)
            if acked > self._shipped:
                self._shipped = acked
                try:
                    self._position.save(acked)
                except OSError as err:
                    self._post("error", message=f"cannot persist the shipped position: {err}")
                now = time.monotonic()
                if now - last_report >= SHIPPED_EVERY:
                    last_report, reported = now, acked
                    self._post("shipped", seq=acked)
            if failure is not None:
                if "NoStreamResponseError" in failure:
                    failure += f" (no stream takes {subject}: has the hub's admin run 'clove fleet init'?)"
                if failure != self._last_error:
                    self._last_error = failure
                    self._post("error", message=f"shipping stopped at record {self._shipped + 1}: {failure}")
                await self._pause(RETRY_WAIT)

    async def _publish(self, js: Any, subject: str, batch: list[tuple[int, bytes]]) -> tuple[int, str | None]:
        """Publish ``batch`` pipelined; returns the last id of the acknowledged prefix and what
        stopped it (``None``: all acknowledged)."""
        futures: list[asyncio.Future[Any]] = []
        acked, failure = self._shipped, None
        try:
            for record_id, line in batch:
                headers = {MSG_ID_HEADER: self.names.msg_id(self.board, record_id)}
                futures.append(await js.publish_async(subject, line, headers=headers))  # no stall wait: nothing yields, so a batch goes out in few writes
            # One wait for the whole batch (a wait per record costs more CPU than the publish).
            await asyncio.wait(futures, timeout=ACK_TIMEOUT)
            for (record_id, _), future in zip(batch, futures, strict=False):
                if not future.done():
                    failure = f"no acknowledgement of record {record_id} within {ACK_TIMEOUT:.0f} s"
                    break
                if future.cancelled() or future.exception() is not None:
                    err = future.exception() if not future.cancelled() else None
                    failure = _describe(err) if err is not None else "cancelled"
                    break
                acked = record_id
        except Exception as err:  # no stream, the connection gone: retry from `acked`
            failure = _describe(err)
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()  # frees its slot in the client's pending-publish window
        return acked, failure

    async def _beat(self, nc: Client) -> None:
        js = nc.jetstream()
        subject = self.names.kv_subject(self.board)
        latest: dict[str, Any] | None = None
        next_beat = 0.0
        while not self._stopping.is_set():
            try:
                latest = self._inventory.get_nowait()
                next_beat = 0.0  # a fresh inventory goes out at once
            except queue.Empty:
                pass
            if latest is None or time.monotonic() < next_beat or not nc.is_connected:
                await self._pause(IDLE_POLL)
                continue
            entry = {
                **latest,
                "board": self.board,
                "heartbeat_at": time.time(),
                "heartbeat": self.heartbeat,
                "lost_after": self.lost_after,
                "shipped_seq": self._shipped,
            }
            try:
                await js.publish(subject, orjson.dumps(entry, default=str), timeout=ACK_TIMEOUT)
                next_beat = time.monotonic() + self.heartbeat
            except Exception as err:  # retried at the next turn; shipping reports the link state
                log.debug("fleet: inventory not published: %s", err)
                await self._pause(RETRY_WAIT)


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _url(nc: Client) -> str | None:
    url = nc.connected_url
    return f"{url.scheme}://{url.hostname}:{url.port}" if url is not None else None
