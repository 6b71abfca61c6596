"""Loopback relays: TCP ports on ``127.0.0.1`` inside an agent's own network namespace that lead
to Unix sockets the kernel's services listen on in the agent's channel directory.

An agent in its own network namespace reaches nothing by TCP. Unchanged code that speaks HTTP
(an ``openai`` client, ``requests`` through ``HTTP(S)_PROXY``) still needs a TCP address, so the
sandbox's pid 1 listens on these ports inside the namespace and relays each connection to the
service's Unix socket. The socket's path names the agent (like its ``kernel.sock``), so the
service knows who is calling without trusting anything the agent sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: The kernel's egress proxy (HTTP CONNECT and plain HTTP), as ``HTTP(S)_PROXY``.
EGRESS_PORT: Final = 3128
EGRESS_SOCKET: Final = "egress.sock"
#: The LLM gateway's OpenAI-compatible endpoint, as ``OPENAI_BASE_URL``.
LLM_PORT: Final = 8199
LLM_SOCKET: Final = "llm.sock"
#: ``OPENAI_API_KEY`` inside the sandbox: clients insist on one; the real key stays with the
#: gateway (it names the gateway so that a log showing it explains itself).
LLM_KEY_PLACEHOLDER: Final = "clove-llm-gateway-holds-the-key"


@dataclass(frozen=True, slots=True)
class Relay:
    """``127.0.0.1:port`` in the agent's namespace → the Unix socket at ``path`` (a path the
    sandbox sees: inside the agent's channel directory, which is bound in at its own path)."""

    port: int
    path: str

    def to_wire(self) -> dict[str, object]:
        return {"port": self.port, "path": self.path}

    @classmethod
    def from_wire(cls, data: object) -> Relay:
        """:raises ValueError: not a relay (a port in 1..65535 and an absolute path)."""
        if not isinstance(data, dict):
            raise ValueError(f"not a relay: {data!r}")
        port, path = data.get("port"), data.get("path")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ValueError(f"a relay's port must be in 1..65535, got {port!r}")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"a relay's path must be absolute, got {path!r}")
        return cls(port=port, path=path)


#: Concurrent connections one relay carries; the next one is reset as soon as it is accepted.
#: An HTTP client pools a handful (httpx: 10 per host by default), pip a few more.
MAX_CONNECTIONS: Final = 32
#: Bytes one connection holds per direction while the other end is slow to read; the relay
#: stops reading from a side until its buffer drains (backpressure, not growth). Worst case per
#: relay: ``MAX_CONNECTIONS * 2 * BUFFER_BYTES`` (4 MiB), charged to the agent's cgroup.
BUFFER_BYTES: Final = 64 << 10
#: The listen backlog: connections the kernel queues before the relay accepts them.
BACKLOG: Final = 16
