"""The order of an agent's mounts (:func:`clove.sandbox.mountview.plan`): outer paths first,
so the state dir's hide lands after a bind that shows it and before the agent's own dirs."""

from __future__ import annotations

from clove.kernel.supervision.launchspec import script_exposure
from clove.sandbox.mountview import Mount, covers_private, plan, within
from clove.sandbox.spec import Exposure

STATE = "/tmp/x/state"
IPC = f"{STATE}/agents/2/ipc"
WORK = f"{STATE}/agents/2/work"


def _agent(script_dir: str, state: str = STATE) -> list[Exposure]:
    return [
        Exposure(path=script_dir),
        Exposure(path=f"{state}/agents/2/ipc", writable=True),
        Exposure(path=f"{state}/agents/2/work", writable=True),
    ]


def _everyone_traverses(_path: str) -> bool:
    return True


def test_the_state_dir_is_hidden_after_the_script_dir_that_holds_it_and_before_the_agents_own_dirs() -> None:
    steps = plan(_agent("/tmp/x"), [STATE], traversable=_everyone_traverses)
    assert steps == [
        Mount("private", "/tmp"),
        Mount("private", "/dev/shm"),
        Mount("bind", "/tmp/x"),
        Mount("hide", STATE),
        Mount("bind", IPC, writable=True),
        Mount("bind", WORK, writable=True),
    ]


def test_state_dir_several_levels_down_is_hidden_after_the_bind_above_it() -> None:
    state = "/tmp/x/a/b/c/state"
    kinds = [(m.kind, m.path) for m in plan(_agent("/tmp/x", state), [state], traversable=_everyone_traverses)]
    assert kinds.index(("bind", "/tmp/x")) < kinds.index(("hide", state)) < kinds.index(("bind", f"{state}/agents/2/ipc"))


def test_a_state_dir_outside_tmp_is_hidden_and_its_closed_modes_need_no_cover() -> None:
    """``agents/`` is 0700 on the host; the hide stands in for it, no cover of its own."""
    state = "/var/lib/clove"
    steps = plan(_agent("/srv/agents", state), [state], traversable=lambda p: p != f"{state}/agents")
    assert Mount("hide", state) in steps
    assert not [m for m in steps if m.kind == "cover"]
    assert Mount("bind", "/srv/agents") not in steps  # visible in the read-only tree already
    assert steps[-2:] == [Mount("bind", f"{state}/agents/2/ipc", writable=True), Mount("bind", f"{state}/agents/2/work", writable=True)]


def test_a_read_only_exposure_inside_a_hidden_path_is_bound_back() -> None:
    steps = plan([Exposure(path="/var/lib/clove/agent.py")], ["/var/lib/clove"], traversable=_everyone_traverses)
    assert steps[-2:] == [Mount("hide", "/var/lib/clove"), Mount("bind", "/var/lib/clove/agent.py")]


def test_a_hidden_path_at_or_above_a_private_tmpfs_needs_no_hide() -> None:
    steps = plan(_agent("/srv", "/tmp"), ["/tmp", "/"], traversable=_everyone_traverses)
    assert not [m for m in steps if m.kind == "hide"]


def test_an_untraversable_ancestor_is_covered_once_at_its_outermost() -> None:
    closed = {"/root"}
    steps = plan([Exposure(path="/root/venv"), Exposure(path="/root/venv/lib")], traversable=lambda p: p not in closed)
    assert [m for m in steps if m.kind == "cover"] == [Mount("cover", "/root")]


def test_paths_that_would_cover_the_private_tmp() -> None:
    assert covers_private("/") and covers_private("/tmp") and covers_private("/dev")
    assert not covers_private("/tmp/x") and not covers_private("/var/tmp")
    assert within("/tmp/x", "/tmp") and within("/tmp", "/tmp") and within("/a", "/")
    assert not within("/tmpx", "/tmp")


def test_the_scripts_directory_is_exposed_unless_it_is_tmp_or_inside_the_state_dir() -> None:
    assert script_exposure("/tmp/x/agent.py", hidden=[STATE]) == Exposure(path="/tmp/x")
    assert script_exposure("/tmp/agent.py", hidden=[STATE]) == Exposure(path="/tmp/agent.py")
    assert script_exposure("/tmp/x/state/agent.py", hidden=[STATE]) == Exposure(path="/tmp/x/state/agent.py")
    assert script_exposure("/tmp/x/agent.py", hidden=["/tmp/x"]) == Exposure(path="/tmp/x/agent.py")
