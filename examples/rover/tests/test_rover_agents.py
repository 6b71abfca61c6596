"""The rover agents' pure parts: CAN frames, NMEA, geometry, steering, localisation, telemetry
bookkeeping and the rogue's reporting. No kernel: each agent is imported as a module (its
``main`` only runs as ``__main__``)."""

from __future__ import annotations

import importlib.util
import math
import struct
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from clove.errors import DeviceUnavailable, KernelUnavailable, PermissionDenied

AGENTS = Path(__file__).resolve().parent.parent / "agents"
sys.path.insert(0, str(AGENTS))  # as the kernel runs them: the script's directory first

import rover_can  # noqa: E402


def _load(name: str) -> ModuleType:
    """Import ``agents/<name>.py`` under a name no other test uses."""
    spec = importlib.util.spec_from_file_location(f"rover_agent_{name}", AGENTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


navigator = _load("navigator")
telemetry = _load("telemetry")
rogue = _load("rogue")
cpu_hog = _load("cpu_hog")
leaker = _load("leaker")


def sentence(body: str) -> str:
    """A complete NMEA line for ``body`` (between ``$`` and ``*``)."""
    return f"${body}*{navigator.nmea_checksum(body):02X}\r\n"


# ---- CAN frames ---------------------------------------------------------------------------------


def test_motor_command_round_trip_and_clamp() -> None:
    assert rover_can.encode_motor_command(300, -250) == struct.pack("<hh", 300, -250)
    assert rover_can.decode_motor_command(rover_can.encode_motor_command(300, -250)) == (300, -250)
    assert rover_can.decode_motor_command(rover_can.encode_motor_command(5000, -5000)) == (800, -800)
    assert rover_can.encode_motor_command(100.6, -0.4) == struct.pack("<hh", 101, 0)


def test_odometry_and_fault_decoding() -> None:
    odo = rover_can.decode_odometry(struct.pack("<hhI", 512, -498, 123_456))
    assert odo == (512, -498, 123_456)
    assert (odo.left, odo.right, odo.distance) == (512, -498, 123_456)
    fault = rover_can.decode_fault(bytes([1]) + struct.pack("<h", -900))
    assert (fault.code, fault.value, fault.name) == (1, -900, "out of range")
    assert rover_can.decode_fault(struct.pack("<Bh", 2, 0)).name == "command timeout"
    assert rover_can.decode_fault(struct.pack("<Bh", 9, 0)).name == "unknown fault 9"
    # the agents decode through the same functions
    assert navigator.decode_odometry is rover_can.decode_odometry
    assert telemetry.decode_fault is rover_can.decode_fault


@pytest.mark.parametrize(
    ("decode", "size"),
    [(rover_can.decode_motor_command, 4), (rover_can.decode_odometry, 8), (rover_can.decode_fault, 3)],
)
def test_decoders_refuse_wrong_lengths(decode: Any, size: int) -> None:
    for wrong in (b"", b"\x00" * (size - 1), b"\x00" * (size + 1)):
        with pytest.raises(ValueError, match="expected"):
            decode(wrong)


def test_odometer_delta_wraps() -> None:
    assert rover_can.odometer_delta(1000, 1250) == 250
    assert rover_can.odometer_delta(2**32 - 10, 15) == 25


# ---- NMEA ---------------------------------------------------------------------------------------

GGA = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n"
RMC = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A\r\n"


def test_checksum_of_known_sentences() -> None:
    assert navigator.nmea_checksum("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,") == 0x47
    assert sentence("GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W") == RMC


def test_parse_gga_and_rmc() -> None:
    gga = navigator.parse_nmea(GGA)
    assert gga is not None and gga["type"] == "GGA" and gga["fix"] is True
    assert gga["lat"] == pytest.approx(48 + 7.038 / 60)
    assert gga["lon"] == pytest.approx(11 + 31.0 / 60)
    assert (gga["sats"], gga["hdop"], gga["alt"]) == (8, 0.9, 545.4)
    rmc = navigator.parse_nmea(RMC.encode())  # bytes as read from the port
    assert rmc is not None and rmc["type"] == "RMC" and rmc["fix"] is True
    assert rmc["speed_mps"] == pytest.approx(22.4 * 0.514444)
    assert rmc["course_deg"] == pytest.approx(84.4)


def test_parse_southern_western_and_other_talkers() -> None:
    fix = navigator.parse_nmea(sentence("GNGGA,000001,3352.500,S,15112.600,W,2,10,1.0,10.0,M,,M,,"))
    assert fix is not None
    assert fix["lat"] == pytest.approx(-(33 + 52.5 / 60))
    assert fix["lon"] == pytest.approx(-(151 + 12.6 / 60))


def test_parse_skips_bad_lines() -> None:
    bad = [
        GGA.replace("*47", "*48"),  # wrong checksum
        GGA.replace("4807.038", "4807.039"),  # corrupted payload
        GGA.replace("*47", "*zz"),  # unreadable checksum
        GGA.replace("*47", ""),  # no checksum
        GGA[:30],  # truncated
        "\x00\xff garbage without a dollar\n",
        "",
        sentence("GPGSV,3,1,11,03,03,111,00,04,15,270,00"),  # a type we do not use
        sentence("GPGGA,123519,48x7.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"),  # bad number
        sentence("GPGGA,123519"),  # too few fields
    ]
    for line in bad:
        assert navigator.parse_nmea(line) is None, line
    assert navigator.parse_nmea(b"\xfe\xff\x00") is None


def test_parse_recovers_a_sentence_after_garbage_on_the_same_line() -> None:
    fix = navigator.parse_nmea(b"\x8a\x13noise$GP" + GGA.encode())
    assert fix is not None and fix["type"] == "GGA"


def test_parse_without_fix() -> None:
    gga = navigator.parse_nmea(sentence("GPGGA,123519,,,,,0,00,,,M,,M,,"))
    assert gga is not None and gga["fix"] is False and gga["lat"] is None and gga["lon"] is None
    rmc = navigator.parse_nmea(sentence("GPRMC,123519,V,,,,,,,230394,,"))
    assert rmc is not None and rmc["fix"] is False and rmc["course_deg"] is None


# ---- geometry -----------------------------------------------------------------------------------


def test_latlon_to_local() -> None:
    lat0, lon0 = 48.137154, 11.576124
    assert navigator.latlon_to_local(lat0, lon0, lat0, lon0) == (0.0, 0.0)
    east, north = navigator.latlon_to_local(lat0 + 0.0001, lon0, lat0, lon0)
    assert east == pytest.approx(0.0) and north == pytest.approx(11.1195, abs=1e-3)
    east, north = navigator.latlon_to_local(lat0, lon0 - 0.0001, lat0, lon0)
    assert north == pytest.approx(0.0)
    assert east == pytest.approx(-11.1195 * math.cos(math.radians(lat0)), abs=1e-3)
    # the inverse of the projection the bench's world uses: 10 m east, 10 m north
    lat = lat0 + math.degrees(10 / navigator.EARTH_RADIUS)
    lon = lon0 + math.degrees(10 / (navigator.EARTH_RADIUS * math.cos(math.radians(lat0))))
    assert navigator.latlon_to_local(lat, lon, lat0, lon0) == pytest.approx((10.0, 10.0), abs=1e-6)


def test_course_to_heading() -> None:
    assert navigator.course_to_heading(90.0) == pytest.approx(0.0)  # east
    assert navigator.course_to_heading(0.0) == pytest.approx(math.pi / 2)  # north
    assert navigator.course_to_heading(180.0) == pytest.approx(-math.pi / 2)  # south


def test_routes_and_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    assert navigator.square_route(10) == [(10, 0), (10, 10), (0, 10), (0, 0)]
    assert navigator.parse_waypoints(" 1,2; 3.5,-4 ;") == [(1.0, 2.0), (3.5, -4.0)]
    with pytest.raises(ValueError, match="unpack"):
        navigator.parse_waypoints("1;2")
    with pytest.raises(ValueError, match="no waypoints"):
        navigator.parse_waypoints(" ; ")
    for key in ("ROVER_SIDE_M", "ROVER_WAYPOINTS", "ROVER_SPEED"):
        monkeypatch.delenv(key, raising=False)
    args = navigator.parse_args([])
    assert args.route == navigator.square_route(10) and args.speed == 600 and args.bus == "motor_bus"
    monkeypatch.setenv("ROVER_SIDE_M", "4")
    monkeypatch.setenv("ROVER_SPEED", "5000")
    args = navigator.parse_args([])
    assert args.route == navigator.square_route(4) and args.speed == 800  # capped at the controller's range
    assert navigator.parse_args(["--waypoints", "1,1;2,2"]).route == [(1.0, 1.0), (2.0, 2.0)]


# ---- steering -----------------------------------------------------------------------------------


def test_steer_straight_ahead() -> None:
    left, right = navigator.steer(0, 0, 0.0, (10, 0), cruise=600)
    assert left == right == 600


def test_steer_turns_toward_the_target() -> None:
    left, right = navigator.steer(0, 0, 0.0, (10, 3))  # ahead and to the left
    assert right > left > 0
    left, right = navigator.steer(0, 0, 0.0, (10, -3))  # to the right
    assert left > right > 0
    left, right = navigator.steer(0, 0, 0.0, (-10, 0.1))  # behind: turn on the spot first
    assert left == -right and right > 0


def test_steer_slows_down_near_the_target() -> None:
    far = navigator.steer(0, 0, 0.0, (10, 0))
    near = navigator.steer(0, 0, 0.0, (0.5, 0))
    assert 0 < near[0] < far[0]


def test_steer_stays_within_the_controller_range() -> None:
    for heading in range(-180, 181, 15):
        for tx, ty in ((10, 0), (-3, 7), (0.2, -0.1), (-50, -50)):
            for cruise in (200, 600, 800, 5000):
                left, right = navigator.steer(1.0, 2.0, math.radians(heading), (tx, ty), cruise=cruise)
                assert isinstance(left, int) and isinstance(right, int)
                assert -800 <= left <= 800 and -800 <= right <= 800


# ---- localisation and the route, closed loop ------------------------------------------------------


def test_pose_estimator_integrates_odometry() -> None:
    pose = navigator.PoseEstimator(track=0.5)
    pose.update_odometry(500, 500, 1000, 0.0)  # before a fix: remembered, not integrated
    pose.update_gps(0.0, 0.0)
    pose.update_gps(0.0, 0.0, course_deg=90.0, speed_mps=0.5)  # moving east
    assert pose.heading_known and pose.heading == pytest.approx(0.0)
    for i in range(1, 51):  # 1 s straight at 0.5 m/s, a frame every 20 ms
        pose.update_odometry(500, 500, 1000 + 10 * i, 0.02 * i)
    assert (pose.x, pose.y) == pytest.approx((0.5, 0.0), abs=1e-9)
    for i in range(51, 101):  # 1 s turning on the spot: (0.25 - -0.25) / 0.5 = 1 rad/s
        pose.update_odometry(-250, 250, 1500 + 5 * i, 0.02 * i)
    assert pose.heading == pytest.approx(1.0, abs=1e-6)


def test_pose_estimator_heading_from_the_gps_track() -> None:
    pose = navigator.PoseEstimator()
    pose.update_gps(0.0, 0.0)
    assert pose.have_position and not pose.heading_known
    pose.update_gps(0.0, 0.6)
    assert not pose.heading_known  # not far enough yet
    pose.update_gps(0.0, 1.2)  # 1.2 m north, no course given: the track says north
    assert pose.heading_known and pose.heading == pytest.approx(math.pi / 2)


def simulate(route_points: list[tuple[float, float]], heading0: float, seconds: float) -> Any:
    """A differential-drive rover (the bench world's kinematics), its odometry at 50 Hz and a
    GPS at 5 Hz, closed through the navigator's estimator, route and steering at 20 Hz."""
    track = 0.5
    x = y = 0.0
    heading, odometer, t = heading0, 0, 0.0
    left = right = 0.0  # m/s
    pose = navigator.PoseEstimator(track=track)
    route = navigator.Route(route_points, cruise=600, track=track)
    path = []
    for step in range(int(seconds / 0.02)):
        t = step * 0.02
        if step % 10 == 0:  # GPS, 5 Hz, with the course over ground
            speed = (left + right) / 2
            course = (90.0 - math.degrees(heading)) % 360.0
            pose.update_gps(x, y, course_deg=course, speed_mps=abs(speed))
        if step % 2 == 0:  # control, 20 Hz
            (cmd_left, cmd_right), _ = route.command(pose)
            assert -800 <= cmd_left <= 800 and -800 <= cmd_right <= 800
            left, right = cmd_left / 1000.0, cmd_right / 1000.0
        v, w = (left + right) / 2, (right - left) / track
        x += v * 0.02 * math.cos(heading + w * 0.01)
        y += v * 0.02 * math.sin(heading + w * 0.01)
        heading = navigator.wrap_angle(heading + w * 0.02)
        odometer += round(abs(v) * 20)  # mm per 20 ms
        pose.update_odometry(round(left * 1000), round(right * 1000), odometer, t)
        path.append((x, y))
        if route.laps >= 1:
            break
    return route, path, (x, y), pose


@pytest.mark.parametrize("heading0", [0.0, 2.0, -2.5])
def test_navigator_drives_the_square_and_loops(heading0: float) -> None:
    route, path, (x, y), pose = simulate(navigator.square_route(10), heading0, seconds=150)
    where = f"stuck before waypoint {route.index + 1} at ({x:.1f}, {y:.1f})"
    assert route.laps == 1 and route.index == 0, where
    assert math.hypot(x, y) < 1.5  # back at the start
    assert math.hypot(pose.x - x, pose.y - y) < 0.5  # the estimate followed the truth
    for corner in navigator.square_route(10):  # it really went round every corner
        closest = min(math.hypot(px - corner[0], py - corner[1]) for px, py in path)
        assert closest < navigator.ARRIVE_RADIUS + 0.1


def test_route_waits_for_a_fix_then_probes_for_heading() -> None:
    pose = navigator.PoseEstimator()
    route = navigator.Route(navigator.square_route(10))
    assert route.command(pose) == ((0, 0), "waiting for fix")
    pose.update_gps(0.0, 0.0)
    assert route.command(pose) == ((navigator.PROBE_SPEED, navigator.PROBE_SPEED), "finding heading")


def test_motor_command_message() -> None:
    msg = navigator.motor_command(900, -100)
    assert (msg.arbitration_id, msg.is_extended_id) == (0x101, False)
    assert rover_can.decode_motor_command(bytes(msg.data)) == (800, -100)


# ---- telemetry ----------------------------------------------------------------------------------


def test_odometry_tracker() -> None:
    tracker = telemetry.OdometryTracker()
    tracker.update(400, 600, 2**32 - 100, 1.0)
    tracker.update(-700, -700, 50, 1.02)  # across the uint32 wrap
    snap = tracker.snapshot()
    assert snap["trip_m"] == pytest.approx(0.150)
    assert snap["odometer_m"] == pytest.approx(0.050)
    assert snap["speed_m_s"] == pytest.approx(-0.7)
    assert snap["max_speed_m_s"] == pytest.approx(0.7)
    assert snap["frames"] == 2 and snap["frame_ts"] == 1.02


def test_attempt_logs_once_per_episode(capsys: pytest.CaptureFixture[str]) -> None:
    episodes = telemetry.Episodes("store")

    def refuse(**_: Any) -> dict[str, Any]:
        return {"success": False, "code": "perm.denied", "error": "no"}

    def hang(**_: Any) -> dict[str, Any]:
        raise KernelUnavailable("no reply")

    telemetry.attempt(episodes, refuse)
    telemetry.attempt(episodes, hang)
    telemetry.attempt(episodes, lambda **kw: {"success": True, **kw}, key="k")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "perm.denied" in out[0] and "working again after 2" in out[1]


# ---- rogue --------------------------------------------------------------------------------------


def test_rogue_device_attempt_verdicts(capsys: pytest.CaptureFixture[str]) -> None:
    def denied() -> None:
        raise PermissionDenied("can id 0x200 is not granted")

    def down() -> None:
        raise DeviceUnavailable("restarting")

    assert rogue.try_device("CAN id 0x200", denied)["verdict"] == "DENIED"
    assert rogue.try_device("CAN id 0x200", down)["verdict"] == "FAILED"
    assert rogue.try_device("CAN id 0x200", lambda: {"sent": True})["verdict"] == "ALLOWED"
    assert rogue.try_device("x", lambda: 1 / 0)["verdict"] == "FAILED"
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "DENIED CAN id 0x200: perm.denied (can id 0x200 is not granted)"
    assert out[2].startswith("ALLOWED CAN id 0x200")


def test_rogue_neighbour_endpoints() -> None:
    own = "ipc:///var/lib/clove/agents/3/ipc/kernel.sock"
    assert rogue.neighbour_endpoints(own, 3) == [
        (2, "ipc:///var/lib/clove/agents/2/ipc/kernel.sock"),
        (4, "ipc:///var/lib/clove/agents/4/ipc/kernel.sock"),
        (1, "ipc:///var/lib/clove/agents/1/ipc/kernel.sock"),
        (5, "ipc:///var/lib/clove/agents/5/ipc/kernel.sock"),
    ]
    assert [i for i, _ in rogue.neighbour_endpoints("ipc:///s/agents/1/ipc/kernel.sock", 1)] == [2, 3]
    assert rogue.neighbour_endpoints("ipc:///tmp/clove.sock", 3) == []


def test_rogue_hello_on_an_invisible_channel(tmp_path: Path) -> None:
    verdict, how = rogue.hello_as(f"ipc://{tmp_path}/agents/9/ipc/kernel.sock", 9, timeout=0.2)
    assert verdict == "DENIED" and how.startswith("ENOENT")


def test_rogue_impersonation_without_a_kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLOVE_AGENT_ENDPOINT", f"ipc://{tmp_path}/agents/3/ipc/kernel.sock")
    monkeypatch.setenv("CLOVE_AGENT_ID", "3")
    result = rogue.try_impersonation()
    assert result["verdict"] == "DENIED" and len(result["attempts"]) == 4
    monkeypatch.delenv("CLOVE_AGENT_ENDPOINT")
    assert rogue.try_impersonation()["verdict"] == "FAILED"


def test_rogue_name_claim() -> None:
    class Client:
        def __init__(self, reply: dict[str, Any]) -> None:
            self.reply, self.names = reply, []

        def register_name(self, name: str) -> dict[str, Any]:
            self.names.append(name)
            return self.reply if len(self.names) == 1 else {"success": True}

    taken = Client({"success": False, "code": "conflict", "error": "held by agent 1"})
    assert rogue.try_name(taken, "navigator")["verdict"] == "DENIED"
    free = Client({"success": True, "agent_id": 5, "name": "navigator"})
    assert rogue.try_name(free, "navigator")["verdict"] == "ALLOWED"
    assert len(free.names) == 2  # and gave it back


def test_rogue_errno_names() -> None:
    assert rogue.errno_name(OSError(101, "Network is unreachable")) == "ENETUNREACH"
    assert rogue.errno_name(TimeoutError()) == "TimeoutError"


# ---- the hogs -----------------------------------------------------------------------------------


def test_leaker_touches_what_it_grabs() -> None:
    held: list[bytearray] = []
    leaker.grab(held)
    assert len(held) == 1 and len(held[0]) == 8 << 20 and held[0][4096] == 1
    assert isinstance(leaker.memory_limit(), str)


def test_cpu_hog_reads_throttling_if_visible() -> None:
    value = cpu_hog.throttled_periods()
    assert value is None or value >= 0
