"""The HTML report of a bench run, with plots: ``clove hil run BENCH --report DIR`` (docs/hil.md).

:func:`hil.report.writer.write_report` renders ``DIR/report.html`` and one PNG per plot beside it.
matplotlib is imported only by the writer: a run without ``--report`` never needs it, and the leaf
modules here (:mod:`hil.report.track`, :mod:`hil.report.sources`) are what the harness and the
simulators import.
"""
