"""The driver contract: one class per kind of device, modelled on python-can's ``BusABC``.

A driver owns one open device inside a driver host process. The host calls, and only the host:

- ``Driver(config)``: keep the typed config, open nothing yet;
- :meth:`Driver.open` / :meth:`Driver.close`: templates around ``_open``/``_close``; ``close``
  is safe twice and from another thread while :meth:`Driver.read` blocks (the read then returns
  promptly, empty or raising :class:`DeviceClosed`);
- :meth:`Driver.call`: runs one operation (a method marked with :func:`operation`) with its
  arguments parsed into the operation's dataclass; :meth:`Driver.begin_call` is the same for
  the host, which does not wait when the operation returns a :class:`Later` (a result settled
  after it returns, such as a commit's) but takes the next call and replies once it is settled;
- :meth:`Driver.read`: the incoming stream (CAN frames, serial bytes, GPIO edges), a template
  around ``_read_internal(timeout)`` that returns nothing when the timeout passes with no data;
- :meth:`Driver.fileno`: an fd that becomes readable when :meth:`Driver.read` has data, so the
  host can poll it instead of running a reader thread (``-1``: not pollable);
- :meth:`Driver.set_stream_filter`: narrows the stream to what the kernel's current listeners
  can receive (from :meth:`Driver.stream_filter`; an optimisation the default ignores).

Every failure leaves as one of the device errors (:class:`DeviceUnavailable`,
:class:`DeviceBusy`, :class:`DeviceClosed`, :class:`DeviceBroken`, :class:`DeviceTimeout`):
the templates map ``OSError``, ``TimeoutError``, ``ImportError`` and anything
:meth:`Driver.map_error` recognises. One reader thread and one caller may use a driver at the
same time; nothing else is concurrent.

``clove.testing.check_driver`` proves a driver honours all of this; run it in the plugin's tests.
"""

from __future__ import annotations

import errno
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

from clove.drivers.grants import DeviceGrant
from clove.drivers.later import Later
from clove.drivers.schema import FieldError, build
from clove.errors import (
    CloveError,
    DeviceBroken,
    DeviceBusy,
    DeviceClosed,
    DeviceError,
    DeviceTimeout,
    DeviceUnavailable,
    InvalidArguments,
)

__all__ = ["API_VERSION", "Caller", "Driver", "Later", "NoArgs", "OpSpec", "operation"]

#: The contract version a driver declares in ``api_version``; the host refuses other majors.
API_VERSION = 1

F = TypeVar("F", bound=Callable[..., Any])
D = TypeVar("D", bound="Driver")


@dataclass(frozen=True, slots=True)
class NoArgs:
    """The arguments of an operation that takes none."""


