"""The rover's telemetry: watches the motor bus and the estop line, read-only.

Uses the SDK's device handles directly (no python-can):

* ``client.device("motor_bus").recv(...)``: its grant admits only ids 0x181-0x1FF, so it sees
  the motor controller's Odometry (0x181) and MotorFault (0x1F0) frames and never the commands.
  Speed and distance go to ``rover/odometry`` in global state once a second; every fault frame
  becomes a custom event ``MOTOR_FAULT`` with the decoded code.
* ``client.device("estop").recv(...)``: the stream op ``watch`` delivers the estop line's
  edges; each becomes a custom event ``ESTOP_EDGE``.

One thread per stream, each with its own ``CloveClient`` (a client is not thread-safe). Every
failure (a refusal, a device restarting, a kernel hiccup) is logged once per episode and the
thread carries on. SIGTERM ends both threads.

Configuration: ``ROVER_BUS`` (default ``motor_bus``), ``ROVER_ESTOP`` (default ``estop``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from rover_can import MOTOR_FAULT_ID, ODOMETRY_ID, decode_fault, decode_odometry, odometer_delta


def log(message: str) -> None:
    """One progress line (written in one piece: the threads share stdout)."""
    sys.stdout.write(f"{time.strftime('%H:%M:%S')} telemetry: {message}\n")
    sys.stdout.flush()


class Episodes:
    """Logs the first failure of an episode and the recovery, not every failed call."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failures = 0

    def failed(self, problem: str) -> None:
        if self.failures == 0:
            log(f"{self.what}: {problem} (retrying)")
        self.failures += 1

    def ok(self) -> None:
        if self.failures:
            log(f"{self.what}: working again after {self.failures} failed calls")
            self.failures = 0


