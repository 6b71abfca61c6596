"""clove.drivers.base.Driver: operations, lifecycle, error mapping, the stream; and the
conformance kit clove.testing.drivers.check_driver, passing and (on purpose) failing."""

from __future__ import annotations

import collections
import errno
import gc
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from clove.drivers import (
    DeviceBroken,
    DeviceBusy,
    DeviceClosed,
    DeviceError,
    DeviceTimeout,
    DeviceUnavailable,
    Driver,
    NoArgs,
    OpSpec,
    operation,
)
from clove.errors import InvalidArguments
from clove.testing.drivers import check_driver
from clove.testing.loopback import LoopbackConfig, LoopbackDriver

# -- small drivers -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    label: str = "probe"


@dataclass(frozen=True, slots=True)
class EchoArgs:
    text: str
    times: int = 1


@dataclass(frozen=True, slots=True)
class ExtraArgs:
    n: int = 0


class Probe(Driver):
    """No stream; operations that echo, report and fail on request."""

    Config = ProbeConfig

    def __init__(self, config: ProbeConfig | None = None) -> None:
        super().__init__(config or ProbeConfig())
        self.open_calls = 0
        self.close_calls = 0
        self.open_error: BaseException | None = None
        self.op_error: BaseException | None = None
        self.close_error: BaseException | None = None

    def _open(self) -> None:
        self.open_calls += 1
        if self.open_error is not None:
            raise self.open_error

    def _close(self) -> None:
        self.close_calls += 1
        if self.close_error is not None:
            raise self.close_error

    @operation(args=EchoArgs)
    def echo(self, args: EchoArgs) -> str:
        """Echo ``text`` back ``times`` times.

        The rest of the docstring is not part of the summary.
        """
        return args.text * args.times

    @operation("get-status")
    def status_op(self, args: NoArgs) -> dict[str, Any]:
        """Report that all is well."""
        return {"ok": True, "args": type(args).__name__}

    @operation()
    def fail(self, args: NoArgs) -> None:
        """Raise whatever the test set."""
        assert self.op_error is not None
        raise self.op_error

    @operation()
    def close_then_fail(self, args: NoArgs) -> None:
        """Close underneath the call (another thread would), then fail."""
        self.close()
        raise OSError(errno.EIO, "gone")

    def not_an_operation(self) -> None:
        """A plain method is not offered."""


class ProbeChild(Probe):
    @operation(args=ExtraArgs)
    def extra(self, args: ExtraArgs) -> int:
        """Only the child has this."""
        return args.n + 1

    @operation(args=ExtraArgs)
    def echo(self, args: ExtraArgs) -> int:  # type: ignore[override]
        """The child's echo takes other arguments."""
        return args.n


class VendorError(Exception):
    pass


class Mapping(Probe):
    def map_error(self, err: BaseException) -> DeviceError | None:
        if isinstance(err, VendorError):
            return DeviceBusy(f"vendor says busy: {err}", details={"vendor": True})
        return None


class Bare(Driver):
    """No operations at all."""

    Config = ProbeConfig

    def _open(self) -> None:
        pass

    def _close(self) -> None:
        pass


class Stream(Driver):
    """An items stream fed by the test; ``read_error`` / ``close_in_read`` simulate failures."""

    Config = ProbeConfig
    stream = "items"
    stream_op = "recv"

    def __init__(self, config: ProbeConfig | None = None) -> None:
        super().__init__(config or ProbeConfig())
        self.queue: collections.deque[dict[str, Any]] = collections.deque()
        self.read_error: Exception | None = None
        self.close_in_read = False

    def _open(self) -> None:
        pass

    def _close(self) -> None:
        pass

    def _read_internal(self, timeout: float | None) -> list[dict[str, Any]]:
        if self.close_in_read:
            self.close()
            return []
        if self.read_error is not None:
            raise self.read_error
        out = list(self.queue)
        self.queue.clear()
        return out


class ByteStream(Stream):
    stream = "bytes"  # type: ignore[assignment]

    def _read_internal(self, timeout: float | None) -> bytes:  # type: ignore[override]
        out = b"".join(item["b"] for item in self.queue)
        self.queue.clear()
        return out


class NoReader(Driver):
    """Declares a stream but forgot ``_read_internal``."""

    Config = ProbeConfig
    stream = "bytes"
    stream_op = "read"

    def _open(self) -> None:
        pass

    def _close(self) -> None:
        pass


