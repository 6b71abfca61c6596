"""The messaging service: bounded mailboxes between principals (agents and operator sessions).

A *principal* is anything with an id from the kernel's one id space: an agent (its spawn id,
fixed for life across restarts) or an operator session (its session id). Both can send and
receive, so an agent can answer an operator by replying to ``from_id``.

Addressing::

    to=ID          a live agent (starting, running, paused, stopping or backoff) or operator session
    to_name=NAME   a registered name, else the spawn name of a live agent

Names are registered with ``ipc.register``; one per principal (registering again replaces the
old one), unique among live principals, and a name cannot shadow another live agent's spawn name.
A name is released when its agent's process exits (a restarted agent registers again) or its
operator session closes. An agent's mailbox outlives its process while the agent waits to
restart (``backoff``), and is dropped once the agent settles (``exited``/``failed``) or is
removed; an operator's mailbox goes with its session.

Bounds: a message is at most :data:`MAX_MESSAGE_BYTES` msgpack-encoded (``quota.exceeded``); a
mailbox holds at most :data:`MAILBOX_MESSAGES` messages and its *recipient's*
``[limits].mailbox_bytes`` bytes (the ``mailbox_bytes_of`` hook; :data:`MAILBOX_BYTES` without
one), beyond which a send fails with ``ipc.mailbox_full`` (details name the ``limit``) and
delivers nothing. Messages wait msgpack-encoded, so the bytes counted are the bytes held (a
decoded message can take many times its encoded size). Every delivery emits
``MESSAGE_RECEIVED`` to the recipient alone.

A message is encoded once, by its sender: when the request carries it as the SDK lays it out,
the send keeps those very bytes (``encoded``, a view of the request's frame) and a receive's
reply splices them in (:meth:`Message.packed`, :func:`clove.wire.pack_spliced`); the kernel
decodes it only to check it, as it checks every request.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol

from clove import wire
from clove.errors import Conflict, InvalidArguments, MailboxFull, NotFound, QuotaExceeded
from clove.kernel.core.agents import TERMINAL
from clove.kernel.core.deferred import Deferred
from clove.kernel.services.mailbox import Mailbox, Message

if TYPE_CHECKING:
    from clove.kernel.core.agents import Agent
    from clove.kernel.core.loop import Loop
    from clove.kernel.core.sessions import OperatorSession
    from clove.kernel.services.host import ServiceHost, ServiceRegistry

MAX_MESSAGE_BYTES: Final = 256 * 1024
MAILBOX_MESSAGES: Final = 1000
MAILBOX_BYTES: Final = 16 * 1024 * 1024
MAX_WAIT: Final = 300.0
_NAME: Final = re.compile(r"[A-Za-z0-9_.:@/\-]{1,128}")

Emit = Callable[..., Any]


class Principals(Protocol):
    """Who exists: the kernel's agent table and operator sessions (a fake in unit tests)."""

    def is_live(self, principal_id: int) -> bool:
        """A non-terminal agent or an open operator session."""

    def live_agents(self) -> Iterable[int]:
        """Ids of every non-terminal agent."""

    def live_agent_named(self, name: str) -> int | None:
        """The id of the live agent with this spawn name."""

    def agent_name(self, principal_id: int) -> str | None:
        """An agent's spawn name (``None`` for operators)."""


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArguments(
            f"names are 1-128 of [A-Za-z0-9_.:@/-], got {name!r}", details={"argument": "name"}
        )
    return name


