"""MCP's stdio lines carried as Clove messages between an agent and one operator session.

``clove mcp`` gives an operator's desktop MCP client a sandboxed agent as its tool runtime: the
client talks stdio to the CLI, the CLI and the agent exchange the lines as messages through the
kernel (``ipc.send`` / ``ipc.recv``), and the agent's MCP server reads and writes them through a
pipe pair standing in for its stdin and stdout. The kernel sets every message's sender, so each
side takes lines only from its peer and ignores (and counts) anything else.

A line longer than :data:`CHUNK` bytes goes as several messages (``more: true`` on all but the
last), since a message has a size ceiling. A full mailbox is retried for up to
:data:`SEND_PATIENCE` seconds, then the link reports the peer gone.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Final

from clove_sdk.client import CloveClient
from clove_sdk.errors import CloveError

#: Bytes of one line per message (a message's ceiling is 256 KiB, JSON overhead included).
CHUNK: Final = 96 * 1024
#: The longest line either side accepts (a tool's output is bounded well below this).
MAX_LINE: Final = 8 << 20
SEND_PATIENCE: Final = 30.0
KEY: Final = "mcp"


class PeerGone(Exception):
    """The other side went away (its agent ended, its session closed) or stopped reading."""


class MessageLink:
    """Lines to and from one principal, over this client's messages.

    :param peer: the agent id or operator session id at the other end.
    """

    def __init__(self, client: CloveClient, peer: int) -> None:
        self.client = client
        self.peer = peer
        self.ignored = 0  # messages from anyone else, or not ours
        self._partial = b""

    def send_line(self, line: bytes) -> None:
        chunks = [line[i : i + CHUNK] for i in range(0, len(line), CHUNK)] or [b""]
        for n, chunk in enumerate(chunks):
            message: dict[str, Any] = {KEY: chunk.decode("utf-8", errors="replace")}
            if n < len(chunks) - 1:
                message["more"] = True
            self._send(message)

    def _send(self, message: dict[str, Any]) -> None:
        deadline = time.monotonic() + SEND_PATIENCE
        pause = 0.005
        while True:
            try:
                self.client.call("ipc.send", message=message, to=self.peer)
                return
            except CloveError as err:
                if err.code != "ipc.mailbox_full" or time.monotonic() > deadline:
                    raise PeerGone(f"{err.code}: {err.message}") from None
            time.sleep(pause)  # the peer has not read its mailbox yet: back off, then retry
            pause = min(pause * 2, 0.2)

    def receive_lines(self, timeout: float) -> list[bytes]:
        """Whole lines from the peer (waits up to ``timeout`` seconds for the first message)."""
        reply = self.client.call("ipc.recv", max_messages=64, timeout=timeout)
        lines: list[bytes] = []
        for item in reply.get("messages", []):
            body = item.get("message")
            if item.get("from_id") != self.peer or not isinstance(body, dict) or not isinstance(body.get(KEY), str):
                self.ignored += 1
                continue
            self._partial += body[KEY].encode("utf-8")
            if len(self._partial) > MAX_LINE:
                raise PeerGone(f"a line from {self.peer} is over {MAX_LINE} bytes")
            if not body.get("more"):
                lines.append(self._partial)
                self._partial = b""
        return lines


def bridge_stdio(client: CloveClient, peer: int) -> None:
    """Make fds 0 and 1 a pipe pair whose other ends are relayed to and from ``peer``; the
    caller then runs its stdio server as usual. Threads relay in both directions; when the peer
    is gone the server's stdin closes and it ends."""
    to_server_r, to_server_w = os.pipe()
    from_server_r, from_server_w = os.pipe()
    os.dup2(to_server_r, 0)
    os.dup2(from_server_w, 1)
    os.close(to_server_r)
    os.close(from_server_w)
    # Each direction has its own client (a socket is used by one thread only); both are this agent.
    inbound = MessageLink(client, peer)
    outbound = MessageLink(CloveClient(client.endpoint), peer)

    def relay_in() -> None:
        try:
            while True:
                for line in inbound.receive_lines(timeout=1.0):
                    os.write(to_server_w, line.rstrip(b"\n") + b"\n")
        except (PeerGone, CloveError, OSError):
            pass
        finally:
            os.close(to_server_w)  # the server sees end of input and stops

    def relay_out() -> None:
        with os.fdopen(from_server_r, "rb") as lines:
            try:
                for line in lines:
                    outbound.send_line(line.rstrip(b"\n"))
            except (PeerGone, CloveError):
                pass

    threading.Thread(target=relay_in, name="mcp-in", daemon=True).start()
    threading.Thread(target=relay_out, name="mcp-out", daemon=True).start()
