"""A simulated exchange for the trading gateway: a FIX 4.4 venue on TCP with price-time order
books, a liquidity bot and fault switches.

In a test::

    with SimVenue(symbols={"ACME": 100.0}, credentials={"CLOVE": "secret"}, seed=1) as venue:
        ...   # connect the exchange driver to 127.0.0.1:venue.port
        venue.reject_next(1, "venue says no")
        assert venue.positions("CLOVE") == {"ACME": 10.0}

or as a process: ``python -m hil.exchange --port 0 --symbol ACME=100`` (prints
``venue ready on PORT``). The FIX engine is the exchange plugin's
(``clove_driver_exchange.fix``), so both ends speak the same protocol code.
"""

from hil.exchange.book import BookError, Execution, Order, OrderBook, SubmitResult, Trade
from hil.exchange.venue import BOT, DEFAULT_CREDENTIALS, DEFAULT_SYMBOLS, SimVenue, VenueFill

__all__ = [
    "BOT",
    "DEFAULT_CREDENTIALS",
    "DEFAULT_SYMBOLS",
    "BookError",
    "Execution",
    "Order",
    "OrderBook",
    "SimVenue",
    "SubmitResult",
    "Trade",
    "VenueFill",
]
