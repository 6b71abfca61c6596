"""Simulators on real Linux devices, for a bench that runs as on a board (docs/hil.md, "On a
Linux board"): a ``can_bus`` with ``interface = "socketcan"`` and a ``gpio_chip`` with
``backend = "gpio-sim"``. The deployment's drivers then open a SocketCAN interface and a
``/dev/gpiochipN`` through libgpiod, as they would on the robot; the harness's motor controller
is one more node on that bus and its button presses are a kernel chip's simulated pulls.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import can

from hil.assertions import Frame
from hil.bench import FaultSpec, SimSpec
from hil.linuxdevices import GpioSimChip, ensure_vcan, remove_vcan
from hil.sims import CanBusSim, Simulator
from hil.world import World


class LossyNode(can.BusABC):
    """A node's bus that loses a share of its frames, sent and received, while ``share()`` > 0.

    A real bus has no knob that loses frames on the wire; the harness loses them at its own
    nodes instead, which is what the deployment's agents see of a lossy bus.
    """

    def __init__(self, bus: can.BusABC, share: Callable[[], float], rng: random.Random) -> None:
        self._bus = bus
        self._share = share
        self._rng = rng
        self.channel_info = f"lossy {bus.channel_info}"
        self.dropped = 0
        super().__init__(channel=bus.channel_info)

    def _lost(self) -> bool:
        share = self._share()
        if share and self._rng.random() < share:
            self.dropped += 1
            return True
        return False

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        msg = self._bus.recv(timeout)
        return (None if msg is None or self._lost() else msg), False  # BusABC.recv waits on

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        if not self._lost():
            self._bus.send(msg, timeout)

    def shutdown(self) -> None:
        super().shutdown()
        self._bus.shutdown()


class SocketCanBusSim(CanBusSim):
    """A ``can_bus`` on a SocketCAN interface (``channel``), made as a vcan when missing and then
    removed at the end. The trace stamps frames with the kernel's receive time; ``record``
    captures them to ``log`` as the simbus hub would. Faults: ``can_drop`` (at the harness's
    nodes, :class:`LossyNode`) and ``can_replay``; the rest need the simbus hub's knobs."""

    def __init__(self, spec: SimSpec, run_dir: Path, world: World) -> None:
        super().__init__(spec, run_dir, world)
        self.channel = str(spec.options["channel"])
        self.drop = 0.0
        self._rng = random.Random(1)  # reproducible losses, as the hub's seed
        self._made = False
        self._writer: Any = None

    def _socket(self) -> can.BusABC:
        return can.Bus(interface="socketcan", channel=self.channel)

    def bus(self) -> Any:
        return LossyNode(self._socket(), lambda: self.drop, self._rng)

    def start(self) -> None:
        self._made = ensure_vcan(self.channel)
        if self.spec.options["record"]:
            self._writer = can.Logger(str(self.run_dir / self.spec.options["log"]))
        self.listener = self._socket()
        self._reader = threading.Thread(target=self._trace, name=f"hil-trace-{self.name}", daemon=True)
        self._reader.start()

    def _traced(self, msg: Any) -> None:
        # SocketCAN stamps each frame on receipt in the kernel (wall clock): no thread's delay in it.
        self.frames.append(Frame(msg.timestamp, msg.arbitration_id, bytes(msg.data)))
        if self._writer is not None:
            self._writer.on_message_received(msg)

    def wiring(self) -> dict[str, Any]:
        return {"interface": "socketcan", "channel": self.channel}

    def apply(self, fault: FaultSpec) -> float:
        if fault.kind == "can_drop":
            self.drop = float(fault.options["share"])
            self._undo_after(
                fault.options.get("for"), f"{fault.name} ended", lambda: setattr(self, "drop", 0.0)
            )
            return time.time()
        if fault.kind == "can_replay":
            return super().apply(fault)
        return Simulator.apply(self, fault)  # load_bench refused the hub-only faults already

    def stop(self) -> None:
        super().stop()
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        if self._made:
            remove_vcan(self.channel)
            self._made = False


class GpioSimChipSim(Simulator):
    """A ``gpio_chip`` on a gpio-sim chip: the deployment's driver holds its real lines through
    libgpiod; a press is the simulated pull to the line's active level (0 for ``active_low``).
    ``gpio_stuck`` holds a line's pull until it ends: presses meanwhile change nothing."""

    def __init__(self, spec: SimSpec, run_dir: Path, world: World) -> None:
        super().__init__(spec, run_dir, world)
        o = spec.options
        self.offsets: dict[str, int] = dict(o["lines"])
        self.active_low = set(o["active_low"])
        self.chip: GpioSimChip | None = None
        self._wanted: dict[str, int] = {}  # the wire level the fault plan last asked for
        self._stuck: set[str] = set()

    def start(self) -> None:
        names = {offset: name for name, offset in self.offsets.items()}
        self.chip = GpioSimChip.make(names, num_lines=max(self.offsets.values()) + 1)
        for name in self.offsets:
            if name in self.active_low and name not in self.spec.options["outputs"]:
                self._pull(name, 1)  # released: an active-low button's wire rests high

    def wiring(self) -> dict[str, Any]:
        assert self.chip is not None  # noqa: S101 - started before wiring
        return {"chip": self.chip.path, "simulate": "never"}

    def _pull(self, line: str, level: int) -> None:
        assert self.chip is not None  # noqa: S101
        self._wanted[line] = level
        if line not in self._stuck:
            self.chip.pull(self.offsets[line], level)

    def apply(self, fault: FaultSpec) -> float:
        line = fault.options["line"]
        active = 0 if line in self.active_low else 1
        before = time.time()
        if fault.kind == "gpio_press":
            self._pull(line, active)
        elif fault.kind == "gpio_release":
            self._pull(line, 1 - active)
        elif fault.kind == "gpio_toggle":
            self._pull(line, 1 - self._wanted.get(line, 0))
        elif fault.kind == "gpio_stuck":
            assert self.chip is not None  # noqa: S101
            self._stuck.add(line)
            self.chip.pull(self.offsets[line], int(fault.options["level"]))
            self._undo_after(fault.options.get("for"), f"{fault.name} ended", lambda: self._free(line))
        else:
            return super().apply(fault)
        return before  # the level changed between before and the write's return: the earliest bound

    def _free(self, line: str) -> None:
        self._stuck.discard(line)
        self._pull(line, self._wanted.get(line, 0))

    def stop(self) -> None:
        if self.chip is not None:
            self.chip.remove()
            self.chip = None
