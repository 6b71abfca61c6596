"""The config table, the grant and the receive filters: what the kernel runs at config load and
on every agent operation (no device is opened here)."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from clove.drivers import FieldError
from clove.drivers.schema import build
from clove.errors import InvalidArguments, PermissionDenied
from clove_driver_gpio import GetArgs, GpioConfig, GpioDriver, GpioGrant, SetArgs

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

BASE: dict[str, Any] = {"lines": {"estop": 17, "door": 18, "brake": 27}, "outputs": ["brake"]}


def parse(**overrides: Any) -> GpioConfig:
    return GpioDriver.parse_config({**BASE, **overrides})  # type: ignore[no-any-return]


def test_a_toml_device_table_parses_into_a_typed_config() -> None:
    doc = tomllib.loads(
        """
        [devices.panel]
        driver = "gpio"
        chip = "/dev/gpiochip3"
        lines = { estop = 17, door = 18, brake = 27 }
        outputs = ["brake"]
        initial = { brake = 1 }
        edge = "falling"
        debounce_ms = 5
        active_low = ["estop"]
        simulate = "always"
        sim_socket = "/run/clove/gpio-sim.sock"
        """
    )
    config = GpioDriver.parse_config(doc["devices"]["panel"], ignore=frozenset({"driver"}))
    assert config == GpioConfig(
        chip="/dev/gpiochip3",
        lines={"estop": 17, "door": 18, "brake": 27},
        outputs=("brake",),
        initial={"brake": 1},
        edge="falling",
        debounce_ms=5.0,
        active_low=("estop",),
        simulate="always",
        sim_socket="/run/clove/gpio-sim.sock",
    )
    specs = {spec.offset: spec for spec in config.specs()}
    assert specs[27].direction == "output"
    assert specs[27].initial == 1
    assert specs[17].direction == "input"
    assert specs[17].active_low
    assert specs[17].edge == "falling"
    assert specs[18].debounce_ms == 5.0
    assert not specs[18].active_low


def test_defaults() -> None:
    config = GpioDriver.parse_config({"lines": {"button": 4}})
    assert (config.chip, config.outputs, config.initial, config.edge, config.simulate, config.sim_socket) == (
        "/dev/gpiochip0",
        (),
        {},
        "both",
        "auto",
        None,
    )


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [
        ({"lnes": {"a": 1}}, "lnes", "unknown key"),
        ({"lines": {}}, "lines", "at least one line"),
        ({"lines": {"a": 4, "b": 4}, "outputs": []}, "lines.b", "offset 4 is already used by line 'a'"),
        ({"lines": {"e-stop": 4}, "outputs": []}, "lines.e-stop", "identifiers"),
        ({"lines": {"a": -1}, "outputs": []}, "lines.a", "between 0 and 65535"),
        ({"lines": {"a": "17"}, "outputs": []}, "lines.a", "expected int"),
        ({"outputs": ["horn"]}, "outputs[0]", "'horn' is not in lines"),
        ({"outputs": ["brake", "brake"]}, "outputs[1]", "listed twice"),
        ({"initial": {"estop": 1}}, "initial.estop", "not an output"),
        ({"initial": {"brake": 2}}, "initial.brake", "0 or 1"),
        ({"initial": {"brake": True}}, "initial.brake", "expected int"),
        ({"edge": "up"}, "edge", "one of"),
        ({"debounce_ms": -1}, "debounce_ms", "between 0 and 60000"),
        ({"active_low": ["nope"]}, "active_low[0]", "not in lines"),
        ({"simulate": "sometimes"}, "simulate", "one of"),
        ({"simulate": "never", "sim_socket": "/tmp/x.sock"}, "sim_socket", "simulate = 'never'"),
        ({"sim_socket": ""}, "sim_socket", "socket path"),
        ({"chip": ""}, "chip", "chip's device"),
    ],
)
def test_config_errors_name_the_key(overrides: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(FieldError) as caught:
        parse(**overrides)
    assert caught.value.key == key
    assert fragment in caught.value.message


def test_lines_are_required() -> None:
    with pytest.raises(FieldError) as caught:
        GpioDriver.parse_config({"chip": "/dev/gpiochip0"})
    assert caught.value.key == "lines"
    assert "required" in str(caught.value)


# ---- operation arguments ----------------------------------------------------------------------------


def test_set_arguments_are_checked_before_the_driver_runs() -> None:
    spec = GpioDriver.operations()["set"]
    assert GpioDriver.parse_args(spec, {"values": {"brake": 1}}) == SetArgs(values={"brake": 1})
    for bad, argument in (
        ({"values": {"brake": 2}}, "values.brake"),
        ({"values": {}}, "values"),
        ({}, "values"),
    ):
        with pytest.raises(InvalidArguments) as caught:
            GpioDriver.parse_args(spec, bad)
        assert caught.value.details["argument"] == argument
    assert GpioDriver.parse_args(GpioDriver.operations()["get"], {"lines": ["estop"]}) == GetArgs(
        lines=("estop",)
    )


def test_declared_operations_and_stream() -> None:
    assert GpioDriver.grant_ops() == ("get", "set", "info", "watch")
    assert (GpioDriver.stream, GpioDriver.stream_op) == ("items", "watch")


# ---- the grant ----------------------------------------------------------------------------------------


def grant(**fields: Any) -> GpioGrant:
    return build(GpioGrant, {"ops": ["get", "set", "watch"], **fields})


def test_grant_allows_granted_lines_and_names_the_refused_one() -> None:
    g = grant(lines=["estop", "door"], write_lines=["brake"])
    g.check("get", GetArgs(lines=("estop", "door")))
    g.check("get", GetArgs(lines=("brake",)))  # writable lines are readable too
    g.check("set", SetArgs(values={"brake": 1}))
    with pytest.raises(PermissionDenied) as caught:
        g.check("get", GetArgs(lines=("estop", "horn")))
    assert "'horn'" in caught.value.message
    assert caught.value.details["line"] == "horn"
    with pytest.raises(PermissionDenied) as caught:
        g.check("set", SetArgs(values={"brake": 1, "estop": 0}))
    assert "'estop'" in caught.value.message
    assert "writing" in caught.value.message
    g.check("watch", None)
    g.check("info", None)


def test_grant_fails_closed() -> None:
    empty = grant()
    with pytest.raises(PermissionDenied, match="no GPIO lines"):
        empty.check("get", GetArgs())
    with pytest.raises(PermissionDenied):
        empty.check("get", GetArgs(lines=("estop",)))
    with pytest.raises(PermissionDenied):
        empty.check("set", SetArgs(values={"brake": 0}))
    assert not empty.admits({"line": "estop"})
    # An empty get ("every line") passes the check and is narrowed to the granted lines, so
    # the driver never reads a line the agent may not see.
    some = grant(lines=["estop"], write_lines=["brake"])
    some.check("get", GetArgs())
    assert some.narrow("get", GetArgs()) == GetArgs(lines=("estop", "brake"))
    assert some.narrow("get", GetArgs(lines=("estop",))) == GetArgs(lines=("estop",))


def test_grant_admits_only_granted_lines() -> None:
    g = grant(lines=["estop"], write_lines=["brake"])
    item = {"line": "estop", "offset": 17, "edge": "rising", "value": 1, "ts": 0.0}
    assert g.admits(item)
    assert g.admits({**item, "line": "brake"})
    assert not g.admits({**item, "line": "door"})


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"lines": ["a b"]}, "lines[0]"),
        ({"write_lines": ["x", "x"]}, "write_lines[1]"),
        ({"max_rate_hz": 0}, "max_rate_hz"),
    ],
)
def test_grant_errors_name_the_key(fields: dict[str, Any], key: str) -> None:
    with pytest.raises(FieldError) as caught:
        grant(**fields)
    assert caught.value.key == key


# ---- receive filters ----------------------------------------------------------------------------------


def test_compile_filter_keeps_named_lines() -> None:
    keep = GpioDriver.compile_filter(["estop", "door"])
    assert keep({"line": "estop"})
    assert keep({"line": "door"})
    assert not keep({"line": "brake"})
    assert GpioDriver.compile_filter([])({"line": "anything"})


@pytest.mark.parametrize("bad", [[{"line": "estop"}], ["e-stop"], [17], ["estop", None]])
def test_compile_filter_refuses_unknown_shapes(bad: list[Any]) -> None:
    with pytest.raises(InvalidArguments):
        GpioDriver.compile_filter(bad)
