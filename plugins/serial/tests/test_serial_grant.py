"""The serial plugin as the kernel sees it: config validation, grants, and loading through the
``clove.drivers`` entry point without importing pyserial."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from clove.drivers import FieldError, TokenBucket, load_drivers
from clove.drivers.base import Driver
from clove.drivers.schema import build
from clove.errors import InvalidArguments, PermissionDenied
from clove_driver_serial import SerialConfig, SerialDriver, SerialGrant, WriteArgs

# ---- config -----------------------------------------------------------------------------------


def test_config_defaults_and_toml_values() -> None:
    config = SerialDriver.parse_config({"port": "/dev/ttyUSB0"})
    assert config == SerialConfig(port="/dev/ttyUSB0")
    assert (config.baudrate, config.bytesize, config.parity, config.stopbits) == (9600, 8, "N", 1)
    assert config.exclusive
    assert not (config.xonxoff)
    assert not (config.rtscts)
    assert not (config.dsrdtr)
    config = SerialDriver.parse_config(
        {"port": "socket://gps:4000", "baudrate": 115200, "stopbits": 1.5, "parity": "E"}
    )
    assert (config.baudrate, config.stopbits, config.parity) == (115200, 1.5, "E")


def test_framework_keys_are_ignored() -> None:
    config = SerialDriver.parse_config({"port": "loop://", "driver": "serial"}, ignore=frozenset({"driver"}))
    assert config.port == "loop://"


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ({}, "port", "required"),
        ({"port": "  "}, "port", "must name a port"),
        ({"port": 5}, "port", "expected string"),
        ({"port": "loop://", "baudrate": 0}, "baudrate", "positive"),
        ({"port": "loop://", "baudrate": "fast"}, "baudrate", "expected int"),
        ({"port": "loop://", "bytesize": 9}, "bytesize", "5, 6, 7 or 8"),
        ({"port": "loop://", "bytesize": 4}, "bytesize", "5, 6, 7 or 8"),
        ({"port": "loop://", "parity": "X"}, "parity", "N, E, O, M, S"),
        ({"port": "loop://", "stopbits": 3}, "stopbits", "1, 1.5 or 2"),
        ({"port": "loop://", "read_chunk": 0}, "read_chunk", "between 1"),
        ({"port": "loop://", "write_timeout": 0}, "write_timeout", "positive"),
        ({"port": "loop://", "exclusive": "yes"}, "exclusive", "expected bool"),
        ({"port": "loop://", "speed": 9600}, "speed", "unknown key"),
    ],
)
def test_bad_config_names_the_key(table: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(FieldError, match=words) as caught:
        SerialDriver.parse_config(table)
    assert caught.value.key == key


# ---- operations' arguments --------------------------------------------------------------------


def test_operations_are_declared_with_docs() -> None:
    ops = SerialDriver.operations()
    assert set(ops) == {"write", "set_modem", "get_modem", "flush", "reset_input"}
    assert all(spec.doc for spec in ops.values())
    assert SerialDriver.grant_ops() == (*ops, "read")


def test_bad_operation_arguments_are_refused_before_the_port() -> None:
    spec = SerialDriver.operations()["write"]
    assert Driver.parse_args(spec, {"data": b"ok"}) == WriteArgs(b"ok")
    with pytest.raises(InvalidArguments, match="data"):
        Driver.parse_args(spec, {"data": "text, not bytes"})
    with pytest.raises(InvalidArguments, match="rts"):
        Driver.parse_args(SerialDriver.operations()["set_modem"], {"rts": "high"})


# ---- grants -----------------------------------------------------------------------------------


def _grant(**table: Any) -> SerialGrant:
    return build(SerialGrant, {"ops": ["read", "write"], **table})


def test_max_write_bytes_admits_up_to_the_limit_and_names_both_when_denying() -> None:
    grant = _grant(max_write_bytes=4)
    grant.check("write", WriteArgs(b""))
    grant.check("write", WriteArgs(b"1234"))
    with pytest.raises(
        PermissionDenied, match="write of 5 bytes exceeds this grant's max_write_bytes of 4"
    ) as caught:
        grant.check("write", WriteArgs(b"12345"))
    assert caught.value.details == {"size": 5, "limit": 4}
    grant.check("flush", None)  # other ops carry no size


def test_zero_max_write_bytes_allows_only_empty_writes() -> None:
    grant = _grant(max_write_bytes=0)
    grant.check("write", WriteArgs(b""))
    with pytest.raises(PermissionDenied):
        grant.check("write", WriteArgs(b"x"))


def test_no_limit_admits_any_size() -> None:
    _grant().check("write", WriteArgs(b"x" * 1_000_000))


def test_bytes_per_second_adds_a_write_bytes_bucket_beside_calls() -> None:
    grant = _grant(bytes_per_second=100.0, max_rate_hz=10.0)
    assert grant.rates() == {"calls": 10.0, "write_bytes": 100.0}
    assert grant.cost("write", WriteArgs(b"x" * 7)) == {"calls": 1.0, "write_bytes": 7.0}
    assert grant.cost("get_modem", None) == {"calls": 1.0}
    only_bytes = _grant(bytes_per_second=50.0)
    assert only_bytes.rates() == {"write_bytes": 50.0}
    assert only_bytes.cost("write", WriteArgs(b"abc")) == {"write_bytes": 3.0}
    assert _grant().rates() == {}
    assert _grant().cost("write", WriteArgs(b"abc")) == {}


def test_write_bytes_bucket_throttles_like_the_kernel_would() -> None:
    now = [0.0]
    grant = _grant(bytes_per_second=100.0)
    bucket = TokenBucket(grant.rates()["write_bytes"], burst=100.0, clock=lambda: now[0])
    assert bucket.take(grant.cost("write", WriteArgs(b"x" * 60))["write_bytes"])
    assert not bucket.take(grant.cost("write", WriteArgs(b"x" * 60))["write_bytes"])
    assert bucket.retry_after(60.0) == pytest.approx(0.2)
    now[0] += 0.2
    assert bucket.take(60.0)


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"max_write_bytes": -1}, "max_write_bytes"),
        ({"bytes_per_second": 0}, "bytes_per_second"),
        ({"bytes_per_second": -5.0}, "bytes_per_second"),
        ({"max_rate_hz": 0}, "max_rate_hz"),
        ({"max_write_bytes": "lots"}, "max_write_bytes"),
        ({"can_ids": ["0x100"]}, "can_ids"),
    ],
)
def test_bad_grant_names_the_key(table: dict[str, Any], key: str) -> None:
    with pytest.raises(FieldError) as caught:
        _grant(**table)
    assert caught.value.key == key


# ---- loading ----------------------------------------------------------------------------------


def test_plugin_loads_through_its_entry_point() -> None:
    registry = load_drivers(["serial"])
    assert registry.get("serial") is SerialDriver
    assert registry.get("serial").Grant is SerialGrant


def test_kernel_side_use_imports_no_pyserial() -> None:
    # The kernel loads plugins to validate configs and grants; pyserial must wait for open().
    code = (
        "import sys\n"
        "from clove.drivers import load_drivers\n"
        "from clove.drivers.schema import build\n"
        "cls = load_drivers(['serial']).get('serial')\n"
        "cls.parse_config({'port': '/dev/ttyUSB0'})\n"
        "grant = build(cls.Grant, {'ops': ['write'], 'max_write_bytes': 8})\n"
        "grant.check('write', cls.parse_args(cls.operations()['write'], {'data': b'1'}))\n"
        "sys.exit(3 if 'serial' in sys.modules else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr or "pyserial was imported"
