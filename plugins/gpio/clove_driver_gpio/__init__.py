"""Clove's GPIO driver plugin (entry point ``gpio`` in the ``clove.drivers`` group).

Named lines on a GPIO chip through libgpiod v2 where ``/dev/gpiochip*`` exists, and a simulated
chip otherwise (in-process, or served by ``python -m clove_driver_gpio.sim`` so another process
can press buttons). Importing this package imports no vendor library: the kernel imports it to
validate ``[devices.NAME]`` tables and grants.
"""

from clove.drivers import DriverRegistry, hookimpl
from clove_driver_gpio.config import GetArgs, GpioConfig, GpioGrant, SetArgs
from clove_driver_gpio.driver import GpioDriver

__all__ = ["GetArgs", "GpioConfig", "GpioDriver", "GpioGrant", "SetArgs", "clove_register_drivers"]


@hookimpl
def clove_register_drivers(registry: DriverRegistry) -> None:
    """Register the ``gpio`` driver kind."""
    registry.add("gpio", GpioDriver)
