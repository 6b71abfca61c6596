"""The fleet service: a board's link to its fleet (docs/fleet.md), attached only with ``[fleet]``.

The link (:class:`clove.fleet.link.FleetLink`, nats-py on its own asyncio loop) runs in a
helper process, ``python -m clove.kernel.services.fleet`` (:func:`main`), that the kernel
starts, feeds and restarts through :class:`clove.fleet.process.LinkProcess` (why a process:
see there). This module is the kernel's side, on the loop thread, and the child's entry:

* every ``heartbeat`` seconds it builds the board's inventory (agents, devices, interlocks,
  trading state, isolation summary, the last journal id) and hands it to the link;
* it turns the link's events into journal records (``fleet.connected``, ``fleet.disconnected``,
  ``fleet.unreachable``, ``fleet.error``, category NETWORK) and ``FLEET_CONNECTION`` bus events:
  losing the hub, or the link process, is an event, never a failure of the board;
* signed commands from the hub go to :class:`~clove.kernel.services.fleet_commands.FleetCommands`
  (decided, journaled, performed through the dispatcher, answered through the link);
* in the child, a :class:`JournalCursor` reads records from the journal's files (never through
  the kernel's loop) for the shipper.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, final

import orjson

from clove import __version__
from clove.config.fleet import FleetSection
from clove.fleet.connect import Endpoint
from clove.fleet.link import FleetLink, LinkEvent
from clove.fleet.position import ShippedPosition
from clove.fleet.process import LinkProcess, serve
from clove.fleet.subjects import FleetNames
from clove.kernel.audit.files import rotated_files
from clove.kernel.audit.journal import Category
from clove.kernel.services.fleet_commands import FleetCommands
from clove.kernel.services.fleet_deploy import deploy_for
from clove.sandbox.linux import set_process_name

if TYPE_CHECKING:
    from clove.kernel.services.devices.broker import DeviceBroker
    from clove.kernel.services.host import ServiceHost, ServiceRegistry
    from clove.kernel.services.interlocks import Interlocks
    from clove.kernel.services.recording.rerun import Perform

__all__ = ["FLEET_EVENT", "FleetService", "JournalCursor", "attach"]

log = logging.getLogger(__name__)

#: The bus event of a change of the link's state: data ``{state, server?, reason?}``.
FLEET_EVENT: Final = "FLEET_CONNECTION"
#: An inventory lists at most this many agents (the rest are counted), so an entry stays small.
MAX_INVENTORY_AGENTS: Final = 500


@final
class JournalCursor:
    """Reads journal records after an id from the journal's files (the link process's shipper).

    It keeps its place (an open file and an offset), so following the active file costs one
    read of the new bytes; a rotation is noticed when its file is no longer the active one,
    and a request for another place finds it again from the rotated files' names.
    """

    def __init__(self, active: Path) -> None:
        self.active = Path(active)
        self._file: IO[bytes] | None = None
        self._offset = 0
        self._after: int | None = None  # the id the cursor stands just after

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._after = None

    def read_after(self, after_id: int, max_records: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """Up to ``max_records`` records (and about ``max_bytes``) with ids above ``after_id``,
        oldest first, as ``(id, line)``. A partial last line is left for the next call."""
        if self._after != after_id or self._file is None:
            self._locate(after_id)
        out: list[tuple[int, bytes]] = []
        size = 0
        moved = False
        while self._file is not None and len(out) < max_records and size < max_bytes:
            self._file.seek(self._offset)
            raw = self._file.readline()
            if not raw.endswith(b"\n"):
                if moved or not self._rotated_away():
                    break
                moved = True  # our file was rotated: the next record is in a newer file
                self._locate(self._after if self._after is not None else after_id)
                continue
            self._offset += len(raw)
            record_id = _record_id(raw)
            if record_id is None or (self._after is not None and record_id <= self._after):
                continue  # not a record (verify says why), or already passed
            self._after = record_id
            moved = False  # progress: the next file may be moved to again
            line = raw[:-1]
            out.append((record_id, line))
            size += len(line)
        return out

    def _rotated_away(self) -> bool:
        if self._file is None:
            return False
        try:
            return os.stat(self.active).st_ino != os.fstat(self._file.fileno()).st_ino
        except OSError:
            return True

    def _locate(self, after_id: int) -> None:
        """Stand just after ``after_id``: in the oldest file holding a later record, or at the
        end of the active file's complete lines if there is none yet.

        The active file is opened before the rotated ones are listed: a rotation renames the
        active file before it creates the next, so every file rotated before that open is
        listed, and the one held open is read through its descriptor even if it is rotated
        after it (no file is skipped in the race between listing and opening)."""
        self.close()
        try:
            active: IO[bytes] | None = open(self.active, "rb")  # noqa: SIM115 - the cursor keeps one open
        except FileNotFoundError:
            active = None
        active_ino = os.fstat(active.fileno()).st_ino if active is not None else None
        for path, _first, last in rotated_files(self.active):
            if last <= after_id:
                continue
            try:
                stream = open(path, "rb")  # noqa: SIM115 - the cursor keeps it open
            except FileNotFoundError:
                continue  # deleted by retention meanwhile
            if os.fstat(stream.fileno()).st_ino == active_ino:
                stream.close()  # the file held as active, rotated since: read through `active`
                break
            if self._seek(stream, after_id, keep_at_end=False):
                if active is not None:
                    active.close()
                return
            stream.close()
        if active is not None:
            self._seek(active, after_id, keep_at_end=True)

    def _seek(self, stream: IO[bytes], after_id: int, *, keep_at_end: bool) -> bool:
        """Stand in ``stream`` at its first record above ``after_id`` (or, with
        ``keep_at_end``, after its last complete line); whether it did."""
        offset = 0
        for raw in stream:
            if not raw.endswith(b"\n"):
                break
            record_id = _record_id(raw)
            if record_id is not None and record_id > after_id:
                self._file, self._offset, self._after = stream, offset, after_id
                return True
            offset += len(raw)
        if keep_at_end:
            self._file, self._offset, self._after = stream, offset, after_id
        return keep_at_end


def _record_id(raw: bytes) -> int | None:
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    value = record.get("id") if isinstance(record, dict) else None
    return value if type(value) is int else None


@final
class FleetService:
    """The kernel's side of the fleet link (loop thread only)."""

    def __init__(self, kernel: ServiceHost, section: FleetSection, *, devices: DeviceBroker | None, interlocks: Interlocks | None) -> None:
        self.kernel = kernel
        self.section = section
        self.devices = devices
        self.interlocks = interlocks
        self.names = FleetNames(section.subject_prefix)
        self.board = section.board
        endpoint = Endpoint(
            servers=section.servers,
            user=section.user,
            password_file=section.password_file,
            credentials=section.credentials,
            tls_ca=section.tls_ca,
            inbox_prefix=self.names.inbox_prefix(self.board),
            name=f"clove-{self.board}",
        )
        position = ShippedPosition(Path(kernel.state_dir) / "fleet" / "shipped.json", self.board)
        settings = {
            "endpoint": dataclasses.asdict(endpoint),
            "prefix": section.subject_prefix,
            "board": self.board,
            "journal": str(kernel.journal.path),
            "position": str(position.path),
            "heartbeat": section.heartbeat,
            "lost_after": section.lost_after,
        }
        self.link = LinkProcess([sys.executable, "-m", "clove.kernel.services.fleet", json.dumps(settings)])
        self._restarts = 0
        self._stopping = False
        #: ``connecting``, ``connected``, ``disconnected`` or ``unreachable`` (what a metrics
        #: exporter reports as the fleet connection state), with the time it last changed.
        self.state = "connecting"
        self.state_since = time.time()
        self.shipped = position.load()
        self.server: str | None = None
        self._next_inventory = 0.0
        self._fd: int | None = None
        self.commands = FleetCommands(kernel, section, reply=self.link.offer_reply, devices=devices, interlocks=interlocks)
        self.deploy = deploy_for(kernel, section)  # None unless a key may deploy (docs/fleet.md, "Deploy")

    @property
    def perform(self) -> Perform | None:
        return self.commands.perform

    @perform.setter
    def perform(self, perform: Perform) -> None:
        """The dispatcher's, handed in by the kernel at boot: commands perform calls through it."""
        self.commands.perform = perform
        if self.deploy is not None:
            self.deploy.perform = perform

    def start(self) -> None:
        if self._stopping:
            return
        try:
            self.link.start()
        except OSError as err:
            self._restart_later(f"cannot start the fleet link process: {err}")
            return
        self._fd = self.link.fileno()
        self.kernel.loop.add_reader(self._fd, self._on_events)

    def shutdown(self) -> None:
        self._stopping = True
        self.commands.close()
        if self._fd is not None:
            self.kernel.loop.remove_reader(self._fd)
            self._fd = None
        if not self.link.close():
            log.warning("the fleet link process did not stop in time; killed it")

    def housekeeping(self) -> None:
        now = time.monotonic()
        if now >= self._next_inventory:
            self._next_inventory = now + self.section.heartbeat
            self.link.offer_inventory(self.inventory())
        else:
            self.link.flush()  # the rest of an inventory the pipe had no room for

    def _restart_later(self, why: str) -> None:
        """The link process died: journal it, start another after a backoff (1 s doubling to
        30 s). The board itself carries on."""
        delay = min(30.0, 2.0 ** min(self._restarts, 5))
        self._restarts += 1
        log.warning("fleet: %s; restarting the link in %.0f s", why, delay)
        self.kernel.journal.append(Category.NETWORK, "fleet.error", decision="n/a", details={"board": self.board, "message": why, "restart_in": delay})
        self.state, self.state_since = "disconnected", time.time()
        self.kernel.loop.call_later(delay, self.start)

    def view(self) -> dict[str, Any]:
        return {"board": self.board, "state": self.state, "since": self.state_since, "server": self.server, "shipped_seq": self.shipped}

    # ---- link events --------------------------------------------------------------------------

    def _on_events(self) -> None:
        for event in self.link.events():
            self._handle(event)

    def _handle(self, event: LinkEvent) -> None:
        kind, details = event.kind, event.details
        if kind == "exited":
            if self._fd is not None:
                self.kernel.loop.remove_reader(self._fd)
                self._fd = None
            if not self._stopping:
                self._restart_later(f"the fleet link process exited (status {details.get('status')})")
            return
        if kind == "connected":
            self._restarts = 0
        if kind == "command":
            self.commands.handle(details.get("data"), details.get("reply"))
            return
        if kind == "shipped":
            self.shipped = max(self.shipped, int(details.get("seq", 0)))
            return
        if kind == "error":
            log.warning("fleet: %s", details.get("message"))
            self.kernel.journal.append(Category.NETWORK, "fleet.error", decision="n/a", details={"board": self.board, **details})
            return
        if kind not in ("connected", "disconnected", "unreachable"):
            return
        self.state, self.state_since = kind, time.time()
        if kind == "connected":
            self.server = details.get("server")
            log.info("fleet: board %s connected to %s", self.board, self.server)
        else:
            log.warning("fleet: board %s %s: %s", self.board, kind, details.get("reason"))
        self.kernel.journal.append(Category.NETWORK, f"fleet.{kind}", decision="n/a", details={"board": self.board, **details})
        self.kernel.events.emit(FLEET_EVENT, {"board": self.board, "state": kind, **details}, source_agent_id=None)

    # ---- the inventory ------------------------------------------------------------------------

    def inventory(self) -> dict[str, Any]:
        """What the board's entry in the fleet bucket says (the link adds the heartbeat)."""
        kernel = self.kernel
        table = list(kernel.supervisor.table)
        agents = [
            {"id": a.id, "name": a.name, "state": a.state.value, "restarts": a.restarts, "uptime": round(a.uptime(), 1)}
            for a in table[:MAX_INVENTORY_AGENTS]
        ]
        devices: list[dict[str, Any]] = []
        trading: dict[str, Any] = {}
        if self.devices is not None:
            for view in self.devices.views(None):
                devices.append({k: view.get(k) for k in ("name", "driver", "state", "restarts", "last_error")})
                status = view.get("status")
                if view.get("driver") == "exchange" and isinstance(status, dict):
                    trading[str(view.get("name"))] = {k: status.get(k) for k in ("state", "reason", "open_orders") if k in status}
        engaged = {}
        if self.interlocks is not None:
            engaged = {name: {"cause": record.get("cause"), "engaged_at": record.get("engaged_at")} for name, record in self.interlocks.engaged.items()}
        backend = kernel.backend
        return {
            "kernel": {"version": __version__, "pid": os.getpid(), "started_at": getattr(kernel, "started_at", None)},
            "uptime": round(time.time() - float(getattr(kernel, "started_at", time.time())), 1),
            "agents": agents,
            "agents_total": len(table),
            "agents_omitted": max(0, len(table) - MAX_INVENTORY_AGENTS),
            "devices": devices,
            "interlocks_engaged": engaged,
            "trading": trading or None,
            "isolation": {
                "backend": backend.name if backend is not None else "rlimit",
                "require_isolation": kernel.config.sandbox.require_isolation,
                "landlock": kernel.config.sandbox.landlock,
                "seccomp": kernel.config.sandbox.seccomp,
            },
            "journal_last_id": kernel.journal.last_id,
            "link": self.view(),
        }


