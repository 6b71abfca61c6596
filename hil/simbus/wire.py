"""The simbus wire format: how frames, probes and bus-state reports travel between nodes and hub.

One ZeroMQ message per frame: the topic byte ``F`` then msgpack of ``(sender_id, arbitration_id,
is_extended, is_remote, is_error, is_fd, brs, dlc, data, timestamp, esi)``. Topics ``P``
(connection probes: ``P`` + the sender id) and ``S`` (bus state: ``S`` + msgpack of
``{"bus_off": bool}``) never reach users as frames. Error frames follow SocketCAN's layout: the
error class is the ``arbitration_id``, the details are the 8 data bytes.
"""

from __future__ import annotations

import time

import can
import msgpack
import zmq

# SocketCAN error classes (linux/can/error.h), carried in an error frame's arbitration_id.
CAN_ERR_CRTL = 0x00000004
CAN_ERR_PROT = 0x00000008
CAN_ERR_BUSOFF = 0x00000040
CAN_ERR_BUSERROR = 0x00000080
CAN_ERR_RESTARTED = 0x00000100
_CAN_ERR_PROT_LOC_CRC_SEQ = 0x08
#: The details of a corrupted frame: a protocol violation of unspecified type in the CRC sequence.
CRC_ERROR_DATA = bytes([0, 0, 0, _CAN_ERR_PROT_LOC_CRC_SEQ, 0, 0, 0, 0])

TOPIC_FRAME = b"F"
TOPIC_PROBE = b"P"
TOPIC_STATUS = b"S"
SENDER_ID_LEN = 8
#: The sender id of frames the hub makes itself (error frames).
HUB_SENDER = bytes(SENDER_ID_LEN)

# Plain ints: pyzmq's enum flags cost a microsecond per use on the hot paths.
NOBLOCK = int(zmq.NOBLOCK)
POLLIN = int(zmq.POLLIN)
EVENTS = int(zmq.EVENTS)


def encode(sender: bytes, msg: can.Message, timestamp: float) -> bytes:
    """A frame on the wire (topic byte included) from ``sender``'s ``msg`` sent at ``timestamp``."""
    packed: bytes = msgpack.packb(
        (
            sender,
            msg.arbitration_id,
            msg.is_extended_id,
            msg.is_remote_frame,
            msg.is_error_frame,
            msg.is_fd,
            msg.bitrate_switch,
            msg.dlc,
            msg.data if msg.data is not None else b"",
            timestamp,
            msg.error_state_indicator,
        )
    )
    return TOPIC_FRAME + packed


def decode(raw: bytes, channel: str | None) -> tuple[bytes, can.Message]:
    """``(sender_id, message)`` from a frame on the wire (topic byte included)."""
    fields_ = msgpack.unpackb(memoryview(raw)[1:], use_list=False)
    sender, arb, ext, rtr, err, fd, brs, dlc, data, ts = fields_[:10]
    esi = bool(fields_[10]) if len(fields_) > 10 else False
    msg = can.Message(
        timestamp=ts,
        arbitration_id=arb,
        is_extended_id=ext,
        is_remote_frame=rtr,
        is_error_frame=err,
        is_fd=fd,
        bitrate_switch=brs,
        error_state_indicator=esi,
        dlc=dlc,
        data=data,
        channel=channel,
        check=False,
    )
    return bytes(sender), msg


def error_frame(error_class: int, data: bytes, timestamp: float | None = None) -> bytes:
    """An error frame from the hub on the wire (default timestamp: now)."""
    msg = can.Message(
        arbitration_id=error_class,
        is_extended_id=True,
        is_error_frame=True,
        dlc=len(data),
        data=data,
        check=False,
    )
    return encode(HUB_SENDER, msg, time.time() if timestamp is None else timestamp)


def status_frame(bus_off: bool) -> bytes:
    """A bus-state report on the wire."""
    packed: bytes = msgpack.packb({"bus_off": bus_off})
    return TOPIC_STATUS + packed


def parse_status(raw: bytes) -> bool | None:
    """The ``bus_off`` flag of a bus-state report, or ``None`` if it is not a map."""
    report = msgpack.unpackb(memoryview(raw)[1:])
    if isinstance(report, dict):
        return bool(report.get("bus_off"))
    return None
