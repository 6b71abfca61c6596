"""The ``[metrics]`` table: off by default, loopback for a bare port, clear errors for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from clove.config import load_config
from clove.config.prometheus import parse_listen
from clove.errors import ConfigError


def load(tmp_path: Path, text: str):  # noqa: ANN201
    path = tmp_path / "kernel.toml"
    path.write_text(text)
    return load_config(path)


def test_off_by_default(tmp_path: Path) -> None:
    assert load(tmp_path, "").metrics.listen is None
    assert load_config(None).metrics.listen is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9464", ("127.0.0.1", 9464)),
        (9464, ("127.0.0.1", 9464)),
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("0.0.0.0:9464", ("0.0.0.0", 9464)),
        ("[::1]:9464", ("::1", 9464)),
    ],
)
def test_listen_forms(value: object, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


def test_a_full_table(tmp_path: Path) -> None:
    m = load(tmp_path, '[metrics]\nlisten = "127.0.0.1:9464"\ninterval = 0.5\nforget_after = 60\nmax_agent_series = 50\n').metrics
    assert (m.listen, m.interval, m.forget_after, m.max_agent_series) == (("127.0.0.1", 9464), 0.5, 60.0, 50)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('listen = "localhost:9464"', "expected an IP address"),
        ('listen = "127.0.0.1:99999"', "between 1 and 65535"),
        ('listen = "127.0.0.1:"', "between 1 and 65535"),
        ('listen = "[::1]9464"', "[ipv6]:port"),
        ("listen = true", "expected 'host:port'"),
        ("interval = 0.01", "between 0.1 and 60"),
        ("interval = nan", "must be positive"),
        ("forget_after = inf", "finite"),
        ("max_agent_series = 0", "must be positive"),
        ("max_agent_series = 10000000", "at most"),
        ("port = 9464", "unknown key"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, f"[metrics]\n{table}\n")
    assert "[metrics]." in err.value.message and message in err.value.message