class Counting(Bare):
    def __init__(self, config: ProbeConfig) -> None:
        self.counters = {"frames": 5}
        super().__init__(config)


@pytest.fixture
def probe() -> Iterator[Probe]:
    driver = Probe()
    driver.open()
    yield driver
    driver.close()


# -- operations ----------------------------------------------------------------------------------


def test_operations_are_discovered_by_wire_name() -> None:
    ops = Probe.operations()
    assert set(ops) == {"echo", "get-status", "fail", "close_then_fail"}
    assert ops["echo"] == OpSpec("echo", EchoArgs, "echo", "Echo ``text`` back ``times`` times.")
    assert ops["get-status"] == OpSpec("get-status", NoArgs, "status_op", "Report that all is well.")
    assert "not_an_operation" not in ops
    assert "status_op" not in ops


def test_operations_are_inherited_and_overridable_per_class() -> None:
    parent = Probe.operations()
    child = ProbeChild.operations()
    assert set(child) == set(parent) | {"extra"}
    assert "extra" not in Probe.operations()  # the child's cache is its own
    assert child["echo"].args is ExtraArgs
    assert parent["echo"].args is EchoArgs
    assert child["echo"].doc == "The child's echo takes other arguments."
    with ProbeChild() as driver:
        assert driver.call("echo", {"n": 4}) == 4
        assert driver.call("extra", {"n": 4}) == 5
        assert driver.call("get-status") == {"ok": True, "args": "NoArgs"}


def test_operations_are_cached() -> None:
    assert Probe.operations() is Probe.operations()


def test_grant_ops_add_the_stream_op() -> None:
    assert Stream.grant_ops() == ("recv",)
    assert set(Probe.grant_ops()) == set(Probe.operations())
    assert "recv" not in Probe.grant_ops()


def test_call_runs_the_operation_with_parsed_args(probe: Probe) -> None:
    assert probe.call("echo", {"text": "ab", "times": 3}) == "ababab"
    assert probe.call("echo", {"text": "x"}) == "x"
    assert probe.call("get-status", None) == {"ok": True, "args": "NoArgs"}
    assert probe.counters["calls"] == 3
    assert probe.counters["errors"] == 0


def test_unknown_operation_is_invalid_arguments(probe: Probe) -> None:
    with pytest.raises(InvalidArguments) as info:
        probe.call("fly", {})
    assert info.value.details == {"op": "fly", "ops": ["close_then_fail", "echo", "fail", "get-status"]}
    assert (
        info.value.message == "Probe has no operation 'fly'; it has: close_then_fail, echo, fail, get-status"
    )
    assert probe.counters["calls"] == 0


def test_driver_without_operations_says_none() -> None:
    with Bare(ProbeConfig()) as driver, pytest.raises(InvalidArguments, match="it has: none"):
        driver.call("anything")


@pytest.mark.parametrize(
    ("args", "argument", "message"),
    [
        ({}, "text", "echo: text: required"),
        ({"text": 5}, "text", "echo: text: expected string, got int 5"),
        ({"text": "a", "times": True}, "times", "echo: times: expected int, got bool True"),
        ({"text": "a", "bogus": 1}, "bogus", "echo: bogus: unknown key (known: text, times)"),
    ],
)
def test_bad_arguments_are_invalid_arguments_naming_the_argument(
    probe: Probe, args: dict[str, Any], argument: str, message: str
) -> None:
    with pytest.raises(InvalidArguments) as info:
        probe.call("echo", args)
    assert info.value.message == message
    assert info.value.details == {"op": "echo", "argument": argument}
    assert probe.counters["calls"] == 0


def test_arguments_are_checked_before_the_state() -> None:
    driver = Probe()
    with pytest.raises(InvalidArguments):
        driver.call("echo", {})
    with pytest.raises(DeviceClosed):
        driver.call("echo", {"text": "a"})


# -- lifecycle -----------------------------------------------------------------------------------


def test_call_before_open_is_device_closed() -> None:
    driver = Probe()
    assert (driver.is_open, driver.closed) == (False, False)
    with pytest.raises(DeviceClosed, match="Probe is not open"):
        driver.call("echo", {"text": "a"})
    assert driver.counters["calls"] == 0


def test_call_after_close_is_device_closed(probe: Probe) -> None:
    probe.close()
    assert (probe.is_open, probe.closed) == (False, True)
    with pytest.raises(DeviceClosed, match="Probe is closed"):
        probe.call("echo", {"text": "a"})


