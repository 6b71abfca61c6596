"""What the kernel asks the zygote to start: one frozen, msgpack-friendly description per agent
incarnation (:class:`SpawnSpec`), per command run for ``exec`` (:class:`ExecSpec`), and the
work dir image a spare makes ahead of time (:class:`StagedImage`)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from clove.sandbox.relays import Relay


@dataclass(frozen=True, slots=True, kw_only=True)
class Exposure:
    """A host path made visible inside the agent's mount namespace, at the same path."""

    path: str
    writable: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SpawnSpec:
    """Everything a zygote child needs to confine and start one agent process.

    :param key: the kernel's handle for this incarnation (``"<agent id>.<incarnation>"``).
    :param interpreter: ``None`` runs the script inside the warm zygote interpreter (fast path);
        a path execs that interpreter instead.
    :param uid: the unprivileged uid and gid the agent runs as; ``None`` keeps the zygote's.
    :param namespaces: request new pid, mount, uts and ipc namespaces (and net unless ``network``).
    :param cgroup_attach: ``cgroup.procs`` files the child writes its pid to before unsharing.
    :param rlimits: ``(resource, soft, hard)`` applied just before the agent runs.
    :param tmp_bytes: the size of each private tmpfs (``/tmp``, ``/dev/shm``).
    :param tmp_inodes: the inodes (files, directories, links) each private tmpfs may hold;
        ``None``: tmpfs's own default (half the RAM's pages).
    :param workdir_image: an ext4 image to make (once, ``workdir_bytes`` large) and mount over
        ``cwd`` inside the agent's mount namespace (:mod:`clove.sandbox.workdir`);
        ``None``: ``cwd`` is the plain host directory.
    :param hidden: host paths the agent must never see (the kernel's state dir and control
        socket), covered in its mount view even where an exposure's bind (the script's
        directory above them) would show them; only exposures inside them are bound back
        (:mod:`clove.sandbox.mountview`).
    :param relays: ``127.0.0.1`` TCP ports the sandbox's init listens on and relays to Unix
        sockets (:mod:`clove.sandbox.relays`); only in the agent's own network namespace
        (``namespaces`` and not ``network``), ignored otherwise.
    """

    key: str
    name: str
    script: str
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    interpreter: str | None = None
    cwd: str
    uid: int | None = None
    namespaces: bool = True
    network: bool = False
    hostname: str = "clove-agent"
    cgroup_attach: tuple[str, ...] = ()
    rlimits: tuple[tuple[int, int, int], ...] = ()
    exposures: tuple[Exposure, ...] = ()
    landlock: bool = True
    seccomp: bool = True
    no_new_privs: bool = True
    tmp_bytes: int = 64 << 20
    tmp_inodes: int | None = None
    workdir_image: str | None = None
    workdir_bytes: int | None = None
    hidden: tuple[str, ...] = ()
    relays: tuple[Relay, ...] = ()

    @property
    def relayed(self) -> bool:
        """Whether the agent gets its relays: it has some, in a network namespace of its own."""
        return bool(self.relays) and self.namespaces and not self.network

    @property
    def relay_ports(self) -> tuple[int, ...]:
        """The TCP ports the agent may connect to in its namespace (none unless :attr:`relayed`)."""
        return tuple(r.port for r in self.relays) if self.relayed else ()

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> SpawnSpec:
        data = dict(data)
        data["args"] = tuple(data.get("args", ()))
        data["cgroup_attach"] = tuple(data.get("cgroup_attach", ()))
        data["rlimits"] = tuple(tuple(r) for r in data.get("rlimits", ()))
        data["exposures"] = tuple(Exposure(**e) for e in data.get("exposures", ()))
        data["hidden"] = tuple(data.get("hidden", ()))
        data["relays"] = tuple(Relay.from_wire(r) for r in data.get("relays", ()))
        return cls(**data)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecSpec:
    """One command the zygote runs for the kernel's ``exec`` syscall.

    :param job: the kernel's handle for this command; the zygote's ``exec_*`` events carry it.
    :param argv: the program and its arguments (the program is looked up on ``env["PATH"]``).
    :param cwd: the working directory, already resolved (no symlinks) in the view it runs in.
    :param agent_key: run inside this agent incarnation's sandbox (its cgroups, namespaces, uid,
        rlimits, no_new_privs, Landlock and seccomp, exactly as its spawn spec says) and with its
        environment; ``None`` runs on the host as ``uid``/``gid``/``groups``.
    :param env: the environment of a host command (ignored for an agent's).
    :param uid: for a host command, the user to run as; ``None`` keeps the zygote's.
    """

    job: str
    argv: tuple[str, ...]
    cwd: str
    agent_key: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ExecSpec:
        data = dict(data)
        data["argv"] = tuple(data.get("argv", ()))
        data["groups"] = tuple(data.get("groups", ()))
        return cls(**data)


@dataclass(frozen=True, slots=True, kw_only=True)
class StagedImage:
    """An empty work dir image a spare makes before any agent claims it
    (:mod:`clove.sandbox.sparechild`): the file ``path`` (in the kernel's spares dir), ``size``
    bytes, copied from ``template`` (an empty image of that size, made once) and mounted by the
    spare's G on ``mount`` in its own mount namespace. ``path=None``: none (work dirs are not
    bounded on this host)."""

    path: str | None = None
    size: int = 0
    mount: str = ""
    template: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: object) -> StagedImage:
        if not isinstance(data, dict) or not isinstance(data.get("path"), str) or not isinstance(data.get("mount"), str):
            return cls()
        size, template = data.get("size"), data.get("template")
        return cls(
            path=data["path"],
            size=size if isinstance(size, int) else 0,
            mount=data["mount"],
            template=template if isinstance(template, str) else None,
        )

    def discard(self) -> None:
        """Remove the image file (and a half-made one); the loop device holding it, if any,
        detaches itself once its mount is gone."""
        if self.path is not None:
            for path in (self.path, self.path + ".new"):
                with contextlib.suppress(OSError):
                    os.unlink(path)
