"""A result an operation settles after it has returned: :class:`Later`.

An operation whose answer waits on something slow that needs no driver state meanwhile (the
exchange driver's group commit: the order is journaled and queued, only the ``fdatasync`` is left)
returns a :class:`Later` instead of blocking. The host then takes the next call at once and
replies to this one when it is settled, from whichever thread settles it. Replies still leave
in the order the calls arrived, so a call that follows a pending one never answers first.

In-process callers (a plugin's own tests, :meth:`Driver.call <clove.drivers.Driver.call>`)
never see one: ``call`` waits for it.

.. versionadded:: 0.1 (contract version 1, additive)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, final

__all__ = ["Later"]

_UNSET: Any = object()


@final
class Later:
    """Settled once, by :meth:`resolve` or :meth:`reject`, from any thread; later settlements
    are ignored. The host registers one callback with :meth:`on_settled`."""

    __slots__ = ("_callback", "_error", "_lock", "_value", "_waiter")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: Any = _UNSET
        self._error: BaseException | None = None
        self._callback: Callable[[Later], None] | None = None
        self._waiter: threading.Lock | None = None  # held until settled, when someone waits

    @property
    def settled(self) -> bool:
        return self._value is not _UNSET or self._error is not None

    def resolve(self, value: Any) -> None:
        """Settle with ``value`` (msgpack-able, like any operation's result)."""
        self._settle(value, None)

    def reject(self, error: BaseException) -> None:
        """Settle with ``error``: a :class:`~clove.errors.CloveError` reaches the caller as it
        is; anything else becomes ``device.broken``."""
        self._settle(_UNSET, error)

    def _settle(self, value: Any, error: BaseException | None) -> None:
        with self._lock:
            if self.settled:
                return
            if error is not None:
                self._error = error
            else:
                self._value = value
            callback, waiter = self._callback, self._waiter
        if waiter is not None:
            waiter.release()
        if callback is not None:
            callback(self)

    def on_settled(self, callback: Callable[[Later], None]) -> None:
        """Call ``callback(self)`` once settled: now if it is, else on the settling thread."""
        with self._lock:
            if not self.settled:
                self._callback = callback
                return
        callback(self)

    def outcome(self) -> tuple[Any, BaseException | None]:
        """``(value, None)`` or ``(None, error)``; only once :attr:`settled`."""
        if self._error is not None:
            return None, self._error
        return self._value, None

    def wait(self, timeout: float | None = None) -> Any:
        """Block until settled; return the value or raise the error.

        :raises TimeoutError: not settled within ``timeout`` seconds.
        :raises RuntimeError: another thread waits already (one waiter, like the host's one callback).
        """
        with self._lock:
            waiter = None
            if not self.settled:
                if self._waiter is not None:
                    raise RuntimeError("a Later has one waiter")
                waiter = self._waiter = threading.Lock()  # a bare lock: cheaper than an Event
                waiter.acquire()
        if waiter is not None and not waiter.acquire(timeout=-1 if timeout is None else timeout):
            with self._lock:
                if not self.settled:
                    self._waiter = None
                    raise TimeoutError("the operation's result was not settled in time")
        value, error = self.outcome()
        if error is not None:
            raise error
        return value
