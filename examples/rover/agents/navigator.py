"""The rover's navigator: drives a square route of GPS waypoints, for ever.

Ordinary robotics code. The motors are reached with python-can and the GPS with pyserial,
exactly as on a bench without Clove; only the channel names say where they are:

* ``can.Bus(interface="clove", channel="motor_bus")``: sends 0x101 MotorCommand at 20 Hz and
  reads 0x181 Odometry (and 0x1F0 MotorFault) frames;
* ``serial.serial_for_url("clove://gps")``: NMEA sentences at 5 Hz ($GPGGA and $GPRMC).

Localisation is a small complementary filter: odometry (wheel speeds and the odometer) moves
the pose estimate between fixes, each GPS fix pulls the position toward the measured one, and
the GPS course over ground (or the track between fixes) corrects the heading. Until the heading
is known the rover creeps straight ahead. Steering is proportional: turn rate proportional to
the heading error, forward speed shrinking with the error and near the waypoint.

When the estop interlock is engaged the kernel refuses every send (``can.CanOperationError``
naming the interlock). The navigator says so once per episode and keeps commanding at the same
rate, as a real one would; stopping the rover is the kernel's job, not the navigator's.

Progress goes to ``rover/navigator`` in global state once a second, through a client of its own.

Configuration (arguments, or environment variables for a deployment's ``env``)::

    navigator.py [--side M] [--waypoints "x,y;x,y;..."] [--speed MM_S] [--track M]
                 [--bus NAME] [--gps NAME]
    ROVER_SIDE_M=10  ROVER_WAYPOINTS=...  ROVER_SPEED=600  ROVER_TRACK_M=0.5
    ROVER_BUS=motor_bus  ROVER_GPS=gps
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import can
import serial
from rover_can import (
    MAX_SPEED_MM_S,
    MOTOR_COMMAND_ID,
    MOTOR_FAULT_ID,
    ODOMETRY_ID,
    clamp_speed,
    decode_fault,
    decode_odometry,
    encode_motor_command,
    odometer_delta,
)

import clove_sdk.pyserial  # noqa: F401 - registers clove:// URLs with pyserial
from clove_sdk.errors import PermissionDenied

EARTH_RADIUS = 6_371_000.0  #: metres (the flat-plane projection around the first fix)
CONTROL_HZ = 20  #: MotorCommand rate
ARRIVE_RADIUS = 0.8  #: metres: a waypoint this close counts as reached
PROBE_SPEED = 400  #: mm/s straight ahead while the heading is still unknown
HEADING_GAIN = 1.5  #: rad/s of turn per rad of heading error
MAX_TURN_RATE = 1.2  #: rad/s
DISTANCE_GAIN = 0.5  #: (m/s) per metre to go: slows down on the final approach
STATUS_EVERY = 5.0  #: seconds between progress lines


def log(message: str) -> None:
    """One progress line (written in one piece: the threads share stdout)."""
    sys.stdout.write(f"{time.strftime('%H:%M:%S')} navigator: {message}\n")
    sys.stdout.flush()


# ---- NMEA ---------------------------------------------------------------------------------------


def nmea_checksum(body: str) -> int:
    """XOR of every character between ``$`` and ``*``."""
    value = 0
    for char in body:
        value ^= ord(char)
    return value


def _degrees(value: str, hemisphere: str) -> float | None:
    """NMEA ``ddmm.mmmm`` / ``dddmm.mmmm`` with its hemisphere letter → signed degrees."""
    if not value or hemisphere not in ("N", "S", "E", "W"):
        return None
    raw = float(value)
    degrees = int(raw // 100)
    result = degrees + (raw - degrees * 100) / 60.0
    return -result if hemisphere in ("S", "W") else result


def parse_nmea(line: str | bytes) -> dict[str, Any] | None:
    """One GGA or RMC sentence → a dict, or None for anything else: garbage, a bad checksum,
    other sentence types, malformed fields.

    GGA: ``{type, lat, lon, fix, quality, sats, hdop, alt}``;
    RMC: ``{type, lat, lon, fix, speed_mps, course_deg}``. ``lat``/``lon`` are None without a fix.
    Garbage before the ``$`` on the same line is skipped (a noisy line after a reconnect).
    """
    if isinstance(line, bytes):
        line = line.decode("ascii", errors="replace")
    start = line.rfind("$")
    if start < 0:
        return None
    sentence = line[start:].strip()
    star = sentence.find("*")
    if star < 0 or len(sentence) < star + 3:
        return None
    body = sentence[1:star]
    try:
        if int(sentence[star + 1 : star + 3], 16) != nmea_checksum(body):
            return None
    except ValueError:
        return None
    fields = body.split(",")
    kind = fields[0][-3:] if len(fields[0]) == 5 else ""  # "GPGGA", "GNRMC", ...
    try:
        if kind == "GGA" and len(fields) >= 10:
            quality = int(fields[6] or 0)
            return {
                "type": "GGA",
                "lat": _degrees(fields[2], fields[3]),
                "lon": _degrees(fields[4], fields[5]),
                "fix": quality > 0,
                "quality": quality,
                "sats": int(fields[7] or 0),
                "hdop": float(fields[8]) if fields[8] else None,
                "alt": float(fields[9]) if fields[9] else None,
            }
        if kind == "RMC" and len(fields) >= 9:
            return {
                "type": "RMC",
                "lat": _degrees(fields[3], fields[4]),
                "lon": _degrees(fields[5], fields[6]),
                "fix": fields[2] == "A",
                "speed_mps": float(fields[7]) * 0.514444 if fields[7] else None,  # knots
                "course_deg": float(fields[8]) if fields[8] else None,
            }
    except ValueError:
        return None
    return None


# ---- geometry -----------------------------------------------------------------------------------


def latlon_to_local(lat: float, lon: float, origin_lat: float, origin_lon: float) -> tuple[float, float]:
    """Metres east and north of the origin (an equirectangular projection: good to centimetres
    over the few hundred metres a rover covers)."""
    north = math.radians(lat - origin_lat) * EARTH_RADIUS
    dlon = (lon - origin_lon + 180.0) % 360.0 - 180.0
    east = math.radians(dlon) * EARTH_RADIUS * math.cos(math.radians(origin_lat))
    return east, north


def wrap_angle(angle: float) -> float:
    """``angle`` in [-pi, pi]."""
    return math.remainder(angle, math.tau)


def course_to_heading(course_deg: float) -> float:
    """A compass course (degrees clockwise from north) → radians counter-clockwise from east."""
    return wrap_angle(math.radians(90.0 - course_deg))


def square_route(side: float) -> list[tuple[float, float]]:
    """Four waypoints of a ``side`` × ``side`` metre square starting from the first fix."""
    return [(side, 0.0), (side, side), (0.0, side), (0.0, 0.0)]


def parse_waypoints(text: str) -> list[tuple[float, float]]:
    """``"10,0; 10,10; 0,10; 0,0"`` → ``[(10.0, 0.0), ...]``. :raises ValueError: malformed."""
    points = []
    for part in text.split(";"):
        if part.strip():
            x, y = part.split(",")
            points.append((float(x), float(y)))
    if not points:
        raise ValueError("no waypoints")
    return points


def steer(
    x: float,
    y: float,
    heading: float,
    target: tuple[float, float],
    *,
    cruise: float = 600,
    track: float = 0.5,
    max_speed: int = MAX_SPEED_MM_S,
) -> tuple[int, int]:
    """Wheel speeds (mm/s) that take a rover at ``(x, y)`` facing ``heading`` toward ``target``.

    Proportional control: the turn rate is proportional to the heading error (capped), the
    forward speed is ``cruise`` (mm/s) scaled by cos(error) (zero when facing away: it turns on
    the spot first) and slowed on the final approach. If a wheel would exceed ``max_speed``
    both are scaled down together, so the curvature is kept.
    """
    dx, dy = target[0] - x, target[1] - y
    distance = math.hypot(dx, dy)
    error = wrap_angle(math.atan2(dy, dx) - heading)
    turn = max(-MAX_TURN_RATE, min(MAX_TURN_RATE, HEADING_GAIN * error))  # rad/s
    forward = min(cruise / 1000.0, DISTANCE_GAIN * distance) * max(0.0, math.cos(error))  # m/s
    left = (forward - turn * track / 2.0) * 1000.0
    right = (forward + turn * track / 2.0) * 1000.0
    biggest = max(abs(left), abs(right))
    if biggest > max_speed:
        left, right = left * max_speed / biggest, right * max_speed / biggest
    return clamp_speed(left, max_speed), clamp_speed(right, max_speed)


class PoseEstimator:
    """Position (metres east/north of the first fix) and heading from odometry and GPS."""

    POSITION_GAIN = 0.3  #: share of the GPS innovation taken per fix
    COURSE_GAIN = 0.3  #: share of the course-over-ground heading error taken per fix
    MIN_COURSE_SPEED = 0.2  #: m/s: below this the GPS course is noise
    TRACK_BASELINE = 1.0  #: metres of straight driving between fixes to read a heading off

    def __init__(self, track: float = 0.5) -> None:
        self.track = track
        self.x = self.y = self.heading = 0.0
        self.have_position = False
        self.heading_known = False
        self.speed = 0.0  #: m/s, from odometry
        self._odometer: int | None = None
        self._odo_ts: float | None = None
        self._anchor: tuple[float, float, float] | None = None  # gps x, y and heading estimate there

    def update_odometry(self, left: int, right: int, distance: int, ts: float) -> None:
        """One 0x181 frame: advance along the heading by the odometer's increment and turn by
        the wheel-speed difference over the time since the last frame."""
        dt = 0.02 if self._odo_ts is None else ts - self._odo_ts
        if not 0.0 <= dt <= 0.1:  # a gap (dropped frames, paused agent) or a clock jump
            dt = 0.02
        moved = 0.0 if self._odometer is None else odometer_delta(self._odometer, distance) / 1000.0
        if moved > 1.0:  # a controller reset, not a metre in 20 ms
            moved = 0.0
        self._odometer, self._odo_ts = distance, ts
        self.speed = (left + right) / 2000.0
        if self.speed < 0:
            moved = -moved  # the odometer counts distance, not direction
        if not self.have_position:
            return
        turn = (right - left) / 1000.0 / self.track * dt
        mid = self.heading + turn / 2.0
        self.x += moved * math.cos(mid)
        self.y += moved * math.sin(mid)
        self.heading = wrap_angle(self.heading + turn)

    def update_gps(
        self, x: float, y: float, course_deg: float | None = None, speed_mps: float | None = None
    ) -> None:
        """One fix: pull the position toward it, and correct the heading from the course over
        ground (when moving forward) or from the track since the last anchor fix."""
        if not self.have_position:
            self.x, self.y, self.have_position = x, y, True
            self._anchor = (x, y, self.heading)
            return
        self.x += self.POSITION_GAIN * (x - self.x)
        self.y += self.POSITION_GAIN * (y - self.y)
        moving_forward = speed_mps is not None and speed_mps >= self.MIN_COURSE_SPEED and self.speed >= 0
        if course_deg is not None and moving_forward:
            self._correct_heading(course_to_heading(course_deg), self.COURSE_GAIN)
        assert self._anchor is not None
        ax, ay, aheading = self._anchor
        if math.hypot(x - ax, y - ay) >= self.TRACK_BASELINE:
            if abs(wrap_angle(self.heading - aheading)) < 0.2 and self.speed >= 0:  # drove straight
                self._correct_heading(math.atan2(y - ay, x - ax), 0.5)
            self._anchor = (x, y, self.heading)

    def _correct_heading(self, measured: float, gain: float) -> None:
        if not self.heading_known:
            self.heading, self.heading_known = measured, True
            self._anchor = (self.x, self.y, measured)
        else:
            self.heading = wrap_angle(self.heading + gain * wrap_angle(measured - self.heading))


class Route:
    """The waypoints, driven in order and then again from the first (for ever)."""

    def __init__(
        self, waypoints: Sequence[tuple[float, float]], *, cruise: float = 600, track: float = 0.5
    ) -> None:
        self.waypoints = list(waypoints)
        self.cruise, self.track = cruise, track
        self.index = 0  #: the waypoint being driven to
        self.laps = 0  #: completed rounds

    @property
    def target(self) -> tuple[float, float]:
        return self.waypoints[self.index]

    def command(self, pose: PoseEstimator) -> tuple[tuple[int, int], str]:
        """Wheel speeds (mm/s) for this pose and what the rover is doing: stand still without a
        fix, creep straight ahead until the heading is known, else steer to the current waypoint
        (moving on to the next once within :data:`ARRIVE_RADIUS`)."""
        if not pose.have_position:
            return (0, 0), "waiting for fix"
        if not pose.heading_known:
            return (PROBE_SPEED, PROBE_SPEED), "finding heading"
        if math.hypot(self.target[0] - pose.x, self.target[1] - pose.y) < ARRIVE_RADIUS:
            self.index += 1
            if self.index == len(self.waypoints):
                self.index, self.laps = 0, self.laps + 1
        wheels = steer(pose.x, pose.y, pose.heading, self.target, cruise=self.cruise, track=self.track)
        return wheels, "driving"


# ---- the GPS reader (its own thread and its own port) --------------------------------------------


class GpsReader(threading.Thread):
    """Reads NMEA lines from ``clove://NAME`` and queues parsed fixes for the control loop."""

    MAX_LINE = 256  #: bytes: a longer "line" is garbage

    def __init__(self, device: str, stop: threading.Event) -> None:
        super().__init__(name="gps", daemon=True)
        self.device, self.stop = device, stop
        self.fixes: deque[dict[str, Any]] = deque(maxlen=50)
        self.good = self.bad = 0  # sentences parsed / lines skipped
        self.last_fix: dict[str, Any] | None = None

    def run(self) -> None:
        port = None
        failing = False
        partial = b""
        while not self.stop.is_set():
            try:
                if port is None:
                    port = serial.serial_for_url(f"clove://{self.device}", timeout=0.2)
                    log(f"gps: reading clove://{self.device}")
                chunk = port.readline()
                if failing:
                    log("gps: reading again")
                    failing = False
            except serial.SerialException as err:
                if not failing:
                    log(f"gps: {err} (retrying)")
                    failing = True
                self.stop.wait(1.0)
                continue
            if not chunk.endswith(b"\n"):  # the timeout cut a line: keep it for the next read
                partial = (partial + chunk)[-self.MAX_LINE :]
                continue
            line, partial = partial + chunk, b""
            fix = parse_nmea(line[-self.MAX_LINE :])
            if fix is None:
                self.bad += 1
                continue
            self.good += 1
            self.fixes.append(fix)
        if port is not None:
            with contextlib.suppress(serial.SerialException):
                port.close()


