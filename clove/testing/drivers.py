"""The driver conformance kit: run :func:`check_driver` in a driver plugin's own tests to prove
it honours the contract of :class:`clove.drivers.Driver` (modelled on trio's
``check_one_way_stream``).

Example::

    def test_conformance(pty_pair):
        check_driver(
            lambda: SerialDriver(SerialConfig(port=pty_pair.name)),
            feed=lambda driver: os.write(pty_pair.master, b"$GPGGA\\r\\n"),
            probe=("write", {"data": b"x"}),
            break_device=lambda driver: os.close(pty_pair.master),
        )

Every check raises :class:`AssertionError` whose message starts with the check's name.
"""

from __future__ import annotations

import dataclasses
import gc
import select
import threading
import time
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import msgpack

from clove.drivers.base import Driver
from clove.drivers.grants import DeviceGrant
from clove.errors import DeviceClosed, DeviceError, InvalidArguments

__all__ = ["check_driver"]

MakeDriver = Callable[[], Driver]


def check_driver(
    make_driver: MakeDriver,
    *,
    feed: Callable[[Driver], object] | None = None,
    probe: tuple[str, dict[str, Any]] | None = None,
    break_device: Callable[[Driver], None] | None = None,
    wait: float = 3.0,
) -> None:
    """Run every conformance check against fresh drivers from ``make_driver``.

    :param make_driver: builds an unopened driver on a device that exists for the test.
    :param feed: makes data arrive on the driver's stream (required when it has one).
    :param probe: an operation and arguments that succeed on a healthy open device.
    :param break_device: makes the device fail underneath an open driver (unplug, close the
        far end); then ``probe`` or a read must raise a device error, nothing else.
    :param wait: how long a check waits for data or a thread before failing.
    """
    cls = type(make_driver())
    _check_declarations(cls)
    _check_lifecycle(make_driver, probe)
    _check_close_twice(make_driver)
    _check_bad_calls(make_driver)
    _check_context_manager(make_driver)
    _check_unclosed_warning(make_driver)
    if cls.stream is not None:
        if feed is None:
            raise AssertionError(f"check_driver: {cls.__name__} has a stream; pass feed= to exercise it")
        _check_read_timeout(make_driver)
        _check_read_data(make_driver, feed, wait)
        _check_stream_shutdown(make_driver, wait)
    if break_device is not None:
        _check_broken(make_driver, break_device, probe, wait)


def _fail(check: str, message: str) -> AssertionError:
    return AssertionError(f"{check}: {message}")


def _check_declarations(cls: type[Driver]) -> None:
    check = "declarations"
    config = getattr(cls, "Config", None)
    if not (dataclasses.is_dataclass(config) and config.__dataclass_params__.frozen):  # type: ignore[union-attr]
        raise _fail(check, f"{cls.__name__}.Config must be a frozen dataclass")
    if not (isinstance(cls.Grant, type) and issubclass(cls.Grant, DeviceGrant)):
        raise _fail(check, f"{cls.__name__}.Grant must subclass DeviceGrant")
    if not cls.Grant.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise _fail(check, f"{cls.__name__}.Grant must be a frozen dataclass")
    if cls.stream not in (None, "items", "bytes"):
        raise _fail(check, f"stream must be None, 'items' or 'bytes', got {cls.stream!r}")
    if (cls.stream is None) != (cls.stream_op is None):
        raise _fail(check, "stream and stream_op are set together or not at all")
    ops = cls.operations()
    if cls.stream_op in ops:
        raise _fail(check, f"stream_op {cls.stream_op!r} collides with an operation of the same name")
    for name, spec in ops.items():
        if not dataclasses.is_dataclass(spec.args):
            raise _fail(check, f"operation {name!r}: args must be a dataclass")
        if not spec.doc:
            raise _fail(check, f"operation {name!r} needs a docstring (it is shown to operators)")


def _check_lifecycle(make_driver: MakeDriver, probe: tuple[str, dict[str, Any]] | None) -> None:
    check = "lifecycle"
    driver = make_driver()
    if driver.is_open or driver.closed:
        raise _fail(check, "a new driver must be neither open nor closed")
    if probe is not None:
        _expect(check, DeviceClosed, lambda: driver.call(*probe), "call before open")
    driver.open()
    try:
        if not driver.is_open:
            raise _fail(check, "is_open is False after open()")
        driver.open()  # a second open does nothing
        if probe is not None:
            result = driver.call(*probe)
            _packable(check, result, f"result of {probe[0]}")
        _packable(check, driver.status(), "status()")
        fd = driver.fileno()
        if not isinstance(fd, int):
            raise _fail(check, f"fileno() must return an int, got {fd!r}")
    finally:
        driver.close()
    if not driver.closed:
        raise _fail(check, "closed is False after close()")
    if probe is not None:
        _expect(check, DeviceClosed, lambda: driver.call(*probe), "call after close")
    if driver.stream is not None:
        _expect(check, DeviceClosed, lambda: driver.read(0), "read after close")
    _expect(check, DeviceClosed, driver.open, "open after close")


