"""The simulators a bench declares (``[sims.NAME]``), behind one small interface the harness
drives: start, the device-config keys that wire a deployment's device to it, faults, what it
recorded, stop.

One :class:`hil.world.World` is shared by a bench's simulators, so the GPS reports where the
motor controller has driven the rover.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from hil.assertions import Frame, RunRecord
from hil.bench import Bench, FaultSpec, SimSpec
from hil.report.track import Track
from hil.world import World


class Simulator:
    def __init__(self, spec: SimSpec, run_dir: Path, world: World) -> None:
        self.spec = spec
        self.name = spec.name
        self.run_dir = run_dir
        self.world = world
        self._until: list[tuple[float, str, Any]] = []  # (time.time(), label, undo) for faults with `for`

    def start(self) -> None:
        """Bring the simulated device up (before the kernel boots)."""

    def wiring(self) -> dict[str, Any]:
        """Keys to set in the wired deployment device's table."""
        return {}

    def mark_start(self, t0: float) -> None:
        """The bench's clock starts (every device ready, every agent running)."""

    def apply(self, fault: FaultSpec) -> float:
        """Apply a fault now; when it took effect (``time.time()``)."""
        raise ValueError(f"{self.spec.kind} simulator {self.name!r} has no fault {fault.kind!r}")

    def _undo_after(self, seconds: float | None, label: str, undo: Any) -> None:
        if seconds is not None:
            self._until.append((time.time() + seconds, label, undo))

    def expired(self, now: float) -> list[str]:
        """End the faults whose time is up; their labels, for the timeline."""
        done = [entry for entry in self._until if entry[0] <= now]
        self._until = [entry for entry in self._until if entry[0] > now]
        for _, _, undo in done:
            undo()
        return [label for _, label, _ in done]

    def sample(self, now: float) -> None:
        """Record what the report plots and nothing else keeps (the harness calls it about ten
        times a second while the bench runs; ``now`` is ``time.time()``)."""

    def collect(self, record: RunRecord) -> None:
        """Add what it observed to the run record."""

    def stop(self) -> None:
        """Stop and remove everything it made (idempotent)."""


class CanBusSim(Simulator):
    """A :mod:`hil.simbus` hub, plus the harness's own listener that traces every frame."""

    def __init__(self, spec: SimSpec, run_dir: Path, world: World) -> None:
        super().__init__(spec, run_dir, world)
        self.dir = run_dir / "simbus"
        self.channel = str(spec.options.get("channel") or spec.name)
        self.hub: Any = None
        self.listener: Any = None
        self.frames: list[Frame] = []
        self._players: list[Any] = []
        self._threads: list[threading.Thread] = []
        self.replays: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None

    def bus(self) -> Any:
        """A new participant on this bus (for a simulated node)."""
        from hil.simbus import SimBus

        return SimBus(channel=self.channel, simbus_dir=str(self.dir))

    def start(self) -> None:
        from hil.simbus import SimBusHub

        self.dir.mkdir(mode=0o755, exist_ok=True)
        log = str(self.run_dir / self.spec.options["log"]) if self.spec.options["record"] else None
        self.hub = SimBusHub(self.channel, simbus_dir=str(self.dir), log_path=log)
        self.hub.start()
        self.listener = self.bus()
        self._reader = threading.Thread(target=self._trace, name=f"hil-trace-{self.name}", daemon=True)
        self._reader.start()

    def _trace(self) -> None:
        while not self._stop.is_set():
            msg = self.listener.recv(timeout=0.1)
            if msg is not None and not msg.is_error_frame:
                self._traced(msg)

    def _traced(self, msg: Any) -> None:
        self.frames.append(Frame(time.time(), msg.arbitration_id, bytes(msg.data)))

    def wiring(self) -> dict[str, Any]:
        return {"interface": "simbus", "channel": self.channel, "options": {"simbus_dir": str(self.dir)}}

    def apply(self, fault: FaultSpec) -> float:
        hub = self.hub
        o = fault.options
        if fault.kind == "can_drop":
            hub.set_faults(drop=float(o["share"]))
            self._undo_after(o.get("for"), f"{fault.name} ended", lambda: hub.set_faults(drop=0.0))
        elif fault.kind == "can_delay":
            hub.set_faults(delay=o["ms"] / 1000)
            self._undo_after(o.get("for"), f"{fault.name} ended", lambda: hub.set_faults(delay=0.0))
        elif fault.kind == "can_error_frames":
            hub.inject_error(o["count"])
        elif fault.kind == "can_replay":
            player = self.bus()
            self._players.append(player)

            def play() -> None:
                from hil.replay import replay

                result = replay(player, o["log"], float(o["speed"]), stop=self._stop)
                self.replays.append({"log": o["log"], "frames": len(result.errors), "p50_ms": result.p50 * 1000, "max_ms": result.max * 1000})

            thread = threading.Thread(target=play, name=f"hil-replay-{self.name}", daemon=True)
            self._threads.append(thread)
            thread.start()
        elif fault.kind == "can_bus_off":
            hub.set_faults(bus_off=True)
            self._undo_after(o.get("for"), f"{fault.name} ended", lambda: hub.set_faults(bus_off=False))
        else:
            return super().apply(fault)
        return time.time()

    def collect(self, record: RunRecord) -> None:
        record.bus[self.name] = list(self.frames)

    def stop(self) -> None:
        self._stop.set()
        if self._reader is not None:
            self._reader.join(2)
        for thread in self._threads:
            thread.join(2)
        for player in self._players:
            player.shutdown()
        self._players.clear()
        if self.listener is not None:
            self.listener.shutdown()
            self.listener = None
        if self.hub is not None:
            self.hub.stop()
            self.hub = None