class MessagingService:
    """Names and mailboxes. Nothing here blocks: a blocking receive is a :class:`Deferred`
    resolved on arrival or by a loop timer.

    :param principals: who is alive and what the agents are called.
    :param emit: ``EventBus.emit``-shaped; receives ``MESSAGE_RECEIVED``.
    :param loop: for receive timeouts (``None``: receives never block).
    """

    def __init__(
        self,
        principals: Principals,
        *,
        emit: Emit | None = None,
        loop: Loop | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        mailbox_messages: int = MAILBOX_MESSAGES,
        mailbox_bytes: int = MAILBOX_BYTES,
        mailbox_bytes_of: Callable[[int], int] | None = None,
    ) -> None:
        """:param mailbox_bytes_of: a recipient's byte bound (its ``[limits].mailbox_bytes``);
        without it every mailbox has ``mailbox_bytes``."""
        self.principals = principals
        self.emit = emit
        self.loop = loop
        self.clock = clock
        self.max_message_bytes = max_message_bytes
        self.mailbox_messages = mailbox_messages
        self.mailbox_bytes = mailbox_bytes
        self.mailbox_bytes_of = mailbox_bytes_of
        self._names: dict[str, int] = {}
        self._name_of: dict[int, str] = {}
        self._boxes: dict[int, Mailbox] = {}
        self.delivered = 0

    # ---- names -------------------------------------------------------------------------------


    def held(self) -> dict[str, int]:
        """What the service holds now (registered names, mailboxes, queued messages and their
        bytes), for leak checks and ``kernel.info``."""
        boxes = self._boxes.values()
        return {
            "names": len(self._names),
            "mailboxes": len(self._boxes),
            "queued_messages": sum(len(b.queue) for b in boxes),
            "mailbox_bytes": sum(b.bytes for b in boxes),
        }

    def held_by(self, principal_id: int) -> dict[str, int]:
        """What waits in one principal's mailbox: ``{queued_messages, mailbox_bytes}``."""
        box = self._boxes.get(principal_id)
        return {"queued_messages": len(box.queue) if box else 0, "mailbox_bytes": box.bytes if box else 0}

    def register(self, principal_id: int, name: str) -> str:
        """Give ``principal_id`` the name ``name`` (replacing its previous one).

        :raises Conflict: another live principal holds the name, or it is another live agent's
            spawn name.
        """
        check_name(name)
        holder = self._names.get(name)
        if holder is not None and holder != principal_id:
            raise Conflict(
                f"the name {name!r} is registered by {holder}", details={"name": name, "holder": holder}
            )
        agent = self.principals.live_agent_named(name)
        if agent is not None and agent != principal_id:
            raise Conflict(
                f"{name!r} is the name of live agent {agent}", details={"name": name, "holder": agent}
            )
        self.release_names(principal_id)
        self._names[name] = principal_id
        self._name_of[principal_id] = name
        self._boxes.setdefault(principal_id, Mailbox())  # a named operator gets broadcasts too
        return name

    def registered_name(self, principal_id: int) -> str | None:
        return self._name_of.get(principal_id)

    def display_name(self, principal_id: int) -> str | None:
        """What recipients see as ``from_name``: the registered name, else the spawn name."""
        return self._name_of.get(principal_id) or self.principals.agent_name(principal_id)

    def release_names(self, principal_id: int) -> None:
        name = self._name_of.pop(principal_id, None)
        if name is not None and self._names.get(name) == principal_id:
            del self._names[name]

    def resolve(self, to: int | None, to_name: str | None) -> int:
        """The live principal a send is addressed to.

        :raises InvalidArguments: neither or both of ``to`` and ``to_name``.
        :raises NotFound: no live principal by that id or name.
        """
        if (to is None) == (to_name is None):
            raise InvalidArguments("give exactly one of 'to' and 'to_name'", details={"argument": "to"})
        if to_name is None:
            if to is None or not self.principals.is_live(to):
                raise NotFound(f"no live agent or operator session with id {to}", details={"to": to})
            return to
        found = self._names.get(to_name)
        if found is None:
            found = self.principals.live_agent_named(to_name)
        if found is None or not self.principals.is_live(found):
            raise NotFound(f"no live agent or operator named {to_name!r}", details={"to_name": to_name})
        return found

    # ---- delivery ----------------------------------------------------------------------------

    def encode(self, message: Any, encoded: bytes | memoryview | None = None) -> bytes | memoryview:
        """The message msgpack-encoded, as it waits in mailboxes: ``encoded`` when the caller
        has the sender's own encoding of it, else encoded here.

        :raises QuotaExceeded: above the message size bound.
        """
        payload = encoded if encoded is not None else wire.pack(message)
        size = len(payload)
        if size > self.max_message_bytes:
            raise QuotaExceeded(
                f"message is {size} bytes encoded; the limit is {self.max_message_bytes}",
                details={"size": size, "max_bytes": self.max_message_bytes},
            )
        return payload

    def encoded_size(self, message: Any) -> int:
        """:raises QuotaExceeded: above the message size bound."""
        return len(self.encode(message))

    def send(self, sender: int, recipient: int, message: dict[str, Any], *, encoded: bytes | memoryview | None = None) -> None:
        """Queue ``message`` for ``recipient`` (already resolved to a live principal).

        :param encoded: the sender's own encoding of ``message``, kept as it is.
        :raises QuotaExceeded: the message is too large.
        :raises MailboxFull: the recipient's mailbox is at its bound; nothing was queued.
        """
        payload = self.encode(message, encoded)
        self._deliver(Message(sender, self.display_name(sender), payload, self.clock()), recipient)
        self._boxes.setdefault(sender, Mailbox())  # so a sending operator gets broadcasts (and replies)

    def broadcast(
        self, sender: int, message: dict[str, Any], *, include_self: bool = False, encoded: bytes | memoryview | None = None
    ) -> tuple[list[int], list[int]]:
        """Queue ``message`` for every live agent and every operator session that has a
        mailbox. Returns ``(delivered, full)``: recipients reached and those skipped as full.

        :raises QuotaExceeded: the message is too large (nothing is delivered).
        """
        msg = Message(sender, self.display_name(sender), self.encode(message, encoded), self.clock())  # one copy for all
        recipients = dict.fromkeys(self.principals.live_agents())
        recipients.update(dict.fromkeys(p for p in self._boxes if self.principals.is_live(p)))
        if include_self:
            recipients[sender] = None
        else:
            recipients.pop(sender, None)
        delivered, full = [], []
        for recipient in recipients:
            try:
                self._deliver(msg, recipient)
            except MailboxFull:
                full.append(recipient)
            else:
                delivered.append(recipient)
        return delivered, full

    def _deliver(self, msg: Message, recipient: int) -> None:
        box = self._boxes.setdefault(recipient, Mailbox())
        max_bytes = self.mailbox_bytes_of(recipient) if self.mailbox_bytes_of is not None else self.mailbox_bytes
        full_count = len(box.queue) >= self.mailbox_messages
        if full_count or box.bytes + msg.size > max_bytes:
            raise MailboxFull(
                f"the mailbox of {recipient} is full ({len(box.queue)} messages, {box.bytes} bytes; "
                f"this message is {msg.size} bytes, the bound {max_bytes})",
                details={"to": recipient, "limit": "mailbox_messages" if full_count else "mailbox_bytes",
                         "messages": len(box.queue), "bytes": box.bytes, "size": msg.size,
                         "max_messages": self.mailbox_messages, "max_bytes": max_bytes},
            )  # fmt: skip
        box.queue.append(msg)
        box.bytes += msg.size
        self.delivered += 1
        self._answer(box)  # a waiting receive first: its reply is what the sender is waiting on
        if self.emit is not None:
            self.emit("MESSAGE_RECEIVED", {"from_id": msg.from_id, "from_name": msg.from_name},
                      source_agent_id=msg.from_id, targets=[recipient])  # fmt: skip

    # ---- receiving ---------------------------------------------------------------------------

    def receive(self, principal_id: int, max_messages: int) -> list[dict[str, Any]]:
        """Up to ``max_messages`` messages, oldest first, decoded."""
        now = self.clock()
        return [m.to_wire(now) for m in self.take(principal_id, max_messages)]

    def take(self, principal_id: int, max_messages: int) -> list[Message]:
        """Up to ``max_messages`` messages, oldest first, still encoded (:meth:`Message.packed`)."""
        box = self._boxes.get(principal_id)
        if box is None:
            self._boxes[principal_id] = Mailbox()  # an operator that receives gets broadcasts too
            return []
        return box.take(max_messages)

    def wait(self, principal_id: int, max_messages: int, timeout: float, deferred: Deferred, *, encoded: bool = False) -> None:
        """Resolve ``deferred`` with messages as soon as there are some, or with none after
        ``timeout`` seconds. One waiter per principal: a newer wait answers the older empty.

        :param encoded: resolve with :class:`Message` objects (:meth:`take`), not decoded dicts.
        """
        box = self._boxes.setdefault(principal_id, Mailbox())
        if box.queue or timeout <= 0 or self.loop is None:
            deferred.resolve(self.take(principal_id, max_messages) if encoded else self.receive(principal_id, max_messages))
            return
        if not encoded:  # the parked read gets Message objects: decode them for this caller
            decoded, deferred = deferred, Deferred()
            deferred.bind(lambda messages, _err: decoded.resolve([m.to_wire(self.clock()) for m in messages]))
        box.wait.park(self.loop, deferred, max_messages, min(timeout, MAX_WAIT))

    def _answer(self, box: Mailbox) -> None:
        if box.wait.parked:
            box.wait.answer(box.take)

    def pending(self, principal_id: int) -> int:
        box = self._boxes.get(principal_id)
        return len(box.queue) if box else 0

    # ---- lifetimes ---------------------------------------------------------------------------

    def process_gone(self, principal_id: int) -> None:
        """The agent's process exited: its names go, a pending receive is answered (to nobody),
        and its mailbox stays for a restart."""
        self.release_names(principal_id)
        box = self._boxes.get(principal_id)
        if box is not None:
            box.wait.cancel()

    def drop(self, principal_id: int) -> None:
        """Forget a principal for good: names, mailbox and pending receive."""
        self.release_names(principal_id)
        box = self._boxes.pop(principal_id, None)
        if box is not None:
            box.wait.cancel()

    def close(self) -> None:
        for principal_id in list(self._boxes):
            self.drop(principal_id)
        self._names.clear()
        self._name_of.clear()

    # ---- kernel hooks ------------------------------------------------------------------------

    def on_lifecycle(self, event_type: str, agent: Agent, details: dict[str, Any]) -> None:
        if event_type == "agent.exited":
            self.process_gone(agent.id)
        if event_type == "agent.removed" or (event_type == "agent.state" and agent.state in TERMINAL):
            self.drop(agent.id)

    def on_session_closed(self, session: OperatorSession) -> None:
        self.drop(session.id)


