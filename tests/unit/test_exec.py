"""The exec service with a fake zygote: command planning and policy, output capping, exit and
launch-error replies, timeouts, agents that exit, a zygote that dies, async results."""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from clove.config import AgentConfig
from clove.errors import CloveError, Conflict, InvalidArguments, NotFound, PermissionDenied, QuotaExceeded
from clove.kernel.core.agents import Agent, AgentState
from clove.kernel.core.asyncjobs import AsyncResults
from clove.kernel.core.channels import Caller
from clove.kernel.core.deferred import Deferred
from clove.kernel.core.loop import Loop
from clove.kernel.services import exec as exec_service
from clove.kernel.services.exec import ExecService, plan_command
from clove.kernel.services.execerrors import launch_error
from clove.kernel.services.execjobs import Output
from clove.kernel.syscalls.base import SyscallContext
from clove.kernel.syscalls.exec import Exec, ExecRequest
from clove.policy import Permissions, for_level
from clove.sandbox.spec import ExecSpec

# ---- planning and policy -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "argv", "programs"),
    [
        (["ls", "-l", "a b"], ["ls", "-l", "a b"], ["ls"]),
        ("ls -l 'a b'", ["ls", "-l", "a b"], ["ls"]),
        ("echo hi | wc -c", ["/bin/sh", "-c", "echo hi | wc -c"], ["/bin/sh", "echo"]),
        ("cat *.txt", ["/bin/sh", "-c", "cat *.txt"], ["/bin/sh", "cat"]),
        ("A=1 env", ["/bin/sh", "-c", "A=1 env"], ["/bin/sh"]),
        ("echo 'unbalanced", ["/bin/sh", "-c", "echo 'unbalanced"], ["/bin/sh", "echo"]),
        ("  true 1; true", ["/bin/sh", "-c", "  true 1; true"], ["/bin/sh", "true"]),
    ],
)
def test_plan_command(command: str | list[str], argv: list[str], programs: list[str]) -> None:
    assert plan_command(command) == (argv, programs)


@pytest.mark.parametrize("command", ["", "   ", [], [""], ["a\x00b"], "a\x00b"])
def test_plan_command_refuses_empty_commands(command: str | list[str]) -> None:
    with pytest.raises(InvalidArguments):
        plan_command(command)


# ---- output ------------------------------------------------------------------------------------


def test_output_is_capped_but_drained() -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)
    out = Output(r, limit=10)
    os.write(w, b"0123456789abcdef")
    assert out.drain() is True and out.truncated and bytes(out.data) == b"0123456789"
    os.write(w, b"more")
    os.close(w)
    assert out.drain() is False and bytes(out.data) == b"0123456789"
    out.close()
    assert not out.open


def test_output_text_replaces_undecodable_bytes() -> None:
    out = Output(-1)
    out.data += b"ok \xff"
    assert out.text() == "ok \ufffd"


# ---- the service with a fake zygote ------------------------------------------------------------


@dataclass
class FakeLauncher:
    pid: int | None = 4242
    sock: object | None = object()
    started: list[tuple[ExecSpec, int, int]] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)

    def exec(self, spec: ExecSpec, stdout_fd: int, stderr_fd: int) -> None:
        self.started.append((spec, os.dup(stdout_fd), os.dup(stderr_fd)))  # the zygote keeps its copies

    def exec_kill(self, job: str) -> None:
        self.killed.append(job)


class FakeRuntime:
    cgroup = None

    def __init__(self) -> None:
        self.start_waiters: list[Any] = []


class FakeSupervisor:
    def __init__(self) -> None:
        self.runtimes: dict[int, FakeRuntime] = {}
        self.listeners: list[Any] = []

    def runtime(self, agent: Agent) -> FakeRuntime | None:
        return self.runtimes.get(agent.id)

    def work_dir(self, agent: Agent) -> str:
        return "/work"


class FakeFiles:
    def directory(self, ctx: SyscallContext, path: str | None) -> str:
        if path == "/missing":
            raise NotFound("no such directory: /missing")
        return path or "/work"


class FakeKernel:
    def __init__(self) -> None:
        self.loop = Loop(tick=0.01)
        self.launcher = FakeLauncher()
        self.supervisor = FakeSupervisor()
        self.files = FakeFiles()
        self.async_results = AsyncResults()
        self.zygote_listeners: list[Any] = []
        self.on_shutdown: list[Any] = []
        self.execs = ExecService(self, files=self.files)  # type: ignore[arg-type]


@pytest.fixture
def kernel() -> Iterator[FakeKernel]:
    k = FakeKernel()
    yield k
    for _, out_w, err_w in k.launcher.started:
        for fd in (out_w, err_w):
            try:
                os.close(fd)
            except OSError:
                pass


def operator_ctx(kernel: FakeKernel, perms: Permissions | None = None) -> SyscallContext:
    perms = perms or for_level("unrestricted")
    return SyscallContext(kernel, Caller("operator", session_id=9), None, perms)  # type: ignore[arg-type]