class MotorSim(Simulator):
    def __init__(self, spec: SimSpec, run_dir: Path, world: World, bus: CanBusSim) -> None:
        super().__init__(spec, run_dir, world)
        self.bus_sim = bus
        self.can: Any = None
        self.controller: Any = None
        self.pose = Track()  # (t, x, y, heading) of the shared world

    def start(self) -> None:
        from hil.motor import MotorController

        self.can = self.bus_sim.bus()
        self.controller = MotorController(self.can, self.world).start()

    def sample(self, now: float) -> None:
        pose = self.world.pose()  # where the rover is: the path the report draws
        self.pose.add(now, pose.x, pose.y, pose.heading)

    def collect(self, record: RunRecord) -> None:
        record.motor[self.name] = list(self.controller.speed_history())
        record.tracks[self.name] = {"pose": list(self.pose.rows)}

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
        if self.can is not None:
            self.can.shutdown()
            self.can = None


class GpsSim(Simulator):
    def __init__(self, spec: SimSpec, run_dir: Path, world: World) -> None:
        super().__init__(spec, run_dir, world)
        self.gps: Any = None

    def start(self) -> None:
        from hil.gps import NmeaGps

        o = self.spec.options
        self.gps = NmeaGps(self.world, rate_hz=float(o["rate_hz"]), baudrate=int(o["baudrate"]), link=str(self.run_dir / f"{self.name}.tty"))

    def wiring(self) -> dict[str, Any]:
        return {"port": self.gps.port, "baudrate": int(self.spec.options["baudrate"])}

    def apply(self, fault: FaultSpec) -> float:
        o = fault.options
        if fault.kind == "serial_garbage":
            self.gps.inject_garbage(o["bytes"])
        elif fault.kind == "serial_corrupt":
            self.gps.corrupt_next(o["count"])
        elif fault.kind == "serial_disconnect":
            self.gps.disconnect()
            self._undo_after(o.get("for") or 1.0, f"{fault.name} reconnected", self.gps.reconnect)
        else:
            return super().apply(fault)
        return time.time()

    def stop(self) -> None:
        if self.gps is not None:
            self.gps.stop()
            self.gps = None


class CommandSim(GpsSim):
    def start(self) -> None:
        from hil.gps import CommandDevice

        self.gps = CommandDevice(link=str(self.run_dir / f"{self.name}.tty")).start()

    def wiring(self) -> dict[str, Any]:
        return {"port": self.gps.port}


class GpioSim(Simulator):
    def __init__(self, spec: SimSpec, run_dir: Path, world: World) -> None:
        super().__init__(spec, run_dir, world)
        self.path = run_dir / f"{spec.name}.chip"
        self.server: Any = None
        self.controller: Any = None

    def start(self) -> None:
        from clove_driver_gpio.sim.client import SimChipController
        from clove_driver_gpio.sim.server import SimChipServer

        o = self.spec.options
        self.server = SimChipServer(self.path, o["lines"], outputs=o["outputs"], active_low=o["active_low"]).start()
        self.controller = SimChipController(str(self.path))

    def wiring(self) -> dict[str, Any]:
        return {"sim_socket": str(self.path)}

    def apply(self, fault: FaultSpec) -> float:
        o = fault.options
        line = o["line"]
        before = time.time()
        if fault.kind == "gpio_press":
            self.controller.press(line)
        elif fault.kind == "gpio_release":
            self.controller.release(line)
        elif fault.kind == "gpio_toggle":
            self.controller.toggle(line)
        elif fault.kind == "gpio_stuck":
            self.controller.stuck(line, o["level"])
            self._undo_after(o.get("for"), f"{fault.name} ended", lambda: self.controller.stuck(line, None))
        else:
            return super().apply(fault)
        return before  # the level changed between before and the reply: the earliest bound

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