def test_open_twice_opens_once() -> None:
    driver = Probe()
    driver.open()
    driver.open()
    assert driver.open_calls == 1
    assert driver.is_open
    driver.close()


def test_close_twice_closes_once(probe: Probe) -> None:
    probe.close()
    probe.close()
    assert probe.close_calls == 1
    assert probe.closed


def test_close_of_a_never_opened_driver_releases_nothing() -> None:
    driver = Probe()
    driver.close()
    assert driver.closed
    assert driver.close_calls == 0
    with pytest.raises(DeviceClosed):
        driver.open()
    assert driver.open_calls == 0


def test_open_after_close_is_device_closed(probe: Probe) -> None:
    probe.close()
    with pytest.raises(DeviceClosed, match="Probe is closed"):
        probe.open()
    assert probe.open_calls == 1


def test_context_manager_opens_and_closes() -> None:
    with Probe() as driver:
        assert driver.is_open
    assert driver.closed
    assert driver.close_calls == 1


def test_a_failed_open_leaves_the_driver_openable() -> None:
    driver = Probe()
    driver.open_error = OSError(errno.ENOENT, "No such file or directory")
    with pytest.raises(DeviceUnavailable) as info:
        driver.open()
    assert info.value.details == {"errno": errno.ENOENT}
    assert "Probe: open: No such file or directory" in info.value.message
    assert not driver.is_open
    assert not driver.closed
    assert driver.counters["errors"] == 1
    driver.open_error = None
    driver.open()
    assert driver.is_open
    driver.close()


def test_any_os_error_at_open_is_unavailable() -> None:
    driver = Probe()
    driver.open_error = OSError(errno.EIO, "I/O error")
    with pytest.raises(DeviceUnavailable):
        driver.open()


def test_a_device_error_at_open_passes_through() -> None:
    driver = Probe()
    driver.open_error = DeviceBusy("held by pid 42")
    with pytest.raises(DeviceBusy, match="held by pid 42"):
        driver.open()
    assert driver.counters["errors"] == 1


def test_a_failing_close_warns_and_still_counts_as_closed(probe: Probe) -> None:
    probe.close_error = OSError(errno.EBADF, "Bad file descriptor")
    with pytest.warns(RuntimeWarning, match="Probe.close failed"):
        probe.close()
    assert probe.closed
    assert probe.counters["errors"] == 1
    probe.close()  # and it is not retried
    assert probe.close_calls == 1


# -- error mapping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "kind", "details"),
    [
        (TimeoutError("slow"), DeviceTimeout, {}),
        (OSError(errno.ENOENT, "No such file"), DeviceUnavailable, {"errno": errno.ENOENT}),
        (OSError(errno.ENODEV, "No such device"), DeviceUnavailable, {"errno": errno.ENODEV}),
        (OSError(errno.ENXIO, "No such device or address"), DeviceUnavailable, {"errno": errno.ENXIO}),
        (OSError(errno.EACCES, "Permission denied"), DeviceUnavailable, {"errno": errno.EACCES}),
        (PermissionError(errno.EPERM, "Operation not permitted"), DeviceUnavailable, {"errno": errno.EPERM}),
        (OSError(errno.EBUSY, "Device or resource busy"), DeviceBusy, {"errno": errno.EBUSY}),
        (BlockingIOError(errno.EAGAIN, "try again"), DeviceBusy, {"errno": errno.EAGAIN}),
        (OSError(errno.ENOBUFS, "No buffer space"), DeviceBusy, {"errno": errno.ENOBUFS}),
        (OSError(errno.EIO, "Input/output error"), DeviceBroken, {"errno": errno.EIO}),
        (OSError("no errno at all"), DeviceBroken, {"errno": None}),
        (RuntimeError("boom"), DeviceBroken, {}),
        (KeyError("k"), DeviceBroken, {}),
    ],
)
def test_foreign_errors_map_to_device_errors(
    probe: Probe, error: Exception, kind: type[DeviceError], details: dict[str, Any]
) -> None:
    probe.op_error = error
    with pytest.raises(DeviceError) as info:
        probe.call("fail")
    assert type(info.value) is kind
    assert info.value.details == details
    assert info.value.__cause__ is error
    assert probe.counters == {"calls": 1, "errors": 1, "reads": 0, "items_in": 0, "bytes_in": 0}


