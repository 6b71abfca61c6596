"""Which processes belong to a tree, read from ``/proc``: what the zygote kills when a command
ends or is killed, and what a keeper kills when the kernel's life line is cut."""

from __future__ import annotations

import os


def tree_of(root: int, *, group: int | None = None, session: int | None = None) -> set[int]:
    """Every process in process group ``group`` or session ``session``, and every descendant of
    ``root`` (found through parent pids, so processes that left the group or session are
    included). Never pid 1, never the caller itself."""
    children: dict[int, list[int]] = {}
    members: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid, ppid, pgrp, sid = int(entry), int(fields[1]), int(fields[2]), int(fields[3])
        children.setdefault(ppid, []).append(pid)
        if pgrp == group or sid == session:
            members.add(pid)
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in members:
                members.add(child)
                stack.append(child)
    members.discard(os.getpid())
    members.discard(1)
    return members
