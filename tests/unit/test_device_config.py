"""[devices.NAME] tables and [agents.A.devices.D] grants through load_config: a good file, and
one-line errors that name the file, the table and the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from clove.config import load_config
from clove.config.devices import DEFAULT_HOST_LIMITS, FRAMEWORK_KEYS, DeviceSpec, parse_devices
from clove.drivers.grants import DeviceGrant
from clove.errors import ConfigError, InvalidArguments
from clove.kernel.services.devices.settings import grants_from_wire
from clove.testing.loopback import LoopbackConfig, LoopbackDriver, LoopbackGrant

MiB = 1 << 20

LOOP = """
[devices.loop]
driver = "loopback"
"""

AGENT = """
[agents.a]
script = "a.py"
"""


def write(tmp_path: Path, text: str, name: str = "deploy.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(tmp_path: Path, text: str) -> str:
    """The error for ``text``, checked to be one line that starts with the file's path."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = info.value.message
    assert info.value.code == "config.invalid"
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message[len(f"{path}: ") :]


def loop_spec() -> DeviceSpec:
    specs, _registry = parse_devices("test.toml", {"devices": {"loop": {"driver": "loopback"}}})
    return specs[0]


# -- a good config -------------------------------------------------------------------------------


def test_a_device_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, LOOP))
    (spec,) = config.devices
    assert (spec.name, spec.driver, spec.plugin) == ("loop", "loopback", "loopback")
    assert spec.driver_class is LoopbackDriver
    assert spec.config == LoopbackConfig()
    assert spec.raw == {}
    assert (spec.limits.memory_bytes, spec.limits.cpu_quota_us, spec.limits.pids) == (128 * MiB, None, 32)
    assert DEFAULT_HOST_LIMITS == {"memory": "128M", "pids": 32}
    assert (spec.heartbeat_timeout, spec.call_timeout, spec.queue, spec.queue_bytes) == (
        5.0,
        2.0,
        1024,
        65536,
    )
    assert (spec.backoff_initial, spec.backoff_max) == (0.2, 10.0)


