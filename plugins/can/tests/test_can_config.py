"""The ``[devices.NAME]`` table of a CAN device, parsed as the kernel parses it
(``CanDriver.parse_config``, which raises FieldError naming the key)."""

from __future__ import annotations

from typing import Any

import pytest

from clove.drivers import FieldError
from clove_driver_can import CanConfig, CanDriver


def parse(**table: Any) -> CanConfig:
    config = CanDriver.parse_config(table, ignore=frozenset({"driver"}))
    assert isinstance(config, CanConfig)
    return config


def test_a_full_table_parses() -> None:
    config = parse(
        driver="can",
        interface="socketcan",
        channel="can0",
        bitrate=500_000,
        fd=True,
        data_bitrate=2_000_000,
        receive_own_messages=True,
        send_timeout=0.5,
        options={"preserve_timestamps": True, "rx_queue_size": 10, "note": "x"},
    )
    assert config.bitrate == 500_000
    assert config.data_bitrate == 2_000_000
    assert config.options == {"preserve_timestamps": True, "rx_queue_size": 10, "note": "x"}
    assert config.bus_kwargs() == {
        "preserve_timestamps": True,
        "rx_queue_size": 10,
        "note": "x",
        "receive_own_messages": True,
        "bitrate": 500_000,
        "fd": True,
        "data_bitrate": 2_000_000,
    }


def test_defaults_leave_interface_settings_alone() -> None:
    config = parse(interface="virtual", channel="bus")
    assert config.bus_kwargs() == {"receive_own_messages": False}
    assert config.send_timeout == 1.0


@pytest.mark.parametrize(
    ("table", "key", "message"),
    [
        ({"interface": "virtual", "channel": "x", "baud": 5}, "baud", "unknown key"),
        ({"channel": "x"}, "interface", "required"),
        ({"interface": "virtual"}, "channel", "required"),
        ({"interface": "virtual", "channel": "x", "bitrate": 0}, "bitrate", "between 1 and 1000000"),
        ({"interface": "virtual", "channel": "x", "bitrate": 2_000_000}, "bitrate", "between"),
        ({"interface": "virtual", "channel": "x", "bitrate": "fast"}, "bitrate", "expected int"),
        (
            {"interface": "virtual", "channel": "x", "data_bitrate": 2_000_000},
            "data_bitrate",
            "needs fd = true",
        ),
        ({"interface": "virtual", "channel": "x", "fd": True, "data_bitrate": -1}, "data_bitrate", "between"),
        ({"interface": "virtual", "channel": "x", "send_timeout": 0}, "send_timeout", "more than 0"),
        ({"interface": "virtual", "channel": "x", "options": {"bitrate": 5}}, "options.bitrate", "own key"),
        ({"interface": "virtual", "channel": "x", "options": {"a": [1]}}, "options.a", "expected"),
        ({"interface": " ", "channel": "x"}, "interface", "python-can interface"),
        ({"interface": "clove", "channel": "x"}, "interface", "real one"),
        ({"interface": "virtual", "channel": ""}, "channel", "empty"),
    ],
)
def test_bad_tables_name_the_key(table: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(FieldError) as caught:
        parse(**table)
    assert caught.value.key == key
    assert message in caught.value.message


def test_validation_does_not_need_python_can() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['can'] = None\n"  # any import of python-can now fails
        "from clove.drivers import load_drivers\n"
        "cls = load_drivers(['can']).get('can')\n"
        "cfg = cls.parse_config({'interface': 'socketcan', 'channel': 'can0'})\n"
        "grant = cls.Grant(ops=('send',), send_ids=('0x100',))\n"
        "print(cls.compile_filter([{'can_id': 1, 'can_mask': 1}])({'id': 1}), cfg.channel)\n"
        "from clove.errors import DeviceUnavailable\n"
        "try:\n    cls(cfg).open()\nexcept DeviceUnavailable as err:\n    print(err.details['module'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "can0", "can"]  # opening names the missing module