def attempt(episodes: Episodes, call: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> None:
    """Make one SDK call in the original style (a dict with ``success``), logging failures."""
    from clove_sdk.errors import CloveError

    try:
        reply = call(*args, **kwargs)
    except CloveError as err:  # the kernel did not answer in time
        episodes.failed(f"{err.code}: {err.message}")
        return
    if reply.get("success"):
        episodes.ok()
    else:
        episodes.failed(f"{reply.get('code')}: {reply.get('error')}")


class OdometryTracker:
    """Speed and distance from 0x181 frames: pure bookkeeping, no I/O."""

    def __init__(self) -> None:
        self.frames = 0
        self.left = self.right = 0  # mm/s
        self.odometer: int | None = None  # mm, as the controller reports it
        self.trip_mm = 0  # since this agent started (across the uint32 wrap)
        self.max_speed_mm_s = 0.0
        self.last_ts: float | None = None
        self.faults = 0
        self.last_fault: dict[str, Any] | None = None
        self.other_frames = 0
        self.bad_frames = 0

    @property
    def speed_mm_s(self) -> float:
        """Forward speed of the rover's centre."""
        return (self.left + self.right) / 2.0

    def update(self, left: int, right: int, distance: int, ts: float | None = None) -> None:
        if self.odometer is not None:
            self.trip_mm += odometer_delta(self.odometer, distance)
        self.frames += 1
        self.left, self.right, self.odometer, self.last_ts = left, right, distance, ts
        self.max_speed_mm_s = max(self.max_speed_mm_s, abs(self.speed_mm_s))

    def snapshot(self) -> dict[str, Any]:
        return {
            "left_mm_s": self.left,
            "right_mm_s": self.right,
            "speed_m_s": round(self.speed_mm_s / 1000.0, 3),
            "max_speed_m_s": round(self.max_speed_mm_s / 1000.0, 3),
            "odometer_m": None if self.odometer is None else self.odometer / 1000.0,
            "trip_m": self.trip_mm / 1000.0,
            "frames": self.frames,
            "frame_ts": self.last_ts,
            "faults": self.faults,
            "last_fault": self.last_fault,
            "other_frames": self.other_frames,
            "bad_frames": self.bad_frames,
            "ts": time.time(),
        }


def watch_motor_bus(device_name: str, stop: threading.Event) -> None:
    """Thread: frames in, ``rover/odometry`` out once a second, ``MOTOR_FAULT`` per fault."""
    from clove_sdk import CloveClient
    from clove_sdk.errors import CloveError

    tracker = OdometryTracker()
    receiving = Episodes(f"{device_name} recv")
    storing, emitting = Episodes("state store"), Episodes("emit MOTOR_FAULT")
    next_store = time.monotonic() + 1.0
    next_status = time.monotonic() + 5.0
    with CloveClient(timeout=10.0) as client:
        bus = client.device(device_name)
        log(f"watching {device_name} (0x181 odometry, 0x1F0 faults)")
        while not stop.is_set():
            try:
                frames = bus.recv(max_items=500, timeout=0.5)
                receiving.ok()
            except CloveError as err:
                receiving.failed(f"{err.code}: {err.message}")
                frames = []
                stop.wait(1.0)
            for frame in frames:
                if frame.get("err"):
                    continue  # error frames (only with recv_error_frames) carry no payload
                try:
                    if frame["id"] == ODOMETRY_ID:
                        odo = decode_odometry(frame["data"])
                        tracker.update(odo.left, odo.right, odo.distance, frame.get("ts"))
                    elif frame["id"] == MOTOR_FAULT_ID:
                        fault = decode_fault(frame["data"])
                        tracker.faults += 1
                        tracker.last_fault = {
                            "code": fault.code,
                            "name": fault.name,
                            "value": fault.value,
                            "ts": frame.get("ts"),
                        }
                        log(f"MOTOR_FAULT code {fault.code} ({fault.name}), value {fault.value}")
                        attempt(emitting, client.emit_event, "MOTOR_FAULT", tracker.last_fault)
                    else:
                        tracker.other_frames += 1
                except (KeyError, ValueError) as err:
                    tracker.bad_frames += 1
                    log(f"skipped a malformed frame {frame.get('id')!r}: {err}")
            if time.monotonic() >= next_store:
                next_store = time.monotonic() + 1.0
                snap = tracker.snapshot()
                attempt(storing, client.store, "rover/odometry", snap, scope="global")
                if time.monotonic() >= next_status:  # a progress line every 5 s
                    next_status = time.monotonic() + 5.0
                    log(
                        f"speed {snap['speed_m_s']:.2f} m/s, trip {snap['trip_m']:.1f} m, "
                        f"{tracker.frames} frames, {tracker.faults} faults"
                    )
    log(f"{device_name}: stopped after {tracker.frames} odometry frames")


def watch_estop(device_name: str, stop: threading.Event) -> None:
    """Thread: each edge of the estop line becomes an ``ESTOP_EDGE`` event."""
    from clove_sdk import CloveClient
    from clove_sdk.errors import CloveError

    receiving, emitting = Episodes(f"{device_name} watch"), Episodes("emit ESTOP_EDGE")
    edges = 0
    with CloveClient(timeout=10.0) as client:
        estop = client.device(device_name)
        try:  # the level now, for the log (needs "get" in the grant; optional)
            log(f"watching {device_name}; lines now {estop.get(lines=['estop'])}")
        except CloveError as err:
            log(f"watching {device_name} (current level unknown: {err.code})")
        while not stop.is_set():
            try:
                items = estop.recv(max_items=100, timeout=0.5)
                receiving.ok()
            except CloveError as err:
                receiving.failed(f"{err.code}: {err.message}")
                stop.wait(1.0)
                continue
            for edge in items:
                edges += 1
                data = {key: edge.get(key) for key in ("line", "edge", "value", "ts")}
                log(f"ESTOP_EDGE {data['line']} {data['edge']} (value {data['value']})")
                attempt(emitting, client.emit_event, "ESTOP_EDGE", data)
    log(f"{device_name}: stopped after {edges} edges")


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    bus, estop = os.environ.get("ROVER_BUS", "motor_bus"), os.environ.get("ROVER_ESTOP", "estop")
    threads = [
        threading.Thread(target=watch_motor_bus, args=(bus, stop), name="bus", daemon=True),
        threading.Thread(target=watch_estop, args=(estop, stop), name="estop", daemon=True),
    ]
    for thread in threads:
        thread.start()
    crashed = False
    while not stop.wait(1.0):
        for thread in threads:
            if not thread.is_alive():  # a bug in a watcher: fail loudly rather than go quiet
                log(f"thread {thread.name} ended unexpectedly; exiting so the supervisor restarts us")
                crashed = True
                stop.set()
    for thread in threads:
        thread.join(timeout=3.0)
    if crashed:
        sys.exit(1)


if __name__ == "__main__":
    main()
