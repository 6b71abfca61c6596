"""A tree whose C ends cleanly without ever naming G (a spare whose claim was lost) is reported
as a failed start, never left for the kernel to wait on forever."""

from __future__ import annotations

import os
import selectors
from typing import Any

from clove.sandbox.spec import SpawnSpec
from clove.sandbox.trees import Trees
from clove.testing.kernel import poll_for


class NoSpares:
    def owns(self, pid: int) -> bool:
        return False

    def reaped(self, pid: int) -> None:
        pass


def test_a_tree_that_never_named_its_init_is_reported_as_failed() -> None:
    events: list[dict[str, Any]] = []
    selector = selectors.DefaultSelector()
    trees = Trees(selector, lambda event, fds=None: events.append(event), NoSpares())  # type: ignore[arg-type]
    status_r, status_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os._exit(0)  # C's clean exit, without {"g": pid} in the pipe
    os.close(status_w)
    trees.add_agent(SpawnSpec(key="7.1", name="lost", script="/x.py", cwd="/"), pid, status_r, spare=True)

    def exited() -> dict[str, Any] | None:
        trees.reap()
        for key in list(selector.get_map().values()):
            trees.read_status(key.data)
        return next((e for e in events if e["ev"] == "exited"), None)

    event = poll_for(exited, 10, interval=0.01, message="the exited event")
    assert event["key"] == "7.1" and "before its init was reported" in event["error"]
    assert events[0] == {"ev": "forked", "key": "7.1", "pid": pid, "spare": True}
    assert trees.agents == {} and trees.by_pipe == {}
    selector.close()
