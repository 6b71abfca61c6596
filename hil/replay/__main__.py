"""``python -m hil.replay record|play|bench`` (see :mod:`hil.replay.cli`)."""

import sys

from hil.replay.cli import main

sys.exit(main())
