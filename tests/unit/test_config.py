"""clove.config: defaults, a full file, and error messages that name file, table and key."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

from clove.config import (
    BACKENDS,
    DEFAULT_SOCKET,
    AgentConfig,
    KernelConfig,
    PostmortemSection,
    default_state_dir,
    load_config,
    parse_cpu,
    parse_memory,
    parse_pids,
    validate_name,
)
from clove.errors import ConfigError

MiB = 1 << 20


def write(tmp_path: Path, text: str, name: str = "kernel.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.code == "config.invalid"
    return info.value


# -- defaults ----------------------------------------------------------------------------------


def test_none_gives_defaults() -> None:
    config = load_config(None)
    assert config == KernelConfig()
    assert config.source is None
    assert config.agents == ()
    k, s, sv = config.kernel, config.sandbox, config.supervisor
    assert (k.socket, k.state_dir, k.max_message_bytes, k.log_level, k.audit_ring) == (
        DEFAULT_SOCKET,
        default_state_dir(),
        MiB,
        "info",
        10_000,
    )
    assert (s.backend, s.require_isolation, s.uid_base, s.landlock, s.start_timeout, s.kill_grace) == (
        "auto",
        False,
        200_000,
        True,
        10.0,
        3.0,
    )
    assert (sv.backoff_initial, sv.backoff_max, sv.stable_after) == (0.5, 30.0, 10.0)
    assert config.logs.max_bytes == MiB
    assert config.retention.max_exited == 100
    pm = config.postmortem
    assert (pm.enabled, pm.keep, pm.log_tail_bytes, pm.journal_records, pm.max_bytes) == (True, 10, 64 * 1024, 200, MiB)


def test_empty_file_gives_defaults_with_source(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    config = load_config(path)
    assert config == dataclasses.replace(KernelConfig(), source=str(path))


def test_config_is_frozen() -> None:
    config = load_config(None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.kernel.socket = "/elsewhere"  # type: ignore[misc]


def test_default_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_dir() == str(tmp_path / "clove")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_state_dir() == "/var/lib/clove"


# -- a full, valid file ------------------------------------------------------------------------

FULL = """
[kernel]
socket = "/run/clove/ctl.sock"
state_dir = "state"
max_message_bytes = 65536
log_level = "debug"
audit_ring = 500

[sandbox]
backend = "cgroup2"
require_isolation = true
uid_base = 300000
landlock = false
start_timeout = 5        # an int where a float is expected is fine
kill_grace = 1.5

[supervisor]
backoff_initial = 0.25
backoff_max = 8
stable_after = 20.0

[logs]
max_bytes = 4096

[retention]
max_exited = 7

[postmortem]
enabled = false
keep = 3
log_tail_bytes = 8192
journal_records = 50
max_bytes = 100000

[agents.sensor-1]
script = "agents/sensor.py"
args = ["--rate", "10"]
env = { LEVEL = "debug" }
sandboxed = false
network = true
memory = "64M"
cpu = "20%"
pids = 32
restart = "on-failure"
max_restarts = 0
restart_window = 60
interpreter = "/usr/bin/python3"
working_dir = "work"

