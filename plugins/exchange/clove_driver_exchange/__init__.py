"""Clove's exchange driver: the venue session (FIX 4.4), its credentials and the pre-trade risk
engine live in the driver host, never in an agent. Registered through the ``clove.drivers``
entry point ``exchange``.

- :mod:`~clove_driver_exchange.driver`: the driver (ops submit_order, cancel, orders, positions,
  set_state, status; a stream of execution reports and market data);
  :mod:`~clove_driver_exchange.reports`: what the venue says, applied to the driver's state;
- :mod:`~clove_driver_exchange.risk`: the risk engine; :mod:`~clove_driver_exchange.journal`: the
  durable order journal; :mod:`~clove_driver_exchange.commit`: the group commit that makes the
  journal and the FIX sequence store durable before anything is acknowledged;
  :mod:`~clove_driver_exchange.fix`: the FIX session engine.
"""

from __future__ import annotations

from clove.drivers import DriverRegistry, hookimpl


@hookimpl
def clove_register_drivers(registry: DriverRegistry) -> None:
    from clove_driver_exchange.driver import ExchangeDriver

    registry.add("exchange", ExchangeDriver)
