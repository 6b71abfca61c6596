"""Clove's pytest plugin (entry point ``pytest11: clove_hil``): write HIL tests in plain pytest.

Fixtures:

``clove_kernel``
    a factory: ``clove_kernel(config_text_or_path)`` starts a kernel on private temporary paths
    (never the default control socket) and stops it, with its agents and driver hosts, after the test.
``hil_bench``
    a factory: ``hil_bench("hil/benches/rover.toml")`` runs a bench file and returns its
    :class:`hil.harness.BenchReport` (``report.passed``, ``report.outcomes``, ``report.timeline``).
``sim_can_bus``
    a factory: ``sim_can_bus("name")`` starts a :mod:`hil.simbus` hub in a temporary directory;
    ``.bus()`` gives a python-can participant, ``.wiring()`` the device-table keys that put a
    Clove CAN device on it, ``.hub.faults`` the fault knobs.
``sim_gpio_chip``
    a factory: ``sim_gpio_chip({"estop": 17}, outputs=[])`` serves a simulated GPIO chip;
    ``.controller`` presses buttons, ``.wiring()`` gives ``sim_socket``.
``sim_gps``
    a factory: ``sim_gps(rate_hz=5)`` runs an NMEA GPS on a pseudo-terminal; ``.wiring()``
    gives the ``port``.
``clove_journal``
    ``clove_journal(kernel, **filters)``: the kernel's journal records (``category``,
    ``agent_name``, ``since_id``), read from its file, to assert on what happened.

Example::

    def test_estop_stops_the_rover(hil_bench):
        report = hil_bench("hil/benches/rover.toml")
        assert report.passed, report.outcomes
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hil.bench import SimSpec
from hil.world import World


def _tmp() -> Path:
    path = Path(tempfile.mkdtemp(prefix="clvhil"))  # short: Unix socket paths are limited
    os.chmod(path, 0o755)
    return path


@pytest.fixture
def clove_kernel() -> Iterator[Callable[..., Any]]:
    from clove.testing.kernel import KernelProcess

    started: list[KernelProcess] = []

    def start(config: str | os.PathLike[str] = "") -> KernelProcess:
        text = str(config)
        if text.endswith(".toml") and Path(text).is_file():
            kernel = KernelProcess(config_file=text)
        else:
            kernel = KernelProcess(text)
        started.append(kernel.start())
        return kernel

    yield start
    for kernel in started:
        kernel.stop()
        kernel.cleanup()


@pytest.fixture
def hil_bench() -> Callable[..., Any]:
    from hil.bench import load_bench
    from hil.harness import run_bench

    def run(path: str | os.PathLike[str], **kwargs: Any) -> Any:
        return run_bench(load_bench(path), **kwargs)

    return run


@pytest.fixture
def clove_journal() -> Callable[..., list[dict[str, Any]]]:
    from clove.kernel.audit.files import read_journal

    def records(kernel: Any, **filters: Any) -> list[dict[str, Any]]:
        return list(read_journal(Path(kernel.state_dir) / "journal.jsonl", **filters))

    return records


def _sim_factory(kind: str, defaults: dict[str, Any]) -> Callable[..., Iterator[Callable[..., Any]]]:
    @pytest.fixture
    def factory() -> Iterator[Callable[..., Any]]:
        from hil.sims import CanBusSim, GpioSim, GpsSim

        classes = {"can_bus": CanBusSim, "gpio_chip": GpioSim, "nmea_gps": GpsSim}
        made: list[Any] = []
        dirs: list[Path] = []
        world = World()

        def make(*args: Any, name: str | None = None, **options: Any) -> Any:
            if kind == "gpio_chip" and args:
                options["lines"] = args[0]
            spec = SimSpec(name or f"{kind}{len(made)}", kind, {**defaults, **options})
            directory = _tmp()
            dirs.append(directory)
            sim = classes[kind](spec, directory, world)
            sim.start()
            made.append(sim)
            return sim

        yield make
        for sim in reversed(made):
            sim.stop()
        for directory in dirs:
            shutil.rmtree(directory, ignore_errors=True)

    return factory


sim_can_bus = _sim_factory("can_bus", {"wire": None, "record": False, "log": "bus.asc"})
sim_gpio_chip = _sim_factory("gpio_chip", {"wire": None, "outputs": [], "active_low": []})
sim_gps = _sim_factory("nmea_gps", {"wire": None, "rate_hz": 5.0, "baudrate": 9600})
