"""A reply that comes later: what a handler returns when the answer depends on something that
has not happened yet (a spawn answered once the sandbox is up, a kill once the agent is gone,
a command once it exits), so nothing waits on the loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clove.errors import CloveError


class Deferred:
    """A reply that comes later: call :meth:`resolve` or :meth:`reject` exactly once."""

    __slots__ = ("_callback", "_outcome", "done")

    def __init__(self) -> None:
        self._callback: Callable[[Any, CloveError | None], None] | None = None
        self._outcome: tuple[Any, CloveError | None] | None = None
        self.done = False

    def bind(self, callback: Callable[[Any, CloveError | None], None]) -> None:
        self._callback = callback
        if self._outcome is not None:  # settled inside execute(), before the dispatcher bound
            outcome, self._outcome = self._outcome, None
            callback(*outcome)

    def resolve(self, result: Any) -> None:
        self._finish(result, None)

    def reject(self, error: CloveError) -> None:
        self._finish(None, error)

    def _finish(self, result: Any, error: CloveError | None) -> None:
        if self.done:
            return
        self.done = True
        if self._callback is not None:
            self._callback(result, error)
        else:
            self._outcome = (result, error)
