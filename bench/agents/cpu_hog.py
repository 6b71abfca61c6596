"""Bench agent: a busy loop forever."""

from clove_sdk import CloveClient

CloveClient().hello()
x = 0
while True:
    x += 1
