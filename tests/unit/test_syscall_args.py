"""Syscall argument checking (parse_body), Deferred replies, and the spawn ``limits`` map."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from clove.errors import CloveError, InvalidArguments, NotFound
from clove.kernel.core.deferred import Deferred
from clove.kernel.syscalls.agents import LogsRequest, SpawnRequest, TargetRequest, limits_from_wire
from clove.kernel.syscalls.base import NoArgs, Syscall
from clove.schema import parse_body

MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class Example:
    name: str
    count: int
    ratio: float = 1.0
    flag: bool = False
    tags: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    maybe: int | None = None
    anything: Any = None
    blob: bytes = b""


def invalid(body: dict[Any, Any], cls: type[Any] = Example) -> InvalidArguments:
    with pytest.raises(InvalidArguments) as info:
        parse_body(cls, body, "test.call")
    assert info.value.code == "proto.invalid_args"
    assert info.value.message.startswith("test.call: ")
    return info.value


# -- parse_body --------------------------------------------------------------------------------


def test_required_only() -> None:
    assert parse_body(Example, {"name": "a", "count": 3}, "test.call") == Example(name="a", count=3)


def test_every_field() -> None:
    body = {
        "name": "a",
        "count": 0,
        "ratio": 0.25,
        "flag": True,
        "tags": ["x", "y"],
        "env": {"K": "V"},
        "maybe": 4,
        "anything": [1, {"x": None}],
        "blob": b"\x00",
    }
    assert parse_body(Example, body, "test.call") == Example(**body)


def test_defaults_are_fresh_per_request() -> None:
    one = parse_body(Example, {"name": "a", "count": 1}, "test.call")
    two = parse_body(Example, {"name": "a", "count": 1}, "test.call")
    assert one.tags == []
    assert one.tags is not two.tags


def test_float_accepts_int_but_not_bool() -> None:
    assert parse_body(Example, {"name": "a", "count": 1, "ratio": 2}, "test.call").ratio == 2
    err = invalid({"name": "a", "count": 1, "ratio": True})
    assert err.details == {"argument": "ratio", "expected": "float"}


def test_optional_accepts_none_and_the_type() -> None:
    assert parse_body(Example, {"name": "a", "count": 1, "maybe": None}, "test.call").maybe is None
    assert parse_body(Example, {"name": "a", "count": 1, "maybe": 9}, "test.call").maybe == 9
    err = invalid({"name": "a", "count": 1, "maybe": "9"})
    assert err.details["argument"] == "maybe"
    assert err.message == "test.call: argument 'maybe' must be int | None, got str"


def test_unknown_argument() -> None:
    err = invalid({"name": "a", "count": 1, "colour": "red"})
    assert err.message == "test.call: unknown argument 'colour'"
    assert err.details == {"argument": "colour", "known": sorted(Example.__dataclass_fields__)}


def test_one_of_several_unknown_arguments_is_named() -> None:
    err = invalid({"bogus": 1, "name": "a", "count": 1, "colour": "red"})
    assert err.details["argument"] in {"bogus", "colour"}
    assert err.message == f"test.call: unknown argument {err.details['argument']!r}"


def test_unknown_bytes_key_beside_str_keys() -> None:
    """msgpack bin keys arrive as bytes; mixing them with str keys used to raise TypeError."""
    err = invalid({"name": "a", "count": 1, b"raw": 1, "zzz": 2})
    assert err.details["argument"] in {b"raw", "zzz"}
    err = invalid({b"count": 1, "name": "a"})
    assert err.message == "test.call: unknown argument b'count'"


def test_missing_argument() -> None:
    err = invalid({"name": "a"})
    assert err.message == "test.call: missing argument 'count'"
    assert err.details == {"argument": "count"}


@pytest.mark.parametrize(
    ("argument", "value", "expected"),
    [
        ("name", 5, "str"),
        ("name", None, "str"),
        ("name", b"a", "str"),
        ("count", True, "int"),  # bool is an int to Python, not to Clove
        ("count", False, "int"),
        ("count", 1.0, "int"),
        ("count", "1", "int"),
        ("flag", 1, "bool"),
        ("flag", "true", "bool"),
        ("tags", "x", "list[str]"),
        ("tags", ["x", 1], "list[str]"),
        ("tags", ("x",), "list[str]"),
        ("env", {"K": 1}, "dict[str, str]"),
        ("env", {"K": None}, "dict[str, str]"),
        ("env", [["K", "V"]], "dict[str, str]"),
        ("env", {b"K": "V"}, "dict[str, str]"),
        ("blob", "text", "bytes"),
    ],
)
def test_mistyped_argument(argument: str, value: Any, expected: str) -> None:
    body: dict[str, Any] = {"name": "a", "count": 1, argument: value}
    err = invalid(body)
    assert err.details == {"argument": argument, "expected": expected}
    assert err.message == f"test.call: argument {argument!r} must be {expected}, got {type(value).__name__}"


def test_no_args() -> None:
    assert parse_body(NoArgs, {}, "agent.list") == NoArgs()
    assert invalid({"x": 1}, NoArgs).message == "test.call: unknown argument 'x'"


def test_syscall_parse_names_the_call() -> None:
    class Echo(Syscall):
        name = "test.echo"
        Request = Example

    with pytest.raises(InvalidArguments, match=r"^test\.echo: missing argument 'name'$"):
        Echo().parse({"count": 1})
    assert Echo().parse({"name": "n", "count": 2}) == Example(name="n", count=2)


def test_spawn_request() -> None:
    req = parse_body(
        SpawnRequest,
        {"name": "a", "script": "/a.py", "restart_window": 60, "limits": {"memory": "64M"}},
        "agent.spawn",
    )
    assert (req.name, req.script, req.args, req.env, req.restart_window, req.limits) == (
        "a",
        "/a.py",
        [],
        {},
        60,
        {"memory": "64M"},
    )
    assert invalid({"name": "a"}, SpawnRequest).message == "test.call: missing argument 'script'"
    assert (
        invalid({"name": "a", "script": "/a.py", "limits": [1]}, SpawnRequest).details["argument"] == "limits"
    )
    assert (
        invalid({"name": "a", "script": "/a.py", "max_restarts": True}, SpawnRequest).details["argument"]
        == "max_restarts"
    )


def test_target_and_logs_requests() -> None:
    assert parse_body(TargetRequest, {}, "agent.kill") == TargetRequest()
    assert parse_body(TargetRequest, {"agent_id": 3}, "agent.kill") == TargetRequest(agent_id=3)
    assert invalid({"agent_id": "3"}, TargetRequest).details == {
        "argument": "agent_id",
        "expected": "int | None",
    }
    assert parse_body(LogsRequest, {"name": "a"}, "agent.logs") == LogsRequest(
        name="a", offset=-16384, max_bytes=65536
    )
    assert invalid({"name": "a", "offset": 1.5}, LogsRequest).details["argument"] == "offset"


# -- Deferred ----------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, CloveError | None]] = []

    def __call__(self, result: Any, error: CloveError | None) -> None:
        self.calls.append((result, error))


def test_deferred_resolve_once() -> None:
    d, rec = Deferred(), Recorder()
    d.bind(rec)
    assert not d.done
    assert rec.calls == []
    d.resolve({"ok": 1})
    assert d.done
    d.resolve({"ok": 2})
    d.reject(NotFound("late"))
    assert rec.calls == [({"ok": 1}, None)]


def test_deferred_reject_once() -> None:
    d, rec = Deferred(), Recorder()
    d.bind(rec)
    err = NotFound("gone")
    d.reject(err)
    d.resolve("late")
    assert rec.calls == [(None, err)]


def test_deferred_settled_before_bind_is_delivered_on_bind() -> None:
    """A syscall may settle its Deferred inside execute() (killing an agent that has already
    exited), before the dispatcher binds; the reply must still go out, exactly once."""
    d, rec = Deferred(), Recorder()
    d.resolve("early")
    d.resolve("later")
    assert d.done
    d.bind(rec)
    assert rec.calls == [("early", None)]
    rebound = Recorder()
    d.bind(rebound)
    assert rebound.calls == []


def test_deferred_rejected_before_bind() -> None:
    d, rec = Deferred(), Recorder()
    err = NotFound("gone")
    d.reject(err)
    d.bind(rec)
    assert rec.calls == [(None, err)]


def test_deferred_without_a_callback_does_not_fail() -> None:
    d = Deferred()
    d.resolve(1)
    assert d.done


# -- limits_from_wire --------------------------------------------------------------------------

NONE = {"memory_bytes": None, "cpu_quota_us": None, "pids": None}


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({}, {}),
        ({"memory": "64M"}, {"memory_bytes": 64 * MiB}),
        ({"memory": 64 * MiB}, {"memory_bytes": 64 * MiB}),
        ({"memory": "1G"}, {"memory_bytes": 1 << 30}),
        ({"cpu": "20%"}, {"cpu_quota_us": 20_000}),
        ({"cpu": 30_000}, {"cpu_quota_us": 30_000}),
        ({"cpu_quota": 50_000}, {"cpu_quota_us": 50_000}),
        ({"cpu_quota": "50%"}, {"cpu_quota_us": 50_000}),
        ({"cpu_percent": 20}, {"cpu_quota_us": 20_000}),
        ({"cpu_percent": 12.5}, {"cpu_quota_us": 12_500}),
        ({"cpu_percent": "20%"}, {"cpu_quota_us": 20_000}),
        ({"pids": 64}, {"pids": 64}),
        ({"max_pids": 32}, {"pids": 32}),
        ({"memory": None, "cpu": None, "pids": None}, {}),
        ({"cpu": None, "cpu_quota": 2000}, {"cpu_quota_us": 2000}),
        (
            {"memory": "128M", "cpu": "5%", "pids": 8},
            {"memory_bytes": 128 * MiB, "cpu_quota_us": 5000, "pids": 8},
        ),
    ],
)
def test_limits(limits: dict[str, Any], expected: dict[str, int]) -> None:
    assert limits_from_wire(limits) == {**NONE, **expected}


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"memroy": "64M"}, "agent.spawn: unknown limit 'memroy'"),
        ({"memory": "64M", "swap": 1}, "agent.spawn: unknown limit 'swap'"),
        (
            {"cpu": "20%", "cpu_quota": 20_000},
            "agent.spawn: limits: give one of cpu, cpu_quota, cpu_percent; got ['cpu', 'cpu_quota']",
        ),
        (
            {"cpu_percent": 20, "cpu": "20%"},
            "agent.spawn: limits: give one of cpu, cpu_quota, cpu_percent; got ['cpu', 'cpu_percent']",
        ),
        ({"memory": "lots"}, "agent.spawn: limits: expected a size like '64M' or bytes, got 'lots'"),
        ({"memory": 1024}, "agent.spawn: limits: memory limit must be at least 4M, got 1024"),
        ({"memory": True}, "agent.spawn: limits: expected a size like '64M' or bytes, got True"),
        ({"memory": 64.0}, "agent.spawn: limits: expected a size like '64M' or bytes, got 64.0"),
        ({"cpu": "20"}, "agent.spawn: limits: expected a percentage like '20%' or a quota in µs, got '20'"),
        ({"cpu": 20.5}, "agent.spawn: limits: expected a percentage like '20%' or a quota in µs, got 20.5"),
        (
            {"cpu_quota": 10},
            "agent.spawn: limits: cpu quota must be at least 1000 µs per 100 ms (1%), got 10",
        ),
        (
            {"cpu_percent": 0.5},
            "agent.spawn: limits: cpu quota must be at least 1000 µs per 100 ms (1%), got '0.5%'",
        ),
        (
            {"cpu_percent": True},
            "agent.spawn: limits: expected a percentage like '20%' or a quota in µs, got True",
        ),
        ({"cpu_percent": float("inf")}, "agent.spawn: limits: expected a percentage like '20%', got 'inf%'"),
        ({"cpu_percent": float("nan")}, "agent.spawn: limits: expected a percentage like '20%', got 'nan%'"),
        ({"pids": 0}, "agent.spawn: limits: expected a positive int, got 0"),
        ({"pids": True}, "agent.spawn: limits: expected a positive int, got True"),
        ({"max_pids": "64"}, "agent.spawn: limits: expected a positive int, got '64'"),
    ],
)
def test_bad_limits(limits: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArguments) as info:
        limits_from_wire(limits)
    assert info.value.message == message
    assert info.value.code == "proto.invalid_args"


def test_unknown_limit_lists_the_known_keys() -> None:
    with pytest.raises(InvalidArguments) as info:
        limits_from_wire({"gpu": 1})
    assert info.value.details == {"known": ["memory", "cpu", "cpu_quota", "cpu_percent", "pids", "max_pids"]}
