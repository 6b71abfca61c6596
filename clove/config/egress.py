"""Network egress in the config: an agent's ``egress`` rules and ``egress_private`` ranges, and
the kernel's ``[egress]`` table (static names, the proxy's per-agent limits). See docs/egress.md.

A rule is ``host`` or ``host:port``: ``api.example.com:443``, ``*.pypi.org`` (any subdomain of
pypi.org, not pypi.org itself), ``198.51.100.7:8080``. A rule without a port admits the default
ports, 80 and 443. The parsed rules travel to the egress proxy as their canonical text, which
:mod:`clove.egress.rules` reads back with the same grammar.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Final

from clove.config.values import Table, parse_size

__all__ = ["EgressSection", "parse_cidr", "parse_egress", "parse_rule", "parse_rules"]

#: The ports a rule without one admits.
DEFAULT_PORTS: Final = (80, 443)
#: The most rules (and private ranges) one agent may hold: each is matched per connection.
MAX_RULES: Final = 256
_LABEL: Final = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOST_RE: Final = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")


def parse_rule(text: object) -> str:
    """One rule → its canonical text (lower case; ``[v6]:port`` for an IPv6 literal).

    :raises ValueError: with a message fit for a user.
    """
    if not isinstance(text, str) or not text or len(text) > 300:
        raise ValueError(f"expected 'host', 'host:port' or '*.domain[:port]', got {text!r}")
    host, port = _split(text.strip().lower())
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port must be 1-65535")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is None and not _HOST_RE.fullmatch(host):
        raise ValueError(f"{text!r}: not a host name, '*.domain' or an IP address")
    if literal is not None and literal.version == 6:
        host = f"[{literal.compressed}]"
    elif literal is not None:
        host = literal.compressed
    return host if port is None else f"{host}:{port}"


def _split(text: str) -> tuple[str, int | None]:
    if text.startswith("["):  # [v6] or [v6]:port
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: unclosed '['")
        rest = text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected ':port' after ']'")
        return text[1:end], _port(text, rest[1:]) if rest else None
    if text.count(":") > 1:  # a bare IPv6 literal, no port
        return text, None
    host, sep, port = text.partition(":")
    return host, _port(text, port) if sep else None


def _port(text: str, port: str) -> int:
    if not port.isdigit():
        raise ValueError(f"{text!r}: port must be a number")
    return int(port)


def parse_rules(value: object) -> tuple[str, ...]:
    """A list of rules → their canonical texts.

    :raises ValueError: not a list of strings, too many, or a bad rule.
    """
    if not isinstance(value, list):
        raise ValueError(f"expected an array of 'host[:port]' strings, got {type(value).__name__}")
    if len(value) > MAX_RULES:
        raise ValueError(f"at most {MAX_RULES} rules, got {len(value)}")
    return tuple(dict.fromkeys(parse_rule(item) for item in value))


def parse_cidr(text: object) -> str:
    """``"10.1.0.0/16"``, ``"fd00::/8"`` or one address → the network's canonical text.

    :raises ValueError: with a message fit for a user.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a CIDR range like '10.0.0.0/8', got {text!r}")
    try:
        return ipaddress.ip_network(text.strip(), strict=False).compressed
    except ValueError as err:
        raise ValueError(f"{text!r}: {err}") from None


def parse_cidrs(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(f"expected an array of CIDR ranges, got {type(value).__name__}")
    if len(value) > MAX_RULES:
        raise ValueError(f"at most {MAX_RULES} ranges, got {len(value)}")
    return tuple(dict.fromkeys(parse_cidr(item) for item in value))


@dataclass(frozen=True, slots=True, kw_only=True)
class EgressLimits:
    """What one agent may do through the proxy. ``connect_rate``/``connect_burst``: new
    connections a second; ``connections``: open at once; ``bytes_per_second``/``bytes_burst``:
    both directions together, shaped (reads pause); ``bytes_budget``: total bytes for the kernel's
    life (``None``: no budget); ``header_bytes``: a request head; ``idle_timeout``: a connection
    with no byte either way is closed; ``connect_timeout``: to reach the upstream."""

    connections: int = 32
    connect_rate: float = 10.0
    connect_burst: int = 20
    bytes_per_second: int = 8 << 20
    bytes_burst: int = 1 << 20
    bytes_budget: int | None = None
    header_bytes: int = 16 << 10
    idle_timeout: float = 120.0
    connect_timeout: float = 10.0

    def to_wire(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True, kw_only=True)
class EgressSection:
    """``[egress]``: ``resolve`` maps names to addresses before DNS (like ``curl --resolve``);
    the limits apply to every agent; ``records`` bounds the proxy's unsent connection records;
    ``heartbeat_timeout``: a proxy silent that long is killed and restarted."""

    resolve: dict[str, str] = field(default_factory=dict)
    limits: EgressLimits = field(default_factory=EgressLimits)
    records: int = 10_000
    #: A proxy silent this long (it beats every second) is killed and restarted.
    heartbeat_timeout: float = 10.0


def parse_egress(source: str, raw: dict[str, Any]) -> EgressSection:
    """The ``[egress]`` table.

    :raises ConfigError: naming the file and key.
    """
    t = Table.top(source, raw, "egress")
    resolve_raw = t.get("resolve", dict, {})
    resolve: dict[str, str] = {}
    for name, address in resolve_raw.items():
        try:
            host = parse_rule(name)
            if ":" in host or host.startswith("*"):
                raise ValueError(f"{name!r}: a plain host name, no port or wildcard")
            resolve[host] = ipaddress.ip_address(address).compressed if isinstance(address, str) else _bad(address)
        except ValueError as err:
            raise t.fail("resolve", str(err)) from None
    budget = t.parsed("bytes_budget", parse_size, None)
    limits = EgressLimits(
        connections=t.positive("connections", int, 32),
        connect_rate=t.positive("connect_rate", float, 10.0),
        connect_burst=t.positive("connect_burst", int, 20),
        bytes_per_second=t.parsed("bytes_per_second", parse_size, 8 << 20),
        bytes_burst=t.parsed("bytes_burst", parse_size, 1 << 20),
        bytes_budget=budget,
        header_bytes=t.parsed("header_bytes", parse_size, 16 << 10),
        idle_timeout=t.positive("idle_timeout", float, 120.0),
        connect_timeout=t.positive("connect_timeout", float, 10.0),
    )
    if not 256 <= limits.header_bytes <= 1 << 20:
        raise t.fail("header_bytes", f"must be between 256 and 1M, got {limits.header_bytes}")
    if limits.bytes_burst < 64 << 10:
        raise t.fail("bytes_burst", f"must be at least 64K (one read), got {limits.bytes_burst}")
    section = EgressSection(
        resolve=resolve,
        limits=limits,
        records=t.positive("records", int, 10_000),
        heartbeat_timeout=t.positive("heartbeat_timeout", float, 10.0),
    )
    if section.heartbeat_timeout < 2.0:
        raise t.fail("heartbeat_timeout", f"must be at least 2 s (the proxy beats every second), got {section.heartbeat_timeout}")
    t.done()
    return section


def _bad(address: object) -> str:
    raise ValueError(f"expected an IP address string, got {address!r}")
