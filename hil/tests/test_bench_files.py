"""Bench files: every error names the file, the table and the key; a good file loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from clove.errors import ConfigError
from hil.bench import load_bench
from hil.harness import _toml, wire_deployment

ROOT = Path(__file__).resolve().parents[2]
GOOD = """
[bench]
deployment = "{deployment}"
duration = 10

[sims.bus]
kind = "can_bus"
wire = "motor_bus"
[sims.chip]
kind = "gpio_chip"
wire = "estop"
lines = {{ estop = 17 }}

[[faults]]
name = "press"
at = 2
kind = "gpio_press"
sim = "chip"
line = "estop"

[[assertions]]
kind = "frame_after"
after = "press"
bus = "bus"
id = 0x101
data = "hex:0000"
within_ms = 50
"""


def bench(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "b.toml"
    path.write_text(text.format(deployment=ROOT / "configs" / "rover.toml"))
    return path


def error(tmp_path: Path, text: str) -> str:
    path = bench(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_bench(path)
    message = caught.value.message
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message[len(f"{path}: ") :]


def test_a_good_bench_loads(tmp_path):
    b = load_bench(bench(tmp_path, GOOD))
    assert (b.duration, list(b.sims), b.devices) == (10.0, ["bus", "chip"], {"motor_bus": "bus", "estop": "chip"})
    assert b.faults[0].name == "press" and b.assertions[0].options["data"] == b"\x00\x00"


def test_the_shipped_benches_load():
    for path in sorted((ROOT / "hil" / "benches").glob("*.toml")):
        assert load_bench(path).assertions, path


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("duration = 10", 'duration = "ten"'), "[bench].duration: expected int or number, got str 'ten'"),
        (("duration = 10", "duration = 10\nspeed = 2"), "[bench].speed: unknown key (known: deployment, duration, name, ready_timeout, time_scale)"),
        (('kind = "can_bus"', 'kind = "lin_bus"'), "[sims.bus].kind: expected one of can_bus, motor_controller, nmea_gps, command_device, gpio_chip, fix_venue; got 'lin_bus'"),
        (("at = 2", "at = 12"), "[[faults]][0].at: expected seconds within the bench's duration (0..10), got 12"),
        (('sim = "chip"', 'sim = "bus"'), "[[faults]][0].sim: expected the name of a gpio_chip simulator (chip), got 'bus'"),
        (('line = "estop"', 'line = "brake"'), "[[faults]][0].line: the chip 'chip' has no line 'brake'"),
        (('after = "press"', 'after = "nope"'), "[[assertions]][0].after: no fault named 'nope' (faults: press)"),
        (('data = "hex:0000"', 'data = "hex:zz"'), "[[assertions]][0].data: expected hex bytes like \"hex:00000000\", got 'hex:zz'"),
        (('kind = "frame_after"', 'kind = "frame_before"'), "[[assertions]][0].kind: expected one of"),
        (("within_ms = 50", "within_ms = 50\nslack = 1"), "[[assertions]][0].slack: unknown key"),
        (("duration = 10", "duration = 10\ntime_scale = 0"), "[bench].time_scale: must be positive, got 0"),
        (('wire = "motor_bus"', 'wire = "motor_bus"\ninterface = "lin"'), "[sims.bus].interface: expected simbus or socketcan, got 'lin'"),
        (('wire = "motor_bus"', 'wire = "motor_bus"\ninterface = "socketcan"'), '[sims.bus].channel: required with interface = "socketcan"'),
        (('wire = "estop"', 'wire = "estop"\nbackend = "sysfs"'), "[sims.chip].backend: expected userspace or gpio-sim, got 'sysfs'"),
    ],
)
def test_errors_name_file_table_and_key(tmp_path, change, expected):
    old, new = change
    assert old in GOOD
    assert error(tmp_path, GOOD.replace(old, new, 1)).startswith(expected)


def test_missing_deployment_and_tables(tmp_path):
    assert error(tmp_path, GOOD.replace('deployment = "{deployment}"', 'deployment = "nowhere.toml"')).startswith("[bench].deployment: no such file")
    assert error(tmp_path, "[sims.x]\nkind = 'can_bus'\n") == "[bench]: required: a [bench] table with deployment and duration"
    assert error(tmp_path, GOOD + "\n[extra]\n") == "[extra]: unknown table (known: assertions, bench, faults, sims)"


def test_wiring_points_devices_at_simulators_and_absolutizes_scripts(tmp_path):
    import tomllib

    class Wired:
        def __init__(self, keys):  # noqa: ANN001
            self.keys = keys

        def wiring(self):  # noqa: ANN201
            return self.keys

    b = load_bench(bench(tmp_path, GOOD))
    path = wire_deployment(b, {"bus": Wired({"interface": "simbus", "channel": "x", "options": {"simbus_dir": "/d"}}), "chip": Wired({"sim_socket": "/s"})}, tmp_path)
    raw = tomllib.loads(path.read_text())
    assert raw["devices"]["motor_bus"]["interface"] == "simbus" and raw["devices"]["motor_bus"]["options"] == {"simbus_dir": "/d"}
    assert raw["devices"]["estop"]["sim_socket"] == "/s"
    assert raw["agents"]["navigator"]["script"] == str(ROOT / "examples" / "rover" / "agents" / "navigator.py")
    assert raw["interlocks"]["estop"]["actions"][0]["args"]["data"] == "hex:00000000"


def test_toml_writer_round_trips_config_shapes():
    import tomllib

    data = {"a": 1, "b": [1, "x"], "t": {"k": True, "inline": {"x": 1.5}}, "deep": {"inner": {"v": "q\"uote"}}}
    assert tomllib.loads(_toml(data)) == data


def test_a_socketcan_bus_refuses_the_faults_only_the_hub_can_make(tmp_path):
    text = GOOD.replace('wire = "motor_bus"', 'wire = "motor_bus"\ninterface = "socketcan"\nchannel = "vcan0"')
    delay = text + '\n[[faults]]\nat = 1\nkind = "can_delay"\nsim = "bus"\nms = 5\n'
    assert error(tmp_path, delay).startswith("[[faults]][1].kind: can_delay needs a simbus bus; 'bus' is a real interface")
    drop = text + '\n[[faults]]\nat = 1\nkind = "can_drop"\nsim = "bus"\nshare = 0.5\nfor = 1\n'
    assert load_bench(bench(tmp_path, drop)).sims["bus"].options["channel"] == "vcan0"


def test_time_scale_stretches_the_schedule_and_the_limits_alike(tmp_path):
    text = GOOD.replace("duration = 10", "duration = 10\ntime_scale = 3") + '\n[[faults]]\nat = 1\nkind = "can_drop"\nsim = "bus"\nshare = 0.5\nfor = 2\n'
    b = load_bench(bench(tmp_path, text))
    assert (b.time_scale, b.duration, b.ready_timeout) == (3.0, 30.0, 90.0)
    assert [(f.at, f.options.get("for")) for f in b.faults] == [(3.0, 6.0), (6.0, None)]
    assert b.assertions[0].options["within_ms"] == 150
    again = load_bench(bench(tmp_path, text), time_scale=1)  # the command line's factor wins
    assert (again.duration, again.assertions[0].options["within_ms"]) == (10.0, 50)


def test_the_linux_rover_bench_is_the_rover_bench_on_other_devices():
    plain, linux = load_bench(ROOT / "hil/benches/rover.toml"), load_bench(ROOT / "hil/benches/rover-linux.toml")
    assert linux.assertions == plain.assertions and linux.faults == plain.faults and linux.duration == plain.duration
    assert linux.sims["bus"].options["interface"] == "socketcan" and linux.sims["estop"].options["backend"] == "gpio-sim"
    plain_cfg, linux_cfg = (tomllib_load(b.deployment) for b in (plain, linux))
    assert linux_cfg["agents"] == plain_cfg["agents"] and linux_cfg["interlocks"] == plain_cfg["interlocks"]


def tomllib_load(path: Path) -> dict:
    import tomllib

    return tomllib.loads(path.read_text())


def test_time_scale_stretches_the_kernels_times_in_the_wired_copy_only(tmp_path):
    from clove.config.loader import load_config

    plain = load_config(wire_deployment(load_bench(bench(tmp_path, GOOD)), {"bus": _Wired(), "chip": _Wired()}, tmp_path))
    scaled = load_config(wire_deployment(load_bench(bench(tmp_path, GOOD), time_scale=10), {"bus": _Wired(), "chip": _Wired()}, tmp_path))
    for old, new in ((plain.sandbox, scaled.sandbox), (plain.supervisor, scaled.supervisor)):
        for key in ("start_timeout", "kill_grace", "backoff_initial", "backoff_max", "stable_after"):
            if hasattr(old, key):
                assert getattr(new, key) == 10 * getattr(old, key), key
    estop = {d.name: d for d in plain.devices}["estop"], {d.name: d for d in scaled.devices}["estop"]
    for key in ("call_timeout", "heartbeat_timeout", "backoff_initial", "backoff_max"):
        assert getattr(estop[1], key) == 10 * getattr(estop[0], key), key
    leaker = {a.name: a for a in plain.agents}["leaker"], {a.name: a for a in scaled.agents}["leaker"]
    assert leaker[1].restart_window == 10 * leaker[0].restart_window and leaker[1].max_restarts == leaker[0].max_restarts
    navigator = {a.name: a for a in scaled.agents}["navigator"]
    assert navigator.devices["motor_bus"].max_send_rate_hz == 50  # what is checked stays


class _Wired:
    def wiring(self) -> dict:
        return {}
