"""One agent's egress policy: which ``host:port`` it may name, and which addresses the proxy
may connect to on its behalf.

Rules arrive as the canonical texts :mod:`clove.config.egress` produced (``api.example.com:443``,
``*.pypi.org``, ``[2001:db8::1]:8443``). Two checks, in order:

1. :meth:`Policy.admits` — the name (and port) the agent asked for matches a rule;
2. :meth:`Policy.address_allowed` — each address that name resolves to is public, or inside one
   of the agent's ``egress_private`` ranges. The proxy connects to an address that passed, never
   to the name again, so DNS cannot answer differently between the check and the connect.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_PORTS", "Policy", "Rule", "address_class"]

DEFAULT_PORTS: Final = frozenset({80, 443})
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Rule:
    """``host`` is lower case, without brackets; ``wildcard``: it matches subdomains only."""

    host: str
    port: int | None
    wildcard: bool

    @classmethod
    def parse(cls, text: str) -> Rule:
        """Read back a canonical rule (the config validated it).

        :raises ValueError: not a canonical rule.
        """
        text = text.strip().lower()
        if text.startswith("["):
            end = text.index("]")
            host, rest = text[1:end], text[end + 1 :]
            port = int(rest[1:]) if rest.startswith(":") else None
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
            port = int(port_text)
        else:
            host, port = text, None
        if not host or (port is not None and not 1 <= port <= 65535):
            raise ValueError(f"not an egress rule: {text!r}")
        wildcard = host.startswith("*.")
        return cls(host[2:] if wildcard else host, port, wildcard)

    def matches(self, host: str, port: int) -> bool:
        if port not in ((self.port,) if self.port is not None else DEFAULT_PORTS):
            return False
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host

    def __str__(self) -> str:
        host = f"*.{self.host}" if self.wildcard else (f"[{self.host}]" if ":" in self.host else self.host)
        return host if self.port is None else f"{host}:{self.port}"


def address_class(ip: IPAddress) -> str | None:
    """Why the proxy refuses ``ip`` by default (``"loopback"``, ``"private"``, ...), or ``None``
    for a public unicast address. IPv4-mapped IPv6 addresses are judged as the IPv4 address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for name, flag in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if flag:
            return name
    return None if ip.is_global else "private"


def normalize_host(host: str) -> str:
    """Lower case, no trailing dot, no IPv6 brackets; an IP literal in its compressed form."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host


class Policy:
    """An agent's rules and private ranges, as sent by the kernel."""

    __slots__ = ("rules", "private")

    def __init__(self, rules: list[str] | tuple[str, ...], private: list[str] | tuple[str, ...] = ()) -> None:
        self.rules = tuple(Rule.parse(text) for text in rules)
        self.private: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(text, strict=False) for text in private)

    def admits(self, host: str, port: int) -> bool:
        """Whether a rule matches ``host`` (normalized, see :func:`normalize_host`) and ``port``."""
        return any(rule.matches(host, port) for rule in self.rules)

    def address_allowed(self, ip: IPAddress) -> str | None:
        """``None`` when the proxy may connect to ``ip``, else the class that refuses it."""
        why = address_class(ip)
        if why is None:
            return None
        plain = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None else ip
        if any(plain.version == net.version and plain in net for net in self.private):
            return None
        return why

    def describe(self) -> str:
        """The rules as a model reads them in a refusal."""
        return ", ".join(str(rule) for rule in self.rules) or "none"