# ---- state (its own thread and its own client) ---------------------------------------------------


class StateWriter(threading.Thread):
    """Stores the navigator's latest snapshot under ``rover/navigator`` once a second."""

    def __init__(self, snapshot: dict[str, Any], lock: threading.Lock, stop: threading.Event) -> None:
        super().__init__(name="state", daemon=True)
        self.snapshot, self.lock, self.stop = snapshot, lock, stop

    def run(self) -> None:
        from clove_sdk import CloveClient
        from clove_sdk.errors import CloveError

        failing = False
        with CloveClient(timeout=5.0) as client:
            while not self.stop.wait(1.0):
                with self.lock:
                    value = dict(self.snapshot, ts=time.time())
                try:
                    reply = client.store("rover/navigator", value, scope="global")
                    problem = None if reply.get("success") else f"{reply.get('code')}: {reply.get('error')}"
                except CloveError as err:
                    problem = f"{err.code}: {err.message}"
                if problem and not failing:
                    log(f"state: store refused: {problem}")
                elif not problem and failing:
                    log("state: storing again")
                failing = problem is not None


# ---- the control loop ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    env = os.environ
    p = argparse.ArgumentParser(prog="navigator.py", description="drive a square of GPS waypoints")
    p.add_argument("--side", type=float, default=env.get("ROVER_SIDE_M", "10"), help="square side, m")
    p.add_argument("--waypoints", default=env.get("ROVER_WAYPOINTS", ""), help='"x,y;x,y;...", m east,north')
    p.add_argument("--speed", type=float, default=env.get("ROVER_SPEED", "600"), help="cruise speed, mm/s")
    p.add_argument("--track", type=float, default=env.get("ROVER_TRACK_M", "0.5"), help="wheel track, m")
    p.add_argument("--bus", default=env.get("ROVER_BUS", "motor_bus"))
    p.add_argument("--gps", default=env.get("ROVER_GPS", "gps"))
    args = p.parse_args(list(argv))
    args.route = parse_waypoints(args.waypoints) if args.waypoints else square_route(args.side)
    args.speed = min(abs(args.speed), MAX_SPEED_MM_S)
    return args


