"""The one exception hierarchy of Clove, and the stable wire codes that carry it across IPC.

::

    CloveError(message, *, details=None)      code: stable, never reused
    ├── ConfigError          "config.invalid"
    ├── ProtocolError        "proto.malformed"
    │   ├── MessageTooLarge  "proto.too_large"
    │   ├── VersionMismatch  "proto.version"
    │   ├── UnknownSyscall   "proto.unknown_syscall"
    │   └── InvalidArguments "proto.invalid_args"
    ├── PermissionDenied     "perm.denied"
    │   └── RiskDenied       "risk.denied"         an order refused by pre-trade risk checks (details.reason)
    ├── NotFound             "notfound"
    ├── Conflict             "conflict"
    ├── SandboxError         "sandbox.setup"
    │   └── IsolationUnavailable "sandbox.unenforceable"
    ├── SpawnFailed          "spawn.failed"
    ├── MailboxFull          "ipc.mailbox_full"
    ├── OperationTimeout     "timeout"
    ├── UpstreamError        "upstream.failed"
    ├── QuotaExceeded        "quota.exceeded"      the caller reached one of its own limits
    ├── ResourceExhausted    "resource.exhausted"  the kernel itself is short (disk): try later
    ├── KernelUnavailable    "kernel.unavailable"  (raised by clients, never sent by the kernel)
    ├── DeviceError          "device.error"        the device family, raised by drivers and hosts
    │   ├── DeviceUnavailable "device.unavailable" not present, not configured, host down or restarting
    │   ├── DeviceBusy        "device.busy"        held by someone else, or its queue is full
    │   ├── DeviceClosed      "device.closed"      used after close (or the host is shutting down)
    │   ├── DeviceBroken      "device.broken"      failed mid-operation (I/O error, bus off, host died)
    │   └── DeviceTimeout     "device.timeout"     the device did not answer in time
    └── InternalError        "internal"

A reply carries an error as ``{"code", "message", "details"}`` (see :func:`to_wire`); the SDK turns
it back into the class registered for ``code`` with :func:`from_wire`.

This is the one definition. It lives in the SDK because an agent's environment holds only the
``clove-sdk`` distribution; the kernel, drivers and plugins import the same classes through
:mod:`clove.errors`. It is a leaf (stdlib only), so everything can depend on it.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "CloveError",
    "ConfigError",
    "Conflict",
    "DeviceBroken",
    "DeviceBusy",
    "DeviceClosed",
    "DeviceError",
    "DeviceTimeout",
    "DeviceUnavailable",
    "InternalError",
    "InvalidArguments",
    "IsolationUnavailable",
    "KernelUnavailable",
    "MailboxFull",
    "MessageTooLarge",
    "NotFound",
    "OperationTimeout",
    "PermissionDenied",
    "ProtocolError",
    "QuotaExceeded",
    "ResourceExhausted",
    "RiskDenied",
    "SandboxError",
    "SpawnFailed",
    "UnknownSyscall",
    "UpstreamError",
    "VersionMismatch",
    "from_wire",
    "register_error",
    "to_wire",
]


class CloveError(Exception):
    """Base of every error Clove raises on purpose.

    :param message: one human sentence saying what went wrong.
    :param details: JSON-safe facts a program can act on (limits, names, offsets).
    """

    code: ClassVar[str] = "error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"


class ConfigError(CloveError):
    """A config file is unreadable or invalid. The message names file, table and key."""

    code = "config.invalid"


class ProtocolError(CloveError):
    """A request could not be understood: not an envelope, bad encoding, missing fields.

    Example scenarios: a single-frame message, a body that is not msgpack, a request id that
    is neither an int nor a str.
    """

    code = "proto.malformed"


class MessageTooLarge(ProtocolError):
    """A request exceeds the kernel's maximum message size (``details.max_bytes``)."""

    code = "proto.too_large"


class VersionMismatch(ProtocolError):
    """The envelope names a protocol version this kernel does not speak."""

    code = "proto.version"


class UnknownSyscall(ProtocolError):
    """The syscall name is not in the kernel's registry."""

    code = "proto.unknown_syscall"


class InvalidArguments(ProtocolError):
    """The syscall exists but its body has a missing, unknown or mistyped field."""

    code = "proto.invalid_args"


class PermissionDenied(CloveError):
    """The caller's identity is not allowed to make this syscall on this target."""

    code = "perm.denied"


class RiskDenied(PermissionDenied):
    """An order or cancel refused by an exchange driver's pre-trade risk engine. ``reason``
    (also ``details["reason"]``, so it survives the wire) names the check, such as
    ``max_position`` or ``state_halted``; ``details`` holds ``scope``, ``limit`` and ``value``
    when a limit was hit."""

    code = "risk.denied"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None, reason: str | None = None) -> None:
        merged = dict(details or {})
        if reason is not None:
            merged["reason"] = reason
        super().__init__(message, details=merged)
        self.reason: str = str(merged.get("reason", "check_failed"))


