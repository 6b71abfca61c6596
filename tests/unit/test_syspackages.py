"""The system-package helper the test tiers share: present commands cost nothing, a package it
may not install comes back as a reason to skip with, never as a failure."""

from __future__ import annotations

import pytest

from clove.testing import syspackages


def test_present_commands_need_nothing() -> None:
    assert syspackages.ensure({"sh": "dash", "ls": "coreutils"}) is None
    assert syspackages.which("sh") is not None


def test_a_missing_package_is_a_reason_when_apt_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOVE_NO_APT", "1")
    reason = syspackages.ensure({"clove-no-such-command": "clove-no-such-package", "sh": "dash"})
    assert reason == "clove-no-such-package not installed (CLOVE_NO_APT is set)"


def test_without_root_it_says_what_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOVE_NO_APT", raising=False)
    monkeypatch.setattr(syspackages.os, "geteuid", lambda: 1000)
    reason = syspackages.ensure({"clove-no-such-command": "clove-no-such-package"})
    assert reason is not None and "needs root: apt-get install clove-no-such-package" in reason


def test_the_command_line_reports_and_never_fails(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CLOVE_NO_APT", "1")
    assert syspackages.main(["--for", "the widget test", "clove-no-such-command=clove-no-such-package"]) == 0
    assert "the widget test: clove-no-such-package not installed" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad:
        syspackages.main(["no-equals-sign"])
    assert bad.value.code == 2 and "expected COMMAND=PACKAGE" in capsys.readouterr().err