def test_mapped_messages(probe: Probe) -> None:
    probe.op_error = TimeoutError()
    with pytest.raises(DeviceTimeout, match=r"^Probe: fail timed out$"):
        probe.call("fail")
    probe.op_error = RuntimeError("boom")
    with pytest.raises(DeviceBroken, match=r"^Probe: fail failed: RuntimeError: boom$"):
        probe.call("fail")
    probe.op_error = OSError(errno.EIO, "Input/output error")
    with pytest.raises(DeviceBroken, match=r"^Probe: fail: Input/output error$"):
        probe.call("fail")


def test_import_error_names_the_missing_module(probe: Probe) -> None:
    probe.op_error = ModuleNotFoundError("No module named 'vendorlib'", name="vendorlib")
    with pytest.raises(DeviceUnavailable) as info:
        probe.call("fail")
    assert info.value.message == "Probe needs the 'vendorlib' module, which is not installed"
    assert info.value.details == {"module": "vendorlib"}
    probe.op_error = ImportError("cannot import name 'x'")
    with pytest.raises(DeviceUnavailable, match="its library") as info:
        probe.call("fail")
    assert info.value.details == {"module": "its library"}


def test_an_import_error_at_open_is_unavailable() -> None:
    driver = Probe()
    driver.open_error = ModuleNotFoundError("No module named 'can'", name="can")
    with pytest.raises(DeviceUnavailable, match="'can' module"):
        driver.open()


def test_clove_errors_from_an_operation_pass_through(probe: Probe) -> None:
    error = DeviceBusy("tx queue full", details={"queued": 64})
    probe.op_error = error
    with pytest.raises(DeviceBusy) as info:
        probe.call("fail")
    assert info.value is error
    probe.op_error = InvalidArguments("bad frame")
    with pytest.raises(InvalidArguments, match="bad frame"):
        probe.call("fail")
    assert probe.counters["errors"] == 2


def test_map_error_override_comes_first_and_falls_back() -> None:
    with Mapping() as driver:
        driver.op_error = VendorError("bus heavy")
        with pytest.raises(DeviceBusy) as info:
            driver.call("fail")
        assert info.value.message == "vendor says busy: bus heavy"
        assert info.value.details == {"vendor": True}
        driver.op_error = OSError(errno.EIO, "I/O")
        with pytest.raises(DeviceBroken):
            driver.call("fail")
        driver.op_error = TimeoutError()
        with pytest.raises(DeviceTimeout):
            driver.call("fail")


def test_a_failure_after_close_is_device_closed(probe: Probe) -> None:
    with pytest.raises(DeviceClosed, match="Probe closed during close_then_fail"):
        probe.call("close_then_fail")
    assert probe.counters["errors"] == 1


# -- the stream ----------------------------------------------------------------------------------


def test_read_without_a_stream_is_invalid_arguments(probe: Probe) -> None:
    with pytest.raises(InvalidArguments, match="Probe has no incoming stream"):
        probe.read(0)


def test_read_before_open_and_after_close_is_device_closed() -> None:
    driver = Stream()
    with pytest.raises(DeviceClosed):
        driver.read(0)
    driver.open()
    driver.close()
    with pytest.raises(DeviceClosed):
        driver.read(0)
    assert driver.counters["reads"] == 0


def test_read_returns_data_and_counts_it() -> None:
    with Stream() as driver:
        driver.queue.extend([{"n": 1}, {"n": 2}])
        assert driver.read(0) == [{"n": 1}, {"n": 2}]
        assert driver.read(0) == []
        assert (driver.counters["reads"], driver.counters["items_in"], driver.counters["bytes_in"]) == (
            2,
            2,
            0,
        )


def test_byte_stream_counts_bytes() -> None:
    with ByteStream() as driver:
        driver.queue.extend([{"b": b"abc"}, {"b": b"de"}])
        assert driver.read(None) == b"abcde"
        assert (driver.counters["reads"], driver.counters["bytes_in"], driver.counters["items_in"]) == (
            1,
            5,
            0,
        )


def test_read_errors_are_mapped() -> None:
    with Stream() as driver:
        driver.read_error = OSError(errno.EIO, "bus off")
        with pytest.raises(DeviceBroken, match="Stream: read: bus off"):
            driver.read(0)
        driver.read_error = DeviceTimeout("no answer")
        with pytest.raises(DeviceTimeout, match="no answer"):
            driver.read(0)
        assert driver.counters["errors"] == 2
        assert driver.counters["reads"] == 0


