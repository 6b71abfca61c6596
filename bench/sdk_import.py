"""The ``clove-sdk`` distribution: its wheel's size, and what ``import clove_sdk`` costs an agent.

Builds the wheel from the checkout (``clove/testing/sdkvenv.py``: an isolated build, as a user's),
installs it alone into a fresh venv, and times, in fresh interpreters of that venv taking turns:

* ``import clove_sdk`` inside the process (``perf_counter`` around the import), against the
  baseline ``import zmq, msgpack`` (the SDK's two dependencies: what any ZeroMQ+msgpack client
  pays before doing anything) measured the same way in the same run;
* the whole process (``python -c "import clove_sdk"``, start to exit) against
  ``python -c "import zmq, msgpack"``.

    .venv/bin/python bench/sdk_import.py [--json]
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from common import Report, main

from clove.testing.sdkvenv import build_sdk_wheel, make_sdk_venv

ROUNDS = 30
TIMED = "import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"
SDK = "import clove_sdk"
DEPS = "import zmq, msgpack"


def in_process_s(python: Path, stmt: str) -> float:
    """Seconds the statement takes inside a fresh interpreter (start-up excluded)."""
    out = subprocess.run([str(python), "-c", TIMED.format(stmt=stmt)], capture_output=True, text=True, check=True, cwd="/")
    return float(out.stdout.strip())


def whole_process_s(python: Path, stmt: str) -> float:
    """Seconds from spawning a fresh interpreter running the statement to its exit."""
    started = time.perf_counter()
    subprocess.run([str(python), "-c", stmt], check=True, cwd="/")
    return time.perf_counter() - started


def medians(python: Path, measure: Callable[[Path, str], float]) -> tuple[float, float]:
    """Median seconds of the SDK's import and of the baseline's, taking turns (each round
    swaps who goes first) so drift on the shared machine hits both alike."""
    sdk: list[float] = []
    deps: list[float] = []
    for i in range(ROUNDS):
        order = ((sdk, SDK), (deps, DEPS)) if i % 2 == 0 else ((deps, DEPS), (sdk, SDK))
        for samples, stmt in order:
            samples.append(measure(python, stmt))
    return statistics.median(sdk), statistics.median(deps)


def run(report: Report, say: Callable[[str], None]) -> None:
    with tempfile.TemporaryDirectory(prefix="clove-sdk-bench-") as scratch:
        say("sdk_import: building the clove-sdk wheel and a venv holding only it")
        wheel = build_sdk_wheel(Path(scratch))
        python = make_sdk_venv(Path(scratch) / "venv", wheel)
        with zipfile.ZipFile(wheel) as zf:
            unpacked = sum(info.file_size for info in zf.infolist())
            files = len(zf.infolist())
        report.add("clove-sdk wheel size", wheel.stat().st_size / 1024, "KiB", note=f"{files} files, {unpacked / 1024:.0f} KiB unpacked")
        for measure in (in_process_s, whole_process_s):
            measure(python, SDK)  # warm the page cache and the .pyc files first
        say(f"  timing {ROUNDS} fresh interpreters each, in turns")
        sdk, deps = medians(python, in_process_s)
        report.add("import clove_sdk (in process)", sdk * 1e3, "ms", baseline=deps * 1e3, baseline_name=DEPS)
        sdk, deps = medians(python, whole_process_s)
        report.add("python -c 'import clove_sdk' (whole process)", sdk * 1e3, "ms", baseline=deps * 1e3, baseline_name=DEPS)
        report.details.update({"wheel": wheel.name, "rounds": ROUNDS, "interpreter": str(python)})


if __name__ == "__main__":
    raise SystemExit(main("sdk_import", run))
