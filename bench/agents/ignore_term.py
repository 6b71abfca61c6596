"""Bench agent: ignores SIGTERM, so a kill waits the whole kill grace before SIGKILL."""

import signal
import time

from clove_sdk import CloveClient

signal.signal(signal.SIGTERM, signal.SIG_IGN)
CloveClient().hello()
while True:
    time.sleep(3600)
