"""Where the console listens: ``--listen`` parsed, and whether it stays on this machine."""

from __future__ import annotations

from dataclasses import dataclass

from clove.cli.console.auth import is_loopback

DEFAULT_PORT = 8080


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def parse_listen(text: str) -> Listen:
    """``8080``, ``127.0.0.1:8080``, ``[::1]:8080``, ``localhost`` or ``0.0.0.0:8080``.

    :raises ValueError: not a host and port.
    """
    text = text.strip()
    host, port = "127.0.0.1", str(DEFAULT_PORT)
    if text.isdigit():
        port = text
    elif text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"expected [IPv6]:PORT, got {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"expected [IPv6]:PORT, got {text!r}")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif text.count(":") > 1:
        raise ValueError(f"write an IPv6 address in brackets: [{text}]:{DEFAULT_PORT}")
    elif text:
        host = text
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"bad port {port!r}")
    if not host:
        raise ValueError(f"no host in {text!r}")
    return Listen(host, int(port))
