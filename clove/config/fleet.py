"""The ``[fleet]`` table: how a board joins a fleet over NATS JetStream (docs/fleet.md).

::

    [fleet]
    servers = ["nats://hub.example:4222"]
    board = "press-07"                       # default: the host name
    user = "press-07"                        # static user of the hub's config ...
    password_file = "/etc/clove/fleet.pass"  # ... and its password, or:
    credentials = "/etc/clove/press-07.creds"  # a NATS .creds file (JWT accounts)
    tls_ca = "/etc/clove/hub-ca.pem"
    subject_prefix = "clove"
    heartbeat = 5.0
    lost_after = 15.0
    command_window = 30.0                    # seconds either side of this board's clock

    [fleet.operators.site-team]              # who may command this board (docs/fleet.md, "Commands")
    public_key = "base64 of 32 bytes"        # `clove fleet keygen` prints the line
    may = ["estop", "estop.release"]

Without the table the kernel has no fleet link at all. Files are taken relative to the config
file and must exist when the config loads; secrets are read only when the link connects.
"""

from __future__ import annotations

import base64
import binascii
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from clove.config.values import Table

__all__ = ["COMMANDS", "DEFAULT_PREFIX", "FleetOperator", "FleetSection", "parse_fleet", "parse_operators", "valid_token"]

DEFAULT_PREFIX: Final = "clove"
#: What a signed fleet command may ask of a board; an operator's ``may`` lists take these names.
#: ``logs`` reads an agent's log; ``deploy`` is not a command but the right to set this board's
#: desired state (docs/fleet.md, "Deploy").
COMMANDS: Final = frozenset({"estop", "estop.release", "kill", "pause", "resume", "trading.halt", "logs", "deploy"})
#: The most operator keys one board holds (each is checked per command by id, so this is a
#: bound on the config, not on the work).
MAX_OPERATORS: Final = 256
#: A board name and the subject prefix are single NATS subject tokens (and KV keys).
_TOKEN_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_URL_RE: Final = re.compile(r"^(nats|tls)://[^\s/]+$")


def valid_token(value: str) -> bool:
    """A board name or subject prefix: 1-63 of ``[A-Za-z0-9_-]``, starting alphanumeric (no dots
    or wildcards, so it is exactly one subject token and a valid KV key)."""
    return bool(_TOKEN_RE.fullmatch(value))


def _default_board() -> str:
    name = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0])[:63].strip("-_")
    return name if name and valid_token(name) else "board"


@dataclass(frozen=True, slots=True)
class FleetOperator:
    """One ``[fleet.operators.NAME]`` table: an operator's ed25519 public key (the 32 raw bytes)
    and the commands it may give this board. :mod:`clove.fleet.commands` makes the key of it."""

    name: str
    public_key: bytes
    may: frozenset[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetSection:
    """:param heartbeat: seconds between inventory updates (each is also the board's heartbeat).
    :param lost_after: a reader shows a board as ``lost`` when its last heartbeat is older."""

    servers: tuple[str, ...]
    board: str
    user: str | None = None
    password_file: str | None = None
    credentials: str | None = None
    tls_ca: str | None = None
    subject_prefix: str = DEFAULT_PREFIX
    heartbeat: float = 5.0
    lost_after: float = 15.0
    #: Seconds either side of the board's clock within which a signed command is current.
    command_window: float = 30.0
    operators: tuple[FleetOperator, ...] = ()


def parse_operators(t: Table) -> tuple[FleetOperator, ...]:
    """``[fleet.operators.NAME]`` tables; errors name the file, ``[fleet]`` and the key
    (``operators.NAME.public_key``).

    :raises ConfigError:
    """
    table = t.get("operators", dict, {})
    if len(table) > MAX_OPERATORS:
        raise t.fail("operators", f"at most {MAX_OPERATORS} operator keys")
    known = ", ".join(sorted(COMMANDS))
    operators: list[FleetOperator] = []
    for name, entry in table.items():
        where = f"operators.{name}"
        if not isinstance(entry, Mapping):
            raise t.fail(where, "expected a table with public_key and may")
        unknown = set(entry) - {"public_key", "may"}
        if unknown:
            raise t.fail(f"{where}.{sorted(unknown)[0]}", "unknown key (public_key, may)")
        text, may = entry.get("public_key"), entry.get("may")
        try:
            raw = base64.b64decode(text, validate=True) if isinstance(text, str) else b""
        except (ValueError, binascii.Error):
            raw = b""
        if len(raw) != 32:
            raise t.fail(f"{where}.public_key", "expected base64 of a 32-byte ed25519 public key (clove fleet keygen prints it)")
        if not isinstance(may, list) or not may or not all(isinstance(m, str) for m in may):
            raise t.fail(f"{where}.may", f"expected a non-empty list of commands ({known})")
        bad = [m for m in may if m not in COMMANDS]
        if bad:
            raise t.fail(f"{where}.may", f"unknown command {bad[0]!r} ({known})")
        operators.append(FleetOperator(str(name), raw, frozenset(may)))
    if len({o.public_key for o in operators}) != len(operators):
        raise t.fail("operators", "the same public key is listed twice")
    return tuple(operators)


def _file(t: Table, key: str, base_dir: Path) -> str | None:
    value = t.get(key, str, None)
    if value is None:
        return None
    path = (base_dir / value).resolve()
    if not path.is_file():
        raise t.fail(key, f"no such file: {path}")
    return str(path)


def parse_fleet(source: str, raw: dict[str, Any], base_dir: Path) -> FleetSection | None:
    """The ``[fleet]`` table, or ``None`` when the config has none.

    :raises ConfigError: naming the file, ``[fleet]`` and the key.
    """
    if "fleet" not in raw:
        return None
    t = Table.top(source, raw, "fleet")
    servers = t.get("servers", list, None)
    if not servers:
        raise t.fail("servers", "required: a non-empty array of nats:// URLs")
    for url in servers:
        if not isinstance(url, str) or not _URL_RE.match(url):
            raise t.fail("servers", f"expected URLs like 'nats://host:4222', got {url!r}")
    board = t.get("board", str, None) or _default_board()
    if not valid_token(board):
        raise t.fail("board", f"1-63 of [A-Za-z0-9_-], starting alphanumeric; got {board!r}")
    prefix = t.get("subject_prefix", str, DEFAULT_PREFIX)
    if not valid_token(prefix):
        raise t.fail("subject_prefix", f"one subject token of [A-Za-z0-9_-]; got {prefix!r}")
    user = t.get("user", str, None)
    section = FleetSection(
        servers=tuple(servers),
        board=board,
        user=user,
        password_file=_file(t, "password_file", base_dir),
        credentials=_file(t, "credentials", base_dir),
        tls_ca=_file(t, "tls_ca", base_dir),
        subject_prefix=prefix,
        heartbeat=t.positive("heartbeat", float, 5.0),
        lost_after=t.positive("lost_after", float, 15.0),
        command_window=t.positive("command_window", float, 30.0),
        operators=parse_operators(t),
    )
    if section.credentials is not None and user is not None:
        raise t.fail("credentials", "give either credentials (a .creds file) or user/password_file, not both")
    if section.password_file is not None and user is None:
        raise t.fail("password_file", "needs user")
    if section.lost_after <= section.heartbeat:
        raise t.fail("lost_after", f"must be longer than heartbeat ({section.heartbeat} s), got {section.lost_after}")
    t.done()
    return section