@dataclass(frozen=True, slots=True)
class OpSpec:
    """One operation a driver offers: its wire name, argument class and method."""

    name: str
    args: type[Any]
    method: str
    doc: str
    wants_caller: bool = False


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asked for an operation, as the kernel established it (never from the request body).

    :param agent: the agent's name (``None`` for an operator).
    :param agent_id: its spawn id, or the operator session's id.
    :param operator: True for an operator on the control socket.
    :param grant: the agent's grant on this device as a table (``None`` for operators), so a
        driver can enforce what needs its own state (positions, open orders).
    """

    agent: str | None
    agent_id: int | None
    operator: bool
    grant: dict[str, Any] | None = None

    @classmethod
    def from_wire(cls, data: Any) -> Caller | None:
        if not isinstance(data, dict):
            return None
        return cls(agent=data.get("agent"), agent_id=data.get("agent_id"), operator=bool(data.get("operator")), grant=data.get("grant"))


def operation(name: str | None = None, *, args: type[Any] = NoArgs, caller: bool = False) -> Callable[[F], F]:
    """Mark a driver method as an operation agents can call (subject to their grant).

    :param name: the wire name (default: the method's name).
    :param args: a frozen dataclass the call's arguments are parsed into; the method receives
        an instance of it.
    :param caller: the method also receives the :class:`Caller` (or ``None`` when called
        without one, as in a driver's own tests).

    .. versionchanged:: 0.1 ``caller`` added (contract version 1, additive).
    """

    def mark(method: F) -> F:
        method.__clove_op__ = (name or method.__name__, args, caller)  # type: ignore[attr-defined]
        return method

    return mark


_STATE_NEW, _STATE_OPEN, _STATE_CLOSED = "new", "open", "closed"


class Driver(ABC):
    """Base of every driver. Subclasses set the class attributes and implement ``_open``,
    ``_close`` and, when ``stream`` is set, ``_read_internal``.

    :cvar Config: a frozen dataclass for the device's config table (``[devices.NAME]`` minus
        the framework's keys), validated at config load.
    :cvar Grant: the grant class for ``[agents.A.devices.NAME]`` (a :class:`DeviceGrant`).
    :cvar stream: ``"items"`` (a list of msgpack-able dicts per read), ``"bytes"``, or ``None``.
    :cvar stream_op: the grant operation that lets an agent receive the stream (``"recv"``).
    :cvar api_version: the contract version this driver was written for.
    """

    Config: ClassVar[type[Any]]
    Grant: ClassVar[type[DeviceGrant]] = DeviceGrant
    stream: ClassVar[Literal["items", "bytes"] | None] = None
    stream_op: ClassVar[str | None] = None
    api_version: ClassVar[int] = API_VERSION

    _operations: ClassVar[dict[str, OpSpec]]

    def __init__(self, config: Any) -> None:
        self.config = config
        #: A private directory for durable state that survives host restarts (order journals,
        #: sequence numbers); the host sets it before :meth:`open`, ``None`` outside a host.
        self.state_dir: str | None = getattr(self, "state_dir", None)
        self._state = _STATE_NEW
        self._state_lock = threading.Lock()
        #: Counters the host reports in its heartbeat (a subclass may add its own before this runs).
        self.counters: dict[str, int] = getattr(self, "counters", {})
        for key in ("calls", "errors", "reads", "items_in", "bytes_in"):
            self.counters.setdefault(key, 0)

    # ---- description (class level: the kernel reads these without opening anything) ----------

    @classmethod
    def operations(cls) -> dict[str, OpSpec]:
        """The operations this driver offers, by wire name."""
        cached = cls.__dict__.get("_operations")
        if cached is None:
            cached = {}
            for klass in reversed(cls.__mro__):
                for attr, value in vars(klass).items():
                    mark = getattr(value, "__clove_op__", None)
                    if mark is not None:
                        name, args, wants_caller = mark
                        cached[name] = OpSpec(name, args, attr, (value.__doc__ or "").strip().split("\n")[0], wants_caller)
            cls._operations = cached
        return cached

    @classmethod
    def grant_ops(cls) -> tuple[str, ...]:
        """Every operation name a grant may list: the driver's and its stream op."""
        names = tuple(cls.operations())
        return names + ((cls.stream_op,) if cls.stream_op else ())

    @classmethod
    def parse_config(cls, data: dict[str, Any], *, ignore: frozenset[str] = frozenset()) -> Any:
        """:raises FieldError: naming the key."""
        return build(cls.Config, data, ignore=ignore)

    @staticmethod
    def detect() -> list[dict[str, Any]]:
        """Devices of this kind present on this machine (shown by ``clove devices --describe``)."""
        return []

    @classmethod
    def compile_filter(cls, filters: list[Any]) -> Callable[[Any], bool]:
        """An agent's own receive filters (``subscribe(filters=...)``) as a predicate over
        stream items; runs in the kernel, on top of the grant's :meth:`DeviceGrant.admits`.

        :raises InvalidArguments: filters this driver does not understand.
        """
        if filters:
            raise InvalidArguments(f"{cls.__name__} takes no receive filters")
        return _accept_all

    @classmethod
    def stream_filter(cls, scopes: list[Any]) -> Any | None:
        """Kernel side: what the host may narrow its stream to, given the
        :meth:`DeviceGrant.stream_scope` of every current listener (an empty list: nobody
        listens). The result goes to :meth:`set_stream_filter` in the host, so it must be
        msgpack-able; ``None`` (the default) means no filter: everything.

        It must cover every item some scope covers (the kernel still applies each grant and
        each subscriber's filters); it may cover more. Runs in the kernel on every subscribe
        and unsubscribe: keep it pure and fast, no vendor imports.

        .. versionadded:: 0.1 (contract version 1, additive)
        """
        return None

    # ---- lifecycle ------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._state == _STATE_OPEN

    @property
    def closed(self) -> bool:
        return self._state == _STATE_CLOSED

    def open(self) -> None:
        """Open the device. Opening an open driver does nothing.

        :raises DeviceClosed: the driver was closed (make a new one).
        :raises DeviceError: the device could not be opened.
        """
        with self._state_lock:
            if self._state == _STATE_CLOSED:
                raise DeviceClosed(f"{type(self).__name__} is closed")
            if self._state == _STATE_OPEN:
                return
            with self._mapped("open"):
                self._open()
            self._state = _STATE_OPEN

    def close(self) -> None:
        """Release the device. Safe to call twice, and from another thread during a read."""
        with self._state_lock:
            if self._state == _STATE_CLOSED:
                return
            was_open = self._state == _STATE_OPEN
            self._state = _STATE_CLOSED
        if was_open:
            try:
                self._close()
            except Exception as err:  # noqa: BLE001 - close must not raise; the host logs counters
                self.counters["errors"] += 1
                warnings.warn(f"{type(self).__name__}.close failed: {err!r}", RuntimeWarning, stacklevel=2)

    @abstractmethod
    def _open(self) -> None:
        """Acquire the device (import the vendor library here, lazily)."""

    @abstractmethod
    def _close(self) -> None:
        """Release the device; called at most once, possibly while a read blocks."""

    def __enter__(self: D) -> D:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_state", None) == _STATE_OPEN:
            warnings.warn(f"{type(self).__name__} was never closed", ResourceWarning, stacklevel=1)

    # ---- operations -----------------------------------------------------------------------------

    def call(self, op: str, args: dict[str, Any] | None = None, caller: Caller | None = None) -> Any:
        """Run one operation (``caller`` reaches operations declared with ``caller=True``) and
        return its result, waiting for it when the operation returned a :class:`Later`.

        :raises InvalidArguments: an unknown operation or bad arguments.
        :raises DeviceClosed: not open.
        :raises DeviceError: the device failed.
        """
        result = self.begin_call(op, args, caller)
        if not isinstance(result, Later):
            return result
        try:
            return result.wait()
        except CloveError:
            self.counters["errors"] += 1
            raise
        except Exception as err:
            raise self._failure(err, op) from err

    def begin_call(self, op: str, args: dict[str, Any] | None = None, caller: Caller | None = None) -> Any:
        """Like :meth:`call`, but an operation that returns a :class:`Later` is not waited for:
        the host takes further calls and replies when it is settled (a rejection that is not a
        ``CloveError`` becomes ``device.broken``).

        :raises InvalidArguments: an unknown operation or bad arguments.
        :raises DeviceClosed: not open.
        :raises DeviceError: the device failed.

        .. versionadded:: 0.1 (contract version 1, additive)
        """
        spec = self.operations().get(op)
        if spec is None:
            raise InvalidArguments(
                f"{type(self).__name__} has no operation {op!r}; it has: {', '.join(sorted(self.operations())) or 'none'}",
                details={"op": op, "ops": sorted(self.operations())},
            )
        parsed = self.parse_args(spec, args or {})
        self._require_open()
        self.counters["calls"] += 1
        try:  # inline rather than _mapped(): this is every operation's path
            if spec.wants_caller:
                return getattr(self, spec.method)(parsed, caller)
            return getattr(self, spec.method)(parsed)
        except CloveError:
            self.counters["errors"] += 1
            raise
        except Exception as err:
            raise self._failure(err, op) from err

    @staticmethod
    def parse_args(spec: OpSpec, args: dict[str, Any]) -> Any:
        """:raises InvalidArguments: naming the argument."""
        try:
            return build(spec.args, args)
        except FieldError as err:
            raise InvalidArguments(f"{spec.name}: {err}", details={"op": spec.name, "argument": err.key}) from None

    # ---- the stream -----------------------------------------------------------------------------

    def read(self, timeout: float | None) -> Any:
        """Incoming data: a list of items (``stream == "items"``) or bytes, empty when
        ``timeout`` seconds pass with nothing (``0``: do not wait; ``None``: wait for data).

        :raises DeviceClosed: the driver is closed (also when closed during the wait).
        :raises DeviceError: the device failed.
        """
        if self.stream is None:
            raise InvalidArguments(f"{type(self).__name__} has no incoming stream")
        self._require_open()
        try:
            data = self._read_internal(timeout)
        except CloveError:
            self.counters["errors"] += 1
            raise
        except Exception as err:
            raise self._failure(err, "read") from err
        if self._state == _STATE_CLOSED:
            raise DeviceClosed(f"{type(self).__name__} closed during read")
        self.counters["reads"] += 1
        if self.stream == "bytes":
            self.counters["bytes_in"] += len(data)
        else:
            self.counters["items_in"] += len(data)
        return data

    def _read_internal(self, timeout: float | None) -> Any:
        """Wait up to ``timeout`` for data; return it (``[]``/``b""`` when there is none)."""
        raise NotImplementedError(f"{type(self).__name__} declares a stream but no _read_internal")

    def set_stream_filter(self, spec: Any | None) -> None:
        """Narrow what :meth:`read` delivers to ``spec``, a result of :meth:`stream_filter`
        (``None``: everything). Items outside it may still arrive; an item inside it must not be
        lost. Called by the host on its main thread, while a reader thread may be in :meth:`read`.

        :raises InvalidArguments: a spec this driver does not understand.
        :raises DeviceClosed: not open.
        :raises DeviceError: the device refused the filter.

        .. versionadded:: 0.1 (contract version 1, additive)
        """
        self._require_open()
        with self._mapped("set_stream_filter"):
            self._set_stream_filter(spec)

    def _set_stream_filter(self, spec: Any | None) -> None:
        """Apply a stream filter (the default ignores it: the device delivers everything)."""
        return None

    def fileno(self) -> int:
        """An fd readable when :meth:`read` has data, or ``-1``."""
        return -1

    def status(self) -> dict[str, Any]:
        """Device-specific state for ``clove devices`` (bus state, error counters, ...)."""
        return {}

    # ---- errors ---------------------------------------------------------------------------------

    def map_error(self, err: BaseException) -> DeviceError | None:
        """Translate a vendor library's exception; ``None`` falls back to the defaults."""
        return None

    def _require_open(self) -> None:
        if self._state != _STATE_OPEN:
            raise DeviceClosed(f"{type(self).__name__} is {'closed' if self._state == _STATE_CLOSED else 'not open'}")

    @contextmanager
    def _mapped(self, what: str) -> Iterator[None]:
        try:
            yield
        except CloveError:
            self.counters["errors"] += 1
            raise
        except Exception as err:
            raise self._failure(err, what) from err

    def _failure(self, err: Exception, what: str) -> DeviceError:
        """The device error to raise for a foreign exception ``err``."""
        self.counters["errors"] += 1
        if self._state == _STATE_CLOSED:
            return DeviceClosed(f"{type(self).__name__} closed during {what}")
        return self._translate(err, what)

    def _translate(self, err: Exception, what: str) -> DeviceError:
        mapped = self.map_error(err)
        if mapped is not None:
            return mapped
        name = type(self).__name__
        if isinstance(err, TimeoutError):
            return DeviceTimeout(f"{name}: {what} timed out")
        if isinstance(err, ImportError):
            module = err.name or "its library"
            return DeviceUnavailable(f"{name} needs the {module!r} module, which is not installed", details={"module": module})
        if isinstance(err, OSError):
            text = f"{name}: {what}: {err.strerror or err}"
            if err.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.EACCES, errno.EPERM):
                return DeviceUnavailable(text, details={"errno": err.errno})
            if err.errno in (errno.EBUSY, errno.EAGAIN, errno.ENOBUFS):
                return DeviceBusy(text, details={"errno": err.errno})
            if what == "open":  # whatever stops an open, the device is not there for us
                return DeviceUnavailable(text, details={"errno": err.errno})
            return DeviceBroken(text, details={"errno": err.errno})
        return DeviceBroken(f"{name}: {what} failed: {type(err).__name__}: {err}")


def _accept_all(item: Any) -> bool:
    return True
