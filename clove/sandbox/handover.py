"""The handover: what lets agents outlive the zygote.

**Agents outlive the zygote.** Agents are not the zygote's to lose: if it dies, the kernel starts
a new one and keeps supervising the running agents itself. For that, ``started`` carries two
SCM_RIGHTS fds: a pidfd of G (opened while G was still an unreaped child of ours, so it names G
and nothing else) and the status pipe's read end (the same pipe the zygote reads). The kernel
leaves both alone while the zygote lives. Once it is gone, G (orphaned to init or an outer
subreaper, never to the kernel) is watched through its pidfd, and A's exact wait status is read
from the pipe, where G writes it before exiting. Why not make the kernel a subreaper and wait for
G: the kernel also starts driver hosts with ``subprocess``, and every other orphan of the zygote
(spares, commands) would become its zombie to reap without stealing ``Popen``'s statuses; and for
a namespaced agent G's own status says nothing about A's. The new zygote gets each such agent's
spawn spec, G's pid and G's pidfd (``{"op": "adopt"}``), so ``exec`` still runs inside it; X
checks the pidfd after joining G's namespaces, which proves the pid was still G's. ``forked``
(C's pid, the agent's process group) lets the kernel kill a tree that was still starting.

The pidfd is opened and the fds are sent by :class:`~clove.sandbox.trees.Trees` (``{"g": pid}``
and ``started``); here is the new zygote's side: :func:`adopt` and :func:`disown`. The kernel's
side is :mod:`clove.kernel.supervision.adoption`.
"""

from __future__ import annotations

import os
from typing import Any

from clove.sandbox import linux
from clove.sandbox.spec import SpawnSpec
from clove.sandbox.trees import Tracked, Trees


def adopt(trees: Trees, request: dict[str, Any], pidfd: int) -> None:
    """Remember a running agent an earlier zygote started, so commands can run inside it."""
    try:
        spec = SpawnSpec.from_wire(request["spec"])
        init_pid = int(request["init_pid"])
    except (KeyError, TypeError, ValueError):
        os.close(pidfd)
        return
    disown(trees, spec.key)
    trees.agents[spec.key] = Tracked(
        key=spec.key, status_r=-1, c_pid=-1, spec=spec, g_pid=init_pid, pidfd=pidfd, adopted=True,
        started_sent=True,
    )


def disown(trees: Trees, key: str) -> None:
    """The kernel saw an adopted agent end."""
    tracked = trees.agents.get(key)
    if tracked is not None and tracked.adopted:
        del trees.agents[key]
        os.close(tracked.pidfd)


def ended(trees: Trees, tracked: Tracked) -> bool:
    """An adopted agent whose G has exited: forget it now (the kernel's disown is on its way)."""
    if tracked.adopted and linux.pidfd_exited(tracked.pidfd):
        disown(trees, tracked.key)
        return True
    return False