def running_agent(kernel: FakeKernel, state: AgentState = AgentState.RUNNING) -> Agent:
    agent = Agent(id=3, spec=AgentConfig(name="worker", script="/w.py"), uid=300_003)
    agent.state = state
    agent.incarnation = 1
    agent.pid = os.getpid() if state is AgentState.RUNNING else None  # a live pid
    kernel.supervisor.runtimes[agent.id] = FakeRuntime()
    return agent


def agent_ctx(kernel: FakeKernel, agent: Agent) -> SyscallContext:
    return SyscallContext(kernel, Caller("agent", agent_id=agent.id), agent, agent.permissions)  # type: ignore[arg-type]


def outcome(deferred: Deferred) -> list[tuple[Any, CloveError | None]]:
    seen: list[tuple[Any, CloveError | None]] = []
    deferred.bind(lambda value, error: seen.append((value, error)))
    return seen


def spin(kernel: FakeKernel, until: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out"
        kernel.loop.run_once()


def exited(kernel: FakeKernel, job: str, **fields: Any) -> None:
    kernel.execs.on_zygote_event({"ev": "exec_exited", "job": job, **fields})


def test_a_command_runs_and_answers_with_its_output(kernel: FakeKernel) -> None:
    seen = outcome(kernel.execs.run(operator_ctx(kernel), "echo hi >&2", "/srv", 5))
    spec, out_w, err_w = kernel.launcher.started[0]
    assert spec.argv == ("/bin/sh", "-c", "echo hi >&2") and spec.cwd == "/srv" and spec.agent_key is None
    assert spec.env["LANG"] == "C.UTF-8" and "PATH" in spec.env
    os.write(out_w, b"out")
    os.write(err_w, b"err \xff")
    kernel.execs.on_zygote_event({"ev": "exec_started", "job": spec.job, "pid": 77})
    exited(kernel, spec.job, exit_code=0)
    for fd in (out_w, err_w):
        os.close(fd)
    spin(kernel, lambda: seen)
    reply, error = seen[0]
    assert error is None
    assert reply == {
        **reply,
        "success": True,
        "stdout": "out",
        "stderr": "err \ufffd",
        "exit_code": 0,
        "timed_out": False,
        "truncated": False,
    }
    assert not kernel.execs.jobs


def test_a_signal_is_a_negative_exit_code(kernel: FakeKernel) -> None:
    seen = outcome(kernel.execs.run(operator_ctx(kernel), ["long-running-command"], None, 5))
    spec, out_w, err_w = kernel.launcher.started[0]
    os.close(out_w)
    os.close(err_w)
    exited(kernel, spec.job, signal=15)
    spin(kernel, lambda: seen)
    assert seen[0][0]["exit_code"] == -15 and seen[0][0]["signal"] == 15 and seen[0][0]["success"] is False


def test_the_reply_waits_for_the_pipes_but_not_forever(
    kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exec_service, "EOF_GRACE", 0.05)
    seen = outcome(kernel.execs.run(operator_ctx(kernel), ["true"], None, 5))
    spec, out_w, err_w = kernel.launcher.started[0]
    os.write(out_w, b"late")
    exited(kernel, spec.job, exit_code=0)  # an escaped process still holds the pipes
    spin(kernel, lambda: seen)
    assert seen[0][0]["stdout"] == "late" and seen[0][0]["success"]


def test_timeout_kills_and_answers(kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exec_service, "KILL_GRACE", 0.05)
    seen = outcome(kernel.execs.run(operator_ctx(kernel), ["long-running-command"], None, 0.05))
    job = kernel.launcher.started[0][0].job
    spin(kernel, lambda: kernel.launcher.killed)
    assert kernel.launcher.killed == [job]
    spin(kernel, lambda: seen)  # the exit report never came (a frozen tree): answer anyway
    reply, error = seen[0]
    assert (
        error is None
        and reply["timed_out"] is True
        and reply["exit_code"] is None
        and reply["success"] is False
    )


def test_launch_errors_become_structured_errors(kernel: FakeKernel) -> None:
    seen = outcome(kernel.execs.run(operator_ctx(kernel), ["nosuch"], None, 5))
    spec, out_w, err_w = kernel.launcher.started[0]
    os.close(out_w)
    os.close(err_w)
    exited(kernel, spec.job, error="FileNotFoundError: ...", stage="exec", errno=errno.ENOENT)
    spin(kernel, lambda: seen)
    assert isinstance(seen[0][1], NotFound) and "nosuch" in seen[0][1].message


@pytest.mark.parametrize(
    ("stage", "number", "expected"),
    [
        ("exec", errno.EACCES, PermissionDenied),
        ("cwd", errno.ENOENT, NotFound),
        ("cwd", errno.ESTALE, Conflict),
        ("lookup", None, Conflict),
        ("fork", errno.EAGAIN, QuotaExceeded),
        ("namespaces", errno.EINVAL, CloveError),
    ],
)
def test_launch_error_mapping(stage: str, number: int | None, expected: type[CloveError]) -> None:
    assert isinstance(launch_error("prog", {"stage": stage, "errno": number, "error": "x"}), expected)


def test_policy_is_checked_before_anything_runs(kernel: FakeKernel) -> None:
    perms = for_level("standard", work_dir="/work").with_grants({"exec_deny": ["rm"]})
    for command in (["rm", "-rf", "/"], "rm -rf /", "/bin/rm x", "rm x; true"):
        with pytest.raises(PermissionDenied):
            kernel.execs.run(operator_ctx(kernel, perms), command, None, 5)
    no_shell = for_level("standard", work_dir="/work").with_grants({"exec_deny": ["sh"]})
    with pytest.raises(PermissionDenied):
        kernel.execs.run(operator_ctx(kernel, no_shell), "echo a | cat", None, 5)
    with pytest.raises(InvalidArguments):
        kernel.execs.run(operator_ctx(kernel), ["true"], None, 0)
    with pytest.raises(NotFound):
        kernel.execs.run(operator_ctx(kernel), ["true"], "/missing", 5)
    assert kernel.launcher.started == []


def test_too_many_commands_per_caller(kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exec_service, "MAX_JOBS_PER_CALLER", 2)
    for _ in range(2):
        kernel.execs.run(operator_ctx(kernel), ["long-running-command"], None, 5)
    with pytest.raises(QuotaExceeded):
        kernel.execs.run(operator_ctx(kernel), ["long-running-command"], None, 5)


def test_an_agents_command_names_its_incarnation(kernel: FakeKernel) -> None:
    agent = running_agent(kernel)
    kernel.execs.run(agent_ctx(kernel, agent), ["id"], None, 5)
    spec = kernel.launcher.started[0][0]
    assert spec.agent_key == "3.1" and spec.cwd == "/work" and spec.uid is None


def test_an_agent_that_is_still_starting_waits_for_its_start(kernel: FakeKernel) -> None:
    agent = running_agent(kernel, AgentState.STARTING)
    seen = outcome(kernel.execs.run(agent_ctx(kernel, agent), ["id"], None, 5))
    assert kernel.launcher.started == []
    agent.state, agent.pid = AgentState.RUNNING, os.getpid()
    for waiter in kernel.supervisor.runtimes[agent.id].start_waiters:
        waiter(agent, None)
    assert kernel.launcher.started[0][0].agent_key == "3.1" and not seen


def test_a_paused_agent_cannot_start_commands(kernel: FakeKernel) -> None:
    agent = running_agent(kernel)
    agent.state = AgentState.PAUSED
    with pytest.raises(Conflict, match="paused"):
        kernel.execs.run(agent_ctx(kernel, agent), ["id"], None, 5)


def test_an_agents_exit_ends_its_commands(kernel: FakeKernel) -> None:
    agent = running_agent(kernel)
    seen = outcome(kernel.execs.run(agent_ctx(kernel, agent), ["long-running-command"], None, 5))
    job = kernel.launcher.started[0][0].job
    kernel.execs.on_lifecycle("agent.exited", agent, {})
    assert kernel.launcher.killed == [job]
    assert isinstance(seen[0][1], Conflict) and "exited" in seen[0][1].message


def test_a_command_killed_because_its_agent_died_is_an_error(kernel: FakeKernel) -> None:
    agent = running_agent(kernel)
    seen = outcome(kernel.execs.run(agent_ctx(kernel, agent), ["long-running-command"], None, 5))
    spec, out_w, err_w = kernel.launcher.started[0]
    os.close(out_w)
    os.close(err_w)
    agent.pid = 2**22 + 1  # the agent's process is gone; the kernel has not heard yet
    exited(kernel, spec.job, signal=9)
    spin(kernel, lambda: seen)
    assert isinstance(seen[0][1], Conflict)


def test_a_dead_zygote_fails_its_commands(kernel: FakeKernel) -> None:
    seen = outcome(kernel.execs.run(operator_ctx(kernel), ["long-running-command"], None, 5))
    kernel.launcher.pid = 5151  # restarted
    kernel.execs.housekeeping()
    assert seen and seen[0][1] is not None and "zygote" in seen[0][1].message


def test_shutdown_kills_and_answers_everything(kernel: FakeKernel) -> None:
    seen = outcome(kernel.execs.run(operator_ctx(kernel), ["long-running-command"], None, 5))
    kernel.execs.shutdown()
    assert kernel.launcher.killed and isinstance(seen[0][1], Conflict) and not kernel.execs.jobs


def test_async_exec_is_accepted_and_polled(kernel: FakeKernel) -> None:
    ctx = operator_ctx(kernel)
    accepted = Exec().execute(ctx, ExecRequest(command=["true"], async_=True, request_id="r7"))
    assert accepted == {"success": True, "async": True, "request_id": "r7", "status": "accepted"}
    spec, out_w, err_w = kernel.launcher.started[0]
    os.close(out_w)
    os.close(err_w)
    exited(kernel, spec.job, exit_code=0)
    spin(kernel, lambda: not kernel.execs.jobs)
    (result,) = kernel.async_results.poll(9, 10)
    assert result["request_id"] == "r7" and result["opcode_name"] == "SYS_EXEC"
    assert json.loads(result["payload"])["success"] is True
