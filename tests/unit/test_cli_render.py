"""clove.cli: the human tables, the argument parser, and errors that never need a kernel."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from clove.cli import render
from clove.cli.main import build_parser, main

MiB = 1 << 20
OPERATOR_COMMANDS = ["ps", "spawn", "kill", "pause", "resume", "rm", "logs", "audit"]
POSITIONALS: dict[str, list[str]] = {
    "spawn": ["n", "/s.py"],
    "kill": ["n"],
    "pause": ["n"],
    "resume": ["n"],
    "rm": ["n"],
    "logs": ["n"],
}


# -- table -------------------------------------------------------------------------------------


def test_table_aligns_columns() -> None:
    out = render.table(["ID", "NAME", "STATE"], [[1, "sensor", "running"], [12, "a", None]])
    assert out.splitlines() == [
        "ID  NAME    STATE",
        "1   sensor  running",
        "12  a       -",
    ]


def test_table_strips_trailing_spaces_and_widens_to_the_longest_cell() -> None:
    out = render.table(["A", "B"], [["long value", ""], ["x", "y"]])
    lines = out.splitlines()
    assert lines == ["A           B", "long value", "x           y"]
    assert all(line == line.rstrip() for line in lines)


def test_table_with_no_rows_is_the_header() -> None:
    assert render.table(["ID", "NAME"], []) == "ID  NAME"


# -- cells -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (None, "-"),
        (0, "0B"),
        (1023, "1023B"),
        (1024, "1.0K"),
        (1536, "1.5K"),
        (64 * MiB, "64.0M"),
        (3 << 30, "3.0G"),
        (5 << 40, "5120.0G"),
    ],
)
def test_human_bytes(n: int | None, text: str) -> None:
    assert render.human_bytes(n) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "-"),
        (-1, "-"),
        (0.4, "0s"),
        (5, "5s"),
        (59.4, "59s"),
        (59.7, "1m00s"),
        (61, "1m01s"),
        (3599.7, "1h00m"),
        (3600, "1h00m"),
        (3 * 3600 + 5 * 60 + 59, "3h05m"),
        (100 * 3600, "100h00m"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert render.human_duration(seconds) == text


@pytest.mark.parametrize(
    ("agent", "text"),
    [
        ({}, "-"),
        ({"exit_reason": None, "exit_code": 3}, "-"),
        ({"exit_reason": "exited", "exit_code": 0}, "exited(0)"),
        ({"exit_reason": "exited", "exit_code": 2}, "exited(2)"),
        ({"exit_reason": "signaled", "exit_signal": 11}, "signaled(11)"),
        ({"exit_reason": "oom_killed", "exit_signal": 9}, "oom_killed"),
        ({"exit_reason": "killed"}, "killed"),
        ({"exit_reason": "failed_to_start"}, "failed_to_start"),
        ({"exit_reason": "start_timeout"}, "start_timeout"),
    ],
)
def test_exit_cell(agent: dict[str, Any], text: str) -> None:
    assert render.exit_cell(agent) == text


@pytest.mark.parametrize(
    ("limits", "text"),
    [
        ({}, "-"),
        ({"memory": {"requested": None, "enforced": False}}, "-"),
        ({"memory": {"requested": 64 * MiB, "enforced": True}}, "memory=64.0M"),
        ({"memory": {"requested": 64 * MiB, "enforced": False}}, "memory=64.0M!"),
        ({"memory": {"requested": 64 * MiB}}, "memory=64.0M!"),  # not reported as enforced: not enforced
        ({"cpu": {"requested": 20_000, "enforced": True}}, "cpu=20%"),
        ({"cpu": {"requested": 12_500, "enforced": False}}, "cpu=12.5%!"),
        ({"pids": {"requested": 64, "enforced": True}}, "pids=64"),
        (
            {
                "pids": {"requested": 8, "enforced": False},
                "cpu": {"requested": 150_000, "enforced": True},
                "memory": {"requested": 1 << 30, "enforced": False},
            },
            "memory=1.0G!,cpu=150%,pids=8!",
        ),
        ({"memory": None, "gpu": {"requested": 1, "enforced": True}}, "-"),
    ],
)
def test_limits_cell(limits: dict[str, Any], text: str) -> None:
    assert render.limits_cell({"backend": "rlimit", "limits": limits}) == text


def test_limits_cell_without_a_report() -> None:
    assert render.limits_cell({}) == "-"


def test_agents_table() -> None:
    agents = [
        {
            "id": 1,
            "name": "sensor",
            "pid": 4242,
            "state": "running",
            "uptime": 75,
            "restarts": 2,
            "exit_reason": None,
            "sandboxed": True,
            "isolation": {
                "backend": "cgroup2",
                "limits": {"memory": {"requested": 64 * MiB, "enforced": True}},
            },
        },
        {
            "id": 2,
            "name": "trusted",
            "pid": None,
            "state": "exited",
            "uptime": 0,
            "restarts": 0,
            "exit_reason": "exited",
            "exit_code": 1,
            "sandboxed": False,
            "isolation": {"backend": "cgroup2"},
        },
        {"id": 3, "name": "brief", "state": "starting"},  # what an agent (not an operator) sees
    ]
    assert render.agents_table(agents).splitlines() == [
        "ID  NAME     PID   STATE     UPTIME  RESTARTS  EXIT       SANDBOX  LIMITS",
        "1   sensor   4242  running   1m15s   2         -          cgroup2  memory=64.0M",
        "2   trusted  -     exited    -       0         exited(1)  none     -",
        "3   brief    -     starting  -       0         -          -        -",
    ]


def test_audit_table() -> None:
    stamp = 1_700_000_000.0
    clock = time.strftime("%H:%M:%S", time.localtime(stamp))
    entries = [
        {
            "id": 1,
            "timestamp": stamp,
            "category": "SYSCALL",
            "event_type": "agent.spawn",
            "agent_name": "a",
            "decision": "allow",
            "code": None,
            "duration_us": 120,
        },
        {
            "id": 2,
            "timestamp": stamp,
            "category": "SECURITY",
            "event_type": "proto.rejected",
            "details": {"caller": "operator"},
            "decision": "deny",
            "code": "proto.malformed",
        },
        {
            "id": 3,
            "timestamp": stamp,
            "category": "SYSCALL",
            "event_type": "agent.list",
            "agent_id": 7,
            "decision": "allow",
        },
        {"id": 4, "timestamp": stamp, "category": "AGENT_LIFECYCLE", "event_type": "agent.exited"},
    ]
    assert render.audit_table(entries).splitlines() == [
        "ID  TIME      CATEGORY         EVENT           AGENT     DECISION  CODE             µS",
        f"1   {clock}  SYSCALL          agent.spawn     a         allow     -                120",
        f"2   {clock}  SECURITY         proto.rejected  operator  deny      proto.malformed  -",
        f"3   {clock}  SYSCALL          agent.list      7         allow     -                -",
        f"4   {clock}  AGENT_LIFECYCLE  agent.exited    -         -         -                -",
    ]


# -- the parser --------------------------------------------------------------------------------


def test_spawn_parses_every_limit() -> None:
    args = build_parser().parse_args(
        [
            "spawn",
            "NAME",
            "SCRIPT",
            "--memory",
            "256M",
            "--cpu",
            "20%",
            "--pids",
            "64",
            "--restart",
            "on-failure",
            "--network",
        ]
    )
    assert (args.command, args.name, args.script, args.args) == ("spawn", "NAME", "SCRIPT", [])
    assert (args.memory, args.cpu, args.pids, args.restart, args.network) == (
        "256M",
        "20%",
        64,
        "on-failure",
        True,
    )
    assert (args.no_sandbox, args.max_restarts, args.restart_window, args.env, args.json, args.socket) == (
        False,
        5,
        300,
        None,
        False,
        None,
    )
    assert args.timeout == 30.0


def test_spawn_passes_script_arguments_after_double_dash() -> None:
    args = build_parser().parse_args(
        ["spawn", "--env", "A=1", "--env", "B=2", "n", "/s.py", "--", "--rate", "10"]
    )
    assert args.args == ["--rate", "10"]
    assert args.env == ["A=1", "B=2"]
    assert build_parser().parse_args(["spawn", "n", "/s.py", "x", "y"]).args == ["x", "y"]


def test_spawn_script_arguments_after_options() -> None:
    from clove.cli.main import parse_cli

    args = parse_cli(["spawn", "n", "/s.py", "--network", "--", "--rate", "10"])
    assert args.args == ["--rate", "10"]
    assert args.network
    assert parse_cli(["spawn", "n", "/s.py", "a", "--", "-b"]).args == ["a", "-b"]


@pytest.mark.parametrize("command", OPERATOR_COMMANDS)
def test_every_operator_command_takes_socket_and_json(command: str) -> None:
    argv = [command, *POSITIONALS.get(command, []), "--socket", "/run/c.sock", "--json", "--timeout", "2.5"]
    args = build_parser().parse_args(argv)
    assert (args.command, args.socket, args.json, args.timeout) == (command, "/run/c.sock", True, 2.5)
    assert callable(args.func)


def test_kernel_command() -> None:
    args = build_parser().parse_args(
        [
            "kernel",
            "--socket",
            "/run/c.sock",
            "--config",
            "k.toml",
            "--state-dir",
            "/s",
            "--log-level",
            "debug",
        ]
    )
    assert (args.socket, args.config, args.state_dir, args.log_level) == (
        "/run/c.sock",
        "k.toml",
        "/s",
        "debug",
    )


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nope"],
        ["spawn", "only-name"],
        ["spawn", "n", "/s.py", "--restart", "sometimes"],
        ["spawn", "n", "/s.py", "--pids", "many"],
        ["kill"],
        ["logs", "n", "--tail", "x"],
        ["kernel", "--log-level", "loud"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: clove" in capsys.readouterr().err


# -- main: errors are one line on stderr, exit status 1 ----------------------------------------


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    assert out == ""
    assert err.endswith("\n"), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert err.startswith("clove: ")
    return err.rstrip("\n")


def test_no_kernel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sock = tmp_path / "none.sock"
    assert main(["ps", "--socket", str(sock)]) == 1
    assert (
        one_line_error(capsys)
        == f"clove: no kernel running: {sock} does not exist (start one with 'clove kernel')"
    )


def test_no_kernel_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock = tmp_path / "env.sock"
    monkeypatch.setenv("CLOVE_SOCKET", str(sock))
    assert main(["kill", "a"]) == 1
    assert str(sock) in one_line_error(capsys)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--memory", "lots"], "clove: spawn: expected a size like '64M' or bytes, got 'lots'"),
        (["--memory", "1M"], "clove: spawn: memory limit must be at least 4M, got '1M'"),
        (["--cpu", "0.1%"], "clove: spawn: cpu quota must be at least 1000 µs per 100 ms (1%), got '0.1%'"),
    ],
)
def test_spawn_bad_limits(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "a.py"
    script.write_text("")
    assert main(["spawn", "a", str(script), "--socket", str(tmp_path / "none.sock"), *extra]) == 1
    assert one_line_error(capsys) == message


def test_spawn_cpu_that_is_neither_percent_nor_int(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "a.py"
    script.write_text("")
    assert main(["spawn", "a", str(script), "--cpu", "fast", "--socket", str(tmp_path / "none.sock")]) == 1
    assert one_line_error(capsys).startswith("clove: spawn: ")  # the text is int()'s own message today


def test_spawn_missing_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "missing.py"
    assert main(["spawn", "a", str(script), "--socket", str(tmp_path / "none.sock")]) == 1
    assert one_line_error(capsys) == f"clove: spawn: script not found: {script}"


def test_spawn_bad_env(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "a.py"
    script.write_text("")
    assert (
        main(["spawn", "a", str(script), "--env", "NOEQUALS", "--socket", str(tmp_path / "none.sock")]) == 1
    )
    assert one_line_error(capsys) == "clove: spawn: --env expects KEY=VALUE, got 'NOEQUALS'"


def test_audit_missing_journal_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = tmp_path / "journal.jsonl"
    assert main(["audit", "--file", str(journal)]) == 1
    assert one_line_error(capsys) == f"clove: audit: no journal at {journal}"
