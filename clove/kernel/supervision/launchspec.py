"""What the zygote needs to start one incarnation of an agent: its environment, the host paths
its sandbox must see, and the confinement switches, built from the agent's record."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import clove_sdk
from clove.config import SandboxSection
from clove.kernel.core.agents import Agent
from clove.kernel.supervision.limits import spawn_storage
from clove.sandbox.mountview import covers_private, within
from clove.sandbox.spec import Exposure, SpawnSpec


def interpreter_paths() -> list[str]:
    """What the kernel's own interpreter needs to be readable inside a sandbox (its prefixes,
    its import path, and the directory holding clove_sdk)."""
    paths = {sys.base_prefix, sys.prefix, sys.exec_prefix}
    paths.update(p for p in sys.path if p.startswith("/") and os.path.exists(p))
    paths.add(str(Path(clove_sdk.__file__).resolve().parent.parent))
    # ``python -m clove`` puts the kernel's working directory on sys.path: started from /tmp
    # (or /), binding it would cover the sandbox's private /tmp with the host's, read-only.
    return outermost({p for p in paths if not covers_private(p.rstrip("/") or "/")})


def outermost(paths: set[str]) -> list[str]:
    """Drop paths that lie inside another one: each bind mount costs the spawn time."""
    kept: list[str] = []
    for path in sorted(paths):
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def agent_env(agent: Agent, *, endpoint: str, work: str) -> dict[str, str]:
    """A clean environment: the operator's ``env`` on top of defaults, the channel on top."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": work,
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        **agent.spec.env,
        "CLOVE_AGENT_ENDPOINT": endpoint,
        "CLOVE_AGENT_ID": str(agent.id),
        "CLOVE_AGENT_NAME": agent.name,
    }


def script_exposure(script: str, *, hidden: Sequence[str]) -> Exposure:
    """The script's directory, read-only (the agent may import its neighbours); only the script
    itself where binding its directory would lay the host's ``/tmp`` over the private one (a
    script right in ``/tmp``), or would show what is hidden (a script inside the state dir)."""
    directory = os.path.realpath(os.path.dirname(script))
    if covers_private(directory) or any(within(directory, h) for h in hidden):
        return Exposure(path=os.path.join(directory, os.path.basename(script)))
    return Exposure(path=directory)


def exposures_for(
    agent: Agent, *, endpoint: str, work: str, interpreter: list[str], hidden: Sequence[str] = ()
) -> list[Exposure]:
    """Host paths bound into the sandbox at their own paths: the interpreter read-only, the
    script's directory read-only, the agent's channel directory and work dir writable."""
    spec = agent.spec
    if not spec.sandboxed:
        return []
    exposures = [
        *(Exposure(path=p) for p in interpreter),
        script_exposure(spec.script, hidden=hidden),
        Exposure(path=os.path.dirname(endpoint[len("ipc://") :]), writable=True),
        Exposure(path=work, writable=True),
    ]
    if spec.interpreter:
        exposures.append(Exposure(path=str(Path(os.path.realpath(spec.interpreter)).parent.parent)))
    return exposures


def build_spawn_spec(
    agent: Agent,
    *,
    endpoint: str,
    work: str,
    sandbox: SandboxSection,
    cgroup_attach: tuple[str, ...],
    rlimits: list[tuple[int, int, int]],
    interpreter: list[str],
    hidden: Sequence[str] = (),
) -> SpawnSpec:
    """:param hidden: the kernel's private paths (its state dir, its control socket), which no
    sandbox may see."""
    spec = agent.spec
    return SpawnSpec(
        key=agent.key,
        name=spec.name,
        script=spec.script,
        args=spec.args,
        env=agent_env(agent, endpoint=endpoint, work=work),
        interpreter=spec.interpreter,
        cwd=work,
        uid=agent.uid,
        namespaces=spec.sandboxed,
        network=spec.network,
        hostname=f"clove-{spec.name}"[:63],
        cgroup_attach=cgroup_attach,
        rlimits=tuple(rlimits),
        exposures=tuple(exposures_for(agent, endpoint=endpoint, work=work, interpreter=interpreter, hidden=hidden)),
        hidden=tuple(hidden) if spec.sandboxed else (),
        landlock=spec.sandboxed and sandbox.landlock,
        seccomp=spec.sandboxed and sandbox.seccomp,
        no_new_privs=spec.sandboxed,
        **spawn_storage(spec, work),  # /tmp's size and inodes, the work dir's image
    )
