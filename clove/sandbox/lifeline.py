"""The life line: agents die with their kernel, and only with it.

The kernel makes one pipe at boot and keeps its **write end to itself** (close-on-exec, never
passed to a child, never written). Its read end goes to the zygote, which leaves it open in every
agent's G (see :mod:`clove.sandbox.zygote`), and to the warden
(:mod:`clove.sandbox.warden`). The read end turns readable (EOF) exactly when the last write
end closes, which is when the kernel process is gone, however it died (``kill -9`` included), or
at the very end of an orderly shutdown. Nothing else closes it: the zygote, the warden, G and the
agents hold read ends only, so the zygote dying (or being restarted) cuts nothing.

On EOF each G takes its own tree down (:func:`cut`):

* with namespaces, G is the pid namespace's init: it exits, and the kernel SIGKILLs every process
  in the namespace, commands run by ``exec`` inside the agent included (they joined it);
* without namespaces, G is the agent's parent and a child subreaper: it SIGKILLs every process in
  the agent's cgroups, in its session, and below itself, then exits.

A G that cannot run (its cgroup is frozen by ``agent.pause``) cannot react; the warden covers
that and anything that escaped G, by killing every process in the kernel's cgroups.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import NoReturn

from clove.sandbox.proctree import tree_of
from clove.sandbox.spec import SpawnSpec

#: G's exit code when the life line broke (nobody reads it: the kernel is gone).
CUT_EXIT = 137


def cut(spec: SpawnSpec) -> NoReturn:
    """In G, once the life line reads EOF: kill the agent's whole tree, then exit."""
    if not spec.namespaces:
        me = os.getpid()
        for _ in range(3):  # later rounds catch processes forked while the first ones were signalled
            victims = _cgroup_members(spec.cgroup_attach) | tree_of(me, session=os.getsid(0))
            victims.discard(me)
            if not victims:
                break
            for pid in victims:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
    # With namespaces, G is the namespace's init: its exit kills every process in it.
    os._exit(CUT_EXIT)


def _cgroup_members(attach_files: tuple[str, ...]) -> set[int]:
    found: set[int] = set()
    for path in attach_files:
        with contextlib.suppress(OSError), open(path) as f:
            found.update(int(tok) for tok in f.read().split() if tok.isdigit())
    return found
