"""Signed fleet commands: an operator signs, each board decides (docs/fleet.md, "Commands").

The broker's permissions decide who may publish where; they are not what authorizes an e-stop
or a deploy. Every fleet command is a canonical JSON payload signed with its operator's own
ed25519 key, and each board holds the public keys it accepts and what each may command::

    [fleet.operators.site-team]
    public_key = "base64 of the 32-byte ed25519 public key"
    may = ["estop", "estop.release"]

    [fleet.operators.release]
    public_key = "..."
    may = ["kill", "pause", "resume"]

A board refuses a command whose key it does not know, whose signature does not verify, that is
addressed to another board, that the key may not give, that was issued outside the time window
(``window`` seconds either side of the board's clock), or whose nonce it has already seen inside
that window (a replay: :mod:`clove.fleet.nonces`, which keeps the accepted nonces in the
board's state dir so a restart does not forget them). Verdicts carry a stable code for the
journal, with the key's id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from clove.config.fleet import COMMANDS, FleetOperator
from clove.fleet.nonces import SeenNonces

__all__ = [
    "COMMANDS", "CommandPolicy", "OperatorKey", "SignedCommand", "Verdict", "generate_key", "key_id",
    "load_private_key", "operator_keys", "public_key_text", "sign",
]  # fmt: skip

VERSION: Final = 1
#: Seconds either side of the board's clock within which a command is current.
DEFAULT_WINDOW: Final = 30.0
#: Nonces remembered at most (each for ``window`` seconds); past it the oldest are forgotten
#: early, and a command older than the oldest remembered one is refused as possibly replayed.
MAX_NONCES: Final = 100_000
MAX_PAYLOAD: Final = 1 << 20
ALL_BOARDS: Final = "*"


def key_id(public: Ed25519PublicKey) -> str:
    """A short, stable name for a key in journals: the first 16 hex digits of its SHA-256."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_text(public: Ed25519PublicKey) -> str:
    """The form a board's config takes: base64 of the 32 raw bytes."""
    return base64.b64encode(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def generate_key(path: Path) -> Ed25519PrivateKey:
    """A new operator key, written to ``path`` as PKCS#8 PEM readable by its owner only."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return private


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """:raises ValueError: naming the file, when it is not an ed25519 private key in PEM."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a readable PEM private key ({err})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an ed25519 key")
    return key