[agents.plain]
script = "/opt/plain.py"
cpu_quota = 50000
"""


def test_full_file(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    config = load_config(path)
    assert config.source == str(path)
    assert config.kernel.socket == "/run/clove/ctl.sock"
    assert config.kernel.state_dir == str(tmp_path.resolve() / "state")
    assert (config.kernel.max_message_bytes, config.kernel.log_level, config.kernel.audit_ring) == (
        65536,
        "debug",
        500,
    )
    assert config.sandbox.backend == "cgroup2"
    assert config.sandbox.require_isolation is True
    assert config.sandbox.landlock is False
    assert config.sandbox.uid_base == 300000
    assert config.sandbox.start_timeout == 5.0
    assert type(config.sandbox.start_timeout) is float
    assert config.sandbox.kill_grace == 1.5
    assert (
        config.supervisor.backoff_initial,
        config.supervisor.backoff_max,
        config.supervisor.stable_after,
    ) == (0.25, 8.0, 20.0)
    assert config.logs.max_bytes == 4096
    assert config.retention.max_exited == 7
    assert config.postmortem == PostmortemSection(enabled=False, keep=3, log_tail_bytes=8192, journal_records=50, max_bytes=100_000)
    sensor, plain = config.agents
    assert sensor == AgentConfig(
        name="sensor-1",
        script=str(tmp_path.resolve() / "agents" / "sensor.py"),
        args=("--rate", "10"),
        env={"LEVEL": "debug"},
        sandboxed=False,
        network=True,
        memory_bytes=64 * MiB,
        cpu_quota_us=20_000,
        pids=32,
        restart="on-failure",
        max_restarts=0,
        restart_window=60.0,
        interpreter="/usr/bin/python3",
        working_dir=str(tmp_path.resolve() / "work"),
    )
    assert plain == AgentConfig(name="plain", script="/opt/plain.py", cpu_quota_us=50_000)


def test_relative_paths_resolve_against_the_config_dir_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc" / "clove"
    conf_dir.mkdir(parents=True)
    path = write(
        conf_dir, '[kernel]\nstate_dir = "../state"\n[agents.a]\nscript = "./a.py"\nworking_dir = "w"\n'
    )
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(os.path.relpath(path))
    assert config.kernel.state_dir == str((tmp_path / "etc" / "state").resolve())
    assert config.agents[0].script == str((conf_dir / "a.py").resolve())
    assert config.agents[0].working_dir == str((conf_dir / "w").resolve())


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_is_accepted(tmp_path: Path, backend: str) -> None:
    assert load_config(write(tmp_path, f'[sandbox]\nbackend = "{backend}"\n')).sandbox.backend == backend


# -- errors name file, table and key -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "table", "key", "message"),
    [
        (
            '[sandbox]\nbackend = "docker"\n',
            "sandbox",
            "backend",
            "expected one of auto, cgroup2, cgroup1, rlimit, none; got 'docker'",
        ),
        (
            '[kernel]\nlog_level = "loud"\n',
            "kernel",
            "log_level",
            "expected one of debug, info, warning, error; got 'loud'",
        ),
        ("[sandbox]\nuid_base = true\n", "sandbox", "uid_base", "expected int, got bool True"),
        ('[sandbox]\nlandlock = "yes"\n', "sandbox", "landlock", "expected bool, got str 'yes'"),
        ("[sandbox]\nrequire_isolation = 1\n", "sandbox", "require_isolation", "expected bool, got int 1"),
        ("[sandbox]\nkill_grace = true\n", "sandbox", "kill_grace", "expected number, got bool True"),
        ('[sandbox]\nstart_timeout = "10s"\n', "sandbox", "start_timeout", "expected number, got str '10s'"),
        ("[kernel]\nsocket = 5\n", "kernel", "socket", "expected string, got int 5"),
        ("[kernel]\nmax_message_bytes = 1.5\n", "kernel", "max_message_bytes", "expected int, got float 1.5"),
        ("[kernel]\nmax_message_bytes = 0\n", "kernel", "max_message_bytes", "must be positive, got 0"),
        ("[kernel]\naudit_ring = -1\n", "kernel", "audit_ring", "must be positive, got -1"),
        ("[sandbox]\nkill_grace = nan\n", "sandbox", "kill_grace", "must be positive, got nan"),
        (
            "[supervisor]\nbackoff_initial = 0.0\n",
            "supervisor",
            "backoff_initial",
            "must be positive, got 0.0",
        ),
        ("[logs]\nmax_bytes = 0\n", "logs", "max_bytes", "must be positive, got 0"),
        ("[retention]\nmax_exited = 0\n", "retention", "max_exited", "must be positive, got 0"),
        ("[kernel]\nsockets = 1\n", "kernel", "sockets", "unknown key (known: "),
        ('[sandbox]\nbackend = "none"\nzzz = 1\naaa = 2\n', "sandbox", "aaa", "unknown key (known: "),
        ("[retention]\nmax_exited = 3\nkeep = 1\n", "retention", "keep", "unknown key (known: max_exited)"),
        ("[postmortem]\nkeep = 0\n", "postmortem", "keep", "must be positive, got 0"),
        ('[postmortem]\nenabled = "yes"\n', "postmortem", "enabled", "expected bool, got str 'yes'"),
        ("[postmortem]\njournal_records = 1.5\n", "postmortem", "journal_records", "expected int, got float 1.5"),
        ("[postmortem]\nlog_tail_bytes = -1\n", "postmortem", "log_tail_bytes", "must be positive, got -1"),
        ("[postmortem]\nmax_bytes = 4096\n", "postmortem", "max_bytes", "must be at least 65536"),
        (
            "[postmortem]\nkept = 3\n",
            "postmortem",
            "kept",
            "unknown key (known: enabled, journal_records, keep, log_tail_bytes, max_bytes)",
        ),
    ],
)
def test_section_errors(tmp_path: Path, text: str, table: str, key: str, message: str) -> None:
    path = write(tmp_path, text)
    err = config_error(path)
    assert err.message.startswith(f"{path}: [{table}].{key}: {message}")
    assert err.details == {"table": table, "key": key}


def test_unknown_key_lists_the_known_ones(tmp_path: Path) -> None:
    err = config_error(write(tmp_path, "[supervisor]\nbackof_max = 1\n"))
    assert err.message.endswith("unknown key (known: backoff_initial, backoff_max, stable_after)")


@pytest.mark.parametrize("table", ["kernell", "drivers", "zzz"])
def test_unknown_table(tmp_path: Path, table: str) -> None:
    path = write(tmp_path, f"[{table}]\nx = 1\n")
    err = config_error(path)
    assert (
        err.message
        == f"{path}: [{table}]: unknown table (known: agents, devices, egress, fleet, interlocks, journal, kernel, limits, llm, logs, metrics, postmortem, recording, retention, sandbox, supervisor)"
    )


@pytest.mark.parametrize("table", ["kernel", "sandbox", "supervisor", "logs", "retention", "postmortem"])
def test_section_that_is_not_a_table(tmp_path: Path, table: str) -> None:
    path = write(tmp_path, f"{table} = 5\n")
    assert config_error(path).message == f"{path}: [{table}]: expected a table, got int"


def test_agents_that_is_not_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, "agents = [1, 2]\n")
    assert config_error(path).message == f"{path}: [agents]: expected a table of agent tables"


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[kernel\nsocket = \n")
    err = config_error(path)
    assert err.message.startswith(f"{path}: invalid TOML: ")
    assert err.__cause__ is None
    assert err.__suppress_context__, "no chained tomllib traceback"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    assert config_error(path).message == f"{path}: no such file"


def test_unreadable_path(tmp_path: Path) -> None:
    err = config_error(tmp_path)  # a directory
    assert err.message.startswith(f"{tmp_path}: cannot read: ")


# -- agents ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "key", "message"),
    [
        ("", "script", "required"),
        ("script = 5", "script", "expected string, got int 5"),
        ('script = "a.py"\nargs = "--x"', "args", "expected array, got str '--x'"),
        ('script = "a.py"\nargs = ["--x", 1]', "args", "expected an array of strings"),
        ('script = "a.py"\nenv = { A = 1 }', "env", "expected a table of strings"),
        ('script = "a.py"\nenv = ["A=1"]', "env", "expected table, got list"),
        ('script = "a.py"\nsandboxed = "no"', "sandboxed", "expected bool, got str 'no'"),
        ('script = "a.py"\nnetwork = 1', "network", "expected bool, got int 1"),
        ('script = "a.py"\nmemory = "lots"', "memory", "expected a size like '64M' or bytes, got 'lots'"),
        ('script = "a.py"\nmemory = "1M"', "memory", "memory limit must be at least 4M, got '1M'"),
        ('script = "a.py"\nmemory = true', "memory", "expected a size like '64M' or bytes, got True"),
        (
            'script = "a.py"\ncpu = "fast"',
            "cpu",
            "expected a percentage like '20%' or a quota in µs, got 'fast'",
        ),
        (
            'script = "a.py"\ncpu = "0.5%"',
            "cpu",
            "cpu quota must be at least 1000 µs per 100 ms (1%), got '0.5%'",
        ),
        ('script = "a.py"\ncpu = "20%"\ncpu_quota = 20000', "cpu", "give either cpu or cpu_quota, not both"),
        ('script = "a.py"\npids = 0', "pids", "expected a positive int, got 0"),
        ('script = "a.py"\npids = "64"', "pids", "expected a positive int, got '64'"),
        (
            'script = "a.py"\nrestart = "sometimes"',
            "restart",
            "expected one of never, on-failure, always; got 'sometimes'",
        ),
        ('script = "a.py"\nmax_restarts = -1', "max_restarts", "must be >= 0, got -1"),
        ('script = "a.py"\nmax_restarts = true', "max_restarts", "expected int, got bool True"),
        ('script = "a.py"\nrestart_window = 0', "restart_window", "must be positive, got 0.0"),
        ('script = "a.py"\ninterpreter = 3', "interpreter", "expected string, got int 3"),
        ('script = "a.py"\nworking_dir = false', "working_dir", "expected string, got bool False"),
        ('script = "a.py"\ndevice_wait = "maybe"', "device_wait", "expected one of start, fail; got 'maybe'"),
        ('script = "a.py"\ndevice_wait = true', "device_wait", "expected string, got bool True"),
        ('script = "a.py"\ndevice_timeout = 0', "device_timeout", "must be positive, got 0.0"),
        ('script = "a.py"\ndevice_timeout = "10s"', "device_timeout", "expected number, got str '10s'"),
        ('script = "a.py"\ndevice_timeout = inf', "device_timeout", "must be a finite number of seconds, got inf"),
        ('script = "a.py"\nmemroy = "64M"', "memroy", "unknown key (known: "),
    ],
)
def test_agent_errors(tmp_path: Path, body: str, key: str, message: str) -> None:
    path = write(tmp_path, f"[agents.worker]\n{body}\n")
    err = config_error(path)
    assert err.message.startswith(f"{path}: [agents.worker].{key}: {message}")
    assert err.details == {"table": "agents.worker", "key": key}


def test_agent_that_is_not_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, "[agents]\nworker = 5\n")
    assert config_error(path).message == f"{path}: [agents.worker]: expected a table, got int"


@pytest.mark.parametrize("name", ["-lead", ".hidden", "has space", "ünï", "x" * 64, "a/b", "a\\n"])
def test_agent_name_validation(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f'[agents."{name}"]\nscript = "a.py"\n')
    err = config_error(path)
    assert err.message.startswith(
        f"{path}: [agents.{name.replace(chr(92) + 'n', chr(10))}]: agent names are 1-63 of"
    )


def test_valid_agent_names(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[agents."A.b_c-9"]\nscript = "a.py"\n[agents.' + "x" * 63 + ']\nscript = "b.py"\n'
    )
    assert [a.name for a in load_config(path).agents] == ["A.b_c-9", "x" * 63]


def test_device_wait_defaults_and_choices(tmp_path: Path) -> None:
    path = write(tmp_path, '[agents.a]\nscript = "a.py"\n[agents.b]\nscript = "b.py"\ndevice_wait = "fail"\ndevice_timeout = 5\n')
    a, b = load_config(path).agents
    assert (a.device_wait, a.device_timeout) == ("start", 30.0)
    assert (b.device_wait, b.device_timeout) == ("fail", 5.0)


def test_cpu_quota_alone(tmp_path: Path) -> None:
    path = write(tmp_path, '[agents.a]\nscript = "a.py"\ncpu_quota = "150%"\n')
    assert load_config(path).agents[0].cpu_quota_us == 150_000


# -- value parsers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("64M", 64 * MiB),
        ("64m", 64 * MiB),
        ("64MB", 64 * MiB),
        ("512MiB", 512 * MiB),
        (" 256 M ", 256 * MiB),
        ("1.5G", 3 * (1 << 29)),
        ("1G", 1 << 30),
        ("2T", 2 << 40),
        ("4096K", 4 * MiB),
        (str(5 * MiB), 5 * MiB),
        (4 * MiB, 4 * MiB),
        (1 << 40, 1 << 40),
    ],
)
def test_parse_memory_good(value: object, expected: int) -> None:
    assert parse_memory(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "M",
        "lots",
        "-64M",
        "64X",
        "64 MM",
        "0x40M",
        "1e3M",
        "64M;",
        "9" * 400,
        "9" * 300 + "T",
        True,
        False,
        64.0,
        None,
        [64],
        (4 * MiB) - 1,
        0,
        -1,
        "3M",
    ],
)
def test_parse_memory_bad(value: object) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(value))):
        parse_memory(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20%", 20_000),
        (" 20 % ", 20_000),
        ("1%", 1000),
        ("150%", 150_000),
        ("33.3333%", 33_333),
        (1000, 1000),
        (250_000, 250_000),
    ],
)
def test_parse_cpu_good(value: object, expected: int) -> None:
    assert parse_cpu(value) == expected


@pytest.mark.parametrize(
    "value",
    ["0.5%", "20", "%", "abc%", "-20%", "inf%", "nan%", "-inf%", "1e308%", True, 20.0, None, 999, 0, -5],
)
def test_parse_cpu_bad(value: object) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(value))):
        parse_cpu(value)


@pytest.mark.parametrize("value", [1, 64, 1 << 20])
def test_parse_pids_good(value: int) -> None:
    assert parse_pids(value) == value


@pytest.mark.parametrize("value", [0, -1, True, False, "64", 64.0, None])
def test_parse_pids_bad(value: object) -> None:
    with pytest.raises(ValueError, match=f"expected a positive int, got {re.escape(repr(value))}"):
        parse_pids(value)


@pytest.mark.parametrize("name", ["a", "A", "0", "agent-1", "a.b_c", "x" * 63])
def test_validate_name_good(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "-a", "_a", ".a", "a b", "a/b", "../x", "x" * 64, "a\n", "\na", "ä", 5, None, b"a"]
)
def test_validate_name_bad(name: object) -> None:
    with pytest.raises(ValueError, match="agent names are 1-63 of"):
        validate_name(name)


def test_limits_defaults_overrides_and_ceilings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[limits]\nevent_queue_bytes = "1M"\nsubscriptions = 10\nmemory_bytes = "128M"\n'
        '[limits.agents.big]\nmemory_bytes = "1G"\nweight = 2.0\n'
        '[journal]\nmax_file_bytes = "1M"\nkeep_files = 3\n',
    )
    config = load_config(path)
    default = config.limits.for_agent("anyone")
    assert default.event_queue_bytes == 1 << 20 and default.subscriptions == 10
    big = config.limits.for_agent("big")
    assert big.memory_bytes == 1 << 30 and big.weight == 2.0
    assert big.event_queue_bytes == 1 << 20  # an override starts from the kernel-wide table
    assert config.journal.max_file_bytes == 1 << 20 and config.journal.keep_files == 3


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[limits]\nmemory_bytes = "8G"\n', "[limits].memory_bytes: 8589934592 is above max_memory_bytes"),
        ("[limits]\nsubscriptions = 0\n", "[limits].subscriptions: must be positive"),
        ('[limits.agents.x]\nmailbox_bytes = "lots"\n', "[limits.agents.x].mailbox_bytes: expected a size"),
        ("[limits.agents.x]\nbogus = 1\n", "[limits.agents.x].bogus: unknown key"),
        ('[journal]\nmax_file_bytes = "1K"\n', "[journal].max_file_bytes: must be at least 65536"),
    ],
)
def test_limits_errors_name_the_table_and_key(tmp_path: Path, toml: str, message: str) -> None:
    assert message in config_error(write(tmp_path, toml)).message