class VenueSim(Simulator):
    """A FIX venue (:class:`hil.exchange.venue.SimVenue`) on a free local port."""

    def __init__(self, spec: SimSpec, run_dir: Path, world: World) -> None:
        super().__init__(spec, run_dir, world)
        self.venue: Any = None
        self.open_orders = Track()  # (t, {account: open orders})

    def start(self) -> None:
        from hil.exchange.venue import SimVenue

        o = self.spec.options
        self.venue = SimVenue(
            symbols={k: float(v) for k, v in o["symbols"].items()}, credentials=o["credentials"], seed=o["seed"], liquidity=o["liquidity"], store_dir=str(self.run_dir / f"{self.name}-venue")
        ).start()

    def wiring(self) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": int(self.venue.port)}

    def apply(self, fault: FaultSpec) -> float:
        o = fault.options
        venue = self.venue
        if fault.kind == "venue_reject":
            venue.reject_next(o["count"])
        elif fault.kind == "venue_disconnect":
            venue.disconnect()
        elif fault.kind == "venue_latency":
            venue.latency(o["ms"] / 1000)
            self._undo_after(o.get("for"), f"{fault.name} ended", lambda: venue.latency(0.0))
        elif fault.kind == "venue_throttle":
            venue.throttle(float(o["rate"]))
            self._undo_after(o.get("for"), f"{fault.name} ended", lambda: venue.throttle(None))
        else:
            return super().apply(fault)
        return time.time()

    def sample(self, now: float) -> None:
        # Open orders per account (the exchange driver sends each agent's as its account).
        counts: dict[str, int] = {}
        for session in self.venue.sessions():
            for order in self.venue.orders(session, open_only=True):
                counts[order.account or session] = counts.get(order.account or session, 0) + 1
        self.open_orders.add(now, counts)

    def collect(self, record: RunRecord) -> None:
        record.venue_open[self.name] = sum(len(self.venue.orders(s, open_only=True)) for s in self.venue.sessions())
        fills = [(f.time, f.account or f.session, f.symbol, f.qty if f.side == "buy" else -f.qty) for f in self.venue.fills()]
        record.tracks[self.name] = {"open_orders": list(self.open_orders.rows), "fills": fills}

    def stop(self) -> None:
        if self.venue is not None:
            self.venue.stop()
            self.venue = None


def build_simulators(bench: Bench, run_dir: Path) -> dict[str, Simulator]:
    world = World()
    sims: dict[str, Simulator] = {}
    for spec in sorted(bench.sims.values(), key=lambda s: s.kind != "can_bus"):  # buses before their nodes
        if spec.kind == "can_bus" and spec.options["interface"] == "socketcan":
            from hil.linuxsims import SocketCanBusSim  # Linux-only: imported when a bench asks

            sims[spec.name] = SocketCanBusSim(spec, run_dir, world)
        elif spec.kind == "can_bus":
            sims[spec.name] = CanBusSim(spec, run_dir, world)
        elif spec.kind == "motor_controller":
            bus = sims[spec.options["bus"]]
            assert isinstance(bus, CanBusSim)  # noqa: S101 - load_bench checked the kind
            sims[spec.name] = MotorSim(spec, run_dir, world, bus)
        elif spec.kind == "nmea_gps":
            sims[spec.name] = GpsSim(spec, run_dir, world)
        elif spec.kind == "command_device":
            sims[spec.name] = CommandSim(spec, run_dir, world)
        elif spec.kind == "gpio_chip" and spec.options["backend"] == "gpio-sim":
            from hil.linuxsims import GpioSimChipSim

            sims[spec.name] = GpioSimChipSim(spec, run_dir, world)
        elif spec.kind == "gpio_chip":
            sims[spec.name] = GpioSim(spec, run_dir, world)
        elif spec.kind == "fix_venue":
            sims[spec.name] = VenueSim(spec, run_dir, world)
    return sims