def test_close_during_read_is_device_closed() -> None:
    driver = Stream()
    driver.open()
    driver.close_in_read = True
    with pytest.raises(DeviceClosed, match="Stream closed during read"):
        driver.read(1.0)
    assert driver.closed


def test_a_stream_without_read_internal_is_broken_not_a_crash() -> None:
    with NoReader(ProbeConfig()) as driver, pytest.raises(DeviceBroken, match="NotImplementedError"):
        driver.read(0)


# -- the rest of the surface ---------------------------------------------------------------------


def test_counters_keep_a_subclass_s_own() -> None:
    driver = Counting(ProbeConfig())
    assert driver.counters == {"frames": 5, "calls": 0, "errors": 0, "reads": 0, "items_in": 0, "bytes_in": 0}
    other = Probe()
    assert other.counters is not Probe().counters


def test_defaults_of_the_description_methods() -> None:
    driver = Probe(ProbeConfig(label="x"))
    assert driver.config == ProbeConfig(label="x")
    assert Probe.parse_config({"label": "y"}) == ProbeConfig(label="y")
    assert Probe.parse_config({"label": "y", "driver": "z"}, ignore=frozenset({"driver"})) == ProbeConfig(
        label="y"
    )
    assert Probe.detect() == []
    assert driver.fileno() == -1
    assert driver.status() == {}
    accept = Probe.compile_filter([])
    assert accept({"anything": 1}) is True
    with pytest.raises(InvalidArguments, match="Probe takes no receive filters"):
        Probe.compile_filter([{"id": 1}])


def test_an_unclosed_driver_warns_with_resource_warning() -> None:
    driver = Probe()
    driver.open()
    with pytest.warns(ResourceWarning, match="Probe was never closed"):
        del driver  # the last reference: CPython runs __del__ here


@pytest.mark.parametrize("close", [True, False])
def test_closed_or_never_opened_drivers_do_not_warn(close: bool) -> None:
    gc.collect()  # garbage other tests left (an unclosed socket) warns when collected: not here
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        driver = Probe()
        if close:
            driver.open()
            driver.close()
        del driver
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning) and "Probe" in str(w.message)]


def test_a_driver_whose_init_failed_does_not_warn() -> None:
    class Broken(Probe):
        def __init__(self) -> None:
            raise RuntimeError("before the base init")

    gc.collect()  # other tests' garbage is not this test's to judge
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError):
            Broken()
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning) and "Broken" in str(w.message)]


# -- the conformance kit: it passes good drivers ... ---------------------------------------------


def write_one(driver: Driver) -> None:
    driver.call("write", {"tag": "t", "data": {"n": 1}})


@pytest.mark.parametrize("pollable", [True, False])
def test_check_driver_passes_the_loopback_driver(pollable: bool) -> None:
    check_driver(
        lambda: LoopbackDriver(LoopbackConfig(pollable=pollable)),
        feed=write_one,
        probe=("write", {"tag": "t"}),
        break_device=lambda driver: driver.call("break_stream"),
        wait=2.0,
    )


@dataclass(frozen=True, slots=True)
class FeedArgs:
    data: bytes


class CondBytes(Driver):
    """A well-behaved byte stream: a condition variable, woken by close."""

    Config = ProbeConfig
    stream = "bytes"
    stream_op = "read"

    def __init__(self, config: ProbeConfig) -> None:
        super().__init__(config)
        self.buf = bytearray()
        self.cond = threading.Condition()

    def _open(self) -> None:
        pass

    def _close(self) -> None:
        with self.cond:
            self.cond.notify_all()

    @operation(args=FeedArgs)
    def inject(self, args: FeedArgs) -> int:
        """Put bytes on the stream."""
        with self.cond:
            self.buf += args.data
            self.cond.notify_all()
        return len(args.data)

    def _read_internal(self, timeout: float | None) -> bytes:
        with self.cond:
            if not self.buf and timeout != 0 and not self.closed:
                self.cond.wait(timeout)
            out, self.buf = bytes(self.buf), bytearray()
        return out


def test_check_driver_passes_a_byte_stream_driver() -> None:
    check_driver(
        lambda: CondBytes(ProbeConfig()),
        feed=lambda d: d.call("inject", {"data": b"hello"}),
        probe=("inject", {"data": b"x"}),
        wait=2.0,
    )