def attach(kernel: ServiceRegistry) -> None:
    """With a ``[fleet]`` table: start the link (after the devices and interlocks it reports)."""
    section = kernel.config.fleet
    if section is None:
        return
    service = FleetService(kernel, section, devices=getattr(kernel, "devices", None), interlocks=getattr(kernel, "interlocks", None))
    service.start()
    # Where the Prometheus exporter finds the link's state (clove_fleet_connected): the kernel's
    # `fleet` attribute, which ServiceRegistry does not declare.
    setattr(kernel, "fleet", service)  # noqa: B010
    kernel.loop.housekeeping.append(service.housekeeping)
    kernel.on_shutdown.append(service.shutdown)
    if service.deploy is not None:  # its own watcher process, started and stopped beside the link
        service.deploy.start()
        kernel.loop.housekeeping.append(service.deploy.housekeeping)
        kernel.on_shutdown.append(service.deploy.shutdown)


def main(argv: list[str] | None = None) -> int:
    """The link process (``python -m clove.kernel.services.fleet SETTINGS``): the link with a
    journal cursor, relaying over stdin and stdout (:func:`clove.fleet.process.serve`)."""
    settings = json.loads((argv if argv is not None else sys.argv)[1])
    with contextlib.suppress(OSError):
        set_process_name(f"clove-fleet-{settings['board']}")
    endpoint = settings["endpoint"]
    endpoint["servers"] = tuple(endpoint["servers"])
    cursor = JournalCursor(Path(settings["journal"]))
    link = FleetLink(
        Endpoint(**endpoint),
        FleetNames(settings["prefix"]),
        settings["board"],
        read_after=cursor.read_after,
        position=ShippedPosition(Path(settings["position"]), settings["board"]),
        heartbeat=float(settings["heartbeat"]),
        lost_after=float(settings["lost_after"]),
    )
    try:
        return serve(link)
    finally:
        cursor.close()


if __name__ == "__main__":
    sys.exit(main())
