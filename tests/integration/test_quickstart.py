"""The README's quick start, run as written: its shell block, command by command, in a fresh
folder under /tmp (the block's ``/tmp/hello``), with the printed output its ``# →`` comments
promise. A newcomer types slower than this test, so a command with a promised output is polled
until it prints it (the kernel starting, the agent writing its line)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import requires_root

pytestmark = [pytest.mark.integration, requires_root]

README = Path(__file__).resolve().parents[2] / "README.md"
FOLDER = "/tmp/hello"  # the README's folder; each run uses a fresh one instead
OUTPUT_TIMEOUT = 30.0
KERNEL_STOP_TIMEOUT = 30.0


def quick_start_block() -> list[str]:
    """The lines of the first ``sh`` block under ``## Quick start``."""
    text = README.read_text()
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "README.md: no sh block under ## Quick start"
    return match.group(1).splitlines()


@dataclass
class Shell:
    """Just enough of a shell for the block: ``&&``, ``cd``, ``export``, heredocs, one job."""

    cwd: Path
    env: dict[str, str]
    job: subprocess.Popen[bytes] | None = None
    ran: list[str] = field(default_factory=list)

    def run(self, command: str, expected: str | None) -> None:
        self.ran.append(command)
        for part in command.split(" && "):
            if part.startswith("cd "):
                self.cwd = Path(part[3:].strip())
            elif part.startswith("export "):
                key, _, value = part[len("export ") :].partition("=")
                self.env[key] = value
            elif part == "kill %1":
                self.stop_job()
            elif part.endswith(" &"):
                assert self.job is None, "one background job only"
                self.job = subprocess.Popen(["bash", "-c", "exec " + part[:-2]], cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL)
            else:
                self._foreground(part, expected)

    def _foreground(self, command: str, expected: str | None) -> None:
        deadline = time.monotonic() + OUTPUT_TIMEOUT
        while True:
            done = subprocess.run(["bash", "-c", command], cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=60, check=False)
            if done.returncode == 0 and (expected is None or _shows(done.stdout, expected)):
                return
            if expected is None or time.monotonic() > deadline:
                pytest.fail(f"`{command}` exited {done.returncode}, expected {expected!r}:\n{done.stdout}{done.stderr}{self._kernel_log()}")
            time.sleep(0.1)  # polled: the kernel or the agent is not there yet

    def stop_job(self) -> None:
        assert self.job is not None, "no background job to kill"
        self.job.send_signal(signal.SIGTERM)
        code = self.job.wait(KERNEL_STOP_TIMEOUT)
        self.job = None
        assert code == 0, f"the kernel exited {code}{self._kernel_log()}"

    def _kernel_log(self) -> str:
        log = self.cwd / "kernel.log"
        return f"\nkernel.log:\n{log.read_text()}" if log.exists() else ""


def _shows(output: str, expected: str) -> bool:
    """Whether ``output`` has the pieces of ``expected`` (``...`` stands for anything), in order."""
    at = 0
    for piece in (p.strip() for p in expected.split("...")):
        found = output.find(piece, at)
        if found < 0:
            return False
        at = found + len(piece)
    return True


def commands(lines: list[str], folder: str) -> Iterator[tuple[str, str | None, dict[str, str] | None]]:
    """``(command, expected output, None)``, or ``("", None, {file: text})`` for a heredoc."""
    lines = [line.replace(FOLDER, folder) for line in lines]
    i = 0
    while i < len(lines):
        line = lines[i]
        heredoc = re.fullmatch(r"cat > (\S+) <<'EOF'", line)
        if heredoc:
            end = lines.index("EOF", i)
            yield "", None, {heredoc.group(1): "\n".join(lines[i + 1 : end]) + "\n"}
            i = end + 1
            continue
        command, _, comment = line.partition("  #")
        comment = comment.strip().lstrip("#").strip()
        expected = comment[1:].strip() if comment.startswith("→") else None
        if command.strip():
            yield command.strip(), expected, None
        i += 1


@pytest.fixture
def folder() -> Iterator[str]:
    """A fresh folder where the README says /tmp/hello (``mkdir`` there makes it again)."""
    path = tempfile.mkdtemp(prefix="hello-", dir="/tmp")
    os.rmdir(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_readme_quick_start_runs_as_written(folder: str) -> None:
    lines = quick_start_block()
    assert any(line.startswith("clove kernel ") and "--state-dir /tmp/hello/state" in line and "--socket " in line for line in lines)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    env.pop("CLOVE_SOCKET", None)
    shell = Shell(cwd=Path.cwd(), env=env)
    try:
        for command, expected, files in commands(lines, folder):
            if files:
                for name, text in files.items():
                    (shell.cwd / name).write_text(text)
            else:
                shell.run(command, expected)
        assert shell.job is None, "the quick start leaves its kernel running"
        assert "kill %1" in shell.ran
        assert Path(folder, "state", "journal.jsonl").exists()
        assert not Path(folder, "clove.sock").exists()
    finally:
        if shell.job is not None and shell.job.poll() is None:
            shell.job.kill()
            shell.job.wait()
