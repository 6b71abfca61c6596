"""The FIX 4.4 session layer, shared by the exchange driver (initiator) and the simulated venue
(acceptor).

:class:`FixSession` is a state machine with no socket: bytes received go in through
:meth:`~FixSession.feed`, bytes to send come out through the ``send_bytes`` callable, and time
moves through :meth:`~FixSession.tick`. That keeps the protocol testable back to back in memory
with a fake clock, and lets either side pick its own transport.
:class:`~clove_driver_exchange.fix.transport.FixConnection` is the one both sides use today: a
reader thread (which also ticks) and a writer thread per TCP connection.

What the session does, so its users do not have to:

* **Logon/Logout.** The initiator sends Logon (HeartBtInt, ResetSeqNumFlag, Username/Password,
  8013 cancel-on-disconnect); the acceptor checks the credentials with ``authenticate`` and
  answers with its own Logon, or with a Logout naming the problem. Either side may log out;
  the other answers and the transport is closed.
* **Sequence numbers** (from a :class:`~clove_driver_exchange.fix.store.SeqStore`, so they
  survive reconnects and restarts). An inbound number above the expected one is a gap: the
  message is held, a ResendRequest goes out, and held messages are processed in order once the
  gap is filled. A number below the expected one is a duplicate if PossDupFlag=Y (dropped), and
  otherwise a fatal error: a Logout with "MsgSeqNum too low, expecting X but received Y".
* **Resends.** A ResendRequest is answered from the store: application messages again, with
  PossDupFlag=Y and OrigSendingTime; admin messages (and anything not stored) as
  SequenceReset-GapFill runs.
* **Liveness.** A Heartbeat after HeartBtInt seconds of sending nothing; a TestRequest after
  1.2 x HeartBtInt of hearing nothing; the connection is closed if that goes unanswered for
  another HeartBtInt.
* **Garbled input** (bad BodyLength or CheckSum) is ignored without consuming a sequence
  number, as the standard says; the sender's next message then shows a gap, which resend fills.

Application messages (and session-level Rejects, which refer to a message the application
sent) reach ``on_app_message`` in sequence order, on the thread that called ``feed``, never
while the session's lock is held: a callback may call :meth:`FixSession.send_app`.
Application messages sent while the session is not active are stored, not sent: they go out
when the counterparty asks for them after the next logon (the gap it sees in our Logon's
MsgSeqNum), which is how a venue delivers reports made while a client was away.

Delivery is at most once across a crash: the expected inbound number is saved before
``on_app_message`` runs. An order client should reconcile with an OrderMassStatusRequest after
a restart anyway.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Literal

from clove_driver_exchange.fix import messages as m
from clove_driver_exchange.fix.gaps import InboundGaps
from clove_driver_exchange.fix.liveness import TEST_REQUEST_AFTER as TEST_REQUEST_AFTER  # public, as before
from clove_driver_exchange.fix.liveness import Liveness
from clove_driver_exchange.fix.messages import FixError, Frame, Framer, Message, MsgType, Outgoing, Tag
from clove_driver_exchange.fix.resend import replay
from clove_driver_exchange.fix.store import SeqStore

__all__ = ["FixSession", "Role", "State"]

Role = Literal["initiator", "acceptor"]
State = Literal["disconnected", "logon_sent", "active", "logout_sent"]

_log = logging.getLogger(__name__)

_Deferred = Callable[[], None]


class FixSession:
    """One FIX session between ``sender`` (us) and ``target`` (the counterparty).

    :param role: ``"initiator"`` sends the Logon (:meth:`logon`); ``"acceptor"`` waits for one.
    :param store: where sequence numbers and sent application messages persist.
    :param heartbeat_s: HeartBtInt the initiator asks for; an acceptor uses the initiator's.
    :param on_app_message: called with each application message (and session Reject), in order.
    :param send_bytes: writes to the counterparty; set later by :meth:`connection_made`. It must
        not block long and must not call back into the session (a queue, as
        :class:`~clove_driver_exchange.fix.transport.FixConnection` uses, or a list in a test).
    :param clock: seconds since the epoch, for SendingTime and the liveness timers.
    :param username, password: sent in the initiator's Logon (553/554) when given.
    :param cancel_on_disconnect: sent in the initiator's Logon as 8013=Y/N when not ``None``.
    :param authenticate: the acceptor's credential check; ``None`` admits everyone.
    :param reset_on_logon: the initiator starts over at sequence number 1 (ResetSeqNumFlag=Y).
    :param on_state_change: called with ``(old, new)`` when :attr:`state` changes.
    :param on_inbound: called with every sound inbound message, admin ones too, before it is
        sequence-checked (a venue's audit log). Runs under the session lock: keep it trivial.
    :param should_resend: asked about each stored application message a ResendRequest covers;
        ``False`` gap-fills it instead (an order client may refuse to replay stale orders after
        a long outage). Runs under the session lock. Default: resend everything.
    """

    def __init__(
        self,
        role: Role,
        sender: str,
        target: str,
        store: SeqStore,
        heartbeat_s: float = 30.0,
        on_app_message: Callable[[Message], None] | None = None,
        send_bytes: Callable[[bytes], None] | None = None,
        clock: Callable[[], float] = time.time,
        *,
        username: str | None = None,
        password: str | None = None,
        cancel_on_disconnect: bool | None = None,
        authenticate: Callable[[str | None, str | None], bool] | None = None,
        reset_on_logon: bool = False,
        logon_timeout: float = 10.0,
        logout_timeout: float = 2.0,
        on_state_change: Callable[[State, State], None] | None = None,
        on_inbound: Callable[[Message], None] | None = None,
        should_resend: Callable[[Message], bool] | None = None,
    ) -> None:
        if role not in ("initiator", "acceptor"):
            raise ValueError(f"role is 'initiator' or 'acceptor', got {role!r}")
        if heartbeat_s <= 0:
            raise ValueError(f"heartbeat_s must be positive, got {heartbeat_s!r}")
        self.role: Role = role
        self.sender = sender
        self.target = target
        self.store = store
        self.heartbeat_s = float(heartbeat_s)
        self.on_app_message = on_app_message
        self.clock = clock
        self.username = username
        self.password = password
        self.cancel_on_disconnect = cancel_on_disconnect
        self.authenticate = authenticate
        self.reset_on_logon = reset_on_logon
        self.logon_timeout = logon_timeout
        self.logout_timeout = logout_timeout
        self.on_state_change = on_state_change
        self.on_inbound = on_inbound
        self.should_resend = should_resend
        #: The counterparty's Logon of the current (or last) session: HeartBtInt, 553, 8013, ...
        self.peer_logon: Message | None = None
        #: Why the session last ended: the Logout text received or sent, or the local reason.
        self.last_logout_text: str | None = None
        #: Counters: sent, received, garbled, duplicates, resend_requests, resent, gap_fills.
        self.stats: dict[str, int] = dict.fromkeys(
            ("sent", "received", "garbled", "duplicates", "resend_requests", "resent", "gap_fills"), 0
        )
        self._lock = threading.Lock()
        self._state: State = "disconnected"
        self._send_bytes = send_bytes
        self._close_transport: Callable[[], None] | None = None
        self._closing = False  # close_transport was called for the current transport
        self._owner: object | None = None
        self._framer = Framer()
        self._pending: list[_Deferred] = []
        self._gaps = InboundGaps()  # inbound beyond a gap, and the ResendRequest out
        now = clock()
        self._liveness = Liveness(now)  # heartbeats and test requests
        self._phase_at = now

    # ---- properties -----------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def is_active(self) -> bool:
        return self._state == "active"

    @property
    def connected(self) -> bool:
        """Whether a transport is attached (bytes can be sent)."""
        return self._send_bytes is not None

    @property
    def next_sender_seq(self) -> int:
        return self.store.next_sender_seq

    @property
    def next_target_seq(self) -> int:
        return self.store.next_target_seq

    def __repr__(self) -> str:
        return (
            f"FixSession({self.role}, {self.sender}->{self.target}, {self._state}, "
            f"out={self.store.next_sender_seq}, in={self.store.next_target_seq})"
        )

    # ---- transport --------------------------------------------------------------------------------

    def connection_made(
        self,
        send_bytes: Callable[[bytes], None],
        close_transport: Callable[[], None] | None = None,
        owner: object | None = None,
    ) -> None:
        """Attach a transport: ``send_bytes`` writes, ``close_transport`` ends the connection.

        :raises RuntimeError: another transport is still attached.
        """
        with self._lock:
            if self._send_bytes is not None and self._owner is not owner:
                raise RuntimeError(f"{self!r} already has a transport")
            self._send_bytes = send_bytes
            self._close_transport = close_transport
            self._owner = owner
            self._framer = Framer()
            self._reset_connection_state()
            self._phase_at = self.clock()
            self._liveness.restart(self._phase_at)

    def connection_lost(self, owner: object | None = None) -> None:
        """Detach the transport (it closed). A stale ``owner`` (not the attached one) is ignored."""
        with self._lock:
            if owner is not None and owner is not self._owner:
                return
            self._send_bytes = self._close_transport = None
            self._owner = None
            self._reset_connection_state()
            self._set_state("disconnected")
            pending = self._take_pending()
        self._run(pending)

    def _reset_connection_state(self) -> None:
        self._closing = False
        self._gaps.reset()
        self._liveness.forget_test_request()

    # ---- public operations ------------------------------------------------------------------------

    def logon(self) -> None:
        """(Initiator) send the Logon; :attr:`state` becomes ``logon_sent``, then ``active``.

        :raises RuntimeError: not an initiator, no transport, or already logged on.
        """
        with self._lock:
            if self.role != "initiator":
                raise RuntimeError("only the initiator sends the first Logon")
            if self._send_bytes is None:
                raise RuntimeError("no transport: call connection_made first (or use connect())")
            if self._state != "disconnected":
                raise RuntimeError(f"cannot log on in state {self._state!r}")
            if self.reset_on_logon:
                self.store.reset()
            self._send(
                m.logon(
                    self.heartbeat_s,
                    reset_seq_num=self.reset_on_logon,
                    username=self.username,
                    password=self.password,
                    cancel_on_disconnect=self.cancel_on_disconnect,
                ),
                store=False,
            )
            self._set_state("logon_sent")
            pending = self._take_pending()
        self._run(pending)

    def logout(self, text: str | None = None) -> None:
        """Send a Logout and wait (up to ``logout_timeout``) for the answer, then close."""
        with self._lock:
            if self._state == "active":
                self._send(m.logout(text), store=False)
                self._set_state("logout_sent")
            elif self._state != "logout_sent":
                self._close(text or "logged out")
            pending = self._take_pending()
        self._run(pending)

    def send_app(self, msg_type: str, fields: m.Fields) -> int:
        """Send an application message; returns its MsgSeqNum.

        It is stored for resends first. While the session is not active it is only stored: the
        counterparty gets it by resend after the next logon.
        """
        if msg_type in m.ADMIN_TYPES:
            raise ValueError(f"MsgType {msg_type!r} is a session message; the session sends those")
        with self._lock:
            seq = self._send(Outgoing(msg_type, fields), store=True, transmit=self._state == "active")
            pending = self._take_pending()
        self._run(pending)
        return seq

    def reject(
        self, msg: Message, text: str, *, reason: int | None = None, ref_tag: int | None = None
    ) -> None:
        """Send a session-level Reject(3) of ``msg`` (an application message this side cannot
        take: unsupported MsgType, a required tag missing). ``reason``: SessionRejectReason(373),
        e.g. 1 required tag missing, 5 value incorrect, 11 invalid MsgType."""
        with self._lock:
            if self._state in ("active", "logout_sent"):
                self._send(m.reject(msg.seq_num, text, reason=reason, ref_tag=ref_tag,
                                    ref_msg_type=msg.msg_type), store=False)
            pending = self._take_pending()
        self._run(pending)

    def skip_seqnum(self, count: int = 1) -> None:
        """Fault injection: the next outbound message jumps ``count`` sequence numbers ahead, as if
        messages were lost; the counterparty's ResendRequest is then answered with a GapFill."""
        with self._lock:
            self.store.set_next_sender_seq(self.store.next_sender_seq + count)

    def feed(self, data: bytes) -> None:
        """Process bytes received from the counterparty. Call from one thread at a time."""
        with self._lock:
            for frame in self._framer.feed(data):
                self._on_frame(frame)
            pending = self._take_pending()
        self._run(pending)

    def tick(self, now: float | None = None) -> None:
        """Run the timers: heartbeats, test requests, logon/logout timeouts, stalled resends."""
        with self._lock:
            self._tick(self.clock() if now is None else now)
            pending = self._take_pending()
        self._run(pending)

    # ---- deferred callbacks (run after the lock is released) --------------------------------------

    def _take_pending(self) -> list[_Deferred]:
        pending, self._pending = self._pending, []
        return pending

    @staticmethod
    def _run(pending: list[_Deferred]) -> None:
        for call in pending:
            try:
                call()
            except Exception:  # a callback's bug must not break the session
                _log.exception("FIX session callback failed")

    def _set_state(self, new: State) -> None:
        old = self._state
        if old == new:
            return
        self._state = new
        self._phase_at = self.clock()
        callback = self.on_state_change
        if callback is not None:
            self._pending.append(lambda: callback(old, new))

    def _deliver(self, msg: Message) -> None:
        callback = self.on_app_message
        if callback is not None:
            self._pending.append(lambda: callback(msg))

    # ---- sending (lock held) ----------------------------------------------------------------------

    def _send(self, out: Outgoing, *, store: bool, transmit: bool = True) -> int:
        seq = self.store.next_sender_seq
        raw = m.encode(
            out.msg_type, out.fields, sender=self.sender, target=self.target, seq_num=seq,
            sending_time=self.clock(),
        )
        if store:
            self.store.store_message(seq, raw)
        else:
            self.store.set_next_sender_seq(seq + 1)
        if transmit:
            self._transmit(raw)
        return seq

    def _transmit(self, raw: bytes) -> None:
        send = self._send_bytes
        if send is None:
            return
        send(raw)
        self.stats["sent"] += 1
        self._liveness.sent(self.clock())

    def _close(self, reason: str) -> None:
        """End the connection now (after what is already queued to send)."""
        self.last_logout_text = reason
        close = self._close_transport
        self._set_state("disconnected")
        if close is not None and not self._closing:
            self._closing = True
            close()

    def _terminate(self, text: str) -> None:
        """A fatal protocol error: Logout with ``text``, then close."""
        _log.warning("FIX session %s->%s: %s", self.sender, self.target, text)
        if self._send_bytes is not None:
            self._send(m.logout(text), store=False)
        self._close(text)

    def _resend(self, begin: int, end: int) -> None:
        """Answer a ResendRequest for ``begin..end`` (``end`` 0: up to the last sent)."""
        replayed = replay(self.store, begin, end, sender=self.sender, target=self.target,
                          clock=self.clock, should_resend=self.should_resend)
        for counter, raw in replayed:
            self._transmit(raw)
            self.stats[counter] += 1

    def _request_resend(self) -> None:
        """Ask for the first gap: from the expected number up to the first held message.

        One request at a time: messages arriving meanwhile are held, and a later gap is asked
        for once this one is filled (:meth:`_drain`).
        """
        wanted = self._gaps.next_request(self.store.next_target_seq, self.clock)
        if wanted is None:
            return
        self.stats["resend_requests"] += 1
        self._send(m.resend_request(*wanted), store=False)

    # ---- receiving (lock held) --------------------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        if frame.error is not None:
            self.stats["garbled"] += 1
            _log.warning("FIX session %s<-%s: garbled message ignored: %s", self.sender, self.target,
                         frame.error)
            return
        try:
            msg = m.parse(frame.raw, verify=False)
            seq = msg.seq_num
        except FixError as exc:
            self.stats["garbled"] += 1
            _log.warning("FIX session %s<-%s: malformed message ignored: %s", self.sender, self.target, exc)
            return
        self.stats["received"] += 1
        if self.on_inbound is not None:
            self.on_inbound(msg)
        if self._closing:
            return  # we have ended this connection; what still arrives on it does not count
        self._liveness.heard(self.clock())
        if msg.get(Tag.BEGIN_STRING) != m.BEGIN_STRING:
            self._terminate(f"BeginString must be {m.BEGIN_STRING}, got {msg.get(Tag.BEGIN_STRING)!r}")
            return
        if msg.get(Tag.SENDER_COMP_ID) != self.target or msg.get(Tag.TARGET_COMP_ID) != self.sender:
            self._terminate(
                f"CompID problem: expected {self.target}->{self.sender}, got "
                f"{msg.get(Tag.SENDER_COMP_ID)}->{msg.get(Tag.TARGET_COMP_ID)}"
            )
            return
        if self._state in ("disconnected", "logon_sent"):
            self._before_logon(msg, seq)
            return
        if msg.msg_type == MsgType.SEQUENCE_RESET and msg.get(Tag.GAP_FILL_FLAG) != "Y":
            self._sequence_reset(msg)  # Reset mode applies whatever its own MsgSeqNum
            return
        expected = self.store.next_target_seq
        if seq > expected:
            if msg.msg_type == MsgType.LOGOUT:
                self._on_logout(msg)
                return
            if msg.msg_type == MsgType.RESEND_REQUEST:
                self._on_resend_request(msg)  # now: the counterparty may be waiting on us too
                self._gaps.hold(seq, None)
            else:
                self._gaps.hold(seq, msg)
            self._request_resend()
            return
        if seq < expected:
            if msg.poss_dup:
                self.stats["duplicates"] += 1
                return
            self._terminate(f"MsgSeqNum too low, expecting {expected} but received {seq}")
            return
        self._process(msg, seq)
        self._drain()

    def _before_logon(self, msg: Message, seq: int) -> None:
        if msg.msg_type == MsgType.LOGOUT:
            self.last_logout_text = msg.get(Tag.TEXT) or "logged out before logon"
            self._close(self.last_logout_text)
            return
        if msg.msg_type != MsgType.LOGON:
            self._terminate(f"the first message must be a Logon, got MsgType {msg.msg_type!r}")
            return
        if self.role == "acceptor":
            if self._state != "disconnected" or self._send_bytes is None:
                return
            if not self._accept_logon(msg):
                return
        elif self._state != "logon_sent":
            return  # an unsolicited Logon to an initiator
        expected = self.store.next_target_seq
        if seq < expected:
            self._terminate(f"MsgSeqNum too low, expecting {expected} but received {seq}")
            return
        self.peer_logon = msg
        if self.role == "acceptor":
            self._send(
                m.logon(self.heartbeat_s, reset_seq_num=msg.get(Tag.RESET_SEQ_NUM_FLAG) == "Y"),
                store=False,
            )
        self._set_state("active")
        if seq == expected:
            self.store.set_next_target_seq(seq + 1)
        else:
            self._gaps.hold(seq, None)
            self._request_resend()

    def _accept_logon(self, msg: Message) -> bool:
        """Check the initiator's Logon; on refusal answer with a Logout and close."""
        username, password = msg.get(Tag.USERNAME), msg.get(Tag.PASSWORD)
        if self.authenticate is not None and not self.authenticate(username, password):
            self._terminate("invalid username or password")
            return False
        try:
            hb = msg.get_int(Tag.HEART_BT_INT)
        except FixError:
            hb = None
        if hb is None or hb <= 0:
            self._terminate("HeartBtInt(108) must be a positive integer")
            return False
        self.heartbeat_s = float(hb)
        if msg.get(Tag.RESET_SEQ_NUM_FLAG) == "Y":
            self.store.reset()
        return True

    def _process(self, msg: Message, seq: int) -> None:
        """Handle the message with the expected sequence number."""
        kind = msg.msg_type
        advance = seq + 1
        if kind == MsgType.SEQUENCE_RESET:  # GapFill (Reset mode never gets here)
            new_seq = msg.get_int(Tag.NEW_SEQ_NO, 0) or 0
            if new_seq > seq:
                advance = new_seq
            else:
                self._send(m.reject(seq, f"NewSeqNo {new_seq} is not above {seq}", reason=5, ref_tag=36,
                                    ref_msg_type=kind), store=False)
        self.store.set_next_target_seq(advance)
        if kind == MsgType.HEARTBEAT or kind == MsgType.SEQUENCE_RESET:
            return
        if kind == MsgType.TEST_REQUEST:
            self._send(m.heartbeat(msg.get(Tag.TEST_REQ_ID)), store=False)
        elif kind == MsgType.RESEND_REQUEST:
            self._on_resend_request(msg)
        elif kind == MsgType.LOGOUT:
            self._on_logout(msg)
        elif kind == MsgType.LOGON:
            self._send(m.reject(seq, "already logged on", ref_msg_type=kind), store=False)
        else:  # application messages, and Reject(3) for the application's own messages
            self._deliver(msg)

    def _drain(self) -> None:
        """Process held messages that are now in sequence."""
        gaps = self._gaps
        while gaps.held:
            expected = self.store.next_target_seq
            found, msg = gaps.take(expected)
            if not found:
                break
            if msg is None:
                self.store.set_next_target_seq(expected + 1)
            else:
                self._process(msg, expected)
            if self._state not in ("active", "logout_sent"):
                gaps.held.clear()
                return
        gaps.filled(self.store.next_target_seq)
        self._request_resend()

    def _on_resend_request(self, msg: Message) -> None:
        begin = msg.get_int(Tag.BEGIN_SEQ_NO, 0) or 0
        end = msg.get_int(Tag.END_SEQ_NO, 0) or 0
        if begin <= 0:
            self._send(m.reject(msg.seq_num, "BeginSeqNo(7) must be positive", reason=5, ref_tag=7,
                                ref_msg_type=msg.msg_type), store=False)
            return
        self._resend(begin, end)

    def _sequence_reset(self, msg: Message) -> None:
        new_seq = msg.get_int(Tag.NEW_SEQ_NO, 0) or 0
        expected = self.store.next_target_seq
        if new_seq < expected:
            self._send(m.reject(msg.seq_num, f"NewSeqNo {new_seq} is below the expected {expected}",
                                reason=5, ref_tag=36, ref_msg_type=msg.msg_type), store=False)
            return
        self.store.set_next_target_seq(new_seq)
        self._drain()

    def _on_logout(self, msg: Message) -> None:
        self.last_logout_text = msg.get(Tag.TEXT) or "logged out"
        if self._state == "active":
            self._send(m.logout(), store=False)
        self._close(self.last_logout_text)

    # ---- timers (lock held) -----------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        if self._send_bytes is None:
            return
        state = self._state
        if state == "disconnected":
            if self.role == "acceptor" and now - self._phase_at >= self.logon_timeout:
                self._close("no Logon received")
            return
        if state == "logon_sent":
            if now - self._phase_at >= self.logon_timeout:
                self._close("no answer to our Logon")
            return
        if state == "logout_sent":
            if now - self._phase_at >= self.logout_timeout:
                self._close("no answer to our Logout")
            return
        hb = self.heartbeat_s
        live = self._liveness
        unanswered = live.unanswered(now, hb)
        if unanswered is not None:
            self._close(f"no answer to TestRequest {unanswered} within {hb:g} s")
            return
        test_req_id = live.test_request_due(now, hb)
        if test_req_id is not None:
            self._send(m.test_request(test_req_id), store=False)
        if live.heartbeat_due(now, hb):
            self._send(m.heartbeat(), store=False)
        if self._gaps.stalled(now, hb):  # the last request stalled: ask again
            self._request_resend()