def _check_close_twice(make_driver: MakeDriver) -> None:
    check = "close twice"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            driver = make_driver()
            driver.close()  # never opened
            driver = make_driver()
            driver.open()
            driver.close()
            driver.close()
        except Exception as err:
            raise _fail(check, f"close() raised {err!r}; it must be safe to call twice") from err
    failed = [w for w in caught if issubclass(w.category, RuntimeWarning) and "close failed" in str(w.message)]
    if failed:
        raise _fail(check, f"releasing the device failed: {failed[0].message}")


def _check_bad_calls(make_driver: MakeDriver) -> None:
    check = "bad calls"
    with make_driver() as driver:
        _expect(check, InvalidArguments, lambda: driver.call("no-such-operation", {}), "an unknown operation")
        for name in driver.operations():
            _expect(check, InvalidArguments, partial(driver.call, name, {"no_such_argument": 1}), f"{name} with an unknown argument")


def _check_context_manager(make_driver: MakeDriver) -> None:
    check = "context manager"
    with make_driver() as driver:
        if not driver.is_open:
            raise _fail(check, "not open inside 'with'")
    if not driver.closed:
        raise _fail(check, "not closed after 'with'")


def _check_unclosed_warning(make_driver: MakeDriver) -> None:
    check = "unclosed warning"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        driver = make_driver()
        driver.open()
        keep = driver.close  # close it after the check, so the device is released
        driver.__del__()
        keep()
        del driver
        gc.collect()
    if not any(issubclass(w.category, ResourceWarning) for w in caught):
        raise _fail(check, "an open driver that is dropped must warn with ResourceWarning")


def _check_read_timeout(make_driver: MakeDriver) -> None:
    check = "read timeout"
    with make_driver() as driver:
        started = time.monotonic()
        data = driver.read(0.05)
        took = time.monotonic() - started
        if len(data) != 0:
            raise _fail(check, f"read with nothing sent returned {data!r}")
        if took > 1.0:
            raise _fail(check, f"read(0.05) took {took:.2f} s")
        data = driver.read(0)
        if len(data) != 0:
            raise _fail(check, f"read(0) with nothing sent returned {data!r}")


def _check_read_data(make_driver: MakeDriver, feed: Callable[[Driver], object], wait: float) -> None:
    check = "read data"
    with make_driver() as driver:
        feed(driver)
        fd = driver.fileno()
        if fd >= 0:
            readable, _, _ = select.select([fd], [], [], wait)
            if not readable:
                raise _fail(check, f"fileno() {fd} did not become readable within {wait} s of data arriving")
        deadline = time.monotonic() + wait
        got: Any = None
        while time.monotonic() < deadline:
            got = driver.read(0.1)
            if len(got):
                break
        if not got:
            raise _fail(check, f"no data within {wait} s of feed()")
        if driver.stream == "bytes" and not isinstance(got, bytes):
            raise _fail(check, f"a bytes stream must read bytes, got {type(got).__name__}")
        if driver.stream == "items" and (not isinstance(got, list) or not all(isinstance(item, dict) for item in got)):
            raise _fail(check, f"an items stream must read a list of dicts, got {got!r}")
        _packable(check, got, "read data")


def _check_stream_shutdown(make_driver: MakeDriver, wait: float) -> None:
    check = "stream shutdown"
    driver = make_driver()
    driver.open()
    outcome: list[BaseException | Any] = []

    def reader() -> None:
        try:
            outcome.append(driver.read(30.0))
        except BaseException as err:  # noqa: BLE001 - recorded and judged below
            outcome.append(err)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    time.sleep(0.05)  # let the read block: the point is closing under it
    driver.close()
    thread.join(wait)
    if thread.is_alive():
        raise _fail(check, f"a blocked read did not return within {wait} s of close()")
    result = outcome[0]
    if isinstance(result, BaseException) and not isinstance(result, DeviceClosed):
        raise _fail(check, f"a read interrupted by close() raised {result!r}; expected DeviceClosed or no data")
    if not isinstance(result, BaseException) and len(result):
        raise _fail(check, f"a read interrupted by close() returned data {result!r}")


def _check_broken(
    make_driver: MakeDriver, break_device: Callable[[Driver], None], probe: tuple[str, dict[str, Any]] | None, wait: float
) -> None:
    check = "broken device"
    driver = make_driver()
    driver.open()
    try:
        break_device(driver)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                if probe is not None:
                    driver.call(*probe)
                if driver.stream is not None:
                    driver.read(0.05)
            except DeviceError:
                return
            except Exception as err:
                raise _fail(check, f"a failing device raised {err!r}; drivers raise only device errors") from err
            if probe is None and driver.stream is None:
                break
        raise _fail(check, f"nothing failed within {wait} s of break_device()")
    finally:
        driver.close()


def _expect(check: str, kind: type[BaseException], action: Callable[[], object], what: str) -> None:
    try:
        action()
    except kind:
        return
    except Exception as err:
        raise _fail(check, f"{what} raised {err!r}; expected {kind.__name__}") from err
    raise _fail(check, f"{what} did not raise {kind.__name__}")


def _packable(check: str, value: Any, what: str) -> None:
    try:
        msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as err:
        raise _fail(check, f"{what} must be msgpack-able (it crosses IPC): {err}") from None