def motor_command(left: float, right: float) -> can.Message:
    """A 0x101 MotorCommand frame (speeds in mm/s, clamped to ±800)."""
    data = encode_motor_command(left, right)
    return can.Message(arbitration_id=MOTOR_COMMAND_ID, data=data, is_extended_id=False)


def open_bus(name: str, stop: threading.Event) -> Any:
    """The CAN bus, retried until it opens (the kernel or the device may not be up yet)."""
    while not stop.is_set():
        try:
            return can.Bus(
                interface="clove",
                channel=name,
                can_filters=[
                    {"can_id": ODOMETRY_ID, "can_mask": 0x7FF, "extended": False},
                    {"can_id": MOTOR_FAULT_ID, "can_mask": 0x7FF, "extended": False},
                ],
            )
        except (can.CanError, ValueError) as err:
            log(f"cannot open {name}: {err} (retrying in 2 s)")
            stop.wait(2.0)
    return None


def main(argv: Sequence[str]) -> None:
    args = parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log(f"route {args.route} at {args.speed:.0f} mm/s; bus {args.bus!r}, gps {args.gps!r}")

    snapshot: dict[str, Any] = {"state": "starting", "route": args.route}
    lock = threading.Lock()
    gps = GpsReader(args.gps, stop)
    gps.start()
    StateWriter(snapshot, lock, stop).start()
    bus = open_bus(args.bus, stop)
    if bus is None:
        return

    pose = PoseEstimator(track=args.track)
    origin: tuple[float, float] | None = None
    route = Route(args.route, cruise=args.speed, track=args.track)
    laps = 0
    sent = refused = 0
    send_problem: str | None = None  # the current refusal episode's message
    recv_failing = False
    last_odometry = 0.0
    command = (0, 0)
    period = 1.0 / CONTROL_HZ
    next_tick = time.monotonic()
    next_status = next_tick + STATUS_EVERY

    while not stop.is_set():
        # 1. Odometry and faults: everything queued since the last tick.
        try:
            for _ in range(500):  # bounded: a flood cannot starve the control loop
                msg = bus.recv(timeout=0)
                if msg is None:
                    break
                if msg.arbitration_id == ODOMETRY_ID:
                    odo = decode_odometry(msg.data)
                    pose.update_odometry(odo.left, odo.right, odo.distance, msg.timestamp)
                    last_odometry = time.monotonic()
                elif msg.arbitration_id == MOTOR_FAULT_ID:
                    fault = decode_fault(msg.data)
                    log(f"motor fault {fault.code} ({fault.name}), value {fault.value}")
            if recv_failing:
                log("odometry: receiving again")
                recv_failing = False
        except ValueError as err:  # a malformed frame
            log(f"odometry: skipped a bad frame: {err}")
        except can.CanOperationError as err:
            if not recv_failing:
                log(f"odometry: receive failed: {err} (steering by GPS alone)")
                recv_failing = True

        # 2. GPS fixes queued by the reader thread.
        while gps.fixes:
            fix = gps.fixes.popleft()
            if not fix["fix"] or fix["lat"] is None or fix["lon"] is None:
                continue
            if origin is None:
                origin = (fix["lat"], fix["lon"])
                log(f"first fix at {origin[0]:.6f}, {origin[1]:.6f}: this is (0, 0)")
            x, y = latlon_to_local(fix["lat"], fix["lon"], *origin)
            known = pose.heading_known
            pose.update_gps(x, y, fix.get("course_deg"), fix.get("speed_mps"))
            if pose.heading_known and not known:
                log(f"heading acquired: {math.degrees(pose.heading):.0f} deg (ccw from east)")
            gps.last_fix = fix

        # 3. Steer: wait for a fix, creep until the heading is known, then follow the route.
        reached = route.index
        command, mode = route.command(pose)
        if route.index != reached or route.laps != laps:
            log(f"reached waypoint {reached + 1}/{len(route.waypoints)} {route.waypoints[reached]}")
            if route.laps != laps:
                laps = route.laps
                log(f"lap {laps} done; starting again")
        target = route.target

        # 4. Command the motors; a refusal is reported once per episode, and we keep trying.
        try:
            bus.send(motor_command(*command))
            sent += 1
            if send_problem is not None:
                log(f"motor commands accepted again (after {refused} refused in all)")
                send_problem = None
        except can.CanOperationError as err:
            refused += 1
            text = str(err)
            if send_problem is None:
                # refused by the kernel (the grant, an engaged interlock) or failed (device down)
                refusal = isinstance(err.__cause__, PermissionDenied) or "interlock" in text
                kind = "refused" if refusal else "failed"
                log(f"motor command {kind}: {text}")
                send_problem = text

        with lock:
            snapshot.update(
                state="refused" if send_problem else mode,
                pose=[round(pose.x, 2), round(pose.y, 2), round(math.degrees(pose.heading), 1)],
                heading_known=pose.heading_known,
                waypoint=route.index,
                target=list(target),
                distance_to_target_m=round(math.hypot(target[0] - pose.x, target[1] - pose.y), 2),
                laps=laps,
                command=list(command),
                commands_sent=sent,
                commands_refused=refused,
                refusal=send_problem,
                origin=list(origin) if origin else None,
                gps_sentences=gps.good,
                gps_skipped=gps.bad,
                odometry_age_s=round(time.monotonic() - last_odometry, 2) if last_odometry else None,
            )

        now = time.monotonic()
        if now >= next_status:
            next_status = now + STATUS_EVERY
            log(
                f"{mode}: at ({pose.x:.1f}, {pose.y:.1f}) heading {math.degrees(pose.heading):.0f}, "
                f"waypoint {route.index + 1} {target}, command {command}, sent {sent}, refused {refused}, "
                f"nmea ok {gps.good} skipped {gps.bad}"
            )

        # 5. Keep the 20 Hz rhythm; after a long stall (a paused agent) start afresh, no burst.
        next_tick += period
        delay = next_tick - time.monotonic()
        if delay < -period:
            next_tick = time.monotonic()
        elif delay > 0:
            stop.wait(delay)

    # Stopped by the kernel (SIGTERM): a last zero command, best effort, and a clean close.
    with contextlib.suppress(can.CanError):
        bus.send(motor_command(0, 0))
    bus.shutdown()
    log(f"stopped: {sent} commands sent, {refused} refused, {laps} laps")


if __name__ == "__main__":
    main(sys.argv[1:])
