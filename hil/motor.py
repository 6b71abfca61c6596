"""The rover's simulated motor controller on a CAN bus (any :class:`can.BusABC`: the ``simbus``
interface, python-can's ``virtual`` one, real hardware).

Protocol (``hil/rover.dbc``; the frames, their encoding and decoding are :mod:`hil.motor_frames`,
whose names are importable from here too): ``0x101 MotorCommand`` in, ``0x181 Odometry`` out
every ``period``, ``0x1F0 MotorFault`` out.

Behaviour: a command outside ±``speed_limit`` raises fault 1 and stops the motors until a valid
command arrives; ``command_timeout`` without any command frame (the watchdog arms at the first
command) stops them and raises fault 2 once per episode; the actual speeds follow the target
within an acceleration limit. Each tick also drives the shared :class:`~hil.world.World`.

History timestamps (``t``) are ``time.time()`` seconds, the clock python-can stamps frames with
and the HIL harness stamps faults with, so they compare across processes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, final

import can

from hil.motor_frames import (
    DBC_PATH,
    FAULT_OUT_OF_RANGE,
    FAULT_TIMEOUT,
    ID_COMMAND,
    ID_FAULT,
    ID_ODOMETRY,
    Fault,
    Odometry,
    decode_command,
    decode_fault,
    decode_odometry,
    encode_command,
    encode_fault,
    encode_odometry,
    load_dbc,
)
from hil.world import World

__all__ = [
    "ACCELERATION",
    "COMMAND_TIMEOUT",
    "DBC_PATH",
    "FAULT_OUT_OF_RANGE",
    "FAULT_TIMEOUT",
    "ID_COMMAND",
    "ID_FAULT",
    "ID_ODOMETRY",
    "SPEED_LIMIT",
    "Command",
    "Fault",
    "Frame",
    "MotorController",
    "Odometry",
    "decode_command",
    "decode_fault",
    "decode_odometry",
    "encode_command",
    "encode_fault",
    "encode_odometry",
    "load_dbc",
]

log = logging.getLogger(__name__)

#: mm/s either way.
SPEED_LIMIT: Final = 1500
#: Seconds without a command frame before the controller stops the motors.
COMMAND_TIMEOUT: Final = 0.5
#: mm/s².
ACCELERATION: Final = 3000.0
#: Records each history keeps (50 Hz odometry: about 2.8 hours).
HISTORY: Final = 500_000


@dataclass(frozen=True, slots=True)
class Command:
    """A ``MotorCommand`` frame the controller received."""

    t: float  #: time.time() on receipt
    left: int  #: mm/s as sent
    right: int
    valid: bool  #: within the speed limit


@dataclass(frozen=True, slots=True)
class Frame:
    """Any frame the controller received (``t`` is time.time() on receipt)."""

    t: float
    message: can.Message


@final
class MotorController:
    """The simulated controller on ``bus``; :meth:`start` runs it in a thread until :meth:`stop`.

    The controller never closes ``bus`` (its owner does). Send and receive errors (a bus-off
    bus) are counted in :attr:`send_errors` / :attr:`recv_errors` and logged, not fatal; any other
    exception in the thread ends it and is kept in :attr:`error`.
    """

    def __init__(
        self,
        bus: can.BusABC,
        world: World | None = None,
        period: float = 0.02,
        *,
        speed_limit: int = SPEED_LIMIT,
        command_timeout: float = COMMAND_TIMEOUT,
        acceleration: float = ACCELERATION,
        history: int = HISTORY,
    ) -> None:
        if period <= 0 or command_timeout <= 0 or acceleration <= 0:
            raise ValueError("period, command_timeout and acceleration must be positive")
        self.bus = bus
        self.world = world
        self.period = period
        self.speed_limit = speed_limit
        self.command_timeout = command_timeout
        self.acceleration = acceleration
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # State (the thread writes it under _cond; readers take _cond).
        self._target = (0.0, 0.0)
        self._actual = (0.0, 0.0)
        self._distance = 0.0  # mm
        self._last_command: float | None = None  # monotonic; None: watchdog not armed
        self._timed_out = False
        # Histories.
        self._commands: deque[Command] = deque(maxlen=history)
        self._frames: deque[Frame] = deque(maxlen=history)
        self._odometry: deque[Odometry] = deque(maxlen=history)
        self._faults: deque[Fault] = deque(maxlen=history)
        self.ticks = 0
        self.send_errors = 0
        self.recv_errors = 0
        self.error: BaseException | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> MotorController:
        """Start the thread (a no-op while it runs; after :meth:`stop`, starts it again)."""
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return self
            self._stop.clear()
            self.error = None
            self._thread = threading.Thread(target=self._run, name="hil-motor-controller", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop and join the thread (idempotent). :raises TimeoutError: it did not end in time."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError("the motor controller thread did not stop")
        with self._cond:
            self._cond.notify_all()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> MotorController:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- state ----------------------------------------------------------------------------------

    @property
    def speeds(self) -> tuple[int, int]:
        """The actual wheel speeds, mm/s (rounded as odometry reports them)."""
        with self._cond:
            return round(self._actual[0]), round(self._actual[1])

    @property
    def target(self) -> tuple[int, int]:
        with self._cond:
            return round(self._target[0]), round(self._target[1])

    @property
    def distance(self) -> int:
        """Total travelled, mm (not wrapped)."""
        with self._cond:
            return round(self._distance)

    @property
    def stopped(self) -> bool:
        """Both the target and the actual speeds are 0."""
        with self._cond:
            return self._target == (0.0, 0.0) and self._actual == (0.0, 0.0)

    # --- history --------------------------------------------------------------------------------

    def commands_since(self, t: float) -> list[Command]:
        """Commands received at or after ``t`` (time.time())."""
        with self._cond:
            return [c for c in self._commands if c.t >= t]

    def first_command_after(
        self, t: float, predicate: Callable[[Command], bool] | None = None
    ) -> Command | None:
        """The first command received at or after ``t`` for which ``predicate`` holds (any one if
        None), or None."""
        with self._cond:
            return next((c for c in self._commands if c.t >= t and (predicate is None or predicate(c))), None)

    def frames_since(self, t: float) -> list[Frame]:
        """Every frame received at or after ``t``, commands or not."""
        with self._cond:
            return [f for f in self._frames if f.t >= t]

    def faults_since(self, t: float) -> list[Fault]:
        """Fault frames the controller sent at or after ``t``."""
        with self._cond:
            return [f for f in self._faults if f.t >= t]

    def odometry_since(self, t: float) -> list[Odometry]:
        """Odometry the controller sent at or after ``t``."""
        with self._cond:
            return [o for o in self._odometry if o.t >= t]

    def speed_history(self) -> list[tuple[float, int, int]]:
        """``(t, left, right)`` actual speeds at every tick (what the bench's ``motor_stopped``
        assertion reads)."""
        with self._cond:
            return [(o.t, o.left, o.right) for o in self._odometry]

    def first_stopped_after(self, t: float) -> float | None:
        """When (time.time()) the wheels were first at 0 mm/s at or after ``t``, or None."""
        with self._cond:
            return next((o.t for o in self._odometry if o.t >= t and o.left == 0 and o.right == 0), None)

    def wait_for(self, condition: Callable[[MotorController], bool], timeout: float) -> bool:
        """Wait (up to ``timeout`` s) until ``condition(self)`` holds; re-checked after every
        received frame and tick. Returns whether it held."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if condition(self):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.1))

    def wait_for_command(
        self,
        predicate: Callable[[Command], bool] | None = None,
        timeout: float = 5.0,
        after: float | None = None,
    ) -> Command:
        """The first command after ``after`` (default: now) matching ``predicate``.

        :raises TimeoutError: none within ``timeout``.
        """
        since = time.time() if after is None else after
        found: list[Command] = []

        def check(ctl: MotorController) -> bool:
            hit = ctl.first_command_after(since, predicate)
            if hit is not None:
                found.append(hit)
            return hit is not None

        if not self.wait_for(check, timeout):
            raise TimeoutError(f"no matching motor command within {timeout} s")
        return found[0]

    # --- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            now = time.monotonic()
            last_tick = now
            next_tick = now + self.period
            while not self._stop.is_set():
                now = time.monotonic()
                remaining = next_tick - now
                if remaining > 0:
                    try:
                        msg = self.bus.recv(timeout=min(remaining, 0.05))
                    except can.CanError as err:  # a bus in trouble: keep ticking, as a controller would
                        self.recv_errors += 1
                        if self.recv_errors == 1 or self.recv_errors % 100 == 0:
                            log.warning(
                                "motor controller: receive failed (%d so far): %s", self.recv_errors, err
                            )
                        self._stop.wait(min(remaining, 0.01))
                        msg = None
                    if msg is not None:
                        self._on_frame(msg)
                    continue
                self._tick(now, now - last_tick)
                last_tick = now
                next_tick += self.period
                if next_tick <= now:  # fell behind (a stalled machine): skip, don't burst
                    next_tick = now + self.period
        except BaseException as err:
            self.error = err
            log.exception("the motor controller stopped")
        finally:
            with self._cond:
                self._cond.notify_all()

    def _on_frame(self, msg: can.Message) -> None:
        t = time.time()
        with self._cond:
            self._frames.append(Frame(t, msg))
            self._cond.notify_all()
        if msg.arbitration_id != ID_COMMAND or msg.is_extended_id:
            return
        if msg.is_remote_frame or msg.is_error_frame:
            return
        try:
            left, right = decode_command(msg)
        except ValueError:
            log.warning("ignoring a malformed motor command: %s", msg)
            return
        bad = next((s for s in (left, right) if abs(s) > self.speed_limit), None)
        with self._cond:
            self._commands.append(Command(t, left, right, bad is None))
            self._last_command = time.monotonic()
            self._timed_out = False
            self._target = (0.0, 0.0) if bad is not None else (float(left), float(right))
            self._cond.notify_all()
        if bad is not None:
            self._send_fault(FAULT_OUT_OF_RANGE, bad)

    def _tick(self, now: float, dt: float) -> None:
        timed_out = False
        with self._cond:
            if (
                self._last_command is not None
                and not self._timed_out
                and now - self._last_command >= self.command_timeout
            ):
                self._timed_out = timed_out = True
                self._target = (0.0, 0.0)
            step = self.acceleration * dt
            left = _approach(self._actual[0], self._target[0], step)
            right = _approach(self._actual[1], self._target[1], step)
            self._actual = (left, right)
            self._distance += (abs(left) + abs(right)) / 2.0 * dt
            distance = round(self._distance)
            self.ticks += 1
        if timed_out:
            self._send_fault(FAULT_TIMEOUT, 0)
        if self.world is not None:
            self.world.set_wheel_speeds(left / 1000.0, right / 1000.0)
            self.world.step(dt)
        odo = Odometry(time.time(), round(left), round(right), distance % 2**32)
        self._send(encode_odometry(odo.left, odo.right, odo.distance))
        with self._cond:
            self._odometry.append(odo)
            self._cond.notify_all()

    def _send_fault(self, code: int, value: int) -> None:
        value = max(-(2**15), min(2**15 - 1, value))
        self._send(encode_fault(code, value))
        with self._cond:
            self._faults.append(Fault(time.time(), code, value))
            self._cond.notify_all()

    def _send(self, msg: can.Message) -> None:
        try:
            self.bus.send(msg, timeout=self.period)
        except can.CanError as err:
            self.send_errors += 1
            if self.send_errors == 1 or self.send_errors % 100 == 0:
                log.warning("motor controller: send failed (%d so far): %s", self.send_errors, err)


def _approach(value: float, target: float, step: float) -> float:
    if value < target:
        return min(target, value + step)
    return max(target, value - step)
