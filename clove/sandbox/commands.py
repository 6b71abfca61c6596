"""The zygote's commands: the kernel's ``exec`` syscall runs them here.

The kernel sends ``{"op": "exec", "spec": ...}`` with the command's stdout and stderr pipes as two
SCM_RIGHTS fds, because joining another process's namespaces needs a single-threaded caller and
the kernel has libzmq's threads::

    zygote
     └─ X   host pid ns: join the agent's cgroups, setns into G's namespaces, fork Y, report Y, exit
         └─ Y   in the agent's pid ns: setsid, fds, rlimits, uid, cwd, no_new_privs, Landlock,
                seccomp (all from the agent's own spawn spec), then execve the command

A command for an operator (no agent) skips the cgroups and namespaces and takes the operator's
uid, gid and groups instead. Y is its own session and process group. When Y ends, the zygote
kills what is left of its process group before reaping it (the zombie still holds the group's
id, so the id cannot have been reused), then sends ``exec_exited``; ``{"op": "exec_kill"}``
kills the group, the session and every descendant of Y. A process that left both the group
and the session *and* lost its parent escapes these kills; inside an agent it still dies with
the agent's pid namespace and cgroup.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from clove.sandbox import handover
from clove.sandbox.children import kill_tree, run_exec
from clove.sandbox.spec import ExecSpec, SpawnSpec
from clove.sandbox.trees import Send, Trees

#: How long a zygote whose kernel is gone keeps reaping the commands it killed.
REAP_ON_EXIT_S = 1.0


class Commands:
    """Starts and kills commands; their trees are followed by :class:`~clove.sandbox.trees.Trees`."""

    def __init__(self, trees: Trees, fork: Callable[[Callable[[int], object]], tuple[int, int]], send: Send) -> None:
        self.trees = trees
        self.fork = fork
        self.send = send

    def start(self, wire_spec: dict[str, Any], out_fd: int, err_fd: int) -> None:
        try:
            job = ExecSpec.from_wire(wire_spec)
        except (TypeError, ValueError) as err:
            os.close(out_fd)
            os.close(err_fd)
            job_id = str(wire_spec.get("job"))
            self.send({"ev": "exec_exited", "job": job_id, "error": f"bad exec spec: {err}", "stage": "spec"})
            return
        agent: SpawnSpec | None = None
        init_pid: int | None = None
        if job.agent_key is not None:
            owner = self.trees.agents.get(job.agent_key)
            if owner is not None and handover.ended(self.trees, owner):
                owner = None
            if owner is None or owner.g_pid is None or not owner.started_sent or owner.final is not None:
                os.close(out_fd)
                os.close(err_fd)
                error = "the agent is not running"
                self.send({"ev": "exec_exited", "job": job.job, "error": error, "stage": "lookup"})
                return
            agent, init_pid, init_pidfd = owner.spec, owner.g_pid, owner.pidfd
        else:
            init_pidfd = -1
        pid, status_r = self.fork(
            lambda status_w: run_exec(job, agent, init_pid, out_fd, err_fd, status_w, init_pidfd)
        )
        os.close(out_fd)
        os.close(err_fd)
        self.trees.add_command(job.job, pid, status_r)

    def kill(self, job: str) -> None:
        tracked = self.trees.jobs.get(job)
        if tracked is None:
            return
        self.trees.drain(tracked)
        tracked.kill_requested = True
        if tracked.g_pid is not None:
            kill_tree(tracked.g_pid)  # not reaped yet (it would have left trees.jobs): the pid is still Y's
        # else: X is still setting up; the tree is killed as soon as X reports Y

    def kill_all_and_reap(self) -> None:
        """The kernel is gone (its agents go by their G, see :mod:`clove.sandbox.zygote`): kill
        every command and reap them, and whatever else ends meanwhile, for at most a second."""
        for tracked in self.trees.jobs.values():
            if tracked.g_pid is not None:
                kill_tree(tracked.g_pid)
        waiting = {pid for pid, tracked in self.trees.by_pid.items() if tracked.kind == "exec"}  # not reaped yet
        deadline = time.monotonic() + REAP_ON_EXIT_S
        while waiting and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                time.sleep(0.002)
            waiting.discard(pid)
