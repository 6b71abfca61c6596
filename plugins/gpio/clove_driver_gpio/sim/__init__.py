"""The simulated GPIO chip across processes: :class:`SimChipServer` owns a
:class:`~clove_driver_gpio.simchip.SimChip` and serves it on a UNIX socket; a GPIO driver with
``sim_socket`` set uses its lines, and :class:`SimChipController` presses its buttons and reads
its outputs from anywhere (a test, the HIL harness).

Run one until SIGTERM with
``python -m clove_driver_gpio.sim --socket PATH --line estop=17 --line brake=27 --output brake``.
"""

from clove_driver_gpio.sim.client import RemoteLines, SimChipController, wait_for_server
from clove_driver_gpio.sim.protocol import ServerGone
from clove_driver_gpio.sim.server import SimChipServer
from clove_driver_gpio.simchip import SimChip, SimChipError

__all__ = [
    "RemoteLines",
    "ServerGone",
    "SimChip",
    "SimChipController",
    "SimChipError",
    "SimChipServer",
    "wait_for_server",
]