def test_check_driver_passes_a_driver_without_stream() -> None:
    check_driver(Probe, probe=("echo", {"text": "hi"}))


# -- ... and fails broken ones, naming the check -------------------------------------------------


def kit_failure(make: Callable[[], Driver], **kw: Any) -> str:
    with pytest.raises(AssertionError) as info:
        check_driver(make, **kw)
    return str(info.value)


@dataclass(slots=True)
class MutableConfig:
    label: str = "x"


class MutableConfigDriver(Bare):
    Config = MutableConfig  # type: ignore[assignment]


def test_kit_fails_a_non_frozen_config() -> None:
    assert (
        kit_failure(lambda: MutableConfigDriver(MutableConfig()))
        == "declarations: MutableConfigDriver.Config must be a frozen dataclass"
    )


class NoDocDriver(Bare):
    @operation()
    def poke(self, args: NoArgs) -> None:
        return None


def test_kit_fails_an_operation_without_docstring() -> None:
    assert (
        kit_failure(lambda: NoDocDriver(ProbeConfig()))
        == "declarations: operation 'poke' needs a docstring (it is shown to operators)"
    )


class NotAGrant:
    pass


class BadGrantDriver(Bare):
    Grant = NotAGrant  # type: ignore[assignment]


def test_kit_fails_a_grant_that_is_not_a_device_grant() -> None:
    assert (
        kit_failure(lambda: BadGrantDriver(ProbeConfig()))
        == "declarations: BadGrantDriver.Grant must subclass DeviceGrant"
    )


class StreamWithoutOp(Bare):
    stream = "items"


def test_kit_fails_a_stream_without_stream_op() -> None:
    assert kit_failure(lambda: StreamWithoutOp(ProbeConfig())).startswith(
        "declarations: stream and stream_op"
    )


class CollidingStreamOp(Stream):
    stream_op = "recv"

    @operation()
    def recv(self, args: NoArgs) -> None:
        """Shadows the stream op."""


def test_kit_fails_a_stream_op_that_collides_with_an_operation() -> None:
    assert (
        kit_failure(CollidingStreamOp, feed=lambda d: None)
        == "declarations: stream_op 'recv' collides with an operation of the same name"
    )


class UndataclassedArgs(Bare):
    @operation(args=dict)
    def poke(self, args: Any) -> None:
        """Takes a dict, which is no dataclass."""


def test_kit_fails_operation_args_that_are_no_dataclass() -> None:
    assert (
        kit_failure(lambda: UndataclassedArgs(ProbeConfig()))
        == "declarations: operation 'poke': args must be a dataclass"
    )


def test_kit_needs_feed_for_a_stream_driver() -> None:
    message = kit_failure(Stream)
    assert message == "check_driver: Stream has a stream; pass feed= to exercise it"


class LyingOpen(Bare):
    def open(self) -> None:
        pass  # never calls the template: is_open stays False


def test_kit_fails_a_driver_that_does_not_open() -> None:
    assert kit_failure(lambda: LyingOpen(ProbeConfig())) == "lifecycle: is_open is False after open()"


class UnpackableResult(Bare):
    @operation()
    def poke(self, args: NoArgs) -> object:
        """Returns something msgpack cannot carry."""
        return object()


def test_kit_fails_a_result_that_cannot_cross_ipc() -> None:
    message = kit_failure(lambda: UnpackableResult(ProbeConfig()), probe=("poke", {}))
    assert message.startswith("lifecycle: result of poke must be msgpack-able")


class CallableWhenClosed(Probe):
    def _require_open(self) -> None:
        pass  # runs operations whatever the state


def test_kit_fails_a_driver_that_runs_calls_when_not_open() -> None:
    message = kit_failure(CallableWhenClosed, probe=("echo", {"text": "x"}))
    assert message == "lifecycle: call before open did not raise DeviceClosed"


class Silent(Bare):
    def __del__(self) -> None:
        pass  # no ResourceWarning


def test_kit_fails_a_driver_that_does_not_warn_when_dropped_open() -> None:
    assert (
        kit_failure(lambda: Silent(ProbeConfig()))
        == "unclosed warning: an open driver that is dropped must warn with ResourceWarning"
    )


class Chatty(Stream):
    def _read_internal(self, timeout: float | None) -> list[dict[str, Any]]:
        return [{"ghost": True}]  # data when nothing was sent


