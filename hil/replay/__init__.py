"""Record CAN traffic to a python-can log file and replay it with its original timing.

Any format python-can reads and writes by suffix works (``.asc``, ``.blf``, ``.log``, ``.csv``,
``.trc``; optionally gzipped). :func:`replay` sends each frame at its recorded time relative to
the first one (divided by ``speed``) on one absolute ``time.perf_counter`` schedule, so lateness
never accumulates: it sleeps until ``spin`` seconds before a frame is due, then busy-waits
(yielding the GIL) to the due time. It returns every frame's timing error (actual − scheduled).

``python -m hil.replay record OUT --interface simbus --channel rover [--duration S]``,
``python -m hil.replay play IN --interface ... --channel ... [--speed X]`` and
``python -m hil.replay bench`` (the replayer's timing error at 1 and 5 kHz on this machine).

The package: :mod:`hil.replay.logs` (:func:`record`, :func:`load`), :mod:`hil.replay.player`
(:func:`replay`, :class:`ReplayResult`), :mod:`hil.replay.bench` (:func:`run_bench`, with the
figures measured on the development VM) and :mod:`hil.replay.cli` (:func:`main`).
"""

from hil.replay.bench import BenchRow as BenchRow  # "X as X": public, not in __all__ (as before)
from hil.replay.bench import run_bench
from hil.replay.cli import main as main
from hil.replay.logs import PathLike as PathLike
from hil.replay.logs import load, record
from hil.replay.player import LEAD as LEAD
from hil.replay.player import REALTIME_PRIORITY as REALTIME_PRIORITY
from hil.replay.player import REALTIME_SPIN as REALTIME_SPIN
from hil.replay.player import SPIN as SPIN
from hil.replay.player import ReplayResult, replay

__all__ = ["ReplayResult", "load", "record", "replay", "run_bench"]
