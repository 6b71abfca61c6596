"""A virtual CAN bus that spans processes: python-can's ``simbus`` interface and its hub.

One hub process serves one bus (a *channel*)::

    python -m hil.simbus --channel rover [--dir DIR] [--log capture.blf]

and any number of processes join it with plain python-can::

    bus = can.Bus(interface="simbus", channel="rover")        # or hil.simbus.SimBus(channel="rover")
    bus.send(can.Message(arbitration_id=0x101, data=b"\\x01", is_extended_id=False))
    msg = bus.recv(timeout=1.0)

Every frame a node sends reaches every other node on the channel, in the order the hub received
them, with the sender's timestamp (``time.time()`` when ``send`` was called). As on a real bus a
node does not see its own frames unless it is opened with ``receive_own_messages=True``.

**Endpoints.** The hub binds three ZeroMQ ``ipc`` sockets in its directory (default
``/tmp/clove-simbus``, or ``$CLOVE_SIMBUS_DIR``): ``<channel>.pub`` where the hub publishes frames
(nodes subscribe there), ``<channel>.sub`` where the hub collects frames (nodes publish there) and
``<channel>.ctl``, its control socket. A directory the hub creates gets mode ``1777`` (like
``/tmp``: anyone may connect, nobody may delete another's socket) and the two bus sockets mode
``0666``, so a sandboxed process can join the bus if the two files are exposed to it. The control
socket is ``0600``: the fault controls belong to the harness, not to the agents under test — expose
only ``.pub`` and ``.sub`` to a sandbox.

**Faults.** The hub forwards frames in its own poll loop, which applies a :class:`Faults` setting
that can be changed while the bus runs, through the control socket (:class:`SimBusControl`, or the
convenience methods of an in-process :class:`SimBusHub`):

* ``drop`` — the share of frames lost (0..1); they reach nobody.
* ``delay`` — seconds every frame is held before it is delivered (order is kept).
* ``error_rate`` — the share of frames corrupted on the wire: the frame is lost and every node
  receives an error frame instead (class ``CAN_ERR_PROT | CAN_ERR_BUSERROR``, CRC sequence).
* ``bus_off`` — the bus is unusable: nodes' ``state`` becomes ``can.BusState.ERROR`` (python-can has
  no separate bus-off state; its drivers report bus-off as ``ERROR``), ``send`` raises
  ``can.CanOperationError`` and the hub drops frames already in flight. Entering and leaving
  bus-off each sends an error frame (``CAN_ERR_BUSOFF``, then ``CAN_ERR_RESTARTED``).
* ``inject_error()`` sends error frames at once. Error frames follow SocketCAN's layout: the error
  class is the ``arbitration_id``, the details are the 8 data bytes.

The state a node reports changes asynchronously (as a controller's does): after ``bus_off`` is set,
poll ``bus.state`` rather than assume the next ``send`` fails; the hub drops frames meanwhile.

**Capture.** ``--log PATH`` (``log_path=``) writes every frame the hub delivers, error frames
included, to a python-can log file (format from the extension: ``.blf``, ``.asc``, ``.log``, ...)
with the senders' timestamps, for replay with ``can.LogReader``. Dropped frames are not logged
(they never reached the bus). ``.blf`` keeps everything; ``.asc`` stores timestamps relative to the
first frame and, like ``.log``, keeps no error-frame details (python-can's formats, not the hub).

**Queues.** A sender's transmit queue holds :attr:`SimBus.TX_QUEUE` frames; when the hub falls
behind, ``send`` waits for room (up to its ``timeout``; ``timeout=0`` fails at once) rather than
dropping. Each receiver has up to :attr:`SimBus.RX_QUEUE` frames queued locally plus
:attr:`SimBusHub.CLIENT_QUEUE` at the hub; a node that stops reading loses frames beyond that (an
overrun, as a controller's receive FIFO would), without slowing the others.

**Wire format.** One ZeroMQ message per frame: the topic byte ``F`` then msgpack of
``(sender_id, arbitration_id, is_extended, is_remote, is_error, is_fd, brs, dlc, data, timestamp,
esi)``. Topics ``P`` (connection probes) and ``S`` (bus state) never reach users as frames.

**Modules.** :mod:`hil.simbus.channel` (channel names, socket paths, :class:`SimBusError`),
:mod:`hil.simbus.wire` (the frame encoding), :mod:`hil.simbus.hub` (:class:`SimBusHub`, the
relay), :mod:`hil.simbus.control` (:class:`Faults`, :class:`HubStats`, the control client
:class:`SimBusControl` and the hub's side of the control socket), :mod:`hil.simbus.bus`
(:class:`SimBus`, the python-can interface) and :mod:`hil.simbus.cli` (``python -m hil.simbus``).
"""

from __future__ import annotations

from hil.simbus.bus import SimBus
from hil.simbus.channel import DEFAULT_DIR, SimBusError, SimBusPaths, simbus_paths
from hil.simbus.channel import DIR_ENV as DIR_ENV  # "X as X": public, not in __all__ (as before)
from hil.simbus.cli import main
from hil.simbus.control import Faults, HubStats, SimBusControl
from hil.simbus.hub import FrameHook as FrameHook
from hil.simbus.hub import SimBusHub
from hil.simbus.wire import CAN_ERR_BUSERROR, CAN_ERR_BUSOFF, CAN_ERR_PROT, CAN_ERR_RESTARTED
from hil.simbus.wire import CAN_ERR_CRTL as CAN_ERR_CRTL

__all__ = [
    "CAN_ERR_BUSERROR",
    "CAN_ERR_BUSOFF",
    "CAN_ERR_PROT",
    "CAN_ERR_RESTARTED",
    "DEFAULT_DIR",
    "Faults",
    "HubStats",
    "SimBus",
    "SimBusControl",
    "SimBusError",
    "SimBusHub",
    "SimBusPaths",
    "main",
    "simbus_paths",
]
