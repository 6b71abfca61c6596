"""``python -m hil.simbus --channel NAME``: run a hub (see :mod:`hil.simbus.cli`)."""

import sys

from hil.simbus.cli import main

sys.exit(main())
