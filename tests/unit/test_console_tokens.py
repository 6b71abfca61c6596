"""The console's token file: made 0640 with the control socket's group, reused, and refused
when others could read it or it is not a plain file of ours; where the console listens."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from clove.cli.console import hil_results
from clove.cli.console.listen import Listen, parse_listen
from clove.cli.console.tokens import Role, TokenFileError, default_path, load_or_create


def test_made_once_mode_0640_with_the_group_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    group = os.getegid() if os.geteuid() != 0 else 4242  # root can give any group
    made = load_or_create(str(path), group)
    info = path.stat()
    assert info.st_mode & 0o777 == 0o640 and info.st_gid == group
    assert made.operator != made.readonly and len(made.operator) >= 40
    again = load_or_create(str(path), group)
    assert (again.operator, again.readonly) == (made.operator, made.readonly)
    assert made.role_of(made.operator) is Role.OPERATOR and made.role_of(made.readonly) is Role.READONLY
    assert made.role_of("") is None and made.role_of(made.operator[:-1]) is None


@pytest.mark.parametrize("mode", [0o644, 0o660, 0o642])
def test_a_file_others_could_read_or_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "tokens.json"
    load_or_create(str(path), None)
    path.chmod(mode)
    with pytest.raises(TokenFileError, match="expected 0640 or stricter"):
        load_or_create(str(path), None)


def test_a_symlink_or_a_malformed_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    load_or_create(str(target), None)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    with pytest.raises(TokenFileError, match="cannot open"):
        load_or_create(str(link), None)
    bad = tmp_path / "bad.json"
    for content in ("not json", json.dumps({"operator": "short", "readonly": "short2"}), json.dumps({"operator": "a" * 20, "readonly": "a" * 20}), "[]"):
        bad.write_text(content)
        bad.chmod(0o600)
        with pytest.raises(TokenFileError):
            load_or_create(str(bad), None)


def test_the_default_place_is_the_state_dir_else_beside_the_socket(tmp_path: Path) -> None:
    assert default_path("/run/clove/k.sock", str(tmp_path)) == str(tmp_path / "console-tokens.json")
    assert default_path("/run/clove/k.sock", None) == "/run/clove/console-tokens.json"
    assert default_path("/run/clove/k.sock", str(tmp_path / "missing")) == "/run/clove/console-tokens.json"


def test_listen_addresses() -> None:
    assert parse_listen("8081") == Listen("127.0.0.1", 8081)
    assert parse_listen("127.0.0.1:0") == Listen("127.0.0.1", 0)
    assert parse_listen("[::1]:9000") == Listen("::1", 9000) and parse_listen("[::1]:9000").loopback
    assert parse_listen("localhost").loopback and parse_listen("localhost").port == 8080
    assert not parse_listen("0.0.0.0:8080").loopback and not parse_listen("board.local:80").loopback
    for bad in ("::1", "host:http", "host:70000", "[::1", ":8080"):
        with pytest.raises(ValueError, match="IPv6|port|host"):
            parse_listen(bad)


def test_hil_files_are_served_only_from_inside_the_results_dir(tmp_path: Path) -> None:
    root = tmp_path / "results"
    (root / "run1").mkdir(parents=True)
    (root / "run1" / "report.html").write_text("<h1>ok</h1>")
    (root / "run1" / "plot.png").write_bytes(b"\x89PNG")
    (root / "run1" / "plots.json").write_text("{}")
    (root / "run1" / "secret.key").write_text("k")
    (tmp_path / "outside.html").write_text("no")
    (root / "escape.html").symlink_to(tmp_path / "outside.html")
    listed = [f.path for f in hil_results.list_reports(str(root))]
    assert "run1/report.html" in listed and "run1/plots.json" not in listed and "run1/secret.key" not in listed
    assert hil_results.resolve(str(root), "run1/report.html") is not None
    assert hil_results.resolve(str(root), "run1/plot.png")[1] == "image/png"  # type: ignore[index]
    for bad in ("../outside.html", "escape.html", "run1/secret.key", "run1", "/etc/passwd", "run1/missing.html"):
        assert hil_results.resolve(str(root), bad) is None, bad
    assert hil_results.list_reports(str(tmp_path / "none")) == []
