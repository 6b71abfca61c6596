"""The agent's view of the file system, built by its sandbox's init in a fresh mount namespace:
the host's tree read-only and nosuid, a private tmpfs on ``/tmp`` and ``/dev/shm``, the
exposures bound back at their own paths, and the kernel's private paths hidden.

The order is the point. :func:`plan` sorts every mount from the outermost path inwards, so a
mount never lands under one made later. The script's directory, bound read-only, may contain
the kernel's state dir (``/tmp/x/agent.py`` beside ``/tmp/x/state``): the state dir's *hide*
comes after that bind and covers it with an empty, read-only directory, and only then are the
agent's own channel and work dirs bound back inside it. Nothing else of the state dir (other
agents' dirs, the journal, a control socket kept there) is in the view, whatever its modes and
wherever the script lives.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from clove.sandbox import linux, workdir
from clove.sandbox.spec import Exposure

#: Directories that always get a fresh, private tmpfs inside the sandbox.
PRIVATE_TMPFS: Final = ("/tmp", "/dev/shm")
#: A hidden directory's stand-in: traversable (the agent's own dirs are bound inside it), not
#: listable, read-only once they are.
HIDE_OPTIONS: Final = "mode=0711,size=1m,nr_inodes=256"
#: A cover for a directory the agent's uid could not traverse on the host (``/root`` holding a
#: virtualenv, say); it also hides everything else that directory holds.
COVER_OPTIONS: Final = "mode=0755,size=64m"
_HIDE_FLAGS: Final = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC

Kind = Literal["private", "cover", "hide", "bind"]


@dataclass(frozen=True, slots=True)
class Mount:
    """One mount of the view: a private tmpfs, a cover, a hide, or an exposure's bind."""

    kind: Kind
    path: str
    writable: bool = False