def test_a_device_with_everything_set(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
[devices.bench-1]
driver = "loopback"
plugin = "loopback"
pollable = false
max_queue = 10
limits = { memory = "64M", cpu = "20%", pids = 16 }
heartbeat_timeout = 2.5
call_timeout = 2
queue = 4096
queue_bytes = 1024
backoff_initial = 0.5
backoff_max = 30
""",
        )
    )
    (spec,) = config.devices
    assert spec.name == "bench-1"
    assert spec.config == LoopbackConfig(pollable=False, max_queue=10)
    assert spec.raw == {"pollable": False, "max_queue": 10}  # only the driver's own keys
    assert not FRAMEWORK_KEYS & set(spec.raw)
    assert (spec.limits.memory_bytes, spec.limits.cpu_quota_us, spec.limits.pids) == (64 * MiB, 20_000, 16)
    assert spec.heartbeat_timeout == 2.5
    assert spec.call_timeout == 2.0
    assert type(spec.call_timeout) is float
    assert (spec.queue, spec.queue_bytes) == (4096, 1024)
    assert type(spec.queue) is int
    assert (spec.backoff_initial, spec.backoff_max) == (0.5, 30.0)


def test_a_limits_table_overrides_the_defaults_key_by_key(tmp_path: Path) -> None:
    (spec,) = load_config(write(tmp_path, LOOP + 'limits = { cpu = "50%" }\n')).devices
    assert (spec.limits.memory_bytes, spec.limits.cpu_quota_us, spec.limits.pids) == (128 * MiB, 50_000, 32)
    (spec,) = load_config(write(tmp_path, LOOP + 'limits = { memory = "32M" }\n')).devices
    assert (spec.limits.memory_bytes, spec.limits.cpu_quota_us, spec.limits.pids) == (32 * MiB, None, 32)
    (spec,) = load_config(write(tmp_path, LOOP + "limits = {}\n")).devices
    assert (spec.limits.memory_bytes, spec.limits.pids) == (128 * MiB, 32)


def test_heartbeat_defaults_above_the_call_timeout(tmp_path: Path) -> None:
    (spec,) = load_config(write(tmp_path, LOOP + "call_timeout = 10\n")).devices
    assert (spec.call_timeout, spec.heartbeat_timeout) == (10.0, 11.0)
    (spec,) = load_config(write(tmp_path, LOOP + "call_timeout = 0.5\n")).devices
    assert spec.heartbeat_timeout == 5.0


@pytest.mark.parametrize("beat", ["2", "1.5"])
def test_heartbeat_must_exceed_the_call_timeout(tmp_path: Path, beat: str) -> None:
    message = config_error(tmp_path, LOOP + f"call_timeout = 2\nheartbeat_timeout = {beat}\n")
    expected = "must be more than call_timeout (2 s): a call holds the host's loop"
    assert message == f"[devices.loop].heartbeat_timeout: {expected}"


def test_several_devices_keep_their_order(tmp_path: Path) -> None:
    text = '[devices.b]\ndriver = "loopback"\n[devices.a]\ndriver = "loopback"\nfail_open = true\n'
    config = load_config(write(tmp_path, text))
    assert [d.name for d in config.devices] == ["b", "a"]
    assert config.devices[1].config.fail_open is True


def test_no_devices_table_means_no_devices(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).devices == ()
    assert load_config(write(tmp_path, "[devices]\n")).devices == ()
    assert parse_devices("x.toml", {}) == ((), None)


def test_an_agent_grant(tmp_path: Path) -> None:
    text = (
        LOOP
        + AGENT
        + """
[agents.a.devices.loop]
ops = ["write", "recv"]
tags = ["t", "u"]
max_rate_hz = 50
"""
    )
    config = load_config(write(tmp_path, text))
    (agent,) = config.agents
    grant = agent.devices["loop"]
    assert grant == LoopbackGrant(ops=("write", "recv"), tags=("t", "u"), max_rate_hz=50.0)
    assert type(grant) is LoopbackGrant
    assert grant.rates() == {"calls": 50.0}


def test_an_inline_grant_and_an_agent_without_grants(tmp_path: Path) -> None:
    text = LOOP + AGENT + 'devices.loop = { ops = ["recv"] }\n[agents.b]\nscript = "b.py"\n'
    config = load_config(write(tmp_path, text))
    grants = {a.name: a.devices for a in config.agents}
    assert grants == {"a": {"loop": LoopbackGrant(ops=("recv",))}, "b": {}}


def test_an_empty_grant_grants_nothing(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, LOOP + AGENT + "[agents.a.devices.loop]\n"))
    grant = config.agents[0].devices["loop"]
    assert grant.ops == ()
    assert grant.tags == ()  # type: ignore[attr-defined]
    assert grant.admits({"tag": "t"}) is False


def test_device_specs_are_frozen(tmp_path: Path) -> None:
    (spec,) = load_config(write(tmp_path, LOOP)).devices
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.queue = 1  # type: ignore[misc]


# -- the device table: errors --------------------------------------------------------------------


def test_unknown_driver_plugin(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[devices.cam]\ndriver = "no-such-cam"\n')
    assert message.startswith("[devices.cam].driver: driver plugin 'no-such-cam' is not installed")
    assert "entry point group clove.drivers" in message
    assert "loopback" in message  # what is installed


def test_unknown_driver_plugin_names_the_device_table_and_key(tmp_path: Path) -> None:
    message = config_error(tmp_path, LOOP + '[devices.cam]\ndriver = "no-such-cam"\n')
    assert message.startswith("[devices.cam].driver: ")


def test_unknown_plugin_named_by_the_plugin_key(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[devices.x]\ndriver = "loopback"\nplugin = "vendor-pack"\n')
    assert "driver plugin 'vendor-pack' is not installed" in message


def test_a_plugin_that_does_not_provide_the_kind(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[devices.x]\ndriver = "lidar"\nplugin = "loopback"\n')
    assert message == "[devices.x].driver: no loaded plugin provides driver 'lidar' (provided: loopback)"


@pytest.mark.parametrize("line", ["", "driver = 5\n", 'driver = ""\n', "driver = true\n"])
def test_missing_or_bad_driver(tmp_path: Path, line: str) -> None:
    message = config_error(tmp_path, "[devices.loop]\nqueue = 5\n" + line)
    assert message == '[devices.loop].driver: required: the driver kind, e.g. "can"'


def test_bad_plugin_key(tmp_path: Path) -> None:
    assert config_error(tmp_path, LOOP + "plugin = 3\n") == "[devices.loop].plugin: expected a string, got 3"


def test_unknown_driver_key(tmp_path: Path) -> None:
    message = config_error(tmp_path, LOOP + "bogus = 1\n")
    assert message == "[devices.loop].bogus: unknown key (known: fail_open, max_queue, open_delay, pollable)"


def test_wrong_type_of_a_driver_key(tmp_path: Path) -> None:
    message = config_error(tmp_path, LOOP + 'pollable = "yes"\n')
    assert message == "[devices.loop].pollable: expected bool, got string 'yes'"


def test_a_driver_config_range_check(tmp_path: Path) -> None:
    assert (
        config_error(tmp_path, LOOP + "max_queue = 0\n")
        == "[devices.loop].max_queue: must be positive, got 0"
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("heartbeat_timeout = 0", "[devices.loop].heartbeat_timeout: expected a positive number, got 0"),
        (
            "heartbeat_timeout = -1.5",
            "[devices.loop].heartbeat_timeout: expected a positive number, got -1.5",
        ),
        ('call_timeout = "5"', "[devices.loop].call_timeout: expected a positive number, got '5'"),
        ("call_timeout = true", "[devices.loop].call_timeout: expected a positive number, got True"),
        ("call_timeout = nan", "[devices.loop].call_timeout: expected a positive number, got nan"),
        ("queue = 1.5", "[devices.loop].queue: expected a positive int, got 1.5"),
        ("queue = 0", "[devices.loop].queue: expected a positive int, got 0"),
        ("queue_bytes = true", "[devices.loop].queue_bytes: expected a positive int, got True"),
        ("backoff_initial = 0", "[devices.loop].backoff_initial: expected a positive number, got 0"),
        ("backoff_max = -1", "[devices.loop].backoff_max: expected a positive number, got -1"),
    ],
)
def test_bad_framework_numbers(tmp_path: Path, line: str, expected: str) -> None:
    assert config_error(tmp_path, LOOP + line + "\n") == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            'limits = { memory = "1K" }',
            "[devices.loop].limits.memory: memory limit must be at least 4M, got '1K'",
        ),
        (
            'limits = { memory = "lots" }',
            "[devices.loop].limits.memory: expected a size like '64M' or bytes, got 'lots'",
        ),
        (
            'limits = { cpu = "0.5%" }',
            "[devices.loop].limits.cpu: cpu quota must be at least 1000 µs per 100 ms (1%), got '0.5%'",
        ),
        ("limits = { pids = 0 }", "[devices.loop].limits.pids: expected a positive int, got 0"),
        ("limits = { swap = 1 }", "[devices.loop].limits.swap: unknown key (known: cpu, memory, pids)"),
        (
            'limits = "64M"',
            "[devices.loop].limits: expected a table like { memory = \"64M\", pids = 16 }, got '64M'",
        ),
    ],
)
def test_bad_limits(tmp_path: Path, line: str, expected: str) -> None:
    assert config_error(tmp_path, LOOP + line + "\n") == expected


@pytest.mark.parametrize("name", ["9lives", "_x", '"a.b"', '"with space"', "a" * 49, '""'])
def test_bad_device_names(tmp_path: Path, name: str) -> None:
    message = config_error(tmp_path, f'[devices.{name}]\ndriver = "loopback"\n')
    assert message.endswith("]: device names are 1-48 of [A-Za-z0-9_-], starting with a letter")
    assert message.startswith("[devices.")


def test_longest_device_name_is_fine(tmp_path: Path) -> None:
    name = "a" * 48
    assert load_config(write(tmp_path, f'[devices.{name}]\ndriver = "loopback"\n')).devices[0].name == name


def test_devices_must_be_tables(tmp_path: Path) -> None:
    assert config_error(tmp_path, "devices = 5\n") == "[devices]: expected a table of device tables"
    assert config_error(tmp_path, "[devices]\nloop = 5\n") == "[devices.loop]: expected a table, got int"


def test_the_first_bad_device_is_reported_before_plugins_load(tmp_path: Path) -> None:
    # the second table's missing driver is found before any plugin is imported
    message = config_error(tmp_path, '[devices.a]\ndriver = "no-such"\n[devices.b]\nqueue = 1\n')
    assert message == '[devices.b].driver: required: the driver kind, e.g. "can"'


# -- grants: errors ------------------------------------------------------------------------------


def test_grant_for_a_device_not_configured(tmp_path: Path) -> None:
    message = config_error(tmp_path, LOOP + AGENT + '[agents.a.devices.nope]\nops = ["write"]\n')
    assert message == "[agents.a.devices.nope]: no device 'nope' is configured (devices: loop)"


def test_grant_when_no_device_is_configured(tmp_path: Path) -> None:
    message = config_error(tmp_path, AGENT + '[agents.a.devices.loop]\nops = ["write"]\n')
    assert message == "[agents.a.devices.loop]: no device 'loop' is configured (devices: none)"


def test_grant_op_the_driver_does_not_offer(tmp_path: Path) -> None:
    message = config_error(tmp_path, LOOP + AGENT + '[agents.a.devices.loop]\nops = ["write", "fly"]\n')
    assert message == (
        "[agents.a.devices.loop].ops: driver 'loopback' has no operation 'fly' "
        "(it has: write, whoami, crash, hang, leak, break_stream, recv)"
    )


def test_unknown_grant_key(tmp_path: Path) -> None:
    message = config_error(tmp_path, LOOP + AGENT + "[agents.a.devices.loop]\nbogus = 1\n")
    assert message == "[agents.a.devices.loop].bogus: unknown key (known: max_rate_hz, ops, tags)"


def test_wrong_grant_types(tmp_path: Path) -> None:
    message = config_error(tmp_path, LOOP + AGENT + '[agents.a.devices.loop]\ntags = "x"\n')
    assert message == "[agents.a.devices.loop].tags: expected array of string, got string 'x'"
    message = config_error(tmp_path, LOOP + AGENT + '[agents.a.devices.loop]\nops = ["write", 3]\n')
    assert message == "[agents.a.devices.loop].ops[1]: expected string, got int 3"


@pytest.mark.parametrize("rate", ["0", "-5", "nan"])
def test_grant_rate_must_be_positive(tmp_path: Path, rate: str) -> None:
    message = config_error(tmp_path, LOOP + AGENT + f"[agents.a.devices.loop]\nmax_rate_hz = {rate}\n")
    # nan is refused as a value before the range check sees it
    assert message.startswith("[agents.a.devices.loop].max_rate_hz: must be positive, got ") or (
        rate == "nan" and message == "[agents.a.devices.loop].max_rate_hz: expected a finite number, got nan"
    )


def test_grant_must_be_a_table(tmp_path: Path) -> None:
    message = config_error(tmp_path, LOOP + AGENT + "devices.loop = 5\n")
    assert message == "[agents.a.devices.loop]: expected a table like { ops = [...] }, got int"
    message = config_error(tmp_path, LOOP + AGENT + "devices = 5\n")
    assert message == "[agents.a].devices: expected table, got int 5"


# -- grants over the wire ------------------------------------------------------------------------


def test_grants_from_wire() -> None:
    spec = loop_spec()
    grants = grants_from_wire({"loop": {"ops": ["recv"], "tags": ["*"]}}, {"loop": spec})
    assert grants == {"loop": LoopbackGrant(ops=("recv",), tags=("*",))}
    assert grants_from_wire({}, {"loop": spec}) == {}


@pytest.mark.parametrize(
    ("data", "message", "details"),
    [
        (["loop"], "devices must be a map of device name to grant", {}),
        ({"nope": {}}, "devices: no device 'nope' is configured", {"device": "nope"}),
        (
            {"loop": {"ops": ["fly"]}},
            "devices.loop: ops: driver 'loopback' has no operation 'fly'",
            {"device": "loop", "key": "ops"},
        ),
        ({"loop": {"bogus": 1}}, "devices.loop: bogus: unknown key", {"device": "loop", "key": "bogus"}),
        (
            {"loop": {"tags": "x"}},
            "devices.loop: tags: expected array of string",
            {"device": "loop", "key": "tags"},
        ),
        (
            {"loop": {"max_rate_hz": 0}},
            "devices.loop: max_rate_hz: must be positive",
            {"device": "loop", "key": "max_rate_hz"},
        ),
        (
            {"loop": "all"},
            "devices.loop: expected a table like { ops = [...] }, got str",
            {"device": "loop", "key": ""},
        ),
    ],
)
def test_grants_from_wire_errors_are_invalid_arguments(
    data: object, message: str, details: dict[str, str]
) -> None:
    with pytest.raises(InvalidArguments) as info:
        grants_from_wire(data, {"loop": loop_spec()})
    assert info.value.message.startswith(message)
    assert info.value.details == details


def test_a_base_grant_is_used_when_the_driver_has_none() -> None:
    spec = dataclasses.replace(
        loop_spec(), driver_class=type("Plain", (LoopbackDriver,), {"Grant": DeviceGrant})
    )
    grants = grants_from_wire({"loop": {"ops": ["write"], "max_rate_hz": 2}}, {"loop": spec})
    assert type(grants["loop"]) is DeviceGrant
    with pytest.raises(InvalidArguments, match="tags: unknown key"):
        grants_from_wire({"loop": {"tags": ["t"]}}, {"loop": spec})
