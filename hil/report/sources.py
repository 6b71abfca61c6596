"""What the report reads from a run beyond what the assertions need.

The simulators sample their own series (:meth:`hil.sims.Simulator.sample`: the rover's pose, the
venue's open orders); the harness also fetches these state keys from the kernel at the end of
the run. The rover's waypoints are one: the navigator publishes its ``route`` (metres east and
north of its first GPS fix) and that fix's ``origin`` (latitude, longitude) under
``rover/navigator``, so the report draws them without the navigator being changed.
"""

from __future__ import annotations

from typing import Final

#: (scope, key) pairs fetched at the end of every run into ``RunRecord.state_values``.
REPORT_STATE_KEYS: Final = (("global", "rover/navigator"),)
