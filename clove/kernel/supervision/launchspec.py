"""What the zygote needs to start one incarnation of an agent: its environment, the host paths
its sandbox must see, its loopback relays, and the confinement switches, built from the agent's
record.

Network, by the agent's config (docs/sandbox.md, "Network"):

* no ``network``: a network namespace of its own with nothing in it;
* ``network = true``: its own namespace too, where ``127.0.0.1:3128`` leads to the kernel's
  egress proxy (``egress.sock`` in its channel dir) and ``HTTP(S)_PROXY`` says so;
* ``network = "full"`` (``network_full``): the host's network, as before the proxy existed;
* either of the first two, when the agent has the ``llm`` right and the kernel's ``[llm]`` table
  serves the OpenAI-compatible endpoint (``[llm.endpoint].enabled``, the default):
  ``127.0.0.1:8199`` leads to it (``llm.sock``), and ``OPENAI_BASE_URL`` says so. Relays are
  fixed at spawn: an agent granted ``llm`` while it runs gets the relay at its next start.

An agent that is not sandboxed has no namespaces, hence no relays: it shares the host's network.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import clove_sdk
from clove.config import SandboxSection
from clove.kernel.core.agents import Agent
from clove.kernel.supervision.limits import spawn_storage
from clove.sandbox.mountview import covers_private, within
from clove.sandbox.relays import EGRESS_PORT, EGRESS_SOCKET, LLM_KEY_PLACEHOLDER, LLM_PORT, LLM_SOCKET, Relay
from clove.sandbox.spec import Exposure, SpawnSpec

#: Hosts a proxied agent reaches without the proxy: its relays on its own loopback.
NO_PROXY = "127.0.0.1,localhost"


def interpreter_paths() -> list[str]:
    """What the kernel's own interpreter needs to be readable inside a sandbox (its prefixes,
    its import path, and the directory holding clove_sdk)."""
    paths = {sys.base_prefix, sys.prefix, sys.exec_prefix}
    paths.update(p for p in sys.path if p.startswith("/") and os.path.exists(p))
    paths.add(str(Path(clove_sdk.__file__).resolve().parent.parent))
    # ``python -m clove`` puts the kernel's working directory on sys.path: started from /tmp
    # (or /), binding it would cover the sandbox's private /tmp with the host's, read-only.
    return outermost({p for p in paths if not covers_private(p.rstrip("/") or "/")})


def agent_interpreter_paths(interpreter: str) -> list[str]:
    """What an agent's own interpreter needs readable: the installation its binary resolves to
    and, for a virtual environment's python (``<venv>/bin/python`` beside ``<venv>/pyvenv.cfg``,
    usually a symlink out of the venv), the venv itself, whose site-packages hold clove-sdk."""
    paths = [str(Path(os.path.realpath(interpreter)).parent.parent)]
    venv = Path(os.path.abspath(interpreter)).parent.parent
    if (venv / "pyvenv.cfg").is_file():
        paths.append(str(venv))
    return paths


def outermost(paths: set[str]) -> list[str]:
    """Drop paths that lie inside another one: each bind mount costs the spawn time."""
    kept: list[str] = []
    for path in sorted(paths):
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def agent_env(agent: Agent, *, endpoint: str, work: str, relays: Sequence[Relay] = ()) -> dict[str, str]:
    """A clean environment: the operator's ``env`` on top of defaults, the channel on top; the
    relays' variables (:func:`relay_env`) as that function says."""
    return relay_env(
        {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": work,
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            **agent.spec.env,
            "CLOVE_AGENT_ENDPOINT": endpoint,
            "CLOVE_AGENT_ID": str(agent.id),
            "CLOVE_AGENT_NAME": agent.name,
        },
        relays,
    )


def relay_env(env: dict[str, str], relays: Sequence[Relay]) -> dict[str, str]:
    """``env`` with what unchanged code needs to find the relays: the proxy variables (both
    spellings; the kernel's, whatever the operator set: the proxy is the only way out) and,
    for the LLM relay, ``OPENAI_BASE_URL`` and a placeholder ``OPENAI_API_KEY`` where the
    operator's ``env`` does not set them already."""
    ports = {r.port for r in relays}
    out = dict(env)
    if EGRESS_PORT in ports:
        proxy = f"http://127.0.0.1:{EGRESS_PORT}"
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            out[name] = proxy
        out["NO_PROXY"] = out["no_proxy"] = NO_PROXY
    if LLM_PORT in ports:
        out.setdefault("OPENAI_BASE_URL", f"http://127.0.0.1:{LLM_PORT}/v1")
        out.setdefault("OPENAI_API_KEY", LLM_KEY_PLACEHOLDER)
    return out


def relays_for(agent: Agent, *, channel_dir: str, llm_gateway: bool) -> tuple[Relay, ...]:
    """The agent's relays (module docstring): none without a network namespace of its own.

    :param llm_gateway: the kernel serves the LLM gateway's endpoint on agents' ``llm.sock``.
    """
    spec = agent.spec
    if not spec.sandboxed or spec.network_full:
        return ()
    relays = []
    if spec.network:
        relays.append(Relay(EGRESS_PORT, os.path.join(channel_dir, EGRESS_SOCKET)))
    if llm_gateway and agent.permissions.has("llm"):
        relays.append(Relay(LLM_PORT, os.path.join(channel_dir, LLM_SOCKET)))
    return tuple(relays)


def network_report(agent: Agent, confinement: dict[str, Any]) -> dict[str, Any]:
    """The isolation report's network lines, from what the sandbox says it did.

    ``network``: ``host`` (not sandboxed: no namespace, whatever was granted), ``full`` (the
    host's network, granted), ``proxy`` (its own namespace; the egress relay is up), ``none``
    (its own namespace and no way out); ``relays``: the ports its sandbox listens on for it.
    """
    spec = agent.spec
    relays = [int(p) for p in confinement.get("relays") or ()]
    if not spec.sandboxed:
        report: dict[str, Any] = {"network": "host", "relays": []}
        if spec.network and not spec.network_full:
            report["network_note"] = "not sandboxed: no network namespace, so no egress proxy; the host's network is open to it"
        return report
    if "net" not in confinement.get("namespaces", ()):
        return {"network": "full" if spec.network_full else "host", "relays": []}
    report = {"network": "proxy" if EGRESS_PORT in relays else "none", "relays": relays}
    if spec.network and EGRESS_PORT not in relays:
        report["network_note"] = "the egress relay is not up: the agent reaches no network"
    return report


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
        exposures.extend(Exposure(path=p) for p in agent_interpreter_paths(spec.interpreter))
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
    llm_gateway: bool = False,
) -> SpawnSpec:
    """:param hidden: the kernel's private paths (its state dir, its control socket), which no
    sandbox may see.
    :param llm_gateway: the kernel serves the LLM gateway's endpoint on agents' ``llm.sock``
        (an ``[llm]`` table, its endpoint enabled): an agent with the ``llm`` right gets its relay."""
    spec = agent.spec
    relays = relays_for(agent, channel_dir=os.path.dirname(endpoint[len("ipc://") :]), llm_gateway=llm_gateway)
    return SpawnSpec(
        key=agent.key,
        name=spec.name,
        script=spec.script,
        args=spec.args,
        env=agent_env(agent, endpoint=endpoint, work=work, relays=relays),
        interpreter=spec.interpreter,
        cwd=work,
        uid=agent.uid,
        namespaces=spec.sandboxed,
        # The host's network only for "full" (or without namespaces, where it is the host's anyway).
        network=spec.network_full or (spec.network and not spec.sandboxed),
        relays=relays,
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
