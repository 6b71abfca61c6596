"""An agent starts wherever its script lives, and never sees the kernel's state dir: not when the
script's directory holds the state dir (beside it, several levels above it, or is it), not when
the script sits right in /tmp, not when the state dir is outside /tmp."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clove.testing.kernel import KernelProcess
from tests.conftest import agent_script, read_report, requires_root

pytestmark = [pytest.mark.integration, requires_root]

REPORT_TIMEOUT = 30.0


@pytest.fixture
def folder() -> Iterator[Path]:
    """A fresh folder a newcomer would make for an agent (``mkdir /tmp/x``), removed after the
    kernel that used it has stopped (request it before ``make_kernel``)."""
    path = Path(tempfile.mkdtemp(prefix="clove-sd-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def var_folder() -> Iterator[Path]:
    """The same, outside /tmp (the sandbox's /tmp is private and would hide it anyway)."""
    path = Path(tempfile.mkdtemp(prefix="clove-sd-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _install_snoop(directory: Path, name: str = "snoop.py") -> Path:
    script = directory / name
    shutil.copy(agent_script("state_snoop.py"), script)
    script.chmod(0o644)
    return script


def _snoop(k: KernelProcess, script: Path) -> tuple[dict, dict, int]:
    """Start a neighbour, then the snoop with the neighbour's and the kernel's secrets to try;
    returns the snoop's spawn reply, its report and the neighbour's id."""
    state = k.state_dir
    with k.client() as c:
        other = c.spawn("other", str(script), args=[str(state)])
        assert other.get("success"), other
        read_report(k, "other", REPORT_TIMEOUT)  # its socket is bound and in use
        oid = other["id"]
        secrets = [
            state / "journal.jsonl",
            state / "agents",
            state / "agents" / str(oid),
            state / "agents" / str(oid) / "ipc",
            state / "agents" / str(oid) / "ipc" / "kernel.sock",
            state / "agents" / str(oid) / "agent.log",
            state / "agents" / str(oid) / "work",
            Path(k.socket),
        ]
        reply = c.spawn("snoop", str(script), args=[str(state), *map(str, secrets)])
    assert reply.get("success"), reply
    for path in secrets:
        assert os.path.lexists(path), f"{path} should exist on the host for the check to mean anything"
    return reply, read_report(k, "snoop", REPORT_TIMEOUT), oid


def _assert_state_dir_hidden(k: KernelProcess, reply: dict, report: dict) -> None:
    me = reply["id"]
    own = f"agents/{me}"
    assert report["hello"]["ok"] and report["hello"]["value"]["agent_id"] == me, report["hello"]
    assert report["endpoint"] == f"ipc://{k.state_dir}/{own}/ipc/kernel.sock"
    allowed = {"agents", own, f"{own}/ipc", f"{own}/ipc/kernel.sock", f"{own}/work", f"{own}/work/work.txt", "snoop.py"}
    assert set(report["visible"]) <= allowed, f"the state dir shows {sorted(set(report['visible']) - allowed)}"
    # Only the path to its own dirs is in the view; the control socket may show as a stand-in.
    shown = {Path(p) for p in report["present"]} - {k.state_dir / "agents", Path(k.socket)}
    assert not shown, f"the sandbox shows {sorted(map(str, shown))}"
    for path, tries in report["secrets"].items():
        for action, result in tries.items():
            assert not result["ok"], f"{action} {path} succeeded inside the sandbox: {result}"
    assert report["write_tmp"]["ok"] and report["write_work"]["ok"], report
    assert reply["isolation"]["landlock"]["fs"] is True


def test_script_beside_the_state_dir(make_kernel: Callable[..., KernelProcess]) -> None:
    """The issue's case: ``/tmp/x/agent.py`` with ``--state-dir /tmp/x/state`` (the kernel's own
    dir also holds its control socket, log and config there)."""
    k = make_kernel()
    reply, report, _ = _snoop(k, _install_snoop(k.dir))
    _assert_state_dir_hidden(k, reply, report)


def test_state_dir_several_levels_below_the_scripts_directory(folder: Path, make_kernel: Callable[..., KernelProcess]) -> None:
    k = make_kernel(state_dir=folder / "a" / "b" / "c" / "state")
    reply, report, _ = _snoop(k, _install_snoop(folder))
    _assert_state_dir_hidden(k, reply, report)


def test_state_dir_is_the_scripts_directory(folder: Path, make_kernel: Callable[..., KernelProcess]) -> None:
    """``cd /tmp/x && clove kernel --state-dir .``: only the script itself is bound, not the
    directory, which is all kernel state."""
    k = make_kernel(state_dir=folder)
    reply, report, _ = _snoop(k, _install_snoop(folder))
    _assert_state_dir_hidden(k, reply, report)


def test_script_right_in_tmp(make_kernel: Callable[..., KernelProcess]) -> None:
    """The script's directory is /tmp itself, a parent of the state dir: binding it would lay the
    host's /tmp over the private one. Only the script is bound; /tmp stays private."""
    script = _install_snoop(Path("/tmp"), f"clove-snoop-{uuid.uuid4().hex}.py")
    try:
        k = make_kernel()
        reply, report, _ = _snoop(k, script)
        _assert_state_dir_hidden(k, reply, report)
        assert not os.path.exists("/tmp/snoop.txt")  # written to the private /tmp
    finally:
        script.unlink()


def test_state_dir_outside_tmp(var_folder: Path, make_kernel: Callable[..., KernelProcess]) -> None:
    """Outside /tmp the read-only system view used to show the state dir as it is on the host
    (the journal, every agent's dir), guarded by its modes alone."""
    k = make_kernel(state_dir=var_folder / "state")
    reply, report, _ = _snoop(k, _install_snoop(var_folder))
    _assert_state_dir_hidden(k, reply, report)


def test_what_the_kernel_reads_and_runs_for_an_agent_sees_the_same_view(make_kernel: Callable[..., KernelProcess]) -> None:
    """``fs.read`` resolves in the agent's root and ``exec`` joins its mount namespace: even an
    unrestricted agent, whose grants cover every path, reaches nothing of the state dir."""
    k = make_kernel()
    journal = k.state_dir / "journal.jsonl"
    script = k.dir / "reader.py"
    script.write_text(
        "import json\n"
        "from clove_sdk import CloveClient\n"
        "with CloveClient(timeout=10) as c:\n"
        "    read = c.read_file(" + repr(str(journal)) + ")\n"
        "    ran = c.exec(['cat', " + repr(str(journal)) + "])\n"
        "print('REPORT ' + json.dumps({'read': read, 'exec': ran}), flush=True)\n"
    )
    reply = k.call("agent.spawn", name="reader", script=str(script), level="unrestricted")
    assert reply.get("success"), reply
    report = read_report(k, "reader", REPORT_TIMEOUT)
    assert journal.exists()
    assert not report["read"]["success"] and report["read"]["code"] == "notfound", report["read"]
    assert report["exec"]["exit_code"] != 0 and "No such file" in report["exec"]["stderr"], report["exec"]