def _canonical(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class SignedCommand:
    """What travels: the exact payload bytes and their signature."""

    payload: bytes
    signature: bytes

    def to_wire(self) -> bytes:
        return _canonical({"payload": self.payload.decode(), "sig": base64.b64encode(self.signature).decode()})

    @classmethod
    def from_wire(cls, data: bytes) -> SignedCommand:
        """:raises ValueError: on anything but ``{"payload": str, "sig": base64}``."""
        if len(data) > MAX_PAYLOAD:
            raise ValueError(f"a command is at most {MAX_PAYLOAD} bytes")
        try:
            outer = json.loads(data)
            payload, sig = outer["payload"], outer["sig"]
            if not isinstance(payload, str) or not isinstance(sig, str):
                raise TypeError("payload and sig must be strings")
            return cls(payload.encode(), base64.b64decode(sig, validate=True))
        except (ValueError, TypeError, KeyError, binascii.Error) as err:
            raise ValueError(f"not a signed command: {err}") from None


def sign(
    private: Ed25519PrivateKey, command: str, *, board: str = ALL_BOARDS, args: Mapping[str, Any] | None = None,
    now: float | None = None, nonce: str | None = None,
) -> SignedCommand:  # fmt: skip
    """Sign ``command`` for ``board`` (``*``: every board that accepts the key)."""
    if command not in COMMANDS:
        raise ValueError(f"unknown fleet command {command!r} (one of {', '.join(sorted(COMMANDS))})")
    payload = {
        "v": VERSION,
        "key_id": key_id(private.public_key()),
        "board": board,
        "command": command,
        "args": dict(args or {}),
        "issued_at": time.time() if now is None else now,
        "nonce": nonce or secrets.token_hex(16),
    }
    data = _canonical(payload)
    return SignedCommand(data, private.sign(data))


@dataclass(frozen=True, slots=True)
class OperatorKey:
    name: str
    public: Ed25519PublicKey
    may: frozenset[str]

    @property
    def id(self) -> str:
        return key_id(self.public)


@dataclass(frozen=True, slots=True)
class Verdict:
    """``accepted`` with the command, or a refusal ``code`` and ``reason``; ``key_id`` and
    ``operator`` whenever the key was known, for the journal."""

    accepted: bool
    code: str
    reason: str
    key_id: str | None = None
    operator: str | None = None
    command: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    nonce: str | None = None


def operator_keys(operators: Iterable[FleetOperator]) -> tuple[OperatorKey, ...]:
    """The keys of a board's ``[fleet.operators.*]`` tables (validated by the config loader).

    :raises ValueError: naming the operator, when its bytes are not an ed25519 public key.
    """
    keys = []
    for op in operators:
        try:
            keys.append(OperatorKey(op.name, Ed25519PublicKey.from_public_bytes(op.public_key), op.may))
        except ValueError as err:
            raise ValueError(f"[fleet.operators.{op.name}].public_key: not an ed25519 public key ({err})") from None
    return tuple(keys)


class CommandPolicy:
    """One board's decision on each signed command. Not thread-safe: one caller (the loop).

    :param nonce_file: where accepted nonces are kept across restarts (the board's
        ``<state dir>/fleet/nonces.jsonl``); ``None``: in memory only. Its start-up problem, if
        any, is :attr:`nonces` ``.problem`` (for the journal).
    """

    def __init__(
        self, board: str, keys: Iterable[OperatorKey], *, window: float = DEFAULT_WINDOW,
        clock: Callable[[], float] = time.time, max_nonces: int = MAX_NONCES, nonce_file: Path | None = None,
    ) -> None:  # fmt: skip
        self.board = board
        self.keys = {k.id: k for k in keys}
        self.window = window
        self.clock = clock
        self.max_nonces = max_nonces
        self.nonces = SeenNonces(window=window, max_nonces=max_nonces, path=nonce_file, clock=clock)
        self._seen = self.nonces.entries  # nonce → issued_at, oldest first (the same dict)

    def decide(self, signed: SignedCommand) -> Verdict:
        try:
            payload = json.loads(signed.payload)
        except ValueError:
            return Verdict(False, "fleet.malformed", "the payload is not JSON")
        if not isinstance(payload, dict) or payload.get("v") != VERSION:
            return Verdict(False, "fleet.malformed", f"not a version {VERSION} command")
        kid = payload.get("key_id")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            shown = str(kid)[:64]  # whatever the sender wrote: the journal keeps a bounded piece
            return Verdict(False, "fleet.unknown_key", f"key {shown!r} is not one this board accepts", key_id=shown)
        known: dict[str, Any] = {"key_id": key.id, "operator": key.name}
        try:
            key.public.verify(signed.signature, signed.payload)
        except InvalidSignature:
            return Verdict(False, "fleet.bad_signature", "the signature does not verify with the key", **known)
        command, board, args = payload.get("command"), payload.get("board"), payload.get("args", {})
        issued, nonce = payload.get("issued_at"), payload.get("nonce")
        if not isinstance(command, str) or not isinstance(board, str) or not isinstance(args, dict) \
                or not isinstance(issued, int | float) or not isinstance(nonce, str) or not 16 <= len(nonce) <= 128:  # fmt: skip
            return Verdict(False, "fleet.malformed", "command, board, args, issued_at and nonce are required", **known)
        about: dict[str, Any] = {**known, "command": command, "args": args, "nonce": nonce}
        if board not in (self.board, ALL_BOARDS):
            return Verdict(False, "fleet.wrong_board", f"addressed to board {board!r}, this is {self.board!r}", **about)
        if command not in key.may:
            return Verdict(False, "fleet.not_allowed", f"key {key.name!r} may not give {command!r} (may: {', '.join(sorted(key.may))})", **about)
        now = self.clock()
        if abs(now - issued) > self.window:
            return Verdict(False, "fleet.stale", f"issued {now - issued:+.1f} s from this board's clock (window ±{self.window:g} s)", **about)
        replayed = self.nonces.refusal(nonce, issued, now)
        if replayed is not None:
            return Verdict(False, "fleet.replayed", replayed, **about)
        try:
            self.nonces.remember(nonce, issued)  # durable before the command acts
        except OSError as err:  # not recorded: a restart could accept it again, so it is refused
            return Verdict(False, "fleet.unavailable", f"cannot record the command's nonce: {err}", **about)
        return Verdict(True, "ok", "accepted", **about)
