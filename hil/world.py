"""A tiny 2-D world for one rover, shared by the simulators of one process.

The rover is a differential drive (two wheels :data:`TRACK_WIDTH` apart) on a flat plane whose
origin sits at a given latitude/longitude: ``x`` metres east, ``y`` metres north, ``heading`` in
radians counter-clockwise from east (0 = east, pi/2 = north). The motor simulator sets the wheel
speeds and calls :meth:`World.step`; the GPS simulator reads :meth:`World.to_latlon`. Every
method takes the world's lock, so any thread may call any of them.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Final, final

__all__ = ["EARTH_RADIUS", "TRACK_WIDTH", "Pose", "World"]

#: Metres between the wheels.
TRACK_WIDTH: Final = 0.5
#: Mean Earth radius in metres (the flat-plane projection around the origin uses it).
EARTH_RADIUS: Final = 6_371_000.0


@dataclass(frozen=True, slots=True)
class Pose:
    """One consistent snapshot of the world."""

    x: float  #: metres east of the origin
    y: float  #: metres north of the origin
    heading: float  #: radians counter-clockwise from east, in (-pi, pi]
    left: float  #: left wheel speed, m/s
    right: float  #: right wheel speed, m/s
    odometer: float  #: metres travelled by the rover's centre (always increasing)
    time: float  #: simulated seconds (the sum of every step's dt)

    @property
    def speed(self) -> float:
        """Forward speed of the centre, m/s (negative when reversing)."""
        return (self.left + self.right) / 2.0

    @property
    def yaw_rate(self) -> float:
        """rad/s, counter-clockwise positive."""
        return (self.right - self.left) / TRACK_WIDTH

    @property
    def course(self) -> float:
        """The heading as a compass course: degrees clockwise from true north, 0..360."""
        return (90.0 - math.degrees(self.heading)) % 360.0


@final
class World:
    """The shared world. ``lat``/``lon`` (degrees) is where ``x = y = 0`` lies; ``heading``
    the initial heading (radians counter-clockwise from east)."""

    def __init__(
        self,
        lat: float = 48.137154,
        lon: float = 11.576124,
        heading: float = 0.0,
        altitude: float = 520.0,
        track_width: float = TRACK_WIDTH,
    ) -> None:
        if not -90.0 < lat < 90.0 or not -180.0 <= lon <= 180.0:
            raise ValueError(f"origin out of range: lat={lat} lon={lon}")
        if track_width <= 0:
            raise ValueError("track_width must be positive")
        self.origin_lat = lat
        self.origin_lon = lon
        self.altitude = altitude
        self.track_width = track_width
        self._lock = threading.Lock()
        self._x = 0.0
        self._y = 0.0
        self._heading = _wrap(heading)
        self._left = 0.0
        self._right = 0.0
        self._odometer = 0.0
        self._time = 0.0
        #: ``time.monotonic()`` of the last step (None before the first).
        self.last_step: float | None = None

    # --- driven by the motor simulator -------------------------------------------------------

    def set_wheel_speeds(self, left: float, right: float) -> None:
        """Wheel speeds in m/s, used by the following :meth:`step` calls."""
        with self._lock:
            self._left = float(left)
            self._right = float(right)

    def step(self, dt: float) -> Pose:
        """Advance ``dt`` seconds at the current wheel speeds (exact arc integration)."""
        if dt < 0:
            raise ValueError("dt must not be negative")
        with self._lock:
            v = (self._left + self._right) / 2.0
            w = (self._right - self._left) / self.track_width
            h0 = self._heading
            if abs(w) < 1e-9:
                self._x += v * dt * math.cos(h0)
                self._y += v * dt * math.sin(h0)
            else:
                h1 = h0 + w * dt
                radius = v / w
                self._x += radius * (math.sin(h1) - math.sin(h0))
                self._y -= radius * (math.cos(h1) - math.cos(h0))
            self._heading = _wrap(h0 + w * dt)
            self._odometer += abs(v) * dt
            self._time += dt
            self.last_step = time.monotonic()
            return self._pose()

    # --- for tests and other simulators ------------------------------------------------------

    def place(self, x: float = 0.0, y: float = 0.0, heading: float | None = None) -> None:
        """Teleport the rover (a test's setup)."""
        with self._lock:
            self._x, self._y = float(x), float(y)
            if heading is not None:
                self._heading = _wrap(heading)

    def pose(self) -> Pose:
        with self._lock:
            return self._pose()

    def to_latlon(self) -> tuple[float, float]:
        """The rover's latitude and longitude in degrees (an equirectangular projection around
        the origin: metres-accurate over a few kilometres)."""
        with self._lock:
            x, y = self._x, self._y
        return self.xy_to_latlon(x, y)

    def xy_to_latlon(self, x: float, y: float) -> tuple[float, float]:
        lat = self.origin_lat + math.degrees(y / EARTH_RADIUS)
        lon = self.origin_lon + math.degrees(x / (EARTH_RADIUS * math.cos(math.radians(self.origin_lat))))
        return lat, (lon + 180.0) % 360.0 - 180.0

    def latlon_to_xy(self, lat: float, lon: float) -> tuple[float, float]:
        """The inverse of :meth:`xy_to_latlon` (a navigator test's helper)."""
        y = math.radians(lat - self.origin_lat) * EARTH_RADIUS
        dlon = (lon - self.origin_lon + 180.0) % 360.0 - 180.0
        x = math.radians(dlon) * EARTH_RADIUS * math.cos(math.radians(self.origin_lat))
        return x, y

    def _pose(self) -> Pose:
        return Pose(self._x, self._y, self._heading, self._left, self._right, self._odometer, self._time)


def _wrap(angle: float) -> float:
    """``angle`` in (-pi, pi]."""
    wrapped = math.remainder(angle, math.tau)
    return math.pi if wrapped == -math.pi else wrapped
