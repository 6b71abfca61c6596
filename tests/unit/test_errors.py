"""clove.errors: the wire codes are unique and frozen, and errors survive to_wire/from_wire."""

from __future__ import annotations

from typing import Any

import pytest

from clove.errors import CloveError, ProtocolError, SandboxError, from_wire, register_error, to_wire
from clove_sdk import errors  # the one definition; clove.errors re-exports it

#: The wire codes are a public contract: a client built today must understand a kernel built
#: later. Changing a line here means breaking every deployed SDK; add lines, never edit them.
FROZEN_CODES: dict[str, str] = {
    "CloveError": "error",
    "ConfigError": "config.invalid",
    "ProtocolError": "proto.malformed",
    "MessageTooLarge": "proto.too_large",
    "VersionMismatch": "proto.version",
    "UnknownSyscall": "proto.unknown_syscall",
    "InvalidArguments": "proto.invalid_args",
    "PermissionDenied": "perm.denied",
    "NotFound": "notfound",
    "Conflict": "conflict",
    "SandboxError": "sandbox.setup",
    "IsolationUnavailable": "sandbox.unenforceable",
    "SpawnFailed": "spawn.failed",
    "KernelUnavailable": "kernel.unavailable",
    "InternalError": "internal",
    "MailboxFull": "ipc.mailbox_full",
    "OperationTimeout": "timeout",
    "UpstreamError": "upstream.failed",
    "QuotaExceeded": "quota.exceeded",
    "ResourceExhausted": "resource.exhausted",
    "RiskDenied": "risk.denied",
    "DeviceError": "device.error",
    "DeviceUnavailable": "device.unavailable",
    "DeviceBusy": "device.busy",
    "DeviceClosed": "device.closed",
    "DeviceBroken": "device.broken",
    "DeviceTimeout": "device.timeout",
}

FROZEN_PARENTS: dict[str, str] = {
    "MessageTooLarge": "ProtocolError",
    "VersionMismatch": "ProtocolError",
    "UnknownSyscall": "ProtocolError",
    "InvalidArguments": "ProtocolError",
    "IsolationUnavailable": "SandboxError",
    "RiskDenied": "PermissionDenied",
    "DeviceUnavailable": "DeviceError",
    "DeviceBusy": "DeviceError",
    "DeviceClosed": "DeviceError",
    "DeviceBroken": "DeviceError",
    "DeviceTimeout": "DeviceError",
}


def exported_error_classes() -> dict[str, type[CloveError]]:
    out = {}
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, CloveError):
            out[name] = obj
    return out


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, type[CloveError]]:
    """A private copy of the code table, so a test's registrations do not leak."""
    table = dict(errors._BY_CODE)
    monkeypatch.setattr(errors, "_BY_CODE", table)
    return table


def test_code_table_is_frozen() -> None:
    assert {name: cls.code for name, cls in exported_error_classes().items()} == FROZEN_CODES


def test_codes_are_unique() -> None:
    codes = [cls.code for cls in exported_error_classes().values()]
    assert len(codes) == len(set(codes))


def test_every_exported_error_is_known_to_from_wire() -> None:
    for cls in exported_error_classes().values():
        assert errors._BY_CODE[cls.code] is cls


def test_hierarchy() -> None:
    classes = exported_error_classes()
    for name, cls in classes.items():
        parent = FROZEN_PARENTS.get(name, "CloveError" if cls is not CloveError else None)
        if parent is None:
            assert cls.__bases__ == (Exception,)
        else:
            assert cls.__bases__ == (classes[parent],), name


def test_clove_error_fields() -> None:
    details = {"limit": 4}
    err = errors.NotFound("no agent named 'a'", details=details)
    assert (err.message, str(err), err.details, err.code) == (
        "no agent named 'a'",
        "no agent named 'a'",
        {"limit": 4},
        "notfound",
    )
    details["limit"] = 5
    assert err.details == {"limit": 4}, "details are copied, not shared with the caller"
    assert errors.Conflict("x").details == {}
    assert repr(errors.Conflict("taken")) == "Conflict('taken', code='conflict')"


@pytest.mark.parametrize("name", sorted(FROZEN_CODES))
def test_round_trip(name: str) -> None:
    cls = exported_error_classes()[name]
    sent = cls("went wrong", details={"n": 1, "names": ["a"]})
    wired = to_wire(sent)
    assert wired == {"code": FROZEN_CODES[name], "message": "went wrong", "details": {"n": 1, "names": ["a"]}}
    back = from_wire(wired)
    assert type(back) is cls
    assert (back.code, back.message, back.details) == (sent.code, sent.message, sent.details)


def test_from_wire_unknown_code_keeps_code() -> None:
    back = from_wire({"code": "lidar.fogged", "message": "leased by agent 3", "details": {"agent": 3}})
    assert type(back) is CloveError
    assert (back.code, back.message, back.details) == ("lidar.fogged", "leased by agent 3", {"agent": 3})
    assert to_wire(back)["code"] == "lidar.fogged"
    assert CloveError.code == "error"


@pytest.mark.parametrize(
    ("error", "code", "message", "details"),
    [
        ({}, "error", "error", {}),
        ({"code": "notfound"}, "notfound", "notfound", {}),
        ({"code": "notfound", "message": 5}, "notfound", "5", {}),
        ({"code": "conflict", "message": "m", "details": ["not", "a", "map"]}, "conflict", "m", {}),
        ({"code": 7, "message": "m"}, "7", "m", {}),
    ],
)
def test_from_wire_tolerates_partial_maps(
    error: dict[str, Any], code: str, message: str, details: dict[str, Any]
) -> None:
    back = from_wire(error)
    assert (back.code, back.message, back.details) == (code, message, details)


def test_register_error_adds_a_family(registry: dict[str, type[CloveError]]) -> None:
    class LidarFogged(CloveError):
        code = "lidar.fogged"

    assert register_error(LidarFogged) is LidarFogged
    assert register_error(LidarFogged) is LidarFogged  # registering the same class twice is fine
    back = from_wire({"code": "lidar.fogged", "message": "leased"})
    assert type(back) is LidarFogged
    assert registry["lidar.fogged"] is LidarFogged


@pytest.mark.parametrize("code", sorted(FROZEN_CODES.values()))
def test_register_error_refuses_a_reused_code(registry: dict[str, type[CloveError]], code: str) -> None:
    owner = registry[code]
    impostor = type("Impostor", (CloveError,), {"code": code})
    with pytest.raises(ValueError, match=f"error code '{code}' is already used by {owner.__name__}"):
        register_error(impostor)
    assert registry[code] is owner


def test_register_error_refuses_a_subclass_that_inherits_the_code(
    registry: dict[str, type[CloveError]],
) -> None:
    class Forgot(SandboxError):  # forgot to set its own code
        pass

    with pytest.raises(ValueError, match="already used by SandboxError"):
        register_error(Forgot)
    assert type(from_wire({"code": "sandbox.setup"})) is SandboxError


def test_protocol_errors_are_clove_errors() -> None:
    assert issubclass(errors.InvalidArguments, ProtocolError)
    assert not issubclass(errors.KernelUnavailable, ProtocolError)
