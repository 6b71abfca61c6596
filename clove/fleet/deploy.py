"""Fleet deploys: a desired state per board, signed by an operator, decided by the board
(docs/fleet.md, "Deploy").

A deploy is not a command that passes: it is *durable*. ``clove fleet deploy`` puts, for each
board, the agents it should run under the key ``desired.<board>`` of the bucket
``<prefix>_deploy``; the board reads the newest value whenever it changes and whenever it
(re)connects, so a board that was offline reconciles when it comes back. The board reports what
it did under ``status.<board>`` (and in its journal).

The value is a :class:`~clove.fleet.commands.SignedCommand` (the canonical payload bytes and
their ed25519 signature) whose payload is::

    {"v": 1, "kind": "clove.deploy", "key_id": ..., "board": "press-07", "generation": 7,
     "issued_at": 1733..., "agents": [{"name": ..., "script": ..., ...}, ...]}

Each agent is an ``agent.spawn`` body (the fields of :data:`SPEC_KEYS`). What "stale" means:
a time window makes no sense for something meant to wait for an offline board, so each board
keeps the highest ``generation`` it accepted (and the digest of that payload, in its state
dir) and refuses anything lower, or the same generation with other contents (``fleet.stale``):
an old signed state written back into the key cannot roll the board back. The same generation
with the same contents is applied again (a board that restarted reconciles to it).

A ``kind`` of its own keeps a deploy from being taken for a command and a command for a deploy.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clove.config.values import validate_name
from clove.fleet.commands import OperatorKey, SignedCommand, key_id

__all__ = [
    "DEPLOY_KIND", "MAX_AGENTS", "MAX_DESIRED_BYTES", "SPEC_KEYS", "Applied", "DeployNames", "DeployPolicy",
    "DeployVerdict", "digest", "sign_desired",
]  # fmt: skip

VERSION: Final = 1
DEPLOY_KIND: Final = "clove.deploy"
#: The most agents one desired state may name (each is a spawn the board performs and tracks).
MAX_AGENTS: Final = 64
#: The most bytes of a signed desired state a board reads (the hub's bucket takes up to
#: :data:`BUCKET_MAX_VALUE`, so a bigger one reaches the board and is refused with a reason).
MAX_DESIRED_BYTES: Final = 256 << 10
BUCKET_MAX_VALUE: Final = 1 << 20
#: The fields an agent of a desired state may have: an ``agent.spawn`` body, less ``detached``
#: (only agents spawn children).
SPEC_KEYS: Final = frozenset({
    "name", "script", "args", "env", "sandboxed", "network", "egress", "egress_private", "limits",
    "restart_policy", "max_restarts", "restart_window", "interpreter", "working_dir", "level",
    "permissions", "devices", "device_wait", "device_timeout",
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class DeployNames:
    """Where deploys live on the hub, for one subject prefix."""

    prefix: str

    @property
    def bucket(self) -> str:
        return f"{self.prefix}_deploy"

    @property
    def stream(self) -> str:
        return f"KV_{self.bucket}"

    @staticmethod
    def desired_key(board: str) -> str:
        return f"desired.{board}"

    @staticmethod
    def status_key(board: str) -> str:
        return f"status.{board}"

    def subject(self, key: str) -> str:
        return f"$KV.{self.bucket}.{key}"


def _canonical(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def sign_desired(
    private: Ed25519PrivateKey, *, board: str, generation: int, agents: list[dict[str, Any]], now: float | None = None
) -> SignedCommand:
    """The signed desired state of ``board``: run exactly ``agents`` (of those deploys start)."""
    payload = {
        "v": VERSION,
        "kind": DEPLOY_KIND,
        "key_id": key_id(private.public_key()),
        "board": board,
        "generation": generation,
        "issued_at": time.time() if now is None else now,
        "agents": agents,
    }
    data = _canonical(payload)
    return SignedCommand(data, private.sign(data))


@dataclass(frozen=True, slots=True)
class Applied:
    """The newest desired state a board accepted: its generation and payload digest."""

    generation: int
    digest: str


@dataclass(frozen=True, slots=True)
class DeployVerdict:
    """``accepted`` with the agents, or a refusal ``code`` and ``reason``; ``key_id``,
    ``operator`` and ``generation`` whenever known, for the journal and the status."""

    accepted: bool
    code: str
    reason: str
    key_id: str | None = None
    operator: str | None = None
    generation: int | None = None
    digest: str | None = None
    agents: list[dict[str, Any]] = field(default_factory=list)
    #: The same generation and contents as the last accepted one (a board that restarted).
    again: bool = False


class DeployPolicy:
    """One board's decision on each signed desired state (one caller: the loop thread)."""

    def __init__(self, board: str, keys: Iterable[OperatorKey]) -> None:
        self.board = board
        self.keys = {k.id: k for k in keys}

    def decide(self, wire: bytes, last: Applied | None) -> DeployVerdict:
        if len(wire) > MAX_DESIRED_BYTES:
            return DeployVerdict(False, "deploy.too_big", f"the desired state is {len(wire)} bytes; a board takes at most {MAX_DESIRED_BYTES}")
        try:
            signed = SignedCommand.from_wire(wire)
            payload = json.loads(signed.payload)
        except ValueError as err:
            return DeployVerdict(False, "fleet.malformed", f"not a signed desired state: {err}")
        if not isinstance(payload, dict) or payload.get("v") != VERSION or payload.get("kind") != DEPLOY_KIND:
            return DeployVerdict(False, "fleet.malformed", f"not a version {VERSION} desired state ({DEPLOY_KIND})")
        kid = payload.get("key_id")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            shown = str(kid)[:64]
            return DeployVerdict(False, "fleet.unknown_key", f"key {shown!r} is not one this board accepts", key_id=shown)
        known: dict[str, Any] = {"key_id": key.id, "operator": key.name}
        try:
            key.public.verify(signed.signature, signed.payload)
        except InvalidSignature:
            return DeployVerdict(False, "fleet.bad_signature", "the signature does not verify with the key", **known)
        board, generation, agents = payload.get("board"), payload.get("generation"), payload.get("agents")
        if not isinstance(board, str) or type(generation) is not int or generation < 1 or not isinstance(agents, list):
            return DeployVerdict(False, "fleet.malformed", "board, generation (an int >= 1) and agents (a list) are required", **known)
        known["generation"] = generation
        if board != self.board:
            return DeployVerdict(False, "fleet.wrong_board", f"signed for board {board!r}, this is {self.board!r}", **known)
        if "deploy" not in key.may:
            return DeployVerdict(False, "fleet.not_allowed", f"key {key.name!r} may not give 'deploy' (may: {', '.join(sorted(key.may))})", **known)
        payload_digest = digest(signed.payload)
        if last is not None and (generation < last.generation or (generation == last.generation and payload_digest != last.digest)):
            why = "older than" if generation < last.generation else "the same generation as, but not the same state as,"
            return DeployVerdict(False, "fleet.stale", f"generation {generation} is {why} the one this board applied ({last.generation})", **known)
        if len(agents) > MAX_AGENTS:
            return DeployVerdict(False, "deploy.too_many", f"{len(agents)} agents; a desired state names at most {MAX_AGENTS}", **known)
        problem = structure_problem(agents)
        if problem is not None:
            return DeployVerdict(False, "fleet.malformed", problem, **known)
        again = last is not None and generation == last.generation
        return DeployVerdict(True, "ok", "accepted", digest=payload_digest, agents=agents, again=again, **known)


def _shown(value: Any) -> str:
    """A value from the network, as a report or a journal record may quote it: bounded."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def structure_problem(agents: list[Any]) -> str | None:
    """What makes a list of agents unusable as a whole (an agent that is not a table, a missing
    or bad name, a name given twice); ``None`` when each agent can be judged on its own."""
    seen: set[str] = set()
    for index, agent in enumerate(agents):
        if not isinstance(agent, dict):
            return f"agents[{index}]: expected a table"
        name = agent.get("name")
        try:
            validate_name(name)
        except ValueError:
            return f"agents[{index}].name: agent names are 1-63 of [A-Za-z0-9_.-], starting alphanumeric; got {_shown(name)}"
        if name in seen:
            return f"agents[{index}].name: {name!r} is named twice"
        seen.add(str(name))
    return None


def spec_problem(spec: Mapping[str, Any]) -> str | None:
    """What the board refuses in one agent before asking the kernel to spawn it (the spawn's own
    checks, limits against this board's ceilings included, come after)."""
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        return f"unknown field {_shown(unknown[0])}"
    script = spec.get("script")
    if not isinstance(script, str) or not script.startswith("/"):
        return "script: an absolute path is required"
    return None