def test_kit_fails_a_read_that_invents_data() -> None:
    message = kit_failure(Chatty, feed=lambda d: None)
    assert message == "read timeout: read with nothing sent returned [{'ghost': True}]"


class NotDicts(Stream):
    def _read_internal(self, timeout: float | None) -> list[Any]:
        out = [item["n"] for item in self.queue]
        self.queue.clear()
        return out


def test_kit_fails_an_items_stream_of_non_dicts() -> None:
    def feed(driver: Driver) -> None:
        driver.queue.append({"n": 1})  # type: ignore[attr-defined]

    message = kit_failure(NotDicts, feed=feed, wait=0.5)
    assert message == "read data: an items stream must read a list of dicts, got [1]"


def test_kit_fails_a_feed_that_brings_nothing() -> None:
    message = kit_failure(Stream, feed=lambda d: None, wait=0.2)
    assert message == "read data: no data within 0.2 s of feed()"


def test_kit_fails_a_read_that_ignores_close_and_blocks() -> None:
    release = threading.Event()

    class Stubborn(Stream):
        def _read_internal(self, timeout: float | None) -> list[dict[str, Any]]:
            if not self.queue:
                release.wait(timeout)  # ignores close(): only the timeout ends it
            out = list(self.queue)
            self.queue.clear()
            return out

    def feed(driver: Driver) -> None:
        driver.queue.append({"n": 1})  # type: ignore[attr-defined]

    try:
        message = kit_failure(Stubborn, feed=feed, wait=0.3)
    finally:
        release.set()  # let the kit's reader thread go
    assert message == "stream shutdown: a blocked read did not return within 0.3 s of close()"


class Indestructible(Probe):
    """A device that break_device cannot break: the probe keeps succeeding."""


def test_kit_fails_a_driver_that_hides_a_broken_device() -> None:
    message = kit_failure(
        Indestructible, probe=("echo", {"text": "x"}), break_device=lambda d: None, wait=0.1
    )
    assert message == "broken device: nothing failed within 0.1 s of break_device()"


class LeakyErrors(Probe):
    def call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        if self.close_error is not None:
            raise self.close_error
        return super().call(op, args)


def test_kit_fails_a_driver_raising_a_non_device_error_when_broken() -> None:
    def break_it(driver: Driver) -> None:
        driver.close_error = KeyError("raw")  # type: ignore[attr-defined]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # close() then fails too, and only warns
        message = kit_failure(LeakyErrors, probe=("echo", {"text": "x"}), break_device=break_it, wait=0.5)
    assert (
        message == "broken device: a failing device raised KeyError('raw'); drivers raise only device errors"
    )


class NonIdempotentClose(Probe):
    """Overrides the close template with one that fails the second time."""

    def close(self) -> None:
        if self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        super().close()


def test_kit_fails_a_close_that_is_not_idempotent_with_a_named_assertion() -> None:
    message = kit_failure(NonIdempotentClose)
    assert message.startswith("close twice:")


class FailingClose(Probe):
    def _close(self) -> None:
        raise OSError(errno.EBADF, "Bad file descriptor")


def test_kit_fails_a_driver_whose_close_fails() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        kit_failure(FailingClose)


def test_operations_that_ask_for_the_caller_receive_it() -> None:
    from dataclasses import dataclass as _dc

    from clove.drivers import Caller, Driver, operation

    @_dc(frozen=True)
    class Cfg:
        pass

    class WhoAsks(Driver):
        Config = Cfg

        def _open(self) -> None:
            pass

        def _close(self) -> None:
            pass

        @operation(caller=True)
        def whoami(self, args: NoArgs, caller: Caller | None) -> object:
            """Echo the caller."""
            return None if caller is None else caller.agent

        @operation()
        def plain(self, args: NoArgs) -> str:
            """No caller."""
            return "ok"

    d = WhoAsks(Cfg())
    d.open()
    try:
        assert d.operations()["whoami"].wants_caller and not d.operations()["plain"].wants_caller
        who = Caller.from_wire({"agent": "nav", "agent_id": 3, "operator": False, "grant": {"ops": ["whoami"]}})
        assert d.call("whoami", {}, who) == "nav"
        assert d.call("whoami", {}) is None
        assert d.call("plain", {}, who) == "ok"
        assert Caller.from_wire(None) is None
    finally:
        d.close()
