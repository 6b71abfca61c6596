"""``python -m hil.exchange``: run a simulated venue until SIGTERM or SIGINT.

It prints ``venue ready on PORT`` (flushed) once it accepts connections, so a harness that
started it with ``--port 0`` can read the port from the first line.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from hil.exchange.venue import DEFAULT_CREDENTIALS, DEFAULT_SYMBOLS, SimVenue


def _pair(text: str, what: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return name, value


def _symbol(text: str) -> tuple[str, float]:
    name, value = _pair(text, "SYMBOL=PRICE (e.g. ACME=100)")
    try:
        price = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"price of {name} is not a number: {value!r}") from None
    if price <= 0:
        raise argparse.ArgumentTypeError(f"price of {name} must be positive, got {price}")
    return name, price


def _credential(text: str) -> tuple[str, str]:
    return _pair(text, "USERNAME=PASSWORD")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil.exchange",
                                     description="Run a simulated FIX 4.4 exchange.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default): any free port")
    parser.add_argument("--symbol", type=_symbol, action="append", metavar="SYMBOL=PRICE",
                        help=f"a symbol and its initial price (repeatable; default {dict(DEFAULT_SYMBOLS)})")
    parser.add_argument("--sender", default="VENUE", help="the venue's CompID")
    parser.add_argument("--credential", type=_credential, action="append", metavar="USER=PASSWORD",
                        help="an accepted logon (repeatable; default CLOVE=secret)")
    parser.add_argument("--no-auth", action="store_true", help="accept any logon")
    parser.add_argument("--store-dir", default=None, help="keep sequence numbers here across restarts")
    parser.add_argument("--seed", type=int, default=None, help="seed of the liquidity bot")
    parser.add_argument("--no-liquidity", action="store_true", help="no liquidity bot")
    parser.add_argument("--bot-interval", type=float, default=0.5, help="seconds between bot requotes")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    credentials = None if args.no_auth else dict(args.credential or DEFAULT_CREDENTIALS.items())
    try:
        venue = SimVenue(args.host, args.port, dict(args.symbol or DEFAULT_SYMBOLS.items()), args.sender,
                         credentials, args.store_dir, args.seed, liquidity=not args.no_liquidity,
                         bot_interval=args.bot_interval)
        venue.start()
    except (OSError, ValueError) as exc:
        print(f"hil.exchange: {exc}", file=sys.stderr)
        return 1

    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"venue ready on {venue.port}", flush=True)
    try:
        while not done.wait(1.0):
            pass
    finally:
        venue.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
