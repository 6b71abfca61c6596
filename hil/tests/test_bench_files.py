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
        (("duration = 10", "duration = 10\nspeed = 2"), "[bench].speed: unknown key (known: deployment, duration, name, ready_timeout)"),
        (('kind = "can_bus"', 'kind = "lin_bus"'), "[sims.bus].kind: expected one of can_bus, motor_controller, nmea_gps, command_device, gpio_chip, fix_venue; got 'lin_bus'"),
        (("at = 2", "at = 12"), "[[faults]][0].at: expected seconds within the bench's duration (0..10), got 12"),
        (('sim = "chip"', 'sim = "bus"'), "[[faults]][0].sim: expected the name of a gpio_chip simulator (chip), got 'bus'"),
        (('line = "estop"', 'line = "brake"'), "[[faults]][0].line: the chip 'chip' has no line 'brake'"),
        (('after = "press"', 'after = "nope"'), "[[assertions]][0].after: no fault named 'nope' (faults: press)"),
        (('data = "hex:0000"', 'data = "hex:zz"'), "[[assertions]][0].data: expected hex bytes like \"hex:00000000\", got 'hex:zz'"),
        (('kind = "frame_after"', 'kind = "frame_before"'), "[[assertions]][0].kind: expected one of"),
        (("within_ms = 50", "within_ms = 50\nslack = 1"), "[[assertions]][0].slack: unknown key"),
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