class KernelPrincipals:
    """:class:`Principals` over the kernel's agent table and operator sessions."""

    def __init__(self, kernel: ServiceHost) -> None:
        self.kernel = kernel

    def is_live(self, principal_id: int) -> bool:
        agent = self.kernel.supervisor.table.get(principal_id)
        if agent is not None:
            return agent.state not in TERMINAL
        return self.kernel.sessions.get(principal_id) is not None

    def live_agents(self) -> list[int]:
        return [a.id for a in self.kernel.supervisor.table if a.state not in TERMINAL]

    def live_agent_named(self, name: str) -> int | None:
        table = self.kernel.supervisor.table
        if not table.name_in_use(name):
            return None
        return table.find(name=name).id

    def agent_name(self, principal_id: int) -> str | None:
        agent = self.kernel.supervisor.table.get(principal_id)
        return agent.name if agent is not None else None


def attach(kernel: ServiceRegistry) -> None:
    """Build the messaging service, set ``kernel.messaging`` and hook it to agent lifecycles
    and operator sessions."""
    principals = KernelPrincipals(kernel)
    limits = kernel.config.limits

    def mailbox_bytes_of(principal_id: int) -> int:
        return limits.for_agent(principals.agent_name(principal_id)).mailbox_bytes  # an operator: the defaults

    service = MessagingService(principals, emit=kernel.events.emit, loop=kernel.loop, mailbox_bytes_of=mailbox_bytes_of)
    kernel.messaging = service
    kernel.supervisor.listeners.append(service.on_lifecycle)
    kernel.sessions.on_close.append(service.on_session_closed)
    kernel.on_shutdown.append(service.close)
