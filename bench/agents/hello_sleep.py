"""Bench agent: connect, hello, then sleep until killed (an idle agent)."""

import time

from clove_sdk import CloveClient

client = CloveClient()
client.hello()
while True:
    time.sleep(3600)
