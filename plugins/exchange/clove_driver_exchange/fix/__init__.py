"""A small FIX 4.4 engine, the one both ends of Clove's trading path speak: the exchange driver
(initiator) and the simulated venue in ``hil.exchange`` (acceptor).

* :mod:`~clove_driver_exchange.fix.messages` — framing with BodyLength/CheckSum checks, parsing
  into :class:`Message`, and builders for the session and order messages (over simplefix): the
  one module callers import, over :mod:`~clove_driver_exchange.fix.dictionary` (tags, message
  types), :mod:`~clove_driver_exchange.fix.framing`, :mod:`~clove_driver_exchange.fix.codec`
  (encode, parse) and :mod:`~clove_driver_exchange.fix.builders`;
* :mod:`~clove_driver_exchange.fix.store` — :class:`SeqStore`, the crash-safe journal of
  sequence numbers and sent messages;
* :mod:`~clove_driver_exchange.fix.session` — :class:`FixSession`, the socket-free session state
  machine (:mod:`~clove_driver_exchange.fix.resend` answers the counterparty's ResendRequests,
  :mod:`~clove_driver_exchange.fix.gaps` keeps the inbound gaps and the ResendRequest out,
  :mod:`~clove_driver_exchange.fix.liveness` the heartbeat and TestRequest clocks);
* :mod:`~clove_driver_exchange.fix.transport` — :class:`FixConnection`/:func:`connect`, its
  threaded TCP transport.

It imports nothing of Clove, so the venue and tools can use it on their own.
"""

from clove_driver_exchange.fix.messages import FixError, Message, MsgType, Outgoing, Tag
from clove_driver_exchange.fix.session import FixSession, Role, State
from clove_driver_exchange.fix.store import SeqStore
from clove_driver_exchange.fix.transport import FixConnection, connect

__all__ = [
    "FixConnection",
    "FixError",
    "FixSession",
    "Message",
    "MsgType",
    "Outgoing",
    "Role",
    "SeqStore",
    "State",
    "Tag",
    "connect",
]
