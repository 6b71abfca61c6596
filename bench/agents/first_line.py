"""Bench baseline (not an agent): the idle agent's imports, then one line of output, then sleep.
``spawn_latency.py`` starts it with plain ``subprocess.Popen`` and times it to that line."""

import time

from clove_sdk import CloveClient  # noqa: F401 - imported as the agent imports it

print("ready", flush=True)
while True:
    time.sleep(3600)