class NotFound(CloveError):
    """The named agent (or other object) does not exist."""

    code = "notfound"


class Conflict(CloveError):
    """The request clashes with current state: a name already taken by a live agent."""

    code = "conflict"


class SandboxError(CloveError):
    """The sandbox could not be set up (cgroup write refused, unshare failed)."""

    code = "sandbox.setup"


class IsolationUnavailable(SandboxError):
    """``require_isolation`` is on and a promised limit or namespace cannot be enforced."""

    code = "sandbox.unenforceable"


class SpawnFailed(CloveError):
    """The agent could not be started: missing script, unusable interpreter, bad work dir."""

    code = "spawn.failed"


class MailboxFull(CloveError):
    """The recipient's mailbox (or a caller's queue) is full; nothing was delivered."""

    code = "ipc.mailbox_full"


class OperationTimeout(CloveError):
    """An operation the kernel performs for the caller (exec, HTTP) ran out of time."""

    code = "timeout"


class UpstreamError(CloveError):
    """An outside service failed: connection refused, DNS, TLS, a reset mid-response."""

    code = "upstream.failed"


class QuotaExceeded(CloveError):
    """A size or count quota was reached (state size, in-flight requests, output size)."""

    code = "quota.exceeded"


class ResourceExhausted(CloveError):
    """The kernel itself is short of a shared resource (the disk under its state dir nears its
    reserve): new work is refused rather than accepted and then lost. Retry later."""

    code = "resource.exhausted"


class KernelUnavailable(CloveError):
    """No kernel answered: the socket is missing, refused, or the reply timed out."""

    code = "kernel.unavailable"


class DeviceError(CloveError):
    """Base of the device family: what a driver raises and what crosses IPC from a driver host.
    ``details`` carries ``device`` (its configured name) when the kernel knows it."""

    code = "device.error"


class DeviceUnavailable(DeviceError):
    """The device cannot be used now: not present, a library missing, its host down or
    restarting. Retrying later may work."""

    code = "device.unavailable"


class DeviceBusy(DeviceError):
    """The device is held elsewhere or cannot take more now (a full transmit queue)."""

    code = "device.busy"


class DeviceClosed(DeviceError):
    """The driver was closed; no operation is possible on this instance."""

    code = "device.closed"


class DeviceBroken(DeviceError):
    """The device failed during an operation (I/O error, bus off, the host died mid-call)."""

    code = "device.broken"


class DeviceTimeout(DeviceError):
    """The device did not complete the operation within its timeout."""

    code = "device.timeout"


class InternalError(CloveError):
    """A bug in the kernel. The traceback stays in the kernel's log, never in the reply."""

    code = "internal"


_BY_CODE: dict[str, type[CloveError]] = {
    cls.code: cls
    for cls in (
        CloveError,
        ConfigError,
        ProtocolError,
        MessageTooLarge,
        VersionMismatch,
        UnknownSyscall,
        InvalidArguments,
        PermissionDenied,
        NotFound,
        Conflict,
        SandboxError,
        IsolationUnavailable,
        SpawnFailed,
        KernelUnavailable,
        InternalError,
        MailboxFull,
        OperationTimeout,
        UpstreamError,
        QuotaExceeded,
        ResourceExhausted,
        RiskDenied,
        DeviceError,
        DeviceUnavailable,
        DeviceBusy,
        DeviceClosed,
        DeviceBroken,
        DeviceTimeout,
    )
}


def register_error(cls: type[CloveError]) -> type[CloveError]:
    """Make ``cls`` known to :func:`from_wire` (used by later error families such as devices)."""
    if cls.code in _BY_CODE and _BY_CODE[cls.code] is not cls:
        raise ValueError(f"error code {cls.code!r} is already used by {_BY_CODE[cls.code].__name__}")
    _BY_CODE[cls.code] = cls
    return cls


def to_wire(err: CloveError) -> dict[str, Any]:
    """The structured form of ``err`` that goes into a reply."""
    return {"code": err.code, "message": err.message, "details": err.details}


def from_wire(error: dict[str, Any]) -> CloveError:
    """Rebuild the exception for a reply's ``error`` map; unknown codes become :class:`CloveError`."""
    code = str(error.get("code", "error"))
    cls = _BY_CODE.get(code, CloveError)
    details = error.get("details")
    exc = cls(str(error.get("message", code)), details=details if isinstance(details, dict) else None)
    if cls is CloveError:
        exc.code = code  # type: ignore[misc]  # keep a code this client does not know yet
    return exc