def within(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or lies below it (both absolute and normalised)."""
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def covers_private(path: str) -> bool:
    """Whether binding ``path`` would lay the host's files over a private tmpfs (``/tmp``, or
    ``/`` itself): the sandbox's ``/tmp`` would be the host's, and read-only."""
    return any(within(root, path) for root in PRIVATE_TMPFS)


def _traversable_by_others(path: str) -> bool:
    try:
        return bool(os.stat(path).st_mode & stat.S_IXOTH)
    except OSError:
        return False


def _depth(path: str) -> int:
    return len([part for part in path.split("/") if part])


def _cover_for(path: str, hidden: Sequence[str], traversable: Callable[[str], bool]) -> str | None:
    """The outermost directory a tmpfs must cover before ``path`` can be bound: a private
    tmpfs root that contains it, or the first ancestor an unprivileged uid cannot traverse.
    ``None`` when the path is reachable as it is, or when a hidden path on the way stands in
    (the hide is traversable and holds only what is bound into it)."""
    for root in PRIVATE_TMPFS:
        if within(path, root):
            return root
    parts = [part for part in path.split("/") if part]
    for i in range(1, len(parts)):
        ancestor = "/" + "/".join(parts[:i])
        if ancestor in hidden:
            return None
        if not traversable(ancestor):
            return ancestor
    return None


def plan(
    exposures: Iterable[Exposure],
    hidden: Iterable[str] = (),
    *,
    traversable: Callable[[str], bool] = _traversable_by_others,
) -> list[Mount]:
    """The mounts that make the view, in the order to make them: outer paths first; at one
    path, a tmpfs or a hide before the bind that goes on top of it.

    A read-only exposure that the read-only tree already shows is not bound (a bind would only
    cost the spawn time); one inside a hidden path always is.
    """
    # A hidden path at or above a private tmpfs root is hidden by that tmpfs already.
    veiled = tuple(sorted({os.path.normpath(h) for h in hidden if not covers_private(os.path.normpath(h))}))
    binds: list[Mount] = []
    covers = set(PRIVATE_TMPFS)
    for exp in exposures:
        cover = _cover_for(exp.path, veiled, traversable)
        if cover is not None:
            covers.add(cover)
        if exp.writable or cover is not None or any(within(exp.path, h) for h in veiled):
            binds.append(Mount("bind", exp.path, exp.writable))
    # Only the outermost covers matter: a tmpfs inside another would be hidden or redundant.
    outer = [c for c in covers if not any(c != o and within(c, o) for o in covers)]
    tmpfs = [Mount("private" if c in PRIVATE_TMPFS else "cover", c) for c in sorted(outer)]
    hides = [Mount("hide", h) for h in veiled]
    return sorted([*tmpfs, *hides, *binds], key=lambda m: (_depth(m.path), m.kind == "bind"))


def build(
    exposures: Sequence[Exposure],
    *,
    hidden: Sequence[str] = (),
    tmp_bytes: int = 64 << 20,
    tmp_inodes: int | None = None,
    work_mount: tuple[int, str, str, int] | None = None,
) -> None:
    """Make the view (:func:`plan`) in the calling process's own, new mount namespace.

    ``hidden`` are host paths the agent must not see (the kernel's state dir and control
    socket): a directory becomes an empty read-only tmpfs, anything else an unopenable
    ``/dev/null``. A hidden path the view does not show at that point (under the private
    ``/tmp``, say) needs nothing.

    ``work_mount`` is ``(loop fd, loop device, work dir, uid)``: that ext4 filesystem is
    mounted over the work dir first (:func:`clove.sandbox.workdir.mount`), so the work dir's
    exposure binds the size-bounded filesystem instead of the host directory.
    """
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    if work_mount is not None:
        workdir.mount(*work_mount)
    steps = plan(exposures, hidden)
    # Open the sources before any tmpfs or hide covers them; bind from /proc/self/fd.
    sources: dict[str, int] = {}
    for step in steps:
        if step.kind == "bind" and step.path not in sources:
            try:
                sources[step.path] = os.open(step.path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
    linux.make_tree_readonly("/")
    private = f"mode=1777,size={tmp_bytes}" + (f",nr_inodes={tmp_inodes}" if tmp_inodes else "")
    made_hides: list[str] = []
    try:
        for step in steps:
            if step.kind in ("private", "cover"):
                if os.path.isdir(step.path):
                    options = private if step.kind == "private" else COVER_OPTIONS
                    linux.mount("tmpfs", step.path, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, options)
            elif step.kind == "hide":
                if _hide(step.path):
                    made_hides.append(step.path)
            elif step.path in sources:
                _bind(sources[step.path], step.path, writable=step.writable)
    finally:
        for fd in sources.values():
            os.close(fd)
    for path in made_hides:  # read-only only now: the binds inside needed their mount points made
        linux.mount(None, path, None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY | _HIDE_FLAGS)


def _hide(path: str) -> bool:
    """Cover ``path`` as it shows in the view now; whether there was anything to cover."""
    if os.path.isdir(path):
        linux.mount("tmpfs", path, "tmpfs", _HIDE_FLAGS, HIDE_OPTIONS)
        return True
    if os.path.lexists(path):
        linux.mount("/dev/null", path, None, linux.MS_BIND)  # nodev (below): even it won't open
        return True
    return False


def _make_mount_point(target: str, *, is_dir: bool) -> None:
    """Make ``target`` and its missing parents, on a tmpfs or a hide: mount points only, so each
    directory is traversable and never listable (``os.makedirs`` gives the parents 0755)."""
    parts = [part for part in target.split("/") if part]
    last = len(parts) if is_dir else len(parts) - 1
    for i in range(1, last + 1):
        path = "/" + "/".join(parts[:i])
        if not os.path.isdir(path):
            os.mkdir(path, 0o711)
            os.chmod(path, 0o711)  # whatever the umask
    if not is_dir and not os.path.exists(target):
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))


def _bind(fd: int, target: str, *, writable: bool) -> None:
    if not os.path.exists(target):
        _make_mount_point(target, is_dir=stat.S_ISDIR(os.fstat(fd).st_mode))
    linux.mount(f"/proc/self/fd/{fd}", target, None, linux.MS_BIND | linux.MS_REC)
    flags = linux.MS_REMOUNT | linux.MS_BIND | linux.MS_NOSUID | (0 if writable else linux.MS_RDONLY)
    linux.mount(None, target, None, flags)
